//! Shared helpers for the integration tests that run against real services
//! (Dovecot, Postfix, Cassandra …) started by `scripts/stack`.
//!
//! A test that needs a service calls [`require`]: when the service does not
//! answer, the test fails with the command that starts it. It never skips:
//! a missing service is a failed test, in CI and on a laptop alike.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod eas;
pub mod fill;
pub mod imap_tap;
pub mod relay;

/// A service of the test stack: its name in `scripts/stack` and its address.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The plug-in name, as in `scripts/stack up <name>`.
    pub name: &'static str,
    /// Where it listens (loopback only).
    pub addr: &'static str,
}

/// Dovecot IMAP (CONDSTORE, QRESYNC, NOTIFY, SPECIAL-USE).
pub const DOVECOT_IMAP: Service = Service {
    name: "dovecot",
    addr: "127.0.0.1:1143",
};
/// Dovecot ManageSieve (RFC 5804, Pigeonhole): the users' Sieve scripts,
/// run at LMTP delivery (vacation replies go out through Postfix).
pub const DOVECOT_MANAGESIEVE: Service = Service {
    name: "dovecot",
    addr: "127.0.0.1:1190",
};
/// Postfix relay for loopback clients, delivering into Dovecot over LMTP.
pub const POSTFIX_SMTP: Service = Service {
    name: "postfix",
    addr: "127.0.0.1:1025",
};
/// Postfix submission with SASL authentication through Dovecot.
pub const POSTFIX_SUBMISSION: Service = Service {
    name: "postfix",
    addr: "127.0.0.1:1587",
};
/// Apache Cassandra 5.0, native protocol.
pub const CASSANDRA: Service = Service {
    name: "cassandra",
    addr: "127.0.0.1:9042",
};

/// OpenLDAP slapd, the global address list (scripts/stack.d/slapd.sh).
pub const SLAPD_LDAP: Service = Service {
    name: "slapd",
    addr: "127.0.0.1:3389",
};
/// The stack directory's suffix; people are under `ou=people`.
pub const LDAP_SUFFIX: &str = "dc=example,dc=test";
/// The read-only DN opush binds as (password: [`demo_password`]).
pub const LDAP_BIND_DN: &str = "cn=opush,dc=example,dc=test";
/// Radicale 3, CalDAV and CardDAV (scripts/stack.d/radicale.sh): each user
/// has `/<user>/calendar/` and `/<user>/contacts/`.
pub const RADICALE_DAV: Service = Service {
    name: "radicale",
    addr: "127.0.0.1:5232",
};

/// The password of every user of the test stack (`OPUSH_DEMO_PASSWORD`).
pub fn demo_password() -> String {
    std::env::var("OPUSH_DEMO_PASSWORD").unwrap_or_else(|_| "opush-demo".to_owned())
}

/// The stack users whose passwords need more than a quoted ASCII IMAP
/// string, with their passwords: the same pairs as `DOVECOT_SPECIAL_USERS`
/// in scripts/stack.d/dovecot.sh. The first is Latin-1 representable.
pub const SPECIAL_PASSWORD_USERS: [(&str, &str); 3] = [
    ("utf8pw1@example.test", "Grüße-2026 100%"),
    ("utf8pw2@example.test", r#"p@ss "quoted" \ back:slash"#),
    ("utf8pw3@example.test", "пароль 密码🔑"),
];

/// Fails the calling test unless `svc` accepts a TCP connection.
pub fn require(svc: Service) -> SocketAddr {
    let addr: SocketAddr = match svc.addr.parse() {
        Ok(a) => a,
        Err(e) => panic!("bad address {} for {}: {e}", svc.addr, svc.name),
    };
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        panic!(
            "service `{}` is not answering on {} ({e}): run `scripts/stack up {}` (scripts/test does it for you)",
            svc.name, svc.addr, svc.name
        );
    }
    addr
}

/// The workspace root. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test;
/// the compile-time value is the fallback for a binary run by hand.
pub fn repo_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.join("..")
}

/// The real-device traffic corpus: `real-devices/` of `$OPUSH_CORPUS` when
/// set, else of the first `shared/corpus` found walking up from the clone
/// (`shared/` beside a clone, or beside the parent of a worktree under
/// `wt/`), as `protocol/tests/find_corpus/mod.rs` finds it. Fails the calling
/// test when it is missing (in CI too: never a skip).
pub fn corpus_dir() -> PathBuf {
    let dir = match std::env::var_os("OPUSH_CORPUS") {
        Some(given) => PathBuf::from(given).join("real-devices"),
        None => {
            let root = repo_root();
            root.ancestors()
                .map(|up| up.join("shared/corpus/real-devices"))
                .find(|d| d.is_dir())
                .unwrap_or_else(|| root.join("../shared/corpus/real-devices"))
        }
    };
    assert!(
        dir.is_dir(),
        "the traffic corpus is missing at {} (set OPUSH_CORPUS to the corpus \
         directory, or put shared/corpus beside the clone)",
        dir.display()
    );
    dir
}

/// A deliberately plain IMAP client on a blocking socket, for tests to check
/// what Dovecot holds independently of opush's own IMAP code.
pub struct RawImap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u32,
}

impl RawImap {
    /// Connects to the stack's Dovecot (failing the test when it is down).
    pub fn connect() -> RawImap {
        RawImap::connect_to(require(DOVECOT_IMAP))
    }

    /// Connects to an IMAP server at `addr` (e.g. a private Dovecot).
    pub fn connect_to(addr: SocketAddr) -> RawImap {
        let w = TcpStream::connect(addr).expect("connect imap");
        w.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let mut r = BufReader::new(w.try_clone().expect("clone"));
        let mut greeting = String::new();
        r.read_line(&mut greeting).expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        RawImap { r, w, n: 0 }
    }

    /// Connects and logs in as `user` with the stack password.
    pub fn login(user: &str) -> RawImap {
        RawImap::login_to(require(DOVECOT_IMAP), user)
    }

    /// Connects to `addr` and logs in as `user` with the stack password.
    pub fn login_to(addr: SocketAddr, user: &str) -> RawImap {
        let mut imap = RawImap::connect_to(addr);
        let (_, ok) = imap.cmd(&format!("LOGIN {user} {}", demo_password()));
        assert!(ok.starts_with("OK"), "login {user}: {ok}");
        imap
    }

    /// Sends a command; returns (untagged lines, tagged status line without the tag).
    /// Literals in responses are read into the line that announced them.
    pub fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.try_cmd(c)
            .unwrap_or_else(|e| panic!("{e} during {}", c.lines().next().unwrap_or(c)))
    }

    /// [`RawImap::cmd`], with an error when the connection fails or the
    /// server closes it (Dovecot does after `* BYE`, e.g. "IMAP session
    /// state is inconsistent"); the session is unusable after one.
    pub fn try_cmd(&mut self, c: &str) -> std::io::Result<(Vec<String>, String)> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        write!(self.w, "{tag} {c}\r\n")?;
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l)?;
            if l.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed (last: {:?})", lines.last()),
                ));
            }
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                return Ok((lines, rest.trim_end().to_owned()));
            }
            // `{n}` at the end of a line announces n bytes of literal.
            if let Some(n) = l
                .trim_end()
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut lit = vec![0u8; n];
                self.r.read_exact(&mut lit)?;
                l.push_str(&String::from_utf8_lossy(&lit));
                let mut tail = String::new();
                self.r.read_line(&mut tail)?;
                l.push_str(&tail);
            }
            lines.push(l);
        }
    }

    /// Sends a command that must succeed (the test fails on anything but OK).
    pub fn ok(&mut self, c: &str) {
        let (_, status) = self.cmd(c);
        assert!(status.starts_with("OK"), "{c}: {status}");
    }

    /// The UID of the one INBOX message whose subject contains `subject`
    /// (the test fails if there is none or more than one).
    pub fn inbox_uid(&mut self, subject: &str) -> u32 {
        let uids = self.search_subject("INBOX", subject);
        assert_eq!(uids.len(), 1, "{subject}: {uids:?}");
        uids[0]
    }

    /// APPENDs to INBOX a small plain-text message with `subject` (and a
    /// fixed Date), asserting the server took it.
    pub fn append_to_inbox(&mut self, subject: &str) {
        let msg = format!(
            "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\
             Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nbody of {subject}\r\n"
        );
        let (_, ok) = self.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
        assert!(ok.starts_with("OK"), "append: {ok}");
    }

    /// UIDs in `mailbox` whose Subject contains `needle`.
    pub fn search_subject(&mut self, mailbox: &str, needle: &str) -> Vec<u32> {
        let (_, ok) = self.cmd(&format!("SELECT \"{mailbox}\""));
        assert!(ok.starts_with("OK"), "select {mailbox}: {ok}");
        self.uid_search(&format!("SUBJECT \"{needle}\""))
    }

    /// `UID SEARCH criteria` in the selected mailbox: the UIDs found.
    pub fn uid_search(&mut self, criteria: &str) -> Vec<u32> {
        let (found, _) = self.cmd(&format!("UID SEARCH {criteria}"));
        found
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|l| l.split_whitespace())
            .filter_map(|u| u.parse().ok())
            .collect()
    }

    /// Waits (up to 30 s) until a message whose Subject contains `needle` is in `mailbox`.
    pub fn wait_for_subject(&mut self, mailbox: &str, needle: &str) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let uids = self.search_subject(mailbox, needle);
            if !uids.is_empty() {
                return uids;
            }
            assert!(
                Instant::now() < deadline,
                "no message with subject {needle:?} arrived in {mailbox}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The whole message with this UID in the selected mailbox.
    pub fn fetch_message(&mut self, uid: u32) -> String {
        let (lines, ok) = self.cmd(&format!("UID FETCH {uid} BODY.PEEK[]"));
        assert!(ok.starts_with("OK"), "fetch {uid}: {ok}");
        lines.concat()
    }
}

/// A marker unique to this test run, for subjects and folder names.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A private Dovecot (IMAP only, the stack's users and passwords, its own
/// mail store in `dir`) on `127.0.0.1:port`, for tests that stop and start
/// the IMAP server, or need one configured unlike the shared one
/// (`scripts/dovecot-private`): the shared one is never stopped. Stopped
/// when dropped, even when the test fails.
#[derive(Debug)]
pub struct PrivateDovecot {
    /// Its state and mail store.
    pub dir: PathBuf,
    /// Its IMAP port.
    pub port: u16,
    /// Which non-synchronizing literals it advertises.
    pub literals: Literals,
    /// `login_trusted_networks = 127.0.0.0/8` (`--trusted-loopback`).
    pub trusted_loopback: bool,
    /// LMTP on `port + 1` running Sieve, ManageSieve on `port + 2`
    /// (`--sieve`).
    pub sieve: bool,
    /// Each user's mail store limited to this many KiB (`--quota-kb`).
    pub quota_kb: Option<u32>,
    /// No `Trash` mailbox configured (`--no-trash`).
    pub no_trash: bool,
    /// Capabilities not advertised after login (`--drop-capability`).
    pub dropped_capabilities: Vec<&'static str>,
}

/// The non-synchronizing literals (RFC 7888) a [`PrivateDovecot`] advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literals {
    /// LITERAL+, Dovecot's default.
    Plus,
    /// LITERAL- only (`scripts/dovecot-private --literal-minus`).
    Minus,
    /// Neither (`scripts/dovecot-private --no-literal-plus`).
    None,
}

impl PrivateDovecot {
    /// Describes the instance (nothing is started yet).
    pub fn new(dir: PathBuf, port: u16) -> PrivateDovecot {
        PrivateDovecot {
            dir,
            port,
            literals: Literals::Plus,
            trusted_loopback: false,
            sieve: false,
            quota_kb: None,
            no_trash: false,
            dropped_capabilities: Vec::new(),
        }
    }

    /// The same instance without a configured `Trash` mailbox
    /// (`scripts/dovecot-private --no-trash`): its users have no Trash
    /// folder (none marked `\Trash`, none created on access) until a
    /// client CREATEs one.
    pub fn without_trash(mut self) -> PrivateDovecot {
        self.no_trash = true;
        self
    }

    /// The same instance not advertising `capability` after login
    /// (`scripts/dovecot-private --drop-capability`), as servers without
    /// UNSELECT or UIDPLUS (Dovecot still answers the commands).
    pub fn without_capability(mut self, capability: &'static str) -> PrivateDovecot {
        self.dropped_capabilities.push(capability);
        self
    }

    /// The same instance with each user's mail store limited to `kb` KiB
    /// (`scripts/dovecot-private --quota-kb`): an APPEND over it is refused
    /// with `NO [OVERQUOTA] Quota exceeded (mailbox for user is full)`
    /// (`None`: no limit; `run("up")` again applies a change to a running
    /// instance, whose sessions keep the old limit until kicked).
    pub fn with_quota_kb(mut self, kb: Option<u32>) -> PrivateDovecot {
        self.quota_kb = kb;
        self
    }

    /// The same instance with LMTP delivery on `port + 1` running the
    /// Pigeonhole Sieve plug-in and ManageSieve (RFC 5804) on `port + 2`
    /// (`scripts/dovecot-private --sieve`): vacation replies go out through
    /// the stack's Postfix, which delivers load.test and example.test mail
    /// into the shared instance. Three consecutive ports are used.
    pub fn with_sieve(mut self) -> PrivateDovecot {
        self.sieve = true;
        self
    }

    /// Its LMTP address (with [`PrivateDovecot::with_sieve`]).
    pub fn lmtp_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + 1))
    }

    /// Its ManageSieve address (with [`PrivateDovecot::with_sieve`]).
    pub fn sieve_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + 2))
    }

    /// The same instance trusting loopback clients
    /// (`login_trusted_networks = 127.0.0.0/8`, `scripts/dovecot-private
    /// --trusted-loopback`), as a Dovecot behind opush is set up: the
    /// address an ID command names (`x-originating-ip`) is then the
    /// client's, in its log (`rip=`) and its auth penalty. The penalty
    /// stays on.
    pub fn with_trusted_loopback(mut self) -> PrivateDovecot {
        self.trusted_loopback = true;
        self
    }

    /// Its configuration file (for `doveadm -c`).
    pub fn conf(&self) -> PathBuf {
        self.dir.join("dovecot.conf")
    }

    /// Its log (`log_path`), empty when it has none yet.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.join("dovecot.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The addresses its auth penalty (anvil) holds, with their penalty
    /// counts (`doveadm penalty`).
    pub fn penalties(&self) -> Vec<(String, u32)> {
        let out = std::process::Command::new("doveadm")
            .arg("-c")
            .arg(self.conf())
            .arg("penalty")
            .output()
            .unwrap_or_else(|e| panic!("doveadm penalty: {e}"));
        assert!(
            out.status.success(),
            "doveadm penalty: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
            })
            .collect()
    }

    /// The same instance advertising neither LITERAL+ nor LITERAL-, like
    /// IMAP servers without them (`scripts/dovecot-private
    /// --no-literal-plus`: Dovecot still reads a `{n+}` literal of up to
    /// 4096 bytes, and ends the connection on a bigger one; see
    /// [`imap_tap`] for checking what a client sent).
    pub fn without_literal_plus(mut self) -> PrivateDovecot {
        self.literals = Literals::None;
        self
    }

    /// The same instance advertising LITERAL- and not LITERAL+, like Gmail
    /// (`scripts/dovecot-private --literal-minus`: Dovecot reads a `{n+}`
    /// literal of up to 4096 bytes and ends the connection on a bigger
    /// one, `* BYE [TOOBIG]`).
    pub fn with_literal_minus(mut self) -> PrivateDovecot {
        self.literals = Literals::Minus;
        self
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `scripts/dovecot-private ACTION DIR PORT` (`up`, `down`, `kick`), which must
    /// succeed. The daemon's output goes nowhere: it inherits the
    /// descriptors, and a pipe would never reach EOF.
    pub fn run(&self, action: &str) {
        let script = repo_root().join("scripts/dovecot-private");
        let status = self
            .command(action)
            .status()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            status.success(),
            "dovecot-private {action} failed; see {}/dovecot.log",
            self.dir.display()
        );
    }

    fn command(&self, action: &str) -> std::process::Command {
        use std::process::Stdio;
        let mut c = std::process::Command::new(repo_root().join("scripts/dovecot-private"));
        match self.literals {
            Literals::Plus => {}
            Literals::Minus => {
                c.arg("--literal-minus");
            }
            Literals::None => {
                c.arg("--no-literal-plus");
            }
        }
        if self.trusted_loopback {
            c.arg("--trusted-loopback");
        }
        if self.sieve {
            c.arg("--sieve");
        }
        if let Some(kb) = self.quota_kb {
            c.arg("--quota-kb").arg(kb.to_string());
        }
        if self.no_trash {
            c.arg("--no-trash");
        }
        for capability in &self.dropped_capabilities {
            c.arg("--drop-capability").arg(capability);
        }
        c.arg(action)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

impl Drop for PrivateDovecot {
    fn drop(&mut self) {
        let _ = self.command("down").status();
    }
}
