//! The console's browser tests: Debian's Chromium driven by `playwright-core` (node scripts in
//! `tests/browser/`), against the real binary. Shared by every `console*.rs` test file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::json;

use super::*;

/// One browser at a time: the tests share two cores with the server under test.
static BROWSER: Mutex<()> = Mutex::new(());

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails with the way to fix it when Chromium, node or playwright-core is missing.
pub fn require_browser_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run .ci/run (it installs Debian's chromium), or apt-get install chromium"
    );
    assert!(
        Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()),
        "node is missing: run .ci/run, or install Node.js 20+"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core/package.json").exists(),
        "playwright-core is missing: run .ci/run (it runs `npm ci` in crates/server/tests/browser)"
    );
}

/// Runs `tests/browser/<script>` against `server`; panics with the script's output on failure.
pub fn run_browser(script: &str, server: &Server, extra: &[(&str, String)]) {
    require_browser_tools();
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join(script))
        .current_dir(browser_dir())
        .env("BASE_URL", &server.http)
        .env("USERNAME", ADMIN_USER)
        .env("PASSWORD", ADMIN_PASSWORD)
        .env("COAP_PORT", server.coap.port().to_string());
    if std::env::var("SCREENSHOTS").is_ok_and(|v| v == "1") {
        cmd.env("SCREENSHOT_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"));
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "browser test {script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
}

/// A converter and integration of the seed tutorial with "debug all" on, made through the API.
pub fn seed_with_debug(server: &Server) -> (serde_json::Value, serde_json::Value) {
    let debug = json!({"failuresEnabled": true, "allEnabled": true});
    let converter = server.api(
        "POST",
        "/api/converter",
        Some(json!({"name": "CoAP Uplink Converter", "type": "UPLINK", "integrationType": "COAP", "debugSettings": debug,
                    "configuration": {"scriptLang": "JS", "decoder": SEED_DECODER}})),
    );
    let integration = server.create_integration("CoAP Integration", &converter, json!({"debugSettings": debug}));
    (converter, integration)
}

pub fn endpoint(integration: &serde_json::Value) -> String {
    integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string()
}

