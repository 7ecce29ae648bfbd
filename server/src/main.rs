//! The `opush` command line: `serve`, `wbxml decode|encode`, `schema …`,
//! `replay …`. All I/O of the project lives in this crate and in `storage/`.
//!
//! This file only parses arguments and dispatches into `cli/*.rs`; it must
//! not hold command logic.

mod cli;

use clap::Parser;

/// mimalloc rather than glibc malloc: decoding EAS documents allocates one
/// small vector per element, and glibc spent half of a tag-heavy decode in
/// malloc/free (docs/BENCHMARKS.md, "WBXML codec").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
