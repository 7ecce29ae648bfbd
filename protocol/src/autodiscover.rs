//! Autodiscover for mobile sync (MS-ASCMD 2.2.1.1): the plain-XML request a
//! device posts to `/autodiscover/autodiscover.xml`, and the response that
//! points it at the `Microsoft-Server-ActiveSync` URL (or an error).
//!
//! Exists so the server answers Autodiscover from typed values. It must not
//! resolve users or build URLs from configuration: the caller passes them.
//! Input is bounded ([`MAX_REQUEST_BYTES`]); bad XML is a typed error.

use quick_xml::events::Event;
use quick_xml::Reader;

/// The request namespace.
pub const REQUEST_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006";
/// The only response schema this server answers with.
pub const MOBILESYNC_RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006";
/// The outer response namespace.
pub const RESPONSE_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";
/// Requests longer than this are rejected.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why an Autodiscover body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AutodiscoverError {
    /// Body larger than [`MAX_REQUEST_BYTES`].
    #[error("autodiscover body too large")]
    TooLarge,
    /// Not well-formed XML.
    #[error("autodiscover body is not well-formed XML: {0}")]
    Xml(String),
    /// No `Request/EMailAddress`.
    #[error("autodiscover request has no EMailAddress")]
    MissingEmailAddress,
    /// The root element is not `Autodiscover`.
    #[error("autodiscover root element is {0:?}")]
    UnexpectedRoot(String),
    /// `Request/EMailAddress` holds a control character (or one XML 1.0
    /// cannot carry at all, even escaped): it could not be answered in a
    /// well-formed document.
    #[error("autodiscover EMailAddress holds a control character")]
    InvalidEmailAddress,
}

/// A parsed Autodiscover request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutodiscoverRequest {
    /// `Request/EMailAddress`.
    pub email_address: String,
    /// `Request/AcceptableResponseSchema`, if sent.
    pub acceptable_response_schema: Option<String>,
}

impl AutodiscoverRequest {
    /// True when the device accepts the mobilesync response schema (or did
    /// not say). Otherwise the server answers error 601.
    pub fn accepts_mobilesync(&self) -> bool {
        self.acceptable_response_schema
            .as_deref()
            .is_none_or(|s| s.trim() == MOBILESYNC_RESPONSE_SCHEMA)
    }

    /// Parses the request body.
    pub fn parse(body: &[u8]) -> Result<Self, AutodiscoverError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(AutodiscoverError::TooLarge);
        }
        let leaves = leaves(body)?;
        let mut email_address = None;
        let mut schema = None;
        for (path, text) in leaves {
            match path.as_slice() {
                [root, ..] if root != "Autodiscover" => {
                    return Err(AutodiscoverError::UnexpectedRoot(root.clone()))
                }
                [_, r, e] if r == "Request" && e == "EMailAddress" => {
                    email_address = Some(text.trim().to_owned())
                }
                [_, r, e] if r == "Request" && e == "AcceptableResponseSchema" => {
                    schema = Some(text.trim().to_owned())
                }
                _ => {}
            }
        }
        let email_address = email_address
            .filter(|e| !e.is_empty())
            .ok_or(AutodiscoverError::MissingEmailAddress)?;
        // The address is echoed in the answer: a control character (a
        // `&#1;` reference decodes to one) has no place in an address, and
        // most of them no XML 1.0 form at all.
        if email_address
            .chars()
            .any(|c| c.is_control() || !is_xml_char(c))
        {
            return Err(AutodiscoverError::InvalidEmailAddress);
        }
        Ok(AutodiscoverRequest {
            email_address,
            acceptable_response_schema: schema,
        })
    }

    /// Renders a request (for clients and tests).
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        out.push_str(&format!("<Autodiscover xmlns=\"{REQUEST_SCHEMA}\">"));
        out.push_str("<Request>");
        text_element(&mut out, "EMailAddress", &self.email_address);
        if let Some(s) = &self.acceptable_response_schema {
            text_element(&mut out, "AcceptableResponseSchema", s);
        }
        out.push_str("</Request></Autodiscover>");
        out
    }
}

/// One `Action/Settings/Server` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSetting {
    /// `MobileSync` or `CertEnroll`.
    pub server_type: String,
    /// The URL.
    pub url: String,
    /// `Name` (for MobileSync, the URL again).
    pub name: Option<String>,
}

/// A successful mobilesync response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutodiscoverResponse {
    /// `Culture`, e.g. `en:us`.
    pub culture: String,
    /// `User/DisplayName`.
    pub display_name: String,
    /// `User/EMailAddress`.
    pub email_address: String,
    /// `Action/Settings/Server` entries.
    pub servers: Vec<ServerSetting>,
}

impl AutodiscoverResponse {
    /// A response with one MobileSync server whose Url and Name are `url`.
    pub fn mobile_sync(display_name: &str, email_address: &str, url: &str) -> Self {
        AutodiscoverResponse {
            culture: "en:us".to_owned(),
            display_name: display_name.to_owned(),
            email_address: email_address.to_owned(),
            servers: vec![ServerSetting {
                server_type: "MobileSync".to_owned(),
                url: url.to_owned(),
                name: Some(url.to_owned()),
            }],
        }
    }

    /// Renders the response XML.
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        out.push_str(&format!(
            "<Autodiscover xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns=\"{RESPONSE_SCHEMA}\">"
        ));
        out.push_str(&format!(
            "<Response xmlns=\"{MOBILESYNC_RESPONSE_SCHEMA}\">"
        ));
        text_element(&mut out, "Culture", &self.culture);
        out.push_str("<User>");
        text_element(&mut out, "DisplayName", &self.display_name);
        text_element(&mut out, "EMailAddress", &self.email_address);
        out.push_str("</User><Action><Settings>");
        for s in &self.servers {
            out.push_str("<Server>");
            text_element(&mut out, "Type", &s.server_type);
            text_element(&mut out, "Url", &s.url);
            if let Some(n) = &s.name {
                text_element(&mut out, "Name", n);
            }
            out.push_str("</Server>");
        }
        out.push_str("</Settings></Action></Response></Autodiscover>");
        out
    }

    /// Parses a response (for clients and tests).
    pub fn parse(body: &[u8]) -> Result<Self, AutodiscoverError> {
        let mut res = AutodiscoverResponse {
            culture: String::new(),
            display_name: String::new(),
            email_address: String::new(),
            servers: Vec::new(),
        };
        let mut current: Option<ServerSetting> = None;
        for (path, text) in leaves(body)? {
            let names: Vec<&str> = path.iter().map(String::as_str).collect();
            match names.as_slice() {
                [_, "Response", "Culture"] => res.culture = text,
                [_, "Response", "User", "DisplayName"] => res.display_name = text,
                [_, "Response", "User", "EMailAddress"] => res.email_address = text,
                [_, "Response", "Action", "Settings", "Server", field] => {
                    let s = current.get_or_insert_with(|| ServerSetting {
                        server_type: String::new(),
                        url: String::new(),
                        name: None,
                    });
                    match *field {
                        "Type" => {
                            if !s.server_type.is_empty() {
                                let done = std::mem::replace(
                                    s,
                                    ServerSetting {
                                        server_type: String::new(),
                                        url: String::new(),
                                        name: None,
                                    },
                                );
                                res.servers.push(done);
                            }
                            s.server_type = text;
                        }
                        "Url" => s.url = text,
                        "Name" => s.name = Some(text),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        res.servers.extend(current);
        Ok(res)
    }
}

/// Autodiscover error codes (MS-ASCMD 2.2.3.59).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutodiscoverErrorCode {
    /// 600: invalid request.
    InvalidRequest,
    /// 601: the requested schema is not available.
    SchemaNotAvailable,
}

impl AutodiscoverErrorCode {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            AutodiscoverErrorCode::InvalidRequest => 600,
            AutodiscoverErrorCode::SchemaNotAvailable => 601,
        }
    }

    /// The message that goes with the code.
    pub fn message(self) -> &'static str {
        match self {
            AutodiscoverErrorCode::InvalidRequest => "Invalid Request",
            AutodiscoverErrorCode::SchemaNotAvailable => "Provider is not available",
        }
    }
}

/// Renders the error response (outer schema, `Response/Error`). `time` is
/// the `Time` attribute (e.g. `16:56:32.6164027`) and `id` the `Id`
/// attribute; the caller supplies both because this crate has no clock.
pub fn error_response_xml(code: AutodiscoverErrorCode, time: &str, id: &str) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(&format!(
        "<Autodiscover xmlns=\"{RESPONSE_SCHEMA}\"><Response>"
    ));
    out.push_str(&format!(
        "<Error Time=\"{}\" Id=\"{}\">",
        quick_xml::escape::escape(time),
        quick_xml::escape::escape(id)
    ));
    text_element(&mut out, "ErrorCode", &code.code().to_string());
    text_element(&mut out, "Message", code.message());
    out.push_str("<DebugData /></Error></Response></Autodiscover>");
    out
}

/// Opens a mobilesync response document up to and including `<User>…</User>`.
fn mobilesync_head(out: &mut String, culture: &str, display_name: &str, email_address: &str) {
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(&format!(
        "<Autodiscover xmlns=\"{RESPONSE_SCHEMA}\"><Response xmlns=\"{MOBILESYNC_RESPONSE_SCHEMA}\">"
    ));
    text_element(out, "Culture", culture);
    out.push_str("<User>");
    text_element(out, "DisplayName", display_name);
    text_element(out, "EMailAddress", email_address);
    out.push_str("</User>");
}

/// Renders a mobilesync response whose `Action/Redirect` tells the device to
/// run Autodiscover again with another email address.
pub fn redirect_response_xml(display_name: &str, email_address: &str, redirect_to: &str) -> String {
    let mut out = String::new();
    mobilesync_head(&mut out, "en:us", display_name, email_address);
    out.push_str("<Action>");
    text_element(&mut out, "Redirect", redirect_to);
    out.push_str("</Action></Response></Autodiscover>");
    out
}

/// Renders a mobilesync response whose `Action/Error` reports a failure for
/// this user (`Status` 1 = error, with a message and debug data).
pub fn action_error_response_xml(
    display_name: &str,
    email_address: &str,
    message: &str,
    debug_data: &str,
) -> String {
    let mut out = String::new();
    mobilesync_head(&mut out, "en:us", display_name, email_address);
    out.push_str("<Action><Error>");
    text_element(&mut out, "Status", "1");
    text_element(&mut out, "Message", message);
    text_element(&mut out, "DebugData", debug_data);
    out.push_str("</Error></Action></Response></Autodiscover>");
    out
}

/// Whether XML 1.0 can carry `c` (its `Char` production): not the C0
/// controls but tab, line feed and carriage return, nor U+FFFE and U+FFFF.
/// Not even as a character reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{fffd}' | '\u{10000}'..)
}

fn text_element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    // Every document written here stays well-formed: a character XML
    // cannot carry (none should arrive: see `AutodiscoverRequest::parse`)
    // is written as U+FFFD.
    if text.chars().all(is_xml_char) {
        out.push_str(&quick_xml::escape::escape(text));
    } else {
        let clean: String = text
            .chars()
            .map(|c| if is_xml_char(c) { c } else { '\u{fffd}' })
            .collect();
        out.push_str(&quick_xml::escape::escape(&clean));
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Every text-bearing element as (path of local names, text), in document order.
fn leaves(body: &[u8]) -> Result<Vec<(Vec<String>, String)>, AutodiscoverError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(AutodiscoverError::TooLarge);
    }
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| AutodiscoverError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) => {
                if path.len() > 32 {
                    return Err(AutodiscoverError::Xml("nesting too deep".to_owned()));
                }
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Empty(e) => {
                let mut p = path.clone();
                p.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                out.push((p, String::new()));
            }
            Event::Text(t) => {
                let text = t
                    .unescape()
                    .map_err(|e| AutodiscoverError::Xml(e.to_string()))?;
                if !text.trim().is_empty() {
                    if path.is_empty() {
                        return Err(AutodiscoverError::Xml("text outside the root".to_owned()));
                    }
                    out.push((path.clone(), text.into_owned()));
                }
            }
            Event::CData(t) => {
                out.push((path.clone(), String::from_utf8_lossy(&t).into_owned()));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !path.is_empty() {
        return Err(AutodiscoverError::Xml("unclosed element".to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    const REQUEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006">
  <Request>
    <EMailAddress>exta@exchange.lyn.lng</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;

    #[test]
    fn parses_device_request() {
        let req = AutodiscoverRequest::parse(REQUEST.as_bytes()).unwrap();
        assert_eq!(req.email_address, "exta@exchange.lyn.lng");
        assert!(req.accepts_mobilesync());
        assert_eq!(AutodiscoverRequest::parse(req.to_xml().as_bytes()), Ok(req));
    }

    #[test]
    fn rejects_bad_requests() {
        assert_eq!(
            AutodiscoverRequest::parse(b"<Autodiscover><Request/></Autodiscover>"),
            Err(AutodiscoverError::MissingEmailAddress)
        );
        assert!(matches!(
            AutodiscoverRequest::parse(b"<Autodiscover><Request>"),
            Err(AutodiscoverError::Xml(_))
        ));
        assert!(matches!(
            AutodiscoverRequest::parse(
                b"<Other><Request><EMailAddress>a</EMailAddress></Request></Other>"
            ),
            Err(AutodiscoverError::UnexpectedRoot(_))
        ));
        let other_schema = REQUEST.replace("mobilesync/responseschema", "outlook/responseschema");
        let req = AutodiscoverRequest::parse(other_schema.as_bytes()).unwrap();
        assert!(!req.accepts_mobilesync());
        assert_eq!(
            AutodiscoverRequest::parse(&vec![b' '; MAX_REQUEST_BYTES + 1]),
            Err(AutodiscoverError::TooLarge)
        );
    }

    #[test]
    fn control_characters_in_the_address_are_refused() {
        // Raw, and as the character references a device may send: XML 1.0
        // has no form for most of them, so they could not be echoed.
        for address in [
            "a\u{1}b@example.test",
            "a&#1;b@example.test",
            "a&#x1b;[2Jb@example.test",
            "a&#10;b@example.test",
            "a\tb@example.test",
            "a\u{7f}@example.test",
            "a\u{85}@example.test",
            "a&#xFFFE;@example.test",
        ] {
            let body = REQUEST.replace("exta@exchange.lyn.lng", address);
            assert_eq!(
                AutodiscoverRequest::parse(body.as_bytes()),
                Err(AutodiscoverError::InvalidEmailAddress),
                "{address:?}"
            );
        }
        // Non-ASCII letters are no control characters.
        let body = REQUEST.replace("exta@exchange.lyn.lng", "jürgen@exämple.test");
        let req = AutodiscoverRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(req.email_address, "jürgen@exämple.test");
    }

    #[test]
    fn what_xml_cannot_carry_is_never_written() {
        let xml = AutodiscoverResponse::mobile_sync(
            "a\u{1}b\u{ffff}",
            "c\u{1b}d@x",
            "https://mail.example.org/Microsoft-Server-ActiveSync",
        )
        .to_xml();
        assert!(!xml.chars().any(|c| !is_xml_char(c)), "{xml:?}");
        let res = AutodiscoverResponse::parse(xml.as_bytes()).unwrap();
        assert_eq!(res.display_name, "a\u{fffd}b\u{fffd}");
        assert_eq!(res.email_address, "c\u{fffd}d@x");
    }

    #[test]
    fn response_renders_and_parses_back() {
        let res = AutodiscoverResponse::mobile_sync(
            "Ex <Ta> & co",
            "exta@exchange.lyn.lng",
            "https://mail.example.org/Microsoft-Server-ActiveSync",
        );
        let xml = res.to_xml();
        assert!(xml.contains("<Type>MobileSync</Type>"));
        assert!(xml.contains("Ex &lt;Ta&gt; &amp; co"));
        assert_eq!(AutodiscoverResponse::parse(xml.as_bytes()), Ok(res));
    }

    #[test]
    fn redirect_and_action_error_are_well_formed() {
        let xml = redirect_response_xml("Ann", "ann@old.example", "ann@new.example");
        let found = leaves(xml.as_bytes()).unwrap();
        assert!(found.iter().any(
            |(p, t)| p.last().map(String::as_str) == Some("Redirect") && t == "ann@new.example"
        ));
        let xml = action_error_response_xml("Ann", "ann@x", "No mailbox", "a<b");
        let found = leaves(xml.as_bytes()).unwrap();
        assert!(found.iter().any(|(p, t)| p.join("/")
            == "Autodiscover/Response/Action/Error/DebugData"
            && t == "a<b"));
    }

    #[test]
    fn error_response_has_code_and_message() {
        let xml = error_response_xml(AutodiscoverErrorCode::SchemaNotAvailable, "10:00:00", "1");
        assert!(xml.contains("<ErrorCode>601</ErrorCode>"), "{xml}");
        assert!(xml.contains("Id=\"1\""));
    }
}
