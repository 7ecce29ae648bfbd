//! 16.1 draft edits over HTTP against the stack's Dovecot, for drafts a
//! mail program left in Drafts (APPENDed over IMAP):
//!
//! - a signed draft (multipart/signed) whose flags and categories change
//!   is not touched (same UID, same bytes); once its body is edited it is
//!   the signed content alone, without a dangling signature, and it keeps
//!   the user's own From (a display name, the address in capitals);
//! - deleting the first of two text attachments leaves the body the body,
//!   for another device too (mail-parser would take the second file, now
//!   first in its multipart, for the body);
//! - a draft with a message straight inside a message (which makes
//!   mail-parser 0.11 panic in a debug build) syncs from its header, and
//!   an edit of it is refused with a Change status: never a panic or 500.
//!
//! Reserved Dovecot users: load0070 (signed), load0077 (text attachments),
//! load0078 (message in message).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{CommandResponse, ServerCommand, SyncResponse};
use opush_tests::eas::{EasClient, HttpResponse};
use opush_tests::{unique, RawImap};
use support::*;

const V: &str = "16.1";

/// `user`'s Drafts holding only `message` (its lines joined with CRLF),
/// and the IMAP connection, Drafts selected.
fn drafts_with(user: &str, message: &[impl AsRef<str>]) -> RawImap {
    let mut imap = RawImap::login(user);
    imap.cmd("SELECT Drafts");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    let msg = message
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join("\r\n");
    let (_, ok) = imap.cmd(&format!(
        "APPEND Drafts (\\Draft) {{{}+}}\r\n{msg}",
        msg.len()
    ));
    assert!(ok.starts_with("OK"), "append: {ok}");
    imap.cmd("SELECT Drafts");
    imap
}

/// FolderSync, then Drafts synced to its end: its CollectionId, the
/// SyncKey and the one draft's ServerId and Email.
async fn the_draft(c: &mut EasClient) -> (String, String, String, Email) {
    let (drafts, key, commands) = synced_folder_of_type(c, V, 3).await;
    let (sid, email) = commands
        .iter()
        .find_map(|cmd| match cmd {
            ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Email(e),
            } => Some((server_id.0.clone(), (**e).clone())),
            _ => None,
        })
        .expect("the draft is synced");
    (drafts, key, sid, email)
}

/// Sends a Change of `sid` carrying `data` (ApplicationData's content);
/// the answer and the Change's status (1 when the answer has none).
async fn change(
    c: &mut EasClient,
    (drafts, key, sid): (&str, &str, &str),
    data: &str,
) -> (SyncResponse, u32, HttpResponse) {
    let commands = format!(
        "<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>{data}\
         </ApplicationData></Change></Commands>"
    );
    let res = c
        .post_xml("Sync", &sync_xml(drafts, key, 100, &commands))
        .await;
    let r = sync_response(&res, V);
    let col = &r.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    let status = col
        .responses
        .iter()
        .flatten()
        .find_map(|r| match r {
            CommandResponse::Change { status, .. } => Some(u32::from(status.code())),
            _ => None,
        })
        .unwrap_or(1);
    (r, status, res)
}

fn body_of(email: &Email) -> String {
    email
        .body
        .as_ref()
        .and_then(|b| b.data.clone())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// (name, number) of the attachments of a draft.
fn names(email: &Email) -> Vec<(String, String)> {
    listed(email)
        .into_iter()
        .map(|(name, number, _)| (name, number))
        .collect()
}

/// A draft of `user`'s, from them, a multipart/mixed of `parts` (each
/// part's lines: its header fields, an empty line, its content).
fn mixed_draft(user: &str, marker: &str, parts: &[&[&str]]) -> Vec<String> {
    let mut lines = vec![
        format!("From: {user}"),
        format!("Subject: {marker}"),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: multipart/mixed; boundary=\"b\"".to_owned(),
        String::new(),
    ];
    for part in parts {
        lines.push("--b".to_owned());
        lines.extend(part.iter().map(|l| (*l).to_owned()));
    }
    lines.extend(["--b--".to_owned(), String::new()]);
    lines
}

// RFC 8551 3.5.3 (multipart/signed), [MS-ASCMD] 2.2.3.24 Change.
#[tokio::test]
async fn a_signed_draft_keeps_its_bytes_for_flags_and_loses_its_signature_on_edit() {
    let user = "load0070@load.test";
    let marker = unique("draftsigned");
    let subject = format!("Subject: {marker}");
    let mut imap = drafts_with(
        user,
        &[
            "From: \"Load Seventy\" <LOAD0070@load.test>",
            "To: bob@example.test",
            &subject,
            "MIME-Version: 1.0",
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig\"",
            "",
            "--sig",
            "Content-Type: multipart/mixed; boundary=\"mix\"",
            "",
            "--mix",
            "Content-Type: text/plain; charset=utf-8",
            "",
            "Signed words",
            "--mix",
            "Content-Type: application/pdf; name=\"plan.pdf\"",
            "Content-Disposition: attachment; filename=\"plan.pdf\"",
            "Content-Transfer-Encoding: base64",
            "",
            "JVBERi0xLjQK",
            "--mix--",
            "--sig",
            "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"",
            "Content-Disposition: attachment; filename=\"smime.p7s\"",
            "Content-Transfer-Encoding: base64",
            "",
            "MIAGCSqGSIb3DQEHAqCAMIACAQEx",
            "--sig--",
            "",
        ],
    );
    let old = imap.search_subject("Drafts", &marker);
    assert_eq!(old.len(), 1);
    let old_bytes = imap.fetch_message(old[0]);

    let opush = start(Options::default()).await;
    let mut c = opush.client(user, "DRAFTSIGNED161", V);
    let (drafts, key, sid, email) = the_draft(&mut c).await;
    assert_eq!(
        email.message_class.as_deref(),
        Some("IPM.Note.SMIME.MultipartSigned")
    );
    assert_eq!(
        names(&email),
        [
            ("plan.pdf".into(), "0".into()),
            ("smime.p7s".into(), "1".into())
        ]
    );

    // Read and a category: the message stays as it was, flags aside.
    let (r, status, res) = change(
        &mut c,
        (&drafts, &key, &sid),
        "<email:Read>1</email:Read>\
         <email:Categories><email:Category>Blue</email:Category></email:Categories>",
    )
    .await;
    assert_eq!(status, 1, "{}", res.xml());
    let key = r.collections[0].sync_key.0.clone();
    assert_eq!(imap.search_subject("Drafts", &marker), old, "not replaced");
    assert_eq!(
        imap.fetch_message(old[0]),
        old_bytes,
        "not one byte changed"
    );
    let (flags, _) = imap.cmd(&format!("UID FETCH {} (FLAGS)", old[0]));
    let flags = flags.concat();
    assert!(
        flags.contains("\\Seen") && flags.contains("Blue"),
        "{flags}"
    );

    // A new body: the signed content alone, the user's own From kept.
    let (_, status, res) = change(
        &mut c,
        (&drafts, &key, &sid),
        "<airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>Edited words</airsyncbase:Data></airsyncbase:Body>",
    )
    .await;
    assert_eq!(status, 1, "{}", res.xml());
    let new = imap.search_subject("Drafts", &marker);
    assert_eq!(new.len(), 1);
    assert_ne!(new, old, "rebuilt");
    let text = imap.fetch_message(new[0]);
    for gone in [
        "multipart/signed",
        "pkcs7-signature",
        "smime.p7s",
        "Signed words",
    ] {
        assert!(!text.contains(gone), "{gone} in {text}");
    }
    assert!(
        text.contains("From: \"Load Seventy\" <LOAD0070@load.test>\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Edited words") && text.contains("plan.pdf"),
        "{text}"
    );

    let mut other = opush.client(user, "DRAFTSIGNED2", V);
    let (_, _, _, email) = the_draft(&mut other).await;
    assert_eq!(email.message_class.as_deref(), Some("IPM.Note"));
    assert_eq!(names(&email), [("plan.pdf".into(), "0".into())]);
    assert_eq!(body_of(&email), "Edited words");
    assert_eq!(
        email.from.as_deref(),
        Some("\"Load Seventy\" <LOAD0070@load.test>")
    );
    opush.stop().await;
}

// [MS-ASAIRS] 2.2.2.21 Attachments/Delete of a text attachment.
#[tokio::test]
async fn deleting_a_text_attachment_leaves_the_body_the_body() {
    let user = "load0077@load.test";
    let marker = unique("drafttextatt");
    let draft = mixed_draft(
        user,
        &marker,
        &[
            &[
                "Content-Type: text/plain; charset=utf-8",
                "Content-Disposition: attachment; filename=\"first.txt\"",
                "",
                "first file",
            ],
            &[
                "Content-Type: text/plain; charset=utf-8; name=\"second.txt\"",
                "Content-Disposition: inline; filename=\"second.txt\"",
                "",
                "second file",
            ],
            &[
                "Content-Type: text/plain; charset=utf-8",
                "",
                "the real body",
            ],
        ],
    );
    let mut imap = drafts_with(user, &draft);
    let opush = start(Options::default()).await;
    let mut c = opush.client(user, "DRAFTTEXTATT161", V);
    let (drafts, key, sid, email) = the_draft(&mut c).await;
    assert_eq!(body_of(&email), "the real body");
    assert_eq!(
        names(&email),
        [
            ("first.txt".into(), "0".into()),
            ("second.txt".into(), "1".into())
        ]
    );
    let (_, status, res) = change(
        &mut c,
        (&drafts, &key, &sid),
        &format!(
            "<airsyncbase:Attachments><airsyncbase:Delete>\
             <airsyncbase:FileReference>{sid}:0</airsyncbase:FileReference>\
             </airsyncbase:Delete></airsyncbase:Attachments>"
        ),
    )
    .await;
    assert_eq!(status, 1, "{}", res.xml());
    let new = imap.search_subject("Drafts", &marker);
    assert_eq!(new.len(), 1);
    assert!(!imap.fetch_message(new[0]).contains("first file"));

    let mut other = opush.client(user, "DRAFTTEXTATT2", V);
    let (_, _, _, email) = the_draft(&mut other).await;
    assert_eq!(body_of(&email), "the real body");
    assert_eq!(names(&email), [("second.txt".into(), "1".into())]);
    opush.stop().await;
}

// Bad input gives a status, never a panic: mail-parser 0.11 fails a debug
// assertion on a message/rfc822 whose content is another one.
#[tokio::test]
async fn a_message_straight_in_a_message_is_synced_and_its_edit_refused() {
    let user = "load0078@load.test";
    let marker = unique("draftmsgmsg");
    let draft = mixed_draft(
        user,
        &marker,
        &[
            &[
                "Content-Type: text/plain; charset=utf-8",
                "",
                "see the message",
            ],
            &[
                "Content-Type: message/rfc822",
                "",
                "From: carol@example.test",
                "Content-Type: message/rfc822",
                "",
                "From: dave@example.test",
                "Subject: deepest",
                "",
                "deep body",
            ],
        ],
    );
    let mut imap = drafts_with(user, &draft);
    let old = imap.search_subject("Drafts", &marker);
    let old_bytes = imap.fetch_message(old[0]);
    let opush = start(Options::default()).await;
    let mut c = opush.client(user, "DRAFTMSGMSG161", V);
    let (drafts, key, sid, email) = the_draft(&mut c).await;
    assert_eq!(email.subject.as_deref(), Some(marker.as_str()));

    let (_, status, res) = change(
        &mut c,
        (&drafts, &key, &sid),
        &format!("<email:Subject>{marker} v2</email:Subject>"),
    )
    .await;
    assert_ne!(status, 1, "the edit is refused: {}", res.xml());
    assert_eq!(imap.search_subject("Drafts", &marker), old);
    assert_eq!(imap.fetch_message(old[0]), old_bytes, "the draft as it was");
    opush.stop().await;
}
