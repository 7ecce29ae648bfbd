//! SendMail over HTTP against the real server, Postfix and Dovecot, in both
//! forms: the raw MIME body of 12.1 (`SaveInSent=T` in the query, HTTP
//! codes for failures) and the ComposeMail WBXML of 14.1 (Status values in
//! a `SendMail` response, an empty 200 on success).
//!
//! Reserved Dovecot users: load0043 (sender) and load0044 (recipient),
//! shared with eas_send (every check looks for a unique subject).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
mod http_support;

use std::sync::Arc;

use http_support::*;
use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec, tags};
use opush_server::http::HttpSettings;
use opush_tests::{require, unique, RawImap, POSTFIX_SMTP};

const SENDER: &str = "load0043@load.test";
const RCPT: &str = "load0044@load.test";

async fn server(dir: &tempfile::TempDir, max_size: usize) -> TestServer {
    require(POSTFIX_SMTP);
    let mut eas = eas_support::services(dir).await;
    eas.send.max_message_size = max_size;
    start_with_eas(
        HttpSettings {
            require_provisioning: false,
            max_request_body: 1 << 20,
            ..settings()
        },
        Arc::new(eas),
    )
    .await
}

async fn post(srv: &TestServer, query: &str, version: &str, ctype: &str, body: &[u8]) -> Resp {
    let auth = basic(SENDER, PASSWORD);
    let target = format!(
        "/Microsoft-Server-ActiveSync?Cmd=SendMail&User=load0043&DeviceId=SENDHTTP{}&DeviceType=iPhone{query}",
        version.replace('.', "")
    );
    let headers = [
        ("Authorization", auth.as_str()),
        ("MS-ASProtocolVersion", version),
        ("Content-Type", ctype),
    ];
    request(srv.addr, "POST", &target, &headers, body).await
}

fn compose_status(res: &Resp) -> Option<String> {
    if res.body.is_empty() {
        return None;
    }
    decode(&res.body)
        .unwrap()
        .child_text(tags::composemail::STATUS)
        .map(str::to_owned)
}

// [MS-ASCMD] 2.2.1.17: before 14.0 the body is the MIME message.
#[tokio::test]
async fn mime_form_is_sent_and_saved_and_oversize_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir, 4_000).await;
    let marker = unique("http-mime");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nsent as 12.1\r\n");
    let res = post(
        &srv,
        "&SaveInSent=T",
        "12.1",
        "message/rfc822",
        mime.as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200, "{res:?}");
    assert!(res.body.is_empty());
    assert_eq!(
        RawImap::login(RCPT)
            .wait_for_subject("INBOX", &marker)
            .len(),
        1
    );
    assert_eq!(
        RawImap::login(SENDER)
            .wait_for_subject("Sent", &marker)
            .len(),
        1
    );

    let big = format!(
        "To: {RCPT}\r\nSubject: big\r\n\r\n{}\r\n",
        "y".repeat(5_000)
    );
    let res = post(&srv, "", "12.1", "message/rfc822", big.as_bytes()).await;
    assert_eq!(res.status, 413, "{res:?}");
    srv.stop().await;
}

// [MS-ASCMD] 2.2.1.17 (14.0+) and Status 118 / 122.
#[tokio::test]
async fn wbxml_form_answers_empty_then_118_for_the_same_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir, 4_000).await;
    let marker = unique("http-wbxml");
    let body = |client_id: &str, mime: String| {
        encode_to_vec(
            &SendMailRequest(ComposeRequest {
                client_id: Some(client_id.to_owned()),
                mime: mime.into_bytes(),
                ..ComposeRequest::default()
            })
            .to_element(ProtocolVersion::V14_1),
        )
    };
    let cid = unique("cid");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nsent as 14.1\r\n");
    let wbxml = "application/vnd.ms-sync.wbxml";
    let res = post(&srv, "", "14.1", wbxml, &body(&cid, mime.clone())).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(compose_status(&res), None, "success has no body");
    let res = post(&srv, "", "14.1", wbxml, &body(&cid, mime)).await;
    assert_eq!(res.status, 200);
    assert_eq!(compose_status(&res).as_deref(), Some("118"));
    assert_eq!(
        RawImap::login(RCPT)
            .wait_for_subject("INBOX", &marker)
            .len(),
        1
    );

    let big = format!(
        "To: {RCPT}\r\nSubject: big\r\n\r\n{}\r\n",
        "y".repeat(5_000)
    );
    let res = post(&srv, "", "14.1", wbxml, &body(&unique("cid"), big)).await;
    assert_eq!(compose_status(&res).as_deref(), Some("122"));
    srv.stop().await;
}
