//! Records a provisioning sequence and SendMail over HTTP (opush serve
//! in-process, embedded store, `require_provisioning`, real Dovecot and
//! Postfix; user load0051, device PROVREC): a FolderSync refused by the
//! gate (Status 142), Provision and its acknowledgement, FolderSync with
//! the key, a SendMail, the same ClientId again (118), a message over
//! `[smtp] max_message_size` (122). The gate and SendMail's checks are
//! recorded as decisions: the exported session replays identically, and
//! the decisions are there. With `UPDATE_REPLAY=1` the bundle is written
//! to `tests/replay/provision.bundle`, replayed on every run with no service
//! by `replay/tests/bundles.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use opush_engine::{DecisionInput, DecisionOutput, Event, PolicyCheck, SendCheck};
use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_server::config::Config;
use opush_storage::{StorageConfig, Store};
use opush_tests::eas::{find_text, EasClient};
use opush_tests::{demo_password, require, unique, DOVECOT_IMAP, POSTFIX_SMTP};

mod serve_support;

const USER: &str = "load0051@load.test";
const DEVICE: &str = "PROVREC";
const FOLDER_SYNC_0: &str =
    r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#;

fn send_mail(client_id: &str, body_len: usize) -> Vec<u8> {
    let req = SendMailRequest(ComposeRequest {
        client_id: Some(client_id.to_owned()),
        mime: format!(
            "To: {USER}\r\nSubject: {client_id}\r\n\r\n{}\r\n",
            "x".repeat(body_len)
        )
        .into_bytes(),
        ..ComposeRequest::default()
    });
    encode_to_vec(&req.to_element(ProtocolVersion::V14_1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_and_sendmail_session_replays_identically() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let dir = tempfile::tempdir().unwrap();
    let port = serve_support::free_port();
    let admin_port = serve_support::free_port();
    let store_path = dir.path().join("store");
    let cfg = Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = 1143\n\
         [smtp]\nmax_message_size = 4000\n\
         [policy]\nrequire_provisioning = true\n",
        store_path.display()
    ))
    .unwrap();
    let served = serve_support::Served::start(cfg, &store_path).await;
    let addr = served.addr;

    let mut c = EasClient::new(addr, USER, &demo_password(), DEVICE, "14.1");
    // Not provisioned: Status 142.
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    assert_eq!(res.status, 200);
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("142"));
    let res = c
        .post_xml(
            "Provision",
            "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
             </Policy></Policies></Provision>",
        )
        .await;
    let temp = find_text(&res.element(), "PolicyKey").expect("a temporary key");
    c.policy_key = Some(temp.clone());
    let res = c
        .post_xml(
            "Provision",
            &format!(
                "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
                 <PolicyKey>{temp}</PolicyKey><Status>1</Status></Policy></Policies></Provision>"
            ),
        )
        .await;
    c.policy_key = Some(find_text(&res.element(), "PolicyKey").expect("the final key"));
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("1"));
    // SendMail, the same ClientId again, and one too large.
    let client_id = unique("replay-cid");
    let res = c.post("SendMail", &send_mail(&client_id, 10)).await;
    assert_eq!(res.status, 200);
    assert!(res.body.is_empty(), "{}", res.xml());
    let res = c.post("SendMail", &send_mail(&client_id, 10)).await;
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("118"));
    let res = c.post("SendMail", &send_mail(&unique("big"), 5000)).await;
    assert_eq!(find_text(&res.element(), "Status").as_deref(), Some("122"));

    served.stop().await;
    let storage = StorageConfig {
        path: store_path.clone(),
        ..StorageConfig::default()
    };
    let store = Store::open(&storage).await.unwrap();
    let bundle = opush_replay::export(&store, USER, DEVICE, None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap().unwrap();
    assert_eq!(report.requests, 7, "{report:?}");
    let decided: Vec<(DecisionInput, DecisionOutput)> = bundle
        .decoded()
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| {
            e.decision()
                .map(|(_, _, r)| (r.input.clone(), r.output.clone()))
        })
        .collect();
    // The gate's checks are recorded in their compact form (no copy of the
    // configuration), one per request that reached it.
    let checks = bundle
        .decoded()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, Event::PolicyChecked { .. }))
        .count();
    assert_eq!(checks, 5, "every request but the two Provisions is checked");
    // The gate's refusal is answered, and the answer recorded like any other.
    let events = bundle.decoded().unwrap();
    let refused = events
        .iter()
        .find_map(|(_, e)| {
            let (req_id, _, record) = e.decision()?;
            (record.output == DecisionOutput::PolicyCheck(PolicyCheck::Status(142)))
                .then_some(req_id)
        })
        .expect("the gate's 142 is recorded");
    assert!(
        events.iter().any(|(_, e)| matches!(e,
            Event::ResponseSent { req_id, status: 200, .. } if *req_id == refused)),
        "no ResponseSent for the refused request"
    );
    let has = |f: &dyn Fn(&DecisionOutput) -> bool| decided.iter().any(|(_, o)| f(o));
    assert!(has(
        &|o| *o == DecisionOutput::PolicyCheck(PolicyCheck::Status(142))
    ));
    assert!(has(
        &|o| *o == DecisionOutput::PolicyCheck(PolicyCheck::Allowed)
    ));
    assert!(has(&|o| matches!(o, DecisionOutput::Provision(_))));
    assert!(has(&|o| *o == DecisionOutput::SendCheck(SendCheck::Send)));
    assert!(has(
        &|o| *o == DecisionOutput::SendCheck(SendCheck::AlreadySent)
    ));
    assert!(has(
        &|o| *o == DecisionOutput::SendCheck(SendCheck::TooLarge)
    ));
    assert!(has(&|o| matches!(o, DecisionOutput::Sent(_))));
    let back = opush_replay::Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(back, bundle);
    if std::env::var_os("UPDATE_REPLAY").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/replay/provision.bundle");
        std::fs::write(path, bundle.to_json()).unwrap();
    }
}
