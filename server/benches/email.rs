//! Criterion benchmarks of the message → Email conversion that every Sync
//! Add and ItemOperations Fetch runs: a small plain message, a multipart
//! HTML message with attachments, a 1 MiB HTML body truncated to 32 KiB, and
//! the 1.5 KB plain message opush-load syncs (tests/src/fill.rs); and the
//! scan for a message straight in a message (`email::shape`) that every
//! message parsed whole goes through first, on the same messages and on
//! one with a forwarded message. Pure CPU (no IMAP): what opush adds on
//! top of the fetch.

#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::version::ProtocolVersion;
use opush_server::email::shape::nests_message_in_message;
use opush_server::email::{to_email, MessageInfo};

fn info() -> MessageInfo {
    MessageInfo {
        server_id: "5:12".to_owned(),
        internal_date: 1_764_323_400,
        seen: false,
        flagged: true,
        keywords: vec!["Work".to_owned()],
    }
}

fn small() -> Vec<u8> {
    b"From: =?UTF-8?Q?Ren=C3=A9e?= <renee@example.test>\r\nTo: bob@example.test\r\n\
Subject: =?UTF-8?B?w4AgYmllbnTDtHQ=?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Short plain body.\r\n"
        .to_vec()
}

fn multipart() -> Vec<u8> {
    let attachment = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n".repeat(2_000);
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B1\r\n\r\n--B1\r\nContent-Type: multipart/alternative; boundary=B2\r\n\r\n\
--B2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n\
--B2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>See <b>attached</b>.</p></body></html>\r\n\
--B2--\r\n--B1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\
--B1\r\nContent-Type: image/png; name=b.png\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}--B1--\r\n"
    )
    .into_bytes()
}

/// A reply with the message it answers attached (message/rfc822).
fn forwarded() -> Vec<u8> {
    let text = "A line of the original, long enough to look like mail.\r\n".repeat(40);
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B1\r\n\r\n--B1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
See below.\r\n--B1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n\
From: c@example.test\r\nSubject: original\r\nContent-Type: text/plain\r\n\r\n{text}--B1--\r\n"
    )
    .into_bytes()
}

fn large_html() -> Vec<u8> {
    let para =
        "<p>Lorem ipsum dolor sit amet, <b>consectetur</b> adipiscing elit &amp; more.</p>\n";
    let body = para.repeat(1024 * 1024 / para.len());
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: big\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n{body}"
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let html_pref = vec![BodyPreference {
        body_type: 2,
        truncation_size: Some(32 * 1024),
        all_or_none: None,
        preview: Some(255),
    }];
    let plain_pref = vec![BodyPreference {
        body_type: 1,
        truncation_size: Some(32 * 1024),
        all_or_none: None,
        preview: None,
    }];
    // What opush-load's devices ask for: plain text cut at 500 bytes.
    let load_pref = vec![BodyPreference {
        body_type: 1,
        truncation_size: Some(500),
        all_or_none: None,
        preview: None,
    }];
    let mut group = c.benchmark_group("to_email");
    for (name, msg, prefs) in [
        ("small_plain", small(), &plain_pref),
        (
            "load_text_1_5KB_as_plain_truncated_500",
            opush_tests::fill::text_message("bench", 42).into_bytes(),
            &load_pref,
        ),
        ("multipart_html_2_attachments", multipart(), &html_pref),
        ("multipart_forwarded_message", forwarded(), &plain_pref),
        ("html_1MiB_as_plain_truncated", large_html(), &plain_pref),
        (
            "html_1MiB_as_html_truncated_with_preview",
            large_html(),
            &html_pref,
        ),
    ] {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| to_email(black_box(&msg), &info(), prefs, ProtocolVersion::V16_1))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("shape");
    for (name, msg) in [
        ("small_plain", small()),
        ("multipart_html_2_attachments", multipart()),
        ("multipart_forwarded_message", forwarded()),
        ("html_1MiB", large_html()),
    ] {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| nests_message_in_message(black_box(&msg)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
