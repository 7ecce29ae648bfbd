//! Shared helpers for the integration tests that run against real services
//! (Dovecot, Postfix, Cassandra …) started by `scripts/stack`.
