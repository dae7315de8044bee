//! The console's Events tab, counters and charts in a real browser (issue 16): the Error view
//! shows the failed uplinks, a burst's dropped events are said, the list's counter follows an
//! uplink, the debug banner's button works, charts read 24-hour times with a second axis for
//! wildly different ranges, and a phone's Events tab does not scroll sideways. The browser side
//! is `tests/browser/events_ux.mjs`.

mod common;

use std::time::Duration;

use coapgate_coap::message::{Code, MessageType, option};
use common::browser::*;
use common::*;
use serde_json::{Value, json};

const JSON_DECODER: &str =
    "var d = JSON.parse(decodeToString(payload)); return {deviceName: d.name, telemetry: d.telemetry};";

fn post_text(client: &mut CoapClient, integration: &Value, payload: &str) -> Code {
    let mut m = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(integration), payload.as_bytes());
    m.set_uint_option(option::CONTENT_FORMAT, 0);
    client.exchange(&m).code
}

#[test]
fn events_tab_errors_drops_counters_debug_banner_and_charts() {
    let server = Server::start();
    let converter = server.create_converter("json converter", JSON_DECODER);
    let integration = server.create_integration("json", &converter, json!({}));
    let mut client = CoapClient::new(server.coap);
    assert_eq!(post_text(&mut client, &integration, "not json"), Code::BAD_REQUEST);
    assert_eq!(post_text(&mut client, &integration, r#"{"t":22}"#), Code::BAD_REQUEST);

    // A burst far above the per-entity cap of 100 events a second, all failing.
    let thrower = server.create_converter("thrower", "throw new Error('cannot parse this payload at all');");
    let burst = server.create_integration("burst", &thrower, json!({}));
    let path = endpoint_path(&burst);
    for _ in 0..400 {
        let m = client.build(MessageType::NonConfirmable, Code::POST, &path, b"x");
        client.send(&m);
    }
    let bid = burst["id"]["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), || {
        let r = server.api("GET", &format!("/api/coapgate/events/INTEGRATION/{bid}/dropped"), None);
        (r["dropped"].as_u64().unwrap() >= 100).then_some(())
    })
    .expect("the burst dropped events");

    run_browser(
        "events_ux.mjs",
        &server,
        &[
            ("JSON_INTEGRATION_ID", integration["id"]["id"].as_str().unwrap().to_string()),
            ("BURST_INTEGRATION_ID", bid),
            ("CONVERTER_ID", converter["id"]["id"].as_str().unwrap().to_string()),
            ("ENDPOINT", endpoint(&integration)),
        ],
    );
    // What the button did is what the server holds.
    let saved = server.api("GET", &format!("/api/integration/{}", integration["id"]["id"].as_str().unwrap()), None);
    assert_eq!(saved["debugSettings"]["allEnabled"], true, "{saved}");
    let saved = server.api("GET", &format!("/api/converter/{}", converter["id"]["id"].as_str().unwrap()), None);
    assert_eq!(saved["debugSettings"]["allEnabled"], true, "{saved}");
    assert_eq!(saved["configuration"]["decoder"], JSON_DECODER, "the rest of the converter is kept");
    assert!(server.device("CH-1").is_some());
}
