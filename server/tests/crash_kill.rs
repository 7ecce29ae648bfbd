//! Killing opush never loses or duplicates a device's mail: the real
//! `opush` binary runs as a child process on an embedded store, is
//! SIGKILLed (no graceful stop) in the middle of devices' work, and a new
//! one starts on the same store and port. The devices keep their own state
//! as a phone does (SyncKeys, the ServerIds they hold, their pending
//! changes) and retry a request whose answer they did not get, unchanged
//! (same SyncKey, same commands, same ClientId). At the end each device's
//! items are checked against IMAP, the truth: the same messages (no
//! missing one, no message under two ServerIds, no stale item), the same
//! read flags, and each device-side change made once.
//!
//! Where a kill lands is chosen with relays ([`Gate`]) between the phone
//! and opush (an answer produced, hence durable, then lost), between opush
//! and Dovecot (a command carried out by Dovecot whose answer opush never
//! gets, or one that never reaches it) and between opush and Postfix (a
//! submission cut before or after its DATA), and at random points with a
//! fixed seed.
//!
//! What it caught (each test failed before its fix): a Delete retried
//! after Dovecot carried it out but opush died before recording it got
//! Status 8 (the engine now answers a Delete of a vanished item with
//! success); a MoveItems retried after its answer was lost got Status 1
//! and the device kept a stale copy (the retry now gets the first answer);
//! a send killed between its record and its Sent copy's APPEND never had
//! its copy saved (the copy is kept in the store first); a 16.x draft Add
//! or edit retried after its APPEND was made but not recorded saved a
//! second draft (their Message-IDs now come from the ClientId, or from the
//! ServerId and the Change's content, and the retry finds the message).
//! Known and
//! accepted: a flag change carried out but not recorded comes back on the
//! retry as Status 7 with the server's version, which is the device's own;
//! a MoveItems carried out but not recorded is answered Status 1 and the
//! next Syncs show the move (a Delete in the source, an Add in the
//! destination); a send killed between the relay's acceptance and its
//! record goes out twice (docs/ARCHITECTURE.md, invariants), under one
//! Message-ID (random ones before) and with one copy in Sent.
//!
//! Services: the stack's Dovecot (127.0.0.1:1143) and Postfix (1025).
//! Users load1111-load1128 (load1111-load1130 are this file's).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opush_protocol::commands::compose::{ComposeRequest, Source};
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncResponse};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::move_items::MoveItemsResponse;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::commands::smart_reply::SmartReplyRequest;
use opush_protocol::commands::sync::{
    CommandResponse, ServerCommand, SyncCollectionResponse, SyncResponse,
};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_tests::eas::{find_text, wbxml_of, EasClient, HttpResponse};
use opush_tests::{demo_password, fill, require, unique, RawImap, DOVECOT_IMAP, POSTFIX_SMTP};

const OPUSH: &str = env!("CARGO_BIN_EXE_opush");
const V: &str = "14.1";
const PV: ProtocolVersion = ProtocolVersion::V14_1;

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// opush as a process

/// `opush serve` as a child process on an embedded store in `dir`, always
/// on the same port.
struct Opush {
    dir: PathBuf,
    config: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
    kills: u32,
}

impl Opush {
    /// Writes the configuration (IMAP at `imap`, SMTP at `smtp`,
    /// `storage_extra` in `[storage]`) and installs the schema.
    fn new(dir: &Path, imap: SocketAddr, smtp: SocketAddr, storage_extra: &str) -> Opush {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join("opush.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 public_url = \"https://mail.example.test\"\n\
                 [storage]\nbackend = \"embedded\"\npath = \"{}\"\n{storage_extra}\n\
                 [imap]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 10000\n\
                 [smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
                 [policy]\nrequire_provisioning = false\n",
                dir.join("store").display(),
                imap.port(),
                smtp.port(),
            ),
        )
        .unwrap();
        let out = Command::new(OPUSH)
            .args(["schema", "install", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "opush schema install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Opush {
            dir: dir.to_path_buf(),
            config,
            addr,
            child: None,
            kills: 0,
        }
    }

    /// Starts `opush serve` and waits (20 s at most) until it listens. The
    /// port is the one the previous process had: an outgoing connection of
    /// another test may hold it for a moment after a kill, so a start that
    /// found it in use is tried again (a few times); any other early exit
    /// fails with the end of the server's log.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "opush runs already");
        let deadline = Instant::now() + Duration::from_secs(20);
        let log_path = self.dir.join("opush.log");
        let mut tries = 0;
        let child = loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let logged = std::fs::metadata(&log_path).map_or(0, |m| m.len());
            let mut child = Command::new(OPUSH)
                .arg("serve")
                .arg("--config")
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let exited = loop {
                if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                    break None;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                assert!(
                    Instant::now() < deadline,
                    "opush did not listen on {}",
                    self.addr
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let Some(status) = exited else {
                break child;
            };
            let text = std::fs::read(&log_path).unwrap_or_default();
            let text =
                String::from_utf8_lossy(&text[(logged as usize).min(text.len())..]).into_owned();
            tries += 1;
            if tries < 10 && text.to_ascii_lowercase().contains("in use") {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            panic!("opush serve ended ({status}) before it listened:\n{text}");
        };
        self.child = Some(child);
    }

    /// SIGKILL: no graceful stop, nothing flushed.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
            self.kills += 1;
        }
    }

    /// SIGKILL, then a new opush on the same store and port.
    async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }
}

impl Drop for Opush {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Relays that pick where a kill lands

/// Which way bytes flow through a [`Gate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Client to server (a request, a command).
    Up,
    /// Server to client (an answer).
    Down,
}

/// What happens to the bytes that carry the armed pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trip {
    /// They go on, and so does the rest of the request (the server gets the
    /// whole command, an APPEND's literal too); no answer goes back.
    Forward,
    /// They are dropped, and nothing after them goes either way.
    Swallow,
}

#[derive(Default)]
struct GateState {
    armed: Mutex<Option<(Way, Vec<u8>, Trip)>>,
    tripped: AtomicBool,
}

/// A TCP relay that, once armed with a pattern, freezes the connection the
/// pattern crosses ([`Trip`]): from then on no answer is relayed on it (the
/// client waits for one that never comes) until one side closes.
struct Gate {
    addr: SocketAddr,
    state: Arc<GateState>,
}

impl Gate {
    fn start(upstream: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(GateState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                // Whether each way (up, down) is frozen.
                let frozen = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
                for (from, to, way) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        Way::Up,
                    ),
                    (
                        server.try_clone().unwrap(),
                        client.try_clone().unwrap(),
                        Way::Down,
                    ),
                ] {
                    let (st, frozen) = (st.clone(), frozen.clone());
                    std::thread::spawn(move || pump(from, to, way, &st, &frozen));
                }
            }
        });
        Gate { addr, state }
    }

    /// The next connection whose `way` carries `pattern` freezes there.
    fn arm(&self, way: Way, pattern: &str, trip: Trip) {
        self.state.tripped.store(false, Ordering::SeqCst);
        *self.state.armed.lock().unwrap() = Some((way, pattern.as_bytes().to_vec(), trip));
    }

    fn disarm(&self) {
        *self.state.armed.lock().unwrap() = None;
    }

    /// Waits (30 s at most) until the armed pattern went through.
    async fn tripped(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.state.tripped.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the gate never tripped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    way: Way,
    st: &GateState,
    frozen: &[AtomicBool; 2],
) {
    let mine = usize::from(way == Way::Down);
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen[mine].load(Ordering::SeqCst) {
            continue;
        }
        let chunk = &buf[..n];
        let mut hit = None;
        {
            let mut armed = st.armed.lock().unwrap();
            if let Some((w, pattern, trip)) = armed.as_ref() {
                if *w == way {
                    let mut seen = tail.clone();
                    seen.extend_from_slice(chunk);
                    if seen.windows(pattern.len()).any(|x| x == pattern.as_slice()) {
                        hit = Some(*trip);
                        // No answer goes back; with Swallow, nothing more
                        // goes either way.
                        frozen[1].store(true, Ordering::SeqCst);
                        if *trip == Trip::Swallow {
                            frozen[0].store(true, Ordering::SeqCst);
                        }
                        *armed = None;
                    } else {
                        let keep = pattern.len().saturating_sub(1).min(seen.len());
                        tail = seen[seen.len() - keep..].to_vec();
                    }
                }
            }
        }
        match hit {
            Some(trip) => {
                if trip == Trip::Forward {
                    let _ = to.write_all(chunk);
                }
                st.tripped.store(true, Ordering::SeqCst);
            }
            None => {
                if to.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// The phone

/// A message as a device shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Mail {
    subject: String,
    read: bool,
}

/// One folder on the device.
#[derive(Debug, Default, Clone)]
struct Folder {
    key: String,
    items: BTreeMap<String, Mail>,
}

/// A device keeping its own state, retrying what got no answer.
struct Phone {
    name: String,
    /// Its protocol version.
    pv: ProtocolVersion,
    c: EasClient,
    /// CollectionId of each folder, by display name.
    folders: BTreeMap<String, String>,
    /// Folders synced, by CollectionId.
    synced: BTreeMap<String, Folder>,
    /// Requests sent again after getting no answer.
    retries: u32,
    /// HTTP statuses of 500 and more seen (retried).
    server_errors: Vec<u16>,
}

impl Phone {
    fn new(addr: SocketAddr, user: &str, device_id: &str) -> Phone {
        Phone::with_version(addr, user, device_id, V)
    }

    fn with_version(addr: SocketAddr, user: &str, device_id: &str, version: &str) -> Phone {
        Phone {
            name: format!("{user}/{device_id}"),
            pv: opush_protocol::headers::parse_protocol_version(version).unwrap(),
            c: EasClient::new(addr, user, &demo_password(), device_id, version),
            folders: BTreeMap::new(),
            synced: BTreeMap::new(),
            retries: 0,
            server_errors: Vec::new(),
        }
    }

    /// POSTs `cmd` until an answer comes (60 s at most): a transport
    /// failure or a 5xx is retried with the very same request, as devices
    /// do.
    async fn post(&mut self, cmd: &str, body: &[u8]) -> HttpResponse {
        let query = self.c.plain_query(cmd, "");
        let target = format!("/Microsoft-Server-ActiveSync?{query}");
        let headers = vec![
            ("Authorization".to_owned(), self.c.authorization.clone()),
            ("User-Agent".to_owned(), self.c.user_agent.clone()),
            (
                "Content-Type".to_owned(),
                "application/vnd.ms-sync.wbxml".to_owned(),
            ),
            ("MS-ASProtocolVersion".to_owned(), self.c.version.clone()),
        ];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.c.try_send("POST", &target, &headers, body).await {
                Ok(r) if r.status < 500 => return r,
                Ok(r) => self.server_errors.push(r.status),
                Err(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{}: {cmd} got no answer for 60 s",
                self.name
            );
            self.retries += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
        assert_eq!(res.status, 200, "{}: FolderSync", self.name);
        let r = FolderSyncResponse::from_element(&res.element(), self.pv).unwrap();
        assert_eq!(
            r.status.code(),
            1,
            "{}: FolderSync {}",
            self.name,
            res.xml()
        );
        for c in r.changes.iter().flatten() {
            if let FolderChange::Add(f) = c {
                self.folders
                    .insert(f.display_name.clone(), f.server_id.0.clone());
            }
        }
    }

    fn folder(&self, name: &str) -> String {
        self.folders
            .get(name)
            .unwrap_or_else(|| panic!("{}: no folder {name}: {:?}", self.name, self.folders))
            .clone()
    }

    /// One Sync of `col` with the device's key (SyncKey 0 the first time)
    /// and `commands`; its changes applied to the device. The collection's
    /// Status must be 1: a Status 3 would mean the server forgot a key it
    /// answered.
    async fn sync(&mut self, col: &str, window: u32, commands: &str) -> SyncCollectionResponse {
        let key = self
            .synced
            .get(col)
            .map_or_else(|| "0".to_owned(), |f| f.key.clone());
        let get_changes = if key == "0" {
            String::new()
        } else {
            format!("<GetChanges/><WindowSize>{window}</WindowSize>")
        };
        let xml = format!(
            "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\" xmlns:email=\"Email:\">\
             <Collections><Collection><SyncKey>{key}</SyncKey><CollectionId>{col}</CollectionId>\
             {get_changes}<Options><airsyncbase:BodyPreference><airsyncbase:Type>1</airsyncbase:Type>\
             <airsyncbase:TruncationSize>100</airsyncbase:TruncationSize></airsyncbase:BodyPreference>\
             </Options>{commands}</Collection></Collections></Sync>"
        );
        let res = self.post("Sync", &wbxml_of(&xml)).await;
        assert_eq!(res.status, 200, "{}: Sync HTTP status", self.name);
        let r = SyncResponse::from_element(&res.element(), self.pv)
            .unwrap_or_else(|e| panic!("{}: Sync answer ({e}): {}", self.name, res.xml()));
        let c = r
            .collections
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{}: no collection in {}", self.name, res.xml()));
        assert_eq!(
            c.status.map(|s| s.code()),
            Some(1),
            "{}: Sync of {col} with key {key}: {}",
            self.name,
            res.xml()
        );
        let folder = self.synced.entry(col.to_owned()).or_default();
        folder.key = c.sync_key.0.clone();
        for cmd in c.commands.iter().flatten() {
            match cmd {
                ServerCommand::Add {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    let mail = Mail {
                        subject: e.subject.clone().unwrap_or_default(),
                        read: e.read == Some(true),
                    };
                    let old = folder.items.insert(server_id.0.clone(), mail);
                    assert!(old.is_none(), "{}: {} added twice", self.name, server_id.0);
                }
                ServerCommand::Change {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    let item = folder.items.get_mut(&server_id.0).unwrap_or_else(|| {
                        panic!("{}: a change of unknown {}", self.name, server_id.0)
                    });
                    if let Some(read) = e.read {
                        item.read = read;
                    }
                }
                ServerCommand::Delete { server_id, .. }
                | ServerCommand::SoftDelete { server_id } => {
                    folder.items.remove(&server_id.0).unwrap_or_else(|| {
                        panic!("{}: a delete of unknown {}", self.name, server_id.0)
                    });
                }
                other => panic!("{}: unexpected {other:?}", self.name),
            }
        }
        c
    }

    /// Syncs `col` until nothing more is available.
    async fn sync_to_end(&mut self, col: &str, window: u32) {
        if !self.synced.contains_key(col) {
            self.sync(col, window, "").await;
        }
        for _ in 0..1000 {
            if !self.sync(col, window, "").await.more_available {
                return;
            }
        }
        panic!("{}: the Sync of {col} never ended", self.name);
    }

    /// The ServerId of the item whose subject is `subject` in `col`.
    fn server_id(&self, col: &str, subject: &str) -> String {
        let found: Vec<&String> = self.synced[col]
            .items
            .iter()
            .filter(|(_, m)| m.subject == subject)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(found.len(), 1, "{}: {subject} in {col}", self.name);
        found[0].clone()
    }

    /// MoveItems of one item; on Status 3 the device moves it locally
    /// under its new ServerId (as phones do), else it keeps it.
    async fn move_item(&mut self, src: &str, id: &str, dst: &str) -> u16 {
        let body = wbxml_of(&format!(
            "<MoveItems xmlns=\"Move:\"><Move><SrcMsgId>{id}</SrcMsgId><SrcFldId>{src}</SrcFldId>\
             <DstFldId>{dst}</DstFldId></Move></MoveItems>"
        ));
        let res = self.post("MoveItems", &body).await;
        assert_eq!(res.status, 200, "{}: MoveItems", self.name);
        let r = MoveItemsResponse::from_element(&res.element(), PV).unwrap();
        let status = r.responses[0].status.code();
        if status == 3 {
            let new_id = r.responses[0].dst_msg_id.clone().expect("a DstMsgId").0;
            let mail = self
                .synced
                .get_mut(src)
                .unwrap()
                .items
                .remove(id)
                .expect("the moved item");
            let old = self
                .synced
                .entry(dst.to_owned())
                .or_default()
                .items
                .insert(new_id.clone(), mail);
            assert!(old.is_none(), "{}: moved onto {new_id}", self.name);
        }
        status
    }

    /// What the device shows in `col`, sorted (duplicates kept).
    fn shown(&self, col: &str) -> Vec<Mail> {
        let mut v: Vec<Mail> = self.synced[col].items.values().cloned().collect();
        v.sort();
        v
    }
}

// ---------------------------------------------------------------------------
// IMAP, the truth

/// Every message of `mailbox`, sorted (duplicates kept).
fn in_imap(imap: &mut RawImap, mailbox: &str) -> Vec<Mail> {
    imap.ok(&format!("SELECT \"{mailbox}\""));
    let (lines, ok) = imap.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(ok.starts_with("OK"), "{ok}");
    let mut v: Vec<Mail> = lines
        .iter()
        .filter(|l| l.contains(" FETCH "))
        .map(|l| Mail {
            subject: l
                .split_once("Subject: ")
                .and_then(|(_, r)| r.split_once('\r'))
                .map(|(s, _)| s.to_owned())
                .unwrap_or_default(),
            read: l.contains("\\Seen"),
        })
        .collect();
    imap.ok("UNSELECT");
    v.sort();
    v
}

/// Fails unless the phone shows exactly what `mailbox` holds.
fn assert_same(phone: &Phone, col: &str, imap: &mut RawImap, mailbox: &str) {
    let want = in_imap(imap, mailbox);
    let have = phone.shown(col);
    if have != want {
        let missing: Vec<_> = want.iter().filter(|m| !have.contains(m)).collect();
        let extra: Vec<_> = have.iter().filter(|m| !want.contains(m)).collect();
        panic!(
            "{}: {mailbox} as the device shows it ({} items) is not as IMAP has it ({}): \
             missing {missing:?}, extra or stale {extra:?}",
            phone.name,
            have.len(),
            want.len()
        );
    }
}

/// Empties `mailbox` (creating it when missing).
fn empty(imap: &mut RawImap, mailbox: &str) {
    imap.cmd(&format!("CREATE \"{mailbox}\""));
    imap.cmd(&format!("SUBSCRIBE \"{mailbox}\""));
    imap.ok(&format!("SELECT \"{mailbox}\""));
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.ok("EXPUNGE");
    imap.ok("UNSELECT");
}

/// Waits (10 s at most) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small deterministic generator (xorshift), so the random kill points
/// are the same on every run.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn direct(svc: opush_tests::Service) -> SocketAddr {
    require(svc)
}

// ---------------------------------------------------------------------------
// Initial sync

/// An initial sync of 300 messages, opush killed every few windows: after
/// a window's answer arrived, after one was produced (so durable) and lost
/// on its way, and at a random moment while a window is in flight. The
/// device goes on with its key or retries it; it ends with exactly the
/// INBOX, and never got Status 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_sync_killed_around_and_inside_windows_ends_with_the_mailbox() {
    let user = "load1111@load.test";
    let mut imap = RawImap::login(user);
    fill::ensure(&mut imap, "INBOX", 300, "crashsafe-300", |i| {
        fill::text_message("crashsafe-300", i)
    });
    imap.ok("SELECT INBOX");
    imap.ok("UID STORE 1:* -FLAGS.SILENT (\\Seen)");
    imap.ok("UID STORE 1:40 +FLAGS.SILENT (\\Seen)");
    imap.ok("UNSELECT");
    let dir = tempfile::tempdir().unwrap();
    let mut opush = Opush::new(dir.path(), direct(DOVECOT_IMAP), direct(POSTFIX_SMTP), "");
    opush.start().await;
    let http = Gate::start(opush.addr);
    let mut phone = Phone::new(http.addr, user, "CRASHINIT");
    phone.folder_sync().await;
    let inbox = phone.folder("INBOX");
    phone.sync(&inbox, 25, "").await;
    let mut rng = Seeded(0x5eed_0001);
    let mut lost = 0;
    for window in 0.. {
        assert!(window < 100, "the initial sync does not end");
        let more = match window % 3 {
            // Answered, then killed.
            0 => {
                let more = phone.sync(&inbox, 25, "").await.more_available;
                opush.restart().await;
                more
            }
            // Answered by opush (so durable) but lost; killed before the
            // device asks again.
            1 => {
                http.arm(Way::Down, "HTTP/1.1 ", Trip::Swallow);
                let (r, ()) = tokio::join!(phone.sync(&inbox, 25, ""), async {
                    http.tripped().await;
                    lost += 1;
                    opush.restart().await;
                });
                r.more_available
            }
            // Killed at a random moment while the window is in flight.
            _ => {
                let delay = Duration::from_millis(rng.below(40));
                let (r, ()) = tokio::join!(phone.sync(&inbox, 25, ""), async {
                    tokio::time::sleep(delay).await;
                    opush.restart().await;
                });
                r.more_available
            }
        };
        if !more {
            break;
        }
    }
    http.disarm();
    // Nothing left to send.
    let last = phone.sync(&inbox, 25, "").await;
    assert!(
        last.commands.as_ref().is_none_or(|c| c.is_empty()),
        "{last:?}"
    );
    assert_same(&phone, &inbox, &mut imap, "INBOX");
    eprintln!(
        "initial sync: {} kills, {lost} answers lost, {} retries",
        opush.kills, phone.retries
    );
    assert!(
        lost >= 3 && opush.kills >= 9,
        "{lost} lost, {} kills",
        opush.kills
    );
    assert!(
        phone.retries >= lost,
        "the device retried {}",
        phone.retries
    );
    assert!(
        !phone.server_errors.contains(&500),
        "{:?}",
        phone.server_errors
    );
}

// ---------------------------------------------------------------------------
// Many devices, checkpoints all the time

/// Eight devices of six users sync at once while opush checkpoints every
/// 2 ms and is killed at random moments while they do (fixed seed): every
/// device goes on with the key it holds (no Status 3 for a key the server
/// answered), or retries a lost one, and ends with exactly its INBOX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_killed_amid_checkpoints_go_on_with_their_keys() {
    let users = [
        "load1112@load.test",
        "load1113@load.test",
        "load1114@load.test",
        "load1115@load.test",
        "load1116@load.test",
        "load1117@load.test",
    ];
    for user in users {
        let mut imap = RawImap::login(user);
        fill::ensure(&mut imap, "INBOX", 120, "crashsafe-120", |i| {
            fill::text_message("crashsafe-120", i)
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opush = Opush::new(
        dir.path(),
        direct(DOVECOT_IMAP),
        direct(POSTFIX_SMTP),
        "checkpoint_ms = 2",
    );
    opush.start().await;
    let addr = opush.addr;
    let devices: Vec<(&str, String)> = users
        .iter()
        .map(|u| (*u, "CRASHBURST1".to_owned()))
        .chain(users[..2].iter().map(|u| (*u, "CRASHBURST2".to_owned())))
        .collect();
    let done = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for (user, device) in devices.clone() {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut phone = Phone::new(addr, user, &device);
            phone.folder_sync().await;
            let inbox = phone.folder("INBOX");
            phone.sync_to_end(&inbox, 10).await;
            done.fetch_add(1, Ordering::SeqCst);
            (phone, inbox)
        }));
    }
    // Kills at random moments (fixed seed) for as long as devices sync, at
    // least five and at most twenty: on a fast machine the devices can be
    // done before a kill at fixed times lands, and nothing is then cut.
    let mut rng = Seeded(0x5eed_0002);
    let devices_n = u32::try_from(devices.len()).unwrap();
    while opush.kills < 5 || (done.load(Ordering::SeqCst) < devices_n && opush.kills < 20) {
        tokio::time::sleep(Duration::from_millis(30 + rng.below(120))).await;
        opush.restart().await;
    }
    let mut retried = 0;
    for t in tasks {
        let (phone, inbox) = t.await.unwrap();
        let user = phone.c.login.clone();
        let mut imap = RawImap::login(&user);
        assert_same(&phone, &inbox, &mut imap, "INBOX");
        assert!(
            !phone.server_errors.contains(&500),
            "{:?}",
            phone.server_errors
        );
        retried += phone.retries;
    }
    // A restart that finds records in the journal (written and
    // acknowledged since the last checkpoint) says so in its log.
    let log = std::fs::read_to_string(dir.path().join("opush.log")).unwrap();
    let replays = log.matches("journal replayed").count();
    eprintln!(
        "checkpoint burst: {} kills, {retried} retries, {replays} journal replays",
        opush.kills
    );
    assert!(opush.kills >= 5);
    assert!(retried > 0, "no device was cut off by a kill");
    assert!(replays > 0, "no kill left writes for the journal to replay");
}

// ---------------------------------------------------------------------------
// Device-side changes

/// Read flags, deletes (moves to Trash) and MoveItems, each cut by a kill:
/// once after Dovecot carried the change out but before opush recorded it
/// (its answer held back), once after opush answered (so recorded) with
/// the answer lost. The device retries each request as it was; each change
/// is made once, nothing else moves, and the device ends with exactly what
/// IMAP holds in all three folders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_changes_cut_by_a_kill_and_retried_take_effect_once() {
    let user = "load1120@load.test";
    let tag = unique("crashchg");
    let moved = "CrashMoved";
    let mut imap = RawImap::login(user);
    empty(&mut imap, "INBOX");
    empty(&mut imap, "Trash");
    empty(&mut imap, moved);
    fill::append_all(
        &mut imap,
        "INBOX",
        (0..12).map(|i| {
            format!(
                "From: a@example.test\r\nTo: {user}\r\nSubject: {tag} m{i:02}\r\n\
                 Message-ID: <{tag}-{i}@opush.test>\r\nDate: Sat, 28 Nov 2026 10:00:{i:02} +0000\r\n\r\nbody {i}\r\n"
            )
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let dovecot = Gate::start(direct(DOVECOT_IMAP));
    let mut opush = Opush::new(dir.path(), dovecot.addr, direct(POSTFIX_SMTP), "");
    opush.start().await;
    let http = Gate::start(opush.addr);
    let mut phone = Phone::new(http.addr, user, "CRASHCHG");
    phone.folder_sync().await;
    let (inbox, trash, dst) = (
        phone.folder("INBOX"),
        phone.folder("Trash"),
        phone.folder(moved),
    );
    for col in [&inbox, &trash, &dst] {
        phone.sync_to_end(col, 50).await;
    }
    let m = |i: u32| format!("{tag} m{i:02}");
    let read = |id: &str| {
        format!(
            "<Commands><Change><ServerId>{id}</ServerId><ApplicationData>\
             <email:Read>1</email:Read></ApplicationData></Change></Commands>"
        )
    };
    let delete =
        |id: &str| format!("<Commands><Delete><ServerId>{id}</ServerId></Delete></Commands>");
    let seen = |imap: &mut RawImap, subject: &str| {
        in_imap(imap, "INBOX")
            .iter()
            .any(|x| x.subject == subject && x.read)
    };
    let count = |imap: &mut RawImap, mailbox: &str, subject: &str| {
        in_imap(imap, mailbox)
            .iter()
            .filter(|x| x.subject == subject)
            .count()
    };

    // 1. Read flag: Dovecot stores it, opush is killed before recording it.
    let id = phone.server_id(&inbox, &m(0));
    dovecot.arm(Way::Up, "UID STORE", Trip::Forward);
    let commands = read(&id);
    let (r, ()) = tokio::join!(phone.sync(&inbox, 50, &commands), async {
        dovecot.tripped().await;
        until("m00 read in IMAP", || seen(&mut imap, &m(0))).await;
        opush.restart().await;
    });
    // Dovecot holds the flag already: the retry sees it as the server's
    // own change, so the device's Change may get Status 7 (server wins)
    // and the server's version, which is the device's.
    check_replies(&r, &[1, 7], "read, kill before recording");
    phone
        .synced
        .get_mut(&inbox)
        .unwrap()
        .items
        .get_mut(&id)
        .unwrap()
        .read = true;

    // 2. Delete: Dovecot moves it to Trash, opush is killed before recording it.
    let id = phone.server_id(&inbox, &m(1));
    dovecot.arm(Way::Up, "UID MOVE", Trip::Forward);
    let commands = delete(&id);
    let (r, ()) = tokio::join!(phone.sync(&inbox, 50, &commands), async {
        dovecot.tripped().await;
        until("m01 in Trash", || count(&mut imap, "Trash", &m(1)) == 1).await;
        opush.restart().await;
    });
    check_replies(&r, &[1], "delete, kill before recording");
    phone.synced.get_mut(&inbox).unwrap().items.remove(&id);

    // 3. MoveItems: Dovecot moves it, opush is killed before recording it.
    let id = phone.server_id(&inbox, &m(2));
    dovecot.arm(Way::Up, "UID MOVE", Trip::Forward);
    let (status_before_record, ()) = tokio::join!(phone.move_item(&inbox, &id, &dst), async {
        dovecot.tripped().await;
        until("m02 moved", || count(&mut imap, moved, &m(2)) == 1).await;
        opush.restart().await;
    });

    // 4. Read and delete, recorded and answered; the answer lost.
    let (id3, id4) = (
        phone.server_id(&inbox, &m(3)),
        phone.server_id(&inbox, &m(4)),
    );
    let both = format!(
        "{}{}",
        read(&id3).replace("</Commands>", ""),
        delete(&id4).replace("<Commands>", "")
    );
    http.arm(Way::Down, "HTTP/1.1 ", Trip::Swallow);
    let (r, ()) = tokio::join!(phone.sync(&inbox, 50, &both), async {
        http.tripped().await;
        opush.restart().await;
    });
    check_replies(&r, &[1], "read and delete, answer lost");
    {
        let items = &mut phone.synced.get_mut(&inbox).unwrap().items;
        items.get_mut(&id3).unwrap().read = true;
        items.remove(&id4);
    }

    // 5. MoveItems recorded and answered; the answer lost.
    let id = phone.server_id(&inbox, &m(5));
    http.arm(Way::Down, "HTTP/1.1 ", Trip::Swallow);
    let (status_after_record, ()) = tokio::join!(phone.move_item(&inbox, &id, &dst), async {
        http.tripped().await;
        opush.restart().await;
    });
    assert_eq!(
        status_after_record, 3,
        "a MoveItems retried after its answer was lost succeeds (it was carried out)"
    );

    // Each change made once, nothing else touched.
    assert!(seen(&mut imap, &m(0)) && seen(&mut imap, &m(3)));
    for (mailbox, i) in [("Trash", 1), ("Trash", 4), (moved, 2), (moved, 5)] {
        assert_eq!(count(&mut imap, mailbox, &m(i)), 1, "{} in {mailbox}", m(i));
    }
    assert_eq!(in_imap(&mut imap, "INBOX").len(), 12 - 4);
    assert_eq!(in_imap(&mut imap, "Trash").len(), 2);
    assert_eq!(in_imap(&mut imap, moved).len(), 2);
    // The device catches up and holds exactly what IMAP holds.
    for col in [&inbox, &trash, &dst] {
        phone.sync_to_end(col, 50).await;
    }
    assert_same(&phone, &inbox, &mut imap, "INBOX");
    assert_same(&phone, &trash, &mut imap, "Trash");
    assert_same(&phone, &dst, &mut imap, moved);
    eprintln!("MoveItems made but not recorded, retried: Status {status_before_record}");
    assert!(
        [1, 3, 5].contains(&status_before_record),
        "MoveItems whose move was made but not recorded: {status_before_record}"
    );
    assert!(
        !phone.server_errors.contains(&500),
        "{:?}",
        phone.server_errors
    );
}

/// Fails if a client command of `r` got a status not in `allowed`.
fn check_replies(r: &SyncCollectionResponse, allowed: &[u16], what: &str) {
    for reply in r.responses.iter().flatten() {
        let status = match reply {
            CommandResponse::Add { status, .. }
            | CommandResponse::Change { status, .. }
            | CommandResponse::Delete { status, .. }
            | CommandResponse::Fetch { status, .. } => status.code(),
        };
        assert!(allowed.contains(&status), "{what}: {reply:?}");
    }
}

// ---------------------------------------------------------------------------
// Sending

/// A SendMail cut by a kill before the relay got the message (its DATA
/// held), and a SmartReply cut after the relay accepted it and opush
/// recorded its ClientId but before the Sent copy reached IMAP: each
/// retried with its ClientId, each message arrives once and is in Sent
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_by_a_kill_and_retried_goes_out_once_with_one_sent_copy() {
    let user = "load1125@load.test";
    let tag = unique("crashsend");
    let mut imap = RawImap::login(user);
    empty(&mut imap, "INBOX");
    imap.append_to_inbox(&format!("{tag} original"));
    let dir = tempfile::tempdir().unwrap();
    let dovecot = Gate::start(direct(DOVECOT_IMAP));
    let postfix = Gate::start(direct(POSTFIX_SMTP));
    let mut opush = Opush::new(dir.path(), dovecot.addr, postfix.addr, "");
    opush.start().await;
    let mut phone = Phone::new(opush.addr, user, "CRASHSEND");
    phone.folder_sync().await;
    let inbox = phone.folder("INBOX");
    phone.sync_to_end(&inbox, 50).await;
    let original = phone.server_id(&inbox, &format!("{tag} original"));
    let count = |imap: &mut RawImap, mailbox: &str, subject: &str| {
        imap.search_subject(mailbox, subject).len()
    };

    // 1. SendMail: killed while the relay waits for the message.
    let subject = format!("{tag} sent");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(format!("{tag}-1")),
            save_in_sent_items: true,
            mime: format!(
                "To: {user}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nsent once\r\n"
            )
            .into_bytes(),
            ..ComposeRequest::default()
        })
        .to_element(PV),
    );
    postfix.arm(Way::Up, "DATA\r\n", Trip::Forward);
    let (res, ()) = tokio::join!(phone.post("SendMail", &body), async {
        postfix.tripped().await;
        opush.restart().await;
    });
    assert_eq!(res.status, 200);
    assert!(res.body.is_empty(), "SendMail: {}", res.xml());

    // 2. SmartReply: the relay accepted it and its ClientId is recorded,
    // the Sent copy's APPEND never reaches Dovecot.
    let reply_subject = format!("Re: {tag} original");
    let body = encode_to_vec(
        &SmartReplyRequest(ComposeRequest {
            client_id: Some(format!("{tag}-2")),
            save_in_sent_items: true,
            source: Some(Source {
                folder_id: Some(inbox.clone()),
                item_id: Some(original.clone()),
                ..Source::default()
            }),
            mime: format!(
                "To: {user}\r\nSubject: {reply_subject}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nreplied once\r\n"
            )
            .into_bytes(),
            ..ComposeRequest::default()
        })
        .to_element(PV),
    );
    dovecot.arm(Way::Up, "APPEND", Trip::Swallow);
    let (res, ()) = tokio::join!(phone.post("SmartReply", &body), async {
        dovecot.tripped().await;
        opush.restart().await;
    });
    assert_eq!(res.status, 200);
    // The retry is told the message went already (118), or that it went.
    if !res.body.is_empty() {
        assert_eq!(
            find_text(&res.element(), "Status").as_deref(),
            Some("118"),
            "SmartReply: {}",
            res.xml()
        );
    }

    // Each message once in the INBOX (through Postfix) and once in Sent.
    // A copy whose try the kill cut is claimed until that try's bound
    // (twice `timeout_ms` + 3 s: 23 s here), which the restarted process
    // waits out before its own try: the killed try may still be on its way.
    for s in [&subject, &reply_subject] {
        imap.wait_for_subject("INBOX", s);
        let deadline = Instant::now() + Duration::from_secs(90);
        while count(&mut imap, "Sent", s) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Time for a second delivery or copy to show up, if one were coming.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in [&subject, &reply_subject] {
        assert_eq!(count(&mut imap, "INBOX", s), 1, "{s} delivered once");
        assert_eq!(count(&mut imap, "Sent", s), 1, "{s} once in Sent");
    }
    assert!(
        !phone.server_errors.contains(&500),
        "{:?}",
        phone.server_errors
    );
}

/// The Message-IDs of the messages of `mailbox` whose Subject contains
/// `subject`.
fn message_ids(imap: &mut RawImap, mailbox: &str, subject: &str) -> Vec<String> {
    let uids = imap.search_subject(mailbox, subject);
    uids.iter()
        .map(|uid| {
            let (lines, ok) = imap.cmd(&format!(
                "UID FETCH {uid} BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
            ));
            assert!(ok.starts_with("OK"), "{ok}");
            let text = lines.concat();
            text.split_once("Message-ID:")
                .or_else(|| text.split_once("Message-Id:"))
                .map(|(_, r)| r.split('\r').next().unwrap_or("").trim().to_owned())
                .unwrap_or_else(|| panic!("no Message-ID in {text:?}"))
        })
        .collect()
}

/// The one window left: a SendMail killed after the relay accepted the
/// message (its answer to the end of DATA held back) and before opush
/// recorded the ClientId. Nothing tells the retry whether the relay got
/// it, so it goes out again rather than risk losing it; both deliveries
/// carry the same Message-ID (derived from the ClientId), so receivers can
/// tell them as one, and Sent holds one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_after_the_relay_accepted_it_goes_again_under_one_message_id() {
    let user = "load1126@load.test";
    let tag = unique("crashdata");
    let mut imap = RawImap::login(user);
    let dir = tempfile::tempdir().unwrap();
    let postfix = Gate::start(direct(POSTFIX_SMTP));
    let mut opush = Opush::new(dir.path(), direct(DOVECOT_IMAP), postfix.addr, "");
    opush.start().await;
    let mut phone = Phone::new(opush.addr, user, "CRASHDATA");
    phone.folder_sync().await;
    let subject = format!("{tag} sent");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(format!("{tag}-1")),
            save_in_sent_items: true,
            mime: format!(
                "To: {user}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\naccepted, then killed\r\n"
            )
            .into_bytes(),
            ..ComposeRequest::default()
        })
        .to_element(PV),
    );
    postfix.arm(Way::Up, "\r\n.\r\n", Trip::Forward);
    let (res, ()) = tokio::join!(phone.post("SendMail", &body), async {
        postfix.tripped().await;
        // Delivered: the relay had accepted it.
        RawImap::login(user).wait_for_subject("INBOX", &subject);
        opush.restart().await;
    });
    assert_eq!(res.status, 200);
    assert!(res.body.is_empty(), "SendMail: {}", res.xml());
    let deadline = Instant::now() + Duration::from_secs(20);
    while (imap.search_subject("INBOX", &subject).len() < 2
        || imap.search_subject("Sent", &subject).is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delivered = message_ids(&mut imap, "INBOX", &subject);
    assert_eq!(delivered.len(), 2, "sent again on the retry: {delivered:?}");
    assert_eq!(delivered[0], delivered[1], "one Message-ID for both tries");
    let sent = message_ids(&mut imap, "Sent", &subject);
    assert_eq!(sent, vec![delivered[0].clone()], "one copy in Sent");
}

/// A 16.1 draft Add whose APPEND Dovecot made, opush killed before the
/// Add was recorded, retried with its ClientId: the retry finds the draft
/// (by the Message-ID its ClientId gives) instead of saving a second one,
/// and the device ends with exactly the Drafts folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_add_cut_by_a_kill_and_retried_is_saved_once() {
    let user = "load1127@load.test";
    let tag = unique("crashdraft");
    let mut imap = RawImap::login(user);
    empty(&mut imap, "Drafts");
    let dir = tempfile::tempdir().unwrap();
    let dovecot = Gate::start(direct(DOVECOT_IMAP));
    let mut opush = Opush::new(dir.path(), dovecot.addr, direct(POSTFIX_SMTP), "");
    opush.start().await;
    let mut phone = Phone::with_version(opush.addr, user, "CRASHDRAFT", "16.1");
    phone.folder_sync().await;
    let drafts = phone.folder("Drafts");
    phone.sync_to_end(&drafts, 50).await;
    let add = format!(
        "<Commands><Add><ClientId>{tag}-d</ClientId><ApplicationData>\
         <email:To>bob@example.test</email:To><email:Subject>{tag}</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>draft</airsyncbase:Data></airsyncbase:Body>\
         </ApplicationData></Add></Commands>"
    );
    dovecot.arm(Way::Up, "APPEND", Trip::Forward);
    let (r, ()) = tokio::join!(phone.sync(&drafts, 50, &add), async {
        dovecot.tripped().await;
        until("the draft in IMAP", || {
            !imap.search_subject("Drafts", &tag).is_empty()
        })
        .await;
        opush.restart().await;
    });
    check_replies(&r, &[1], "draft Add, kill before recording");
    let Some(CommandResponse::Add {
        server_id: Some(id),
        ..
    }) = r.responses.iter().flatten().next()
    else {
        panic!("no ServerId for the draft: {r:?}");
    };
    phone.synced.get_mut(&drafts).unwrap().items.insert(
        id.0.clone(),
        Mail {
            subject: tag.clone(),
            read: true,
        },
    );
    assert_eq!(
        imap.search_subject("Drafts", &tag).len(),
        1,
        "the draft saved once"
    );
    phone.sync_to_end(&drafts, 50).await;
    assert_same(&phone, &drafts, &mut imap, "Drafts");
}

/// A 16.1 draft Change (a replacement: APPEND of the edit, then EXPUNGE
/// of the old draft) whose APPEND Dovecot made, opush killed before the
/// EXPUNGE and the record, retried: the retry finds the edit by the
/// Message-ID its content gives instead of saving a second one, and the
/// device ends with exactly the Drafts folder: one draft, the edited one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_change_cut_by_a_kill_and_retried_leaves_one_draft() {
    let user = "load1128@load.test";
    let tag = unique("crashedit");
    let (v1, v2) = (format!("{tag} v1"), format!("{tag} v2"));
    let mut imap = RawImap::login(user);
    empty(&mut imap, "Drafts");
    let msg = format!("From: {user}\r\nTo: bob@example.test\r\nSubject: {v1}\r\n\r\nfirst\r\n");
    fill::append_all(&mut imap, "Drafts", std::iter::once(msg));
    let dir = tempfile::tempdir().unwrap();
    let dovecot = Gate::start(direct(DOVECOT_IMAP));
    let mut opush = Opush::new(dir.path(), dovecot.addr, direct(POSTFIX_SMTP), "");
    opush.start().await;
    let mut phone = Phone::with_version(opush.addr, user, "CRASHEDIT", "16.1");
    phone.folder_sync().await;
    let drafts = phone.folder("Drafts");
    phone.sync_to_end(&drafts, 50).await;
    let id = phone.server_id(&drafts, &v1);
    let change = format!(
        "<Commands><Change><ServerId>{id}</ServerId><ApplicationData>\
         <email:Subject>{v2}</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>second</airsyncbase:Data></airsyncbase:Body>\
         </ApplicationData></Change></Commands>"
    );
    dovecot.arm(Way::Up, "APPEND", Trip::Forward);
    let (r, ()) = tokio::join!(phone.sync(&drafts, 50, &change), async {
        dovecot.tripped().await;
        until("v2 in IMAP", || {
            !imap.search_subject("Drafts", &v2).is_empty()
        })
        .await;
        opush.restart().await;
    });
    check_replies(&r, &[1], "draft Change, kill before recording");
    phone
        .synced
        .get_mut(&drafts)
        .unwrap()
        .items
        .get_mut(&id)
        .unwrap()
        .subject = v2.clone();
    assert_eq!(
        imap.search_subject("Drafts", &v2).len(),
        1,
        "the edit saved once"
    );
    assert!(
        imap.search_subject("Drafts", &v1).is_empty(),
        "the old draft gone"
    );
    phone.sync_to_end(&drafts, 50).await;
    assert_same(&phone, &drafts, &mut imap, "Drafts");
}
