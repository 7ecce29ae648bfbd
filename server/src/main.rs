//! The `opush` command line: `serve`, `wbxml decode|encode`, `schema …`,
//! `replay …`. All I/O of the project lives in this crate and in `storage/`.
//!
//! This file only parses arguments and dispatches into `cli/*.rs`; it must
//! not hold command logic.

mod cli;

use clap::Parser;

/// mimalloc rather than glibc malloc: decoding EAS documents allocates one
/// small vector per element, and glibc spent half of a tag-heavy decode in
/// malloc/free (docs/BENCHMARKS.md, "WBXML codec"). Built with `no_thp`
/// (workspace Cargo.toml): mimalloc otherwise marks its arenas
/// MADV_HUGEPAGE, and where the kernel's THP defrag is `madvise` (Debian's
/// default) the request thread whose allocation faults in a huge page may
/// compact memory first, stalling every request on that thread
/// (docs/BENCHMARKS.md, session 13).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
