//! The HTTP server under hostile clients (issue #13, findings 2, 9 and 10): slow and idle
//! connections are closed, at the connection cap newcomers take the place of idle connections
//! and requests in progress are never cut, HTTPS with ThingsBoard's `SSL_*` settings (PEM, PKCS#12, JKS), and input
//! limits that answer 400, never 500, and never store an over-long name.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use coapgate_coap::message::Code;
use common::{ADMIN_PASSWORD, ADMIN_USER, CoapClient, Server, endpoint_path, eventually, refused_start, temp_dir};
use openssl::ssl::{SslConnector, SslMethod};
use serde_json::{Value, json};

/// Far above any timeout a test configures: reaching it means the server did not act.
const GENEROUS: Duration = Duration::from_secs(10);

fn addr(server: &Server) -> String {
    server.http.split("://").nth(1).unwrap().to_string()
}

/// Sends one request (keep-alive) and reads one response by its Content-Length.
fn exchange<S: Read + Write>(stream: &mut S, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("X-Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    read_response(stream)
}

fn read_response(stream: &mut impl Read) -> std::io::Result<(u16, String)> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
        }
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// True when the server closes the connection (EOF or reset) before `GENEROUS` passes.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(GENEROUS)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let server = Server::start_with(&[("HTTP_HEADER_READ_TIMEOUT_MS", "600"), ("HTTP_KEEP_ALIVE_TIMEOUT_MS", "600")], &[]);
    let addr = addr(&server);

    // Connects and says nothing.
    let mut silent = TcpStream::connect(&addr).unwrap();
    // Trickles a request head, a byte every 100 ms: each byte is progress, the head never ends.
    let mut trickling = TcpStream::connect(&addr).unwrap();
    let mut writer = trickling.try_clone().unwrap();
    let started = Instant::now();
    let trickle = std::thread::spawn(move || {
        for byte in b"GET /api/auth/user HTTP/1.1\r\nX-Padding: ".iter().chain([b'a'; 200].iter()) {
            if writer.write_all(&[*byte]).is_err() || started.elapsed() > GENEROUS * 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Sends a request head at once, then only part of the body it announced.
    let mut slow_body = TcpStream::connect(&addr).unwrap();
    slow_body
        .write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")
        .unwrap();
    // Sends a request, gets its answer, then stays connected without a second one.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(GENEROUS)).unwrap();
    let (status, _) = exchange(&mut idle, "GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);

    assert!(closed_by_server(&mut silent), "a silent connection stayed open");
    assert!(closed_by_server(&mut trickling), "a trickling request head kept its connection");
    assert!(closed_by_server(&mut slow_body), "a request body that never ends kept its connection");
    assert!(closed_by_server(&mut idle), "an idle keep-alive connection stayed open");
    trickle.join().unwrap();

    // A keep-alive client that is not idle for long is served as before.
    let mut client = TcpStream::connect(&addr).unwrap();
    client.set_read_timeout(Some(GENEROUS)).unwrap();
    for _ in 0..3 {
        assert_eq!(exchange(&mut client, "GET", "/metrics", None, None).unwrap().0, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GENEROUS)).unwrap();
    s
}

/// True when the server has closed the connection; it sent nothing on it before.
fn is_closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let closed = !matches!(stream.read(&mut [0u8; 16]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn at_the_connection_cap_newcomers_take_the_place_of_idle_connections() {
    let server = Server::start_with(&[("HTTP_MAX_CONNECTIONS", "4")], &[]);
    let addr = addr(&server);
    // Ten silent connections against a cap of four (the timeouts are long: 20 s and 60 s).
    let silent: Vec<TcpStream> = (0..10).map(|_| connect(&addr)).collect();
    // Clients that send their request at once are served, in place of silent connections.
    for i in 0..3 {
        let (status, _) = exchange(&mut connect(&addr), "GET", "/metrics", None, None).unwrap_or_else(|e| panic!("newcomer {i}: {e}"));
        assert_eq!(status, 200, "newcomer {i}");
    }
    // At most three silent ones are still open: the server holds no more than its cap.
    let closed = eventually(GENEROUS, || {
        let closed = silent.iter().filter(|s| is_closed(s)).count();
        (closed >= 7).then_some(closed)
    });
    assert!(closed.is_some(), "the server kept more connections than HTTP_MAX_CONNECTIONS");
}

#[test]
fn when_every_connection_is_busy_newcomers_get_503_and_the_busy_are_served() {
    let server = Server::start_with(&[("HTTP_MAX_CONNECTIONS", "4")], &[]);
    let addr = addr(&server);
    // Four logins in progress: each has sent its head and part of its body.
    let login = json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD}).to_string();
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(&addr);
            let head = format!("POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", login.len());
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&login.as_bytes()[..10]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Nothing can make room: newcomers are turned away at once, never left waiting.
    for i in 0..10 {
        match exchange(&mut connect(&addr), "GET", "/metrics", None, None) {
            Ok((status, _)) => assert_eq!(status, 503, "newcomer {i} was served beyond the cap"),
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "newcomer {i} was left waiting: {e}"
            ),
        }
    }

    // The requests in progress are served, and their connections go on working.
    for s in &mut busy {
        s.write_all(&login.as_bytes()[10..]).unwrap();
        let (status, body) = read_response(s).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(exchange(s, "GET", "/metrics", None, None).unwrap().0, 200);
    }
    // Now idle, they make room for newcomers.
    let (status, _) = exchange(&mut connect(&addr), "GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
}

/// Credentials made once per test run with `openssl` and `keytool`.
fn creds() -> &'static PathBuf {
    static CREDS: OnceLock<PathBuf> = OnceLock::new();
    CREDS.get_or_init(|| {
        let dir = temp_dir("https-creds");
        for command in [
            "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext",
            "openssl ecparam -name prime256v1 -genkey -noout -out ca.key",
            "openssl req -x509 -new -key ca.key -days 3650 -subj '/CN=coapgate test HTTPS CA' -out ca.pem",
            "openssl ecparam -name prime256v1 -genkey -noout -out server.key",
            "openssl req -new -key server.key -subj /CN=localhost -out server.csr",
            "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -extfile san.ext -out server.pem",
            "openssl pkey -in server.key -aes256 -passout pass:pem-secret -out server-enc.key",
            // ThingsBoard's SSL_PEM_CERT may hold the key too.
            "cat server.pem server.key > server-with-key.pem",
            "openssl pkcs12 -export -in server.pem -inkey server.key -name tomcat -passout pass:store-secret -out server.p12",
            "keytool -importkeystore -srckeystore server.p12 -srcstoretype PKCS12 -srcstorepass store-secret \
             -destkeystore server.jks -deststoretype JKS -deststorepass store-secret -destkeypass key-secret \
             -srcalias tomcat -destalias tomcat -noprompt",
        ] {
            let out = Command::new("bash").arg("-c").arg(command).current_dir(&dir).output().expect("bash");
            if out.status.code() == Some(127) {
                panic!("`{command}`: a tool is missing: run .ci/run (it installs openssl and a JRE for keytool)");
            }
            assert!(out.status.success(), "`{command}` failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        dir
    })
}

fn cred(name: &str) -> String {
    creds().join(name).display().to_string()
}

/// Logs in over TLS, verifying the server against the test CA as `localhost`, then reads the
/// current user on the same connection.
fn https_login(server: &Server) -> Value {
    assert!(server.http.starts_with("https://"), "banner: {}", server.stdout_text());
    let mut connector = SslConnector::builder(SslMethod::tls_client()).unwrap();
    connector.set_ca_file(creds().join("ca.pem")).unwrap();
    let tcp = TcpStream::connect(addr(server)).unwrap();
    tcp.set_read_timeout(Some(GENEROUS)).unwrap();
    let mut tls = connector.build().connect("localhost", tcp).expect("TLS handshake with the test CA");
    let login = json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD}).to_string();
    let (status, body) = exchange(&mut tls, "POST", "/api/auth/login", Some(&login), None).unwrap();
    assert_eq!(status, 200, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"].as_str().unwrap().to_string();
    let (status, body) = exchange(&mut tls, "GET", "/api/auth/user", None, Some(&token)).unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn https_with_pem_credentials() {
    for env in [
        vec![("SSL_PEM_CERT", cred("server.pem")), ("SSL_PEM_KEY", cred("server.key"))],
        vec![("SSL_PEM_CERT", cred("server.pem")), ("SSL_PEM_KEY", cred("server-enc.key")), ("SSL_PEM_KEY_PASSWORD", "pem-secret".into())],
        vec![("SSL_PEM_CERT", cred("server-with-key.pem"))],
    ] {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend([("SSL_ENABLED", "true"), ("SSL_CREDENTIALS_TYPE", "PEM")]);
        let server = Server::start_with(&env, &[]);
        assert_eq!(https_login(&server)["email"], ADMIN_USER);
        // Plain HTTP on the HTTPS port gets no API answer.
        let mut plain = TcpStream::connect(addr(&server)).unwrap();
        plain.set_read_timeout(Some(GENEROUS)).unwrap();
        assert!(!matches!(exchange(&mut plain, "GET", "/metrics", None, None), Ok((200, _))));
    }
}

#[test]
fn https_with_pkcs12_and_jks_key_stores() {
    for (store, store_type, key_password) in [("server.p12", "PKCS12", ""), ("server.jks", "JKS", "key-secret"), ("server.jks", "", "key-secret")] {
        let store = cred(store);
        let server = Server::start_with(
            &[
                ("SSL_ENABLED", "true"),
                ("SSL_CREDENTIALS_TYPE", "KEYSTORE"),
                ("SSL_KEY_STORE", &store),
                ("SSL_KEY_STORE_TYPE", store_type),
                ("SSL_KEY_STORE_PASSWORD", "store-secret"),
                ("SSL_KEY_PASSWORD", key_password),
                ("SSL_KEY_ALIAS", "tomcat"),
            ],
            &[],
        );
        assert_eq!(https_login(&server)["email"], ADMIN_USER, "{store} {store_type}");
    }
}

#[test]
fn bad_ssl_settings_stop_start_up_naming_the_setting() {
    let (p12, jks) = (cred("server.p12"), cred("server.jks"));
    let missing = creds().join("missing.pem").display().to_string();
    for (env, setting) in [
        (vec![("SSL_CREDENTIALS_TYPE", "PEM"), ("SSL_PEM_CERT", missing.as_str())], "SSL_PEM_CERT"),
        (
            vec![("SSL_CREDENTIALS_TYPE", "KEYSTORE"), ("SSL_KEY_STORE", p12.as_str()), ("SSL_KEY_STORE_PASSWORD", "wrong")],
            "SSL_KEY_STORE_PASSWORD",
        ),
        (
            vec![
                ("SSL_CREDENTIALS_TYPE", "KEYSTORE"),
                ("SSL_KEY_STORE", jks.as_str()),
                ("SSL_KEY_STORE_PASSWORD", "store-secret"),
                ("SSL_KEY_PASSWORD", "wrong"),
            ],
            "SSL_KEY_PASSWORD",
        ),
        (
            vec![
                ("SSL_CREDENTIALS_TYPE", "KEYSTORE"),
                ("SSL_KEY_STORE", p12.as_str()),
                ("SSL_KEY_STORE_PASSWORD", "store-secret"),
                ("SSL_KEY_ALIAS", "nobody"),
            ],
            "SSL_KEY_ALIAS",
        ),
    ] {
        let mut env = env;
        env.push(("SSL_ENABLED", "true"));
        let stderr = refused_start(&env);
        let line = stderr.lines().find(|l| l.contains(setting)).unwrap_or_else(|| panic!("no line names {setting}: {stderr}"));
        assert!(line.contains(&format!("{setting}: ")), "{line}");
    }
}

#[test]
fn an_over_long_text_search_is_a_400() {
    let server = Server::start();
    let token = server.token();
    // A search longer than any name: 400 (it was a 500 from the database).
    let search = "x".repeat(50_000);
    for path in ["/api/tenant/devices", "/api/tenant/assets", "/api/customers", "/api/converters", "/api/integrations"] {
        let (status, body) = server.request("GET", &format!("{path}?pageSize=10&page=0&textSearch={search}"), None, Some(&token));
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["message"], "textSearch length must be equal or less than 255", "{path}");
    }
    let (status, _) = server.request("GET", &format!("/api/tenant/devices?pageSize=10&page=0&textSearch={}", "x".repeat(255)), None, Some(&token));
    assert_eq!(status, 200);

}

#[test]
fn over_long_names_are_refused_and_never_stored() {
    // The answer piggybacked however slow a loaded machine makes the 900,000-character script.
    let server = Server::start_with(&[("COAP_PIGGYBACK_TIMEOUT_MS", "4000")], &[]);
    let token = server.token();
    // Names of converters and integrations: ThingsBoard's 255.
    let converter = |name: &str| {
        json!({"name": name, "type": "UPLINK", "integrationType": "COAP", "configuration": {"scriptLang": "JS", "decoder": "return {};"}})
    };
    let (status, body) = server.request("POST", "/api/converter", Some(converter(&"c".repeat(256))), Some(&token));
    assert_eq!((status, body["message"].as_str()), (400, Some("name length must be equal or less than 255")));
    server.api("POST", "/api/converter", Some(converter(&"c".repeat(255))));

    // A converter naming a device with 900,000 characters: a converter error, nothing stored.
    let decoder = "var name = decodeToString(payload); return {deviceName: name === 'long' ? 'n'.repeat(900000) : name, telemetry: {t: 1}};";
    let converter = server.create_converter("Long names", decoder);
    let integration = server.create_integration("Long names", &converter, json!({}));
    let (status, body) = server.request(
        "POST",
        "/api/integration",
        Some(json!({"name": "i".repeat(256), "type": "COAP", "defaultConverterId": converter["id"], "configuration": {}})),
        Some(&token),
    );
    assert_eq!((status, body["message"].as_str()), (400, Some("name length must be equal or less than 255")));
    let path = endpoint_path(&integration);
    let mut coap = CoapClient::new(server.coap);
    assert_eq!(coap.post(&path, b"long"), Code::BAD_REQUEST);
    assert_eq!(coap.post(&path, b"short"), Code::CREATED);
    let devices = server.api("GET", "/api/tenant/devices?pageSize=100&page=0", None);
    let names: Vec<&str> = devices["data"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["short"]);
}
