//! Golden files for every command: a typed request and response per command
//! are encoded and compared with `protocol/test_data/commands/<command>/<case>.<version>.xml`
//! (the XML form of the WBXML, from `opush_protocol::xml`), and each golden
//! file is decoded back into the same typed value. `UPDATE_EXPECT=1` rewrites
//! the files; a normal run only compares, and a missing file fails.
//! These show, for review against MS-ASCMD, what the encoder writes for the
//! commands the real-device corpus does not contain.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use std::fmt::Debug;
use std::path::PathBuf;

use opush_protocol::commands::airsyncbase::{Attachment, Body, BodyPreference};
use opush_protocol::commands::calendar::{Attendee, Calendar, EventFields, Exception, Recurrence};
use opush_protocol::commands::compose::{ComposeRequest, ComposeResponse, Source};
use opush_protocol::commands::find::*;
use opush_protocol::commands::folder_create::*;
use opush_protocol::commands::folder_delete::*;
use opush_protocol::commands::folder_sync::*;
use opush_protocol::commands::folder_update::*;
use opush_protocol::commands::get_item_estimate::*;
use opush_protocol::commands::item_operations::*;
use opush_protocol::commands::items::{ApplicationData, Email, Flag};
use opush_protocol::commands::meeting_response::*;
use opush_protocol::commands::move_items::*;
use opush_protocol::commands::ping::*;
use opush_protocol::commands::provision::*;
use opush_protocol::commands::resolve_recipients::*;
use opush_protocol::commands::search::*;
use opush_protocol::commands::send_mail::{SendMailRequest, SendMailResponse};
use opush_protocol::commands::settings::*;
use opush_protocol::commands::smart_forward::SmartForwardRequest;
use opush_protocol::commands::smart_reply::{SmartReplyRequest, SmartReplyResponse};
use opush_protocol::commands::sync::*;
use opush_protocol::commands::validate_cert::*;
use opush_protocol::commands::{ClientId, CollectionId, EasDocument, ServerId, SyncKey};
use opush_protocol::headers::Password;
use opush_protocol::status::*;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{tags, Element};
use opush_protocol::xml;

use ProtocolVersion::{V12_1, V14_0, V14_1, V16_1};

fn check<T: EasDocument + PartialEq + Debug>(dir: &str, case: &str, v: ProtocolVersion, value: T) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/commands"))
        .join(dir)
        .join(format!("{case}.{v}.xml"));
    let got = xml::element_to_xml(&value.to_element(v));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden {} missing ({e}); run with UPDATE_EXPECT=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        got,
        want,
        "{} differs (UPDATE_EXPECT=1 rewrites)",
        path.display()
    );
    let root = xml::xml_to_element(&want).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let back = T::from_element(&root, v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(back, value, "{} decodes to another value", path.display());
}

fn email() -> Email {
    Email {
        to: Some("\"Ann\" <ann@example.org>".into()),
        from: Some("bob@example.org".into()),
        subject: Some("Lunch?".into()),
        date_received: Some("2026-11-28T12:00:00.000Z".into()),
        display_to: Some("Ann".into()),
        thread_topic: Some("Lunch?".into()),
        importance: Some(1),
        read: Some(false),
        attachments: vec![Attachment {
            display_name: Some("menu.pdf".into()),
            file_reference: Some("5:12:1".into()),
            method: Some(1),
            estimated_data_size: Some(20480),
            is_inline: Some(false),
            ..Attachment::default()
        }],
        body: Some(Body {
            body_type: 1,
            estimated_data_size: Some(12),
            truncated: Some(false),
            data: Some("Noon, okay?".into()),
            preview: None,
        }),
        message_class: Some("IPM.Note".into()),
        internet_cpid: Some("65001".into()),
        flag: Some(Flag::default()),
        content_class: Some("urn:content-classes:message".into()),
        native_body_type: Some(1),
        conversation_id: Some(vec![0xde, 0xad, 0xbe, 0xef]),
        ..Email::default()
    }
}

#[test]
fn sync() {
    check(
        "sync",
        "request-initial-and-changes",
        V14_1,
        SyncRequest {
            collections: vec![
                SyncCollectionRequest {
                    sync_key: SyncKey::initial(),
                    collection_id: CollectionId::from("5"),
                    ..SyncCollectionRequest::default()
                },
                SyncCollectionRequest {
                    sync_key: SyncKey::from("{b7d2}1"),
                    collection_id: CollectionId::from("2"),
                    deletes_as_moves: Some(true),
                    get_changes: Some(true),
                    window_size: Some(25),
                    options: vec![SyncOptions {
                        filter_type: Some(3),
                        body_preferences: vec![BodyPreference {
                            body_type: 2,
                            truncation_size: Some(51200),
                            ..BodyPreference::default()
                        }],
                        mime_support: Some(0),
                        ..SyncOptions::default()
                    }],
                    commands: Some(vec![
                        ClientCommand::Change {
                            class: None,
                            server_id: ServerId::from("2:7"),
                            application_data: ApplicationData::Email(Box::new(Email {
                                read: Some(true),
                                ..Email::default()
                            })),
                        },
                        ClientCommand::Delete {
                            class: None,
                            server_id: ServerId::from("2:8"),
                            instance_id: None,
                        },
                        ClientCommand::Fetch {
                            server_id: ServerId::from("2:9"),
                        },
                    ]),
                    ..SyncCollectionRequest::default()
                },
            ],
            wait: Some(10),
            ..SyncRequest::default()
        },
    );
    check(
        "sync",
        "response-adds-and-answers",
        V14_1,
        SyncResponse {
            collections: vec![SyncCollectionResponse {
                sync_key: SyncKey::from("{b7d2}2"),
                collection_id: CollectionId::from("2"),
                status: Some(SyncStatus::Success),
                more_available: true,
                responses: Some(vec![
                    CommandResponse::Fetch {
                        server_id: ServerId::from("2:9"),
                        status: SyncStatus::ObjectNotFound,
                        application_data: None,
                    },
                    CommandResponse::Add {
                        class: None,
                        client_id: ClientId::from("c1"),
                        server_id: Some(ServerId::from("9:1")),
                        status: SyncStatus::Success,
                        application_data: None,
                    },
                ]),
                commands: Some(vec![
                    ServerCommand::Add {
                        server_id: ServerId::from("2:10"),
                        application_data: ApplicationData::Email(Box::new(email())),
                    },
                    ServerCommand::SoftDelete {
                        server_id: ServerId::from("2:1"),
                    },
                ]),
                ..SyncCollectionResponse::default()
            }],
            ..SyncResponse::default()
        },
    );
    check(
        "sync",
        "response-calendar",
        V14_1,
        SyncResponse {
            collections: vec![SyncCollectionResponse {
                sync_key: SyncKey::from("7"),
                collection_id: CollectionId::from("8"),
                status: Some(SyncStatus::Success),
                commands: Some(vec![ServerCommand::Add {
                    server_id: ServerId::from("8:1"),
                    application_data: ApplicationData::Calendar(Box::new(Calendar {
                        time_zone: Some("xP///w==".into()),
                        uid: Some("040000008200E0".into()),
                        organizer_name: Some("Ann".into()),
                        organizer_email: Some("ann@example.org".into()),
                        fields: EventFields {
                            dt_stamp: Some("20261128T120000Z".into()),
                            start_time: Some("20261201T090000Z".into()),
                            subject: Some("Stand-up".into()),
                            attendees: Some(vec![Attendee {
                                email: "bob@example.org".into(),
                                name: Some("Bob".into()),
                                status: Some(5),
                                attendee_type: Some(1),
                            }]),
                            location: Some(String::new()),
                            end_time: Some("20261201T091500Z".into()),
                            sensitivity: Some(0),
                            busy_status: Some(2),
                            all_day_event: Some(false),
                            reminder: Some(15),
                            meeting_status: Some(1),
                            ..EventFields::default()
                        },
                        recurrence: Some(Recurrence {
                            recurrence_type: 1,
                            interval: Some(1),
                            day_of_week: Some(62),
                            ..Recurrence::default()
                        }),
                        exceptions: Some(vec![Exception {
                            deleted: Some(true),
                            exception_start_time: Some("20261225T090000Z".into()),
                            ..Exception::default()
                        }]),
                        ..Calendar::default()
                    })),
                }]),
                ..SyncCollectionResponse::default()
            }],
            ..SyncResponse::default()
        },
    );
    check(
        "sync",
        "response-invalid-sync-key",
        V12_1,
        SyncResponse {
            collections: vec![SyncCollectionResponse {
                sync_key: SyncKey::initial(),
                collection_id: CollectionId::from("2"),
                status: Some(SyncStatus::InvalidSyncKey),
                ..SyncCollectionResponse::default()
            }],
            ..SyncResponse::default()
        },
    );
}

#[test]
fn folders() {
    check(
        "folder_sync",
        "response-initial",
        V14_1,
        FolderSyncResponse {
            status: FolderSyncStatus::Success,
            sync_key: Some(SyncKey::from("1")),
            changes: Some(vec![
                FolderChange::Add(Folder {
                    server_id: ServerId::from("2"),
                    parent_id: ServerId::from("0"),
                    display_name: "Inbox".into(),
                    folder_type: 2,
                }),
                FolderChange::Delete(ServerId::from("7")),
            ]),
        },
    );
    check(
        "folder_sync",
        "response-invalid-key",
        V14_1,
        FolderSyncResponse {
            status: FolderSyncStatus::InvalidSyncKey,
            sync_key: None,
            changes: None,
        },
    );
    check(
        "folder_create",
        "request",
        V14_1,
        FolderCreateRequest {
            sync_key: SyncKey::from("3"),
            parent_id: ServerId::from("2"),
            display_name: "Receipts".into(),
            folder_type: 12,
        },
    );
    check(
        "folder_create",
        "response",
        V14_1,
        FolderCreateResponse {
            status: FolderCreateStatus::Success,
            sync_key: Some(SyncKey::from("4")),
            server_id: Some(ServerId::from("31")),
        },
    );
    check(
        "folder_delete",
        "request",
        V14_1,
        FolderDeleteRequest {
            sync_key: SyncKey::from("4"),
            server_id: ServerId::from("31"),
        },
    );
    check(
        "folder_delete",
        "response-special-folder",
        V14_1,
        FolderDeleteResponse {
            status: FolderDeleteStatus::SpecialFolder,
            sync_key: None,
        },
    );
    check(
        "folder_update",
        "request",
        V14_1,
        FolderUpdateRequest {
            sync_key: SyncKey::from("4"),
            server_id: ServerId::from("31"),
            parent_id: ServerId::from("0"),
            display_name: "Old receipts".into(),
        },
    );
    check(
        "folder_update",
        "response",
        V14_1,
        FolderUpdateResponse {
            status: FolderUpdateStatus::Success,
            sync_key: Some(SyncKey::from("5")),
        },
    );
}

#[test]
fn ping_provision_settings() {
    check(
        "ping",
        "request",
        V14_1,
        PingRequest {
            heartbeat_interval: Some(480),
            folders: Some(vec![PingFolder {
                id: CollectionId::from("2"),
                class: "Email".into(),
            }]),
        },
    );
    check(
        "ping",
        "response-changes",
        V14_1,
        PingResponse {
            status: PingStatus::ChangesOccurred,
            folders: vec![CollectionId::from("2")],
            max_folders: None,
            heartbeat_interval: None,
        },
    );
    check(
        "provision",
        "request-download",
        V14_1,
        ProvisionRequest {
            device_information: Some(DeviceInformation {
                model: Some("Pixel".into()),
                os: Some("Android 15".into()),
                ..DeviceInformation::default()
            }),
            policy: Some(PolicyRequest {
                policy_type: POLICY_TYPE_WBXML.into(),
                ..PolicyRequest::default()
            }),
            ..ProvisionRequest::default()
        },
    );
    check(
        "provision",
        "response-policy",
        V14_1,
        ProvisionResponse {
            status: ProvisionStatus::Success,
            device_information_status: Some(1),
            policy: Some(PolicyResponse {
                policy_type: POLICY_TYPE_WBXML.into(),
                status: PolicyStatus::Success,
                policy_key: Some(1_309_925_617),
                data: Some(PolicyData::EasProvisionDoc(vec![
                    Element::with_text(tags::provision::DEVICE_PASSWORD_ENABLED, "0"),
                    Element::with_text(tags::provision::ALLOW_CAMERA, "1"),
                ])),
            }),
            remote_wipe: false,
            account_only_remote_wipe: false,
        },
    );
    check(
        "settings",
        "request-device-password",
        V14_1,
        SettingsRequest {
            device_password: Some(Password::new("1234")),
            user_information_get: true,
            ..SettingsRequest::default()
        },
    );
    check(
        "settings",
        "request-oof-set",
        V14_1,
        SettingsRequest {
            oof: Some(OofRequest::Set(OofSettings {
                state: Some(2),
                start_time: Some("2026-12-24T00:00:00.000Z".into()),
                end_time: Some("2027-01-02T00:00:00.000Z".into()),
                messages: vec![OofMessage {
                    audience: OofAudience::Internal,
                    enabled: Some(true),
                    reply_message: Some("Back on the 2nd.".into()),
                    body_type: Some("Text".into()),
                }],
            })),
            ..SettingsRequest::default()
        },
    );
    check(
        "settings",
        "response-oof-get",
        V14_1,
        SettingsResponse {
            status: SettingsStatus::Success,
            oof: Some(OofResponse {
                status: SettingsStatus::Success,
                get: Some(OofSettings {
                    state: Some(0),
                    messages: vec![OofMessage {
                        audience: OofAudience::ExternalUnknown,
                        enabled: Some(false),
                        reply_message: None,
                        body_type: Some("HTML".into()),
                    }],
                    ..OofSettings::default()
                }),
            }),
            device_password_status: None,
            user_information: None,
            device_information_status: None,
            rights_management: None,
        },
    );
    check(
        "settings",
        "response",
        V14_1,
        SettingsResponse {
            status: SettingsStatus::Success,
            oof: None,
            device_password_status: Some(SettingsStatus::Success),
            user_information: Some((
                SettingsStatus::Success,
                Some(UserInformation {
                    accounts: vec![Account {
                        smtp_addresses: vec!["ann@example.org".into()],
                        primary_smtp_address: Some("ann@example.org".into()),
                        ..Account::default()
                    }],
                }),
            )),
            device_information_status: None,
            rights_management: None,
        },
    );
    // [MS-ASCMD] 2.2.3.57: EmailAddresses is a child of Get before 14.1,
    // of Accounts/Account from 14.1.
    for v in [V14_0, V16_1] {
        check(
            "settings",
            "response-user-information",
            v,
            SettingsResponse {
                status: SettingsStatus::Success,
                oof: None,
                device_password_status: None,
                user_information: Some((
                    SettingsStatus::Success,
                    Some(UserInformation {
                        accounts: vec![Account {
                            user_display_name: (v >= V14_1).then(|| "Ann".into()),
                            smtp_addresses: vec![
                                "ann@example.org".into(),
                                "ann.other@example.org".into(),
                            ],
                            primary_smtp_address: (v >= V14_1).then(|| "ann@example.org".into()),
                            ..Account::default()
                        }],
                    }),
                )),
                device_information_status: None,
                rights_management: None,
            },
        );
    }
}

#[test]
fn items_and_mail() {
    check(
        "item_operations",
        "request-fetch-attachment-and-item",
        V14_1,
        ItemOperationsRequest {
            operations: vec![
                Operation::Fetch {
                    store: "Mailbox".into(),
                    target: FetchTarget {
                        file_reference: Some("5:12:1".into()),
                        ..FetchTarget::default()
                    },
                    options: None,
                },
                Operation::Fetch {
                    store: "Mailbox".into(),
                    target: FetchTarget {
                        collection_id: Some("2".into()),
                        server_id: Some("2:10".into()),
                        ..FetchTarget::default()
                    },
                    options: Some(Box::new(FetchOptions {
                        body_preferences: vec![BodyPreference {
                            body_type: 4,
                            ..BodyPreference::default()
                        }],
                        mime_support: Some(2),
                        ..FetchOptions::default()
                    })),
                },
            ],
        },
    );
    check(
        "item_operations",
        "response-fetch",
        V14_1,
        ItemOperationsResponse {
            status: ItemOperationsStatus::Success,
            results: vec![OperationResult::Fetch {
                status: ItemOperationsStatus::Success,
                target: FetchTarget {
                    file_reference: Some("5:12:1".into()),
                    ..FetchTarget::default()
                },
                class: None,
                properties: Some(ApplicationData::Properties(vec![
                    Element::with_text(tags::airsyncbase::CONTENT_TYPE, "application/pdf"),
                    Element::with_text(tags::itemoperations::DATA, "JVBERi0x"),
                ])),
            }],
        },
    );
    check(
        "move_items",
        "request",
        V14_1,
        MoveItemsRequest {
            moves: vec![Move {
                src_msg_id: ServerId::from("2:10"),
                src_fld_id: CollectionId::from("2"),
                dst_fld_id: CollectionId::from("31"),
            }],
        },
    );
    check(
        "move_items",
        "response",
        V14_1,
        MoveItemsResponse {
            responses: vec![MoveResult {
                src_msg_id: ServerId::from("2:10"),
                status: MoveItemsStatus::Success,
                dst_msg_id: Some(ServerId::from("31:1")),
            }],
        },
    );
    check(
        "get_item_estimate",
        "request",
        V14_1,
        GetItemEstimateRequest {
            collections: vec![EstimateCollection {
                sync_key: SyncKey::from("{b7d2}2"),
                collection_id: CollectionId::from("2"),
                options: vec![SyncOptions {
                    filter_type: Some(3),
                    ..SyncOptions::default()
                }],
                ..EstimateCollection::default()
            }],
        },
    );
    check(
        "get_item_estimate",
        "response",
        V14_1,
        GetItemEstimateResponse {
            responses: vec![EstimateResponse {
                status: GetItemEstimateStatus::Success,
                class: None,
                collection_id: Some(CollectionId::from("2")),
                estimate: Some(42),
            }],
        },
    );
    check(
        "meeting_response",
        "request",
        V14_1,
        MeetingResponseRequest {
            requests: vec![MeetingRequestResponse {
                user_response: 1,
                collection_id: Some("2".into()),
                request_id: Some("2:44".into()),
                ..MeetingRequestResponse::default()
            }],
        },
    );
    check(
        "meeting_response",
        "response",
        V14_1,
        MeetingResponseResponse {
            results: vec![MeetingResponseResult {
                request_id: Some("2:44".into()),
                long_id: None,
                status: MeetingResponseStatus::Success,
                calendar_id: Some("8:3".into()),
            }],
        },
    );
    check(
        "send_mail",
        "request",
        V14_1,
        SendMailRequest(ComposeRequest {
            client_id: Some("send-1".into()),
            save_in_sent_items: true,
            mime: b"From: ann@example.org\r\nSubject: hi\r\n\r\nhello\r\n".to_vec(),
            ..ComposeRequest::default()
        }),
    );
    check(
        "send_mail",
        "response-quota",
        V14_1,
        SendMailResponse(ComposeResponse {
            status: ComposeMailStatus::Common(CommonStatus::SendQuotaExceeded),
        }),
    );
    check(
        "smart_reply",
        "request",
        V14_1,
        SmartReplyRequest(ComposeRequest {
            client_id: Some("reply-1".into()),
            source: Some(Source {
                folder_id: Some("2".into()),
                item_id: Some("2:10".into()),
                ..Source::default()
            }),
            save_in_sent_items: true,
            mime: b"Subject: Re: Lunch?\r\n\r\nYes\r\n".to_vec(),
            ..ComposeRequest::default()
        }),
    );
    check(
        "smart_reply",
        "response-not-found",
        V14_1,
        SmartReplyResponse(ComposeResponse {
            status: ComposeMailStatus::Common(CommonStatus::ItemNotFound),
        }),
    );
    check(
        "smart_forward",
        "request",
        V14_1,
        SmartForwardRequest(ComposeRequest {
            client_id: Some("fwd-1".into()),
            source: Some(Source {
                long_id: Some("RgAAAA".into()),
                ..Source::default()
            }),
            replace_mime: true,
            mime: b"Subject: Fwd: Lunch?\r\n\r\nFYI\r\n".to_vec(),
            ..ComposeRequest::default()
        }),
    );
}

#[test]
fn search_and_recipients() {
    check(
        "search",
        "request-gal",
        V14_1,
        SearchRequest {
            name: "GAL".into(),
            query: Some(Element::with_text(tags::search::QUERY, "ann")),
            options: Some(SearchOptions {
                range: Some("0-9".into()),
                ..SearchOptions::default()
            }),
        },
    );
    check(
        "search",
        "response-gal",
        V14_1,
        SearchResponse {
            status: SearchStatus::Success,
            store_status: Some(SearchStatus::Success),
            results: vec![SearchResult {
                properties: Some(ApplicationData::Properties(vec![
                    Element::with_text(tags::gal::DISPLAY_NAME, "Ann"),
                    Element::with_text(tags::gal::EMAIL_ADDRESS, "ann@example.org"),
                ])),
                ..SearchResult::default()
            }],
            range: Some("0-0".into()),
            total: Some(1),
        },
    );
    check(
        "resolve_recipients",
        "request",
        V14_1,
        ResolveRecipientsRequest {
            to: vec!["ann".into()],
            options: None,
        },
    );
    check(
        "resolve_recipients",
        "response",
        V14_1,
        ResolveRecipientsResponse {
            status: ResolveRecipientsStatus::Success,
            responses: vec![RecipientResponse {
                to: "ann".into(),
                status: ResolveRecipientsStatus::Success,
                recipient_count: Some(1),
                recipients: vec![Recipient {
                    recipient_type: 1,
                    display_name: "Ann".into(),
                    email_address: "ann@example.org".into(),
                    extra: Vec::new(),
                }],
            }],
        },
    );
    check(
        "validate_cert",
        "request",
        V14_1,
        ValidateCertRequest {
            certificate_chain: Vec::new(),
            certificates: vec!["MIIB".into()],
            check_crl: Some(true),
        },
    );
    check(
        "validate_cert",
        "response",
        V14_1,
        ValidateCertResponse {
            status: ValidateCertStatus::Success,
            certificates: vec![ValidateCertStatus::Expired],
        },
    );
    check(
        "find",
        "request",
        V16_1,
        FindRequest {
            search_id: "6e0c7ab0-1d0a-4a28-9b5c-3c1f0f6c1a11".into(),
            criterion: Some(FindCriterion::Mailbox(MailboxSearch {
                free_text: Some("lunch".into()),
                class: Some("Email".into()),
                collection_id: Some("2".into()),
                deep_traversal: true,
                range: Some("0-99".into()),
            })),
        },
    );
    check(
        "find",
        "response",
        V16_1,
        FindResponse {
            status: FindStatus::Success,
            response: Some(FindStoreResponse {
                store: "Mailbox".into(),
                status: FindStatus::Success,
                results: vec![FindResult {
                    class: Some("Email".into()),
                    server_id: Some("2:10".into()),
                    collection_id: Some("2".into()),
                    properties: Some(FindProperties {
                        subject: Some("Lunch?".into()),
                        date_received: Some("2026-11-28T12:00:00.000Z".into()),
                        display_to: Some("Ann".into()),
                        display_cc: Some("Carl".into()),
                        importance: Some(1),
                        read: Some(false),
                        is_draft: Some(false),
                        preview: Some("Shall we meet at noon?".into()),
                        has_attachments: Some(true),
                        from: Some("\"Bob\" <bob@example.org>".into()),
                        ..FindProperties::default()
                    }),
                }],
                range: Some("0-0".into()),
                total: Some(1),
            }),
        },
    );
}
