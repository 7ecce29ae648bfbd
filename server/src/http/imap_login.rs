//! The production [`CredentialVerifier`]: an IMAP LOGIN (then LOGOUT) through
//! the IMAP backend's [`ImapClient::login`], which tells a refused login
//! (`ImapError::Auth`: HTTP 401) from a server that could not be asked
//! (everything else: HTTP 503).
//!
//! It must not log or keep the password; the login name the device sent is
//! passed as `user@domain` and the backend applies `[imap] login_with_domain`.
//!
//! With the request pool attached ([`ImapLoginVerifier::with_pool`]) the
//! login waits its turn at the pool's `LoginGate` (`backends::imap::pool`) and the session it opened
//! is handed to the pool instead of logged out: the request that follows
//! needs a connection of that user anyway, and a login is the expensive
//! part (a password hash on the server).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use opush_protocol::headers::{Login, Password};
use tokio::time::timeout;

use super::auth::{CredentialVerifier, Verdict, VerifierUnavailable};
use crate::backends::imap::{ImapClient, ImapError, ImapPool};
use crate::config::{ImapConfig, Secret};

/// Verifies credentials with an IMAP LOGIN.
#[derive(Debug, Clone)]
pub struct ImapLoginVerifier {
    /// The `[imap]` section.
    pub imap: ImapConfig,
    /// The request pool: gates the login and adopts the session.
    pool: Option<Arc<ImapPool>>,
}

impl ImapLoginVerifier {
    /// A verifier for the IMAP server of `imap` (logs out after each check).
    pub fn new(imap: ImapConfig) -> Self {
        ImapLoginVerifier { imap, pool: None }
    }

    /// A verifier whose logins go through `pool`'s login gate and whose
    /// sessions the pool adopts.
    pub fn with_pool(pool: Arc<ImapPool>) -> Self {
        ImapLoginVerifier {
            imap: pool.config().clone(),
            pool: Some(pool),
        }
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
                // For the device of the request being authenticated.
                let login =
                    ImapClient::login_for(&self.imap, &user, &secret, crate::origin::current());
                let res = match self.pool.as_ref().map(|p| p.login_gate()) {
                    Some(gate) => gate.run("verify", login).await,
                    None => {
                        crate::obs::metrics::imap_login("verify");
                        login.await
                    }
                };
                match res {
                    Ok(session) => {
                        let session = match &self.pool {
                            Some(pool) => pool.adopt(&user, &secret, session),
                            None => Some(session),
                        };
                        if let Some(session) = session {
                            session.logout().await;
                        }
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
