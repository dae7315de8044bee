//! Debug, lifecycle and statistics events through real uplinks and ThingsBoard's events API.

mod common;

use std::time::Duration;

use coapgate_coap::message::{Code, MessageType, option};
use common::*;
use serde_json::{Value, json};

/// Events of one type for an entity, newest first.
fn events(server: &Server, entity_type: &str, id: &str, event_type: &str) -> Vec<Value> {
    let page = server.api("GET", &format!("/api/events/{entity_type}/{id}/{event_type}?pageSize=100&page=0"), None);
    page["data"].as_array().unwrap().clone()
}

/// Waits until the entity has at least `n` events of the type (they are recorded in batches).
fn wait_events(server: &Server, entity_type: &str, id: &str, event_type: &str, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(5), || {
        let e = events(server, entity_type, id, event_type);
        (e.len() >= n).then_some(e)
    })
    .unwrap_or_else(|| panic!("fewer than {n} {event_type} events: {:?}", events(server, entity_type, id, event_type)))
}

fn debug_all() -> Value {
    json!({"failuresEnabled": true, "allEnabled": true, "allEnabledUntil": coapgate_storage::now_millis() + 300_000})
}

/// Sends `payload` with an optional Content-Format and returns the response code.
fn send(server: &Server, integration: &Value, payload: &[u8], content_format: Option<u32>) -> Code {
    let mut client = CoapClient::new(server.coap);
    let mut m = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(integration), payload);
    if let Some(cf) = content_format {
        m.set_uint_option(option::CONTENT_FORMAT, cf);
    }
    client.exchange(&m).code
}

#[test]
fn failures_are_recorded_by_default_and_successes_only_with_debug_all() {
    let server = Server::start();
    let integration = server.seed_integration();
    let iid = id_of(&integration);
    assert_eq!(send(&server, &integration, SEED_PAYLOAD.as_bytes(), Some(0)), Code::CREATED);
    assert_eq!(send(&server, &integration, b"no-commas", Some(0)), Code::CREATED, "seed decoder tolerates it");
    let converter = server.create_converter("thrower", "throw new Error('bad payload ' + payload.length);");
    let failing = server.create_integration("failing", &converter, json!({}));
    assert_eq!(send(&server, &failing, b"abc", Some(0)), Code::BAD_REQUEST);

    let failed = wait_events(&server, "INTEGRATION", &id_of(&failing), "DEBUG_INTEGRATION", 1);
    assert_eq!(failed[0]["body"]["status"], "ERROR");
    assert_eq!(failed[0]["body"]["type"], "Uplink");
    assert_eq!(failed[0]["body"]["messageType"], "TEXT");
    assert_eq!(failed[0]["body"]["message"], "abc");
    assert!(failed[0]["body"]["error"].as_str().unwrap().contains("bad payload 3"), "{}", failed[0]);
    assert_eq!(failed[0]["type"], "DEBUG_INTEGRATION");
    assert_eq!(failed[0]["entityId"]["entityType"], "INTEGRATION");
    let converter_events = wait_events(&server, "CONVERTER", &id_of(&converter), "DEBUG_CONVERTER", 1);
    assert_eq!(converter_events[0]["body"]["in"], "abc");
    assert!(converter_events[0]["body"]["error"].as_str().unwrap().contains("line 1"), "{}", converter_events[0]);

    // The seed integration's successes were not recorded: debug-all is off by default.
    std::thread::sleep(Duration::from_millis(300));
    assert!(events(&server, "INTEGRATION", &iid, "DEBUG_INTEGRATION").is_empty());
}

#[test]
fn debug_all_records_in_out_and_payload_types() {
    let server = Server::start();
    let converter = server.api(
        "POST",
        "/api/converter",
        Some(json!({"name": "c", "type": "UPLINK", "debugSettings": debug_all(),
                    "configuration": {"scriptLang": "JS", "decoder": SEED_DECODER}})),
    );
    let integration = server.create_integration("i", &converter, json!({"debugSettings": debug_all(), "configuration": {
        "clientConfiguration": {"baseUrl": format!("coap://127.0.0.1:{}", server.coap.port())}, "metadata": {"site": "north"}}}));
    let iid = id_of(&integration);
    let cases: [(&[u8], Option<u32>, &str, &str); 3] = [
        (SEED_PAYLOAD.as_bytes(), Some(0), "TEXT", SEED_PAYLOAD),
        (b"SN-002,default,t,1", Some(50), "JSON", "SN-002,default,t,1"),
        (b"SN-003,default,t,2", None, "BINARY", "U04tMDAzLGRlZmF1bHQsdCwy"),
    ];
    for (payload, cf, _, _) in &cases {
        assert_eq!(send(&server, &integration, payload, *cf), Code::CREATED);
    }
    let uplinks = wait_events(&server, "INTEGRATION", &iid, "DEBUG_INTEGRATION", 3);
    // Newest first.
    for (event, (_, _, kind, message)) in uplinks.iter().zip(cases.iter().rev()) {
        assert_eq!(event["body"]["status"], "OK");
        assert_eq!(event["body"]["messageType"], *kind);
        assert_eq!(event["body"]["message"], *message);
        assert!(event["body"]["error"].is_null());
        let out: Value = serde_json::from_str(event["body"]["out"].as_str().unwrap()).unwrap();
        assert_eq!(out["deviceType"], "default");
    }
    let conv = wait_events(&server, "CONVERTER", &id_of(&converter), "DEBUG_CONVERTER", 3);
    let first = conv.last().unwrap();
    assert_eq!(first["body"]["inMessageType"], "TEXT");
    assert_eq!(first["body"]["in"], SEED_PAYLOAD);
    assert_eq!(first["body"]["outMessageType"], "JSON");
    let out: Value = serde_json::from_str(first["body"]["out"].as_str().unwrap()).unwrap();
    assert_eq!(out["deviceName"], "SN-001");
    assert_eq!(out["telemetry"]["temperature"], 25.7);
    let metadata: Value = serde_json::from_str(first["body"]["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(metadata["site"], "north");
    assert_eq!(metadata["integrationName"], "i");

    // debugIn: the latest converter input, for "Test payload decoder".
    let debug_in = server.api("GET", &format!("/api/converter/{}/debugIn", id_of(&converter)), None);
    assert_eq!(debug_in["inContentType"], "BINARY");
    assert_eq!(debug_in["inContent"], "U04tMDAzLGRlZmF1bHQsdCwy");
    assert_eq!(debug_in["inMetadata"]["site"], "north");
}

#[test]
fn event_texts_are_cut_and_debug_all_is_capped() {
    let server = Server::start();
    let far = coapgate_storage::now_millis() + 24 * 3600 * 1000;
    let converter = server.create_converter("c", "return {deviceName: 'long', telemetry: {n: payload.length}};");
    let integration = server.create_integration(
        "i",
        &converter,
        json!({"debugSettings": {"failuresEnabled": true, "allEnabled": true, "allEnabledUntil": far}}),
    );
    let until = integration["debugSettings"]["allEnabledUntil"].as_i64().unwrap();
    let cap = coapgate_storage::now_millis() + 15 * 60 * 1000;
    assert!(until <= cap && until > cap - 60_000, "allEnabledUntil {until} not capped to 15 minutes");

    let payload = "x".repeat(5000);
    assert_eq!(send(&server, &integration, payload.as_bytes(), Some(0)), Code::CREATED);
    let e = wait_events(&server, "INTEGRATION", &id_of(&integration), "DEBUG_INTEGRATION", 1);
    assert_eq!(e[0]["body"]["message"].as_str().unwrap().chars().count(), 4096);
}

#[test]
fn lifecycle_and_statistics() {
    let server = Server::start();
    let mut integration = server.seed_integration();
    let iid = id_of(&integration);
    let started = wait_events(&server, "INTEGRATION", &iid, "LC_EVENT", 1);
    assert_eq!(started[0]["body"]["event"], "STARTED");
    assert_eq!(started[0]["body"]["success"], true);

    for _ in 0..3 {
        assert_eq!(send(&server, &integration, SEED_PAYLOAD.as_bytes(), Some(0)), Code::CREATED);
    }
    assert_eq!(send(&server, &integration, b"", Some(0)), Code::BAD_REQUEST, "empty payload is not an uplink");
    integration["name"] = json!("renamed");
    let integration = server.api("POST", "/api/integration", Some(integration));
    let lc = wait_events(&server, "INTEGRATION", &iid, "LC_EVENT", 2);
    assert_eq!(lc[0]["body"]["event"], "UPDATED");

    let mut disabled = integration.clone();
    disabled["enabled"] = json!(false);
    server.api("POST", "/api/integration", Some(disabled));
    let lc = wait_events(&server, "INTEGRATION", &iid, "LC_EVENT", 3);
    assert_eq!(lc[0]["body"]["event"], "STOPPED");
    let stats = wait_events(&server, "INTEGRATION", &iid, "STATS", 1);
    assert_eq!(stats[0]["body"]["messagesProcessed"], 3);
    assert_eq!(stats[0]["body"]["errorsOccurred"], 0);
}

#[test]
fn paging_time_range_and_filters() {
    let server = Server::start();
    let converter = server.create_converter("c", "if (payload[0] == 69) throw new Error('E payload'); return {deviceName: 'p'};");
    let integration = server.create_integration("i", &converter, json!({"debugSettings": debug_all()}));
    let iid = id_of(&integration);
    let before = coapgate_storage::now_millis();
    for p in ["a", "E", "b", "E", "c"] {
        send(&server, &integration, p.as_bytes(), Some(0));
    }
    wait_events(&server, "INTEGRATION", &iid, "DEBUG_INTEGRATION", 5);

    let page = server.api("GET", &format!("/api/events/INTEGRATION/{iid}/DEBUG_INTEGRATION?pageSize=2&page=0"), None);
    assert_eq!((page["totalElements"].as_u64(), page["totalPages"].as_u64(), page["hasNext"].as_bool()), (Some(5), Some(3), Some(true)));
    let future = coapgate_storage::now_millis() + 60_000;
    let page = server.api("GET", &format!("/api/events/INTEGRATION/{iid}/DEBUG_INTEGRATION?pageSize=10&page=0&startTime={future}"), None);
    assert_eq!(page["totalElements"], 0);
    let page = server.api(
        "GET",
        &format!("/api/events/INTEGRATION/{iid}/DEBUG_INTEGRATION?pageSize=10&page=0&startTime={before}&endTime={future}"),
        None,
    );
    assert_eq!(page["totalElements"], 5);

    let filtered = |filter: Value| -> u64 {
        server.api("POST", &format!("/api/events/INTEGRATION/{iid}?pageSize=10&page=0"), Some(filter))["totalElements"].as_u64().unwrap()
    };
    assert_eq!(filtered(json!({"eventType": "DEBUG_INTEGRATION", "status": "ERROR"})), 2);
    assert_eq!(filtered(json!({"eventType": "DEBUG_INTEGRATION", "status": "OK"})), 3);
    assert_eq!(filtered(json!({"eventType": "DEBUG_INTEGRATION", "isError": true})), 2);
    assert_eq!(filtered(json!({"eventType": "DEBUG_INTEGRATION", "errorStr": "E payload"})), 2);
    assert_eq!(filtered(json!({"eventType": "DEBUG_INTEGRATION", "errorStr": "nothing like it"})), 0);

    let (status, body) = server.request(
        "GET",
        &format!("/api/events/INTEGRATION/{iid}/NOT_A_TYPE?pageSize=10&page=0"),
        None,
        Some(&server.token()),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.request("POST", &format!("/api/events/INTEGRATION/{iid}"), Some(json!({})), Some(&server.token()));
    assert_eq!(status, 400);
}

#[test]
fn official_python_client_test_uplink_and_events() {
    let server = Server::start();
    run_python_flow(&server, "tb_rest_client_events.py", "echo -n 'E-1,7.25' | coap-client-notls -m post {endpoint} -t text/plain -f-");
}
