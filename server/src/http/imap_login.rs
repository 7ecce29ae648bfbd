//! The production [`CredentialVerifier`]: an IMAP LOGIN (then LOGOUT) through
//! the IMAP backend's [`ImapClient::login`], which tells a refused login
//! (`ImapError::Auth`: HTTP 401) from a server that could not be asked
//! (everything else: HTTP 503).
//!
//! It must not log or keep the password; the login name the device sent is
//! passed as `user@domain` and the backend applies `[imap] login_with_domain`.

use std::time::Duration;

use futures::future::BoxFuture;
use opush_protocol::headers::{Login, Password};
use tokio::time::timeout;

use super::auth::{CredentialVerifier, Verdict, VerifierUnavailable};
use crate::backends::imap::{ImapClient, ImapError};
use crate::config::{ImapConfig, Secret};

/// Verifies credentials with an IMAP LOGIN.
#[derive(Debug, Clone)]
pub struct ImapLoginVerifier {
    /// The `[imap]` section.
    pub imap: ImapConfig,
}

impl ImapLoginVerifier {
    /// A verifier for the IMAP server of `imap`.
    pub fn new(imap: ImapConfig) -> Self {
        ImapLoginVerifier { imap }
    }

    fn bound(&self) -> Duration {
        // Connect + greeting + LOGIN + LOGOUT, each bounded by the backend's
        // own timeout; this outer bound only guards against a stuck peer.
        Duration::from_millis(self.imap.timeout_ms.saturating_mul(4).max(1000))
    }
}

impl CredentialVerifier for ImapLoginVerifier {
    fn verify<'a>(
        &'a self,
        login: &'a Login,
        password: &'a Password,
    ) -> BoxFuture<'a, Result<Verdict, VerifierUnavailable>> {
        Box::pin(async move {
            let user = login.email_form();
            let secret = Secret::new(password.expose());
            let attempt = async {
                match ImapClient::login(&self.imap, &user, &secret).await {
                    Ok(session) => {
                        session.logout().await;
                        Ok(Verdict::Accepted)
                    }
                    Err(ImapError::Auth { .. }) => Ok(Verdict::Rejected),
                    Err(e) => Err(VerifierUnavailable(format!(
                        "IMAP {}:{}: {e}",
                        self.imap.host, self.imap.port
                    ))),
                }
            };
            let attempt = crate::obs::timed(crate::obs::Category::Imap, attempt);
            match timeout(self.bound(), attempt).await {
                Ok(res) => res,
                Err(_) => Err(VerifierUnavailable(format!(
                    "IMAP {}:{}: no answer within {:?}",
                    self.imap.host,
                    self.imap.port,
                    self.bound()
                ))),
            }
        })
    }
}
