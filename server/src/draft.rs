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
//! rebuilt message is the old MIME tree written again (`OldTree`): every
//! part the edit does not replace or delete is kept where it was, a leaf
//! byte for byte (inline images in their multipart/related, a forwarded
//! message, a multipart attached as a whole), and the added attachments
//! come last; the answer gives each added attachment's ClientId with its
//! FileReference (`<ServerId>:<number>`). Each attachment part carries its
//! number (`X-Opush-Attachment`) and the draft the next one to hand out
//! (`X-Opush-Next-Attachment`): deleting an attachment leaves the others'
//! references true, and no number is ever reused, so a reference the
//! device still holds never names another attachment. A draft larger than
//! `[imap] max_message_bytes` once rebuilt is refused, and so is one that
//! is no message at all (the device's command fails; nothing is written).

use std::borrow::Cow;

use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mail_parser::{MimeHeaders, PartType};
use std::collections::HashMap;

use opush_engine::{EffectOutcome, ReplyKind};
use opush_protocol::commands::airsyncbase::{Attachment, AttachmentAdd};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{ClientCommand, SyncCollectionRequest};

use crate::backends::imap::{Flag, PooledSession};
use crate::commands::compose::SendSettings;
use crate::commands::sync::observed;
use crate::email::parts::{
    head_and_content, header_fields, is_content_header, part_bytes, split_field,
};
use crate::email::{
    attachment_numbers, is_signed, next_attachment_number, numbers_of, Shown, ATTACHMENT_NUMBER,
    NEXT_ATTACHMENT_NUMBER,
};
use crate::outgoing::{format_mailbox, Sender};

/// Whether a Change of a Drafts item edits the draft itself (sender,
/// recipients, subject, body or attachments) rather than only its flags.
pub fn edits_content(change: &Email) -> bool {
    change.from.is_some()
        || change.sender.is_some()
        || change.to.is_some()
        || change.cc.is_some()
        || change.subject.is_some()
        || change.body.as_ref().is_some_and(|b| b.data.is_some())
        || !change.attachments_add.is_empty()
        || !change.attachments_delete.is_empty()
}

/// Who writes the user's drafts: the identity a draft is from when
/// neither the device nor the draft names one of the user's addresses,
/// and those addresses (the ones Settings UserInformation reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The user's identity (`[identity]`), the From of last resort.
    pub sender: Sender,
    /// Every address of the user, compared without regard to case.
    pub addresses: Vec<String>,
}

impl Author {
    /// The author of `user`'s drafts under `send`'s identities.
    pub fn of(send: &SendSettings, user: &str) -> Author {
        Author {
            sender: send.sender(user),
            addresses: send.addresses(user),
        }
    }

    /// Whether `addr` names the user and no one else (every address of a
    /// list or group is one of the user's).
    fn owns(&self, addr: Option<&mail_parser::Address<'_>>) -> bool {
        let mut all = addr.into_iter().flat_map(|a| a.iter()).peekable();
        all.peek().is_some()
            && all.all(|a| {
                a.address.as_deref().is_some_and(|a| {
                    self.addresses
                        .iter()
                        .any(|mine| mine.eq_ignore_ascii_case(a.trim()))
                })
            })
    }
}

/// The RFC 5322 form of a draft the device added: From the user (or what
/// the device sent), its To, Cc, Subject and body (HTML when the device
/// sent Type 2), and `message_id` (without angle brackets; see
/// [`new_draft_id`]).
pub fn new_draft(author: &Author, email: &Email, message_id: &str) -> Vec<u8> {
    rebuild(author, None, email, "", Some(message_id))
}

/// The Message-ID of the draft a device adds with `client_id` and the
/// Add's content digest: the same on every try of that Add (a digest of
/// user, device, ClientId and content), so a retried Add whose APPEND was
/// made when opush was killed, before the Add was recorded, finds that
/// draft by its Message-ID instead of saving a second one
/// (`commands::sync`). The content is in it because a device may use a
/// ClientId again once opush no longer remembers it (after a resync): a
/// new draft must then not be taken for the old one and dropped.
pub fn new_draft_id(
    user: &str,
    device_id: &str,
    client_id: &str,
    content: &[u8],
    host: &str,
) -> String {
    let mut h = blake3::Hasher::new();
    for part in [
        b"draft".as_slice(),
        user.as_bytes(),
        device_id.as_bytes(),
        client_id.as_bytes(),
        content,
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let hex = h.finalize().to_hex();
    format!("d.{}@{host}", &hex[..32])
}

/// The edited draft: what the device's Change carries, the rest (To, Cc,
/// Subject, body, the other header fields, every part) kept from `old`.
/// `server_id` is the draft's ServerId: a deleted FileReference names an
/// attachment of this item (`<server_id>:<index>`); others are ignored.
/// `None` when `old` is not empty but not a message either (not one
/// header field): rebuilt from the Change alone, its content would be lost;
/// `None` too when it has a message straight in a message, a tree
/// mail-parser cannot read (`email::shape`): rebuilt, parts would be lost.
pub fn edited_draft(
    author: &Author,
    old: &[u8],
    change: &Email,
    server_id: &str,
) -> Option<Vec<u8>> {
    edited_draft_as(author, old, change, server_id, None)
}

/// [`edited_draft`] with this Message-ID (else a new random one).
fn edited_draft_as(
    author: &Author,
    old: &[u8],
    change: &Email,
    server_id: &str,
    message_id: Option<&str>,
) -> Option<Vec<u8>> {
    if old.is_empty() {
        return Some(rebuild(author, None, change, server_id, message_id));
    }
    let parsed = crate::email::parse_whole(old)?;
    Some(rebuild(
        author,
        Some(&parsed),
        change,
        server_id,
        message_id,
    ))
}

/// The Message-ID of a draft edit: the same on every try of that Change
/// (a digest of user, device, the draft's ServerId and the Change's content
/// digest), so a retried Change whose APPEND was made when opush was
/// killed finds that message instead of saving a second one.
pub fn edited_draft_id(
    user: &str,
    device_id: &str,
    server_id: &str,
    change_digest: &[u8],
    host: &str,
) -> String {
    let mut h = blake3::Hasher::new();
    for part in [
        b"edit".as_slice(),
        user.as_bytes(),
        device_id.as_bytes(),
        server_id.as_bytes(),
        change_digest,
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let hex = h.finalize().to_hex();
    format!("e.{}@{host}", &hex[..32])
}

/// [`new_draft`] (`parsed`: `None`) or [`edited_draft`].
fn rebuild(
    author: &Author,
    parsed: Option<&mail_parser::Message<'_>>,
    change: &Email,
    server_id: &str,
    message_id: Option<&str>,
) -> Vec<u8> {
    // The old draft's own header fields, unfolded.
    let old_fields: Vec<(&str, String)> = parsed
        .and_then(|m| {
            let root = m.parts.first()?;
            m.raw_message().get(..root.offset_body as usize)
        })
        .map(|head| header_fields(head).into_iter().map(split_field).collect())
        .unwrap_or_default();
    let old_raw = |name: &str| {
        old_fields
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    // From (and Sender): what the device sent, else the draft's own when
    // it names the user (an alias, a display name), else the user.
    let device = |v: &Option<String>| v.as_deref().map(unfolded).filter(|v| !v.trim().is_empty());
    let own = |name: &str, addr: Option<&mail_parser::Address<'_>>| {
        old_raw(name).filter(|v| !v.is_empty() && author.owns(addr))
    };
    let from = device(&change.from)
        .or_else(|| own("From", parsed.and_then(|m| m.from())))
        .unwrap_or_else(|| format_mailbox(&author.sender));
    let mut builder = MessageBuilder::new().header("From", Raw::new(from));
    if let Some(id) = message_id {
        builder = builder.message_id(id.to_owned());
    }
    let sender = device(&change.sender).or_else(|| own("Sender", parsed.and_then(|m| m.sender())));
    if let Some(sender) = sender {
        builder = builder.header("Sender", Raw::new(sender));
    }
    let to = change.to.clone().or_else(|| old_raw("To"));
    if let Some(to) = to.filter(|t| !t.trim().is_empty()) {
        builder = builder.header("To", Raw::new(unfolded(&to)));
    }
    let cc = change.cc.clone().or_else(|| old_raw("Cc"));
    if let Some(cc) = cc.filter(|t| !t.trim().is_empty()) {
        builder = builder.header("Cc", Raw::new(unfolded(&cc)));
    }
    // The rest of the old header (Bcc, Reply-To, threading, importance, a
    // mail program's own fields) is the draft's too; the edit writes
    // From, To, Cc, Subject, Date and Message-ID anew, and the content's.
    for (name, value) in &old_fields {
        let rebuilt =
            REBUILT_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) || is_content_header(name);
        if !rebuilt && !name.is_empty() && !value.is_empty() {
            builder = builder.header(name.to_string(), Raw::new(value.clone()));
        }
    }
    let subject = change
        .subject
        .clone()
        .or_else(|| parsed.and_then(|m| m.subject().map(str::to_owned)));
    if let Some(subject) = subject {
        builder = builder.subject(subject);
    }
    let new_body = change.body.as_ref().and_then(|b| {
        let text = b.data.clone()?;
        let html = b.body_type == 2;
        let mime = if html { "text/html" } else { "text/plain" };
        Some((MimePart::new(utf8(mime), BodyPart::Text(text.into())), html))
    });
    let deleted: Vec<u32> = change
        .attachments_delete
        .iter()
        .filter_map(|f| crate::email::FileReference::parse(f))
        .filter(|f| f.server_id == server_id)
        .map(|f| f.index)
        .collect();
    // The old draft's parts as they were, whatever their nesting, but for
    // the body the device replaced and the attachments it deleted; every
    // attachment keeps its number (the FileReference the device holds).
    let html = new_body.as_ref().map(|(_, html)| *html);
    let mut body = new_body.map(|(part, _)| part);
    let kept = parsed
        .as_ref()
        .and_then(|m| OldTree::new(m, &deleted, html).keep(0, true, &mut body));
    // A new body with no old one to take the place of goes first.
    let root = match (kept, body) {
        (Some(kept), None) => kept,
        (
            Some(Kept {
                mut part,
                mixed: true,
            }),
            Some(body),
        ) => {
            if let BodyPart::Multipart(children) = &mut part.contents {
                children.insert(0, body);
            }
            Kept { part, mixed: true }
        }
        (Some(Kept { part, .. }), Some(body)) => Kept {
            part: MimePart::new("multipart/mixed", vec![body, part]),
            mixed: true,
        },
        (None, body) => Kept {
            part: body
                .unwrap_or_else(|| MimePart::new(utf8("text/plain"), BodyPart::Text("".into()))),
            mixed: false,
        },
    };
    let next = parsed.map_or(0, next_attachment_number);
    let mut after = next;
    let mut added = Vec::with_capacity(change.attachments_add.len());
    for add in &change.attachments_add {
        added.push(added_part(add).header(ATTACHMENT_NUMBER, Raw::new(after.to_string())));
        after = after.saturating_add(1);
    }
    builder = builder.header(NEXT_ATTACHMENT_NUMBER, Raw::new(after.to_string()));
    // Added attachments come last: in the draft's multipart/mixed when it
    // is one, else in a new one around it.
    let body = match root {
        Kept { part, .. } if added.is_empty() => part,
        Kept {
            mut part,
            mixed: true,
        } => {
            if let BodyPart::Multipart(children) = &mut part.contents {
                children.extend(added);
            }
            part
        }
        Kept { part, .. } => {
            let mut parts = Vec::with_capacity(added.len() + 1);
            parts.push(part);
            parts.extend(added);
            MimePart::new("multipart/mixed", parts)
        }
    };
    builder = builder.body(body);
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

/// The draft's header fields an edit writes anew rather than copies (with
/// the `Content-*` ones, which go with the content).
const REBUILT_HEADERS: [&str; 9] = [
    "From",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    NEXT_ATTACHMENT_NUMBER,
];

/// A header value on one line: a device's To or Cc may carry line breaks,
/// which the header writer would fold again into an empty line.
fn unfolded(value: &str) -> String {
    value.replace(['\r', '\n'], "")
}

/// A part of the rebuilt draft, and whether it is a multipart/mixed (where
/// a body or attachments can be added).
struct Kept<'x> {
    part: MimePart<'x>,
    mixed: bool,
}

/// The old draft's MIME tree, read to be written again: which part the
/// device's new body replaces, which it makes stale, which attachments go
/// and the number each kept one carries.
struct OldTree<'m> {
    msg: &'m mail_parser::Message<'m>,
    /// Part id → the attachment's number ([`attachment_numbers`]).
    numbers: HashMap<u32, u32>,
    /// Part ids of the attachments the device deleted.
    deleted: Vec<u32>,
    /// The body part the device's new body takes the place of.
    replaced: Option<u32>,
    /// The other form of the body the device saw (the HTML of a new plain
    /// text body, or the other way round): it would be out of date.
    stale: Option<u32>,
}

impl<'m> OldTree<'m> {
    /// `deleted`: the attachment numbers the device deleted; `html`: the
    /// type of the device's new body (`None`: the body is not changed).
    fn new(msg: &'m mail_parser::Message<'m>, deleted: &[u32], html: Option<bool>) -> Self {
        let shown = Shown::of(msg);
        let numbers: HashMap<u32, u32> = shown
            .attachments
            .iter()
            .copied()
            .zip(numbers_of(msg, &shown.attachments))
            .collect();
        let deleted = numbers
            .iter()
            .filter(|(_, n)| deleted.contains(n))
            .map(|(id, _)| *id)
            .collect();
        // The parts the device got as its body (email::to_email).
        let text = shown.text_id(msg).filter(|id| {
            msg.parts
                .get(*id as usize)
                .is_some_and(|p| matches!(p.body, PartType::Html(_) | PartType::Text(_)))
        });
        let html_part = shown.html_id(msg);
        let (replaced, other) = match html {
            None => (None, None),
            Some(true) => (html_part.or(text), text.or(html_part)),
            Some(false) => (text.or(html_part), html_part.or(text)),
        };
        OldTree {
            msg,
            numbers,
            deleted,
            replaced,
            stale: other.filter(|o| Some(*o) != replaced),
        }
    }

    /// Part `id` as it goes into the rebuilt draft (`None`: it goes away):
    /// the replaced body part becomes `body` (taken), a multipart is
    /// written again with its kept parts (its own headers kept, a new
    /// boundary), any other part is copied byte for byte (its number
    /// header put first). `root`: the message itself, whose headers other
    /// than `Content-*` are written anew, not copied.
    ///
    /// A multipart/signed (RFC 1847, S/MIME) becomes its first part, the
    /// signed content, without the signature: an edit changes what was
    /// signed, and a signature kept would be one that no longer verifies
    /// (the sending mail program signs again). Only a content edit is a
    /// rebuild; a change of flags leaves the message as it was.
    fn keep<'x>(&self, id: u32, root: bool, body: &mut Option<MimePart<'x>>) -> Option<Kept<'x>> {
        let part = self.msg.parts.get(id as usize)?;
        if Some(id) == self.replaced {
            return body.take().map(|part| Kept { part, mixed: false });
        }
        if Some(id) == self.stale || self.deleted.contains(&id) {
            return None;
        }
        if let (PartType::Multipart(children), true) = (&part.body, is_signed(part)) {
            return self.keep(*children.first()?, root, body);
        }
        let PartType::Multipart(children) = &part.body else {
            let number = self.numbers.get(&id).copied();
            let bytes = part_bytes(self.msg, id, number)?;
            return Some(Kept {
                part: MimePart::raw(BodyPart::Binary(bytes.into())),
                mixed: false,
            });
        };
        let parts: Vec<MimePart<'x>> = children
            .iter()
            .filter_map(|c| self.keep(*c, false, body))
            .map(|k| k.part)
            .collect();
        if parts.is_empty() {
            return None;
        }
        let (ctype, subtype) = part
            .content_type()
            .map(|ct| {
                (
                    ct.ctype().to_owned(),
                    ct.subtype().unwrap_or("mixed").to_owned(),
                )
            })
            .unwrap_or_else(|| ("multipart".to_owned(), "mixed".to_owned()));
        let mut content_type = ContentType::new(format!("{ctype}/{subtype}"));
        for attr in part
            .content_type()
            .and_then(|ct| ct.attributes())
            .unwrap_or_default()
        {
            if !attr.name.eq_ignore_ascii_case("boundary") {
                content_type =
                    content_type.attribute(attr.name.to_string(), attr.value.to_string());
            }
        }
        let mut out = MimePart::new(content_type, BodyPart::Multipart(parts));
        let (head, _) = head_and_content(self.msg, part);
        for field in header_fields(head) {
            let (name, value) = split_field(field);
            if !name.eq_ignore_ascii_case("Content-Type")
                && !name.eq_ignore_ascii_case(ATTACHMENT_NUMBER)
                && (!root || is_content_header(name))
            {
                out = out.header(name.to_owned(), Raw::new(value));
            }
        }
        Some(Kept {
            part: out,
            mixed: subtype.eq_ignore_ascii_case("mixed"),
        })
    }
}

/// Replaces draft `uid` of `raw` by its edit: APPEND the new message with
/// the old flags (plus the Change's Read) and `message_id`
/// ([`edited_draft_id`]), expunge the old one. Any failure before the
/// APPEND leaves the old draft as it was (`Failed`). A message with
/// `message_id` in the folder already (other than the old draft) is this
/// edit saved by an earlier try (cut short by a kill, or whose expunge
/// failed): it is kept instead of a second APPEND, and only the old draft
/// is expunged.
///
/// The expunge of the old draft is tried twice; when both fail the edit is
/// `Failed`, not `Replaced`: replaced, the engine would forget the old
/// item while its message stays in the folder (flagged `\Deleted`, which
/// a later delta brings to the device as a new item: a second copy of
/// the draft). The device's retried Change finds the saved edit by its
/// Message-ID and finishes the replacement with the expunge.
pub async fn replace_draft(
    imap: &mut PooledSession,
    raw: &str,
    (uid, server_id): (u32, &str),
    author: &Author,
    change: &Email,
    message_id: &str,
) -> EffectOutcome {
    // Looked for first: a retried Change whose edit is saved already
    // only has the old draft to expunge (even if that expunge went through
    // on the server but failed on the wire, the old draft gone).
    let saved = match imap.with_message_id(raw, message_id).await {
        Ok(uids) => uids.into_iter().filter(|u| *u != uid).max(),
        Err(_) => return EffectOutcome::Failed,
    };
    let new_uid = match saved {
        Some(u) => u,
        None => match save_edit(imap, raw, (uid, server_id), author, change, message_id).await {
            Some(u) => u,
            None => return EffectOutcome::Failed,
        },
    };
    if let Err(e) = imap.expunge(raw, &[uid]).await {
        tracing::warn!(target: "MAIL.DATA", folder = raw, uid, error = %e, "edited draft: the old message not expunged, trying again");
        if let Err(e) = imap.expunge(raw, &[uid]).await {
            tracing::warn!(target: "MAIL.DATA", folder = raw, uid, new_uid, error = %e, "edited draft: the old message stays, the Change fails (its retry expunges it)");
            return EffectOutcome::Failed;
        }
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

/// The edit of draft `uid` APPENDed to `raw` ([`replace_draft`]): its new
/// UID; `None` when it was not saved (the old draft unreadable, no
/// message, the edit too large, the APPEND failed).
async fn save_edit(
    imap: &mut PooledSession,
    raw: &str,
    (uid, server_id): (u32, &str),
    author: &Author,
    change: &Email,
    message_id: &str,
) -> Option<u32> {
    let limit = imap.config().max_message_bytes;
    let old = imap.fetch_message(raw, uid, limit).await.ok()?;
    let metas = imap.fetch_meta(raw, &[uid]).await.ok()?;
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
    // The device's categories replace the draft's; other keywords stay.
    let mut keywords = old_flags.keywords.clone();
    if let Some(categories) = &change.categories {
        let (remove, add) = crate::email::categories::replace(&keywords, categories);
        keywords.retain(|k| !remove.contains(k));
        keywords.extend(add);
    }
    flags.extend(keywords.into_iter().map(Flag::Keyword));
    let Some(message) = edited_draft_as(author, &old, change, server_id, Some(message_id)) else {
        tracing::warn!(target: "MAIL.DATA", folder = raw, uid, "draft is not a message (no header field) or has a message straight in a message, not replaced");
        return None;
    };
    if message.len() as u64 > imap.config().max_message_bytes {
        tracing::warn!(target: "MAIL.DATA", folder = raw, uid, bytes = message.len(), "edited draft too large, not replaced");
        return None;
    }
    imap.append(raw, &flags, None, &message)
        .await
        .ok()
        .flatten()
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
    let numbers = attachment_numbers(&crate::email::parse_whole(&bytes)?);
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

    /// The author of alice@example.test's drafts (no display name).
    pub(super) fn alice() -> Author {
        Author {
            sender: Sender {
                display_name: String::new(),
                address: "alice@example.test".to_owned(),
            },
            addresses: vec!["alice@example.test".to_owned()],
        }
    }

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
        let out = edited_draft(&alice(), OLD, &change, "5:1").unwrap();
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

    // What the device cannot see or edit is the draft's still: Bcc,
    // Reply-To, a mail program's fields; a long folded To stays one field.
    #[test]
    fn an_edit_keeps_the_header_fields_it_does_not_write() {
        let old = b"From: alice@example.test\r\nTo: bob@example.test,\r\n carol@example.test,\r\n dave@example.test, erin@example.test, frank@example.test, grace@example.test\r\nBcc: hidden@example.test\r\nReply-To: replies@example.test\r\nX-Mozilla-Draft-Info: internal/draft; vcard=0\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <old@example.test>\r\nSubject: Hidden\r\nX-Opush-Next-Attachment: 3\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nBody\r\n";
        let change = Email {
            subject: Some("Shown".to_owned()),
            ..Email::default()
        };
        let out = edited_draft(&alice(), old, &change, "5:1").unwrap();
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            m.header_raw("Bcc").map(str::trim),
            Some("hidden@example.test")
        );
        assert_eq!(
            m.header_raw("Reply-To").map(str::trim),
            Some("replies@example.test")
        );
        assert!(m.header_raw("X-Mozilla-Draft-Info").is_some());
        assert_eq!(m.to().map(|a| a.iter().count()), Some(6));
        assert_eq!(m.subject(), Some("Shown"));
        assert_eq!(m.body_text(0).unwrap().trim(), "Body");
        let text = String::from_utf8_lossy(&out);
        for field in [
            "Date:",
            "Message-ID:",
            "MIME-Version:",
            "Subject:",
            "X-Opush-Next-Attachment:",
        ] {
            assert_eq!(text.matches(field).count(), 1, "{field} in {text}");
        }
        assert!(!text.contains("<old@example.test>"), "{text}");
        assert!(text.contains("X-Opush-Next-Attachment: 3"), "{text}");
    }

    // Bytes with no header field are no message mail-parser can read:
    // rebuilt from the Change alone they would be lost, so there is no
    // rebuild (the Change fails, the draft stays).
    #[test]
    fn a_draft_that_is_no_message_is_not_rebuilt() {
        let change = Email {
            subject: Some("x".to_owned()),
            ..Email::default()
        };
        assert_eq!(
            edited_draft(&alice(), b"just some words\r\n", &change, "5:1"),
            None
        );
        assert!(edited_draft(&alice(), b"", &change, "5:1").is_some());
        assert!(edited_draft(&alice(), b"Subject: y\r\n", &change, "5:1").is_some());
    }

    #[test]
    fn recipients_can_change_and_flags_only_changes_are_not_edits() {
        let change = Email {
            to: Some("carol@example.test".to_owned()),
            ..Email::default()
        };
        assert!(edits_content(&change));
        let out = edited_draft(&alice(), OLD, &change, "5:1").unwrap();
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
        let out = edited_draft(&alice(), OLD, &change, "5:1").unwrap();
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
        let out = edited_draft(&alice(), OLD, &delete, "5:1").unwrap();
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.attachment_count(), 0);
        assert_eq!(m.body_text(0).unwrap().trim(), "First draft");
    }

    /// `raw` as a 16.1 device gets it (draft 5:1, no body preference).
    pub(super) fn device_email(raw: &[u8]) -> Email {
        crate::email::to_email(
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
        )
    }

    /// The FileReference numbers of `raw`'s attachments, by name.
    fn numbered(raw: &[u8]) -> Vec<(u32, String)> {
        let email = device_email(raw);
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
        let v1 = new_draft(&alice(), &three, "d.1@opush.test");
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
        let v2 = edited_draft(&alice(), &v1, &drop_first, "5:1").unwrap();
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
        let v3 = edited_draft(&alice(), &v2, &swap, "5:1").unwrap();
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
        let v4 = edited_draft(&alice(), &v3, &stale, "5:1").unwrap();
        assert_eq!(numbered(&v4), numbered(&v3));
    }

    #[test]
    fn a_new_draft_has_the_message_id_of_its_client_id() {
        let id = new_draft_id("u@x", "DEV", "c1", b"one", "opush.test");
        assert_eq!(id, new_draft_id("u@x", "DEV", "c1", b"one", "opush.test"));
        assert_ne!(id, new_draft_id("u@x", "DEV", "c2", b"one", "opush.test"));
        assert_ne!(id, new_draft_id("u@x", "DEV2", "c1", b"one", "opush.test"));
        // The same ClientId used again for another draft (after a resync).
        assert_ne!(id, new_draft_id("u@x", "DEV", "c1", b"two", "opush.test"));
        assert!(id.starts_with("d.") && id.ends_with("@opush.test"), "{id}");
        let out = new_draft(&alice(), &Email::default(), &id);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.message_id(), Some(id.as_str()));
    }

    #[test]
    fn an_edit_has_the_message_id_of_its_content() {
        let id = edited_draft_id("u@x", "DEV", "5:1", &[1; 32], "opush.test");
        assert_eq!(
            id,
            edited_draft_id("u@x", "DEV", "5:1", &[1; 32], "opush.test")
        );
        assert_ne!(
            id,
            edited_draft_id("u@x", "DEV", "5:1", &[2; 32], "opush.test")
        );
        assert_ne!(
            id,
            edited_draft_id("u@x", "DEV", "5:2", &[1; 32], "opush.test")
        );
        let out = edited_draft_as(&alice(), OLD, &Email::default(), "5:1", Some(&id)).unwrap();
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.message_id(), Some(id.as_str()));
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
        let out = new_draft(&alice(), &email, "d.1@opush.test");
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
        let out = new_draft(&alice(), &email, "d.1@opush.test");
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.subject(), Some("Hello"));
        assert!(m.body_html(0).unwrap().contains("<p>Hi</p>"));
    }

    /// A draft as a mail program may leave it: an HTML body with an inline
    /// image (multipart/related) beside its plain text, a forwarded message
    /// whose body is multipart, and a multipart/mixed attached as a whole
    /// holding a binary file and a Latin-1 text file.
    pub(crate) const NESTED: &str = "From: alice@example.test\n\
To: bob@example.test\n\
Subject: Forward with parts\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"outer\"\n\
\n\
--outer\n\
Content-Type: multipart/alternative; boundary=\"alt\"\n\
\n\
--alt\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
See the logo.\n\
--alt\n\
Content-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"\n\
\n\
--rel\n\
Content-Type: text/html; charset=utf-8\n\
\n\
<p>See the <img src=\"cid:logo@draft\"></p>\n\
--rel\n\
Content-Type: image/png\n\
Content-ID: <logo@draft>\n\
Content-Transfer-Encoding: base64\n\
\n\
iVBORw0KGgo=\n\
--rel--\n\
--alt--\n\
--outer\n\
Content-Type: message/rfc822\n\
Content-Disposition: attachment; filename=\"forwarded.eml\"\n\
\n\
From: carol@example.test\n\
Subject: Original\n\
MIME-Version: 1.0\n\
Content-Type: multipart/mixed; boundary=\"fwd\"\n\
\n\
--fwd\n\
Content-Type: text/plain\n\
\n\
Original text\n\
--fwd\n\
Content-Type: application/pdf; name=\"inner.pdf\"\n\
Content-Disposition: attachment; filename=\"inner.pdf\"\n\
Content-Transfer-Encoding: base64\n\
\n\
JVBERi0xLjQK\n\
--fwd--\n\
--outer\n\
Content-Type: multipart/mixed; boundary=\"sub\"\n\
Content-Disposition: attachment\n\
\n\
--sub\n\
Content-Type: application/octet-stream\n\
Content-Disposition: attachment; filename=\"nested.bin\"\n\
Content-Transfer-Encoding: base64\n\
\n\
AAECAwQF\n\
--sub\n\
Content-Type: text/csv; charset=iso-8859-1\n\
Content-Disposition: attachment; filename=\"table.csv\"\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
caf=E9,1\n\
--sub--\n\
--outer--\n";

    fn nested() -> Vec<u8> {
        NESTED.replace('\n', "\r\n").into_bytes()
    }

    /// Each attachment of `raw` by number: (Content-Type, decoded content,
    /// name, Content-ID, disposition).
    #[allow(clippy::type_complexity, reason = "a test's expected rows")]
    pub(super) fn parts_of(
        raw: &[u8],
    ) -> Vec<(
        u32,
        String,
        Vec<u8>,
        Option<String>,
        Option<String>,
        Option<String>,
    )> {
        let m = MessageParser::default().parse(raw).unwrap();
        Shown::of(&m)
            .attachments
            .iter()
            .map(|id| &m.parts[*id as usize])
            .zip(attachment_numbers(&m))
            .map(|(part, n)| {
                let content = crate::email::attachment_content(raw, n).unwrap();
                (
                    n,
                    content.content_type,
                    content.data,
                    part.attachment_name().map(str::to_owned),
                    part.content_id().map(str::to_owned),
                    part.content_disposition().map(|d| d.ctype().to_owned()),
                )
            })
            .collect()
    }

    // The bug this module had: a rebuilt draft lost the inline image's
    // Content-ID, re-encoded a Latin-1 attachment as UTF-8 without its
    // charset and flattened a multipart attached as a whole. Every part
    // not changed must come back as it was, whatever its nesting.
    #[test]
    fn an_edit_keeps_nested_parts_as_they_were() {
        let old = nested();
        let before = parts_of(&old);
        assert_eq!(before.len(), 4, "image, message, bin, csv: {before:?}");
        // A text file is given as it was, in its own charset.
        assert_eq!(before[3].1, "text/csv; charset=iso-8859-1");
        assert_eq!(before[3].2, b"caf\xe9,1");
        let change = Email {
            subject: Some("Forward, v2".to_owned()),
            attachments_add: vec![add("c1", "notes.txt", b"hello notes")],
            ..Email::default()
        };
        let out = edited_draft(&alice(), &old, &change, "5:1").unwrap();
        let after = parts_of(&out);
        assert_eq!(after[..4], before[..], "{}", String::from_utf8_lossy(&out));
        assert_eq!(after[4].0, 4, "the added one gets the next number");
        assert_eq!(after[4].2, b"hello notes");
        // Every old leaf is there byte for byte, the body's two forms too.
        let text = String::from_utf8_lossy(&out);
        for leaf in [
            "Content-Type: text/plain; charset=utf-8\r\n\r\nSee the logo.",
            "Content-Type: text/html; charset=utf-8\r\n\r\n<p>See the <img src=\"cid:logo@draft\"></p>",
            "Content-Type: image/png\r\nContent-ID: <logo@draft>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=",
            "Content-Type: text/csv; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=\"table.csv\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9,1",
        ] {
            assert!(text.contains(leaf), "{leaf:?} not in {text}");
        }
        let fwd = &old[NESTED.replace('\n', "\r\n").find("From: carol").unwrap()..];
        let fwd = &fwd[..fwd.windows(7).position(|w| w == b"--fwd--").unwrap() + 7];
        assert!(
            out.windows(fwd.len()).any(|w| w == fwd),
            "the forwarded message, byte for byte"
        );
        // The structure: the image stays in its multipart/related, the
        // attached multipart keeps its disposition.
        let m = MessageParser::default().parse(&out).unwrap();
        let kinds: Vec<String> = m
            .parts
            .iter()
            .filter_map(|p| p.content_type())
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
            .collect();
        assert_eq!(
            kinds,
            [
                "multipart/mixed",
                "multipart/alternative",
                "text/plain",
                "multipart/related",
                "text/html",
                "image/png",
                "message/rfc822",
                "multipart/mixed",
                "application/octet-stream",
                "text/csv",
                "application/octet-stream"
            ]
        );
        assert!(m.parts[7]
            .content_disposition()
            .is_some_and(|d| d.is_attachment()));
        assert_eq!(m.subject(), Some("Forward, v2"));
        assert_eq!(m.body_text(0).unwrap().trim(), "See the logo.");
        // Edited again: the same parts, no drift.
        let again = edited_draft(
            &alice(),
            &out,
            &Email {
                subject: Some("v3".into()),
                ..Email::default()
            },
            "5:1",
        )
        .unwrap();
        assert_eq!(parts_of(&again), after);
    }

    // A new HTML body takes the place of the old HTML (in its
    // multipart/related, beside the image it shows); the old plain text is
    // out of date and goes. A new plain body does the converse.
    #[test]
    fn a_new_body_replaces_the_one_the_device_saw() {
        let old = nested();
        let html = Email {
            body: Some(Body {
                body_type: 2,
                data: Some("<p>New <img src=\"cid:logo@draft\"></p>".to_owned()),
                ..Body::default()
            }),
            ..Email::default()
        };
        let out = edited_draft(&alice(), &old, &html, "5:1").unwrap();
        let m = MessageParser::default().parse(&out).unwrap();
        assert!(m.body_html(0).unwrap().contains("<p>New"));
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("See the logo."), "{text}");
        let related = m
            .parts
            .iter()
            .find(|p| {
                p.content_type()
                    .is_some_and(|ct| ct.subtype() == Some("related"))
            })
            .unwrap();
        let PartType::Multipart(children) = &related.body else {
            panic!("{text}")
        };
        let kinds: Vec<_> = children
            .iter()
            .map(|c| {
                m.parts[*c as usize]
                    .content_type()
                    .unwrap()
                    .subtype()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds, ["html", "png"]);
        assert_eq!(parts_of(&out), parts_of(&old));

        let plain = Email {
            body: Some(Body {
                body_type: 1,
                data: Some("Plain now".to_owned()),
                ..Body::default()
            }),
            ..Email::default()
        };
        let out = edited_draft(&alice(), &old, &plain, "5:1").unwrap();
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.body_text(0).unwrap().trim(), "Plain now");
        assert!(!String::from_utf8_lossy(&out).contains("<p>See the"));
        assert_eq!(
            parts_of(&out),
            parts_of(&old),
            "the image is kept without its HTML"
        );
    }

    // Deleting nested attachments leaves the others' numbers; a multipart
    // left with no part goes with its last one.
    #[test]
    fn nested_attachments_are_deleted_by_reference() {
        let old = nested();
        let before = parts_of(&old);
        let change = Email {
            attachments_delete: vec!["5:1:1".to_owned(), "5:1:2".to_owned()],
            ..Email::default()
        };
        let out = edited_draft(&alice(), &old, &change, "5:1").unwrap();
        assert_eq!(parts_of(&out), vec![before[0].clone(), before[3].clone()]);
        let change = Email {
            attachments_delete: vec!["5:1:3".to_owned()],
            ..Email::default()
        };
        let out = edited_draft(&alice(), &out, &change, "5:1").unwrap();
        assert_eq!(parts_of(&out), vec![before[0].clone()]);
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(
            m.parts
                .iter()
                .filter(|p| p.content_type().is_some_and(|ct| ct.ctype() == "multipart"))
                .count(),
            3,
            "mixed, alternative, related: the emptied one is gone"
        );
        let add_one = Email {
            attachments_add: vec![add("c9", "x.bin", b"x")],
            ..Email::default()
        };
        let out = edited_draft(&alice(), &out, &add_one, "5:1").unwrap();
        assert_eq!(
            parts_of(&out).last().unwrap().0,
            4,
            "numbers are never reused"
        );
    }

    // A one-part draft keeps its own content headers (not its message
    // headers twice) when an attachment is added to it.
    #[test]
    fn a_one_part_draft_keeps_its_body_when_it_gains_an_attachment() {
        let old = b"From: alice@example.test\r\nSubject: Hi\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n";
        let change = Email {
            attachments_add: vec![add("c1", "a.bin", b"abc")],
            ..Email::default()
        };
        let out = edited_draft(&alice(), old, &change, "5:1").unwrap();
        let m = MessageParser::default().parse(&out).unwrap();
        assert_eq!(m.body_text(0).unwrap().trim(), "café");
        assert_eq!(m.subject(), Some("Hi"));
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("Subject:").count(), 1, "{text}");
        assert_eq!(numbered(&out), vec![(0, "a.bin".into())]);
    }

    /// The From and Sender fields of a message, as written.
    fn from_and_sender(raw: &[u8]) -> (Option<String>, Option<String>) {
        let m = MessageParser::default().parse(raw).unwrap();
        (
            m.header_raw("From").map(|v| v.trim().to_owned()),
            m.header_raw("Sender").map(|v| v.trim().to_owned()),
        )
    }

    // The draft's own From (a display name, an address in another case)
    // and Sender stay when they name the user; a From that names someone
    // else gives way to the user's identity, and its Sender goes with it.
    #[test]
    fn an_edit_keeps_the_users_own_from_and_sender() {
        let subject = Email {
            subject: Some("edited".to_owned()),
            ..Email::default()
        };
        let mine = b"From: \"Alice Example\" <Alice@Example.test>\r\nSender: alice@example.test\r\nSubject: s\r\n\r\nbody\r\n";
        let out = edited_draft(&alice(), mine, &subject, "5:1").unwrap();
        assert_eq!(
            from_and_sender(&out),
            (
                Some("\"Alice Example\" <Alice@Example.test>".to_owned()),
                Some("alice@example.test".to_owned())
            )
        );
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("From:").count(), 1, "{text}");
        assert_eq!(text.matches("Sender:").count(), 1, "{text}");

        let theirs = b"From: mallory@example.test\r\nSender: mallory@example.test\r\nSubject: s\r\n\r\nbody\r\n";
        let out = edited_draft(&alice(), theirs, &subject, "5:1").unwrap();
        assert_eq!(
            from_and_sender(&out),
            (Some("<alice@example.test>".to_owned()), None)
        );
        // A list naming the user and someone else is not the user's.
        let shared =
            b"From: alice@example.test, mallory@example.test\r\nSubject: s\r\n\r\nbody\r\n";
        let out = edited_draft(&alice(), shared, &subject, "5:1").unwrap();
        assert_eq!(
            from_and_sender(&out).0.as_deref(),
            Some("<alice@example.test>")
        );
        // The user's display name from `[identity]` when the draft has none.
        let named = Author {
            sender: Sender {
                display_name: "Alice Example".to_owned(),
                address: "alice@example.test".to_owned(),
            },
            ..alice()
        };
        let out = edited_draft(&named, theirs, &subject, "5:1").unwrap();
        assert_eq!(
            from_and_sender(&out).0.as_deref(),
            Some("\"Alice Example\" <alice@example.test>")
        );
    }

    // [MS-ASEMAIL] From and Sender in a Change or Add: what the device
    // sends wins over the draft's and the user's.
    #[test]
    fn a_from_the_device_sends_wins() {
        let change = Email {
            from: Some("\"Work\" <alice.work@example.test>".to_owned()),
            sender: Some("alice@example.test".to_owned()),
            ..Email::default()
        };
        let mine = b"From: \"Alice\" <alice@example.test>\r\nSubject: s\r\n\r\nbody\r\n";
        let out = edited_draft(&alice(), mine, &change, "5:1").unwrap();
        assert_eq!(
            from_and_sender(&out),
            (
                Some("\"Work\" <alice.work@example.test>".to_owned()),
                Some("alice@example.test".to_owned())
            )
        );
        let out = new_draft(&alice(), &change, "d.1@opush.test");
        assert_eq!(
            from_and_sender(&out).0.as_deref(),
            Some("\"Work\" <alice.work@example.test>")
        );
        // A Change of the From alone is an edit of the draft, not of flags.
        for only in [
            Email {
                from: change.from.clone(),
                ..Email::default()
            },
            Email {
                sender: change.sender.clone(),
                ..Email::default()
            },
        ] {
            assert!(edits_content(&only), "{only:?}");
        }
        let out = new_draft(&alice(), &Email::default(), "d.1@opush.test");
        assert_eq!(
            from_and_sender(&out),
            (Some("<alice@example.test>".to_owned()), None)
        );
    }

    /// A signed draft (S/MIME, RFC 8551 3.5.3): the signed content is a
    /// multipart/mixed with a body and a PDF; the signature is the last part.
    pub(super) const SIGNED: &str = "From: alice@example.test\r\nSubject: Signed\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"s\"\r\n\r\n\
This is an S/MIME signed message\r\n\
--s\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSigned words\r\n\
--m\r\nContent-Type: application/pdf; name=\"plan.pdf\"\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n\
--m--\r\n\
--s\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n\
--s--\r\n";

    // An edit of a signed draft changes what was signed: the rebuilt draft
    // is the signed content alone (no multipart/signed, no signature left
    // dangling), its parts and their numbers kept. A change of flags only
    // is no edit of the content: the message is not rebuilt at all.
    #[test]
    fn an_edit_of_a_signed_draft_drops_the_signature_cleanly() {
        let old = SIGNED.as_bytes();
        let before = parts_of(old);
        assert_eq!(
            before
                .iter()
                .map(|p| p.3.clone().unwrap())
                .collect::<Vec<_>>(),
            ["plan.pdf", "smime.p7s"]
        );
        assert_eq!(
            device_email(old).message_class.as_deref(),
            Some("IPM.Note.SMIME.MultipartSigned")
        );
        for change in [
            Email {
                body: Some(Body {
                    body_type: 1,
                    data: Some("New words".to_owned()),
                    ..Body::default()
                }),
                ..Email::default()
            },
            Email {
                subject: Some("Signed, v2".to_owned()),
                ..Email::default()
            },
        ] {
            let out = edited_draft(&alice(), old, &change, "5:1").unwrap();
            let text = String::from_utf8_lossy(&out);
            for gone in [
                "multipart/signed",
                "pkcs7-signature",
                "smime.p7s",
                "S/MIME signed",
            ] {
                assert!(!text.contains(gone), "{gone} in {text}");
            }
            let m = MessageParser::default().parse(&out).unwrap();
            let root = m.content_type().unwrap();
            assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("mixed")));
            assert_eq!(parts_of(&out), before[..1], "{text}");
            let email = device_email(&out);
            assert_eq!(email.message_class.as_deref(), Some("IPM.Note"));
            let body = if change.body.is_some() {
                "New words"
            } else {
                "Signed words"
            };
            assert_eq!(shown_body(&out, false), body, "{text}");
            assert_eq!(text.matches("MIME-Version:").count(), 1, "{text}");
        }
        // Read, flag and categories are set on the IMAP message as it is.
        let flags_only = Email {
            read: Some(true),
            flag: Some(opush_protocol::commands::items::Flag {
                status: Some(2),
                ..Default::default()
            }),
            categories: Some(vec!["Blue".to_owned()]),
            ..Email::default()
        };
        assert!(!edits_content(&flags_only));
    }

    /// The body a device is shown of `raw`, as plain text or as HTML.
    pub(super) fn shown_body(raw: &[u8], html: bool) -> String {
        let pref = opush_protocol::commands::airsyncbase::BodyPreference {
            body_type: if html { 2 } else { 1 },
            ..Default::default()
        };
        let email = crate::email::to_email(
            raw,
            &crate::email::MessageInfo {
                server_id: "5:1".to_owned(),
                ..Default::default()
            },
            &[pref],
            opush_protocol::version::ProtocolVersion::V16_1,
        );
        email
            .body
            .and_then(|b| b.data)
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// A draft from elsewhere: a text attachment, a text part with only a
    /// name (mail-parser's attachment by its place, not its first part),
    /// then the body, all of type `ty`.
    fn text_attachments_then_body(ty: &str, body: &str) -> Vec<u8> {
        format!(
            "From: alice@example.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/{ty}; charset=utf-8\r\n\
             Content-Disposition: attachment; filename=\"first.{ty}\"\r\n\r\nfirst file\r\n\
             --b\r\nContent-Type: text/{ty}; charset=utf-8; name=\"second.{ty}\"\r\n\
             Content-Disposition: inline; filename=\"second.{ty}\"\r\n\r\nsecond file\r\n\
             --b\r\nContent-Type: text/{ty}; charset=utf-8\r\n\r\n{body}\r\n--b--\r\n"
        )
        .into_bytes()
    }

    // The bug: deleting the first text attachment moved the second one to
    // the front of the multipart, where mail-parser takes a text part for
    // the body; the device was shown the file as its body.
    #[test]
    fn deleting_a_text_attachment_leaves_the_body_the_body() {
        for (ty, body, html) in [
            ("plain", "the real body", false),
            ("html", "<p>the real body</p>", true),
        ] {
            let old = text_attachments_then_body(ty, body);
            assert_eq!(shown_body(&old, html), body, "{ty}");
            let names = |raw: &[u8]| -> Vec<(u32, String)> { numbered(raw) };
            assert_eq!(
                names(&old),
                [(0, format!("first.{ty}")), (1, format!("second.{ty}"))]
            );
            let delete = Email {
                attachments_delete: vec!["5:1:0".to_owned()],
                ..Email::default()
            };
            let out = edited_draft(&alice(), &old, &delete, "5:1").unwrap();
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains("first file"), "{text}");
            assert_eq!(shown_body(&out, html), body, "{ty}: {text}");
            assert_eq!(names(&out), [(1, format!("second.{ty}"))], "{text}");
            let content = crate::email::attachment_content(&out, 1).unwrap();
            assert_eq!(content.data, b"second file");
            // A new body then takes the body's place, not the file's.
            let edit = Email {
                body: Some(Body {
                    body_type: if html { 2 } else { 1 },
                    data: Some("new words".to_owned()),
                    ..Body::default()
                }),
                ..Email::default()
            };
            let again = edited_draft(&alice(), &out, &edit, "5:1").unwrap();
            let text = String::from_utf8_lossy(&again);
            assert!(
                text.contains("second file") && !text.contains("the real body"),
                "{text}"
            );
            assert_eq!(names(&again), [(1, format!("second.{ty}"))], "{text}");
            assert!(shown_body(&again, html).contains("new words"), "{text}");
        }
    }
}

/// Generated MIME trees: whatever the nesting, an edit that does not touch
/// a part keeps it, and a deleted attachment takes no other with it.
#[cfg(test)]
mod tree_props {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    use super::tests::{alice, device_email, parts_of, shown_body};
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    /// A part of a generated draft.
    #[derive(Debug, Clone)]
    enum Node {
        /// An attached file (base64).
        File(Vec<u8>),
        /// An inline image with a Content-ID (base64).
        Inline(Vec<u8>),
        /// A text part.
        Text(String),
        /// A text file: a text part with a name, and with
        /// `Content-Disposition: attachment` when `true` (without, it is
        /// an attachment only where it is not the first part).
        TextFile(String, bool),
        /// A message/rfc822 part holding a message whose body is the node.
        Message(Box<Node>),
        /// A multipart of this subtype.
        Multi(&'static str, Vec<Node>),
    }

    fn node() -> impl Strategy<Value = Node> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..40);
        let leaf = prop_oneof![
            bytes.clone().prop_map(Node::File),
            bytes.prop_map(Node::Inline),
            "[a-z ]{0,30}".prop_map(Node::Text),
            ("[a-z ]{0,10}", any::<bool>()).prop_map(|(t, d)| Node::TextFile(t, d)),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                // A message/rfc822 right inside another too: mail-parser
                // 0.11 cannot read it (email::shape), which must be found.
                inner.clone().prop_map(|n| Node::Message(Box::new(n))),
                (
                    proptest::sample::select(vec!["mixed", "related", "alternative"]),
                    proptest::collection::vec(inner, 1..4),
                    "[a-z ]{0,10}"
                )
                    .prop_map(|(sub, mut parts, text)| {
                        // A multipart/related starts with its root part,
                        // the text the others belong to (mail-parser takes
                        // its first part for the body).
                        if sub == "related" {
                            parts.insert(0, Node::Text(text));
                        }
                        Node::Multi(sub, parts)
                    }),
            ]
        })
    }

    /// `node` as MIME text (its header fields, the empty line, its body);
    /// `n` numbers the boundaries, names and Content-IDs.
    fn write(node: &Node, n: &mut u32, out: &mut String) {
        *n += 1;
        let k = *n;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        match node {
            Node::File(b) => out.push_str(&format!(
                "Content-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=\"f{k}.bin\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}",
                b64(b)
            )),
            Node::Inline(b) => out.push_str(&format!(
                "Content-Type: image/png\r\nContent-ID: <c{k}@gen>\r\n\
                 Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                b64(b)
            )),
            Node::Text(t) => out.push_str(&format!(
                "Content-Type: text/plain; charset=utf-8\r\n\r\ntext {k} {t}"
            )),
            Node::TextFile(t, disposition) => out.push_str(&format!(
                "Content-Type: text/plain; charset=utf-8; name=\"t{k}.txt\"\r\n{}\r\nfile {k} {t}",
                if *disposition {
                    "Content-Disposition: attachment\r\n"
                } else {
                    ""
                }
            )),
            Node::Message(inner) => {
                out.push_str(&format!(
                    "Content-Type: message/rfc822\r\n\
                     Content-Disposition: attachment; filename=\"m{k}.eml\"\r\n\r\n\
                     From: carol@example.test\r\nSubject: inner {k}\r\nMIME-Version: 1.0\r\n"
                ));
                write(inner, n, out);
            }
            Node::Multi(sub, parts) => {
                out.push_str(&format!(
                    "Content-Type: multipart/{sub}; boundary=\"b{k}\"\r\n\r\n"
                ));
                for part in parts {
                    out.push_str(&format!("--b{k}\r\n"));
                    write(part, n, out);
                    out.push_str("\r\n");
                }
                out.push_str(&format!("--b{k}--"));
            }
        }
    }

    /// Whether `node` has a message whose body is a message (`in_message`:
    /// `node` is such a body).
    fn message_in_message(node: &Node, in_message: bool) -> bool {
        match node {
            Node::Message(inner) => in_message || message_in_message(inner, true),
            Node::Multi(_, parts) => parts.iter().any(|p| message_in_message(p, false)),
            _ => false,
        }
    }

    fn draft(root: &Node) -> Vec<u8> {
        let mut out =
            "From: alice@example.test\r\nSubject: gen\r\nMIME-Version: 1.0\r\n".to_owned();
        write(root, &mut 0, &mut out);
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// [`draft`] signed: `root` in a multipart/signed, the signature after.
    fn signed_draft(root: &Node) -> Vec<u8> {
        let mut out = "From: alice@example.test\r\nSubject: gen\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
             micalg=sha-256; boundary=\"sig\"\r\n\r\n--sig\r\n"
            .to_owned();
        write(root, &mut 0, &mut out);
        out.push_str(
            "\r\n--sig\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--sig--\r\n",
        );
        out.into_bytes()
    }

    /// What the device sees of a draft: its body and its attachments.
    #[allow(clippy::type_complexity, reason = "a test's compared values")]
    fn seen(
        raw: &[u8],
    ) -> (
        Option<String>,
        Option<String>,
        Vec<(Option<String>, Option<bool>, Option<String>)>,
    ) {
        let email = device_email(raw);
        (
            Some(shown_body(raw, false)),
            Some(shown_body(raw, true)),
            email
                .attachments
                .into_iter()
                .map(|a| (a.file_reference, a.is_inline, a.content_id))
                .collect(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn an_edit_keeps_every_part_it_does_not_touch(root in node(), pick in any::<prop::sample::Index>()) {
            let old = draft(&root);
            let subject = Email { subject: Some("edited".to_owned()), ..Email::default() };
            // A message straight in a message is found, shown from its
            // header (no panic) and not rebuilt; any other tree is read.
            let nested = message_in_message(&root, false);
            prop_assert_eq!(crate::email::shape::nests_message_in_message(&old), nested);
            if nested {
                let email = device_email(&old);
                prop_assert_eq!(email.subject.as_deref(), Some("gen"));
                prop_assert!(email.attachments.is_empty());
                prop_assert!(edited_draft(&alice(), &old, &subject, "5:1").is_none());
                return Ok(());
            }
            let out = edited_draft(&alice(), &old, &subject, "5:1").unwrap();
            let before = parts_of(&old);
            prop_assert_eq!(&parts_of(&out), &before);
            prop_assert_eq!(seen(&out), seen(&old));
            // Again: nothing drifts.
            let again = edited_draft(&alice(), &out, &subject, "5:1").unwrap();
            prop_assert_eq!(&parts_of(&again), &before);

            // One attachment deleted, a text one too: only that one goes,
            // the others keep their numbers, the body stays the body.
            if !before.is_empty() {
                let gone = before[pick.index(before.len())].0;
                let delete = Email {
                    attachments_delete: vec![format!("5:1:{gone}")],
                    ..Email::default()
                };
                let out = edited_draft(&alice(), &old, &delete, "5:1").unwrap();
                let expected: Vec<_> = before.iter().filter(|p| p.0 != gone).cloned().collect();
                prop_assert_eq!(parts_of(&out), expected);
                // (As text: a draft left with no part gets an empty text
                // body, which as HTML is an empty document.)
                prop_assert_eq!(shown_body(&out, false), shown_body(&old, false));
            }
        }

        // Whatever it signed, an edited signed draft is what it signed:
        // the same attachments under the same numbers, the same body, and
        // no signature.
        #[test]
        fn an_edited_signed_draft_is_its_signed_content(root in node()) {
            prop_assume!(!message_in_message(&root, false));
            let signed = signed_draft(&root);
            // What was signed ends before the CRLF of the boundary after
            // it: the message without its last CRLF.
            let mut unsigned = draft(&root);
            unsigned.truncate(unsigned.len() - 2);
            let subject = Email { subject: Some("edited".to_owned()), ..Email::default() };
            let out = edited_draft(&alice(), &signed, &subject, "5:1").unwrap();
            prop_assert_eq!(parts_of(&out), parts_of(&unsigned));
            prop_assert_eq!(shown_body(&out, false), shown_body(&unsigned, false));
            let text = String::from_utf8_lossy(&out);
            prop_assert!(!text.contains("multipart/signed") && !text.contains("smime.p7s"), "{}", text);
        }

        #[test]
        fn any_bytes_rebuild_without_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let change = Email {
                subject: Some("x".to_owned()),
                attachments_delete: vec!["5:1:0".to_owned()],
                ..Email::default()
            };
            let _ = edited_draft(&alice(), &raw, &change, "5:1");
        }
    }
}
