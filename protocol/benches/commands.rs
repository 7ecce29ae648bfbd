//! Criterion benchmarks of the request line and typed commands: parsing the
//! plain and base64 queries, and WBXML ⇄ typed Sync for real corpus bodies
//! (responses also through the streamed writer the server uses).
//! Figures go to docs/BENCHMARKS.md ("protocol: request line and typed
//! commands"). The corpus must be present (`tests/find_corpus/mod.rs` says where).
#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a panic is a setup failure"
)]
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opush_protocol::commands::sync::{SyncRequest, SyncResponse};
use opush_protocol::commands::EasDocument;
use opush_protocol::query::RequestLine;
use opush_protocol::version::ProtocolVersion;

#[path = "../tests/find_corpus/mod.rs"]
mod find_corpus;

fn corpus_file(rel: &str) -> Vec<u8> {
    let path = find_corpus::real_devices().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("corpus file {}: {e}", path.display()))
}

fn query(c: &mut Criterion) {
    let plain =
        "Cmd=Sync&User=exchange.lyn.lng%5Cexta&DeviceId=androidc1305612725&DeviceType=Android";
    let b64 = "jAAMBBCkufmbxGcztuQus5kI+d1IBG1/bn0DV1A4";
    c.bench_function("query/parse_plain", |b| {
        b.iter(|| RequestLine::parse(black_box(plain)).unwrap())
    });
    c.bench_function("query/parse_base64", |b| {
        b.iter(|| RequestLine::parse(black_box(b64)).unwrap())
    });
}

fn sync(c: &mut Criterion) {
    let v = ProtocolVersion::V12_1;
    let cases = [
        (
            "sync_request_small",
            "gs2-exchange-receive300EmailsInManualMode2/012-Sync-request.wbxml",
            true,
        ),
        (
            "sync_response_35k",
            "gs2-exchange-receive300EmailsInManualMode/003-Sync-response.wbxml",
            false,
        ),
        (
            "sync_response_big_email",
            "gs3-exchange-receive-big-email/001-Sync-response.wbxml",
            false,
        ),
    ];
    let mut group = c.benchmark_group("commands");
    for (name, rel, is_request) in cases {
        let bytes = corpus_file(rel);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        if is_request {
            let typed = SyncRequest::decode(&bytes, v).unwrap();
            group.bench_function(format!("{name}/decode_typed"), |b| {
                b.iter(|| SyncRequest::decode(black_box(&bytes), v).unwrap())
            });
            group.bench_function(format!("{name}/encode_typed"), |b| {
                b.iter(|| black_box(&typed).encode(v))
            });
        } else {
            let typed = SyncResponse::decode(&bytes, v).unwrap();
            group.bench_function(format!("{name}/decode_typed"), |b| {
                b.iter(|| SyncResponse::decode(black_box(&bytes), v).unwrap())
            });
            group.bench_function(format!("{name}/encode_typed"), |b| {
                b.iter(|| black_box(&typed).encode(v))
            });
            // What the server sends: written without the tree.
            assert_eq!(typed.to_wbxml(v), typed.encode(v));
            group.bench_function(format!("{name}/write_streamed"), |b| {
                b.iter(|| black_box(&typed).to_wbxml(v))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, query, sync);
criterion_main!(benches);
