//! Crash safety of the embedded store: a child process appends and prints
//! each acknowledged head; it is SIGKILLed mid-stream; reopening the store
//! must find every acknowledged event, intact and in order, and no torn batch.
//! The second test does the same with many devices appending at once, whose
//! appends share group commits. Acknowledged writes live in the journal
//! until a checkpoint writes them to the redb file: the first two tests
//! kill before any checkpoint (only the journal's replay recovers them),
//! the third with checkpoints every 2 ms, and snapshots beside the appends
//! (caches, not journaled: only those of a checkpoint survive).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use opush_storage::{digest, DeviceKey, StorageConfig, Store};

#[tokio::test]
async fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceKey::new("crash", "device").unwrap();
    let mut acked_total = 0;
    // Two kill rounds: the second one appends on top of a recovered file.
    for round in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storage_crash_child"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut last_acked = 0u64;
        let mut n = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            last_acked = line.strip_prefix("acked ").unwrap().parse().unwrap();
            n += 1;
            if n == 40 {
                break;
            }
        }
        assert_eq!(n, 40, "round {round}: child stopped early");
        child.kill().unwrap(); // SIGKILL: no destructor, no flush
        child.wait().unwrap();
        assert!(last_acked > acked_total);
        acked_total = last_acked;

        let config = StorageConfig {
            path: dir.path().to_path_buf(),
            ..StorageConfig::default()
        };
        let store = Store::open(&config).await.unwrap();
        let head = store.head(&device).await.unwrap();
        assert!(
            head >= last_acked,
            "round {round}: head {head} lost acked {last_acked}"
        );
        assert_eq!(head % 2, 0, "round {round}: a batch of two was torn");
        let events = store.read_events(&device, 1).await.unwrap();
        assert_eq!(events.len() as u64, head);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert!(
                String::from_utf8_lossy(&e.payload).starts_with(&format!("crash event {}", e.seq))
            );
            assert_eq!(e.digest, Some(digest(&e.payload)));
        }
        drop(store);
    }
}

#[tokio::test]
async fn acknowledged_group_commits_survive_kill_9() {
    const DEVICES: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut acked = [0u64; DEVICES];
    for round in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storage_crash_child"))
            .arg(dir.path())
            .arg(DEVICES.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut n = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let mut f = line.strip_prefix("acked ").unwrap().split(' ');
            let i: usize = f.next().unwrap().parse().unwrap();
            let head: u64 = f.next().unwrap().parse().unwrap();
            assert!(head > acked[i], "round {round}: device {i} went back");
            acked[i] = head;
            n += 1;
            if n == 400 {
                break;
            }
        }
        assert_eq!(n, 400, "round {round}: child stopped early");
        child.kill().unwrap();
        child.wait().unwrap();

        let config = StorageConfig {
            path: dir.path().to_path_buf(),
            ..StorageConfig::default()
        };
        let store = Store::open(&config).await.unwrap();
        for (i, last) in acked.iter().enumerate() {
            let device = DeviceKey::new("crash", format!("device{i}")).unwrap();
            let head = store.head(&device).await.unwrap();
            assert!(
                head >= *last,
                "round {round}: device {i} head {head} lost acked {last}"
            );
            assert_eq!(head % 2, 0, "round {round}: device {i}: a batch was torn");
            let events = store.read_events(&device, 1).await.unwrap();
            assert_eq!(events.len() as u64, head);
            for (k, e) in events.iter().enumerate() {
                assert_eq!(e.seq, k as u64 + 1);
                assert_eq!(e.digest, Some(digest(&e.payload)));
            }
        }
        drop(store);
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_across_checkpoints() {
    const DEVICES: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut acked = [0u64; DEVICES];
    let mut snapshots = 0;
    for round in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storage_crash_child"))
            .arg(dir.path())
            .arg(DEVICES.to_string())
            .env("OPUSH_CRASH_CHECKPOINT_MS", "2")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut n = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let mut f = line.strip_prefix("acked ").unwrap().split(' ');
            let i: usize = f.next().unwrap().parse().unwrap();
            let head: u64 = f.next().unwrap().parse().unwrap();
            assert!(head > acked[i], "round {round}: device {i} went back");
            acked[i] = head;
            n += 1;
            // A different moment each round.
            if n == 150 + 97 * round {
                break;
            }
        }
        assert_eq!(n, 150 + 97 * round, "round {round}: child stopped early");
        child.kill().unwrap();
        child.wait().unwrap();

        let config = StorageConfig {
            path: dir.path().to_path_buf(),
            ..StorageConfig::default()
        };
        let store = Store::open(&config).await.unwrap();
        for (i, last) in acked.iter().enumerate() {
            let device = DeviceKey::new("crash", format!("device{i}")).unwrap();
            let head = store.head(&device).await.unwrap();
            assert!(
                head >= *last,
                "round {round}: device {i} head {head} lost acked {last}"
            );
            assert_eq!(head % 2, 0, "round {round}: device {i}: a batch was torn");
            let events = store.read_events(&device, 1).await.unwrap();
            assert_eq!(events.len() as u64, head);
            for (k, e) in events.iter().enumerate() {
                assert_eq!(e.seq, k as u64 + 1);
                assert_eq!(e.digest, Some(digest(&e.payload)));
            }
            // Snapshots are caches, not journaled: one written since the
            // last checkpoint may be lost, never torn or ahead of the log.
            if let Some(snap) = store.get_snapshot(&device, "state").await.unwrap() {
                assert!(
                    snap.seq <= head && snap.seq % 2 == 0,
                    "round {round}: device {i} snapshot at {} (head {head})",
                    snap.seq
                );
                assert_eq!(
                    snap.payload,
                    format!("snapshot at {}", snap.seq).into_bytes()
                );
                snapshots += 1;
            }
        }
        drop(store);
    }
    // Checkpoints ran: snapshots reached the redb file.
    assert!(snapshots > 0, "no snapshot survived any round");
}
