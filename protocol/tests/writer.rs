//! The streamed writer of Sync responses (`SyncResponse::to_wbxml`,
//! `Email::write_as`, `wbxml::Writer`) against the tree encoder it stands
//! in for: the same bytes for generated responses in every protocol
//! version. Exists because the two are written separately and a property
//! added to one must not be missed in the other.

use opush_protocol::commands::airsyncbase::{Attachment, Body};
use opush_protocol::commands::items::{ApplicationData, Email, Flag};
use opush_protocol::commands::sync::{
    CommandResponse, ServerCommand, SyncCollectionResponse, SyncResponse,
};
use opush_protocol::commands::{ClientId, CollectionId, ServerId, SyncKey};
use opush_protocol::status::SyncStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{encode_to_vec, Element, Tag, Writer};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_owned()),
        Just("h\u{e9}llo w\u{f6}rld".to_owned()),
        Just("nul\0inside".to_owned()),
        "[ -~]{0,40}",
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn body() -> impl Strategy<Value = Body> {
    (
        any::<u8>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<bool>()),
        opt_text(),
        opt_text(),
    )
        .prop_map(
            |(body_type, estimated_data_size, truncated, data, preview)| Body {
                body_type,
                estimated_data_size,
                truncated,
                data,
                preview,
            },
        )
}

fn attachment() -> impl Strategy<Value = Attachment> {
    (opt_text(), opt_text(), proptest::option::of(any::<u8>())).prop_map(
        |(display_name, file_reference, method)| Attachment {
            display_name,
            file_reference,
            method,
            estimated_data_size: Some(1234),
            is_inline: Some(false),
            ..Attachment::default()
        },
    )
}

fn flag() -> impl Strategy<Value = Flag> {
    (proptest::option::of(any::<u8>()), opt_text()).prop_map(|(status, flag_type)| Flag {
        status,
        flag_type,
        ..Flag::default()
    })
}

/// An element of another page, as unmodelled properties are kept.
fn extra() -> impl Strategy<Value = Element<'static>> {
    (0u8..25, 5u8..0x3F, text()).prop_map(|(page, token, t)| {
        if t.is_empty() {
            Element::new(Tag::new(page, token))
        } else {
            Element::with_text(Tag::new(page, token), t)
        }
    })
}

fn email() -> BoxedStrategy<Email> {
    let head = (
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
    );
    let props = (
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<bool>()),
        proptest::collection::vec(attachment(), 0..3),
        proptest::option::of(body()),
        opt_text(),
        opt_text(),
        proptest::option::of(flag()),
        opt_text(),
        proptest::option::of(any::<u8>()),
        proptest::option::of(proptest::collection::vec(text(), 0..3)),
    );
    let e2 = (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::option::of(any::<u8>()),
        opt_text(),
        proptest::option::of(any::<bool>()),
        opt_text(),
        proptest::collection::vec(extra(), 0..3),
    );
    (head, props, e2)
        .prop_map(
            |(
                (to, cc, from, subject, reply_to, date_received, display_to, thread_topic),
                (
                    importance,
                    read,
                    attachments,
                    body,
                    message_class,
                    internet_cpid,
                    flag,
                    content_class,
                    native_body_type,
                    categories,
                ),
                (
                    conversation_id,
                    conversation_index,
                    last_verb_executed,
                    last_verb_execution_time,
                    received_as_bcc,
                    sender,
                    extra,
                ),
            )| Email {
                to,
                cc,
                from,
                subject,
                reply_to,
                date_received,
                display_to,
                thread_topic,
                importance,
                read,
                attachments,
                body,
                message_class,
                internet_cpid,
                flag,
                content_class,
                native_body_type,
                categories,
                conversation_id,
                conversation_index,
                last_verb_executed,
                last_verb_execution_time,
                received_as_bcc,
                sender,
                extra,
                ..Email::default()
            },
        )
        .boxed()
}

fn server_id() -> impl Strategy<Value = ServerId> {
    prop_oneof![Just(String::new()), "[0-9]{1,3}:[0-9]{1,5}"].prop_map(ServerId)
}

fn command() -> BoxedStrategy<ServerCommand> {
    prop_oneof![
        4 => (server_id(), email()).prop_map(|(server_id, e)| ServerCommand::Add {
            server_id,
            application_data: ApplicationData::Email(Box::new(e)),
        }),
        2 => (server_id(), email()).prop_map(|(server_id, e)| ServerCommand::Change {
            server_id,
            application_data: ApplicationData::Email(Box::new(e)),
        }),
        1 => (server_id(), proptest::collection::vec(extra(), 0..3)).prop_map(
            |(server_id, props)| ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Properties(props),
            }
        ),
        1 => (server_id(), opt_text()).prop_map(|(server_id, instance_id)| {
            ServerCommand::Delete {
                server_id,
                instance_id,
            }
        }),
        1 => server_id().prop_map(|server_id| ServerCommand::SoftDelete { server_id }),
    ]
    .boxed()
}

fn collection() -> BoxedStrategy<SyncCollectionResponse> {
    (
        opt_text(),
        prop_oneof![Just(String::new()), "[0-9]{1,4}"],
        prop_oneof![Just(String::new()), "[0-9]{1,3}"],
        proptest::option::of(prop_oneof![Just(1u16), Just(3), Just(12)]),
        any::<bool>(),
        proptest::option::of(proptest::collection::vec(server_id(), 0..2)),
        proptest::option::of(proptest::collection::vec(command(), 0..4)),
    )
        .prop_map(
            |(class, key, id, status, more_available, responses, commands)| {
                SyncCollectionResponse {
                    class,
                    sync_key: SyncKey(key),
                    collection_id: CollectionId(id),
                    status: status.map(SyncStatus::from_code),
                    more_available,
                    responses: responses.map(|ids| {
                        ids.into_iter()
                            .map(|server_id| CommandResponse::Add {
                                class: None,
                                client_id: ClientId("c1".to_owned()),
                                server_id: Some(server_id),
                                status: SyncStatus::from_code(1),
                                application_data: None,
                            })
                            .collect()
                    }),
                    commands,
                }
            },
        )
        .boxed()
}

fn response() -> impl Strategy<Value = SyncResponse> {
    (
        proptest::option::of(prop_oneof![Just(4u16), Just(14)]),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(collection(), 0..3),
    )
        .prop_map(|(status, limit, collections)| SyncResponse {
            status: status.map(SyncStatus::from_code),
            limit,
            collections,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_streamed_sync_response_is_the_encoded_tree(r in response()) {
        for v in ProtocolVersion::ALL {
            prop_assert_eq!(r.to_wbxml(v), encode_to_vec(&r.to_element(v)), "{:?}", v);
        }
    }

    #[test]
    fn an_email_written_mid_document_keeps_the_page_state(e in email(), tag in 5u8..0x3F) {
        for v in ProtocolVersion::ALL {
            let mut streamed = Vec::new();
            let mut w = Writer::new(&mut streamed);
            w.start(Tag::new(7, tag));
            e.write_as(&mut w, Tag::new(0, 0x1D), v);
            w.text(Tag::new(0, 0x0D), "after");
            w.end();
            let tree = Element::new(Tag::new(7, tag))
                .with(e.to_element_as(Tag::new(0, 0x1D), v))
                .with(Element::with_text(Tag::new(0, 0x0D), "after"));
            prop_assert_eq!(streamed, encode_to_vec(&tree), "{:?}", v);
        }
    }
}

#[test]
fn an_element_left_empty_is_written_as_an_empty_element() {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.start(Tag::new(0, 0x05));
    w.start(Tag::new(1, 0x06));
    w.end();
    w.text(Tag::new(1, 0x07), "");
    w.end();
    let tree = Element::new(Tag::new(0, 0x05))
        .with(Element::new(Tag::new(1, 0x06)))
        .with(Element::with_text(Tag::new(1, 0x07), ""));
    assert_eq!(out, encode_to_vec(&tree));
}
