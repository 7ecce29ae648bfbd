//! Small helpers to read typed fields from, and write them to, the WBXML
//! tree (`crate::wbxml::Element`), shared by every command module.
//!
//! Exists so each command reads like its schema. It must not know any
//! command: only elements, text, numbers and booleans, with typed errors.

use std::borrow::Cow;
use std::fmt::Display;
use std::str::FromStr;

use super::CommandError;
use crate::wbxml::{Element, Node, Tag, Writer};

/// An element that owns its data, as typed values produce.
pub type Owned = Element<'static>;

/// Fails unless `el` is the element `tag`.
pub(crate) fn expect_tag(el: &Element<'_>, tag: Tag) -> Result<(), CommandError> {
    if el.tag == tag {
        Ok(())
    } else {
        Err(CommandError::UnexpectedElement {
            expected: tag,
            found: el.tag,
        })
    }
}

/// The text content of an element: its text, or its opaque bytes as UTF-8,
/// or `""` for an empty element.
pub(crate) fn content(el: &Element<'_>) -> Result<String, CommandError> {
    content_str(el).map(Cow::into_owned)
}

/// [`content`] borrowed from the tree where it can be: numbers and booleans
/// are parsed from it without a copy.
fn content_str<'t>(el: &'t Element<'_>) -> Result<Cow<'t, str>, CommandError> {
    if let Some(t) = el.text_concat() {
        return Ok(t);
    }
    if let Some(b) = el.opaque() {
        return std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| CommandError::InvalidValue {
                tag: el.tag,
                value: "<non-UTF-8 opaque>".to_owned(),
            });
    }
    Ok(Cow::Borrowed(""))
}

/// The bytes of an element: opaque data, or text bytes.
pub(crate) fn bytes(el: &Element<'_>) -> Vec<u8> {
    if let Some(b) = el.opaque() {
        return b.to_vec();
    }
    el.text_concat()
        .map(|t| t.as_bytes().to_vec())
        .unwrap_or_default()
}

/// The text of the required child `tag`.
pub(crate) fn req_text(el: &Element<'_>, tag: Tag) -> Result<String, CommandError> {
    content(el.child(tag).ok_or(CommandError::Missing(tag))?)
}

/// The text of the optional child `tag`.
pub(crate) fn opt_text(el: &Element<'_>, tag: Tag) -> Result<Option<String>, CommandError> {
    el.child(tag).map(content).transpose()
}

/// Parses a value, mapping failure to [`CommandError::InvalidValue`].
pub(crate) fn parse<T: FromStr>(tag: Tag, s: &str) -> Result<T, CommandError> {
    s.trim().parse().map_err(|_| CommandError::InvalidValue {
        tag,
        value: s.chars().take(64).collect(),
    })
}

/// The required child `tag`, parsed.
pub(crate) fn req_num<T: FromStr>(el: &Element<'_>, tag: Tag) -> Result<T, CommandError> {
    parse(
        tag,
        &content_str(el.child(tag).ok_or(CommandError::Missing(tag))?)?,
    )
}

/// The optional child `tag`, parsed.
pub(crate) fn opt_num<T: FromStr>(el: &Element<'_>, tag: Tag) -> Result<Option<T>, CommandError> {
    el.child(tag)
        .map(|c| parse(tag, &content_str(c)?))
        .transpose()
}

/// An EAS boolean: `1`/`0`; an empty element means true (MS-ASDTYPE boolean
/// and the empty-tag forms such as `<GetChanges/>`).
pub(crate) fn bool_of(el: &Element<'_>) -> Result<bool, CommandError> {
    match content_str(el)?.trim() {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        other => Err(CommandError::InvalidValue {
            tag: el.tag,
            value: other.chars().take(16).collect(),
        }),
    }
}

/// The optional boolean child `tag`.
pub(crate) fn opt_bool(el: &Element<'_>, tag: Tag) -> Result<Option<bool>, CommandError> {
    el.child(tag).map(bool_of).transpose()
}

/// True when the child `tag` is present (a flag element such as `MoreAvailable`).
pub(crate) fn has(el: &Element<'_>, tag: Tag) -> bool {
    el.child(tag).is_some()
}

/// A text element; an empty value gives an empty element (`<Location/>`),
/// as Exchange writes empty strings.
pub(crate) fn text_el(tag: Tag, value: impl Display) -> Owned {
    let text = value.to_string();
    if text.is_empty() {
        Element::new(tag)
    } else {
        Element::with_text(tag, text)
    }
}

/// A text element borrowing its text (no copy: a response's strings stay
/// where the typed value holds them until the tree is encoded); empty
/// gives `<tag/>` as [`text_el`] does.
pub(crate) fn str_el(tag: Tag, value: &str) -> Element<'_> {
    if value.is_empty() {
        Element::new(tag)
    } else {
        Element::with_text(tag, value)
    }
}

/// Appends `<tag>value</tag>` borrowing `value`, when present.
pub(crate) fn push_str<'a>(parent: &mut Element<'a>, tag: Tag, value: Option<&'a str>) {
    if let Some(v) = value {
        parent.push(str_el(tag, v));
    }
}

/// Appends `<tag>value</tag>` when `value` is present.
pub(crate) fn push_opt<T: Display>(parent: &mut Element<'_>, tag: Tag, value: Option<T>) {
    if let Some(v) = value {
        parent.push(text_el(tag, v));
    }
}

/// Appends `<tag>1</tag>`/`<tag>0</tag>` when present.
pub(crate) fn push_bool(parent: &mut Element<'_>, tag: Tag, value: Option<bool>) {
    if let Some(v) = value {
        parent.push(text_el(tag, if v { "1" } else { "0" }));
    }
}

/// Appends `<tag/>` for true and `<tag>0</tag>` for false, when present
/// (the form devices use for `GetChanges` and `DeletesAsMoves`).
pub(crate) fn push_bool_empty_true(parent: &mut Element<'_>, tag: Tag, value: Option<bool>) {
    match value {
        Some(true) => parent.push(Element::new(tag)),
        Some(false) => parent.push(text_el(tag, "0")),
        None => {}
    }
}

/// Appends `<tag/>` when `flag` is set.
pub(crate) fn push_flag(parent: &mut Element<'_>, tag: Tag, flag: bool) {
    if flag {
        parent.push(Element::new(tag));
    }
}

/// Appends an opaque element when present.
pub(crate) fn push_opaque<'a>(parent: &mut Element<'a>, tag: Tag, value: Option<&'a Vec<u8>>) {
    if let Some(v) = value {
        parent.push(Element::with_opaque(tag, v.as_slice()));
    }
}

// The same shapes written straight to WBXML ([`Writer`]): each writes
// exactly what its `push_*` twin adds to a tree.

/// [`push_str`] to a writer: `<tag>value</tag>`, `<tag/>` when empty.
pub(crate) fn write_str(w: &mut Writer<'_>, tag: Tag, value: Option<&str>) {
    match value {
        Some("") => w.empty(tag),
        Some(v) => w.text(tag, v),
        None => {}
    }
}

/// [`push_opt`] of a number to a writer, formatted without an allocation.
pub(crate) fn write_num(w: &mut Writer<'_>, tag: Tag, value: Option<u64>) {
    if let Some(mut v) = value {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        w.text(tag, std::str::from_utf8(&buf[at..]).unwrap_or_default());
    }
}

/// [`push_opt`] to a writer.
pub(crate) fn write_opt<T: Display>(w: &mut Writer<'_>, tag: Tag, value: Option<T>) {
    if let Some(v) = value {
        write_str(w, tag, Some(&v.to_string()));
    }
}

/// [`push_bool`] to a writer.
pub(crate) fn write_bool(w: &mut Writer<'_>, tag: Tag, value: Option<bool>) {
    if let Some(v) = value {
        w.text(tag, if v { "1" } else { "0" });
    }
}

/// [`push_opaque`] to a writer.
pub(crate) fn write_opaque(w: &mut Writer<'_>, tag: Tag, value: Option<&Vec<u8>>) {
    if let Some(v) = value {
        w.opaque(tag, v);
    }
}

/// The owned copy of a subtree (for generic payloads).
pub(crate) fn owned(el: &Element<'_>) -> Owned {
    el.clone().into_owned()
}

/// The element's children that are elements, owned.
pub(crate) fn owned_children(el: &Element<'_>) -> Vec<Owned> {
    el.children
        .iter()
        .filter_map(|n| match n {
            Node::Element(e) => Some(owned(e)),
            _ => None,
        })
        .collect()
}
