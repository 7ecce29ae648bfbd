//! Device sessions and Provision over the real embedded store in a temp
//! dir: state survives a reload (snapshot + events), a stale head is a
//! conflict that changes nothing, and the two-step policy exchange records
//! the acknowledged key. No IMAP involved.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::sync::Arc;

use opush_engine::{Event, PolicyKey, PolicyState};
use opush_protocol::commands::provision::{PolicyRequest, ProvisionRequest, POLICY_TYPE_WBXML};
use opush_protocol::status::PolicyStatus;
use opush_protocol::version::ProtocolVersion;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::provision::{default_policy, provision};
use opush_server::config::{ImapConfig, Secret};
use opush_server::session::{Caller, EasServices, Sessions, SNAPSHOT_NAME};
use opush_storage::{AppendBatch, DeviceKey, StorageConfig, StorageError, Store};

async fn store(dir: &tempfile::TempDir) -> Arc<Store> {
    let config = StorageConfig {
        path: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await.unwrap();
    store.install_schema().await.unwrap();
    Arc::new(store)
}

/// No IMAP is reached here: any password does.
fn password() -> Secret {
    Secret::new("unused")
}

fn services(store: Arc<Store>, snapshot_every: u64) -> EasServices {
    EasServices {
        sessions: Sessions::new(store, snapshot_every, 16),
        engine: opush_engine::EngineConfig::default(),
        policy: default_policy(),
        imap: Arc::new(ImapPool::new(ImapConfig::default())),
        push: opush_server::push::PushHub::new(
            opush_server::push::PushSettings::default(),
            ImapConfig::default(),
        ),
        send: opush_server::commands::compose::SendSettings::default(),
        sent_copies: opush_server::sent_copy::SentCopies::default(),
        oof: opush_server::oof::OofService::default(),
    }
}

fn key() -> DeviceKey {
    DeviceKey::new("alice@example.test", "DEV1").unwrap()
}

/// A store in `dir` whose device already holds one committed event
/// (PolicyKeyIssued 1), with the sessions that wrote it.
async fn one_event_device(dir: &tempfile::TempDir) -> (Arc<Store>, Sessions) {
    let store = store(dir).await;
    let sessions = Sessions::new(store.clone(), 0, 16);
    {
        let mut s = sessions.open(key()).await.unwrap();
        s.commit(&[Event::PolicyKeyIssued {
            policy_key: PolicyKey(1),
        }])
        .await
        .unwrap();
    }
    (store, sessions)
}

/// Appends `event` at head 1 as another writer (another node, an
/// administrator's command) would: behind the sessions' back.
async fn append_behind(store: &Store, event: &Event) {
    let bytes = opush_engine::encode_event(event).unwrap();
    store
        .append(AppendBatch::new(key(), 1).event(1, bytes))
        .await
        .unwrap();
}

#[tokio::test]
async fn state_survives_a_reload_with_and_without_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    {
        let sessions = Sessions::new(store.clone(), 2, 16);
        let mut s = sessions.open(key()).await.unwrap();
        assert_eq!(s.head(), 0);
        s.commit(&[Event::PolicyKeyIssued {
            policy_key: PolicyKey(7),
        }])
        .await
        .unwrap();
        s.commit(&[Event::DeviceProvisioned {
            policy_key: PolicyKey(9),
        }])
        .await
        .unwrap();
        s.commit(&[Event::PolicyChanged]).await.unwrap();
        assert_eq!(s.head(), 3);
        assert_eq!(s.state().policy, PolicyState::Outdated(PolicyKey(9)));
    }
    // A snapshot was written at head 2 (every 2 events); event 3 is folded on top.
    let snap = store
        .get_snapshot(&key(), SNAPSHOT_NAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(snap.seq, 2);
    let fresh = Sessions::new(store.clone(), 0, 16);
    let s = fresh.open(key()).await.unwrap();
    assert_eq!(s.head(), 3);
    assert_eq!(s.state().policy, PolicyState::Outdated(PolicyKey(9)));
}

#[tokio::test]
async fn a_concurrent_writer_is_a_retryable_conflict_that_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sessions) = one_event_device(&dir).await;
    // Another node appends behind this process's back while a request of
    // this process holds the device: its commit is a conflict.
    {
        let mut s = sessions.open(key()).await.unwrap();
        assert_eq!(s.head(), 1);
        append_behind(
            &store,
            &Event::PolicyKeyIssued {
                policy_key: PolicyKey(2),
            },
        )
        .await;
        let err = s
            .commit(&[Event::PolicyKeyIssued {
                policy_key: PolicyKey(3),
            }])
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(matches!(
            err,
            opush_server::session::SessionError::Storage(StorageError::Conflict { .. })
        ));
    }
    assert_eq!(store.head(&key()).await.unwrap(), 2);
    // The next request re-reads the store and sees the other node's event.
    let s = sessions.open(key()).await.unwrap();
    assert_eq!(s.head(), 2);
    assert_eq!(s.state().policy, PolicyState::Pending(PolicyKey(2)));
}

// [MS-ASPROV] 3.2.5.1.1: download (temporary key), then acknowledge (final key).
#[tokio::test]
async fn provision_two_steps_then_a_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let eas = services(store(&dir).await, 10);
    for version in [
        ProtocolVersion::V12_1,
        ProtocolVersion::V14_1,
        ProtocolVersion::V16_1,
    ] {
        let device = format!("DEV{version:?}");
        let download = ProvisionRequest {
            policy: Some(PolicyRequest {
                policy_type: POLICY_TYPE_WBXML.to_owned(),
                ..PolicyRequest::default()
            }),
            ..ProvisionRequest::default()
        };
        let first = provision(
            &download,
            version,
            &Caller::new("bob@example.test", &device, &password()),
            "SP",
            &eas,
        )
        .await
        .unwrap();
        let p1 = first.policy.unwrap();
        assert_eq!(p1.status, PolicyStatus::Success);
        let temp = p1.policy_key.unwrap();
        assert!(p1.data.is_some(), "policy document sent on download");

        let ack = ProvisionRequest {
            policy: Some(PolicyRequest {
                policy_type: POLICY_TYPE_WBXML.to_owned(),
                policy_key: Some(temp),
                status: Some(1),
            }),
            ..ProvisionRequest::default()
        };
        let second = provision(
            &ack,
            version,
            &Caller::new("bob@example.test", &device, &password()),
            "SP",
            &eas,
        )
        .await
        .unwrap();
        let p2 = second.policy.unwrap();
        assert_eq!(p2.status, PolicyStatus::Success);
        let fin = p2.policy_key.unwrap();
        assert_ne!(fin, temp);
        assert!(p2.data.is_none());
        let s = eas
            .sessions
            .open(DeviceKey::new("bob@example.test", &device).unwrap())
            .await
            .unwrap();
        assert_eq!(s.state().policy, PolicyState::Acknowledged(PolicyKey(fin)));
        drop(s);

        let wrong = ProvisionRequest {
            policy: Some(PolicyRequest {
                policy_type: POLICY_TYPE_WBXML.to_owned(),
                policy_key: Some(fin.wrapping_add(1)),
                status: Some(1),
            }),
            ..ProvisionRequest::default()
        };
        let third = provision(
            &wrong,
            version,
            &Caller::new("bob@example.test", &device, &password()),
            "SP",
            &eas,
        )
        .await
        .unwrap();
        assert_eq!(
            third.policy.unwrap().status,
            PolicyStatus::PolicyKeyMismatch
        );
    }
}

// [MS-ASCMD] 2.2.1.18: DeviceInformation reaches the registry; Oof is denied.
#[tokio::test]
async fn settings_store_device_information_and_answer_user_information() {
    use opush_protocol::commands::settings::{DeviceInformation, OofRequest, SettingsRequest};
    use opush_server::commands::settings::settings;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let eas = services(store.clone(), 10);
    let req = SettingsRequest {
        device_information: Some(DeviceInformation {
            model: Some("Pixel 9".to_owned()),
            os: Some("Android 16".to_owned()),
            ..DeviceInformation::default()
        }),
        user_information_get: true,
        oof: Some(OofRequest::Get {
            body_type: "Text".to_owned(),
        }),
        ..SettingsRequest::default()
    };
    let res = settings(
        &req,
        ProtocolVersion::V14_1,
        &Caller::new("alice@example.test", "DEV1", &password()),
        "Android",
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(res.status.code(), 1);
    assert_eq!(res.device_information_status.map(|s| s.code()), Some(1));
    assert_eq!(res.oof.unwrap().status.code(), 7);
    let (status, info) = res.user_information.unwrap();
    assert_eq!(status.code(), 1);
    assert_eq!(
        info.unwrap().accounts[0].primary_smtp_address.as_deref(),
        Some("alice@example.test")
    );
    let record = store.get_device(&key()).await.unwrap().unwrap();
    assert_eq!(
        record.info.get("Model").map(String::as_str),
        Some("Pixel 9")
    );
    assert_eq!(
        record.info.get("OS").map(String::as_str),
        Some("Android 16")
    );
    assert_eq!(record.device_type, "Android");
}

// [MS-ASCMD] 2.2.3.57 EmailAddresses: under UserInformation/Get in 14.0,
// under Get/Accounts/Account from 14.1 (with 2.2.3.138 PrimarySmtpAddress),
// in the WBXML the handler sends.
#[tokio::test]
async fn settings_user_information_where_each_version_puts_it() {
    use opush_protocol::commands::settings::SettingsRequest;
    use opush_protocol::wbxml::tags::settings as st;
    use opush_protocol::wbxml::{decode, encode_to_vec, Element, Tag};
    use opush_server::commands::settings::settings;
    fn at<'e>(el: &'e Element<'static>, path: &[Tag]) -> Option<&'e Element<'static>> {
        path.iter().try_fold(el, |e, t| e.child(*t))
    }
    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(store(&dir).await, 10);
    eas.send.identity.default_domain = "example.test".to_owned();
    eas.send
        .identity
        .names
        .insert("alice@example.test".to_owned(), "Alice Martin".to_owned());
    let req = SettingsRequest {
        user_information_get: true,
        ..SettingsRequest::default()
    };
    let get = [st::USER_INFORMATION, st::GET];
    for version in [ProtocolVersion::V14_0, ProtocolVersion::V16_1] {
        let res = settings(
            &req,
            version,
            &Caller::new("alice", "DEV1", &password()),
            "Android",
            &eas,
        )
        .await
        .unwrap();
        let doc = decode(&encode_to_vec(&res.to_element(version)))
            .unwrap()
            .into_owned();
        assert_eq!(
            at(&doc, &[st::USER_INFORMATION, st::STATUS])
                .unwrap()
                .text(),
            Some("1")
        );
        let g = at(&doc, &get).unwrap();
        let ea = if version >= ProtocolVersion::V14_1 {
            assert!(g.child(st::EMAIL_ADDRESSES).is_none(), "{version}");
            let account = at(g, &[st::ACCOUNTS, st::ACCOUNT]).unwrap();
            assert_eq!(
                account.child_text(st::USER_DISPLAY_NAME),
                Some("Alice Martin")
            );
            assert!(account.child(st::ACCOUNT_ID).is_none());
            let ea = account.child(st::EMAIL_ADDRESSES).unwrap();
            assert_eq!(
                ea.child_text(st::PRIMARY_SMTP_ADDRESS),
                Some("alice@example.test")
            );
            ea
        } else {
            assert!(g.child(st::ACCOUNTS).is_none(), "{version}");
            let ea = g.child(st::EMAIL_ADDRESSES).unwrap();
            assert!(ea.child(st::PRIMARY_SMTP_ADDRESS).is_none());
            ea
        };
        let smtp: Vec<_> = ea
            .children_with(st::SMTP_ADDRESS)
            .map(|a| a.text().unwrap())
            .collect();
        assert_eq!(smtp, ["alice@example.test"], "{version}");
    }
}

#[tokio::test]
async fn a_state_kept_in_memory_is_not_used_once_the_store_moved_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, sessions) = one_event_device(&dir).await;
    // An administrator's wipe, appended by another process between two
    // requests: the next request sees it without first failing a commit.
    append_behind(
        &store,
        &Event::WipeRequested {
            at: opush_engine::Timestamp(5),
        },
    )
    .await;
    let s = sessions.open(key()).await.unwrap();
    assert_eq!(s.head(), 2);
    assert_eq!(s.state().wipe, opush_engine::WipeState::Requested);
    assert_eq!(s.state().policy, PolicyState::Pending(PolicyKey(1)));
}

#[tokio::test]
async fn a_recorded_request_leaves_the_state_a_reload_folds() {
    use opush_protocol::query::Command;
    use opush_server::session::Recorder;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let eas = services(store.clone(), 3);
    {
        let mut s = eas.sessions.open(key()).await.unwrap();
        // A request that changes the state: its working copy becomes the session's.
        let mut rec = Recorder::new(&s, &eas, Command::Provision);
        rec.observed(Event::PolicyKeyIssued {
            policy_key: PolicyKey(7),
        });
        s.commit_request(rec).await.unwrap();
        assert_eq!(s.state().policy, PolicyState::Pending(PolicyKey(7)));
        // A request that changes nothing: only its trace is committed (deferred).
        let rec = Recorder::new(&s, &eas, Command::Ping);
        assert!(rec.is_empty());
        s.commit_request(rec).await.unwrap();
        // A request during which the session itself moved on: its events
        // are folded on top of what the session holds, not swapped in.
        let mut rec = Recorder::new(&s, &eas, Command::Provision);
        rec.observed(Event::DeviceProvisioned {
            policy_key: PolicyKey(9),
        });
        s.commit(&[Event::WipeRequested {
            at: opush_engine::Timestamp(5),
        }])
        .await
        .unwrap();
        s.commit_request(rec).await.unwrap();
        assert_eq!(s.state().wipe, opush_engine::WipeState::Requested);
        assert_eq!(s.state().policy, PolicyState::Acknowledged(PolicyKey(9)));
    }
    eas.sessions.flush().await;
    let in_memory = eas.sessions.open(key()).await.unwrap().state().clone();
    let reloaded = services(store, 0)
        .sessions
        .open(key())
        .await
        .unwrap()
        .state()
        .clone();
    // `applied` included: trace events count as folded in both.
    assert_eq!(in_memory, reloaded);
    assert!(in_memory.applied >= 6, "{}", in_memory.applied);
}

#[tokio::test]
async fn one_request_reads_the_head_once_the_next_request_reads_it_again() {
    use opush_server::obs::scope::run;
    use opush_server::obs::RequestScope;
    let dir = tempfile::tempdir().unwrap();
    let (store, sessions) = one_event_device(&dir).await;
    run(RequestScope::new(), async {
        assert_eq!(sessions.open(key()).await.unwrap().head(), 1);
        // Another writer, within the same request: this request's later
        // opens keep the head it read (one head read per request)...
        append_behind(
            &store,
            &Event::WipeRequested {
                at: opush_engine::Timestamp(5),
            },
        )
        .await;
        assert_eq!(sessions.open(key()).await.unwrap().head(), 1);
    })
    .await;
    // ...and the next request reads it again.
    run(RequestScope::new(), async {
        let s = sessions.open(key()).await.unwrap();
        assert_eq!(s.head(), 2);
        assert_eq!(s.state().wipe, opush_engine::WipeState::Requested);
    })
    .await;
}

#[tokio::test]
async fn an_exclusive_recorder_changes_the_state_in_place_and_a_failed_request_reloads() {
    use opush_protocol::query::Command;
    use opush_server::session::Recorder;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let eas = services(store.clone(), 0);
    {
        let mut s = eas.sessions.open(key()).await.unwrap();
        let before = Arc::as_ptr(&s.shared_state()) as usize;
        // Sync's recorder: the session's state is changed in place, not copied.
        let mut rec = Recorder::exclusive(&mut s, &eas, Command::Sync);
        rec.observed(Event::PolicyKeyIssued {
            policy_key: PolicyKey(7),
        });
        assert_eq!(rec.state().policy, PolicyState::Pending(PolicyKey(7)));
        s.commit_request(rec).await.unwrap();
        assert_eq!(s.state().policy, PolicyState::Pending(PolicyKey(7)));
        assert_eq!(Arc::as_ptr(&s.shared_state()) as usize, before, "no copy");
        assert_eq!(s.head(), 2, "RequestReceived and the observation");
        // One that changes nothing: its trace is deferred, the state stays.
        let rec = Recorder::exclusive(&mut s, &eas, Command::Sync);
        s.commit_request(rec).await.unwrap();
        assert_eq!(s.head(), 2);
        assert_eq!(s.state().policy, PolicyState::Pending(PolicyKey(7)));
    }
    {
        // A request that fails after changing its working state: nothing of
        // it is committed, and the session no longer holds a state.
        let mut s = eas.sessions.open(key()).await.unwrap();
        let mut rec = Recorder::exclusive(&mut s, &eas, Command::Sync);
        rec.observed(Event::DeviceProvisioned {
            policy_key: PolicyKey(9),
        });
        drop(rec);
    }
    // The next request reloads the committed state, deferred trace included.
    let s = eas.sessions.open(key()).await.unwrap();
    assert_eq!(s.head(), 2);
    assert_eq!(s.state().policy, PolicyState::Pending(PolicyKey(7)));
    let after_failure = s.state().clone();
    drop(s);
    eas.sessions.flush().await;
    let reloaded = services(store, 0)
        .sessions
        .open(key())
        .await
        .unwrap()
        .state()
        .clone();
    assert_eq!(
        after_failure, reloaded,
        "`applied` counts the deferred trace"
    );
}
