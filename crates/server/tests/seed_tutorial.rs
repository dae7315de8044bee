//! The seed tutorial, end to end, with the real `coap-client-notls` from libcoap.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn seed_tutorial_with_coap_client() {
    let server = Server::start();
    let integration = server.seed_integration();
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string();
    assert!(endpoint.starts_with(&format!("coap://127.0.0.1:{}/i/", server.coap.port())), "{endpoint}");

    let out = shell(&format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {endpoint} -t text/plain -f-"));
    assert!(out.status.success(), "coap-client failed: {}", String::from_utf8_lossy(&out.stderr));

    let device = server.device("SN-001").expect("device SN-001 created on first uplink");
    assert_eq!(device["type"], "default");
    let latest = server.latest(&device);
    assert_eq!(latest["temperature"], "25.7");
    assert_eq!(latest["humidity"], "69");
}

#[test]
fn demo_prints_a_command_that_works() {
    let server = Server::start_with(&[], &["--demo"]);
    let stdout = server.stdout_text();
    let command = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("echo -e"))
        .unwrap_or_else(|| panic!("no coap-client command in the banner: {stdout}"))
        .to_string();
    assert!(command.contains(&format!(":{}/i/", server.coap.port())), "{command}");
    let out = shell(&command);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let device = eventually(Duration::from_secs(5), || server.device("SN-001")).expect("SN-001");
    assert_eq!(device["type"], "default");
    let latest = server.latest(&device);
    assert_eq!((latest["temperature"].as_str(), latest["humidity"].as_str()), (Some("25.7"), Some("69")));
}

#[test]
fn official_python_client_flow() {
    let server = Server::start();
    let send = format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {{endpoint}} -t text/plain -f-");
    run_python_flow(&server, "tb_rest_client_flow.py", &send);
}
