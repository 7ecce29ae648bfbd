//! Modified UTF-7 (RFC 3501 §5.1.3): the encoding IMAP uses for mailbox names.
//!
//! Pure functions, no I/O. Devices see decoded (Unicode) folder names; the
//! IMAP wire only ever sees the encoded form. Decoding is strict: a name a
//! server sends that is not valid modified UTF-7 is an error, never a panic.

use thiserror::Error;

/// A mailbox name that is not valid modified UTF-7.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Utf7Error {
    /// A `&` shift sequence was never closed by `-`.
    #[error("unterminated '&' shift sequence at byte {0}")]
    Unterminated(usize),
    /// A byte outside printable US-ASCII appeared in the name.
    #[error("byte {byte:#04x} at {at} is not allowed in a modified UTF-7 name")]
    BadByte {
        /// The offending byte.
        byte: u8,
        /// Its position.
        at: usize,
    },
    /// The base64 run does not decode to valid UTF-16.
    #[error("invalid base64 / UTF-16 in shift sequence at byte {0}")]
    BadShift(usize),
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b',' => Some(63),
        _ => None,
    }
}

/// Encodes a Unicode mailbox name to modified UTF-7.
pub fn encode(name: &str) -> String {
    encode_shifting(name, |_, _| false)
}

/// [`encode`], also putting in base64 every printable ASCII character
/// for which `shift(position, character)` is true (position in
/// characters). Such text is read back by [`decode_lenient`] only: the
/// RFC forbids it in mailbox names, which [`decode`] checks. What IMAP
/// keywords use (`email::categories`), whose atoms allow no space.
pub fn encode_shifting(name: &str, shift: impl Fn(usize, char) -> bool) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for (i, ch) in name.chars().enumerate() {
        if (' '..='~').contains(&ch) && !shift(i, ch) {
            flush_shift(&mut out, &mut pending);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut buf));
        }
    }
    flush_shift(&mut out, &mut pending);
    out
}

fn flush_shift(out: &mut String, pending: &mut Vec<u16>) {
    if pending.is_empty() {
        return;
    }
    out.push('&');
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for unit in pending.drain(..) {
        acc = (acc << 16) | u32::from(unit);
        bits += 16;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 0x3f) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 0x3f) as usize]));
    }
    out.push('-');
}

/// Decodes a modified UTF-7 mailbox name to Unicode.
pub fn decode(raw: &str) -> Result<String, Utf7Error> {
    decode_with(raw, true)
}

/// [`decode`], accepting printable ASCII inside shift sequences (the
/// output of [`encode_shifting`]).
pub fn decode_lenient(raw: &str) -> Result<String, Utf7Error> {
    decode_with(raw, false)
}

fn decode_with(raw: &str, strict: bool) -> Result<String, Utf7Error> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..=0x7e).contains(&b) {
            return Err(Utf7Error::BadByte { byte: b, at: i });
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let start = i;
        let end = bytes[i + 1..]
            .iter()
            .position(|&c| c == b'-')
            .map(|p| i + 1 + p)
            .ok_or(Utf7Error::Unterminated(start))?;
        let run = &bytes[i + 1..end];
        if run.is_empty() {
            out.push('&');
        } else {
            let mut units: Vec<u16> = Vec::with_capacity(run.len() * 6 / 16);
            let mut acc: u32 = 0;
            let mut bits = 0u32;
            for &c in run {
                let v = b64_value(c).ok_or(Utf7Error::BadShift(start))?;
                acc = (acc << 6) | v;
                bits += 6;
                if bits >= 16 {
                    bits -= 16;
                    units.push(((acc >> bits) & 0xffff) as u16);
                    acc &= (1 << bits) - 1;
                }
            }
            // Leftover bits must be padding zeros (fewer than 6 of them).
            if bits >= 6 || acc != 0 {
                return Err(Utf7Error::BadShift(start));
            }
            let decoded = String::from_utf16(&units).map_err(|_| Utf7Error::BadShift(start))?;
            // A shift sequence must not encode printable ASCII (RFC 3501 §5.1.3).
            if strict && decoded.chars().any(|c| (' '..='~').contains(&c)) {
                return Err(Utf7Error::BadShift(start));
            }
            out.push_str(&decoded);
        }
        i = end + 1;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_unchanged() {
        assert_eq!(encode("INBOX/Sent Items"), "INBOX/Sent Items");
        assert_eq!(decode("INBOX/Sent Items").unwrap(), "INBOX/Sent Items");
    }

    #[test]
    fn shifted_ascii_reads_back_leniently_only() {
        let raw = encode_shifting("Red category", |_, c| c == ' ');
        assert_eq!(raw, "Red&ACA-category");
        assert_eq!(decode_lenient(&raw).unwrap(), "Red category");
        assert!(decode(&raw).is_err());
        let first = encode_shifting("Junk", |i, _| i == 0);
        assert_eq!(decode_lenient(&first).unwrap(), "Junk");
        assert_ne!(first, "Junk");
        // Without shifting, the two encoders agree.
        assert_eq!(
            encode_shifting("Réunions & co", |_, _| false),
            encode("Réunions & co")
        );
    }

    #[test]
    fn ampersand_is_escaped() {
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode("Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode("&"), "&-");
    }

    #[test]
    fn non_ascii_known_vectors() {
        // Vectors from RFC 3501 §5.1.3 and well-known server output.
        assert_eq!(encode("Réunions"), "R&AOk-unions");
        assert_eq!(decode("R&AOk-unions").unwrap(), "Réunions");
        assert_eq!(encode("日本語"), "&ZeVnLIqe-");
        assert_eq!(decode("&ZeVnLIqe-").unwrap(), "日本語");
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
    }

    #[test]
    fn round_trip_mixed_and_astral() {
        for name in [
            "Été & hiver",
            "Пример/Папка",
            "emoji 😀 box",
            "a&b&&c",
            "Ünïcödé",
        ] {
            let enc = encode(name);
            assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{enc}");
            assert_eq!(decode(&enc).unwrap(), name, "via {enc}");
        }
    }

    #[test]
    fn malformed_names_are_errors() {
        assert_eq!(decode("abc&AOk"), Err(Utf7Error::Unterminated(3)));
        assert!(matches!(decode("a&!!-"), Err(Utf7Error::BadShift(1))));
        assert!(matches!(decode("é"), Err(Utf7Error::BadByte { .. })));
        // "&AGE-" encodes 'a' (printable ASCII): forbidden.
        assert!(matches!(decode("&AGE-"), Err(Utf7Error::BadShift(0))));
        // Lone high surrogate.
        assert!(decode("&2D0-").is_err());
    }
}
