//! Find ([MS-ASCMD] 2.2.1.2, EAS 16.1) over HTTP (opush serve in-process,
//! embedded store) against the stack's Dovecot: FreeText matched in the
//! subject, in From, in the body, in non-ASCII text; newest first; Range
//! paging with Total; no match; the properties of a result checked against
//! the message put in IMAP; its ServerId fetched by ItemOperations, and the
//! device's own ServerId once it synced the message; DeepTraversal over a
//! folder tree and the search of every folder; the statuses of bad
//! requests, of a Find before 16.1 and of IMAP down; the requests recorded
//! and replayed by `opush replay`; OPTIONS advertising Find.
//!
//! Reserved Dovecot users: load1101 (matches), load1102 (folders),
//! load1103 (statuses); load1104 on a private Dovecot (port 11690).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::path::Path;

use base64::Engine as _;
use opush_protocol::commands::find::{FindProperties, FindResponse, FindResult};
use opush_protocol::version::ProtocolVersion;
use opush_server::config::Config;
use opush_storage::{StorageConfig, Store};
use opush_tests::eas::{find_all, find_text, EasClient};
use opush_tests::{
    demo_password, repo_root, require, unique, PrivateDovecot, RawImap, DOVECOT_IMAP,
};

mod serve_support;

const FOLDER_SYNC_0: &str =
    r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#;

fn config(store: &Path, imap_port: u16) -> Config {
    let port = serve_support::free_port();
    let admin_port = serve_support::free_port();
    Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = {imap_port}\n\
         [policy]\nrequire_provisioning = false\n",
        store.display()
    ))
    .unwrap()
}

/// Empties the user's INBOX and deletes the folders named `prefix*`.
fn reset(raw: &mut RawImap, prefix: &str) {
    raw.cmd("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    raw.cmd("UNSELECT");
    let (lines, _) = raw.cmd(&format!("LIST \"\" \"{prefix}*\""));
    let mut names: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            l.trim_end()
                .rsplit_once(' ')
                .map(|(_, n)| n.trim_matches('"').to_owned())
        })
        .filter(|n| n.starts_with(prefix))
        .collect();
    // Children first.
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        raw.cmd(&format!("UNSUBSCRIBE \"{n}\""));
        raw.cmd(&format!("DELETE \"{n}\""));
    }
}

/// APPENDs `msg` to `folder` with `flags` and INTERNALDATE `day`-Jan-2026 10:00 UTC.
fn append(raw: &mut RawImap, folder: &str, flags: &str, day: u32, msg: &str) {
    let (_, ok) = raw.cmd(&format!(
        "APPEND \"{folder}\" ({flags}) \"{day:02}-Jan-2026 10:00:00 +0000\" {{{}+}}\r\n{msg}",
        msg.len()
    ));
    assert!(ok.contains("OK"), "append: {ok}");
}

fn plain(from: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: \"Bob B\" <bob@load.test>\r\n{extra}Subject: {subject}\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
}

fn find_xml(text: &str, query_extra: &str, options: &str) -> String {
    format!(
        "<Find xmlns=\"Find:\" xmlns:airsync=\"AirSync:\"><SearchId>{}</SearchId><ExecuteSearch>\
         <MailBoxSearchCriterion><Query><airsync:Class>Email</airsync:Class>{query_extra}\
         <FreeText>{text}</FreeText></Query><Options>{options}</Options>\
         </MailBoxSearchCriterion></ExecuteSearch></Find>",
        unique("search")
    )
}

fn range(r: &str) -> String {
    format!("<Range>{r}</Range>")
}

async fn find(c: &mut EasClient, xml: &str) -> FindResponse {
    let res = c.post_xml("Find", xml).await;
    assert_eq!(res.status, 200, "{xml}");
    FindResponse::from_element(&res.element(), ProtocolVersion::V16_1)
        .unwrap_or_else(|e| panic!("{e}: {}", res.xml()))
}

/// The global and the store status, Total, Range and the results.
fn parts(r: &FindResponse) -> (u16, u16, Option<u32>, Option<&str>, &[FindResult]) {
    let store = r.response.as_ref().expect("a Response");
    assert_eq!(store.store, "Mailbox");
    (
        r.status.code(),
        store.status.code(),
        store.total,
        store.range.as_deref(),
        &store.results,
    )
}

fn props(r: &FindResult) -> &FindProperties {
    r.properties.as_ref().expect("Properties")
}

fn subjects(results: &[FindResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| props(r).subject.clone().unwrap_or_default())
        .collect()
}

async fn folder_sync(c: &mut EasClient) -> Vec<(String, String, String)> {
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    let el = res.element();
    assert_eq!(find_text(&el, "Status").as_deref(), Some("1"));
    find_all(&el, "Add")
        .into_iter()
        .map(|a| {
            (
                find_text(a, "ServerId").unwrap(),
                find_text(a, "DisplayName").unwrap(),
                find_text(a, "Type").unwrap(),
            )
        })
        .collect()
}

fn id_of(folders: &[(String, String, String)], name: &str) -> String {
    folders
        .iter()
        .find(|(_, n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {folders:?}"))
        .0
        .clone()
}

// [MS-ASCMD] 2.2.1.2 / 2.2.3.139.1: FreeText in subject, From and body,
// newest first, paged by Range with Total; the properties come from the
// message; a result's ServerId is fetched by ItemOperations, and is the
// device's own once it synced the message; the requests replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_matches_subject_from_body_and_non_ascii_text() {
    require(DOVECOT_IMAP);
    const USER: &str = "load1101@load.test";
    let mut raw = RawImap::login(USER);
    reset(&mut raw, "find-");
    let w = unique("needle").replace('-', "");
    let n = unique("u").replace('-', "");
    append(
        &mut raw,
        "INBOX",
        "",
        1,
        &plain(
            "Ann A <ann@example.test>",
            &format!("alpha {w}"),
            "",
            "nothing to see",
        ),
    );
    append(
        &mut raw,
        "INBOX",
        "",
        2,
        &plain(
            &format!("\"Zed {w}\" <zed@example.test>"),
            "beta",
            "Cc: \"Carl C\" <carl@example.test>, dan@example.test\r\nImportance: high\r\n",
            "plain  words\r\nhere and more",
        ),
    );
    let attachment = base64::engine::general_purpose::STANDARD.encode("attached text");
    append(
        &mut raw,
        "INBOX",
        "\\Seen \\Draft",
        3,
        &format!(
            "From: ann@example.test\r\nTo: bob@load.test\r\nSubject: gamma\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\nthe body has {w} inside\r\n--b1\r\n\
             Content-Type: text/plain; name=\"note.txt\"\r\nContent-Disposition: attachment; filename=\"note.txt\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b1--\r\n"
        ),
    );
    append(
        &mut raw,
        "INBOX",
        "",
        4,
        &plain("ann@example.test", "delta", "", "unrelated"),
    );
    let subject = base64::engine::general_purpose::STANDARD.encode(format!("Grüße {n}"));
    append(
        &mut raw,
        "INBOX",
        "",
        5,
        &plain(
            "ann@example.test",
            &format!("=?UTF-8?B?{subject}?="),
            "",
            &format!("Prüfung Straße{n} ok"),
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let served = serve_support::Served::start(config(&store, 1143), &store).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "FINDDEV1", "16.1");
    let mut requests = 0;
    let options = c.options().await;
    let advertised = options.header("MS-ASProtocolCommands").unwrap().to_owned();
    assert!(advertised.split(',').any(|x| x == "Find"), "{advertised}");
    assert!(
        !advertised.split(',').any(|x| x == "ResolveRecipients"),
        "{advertised}"
    );
    let folders = folder_sync(&mut c).await;
    requests += 1;
    let inbox = folders.iter().find(|(_, _, t)| t == "2").unwrap().0.clone();

    // Subject, From and body; newest first; everything in one page.
    let all = find(&mut c, &find_xml(&w, "", &range("0-9"))).await;
    requests += 1;
    let (status, store_status, total, got_range, results) = parts(&all);
    assert_eq!((status, store_status), (1, 1));
    assert_eq!(total, Some(3));
    assert_eq!(got_range, Some("0-2"));
    assert_eq!(subjects(results), ["gamma", "beta", &format!("alpha {w}")]);
    for r in results {
        assert_eq!(r.class.as_deref(), Some("Email"));
        assert_eq!(r.collection_id.as_deref(), Some(inbox.as_str()));
    }

    // The properties against the messages in IMAP.
    raw.cmd("SELECT INBOX");
    let beta_uid = raw.search_subject("INBOX", "beta")[0];
    let gamma_uid = raw.search_subject("INBOX", "gamma")[0];
    let (lines, _) = raw.cmd(&format!(
        "UID FETCH {beta_uid},{gamma_uid} (FLAGS INTERNALDATE)"
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("02-Jan-2026 10:00:00 +0000")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\\Draft") && l.contains("\\Seen")),
        "{lines:?}"
    );
    let beta = &results[1];
    assert!(
        beta.server_id
            .as_deref()
            .unwrap()
            .ends_with(&format!("/{beta_uid}")),
        "{beta:?}"
    );
    assert_eq!(
        props(beta),
        &FindProperties {
            subject: Some("beta".into()),
            date_received: Some("2026-01-02T10:00:00.000Z".into()),
            display_to: Some("Bob B".into()),
            display_cc: Some("Carl C; dan@example.test".into()),
            display_bcc: None,
            importance: Some(2),
            read: Some(false),
            is_draft: Some(false),
            preview: Some("plain words here and more".into()),
            has_attachments: Some(false),
            from: Some(format!("\"Zed {w}\" <zed@example.test>")),
            extra: Vec::new(),
        }
    );
    let gamma = props(&results[0]);
    assert_eq!(gamma.read, Some(true));
    assert_eq!(gamma.is_draft, Some(true));
    assert_eq!(gamma.has_attachments, Some(true));
    assert_eq!(
        gamma.date_received.as_deref(),
        Some("2026-01-03T10:00:00.000Z")
    );
    assert_eq!(
        gamma.preview.as_deref(),
        Some(format!("the body has {w} inside").as_str())
    );
    assert!(results[0]
        .server_id
        .as_deref()
        .unwrap()
        .ends_with(&format!("/{gamma_uid}")));

    // Range paging: 0-1, then 2-3 (only one left); Total stays.
    let first = find(&mut c, &find_xml(&w, "", &range("0-1"))).await;
    let (_, _, total, got_range, results) = parts(&first);
    assert_eq!((total, got_range), (Some(3), Some("0-1")));
    assert_eq!(subjects(results), ["gamma", "beta"]);
    let second = find(&mut c, &find_xml(&w, "", &range("2-3"))).await;
    let (_, _, total, got_range, results) = parts(&second);
    assert_eq!((total, got_range), (Some(3), Some("2-2")));
    assert_eq!(subjects(results), [format!("alpha {w}")]);
    requests += 2;

    // Non-ASCII: in an encoded subject, in an 8-bit body.
    for text in [format!("Grüße {n}"), format!("Straße{n}")] {
        let r = find(&mut c, &find_xml(&text, "", "")).await;
        requests += 1;
        let (_, _, total, _, results) = parts(&r);
        assert_eq!(total, Some(1), "{text}");
        assert_eq!(subjects(results), [format!("Grüße {n}")], "{text}");
    }

    // No match: success, Total 0, no Result, no Range.
    let none = find(
        &mut c,
        &find_xml(&unique("nothing").replace('-', ""), "", ""),
    )
    .await;
    requests += 1;
    assert_eq!(parts(&none).0, 1);
    assert_eq!(parts(&none).2, Some(0));
    assert_eq!(parts(&none).3, None);
    assert!(parts(&none).4.is_empty());

    // The result's ServerId (LongId form: not synced) fetched.
    let sid = beta.server_id.clone().unwrap();
    let fetch = format!(
        "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\"><Fetch><Store>Mailbox</Store>\
         <airsync:CollectionId>{inbox}</airsync:CollectionId><airsync:ServerId>{sid}</airsync:ServerId></Fetch></ItemOperations>"
    );
    let res = c.post_xml("ItemOperations", &fetch).await;
    requests += 1;
    let el = res.element();
    let fetched = find_all(&el, "Fetch");
    assert_eq!(
        find_text(fetched[0], "Status").as_deref(),
        Some("1"),
        "{}",
        res.xml()
    );
    assert_eq!(find_text(fetched[0], "Subject").as_deref(), Some("beta"));

    // Once the device synced INBOX, a result carries the device's ServerId.
    let sync = |key: &str, more: &str| {
        format!(
            "<Sync xmlns=\"AirSync:\"><Collections><Collection><SyncKey>{key}</SyncKey>\
             <CollectionId>{inbox}</CollectionId>{more}</Collection></Collections></Sync>"
        )
    };
    let res = c.post_xml("Sync", &sync("0", "")).await;
    let key = find_text(&res.element(), "SyncKey").unwrap();
    let res = c
        .post_xml(
            "Sync",
            &sync(&key, "<GetChanges/><WindowSize>50</WindowSize>"),
        )
        .await;
    let el = res.element();
    let key = find_text(&el, "SyncKey").unwrap();
    let synced_beta = find_all(&el, "Add")
        .into_iter()
        .find(|a| find_text(a, "Subject").as_deref() == Some("beta"))
        .and_then(|a| find_text(a, "ServerId"))
        .expect("beta synced");
    c.post_xml("Sync", &sync(&key, "<GetChanges/>")).await;
    requests += 3;
    let again = find(&mut c, &find_xml(&w, "", &range("0-9"))).await;
    requests += 1;
    assert_eq!(
        parts(&again).4[1].server_id.as_deref(),
        Some(synced_beta.as_str())
    );

    // Every request is recorded and the device's log replays.
    served.stop().await;
    let storage = StorageConfig {
        path: store.clone(),
        ..StorageConfig::default()
    };
    let opened = Store::open(&storage).await.unwrap();
    let bundle = opush_replay::export(&opened, USER, "FINDDEV1", None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap().unwrap();
    assert_eq!(report.requests, requests, "{report:?}");
}

// [MS-ASCMD] 2.2.3.45 DeepTraversal: the folder and its subfolders; no
// CollectionId: every mail folder; results merged newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_traversal_and_every_folder() {
    require(DOVECOT_IMAP);
    const USER: &str = "load1102@load.test";
    let mut raw = RawImap::login(USER);
    reset(&mut raw, "find-");
    for f in ["find-top", "find-top/sub", "find-other"] {
        raw.ok(&format!("CREATE \"{f}\""));
        raw.ok(&format!("SUBSCRIBE \"{f}\""));
    }
    let w = unique("deep").replace('-', "");
    let msg = |s: &str| plain("ann@example.test", &format!("{s} {w}"), "", "body");
    append(&mut raw, "INBOX", "", 3, &msg("in-inbox"));
    append(&mut raw, "find-top", "", 2, &msg("in-top"));
    append(&mut raw, "find-top/sub", "", 4, &msg("in-sub"));
    append(&mut raw, "find-other", "", 1, &msg("in-other"));
    append(
        &mut raw,
        "find-top",
        "",
        5,
        &plain("ann@example.test", "unrelated", "", "x"),
    );

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let served = serve_support::Served::start(config(&store, 1143), &store).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "FINDDEV2", "16.1");
    let folders = folder_sync(&mut c).await;
    let top = id_of(&folders, "find-top");
    let sub = id_of(&folders, "sub");
    let in_coll = |c: &str| format!("<airsync:CollectionId>{c}</airsync:CollectionId>");

    let shallow = find(&mut c, &find_xml(&w, &in_coll(&top), "")).await;
    assert_eq!(subjects(parts(&shallow).4), [format!("in-top {w}")]);
    let deep = find(&mut c, &find_xml(&w, &in_coll(&top), "<DeepTraversal/>")).await;
    let (_, _, total, _, results) = parts(&deep);
    assert_eq!(total, Some(2));
    assert_eq!(
        subjects(results),
        [format!("in-sub {w}"), format!("in-top {w}")]
    );
    assert_eq!(results[0].collection_id.as_deref(), Some(sub.as_str()));
    assert_eq!(results[1].collection_id.as_deref(), Some(top.as_str()));
    // DeepTraversal in the Query, as some clients put it.
    let deep_q = find(
        &mut c,
        &find_xml(&w, &format!("{}<DeepTraversal/>", in_coll(&top)), ""),
    )
    .await;
    assert_eq!(parts(&deep_q).2, Some(2));

    let everywhere = find(&mut c, &find_xml(&w, "", &range("0-9"))).await;
    let (_, _, total, _, results) = parts(&everywhere);
    assert_eq!(total, Some(4));
    assert_eq!(
        subjects(results),
        ["in-sub", "in-inbox", "in-top", "in-other"].map(|s| format!("{s} {w}"))
    );
    // Pages of the merged list agree with it.
    let page = find(&mut c, &find_xml(&w, "", &range("1-2"))).await;
    assert_eq!(
        subjects(parts(&page).4),
        ["in-inbox", "in-top"].map(|s| format!("{s} {w}"))
    );

    // A CollectionId the device's hierarchy does not hold: FolderSync required.
    let unknown = find(&mut c, &find_xml(&w, &in_coll("4242"), "")).await;
    assert_eq!((parts(&unknown).0, parts(&unknown).1), (3, 3));
    served.stop().await;
}

// [MS-ASCMD] 2.2.3.177.2 and 2.2.2: a bad Find answers a Status, never an
// HTTP error; before 16.1 the command is refused (138, HTTP 400 before
// 14.0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_finds_answer_a_status() {
    require(DOVECOT_IMAP);
    const USER: &str = "load1103@load.test";
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let served = serve_support::Served::start(config(&store, 1143), &store).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "FINDDEV3", "16.1");

    // Before any FolderSync: FolderSync required.
    let early = find(&mut c, &find_xml("hello", "", "")).await;
    assert_eq!((parts(&early).0, parts(&early).1), (3, 3));
    folder_sync(&mut c).await;

    let invalid = |r: &FindResponse| {
        assert_eq!(r.status.code(), 2, "{r:?}");
        if let Some(store) = &r.response {
            assert_eq!(store.status.code(), 2, "{r:?}");
            assert!(store.results.is_empty());
        }
    };
    for (what, xml) in [
        ("empty FreeText", find_xml("  ", "", "")),
        ("Range backwards", find_xml("hello", "", &range("5-2"))),
        ("Range past 999", find_xml("hello", "", &range("0-1000"))),
        ("Range not a range", find_xml("hello", "", &range("all"))),
        (
            "not Email",
            find_xml("hello", "", "").replace(">Email<", ">Contacts<"),
        ),
        (
            "no FreeText",
            "<Find xmlns=\"Find:\"><SearchId>1</SearchId><ExecuteSearch><MailBoxSearchCriterion>\
             <Query/></MailBoxSearchCriterion></ExecuteSearch></Find>"
                .to_owned(),
        ),
        (
            "no ExecuteSearch",
            "<Find xmlns=\"Find:\"><SearchId>1</SearchId></Find>".to_owned(),
        ),
        (
            "GAL, not offered",
            "<Find xmlns=\"Find:\"><SearchId>1</SearchId><ExecuteSearch><GalSearchCriterion>\
             <Query>smith</Query><Options><Range>0-9</Range></Options></GalSearchCriterion>\
             </ExecuteSearch></Find>"
                .to_owned(),
        ),
    ] {
        let res = c.post_xml("Find", &xml).await;
        assert_eq!(res.status, 200, "{what}");
        let r = FindResponse::from_element(&res.element(), ProtocolVersion::V16_1).unwrap();
        invalid(&r);
    }
    // Not a Find request at all (no SearchId): the common 103, in a Find.
    let res = c
        .post_xml("Find", "<Find xmlns=\"Find:\"><ExecuteSearch/></Find>")
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("103"));

    // Before 16.1: VersionNotSupported (14.x), HTTP 400 (12.1).
    let body = find_xml("hello", "", "");
    c.version = "14.1".to_owned();
    let res = c.post_xml("Find", &body).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.element().tag.name(), Some("Find"));
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("138"));
    c.version = "12.1".to_owned();
    let res = c.post_xml("Find", &body).await;
    assert_eq!(res.status, 400);
    served.stop().await;
}

// IMAP down after the device logged in (its credentials cached): the
// common 111, retry later, as every command answers a backend outage.
// A private Dovecot (port 11690), stopped under opush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_down_is_retry_later() {
    const USER: &str = "load1104@load.test";
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/eas-find-down"), 11690);
    dovecot.run("up");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let served = serve_support::Served::start(config(&store, dovecot.port), &store).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "FINDDEV4", "16.1");
    folder_sync(&mut c).await;
    let ok = find(&mut c, &find_xml("hello", "", "")).await;
    assert_eq!(parts(&ok).0, 1);
    dovecot.run("down");
    let res = c.post_xml("Find", &find_xml("hello", "", "")).await;
    assert_eq!(res.status, 200);
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("111"));
    served.stop().await;
}
