//! The console's device page fed by the WebSocket API, in a real browser
//! (`tests/browser/live_telemetry.mjs`): an uplink's values appear without a reload and without
//! polling.

mod common;

use common::browser::*;
use common::*;

#[test]
fn device_page_updates_over_the_websocket() {
    let server = Server::start();
    let (_, integration) = seed_with_debug(&server);
    let out = shell(&format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {} -t text/plain -f-", endpoint(&integration)));
    assert!(out.status.success(), "coap-client: {}", String::from_utf8_lossy(&out.stderr));
    let device = server.device("SN-001").expect("SN-001 created by the uplink");
    run_browser(
        "live_telemetry.mjs",
        &server,
        &[("DEVICE_ID", device["id"]["id"].as_str().unwrap().to_string()), ("ENDPOINT", endpoint(&integration))],
    );
}
