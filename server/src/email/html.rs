//! HTML → plain text for previews and for plain-text bodies of HTML-only
//! messages: tags dropped, `<script>`/`<style>` content dropped, block tags
//! turned into line breaks, the common character entities decoded; and the
//! other way, text escaped to go inside HTML ([`escape_text`]).
//!
//! Exists because devices show Preview and Type 1 bodies as text, and raw
//! markup there is unreadable. It is a best-effort text extractor for
//! display, not an HTML parser or sanitizer: it must not be used to make
//! HTML safe, and it never fails (any input gives some text, in one pass).

/// Tags whose whole content is not text.
const SKIPPED: [&str; 4] = ["script", "style", "head", "title"];
/// Tags that start a new line.
const BLOCKS: [&str; 12] = [
    "br",
    "p",
    "div",
    "tr",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "table",
    "blockquote",
    "hr",
];

/// `text` with `&`, `<`, `>` and `"` escaped, to go inside an HTML element
/// or a quoted attribute (the HTML bodies opush writes: replies, receipts,
/// out-of-office messages).
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Extracts the text of an HTML document.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut skipping: Option<&'static str> = None;
    while let Some(lt) = rest.find('<') {
        if skipping.is_none() {
            push_text(&mut out, &rest[..lt]);
        }
        let after = &rest[lt + 1..];
        // Comments end at "-->", other tags at the next '>'.
        let (tag_body, next) = if let Some(comment) = after.strip_prefix("!--") {
            match comment.find("-->") {
                Some(end) => ("", &comment[end + 3..]),
                None => ("", ""),
            }
        } else {
            match after.find('>') {
                Some(gt) => (&after[..gt], &after[gt + 1..]),
                None => ("", ""),
            }
        };
        let closing = tag_body.starts_with('/');
        let name: String = tag_body
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match skipping {
            Some(skipped) => {
                if closing && name == skipped {
                    skipping = None;
                }
            }
            None => {
                if let Some(s) = SKIPPED.iter().find(|s| **s == name) {
                    if !closing && !tag_body.ends_with('/') {
                        skipping = Some(s);
                    }
                } else if BLOCKS.contains(&name.as_str()) && !out.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        rest = next;
    }
    if skipping.is_none() {
        push_text(&mut out, rest);
    }
    tidy_lines(&out)
}

/// Appends text with its entities decoded and runs of spaces collapsed
/// (HTML whitespace is not significant).
fn push_text(out: &mut String, text: &str) {
    let decoded = decode_entities(text);
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.is_empty() && !out.ends_with([' ', '\n']) {
                out.push(' ');
            }
        } else {
            out.push(if c == '\u{a0}' { ' ' } else { c });
        }
    }
}

/// Decodes `&amp;`-style and numeric entities; unknown ones stay as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after
            .find(';')
            .filter(|semi| *semi <= 10)
            .and_then(|semi| entity(&after[..semi]).map(|c| (c, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "ccedil" => 'ç',
        "euro" => '€',
        "copy" => '©',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        _ => return None,
    })
}

/// Trims each line and drops blank lines at the ends.
fn tidy_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut out = String::with_capacity(text.len());
    for line in lines {
        if line.is_empty() && (out.is_empty() || out.ends_with("\n\n")) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{escape_text, strip_tags};

    #[test]
    fn escaped_text_reads_back_as_itself() {
        let text = "a < b && \"c\" > d, é";
        let html = escape_text(text);
        assert_eq!(html, "a &lt; b &amp;&amp; &quot;c&quot; &gt; d, é");
        assert_eq!(strip_tags(&html), text);
    }

    #[test]
    fn tags_scripts_and_comments_are_dropped() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head>\
            <body><p>Hello <b>world</b>!</p><!-- hidden --><script>alert(1)</script>\
            <div>Second&nbsp;line &amp; more &#233;&#x20AC;</div></body></html>";
        assert_eq!(strip_tags(html), "Hello world!\nSecond line & more é€");
    }

    #[test]
    fn unterminated_markup_and_unknown_entities_never_fail() {
        assert_eq!(strip_tags("a &bogus; b <p"), "a &bogus; b");
        assert_eq!(strip_tags("x <!-- never closed"), "x");
        assert_eq!(strip_tags("<style>never closed"), "");
        assert_eq!(
            strip_tags("plain   text\n\twith  spaces"),
            "plain text with spaces"
        );
    }

    #[test]
    fn line_breaks_follow_block_tags() {
        assert_eq!(strip_tags("one<br>two<br/>three"), "one\ntwo\nthree");
    }
}
