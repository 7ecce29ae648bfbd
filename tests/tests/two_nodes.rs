//! opush scaled out: two opush processes (in-process servers, each with
//! its own sessions, caches and push watchers) on one Cassandra keyspace,
//! and one device whose requests a load balancer spreads over both —
//! alternating, in bursts, and a request retried on the other node after
//! its answer was lost. What each test checks at the end is what Dovecot
//! holds: no item lost, none twice, each device change applied once.
//!
//! The mechanism under test: a device's events are appended conditionally
//! on its head, a process reloads a cached state whose head the store no
//! longer has, and a request with backend effects holds the device's
//! lease across processes (`server/src/session.rs`). docs/DEPLOYMENT.md says what
//! several processes on one store guarantee.
//!
//! Needs Dovecot, Postfix and Cassandra (`scripts/stack up`); fails, never
//! skips, without them. Users: load1151–load1156, load1181–load1184,
//! load1234–load1235, load1198;
//! keyspaces `twonode_*` (each test its own, dropped at its end).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::commands::sync::ServerCommand;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_tests::eas::{find_text, EasClient};
use opush_tests::{fill, require, unique, RawImap, POSTFIX_SMTP};
use support::*;

const V: &str = "14.1";

/// Two opush processes on one fresh keyspace.
struct TwoNodes {
    a: Opush,
    b: Opush,
    keyspace: Keyspace,
}

impl TwoNodes {
    async fn start(opts: Options) -> TwoNodes {
        let keyspace = Keyspace::fresh("twonode").await;
        let opts = Options {
            storage_toml: Some(keyspace.toml.clone()),
            ..opts
        };
        let a = start(opts.clone()).await;
        let b = start(opts).await;
        TwoNodes { a, b, keyspace }
    }

    /// Node `i % 2` (0: A, 1: B).
    fn node(&self, i: usize) -> SocketAddr {
        if i % 2 == 0 {
            self.a.addr
        } else {
            self.b.addr
        }
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
        self.keyspace.remove().await;
    }
}

/// An empty, subscribed mailbox `name` of the user `imap` is logged in as.
fn fresh_mailbox(imap: &mut RawImap, name: &str) {
    imap.cmd("UNSELECT");
    imap.cmd(&format!("DELETE \"{name}\""));
    let (_, ok) = imap.cmd(&format!("CREATE \"{name}\""));
    assert!(ok.starts_with("OK"), "{ok}");
    imap.cmd(&format!("SUBSCRIBE \"{name}\""));
}

fn small_message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.test>\r\nTo: Reader <reader@load.test>\r\n\
         Subject: {subject}\r\nMessage-ID: <{}@opush.test>\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello {subject}.\r\n",
        subject.replace(' ', "-")
    )
}

fn email_of(c: &ServerCommand) -> Option<&Email> {
    match c {
        ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        }
        | ServerCommand::Change {
            application_data: ApplicationData::Email(e),
            ..
        } => Some(e),
        _ => None,
    }
}

fn subject_of(c: &ServerCommand) -> String {
    email_of(c)
        .and_then(|e| e.subject.clone())
        .unwrap_or_default()
}

/// One Sync of `collection` from `key` on the client's current node: the
/// answer's bytes, new key, commands and MoreAvailable.
async fn sync_once(
    c: &mut EasClient,
    collection: &str,
    key: &str,
    window: u32,
    extra: &str,
) -> (Vec<u8>, String, Vec<ServerCommand>, bool) {
    let res = c
        .post_xml("Sync", &sync_xml(collection, key, window, extra))
        .await;
    let r = sync_response(&res, V);
    assert_eq!(r.collections.len(), 1, "{}", res.xml());
    let col = &r.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    (
        res.body.clone(),
        col.sync_key.0.clone(),
        col.commands.clone().unwrap_or_default(),
        col.more_available,
    )
}

/// The SyncKey after `0` for `collection`, on the client's current node.
async fn first_key(c: &mut EasClient, collection: &str) -> String {
    let res = c.post_xml("Sync", &sync_xml(collection, "0", 0, "")).await;
    sync_response(&res, V).collections[0].sync_key.0.clone()
}

/// Every Add of a full sync of `collection` from SyncKey 0, each request
/// on the node `route(i)` picks: (subjects → ServerId, the last key).
async fn full_sync(
    c: &mut EasClient,
    nodes: &TwoNodes,
    collection: &str,
    window: u32,
    route: impl Fn(usize) -> usize,
) -> (BTreeMap<String, String>, String) {
    c.switch_to(nodes.node(route(0)));
    let mut key = first_key(c, collection).await;
    let mut items = BTreeMap::new();
    for i in 1..1000 {
        c.switch_to(nodes.node(route(i)));
        let (_, k, cmds, more) = sync_once(c, collection, &key, window, "").await;
        for cmd in &cmds {
            assert!(matches!(cmd, ServerCommand::Add { .. }), "{cmd:?}");
            let id = server_id(cmd).to_owned();
            assert!(
                items.insert(subject_of(cmd), id).is_none(),
                "an item sent twice: {cmd:?}"
            );
        }
        key = k;
        if !more {
            return (items, key);
        }
    }
    panic!("the sync of {collection} never ended");
}

const BULK: &str = "twonode-bulk";
const BULK_N: usize = 300;
const BULK_MARKER: &str = "twonode-bulk-v1";

/// FolderSync, the initial sync of 300 messages in windows, server-side
/// changes and device changes, with the device's requests alternating
/// between the two nodes, in bursts, and retried on the other node; then
/// what the device holds is what Dovecot holds, each change applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_sync_spread_over_two_nodes_matches_imap() {
    const USER: &str = "load1151@load.test";
    let mut imap = RawImap::login(USER);
    fill::ensure(&mut imap, BULK, BULK_N, BULK_MARKER, |i| {
        fill::text_message(BULK_MARKER, i)
    });
    imap.cmd(&format!("SUBSCRIBE \"{BULK}\""));
    let (mine, moved) = ("twonode-mine", "twonode-moved");
    fresh_mailbox(&mut imap, mine);
    fresh_mailbox(&mut imap, moved);
    let tag = unique("twonode");
    fill::append_all(
        &mut imap,
        mine,
        (0..5).map(|i| small_message(&format!("{tag} m{i}"))),
    );

    let nodes = TwoNodes::start(Options::default()).await;
    let mut c = nodes.a.client(USER, "TWONODE1", V);

    // FolderSync on A, then its key used on B: nothing new.
    let fs = folders(&mut c).await;
    let id = |name: &str| {
        folder_named(&fs, name)
            .unwrap_or_else(|| panic!("no {name}"))
            .0
    };
    let (bulk, mine_id, moved_id) = (id(BULK), id(mine), id(moved));
    c.switch_to(nodes.b.addr);
    let res = c
        .post_xml(
            "FolderSync",
            &format!(
                "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>{}</SyncKey></FolderSync>",
                fs.sync_key.as_ref().unwrap().0
            ),
        )
        .await;
    let again = folder_sync(&res);
    assert!(
        again.changes.iter().flatten().next().is_none(),
        "B knows A's hierarchy: {}",
        res.xml()
    );

    // The initial sync, each window on the other node; the third one's
    // answer is lost and the device retries it on the node after.
    c.switch_to(nodes.a.addr);
    let mut key = first_key(&mut c, &bulk).await;
    let mut seen = BTreeSet::new();
    for window in 1..100 {
        c.switch_to(nodes.node(window));
        let (body, k, cmds, more) = sync_once(&mut c, &bulk, &key, 50, "").await;
        if window == 3 {
            c.switch_to(nodes.node(window + 1));
            let (again, k2, _, _) = sync_once(&mut c, &bulk, &key, 50, "").await;
            assert!(
                again == body,
                "a Sync retried on the other node answers the same"
            );
            assert_eq!(k2, k);
        }
        assert!(cmds.len() <= 50);
        for cmd in &cmds {
            assert!(matches!(cmd, ServerCommand::Add { .. }), "{cmd:?}");
            assert!(seen.insert(subject_of(cmd)), "sent twice: {cmd:?}");
        }
        key = k;
        if !more {
            break;
        }
    }
    let want: BTreeSet<String> = (0..BULK_N).map(|i| format!("{BULK_MARKER} {i}")).collect();
    assert_eq!(seen, want, "every message exactly once");
    // Nothing changed: empty on both nodes.
    for n in 0..2 {
        c.switch_to(nodes.node(n));
        let (_, k, cmds, more) = sync_once(&mut c, &bulk, &key, 50, "").await;
        assert!(cmds.is_empty() && !more, "{cmds:?}");
        key = k;
    }

    // The small folder: a burst on A (its first windows), then B.
    let (items, mut key) = full_sync(&mut c, &nodes, &mine_id, 2, |i| usize::from(i >= 2)).await;
    assert_eq!(items.len(), 5);
    let m = |i: usize| items[&format!("{tag} m{i}")].clone();

    // Server side: APPEND m5, \Seen on m0, expunge m1; seen by B's Sync.
    fill::append_all(
        &mut imap,
        mine,
        std::iter::once(small_message(&format!("{tag} m5"))),
    );
    imap.cmd(&format!("SELECT \"{mine}\""));
    let uid = |imap: &mut RawImap, i: usize| {
        let u = imap.search_subject(mine, &format!("{tag} m{i}"));
        assert_eq!(u.len(), 1, "m{i}");
        u[0]
    };
    let (u0, u1) = (uid(&mut imap, 0), uid(&mut imap, 1));
    imap.ok(&format!("UID STORE {u0} +FLAGS (\\Seen)"));
    imap.ok(&format!("UID STORE {u1} +FLAGS (\\Deleted)"));
    imap.ok(&format!("UID EXPUNGE {u1}"));
    imap.cmd("UNSELECT");
    c.switch_to(nodes.b.addr);
    let (_, k, changes, more) = sync_once(&mut c, &mine_id, &key, 50, "").await;
    assert!(!more);
    key = k;
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut deleted = Vec::new();
    for ch in &changes {
        match ch {
            ServerCommand::Add { .. } => added.push(subject_of(ch)),
            ServerCommand::Change { server_id, .. } => {
                changed.push((server_id.0.clone(), email_of(ch).and_then(|e| e.read)))
            }
            ServerCommand::Delete { server_id, .. } => deleted.push(server_id.0.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, vec![format!("{tag} m5")], "{changes:?}");
    assert_eq!(changed, vec![(m(0), Some(true))], "{changes:?}");
    assert_eq!(deleted, vec![m(1)], "{changes:?}");
    // The same changes are not sent again by A.
    c.switch_to(nodes.a.addr);
    let (_, k, nothing, _) = sync_once(&mut c, &mine_id, &key, 50, "").await;
    assert!(nothing.is_empty(), "A repeats B's changes: {nothing:?}");
    key = k;

    // Device side on A: m3 read + flagged, m4 deleted; the answer is lost
    // and the same request is retried on B.
    let change = format!(
        "<Commands><Change><ServerId>{}</ServerId><ApplicationData>\
         <email:Read>1</email:Read><email:Flag><email:Status>2</email:Status>\
         <email:FlagType>Follow up</email:FlagType></email:Flag></ApplicationData></Change>\
         <Delete><ServerId>{}</ServerId></Delete></Commands>",
        m(3),
        m(4)
    );
    let (body, k, _, _) = sync_once(&mut c, &mine_id, &key, 50, &change).await;
    c.switch_to(nodes.b.addr);
    let (again, k2, _, _) = sync_once(&mut c, &mine_id, &key, 50, &change).await;
    assert!(again == body, "the retried change answers the same");
    assert_eq!(k2, k);
    key = k;
    // Move m0 on B, then the folders' next Syncs on A.
    let res = c
        .post_xml(
            "MoveItems",
            &format!(
                "<MoveItems xmlns=\"Move:\"><Move><SrcMsgId>{}</SrcMsgId><SrcFldId>{mine_id}</SrcFldId>\
                 <DstFldId>{moved_id}</DstFldId></Move></MoveItems>",
                m(0)
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        find_text(&res.element(), "Status").as_deref(),
        Some("3"),
        "{}",
        res.xml()
    );
    c.switch_to(nodes.a.addr);
    let (_, _, after, _) = sync_once(&mut c, &mine_id, &key, 50, "").await;
    assert!(
        after
            .iter()
            .all(|c| !matches!(c, ServerCommand::Add { .. })),
        "{after:?}"
    );

    // IMAP: each change applied once.
    let flags = |imap: &mut RawImap, folder: &str, i: usize| {
        let uids = imap.search_subject(folder, &format!("{tag} m{i}"));
        uids.len()
    };
    assert_eq!(flags(&mut imap, mine, 4), 0, "m4 left the folder");
    assert_eq!(flags(&mut imap, "Trash", 4), 1, "m4 in Trash once");
    assert_eq!(flags(&mut imap, mine, 0), 0, "m0 moved");
    assert_eq!(flags(&mut imap, moved, 0), 1, "m0 in the target once");
    imap.cmd(&format!("EXAMINE \"{mine}\""));
    let u3 = imap.search_subject(mine, &format!("{tag} m3"));
    assert_eq!(u3.len(), 1);
    let (lines, _) = imap.cmd(&format!("UID FETCH {} (FLAGS)", u3[0]));
    let f = lines.concat();
    assert!(f.contains("\\Seen") && f.contains("\\Flagged"), "{f}");
    imap.cmd("UNSELECT");

    // A fresh full sync on B, alternating, is exactly what Dovecot holds.
    let (now, _) = full_sync(&mut c, &nodes, &mine_id, 1, |i| i + 1).await;
    let want: BTreeSet<String> = [2, 3, 5].iter().map(|i| format!("{tag} m{i}")).collect();
    assert_eq!(now.keys().cloned().collect::<BTreeSet<_>>(), want);
    let (in_moved, _) = full_sync(&mut c, &nodes, &moved_id, 5, |i| i).await;
    assert_eq!(
        in_moved.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{tag} m0")]
    );
    nodes.stop().await;
}

fn ping_body(folder: &str, heartbeat: u32) -> String {
    format!(
        "<Ping xmlns=\"Ping:\"><HeartbeatInterval>{heartbeat}</HeartbeatInterval><Folders>\
         <Folder><Id>{folder}</Id><Class>Email</Class></Folder></Folders></Ping>"
    )
}

fn ping_status(res: &opush_tests::eas::HttpResponse) -> String {
    assert_eq!(res.status, 200, "Ping HTTP status");
    find_text(&res.element(), "Status").unwrap_or_default()
}

/// A Ping parked on A while the device's next requests go to B: B cannot
/// end it (no cross-node superseding); it ends by the change or its
/// heartbeat, and the device's state stays one: A then neither repeats
/// what B sent nor reports it as a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_parked_on_one_node_while_the_device_syncs_on_the_other() {
    const USER: &str = "load1152@load.test";
    let folder = "twonode-ping";
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, folder);
    let tag = unique("twoping");
    fill::append_all(
        &mut imap,
        folder,
        std::iter::once(small_message(&format!("{tag} p0"))),
    );
    let nodes = TwoNodes::start(Options {
        extra_toml: "[devices]\nheartbeat_min_s = 1\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = nodes.a.client(USER, "TWOPING1", V);
    let fs = folders(&mut c).await;
    let id = folder_named(&fs, folder).unwrap().0;
    let (items, key) = full_sync(&mut c, &nodes, &id, 10, |_| 0).await;
    assert_eq!(items.len(), 1);

    // The Ping on A (its own connection), then the device goes to B.
    let heartbeat = 8;
    let mut pinger = nodes.a.client(USER, "TWOPING1", V);
    let body = ping_body(&id, heartbeat);
    let ping = tokio::spawn(async move {
        let t = std::time::Instant::now();
        let res = pinger.post_xml("Ping", &body).await;
        (res, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    fill::append_all(
        &mut imap,
        folder,
        std::iter::once(small_message(&format!("{tag} p1"))),
    );
    c.switch_to(nodes.b.addr);
    let (_, key, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
    assert_eq!(
        cmds.iter().map(subject_of).collect::<Vec<_>>(),
        vec![format!("{tag} p1")]
    );
    let (res, took) = ping.await.unwrap();
    let status = ping_status(&res);
    assert!(
        status == "1" || status == "2",
        "A's Ping ends by its heartbeat or the change: Status {status}"
    );
    assert!(
        took < Duration::from_secs(u64::from(heartbeat) + 5),
        "A's Ping outlived its heartbeat: {took:?}"
    );

    // Another change synced on B (A's Ping is over: nothing on A moved
    // since), then back on A: B's key is good there, nothing is sent
    // again, and a Ping finds nothing to report (A's state is B's, not
    // its cached one).
    fill::append_all(
        &mut imap,
        folder,
        std::iter::once(small_message(&format!("{tag} p2"))),
    );
    c.switch_to(nodes.b.addr);
    let (_, key, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
    assert_eq!(
        cmds.iter().map(subject_of).collect::<Vec<_>>(),
        vec![format!("{tag} p2")]
    );
    c.switch_to(nodes.a.addr);
    let (_, _key, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
    assert!(cmds.is_empty(), "A repeats what B sent: {cmds:?}");
    let res = c.post_xml("Ping", &ping_body(&id, 2)).await;
    assert_eq!(ping_status(&res), "1", "nothing new: {}", res.xml());
    nodes.stop().await;
}

/// Two devices of one user, one on each node, see every message once;
/// a SendMail whose answer was lost is retried on the other node with
/// the same ClientId: one submission (the recipient's INBOX holds it
/// once) and the retry answers Status 118.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_and_a_sendmail_retried_on_the_other_node() {
    require(POSTFIX_SMTP);
    const USER: &str = "load1153@load.test";
    const RCPT: &str = "load1154@load.test";
    let folder = "twonode-two";
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, folder);
    let tag = unique("twodev");
    fill::append_all(
        &mut imap,
        folder,
        (0..20).map(|i| small_message(&format!("{tag} d{i}"))),
    );
    let nodes = TwoNodes::start(Options::default()).await;
    let mut one = nodes.a.client(USER, "TWODEV1", V);
    let mut two = nodes.b.client(USER, "TWODEV2", V);
    let id1 = folder_named(&folders(&mut one).await, folder).unwrap().0;
    let id2 = folder_named(&folders(&mut two).await, folder).unwrap().0;
    let (k1, k2) = (
        first_key(&mut one, &id1).await,
        first_key(&mut two, &id2).await,
    );
    // Interleaved windows, each device on its own node.
    let (mut k1, mut k2) = (k1, k2);
    let (mut s1, mut s2) = (BTreeSet::new(), BTreeSet::new());
    let mut ids1 = BTreeMap::new();
    let (mut more1, mut more2) = (true, true);
    while more1 || more2 {
        if more1 {
            let (_, k, cmds, m) = sync_once(&mut one, &id1, &k1, 3, "").await;
            for c in &cmds {
                assert!(s1.insert(subject_of(c)), "twice: {c:?}");
                ids1.insert(subject_of(c), server_id(c).to_owned());
            }
            (k1, more1) = (k, m);
        }
        if more2 {
            let (_, k, cmds, m) = sync_once(&mut two, &id2, &k2, 4, "").await;
            for c in &cmds {
                assert!(s2.insert(subject_of(c)), "twice: {c:?}");
            }
            (k2, more2) = (k, m);
        }
    }
    let want: BTreeSet<String> = (0..20).map(|i| format!("{tag} d{i}")).collect();
    assert_eq!(s1, want);
    assert_eq!(s2, want);
    // Device one deletes d0 on A; device two sees that on B, once.
    let d0 = ids1[&format!("{tag} d0")].clone();
    let del = format!("<Commands><Delete><ServerId>{d0}</ServerId></Delete></Commands>");
    let (_, k, _, _) = sync_once(&mut one, &id1, &k1, 10, &del).await;
    k1 = k;
    let (_, _, cmds, _) = sync_once(&mut two, &id2, &k2, 10, "").await;
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    assert!(matches!(cmds[0], ServerCommand::Delete { .. }), "{cmds:?}");
    // On B: B now holds device one's state too.
    one.switch_to(nodes.b.addr);
    let (_, _, cmds, _) = sync_once(&mut one, &id1, &k1, 10, "").await;
    assert!(
        cmds.is_empty(),
        "the deleting device is not told again: {cmds:?}"
    );
    one.switch_to(nodes.a.addr);
    assert_eq!(imap.search_subject("Trash", &format!("{tag} d0")).len(), 1);
    assert!(imap.search_subject(folder, &format!("{tag} d0")).is_empty());

    // SendMail from device one on A, retried on B.
    let marker = unique("twosend");
    let cid = unique("cid");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nsent once\r\n");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(cid.clone()),
            mime: mime.into_bytes(),
            ..ComposeRequest::default()
        })
        .to_element(ProtocolVersion::V14_1),
    );
    let res = one.post("SendMail", &body).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert!(res.body.is_empty(), "success has no body: {}", res.xml());
    one.switch_to(nodes.b.addr);
    let res = one.post("SendMail", &body).await;
    assert_eq!(res.status, 200);
    assert!(!res.body.is_empty(), "the retry on B was sent again");
    assert_eq!(
        find_text(&res.element(), "Status").as_deref(),
        Some("118"),
        "the retry on B is known as sent: {}",
        res.xml()
    );
    let mut rcpt = RawImap::login(RCPT);
    assert_eq!(rcpt.wait_for_subject("INBOX", &marker).len(), 1);
    // A second copy would have arrived by now (Postfix delivers in
    // milliseconds on loopback); check again after a pause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rcpt.search_subject("INBOX", &marker).len(),
        1,
        "one submission"
    );
    nodes.stop().await;
}

/// An empty Sync repeats the device's last full Sync request ([MS-ASCMD]
/// 2.2.1.21), whichever node that request reached: after a full Sync of
/// folder Y on B, an empty Sync on A syncs Y, not the folder A last saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_sync_repeats_the_request_the_other_node_received() {
    const USER: &str = "load1156@load.test";
    let (x, y) = ("twonode-x", "twonode-y");
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, x);
    fresh_mailbox(&mut imap, y);
    let tag = unique("twoempty");
    fill::append_all(
        &mut imap,
        x,
        std::iter::once(small_message(&format!("{tag} x0"))),
    );
    fill::append_all(
        &mut imap,
        y,
        std::iter::once(small_message(&format!("{tag} y0"))),
    );
    let nodes = TwoNodes::start(Options::default()).await;
    let mut c = nodes.a.client(USER, "TWOEMPTY1", V);
    let fs = folders(&mut c).await;
    let (xid, yid) = (
        folder_named(&fs, x).unwrap().0,
        folder_named(&fs, y).unwrap().0,
    );
    // Both folders synced on A; A's last full request names X.
    let (_, ky) = full_sync(&mut c, &nodes, &yid, 10, |_| 0).await;
    let (_, kx) = full_sync(&mut c, &nodes, &xid, 10, |_| 0).await;
    // Their last keys confirmed, X last.
    let (_, ky, cmds, _) = sync_once(&mut c, &yid, &ky, 10, "").await;
    assert!(cmds.is_empty());
    let (_, _, cmds, _) = sync_once(&mut c, &xid, &kx, 10, "").await;
    assert!(cmds.is_empty());
    // The device's next full Sync names Y and goes to B: nothing new, no
    // sync state changes; only the remembered request does.
    let store = nodes.keyspace.open().await;
    let device = opush_storage::DeviceKey::new(USER, "TWOEMPTY1").unwrap();
    let head = store.head(&device).await.unwrap();
    c.switch_to(nodes.b.addr);
    let (_, ky, cmds, _) = sync_once(&mut c, &yid, &ky, 10, "").await;
    assert!(cmds.is_empty());
    assert!(
        store.head(&device).await.unwrap() > head,
        "B's change of the remembered request moves the head, so A re-reads it"
    );
    // A new message in Y; the device's empty Sync reaches A.
    fill::append_all(
        &mut imap,
        y,
        std::iter::once(small_message(&format!("{tag} y1"))),
    );
    c.switch_to(nodes.a.addr);
    let res = c.post("Sync", b"").await;
    let r = sync_response(&res, V);
    let ids: Vec<&str> = r
        .collections
        .iter()
        .map(|c| c.collection_id.0.as_str())
        .collect();
    assert_eq!(
        ids,
        vec![yid.as_str()],
        "the last request named Y: {}",
        res.xml()
    );
    let cmds = r.collections[0].commands.clone().unwrap_or_default();
    assert_eq!(
        cmds.iter().map(subject_of).collect::<Vec<_>>(),
        vec![format!("{tag} y1")]
    );
    assert_ne!(r.collections[0].sync_key.0, ky);
    nodes.stop().await;
}

/// The same Sync, with device changes, reaching both nodes at once (a
/// load balancer retrying a request that is still running): one request
/// holds the device's lease, the other answers "retry later" or, if it
/// came after, the winner's answer; the device goes on from the key it
/// got, nothing is sent to it twice, and the changes reached Dovecot once:
/// one copy of the deleted message in Trash. (Without the lease both
/// nodes carried out the changes before their appends raced, and two
/// Dovecot sessions MOVEing the same UID at once both copied it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sync_on_both_nodes_at_once() {
    const USER: &str = "load1181@load.test";
    let folder = "twonode-race";
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, folder);
    let tag = unique("tworace");
    fill::append_all(
        &mut imap,
        folder,
        (0..6).map(|i| small_message(&format!("{tag} r{i}"))),
    );
    let nodes = TwoNodes::start(Options::default()).await;
    let mut c = nodes.a.client(USER, "TWORACE1", V);
    let id = folder_named(&folders(&mut c).await, folder).unwrap().0;
    let (items, mut key) = full_sync(&mut c, &nodes, &id, 10, |i| i).await;
    let r = |i: usize| items[&format!("{tag} r{i}")].clone();
    let mut on_a = nodes.a.client(USER, "TWORACE1", V);
    let mut on_b = nodes.b.client(USER, "TWORACE1", V);
    // Three races, B's copy leaving 0, 15 and 40 ms after A's: r1 deleted
    // (and r0 changed), then r2, then r3.
    for (round, delay_ms) in [(1usize, 0u64), (2, 15), (3, 40)] {
        let change = if round == 1 {
            format!(
                "<Change><ServerId>{}</ServerId><ApplicationData>\
                 <email:Read>1</email:Read><email:Flag><email:Status>2</email:Status>\
                 <email:FlagType>Follow up</email:FlagType></email:Flag></ApplicationData></Change>",
                r(0)
            )
        } else {
            String::new()
        };
        let commands = format!(
            "<Commands>{change}<Delete><ServerId>{}</ServerId></Delete></Commands>",
            r(round)
        );
        let req = sync_xml(&id, &key, 10, &commands);
        let (ra, rb) = tokio::join!(on_a.post_xml("Sync", &req), async {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            on_b.post_xml("Sync", &req).await
        });
        // Each answer: the collection's (Status 1) or retry later (503, or
        // 14.0+'s Status 111).
        let ok = |res: &opush_tests::eas::HttpResponse| -> Option<String> {
            if res.status == 503 {
                return None;
            }
            let r = sync_response(res, V);
            if r.collections.is_empty() {
                assert_eq!(r.status.map(|s| s.code()), Some(111), "{}", res.xml());
                return None;
            }
            assert_eq!(
                r.collections[0].status.map(|s| s.code()),
                Some(1),
                "{}",
                res.xml()
            );
            Some(r.collections[0].sync_key.0.clone())
        };
        let (ka, kb) = (ok(&ra), ok(&rb));
        assert!(ka.is_some() || kb.is_some(), "one of the two is served");
        if let (Some(_), Some(_)) = (&ka, &kb) {
            assert!(ra.body == rb.body, "both served: the same answer");
        }
        key = match ka.or(kb) {
            Some(k) => k,
            None => unreachable!(),
        };
        // The device goes on (B) from the key it got; nothing is sent twice.
        c.switch_to(nodes.b.addr);
        let (_, k, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
        assert!(cmds.is_empty(), "{cmds:?}");
        key = k;
        // Dovecot: the deleted message in Trash once.
        let deleted = format!("{tag} r{round}");
        assert!(imap.search_subject(folder, &deleted).is_empty());
        assert_eq!(
            imap.search_subject("Trash", &deleted).len(),
            1,
            "the delete reached Dovecot once (B +{delay_ms} ms)"
        );
    }
    // r0 read and flagged.
    imap.cmd(&format!("EXAMINE \"{folder}\""));
    let u0 = imap.search_subject(folder, &format!("{tag} r0"));
    let (lines, _) = imap.cmd(&format!("UID FETCH {} (FLAGS)", u0[0]));
    let f = lines.concat();
    assert!(f.contains("\\Seen") && f.contains("\\Flagged"), "{f}");
    imap.cmd("UNSELECT");
    // A fresh full sync over both nodes: r0, r4, r5, once each.
    let (now, _) = full_sync(&mut c, &nodes, &id, 1, |i| i).await;
    let want: BTreeSet<String> = [0, 4, 5].iter().map(|i| format!("{tag} r{i}")).collect();
    assert_eq!(now.keys().cloned().collect::<BTreeSet<_>>(), want);
    nodes.stop().await;
}

/// The same SendMail (same ClientId) reaching both nodes at once: one
/// node holds the device's lease while the relay takes the message, the
/// other answers "retry later" without sending; retried, it finds the
/// ClientId sent (Status 118). One message in the recipient's INBOX, one
/// copy in Sent. (Without the lease both nodes submitted it: the
/// ClientId is recorded only once the relay accepted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sendmail_on_both_nodes_at_once() {
    require(POSTFIX_SMTP);
    const USER: &str = "load1182@load.test";
    const RCPT: &str = "load1183@load.test";
    let nodes = TwoNodes::start(Options::default()).await;
    let mut on_a = nodes.a.client(USER, "TWORACESEND1", V);
    let mut on_b = nodes.b.client(USER, "TWORACESEND1", V);
    // The device is known on both nodes before the race.
    folders(&mut on_a).await;
    let mut rcpt = RawImap::login(RCPT);
    let mut sender = RawImap::login(USER);
    // B's copy leaves 0-150 ms after A's: at the same instant, and while
    // A's is being submitted (the message is a few MiB, so the relay
    // takes a while).
    for delay_ms in [0u64, 20, 60, 150] {
        let marker = unique("tworacesend");
        let cid = unique("cid");
        let filler = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n"
            .repeat(40_000);
        let mime = format!(
            "To: {RCPT}\r\nSubject: {marker}\r\nContent-Type: text/plain\r\n\r\nsent once\r\n{filler}"
        );
        let body = encode_to_vec(
            &SendMailRequest(ComposeRequest {
                client_id: Some(cid.clone()),
                mime: mime.into_bytes(),
                save_in_sent_items: true,
                ..ComposeRequest::default()
            })
            .to_element(ProtocolVersion::V14_1),
        );
        let started = std::time::Instant::now();
        let (ra, rb) = tokio::join!(on_a.post("SendMail", &body), async {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            on_b.post("SendMail", &body).await
        });
        eprintln!(
            "race at +{delay_ms} ms: both answered in {:?}",
            started.elapsed()
        );
        // Sent (200, no body), retry later (503, or Status 111), or already
        // sent (Status 118).
        let status = |res: &opush_tests::eas::HttpResponse| -> &'static str {
            if res.status == 503 {
                return "retry";
            }
            assert_eq!(res.status, 200, "{:?}", res.body);
            if res.body.is_empty() {
                return "sent";
            }
            match find_text(&res.element(), "Status").as_deref() {
                Some("111") => "retry",
                Some("118") => "known",
                other => panic!("unexpected SendMail answer {other:?}: {}", res.xml()),
            }
        };
        let (sa, sb) = (status(&ra), status(&rb));
        let mut answers = [sa, sb];
        answers.sort_unstable();
        assert!(
            answers == ["retry", "sent"] || answers == ["known", "sent"],
            "one node sends, the other does not (B +{delay_ms} ms): A {sa}, B {sb}"
        );
        // The loser retries on its node: the ClientId is known as sent.
        let loser = if sa == "sent" { &mut on_b } else { &mut on_a };
        let res = loser.post("SendMail", &body).await;
        assert_eq!(res.status, 200);
        assert_eq!(
            find_text(&res.element(), "Status").as_deref(),
            Some("118"),
            "the retry is known as sent: {}",
            res.xml()
        );
        assert_eq!(rcpt.wait_for_subject("INBOX", &marker).len(), 1);
        assert_eq!(sender.wait_for_subject("Sent", &marker).len(), 1);
        // A second copy would have arrived by now (Postfix delivers in
        // milliseconds on loopback); check again after a pause.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            rcpt.search_subject("INBOX", &marker).len(),
            1,
            "one submission (B +{delay_ms} ms)"
        );
        assert_eq!(
            sender.search_subject("Sent", &marker).len(),
            1,
            "one copy in Sent (B +{delay_ms} ms)"
        );
    }
    nodes.stop().await;
}

/// A relay in front of Postfix that holds the end of the first message's
/// DATA (`\r\n.\r\n`) until `release` is notified, having said so on
/// `held`: the sending node then waits in its submission as long as the
/// test wants. Later connections pass through.
struct HeldRelay {
    addr: SocketAddr,
    held: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

impl HeldRelay {
    async fn start() -> HeldRelay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = require(POSTFIX_SMTP);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::sync::Arc::new(tokio::sync::Notify::new());
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let (h, r) = (held.clone(), release.clone());
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let (down, _) = listener.accept().await.unwrap();
                let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                });
                let hold = std::mem::take(&mut first);
                let (h, r) = (h.clone(), r.clone());
                tokio::spawn(async move {
                    // The last bytes already passed on: the end of DATA may
                    // straddle two reads.
                    let mut tail: Vec<u8> = Vec::new();
                    let mut waiting = hold;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match down_r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        if waiting {
                            let mut window = std::mem::take(&mut tail);
                            let carry = window.len();
                            window.extend_from_slice(chunk);
                            if let Some(pos) = window.windows(5).position(|w| w == b"\r\n.\r\n") {
                                // What comes before the end of DATA goes on;
                                // the end waits for the release.
                                let split = pos.saturating_sub(carry);
                                if up_w.write_all(&chunk[..split]).await.is_err() {
                                    break;
                                }
                                waiting = false;
                                let released = r.notified();
                                h.notify_one();
                                released.await;
                                if up_w.write_all(&chunk[split..]).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            tail = window[window.len().saturating_sub(4)..].to_vec();
                        }
                        if up_w.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = up_w.shutdown().await;
                });
            }
        });
        HeldRelay {
            addr,
            held,
            release,
        }
    }
}

/// A leased SendMail whose `MailSent` append meets a head another node
/// moved meanwhile: the device's Sync on node B brings new mail (no
/// lease needed) while node A holds the device's lease and waits for the
/// relay's answer to the end of DATA (held). A's append then conflicts;
/// it reads the state again and appends after B's events, so its
/// ClientId is recorded: the device's retry (on either node) is answered
/// Status 118, the message delivered once and in Sent once, and B's Sync
/// key still good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sendmail_whose_record_meets_the_other_nodes_append_is_recorded_once() {
    const USER: &str = "load1234@load.test";
    const RCPT: &str = "load1235@load.test";
    let folder = "twonode-mailsent";
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, folder);
    let tag = unique("twomailsent");
    fill::append_all(
        &mut imap,
        folder,
        std::iter::once(small_message(&format!("{tag} m0"))),
    );
    let relay = HeldRelay::start().await;
    let nodes = TwoNodes::start(Options {
        extra_toml: format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\n",
            relay.addr.port()
        ),
        ..Options::default()
    })
    .await;
    let mut c = nodes.a.client(USER, "TWOMAILSENT1", V);
    let id = folder_named(&folders(&mut c).await, folder).unwrap().0;
    let (items, key) = full_sync(&mut c, &nodes, &id, 10, |_| 0).await;
    assert_eq!(items.len(), 1);
    let mut on_b = nodes.b.client(USER, "TWOMAILSENT1", V);

    let marker = unique("twomailsent-send");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(unique("cid")),
            mime: format!(
                "To: {RCPT}\r\nSubject: {marker}\r\nContent-Type: text/plain\r\n\r\nrecorded once\r\n"
            )
            .into_bytes(),
            save_in_sent_items: true,
            ..ComposeRequest::default()
        })
        .to_element(ProtocolVersion::V14_1),
    );
    let held = relay.held.notified();
    let (sent, new_key) = tokio::join!(c.post("SendMail", &body), async {
        // A is in the relay's DATA, holding the lease: new mail, and the
        // device's Sync on B appends its events under the device's head.
        held.await;
        fill::append_all(
            &mut imap,
            folder,
            std::iter::once(small_message(&format!("{tag} m1"))),
        );
        let (_, k, cmds, _) = sync_once(&mut on_b, &id, &key, 10, "").await;
        assert_eq!(cmds.len(), 1, "B brought the new mail: {cmds:?}");
        assert_eq!(subject_of(&cmds[0]), format!("{tag} m1"));
        relay.release.notify_one();
        k
    });
    assert_eq!(sent.status, 200, "{sent:?}");
    assert!(sent.body.is_empty(), "sent: {}", sent.xml());
    // The device retries (its answer lost, say) on either node: known as
    // sent, not sent again.
    for node in [nodes.a.addr, nodes.b.addr] {
        on_b.switch_to(node);
        let res = on_b.post("SendMail", &body).await;
        assert_eq!(res.status, 200);
        assert!(
            !res.body.is_empty(),
            "the retry was sent again: its ClientId was not recorded"
        );
        assert_eq!(
            find_text(&res.element(), "Status").as_deref(),
            Some("118"),
            "the retry is known as sent: {}",
            res.xml()
        );
    }
    let mut rcpt = RawImap::login(RCPT);
    assert_eq!(rcpt.wait_for_subject("INBOX", &marker).len(), 1);
    assert_eq!(imap.wait_for_subject("Sent", &marker).len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rcpt.search_subject("INBOX", &marker).len(),
        1,
        "delivered once"
    );
    assert_eq!(
        imap.search_subject("Sent", &marker).len(),
        1,
        "one copy in Sent"
    );
    // B's key goes on (A appended after B's events, not over them).
    on_b.switch_to(nodes.b.addr);
    let (_, _, cmds, _) = sync_once(&mut on_b, &id, &new_key, 10, "").await;
    assert!(cmds.is_empty(), "{cmds:?}");
    nodes.stop().await;
}

/// While another process holds the device's lease (taken here on the
/// store, as a node in the middle of a request would): requests without
/// backend effects are served as usual and take none (a no-change Sync,
/// FolderSync, a Ping), and a Sync with a Delete answers "retry later"
/// having done nothing in Dovecot; once the lease is released the same
/// Sync is served and the delete done once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_refuses_only_requests_with_backend_effects() {
    const USER: &str = "load1184@load.test";
    let folder = "twonode-held";
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, folder);
    let tag = unique("twoheld");
    fill::append_all(
        &mut imap,
        folder,
        (0..2).map(|i| small_message(&format!("{tag} h{i}"))),
    );
    let nodes = TwoNodes::start(Options {
        extra_toml: "[devices]\nheartbeat_min_s = 1\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = nodes.a.client(USER, "TWOHELD1", V);
    let id = folder_named(&folders(&mut c).await, folder).unwrap().0;
    let (items, key) = full_sync(&mut c, &nodes, &id, 10, |i| i).await;
    let h1 = items[&format!("{tag} h1")].clone();
    let store = nodes.keyspace.open().await;
    let device = opush_storage::DeviceKey::new(USER, "TWOHELD1").unwrap();
    let elsewhere = "another-node:1";
    assert!(store
        .take_lease(&device, elsewhere, Duration::from_secs(120))
        .await
        .unwrap());
    // Served on both nodes: they take no lease.
    for node in [nodes.a.addr, nodes.b.addr] {
        c.switch_to(node);
        let (_, _, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
        assert!(cmds.is_empty(), "{cmds:?}");
        folders(&mut c).await;
        let res = c.post_xml("Ping", &ping_body(&id, 1)).await;
        assert_eq!(ping_status(&res), "1", "{}", res.xml());
    }
    // A Sync with a Delete: retry later, nothing done.
    let del = format!("<Commands><Delete><ServerId>{h1}</ServerId></Delete></Commands>");
    let req = sync_xml(&id, &key, 10, &del);
    for node in [nodes.a.addr, nodes.b.addr] {
        c.switch_to(node);
        let res = c.post_xml("Sync", &req).await;
        if res.status != 503 {
            let r = sync_response(&res, V);
            assert!(r.collections.is_empty(), "{}", res.xml());
            assert_eq!(r.status.map(|s| s.code()), Some(111), "{}", res.xml());
        }
        assert_eq!(
            imap.search_subject(folder, &format!("{tag} h1")).len(),
            1,
            "nothing done while the lease is held elsewhere"
        );
        assert!(imap
            .search_subject("Trash", &format!("{tag} h1"))
            .is_empty());
    }
    assert!(
        !store.release_lease(&device, "some-node:9").await.unwrap(),
        "not its holder"
    );
    assert!(store.release_lease(&device, elsewhere).await.unwrap());
    // Released: the same Sync is served, the delete done once.
    let (_, _, _, _) = sync_once(&mut c, &id, &key, 10, &del).await;
    assert!(imap.search_subject(folder, &format!("{tag} h1")).is_empty());
    assert_eq!(imap.search_subject("Trash", &format!("{tag} h1")).len(), 1);
    assert!(
        store
            .take_lease(&device, elsewhere, Duration::from_secs(5))
            .await
            .unwrap(),
        "the node released its lease after the append"
    );
    assert!(store.release_lease(&device, elsewhere).await.unwrap());
    nodes.stop().await;
}

const PROVISION_0: &str = "<Provision xmlns=\"Provision:\"><Policies><Policy>\
    <PolicyType>MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>";

fn provision_ack(key: &str) -> String {
    format!(
        "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
         <PolicyKey>{key}</PolicyKey><Status>1</Status></Policy></Policies></Provision>"
    )
}

fn refused(res: &opush_tests::eas::HttpResponse, status: &str) -> bool {
    res.status == 449
        || (res.status == 200 && find_text(&res.element(), "Status").as_deref() == Some(status))
}

/// Provision on A, then requests on B with the key A gave; a remote wipe
/// recorded by a third process on the store (as `opush device wipe` does
/// with Cassandra) reaches the device on B, and its acknowledgement on B
/// is known to A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_on_one_node_and_a_wipe_while_on_the_other() {
    const USER: &str = "load1155@load.test";
    let nodes = TwoNodes::start(Options {
        require_provisioning: true,
        ..Options::default()
    })
    .await;
    let mut c = nodes.a.client(USER, "TWOPROV1", V);
    let fs0 = "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>";
    assert!(refused(&c.post_xml("FolderSync", fs0).await, "142"));
    let res = c.post_xml("Provision", PROVISION_0).await;
    let temp = find_text(&res.element(), "PolicyKey").expect("temporary key");
    c.policy_key = Some(temp.clone());
    // The acknowledgement goes to B.
    c.switch_to(nodes.b.addr);
    let res = c.post_xml("Provision", &provision_ack(&temp)).await;
    assert_eq!(res.status, 200);
    let key = find_text(&res.element(), "PolicyKey").expect("final key");
    assert_ne!(key, temp);
    c.policy_key = Some(key.clone());
    // Served on both nodes with B's key; the temporary key on neither.
    for n in [0, 1, 0] {
        c.switch_to(nodes.node(n));
        folder_sync(&c.post_xml("FolderSync", fs0).await);
    }
    for n in [0, 1] {
        c.switch_to(nodes.node(n));
        c.policy_key = Some(temp.clone());
        assert!(
            refused(&c.post_xml("FolderSync", fs0).await, "144"),
            "node {n}"
        );
        c.policy_key = Some(key.clone());
    }

    // The wipe, recorded by a third process while the device is on B.
    c.switch_to(nodes.b.addr);
    folder_sync(&c.post_xml("FolderSync", fs0).await);
    let store = std::sync::Arc::new(nodes.keyspace.open().await);
    let admin = opush_server::session::Sessions::new(store, 0, 16);
    let outcome = opush_server::admin::request_wipe(&admin, USER, "TWOPROV1")
        .await
        .unwrap();
    assert_eq!(outcome, opush_server::admin::WipeOutcome::Requested);
    assert!(
        refused(&c.post_xml("FolderSync", fs0).await, "140"),
        "B tells the device about the wipe"
    );
    c.switch_to(nodes.a.addr);
    assert!(
        refused(&c.post_xml("FolderSync", fs0).await, "140"),
        "so does A"
    );
    c.switch_to(nodes.b.addr);
    let res = c.post_xml("Provision", PROVISION_0).await;
    assert!(res.xml().contains("RemoteWipe"), "{}", res.xml());
    let res = c
        .post_xml(
            "Provision",
            "<Provision xmlns=\"Provision:\"><RemoteWipe><Status>1</Status></RemoteWipe></Provision>",
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.xml());
    // A knows the wipe was acknowledged: a second one is recorded anew.
    let admin_a = opush_server::session::Sessions::new(
        std::sync::Arc::new(nodes.keyspace.open().await),
        0,
        16,
    );
    assert_eq!(
        opush_server::admin::request_wipe(&admin_a, USER, "TWOPROV1")
            .await
            .unwrap(),
        opush_server::admin::WipeOutcome::RequestedAgain
    );
    nodes.stop().await;
}

/// A device's no-change requests on A (FolderSync with its key,
/// GetItemEstimate: their trace events deferred in A's memory) while B
/// appends the device's Sync of new mail: A no longer drops them when it
/// finds the head moved (on the device's next request there, or at its
/// stop, where its append meets B's). They are appended after B's events
/// behind an `Event::Displaced` marker (engine format 9), and the
/// device's exported log holds every request it made, each decision
/// re-run by replay on the state it was decided on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_requests_deferred_on_one_node_are_kept_when_the_other_appends() {
    const USER: &str = "load1198@load.test";
    const DEVICE: &str = "TWODISPLACED";
    let folder = "twonode-displaced";
    let mut imap = RawImap::login(USER);
    fresh_mailbox(&mut imap, folder);
    let tag = unique("twodisp");
    fill::append_all(
        &mut imap,
        folder,
        (0..2).map(|i| small_message(&format!("{tag} {i}"))),
    );
    let nodes = TwoNodes::start(Options::default()).await;
    let mut c = nodes.a.client(USER, DEVICE, V);
    let mut requests = 0;
    let fs = folders(&mut c).await;
    requests += 1;
    let fkey = fs.sync_key.clone().unwrap().0;
    let id = folder_named(&fs, folder).unwrap().0;
    let (items, mut key) = full_sync(&mut c, &nodes, &id, 10, |_| 0).await;
    assert_eq!(items.len(), 2);
    requests += 2;
    // The key confirmed: nothing new.
    let (_, k, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
    requests += 1;
    assert!(cmds.is_empty());
    key = k;
    let folder_sync_again =
        format!("<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>{fkey}</SyncKey></FolderSync>");
    let estimate = |key: &str| {
        format!(
            "<GetItemEstimate xmlns=\"GetItemEstimate:\" xmlns:airsync=\"AirSync:\"><Collections>\
             <Collection><airsync:SyncKey>{key}</airsync:SyncKey><CollectionId>{id}</CollectionId>\
             <airsync:Options><airsync:FilterType>0</airsync:FilterType></airsync:Options>\
             </Collection></Collections></GetItemEstimate>"
        )
    };
    let store = nodes.keyspace.open().await;
    let device = opush_storage::DeviceKey::new(USER, DEVICE).unwrap();
    // The last Sync changed the remembered request: A's next request is
    // appended at once (so the other node re-reads that row); the two
    // after it are deferred, the head does not move.
    let res = c.post_xml("FolderSync", &folder_sync_again).await;
    assert!(folder_sync(&res).changes.unwrap_or_default().is_empty());
    requests += 1;
    let head = store.head(&device).await.unwrap();
    let res = c.post_xml("FolderSync", &folder_sync_again).await;
    assert!(folder_sync(&res).changes.unwrap_or_default().is_empty());
    let res = c.post_xml("GetItemEstimate", &estimate(&key)).await;
    assert_eq!(res.status, 200);
    requests += 2;
    assert_eq!(store.head(&device).await.unwrap(), head, "deferred on A");
    // New mail; the device's Sync on B appends it.
    fill::append_all(
        &mut imap,
        folder,
        std::iter::once(small_message(&format!("{tag} 2"))),
    );
    c.switch_to(nodes.b.addr);
    let (_, k, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
    requests += 1;
    assert_eq!(cmds.len(), 1);
    key = k;
    assert!(store.head(&device).await.unwrap() > head);
    // Back on A: it finds the head moved (its next append carries its
    // deferred events after B's), then defers one more on B's head.
    c.switch_to(nodes.a.addr);
    let res = c.post_xml("FolderSync", &folder_sync_again).await;
    assert!(folder_sync(&res).changes.unwrap_or_default().is_empty());
    requests += 1;
    // B appends again (the key confirmed, an estimate, a Sync finding
    // another new message) …
    c.switch_to(nodes.b.addr);
    fill::append_all(
        &mut imap,
        folder,
        std::iter::once(small_message(&format!("{tag} 3"))),
    );
    let (_, _, cmds, _) = sync_once(&mut c, &id, &key, 10, "").await;
    requests += 1;
    assert_eq!(cmds.len(), 1);
    // … and A's stop meets B's events: its deferred ones follow them.
    let before_stop = store.head(&device).await.unwrap();
    nodes.a.stop().await;
    assert!(
        store.head(&device).await.unwrap() > before_stop,
        "A appended its deferred events at its stop"
    );
    nodes.b.stop().await;

    let bundle = opush_replay::export(&store, USER, DEVICE, None, None)
        .await
        .unwrap();
    let displaced = bundle
        .decoded()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, opush_engine::Event::Displaced { .. }))
        .count();
    // A's two groups (found on its FolderSync, then at its stop), and B's
    // last ResponseSent (deferred on B, appended at B's stop after A's).
    assert!(
        displaced >= 2,
        "{}",
        opush_replay::show(&bundle, None).unwrap()
    );
    let report = opush_replay::run(&bundle)
        .unwrap()
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(report.requests, requests, "every request in the log");
    assert_eq!(report.unchecked, 0);
    nodes.keyspace.remove().await;
}
