//! opush against an IMAP server without LITERAL+ (nor LITERAL-): every
//! literal opush sends must be synchronizing (`{n}`, then the bytes only
//! after the server's `+`), as such servers require (some Cyrus and Courier
//! set-ups, hosted IMAP services). Every other test talks to the stack's
//! Dovecot, which advertises LITERAL+, so this path is met here only.
//! The `literal_minus_*` tests at the end do the same against a server
//! that advertises LITERAL- only (RFC 7888 §4, as Gmail does): literals of
//! at most 4096 bytes must go `{n+}` without a round trip, bigger ones
//! `{n}` after the `+` (see the section there).
//!
//! Set-up per test: a private Dovecot started with `scripts/dovecot-private
//! --no-literal-plus` (neither capability advertised, before or after
//! login; a `{n+}` literal over 4096 bytes ends the connection with `BYE
//! [TOOBIG]`), opush (`serve::run_with`, embedded store) reaching it through
//! `opush_tests::imap_tap::LiteralTap`, a relay that checks on the wire that
//! every literal was synchronizing and that its bytes waited for the
//! continuation request: Dovecot itself reads a small `{n+}` it did not
//! advertise without complaint, so its answers alone would not show it.
//!
//! Each test drives opush over HTTP and checks the IMAP side directly on
//! the private Dovecot: Basic-auth logins whose password goes as a literal
//! (the stack's utf8pw* users: read-only logins), SendMail, SmartReply and
//! SmartForward saving to Sent (APPEND), a 16.1 draft added and edited
//! (APPEND), Search with non-ASCII text (`UID SEARCH … TEXT {n}`), and
//! FolderCreate/FolderUpdate/FolderDelete with non-ASCII names (sent as
//! quoted modified UTF-7, no literal). These are every command opush sends
//! a literal with (`Part::Literal` in server/src/backends/imap/session.rs).
//!
//! Private Dovecot ports 11642–11647 and 11649–11652 (LITERAL-); users
//! load0084–load0090, in the private Dovecots' own mail stores (other
//! files reserve the same users on the stack's Dovecot). On the stack's
//! Dovecot only the sent mail arrives, through Postfix, in load0084's
//! INBOX (imap_pool.rs only checks its STATUS); the utf8pw* users log in
//! to a private one only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;

use opush_protocol::commands::compose::{ComposeRequest, Source};
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::commands::smart_forward::SmartForwardRequest;
use opush_protocol::commands::smart_reply::SmartReplyRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{encode_to_vec, Element};
use opush_server::config::Config;
use opush_tests::eas::{find_all, find_text, EasClient, HttpResponse};
use opush_tests::imap_tap::{LiteralTap, TapStats, LITERAL_MINUS_MAX};
use opush_tests::{
    demo_password, repo_root, require, unique, Literals, PrivateDovecot, RawImap, DOVECOT_IMAP,
    POSTFIX_SMTP, SPECIAL_PASSWORD_USERS,
};

mod serve_support;

/// The private Dovecot without LITERAL+ (and without LITERAL-, or with it),
/// opush's IMAP relay to it, and opush itself. Dropping it stops opush's
/// task, the relay and Dovecot.
struct Rig {
    dovecot: PrivateDovecot,
    literals: Literals,
    tap: LiteralTap,
    addr: SocketAddr,
    served: Option<serve_support::Served>,
    _store: tempfile::TempDir,
}

impl Rig {
    /// Neither LITERAL+ nor LITERAL- advertised.
    async fn start(name: &str, port: u16) -> Rig {
        Rig::start_with(name, port, Literals::None).await
    }

    /// `literals`: [`Literals::None`] or [`Literals::Minus`].
    async fn start_with(name: &str, port: u16, literals: Literals) -> Rig {
        // The script installs Dovecot when missing and writes the stack's
        // users into the private instance; the stack itself must be up as
        // for every server test (scripts/test starts it): missing, the
        // test fails.
        require(DOVECOT_IMAP);
        init_logs();
        let dovecot = match literals {
            Literals::Minus => PrivateDovecot::new(
                repo_root().join(format!("target/tmp/literal-minus-{name}")),
                port,
            )
            .with_literal_minus(),
            Literals::None | Literals::Plus => PrivateDovecot::new(
                repo_root().join(format!("target/tmp/no-literal-plus-{name}")),
                port,
            )
            .without_literal_plus(),
        };
        dovecot.run("up");
        let tap = LiteralTap::start(dovecot.addr());
        let store = tempfile::tempdir().unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], serve_support::free_port()));
        let cfg = Config::from_toml(&format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.test\"\n\
             max_request_body = 1048576\n\
             [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
             [imap]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 10000\n\
             [policy]\nrequire_provisioning = false\n",
            store.path().display(),
            tap.port(),
        ))
        .unwrap();
        let served = serve_support::Served::start(cfg, store.path()).await;
        Rig {
            dovecot,
            literals,
            tap,
            addr: served.addr,
            served: Some(served),
            _store: store,
        }
    }

    /// A device of `user` (stack password).
    fn client(&self, user: &str, device: &str, version: &str) -> EasClient {
        EasClient::new(self.addr, user, &demo_password(), device, version)
    }

    /// A plain IMAP connection of `user` straight to the private Dovecot
    /// (not through the relay), to check what opush stored.
    fn imap(&self, user: &str) -> RawImap {
        RawImap::login_to(self.dovecot.addr(), user)
    }

    /// What the relay saw so far.
    fn wire(&self) -> TapStats {
        self.tap.stats()
    }

    /// Stops opush (gracefully: its IMAP connections log out through the
    /// relay) and checks everything it sent over its whole life against
    /// what the server advertised.
    async fn finish(mut self) -> TapStats {
        if let Some(served) = self.served.take() {
            served.stop().await;
        }
        let stats = self.wire();
        match self.literals {
            Literals::Minus => stats.assert_literal_minus(),
            Literals::None | Literals::Plus => stats.assert_synchronizing_only(),
        }
        stats
    }
}

/// Warnings and errors of opush, shown with a failing test's output.
fn init_logs() {
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_test_writer()
            .finish(),
    );
}

/// Asserts HTTP 200; returns the WBXML body as a tree.
fn ok_tree(res: &HttpResponse, what: &str) -> Element<'static> {
    assert_eq!(
        res.status, 200,
        "{what}: HTTP {} {:?}",
        res.status, res.body
    );
    res.element()
}

/// Asserts every `Status` element of the answer is 1.
fn all_status_1(res: &HttpResponse, what: &str) -> Element<'static> {
    let root = ok_tree(res, what);
    for s in find_all(&root, "Status") {
        assert_eq!(
            s.text_concat().as_deref(),
            Some("1"),
            "{what}: {}",
            res.xml()
        );
    }
    root
}

const FOLDER_SYNC_0: &str =
    "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>";

/// FolderSync 0: (its SyncKey, (ServerId, Type, DisplayName) of each folder).
async fn folders(c: &mut EasClient) -> (String, Vec<(String, String, String)>) {
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    let root = all_status_1(&res, "FolderSync");
    let key = find_text(&root, "SyncKey").expect("FolderSync SyncKey");
    let list = find_all(&root, "Add")
        .into_iter()
        .map(|a| {
            let text = |n| find_text(a, n).unwrap_or_default();
            (text("ServerId"), text("Type"), text("DisplayName"))
        })
        .collect();
    (key, list)
}

/// The ServerId of the folder of EAS `folder_type` ("2" Inbox, "3" Drafts).
fn of_type(list: &[(String, String, String)], folder_type: &str) -> String {
    list.iter()
        .find(|(_, t, _)| t == folder_type)
        .map(|(id, _, _)| id.clone())
        .unwrap_or_else(|| panic!("no folder of type {folder_type}: {list:?}"))
}

fn sync_xml(collection: &str, key: &str, extra: &str) -> String {
    let more = if key == "0" {
        String::new()
    } else {
        "<GetChanges/><WindowSize>100</WindowSize>".to_owned()
    };
    format!(
        "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\" xmlns:email=\"Email:\">\
         <Collections><Collection><SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>\
         {more}{extra}</Collection></Collections></Sync>"
    )
}

/// Sync of `collection` from SyncKey 0 to its end: the SyncKey reached
/// and (ServerId, Subject) of every item added.
async fn sync_to_end(c: &mut EasClient, collection: &str) -> (String, Vec<(String, String)>) {
    let res = c.post_xml("Sync", &sync_xml(collection, "0", "")).await;
    let mut key = find_text(&all_status_1(&res, "Sync 0"), "SyncKey").expect("SyncKey");
    let mut items = Vec::new();
    for _ in 0..100 {
        let res = c.post_xml("Sync", &sync_xml(collection, &key, "")).await;
        if res.status == 200 && res.body.is_empty() {
            return (key, items);
        }
        let root = all_status_1(&res, "Sync");
        key = find_text(&root, "SyncKey").expect("SyncKey");
        for add in find_all(&root, "Add") {
            items.push((
                find_text(add, "ServerId").unwrap_or_default(),
                find_text(add, "Subject").unwrap_or_default(),
            ));
        }
        if find_all(&root, "MoreAvailable").is_empty() {
            return (key, items);
        }
    }
    panic!("the Sync of {collection} never ended");
}

/// A plain-text body of about 6 KB (over Dovecot's 4096-byte limit for a
/// non-synchronizing literal it did not advertise), non-ASCII throughout.
fn long_text(marker: &str) -> String {
    let mut s = String::new();
    for i in 0..80 {
        s.push_str(&format!(
            "Zeile {i} von {marker}: Grüße aus Köln, ça va très bien — 東京 🙂\r\n"
        ));
    }
    assert!(s.len() > 6000, "{}", s.len());
    s
}

/// A UTF-8 (8bit) message from `from` to `to`.
fn mime(from: &str, to: &str, subject_ascii: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= {subject_ascii}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{body}"
    )
}

/// Whether the message `uid` of the selected mailbox has `text` in its
/// body, as Dovecot finds it (transfer encoding decoded). This connection
/// is the test's own, straight to Dovecot, which reads the small `{n+}`.
fn body_has(imap: &mut RawImap, uid: u32, text: &str) -> bool {
    let criteria = format!("CHARSET UTF-8 UID {uid} BODY {{{}+}}\r\n{text}", text.len());
    imap.uid_search(&criteria) == vec![uid]
}

/// Each special-password user logs in (OPTIONS) and lists its folders as
/// device `device`, then `SPECIAL_PASSWORD_USERS[wrong]`'s password with
/// an `x` added is refused (401), then a plain password (a quoted string,
/// no literal) logs in.
async fn log_in_each_special_user(rig: &Rig, device: &str, wrong: usize) {
    for (user, password) in SPECIAL_PASSWORD_USERS {
        let mut c = EasClient::new(rig.addr, user, password, device, "14.1");
        let res = c.options().await;
        assert_eq!(
            res.status,
            200,
            "{user} refused (see {}/dovecot.log)",
            rig.dovecot.dir.display()
        );
        // The handlers reach the mailbox as the user with that password.
        let (_, list) = folders(&mut c).await;
        of_type(&list, "2");
    }
    let (user, password) = SPECIAL_PASSWORD_USERS[wrong];
    let mut refused = EasClient::new(rig.addr, user, &format!("{password}x"), device, "14.1");
    assert_eq!(refused.options().await.status, 401, "{user}");
    let mut c = rig.client("load0084@load.test", device, "14.1");
    assert_eq!(c.options().await.status, 200);
}

/// `dovecot` started, a [`LiteralTap`] in front of it, and opush's IMAP
/// client logged in as `user` through the tap (the tests of the client
/// itself, without HTTP).
async fn tapped_client(
    dovecot: PrivateDovecot,
    user: &str,
) -> (
    PrivateDovecot,
    LiteralTap,
    opush_server::backends::imap::Session,
) {
    use opush_server::backends::imap::ImapClient;
    use opush_server::config::{ImapConfig, Secret};
    dovecot.run("up");
    let tap = LiteralTap::start(dovecot.addr());
    let cfg = ImapConfig {
        port: tap.port(),
        timeout_ms: 10_000,
        ..ImapConfig::default()
    };
    let s = ImapClient::login(&cfg, user, &Secret::new(demo_password()))
        .await
        .unwrap();
    (dovecot, tap, s)
}

/// Changes draft `sid` (in `drafts`, at `key`) to a second version whose
/// body is [`long_text`] (over 4096 bytes): the draft is replaced by one
/// message (its UID not among `uids`) whose body holds `expect`.
async fn change_to_a_long_draft(
    (c, imap): (&mut EasClient, &mut RawImap),
    (drafts, key, sid): (&str, &str, &str),
    (marker, uids): (&str, &[u32]),
    expect: &str,
) {
    let change = format!(
        "<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>\
         <email:Subject>Entwurf {marker} zwei</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>zweite Fassung, {}</airsyncbase:Data></airsyncbase:Body>\
         </ApplicationData></Change></Commands>",
        long_text(marker)
    );
    let res = c.post_xml("Sync", &sync_xml(drafts, key, &change)).await;
    all_status_1(&res, "Sync Change");
    let new_uids = imap.search_subject("Drafts", marker);
    assert_eq!(new_uids.len(), 1, "still one draft");
    assert_ne!(new_uids, uids, "the message was replaced");
    assert!(
        body_has(imap, new_uids[0], expect),
        "{expect:?} not in the draft"
    );
}

// LOGIN goes by the greeting's capabilities, which list neither LITERAL+
// nor LITERAL- here: a password that is not printable ASCII goes as a
// synchronizing literal.
// utf8pw1 (Latin-1 representable) and utf8pw3 (Cyrillic, CJK, an emoji)
// need one; utf8pw2 (quotes, backslash) goes as an escaped quoted string.
// A wrong password is refused (401) after its literal was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_logins_send_their_passwords_as_synchronizing_literals() {
    let rig = Rig::start("login", 11642).await;
    // A wrong password (once: Dovecot delays each failed login from an
    // address more than the one before) is asked for, then refused.
    log_in_each_special_user(&rig, "NOLITPW", 2).await;

    let wire = rig.finish().await;
    // utf8pw1 and utf8pw3 (one literal each), and the wrong password.
    assert!(wire.sync("LOGIN") >= 3, "{wire:?}");
}

// SendMail, SmartReply and SmartForward with SaveInSentItems: the copy goes
// to Sent with APPEND and a synchronizing literal (a message over 4 KB: a
// `{n+}` one would end the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_copies_are_appended_with_synchronizing_literals() {
    require(POSTFIX_SMTP);
    let user = "load0085@load.test";
    let rcpt = "load0084@load.test";
    let rig = Rig::start("send", 11643).await;
    let v = ProtocolVersion::V14_1;
    let mut c = rig.client(user, "NOLITSEND", "14.1");
    let mut imap = rig.imap(user);

    // The message replied to and forwarded, straight into the private INBOX.
    let original = unique("nolit-orig");
    imap.append_to_inbox(&original);
    let (_, list) = folders(&mut c).await;
    let inbox = of_type(&list, "2");
    let (_, items) = sync_to_end(&mut c, &inbox).await;
    let item = items
        .iter()
        .find(|(_, s)| s.contains(&original))
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("{original} not synced: {items:?}"));
    let before = rig.wire().sync("APPEND");

    let sent = unique("nolit-sent");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(unique("cid")),
            save_in_sent_items: true,
            mime: mime(user, rcpt, &sent, &long_text(&sent)).into_bytes(),
            ..ComposeRequest::default()
        })
        .to_element(v),
    );
    let res = c.post("SendMail", &body).await;
    assert_eq!(res.status, 200, "SendMail: {res:?}");
    assert!(res.body.is_empty(), "SendMail status: {}", res.xml());

    let source = Source {
        folder_id: Some(inbox.clone()),
        item_id: Some(item.clone()),
        ..Source::default()
    };
    let replied = unique("nolit-reply");
    let reply = ComposeRequest {
        client_id: Some(unique("cid")),
        save_in_sent_items: true,
        source: Some(source.clone()),
        mime: mime(user, rcpt, &format!("Re: {replied}"), &long_text(&replied)).into_bytes(),
        ..ComposeRequest::default()
    };
    let res = c
        .post(
            "SmartReply",
            &encode_to_vec(&SmartReplyRequest(reply).to_element(v)),
        )
        .await;
    assert_eq!(res.status, 200, "SmartReply: {res:?}");
    assert!(res.body.is_empty(), "SmartReply status: {}", res.xml());

    let forwarded = unique("nolit-fwd");
    let forward = ComposeRequest {
        client_id: Some(unique("cid")),
        save_in_sent_items: true,
        source: Some(source),
        mime: mime(
            user,
            rcpt,
            &format!("Fwd: {forwarded}"),
            "see below: ünten\r\n",
        )
        .into_bytes(),
        ..ComposeRequest::default()
    };
    let res = c
        .post(
            "SmartForward",
            &encode_to_vec(&SmartForwardRequest(forward).to_element(v)),
        )
        .await;
    assert_eq!(res.status, 200, "SmartForward: {res:?}");
    assert!(res.body.is_empty(), "SmartForward status: {}", res.xml());

    // IMAP: each copy is in Sent, whole (searched by Dovecot, which
    // decodes the transfer encoding opush chose).
    for (marker, text) in [
        (&sent, format!("Zeile 79 von {sent}: Grüße aus Köln")),
        (
            &replied,
            format!("Zeile 79 von {replied}: Grüße aus Köln, ça va très bien — 東京 🙂"),
        ),
        (&forwarded, format!("body of {original}")),
    ] {
        let uids = imap.search_subject("Sent", marker);
        assert_eq!(uids.len(), 1, "{marker} in Sent");
        assert!(
            body_has(&mut imap, uids[0], &text),
            "{marker}: {text:?} not in Sent"
        );
    }
    // And the message went out (the stack's Postfix and Dovecot).
    assert_eq!(
        RawImap::login(rcpt).wait_for_subject("INBOX", &sent).len(),
        1
    );

    let wire = rig.finish().await;
    assert!(wire.sync("APPEND") >= before + 3, "{wire:?}");
}

// [MS-ASCMD] 16.x drafts: a draft added by Sync (APPEND to Drafts) and
// edited (the message replaced: APPEND again), both over 4 KB and non-ASCII.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_appended_with_synchronizing_literals() {
    let user = "load0087@load.test";
    let rig = Rig::start("drafts", 11644).await;
    let mut c = rig.client(user, "NOLITDRAFT", "16.1");
    let mut imap = rig.imap(user);
    let (_, list) = folders(&mut c).await;
    let drafts = of_type(&list, "3");
    let (key, _) = sync_to_end(&mut c, &drafts).await;

    let marker = unique("nolit-draft");
    let add = format!(
        "<Commands><Add><ClientId>{marker}</ClientId><ApplicationData>\
         <email:To>bob@example.test</email:To><email:Subject>Entwurf {marker}</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>{}</airsyncbase:Data></airsyncbase:Body>\
         </ApplicationData></Add></Commands>",
        long_text(&marker)
    );
    let res = c.post_xml("Sync", &sync_xml(&drafts, &key, &add)).await;
    let root = all_status_1(&res, "Sync Add");
    let sid = find_text(&root, "ServerId").expect("the draft's ServerId");
    let key = find_text(&root, "SyncKey").expect("SyncKey");
    let uids = imap.search_subject("Drafts", &marker);
    assert_eq!(uids.len(), 1, "one draft");
    let whole = format!("Zeile 79 von {marker}: Grüße aus Köln");
    assert!(
        body_has(&mut imap, uids[0], &whole),
        "{whole:?} not in the draft"
    );

    change_to_a_long_draft(
        (&mut c, &mut imap),
        (&drafts, &key, &sid),
        (&marker, &uids),
        &format!("zweite Fassung, Zeile 0 von {marker}: Grüße"),
    )
    .await;

    let wire = rig.finish().await;
    assert!(wire.sync("APPEND") >= 2, "{wire:?}");
}

// Search with non-ASCII text: `UID SEARCH CHARSET UTF-8 TEXT {n}` with a
// synchronizing literal; the server got the whole string (one match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_text_goes_as_a_synchronizing_literal() {
    let user = "load0088@load.test";
    let rig = Rig::start("search", 11645).await;
    let mut imap = rig.imap(user);
    let marker = unique("nolit-search");
    let word = format!("Größenwahn-{marker}");
    let msg = mime(
        "a@example.test",
        user,
        &marker,
        &format!("ein {word} hier\r\n"),
    );
    let (_, ok) = imap.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
    // The same word with other letters: not a match.
    let other = mime(
        "a@example.test",
        user,
        &marker,
        &format!("ein {} hier\r\n", word.replace('ö', "o")),
    );
    let (_, ok) = imap.cmd(&format!("APPEND INBOX {{{}+}}\r\n{other}", other.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");

    let mut c = rig.client(user, "NOLITSEARCH", "14.1");
    folders(&mut c).await;
    let query = format!(
        "<Search xmlns=\"Search:\"><Store><Name>Mailbox</Name><Query><And>\
         <FreeText>{word}</FreeText></And></Query>\
         <Options><Range>0-9</Range></Options></Store></Search>"
    );
    let res = c.post_xml("Search", &query).await;
    let root = all_status_1(&res, "Search");
    assert_eq!(
        find_text(&root, "Total").as_deref(),
        Some("1"),
        "{}",
        res.xml()
    );
    assert_eq!(find_all(&root, "Result").len(), 1, "{}", res.xml());

    let wire = rig.finish().await;
    assert!(wire.sync("UID SEARCH") >= 1, "{wire:?}");
}

// Folder names are sent as quoted modified UTF-7 (RFC 3501 5.1.3), never as
// literals, with or without LITERAL+: create, rename and delete non-ASCII
// folders against the server without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_folder_names_work_without_literal_plus() {
    let user = "load0089@load.test";
    let rig = Rig::start("folders", 11646).await;
    let mut c = rig.client(user, "NOLITFOLDER", "14.1");
    let mut imap = rig.imap(user);
    let (key, _) = folders(&mut c).await;
    let marker = unique("f");

    let name = format!("Reçus-{marker}");
    let res = c
        .post_xml(
            "FolderCreate",
            &format!(
                "<FolderCreate xmlns=\"FolderHierarchy:\"><SyncKey>{key}</SyncKey>\
                 <ParentId>0</ParentId><DisplayName>{name}</DisplayName><Type>12</Type></FolderCreate>"
            ),
        )
        .await;
    let root = all_status_1(&res, "FolderCreate");
    let id = find_text(&root, "ServerId").expect("ServerId");
    let key = find_text(&root, "SyncKey").expect("SyncKey");
    let (list, _) = imap.cmd("LIST \"\" \"*\"");
    assert!(
        list.iter()
            .any(|l| l.ends_with(&format!(" Re&AOc-us-{marker}\r\n"))),
        "{list:?}"
    );

    let renamed = format!("Été-{marker}");
    let res = c
        .post_xml(
            "FolderUpdate",
            &format!(
                "<FolderUpdate xmlns=\"FolderHierarchy:\"><SyncKey>{key}</SyncKey>\
                 <ServerId>{id}</ServerId><ParentId>0</ParentId>\
                 <DisplayName>{renamed}</DisplayName></FolderUpdate>"
            ),
        )
        .await;
    let root = all_status_1(&res, "FolderUpdate");
    let key = find_text(&root, "SyncKey").expect("SyncKey");
    let (list, _) = imap.cmd("LIST \"\" \"*\"");
    assert!(
        list.iter()
            .any(|l| l.ends_with(&format!(" &AMk-t&AOk--{marker}\r\n"))),
        "{list:?}"
    );
    // The device's next FolderSync from scratch shows the Unicode name.
    let mut fresh = rig.client(user, "NOLITFOLDER2", "14.1");
    let (_, all) = folders(&mut fresh).await;
    assert!(all.iter().any(|(_, _, n)| *n == renamed), "{all:?}");

    let res = c
        .post_xml(
            "FolderDelete",
            &format!(
                "<FolderDelete xmlns=\"FolderHierarchy:\"><SyncKey>{key}</SyncKey>\
                 <ServerId>{id}</ServerId></FolderDelete>"
            ),
        )
        .await;
    all_status_1(&res, "FolderDelete");
    let (list, _) = imap.cmd("LIST \"\" \"*\"");
    assert!(!list.iter().any(|l| l.contains(&marker)), "{list:?}");

    rig.finish().await;
}

// The IMAP client itself, through the relay: a server that refuses a
// command at its literal's announcement (Dovecot: APPEND to a mailbox that
// does not exist, `NO [TRYCREATE]` instead of `+`) gets no literal bytes,
// the caller a typed error, and the session goes on; a command with two
// literals (SEARCH SUBJECT and BODY, both non-ASCII) waits before each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_literal_is_not_sent_and_the_session_goes_on() {
    use opush_server::backends::imap::{Flag, ImapError, SearchQuery};

    require(DOVECOT_IMAP);
    let user = "load0090@load.test";
    let (_dovecot, tap, mut s) = tapped_client(
        PrivateDovecot::new(repo_root().join("target/tmp/no-literal-plus-client"), 11647)
            .without_literal_plus(),
        user,
    )
    .await;
    let marker = unique("nolit-client");
    let body = long_text(&marker);
    let message = mime("a@example.test", user, &marker, &body);

    let missing = format!("Nirgendwo-{marker}");
    let err = s
        .append(&missing, &[Flag::Seen], None, message.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::NotFound(_)), "{err:?}");
    assert!(
        s.is_usable(),
        "the server ended the command, not the connection"
    );

    s.append("INBOX", &[], None, message.as_bytes())
        .await
        .unwrap();
    s.select("INBOX").await.unwrap();
    let both = SearchQuery {
        subject: Some("Grüße".to_owned()),
        body: Some(format!("Zeile 79 von {marker}: Grüße aus Köln")),
        ..SearchQuery::default()
    };
    let found = s.search("INBOX", &both).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let none = SearchQuery {
        subject: Some("Grüße".to_owned()),
        body: Some(format!("Zeile 80 von {marker}: Grüße")),
        ..SearchQuery::default()
    };
    assert!(s.search("INBOX", &none).await.unwrap().is_empty());
    s.logout().await;

    let wire = tap.stats();
    wire.assert_synchronizing_only();
    assert_eq!(wire.sync("APPEND"), 2, "{wire:?}");
    assert_eq!(wire.sync("UID SEARCH"), 4, "{wire:?}");
    assert_eq!(wire.refused_literals, 1, "{wire:?}");
}

// ----- LITERAL- only (RFC 7888 §4, as Gmail advertises it) -----------------
//
// A private Dovecot started with `scripts/dovecot-private --literal-minus`
// lists LITERAL- and not LITERAL+, in its greeting and after login. opush
// must send every literal of at most 4096 bytes non-synchronizing (`{n+}`,
// no round trip) and every bigger one synchronizing, its bytes after the
// server's `+` (Dovecot ends the connection on a bigger `{n+}`: `* BYE
// [TOOBIG]`). `TapStats::assert_literal_minus` (run by `Rig::finish`)
// checks each literal on the wire.

/// A message from `a@example.test` to `user` of exactly `size` bytes: the
/// body says "Grüße aus {subject}", then lines of `x`.
fn sized_message(user: &str, subject: &str, size: usize) -> Vec<u8> {
    let mut m = mime(
        "a@example.test",
        user,
        subject,
        &format!("Grüße aus {subject}\r\n"),
    )
    .into_bytes();
    assert!(m.len() + 3 <= size, "{} bytes of headers", m.len());
    while m.len() < size {
        let left = size - m.len();
        // A line of 3 to 78 bytes (CRLF included), the last one exact.
        let line = if left > 78 {
            left.min(78).min(left - 3)
        } else {
            left
        };
        m.extend(std::iter::repeat_n(b'x', line - 2));
        m.extend_from_slice(b"\r\n");
    }
    assert_eq!(m.len(), size);
    m
}

// The greeting lists LITERAL-: a password that needs a literal (utf8pw1,
// utf8pw3) goes `{n+}` with LOGIN, no continuation asked for; a wrong one
// is read and refused (401); a plain password is a quoted string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_minus_logins_send_their_passwords_without_waiting() {
    let rig = Rig::start_with("login", 11649, Literals::Minus).await;
    log_in_each_special_user(&rig, "LITMINPW", 0).await;

    let wire = rig.finish().await;
    let logins = wire.literals_of("LOGIN");
    // utf8pw1 and utf8pw3 (one literal each), and the wrong password.
    assert!(logins.len() >= 3, "{wire:?}");
    assert!(logins.iter().all(|l| l.non_sync && !l.waited), "{wire:?}");
    // No command of this test waited for a `+`.
    assert_eq!(wire.continuations, 0, "{wire:?}");
}

// SendMail with SaveInSentItems: a Sent copy over 4096 bytes goes `{n}`
// and waits for the `+`; a small one goes `{n+}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_minus_sent_copies_over_4096_bytes_wait_for_the_continuation() {
    require(POSTFIX_SMTP);
    let user = "load0085@load.test";
    // On the stack's Dovecot, as in sent_copies_are_appended_with_synchronizing_literals.
    let rcpt = "load0084@load.test";
    let rig = Rig::start_with("send", 11650, Literals::Minus).await;
    let mut c = rig.client(user, "LITMINSEND", "14.1");
    let mut imap = rig.imap(user);
    folders(&mut c).await;

    let big = unique("litmin-big");
    let small = unique("litmin-small");
    let texts = [
        (&big, long_text(&big)),
        (&small, format!("kurz: Grüße aus {small}\r\n")),
    ];
    for (marker, text) in &texts {
        let body = encode_to_vec(
            &SendMailRequest(ComposeRequest {
                client_id: Some(unique("cid")),
                save_in_sent_items: true,
                mime: mime(user, rcpt, marker, text).into_bytes(),
                ..ComposeRequest::default()
            })
            .to_element(ProtocolVersion::V14_1),
        );
        let res = c.post("SendMail", &body).await;
        assert_eq!(res.status, 200, "SendMail: {res:?}");
        assert!(res.body.is_empty(), "SendMail status: {}", res.xml());
    }
    for (marker, text) in &texts {
        let uids = imap.search_subject("Sent", marker);
        assert_eq!(uids.len(), 1, "{marker} in Sent");
        let last = text.lines().last().unwrap_or_default().to_owned();
        assert!(body_has(&mut imap, uids[0], &last), "{last:?} not in Sent");
    }

    let wire = rig.finish().await;
    let appends = wire.literals_of("APPEND");
    assert_eq!(appends.len(), 2, "{wire:?}");
    assert!(
        appends[0].size > LITERAL_MINUS_MAX && !appends[0].non_sync && appends[0].waited,
        "{wire:?}"
    );
    assert!(
        appends[1].size <= LITERAL_MINUS_MAX && appends[1].non_sync,
        "{wire:?}"
    );
    assert_eq!(wire.continuations, 1, "{wire:?}");
}

// [MS-ASCMD] 16.x drafts: a small draft added by Sync goes `{n+}`, no wait;
// its edit to over 4096 bytes goes `{n}` and waits for the `+`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_minus_small_drafts_go_without_waiting() {
    let user = "load0086@load.test";
    let rig = Rig::start_with("drafts", 11651, Literals::Minus).await;
    let mut c = rig.client(user, "LITMINDRAFT", "16.1");
    let mut imap = rig.imap(user);
    let (_, list) = folders(&mut c).await;
    let drafts = of_type(&list, "3");
    let (key, _) = sync_to_end(&mut c, &drafts).await;

    let marker = unique("litmin-draft");
    let short = format!("kurzer Entwurf, Grüße aus Köln {marker}");
    let add = format!(
        "<Commands><Add><ClientId>{marker}</ClientId><ApplicationData>\
         <email:To>bob@example.test</email:To><email:Subject>Entwurf {marker}</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>{short}</airsyncbase:Data></airsyncbase:Body>\
         </ApplicationData></Add></Commands>"
    );
    let res = c.post_xml("Sync", &sync_xml(&drafts, &key, &add)).await;
    let root = all_status_1(&res, "Sync Add");
    let sid = find_text(&root, "ServerId").expect("the draft's ServerId");
    let key = find_text(&root, "SyncKey").expect("SyncKey");
    let uids = imap.search_subject("Drafts", &marker);
    assert_eq!(uids.len(), 1, "one draft");
    assert!(
        body_has(&mut imap, uids[0], &short),
        "{short:?} not in the draft"
    );
    let added = rig.wire();

    change_to_a_long_draft(
        (&mut c, &mut imap),
        (&drafts, &key, &sid),
        (&marker, &uids),
        &format!("Zeile 79 von {marker}: Grüße aus Köln"),
    )
    .await;

    let wire = rig.finish().await;
    let first = added.literals_of("APPEND");
    assert_eq!(first.len(), 1, "{added:?}");
    assert!(
        first[0].non_sync && first[0].size <= LITERAL_MINUS_MAX,
        "{added:?}"
    );
    assert_eq!(added.continuations, 0, "{added:?}");
    let appends = wire.literals_of("APPEND");
    assert_eq!(appends.len(), 2, "{wire:?}");
    assert!(
        appends[1].size > LITERAL_MINUS_MAX && !appends[1].non_sync && appends[1].waited,
        "{wire:?}"
    );
}

// The IMAP client itself, through the relay, at the limit: an APPEND of
// exactly 4096 bytes goes `{4096+}`, one of 4097 `{4097}` and waits; to a
// mailbox that does not exist the first is read and refused, the second
// refused at its announcement, and the session goes on either way; SEARCH
// with two non-ASCII strings sends both `{n+}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_minus_is_used_up_to_4096_bytes_exactly() {
    use opush_server::backends::imap::{ImapError, SearchQuery};

    require(DOVECOT_IMAP);
    let user = "load0087@load.test";
    let (dovecot, tap, mut s) = tapped_client(
        PrivateDovecot::new(repo_root().join("target/tmp/literal-minus-client"), 11652)
            .with_literal_minus(),
        user,
    )
    .await;
    let marker = unique("litmin-client");
    let limit = format!("limit {marker}");
    let over = format!("over {marker}");
    let at_limit = sized_message(user, &limit, 4096);
    let past_limit = sized_message(user, &over, 4097);

    s.append("INBOX", &[], None, &at_limit).await.unwrap();
    s.append("INBOX", &[], None, &past_limit).await.unwrap();
    let missing = format!("Nirgendwo-{marker}");
    for message in [&at_limit, &past_limit] {
        let err = s.append(&missing, &[], None, message).await.unwrap_err();
        assert!(matches!(err, ImapError::NotFound(_)), "{err:?}");
        assert!(s.is_usable(), "the server ended the command only");
    }
    s.select("INBOX").await.unwrap();
    for subject in [&limit, &over] {
        let query = SearchQuery {
            subject: Some(format!("Grüße {subject}")),
            body: Some(format!("Grüße aus {subject}")),
            ..SearchQuery::default()
        };
        let found = s.search("INBOX", &query).await.unwrap();
        assert_eq!(found.len(), 1, "{subject}: {found:?}");
    }
    s.logout().await;

    let wire = tap.stats();
    wire.assert_literal_minus();
    let appends: Vec<_> = wire
        .literals_of("APPEND")
        .iter()
        .map(|l| (l.size, l.non_sync, l.waited, l.refused))
        .collect();
    assert_eq!(
        appends,
        vec![
            (4096, true, false, false),
            (4097, false, true, false),
            (4096, true, false, false),
            (4097, false, false, true),
        ],
        "{wire:?}"
    );
    let searches = wire.literals_of("UID SEARCH");
    assert_eq!(searches.len(), 4, "{wire:?}");
    assert!(searches.iter().all(|l| l.non_sync), "{wire:?}");
    assert_eq!(wire.continuations, 1, "{wire:?}");
    // The capabilities after login came with LOGIN's OK: no CAPABILITY
    // command, and the literals above went by them.
    assert_eq!(
        (wire.sent("LOGIN"), wire.sent("CAPABILITY")),
        (1, 0),
        "{wire:?}"
    );
    // Straight to Dovecot: both messages whole.
    let mut imap = RawImap::login_to(dovecot.addr(), user);
    for (subject, size) in [(&limit, 4096), (&over, 4097)] {
        let uids = imap.search_subject("INBOX", subject);
        assert_eq!(uids.len(), 1, "{subject}");
        let (lines, _) = imap.cmd(&format!("UID FETCH {} RFC822.SIZE", uids[0]));
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("RFC822.SIZE {size}"))),
            "{lines:?}"
        );
    }
}
