//! The web console in a real browser: Debian's Chromium driven by `playwright-core` (node
//! scripts in `tests/browser/`), against the real binary. `.ci/run` installs both; without
//! them these tests fail and say so, rather than pass without having run.
//!
//! `SCREENSHOTS=1 cargo test -p coapgate --test console` also writes the README's screenshots
//! to `docs/screenshots/`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::*;
use common::*;
use serde_json::json;

#[test]
fn seed_tutorial_through_the_console() {
    let server = Server::start_with(&[("COAP_BASE_URL", "")], &[]);
    run_browser("seed_flow.mjs", &server, &[]);
    // What the person did in the browser is what the API holds.
    let device = server.device("SN-001").expect("SN-001 created by the uplink sent from the test");
    assert_eq!(server.history_len(&device, "temperature"), 5);
}

/// The same tutorial at 390×844: the menu folds away and no page scrolls sideways.
#[test]
fn seed_tutorial_on_a_phone() {
    let server = Server::start_with(&[("COAP_BASE_URL", "")], &[]);
    run_browser("seed_flow.mjs", &server, &[("VIEWPORT", "phone".into())]);
    let device = server.device("SN-001").expect("SN-001 created by the uplink sent from the test");
    assert_eq!(server.history_len(&device, "temperature"), 5);
}

/// The wizard's base URL is the server's view: `COAP_BASE_URL` when set (said so), else the
/// browser's host with the CoAP port (the tutorial flows above check that one).
#[test]
fn wizard_offers_the_configured_base_url() {
    // The harness gives every server COAP_BASE_URL=coap://127.0.0.1; this one has none.
    let plain = Server::start_with(&[("COAP_BASE_URL", "")], &[]);
    let settings = plain.api("GET", "/api/coapgate/coapSettings", None);
    assert_eq!(settings["coap"], json!({"enabled": true, "port": plain.coap.port(), "baseUrl": null}), "{settings}");
    assert_eq!(settings["dtls"]["enabled"], json!(false), "{settings}");
    assert_eq!(plain.request("GET", "/api/coapgate/coapSettings", None, None).0, 401, "only for a logged-in user");
    drop(plain);
    let server = Server::start_with(&[("COAP_BASE_URL", "coap://sensors.example.net:6001/")], &[]);
    let settings = server.api("GET", "/api/coapgate/coapSettings", None);
    assert_eq!(settings["coap"]["baseUrl"], json!("coap://sensors.example.net:6001"), "{settings}");
    run_browser("wizard_base_url.mjs", &server, &[("EXPECTED_BASE_URL", "coap://sensors.example.net:6001".into())]);
}

/// Every page at 360 px, the narrowest phones: no page scrolls sideways, dialogs fit.
#[test]
fn every_page_fits_a_narrow_phone() {
    let server = Server::start();
    let (converter, integration) = seed_with_debug(&server);
    let out = shell(&format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {} -t text/plain -f-", endpoint(&integration)));
    assert!(out.status.success(), "coap-client: {}", String::from_utf8_lossy(&out.stderr));
    let device = eventually(Duration::from_secs(5), || server.device("SN-001")).expect("SN-001");
    let customer = server.api("POST", "/api/customer", Some(json!({"title": "Narrow Customer"})));
    let id = |v: &serde_json::Value| v["id"]["id"].as_str().unwrap().to_string();
    run_browser(
        "every_page_narrow.mjs",
        &server,
        &[
            ("INTEGRATION_ID", id(&integration)),
            ("CONVERTER_ID", id(&converter)),
            ("DEVICE_ID", id(&device)),
            ("CUSTOMER_ID", id(&customer)),
        ],
    );
}

#[test]
fn device_data_is_shown_as_text() {
    let server = Server::start();
    let (converter, integration) = seed_with_debug(&server);
    let payload = "<img src=x onerror=alert(1)>,default,<script>alert(2)</script>,1,<b>bold</b>,2";
    let out = shell(&format!("echo -e '{payload}' | coap-client-notls -m post {} -t text/plain -f-", endpoint(&integration)));
    assert!(out.status.success(), "coap-client: {}", String::from_utf8_lossy(&out.stderr));
    eventually(Duration::from_secs(5), || server.device("<img src=x onerror=alert(1)>")).expect("the device with the HTML name");
    run_browser(
        "text_only.mjs",
        &server,
        &[
            ("INTEGRATION_ID", integration["id"]["id"].as_str().unwrap().to_string()),
            ("CONVERTER_ID", converter["id"]["id"].as_str().unwrap().to_string()),
            ("PAYLOAD", payload.to_string()),
        ],
    );
}

#[test]
fn ten_thousand_devices_page_on_the_server() {
    let server = Server::start();
    let (_, integration) = seed_with_debug(&server);
    let bench = Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench", "--url", &endpoint(&integration), "--devices", "100", "--count", "10000", "--duration", "300"])
        .args(["--payload", "D-{seq},default,t,1", "--retransmit"])
        .output()
        .expect("coapgate bench");
    assert!(bench.status.success(), "bench: {}", String::from_utf8_lossy(&bench.stderr));
    let total = eventually(Duration::from_secs(60), || {
        let page = server.api("GET", "/api/tenant/devices?pageSize=1&page=0", None);
        let n = page["totalElements"].as_u64().unwrap();
        (n >= 10_000).then_some(n)
    });
    assert_eq!(total, Some(10_000), "bench report: {}", String::from_utf8_lossy(&bench.stdout));
    run_browser("many_devices.mjs", &server, &[("DEVICE_COUNT", "10000".into())]);
}

#[test]
fn new_events_appear_without_a_reload() {
    let server = Server::start();
    let (converter, integration) = seed_with_debug(&server);
    run_browser(
        "live_events.mjs",
        &server,
        &[
            ("INTEGRATION_ID", integration["id"]["id"].as_str().unwrap().to_string()),
            ("CONVERTER_ID", converter["id"]["id"].as_str().unwrap().to_string()),
            ("ENDPOINT", endpoint(&integration)),
        ],
    );
}

#[test]
fn console_is_served_with_its_headers_and_leaves_the_api_alone() {
    let server = Server::start();
    let get = |path: &str| ureq::get(&format!("{}{path}", server.http)).call().map_err(|e| e.to_string());
    let index = get("/").expect("GET /");
    assert_eq!(index.content_type(), "text/html");
    let csp = index.header("content-security-policy").expect("a CSP").to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("http"), "{csp}");
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let body = index.into_string().unwrap();
    assert!(body.contains("/assets/js/main.js"));
    let js = get("/assets/js/main.js").expect("main.js");
    assert_eq!(js.content_type(), "text/javascript");
    let vendor = get("/assets/vendor/codemirror-5.65.20/codemirror.js").expect("codemirror");
    assert!(vendor.header("cache-control").unwrap().contains("immutable"));
    // API paths keep the API's answers.
    for path in ["/api/converters", "/api/nope", "/metrics", "/assets/nope.js", "/devices"] {
        let (status, body) = server.request("GET", path, None, None);
        match path {
            "/api/converters" => assert_eq!(status, 401, "{path}: {body}"),
            "/metrics" => assert_eq!(status, 200, "{path}"),
            _ => assert_eq!((status, body["errorCode"].as_u64()), (404, Some(32)), "{path}: {body}"),
        }
    }
}

#[test]
fn remote_integration_status_command_and_new_secret() {
    let port = free_tcp_port().to_string();
    let server = Server::start_with(
        &[("INTEGRATIONS_RPC_ENABLED", "true"), ("INTEGRATIONS_RPC_BIND_ADDRESS", "127.0.0.1"), ("INTEGRATIONS_RPC_PORT", &port)],
        &[],
    );
    let rpc = server.rpc.expect("the server prints its remotes line");
    assert_eq!(rpc.port().to_string(), port);
    assert_eq!(server.api("GET", "/api/coapgate/remoteSettings", None), json!({"enabled": true, "port": rpc.port(), "tls": false}));
    assert_eq!(server.request("GET", "/api/coapgate/remoteSettings", None, None).0, 401, "only for a logged-in user");
    let converter = server.create_converter("Edge Converter", SEED_DECODER);
    let integration = server.create_integration("Edge Integration", &converter, json!({"remote": true}));
    let (key, secret) = (integration["routingKey"].as_str().unwrap(), integration["secret"].as_str().unwrap());
    let remote = Remote::start_in(temp_dir("remote"), rpc.port(), key, secret, &[]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    let id = integration["id"]["id"].as_str().unwrap();
    run_browser(
        "remote_status.mjs",
        &server,
        &[
            ("INTEGRATION_ID", id.to_string()),
            ("INTEGRATION_NAME", "Edge Integration".into()),
            ("ROUTING_KEY", key.to_string()),
            ("SECRET", secret.to_string()),
            ("RPC_PORT", rpc.port().to_string()),
        ],
    );
    // What the person did is what the platform holds: a new secret, and the old one refused.
    let now = server.api("GET", &format!("/api/integration/{id}"), None);
    assert_ne!(now["secret"], integration["secret"]);
    assert_eq!(now["remoteStatus"]["connected"], json!(false), "{now}");
    remote.wait_for("the platform refused the link", Duration::from_secs(20));
}

#[test]
fn remote_integration_without_the_rpc_endpoint_says_so() {
    let server = Server::start();
    assert_eq!(server.api("GET", "/api/coapgate/remoteSettings", None), json!({"enabled": false, "port": 0, "tls": false}));
    let converter = server.create_converter("Edge Converter", SEED_DECODER);
    let integration = server.create_integration("Edge Integration", &converter, json!({"remote": true}));
    run_browser(
        "remote_status.mjs",
        &server,
        &[
            ("INTEGRATION_ID", integration["id"]["id"].as_str().unwrap().to_string()),
            ("INTEGRATION_NAME", "Edge Integration".into()),
            ("REMOTE_OFF", "1".into()),
        ],
    );
}
