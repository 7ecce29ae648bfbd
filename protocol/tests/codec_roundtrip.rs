//! Property tests: generated trees (random pages, tokens, text and opaque
//! data) survive encode → decode unchanged, and EAS-shaped trees survive the
//! XML form too. Fixed seed by default (proptest's file persistence off), so
//! a daily run is reproducible; PROPTEST_CASES raises the count.

use std::borrow::Cow;

use opush_protocol::wbxml::{decode, encode, encode_to_vec, Element, Node, Tag, CODE_PAGES};
use opush_protocol::xml::{element_to_xml, wbxml_to_xml, xml_to_element};
use proptest::prelude::*;

fn any_tag() -> impl Strategy<Value = Tag> {
    (0..CODE_PAGES.len()).prop_flat_map(|p| {
        let page = &CODE_PAGES[p];
        (0..page.entries.len()).prop_map(move |i| Tag::new(page.id, page.entries[i].0))
    })
}

fn any_text() -> impl Strategy<Value = String> {
    // No NUL: WBXML inline strings cannot carry it.
    prop_oneof![
        "[a-zA-Z0-9 ]{0,12}",
        "\\PC{0,40}".prop_map(|s: String| s.replace('\0', "")),
        "[ \\r\\n\\t<>&'\"]{1,8}",
    ]
}

/// Any tree the decoder can produce: no two adjacent text nodes (the
/// decoder merges them).
fn any_tree() -> impl Strategy<Value = Element<'static>> {
    let leaf = any_tag().prop_map(Element::new);
    leaf.prop_recursive(6, 200, 6, |inner| {
        (
            any_tag(),
            prop::collection::vec(
                prop_oneof![
                    3 => inner.prop_map(Node::Element),
                    1 => any_text().prop_map(|t| Node::Text(Cow::Owned(t))),
                    1 => prop::collection::vec(any::<u8>(), 0..20).prop_map(|b| Node::Opaque(Cow::Owned(b))),
                ],
                0..6,
            ),
        )
            .prop_map(|(tag, children)| {
                let mut el = Element::new(tag);
                for child in children {
                    if let (Node::Text(t), Some(Node::Text(prev))) = (&child, el.children.last_mut()) {
                        prev.to_mut().push_str(t);
                        continue;
                    }
                    el.children.push(child);
                }
                el
            })
    })
}

/// Trees shaped like EAS documents: an element holds either elements, or
/// one text node, or one opaque node.
fn eas_tree() -> impl Strategy<Value = Element<'static>> {
    let leaf = prop_oneof![
        any_tag().prop_map(Element::new),
        (any_tag(), any_text()).prop_map(|(t, s)| Element::with_text(t, s)),
        (any_tag(), prop::collection::vec(any::<u8>(), 0..30))
            .prop_map(|(t, b)| Element::with_opaque(t, b)),
    ];
    leaf.prop_recursive(6, 200, 6, |inner| {
        (any_tag(), prop::collection::vec(inner, 1..6)).prop_map(|(tag, children)| {
            let mut el = Element::new(tag);
            for c in children {
                el.push(c);
            }
            el
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // An explicit count overrides PROPTEST_CASES: read it here.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn encode_then_decode_is_identity(tree in any_tree()) {
        let bytes = encode_to_vec(&tree);
        let back = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &tree);
        // Re-encoding the decoded tree gives the same bytes, into a reused buffer.
        let mut buf = vec![0xAA; 3];
        encode(&back, &mut buf);
        prop_assert_eq!(&buf[3..], &bytes[..]);
    }

    #[test]
    fn wbxml_to_xml_writes_what_the_tree_renders(tree in any_tree()) {
        // `wbxml_to_xml` renders from the decoder's steps, not from a tree.
        let xml = wbxml_to_xml(&encode_to_vec(&tree)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(xml, element_to_xml(&tree));
    }

    #[test]
    fn xml_form_of_any_tree_round_trips(tree in any_tree()) {
        let xml = element_to_xml(&tree);
        let back = xml_to_element(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(encode_to_vec(&back), encode_to_vec(&tree), "{}", xml);
    }

    #[test]
    fn xml_form_round_trips(tree in eas_tree()) {
        let xml = element_to_xml(&tree);
        let back = xml_to_element(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(encode_to_vec(&back), encode_to_vec(&tree), "{}", xml);
    }
}

#[test]
fn page_switches_only_when_the_page_changes() {
    use opush_protocol::wbxml::tags::{airsync, email};
    let tree = Element::new(airsync::SYNC)
        .with(Element::with_text(email::SUBJECT, "a"))
        .with(Element::with_text(email::TO, "b"))
        .with(Element::new(airsync::STATUS));
    let bytes = encode_to_vec(&tree);
    assert_eq!(
        bytes,
        [
            0x03, 0x01, 0x6A, 0x00, // header
            0x45, // <Sync> with content, page 0 needs no switch
            0x00, 0x02, 0x54, 0x03, b'a', 0x00, 0x01, // SWITCH_PAGE 2, <Subject>a</Subject>
            0x56, 0x03, b'b', 0x00, 0x01, // <To>b</To>, same page
            0x00, 0x00, 0x0E, // back to page 0, <Status/>
            0x01, // </Sync>
        ]
    );
}

#[test]
fn opaque_lengths_use_multibyte_integers() {
    use opush_protocol::wbxml::tags::composemail;
    let tree = Element::with_opaque(composemail::MIME, vec![b'x'; 200]);
    let bytes = encode_to_vec(&tree);
    assert_eq!(&bytes[4..10], &[0x00, 21, 0x50, 0xC3, 0x81, 0x48]);
    assert_eq!(bytes.len(), 10 + 200 + 1);
    assert_eq!(
        decode(&bytes).expect("decode").opaque().map(<[u8]>::len),
        Some(200)
    );
}
