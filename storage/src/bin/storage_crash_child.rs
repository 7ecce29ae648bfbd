//! Test helper for `tests/crash.rs`, not a tool: appends events to the
//! embedded store at the given path forever, printing `acked <head>` after
//! each append returns, until the test SIGKILLs it. The test then reopens
//! the store and checks that every acknowledged event is there. With a
//! second argument N, N devices (`device0`…) append concurrently, so their
//! appends share group commits, and each ack reads `acked <i> <head>`.
//! With `OPUSH_CRASH_CHECKPOINT_MS` set, the store checkpoints that often
//! (so the kill can land before, during or after a checkpoint), and each
//! device also puts a snapshot of its new head before acknowledging it.
//! With `OPUSH_CRASH_PAD` set, each event carries that many more bytes (a
//! checkpoint then has megabytes of pages to write out and sync, so that
//! the kill lands in its second part more often).

use std::io::Write;
use std::sync::{Arc, Mutex};

use opush_storage::{AppendBatch, DeviceKey, Snapshot, StorageConfig, Store};

/// Appends two-event batches to `device` forever, calling `ack` with each
/// acknowledged head.
async fn append_forever(
    store: Store,
    device: DeviceKey,
    snapshots: bool,
    pad: usize,
    ack: impl Fn(u64) -> std::io::Result<()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut head = store.head(&device).await?;
    let padded = |s: String| {
        let mut b = s.into_bytes();
        b.resize(b.len() + pad, b'.');
        b
    };
    loop {
        let seq = head + 1;
        let batch = AppendBatch::new(device.clone(), head)
            .event(1, padded(format!("crash event {seq}")))
            .event(
                1,
                padded(format!("crash event {} (second of batch)", seq + 1)),
            );
        head = store.append(batch).await?;
        if snapshots {
            let snap = Snapshot {
                seq: head,
                format_version: 1,
                payload: format!("snapshot at {head}").into_bytes(),
            };
            store.put_snapshot(&device, "state", snap).await?;
        }
        ack(head)?;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: storage_crash_child DATA_DIR [DEVICES]")?;
    let devices: Option<usize> = std::env::args().nth(2).map(|n| n.parse()).transpose()?;
    let checkpoint_ms: Option<u64> = std::env::var("OPUSH_CRASH_CHECKPOINT_MS")
        .ok()
        .map(|n| n.parse())
        .transpose()?;
    let snapshots = checkpoint_ms.is_some();
    let pad: usize = std::env::var("OPUSH_CRASH_PAD")
        .ok()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(0);
    let config = StorageConfig {
        path: path.into(),
        checkpoint_ms: checkpoint_ms.unwrap_or(StorageConfig::default().checkpoint_ms),
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await?;
    if !store.schema_status().await?.is_serviceable() {
        store.install_schema().await?;
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let Some(n) = devices else {
        let device = DeviceKey::new("crash", "device")?;
        return append_forever(store, device, snapshots, pad, move |head| {
            let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
            writeln!(out, "acked {head}")?;
            out.flush()
        })
        .await;
    };
    let mut tasks = Vec::new();
    for i in 0..n {
        let device = DeviceKey::new("crash", format!("device{i}"))?;
        let (store, out) = (store.clone(), out.clone());
        tasks.push(tokio::spawn(append_forever(
            store,
            device,
            snapshots,
            pad,
            move |head| {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                writeln!(out, "acked {i} {head}")?;
                out.flush()
            },
        )));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
