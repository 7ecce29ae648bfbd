//! `opush wbxml decode [FILE|-]` and `opush wbxml encode [FILE|-]`: WBXML ⇄
//! XML for people debugging EAS traffic. Reads a file or standard input,
//! writes standard output. The conversion itself is
//! `opush_protocol::xml::{wbxml_to_xml, xml_to_wbxml}`, the I/O
//! `cli/wbxml_io.rs`; this module is the command-line syntax. (The `opush`
//! front binary, `bin/opush.rs`, runs the same `wbxml_io` itself.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// `opush wbxml` actions.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// WBXML → indented XML.
    Decode {
        /// Input file, or `-` (default) for standard input.
        file: Option<PathBuf>,
    },
    /// XML → WBXML.
    Encode {
        /// Input file, or `-` (default) for standard input.
        file: Option<PathBuf>,
    },
}

/// Runs `opush wbxml <action>`.
pub fn run(action: Action) -> ExitCode {
    match &action {
        Action::Decode { file } => super::wbxml_io::convert(file.as_deref(), true),
        Action::Encode { file } => super::wbxml_io::convert(file.as_deref(), false),
    }
}
