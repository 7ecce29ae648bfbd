//! Preparing a message a device sends (SendMail, SmartReply, SmartForward)
//! for submission: who receives it, and the header fixes a relay expects.
//!
//! Pure functions over the MIME bytes, no I/O. The body is never touched:
//! header fields are kept byte for byte except those this module owns —
//! `Bcc` (removed from the message, kept in the envelope), `From` (set to the
//! authenticated user's identity, as Exchange does), and `Date` /
//! `Message-ID` (added when the device left them out).

use mail_parser::{Addr, Address, HeaderName, HeaderValue, MessageParser};

/// The identity the message goes out as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Display name, e.g. `Alice Martin` (may be empty).
    pub display_name: String,
    /// Address, e.g. `alice@example.test`.
    pub address: String,
}

/// A message ready for SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Envelope sender.
    pub envelope_from: String,
    /// Envelope recipients from To, Cc and Bcc, lower-cased duplicates removed, in order.
    pub recipients: Vec<String>,
    /// The message to transmit (CRLF line ends, Bcc removed).
    pub message: Vec<u8>,
    /// The Message-ID the message carries (without angle brackets).
    pub message_id: String,
    /// The device's `Bcc` fields (CRLF-terminated), kept for the Sent copy only.
    pub bcc_fields: Vec<u8>,
}

impl Outgoing {
    /// The copy saved in the sender's Sent folder: the message as sent,
    /// with the `Bcc` fields back so the sender sees whom they copied.
    pub fn sent_copy(&self) -> Vec<u8> {
        let mut copy = Vec::with_capacity(self.bcc_fields.len() + self.message.len());
        copy.extend_from_slice(&self.bcc_fields);
        copy.extend_from_slice(&self.message);
        copy
    }
}

/// Why a message cannot be sent as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutgoingError {
    /// Over the configured maximum size (bytes, limit).
    #[error("message of {0} bytes is over the {1}-byte limit")]
    TooLarge(usize, usize),
    /// No To, Cc or Bcc address.
    #[error("the message has no recipient")]
    NoRecipient,
    /// Not an RFC 5322 message (no header section).
    #[error("not a MIME message: {0}")]
    Malformed(&'static str),
}

/// Inputs that would otherwise come from the clock and randomness: the
/// caller supplies them, so this module stays deterministic.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// RFC 5322 date, e.g. `Sat, 28 Nov 2026 21:30:00 +0000`.
    pub date: String,
    /// A unique left part for a new Message-ID.
    pub unique: String,
    /// The right part of a new Message-ID (the server's host name).
    pub host: String,
}

/// Prepares `mime` for submission as `sender`.
pub fn prepare(
    mime: &[u8],
    sender: &Sender,
    stamp: &Stamp,
    max_size: usize,
) -> Result<Outgoing, OutgoingError> {
    if mime.len() > max_size {
        return Err(OutgoingError::TooLarge(mime.len(), max_size));
    }
    let mime = to_crlf(mime);
    let split = header_end(&mime).ok_or(OutgoingError::Malformed("no header section"))?;
    let (head, body) = mime.split_at(split);

    let parsed = MessageParser::new()
        .parse_headers(head)
        .ok_or(OutgoingError::Malformed("unreadable header section"))?;
    let mut recipients: Vec<String> = Vec::new();
    let mut existing_id = None;
    let mut has_date = false;
    for h in parsed.headers() {
        match &h.name {
            HeaderName::To | HeaderName::Cc | HeaderName::Bcc => {
                if let HeaderValue::Address(a) = &h.value {
                    collect(a, &mut recipients);
                }
            }
            HeaderName::MessageId => {
                if let HeaderValue::Text(t) = &h.value {
                    existing_id = Some(t.to_string());
                }
            }
            HeaderName::Date => has_date = true,
            _ => {}
        }
    }
    if recipients.is_empty() {
        return Err(OutgoingError::NoRecipient);
    }

    let mut out = Vec::with_capacity(mime.len() + 200);
    out.extend_from_slice(format!("From: {}\r\n", format_mailbox(sender)).as_bytes());
    if !has_date {
        out.extend_from_slice(format!("Date: {}\r\n", stamp.date).as_bytes());
    }
    let message_id = existing_id.unwrap_or_else(|| format!("{}@{}", stamp.unique, stamp.host));
    if !head_has(head, "message-id") {
        out.extend_from_slice(format!("Message-ID: <{message_id}>\r\n").as_bytes());
    }
    let mut bcc_fields = Vec::new();
    for field in fields(head) {
        let name = field_name(field).to_ascii_lowercase();
        if name == "bcc" {
            bcc_fields.extend_from_slice(field);
            continue;
        }
        if name == "from" || name == "sender" {
            continue;
        }
        out.extend_from_slice(field);
    }
    out.extend_from_slice(body);
    Ok(Outgoing {
        envelope_from: sender.address.clone(),
        recipients,
        message: out,
        message_id,
        bcc_fields,
    })
}

/// An RFC 5322 date (`Sun, 29 Nov 2026 01:02:03 +0000`) of a Unix time, UTC.
pub use crate::dates::rfc5322_date;

fn collect(a: &Address<'_>, out: &mut Vec<String>) {
    let mut push = |addr: &Addr<'_>| {
        if let Some(a) = addr.address.as_deref() {
            let a = a.trim().to_owned();
            if !a.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
                out.push(a);
            }
        }
    };
    match a {
        Address::List(list) => list.iter().for_each(&mut push),
        Address::Group(groups) => groups
            .iter()
            .flat_map(|g| g.addresses.iter())
            .for_each(&mut push),
    }
}

/// `"Name" <address>`, with the name RFC 2047-encoded when it is not ASCII.
pub fn format_mailbox(s: &Sender) -> String {
    if s.display_name.trim().is_empty() {
        return format!("<{}>", s.address);
    }
    let name = s.display_name.trim();
    if name.is_ascii() {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\" <{}>", s.address)
    } else {
        format!("{} <{}>", encode_word(name), s.address)
    }
}

/// RFC 2047 encoded word (UTF-8, base64), split so no word passes 75 characters.
pub fn encode_word(text: &str) -> String {
    use base64::Engine as _;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in text.chars() {
        // 45 bytes of UTF-8 → 60 base64 characters + 12 of framing ≤ 75.
        if chunk.len() + ch.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bare LF line ends (some devices send them) become CRLF, as SMTP requires.
fn to_crlf(mime: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mime.len() + mime.len() / 50);
    let mut prev = 0u8;
    for &b in mime {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Offset just past the blank line ending the header section.
fn header_end(mime: &[u8]) -> Option<usize> {
    memchr::memmem::find(mime, b"\r\n\r\n")
        .map(|i| i + 2)
        .filter(|&i| i > 2)
}

/// The header fields of a header section, each with its folded continuation lines and CRLF.
fn fields(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = head;
    std::iter::from_fn(move || {
        if rest.is_empty() || rest.starts_with(b"\r\n") {
            return None;
        }
        let mut end = 0;
        loop {
            match memchr::memmem::find(&rest[end..], b"\r\n") {
                Some(i) => {
                    end += i + 2;
                    if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                        break;
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    })
}

fn field_name(field: &[u8]) -> String {
    let end = memchr::memchr(b':', field).unwrap_or(0);
    String::from_utf8_lossy(&field[..end]).trim().to_owned()
}

fn head_has(head: &[u8], name: &str) -> bool {
    fields(head).any(|f| field_name(f).eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Sender {
        Sender {
            display_name: "Alice Martin".into(),
            address: "alice@example.test".into(),
        }
    }
    fn stamp() -> Stamp {
        Stamp {
            date: "Sat, 28 Nov 2026 21:30:00 +0000".into(),
            unique: "u1".into(),
            host: "opush.test".into(),
        }
    }

    #[test]
    fn bcc_goes_to_the_envelope_only_and_from_is_the_user() {
        let mime = b"From: someone@else.test\r\nTo: Bob <bob@example.test>\r\nCc: carol@example.test, BOB@example.test\r\nBcc: dave@example.test\r\nSubject: hi\r\n\r\nbody\r\nBcc: not a header\r\n";
        let out = prepare(mime, &alice(), &stamp(), 1 << 20).expect("prepare");
        assert_eq!(
            out.recipients,
            [
                "bob@example.test",
                "carol@example.test",
                "dave@example.test"
            ]
        );
        let text = String::from_utf8(out.message.clone()).expect("utf8");
        assert!(
            text.starts_with("From: \"Alice Martin\" <alice@example.test>\r\n"),
            "{text}"
        );
        assert!(!text.contains("Bcc: dave"), "{text}");
        let copy = String::from_utf8(out.sent_copy()).expect("utf8");
        assert!(
            copy.starts_with("Bcc: dave@example.test\r\nFrom: "),
            "{copy}"
        );
        assert!(
            text.ends_with("\r\n\r\nbody\r\nBcc: not a header\r\n"),
            "body changed: {text}"
        );
        assert!(text.contains("Date: Sat, 28 Nov 2026 21:30:00 +0000\r\n"));
        assert!(text.contains("Message-ID: <u1@opush.test>\r\n"));
        assert_eq!(out.message_id, "u1@opush.test");
    }

    #[test]
    fn existing_date_and_message_id_are_kept() {
        let mime = b"To: bob@example.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <x@dev>\r\nSubject:\r\n folded\r\n\r\nb";
        let out = prepare(mime, &alice(), &stamp(), 1 << 20).expect("prepare");
        let text = String::from_utf8(out.message).expect("utf8");
        assert_eq!(text.matches("Date:").count(), 1);
        assert_eq!(text.matches("Message-ID:").count(), 1);
        assert!(text.contains("Subject:\r\n folded\r\n"));
        assert_eq!(out.message_id, "x@dev");
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_914_123),
            "Sun, 29 Nov 2026 01:02:03 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn bare_lf_becomes_crlf() {
        let out = prepare(
            b"To: bob@example.test\nSubject: s\n\nline1\nline2\n",
            &alice(),
            &stamp(),
            1 << 20,
        )
        .expect("prepare");
        assert!(out.message.ends_with(b"\r\n\r\nline1\r\nline2\r\n"));
        assert!(!out
            .message
            .windows(2)
            .any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            prepare(b"Subject: x\r\n\r\nb", &alice(), &stamp(), 100),
            Err(OutgoingError::NoRecipient)
        );
        assert_eq!(
            prepare(&[b'a'; 101], &alice(), &stamp(), 100),
            Err(OutgoingError::TooLarge(101, 100))
        );
        assert!(matches!(
            prepare(b"no header at all", &alice(), &stamp(), 100),
            Err(OutgoingError::Malformed(_))
        ));
    }

    #[test]
    fn non_ascii_names_are_encoded_words() {
        let s = Sender {
            display_name: "Élodie Ünal".into(),
            address: "e@example.test".into(),
        };
        let f = format_mailbox(&s);
        assert!(f.starts_with("=?UTF-8?B?"), "{f}");
        assert!(f.ends_with(" <e@example.test>"));
        let long = encode_word(&"é".repeat(100));
        assert!(long.split(' ').all(|w| w.len() <= 75), "{long}");
    }
}
