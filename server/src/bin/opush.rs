//! The `opush` command: a small front for `opush-server`, the full server
//! binary installed beside it.
//!
//! `opush wbxml decode|encode [FILE|-]` is a support tool run once per
//! captured body, so its cost is mostly process start-up, and starting the
//! full binary (tens of MB of code, ~28,000 relocations for the dynamic
//! loader, mimalloc's arena set-up) costs several times what decoding a
//! typical document does (docs/BENCHMARKS.md, "WBXML codec"). This binary
//! links only `std` and `opush_protocol`, converts those itself, and
//! replaces itself (`exec`, same process id) with `opush-server` for every
//! other command line — `serve`, `schema`, `device`, `sent`, `replay`, `--help`,
//! and any `wbxml` form it does not recognise, so that the server's own
//! parser gives the usual messages.
//!
//! It must stay this small: no clap, no tokio, no allocator of its own.

#[path = "../cli/wbxml_io.rs"]
mod wbxml_io;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The full binary, expected in the same directory as this one.
const SERVER: &str = "opush-server";

/// `wbxml decode|encode` with at most one operand that is not an option:
/// (`decode`, the file). `None` for anything else.
fn wbxml_command(args: &[OsString]) -> Option<(bool, Option<&Path>)> {
    let [command, action, rest @ ..] = args else {
        return None;
    };
    if command != "wbxml" {
        return None;
    }
    let decode = match action.to_str()? {
        "decode" => true,
        "encode" => false,
        _ => return None,
    };
    match rest {
        [] => Some((decode, None)),
        [file] if file == "-" || !file.to_string_lossy().starts_with('-') => {
            Some((decode, Some(Path::new(file))))
        }
        _ => None,
    }
}

fn server_path() -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(SERVER))
}

/// Runs `opush-server` with the same arguments, in place of this process.
fn run_server(args: &[OsString]) -> ExitCode {
    let server = match server_path() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("opush: cannot locate this executable to find {SERVER}: {e}");
            return ExitCode::from(127);
        }
    };
    let mut command = Command::new(&server);
    command.args(args);
    #[cfg(unix)]
    if let Some(arg0) = std::env::args_os().next() {
        // `ps` shows the command as it was typed.
        std::os::unix::process::CommandExt::arg0(&mut command, arg0);
    }
    #[cfg(unix)]
    let err = {
        use std::os::unix::process::CommandExt;
        command.exec()
    };
    #[cfg(not(unix))]
    let err = match command.status() {
        Ok(status) => {
            let code = status.code().unwrap_or(1);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Err(e) => e,
    };
    eprintln!(
        "opush: cannot run {}: {err} (`cargo build -p opush-server` builds it beside `opush`)",
        server.display()
    );
    ExitCode::from(127)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match wbxml_command(&args) {
        Some((decode, file)) => wbxml_io::convert(file, decode),
        None => run_server(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Option<(bool, Option<String>)> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        wbxml_command(&args).map(|(d, f)| (d, f.map(|p| p.display().to_string())))
    }

    #[test]
    fn only_plain_wbxml_conversions_stay_in_the_front() {
        assert_eq!(parse(&["wbxml", "decode"]), Some((true, None)));
        assert_eq!(
            parse(&["wbxml", "encode", "-"]),
            Some((false, Some("-".into())))
        );
        assert_eq!(
            parse(&["wbxml", "decode", "a.wbxml"]),
            Some((true, Some("a.wbxml".into())))
        );
        // Everything else goes to opush-server and its parser.
        for args in [
            &["serve"][..],
            &[],
            &["--help"],
            &["wbxml"],
            &["wbxml", "--help"],
            &["wbxml", "decode", "--help"],
            &["wbxml", "decode", "a", "b"],
            &["wbxml", "transcode", "a"],
            &["schema", "status"],
        ] {
            assert_eq!(parse(args), None, "{args:?}");
        }
    }
}
