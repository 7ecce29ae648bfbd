//! `opush wbxml decode [FILE|-]` and `opush wbxml encode [FILE|-]`: WBXML ⇄
//! XML for people debugging EAS traffic. Reads a file or standard input,
//! writes standard output. The conversion itself is
//! `opush_protocol::xml::{wbxml_to_xml, xml_to_wbxml}`; this module only
//! does the I/O and the exit codes.

use std::io::{Read, Write};
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

fn read_input(file: Option<&PathBuf>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match file {
        Some(path) if path.as_os_str() != "-" => buf = std::fs::read(path)?,
        _ => {
            std::io::stdin().lock().read_to_end(&mut buf)?;
        }
    }
    Ok(buf)
}

/// Runs `opush wbxml <action>`.
pub fn run(action: Action) -> ExitCode {
    let (file, decode) = match &action {
        Action::Decode { file } => (file.as_ref(), true),
        Action::Encode { file } => (file.as_ref(), false),
    };
    let input = match read_input(file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("opush wbxml: cannot read input: {e}");
            return ExitCode::FAILURE;
        }
    };
    let output = if decode {
        opush_protocol::xml::wbxml_to_xml(&input).map(String::into_bytes)
    } else {
        match std::str::from_utf8(&input) {
            Ok(text) => opush_protocol::xml::xml_to_wbxml(text),
            Err(e) => {
                eprintln!("opush wbxml encode: input is not UTF-8: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match output {
        Ok(bytes) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                eprintln!("opush wbxml: cannot write output: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opush wbxml: {e}");
            ExitCode::FAILURE
        }
    }
}
