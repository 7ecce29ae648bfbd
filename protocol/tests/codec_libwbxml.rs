//! Cross-check against libwbxml (`xml2wbxml` / `wbxml2xml` from
//! libwbxml2-utils) and golden file pairs, over the checked-in documents of
//! `test_data/wbxml/libwbxml/`: requests and responses of every MS-ASCMD
//! command that has a WBXML body, together using every code page 0–25.
//!
//! For each `NNN-name.xml`:
//! 1. our encoding equals the golden `NNN-name.wbxml` (`UPDATE_EXPECT=1`
//!    rewrites the golden files instead);
//! 2. the XML form of our WBXML converts back to the same bytes;
//! 3. `xml2wbxml -k -a -n` on the same document (with libwbxml's spelling of
//!    some names) gives byte-identical WBXML, and `wbxml2xml -l ACTIVESYNC`
//!    on our WBXML reads back as an equal tree — except for the documents
//!    listed in `LIBWBXML_CANNOT`, each with the reason; the test checks that
//!    the reason still holds (the document really uses what libwbxml lacks).
//!
//! The test fails, with a message saying what to install, if the libwbxml
//! tools are missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use opush_protocol::wbxml::{decode, encode_to_vec, tags, Element, Node, Tag};
use opush_protocol::xml::{wbxml_to_xml, xml_to_element, xml_to_wbxml};

/// Documents libwbxml 0.11.8 cannot encode or decode the way EAS 16.1 does.
const LIBWBXML_CANNOT: &[(&str, &str)] = &[
    (
        "042-MeetingResponse-request-propose",
        "MeetingResponse:ProposedStartTime/ProposedEndTime (EAS 16.1) are missing from libwbxml",
    ),
    (
        "052-Provision-response-account-only-wipe",
        "Provision:AccountOnlyRemoteWipe (EAS 16.1) is missing from libwbxml",
    ),
    (
        "058-Search-response-gal",
        "libwbxml encodes GAL:Data as ResolveRecipients:Data (page 10), a bug in its tables",
    ),
    (
        "073-Find-request-mailbox",
        "the Find code page (25, EAS 16.1) is missing from libwbxml",
    ),
    (
        "074-Find-response-mailbox",
        "the Find code page (25, EAS 16.1) is missing from libwbxml",
    ),
    (
        "075-Find-request-gal",
        "the Find code page (25, EAS 16.1) is missing from libwbxml",
    ),
    (
        "076-Find-response-gal",
        "the Find code page (25, EAS 16.1) is missing from libwbxml",
    ),
    (
        "079-Search-request-stores-legacy",
        "Search:Stores and Search:SubstringOp are missing from libwbxml",
    ),
    (
        "080-SendMail-request-legacy-type",
        "ComposeMail:Type is missing from libwbxml",
    ),
];

/// Tags libwbxml 0.11.8 lacks or mis-encodes.
fn libwbxml_lacks(tag: Tag) -> bool {
    use tags::*;
    tag.page == find::PAGE
        || matches!(
            tag,
            meetingresponse::PROPOSED_START_TIME
                | meetingresponse::PROPOSED_END_TIME
                | provision::ACCOUNT_ONLY_REMOTE_WIPE
                | search::STORES
                | search::SUBSTRING_OP
                | composemail::TYPE
                | gal::DATA
        )
}

/// libwbxml's spelling of an element name, where it differs from [MS-ASWBXML].
fn libwbxml_name(tag: Tag, name: &'static str) -> String {
    let recurrence = [
        "Type",
        "Until",
        "Occurrences",
        "Interval",
        "DayOfWeek",
        "DayOfMonth",
        "WeekOfMonth",
        "MonthOfYear",
        "Start",
        "Regenerate",
        "DeadOccur",
    ];
    match (tag.page, name) {
        (1, "AssistantPhoneNumber") => "AssistantTelephoneNumber".into(),
        (1, n) if n.contains("Address") && !n.starts_with("Email") => n.replace("Address", ""),
        (2, "Att0Id") => "AttOId".into(),
        (2, "ReplyTo") => "Reply-To".into(),
        (2, "Status") => "FlagStatus".into(),
        (2 | 4, "DtStamp") => "DTStamp".into(),
        (2 | 4 | 9, n) if recurrence.contains(&n) => format!("Recurrence_{n}"),
        (3, "Lifetime") => "LifeTime".into(),
        (4, "Email" | "Name") => format!("Attendee_{name}"),
        (4, "AttendeeStatus") => "Attendee_Status".into(),
        (4, "AttendeeType") => "Attendee_Type".into(),
        (4, "CompressedRTF") => "Compressed_RTF".into(),
        (4, "Deleted") => "Exception_Deleted".into(),
        (4, "ExceptionStartTime") => "Exception_StartTime".into(),
        (4, "OrganizerEmail") => "Organizer_Email".into(),
        (4, "OrganizerName") => "Organizer_Name".into(),
        (9, "UtcDueDate") => "UTCDueDate".into(),
        (9, "UtcStartDate") => "UTCStartDate".into(),
        (14, "RequireStorageCardEncryption") => "DeviceEncryptionEnabled".into(),
        (18, "SMTPAddress") => "SmtpAddress".into(),
        (18, "RightsManagementInformation") => "ihsManagementInformation".into(),
        (21, "Mime") => "MIME".into(),
        (24, "Owner") => "RMOwner".into(),
        (24, "RemoveRightsManagementProtection") => "RemoveRightsManagementDistribution".into(),
        _ => name.into(),
    }
}

/// Our name for an element name printed by `wbxml2xml` (its names are
/// unambiguous, so the page is not needed).
fn from_libwbxml_name(name: &str) -> String {
    let fixed = match name {
        "AssistantTelephoneNumber" => "AssistantPhoneNumber",
        "AttOId" => "Att0Id",
        "Reply-To" => "ReplyTo",
        "FlagStatus" => "Status",
        "DTStamp" => "DtStamp",
        "LifeTime" => "Lifetime",
        "Attendee_Email" => "Email",
        "Attendee_Name" => "Name",
        "Attendee_Status" => "AttendeeStatus",
        "Attendee_Type" => "AttendeeType",
        "Compressed_RTF" => "CompressedRTF",
        "Exception_Deleted" => "Deleted",
        "Exception_StartTime" => "ExceptionStartTime",
        "Organizer_Email" => "OrganizerEmail",
        "Organizer_Name" => "OrganizerName",
        "UTCDueDate" => "UtcDueDate",
        "UTCStartDate" => "UtcStartDate",
        "DeviceEncryptionEnabled" => "RequireStorageCardEncryption",
        "SmtpAddress" => "SMTPAddress",
        "ihsManagementInformation" => "RightsManagementInformation",
        "MIME" => "Mime",
        "RMOwner" => "Owner",
        "RemoveRightsManagementDistribution" => "RemoveRightsManagementProtection",
        n => {
            if let Some(rest) = n.strip_prefix("Recurrence_") {
                return rest.to_owned();
            }
            for prefix in ["Business", "Home", "Other"] {
                if let Some(rest) = n.strip_prefix(prefix) {
                    if ["City", "Country", "PostalCode", "State", "Street"].contains(&rest) {
                        return format!("{prefix}Address{rest}");
                    }
                }
            }
            n
        }
    };
    fixed.to_owned()
}

/// Renames every element of an XML text with `f`.
fn rename_elements(xml: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('/') {
            out.push('/');
            rest = r;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(rest.len());
        if end > 0 {
            out.push_str(&f(&rest[..end]));
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// The tree as libwbxml wants it: its names, `xmlns` on each page change.
fn libwbxml_xml(el: &Element<'_>, parent_page: Option<u8>, out: &mut String) {
    let name = libwbxml_name(el.tag, el.tag.name().expect("known tag"));
    out.push('<');
    out.push_str(&name);
    if parent_page != Some(el.tag.page) {
        out.push_str(&format!(
            " xmlns=\"{}:\"",
            el.tag.page_name().expect("known page")
        ));
    }
    if el.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for child in &el.children {
        match child {
            Node::Element(c) => libwbxml_xml(c, Some(el.tag.page), out),
            Node::Text(t) => escape(t, out),
            Node::Opaque(b) => out.push_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }
    out.push_str("</");
    out.push_str(&name);
    out.push('>');
}

/// The tree with whitespace trimmed around every text node.
fn trimmed(el: &Element<'_>) -> Element<'static> {
    Element {
        tag: el.tag,
        children: el
            .children
            .iter()
            .map(|c| match c {
                Node::Element(e) => Node::Element(trimmed(e)),
                Node::Text(t) => Node::Text(t.trim().to_owned().into()),
                Node::Opaque(b) => Node::Opaque(b.clone().into_owned().into()),
            })
            .collect(),
    }
}

fn all_tags(el: &Element<'_>, out: &mut BTreeSet<Tag>) {
    out.insert(el.tag);
    for c in el.elements() {
        all_tags(c, out);
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is missing: install libwbxml2-utils (apt-get install -y libwbxml2-utils)");
}

fn docs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/wbxml/libwbxml");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files
}

#[test]
fn documents_cover_every_command_and_every_code_page() {
    let files = docs();
    assert!(files.len() >= 60, "only {} documents", files.len());
    let mut pages = BTreeSet::new();
    let mut roots = BTreeSet::new();
    for path in &files {
        let xml = std::fs::read_to_string(path).expect("read");
        let tree = xml_to_element(&xml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        roots.insert(tree.tag.name().expect("root name").to_owned());
        let mut seen = BTreeSet::new();
        all_tags(&tree, &mut seen);
        pages.extend(seen.iter().map(|t| t.page));
    }
    assert_eq!(pages.len(), 26, "pages used: {pages:?}");
    // Every MS-ASCMD command with a WBXML body (Autodiscover is plain XML,
    // GetAttachment has no body).
    for cmd in [
        "FolderCreate",
        "FolderDelete",
        "FolderSync",
        "FolderUpdate",
        "GetItemEstimate",
        "ItemOperations",
        "MeetingResponse",
        "MoveItems",
        "Ping",
        "Provision",
        "ResolveRecipients",
        "Search",
        "SendMail",
        "Settings",
        "SmartForward",
        "SmartReply",
        "Sync",
        "ValidateCert",
        "Find",
    ] {
        assert!(roots.contains(cmd), "no document for {cmd}");
    }
}

#[test]
fn golden_pairs_and_libwbxml_agree() {
    let xml2wbxml = tool("xml2wbxml");
    let wbxml2xml = tool("wbxml2xml");
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let tmp = std::env::temp_dir().join(format!("opush-codec-libwbxml-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let mut failures = Vec::new();
    let mut cross_checked = 0;
    for path in docs() {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let xml = std::fs::read_to_string(&path).expect("read");
        let tree = xml_to_element(&xml).unwrap_or_else(|e| panic!("{stem}: {e}"));
        let ours = encode_to_vec(&tree);

        // 1. Golden pair.
        let golden = path.with_extension("wbxml");
        if update {
            std::fs::write(&golden, &ours).expect("write golden");
        } else {
            match std::fs::read(&golden) {
                Ok(g) if g == ours => {}
                Ok(_) => failures.push(format!("{stem}: differs from {}", golden.display())),
                Err(e) => failures.push(format!(
                    "{stem}: {} ({e}); run with UPDATE_EXPECT=1",
                    golden.display()
                )),
            }
        }

        // 2. Our XML form round-trips.
        let our_xml = wbxml_to_xml(&ours).expect("our XML");
        if xml_to_wbxml(&our_xml).as_ref() != Ok(&ours) {
            failures.push(format!("{stem}: XML form does not round-trip"));
        }

        // 3. libwbxml.
        let mut used = BTreeSet::new();
        all_tags(&tree, &mut used);
        let lacking: Vec<String> = used
            .iter()
            .filter(|t| libwbxml_lacks(**t))
            .map(Tag::to_string)
            .collect();
        let excused = LIBWBXML_CANNOT.iter().find(|(name, _)| *name == stem);
        match (excused, lacking.is_empty()) {
            (Some((_, why)), false) => {
                eprintln!("{stem}: not cross-checked: {why} ({})", lacking.join(", "));
                continue;
            }
            (Some(_), true) => {
                failures.push(format!(
                    "{stem}: listed in LIBWBXML_CANNOT but uses nothing libwbxml lacks"
                ));
                continue;
            }
            (None, false) => {
                failures.push(format!(
                    "{stem}: uses {lacking:?}, which libwbxml lacks: list it in LIBWBXML_CANNOT"
                ));
                continue;
            }
            (None, true) => {}
        }
        cross_checked += 1;
        // libwbxml recognises EAS by the DOCTYPE when the root is not AirSync.
        let mut lib_xml = String::from(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!DOCTYPE ActiveSync PUBLIC \
             \"-//MICROSOFT//DTD ActiveSync//EN\" \"http://www.microsoft.com/\">\n",
        );
        libwbxml_xml(&tree, None, &mut lib_xml);
        let in_xml = tmp.join(format!("{stem}.xml"));
        let out_wbxml = tmp.join(format!("{stem}.lib.wbxml"));
        std::fs::write(&in_xml, &lib_xml).expect("write");
        let status = Command::new(&xml2wbxml)
            .args(["-k", "-a", "-n", "-o"])
            .arg(&out_wbxml)
            .arg(&in_xml)
            .output()
            .expect("run xml2wbxml");
        let theirs = std::fs::read(&out_wbxml).unwrap_or_default();
        if !status.status.success() || theirs != ours {
            failures.push(format!(
                "{stem}: xml2wbxml gives different bytes\n ours:   {ours:02x?}\n theirs: {theirs:02x?}"
            ));
            continue;
        }
        // And libwbxml reads our bytes as the same document.
        let our_wbxml = tmp.join(format!("{stem}.wbxml"));
        let back_xml = tmp.join(format!("{stem}.back.xml"));
        std::fs::write(&our_wbxml, &ours).expect("write");
        let out = Command::new(&wbxml2xml)
            .args(["-l", "ACTIVESYNC", "-o"])
            .arg(&back_xml)
            .arg(&our_wbxml)
            .output()
            .expect("run wbxml2xml");
        let printed = std::fs::read_to_string(&back_xml).unwrap_or_default();
        let renamed = rename_elements(&printed, from_libwbxml_name);
        // wbxml2xml trims whitespace around text when it prints it.
        match xml_to_element(&renamed) {
            Ok(t) if trimmed(&t) == trimmed(&tree) && out.status.success() => {}
            Ok(t) => failures.push(format!(
                "{stem}: wbxml2xml reads another document\n ours: {tree:?}\n read: {t:?}"
            )),
            Err(e) => failures.push(format!(
                "{stem}: wbxml2xml output unreadable: {e}\n{printed}"
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        cross_checked >= 60,
        "only {cross_checked} documents cross-checked with libwbxml"
    );
    // And the decoder reads every golden file back to the same tree.
    for path in docs() {
        let golden = std::fs::read(path.with_extension("wbxml")).expect("golden");
        let tree = xml_to_element(&std::fs::read_to_string(&path).expect("xml")).expect("parse");
        assert_eq!(
            decode(&golden).expect("decode golden"),
            tree,
            "{}",
            path.display()
        );
    }
}
