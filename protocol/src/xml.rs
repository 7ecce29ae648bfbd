//! The XML form of EAS WBXML documents, for people: logs, `opush wbxml
//! decode|encode`, golden files. Element names are exactly those of
//! [MS-ASWBXML]; each code page is an XML namespace named like `AirSync:`.
//!
//! Output: the root's page is the default namespace (`xmlns="AirSync:"`), the
//! other pages used get a prefix declared on the root (`xmlns:email="Email:"`),
//! children are indented by two spaces, and OPAQUE content is base64.
//! Input: prefixes or a default namespace redeclared on any element are both
//! accepted; whitespace between elements is ignored, text of leaf elements
//! is kept verbatim.
//!
//! Conventions that make decode → XML → encode byte-exact:
//! - `<X/>` is an element without content, `<X></X>` one holding an empty string;
//! - content of the kind [`is_opaque`] does not expect is marked with an
//!   attribute: `wbxml="opaque"` (base64 OPAQUE on a text element) or
//!   `wbxml="str"` (a string on an element that is normally OPAQUE).
//!
//! This module must not be used on the request path for parsing devices'
//! WBXML: that is `wbxml::decode`. It is sans I/O like the rest of the crate.

mod steps;

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::wbxml::{
    code_page, code_page_by_namespace, encode_to_vec, is_opaque, tags, DecodeError, Element, Node,
    Tag,
};

/// Why an XML document cannot be turned into EAS WBXML (or WBXML into XML).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The WBXML input does not decode.
    #[error("WBXML: {0}")]
    Decode(#[from] DecodeError),
    /// The XML is not well-formed.
    #[error("XML syntax at byte {position}: {message}")]
    Syntax {
        /// Byte offset in the input.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// An element without a namespace, or with an undeclared prefix.
    #[error("element <{name}> has no EAS namespace (use xmlns=\"AirSync:\" or a prefix)")]
    NoNamespace {
        /// The element name as written.
        name: String,
    },
    /// A namespace that is not one of the 26 EAS code pages.
    #[error("unknown EAS namespace {namespace:?}")]
    UnknownNamespace {
        /// The namespace URI.
        namespace: String,
    },
    /// An element name its code page does not define.
    #[error("{namespace} has no element named {name:?}")]
    UnknownElement {
        /// The code page's namespace.
        namespace: &'static str,
        /// The element name.
        name: String,
    },
    /// Base64 content of an OPAQUE element does not decode.
    #[error("element {tag} holds invalid base64")]
    Base64 {
        /// The element.
        tag: String,
    },
    /// An attribute other than namespace declarations and `wbxml=`.
    #[error("unexpected attribute {name:?} on <{element}>")]
    Attribute {
        /// Attribute name.
        name: String,
        /// Element name.
        element: String,
    },
    /// Text outside the root, several roots, or no root at all.
    #[error("document structure: {0}")]
    Structure(&'static str),
}

/// Elements whose text must never reach a log: shown as `*` by
/// [`element_to_xml_masked`].
pub fn is_secret(tag: Tag) -> bool {
    matches!(
        tag,
        tags::settings::PASSWORD
            | tags::settings::DEVICE_PASSWORD
            | tags::itemoperations::PASSWORD
            | tags::search::PASSWORD
    )
}

/// WBXML bytes → indented XML text.
pub fn wbxml_to_xml(input: &[u8]) -> Result<String, XmlError> {
    // Tag-heavy documents grow ~5× as XML (names, indentation, closing
    // tags); bodies barely grow. Reserving for the first case costs the
    // second nothing (pages never written are never touched), while growing
    // the string copies it and touches every page again.
    steps::wbxml_to_xml(input, input.len().saturating_mul(6) + 4096)
}

/// XML text → WBXML bytes.
pub fn xml_to_wbxml(xml: &str) -> Result<Vec<u8>, XmlError> {
    Ok(encode_to_vec(&xml_to_element(xml)?))
}

/// The XML form of a tree.
pub fn element_to_xml(root: &Element<'_>) -> String {
    render(root, false, 256)
}

/// The XML form of a tree with the text of [`is_secret`] elements replaced by
/// `*`: the form to log.
pub fn element_to_xml_masked(root: &Element<'_>) -> String {
    render(root, true, 256)
}

/// Replaces the text (or opaque data) of every [`is_secret`] element of
/// `root` with `*`, in place; true when anything was replaced. For bodies
/// that are kept (full capture) rather than printed.
pub fn mask_secrets(root: &mut Element<'_>) -> bool {
    let mut changed = false;
    let secret = is_secret(root.tag);
    for node in &mut root.children {
        match node {
            Node::Element(child) => changed |= mask_secrets(child),
            Node::Text(t) if secret && !t.is_empty() && t.as_ref() != "*" => {
                *node = Node::Text("*".into());
                changed = true;
            }
            Node::Opaque(b) if secret && !b.is_empty() => {
                *node = Node::Text("*".into());
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

fn prefix_of(page: u8) -> String {
    code_page(page)
        .map(|p| p.namespace.to_ascii_lowercase())
        .unwrap_or_else(|| format!("p{page}"))
}

/// The start of the XML form: the declaration in a string of `capacity`,
/// the root's namespace declarations (the root's page as the default
/// namespace, every other page `used` by prefix) and `prefixes[page]`
/// (`"prefix:"`, empty for the root's page).
fn prelude(used: &[bool; 256], root_page: u8, capacity: usize) -> (String, String, Vec<String>) {
    let mut out = String::with_capacity(capacity);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    let mut ns_decl = String::new();
    let root_ns = code_page(root_page)
        .map(|p| p.namespace)
        .unwrap_or("Unknown");
    let _ = write!(ns_decl, " xmlns=\"{root_ns}:\"");
    for (page, &is_used) in used.iter().enumerate() {
        let Ok(page) = u8::try_from(page) else { break };
        if is_used && page != root_page {
            let ns = code_page(page).map(|p| p.namespace).unwrap_or("Unknown");
            let _ = write!(ns_decl, " xmlns:{}=\"{ns}:\"", prefix_of(page));
        }
    }
    // "prefix:" of every page used except the root's, computed once.
    let prefixes: Vec<String> = (0u8..=255)
        .map(|page| {
            if used[usize::from(page)] && page != root_page {
                format!("{}:", prefix_of(page))
            } else {
                String::new()
            }
        })
        .collect();
    (out, ns_decl, prefixes)
}

fn render(root: &Element<'_>, mask: bool, capacity: usize) -> String {
    let mut used = [false; 256];
    mark_pages(root, &mut used);
    let (mut out, ns_decl, prefixes) = prelude(&used, root.tag.page, capacity);
    // Explicit stack: (element, next child index, indentation).
    let mut stack: Vec<(&Element<'_>, usize)> = Vec::new();
    if !write_open(&mut out, root, &prefixes, &ns_decl, 0, mask) {
        stack.push((root, 0));
    }
    loop {
        let depth = stack.len();
        let Some((el, idx)) = stack.last_mut() else {
            break;
        };
        let el: &Element<'_> = el;
        let i = *idx;
        *idx += 1;
        match el.children.get(i) {
            None => {
                stack.pop();
                indent(&mut out, depth - 1);
                write_name(&mut out, el.tag, &prefixes, true);
                out.push_str(">\n");
            }
            Some(Node::Element(c)) => {
                if !write_open(&mut out, c, &prefixes, "", depth, mask) {
                    stack.push((c, 0));
                }
            }
            Some(node) => write_wrapped(&mut out, node, is_secret(el.tag) && mask, depth),
        }
    }
    out
}

fn mark_pages(root: &Element<'_>, used: &mut [bool; 256]) {
    let mut stack = vec![root];
    while let Some(el) = stack.pop() {
        used[usize::from(el.tag.page)] = true;
        for child in &el.children {
            if let Node::Element(c) = child {
                stack.push(c);
            }
        }
    }
}

fn indent(out: &mut String, depth: usize) {
    const SPACES: &str = "                                                                ";
    match SPACES.get(..2 * depth) {
        Some(spaces) => out.push_str(spaces),
        None => (0..depth).for_each(|_| out.push_str("  ")),
    }
}

/// `prefixes[page]` is `"prefix:"`, or empty for the root's page.
fn write_name(out: &mut String, tag: Tag, prefixes: &[String], closing: bool) {
    out.push_str(if closing { "</" } else { "<" });
    if let Some(prefix) = prefixes.get(usize::from(tag.page)) {
        out.push_str(prefix);
    }
    match tag.name() {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "Unknown{:02X}", tag.token);
        }
    }
}

/// Writes an element's start. Returns true when the element was written
/// completely, false when its children follow on their own lines (then text
/// or opaque nodes among them are written as `wbxml:str` / `wbxml:opaque`
/// wrappers, so that mixed content survives the round trip).
fn write_open(
    out: &mut String,
    el: &Element<'_>,
    prefixes: &[String],
    ns_decl: &str,
    depth: usize,
    mask: bool,
) -> bool {
    indent(out, depth);
    write_name(out, el.tag, prefixes, false);
    out.push_str(ns_decl);
    if el.children.is_empty() {
        out.push_str("/>\n");
        return true;
    }
    let (Some(only), 1) = (el.children.first(), el.children.len()) else {
        out.push_str(">\n");
        return false;
    };
    match only {
        Node::Element(_) => {
            out.push_str(">\n");
            return false;
        }
        Node::Text(t) => {
            if is_opaque(el.tag) {
                out.push_str(" wbxml=\"str\"");
            }
            out.push('>');
            if mask && is_secret(el.tag) && !t.is_empty() {
                out.push('*');
            } else {
                escape_into(out, t);
            }
        }
        Node::Opaque(b) => {
            if !is_opaque(el.tag) {
                out.push_str(" wbxml=\"opaque\"");
            }
            out.push('>');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
        }
    }
    write_name(out, el.tag, prefixes, true);
    out.push_str(">\n");
    true
}

/// The namespace of the wrappers that carry text or opaque nodes of
/// elements whose content is not EAS-shaped (mixed content, several nodes).
pub const WRAPPER_NAMESPACE: &str = "opush:wbxml";

fn write_wrapped(out: &mut String, node: &Node<'_>, secret: bool, depth: usize) {
    indent(out, depth);
    match node {
        Node::Text(t) => {
            let _ = write!(out, "<wbxml:str xmlns:wbxml=\"{WRAPPER_NAMESPACE}\">");
            if secret && !t.is_empty() {
                out.push('*');
            } else {
                escape_into(out, t);
            }
            out.push_str("</wbxml:str>\n");
        }
        Node::Opaque(b) => {
            let _ = write!(out, "<wbxml:opaque xmlns:wbxml=\"{WRAPPER_NAMESPACE}\">");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            out.push_str("</wbxml:opaque>\n");
        }
        Node::Element(_) => {}
    }
}

/// Bytes that text cannot hold verbatim in XML: markup characters, CR
/// (which XML parsers normalise away) and control characters.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b != 0x09 && b != 0x0A;
        b += 1;
    }
    t[0x7F] = true;
    t[b'&' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t
};

/// True when one of the eight bytes of `w` may need escaping: below 0x20
/// (tab and LF included, the byte loop sorts them out), `&`, `<`, `>` or DEL.
/// Bytes of multi-byte UTF-8 characters (0x80 and up) never match.
fn chunk_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space
        | has_zero(w ^ (ONES * u64::from(b'&')))
        | has_zero(w ^ (ONES * u64::from(b'<')))
        | has_zero(w ^ (ONES * u64::from(b'>')))
        | has_zero(w ^ (ONES * 0x7F)))
        != 0
}

/// `&#NN;` for a byte (a control character here), without the formatting
/// machinery: MIME bodies carry one CR per line.
fn push_char_ref(out: &mut String, b: u8) {
    out.push_str("&#");
    if b >= 100 {
        out.push(char::from(b'0' + b / 100));
    }
    if b >= 10 {
        out.push(char::from(b'0' + b / 10 % 10));
    }
    out.push(char::from(b'0' + b % 10));
    out.push(';');
}

fn escape_into(out: &mut String, text: &str) {
    out.reserve(text.len());
    let bytes = text.as_bytes();
    // `text[last..i]` is checked and not written yet.
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Bodies are long runs of plain text: skip them eight bytes at a time.
        if let Some(chunk) = bytes
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
        {
            if !chunk_needs_escape(u64::from_le_bytes(chunk)) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(bytes.len());
        while i < end {
            let b = bytes[i];
            if NEEDS_ESCAPE[usize::from(b)] {
                out.push_str(&text[last..i]);
                match b {
                    b'&' => out.push_str("&amp;"),
                    b'<' => out.push_str("&lt;"),
                    b'>' => out.push_str("&gt;"),
                    _ => push_char_ref(out, b),
                }
                last = i + 1;
            }
            i += 1;
        }
    }
    out.push_str(&text[last..]);
}

/// How an element's content was marked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Default,
    Opaque,
    Str,
    WrapStr,
    WrapOpaque,
}

struct Open {
    el: Element<'static>,
    kind: Kind,
    /// Indices of children that came from `wbxml:*` wrappers: kept verbatim.
    wrapped: Vec<usize>,
}

/// XML text → tree.
pub fn xml_to_element(xml: &str) -> Result<Element<'static>, XmlError> {
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Element<'static>> = None;
    loop {
        let pos = reader.buffer_position();
        let (ns, event) = reader.read_resolved_event().map_err(|e| XmlError::Syntax {
            position: pos,
            message: e.to_string(),
        })?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                let local = start.local_name();
                let name = String::from_utf8_lossy(local.as_ref()).into_owned();
                let (tag, mut kind) = match wrapper_kind(&ns, &name)? {
                    Some(kind) => (Tag::new(0, 0), kind),
                    None => (resolve_tag(&ns, &name)?, Kind::Default),
                };
                let wrapper = kind != Kind::Default;
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| XmlError::Syntax {
                        position: pos,
                        message: e.to_string(),
                    })?;
                    let key = attr.key.as_ref();
                    if key == b"xmlns" || key.starts_with(b"xmlns:") {
                        continue;
                    }
                    match (key, attr.value.as_ref()) {
                        (b"wbxml", b"opaque") if !wrapper => kind = Kind::Opaque,
                        (b"wbxml", b"str") if !wrapper => kind = Kind::Str,
                        _ => {
                            return Err(XmlError::Attribute {
                                name: String::from_utf8_lossy(key).into_owned(),
                                element: name,
                            })
                        }
                    }
                }
                if root.is_some() {
                    return Err(XmlError::Structure("more than one root element"));
                }
                let open = Open {
                    el: Element::new(tag),
                    kind,
                    wrapped: Vec::new(),
                };
                if is_empty {
                    close(open, &mut stack, &mut root, false)?;
                } else {
                    stack.push(open);
                }
            }
            Event::End(_) => {
                let open = stack
                    .pop()
                    .ok_or(XmlError::Structure("closing tag without opening tag"))?;
                close(open, &mut stack, &mut root, true)?;
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(|e| XmlError::Syntax {
                    position: pos,
                    message: e.to_string(),
                })?;
                push_text(&mut stack, text)?;
            }
            Event::CData(data) => {
                let text = std::str::from_utf8(&data)
                    .map_err(|e| XmlError::Syntax {
                        position: pos,
                        message: e.to_string(),
                    })?
                    .to_owned();
                push_text(&mut stack, Cow::Owned(text))?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Structure("unclosed element at end of input"));
    }
    root.ok_or(XmlError::Structure("no root element"))
}

fn wrapper_kind(ns: &ResolveResult<'_>, name: &str) -> Result<Option<Kind>, XmlError> {
    match ns {
        ResolveResult::Bound(ns) if ns.as_ref() == WRAPPER_NAMESPACE.as_bytes() => match name {
            "str" => Ok(Some(Kind::WrapStr)),
            "opaque" => Ok(Some(Kind::WrapOpaque)),
            _ => Err(XmlError::UnknownElement {
                namespace: WRAPPER_NAMESPACE,
                name: name.to_owned(),
            }),
        },
        _ => Ok(None),
    }
}

fn resolve_tag(ns: &ResolveResult<'_>, name: &str) -> Result<Tag, XmlError> {
    let ResolveResult::Bound(ns) = ns else {
        return Err(XmlError::NoNamespace {
            name: name.to_owned(),
        });
    };
    let uri = String::from_utf8_lossy(ns.as_ref());
    let page = code_page_by_namespace(&uri).ok_or_else(|| XmlError::UnknownNamespace {
        namespace: uri.clone().into_owned(),
    })?;
    page.token(name)
        .map(|t| Tag::new(page.id, t))
        .ok_or_else(|| XmlError::UnknownElement {
            namespace: page.namespace,
            name: name.to_owned(),
        })
}

fn push_text(stack: &mut [Open], text: Cow<'_, str>) -> Result<(), XmlError> {
    let Some(open) = stack.last_mut() else {
        if text.trim().is_empty() {
            return Ok(());
        }
        return Err(XmlError::Structure("text outside the root element"));
    };
    let last = open.el.children.len().checked_sub(1);
    let mergeable = last.is_some_and(|i| !open.wrapped.contains(&i));
    if let (true, Some(Node::Text(prev))) = (mergeable, open.el.children.last_mut()) {
        prev.to_mut().push_str(&text);
    } else {
        open.el
            .children
            .push(Node::Text(Cow::Owned(text.into_owned())));
    }
    Ok(())
}

fn close(
    mut open: Open,
    stack: &mut [Open],
    root: &mut Option<Element<'static>>,
    had_end_tag: bool,
) -> Result<(), XmlError> {
    if matches!(open.kind, Kind::WrapStr | Kind::WrapOpaque) {
        return close_wrapper(open, stack);
    }
    let el = &mut open.el;
    if !open.wrapped.is_empty() || el.children.iter().any(|c| matches!(c, Node::Element(_))) {
        // Indentation between elements is not content; wrapped text is.
        let mut idx = 0;
        let wrapped = &open.wrapped;
        el.children.retain(|c| {
            let keep = wrapped.contains(&idx) || !matches!(c, Node::Text(t) if t.trim().is_empty());
            idx += 1;
            keep
        });
    } else if had_end_tag && el.children.is_empty() {
        // `<X></X>`: an empty string, as opposed to `<X/>`.
        el.children.push(Node::Text(Cow::Borrowed("")));
    }
    // With wrappers, every node already has its kind.
    let opaque = open.wrapped.is_empty()
        && match open.kind {
            Kind::Opaque => true,
            Kind::Default => is_opaque(el.tag),
            Kind::Str | Kind::WrapStr | Kind::WrapOpaque => false,
        };
    if opaque {
        for child in &mut el.children {
            if let Node::Text(t) = child {
                let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|_| XmlError::Base64 {
                        tag: el.tag.to_string(),
                    })?;
                *child = Node::Opaque(Cow::Owned(bytes));
            }
        }
    }
    match stack.last_mut() {
        Some(parent) => parent.el.children.push(Node::Element(open.el)),
        None => *root = Some(open.el),
    }
    Ok(())
}

/// A `wbxml:str` / `wbxml:opaque` wrapper closes: its content becomes one
/// node of the enclosing element.
fn close_wrapper(open: Open, stack: &mut [Open]) -> Result<(), XmlError> {
    let mut text = String::new();
    for child in open.el.children {
        match child {
            Node::Text(t) => text.push_str(&t),
            _ => return Err(XmlError::Structure("element inside a wbxml wrapper")),
        }
    }
    let node = if open.kind == Kind::WrapOpaque {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| XmlError::Base64 {
                tag: "wbxml:opaque".to_owned(),
            })?;
        Node::Opaque(Cow::Owned(bytes))
    } else {
        Node::Text(Cow::Owned(text))
    };
    let parent = stack
        .last_mut()
        .ok_or(XmlError::Structure("wbxml wrapper outside an element"))?;
    parent.wrapped.push(parent.el.children.len());
    parent.el.children.push(node);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbxml::tags::{airsync, airsyncbase, composemail, email, settings};

    #[test]
    fn steps_render_like_the_tree() {
        // Split strings (merged by the tree decoder), an element with content
        // but no children, mixed content, opaque data in both wrappers, a
        // single opaque child, and roots that are a leaf or empty.
        let mut split = vec![0x03, 0x01, 0x6A, 0x00, 0x45];
        for part in [&b"a&"[..], b"<b"] {
            split.push(0x03);
            split.extend_from_slice(part);
            split.push(0);
        }
        split.extend_from_slice(&[0x4E, 0x03, b'c', 0, 0x03, b'\r', 0, 0x01, 0x4B, 0x01]);
        split.extend_from_slice(&[0xC3, 0x02, 0xFF, 0x00, 0x03, b'f', 0, 0x01]);
        let trees = [
            sample(),
            Element::new(composemail::SEND_MAIL)
                .with(Element::with_opaque(composemail::MIME, &b"raw"[..]))
                .with(Element::with_text(composemail::MIME, "as text"))
                .with(Element::with_opaque(airsync::SYNC_KEY, &b"\x00\x01"[..]))
                .with(Node::Opaque(Cow::Borrowed(&b"loose"[..])))
                .with(Element::new(airsync::COMMANDS).with(Element::new(airsync::ADD))),
            Element::with_text(airsync::STATUS, "1"),
            Element::new(airsync::SYNC),
        ];
        let mut docs: Vec<Vec<u8>> = trees.iter().map(encode_to_vec).collect();
        docs.push(split);
        for doc in &docs {
            let tree = crate::wbxml::decode(doc).expect("decodes");
            assert_eq!(wbxml_to_xml(doc).expect("converts"), element_to_xml(&tree));
        }
        let xml = wbxml_to_xml(&docs[docs.len() - 1]).expect("converts");
        assert!(xml.contains("a&amp;&lt;b</wbxml:str>"), "{xml}");
        assert!(xml.contains("<Status>c&#13;</Status>"), "{xml}");
        assert!(xml.contains("<SyncKey/>"), "{xml}");
    }

    fn sample() -> Element<'static> {
        Element::new(airsync::SYNC).with(
            Element::new(airsync::COLLECTIONS).with(
                Element::new(airsync::COLLECTION)
                    .with(Element::with_text(airsync::SYNC_KEY, "0"))
                    .with(Element::with_text(email::SUBJECT, "a < b & c\r\n\té"))
                    .with(Element::with_text(airsyncbase::TYPE, ""))
                    .with(Element::new(airsync::GET_CHANGES))
                    .with(Element::with_opaque(
                        composemail::MIME,
                        vec![0u8, 1, 2, 255],
                    ))
                    .with(Element::with_opaque(email::READ, vec![7u8]))
                    .with(Element::with_text(composemail::MIME, "plain")),
            ),
        )
    }

    #[test]
    fn tree_round_trips_through_xml() {
        let tree = sample();
        let xml = element_to_xml(&tree);
        assert!(xml.contains("<Sync xmlns=\"AirSync:\""), "{xml}");
        assert!(xml.contains("xmlns:email=\"Email:\""), "{xml}");
        assert!(
            xml.contains("<email:Subject>a &lt; b &amp; c&#13;\n\té</email:Subject>"),
            "{xml}"
        );
        assert!(
            xml.contains("<composemail:Mime>AAEC/w==</composemail:Mime>"),
            "{xml}"
        );
        assert_eq!(xml_to_element(&xml).expect("parse"), tree);
    }

    /// The plain definition the chunked escaper must agree with.
    fn escape_reference(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '\t' | '\n' => out.push(c),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    out.push_str(&format!("&#{};", u32::from(c)));
                }
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn escaping_agrees_with_the_plain_definition() {
        // Every special byte at every offset of a 8-byte chunk, between
        // plain ASCII and multi-byte characters, and every byte value once.
        let specials = [
            '&', '<', '>', '\r', '\n', '\t', '\u{0}', '\u{1f}', '\u{7f}', ' ', 'é', '✓',
        ];
        let mut cases: Vec<String> = Vec::new();
        for &special in &specials {
            for pad in 0..20 {
                let mut s = "abcdefghijklmnopqrstuvwxyz"
                    .chars()
                    .take(pad)
                    .collect::<String>();
                s.push(special);
                s.push_str("0123456789Ünïcödé");
                s.push(special);
                cases.push(s);
            }
        }
        cases.push((0u8..=0x7f).map(char::from).chain(['é', '✓']).collect());
        for case in &cases {
            let mut out = String::new();
            escape_into(&mut out, case);
            assert_eq!(out, escape_reference(case), "{case:?}");
        }
    }

    #[test]
    fn default_namespace_redeclared_is_accepted() {
        let xml = r#"<Sync xmlns="AirSync:"><Collections><Collection>
            <ApplicationData><Subject xmlns="Email:">hi</Subject></ApplicationData>
        </Collection></Collections></Sync>"#;
        let el = xml_to_element(xml).expect("parse");
        let data = el
            .child(airsync::COLLECTIONS)
            .and_then(|c| c.child(airsync::COLLECTION))
            .and_then(|c| c.child(airsync::APPLICATION_DATA))
            .expect("path");
        assert_eq!(data.child_text(email::SUBJECT), Some("hi"));
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            xml_to_element("<Sync/>"),
            Err(XmlError::NoNamespace { .. })
        ));
        assert!(matches!(
            xml_to_element(r#"<Sync xmlns="Nope:"/>"#),
            Err(XmlError::UnknownNamespace { .. })
        ));
        assert!(matches!(
            xml_to_element(r#"<Bogus xmlns="AirSync:"/>"#),
            Err(XmlError::UnknownElement { .. })
        ));
        assert!(matches!(
            xml_to_element(r#"<Sync xmlns="AirSync:" a="1"/>"#),
            Err(XmlError::Attribute { .. })
        ));
        assert!(matches!(
            xml_to_element(r#"<Mime xmlns="ComposeMail:">!!</Mime>"#),
            Err(XmlError::Base64 { .. })
        ));
        assert!(xml_to_element(r#"<Sync xmlns="AirSync:">"#).is_err());
    }

    #[test]
    fn mixed_content_uses_wrappers() {
        let tree = Element::new(airsync::SYNC)
            .with(Node::Text(Cow::Borrowed("")))
            .with(Element::new(airsync::STATUS))
            .with(Node::Text(Cow::Borrowed("  ")))
            .with(Node::Opaque(Cow::Borrowed(&[1u8, 2][..])));
        let xml = element_to_xml(&tree);
        assert!(
            xml.contains("<wbxml:str xmlns:wbxml=\"opush:wbxml\"></wbxml:str>"),
            "{xml}"
        );
        assert!(
            xml.contains("<wbxml:opaque xmlns:wbxml=\"opush:wbxml\">AQI=</wbxml:opaque>"),
            "{xml}"
        );
        assert_eq!(xml_to_element(&xml).expect("parse"), tree);
    }

    #[test]
    fn mask_secrets_replaces_only_secret_text() {
        let xml = r#"<Settings xmlns="Settings:"><DevicePassword><Set><Password>hunter2</Password></Set></DevicePassword><UserInformation><Get/></UserInformation></Settings>"#;
        let mut tree = xml_to_element(xml).expect("parse");
        assert!(mask_secrets(&mut tree));
        let out = element_to_xml(&tree);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("<Password>*</Password>"), "{out}");
        assert!(out.contains("<Get/>") || out.contains("<Get />"), "{out}");
        assert!(!mask_secrets(&mut tree), "already masked");
        let mut plain = xml_to_element(
            r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#,
        )
        .expect("parse");
        assert!(!mask_secrets(&mut plain));
    }

    #[test]
    fn secrets_are_masked() {
        let tree = Element::new(settings::SETTINGS).with(
            Element::new(settings::DEVICE_PASSWORD)
                .with(Element::with_text(settings::PASSWORD, "hunter2")),
        );
        let xml = element_to_xml_masked(&tree);
        assert!(!xml.contains("hunter2"), "{xml}");
        assert!(xml.contains("<Password>*</Password>"), "{xml}");
    }
}
