//! Passwords beyond the ASCII demo password, end to end over HTTP against
//! the real server, Dovecot and Postfix submission: the utf8pw* users of the
//! stack (non-ASCII, quotes, backslash, space, `%`, `:`) get through Basic
//! auth (IMAP LOGIN with a literal or an escaped quoted string), FolderSync,
//! Sync and SendMail (SMTP AUTH with the same password); a password that
//! differs in one character is refused although the right one is cached; a
//! Latin-1 Basic credential is read as Latin-1; an unusable header (not
//! base64, a NUL/CR/LF, non-ASCII header bytes) is a 401 with the reason in
//! the log, never a 500; and no password reaches the log.
//!
//! Reserved users: the utf8pw* users, and load0074 (SendMail recipient).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
mod http_support;

use std::sync::Arc;

use base64::Engine as _;
use http_support::*;
use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest, FolderSyncResponse};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::commands::sync::{
    ServerCommand, SyncCollectionRequest, SyncRequest, SyncResponse,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_server::http::HttpSettings;
use opush_tests::{require, unique, RawImap, POSTFIX_SUBMISSION, SPECIAL_PASSWORD_USERS};

const RCPT: &str = "load0074@load.test";
const V: ProtocolVersion = ProtocolVersion::V14_1;

/// A server with the EAS services, sending through Postfix submission with
/// the device user's own credentials (SMTP AUTH).
async fn server(dir: &tempfile::TempDir) -> TestServer {
    require(POSTFIX_SUBMISSION);
    let mut eas = eas_support::services(dir).await;
    eas.send.smtp.port = 1587;
    eas.send.smtp_auth = true;
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

/// The password with its last non-ASCII (or, if none, last `\`/`"`)
/// character replaced by the next code point: one character off.
fn one_off(password: &str) -> String {
    let mut chars: Vec<char> = password.chars().collect();
    let pos = chars
        .iter()
        .rposition(|c| !c.is_ascii())
        .or_else(|| chars.iter().rposition(|c| matches!(c, '\\' | '"')))
        .expect("a special character");
    chars[pos] = char::from_u32(chars[pos] as u32 + 1).unwrap();
    let wrong: String = chars.into_iter().collect();
    assert_ne!(wrong, password);
    wrong
}

/// `Authorization` of raw credential bytes (any encoding).
fn basic_bytes(bytes: &[u8]) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The ISO 8859-1 bytes of a Latin-1 representable text.
fn latin1(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 representable"))
        .collect()
}

async fn post(srv: &TestServer, auth: &str, user: &str, cmd: &str, body: &[u8]) -> Resp {
    let local = user.split('@').next().unwrap();
    let target = format!(
        "/Microsoft-Server-ActiveSync?Cmd={cmd}&User={local}&DeviceId=PW{local}&DeviceType=SP"
    );
    let headers = [
        ("Authorization", auth),
        ("MS-ASProtocolVersion", "14.1"),
        ("Content-Type", "application/vnd.ms-sync.wbxml"),
    ];
    request(srv.addr, "POST", &target, &headers, body).await
}

/// FolderSync from key 0: Status 1 and the INBOX's ServerId.
async fn folder_sync(srv: &TestServer, auth: &str, user: &str) -> String {
    let body = encode_to_vec(
        &FolderSyncRequest {
            sync_key: SyncKey("0".to_owned()),
        }
        .to_element(V),
    );
    let res = post(srv, auth, user, "FolderSync", &body).await;
    assert_eq!(res.status, 200, "{user}: {res:?}");
    let fs = FolderSyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap();
    assert_eq!(fs.status.code(), 1, "{user}: {fs:?}");
    fs.changes
        .iter()
        .flatten()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.0.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{user}: no INBOX in {fs:?}"))
}

/// A Sync of one collection: the collection's Status must be 1; returns
/// its new key and the subjects of the added messages.
async fn sync(
    srv: &TestServer,
    auth: &str,
    user: &str,
    id: &str,
    key: &str,
) -> (String, Vec<String>) {
    let req = SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(id.to_owned()),
            window_size: Some(5),
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    };
    let res = post(srv, auth, user, "Sync", &encode_to_vec(&req.to_element(V))).await;
    assert_eq!(res.status, 200, "{user}: {res:?}");
    let r = SyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap();
    let c = r
        .collections
        .iter()
        .find(|c| c.collection_id.0 == id)
        .unwrap_or_else(|| panic!("{user}: collection {id} in {r:?}"));
    assert_eq!(c.status.map(|s| s.code()), Some(1), "{user}: {r:?}");
    assert_ne!(c.sync_key.0, "0", "{user}: {r:?}");
    let subjects = c
        .commands
        .iter()
        .flatten()
        .filter_map(|cmd| match cmd {
            ServerCommand::Add {
                application_data: ApplicationData::Email(e),
                ..
            } => e.subject.clone(),
            _ => None,
        })
        .collect();
    (c.sync_key.0.clone(), subjects)
}

/// Asserts that no secret (nor its Basic header) is in the captured log.
fn assert_log_free_of(secrets: &[String]) {
    let logs = logs();
    assert!(
        logs.contains("REQUEST.TRIMMED"),
        "no request line captured:\n{logs}"
    );
    for s in secrets {
        assert!(!logs.contains(s.as_str()), "{s:?} found in the logs");
    }
}

#[tokio::test]
async fn special_passwords_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir).await;
    let mut rcpt = RawImap::login(RCPT);
    let mut secrets = Vec::new();
    for (user, password) in SPECIAL_PASSWORD_USERS {
        let good = basic(user, password);
        let wrong = one_off(password);
        let bad = basic(user, &wrong);
        assert_eq!(
            options_as(srv.addr, &good).await.status,
            200,
            "{user} refused: is the stack's users file up to date? (`scripts/stack up dovecot`)"
        );
        // One character off: refused, although the right password is cached.
        let res = options_as(srv.addr, &bad).await;
        assert_eq!(res.status, 401, "{user}: {res:?}");
        assert_eq!(options_as(srv.addr, &good).await.status, 200, "{user}");

        // The handlers reach the mailbox as the user with the same password.
        let inbox = folder_sync(&srv, &good, user).await;
        let (mut key, _) = sync(&srv, &good, user, &inbox, "0").await;
        let res = post(&srv, &bad, user, "FolderSync", b"").await;
        assert_eq!(res.status, 401, "{user}: {res:?}");

        // SendMail: SMTP AUTH with the same password on Postfix submission.
        let marker = unique("pw-send");
        let mime = format!("To: {RCPT}, {user}\r\nSubject: {marker}\r\n\r\nfrom {user}\r\n");
        let body = encode_to_vec(
            &SendMailRequest(ComposeRequest {
                client_id: Some(unique("cid")),
                mime: mime.into_bytes(),
                ..ComposeRequest::default()
            })
            .to_element(V),
        );
        let res = post(&srv, &good, user, "SendMail", &body).await;
        assert_eq!(res.status, 200, "{user}: {res:?}");
        assert!(res.body.is_empty(), "{user}: a ComposeMail status: {res:?}");
        assert_eq!(rcpt.wait_for_subject("INBOX", &marker).len(), 1, "{user}");
        // The copy to the user arrives in their INBOX and a Sync (a fetch
        // as the user) brings it.
        let mut seen = Vec::new();
        for _ in 0..40 {
            let (next, subjects) = sync(&srv, &good, user, &inbox, &key).await;
            key = next;
            seen.extend(subjects);
            if seen.contains(&marker) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert!(seen.contains(&marker), "{user}: {seen:?}");

        secrets.extend([password.to_owned(), wrong, good[6..].to_owned()]);
        secrets.push(bad[6..].to_owned());
    }
    // One entry per accepted password; the refused ones are not cached.
    assert_eq!(srv.app.auth.cache().len(), SPECIAL_PASSWORD_USERS.len());
    srv.stop().await;
    // The distinctive parts too, in case a log line cut a password.
    secrets.extend(
        [
            "Grüße",
            "100%",
            r#""quoted""#,
            "back:slash",
            "пароль",
            "密码",
        ]
        .map(str::to_owned),
    );
    assert_log_free_of(&secrets);
}

#[tokio::test]
async fn latin1_basic_credentials_are_read_as_latin1() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&dir).await;
    let (user, password) = SPECIAL_PASSWORD_USERS[0];
    let raw = latin1(&format!("{user}:{password}"));
    assert!(String::from_utf8(raw.clone()).is_err(), "not valid UTF-8");
    let good = basic_bytes(&raw);
    let res = options_as(srv.addr, &good).await;
    assert_eq!(res.status, 200, "{res:?}");
    // The same credentials as the UTF-8 form: one cache entry.
    assert_eq!(
        options_as(srv.addr, &basic(user, password)).await.status,
        200
    );
    assert_eq!(srv.app.auth.cache().len(), 1);
    let inbox = folder_sync(&srv, &good, user).await;
    let (key, _) = sync(&srv, &good, user, &inbox, "0").await;
    // A full Sync from there (fetches as the user).
    sync(&srv, &good, user, &inbox, &key).await;
    // One Latin-1 character off: refused.
    let bad = basic_bytes(&latin1(&format!("{user}:{}", one_off(password))));
    assert_eq!(options_as(srv.addr, &bad).await.status, 401);
    srv.stop().await;
    assert_log_free_of(&[password.to_owned(), good[6..].to_owned()]);
}

#[tokio::test]
async fn unusable_credentials_are_401_with_a_reason() {
    let srv = start(settings()).await;
    let (user, password) = SPECIAL_PASSWORD_USERS[2];
    let cases = [
        (
            "Basic %%%-not-base64".to_owned(),
            "not valid Basic credentials",
        ),
        (
            basic_bytes(format!("{user}:{password}\r\n").as_bytes()),
            "NUL, CR or LF",
        ),
        (
            basic_bytes(format!("{user}:{password}\0").as_bytes()),
            "NUL, CR or LF",
        ),
        (
            basic_bytes(format!("{user}:pass\nword").as_bytes()),
            "NUL, CR or LF",
        ),
        (
            basic_bytes(b"no-colon-at-all"),
            "not valid Basic credentials",
        ),
        // Raw UTF-8 in the header instead of base64.
        (format!("Basic {user}:{password}"), "not ASCII"),
    ];
    for (header, reason) in &cases {
        let res = options_as(srv.addr, header).await;
        assert_eq!(res.status, 401, "{header:?}: {res:?}");
        assert!(
            res.header("WWW-Authenticate").is_some(),
            "{header:?}: {res:?}"
        );
        assert!(logs().contains(reason), "no {reason:?} in the log");
    }
    // Nothing was cached and the server still answers.
    assert!(srv.app.auth.cache().is_empty());
    let res = options_as(srv.addr, &basic(user, password)).await;
    assert_eq!(res.status, 200, "{res:?}");
    srv.stop().await;
    assert_log_free_of(&[password.to_owned(), "пароль".to_owned()]);
}
