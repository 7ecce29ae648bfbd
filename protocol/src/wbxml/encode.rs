//! The WBXML encoder: `Element` tree → bytes, appended to a caller's buffer so
//! a connection can reuse one allocation. Text is always STR_I, `Node::Opaque`
//! always OPAQUE; SWITCH_PAGE only when the page changes. It does not
//! recurse, so a deep tree cannot overflow the stack.

use super::{Element, Node, Tag};

/// WBXML 1.3, unknown public id (0x01), UTF-8 (106 = 0x6A), empty string table.
const HEADER: [u8; 4] = [0x03, 0x01, 0x6A, 0x00];

/// Appends the WBXML encoding of the document rooted at `root` to `out`.
///
/// A NUL character cannot be carried by a WBXML inline string (nor by XML);
/// NULs inside text are left out.
pub fn encode(root: &Element<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&HEADER);
    let mut page: u8 = 0;
    encode_element(root, &mut page, out);
}

/// One element and its subtree, from the code page `page` the output is
/// in (updated to the page it ends in).
fn encode_element(root: &Element<'_>, page: &mut u8, out: &mut Vec<u8>) {
    // Each frame: the element's children and the index of the next one.
    let mut stack: Vec<(&[Node<'_>], usize)> = Vec::new();
    open(root, page, out, &mut stack);
    while let Some((children, idx)) = stack.last_mut() {
        let Some(node) = children.get(*idx) else {
            out.push(0x01); // END
            stack.pop();
            continue;
        };
        *idx += 1;
        match node {
            Node::Element(el) => open(el, page, out, &mut stack),
            Node::Text(text) => write_str_i(text.as_bytes(), out),
            Node::Opaque(bytes) => write_opaque(bytes, out),
        }
    }
}

/// Writes a document as it is built, without a tree: the bytes are those
/// [`encode`] gives for the tree the same calls would have built (an
/// element left without content is written `<Tag/>`, as an element
/// without children is). For responses of hundreds of items, where
/// building the tree costs as much as encoding it; any part may still be
/// written from a tree ([`Writer::element`]).
#[derive(Debug)]
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
    page: u8,
    /// Where the token of each open element is.
    open: Vec<usize>,
}

impl<'b> Writer<'b> {
    /// Starts a document at the end of `out` (the WBXML header).
    pub fn new(out: &'b mut Vec<u8>) -> Self {
        out.extend_from_slice(&HEADER);
        Writer {
            out,
            page: 0,
            open: Vec::with_capacity(16),
        }
    }

    fn token(&mut self, tag: Tag, content: bool) {
        if tag.page != self.page {
            self.out.push(0x00);
            self.out.push(tag.page);
            self.page = tag.page;
        }
        let token = tag.token & 0x3F;
        self.out.push(if content { token | 0x40 } else { token });
    }

    /// Opens `tag`; [`Writer::end`] closes it.
    pub fn start(&mut self, tag: Tag) {
        self.token(tag, true);
        self.open.push(self.out.len() - 1);
    }

    /// Closes the innermost open element (`<Tag/>` when nothing was
    /// written in it).
    pub fn end(&mut self) {
        let Some(at) = self.open.pop() else {
            return;
        };
        if self.out.len() == at + 1 {
            self.out[at] &= !0x40;
        } else {
            self.out.push(0x01); // END
        }
    }

    /// `<tag/>`.
    pub fn empty(&mut self, tag: Tag) {
        self.token(tag, false);
    }

    /// `<tag>text</tag>`, always with its text (even empty).
    pub fn text(&mut self, tag: Tag, text: &str) {
        self.token(tag, true);
        write_str_i(text.as_bytes(), self.out);
        self.out.push(0x01);
    }

    /// `<tag>bytes</tag>` as opaque data.
    pub fn opaque(&mut self, tag: Tag, bytes: &[u8]) {
        self.token(tag, true);
        write_opaque(bytes, self.out);
        self.out.push(0x01);
    }

    /// An element written from its tree.
    pub fn element(&mut self, el: &Element<'_>) {
        encode_element(el, &mut self.page, self.out);
    }
}

fn write_opaque(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(0xC3);
    write_mb_u_int32(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// The WBXML encoding of the document rooted at `root`, in a new buffer
/// allocated once at its final size (a window of emails is a few hundred
/// KB: growing by doubling copied it about twice over, into fresh pages).
pub fn encode_to_vec(root: &Element<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(root));
    encode(root, &mut out);
    out
}

/// An upper bound of the encoded size: the header, then per element a
/// possible page switch, its token and END; text with its STR_I marker and
/// terminator; opaque data with its marker and length. Iterative, like
/// [`encode`].
fn encoded_len(root: &Element<'_>) -> usize {
    let mut len = HEADER.len();
    let mut stack: Vec<&Element<'_>> = vec![root];
    while let Some(el) = stack.pop() {
        len += 4;
        for node in &el.children {
            match node {
                Node::Element(e) => stack.push(e),
                Node::Text(t) => len += t.len() + 2,
                Node::Opaque(b) => len += b.len() + 6,
            }
        }
    }
    len
}

fn open<'t, 'a>(
    el: &'t Element<'a>,
    page: &mut u8,
    out: &mut Vec<u8>,
    stack: &mut Vec<(&'t [Node<'a>], usize)>,
) {
    if el.tag.page != *page {
        out.push(0x00);
        out.push(el.tag.page);
        *page = el.tag.page;
    }
    let token = el.tag.token & 0x3F;
    if el.children.is_empty() {
        out.push(token);
    } else if let [Node::Text(text)] = el.children.as_slice() {
        // `<Tag>text</Tag>`, the most common shape: no stack frame.
        out.push(token | 0x40);
        write_str_i(text.as_bytes(), out);
        out.push(0x01);
    } else {
        out.push(token | 0x40);
        stack.push((&el.children, 0));
    }
}

fn write_str_i(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(0x03);
    if memchr::memchr(0, bytes).is_none() {
        out.extend_from_slice(bytes);
    } else {
        out.extend(bytes.iter().copied().filter(|&b| b != 0));
    }
    out.push(0x00);
}

fn write_mb_u_int32(value: usize, out: &mut Vec<u8>) {
    // Lengths above u32::MAX cannot be expressed; EAS bodies never get near.
    let v = u32::try_from(value).unwrap_or(u32::MAX);
    let mut buf = [0u8; 5];
    let mut i = buf.len() - 1;
    buf[i] = (v & 0x7F) as u8;
    let mut rest = v >> 7;
    while rest != 0 {
        i -= 1;
        buf[i] = 0x80 | (rest & 0x7F) as u8;
        rest >>= 7;
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size estimate is never below the encoding, so the buffer is
    /// allocated once: page switches on every level, text with NULs left
    /// out, opaque data with long length prefixes.
    #[test]
    fn the_size_estimate_bounds_the_encoding() {
        let mut deep = Element::new(Tag::new(0, 0x05));
        for i in 0..200u8 {
            deep = Element::new(Tag::new(i % 3, 0x05 + i % 20)).with(deep);
        }
        let mut wide = Element::new(Tag::new(1, 0x05));
        for i in 0..50u8 {
            wide.push(Element::with_text(
                Tag::new(i % 4, 0x06),
                "x\0y".repeat(i.into()),
            ));
            wide.push(Element::with_opaque(
                Tag::new(2, 0x07),
                vec![i; 300 * usize::from(i)],
            ));
            wide.push(Element::new(Tag::new(0, 0x08)));
        }
        for tree in [Element::new(Tag::new(0, 0x05)), deep, wide] {
            let bytes = encode_to_vec(&tree);
            assert!(encoded_len(&tree) >= bytes.len());
            assert_eq!(bytes.capacity(), encoded_len(&tree), "allocated once");
        }
    }
}
