//! Issue #13, findings 1 and 9: password checks cannot starve the server or enumerate users,
//! and credentials can be revoked, rotated and changed. Each test drives the real server over
//! HTTP; logins come from distinct loopback addresses (127.0.0.x) where the per-address limit
//! must not interfere, as they would from distinct attackers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// An HTTP/1.1 answer: status, `Retry-After` if any, JSON body (or `Null`).
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

/// One request over a fresh connection from the loopback address `source`.
fn http_from(source: &str, server: &Server, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> Answer {
    let target: SocketAddr = server.http.trim_start_matches("http://").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source.parse().unwrap(), 0).into()).unwrap();
    socket.connect(&target.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("X-Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let retry_after = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("retry-after")).map(|(_, v)| v.trim().to_string()))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("Retry-After is not seconds: {v:?}")));
    Answer { status, retry_after, body: serde_json::from_str(body).unwrap_or(Value::Null) }
}

fn login_from(source: &str, server: &Server, user: &str, password: &str) -> Answer {
    http_from(source, server, "POST", "/api/auth/login", Some(json!({"username": user, "password": password})), None)
}

fn assert_429(what: &str, answer: &Answer) {
    assert_eq!(answer.status, 429, "{what}: {}", answer.body);
    assert_eq!(answer.body["errorCode"], 33, "{what}: ThingsBoard's TOO_MANY_REQUESTS: {}", answer.body);
    assert!(answer.retry_after.is_some_and(|s| s >= 1), "{what}: 429 without Retry-After");
}

fn pair(server: &Server, password: &str) -> (String, String) {
    let (status, body) =
        server.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": password})), None);
    assert_eq!(status, 200, "login: {body}");
    (body["token"].as_str().unwrap().to_string(), body["refreshToken"].as_str().unwrap().to_string())
}

fn refresh(server: &Server, refresh_token: &str) -> (u16, Value) {
    server.request("POST", "/api/auth/token", Some(json!({"refreshToken": refresh_token})), None)
}

fn user_status(server: &Server, token: &str) -> u16 {
    server.request("GET", "/api/auth/user", None, Some(token)).0
}

#[test]
fn parallel_wrong_logins_hash_two_at_a_time_and_the_excess_gets_429() {
    let server = Arc::new(Server::start());
    let integration = server.seed_integration();
    let token = server.token();
    let attackers = 40;
    let barrier = Arc::new(Barrier::new(attackers + 1));
    let threads: Vec<_> = (0..attackers)
        .map(|i| {
            let (server, barrier) = (server.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                login_from(&format!("127.0.0.{}", 20 + i), &server, &format!("nobody{i}@example.com"), "wrong-password")
            })
        })
        .collect();
    barrier.wait();
    // Ingestion and cheap authenticated calls go on during the flood.
    assert_eq!(CoapClient::new(server.coap).post(&endpoint_path(&integration), SEED_PAYLOAD.as_bytes()), coapgate_coap::message::Code::CREATED);
    assert_eq!(user_status(&server, &token), 200);
    let answers: Vec<Answer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let unauthorized = answers.iter().filter(|a| a.status == 401).count();
    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(unauthorized + shed.len(), attackers, "every answer is 401 or 429");
    assert!(!shed.is_empty(), "{attackers} parallel logins were all queued for hashing: nothing bounds the work");
    for a in &shed {
        assert_429("shed login", a);
    }
    assert!(metric(&server, "coapgate_password_hash_threads_peak") <= 2, "more than two hashes ran at once");
    // Every 401 was one hash (and the admin's login one more); a shed login costs none.
    assert_eq!(metric(&server, "coapgate_password_hashes_total"), unauthorized as u64 + 1);
}

#[test]
fn failed_logins_are_limited_per_address_and_lock_the_user_with_retry_after() {
    let server = Server::start();

    // One address guessing many names: ten failures, then 429 for it, even with the right password.
    for i in 0..10 {
        let a = login_from("127.0.0.50", &server, &format!("guess{i}@example.com"), "wrong-password");
        assert_eq!(a.status, 401, "failure {i}: {}", a.body);
    }
    assert_429("11th failure from one address", &login_from("127.0.0.50", &server, "guess10@example.com", "x-wrong"));
    assert_429("right password from a blocked address", &login_from("127.0.0.50", &server, ADMIN_USER, ADMIN_PASSWORD));
    assert_eq!(login_from("127.0.0.51", &server, ADMIN_USER, ADMIN_PASSWORD).status, 200, "other addresses unaffected");

    // ThingsBoard's lockout: five failures for one user from anywhere lock it, right password or not.
    for i in 0..5 {
        let a = login_from(&format!("127.0.0.{}", 60 + i), &server, ADMIN_USER, "wrong-password");
        assert_eq!(a.status, 401, "failure {i}: {}", a.body);
    }
    let locked = login_from("127.0.0.70", &server, ADMIN_USER, ADMIN_PASSWORD);
    assert_429("locked user", &locked);
    assert!(locked.retry_after.unwrap() > 60, "the lock lasts minutes, Retry-After {:?}", locked.retry_after);

    // An unknown name locks the same way, so the lockout tells nothing about which names exist.
    for i in 0..5 {
        assert_eq!(login_from(&format!("127.0.0.{}", 80 + i), &server, "ghost@example.com", "wrong-password").status, 401);
    }
    assert_429("locked unknown name", &login_from("127.0.0.90", &server, "ghost@example.com", "wrong-password"));
}

#[test]
fn unknown_users_cost_the_same_hash_as_known_ones() {
    let server = Server::start();
    let before = metric(&server, "coapgate_password_hashes_total");
    for i in 0..3 {
        let a = login_from(&format!("127.0.1.{i}"), &server, &format!("unknown{i}@example.com"), "wrong-password");
        assert_eq!(a.status, 401);
    }
    assert_eq!(metric(&server, "coapgate_password_hashes_total") - before, 3, "an unknown user answered without hashing");
    for i in 0..3 {
        let a = login_from(&format!("127.0.1.{}", 10 + i), &server, ADMIN_USER, "wrong-password");
        assert_eq!(a.status, 401);
    }
    assert_eq!(metric(&server, "coapgate_password_hashes_total") - before, 6);
    // The same answer for both, byte for byte apart from the time.
    let unknown = login_from("127.0.1.20", &server, "unknown@example.com", "wrong-password").body;
    let known = login_from("127.0.1.21", &server, ADMIN_USER, "wrong-password").body;
    assert_eq!((unknown["status"].clone(), unknown["message"].clone()), (known["status"].clone(), known["message"].clone()));
}

#[test]
fn logout_revokes_the_sessions_tokens_across_a_restart() {
    let server = Server::start();
    let (token, refresh_token) = pair(&server, ADMIN_PASSWORD);
    let (other, _) = pair(&server, ADMIN_PASSWORD);
    assert_eq!(user_status(&server, &token), 200);
    let (status, body) = server.request("POST", "/api/auth/logout", None, Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(user_status(&server, &token), 401, "access token works after logout");
    assert_eq!(refresh(&server, &refresh_token).0, 401, "refresh token works after logout");
    assert_eq!(user_status(&server, &other), 200, "another login's session is not ended");

    let dir = server.kill();
    let server = Server::start_in(dir, &[], &[]);
    assert_eq!(user_status(&server, &token), 401, "logout forgotten by a restart");
    assert_eq!(user_status(&server, &other), 200, "a live session forgotten by a restart");
}

#[test]
fn refresh_tokens_rotate_and_a_reused_one_ends_its_family() {
    let server = Server::start();
    let (access0, refresh0) = pair(&server, ADMIN_PASSWORD);
    let (status, next) = refresh(&server, &refresh0);
    assert_eq!(status, 200, "{next}");
    let (access1, refresh1) = (next["token"].as_str().unwrap().to_string(), next["refreshToken"].as_str().unwrap().to_string());
    assert_ne!(refresh1, refresh0);
    assert_eq!(user_status(&server, &access1), 200);

    // The old refresh token again (a thief's copy, or the owner's after the thief refreshed).
    let (status, body) = refresh(&server, &refresh0);
    assert_eq!(status, 401, "a rotated refresh token was accepted again: {body}");
    for (what, status) in [
        ("latest refresh token", refresh(&server, &refresh1).0),
        ("latest access token", user_status(&server, &access1)),
        ("first access token", user_status(&server, &access0)),
    ] {
        assert_eq!(status, 401, "{what} of a family with a reused refresh token still works");
    }
    // A new login is a new family.
    let (access, _) = pair(&server, ADMIN_PASSWORD);
    assert_eq!(user_status(&server, &access), 200);
}

#[test]
fn change_password_checks_the_current_one_and_the_policy_and_ends_old_sessions() {
    let server = Server::start();
    let (token, refresh_token) = pair(&server, ADMIN_PASSWORD);
    let change = |current: &str, new: &str| {
        server.request("POST", "/api/auth/changePassword", Some(json!({"currentPassword": current, "newPassword": new})), Some(&token))
    };
    let (status, body) = server.request("POST", "/api/auth/changePassword", Some(json!({"newPassword": "abcdefgh"})), Some(&token));
    assert!(status == 400 && body["message"].as_str().unwrap().contains("currentPassword"), "{status} {body}");
    let (status, body) = change("not-the-password", "new-password-1");
    assert!(status == 400 && body["message"] == "Current password doesn't match!", "{status} {body}");
    // ThingsBoard's default policy: six characters at least.
    let (status, body) = change(ADMIN_PASSWORD, "12345");
    assert!(status == 400 && body["message"].as_str().unwrap().contains('6'), "a 5-character password: {status} {body}");
    let (status, body) = change(ADMIN_PASSWORD, ADMIN_PASSWORD);
    assert_eq!(status, 400, "the same password again: {body}");

    let (status, body) = change(ADMIN_PASSWORD, "new-password-1");
    assert_eq!(status, 200, "{body}");
    let new_token = body["token"].as_str().expect("a new token pair, as ThingsBoard answers").to_string();
    assert_eq!(user_status(&server, &new_token), 200);
    assert_eq!(user_status(&server, &token), 401, "a token from before the change still works");
    assert_eq!(refresh(&server, &refresh_token).0, 401, "a refresh token from before the change still works");
    let (status, _) =
        server.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})), None);
    assert_eq!(status, 401, "the old password still logs in");
    pair(&server, "new-password-1");
}

#[test]
fn a_configured_admin_password_must_meet_the_policy() {
    let stderr = refused_start(&[("COAPGATE_ADMIN_PASSWORD", "x")]);
    assert!(stderr.contains("COAPGATE_ADMIN_PASSWORD") && stderr.contains("6 or more characters"), "{stderr}");
}

fn assert_private(dir: &std::path::Path, min_files: usize) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", dir.display());
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}: other local users can read it", entry.path().display());
        files += 1;
    }
    assert!(files >= min_files, "expected the databases in {}", dir.display());
}

#[test]
fn secrets_and_databases_are_created_private_and_old_ones_tightened() {
    let server = Server::start();
    let integration = server.seed_integration();
    assert_eq!(CoapClient::new(server.coap).post(&endpoint_path(&integration), SEED_PAYLOAD.as_bytes()), coapgate_coap::message::Code::CREATED);
    // The SQLite databases (main, history, events) are files here; on PostgreSQL the secrets are
    // in the database server, and what remains is the directory and whatever it holds.
    let databases = if on_postgres() { 0 } else { 3 };
    assert_private(&server.data_dir, databases);

    // Files an older version left readable are made private at start.
    let dir = server.kill();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start_in(dir, &[], &[]);
    assert_private(&server.data_dir, databases);
}

/// `coapgate reset-password` on a stopped server's data (and database, on PostgreSQL).
fn reset_password(dir: &DataDir, stdin: &str) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_coapgate"));
    command.env_remove("DATABASE_URL");
    if let Some(url) = dir.database_url() {
        command.env("DATABASE_URL", url);
    }
    let mut child = command
        .args(["reset-password", "--password-stdin", "--data-dir"])
        .arg(&dir.path)
        .env_remove("COAPGATE_DATA_DIR")
        .env_remove("COAPGATE_ADMIN_USERNAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn reset_password_from_the_command_line_replaces_the_password_and_its_tokens() {
    let server = Server::start();
    let (token, _) = pair(&server, ADMIN_PASSWORD);
    let dir = server.kill();

    let out = reset_password(&dir, "short\n");
    assert!(!out.status.success(), "a 5-character password was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("6 or more characters"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = reset_password(&dir, "reset-password-1\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // COAPGATE_ADMIN_PASSWORD (the old one, set by the harness) no longer decides.
    let server = Server::start_in(dir, &[], &[]);
    assert_eq!(user_status(&server, &token), 401, "a token from before the reset still works");
    let (status, _) =
        server.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})), None);
    assert_eq!(status, 401, "the old password still logs in");
    let (access, _) = pair(&server, "reset-password-1");
    assert_eq!(user_status(&server, &access), 200);
}

/// A database outside the data directory gets its own files made private, and nothing else: the
/// directory it lives in may be shared (`/tmp`), and its mode and other files are not the
/// server's. (A server once made `/tmp` 0700 and every file in it 0600 this way.)
#[test]
fn a_database_in_a_shared_directory_leaves_the_directory_alone() {
    if postgres_already("a_database_in_a_shared_directory_leaves_the_directory_alone") {
        return;
    }
    let shared = temp_dir("shared-dir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let neighbour = shared.join("someone-elses.txt");
    std::fs::write(&neighbour, "not coapgate's").unwrap();
    std::fs::set_permissions(&neighbour, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!("sqlite://{}", shared.join("fleet.db").display());
    let server = Server::start_with(&[("DATABASE_URL", url.as_str())], &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&shared), 0o1777, "the shared directory's mode was changed");
    assert_eq!(mode(&neighbour), 0o644, "another program's file was changed");
    for name in ["fleet.db", "fleet-history.db", "fleet-events.db"] {
        assert_eq!(mode(&shared.join(name)) & 0o077, 0, "{name} is readable by others");
    }
    // A restart tightens an older database's files, still nothing else.
    let dir = server.kill();
    std::fs::set_permissions(shared.join("fleet.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start_in(dir, &[("DATABASE_URL", url.as_str())], &[]);
    assert_eq!(mode(&shared.join("fleet.db")) & 0o077, 0);
    assert_eq!((mode(&shared), mode(&neighbour)), (0o1777, 0o644));
    drop(server);
    let _ = std::fs::remove_dir_all(&shared);
}
