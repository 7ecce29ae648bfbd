//! The deterministic EAS sync state machine: events, state, `apply` and
//! `decide`. Time, identifiers and backend observations arrive as event
//! fields.
//!
//! Architecture invariant: no I/O, no clock, no randomness, never awaits.
