//! Crash safety of the embedded store: a child process appends and prints
//! each acknowledged head; it is SIGKILLed mid-stream; reopening the store
//! must find every acknowledged event, intact and in order, and no torn batch.
//! The second test does the same with many devices appending at once, whose
//! appends share group commits. Acknowledged writes live in the journal
//! until a checkpoint writes them to the redb file: the first two tests
//! kill before any checkpoint (only the journal's replay recovers them),
//! the third with checkpoints every 2 ms, and snapshots beside the appends
//! (caches, not journaled: only those of a checkpoint survive); the fourth
//! with 64 KB events and checkpoints every millisecond, so that most kills
//! land in a checkpoint's second part (its pages not yet written out, the
//! retired journal file not yet emptied).

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

/// Runs the child with `devices` devices (and `checkpoint_ms`, if any)
/// until `acks` acknowledgements, recording each device's last acked head
/// in `acked`, then SIGKILLs it.
fn run_child_and_kill(
    dir: &std::path::Path,
    acked: &mut [u64],
    checkpoint_ms: Option<&str>,
    acks: usize,
    round: usize,
) {
    run_padded_child_and_kill(dir, acked, checkpoint_ms, None, acks, round)
}

/// [`run_child_and_kill`], each event padded by `pad` bytes.
fn run_padded_child_and_kill(
    dir: &std::path::Path,
    acked: &mut [u64],
    checkpoint_ms: Option<&str>,
    pad: Option<&str>,
    acks: usize,
    round: usize,
) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_storage_crash_child"));
    cmd.arg(dir)
        .arg(acked.len().to_string())
        .stdout(Stdio::piped());
    if let Some(ms) = checkpoint_ms {
        cmd.env("OPUSH_CRASH_CHECKPOINT_MS", ms);
    }
    if let Some(pad) = pad {
        cmd.env("OPUSH_CRASH_PAD", pad);
    }
    let mut child = cmd.spawn().unwrap();
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
        if n == acks {
            break;
        }
    }
    assert_eq!(n, acks, "round {round}: child stopped early");
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
}

/// Reopens the store and checks every device's log: each acknowledged
/// head is there, no batch torn, every event intact and in order. Returns
/// the store and each device's head.
async fn check_logs(dir: &std::path::Path, acked: &[u64], round: usize) -> (Store, Vec<u64>) {
    let config = StorageConfig {
        path: dir.to_path_buf(),
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await.unwrap();
    let mut heads = Vec::with_capacity(acked.len());
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
        heads.push(head);
    }
    (store, heads)
}

#[tokio::test]
async fn acknowledged_group_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = [0u64; 16];
    for round in 0..2 {
        run_child_and_kill(dir.path(), &mut acked, None, 400, round);
        let (store, _) = check_logs(dir.path(), &acked, round).await;
        drop(store);
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_across_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = [0u64; 8];
    let mut snapshots = 0;
    for round in 0..3 {
        // A different moment each round.
        run_child_and_kill(dir.path(), &mut acked, Some("2"), 150 + 97 * round, round);
        let (store, heads) = check_logs(dir.path(), &acked, round).await;
        for (i, head) in heads.into_iter().enumerate() {
            let device = DeviceKey::new("crash", format!("device{i}")).unwrap();
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

// The same with 64 KB events: each checkpoint has megabytes of pages to
// write out and sync on the checkpoint thread, so most kills land in its
// second part (the redb file behind, the appends in the other journal
// file, the retired one not yet emptied): replay must apply both journal
// files, the older first.
#[tokio::test]
async fn acknowledged_writes_survive_kill_9_mid_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = [0u64; 8];
    for round in 0..6 {
        let acks = 60 + 37 * round;
        run_padded_child_and_kill(
            dir.path(),
            &mut acked,
            Some("1"),
            Some("65536"),
            acks,
            round,
        );
        let (store, _) = check_logs(dir.path(), &acked, round).await;
        drop(store);
    }
}
