//! SendMail, SmartReply and SmartForward against the real stack: Postfix
//! (127.0.0.1:1025) delivering into Dovecot, checked in the recipients'
//! INBOX and the sender's Sent folder over raw IMAP.
//!
//! The relay outage is what a stopped Postfix looks like to opush: the test
//! points its SMTP settings at a loopback port where nothing listens (a port
//! the OS just handed out and released). The shared Postfix is never stopped.
//!
//! Reserved Dovecot users: load0043–load0046 (load0041/42 are smtp_submit's).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{first_folder_sync, services, sync_req};

use opush_protocol::commands::compose::{ComposeRequest, Source};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{ClientCommand, ServerCommand};
use opush_protocol::commands::ServerId;
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::compose::{compose, SendFailure};
use opush_server::commands::sync::sync;
use opush_server::commands::CommandError;
use opush_server::config::Secret;
use opush_server::session::{Caller, EasServices};
use opush_tests::{
    demo_password, require, unique, RawImap, DOVECOT_IMAP, POSTFIX_SMTP, POSTFIX_SUBMISSION,
};

fn pw() -> Secret {
    Secret::new(demo_password())
}

const SENDER: &str = "load0043@load.test";
const RCPT: &str = "load0044@load.test";
const REPLIER: &str = "load0045@load.test";
const NO_SENT: &str = "load0046@load.test";

async fn eas(dir: &tempfile::TempDir) -> EasServices {
    require(POSTFIX_SMTP);
    require(DOVECOT_IMAP);
    let mut eas = services(dir).await;
    eas.send
        .identity
        .names
        .insert(SENDER.to_owned(), "Zoë Ünal".to_owned());
    eas
}

fn send_req(client_id: &str, mime: String, save: bool) -> ComposeRequest {
    ComposeRequest {
        client_id: Some(client_id.to_owned()),
        save_in_sent_items: save,
        mime: mime.into_bytes(),
        ..ComposeRequest::default()
    }
}

fn failure(res: Result<impl std::fmt::Debug, CommandError>) -> SendFailure {
    match res {
        Err(CommandError::Send(f)) => f,
        other => panic!("expected a send failure, got {other:?}"),
    }
}

fn count(user: &str, mailbox: &str, marker: &str) -> usize {
    RawImap::login(user).search_subject(mailbox, marker).len()
}

// [MS-ASCMD] 2.2.1.17 SendMail (14.0+ ComposeMail form, SaveInSentItems).
#[tokio::test]
async fn sent_message_arrives_with_headers_and_body_and_a_copy_in_sent() {
    let dir = tempfile::tempdir().unwrap();
    let eas = eas(&dir).await;
    let marker = unique("send");
    // A non-ASCII subject (RFC 2047 from the device) and an 8-bit UTF-8 body without charset.
    let mime = format!(
        "From: whoever@example.test\r\nTo: {RCPT}\r\nBcc: {NO_SENT}\r\nSubject: =?UTF-8?B?{}?= {marker}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, {marker}\r\n",
        base64_utf8("Café")
    );
    let sent = compose(
        &send_req(&unique("cid"), mime, true),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND1", &pw()),
        &eas,
    )
    .await
    .expect("send");
    assert!(sent.relay_reply.starts_with("250"), "{sent:?}");
    assert!(sent.saved_in_sent, "{sent:?}");
    assert_eq!(sent.recipients, [RCPT, NO_SENT]);

    let mut imap = RawImap::login(RCPT);
    let uids = imap.wait_for_subject("INBOX", &marker);
    assert_eq!(uids.len(), 1);
    let msg = imap.fetch_message(uids[0]);
    assert!(msg.contains("From: =?UTF-8?B?"), "identity: {msg}");
    assert!(msg.contains(&format!("<{SENDER}>")), "{msg}");
    assert!(!msg.contains("whoever@"), "{msg}");
    assert!(!msg.contains("Bcc:"), "Bcc leaked: {msg}");
    assert!(
        msg.contains(&format!("Message-ID: <{}>", sent.message_id)),
        "{msg}"
    );
    assert!(msg.contains("Date: "), "{msg}");
    assert!(msg.contains("Grüße aus Köln"), "8-bit body changed: {msg}");
    // Bcc recipient got it too.
    assert_eq!(
        RawImap::login(NO_SENT)
            .wait_for_subject("INBOX", &marker)
            .len(),
        1
    );

    let mut own = RawImap::login(SENDER);
    let copies = own.wait_for_subject("Sent", &marker);
    assert_eq!(copies.len(), 1);
    let copy = own.fetch_message(copies[0]);
    assert!(copy.contains(&format!("Bcc: {NO_SENT}")), "{copy}");
    let (flags, _) = own.cmd(&format!("UID FETCH {} FLAGS", copies[0]));
    assert!(flags.concat().contains("\\Seen"), "{flags:?}");
}

fn base64_utf8(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

// [MS-ASCMD] Status 118 MessagePreviouslySent: a retry after a lost answer.
#[tokio::test]
async fn retried_client_id_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let eas = eas(&dir).await;
    let marker = unique("retry");
    let cid = unique("cid");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nonce\r\n");
    compose(
        &send_req(&cid, mime.clone(), false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND2", &pw()),
        &eas,
    )
    .await
    .expect("first send");
    let again = compose(
        &send_req(&cid, mime.clone(), false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND2", &pw()),
        &eas,
    )
    .await;
    assert_eq!(failure(again), SendFailure::PreviouslySent(cid.clone()));
    // Another device of the same user has its own ClientIds.
    let other_marker = unique("retry-other");
    let other = format!("To: {RCPT}\r\nSubject: {other_marker}\r\n\r\nother\r\n");
    compose(
        &send_req(&cid, other, false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND3", &pw()),
        &eas,
    )
    .await
    .expect("other device");
    RawImap::login(RCPT).wait_for_subject("INBOX", &other_marker);
    // By the time the second message arrived the first had all the time
    // it needed: exactly one copy.
    RawImap::login(RCPT).wait_for_subject("INBOX", &marker);
    assert_eq!(count(RCPT, "INBOX", &marker), 1);
}

// [smtp] max_message_size → Status 122 before anything is sent.
#[tokio::test]
async fn oversize_message_is_refused_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut eas = eas(&dir).await;
    eas.send.max_message_size = 2_000;
    let marker = unique("big");
    let cid = unique("cid");
    let mime = format!(
        "To: {RCPT}\r\nSubject: {marker}\r\n\r\n{}\r\n",
        "x".repeat(3_000)
    );
    let res = compose(
        &send_req(&cid, mime.clone(), false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND4", &pw()),
        &eas,
    )
    .await;
    assert!(matches!(
        failure(res),
        SendFailure::TooLarge { limit: 2_000, .. }
    ));
    // The refusal recorded nothing: with a larger limit the same ClientId goes out.
    eas.send.max_message_size = 10 << 20;
    compose(
        &send_req(&cid, mime, false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND4", &pw()),
        &eas,
    )
    .await
    .expect("send within the limit");
    assert_eq!(
        RawImap::login(RCPT)
            .wait_for_subject("INBOX", &marker)
            .len(),
        1
    );
}

/// A loopback port with nothing listening: what a stopped relay looks like.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// Relay outage → Status 111 (retryable); the device's retry is sent.
#[tokio::test]
async fn relay_outage_is_retryable_and_the_retry_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut eas = eas(&dir).await;
    let port = eas.send.smtp.port;
    eas.send.smtp.port = dead_port();
    let marker = unique("outage");
    let cid = unique("cid");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nafter the outage\r\n");
    let res = compose(
        &send_req(&cid, mime.clone(), true),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND5", &pw()),
        &eas,
    )
    .await;
    assert!(matches!(failure(res), SendFailure::RelayUnavailable(_)));
    eas.send.smtp.port = port;
    compose(
        &send_req(&cid, mime, true),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND5", &pw()),
        &eas,
    )
    .await
    .expect("retry after the outage");
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
}

// Invalid recipient → Status 116, nothing sent to the others either.
#[tokio::test]
async fn refused_recipient_and_no_recipient_have_their_own_failures() {
    let dir = tempfile::tempdir().unwrap();
    let eas = eas(&dir).await;
    let marker = unique("badrcpt");
    let mime = format!("To: {RCPT}, someone@elsewhere.invalid\r\nSubject: {marker}\r\n\r\nx\r\n");
    let res = compose(
        &send_req(&unique("cid"), mime, false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND6", &pw()),
        &eas,
    )
    .await;
    assert!(matches!(failure(res), SendFailure::RecipientsRefused(_)));
    let res = compose(
        &send_req(
            &unique("cid"),
            "Subject: none\r\n\r\nx\r\n".to_owned(),
            false,
        ),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND6", &pw()),
        &eas,
    )
    .await;
    assert_eq!(failure(res), SendFailure::NoRecipient);
}

// A user without a Sent folder gets one; the send itself never fails for it.
#[tokio::test]
async fn missing_sent_folder_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let eas = eas(&dir).await;
    let mut imap = RawImap::login(NO_SENT);
    imap.cmd("DELETE \"Sent\"");
    let marker = unique("nosent");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nx\r\n");
    let sent = compose(
        &send_req(&unique("cid"), mime, true),
        Command::SendMail,
        &Caller::new(NO_SENT, "DEVSEND7", &pw()),
        &eas,
    )
    .await
    .expect("send");
    assert!(sent.saved_in_sent);
    assert_eq!(
        RawImap::login(NO_SENT)
            .wait_for_subject("Sent", &marker)
            .len(),
        1
    );
}

const ORIGINAL_ATTACHMENT: &str = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago=";

// [MS-ASCMD] 2.2.1.19 SmartReply (by ItemId) and 2.2.1.20 SmartForward (by
// LongId) of a message with an attachment.
#[tokio::test]
async fn reply_and_forward_of_a_message_with_an_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let eas = eas(&dir).await;
    let device = "DEVSMART";
    let version = ProtocolVersion::V14_1;
    let marker = unique("smart");
    let orig_id = format!("{marker}@example.test");
    let mut raw = RawImap::login(REPLIER);
    raw.cmd("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    let original = format!(
        "From: Bob Stone <bob@example.test>\r\nTo: {REPLIER}\r\nSubject: Plans {marker}\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{orig_id}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B1\r\n\r\n--B1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe original text\r\n--B1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=plan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{ORIGINAL_ATTACHMENT}\r\n--B1--\r\n"
    );
    let (_, ok) = raw.cmd(&format!(
        "APPEND INBOX {{{}+}}\r\n{original}",
        original.len()
    ));
    assert!(ok.starts_with("OK"), "{ok}");

    let password = pw();
    let caller = Caller::new(REPLIER, device, &password);
    let inbox = first_folder_sync(&eas, &caller).await.of_type(2);
    let r0 = sync(&sync_req(&inbox, "0"), version, &caller, &eas)
        .await
        .unwrap();
    let k1 = r0.collections[0].sync_key.0.clone();
    let r1 = sync(&sync_req(&inbox, &k1), version, &caller, &eas)
        .await
        .unwrap();
    let commands = r1.collections[0].commands.clone().unwrap();
    let ServerCommand::Add {
        server_id,
        application_data: ApplicationData::Email(_),
    } = &commands[0]
    else {
        panic!("{commands:?}");
    };

    // SmartReply by ItemId.
    let reply = ComposeRequest {
        client_id: Some(unique("cid")),
        source: Some(Source {
            folder_id: Some(inbox.clone()),
            item_id: Some(server_id.0.clone()),
            ..Source::default()
        }),
        mime: format!("To: {RCPT}\r\nSubject: RE: Plans {marker}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nFine by me ✓\r\n").into_bytes(),
        ..ComposeRequest::default()
    };
    let sent = compose(
        &reply,
        Command::SmartReply,
        &Caller::new(REPLIER, device, &pw()),
        &eas,
    )
    .await
    .expect("reply");
    assert!(sent.original_flagged);
    let mut rcpt = RawImap::login(RCPT);
    let uids = rcpt.wait_for_subject("INBOX", &format!("RE: Plans {marker}"));
    let msg = rcpt.fetch_message(uids[0]);
    assert!(msg.contains(&format!("In-Reply-To: <{orig_id}>")), "{msg}");
    assert!(msg.contains(&format!("References: <{orig_id}>")), "{msg}");
    assert!(msg.contains("> The original text"), "not quoted: {msg}");
    assert!(
        !msg.contains(ORIGINAL_ATTACHMENT),
        "a reply carries no attachment: {msg}"
    );

    // SmartForward by LongId ("<CollectionId>:<UIDVALIDITY>/<UID>").
    let (lines, _) = raw.cmd("STATUS INBOX (UIDVALIDITY)");
    let validity: u32 = lines
        .concat()
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|s| s.trim_end_matches([')', '\r', '\n']).parse().ok())
        .expect("uidvalidity");
    let uid = raw.search_subject("INBOX", &format!("Plans {marker}"))[0];
    let forward = ComposeRequest {
        client_id: Some(unique("cid")),
        source: Some(Source {
            long_id: Some(format!("{inbox}:{validity}/{uid}")),
            ..Source::default()
        }),
        save_in_sent_items: true,
        mime: format!("To: {RCPT}\r\nSubject: FW: Plans {marker}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Have a look</p>\r\n").into_bytes(),
        ..ComposeRequest::default()
    };
    let sent = compose(
        &forward,
        Command::SmartForward,
        &Caller::new(REPLIER, device, &pw()),
        &eas,
    )
    .await
    .expect("forward");
    assert!(sent.original_flagged && sent.saved_in_sent);
    let uids = rcpt.wait_for_subject("INBOX", &format!("FW: Plans {marker}"));
    let msg = rcpt.fetch_message(uids[0]);
    assert!(
        msg.contains("filename=\"plan.pdf\"") || msg.contains("filename=plan.pdf"),
        "{msg}"
    );
    assert!(
        msg.contains(ORIGINAL_ATTACHMENT),
        "attachment content: {msg}"
    );
    assert!(msg.contains("<p>Have a look</p>"), "{msg}");
    assert!(msg.contains("The original text"), "{msg}");

    let (flags, _) = raw.cmd(&format!("UID FETCH {uid} FLAGS"));
    let flags = flags.concat();
    assert!(
        flags.contains("\\Answered") && flags.contains("$Forwarded"),
        "{flags}"
    );

    // An unknown original: Status 150, nothing sent.
    let mut missing = reply.clone();
    missing.client_id = Some(unique("cid"));
    missing.source = Some(Source {
        item_id: Some(format!("{inbox}:999999")),
        ..Source::default()
    });
    let res = compose(
        &missing,
        Command::SmartReply,
        &Caller::new(REPLIER, device, &pw()),
        &eas,
    )
    .await;
    assert!(matches!(failure(res), SendFailure::SourceNotFound(_)));
}

// [receipt] delivery: the sender gets a receipt rendered from the
// configuration directory's delivery_receipt.mustache.
#[tokio::test]
async fn delivery_receipt_from_the_configured_template() {
    let dir = tempfile::tempdir().unwrap();
    let mut eas = eas(&dir).await;
    let templates = tempfile::tempdir().unwrap();
    let marker = unique("receipt");
    std::fs::write(
        templates.path().join("delivery_receipt.mustache"),
        format!("{marker} relayed by {{{{host}}}} to:\n{{{{#recipients}}}}- {{{{address}}}}\n{{{{/recipients}}}}"),
    )
    .unwrap();
    eas.send.delivery_receipt = true;
    eas.send.templates = Some(templates.path().to_path_buf());
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nwith a receipt\r\n");
    compose(
        &send_req(&unique("cid"), mime, false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND8", &pw()),
        &eas,
    )
    .await
    .expect("send");
    let mut own = RawImap::login(SENDER);
    let uids = own.wait_for_subject("INBOX", &format!("Delivered: {marker}"));
    assert_eq!(uids.len(), 1);
    let receipt = own.fetch_message(uids[0]);
    assert!(
        receipt.contains(&format!("{marker} relayed by 127.0.0.1 to:\r\n- {RCPT}")),
        "{receipt}"
    );
    assert!(
        receipt.contains("Auto-Submitted: auto-replied"),
        "{receipt}"
    );
}

// [smtp] auth: submission (port 1587) with the device user's own credentials.
#[tokio::test]
async fn authenticated_submission_with_the_device_password() {
    let submission = require(POSTFIX_SUBMISSION);
    let dir = tempfile::tempdir().unwrap();
    let mut eas = eas(&dir).await;
    eas.send.smtp.port = submission.port();
    eas.send.smtp_auth = true;
    let marker = unique("auth");
    let mime = format!("To: {RCPT}\r\nSubject: {marker}\r\n\r\nauthenticated\r\n");
    compose(
        &send_req(&unique("cid"), mime.clone(), false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND9", &pw()),
        &eas,
    )
    .await
    .expect("authenticated send");
    assert_eq!(
        RawImap::login(RCPT)
            .wait_for_subject("INBOX", &marker)
            .len(),
        1
    );
    // A wrong password is the relay's refusal, not an outage.
    let wrong = Secret::new("wrong");
    let res = compose(
        &send_req(&unique("cid"), mime, false),
        Command::SendMail,
        &Caller::new(SENDER, "DEVSEND9", &wrong),
        &eas,
    )
    .await;
    assert!(matches!(failure(res), SendFailure::Refused(_)));
}

// [receipt] read: a message asking for a receipt (Disposition-Notification-To)
// that the device marks read gets one, once ($MDNSent).
#[tokio::test]
async fn read_receipt_when_the_device_marks_a_message_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut eas = eas(&dir).await;
    eas.send.read_receipt = true;
    let device = "DEVREAD";
    let version = ProtocolVersion::V14_1;
    let marker = unique("mdn");
    let folder = marker.replace('-', "");
    let mut raw = RawImap::login(REPLIER);
    let (_, ok) = raw.cmd(&format!("CREATE \"{folder}\""));
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd(&format!("SUBSCRIBE \"{folder}\""));
    let msg = format!(
        "From: {RCPT}\r\nTo: {REPLIER}\r\nSubject: {marker}\r\nMessage-ID: <{marker}@load.test>\r\nDisposition-Notification-To: {RCPT}\r\n\r\nplease confirm\r\n"
    );
    let (_, ok) = raw.cmd(&format!("APPEND \"{folder}\" {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "{ok}");

    let password = pw();
    let caller = Caller::new(REPLIER, device, &password);
    let collection = first_folder_sync(&eas, &caller).await.named(&folder);
    let r0 = sync(&sync_req(&collection, "0"), version, &caller, &eas)
        .await
        .unwrap();
    let k1 = r0.collections[0].sync_key.0.clone();
    let r1 = sync(&sync_req(&collection, &k1), version, &caller, &eas)
        .await
        .unwrap();
    let k2 = r1.collections[0].sync_key.0.clone();
    let commands = r1.collections[0].commands.clone().unwrap();
    let ServerCommand::Add { server_id, .. } = &commands[0] else {
        panic!("{commands:?}");
    };
    let read = |key: &str| {
        let mut req = sync_req(&collection, key);
        req.collections[0].commands = Some(vec![ClientCommand::Change {
            class: None,
            server_id: ServerId(server_id.0.clone()),
            application_data: ApplicationData::Email(Box::new(Email {
                read: Some(true),
                ..Email::default()
            })),
        }]);
        req
    };
    let r2 = sync(&read(&k2), version, &caller, &eas).await.unwrap();
    let k3 = r2.collections[0].sync_key.0.clone();
    let mut rcpt = RawImap::login(RCPT);
    let receipts = rcpt.wait_for_subject("INBOX", &format!("Read: {marker}"));
    assert_eq!(receipts.len(), 1);
    let receipt = rcpt.fetch_message(receipts[0]);
    assert!(
        receipt.contains(&format!("Your message was read by {REPLIER}.")),
        "{receipt}"
    );
    assert!(
        receipt.contains(&format!("In-Reply-To: <{marker}@load.test>")),
        "{receipt}"
    );
    let (flags, _) = raw.cmd(&format!("STATUS \"{folder}\" (MESSAGES)"));
    assert!(flags.concat().contains("MESSAGES 1"), "{flags:?}");
    raw.cmd(&format!("SELECT \"{folder}\""));
    let (flags, _) = raw.cmd("FETCH 1 FLAGS");
    assert!(flags.concat().contains("$MDNSent"), "{flags:?}");

    // Marked read again: no second receipt.
    sync(&read(&k3), version, &caller, &eas).await.unwrap();
    raw.cmd("CLOSE");
    raw.cmd(&format!("UNSUBSCRIBE \"{folder}\""));
    raw.cmd(&format!("DELETE \"{folder}\""));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(count(RCPT, "INBOX", &format!("Read: {marker}")), 1);
}
