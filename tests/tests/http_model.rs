//! A seeded random session of one user's mail, checked against a model.
//!
//! Three devices of one user (EAS 12.1, 14.1 and 16.1) and a second IMAP
//! client acting as "the server side" (another mail program, a filter, an
//! administrator) take turns at random: the server side APPENDs, toggles
//! `\Seen` and `\Flagged`, expunges and MOVEs, and creates and deletes a
//! folder (`Projects`, created again under the same name: a new
//! UIDVALIDITY, UIDs from 1); the devices sync the hierarchy and sync in
//! small windows (so server changes land between the windows of one
//! sync), mark read and flag, delete (DeletesAsMoves: to Trash), MoveItems,
//! empty Trash, create and delete `Projects` themselves (FolderCreate,
//! FolderDelete), Fetch an item (ItemOperations: that very message, or "not
//! found" once it is gone), ask GetItemEstimate (exactly what the next
//! Sync brings) and Ping (naming at once every folder whose items differ
//! from IMAP's); now and then they lose an answer and send the same
//! request again, as phones do, and they retry a transient failure. Every
//! Add's body must be the one of the message its subject names. The steps run
//! one after the other, so a model (the oracle below) knows at each step
//! what the mailbox must hold; every device-side change is checked to
//! take effect exactly once or to be refused for a reason the model
//! allows (the message is gone, or — server wins, the default `Conflict`
//! — the server changed it since the device last saw it).
//!
//! At the end every device syncs the hierarchy and every folder to the
//! end, and then: each shows IMAP's folders,
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

use opush_protocol::commands::airsyncbase::Body;
use opush_protocol::commands::folder_create::FolderCreateResponse;
use opush_protocol::commands::folder_delete::FolderDeleteResponse;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncResponse};
use opush_protocol::commands::get_item_estimate::GetItemEstimateResponse;
use opush_protocol::commands::item_operations::{ItemOperationsResponse, OperationResult};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::move_items::MoveItemsResponse;
use opush_protocol::commands::ping::PingResponse;
use opush_protocol::commands::sync::{CommandResponse, ServerCommand, SyncResponse};
use opush_protocol::version::ProtocolVersion;
use opush_tests::eas::{wbxml_of, EasClient, HttpResponse};
use opush_tests::{require, RawImap, DOVECOT_IMAP};

/// The folders the session uses (IMAP names; special-use Archive and Trash
/// exist for every stack user; `Projects` comes and goes, created and
/// deleted by the server side).
const FOLDERS: [&str; 4] = ["INBOX", "Archive", "Trash", "Projects"];

/// The folders that always exist.
const FIXED: [&str; 3] = ["INBOX", "Archive", "Trash"];

/// The folder the server side creates and deletes.
const PROJECTS: &str = "Projects";

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
    /// Whether `Projects` exists now.
    projects: bool,
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

    /// Forgets every message of `folder` (emptied or deleted); their
    /// subjects.
    fn empty(&mut self, folder: &str) -> Vec<String> {
        let gone: Vec<String> = self
            .by_subject
            .iter()
            .filter(|(_, k)| k.folder == folder)
            .map(|(s, _)| s.clone())
            .collect();
        for s in &gone {
            self.by_subject.remove(s);
        }
        gone
    }

    /// The folders that exist now.
    fn folders(&self) -> Vec<&'static str> {
        FOLDERS
            .iter()
            .copied()
            .filter(|f| *f != PROJECTS || self.projects)
            .collect()
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
    user: String,
    appended: u32,
    tag: String,
}

impl ServerSide {
    /// One IMAP command: its untagged lines, or `Err` when Dovecot says
    /// `SERVERBUG` (see [`ServerSide::again`]); any other failure fails
    /// the test.
    fn try_ok(&mut self, command: &str) -> Result<Vec<String>, String> {
        // A session Dovecot closed ("IMAP session state is inconsistent,
        // please relogin": the same index trouble) is retried as well.
        let (lines, ok) = self
            .imap
            .try_cmd(command)
            .map_err(|e| format!("{command}: {e}"))?;
        if ok.starts_with("OK") {
            return Ok(lines);
        }
        if ok.contains("SERVERBUG") {
            return Err(format!("{command}: {ok}"));
        }
        panic!("{command}: {ok}")
    }

    /// Runs `op` until it gets through, in a new session after a pause
    /// while Dovecot fails it with `SERVERBUG`. Dovecot's maildir does
    /// when a folder is deleted and created again under the same name
    /// while other sessions (opush's, this one) still hold the old one's
    /// index ("Corrupted transaction log ... indexid changed", "duplicate
    /// transaction log sequence"), until it has repaired the index. Each
    /// `op` looks first whether an earlier try got through after all.
    fn again<T>(&mut self, mut op: impl FnMut(&mut Self) -> Result<T, String>) -> T {
        let mut last = String::new();
        for _ in 0..30 {
            match op(self) {
                Ok(t) => return t,
                Err(e) => last = e,
            }
            self.relogin();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("kept failing: {last}")
    }

    /// A new session (see [`ServerSide::again`]).
    fn relogin(&mut self) {
        self.imap = RawImap::login(&self.user);
    }

    /// The UIDs of `folder`'s messages with this subject.
    fn uids(&mut self, folder: &str, subject: &str) -> Result<Vec<u32>, String> {
        self.try_ok(&format!("SELECT \"{folder}\""))?;
        let lines = self.try_ok(&format!("UID SEARCH SUBJECT \"{subject}\""))?;
        let uids: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|l| l.split_whitespace())
            .filter_map(|u| u.parse().ok())
            .collect();
        assert!(uids.len() <= 1, "{subject} in {folder}: {uids:?}");
        Ok(uids)
    }

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
        let mut first = true;
        self.again(|s| {
            if !std::mem::take(&mut first) && !s.uids(folder, &subject)?.is_empty() {
                return Ok(());
            }
            s.try_ok(&format!("APPEND \"{folder}\" {{{}+}}\r\n{msg}", msg.len()))?;
            Ok(())
        });
        subject
    }

    /// Sets (`on`) or clears the IMAP `flag` (`\\Seen`, `\\Flagged`).
    fn set_flag(&mut self, folder: &str, subject: &str, flag: &str, on: bool) {
        let op = if on { "+" } else { "-" };
        self.again(|s| {
            let uid = s.uids(folder, subject)?;
            assert_eq!(uid.len(), 1, "{subject} in {folder}");
            s.try_ok(&format!("UID STORE {} {op}FLAGS.SILENT ({flag})", uid[0]))?;
            s.try_ok("UNSELECT")?;
            Ok(())
        });
    }

    fn expunge(&mut self, folder: &str, subject: &str) {
        let mut first = true;
        self.again(|s| {
            let uid = s.uids(folder, subject)?;
            let first = std::mem::take(&mut first);
            assert!(!first || uid.len() == 1, "{subject} in {folder}");
            if let Some(uid) = uid.first() {
                s.try_ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))?;
                s.try_ok(&format!("UID EXPUNGE {uid}"))?;
            }
            s.try_ok("UNSELECT")?;
            Ok(())
        });
    }

    fn move_to(&mut self, from: &str, subject: &str, to: &str) {
        let mut first = true;
        self.again(|s| {
            let uid = s.uids(from, subject)?;
            let first = std::mem::take(&mut first);
            assert!(!first || uid.len() == 1, "{subject} in {from}");
            if let Some(uid) = uid.first() {
                s.try_ok(&format!("UID MOVE {uid} \"{to}\""))?;
            }
            s.try_ok("UNSELECT")?;
            Ok(())
        });
    }

    /// Every message of `folder`: (subject, marks), sorted.
    fn holds(&mut self, folder: &str) -> Vec<(String, Marks)> {
        let lines = self.again(|s| {
            s.try_ok(&format!("SELECT \"{folder}\""))?;
            let lines = s.try_ok("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")?;
            s.try_ok("UNSELECT")?;
            Ok(lines)
        });
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

    /// Whether `folder` exists.
    fn try_exists(&mut self, folder: &str) -> Result<bool, String> {
        let (_, ok) = self
            .imap
            .try_cmd(&format!("STATUS \"{folder}\" (MESSAGES)"))
            .map_err(|e| format!("STATUS {folder}: {e}"))?;
        if ok.contains("SERVERBUG") {
            return Err(ok);
        }
        Ok(ok.starts_with("OK"))
    }

    fn exists(&mut self, folder: &str) -> bool {
        self.again(|s| s.try_exists(folder))
    }

    /// Creates and subscribes `folder`.
    fn create(&mut self, folder: &str) {
        self.again(|s| {
            if !s.try_exists(folder)? {
                s.try_ok(&format!("CREATE \"{folder}\""))?;
            }
            s.try_ok(&format!("SUBSCRIBE \"{folder}\""))?;
            Ok(())
        });
        self.relogin();
    }

    /// Deletes `folder` with what it holds (unsubscribed too); a folder
    /// that does not exist is fine.
    fn delete(&mut self, folder: &str) {
        self.again(|s| {
            s.imap
                .try_cmd(&format!("UNSUBSCRIBE \"{folder}\""))
                .map_err(|e| e.to_string())?;
            if s.try_exists(folder)? {
                s.try_ok(&format!("DELETE \"{folder}\""))?;
            }
            Ok(())
        });
        self.relogin();
    }

    fn empty(&mut self, folder: &str) {
        self.again(|s| {
            s.try_ok(&format!("SELECT \"{folder}\""))?;
            s.imap
                .try_cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)")
                .map_err(|e| e.to_string())?;
            s.try_ok("EXPUNGE")?;
            s.try_ok("UNSELECT")?;
            Ok(())
        });
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
    /// The hierarchy's SyncKey.
    folder_key: String,
    /// How many commands (Add, Change, Delete) the last Sync brought.
    last_commands: usize,
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
            folder_key: "0".into(),
            last_commands: 0,
        }
    }

    /// Sends the next requests to the other node, when there are two (a
    /// device behind a load balancer).
    fn other_node(&mut self) {
        if let Some(a) = self.nodes.iter().copied().find(|a| *a != self.c.addr) {
            self.c.switch_to(a);
        }
    }

    /// POSTs `cmd`; a transient failure (HTTP 503, or the top-level
    /// Status 111 "retry later") is retried as phones do: nothing the
    /// request asked for may then have happened twice.
    async fn post(&mut self, cmd: &str, body: &[u8]) -> HttpResponse {
        for _ in 0..10 {
            let res = self.c.post(cmd, body).await;
            let transient = res.status == 503
                || (res.status == 200
                    && !res.body.is_empty()
                    && res.element().elements().any(|e| {
                        e.tag.name() == Some("Status") && e.text_concat().as_deref() == Some("111")
                    }));
            if transient {
                self.heard
                    .push(format!("{cmd}: transient failure, retried"));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            assert_eq!(res.status, 200, "{}: {cmd}: HTTP {}", self.name, res.status);
            return res;
        }
        panic!("{}: {cmd} kept failing", self.name)
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

    /// FolderSync from the device's hierarchy key (0 the first time): an
    /// added folder starts a collection at SyncKey 0 (a folder added again
    /// under the same ServerId starts over), a deleted one is forgotten
    /// with its items. Returns what changed, for the journal.
    async fn folder_sync(&mut self) -> Vec<String> {
        let body = wbxml_of(&format!(
            "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>{}</SyncKey></FolderSync>",
            self.folder_key
        ));
        let res = self.post("FolderSync", &body).await;
        let r = FolderSyncResponse::from_element(&res.element(), self.pv).unwrap();
        assert_eq!(r.status.code(), 1, "{}: {}", self.name, res.xml());
        self.folder_key = r.sync_key.as_ref().map(|k| k.0.clone()).unwrap();
        let mut seen = Vec::new();
        for ch in r.changes.iter().flatten() {
            match ch {
                FolderChange::Add(f) | FolderChange::Update(f) => {
                    let imap = match f.folder_type {
                        2 => "INBOX",
                        4 => "Trash",
                        _ => match f.display_name.as_str() {
                            "Archive" => "Archive",
                            PROJECTS => PROJECTS,
                            _ => continue,
                        },
                    };
                    let add = matches!(ch, FolderChange::Add(_));
                    seen.push(format!(
                        "{} {imap} as {}",
                        if add { "add" } else { "update" },
                        f.server_id.0
                    ));
                    let same = self.ids.get(imap) == Some(&f.server_id.0);
                    assert!(
                        add || same,
                        "{}: an update of {imap} under another id: {}",
                        self.name,
                        res.xml()
                    );
                    if let Some((old, _)) = self
                        .ids
                        .iter()
                        .find(|(n, id)| **n != imap && **id == f.server_id.0)
                    {
                        panic!(
                            "{}: {imap} given the ServerId of {old}: {}",
                            self.name,
                            res.xml()
                        );
                    }
                    self.ids.insert(imap, f.server_id.0.clone());
                    if add || !self.cols.contains_key(imap) {
                        self.cols.insert(
                            imap,
                            Collection {
                                key: "0".into(),
                                ..Collection::default()
                            },
                        );
                    }
                }
                FolderChange::Delete(id) => {
                    let name = self.ids.iter().find(|(_, v)| **v == id.0).map(|(n, _)| *n);
                    if let Some(name) = name {
                        seen.push(format!("delete {name} ({})", id.0));
                        self.ids.remove(name);
                        self.cols.remove(name);
                    }
                }
            }
        }
        for f in FIXED {
            assert!(
                self.ids.contains_key(f),
                "{}: no {f}: {}",
                self.name,
                res.xml()
            );
        }
        seen
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
    ) -> (BTreeMap<String, u16>, bool, u16) {
        let body = self.sync_body(folder, window, changes);
        let res = self.post_losing("Sync", &body, lose).await;
        let r = SyncResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: Sync answer ({e}): {}", self.name, res.xml()));
        let c = r.collections.into_iter().next().unwrap_or_else(|| {
            panic!("{}: no collection: {}", self.name, res.xml());
        });
        let key = self.cols[folder].key.clone();
        let status = c.status.map_or(1, |s| s.code());
        match status {
            1 => {}
            // The folder is gone or was replaced (hierarchy changed, or a
            // SyncKey the server no longer honours): as phones do, the
            // device syncs the hierarchy and starts the collection over.
            // Nothing the request carried was carried out.
            3 | 12 => {
                self.heard
                    .push(format!("{folder}: Status {status} for key {key}"));
                if let Some(col) = self.cols.get_mut(folder) {
                    *col = Collection {
                        key: "0".into(),
                        ..Collection::default()
                    };
                }
                if status == 12 {
                    let seen = self.folder_sync().await;
                    self.heard.push(format!("hierarchy: {seen:?}"));
                }
                return (BTreeMap::new(), false, status);
            }
            s => panic!(
                "{}: Sync of {folder} with key {key}: Status {s}: {}",
                self.name,
                res.xml()
            ),
        }
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
        self.last_commands = c.commands.iter().flatten().count();
        let col = self.cols.get_mut(folder).unwrap();
        col.key = c.sync_key.0.clone();
        for cmd in c.commands.iter().flatten() {
            match cmd {
                ServerCommand::Add {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    let subject = e.subject.clone().unwrap_or_default();
                    check_body(&name, folder, &subject, e.body.as_ref());
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
        (replies, c.more_available, 1)
    }

    async fn sync_to_end(&mut self, model: &Model, folder: &'static str) {
        for _ in 0..1000 {
            if !self.cols.contains_key(folder) {
                return;
            }
            let (_, more, status) = self.sync(model, folder, 25, &[], false).await;
            if !more && status == 1 {
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

    /// FolderCreate of `Projects` at the top: its Status (on success the
    /// device holds the new folder, at SyncKey 0).
    async fn create_projects(&mut self) -> u16 {
        let body = wbxml_of(&format!(
            "<FolderCreate xmlns=\"FolderHierarchy:\"><SyncKey>{}</SyncKey><ParentId>0</ParentId>\
             <DisplayName>{PROJECTS}</DisplayName><Type>12</Type></FolderCreate>",
            self.folder_key
        ));
        let res = self.post("FolderCreate", &body).await;
        let r = FolderCreateResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: FolderCreate ({e}): {}", self.name, res.xml()));
        let status = r.status.code();
        if status == 1 {
            self.folder_key = r.sync_key.map(|k| k.0).unwrap();
            let id = r.server_id.map(|k| k.0).unwrap();
            if let Some((old, _)) = self.ids.iter().find(|(_, v)| **v == id) {
                panic!(
                    "{}: {PROJECTS} created as {id}, the ServerId of {old}",
                    self.name
                );
            }
            self.ids.insert(PROJECTS, id);
            self.cols.insert(
                PROJECTS,
                Collection {
                    key: "0".into(),
                    ..Collection::default()
                },
            );
        }
        status
    }

    /// FolderDelete of `Projects` as the device holds it: its Status (on
    /// success the device forgets it).
    async fn delete_projects(&mut self) -> u16 {
        let body = wbxml_of(&format!(
            "<FolderDelete xmlns=\"FolderHierarchy:\"><SyncKey>{}</SyncKey><ServerId>{}</ServerId>\
             </FolderDelete>",
            self.folder_key, self.ids[PROJECTS]
        ));
        let res = self.post("FolderDelete", &body).await;
        let r = FolderDeleteResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: FolderDelete ({e}): {}", self.name, res.xml()));
        let status = r.status.code();
        if status == 1 {
            self.folder_key = r.sync_key.map(|k| k.0).unwrap();
            self.ids.remove(PROJECTS);
            self.cols.remove(PROJECTS);
        }
        status
    }

    /// Ping of `folders` (a heartbeat of 1 s): its Status and the folders
    /// it names (by IMAP name).
    async fn ping(&mut self, folders: &[&'static str]) -> (u16, Vec<&'static str>) {
        let list: String = folders
            .iter()
            .map(|f| {
                format!(
                    "<Folder><Id>{}</Id><Class>Email</Class></Folder>",
                    self.ids[f]
                )
            })
            .collect();
        let body = wbxml_of(&format!(
            "<Ping xmlns=\"Ping:\"><HeartbeatInterval>1</HeartbeatInterval><Folders>{list}</Folders></Ping>"
        ));
        let res = self.post("Ping", &body).await;
        let r = PingResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: Ping ({e}): {}", self.name, res.xml()));
        let named = r
            .folders
            .iter()
            .filter_map(|id| {
                self.ids
                    .iter()
                    .find(|(_, v)| **v == id.0)
                    .map(|(name, _)| *name)
            })
            .collect();
        (r.status.code(), named)
    }

    /// ItemOperations Fetch of one item by ServerId: its Status, and the
    /// subject and body it came with.
    async fn fetch(&mut self, folder: &str, id: &str) -> (u16, Option<Email>) {
        let body = wbxml_of(&format!(
            "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" \
             xmlns:airsyncbase=\"AirSyncBase:\"><Fetch><Store>Mailbox</Store>\
             <airsync:CollectionId>{}</airsync:CollectionId><airsync:ServerId>{id}</airsync:ServerId>\
             <Options><airsyncbase:BodyPreference><airsyncbase:Type>1</airsyncbase:Type>\
             </airsyncbase:BodyPreference></Options></Fetch></ItemOperations>",
            self.ids[folder]
        ));
        let res = self.post("ItemOperations", &body).await;
        let r = ItemOperationsResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: ItemOperations ({e}): {}", self.name, res.xml()));
        assert_eq!(r.status.code(), 1, "{}: {}", self.name, res.xml());
        match r.results.into_iter().next() {
            Some(OperationResult::Fetch {
                status, properties, ..
            }) => {
                let email = match properties {
                    Some(ApplicationData::Email(e)) => Some(*e),
                    _ => None,
                };
                (status.code(), email)
            }
            other => panic!("{}: ItemOperations answered {other:?}", self.name),
        }
    }

    /// GetItemEstimate of one synced collection: its Status and estimate.
    async fn estimate(&mut self, folder: &str) -> (u16, Option<u32>) {
        let body = wbxml_of(&format!(
            "<GetItemEstimate xmlns=\"GetItemEstimate:\" xmlns:airsync=\"AirSync:\"><Collections>\
             <Collection><airsync:SyncKey>{}</airsync:SyncKey><CollectionId>{}</CollectionId>\
             <airsync:Options><airsync:FilterType>0</airsync:FilterType></airsync:Options>\
             </Collection></Collections></GetItemEstimate>",
            self.cols[folder].key, self.ids[folder]
        ));
        let res = self.post("GetItemEstimate", &body).await;
        let r = GetItemEstimateResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: GetItemEstimate ({e}): {}", self.name, res.xml()));
        let one = r.responses.first().unwrap_or_else(|| {
            panic!(
                "{}: GetItemEstimate without a Response: {}",
                self.name,
                res.xml()
            )
        });
        (one.status.code(), one.estimate)
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
        // Pings with a heartbeat of 1 s (never waited out: see the Ping step).
        extra_toml: "[devices]\nheartbeat_min_s = 1\n".into(),
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
        user: user.clone(),
        appended: 0,
        tag: format!("model s{seed} {}", opush_tests::unique("r")),
    };
    for f in FIXED {
        server.empty(f);
    }
    server.delete(PROJECTS);
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
            match rng.below(10) {
                0..=3 => {
                    let targets: Vec<&'static str> = model
                        .folders()
                        .into_iter()
                        .filter(|f| *f != "Trash")
                        .collect();
                    let folder = *rng.pick(&targets).unwrap();
                    let s = server.append(folder);
                    model.add(&s, folder);
                    note(
                        &mut journal,
                        format!("{step}: server appends {s} to {folder}"),
                    );
                    *tally.entry("server append").or_default() += 1;
                }
                4 | 5 => {
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
                        note(
                            &mut journal,
                            format!("{step}: server sets {flag} {on} on {s} in {folder}"),
                        );
                        *tally.entry("server flag").or_default() += 1;
                    }
                }
                6 => {
                    if let Some(s) = rng.pick(&subjects) {
                        let folder = model.by_subject[s].folder;
                        server.expunge(folder, s);
                        model.by_subject.remove(s);
                        note(
                            &mut journal,
                            format!("{step}: server expunges {s} from {folder}"),
                        );
                        *tally.entry("server expunge").or_default() += 1;
                    }
                }
                9 => {
                    // Projects comes and goes: deleted with what it holds,
                    // or created (again: a new UIDVALIDITY, UIDs from 1).
                    if model.projects {
                        server.delete(PROJECTS);
                        model.projects = false;
                        let gone = model.empty(PROJECTS);
                        note(
                            &mut journal,
                            format!("{step}: server deletes {PROJECTS}: {gone:?}"),
                        );
                        *tally.entry("server deletes folder").or_default() += 1;
                    } else if brought_back(&mut server, &mut model) {
                        note(
                            &mut journal,
                            format!("{step}: Dovecot brought {PROJECTS} back"),
                        );
                        *tally.entry("dovecot brought the folder back").or_default() += 1;
                    } else {
                        server.create(PROJECTS);
                        model.projects = true;
                        note(&mut journal, format!("{step}: server creates {PROJECTS}"));
                        *tally.entry("server creates folder").or_default() += 1;
                    }
                }
                _ => {
                    if let Some(s) = rng.pick(&subjects) {
                        let from = model.by_subject[s].folder;
                        let to = *rng
                            .pick(
                                &model
                                    .folders()
                                    .into_iter()
                                    .filter(|f| *f != from)
                                    .collect::<Vec<_>>(),
                            )
                            .unwrap();
                        server.move_to(from, s, to);
                        model.move_to(s, to);
                        note(
                            &mut journal,
                            format!("{step}: server moves {s} from {from} to {to}"),
                        );
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
            let gone = model.empty("Trash");
            note(
                &mut journal,
                format!("{step}: {} empties Trash: {gone:?}", d.name),
            );
            *tally.entry("device empties trash").or_default() += 1;
            continue;
        }
        if roll < 35 {
            // A device syncs the hierarchy.
            let d = &mut devices[di];
            let seen = d.folder_sync().await;
            note(
                &mut journal,
                format!("{step}: {} syncs the hierarchy: {seen:?}", d.name),
            );
            *tally.entry("device folder sync").or_default() += 1;
            continue;
        }
        if roll < 37 {
            // A device creates Projects, or deletes it, as it sees it.
            let d = &mut devices[di];
            if d.cols.contains_key(PROJECTS) {
                let status = d.delete_projects().await;
                note(
                    &mut journal,
                    format!("{step}: {} deletes {PROJECTS}: Status {status}", d.name),
                );
                match (status, model.projects) {
                    (1, true) => {
                        model.projects = false;
                        let gone = model.empty(PROJECTS);
                        note(&mut journal, format!("{step}: {PROJECTS} held {gone:?}"));
                        *tally.entry("device deletes folder").or_default() += 1;
                    }
                    // Gone already (the server side deleted it), or the
                    // device's hierarchy is behind: it syncs it.
                    (4 | 9, _) => {
                        d.folder_sync().await;
                        *tally.entry("device deletes folder, refused").or_default() += 1;
                    }
                    (s, exists) => panic!(
                        "{}",
                        ctx(&format!(
                            "{}: FolderDelete of {PROJECTS}: Status {s}, the folder exists: {exists}",
                            d.name
                        ))
                    ),
                }
            } else {
                let status = d.create_projects().await;
                note(
                    &mut journal,
                    format!("{step}: {} creates {PROJECTS}: Status {status}", d.name),
                );
                match (status, model.projects) {
                    (1, false) => {
                        model.projects = true;
                        *tally.entry("device creates folder").or_default() += 1;
                    }
                    // It exists already (the server side created it), or
                    // the device's hierarchy is behind: it syncs it.
                    (2 | 9, _) => {
                        d.folder_sync().await;
                        *tally.entry("device creates folder, refused").or_default() += 1;
                    }
                    (s, exists) => panic!(
                        "{}",
                        ctx(&format!(
                            "{}: FolderCreate of {PROJECTS}: Status {s}, the folder exists: {exists}",
                            d.name
                        ))
                    ),
                }
            }
            continue;
        }
        if roll < 49 {
            // A device Pings the folders it has synced: each one whose
            // items differ from IMAP's (something to sync) must be named
            // at once (Status 2). Pings with nothing to sync are not
            // sent: they would wait out their heartbeat.
            let d = &mut devices[di];
            let synced: Vec<&'static str> = FIXED
                .iter()
                .copied()
                .filter(|f| d.cols[f].key != "0")
                .collect();
            let behind: Vec<&'static str> = synced
                .iter()
                .copied()
                .filter(|f| d.shows(f) != model.holds(f))
                .collect();
            if behind.is_empty() {
                continue;
            }
            let (status, named) = d.ping(&synced).await;
            note(
                &mut journal,
                format!(
                    "{step}: {} pings {synced:?} (behind in {behind:?}): Status {status}, {named:?}",
                    d.name
                ),
            );
            if status == 7 {
                // The hierarchy changed since the device's last FolderSync
                // (Projects came or went): FolderSync first.
                d.folder_sync().await;
                *tally.entry("device ping: folder sync first").or_default() += 1;
                continue;
            }
            assert_eq!(status, 2, "{}", ctx(&format!("{}: Ping", d.name)));
            for f in &behind {
                assert!(
                    named.contains(f),
                    "{}\n{}",
                    ctx(&format!(
                        "{}: Ping did not name {f}, whose items differ from IMAP's: {named:?}\nshows {:?}\nIMAP {:?}",
                        d.name,
                        d.shows(f),
                        model.holds(f)
                    )),
                    history(&journal, &d.heard, &[])
                );
            }
            *tally.entry("device ping").or_default() += 1;
            continue;
        }
        let d = &mut devices[di];
        let known: Vec<&'static str> = d.cols.keys().copied().collect();
        let folder = *rng.pick(&known).unwrap();
        let synced = d.cols[folder].key != "0";
        if roll < 41 {
            // A device fetches one item it shows (ItemOperations): that
            // message, or "not found" when it is gone.
            let ids: Vec<String> = d.cols[folder].items.keys().cloned().collect();
            let Some(id) = rng.pick(&ids).cloned() else {
                continue;
            };
            let item = d.cols[folder].items[&id].clone();
            let current = model.current(&item).is_some();
            let (status, email) = d.fetch(folder, &id).await;
            note(
                &mut journal,
                format!(
                    "{step}: {} fetches {id} ({}) of {folder}: Status {status}",
                    d.name, item.subject
                ),
            );
            match (status, current) {
                (1, true) => {
                    let e = email.unwrap_or_else(|| panic!("{}", ctx("a Fetch without Properties")));
                    assert_eq!(
                        e.subject.as_deref(),
                        Some(item.subject.as_str()),
                        "{}",
                        ctx(&format!("{}: {id} fetched another message", d.name))
                    );
                    check_body(&d.name, folder, &item.subject, e.body.as_ref());
                    *tally.entry("device fetch").or_default() += 1;
                }
                (6, false) => {
                    *tally.entry("device fetch of gone").or_default() += 1;
                }
                (s, current) => panic!(
                    "{}\n{}",
                    ctx(&format!(
                        "{}: Fetch of {id} ({}) in {folder}: Status {s}, the message is {}; got {email:?}",
                        d.name,
                        item.subject,
                        if current { "current" } else { "gone" }
                    )),
                    history(&journal, &d.heard, &[item.subject.as_str()])
                ),
            }
            continue;
        }
        if roll < 45 {
            // GetItemEstimate, then a Sync big enough for everything.
            if !synced {
                continue;
            }
            let (status, estimate) = d.estimate(folder).await;
            let (_, more, sync_status) = d.sync(&model, folder, 100, &[], false).await;
            let commands = d.last_commands;
            note(&mut journal, format!(
                "{step}: {} estimates {folder}: Status {status}, {estimate:?}; the Sync: Status {sync_status}, {commands} commands",
                d.name
            ));
            match status {
                1 if sync_status == 1 && !more => {
                    let estimate = estimate.unwrap_or_else(|| panic!("{}", ctx("no Estimate")));
                    // Nothing happens between the two: the estimate is
                    // exactly what the Sync brings.
                    assert_eq!(
                        estimate as usize,
                        commands,
                        "{}",
                        ctx(&format!(
                            "{}: {folder} estimated {estimate}, the Sync then had {commands} commands",
                            d.name
                        ))
                    );
                    *tally.entry("device estimate").or_default() += 1;
                }
                1 => {}
                // The collection is gone (Projects deleted).
                2 if folder == PROJECTS => {
                    *tally.entry("device estimate of gone folder").or_default() += 1;
                }
                s => panic!(
                    "{}",
                    ctx(&format!(
                        "{}: GetItemEstimate of {folder}: Status {s}",
                        d.name
                    ))
                ),
            }
            continue;
        }
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
            let (replies, _, status) = d.sync(&model, folder, window, &changes, lose).await;
            if status != 1 {
                note(
                    &mut journal,
                    format!(
                    "{step}: {} syncs {folder} (window {window}) with {desc:?}: Status {status}",
                    d.name
                ),
                );
                *tally.entry("device sync of changed folder").or_default() += 1;
                continue;
            }
            *tally.entry("device sync").or_default() += 1;
            note(&mut journal, format!(
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
            let (mut status, mut new_id) = d.move_item(folder, &id, to, lose).await;
            // Status 5 (the move failed, try again: e.g. Dovecot closed
            // the session whose folder another client deleted): phones
            // send the move again.
            for _ in 0..3 {
                if status != 5 {
                    break;
                }
                *tally.entry("device move retried after 5").or_default() += 1;
                (status, new_id) = d.move_item(folder, &id, to, false).await;
            }
            *tally.entry("device move").or_default() += 1;
            note(&mut journal, format!(
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
    if brought_back(&mut server, &mut model) {
        note(
            &mut journal,
            format!("end: Dovecot brought {PROJECTS} back"),
        );
        *tally.entry("dovecot brought the folder back").or_default() += 1;
    }
    for d in &mut devices {
        d.folder_sync().await;
        for _ in 0..2 {
            for f in FOLDERS {
                d.sync_to_end(&model, f).await;
            }
        }
        let shows: Vec<&str> = d.cols.keys().copied().collect();
        let mut want = model.folders();
        want.sort();
        assert_eq!(
            shows, want,
            "seed {seed}: {} shows other folders than IMAP holds",
            d.name
        );
    }
    for f in model.folders() {
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
    for f in FIXED {
        server.empty(f);
    }
    server.delete(PROJECTS);
    for o in servers {
        o.stop().await;
    }
    if let Some(k) = keyspace {
        k.remove().await;
    }
}

/// An Add's body (plain text, truncated to 64 bytes) must be the one of
/// the message its subject names: the ServerId stands for that message.
fn check_body(device: &str, folder: &str, subject: &str, body: Option<&Body>) {
    let want = format!("body of {subject}");
    let data = body.and_then(|b| b.data.as_deref()).unwrap_or_default();
    let got = data.trim_end();
    assert!(
        got == want || (!got.is_empty() && want.starts_with(got)),
        "{device}: {folder}: {subject} came with the body {data:?}"
    );
}

/// Whether Dovecot brought `Projects` back after the server side deleted
/// it (the model then says it exists, empty). Dovecot's maildir can: a
/// session that had the folder open when it was deleted writes its index
/// into the folder's directory again, and the next access repairs that
/// directory into a mailbox (seen with opush's connections holding the
/// folder selected; messages are not brought back).
fn brought_back(server: &mut ServerSide, model: &mut Model) -> bool {
    if model.projects || !server.exists(PROJECTS) {
        return false;
    }
    model.projects = true;
    true
}

/// Adds a step to the journal (printed as it happens with
/// `OPUSH_MODEL_VERBOSE` set).
fn note(journal: &mut Vec<String>, step: String) {
    if std::env::var_os("OPUSH_MODEL_VERBOSE").is_some() {
        eprintln!("{step}");
    }
    journal.push(step);
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
