//! Data-driven scenarios: each `engine/testdata/**/*.txt` holds input lines,
//! a `----` line, and the expected effects as text. One runner (`check`)
//! executes them all through the same server loop as the other tests.
//! `UPDATE_EXPECT=1` rewrites the expected part; a normal run only compares.
//!
//! Commands: `add COL CONTENT [age=H]`, `change COL UID CONTENT`,
//! `delete COL UID`, `sync COL [window=N] [filter=N] [lose]`,
//! `device-add COL CONTENT`, `device-change SID CONTENT`,
//! `device-delete SID`, `validity COL`, `clock +H`, `ping HB COL...`,
//! `estimate COL`, `folder-add ID TYPE [PARENT]`, `folder-rename ID NAME`,
//! `folder-move ID PARENT|-`, `folder-delete ID`, `foldersync [key=K] [lose]`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opush_engine::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn run(input: &str) -> String {
    let mut backend = Backend::new();
    let mut pair = Pair::new(EngineConfig::default());
    let mut now = 1_000 * 24 * HOUR;
    let mut out = String::new();
    let mut folders = backend.folder_list();
    pair.folder_sync(&backend);
    for line in input.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 {
            words[i]
                .parse()
                .unwrap_or_else(|_| panic!("bad number in `{line}`"))
        };
        let opt = |name: &str| -> Option<u64> {
            words.iter().find_map(|w| {
                w.strip_prefix(&format!("{name}="))
                    .map(|v| v.parse().unwrap())
            })
        };
        let col = |i: usize| CollectionId(num(i) as u32);
        let sid = |i: usize| {
            ServerId::parse(words[i]).unwrap_or_else(|| panic!("bad ServerId in `{line}`"))
        };
        match words[0] {
            "add" => {
                let age = opt("age").unwrap_or(0);
                let uid = backend
                    .folders
                    .get_mut(&col(1))
                    .unwrap()
                    .add(now - age * HOUR, num(2));
                writeln!(out, "> {line}: uid {uid}").unwrap();
            }
            "change" => backend
                .folders
                .get_mut(&col(1))
                .unwrap()
                .change(num(2), num(3)),
            "delete" => {
                let f = backend.folders.get_mut(&col(1)).unwrap();
                f.items.remove(&num(2));
                f.cursor += 1;
            }
            "validity" => {
                let f = backend.folders.get_mut(&col(1)).unwrap();
                f.validity += 1;
                f.cursor += 1;
            }
            "folder-add" => {
                let parent = words.get(3).map(|p| BackendFolderId(p.to_string()));
                let folder_type = FolderType::from_code(num(2) as u8).unwrap();
                folders.push(BackendFolder {
                    id: BackendFolderId(words[1].into()),
                    name: words[1].into(),
                    parent,
                    folder_type,
                });
            }
            "folder-rename" => {
                for f in folders.iter_mut().filter(|f| f.id.0 == words[1]) {
                    f.name = words[2].into();
                }
            }
            "folder-move" => {
                let parent = (words[2] != "-").then(|| BackendFolderId(words[2].into()));
                for f in folders.iter_mut().filter(|f| f.id.0 == words[1]) {
                    f.parent = parent.clone();
                }
            }
            "folder-delete" => folders.retain(|f| f.id.0 != words[1]),
            "foldersync" => {
                if let Some(k) = opt("key") {
                    pair.device.hierarchy_key = SyncKey(k);
                }
                let key = pair.device.hierarchy_key;
                pair.server.append(&[Event::HierarchyObserved {
                    folders: folders.clone(),
                }]);
                let d = decide_folder_sync(&pair.server.state, key);
                pair.server.append(&d.events);
                let lose = words.contains(&"lose");
                match (d.response.sync_key, lose) {
                    (Some(k), false) => pair.device.hierarchy_key = k,
                    // [MS-ASCMD] FolderSync Status 9: the device starts over with key 0.
                    (None, false) => pair.device.hierarchy_key = SyncKey::ZERO,
                    _ => {}
                }
                write!(out, "> {line}: key {key} -> status {}", d.response.status).unwrap();
                if let Some(k) = d.response.sync_key {
                    write!(out, " key {k}").unwrap();
                }
                writeln!(out, "{}", if lose { " (lost)" } else { "" }).unwrap();
                for ch in &d.response.changes {
                    let parent =
                        |p: &Option<CollectionId>| p.map_or("0".to_string(), |p| p.to_string());
                    match ch {
                        FolderChange::Add {
                            id,
                            parent: p,
                            name,
                            folder_type,
                        } => {
                            writeln!(
                                out,
                                "  Add {id} parent {} {name:?} type {}",
                                parent(p),
                                folder_type.code()
                            )
                        }
                        FolderChange::Update {
                            id,
                            parent: p,
                            name,
                            folder_type,
                        } => {
                            writeln!(
                                out,
                                "  Update {id} parent {} {name:?} type {}",
                                parent(p),
                                folder_type.code()
                            )
                        }
                        FolderChange::Delete { id } => writeln!(out, "  Delete {id}"),
                    }
                    .unwrap();
                }
            }
            "device-add" => pair.device.local_add(col(1), num(2)),
            "device-change" => pair.device.local_change(sid(1), num(2)),
            "device-delete" => pair.device.local_delete(sid(1)),
            "clock" => now += words[1].trim_start_matches('+').parse::<u64>().unwrap() * HOUR,
            "sync" => {
                let c = col(1);
                if let Some(f) = opt("filter") {
                    pair.device
                        .filters
                        .insert(c, FilterType::from_u8(f as u8).unwrap());
                }
                if let Some(k) = opt("key") {
                    pair.device.keys.insert(c, SyncKey(k));
                }
                let key = pair.device.keys.get(&c).copied().unwrap_or(SyncKey::ZERO);
                let lose = words.contains(&"lose");
                let round = pair.sync(
                    &mut backend,
                    c,
                    opt("window").unwrap_or(100) as u32,
                    now,
                    lose,
                );
                let r = &round.response;
                write!(out, "> {line}: key {key} -> status {}", r.status.code()).unwrap();
                if let Some(k) = r.sync_key {
                    write!(out, " key {k}").unwrap();
                }
                if r.more_available {
                    write!(out, " MoreAvailable").unwrap();
                }
                writeln!(out, "{}", if lose { " (lost)" } else { "" }).unwrap();
                for ch in &r.changes {
                    let s = ServerId {
                        collection: c,
                        n: ch.n(),
                    };
                    match ch {
                        ServerChange::Add { id, version, .. } => {
                            writeln!(out, "  Add {s} {} v{}", id.0, version.0)
                        }
                        ServerChange::Change { id, version, .. } => {
                            writeln!(out, "  Change {s} {} v{}", id.0, version.0)
                        }
                        ServerChange::Delete { .. } => writeln!(out, "  Delete {s}"),
                        ServerChange::SoftDelete { .. } => writeln!(out, "  SoftDelete {s}"),
                    }
                    .unwrap();
                }
                for rep in &r.replies {
                    let target = match (&rep.client_id, rep.server_id) {
                        (Some(c), Some(s)) => format!("{} -> {s}", c.0),
                        (Some(c), None) => c.0.clone(),
                        (None, Some(s)) => s.to_string(),
                        (None, None) => "?".into(),
                    };
                    writeln!(out, "  Reply {:?} {target} status {}", rep.kind, rep.status).unwrap();
                }
                for q in &r.quarantined {
                    writeln!(out, "  Quarantined {q}").unwrap();
                }
            }
            "ping" => {
                pair.server.append(&[Event::HierarchyObserved {
                    folders: folders.clone(),
                }]);
                observe(&mut pair, &backend, (2..words.len()).map(col), now);
                let req = PingRequest {
                    heartbeat: Some(num(1) as u32),
                    folders: Some((2..words.len()).map(col).collect()),
                };
                let d = decide_ping(
                    &pair.server.state,
                    &req,
                    Timestamp(now),
                    &pair.server.config,
                );
                pair.server.append(&d.events);
                let detail = match &d.response {
                    PingResponse::Changes(f) => format!(" folders {f:?}"),
                    PingResponse::HeartbeatOutOfBounds(b) => format!(" HeartbeatInterval {b}"),
                    PingResponse::TooManyFolders(m) => format!(" MaxFolders {m}"),
                    _ => String::new(),
                };
                writeln!(out, "> {line}: status {}{detail}", d.response.status()).unwrap();
            }
            "estimate" => {
                let c = col(1);
                observe(&mut pair, &backend, [c], now);
                let key = pair.device.keys.get(&c).copied().unwrap_or(SyncKey::ZERO);
                let req = EstimateRequest {
                    collection: c,
                    sync_key: key,
                    filter: None,
                };
                let r = decide_get_item_estimate(&pair.server.state, &req, Timestamp(now));
                writeln!(
                    out,
                    "> {line}: status {} estimate {:?}",
                    r.status, r.estimate
                )
                .unwrap();
            }
            other => panic!("unknown scenario command `{other}`"),
        }
    }
    let mut view = String::new();
    for c in [INBOX, ARCHIVE, CONTACTS] {
        let items: Vec<String> = pair
            .device
            .items
            .iter()
            .filter(|(s, _)| s.collection == c)
            .map(|(s, (_, content))| format!("{s}={content}"))
            .collect();
        if !items.is_empty() {
            writeln!(view, "device {c}: {}", items.join(" ")).unwrap();
        }
    }
    out + &view
}

/// Lifecycle step 2: fold what the backend shows before deciding.
fn observe(
    pair: &mut Pair,
    backend: &Backend,
    cols: impl IntoIterator<Item = CollectionId>,
    now: u64,
) {
    for c in cols {
        if let Some(f) = backend.folders.get(&c) {
            pair.server.append(&[Event::BackendObserved {
                req_id: 0,
                collection: c,
                at: Timestamp(now),
                observation: f.observation(),
            }]);
        }
    }
}

fn files(dir: &Path, acc: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, acc);
        } else if p.extension().is_some_and(|x| x == "txt") {
            acc.push(p);
        }
    }
}

#[test]
fn check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    paths.sort();
    assert!(
        paths.len() >= 5,
        "scenario files missing under {}",
        root.display()
    );
    let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for p in &paths {
        let text = std::fs::read_to_string(p).unwrap();
        let (input, expected) = text.split_once("\n----\n").unwrap_or((&text, ""));
        let got = run(input);
        if update {
            std::fs::write(p, format!("{input}\n----\n{got}")).unwrap();
        } else if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                p.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
