//! The WBXML decoder: bytes → `Element` tree, borrowing strings and opaque
//! data from the input. It must not panic, recurse on input nesting, or
//! allocate from an untrusted length before checking it against the bytes
//! actually present.

use std::borrow::Cow;

use super::{code_page, CodePage, Element, Node, Tag, CODE_PAGES};

/// Deepest element nesting the decoder accepts. EAS documents stay below 20.
pub const MAX_DEPTH: usize = 256;

/// Why a byte sequence is not an EAS WBXML document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends in the middle of a token, or before the root closes.
    #[error("WBXML truncated at byte {offset}")]
    Truncated {
        /// Length of the input (where more bytes were needed).
        offset: usize,
    },
    /// The header is not WBXML 1.x with UTF-8.
    #[error("bad WBXML header at byte {offset}: {reason}")]
    BadHeader {
        /// Where the header is wrong.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// SWITCH_PAGE to a page EAS does not define.
    #[error("unknown code page {page} at byte {offset}")]
    UnknownPage {
        /// The page number.
        page: u8,
        /// Offset of the SWITCH_PAGE token.
        offset: usize,
    },
    /// A tag token that the current page does not define.
    #[error("unknown token {token:#04x} on code page {page} at byte {offset}")]
    UnknownToken {
        /// Current page.
        page: u8,
        /// The token (low six bits).
        token: u8,
        /// Offset of the tag byte.
        offset: usize,
    },
    /// A string is not valid UTF-8.
    #[error("invalid UTF-8 in string at byte {offset}")]
    Utf8 {
        /// Offset of the string's first byte.
        offset: usize,
    },
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {max} at byte {offset}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Offset of the tag that went too deep.
        offset: usize,
    },
    /// A multi-byte integer longer than 32 bits, or a length/index that
    /// points past the end of the input or string table.
    #[error("length or index out of range at byte {offset}")]
    LengthOverflow {
        /// Offset of the integer.
        offset: usize,
    },
    /// A WBXML feature EAS does not use: attributes, entities, processing
    /// instructions, extensions, literal tags, text outside the root…
    #[error("unsupported WBXML construct at byte {offset}: {what}")]
    Unsupported {
        /// What was found.
        what: &'static str,
        /// Where.
        offset: usize,
    },
    /// Bytes left after the root element closed.
    #[error("{count} unexpected bytes after the root element at byte {offset}")]
    TrailingData {
        /// Number of bytes left.
        count: usize,
        /// Offset of the first one.
        offset: usize,
    },
    /// The body holds no root element.
    #[error("WBXML document has no root element")]
    NoRoot,
}

const SWITCH_PAGE: u8 = 0x00;
const END: u8 = 0x01;
const ENTITY: u8 = 0x02;
const STR_I: u8 = 0x03;
const LITERAL: u8 = 0x04;
const PI: u8 = 0x43;
const STR_T: u8 = 0x83;
const OPAQUE: u8 = 0xC3;

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.input.get(self.pos).ok_or(DecodeError::Truncated {
            offset: self.input.len(),
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// A WBXML `mb_u_int32`: at most five bytes, at most 32 bits.
    fn mb_u_int32(&mut self) -> Result<u32, DecodeError> {
        let start = self.pos;
        let mut value: u32 = 0;
        for _ in 0..5 {
            let b = self.byte()?;
            if value > (u32::MAX >> 7) {
                return Err(DecodeError::LengthOverflow { offset: start });
            }
            value = (value << 7) | u32::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::LengthOverflow { offset: start })
    }

    /// `len` bytes, checked against what is left before anything else.
    fn take(&mut self, len: u32, at: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(len).map_err(|_| DecodeError::LengthOverflow { offset: at })?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.input.len())
            .ok_or(DecodeError::LengthOverflow { offset: at })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// An inline string up to its NUL terminator.
    fn str_i(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let len = memchr::memchr(0, rest).ok_or(DecodeError::Truncated {
            offset: self.input.len(),
        })?;
        self.pos = start + len + 1;
        utf8(&rest[..len], start)
    }
}

fn utf8(bytes: &[u8], offset: usize) -> Result<&str, DecodeError> {
    // SIMD validation pays off on bodies; tags' short values are faster the
    // plain way.
    if bytes.len() < 64 {
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8 { offset })
    } else {
        simdutf8::basic::from_utf8(bytes).map_err(|_| DecodeError::Utf8 { offset })
    }
}

/// Appends text to the open element whose children start at `start` in
/// `nodes`, merging it with a text node just before it (WBXML may split one
/// string into several STR_I/STR_T tokens).
fn push_text<'a>(nodes: &mut Vec<Node<'a>>, start: usize, text: &'a str) {
    if nodes.len() > start {
        if let Some(Node::Text(prev)) = nodes.last_mut() {
            prev.to_mut().push_str(text);
            return;
        }
    }
    nodes.push(Node::Text(Cow::Borrowed(text)));
}

/// Position of the first NUL in `bytes`. Element values are mostly a few
/// bytes long, where a plain scan beats setting up the SIMD search.
fn find_nul(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    let (head, tail) = bytes.split_at(bytes.len().min(SHORT));
    match head.iter().position(|&b| b == 0) {
        Some(i) => Some(i),
        None => memchr::memchr(0, tail).map(|i| i + SHORT),
    }
}

/// Decodes an EAS WBXML document and returns its root element. Strings and
/// opaque data borrow from `input`.
///
/// The children of all open elements are collected in one scratch vector;
/// when an element closes, its children move out of it into a vector of
/// exactly their number. So a document costs one allocation per element
/// with content and no regrowth.
pub fn decode(input: &[u8]) -> Result<Element<'_>, DecodeError> {
    let mut r = Reader { input, pos: 0 };

    // Header: version, public id, charset, string table.
    let version = r.byte()?;
    if !(0x01..=0x03).contains(&version) {
        return Err(DecodeError::BadHeader {
            offset: 0,
            reason: "version is not WBXML 1.1–1.3",
        });
    }
    let public_id = r.mb_u_int32()?;
    if public_id == 0 {
        // The public id is a string-table index; its value does not matter.
        r.mb_u_int32()?;
    }
    let at = r.pos;
    let charset = r.mb_u_int32()?;
    if charset != 106 && charset != 0 {
        return Err(DecodeError::BadHeader {
            offset: at,
            reason: "charset is not UTF-8 (MIBenum 106)",
        });
    }
    let at = r.pos;
    let table_len = r.mb_u_int32()?;
    let table_at = r.pos;
    let string_table = r.take(table_len, at)?;

    let mut page: u8 = 0;
    let mut page_table: &CodePage = &CODE_PAGES[0];
    // Open elements: tag and where their children start in `nodes`.
    let mut open: Vec<(Tag, usize)> = Vec::with_capacity(16);
    let mut nodes: Vec<Node<'_>> = Vec::with_capacity(64);

    let root = loop {
        let offset = r.pos;
        let b = r.byte()?;
        match b {
            SWITCH_PAGE => {
                let p = r.byte()?;
                page_table = code_page(p).ok_or(DecodeError::UnknownPage { page: p, offset })?;
                page = p;
            }
            END => {
                let (tag, start) = open.pop().ok_or(DecodeError::Unsupported {
                    what: "END outside any element",
                    offset,
                })?;
                let children: Vec<Node<'_>> = nodes.drain(start..).collect();
                let done = Element { tag, children };
                if open.is_empty() {
                    break done;
                }
                nodes.push(Node::Element(done));
            }
            STR_I => {
                let s = r.str_i()?;
                let &(_, start) = open.last().ok_or(DecodeError::Unsupported {
                    what: "text outside the root element",
                    offset,
                })?;
                push_text(&mut nodes, start, s);
            }
            STR_T => {
                let idx = r.mb_u_int32()?;
                let s = table_string(string_table, idx, table_at, offset)?;
                let &(_, start) = open.last().ok_or(DecodeError::Unsupported {
                    what: "text outside the root element",
                    offset,
                })?;
                push_text(&mut nodes, start, s);
            }
            OPAQUE => {
                let len = r.mb_u_int32()?;
                let bytes = r.take(len, offset)?;
                if open.is_empty() {
                    return Err(DecodeError::Unsupported {
                        what: "opaque data outside the root element",
                        offset,
                    });
                }
                nodes.push(Node::Opaque(Cow::Borrowed(bytes)));
            }
            ENTITY => {
                return Err(DecodeError::Unsupported {
                    what: "ENTITY",
                    offset,
                })
            }
            PI => {
                return Err(DecodeError::Unsupported {
                    what: "processing instruction",
                    offset,
                })
            }
            0x40..=0x42 | 0x80..=0x82 | 0xC0..=0xC2 => {
                return Err(DecodeError::Unsupported {
                    what: "extension token",
                    offset,
                })
            }
            _ if b & 0x3F == LITERAL => {
                return Err(DecodeError::Unsupported {
                    what: "literal tag",
                    offset,
                })
            }
            _ if b & 0x80 != 0 => {
                return Err(DecodeError::Unsupported {
                    what: "attributes",
                    offset,
                })
            }
            _ => {
                let token = b & 0x3F;
                let tag = Tag::new(page, token);
                if page_table.name(token).is_none() {
                    return Err(DecodeError::UnknownToken {
                        page,
                        token,
                        offset,
                    });
                }
                if b & 0x40 == 0 {
                    let el = Element::new(tag);
                    if open.is_empty() {
                        break el;
                    }
                    nodes.push(Node::Element(el));
                    continue;
                }
                // Fast path for the most common shape, `<Tag>text</Tag>`
                // (tag, STR_I, END) inside a parent: no frame round trip.
                if !open.is_empty() && input.get(r.pos) == Some(&STR_I) {
                    let rest = input.get(r.pos + 1..).unwrap_or_default();
                    if let Some(len) = find_nul(rest) {
                        if rest.get(len + 1) == Some(&END) {
                            let text = utf8(&rest[..len], r.pos + 1)?;
                            r.pos += len + 3;
                            nodes.push(Node::Element(Element {
                                tag,
                                children: vec![Node::Text(Cow::Borrowed(text))],
                            }));
                            continue;
                        }
                    }
                }
                if open.len() >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep {
                        max: MAX_DEPTH,
                        offset,
                    });
                }
                open.push((tag, nodes.len()));
            }
        }
    };

    if r.pos < input.len() {
        return Err(DecodeError::TrailingData {
            count: input.len() - r.pos,
            offset: r.pos,
        });
    }
    Ok(root)
}

fn table_string(
    table: &[u8],
    idx: u32,
    table_at: usize,
    offset: usize,
) -> Result<&str, DecodeError> {
    let start = usize::try_from(idx).map_err(|_| DecodeError::LengthOverflow { offset })?;
    let rest = table
        .get(start..)
        .ok_or(DecodeError::LengthOverflow { offset })?;
    let len = memchr::memchr(0, rest).ok_or(DecodeError::LengthOverflow { offset })?;
    utf8(&rest[..len], table_at + start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbxml::tags::airsync;

    fn text(s: &str) -> Node<'_> {
        Node::Text(Cow::Borrowed(s))
    }

    #[test]
    fn split_strings_merge_only_within_their_element() {
        // <Sync>"a" "b" <Status>"c" "d"</Status> "e" <SyncKey/> "f"</Sync>
        let mut doc = vec![0x03, 0x01, 0x6A, 0x00, 0x45];
        for part in [&b"a"[..], b"b"] {
            doc.push(STR_I);
            doc.extend_from_slice(part);
            doc.push(0);
        }
        doc.push(0x4E); // Status, with content
        for part in [&b"c"[..], b"d"] {
            doc.push(STR_I);
            doc.extend_from_slice(part);
            doc.push(0);
        }
        doc.extend_from_slice(&[END, STR_I, b'e', 0, 0x0B, STR_I, b'f', 0, END]);
        let root = decode(&doc).expect("decodes");
        let expected = Element::new(airsync::SYNC)
            .with(text("ab"))
            .with(Element::with_text(airsync::STATUS, "cd"))
            .with(text("e"))
            .with(Element::new(airsync::SYNC_KEY))
            .with(text("f"));
        assert_eq!(root, expected);
        assert_eq!(root.children.capacity(), root.children.len());
    }

    #[test]
    fn nested_elements_keep_their_own_children() {
        // <Sync><Collections><Collection><SyncKey>1</SyncKey></Collection>
        // <Collection/></Collections><Status>7</Status></Sync>
        let doc = [
            0x03, 0x01, 0x6A, 0x00, 0x45, 0x5C, 0x4F, 0x4B, STR_I, b'1', 0, END, END, 0x0F, END,
            0x4E, STR_I, b'7', 0, END, END,
        ];
        let expected = Element::new(airsync::SYNC)
            .with(
                Element::new(airsync::COLLECTIONS)
                    .with(
                        Element::new(airsync::COLLECTION)
                            .with(Element::with_text(airsync::SYNC_KEY, "1")),
                    )
                    .with(Element::new(airsync::COLLECTION)),
            )
            .with(Element::with_text(airsync::STATUS, "7"));
        assert_eq!(decode(&doc).expect("decodes"), expected);
    }
}
