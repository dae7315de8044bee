//! The console's entity pages in a real browser (`tests/browser/entities.mjs`): customers and
//! devices created, edited, assigned and deleted, attributes added, related entities shown by
//! name, and the lists' sorting, page numbers and empty states, on a desktop and a phone.

mod common;

use common::browser::*;
use common::*;
use serde_json::json;

/// Devices made through the API before the browser starts, so the list has several pages.
const BULK: usize = 25;

#[test]
fn entities_are_managed_in_the_console() {
    let server = Server::start();
    for n in 0..BULK {
        server.api("POST", "/api/device", Some(json!({"name": format!("Bulk-{n:02}"), "type": "bulk"})));
    }
    // And one the seed tutorial's integration creates, whose page names that integration.
    let (_, integration) = seed_with_debug(&server);
    let out = shell(&format!("echo -e 'SN-001,default,temperature,25.7' | coap-client-notls -m post {} -t text/plain -f-", endpoint(&integration)));
    assert!(out.status.success(), "coap-client: {}", String::from_utf8_lossy(&out.stderr));
    server.device("SN-001").expect("SN-001 created by the uplink");
    run_browser("entities.mjs", &server, &[("BULK", BULK.to_string())]);
    // What the person did in the browser is what the API holds.
    let customer = server.api("GET", "/api/tenant/customers?customerTitle=Acme%20Corp", None);
    let id = customer["id"]["id"].as_str().unwrap();
    let attributes = server.api("GET", &format!("/api/plugins/telemetry/CUSTOMER/{id}/values/attributes/SERVER_SCOPE"), None);
    assert_eq!(attributes[0]["key"], "tier");
    assert_eq!(attributes[0]["value"], "gold");
    assert!(server.device("Thermo-1").is_none(), "the device deleted in the browser is gone");
    assert_eq!(server.api("GET", "/api/tenant/devices?pageSize=1&page=0", None)["totalElements"], BULK + 1);
}
