//! IMAP message → EAS Email `ApplicationData` ([MS-ASEMAIL] 2.2.2): headers
//! decoded (RFC 2047, any charset), To/Cc/From/ReplyTo/Subject,
//! DateReceived from the IMAP INTERNALDATE, DisplayTo, Importance, Read,
//! Flag, Categories (IMAP keywords), MessageClass, InternetCPID,
//! ConversationId (14.0+, [`conversation`]), the body
//! per `BodyPreference` ([`body`]) and the attachments with their
//! [`FileReference`].
//!
//! Exists so every command that returns mail (Sync, ItemOperations, Search,
//! Find) renders it the same way. Conversion never fails: a message that does not
//! parse, a body without a charset or a broken calendar part gives an item
//! with what could be read — one bad message must never block a Sync. It
//! must not do I/O; the caller fetches the bytes (bounded) and the flags.

pub mod body;
pub mod categories;
pub mod conversation;
pub mod html;
pub(crate) mod parts;
pub mod shape;
pub mod skeleton;
pub mod transfer;

use std::fmt;

use mail_parser::{Address, HeaderName, MessageParser, MimeHeaders, PartType};
use opush_protocol::commands::airsyncbase::{Attachment, BodyPreference};
use opush_protocol::commands::find::FindProperties;
use opush_protocol::commands::items::{Email, Flag};
use opush_protocol::version::ProtocolVersion;

use body::{build_body, BodySource, Cut};

/// What IMAP says about a message besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageInfo {
    /// The item's ServerId as the device knows it (`"<collection>:<n>"`),
    /// used to build attachment FileReferences.
    pub server_id: String,
    /// INTERNALDATE, Unix seconds.
    pub internal_date: i64,
    /// `\Seen`.
    pub seen: bool,
    /// `\Flagged`.
    pub flagged: bool,
    /// IMAP keywords (system flags excluded by the caller); those that are
    /// categories are shown as Categories ([`categories`]).
    pub keywords: Vec<String>,
}

/// Identifies one attachment for ItemOperations Fetch and GetAttachment:
/// `"<collection>:<n>:<index>"`, the index being the attachment's number
/// ([`attachment_numbers`]): its place among the message's attachments in
/// MIME order from 0, or, in a draft opush built, the number it was given
/// when added, which stays the same when other attachments are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    /// The item's ServerId (`"<collection>:<n>"`).
    pub server_id: String,
    /// Attachment index.
    pub index: u32,
}

impl FileReference {
    /// Parses `"<collection>:<n>:<index>"` (`None` for anything else).
    pub fn parse(s: &str) -> Option<FileReference> {
        let (server_id, index) = s.rsplit_once(':')?;
        let (collection, n) = server_id.split_once(':')?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(collection) || !digits(n) || !digits(index) {
            return None;
        }
        Some(FileReference {
            server_id: server_id.to_owned(),
            index: index.parse().ok()?,
        })
    }
}

impl fmt::Display for FileReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.server_id, self.index)
    }
}

/// One attachment's content, for ItemOperations Fetch / GetAttachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentContent {
    /// MIME type (e.g. `application/pdf`).
    pub content_type: String,
    /// Decoded bytes.
    pub data: Vec<u8>,
}

/// Converts a message to its Email ApplicationData for `version`.
pub fn to_email(
    raw: &[u8],
    info: &MessageInfo,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
) -> Email {
    render(raw, info, prefs, version, true, None)
}

/// A large message as its skeleton shows it ([`skeleton`]): where each of
/// its leaves lies in the real message, and the real message's start for a
/// MIME body.
#[derive(Debug, Clone, Copy)]
pub struct Large<'a> {
    /// The leaves [`skeleton::Scanner`] gave with the skeleton.
    pub leaves: &'a [skeleton::Leaf],
    /// The real message's size (RFC822.SIZE).
    pub size: u64,
    /// Its first bytes (all of them, some, or none when no MIME body is
    /// sent): a MIME body shorter than `size` is Truncated.
    pub mime: &'a [u8],
}

/// [`to_email`] of a large message from its skeleton `skel`: the same
/// headers, body (as far as the skeleton holds it: a text body cut there
/// is Truncated, its `EstimatedDataSize` the whole decoded size) and
/// attachments, numbered and sized as the whole message would have them
/// (a body cut in the skeleton counts its decoded size as the scan found
/// it). Equal to [`to_email`] of the whole message when nothing is cut
/// (email/tests.rs).
pub fn to_email_large(
    skel: &[u8],
    large: &Large<'_>,
    info: &MessageInfo,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
) -> Email {
    render(skel, info, prefs, version, false, Some(large))
}

/// The `Properties` of a Find result ([MS-ASCMD] 2.2.3.139.1): the fields
/// [`to_email`] renders for Sync (Subject, DateReceived, DisplayTo,
/// Importance, Read, From, the attachments) and the body preview of Sync's
/// `Preview` ([`body::MAX_PREVIEW`] characters), plus the display names of
/// Cc and Bcc and the IMAP `\Draft` flag as IsDraft.
pub fn find_properties(raw: &[u8], info: &MessageInfo, draft: bool) -> FindProperties {
    let prefs = [BodyPreference {
        body_type: body::TYPE_PLAIN,
        truncation_size: Some(0),
        all_or_none: Some(true),
        preview: Some(body::MAX_PREVIEW),
    }];
    let email = to_email(raw, info, &prefs, ProtocolVersion::V16_1);
    let head = MessageParser::default().parse_headers(raw);
    let names = |addr: Option<&Address<'_>>| addr.map(display_names).filter(|s| !s.is_empty());
    FindProperties {
        display_cc: head.as_ref().and_then(|m| names(m.cc())),
        display_bcc: head.as_ref().and_then(|m| names(m.bcc())),
        has_attachments: Some(!email.attachments.is_empty()),
        preview: email.body.and_then(|b| b.preview),
        subject: email.subject,
        date_received: email.date_received,
        display_to: email.display_to.filter(|s| !s.is_empty()),
        importance: email.importance,
        read: email.read,
        is_draft: Some(draft),
        from: email.from,
        extra: Vec::new(),
    }
}

/// [`to_email`] with every message parsed whole (no [`single_text_body`]
/// shortcut): the reference the shortcut is tested against.
#[cfg(test)]
pub(crate) fn to_email_parsed_whole(
    raw: &[u8],
    info: &MessageInfo,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
) -> Email {
    render(raw, info, prefs, version, false, None)
}

fn render(
    raw: &[u8],
    info: &MessageInfo,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
    shortcut: bool,
    large: Option<&Large<'_>>,
) -> Email {
    tracing::debug!(target: "MAIL.DATA", bytes = raw.len(), version = version.as_str(), "message to Email");
    let mut email = Email {
        date_received: Some(format_date(info.internal_date)),
        read: Some(info.seen),
        importance: Some(1),
        message_class: Some("IPM.Note".to_owned()),
        internet_cpid: Some("65001".to_owned()),
        content_class: Some("urn:content-classes:message".to_owned()),
        flag: Some(flag_of(info.flagged)),
        categories: Some(categories::categories_of(&info.keywords)),
        ..Email::default()
    };
    let parser = MessageParser::default();
    let mime = large.map_or(raw, |l| l.mime);
    let mime_cut = large
        .filter(|l| (l.mime.len() as u64) < l.size)
        .map(|l| l.size);
    let shortcut = shortcut && large.is_none();
    // A one-part plain-text message (most mail a load or a mailing list
    // brings) needs only its headers parsed: its body is the rest of the
    // bytes. Anything else is parsed whole.
    let (parsed, plain) = match (shortcut && may_be_single_text(raw))
        .then(|| parser.parse_headers(raw))
        .flatten()
        .and_then(|head| single_text_body(raw, &head).map(|text| (head, text)))
    {
        Some((head, text)) => (Some(head), Some(text)),
        // A shape mail-parser cannot read whole: its header is shown.
        None if shape::nests_message_in_message(raw) => {
            tracing::warn!(target: "MAIL.DATA", item = %info.server_id, "message in a message: shown without its body");
            (parser.parse_headers(raw), None)
        }
        None => (parser.parse(raw), None),
    };
    let Some(msg) = parsed else {
        // Not a message at all: still an item, with an empty body.
        email.subject = Some(String::new());
        if version.has_airsyncbase() {
            let src = BodySource {
                text: None,
                html: None,
                mime,
                cut: Cut {
                    mime: mime_cut,
                    ..Cut::NONE
                },
            };
            email.native_body_type = Some(src.native_type());
            email.body = Some(build_body(&src, prefs, version));
        }
        return email;
    };
    email.subject = Some(msg.subject().unwrap_or_default().to_owned());
    email.from = msg.from().map(render_addresses);
    email.to = msg.to().map(render_addresses);
    email.cc = msg.cc().map(render_addresses);
    email.reply_to = msg.reply_to().map(render_addresses);
    email.display_to = msg.to().map(display_names);
    email.thread_topic = msg.thread_name().map(str::to_owned);
    if version >= ProtocolVersion::V14_0 {
        email.conversation_id = conversation::conversation_id(
            header_raw(&msg, &RAW_HEADERS[0]),
            header_raw(&msg, &RAW_HEADERS[1]),
            header_raw(&msg, &RAW_HEADERS[2]),
        )
        .map(|id| id.to_vec());
    }
    email.importance = Some(importance(
        header_raw(&msg, &RAW_HEADERS[3]),
        header_raw(&msg, &RAW_HEADERS[4]),
    ));
    if is_signed(&msg) {
        email.message_class = Some("IPM.Note.SMIME.MultipartSigned".to_owned());
    }
    if version.has_airsyncbase() {
        if let Some(text) = plain {
            // What the whole parse gives such a message: its one part as
            // the text body, no HTML, no attachment.
            let src = BodySource {
                text: Some(text),
                html: None,
                mime: raw,
                cut: Cut::NONE,
            };
            email.native_body_type = Some(src.native_type());
            email.body = Some(build_body(&src, prefs, version));
            return email;
        }
        let shown = Shown::of(&msg);
        let mut text = shown.text.and_then(|pos| msg.body_text(pos));
        let mut html = shown.html.and_then(|pos| msg.body_html(pos));
        let mut cut = Cut {
            mime: mime_cut,
            ..Cut::NONE
        };
        if let Some(l) = large {
            let part = |id: Option<u32>| msg.parts.get(id? as usize);
            if let Some(p) = part(shown.text_id(&msg)) {
                cut.text = cut_size(p, l.leaves, &mut text, PartType::Text(Default::default()));
            }
            if let Some(p) = part(shown.html_id(&msg)) {
                cut.html = cut_size(p, l.leaves, &mut html, PartType::Html(Default::default()));
            }
        }
        let src = BodySource {
            text: text.as_deref(),
            html: html.as_deref(),
            mime,
            cut,
        };
        email.native_body_type = Some(src.native_type());
        email.body = Some(build_body(&src, prefs, version));
        email.attachments = attachments(
            &msg,
            &shown.attachments,
            &info.server_id,
            large.map(|l| l.leaves),
        );
    }
    email
}

/// The whole size of a body `shown` (text or HTML) from `part` of a
/// skeleton, when the skeleton holds only its start (`None` when whole):
/// the decoded size the scan found when the part is of the kind shown
/// (`kind`), else (an HTML part shown as text…) what is shown plus what
/// was not read. A cut body that ends in the middle of a character (its
/// decoding then ends in U+FFFD) loses that end.
fn cut_size(
    part: &mail_parser::MessagePart<'_>,
    leaves: &[skeleton::Leaf],
    shown: &mut Option<std::borrow::Cow<'_, str>>,
    kind: PartType<'_>,
) -> Option<u64> {
    let leaf = leaf_of(part, leaves).filter(|l| l.is_cut())?;
    let text = shown.as_mut()?;
    let had = part.len() as u64;
    if text.ends_with('\u{FFFD}') {
        *text = std::borrow::Cow::Owned(text.trim_end_matches('\u{FFFD}').to_owned());
    }
    Some(
        if std::mem::discriminant(&part.body) == std::mem::discriminant(&kind) {
            leaf.decoded_len
        } else {
            text.len() as u64 + leaf.decoded_len.saturating_sub(had)
        },
    )
}

/// The leaf of a skeleton's part: the last one starting at or before its
/// body (a nested message's own leaves start after its header).
fn leaf_of<'l>(
    part: &mail_parser::MessagePart<'_>,
    leaves: &'l [skeleton::Leaf],
) -> Option<&'l skeleton::Leaf> {
    let at = part.offset_body as usize;
    leaves
        .iter()
        .filter(|l| l.skel_start <= at && at <= l.skel_end)
        .max_by_key(|l| l.skel_start)
}

/// Whether a message or part is a multipart/signed (RFC 1847: S/MIME,
/// PGP/MIME).
pub(crate) fn is_signed<'x>(part: &impl MimeHeaders<'x>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("signed"))
    })
}

/// mail-parser's parse of `raw` whole, its parts taken apart; `None` when
/// it is no message, or one of a shape mail-parser cannot read
/// ([`shape::nests_message_in_message`]), which the caller must then not
/// take apart (nor rebuild).
pub(crate) fn parse_whole(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    if shape::nests_message_in_message(raw) {
        return None;
    }
    MessageParser::default().parse(raw)
}

/// A cheap look at the header block, before any parsing: false when it
/// names a multipart type or a transfer encoding, so such a message is
/// parsed once, whole, instead of headers first and then again. Only a
/// guess (a header may merely mention the words): [`single_text_body`]
/// decides.
fn may_be_single_text(raw: &[u8]) -> bool {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // The header block ends at the first empty line, CRLF or bare LF: the
    // bare-LF search only looks before the CRLF one (most mail has no
    // "\n\n" at all, and searching the whole message for it costs).
    static CRLF_BLANK: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF_BLANK: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    // The words without their first letter, in lower and in upper case:
    // "Multipart", "BASE64", "Quoted-Printable"… (a mixed case that slips
    // through only costs the header parse done twice).
    static WORDS: LazyLock<[Finder<'static>; 6]> = LazyLock::new(|| {
        [
            Finder::new(b"ultipart"),
            Finder::new(b"ULTIPART"),
            Finder::new(b"ase64"),
            Finder::new(b"ASE64"),
            Finder::new(b"uoted-printable"),
            Finder::new(b"UOTED-PRINTABLE"),
        ]
    });
    let crlf = CRLF_BLANK.find(raw).unwrap_or(raw.len());
    let end = LF_BLANK.find(&raw[..crlf]).unwrap_or(crlf);
    let head = &raw[..end];
    !WORDS.iter().any(|w| w.find(head).is_some())
}

/// `msg`'s raw header `name` (the last one), as `Message::header_raw`
/// gives it, from a name parsed once ([`RAW_HEADERS`]) rather than on
/// every call.
fn header_raw<'m>(msg: &'m mail_parser::Message<'_>, name: &HeaderName<'_>) -> Option<&'m str> {
    let h = msg
        .parts
        .first()?
        .headers
        .iter()
        .rev()
        .find(|h| h.name == *name)?;
    std::str::from_utf8(
        msg.raw_message
            .get(h.offset_start as usize..h.offset_end as usize)?,
    )
    .ok()
}

/// The raw headers [`to_email`] reads: References, In-Reply-To,
/// Message-ID, Importance, X-Priority.
static RAW_HEADERS: std::sync::LazyLock<[HeaderName<'static>; 5]> =
    std::sync::LazyLock::new(|| {
        [
            HeaderName::from("References"),
            HeaderName::from("In-Reply-To"),
            HeaderName::from("Message-ID"),
            HeaderName::from("Importance"),
            HeaderName::from("X-Priority"),
        ]
    });

/// The body of `raw` when mail-parser, parsing it whole, would make it one
/// inline text/plain part decoded as UTF-8 without a copy, `head` being
/// `raw`'s headers ([`MessageParser::parse_headers`]); `None` for anything
/// else. Each test mirrors a step of `MessageParser::parse` (mail-parser
/// 0.11) for a message's first part: the Content-Type (none, or
/// text/plain), no base64 or quoted-printable transfer encoding, a charset
/// it has no decoder for (UTF-8 or none), no attachment disposition, then
/// where it finds the end of the header block, and a body that is valid
/// UTF-8 (its lossy decoding then borrows it unchanged). The whole message
/// from there on is the part's body. The equivalence is tested on every
/// sample message and on generated ones (email/tests.rs).
pub(crate) fn single_text_body<'a>(
    raw: &'a [u8],
    head: &mail_parser::Message<'_>,
) -> Option<&'a str> {
    use mail_parser::{GetHeader, HeaderName, HeaderValue};
    let [part] = head.parts.as_slice() else {
        return None;
    };
    let headers = &part.headers;
    let content_type = headers
        .header_value(&HeaderName::ContentType)
        .and_then(|c| c.as_content_type());
    if let Some(ct) = content_type {
        if ct.ctype() != "text" || ct.subtype() != Some("plain") {
            return None;
        }
        if ct
            .attribute("charset")
            .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
            .is_some()
        {
            return None;
        }
    }
    if let Some(HeaderValue::Text(encoding)) =
        headers.header_value(&HeaderName::ContentTransferEncoding)
    {
        if encoding.eq_ignore_ascii_case("base64")
            || encoding.eq_ignore_ascii_case("quoted-printable")
        {
            return None;
        }
    }
    if headers
        .header_value(&HeaderName::ContentDisposition)
        .is_some_and(|d| d.as_content_type().is_some_and(|ct| ct.is_attachment()))
    {
        return None;
    }
    // The header block ends where the header loop, after the last header's
    // value, meets a line holding only white space; anything else there (a
    // line it skips as not a header) is left to the whole parse.
    let mut at = headers.last()?.offset_end as usize;
    loop {
        match raw.get(at)? {
            b'\n' => break,
            b if b.is_ascii_whitespace() => at += 1,
            _ => return None,
        }
    }
    std::str::from_utf8(raw.get(at + 1..)?).ok()
}

/// A part header of the drafts opush builds (server/src/draft.rs): the
/// attachment's number, which its FileReference carries. Positions would
/// shift when an earlier attachment is deleted, and a device still holding
/// the old references would then fetch or delete the wrong attachment.
pub const ATTACHMENT_NUMBER: &str = "X-Opush-Attachment";

/// A message header of the drafts opush builds: the number the next added
/// attachment gets (numbers are never reused, so a deleted attachment's
/// reference never names another one).
pub const NEXT_ATTACHMENT_NUMBER: &str = "X-Opush-Next-Attachment";

/// What a device is shown of a parsed message: which parts are its
/// attachments and which of mail-parser's body parts is its body.
///
/// mail-parser decides from a part's place whether a text part is body or
/// attachment (a text part first in its multipart is body, a later one
/// with a name is not), so deleting an attachment from a draft could turn
/// the text attachment after it into the body. A part opush numbered as an
/// attachment ([`ATTACHMENT_NUMBER`]) stays one wherever it moves, and the
/// body is the first body part that is no attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    /// Part ids of the attachments, in MIME order.
    pub attachments: Vec<u32>,
    /// Position in `text_body` of the text body (`Message::body_text`).
    pub text: Option<usize>,
    /// Position in `html_body` of the HTML body, when it is real HTML.
    pub html: Option<usize>,
}

impl Shown {
    /// What `msg` shows.
    pub(crate) fn of(msg: &mail_parser::Message<'_>) -> Shown {
        let mut attachments = msg.attachments.clone();
        // The root is left out: a message whose one part is numbered is an
        // attachment to mail-parser already (opush numbers only those).
        for (id, part) in msg.parts.iter().enumerate().skip(1) {
            let id = id as u32;
            let leaf = !matches!(part.body, PartType::Multipart(_));
            if leaf && number_header(msg, part).is_some() && !attachments.contains(&id) {
                attachments.push(id);
            }
        }
        attachments.sort_unstable();
        let body = |ids: &[u32]| ids.iter().position(|id| !attachments.contains(id));
        let text = body(&msg.text_body);
        let html = body(&msg.html_body)
            .filter(|pos| msg.html_part(*pos as u32).is_some_and(|p| p.is_text_html()));
        Shown {
            attachments,
            text,
            html,
        }
    }

    /// Part id of the text body.
    pub(crate) fn text_id(&self, msg: &mail_parser::Message<'_>) -> Option<u32> {
        msg.text_body.get(self.text?).copied()
    }

    /// Part id of the HTML body.
    pub(crate) fn html_id(&self, msg: &mail_parser::Message<'_>) -> Option<u32> {
        msg.html_body.get(self.html?).copied()
    }
}

/// The value of `part`'s [`ATTACHMENT_NUMBER`] field, when it has one.
fn number_header<'m>(
    msg: &'m mail_parser::Message<'_>,
    part: &mail_parser::MessagePart<'_>,
) -> Option<&'m str> {
    let h = part
        .headers()
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(ATTACHMENT_NUMBER))?;
    let text = msg
        .raw_message()
        .get(h.offset_start as usize..h.offset_end as usize)?;
    std::str::from_utf8(text).ok()
}

/// The numbers of `msg`'s attachments (`Shown::attachments`), in MIME
/// order: each part's [`ATTACHMENT_NUMBER`] when every attachment carries
/// a distinct one (a draft opush built), else their positions 0, 1, 2…
pub fn attachment_numbers(msg: &mail_parser::Message<'_>) -> Vec<u32> {
    numbers_of(msg, &Shown::of(msg).attachments)
}

/// [`attachment_numbers`] of the attachments `ids`.
pub(crate) fn numbers_of(msg: &mail_parser::Message<'_>, ids: &[u32]) -> Vec<u32> {
    let numbered: Option<Vec<u32>> = ids
        .iter()
        .map(|id| {
            let part = msg.parts.get(*id as usize)?;
            number_header(msg, part)?.trim().parse().ok()
        })
        .collect();
    match numbered {
        Some(n) if n.iter().collect::<std::collections::HashSet<_>>().len() == n.len() => n,
        _ => (0..ids.len() as u32).collect(),
    }
}

/// The number the next attachment added to `msg` gets: past every number
/// in use and past [`NEXT_ATTACHMENT_NUMBER`].
pub fn next_attachment_number(msg: &mail_parser::Message<'_>) -> u32 {
    let recorded = msg
        .header_raw(NEXT_ATTACHMENT_NUMBER)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let in_use = attachment_numbers(msg)
        .into_iter()
        .max()
        .map_or(0, |n| n.saturating_add(1));
    recorded.max(in_use)
}

/// The content of the attachment numbered `index` (as listed by
/// [`to_email`]: see [`attachment_numbers`]).
pub fn attachment_content(raw: &[u8], index: u32) -> Option<AttachmentContent> {
    let msg = parse_whole(raw)?;
    let part = attachment_part(&msg, index)?;
    let mut content_type = attachment_type(part);
    let data = match &part.body {
        PartType::Message(inner) => inner.raw_message().to_vec(),
        // mail-parser hands text over converted to UTF-8: a file is given
        // as it was (only its transfer encoding undone), with its charset.
        PartType::Text(_) | PartType::Html(_) => match transfer_decoded(raw, part) {
            Some(bytes) => bytes,
            None => {
                // Converted to UTF-8 after all: no charset to name.
                if let Some((ct, _)) = content_type.split_once("; charset=") {
                    content_type = ct.to_owned();
                }
                part.contents().to_vec()
            }
        },
        _ => part.contents().to_vec(),
    };
    Some(AttachmentContent { content_type, data })
}

/// The part of the attachment numbered `index`.
fn attachment_part<'m>(
    msg: &'m mail_parser::Message<'m>,
    index: u32,
) -> Option<&'m mail_parser::MessagePart<'m>> {
    let ids = Shown::of(msg).attachments;
    let position = numbers_of(msg, &ids).iter().position(|n| *n == index)?;
    msg.parts.get(*ids.get(position)? as usize)
}

/// The Content-Type an attachment is served with: its type, and the
/// charset of a text one (its bytes are given as they are).
fn attachment_type(part: &mail_parser::MessagePart<'_>) -> String {
    let mut content_type = part
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_owned(),
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    if matches!(part.body, PartType::Text(_) | PartType::Html(_)) {
        // A charset name is a token (RFC 2978): anything else is left out
        // rather than written into a header or a type.
        let charset = part
            .content_type()
            .and_then(|ct| ct.attribute("charset"))
            .filter(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-^_`{}~.:".contains(&b))
            });
        if let Some(charset) = charset {
            content_type = format!("{content_type}; charset={charset}");
        }
    }
    content_type
}

/// Where an attachment lies in its message, found from the message's
/// skeleton ([`skeleton`]), for reading it again from there alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentPlace {
    /// Its Content-Type (as [`attachment_content`] gives it).
    pub content_type: String,
    /// Its body's first byte in the message.
    pub start: u64,
    /// Past its body's last byte.
    pub end: u64,
    /// The transfer encoding to undo.
    pub encoding: transfer::Encoding,
    /// Its size once decoded.
    pub size: u64,
}

/// The place of the attachment numbered `index`, from the skeleton and the
/// leaves [`skeleton::Scanner`] gave; `None` when there is none.
pub fn locate_attachment(
    skel: &[u8],
    leaves: &[skeleton::Leaf],
    index: u32,
) -> Option<AttachmentPlace> {
    let msg = parse_whole(skel)?;
    let part = attachment_part(&msg, index)?;
    let leaf = leaf_of(part, leaves)?;
    if matches!(part.body, PartType::Message(_)) != leaf.container
        && leaf.encoding == transfer::Encoding::Identity
    {
        return None;
    }
    Some(AttachmentPlace {
        content_type: attachment_type(part),
        start: leaf.real_start,
        end: leaf.real_end,
        encoding: if leaf.container {
            transfer::Encoding::Identity
        } else {
            leaf.encoding
        },
        size: leaf.decoded_len,
    })
}

/// A leaf part's content with only its transfer encoding undone; `None`
/// when it does not decode.
fn transfer_decoded(raw: &[u8], part: &mail_parser::MessagePart<'_>) -> Option<Vec<u8>> {
    let content = raw.get(part.offset_body as usize..part.offset_end as usize)?;
    match part.encoding {
        mail_parser::Encoding::Base64 => mail_parser::decoders::base64::base64_decode(content),
        mail_parser::Encoding::QuotedPrintable => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(content)
        }
        mail_parser::Encoding::None => Some(content.to_vec()),
    }
}

/// The attachments `ids` of `msg`; `leaves` when `msg` is a skeleton
/// (an attachment cut there counts the decoded size the scan found).
fn attachments(
    msg: &mail_parser::Message<'_>,
    ids: &[u32],
    server_id: &str,
    leaves: Option<&[skeleton::Leaf]>,
) -> Vec<Attachment> {
    let numbers = numbers_of(msg, ids);
    ids.iter()
        .filter_map(|id| msg.parts.get(*id as usize))
        .zip(numbers)
        .enumerate()
        .map(|(idx, (part, number))| {
            let is_message = matches!(part.body, PartType::Message(_));
            let name = part
                .attachment_name()
                .map(str::to_owned)
                .or_else(|| {
                    part.message()
                        .and_then(|m| m.subject())
                        .map(|s| format!("{s}.eml"))
                })
                .unwrap_or_else(|| format!("attachment-{}", idx + 1));
            let inline = part.content_disposition().is_some_and(|d| d.is_inline())
                && part.content_id().is_some();
            Attachment {
                display_name: Some(name),
                file_reference: Some(
                    FileReference {
                        server_id: server_id.to_owned(),
                        index: number,
                    }
                    .to_string(),
                ),
                method: Some(if is_message { 5 } else { 1 }),
                estimated_data_size: Some(
                    match leaves.and_then(|l| leaf_of(part, l)).filter(|l| l.is_cut()) {
                        Some(leaf) => leaf.decoded_len,
                        None => part.len() as u64,
                    },
                ),
                content_id: part.content_id().map(str::to_owned),
                content_location: part.content_location().map(str::to_owned),
                is_inline: Some(inline),
                client_id: None,
            }
        })
        .collect()
}

fn flag_of(flagged: bool) -> Flag {
    if flagged {
        Flag {
            status: Some(2),
            flag_type: Some("Follow up".to_owned()),
            ..Flag::default()
        }
    } else {
        // An empty <Flag/> means "not flagged" ([MS-ASEMAIL] 2.2.2.34).
        Flag::default()
    }
}

/// `"Name" <addr>, <addr2>` — the form EAS devices display and reply to.
/// Written into one string (no string per address, no join).
fn render_addresses(addr: &Address<'_>) -> String {
    // Sized once: each address adds at most its name, its address and
    // seven more bytes (two quotes, ` <`, `>` and the list's `, `).
    let mut out = String::with_capacity(
        addr.iter()
            .map(|a| {
                a.name.as_deref().map_or(0, str::len) + a.address.as_deref().map_or(0, str::len) + 7
            })
            .sum(),
    );
    let mut first = true;
    for a in addr.iter() {
        let Some(address) = a.address.as_deref() else {
            continue;
        };
        if !std::mem::take(&mut first) {
            out.push_str(", ");
        }
        match a.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => {
                out.push('"');
                for (i, piece) in name.split('"').enumerate() {
                    if i > 0 {
                        out.push('\'');
                    }
                    out.push_str(piece);
                }
                out.push_str("\" <");
            }
            None => out.push('<'),
        }
        out.push_str(address);
        out.push('>');
    }
    out
}

/// DisplayTo: the names of the To recipients (address when nameless).
fn display_names(addr: &Address<'_>) -> String {
    let mut out = String::new();
    let mut first = true;
    for a in addr.iter() {
        let Some(shown) = a
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(a.address.as_deref())
        else {
            continue;
        };
        if !std::mem::take(&mut first) {
            out.push_str("; ");
        }
        out.push_str(shown);
    }
    out
}

/// Importance 0 (low), 1 (normal), 2 (high) from `Importance` or `X-Priority`.
fn importance(header: Option<&str>, x_priority: Option<&str>) -> u8 {
    if let Some(h) = header {
        let h = h.trim().to_ascii_lowercase();
        if h.starts_with("high") {
            return 2;
        }
        if h.starts_with("low") {
            return 0;
        }
    }
    match x_priority.and_then(|p| p.trim().chars().next()) {
        Some('1' | '2') => 2,
        Some('4' | '5') => 0,
        _ => 1,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` ([MS-ASDTYPE] 2.3) for Unix seconds.
pub use crate::dates::eas_date as format_date;

#[cfg(test)]
mod tests;
