//! The provisioning gate over HTTP against the real server, the embedded
//! store and Dovecot, for 12.1 (HTTP 449), 14.1 and 16.1 (Status 142/144 and
//! 140): a new device is sent to Provision, downloads the policy, is still
//! refused with the temporary key, acknowledges, is served with the final
//! key and refused with another; an administrator's remote wipe (recorded in
//! the device's log by `opush_server::admin`) turns the next request into
//! 449 / 140, Provision answers `<RemoteWipe/>`, and the device's
//! acknowledgement is recorded. The gate reads the device's event-sourced
//! state (the wipe is appended to the store behind the running server).
//!
//! FolderSync is used as the gated command (read-only on IMAP), as
//! alice@example.test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
mod http_support;

use std::sync::Arc;

use http_support::*;
use opush_engine::WipeState;
use opush_protocol::commands::folder_sync::FolderSyncRequest;
use opush_protocol::commands::provision::{
    PolicyRequest, ProvisionRequest, ProvisionResponse, POLICY_TYPE_WBXML,
};
use opush_protocol::commands::settings::DeviceInformation;
use opush_protocol::commands::SyncKey;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec, tags};
use opush_server::admin::{request_wipe, WipeOutcome};
use opush_server::http::HttpSettings;
use opush_storage::DeviceKey;

const ALICE: &str = "alice@example.test";

fn target(cmd: &str, device: &str) -> String {
    format!("/Microsoft-Server-ActiveSync?Cmd={cmd}&User=alice&DeviceId={device}&DeviceType=SP")
}

struct Device<'a> {
    srv: &'a TestServer,
    id: String,
    version: ProtocolVersion,
    auth: String,
}

/// What the gate answered a FolderSync: HTTP 449, or the FolderSync Status.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Http449,
    Status(String),
}

impl Device<'_> {
    async fn post(&self, cmd: &str, key: Option<u32>, body: &[u8]) -> Resp {
        let key = key.map(|k| k.to_string());
        let mut headers = vec![
            ("Authorization", self.auth.as_str()),
            ("MS-ASProtocolVersion", self.version.as_str()),
        ];
        if let Some(k) = &key {
            headers.push(("X-MS-PolicyKey", k.as_str()));
        }
        request(
            self.srv.addr,
            "POST",
            &target(cmd, &self.id),
            &headers,
            body,
        )
        .await
    }

    async fn folder_sync(&self, key: Option<u32>) -> Gate {
        let body = encode_to_vec(
            &FolderSyncRequest {
                sync_key: SyncKey("0".to_owned()),
            }
            .to_element(self.version),
        );
        let res = self.post("FolderSync", key, &body).await;
        if res.status == 449 {
            return Gate::Http449;
        }
        assert_eq!(res.status, 200, "{res:?}");
        let doc = decode(&res.body).unwrap();
        assert_eq!(doc.tag, tags::folderhierarchy::FOLDER_SYNC);
        Gate::Status(
            doc.child_text(tags::folderhierarchy::STATUS)
                .unwrap()
                .to_owned(),
        )
    }

    async fn provision(&self, key: Option<u32>, req: &ProvisionRequest) -> ProvisionResponse {
        let res = self
            .post(
                "Provision",
                key,
                &encode_to_vec(&req.to_element(self.version)),
            )
            .await;
        assert_eq!(res.status, 200, "{res:?}");
        ProvisionResponse::from_element(&decode(&res.body).unwrap(), self.version).unwrap()
    }

    /// The gate's refusal at this version: 449 before 14.0, else the Status.
    fn refused(&self, status: &str) -> Gate {
        if self.version >= ProtocolVersion::V14_0 {
            Gate::Status(status.to_owned())
        } else {
            Gate::Http449
        }
    }
}

fn policy(key: Option<u32>, status: Option<u8>) -> ProvisionRequest {
    ProvisionRequest {
        policy: Some(PolicyRequest {
            policy_type: POLICY_TYPE_WBXML.to_owned(),
            policy_key: key,
            status,
        }),
        ..ProvisionRequest::default()
    }
}

async fn wipe_state(eas: &opush_server::session::EasServices, device: &str) -> WipeState {
    let s = eas
        .sessions
        .open(DeviceKey::new(ALICE, device).unwrap())
        .await
        .unwrap();
    s.state().wipe
}

// [MS-ASPROV] 3.2.5.1 (policy exchange), 3.2.5.2 (remote wipe); [MS-ASCMD] 2.2.2 (140/142/144).
#[tokio::test]
async fn gate_provision_acknowledge_and_remote_wipe_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let eas = Arc::new(eas_support::services(&dir).await);
    let srv = start_with_eas(
        HttpSettings {
            require_provisioning: true,
            ..settings()
        },
        eas.clone(),
    )
    .await;
    for version in [
        ProtocolVersion::V12_1,
        ProtocolVersion::V14_1,
        ProtocolVersion::V16_1,
    ] {
        let dev = Device {
            srv: &srv,
            id: format!("PROV{}", version.as_str().replace('.', "")),
            version,
            auth: basic(ALICE, PASSWORD),
        };
        // Never provisioned: refused with or without a key.
        assert_eq!(dev.folder_sync(None).await, dev.refused("142"));
        assert_eq!(dev.folder_sync(Some(12345)).await, dev.refused("142"));

        // Download: a temporary key and the policy document.
        let down = dev.provision(None, &policy(None, None)).await;
        let p = down.policy.unwrap();
        assert_eq!(p.status.code(), 1);
        assert!(p.data.is_some());
        let temp = p.policy_key.unwrap();
        // The temporary key does not open the gate.
        assert_eq!(dev.folder_sync(Some(temp)).await, dev.refused("142"));

        // Acknowledge: the final key opens it; another key is 144.
        let ack = dev
            .provision(Some(temp), &policy(Some(temp), Some(1)))
            .await;
        let fin = ack.policy.unwrap().policy_key.unwrap();
        assert_ne!(fin, temp);
        assert_eq!(dev.folder_sync(Some(fin)).await, Gate::Status("1".into()));
        assert_eq!(
            dev.folder_sync(Some(fin.wrapping_add(1))).await,
            dev.refused("144")
        );

        // An administrator wipes the device: the next request is refused
        // with 140 (449 before 14.0) even with the right key.
        let outcome = request_wipe(&eas.sessions, ALICE, &dev.id).await.unwrap();
        assert_eq!(outcome, WipeOutcome::Requested);
        assert_eq!(
            request_wipe(&eas.sessions, ALICE, &dev.id).await.unwrap(),
            WipeOutcome::AlreadyPending
        );
        assert_eq!(dev.folder_sync(Some(fin)).await, dev.refused("140"));
        // Provision carries the order; the device acknowledges it.
        let order = dev.provision(Some(fin), &policy(None, None)).await;
        assert!(order.remote_wipe, "{order:?}");
        assert_eq!(wipe_state(&eas, &dev.id).await, WipeState::Requested);
        let done = dev
            .provision(
                Some(fin),
                &ProvisionRequest {
                    remote_wipe_status: Some(1),
                    ..ProvisionRequest::default()
                },
            )
            .await;
        assert_eq!(done.status.code(), 1);
        assert_eq!(wipe_state(&eas, &dev.id).await, WipeState::Acknowledged);
    }
    srv.stop().await;

    // A wipe of a device the store never saw is refused.
    assert!(request_wipe(&eas.sessions, ALICE, "NOSUCHDEVICE")
        .await
        .is_err());
}

// [MS-ASPROV] 2.2.2.53 / [MS-ASCMD] 2.2.3.45: from 14.1 a device sends its
// settings:DeviceInformation in its initial Provision (as iOS does); it reaches
// the device registry as a Settings one would, and its Status says so.
#[tokio::test]
async fn provision_device_information_reaches_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let eas = Arc::new(eas_support::services(&dir).await);
    let srv = start_with_eas(settings(), eas.clone()).await;
    let dev = Device {
        srv: &srv,
        id: "PROVINFO141".to_owned(),
        version: ProtocolVersion::V14_1,
        auth: basic(ALICE, PASSWORD),
    };
    let res = dev
        .provision(
            None,
            &ProvisionRequest {
                device_information: Some(DeviceInformation {
                    model: Some("iPhone17,1".to_owned()),
                    friendly_name: Some("Alice's iPhone".to_owned()),
                    os: Some("iOS 26.1 23B85".to_owned()),
                    os_language: Some("fr-FR".to_owned()),
                    user_agent: Some("Apple-iPhone17C1/2301.85".to_owned()),
                    ..DeviceInformation::default()
                }),
                ..policy(None, None)
            },
        )
        .await;
    assert_eq!(res.device_information_status, Some(1));
    assert_eq!(res.policy.unwrap().status.code(), 1);

    let record = eas
        .sessions
        .store()
        .get_device(&DeviceKey::new(ALICE, &dev.id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let info = |k: &str| record.info.get(k).map(String::as_str);
    assert_eq!(info("Model"), Some("iPhone17,1"));
    assert_eq!(info("FriendlyName"), Some("Alice's iPhone"));
    assert_eq!(info("OS"), Some("iOS 26.1 23B85"));
    assert_eq!(info("OSLanguage"), Some("fr-FR"));
    assert_eq!(info("UserAgent"), Some("Apple-iPhone17C1/2301.85"));
    assert_eq!(info("IMEI"), None);
    assert_eq!(record.device_type, "SP");
    srv.stop().await;
}
