//! Criterion benchmarks of the WBXML codec (`shared/codec.rs`) with the
//! allocator the `opush` binary uses, mimalloc: decoding allocates one vector
//! per element, so the allocator is part of what is measured. Figures go to
//! docs/BENCHMARKS.md (`## WBXML codec`); `codec_glibc` is the same with the
//! system allocator.

use criterion::{criterion_main, Criterion};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/codec.rs"]
mod shared;

fn codec(c: &mut Criterion) {
    shared::codec(c, "");
}

// The macro-generated entry points cannot carry doc comments.
#[allow(missing_docs)]
mod entry {
    criterion::criterion_group!(benches, super::codec);
}
criterion_main!(entry::benches);
