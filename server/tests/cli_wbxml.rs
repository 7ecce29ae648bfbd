//! `opush wbxml decode|encode` as support engineers run it, through both
//! binaries: the `opush` front, which converts by itself, and the full
//! `opush-server`. They must print the same bytes, and the front must hand
//! every other command line to `opush-server` unchanged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use opush_protocol::wbxml::tags::{airsync, composemail};
use opush_protocol::wbxml::{encode_to_vec, Element};

const FRONT: &str = env!("CARGO_BIN_EXE_opush");
const SERVER: &str = env!("CARGO_BIN_EXE_opush-server");

fn run(bin: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn sample() -> Vec<u8> {
    let root = Element::new(airsync::SYNC)
        .with(Element::with_text(airsync::SYNC_KEY, "7 < 8 & ü"))
        .with(Element::with_opaque(composemail::MIME, vec![0, 1, 2, 0xFF]));
    encode_to_vec(&root)
}

#[test]
fn front_and_server_convert_alike_both_ways() {
    let wbxml = sample();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.wbxml");
    std::fs::write(&file, &wbxml).unwrap();
    let file = file.to_str().unwrap();

    let by_front = run(FRONT, &["wbxml", "decode", file], b"");
    let by_server = run(SERVER, &["wbxml", "decode", file], b"");
    assert!(by_front.status.success(), "{by_front:?}");
    assert!(by_server.status.success(), "{by_server:?}");
    assert_eq!(by_front.stdout, by_server.stdout);
    let xml = String::from_utf8(by_front.stdout).unwrap();
    assert!(xml.contains("7 &lt; 8 &amp; ü"), "{xml}");

    // Standard input, `-` or no operand, and back to the same bytes.
    let piped = run(FRONT, &["wbxml", "decode", "-"], &wbxml);
    assert_eq!(piped.stdout, xml.as_bytes());
    for bin in [FRONT, SERVER] {
        let back = run(bin, &["wbxml", "encode"], xml.as_bytes());
        assert!(back.status.success(), "{back:?}");
        assert_eq!(back.stdout, wbxml, "{bin}");
    }
}

#[test]
fn bad_input_fails_with_a_message_from_both() {
    for bin in [FRONT, SERVER] {
        let out = run(bin, &["wbxml", "decode"], &[0x03, 0x01, 0x6A, 0x00, 0x45]);
        assert!(!out.status.success(), "{bin}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("opush wbxml: ") && err.contains("truncated at byte 5"),
            "{bin}: {err}"
        );

        let out = run(bin, &["wbxml", "decode", "/nonexistent/x.wbxml"], b"");
        assert!(!out.status.success(), "{bin}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot read input"),
            "{bin}"
        );
    }
}

#[test]
fn the_front_hands_other_command_lines_to_the_server() {
    // Same output and status as the server's own parser gives.
    for args in [
        &["--version"][..],
        &["--help"],
        &["wbxml", "decode", "--help"],
        &["wbxml", "decode", "a", "b"],
        &["no-such-command"],
    ] {
        let front = run(FRONT, args, b"");
        let server = run(SERVER, args, b"");
        assert_eq!(front.status.code(), server.status.code(), "{args:?}");
        assert_eq!(front.stdout, server.stdout, "{args:?}");
        assert_eq!(front.stderr, server.stderr, "{args:?}");
    }
    let version = run(FRONT, &["--version"], b"");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("opush "));
}
