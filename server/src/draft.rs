//! 16.x drafts ([MS-ASEMAIL] 2.2.2 and [MS-ASCMD] 2.2.3.24 `Change`): the
//! message a device adds to Drafts, and the edit of one it holds.
//!
//! IMAP messages are immutable, so an edit is a replacement: the edited
//! message is APPENDed (`\Draft`, the old flags kept) and the old one
//! expunged; the engine moves the device's ServerId onto the new UID
//! (`EffectOutcome::Replaced`), so the device never sees a Delete + Add for
//! its own edit. A retried Sync (same SyncKey) is answered from the record
//! and never replaces twice. The message building is pure; only
//! [`replace_draft`] (and [`attachment_refs`], for the answer) talk to IMAP.
//!
//! Attachments ([MS-ASAIRS] 2.2.2.2 `Add`, 2.2.2.21 `Delete`, 16.0+): an
//! Add or Change may carry `Attachments/Add` (content, name, type, inline
//! ContentId) and, for a Change, `Attachments/Delete` by FileReference. The
//! rebuilt message keeps the old attachments that are not deleted, in
//! order, then the added ones; the answer gives each added attachment's
//! ClientId with its FileReference (`<ServerId>:<number>`). Each attachment
//! part carries its number (`X-Opush-Attachment`) and the draft the next one
//! to hand out (`X-Opush-Next-Attachment`): deleting an attachment leaves the
//! others' references true, and no number is ever reused, so a reference
//! the device still holds never names another attachment. A draft larger
//! than `[imap] max_message_bytes` once rebuilt is refused (the device's command
//! fails; nothing is written).

use std::borrow::Cow;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mail_parser::MessageParser;
use std::collections::HashMap;

use opush_engine::{EffectOutcome, ReplyKind};
use opush_protocol::commands::airsyncbase::{Attachment, AttachmentAdd};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{ClientCommand, SyncCollectionRequest};

use crate::backends::imap::{Flag, PooledSession};
use crate::commands::sync::observed;
use crate::email::{
    attachment_numbers, next_attachment_number, ATTACHMENT_NUMBER, NEXT_ATTACHMENT_NUMBER,
};

/// Whether a Change of a Drafts item edits the draft itself (recipients,
/// subject or body) rather than only its flags.
pub fn edits_content(change: &Email) -> bool {
    change.to.is_some()
        || change.cc.is_some()
        || change.subject.is_some()
        || change.body.as_ref().is_some_and(|b| b.data.is_some())
        || !change.attachments_add.is_empty()
        || !change.attachments_delete.is_empty()
}

/// The RFC 5322 form of a draft the device added: From the user, its To,
/// Cc, Subject and body (HTML when the device sent Type 2).
pub fn new_draft(from: &str, email: &Email) -> Vec<u8> {
    edited_draft(from, b"", email, "")
}

/// The edited draft: what the device's Change carries, the rest (To, Cc,
/// Subject, body, threading headers, attachments) kept from `old`.
/// `server_id` is the draft's ServerId: a deleted FileReference names an
/// attachment of this item (`<server_id>:<index>`); others are ignored.
pub fn edited_draft(from: &str, old: &[u8], change: &Email, server_id: &str) -> Vec<u8> {
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
    let deleted: Vec<u32> = change
        .attachments_delete
        .iter()
        .filter_map(|f| crate::email::FileReference::parse(f))
        .filter(|f| f.server_id == server_id)
        .map(|f| f.index)
        .collect();
    // Every attachment keeps its number (the FileReference the device
    // holds); added ones get numbers never used before in this draft.
    let mut attachments: Vec<MimePart<'_>> = parsed
        .as_ref()
        .map(|m| {
            m.attachments()
                .zip(attachment_numbers(m))
                .filter(|(_, n)| !deleted.contains(n))
                .filter_map(|(part, n)| {
                    crate::reply::attachment(part)
                        .map(|p| p.header(ATTACHMENT_NUMBER, Raw::new(n.to_string())))
                })
                .collect()
        })
        .unwrap_or_default();
    let next = parsed.as_ref().map_or(0, next_attachment_number);
    let mut after = next;
    for add in &change.attachments_add {
        attachments.push(added_part(add).header(ATTACHMENT_NUMBER, Raw::new(after.to_string())));
        after = after.saturating_add(1);
    }
    builder = builder.header(NEXT_ATTACHMENT_NUMBER, Raw::new(after.to_string()));
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

/// The MIME part of an attachment the device added.
fn added_part(add: &AttachmentAdd) -> MimePart<'_> {
    let mime = add
        .content_type
        .as_deref()
        .filter(|t| t.contains('/') && !t.contains(['\r', '\n']))
        .unwrap_or("application/octet-stream");
    let part = MimePart::new(
        ContentType::new(mime),
        BodyPart::Binary(Cow::Borrowed(&add.content)),
    );
    let cid = add.content_id.as_deref().filter(|c| !c.is_empty());
    match (add.is_inline == Some(true), cid) {
        (true, Some(cid)) => part.inline().cid(cid.trim_matches(['<', '>']).to_owned()),
        _ => {
            let name = add
                .display_name
                .as_deref()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or("attachment");
            part.attachment(name.to_owned())
        }
    }
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
    (uid, server_id): (u32, &str),
    from: &str,
    change: &Email,
) -> EffectOutcome {
    let limit = imap.config().max_message_bytes;
    let old = match imap.fetch_message(raw, uid, limit).await {
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
    let message = edited_draft(from, &old, change, server_id);
    if message.len() as u64 > imap.config().max_message_bytes {
        tracing::warn!(target: "MAIL.DATA", folder = raw, uid, bytes = message.len(), "edited draft too large, not replaced");
        return EffectOutcome::Failed;
    }
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

/// The drafts of one collection's answer whose Add or Change (status 1)
/// added attachments: their ServerId number → (UID now, the device's
/// Email), for [`attachment_refs`].
pub type AddedAttachments<'r> = HashMap<u32, (u32, &'r Email)>;

/// [`AddedAttachments`] of `r`, the engine's answer to `wire`, with the
/// item UIDs from `state` (after the decision).
pub fn added_attachments<'r>(
    wire: &'r SyncCollectionRequest,
    state: &opush_engine::DeviceState,
    r: &opush_engine::SyncResponse,
) -> AddedAttachments<'r> {
    let mut out = HashMap::new();
    let Some(col) = state.collections.get(&r.collection) else {
        return out;
    };
    for reply in r.replies.iter().filter(|reply| reply.status == 1) {
        let Some(s) = reply.server_id else { continue };
        let email = wire
            .commands
            .iter()
            .flatten()
            .find_map(|c| match (c, reply.kind) {
                (
                    ClientCommand::Add {
                        client_id,
                        application_data: ApplicationData::Email(e),
                        ..
                    },
                    ReplyKind::Add,
                ) if reply
                    .client_id
                    .as_ref()
                    .is_some_and(|id| id.0 == client_id.0) =>
                {
                    Some(e)
                }
                (
                    ClientCommand::Change {
                        server_id,
                        application_data: ApplicationData::Email(e),
                        ..
                    },
                    ReplyKind::Change,
                ) if opush_engine::ServerId::parse(&server_id.0) == Some(s) => Some(e),
                _ => None,
            });
        let Some(email) = email.filter(|e| !e.attachments_add.is_empty()) else {
            continue;
        };
        let uid = col
            .by_n
            .get(&s.n)
            .and_then(crate::commands::sync::uid_of)
            .map(|(_, uid)| uid);
        if let Some(uid) = uid {
            out.insert(s.n, (uid, email.as_ref()));
        }
    }
    out
}

/// The answer's `ApplicationData` for a draft whose Add or Change added
/// attachments: each added attachment's ClientId with its FileReference.
/// The added attachments are the last ones of the stored message (`uid`),
/// so their numbers are read from the message as it is now; a retried
/// request reads the same message and gets the same answer. `None` when
/// nothing was added or the message cannot be read.
pub async fn attachment_refs(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
    server_id: &str,
    change: &Email,
) -> Option<ApplicationData> {
    if change.attachments_add.is_empty() {
        return None;
    }
    let limit = imap.config().max_message_bytes;
    let bytes = imap.fetch_message(raw, uid, limit).await.ok()?;
    let numbers = attachment_numbers(&MessageParser::default().parse(&bytes)?);
    let first = numbers.len().checked_sub(change.attachments_add.len())?;
    let attachments = change
        .attachments_add
        .iter()
        .zip(&numbers[first..])
        .map(|(add, number)| Attachment {
            client_id: Some(add.client_id.clone()),
            file_reference: Some(
                crate::email::FileReference {
                    server_id: server_id.to_owned(),
                    index: *number,
                }
                .to_string(),
            ),
            ..Attachment::default()
        })
        .collect();
    Some(ApplicationData::Email(Box::new(Email {
        attachments,
        ..Email::default()
    })))
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
        let out = edited_draft("alice@example.test", OLD, &change, "5:1");
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
        let out = edited_draft("alice@example.test", OLD, &change, "5:1");
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

    fn add(client_id: &str, name: &str, content: &[u8]) -> AttachmentAdd {
        AttachmentAdd {
            client_id: client_id.to_owned(),
            content: content.to_vec(),
            display_name: Some(name.to_owned()),
            content_type: Some("application/octet-stream".to_owned()),
            method: Some(1),
            ..AttachmentAdd::default()
        }
    }

    // [MS-ASAIRS] 2.2.2.2 Add, 2.2.2.21 Delete: kept attachments stay in
    // order, deleted ones (by this item's FileReference) go, added ones come last.
    #[test]
    fn attachments_are_added_after_the_kept_ones_and_deleted_by_reference() {
        let change = Email {
            attachments_add: vec![add("c1", "notes.txt", b"hello notes")],
            attachments_delete: vec!["9:9:0".to_owned()],
            ..Email::default()
        };
        assert!(edits_content(&change));
        let out = edited_draft("alice@example.test", OLD, &change, "5:1");
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            m.attachment_count(),
            2,
            "another item's reference deletes nothing"
        );
        assert_eq!(m.attachment(0).unwrap().attachment_name(), Some("plan.pdf"));
        assert_eq!(
            m.attachment(1).unwrap().attachment_name(),
            Some("notes.txt")
        );
        assert_eq!(m.attachment(1).unwrap().contents(), b"hello notes");
        assert_eq!(m.subject(), Some("Plans"), "the rest is kept");

        let delete = Email {
            attachments_delete: vec!["5:1:0".to_owned()],
            ..Email::default()
        };
        let out = edited_draft("alice@example.test", OLD, &delete, "5:1");
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.attachment_count(), 0);
        assert_eq!(m.body_text(0).unwrap().trim(), "First draft");
    }

    /// The FileReference numbers of `raw`'s attachments, by name.
    fn numbered(raw: &[u8]) -> Vec<(u32, String)> {
        let email = crate::email::to_email(
            raw,
            &crate::email::MessageInfo {
                server_id: "5:1".to_owned(),
                internal_date: 0,
                seen: false,
                flagged: false,
                keywords: Vec::new(),
            },
            &[],
            opush_protocol::version::ProtocolVersion::V16_1,
        );
        email
            .attachments
            .iter()
            .map(|a| {
                let r = crate::email::FileReference::parse(a.file_reference.as_deref().unwrap());
                (r.unwrap().index, a.display_name.clone().unwrap())
            })
            .collect()
    }

    // A deleted attachment must not shift the others: the device still
    // holds their FileReferences, and a later Delete or Fetch by them must
    // name the same attachment. Numbers are never reused.
    #[test]
    fn references_stay_true_when_an_earlier_attachment_is_deleted() {
        let three = Email {
            attachments_add: vec![
                add("c0", "a.txt", b"alpha"),
                add("c1", "b.txt", b"bravo"),
                add("c2", "c.txt", b"charlie"),
            ],
            ..Email::default()
        };
        let v1 = new_draft("alice@example.test", &three);
        assert_eq!(
            numbered(&v1),
            vec![
                (0, "a.txt".into()),
                (1, "b.txt".into()),
                (2, "c.txt".into())
            ]
        );
        let drop_first = Email {
            attachments_delete: vec!["5:1:0".to_owned()],
            ..Email::default()
        };
        let v2 = edited_draft("alice@example.test", &v1, &drop_first, "5:1");
        assert_eq!(
            numbered(&v2),
            vec![(1, "b.txt".into()), (2, "c.txt".into())]
        );
        assert_eq!(
            crate::email::attachment_content(&v2, 2).unwrap().data,
            b"charlie"
        );
        assert!(
            crate::email::attachment_content(&v2, 0).is_none(),
            "deleted"
        );
        // The last one deleted, then one added: it does not take number 2.
        let swap = Email {
            attachments_delete: vec!["5:1:2".to_owned()],
            attachments_add: vec![add("c3", "d.txt", b"delta")],
            ..Email::default()
        };
        let v3 = edited_draft("alice@example.test", &v2, &swap, "5:1");
        assert_eq!(
            numbered(&v3),
            vec![(1, "b.txt".into()), (3, "d.txt".into())]
        );
        assert!(crate::email::attachment_content(&v3, 2).is_none());
        assert_eq!(
            crate::email::attachment_content(&v3, 1).unwrap().data,
            b"bravo"
        );
        // A stale reference to a deleted attachment deletes nothing else.
        let stale = Email {
            attachments_delete: vec!["5:1:0".to_owned(), "5:1:2".to_owned()],
            ..Email::default()
        };
        let v4 = edited_draft("alice@example.test", &v3, &stale, "5:1");
        assert_eq!(numbered(&v4), numbered(&v3));
    }

    #[test]
    fn a_new_draft_carries_inline_and_attached_parts() {
        let mut inline = add("c2", "logo.png", &[0x89, b'P', b'N', b'G']);
        inline.content_type = Some("image/png".to_owned());
        inline.is_inline = Some(true);
        inline.content_id = Some("<logo@device>".to_owned());
        let email = Email {
            subject: Some("With files".to_owned()),
            attachments_add: vec![add("c1", "a.bin", &[0, 1, 2, 255]), inline],
            ..Email::default()
        };
        let out = new_draft("alice@example.test", &email);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.attachment_count(), 2);
        assert_eq!(m.attachment(0).unwrap().contents(), &[0, 1, 2, 255]);
        let png = m.attachment(1).unwrap();
        assert_eq!(png.content_id(), Some("logo@device"));
        assert_eq!(png.contents(), &[0x89, b'P', b'N', b'G']);
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
