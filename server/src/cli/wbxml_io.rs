//! The work of `opush wbxml decode|encode [FILE|-]`: read a file or standard
//! input, convert with `opush_protocol::xml`, write standard output, map
//! failures to a message and an exit code.
//!
//! Shared, by `#[path]`, between the full server binary (`cli/wbxml.rs`)
//! and the small front binary (`bin/opush.rs`) that runs this command
//! without starting the server's binary at all. It must therefore use
//! nothing but `std` and `opush_protocol`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

fn read_input(file: Option<&Path>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match file {
        Some(path) if path.as_os_str() != "-" => buf = std::fs::read(path)?,
        _ => {
            std::io::stdin().lock().read_to_end(&mut buf)?;
        }
    }
    Ok(buf)
}

/// Converts `file` (or standard input for `None` and `-`): WBXML → XML when
/// `decode`, XML → WBXML otherwise.
pub fn convert(file: Option<&Path>, decode: bool) -> ExitCode {
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
