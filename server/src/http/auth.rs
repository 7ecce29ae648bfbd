//! Basic authentication of EAS requests: the credentials are checked by a
//! [`CredentialVerifier`] (IMAP LOGIN in production), and a success is
//! remembered for a short TTL in an [`AuthCache`] keyed by a salted blake3
//! digest of login and password.
//!
//! It must never keep a password beyond the request: not in the cache
//! (digests only, with a random per-process salt), not in logs (`Password`
//! and `Secret` print `*`). The verified password travels with the request
//! in [`AuthenticatedUser`] (memory only) so handlers can reach the user's
//! mailbox as the user. A failure
//! is never cached, and a success is never extended past its TTL, so a
//! changed password stops working at most one TTL later.
//!
//! Requests that miss the cache with the same credentials at the same time
//! (a user's devices when the entry expires) share one verification: the
//! first asks the backend, the others wait for its verdict, so an expiry
//! costs the IMAP server one login per user, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use opush_protocol::headers::{BasicCredentials, Login, Password};
use tokio::time::Instant;

use crate::config::Secret;

/// The verdict of the credential backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The backend accepted the credentials.
    Accepted,
    /// The backend refused them (a real credential failure: HTTP 401).
    Rejected,
}

/// The credential backend could not give a verdict (HTTP 503 + Retry-After).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential backend unavailable: {0}")]
pub struct VerifierUnavailable(pub String);

/// Checks a login and password against the groupware (IMAP LOGIN).
pub trait CredentialVerifier: Send + Sync {
    /// Accepted, rejected, or the backend is unreachable.
    fn verify<'a>(
        &'a self,
        login: &'a Login,
        password: &'a Password,
    ) -> BoxFuture<'a, Result<Verdict, VerifierUnavailable>>;
}

/// A user whose credentials were verified for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The login as sent (`user@domain`, `DOMAIN\user` or `user`).
    pub login: Login,
    /// The user's canonical name, `user@domain` (or `user`): the key of the
    /// device registry and of the user's state.
    pub user: String,
    /// The verified password, in memory for this request only (handlers
    /// log in to IMAP with it). Prints as `*`; never stored or logged.
    pub password: Secret,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// The header is not usable Basic credentials.
    #[error("unusable Authorization header: {0}")]
    Malformed(String),
    /// The backend refused the credentials.
    #[error("credentials rejected for {0}")]
    Rejected(String),
    /// The backend could not be asked.
    #[error(transparent)]
    Unavailable(#[from] VerifierUnavailable),
}

/// Remembers recent successful logins, by digest, for a TTL.
pub struct AuthCache {
    key: [u8; 32],
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl AuthCache {
    /// A cache with a random salt. `ttl` zero disables caching.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        let mut key = [0u8; 32];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness: without an unguessable salt the digests
            // must not be kept, so caching is turned off.
            return AuthCache {
                key,
                ttl: Duration::ZERO,
                max_entries,
                entries: Mutex::new(HashMap::new()),
            };
        }
        AuthCache {
            key,
            ttl,
            max_entries,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The salted digest of a login and password.
    pub fn digest(&self, login: &Login, password: &Password) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        // Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
        h.update(&(login.raw.len() as u64).to_le_bytes());
        h.update(login.raw.as_bytes());
        h.update(password.expose().as_bytes());
        *h.finalize().as_bytes()
    }

    /// True when the digest was accepted less than a TTL ago.
    pub fn is_fresh(&self, digest: &[u8; 32], now: Instant) -> bool {
        let mut entries = self.lock();
        match entries.get(digest) {
            Some(expires) if *expires > now => true,
            Some(_) => {
                entries.remove(digest);
                false
            }
            None => false,
        }
    }

    /// Records a success. The expiry is fixed here and never extended.
    pub fn remember(&self, digest: [u8; 32], now: Instant) {
        if self.ttl.is_zero() || self.max_entries == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.max_entries {
            entries.retain(|_, expires| *expires > now);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(digest, now + self.ttl);
    }

    /// Drops a digest (its password was just refused).
    pub fn forget(&self, digest: &[u8; 32]) {
        self.lock().remove(digest);
    }

    /// Number of entries (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        // Entries are plain values; a panic elsewhere cannot corrupt them.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One verification in flight, shared by the requests that wait for it.
type Pending = Arc<tokio::sync::OnceCell<Result<Verdict, VerifierUnavailable>>>;

/// The verifier plus its cache.
pub struct Authenticator {
    verifier: Arc<dyn CredentialVerifier>,
    cache: AuthCache,
    /// Verifications in flight, by credential digest.
    pending: Mutex<HashMap<[u8; 32], Pending>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator caching successes for `ttl`.
    pub fn new(verifier: Arc<dyn CredentialVerifier>, ttl: Duration, max_entries: usize) -> Self {
        Authenticator {
            verifier,
            cache: AuthCache::new(ttl, max_entries),
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the verifier, or joins the verification of the same
    /// credentials already under way; the cache is updated once.
    async fn verify_shared(
        &self,
        digest: [u8; 32],
        login: &Login,
        password: &Password,
    ) -> Result<Verdict, VerifierUnavailable> {
        /// Unlists the shared verification when its waiter is done or
        /// dropped (a cancelled request must not leave an entry behind).
        struct Unlist<'a>(&'a Authenticator, [u8; 32], Pending);
        impl Drop for Unlist<'_> {
            fn drop(&mut self) {
                let mut pending = self.0.pending();
                if pending
                    .get(&self.1)
                    .is_some_and(|c| Arc::ptr_eq(c, &self.2))
                {
                    pending.remove(&self.1);
                }
            }
        }
        let cell = self.pending().entry(digest).or_default().clone();
        let unlist = Unlist(self, digest, cell.clone());
        let verdict = cell
            .get_or_init(|| async {
                let verdict = self.verifier.verify(login, password).await;
                match verdict {
                    Ok(Verdict::Accepted) => self.cache.remember(digest, Instant::now()),
                    Ok(Verdict::Rejected) => self.cache.forget(&digest),
                    Err(_) => {}
                }
                verdict
            })
            .await
            .clone();
        drop(unlist);
        verdict
    }

    /// The cache (for tests and the console).
    pub fn cache(&self) -> &AuthCache {
        &self.cache
    }

    /// Authenticates the `Authorization` header value of a request.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<AuthenticatedUser, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let creds =
            BasicCredentials::parse(value).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let user = creds.login.email_form();
        let digest = self.cache.digest(&creds.login, &creds.password);
        if self.cache.is_fresh(&digest, Instant::now()) {
            tracing::debug!(target: "AUTHENTICATION", user = %user, "accepted (cached)");
            return Ok(AuthenticatedUser {
                password: Secret::new(creds.password.expose()),
                login: creds.login,
                user,
            });
        }
        match self
            .verify_shared(digest, &creds.login, &creds.password)
            .await?
        {
            Verdict::Accepted => {
                tracing::debug!(target: "AUTHENTICATION", user = %user, "accepted by the backend");
                Ok(AuthenticatedUser {
                    password: Secret::new(creds.password.expose()),
                    login: creds.login,
                    user,
                })
            }
            Verdict::Rejected => Err(AuthError::Rejected(creds.login.raw)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn login(s: &str) -> Login {
        Login::parse(s)
    }

    #[test]
    fn digest_depends_on_login_password_and_salt() {
        let a = AuthCache::new(Duration::from_secs(60), 10);
        let b = AuthCache::new(Duration::from_secs(60), 10);
        let p = Password::new("opush-demo");
        let d = a.digest(&login("alice@example.test"), &p);
        assert_eq!(d, a.digest(&login("alice@example.test"), &p));
        assert_ne!(d, a.digest(&login("bob@example.test"), &p));
        assert_ne!(
            d,
            a.digest(&login("alice@example.test"), &Password::new("x"))
        );
        assert_ne!(
            d,
            b.digest(&login("alice@example.test"), &p),
            "per-process salt"
        );
        assert_ne!(
            a.digest(&login("ab"), &Password::new("c")),
            a.digest(&login("a"), &Password::new("bc"))
        );
    }

    #[test]
    fn entries_expire_after_ttl_and_are_not_extended() {
        let c = AuthCache::new(Duration::from_secs(60), 10);
        let d = c.digest(&login("alice"), &Password::new("p"));
        let t0 = Instant::now();
        c.remember(d, t0);
        assert!(c.is_fresh(&d, t0 + Duration::from_secs(30)));
        assert!(c.is_fresh(&d, t0 + Duration::from_secs(59)));
        assert!(!c.is_fresh(&d, t0 + Duration::from_secs(60)));
        assert!(c.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn cache_is_bounded() {
        let c = AuthCache::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        for i in 0..10 {
            c.remember(c.digest(&login(&format!("u{i}")), &Password::new("p")), now);
            assert!(c.len() <= 2);
        }
    }

    struct AcceptAll;
    impl CredentialVerifier for AcceptAll {
        fn verify<'a>(
            &'a self,
            _login: &'a Login,
            _password: &'a Password,
        ) -> BoxFuture<'a, Result<Verdict, VerifierUnavailable>> {
            Box::pin(async { Ok(Verdict::Accepted) })
        }
    }

    #[tokio::test]
    async fn the_password_travels_with_the_user_but_never_prints() {
        let auth = Authenticator::new(Arc::new(AcceptAll), Duration::from_secs(60), 10);
        // "alice@example.test:s3cret-pw" in Basic form.
        let header = "Basic YWxpY2VAZXhhbXBsZS50ZXN0OnMzY3JldC1wdw==";
        for _ in 0..2 {
            // The second call is answered from the cache: the password must
            // still reach the handlers.
            let user = auth.authenticate(Some(header)).await.unwrap();
            assert_eq!(user.user, "alice@example.test");
            assert_eq!(user.password.expose(), "s3cret-pw");
            assert!(!format!("{user:?}").contains("s3cret"), "{user:?}");
        }
        assert_eq!(auth.cache().len(), 1);
    }

    /// Counts its calls and answers after a pause (so calls overlap).
    struct Slow(std::sync::atomic::AtomicUsize, Verdict);
    impl CredentialVerifier for Slow {
        fn verify<'a>(
            &'a self,
            _login: &'a Login,
            _password: &'a Password,
        ) -> BoxFuture<'a, Result<Verdict, VerifierUnavailable>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let verdict = self.1;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(verdict)
            })
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_verification() {
        for (verdict, ttl) in [
            (Verdict::Accepted, Duration::from_secs(60)),
            (Verdict::Rejected, Duration::from_secs(60)),
            (Verdict::Accepted, Duration::ZERO),
        ] {
            let slow = Arc::new(Slow(Default::default(), verdict));
            let auth = Arc::new(Authenticator::new(slow.clone(), ttl, 10));
            let header = "Basic YWxpY2VAZXhhbXBsZS50ZXN0OnMzY3JldC1wdw==";
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let auth = auth.clone();
                    tokio::spawn(async move { auth.authenticate(Some(header)).await })
                })
                .collect();
            for t in tasks {
                let res = t.await.unwrap();
                assert_eq!(res.is_ok(), verdict == Verdict::Accepted, "{res:?}");
            }
            assert_eq!(
                slow.0.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{verdict:?}"
            );
            // Done: the next miss (no cache, or a refusal) asks again.
            if ttl.is_zero() || verdict == Verdict::Rejected {
                let _ = auth.authenticate(Some(header)).await;
                assert_eq!(slow.0.load(std::sync::atomic::Ordering::SeqCst), 2);
            }
            assert!(auth.pending().is_empty());
        }
    }

    #[tokio::test]
    async fn unusable_credentials_never_reach_the_backend() {
        use base64::Engine as _;
        let slow = Arc::new(Slow(Default::default(), Verdict::Accepted));
        let auth = Authenticator::new(slow.clone(), Duration::from_secs(60), 10);
        let b64 = |b: &[u8]| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        };
        for bad in [
            b64(b"alice@example.test:pw\r\n"),
            b64(b"alice@example.test:p\0w"),
            b64(b"alice@example.test\n:pw"),
            "Basic ***".to_owned(),
        ] {
            let res = auth.authenticate(Some(&bad)).await;
            assert!(matches!(res, Err(AuthError::Malformed(_))), "{res:?}");
        }
        assert_eq!(slow.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A Latin-1 credential reaches the backend as text.
        let user = auth
            .authenticate(Some(&b64(b"alice@example.test:Gr\xfc\xdfe")))
            .await
            .unwrap();
        assert_eq!(user.password.expose(), "Grüße");
        assert_eq!(slow.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let c = AuthCache::new(Duration::ZERO, 10);
        let d = c.digest(&login("alice"), &Password::new("p"));
        c.remember(d, Instant::now());
        assert!(c.is_empty());
    }
}
