//! Real devices (issue #5): opush driven with the request sequences of
//! captures in `../shared/corpus/real-devices/` (an iPad on iOS 6, a Samsung
//! Galaxy S2 on Android, a Windows Phone 8 with base64 request lines), each
//! HTTP status and EAS Status compared with what Exchange answered.
//!
//! The requests are the captured WBXML bodies and request lines with what
//! a device would have learnt from opush instead of Exchange: SyncKeys,
//! folder CollectionIds (paired by folder Type, or by name for user
//! folders), item ServerIds (paired in order of first appearance), policy
//! keys (header, body and inside the base64 query), and the user. A step
//! that cannot be carried over is skipped with its reason, and the test
//! fails if a capture replays too few steps: the exchanges of a device
//! caught mid-session (its keys come from before the capture), Syncs of
//! collections opush does not serve (contacts, calendar), and Pings
//! (in `ping_steps_of_the_captures`: the provisioned Samsung sends Ping
//! without a policy key, which Exchange and opush accept).
//!
//! Reserved Dovecot user: load0040 (its INBOX is filled once with 300 messages).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use opush_protocol::query::Base64Query;
use opush_protocol::wbxml::{self, Element, Node};
use opush_tests::eas::{find_all, find_text, EasClient, HttpResponse};
use opush_tests::{corpus_dir, fill, RawImap};
use serde_json::Value;
use support::*;

const USER: &str = "load0040@load.test";
const MARKER: &str = "e2e-devices-v1";

/// What a replay did.
#[derive(Debug, Default)]
struct Outcome {
    compared: usize,
    skipped: Vec<String>,
    mismatches: Vec<String>,
}

/// The replay state: what the device learnt from Exchange, paired with
/// what it learnt from opush.
#[derive(Default)]
struct Pairing {
    /// Exchange FolderSync key → opush's.
    folder_keys: HashMap<String, String>,
    /// Exchange CollectionId → opush's.
    collections: HashMap<String, String>,
    /// (opush collection, Exchange SyncKey) → opush SyncKey.
    sync_keys: HashMap<(String, String), String>,
    /// Exchange ServerId → opush's.
    items: HashMap<String, String>,
    /// Per opush collection: Exchange item ids and opush item ids, in order.
    ex_items: HashMap<String, Vec<String>>,
    our_items: HashMap<String, Vec<String>>,
    /// The policy key opush gave last.
    policy_key: Option<String>,
    /// Exchange policy keys seen (to recognise them in requests).
    ex_policy_keys: HashSet<String>,
    /// opush's FolderSync key from a bootstrap, for the device's first
    /// FolderSync key (which Exchange gave before the capture).
    boot_folder_key: Option<String>,
    /// A Ping was answered.
    pinged: bool,
}

/// What a device caught mid-session had done before the capture:
/// Provision (both steps) and a first FolderSync.
async fn bootstrap(c: &mut EasClient, p: &mut Pairing) {
    let saved = c.version.clone();
    c.policy_key = Some("0".to_owned());
    let ask = "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
               </Policy></Policies></Provision>";
    let res = c.post_xml("Provision", ask).await;
    assert_eq!(res.status, 200, "bootstrap Provision");
    let temp = find_text(&res.element(), "PolicyKey").expect("temporary key");
    c.policy_key = Some(temp.clone());
    let ack = format!(
        "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
         <PolicyKey>{temp}</PolicyKey><Status>1</Status></Policy></Policies></Provision>"
    );
    let res = c.post_xml("Provision", &ack).await;
    let key = find_text(&res.element(), "PolicyKey").expect("final key");
    c.policy_key = Some(key.clone());
    p.policy_key = Some(key);
    let res = c
        .post_xml(
            "FolderSync",
            "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>",
        )
        .await;
    assert_eq!(res.status, 200, "bootstrap FolderSync");
    p.boot_folder_key = find_text(&res.element(), "SyncKey");
    c.version = saved;
}

fn load_session(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("session.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ensure_inbox() {
    static FILL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FILL.lock().unwrap_or_else(|e| e.into_inner());
    let mut imap = RawImap::login(USER);
    fill::ensure(&mut imap, "INBOX", 300, MARKER, |i| {
        fill::text_message(MARKER, i)
    });
}

/// Exchange's folders: ServerId → (Type, DisplayName).
fn folders_of(el: &Element<'_>) -> Vec<(String, u8, String)> {
    find_all(el, "Add")
        .into_iter()
        .filter(|a| a.tag.page_name() == Some("FolderHierarchy"))
        .filter_map(|a| {
            Some((
                find_text(a, "ServerId")?,
                find_text(a, "Type")?.parse().ok()?,
                find_text(a, "DisplayName").unwrap_or_default(),
            ))
        })
        .collect()
}

/// Every `Status` value of the answer, in document order, per code page.
fn statuses(el: &Element<'_>) -> Vec<String> {
    find_all(el, "Status")
        .iter()
        .filter(|s| {
            // Email:Flag/Status is an item property, not a status.
            s.tag.page_name() != Some("Email") && s.tag.page_name() != Some("Tasks")
        })
        .map(|s| s.text().unwrap_or_default().to_owned())
        .collect()
}

/// Rewrites the text of every element named `name` with `f` (None: keep).
fn rewrite(el: &mut Element<'_>, name: &str, f: &mut dyn FnMut(&str) -> Option<String>) {
    if el.tag.name() == Some(name) {
        if let Some(t) = el.text_concat().map(|t| t.into_owned()) {
            if let Some(new) = f(&t) {
                el.children = vec![Node::Text(Cow::Owned(new))];
            }
        }
    }
    for c in el.children.iter_mut() {
        if let Node::Element(e) = c {
            rewrite(e, name, f);
        }
    }
}

/// The Sync collections of a request or answer: (CollectionId, SyncKey, element).
fn sync_collections<'e, 'a>(el: &'e Element<'a>) -> Vec<&'e Element<'a>> {
    find_all(el, "Collection")
        .into_iter()
        .filter(|c| c.tag.page_name() == Some("AirSync"))
        .collect()
}

/// Item ServerIds added in each collection of a Sync answer.
fn added_items(el: &Element<'_>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for col in sync_collections(el) {
        let Some(id) = find_text(col, "CollectionId") else {
            continue;
        };
        for add in col.elements().filter(|e| e.tag.name() == Some("Commands")) {
            for a in add.elements().filter(|e| e.tag.name() == Some("Add")) {
                if let Some(s) = find_text(a, "ServerId") {
                    out.push((id.clone(), s));
                }
            }
        }
    }
    out
}

/// How a replay goes beyond the capture's own steps.
#[derive(Debug, Clone, Copy, Default)]
struct Extras {
    /// Replay Ping steps (the device's Pings, plus `pings` from other captures).
    ping: bool,
    /// After the steps, repeat the last Sync with an empty body.
    empty_sync: bool,
}

/// Steps of another capture of the same device, appended to a replay:
/// (capture, sequence numbers).
type Appended<'a> = &'a [(&'a str, &'a [u64])];

async fn replay(capture: &str, main_devices: &[&str], extras: Extras) -> Outcome {
    replay_with(capture, main_devices, extras, &[]).await
}

async fn replay_with(
    capture: &str,
    main_devices: &[&str],
    extras: Extras,
    appended: Appended<'_>,
) -> Outcome {
    ensure_inbox();
    let with_ping = extras.ping;
    let mut steps: Vec<(std::path::PathBuf, Value)> = Vec::new();
    let dir = corpus_dir().join(capture);
    for ex in load_session(&dir)["exchanges"].as_array().unwrap() {
        steps.push((dir.clone(), ex.clone()));
    }
    for (other, seqs) in appended {
        let d = corpus_dir().join(other);
        for ex in load_session(&d)["exchanges"].as_array().unwrap() {
            if seqs.contains(&ex["seq"].as_u64().unwrap_or(0)) {
                steps.push((d.clone(), ex.clone()));
            }
        }
    }
    let opush = start(Options {
        require_provisioning: true,
        ..Options::default()
    })
    .await;
    let mut out = Outcome::default();
    let mut clients: HashMap<String, EasClient> = HashMap::new();
    let mut pairs: HashMap<String, Pairing> = HashMap::new();
    for (dir, ex) in &steps {
        let seq = ex["seq"].as_u64().unwrap();
        let cmd = ex["cmd"].as_str().unwrap_or("");
        let method = ex["method"].as_str().unwrap_or("");
        let want_http = ex["http_status"].as_u64().map(|s| s as u16);
        let device = ex["device_id"].as_str().unwrap_or("").to_owned();
        let version = ex["protocol_version"].as_str().unwrap_or("14.1").to_owned();
        let label = format!(
            "{} #{seq} {cmd}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or(capture)
        );
        let Some(want_http) = want_http else {
            out.skipped
                .push(format!("{label}: Exchange never answered"));
            continue;
        };
        if method == "OPTIONS" {
            let mut c = opush.client(USER, "OPTIONS", "14.1");
            let res = c.options().await;
            out.compared += 1;
            if res.status != want_http {
                out.mismatches.push(format!(
                    "{label}: HTTP {} (Exchange {want_http})",
                    res.status
                ));
            }
            continue;
        }
        if !main_devices.contains(&device.as_str()) {
            out.skipped.push(format!(
                "{label}: device {device} is mid-session in the capture"
            ));
            continue;
        }
        if cmd == "Ping" && !with_ping {
            out.skipped.push(format!(
                "{label}: Ping steps run in ping_steps_of_the_captures"
            ));
            continue;
        }
        if cmd == "Ping" {
            // Exchange saw new mail during this Ping: so will opush.
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let mut imap = RawImap::login(USER);
                fill::append_all(
                    &mut imap,
                    "INBOX",
                    std::iter::once(fill::text_message("e2e-devices-ping", 0)),
                );
            });
        }
        let c = clients.entry(device.clone()).or_insert_with(|| {
            let mut c = opush.client(USER, &device, &version);
            c.device_type = ex["device_type"].as_str().unwrap_or("Unknown").to_owned();
            c.user_agent = ex["user_agent"].as_str().unwrap_or("").to_owned();
            c
        });
        c.version = version.clone();
        let fresh = !pairs.contains_key(&device);
        let p = pairs.entry(device.clone()).or_default();
        if fresh && ex["policy_key"].as_str().is_some_and(|k| k != "0") {
            // Provisioned and folder-synced before the capture: do it now.
            bootstrap(c, p).await;
        }

        // The device's policy key: its own "0"/none, or opush's.
        let ex_key = ex["policy_key"].as_str().map(str::to_owned);
        c.policy_key = match ex_key.as_deref() {
            None => None,
            Some("0") => Some("0".to_owned()),
            Some(_) => p.policy_key.clone().or(Some("0".to_owned())),
        };

        // The body, carried over.
        let req_file = ex["request"]["file"].as_str();
        let mut body = match req_file {
            Some(f) => std::fs::read(dir.join(f)).unwrap(),
            None => Vec::new(),
        };
        if !body.is_empty() {
            let mut el = wbxml::decode(&body).unwrap().into_owned();
            match carry_over(&mut el, cmd, p) {
                Ok(()) => body = wbxml::encode_to_vec(&el),
                Err(why) => {
                    out.skipped.push(format!("{label}: {why}"));
                    continue;
                }
            }
        }

        // The request line: plain with our user, or base64 with our key.
        let query = ex["query"].as_str().unwrap_or("");
        let res = if ex["query_form"].as_str() == Some("base64") {
            let mut q = Base64Query::decode_str(query).unwrap();
            q.policy_key = match q.policy_key {
                None => None,
                Some(0) => Some(0),
                Some(_) => Some(
                    p.policy_key
                        .as_deref()
                        .and_then(|k| k.parse().ok())
                        .unwrap_or(0),
                ),
            };
            q.user = q.user.map(|_| USER.to_owned());
            let q = q.encode_str().unwrap();
            c.post_query(&q, false, &body).await
        } else {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("User", _)) => format!("User={}", USER.replace('@', "%40")),
                    _ => kv.to_owned(),
                })
                .collect();
            c.post_query(&q.join("&"), true, &body).await
        };

        // Compare.
        out.compared += 1;
        // 14.0+: opush may say "provision" in the answer's Status 142
        // where Exchange 2010 answered 449; both make the device provision.
        // Before 14.0 the device knows only 449.
        let status_142 = version.parse::<f32>().is_ok_and(|v| v >= 14.0);
        let http_ok = res.status == want_http
            || (status_142 && want_http == 449 && res.status == 200 && status_is(&res, "142"));
        if !http_ok {
            out.mismatches.push(format!(
                "{label}: HTTP {} (Exchange {want_http}) {}",
                res.status,
                String::from_utf8_lossy(&res.body[..res.body.len().min(120)])
            ));
            continue;
        }
        let ex_res = ex["response"]["file"]
            .as_str()
            .filter(|f| f.ends_with(".wbxml"))
            .map(|f| std::fs::read(dir.join(f)).unwrap());
        match (ex_res, res.status) {
            (Some(ex_body), 200) => {
                let ex_el = wbxml::decode(&ex_body).unwrap().into_owned();
                let ours = res.element();
                let (a, b) = (statuses(&ex_el), statuses(&ours));
                // Exchange's Status values must be ours, in order; opush may
                // answer more (per-item statuses of items it added).
                if a.first() != b.first() || !a.iter().all(|s| b.contains(s)) {
                    out.mismatches.push(format!(
                        "{label}: Status {b:?} (Exchange {a:?})\n{}",
                        res.xml()
                    ));
                }
                learn(cmd, &ex_el, &ours, p);
            }
            (None, 200) if !res.body.is_empty() => {
                // Exchange answered an empty 200 ("nothing changed"): opush
                // may say so with an explicit answer, every Status 1.
                let ours = res.element();
                if statuses(&ours).iter().any(|s| s != "1") {
                    out.mismatches.push(format!(
                        "{label}: Status {:?} (Exchange: empty 200)",
                        statuses(&ours)
                    ));
                }
                learn(cmd, &Element::new(ours.tag), &ours, p);
            }
            _ => {}
        }
    }

    // A device repeats its last Sync with an empty body ([MS-ASCMD]
    // 2.2.1.21: from 12.1, the cached request): answered as such.
    let synced = pairs
        .iter()
        .find(|(_, p)| !p.sync_keys.is_empty())
        .map(|(d, _)| d.clone())
        .filter(|_| extras.empty_sync);
    if let Some(c) = synced.and_then(|d| clients.get_mut(&d)) {
        {
            let res = c.post("Sync", b"").await;
            out.compared += 1;
            if res.status != 200 || (!res.body.is_empty() && status_is(&res, "4")) {
                out.mismatches.push(format!(
                    "{capture}: empty-bodied Sync answered HTTP {} {}",
                    res.status,
                    if res.body.is_empty() {
                        String::new()
                    } else {
                        res.xml()
                    }
                ));
            }
        }
    }
    // An empty-bodied Ping repeats the last Ping ([MS-ASCMD] 2.2.1.13).
    let pinged = pairs.iter().find(|(_, p)| p.pinged).map(|(d, _)| d.clone());
    if let Some(c) = pinged.and_then(|d| clients.get_mut(&d)) {
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(2));
            let mut imap = RawImap::login(USER);
            fill::append_all(
                &mut imap,
                "INBOX",
                std::iter::once(fill::text_message("e2e-devices-ping", 1)),
            );
        });
        let res = c.post("Ping", b"").await;
        out.compared += 1;
        if res.status != 200 || !status_is(&res, "2") {
            out.mismatches.push(format!(
                "{capture}: empty-bodied Ping answered HTTP {} {}",
                res.status,
                if res.body.is_empty() {
                    String::new()
                } else {
                    res.xml()
                }
            ));
        }
    }
    opush.stop().await;
    out
}

fn status_is(res: &HttpResponse, s: &str) -> bool {
    wbxml::decode(&res.body)
        .ok()
        .and_then(|el| find_text(&el, "Status"))
        .as_deref()
        == Some(s)
}

/// Puts what the device learnt from opush into a captured request.
fn carry_over(el: &mut Element<'static>, cmd: &str, p: &mut Pairing) -> Result<(), String> {
    match cmd {
        "Provision" => {
            let ours = p.policy_key.clone();
            rewrite(el, "PolicyKey", &mut |_| ours.clone());
        }
        "FolderSync" => {
            let mut missing = None;
            rewrite(el, "SyncKey", &mut |k| {
                if k == "0" {
                    return None;
                }
                match p.folder_keys.get(k) {
                    Some(o) => Some(o.clone()),
                    None if p.boot_folder_key.is_some() => {
                        let ours = p.boot_folder_key.take();
                        if let Some(o) = &ours {
                            p.folder_keys.insert(k.to_owned(), o.clone());
                        }
                        ours
                    }
                    None => {
                        missing = Some(k.to_owned());
                        None
                    }
                }
            });
            if let Some(k) = missing {
                return Err(format!("FolderSync key {k} is from before the capture"));
            }
        }
        "Ping" => {
            let mut missing = None;
            rewrite(el, "Id", &mut |id| match p.collections.get(id) {
                Some(o) => Some(o.clone()),
                None => {
                    missing = Some(format!("Ping folder {id} has no opush counterpart"));
                    None
                }
            });
            if let Some(m) = missing {
                return Err(m);
            }
        }
        "Sync" | "GetItemEstimate" | "ItemOperations" | "MoveItems" => {
            // Collections first (SyncKeys are per collection).
            let mut missing = None;
            rewrite(el, "CollectionId", &mut |id| match p.collections.get(id) {
                Some(o) => Some(o.clone()),
                None => {
                    missing = Some(format!(
                        "collection {id} has no opush counterpart (calendar, contacts and tasks are not served yet)"
                    ));
                    None
                }
            });
            if let Some(m) = missing {
                return Err(m);
            }
            for col in el_collections_mut(el) {
                let id = find_text(col, "CollectionId").unwrap_or_default();
                let mut missing = None;
                rewrite(col, "SyncKey", &mut |k| {
                    if k == "0" {
                        return None;
                    }
                    match p.sync_keys.get(&(id.clone(), k.to_owned())) {
                        Some(o) => Some(o.clone()),
                        None => {
                            missing =
                                Some(format!("SyncKey {k} of {id} is from before the capture"));
                            None
                        }
                    }
                });
                if let Some(m) = missing {
                    return Err(m);
                }
            }
            let mut missing = None;
            for name in ["ServerId", "SrcMsgId"] {
                rewrite(el, name, &mut |s| match p.items.get(s) {
                    Some(o) => Some(o.clone()),
                    None => {
                        missing = Some(format!("item {s} has no opush counterpart"));
                        None
                    }
                });
            }
            if let Some(m) = missing {
                return Err(m);
            }
        }
        _ => {}
    }
    Ok(())
}

fn el_collections_mut<'e>(el: &'e mut Element<'static>) -> Vec<&'e mut Element<'static>> {
    let mut out = Vec::new();
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        if e.tag.name() == Some("Collection") && e.tag.page_name() == Some("AirSync") {
            out.push(e);
            continue;
        }
        for c in e.children.iter_mut() {
            if let Node::Element(x) = c {
                stack.push(x);
            }
        }
    }
    out
}

/// Pairs what Exchange and opush answered to the same request.
fn learn(cmd: &str, ex: &Element<'_>, ours: &Element<'_>, p: &mut Pairing) {
    match cmd {
        "Ping" => p.pinged = true,
        "Provision" => {
            if let Some(k) = find_text(ex, "PolicyKey") {
                p.ex_policy_keys.insert(k);
            }
            if let Some(k) = find_text(ours, "PolicyKey") {
                p.policy_key = Some(k);
            }
        }
        "FolderSync" => {
            if let (Some(a), Some(b)) = (find_text(ex, "SyncKey"), find_text(ours, "SyncKey")) {
                p.folder_keys.insert(a, b);
            }
            let our_folders = folders_of(ours);
            for (ex_id, ty, name) in folders_of(ex) {
                let ours = our_folders.iter().find(|(_, t, n)| {
                    if (2..=6).contains(&ty) {
                        *t == ty
                    } else {
                        *t == ty && n == &name
                    }
                });
                if let Some((our_id, _, _)) = ours {
                    p.collections.insert(ex_id, our_id.clone());
                }
            }
        }
        "Sync" => {
            let ex_cols = sync_collections(ex);
            for col in sync_collections(ours) {
                let (Some(id), Some(key)) =
                    (find_text(col, "CollectionId"), find_text(col, "SyncKey"))
                else {
                    continue;
                };
                let ex_id = p
                    .collections
                    .iter()
                    .find(|(_, o)| **o == id)
                    .map(|(e, _)| e.clone());
                let ex_key = ex_id.as_ref().and_then(|ex_id| {
                    ex_cols
                        .iter()
                        .find(|c| find_text(c, "CollectionId").as_ref() == Some(ex_id))
                        .and_then(|c| find_text(c, "SyncKey"))
                });
                match ex_key {
                    Some(k) => {
                        p.sync_keys.insert((id.clone(), k), key.clone());
                    }
                    None => {
                        // Exchange's empty answer: the device keeps its key,
                        // which now stands for opush's newest.
                        for (_, v) in p.sync_keys.iter_mut().filter(|((c, _), _)| *c == id) {
                            *v = key.clone();
                        }
                    }
                }
            }
            for (col, s) in added_items(ex) {
                let our_col = p.collections.get(&col).cloned().unwrap_or(col);
                p.ex_items.entry(our_col).or_default().push(s);
            }
            for (col, s) in added_items(ours) {
                p.our_items.entry(col).or_default().push(s);
            }
            for (col, exs) in &p.ex_items {
                if let Some(ours) = p.our_items.get(col) {
                    for (a, b) in exs.iter().zip(ours) {
                        p.items.insert(a.clone(), b.clone());
                    }
                }
            }
        }
        _ => {}
    }
}

fn check(capture: &str, out: &Outcome, min_compared: usize) {
    eprintln!(
        "{capture}: {} steps compared, {} skipped:\n  {}",
        out.compared,
        out.skipped.len(),
        out.skipped.join("\n  ")
    );
    assert!(
        out.mismatches.is_empty(),
        "{capture}: {} differences from Exchange:\n{}",
        out.mismatches.len(),
        out.mismatches.join("\n")
    );
    assert!(
        out.compared >= min_compared,
        "{capture}: only {} steps compared",
        out.compared
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ios6_ipad_receives_200_emails() {
    let capture = "ios6-exchange-receive200Emails";
    let out = replay(capture, &["ApplDLXH7601DVD3"], Extras::default()).await;
    check(capture, &out, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samsung_gs2_receives_300_emails_in_manual_mode() {
    let capture = "gs2-exchange-receive300EmailsInManualMode2";
    let out = replay(
        capture,
        &["validate", "SAMSUNG1358537041557975"],
        Extras::default(),
    )
    .await;
    check(capture, &out, 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_phone_8_base64_request_lines() {
    let capture = "wp8-exchange-contact-create-modify-delete";
    let out = replay(
        capture,
        &["a4b9f99bc46733b6e42eb39908f9dd48"],
        Extras::default(),
    )
    .await;
    check(capture, &out, 1);
}

/// The same Samsung (its device id is in both captures) after its gs2
/// session: the Ping it sent in the iOS capture (new mail arrives: Status 2
/// as Exchange answered), then the same Ping with an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_steps_of_the_captures() {
    let capture = "gs2-exchange-receive300EmailsInManualMode2";
    let out = replay_with(
        capture,
        &["validate", "SAMSUNG1358537041557975"],
        Extras {
            ping: true,
            ..Extras::default()
        },
        &[("ios6-exchange-receive200Emails", &[238])],
    )
    .await;
    // The INBOX goes back to its 300 messages for the other replays.
    let mut imap = RawImap::login(USER);
    let uids = imap.search_subject("INBOX", "e2e-devices-ping");
    for u in uids {
        imap.cmd(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
        imap.cmd(&format!("UID EXPUNGE {u}"));
    }
    check(capture, &out, 20);
}

/// A device repeating its last Sync with an empty body (12.1+).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodied_sync_repeats_the_last_request() {
    let capture = "gs2-exchange-receive300EmailsInManualMode2";
    let out = replay(
        capture,
        &["validate", "SAMSUNG1358537041557975"],
        Extras {
            empty_sync: true,
            ..Extras::default()
        },
    )
    .await;
    check(capture, &out, 20);
}
