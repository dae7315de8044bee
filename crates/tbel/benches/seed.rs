//! `cargo bench -p coapgate-tbel`: TBEL decoder calls per second on one core.
//!
//! The script is parsed once; each call builds the payload list (signed bytes) and the
//! metadata map, evaluates the script and converts the result to JSON, as the converter
//! engine does. No external harness: the numbers are what one worker does.

use std::time::{Duration, Instant};

use coapgate_tbel::{RunLimits, Script};

const SEED: &str = r#"var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
var result = { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
return result;"#;

const BINARY: &str = r#"var data = decodeToJson(payload);
var b = base64ToBytes(data.data);
var raw = parseBytesToInt(b, 1, 2);
if (raw > 32767) { raw = raw - 65536; }
return { deviceName: data.dev, telemetry: { ts: data.ts, values: { temperature: raw / 100.0, humidity: (b[3] & 0xFF) / 2.0 } } };"#;

fn bench(name: &str, src: &str, payload: &[u8]) {
    let script =
        Script::compile(src, &["payload", "metadata"]).expect("the benchmark script parses");
    let limits = RunLimits::default();
    let metadata = [
        ("integrationName", "CoAP Integration"),
        ("Option:uri", "/i/0b5c1f3e-8f7b-4a0e-9c55-2c0f1a3c9d11"),
        ("Option:content-format", "0"),
    ];
    let first = script
        .decode(payload, metadata, &limits)
        .expect("the benchmark script works");
    for _ in 0..10_000 {
        script.decode(payload, metadata, &limits).unwrap();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        for _ in 0..1_000 {
            script.decode(payload, metadata, &limits).unwrap();
        }
        calls += 1_000;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name:<8} {:>9.0} calls/s  {:>6.2} µs/call  (output {})",
        calls as f64 / seconds,
        seconds * 1e6 / calls as f64,
        first
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    bench(
        "seed",
        SEED,
        b"SN-001,default,temperature,25.7,humidity,69\n",
    );
    bench(
        "binary",
        BINARY,
        br#"{"dev":"env-01","ts":1700000000000,"data":"Af84iwzk"}"#,
    );
}
