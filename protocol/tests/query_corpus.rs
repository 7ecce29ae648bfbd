//! Checks the request-line parser against every exchange of the real-device
//! captures (`shared/corpus/real-devices/*/session.json`, see `find_corpus/mod.rs`): base64
//! queries against their `query_decoded` vectors (MS-ASHTTP 2.2.1.1.1.1),
//! plain queries against the recorded `cmd`, `user`, `device_id`,
//! `device_type`. Plus a property test of the base64 encoder.
//! The corpus must be present: a missing corpus fails the test.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

mod find_corpus;

use std::path::PathBuf;

use opush_protocol::query::{
    to_hex, Base64Query, Command, QueryError, QueryForm, QueryParams, RequestLine,
};
use opush_protocol::version::ProtocolVersion;
use proptest::prelude::*;
use serde_json::Value;

fn corpus_sessions() -> Vec<(PathBuf, Value)> {
    let dir = find_corpus::real_devices();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus at {}: {e}", dir.display()));
    let mut sessions = Vec::new();
    for entry in entries {
        let path = entry
            .expect("readable corpus dir")
            .path()
            .join("session.json");
        if path.is_file() {
            let text = std::fs::read_to_string(&path).expect("readable session.json");
            let json: Value = serde_json::from_str(&text).expect("valid session.json");
            sessions.push((path, json));
        }
    }
    assert!(
        sessions.len() >= 10,
        "expected the 11 captures, found {}",
        sessions.len()
    );
    sessions
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn every_corpus_query_parses_as_recorded() {
    let mut n_base64 = 0;
    let mut n_plain = 0;
    for (path, session) in corpus_sessions() {
        let exchanges = session["exchanges"].as_array().expect("exchanges");
        for ex in exchanges {
            let seq = &ex["seq"];
            let query = ex["query"].as_str().unwrap_or("");
            let cmd = ex["cmd"].as_str().expect("cmd");
            let ctx = format!("{} seq {seq} query {query:?}", path.display());
            match ex["query_form"].as_str().expect("query_form") {
                "base64" => {
                    n_base64 += 1;
                    let want = &ex["query_decoded"];
                    let line = RequestLine::parse(query).expect(&ctx);
                    assert_eq!(line.form, QueryForm::Base64, "{ctx}");
                    assert_eq!(line.command.name(), want["Cmd"].as_str().unwrap(), "{ctx}");
                    assert_eq!(
                        u64::from(line.command.code()),
                        want["command_code"].as_u64().unwrap(),
                        "{ctx}"
                    );
                    assert_eq!(
                        line.protocol_version.map(|v| v.as_str()),
                        want["protocol_version"].as_str(),
                        "{ctx}"
                    );
                    let locale = want["locale"].as_str().unwrap();
                    assert_eq!(
                        line.locale,
                        Some(u16::from_str_radix(locale.trim_start_matches("0x"), 16).unwrap()),
                        "{ctx}"
                    );
                    assert_eq!(
                        line.device_id,
                        want["device_id_hex"].as_str().unwrap(),
                        "{ctx}"
                    );
                    assert_eq!(
                        line.policy_key.map(|k| k.to_string()),
                        want["policy_key"].as_str().map(str::to_owned),
                        "{ctx}"
                    );
                    assert_eq!(
                        line.device_type,
                        want["device_type"].as_str().unwrap(),
                        "{ctx}"
                    );
                    assert_eq!(cmd, line.command.name(), "{ctx}");
                    // The raw bytes re-encode identically.
                    let raw = hex_to_bytes(want["raw_hex"].as_str().unwrap());
                    let decoded = Base64Query::decode_bytes(&raw).expect(&ctx);
                    assert_eq!(decoded.encode_bytes().unwrap(), raw, "{ctx}");
                    assert_eq!(to_hex(&decoded.device_id), line.device_id);
                    assert_eq!(
                        decoded.encode_str().unwrap().trim_end_matches('='),
                        query.trim_end_matches('=')
                    );
                }
                "plain" => {
                    n_plain += 1;
                    let res = RequestLine::parse(query);
                    if cmd == "OPTIONS" {
                        // OPTIONS is an HTTP method, not an MS-ASCMD command.
                        assert_eq!(
                            res,
                            Err(QueryError::UnknownCommand("OPTIONS".into())),
                            "{ctx}"
                        );
                        continue;
                    }
                    let line = res.expect(&ctx);
                    assert_eq!(line.form, QueryForm::Plain);
                    assert_eq!(line.command.name(), cmd, "{ctx}");
                    assert_eq!(line.user.as_deref(), ex["user"].as_str(), "{ctx}");
                    assert_eq!(
                        Some(line.device_id.as_str()),
                        ex["device_id"].as_str(),
                        "{ctx}"
                    );
                    assert_eq!(
                        Some(line.device_type.as_str()),
                        ex["device_type"].as_str(),
                        "{ctx}"
                    );
                    assert_eq!(line.protocol_version, None);
                }
                "none" => assert_eq!(RequestLine::parse(query), Err(QueryError::Empty), "{ctx}"),
                other => panic!("unknown query_form {other} in {ctx}"),
            }
        }
    }
    assert_eq!(n_base64, 8, "base64 queries in the corpus");
    assert!(n_plain > 300, "plain queries in the corpus: {n_plain}");
}

fn arb_opt_string() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ -~]{0,40}")
}

fn arb_query() -> impl Strategy<Value = Base64Query> {
    (
        proptest::sample::select(ProtocolVersion::ALL.to_vec()),
        proptest::sample::select(Command::ALL.to_vec()),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::option::of(any::<u32>()),
        "[A-Za-z0-9]{0,20}",
        arb_opt_string(),
        (
            arb_opt_string(),
            arb_opt_string(),
            arb_opt_string(),
            arb_opt_string(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(v, c, locale, device_id, policy_key, device_type, user, (a, b, d, e, s, m))| {
                Base64Query {
                    protocol_version: v,
                    command: c,
                    locale,
                    device_id,
                    policy_key,
                    device_type,
                    user,
                    params: QueryParams {
                        attachment_name: a,
                        collection_id: b,
                        item_id: d,
                        occurrence: e,
                        save_in_sent: s,
                        accept_multi_part: m,
                        ..QueryParams::default()
                    },
                }
            },
        )
}

proptest! {
    #[test]
    fn base64_query_round_trips(q in arb_query()) {
        let text = q.encode_str().unwrap();
        prop_assert_eq!(Base64Query::decode_str(&text).unwrap(), q.clone());
        let line = RequestLine::parse(&text).unwrap();
        prop_assert_eq!(line.form, QueryForm::Base64);
        prop_assert_eq!(line.command, q.command);
    }

    // [MS-ASHTTP] 2.2.1.1.1.1: a client may percent-escape any of the base64
    // query's `+`, `/` and `=`, in any case; it is still the same request.
    #[test]
    fn base64_query_read_the_same_percent_escaped(
        q in arb_query(),
        escape in proptest::collection::vec(any::<(bool, bool)>(), 0..160),
    ) {
        let text = q.encode_str().unwrap();
        let mut escaped = String::new();
        for (i, c) in text.chars().enumerate() {
            let (yes, lower) = escape.get(i).copied().unwrap_or((false, false));
            let hex = match c {
                '+' => "2B",
                '/' => "2F",
                '=' => "3D",
                _ => "",
            };
            if yes && !hex.is_empty() {
                escaped.push('%');
                escaped.push_str(&if lower { hex.to_ascii_lowercase() } else { hex.to_owned() });
            } else {
                escaped.push(c);
            }
        }
        prop_assert_eq!(Base64Query::decode_str(&escaped).unwrap(), q.clone());
        prop_assert_eq!(RequestLine::parse(&escaped).unwrap(), RequestLine::parse(&text).unwrap());
    }

    #[test]
    fn base64_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = Base64Query::decode_bytes(&bytes);
    }

    #[test]
    fn plain_query_round_trips(
        c in proptest::sample::select(Command::ALL.to_vec()),
        user in "[ -~]{1,30}",
        device_id in "[A-Za-z0-9]{1,32}",
        device_type in "[A-Za-z0-9]{1,16}",
        item in arb_opt_string(),
    ) {
        let line = RequestLine {
            form: QueryForm::Plain,
            command: c,
            user: Some(user),
            device_id,
            device_type,
            protocol_version: None,
            policy_key: None,
            locale: None,
            params: QueryParams { item_id: item, ..QueryParams::default() },
        };
        prop_assert_eq!(RequestLine::parse(&line.to_plain()).unwrap(), line);
    }
}
