//! Test world shared by the engine's integration tests: a reference
//! mailbox (the backend), a reference device, and a server loop that drives
//! the engine exactly as `server/` will (observe, plan, perform, decide,
//! append, fold). No mocks of real services are involved: the engine has no
//! I/O, so the "backend" here is the reference model the tests check against.
#![allow(dead_code, clippy::unwrap_used)]

use opush_engine::*;
use std::collections::BTreeMap;

pub const INBOX: CollectionId = CollectionId(1);
pub const ARCHIVE: CollectionId = CollectionId(2);
pub const CONTACTS: CollectionId = CollectionId(3);
pub const HOUR: u64 = 3_600_000;

/// One backend folder.
#[derive(Clone, Debug, Default)]
pub struct MailFolder {
    pub validity: u64,
    pub next_uid: u64,
    pub cursor: u64,
    /// uid → (version, received_at, content)
    pub items: BTreeMap<u64, (u64, u64, u64)>,
}

impl MailFolder {
    pub fn id(&self, uid: u64) -> BackendItemId {
        BackendItemId(format!("{}/{}", self.validity, uid))
    }
    pub fn uid_of(&self, id: &BackendItemId) -> Option<u64> {
        let (v, u) = id.0.split_once('/')?;
        if v.parse::<u64>().ok()? != self.validity {
            return None;
        }
        u.parse().ok()
    }
    pub fn add(&mut self, received_at: u64, content: u64) -> u64 {
        self.next_uid += 1;
        self.cursor += 1;
        self.items.insert(self.next_uid, (1, received_at, content));
        self.next_uid
    }
    pub fn change(&mut self, uid: u64, content: u64) {
        self.cursor += 1;
        if let Some(it) = self.items.get_mut(&uid) {
            it.0 += 1;
            it.2 = content;
        }
    }
    pub fn observation(&self) -> Observation {
        Observation {
            validity: self.validity,
            cursor: self.cursor,
            kind: ObservationKind::Full,
            changed: self
                .items
                .iter()
                .map(|(uid, (v, r, c))| ObservedItem {
                    id: self.id(*uid),
                    version: ItemVersion(*v),
                    received_at: Timestamp(*r),
                    digest: Some(Digest::of(&c.to_le_bytes())),
                })
                .collect(),
            vanished: vec![],
        }
    }
}

/// The backend: folders of one user.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    pub folders: BTreeMap<CollectionId, MailFolder>,
    /// Updates replace the item by a new one (IMAP drafts: APPEND + expunge).
    pub replace_on_update: bool,
}

impl Backend {
    pub fn new() -> Self {
        let mut b = Backend::default();
        for c in [INBOX, ARCHIVE, CONTACTS] {
            b.folders.insert(
                c,
                MailFolder {
                    validity: 1,
                    ..MailFolder::default()
                },
            );
        }
        b
    }
    pub fn folder_list(&self) -> Vec<BackendFolder> {
        vec![
            BackendFolder {
                id: BackendFolderId("INBOX".into()),
                name: "Inbox".into(),
                parent: None,
                folder_type: FolderType::Inbox,
            },
            BackendFolder {
                id: BackendFolderId("Archive".into()),
                name: "Archive".into(),
                parent: None,
                folder_type: FolderType::UserMail,
            },
            BackendFolder {
                id: BackendFolderId("contacts".into()),
                name: "Contacts".into(),
                parent: None,
                folder_type: FolderType::Contacts,
            },
        ]
    }
    pub fn collection_of(folder: &BackendFolderId) -> CollectionId {
        match folder.0.as_str() {
            "INBOX" => INBOX,
            "Archive" => ARCHIVE,
            _ => CONTACTS,
        }
    }
    pub fn content(&self, col: CollectionId, id: &BackendItemId) -> Option<u64> {
        let f = self.folders.get(&col)?;
        f.items.get(&f.uid_of(id)?).map(|i| i.2)
    }
    /// Performs a planned Sync effect. `contents` gives the device content
    /// by digest.
    pub fn perform(
        &mut self,
        e: &BackendEffect,
        now: u64,
        contents: &BTreeMap<Digest, u64>,
    ) -> EffectOutcome {
        match e {
            BackendEffect::Create {
                collection, digest, ..
            } => {
                let f = self.folders.get_mut(collection).unwrap();
                let content = contents[digest];
                let uid = f.add(now, content);
                EffectOutcome::Created(ObservedItem {
                    id: f.id(uid),
                    version: ItemVersion(1),
                    received_at: Timestamp(now),
                    digest: Some(*digest),
                })
            }
            BackendEffect::Update {
                collection,
                id,
                digest,
            } => {
                let f = self.folders.get_mut(collection).unwrap();
                match f.uid_of(id).filter(|u| f.items.contains_key(u)) {
                    Some(uid) if self.replace_on_update => {
                        f.items.remove(&uid);
                        let new_uid = f.add(now, contents[digest]);
                        EffectOutcome::Replaced(ObservedItem {
                            id: f.id(new_uid),
                            version: ItemVersion(1),
                            received_at: Timestamp(now),
                            digest: Some(*digest),
                        })
                    }
                    Some(uid) => {
                        f.change(uid, contents[digest]);
                        EffectOutcome::Updated(ItemVersion(f.items[&uid].0))
                    }
                    None => EffectOutcome::Failed,
                }
            }
            BackendEffect::Delete { collection, id } => {
                let f = self.folders.get_mut(collection).unwrap();
                match f.uid_of(id) {
                    Some(uid) if f.items.remove(&uid).is_some() => {
                        f.cursor += 1;
                        EffectOutcome::Deleted
                    }
                    _ => EffectOutcome::Failed,
                }
            }
        }
    }
}

/// The server side of one device: its state and its log.
#[derive(Clone, Debug)]
pub struct Server {
    pub state: DeviceState,
    pub log: Vec<Event>,
    pub config: EngineConfig,
}

impl Server {
    pub fn new(config: EngineConfig) -> Self {
        Server {
            state: DeviceState::default(),
            log: Vec::new(),
            config,
        }
    }
    pub fn append(&mut self, events: &[Event]) {
        for e in events {
            // Every event goes through the codec, as storage would.
            let bytes = encode_event(e).unwrap();
            let back = decode_event(&bytes).unwrap();
            assert_eq!(&back, e);
            apply(&mut self.state, &back);
            self.log.push(back);
        }
    }
}

/// The reference device: what it shows to its user.
#[derive(Clone, Debug, Default)]
pub struct Device {
    pub hierarchy_key: SyncKey,
    pub keys: BTreeMap<CollectionId, SyncKey>,
    pub filters: BTreeMap<CollectionId, FilterType>,
    /// ServerId → (backend id as last sent, content)
    pub items: BTreeMap<ServerId, (BackendItemId, u64)>,
    /// Commands of the request in flight (resent until answered).
    pub in_flight: BTreeMap<CollectionId, Vec<ClientCommand>>,
    /// Local changes waiting for the next request.
    pub queued: BTreeMap<CollectionId, Vec<ClientCommand>>,
    /// Items created on the device, by ClientId: content.
    pub local_adds: BTreeMap<ClientId, (CollectionId, u64)>,
    pub contents: BTreeMap<Digest, u64>,
    pub next_client_id: u64,
    /// The Conflict option the device sends (None: server wins).
    pub conflict: Option<Conflict>,
}

impl Device {
    pub fn content_digest(&mut self, content: u64) -> Digest {
        let d = Digest::of(&content.to_le_bytes());
        self.contents.insert(d, content);
        d
    }
    pub fn local_add(&mut self, col: CollectionId, content: u64) {
        self.next_client_id += 1;
        let cid = ClientId(format!("c{}", self.next_client_id));
        let digest = self.content_digest(content);
        self.local_adds.insert(cid.clone(), (col, content));
        self.queued
            .entry(col)
            .or_default()
            .push(ClientCommand::Add {
                client_id: cid,
                digest,
            });
    }
    pub fn local_change(&mut self, sid: ServerId, content: u64) {
        let digest = self.content_digest(content);
        if let Some(it) = self.items.get_mut(&sid) {
            it.1 = content;
            self.queued
                .entry(sid.collection)
                .or_default()
                .push(ClientCommand::Change {
                    server_id: sid,
                    digest,
                });
        }
    }
    pub fn local_delete(&mut self, sid: ServerId) {
        if self.items.remove(&sid).is_some() {
            self.queued
                .entry(sid.collection)
                .or_default()
                .push(ClientCommand::Delete { server_id: sid });
        }
    }
    pub fn view(&self, col: CollectionId) -> Vec<(BackendItemId, u64)> {
        let mut v: Vec<_> = self
            .items
            .iter()
            .filter(|(s, _)| s.collection == col)
            .map(|(_, i)| i.clone())
            .collect();
        v.sort();
        v
    }
}

/// Outcome of one Sync round trip.
#[derive(Debug)]
pub struct Round {
    pub response: SyncResponse,
    pub delivered: bool,
}

/// One device + its server state, against a shared backend.
#[derive(Clone, Debug)]
pub struct Pair {
    pub server: Server,
    pub device: Device,
    pub req_id: u64,
    /// Lists without dates (`Timestamp::UNDATED`) whenever the FilterType
    /// in force (the request's, else the collection's) has no window, as
    /// the server does for email: the rule the engine relies on.
    pub undated: bool,
}

impl Pair {
    pub fn new(config: EngineConfig) -> Self {
        Pair {
            server: Server::new(config),
            device: Device::default(),
            req_id: 0,
            undated: false,
        }
    }

    /// Logs the decision's inputs right before its events, as the server does.
    fn record(
        &mut self,
        input: DecisionInput,
        output: DecisionOutput,
        at: Timestamp,
        events: &[Event],
    ) {
        let record = DecisionRecord {
            at,
            config: self.server.config.clone(),
            input,
            output,
        };
        self.server
            .append(&[record.into_event(self.req_id, events.len())]);
    }

    pub fn folder_sync(&mut self, backend: &Backend) -> FolderSyncResponse {
        self.server.append(&[Event::HierarchyObserved {
            folders: backend.folder_list(),
        }]);
        let d = decide_folder_sync(&self.server.state, self.device.hierarchy_key);
        self.record(
            DecisionInput::FolderSync {
                sync_key: self.device.hierarchy_key,
            },
            DecisionOutput::FolderSync(d.response.clone()),
            Timestamp(0),
            &d.events,
        );
        self.server.append(&d.events);
        if let Some(k) = d.response.sync_key {
            self.device.hierarchy_key = k;
        }
        d.response
    }

    /// One Sync of `col`: observe, plan, perform, decide, append; the
    /// response reaches the device unless `lose`.
    pub fn sync(
        &mut self,
        backend: &mut Backend,
        col: CollectionId,
        window: u32,
        now: u64,
        lose: bool,
    ) -> Round {
        self.req_id += 1;
        let mut obs = backend.folders[&col].observation();
        if self.undated {
            let asked = self.device.filters.get(&col).copied();
            let in_force = self.server.state.collections.get(&col).map(|c| c.filter);
            let filter = asked.or(in_force).unwrap_or_default();
            if filter.cutoff(Timestamp(now)).is_none() {
                for it in &mut obs.changed {
                    it.received_at = Timestamp::UNDATED;
                }
            }
        }
        self.server.append(&[Event::BackendObserved {
            req_id: self.req_id,
            collection: col,
            at: Timestamp(now),
            observation: obs,
        }]);
        let key = self.device.keys.get(&col).copied().unwrap_or(SyncKey::ZERO);
        if !self.device.in_flight.contains_key(&col) {
            let q = self.device.queued.remove(&col).unwrap_or_default();
            self.device.in_flight.insert(col, q);
        }
        let commands = if key == SyncKey::ZERO {
            vec![]
        } else {
            self.device.in_flight[&col].clone()
        };
        let request = SyncRequest {
            collection: col,
            sync_key: key,
            window_size: Some(window),
            filter: self.device.filters.get(&col).copied(),
            conflict: self.device.conflict,
            get_changes: key != SyncKey::ZERO,
            commands,
        };
        let effects = plan_sync(&self.server.state, &request);
        let outcomes: Vec<EffectOutcome> = effects
            .iter()
            .map(|e| backend.perform(e, now, &self.device.contents))
            .collect();
        let input = SyncInput { request, outcomes };
        let d = decide_sync(
            &self.server.state,
            &input,
            Timestamp(now),
            &self.server.config,
        )
        .unwrap();
        // Determinism: the same inputs give the same decision.
        let again = decide_sync(
            &self.server.state,
            &input,
            Timestamp(now),
            &self.server.config,
        )
        .unwrap();
        assert_eq!(d, again);
        self.record(
            DecisionInput::Sync(input),
            DecisionOutput::Sync(d.response.clone()),
            Timestamp(now),
            &d.events,
        );
        self.server.append(&d.events);
        let r = d.response;
        // Content is fetched after the append, before the response leaves.
        let fetched: Vec<Option<u64>> = r
            .changes
            .iter()
            .map(|c| backend.content(col, c.id()))
            .collect();
        if lose {
            return Round {
                response: r,
                delivered: false,
            };
        }
        self.receive(col, key, &r, &fetched);
        Round {
            response: r,
            delivered: true,
        }
    }

    fn receive(
        &mut self,
        col: CollectionId,
        sent_key: SyncKey,
        r: &SyncResponse,
        fetched: &[Option<u64>],
    ) {
        let dev = &mut self.device;
        match r.status {
            SyncStatus::Success => {}
            SyncStatus::InvalidSyncKey => {
                // [MS-ASCMD] Sync Status 3: start over from SyncKey 0.
                dev.keys.insert(col, SyncKey::ZERO);
                dev.items.retain(|s, _| s.collection != col);
                dev.in_flight.remove(&col);
                dev.queued.remove(&col);
                return;
            }
            other => panic!("unexpected status {other:?}"),
        }
        if sent_key == SyncKey::ZERO {
            dev.items.retain(|s, _| s.collection != col);
        }
        let in_flight = dev.in_flight.remove(&col).unwrap_or_default();
        if let Some(k) = r.sync_key {
            dev.keys.insert(col, k);
        }
        for reply in &r.replies {
            if reply.kind == ReplyKind::Add {
                let cid = reply.client_id.clone().unwrap();
                let (c, content) = dev.local_adds.remove(&cid).unwrap();
                assert_eq!(c, col);
                if reply.status == 1 {
                    let sid = reply.server_id.unwrap();
                    let id = BackendItemId(String::new());
                    // A deduplicated Add (same content) maps onto the existing item.
                    if let Some(prev) = dev.items.insert(sid, (id, content)) {
                        assert_eq!(prev.1, content, "Add reply reuses {sid} for other content");
                    }
                }
            }
        }
        let _ = in_flight;
        // Local changes not yet sent win on the device until the server
        // answers them (it resolves the conflict then).
        let mut locally_changed = std::collections::BTreeSet::new();
        let mut locally_deleted = std::collections::BTreeSet::new();
        for cmd in dev.queued.get(&col).into_iter().flatten() {
            match cmd {
                ClientCommand::Change { server_id, .. } => {
                    locally_changed.insert(*server_id);
                }
                ClientCommand::Delete { server_id } => {
                    locally_deleted.insert(*server_id);
                }
                _ => {}
            }
        }
        for (ch, content) in r.changes.iter().zip(fetched) {
            let sid = ServerId {
                collection: col,
                n: ch.n(),
            };
            if matches!(ch, ServerChange::Change { .. })
                && (locally_changed.contains(&sid) || locally_deleted.contains(&sid))
            {
                continue;
            }
            match ch {
                ServerChange::Add { id, .. } => {
                    let prev = dev
                        .items
                        .insert(sid, (id.clone(), content.unwrap_or(u64::MAX)));
                    assert!(prev.is_none(), "duplicate Add of {sid}");
                }
                ServerChange::Change { id, .. } => {
                    let prev = dev
                        .items
                        .insert(sid, (id.clone(), content.unwrap_or(u64::MAX)));
                    assert!(prev.is_some(), "Change of unknown {sid}");
                }
                ServerChange::Delete { .. } | ServerChange::SoftDelete { .. } => {
                    dev.items.remove(&sid);
                }
            }
        }
    }

    /// Syncs without losses until nothing is due (bounded).
    pub fn settle(&mut self, backend: &mut Backend, col: CollectionId, now: u64) {
        for _ in 0..10_000 {
            let r = self.sync(backend, col, 512, now, false);
            let queued = self.device.queued.get(&col).is_some_and(|q| !q.is_empty());
            if r.response.changes.is_empty()
                && !r.response.more_available
                && r.response.replies.is_empty()
                && !queued
            {
                return;
            }
        }
        panic!("sync did not settle");
    }

    /// The items the device should show for `col` at `now`.
    pub fn expected(
        &self,
        backend: &Backend,
        col: CollectionId,
        now: u64,
    ) -> Vec<(BackendItemId, u64)> {
        let f = &backend.folders[&col];
        let filter = self
            .server
            .state
            .collections
            .get(&col)
            .map_or(FilterType::All, |c| c.filter);
        let cutoff = filter.cutoff(Timestamp(now)).map_or(0, |t| t.0);
        let mut v: Vec<_> = f
            .items
            .iter()
            .filter(|(_, i)| i.1 >= cutoff)
            .map(|(uid, i)| (f.id(*uid), i.2))
            .collect();
        v.sort();
        v
    }

    /// Device view with backend ids resolved through the engine (device-added
    /// items have no backend id on the device).
    pub fn resolved_view(&self, col: CollectionId) -> Vec<(BackendItemId, u64)> {
        let c = self.server.state.collections.get(&col);
        let mut v: Vec<_> = self
            .device
            .items
            .iter()
            .filter(|(s, _)| s.collection == col)
            .map(|(s, (_, content))| {
                let id = c
                    .and_then(|c| c.by_n.get(&s.n))
                    .cloned()
                    .unwrap_or(BackendItemId(format!("?{s}")));
                (id, *content)
            })
            .collect();
        v.sort();
        v
    }
}
