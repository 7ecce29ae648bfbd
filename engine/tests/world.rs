//! Simulated world for multi-device tests: N devices of one user, one
//! backend, a virtual clock, lost and duplicated responses, and two devices
//! racing on the same item. Every device must converge to the backend.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opush_engine::*;
use proptest::prelude::*;

const DEVICES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Sync {
        dev: usize,
        window: u32,
        lose: bool,
        duplicate: bool,
    },
    ServerAdd {
        content: u64,
    },
    ServerChange {
        pick: usize,
        content: u64,
    },
    DeviceChange {
        dev: usize,
        pick: usize,
        content: u64,
    },
    DeviceDelete {
        dev: usize,
        pick: usize,
    },
    DeviceAdd {
        dev: usize,
        content: u64,
    },
    Race {
        a: usize,
        b: usize,
        pick: usize,
        content: u64,
    },
    Clock {
        hours: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..DEVICES;
    prop_oneof![
        4 => (dev.clone(), 1u32..=8, prop::bool::weighted(0.25), prop::bool::weighted(0.1))
            .prop_map(|(dev, window, lose, duplicate)| Op::Sync { dev, window, lose, duplicate }),
        2 => any::<u64>().prop_map(|content| Op::ServerAdd { content }),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(pick, content)| Op::ServerChange { pick, content }),
        2 => (dev.clone(), any::<usize>(), any::<u64>()).prop_map(|(dev, pick, content)| Op::DeviceChange { dev, pick, content }),
        1 => (dev.clone(), any::<usize>()).prop_map(|(dev, pick)| Op::DeviceDelete { dev, pick }),
        1 => (dev.clone(), any::<u64>()).prop_map(|(dev, content)| Op::DeviceAdd { dev, content }),
        1 => (dev.clone(), dev, any::<usize>(), any::<u64>()).prop_map(|(a, b, pick, content)| Op::Race { a, b, pick, content }),
        1 => (0u64..48).prop_map(|hours| Op::Clock { hours }),
    ]
}

struct Sim {
    backend: Backend,
    devices: Vec<Pair>,
    now: u64,
}

impl Sim {
    fn new() -> Self {
        let backend = Backend::new();
        let mut devices = Vec::new();
        for _ in 0..DEVICES {
            let mut p = Pair::new(EngineConfig {
                retries_before_quarantine: 1_000_000,
                ..EngineConfig::default()
            });
            p.folder_sync(&backend);
            devices.push(p);
        }
        let mut s = Sim {
            backend,
            devices,
            now: 1_000 * 24 * HOUR,
        };
        for d in 0..DEVICES {
            s.devices[d].sync(&mut s.backend, INBOX, 100, s.now, false);
        }
        s
    }

    fn pick(&self, dev: usize, pick: usize) -> Option<ServerId> {
        let v: Vec<ServerId> = self.devices[dev].device.items.keys().copied().collect();
        (!v.is_empty()).then(|| v[pick % v.len()])
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Sync {
                dev,
                window,
                lose,
                duplicate,
            } => {
                if *duplicate {
                    // The same request arrives twice; the first answer is lost.
                    self.devices[*dev].sync(&mut self.backend, INBOX, *window, self.now, true);
                }
                self.devices[*dev].sync(&mut self.backend, INBOX, *window, self.now, *lose);
            }
            Op::ServerAdd { content } => {
                self.backend
                    .folders
                    .get_mut(&INBOX)
                    .unwrap()
                    .add(self.now, *content);
            }
            Op::ServerChange { pick, content } => {
                let f = self.backend.folders.get_mut(&INBOX).unwrap();
                if !f.items.is_empty() {
                    let uid = *f.items.keys().nth(pick % f.items.len()).unwrap();
                    f.change(uid, *content);
                }
            }
            Op::DeviceChange { dev, pick, content } => {
                if let Some(sid) = self.pick(*dev, *pick) {
                    self.devices[*dev].device.local_change(sid, *content);
                }
            }
            Op::DeviceDelete { dev, pick } => {
                if let Some(sid) = self.pick(*dev, *pick) {
                    self.devices[*dev].device.local_delete(sid);
                }
            }
            Op::DeviceAdd { dev, content } => self.devices[*dev].device.local_add(INBOX, *content),
            Op::Race {
                a,
                b,
                pick,
                content,
            } => {
                // Device a deletes an item while device b changes it; both sync.
                let Some(sid) = self.pick(*a, *pick) else {
                    return;
                };
                let id = self.devices[*a].server.state.collections[&INBOX]
                    .by_n
                    .get(&sid.n)
                    .cloned();
                let Some(id) = id else { return };
                let other = self.devices[*b].server.state.collections[&INBOX]
                    .items
                    .get(&id)
                    .map(|i| i.n);
                self.devices[*a].device.local_delete(sid);
                if let Some(n) = other.filter(|n| *n != 0) {
                    self.devices[*b].device.local_change(
                        ServerId {
                            collection: INBOX,
                            n,
                        },
                        *content,
                    );
                }
                self.devices[*b].sync(&mut self.backend, INBOX, 8, self.now, false);
                self.devices[*a].sync(&mut self.backend, INBOX, 8, self.now, false);
            }
            Op::Clock { hours } => self.now += hours * HOUR,
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut backend = self.backend.clone();
        let mut devices = self.devices.clone();
        // Two rounds: changes made by one device while settling reach the others.
        for _ in 0..2 {
            for d in devices.iter_mut() {
                d.settle(&mut backend, INBOX, self.now);
            }
        }
        for (i, d) in devices.iter().enumerate() {
            let want = d.expected(&backend, INBOX, self.now);
            let got = d.resolved_view(INBOX);
            prop_assert_eq!(&got, &want, "device {} diverged", i);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn all_devices_converge(ops in prop::collection::vec(op(), 1..20)) {
        let mut sim = Sim::new();
        for op in &ops {
            sim.step(op);
        }
        sim.check()?;
    }
}
