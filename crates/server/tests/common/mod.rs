//! Test harness: the real `coapgate` binary on free loopback ports with its own data directory,
//! a REST helper speaking ThingsBoard's JSON, and a raw CoAP client for byte-level checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, Message, MessageType, option};
use serde_json::{Value, json};

pub const ADMIN_USER: &str = "tenant@thingsboard.org";
pub const ADMIN_PASSWORD: &str = "test-password";

/// The seed tutorial's decoder.
pub const SEED_DECODER: &str = r#"var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
var result = { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
return result;"#;

pub const SEED_PAYLOAD: &str = "SN-001,default,temperature,25.7,humidity,69";

/// Whether the suite runs on PostgreSQL: `COAPGATE_TEST_DATABASE=postgres` (`.ci/run` runs the
/// server's tests a second time so). Every server started without a `DATABASE_URL` of its own
/// then gets a fresh database of the shared private test cluster instead of SQLite in its data
/// directory.
pub fn on_postgres() -> bool {
    match std::env::var("COAPGATE_TEST_DATABASE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite" | "") | Err(_) => false,
        Ok(other) => panic!("COAPGATE_TEST_DATABASE={other}: expected postgres or sqlite"),
    }
}

/// For a test whose subject is SQLite itself (its files, `coapgate check`, salvage): true, after
/// one line saying why, when the suite runs on PostgreSQL, where the test has nothing to test
/// and returns at once.
pub fn sqlite_only(reason: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {reason}");
    }
    on_postgres()
}

/// For a test that starts its servers on PostgreSQL itself (several nodes, outages, migrate):
/// true in the PostgreSQL pass of the suite, which would only run it a second time.
pub fn postgres_already(test: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped in the PostgreSQL pass: {test} runs on PostgreSQL in the first pass already");
    }
    on_postgres()
}

/// Whether `env` chooses the database itself (a test of the database settings).
fn chooses_database(env: &[(&str, &str)]) -> bool {
    env.iter().any(|(k, _)| matches!(*k, "DATABASE_URL" | "SPRING_DATASOURCE_URL"))
}

/// A data directory to start a server in, with the PostgreSQL database that goes with it when the
/// suite runs on PostgreSQL. `Server::kill` returns one, so that the server restarted in it comes
/// back on the same database, and the test cluster stays up in between (it stops when the last
/// database handle is dropped).
pub struct DataDir {
    pub path: PathBuf,
    database: Option<PgDatabase>,
}

impl DataDir {
    /// `DATABASE_URL` of the database that goes with this directory, if any (for commands such as
    /// `coapgate reset-password` run on a stopped server's data).
    pub fn database_url(&self) -> Option<String> {
        self.database.as_ref().map(PgDatabase::url)
    }
}

impl From<PathBuf> for DataDir {
    fn from(path: PathBuf) -> DataDir {
        DataDir { path, database: None }
    }
}

impl std::ops::Deref for DataDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for DataDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

/// A running server. Killed and its data directory removed on drop.
pub struct Server {
    child: Child,
    pub data_dir: PathBuf,
    /// The server's PostgreSQL database when the suite runs on PostgreSQL; holds the shared test
    /// cluster up while the server lives (dropped after the process is killed).
    database: Option<PgDatabase>,
    pub http: String,
    pub coap: SocketAddr,
    /// The DTLS endpoint, when the server was started with `COAP_DTLS_ENABLED=true`.
    pub dtls: Option<SocketAddr>,
    /// The remote integrations' gRPC endpoint, with `INTEGRATIONS_RPC_ENABLED=true`.
    pub rpc: Option<SocketAddr>,
    /// Everything the server printed on stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    token: Mutex<Option<String>>,
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coapgate-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[], &[])
    }

    /// Starts `coapgate serve` with extra environment and arguments, on free ports of 127.0.0.1.
    pub fn start_with(env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::start_in(temp_dir("server"), env, args)
    }

    /// Starts `coapgate serve` in `data_dir`. On PostgreSQL (`on_postgres`), unless `env` chooses
    /// the database, the server runs on the database that goes with `data_dir` (a restart after
    /// `kill`) or on a fresh one.
    pub fn start_in(data_dir: impl Into<DataDir>, env: &[(&str, &str)], args: &[&str]) -> Server {
        let DataDir { path: data_dir, database } = data_dir.into();
        let database = match database {
            Some(db) => Some(db),
            None if on_postgres() && !chooses_database(env) => Some(PgCluster::database()),
            None => None,
        };
        let url = database.as_ref().filter(|_| !chooses_database(env)).map(PgDatabase::url);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coapgate"));
        cmd.arg("serve")
            .args(args)
            .env("COAPGATE_DATA_DIR", &data_dir)
            .env("HTTP_BIND_ADDRESS", "127.0.0.1")
            .env("HTTP_BIND_PORT", "0")
            .env("COAP_BIND_ADDRESS", "127.0.0.1")
            .env("COAP_BIND_PORT", "0")
            .env("COAP_BASE_URL", "coap://127.0.0.1")
            .env("COAPGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("DATABASE_URL")
            .env_remove("SPRING_DATASOURCE_URL")
            .env_remove("SPRING_DATASOURCE_USERNAME")
            .env_remove("SPRING_DATASOURCE_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = &url {
            cmd.env("DATABASE_URL", url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting coapgate");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let rx = capture_lines(vec![Box::new(child.stdout.take().unwrap())], &stdout);
        let (mut http, mut coap, mut dtls, mut rpc, mut data) = (None, None, None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.is_none() || coap.is_none() || data.is_none() {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                // Not left running after the test fails.
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not print its banner; stdout: {:?}", stdout.lock().unwrap());
            };
            if let Some(rest) = line.trim().strip_prefix("CoAP      udp://") {
                coap = Some(rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("DTLS      udp://") {
                dtls = Some(rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("remotes   grpc://") {
                rpc = Some(rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("REST API  ") {
                // http://ADDR/api, or https:// with SSL_ENABLED.
                http = Some(rest.trim_end_matches("/api").to_string());
            }
            // The banner's last line: "data      DIR (database DESCRIPTION)".
            if let Some(rest) = line.trim().strip_prefix("data      ") {
                data = Some(rest.to_string());
            }
        }
        // A suite meant for PostgreSQL must not pass on SQLite unnoticed. (A --config file
        // may choose the database itself.)
        if url.is_some() && !args.contains(&"--config") {
            let data = data.as_deref().unwrap_or_default();
            assert!(data.contains("(database postgres://"), "the server is not on PostgreSQL: data {data}");
        }
        // Let the demo lines (printed with the banner) arrive.
        std::thread::sleep(Duration::from_millis(50));
        // The remotes line comes after the REST API's.
        if rpc.is_none() && env.iter().any(|(k, v)| *k == "INTEGRATIONS_RPC_ENABLED" && *v == "true") {
            while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
                if let Some(rest) = line.trim().strip_prefix("remotes   grpc://") {
                    rpc = Some(rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
                    break;
                }
            }
        }
        Server { child, data_dir, database, http: http.unwrap(), coap: coap.unwrap(), dtls, rpc, stdout, token: Mutex::new(None) }
    }

    /// Stops the process (SIGKILL) and keeps the data directory, with its database, for a
    /// restart.
    pub fn kill(mut self) -> DataDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Emptied, so that drop keeps the directory.
        let path = std::mem::take(&mut self.data_dir);
        DataDir { path, database: self.database.take() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process as a service manager does (SIGTERM) and returns how it exited; `None`
    /// if it was still running after 10 s (then it is killed).
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid, which it keeps until we wait for it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        eventually(Duration::from_secs(10), || self.child.try_wait().unwrap())
    }

    /// Resident memory of the server process in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn token(&self) -> String {
        let mut token = self.token.lock().unwrap();
        if token.is_none() {
            let (status, body) = self.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})), None);
            assert_eq!(status, 200, "login failed: {body}");
            *token = Some(body["token"].as_str().unwrap().to_string());
        }
        token.clone().unwrap()
    }

    /// A REST call with an explicit token (or none); returns the status and the JSON body
    /// (`Value::Null` when the body is empty).
    pub fn request(&self, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let mut req = ureq::request(method, &format!("{}{path}", self.http)).timeout(Duration::from_secs(30));
        if let Some(token) = token {
            req = req.set("X-Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = response.status();
        let text = response.into_string().unwrap_or_default();
        let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    /// An authenticated call that must succeed.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.request(method, path, body, Some(&self.token()));
        assert!((200..300).contains(&status), "{method} {path} -> {status}: {value}");
        value
    }

    pub fn create_converter(&self, name: &str, decoder: &str) -> Value {
        self.api(
            "POST",
            "/api/converter",
            Some(json!({"name": name, "type": "UPLINK", "integrationType": "COAP",
                        "configuration": {"scriptLang": "JS", "decoder": decoder}})),
        )
    }

    /// Creates an integration for `converter`, with the server's CoAP port in its base URL.
    pub fn create_integration(&self, name: &str, converter: &Value, extra: Value) -> Value {
        let mut body = json!({
            "name": name, "type": "COAP", "enabled": true, "allowCreateDevicesOrAssets": true,
            "defaultConverterId": converter["id"],
            "configuration": {"clientConfiguration": {"baseUrl": format!("coap://127.0.0.1:{}", self.coap.port()), "securityMode": "NO_SECURE"}, "metadata": {}},
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        self.api("POST", "/api/integration", Some(body))
    }

    /// The seed tutorial's converter and integration; returns the integration.
    pub fn seed_integration(&self) -> Value {
        let converter = self.create_converter("CoAP Uplink Converter", SEED_DECODER);
        self.create_integration("CoAP Integration", &converter, json!({}))
    }

    pub fn device(&self, name: &str) -> Option<Value> {
        let (status, body) = self.request("GET", &format!("/api/tenant/devices?deviceName={name}"), None, Some(&self.token()));
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("device lookup -> {other}: {body}"),
        }
    }

    /// Latest values of a device as `{key: value-as-string}`.
    pub fn latest(&self, device: &Value) -> serde_json::Map<String, Value> {
        let id = device["id"]["id"].as_str().unwrap();
        let body = self.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries"), None);
        body.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v[0]["value"].clone())).collect()
    }

    /// Number of stored points of `key` for a device, over all time.
    pub fn history_len(&self, device: &Value, key: &str) -> usize {
        let id = device["id"]["id"].as_str().unwrap();
        let body = self.api(
            "GET",
            &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys={key}&startTs=0&endTs=9999999999999&limit=100000"),
            None,
        );
        body.get(key).and_then(Value::as_array).map(Vec::len).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// The path segments of an integration's CoAP endpoint URL.
pub fn endpoint_path(integration: &Value) -> Vec<String> {
    let url = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap();
    let after_host = url.split_once("://").unwrap().1.split_once('/').map(|x| x.1).unwrap_or("");
    after_host.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// A raw CoAP client on its own UDP port, for exact message-layer checks.
pub struct CoapClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    next_id: u16,
}

impl CoapClient {
    pub fn new(server: SocketAddr) -> CoapClient {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        CoapClient { socket, server, next_id: 1000 }
    }

    /// A client on a free port of loopback address `ip` (e.g. "127.0.0.2"), so a test can play
    /// several source hosts against one server.
    pub fn from_host(server: SocketAddr, ip: &str) -> CoapClient {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        CoapClient { socket, server, next_id: 1000 }
    }

    pub fn next_message_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// A request with the given type, method, path and payload, and a fresh message id.
    pub fn build(&mut self, mtype: MessageType, code: Code, path: &[String], payload: &[u8]) -> Message {
        let mut m = Message::new(mtype, code, self.next_message_id());
        m.token = coapgate_coap::message::Token::from_slice(&self.next_id.to_be_bytes()).unwrap();
        for segment in path {
            m.add_option(option::URI_PATH, segment.as_bytes().to_vec());
        }
        m.payload = payload.to_vec();
        m
    }

    pub fn send(&self, m: &Message) {
        self.socket.send_to(&m.encode(), self.server).unwrap();
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).unwrap();
    }

    /// The next datagram from the server, parsed; `None` on timeout.
    pub fn receive(&self) -> Option<Message> {
        let mut buf = [0u8; 2048];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => return Some(Message::parse(&buf[..n]).expect("server sent a malformed message")),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Sends and waits for the response: the ACK (or RST) with the same message id, or the
    /// response with the same token (NON, or separate). An empty ACK is skipped, since a
    /// separate response follows (the server sends one when the answer takes longer than its
    /// piggyback window, as a busy machine or a remote database can make it), and a separate CON
    /// response is acknowledged, as a device does.
    pub fn exchange(&self, m: &Message) -> Message {
        self.send(m);
        loop {
            let r = self.receive().unwrap_or_else(|| panic!("no response to {m:?}"));
            if r.message_id == m.message_id && r.mtype != MessageType::Confirmable {
                if r.mtype == MessageType::Acknowledgement && r.code.is_empty() {
                    continue;
                }
                return r;
            }
            if r.token == m.token && !r.code.is_empty() {
                if r.mtype == MessageType::Confirmable {
                    self.send(&Message::empty_ack(r.message_id));
                }
                return r;
            }
        }
    }

    /// POSTs `payload` as CON and returns the response code.
    pub fn post(&mut self, path: &[String], payload: &[u8]) -> Code {
        let m = self.build(MessageType::Confirmable, Code::POST, path, payload);
        self.exchange(&m).code
    }
}

/// Runs a shell command line (e.g. a `coap-client-notls` pipeline) and returns its output,
/// failing the test with a clear message when the tool is missing.
pub fn shell(command: &str) -> std::process::Output {
    let tool = command.split_whitespace().find(|w| w.starts_with("coap-client")).unwrap_or("sh");
    let output = Command::new("bash").arg("-c").arg(command).output().expect("running bash");
    if output.status.code() == Some(127) {
        panic!("`{tool}` is not installed: run .ci/run (it installs Debian's libcoap3-bin), or apt-get install libcoap3-bin");
    }
    output
}

/// Waits until `f` returns `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one of the `tests/python` flows written against the official `tb-rest-client` with the
/// server's address, the admin's credentials, its CoAP port and a `coap-client` command template
/// (`{endpoint}` is replaced by the script), and fails the test unless it prints OK.
pub fn run_python_flow(server: &Server, script: &str, coap_send_cmd: &str) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .env("BASE_URL", &server.http)
        .env("USERNAME", ADMIN_USER)
        .env("PASSWORD", ADMIN_PASSWORD)
        .env("COAP_PORT", server.coap.port().to_string())
        .env("COAP_SEND_CMD", coap_send_cmd)
        .output()
        .expect("python3");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !stderr.contains("No module named 'tb_rest_client'"),
        "tb-rest-client is not installed: run .ci/run (pip install tb-rest-client==4.4)"
    );
    assert!(out.status.success() && stdout.contains("OK"), "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
}

/// Runs `coapgate serve` on a fresh data directory, bound to 127.0.0.1, expecting it to refuse
/// to start (bad settings, a policy it enforces); returns what it printed on stderr. Panics if
/// it starts after all.
///
/// On PostgreSQL (`on_postgres`) it is given a fresh database unless `env` chooses one, so a
/// refusal is tested on the backend the suite runs on.
pub fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = temp_dir("refused");
    let database = (on_postgres() && !chooses_database(env)).then(PgCluster::database);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coapgate"));
    cmd.arg("serve")
        .env("COAPGATE_DATA_DIR", &dir)
        .env("HTTP_BIND_ADDRESS", "127.0.0.1")
        .env("HTTP_BIND_PORT", "0")
        .env("COAP_BIND_ADDRESS", "127.0.0.1")
        .env("COAP_BIND_PORT", "0")
        .env_remove("DATABASE_URL");
    if let Some(db) = &database {
        cmd.env("DATABASE_URL", db.url());
    }
    let mut child = cmd
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = eventually(Duration::from_secs(20), || child.try_wait().unwrap());
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        panic!("coapgate started with {env:?}");
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "coapgate exited successfully with {env:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `coapgate remote`, linked to a platform's gRPC endpoint. Killed and its data
/// directory removed on drop.
pub struct Remote {
    child: Child,
    pub data_dir: PathBuf,
    pub coap: SocketAddr,
    /// The DTLS endpoint, when started with `COAP_DTLS_ENABLED=true`.
    pub dtls: Option<SocketAddr>,
    /// Everything it printed, stdout and log lines (stderr) alike.
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Remote {
    /// Starts `coapgate remote` for the integration with `routing_key` and `secret`, linking to
    /// 127.0.0.1:`rpc_port`, with extra environment.
    pub fn start_in(data_dir: PathBuf, rpc_port: u16, routing_key: &str, secret: &str, env: &[(&str, &str)]) -> Remote {
        let port = rpc_port.to_string();
        let mut all = vec![("RPC_HOST", "127.0.0.1"), ("RPC_PORT", port.as_str()), ("INTEGRATION_ROUTING_KEY", routing_key), ("INTEGRATION_SECRET", secret)];
        all.extend_from_slice(env);
        Remote::start_with_args(data_dir, &all, &[])
    }

    /// Starts `coapgate remote ARGS` with only the environment given (plus loopback CoAP on a
    /// free port, the service id `edge-test` and info logs).
    pub fn start_with_args(data_dir: PathBuf, env: &[(&str, &str)], args: &[&str]) -> Remote {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_coapgate"));
        cmd.arg("remote")
            .args(args)
            .env("COAPGATE_DATA_DIR", &data_dir)
            .env("COAP_BIND_ADDRESS", "127.0.0.1")
            .env("COAP_BIND_PORT", "0")
            .env("RPC_CLIENT_ID", "edge-test")
            .env_remove("INTEGRATION_ROUTING_KEY")
            .env_remove("INTEGRATION_SECRET")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting coapgate remote");
        let output = Arc::new(Mutex::new(Vec::new()));
        let rx = capture_lines(vec![Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())], &output);
        let deadline = Instant::now() + Duration::from_secs(30);
        let want_dtls = env.iter().any(|(k, v)| *k == "COAP_DTLS_ENABLED" && *v == "true");
        let (mut coap, mut dtls, mut banner_done) = (None, None, false);
        while coap.is_none() || (want_dtls && dtls.is_none()) || !banner_done {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("remote did not print its banner; output: {:?}", output.lock().unwrap()));
            if let Some(rest) = line.trim().strip_prefix("CoAP      udp://") {
                coap = Some(rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("DTLS      udp://") {
                dtls = Some(rest.split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap());
            }
            // The banner's last line says which configuration the remote starts on.
            banner_done |= line.trim().starts_with("running ") || line.trim().starts_with("waiting ");
        }
        Remote { child, data_dir, coap: coap.unwrap(), dtls, output }
    }

    pub fn output_text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits until a line containing `text` was printed; panics with the output otherwise.
    pub fn wait_for(&self, text: &str, timeout: Duration) {
        if eventually(timeout, || self.output.lock().unwrap().iter().any(|l| l.contains(text)).then_some(())).is_none() {
            panic!("remote never printed {text:?}; output:\n{}", self.output_text());
        }
    }

    /// How many printed lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.output.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }

    /// Stops the process (SIGKILL) and keeps the data directory for a restart.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::take(&mut self.data_dir);
        std::mem::forget(self);
        dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.data_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Reads a child's output streams line by line into `lines`, and hands each line to the
/// returned channel too (for waiting on a banner).
fn capture_lines(streams: Vec<Box<dyn std::io::Read + Send>>, lines: &Arc<Mutex<Vec<String>>>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in streams {
        let (lines, tx) = (lines.clone(), tx.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    rx
}

/// The `seq` values a device stored over all time, sorted: the uplinks of a crash test, each
/// one point (an uplink stored twice is two).
pub fn stored_seqs(server: &Server, device_id: &str) -> Vec<u32> {
    let history = server.api(
        "GET",
        &format!("/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries?keys=seq&startTs=0&endTs=9999999999999&limit=1000000&useStrictDataTypes=true"),
        None,
    );
    let mut stored: Vec<u32> = history["seq"].as_array().map_or(vec![], |points| points.iter().map(|p| p["value"].as_u64().unwrap() as u32).collect());
    stored.sort_unstable();
    stored
}

/// A TCP port of 127.0.0.1 that was free a moment ago (for a server that must come back on the
/// same port after a restart).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The console's browser tests (Chromium driven by playwright-core).
pub mod browser;
/// A private PostgreSQL cluster for servers on PostgreSQL (the storage crate's test harness).
#[path = "../../../storage/tests/pg_cluster/mod.rs"]
pub mod pg_cluster;

pub use pg_cluster::{PgCluster, PgDatabase};

impl Server {
    /// Starts `coapgate serve` on a fresh database of the shared test cluster (started on first
    /// use); returns the database too, which keeps the cluster up while it lives.
    pub fn start_postgres(env: &[(&str, &str)]) -> (Server, PgDatabase) {
        let db = PgCluster::database();
        (Server::start_on(&db, temp_dir("pg-server"), env), db)
    }

    /// Starts `coapgate serve` with `DATABASE_URL` pointing at `db`, with `data_dir` for its
    /// secrets and extra environment.
    pub fn start_on(db: &PgDatabase, data_dir: impl Into<DataDir>, env: &[(&str, &str)]) -> Server {
        let url = db.url();
        let mut all = vec![("DATABASE_URL", url.as_str())];
        all.extend_from_slice(env);
        Server::start_in(data_dir, &all, &[])
    }
}

/// A converter that stores one point per uplink `NAME,SEQ`: `seq` at a timestamp of its own
/// (seq * 1000 plus the processing time's milliseconds), so an uplink stored twice shows as two
/// points. (Server time alone can repeat within a millisecond for a fast device, and points of
/// one key at one timestamp are one point, as in ThingsBoard.)
pub const SEQ_DECODER: &str = "var t = decodeToString(payload).split(','); var seq = parseInt(t[1]); \
     return {deviceName: t[0], telemetry: {ts: seq * 1000 + Date.now() % 1000, values: {seq: seq}}};";

/// The CON POST `NAME,SEQ` of a crash test's device (its own socket, so the Message ID and the
/// token can simply be the sequence number).
pub fn seq_request(path: &[String], name: &str, seq: u32) -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, seq as u16);
    m.token = coapgate_coap::message::Token::from_slice(&seq.to_be_bytes()).unwrap();
    for s in path {
        m.add_option(option::URI_PATH, s.as_bytes().to_vec());
    }
    m.payload = format!("{name},{seq}").into_bytes();
    m
}

/// Waits for the answer to `m` (piggybacked, or an empty ACK then a separate response, which is
/// acknowledged); `None` when nothing came within `timeout`.
pub fn await_answer(socket: &UdpSocket, m: &Message, timeout: Duration) -> Option<Code> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        let (n, from) = socket.recv_from(&mut buf).ok()?;
        let Ok(r) = Message::parse(&buf[..n]) else { continue };
        if r.mtype == MessageType::Acknowledgement && r.message_id == m.message_id {
            if r.code.is_empty() {
                continue; // a separate response follows
            }
            return Some(r.code);
        }
        if r.token == m.token && !r.code.is_empty() {
            if r.mtype == MessageType::Confirmable {
                let ack = Message::new(MessageType::Acknowledgement, Code::EMPTY, r.message_id);
                let _ = socket.send_to(&ack.encode(), from);
            }
            return Some(r.code);
        }
    }
}

/// A device's view of a kill -9 run: what the server acknowledged, and the request that was in
/// flight (sent, unanswered) when the server died.
struct CrashLog {
    socket: UdpSocket,
    acked: Vec<(u32, Vec<u8>)>,
    pending: Option<(u32, Vec<u8>)>,
}

fn run_crash_device(server: SocketAddr, path: Vec<String>, name: String, stop: Arc<std::sync::atomic::AtomicBool>) -> CrashLog {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut log = CrashLog { socket, acked: Vec::new(), pending: None };
    for seq in 1.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let m = seq_request(&path, &name, seq);
        let bytes = m.encode();
        log.socket.send_to(&bytes, server).unwrap();
        match await_answer(&log.socket, &m, Duration::from_millis(1500)) {
            Some(code) => {
                assert_eq!(code, Code::CREATED, "{name} seq {seq}");
                log.acked.push((seq, bytes));
            }
            None => {
                // The server is gone: keep the request to retransmit after the restart.
                log.pending = Some((seq, bytes));
                break;
            }
        }
    }
    log
}

/// Starts a server on a data directory with extra environment (SQLite or PostgreSQL).
pub type StartServer<'a> = &'a dyn Fn(DataDir, &[(&str, &str)]) -> Server;

/// Exactly once across a crash, on whatever storage `start(data_dir, env)` starts a server on:
/// 16 devices send CONs for `load_for`, the server is killed with SIGKILL and restarted on the
/// same data and CoAP port; every uplink that got 2.01 is stored, and CONs retransmitted across
/// the restart (the last five acknowledged of each device, as if their ACK was lost, and the one
/// in flight at the crash) are answered 2.01 without being stored twice.
pub fn acknowledged_uplinks_survive_kill_9(start: StartServer<'_>, dir: PathBuf, load_for: Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = start(dir.into(), &[]);
    let port = server.coap.port();
    let converter = server.create_converter("seq", SEQ_DECODER);
    let integration = server.create_integration("crash", &converter, json!({}));
    let path = endpoint_path(&integration);

    let stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = (0..16)
        .map(|d| {
            let (addr, path, stop) = (server.coap, path.clone(), stop.clone());
            std::thread::spawn(move || run_crash_device(addr, path, format!("crash-{d}"), stop))
        })
        .collect();
    std::thread::sleep(load_for);
    let dir = server.kill();
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<CrashLog> = devices.into_iter().map(|t| t.join().unwrap()).collect();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    assert!(acked > 50, "too little load before the crash ({acked} uplinks) to test anything");

    let server = start(dir, &[("COAP_BIND_PORT", &port.to_string())]);
    assert_eq!(server.coap.port(), port);
    let retransmit = |log: &CrashLog, bytes: &[u8]| -> Option<Code> {
        let sent = Message::parse(bytes).unwrap();
        log.socket.send_to(bytes, server.coap).unwrap();
        await_answer(&log.socket, &sent, Duration::from_secs(5))
    };
    let mut expected: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
    let mut replayed = 0;
    for (d, log) in logs.iter().enumerate() {
        let seqs = expected.entry(format!("crash-{d}")).or_default();
        seqs.extend(log.acked.iter().map(|(s, _)| *s));
        // Uplinks acknowledged before the crash whose ACK we pretend was lost.
        for (_, bytes) in log.acked.iter().rev().take(5) {
            assert_eq!(retransmit(log, bytes), Some(Code::CREATED));
            replayed += 1;
        }
        // The request in flight when the server died: stored or not, it must end up stored once.
        if let Some((seq, bytes)) = &log.pending {
            assert_eq!(retransmit(log, bytes), Some(Code::CREATED), "device {d} seq {seq} after restart");
            seqs.push(*seq);
        }
    }
    assert!(replayed > 0);
    for (name, seqs) in &expected {
        let Some(device) = server.device(name) else {
            assert!(seqs.is_empty(), "{name} missing although {} uplinks were acknowledged", seqs.len());
            continue;
        };
        let stored = stored_seqs(&server, device["id"]["id"].as_str().unwrap());
        let mut want = seqs.clone();
        want.sort_unstable();
        assert_eq!(stored, want, "{name}: every acknowledged uplink stored exactly once");
    }
}

/// A WebSocket client of the tests (tungstenite, blocking).
pub type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// The next JSON text message within `timeout`, skipping pings; `None` when nothing came. A close
/// by the server fails the test.
pub fn ws_next(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let tungstenite::stream::MaybeTlsStream::Plain(stream) = ws.get_mut() {
            stream.set_read_timeout(Some(left)).unwrap();
        }
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).expect("updates are JSON")),
            Ok(tungstenite::Message::Close(frame)) => panic!("closed by the server: {frame:?}"),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return None;
            }
            Err(e) => panic!("reading the WebSocket: {e}"),
        }
    }
}

/// A value of `/metrics` (the test fails when the line is absent).
pub fn metric(server: &Server, name: &str) -> u64 {
    let text = ureq::get(&format!("{}/metrics", server.http)).call().unwrap().into_string().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("/metrics has no {name}:\n{text}"))
}

/// The customer id ThingsBoard writes for "no customer".
pub const NULL_CUSTOMER: &str = "13814000-1dd2-11b2-8080-808080808080";

/// The id of an entity in ThingsBoard's JSON (`{"id": {"id": …}}`).
pub fn id_of(entity: &Value) -> String {
    entity["id"]["id"].as_str().unwrap().to_string()
}

/// Asserts ThingsBoard's error JSON (`{status, message, errorCode}`) and returns the message.
pub fn tb_error(what: &str, (status, body): (u16, Value), expected: u16) -> String {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["status"], expected, "{what}: {body}");
    assert!(body["errorCode"].is_u64(), "{what}: {body}");
    body["message"].as_str().unwrap_or_else(|| panic!("{what}: no message: {body}")).to_string()
}
