//! 16.1 draft attachments over HTTP against the stack's Dovecot
//! ([MS-ASAIRS] 2.2.2.2 `Add`, 2.2.2.21 `Delete`, 2.2.2.14 `ClientId`,
//! 2.2.2.24.1 `FileReference`): a draft added with two attachments (one
//! inline with a ContentId) is stored in IMAP with both, the answer gives
//! each attachment's ClientId with its FileReference, a retried request
//! stores nothing more and answers the same; a Change deleting one by its
//! FileReference and adding another rebuilds the IMAP message with the
//! kept and the new one, and the new FileReference fetches the new content.
//!
//! Also: with `[imap] max_message_bytes` small, a draft whose attachments
//! would make it larger is refused (Add and Change fail, IMAP unchanged).
//!
//! A draft that came from elsewhere (APPENDed over IMAP) with nested parts
//! (an inline image in a multipart/related, a forwarded message whose body
//! is multipart, a multipart attached as a whole) keeps every part it had,
//! byte for byte with its MIME headers, when the device edits its subject
//! and body and adds an attachment; the references the device holds still
//! fetch the same content, and another device sees the same attachments.
//!
//! Reserved Dovecot users: load0089, load0090 (size limit), load0069
//! (nested parts).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use base64::Engine as _;
use opush_protocol::wbxml::Element;
use opush_tests::eas::{find_all, find_text, EasClient, HttpResponse};
use opush_tests::{unique, RawImap};
use support::*;

const V: &str = "16.1";
const USER: &str = "load0089@load.test";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `<airsyncbase:Add>` of an attachment.
fn attachment_add(client_id: &str, name: &str, content: &[u8], inline_cid: Option<&str>) -> String {
    let (ctype, inline) = match inline_cid {
        Some(cid) => (
            "image/png",
            format!(
                "<airsyncbase:ContentId>{cid}</airsyncbase:ContentId>\
                 <airsyncbase:IsInline>1</airsyncbase:IsInline>"
            ),
        ),
        None => ("application/octet-stream", String::new()),
    };
    format!(
        "<airsyncbase:Add><airsyncbase:ClientId>{client_id}</airsyncbase:ClientId>\
         <airsyncbase:Content>{}</airsyncbase:Content>\
         <airsyncbase:DisplayName>{name}</airsyncbase:DisplayName>\
         <airsyncbase:ContentType>{ctype}</airsyncbase:ContentType>\
         <airsyncbase:Method>1</airsyncbase:Method>{inline}</airsyncbase:Add>",
        b64(content)
    )
}

/// ClientId → FileReference of the `Attachment`s of an answer.
fn references(root: &Element<'_>) -> Vec<(String, String)> {
    find_all(root, "Attachment")
        .into_iter()
        .map(|a| {
            (
                find_text(a, "ClientId").unwrap_or_default(),
                find_text(a, "FileReference").unwrap_or_default(),
            )
        })
        .collect()
}

fn status_1(res: &HttpResponse) -> Element<'static> {
    let root = res.element();
    let statuses: Vec<_> = find_all(&root, "Status")
        .into_iter()
        .map(|s| s.text_concat().map(|t| t.into_owned()).unwrap_or_default())
        .collect();
    assert!(statuses.iter().all(|s| s == "1"), "{}", res.xml());
    root
}

async fn fetch_reference(c: &mut EasClient, file_reference: &str) -> Vec<u8> {
    let res = c
        .post_xml(
            "ItemOperations",
            &format!(
                "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsyncbase=\"AirSyncBase:\">\
                 <Fetch><Store>Mailbox</Store><airsyncbase:FileReference>{file_reference}\
                 </airsyncbase:FileReference></Fetch></ItemOperations>"
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    let root = res.element();
    let data = find_all(&root, "Data");
    let data = data
        .first()
        .unwrap_or_else(|| panic!("no Data: {}", res.xml()));
    data.opaque()
        .map(<[u8]>::to_vec)
        .or_else(|| {
            data.text_concat().map(|t| {
                base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .unwrap()
            })
        })
        .unwrap_or_default()
}

/// `user`'s Drafts emptied on the IMAP side; the connection kept for checks.
fn empty_drafts(user: &str) -> RawImap {
    let mut imap = RawImap::login(user);
    imap.cmd("SELECT Drafts");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    imap
}

/// FolderSync, then the Drafts folder synced to its end: its
/// CollectionId and the SyncKey to go on with.
async fn drafts_synced(c: &mut EasClient) -> (String, String) {
    let (drafts, key, _) = drafts_synced_with(c).await;
    (drafts, key)
}

/// [`drafts_synced`], with the commands the sync brought.
async fn drafts_synced_with(
    c: &mut EasClient,
) -> (
    String,
    String,
    Vec<opush_protocol::commands::sync::ServerCommand>,
) {
    synced_folder_of_type(c, V, 3).await
}

#[tokio::test]
async fn a_draft_gains_and_loses_attachments() {
    let marker = unique("draftatt");
    let mut imap = empty_drafts(USER);

    let opush = start(Options::default()).await;
    let mut c = opush.client(USER, "DRAFTATT161", V);
    let (drafts, key) = drafts_synced(&mut c).await;

    // Add: a draft with an attachment and an inline image.
    let pdf = b"%PDF-1.4 pretend plan".to_vec();
    let png = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3];
    let add = format!(
        "<Commands><Add><ClientId>{marker}-d</ClientId><ApplicationData>\
         <email:To>bob@example.test</email:To><email:Subject>{marker}</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>see attached</airsyncbase:Data></airsyncbase:Body>\
         <airsyncbase:Attachments>{}{}</airsyncbase:Attachments>\
         </ApplicationData></Add></Commands>",
        attachment_add("att-pdf", "plan.pdf", &pdf, None),
        attachment_add("att-png", "logo.png", &png, Some("logo@device")),
    );
    let req = sync_xml(&drafts, &key, 100, &add);
    let res = c.post_xml("Sync", &req).await;
    let root = status_1(&res);
    let sid = find_text(&root, "ServerId").expect("the draft's ServerId");
    let refs = references(&root);
    assert_eq!(
        refs,
        vec![
            ("att-pdf".to_owned(), format!("{sid}:0")),
            ("att-png".to_owned(), format!("{sid}:1")),
        ],
        "{}",
        res.xml()
    );
    let key = sync_response(&res, V).collections[0].sync_key.0.clone();

    let uids = imap.search_subject("Drafts", &marker);
    assert_eq!(uids.len(), 1, "one draft");
    let text = imap.fetch_message(uids[0]);
    assert!(text.contains("plan.pdf"), "{text}");
    assert!(text.contains("<logo@device>"), "{text}");
    assert!(text.contains("see attached"), "{text}");

    // A lost answer: the same request again stores nothing more and
    // answers the same references.
    let again = c.post_xml("Sync", &req).await;
    let again_root = status_1(&again);
    assert_eq!(references(&again_root), refs, "{}", again.xml());
    assert_eq!(imap.search_subject("Drafts", &marker), uids);

    // The FileReferences fetch what was added.
    assert_eq!(fetch_reference(&mut c, &format!("{sid}:0")).await, pdf);

    // Change: the PDF deleted by its FileReference, a text file added.
    let notes = b"second thoughts".to_vec();
    let change = format!(
        "<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>\
         <airsyncbase:Attachments>\
         <airsyncbase:Delete><airsyncbase:FileReference>{sid}:0</airsyncbase:FileReference></airsyncbase:Delete>\
         {}</airsyncbase:Attachments></ApplicationData></Change></Commands>",
        attachment_add("att-notes", "notes.txt", &notes, None),
    );
    let res = c
        .post_xml("Sync", &sync_xml(&drafts, &key, 100, &change))
        .await;
    let root = status_1(&res);
    assert_eq!(
        references(&root),
        vec![("att-notes".to_owned(), format!("{sid}:2"))],
        "the new file gets a number never used in this draft: {}",
        res.xml()
    );
    let new_uids = imap.search_subject("Drafts", &marker);
    assert_eq!(new_uids.len(), 1, "still one draft");
    assert_ne!(new_uids, uids, "the message was rebuilt");
    let text = imap.fetch_message(new_uids[0]);
    assert!(!text.contains("plan.pdf"), "the PDF is gone: {text}");
    assert!(text.contains("<logo@device>"), "the image is kept: {text}");
    assert!(text.contains("notes.txt"), "{text}");
    assert!(text.contains(&format!("Subject: {marker}")), "{text}");
    assert_eq!(fetch_reference(&mut c, &format!("{sid}:2")).await, notes);
    // The image kept the reference the device got when it added it.
    assert_eq!(fetch_reference(&mut c, &format!("{sid}:1")).await, png);
    opush.stop().await;
}

// [MS-ASCMD] 2.2.3.177.17 Sync Status (per command): a draft that would
// exceed the message size limit once its attachment is added is refused;
// the IMAP side keeps what it had.
#[tokio::test]
async fn a_draft_over_the_size_limit_is_refused() {
    let user = "load0090@load.test";
    let marker = unique("draftbig");
    let mut imap = empty_drafts(user);
    let opush = start(Options {
        imap_toml: "max_message_bytes = 4096\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(user, "DRAFTBIG161", V);
    let (drafts, key) = drafts_synced(&mut c).await;
    let draft = |client_id: &str, subject: &str, attachment: String| {
        format!(
            "<Commands><Add><ClientId>{client_id}</ClientId><ApplicationData>\
             <email:Subject>{subject}</email:Subject>\
             <airsyncbase:Attachments>{attachment}</airsyncbase:Attachments>\
             </ApplicationData></Add></Commands>"
        )
    };
    let big = vec![b'x'; 6000];
    let small = vec![b'y'; 100];

    // Too large from the start: the Add fails, nothing is stored.
    let add = draft(
        "d-big",
        &format!("{marker} big"),
        attachment_add("a", "big.bin", &big, None),
    );
    let res = c
        .post_xml("Sync", &sync_xml(&drafts, &key, 100, &add))
        .await;
    let r = sync_response(&res, V);
    let col = &r.collections[0];
    let refused = col.responses.iter().flatten().any(|resp| {
        matches!(resp, opush_protocol::commands::sync::CommandResponse::Add { status, .. }
            if status.code() != 1)
    });
    assert!(refused, "{}", res.xml());
    assert!(imap
        .search_subject("Drafts", &format!("{marker} big"))
        .is_empty());
    let key = col.sync_key.0.clone();

    // A small draft, then a Change that would make it too large: refused,
    // the stored draft is the small one still.
    let add = draft(
        "d-small",
        &format!("{marker} small"),
        attachment_add("b", "small.bin", &small, None),
    );
    let res = c
        .post_xml("Sync", &sync_xml(&drafts, &key, 100, &add))
        .await;
    let root = status_1(&res);
    let sid = find_text(&root, "ServerId").expect("the small draft's ServerId");
    let key = sync_response(&res, V).collections[0].sync_key.0.clone();
    let before = imap.search_subject("Drafts", &format!("{marker} small"));
    assert_eq!(before.len(), 1);
    let change = format!(
        "<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>\
         <airsyncbase:Attachments>{}</airsyncbase:Attachments></ApplicationData></Change></Commands>",
        attachment_add("c", "big.bin", &big, None),
    );
    let res = c
        .post_xml("Sync", &sync_xml(&drafts, &key, 100, &change))
        .await;
    let r = sync_response(&res, V);
    let refused = r.collections[0].responses.iter().flatten().any(|resp| {
        matches!(resp, opush_protocol::commands::sync::CommandResponse::Change { status, .. }
            if status.code() != 1)
    });
    assert!(refused, "{}", res.xml());
    assert_eq!(
        imap.search_subject("Drafts", &format!("{marker} small")),
        before
    );
    let text = imap.fetch_message(before[0]);
    assert!(!text.contains("big.bin"), "{text}");
    opush.stop().await;
}

/// A draft another mail program left in Drafts: plain text beside HTML
/// with an inline image (multipart/related), a forwarded message whose
/// body is multipart, and a multipart/mixed attached as a whole holding a
/// binary file and a Latin-1 text file.
fn nested_draft(subject: &str) -> String {
    [
        "From: load0069@load.test",
        "To: bob@example.test",
        &format!("Subject: {subject}"),
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=\"top\"",
        "",
        "--top",
        "Content-Type: multipart/alternative; boundary=\"alt\"",
        "",
        "--alt",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Look at the chart.",
        "--alt",
        "Content-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"",
        "",
        "--rel",
        "Content-Type: text/html; charset=utf-8",
        "",
        "<p>Look at the <img src=\"cid:chart@nested\"></p>",
        "--rel",
        "Content-Type: image/gif",
        "Content-ID: <chart@nested>",
        "Content-Disposition: inline",
        "Content-Transfer-Encoding: base64",
        "",
        "R0lGODlhAQABAAAAACw=",
        "--rel--",
        "--alt--",
        "--top",
        "Content-Type: message/rfc822",
        "Content-Disposition: attachment; filename=\"earlier.eml\"",
        "",
        "From: carol@example.test",
        "Subject: The earlier one",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=\"fwd\"",
        "",
        "--fwd",
        "Content-Type: text/plain",
        "",
        "What carol wrote",
        "--fwd",
        "Content-Type: application/pdf; name=\"carol.pdf\"",
        "Content-Disposition: attachment; filename=\"carol.pdf\"",
        "Content-Transfer-Encoding: base64",
        "",
        "JVBERi0xLjcK",
        "--fwd--",
        "--top",
        "Content-Type: multipart/mixed; boundary=\"sub\"",
        "Content-Disposition: attachment",
        "",
        "--sub",
        "Content-Type: application/octet-stream",
        "Content-Disposition: attachment; filename=\"data.bin\"",
        "Content-Transfer-Encoding: base64",
        "",
        "AP8BAgM=",
        "--sub",
        "Content-Type: text/csv; charset=iso-8859-1",
        "Content-Disposition: attachment; filename=\"prices.csv\"",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "caf=E9,2",
        "--sub--",
        "--top--",
        "",
    ]
    .join("\r\n")
}

/// `BODY[section]` of message `uid` in the selected mailbox, as Dovecot
/// (not opush) cuts it out.
fn section(imap: &mut RawImap, uid: u32, section: &str) -> String {
    let (lines, ok) = imap.cmd(&format!("UID FETCH {uid} BODY.PEEK[{section}]"));
    assert!(ok.starts_with("OK"), "fetch {section}: {ok}");
    let all = lines.concat();
    let at = all
        .find(&format!("BODY[{section}] {{"))
        .unwrap_or_else(|| panic!("no section {section}: {all}"));
    let rest = &all[at..];
    let open = rest.find('{').unwrap();
    let close = rest.find("}\r\n").unwrap();
    let n: usize = rest[open + 1..close].parse().unwrap();
    rest[close + 3..close + 3 + n].to_owned()
}

/// A part's MIME header without the number opush gives it.
fn without_number(mime: &str) -> String {
    mime.split_inclusive("\r\n")
        .filter(|l| !l.starts_with("X-Opush-Attachment:"))
        .collect()
}

// The data-loss bug of sessions 4-7: rebuilding a draft dropped or
// altered the parts it did not change when they were nested.
#[tokio::test]
async fn a_rebuilt_draft_keeps_its_nested_parts() {
    let user = "load0069@load.test";
    let marker = unique("draftnest");
    let mut imap = empty_drafts(user);
    let msg = nested_draft(&marker);
    let (_, ok) = imap.cmd(&format!(
        "APPEND Drafts (\\Draft) {{{}+}}\r\n{msg}",
        msg.len()
    ));
    assert!(ok.starts_with("OK"), "append: {ok}");
    let old = imap.search_subject("Drafts", &marker);
    assert_eq!(old.len(), 1);
    // The kept leaves' sections before, and after a plain-text body
    // replaced the HTML beside the image (which moves up one place).
    let sections = [
        ("1.2.2", "1.2.1"),
        ("2", "2"),
        ("3.1", "3.1"),
        ("3.2", "3.2"),
    ];
    let before: Vec<(String, String)> = sections
        .iter()
        .map(|(s, _)| {
            (
                section(&mut imap, old[0], &format!("{s}.MIME")),
                section(&mut imap, old[0], s),
            )
        })
        .collect();
    assert!(
        before[0].0.contains("Content-ID: <chart@nested>"),
        "{before:?}"
    );

    let opush = start(Options::default()).await;
    let mut c = opush.client(user, "DRAFTNEST161", V);
    let (drafts, key, commands) = drafts_synced_with(&mut c).await;
    let (sid, email) = commands
        .iter()
        .find_map(|cmd| match cmd {
            opush_protocol::commands::sync::ServerCommand::Add {
                server_id,
                application_data: opush_protocol::commands::items::ApplicationData::Email(e),
            } => Some((server_id.0.clone(), e.clone())),
            _ => None,
        })
        .expect("the draft is synced");
    let seen = listed(&email);
    assert_eq!(
        seen.iter().map(|(_, n, _)| n.as_str()).collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{seen:?}"
    );
    assert_eq!(seen[0].2.as_deref(), Some("chart@nested"));
    assert_eq!(seen[1].0, "earlier.eml");
    assert_eq!(seen[2].0, "data.bin");
    assert_eq!(seen[3].0, "prices.csv");
    let mut fetched = Vec::new();
    for n in 0..4 {
        fetched.push(fetch_reference(&mut c, &format!("{sid}:{n}")).await);
    }
    assert_eq!(fetched[2], [0, 255, 1, 2, 3]);
    assert_eq!(fetched[3], b"caf\xe9,2");

    // The device edits the subject and the body and adds a file.
    let notes = b"the notes".to_vec();
    let change = format!(
        "<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>\
         <email:Subject>{marker} v2</email:Subject>\
         <airsyncbase:Body><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:Data>Edited text</airsyncbase:Data></airsyncbase:Body>\
         <airsyncbase:Attachments>{}</airsyncbase:Attachments>\
         </ApplicationData></Change></Commands>",
        attachment_add("att-notes", "notes.txt", &notes, None),
    );
    let res = c
        .post_xml("Sync", &sync_xml(&drafts, &key, 100, &change))
        .await;
    let root = status_1(&res);
    assert_eq!(
        references(&root),
        vec![("att-notes".to_owned(), format!("{sid}:4"))],
        "{}",
        res.xml()
    );
    let new = imap.search_subject("Drafts", &format!("{marker} v2"));
    assert_eq!(new.len(), 1, "one draft");
    assert_ne!(new, old, "rebuilt");
    assert_eq!(
        imap.search_subject("Drafts", &marker),
        new,
        "the old one is gone"
    );

    // Dovecot finds every kept part where the structure puts it, with the
    // same MIME header (but for opush's number) and the same bytes.
    for ((_, after), (mime, body)) in sections.iter().zip(&before) {
        let now_mime = section(&mut imap, new[0], &format!("{after}.MIME"));
        assert_eq!(&without_number(&now_mime), mime, "part {after}");
        assert_eq!(&section(&mut imap, new[0], after), body, "part {after}");
    }
    assert!(
        section(&mut imap, new[0], "3.MIME").contains("Content-Disposition: attachment"),
        "the attached multipart keeps its disposition"
    );
    assert!(section(&mut imap, new[0], "1.1").contains("Edited text"));
    assert!(section(&mut imap, new[0], "4.MIME").contains("notes.txt"));
    let whole = imap.fetch_message(new[0]);
    assert!(
        !whole.contains("Look at the"),
        "the old body's two forms are replaced: {whole}"
    );

    // The references the device holds fetch what they did.
    for (n, data) in fetched.iter().enumerate() {
        assert_eq!(
            &fetch_reference(&mut c, &format!("{sid}:{n}")).await,
            data,
            "{sid}:{n}"
        );
    }
    assert_eq!(fetch_reference(&mut c, &format!("{sid}:4")).await, notes);

    // Another device sees the same attachments under the same numbers.
    let mut other = opush.client(user, "DRAFTNEST2", V);
    let (_, _, commands) = drafts_synced_with(&mut other).await;
    let email = commands
        .iter()
        .find_map(|cmd| match cmd {
            opush_protocol::commands::sync::ServerCommand::Add {
                application_data: opush_protocol::commands::items::ApplicationData::Email(e),
                ..
            } => Some(e.clone()),
            _ => None,
        })
        .expect("the rebuilt draft");
    let mut expected = seen.clone();
    expected.push(("notes.txt".to_owned(), "4".to_owned(), None));
    assert_eq!(listed(&email), expected);
    opush.stop().await;
}
