//! Search of the mailbox against the real Dovecot: FreeText matched by IMAP
//! SEARCH in subject and body, newest first, bounded by Range, with the
//! messages rendered like Sync renders them; a result fetched again by its
//! LongId (ItemOperations).
//!
//! Reserved Dovecot user: load0038.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, services};

use opush_protocol::commands::folder_sync::FolderSyncRequest;
use opush_protocol::commands::item_operations::{
    FetchTarget, ItemOperationsRequest, Operation, OperationResult,
};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::search::{SearchOptions, SearchRequest};
use opush_protocol::commands::SyncKey;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::search as se;
use opush_protocol::wbxml::Element;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::item_operations::item_operations;
use opush_server::commands::search::search;
use opush_tests::{unique, RawImap};

const USER: &str = "load0038@load.test";
const DEVICE: &str = "DEVSEARCH";

fn append(imap: &mut RawImap, subject: &str, body: &str) {
    let msg =
        format!("From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\r\n{body}\r\n");
    let (_, ok) = imap.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

fn query(text: &str, range: &str) -> SearchRequest {
    SearchRequest {
        name: "Mailbox".to_owned(),
        query: Some(
            Element::new(se::QUERY).with(
                Element::new(se::AND).with(Element::with_text(se::FREE_TEXT, text.to_owned())),
            ),
        ),
        options: Some(SearchOptions {
            range: Some(range.to_owned()),
            ..SearchOptions::default()
        }),
    }
}

#[tokio::test]
async fn free_text_matches_subject_and_body_newest_first() {
    let mut raw = RawImap::login(USER);
    raw.cmd("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    let word = unique("needle").replace('-', "");
    append(&mut raw, &format!("first {word}"), "nothing");
    append(&mut raw, "second", &format!("the body has {word} inside"));
    append(&mut raw, "third", "unrelated");
    append(&mut raw, &format!("fourth {word}"), "x");

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    folder_sync(
        &FolderSyncRequest {
            sync_key: SyncKey("0".to_owned()),
        },
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    let version = ProtocolVersion::V14_1;
    let all = search(&query(&word, "0-9"), version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(all.store_status.map(|s| s.code()), Some(1));
    assert_eq!(all.total, Some(3));
    let subjects: Vec<String> = all
        .results
        .iter()
        .map(|r| match r.properties.as_ref().unwrap() {
            ApplicationData::Email(e) => e.subject.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        subjects,
        vec![
            format!("fourth {word}"),
            "second".to_owned(),
            format!("first {word}")
        ]
    );
    let page = search(&query(&word, "1-1"), version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(page.results.len(), 1);
    assert_eq!(page.range.as_deref(), Some("1-1"));
    let none = search(
        &query("zzzznotthere", "0-9"),
        version,
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(none.total, Some(0));
    assert!(none.results.is_empty());

    // [MS-ASCMD] 2.2.1.10: ItemOperations Fetch of a Search result by LongId.
    let long_id = all.results[1].long_id.clone().unwrap();
    let fetch = |long_id: String| ItemOperationsRequest {
        operations: vec![Operation::Fetch {
            store: "Mailbox".to_owned(),
            target: FetchTarget {
                long_id: Some(long_id),
                ..FetchTarget::default()
            },
            options: None,
        }],
    };
    let res = item_operations(
        &fetch(long_id.clone()),
        version,
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    match &res.results[0] {
        OperationResult::Fetch {
            status,
            properties: Some(ApplicationData::Email(e)),
            ..
        } => {
            assert_eq!(status.code(), 1);
            assert_eq!(e.subject.as_deref(), Some("second"));
        }
        other => panic!("{other:?}"),
    }
    // A LongId under another UIDVALIDITY, or of an unknown message: not found.
    let (coll, item) = long_id.split_once(':').unwrap();
    let (validity, uid) = item.split_once('/').unwrap();
    let stale = format!("{coll}:{}/{uid}", validity.parse::<u32>().unwrap() + 1);
    let gone = format!("{coll}:{validity}/999999");
    for bad in [stale, gone, "nonsense".to_owned()] {
        let res = item_operations(&fetch(bad.clone()), version, &caller(USER, DEVICE), &eas)
            .await
            .unwrap();
        assert!(
            matches!(&res.results[0], OperationResult::Fetch { status, .. } if status.code() == 6),
            "{bad}: {res:?}"
        );
    }
}
