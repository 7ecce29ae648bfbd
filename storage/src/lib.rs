//! The per-device event log, snapshots and device registry, on an embedded
//! store (default) or Apache Cassandra, with versioned schemas and TTLs.
