//! The DTLS endpoint with real peers: libcoap's `coap-client-openssl` and `coap-client-gnutls`
//! in certificate mode (verifying the server with `-R ca.pem`) and PSK mode, against server
//! credentials made here by `openssl` and `keytool` (PEM, PKCS#12 old and new, JKS); the
//! security modes, PSK scoping, client certificate validity, start-up errors and a ClientHello
//! flood.

mod common;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Credentials made once per test run.
struct Creds {
    dir: PathBuf,
}

impl Creds {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn run(dir: &Path, command: &str) {
    let out = Command::new("bash").arg("-c").arg(command).current_dir(dir).output().expect("bash");
    if out.status.code() == Some(127) {
        panic!("`{command}`: a tool is missing: run .ci/run (it installs openssl and a JRE for keytool)");
    }
    assert!(out.status.success(), "`{command}` failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn creds() -> &'static Creds {
    static CREDS: OnceLock<Creds> = OnceLock::new();
    CREDS.get_or_init(|| {
        let dir = temp_dir("dtls-creds");
        let san = "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext";
        for command in [
            san,
            // EC CA and server certificate.
            "openssl ecparam -name prime256v1 -genkey -noout -out ca.key",
            "openssl req -x509 -new -key ca.key -days 3650 -subj '/CN=coapgate test EC CA' -out ca.pem",
            "openssl ecparam -name prime256v1 -genkey -noout -out server.key",
            "openssl req -new -key server.key -subj /CN=localhost -out server.csr",
            "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -extfile san.ext -out server.pem",
            "cat server.pem ca.pem > server-chain.pem",
            // RSA CA and server certificate, the key encrypted.
            "openssl genrsa -out rsa-ca.key 2048",
            "openssl req -x509 -new -key rsa-ca.key -days 3650 -subj '/CN=coapgate test RSA CA' -out rsa-ca.pem",
            "openssl genrsa -out rsa-server.key 2048",
            "openssl pkey -in rsa-server.key -aes256 -passout pass:pem-secret -out rsa-server-enc.key",
            "openssl req -new -key rsa-server.key -subj /CN=localhost -out rsa-server.csr",
            "openssl x509 -req -in rsa-server.csr -CA rsa-ca.pem -CAkey rsa-ca.key -CAcreateserial -days 365 -extfile san.ext -out rsa-server.pem",
            // PKCS#12: current encryption (AES, PBKDF2) and the legacy one (RC2-40, 3DES).
            "openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name serveralias -passout pass:store-secret -out server.p12",
            "openssl pkcs12 -export -legacy -in rsa-server.pem -inkey rsa-server.key -certfile rsa-ca.pem -name serveralias -passout pass:store-secret -out rsa-legacy.p12",
            // JKS from the PKCS#12, with a key password of its own, as ThingsBoard's docs make it.
            "keytool -importkeystore -srckeystore server.p12 -srcstoretype PKCS12 -srcstorepass store-secret \
             -destkeystore server.jks -deststoretype JKS -deststorepass store-secret -destkeypass key-secret \
             -srcalias serveralias -destalias serveralias -noprompt",
            // A JKS made by keytool alone (RSA, self-signed), its certificate the client's trust root.
            "keytool -genkeypair -keyalg RSA -keysize 2048 -alias serveralias -dname CN=localhost \
             -ext san=ip:127.0.0.1,dns:localhost -validity 365 -storetype JKS -keystore keytool.jks \
             -storepass store-secret -keypass store-secret -noprompt",
            "keytool -exportcert -rfc -alias serveralias -keystore keytool.jks -storepass store-secret -file keytool-ca.pem",
        ] {
            run(&dir, command);
        }
        // Client certificates signed by the EC CA: valid, expired, not yet valid.
        for (name, from_days, to_days) in [("client", -1, 30), ("client-expired", -30, -1), ("client-future", 2, 30)] {
            client_certificate(&dir, name, from_days, to_days);
        }
        Creds { dir }
    })
}

fn client_certificate(dir: &Path, name: &str, from_days: i64, to_days: i64) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509, X509NameBuilder};
    let ca_key = PKey::private_key_from_pem(&std::fs::read(dir.join("ca.key")).unwrap()).unwrap();
    let ca = X509::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()).unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now + from_days * 86_400).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to_days * 86_400).unwrap()).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), b.build().to_pem().unwrap()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
}

/// A server with the DTLS endpoint on a free port and the given credentials settings.
fn dtls_server(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("COAP_DTLS_ENABLED", "true"), ("COAP_DTLS_BIND_ADDRESS", "127.0.0.1"), ("COAP_DTLS_BIND_PORT", "0")];
    all.extend_from_slice(env);
    let server = Server::start_with(&all, &[]);
    assert!(server.dtls.is_some(), "no DTLS line in the banner: {}", server.stdout_text());
    server
}

fn pem_server() -> Server {
    let c = creds();
    dtls_server(&[
        ("COAP_DTLS_CREDENTIALS_TYPE", "PEM"),
        ("COAP_DTLS_PEM_CERT", &c.path("server-chain.pem")),
        ("COAP_DTLS_PEM_KEY", &c.path("server.key")),
    ])
}

/// An integration with the seed converter, the given security mode and PSK list.
fn integration(server: &Server, name: &str, mode: &str, psk: Value) -> Value {
    let converter = server.create_converter(&format!("{name} converter"), SEED_DECODER);
    let mut client = json!({"baseUrl": format!("coap://127.0.0.1:{}", server.coap.port()), "securityMode": mode});
    if !psk.is_null() {
        client["psk"] = psk;
    }
    server.create_integration(name, &converter, json!({"configuration": {"clientConfiguration": client, "metadata": {}}}))
}

fn coaps_url(server: &Server, integration: &Value) -> String {
    let key = integration["routingKey"].as_str().unwrap();
    format!("coaps://127.0.0.1:{}/i/{key}", server.dtls.unwrap().port())
}

fn coap_url(server: &Server, integration: &Value) -> String {
    let key = integration["routingKey"].as_str().unwrap();
    format!("coap://127.0.0.1:{}/i/{key}", server.coap.port())
}

/// POSTs `device`'s seed-style payload with a libcoap client; returns what it printed.
fn post(tool: &str, url: &str, device: &str, args: &str) -> String {
    let command = format!("echo -n '{device},default,temperature,21.5' | timeout 30 {tool} -m post '{url}' -f- -B 4 {args} 2>&1");
    let out = shell(&command);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stored(server: &Server, device: &str) -> bool {
    eventually(Duration::from_secs(3), || server.device(device)).is_some()
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = ureq::get(&format!("{}/metrics", server.http)).call().unwrap().into_string().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
}

const CLIENTS: [&str; 2] = ["coap-client-openssl", "coap-client-gnutls"];

#[test]
fn certificate_interop_with_every_kind_of_server_credentials() {
    let c = creds();
    let (ec_chain, ec_key, rsa_cert, rsa_key) =
        (c.path("server-chain.pem"), c.path("server.key"), c.path("rsa-server.pem"), c.path("rsa-server-enc.key"));
    let (p12, legacy, jks, keytool_jks) = (c.path("server.p12"), c.path("rsa-legacy.p12"), c.path("server.jks"), c.path("keytool.jks"));
    // (name, environment, CA file the clients verify the server with)
    type Kind<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);
    let kinds: Vec<Kind> = vec![
        (
            "pem-ec",
            vec![("COAP_DTLS_CREDENTIALS_TYPE", "PEM"), ("COAP_DTLS_PEM_CERT", &ec_chain), ("COAP_DTLS_PEM_KEY", &ec_key)],
            c.path("ca.pem"),
        ),
        (
            "pem-rsa-encrypted",
            vec![
                ("COAP_DTLS_CREDENTIALS_TYPE", "PEM"),
                ("COAP_DTLS_PEM_CERT", &rsa_cert),
                ("COAP_DTLS_PEM_KEY", &rsa_key),
                ("COAP_DTLS_PEM_KEY_PASSWORD", "pem-secret"),
            ],
            c.path("rsa-ca.pem"),
        ),
        (
            "p12-ec",
            vec![("COAP_DTLS_KEY_STORE", &p12), ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret")],
            c.path("ca.pem"),
        ),
        (
            "p12-rsa-legacy",
            vec![
                ("COAP_DTLS_KEY_STORE", &legacy),
                ("COAP_DTLS_KEY_STORE_TYPE", "PKCS12"),
                ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret"),
            ],
            c.path("rsa-ca.pem"),
        ),
        (
            "jks-ec",
            vec![
                ("COAP_DTLS_KEY_STORE", &jks),
                ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret"),
                ("COAP_DTLS_KEY_PASSWORD", "key-secret"),
            ],
            c.path("ca.pem"),
        ),
        (
            "jks-keytool-rsa",
            vec![
                ("COAP_DTLS_KEY_STORE", &keytool_jks),
                ("COAP_DTLS_KEY_STORE_TYPE", "JKS"),
                ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret"),
            ],
            c.path("keytool-ca.pem"),
        ),
    ];
    for (kind, env, ca) in kinds {
        let server = dtls_server(&env);
        let dtls = integration(&server, kind, "DTLS", Value::Null);
        let url = coaps_url(&server, &dtls);
        for tool in CLIENTS {
            let device = format!("{kind}-{tool}");
            let printed = post(tool, &url, &device, &format!("-R {ca}"));
            assert!(stored(&server, &device), "{kind}: {tool} -R {ca} did not store {device}; it printed: {printed}");
        }
        assert_eq!(metric(&server, "coapgate_dtls_handshakes_total{result=\"ok\"}"), 2, "{kind}");
    }
}

#[test]
fn psk_interop_scoping_and_wrong_keys() {
    let server = pem_server();
    let a = integration(&server, "A", "DTLS", json!([{"identity": "dev-a", "key": "secret-a"}, {"identity": "dev-hex", "key": "0x6b6579"}]));
    let b = integration(&server, "B", "MIXED", json!([{"identity": "dev-b", "key": "secret-b"}]));
    let (url_a, url_b) = (coaps_url(&server, &a), coaps_url(&server, &b));
    for tool in CLIENTS {
        let device = format!("psk-{tool}");
        let printed = post(tool, &url_a, &device, "-u dev-a -k secret-a");
        assert!(stored(&server, &device), "{tool} PSK: {printed}");
        // A key given in hex in the integration ("0x6b6579" = "key").
        let device = format!("psk-hex-{tool}");
        let printed = post(tool, &url_a, &device, "-u dev-hex -k key");
        assert!(stored(&server, &device), "{tool} PSK hex key: {printed}");
        // A's identity cannot reach B.
        let device = format!("psk-scope-{tool}");
        let printed = post(tool, &url_b, &device, "-u dev-a -k secret-a");
        assert!(printed.contains("4.03"), "{tool}: A's identity posting to B: {printed}");
        let printed = post(tool, &url_b, &format!("psk-b-{tool}"), "-u dev-b -k secret-b");
        assert!(stored(&server, &format!("psk-b-{tool}")), "{tool}: B's own identity: {printed}");
    }
    let ok_before = metric(&server, "coapgate_dtls_handshakes_total{result=\"ok\"}");
    for tool in CLIENTS {
        let device = format!("wrong-psk-{tool}");
        let printed = post(tool, &url_a, &device, "-u dev-a -k not-the-key -B 2");
        assert!(!printed.contains("2.01"), "{tool}: {printed}");
        let printed = post(tool, &url_a, &device, "-u nobody -k secret-a -B 2");
        assert!(!printed.contains("2.01"), "{tool}: {printed}");
        assert!(server.device(&device).is_none(), "{tool}: a wrong PSK stored data");
    }
    assert_eq!(metric(&server, "coapgate_dtls_handshakes_total{result=\"ok\"}"), ok_before, "a wrong PSK completed a handshake");

    // PSK lists are checked when saved: the field is named, identities are unique.
    let converter = server.create_converter("C converter", SEED_DECODER);
    for (psk, needle) in [
        (json!([{"identity": "x"}]), "psk[0].key"),
        (json!([{"identity": "x", "key": "0xZZ"}]), "psk[0].key"),
        (json!("dev-a:secret"), "clientConfiguration.psk"),
        (json!([{"identity": "dev-b", "key": "other"}]), "dev-b"),
    ] {
        let body = json!({"name": "C", "type": "COAP", "defaultConverterId": converter["id"],
            "configuration": {"clientConfiguration": {"securityMode": "DTLS", "psk": psk}, "metadata": {}}});
        let (status, reply) = server.request("POST", "/api/integration", Some(body), Some(&server.token()));
        assert_eq!(status, 400, "{psk}: {reply}");
        assert!(reply["message"].as_str().unwrap_or_default().contains(needle), "{psk}: {reply}");
    }
}

#[test]
fn security_modes_over_each_endpoint() {
    let server = pem_server();
    let ca = creds().path("ca.pem");
    let plain = integration(&server, "plain", "NO_SECURE", Value::Null);
    let secure = integration(&server, "secure", "DTLS", Value::Null);
    let mixed = integration(&server, "mixed", "MIXED", Value::Null);
    let endpoint = secure["configuration"]["clientConfiguration"]["dtlsCoapEndpoint"].as_str().unwrap();
    assert!(endpoint.starts_with("coaps://") && endpoint.ends_with(&format!("/i/{}", secure["routingKey"].as_str().unwrap())), "{endpoint}");
    for tool in CLIENTS {
        let printed = post(tool, &coaps_url(&server, &plain), &format!("nosecure-{tool}"), &format!("-R {ca}"));
        assert!(printed.contains("4.00") && printed.contains("No secure connection is not allowed"), "{tool}: {printed}");
        let device = format!("mixed-dtls-{tool}");
        post(tool, &coaps_url(&server, &mixed), &device, &format!("-R {ca}"));
        assert!(stored(&server, &device), "{tool} over DTLS to MIXED");
    }
    let printed = post("coap-client-notls", &coap_url(&server, &secure), "plain-to-dtls", "");
    assert!(printed.contains("4.00") && printed.contains("Secure connection is required"), "{printed}");
    post("coap-client-notls", &coap_url(&server, &mixed), "mixed-plain", "");
    assert!(stored(&server, "mixed-plain"));
    for device in ["nosecure-coap-client-openssl", "plain-to-dtls"] {
        assert!(server.device(device).is_none(), "{device} was stored");
    }
}

#[test]
fn client_certificates_must_be_valid_unless_the_check_is_skipped() {
    let c = creds();
    let ca = c.path("ca.pem");
    let with_cert = |name: &str| format!("-R {ca} -c {} -j {}", c.path(&format!("{name}.pem")), c.path(&format!("{name}.key")));
    let strict = pem_server();
    let dtls = integration(&strict, "certs", "DTLS", Value::Null);
    let url = coaps_url(&strict, &dtls);
    for tool in CLIENTS {
        let device = format!("valid-cert-{tool}");
        let printed = post(tool, &url, &device, &with_cert("client"));
        assert!(stored(&strict, &device), "{tool} with a valid client certificate: {printed}");
        for bad in ["client-expired", "client-future"] {
            let device = format!("{bad}-{tool}");
            let printed = post(tool, &url, &device, &format!("{} -B 2", with_cert(bad)));
            assert!(!printed.contains("2.01"), "{tool} {bad}: {printed}");
            assert!(strict.device(&device).is_none(), "{tool}: {bad} certificate was accepted");
        }
    }
    assert!(metric(&strict, "coapgate_dtls_handshakes_total{result=\"failed\"}") >= 4);
    drop(strict);

    let lenient = dtls_server(&[
        ("COAP_DTLS_CREDENTIALS_TYPE", "PEM"),
        ("COAP_DTLS_PEM_CERT", &c.path("server-chain.pem")),
        ("COAP_DTLS_PEM_KEY", &c.path("server.key")),
        ("TB_COAP_X509_DTLS_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT", "true"),
    ]);
    let dtls = integration(&lenient, "certs", "DTLS", Value::Null);
    let url = coaps_url(&lenient, &dtls);
    for tool in CLIENTS {
        let device = format!("expired-skip-{tool}");
        let printed = post(tool, &url, &device, &with_cert("client-expired"));
        assert!(stored(&lenient, &device), "{tool} expired certificate with the skip flag: {printed}");
    }
}

#[test]
fn credential_errors_stop_start_up_with_one_line_naming_the_setting() {
    let c = creds();
    let (jks, p12, legacy, missing) = (c.path("server.jks"), c.path("server.p12"), c.path("rsa-legacy.p12"), c.path("missing.jks"));
    let (ca_pem, ec_cert, ec_key, rsa_key) = (c.path("ca.pem"), c.path("server.pem"), c.path("server.key"), c.path("rsa-server-enc.key"));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("COAP_DTLS_KEY_STORE", &jks), ("COAP_DTLS_KEY_STORE_PASSWORD", "wrong")], "COAP_DTLS_KEY_STORE_PASSWORD"),
        (
            vec![("COAP_DTLS_KEY_STORE", &jks), ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret"), ("COAP_DTLS_KEY_PASSWORD", "wrong")],
            "COAP_DTLS_KEY_PASSWORD",
        ),
        (
            vec![
                ("COAP_DTLS_KEY_STORE", &jks),
                ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret"),
                ("COAP_DTLS_KEY_PASSWORD", "key-secret"),
                ("COAP_DTLS_KEY_ALIAS", "other"),
            ],
            "COAP_DTLS_KEY_ALIAS",
        ),
        (vec![("COAP_DTLS_KEY_STORE", &p12), ("COAP_DTLS_KEY_STORE_PASSWORD", "wrong")], "COAP_DTLS_KEY_STORE_PASSWORD"),
        (vec![("COAP_DTLS_KEY_STORE", &legacy), ("COAP_DTLS_KEY_STORE_PASSWORD", "wrong")], "COAP_DTLS_KEY_STORE_PASSWORD"),
        (
            vec![("COAP_DTLS_KEY_STORE", &p12), ("COAP_DTLS_KEY_STORE_PASSWORD", "store-secret"), ("COAP_DTLS_KEY_ALIAS", "other")],
            "COAP_DTLS_KEY_ALIAS",
        ),
        (vec![("COAP_DTLS_KEY_STORE", &missing)], "COAP_DTLS_KEY_STORE"),
        (vec![("COAP_DTLS_KEY_STORE", &ca_pem)], "COAP_DTLS_KEY_STORE"),
        (
            vec![("COAP_DTLS_CREDENTIALS_TYPE", "PEM"), ("COAP_DTLS_PEM_CERT", &missing), ("COAP_DTLS_PEM_KEY", &ec_key)],
            "COAP_DTLS_PEM_CERT",
        ),
        (
            vec![("COAP_DTLS_CREDENTIALS_TYPE", "PEM"), ("COAP_DTLS_PEM_CERT", &ec_cert), ("COAP_DTLS_PEM_KEY", &rsa_key), ("COAP_DTLS_PEM_KEY_PASSWORD", "wrong")],
            "COAP_DTLS_PEM_KEY_PASSWORD",
        ),
        (
            vec![("COAP_DTLS_CREDENTIALS_TYPE", "PEM"), ("COAP_DTLS_PEM_CERT", &ec_cert), ("COAP_DTLS_PEM_KEY", &rsa_key), ("COAP_DTLS_PEM_KEY_PASSWORD", "pem-secret")],
            "COAP_DTLS_PEM_KEY",
        ),
        (vec![("COAP_DTLS_CREDENTIALS_TYPE", "PEM")], "COAP_DTLS_PEM_CERT"),
    ];
    let data_dir = temp_dir("dtls-startup");
    for (env, setting) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coapgate"));
        cmd.arg("serve")
            .env("COAPGATE_DATA_DIR", &data_dir)
            .env("HTTP_BIND_ADDRESS", "127.0.0.1")
            .env("HTTP_BIND_PORT", "0")
            .env("COAP_BIND_ADDRESS", "127.0.0.1")
            .env("COAP_BIND_PORT", "0")
            .env("COAP_DTLS_ENABLED", "true")
            .env("COAP_DTLS_BIND_ADDRESS", "127.0.0.1")
            .env("COAP_DTLS_BIND_PORT", "0")
            .env("COAPGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{env:?}: the server started");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: expected one line, got {stderr}");
        assert!(lines[0].starts_with(&format!("error: {setting}:")), "{env:?}: {}", lines[0]);
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The in-memory datagram pipe under an OpenSSL client, to make real ClientHello records.
#[derive(Default)]
struct Pipe {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}
impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let d = self.inbox.pop_front().ok_or(ErrorKind::WouldBlock)?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
}
impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn client_hello() -> Vec<u8> {
    use openssl::ssl::{Ssl, SslContext, SslMethod, SslStream};
    let ctx = SslContext::builder(SslMethod::dtls_client()).unwrap().build();
    let mut ssl = Ssl::new(&ctx).unwrap();
    ssl.set_connect_state();
    let mut stream = SslStream::new(ssl, Pipe::default()).unwrap();
    let _ = stream.do_handshake();
    stream.get_mut().outbox.remove(0)
}

#[test]
fn a_client_hello_flood_does_not_stop_legitimate_clients() {
    let server = pem_server();
    let ca = creds().path("ca.pem");
    let dtls = integration(&server, "flooded", "DTLS", Value::Null);
    let url = coaps_url(&server, &dtls);
    let target: SocketAddr = server.dtls.unwrap();
    let hello = client_hello();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flooder = {
        let (stop, sent, hello) = (stop.clone(), sent.clone(), hello.clone());
        std::thread::spawn(move || {
            // Many source ports, a few ClientHellos each, never answering the HelloVerifyRequest:
            // 10,000 per second, in bursts of 200 every 20 ms. (A flood faster than the server
            // can read drops datagrams in the kernel, legitimate ones too, whatever the server.)
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let burst = Instant::now();
                let sockets: Vec<UdpSocket> = (0..100).filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok()).collect();
                for _ in 0..2 {
                    for socket in &sockets {
                        if socket.send_to(&hello, target).is_ok() {
                            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20).saturating_sub(burst.elapsed()));
            }
        })
    };
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 10_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let printed = post("coap-client-openssl", &url, "during-flood", &format!("-R {ca}"));
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flooder.join().unwrap();
    eprintln!(
        "flood: sent {} ClientHellos, {} HelloVerifyRequests",
        sent.load(std::sync::atomic::Ordering::Relaxed),
        metric(&server, "coapgate_dtls_hello_verify_requests_total")
    );
    assert!(stored(&server, "during-flood"), "the legitimate client failed during the flood: {printed}");
    assert!(took < Duration::from_secs(3), "the legitimate client took {took:?} during the flood");
    let flood = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(flood >= 10_000, "{flood}");
    // Cookieless ClientHellos made no sessions: the only session is the legitimate client's.
    assert!(metric(&server, "coapgate_dtls_sessions") <= 1);
    assert!(metric(&server, "coapgate_dtls_hello_verify_requests_total") >= 5_000);
    eprintln!("flood: {flood} ClientHellos; the legitimate client posted in {took:?}");
}

/// `coapgate bench` with a coaps:// URL: one full handshake per simulated device (PSK, then
/// certificates), then every uplink over the established sessions, stored like any other.
#[test]
fn bench_runs_over_dtls_sessions_with_psk_and_certificates() {
    let server = pem_server();
    let integration = integration(&server, "Bench", "DTLS", json!([{"identity": "bench-id", "key": "0x62656e63686b6579"}]));
    let url = coaps_url(&server, &integration);
    let bench = |extra: &[&str], names: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coapgate"))
            .args(["bench", "--url", &url, "--devices", "12", "--in-flight", "4", "--count", "120", "--duration", "60", "--json"])
            .args(["--payload", &format!("{names}-{{name}},default,t,{{seq}}"), "--retransmit"])
            .args(extra)
            .output()
            .expect("coapgate bench");
        assert!(out.status.success(), "bench: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).expect("the JSON report");
        let h = &report["dtls_handshakes"];
        assert_eq!((h["completed"].as_u64(), h["failed"].as_u64()), (Some(12), Some(0)), "{report}");
        assert!(h["per_s"].as_f64().unwrap() > 0.0, "{report}");
        assert_eq!(report["codes"]["2.01"], json!(120), "every uplink answered 2.01 over DTLS: {report}");
        assert_eq!(report["timeouts"], json!(0), "{report}");
        report
    };
    bench(&["--psk", "bench-id:0x62656e63686b6579"], "psk");
    bench(&[], "cert");
    for device in ["psk-0", "psk-11", "cert-0", "cert-11"] {
        assert!(stored(&server, device), "{device} stored from the bench's DTLS uplinks");
    }
    // A wrong key: every handshake fails, nothing is sent, and the report says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench", "--url", &url, "--devices", "2", "--count", "10", "--timeout", "3", "--json"])
        .args(["--psk", "bench-id:wrong"])
        .output()
        .expect("coapgate bench");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the JSON report");
    assert_eq!(report["dtls_handshakes"]["failed"], json!(2), "{report}");
    assert_eq!(report["sent"], json!(0), "{report}");
}
