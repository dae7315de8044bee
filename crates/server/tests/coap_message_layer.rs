//! The CoAP contract of SPEC §2 checked byte by byte against the real binary: the response-code
//! table, the message layer (NON, deduplication, ping, RST, separate responses, overload) and
//! the metadata handed to converters, plus a fuzz barrage the server must survive.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, Message, MessageType, option};
use common::*;
use serde_json::{Value, json};

/// A converter that burns ~300 ms of CPU, then names the device after the payload.
const SLOW_DECODER: &str = r#"var t = Date.now(); while (Date.now() - t < 300) {}
return {deviceName: decodeToString(payload), telemetry: {v: 1}};"#;

/// A converter that stores what the endpoint put into `metadata`.
const METADATA_DECODER: &str = r#"var input = decodeToJson(payload);
return {deviceName: input.name, telemetry: {uri: metadata["Option:uri"], cf: metadata["Option:content-format"],
        name: metadata.integrationName, custom: metadata.myKey}};"#;

fn seed_payload(device: &str) -> Vec<u8> {
    SEED_PAYLOAD.replacen("SN-001", device, 1).into_bytes()
}

/// A `configuration` object for [`Server::create_integration`]'s `extra`, which replaces the
/// harness's default one as a whole.
fn configuration(server: &Server, client_extra: Value, metadata: Value) -> Value {
    let mut client = json!({"baseUrl": format!("coap://127.0.0.1:{}", server.coap.port()), "securityMode": "NO_SECURE"});
    if let (Value::Object(c), Value::Object(e)) = (&mut client, client_extra) {
        c.extend(e);
    }
    json!({"configuration": {"clientConfiguration": client, "metadata": metadata}})
}

fn routing_key(integration: &Value) -> String {
    integration["routingKey"].as_str().expect("routingKey").to_string()
}

/// Sends `m` and returns its final response: an empty ACK is skipped, and a separate (CON)
/// response is acknowledged before it is returned.
fn request(client: &CoapClient, m: &Message) -> Message {
    client.send(m);
    loop {
        let r = client.receive().unwrap_or_else(|| panic!("no response to {m:?}"));
        if r.mtype == MessageType::Acknowledgement && r.message_id == m.message_id {
            if r.code.is_empty() {
                continue;
            }
            return r;
        }
        if r.token == m.token && !r.code.is_empty() {
            if r.mtype == MessageType::Confirmable {
                client.send(&Message::empty_ack(r.message_id));
            }
            return r;
        }
    }
}

/// The next datagram from the server as raw bytes, waiting at most `timeout`.
fn receive_raw(client: &CoapClient, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        client.socket.set_read_timeout(Some(left)).unwrap();
        match client.socket.recv_from(&mut buf) {
            Ok((n, from)) if from == client.server => break Some(buf[..n].to_vec()),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    client.socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    result
}

fn device_count(server: &Server) -> u64 {
    server.api("GET", "/api/tenant/devices?pageSize=1000&page=0", None)["totalElements"].as_u64().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. The response-code table.

#[test]
fn response_code_table() {
    let server = Server::start();
    let ok = server.seed_integration();
    let throwing = server.create_converter("throws", r#"var name = decodeToString(payload); throw new Error("boom for " + name);"#);
    let throwing = server.create_integration("Throwing", &throwing, json!({}));
    let nameless = server.create_converter("nameless", "return {telemetry: {t: 1}};");
    let nameless = server.create_integration("Nameless", &nameless, json!({}));
    let seed = server.create_converter("seed again", SEED_DECODER);
    let forbidding = server.create_integration("No device creation", &seed, json!({"allowCreateDevicesOrAssets": false}));

    let path = endpoint_path(&ok);
    let key = routing_key(&ok);
    let unknown = uuid::Uuid::new_v4().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    struct Case {
        what: &'static str,
        method: Code,
        path: Vec<String>,
        payload: Vec<u8>,
        code: Code,
        says: Option<&'static str>,
    }
    let case = |what, method, path: Vec<String>, payload: &[u8], code, says| Case { what, method, path, payload: payload.to_vec(), code, says };
    let cases = vec![
        case("POST", Code::POST, path.clone(), &seed_payload("T-POST"), Code::CREATED, None),
        case("PUT", Code::PUT, path.clone(), &seed_payload("T-PUT"), Code::CREATED, None),
        case("GET", Code::GET, path.clone(), b"", Code::METHOD_NOT_ALLOWED, None),
        case("GET with a payload", Code::GET, path.clone(), &seed_payload("T-GET"), Code::METHOD_NOT_ALLOWED, None),
        case("DELETE", Code::DELETE, path.clone(), b"", Code::METHOD_NOT_ALLOWED, None),
        case("FETCH", Code::FETCH, path.clone(), &seed_payload("T-FETCH"), Code::METHOD_NOT_ALLOWED, None),
        case("unknown routing key", Code::POST, s(&["i", &unknown]), &seed_payload("T-UNKNOWN"), Code::NOT_FOUND, None),
        case("GET on an unknown routing key", Code::GET, s(&["i", &unknown]), b"", Code::NOT_FOUND, None),
        case("key without i/", Code::POST, s(&[&key]), &seed_payload("T-NOI"), Code::NOT_FOUND, None),
        case("key under another segment", Code::POST, s(&["x", &key]), &seed_payload("T-X"), Code::NOT_FOUND, None),
        case("i/ without a key", Code::POST, s(&["i"]), &seed_payload("T-I"), Code::NOT_FOUND, None),
        case("root", Code::POST, vec![], &seed_payload("T-ROOT"), Code::NOT_FOUND, None),
        case("extra segment after the key", Code::POST, s(&["i", &key, "x"]), &seed_payload("T-EXTRA"), Code::NOT_FOUND, None),
        case("empty payload", Code::POST, path.clone(), b"", Code::BAD_REQUEST, None),
        case("empty payload with PUT", Code::PUT, path.clone(), b"", Code::BAD_REQUEST, None),
        case("converter throws", Code::POST, endpoint_path(&throwing), b"T-THROW", Code::BAD_REQUEST, None),
        case("output without deviceName", Code::POST, endpoint_path(&nameless), b"T-NAMELESS", Code::BAD_REQUEST, Some("deviceName")),
        case(
            "device creation forbidden",
            Code::POST,
            endpoint_path(&forbidding),
            &seed_payload("T-FORBIDDEN"),
            Code::BAD_REQUEST,
            Some("Creating devices is forbidden!"),
        ),
    ];

    let mut client = CoapClient::new(server.coap);
    let mut failures = Vec::new();
    for c in &cases {
        let m = client.build(MessageType::Confirmable, c.method, &c.path, &c.payload);
        let r = request(&client, &m);
        if r.code != c.code {
            failures.push(format!("{}: expected {}, got {} ({:?})", c.what, c.code, r.code, text(&r.payload)));
            continue;
        }
        // Every immediate answer to a CON is a piggybacked ACK carrying the request's token.
        if (r.mtype, r.message_id, r.token) != (MessageType::Acknowledgement, m.message_id, m.token) {
            failures.push(format!("{}: not a piggybacked response: {r:?}", c.what));
        }
        if let Some(says) = c.says
            && !text(&r.payload).contains(says)
        {
            failures.push(format!("{}: payload {:?} does not contain {says:?}", c.what, text(&r.payload)));
        }
        if c.code == Code::CREATED && !r.payload.is_empty() {
            failures.push(format!("{}: 2.01 with a payload {:?}", c.what, text(&r.payload)));
        }
    }
    assert!(failures.is_empty(), "response-code table:\n{}", failures.join("\n"));

    // Only the two successful uplinks created devices; the converter that threw named its
    // device before throwing, and the forbidden one named a new device: neither exists.
    assert!(server.device("T-POST").is_some() && server.device("T-PUT").is_some());
    for name in ["T-THROW", "T-FORBIDDEN", "T-GET", "T-FETCH", "T-UNKNOWN", "T-NOI", "T-NAMELESS"] {
        assert!(server.device(name).is_none(), "device {name} must not exist");
    }
    assert_eq!(device_count(&server), 2);
    assert_eq!(server.latest(&server.device("T-PUT").unwrap())["temperature"], "25.7");
}

#[test]
fn enabling_disabling_and_deleting_take_effect_at_once() {
    let server = Server::start();
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let id = integration["id"]["id"].as_str().unwrap().to_string();
    let mut client = CoapClient::new(server.coap);
    let post = |client: &mut CoapClient| {
        let m = client.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
        request(client, &m).code
    };
    let update = |enabled: bool| {
        let mut body = integration.clone();
        body["enabled"] = json!(enabled);
        let saved = server.api("POST", "/api/integration", Some(body));
        assert_eq!((saved["id"]["id"].as_str(), saved["enabled"].as_bool()), (Some(id.as_str()), Some(enabled)));
        assert_eq!(saved["routingKey"], integration["routingKey"], "an update keeps the routing key");
    };

    assert_eq!(post(&mut client), Code::CREATED);
    update(false);
    assert_eq!(post(&mut client), Code::NOT_FOUND, "disabled integration, first request after the update");
    let get = client.build(MessageType::Confirmable, Code::GET, &path, b"");
    assert_eq!(request(&client, &get).code, Code::NOT_FOUND, "a disabled integration does not exist for any method");
    std::thread::sleep(Duration::from_millis(5));
    update(true);
    assert_eq!(post(&mut client), Code::CREATED, "re-enabled integration, first request after the update");
    let device = server.device("SN-001").unwrap();
    assert_eq!(server.history_len(&device, "temperature"), 2, "the uplink sent while disabled is not stored");

    server.api("DELETE", &format!("/api/integration/{id}"), None);
    assert_eq!(post(&mut client), Code::NOT_FOUND, "deleted integration");
    assert_eq!(server.history_len(&device, "temperature"), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. NON requests.

#[test]
fn non_request_gets_non_response_with_its_token() {
    let server = Server::start();
    let path = endpoint_path(&server.seed_integration());
    let mut client = CoapClient::new(server.coap);
    let m = client.build(MessageType::NonConfirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    client.send(&m);
    let r = client.receive().expect("a NON request is answered");
    assert_eq!(r.mtype, MessageType::NonConfirmable, "{r:?}");
    assert_eq!(r.code, Code::CREATED, "{r:?}");
    assert_eq!(r.token, m.token);
    assert!(!r.token.as_slice().is_empty());
    // The answer comes after the commit, so the data is there already.
    let device = server.device("SN-001").expect("device stored");
    assert_eq!(server.latest(&device)["humidity"], "69");

    // A NON error is a NON too.
    let bad = client.build(MessageType::NonConfirmable, Code::GET, &path, b"");
    client.send(&bad);
    let r = client.receive().expect("answer to a NON GET");
    assert_eq!((r.mtype, r.code, r.token), (MessageType::NonConfirmable, Code::METHOD_NOT_ALLOWED, bad.token));
}

// ---------------------------------------------------------------------------------------------
// 3. Deduplication.

#[test]
fn retransmissions_are_answered_identically_and_stored_once() {
    let server = Server::start();
    let path = endpoint_path(&server.seed_integration());
    let mut client = CoapClient::new(server.coap);
    let m = client.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    let bytes = m.encode();
    let mut answers = Vec::new();
    for attempt in 0..3 {
        client.send_raw(&bytes);
        answers.push(receive_raw(&client, Duration::from_secs(5)).unwrap_or_else(|| panic!("no answer to transmission {attempt}")));
    }
    let first = Message::parse(&answers[0]).unwrap();
    assert_eq!((first.mtype, first.code, first.message_id, first.token), (MessageType::Acknowledgement, Code::CREATED, m.message_id, m.token));
    assert_eq!(answers[1], answers[0], "second transmission answered differently");
    assert_eq!(answers[2], answers[0], "third transmission answered differently");
    assert!(receive_raw(&client, Duration::from_millis(200)).is_none(), "more answers than transmissions");
    let device = server.device("SN-001").unwrap();
    assert_eq!(server.history_len(&device, "temperature"), 1, "a retransmission was stored again");

    // Same content, new message id: a new uplink (dedup is by message id, not by content).
    std::thread::sleep(Duration::from_millis(10));
    let again = client.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    assert_eq!(request(&client, &again).code, Code::CREATED);
    assert_eq!(server.history_len(&device, "temperature"), 2);

    // Same bytes from another port: another peer, another exchange.
    std::thread::sleep(Duration::from_millis(10));
    let other = CoapClient::new(server.coap);
    other.send_raw(&bytes);
    let answer = Message::parse(&receive_raw(&other, Duration::from_secs(5)).expect("answer to the other peer")).unwrap();
    assert_eq!((answer.code, answer.message_id), (Code::CREATED, m.message_id));
    assert_eq!(server.history_len(&device, "temperature"), 3);

    // NON requests are deduplicated too.
    std::thread::sleep(Duration::from_millis(10));
    let non = client.build(MessageType::NonConfirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes()).encode();
    client.send_raw(&non);
    let first = receive_raw(&client, Duration::from_secs(5)).expect("answer to the NON");
    client.send_raw(&non);
    let second = receive_raw(&client, Duration::from_secs(5)).expect("answer to the repeated NON");
    assert_eq!(first, second);
    assert_eq!(Message::parse(&first).unwrap().code, Code::CREATED);
    assert_eq!(server.history_len(&device, "temperature"), 4, "a repeated NON was stored again");
}

/// A device that restarts its message ids (or a NAT mapping handed to another device) sends a
/// new request under an id the server still remembers: the token tells it apart from a
/// retransmission, which repeats the token. Answered with the old exchange's response, its data
/// was never stored and the device timed out (a mismatched token is not its answer).
#[test]
fn a_message_id_reused_with_another_token_is_a_new_uplink_before_and_after_a_restart() {
    let server = Server::start();
    let path = endpoint_path(&server.seed_integration());
    let mut client = CoapClient::new(server.coap);
    let first = client.build(MessageType::Confirmable, Code::POST, &path, &seed_payload("SN-101"));
    assert_eq!(request(&client, &first).code, Code::CREATED);
    let mut reused = client.build(MessageType::Confirmable, Code::POST, &path, &seed_payload("SN-102"));
    reused.message_id = first.message_id;
    assert_ne!(reused.token, first.token);
    let answer = request(&client, &reused);
    assert_eq!((answer.code, answer.token), (Code::CREATED, reused.token), "answered as the old exchange");
    let device = server.device("SN-102").expect("the new request was not processed");
    // Its own retransmission is still a duplicate.
    assert_eq!(request(&client, &reused).token, reused.token);
    assert_eq!(server.history_len(&device, "temperature"), 1, "a retransmission was stored again");
    assert_eq!(metric(&server, "coapgate_coap_reused_message_ids_total"), 1);

    // After a restart the remembered exchanges come from the durable log, tokens included.
    let server = Server::start_in(server.kill(), &[], &[]);
    client.server = server.coap;
    let again = request(&client, &reused);
    assert_eq!((again.code, again.token), (Code::CREATED, reused.token));
    assert_eq!(server.history_len(&device, "temperature"), 1, "a retransmission was stored again after the restart");
    let mut third = client.build(MessageType::Confirmable, Code::POST, &path, &seed_payload("SN-103"));
    third.message_id = first.message_id;
    let answer = request(&client, &third);
    assert_eq!((answer.code, answer.token), (Code::CREATED, third.token));
    assert!(server.device("SN-103").is_some(), "a reused id after the restart was answered without being processed");
    assert_eq!(metric(&server, "coapgate_coap_reused_message_ids_total"), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Pings, malformed messages, empty messages.

#[test]
fn pings_and_malformed_messages() {
    let server = Server::start();
    let client = CoapClient::new(server.coap);

    // Datagrams that must get no answer at all.
    let silent: Vec<(&str, Vec<u8>)> = vec![
        ("empty NON", vec![0x50, 0x00, 0x12, 0x01]),
        ("empty ACK for nothing", vec![0x60, 0x00, 0x12, 0x02]),
        ("RST for nothing", vec![0x70, 0x00, 0x12, 0x03]),
        ("malformed NON (TKL 9)", [&[0x59, 0x02, 0x12, 0x04][..], &[7; 9]].concat()),
        ("NON with a response code", vec![0x50, 0x45, 0x12, 0x05]),
        ("version 2 CON", vec![0x80, 0x02, 0x12, 0x06, 0xff, b'x']),
        ("three bytes", vec![0x40, 0x02, 0x12]),
        ("nothing", vec![]),
    ];
    for (_, bytes) in &silent {
        client.send_raw(bytes);
    }
    if let Some(answer) = receive_raw(&client, Duration::from_millis(500)) {
        panic!("no answer expected to any of {:?}; got {answer:02x?}", silent.iter().map(|s| s.0).collect::<Vec<_>>());
    }

    // CONs the server cannot process: RST with the same message id, and nothing else.
    let reset: Vec<(&str, Vec<u8>)> = vec![
        ("ping (empty CON)", vec![0x40, 0x00, 0x34, 0x01]),
        ("TKL 9", [&[0x49, 0x02, 0x34, 0x02][..], &[7; 9]].concat()),
        ("TKL 15", vec![0x4f, 0x02, 0x34, 0x03]),
        ("truncated token", vec![0x44, 0x02, 0x34, 0x04, 1, 2]),
        ("option delta nibble 15", vec![0x40, 0x02, 0x34, 0x05, 0xf1, b'x']),
        ("option length nibble 15", vec![0x40, 0x02, 0x34, 0x06, 0xbf, b'x']),
        ("option longer than the datagram", vec![0x40, 0x02, 0x34, 0x07, 0xb5, b'i']),
        ("payload marker without payload", vec![0x40, 0x02, 0x34, 0x08, 0xb1, b'i', 0xff]),
        ("empty CON with a token", vec![0x41, 0x00, 0x34, 0x09, 0x01]),
        ("CON carrying a response code", vec![0x40, 0x45, 0x34, 0x0a]),
        ("CON with a reserved class", vec![0x40, 0xe1, 0x34, 0x0b]),
    ];
    let mut failures = Vec::new();
    for (what, bytes) in &reset {
        client.send_raw(bytes);
        let expected = vec![0x70, 0x00, bytes[2], bytes[3]];
        match receive_raw(&client, Duration::from_secs(2)) {
            Some(answer) if answer == expected => {}
            Some(answer) => failures.push(format!("{what}: expected RST {expected:02x?}, got {answer:02x?}")),
            None => failures.push(format!("{what}: no answer")),
        }
    }
    assert!(receive_raw(&client, Duration::from_millis(200)).is_none(), "an extra answer");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 5. Uri-Path quirks and path prefixes.

#[test]
fn single_option_path_and_path_prefix() {
    let server = Server::start();
    let plain = server.seed_integration();
    let key = routing_key(&plain);
    let converter = server.create_converter("prefixed", SEED_DECODER);
    let prefixed = server.create_integration("Prefixed", &converter, configuration(&server, json!({"path": "my-path"}), json!({})));
    let pkey = routing_key(&prefixed);
    let endpoint = prefixed["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap();
    assert!(endpoint.ends_with(&format!("/my-path/i/{pkey}")), "{endpoint}");
    assert_eq!(endpoint_path(&prefixed), vec!["my-path".to_string(), "i".into(), pkey.clone()]);

    let cases: Vec<(&str, Vec<String>, &str, Code)> = vec![
        ("one option i/<key>", vec![format!("i/{key}")], "ONE-OPTION", Code::CREATED),
        ("one option /i/<key>", vec![format!("/i/{key}")], "ONE-OPTION-SLASH", Code::CREATED),
        ("prefixed, separate options", endpoint_path(&prefixed), "PREFIXED", Code::CREATED),
        ("prefixed, one option", vec![format!("my-path/i/{pkey}")], "PREFIXED-ONE", Code::CREATED),
        ("prefixed key without its prefix", vec!["i".into(), pkey.clone()], "NO-PREFIX", Code::NOT_FOUND),
        ("prefixed key under another prefix", vec!["other".into(), "i".into(), pkey.clone()], "OTHER", Code::NOT_FOUND),
        ("plain key under a prefix", vec!["my-path".into(), "i".into(), key.clone()], "PLAIN-PREFIXED", Code::NOT_FOUND),
    ];
    let mut client = CoapClient::new(server.coap);
    let mut failures = Vec::new();
    for (what, path, device, code) in &cases {
        let m = client.build(MessageType::Confirmable, Code::POST, path, &seed_payload(device));
        let r = request(&client, &m);
        if r.code != *code {
            failures.push(format!("{what}: expected {code}, got {} {:?}", r.code, text(&r.payload)));
        }
        if server.device(device).is_some() != (*code == Code::CREATED) {
            failures.push(format!("{what}: device {device} stored = {}", server.device(device).is_some()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 6. Metadata for the converter.

#[test]
fn converter_metadata_from_the_request() {
    let server = Server::start();
    let converter = server.create_converter("metadata", METADATA_DECODER);
    let integration =
        server.create_integration("Metadata Integration", &converter, configuration(&server, json!({}), json!({"myKey": "myValue"})));
    let key = routing_key(&integration);
    let path = endpoint_path(&integration);
    let mut client = CoapClient::new(server.coap);

    let mut m = client.build(MessageType::Confirmable, Code::POST, &path, br#"{"name": "M"}"#);
    m.add_option(option::URI_QUERY, b"a=1".to_vec());
    m.set_uint_option(option::CONTENT_FORMAT, 50);
    assert_eq!(request(&client, &m).code, Code::CREATED);
    let device = server.device("M").expect("device M");
    let latest = server.latest(&device);
    assert_eq!(latest["uri"], format!("/i/{key}?a=1"));
    assert_eq!(latest["cf"], "50");
    assert_eq!(latest["name"], "Metadata Integration");
    assert_eq!(latest["custom"], "myValue");
    // "50" reached the converter as a string and was stored as a number.
    let id = device["id"]["id"].as_str().unwrap();
    let strict = server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=cf,uri&useStrictDataTypes=true"), None);
    assert_eq!(strict["cf"][0]["value"], json!(50), "{strict}");
    assert_eq!(strict["uri"][0]["value"], json!(format!("/i/{key}?a=1")), "{strict}");

    // Two queries, no Content-Format.
    let mut m = client.build(MessageType::Confirmable, Code::POST, &path, br#"{"name": "M2"}"#);
    m.add_option(option::URI_QUERY, b"a=1".to_vec());
    m.add_option(option::URI_QUERY, b"b=x y".to_vec());
    assert_eq!(request(&client, &m).code, Code::CREATED);
    let latest = server.latest(&server.device("M2").expect("device M2"));
    assert_eq!(latest["uri"], format!("/i/{key}?a=1&b=x y"));
    assert!(!latest.contains_key("cf"), "no Content-Format, yet the converter saw one: {latest:?}");
    assert_eq!(latest["custom"], "myValue");

    // No query at all: no `?`.
    let m = client.build(MessageType::Confirmable, Code::POST, &path, br#"{"name": "M3"}"#);
    assert_eq!(request(&client, &m).code, Code::CREATED);
    assert_eq!(server.latest(&server.device("M3").expect("device M3"))["uri"], format!("/i/{key}"));
}

// ---------------------------------------------------------------------------------------------
// 7. Discovery.

#[test]
fn well_known_core_never_lists_routing_keys() {
    let server = Server::start();
    let keys: Vec<String> = (0..2)
        .map(|i| {
            let converter = server.create_converter(&format!("c{i}"), SEED_DECODER);
            routing_key(&server.create_integration(&format!("I{i}"), &converter, json!({})))
        })
        .collect();
    let mut client = CoapClient::new(server.coap);
    for mtype in [MessageType::Confirmable, MessageType::NonConfirmable] {
        let m = client.build(mtype, Code::GET, &[".well-known".into(), "core".into()], b"");
        let r = request(&client, &m);
        assert_eq!(r.code, Code::CONTENT, "{r:?}");
        let body = text(&r.payload);
        for key in &keys {
            assert!(!body.contains(key.as_str()), "/.well-known/core lists routing key {key}: {body}");
        }
        assert!(!body.contains(&keys[0][..8]), "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Separate responses.

fn slow_server(env: &[(&str, &str)]) -> (Server, Vec<String>) {
    let server = Server::start_with(env, &[]);
    let converter = server.create_converter("slow", SLOW_DECODER);
    let path = endpoint_path(&server.create_integration("Slow", &converter, json!({})));
    (server, path)
}

#[test]
fn separate_response_is_acknowledged_and_not_retransmitted() {
    let (server, path) = slow_server(&[("COAP_PIGGYBACK_TIMEOUT_MS", "50")]);
    // One device acknowledges the separate response, the other rejects it with RST; either
    // ends the server's retransmissions.
    type Answer = fn(u16) -> Message;
    let mut clients: Vec<(CoapClient, &str, Answer)> = vec![
        (CoapClient::new(server.coap), "SEP-ACKED", Message::empty_ack),
        (CoapClient::new(server.coap), "SEP-RESET", Message::reset),
    ];
    let requests: Vec<Message> = clients
        .iter_mut()
        .map(|(client, device, _)| {
            let m = client.build(MessageType::Confirmable, Code::POST, &path, device.as_bytes());
            client.send(&m);
            m
        })
        .collect();
    for ((client, device, answer), m) in clients.iter().zip(&requests) {
        let ack = receive_raw(client, Duration::from_secs(5)).expect("empty ACK");
        assert_eq!(ack, Message::empty_ack(m.message_id).encode(), "expected an empty ACK first");
        let response = client.receive().expect("separate response");
        assert_eq!((response.mtype, response.code, response.token), (MessageType::Confirmable, Code::CREATED, m.token), "{response:?}");
        assert!(response.payload.is_empty());
        // Sent after the commit: the device is there the moment the 2.01 arrives.
        assert!(server.device(device).is_some(), "{device} not stored when its 2.01 arrived");
        client.send(&answer(response.message_id));
    }
    // The first retransmission would come 2 to 3 s after the response.
    std::thread::sleep(Duration::from_millis(3500));
    for (client, device, _) in &clients {
        if let Some(extra) = receive_raw(client, Duration::from_millis(100)) {
            panic!("{device}: the server sent {extra:02x?} after its separate response was answered");
        }
    }
}

#[test]
fn unacknowledged_separate_response_is_retransmitted() {
    let (server, path) = slow_server(&[("COAP_PIGGYBACK_TIMEOUT_MS", "50")]);
    let mut client = CoapClient::new(server.coap);
    let m = client.build(MessageType::Confirmable, Code::POST, &path, b"SEP-UNACKED");
    let request_bytes = m.encode();
    client.send_raw(&request_bytes);

    let ack = receive_raw(&client, Duration::from_secs(5)).expect("empty ACK");
    assert_eq!(ack, Message::empty_ack(m.message_id).encode());
    let response = receive_raw(&client, Duration::from_secs(5)).expect("separate response");
    let sent_at = Instant::now();
    let parsed = Message::parse(&response).unwrap();
    assert_eq!((parsed.mtype, parsed.code, parsed.token), (MessageType::Confirmable, Code::CREATED, m.token));

    // A retransmitted request is not processed again; the server repeats its empty ACK.
    client.send_raw(&request_bytes);
    assert_eq!(receive_raw(&client, Duration::from_secs(1)).as_deref(), Some(&ack[..]), "duplicate request");

    let again = receive_raw(&client, Duration::from_millis(4000)).expect("the separate response is retransmitted");
    let waited = sent_at.elapsed();
    assert_eq!(again, response, "the retransmission is the same message (same message id)");
    assert!(waited >= Duration::from_millis(1800) && waited <= Duration::from_millis(3500), "retransmitted after {waited:?}");
    client.send(&Message::empty_ack(parsed.message_id));
    let device = server.device("SEP-UNACKED").unwrap();
    assert_eq!(server.history_len(&device, "v"), 1);
}

// ---------------------------------------------------------------------------------------------
// 9. Overload.

#[test]
fn overload_answers_503_with_max_age_and_recovers() {
    let (server, path) = slow_server(&[("COAP_MAX_IN_FLIGHT", "1")]);
    let mut a = CoapClient::new(server.coap);
    let mut b = CoapClient::new(server.coap);
    let ma = a.build(MessageType::Confirmable, Code::POST, &path, b"OVER-A");
    let mb = b.build(MessageType::Confirmable, Code::POST, &path, b"OVER-B");
    a.send(&ma);
    b.send(&mb);
    let ra = request_wait(&a, &ma);
    let rb = request_wait(&b, &mb);
    let (ok, refused, refused_device) = match (ra.code, rb.code) {
        (Code::CREATED, Code::SERVICE_UNAVAILABLE) => (&ra, &rb, "OVER-B"),
        (Code::SERVICE_UNAVAILABLE, Code::CREATED) => (&rb, &ra, "OVER-A"),
        other => panic!("expected one 2.01 and one 5.03, got {other:?}"),
    };
    assert!(ok.payload.is_empty());
    assert!(refused.get_uint_option(option::MAX_AGE).is_some_and(|s| s >= 1), "5.03 without Max-Age: {refused:?}");
    assert!(server.device(refused_device).is_none(), "the refused uplink was stored");

    // The slot is free again as soon as the answer is out.
    for device in ["OVER-C", "OVER-D"] {
        let m = b.build(MessageType::Confirmable, Code::POST, &path, device.as_bytes());
        assert_eq!(request(&b, &m).code, Code::CREATED, "{device} after the overload");
        assert!(server.device(device).is_some());
    }
}

/// Like [`request`], for a message that was sent already.
fn request_wait(client: &CoapClient, m: &Message) -> Message {
    loop {
        let r = client.receive().unwrap_or_else(|| panic!("no response to {m:?}"));
        if r.mtype == MessageType::Acknowledgement && r.message_id == m.message_id && !r.code.is_empty() {
            return r;
        }
        if r.mtype == MessageType::Confirmable && r.token == m.token {
            client.send(&Message::empty_ack(r.message_id));
            return r;
        }
    }
}

#[test]
fn unacknowledged_separate_response_does_not_hold_capacity() {
    // A device that never acknowledges the separate response (asleep, gone) must not keep its
    // uplink counted as in flight for the whole retransmission span (93 s).
    let (server, path) = slow_server(&[("COAP_MAX_IN_FLIGHT", "1"), ("COAP_PIGGYBACK_TIMEOUT_MS", "50")]);
    let mut sleepy = CoapClient::new(server.coap);
    let m = sleepy.build(MessageType::Confirmable, Code::POST, &path, b"SLEEPY");
    sleepy.send(&m);
    let first = sleepy.receive().expect("empty ACK");
    assert!(first.code.is_empty());
    let response = sleepy.receive().expect("separate response");
    assert_eq!(response.code, Code::CREATED);
    // Not acknowledged. Another device now gets through.
    let mut other = CoapClient::new(server.coap);
    let m = other.build(MessageType::Confirmable, Code::POST, &path, b"AWAKE");
    let r = request(&other, &m);
    assert_eq!(r.code, Code::CREATED, "{:?}", text(&r.payload));
}

// ---------------------------------------------------------------------------------------------
// 10. Robustness.

/// xorshift64: a deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn survives_a_barrage_of_garbage() {
    let server = Server::start();
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    // Random bytes of random length.
    for _ in 0..6000 {
        let len = rng.below(301) as usize;
        datagrams.push(rng.bytes(len));
    }
    // A valid request to the real endpoint cut at every length, as CON and NON, with fresh ids.
    let mut builder = CoapClient::new(server.coap);
    for mtype in [MessageType::Confirmable, MessageType::NonConfirmable] {
        for device in ["FUZZ-T", "FUZZ-U"] {
            let mut m = builder.build(mtype, Code::POST, &path, &seed_payload(device));
            m.set_uint_option(option::CONTENT_FORMAT, 0);
            let full = m.encode();
            for len in 0..=full.len() {
                let mut d = full[..len].to_vec();
                if d.len() >= 4 {
                    d[2..4].copy_from_slice(&builder.next_message_id().to_be_bytes());
                }
                datagrams.push(d);
            }
        }
    }
    // Readable headers followed by garbage tokens, options and payloads.
    let codes = [Code::POST, Code::PUT, Code::GET, Code::DELETE, Code::EMPTY, Code::CREATED];
    for _ in 0..4000 {
        let tkl = rng.below(9) as u8;
        let mtype = rng.below(4) as u8;
        let code = if rng.below(4) == 0 { rng.next() as u8 } else { codes[rng.below(codes.len() as u64) as usize].0 };
        let mut d = vec![0x40 | (mtype << 4) | tkl, code];
        d.extend(rng.bytes(2 + tkl as usize));
        let garbage = rng.below(200) as usize;
        d.extend(rng.bytes(garbage));
        datagrams.push(d);
    }
    assert!(datagrams.len() >= 10_000, "{}", datagrams.len());

    // Several sockets; each drains and checks its answers in a thread.
    let done = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicUsize::new(0));
    let mut sockets = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..4 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let reader = socket.try_clone().unwrap();
        reader.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let (done, answers, server_addr) = (done.clone(), answers.clone(), server.coap);
        readers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut malformed = Vec::new();
            loop {
                match reader.recv_from(&mut buf) {
                    Ok((n, from)) if from == server_addr => {
                        answers.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = Message::parse(&buf[..n]) {
                            malformed.push(format!("{:02x?}: {e}", &buf[..n]));
                        }
                    }
                    Ok(_) => {}
                    Err(_) if done.load(Ordering::Relaxed) => return malformed,
                    Err(_) => {}
                }
            }
        }));
        sockets.push(socket);
    }
    for (i, d) in datagrams.iter().enumerate() {
        sockets[i % sockets.len()].send_to(d, server.coap).unwrap();
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Let the converter calls among them finish before the readers stop.
    std::thread::sleep(Duration::from_millis(1000));
    done.store(true, Ordering::Relaxed);
    let malformed: Vec<String> = readers.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert!(malformed.is_empty(), "the server sent malformed messages:\n{}", malformed.join("\n"));
    // Malformed CONs among the garbage are answered with RST, so silence would mean a dead server.
    assert!(answers.load(Ordering::Relaxed) > 500, "only {} answers", answers.load(Ordering::Relaxed));

    // Still serving, and storing.
    let mut client = CoapClient::new(server.coap);
    let m = client.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    let r = request(&client, &m);
    assert_eq!(r.code, Code::CREATED, "{:?}", text(&r.payload));
    let device = server.device("SN-001").expect("SN-001 stored after the barrage");
    assert_eq!(server.latest(&device)["temperature"], "25.7");
    let ping = [0x40, 0x00, 0xab, 0xcd];
    client.send_raw(&ping);
    assert_eq!(receive_raw(&client, Duration::from_secs(2)), Some(vec![0x70, 0x00, 0xab, 0xcd]));
}
