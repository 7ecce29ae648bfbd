//! Hostile input over HTTP against the real stack: real requests (the
//! real-device corpus, our own encoder's request for every command, and
//! requests built from the device's live state) are mutated with a fixed
//! seed — bit flips, truncation, tag and code-page swaps, duplicated or
//! missing elements, out-of-range and enormous numbers, wrong headers,
//! malformed base64 request lines, bad Basic credentials — and posted as the
//! device itself, at 12.1, 14.1 and 16.1. For every one: no 5xx (but a 503
//! with Retry-After), no panic, an answer (never a hang), and for a 4xx a
//! reason in the server's log. After each batch a valid Sync goes on from
//! the device's last good SyncKey and must bring what arrived meanwhile,
//! with no item lost or given twice. Transport abuse (chunked bodies, bodies
//! over the limit, clients that stop mid-body, huge heads) has its own test.
//!
//! `OPUSH_HOSTILE_CASES` (default 3) sets the mutations per seed request;
//! `OPUSH_HOSTILE_SEED` changes the seed.
//!
//! Reserved Dovecot users: load1131 (the devices' mailbox), load1132 (the
//! transport test), load1133 (MIME, parameters, drafts, Autodiscover),
//! load1134 (the regression tests of what the campaign found), load1140
//! (where the MIME requests that do get sent go).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opush_protocol::commands::sync::{ServerCommand, SyncRequest};
use opush_protocol::commands::EasDocument;
use opush_protocol::query::{Base64Query, Command, QueryParams};
use opush_protocol::wbxml::{self, Element, Node, Tag, CODE_PAGES};
use opush_tests::eas::{basic, raw_exchange, EasClient, HttpResponse};
use opush_tests::{corpus_dir, demo_password, repo_root, RawImap};
use support::*;

const USER: &str = "load1131@load.test";
const TRANSPORT_USER: &str = "load1132@load.test";
const MESSAGES: usize = 12;
const MARKER: &str = "hostile-v1";
const VERSIONS: [&str; 3] = ["12.1", "14.1", "16.1"];
/// How long any answer may take (Pings park at most 3 s here).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// What the server logs, and whether anything panicked.

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs (once, before the harness's own) a subscriber keeping every
/// INFO+ line, and a panic hook remembering every panic of any thread.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || LogWriter(w.clone()))
                .finish(),
        )
        .expect("the first subscriber");
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(info.to_string());
            default(info);
        }));
        buf
    })
    .clone()
}

fn log_len() -> usize {
    capture_logs().lock().unwrap().len()
}

fn log_since(mark: usize) -> String {
    let log = capture_logs();
    let log = log.lock().unwrap();
    String::from_utf8_lossy(&log[mark.min(log.len())..]).into_owned()
}

fn panics() -> Vec<String> {
    PANICS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// ---------------------------------------------------------------------------
// A fixed-seed generator (SplitMix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn cases() -> usize {
    std::env::var("OPUSH_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn seed() -> u64 {
    std::env::var("OPUSH_HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0B05_4E11)
}

// ---------------------------------------------------------------------------
// Seed requests.

/// One request to mutate: its command and WBXML body (or raw body).
#[derive(Clone)]
struct Seed {
    label: String,
    cmd: String,
    body: Vec<u8>,
}

fn cmd_of_root(root: &Element<'_>) -> String {
    root.tag.name().unwrap_or("Sync").to_owned()
}

/// Requests of the real-device corpus: every one but Sync, every 20th Sync.
fn corpus_seeds() -> Vec<Seed> {
    let dir = corpus_dir();
    let mut files = Vec::new();
    for session in std::fs::read_dir(&dir).unwrap() {
        let session = session.unwrap().path();
        if !session.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&session).unwrap() {
            let f = f.unwrap().path();
            if f.to_string_lossy().ends_with("-request.wbxml") {
                files.push(f);
            }
        }
    }
    files.sort();
    let mut syncs = 0;
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let cmd = name.split('-').nth(1).unwrap().to_owned();
        if cmd == "Sync" {
            syncs += 1;
            if syncs % 20 != 1 {
                continue;
            }
        }
        out.push(Seed {
            label: f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned(),
            cmd,
            body: std::fs::read(&f).unwrap(),
        });
    }
    let standalone = dir.join("standalone/captured-wbxml");
    for f in std::fs::read_dir(&standalone).unwrap() {
        let f = f.unwrap().path();
        let body = std::fs::read(&f).unwrap();
        let Ok(root) = wbxml::decode(&body) else {
            continue;
        };
        out.push(Seed {
            label: format!("standalone/{}", f.file_name().unwrap().to_string_lossy()),
            cmd: cmd_of_root(&root),
            body,
        });
    }
    out
}

/// Our encoder's request for every command (protocol/test_data/commands).
fn golden_seeds() -> Vec<Seed> {
    let dir = repo_root().join("protocol/test_data/commands");
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let mut files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|f| f.unwrap().path())
            .filter(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("request")
            })
            .collect();
        files.sort();
        for f in files {
            let xml = std::fs::read_to_string(&f).unwrap();
            let body = opush_protocol::xml::xml_to_wbxml(&xml).unwrap();
            let root = wbxml::decode(&body).unwrap();
            out.push(Seed {
                label: f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned(),
                cmd: cmd_of_root(&root),
                body,
            });
        }
    }
    assert!(out.len() >= 19, "golden requests missing: {}", out.len());
    out
}

/// Requests naming the device's real folder, key and items.
fn live_seeds(d: &Device) -> Vec<Seed> {
    let any_item = d.view.iter().next().cloned().unwrap_or_default();
    let xml = |cmd: &str, xml: String| Seed {
        label: format!("live {cmd}"),
        cmd: cmd.to_owned(),
        body: opush_tests::eas::wbxml_of(&xml),
    };
    vec![
        xml(
            "Sync",
            sync_xml(&d.inbox, &d.key, 5, "<DeletesAsMoves>1</DeletesAsMoves>"),
        ),
        xml(
            "Sync",
            format!(
                "<Sync xmlns=\"AirSync:\"><Collections><Collection><SyncKey>{}</SyncKey>\
                 <CollectionId>{}</CollectionId><GetChanges/><WindowSize>512</WindowSize>\
                 <Commands><Fetch><ServerId>{any_item}</ServerId></Fetch></Commands>\
                 </Collection></Collections><WindowSize>512</WindowSize></Sync>",
                d.key, d.inbox
            ),
        ),
        xml(
            "Ping",
            format!(
                "<Ping xmlns=\"Ping:\"><HeartbeatInterval>1</HeartbeatInterval><Folders><Folder>\
                 <Id>{}</Id><Class>Email</Class></Folder></Folders></Ping>",
                d.inbox
            ),
        ),
        xml(
            "GetItemEstimate",
            format!(
                "<GetItemEstimate xmlns=\"GetItemEstimate:\" xmlns:airsync=\"AirSync:\"><Collections><Collection>\
                 <airsync:SyncKey>{}</airsync:SyncKey><CollectionId>{}</CollectionId>\
                 <airsync:Options><airsync:FilterType>0</airsync:FilterType></airsync:Options>\
                 </Collection></Collections></GetItemEstimate>",
                d.key, d.inbox
            ),
        ),
        xml(
            "ItemOperations",
            format!(
                "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" \
                 xmlns:airsyncbase=\"AirSyncBase:\"><Fetch><Store>Mailbox</Store>\
                 <airsync:CollectionId>{}</airsync:CollectionId><airsync:ServerId>{any_item}</airsync:ServerId>\
                 <Options><airsyncbase:BodyPreference><airsyncbase:Type>4</airsyncbase:Type>\
                 <airsyncbase:TruncationSize>100</airsyncbase:TruncationSize></airsyncbase:BodyPreference>\
                 </Options></Fetch></ItemOperations>",
                d.inbox
            ),
        ),
        xml(
            "Search",
            "<Search xmlns=\"Search:\" xmlns:airsync=\"AirSync:\"><Store><Name>Mailbox</Name>\
             <Query><And><airsync:Class>Email</airsync:Class><FreeText>fox</FreeText></And></Query>\
             <Options><Range>0-9</Range></Options></Store></Search>"
                .to_owned(),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Mutations.

const HOSTILE_TEXT: [&str; 16] = [
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999",
    "",
    "abc",
    "1:1",
    "0-4294967295",
    "4294967295-0",
    "9-2",
    "%s%s%n",
    "../../../../etc/passwd",
    "\u{1F4A3}\u{202E}\u{FEFF}",
    " 12 ",
];

/// Elements whose numbers bound work the server does.
const NUMERIC: [&str; 12] = [
    "WindowSize",
    "HeartbeatInterval",
    "Wait",
    "Range",
    "MaxItems",
    "TruncationSize",
    "FilterType",
    "MIMETruncation",
    "MaxSize",
    "Type",
    "Conflict",
    "MIMESupport",
];

fn count_elements(el: &Element<'_>) -> usize {
    1 + el.elements().map(count_elements).sum::<usize>()
}

/// The `n`-th element in pre-order (0 is `el`).
fn nth_mut<'e>(el: &'e mut Element<'static>, n: &mut usize) -> Option<&'e mut Element<'static>> {
    if *n == 0 {
        return Some(el);
    }
    *n -= 1;
    for child in el.children.iter_mut() {
        if let Node::Element(c) = child {
            if let Some(found) = nth_mut(c, n) {
                return Some(found);
            }
        }
    }
    None
}

fn random_tag(rng: &mut Rng) -> Tag {
    let page = rng.pick(CODE_PAGES);
    let (token, _) = rng.pick(page.entries);
    Tag::new(page.id, *token)
}

fn hostile_text(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "A".repeat(70_000),
        1 => "9".repeat(rng.below(40) + 1),
        _ => (*rng.pick(&HOSTILE_TEXT)).to_owned(),
    }
}

/// One tree mutation; false when the tree had no place for it.
fn mutate_tree(root: &mut Element<'static>, rng: &mut Rng) -> bool {
    let total = count_elements(root);
    let mut n = rng.below(total);
    let op = rng.below(9);
    // Operations on a child need a parent: pick the element, act on its children.
    let Some(el) = nth_mut(root, &mut n) else {
        return false;
    };
    let kids: Vec<usize> = el
        .children
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Node::Element(_)))
        .map(|(i, _)| i)
        .collect();
    match op {
        // A missing element.
        0 if !kids.is_empty() => {
            let i = *rng.pick(&kids);
            el.children.remove(i);
        }
        // A duplicated element (several times, sometimes).
        1 if !kids.is_empty() => {
            let i = *rng.pick(&kids);
            let copy = el.children[i].clone();
            for _ in 0..(1 + rng.below(3) * rng.below(50)) {
                el.children.insert(i, copy.clone());
            }
        }
        // Hostile text in place of the content.
        2 => el.children = vec![Node::Text(hostile_text(rng).into())],
        // Empty.
        3 => el.children.clear(),
        // Another tag (any page).
        4 => el.tag = random_tag(rng),
        // Wrapped in a random element.
        5 => {
            let inner = std::mem::replace(el, Element::new(random_tag(rng)));
            el.children.push(Node::Element(inner));
        }
        // Opaque bytes (invalid UTF-8) in place of the content.
        6 => el.children = vec![Node::Opaque(vec![0xFF, 0xFE, 0x00, 0xC3].into())],
        // A random extra child.
        7 => {
            let mut child = Element::new(random_tag(rng));
            if rng.below(2) == 0 {
                child.children.push(Node::Text(hostile_text(rng).into()));
            }
            el.children.push(Node::Element(child));
        }
        // A work-bounding number set out of range, wherever it appears.
        _ => {
            let value = hostile_text(rng);
            let mut hit = false;
            set_numeric(root, &value, &mut hit);
            return hit;
        }
    }
    true
}

fn set_numeric(el: &mut Element<'static>, value: &str, hit: &mut bool) {
    if el.tag.name().is_some_and(|n| NUMERIC.contains(&n)) {
        el.children = vec![Node::Text(value.to_owned().into())];
        *hit = true;
        return;
    }
    for c in el.children.iter_mut() {
        if let Node::Element(c) = c {
            set_numeric(c, value, hit);
        }
    }
}

/// One byte-level mutation.
fn mutate_bytes(body: &mut Vec<u8>, rng: &mut Rng) {
    if body.is_empty() {
        body.push(rng.next() as u8);
        return;
    }
    match rng.below(7) {
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(body.len());
                body[i] ^= 1 << rng.below(8);
            }
        }
        1 => body.truncate(rng.below(body.len())),
        2 => {
            let at = rng.below(body.len() + 1);
            let junk: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
            body.splice(at..at, junk);
        }
        // A code-page switch to a random (maybe missing) page.
        3 => {
            let at = 4 + rng.below(body.len().saturating_sub(4));
            let page = rng.below(40) as u8;
            body.splice(at.min(body.len())..at.min(body.len()), [0x00, page]);
        }
        // An OPAQUE of 2 GiB.
        4 => {
            let at = 4 + rng.below(body.len().saturating_sub(4));
            body.splice(
                at.min(body.len())..at.min(body.len()),
                [0xC3, 0x88, 0x80, 0x80, 0x80, 0x00],
            );
        }
        // A huge string table.
        5 if body.len() > 4 => {
            body.splice(3..4, [0x8F, 0xFF, 0xFF, 0xFF, 0x7F]);
        }
        // Very deep nesting.
        _ => {
            let at = body.len().min(5);
            body.splice(at..at, std::iter::repeat_n(0x45, 3000));
        }
    }
}

/// The mutated body of `seed`: tree mutations when it decodes, bytes otherwise (or sometimes).
fn mutate(seed: &Seed, rng: &mut Rng) -> Vec<u8> {
    if let (Ok(root), true) = (wbxml::decode(&seed.body), rng.below(3) != 0) {
        let mut root = root.into_owned();
        for _ in 0..=rng.below(3) {
            mutate_tree(&mut root, rng);
        }
        wbxml::encode_to_vec(&root)
    } else {
        let mut body = seed.body.clone();
        for _ in 0..=rng.below(2) {
            mutate_bytes(&mut body, rng);
        }
        body
    }
}

// ---------------------------------------------------------------------------
// Requests on the wire.

/// A request to send as raw bytes.
struct Raw {
    label: String,
    bytes: Vec<u8>,
    /// The body sent, with its command, to tell a legitimate reset.
    cmd: String,
    body: Vec<u8>,
}

fn request(target: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn device_headers(c: &EasClient) -> Vec<(String, String)> {
    vec![
        ("Authorization".into(), c.authorization.clone()),
        ("User-Agent".into(), c.user_agent.clone()),
        (
            "Content-Type".into(),
            "application/vnd.ms-sync.wbxml".into(),
        ),
        ("MS-ASProtocolVersion".into(), c.version.clone()),
    ]
}

fn target(c: &EasClient, cmd: &str) -> String {
    let extra = if cmd == "GetAttachment" {
        "&AttachmentName=2%3A1%3A1"
    } else if matches!(cmd, "SendMail" | "SmartReply" | "SmartForward") {
        "&SaveInSent=T"
    } else {
        ""
    };
    format!("/Microsoft-Server-ActiveSync?{}", c.plain_query(cmd, extra))
}

/// A request of `c` for `cmd` with `body` and one header or request-line
/// mutation (chosen by `rng`), or none.
fn with_head_mutation(c: &EasClient, cmd: &str, body: Vec<u8>, rng: &mut Rng) -> Raw {
    let mut headers = device_headers(c);
    let mut t = target(c, cmd);
    let set = |headers: &mut Vec<(String, String)>, name: &str, value: String| {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_owned(), value));
    };
    let what = match rng.below(24) {
        0 => {
            set(
                &mut headers,
                "Content-Type",
                (*rng.pick(&[
                    "text/plain",
                    "",
                    "application/vnd.ms-sync.wbxml; charset=ebcdic",
                    "message/rfc822",
                    "multipart/form-data; boundary=",
                ]))
                .to_owned(),
            );
            "content type"
        }
        1 => {
            headers.retain(|(n, _)| n != "Content-Type");
            "no content type"
        }
        2 => {
            set(
                &mut headers,
                "MS-ASProtocolVersion",
                (*rng.pick(&[
                    "99.0",
                    "",
                    "14",
                    "1.0",
                    "14.1.1",
                    "2.5",
                    "12.0",
                    "-1",
                    "14.1, 16.1",
                ]))
                .to_owned(),
            );
            "version header"
        }
        3 => {
            headers.retain(|(n, _)| n != "MS-ASProtocolVersion");
            "no version header"
        }
        4 => {
            set(
                &mut headers,
                "X-MS-PolicyKey",
                (*rng.pick(&["-1", "99999999999", "abc", "", "0", "4294967295", "1 2"])).to_owned(),
            );
            "policy key header"
        }
        5 => {
            let auth = match rng.below(9) {
                0 => "Basic !!!".to_owned(),
                1 => format!("Basic {}", b64(b"no-colon")),
                2 => "Bearer abc".to_owned(),
                3 => "Basic".to_owned(),
                4 => format!("Basic {}", b64(format!(":{}", demo_password()).as_bytes())),
                5 => format!(
                    "Basic {}",
                    b64(format!("{USER}:{}", "x".repeat(20_000)).as_bytes())
                ),
                6 => format!("Basic {}", b64(b"\xff\xfe:\xff")),
                7 => basic(&format!("{}{USER}", "a".repeat(5000)), &demo_password()),
                _ => basic(USER, "wrong"),
            };
            set(&mut headers, "Authorization", auth);
            "bad credentials"
        }
        6 => {
            headers.retain(|(n, _)| n != "Authorization");
            "no credentials"
        }
        7 => {
            // A malformed base64 request line.
            t = format!("/Microsoft-Server-ActiveSync?{}", bad_base64(c, cmd, rng));
            "base64 request line"
        }
        8 => {
            t = format!(
                "/Microsoft-Server-ActiveSync?{}",
                rng.pick(&[
                    "Cmd=Sync&User=&DeviceId=&DeviceType=",
                    "Cmd=Sync&DeviceId=%ZZ&DeviceType=x",
                    "Cmd=Sync&DeviceId=%FF%FE&DeviceType=x",
                    "Cmd=Sync&Cmd=Ping&DeviceId=a&DeviceType=x",
                    "Cmd=&DeviceId=a&DeviceType=x",
                    "Cmd=Sync&DeviceId=a&DeviceType=x&SaveInSent=maybe",
                    "=&&&=&",
                    "Cmd=Sync&DeviceId=a%",
                ])
            );
            "plain request line"
        }
        9 => {
            t = target(c, cmd).replace(&c.device_id, &"D".repeat(4000));
            "long DeviceId"
        }
        10 => {
            set(&mut headers, "User-Agent", "U".repeat(60_000));
            "huge header"
        }
        11 => {
            for i in 0..120 {
                headers.push((format!("X-Junk-{i}"), "j".into()));
            }
            "many headers"
        }
        _ => "",
    };
    let label = if what.is_empty() {
        String::new()
    } else {
        format!(" [{what}]")
    };
    Raw {
        label,
        bytes: request(&t, &headers, &body),
        cmd: cmd.to_owned(),
        body,
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A base64 request line of `c` for `cmd`, then damaged.
fn bad_base64(c: &EasClient, cmd: &str, rng: &mut Rng) -> String {
    let command = cmd.parse::<Command>().unwrap_or(Command::Sync);
    let q = Base64Query {
        protocol_version: version(&c.version),
        command,
        locale: 0x0409,
        device_id: c.device_id.as_bytes().to_vec(),
        policy_key: None,
        device_type: c.device_type.clone(),
        user: Some(USER.to_owned()),
        params: QueryParams::default(),
    };
    let mut bytes = q.encode_bytes().unwrap();
    match rng.below(6) {
        0 => bytes.truncate(rng.below(bytes.len())),
        1 => {
            let i = rng.below(bytes.len());
            bytes[i] ^= 1 << rng.below(8);
        }
        // A length byte pointing far past the end.
        2 => bytes[4] = 0xFF,
        3 => bytes.extend_from_slice(&[0x07, 0xFF, b'x']),
        4 => return "@@@not base64@@@".to_owned(),
        _ => return format!("{}%", b64(&bytes)),
    }
    b64(&bytes)
}

// ---------------------------------------------------------------------------
// The devices and their state.

struct Device {
    client: EasClient,
    v: &'static str,
    inbox: String,
    key: String,
    /// The ServerIds the device holds.
    view: HashSet<String>,
}

async fn new_device(opush: &Opush, v: &'static str) -> Device {
    let mut client = opush.client(USER, &format!("HOSTILE{}", v.replace('.', "")), v);
    let fs = folders(&mut client).await;
    let inbox = folder_of_type(&fs, 2).unwrap();
    let res = client.post_xml("Sync", &sync_xml(&inbox, "0", 0, "")).await;
    let key = sync_response(&res, v).collections[0].sync_key.0.clone();
    let mut d = Device {
        client,
        v,
        inbox,
        key,
        view: HashSet::new(),
    };
    let added = catch_up(&mut d, &[]).await.unwrap();
    assert_eq!(added, MESSAGES, "{v}: first sync");
    d
}

/// Syncs the Inbox from the last good key to its end, applying the changes
/// to the device's view: the number of items added. Fails when an item is
/// given twice or the key was lost (unless one of `sent` reset it).
async fn catch_up(d: &mut Device, sent: &[Raw]) -> Result<usize, String> {
    let mut added = 0;
    for _ in 0..100 {
        let res = d
            .client
            .post_xml("Sync", &sync_xml(&d.inbox, &d.key, 100, ""))
            .await;
        if res.status != 200 {
            return Err(format!("Sync from {} got HTTP {}", d.key, res.status));
        }
        let r = sync_response(&res, d.v);
        let Some(col) = r.collections.first() else {
            return Err(format!("Sync from {}: no collection: {}", d.key, res.xml()));
        };
        let status = col.status.map(|s| s.code());
        if status == Some(3) && legitimately_reset(d, sent) {
            // The device itself asked to start over: so do we.
            let res = d
                .client
                .post_xml("Sync", &sync_xml(&d.inbox, "0", 0, ""))
                .await;
            d.key = sync_response(&res, d.v).collections[0].sync_key.0.clone();
            d.view.clear();
            continue;
        }
        if status != Some(1) {
            return Err(format!("Sync from {} answered {}", d.key, res.xml()));
        }
        d.key = col.sync_key.0.clone();
        for c in col.commands.iter().flatten() {
            match c {
                ServerCommand::Add { server_id, .. } => {
                    if !d.view.insert(server_id.0.clone()) {
                        return Err(format!("{} given twice: {}", server_id.0, res.xml()));
                    }
                    added += 1;
                }
                ServerCommand::Delete { server_id, .. }
                | ServerCommand::SoftDelete { server_id } => {
                    d.view.remove(&server_id.0);
                }
                ServerCommand::Change { .. } => {}
            }
        }
        if !col.more_available {
            return Ok(added);
        }
    }
    Err("the Sync never ended".to_owned())
}

/// Whether one of `sent` was a well-formed Sync (or FolderSync) that starts
/// the device's Inbox (or folder hierarchy) over.
fn legitimately_reset(d: &Device, sent: &[Raw]) -> bool {
    sent.iter().any(|r| match r.cmd.as_str() {
        "Sync" => SyncRequest::decode(&r.body, version(d.v)).is_ok_and(|s| {
            s.collections
                .iter()
                .any(|c| c.sync_key.0 == "0" && c.collection_id.0 == d.inbox)
        }),
        "FolderSync" => {
            opush_protocol::commands::folder_sync::FolderSyncRequest::decode(&r.body, version(d.v))
                .is_ok_and(|f| f.sync_key.0 == "0")
        }
        _ => false,
    })
}

fn inbox_count(imap: &mut RawImap) -> usize {
    let (lines, _) = imap.cmd("STATUS INBOX (MESSAGES)");
    lines
        .iter()
        .find_map(|l| l.split("MESSAGES ").nth(1))
        .and_then(|r| r.trim_end().trim_end_matches(')').trim().parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Checking one answer.

/// Whether an answer is acceptable; for a 4xx, the server's log lines of
/// the request must give a reason.
fn check_answer(what: &str, res: &io::Result<HttpResponse>, log: &str) -> Result<(), String> {
    let res = match res {
        Ok(r) => r,
        Err(e) => return Err(format!("{what}: no answer ({e})")),
    };
    // 503 with Retry-After, and GetAttachment's 500 for an attachment that
    // is gone (MS-ASCMD 2.2.1.8), are what the protocol asks for.
    let allowed_5xx = (res.status == 503 && res.header("Retry-After").is_some())
        || (res.status == 500 && log.contains("MS-ASCMD 2.2.1.8"));
    if res.status >= 500 && !allowed_5xx {
        return Err(format!("{what}: HTTP {}\n{log}", res.status));
    }
    if (400..500).contains(&res.status) && res.status != 404 {
        let reason = log
            .lines()
            .any(|l| l.contains("error=") || l.contains("refused:") || l.contains("reason"));
        if !reason {
            return Err(format!(
                "{what}: HTTP {} without a reason in the log:\n{log}",
                res.status
            ));
        }
    }
    if log.contains("panicked") {
        return Err(format!("{what}: panic in the log:\n{log}"));
    }
    Ok(())
}

async fn send_checked(opush: &Opush, raw: &Raw, what: &str, failures: &mut Vec<String>) {
    let mark = log_len();
    let res = raw_exchange(opush.addr, &raw.bytes, ANSWER_WITHIN).await;
    // Lines logged after the answer was written (REQUEST.TRIMMED) are part of it.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let log = log_since(mark);
    if let Err(e) = check_answer(what, &res, &log) {
        failures.push(e);
    }
}

fn report(failures: &[String]) {
    if let Some(path) = std::env::var_os("OPUSH_HOSTILE_LOG") {
        std::fs::write(path, log_since(0)).unwrap();
    }
    let panicked = panics();
    assert!(
        failures.is_empty() && panicked.is_empty(),
        "{} failures, {} panics:\n{}\n{}",
        failures.len(),
        panicked.len(),
        failures.join("\n---\n"),
        panicked.join("\n---\n")
    );
}

// ---------------------------------------------------------------------------
// The campaign.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_break_the_server_or_the_device_state() {
    capture_logs();
    let mut imap = RawImap::login(USER);
    opush_tests::fill::ensure(&mut imap, "INBOX", MESSAGES, MARKER, |i| {
        opush_tests::fill::text_message(MARKER, i)
    });
    let opush = start(Options {
        extra_toml: "[devices]\nheartbeat_min_s = 1\nheartbeat_max_s = 3\n".into(),
        server_toml: "loop_max_repeats = 0\n".into(),
        ..Options::default()
    })
    .await;
    let mut devices = Vec::new();
    for v in VERSIONS {
        devices.push(new_device(&opush, v).await);
    }
    let mut seeds = corpus_seeds();
    seeds.extend(golden_seeds());
    let mut rng = Rng(seed());
    let mut failures = Vec::new();
    let mut appended = 0;
    let mut sent_total = 0;
    for (i, seed) in seeds.iter().enumerate() {
        let d = &mut devices[i % VERSIONS.len()];
        let mut batch = vec![seed.clone()];
        if i % 8 == 0 {
            batch.extend(live_seeds(d));
        }
        let mut sent = Vec::new();
        for s in &batch {
            // The seed as it is, then its mutations.
            let bodies = std::iter::once(s.body.clone())
                .chain((0..cases()).map(|_| mutate(s, &mut rng)))
                .collect::<Vec<_>>();
            for (k, body) in bodies.into_iter().enumerate() {
                let raw = if k == 0 {
                    Raw {
                        label: String::new(),
                        bytes: request(
                            &target(&d.client, &s.cmd),
                            &device_headers(&d.client),
                            &body,
                        ),
                        cmd: s.cmd.clone(),
                        body,
                    }
                } else {
                    with_head_mutation(&d.client, &s.cmd, body, &mut rng)
                };
                let what = format!("{} at {} #{k}{}", s.label, d.v, raw.label);
                send_checked(&opush, &raw, &what, &mut failures).await;
                sent.push(raw);
                sent_total += 1;
            }
        }
        // A new message, then the device goes on from its last good key.
        if i % 4 == 0 {
            opush_tests::fill::append_all(
                &mut imap,
                "INBOX",
                std::iter::once(opush_tests::fill::text_message("hostile-new", appended)),
            );
            appended += 1;
        }
        if let Err(e) = catch_up(d, &sent).await {
            failures.push(format!("after {} at {}: {e}", seed.label, d.v));
        }
        assert!(
            failures.len() < 40,
            "too many failures:\n{}",
            failures.join("\n---\n")
        );
    }
    // Every device holds exactly what the Inbox holds.
    let count = inbox_count(&mut imap);
    for d in &mut devices {
        if let Err(e) = catch_up(d, &[]).await {
            failures.push(format!("final sync at {}: {e}", d.v));
        }
        if d.view.len() != count {
            failures.push(format!(
                "{}: the device holds {} items, the Inbox {count}",
                d.v,
                d.view.len()
            ));
        }
    }
    eprintln!("{sent_total} hostile requests, {appended} messages appended");
    // What each device's log recorded, garbage and all, replays to the same
    // decisions.
    let store_dir = opush.stop_keeping_store().await;
    let store = opush_storage::Store::open(&opush_storage::StorageConfig {
        path: store_dir.path().to_path_buf(),
        ..opush_storage::StorageConfig::default()
    })
    .await
    .unwrap();
    for d in &devices {
        match opush_replay::export(&store, USER, &d.client.device_id, None, None).await {
            Ok(bundle) => match opush_replay::run(&bundle) {
                Ok(r) if r.is_ok() => {}
                other => failures.push(format!(
                    "{}: the device log does not replay: {other:?}",
                    d.v
                )),
            },
            Err(e) => failures.push(format!("{}: export failed: {e}", d.v)),
        }
    }
    report(&failures);
}

// ---------------------------------------------------------------------------
// Transport abuse.

const FOLDER_SYNC_0: &str =
    "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>";
/// `[server] max_request_body` of the transport test.
const BODY_LIMIT: usize = 1 << 20;
/// `[server] header_timeout_s` of the transport test.
const HEADER_TIMEOUT_S: u64 = 5;

fn head_of(c: &EasClient, cmd: &str, extra: &[(&str, String)]) -> String {
    let mut head = format!("POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\n", target(c, cmd));
    for (n, v) in device_headers(c) {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(piece.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_abuse_gets_answers_and_never_holds_a_worker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    capture_logs();
    let opush = start(Options {
        server_toml: format!(
            "max_request_body = {BODY_LIMIT}\nheader_timeout_s = {HEADER_TIMEOUT_S}\nloop_max_repeats = 0\n"
        ),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(TRANSPORT_USER, "HOSTILEWIRE", "14.1");
    folders(&mut c).await;
    let fs = opush_tests::eas::wbxml_of(FOLDER_SYNC_0);
    let te = || vec![("Transfer-Encoding", "chunked".to_owned())];
    let mut failures = Vec::new();
    let mut expect = |what: &str, res: io::Result<HttpResponse>, log: String, want: &[u16]| {
        let status = res.as_ref().map(|r| r.status).ok();
        if let Err(e) = check_answer(what, &res, &log) {
            failures.push(e);
        } else if !status.is_some_and(|s| want.contains(&s)) {
            failures.push(format!("{what}: {status:?}, want one of {want:?}\n{log}"));
        }
    };
    let exchange = |bytes: Vec<u8>| async move {
        let mark = log_len();
        let res = raw_exchange(opush.addr, &bytes, ANSWER_WITHIN).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        (res, log_since(mark))
    };
    let with = |head: String, body: &[u8]| {
        let mut b = head.into_bytes();
        b.extend_from_slice(body);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "chunked body",
            with(head_of(&c, "FolderSync", &te()), &chunked(&fs, 3)),
            &[200],
        ),
        (
            "chunked body with extensions and trailers",
            with(
                head_of(&c, "FolderSync", &te()),
                format!("{:x};a=b\r\n", fs.len())
                    .into_bytes()
                    .into_iter()
                    .chain(fs.iter().copied())
                    .chain(*b"\r\n0\r\nX-T: 1\r\n\r\n")
                    .collect::<Vec<_>>()
                    .as_slice(),
            ),
            &[200],
        ),
        (
            "bad chunk size",
            with(head_of(&c, "FolderSync", &te()), b"zz\r\nabc\r\n0\r\n\r\n"),
            &[400],
        ),
        (
            "chunk data without its CRLF",
            with(head_of(&c, "FolderSync", &te()), b"3\r\nabcXY0\r\n\r\n"),
            &[400],
        ),
        (
            "chunk of 2^56 bytes, 5 sent",
            with(
                head_of(&c, "FolderSync", &te()),
                b"100000000000000\r\nabcde",
            ),
            &[400, 413],
        ),
        (
            "declared body over the limit",
            head_of(
                &c,
                "FolderSync",
                &[("Content-Length", (BODY_LIMIT + 1).to_string())],
            )
            .into_bytes(),
            &[413],
        ),
        (
            "declared body of 2^64-1 bytes",
            head_of(
                &c,
                "FolderSync",
                &[("Content-Length", u64::MAX.to_string())],
            )
            .into_bytes(),
            &[413],
        ),
        (
            "Content-Length past u64",
            head_of(
                &c,
                "FolderSync",
                &[("Content-Length", "99999999999999999999999".into())],
            )
            .into_bytes(),
            &[400],
        ),
        (
            "chunked body over the limit",
            with(
                head_of(&c, "FolderSync", &te()),
                &chunked(&vec![b'x'; BODY_LIMIT + 10], 64 * 1024),
            ),
            &[413],
        ),
        (
            "100-continue over the limit",
            head_of(
                &c,
                "FolderSync",
                &[
                    ("Content-Length", (BODY_LIMIT * 4).to_string()),
                    ("Expect", "100-continue".into()),
                ],
            )
            .into_bytes(),
            &[413],
        ),
        (
            "both Content-Length and chunked",
            with(
                head_of(
                    &c,
                    "FolderSync",
                    &[
                        ("Transfer-Encoding", "chunked".into()),
                        ("Content-Length", "3".into()),
                    ],
                ),
                &chunked(&fs, 100),
            ),
            &[200, 400],
        ),
        (
            "Content-Length list of equal values",
            with(
                head_of(
                    &c,
                    "FolderSync",
                    &[("Content-Length", format!("{0}, {0}", fs.len()))],
                ),
                &fs,
            ),
            &[200, 400],
        ),
        (
            "HTTP/1.0 chunked",
            format!(
                "POST {} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                target(&c, "FolderSync")
            )
            .into_bytes(),
            &[400],
        ),
        (
            "a NUL in a header value",
            with(
                head_of(
                    &c,
                    "FolderSync",
                    &[
                        ("X-Nul", "a\0b".into()),
                        ("Content-Length", fs.len().to_string()),
                    ],
                ),
                &fs,
            ),
            &[400],
        ),
        (
            "obsolete line folding",
            with(
                head_of(
                    &c,
                    "FolderSync",
                    &[
                        ("X-Fold", "a\r\n b".into()),
                        ("Content-Length", fs.len().to_string()),
                    ],
                ),
                &fs,
            ),
            &[200, 400],
        ),
        (
            "non-ASCII version header",
            with(
                head_of(
                    &c,
                    "FolderSync",
                    &[("Content-Length", fs.len().to_string())],
                )
                .replace(
                    "MS-ASProtocolVersion: 14.1",
                    "MS-ASProtocolVersion: \u{661}\u{664}.\u{661}",
                ),
                &fs,
            ),
            &[400],
        ),
    ];
    for (what, bytes, want) in cases {
        let (res, log) = exchange(bytes).await;
        expect(what, res, log, want);
    }

    // Clients that stop mid-body: each is answered (or closed) once the
    // header timeout passes, and meanwhile the server serves others.
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut s = tokio::net::TcpStream::connect(opush.addr).await.unwrap();
        let head = if i % 2 == 0 {
            head_of(&c, "FolderSync", &[("Content-Length", "1000".into())])
        } else {
            head_of(&c, "FolderSync", &te())
        };
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(if i % 2 == 0 {
            &b"\x03\x01\x6a\x00\x00\x07"[..]
        } else {
            &b"400\r\nabc"[..]
        })
        .await
        .unwrap();
        stalled.push(s);
    }
    let mut good = opush.client(TRANSPORT_USER, "HOSTILEWIRE2", "14.1");
    folders(&mut good).await;
    for (i, s) in stalled.iter_mut().enumerate() {
        // Nothing answered yet: the stalled bodies are still waited for.
        let mut one = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(1), s.peek(&mut one)).await;
        if let Ok(Ok(n)) = early {
            failures.push(format!(
                "stalled body {i} answered before the timeout ({n} bytes)"
            ));
        }
    }
    for (i, mut s) in stalled.into_iter().enumerate() {
        let mut out = Vec::new();
        match tokio::time::timeout(ANSWER_WITHIN, s.read_to_end(&mut out)).await {
            Err(_) => failures.push(format!("stalled body {i}: connection never closed")),
            Ok(_) => {
                let text = String::from_utf8_lossy(&out);
                if !(text.is_empty() || text.starts_with("HTTP/1.1 4")) {
                    failures.push(format!("stalled body {i}: {text}"));
                }
            }
        }
    }
    // A head that dribbles in: 408.
    let mut slow = tokio::net::TcpStream::connect(opush.addr).await.unwrap();
    slow.write_all(b"POST /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    match tokio::time::timeout(ANSWER_WITHIN, slow.read_to_end(&mut out)).await {
        Err(_) => failures.push("slow head: connection never closed".to_owned()),
        Ok(_) => {
            let text = String::from_utf8_lossy(&out);
            if !text.starts_with("HTTP/1.1 408") {
                failures.push(format!("slow head: {text}"));
            }
        }
    }
    // Still serving, and the device's folders are intact.
    folders(&mut c).await;
    opush.stop().await;
    report(&failures);
}

// ---------------------------------------------------------------------------
// MIME bodies, query parameters, drafts and Autodiscover.

const ODD_USER: &str = "load1133@load.test";
/// Where the MIME requests that do get sent go.
const SINK: &str = "load1140@load.test";

fn hostile_mime() -> Vec<(&'static str, Vec<u8>)> {
    let to = format!("To: {SINK}\r\n");
    let mut out: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("no header", b"just a body\r\n".to_vec()),
        ("no recipient", b"Subject: x\r\n\r\nbody\r\n".to_vec()),
        ("bare LF", format!("{to}Subject: lf\n\nbody\n").into_bytes()),
        (
            "NUL and 8-bit",
            [format!("{to}Subject: \0\x01").as_bytes(), b"\xff\xfe\r\n\r\n\0\0\xff"].concat(),
        ),
        (
            "broken encoded words and base64",
            format!("{to}Subject: =?utf-8?B?!!!?= =?x?Q?=ZZ?=\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!@@@\r\n")
                .into_bytes(),
        ),
        (
            "multipart without its boundary",
            format!("{to}Content-Type: multipart/mixed\r\n\r\n--\r\n--\r\n").into_bytes(),
        ),
        (
            "recipients refused",
            b"To: nobody-at-all@nowhere.invalid, \"\" <>, <@@>\r\nSubject: x\r\n\r\nb\r\n".to_vec(),
        ),
    ];
    let mut deep = format!("{to}Subject: deep\r\n");
    for i in 0..5000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    deep.push_str("Content-Type: text/plain\r\n\r\nhi\r\n");
    out.push(("5000 nested multiparts", deep.into_bytes()));
    let mut long = format!("{to}Subject: ");
    long.push_str(&"s".repeat(200_000));
    long.push_str("\r\n\r\nbody\r\n");
    out.push(("a 200 KB header line", long.into_bytes()));
    let mut many = String::from("To: ");
    for i in 0..2000 {
        many.push_str(&format!("u{i}@nowhere.invalid, "));
    }
    many.push_str("\r\nSubject: many\r\n\r\nb\r\n");
    out.push(("2000 recipients", many.into_bytes()));
    out
}

fn hostile_autodiscover() -> Vec<(&'static str, Vec<u8>)> {
    let req = |email: &str, schema: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
             <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006\">\
             <Request><EMailAddress>{email}</EMailAddress>\
             <AcceptableResponseSchema>{schema}</AcceptableResponseSchema></Request></Autodiscover>"
        )
        .into_bytes()
    };
    let ms = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006";
    let mut laughs = String::from("<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">");
    for i in 1..10 {
        laughs.push_str(&format!(
            "<!ENTITY {} \"{}\">",
            (b'a' + i) as char,
            format!("&{};", (b'a' + i - 1) as char).repeat(10)
        ));
    }
    laughs.push_str("]>");
    let mut laughs = laughs.into_bytes();
    laughs.extend(req("&j;", ms));
    let mut deep = "<a>".repeat(20_000).into_bytes();
    deep.extend("</a>".repeat(20_000).into_bytes());
    vec![
        ("empty", Vec::new()),
        ("not XML", b"{\"json\": true}".to_vec()),
        ("billion laughs", laughs),
        (
            "external entity",
            [
                &b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
                    [..],
                &req("&e;", ms),
            ]
            .concat(),
        ),
        ("20000 levels", deep),
        (
            "escaped markup in the address",
            req("a&lt;/EMailAddress&gt;@x&#1;", ms),
        ),
        ("other schema", req(ODD_USER, "urn:other")),
        ("no address", req("", ms)),
        (
            "invalid UTF-8",
            [
                &b"<Autodiscover><Request><EMailAddress>\xff\xfe"[..],
                b"</EMailAddress></Request></Autodiscover>",
            ]
            .concat(),
        ),
        ("over the limit", vec![b' '; 70_000]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_bodies_parameters_drafts_and_autodiscover() {
    capture_logs();
    let mut imap = RawImap::login(ODD_USER);
    opush_tests::fill::ensure(&mut imap, "INBOX", 3, "hostile-odd-v1", |i| {
        opush_tests::fill::text_message("hostile-odd-v1", i)
    });
    // Drafts the last run left.
    imap.cmd("SELECT Drafts");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    imap.cmd("UNSELECT");
    let opush = start(Options {
        server_toml: "loop_max_repeats = 0\n".into(),
        ..Options::default()
    })
    .await;
    let mut failures = Vec::new();
    let send = |raw: Vec<u8>| async move {
        let mark = log_len();
        let res = raw_exchange(opush.addr, &raw, ANSWER_WITHIN).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        (res, log_since(mark))
    };
    let mut old = opush.client(ODD_USER, "HOSTILEODD121", "12.1");
    let (inbox, _, commands) = synced_folder_of_type(&mut old, "12.1", 2).await;
    let item = server_id(&commands[0]).to_owned();

    // 12.1: MIME bodies and the query parameters that come with them.
    for (name, mime) in hostile_mime() {
        for (cmd, extra) in [
            ("SendMail", "&SaveInSent=F".to_owned()),
            (
                "SmartReply",
                format!("&ItemId={item}&CollectionId={inbox}&SaveInSent=F"),
            ),
            (
                "SmartForward",
                format!("&ItemId={item}&CollectionId={inbox}&SaveInSent=F"),
            ),
        ] {
            let t = format!(
                "/Microsoft-Server-ActiveSync?{}",
                old.plain_query(cmd, &extra)
            );
            let mut headers = device_headers(&old);
            headers[2].1 = "message/rfc822".into();
            let (res, log) = send(request(&t, &headers, &mime)).await;
            if let Err(e) = check_answer(&format!("{cmd} 12.1 {name}"), &res, &log) {
                failures.push(e);
            }
        }
    }
    let mime = format!("To: {SINK}\r\nSubject: odd params\r\n\r\nbody\r\n").into_bytes();
    for (cmd, extra) in [
        ("SmartReply", "&CollectionId=2".to_owned()),
        ("SmartReply", format!("&ItemId=&CollectionId={inbox}")),
        (
            "SmartReply",
            format!("&ItemId={inbox}:99999999999999&CollectionId={inbox}"),
        ),
        (
            "SmartReply",
            format!("&ItemId={inbox}:4294967295&CollectionId={inbox}"),
        ),
        (
            "SmartForward",
            format!("&ItemId=..%2F..%2F{item}&CollectionId={inbox}"),
        ),
        (
            "SmartForward",
            format!("&ItemId={item}%00&CollectionId=%00"),
        ),
        ("SmartForward", format!("&ItemId={item}&CollectionId=99999")),
        (
            "SmartForward",
            format!("&ItemId={item}&CollectionId={inbox}&LongId=x&Occurrence=zz"),
        ),
        ("SendMail", "&SaveInSent=maybe".to_owned()),
        ("GetAttachment", String::new()),
        ("GetAttachment", "&AttachmentName=".to_owned()),
        ("GetAttachment", format!("&AttachmentName={item}%3A99999")),
        ("GetAttachment", format!("&AttachmentName={item}%3A-1")),
        (
            "GetAttachment",
            format!("&AttachmentName={item}%3A4294967296"),
        ),
        ("GetAttachment", "&AttachmentName=a%3Ab%3Ac%3Ad".to_owned()),
        (
            "GetAttachment",
            "&AttachmentName=%2E%2E%2F%2E%2E%2Fetc%2Fpasswd".to_owned(),
        ),
        (
            "GetAttachment",
            format!("&AttachmentName={}", "9".repeat(3000)),
        ),
    ] {
        let t = format!(
            "/Microsoft-Server-ActiveSync?{}",
            old.plain_query(cmd, &extra)
        );
        let (res, log) = send(request(&t, &device_headers(&old), &mime)).await;
        if let Err(e) = check_answer(&format!("{cmd} 12.1 {extra}"), &res, &log) {
            failures.push(e);
        }
    }

    // 16.1: drafts with odd content.
    let mut new = opush.client(ODD_USER, "HOSTILEODD161", "16.1");
    let fs = folders(&mut new).await;
    let drafts = folder_of_type(&fs, 3).expect("a Drafts folder");
    let res = new.post_xml("Sync", &sync_xml(&drafts, "0", 0, "")).await;
    let mut key = sync_response(&res, "16.1").collections[0]
        .sync_key
        .0
        .clone();
    let big = "x".repeat(300_000);
    let many_to = (0..3000)
        .map(|i| format!("u{i}@nowhere.invalid"))
        .collect::<Vec<_>>()
        .join(", ");
    let adds = [
        format!("<email:To>{many_to}</email:To><email:Subject>many</email:Subject>"),
        format!("<email:Subject>{big}</email:Subject>"),
        "<airsyncbase:Body><airsyncbase:Type>99</airsyncbase:Type><airsyncbase:Data>x</airsyncbase:Data></airsyncbase:Body>".to_owned(),
        "<airsyncbase:Body><airsyncbase:Type>2</airsyncbase:Type><airsyncbase:Data>&lt;div&gt;&lt;div&gt;&lt;b&gt;&lt;/i&gt;&lt;!--</airsyncbase:Data></airsyncbase:Body>".to_owned(),
        "<airsyncbase:Attachments><airsyncbase:Delete><airsyncbase:FileReference>nope:1:1</airsyncbase:FileReference></airsyncbase:Delete></airsyncbase:Attachments>".to_owned(),
        "<airsyncbase:Attachments><airsyncbase:Add><airsyncbase:ClientId>a</airsyncbase:ClientId><airsyncbase:Method>1</airsyncbase:Method></airsyncbase:Add></airsyncbase:Attachments>".to_owned(),
        "<email:Importance>4294967295</email:Importance><email:Read>7</email:Read>".to_owned(),
    ];
    for (i, data) in adds.iter().enumerate() {
        let add = format!(
            "<Commands><Add><ClientId>odd-{i}</ClientId><ApplicationData>{data}</ApplicationData></Add>\
             <Change><ServerId>{drafts}:99999999</ServerId><ApplicationData>{data}</ApplicationData></Change>\
             <Delete><ServerId>nope</ServerId></Delete></Commands>"
        );
        let xml = sync_xml(&drafts, &key, 10, &add).replace(
            "xmlns:email=\"Email:\"",
            "xmlns:email=\"Email:\" xmlns:email2=\"Email2:\"",
        );
        let raw = request(
            &target(&new, "Sync"),
            &device_headers(&new),
            &opush_tests::eas::wbxml_of(&xml),
        );
        let (res, log) = send(raw).await;
        if let Err(e) = check_answer(&format!("draft {i}"), &res, &log) {
            failures.push(e);
        } else if let Ok(r) = &res {
            if let Some(k) = opush_tests::eas::find_text(&r.element(), "SyncKey") {
                key = k;
            }
        }
    }

    // Autodiscover.
    for (name, body) in hostile_autodiscover() {
        for ct in ["text/xml", "application/json"] {
            let raw = format!(
                "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
                 Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                old.authorization,
                body.len()
            );
            let (res, log) = send([raw.as_bytes(), &body].concat()).await;
            if let Err(e) = check_answer(&format!("autodiscover {name} {ct}"), &res, &log) {
                failures.push(e);
            }
        }
    }
    // Other methods and paths.
    for (method, path) in [
        ("GET", "/Microsoft-Server-ActiveSync"),
        ("PUT", "/Microsoft-Server-ActiveSync"),
        ("DELETE", "/autodiscover/autodiscover.xml"),
        ("TRACE", "/"),
        ("CONNECT", "/"),
        ("POST", "/Microsoft-Server-ActiveSync/../../etc/passwd"),
        ("POST", "//Microsoft-Server-ActiveSync"),
        ("OPTIONS", "*"),
    ] {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 0\r\n\r\n",
            old.authorization
        );
        let (res, log) = send(raw.into_bytes()).await;
        if let Err(e) = check_answer(&format!("{method} {path}"), &res, &log) {
            failures.push(e);
        }
    }
    // Still serving, and the old device goes on where it was.
    folders(&mut old).await;
    folders(&mut new).await;
    opush.stop().await;
    report(&failures);
}

// ---------------------------------------------------------------------------
// What the campaign found, minimized.

const REGRESSION_USER: &str = "load1134@load.test";

/// GetAttachment of a name that is no FileReference was HTTP 500 with
/// nothing in the log; now 400 with the reason. A well-formed reference to
/// an attachment that is not there stays 500 (MS-ASCMD 2.2.1.8), logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_attachment_of_a_malformed_name_is_400_with_a_reason() {
    capture_logs();
    let opush = start(Options::default()).await;
    let mut c = opush.client(REGRESSION_USER, "HOSTILEREG1", "12.1");
    let (inbox, _, _) = synced_folder_of_type(&mut c, "12.1", 2).await;
    for name in [
        "a%3Ab%3Ac%3Ad",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "2%3A1%3A-1",
        "2%3A1%3A4294967296",
        "",
    ] {
        let mark = log_len();
        let q = c.plain_query("GetAttachment", &format!("&AttachmentName={name}"));
        let res = c.post_query(&q, true, b"").await;
        let log = log_since(mark);
        assert_eq!(res.status, 400, "{name}: {log}");
        assert!(
            log.contains("error="),
            "{name}: no reason in the log: {log}"
        );
    }
    let mark = log_len();
    let q = c.plain_query(
        "GetAttachment",
        &format!("&AttachmentName={inbox}%3A4242%3A0"),
    );
    let res = c.post_query(&q, true, b"").await;
    let log = log_since(mark);
    assert_eq!(res.status, 500, "{log}");
    assert!(log.contains("not there"), "{log}");
    opush.stop().await;
}

/// A Sync listing one collection many times at its previous key was
/// answered once per copy with the whole remembered answer: a 20 KB request
/// gave 63 MB. Now Status 4 (a semantic error), and the device goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_listing_a_collection_twice_is_status_4() {
    capture_logs();
    let mut imap = RawImap::login(REGRESSION_USER);
    opush_tests::fill::ensure(&mut imap, "INBOX", 3, "hostile-reg-v1", |i| {
        opush_tests::fill::text_message("hostile-reg-v1", i)
    });
    let opush = start(Options {
        server_toml: "loop_max_repeats = 0\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(REGRESSION_USER, "HOSTILEREG2", "14.1");
    let (inbox, key, commands) = synced_folder_of_type(&mut c, "14.1", 2).await;
    assert_eq!(commands.len(), 3);
    let item = server_id(&commands[0]).to_owned();
    // An answer worth repeating: the item fetched 100 times.
    let fetch = format!("<Fetch><ServerId>{item}</ServerId></Fetch>").repeat(100);
    let res = c
        .post_xml(
            "Sync",
            &sync_xml(&inbox, &key, 100, &format!("<Commands>{fetch}</Commands>")),
        )
        .await;
    let fetched = res.body.len();
    let next = sync_response(&res, "14.1").collections[0]
        .sync_key
        .0
        .clone();
    // The same collection 50 times at the previous key.
    let one = format!(
        "<Collection><SyncKey>{key}</SyncKey><CollectionId>{inbox}</CollectionId><GetChanges/></Collection>"
    );
    let mark = log_len();
    let res = c
        .post_xml(
            "Sync",
            &format!(
                "<Sync xmlns=\"AirSync:\"><Collections>{}</Collections></Sync>",
                one.repeat(50)
            ),
        )
        .await;
    let log = log_since(mark);
    assert!(
        res.body.len() < fetched,
        "{} bytes answered (one answer is {fetched})",
        res.body.len()
    );
    let r = sync_response(&res, "14.1");
    assert_eq!(r.status.map(|s| s.code()), Some(4), "{}", res.xml());
    assert!(log.contains("more than once"), "{log}");
    // The device goes on from its last good key: nothing new, nothing lost.
    let (_, more) = sync_all(&mut c, "14.1", &inbox, next, 100).await;
    assert!(more.is_empty(), "{more:?}");
    opush.stop().await;
}

/// ItemOperations answered every Fetch of a request, however many: one
/// Fetch of an item repeated 2000 times answered 3.5 MB (a big message
/// repeated: gigabytes). Past `[devices] max_window_bytes` the other
/// Fetches are now DataTooLarge; the first is always served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_operations_answers_at_most_a_window_of_bytes() {
    capture_logs();
    let mut imap = RawImap::login(REGRESSION_USER);
    opush_tests::fill::ensure(&mut imap, "INBOX", 3, "hostile-reg-v1", |i| {
        opush_tests::fill::text_message("hostile-reg-v1", i)
    });
    let opush = start(Options {
        server_toml: "loop_max_repeats = 0\n".into(),
        extra_toml: "[devices]\nmax_window_bytes = 20000\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(REGRESSION_USER, "HOSTILEREG3", "14.1");
    let (inbox, _, commands) = synced_folder_of_type(&mut c, "14.1", 2).await;
    let item = server_id(&commands[0]).to_owned();
    let fetch = format!(
        "<Fetch><Store>Mailbox</Store><airsync:CollectionId>{inbox}</airsync:CollectionId>\
         <airsync:ServerId>{item}</airsync:ServerId><Options><airsyncbase:BodyPreference>\
         <airsyncbase:Type>4</airsyncbase:Type></airsyncbase:BodyPreference></Options></Fetch>"
    );
    let mark = log_len();
    let res = c
        .post_xml(
            "ItemOperations",
            &format!(
                "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" \
                 xmlns:airsyncbase=\"AirSyncBase:\">{}</ItemOperations>",
                fetch.repeat(200)
            ),
        )
        .await;
    let log = log_since(mark);
    assert_eq!(res.status, 200);
    let root = res.element();
    let statuses: Vec<String> = opush_tests::eas::find_all(&root, "Status")
        .iter()
        .filter_map(|s| s.text().map(str::to_owned))
        .collect();
    assert_eq!(statuses.len(), 201, "{statuses:?}");
    // The global Status, then the first Fetch served.
    assert_eq!(&statuses[..2], ["1", "1"]);
    assert!(statuses.iter().any(|s| s == "11"), "{statuses:?}");
    assert!(res.body.len() < 60_000, "{} bytes", res.body.len());
    assert!(log.contains("DataTooLarge"), "{log}");
    opush.stop().await;
}

/// Settings DeviceInformation values were stored whole: a device could
/// keep megabytes in its registry row (read with every request, and past
/// what one Cassandra mutation takes). Values are kept up to the 1024
/// characters MS-ASCMD allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_information_is_kept_to_1024_characters() {
    capture_logs();
    let opush = start(Options::default()).await;
    let mut c = opush.client(REGRESSION_USER, "HOSTILEREG4", "14.1");
    folders(&mut c).await;
    let big = "é".repeat(300_000);
    let res = c
        .post_xml(
            "Settings",
            &format!(
                "<Settings xmlns=\"Settings:\"><DeviceInformation><Set><Model>{big}</Model>\
                 <FriendlyName>phone</FriendlyName></Set></DeviceInformation></Settings>"
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        opush_tests::eas::find_text(&res.element(), "Status").as_deref(),
        Some("1")
    );
    folders(&mut c).await;
    let dir = opush.stop_keeping_store().await;
    let store = opush_storage::Store::open(&opush_storage::StorageConfig {
        path: dir.path().to_path_buf(),
        ..opush_storage::StorageConfig::default()
    })
    .await
    .unwrap();
    let key = opush_storage::DeviceKey::new(REGRESSION_USER, "HOSTILEREG4").unwrap();
    let record = store
        .get_device(&key)
        .await
        .unwrap()
        .expect("the device's row");
    assert_eq!(record.info["Model"].chars().count(), 1024);
    assert_eq!(record.info["FriendlyName"], "phone");
}

/// A SendMail ClientId went into the device's state as sent (the last 256
/// are kept for the dedupe, and read with every request): 256 ClientIds of
/// a megabyte each were 256 MB of state. A long one is now remembered by
/// its digest, and its retry is still caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_client_id_does_not_swell_the_device_state() {
    capture_logs();
    let opush = start(Options {
        server_toml: "loop_max_repeats = 0\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(REGRESSION_USER, "HOSTILEREG5", "14.1");
    folders(&mut c).await;
    let client_id = "c".repeat(200_000);
    let mime = b64(format!("To: {SINK}\r\nSubject: long ClientId\r\n\r\nbody\r\n").as_bytes());
    let xml = format!(
        "<SendMail xmlns=\"ComposeMail:\"><ClientId>{client_id}</ClientId><Mime>{mime}</Mime></SendMail>"
    );
    let first = c.post_xml("SendMail", &xml).await;
    assert_eq!(first.status, 200);
    assert!(first.body.is_empty(), "sent: {}", first.xml());
    let again = c.post_xml("SendMail", &xml).await;
    assert_eq!(
        opush_tests::eas::find_text(&again.element(), "Status").as_deref(),
        Some("118"),
        "the retry is recognised"
    );
    let dir = opush.stop_keeping_store().await;
    let store = opush_storage::Store::open(&opush_storage::StorageConfig {
        path: dir.path().to_path_buf(),
        ..opush_storage::StorageConfig::default()
    })
    .await
    .unwrap();
    let bundle = opush_replay::export(&store, REGRESSION_USER, "HOSTILEREG5", None, None)
        .await
        .unwrap();
    for (seq, e) in bundle.decoded().unwrap() {
        let shown = format!("{e:?}");
        assert!(
            !shown.contains(&client_id),
            "event {seq} holds the whole ClientId"
        );
    }
}

/// The Sync request a device sent last is kept (without its commands) for
/// its empty and Partial Syncs: a request of 2 MB was kept whole in the
/// device's row. Over 1 MiB nothing is kept, and an empty Sync then gets
/// Status 13 (resend the whole request) instead of the 2 MB request again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sync_request_is_not_remembered() {
    capture_logs();
    let opush = start(Options {
        server_toml: "loop_max_repeats = 0\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(REGRESSION_USER, "HOSTILEREG6", "14.1");
    let (inbox, key, _) = synced_folder_of_type(&mut c, "14.1", 2).await;
    // The Inbox, then 60000 collections that do not exist (1.3 MB).
    let mut collections = format!(
        "<Collection><SyncKey>{key}</SyncKey><CollectionId>{inbox}</CollectionId></Collection>"
    );
    for i in 0..60_000 {
        collections.push_str(&format!(
            "<Collection><SyncKey>1</SyncKey><CollectionId>nope{i}</CollectionId></Collection>"
        ));
    }
    let res = c
        .post_xml(
            "Sync",
            &format!("<Sync xmlns=\"AirSync:\"><Collections>{collections}</Collections></Sync>"),
        )
        .await;
    assert_eq!(res.status, 200);
    let empty = c.post("Sync", b"").await;
    assert_eq!(empty.status, 200);
    assert!(
        empty.body.len() < 10_000,
        "the empty Sync answered {} bytes",
        empty.body.len()
    );
    let r = sync_response(&empty, "14.1");
    assert_eq!(r.status.map(|s| s.code()), Some(13), "{}", empty.xml());
    // A request of usual size is remembered again.
    let res = c.post_xml("Sync", &sync_xml(&inbox, &key, 10, "")).await;
    assert_eq!(res.status, 200);
    let empty = c.post("Sync", b"").await;
    assert_eq!(empty.status, 200);
    opush.stop().await;
}
