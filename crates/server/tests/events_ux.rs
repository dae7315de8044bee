//! Events that add up (issue 16), through the REST API the console uses: events dropped by the
//! per-entity rate cap are counted per entity and reported, the error filter finds exactly the
//! failed uplinks, and the integrations' message counters follow an uplink within a second.

mod common;

use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, MessageType};
use common::*;
use serde_json::{Value, json};

fn debug_all() -> Value {
    json!({"failuresEnabled": true, "allEnabled": true, "allEnabledUntil": coapgate_storage::now_millis() + 300_000})
}

/// The total of a filtered event query (`POST /api/events/...`).
fn filtered(server: &Server, entity_type: &str, id: &str, filter: Value) -> Value {
    server.api("POST", &format!("/api/events/{entity_type}/{id}?pageSize=1000&page=0"), Some(filter))
}

fn total(page: &Value) -> u64 {
    page["totalElements"].as_u64().unwrap()
}

/// Sends `n` NON requests as fast as the socket takes them and returns how many were answered.
fn burst(server: &Server, integration: &Value, n: usize, payload: &[u8]) -> usize {
    let mut client = CoapClient::new(server.coap);
    client.socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let path = endpoint_path(integration);
    for _ in 0..n {
        let m = client.build(MessageType::NonConfirmable, Code::POST, &path, payload);
        client.send(&m);
    }
    let mut answered = 0;
    while answered < n {
        match client.receive() {
            Some(r) if !r.code.is_empty() => answered += 1,
            Some(_) => {}
            None => break,
        }
    }
    answered
}

fn dropped(server: &Server, entity_type: &str, id: &str, range: &str) -> Value {
    server.api("GET", &format!("/api/coapgate/events/{entity_type}/{id}/dropped{range}"), None)
}

#[test]
fn events_over_the_rate_cap_are_counted_and_reported_per_entity() {
    let server = Server::start();
    let before_burst = coapgate_storage::now_millis();
    let quiet = server.seed_integration();
    let converter = server.create_converter("thrower", "throw new Error('cannot parse ' + payload.length);");
    let failing = server.create_integration("failing", &converter, json!({}));
    let fid = id_of(&failing);
    std::thread::sleep(Duration::from_millis(1100));
    let burst_start = coapgate_storage::now_millis();
    // Every uplink fails, so every one tries to record a debug event (failures are recorded by
    // default); far more than the cap of 100 a second.
    let answered = burst(&server, &failing, 400, b"x");
    assert!(answered > 200, "only {answered} of 400 uplinks were answered");

    // Every failed uplink's integration event was either stored or counted as dropped.
    let report = eventually(Duration::from_secs(5), || {
        let stored = total(&filtered(&server, "INTEGRATION", &fid, json!({"eventType": "DEBUG_INTEGRATION"})));
        let report = dropped(&server, "INTEGRATION", &fid, "");
        let dropped = report["dropped"].as_u64().unwrap();
        (stored + dropped == answered as u64).then_some(report)
    })
    .unwrap_or_else(|| {
        panic!(
            "stored + dropped != {answered}: stored {}, report {}",
            total(&filtered(&server, "INTEGRATION", &fid, json!({"eventType": "DEBUG_INTEGRATION"}))),
            dropped(&server, "INTEGRATION", &fid, "")
        )
    });
    assert!(report["dropped"].as_u64().unwrap() >= 100, "a burst of {answered} in a few seconds drops events: {report}");
    assert_eq!(report["rateCapPerSecond"], 100, "{report}");
    assert_eq!(report["scope"], "node", "{report}");
    assert_eq!(report["entityId"]["entityType"], "INTEGRATION");
    assert_eq!(report["dropped"], report["rateLimited"].as_u64().unwrap() + report["queueFull"].as_u64().unwrap());

    // The converter's own events are capped and counted for the converter.
    let converter_report = dropped(&server, "CONVERTER", &id_of(&converter), "");
    assert!(converter_report["dropped"].as_u64().unwrap() > 0, "{converter_report}");

    // Per entity: the quiet integration dropped nothing.
    assert_eq!(dropped(&server, "INTEGRATION", &id_of(&quiet), "")["dropped"], 0);
    // Per period: nothing was dropped in a period that ended before the burst (whole minutes
    // count, so the period must end a minute before the burst's minute).
    let minute_before = (burst_start / 60_000) * 60_000 - 1;
    let early = dropped(&server, "INTEGRATION", &fid, &format!("?startTime={}&endTime={minute_before}", before_burst - 3_600_000));
    assert_eq!(early["dropped"], 0, "{early}");
    let during = dropped(&server, "INTEGRATION", &fid, &format!("?startTime={burst_start}&endTime={}", coapgate_storage::now_millis()));
    assert_eq!(during["dropped"], report["dropped"], "{during}");
    let (status, _) = server.request("GET", "/api/coapgate/events/INTEGRATION/not-a-uuid/dropped", None, Some(&server.token()));
    assert_eq!(status, 400);
}

#[test]
fn the_error_filter_returns_exactly_the_failed_uplinks() {
    let server = Server::start();
    let converter = server.api(
        "POST",
        "/api/converter",
        Some(json!({"name": "json", "type": "UPLINK", "debugSettings": debug_all(),
                    "configuration": {"scriptLang": "JS",
                        "decoder": "var d = JSON.parse(decodeToString(payload)); return {deviceName: d.name, telemetry: {t: d.t}};"}})),
    );
    let integration = server.create_integration("json", &converter, json!({"debugSettings": debug_all()}));
    let (iid, cid) = (id_of(&integration), id_of(&converter));
    let mut client = CoapClient::new(server.coap);
    let path = endpoint_path(&integration);
    assert_eq!(client.post(&path, br#"{"name":"d1","t":21}"#), Code::CREATED);
    assert_eq!(client.post(&path, b"not json"), Code::BAD_REQUEST, "the converter throws");
    assert_eq!(client.post(&path, br#"{"t":22}"#), Code::BAD_REQUEST, "no deviceName");
    assert_eq!(client.post(&path, br#"{"name":"d1","t":23}"#), Code::CREATED);

    let all = eventually(Duration::from_secs(5), || {
        let page = filtered(&server, "INTEGRATION", &iid, json!({"eventType": "DEBUG_INTEGRATION"}));
        (total(&page) == 4).then_some(page)
    })
    .expect("four debug events");
    let failed_in_debug: Vec<&Value> = all["data"].as_array().unwrap().iter().filter(|e| e["body"]["status"] == "ERROR").collect();
    assert_eq!(failed_in_debug.len(), 2);

    for filter in [
        json!({"eventType": "DEBUG_INTEGRATION", "isError": true}),
        json!({"eventType": "DEBUG_INTEGRATION", "statusIntegration": "ERROR"}),
    ] {
        let errors = filtered(&server, "INTEGRATION", &iid, filter.clone());
        let rows = errors["data"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{filter}: {errors}");
        assert!(rows.iter().all(|e| e["body"]["status"] == "ERROR" && e["body"]["error"].as_str().is_some_and(|t| !t.is_empty())));
        let messages: Vec<&str> = rows.iter().map(|e| e["body"]["message"].as_str().unwrap()).collect();
        // No Content-Format: BINARY, shown as Base64 of {"t":22} and of "not json".
        assert_eq!(messages, ["eyJ0IjoyMn0=", "bm90IGpzb24="], "newest first, the rows the Debug view shows as ERROR");
    }
    let ok = filtered(&server, "INTEGRATION", &iid, json!({"eventType": "DEBUG_INTEGRATION", "isError": false}));
    assert_eq!(total(&ok), 2);
    // The converter saw one failure of its own (the output without deviceName is its success).
    let converter_errors = filtered(&server, "CONVERTER", &cid, json!({"eventType": "DEBUG_CONVERTER", "isError": true}));
    assert_eq!(total(&converter_errors), 1, "{converter_errors}");
    assert_eq!(converter_errors["data"][0]["body"]["in"], "bm90IGpzb24=");
    // ThingsBoard's ERROR events are a component's own failures, not failed uplinks: the
    // console's Error view adds the failed uplinks to them (see js/events.js).
    assert_eq!(total(&filtered(&server, "INTEGRATION", &iid, json!({"eventType": "ERROR"}))), 0);
}

fn counts_in_list(server: &Server, id: &str) -> (u64, u64) {
    let page = server.api("GET", "/api/integrationInfos?pageSize=100&page=0", None);
    let row = page["data"].as_array().unwrap().iter().find(|i| i["id"]["id"] == id).expect("listed").clone();
    (row["messages24h"]["processed"].as_u64().unwrap(), row["messages24h"]["errors"].as_u64().unwrap())
}

fn counts_of(server: &Server, id: &str) -> (u64, u64) {
    let i = server.api("GET", &format!("/api/integration/{id}"), None);
    (i["messages24h"]["processed"].as_u64().unwrap(), i["messages24h"]["errors"].as_u64().unwrap())
}

/// Polls the list until `want`, for at most `limit`; returns how long it took.
fn until_counts(server: &Server, id: &str, want: (u64, u64), limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = counts_in_list(server, id);
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "counts {got:?}, expected {want:?} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn message_counters_follow_an_uplink_within_a_second() {
    let server = Server::start();
    let integration = server.seed_integration();
    let iid = id_of(&integration);
    assert_eq!(counts_in_list(&server, &iid), (0, 0));
    assert_eq!(counts_of(&server, &iid), (0, 0));
    let mut client = CoapClient::new(server.coap);
    let path = endpoint_path(&integration);
    assert_eq!(client.post(&path, SEED_PAYLOAD.as_bytes()), Code::CREATED);
    until_counts(&server, &iid, (1, 0), Duration::from_secs(1));
    assert_eq!(counts_of(&server, &iid), (1, 0));
    // A failure counts as processed and as an error, as in ThingsBoard's STATS events.
    assert_eq!(client.post(&path, b""), Code::BAD_REQUEST);
    assert_eq!(client.post(&path, SEED_PAYLOAD.as_bytes()), Code::CREATED);
    // The empty payload is refused before the integration, so only the second one counts.
    until_counts(&server, &iid, (2, 0), Duration::from_secs(1));

    let converter = server.create_converter("thrower", "throw new Error('no');");
    let failing = server.create_integration("failing", &converter, json!({}));
    assert_eq!(client.post(&endpoint_path(&failing), b"x"), Code::BAD_REQUEST);
    until_counts(&server, &id_of(&failing), (1, 1), Duration::from_secs(1));
    // The list's one request a second for all its rows says the same.
    let both = server.api("GET", &format!("/api/coapgate/integrations/messages24h?ids={iid},{}", id_of(&failing)), None);
    assert_eq!(both[&iid], json!({"processed": 2, "errors": 0}), "{both}");
    assert_eq!(both[&id_of(&failing)], json!({"processed": 1, "errors": 1}), "{both}");
    let (status, _) = server.request("GET", "/api/coapgate/integrations/messages24h?ids=nope", None, Some(&server.token()));
    assert_eq!(status, 400);

    // Stopping the integration stores its counters as a STATS event: the counts stay the same
    // (not lost, not doubled) while the event is written and after.
    let mut disabled = server.api("GET", &format!("/api/integration/{iid}"), None);
    disabled["enabled"] = json!(false);
    server.api("POST", "/api/integration", Some(disabled));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(counts_in_list(&server, &iid), (2, 0));
    }
    let stats = filtered(&server, "INTEGRATION", &iid, json!({"eventType": "STATS"}));
    let stored: u64 = stats["data"].as_array().unwrap().iter().map(|e| e["body"]["messagesProcessed"].as_u64().unwrap()).sum();
    assert_eq!(stored, 2, "the counters were stored: {stats}");
    assert_eq!(counts_of(&server, &iid), (2, 0));
}
