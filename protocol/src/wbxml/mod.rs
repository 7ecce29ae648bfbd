//! WBXML 1.3 as Exchange ActiveSync uses it ([MS-ASWBXML]): the document tree
//! (`Element`, `Node`, `Tag`), the code pages (`tags::*`), a zero-copy
//! decoder and an encoder that writes into a reusable buffer.
//!
//! This module must not know about EAS commands: typed requests and responses
//! live in `crate::commands` and are built on this tree. It never panics on
//! input, never recurses on input depth, and never allocates more than the
//! input can justify.

mod decode;
mod encode;
mod pages;

use std::borrow::Cow;

pub use decode::{decode, first_status, DecodeError, MAX_DEPTH};
pub(crate) use decode::{decode_into, Sink};
pub use encode::{encode, encode_to_vec, Writer};
pub use pages::{code_page, code_page_by_namespace, tag_by_name, tags, CodePage, CODE_PAGES};

/// One element name: a code page and a token (the low six bits of a WBXML tag
/// byte, 0x05..=0x3F).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Tag {
    /// Code page number (0–25 in EAS 16.1).
    pub page: u8,
    /// Token within the page, without the content/attribute bits.
    pub token: u8,
}

impl Tag {
    /// A tag from its page and token.
    pub const fn new(page: u8, token: u8) -> Self {
        Tag { page, token }
    }

    /// The element name from [MS-ASWBXML] (`"SyncKey"`), if the tag is defined.
    pub fn name(self) -> Option<&'static str> {
        code_page(self.page)?.name(self.token)
    }

    /// The namespace of the tag's page (`"AirSync"`).
    pub fn page_name(self) -> Option<&'static str> {
        code_page(self.page).map(|p| p.namespace)
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.page_name(), self.name()) {
            (Some(ns), Some(name)) => write!(f, "{ns}:{name}"),
            _ => write!(f, "page {}:token {:#04x}", self.page, self.token),
        }
    }
}

/// One child of an element.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Node<'a> {
    /// A nested element.
    Element(Element<'a>),
    /// Character data (STR_I or STR_T on the wire).
    Text(Cow<'a, str>),
    /// Binary data (OPAQUE on the wire).
    Opaque(Cow<'a, [u8]>),
}

impl Node<'_> {
    /// The same node, owning its data.
    pub fn into_owned(self) -> Node<'static> {
        match self {
            Node::Element(e) => Node::Element(e.into_owned()),
            Node::Text(t) => Node::Text(Cow::Owned(t.into_owned())),
            Node::Opaque(b) => Node::Opaque(Cow::Owned(b.into_owned())),
        }
    }
}

/// An element and its children, in document order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Element<'a> {
    /// The element's name.
    pub tag: Tag,
    /// Child elements, text and opaque data.
    pub children: Vec<Node<'a>>,
}

impl<'a> Element<'a> {
    /// An element without children (`<Tag/>`).
    pub fn new(tag: Tag) -> Self {
        Element {
            tag,
            children: Vec::new(),
        }
    }

    /// An element holding one text node.
    pub fn with_text(tag: Tag, text: impl Into<Cow<'a, str>>) -> Self {
        Element {
            tag,
            children: vec![Node::Text(text.into())],
        }
    }

    /// An element holding one opaque node.
    pub fn with_opaque(tag: Tag, bytes: impl Into<Cow<'a, [u8]>>) -> Self {
        Element {
            tag,
            children: vec![Node::Opaque(bytes.into())],
        }
    }

    /// Appends a child (an `Element`, or a `Node`) and returns `self`, for
    /// building trees in one expression.
    #[must_use]
    pub fn with(mut self, child: impl Into<Node<'a>>) -> Self {
        self.children.push(child.into());
        self
    }

    /// Appends a child (an `Element`, or a `Node`).
    pub fn push(&mut self, child: impl Into<Node<'a>>) {
        self.children.push(child.into());
    }

    /// The first child element with this tag.
    pub fn child(&self, tag: Tag) -> Option<&Element<'a>> {
        self.elements().find(|e| e.tag == tag)
    }

    /// The first child element with this tag, mutably.
    pub fn child_mut(&mut self, tag: Tag) -> Option<&mut Element<'a>> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.tag == tag => Some(e),
            _ => None,
        })
    }

    /// Every child element with this tag, in order.
    pub fn children_with(&self, tag: Tag) -> impl Iterator<Item = &Element<'a>> + '_ {
        self.elements().filter(move |e| e.tag == tag)
    }

    /// Every child element, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element<'a>> + '_ {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The element's text. The decoder merges adjacent strings into one text
    /// node, so for EAS documents this is the whole text content. `None` when
    /// the element has no text node; with several text nodes separated by
    /// elements (mixed content, never used by EAS), the first one (see
    /// [`Element::text_concat`] for all of them).
    pub fn text(&self) -> Option<&str> {
        self.children.iter().find_map(|n| match n {
            Node::Text(t) => Some(t.as_ref()),
            _ => None,
        })
    }

    /// All text nodes of the element concatenated; `None` if there is none.
    pub fn text_concat(&self) -> Option<Cow<'_, str>> {
        let mut texts = self.children.iter().filter_map(|n| match n {
            Node::Text(t) => Some(t.as_ref()),
            _ => None,
        });
        let first = texts.next()?;
        match texts.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut s = String::with_capacity(first.len() + second.len());
                s.push_str(first);
                s.push_str(second);
                texts.for_each(|t| s.push_str(t));
                Some(Cow::Owned(s))
            }
        }
    }

    /// The text of the first child element with this tag.
    pub fn child_text(&self, tag: Tag) -> Option<&str> {
        self.child(tag)?.text()
    }

    /// The element's first opaque node.
    pub fn opaque(&self) -> Option<&[u8]> {
        self.children.iter().find_map(|n| match n {
            Node::Opaque(b) => Some(b.as_ref()),
            _ => None,
        })
    }

    /// True when the element has no children at all.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The same tree, owning all its strings and bytes.
    pub fn into_owned(self) -> Element<'static> {
        Element {
            tag: self.tag,
            children: self.children.into_iter().map(Node::into_owned).collect(),
        }
    }
}

impl<'a> From<Element<'a>> for Node<'a> {
    fn from(e: Element<'a>) -> Self {
        Node::Element(e)
    }
}

/// A whole WBXML document. EAS documents carry nothing but their root
/// element, so this is a thin wrapper kept for API symmetry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Document<'a> {
    /// The root element (`Sync`, `FolderSync`, …).
    pub root: Element<'a>,
}

/// True for the elements whose content [MS-ASCMD]/[MS-ASEMAIL] define as
/// binary and that EAS peers send as OPAQUE: the MIME of SendMail /
/// SmartReply / SmartForward, conversation ids and indexes, and contact
/// pictures (`Data` of ResolveRecipients and GAL), and the content of an
/// attachment a client adds (`AirSyncBase:Content`). The XML form writes their
/// content as base64, and XML → WBXML decodes it back to OPAQUE.
pub fn is_opaque(tag: Tag) -> bool {
    use tags::*;
    matches!(
        tag,
        composemail::MIME
            | email2::CONVERSATION_ID
            | email2::CONVERSATION_INDEX
            | itemoperations::CONVERSATION_ID
            | search::CONVERSATION_ID
            | resolverecipients::DATA
            | gal::DATA
            | airsyncbase::CONTENT
    )
}
