//! Hostile converter scripts over real CoAP: each is stopped within its limit with a clear 4.00
//! and error event, gets blocked after three counted errors, and never stops other integrations.

mod common;

use std::time::Duration;

use coapgate_coap::message::{Code, MessageType};
use common::*;
use serde_json::{Value, json};

fn payload_text(m: &coapgate_coap::message::Message) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

#[test]
fn each_hostile_script_is_stopped_with_a_clear_error() {
    let server = Server::start_with(&[("JS_MAX_EXECUTION_TIME_MS", "300"), ("JS_MAX_MEMORY_MB", "32")], &[]);
    let good = server.seed_integration();
    // (script, what the 4.00 payload must say)
    let cases = [
        ("while (true) {}", "timed out"),
        ("var a = []; while (true) { a.push(new Array(100000).fill(1)); }", "memory limit"),
        ("function f(n) { return f(n + 1) + 1; } return f(0);", "stack"),
        ("return 'x'.repeat(10 * 1024 * 1024);", "too large"),
        ("return {deviceName: 'x',, };", "line 1"),
    ];
    let mut client = CoapClient::new(server.coap);
    for (i, (script, expected)) in cases.iter().enumerate() {
        let converter = server.create_converter(&format!("hostile-{i}"), script);
        let integration = server.create_integration(&format!("hostile-{i}"), &converter, json!({}));
        let request = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(&integration), b"payload");
        let response = client.exchange(&request);
        assert_eq!(response.code, Code::BAD_REQUEST, "{script}");
        let text = payload_text(&response);
        assert!(text.contains(expected), "{script}: 4.00 payload `{text}` should mention `{expected}`");

        // The error is an event of the converter and of the integration.
        let cid = converter["id"]["id"].as_str().unwrap();
        let event = eventually(Duration::from_secs(5), || {
            let page = server.api("GET", &format!("/api/events/CONVERTER/{cid}/DEBUG_CONVERTER?pageSize=1&page=0"), None);
            page["data"].as_array().unwrap().first().cloned()
        })
        .unwrap_or_else(|| panic!("no converter error event for {script}"));
        assert!(event["body"]["error"].as_str().unwrap().contains(expected), "{event}");

        // The server keeps serving other integrations after each one.
        assert_eq!(client.post(&endpoint_path(&good), SEED_PAYLOAD.as_bytes()), Code::CREATED, "after {script}");
    }
    assert_eq!(server.latest(&server.device("SN-001").unwrap())["temperature"], "25.7");
}

#[test]
fn three_timeouts_block_the_script_with_thingsboards_message() {
    let server = Server::start_with(&[("JS_MAX_EXECUTION_TIME_MS", "200")], &[]);
    let converter = server.create_converter("endless", "while (true) {}");
    let integration = server.create_integration("endless", &converter, json!({}));
    let cid = converter["id"]["id"].as_str().unwrap().to_string();
    let mut client = CoapClient::new(server.coap);
    let texts: Vec<String> = (0..5)
        .map(|_| {
            let m = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(&integration), b"x");
            let r = client.exchange(&m);
            assert_eq!(r.code, Code::BAD_REQUEST);
            payload_text(&r)
        })
        .collect();
    for t in &texts[..3] {
        assert!(t.contains("timed out"), "{t}");
    }
    // The CoAP payload is cut short for devices; the full message is in the events.
    for t in &texts[3..] {
        assert!(t.contains("Script invocation is blocked due to maximum error count 3"), "{t}");
    }
    let blocked = eventually(Duration::from_secs(5), || {
        let page = server.api("GET", &format!("/api/events/CONVERTER/{cid}/DEBUG_CONVERTER?pageSize=1&page=0"), None);
        let e: Value = page["data"][0].clone();
        e["body"]["error"].as_str().filter(|s| s.contains("blocked")).map(str::to_string)
    })
    .expect("blocked event");
    assert_eq!(blocked, format!("Script invocation is blocked due to maximum error count 3, scriptId {cid}!"));

    // Saving the converter again (a new version) lifts the block: the fixed script works at once.
    let mut fixed = converter.clone();
    fixed["configuration"]["decoder"] = json!("return {deviceName: 'fixed', telemetry: {ok: 1}};");
    server.api("POST", "/api/converter", Some(fixed));
    assert_eq!(client.post(&endpoint_path(&integration), b"x"), Code::CREATED);
}

#[test]
fn an_endless_script_does_not_hold_up_another_integration() {
    // The piggyback window is longer than the script limit, so an uplink that had to wait for
    // a worker held by the endless script would show up as an empty ACK + separate response.
    let server = Server::start_with(
        &[("JS_MAX_EXECUTION_TIME_MS", "400"), ("COAP_PIGGYBACK_TIMEOUT_MS", "350"), ("SCRIPT_WORKERS", "2")],
        &[],
    );
    let bad = server.create_integration("endless", &server.create_converter("endless", "while (true) {}"), json!({}));
    let good = server.seed_integration();
    let bad_path = endpoint_path(&bad);
    let flood = std::thread::spawn({
        let coap = server.coap;
        move || {
            // Several devices hammer the endless integration at once.
            let clients: Vec<CoapClient> = (0..4).map(|_| CoapClient::new(coap)).collect();
            for round in 0..3 {
                for c in &clients {
                    let mut m = coapgate_coap::message::Message::new(MessageType::NonConfirmable, Code::POST, round * 10 + 1);
                    for s in &bad_path {
                        m.add_option(coapgate_coap::message::option::URI_PATH, s.as_bytes().to_vec());
                    }
                    m.payload = b"x".to_vec();
                    c.send(&m);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let mut client = CoapClient::new(server.coap);
    for i in 0..30 {
        let payload = format!("SN-{i},default,temperature,{i}");
        let m = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(&good), payload.as_bytes());
        let r = client.exchange(&m);
        assert_eq!(r.mtype, MessageType::Acknowledgement, "uplink {i} was not answered within the piggyback window");
        assert_eq!(r.code, Code::CREATED, "uplink {i}");
        std::thread::sleep(Duration::from_millis(10));
    }
    flood.join().unwrap();
    assert!(server.device("SN-29").is_some());
}
