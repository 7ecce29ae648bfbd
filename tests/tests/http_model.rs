//! A seeded random session of one user's mail, checked against a model.
//!
//! Three devices of one user (EAS 12.1, 14.1 and 16.1) and a second IMAP
//! client acting as "the server side" (another mail program, a filter, an
//! administrator) take turns at random: the server side APPENDs, toggles
//! `\Seen`, expunges and MOVEs; the devices sync in small windows (so
//! server changes land between the windows of one sync), mark read, delete
//! (DeletesAsMoves: to Trash) and MoveItems, and now and then lose an
//! answer and send the same request again, as phones do. The steps run
//! one after the other, so a model (the oracle below) knows at each step
//! what the mailbox must hold; every device-side change is checked to
//! take effect exactly once or to be refused for a reason the model
//! allows (the message is gone, or — server wins, the default `Conflict`
//! — the server changed it since the device last saw it).
//!
//! At the end every device syncs every folder to the end, and then:
//! IMAP holds exactly what the model says (no lost change, no change made
//! twice, no message lost or duplicated), and each device shows exactly
//! what IMAP holds (no missing, stale or duplicated item, the same read
//! state). A repeated request must get the answer the lost one carried.
//!
//! `OPUSH_MODEL_SEEDS` (default `1,2,3`) and `OPUSH_MODEL_STEPS` (default
//! 150) give longer runs. The second test runs the same sessions on two
//! opush processes sharing one Cassandra keyspace, each device request
//! (and the repeat of a lost one) going to either at random. Reserved
//! Dovecot users: load1261–load1275 (one per seed, by seed modulo 15) and
//! load1276–load1285 (the two-node test). Needs the stack's Dovecot and,
//! for the second test, Cassandra.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncResponse};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::move_items::MoveItemsResponse;
use opush_protocol::commands::sync::{CommandResponse, ServerCommand, SyncResponse};
use opush_protocol::version::ProtocolVersion;
use opush_tests::eas::{wbxml_of, EasClient, HttpResponse};
use opush_tests::{require, RawImap, DOVECOT_IMAP};

/// The folders the session uses (IMAP names; special-use Archive and Trash
/// exist for every stack user).
const FOLDERS: [&str; 3] = ["INBOX", "Archive", "Trash"];

// ---------------------------------------------------------------------------
// The model

/// One message as the model knows it: where it is, its read state, and its
/// identity there (a MOVE makes a new message in IMAP: a new UID, so a new
/// ServerId; a device's change to the old one can no longer apply).
#[derive(Debug, Clone)]
struct Known {
    folder: &'static str,
    marks: Marks,
    incarnation: u64,
    /// Changes of `marks` made by anyone but the device that holds a
    /// version: a device whose version is older may get a conflict.
    flag_changes: u64,
}

/// What a message's flags say, as far as a device shows them: read
/// (`\\Seen`) and flagged for follow-up (`\\Flagged`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Marks {
    read: bool,
    flagged: bool,
}

#[derive(Debug, Default)]
struct Model {
    by_subject: BTreeMap<String, Known>,
    next_incarnation: u64,
}

impl Model {
    fn incarnation(&mut self) -> u64 {
        self.next_incarnation += 1;
        self.next_incarnation
    }

    fn add(&mut self, subject: &str, folder: &'static str) {
        let incarnation = self.incarnation();
        self.by_subject.insert(
            subject.to_owned(),
            Known {
                folder,
                marks: Marks::default(),
                incarnation,
                flag_changes: 0,
            },
        );
    }

    fn move_to(&mut self, subject: &str, folder: &'static str) {
        let incarnation = self.incarnation();
        let k = self.by_subject.get_mut(subject).unwrap();
        k.folder = folder;
        k.incarnation = incarnation;
    }

    /// The message a device's item stands for, when it still exists as the
    /// device knows it.
    fn current(&self, item: &Item) -> Option<&Known> {
        self.by_subject
            .get(&item.subject)
            .filter(|k| Some(k.incarnation) == item.incarnation)
    }

    /// What `folder` must hold: (subject, marks), sorted.
    fn holds(&self, folder: &str) -> Vec<(String, Marks)> {
        let mut v: Vec<(String, Marks)> = self
            .by_subject
            .iter()
            .filter(|(_, k)| k.folder == folder)
            .map(|(s, k)| (s.clone(), k.marks))
            .collect();
        v.sort();
        v
    }
}

/// A small deterministic generator (the session must be the same for a
/// seed on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len())])
    }
}

// ---------------------------------------------------------------------------
// The server side: a second IMAP client

struct ServerSide {
    imap: RawImap,
    appended: u32,
    tag: String,
}

impl ServerSide {
    fn append(&mut self, folder: &str) -> String {
        self.appended += 1;
        let subject = format!("{} m{:04}", self.tag, self.appended);
        let msg = format!(
            "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\
             Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}.{}@model.test>\r\n\r\n\
             body of {subject}\r\n",
            self.tag.replace(' ', "-"),
            self.appended
        );
        let (_, ok) = self
            .imap
            .cmd(&format!("APPEND \"{folder}\" {{{}+}}\r\n{msg}", msg.len()));
        assert!(ok.starts_with("OK"), "append: {ok}");
        subject
    }

    /// The UID of the one message of `folder` with this subject.
    fn uid(&mut self, folder: &str, subject: &str) -> u32 {
        let uids = self.imap.search_subject(folder, subject);
        assert_eq!(uids.len(), 1, "{subject} in {folder}: {uids:?}");
        uids[0]
    }

    /// Sets (`on`) or clears the IMAP `flag` (`\\Seen`, `\\Flagged`).
    fn set_flag(&mut self, folder: &str, subject: &str, flag: &str, on: bool) {
        let uid = self.uid(folder, subject);
        let op = if on { "+" } else { "-" };
        self.imap
            .ok(&format!("UID STORE {uid} {op}FLAGS.SILENT ({flag})"));
        self.imap.ok("UNSELECT");
    }

    fn expunge(&mut self, folder: &str, subject: &str) {
        let uid = self.uid(folder, subject);
        self.imap
            .ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"));
        self.imap.ok(&format!("UID EXPUNGE {uid}"));
        self.imap.ok("UNSELECT");
    }

    fn move_to(&mut self, from: &str, subject: &str, to: &str) {
        let uid = self.uid(from, subject);
        self.imap.ok(&format!("UID MOVE {uid} \"{to}\""));
        self.imap.ok("UNSELECT");
    }

    /// Every message of `folder`: (subject, marks), sorted.
    fn holds(&mut self, folder: &str) -> Vec<(String, Marks)> {
        self.imap.ok(&format!("SELECT \"{folder}\""));
        let (lines, ok) = self
            .imap
            .cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
        assert!(ok.starts_with("OK"), "{ok}");
        self.imap.ok("UNSELECT");
        let mut v: Vec<(String, Marks)> = lines
            .iter()
            .filter(|l| l.contains(" FETCH "))
            .map(|l| {
                let subject = l
                    .split_once("Subject: ")
                    .and_then(|(_, r)| r.split_once('\r'))
                    .map(|(s, _)| s.to_owned())
                    .unwrap_or_default();
                let marks = Marks {
                    read: l.contains("\\Seen"),
                    flagged: l.contains("\\Flagged"),
                };
                (subject, marks)
            })
            .collect();
        v.sort();
        v
    }

    fn empty(&mut self, folder: &str) {
        self.imap.ok(&format!("SELECT \"{folder}\""));
        self.imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
        self.imap.ok("EXPUNGE");
        self.imap.ok("UNSELECT");
    }
}

// ---------------------------------------------------------------------------
// A device

/// An item as a device holds it.
#[derive(Debug, Clone)]
struct Item {
    subject: String,
    marks: Marks,
    /// The model's message this item stands for (`None`: the server added
    /// an item the model says is not in that folder).
    incarnation: Option<u64>,
    /// The model's `flag_changes` when the device last got this item's
    /// state from the server.
    flag_changes: u64,
}

#[derive(Debug, Default)]
struct Collection {
    key: String,
    items: BTreeMap<String, Item>,
    /// ServerIds the device removed itself (deleted or moved away): the
    /// server may still report their end.
    dropped: BTreeSet<String>,
}

struct Device {
    name: String,
    pv: ProtocolVersion,
    c: EasClient,
    /// CollectionId by IMAP folder.
    ids: BTreeMap<&'static str, String>,
    cols: BTreeMap<&'static str, Collection>,
    /// What the server told this device, item by item (printed on failure).
    heard: Vec<String>,
    /// Every opush node (one, or two on one Cassandra keyspace): a request
    /// whose answer was lost is sent again to the other one.
    nodes: Vec<std::net::SocketAddr>,
}

/// A device-side change sent within a Sync.
#[derive(Debug, Clone)]
enum Change {
    /// A Change of the read state and/or the follow-up flag.
    Mark {
        server_id: String,
        read: Option<bool>,
        flagged: Option<bool>,
    },
    Delete {
        server_id: String,
    },
}

impl Device {
    fn new(addr: std::net::SocketAddr, user: &str, id: &str, version: &str) -> Device {
        let mut c = EasClient::new(addr, user, &opush_tests::demo_password(), id, version);
        c.device_type = "ModelPhone".into();
        Device {
            name: format!("{id} ({version})"),
            pv: opush_protocol::headers::parse_protocol_version(version).unwrap(),
            c,
            ids: BTreeMap::new(),
            cols: BTreeMap::new(),
            heard: Vec::new(),
            nodes: vec![addr],
        }
    }

    /// Sends the next requests to the other node, when there are two (a
    /// device behind a load balancer).
    fn other_node(&mut self) {
        if let Some(a) = self.nodes.iter().copied().find(|a| *a != self.c.addr) {
            self.c.switch_to(a);
        }
    }

    async fn post(&mut self, cmd: &str, body: &[u8]) -> HttpResponse {
        let res = self.c.post(cmd, body).await;
        assert_eq!(res.status, 200, "{}: {cmd}: HTTP {}", self.name, res.status);
        res
    }

    /// POSTs `cmd`; with `lose`, its answer is lost and the same request
    /// goes again (to the other node, when there are two), whose answer
    /// must be the very same bytes.
    async fn post_losing(&mut self, cmd: &str, body: &[u8], lose: bool) -> HttpResponse {
        let res = self.post(cmd, body).await;
        if !lose {
            return res;
        }
        self.other_node();
        let again = self.post(cmd, body).await;
        assert!(
            again.body == res.body,
            "{}: a repeated {cmd} got another answer:\nfirst: {}\nagain: {}",
            self.name,
            res.xml(),
            again.xml()
        );
        again
    }

    async fn folder_sync(&mut self) {
        let res = self
            .post(
                "FolderSync",
                &wbxml_of(
                    "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>",
                ),
            )
            .await;
        let r = FolderSyncResponse::from_element(&res.element(), self.pv).unwrap();
        assert_eq!(r.status.code(), 1, "{}: {}", self.name, res.xml());
        for ch in r.changes.iter().flatten() {
            if let FolderChange::Add(f) = ch {
                let imap = match f.folder_type {
                    2 => "INBOX",
                    4 => "Trash",
                    _ => match f.display_name.as_str() {
                        "Archive" => "Archive",
                        _ => continue,
                    },
                };
                self.ids.insert(imap, f.server_id.0.clone());
            }
        }
        for f in FOLDERS {
            assert!(
                self.ids.contains_key(f),
                "{}: no {f}: {}",
                self.name,
                res.xml()
            );
            self.cols.insert(
                f,
                Collection {
                    key: "0".into(),
                    ..Collection::default()
                },
            );
        }
    }

    fn sync_body(&self, folder: &str, window: u32, changes: &[Change]) -> Vec<u8> {
        let col = &self.cols[folder];
        let id = &self.ids[folder];
        let key = &col.key;
        let get = if key == "0" {
            String::new()
        } else {
            format!("<GetChanges/><WindowSize>{window}</WindowSize>")
        };
        let mut commands = String::new();
        for ch in changes {
            match ch {
                Change::Mark {
                    server_id,
                    read,
                    flagged,
                } => {
                    let read = read
                        .map(|r| format!("<email:Read>{}</email:Read>", u8::from(r)))
                        .unwrap_or_default();
                    let flag = match flagged {
                        Some(true) => {
                            "<email:Flag><email:Status>2</email:Status>\
                                       <email:FlagType>Follow up</email:FlagType></email:Flag>"
                        }
                        Some(false) => "<email:Flag/>",
                        None => "",
                    };
                    commands.push_str(&format!(
                        "<Change><ServerId>{server_id}</ServerId><ApplicationData>\
                         {read}{flag}</ApplicationData></Change>"
                    ))
                }
                Change::Delete { server_id } => commands.push_str(&format!(
                    "<Delete><ServerId>{server_id}</ServerId></Delete>"
                )),
            }
        }
        let commands = if commands.is_empty() {
            commands
        } else {
            format!("<Commands>{commands}</Commands>")
        };
        let class = if self.pv < ProtocolVersion::V12_1 {
            "<Class>Email</Class>"
        } else {
            ""
        };
        wbxml_of(&format!(
            "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\" xmlns:email=\"Email:\">\
             <Collections><Collection>{class}<SyncKey>{key}</SyncKey><CollectionId>{id}</CollectionId>\
             <DeletesAsMoves>1</DeletesAsMoves>{get}<Options><airsyncbase:BodyPreference>\
             <airsyncbase:Type>1</airsyncbase:Type><airsyncbase:TruncationSize>64</airsyncbase:TruncationSize>\
             </airsyncbase:BodyPreference></Options>{commands}</Collection></Collections></Sync>"
        ))
    }

    /// One Sync of `folder` carrying `changes` (already applied on the
    /// device, as phones do), its answer applied; with `lose`, the first
    /// answer is dropped and the same request sent again, which must be
    /// answered alike. Returns the replies to the changes (ServerId →
    /// Status) and whether more is available.
    async fn sync(
        &mut self,
        model: &Model,
        folder: &'static str,
        window: u32,
        changes: &[Change],
        lose: bool,
    ) -> (BTreeMap<String, u16>, bool) {
        let body = self.sync_body(folder, window, changes);
        let res = self.post_losing("Sync", &body, lose).await;
        let r = SyncResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: Sync answer ({e}): {}", self.name, res.xml()));
        let c = r.collections.into_iter().next().unwrap_or_else(|| {
            panic!("{}: no collection: {}", self.name, res.xml());
        });
        let key = self.cols[folder].key.clone();
        assert_eq!(
            c.status.map(|s| s.code()),
            Some(1),
            "{}: Sync of {folder} with key {key}: {}",
            self.name,
            res.xml()
        );
        let mut replies = BTreeMap::new();
        for reply in c.responses.iter().flatten() {
            match reply {
                CommandResponse::Change {
                    server_id, status, ..
                }
                | CommandResponse::Delete {
                    server_id, status, ..
                } => {
                    replies.insert(server_id.0.clone(), status.code());
                }
                other => panic!("{}: unexpected reply {other:?}", self.name),
            }
        }
        let name = self.name.clone();
        let col = self.cols.get_mut(folder).unwrap();
        col.key = c.sync_key.0.clone();
        for cmd in c.commands.iter().flatten() {
            match cmd {
                ServerCommand::Add {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    let subject = e.subject.clone().unwrap_or_default();
                    let known = model
                        .by_subject
                        .get(&subject)
                        .filter(|k| k.folder == folder);
                    let item = Item {
                        subject: subject.clone(),
                        marks: Marks {
                            read: e.read == Some(true),
                            flagged: e.flag.as_ref().is_some_and(|f| f.status == Some(2)),
                        },
                        incarnation: known.map(|k| k.incarnation),
                        flag_changes: known.map_or(0, |k| k.flag_changes),
                    };
                    self.heard.push(format!(
                        "{folder}: Add {} {subject} {:?}",
                        server_id.0, item.marks
                    ));
                    let old = col.items.insert(server_id.0.clone(), item);
                    assert!(
                        old.is_none(),
                        "{name}: {folder}: {} ({subject}) added twice",
                        server_id.0
                    );
                    assert!(
                        !col.dropped.contains(&server_id.0),
                        "{name}: {folder}: {} ({subject}) added again after the device removed it",
                        server_id.0
                    );
                }
                ServerCommand::Change {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    if col.dropped.contains(&server_id.0) {
                        continue;
                    }
                    let item = col.items.get_mut(&server_id.0).unwrap_or_else(|| {
                        panic!("{name}: {folder}: a change of unknown {}", server_id.0)
                    });
                    if let Some(read) = e.read {
                        item.marks.read = read;
                    }
                    if let Some(f) = &e.flag {
                        item.marks.flagged = f.status == Some(2);
                    }
                    self.heard.push(format!(
                        "{folder}: Change {} {} read {:?} flag {:?}",
                        server_id.0,
                        item.subject,
                        e.read,
                        e.flag.as_ref().map(|f| f.status)
                    ));
                    if let Some(k) = model.current(item) {
                        item.flag_changes = k.flag_changes;
                    }
                }
                ServerCommand::Delete { server_id, .. }
                | ServerCommand::SoftDelete { server_id } => {
                    if col.items.remove(&server_id.0).is_none() {
                        assert!(
                            col.dropped.contains(&server_id.0),
                            "{name}: {folder}: a delete of unknown {}",
                            server_id.0
                        );
                    }
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        (replies, c.more_available)
    }

    async fn sync_to_end(&mut self, model: &Model, folder: &'static str) {
        for _ in 0..1000 {
            if !self.sync(model, folder, 25, &[], false).await.1 {
                return;
            }
        }
        panic!("{}: the Sync of {folder} never ended", self.name);
    }

    /// MoveItems of one item; with `lose`, sent twice (the second answer
    /// must be the first's). Returns the status and the new ServerId.
    async fn move_item(
        &mut self,
        from: &str,
        id: &str,
        to: &str,
        lose: bool,
    ) -> (u16, Option<String>) {
        let body = wbxml_of(&format!(
            "<MoveItems xmlns=\"Move:\"><Move><SrcMsgId>{id}</SrcMsgId><SrcFldId>{}</SrcFldId>\
             <DstFldId>{}</DstFldId></Move></MoveItems>",
            self.ids[from], self.ids[to]
        ));
        let res = self.post_losing("MoveItems", &body, lose).await;
        let r = MoveItemsResponse::from_element(&res.element(), self.pv).unwrap();
        let reply = &r.responses[0];
        (
            reply.status.code(),
            reply.dst_msg_id.as_ref().map(|d| d.0.clone()),
        )
    }

    /// ItemOperations EmptyFolderContents of `folder` (Empty Trash): every
    /// Status in the answer must be 1. The device learns the deletions by
    /// its next Sync.
    async fn empty_folder(&mut self, folder: &str) {
        let body = wbxml_of(&format!(
            "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\">\
             <EmptyFolderContents><airsync:CollectionId>{}</airsync:CollectionId>\
             </EmptyFolderContents></ItemOperations>",
            self.ids[folder]
        ));
        let res = self.post("ItemOperations", &body).await;
        let root = res.element();
        let statuses = opush_tests::eas::find_all(&root, "Status");
        assert!(
            !statuses.is_empty()
                && statuses
                    .iter()
                    .all(|s| s.text_concat().as_deref() == Some("1")),
            "{}: EmptyFolderContents of {folder}: {}",
            self.name,
            res.xml()
        );
    }

    /// What the device shows in `folder`: (subject, marks), sorted.
    fn shows(&self, folder: &str) -> Vec<(String, Marks)> {
        let mut v: Vec<(String, Marks)> = self.cols[folder]
            .items
            .values()
            .map(|i| (i.subject.clone(), i.marks))
            .collect();
        v.sort();
        v
    }
}

// ---------------------------------------------------------------------------
// The session

/// Runs one seeded session against a fresh opush (embedded store), or two
/// opush nodes on a fresh Cassandra keyspace (`nodes` 2: each device
/// request goes to either, at random), and checks it.
async fn session(seed: u64, steps: usize, nodes: usize) {
    let user = if nodes > 1 {
        format!("load{:04}@load.test", 1276 + (seed % 10))
    } else {
        format!("load{:04}@load.test", 1261 + (seed % 15))
    };
    let keyspace = if nodes > 1 {
        Some(support::Keyspace::fresh("model").await)
    } else {
        None
    };
    let opts = support::Options {
        storage_toml: keyspace.as_ref().map(|k| k.toml.clone()),
        ..support::Options::default()
    };
    let mut servers = Vec::new();
    for _ in 0..nodes.max(1) {
        servers.push(support::start(opts.clone()).await);
    }
    let addrs: Vec<std::net::SocketAddr> = servers.iter().map(|o| o.addr).collect();
    let opush_addr = addrs[0];
    let mut server = ServerSide {
        imap: RawImap::login(&user),
        appended: 0,
        tag: format!("model s{seed} {}", opush_tests::unique("r")),
    };
    for f in FOLDERS {
        server.empty(f);
    }
    let mut model = Model::default();
    for _ in 0..12 {
        let s = server.append("INBOX");
        model.add(&s, "INBOX");
    }
    let mut devices = vec![
        Device::new(opush_addr, &user, &format!("MODEL{seed}A"), "12.1"),
        Device::new(opush_addr, &user, &format!("MODEL{seed}B"), "14.1"),
        Device::new(opush_addr, &user, &format!("MODEL{seed}C"), "16.1"),
    ];
    for d in &mut devices {
        d.nodes = addrs.clone();
        d.folder_sync().await;
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut tally = BTreeMap::<&str, u32>::new();
    // Every step, for the failure message.
    let mut journal: Vec<String> = Vec::new();
    for step in 0..steps {
        let ctx = |what: &str| format!("seed {seed}, step {step}: {what}");
        let roll = rng.below(100);
        if roll < 30 {
            // The server side changes something.
            let subjects: Vec<String> = model.by_subject.keys().cloned().collect();
            match rng.below(5) {
                0 | 1 => {
                    let folder = *rng.pick(&FOLDERS[..2]).unwrap();
                    let s = server.append(folder);
                    model.add(&s, folder);
                    journal.push(format!("{step}: server appends {s} to {folder}"));
                    *tally.entry("server append").or_default() += 1;
                }
                2 => {
                    if let Some(s) = rng.pick(&subjects) {
                        let flagged = rng.chance(40);
                        let k = model.by_subject.get_mut(s).unwrap();
                        let (flag, on) = if flagged {
                            k.marks.flagged = !k.marks.flagged;
                            ("\\Flagged", k.marks.flagged)
                        } else {
                            k.marks.read = !k.marks.read;
                            ("\\Seen", k.marks.read)
                        };
                        k.flag_changes += 1;
                        let folder = k.folder;
                        server.set_flag(folder, s, flag, on);
                        journal.push(format!(
                            "{step}: server sets {flag} {on} on {s} in {folder}"
                        ));
                        *tally.entry("server flag").or_default() += 1;
                    }
                }
                3 => {
                    if let Some(s) = rng.pick(&subjects) {
                        let folder = model.by_subject[s].folder;
                        server.expunge(folder, s);
                        model.by_subject.remove(s);
                        journal.push(format!("{step}: server expunges {s} from {folder}"));
                        *tally.entry("server expunge").or_default() += 1;
                    }
                }
                _ => {
                    if let Some(s) = rng.pick(&subjects) {
                        let from = model.by_subject[s].folder;
                        let to = *rng
                            .pick(
                                &FOLDERS
                                    .iter()
                                    .copied()
                                    .filter(|f| *f != from)
                                    .collect::<Vec<_>>(),
                            )
                            .unwrap();
                        server.move_to(from, s, to);
                        model.move_to(s, to);
                        journal.push(format!("{step}: server moves {s} from {from} to {to}"));
                        *tally.entry("server move").or_default() += 1;
                    }
                }
            }
            continue;
        }
        let di = rng.below(devices.len());
        if addrs.len() > 1 {
            let a = addrs[rng.below(addrs.len())];
            if a != devices[di].c.addr {
                devices[di].c.switch_to(a);
            }
        }
        if roll < 32 {
            // A device empties Trash.
            let d = &mut devices[di];
            d.empty_folder("Trash").await;
            let gone: Vec<String> = model
                .by_subject
                .iter()
                .filter(|(_, k)| k.folder == "Trash")
                .map(|(s, _)| s.clone())
                .collect();
            for s in &gone {
                model.by_subject.remove(s);
            }
            journal.push(format!("{step}: {} empties Trash: {gone:?}", d.name));
            *tally.entry("device empties trash").or_default() += 1;
            continue;
        }
        let folder = *rng.pick(&FOLDERS).unwrap();
        let d = &mut devices[di];
        let synced = d.cols[folder].key != "0";
        // A repeated SyncKey 0 starts over; only later requests are lost.
        let lose = synced && rng.chance(15);
        let candidates: Vec<String> = d.cols[folder].items.keys().cloned().collect();
        let to = if folder == "INBOX" {
            "Archive"
        } else {
            "INBOX"
        };
        let movable =
            synced && d.cols[to].key != "0" && !candidates.is_empty() && folder != "Trash";
        if roll < 85 || !movable {
            // A Sync, now and then carrying read changes or a delete.
            let mut changes = Vec::new();
            if synced && folder != "Trash" && rng.chance(40) {
                for _ in 0..=rng.below(3) {
                    let Some(id) = rng.pick(&candidates).cloned() else {
                        break;
                    };
                    if changes.iter().any(|c: &Change| match c {
                        Change::Mark { server_id, .. } | Change::Delete { server_id } => {
                            *server_id == id
                        }
                    }) {
                        continue;
                    }
                    if rng.chance(25) {
                        changes.push(Change::Delete { server_id: id });
                    } else {
                        let now = d.cols[folder].items[&id].marks;
                        let (read, flagged) = match rng.below(4) {
                            0 | 1 => (Some(!now.read), None),
                            2 => (None, Some(!now.flagged)),
                            _ => (Some(!now.read), Some(!now.flagged)),
                        };
                        changes.push(Change::Mark {
                            server_id: id,
                            read,
                            flagged,
                        });
                    }
                }
            }
            // What the model expects of each change, decided now (the
            // server carries them out in this Sync).
            let mut expected: Vec<(Change, Item, Option<Known>)> = Vec::new();
            for ch in &changes {
                let (Change::Mark { server_id, .. } | Change::Delete { server_id }) = ch;
                let item = d.cols[folder].items[server_id].clone();
                expected.push((ch.clone(), item.clone(), model.current(&item).cloned()));
            }
            let desc: Vec<String> = expected
                .iter()
                .map(|(ch, item, current)| {
                    format!("{ch:?} = {} (current {})", item.subject, current.is_some())
                })
                .collect();
            // The device applies its changes at once.
            {
                let col = d.cols.get_mut(folder).unwrap();
                for ch in &changes {
                    match ch {
                        Change::Mark {
                            server_id,
                            read,
                            flagged,
                        } => {
                            let marks = &mut col.items.get_mut(server_id).unwrap().marks;
                            marks.read = read.unwrap_or(marks.read);
                            marks.flagged = flagged.unwrap_or(marks.flagged);
                        }
                        Change::Delete { server_id } => {
                            col.items.remove(server_id);
                            col.dropped.insert(server_id.clone());
                        }
                    }
                }
            }
            let window = 1 + rng.below(8) as u32;
            let (replies, _) = d.sync(&model, folder, window, &changes, lose).await;
            *tally.entry("device sync").or_default() += 1;
            journal.push(format!(
                "{step}: {} syncs {folder} (window {window}, repeated {lose}) with {desc:?}: replies {replies:?}",
                d.name
            ));
            if lose {
                *tally.entry("device sync repeated").or_default() += 1;
            }
            for (ch, item, current) in expected {
                let (Change::Mark { server_id, .. } | Change::Delete { server_id }) = &ch;
                let status = replies.get(server_id).copied().unwrap_or(1);
                match (&ch, current) {
                    (Change::Mark { read, flagged, .. }, Some(k)) => {
                        let changed_since = k.flag_changes != item.flag_changes;
                        match status {
                            1 => {
                                let m = model.by_subject.get_mut(&item.subject).unwrap();
                                m.marks.read = read.unwrap_or(m.marks.read);
                                m.marks.flagged = flagged.unwrap_or(m.marks.flagged);
                                *tally.entry("device mark").or_default() += 1;
                                // Other devices see it as a server change.
                                m.flag_changes += 1;
                                let fc = m.flag_changes;
                                // This device has the current version.
                                if let Some(it) =
                                    d.cols.get_mut(folder).unwrap().items.get_mut(server_id)
                                {
                                    it.flag_changes = fc;
                                }
                            }
                            7 if changed_since => {
                                *tally.entry("device mark conflict").or_default() += 1;
                            }
                            s => {
                                panic!(
                                    "{}\n{}",
                                    ctx(&format!(
                                        "{}: a mark change of {} ({}), current, changed since: {changed_since}, got Status {s}",
                                        d.name, server_id, item.subject
                                    )),
                                    history(&journal, &d.heard, &[item.subject.as_str()])
                                )
                            }
                        }
                    }
                    (Change::Delete { .. }, Some(_)) => {
                        assert_eq!(
                            status,
                            1,
                            "{}",
                            ctx(&format!(
                                "{}: a delete of current {} ({})",
                                d.name, server_id, item.subject
                            ))
                        );
                        model.move_to(&item.subject, "Trash");
                        let m = model.by_subject.get_mut(&item.subject).unwrap();
                        m.flag_changes += 1;
                        *tally.entry("device delete").or_default() += 1;
                    }
                    (_, None) => {
                        // Gone (expunged or moved): nothing may happen to
                        // it. A change of it is "object not found"; a
                        // delete of it succeeds (what the device wanted).
                        let (what, want) = match &ch {
                            Change::Mark { .. } => ("device mark of gone", 8),
                            Change::Delete { .. } => ("device delete of gone", 1),
                        };
                        assert_eq!(
                            status,
                            want,
                            "{}",
                            ctx(&format!(
                                "{}: {what} {} ({})",
                                d.name, server_id, item.subject
                            ))
                        );
                        *tally.entry(what).or_default() += 1;
                    }
                }
            }
        } else {
            // MoveItems of one item to another mail folder.
            let id = rng.pick(&candidates).unwrap().clone();
            let item = d.cols[folder].items[&id].clone();
            let current = model.current(&item).cloned();
            let (status, new_id) = d.move_item(folder, &id, to, lose).await;
            *tally.entry("device move").or_default() += 1;
            journal.push(format!(
                "{step}: {} moves {id} ({}) from {folder} to {to} (repeated {lose}): Status {status}, {new_id:?}",
                d.name, item.subject
            ));
            match (status, current) {
                (3, Some(_)) => {
                    let new_id = new_id.expect("a DstMsgId with Status 3");
                    model.move_to(&item.subject, to);
                    let k = model.by_subject[&item.subject].clone();
                    let col = d.cols.get_mut(folder).unwrap();
                    col.items.remove(&id);
                    col.dropped.insert(id.clone());
                    // The device's copy, as it was: a view older than the
                    // message's flags stays older (the server then owes it a
                    // Change, and may answer its next change with a conflict).
                    let moved = Item {
                        incarnation: Some(k.incarnation),
                        ..item
                    };
                    let old = d.cols.get_mut(to).unwrap().items.insert(new_id.clone(), moved);
                    assert!(old.is_none(), "{}", ctx(&format!("moved onto {new_id}")));
                }
                // MS-ASCMD: 1 for an item moved out of its folder.
                (1, None) => {
                    *tally.entry("device move of gone").or_default() += 1;
                }
                (s, current) => panic!(
                    "{}",
                    ctx(&format!(
                        "{}: MoveItems of {id} ({}) from {folder} to {to}: Status {s}, the message {}",
                        d.name,
                        item.subject,
                        if current.is_some() { "is current" } else { "is gone" }
                    ))
                ),
            }
        }
    }
    // Quiet: every device syncs every folder to the end, twice.
    for d in &mut devices {
        for _ in 0..2 {
            for f in FOLDERS {
                d.sync_to_end(&model, f).await;
            }
        }
    }
    for f in FOLDERS {
        let want = model.holds(f);
        let imap = server.holds(f);
        assert_eq!(
            imap, want,
            "seed {seed}: IMAP's {f} is not what the session made of it (a change lost or made twice); tally {tally:?}"
        );
        for d in &devices {
            let shows = d.shows(f);
            if shows != imap {
                let missing: Vec<_> = imap.iter().filter(|m| !shows.contains(m)).collect();
                let extra: Vec<_> = shows.iter().filter(|m| !imap.contains(m)).collect();
                let subjects: BTreeSet<&str> = missing
                    .iter()
                    .chain(&extra)
                    .map(|(s, _)| s.as_str())
                    .collect();
                let subjects: Vec<&str> = subjects.into_iter().collect();
                panic!(
                    "seed {seed}: {} shows {f} ({} items) unlike IMAP ({}): missing {missing:?}, \
                     extra or stale {extra:?}; tally {tally:?}\n{}",
                    d.name,
                    shows.len(),
                    imap.len(),
                    history(&journal, &d.heard, &subjects)
                );
            }
        }
    }
    eprintln!("seed {seed}: {steps} steps, {tally:?}");
    for f in FOLDERS {
        server.empty(f);
    }
    for o in servers {
        o.stop().await;
    }
    if let Some(k) = keyspace {
        k.remove().await;
    }
}

/// The steps of the session and what the device heard that name one of
/// `subjects`, for a failure message.
fn history(journal: &[String], heard: &[String], subjects: &[&str]) -> String {
    let about = |l: &&String| subjects.iter().any(|s| l.contains(s));
    let steps: Vec<&String> = journal.iter().filter(about).collect();
    let heard: Vec<&String> = heard.iter().filter(about).collect();
    format!("steps: {steps:#?}\nthe device heard: {heard:#?}")
}

fn seeds() -> Vec<u64> {
    std::env::var("OPUSH_MODEL_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3])
}

fn steps() -> usize {
    std::env::var("OPUSH_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_the_server_side_taking_turns_end_where_the_model_says() {
    require(DOVECOT_IMAP);
    for seed in seeds() {
        session(seed, steps(), 1).await;
    }
}

/// The same on two opush processes sharing one Cassandra keyspace, each
/// device request (and the repeat of a lost one) going to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_switching_between_two_nodes_on_cassandra_end_where_the_model_says() {
    require(DOVECOT_IMAP);
    for seed in seeds() {
        session(seed, steps(), 2).await;
    }
}
