//! `opush-load`: the load tool of issue #5 "Speed". It starts a real `opush
//! serve` (a release binary, embedded store in a fresh directory, or with
//! `--store cassandra` a fresh keyspace on the stack's Cassandra node,
//! dropped at the end) against the stack's Dovecot and measures, over
//! loopback HTTP:
//!
//! 1. the raw reference: one IMAP connection fetching every message of a
//!    10,000-message INBOX (`UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])`);
//! 2. the initial sync of that INBOX by one device in windows (messages/s,
//!    server CPU seconds and peak RSS from /proc);
//! 3. no-change Sync latency p50/p99: the same device on the 10,000-message
//!    INBOX alone, then N devices (over 19 users with small INBOXes) syncing
//!    concurrently, each as fast as it gets answers (a closed loop: the
//!    latency then measures the server's saturation throughput, by Little's
//!    law N / throughput), and with `--rate R` the same number of fresh
//!    devices paced at R syncs/s in all (latency at a given load).
//!
//! `--fetch-big N` runs only a memory check instead: `load<user-base>`'s
//! INBOX holds N messages of 5 MB, one Sync Fetches them all with MIME
//! bodies, the deferred ones (Status 5, past `max_window_bytes`) are asked
//! again until every one came, and the server's peak RSS (VmHWM) and the
//! largest answer are printed.
//!
//! Every loop is bounded (windows, rounds, deadline); it talks only to
//! 127.0.0.1 and stops the server it started. Mailboxes are filled once and
//! reused (`opush_tests::fill`). Users: load0001 (big INBOX), load0002–load0020;
//! `--user-base N --small-users K`: loadN (big INBOX) and the K users after it.
//! Figures go to stdout; docs/BENCHMARKS.md records them with the command.
//! With `OPUSH_LOAD_TRACE=1` each Sync of the initial sync prints its time;
//! with `OPUSH_LOAD_BREAKDOWN=1` the server logs each request's BREAKDOWN
//! timing tree to a file beside its directory (the path is printed), and
//! `OPUSH_LOAD_LOGGERS` adds loggers to that file (e.g.
//! `OPUSH_LOAD_LOGGERS='"IMAP.COMMAND" = "debug"'`: each IMAP command's
//! time). `OPUSH_LOAD_PACED_TRACE=FILE` writes each paced Sync's due time
//! and latency to FILE. `OPUSH_LOAD_IMAP` adds keys to the server's `[imap]` section
//! (e.g. `OPUSH_LOAD_IMAP='pool_size = 2'`). The raw fetch and the initial sync also print the CPU the
//! stack's Dovecot spent on each (all its processes, found from its
//! listener on 127.0.0.1:1143; left out when /proc does not tell), and on
//! Cassandra the initial sync and the N-device rounds print the CPU the
//! stack's Cassandra node spent (its listener on 127.0.0.1:9042).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opush_protocol::version::ProtocolVersion;
use opush_tests::eas::{find_text, EasClient};
use opush_tests::{demo_password, fill, RawImap};

const BIG_MARKER: &str = "load-v1";
const SMALL_MARKER: &str = "load-small-v1";

#[derive(Debug, Clone)]
struct Args {
    opush: PathBuf,
    messages: usize,
    small: usize,
    devices: usize,
    rounds: usize,
    window: u32,
    version: String,
    /// Paced no-change rounds: total syncs/s over all devices (0: none).
    rate: f64,
    /// The user with the big INBOX is `load<user_base>`.
    user_base: usize,
    /// Users with small INBOXes, the ones after it.
    small_users: usize,
    /// `embedded` or `cassandra`.
    store: String,
    /// The Cassandra keyspace (created, then dropped).
    keyspace: String,
    /// `--fetch-big N`: only the Sync Fetch memory run (N messages of 5 MB).
    fetch_big: usize,
    /// `--fetch-attachment MB`: only the attachment memory run.
    fetch_attachment: usize,
    /// `--sync-watch S`: the server's `[push] sync_watch_s` (0: off, its default).
    sync_watch_s: u64,
}

/// `--body TYPE:TRUNCATION`: the BodyPreference every Sync asks (set once
/// from the arguments; plain text cut at 500 bytes unless told). Type 4
/// (MIME, what iOS Mail asks) also sends `MIMESupport` 2.
static BODY: std::sync::OnceLock<(u8, u32)> = std::sync::OnceLock::new();

impl Args {
    fn big_user(&self) -> String {
        format!("load{:04}@load.test", self.user_base)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: opush-load [--opush PATH] [--messages N] [--small N] [--devices N] [--rounds N] [--window N] [--version V] [--rate R]\n\
         \x20                 [--user-base N] [--small-users K] [--store embedded|cassandra] [--keyspace NAME] [--sync-watch S] [--body TYPE:TRUNCATION]\n\
         defaults: target/release/opush, 10000 messages, 100 per small INBOX, 100 devices, 25 rounds (the loop detector slows a device past 30 identical requests a minute), window 100, 14.1;\n\
         --rate R adds a paced run after the closed-loop one: the same devices send R no-change Syncs per second in all, evenly spread\n\
         (latency counted from each request's scheduled time, so a late answer delays nothing unmeasured);\n\
         --sync-watch S: the server's [push] sync_watch_s (default 0, off): caught-up devices' no-change Syncs answered from the users' push watchers;\n\
         --body TYPE:TRUNCATION: the BodyPreference of every Sync (default 1:500, plain text; 4:200000 is MIME as iOS Mail asks it);\n\
         --user-base 1 --small-users 19: load0001 has the big INBOX, load0002-load0020 the small ones;\n\
         --fetch-attachment MB: only the attachment memory run: the INBOX of load<user-base> (and the next users, two devices each) holds one message with an attachment of MB megabytes,\n\
         \x20 each device syncs it and fetches the whole message as MIME, then --devices devices fetch the attachment at once with ItemOperations, multipart, inline, multipart\n\
         --fetch-big N: only the Sync Fetch memory run: load<user-base>'s INBOX holds N messages of 5 MB, one Sync Fetches them all\n\
         (MIME bodies), the deferred ones are asked again until every one came; prints the server's peak RSS (VmHWM);\n\
         --store cassandra: the server's store is a new keyspace (default opush_load_<pid>) on the stack's node 127.0.0.1:9042,\n\
         user opush, password $OPUSH_CASSANDRA_PASSWORD (default opush-test), dropped at the end (scripts/cassandra/cql.py)"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        opush: opush_tests::repo_root().join("target/release/opush"),
        messages: 10_000,
        small: 100,
        devices: 100,
        rounds: 25,
        window: 100,
        version: "14.1".to_owned(),
        rate: 0.0,
        user_base: 1,
        small_users: 19,
        store: "embedded".to_owned(),
        keyspace: format!("opush_load_{}", std::process::id()),
        fetch_big: 0,
        fetch_attachment: 0,
        sync_watch_s: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let num = || value.parse::<usize>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--opush" => a.opush = PathBuf::from(&value),
            "--messages" => a.messages = num(),
            "--small" => a.small = num(),
            "--devices" => a.devices = num(),
            "--rounds" => a.rounds = num().min(10_000),
            "--window" => a.window = u32::try_from(num()).unwrap_or(100).clamp(1, 512),
            "--version" => a.version = value.clone(),
            "--rate" => a.rate = value.parse::<f64>().unwrap_or_else(|_| usage()).max(0.0),
            "--user-base" => a.user_base = num().clamp(1, 9999),
            "--fetch-big" => a.fetch_big = num().clamp(1, 200),
            "--fetch-attachment" => a.fetch_attachment = num().clamp(1, 1000),
            "--small-users" => a.small_users = num().clamp(1, 9998),
            "--sync-watch" => a.sync_watch_s = num() as u64,
            "--body" => {
                let (t, n) = value.split_once(':').unwrap_or_else(|| usage());
                let t = t.parse::<u8>().ok().filter(|t| (1..=4).contains(t));
                let n = n.parse::<u32>().ok();
                let (Some(t), Some(n)) = (t, n) else { usage() };
                if BODY.set((t, n)).is_err() {
                    usage()
                }
            }
            "--store" if value == "embedded" || value == "cassandra" => a.store = value.clone(),
            "--keyspace"
                if !value.is_empty()
                    && value.len() <= 48
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && value.as_bytes()[0].is_ascii_alphabetic() =>
            {
                a.keyspace = value.clone()
            }
            _ => usage(),
        }
    }
    a
}

/// The server process: CPU seconds (user+system) and memory from /proc.
struct Proc(u32);

impl Proc {
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        // rest[0] is field 3, so field n is rest[n - 3].
        (ticks(11) + ticks(12)) / 100.0
    }

    fn status_kb(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0)).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The stack's Dovecot: its master process, which holds the listener on
/// 127.0.0.1:1143 (and hands it to its imap-login processes). Its CPU counts every process it runs
/// (logins, auth, one imap process per connection): the raw fetch's and
/// opush's alike, so the two phases can be compared on Dovecot's side too.
struct Dovecot(u32);

impl Dovecot {
    /// `None` when the listener or its parent cannot be read (not root,
    /// another kind of server on the port).
    fn find() -> Option<Dovecot> {
        Dovecot::listening_on("0477")
    }

    /// The process listening on 127.0.0.1:`port_hex` (the port in
    /// /proc/net/tcp's hex: "2352" is Cassandra's 9042), whose CPU counts
    /// the same way (a JVM has no child processes: its own CPU).
    fn listening_on(port_hex: &str) -> Option<Dovecot> {
        let local = format!("0100007F:{port_hex}");
        let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
        // local_address 127.0.0.1:1143 in /proc's hex, state 0A (LISTEN).
        let inode = tcp.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
                .then(|| f.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })?;
        let holders: Vec<u32> = pids()
            .filter(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == inode.as_str())
                    })
            })
            .collect();
        // The one holder whose parent does not hold it.
        holders
            .iter()
            .find(|p| parent(**p).is_none_or(|pp| !holders.contains(&pp)))
            .map(|p| Dovecot(*p))
    }

    /// CPU seconds of the master and its processes: the live ones from
    /// their scheduler time, the ended ones from the master's
    /// children-times (in clock ticks).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        // utime, stime, cutime, cstime: fields 14-17.
        let master = (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0;
        let live: f64 = pids()
            .filter(|p| parent(*p) == Some(self.0))
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    / 1e9
            })
            .sum();
        master + live
    }
}

/// The pids in /proc.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:")?.trim().parse().ok())
}

/// The whole machine's busy and total CPU time since boot, in seconds
/// (`/proc/stat`'s first line): how much of the cores a phase left idle.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    ((total - idle) / 100.0, total / 100.0)
}

struct Server {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: PathBuf,
    /// The Cassandra keyspace to drop when it stops.
    keyspace: Option<String>,
}

/// The stack's Cassandra password for the `opush` role.
fn cassandra_password() -> String {
    std::env::var("OPUSH_CASSANDRA_PASSWORD").unwrap_or_else(|_| "opush-test".to_owned())
}

/// Drops `keyspace` on the stack's node with the stack's own CQL client
/// (the tool does not link the driver).
fn drop_keyspace(keyspace: &str) {
    let cql = opush_tests::repo_root().join("scripts/cassandra/cql.py");
    let done = Command::new("python3")
        .arg(&cql)
        .args(["127.0.0.1", "9042", "opush", &cassandra_password()])
        .arg(format!("DROP KEYSPACE IF EXISTS {keyspace}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !done {
        eprintln!("opush-load: keyspace {keyspace} NOT dropped: drop it by hand");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// With `OPUSH_LOAD_BREAKDOWN` set: the server logs each request's
/// BREAKDOWN timing tree to a log file beside its directory (printed).
fn breakdown(dir: &std::path::Path) -> String {
    if std::env::var_os("OPUSH_LOAD_BREAKDOWN").is_none() {
        return String::new();
    }
    // Outside the server's directory, which is removed at the end.
    let log = dir.with_extension("log");
    println!("breakdown: {}", log.display());
    // More loggers, e.g. OPUSH_LOAD_LOGGERS='"IMAP.COMMAND" = "debug"'.
    let more = std::env::var("OPUSH_LOAD_LOGGERS")
        .map(|l| format!(", {l}"))
        .unwrap_or_default();
    format!(
        "file = \"{}\"\nloggers = {{ BREAKDOWN = \"debug\"{more} }}\n",
        log.display()
    )
}

impl Server {
    fn start(opush: &PathBuf, a: &Args) -> Server {
        let port = free_port();
        let admin_port = free_port();
        let dir =
            opush_tests::repo_root().join(format!("target/tmp/opush-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("load dir");
        let config = dir.join("opush.toml");
        let cassandra = a.store == "cassandra";
        let storage = if cassandra {
            format!(
                "backend = \"cassandra\"\nseeds = [\"127.0.0.1\"]\nport = 9042\nkeyspace = \"{}\"\n\
                 user = \"opush\"\npassword = \"{}\"\n",
                a.keyspace,
                cassandra_password()
            )
        } else {
            format!(
                "backend = \"embedded\"\npath = \"{}\"\n",
                dir.join("store").display()
            )
        };
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 admin_listen = \"127.0.0.1:{admin_port}\"\n\
                 max_in_flight = 1024\n[storage]\n{storage}\
                 [imap]\nhost = \"127.0.0.1\"\nport = 1143\n\
                 master_user = \"opush-master\"\nmaster_password = \"{}\"\n{}\n\
                 {}\
                 [policy]\nrequire_provisioning = false\n[logging]\nlevel = \"warn\"\n{}",
                demo_password(),
                std::env::var("OPUSH_LOAD_IMAP").unwrap_or_default(),
                // Only when on: a build from before the key takes the config too.
                if a.sync_watch_s > 0 {
                    format!("[push]\nsync_watch_s = {}\n", a.sync_watch_s)
                } else {
                    String::new()
                },
                breakdown(&dir)
            ),
        )
        .expect("write config");
        let status = Command::new(opush)
            .args(["schema", "install", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (build it: cargo build --release -p opush-server)",
                    opush.display()
                )
            });
        if !status.success() && cassandra {
            drop_keyspace(&a.keyspace);
        }
        assert!(status.success(), "opush schema install failed");
        let child = Command::new(opush)
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("opush serve");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().expect("addr");
        // Built before it listens, so that a server that never does (its
        // port taken meanwhile) is stopped and its keyspace dropped too.
        let server = Server {
            child,
            addr,
            admin,
            dir,
            keyspace: cassandra.then(|| a.keyspace.clone()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "opush serve did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The server's `/metrics` text (empty when it cannot be read).
    fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut text = String::new();
        if let Ok(mut c) = std::net::TcpStream::connect(self.admin) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.write_all(b"GET /metrics HTTP/1.0\r\nHost: opush\r\n\r\n");
            let _ = c.read_to_string(&mut text);
        }
        text
    }

    /// IMAP SELECT/EXAMINE commands the server sent so far (`None`: a
    /// server without that metric).
    fn imap_mailbox_opens(&self) -> Option<u64> {
        self.counter("opush_imap_mailbox_opens_total")
    }

    /// IMAP STATUS commands the server sent so far (`None`: a server
    /// without that metric).
    fn imap_statuses(&self) -> Option<u64> {
        self.counter("opush_imap_statuses_total")
    }

    /// Folders the server took as unchanged from its push watchers so far
    /// (`[push] sync_watch_s`; `None`: a server without that metric).
    fn folders_from_watcher(&self) -> Option<u64> {
        self.counter("opush_folders_from_watcher_total")
    }

    /// The value of the unlabelled counter `name` in `/metrics`.
    fn counter(&self, name: &str) -> Option<u64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// IMAP logins the server sent so far, by purpose (its `/metrics`).
    fn imap_logins(&self) -> Logins {
        let text = self.metrics();
        let count = |purpose: &str| {
            let series = format!("opush_imap_logins_total{{purpose=\"{purpose}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&series)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Logins {
            pool: count("pool"),
            verify: count("verify"),
        }
    }

    fn proc(&self) -> Proc {
        Proc(self.child.id())
    }

    fn stop(self) {
        // Drop does it.
    }
}

impl Drop for Server {
    /// SIGTERM (graceful), then SIGKILL after 15 s; also when the tool panics.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(k) = &self.keyspace {
                drop_keyspace(k);
            }
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(k) = &self.keyspace {
            drop_keyspace(k);
        }
    }
}

/// IMAP logins by purpose, from the server's metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Logins {
    pool: u64,
    verify: u64,
}

impl std::ops::Sub for Logins {
    type Output = Logins;
    fn sub(self, o: Logins) -> Logins {
        Logins {
            pool: self.pool.saturating_sub(o.pool),
            verify: self.verify.saturating_sub(o.verify),
        }
    }
}

impl std::fmt::Display for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IMAP logins {} (pool {}, auth check {})",
            self.pool + self.verify,
            self.pool,
            self.verify
        )
    }
}

fn sync_xml(collection: &str, key: &str, window: u32) -> String {
    let more = if key == "0" {
        String::new()
    } else {
        format!("<GetChanges/><WindowSize>{window}</WindowSize>")
    };
    let (body_type, truncation) = *BODY.get_or_init(|| (1, 500));
    let mime = if body_type == 4 {
        "<MIMESupport>2</MIMESupport>"
    } else {
        ""
    };
    format!(
        "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\"><Collections><Collection>\
         <SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>{more}\
         <Options><FilterType>0</FilterType>{mime}<airsyncbase:BodyPreference><airsyncbase:Type>{body_type}</airsyncbase:Type>\
         <airsyncbase:TruncationSize>{truncation}</airsyncbase:TruncationSize></airsyncbase:BodyPreference></Options>\
         </Collection></Collections></Sync>"
    )
}

/// FolderSync, then the INBOX's collection id.
async fn inbox_of(c: &mut EasClient) -> String {
    let res = c
        .post_xml(
            "FolderSync",
            "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>",
        )
        .await;
    assert_eq!(res.status, 200, "FolderSync");
    let fs = opush_protocol::commands::folder_sync::FolderSyncResponse::from_element(
        &res.element(),
        ProtocolVersion::V14_1,
    )
    .expect("FolderSync answer");
    fs.changes
        .iter()
        .flatten()
        .find_map(|ch| match ch {
            opush_protocol::commands::folder_sync::FolderChange::Add(f) if f.folder_type == 2 => {
                Some(f.server_id.0.clone())
            }
            _ => None,
        })
        .expect("an Inbox")
}

/// One Sync; returns (new key, number of items, more available).
///
/// The answer is decoded (WBXML, borrowed) and walked for what the loop
/// needs: the first collection's SyncKey, Status, MoreAvailable and its
/// number of commands. Not into typed values, whose copies of every
/// string cost the tool more CPU than the server spends on its own
/// copies, on the machine both share (the typed decoding is tested
/// elsewhere).
async fn sync_once(
    c: &mut EasClient,
    _v: ProtocolVersion,
    col: &str,
    key: &str,
    window: u32,
) -> (String, usize, bool) {
    let sent = Instant::now();
    let res = c.post_xml("Sync", &sync_xml(col, key, window)).await;
    assert_eq!(res.status, 200, "Sync HTTP status");
    if std::env::var_os("OPUSH_LOAD_TRACE").is_some() {
        eprintln!(
            "trace: Sync key {key} answered in {:.1} ms, {} bytes",
            ms(sent.elapsed()),
            res.body.len()
        );
    }
    let el =
        opush_protocol::wbxml::decode(&res.body).unwrap_or_else(|e| panic!("Sync answer: {e}"));
    let named = |e: &'_ opush_protocol::wbxml::Element<'_>, name: &str| e.tag.name() == Some(name);
    let collection = el
        .elements()
        .filter(|e| named(e, "Collections"))
        .flat_map(|cs| cs.elements())
        .find(|e| named(e, "Collection"))
        .unwrap_or_else(|| panic!("no collection: {:?}", find_text(&el, "Status")));
    let text = |name: &str| {
        collection
            .elements()
            .find(|e| named(e, name))
            .and_then(|e| e.text_concat())
            .map(|t| t.into_owned())
    };
    assert_eq!(text("Status").as_deref(), Some("1"), "Sync status");
    let items = collection
        .elements()
        .find(|e| named(e, "Commands"))
        .map_or(0, |cmds| cmds.elements().count());
    let more = collection.elements().any(|e| named(e, "MoreAvailable"));
    (text("SyncKey").unwrap_or_default(), items, more)
}

/// Syncs a collection to the end; returns (key, items, requests). The
/// last window's key is confirmed by one more Sync (it carries nothing and
/// records the confirmation), so what follows is a steady no-change Sync
/// that writes nothing.
async fn sync_to_end(
    c: &mut EasClient,
    v: ProtocolVersion,
    col: &str,
    window: u32,
    expected: usize,
) -> (String, usize, usize) {
    let (mut key, _, _) = sync_once(c, v, col, "0", window).await;
    let mut items = 0;
    let max_requests = expected / window as usize + 20;
    for n in 1..=max_requests {
        let (k, got, more) = sync_once(c, v, col, &key, window).await;
        key = k;
        items += got;
        if !more {
            let (k, extra, _) = sync_once(c, v, col, &key, window).await;
            assert_eq!(extra, 0, "nothing after the last window");
            return (k, items, n);
        }
    }
    panic!("sync of {col} did not end in {max_requests} requests");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `/proc/loadavg`'s three figures, to print beside the results.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The client side's runtime: two workers, as many as the machine's cores.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    let a = args();
    let v = opush_protocol::headers::parse_protocol_version(&a.version).unwrap_or_else(|_| usage());
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    if a.fetch_big > 0 {
        fetch_big(&a, v);
        return;
    }
    if a.fetch_attachment > 0 {
        fetch_attachment(&a);
        return;
    }
    println!(
        "# opush-load: {} messages, {} devices x {} rounds, window {}, EAS {}, {} store{}, sync_watch_s {}, BodyPreference {}:{}; load average {}",
        a.messages,
        a.devices,
        a.rounds,
        a.window,
        a.version,
        a.store,
        if a.store == "cassandra" {
            format!(" (keyspace {})", a.keyspace)
        } else {
            String::new()
        },
        a.sync_watch_s,
        BODY.get_or_init(|| (1, 500)).0,
        BODY.get_or_init(|| (1, 500)).1,
        load_average()
    );

    // Data, filled once.
    let t = Instant::now();
    let big_user = a.big_user();
    let mut imap = RawImap::login(&big_user);
    let filled = fill::ensure(&mut imap, "INBOX", a.messages, BIG_MARKER, |i| {
        fill::text_message(BIG_MARKER, i)
    });
    let users: Vec<String> = (a.user_base + 1..=a.user_base + a.small_users)
        .map(|n| format!("load{n:04}@load.test"))
        .collect();
    if a.devices > 0 {
        for u in &users {
            let mut im = RawImap::login(u);
            fill::ensure(&mut im, "INBOX", a.small, SMALL_MARKER, |i| {
                fill::text_message(SMALL_MARKER, i)
            });
        }
    }
    println!(
        "data: ready in {:.1} s (big INBOX {})",
        t.elapsed().as_secs_f64(),
        if filled { "filled now" } else { "reused" }
    );

    // 1. The raw reference: one IMAP connection, every message.
    let (_, ok) = imap.cmd("EXAMINE INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    let dovecot = Dovecot::find();
    // The stack's Cassandra node, when the server stores there.
    let cassandra = (a.store == "cassandra")
        .then(|| Dovecot::listening_on("2352"))
        .flatten();
    let cassandra_cpu = || cassandra.as_ref().map(Dovecot::cpu_seconds);
    let dovecot_cpu = || dovecot.as_ref().map(Dovecot::cpu_seconds);
    let dovecot0 = dovecot_cpu();
    let t = Instant::now();
    let (lines, ok) = imap.cmd("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])");
    let raw_time = t.elapsed();
    let raw_dovecot = match (dovecot0, dovecot_cpu()) {
        (Some(a), Some(b)) => format!("; Dovecot CPU {:.3} s", b - a),
        _ => String::new(),
    };
    assert!(ok.starts_with("OK"), "{ok}");
    let raw_bytes: usize = lines.iter().map(String::len).sum();
    let raw_n = lines.iter().filter(|l| l.starts_with("* ")).count();
    println!(
        "raw IMAP: {raw_n} messages, {:.1} MB in {:.3} s = {:.0} msg/s{raw_dovecot}",
        raw_bytes as f64 / 1e6,
        raw_time.as_secs_f64(),
        raw_n as f64 / raw_time.as_secs_f64()
    );
    drop(lines);

    let server = Server::start(&a.opush, &a);
    let proc = server.proc();
    let rt = runtime();
    let addr = server.addr;
    rt.block_on(async {
        // 2. Initial sync of the big INBOX.
        let mut c = EasClient::new(addr, &big_user, &demo_password(), "LOADBIG", &a.version);
        let inbox = inbox_of(&mut c).await;
        let rss_peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (peak, on, pid) = (rss_peak.clone(), sampling.clone(), proc.0);
            tokio::spawn(async move {
                let p = Proc(pid);
                while on.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(p.status_kb("VmRSS:"), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let rss_before = proc.status_kb("VmRSS:");
        let opens0 = server.imap_mailbox_opens();
        let cpu0 = proc.cpu_seconds();
        let me = Proc(std::process::id());
        let client0 = me.cpu_seconds();
        let machine0 = machine_cpu();
        let dovecot0 = dovecot_cpu();
        let cassandra0 = cassandra_cpu();
        let t = Instant::now();
        let (key, items, requests) = sync_to_end(&mut c, v, &inbox, a.window, a.messages).await;
        let took = t.elapsed();
        let cpu = proc.cpu_seconds() - cpu0;
        let client_cpu = me.cpu_seconds() - client0;
        let machine1 = machine_cpu();
        let mut dovecot_sync = match (dovecot0, dovecot_cpu()) {
            (Some(a), Some(b)) => format!("; Dovecot CPU {:.3} s", b - a),
            _ => String::new(),
        };
        if let (Some(a), Some(b)) = (cassandra0, cassandra_cpu()) {
            dovecot_sync.push_str(&format!("; Cassandra CPU {:.3} s", b - a));
        }
        let (busy, all) = (machine1.0 - machine0.0, machine1.1 - machine0.1);
        let opens = match (opens0, server.imap_mailbox_opens()) {
            (Some(a), Some(b)) => format!("{}", b.saturating_sub(a)),
            _ => "n/a".to_owned(),
        };
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.await;
        assert_eq!(items, a.messages, "every message once");
        println!(
            "initial sync over HTTP: {items} messages in {requests} windows, {:.3} s = {:.0} msg/s ({:.2}x the raw IMAP time); \
             server CPU {cpu:.2} s ({:.0}% of one core); this client's CPU {client_cpu:.2} s; \
             the machine's CPU {busy:.2} s busy of {all:.2} s ({:.0}% busy); server RSS {} MB before, peak {} MB during; IMAP SELECT/EXAMINE {opens}{dovecot_sync}",
            took.as_secs_f64(),
            items as f64 / took.as_secs_f64(),
            took.as_secs_f64() / raw_time.as_secs_f64(),
            100.0 * cpu / took.as_secs_f64(),
            100.0 * busy / all.max(0.01),
            rss_before / 1024,
            rss_peak.load(std::sync::atomic::Ordering::Relaxed) / 1024
        );

        // 3a. No-change Sync on the big INBOX, one device.
        let mut lat = Vec::with_capacity(a.rounds);
        let mut key = key;
        let imap0 = (server.imap_statuses(), server.imap_mailbox_opens());
        for _ in 0..a.rounds {
            let t = Instant::now();
            let (k, n, _) = sync_once(&mut c, v, &inbox, &key, a.window).await;
            lat.push(t.elapsed());
            assert_eq!(n, 0, "a no-change Sync carries nothing");
            key = k;
        }
        lat.sort();
        let imap = match (imap0, (server.imap_statuses(), server.imap_mailbox_opens())) {
            ((Some(s0), Some(o0)), (Some(s), Some(o))) => {
                format!("; IMAP STATUS {}, SELECT/EXAMINE {}", s.saturating_sub(s0), o.saturating_sub(o0))
            }
            _ => String::new(),
        };
        println!(
            "no-change Sync, 1 device, {}-message INBOX: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} syncs){imap}",
            a.messages,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap_or(&Duration::ZERO)),
            lat.len()
        );

        // Devices over the small INBOXes, synced to the end.
        let prepare = |prefix: &'static str| {
            let (users, version) = (users.clone(), a.version.clone());
            let (n, window, small) = (a.devices, a.window, a.small);
            async move {
                let mut ready = Vec::new();
                for i in 0..n {
                    let user = &users[i % users.len()];
                    let mut d = EasClient::new(addr, user, &demo_password(), &format!("{prefix}{i:04}"), &version);
                    let inbox = inbox_of(&mut d).await;
                    let (key, items, _) = sync_to_end(&mut d, v, &inbox, window, small).await;
                    assert_eq!(items, small);
                    ready.push((d, inbox, key));
                }
                ready
            }
        };

        // 3b. N devices at once.
        if a.devices > 0 {
            let ready = prepare("LOADDEV").await;
            println!("{} devices synced; no-change rounds start", a.devices);
            let logins0 = server.imap_logins();
            let cpu0 = proc.cpu_seconds();
            let cassandra0 = cassandra_cpu();
            let t = Instant::now();
            let mut tasks = Vec::new();
            for (mut d, inbox, mut key) in ready {
                let (rounds, window) = (a.rounds, a.window);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(rounds);
                    for _ in 0..rounds {
                        let t = Instant::now();
                        let (k, n, _) = sync_once(&mut d, v, &inbox, &key, window).await;
                        lat.push(t.elapsed());
                        assert_eq!(n, 0);
                        key = k;
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            // Rounds after each device's first: the pool has grown to the
            // devices' concurrency by then.
            let mut later = Vec::new();
            for t in tasks {
                let lat = t.await.expect("device task");
                later.extend(lat.iter().skip(1).copied());
                all.extend(lat);
            }
            let wall = t.elapsed();
            let cpu = proc.cpu_seconds() - cpu0;
            let cassandra_used = match (cassandra0, cassandra_cpu()) {
                (Some(a), Some(b)) => format!("; Cassandra CPU {:.2} s", b - a),
                _ => String::new(),
            };
            all.sort();
            later.sort();
            println!(
                "no-change Sync, {} devices at once, rounds 2-{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                a.devices,
                a.rounds,
                ms(percentile(&later, 0.5)),
                ms(percentile(&later, 0.99)),
                ms(*later.last().unwrap_or(&Duration::ZERO)),
            );
            println!(
                "no-change Sync, {} devices at once ({}-message INBOXes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
                 {} syncs in {:.2} s = {:.0} syncs/s; server CPU {cpu:.2} s{cassandra_used}; server RSS {} MB; {}",
                a.devices,
                a.small,
                ms(percentile(&all, 0.5)),
                ms(percentile(&all, 0.99)),
                ms(*all.last().unwrap_or(&Duration::ZERO)),
                all.len(),
                wall.as_secs_f64(),
                all.len() as f64 / wall.as_secs_f64(),
                proc.status_kb("VmRSS:") / 1024,
                server.imap_logins() - logins0
            );
        }

        // 3c. The same, paced: R syncs/s in all (fresh devices: the loop
        // detector allows 30 identical requests a minute per device).
        if a.devices > 0 && a.rate > 0.0 {
            let ready = prepare("LOADPACE").await;
            let interval = Duration::from_secs_f64(a.devices as f64 / a.rate);
            println!(
                "{} devices synced; paced rounds start ({:.0} syncs/s, one per device every {:.1} ms)",
                a.devices,
                a.rate,
                ms(interval)
            );
            let logins0 = server.imap_logins();
            let cpu0 = proc.cpu_seconds();
            let watched0 = server.folders_from_watcher();
            let t = Instant::now();
            let start = tokio::time::Instant::now() + Duration::from_millis(50);
            let mut tasks = Vec::new();
            for (i, (mut d, inbox, mut key)) in ready.into_iter().enumerate() {
                let (rounds, window) = (a.rounds, a.window);
                let offset = interval.mul_f64(i as f64 / a.devices as f64);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(rounds);
                    for r in 0..rounds {
                        let due = start + offset + interval * r as u32;
                        tokio::time::sleep_until(due).await;
                        let sent = tokio::time::Instant::now();
                        let (k, n, _) = sync_once(&mut d, v, &inbox, &key, window).await;
                        lat.push((due - start, sent.elapsed(), due.elapsed()));
                        assert_eq!(n, 0);
                        key = k;
                    }
                    lat
                }));
            }
            let mut timed = Vec::new();
            for t in tasks {
                timed.extend(t.await.expect("device task"));
            }
            let wall = t.elapsed();
            if let Some(path) = std::env::var_os("OPUSH_LOAD_PACED_TRACE") {
                // Each paced Sync: when it was due (ms after the start) and
                // how long it took (ms), in due order: whether slow ones
                // come together (a stall) or alone.
                timed.sort();
                let text: String = timed
                    .iter()
                    .map(|(at, l, _)| format!("{:.3} {:.3}\n", ms(*at), ms(*l)))
                    .collect();
                std::fs::write(&path, text).expect("OPUSH_LOAD_PACED_TRACE file");
            }
            // A Sync's latency: from the request's sending to its answer.
            // Counted from when it was due instead, it also holds the
            // client's own lateness: tokio's timer wakes on a 1 ms tick
            // (up to 1 ms late by design), and the device's task then waits
            // for a core the server and this tool share.
            let mut all: Vec<Duration> = timed.iter().map(|(_, l, _)| *l).collect();
            let mut from_due: Vec<Duration> = timed.iter().map(|(_, _, l)| *l).collect();
            from_due.sort();
            let cpu = proc.cpu_seconds() - cpu0;
            all.sort();
            let watched = match (watched0, server.folders_from_watcher()) {
                (Some(a), Some(b)) => format!("; {} answered by the push watcher", b - a),
                _ => String::new(),
            };
            println!(
                "no-change Sync, {} devices paced at {:.0} syncs/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
                 {} syncs in {:.2} s; server CPU {cpu:.2} s ({:.0} us per sync); {}{watched}",
                a.devices,
                a.rate,
                ms(percentile(&all, 0.5)),
                ms(percentile(&all, 0.99)),
                ms(*all.last().unwrap_or(&Duration::ZERO)),
                all.len(),
                wall.as_secs_f64(),
                1e6 * cpu / all.len().max(1) as f64,
                server.imap_logins() - logins0
            );
            println!(
                "  counted from when each Sync was due (the client's timer and scheduling included): \
                 p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(percentile(&from_due, 0.5)),
                ms(percentile(&from_due, 0.99)),
                ms(*from_due.last().unwrap_or(&Duration::ZERO)),
            );
        }
    });
    println!(
        "server peak RSS (VmHWM): {} MB; load average {}",
        proc.status_kb("VmHWM:") / 1024,
        load_average()
    );
    server.stop();
}

const FETCH_BIG_MARKER: &str = "load-big5m-v1";

/// Message `i` of the `--fetch-big` INBOX: about 5 MB of text.
fn big_text_message(i: usize) -> String {
    let line =
        format!("Line of big message {i:03}: the quick brown fox jumps over the lazy dog.\r\n");
    let mut body = String::with_capacity(5_000_000 + line.len());
    while body.len() < 5_000_000 {
        body.push_str(&line);
    }
    format!(
        "From: Filler <filler@example.test>\r\nTo: Reader <reader@load.test>\r\n\
Subject: {FETCH_BIG_MARKER} {i}\r\nMessage-ID: <{FETCH_BIG_MARKER}-{i}@opush.test>\r\n\
Date: Sat, 28 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
}

/// `--fetch-big N`: the server's peak RSS when one Sync Fetches N messages
/// of 5 MB with whole MIME bodies (then the deferred ones, as a phone asks
/// them again), and the largest answer. Memory, not time.
fn fetch_big(a: &Args, v: ProtocolVersion) {
    let user = a.big_user();
    let mut imap = RawImap::login(&user);
    let t = Instant::now();
    let filled = fill::ensure(
        &mut imap,
        "INBOX",
        a.fetch_big,
        FETCH_BIG_MARKER,
        big_text_message,
    );
    println!(
        "# opush-load --fetch-big {}: {user}, data ready in {:.1} s ({}); load average {}",
        a.fetch_big,
        t.elapsed().as_secs_f64(),
        if filled { "filled now" } else { "reused" },
        load_average()
    );
    drop(imap);
    let server = Server::start(&a.opush, a);
    let proc = server.proc();
    let rt = runtime();
    let addr = server.addr;
    rt.block_on(async {
        let mut c = EasClient::new(addr, &user, &demo_password(), "LOADFETCH", &a.version);
        let inbox = inbox_of(&mut c).await;
        let typed = |res: &opush_tests::eas::HttpResponse| {
            opush_protocol::commands::sync::SyncResponse::from_element(&res.element(), v)
                .expect("Sync answer")
        };
        // The listing with small bodies: the ServerIds.
        let mut key = "0".to_owned();
        let mut sids = Vec::new();
        for round in 0..a.fetch_big + 10 {
            let res = c.post_xml("Sync", &sync_xml(&inbox, &key, 100)).await;
            let r = typed(&res);
            let col = &r.collections[0];
            key = col.sync_key.0.clone();
            for cmd in col.commands.iter().flatten() {
                if let opush_protocol::commands::sync::ServerCommand::Add { server_id, .. } = cmd {
                    sids.push(server_id.0.clone());
                }
            }
            if round > 0 && !col.more_available {
                break;
            }
        }
        assert_eq!(sids.len(), a.fetch_big, "every message listed");
        let rss_before = proc.status_kb("VmRSS:");
        let hwm_before = proc.status_kb("VmHWM:");
        let mut pending: std::collections::BTreeSet<String> = sids.into_iter().collect();
        let (mut requests, mut largest, mut total) = (0, 0usize, 0usize);
        let t = Instant::now();
        while !pending.is_empty() && requests < 10 * a.fetch_big {
            let fetches: String = pending
                .iter()
                .map(|s| format!("<Fetch><ServerId>{s}</ServerId></Fetch>"))
                .collect();
            let xml = format!(
                "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\"><Collections><Collection>\
                 <SyncKey>{key}</SyncKey><CollectionId>{inbox}</CollectionId><GetChanges>0</GetChanges>\
                 <Options><airsyncbase:BodyPreference><airsyncbase:Type>4</airsyncbase:Type>\
                 </airsyncbase:BodyPreference></Options><Commands>{fetches}</Commands></Collection>\
                 </Collections></Sync>"
            );
            let res = c.post_xml("Sync", &xml).await;
            assert_eq!(res.status, 200, "Sync HTTP status");
            requests += 1;
            largest = largest.max(res.body.len());
            total += res.body.len();
            let r = typed(&res);
            let col = &r.collections[0];
            key = col.sync_key.0.clone();
            for resp in col.responses.iter().flatten() {
                if let opush_protocol::commands::sync::CommandResponse::Fetch {
                    server_id, status, ..
                } = resp
                {
                    if status.code() == 1 {
                        pending.remove(&server_id.0);
                    }
                }
            }
        }
        assert!(pending.is_empty(), "never fetched: {pending:?}");
        println!(
            "Sync Fetch of {} messages of 5 MB (MIME): {requests} requests, largest answer {:.1} MB, {:.1} MB in all, {:.1} s; \
             server RSS {} MB before, peak (VmHWM) {} MB before the Fetches, {} MB after; load average {}",
            a.fetch_big,
            largest as f64 / 1e6,
            total as f64 / 1e6,
            t.elapsed().as_secs_f64(),
            rss_before / 1024,
            hwm_before / 1024,
            proc.status_kb("VmHWM:") / 1024,
            load_average()
        );
    });
    server.stop();
}

/// The `--fetch-attachment` attachment of `mb` megabytes: a fixed pattern.
fn attachment_bytes(mb: usize) -> Vec<u8> {
    (0..mb * 1_000_000)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 9)) as u8)
        .collect()
}

fn attachment_marker(mb: usize) -> String {
    format!("load-att{mb}m-v1")
}

fn attachment_message(mb: usize) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(attachment_bytes(mb));
    let mut wrapped = String::with_capacity(b64.len() + b64.len() / 38);
    for chunk in b64.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        wrapped.push_str("\r\n");
    }
    format!(
        "From: Filler <filler@example.test>\r\nTo: Reader <reader@load.test>\r\n\
Subject: {} 0\r\nDate: Mon, 30 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=ATT\r\n\r\n--ATT\r\nContent-Type: text/plain\r\n\r\n\
One attachment.\r\n--ATT\r\nContent-Type: application/octet-stream; name=big.bin\r\n\
Content-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n\
{wrapped}--ATT--\r\n",
        attachment_marker(mb)
    )
}

/// `--fetch-attachment MB`: the server's peak RSS while `--devices`
/// devices (two per user from `--user-base`) fetch one attachment of MB megabytes at once with
/// ItemOperations, multipart, inline, multipart again. Each device
/// syncs the INBOX first (the peak after the Syncs is theirs), then
/// fetches the whole message as MIME (ItemOperations by ServerId, Type
/// 4), one device after the other; the peak is reset
/// (`/proc/PID/clear_refs`) before each fetch round.
fn fetch_attachment(a: &Args) {
    let mb = a.fetch_attachment;
    // Two devices per user (a user's IMAP connections are few; until
    // session 17 each streamed answer held one while it was sent).
    let user_of = |d: usize| format!("load{:04}@load.test", a.user_base + d / 2);
    let marker = attachment_marker(mb);
    let t = Instant::now();
    let mut filled = false;
    for d in (0..a.devices).step_by(2) {
        let mut imap = RawImap::login(&user_of(d));
        filled |= fill::ensure(&mut imap, "INBOX", 1, &marker, |_| attachment_message(mb));
    }
    println!(
        "# opush-load --fetch-attachment {mb} --devices {}: {} to {}, data ready in {:.1} s ({}); load average {}",
        a.devices,
        user_of(0),
        user_of(a.devices.saturating_sub(1)),
        t.elapsed().as_secs_f64(),
        if filled { "filled now" } else { "reused" },
        load_average()
    );
    let want = attachment_bytes(mb);
    let server = Server::start(&a.opush, a);
    let proc = server.proc();
    let rt = runtime();
    let addr = server.addr;
    rt.block_on(async {
        // Every device syncs the INBOX: its FileReference.
        let mut devices = Vec::new();
        let mut items = Vec::new();
        for d in 0..a.devices {
            let mut c = EasClient::new(
                addr,
                &user_of(d),
                &demo_password(),
                &format!("LOADATT{d}"),
                "14.1",
            );
            let inbox = inbox_of(&mut c).await;
            let mut key = "0".to_owned();
            let mut fref = None;
            for _ in 0..5 {
                let res = c.post_xml("Sync", &sync_xml(&inbox, &key, 10)).await;
                assert_eq!(res.status, 200, "Sync");
                let root = res.element();
                key = find_text(&root, "SyncKey").expect("SyncKey");
                if let Some(sid) = find_text(&root, "ServerId") {
                    items.push((inbox.clone(), sid));
                }
                if let Some(f) = find_text(&root, "FileReference") {
                    fref = Some(f);
                    break;
                }
            }
            if fref.is_none() {
                println!("# the attachment was not listed by Sync (the message is sent without it)");
            }
            devices.push((c, fref.unwrap_or_default()));
        }
        println!(
            "after the Syncs: server RSS {} MB, peak {} MB",
            proc.status_kb("VmRSS:") / 1024,
            proc.status_kb("VmHWM:") / 1024
        );
        // The whole message as MIME (ItemOperations by ServerId, Type 4),
        // one device after the other.
        let message_len = attachment_message(mb).len();
        for (d, (collection, sid)) in items.iter().enumerate().take(a.devices) {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = std::fs::write(format!("/proc/{}/clear_refs", proc.0), "5");
            let rss_before = proc.status_kb("VmRSS:");
            let t = Instant::now();
            let c = &mut devices[d].0;
            let xml = format!(
                "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\">\
                 <Fetch><Store>Mailbox</Store><airsync:CollectionId>{collection}</airsync:CollectionId>\
                 <airsync:ServerId>{sid}</airsync:ServerId><Options><airsyncbase:BodyPreference>\
                 <airsyncbase:Type>4</airsyncbase:Type></airsyncbase:BodyPreference></Options></Fetch></ItemOperations>"
            );
            let res = c.post_xml("ItemOperations", &xml).await;
            assert_eq!(res.status, 200, "ItemOperations MIME");
            let root = res.element();
            let data = find_text(&root, "Data").unwrap_or_default();
            println!(
                "device {d} fetching the message as MIME: status {}, Data of {:.1} MB (message {:.1} MB, {}), {:.1} s; \
                 server RSS {} MB before, peak (VmHWM since reset) {} MB; load average {}",
                find_text(&root, "Status").unwrap_or_default(),
                data.len() as f64 / 1e6,
                message_len as f64 / 1e6,
                if data.len() == message_len { "whole" } else { "NOT whole" },
                t.elapsed().as_secs_f64(),
                rss_before / 1024,
                proc.status_kb("VmHWM:") / 1024,
                load_average()
            );
        }
        if devices.iter().any(|(_, f)| f.is_empty()) {
            return;
        }
        for multipart in [true, false, true] {
            // What the Syncs (or the last round) freed goes back first.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = std::fs::write(format!("/proc/{}/clear_refs", proc.0), "5");
            let rss_before = proc.status_kb("VmRSS:");
            let t = Instant::now();
            let mut tasks = Vec::new();
            for (mut c, fref) in std::mem::take(&mut devices) {
                let want_len = want.len();
                tasks.push(tokio::spawn(async move {
                    let xml = format!(
                        "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsyncbase=\"AirSyncBase:\">\
                         <Fetch><Store>Mailbox</Store><airsyncbase:FileReference>{fref}</airsyncbase:FileReference>\
                         </Fetch></ItemOperations>"
                    );
                    let query = c.plain_query(
                        "ItemOperations",
                        if multipart { "&AcceptMultiPart=T" } else { "" },
                    );
                    let res = c
                        .post_query(&query, true, &opush_tests::eas::wbxml_of(&xml))
                        .await;
                    assert_eq!(res.status, 200, "ItemOperations");
                    let got = if res.header("Content-Type")
                        == Some("application/vnd.ms-sync.multipart")
                    {
                        let int = |at: usize| {
                            u32::from_le_bytes([res.body[at], res.body[at + 1], res.body[at + 2], res.body[at + 3]]) as usize
                        };
                        let (offset, len) = (int(12), int(16));
                        res.body[offset..offset + len].to_vec()
                    } else {
                        use base64::Engine as _;
                        let data = find_text(&res.element(), "Data").expect("Data");
                        base64::engine::general_purpose::STANDARD
                            .decode(data.as_bytes())
                            .expect("base64")
                    };
                    assert_eq!(got.len(), want_len, "attachment length");
                    (c, fref, got, res.body.len())
                }));
            }
            let mut answer = 0;
            for task in tasks {
                let (c, fref, got, len) = task.await.expect("device task");
                assert!(got == want, "attachment bytes differ");
                answer = len;
                devices.push((c, fref));
            }
            println!(
                "{} devices fetching a {mb} MB attachment at once ({}): answers of {:.1} MB, {:.1} s; \
                 server RSS {} MB before, peak (VmHWM since reset) {} MB; load average {}",
                a.devices,
                if multipart { "multipart asked" } else { "inline" },
                answer as f64 / 1e6,
                t.elapsed().as_secs_f64(),
                rss_before / 1024,
                proc.status_kb("VmHWM:") / 1024,
                load_average()
            );
        }
    });
    server.stop();
}
