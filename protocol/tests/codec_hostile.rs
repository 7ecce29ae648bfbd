//! Hostile bytes for everything the server runs on a request body before
//! and while it decides: the WBXML decoder, the XML rendering of the
//! request log (masked), `first_status`, and every command's typed decoding
//! (`Request::decode`, at every protocol version, with the MIME forms).
//! Inputs: arbitrary bytes, token streams built to reach deep into the
//! decoder (code-page switches to missing pages, unknown tokens, inline
//! strings with invalid UTF-8, OPAQUE and string-table lengths past the end
//! or near 4 GiB, END without a start, deep nesting), and real-device
//! documents with such fragments spliced in. Nothing may panic, and the
//! memory a decode takes is bounded by its input's size (a counting
//! allocator measures each decode's peak).
//!
//! Fixed seed (proptest's default, failure persistence off); `PROPTEST_CASES`
//! raises the case count.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

mod find_corpus;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use opush_protocol::commands::dispatch::Request;
use opush_protocol::query::{Command, RequestLine};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec, first_status, CODE_PAGES};
use opush_protocol::xml::{element_to_xml, element_to_xml_masked, wbxml_to_xml, xml_to_wbxml};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Per-thread allocation accounting.

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + size;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(size)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// accounting only reads sizes.
#[allow(unsafe_code, reason = "a GlobalAlloc impl is unsafe by definition")]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most bytes live at once (above what was live before) while `f` runs.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get);
    (out, peak.saturating_sub(base))
}

/// What a decode may take: a tree node per input byte, at most, plus slack.
fn budget(input: &[u8]) -> usize {
    256 * input.len() + 64 * 1024
}

fn cases(ci: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

fn config(ci: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(ci),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Everything the server does with a body.

/// A request line for every command, with the parameters the MIME forms
/// and GetAttachment read.
fn lines() -> &'static [RequestLine] {
    static LINES: std::sync::OnceLock<Vec<RequestLine>> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        Command::ALL
            .iter()
            .filter_map(|c| {
                RequestLine::parse(&format!(
                    "Cmd={}&User=u&DeviceId=d&DeviceType=t&ItemId=2%3A1&CollectionId=2\
                     &AttachmentName=2%3A1%3A0&SaveInSent=T",
                    c.name()
                ))
                .ok()
            })
            .collect()
    })
}

/// Runs the decoder and everything after it on `input`; fails on any
/// disagreement or on a decode over its memory budget.
fn everything(input: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, peak) = peak_of(|| decode(input));
    prop_assert!(
        peak <= budget(input),
        "decoding {} bytes took {peak} bytes at peak",
        input.len()
    );
    let streamed = wbxml_to_xml(input);
    let _ = first_status(input);
    match &decoded {
        Ok(root) => {
            let xml = element_to_xml(root);
            prop_assert_eq!(streamed.as_deref().ok(), Some(xml.as_str()));
            let _ = element_to_xml_masked(root);
            let bytes = encode_to_vec(root);
            let again = decode(&bytes);
            prop_assert_eq!(again.as_ref(), Ok(root));
            let from_xml = xml_to_wbxml(&xml);
            prop_assert_eq!(from_xml.as_ref(), Ok(&bytes));
        }
        Err(_) => prop_assert!(
            streamed.is_err(),
            "wbxml_to_xml accepts what decode refuses"
        ),
    }
    for line in lines() {
        for v in ProtocolVersion::ALL {
            let _ = Request::decode(line, v, input);
            let _ = Request::decode_with_content_type(line, v, Some("message/rfc822"), input);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Inputs.

const HEADER: [u8; 4] = [0x03, 0x01, 0x6A, 0x00];

/// A multi-byte integer.
fn mb(mut n: u32) -> Vec<u8> {
    let mut out = vec![(n & 0x7F) as u8];
    n >>= 7;
    while n > 0 {
        out.insert(0, 0x80 | (n & 0x7F) as u8);
        n >>= 7;
    }
    out
}

/// One WBXML token, well-formed or deliberately not.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let known_page = (0..CODE_PAGES.len()).prop_map(|i| vec![0x00, CODE_PAGES[i].id]);
    let tag =
        (0..CODE_PAGES.len(), any::<prop::sample::Index>(), 0u8..4).prop_map(|(p, i, bits)| {
            let page = &CODE_PAGES[p];
            let (token, _) = page.entries[i.index(page.entries.len())];
            // SWITCH_PAGE first, then the tag with content / attribute bits.
            vec![0x00, page.id, token | (bits << 6)]
        });
    let length = prop_oneof![
        0u32..8,
        Just(u32::MAX),
        Just(0x7FFF_FFFF),
        Just(0x8000_0000),
        1000u32..100_000,
    ];
    prop_oneof![
        4 => tag,
        2 => Just(vec![0x01]),                                   // END
        1 => known_page,
        1 => (20u8..=255).prop_map(|p| vec![0x00, p]),           // a missing page
        1 => (5u8..0x40).prop_map(|t| vec![t | 0x40]),          // maybe unknown token
        2 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|mut s| {
            // STR_I, invalid UTF-8 and all, NUL-terminated.
            s.retain(|b| *b != 0);
            let mut out = vec![0x03];
            out.extend(s);
            out.push(0);
            out
        }),
        1 => (length.clone(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(n, data)| {
            // OPAQUE claiming n bytes.
            let mut out = vec![0xC3];
            out.extend(mb(n));
            out.extend(data);
            out
        }),
        1 => length.prop_map(|n| {
            // STR_T at any index.
            let mut out = vec![0x83];
            out.extend(mb(n));
            out
        }),
        1 => (1usize..600).prop_map(|n| vec![0x45; n]),           // deep nesting
        1 => (0u8..=255).prop_map(|b| vec![b]),                  // anything
    ]
}

/// A document made of tokens after a header, sometimes with a string table.
fn token_document() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
        prop::collection::vec(token(), 1..40),
    )
        .prop_map(|(table, tokens)| {
            let mut out = HEADER[..3].to_vec();
            match table {
                Some(t) => {
                    out.extend(mb(t.len() as u32));
                    out.extend(t);
                }
                None => out.push(0),
            }
            for t in tokens {
                out.extend(t);
            }
            out
        })
}

/// Real-device request documents, a few per session.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = find_corpus::real_devices();
        let mut out = Vec::new();
        for session in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus missing at {}: {e}", dir.display()))
        {
            let session = session.unwrap().path();
            if !session.is_dir() {
                continue;
            }
            let mut files: Vec<_> = std::fs::read_dir(&session)
                .unwrap()
                .map(|f| f.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".wbxml"))
                .collect();
            files.sort();
            for f in files.into_iter().step_by(9) {
                out.push(std::fs::read(f).unwrap());
            }
        }
        assert!(out.len() > 30, "corpus too small: {}", out.len());
        out
    })
}

/// A real document with up to four edits: a token spliced in, a range cut
/// out, or a bit flipped.
fn damaged_real_document() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<prop::sample::Index>(),
        prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, token(), any::<u8>()),
            1..5,
        ),
    )
        .prop_map(|(doc, edits)| {
            let mut bytes = doc.get(corpus()).clone();
            for (at, op, tok, bit) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => {
                        bytes.splice(i..i, tok);
                    }
                    1 => {
                        let end = (i + usize::from(bit % 16)).min(bytes.len());
                        bytes.drain(i.min(end)..end);
                    }
                    _ => {
                        if let Some(b) = bytes.get_mut(i) {
                            *b ^= 1 << (bit % 8);
                        }
                    }
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        everything(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut input = HEADER.to_vec();
        input.extend(bytes);
        everything(&input)?;
    }

    #[test]
    fn token_streams(input in token_document()) {
        everything(&input)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn damaged_real_documents(input in damaged_real_document()) {
        everything(&input)?;
    }
}

/// The memory budget holds for the worst shapes written out: a node per
/// byte, as wide or as deep as allowed.
#[test]
fn worst_shapes_stay_within_the_budget() {
    let n = 100_000;
    let mut wide = HEADER.to_vec();
    wide.push(0x45);
    wide.extend(std::iter::repeat_n(0x05, n));
    wide.push(0x01);
    let mut deep = HEADER.to_vec();
    deep.extend(std::iter::repeat_n(0x45, n));
    let mut strings = HEADER.to_vec();
    strings.push(0x45);
    for _ in 0..n / 4 {
        strings.extend([0x45, 0x03, b'a', 0x00, 0x01]);
    }
    strings.push(0x01);
    let mut opaque = HEADER.to_vec();
    opaque.push(0x45);
    for _ in 0..n / 4 {
        opaque.extend([0xC3, 0x01, b'a']);
    }
    opaque.push(0x01);
    for (name, input) in [
        ("wide", wide),
        ("deep", deep),
        ("strings", strings),
        ("opaque", opaque),
    ] {
        let (res, peak) = peak_of(|| decode(&input).map(|_| ()));
        assert!(
            peak <= budget(&input),
            "{name}: {} bytes took {peak} at peak ({res:?})",
            input.len()
        );
    }
}
