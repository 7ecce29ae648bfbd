//! ItemOperations against the real Dovecot of the test stack and the
//! embedded store: Fetch by ServerId (HTML body), Fetch of an attachment by
//! the FileReference a Sync listed (whole and by byte Range), unknown items
//! and EmptyFolderContents; `[imap] max_message_bytes`: a bigger message is
//! synced without body and its attachment refused with Status 11.
//!
//! Reserved Dovecot users: load0034, load0083 (the size limit).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services, sync_req};

use base64::Engine as _;
use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::item_operations::{
    FetchOptions, FetchTarget, ItemOperationsRequest, Operation, OperationResult,
};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::ServerCommand;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::itemoperations as io;
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
