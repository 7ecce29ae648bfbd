//! `push_load`: a bounded load tool for Ping and the push hub.
//!
//! Starts `opush serve` (a fresh embedded store in a temp directory, the
//! stack's Dovecot through its master user), prepares `--users` ×
//! `--devices` devices over loopback HTTP (FolderSync, Sync 0, Sync), parks
//! one Ping per device (each on its own keep-alive connection), then
//! measures opush's resident memory, its CPU while everything is parked and
//! idle, and the latency from an IMAP APPEND to the answers of the Pings of
//! that user (p50/p99 over `--samples` appends, one user each).
//!
//! Every loop is bounded in count and time; the tool raises its own
//! file-descriptor limit (and opush's, which inherits it) and spreads its
//! connections over several loopback source addresses. Users are
//! `load0101@load.test` onwards (`scripts/stack up dovecot` creates them).
//! Thousands of watchers need Dovecot's hibernation and client limits as
//! `scripts/stack.d/dovecot.sh` now writes them: a shared instance started
//! before that should not be loaded; use a private one
//! (`scripts/dovecot-private up target/tmp/load-dovecot 11531`, `--imap-port 11531`).
//!
//! `--mode sync` parks long-poll Syncs (`HeartbeatInterval` = `--heartbeat`,
//! the INBOX at its current SyncKey) instead of Pings: an answer with the
//! new message counts as Ping's Status 2, the empty Sync response as 1.
//!
//! `--set section.key=value` adds a key to the generated `opush.toml`;
//! `--in-process true` runs the server inside this process (on the system
//! allocator, at most ~8,000 Pings under the 20,000 fd limit since both
//! ends count) and reports its live heap, e.g. under `heaptrack`.
//!
//! ```text
//! cargo build -p opush-server --bins --example push_load
//! scripts/dovecot-private up target/tmp/load-dovecot 11531
//! target/debug/examples/push_load --opush target/debug/opush --users 1000 --devices 10 --imap-port 11531
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool: a panic is a failed run"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest, FolderSyncResponse};
use opush_protocol::commands::ping::{PingFolder, PingRequest, PingResponse};
use opush_protocol::commands::sync::{SyncCollectionRequest, SyncRequest, SyncResponse};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

const V: ProtocolVersion = ProtocolVersion::V14_1;

/// With `--in-process true`, the server runs on threads of its own runtime
/// and this allocator counts the bytes those threads hold: the live heap of
/// the server alone, which RSS (allocator pages, the load tool's own
/// connections) is not. It forwards to the system allocator, so `heaptrack`
/// can attribute the server's heap to call sites (the `opush` binary itself
/// uses mimalloc).
struct Counting;

static SERVER_BYTES: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

thread_local! {
    static SERVER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn on_server_thread() -> bool {
    SERVER_THREAD
        .try_with(std::cell::Cell::get)
        .unwrap_or(false)
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a side effect.
#[allow(unsafe_code, reason = "a GlobalAlloc impl is unsafe by definition")]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if on_server_thread() {
            SERVER_BYTES.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if on_server_thread() {
            SERVER_BYTES.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        if on_server_thread() {
            SERVER_BYTES.fetch_add(
                new as isize - layout.size() as isize,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        // SAFETY: same contract as ours.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The in-process server's live heap (`--in-process true`), else nothing.
fn server_heap() -> String {
    let bytes = SERVER_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    if bytes == 0 {
        String::new()
    } else {
        format!(" (server heap {:.0} MB)", bytes as f64 / 1_048_576.0)
    }
}

/// Starts `opush serve` with `cfg` on a runtime of its own in this process.
fn serve_in_process(cfg: &std::path::Path) {
    let cfg = opush_server::config::Config::load(cfg).expect("config");
    let blocking = cfg.server.blocking_threads.max(1);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(blocking)
            .enable_all()
            .on_thread_start(|| SERVER_THREAD.with(|c| c.set(true)))
            .build()
            .expect("server runtime");
        let _ = rt.block_on(opush_server::serve::run_with(
            cfg,
            std::future::pending::<()>(),
        ));
    });
}
const PASSWORD: &str = "opush-demo";

#[derive(Debug, Clone)]
struct Args {
    opush: PathBuf,
    users: usize,
    first_user: usize,
    devices: usize,
    port: u16,
    samples: usize,
    heartbeat: u32,
    idle_secs: u64,
    concurrency: usize,
    park_rate: usize,
    imap_port: u16,
    /// Extra `section.key=value` settings for opush.toml.
    sets: Vec<(String, String)>,
    /// Run the server in this process and count its live heap bytes.
    in_process: bool,
    /// Park long-poll Syncs instead of Pings (`--mode sync`).
    sync: bool,
}

fn args() -> Args {
    let mut a = Args {
        opush: PathBuf::from("target/debug/opush"),
        users: 100,
        first_user: 101,
        devices: 10,
        port: 18_482,
        samples: 100,
        heartbeat: 1800,
        idle_secs: 30,
        concurrency: 48,
        park_rate: 50,
        imap_port: 1143,
        sets: Vec::new(),
        in_process: false,
        sync: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (k, v) = (
            pair[0].as_str(),
            pair.get(1).map(String::as_str).unwrap_or(""),
        );
        let n = || v.parse::<usize>().expect("a number");
        match k {
            "--opush" => a.opush = PathBuf::from(v),
            "--users" => a.users = n().min(1000),
            "--first-user" => a.first_user = n(),
            "--devices" => a.devices = n().min(100),
            "--port" => a.port = v.parse().expect("a port"),
            "--samples" => a.samples = n().min(1000),
            "--heartbeat" => a.heartbeat = v.parse().expect("seconds"),
            "--idle-secs" => a.idle_secs = n().min(600) as u64,
            "--concurrency" => a.concurrency = n().clamp(1, 512),
            "--park-rate" => a.park_rate = n().clamp(10, 100_000),
            "--imap-port" => a.imap_port = v.parse().expect("a port"),
            "--in-process" => a.in_process = v == "true",
            "--mode" => a.sync = v == "sync",
            "--set" => {
                let (k, val) = v.split_once('=').expect("--set section.key=value");
                a.sets.push((k.to_owned(), val.to_owned()));
            }
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// The soft and hard RLIMIT_NOFILE of this process (`/proc/self/limits`).
fn fd_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (
        n.first().copied().unwrap_or(1024),
        n.get(1).copied().unwrap_or(1024),
    )
}

/// Raises RLIMIT_NOFILE for this process (and so for opush, its child)
/// with util-linux `prlimit` (no unsafe code here): to `want` when allowed
/// (root), else to the hard limit. Returns the soft limit now in force.
fn raise_fd_limit(want: u64) -> u64 {
    let pid = std::process::id().to_string();
    let (soft, hard) = fd_limits();
    let target = want.max(soft);
    let set = |n: u64| {
        std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:{}", n.max(hard))])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !set(target) {
        set(hard);
    }
    fd_limits().0
}

fn user_name(i: usize) -> String {
    format!("load{i:04}@load.test")
}

/// One keep-alive HTTP/1.1 connection to opush.
struct Http {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    user: String,
    device: String,
    auth: String,
}

async fn connect(port: u16, n: usize) -> TcpStream {
    // Spread over 127.0.0.1–127.0.0.8 so 50,000 connections fit the ephemeral ports.
    let src = std::net::Ipv4Addr::new(127, 0, 0, 1 + (n % 8) as u8);
    for attempt in 0..20 {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind((src, 0).into()).expect("bind");
        match tokio::time::timeout(
            Duration::from_secs(10),
            sock.connect(([127, 0, 0, 1], port).into()),
        )
        .await
        {
            Ok(Ok(s)) => return s,
            _ => tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await,
        }
    }
    panic!("cannot connect to opush on port {port}");
}

impl Http {
    async fn new(port: u16, n: usize, user: &str, device: &str) -> Http {
        let (r, w) = connect(port, n).await.into_split();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"));
        Http {
            r: BufReader::new(r),
            w,
            user: user.to_owned(),
            device: device.to_owned(),
            auth,
        }
    }

    async fn send(&mut self, cmd: &str, body: &[u8]) {
        let head = format!(
            "POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User={}&DeviceId={}&DeviceType=LoadTool HTTP/1.1\r\n\
Host: 127.0.0.1\r\nAuthorization: Basic {}\r\nMS-ASProtocolVersion: 14.1\r\n\
Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: {}\r\n\r\n",
            self.user,
            self.device,
            self.auth,
            body.len()
        );
        self.w.write_all(head.as_bytes()).await.expect("write");
        self.w.write_all(body).await.expect("write");
    }

    /// Reads one response: (HTTP status, body).
    async fn recv(&mut self) -> (u16, Vec<u8>) {
        let mut line = String::new();
        self.r.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).await.expect("header");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await.expect("body");
        (status, body)
    }

    async fn call(&mut self, cmd: &str, body: &[u8]) -> Vec<u8> {
        self.send(cmd, body).await;
        let (status, body) = self.recv().await;
        assert_eq!(
            status, 200,
            "{cmd} for {} answered HTTP {status}",
            self.user
        );
        body
    }
}

/// FolderSync + Sync the INBOX to its end; returns the INBOX id and its SyncKey.
async fn prepare(http: &mut Http) -> (String, String) {
    let body = encode_to_vec(
        &FolderSyncRequest {
            sync_key: SyncKey("0".into()),
        }
        .to_element(V),
    );
    let res = http.call("FolderSync", &body).await;
    let fs =
        FolderSyncResponse::from_element(&decode(&res).expect("wbxml"), V).expect("FolderSync");
    let inbox = fs
        .changes
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.0),
            _ => None,
        })
        .expect("INBOX");
    let mut key = "0".to_owned();
    for _ in 0..50 {
        let req = SyncRequest {
            collections: vec![SyncCollectionRequest {
                sync_key: SyncKey(key.clone()),
                collection_id: CollectionId(inbox.clone()),
                window_size: Some(512),
                ..SyncCollectionRequest::default()
            }],
            ..SyncRequest::default()
        };
        let res = http.call("Sync", &encode_to_vec(&req.to_element(V))).await;
        let sr = SyncResponse::from_element(&decode(&res).expect("wbxml"), V).expect("Sync");
        let c = sr.collections.first().expect("collection");
        let more = c.more_available || key == "0";
        key = c.sync_key.0.clone();
        if !more {
            break;
        }
    }
    (inbox, key)
}

/// Answers of parked Pings: user → when each device's Ping answered.
type Answers = Arc<Mutex<HashMap<String, Vec<(Instant, u8)>>>>;

async fn imap_append(port: u16, user: &str) -> (Instant, Duration) {
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("dovecot");
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.expect("greeting");
    async fn until(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, tag: &str) {
        for _ in 0..1000 {
            let mut l = String::new();
            if r.read_line(&mut l).await.expect("read") == 0 {
                panic!("IMAP closed");
            }
            if let Some(rest) = l.strip_prefix(tag) {
                assert!(rest.trim_start().starts_with("OK"), "{l}");
                return;
            }
        }
        panic!("no tagged answer");
    }
    w.write_all(format!("a LOGIN {user} {PASSWORD}\r\n").as_bytes())
        .await
        .unwrap();
    until(&mut r, "a ").await;
    let msg =
        format!("From: load@example.test\r\nTo: {user}\r\nSubject: push load\r\n\r\nhello\r\n");
    let t0 = Instant::now();
    w.write_all(format!("b APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes())
        .await
        .unwrap();
    until(&mut r, "b ").await;
    let append = t0.elapsed();
    let _ = w.write_all(b"c LOGOUT\r\n").await;
    (t0, append)
}

fn proc_stat(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state(0) … utime(11) stime(12).
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    (kb("VmRSS:"), kb("VmHWM:"), ticks)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let a = args();
    let total = a.users * a.devices;
    let fds = raise_fd_limit((total as u64) * 2 + 4096);
    println!(
        "push_load: {} users × {} devices = {total} {}; fd limit {fds}",
        a.users,
        a.devices,
        if a.sync { "long-poll Syncs" } else { "Pings" }
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("opush.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
max_in_flight = 4096
[storage]
backend = "embedded"
path = "{store}"
[imap]
port = {imap_port}
master_user = "opush-master"
master_password = "{PASSWORD}"
master_for_requests = true
pool_size = 4
pool_idle_timeout_s = 10
[devices]
heartbeat_max_s = 3540
[policy]
require_provisioning = false
[push]
max_parked = {parked}
max_pings_per_minute = 0
[logging]
level = "warn"
"#,
            port = a.port,
            store = dir.path().join("store").display(),
            parked = total + 100,
            imap_port = a.imap_port,
        ),
    )
    .unwrap();
    if !a.sets.is_empty() {
        // Each `--set section.key=value` goes right under its section header.
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        for (k, v) in &a.sets {
            let (section, key) = k.split_once('.').expect("section.key");
            let header = format!("[{section}]\n");
            let line = format!("{key} = {v}\n");
            match text.find(&header) {
                Some(at) => text.insert_str(at + header.len(), &line),
                None => text.push_str(&format!("{header}{line}")),
            }
        }
        std::fs::write(&cfg, text).unwrap();
    }
    let out = std::process::Command::new(&a.opush)
        .args(["schema", "install", "--config"])
        .arg(&cfg)
        .output()
        .expect("run opush schema install");
    assert!(out.status.success(), "schema install: {out:?}");
    let log = std::fs::File::create(dir.path().join("opush.log")).unwrap();
    let mut child = if a.in_process {
        serve_in_process(&cfg);
        None
    } else {
        Some(
            std::process::Command::new(&a.opush)
                .args(["serve", "--config"])
                .arg(&cfg)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start opush"),
        )
    };
    let pid = child.as_ref().map_or(std::process::id(), |c| c.id());
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", a.port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rss0, _, _) = proc_stat(pid);

    // 1. Prepare every device, keeping its connection for its Ping.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let mut tasks = Vec::with_capacity(total);
    for u in 0..a.users {
        for d in 0..a.devices {
            let gate = gate.clone();
            let user = user_name(a.first_user + u);
            let port = a.port;
            let n = u * a.devices + d;
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire_owned().await.unwrap();
                let mut http = Http::new(port, n, &user, &format!("LOAD{u:04}D{d:02}")).await;
                let (inbox, key) = prepare(&mut http).await;
                (http, inbox, key)
            }));
        }
    }
    let mut conns = Vec::with_capacity(total);
    for (i, t) in tasks.into_iter().enumerate() {
        conns.push(t.await.expect("prepare"));
        if (i + 1) % 1000 == 0 {
            println!(
                "  {} devices prepared ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let prepare_secs = started.elapsed().as_secs_f64();
    let (rss_prepared, _, _) = proc_stat(pid);
    println!(
        "prepared {total} devices in {prepare_secs:.1} s; opush RSS {} MB{}",
        rss_prepared / 1024,
        server_heap()
    );

    // 2. Park one Ping per device.
    let answers: Answers = Arc::new(Mutex::new(HashMap::new()));
    let mut waiting = Vec::with_capacity(total);
    let (_, _, t_before_park) = proc_stat(pid);
    // Paced like devices reconnecting, not all in the same millisecond, and
    // interleaved: device 0 of every user, then device 1, …
    let per_tick = (a.park_rate / 10).max(1);
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by_key(|n| (n % a.devices, n / a.devices));
    let mut slots: Vec<Option<(Http, String, String)>> = conns.into_iter().map(Some).collect();
    let sync_mode = a.sync;
    for (i, n) in order.into_iter().enumerate() {
        let Some((mut http, inbox, key)) = slots[n].take() else {
            continue;
        };
        if i > 0 && i % per_tick == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if sync_mode {
            let req = SyncRequest {
                collections: vec![SyncCollectionRequest {
                    sync_key: SyncKey(key),
                    collection_id: CollectionId(inbox),
                    window_size: Some(512),
                    ..SyncCollectionRequest::default()
                }],
                heartbeat_interval: Some(a.heartbeat),
                ..SyncRequest::default()
            };
            http.send("Sync", &encode_to_vec(&req.to_element(V))).await;
        } else {
            let body = encode_to_vec(
                &PingRequest {
                    heartbeat_interval: Some(a.heartbeat),
                    folders: Some(vec![PingFolder {
                        id: CollectionId(inbox),
                        class: "Email".into(),
                    }]),
                }
                .to_element(V),
            );
            http.send("Ping", &body).await;
        }
        let answers = answers.clone();
        waiting.push(tokio::spawn(async move {
            let (status, body) = http.recv().await;
            let at = Instant::now();
            let code = match (status, sync_mode) {
                // The empty Sync response: the interval ended.
                (200, true) if body.is_empty() => 1,
                // A Sync answer carrying the new message.
                (200, true) => SyncResponse::from_element(&decode(&body).expect("wbxml"), V)
                    .ok()
                    .filter(|r| r.collections.iter().any(|c| c.commands.is_some()))
                    .map_or(0, |_| 2),
                (200, false) => PingResponse::from_element(&decode(&body).expect("wbxml"), V)
                    .map(|r| r.status.code())
                    .unwrap_or(0),
                _ => 0,
            };
            answers
                .lock()
                .unwrap()
                .entry(http.user.clone())
                .or_default()
                .push((at, u8::try_from(code).unwrap_or(0)));
            http
        }));
    }
    // Parked = nothing answered within a few seconds of the last send.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut codes: HashMap<u8, usize> = HashMap::new();
    for (_, code) in answers.lock().unwrap().values().flatten() {
        *codes.entry(*code).or_default() += 1;
    }
    let early: usize = codes.values().sum();
    if early > 0 {
        println!("early answers by Ping status (0: HTTP error): {codes:?}");
    }
    let (rss, hwm, t0) = proc_stat(pid);
    println!(
        "parked {} Pings ({early} answered early); opush RSS {} MB{} (before devices {} MB, peak {} MB); park CPU {:.1} s",
        total - early,
        rss / 1024,
        server_heap(),
        rss0 / 1024,
        hwm / 1024,
        (t0 - t_before_park) as f64 / 100.0
    );

    // 3. Idle CPU while everything is parked.
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let (rss_idle, _, t1) = proc_stat(pid);
    let ticks_per_s = 100.0;
    let idle_cpu = (t1 - t0) as f64 / ticks_per_s / a.idle_secs as f64 * 100.0;
    println!(
        "idle {} s: opush CPU {idle_cpu:.2} % of one core, RSS {} MB{}",
        a.idle_secs,
        rss_idle / 1024,
        server_heap()
    );

    // 4. APPEND → Ping answer latency, one user per sample.
    let mut lat = Vec::new();
    let mut missing = 0usize;
    let mut appends = Vec::new();
    for s in 0..a.samples.min(a.users) {
        let user = user_name(a.first_user + s);
        let (t0, append) = imap_append(a.imap_port, &user).await;
        appends.push(append);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = answers.lock().unwrap().get(&user).map_or(0, Vec::len);
            if n >= a.devices || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let got = answers
            .lock()
            .unwrap()
            .get(&user)
            .cloned()
            .unwrap_or_default();
        missing += a.devices.saturating_sub(got.len());
        for (at, code) in got {
            if code == 2 {
                lat.push(at.saturating_duration_since(t0));
            } else {
                missing += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lat.sort();
    appends.sort();
    let (rss_end, hwm_end, _) = proc_stat(pid);
    println!(
        "latency APPEND→Ping answer over {} answers ({missing} missing): p50 {:?} p99 {:?} max {:?} (APPEND itself p50 {:?})",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
        percentile(&appends, 0.5),
    );
    println!(
        "opush RSS at the end {} MB, peak {} MB",
        rss_end / 1024,
        hwm_end / 1024
    );
    for w in waiting {
        w.abort();
    }
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
