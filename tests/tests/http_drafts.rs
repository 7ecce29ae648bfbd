//! Issue #5 gaps over HTTP (16.1) against the stack's Dovecot: a device
//! edits a draft it holds (Sync `Change` in Drafts: the IMAP message is
//! replaced, the ServerId stays, a retried request replaces nothing more),
//! and ItemOperations `Move` of a conversation (every message of the thread
//! moved, Sent Items and other threads untouched; Status 155 without
//! `MoveAlways`, 156 for an unknown destination).
//!
//! Reserved Dovecot users: load0056 (drafts), load0057 (conversations),
//! load1346 (a ClientId used again).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use opush_protocol::commands::item_operations::Operation;
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{CommandResponse, ServerCommand};
use opush_tests::eas::EasClient;
use opush_tests::{fill, unique, RawImap};
use support::*;

const V: &str = "16.1";

fn email_of(c: &ServerCommand) -> Option<&Email> {
    match c {
        ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        } => Some(e),
        _ => None,
    }
}

/// Sync 0 then Syncs of `collection` to the end: the key and the items.
async fn initial(c: &mut EasClient, collection: &str) -> (String, Vec<ServerCommand>) {
    let res = c.post_xml("Sync", &sync_xml(collection, "0", 0, "")).await;
    let key = sync_response(&res, V).collections[0].sync_key.0.clone();
    sync_all(c, V, collection, key, 100).await
}

fn draft_message(marker: &str) -> String {
    format!(
        "From: load0056@load.test\r\nTo: bob@example.test\r\nSubject: {marker} v1\r\n\
Date: Sat, 28 Nov 2026 11:00:00 +0000\r\nMessage-ID: <{marker}@load.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B1\r\n\r\n--B1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nfirst version\r\n--B1\r\n\
Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n--B1--\r\n"
    )
}

// [MS-ASCMD] 2.2.3.24 Change (16.0+ drafts): the edit replaces the IMAP
// message; the device keeps its ServerId and is sent nothing back for it.
#[tokio::test]
async fn a_draft_edited_by_the_device_replaces_the_imap_message() {
    let user = "load0056@load.test";
    let marker = unique("draftedit");
    let mut imap = RawImap::login(user);
    imap.cmd("SELECT Drafts");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    fill::append_all(&mut imap, "Drafts", std::iter::once(draft_message(&marker)));
    let old_uids = imap.search_subject("Drafts", &marker);
    assert_eq!(old_uids.len(), 1);

    let opush = start(Options::default()).await;
    let mut c = opush.client(user, "DRAFTEDIT161", V);
    let fs = folders(&mut c).await;
    let drafts = folder_of_type(&fs, 3).expect("a Drafts folder");
    let (key, items) = initial(&mut c, &drafts).await;
    let sid = items
        .iter()
        .find(|i| email_of(i).and_then(|e| e.subject.as_deref()) == Some(&format!("{marker} v1")))
        .map(|i| server_id(i).to_owned())
        .expect("the draft reached the device");

    let change = format!(
        "<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>\
         <email:To>carol@example.test</email:To><email:Subject>{marker} v2</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>second version</airsyncbase:Data></airsyncbase:Body>\
         </ApplicationData></Change></Commands>"
    );
    let req = sync_xml(&drafts, &key, 100, &change);
    let res = c.post_xml("Sync", &req).await;
    let first = sync_response(&res, V);
    let col = &first.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    let failed: Vec<_> = col
        .responses
        .iter()
        .flatten()
        .filter(|r| matches!(r, CommandResponse::Change { status, .. } if status.code() != 1))
        .collect();
    assert!(failed.is_empty(), "{}", res.xml());
    assert!(col.commands.is_none(), "nothing sent back: {}", res.xml());
    let new_key = col.sync_key.0.clone();

    // IMAP: one message, the new one; the old UID is gone.
    let uids = imap.search_subject("Drafts", &marker);
    assert_eq!(uids.len(), 1, "exactly one draft");
    assert_ne!(uids, old_uids, "the message was replaced");
    let text = imap.fetch_message(uids[0]);
    assert!(text.contains(&format!("{marker} v2")), "{text}");
    assert!(text.contains("second version"), "{text}");
    assert!(text.contains("carol@example.test"), "{text}");
    assert!(text.contains("plan.pdf"), "the attachment is kept: {text}");
    let (flags, _) = imap.cmd(&format!("UID FETCH {} (FLAGS)", uids[0]));
    assert!(flags.concat().contains("\\Draft"), "{flags:?}");

    // A lost answer: the same request again replaces nothing more.
    let again = c.post_xml("Sync", &req).await;
    let again = sync_response(&again, V);
    assert_eq!(again.collections[0].sync_key.0, new_key);
    assert_eq!(imap.search_subject("Drafts", &marker), uids);

    // The next Sync sends neither a Delete nor an Add for it.
    let res = c
        .post_xml("Sync", &sync_xml(&drafts, &new_key, 100, ""))
        .await;
    let next = sync_response(&res, V);
    assert!(
        next.collections[0].commands.is_none(),
        "the device keeps {sid}: {}",
        res.xml()
    );
    opush.stop().await;
}

fn thread_message(marker: &str, n: &str, headers: &str) -> String {
    format!(
        "From: Bob <bob@example.test>\r\nTo: load0057@load.test\r\nSubject: {marker} {n}\r\n\
Date: Sat, 28 Nov 2026 11:00:00 +0000\r\nMessage-ID: <{marker}-{n}@example.test>\r\n{headers}\
Content-Type: text/plain; charset=utf-8\r\n\r\nbody {n}\r\n"
    )
}

// [MS-ASCMD] 2.2.3.117.1 ItemOperations Move: the conversation's messages
// (root in one folder, reply in another) go to DstFldId; another thread and
// the copy in Sent stay. [MS-ASCMD] 2.2.3.118: no MoveAlways → Status 155.
#[tokio::test]
async fn item_operations_moves_a_conversation() {
    let user = "load0057@load.test";
    let marker = unique("conv");
    let (src, dst) = ("conv-src", "conv-dst");
    let mut imap = RawImap::login(user);
    for f in [src, dst] {
        imap.cmd(&format!("DELETE \"{f}\""));
        let (_, ok) = imap.cmd(&format!("CREATE \"{f}\""));
        assert!(ok.starts_with("OK"), "{ok}");
        imap.cmd(&format!("SUBSCRIBE \"{f}\""));
    }
    let root_ref = format!("<{marker}-root@example.test>");
    fill::append_all(
        &mut imap,
        "INBOX",
        [
            thread_message(&marker, "root", ""),
            thread_message(&marker, "other", ""),
        ]
        .into_iter(),
    );
    fill::append_all(
        &mut imap,
        src,
        std::iter::once(thread_message(
            &marker,
            "reply",
            &format!("In-Reply-To: {root_ref}\r\nReferences: {root_ref}\r\n"),
        )),
    );
    fill::append_all(
        &mut imap,
        "Sent",
        std::iter::once(thread_message(
            &marker,
            "sent",
            &format!("References: {root_ref}\r\n"),
        )),
    );

    let opush = start(Options::default()).await;
    let mut c = opush.client(user, "CONVMOVE161", V);
    let fs = folders(&mut c).await;
    let inbox = folder_of_type(&fs, 2).unwrap();
    let src_id = folder_named(&fs, src).unwrap().0;
    let dst_id = folder_named(&fs, dst).unwrap().0;
    let conversation = |items: &[ServerCommand], n: &str| {
        items
            .iter()
            .filter_map(email_of)
            .find(|e| e.subject.as_deref() == Some(&format!("{marker} {n}")))
            .and_then(|e| e.conversation_id.clone())
            .unwrap_or_else(|| panic!("no ConversationId for {n}"))
    };
    let (inbox_key, inbox_items) = initial(&mut c, &inbox).await;
    let (_, src_items) = initial(&mut c, &src_id).await;
    let conv = conversation(&inbox_items, "root");
    assert_eq!(conv.len(), 16);
    assert_eq!(conversation(&src_items, "reply"), conv, "one thread");
    assert_ne!(conversation(&inbox_items, "other"), conv);

    let mv = |dst: &str, always: bool| Operation::Move {
        conversation_id: conv.clone(),
        dst_fld_id: dst.to_owned(),
        move_always: always,
    };
    assert_eq!(
        move_conversation(&mut c, V, mv(&dst_id, false)).await.0,
        155
    );
    assert_eq!(move_conversation(&mut c, V, mv("9999", true)).await.0, 156);
    assert_eq!(
        imap.search_subject("INBOX", &format!("{marker} root"))
            .len(),
        1
    );

    let (status, echoed) = move_conversation(&mut c, V, mv(&dst_id, true)).await;
    assert_eq!((status, echoed), (1, Some(conv.clone())));
    assert_eq!(
        imap.search_subject(dst, &marker).len(),
        2,
        "root + reply moved"
    );
    assert!(imap
        .search_subject("INBOX", &format!("{marker} root"))
        .is_empty());
    assert_eq!(
        imap.search_subject("INBOX", &format!("{marker} other"))
            .len(),
        1
    );
    assert!(imap.search_subject(src, &marker).is_empty());
    assert_eq!(
        imap.search_subject("Sent", &marker).len(),
        1,
        "Sent keeps its copy"
    );

    // The device learns it by its next Sync.
    let res = c
        .post_xml("Sync", &sync_xml(&inbox, &inbox_key, 100, ""))
        .await;
    let r = sync_response(&res, V);
    let deletes = r.collections[0]
        .commands
        .iter()
        .flatten()
        .filter(|c| matches!(c, ServerCommand::Delete { .. }))
        .count();
    assert_eq!(deletes, 1, "{}", res.xml());
    // Nothing left of the thread outside the destination: ObjectNotFound.
    assert_eq!(move_conversation(&mut c, V, mv(&dst_id, true)).await.0, 6);
    for f in ["Sent", "INBOX"] {
        for u in imap.search_subject(f, &marker) {
            imap.cmd(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
        }
        imap.cmd("EXPUNGE");
    }
    opush.stop().await;
}

/// A device that uses a ClientId again after a resync (opush then no
/// longer remembers it) for another draft gets that draft saved: it is not
/// taken for the first one, whose Message-ID named only the ClientId.
/// Reserved Dovecot user: load1346.
#[tokio::test]
async fn a_client_id_used_again_after_a_resync_saves_the_new_draft() {
    const USER: &str = "load1346@load.test";
    let marker = unique("reuse");
    let mut imap = RawImap::login(USER);
    imap.cmd("SELECT Drafts");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    let opush = start(Options::default()).await;
    let mut c = opush.client(USER, "DRAFTREUSE", V);
    let add = |subject: &str| {
        format!(
            "<Commands><Add><ClientId>{marker}-1</ClientId><ApplicationData>\
             <email:To>bob@example.test</email:To><email:Subject>{subject}</email:Subject>\
             <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
             <airsyncbase:Data>text of {subject}</airsyncbase:Data></airsyncbase:Body>\
             </ApplicationData></Add></Commands>"
        )
    };
    for subject in [format!("{marker} first"), format!("{marker} second")] {
        // From SyncKey 0 each time: the resync forgets the ClientIds.
        let (drafts, key, _) = synced_folder_of_type(&mut c, V, 3).await;
        let res = c
            .post_xml("Sync", &sync_xml(&drafts, &key, 100, &add(&subject)))
            .await;
        assert_eq!(res.status, 200);
        let xml = res.xml();
        assert!(xml.contains("<ServerId>"), "the Add was answered: {xml}");
    }
    assert_eq!(
        imap.search_subject("Drafts", &format!("{marker} first"))
            .len(),
        1
    );
    assert_eq!(
        imap.search_subject("Drafts", &format!("{marker} second"))
            .len(),
        1,
        "the second draft was not saved"
    );
    opush.stop().await;
}
