//! Test helper for `tests/crash.rs`, not a tool: appends events to the
//! embedded store at the given path forever, printing `acked <head>` after
//! each append returns, until the test SIGKILLs it. The test then reopens
//! the store and checks that every acknowledged event is there.

use std::io::Write;

use opush_storage::{AppendBatch, DeviceKey, StorageConfig, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: storage_crash_child DATA_DIR")?;
    let config = StorageConfig {
        path: path.into(),
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await?;
    if !store.schema_status().await?.is_serviceable() {
        store.install_schema().await?;
    }
    let device = DeviceKey::new("crash", "device")?;
    let mut head = store.head(&device).await?;
    let mut out = std::io::stdout().lock();
    loop {
        let seq = head + 1;
        let batch = AppendBatch::new(device.clone(), head)
            .event(1, format!("crash event {seq}").into_bytes())
            .event(
                1,
                format!("crash event {} (second of batch)", seq + 1).into_bytes(),
            );
        head = store.append(batch).await?;
        writeln!(out, "acked {head}")?;
        out.flush()?;
    }
}
