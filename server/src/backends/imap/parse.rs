//! Pure helpers of the IMAP connector: IMAP dates, UID sets, quoting,
//! header fields and BODYSTRUCTURE conversion.
//!
//! No I/O and no clock here; everything is a function of its input and
//! malformed input gives `None`/an error, never a panic.

use async_imap::imap_proto::rfc4315::UidSetMember;
use async_imap::imap_proto::{self, BodyStructure};

use super::{BodyPart, ImapError};

pub use crate::dates::{
    imap_date as format_search_date, imap_date_time as format_date_time,
    parse_imap_date_time as parse_internal_date,
};

/// Compresses UIDs into an IMAP sequence set (`1:3,7,9:10`). Empty input → `None`.
pub fn uid_set(uids: &[u32]) -> Option<String> {
    let mut v: Vec<u32> = uids.iter().copied().filter(|&u| u > 0).collect();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Expands UIDPLUS set members, refusing more than `limit` UIDs.
pub fn expand_uid_set(members: &[UidSetMember], limit: usize) -> Result<Vec<u32>, ImapError> {
    let mut out = Vec::new();
    for m in members {
        let (a, b) = match m {
            UidSetMember::Uid(u) => (*u, *u),
            UidSetMember::UidRange(r) => (*r.start().min(r.end()), *r.start().max(r.end())),
        };
        if out.len() + (b - a) as usize + 1 > limit {
            return Err(ImapError::Protocol(format!("UID set larger than {limit}")));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Parses a `MODIFIED` set from a response text (`[MODIFIED 7,9:11] ...`).
pub fn parse_modified(text: &str, limit: usize) -> Result<Vec<u32>, ImapError> {
    let Some(start) = text.find("[MODIFIED ") else {
        return Ok(Vec::new());
    };
    let rest = &text[start + "[MODIFIED ".len()..];
    let set = rest.split(']').next().unwrap_or("");
    let mut out = Vec::new();
    for part in set.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
            None => (part.trim().parse::<u32>(), part.trim().parse::<u32>()),
        };
        let (Ok(a), Ok(b)) = (a, b) else {
            return Err(ImapError::Protocol(format!("bad MODIFIED set {set:?}")));
        };
        let (a, b) = (a.min(b), a.max(b));
        if out.len() + (b - a) as usize + 1 > limit {
            return Err(ImapError::Protocol("MODIFIED set too large".into()));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Quotes an IMAP string. Only printable 7-bit text is accepted (use a
/// literal for anything else): mailbox names must already be modified UTF-7.
pub fn quote(s: &str) -> Result<String, ImapError> {
    if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(ImapError::InvalidInput(format!(
            "character {c:?} cannot be sent in a quoted IMAP string"
        )));
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// Whether `s` is a valid IMAP atom (a keyword / flag name without the `\`).
pub fn is_atom(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            (0x21..=0x7e).contains(&b)
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

/// Header fields of a message header block: unfolded `(name, value)` pairs.
/// Values are raw (RFC 2047 encoded words are not decoded).
pub fn parse_header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

fn params(p: &imap_proto::BodyParams<'_>) -> Vec<(String, String)> {
    p.as_ref()
        .map(|v| {
            v.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn child_section(prefix: &str, i: usize) -> String {
    if prefix.is_empty() {
        (i + 1).to_string()
    } else {
        format!("{prefix}.{}", i + 1)
    }
}

/// Converts a parsed BODYSTRUCTURE into [`BodyPart`]s with IMAP section numbers.
/// `section` is the part's own number (`""` for a multipart root).
pub fn body_part(bs: &BodyStructure<'_>, section: &str, depth: usize) -> BodyPart {
    let (common, single, lines, children) = match bs {
        BodyStructure::Basic { common, other, .. } => (common, Some(other), None, Vec::new()),
        BodyStructure::Text {
            common,
            other,
            lines,
            ..
        } => (common, Some(other), Some(*lines), Vec::new()),
        BodyStructure::Message {
            common,
            other,
            body,
            lines,
            ..
        } => {
            let inner = if depth > 32 {
                Vec::new()
            } else {
                match body.as_ref() {
                    BodyStructure::Multipart { bodies, .. } => bodies
                        .iter()
                        .enumerate()
                        .map(|(i, b)| body_part(b, &child_section(section, i), depth + 1))
                        .collect(),
                    single => vec![body_part(single, &child_section(section, 0), depth + 1)],
                }
            };
            (common, Some(other), Some(*lines), inner)
        }
        BodyStructure::Multipart { common, bodies, .. } => {
            let inner = if depth > 32 {
                Vec::new()
            } else {
                bodies
                    .iter()
                    .enumerate()
                    .map(|(i, b)| body_part(b, &child_section(section, i), depth + 1))
                    .collect()
            };
            (common, None, None, inner)
        }
    };
    let disposition = common.disposition.as_ref();
    BodyPart {
        section: section.to_string(),
        mime_type: format!("{}/{}", common.ty.ty, common.ty.subtype).to_ascii_lowercase(),
        params: params(&common.ty.params),
        content_id: single.and_then(|s| s.id.as_ref().map(|v| v.to_string())),
        description: single.and_then(|s| s.description.as_ref().map(|v| v.to_string())),
        encoding: single
            .map(|s| encoding_name(&s.transfer_encoding))
            .unwrap_or_default(),
        size: single.map(|s| s.octets).unwrap_or(0),
        lines,
        disposition: disposition.map(|d| d.ty.to_ascii_lowercase()),
        disposition_params: disposition.map(|d| params(&d.params)).unwrap_or_default(),
        children,
    }
}

fn encoding_name(e: &imap_proto::ContentEncoding<'_>) -> String {
    use imap_proto::ContentEncoding as E;
    match e {
        E::SevenBit => "7bit".into(),
        E::EightBit => "8bit".into(),
        E::Binary => "binary".into(),
        E::Base64 => "base64".into(),
        E::QuotedPrintable => "quoted-printable".into(),
        E::Other(s) => s.to_ascii_lowercase(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn internal_dates() {
        assert_eq!(parse_internal_date("01-Jan-1970 00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_internal_date("28-Nov-2026 21:15:56 +0000"),
            Some(1_795_900_556)
        );
        assert_eq!(
            parse_internal_date(" 1-Mar-2024 01:00:00 +0100"),
            Some(1_709_251_200)
        );
        assert_eq!(
            parse_internal_date("31-Dec-1999 19:00:00 -0500"),
            Some(946_684_800)
        );
        assert_eq!(parse_internal_date("nonsense"), None);
        assert_eq!(parse_internal_date("32-Foo-2020 00:00:00 +0000"), None);
        assert_eq!(
            format_date_time(1_795_900_556),
            "28-Nov-2026 21:15:56 +0000"
        );
        assert_eq!(
            parse_internal_date(&format_date_time(1_234_567_890)),
            Some(1_234_567_890)
        );
        assert_eq!(format_search_date(1_709_251_200), "1-Mar-2024");
        assert_eq!(format_search_date(-1), "31-Dec-1969");
    }

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[]), None);
        assert_eq!(
            uid_set(&[5, 1, 2, 3, 9, 10, 3]).as_deref(),
            Some("1:3,5,9:10")
        );
        let set = [UidSetMember::UidRange(3..=5), UidSetMember::Uid(9)];
        assert_eq!(expand_uid_set(&set, 10).unwrap(), vec![3, 4, 5, 9]);
        let huge = [UidSetMember::UidRange(1..=u32::MAX)];
        assert!(expand_uid_set(&huge, 1000).is_err());
        assert_eq!(
            parse_modified("[MODIFIED 7,9:11] Conditional STORE failed", 100).unwrap(),
            vec![7, 9, 10, 11]
        );
        assert_eq!(
            parse_modified("Store completed", 100).unwrap(),
            Vec::<u32>::new()
        );
        assert!(parse_modified("[MODIFIED 1:4000000000]", 100).is_err());
    }

    #[test]
    fn quoting_and_atoms() {
        assert_eq!(quote(r#"a "b" \c"#).unwrap(), r#""a \"b\" \\c""#);
        assert!(matches!(quote("a\r\nb"), Err(ImapError::InvalidInput(_))));
        assert!(matches!(quote("é"), Err(ImapError::InvalidInput(_))));
        assert!(is_atom("$Forwarded"));
        assert!(!is_atom("two words"));
        assert!(!is_atom("x)"));
    }

    #[test]
    fn header_unfolding() {
        let raw = b"Subject: hello\r\n  world\r\nFrom: A <a@x>\r\nX: 1\r\n\r\nBody: no\r\n";
        let f = parse_header_fields(raw);
        assert_eq!(
            f,
            vec![
                ("Subject".to_string(), "hello world".to_string()),
                ("From".to_string(), "A <a@x>".to_string()),
                ("X".to_string(), "1".to_string()),
            ]
        );
    }
}
