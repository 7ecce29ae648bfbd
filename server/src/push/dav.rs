//! The hook for calendars and contacts: a parked Ping on a CalDAV/CardDAV
//! collection is watched by polling the collection's sync-token (RFC 6578)
//! or CTag, in the same watcher round as the user's IMAP STATUS.
//!
//! The DAV connector (the calendar issue) implements [`TokenSource`] and
//! registers it with [`super::PushHub::set_dav_source`]; Ping then watches
//! [`super::WatchKey::Dav`] keys. Until then no DAV key is ever watched.
//! This module holds the contract only: no HTTP here.

use std::future::Future;
use std::pin::Pin;

/// A boxed future of a token poll.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + 'a>>;

/// Reads the current sync-token of a DAV collection.
pub trait TokenSource: Send + Sync {
    /// The token of `href` for `user`: `Ok(None)` when the collection no
    /// longer exists, `Err` (a message for the log) when the server could
    /// not be asked. Must be bounded in time (the connector's timeout).
    fn token<'a>(&'a self, user: &'a str, href: &'a str) -> TokenFuture<'a>;
}
