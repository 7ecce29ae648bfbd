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

    /// An inline string up to its NUL terminator: where it starts and ends.
    fn str_i(&mut self) -> Result<(usize, usize), DecodeError> {
        let start = self.pos;
        let len = memchr::memchr(0, &self.input[start..]).ok_or(DecodeError::Truncated {
            offset: self.input.len(),
        })?;
        self.pos = start + len + 1;
        Ok((start, start + len))
    }
}

/// UTF-8 validation a stretch of the input at a time rather than string by
/// string: validating a few bytes costs a function call and a loop set-up,
/// which is most of a tag-heavy document's strings. `text` is the longest
/// valid UTF-8 run of the input starting at `start`; a string inside it is a
/// sub-slice (its ends are char boundaries: the STR_I before it and the NUL
/// after it are ASCII), checked by `str::get`. A string outside it starts a
/// new run, so every byte is scanned at most twice (once more when the run
/// ends on an invalid byte), however the document interleaves text and
/// binary data.
struct Utf8Runs<'a> {
    start: usize,
    text: &'a str,
}

impl<'a> Utf8Runs<'a> {
    /// `input[start..end]` as text.
    #[inline(always)]
    fn get(&mut self, input: &'a [u8], start: usize, end: usize) -> Result<&'a str, DecodeError> {
        let in_run = start
            .checked_sub(self.start)
            .and_then(|from| self.text.get(from..end - self.start));
        match in_run {
            Some(s) => Ok(s),
            None => self.new_run(input, start, end),
        }
    }

    #[cold]
    fn new_run(
        &mut self,
        input: &'a [u8],
        start: usize,
        end: usize,
    ) -> Result<&'a str, DecodeError> {
        let rest = input.get(start..).unwrap_or_default();
        let text = match simdutf8::compat::from_utf8(rest) {
            Ok(text) => text,
            Err(e) => {
                // The valid prefix, as `&str` (a second, SIMD, pass).
                let valid = rest.get(..e.valid_up_to()).unwrap_or_default();
                simdutf8::basic::from_utf8(valid)
                    .map_err(|_| DecodeError::Utf8 { offset: start })?
            }
        };
        self.start = start;
        self.text = text;
        text.get(..end - start)
            .ok_or(DecodeError::Utf8 { offset: start })
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

/// Position of the first NUL in `bytes`. Element values are mostly a few
/// bytes long, where a plain scan beats setting up the SIMD search.
#[inline(always)]
fn find_nul(bytes: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    let (head, tail) = bytes.split_at(bytes.len().min(SHORT));
    match head.iter().position(|&b| b == 0) {
        Some(i) => Some(i),
        None => memchr::memchr(0, tail).map(|i| i + SHORT),
    }
}

/// The text of `<Tag>text</Tag>` when the bytes after a tag with content
/// are exactly STR_I, the string, END: the text and the position after the
/// END. The most common shape of an EAS element, decoded without an open
/// frame.
#[inline(always)]
fn leaf_text<'a>(
    input: &'a [u8],
    pos: usize,
    runs: &mut Utf8Runs<'a>,
) -> Result<Option<(&'a str, usize)>, DecodeError> {
    let Some((&STR_I, rest)) = input.get(pos..).and_then(<[u8]>::split_first) else {
        return Ok(None);
    };
    let Some(len) = find_nul(rest) else {
        return Ok(None);
    };
    if rest.get(len + 1) != Some(&END) {
        return Ok(None);
    }
    let text = runs.get(input, pos + 1, pos + 1 + len)?;
    Ok(Some((text, pos + len + 3)))
}

/// Decodes an EAS WBXML document and returns its root element. Strings and
/// opaque data borrow from `input`.
///
/// The children of all open elements are collected in one scratch vector;
/// when an element closes, its children move out of it into a vector of
/// exactly their number. So a document costs one allocation per element
/// with content and no regrowth.
pub fn decode(input: &[u8]) -> Result<Element<'_>, DecodeError> {
    let mut tree = TreeSink {
        nodes: Vec::with_capacity(64),
    };
    decode_into(input, &mut tree)?;
    match tree.nodes.pop() {
        Some(Node::Element(root)) => Ok(root),
        // `decode_into` returns once the root element is complete.
        _ => Err(DecodeError::NoRoot),
    }
}

/// What the decoding loop hands the document to, in document order: the
/// tree builder of [`decode`], or the event list the XML writer renders
/// from (`crate::xml`), which needs no allocation per element. The loop
/// checks everything; a sink only records.
pub(crate) trait Sink<'a> {
    /// Where the children of an open element start.
    type Mark: Copy;
    /// The start of the element `tag`, whose children follow; returns where
    /// they start.
    fn open(&mut self, tag: Tag) -> Self::Mark;
    /// `<tag>text</tag>`, complete.
    fn leaf(&mut self, tag: Tag, text: &'a str);
    /// `<tag/>`.
    fn empty(&mut self, tag: Tag);
    /// The end of the element `tag` opened at `start`; `root` for the
    /// document's root, the last call.
    fn close(&mut self, tag: Tag, start: Self::Mark, root: bool);
    /// Text in the open element whose children start at `start`.
    fn text(&mut self, start: Self::Mark, text: &'a str);
    /// Opaque data in the open element.
    fn opaque(&mut self, bytes: &'a [u8]);
}

/// The tree of [`decode`]: the children of all open elements in one vector.
struct TreeSink<'a> {
    nodes: Vec<Node<'a>>,
}

impl<'a> Sink<'a> for TreeSink<'a> {
    type Mark = usize;

    #[inline]
    fn open(&mut self, _tag: Tag) -> usize {
        self.nodes.len()
    }

    #[inline]
    fn leaf(&mut self, tag: Tag, text: &'a str) {
        push_leaf(&mut self.nodes, tag, text);
    }

    #[inline]
    fn empty(&mut self, tag: Tag) {
        push_empty(&mut self.nodes, tag);
    }

    #[inline]
    fn close(&mut self, tag: Tag, start: usize, root: bool) {
        if root {
            // Not `split_off`: the root's vector gets exactly its children's
            // capacity, not the scratch vector's.
            let children = self.nodes.drain(start..).collect();
            self.nodes.push(Node::Element(Element { tag, children }));
        } else {
            push_closed(&mut self.nodes, tag, start);
        }
    }

    #[inline]
    fn text(&mut self, start: usize, text: &'a str) {
        // WBXML may split one string into several STR_I/STR_T tokens: they
        // make one text node.
        if self.nodes.len() > start {
            if let Some(Node::Text(prev)) = self.nodes.last_mut() {
                prev.to_mut().push_str(text);
                return;
            }
        }
        self.nodes.push(Node::Text(Cow::Borrowed(text)));
    }

    #[inline]
    fn opaque(&mut self, bytes: &'a [u8]) {
        self.nodes.push(Node::Opaque(Cow::Borrowed(bytes)));
    }
}

/// Decodes `input` into `sink`, and returns once the root element is
/// complete and nothing follows it.
pub(crate) fn decode_into<'a, S: Sink<'a>>(
    input: &'a [u8],
    sink: &mut S,
) -> Result<(), DecodeError> {
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
    // Open elements: tag and where their children start.
    let mut open: Vec<(Tag, S::Mark)> = Vec::with_capacity(16);
    let mut runs = Utf8Runs {
        start: input.len(),
        text: "",
    };

    loop {
        let offset = r.pos;
        let b = r.byte()?;
        match b {
            // A tag with content: `<Tag>text</Tag>` at once, or a new frame.
            0x45..=0x7F => {
                let token = b & 0x3F;
                if page_table.name(token).is_none() {
                    return Err(DecodeError::UnknownToken {
                        page,
                        token,
                        offset,
                    });
                }
                let tag = Tag::new(page, token);
                if let Some((text, next)) = leaf_text(input, r.pos, &mut runs)? {
                    r.pos = next;
                    sink.leaf(tag, text);
                    if open.is_empty() {
                        break;
                    }
                } else {
                    if open.len() >= MAX_DEPTH {
                        return Err(DecodeError::TooDeep {
                            max: MAX_DEPTH,
                            offset,
                        });
                    }
                    open.push((tag, sink.open(tag)));
                }
            }
            // A tag without content.
            0x05..=0x3F => {
                if page_table.name(b).is_none() {
                    return Err(DecodeError::UnknownToken {
                        page,
                        token: b,
                        offset,
                    });
                }
                sink.empty(Tag::new(page, b));
                if open.is_empty() {
                    break;
                }
            }
            END => {
                let (tag, start) = open.pop().ok_or(DecodeError::Unsupported {
                    what: "END outside any element",
                    offset,
                })?;
                sink.close(tag, start, open.is_empty());
                if open.is_empty() {
                    break;
                }
            }
            STR_I | STR_T => {
                let s = if b == STR_I {
                    let (start, end) = r.str_i()?;
                    runs.get(input, start, end)?
                } else {
                    let idx = r.mb_u_int32()?;
                    table_string(string_table, idx, table_at, offset)?
                };
                let &(_, start) = open.last().ok_or(DecodeError::Unsupported {
                    what: "text outside the root element",
                    offset,
                })?;
                sink.text(start, s);
            }
            SWITCH_PAGE => {
                let p = r.byte()?;
                page_table = code_page(p).ok_or(DecodeError::UnknownPage { page: p, offset })?;
                page = p;
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
                sink.opaque(bytes);
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
            LITERAL | 0x44 | 0x84 | 0xC4 => {
                return Err(DecodeError::Unsupported {
                    what: "literal tag",
                    offset,
                })
            }
            // 0x85..=0xBF, 0xC5..=0xFF: tags with attributes.
            _ => {
                return Err(DecodeError::Unsupported {
                    what: "attributes",
                    offset,
                })
            }
        }
    }

    if r.pos < input.len() {
        return Err(DecodeError::TrailingData {
            count: input.len() - r.pos,
            offset: r.pos,
        });
    }
    Ok(())
}

// Appending a node with `Vec::push` builds it on the stack first (it must
// exist before `push` may grow the vector) and then copies it, and the
// copy's wide loads wait for the narrow stores that built it: a
// store-forwarding stall that took a fifth of the decoding time.
// `resize_with` grows first and then lets the closure build the node in its
// final place. (It calls the closure once here: the vector grows by one.)

/// Appends `<tag>text</tag>`.
#[inline(never)]
fn push_leaf<'a>(nodes: &mut Vec<Node<'a>>, tag: Tag, text: &'a str) {
    nodes.resize_with(nodes.len() + 1, || {
        Node::Element(Element {
            tag,
            children: vec![Node::Text(Cow::Borrowed(text))],
        })
    });
}

/// Appends `<tag/>`.
#[inline(never)]
fn push_empty(nodes: &mut Vec<Node<'_>>, tag: Tag) {
    nodes.resize_with(nodes.len() + 1, || Node::Element(Element::new(tag)));
}

/// Replaces the children of a closing element, `nodes[start..]`, by the
/// element.
#[inline(never)]
fn push_closed(nodes: &mut Vec<Node<'_>>, tag: Tag, start: usize) {
    let mut children = nodes.split_off(start);
    nodes.resize_with(nodes.len() + 1, || {
        Node::Element(Element {
            tag,
            children: std::mem::take(&mut children),
        })
    });
}

/// The number in the first element named `Status` (any code page), found
/// by scanning the tokens without building a tree: the scan stops there, so
/// it costs little even for a large Sync response. `None` when there is no
/// such element or the input is not EAS WBXML. For metrics and logs, not
/// for decisions.
pub fn first_status(input: &[u8]) -> Option<u16> {
    let mut r = Reader { input, pos: 0 };
    if !(0x01..=0x03).contains(&r.byte().ok()?) {
        return None;
    }
    if r.mb_u_int32().ok()? == 0 {
        r.mb_u_int32().ok()?;
    }
    r.mb_u_int32().ok()?;
    let at = r.pos;
    let table_len = r.mb_u_int32().ok()?;
    let table_at = r.pos;
    let string_table = r.take(table_len, at).ok()?;
    let mut page_table: &CodePage = &CODE_PAGES[0];
    let mut in_status = false;
    loop {
        let offset = r.pos;
        let b = r.byte().ok()?;
        let text = match b {
            SWITCH_PAGE => {
                page_table = code_page(r.byte().ok()?)?;
                continue;
            }
            END if in_status => return None,
            END => continue,
            STR_I => {
                let (start, end) = r.str_i().ok()?;
                std::str::from_utf8(input.get(start..end)?).ok()?
            }
            STR_T => {
                let idx = r.mb_u_int32().ok()?;
                table_string(string_table, idx, table_at, offset).ok()?
            }
            OPAQUE => {
                let len = r.mb_u_int32().ok()?;
                r.take(len, offset).ok()?;
                continue;
            }
            ENTITY | PI | 0x40..=0x42 | 0x80..=0x82 | 0xC0..=0xC2 => return None,
            _ if b & 0x3F == LITERAL || b & 0x80 != 0 => return None,
            _ => {
                in_status = b & 0x40 != 0 && page_table.name(b & 0x3F)? == "Status";
                continue;
            }
        };
        if in_status {
            return text.trim().parse().ok();
        }
    }
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
    fn first_status_finds_the_first_status_anywhere() {
        let doc = |xml: &str| crate::xml::xml_to_wbxml(xml).expect("test XML");
        let sync = doc(
            r#"<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>5</SyncKey><CollectionId>3</CollectionId><Status>1</Status></Collection><Collection><Status>8</Status></Collection></Collections></Sync>"#,
        );
        assert_eq!(first_status(&sync), Some(1));
        let fs = doc(r#"<FolderSync xmlns="FolderHierarchy:"><Status>142</Status></FolderSync>"#);
        assert_eq!(first_status(&fs), Some(142));
        let none = doc(r#"<Sync xmlns="AirSync:"><Collections/></Sync>"#);
        assert_eq!(first_status(&none), None);
        assert_eq!(first_status(b""), None);
        assert_eq!(first_status(b"<xml/>"), None);
        // Opaque data before the Status is skipped, not read as tokens.
        let mut with_opaque = vec![0x03, 0x01, 0x6A, 0x00, 0x45, 0xC3, 0x02, 0x4E, 0x01];
        with_opaque.extend_from_slice(&[0x4E, 0x03, b'7', 0x00, 0x01, 0x01]);
        assert_eq!(first_status(&with_opaque), Some(7));
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

    #[test]
    fn strings_after_binary_data_are_still_validated() {
        use crate::wbxml::encode_to_vec;
        use crate::wbxml::tags::composemail;
        // Opaque bytes that are not UTF-8 end a validated run: the strings
        // after them, short (a leaf) or long (mixed content), start new ones.
        let long = "ü".repeat(40);
        let tree = Element::new(composemail::SEND_MAIL)
            .with(Element::with_text(composemail::CLIENT_ID, "é1"))
            .with(Element::with_opaque(
                composemail::MIME,
                vec![0xFF, 0xC3, 0x28],
            ))
            .with(Element::with_text(composemail::ACCOUNT_ID, long.as_str()))
            .with(Element::with_opaque(composemail::MIME, vec![0xF0, 0x9F]))
            .with(text("x"))
            .with(Element::with_text(composemail::SAVE_IN_SENT_ITEMS, "ü"));
        let doc = encode_to_vec(&tree);
        assert_eq!(decode(&doc).expect("decodes"), tree);

        // ... STR_I C3 BC 00 END END: break the last "ü" (C3 28).
        let mut bad = doc.clone();
        let at = bad.len() - 5;
        assert_eq!(bad[at..at + 2], [0xC3, 0xBC]);
        bad[at + 1] = 0x28;
        assert_eq!(decode(&bad), Err(DecodeError::Utf8 { offset: at }));

        // A bad byte inside the long string, right after invalid opaque data.
        let mut bad = doc.clone();
        let start = doc
            .windows(4)
            .position(|w| w == [STR_I, 0xC3, 0xBC, 0xC3])
            .expect("the long string");
        bad[start + 20] = 0xFF;
        assert_eq!(decode(&bad), Err(DecodeError::Utf8 { offset: start + 1 }));
    }
}
