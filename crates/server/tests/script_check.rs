//! `POST /api/coapgate/converter/checkScript`, the console editor's "does this compile?": the
//! answer names the line (and column) of the user's own text, whatever the server wraps the
//! decoder body in; nothing of the script runs; only a logged-in user may ask; input is bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CHECK: &str = "/api/coapgate/converter/checkScript";

fn check(server: &Server, lang: &str, script: &str) -> Value {
    server.api("POST", CHECK, Some(json!({"scriptLang": lang, "script": script})))
}

#[test]
fn javascript_errors_name_the_users_line_and_column() {
    let server = Server::start();
    assert_eq!(check(&server, "JS", SEED_DECODER), json!({"ok": true}));
    // Compiled, not run: a body that would loop forever or throw is valid.
    assert_eq!(check(&server, "JS", "while (true) {}\nthrow new Error('ran');"), json!({"ok": true}));

    let broken = "var text = decodeToString(payload);\nvar parts = text.split(',');\nvar result = {deviceName: parts[0],, telemetry: {}};\nreturn result;";
    let r = check(&server, "JS", broken);
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(r["line"], json!(3), "the user's line 3: {r}");
    assert_eq!(r["column"], json!(36), "the second comma: {r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("SyntaxError") && error.ends_with("at line 3"), "{error}");

    // Line 1 shares its line with the wrapper's `function Decoder(…) {`: the column is still
    // the user's.
    let r = check(&server, "JS", "var a = ;");
    assert_eq!((&r["line"], &r["column"]), (&json!(1), &json!(9)), "{r}");
    // An unclosed block is found only at the wrapper's closing line, which the user never
    // wrote: the problem is reported at the end of the user's last line.
    let r = check(&server, "JS", "if (payload.length) {\n  return {deviceName: 'a'};");
    assert_eq!((&r["ok"], &r["line"], &r["column"]), (&json!(false), &json!(2), &json!(28)), "{r}");
}

#[test]
fn tbel_errors_name_the_users_line() {
    let server = Server::start();
    let good = "var s = decodeToString(payload);\nvar parts = s.split(',');\nreturn {deviceName: parts[0], telemetry: {t: parts[1]}};";
    assert_eq!(check(&server, "TBEL", good), json!({"ok": true}));
    let broken = "var s = decodeToString(payload);\nvar parts = s.split(',');\nvar t = (parts[1];\nreturn {deviceName: parts[0]};";
    let r = check(&server, "TBEL", broken);
    assert_eq!((&r["ok"], &r["line"]), (&json!(false), &json!(3)), "{r}");
    assert!(r["column"].as_u64().is_some(), "TBEL knows the column: {r}");
    assert!(r["error"].as_str().unwrap().starts_with("compile error:"), "{r}");
    // The language matters: valid JavaScript that TBEL cannot parse.
    let r = check(&server, "TBEL", "const f = (x) => x * 2;\nreturn {deviceName: 'a', v: f(2)};");
    assert_eq!(r["ok"], json!(false), "{r}");
}

#[test]
fn only_for_logged_in_users_and_bounded() {
    let server = Server::start();
    let body = json!({"scriptLang": "JS", "script": "return 1;"});
    assert_eq!(server.request("POST", CHECK, Some(body.clone()), None).0, 401);
    assert_eq!(server.request("POST", CHECK, Some(body), Some("not-a-token")).0, 401);

    let token = server.token();
    // A script over the converter limit (50,000 characters) is refused, not compiled.
    let long = "var a = 1;\n".repeat(5_000);
    let (status, r) = server.request("POST", CHECK, Some(json!({"scriptLang": "JS", "script": long})), Some(&token));
    assert_eq!(status, 413, "{r}");
    assert!(r["message"].as_str().unwrap().contains("50000"), "{r}");
    // A body far beyond any script is refused by its announced length, before it is read:
    // only the headers are sent.
    let head = refused_by_length(&server, &token, 4 * 1024 * 1024);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Wrong input is named.
    let (status, r) = server.request("POST", CHECK, Some(json!({"scriptLang": "LUA", "script": "x"})), Some(&token));
    assert_eq!((status, r["message"].as_str().unwrap().contains("scriptLang")), (400, true), "{r}");
    let (status, r) = server.request("POST", CHECK, Some(json!({"scriptLang": "JS"})), Some(&token));
    assert_eq!((status, r["message"].as_str().unwrap().contains("script")), (400, true), "{r}");
    // The server is still fine.
    assert_eq!(check(&server, "JS", "return 1;"), json!({"ok": true}));
}

/// Sends only the headers of a POST announcing `length` bytes; returns the answer's head.
fn refused_by_length(server: &Server, token: &str, length: usize) -> String {
    let address = server.http.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!(
        "POST {CHECK} HTTP/1.1\r\nHost: {address}\r\nX-Authorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).expect("an answer before the body is sent");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
