//! The device registry on the store, over HTTP against the real server,
//! the embedded store and Dovecot: a device's row is created by its first
//! request (quarantined when `[devices] allow_unknown = false`), an
//! administrator's allow applies to the next request, an unchanged allowed
//! device is not rewritten on every request while a new User-Agent is
//! written at once, and Settings' DeviceInformation stays in the row.
//!
//! FolderSync is the request (read-only on IMAP), as alice@example.test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
mod http_support;

use std::sync::Arc;
use std::time::Duration;

use http_support::*;
use opush_protocol::commands::folder_sync::FolderSyncRequest;
use opush_protocol::commands::settings::{DeviceInformation, SettingsRequest};
use opush_protocol::commands::SyncKey;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec, tags};
use opush_server::admin::set_access;
use opush_server::device::{INFO_PROTOCOL_VERSION, INFO_USER_AGENT};
use opush_server::http::HttpSettings;
use opush_storage::{DeviceKey, DeviceRecord, DeviceState, Store};

const ALICE: &str = "alice@example.test";
const DEVICE: &str = "REGDEV1";

async fn post(srv: &TestServer, cmd: &str, agent: &str, body: &[u8]) -> Resp {
    let auth = basic(ALICE, PASSWORD);
    let target = format!(
        "/Microsoft-Server-ActiveSync?Cmd={cmd}&User=alice&DeviceId={DEVICE}&DeviceType=iPhone"
    );
    let headers = [
        ("Authorization", auth.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
        ("User-Agent", agent),
    ];
    request(srv.addr, "POST", &target, &headers, body).await
}

async fn folder_sync_status(srv: &TestServer, agent: &str) -> String {
    let body = encode_to_vec(
        &FolderSyncRequest {
            sync_key: SyncKey("0".to_owned()),
        }
        .to_element(ProtocolVersion::V14_1),
    );
    let res = post(srv, "FolderSync", agent, &body).await;
    assert_eq!(res.status, 200, "{res:?}");
    decode(&res.body)
        .unwrap()
        .child_text(tags::folderhierarchy::STATUS)
        .unwrap()
        .to_owned()
}

async fn row(store: &Store) -> DeviceRecord {
    store
        .get_device(&DeviceKey::new(ALICE, DEVICE).unwrap())
        .await
        .unwrap()
        .expect("the device has a registry row")
}

// [MS-ASCMD] 2.2.2: Status 129 (device blocked/quarantined) from 14.0.
#[tokio::test]
async fn registry_rows_are_created_updated_and_administered() {
    let dir = tempfile::tempdir().unwrap();
    let eas = Arc::new(eas_support::services(&dir).await);
    let store = eas.sessions.store().clone();
    let srv = start_with_eas(
        HttpSettings {
            allow_unknown_devices: false,
            require_provisioning: false,
            ..settings()
        },
        eas.clone(),
    )
    .await;

    // First request: the row is created, quarantined.
    assert_eq!(folder_sync_status(&srv, "Agent/1").await, "129");
    let r = row(&store).await;
    assert_eq!(r.state, DeviceState::Quarantined);
    assert_eq!(r.device_type, "iPhone");
    assert_eq!(
        r.info.get(INFO_USER_AGENT).map(String::as_str),
        Some("Agent/1")
    );
    assert_eq!(
        r.info.get(INFO_PROTOCOL_VERSION).map(String::as_str),
        Some("14.1")
    );

    // Allowed by an administrator: the next request is served.
    set_access(&store, ALICE, DEVICE, true).await.unwrap();
    assert_eq!(folder_sync_status(&srv, "Agent/1").await, "1");
    let written = row(&store).await.last_seen_ms;

    // Unchanged and allowed: no write per request.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(folder_sync_status(&srv, "Agent/1").await, "1");
    assert_eq!(row(&store).await.last_seen_ms, written, "not rewritten");

    // Settings' DeviceInformation reaches the row.
    let settings_body = encode_to_vec(
        &SettingsRequest {
            device_information: Some(DeviceInformation {
                model: Some("iPhone17,1".to_owned()),
                ..DeviceInformation::default()
            }),
            ..SettingsRequest::default()
        }
        .to_element(ProtocolVersion::V14_1),
    );
    let res = post(&srv, "Settings", "Agent/1", &settings_body).await;
    assert_eq!(res.status, 200, "{res:?}");

    // A new User-Agent is written at once, keeping the device information.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(folder_sync_status(&srv, "Agent/2").await, "1");
    let r = row(&store).await;
    assert!(r.last_seen_ms > written);
    assert_eq!(
        r.info.get(INFO_USER_AGENT).map(String::as_str),
        Some("Agent/2")
    );
    assert_eq!(r.info.get("Model").map(String::as_str), Some("iPhone17,1"));
    assert_eq!(r.state, DeviceState::Allowed);
    srv.stop().await;
}
