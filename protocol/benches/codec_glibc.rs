//! The WBXML codec benchmarks of `benches/codec.rs` with the system (glibc)
//! allocator instead of the `opush` binary's mimalloc, to show what the
//! allocator is worth; groups are named `glibc_…`.

use criterion::{criterion_main, Criterion};

#[path = "shared/codec.rs"]
mod shared;

fn codec(c: &mut Criterion) {
    shared::codec(c, "glibc_");
}

// The macro-generated entry points cannot carry doc comments.
#[allow(missing_docs)]
mod entry {
    criterion::criterion_group!(benches, super::codec);
}
criterion_main!(entry::benches);
