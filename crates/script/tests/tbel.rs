//! TBEL through the converter engine: the seed decoder gives what the JavaScript one gives,
//! scripts are parsed once per (id, version), and failures map onto the engine's error
//! classes so that the pool's blocking rules apply.

use std::collections::BTreeMap;
use std::sync::Arc;

use coapgate_script::{DecoderScript, Engine, Limits, ScriptError, ScriptLang};
use serde_json::json;

const SEED_JS: &str = r#"var strArray = decodeToString(payload);
var payloadArray = strArray.replace(/\"/g, "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
var result = { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
return result;"#;

const SEED_TBEL: &str = r#"var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
var result = { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
return result;"#;

fn tbel(source: &str, version: u64) -> DecoderScript {
    DecoderScript {
        id: uuid::Uuid::from_u128(7),
        version,
        lang: ScriptLang::Tbel,
        source: Arc::from(source),
    }
}

/// Numbers compared by value: TBEL's parseFloat gives a Java float (`69.0`) where
/// JavaScript gives `69`, exactly as in ThingsBoard.
fn same_values(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_values(p, q))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_values(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn seed_decoder_in_tbel_matches_javascript() {
    let mut engine = Engine::new(Limits::default());
    let md = BTreeMap::new();
    for payload in [
        &b"SN-001,default,temperature,25.7,humidity,69"[..],
        b"\"SN-2\",thermo,t,-3.5",
        b"x,y",
    ] {
        let js = engine
            .decode(
                &DecoderScript::js(uuid::Uuid::from_u128(1), 1, SEED_JS),
                payload,
                &md,
            )
            .unwrap();
        let tb = engine.decode(&tbel(SEED_TBEL, 1), payload, &md).unwrap();
        assert!(same_values(&js, &tb), "JS {js} vs TBEL {tb}");
    }
    let tb = engine
        .decode(
            &tbel(SEED_TBEL, 1),
            b"SN-001,default,temperature,25.7,humidity,69",
            &md,
        )
        .unwrap();
    assert_eq!(
        tb,
        json!({"deviceName": "SN-001", "deviceType": "default",
               "telemetry": {"temperature": 25.7, "humidity": 69.0}, "attributes": {}})
    );
}

#[test]
fn parsed_once_per_version() {
    let mut engine = Engine::new(Limits::default());
    let md: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into_iter().collect();
    for _ in 0..5 {
        assert_eq!(
            engine.decode(&tbel("metadata.k", 1), b"", &md),
            Ok(json!("v"))
        );
    }
    assert_eq!(engine.compile_count(), 1);
    assert_eq!(
        engine.decode(&tbel("metadata.k + 2", 2), b"", &md),
        Ok(json!("v2"))
    );
    assert_eq!(engine.compile_count(), 2);
}

#[test]
fn errors_map_onto_engine_classes() {
    let mut engine = Engine::new(Limits {
        tbel_timeout: std::time::Duration::from_millis(50),
        ..Limits::default()
    });
    let md = BTreeMap::new();
    let e = engine
        .decode(&tbel("var a = 1;\nvar b = (2;", 1), b"", &md)
        .unwrap_err();
    assert!(
        matches!(e, ScriptError::Compile { line: Some(2), .. }),
        "{e:?}"
    );
    assert!(e.counts_towards_block());
    let e = engine
        .decode(&tbel("var a = 1;\nraiseError('bad payload');", 2), b"", &md)
        .unwrap_err();
    assert!(
        matches!(&e, ScriptError::Runtime { line: Some(2), message, .. } if message.contains("bad payload")),
        "{e:?}"
    );
    assert!(!e.counts_towards_block());
    let e = engine
        .decode(&tbel("while (true) {}", 3), b"", &md)
        .unwrap_err();
    assert!(matches!(e, ScriptError::Timeout { .. }), "{e:?}");
    let e = engine
        .decode(
            &tbel(
                "var s = 'x'.repeat(100000); var l = []; while (true) { l.add(s); }",
                4,
            ),
            b"",
            &md,
        )
        .unwrap_err();
    assert!(matches!(e, ScriptError::MemoryLimit { .. }), "{e:?}");
    assert!(e.counts_towards_block());
    // The engine keeps working for other scripts.
    assert_eq!(engine.decode(&tbel("1 + 1", 5), b"", &md), Ok(json!(2)));
}
