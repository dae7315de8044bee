//! `coapgate remote` against a real platform on loopback: the seed tutorial through a remote,
//! live configuration, refusals (wrong secret, not remote, deleted), a disabled integration, a
//! full outbox, a configuration changed while the remote was away, a remote restarted while the
//! platform is down, and TLS with a test CA.

mod common;

use std::time::Duration;

use coapgate_coap::message::{Code, MessageType, option};
use common::*;
use serde_json::{Value, json};

const RPC_ENV: [(&str, &str); 2] = [("INTEGRATIONS_RPC_ENABLED", "true"), ("INTEGRATIONS_RPC_BIND_ADDRESS", "127.0.0.1")];

/// A platform with its gRPC endpoint on `rpc_port` (0: any).
fn platform_on(dir: impl Into<DataDir>, rpc_port: u16, extra: &[(&str, &str)]) -> Server {
    let port = rpc_port.to_string();
    let mut env: Vec<(&str, &str)> = RPC_ENV.to_vec();
    env.push(("INTEGRATIONS_RPC_PORT", &port));
    env.extend_from_slice(extra);
    let server = Server::start_in(dir, &env, &[]);
    assert!(server.rpc.is_some(), "no remotes line in the banner: {}", server.stdout_text());
    server
}

/// The seed converter and a remote integration on the platform; returns the integration.
fn remote_integration(platform: &Server, decoder: &str) -> Value {
    let converter = platform.create_converter("CoAP Uplink Converter", decoder);
    platform.create_integration("CoAP Integration", &converter, json!({"remote": true}))
}

fn key_and_secret(integration: &Value) -> (String, String) {
    (integration["routingKey"].as_str().unwrap().to_string(), integration["secret"].as_str().unwrap().to_string())
}

fn start_remote(platform: &Server, integration: &Value, env: &[(&str, &str)]) -> Remote {
    let (key, secret) = key_and_secret(integration);
    Remote::start_in(temp_dir("remote"), platform.rpc.unwrap().port(), &key, &secret, env)
}

fn integration_id(integration: &Value) -> String {
    integration["id"]["id"].as_str().unwrap().to_string()
}

/// The integration as the REST API shows it now (with `remoteStatus`).
fn status(platform: &Server, integration: &Value) -> Value {
    platform.api("GET", &format!("/api/integration/{}", integration_id(integration)), None)["remoteStatus"].clone()
}

fn post(remote: &Remote, integration: &Value, payload: &str) -> Code {
    let mut client = CoapClient::new(remote.coap);
    client.post(&endpoint_path(integration), payload.as_bytes())
}

/// The seed tutorial with `coap-client-notls` against the remote; the data lands on the
/// platform; the converter edited on the platform runs on the remote within a second.
#[test]
fn the_seed_tutorial_through_a_remote_and_live_converter_changes() {
    let platform = platform_on(temp_dir("platform"), 0, &[]);
    let integration = remote_integration(&platform, SEED_DECODER);
    // The platform itself does not serve a remote integration's devices.
    assert_eq!(CoapClient::new(platform.coap).post(&endpoint_path(&integration), SEED_PAYLOAD.as_bytes()), Code::NOT_FOUND);
    // The command-line form of SPEC 8 (the other tests use ThingsBoard's environment names).
    let (key, secret) = key_and_secret(&integration);
    let platform_url = format!("grpc://127.0.0.1:{}", platform.rpc.unwrap().port());
    let remote = Remote::start_with_args(temp_dir("remote"), &[], &["--platform", &platform_url, "--routing-key", &key, "--secret", &secret]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));

    let url = format!("coap://127.0.0.1:{}/{}", remote.coap.port(), endpoint_path(&integration).join("/"));
    let out = shell(&format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {url} -t text/plain -f-"));
    assert!(out.status.success(), "coap-client failed: {}", String::from_utf8_lossy(&out.stderr));
    let device = eventually(Duration::from_secs(10), || platform.device("SN-001")).expect("SN-001 on the platform");
    assert_eq!(device["type"], "default");
    let latest = platform.latest(&device);
    assert_eq!(latest["temperature"], "25.7");
    assert_eq!(latest["humidity"], "69");

    let s = eventually(Duration::from_secs(5), || Some(status(&platform, &integration)).filter(|s| s["storedTotal"] == 1))
        .unwrap_or_else(|| panic!("status never counted the uplink: {}", status(&platform, &integration)));
    assert_eq!(s["connected"], true);
    assert_eq!(s["serviceId"], "edge-test");
    assert!(s["lastSeen"].as_i64().unwrap() > 0);
    let list = platform.api("GET", "/api/integrationInfos?pageSize=10&page=0", None);
    assert_eq!(list["data"][0]["status"]["connected"], true, "the list view shows it too: {list}");

    // The remote's events appear under the integration and its converter.
    let id = integration_id(&integration);
    let events = eventually(Duration::from_secs(5), || {
        let page = platform.api("GET", &format!("/api/events/INTEGRATION/{id}/LC_EVENT?pageSize=10&page=0"), None);
        page["data"].as_array().filter(|d| !d.is_empty()).cloned()
    })
    .expect("the remote's lifecycle event on the platform");
    assert_eq!(events[0]["body"]["server"], "edge-test");

    // Edit the converter on the platform: the remote runs the new one within a second.
    let converter_id = integration["defaultConverterId"]["id"].as_str().unwrap();
    let mut converter = platform.api("GET", &format!("/api/converter/{converter_id}"), None);
    let edited = SEED_DECODER.replace("attributes: {}", "attributes: {edited: true}");
    converter["configuration"]["decoder"] = json!(edited);
    platform.api("POST", "/api/converter", Some(converter));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(post(&remote, &integration, "SN-002,default,temperature,1"), Code::CREATED);
    let device = eventually(Duration::from_secs(10), || platform.device("SN-002")).expect("SN-002 on the platform");
    let id = device["id"]["id"].as_str().unwrap();
    let attributes = platform.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/attributes/CLIENT_SCOPE"), None);
    assert_eq!(attributes[0]["key"], "edited", "the edited converter ran on the remote: {attributes}");
}

#[test]
fn a_wrong_secret_is_refused_and_logged_without_the_secret() {
    let platform = platform_on(temp_dir("platform"), 0, &[]);
    let integration = remote_integration(&platform, SEED_DECODER);
    let (key, _) = key_and_secret(&integration);
    let wrong = "wrong-secret-value-123";
    let remote = Remote::start_in(temp_dir("remote"), platform.rpc.unwrap().port(), &key, wrong, &[]);
    remote.wait_for("WRONG_SECRET", Duration::from_secs(20));
    assert!(!remote.output_text().contains(wrong), "the remote logged the secret");
    // Without any configuration it serves nothing.
    assert_eq!(post(&remote, &integration, SEED_PAYLOAD), Code::NOT_FOUND);
    let s = status(&platform, &integration);
    assert_eq!(s["connected"], false);
    assert!(s["lastError"].as_str().unwrap().contains("wrong secret"), "{s}");
    let id = integration_id(&integration);
    let errors = platform.api("GET", &format!("/api/events/INTEGRATION/{id}/ERROR?pageSize=10&page=0"), None);
    let text = errors["data"][0]["body"]["error"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("wrong secret") && text.contains("edge-test"), "{errors}");
    assert!(!errors.to_string().contains(wrong));
}

/// Regenerating the secret ends the old remote's link; an integration that is not remote, or
/// is deleted, is refused and its remote stops serving it.
#[test]
fn secret_changes_deletion_and_disabling_reach_a_linked_remote() {
    let platform = platform_on(temp_dir("platform"), 0, &[]);
    let integration = remote_integration(&platform, SEED_DECODER);
    let remote = start_remote(&platform, &integration, &[]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    assert_eq!(post(&remote, &integration, SEED_PAYLOAD), Code::CREATED);

    // Disabled: the remote answers 4.04 like the platform would; enabled again: 2.01.
    let mut edited = integration.clone();
    edited["enabled"] = json!(false);
    let saved = platform.api("POST", "/api/integration", Some(edited));
    assert!(
        eventually(Duration::from_secs(5), || (post(&remote, &integration, SEED_PAYLOAD) == Code::NOT_FOUND).then_some(())).is_some(),
        "a disabled integration's remote still served"
    );
    let mut enabled = saved.clone();
    enabled["enabled"] = json!(true);
    let saved = platform.api("POST", "/api/integration", Some(enabled));
    assert!(eventually(Duration::from_secs(5), || (post(&remote, &integration, SEED_PAYLOAD) == Code::CREATED).then_some(())).is_some());

    // A new secret ends the link of the remote with the old one.
    let mut regenerated = saved.clone();
    regenerated["secret"] = json!("a-brand-new-secret-0");
    platform.api("POST", "/api/integration", Some(regenerated));
    remote.wait_for("SECRET_CHANGED", Duration::from_secs(10));
    assert!(eventually(Duration::from_secs(5), || (status(&platform, &integration)["connected"] == false).then_some(())).is_some());

    // Deleted: a remote with the right secret is refused and stops serving.
    let second = platform.create_integration(
        "second",
        &platform.create_converter("second", SEED_DECODER),
        json!({"remote": true}),
    );
    let other = start_remote(&platform, &second, &[]);
    other.wait_for("linked to the platform", Duration::from_secs(20));
    assert_eq!(post(&other, &second, SEED_PAYLOAD), Code::CREATED);
    let (status_code, _) = platform.request("DELETE", &format!("/api/integration/{}", integration_id(&second)), None, Some(&platform.token()));
    assert_eq!(status_code, 200);
    other.wait_for("DELETED", Duration::from_secs(10));
    assert_eq!(post(&other, &second, SEED_PAYLOAD), Code::NOT_FOUND);
}

/// A remote restarted while the platform is down ingests at once with the configuration it
/// kept; a converter changed while the remote was away runs once it links again.
#[test]
fn offline_start_and_configuration_changed_while_away() {
    let rpc_port = free_tcp_port();
    let platform = platform_on(temp_dir("platform"), rpc_port, &[]);
    let integration = remote_integration(&platform, SEED_DECODER);
    let remote = start_remote(&platform, &integration, &[]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    let remote_dir = remote.kill();

    // Changed while the remote is away.
    let converter_id = integration["defaultConverterId"]["id"].as_str().unwrap();
    let mut converter = platform.api("GET", &format!("/api/converter/{converter_id}"), None);
    converter["configuration"]["decoder"] = json!(SEED_DECODER.replace("attributes: {}", "attributes: {version: 2}"));
    platform.api("POST", "/api/converter", Some(converter));
    let platform_dir = platform.kill();

    // The platform is down: the remote starts on what it kept and answers 2.01 at once.
    let (key, secret) = key_and_secret(&integration);
    let remote = Remote::start_in(remote_dir, rpc_port, &key, &secret, &[]);
    assert!(remote.output_text().contains("with the configuration of the last link"), "{}", remote.output_text());
    assert_eq!(post(&remote, &integration, "OFF-1,default,temperature,1"), Code::CREATED);

    // The platform comes back: the waiting uplink is stored (old converter: no attribute), and
    // the converter changed meanwhile runs from the link on.
    let platform = platform_on(platform_dir, rpc_port, &[]);
    remote.wait_for("linked to the platform", Duration::from_secs(30));
    let off = eventually(Duration::from_secs(10), || platform.device("OFF-1")).expect("the offline uplink stored");
    assert_eq!(platform.history_len(&off, "temperature"), 1);
    assert_eq!(post(&remote, &integration, "ON-1,default,temperature,2"), Code::CREATED);
    let on = eventually(Duration::from_secs(10), || platform.device("ON-1")).expect("ON-1 stored");
    let id = on["id"]["id"].as_str().unwrap();
    let attributes = platform.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/attributes/CLIENT_SCOPE"), None);
    assert_eq!(attributes[0]["key"], "version", "{attributes}");
}

/// A full outbox answers 5.03 with Max-Age and keeps everything it acknowledged.
#[test]
fn a_full_outbox_answers_5_03_and_loses_nothing() {
    let rpc_port = free_tcp_port();
    let platform = platform_on(temp_dir("platform"), rpc_port, &[]);
    let integration = remote_integration(&platform, SEED_DECODER);
    let remote = start_remote(&platform, &integration, &[("REMOTE_OUTBOX_MAX_BYTES", "2000")]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    let platform_dir = platform.kill();

    let mut client = CoapClient::new(remote.coap);
    let path = endpoint_path(&integration);
    let mut acknowledged = Vec::new();
    let mut refused = false;
    for n in 0..200 {
        let payload = format!("FULL-{n},default,temperature,{n}");
        let mut request = client.build(MessageType::Confirmable, Code::POST, &path, payload.as_bytes());
        request.add_option(option::CONTENT_FORMAT, vec![]);
        let answer = client.exchange(&request);
        if answer.code == Code::CREATED {
            acknowledged.push(n);
        } else {
            assert_eq!(answer.code, Code::SERVICE_UNAVAILABLE);
            assert!(answer.get_option(option::MAX_AGE).is_some(), "5.03 carries Max-Age");
            refused = true;
            break;
        }
    }
    assert!(refused, "a 2000-byte outbox never filled");
    assert!(!acknowledged.is_empty());

    let platform = platform_on(platform_dir, rpc_port, &[]);
    for n in &acknowledged {
        let device = eventually(Duration::from_secs(20), || platform.device(&format!("FULL-{n}")))
            .unwrap_or_else(|| panic!("acknowledged uplink FULL-{n} not stored"));
        assert_eq!(platform.history_len(&device, "temperature"), 1);
    }
    let refused_name = format!("FULL-{}", acknowledged.len());
    assert!(platform.device(&refused_name).is_none(), "the refused uplink was stored");
    // Room again once the platform took the backlog.
    assert!(eventually(Duration::from_secs(10), || (post(&remote, &integration, "AFTER,default,t,1") == Code::CREATED).then_some(())).is_some());
}

/// TLS with a test CA: the remote trusts the CA given in RPC_SSL_CERT and nothing else.
#[test]
fn tls_with_a_test_ca() {
    let dir = temp_dir("rpc-tls");
    let d = dir.display();
    let out = shell(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>&1 && \
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>&1 && \
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>&1 && \
         openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=other-ca 2>&1"
    ));
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stdout));
    let cert = format!("{d}/server.pem");
    let key = format!("{d}/server.key");
    let platform = platform_on(
        temp_dir("platform"),
        0,
        &[("INTEGRATIONS_RPC_SSL_ENABLED", "true"), ("INTEGRATIONS_RPC_SSL_CERT", &cert), ("INTEGRATIONS_RPC_SSL_PRIVATE_KEY", &key)],
    );
    let integration = remote_integration(&platform, SEED_DECODER);
    let ca = format!("{d}/ca.pem");
    let remote = start_remote(&platform, &integration, &[("RPC_SSL_ENABLED", "true"), ("RPC_SSL_CERT", &ca), ("RPC_HOST", "localhost")]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    assert_eq!(post(&remote, &integration, SEED_PAYLOAD), Code::CREATED);
    assert!(eventually(Duration::from_secs(10), || platform.device("SN-001")).is_some());

    // Trusting another CA: no link. Plain text to a TLS port: no link either.
    let other = format!("{d}/other.pem");
    let untrusting = start_remote(&platform, &integration, &[("RPC_SSL_ENABLED", "true"), ("RPC_SSL_CERT", &other), ("RPC_HOST", "localhost")]);
    let plain = start_remote(&platform, &integration, &[]);
    untrusting.wait_for("platform unreachable", Duration::from_secs(20));
    plain.wait_for("platform unreachable", Duration::from_secs(20));
    assert_eq!(untrusting.count("linked to the platform"), 0);
    assert_eq!(plain.count("linked to the platform"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// DTLS with a pre-shared key at the remote, with libcoap's `coap-client-openssl`: the remote
/// serves the integration's PSK identities as the platform would.
#[test]
fn dtls_psk_at_the_remote() {
    let dir = temp_dir("remote-dtls");
    let d = dir.display();
    let out = shell(&format!(
        "cd {d} && openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>&1 && \
         openssl req -x509 -new -key server.key -days 2 -subj /CN=localhost -out server.pem 2>&1"
    ));
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stdout));
    let platform = platform_on(temp_dir("platform"), 0, &[]);
    let converter = platform.create_converter("psk converter", SEED_DECODER);
    let client = json!({"baseUrl": "coap://127.0.0.1", "securityMode": "DTLS", "psk": [{"identity": "edge-dev", "key": "edge-key"}]});
    let integration = platform.create_integration("psk", &converter, json!({"remote": true, "configuration": {"clientConfiguration": client, "metadata": {}}}));
    let (cert, key) = (format!("{d}/server.pem"), format!("{d}/server.key"));
    let remote = start_remote(
        &platform,
        &integration,
        &[
            ("COAP_DTLS_ENABLED", "true"),
            ("COAP_DTLS_BIND_ADDRESS", "127.0.0.1"),
            ("COAP_DTLS_BIND_PORT", "0"),
            ("COAP_DTLS_CREDENTIALS_TYPE", "PEM"),
            ("COAP_DTLS_PEM_CERT", &cert),
            ("COAP_DTLS_PEM_KEY", &key),
        ],
    );
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    let url = format!("coaps://127.0.0.1:{}/i/{}", remote.dtls.unwrap().port(), integration["routingKey"].as_str().unwrap());
    let send = |identity: &str, secret: &str, device: &str| {
        let out = shell(&format!("coap-client-openssl -m post {url} -u {identity} -k {secret} -B 5 -t text/plain -e '{device},default,temperature,3'"));
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let printed = send("edge-dev", "edge-key", "PSK-1");
    assert!(eventually(Duration::from_secs(10), || platform.device("PSK-1")).is_some(), "PSK-1 not stored; coap-client printed: {printed}");
    send("edge-dev", "not-the-key", "PSK-2");
    std::thread::sleep(Duration::from_secs(1));
    assert!(platform.device("PSK-2").is_none(), "a wrong key reached the platform");
    let _ = std::fs::remove_dir_all(dir);
}

/// Records are stored in the order the remote took them, also when the platform's writer queue
/// is full and most of them are answered RETRY at first: each record creates its own device, and
/// the devices' creation times follow the records' order.
#[test]
fn records_keep_their_order_through_retries() {
    let rpc_port = free_tcp_port();
    // A writer queue of 2 and one record per commit: a backlog of 300 meets a full queue.
    let tight = [("WRITER_QUEUE_CAPACITY", "2"), ("WRITER_MAX_BATCH", "1")];
    let platform = platform_on(temp_dir("platform"), rpc_port, &tight);
    let integration = remote_integration(&platform, SEED_DECODER);
    let remote = start_remote(&platform, &integration, &[]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    let platform_dir = platform.kill();
    // One client, so every request has its own Message ID (new sockets may get a port back
    // that an earlier one used, and the same Message ID from it would be a duplicate).
    let mut client = CoapClient::new(remote.coap);
    for n in 0..300 {
        assert_eq!(client.post(&endpoint_path(&integration), format!("ORD-{n},default,t,{n}").as_bytes()), Code::CREATED);
    }
    let platform = platform_on(platform_dir, rpc_port, &tight);
    let last = eventually(Duration::from_secs(60), || platform.device("ORD-299")).expect("the backlog stored");
    let mut created = Vec::new();
    for n in 0..300 {
        let device = eventually(Duration::from_secs(20), || platform.device(&format!("ORD-{n}"))).unwrap_or_else(|| {
            panic!("ORD-{n} missing; status {}; remote:\n{}", status(&platform, &integration), remote.output_text())
        });
        created.push(device["createdTime"].as_i64().unwrap());
    }
    assert_eq!(created[299], last["createdTime"].as_i64().unwrap());
    for n in 1..300 {
        assert!(created[n - 1] <= created[n], "ORD-{} was created after ORD-{n}: {} > {}", n - 1, created[n - 1], created[n]);
    }
}
