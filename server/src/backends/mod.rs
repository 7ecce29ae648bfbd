//! Connectors to the groupware behind opush (IMAP, SMTP, ManageSieve;
//! CalDAV, CardDAV and LDAP later). Each speaks one protocol, exposes typed errors
//! that tell an outage from a refusal, and knows nothing of EAS.

pub mod imap;
pub mod sieve;
pub mod smtp;
