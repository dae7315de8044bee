//! `cargo bench -p coapgate-script`: decoder calls per second on one core.
//!
//! One `Engine` on this thread, as one pool worker has it: the script is compiled once and each
//! call builds the payload array and metadata object, runs the decoder and serialises the
//! result to JSON. Prints calls/s for the seed tutorial's decoder and for a binary decoder in the
//! style of published converters. No external harness: the numbers are what a worker does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coapgate_script::{DecoderScript, Engine, Limits};

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
var bin = atob(data.data);
var b = [];
for (var i = 0; i < bin.length; i++) b.push(bin.charCodeAt(i));
var raw = (b[1] << 8) | b[2];
if (raw & 0x8000) raw -= 0x10000;
return { deviceName: data.dev, telemetry: { ts: data.ts, values: { temperature: raw / 100, humidity: b[3] / 2 } } };"#;

fn bench(name: &str, script: &str, payload: &[u8]) {
    let mut engine = Engine::new(Limits::default());
    let script = DecoderScript::js(uuid::Uuid::new_v4(), 1, script);
    let metadata: BTreeMap<String, String> = [
        ("integrationName".to_string(), "CoAP Integration".to_string()),
        ("Option:uri".to_string(), "/i/0b5c1f3e-8f7b-4a0e-9c55-2c0f1a3c9d11".to_string()),
        ("Option:content-format".to_string(), "0".to_string()),
    ]
    .into_iter()
    .collect();
    let first = engine.decode(&script, payload, &metadata).expect("the benchmark script works");
    // Warm up, then measure for a fixed time.
    for _ in 0..10_000 {
        engine.decode(&script, payload, &metadata).unwrap();
    }
    // `DECODER_CALLS=N` runs exactly N calls (for callgrind, whose counts do not move with the
    // machine's load); otherwise as many as fit in 3 s.
    let fixed: Option<u64> = std::env::var("DECODER_CALLS").ok().and_then(|n| n.parse().ok());
    let started = Instant::now();
    let mut calls = 0u64;
    while fixed.map_or(started.elapsed() < Duration::from_secs(3), |n| calls < n) {
        for _ in 0..1_000 {
            engine.decode(&script, payload, &metadata).unwrap();
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
    // `cargo test --benches` runs this binary with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    bench("seed", SEED, b"SN-001,default,temperature,25.7,humidity,69\n");
    bench("binary", BINARY, br#"{"dev":"env-01","ts":1700000000000,"data":"Af84iwzk"}"#);
}
