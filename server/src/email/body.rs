//! The AirSyncBase `Body` of an email, chosen from the device's
//! `BodyPreference` list ([MS-ASAIRS] 2.2.2.7): plain text (1), HTML (2) or
//! MIME (4), truncated to `TruncationSize` on a character boundary, empty
//! under `AllOrNone` when it would not fit, with a plain-text `Preview`
//! (14.0+) taken from the text part or the HTML stripped of its tags.
//!
//! It works on an already parsed message and never fails: a message without
//! a text part gets an empty body, never an error. It must not fetch
//! anything; the caller bounds the size of what it passes in.

use std::borrow::Cow;

use opush_protocol::commands::airsyncbase::{Body, BodyPreference};
use opush_protocol::version::ProtocolVersion;

use super::html::strip_tags;

/// Body Type values ([MS-ASAIRS] 2.2.2.22.1).
pub const TYPE_PLAIN: u8 = 1;
/// HTML.
pub const TYPE_HTML: u8 = 2;
/// MIME (the whole message).
pub const TYPE_MIME: u8 = 4;

/// Longest Preview the protocol allows ([MS-ASAIRS] 2.2.2.37.1).
pub const MAX_PREVIEW: u32 = 255;

/// The renditions of one message a body can be built from.
#[derive(Debug, Clone, Copy)]
pub struct BodySource<'a> {
    /// The text/plain body, if the message has one.
    pub text: Option<&'a str>,
    /// The text/html body, if the message has one.
    pub html: Option<&'a str>,
    /// The whole message as stored (or its start: see `cut`).
    pub mime: &'a [u8],
    /// The whole sizes of the renditions given only in part.
    pub cut: Cut,
}

/// The whole sizes of a message's renditions that a [`BodySource`] holds
/// only the start of (a large message rendered from its skeleton,
/// `super::skeleton`): `EstimatedDataSize` says the whole size, and the
/// body is Truncated however much the device asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// The text body's whole size (UTF-8 bytes), when `text` is its start.
    pub text: Option<u64>,
    /// The HTML body's whole size, when `html` is its start.
    pub html: Option<u64>,
    /// The message's whole size, when `mime` is its start.
    pub mime: Option<u64>,
}

impl Cut {
    /// Nothing cut.
    pub const NONE: Cut = Cut {
        text: None,
        html: None,
        mime: None,
    };
}

impl BodySource<'_> {
    /// `NativeBodyType`: HTML when the message has an HTML part, else plain.
    pub fn native_type(&self) -> u8 {
        if self.html.is_some() {
            TYPE_HTML
        } else {
            TYPE_PLAIN
        }
    }

    // Renditions borrow what the message already holds: a body is copied
    // once, when it is cut to its truncated size or handed over whole.
    fn plain(&self) -> Cow<'_, str> {
        match (self.text, self.html) {
            (Some(t), _) => Cow::Borrowed(t),
            (None, Some(h)) => Cow::Owned(strip_tags(h)),
            (None, None) => Cow::Borrowed(""),
        }
    }

    fn html(&self) -> Cow<'_, str> {
        match (self.html, self.text) {
            (Some(h), _) => Cow::Borrowed(h),
            (None, Some(t)) => Cow::Owned(text_to_html(t)),
            (None, None) => Cow::Borrowed(""),
        }
    }

    /// The whole size of the `body_type` rendition, `rendered` bytes of
    /// which are at hand, and whether that is only its start. A rendition
    /// converted from a cut one (HTML stripped to text, text escaped to
    /// HTML) is estimated: what is at hand, scaled as the source's whole
    /// size is to what was read of it.
    fn whole_size(&self, body_type: u8, rendered: u64) -> (u64, bool) {
        let scaled = |whole: Option<u64>, have: Option<&str>| {
            let have = have.map_or(0, |h| h.len() as u64);
            whole.map(|w| (u128::from(rendered) * u128::from(w) / u128::from(have.max(1))) as u64)
        };
        let whole = match body_type {
            TYPE_MIME => self.cut.mime,
            TYPE_HTML if self.html.is_some() => self.cut.html,
            TYPE_HTML => scaled(self.cut.text, self.text),
            _ if self.text.is_some() => self.cut.text,
            _ => scaled(self.cut.html, self.html),
        };
        match whole {
            Some(w) => (w.max(rendered), true),
            None => (rendered, false),
        }
    }

    fn render(&self, body_type: u8) -> Cow<'_, str> {
        match body_type {
            TYPE_HTML => self.html(),
            TYPE_MIME => String::from_utf8_lossy(self.mime),
            _ => self.plain(),
        }
    }
}

/// Picks the preference the server answers with: the one asking for the
/// message's native type if present, else MIME if asked, else the highest
/// of HTML and plain text. RTF (3) and unknown types are never chosen.
pub fn choose_preference(prefs: &[BodyPreference], native: u8) -> Option<&BodyPreference> {
    let supported = |p: &&BodyPreference| matches!(p.body_type, TYPE_PLAIN | TYPE_HTML | TYPE_MIME);
    prefs
        .iter()
        .filter(supported)
        .find(|p| p.body_type == native)
        .or_else(|| {
            prefs
                .iter()
                .filter(supported)
                .find(|p| p.body_type == TYPE_MIME)
        })
        .or_else(|| prefs.iter().filter(supported).max_by_key(|p| p.body_type))
}

/// What an item's header fields (From, To, Subject, …) and fixed elements
/// are assumed to add to a response at most (never more than the message).
pub const ENVELOPE_BYTES: u64 = 4096;

/// An upper estimate, without reading the message, of the bytes the Email of
/// a message of `size` bytes (RFC822.SIZE) adds to a response for `prefs`:
/// the body as [`build_body`] would choose and truncate it (whichever the
/// message's native type turns out to be), the Preview, and the envelope
/// ([`ENVELOPE_BYTES`], at most `size`). Sync sizes its windows with it, so
/// a truncated window holds more messages than a MIME one.
pub fn rendered_estimate(size: u64, prefs: &[BodyPreference], version: ProtocolVersion) -> u64 {
    let default = BodyPreference {
        body_type: TYPE_PLAIN,
        ..BodyPreference::default()
    };
    let body = [TYPE_PLAIN, TYPE_HTML]
        .into_iter()
        .map(|native| {
            let pref = choose_preference(prefs, native).unwrap_or(&default);
            let data = match pref.truncation_size {
                Some(max) => size.min(u64::from(max)),
                None => size,
            };
            let preview = match pref.preview {
                // UTF-8: at most 4 bytes a character.
                Some(n) if version >= ProtocolVersion::V14_0 => u64::from(n.min(MAX_PREVIEW)) * 4,
                _ => 0,
            };
            data + preview
        })
        .max()
        .unwrap_or(size);
    body + size.min(ENVELOPE_BYTES)
}

/// Builds the `Body` for `prefs` (an empty list means plain text, whole).
pub fn build_body(
    src: &BodySource<'_>,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
) -> Body {
    let default = BodyPreference {
        body_type: TYPE_PLAIN,
        ..BodyPreference::default()
    };
    let pref = choose_preference(prefs, src.native_type()).unwrap_or(&default);
    let full = src.render(pref.body_type);
    let (full_size, cut) = src.whole_size(pref.body_type, full.len() as u64);
    let (data, truncated) = match pref.truncation_size {
        Some(max) if full_size > u64::from(max) => {
            if pref.all_or_none == Some(true) {
                (None, true)
            } else {
                (Some(truncate_utf8(&full, max as usize).to_owned()), true)
            }
        }
        // All of it was asked, and only its start is at hand: that start.
        _ if cut && pref.all_or_none == Some(true) => (None, true),
        _ if cut => (Some(full.to_string()), true),
        _ => (Some(full.to_string()), false),
    };
    let preview = match pref.preview {
        Some(n) if n > 0 && version >= ProtocolVersion::V14_0 => {
            let max_chars = n.min(MAX_PREVIEW) as usize;
            // The plain rendition is the body already when plain was chosen.
            Some(if pref.body_type == TYPE_PLAIN {
                preview_of(&full, max_chars)
            } else {
                preview(src, max_chars)
            })
        }
        _ => None,
    };
    Body {
        body_type: pref.body_type,
        estimated_data_size: Some(full_size),
        truncated: Some(truncated),
        data,
        preview,
    }
}

/// The first `max_chars` characters of the plain text, whitespace collapsed.
pub fn preview(src: &BodySource<'_>, max_chars: usize) -> String {
    preview_of(&src.plain(), max_chars)
}

/// [`preview`] of a plain text.
fn preview_of(plain: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut n_chars = 0;
    for word in plain.split_whitespace() {
        for c in (!out.is_empty())
            .then_some(' ')
            .into_iter()
            .chain(word.chars())
        {
            if n_chars == max_chars {
                return out;
            }
            out.push(c);
            n_chars += 1;
        }
    }
    out
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A plain text shown as HTML (escaped, line breaks kept).
fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str("<html><body>");
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' => out.push_str("<br>\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pref(
        body_type: u8,
        truncation_size: Option<u32>,
        all_or_none: Option<bool>,
    ) -> BodyPreference {
        BodyPreference {
            body_type,
            truncation_size,
            all_or_none,
            preview: None,
        }
    }

    const SRC: BodySource<'static> = BodySource {
        text: Some("héllo wörld, a plain body"),
        html: Some("<p>héllo <b>wörld</b></p>"),
        mime: b"Subject: x\r\n\r\nbody",
        cut: Cut::NONE,
    };

    #[test]
    fn native_html_wins_then_mime_then_highest() {
        let both = [pref(1, None, None), pref(2, None, None)];
        assert_eq!(
            choose_preference(&both, TYPE_HTML).map(|p| p.body_type),
            Some(2)
        );
        assert_eq!(
            choose_preference(&both, TYPE_PLAIN).map(|p| p.body_type),
            Some(1)
        );
        let mime = [pref(1, None, None), pref(4, None, None)];
        assert_eq!(
            choose_preference(&mime, TYPE_HTML).map(|p| p.body_type),
            Some(4)
        );
        assert_eq!(choose_preference(&[pref(3, None, None)], TYPE_PLAIN), None);
    }

    #[test]
    fn truncation_cuts_on_a_char_boundary() {
        // "héllo": h(1) é(2) → 2 bytes would split 'é'.
        let body = build_body(&SRC, &[pref(1, Some(2), None)], ProtocolVersion::V14_1);
        assert_eq!(body.data.as_deref(), Some("h"));
        assert_eq!(body.truncated, Some(true));
        assert_eq!(
            body.estimated_data_size,
            Some(SRC.text.map_or(0, str::len) as u64)
        );
    }

    #[test]
    fn all_or_none_sends_nothing_when_too_big_and_everything_when_it_fits() {
        let cut = build_body(
            &SRC,
            &[pref(2, Some(5), Some(true))],
            ProtocolVersion::V14_1,
        );
        assert_eq!((cut.data, cut.truncated), (None, Some(true)));
        let fits = build_body(
            &SRC,
            &[pref(2, Some(500), Some(true))],
            ProtocolVersion::V14_1,
        );
        assert_eq!(fits.data.as_deref(), SRC.html);
        assert_eq!(fits.truncated, Some(false));
    }

    #[test]
    fn mime_is_the_whole_message_and_plain_of_html_only_is_stripped() {
        let mime = build_body(&SRC, &[pref(4, None, None)], ProtocolVersion::V12_1);
        assert_eq!(mime.data.as_deref(), Some("Subject: x\r\n\r\nbody"));
        let html_only = BodySource { text: None, ..SRC };
        let plain = build_body(&html_only, &[pref(1, None, None)], ProtocolVersion::V12_1);
        assert_eq!(plain.data.as_deref(), Some("héllo wörld"));
    }

    #[test]
    fn preview_is_plain_bounded_and_only_from_14() {
        let mut p = pref(2, None, None);
        p.preview = Some(8);
        let html_only = BodySource { text: None, ..SRC };
        let body = build_body(&html_only, &[p.clone()], ProtocolVersion::V14_1);
        assert_eq!(body.preview.as_deref(), Some("héllo wö"));
        let old = build_body(&html_only, &[p], ProtocolVersion::V12_1);
        assert_eq!(old.preview, None);
    }

    #[test]
    fn plain_text_asked_as_html_is_escaped() {
        let plain_only = BodySource {
            text: Some("a<b\nc"),
            html: None,
            mime: b"",
            cut: Cut::NONE,
        };
        let body = build_body(&plain_only, &[pref(2, None, None)], ProtocolVersion::V16_1);
        assert_eq!(
            body.data.as_deref(),
            Some("<html><body>a&lt;b<br>\nc</body></html>")
        );
    }

    #[test]
    fn the_estimate_follows_truncation_and_bounds_the_rendered_body() {
        let v = ProtocolVersion::V14_1;
        let mb = 1_000_000;
        let truncated = [pref(TYPE_PLAIN, Some(500), None)];
        let mime = [pref(TYPE_MIME, None, None)];
        assert_eq!(rendered_estimate(mb, &truncated, v), 500 + ENVELOPE_BYTES);
        assert_eq!(rendered_estimate(mb, &mime, v), mb + ENVELOPE_BYTES);
        assert_eq!(rendered_estimate(mb, &[], v), mb + ENVELOPE_BYTES);
        assert_eq!(rendered_estimate(100, &truncated, v), 200);
        // HTML native with only a plain preference asked: the larger wins.
        let both = [
            pref(TYPE_PLAIN, Some(500), None),
            pref(TYPE_MIME, None, None),
        ];
        assert_eq!(rendered_estimate(mb, &both, v), mb + ENVELOPE_BYTES);
        // The estimate bounds what build_body renders.
        let text = "word ".repeat(2000);
        let msg = format!("Subject: x\r\n\r\n{text}");
        let src = BodySource {
            text: Some(&text),
            html: None,
            mime: msg.as_bytes(),
            cut: Cut::NONE,
        };
        for prefs in [&truncated[..], &mime[..], &[]] {
            let body = build_body(&src, prefs, v);
            let rendered = body.data.map_or(0, |d| d.len()) as u64;
            assert!(rendered <= rendered_estimate(msg.len() as u64, prefs, v));
        }
    }
}
