//! Typed EAS HTTP headers (MS-ASHTTP 2.2.1.1.2 and 2.2.2.1.2): protocol
//! version, policy key, Basic credentials, multipart, throttling, content type.
//!
//! Exists so header values are parsed once into types. It must not know any
//! HTTP library, and it must never let a password reach a log: [`Password`]
//! has no `Display`, and its `Debug` prints `*`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

use crate::version::{ProtocolVersion, VersionError};

/// `MS-ASProtocolVersion` (request).
pub const MS_AS_PROTOCOL_VERSION: &str = "MS-ASProtocolVersion";
/// `MS-ASProtocolVersions` (OPTIONS response).
pub const MS_AS_PROTOCOL_VERSIONS: &str = "MS-ASProtocolVersions";
/// `MS-ASProtocolCommands` (OPTIONS response).
pub const MS_AS_PROTOCOL_COMMANDS: &str = "MS-ASProtocolCommands";
/// `X-MS-PolicyKey` (request).
pub const X_MS_POLICY_KEY: &str = "X-MS-PolicyKey";
/// `MS-ASAcceptMultiPart` (request).
pub const MS_AS_ACCEPT_MULTI_PART: &str = "MS-ASAcceptMultiPart";
/// `X-MS-ASThrottle` (response).
pub const X_MS_AS_THROTTLE: &str = "X-MS-ASThrottle";
/// `MS-Server-ActiveSync` (response).
pub const MS_SERVER_ACTIVESYNC: &str = "MS-Server-ActiveSync";
/// Content type of WBXML bodies.
pub const CONTENT_TYPE_WBXML: &str = "application/vnd.ms-sync.wbxml";
/// Content type of multipart ItemOperations responses.
pub const CONTENT_TYPE_MULTIPART: &str = "application/vnd.ms-sync.multipart";
/// Content type of SendMail/SmartReply/SmartForward bodies before 14.0.
pub const CONTENT_TYPE_RFC822: &str = "message/rfc822";

/// A header value that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `MS-ASProtocolVersion` is unknown.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// `X-MS-PolicyKey` is not a u32.
    #[error("X-MS-PolicyKey is not an unsigned 32-bit number")]
    PolicyKey,
    /// `Authorization` is not `Basic <base64>` of `user:password`.
    #[error("Authorization is not valid Basic credentials")]
    Authorization,
    /// The Basic credentials hold a NUL, CR or LF, which no IMAP LOGIN or
    /// SMTP AUTH could carry.
    #[error("Authorization credentials contain a NUL, CR or LF")]
    AuthorizationControl,
    /// `Authorization` uses another scheme (e.g. Bearer).
    #[error("unsupported Authorization scheme {0:?}")]
    UnsupportedScheme(String),
    /// `MS-ASAcceptMultiPart` is not `T` or `F`.
    #[error("MS-ASAcceptMultiPart is neither T nor F")]
    AcceptMultiPart,
    /// `X-MS-ASThrottle` value is unknown.
    #[error("unknown X-MS-ASThrottle value")]
    Throttle,
}

/// Parses `MS-ASProtocolVersion`.
pub fn parse_protocol_version(value: &str) -> Result<ProtocolVersion, HeaderError> {
    Ok(value.parse()?)
}

/// `X-MS-PolicyKey`: the key the device got from Provision (0 = none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey(pub u32);

impl FromStr for PolicyKey {
    type Err = HeaderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u32>()
            .map(PolicyKey)
            .map_err(|_| HeaderError::PolicyKey)
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A password. Never printed: `Debug` shows `*`, there is no `Display`, and
/// the only way to read it is [`Password::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Password(s.into())
    }

    /// The clear text, for the authenticator only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*")
    }
}

/// A login as devices send it: `user@domain`, `DOMAIN\user` or `user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The text as sent.
    pub raw: String,
    /// The user part.
    pub user: String,
    /// The domain part, if any.
    pub domain: Option<String>,
}

impl Login {
    /// Splits a login into user and domain.
    pub fn parse(raw: &str) -> Login {
        let (user, domain) = if let Some((domain, user)) = raw.split_once('\\') {
            (user, Some(domain))
        } else if let Some((user, domain)) = raw.rsplit_once('@') {
            (user, Some(domain))
        } else {
            (raw, None)
        };
        Login {
            raw: raw.to_owned(),
            user: user.to_owned(),
            domain: domain.filter(|d| !d.is_empty()).map(str::to_owned),
        }
    }

    /// `user@domain` (or just `user`).
    pub fn email_form(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}@{}", self.user, d),
            None => self.user.clone(),
        }
    }
}

/// The text of decoded Basic credentials: UTF-8 (RFC 7617 `charset=UTF-8`,
/// what current devices send), or, when the bytes are not valid UTF-8, ISO
/// 8859-1 (older Android and Windows clients encode `user:password` in
/// Latin-1, and Exchange/IIS accept it). Latin-1 maps each byte to the code
/// point of the same value, so `Grüße` sent as Latin-1 becomes the same
/// text as `Grüße` sent as UTF-8. Bytes that happen to be valid UTF-8 are
/// always read as UTF-8 (a Latin-1 password that is also valid UTF-8, like
/// `Ã¼`, is read as `ü`; such passwords are implausible).
pub fn decode_credentials(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => e.into_bytes().into_iter().map(char::from).collect(),
    }
}

/// `Authorization: Basic …` credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The login.
    pub login: Login,
    /// The password (prints as `*`).
    pub password: Password,
}

impl BasicCredentials {
    /// Parses the `Authorization` header value.
    pub fn parse(value: &str) -> Result<Self, HeaderError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').ok_or(HeaderError::Authorization)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(HeaderError::UnsupportedScheme(
                scheme.chars().take(16).collect(),
            ));
        }
        let rest = rest.trim();
        if rest.len() > 4096 {
            return Err(HeaderError::Authorization);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| HeaderError::Authorization)?;
        let text = decode_credentials(decoded);
        let (user, password) = text.split_once(':').ok_or(HeaderError::Authorization)?;
        if user.is_empty() {
            return Err(HeaderError::Authorization);
        }
        if text.contains(['\0', '\r', '\n']) {
            return Err(HeaderError::AuthorizationControl);
        }
        Ok(BasicCredentials {
            login: Login::parse(user),
            password: Password::new(password),
        })
    }

    /// Renders the header value (for clients and tests).
    pub fn to_header_value(&self) -> String {
        let text = format!("{}:{}", self.login.raw, self.password.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

/// Parses `MS-ASAcceptMultiPart` (`T` or `F`).
pub fn parse_accept_multi_part(value: &str) -> Result<bool, HeaderError> {
    match value.trim() {
        "T" | "t" => Ok(true),
        "F" | "f" => Ok(false),
        _ => Err(HeaderError::AcceptMultiPart),
    }
}

/// `User-Agent`, kept as sent (device identification, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent(pub String);

/// `X-MS-ASThrottle` values (MS-ASHTTP 2.2.2.1.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Too many commands in a given time.
    CommandFrequency,
    /// Too many recent commands.
    RecentCommands,
    /// Too many jobs queued.
    TooManyJobsQueued,
    /// Too many devices for the user.
    DeviceLimit,
    /// Too many parallel connections.
    ConcurrentConnections,
}

impl Throttle {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Throttle::CommandFrequency => "CommandFrequency",
            Throttle::RecentCommands => "RecentCommands",
            Throttle::TooManyJobsQueued => "TooManyJobsQueued",
            Throttle::DeviceLimit => "DeviceLimit",
            Throttle::ConcurrentConnections => "ConcurrentConnections",
        }
    }
}

impl FromStr for Throttle {
    type Err = HeaderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Throttle::CommandFrequency,
            Throttle::RecentCommands,
            Throttle::TooManyJobsQueued,
            Throttle::DeviceLimit,
            Throttle::ConcurrentConnections,
        ]
        .into_iter()
        .find(|t| t.as_str() == s.trim())
        .ok_or(HeaderError::Throttle)
    }
}

/// True when a `Content-Type` value is WBXML (parameters and case ignored).
pub fn is_wbxml_content_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(CONTENT_TYPE_WBXML))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_both_login_forms() {
        let creds =
            BasicCredentials::parse("Basic ZXhjaGFuZ2UubHluLmxuZ1xleHRhOnMzY3IzdA==").unwrap();
        assert_eq!(creds.login.user, "exta");
        assert_eq!(creds.login.domain.as_deref(), Some("exchange.lyn.lng"));
        assert_eq!(creds.password.expose(), "s3cr3t");
        let creds2 = BasicCredentials::parse(&creds.to_header_value()).unwrap();
        assert_eq!(creds2, creds);

        let at = BasicCredentials {
            login: Login::parse("exta@exchange.lyn.lng"),
            password: Password::new("p:w"),
        };
        let back = BasicCredentials::parse(&at.to_header_value()).unwrap();
        assert_eq!(back.login.user, "exta");
        assert_eq!(back.login.email_form(), "exta@exchange.lyn.lng");
        assert_eq!(back.password.expose(), "p:w");
    }

    fn basic_of(bytes: &[u8]) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn special_passwords_round_trip_as_utf8() {
        for pw in [
            "Grüße-2026 100%",
            r#"p@ss "quoted" \ back:slash"#,
            "пароль 密码🔑",
            " leading and trailing ",
            "",
        ] {
            let creds = BasicCredentials {
                login: Login::parse("u@example.test"),
                password: Password::new(pw),
            };
            let back = BasicCredentials::parse(&creds.to_header_value()).unwrap();
            assert_eq!(back.password.expose(), pw);
            assert_eq!(back.login.email_form(), "u@example.test");
        }
    }

    #[test]
    fn latin1_credentials_are_read_as_latin1() {
        // "Grüße" in ISO 8859-1 (0xfc 0xdf): not valid UTF-8.
        let latin1 = b"u@example.test:Gr\xfc\xdfe-2026 100%";
        let creds = BasicCredentials::parse(&basic_of(latin1)).unwrap();
        assert_eq!(creds.password.expose(), "Grüße-2026 100%");
        assert_eq!(creds.login.raw, "u@example.test");
        // The same password in UTF-8 gives the same text.
        let utf8 = "u@example.test:Grüße-2026 100%".as_bytes();
        assert_eq!(BasicCredentials::parse(&basic_of(utf8)).unwrap(), creds);
        // A login in Latin-1 too.
        let creds = BasicCredentials::parse(&basic_of(b"j\xf6rg@example.test:pw")).unwrap();
        assert_eq!(creds.login.user, "jörg");
        // Every byte maps to the code point of its value.
        assert_eq!(decode_credentials(vec![0xff, b'a', 0x80]), "\u{ff}a\u{80}");
        assert_eq!(decode_credentials("é".as_bytes().to_vec()), "é");
    }

    #[test]
    fn credentials_with_nul_cr_or_lf_are_refused() {
        for bad in [
            &b"u@example.test:a\0b"[..],
            b"u@example.test:a\rb",
            b"u@example.test:a\nb",
            b"u@example.test:pw\r\n",
            b"u\r\n@example.test:pw",
            b"u@example.test:\xe9\0",
        ] {
            assert_eq!(
                BasicCredentials::parse(&basic_of(bad)),
                Err(HeaderError::AuthorizationControl),
                "{bad:?}"
            );
        }
        // The error text names the problem, not the password.
        let e = BasicCredentials::parse(&basic_of(b"u:secret\0")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        // Not base64, no colon, no login.
        for bad in ["Basic @@@@", "Basic dXNlcg==", "Basic OnB3", "Basic"] {
            assert_eq!(
                BasicCredentials::parse(bad),
                Err(HeaderError::Authorization),
                "{bad}"
            );
        }
    }

    #[test]
    fn password_never_printed() {
        let creds = BasicCredentials {
            login: Login::parse("u"),
            password: Password::new("hunter2"),
        };
        let dbg = format!("{creds:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains('*'));
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        assert_eq!(
            BasicCredentials::parse("Bearer abc"),
            Err(HeaderError::UnsupportedScheme("Bearer".into()))
        );
        assert_eq!(
            BasicCredentials::parse("Basic !!!"),
            Err(HeaderError::Authorization)
        );
        assert_eq!("-1".parse::<PolicyKey>(), Err(HeaderError::PolicyKey));
        assert_eq!(
            "1309925617".parse::<PolicyKey>(),
            Ok(PolicyKey(1_309_925_617))
        );
        assert_eq!(parse_accept_multi_part("T"), Ok(true));
        assert!(parse_accept_multi_part("yes").is_err());
        assert!(is_wbxml_content_type(
            "application/vnd.ms-sync.WBXML; charset=utf-8"
        ));
        assert!(!is_wbxml_content_type("text/xml"));
        assert_eq!(parse_protocol_version("14.0"), Ok(ProtocolVersion::V14_0));
        assert_eq!("DeviceLimit".parse::<Throttle>(), Ok(Throttle::DeviceLimit));
    }
}
