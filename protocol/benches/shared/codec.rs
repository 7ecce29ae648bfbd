//! The WBXML codec benchmarks themselves, shared by `benches/codec.rs` (with
//! the `opush` binary's allocator, mimalloc) and `benches/codec_glibc.rs`
//! (the system allocator), on two shapes of EAS document: (a) a ~1 MB Sync
//! response with 100 emails whose MIME bodies are inline strings, (b) a
//! tag-heavy FolderSync-like document of 10,000 small elements.

use criterion::{black_box, Criterion, Throughput};
use opush_protocol::wbxml::tags::{airsync, airsyncbase, email, folderhierarchy};
use opush_protocol::wbxml::{decode, encode, encode_to_vec, Element};

fn mime_body(i: usize) -> String {
    let mut s = format!(
        "From: sender{i}@example.com\r\nTo: user@example.com\r\nSubject: message {i}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    while s.len() < 10_200 {
        s.push_str("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. Ünïcödé ✓\r\n");
    }
    s
}

/// A Sync response carrying 100 emails (~1 MB).
fn sync_response(bodies: &[String]) -> Element<'_> {
    let mut commands = Element::new(airsync::COMMANDS);
    for (i, body) in bodies.iter().enumerate() {
        commands.push(
            Element::new(airsync::ADD)
                .with(Element::with_text(airsync::SERVER_ID, format!("1:{i}")))
                .with(
                    Element::new(airsync::APPLICATION_DATA)
                        .with(Element::with_text(email::TO, "\"User\" <user@example.com>"))
                        .with(Element::with_text(
                            email::FROM,
                            format!("sender{i}@example.com"),
                        ))
                        .with(Element::with_text(email::SUBJECT, format!("message {i}")))
                        .with(Element::with_text(
                            email::DATE_RECEIVED,
                            "2026-11-28T10:00:00.000Z",
                        ))
                        .with(Element::with_text(email::READ, "0"))
                        .with(
                            Element::new(airsyncbase::BODY)
                                .with(Element::with_text(airsyncbase::TYPE, "4"))
                                .with(Element::with_text(
                                    airsyncbase::ESTIMATED_DATA_SIZE,
                                    body.len().to_string(),
                                ))
                                .with(Element::with_text(airsyncbase::DATA, body.as_str())),
                        ),
                ),
        );
    }
    Element::new(airsync::SYNC).with(
        Element::new(airsync::COLLECTIONS).with(
            Element::new(airsync::COLLECTION)
                .with(Element::with_text(airsync::SYNC_KEY, "42"))
                .with(Element::with_text(airsync::COLLECTION_ID, "1"))
                .with(Element::with_text(airsync::STATUS, "1"))
                .with(commands),
        ),
    )
}

/// A FolderSync response with 2,000 folders: 10,000 small elements.
fn tag_heavy() -> Element<'static> {
    let mut changes = Element::new(folderhierarchy::CHANGES);
    for i in 0..2_000 {
        changes.push(
            Element::new(folderhierarchy::ADD)
                .with(Element::with_text(
                    folderhierarchy::SERVER_ID,
                    format!("{i}"),
                ))
                .with(Element::with_text(folderhierarchy::PARENT_ID, "0"))
                .with(Element::with_text(
                    folderhierarchy::DISPLAY_NAME,
                    format!("F{i}"),
                ))
                .with(Element::with_text(folderhierarchy::TYPE, "12")),
        );
    }
    Element::new(folderhierarchy::FOLDER_SYNC)
        .with(Element::with_text(folderhierarchy::STATUS, "1"))
        .with(Element::with_text(folderhierarchy::SYNC_KEY, "1"))
        .with(changes)
}

fn bench_doc(c: &mut Criterion, name: &str, tree: &Element<'_>) {
    let bytes = encode_to_vec(tree);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| decode(black_box(&bytes)).map(|root| root.children.len()))
    });
    let mut buf = Vec::with_capacity(bytes.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            encode(black_box(tree), &mut buf);
            buf.len()
        })
    });
    group.finish();
}

/// Every codec benchmark; `prefix` goes before each group name.
pub fn codec(c: &mut Criterion, prefix: &str) {
    let bodies: Vec<String> = (0..100).map(mime_body).collect();
    let sync = sync_response(&bodies);
    let folders = tag_heavy();
    // CODEC_BENCH_DUMP=DIR writes the inputs, for whole-process comparisons.
    if let Some(dir) = std::env::var_os("CODEC_BENCH_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        for (name, tree) in [
            ("sync_100_emails_1MB", &sync),
            ("foldersync_10k_elements", &folders),
        ] {
            let path = dir.join(format!("{name}.wbxml"));
            if let Err(e) = std::fs::write(&path, encode_to_vec(tree)) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
    }
    bench_doc(c, &format!("{prefix}sync_100_emails_1MB"), &sync);
    bench_doc(c, &format!("{prefix}foldersync_10k_elements"), &folders);
}
