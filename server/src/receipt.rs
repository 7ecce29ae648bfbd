//! Delivery and read receipts opush sends itself (`[receipt] delivery`,
//! `read`), rendered from Mustache templates in the configuration directory:
//! `delivery_receipt.mustache` (`host`, `recipients` — a list whose items
//! have `address`) and `read_receipt.mustache` (`address`).
//!
//! The renderer is a small Mustache subset written here rather than a
//! dependency: the maintained Rust Mustache crates either declare no
//! `rust-version` and pull in a Markdown parser (ramhorns), or are
//! unmaintained (mustache 0.9); two fixed templates need only variables
//! (`{{x}}` escaped, `{{{x}}}` / `{{& x}}` raw), dotted names, sections and
//! inverted sections over lists and booleans, `{{.}}` and comments. Partials,
//! lambdas and delimiter changes are not supported and render as nothing.
//! Pure: reading the template files and sending are the caller's job.

use crate::email::html::escape_text;
use std::collections::BTreeMap;

/// A value a template can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A flag (sections render when true).
    Bool(bool),
    /// A list (sections render once per item).
    List(Vec<Value>),
    /// Named values.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// A map from `(name, value)` pairs.
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Bool(b) => *b,
            Value::List(l) => !l.is_empty(),
            Value::Map(_) => true,
        }
    }

    fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::List(_) | Value::Map(_) => String::new(),
        }
    }
}

/// Why a template cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed tag at byte {0}")]
    Unclosed(usize),
    /// A section closed by another name, or never closed.
    #[error("section {0:?} is not closed properly")]
    Section(String),
}

/// The data of `delivery_receipt.mustache`.
pub fn delivery_data(host: &str, recipients: &[String]) -> Value {
    Value::map([
        ("host", Value::Str(host.to_owned())),
        (
            "recipients",
            Value::List(
                recipients
                    .iter()
                    .map(|r| Value::map([("address", Value::Str(r.clone()))]))
                    .collect(),
            ),
        ),
    ])
}

/// The data of `read_receipt.mustache`.
pub fn read_data(address: &str) -> Value {
    Value::map([("address", Value::Str(address.to_owned()))])
}

/// Renders `template` with `data`.
pub fn render(template: &str, data: &Value) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut stack = vec![data];
    render_into(template, &mut stack, &mut out)?;
    Ok(out)
}

fn render_into(
    template: &str,
    stack: &mut Vec<&Value>,
    out: &mut String,
) -> Result<(), TemplateError> {
    let mut pos = 0;
    while let Some(open) = template[pos..].find("{{") {
        let open = pos + open;
        out.push_str(&template[pos..open]);
        let triple = template[open..].starts_with("{{{");
        let (inner_start, closer) = if triple {
            (open + 3, "}}}")
        } else {
            (open + 2, "}}")
        };
        let close = template[inner_start..]
            .find(closer)
            .map(|c| inner_start + c)
            .ok_or(TemplateError::Unclosed(open))?;
        let tag = template[inner_start..close].trim();
        pos = close + closer.len();
        if triple {
            out.push_str(&lookup(stack, tag).map(Value::text).unwrap_or_default());
            continue;
        }
        match tag.chars().next() {
            Some('!') => {}
            Some('&') => {
                out.push_str(
                    &lookup(stack, tag[1..].trim())
                        .map(Value::text)
                        .unwrap_or_default(),
                );
            }
            Some(c @ ('#' | '^')) => {
                let name = tag[1..].trim();
                let (body, after) = section_body(template, pos, name)?;
                pos = after;
                let value = lookup(stack, name);
                if c == '^' {
                    if !value.is_some_and(Value::truthy) {
                        render_into(body, stack, out)?;
                    }
                    continue;
                }
                match value {
                    Some(Value::List(items)) => {
                        for item in items {
                            stack.push(item);
                            let res = render_into(body, stack, out);
                            stack.pop();
                            res?;
                        }
                    }
                    Some(v) if v.truthy() => {
                        stack.push(v);
                        let res = render_into(body, stack, out);
                        stack.pop();
                        res?;
                    }
                    _ => {}
                }
            }
            Some('/') => return Err(TemplateError::Section(tag[1..].trim().to_owned())),
            Some('>' | '=') => {}
            _ => out.push_str(&escape_text(
                &lookup(stack, tag).map(Value::text).unwrap_or_default(),
            )),
        }
    }
    out.push_str(&template[pos..]);
    Ok(())
}

/// The body of the section `name` opened just before `from`, and the offset
/// after its closing tag (nested sections of the same name are counted).
fn section_body<'t>(
    template: &'t str,
    from: usize,
    name: &str,
) -> Result<(&'t str, usize), TemplateError> {
    let mut depth = 0usize;
    let mut pos = from;
    while let Some(open) = template[pos..].find("{{") {
        let open = pos + open;
        let close = template[open..]
            .find("}}")
            .map(|c| open + c)
            .ok_or(TemplateError::Unclosed(open))?;
        let tag = template[open + 2..close].trim();
        let end = close + 2;
        if let Some(n) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^')) {
            if n.trim() == name {
                depth += 1;
            }
        } else if let Some(n) = tag.strip_prefix('/') {
            if n.trim() == name {
                if depth == 0 {
                    // A standalone closing tag takes its line end with it.
                    let after = skip_newline(template, end);
                    let body = trim_leading_newline(&template[from..open]);
                    return Ok((body, after));
                }
                depth -= 1;
            }
        }
        pos = end;
    }
    Err(TemplateError::Section(name.to_owned()))
}

fn skip_newline(t: &str, at: usize) -> usize {
    if t[at..].starts_with("\r\n") {
        at + 2
    } else if t[at..].starts_with('\n') {
        at + 1
    } else {
        at
    }
}

fn trim_leading_newline(s: &str) -> &str {
    s.strip_prefix("\r\n")
        .or_else(|| s.strip_prefix('\n'))
        .unwrap_or(s)
}

/// Finds `name` (dotted, or `.`) from the innermost context outwards.
fn lookup<'a>(stack: &[&'a Value], name: &str) -> Option<&'a Value> {
    if name == "." {
        return stack.last().copied();
    }
    let mut parts = name.split('.');
    let first = parts.next()?;
    let mut value = stack.iter().rev().find_map(|ctx| match ctx {
        Value::Map(m) => m.get(first),
        _ => None,
    })?;
    for part in parts {
        value = match value {
            Value::Map(m) => m.get(part)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A receipt message: `from` to `to`, subject `subject`, in reply to
/// `message_id`, with `text` as its plain body.
pub fn receipt_message(
    from: &crate::outgoing::Sender,
    to: &crate::outgoing::Sender,
    subject: &str,
    message_id: &str,
    text: &str,
    stamp: &crate::outgoing::Stamp,
) -> Vec<u8> {
    use mail_builder::headers::raw::Raw;
    use mail_builder::MessageBuilder;
    let builder = MessageBuilder::new()
        .from((from.display_name.as_str(), from.address.as_str()))
        .to((to.display_name.as_str(), to.address.as_str()))
        .subject(subject)
        .header("Date", Raw::new(stamp.date.as_str()))
        .message_id(format!("receipt.{}@{}", stamp.unique, stamp.host))
        .in_reply_to(message_id)
        .references(message_id)
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .text_body(text);
    let mut out = Vec::with_capacity(text.len() + 512);
    // Writing to a Vec cannot fail.
    let _ = builder.write_to(&mut out);
    out
}

/// The delivery receipt template used when the configuration directory has none.
pub const DEFAULT_DELIVERY_TEMPLATE: &str =
    "Your message was delivered by {{host}} to:\n{{#recipients}}\n  {{address}}\n{{/recipients}}\n";

/// The read receipt template used when the configuration directory has none.
pub const DEFAULT_READ_TEMPLATE: &str = "Your message was read by {{address}}.\n";

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn delivery_template_lists_recipients() {
        let data = delivery_data(
            "mx.example.test",
            &["bob@example.test".into(), "carol@example.test".into()],
        );
        let out = render(DEFAULT_DELIVERY_TEMPLATE, &data).unwrap();
        assert_eq!(
            out,
            "Your message was delivered by mx.example.test to:\n  bob@example.test\n  carol@example.test\n"
        );
        let out = render("{{#recipients}}{{address}};{{/recipients}}", &data).unwrap();
        assert_eq!(out, "bob@example.test;carol@example.test;");
    }

    #[test]
    fn variables_escape_sections_and_inverted() {
        let data = Value::map([
            ("name", Value::Str("<Bob & co>".into())),
            ("empty", Value::List(vec![])),
            ("yes", Value::Bool(true)),
            ("inner", Value::map([("x", Value::Str("deep".into()))])),
        ]);
        assert_eq!(
            render("{{name}}|{{{name}}}|{{& name}}", &data).unwrap(),
            "&lt;Bob &amp; co&gt;|<Bob & co>|<Bob & co>"
        );
        assert_eq!(
            render("{{#empty}}no{{/empty}}{{^empty}}none{{/empty}}", &data).unwrap(),
            "none"
        );
        assert_eq!(
            render("{{#yes}}{{name}}{{/yes}}", &data).unwrap(),
            "&lt;Bob &amp; co&gt;"
        );
        assert_eq!(
            render("{{inner.x}} {{#inner}}{{x}}{{/inner}}", &data).unwrap(),
            "deep deep"
        );
        assert_eq!(render("{{! note }}{{missing}}.", &data).unwrap(), ".");
        assert_eq!(
            render(
                &DEFAULT_READ_TEMPLATE.replace("{{address}}", "{{.}}"),
                &Value::Str("a".into())
            )
            .unwrap(),
            "Your message was read by a.\n"
        );
    }

    #[test]
    fn broken_templates_are_errors() {
        let data = read_data("a@b");
        assert_eq!(render("{{address", &data), Err(TemplateError::Unclosed(0)));
        assert!(matches!(
            render("{{#a}}x", &data),
            Err(TemplateError::Section(_))
        ));
        assert!(matches!(
            render("x{{/a}}", &data),
            Err(TemplateError::Section(_))
        ));
    }
}
