//! Issue #16, forms that help, in a real browser (`tests/browser/forms.mjs`): a converter
//! whose script does not compile is saved and flagged at its line, a missing name is said next
//! to the field, the test dialog starts from the last uplink, unsaved edits are asked about
//! before they are lost, and the page and dialog fit a phone.

mod common;

use std::time::Duration;

use common::browser::*;
use common::*;
use serde_json::json;

#[test]
fn converter_editor_flags_problems_and_guards_edits() {
    let server = Server::start();
    let before = server.api("GET", "/api/converters?pageSize=100&page=0", None)["totalElements"].as_u64().unwrap();
    run_browser("forms.mjs", &server, &[("PART", "editor".into())]);
    // The browser saved the broken script (no "nothing saved" for a syntax error), then the
    // fix, then deleted the converter; the empty name saved nothing: no converter is left.
    let after = server.api("GET", "/api/converters?pageSize=100&page=0", None);
    assert_eq!(after["totalElements"].as_u64().unwrap(), before, "{after}");
}

#[test]
fn test_dialog_starts_from_the_last_uplink_and_fits_a_phone() {
    let server = Server::start();
    let (converter, integration) = seed_with_debug(&server);
    let quiet = server.create_converter("Quiet Converter", SEED_DECODER);
    let payload = "SN-016,default,temperature,21.5,humidity,40";
    let out = shell(&format!("coap-client-notls -m post {} -t text/plain -e '{payload}'", endpoint(&integration)));
    assert!(out.status.success(), "coap-client: {}", String::from_utf8_lossy(&out.stderr));
    eventually(Duration::from_secs(5), || server.device("SN-016")).expect("SN-016 stored");
    let id = converter["id"]["id"].as_str().unwrap().to_string();
    // The debug event the dialog reads is written by the events recorder, a moment later.
    eventually(Duration::from_secs(5), || {
        let last = server.api("GET", &format!("/api/converter/{id}/debugIn"), None);
        (last["inContent"] == json!(payload)).then_some(())
    })
    .expect("the uplink's debug event");
    run_browser(
        "forms.mjs",
        &server,
        &[
            ("PART", "prefill".into()),
            ("CONVERTER_ID", id),
            ("QUIET_CONVERTER_ID", quiet["id"]["id"].as_str().unwrap().to_string()),
            ("ROUTING_KEY", integration["routingKey"].as_str().unwrap().to_string()),
            ("PAYLOAD", payload.into()),
            ("DEVICE", "SN-016".into()),
        ],
    );
}
