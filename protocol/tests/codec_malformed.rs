//! Malformed WBXML: every broken input gets a typed `DecodeError`, quickly,
//! without a panic or a large allocation. Also replays every file in
//! `test_data/fuzz-failures/` (inputs that once broke the decoder).

mod find_corpus;

use std::path::Path;

use opush_protocol::wbxml::{decode, encode_to_vec, DecodeError, MAX_DEPTH};
use opush_protocol::xml::{element_to_xml, xml_to_wbxml};

const HEADER: [u8; 4] = [0x03, 0x01, 0x6A, 0x00];

fn doc(body: &[u8]) -> Vec<u8> {
    let mut v = HEADER.to_vec();
    v.extend_from_slice(body);
    v
}

fn real_document() -> Vec<u8> {
    let path = find_corpus::real_devices().join("gs3-exchange-create-contacts");
    let mut files: Vec<_> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("real-device corpus missing at {}: {e}", path.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wbxml"))
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let biggest = files.last().expect("corpus has WBXML files");
    std::fs::read(biggest).expect("read")
}

#[test]
fn every_truncation_of_a_real_document_is_an_error() {
    let bytes = real_document();
    assert!(bytes.len() > 100, "want a document of some size");
    assert!(decode(&bytes).is_ok());
    for len in 0..bytes.len() {
        match decode(&bytes[..len]) {
            Err(DecodeError::Truncated { .. }) | Err(DecodeError::LengthOverflow { .. }) => {}
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
}

#[test]
fn unknown_page_and_token() {
    assert_eq!(
        decode(&doc(&[0x00, 26, 0x05])),
        Err(DecodeError::UnknownPage {
            page: 26,
            offset: 4
        })
    );
    assert_eq!(
        decode(&doc(&[0x3F])),
        Err(DecodeError::UnknownToken {
            page: 0,
            token: 0x3F,
            offset: 4
        })
    );
    // Provision has no token 0x12.
    assert!(matches!(
        decode(&doc(&[0x00, 14, 0x12])),
        Err(DecodeError::UnknownToken {
            page: 14,
            token: 0x12,
            ..
        })
    ));
}

#[test]
fn lengths_past_the_end() {
    // OPAQUE of 100 bytes with 3 present.
    assert!(matches!(
        decode(&doc(&[0x45, 0xC3, 100, 1, 2, 3])),
        Err(DecodeError::LengthOverflow { .. })
    ));
    // String table longer than the document.
    assert!(matches!(
        decode(&[0x03, 0x01, 0x6A, 0x7F, 0x05]),
        Err(DecodeError::LengthOverflow { .. })
    ));
    // STR_T index outside the string table.
    assert!(matches!(
        decode(&[0x03, 0x01, 0x6A, 0x02, b'a', 0x00, 0x45, 0x83, 0x05, 0x01]),
        Err(DecodeError::LengthOverflow { .. })
    ));
    // Unterminated inline string.
    assert!(matches!(
        decode(&doc(&[0x45, 0x03, b'a', b'b'])),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn two_gigabyte_length_prefix_is_rejected_without_allocating() {
    // OPAQUE with length 0x8000_0000 (2 GiB), mb_u_int32 = 88 80 80 80 00.
    let input = doc(&[0x45, 0xC3, 0x88, 0x80, 0x80, 0x80, 0x00, 1, 2, 3]);
    assert!(matches!(
        decode(&input),
        Err(DecodeError::LengthOverflow { .. })
    ));
    // A string table announcing 4 GiB - 1.
    let input = [0x03, 0x01, 0x6A, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F, 0x45, 0x01];
    assert!(matches!(
        decode(&input),
        Err(DecodeError::LengthOverflow { .. })
    ));
    // An integer longer than 32 bits.
    let input = doc(&[0x45, 0xC3, 0x90, 0x80, 0x80, 0x80, 0x00]);
    assert!(matches!(
        decode(&input),
        Err(DecodeError::LengthOverflow { .. })
    ));
    let input = doc(&[0x45, 0xC3, 0x81, 0x81, 0x81, 0x81, 0x81, 0x01]);
    assert!(matches!(
        decode(&input),
        Err(DecodeError::LengthOverflow { .. })
    ));
}

#[test]
fn ten_thousand_levels_of_nesting() {
    let mut body = vec![0x45; 10_000];
    body.extend(std::iter::repeat_n(0x01, 10_000));
    assert!(matches!(
        decode(&doc(&body)),
        Err(DecodeError::TooDeep { max: MAX_DEPTH, .. })
    ));
    // MAX_DEPTH open elements around an empty one are fine.
    let mut body = vec![0x45; MAX_DEPTH];
    body.push(0x05);
    body.extend(std::iter::repeat_n(0x01, MAX_DEPTH));
    let input = doc(&body);
    let root = decode(&input).expect("MAX_DEPTH levels decode");
    assert_eq!(encode_to_vec(&root), doc(&body));
    // The XML form of a deep tree does not recurse either.
    let xml = element_to_xml(&root);
    assert_eq!(xml_to_wbxml(&xml).expect("xml"), doc(&body));
}

#[test]
fn unsupported_constructs() {
    let cases: &[(&[u8], &str)] = &[
        (&[0x45, 0x02, 0x41, 0x01], "ENTITY"),
        (&[0x45, 0x43, 0x01], "processing instruction"),
        (&[0x45, 0x40, 0x01], "extension token"),
        (&[0x45, 0x80, 0x01], "extension token"),
        (&[0x45, 0xC0, 0x01], "extension token"),
        (&[0x45, 0x04, 0x00, 0x01], "literal tag"),
        (&[0x45, 0x44, 0x00, 0x01], "literal tag"),
        (&[0x85, 0x01, 0x01], "attributes"),
        (&[0xC5, 0x01, 0x01], "attributes"),
        (&[0x03, b'a', 0x00], "text outside the root element"),
        (&[0xC3, 0x00], "opaque data outside the root element"),
        (&[0x01], "END outside any element"),
    ];
    for (body, what) in cases {
        match decode(&doc(body)) {
            Err(DecodeError::Unsupported { what: w, .. }) => assert_eq!(w, *what, "{body:02x?}"),
            other => panic!("{body:02x?}: {other:?}"),
        }
    }
}

#[test]
fn header_errors() {
    assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
    assert!(matches!(
        decode(&[0x04, 0x01, 0x6A, 0x00, 0x05]),
        Err(DecodeError::BadHeader { .. })
    ));
    assert!(matches!(
        decode(&[0x03, 0x01, 0x04, 0x00, 0x05]),
        Err(DecodeError::BadHeader { .. })
    ));
    assert_eq!(decode(&HEADER), Err(DecodeError::Truncated { offset: 4 }));
}

#[test]
fn utf8_and_trailing_data() {
    assert!(matches!(
        decode(&doc(&[0x45, 0x03, 0xFF, 0xFE, 0x00, 0x01])),
        Err(DecodeError::Utf8 { offset: 6 })
    ));
    assert!(matches!(
        decode(&doc(&[0x05, 0x05])),
        Err(DecodeError::TrailingData {
            count: 1,
            offset: 5
        })
    ));
}

#[test]
fn string_table_and_split_strings_are_accepted() {
    // String table "ab\0cd\0", STR_T 3 then STR_I "e": one text node "cde".
    let input = [
        0x03, 0x01, 0x6A, 0x06, b'a', b'b', 0x00, b'c', b'd', 0x00, 0x4B, 0x83, 0x03, 0x03, b'e',
        0x00, 0x01,
    ];
    let root = decode(&input).expect("decode");
    assert_eq!(root.text(), Some("cde"));
    // Re-encoded as a single inline string with an empty string table.
    assert_eq!(
        encode_to_vec(&root),
        doc(&[0x4B, 0x03, b'c', b'd', b'e', 0x00, 0x01])
    );
}

#[test]
fn recorded_fuzz_failures_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/fuzz-failures");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{} missing: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "md") {
            continue;
        }
        n += 1;
        let bytes = std::fs::read(&path).expect("read");
        if let Ok(root) = decode(&bytes) {
            let again = encode_to_vec(&root);
            assert_eq!(decode(&again).as_ref(), Ok(&root), "{}", path.display());
            let xml = element_to_xml(&root);
            assert_eq!(
                xml_to_wbxml(&xml).as_ref(),
                Ok(&again),
                "{}",
                path.display()
            );
        }
    }
    assert!(n > 0, "no recorded inputs in {}", dir.display());
}
