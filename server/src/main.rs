//! The `opush` command line: `serve`, `wbxml decode|encode`, `schema …`,
//! `replay …`. All I/O of the project lives in this crate and in `storage/`.
//!
//! This file only parses arguments and dispatches into `cli/*.rs`; it must
//! not hold command logic.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
