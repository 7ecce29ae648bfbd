//! Hostile input: arbitrary element trees (any EAS tag, any nesting, odd
//! text) given to every command's `from_element`, at every protocol version,
//! must give a value or a typed error — never a panic. Whatever decodes must
//! also re-encode and decode again to the same value. `PROPTEST_CASES`
//! raises the case count.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

mod find_corpus;

use std::fmt::Debug;

use opush_protocol::commands::{
    find, folder_create, folder_delete, folder_sync, folder_update, get_item_estimate,
    item_operations, meeting_response, move_items, ping, provision, resolve_recipients, search,
    send_mail, settings, smart_forward, smart_reply, sync, validate_cert, EasDocument,
};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{Element, Node, Tag, CODE_PAGES};
use proptest::prelude::*;

/// `PROPTEST_CASES` when set (an explicit count would override it), else `ci`.
fn cases(ci: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

fn tag() -> impl Strategy<Value = Tag> {
    // Picked among the defined tags (a filter on random page/token pairs
    // runs out of local rejects at high case counts).
    (0..CODE_PAGES.len()).prop_flat_map(|p| {
        let page = &CODE_PAGES[p];
        (0..page.entries.len()).prop_map(move |i| Tag::new(page.id, page.entries[i].0))
    })
}

fn leaf() -> impl Strategy<Value = Element<'static>> {
    (
        tag(),
        prop_oneof![
            Just(None),
            "[0-9]{1,3}".prop_map(Some),
            "[ -~]{0,8}".prop_map(Some),
            Just(Some("99999999999999999999".to_owned())),
        ],
    )
        .prop_map(|(t, text)| match text {
            None => Element::new(t),
            Some(s) => Element::with_text(t, s),
        })
}

fn tree() -> impl Strategy<Value = Element<'static>> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        (tag(), proptest::collection::vec(inner, 0..6)).prop_map(|(t, kids)| Element {
            tag: t,
            children: kids.into_iter().map(Node::Element).collect(),
        })
    })
}

/// A tree whose root is `root` and whose children are arbitrary.
fn rooted(root: Tag) -> impl Strategy<Value = Element<'static>> {
    proptest::collection::vec(tree(), 0..6).prop_map(move |kids| Element {
        tag: root,
        children: kids.into_iter().map(Node::Element).collect(),
    })
}

fn try_all<T: EasDocument + PartialEq + Debug>(el: &Element<'_>) -> Result<(), TestCaseError> {
    for v in ProtocolVersion::ALL {
        if let Ok(value) = T::from_element(el, v) {
            let again = T::decode(&value.encode(v), v)
                .map_err(|e| TestCaseError::fail(format!("re-decode at {v}: {e}")))?;
            prop_assert_eq!(again, value);
        }
    }
    Ok(())
}

macro_rules! hostile {
    ($name:ident, $($ty:ty),+) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases(128)))]
            #[test]
            fn $name(el in prop_oneof![tree(), $(rooted(<$ty>::ROOT)),+]) {
                $(try_all::<$ty>(&el)?;)+
            }
        }
    };
}

hostile!(sync_never_panics, sync::SyncRequest, sync::SyncResponse);
hostile!(
    folders_never_panic,
    folder_sync::FolderSyncRequest,
    folder_sync::FolderSyncResponse,
    folder_create::FolderCreateRequest,
    folder_create::FolderCreateResponse,
    folder_delete::FolderDeleteRequest,
    folder_delete::FolderDeleteResponse,
    folder_update::FolderUpdateRequest,
    folder_update::FolderUpdateResponse
);
hostile!(
    ping_provision_settings_never_panic,
    ping::PingRequest,
    ping::PingResponse,
    provision::ProvisionRequest,
    provision::ProvisionResponse,
    settings::SettingsRequest,
    settings::SettingsResponse
);
hostile!(
    items_never_panic,
    item_operations::ItemOperationsRequest,
    item_operations::ItemOperationsResponse,
    get_item_estimate::GetItemEstimateRequest,
    get_item_estimate::GetItemEstimateResponse,
    move_items::MoveItemsRequest,
    move_items::MoveItemsResponse,
    meeting_response::MeetingResponseRequest,
    meeting_response::MeetingResponseResponse
);
hostile!(
    mail_search_never_panic,
    send_mail::SendMailRequest,
    send_mail::SendMailResponse,
    smart_reply::SmartReplyRequest,
    smart_reply::SmartReplyResponse,
    smart_forward::SmartForwardRequest,
    smart_forward::SmartForwardResponse,
    search::SearchRequest,
    search::SearchResponse,
    resolve_recipients::ResolveRecipientsRequest,
    resolve_recipients::ResolveRecipientsResponse,
    validate_cert::ValidateCertRequest,
    validate_cert::ValidateCertResponse,
    find::FindRequest,
    find::FindResponse
);

/// Real corpus bodies, decoded once.
fn corpus() -> &'static [(String, Element<'static>)] {
    static CORPUS: std::sync::OnceLock<Vec<(String, Element<'static>)>> =
        std::sync::OnceLock::new();
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
                .filter(|p| p.extension().is_some_and(|e| e == "wbxml"))
                .collect();
            files.sort();
            // A few per session keep the test fast and varied.
            for f in files.into_iter().step_by(7) {
                let bytes = std::fs::read(&f).unwrap();
                let root = opush_protocol::wbxml::decode(&bytes).unwrap().into_owned();
                let kind = if f.to_string_lossy().ends_with("request.wbxml") {
                    "request"
                } else {
                    "response"
                };
                out.push((kind.to_owned(), root));
            }
        }
        assert!(out.len() > 50, "corpus too small: {}", out.len());
        out
    })
}

/// Applies one mutation to the `n`-th element (pre-order) of `el`.
fn mutate(el: &mut Element<'static>, n: &mut usize, op: u8, text: &str) -> bool {
    for i in 0..el.children.len() {
        if let Node::Element(child) = &mut el.children[i] {
            if *n == 0 {
                match op % 4 {
                    0 => {
                        el.children.remove(i);
                    }
                    1 => {
                        let copy = el.children[i].clone();
                        el.children.insert(i, copy);
                    }
                    2 => child.children = vec![Node::Text(text.to_owned().into())],
                    _ => child.children.clear(),
                }
                return true;
            }
            *n -= 1;
            if mutate(child, n, op, text) {
                return true;
            }
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]
    #[test]
    fn mutated_corpus_bodies_never_panic(
        idx in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec((0usize..400, any::<u8>(), "[ -~]{0,6}|[0-9]{1,12}"), 1..4),
    ) {
        let (kind, original) = idx.get(corpus());
        let mut el = original.clone();
        for (at, op, text) in &mutations {
            let mut n = *at;
            mutate(&mut el, &mut n, *op, text);
        }
        match (original.tag.name(), kind.as_str()) {
            (Some("Sync"), "request") => try_all::<sync::SyncRequest>(&el)?,
            (Some("Sync"), _) => try_all::<sync::SyncResponse>(&el)?,
            (Some("FolderSync"), "request") => try_all::<folder_sync::FolderSyncRequest>(&el)?,
            (Some("FolderSync"), _) => try_all::<folder_sync::FolderSyncResponse>(&el)?,
            (Some("Ping"), "request") => try_all::<ping::PingRequest>(&el)?,
            (Some("Ping"), _) => try_all::<ping::PingResponse>(&el)?,
            (Some("Provision"), "request") => try_all::<provision::ProvisionRequest>(&el)?,
            (Some("Provision"), _) => try_all::<provision::ProvisionResponse>(&el)?,
            (Some("Settings"), "request") => try_all::<settings::SettingsRequest>(&el)?,
            (Some("Settings"), _) => try_all::<settings::SettingsResponse>(&el)?,
            (other, _) => prop_assert!(false, "unexpected root {:?}", other),
        }
    }
}
