//! `wbxml_to_xml` without building the tree: the decoder hands the document
//! to a flat list of steps (one vector for the whole document, borrowed
//! strings, no allocation per element) and the XML is written from that.
//! For `opush wbxml decode` on a tag-heavy document the tree was most of the
//! work: an allocation, a free and a few page faults per element.
//!
//! The output must be the one `render` gives for the decoded tree, byte for
//! byte: the shapes below are the tree's (an element's children are its
//! steps up to its `Close`; adjacent text steps are one text node, as the
//! tree decoder merges them). Tests compare both on the corpus and on
//! generated documents.

use std::fmt::Write as _;

use base64::Engine as _;

use super::{escape_into, indent, prelude, write_name, XmlError, WRAPPER_NAMESPACE};
use crate::wbxml::{decode_into, is_opaque, Sink, Tag};

/// One step of a document, in order.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    /// An element whose children follow, up to its `Close`.
    Open(Tag),
    /// The end of the innermost `Open`.
    Close,
    /// `<tag>text</tag>`.
    Leaf(Tag, &'a str),
    /// `<tag/>`.
    Empty(Tag),
    /// A text node, or a piece of one.
    Text(&'a str),
    /// Opaque data.
    Opaque(&'a [u8]),
}

struct Steps<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Sink<'a> for Steps<'a> {
    type Mark = ();

    fn open(&mut self, tag: Tag) {
        self.steps.push(Step::Open(tag));
    }

    fn leaf(&mut self, tag: Tag, text: &'a str) {
        self.steps.push(Step::Leaf(tag, text));
    }

    fn empty(&mut self, tag: Tag) {
        self.steps.push(Step::Empty(tag));
    }

    fn close(&mut self, _tag: Tag, _start: (), _root: bool) {
        self.steps.push(Step::Close);
    }

    fn text(&mut self, _start: (), text: &'a str) {
        self.steps.push(Step::Text(text));
    }

    fn opaque(&mut self, bytes: &'a [u8]) {
        self.steps.push(Step::Opaque(bytes));
    }
}

/// WBXML bytes → indented XML text, as `render` of the decoded tree.
pub(super) fn wbxml_to_xml(input: &[u8], capacity: usize) -> Result<String, XmlError> {
    // A tag-heavy document has about one step per four bytes.
    let mut sink = Steps {
        steps: Vec::with_capacity(input.len() / 4 + 16),
    };
    decode_into(input, &mut sink)?;
    Ok(render_steps(&sink.steps, capacity))
}

fn tag_of(step: &Step<'_>) -> Option<Tag> {
    match *step {
        Step::Open(tag) | Step::Leaf(tag, _) | Step::Empty(tag) => Some(tag),
        _ => None,
    }
}

/// The text pieces at the start of `steps`.
fn texts<'s, 'a>(steps: &'s [Step<'a>]) -> impl Iterator<Item = &'a str> + 's {
    steps.iter().map_while(|s| match *s {
        Step::Text(t) => Some(t),
        _ => None,
    })
}

fn render_steps(steps: &[Step<'_>], capacity: usize) -> String {
    let mut used = [false; 256];
    for tag in steps.iter().filter_map(tag_of) {
        used[usize::from(tag.page)] = true;
    }
    let Some(root) = steps.first().and_then(tag_of) else {
        // `decode_into` succeeded, so the document has a root element.
        return String::new();
    };
    let (mut out, ns_decl, prefixes) = prelude(&used, root.page, capacity);
    let out = &mut out;
    // Open elements whose children are on their own lines.
    let mut open: Vec<Tag> = Vec::with_capacity(16);
    // The namespace declarations go on the root's start tag only.
    let mut ns: &str = &ns_decl;
    let mut i = 0;
    while let Some(&step) = steps.get(i) {
        i += 1;
        let depth = open.len();
        match step {
            Step::Leaf(tag, text) => {
                indent(out, depth);
                write_name(out, tag, &prefixes, false);
                out.push_str(ns);
                single_text(out, tag, &prefixes, [text].into_iter());
            }
            Step::Empty(tag) => {
                indent(out, depth);
                write_name(out, tag, &prefixes, false);
                out.push_str(ns);
                out.push_str("/>\n");
            }
            Step::Open(tag) => {
                indent(out, depth);
                write_name(out, tag, &prefixes, false);
                out.push_str(ns);
                let rest = steps.get(i..).unwrap_or_default();
                let n_texts = texts(rest).count();
                match (rest.get(n_texts), rest.get(1)) {
                    (Some(Step::Close), _) if n_texts == 0 => {
                        out.push_str("/>\n");
                        i += 1;
                    }
                    (Some(Step::Close), _) => {
                        single_text(out, tag, &prefixes, texts(rest));
                        i += n_texts + 1;
                    }
                    (Some(Step::Opaque(bytes)), Some(Step::Close)) if n_texts == 0 => {
                        if !is_opaque(tag) {
                            out.push_str(" wbxml=\"opaque\"");
                        }
                        out.push('>');
                        out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
                        write_name(out, tag, &prefixes, true);
                        out.push_str(">\n");
                        i += 2;
                    }
                    _ => {
                        out.push_str(">\n");
                        open.push(tag);
                    }
                }
            }
            Step::Close => {
                if let Some(tag) = open.pop() {
                    indent(out, depth.saturating_sub(1));
                    write_name(out, tag, &prefixes, true);
                    out.push_str(">\n");
                }
            }
            Step::Text(_) => {
                // Mixed content: every text node in a wrapper.
                let rest = steps.get(i - 1..).unwrap_or_default();
                indent(out, depth);
                let _ = write!(out, "<wbxml:str xmlns:wbxml=\"{WRAPPER_NAMESPACE}\">");
                let mut n = 0;
                for text in texts(rest) {
                    escape_into(out, text);
                    n += 1;
                }
                out.push_str("</wbxml:str>\n");
                i += n - 1;
            }
            Step::Opaque(bytes) => {
                indent(out, depth);
                let _ = write!(out, "<wbxml:opaque xmlns:wbxml=\"{WRAPPER_NAMESPACE}\">");
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
                out.push_str("</wbxml:opaque>\n");
            }
        }
        ns = "";
    }
    std::mem::take(out)
}

/// The rest of an element holding one text node, after its name: the text
/// and the end tag.
fn single_text<'a>(
    out: &mut String,
    tag: Tag,
    prefixes: &[String],
    pieces: impl Iterator<Item = &'a str>,
) {
    if is_opaque(tag) {
        out.push_str(" wbxml=\"str\"");
    }
    out.push('>');
    pieces.for_each(|text| escape_into(out, text));
    write_name(out, tag, prefixes, true);
    out.push_str(">\n");
}
