//! `coapgate serve` on PostgreSQL: the seed tutorial, the REST flows, a kill -9 under load, and
//! PostgreSQL itself stopped under load. Each server gets a fresh database of a private cluster
//! (tests/common's `pg_cluster`, the storage crate's harness).

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coapgate_coap::message::Code;
use common::*;
use serde_json::json;

#[test]
fn seed_tutorial_with_coap_client_on_postgres() {
    if postgres_already("seed_tutorial_with_coap_client_on_postgres") {
        return;
    }
    let (server, db) = Server::start_postgres(&[]);
    let banner = server.stdout_text();
    let expected = format!("postgres://127.0.0.1:{}/{}", db.cluster.port, db.name);
    assert!(banner.lines().any(|l| l.trim().starts_with("data") && l.contains(&expected)), "{banner}");
    let integration = server.seed_integration();
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string();
    let out = shell(&format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {endpoint} -t text/plain -f-"));
    assert!(out.status.success(), "coap-client failed: {}", String::from_utf8_lossy(&out.stderr));
    let device = server.device("SN-001").expect("device SN-001 created on first uplink");
    assert_eq!(device["type"], "default");
    let latest = server.latest(&device);
    assert_eq!(latest["temperature"], "25.7");
    assert_eq!(latest["humidity"], "69");
}

const TELEMETRY_DECODER: &str = r#"return {deviceName: "T",
  telemetry: [{ts: 1000, values: {t: 1, s: "str", b: true, d: 2.5, j: {"x": 1}}}, {ts: 2000, values: {t: 3}}],
  attributes: {fw: "1.0.3", n: 7}};"#;

#[test]
fn rest_flows_on_postgres() {
    if postgres_already("rest_flows_on_postgres") {
        return;
    }
    let (server, _db) = Server::start_postgres(&[]);
    let converter = server.create_converter("telemetry", TELEMETRY_DECODER);
    let debug = json!({"debugSettings": {"failuresEnabled": true, "allEnabled": true, "allEnabledUntil": coapgate_storage::now_millis() + 300_000}});
    let integration = server.create_integration("telemetry", &converter, debug);
    // Converter and integration read back.
    let read = server.api("GET", &format!("/api/integration/{}", id_of(&integration)), None);
    assert_eq!(read["name"], "telemetry");
    assert_eq!(server.api("GET", &format!("/api/converter/{}", id_of(&converter)), None)["name"], "telemetry");
    let page = server.api("GET", "/api/integrations?pageSize=10&page=0", None);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");

    let code = CoapClient::new(server.coap).post(&endpoint_path(&integration), b"x");
    assert_eq!(code, Code::CREATED);
    let device = server.device("T").expect("T created");
    let base = format!("/api/plugins/telemetry/DEVICE/{}", id_of(&device));
    assert_eq!(server.api("GET", &format!("{base}/keys/timeseries"), None), json!(["b", "d", "j", "s", "t"]));
    let typed = server.api("GET", &format!("{base}/values/timeseries?keys=t,s,b,d,j&useStrictDataTypes=true"), None);
    for (key, value) in [("t", json!(3)), ("s", json!("str")), ("b", json!(true)), ("d", json!(2.5)), ("j", json!({"x": 1}))] {
        assert_eq!(typed[key][0]["value"], value, "{key}: {typed}");
    }
    let history = server.api("GET", &format!("{base}/values/timeseries?keys=t&startTs=0&endTs=3000"), None);
    assert_eq!(history["t"], json!([{"ts": 2000, "value": "3"}, {"ts": 1000, "value": "1"}]));
    let avg = server.api("GET", &format!("{base}/values/timeseries?keys=t&startTs=0&endTs=3000&agg=AVG&interval=3000"), None);
    assert_eq!(avg["t"][0]["value"], "2.0", "{avg}");
    let attributes = server.api("GET", &format!("{base}/values/attributes/CLIENT_SCOPE"), None);
    let list = attributes.as_array().unwrap_or_else(|| panic!("{attributes}"));
    let attr = |key: &str| list.iter().find(|a| a["key"] == key).unwrap_or_else(|| panic!("{key} missing: {attributes}")).clone();
    assert_eq!(attr("fw")["value"], "1.0.3");
    assert_eq!(attr("n")["value"], 7);

    // Events: the debug event of the uplink, and a failure of a throwing converter.
    let iid = id_of(&integration);
    let events = |id: &str| {
        eventually(Duration::from_secs(10), || {
            let page = server.api("GET", &format!("/api/events/INTEGRATION/{id}/DEBUG_INTEGRATION?pageSize=100&page=0"), None);
            page["data"].as_array().filter(|d| !d.is_empty()).cloned()
        })
        .unwrap_or_else(|| panic!("no debug events for {id}"))
    };
    assert_eq!(events(&iid)[0]["body"]["type"], "Uplink");
    let thrower = server.create_converter("thrower", "throw new Error('bad payload ' + payload.length);");
    let failing = server.create_integration("failing", &thrower, json!({}));
    assert_eq!(CoapClient::new(server.coap).post(&endpoint_path(&failing), b"abc"), Code::BAD_REQUEST);
    let failed = events(&id_of(&failing));
    assert_eq!(failed[0]["body"]["status"], "ERROR");
    assert!(failed[0]["body"]["error"].as_str().unwrap().contains("bad payload 3"), "{}", failed[0]);

    // A live decoder update takes effect for the next uplink.
    let mut updated = converter.clone();
    updated["configuration"]["decoder"] = json!(r#"return {deviceName: "T", telemetry: {t: 42}};"#);
    server.api("POST", "/api/converter", Some(updated));
    assert_eq!(CoapClient::new(server.coap).post(&endpoint_path(&integration), b"x"), Code::CREATED);
    assert_eq!(server.latest(&device)["t"], "42");
}

#[test]
fn spring_datasource_settings_start_a_server_and_errors_hide_the_password() {
    if postgres_already("spring_datasource_settings_start_a_server_and_errors_hide_the_password") {
        return;
    }
    let db = PgCluster::database();
    let jdbc = format!("jdbc:postgresql://127.0.0.1:{}/{}", db.cluster.port, db.name);
    let server = Server::start_in(
        temp_dir("pg-spring"),
        &[("SPRING_DATASOURCE_URL", &jdbc), ("SPRING_DATASOURCE_USERNAME", "postgres"), ("SPRING_DATASOURCE_PASSWORD", "unused-by-trust")],
        &[],
    );
    let banner = server.stdout_text();
    assert!(banner.contains(&format!("postgres://127.0.0.1:{}/{}", db.cluster.port, db.name)), "{banner}");
    assert!(!banner.contains("unused-by-trust"), "{banner}");
    let integration = server.seed_integration();
    assert_eq!(CoapClient::new(server.coap).post(&endpoint_path(&integration), SEED_PAYLOAD.as_bytes()), Code::CREATED);
    assert!(server.device("SN-001").is_some());
    drop(server);

    // Nothing listens there: start-up fails naming the setting and the place, not the password.
    let closed = free_tcp_port();
    let err = refused_start(&[("DATABASE_URL", &format!("postgres://me:hunter2@127.0.0.1:{closed}/nowhere"))]);
    assert!(err.contains(&format!("DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:{closed}/nowhere")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = refused_start(&[
        ("SPRING_DATASOURCE_URL", &format!("jdbc:postgresql://127.0.0.1:{closed}/nowhere")),
        ("SPRING_DATASOURCE_USERNAME", "me"),
        ("SPRING_DATASOURCE_PASSWORD", "hunter2"),
    ]);
    assert!(err.contains("SPRING_DATASOURCE_URL: cannot connect to PostgreSQL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn acknowledged_uplinks_survive_kill_9_on_postgres() {
    if postgres_already("acknowledged_uplinks_survive_kill_9_on_postgres") {
        return;
    }
    let db = PgCluster::database();
    acknowledged_uplinks_survive_kill_9(&|dir, env| Server::start_on(&db, dir, env), temp_dir("pg-crash"), Duration::from_millis(1500));
}

/// What one device saw while PostgreSQL went away and came back.
#[derive(Default)]
struct OutageLog {
    created: Vec<u32>,
    /// 5.00 / 5.03: not acknowledged.
    failed: Vec<u32>,
    /// No answer at all, even after retransmissions.
    unanswered: Vec<u32>,
    other: Vec<(u32, Code)>,
    /// Whether a 2.01 came after the first failure.
    recovered: bool,
}

fn run_outage_device(server: SocketAddr, path: Vec<String>, device: usize, stop: Arc<AtomicBool>) -> OutageLog {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut log = OutageLog::default();
    for seq in 1.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let m = seq_request(&path, &format!("pg-{device}"), seq);
        let bytes = m.encode();
        // CoAP's retransmissions of one CON: the same bytes.
        let mut code = None;
        for _ in 0..4 {
            socket.send_to(&bytes, server).unwrap();
            code = await_answer(&socket, &m, Duration::from_secs(3));
            if code.is_some() {
                break;
            }
        }
        match code {
            Some(Code::CREATED) => {
                log.recovered |= !log.failed.is_empty();
                log.created.push(seq);
            }
            Some(Code::INTERNAL_SERVER_ERROR | Code::SERVICE_UNAVAILABLE) => {
                log.failed.push(seq);
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(other) => log.other.push((seq, other)),
            None => log.unanswered.push(seq),
        }
    }
    log
}

#[test]
fn postgres_stopped_under_load_fails_uplinks_and_the_server_recovers() {
    if postgres_already("postgres_stopped_under_load_fails_uplinks_and_the_server_recovers") {
        return;
    }
    outage_under_load(PgCluster::stop_fast);
}

/// PostgreSQL crashing (`pg_ctl stop -m immediate`: no flush, no checkpoint) under load: commits
/// the writer made with `synchronous_commit=off` but whose flush had not returned are lost, and
/// none of them was acknowledged.
#[test]
fn postgres_crashing_under_load_loses_no_acknowledged_uplink() {
    if postgres_already("postgres_crashing_under_load_loses_no_acknowledged_uplink") {
        return;
    }
    outage_under_load(PgCluster::crash);
}

fn outage_under_load(stop_postgres: fn(&PgCluster)) {
    // A cluster of its own: stopping it must not disturb the other tests.
    let cluster = Arc::new(PgCluster::start());
    let db = cluster.create_database();
    let server = Server::start_on(&db, temp_dir("pg-outage"), &[]);
    let converter = server.create_converter("seq", SEQ_DECODER);
    let integration = server.create_integration("outage", &converter, json!({}));
    let path = endpoint_path(&integration);

    let stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = (0..8)
        .map(|d| {
            let (addr, path, stop) = (server.coap, path.clone(), stop.clone());
            std::thread::spawn(move || run_outage_device(addr, path, d, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    stop_postgres(&cluster);
    std::thread::sleep(Duration::from_secs(3));
    cluster.restart();
    // Until every device got a 2.01 after a failure, or 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let check = || {
        // The REST API is back too.
        let (status, _) = server.request("GET", "/api/integrations?pageSize=1&page=0", None, Some(&server.token()));
        status == 200
    };
    while Instant::now() < deadline && !check() {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<OutageLog> = devices.into_iter().map(|t| t.join().unwrap()).collect();

    let failed: usize = logs.iter().map(|l| l.failed.len()).sum();
    assert!(failed > 0, "no uplink failed while PostgreSQL was down");
    for (d, log) in logs.iter().enumerate() {
        assert!(log.other.is_empty(), "device {d}: unexpected answers {:?}", log.other);
        assert!(log.recovered, "device {d}: no 2.01 after PostgreSQL came back (created {:?}, failed {:?})", log.created.len(), log.failed);
        let name = format!("pg-{d}");
        let device = server.device(&name).unwrap_or_else(|| panic!("{name} missing"));
        let stored = stored_seqs(&server, &id_of(&device));
        let unique: BTreeSet<u32> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "{name}: an uplink stored twice: {stored:?}");
        // Every 2.01 is stored; nothing is stored that was not sent.
        for seq in &log.created {
            assert!(unique.contains(seq), "{name}: seq {seq} was answered 2.01 but is not stored");
        }
        let sent: BTreeSet<u32> = log.created.iter().chain(&log.failed).chain(&log.unanswered).copied().collect();
        assert!(unique.is_subset(&sent), "{name}: stored {:?} never sent", unique.difference(&sent).collect::<Vec<_>>());
    }
}

/// `coapgate ARGS` with `DATABASE_URL` and the password on standard input.
fn command_on(url: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = temp_dir("pg-command");
    let mut child = Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(args)
        .arg("--data-dir")
        .arg(&dir)
        .env("DATABASE_URL", url)
        .env_remove("COAPGATE_ADMIN_USERNAME")
        .env_remove("SPRING_DATASOURCE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn reset_password_works_on_postgres_and_check_says_it_is_sqlite_only() {
    if postgres_already("reset_password_works_on_postgres_and_check_says_it_is_sqlite_only") {
        return;
    }
    let (server, db) = Server::start_postgres(&[]);
    let old_token = server.token();
    // The server keeps running: PostgreSQL is shared.
    let out = command_on(&db.url(), &["reset-password", "--password-stdin"], "reset-password-1\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, _) = server.request("GET", "/api/auth/user", None, Some(&old_token));
    assert_eq!(status, 401, "a token from before the reset still works");
    let (status, _) =
        server.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": "reset-password-1"})), None);
    assert_eq!(status, 200);

    // `check` (an argument-less `coapgate check` reads the same settings).
    let out = command_on(&db.url(), &["check"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not available for PostgreSQL yet"), "{stderr}");
}

/// Nodes started together on one new database: one creates the admin user, the others find it
/// (none fails because another created it between its look and its insert), and it logs in on
/// every node.
#[test]
fn servers_started_together_on_a_new_database_all_start() {
    if postgres_already("servers_started_together_on_a_new_database_all_start") {
        return;
    }
    let db = PgCluster::database();
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..3).map(|_| scope.spawn(|| Server::start_on(&db, temp_dir("pg-together"), &[]))).collect();
        starts.into_iter().map(|s| s.join().expect("a server failed to start")).collect()
    });
    for server in &servers {
        let (status, body) =
            server.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})), None);
        assert_eq!(status, 200, "{body}");
    }
}
