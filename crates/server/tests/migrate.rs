//! `coapgate migrate` with the real binary: the seed tutorial on SQLite, the server stopped, the
//! data directory migrated into PostgreSQL (a private cluster), and `serve` on PostgreSQL
//! answering the same device, telemetry, converter and login — the old token included.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use coapgate_coap::message::Code;
use common::*;
use serde_json::{Value, json};

const NEW_PASSWORD: &str = "migrated-password-1";

fn migrate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coapgate"));
    cmd.arg("migrate")
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("SPRING_DATASOURCE_URL")
        .env_remove("COAPGATE_DATA_DIR")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running coapgate migrate")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn a_seeded_sqlite_server_continues_on_postgres_after_migrate() {
    if postgres_already("a_seeded_sqlite_server_continues_on_postgres_after_migrate") {
        return;
    }
    let server = Server::start();
    let integration = server.seed_integration();
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string();
    let out = shell(&format!("echo -e '{SEED_PAYLOAD}' | coap-client-notls -m post {endpoint} -t text/plain -f-"));
    assert!(out.status.success(), "coap-client failed: {}", text(&out.stderr));
    let path = endpoint_path(&integration);
    let mut client = CoapClient::new(server.coap);
    assert_eq!(client.post(&path, b"SN-002,meter,temperature,19.5,humidity,40"), Code::CREATED);
    assert_eq!(client.post(&path, b"SN-002,meter,temperature,19.75,humidity,41"), Code::CREATED);
    let (status, body) = server.request(
        "POST",
        "/api/auth/changePassword",
        Some(json!({"currentPassword": ADMIN_PASSWORD, "newPassword": NEW_PASSWORD})),
        Some(&server.token()),
    );
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let get = |server: &Server, path: &str| {
        let (status, mut body) = server.request("GET", path, None, Some(&token));
        assert_eq!(status, 200, "GET {path}: {body}");
        // The live message counters are partly this process's memory (counts not yet stored as
        // a STATS event, lost with the SIGKILL below): not data that moves with the database.
        if let Some(o) = body.as_object_mut() {
            o.remove("messages24h");
        }
        body
    };
    let device = get(&server, "/api/tenant/devices?deviceName=SN-001");
    let sn2 = get(&server, "/api/tenant/devices?deviceName=SN-002");
    let paths = [
        format!("/api/integration/{}", id_of(&integration)),
        format!("/api/converter/{}", integration["defaultConverterId"]["id"].as_str().unwrap()),
        "/api/tenant/devices?pageSize=10&page=0".to_string(),
        format!("/api/plugins/telemetry/DEVICE/{}/values/timeseries", id_of(&device)),
        format!("/api/plugins/telemetry/DEVICE/{}/values/timeseries?keys=temperature,humidity&startTs=0&endTs=9999999999999", id_of(&sn2)),
        format!("/api/plugins/telemetry/DEVICE/{}/keys/timeseries", id_of(&sn2)),
    ];
    let before: Vec<Value> = paths.iter().map(|p| get(&server, p)).collect();
    // A customer user invited but not activated yet: its link must work on PostgreSQL too.
    // (With the token of the password change: it ended the harness's session.)
    let call = |method: &str, path: &str, body: Option<Value>| {
        let (status, body) = server.request(method, path, body, Some(&token));
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    };
    let customer = call("POST", "/api/customer", Some(json!({"title": "Migrating"})));
    let invited = call(
        "POST",
        "/api/user?sendActivationMail=false",
        Some(json!({"email": "invited@example.org", "authority": "CUSTOMER_USER", "customerId": customer["id"]})),
    );
    let link = call("GET", &format!("/api/user/{}/activationLink", id_of(&invited)), None);
    let activate_token = link.as_str().unwrap().rsplit("activateToken=").next().unwrap().to_string();

    // While the server runs, its files are locked: one clear line, nothing copied.
    let db = PgCluster::database();
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    let refused = migrate(&["--data-dir", &data_dir, "--to", &db.url()], &[]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("in use") && stderr.contains("stop the coapgate server"), "{stderr}");

    // Killed, not stopped: the migration reads what the write-ahead logs hold too. The target
    // comes from DATABASE_URL, as `serve` would read it.
    let dir = server.kill();
    let out = migrate(&["--data-dir", &data_dir], &[("DATABASE_URL", &db.url())]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "migrate failed: {}{stdout}", text(&out.stderr));
    assert!(stdout.contains("counts match"), "{stdout}");
    let ts_kv = stdout.lines().find(|l| l.starts_with("ts_kv ")).unwrap_or_else(|| panic!("{stdout}"));
    let counts: Vec<u64> = ts_kv.split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
    assert!(counts.len() == 2 && counts[0] == counts[1] && counts[0] >= 4, "{stdout}");

    // A second run finds nothing left to copy.
    let again = migrate(&["--data-dir", &data_dir, "--to", &db.url()], &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("resumed: copied 0 rows"), "{}", text(&again.stdout));

    // serve on PostgreSQL, with a data directory of its own: everything comes from the database.
    let pg = Server::start_on(&db, temp_dir("migrated"), &[]);
    for (path, expected) in paths.iter().zip(&before) {
        assert_eq!(&get(&pg, path), expected, "GET {path} after the migration");
    }
    // The password changed on SQLite is the one that logs in.
    let login = |password: &str| pg.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": password})), None).0;
    assert_eq!(login(NEW_PASSWORD), 200);
    assert_eq!(login(ADMIN_PASSWORD), 401);
    let (status, pair) = pg.request(
        "POST",
        "/api/noauth/activate",
        Some(json!({"activateToken": activate_token, "password": "invited-password-1"})),
        None,
    );
    assert_eq!(status, 200, "the invitation made on SQLite activates on PostgreSQL: {pair}");
    // And the devices keep sending to the same routing key.
    assert_eq!(CoapClient::new(pg.coap).post(&path, b"SN-001,default,temperature,26.5,humidity,70"), Code::CREATED);
    let latest = eventually(Duration::from_secs(5), || {
        let latest = get(&pg, &paths[3]);
        (latest["temperature"][0]["value"] == "26.5").then_some(latest)
    });
    assert!(latest.is_some(), "the new uplink's point");

    // Now the target holds a point the source does not: a new run says so and fails.
    let after = migrate(&["--data-dir", &data_dir, "--to", &db.url()], &[]);
    let stdout = text(&after.stdout);
    assert!(!after.status.success(), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("ts_kv ") && l.ends_with("MISMATCH")), "{stdout}");
    // (and its exchange, and the new server's lifecycle events, once recorded)
    let stderr = text(&after.stderr);
    let differ = stderr.lines().find(|l| l.contains("counts differ for")).unwrap_or_default();
    assert!(differ.contains("ts_kv") && differ.contains("coap_exchange"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// One uplink stores `POINTS_PER_UPLINK` timestamps of two keys for the device it names.
const MANY_POINTS_DECODER: &str = "var name = decodeToString(payload); var t = []; \
     for (var i = 0; i < 1500; i++) t.push({ts: 1735689600000 + i * 60000, values: {t: i / 4, n: i}}); \
     return {deviceName: name, deviceType: 'meter', telemetry: t};";
const POINTS_PER_UPLINK: i64 = 1500 * 2;

#[test]
fn a_migration_killed_at_any_moment_finishes_on_the_next_run() {
    if postgres_already("a_migration_killed_at_any_moment_finishes_on_the_next_run") {
        return;
    }
    const DEVICES: i64 = 40;
    const POINTS: i64 = DEVICES * POINTS_PER_UPLINK;
    // The points of a server killed within the compactor's 10 s: all in ts_kv_recent.
    let server = Server::start();
    let converter = server.create_converter("many points", MANY_POINTS_DECODER);
    let integration = server.create_integration("many points", &converter, json!({}));
    let mut client = CoapClient::new(server.coap);
    for d in 0..DEVICES {
        assert_eq!(client.post(&endpoint_path(&integration), format!("dev-{d}").as_bytes()), Code::CREATED);
    }
    let dir = server.kill();
    let db = PgCluster::database();
    let data_dir = dir.to_string_lossy().into_owned();
    let args = ["--data-dir", data_dir.as_str(), "--to", &db.url(), "--chunk-rows", "2000"];
    let mut admin = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
    let copied_points = |admin: &mut postgres::Client| -> i64 {
        admin
            .query_opt("SELECT rows_copied FROM migration_progress WHERE table_name = 'ts_kv'", &[])
            .ok()
            .flatten()
            .map_or(0, |r| r.get(0))
    };
    let (mut kills, mut killed_while_copying_points) = (0, 0);
    let mut delay = Duration::from_millis(100);
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(300), "never finished: {kills} kills");
        let mut child = Command::new(env!("CARGO_BIN_EXE_coapgate"))
            .arg("migrate")
            .args(args)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let copied = copied_points(&mut admin);
        if copied > 0 && copied < POINTS {
            killed_while_copying_points += 1;
        }
        // Kills early and late in a run, again and again: every run but the first few starts
        // copying at once, so most land in the middle of the points.
        delay = Duration::from_millis(100 + 150 * (kills % 10));
    }
    assert!(kills >= 2 && killed_while_copying_points >= 1, "{kills} kills, {killed_while_copying_points} while copying points");
    // The run after the last kill finished; one more only checks the counts again.
    let out = migrate(&args, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    assert!(stdout.contains("counts match") && stdout.contains("resumed: copied 0 rows"), "{stdout}");
    let ts_kv = stdout.lines().find(|l| l.starts_with("ts_kv ")).unwrap();
    assert_eq!(ts_kv.split_whitespace().skip(1).collect::<Vec<_>>(), [POINTS.to_string(), POINTS.to_string()], "{stdout}");
    // Every point once, with its value: the primary key would have refused a second copy.
    let sum: f64 = admin.query_one("SELECT sum(coalesce(dbl_v, long_v)) FROM ts_kv", &[]).unwrap().get(0);
    let per_device: f64 = (0..1_500).map(|i| i as f64 / 4.0 + i as f64).sum();
    assert_eq!(sum, DEVICES as f64 * per_device);
    let _ = std::fs::remove_dir_all(dir);
}
