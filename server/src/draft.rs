//! 16.x drafts ([MS-ASEMAIL] 2.2.2 and [MS-ASCMD] 2.2.3.24 `Change`): the
//! message a device adds to Drafts, and the edit of one it holds.
//!
//! IMAP messages are immutable, so an edit is a replacement: the edited
//! message is APPENDed (`\Draft`, the old flags kept) and the old one
//! expunged; the engine moves the device's ServerId onto the new UID
//! (`EffectOutcome::Replaced`), so the device never sees a Delete + Add for
//! its own edit. A retried Sync (same SyncKey) is answered from the record
//! and never replaces twice. The message building is pure; only
//! [`replace_draft`] talks to IMAP.

use std::borrow::Cow;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mail_parser::MessageParser;
use opush_engine::EffectOutcome;
use opush_protocol::commands::items::Email;

use crate::backends::imap::{Flag, PooledSession};
use crate::commands::sync::{observed, MAX_MESSAGE_BYTES};

/// Whether a Change of a Drafts item edits the draft itself (recipients,
/// subject or body) rather than only its flags.
pub fn edits_content(change: &Email) -> bool {
    change.to.is_some()
        || change.cc.is_some()
        || change.subject.is_some()
        || change.body.as_ref().is_some_and(|b| b.data.is_some())
}

/// The RFC 5322 form of a draft the device added: From the user, its To,
/// Cc, Subject and body (HTML when the device sent Type 2).
pub fn new_draft(from: &str, email: &Email) -> Vec<u8> {
    edited_draft(from, b"", email)
}

/// The edited draft: what the device's Change carries, the rest (To, Cc,
/// Subject, body, threading headers, attachments) kept from `old`.
pub fn edited_draft(from: &str, old: &[u8], change: &Email) -> Vec<u8> {
    let parsed = if old.is_empty() {
        None
    } else {
        MessageParser::default().parse(old)
    };
    let old_raw = |name: &str| {
        parsed
            .as_ref()
            .and_then(|m| m.header_raw(name))
            .map(|v| v.trim().to_owned())
    };
    let mut builder = MessageBuilder::new().from(from);
    let to = change.to.clone().or_else(|| old_raw("To"));
    if let Some(to) = to.filter(|t| !t.trim().is_empty()) {
        builder = builder.header("To", Raw::new(to));
    }
    let cc = change.cc.clone().or_else(|| old_raw("Cc"));
    if let Some(cc) = cc.filter(|t| !t.trim().is_empty()) {
        builder = builder.header("Cc", Raw::new(cc));
    }
    for name in ["In-Reply-To", "References"] {
        if let Some(v) = old_raw(name).filter(|v| !v.is_empty()) {
            builder = builder.header(name, Raw::new(v));
        }
    }
    let subject = change
        .subject
        .clone()
        .or_else(|| parsed.as_ref().and_then(|m| m.subject().map(str::to_owned)));
    if let Some(subject) = subject {
        builder = builder.subject(subject);
    }
    let body = match change.body.as_ref().and_then(|b| b.data.clone()) {
        Some(text) if change.body.as_ref().is_some_and(|b| b.body_type == 2) => {
            MimePart::new(utf8("text/html"), BodyPart::Text(text.into()))
        }
        Some(text) => MimePart::new(utf8("text/plain"), BodyPart::Text(text.into())),
        None => old_body(parsed.as_ref()),
    };
    let attachments: Vec<MimePart<'_>> = parsed
        .as_ref()
        .map(|m| {
            m.attachments()
                .filter_map(crate::reply::attachment)
                .collect()
        })
        .unwrap_or_default();
    builder = if attachments.is_empty() {
        builder.body(body)
    } else {
        let mut parts = Vec::with_capacity(attachments.len() + 1);
        parts.push(body);
        parts.extend(attachments);
        builder.body(MimePart::new("multipart/mixed", parts))
    };
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = builder.write_to(&mut out);
    out
}

fn utf8(mime: &str) -> ContentType<'_> {
    ContentType::new(mime).attribute("charset", "utf-8")
}

/// The old draft's body: its HTML when it has one, else its text.
fn old_body<'a>(old: Option<&'a mail_parser::Message<'a>>) -> MimePart<'a> {
    let html = old.and_then(|m| {
        (m.html_body_count() > 0 && m.html_part(0).is_some_and(|p| p.is_text_html()))
            .then(|| m.body_html(0))
            .flatten()
    });
    match html {
        Some(h) => MimePart::new(utf8("text/html"), BodyPart::Text(h)),
        None => {
            let text = old
                .and_then(|m| m.body_text(0))
                .unwrap_or(Cow::Borrowed(""));
            MimePart::new(utf8("text/plain"), BodyPart::Text(text))
        }
    }
}

/// Replaces draft `uid` of `raw` by its edit: APPEND the new message with
/// the old flags (plus the Change's Read), expunge the old one. Any failure
/// before the APPEND leaves the old draft as it was (`Failed`); a failed
/// expunge after it is logged (the old draft comes back as a new item).
pub async fn replace_draft(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
    from: &str,
    change: &Email,
) -> EffectOutcome {
    let old = match imap.fetch_message(raw, uid, MAX_MESSAGE_BYTES).await {
        Ok(b) => b,
        Err(_) => return EffectOutcome::Failed,
    };
    let Ok(metas) = imap.fetch_meta(raw, &[uid]).await else {
        return EffectOutcome::Failed;
    };
    let old_flags = metas.first().map(|m| m.flags.clone()).unwrap_or_default();
    let mut flags = vec![Flag::Draft];
    if change.read.unwrap_or(old_flags.seen) {
        flags.push(Flag::Seen);
    }
    let flagged = match &change.flag {
        Some(f) => f.status == Some(2),
        None => old_flags.flagged,
    };
    if flagged {
        flags.push(Flag::Flagged);
    }
    let keywords = change
        .categories
        .clone()
        .unwrap_or_else(|| old_flags.keywords.clone());
    flags.extend(keywords.into_iter().map(Flag::Keyword));
    let message = edited_draft(from, &old, change);
    let new_uid = match imap.append(raw, &flags, None, &message).await {
        Ok(Some(u)) => u,
        _ => return EffectOutcome::Failed,
    };
    if let Err(e) = imap.expunge(raw, &[uid]).await {
        tracing::warn!(target: "MAIL.DATA", folder = raw, uid, error = %e, "edited draft: the old message stays");
    }
    let Ok(mailbox) = imap.select(raw).await else {
        return EffectOutcome::Failed;
    };
    match imap.fetch_meta(raw, &[new_uid]).await {
        Ok(metas) => match metas.first() {
            Some(m) => EffectOutcome::Replaced(observed(mailbox.uidvalidity, m)),
            None => EffectOutcome::Failed,
        },
        Err(_) => EffectOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};
    use opush_protocol::commands::airsyncbase::Body;

    const OLD: &[u8] = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: Plans\r\nIn-Reply-To: <root@example.test>\r\nReferences: <root@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nFirst draft\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n--b1--\r\n";

    #[test]
    fn an_edit_keeps_what_it_does_not_change() {
        let change = Email {
            subject: Some("Plans, v2".to_owned()),
            body: Some(Body {
                body_type: 1,
                data: Some("Second draft".to_owned()),
                ..Body::default()
            }),
            ..Email::default()
        };
        let out = edited_draft("alice@example.test", OLD, &change);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.subject(), Some("Plans, v2"));
        assert_eq!(m.body_text(0).unwrap().trim(), "Second draft");
        assert_eq!(m.header_raw("To").map(str::trim), Some("bob@example.test"));
        assert_eq!(
            m.header_raw("In-Reply-To").map(str::trim),
            Some("<root@example.test>")
        );
        assert_eq!(m.attachment_count(), 1);
        assert_eq!(m.attachment(0).unwrap().attachment_name(), Some("plan.pdf"));
    }

    #[test]
    fn recipients_can_change_and_flags_only_changes_are_not_edits() {
        let change = Email {
            to: Some("carol@example.test".to_owned()),
            ..Email::default()
        };
        assert!(edits_content(&change));
        let out = edited_draft("alice@example.test", OLD, &change);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            m.header_raw("To").map(str::trim),
            Some("carol@example.test")
        );
        assert_eq!(m.subject(), Some("Plans"));
        assert_eq!(m.body_text(0).unwrap().trim(), "First draft");
        let read_only = Email {
            read: Some(true),
            ..Email::default()
        };
        assert!(!edits_content(&read_only));
    }

    #[test]
    fn a_new_draft_has_the_device_fields() {
        let email = Email {
            to: Some("bob@example.test".to_owned()),
            subject: Some("Hello".to_owned()),
            body: Some(Body {
                body_type: 2,
                data: Some("<p>Hi</p>".to_owned()),
                ..Body::default()
            }),
            ..Email::default()
        };
        let out = new_draft("alice@example.test", &email);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.subject(), Some("Hello"));
        assert!(m.body_html(0).unwrap().contains("<p>Hi</p>"));
    }
}
