//! A 16.x draft edit (`draft::replace_draft`) whose old message cannot be
//! expunged: the edit is APPENDed, then the expunge of the old draft is
//! refused. Tried again once, a second refusal fails the Change (the
//! device retries it) instead of answering it replaced while the old
//! message stays (a second copy of the draft at the next delta); the
//! retried Change finds the edit saved by its Message-ID, APPENDs no
//! other copy and expunges the old draft.
//!
//! Dovecot always expunges what its owner asks, so the refusal is made on
//! the wire: opush reaches the stack's Dovecot through [`Refuser`], a
//! relay that answers the next `UID EXPUNGE` commands NO itself (the
//! `UID STORE +FLAGS (\Deleted)` before them goes through, as when a
//! server fails between the two).
//!
//! Reserved Dovecot user: load1343.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use opush_engine::EffectOutcome;
use opush_protocol::commands::items::Email;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::compose::SendSettings;
use opush_server::commands::sync::uid_of;
use opush_server::config::{ImapConfig, Secret};
use opush_server::draft::{replace_draft, Author};
use opush_tests::{demo_password, require, unique, RawImap, DOVECOT_IMAP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const USER: &str = "load1343@load.test";

/// A relay to the stack's Dovecot answering NO, itself, to the next
/// `refuse` `UID EXPUNGE` commands; every other byte goes through.
struct Refuser {
    addr: SocketAddr,
    refuse: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Refuser {
    async fn start() -> Refuser {
        let upstream = require(DOVECOT_IMAP);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refuse = Arc::new(AtomicUsize::new(0));
        let counter = refuse.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(upstream).await.unwrap();
                tokio::spawn(relay(client, server, counter.clone()));
            }
        });
        Refuser {
            addr,
            refuse,
            accept,
        }
    }

    /// The next `n` `UID EXPUNGE` commands are refused.
    fn refuse(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
    }
}

async fn relay(client: TcpStream, server: TcpStream, refuse: Arc<AtomicUsize>) {
    let (mut client_rd, client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let client_wr = Arc::new(Mutex::new(client_wr));
    let down = client_wr.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = server_rd.read(&mut buf).await {
            if down.lock().await.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = client_rd.read(&mut buf).await {
        let chunk = &buf[..n];
        // One command line, `<tag> UID EXPUNGE <set>`: opush waits for
        // the answer to its UID STORE before sending it.
        let line = std::str::from_utf8(chunk).ok().filter(|l| {
            l.ends_with("\r\n") && l.matches("\r\n").count() == 1 && l.contains(" UID EXPUNGE ")
        });
        if let Some(line) = line {
            if refuse
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                .is_ok()
            {
                let tag = line.split(' ').next().unwrap_or("*");
                let no = format!("{tag} NO refused by the test\r\n");
                if client_wr
                    .lock()
                    .await
                    .write_all(no.as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        }
        if server_wr.write_all(chunk).await.is_err() {
            break;
        }
    }
}

/// APPENDs a draft with `subject` to Drafts; its UID.
fn append_draft(raw: &mut RawImap, subject: &str) -> u32 {
    let msg = format!(
        "From: {USER}\r\nTo: b@load.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@load.test>\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nfirst words\r\n"
    );
    raw.ok(&format!(
        "APPEND Drafts (\\Draft \\Seen) {{{}+}}\r\n{msg}",
        msg.len()
    ));
    let uids = raw.search_subject("Drafts", subject);
    assert_eq!(uids.len(), 1, "{uids:?}");
    uids[0]
}

/// The UIDs of Drafts' messages whose Message-ID is `<message_id>`.
fn with_message_id(raw: &mut RawImap, message_id: &str) -> Vec<u32> {
    raw.ok("SELECT Drafts");
    raw.uid_search(&format!("HEADER Message-ID \"<{message_id}>\""))
}

/// Whether Drafts still has UID `uid`.
fn has_uid(raw: &mut RawImap, uid: u32) -> bool {
    raw.ok("SELECT Drafts");
    raw.uid_search(&format!("UID {uid}")).contains(&uid)
}

#[tokio::test]
async fn an_edit_whose_old_draft_stays_fails_and_its_retry_finishes_it() {
    let refuser = Refuser::start().await;
    let pool = ImapPool::new(ImapConfig {
        port: refuser.addr.port(),
        ..ImapConfig::default()
    });
    let mut imap = pool.get(USER, &Secret::new(demo_password())).await.unwrap();
    let mut raw = RawImap::login(USER);
    let author = Author::of(&SendSettings::default(), USER);
    let tag = unique("draftexp");

    // Refused once: tried again, the edit is done.
    let old = append_draft(&mut raw, &format!("{tag}-once"));
    let change = Email {
        subject: Some(format!("{tag}-once edited")),
        ..Email::default()
    };
    let mid = format!("e.{tag}-once@load.test");
    refuser.refuse(1);
    let outcome = replace_draft(&mut imap, "Drafts", (old, "5:1"), &author, &change, &mid).await;
    let EffectOutcome::Replaced(item) = outcome else {
        panic!("{outcome:?}");
    };
    let saved = with_message_id(&mut raw, &mid);
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(uid_of(&item.id).map(|(_, u)| u), Some(saved[0]));
    assert!(!has_uid(&mut raw, old), "the old draft stays");

    // Refused twice: the Change fails, the edit saved, the old draft kept.
    let old = append_draft(&mut raw, &format!("{tag}-twice"));
    let change = Email {
        subject: Some(format!("{tag}-twice edited")),
        ..Email::default()
    };
    let mid = format!("e.{tag}-twice@load.test");
    refuser.refuse(2);
    let outcome = replace_draft(&mut imap, "Drafts", (old, "5:2"), &author, &change, &mid).await;
    assert_eq!(outcome, EffectOutcome::Failed);
    let saved = with_message_id(&mut raw, &mid);
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(has_uid(&mut raw, old));

    // The device retries the Change: the saved edit is its item, no third
    // copy, the old draft gone.
    let outcome = replace_draft(&mut imap, "Drafts", (old, "5:2"), &author, &change, &mid).await;
    let EffectOutcome::Replaced(item) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(uid_of(&item.id).map(|(_, u)| u), Some(saved[0]));
    assert_eq!(with_message_id(&mut raw, &mid), saved, "another copy saved");
    assert!(!has_uid(&mut raw, old), "the old draft stays");
    assert_eq!(
        raw.search_subject("Drafts", &format!("{tag}-twice")),
        saved,
        "a copy of the draft besides the edit"
    );
    raw.ok("UNSELECT");
}
