//! SMTP submission to the configured relay (Postfix in the test stack), for
//! SendMail, SmartReply and SmartForward.
//!
//! One message is one SMTP transaction, driven command by command so that
//! each refusal is told apart: a recipient refused for good
//! ([`SmtpError::InvalidRecipients`]), the relay refusing the sender or the
//! message ([`SmtpError::Refused`], e.g. too large), bad credentials
//! ([`SmtpError::Auth`]), and anything temporary — connect failure, timeout,
//! a 4xx answer — as [`SmtpError::Unavailable`], which the device may retry.
//! When any recipient is refused the transaction is abandoned (RSET): either
//! the message goes to every recipient or to none, so a retry after fixing
//! the address cannot deliver twice to the others. Once a recipient is
//! refused for good the message is refused for good, even if the relay then
//! fails for a while (it slows down and hangs up on a client that piles up
//! refused recipients): a retry could never send it.
//!
//! This module never logs a password; credentials are only handed to lettre.

use std::time::Duration;

use lettre::address::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;

/// How to reach the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain SMTP (a loopback relay).
    #[default]
    None,
    /// Plain connection upgraded with STARTTLS (submission, port 587).
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// The relay and how to talk to it (from the `[smtp]` section of the config).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Relay host name or address.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// Bound on connecting and on each command.
    pub timeout: Duration,
    /// The name opush gives in EHLO.
    pub hello_name: String,
}

/// The login for an authenticated relay: the device user's own credentials,
/// held in memory for the duration of the request.
pub struct SmtpLogin<'a> {
    /// The IMAP/SMTP login name.
    pub user: &'a str,
    /// The password, never logged.
    pub password: &'a str,
}

impl std::fmt::Debug for SmtpLogin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpLogin")
            .field("user", &self.user)
            .field("password", &"*")
            .finish()
    }
}

/// One message to submit.
#[derive(Debug)]
pub struct Submission<'a> {
    /// Envelope sender (MAIL FROM).
    pub envelope_from: &'a str,
    /// Envelope recipients (RCPT TO), already deduplicated.
    pub recipients: &'a [String],
    /// The whole RFC 5322 message, CRLF line ends.
    pub message: &'a [u8],
}

/// What the relay said when it accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The relay's final answer to DATA, e.g. `250 2.0.0 Ok: queued as 1B945BA4E4`.
    pub reply: String,
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The relay cannot be reached or answered with a temporary failure: retry later.
    #[error("SMTP relay unavailable: {0}")]
    Unavailable(String),
    /// The relay refused these recipients for good (address, reply); nothing was sent.
    #[error("SMTP relay refused recipients: {}", .0.iter().map(|(a, r)| format!("{a} ({r})")).collect::<Vec<_>>().join(", "))]
    InvalidRecipients(Vec<(String, String)>),
    /// The relay refused the sender or the message (code and reply); nothing was sent.
    #[error("SMTP relay refused the message: {code} {reply}")]
    Refused {
        /// The SMTP reply code, e.g. 552 for a message over the relay's size limit.
        code: u16,
        /// The reply text.
        reply: String,
    },
    /// The relay rejected the credentials.
    #[error("SMTP authentication failed: {0}")]
    Auth(String),
    /// An address opush could not put in an SMTP command.
    #[error("invalid address {0:?}")]
    BadAddress(String),
    /// The submission had no recipient.
    #[error("no recipient")]
    NoRecipient,
    /// Not submitted: the request could not prove it still holds its
    /// device's lease (`crate::fence`); nothing was sent.
    #[error("SMTP {0}")]
    Fenced(crate::fence::Fenced),
}

impl SmtpError {
    /// Whether sending the same message later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SmtpError::Unavailable(_))
    }
}

fn code_of(e: &lettre::transport::smtp::Error) -> Option<u16> {
    e.status().map(|c| {
        let s = c.to_string();
        s.parse::<u16>().unwrap_or(0)
    })
}

/// Classifies a failed command: 4xx and I/O errors are temporary, 5xx final.
fn classify(e: lettre::transport::smtp::Error, what: &str) -> SmtpError {
    if e.is_permanent() {
        SmtpError::Refused {
            code: code_of(&e).unwrap_or(550),
            reply: format!("{what}: {e}"),
        }
    } else {
        SmtpError::Unavailable(format!("{what}: {e}"))
    }
}

fn parse_address(a: &str) -> Result<Address, SmtpError> {
    a.trim()
        .parse::<Address>()
        .map_err(|_| SmtpError::BadAddress(a.to_owned()))
}

/// Submits one message in one SMTP transaction (an SMTP section of the
/// request's BREAKDOWN).
pub async fn submit(
    settings: &SmtpSettings,
    login: Option<&SmtpLogin<'_>>,
    sub: &Submission<'_>,
) -> Result<Accepted, SmtpError> {
    crate::obs::timed(crate::obs::Category::Smtp, submit_now(settings, login, sub)).await
}

async fn submit_now(
    settings: &SmtpSettings,
    login: Option<&SmtpLogin<'_>>,
    sub: &Submission<'_>,
) -> Result<Accepted, SmtpError> {
    if sub.recipients.is_empty() {
        return Err(SmtpError::NoRecipient);
    }
    // The one guard of a leased request's submissions (`crate::fence`):
    // here, and again before the message's bytes go.
    crate::fence::check("SMTP submission").map_err(SmtpError::Fenced)?;
    let from = if sub.envelope_from.is_empty() {
        None
    } else {
        Some(parse_address(sub.envelope_from)?)
    };
    let rcpts = sub
        .recipients
        .iter()
        .map(|r| parse_address(r))
        .collect::<Result<Vec<_>, _>>()?;

    let hello = ClientId::Domain(settings.hello_name.clone());
    let implicit_tls = match settings.tls {
        SmtpTls::Tls => Some(tls_parameters(&settings.host)?),
        _ => None,
    };
    let mut conn = tokio::time::timeout(
        settings.timeout,
        AsyncSmtpConnection::connect_tokio1(
            (settings.host.as_str(), settings.port),
            Some(settings.timeout),
            &hello,
            implicit_tls,
            None,
        ),
    )
    .await
    .map_err(|_| {
        SmtpError::Unavailable(format!(
            "connect to {}:{} timed out",
            settings.host, settings.port
        ))
    })?
    .map_err(|e| {
        SmtpError::Unavailable(format!(
            "connect to {}:{}: {e}",
            settings.host, settings.port
        ))
    })?;

    let res = transaction(&mut conn, settings, login, from, &rcpts, sub.message).await;
    // QUIT politely; a failure here changes nothing about the outcome.
    let _ = tokio::time::timeout(settings.timeout, conn.quit()).await;
    res
}

fn tls_parameters(host: &str) -> Result<TlsParameters, SmtpError> {
    TlsParameters::new(host.to_owned())
        .map_err(|e| SmtpError::Unavailable(format!("TLS set-up for {host}: {e}")))
}

async fn step<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<Result<T, lettre::transport::smtp::Error>, SmtpError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| SmtpError::Unavailable(format!("{what}: timed out")))
}

/// Recipients refused for good after which a submission stops asking
/// about the others (Postfix's `smtpd_soft_error_limit` is 10).
const MAX_REFUSED: usize = 10;

async fn transaction(
    conn: &mut AsyncSmtpConnection,
    settings: &SmtpSettings,
    login: Option<&SmtpLogin<'_>>,
    from: Option<Address>,
    rcpts: &[Address],
    message: &[u8],
) -> Result<Accepted, SmtpError> {
    let t = settings.timeout;
    if settings.tls == SmtpTls::StartTls {
        let params = tls_parameters(&settings.host)?;
        let hello = ClientId::Domain(settings.hello_name.clone());
        step(t, "STARTTLS", conn.starttls(params, &hello))
            .await?
            .map_err(|e| classify(e, "STARTTLS"))?;
    }
    if let Some(login) = login {
        let creds = Credentials::new(login.user.to_owned(), login.password.to_owned());
        match step(
            t,
            "AUTH",
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds),
        )
        .await?
        {
            Ok(_) => {}
            Err(e) if e.is_permanent() => return Err(SmtpError::Auth(e.to_string())),
            Err(e) => return Err(SmtpError::Unavailable(format!("AUTH: {e}"))),
        }
    }
    step(t, "MAIL", conn.command(Mail::new(from, vec![])))
        .await?
        .map_err(|e| classify(e, "MAIL FROM"))?;

    let mut refused = Vec::new();
    for rcpt in rcpts {
        match step(t, "RCPT", conn.command(Rcpt::new(rcpt.clone(), vec![]))).await? {
            Ok(_) => {}
            Err(e) if e.is_permanent() => {
                refused.push((rcpt.to_string(), e.to_string()));
                // The message can no longer go (all or none): asking about
                // more only makes a relay slow down, then hang up (Postfix's
                // error limits), which would read as an outage.
                if refused.len() >= MAX_REFUSED {
                    break;
                }
            }
            // A temporary failure after a recipient refused for good: the
            // message will never go as it is, however often it is retried.
            Err(_) if !refused.is_empty() => break,
            Err(e) => {
                let _ = step(t, "RSET", conn.command(Rset)).await;
                return Err(SmtpError::Unavailable(format!("RCPT TO:<{rcpt}>: {e}")));
            }
        }
    }
    if !refused.is_empty() {
        let _ = step(t, "RSET", conn.command(Rset)).await;
        return Err(SmtpError::InvalidRecipients(refused));
    }
    // Nothing is sent before the end of DATA: the lease proven once more
    // (the relay may have been slow to answer so far).
    if let Err(f) = crate::fence::check("SMTP submission") {
        let _ = step(t, "RSET", conn.command(Rset)).await;
        return Err(SmtpError::Fenced(f));
    }
    step(t, "DATA", conn.command(Data))
        .await?
        .map_err(|e| classify(e, "DATA"))?;
    // The message itself may be large: allow the timeout per started 1 MiB.
    let data_timeout = t * u32::try_from(message.len() / (1 << 20) + 1).unwrap_or(u32::MAX);
    let resp = step(data_timeout, "message", conn.message(message))
        .await?
        .map_err(|e| classify(e, "end of DATA"))?;
    if resp.is_positive() {
        Ok(Accepted {
            reply: format!(
                "{} {}",
                resp.code(),
                resp.message().collect::<Vec<_>>().join(" ")
            ),
        })
    } else {
        Err(SmtpError::Unavailable(format!(
            "unexpected answer to DATA: {}",
            resp.code()
        )))
    }
}
