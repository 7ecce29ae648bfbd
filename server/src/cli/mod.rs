//! Subcommands of the `opush` binary, one module each. `main.rs` parses the
//! command line into [`Cli`] and calls [`run`]; every subcommand returns its
//! exit code. Command logic that is not about the terminal belongs in the
//! library crates (e.g. `opush_protocol::xml` for `wbxml`).

pub mod device;
pub mod replay;
pub mod schema;
pub mod sent;
pub mod wbxml;
pub mod wbxml_io;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// opush: an Exchange ActiveSync server.
#[derive(Debug, Parser)]
// `bin_name`: usage lines say `opush` whether this binary was started as
// `opush-server` or through the `opush` front (src/bin/opush.rs).
#[command(name = "opush", bin_name = "opush", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Configuration file (default: embedded store, loopback, port 8082).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Convert between WBXML and XML with the EAS code pages.
    Wbxml {
        /// decode or encode.
        #[command(subcommand)]
        action: wbxml::Action,
    },
    /// Storage schema: status, install, update.
    Schema {
        /// status, install or update.
        #[arg(value_parser = ["status", "install", "update"])]
        action: String,
        /// Configuration file (default: built-in configuration and OPUSH_* variables).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Device administration: remote wipe, allow, quarantine.
    Device {
        /// wipe, allow or quarantine.
        #[command(subcommand)]
        action: device::Action,
    },
    /// Sent copies waiting to be saved in their users' Sent folders: list,
    /// drop, retry now.
    Sent {
        /// list, drop or retry.
        #[command(subcommand)]
        action: sent::Action,
    },
    /// Replay a recorded session.
    Replay {
        /// Arguments of the replay command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Runs one parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => opush_server::serve::main(config.as_deref()),
        Command::Wbxml { action } => wbxml::run(action),
        Command::Schema { action, config } => schema::run(&action, config.as_deref()),
        Command::Device { action } => device::run(action),
        Command::Sent { action } => sent::run(action),
        Command::Replay { args } => replay::run(args),
    }
}
