//! SMTP submission against the real Postfix of the test stack, checked on the
//! Dovecot side: a prepared message arrives once with the user's identity and
//! without its Bcc header; refusals and outages get their own typed errors;
//! SMTP AUTH carries non-ASCII and special-character passwords.

use std::time::Duration;

use opush_server::backends::smtp::{
    submit, SmtpError, SmtpLogin, SmtpSettings, SmtpTls, Submission,
};
use opush_server::outgoing::{prepare, Sender, Stamp};
use opush_tests::{
    demo_password, require, unique, RawImap, POSTFIX_SMTP, POSTFIX_SUBMISSION,
    SPECIAL_PASSWORD_USERS,
};

fn relay(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        timeout: Duration::from_secs(10),
        hello_name: "opush.test".into(),
    }
}

fn stamp(marker: &str) -> Stamp {
    Stamp {
        date: "Sat, 28 Nov 2026 21:30:00 +0000".into(),
        unique: marker.into(),
        host: "opush.test".into(),
    }
}

fn alice() -> Sender {
    Sender {
        display_name: "Alice Émile".into(),
        address: "alice@example.test".into(),
    }
}

#[tokio::test]
async fn prepared_message_arrives_once_without_bcc() {
    require(POSTFIX_SMTP);
    let marker = unique("smtp-relay");
    let mime = format!(
        "From: spoofed@example.test\r\nTo: load0041@load.test\r\nBcc: load0042@load.test\r\nSubject: {marker}\r\n\r\nhello from opush\r\n"
    );
    let out = prepare(mime.as_bytes(), &alice(), &stamp(&marker), 10 << 20).expect("prepare");
    let accepted = submit(
        &relay(1025),
        None,
        &Submission {
            envelope_from: &out.envelope_from,
            recipients: &out.recipients,
            message: &out.message,
        },
    )
    .await
    .expect("submit");
    assert!(accepted.reply.starts_with("250"), "{accepted:?}");

    for user in ["load0041@load.test", "load0042@load.test"] {
        let mut imap = RawImap::login(user);
        let uids = imap.wait_for_subject("INBOX", &marker);
        assert_eq!(uids.len(), 1, "{user} got {} copies", uids.len());
        let msg = imap.fetch_message(uids[0]);
        assert!(
            msg.contains("From: =?UTF-8?B?"),
            "identity not applied: {msg}"
        );
        assert!(msg.contains("<alice@example.test>"), "{msg}");
        assert!(!msg.contains("Bcc:"), "Bcc leaked to {user}: {msg}");
        assert!(!msg.contains("spoofed@"), "{msg}");
        assert!(
            msg.contains(&format!("Message-ID: <{marker}@opush.test>")),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn authenticated_submission_and_bad_credentials() {
    require(POSTFIX_SUBMISSION);
    let marker = unique("smtp-submission");
    let mime = format!("To: load0043@load.test\r\nSubject: {marker}\r\n\r\nbody\r\n");
    let out = prepare(mime.as_bytes(), &alice(), &stamp(&marker), 10 << 20).expect("prepare");
    let sub = Submission {
        envelope_from: &out.envelope_from,
        recipients: &out.recipients,
        message: &out.message,
    };

    let password = demo_password();
    let bad = submit(
        &relay(1587),
        Some(&SmtpLogin {
            user: "alice@example.test",
            password: "wrong",
        }),
        &sub,
    )
    .await;
    assert!(matches!(bad, Err(SmtpError::Auth(_))), "{bad:?}");
    // Nothing may have been delivered by the refused attempt.
    let mut imap = RawImap::login("load0043@load.test");
    assert!(imap.search_subject("INBOX", &marker).is_empty());

    submit(
        &relay(1587),
        Some(&SmtpLogin {
            user: "alice@example.test",
            password: &password,
        }),
        &sub,
    )
    .await
    .expect("submit with auth");
    assert_eq!(imap.wait_for_subject("INBOX", &marker).len(), 1);
}

/// SMTP AUTH with the passwords of the stack's utf8pw users (non-ASCII,
/// quotes, backslash, space, `%`, `:`) is accepted as is, and refused one
/// character off (so the bytes really are compared). Recipient: load0075.
#[tokio::test]
async fn special_passwords_authenticate_on_submission() {
    require(POSTFIX_SUBMISSION);
    let mut imap = RawImap::login("load0075@load.test");
    for (user, password) in SPECIAL_PASSWORD_USERS {
        let marker = unique("smtp-special-pw");
        let mime = format!("To: load0075@load.test\r\nSubject: {marker}\r\n\r\nbody\r\n");
        let sender = Sender {
            display_name: "Special".into(),
            address: user.into(),
        };
        let out = prepare(mime.as_bytes(), &sender, &stamp(&marker), 10 << 20).expect("prepare");
        let sub = Submission {
            envelope_from: &out.envelope_from,
            recipients: &out.recipients,
            message: &out.message,
        };
        let mut off: Vec<char> = password.chars().collect();
        let last = off.len() - 1;
        off[last] = if off[last] == 'x' { 'y' } else { 'x' };
        let off: String = off.into_iter().collect();
        let bad = submit(
            &relay(1587),
            Some(&SmtpLogin {
                user,
                password: &off,
            }),
            &sub,
        )
        .await;
        assert!(matches!(bad, Err(SmtpError::Auth(_))), "{user}: {bad:?}");
        submit(&relay(1587), Some(&SmtpLogin { user, password }), &sub)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}"));
        assert_eq!(imap.wait_for_subject("INBOX", &marker).len(), 1, "{user}");
    }
}

#[tokio::test]
async fn refused_recipient_sends_to_nobody() {
    require(POSTFIX_SMTP);
    let marker = unique("smtp-refused");
    let mime = format!(
        "To: load0044@load.test, someone@elsewhere.invalid\r\nSubject: {marker}\r\n\r\nbody\r\n"
    );
    let out = prepare(mime.as_bytes(), &alice(), &stamp(&marker), 10 << 20).expect("prepare");
    let res = submit(
        &relay(1025),
        None,
        &Submission {
            envelope_from: &out.envelope_from,
            recipients: &out.recipients,
            message: &out.message,
        },
    )
    .await;
    match res {
        Err(SmtpError::InvalidRecipients(refused)) => {
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert_eq!(refused[0].0, "someone@elsewhere.invalid");
        }
        other => panic!("expected InvalidRecipients, got {other:?}"),
    }
    // The valid recipient must not have received it either (all or nothing).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut imap = RawImap::login("load0044@load.test");
    assert!(
        imap.search_subject("INBOX", &marker).is_empty(),
        "partial delivery"
    );
}

/// A message to many refused recipients is refused for good, quickly: it
/// once asked the relay about every one of them until Postfix slowed down
/// and hung up ("421 too many errors"), which read as an outage (503 /
/// Status 111, the device retrying forever a message that can never go).
#[tokio::test]
async fn many_refused_recipients_are_refused_not_an_outage() {
    require(POSTFIX_SMTP);
    let marker = unique("smtp-many-refused");
    let to = (0..60)
        .map(|i| format!("u{i}@nowhere.invalid"))
        .collect::<Vec<_>>()
        .join(", ");
    let mime = format!("To: load1134@load.test, {to}\r\nSubject: {marker}\r\n\r\nbody\r\n");
    let out = prepare(mime.as_bytes(), &alice(), &stamp(&marker), 10 << 20).expect("prepare");
    let res = submit(
        &relay(1025),
        None,
        &Submission {
            envelope_from: &out.envelope_from,
            recipients: &out.recipients,
            message: &out.message,
        },
    )
    .await;
    match res {
        Err(SmtpError::InvalidRecipients(refused)) => {
            assert!(!refused.is_empty() && refused.len() <= 10, "{refused:?}");
            assert!(refused.iter().all(|(a, _)| a.ends_with("@nowhere.invalid")));
        }
        other => panic!("expected InvalidRecipients, got {other:?}"),
    }
    let mut imap = RawImap::login("load1134@load.test");
    assert!(imap.search_subject("INBOX", &marker).is_empty());
}

#[tokio::test]
async fn relay_outage_is_retryable() {
    // Nothing listens on this loopback port: an outage, not a refusal.
    let res = submit(
        &relay(1),
        None,
        &Submission {
            envelope_from: "alice@example.test",
            recipients: &["bob@example.test".into()],
            message: b"x",
        },
    )
    .await;
    match res {
        Err(e) => assert!(e.is_retryable(), "{e:?}"),
        Ok(a) => panic!("sent to a closed port: {a:?}"),
    }
}
