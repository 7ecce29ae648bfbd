//! Fuzz target for the WBXML decoder: any input either fails with a typed
//! error or decodes to a tree that encodes and decodes back to itself, and
//! whose XML form converts back to the same WBXML; the streaming converter
//! (`wbxml_to_xml`, no tree) agrees with the tree's rendering on every input,
//! accepted or refused. Must never panic or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_protocol::xml::{element_to_xml, wbxml_to_xml, xml_to_wbxml};

fuzz_target!(|data: &[u8]| {
    let streamed = wbxml_to_xml(data);
    if let Ok(root) = decode(data) {
        let xml = element_to_xml(&root);
        assert_eq!(
            streamed.as_deref().ok(),
            Some(xml.as_str()),
            "the streaming converter and the tree disagree"
        );
        let bytes = encode_to_vec(&root);
        let again = decode(&bytes).expect("re-encoded document decodes");
        assert_eq!(again, root, "encode -> decode changes the tree");
        let from_xml = xml_to_wbxml(&xml).expect("XML form parses");
        assert_eq!(from_xml, bytes, "XML round trip changes the bytes");
    } else {
        assert!(streamed.is_err(), "the streaming converter accepts what decode refuses");
    }
});
