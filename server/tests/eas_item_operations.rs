//! ItemOperations against the real Dovecot of the test stack and the
//! embedded store: Fetch by ServerId (HTML body), Fetch of an attachment by
//! the FileReference a Sync listed (whole and by byte Range), unknown items
//! and EmptyFolderContents (with and without DeleteSubFolders); `[imap]
//! max_message_bytes`: a bigger message is synced without body and its
//! attachment refused with Status 11.
//!
//! Reserved Dovecot users: load0034, load0083 (the size limit), load1339
//! (DeleteSubFolders), load1342 (a folder created again under its name).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services, sync_one, sync_req};

use base64::Engine as _;
use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
use opush_protocol::commands::item_operations::{
    FetchOptions, FetchTarget, ItemOperationsRequest, Operation, OperationResult,
};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::ServerCommand;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::itemoperations as io;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::get_attachment::get_attachment;
use opush_server::commands::item_operations::item_operations;
use opush_server::commands::sync::sync;
use opush_tests::{unique, RawImap};

const USER: &str = "load0034@load.test";
const DEVICE: &str = "DEVIOPS";

fn fetch(target: FetchTarget, options: FetchOptions) -> Operation {
    Operation::Fetch {
        store: "Mailbox".to_owned(),
        target,
        options: Some(Box::new(options)),
    }
}

#[tokio::test]
async fn fetch_by_server_id_and_file_reference_then_empty_the_folder() {
    let version = ProtocolVersion::V14_1;
    let mut raw = RawImap::login(USER);
    raw.cmd("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    let tag = unique("iops");
    let msg = format!(
        "From: a@example.test\r\nTo: b@load.test\r\nSubject: {tag}\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B1\r\n\r\n--B1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<p>Hello <b>there</b></p>\r\n--B1\r\nContent-Type: text/plain; name=notes.txt\r\n\
Content-Disposition: attachment; filename=notes.txt\r\nContent-Transfer-Encoding: base64\r\n\r\n\
MDEyMzQ1Njc4OWFiY2RlZg==\r\n--B1--\r\n"
    );
    let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "{ok}");

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let inbox = first_folder_sync(&eas, &caller(USER, DEVICE))
        .await
        .of_type(2);
    let r0 = sync(&sync_req(&inbox, "0"), version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    let k1 = r0.collections[0].sync_key.0.clone();
    let r1 = sync(&sync_req(&inbox, &k1), version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    let commands = r1.collections[0].commands.clone().unwrap();
    assert_eq!(commands.len(), 1);
    let ServerCommand::Add {
        server_id,
        application_data: ApplicationData::Email(email),
    } = &commands[0]
    else {
        panic!("{commands:?}");
    };
    assert_eq!(email.attachments.len(), 1);
    let fref = email.attachments[0].file_reference.clone().unwrap();
    assert_eq!(
        email.attachments[0].display_name.as_deref(),
        Some("notes.txt")
    );

    let html = FetchOptions {
        body_preferences: vec![BodyPreference {
            body_type: 2,
            ..BodyPreference::default()
        }],
        ..FetchOptions::default()
    };
    let req = ItemOperationsRequest {
        operations: vec![
            fetch(
                FetchTarget {
                    collection_id: Some(inbox.clone()),
                    server_id: Some(server_id.0.clone()),
                    ..FetchTarget::default()
                },
                html,
            ),
            fetch(
                FetchTarget {
                    file_reference: Some(fref.clone()),
                    ..FetchTarget::default()
                },
                FetchOptions::default(),
            ),
            fetch(
                FetchTarget {
                    file_reference: Some(fref.clone()),
                    ..FetchTarget::default()
                },
                FetchOptions {
                    range: Some("4-7".to_owned()),
                    ..FetchOptions::default()
                },
            ),
            fetch(
                FetchTarget {
                    server_id: Some(format!("{inbox}:4242")),
                    ..FetchTarget::default()
                },
                FetchOptions::default(),
            ),
        ],
    };
    let res = item_operations(&req, version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(res.results.len(), 4);
    let status_of = |r: &OperationResult| match r {
        OperationResult::Fetch { status, .. } => status.code(),
        other => panic!("{other:?}"),
    };
    let props_of = |r: &OperationResult| match r {
        OperationResult::Fetch { properties, .. } => properties.clone().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(status_of(&res.results[0]), 1);
    let ApplicationData::Email(full) = props_of(&res.results[0]) else {
        panic!("not an email")
    };
    let body = full.body.unwrap();
    assert_eq!(body.body_type, 2);
    assert!(body.data.unwrap().contains("<b>there</b>"));

    let data_of = |p: ApplicationData| match p {
        ApplicationData::Properties(props) => {
            let data = props
                .iter()
                .find(|e| e.tag == io::DATA)
                .unwrap()
                .text()
                .unwrap()
                .to_owned();
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap()
        }
        other => panic!("attachment answered as {other:?}"),
    };
    assert_eq!(status_of(&res.results[1]), 1);
    assert_eq!(data_of(props_of(&res.results[1])), b"0123456789abcdef");
    assert_eq!(status_of(&res.results[2]), 1);
    assert_eq!(data_of(props_of(&res.results[2])), b"4567");
    assert_eq!(status_of(&res.results[3]), 6);

    // GetAttachment (12.1) answers the same bytes for the same FileReference.
    let att = get_attachment(&fref, ProtocolVersion::V12_1, &caller(USER, DEVICE), &eas)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(att.data, b"0123456789abcdef");
    assert_eq!(att.content_type, "text/plain");
    let none = get_attachment(
        &format!("{inbox}:4242:0"),
        ProtocolVersion::V12_1,
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert!(none.is_none());

    // EmptyFolderContents empties INBOX on the IMAP side.
    let empty = ItemOperationsRequest {
        operations: vec![Operation::EmptyFolderContents {
            collection_id: inbox.clone(),
            delete_sub_folders: false,
        }],
    };
    let res = item_operations(&empty, version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert!(matches!(
        &res.results[0],
        OperationResult::EmptyFolderContents { status, .. } if status.code() == 1
    ));
    assert!(raw.search_subject("INBOX", &tag).is_empty());
    // The next Sync tells the device.
    let k2 = r1.collections[0].sync_key.0.clone();
    let r2 = sync(&sync_req(&inbox, &k2), version, &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    let cmds = r2.collections[0].commands.clone().unwrap();
    assert!(
        matches!(cmds.as_slice(), [ServerCommand::Delete { .. }]),
        "{cmds:?}"
    );
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_rendered_from_its_skeleton_unless_its_parts_pass_it() {
    const USER: &str = "load0083@load.test";
    const DEVICE: &str = "DEVSIZE";
    let version = ProtocolVersion::V14_1;
    let mut raw = RawImap::login(USER);
    raw.cmd("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    let tag = unique("size");
    let message = |subject: &str, attachment: &[u8]| {
        let data = base64::engine::general_purpose::STANDARD.encode(attachment);
        format!(
            "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B1\r\n\r\n--B1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
hello\r\n--B1\r\nContent-Type: application/octet-stream; name=a.bin\r\n\
Content-Disposition: attachment; filename=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n\
{data}\r\n--B1--\r\n"
        )
    };
    // So many parts that its skeleton alone passes the limit.
    let parts: String = (0..40)
        .map(|i| {
            format!(
                "--B1\r\nContent-Type: text/plain; name=p{i}.txt\r\n\
Content-Disposition: attachment; filename=p{i}.txt\r\n\r\npart {i}\r\n"
            )
        })
        .collect();
    let many = format!(
        "From: a@example.test\r\nTo: b@load.test\r\nSubject: {tag} many\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B1\r\n\r\n{parts}--B1--\r\n"
    );
    // Limit 4 KiB: one message well under it, one (an 8 KiB attachment)
    // over, one of 40 parts.
    for msg in [
        message(&format!("{tag} small"), &[7u8; 100]),
        message(&format!("{tag} big"), &[9u8; 8192]),
        many,
    ] {
        let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
        assert!(ok.starts_with("OK"), "{ok}");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(&dir).await;
    let mut imap = eas.imap.config().clone();
    imap.max_message_bytes = 4096;
    eas.imap = std::sync::Arc::new(opush_server::backends::imap::ImapPool::new(imap));
    let me = caller(USER, DEVICE);
    let inbox = first_folder_sync(&eas, &me).await.of_type(2);
    let r0 = sync(&sync_req(&inbox, "0"), version, &me, &eas)
        .await
        .unwrap();
    let k1 = r0.collections[0].sync_key.0.clone();
    let r1 = sync(&sync_req(&inbox, &k1), version, &me, &eas)
        .await
        .unwrap();
    assert_eq!(r1.collections[0].status.map(|s| s.code()), Some(1));
    let commands = r1.collections[0].commands.clone().unwrap();
    let emails: Vec<_> = commands
        .iter()
        .map(|c| match c {
            ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Email(email),
            } => (server_id.0.clone(), email.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(emails.len(), 3, "every message reaches the device");
    let named = |name: &str| {
        let subject = format!("{tag} {name}");
        emails
            .iter()
            .find(|(_, e)| e.subject.as_deref() == Some(subject.as_str()))
            .unwrap_or_else(|| panic!("{subject} not rendered"))
    };
    let (small, big) = (named("small"), named("big"));
    // The big one is rendered from its skeleton: its text, its attachment.
    let body = big.1.body.as_ref().unwrap();
    assert_eq!(body.data.as_deref(), Some("hello"));
    assert_eq!(big.1.attachments.len(), 1);
    assert_eq!(big.1.attachments[0].estimated_data_size, Some(8192));
    // The one of many parts: its skeleton passes the limit, sent without.
    let many = emails
        .iter()
        .find(|(id, _)| *id != small.0 && *id != big.0)
        .unwrap();
    assert!(many.1.attachments.is_empty(), "{:?}", many.1);
    let small_ref = small.1.attachments[0].file_reference.clone().unwrap();
    let big_ref = big.1.attachments[0].file_reference.clone().unwrap();

    let req = ItemOperationsRequest {
        operations: [small_ref, big_ref, format!("{}:0", many.0)]
            .into_iter()
            .map(|fref| {
                fetch(
                    FetchTarget {
                        file_reference: Some(fref),
                        ..FetchTarget::default()
                    },
                    FetchOptions::default(),
                )
            })
            .collect(),
    };
    let res = item_operations(&req, version, &me, &eas).await.unwrap();
    let statuses: Vec<u16> = res
        .results
        .iter()
        .map(|r| match r {
            OperationResult::Fetch { status, .. } => status.code(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        statuses,
        [1, 1, 11],
        "the big message's attachment is served; the many parts: data too large"
    );
}

/// FolderSync of `caller` from `key`: its new key and changes.
async fn folder_changes(
    eas: &opush_server::session::EasServices,
    caller: &opush_server::session::Caller<'_>,
    key: &str,
) -> (String, Vec<FolderChange>) {
    let fs = folder_sync(
        &FolderSyncRequest {
            sync_key: opush_protocol::commands::SyncKey(key.to_owned()),
        },
        caller,
        eas,
    )
    .await
    .unwrap();
    assert_eq!(fs.status.code(), 1, "{fs:?}");
    (fs.sync_key.unwrap().0, fs.changes.unwrap_or_default())
}

/// Empties `collection_id` (with `delete_sub_folders`): its Status.
async fn empty(
    eas: &opush_server::session::EasServices,
    caller: &opush_server::session::Caller<'_>,
    collection_id: &str,
    delete_sub_folders: bool,
) -> u16 {
    let req = ItemOperationsRequest {
        operations: vec![Operation::EmptyFolderContents {
            collection_id: collection_id.to_owned(),
            delete_sub_folders,
        }],
    };
    let res = item_operations(&req, ProtocolVersion::V14_1, caller, eas)
        .await
        .unwrap();
    match &res.results[..] {
        [OperationResult::EmptyFolderContents { status, .. }] => status.code(),
        other => panic!("{other:?}"),
    }
}

/// APPENDs a small message with `subject` to `mailbox`.
fn append_to(raw: &mut RawImap, mailbox: &str, subject: &str) {
    let msg = format!(
        "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n"
    );
    let (_, ok) = raw.cmd(&format!("APPEND \"{mailbox}\" {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append to {mailbox}: {ok}");
}

/// The mailboxes LIST shows.
fn mailbox_names(raw: &mut RawImap) -> Vec<String> {
    let (lines, ok) = raw.cmd("LIST \"\" \"*\"");
    assert!(ok.starts_with("OK"), "{ok}");
    lines
        .iter()
        .filter_map(|l| l.trim_end().rsplit(' ').next())
        .map(|n| n.trim_matches('"').to_owned())
        .collect()
}

// [MS-ASCMD] 2.2.3.58 EmptyFolderContents, 2.2.3.44 DeleteSubFolders:
// without it the subfolders of the emptied folder stay (and keep their
// messages); with it they are deleted too, and the device's next
// FolderSync reports them deleted.
#[tokio::test]
async fn empty_deleted_items_deletes_its_subfolders_only_with_delete_sub_folders() {
    const USER: &str = "load1339@load.test";
    let device = caller(USER, "DEVEMPTYSUB");
    let mut raw = RawImap::login(USER);
    // A previous run may have left them.
    raw.cmd("DELETE \"Trash/a/b\"");
    raw.cmd("DELETE \"Trash/a\"");
    for name in ["Trash/a", "Trash/a/b"] {
        raw.ok(&format!("CREATE \"{name}\""));
        raw.ok(&format!("SUBSCRIBE \"{name}\""));
    }
    raw.ok("SELECT Trash");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    raw.ok("UNSELECT");
    let tag = unique("emptysub");
    for mailbox in ["Trash", "Trash/a", "Trash/a/b"] {
        append_to(&mut raw, mailbox, &format!("{tag} in {mailbox}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let (key, added) = folder_changes(&eas, &device, "0").await;
    let id_of = |name: &str| {
        added
            .iter()
            .find_map(|c| match c {
                FolderChange::Add(f) if f.display_name == name => Some(f.server_id.0.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no folder {name} in {added:?}"))
    };
    let (trash, a, b) = (id_of("Trash"), id_of("a"), id_of("b"));

    // Without DeleteSubFolders: Trash emptied, its subfolders kept whole.
    assert_eq!(empty(&eas, &device, &trash, false).await, 1);
    assert!(raw.search_subject("Trash", &tag).is_empty());
    assert_eq!(raw.search_subject("Trash/a", &tag).len(), 1);
    assert_eq!(raw.search_subject("Trash/a/b", &tag).len(), 1);
    raw.ok("UNSELECT");
    let (key, changes) = folder_changes(&eas, &device, &key).await;
    assert!(changes.is_empty(), "{changes:?}");

    // With it: the subfolders go too, Trash stays.
    append_to(&mut raw, "Trash", &format!("{tag} again"));
    assert_eq!(empty(&eas, &device, &trash, true).await, 1);
    assert!(raw.search_subject("Trash", &tag).is_empty());
    raw.ok("UNSELECT");
    let names = mailbox_names(&mut raw);
    assert!(names.iter().any(|n| n == "Trash"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("Trash/")),
        "subfolders left: {names:?}"
    );
    let (_, changes) = folder_changes(&eas, &device, &key).await;
    let mut deleted: Vec<String> = changes
        .iter()
        .map(|c| match c {
            FolderChange::Delete(id) => id.0.clone(),
            other => panic!("only Deletes expected: {changes:?} ({other:?})"),
        })
        .collect();
    deleted.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(deleted, expected);
}

// [MS-ASCMD] 2.2.3.58 EmptyFolderContents names the folder by its
// CollectionId, which opush maps to an IMAP name. When another client
// deleted the folder the device synced and created another of that name
// since, the device asks to empty a folder it never saw: Status 6 (object
// not found, as for a folder deleted), nothing deleted. A folder synced
// and left alone is emptied as before.
#[tokio::test]
async fn empty_folder_contents_spares_a_folder_created_again_under_the_same_name() {
    const USER: &str = "load1342@load.test";
    let device = caller(USER, "DEVEMPTYSAME");
    let mut raw = RawImap::login(USER);
    let (again, kept) = ("EmptyAgain", "EmptyKept");
    for name in [again, kept] {
        // A previous run may have left them.
        raw.cmd(&format!("DELETE \"{name}\""));
        raw.ok(&format!("CREATE \"{name}\""));
        raw.ok(&format!("SUBSCRIBE \"{name}\""));
    }
    let tag = unique("emptysame");
    append_to(&mut raw, again, &format!("{tag} seen"));
    append_to(&mut raw, kept, &format!("{tag} kept"));
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let folders = first_folder_sync(&eas, &device).await;
    let (again_id, kept_id) = (folders.named(again), folders.named(kept));
    for id in [&again_id, &kept_id] {
        let r0 = sync_one(&eas, &device, &sync_req(id, "0")).await;
        let r1 = sync_one(&eas, &device, &sync_req(id, &r0.sync_key.0)).await;
        assert_eq!(r1.commands.map(|c| c.len()), Some(1), "{id}");
    }

    // Another client deletes the synced folder and creates one of the same
    // name, with a message the device never saw.
    let before = uidvalidity(&mut raw, again);
    raw.ok(&format!("DELETE \"{again}\""));
    raw.ok(&format!("CREATE \"{again}\""));
    raw.ok(&format!("SUBSCRIBE \"{again}\""));
    append_to(&mut raw, again, &format!("{tag} unseen"));
    assert_ne!(uidvalidity(&mut raw, again), before);

    assert_eq!(empty(&eas, &device, &again_id, true).await, 6);
    assert_eq!(
        raw.search_subject(again, &format!("{tag} unseen")).len(),
        1,
        "the new folder's message was deleted"
    );
    raw.ok("UNSELECT");

    // The control: the folder left alone is emptied.
    assert_eq!(empty(&eas, &device, &kept_id, false).await, 1);
    assert!(raw.search_subject(kept, &tag).is_empty());
    raw.ok("UNSELECT");
    for name in [again, kept] {
        raw.cmd(&format!("DELETE \"{name}\""));
    }
}

/// The UIDVALIDITY of `mailbox`, as STATUS gives it.
fn uidvalidity(raw: &mut RawImap, mailbox: &str) -> u32 {
    let (lines, ok) = raw.cmd(&format!("STATUS \"{mailbox}\" (UIDVALIDITY)"));
    assert!(ok.starts_with("OK"), "{ok}");
    lines
        .iter()
        .find_map(|l| {
            let rest = l.split("UIDVALIDITY ").nth(1)?;
            rest.trim_end().trim_end_matches(')').parse().ok()
        })
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {lines:?}"))
}
