//! Start-up and the other subcommands: configuration errors stop `coapgate serve` with one clear
//! line naming the setting, the first-run admin password, `coapgate config` and `coapgate decode`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coapgate_coap::message::Code;
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");

/// `coapgate serve` on 127.0.0.1 with free ports and `data_dir`, the given environment on top;
/// no DATABASE_URL and no RUST_LOG from the caller's environment, so the defaults are tested.
fn serve_command(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(args)
        .env("COAPGATE_DATA_DIR", data_dir)
        .env("HTTP_BIND_ADDRESS", "127.0.0.1")
        .env("HTTP_BIND_PORT", "0")
        .env("COAP_BIND_ADDRESS", "127.0.0.1")
        .env("COAP_BIND_PORT", "0")
        .env("COAPGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("DATABASE_URL")
        .env_remove("COAP_DTLS_ENABLED")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a `serve` that must fail: returns its output, failing the test if it is still running
/// after 10 s.
fn serve_must_fail(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let started = Instant::now();
    let mut child = serve_command(data_dir, env, args).spawn().expect("starting coapgate");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve with {env:?} {args:?} did not stop within 10 s\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The one `error:` line of a failed start; fails the test unless there is exactly one and the
/// exit code is non-zero.
fn the_error_line(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: exited successfully\nstderr: {stderr}");
    assert!(
        out.status.code().is_some(),
        "{what}: killed by a signal instead of exiting: {:?}\nstderr: {stderr}",
        out.status
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: expected exactly one `error:` line on stderr, got:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("REST API"), "{what}: printed the ready banner before failing:\n{stdout}");
    errors[0].to_string()
}

/// What is wrong, the environment, the arguments, and texts of which the error line must contain
/// at least one.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>, Vec<&'a str>);

#[test]
fn configuration_errors_stop_startup_with_one_line() {
    let data_dir = temp_dir("startup-errors");
    let http_taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http_taken.local_addr().unwrap().port().to_string();
    let coap_taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let coap_port = coap_taken.local_addr().unwrap().port().to_string();
    let unknown_key_file = data_dir.join("unknown-key.toml");
    std::fs::write(&unknown_key_file, "http_bind_port = 0\ncolour_scheme = \"blue\"\n").unwrap();
    let bad_toml_file = data_dir.join("bad.toml");
    std::fs::write(&bad_toml_file, "http_bind_port = = 0\n").unwrap();
    let file_as_data_dir = data_dir.join("not-a-directory");
    std::fs::write(&file_as_data_dir, "I am a file").unwrap();
    let missing_file = data_dir.join("does-not-exist.toml");
    let junk_db = data_dir.join("junk.db");
    std::fs::write(&junk_db, "this is not a SQLite database, just some text that is long enough\n".repeat(20)).unwrap();
    // A directory inside the test's own: whatever start-up leaves beside it stays in there.
    let dir_as_db = data_dir.join("a-directory");
    std::fs::create_dir(&dir_as_db).unwrap();
    let db_is_dir = format!("sqlite://{}", dir_as_db.display());
    let db_is_junk = format!("sqlite://{}", junk_db.display());
    let (unknown_key, bad_toml, file_dir, missing) = (
        unknown_key_file.to_str().unwrap(),
        bad_toml_file.to_str().unwrap(),
        file_as_data_dir.to_str().unwrap(),
        missing_file.to_str().unwrap(),
    );

    let cases: Vec<Case> = vec![
        ("COAP_BIND_PORT=abc", vec![("COAP_BIND_PORT", "abc")], vec![], vec!["COAP_BIND_PORT"]),
        ("HTTP_BIND_PORT=70000", vec![("HTTP_BIND_PORT", "70000")], vec![], vec!["HTTP_BIND_PORT"]),
        ("HTTP port in use", vec![("HTTP_BIND_PORT", &http_port)], vec![], vec!["HTTP_BIND"]),
        ("CoAP port in use", vec![("COAP_BIND_PORT", &coap_port)], vec![], vec!["COAP_BIND"]),
        ("DATABASE_URL=mysql://x", vec![("DATABASE_URL", "mysql://x")], vec![], vec!["DATABASE_URL"]),
        ("DATABASE_URL names a directory", vec![("DATABASE_URL", &db_is_dir)], vec![], vec!["DATABASE_URL"]),
        (
            "DATABASE_URL names a file that is not a database",
            vec![("DATABASE_URL", &db_is_junk)],
            vec![],
            vec!["DATABASE_URL"],
        ),
        ("unknown key in --config", vec![], vec!["--config", unknown_key], vec!["colour_scheme"]),
        ("invalid TOML in --config", vec![], vec!["--config", bad_toml], vec!["--config"]),
        ("missing --config file", vec![], vec!["--config", missing], vec!["--config"]),
        (
            "COAP_DTLS_ENABLED=true without a key store",
            vec![("COAP_DTLS_ENABLED", "true"), ("COAP_DTLS_KEY_STORE", missing)],
            vec![],
            vec!["COAP_DTLS_KEY_STORE"],
        ),
        ("COAP_DTLS_ENABLED=maybe", vec![("COAP_DTLS_ENABLED", "maybe")], vec![], vec!["COAP_DTLS_ENABLED"]),
        ("COAP_BASE_URL=http://x", vec![("COAP_BASE_URL", "http://x")], vec![], vec!["COAP_BASE_URL"]),
        (
            "data dir is a file",
            vec![("COAPGATE_DATA_DIR", file_dir)],
            vec![],
            vec!["COAPGATE_DATA_DIR", "DATABASE_URL"],
        ),
        (
            "--data-dir is a file",
            vec![],
            vec!["--data-dir", file_dir],
            vec!["COAPGATE_DATA_DIR", "DATABASE_URL", "--data-dir"],
        ),
    ];
    // On PostgreSQL the cases run on a database of the test cluster: some fail only after the
    // store is open (the ports), and must still fail cleanly. Not those that choose the database
    // or the data directory: where SQLite's file goes is their subject, and on PostgreSQL the
    // server keeps nothing in the data directory.
    let database = on_postgres().then(PgCluster::database);
    let url = database.as_ref().map(PgDatabase::url);
    // Run them two at a time: each is a process start, and the machine is shared.
    std::thread::scope(|scope| {
        for chunk in cases.chunks(cases.len().div_ceil(2)) {
            let (data_dir, url) = (&data_dir, &url);
            scope.spawn(move || {
                for (what, env, args, needles) in chunk {
                    let mut env = env.clone();
                    let about_sqlite = env.iter().any(|(k, _)| matches!(*k, "DATABASE_URL" | "COAPGATE_DATA_DIR"))
                        || args.contains(&"--data-dir");
                    if let Some(url) = url.as_deref().filter(|_| !about_sqlite) {
                        env.insert(0, ("DATABASE_URL", url));
                    }
                    let started = Instant::now();
                    let out = serve_must_fail(data_dir, &env, args);
                    let line = the_error_line(what, &out);
                    assert!(
                        needles.iter().any(|n| line.contains(n)),
                        "{what}: error line {line:?} should name one of {needles:?}"
                    );
                    // Clear: the cause is said once, not repeated by the error chain.
                    let parts: Vec<&str> = line.split(": ").map(str::trim).filter(|p| p.len() > 8).collect();
                    for (i, part) in parts.iter().enumerate() {
                        assert!(!parts[i + 1..].contains(part), "{what}: {part:?} repeated in {line:?}");
                    }
                    assert!(started.elapsed() < Duration::from_secs(5), "{what}: took {:?} to fail", started.elapsed());
                }
            });
        }
    });
    drop((http_taken, coap_taken));
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// `sqlite://` without a path must not silently run on a temporary database (SQLite opens one
/// for an empty file name), which would lose every acknowledged uplink at exit.
#[test]
fn database_url_without_a_path_is_refused() {
    let data_dir = temp_dir("startup-empty-sqlite");
    let out = serve_must_fail(&data_dir, &[("DATABASE_URL", "sqlite://")], &[]);
    let line = the_error_line("DATABASE_URL=sqlite://", &out);
    assert!(line.contains("DATABASE_URL"), "{line}");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Starts `serve` without COAPGATE_ADMIN_PASSWORD in the environment and returns the process, the
/// REST base URL and all of stdout up to and including the banner.
fn start_without_password(data_dir: &Path, env: &[(&str, &str)]) -> (Child, String, String) {
    let mut cmd = serve_command(data_dir, env, &[]);
    cmd.env_remove("COAPGATE_ADMIN_PASSWORD").env_remove("COAPGATE_ADMIN_USERNAME").stderr(Stdio::null());
    let mut child = cmd.spawn().expect("starting coapgate");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut http = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    // The banner's last line is "data"; the admin line, when printed, follows it at once.
    while http.is_none() || !lines.iter().any(|l: &String| l.trim_start().starts_with("data")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no banner; stdout so far: {lines:?}"));
        if let Some(rest) = line.trim().strip_prefix("REST API  http://") {
            http = Some(format!("http://{}", rest.trim_end_matches("/api")));
        }
        lines.push(line);
    }
    // Whatever else the banner prints arrives right after.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        lines.push(line);
    }
    (child, http.unwrap(), lines.join("\n"))
}

fn login(http: &str, username: &str, password: &str) -> u16 {
    match ureq::post(&format!("{http}/api/auth/login")).send_json(json!({"username": username, "password": password})) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("login: {e}"),
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn generated_admin_password_is_printed_once_and_works() {
    // The admin user is stored in the database: on PostgreSQL, a database per data directory
    // (each handle keeps the test cluster up).
    let (first_db, other_db) = (on_postgres().then(PgCluster::database), on_postgres().then(PgCluster::database));
    let (first_url, other_url) = (first_db.as_ref().map(PgDatabase::url), other_db.as_ref().map(PgDatabase::url));
    let first_env: Vec<(&str, &str)> = first_url.iter().map(|url| ("DATABASE_URL", url.as_str())).collect();
    let other_env: Vec<(&str, &str)> = other_url.iter().map(|url| ("DATABASE_URL", url.as_str())).collect();
    let data_dir = temp_dir("startup-password");
    let (child, http, banner) = start_without_password(&data_dir, &first_env);
    let admin_line = banner
        .lines()
        .find(|l| l.contains(ADMIN_USER))
        .unwrap_or_else(|| panic!("no generated admin password in the banner:\n{banner}"));
    // "admin     tenant@thingsboard.org / PASSWORD   (...)"
    let password = admin_line
        .split_once(&format!("{ADMIN_USER} / "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("cannot read the password from {admin_line:?}"))
        .to_string();
    assert!(password.len() >= 12, "generated password {password:?} is short");
    assert_ne!(password, ADMIN_PASSWORD);
    assert_eq!(login(&http, ADMIN_USER, &password), 200, "the printed password logs in");
    assert_eq!(login(&http, ADMIN_USER, "password"), 401);
    stop(child);

    // Second start on the same data: no password printed, the first one still works.
    let (child, http, banner) = start_without_password(&data_dir, &first_env);
    assert!(!banner.contains(&password), "the password was printed again:\n{banner}");
    assert!(!banner.contains("generated"), "a password was generated again:\n{banner}");
    assert_eq!(login(&http, ADMIN_USER, &password), 200, "the first password survives a restart");
    stop(child);

    // Another first start generates another password.
    let other_dir = temp_dir("startup-password-2");
    let (child, _, other_banner) = start_without_password(&other_dir, &other_env);
    assert!(!other_banner.contains(&password), "two data dirs got the same generated password");
    stop(child);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// SIGTERM (a service manager's stop) ends `serve` with exit status 0, whatever the store.
#[test]
fn sigterm_stops_the_server_cleanly() {
    let server = Server::start();
    let integration = server.seed_integration();
    assert_eq!(CoapClient::new(server.coap).post(&endpoint_path(&integration), SEED_PAYLOAD.as_bytes()), Code::CREATED);
    let status = server.terminate().expect("the server still runs 10 s after SIGTERM");
    assert!(status.success(), "serve ended with {status} on SIGTERM");
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("RUST_LOG").stdin(Stdio::null()).output().expect("running coapgate")
}

fn config_text() -> String {
    let out = run(&["config"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `# key = value` lines whose key is a plain lower-case setting name.
fn setting_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
        })
        .collect()
}

/// Users uncomment the lines they want: every `# key = value` line must then be valid TOML.
#[test]
fn config_prints_a_commented_toml() {
    let text = config_text();
    let settings: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = "))).collect();
    assert!(settings.len() >= 10, "few settings in:\n{text}");
    let mut table = toml::Table::new();
    for line in &settings {
        let parsed: toml::Table = toml::from_str(line).unwrap_or_else(|e| panic!("`{line}` is not TOML: {e}"));
        table.extend(parsed);
    }
    assert_eq!(table.len(), settings.len(), "a key is listed twice");
    for key in [
        "http_bind_address",
        "http_bind_port",
        "coap_bind_address",
        "coap_bind_port",
        "coap_dtls_enabled",
        "database_url",
        "coapgate_data_dir",
        "coapgate_admin_password",
    ] {
        assert!(table.contains_key(key), "`{key}` missing from coapgate config:\n{text}");
    }
    assert_eq!(table["http_bind_port"].as_integer(), Some(8080));
    assert_eq!(table["coap_bind_port"].as_integer(), Some(5683));
    assert_eq!(table["coap_dtls_enabled"].as_bool(), Some(false));
    // Every line has a comment above it saying what it is.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("# ") && line.contains(" = ") {
            assert!(i > 0 && lines[i - 1].starts_with('#') && !lines[i - 1].contains(" = "), "no help above {line:?}");
        }
    }

    assert_eq!(settings.len(), setting_lines(&text).len(), "a help line looks like a setting");
}

/// The whole printed file, uncommented (with free ports and a temp dir), is a valid --config.
#[test]
fn config_file_from_coapgate_config_is_accepted_by_serve() {
    let text = config_text();
    let settings = setting_lines(&text);
    assert!(settings.len() >= 10, "few settings in:\n{text}");
    let data_dir = temp_dir("startup-config");
    let file_text: String = settings
        .iter()
        .map(|line| {
            let key = line.split(" = ").next().unwrap();
            match key {
                "http_bind_address" | "coap_bind_address" => format!("{key} = \"127.0.0.1\"\n"),
                "http_bind_port" | "coap_bind_port" => format!("{key} = 0\n"),
                "coapgate_data_dir" => format!("{key} = {:?}\n", data_dir.display().to_string()),
                _ => format!("{line}\n"),
            }
        })
        .collect();
    let file = data_dir.join("coapgate.toml");
    std::fs::write(&file, &file_text).unwrap();
    let other_dir = temp_dir("startup-config-env");
    // The printed file sets `database_url = ""` (SQLite in the data directory) and the file wins
    // over the environment, so this server runs on SQLite also when the suite runs on
    // PostgreSQL: the subject is the file, not the database.
    let server = Server::start_in(other_dir.clone(), &[], &["--config", file.to_str().unwrap()]);
    assert!(data_dir.join("coapgate.db").exists(), "the file's coapgate_data_dir was not used:\n{file_text}");
    // The file wins over the environment: its empty password means a generated one.
    assert!(server.stdout_text().contains("generated"), "{}", server.stdout_text());
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn write_script(dir: &Path, name: &str, source: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path
}

fn decode_ok(args: &[&str]) -> Value {
    let mut all = vec!["decode"];
    all.extend_from_slice(args);
    let out = run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "decode {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("decode {args:?} printed no JSON ({e}):\n{stdout}"))
}

#[test]
fn decode_runs_scripts_offline() {
    let dir = temp_dir("startup-decode");
    let seed = write_script(&dir, "seed.js", SEED_DECODER);
    let seed = seed.to_str().unwrap();
    let expected = json!({"deviceName": "SN-001", "deviceType": "default",
                          "telemetry": {"temperature": 25.7, "humidity": 69}, "attributes": {}});
    assert_eq!(decode_ok(&["--script", seed, "--text", SEED_PAYLOAD]), expected);
    let hex: String = SEED_PAYLOAD.bytes().map(|b| format!("{b:02x}")).collect();
    assert_eq!(decode_ok(&["--script", seed, "--hex", &hex]), expected);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SEED_PAYLOAD);
    assert_eq!(decode_ok(&["--script", seed, "--base64", &b64]), expected);
    let payload_file = write_script(&dir, "payload.bin", SEED_PAYLOAD);
    assert_eq!(decode_ok(&["--script", seed, "--file", payload_file.to_str().unwrap()]), expected);

    // Bytes reach the script as numbers 0..255; metadata as strings.
    let echo = write_script(
        &dir,
        "echo.js",
        "return {deviceName: metadata.name, deviceType: metadata.kind, telemetry: {bytes: payload, n: payload.length}};",
    );
    let out = decode_ok(&[
        "--script",
        echo.to_str().unwrap(),
        "--hex",
        "00ff7f80",
        "-m",
        "name=dev-1",
        "--metadata",
        "kind=k=v",
    ]);
    assert_eq!(
        out,
        json!({"deviceName": "dev-1", "deviceType": "k=v", "telemetry": {"bytes": [0, 255, 127, 128], "n": 4}})
    );

    // Script errors: non-zero exit, the line on stderr, nothing on stdout.
    for (name, source, line) in [
        ("runtime.js", "var a = 1;\nvar b = 2;\nthrow new Error('boom');\n", 3),
        ("syntax.js", "var a = 1;\nvar b = ;\nreturn a;\n", 2),
        ("typeerror.js", "var x;\n\nreturn x.y;\n", 3),
    ] {
        let script = write_script(&dir, name, source);
        let out = run(&["decode", "--script", script.to_str().unwrap(), "--text", "x"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: exit 0");
        assert!(stderr.contains(&format!("line {line}")), "{name}: stderr should name line {line}:\n{stderr}");
        assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 1, "{name}:\n{stderr}");
        assert!(out.stdout.is_empty(), "{name}: printed output: {}", String::from_utf8_lossy(&out.stdout));
    }

    // Input errors name the flag.
    for (args, flag) in [
        (vec!["--script", seed, "--hex", "abc"], "--hex"),
        (vec!["--script", seed, "--base64", "***"], "--base64"),
        (vec!["--script", seed, "--text", "x", "-m", "novalue"], "--metadata"),
        (vec!["--script", "/nonexistent/script.js", "--text", "x"], "--script"),
    ] {
        let mut all = vec!["decode"];
        all.extend(args.iter().copied());
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: exit 0");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{args:?}: no error line:\n{stderr}"));
        assert!(line.contains(flag), "{args:?}: {line:?} should name {flag}");
    }
    let mut child = Command::new(BIN)
        .args(["decode", "--script", seed])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "decode without a payload must fail");
    assert!(stderr.contains("--text"), "should say how to give the payload: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
