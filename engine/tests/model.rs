//! Model-based test: a reference mailbox and a reference device driven by
//! random operations (server adds/changes/deletes/moves, device changes,
//! adds, deletes and moves, lost responses and retries, filter changes,
//! UIDVALIDITY changes, window sizes 1..=512, a moving clock). After every
//! step a copy of the world is synced to quiescence and the device's view
//! must equal the backend within the filter window: nothing lost, nothing
//! duplicated. `PROPTEST_CASES` raises the number of cases (default 10,000).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opush_engine::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    ServerAdd {
        age_h: u64,
        content: u64,
        archive: bool,
    },
    ServerChange {
        pick: usize,
        content: u64,
    },
    ServerDelete {
        pick: usize,
    },
    ServerMove {
        pick: usize,
    },
    DeviceAdd {
        content: u64,
    },
    DeviceChange {
        pick: usize,
        content: u64,
    },
    DeviceDelete {
        pick: usize,
    },
    DeviceMove {
        pick: usize,
    },
    Sync {
        archive: bool,
        window: u32,
        lose: bool,
    },
    ConflictPolicy {
        client_wins: bool,
    },
    Filter {
        f: u8,
    },
    Clock {
        hours: u64,
    },
    UidValidity,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..300, any::<u64>(), any::<bool>()).prop_map(|(age_h, content, archive)| Op::ServerAdd { age_h, content, archive }),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(pick, content)| Op::ServerChange { pick, content }),
        1 => any::<usize>().prop_map(|pick| Op::ServerDelete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::ServerMove { pick }),
        1 => any::<u64>().prop_map(|content| Op::DeviceAdd { content }),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(pick, content)| Op::DeviceChange { pick, content }),
        1 => any::<usize>().prop_map(|pick| Op::DeviceDelete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::DeviceMove { pick }),
        5 => (any::<bool>(), prop_oneof![1u32..=4, 1u32..=512], prop::bool::weighted(0.3))
            .prop_map(|(archive, window, lose)| Op::Sync { archive, window, lose }),
        1 => prop::sample::select(vec![0u8, 1, 3, 5]).prop_map(|f| Op::Filter { f }),
        1 => (0u64..72).prop_map(|hours| Op::Clock { hours }),
        1 => Just(Op::UidValidity),
        1 => any::<bool>().prop_map(|client_wins| Op::ConflictPolicy { client_wins }),
    ]
}

fn config() -> EngineConfig {
    // Losses are random here; quarantine is tested on its own.
    EngineConfig {
        retries_before_quarantine: 1_000_000,
        ..EngineConfig::default()
    }
}

struct World {
    backend: Backend,
    pair: Pair,
    now: u64,
}

fn pick_uid(f: &MailFolder, pick: usize) -> Option<u64> {
    let n = f.items.len();
    (n > 0).then(|| *f.items.keys().nth(pick % n).unwrap())
}

impl World {
    fn new() -> Self {
        Self::listing(false)
    }

    /// With `undated`, the server lists without dates while no FilterType
    /// window is in force (`Pair::undated`).
    fn listing(undated: bool) -> Self {
        let mut pair = Pair::new(config());
        pair.undated = undated;
        let mut w = World {
            backend: Backend::new(),
            pair,
            now: 1_000 * 24 * HOUR,
        };
        let r = w.pair.folder_sync(&w.backend);
        assert_eq!(r.status, 1);
        for col in [INBOX, ARCHIVE] {
            w.pair.sync(&mut w.backend, col, 100, w.now, false);
        }
        w
    }

    fn device_pick(&self, pick: usize) -> Option<ServerId> {
        let sids: Vec<ServerId> = self
            .pair
            .device
            .items
            .keys()
            .filter(|s| s.collection == INBOX)
            .copied()
            .collect();
        (!sids.is_empty()).then(|| sids[pick % sids.len()])
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::ServerAdd {
                age_h,
                content,
                archive,
            } => {
                let col = if *archive { ARCHIVE } else { INBOX };
                self.backend
                    .folders
                    .get_mut(&col)
                    .unwrap()
                    .add(now - age_h * HOUR, *content);
            }
            Op::ServerChange { pick, content } => {
                let f = self.backend.folders.get_mut(&INBOX).unwrap();
                if let Some(uid) = pick_uid(f, *pick) {
                    f.change(uid, *content);
                }
            }
            Op::ServerDelete { pick } => {
                let f = self.backend.folders.get_mut(&INBOX).unwrap();
                if let Some(uid) = pick_uid(f, *pick) {
                    f.items.remove(&uid);
                    f.cursor += 1;
                }
            }
            Op::ServerMove { pick } => {
                let f = self.backend.folders.get_mut(&INBOX).unwrap();
                if let Some(uid) = pick_uid(f, *pick) {
                    let (_, r, c) = f.items.remove(&uid).unwrap();
                    f.cursor += 1;
                    self.backend.folders.get_mut(&ARCHIVE).unwrap().add(r, c);
                }
            }
            Op::DeviceAdd { content } => self.pair.device.local_add(INBOX, *content),
            Op::DeviceChange { pick, content } => {
                if let Some(sid) = self.device_pick(*pick) {
                    self.pair.device.local_change(sid, *content);
                }
            }
            Op::DeviceDelete { pick } => {
                if let Some(sid) = self.device_pick(*pick) {
                    self.pair.device.local_delete(sid);
                }
            }
            Op::DeviceMove { pick } => {
                let Some(sid) = self.device_pick(*pick) else {
                    return;
                };
                // A device only moves items it has no unsent change for.
                if self.pair.device.queued.contains_key(&INBOX)
                    || self.pair.device.in_flight.contains_key(&INBOX)
                {
                    return;
                }
                let req = MoveRequest {
                    src: sid,
                    dst: ARCHIVE,
                };
                // Lifecycle step 2: observe the source before deciding.
                let obs = self.backend.folders[&INBOX].observation();
                self.pair.server.append(&[Event::BackendObserved {
                    req_id: 0,
                    collection: INBOX,
                    at: Timestamp(now),
                    observation: obs,
                }]);
                let state = &self.pair.server.state;
                let outcome = match plan_move(state, &req) {
                    Err(_) => MoveOutcome::Failed,
                    Ok(effect) => {
                        let f = self.backend.folders.get_mut(&INBOX).unwrap();
                        match f.uid_of(&effect.id).and_then(|u| f.items.remove(&u)) {
                            None => MoveOutcome::Failed,
                            Some((_, r, c)) => {
                                f.cursor += 1;
                                let a = self.backend.folders.get_mut(&ARCHIVE).unwrap();
                                let uid = a.add(r, c);
                                MoveOutcome::Moved(ObservedItem {
                                    id: a.id(uid),
                                    version: ItemVersion(1),
                                    received_at: Timestamp(r),
                                    digest: None,
                                })
                            }
                        }
                    }
                };
                let d = decide_move(&self.pair.server.state, &req, &outcome).unwrap();
                self.pair.server.append(&d.events);
                let dev = &mut self.pair.device;
                if d.response.status == 3 {
                    let (id, content) = dev.items.remove(&sid).unwrap();
                    let dst = d.response.dst.unwrap();
                    let _ = id;
                    assert!(dev
                        .items
                        .insert(dst, (BackendItemId(String::new()), content))
                        .is_none());
                }
            }
            Op::Sync {
                archive,
                window,
                lose,
            } => {
                let col = if *archive { ARCHIVE } else { INBOX };
                self.pair.sync(&mut self.backend, col, *window, now, *lose);
            }
            Op::Filter { f } => {
                self.pair
                    .device
                    .filters
                    .insert(INBOX, FilterType::from_u8(*f).unwrap());
            }
            Op::Clock { hours } => self.now += hours * HOUR,
            Op::ConflictPolicy { client_wins } => {
                self.pair.device.conflict = Some(if *client_wins {
                    Conflict::ClientWins
                } else {
                    Conflict::ServerWins
                });
            }
            Op::UidValidity => {
                let f = self.backend.folders.get_mut(&INBOX).unwrap();
                f.validity += 1;
                f.cursor += 1;
            }
        }
    }

    fn check_converges(&self) -> Result<(), TestCaseError> {
        let mut w = World {
            backend: self.backend.clone(),
            pair: self.pair.clone(),
            now: self.now,
        };
        for col in [INBOX, ARCHIVE] {
            w.pair.settle(&mut w.backend, col, w.now);
        }
        for col in [INBOX, ARCHIVE] {
            let want = w.pair.expected(&w.backend, col, w.now);
            let got = w.pair.resolved_view(col);
            prop_assert_eq!(&got, &want, "collection {} diverged", col);
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn device_view_converges_to_backend(ops in prop::collection::vec(op(), 1..16)) {
        let mut w = World::new();
        for op in &ops {
            w.step(op);
            w.check_converges()?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 4).max(50), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    /// The same, with the listings undated while no window is in force:
    /// items keep the dates observed once, get them before a window takes
    /// effect, and the device still ends up with what the window keeps.
    #[test]
    fn device_view_converges_with_undated_listings(ops in prop::collection::vec(op(), 1..16)) {
        let mut w = World::listing(true);
        for op in &ops {
            w.step(op);
            w.check_converges()?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 20).max(50), ..ProptestConfig::default() })]

    /// Folding the log from scratch, or from a snapshot taken at any point,
    /// gives the same state as the live one.
    #[test]
    fn fold_from_scratch_and_from_every_snapshot_agree(ops in prop::collection::vec(op(), 1..16)) {
        let mut w = World::new();
        for op in &ops {
            w.step(op);
        }
        let live = &w.pair.server.state;
        let log = &w.pair.server.log;
        let mut scratch = DeviceState::default();
        fold(&mut scratch, log);
        prop_assert_eq!(&scratch, live);
        let mut prefix = DeviceState::default();
        for k in 0..=log.len() {
            let bytes = encode_snapshot(&prefix).unwrap();
            let mut s = decode_snapshot(&bytes).unwrap();
            prop_assert_eq!(&s, &prefix);
            fold(&mut s, &log[k..]);
            prop_assert_eq!(&s, live);
            if k < log.len() {
                apply(&mut prefix, &log[k]);
            }
        }
    }
}
