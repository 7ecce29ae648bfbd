//! Search of the mailbox against the real Dovecot: FreeText matched by IMAP
//! SEARCH in subject and body, newest first, bounded by Range, with the
//! messages rendered like Sync renders them; a result fetched again by its
//! LongId (ItemOperations).
//!
//! Reserved Dovecot users: load0038, load1331.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use opush_protocol::commands::folder_sync::FolderSyncRequest;
use opush_protocol::commands::item_operations::{
    FetchTarget, ItemOperationsRequest, Operation, OperationResult,
};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::search::{SearchOptions, SearchRequest};
use opush_protocol::commands::SyncKey;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::{airsync, email, search as se};
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
    // A sender's name and address are found too (From only).
    let sender = unique("sender").replace('-', "");
    let msg = format!(
        "From: Zed {sender} <{sender}@example.test>\r\nTo: b@load.test\r\nSubject: from the sender\r\n\r\nplain\r\n"
    );
    let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");

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
    let by_sender = search(&query(&sender, "0-9"), version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(by_sender.total, Some(1), "{by_sender:?}");
    match by_sender.results[0].properties.as_ref().unwrap() {
        ApplicationData::Email(e) => assert_eq!(e.subject.as_deref(), Some("from the sender")),
        other => panic!("{other:?}"),
    }

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

/// A query naming folders (several, or one with `DeepTraversal` for its
/// subfolders, or none with `DeepTraversal` for every mail folder) and
/// dates (`GreaterThan` / `LessThan` of `DateReceived`): the matches of
/// those folders only, newest (by INTERNALDATE) first across them.
#[tokio::test]
async fn folders_subfolders_and_dates() {
    const USER2: &str = "load1331@load.test";
    const DEVICE2: &str = "DEVSEARCH2";
    let mut raw = RawImap::login(USER2);
    let word = unique("needle").replace('-', "");
    // Fresh folders each run (the word is new too, so older runs' messages
    // do not match).
    let top = format!("S{}", unique("top").replace('-', ""));
    let child = format!("{top}/Child");
    let other = format!("O{}", unique("other").replace('-', ""));
    for f in [&top, &child, &other] {
        let (_, ok) = raw.cmd(&format!("CREATE \"{f}\""));
        assert!(ok.starts_with("OK"), "create {f}: {ok}");
        let (_, ok) = raw.cmd(&format!("SUBSCRIBE \"{f}\""));
        assert!(ok.starts_with("OK"), "subscribe {f}: {ok}");
    }
    let put = |raw: &mut RawImap, folder: &str, date: &str, subject: &str| {
        let msg = format!(
            "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\r\nabout {word}\r\n"
        );
        let (_, ok) = raw.cmd(&format!(
            "APPEND \"{folder}\" \"{date}\" {{{}+}}\r\n{msg}",
            msg.len()
        ));
        assert!(ok.starts_with("OK"), "append: {ok}");
    };
    put(
        &mut raw,
        "INBOX",
        "01-Jan-2020 10:00:00 +0000",
        "in inbox 2020",
    );
    put(&mut raw, &top, "01-Jun-2021 10:00:00 +0000", "in top 2021");
    put(
        &mut raw,
        &child,
        "01-Mar-2022 10:00:00 +0000",
        "in child 2022",
    );
    put(
        &mut raw,
        &other,
        "01-Jan-2023 10:00:00 +0000",
        "in other 2023",
    );

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let who = caller(USER2, DEVICE2);
    let folders = first_folder_sync(&eas, &who).await;
    let inbox = folders.of_type(2);
    let (top_id, child_id, other_id) = (
        folders.named(&top),
        folders.named("Child"),
        folders.named(&other),
    );

    let ask = |ids: &[&str], deep: bool, dates: &[(bool, &str)], class: Option<&str>| {
        let mut and = Element::new(se::AND);
        if let Some(c) = class {
            and = and.with(Element::with_text(airsync::CLASS, c.to_owned()));
        }
        for id in ids {
            and = and.with(Element::with_text(airsync::COLLECTION_ID, (*id).to_owned()));
        }
        and = and.with(Element::with_text(se::FREE_TEXT, word.clone()));
        for (greater, value) in dates {
            let mut cmp = Element::new(if *greater {
                se::GREATER_THAN
            } else {
                se::LESS_THAN
            })
            .with(Element::new(email::DATE_RECEIVED));
            if !value.is_empty() {
                cmp = cmp.with(Element::with_text(se::VALUE, (*value).to_owned()));
            }
            and = and.with(cmp);
        }
        SearchRequest {
            name: "Mailbox".to_owned(),
            query: Some(Element::new(se::QUERY).with(and)),
            options: Some(SearchOptions {
                range: Some("0-9".to_owned()),
                deep_traversal: deep,
                ..SearchOptions::default()
            }),
        }
    };
    let run = |req: SearchRequest| {
        let eas = &eas;
        let who = &who;
        async move {
            let res = search(&req, ProtocolVersion::V14_1, who, eas)
                .await
                .unwrap();
            let found: Vec<(String, String)> = res
                .results
                .iter()
                .map(|r| match r.properties.as_ref().unwrap() {
                    ApplicationData::Email(e) => {
                        (r.collection_id.clone().unwrap(), e.subject.clone().unwrap())
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            (res.store_status.map(|s| s.code()), res.total, found)
        }
    };
    let pair = |id: &str, s: &str| (id.to_owned(), s.to_owned());

    // One folder: its own match only.
    assert_eq!(
        run(ask(&[&top_id], false, &[], None)).await,
        (Some(1), Some(1), vec![pair(&top_id, "in top 2021")])
    );
    // With DeepTraversal: and its subfolder's, newest first.
    assert_eq!(
        run(ask(&[&top_id], true, &[], None)).await,
        (
            Some(1),
            Some(2),
            vec![
                pair(&child_id, "in child 2022"),
                pair(&top_id, "in top 2021")
            ]
        )
    );
    // Two folders named.
    assert_eq!(
        run(ask(&[&inbox, &other_id], false, &[], Some("Email"))).await,
        (
            Some(1),
            Some(2),
            vec![
                pair(&other_id, "in other 2023"),
                pair(&inbox, "in inbox 2020")
            ]
        )
    );
    // None named, DeepTraversal: every mail folder.
    let (_, total, all) = run(ask(&[], true, &[], None)).await;
    assert_eq!(total, Some(4));
    assert_eq!(
        all.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        [
            "in other 2023",
            "in child 2022",
            "in top 2021",
            "in inbox 2020"
        ]
    );
    // None named, no DeepTraversal: INBOX.
    assert_eq!(
        run(ask(&[], false, &[], None)).await,
        (Some(1), Some(1), vec![pair(&inbox, "in inbox 2020")])
    );
    // Dates: after mid-2021's first day, before the end of 2022.
    assert_eq!(
        run(ask(
            &[],
            true,
            &[
                (true, "2021-06-01T09:59:59.000Z"),
                (false, "2022-12-31T00:00:00.000Z")
            ],
            None
        ))
        .await,
        (
            Some(1),
            Some(2),
            vec![
                pair(&child_id, "in child 2022"),
                pair(&top_id, "in top 2021")
            ]
        )
    );
    // Exclusive: a message received at the very second is not after it.
    assert_eq!(
        run(ask(
            &[&top_id],
            false,
            &[(true, "2021-06-01T10:00:00.000Z")],
            None
        ))
        .await
        .1,
        Some(0)
    );
    // A comparison without its Value is a protocol error (2); another
    // Class finds nothing; an unknown CollectionId asks for FolderSync.
    assert_eq!(
        run(ask(&[&top_id], false, &[(true, "")], None)).await.0,
        Some(2)
    );
    assert_eq!(
        run(ask(&[&top_id], false, &[], Some("Contacts"))).await,
        (Some(1), Some(0), vec![])
    );
    assert_eq!(run(ask(&["9999"], false, &[], None)).await.0, Some(11));

    // Pages: a later page comes from the matches the first page found; a
    // first page (or RebuildResults) searches again.
    put(&mut raw, &top, "01-Jul-2021 10:00:00 +0000", "in top later");
    let paged = |range: &str, rebuild: bool| {
        let mut req = ask(&[&top_id], false, &[], None);
        let o = req.options.as_mut().unwrap();
        o.range = Some(range.to_owned());
        o.rebuild_results = rebuild;
        req
    };
    let (_, total, page) = run(paged("1-9", false)).await;
    assert_eq!(total, Some(1), "the first page's matches: {page:?}");
    assert!(page.is_empty(), "{page:?}");
    let (_, total, page) = run(paged("1-9", true)).await;
    assert_eq!(
        (total, page),
        (Some(2), vec![pair(&top_id, "in top 2021")]),
        "RebuildResults searches again"
    );
    let (_, total, page) = run(paged("0-0", false)).await;
    assert_eq!(
        (total, page),
        (Some(2), vec![pair(&top_id, "in top later")]),
        "a first page searches again"
    );
}

#[tokio::test]
async fn a_conversation_across_folders() {
    const USER3: &str = "load1297@load.test";
    const DEVICE3: &str = "DEVSEARCH3";
    let mut raw = RawImap::login(USER3);
    let t = unique("conv").replace('-', "");
    let folder = format!("C{t}");
    let (_, ok) = raw.cmd(&format!("CREATE \"{folder}\""));
    assert!(ok.starts_with("OK"), "create: {ok}");
    let (_, ok) = raw.cmd(&format!("SUBSCRIBE \"{folder}\""));
    assert!(ok.starts_with("OK"), "subscribe: {ok}");
    let put = |raw: &mut RawImap,
               folder: &str,
               date: &str,
               headers: &str,
               subject: &str,
               body: &str| {
        let msg = format!(
            "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n{headers}\r\n{body} {t}\r\n"
        );
        let (_, ok) = raw.cmd(&format!(
            "APPEND \"{folder}\" \"{date}\" {{{}+}}\r\n{msg}",
            msg.len()
        ));
        assert!(ok.starts_with("OK"), "append: {ok}");
    };
    let root = format!("<root-{t}@example.test>");
    let r1 = format!("<r1-{t}@example.test>");
    put(
        &mut raw,
        "INBOX",
        "01-Jan-2024 10:00:00 +0000",
        &format!("Message-ID: {root}\r\n"),
        "root",
        "alpha",
    );
    put(
        &mut raw,
        "INBOX",
        "02-Jan-2024 10:00:00 +0000",
        &format!("Message-ID: {r1}\r\nIn-Reply-To: {root}\r\nReferences: {root}\r\n"),
        "Re: root",
        "beta",
    );
    put(
        &mut raw,
        &folder,
        "03-Jan-2024 10:00:00 +0000",
        &format!(
            "Message-ID: <r2-{t}@example.test>\r\nIn-Reply-To: {r1}\r\nReferences: {root} {r1}\r\n"
        ),
        "Re: Re: root",
        "alpha",
    );
    // Not of the conversation: its own thread, and one whose root is
    // another message though it names this one's root later.
    put(
        &mut raw,
        "INBOX",
        "04-Jan-2024 10:00:00 +0000",
        &format!("Message-ID: <x-{t}@example.test>\r\n"),
        "other",
        "alpha",
    );
    put(
        &mut raw,
        &folder,
        "05-Jan-2024 10:00:00 +0000",
        &format!("Message-ID: <y-{t}@example.test>\r\nReferences: <z-{t}@example.test> {root}\r\n"),
        "Re: elsewhere",
        "alpha",
    );

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let who = caller(USER3, DEVICE3);
    let inbox = first_folder_sync(&eas, &who).await.of_type(2);
    let version = ProtocolVersion::V14_1;
    let subjects = |r: &opush_protocol::commands::search::SearchResponse| -> Vec<String> {
        r.results
            .iter()
            .map(|r| match r.properties.as_ref().unwrap() {
                ApplicationData::Email(e) => e.subject.clone().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    // The device has the reply (here from a search of its text) and its
    // ConversationId.
    let beta = search(&query(&format!("beta {t}"), "0-9"), version, &who, &eas)
        .await
        .unwrap();
    assert_eq!(subjects(&beta), vec!["Re: root".to_owned()]);
    let ApplicationData::Email(reply) = beta.results[0].properties.as_ref().unwrap() else {
        panic!("not an email");
    };
    let id = reply
        .conversation_id
        .clone()
        .expect("a ConversationId at 14.1");
    assert_eq!(id.len(), 16);

    let ask = |children: Vec<Element<'static>>, version: ProtocolVersion| {
        let mut and = Element::new(se::AND);
        for c in children {
            and = and.with(c);
        }
        let req = SearchRequest {
            name: "Mailbox".to_owned(),
            query: Some(Element::new(se::QUERY).with(and)),
            options: Some(SearchOptions {
                range: Some("0-9".to_owned()),
                ..SearchOptions::default()
            }),
        };
        let (eas, who) = (&eas, &who);
        async move { search(&req, version, who, eas).await.unwrap() }
    };
    let conv = || Element::with_opaque(se::CONVERSATION_ID, id.clone());

    // Every mail folder: the three messages, newest first.
    let all = ask(vec![conv()], version).await;
    assert_eq!(all.store_status.map(|s| s.code()), Some(1));
    assert_eq!(all.total, Some(3));
    assert_eq!(subjects(&all), vec!["Re: Re: root", "Re: root", "root"]);
    let folders: Vec<&str> = all
        .results
        .iter()
        .map(|r| r.collection_id.as_deref().unwrap())
        .collect();
    assert_ne!(folders[0], inbox);
    assert_eq!(&folders[1..], [inbox.as_str(), inbox.as_str()]);
    // Each result carries the same ConversationId.
    for r in &all.results {
        let ApplicationData::Email(e) = r.properties.as_ref().unwrap() else {
            panic!("not an email");
        };
        assert_eq!(e.conversation_id.as_deref(), Some(id.as_slice()));
    }
    // Only INBOX; with FreeText too.
    let in_inbox = ask(
        vec![
            Element::with_text(airsync::COLLECTION_ID, inbox.clone()),
            conv(),
        ],
        version,
    )
    .await;
    assert_eq!(subjects(&in_inbox), vec!["Re: root", "root"]);
    let alpha = ask(
        vec![
            Element::with_text(se::FREE_TEXT, format!("alpha {t}")),
            conv(),
        ],
        version,
    )
    .await;
    assert_eq!(subjects(&alpha), vec!["Re: Re: root", "root"]);
    assert_eq!(alpha.total, Some(2));
    // A ConversationId this server never handed out finds nothing.
    let none = ask(
        vec![Element::with_opaque(se::CONVERSATION_ID, vec![1u8, 2, 3])],
        version,
    )
    .await;
    assert_eq!(none.store_status.map(|s| s.code()), Some(1));
    assert_eq!(none.total, Some(0));
    assert!(none.results.is_empty());
    // Outside And: too complex (8); before 14.0: a protocol error (2).
    let req = SearchRequest {
        name: "Mailbox".to_owned(),
        query: Some(Element::new(se::QUERY).with(Element::new(se::OR).with(conv()))),
        options: None,
    };
    let or = search(&req, version, &who, &eas).await.unwrap();
    assert_eq!(or.store_status.map(|s| s.code()), Some(8));
    let old = ask(vec![conv()], ProtocolVersion::V12_1).await;
    assert_eq!(old.store_status.map(|s| s.code()), Some(2));
}
