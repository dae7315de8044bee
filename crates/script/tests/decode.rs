//! Behaviour of single decodes: ThingsBoard compatibility, helpers, errors
//! and limits. Data-driven through `check` where the outcome is plain JSON.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coapgate_script::{DecoderScript, Engine, Limits, ScriptError, ScriptLang, decode_once};
use serde_json::{Value, json};

const SEED: &str = r#"var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
  telemetryPayload[payloadArray[i]] = parseFloat(payloadArray[i + 1]);
}
return { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
"#;

fn script(source: &str) -> DecoderScript {
    DecoderScript::js(uuid::Uuid::new_v4(), 1, source)
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(source: &str, payload: &[u8], metadata: &[(&str, &str)]) -> Result<Value, ScriptError> {
    decode_once(
        &script(source),
        payload,
        &meta(metadata),
        &Limits::default(),
    )
}

#[track_caller]
fn check(source: &str, payload: &[u8], metadata: &[(&str, &str)], expected: Value) {
    match run(source, payload, metadata) {
        Ok(v) => assert_eq!(v, expected, "script:\n{source}"),
        Err(e) => panic!("script failed: {e}\n{source}"),
    }
}

#[test]
fn seed_script_matches_thingsboard_output() {
    let out = run(SEED, b"SN-001,default,temperature,25.7,humidity,69\n", &[]).unwrap();
    // Byte for byte: the keys keep the script's order (as ThingsBoard's output does), not
    // an alphabetical one.
    assert_eq!(
        serde_json::to_string(&out).unwrap(),
        r#"{"deviceName":"SN-001","deviceType":"default","telemetry":{"temperature":25.7,"humidity":69},"attributes":{}}"#
    );
    // 69 must stay an integer and 25.7 a float, as ThingsBoard stores them.
    assert!(out["telemetry"]["humidity"].is_i64());
    assert!(out["telemetry"]["temperature"].is_f64());
}

#[test]
fn helpers_and_language_features() {
    let cases: &[(&str, &[u8], Value)] = &[
        // decodeToJson on a JSON payload.
        (
            "var d = decodeToJson(payload); return {name: d.dev, t: d.t * 2};",
            br#"{"dev":"a","t":21.5}"#,
            json!({"name": "a", "t": 43}),
        ),
        // decodeToString decodes multi-byte UTF-8 and is lossy on bad bytes.
        (
            "return decodeToString(payload);",
            "température ✓ 😀".as_bytes(),
            json!("température ✓ 😀"),
        ),
        (
            "return decodeToString(payload);",
            &[0x61, 0xFF, 0x62],
            json!("a\u{FFFD}b"),
        ),
        // Signed bytes and typed arrays are accepted too.
        ("return decodeToString([-61, -87]);", b"", json!("é")),
        (
            "return decodeToString(new Uint8Array([104, 105]));",
            b"",
            json!("hi"),
        ),
        // atob/btoa: round trip and a base64 envelope decoded to bytes.
        ("return btoa('hello');", b"", json!("aGVsbG8=")),
        (
            "return atob(btoa('\\u00ff\\u0000x'));",
            b"",
            json!("\u{ff}\u{0}x"),
        ),
        ("return atob(' aGVs bG8 ');", b"", json!("hello")),
        ("return atob('aGVsbG8');", b"", json!("hello")),
        (
            "var env = decodeToJson(payload); var raw = atob(env.data);\n\
             var bytes = []; for (var i = 0; i < raw.length; i++) bytes.push(raw.charCodeAt(i));\n\
             return bytes;",
            br#"{"data":"AQID"}"#,
            json!([1, 2, 3]),
        ),
        // ES2020: const/let, arrows, Object.fromEntries/entries/assign,
        // Array.from, typed arrays, DataView, template literals, try/catch.
        (
            "const pairs = [['a', 1], ['b', 2]];\n\
             let o = Object.fromEntries(pairs.map(([k, v]) => [k, v * 10]));\n\
             o = Object.assign({}, o, {n: Object.entries(o).length});\n\
             const buf = new Uint8Array(payload).buffer;\n\
             const dv = new DataView(buf);\n\
             let caught = null;\n\
             try { null.x; } catch (e) { caught = e instanceof TypeError; }\n\
             return { o, i16: dv.getInt16(0), le: dv.getInt16(0, true), \
             s: `v=${o.a}`, arr: Array.from({length: 3}, (_, i) => i * i), caught, \
             opt: o?.missing?.x ?? 'dflt' };",
            &[0xFF, 0x38],
            json!({"o": {"a": 10, "b": 20, "n": 2}, "i16": -200, "le": 14591,
                   "s": "v=10", "arr": [0, 1, 4], "caught": true, "opt": "dflt"}),
        ),
        // Returning non-object values.
        (
            "return [1, 'two', {three: 3}];",
            b"",
            json!([1, "two", {"three": 3}]),
        ),
        ("return null;", b"", Value::Null),
        ("return undefined;", b"", Value::Null),
        ("var x = 1;", b"", Value::Null),
        ("return 'text';", b"", json!("text")),
        ("return payload.length;", b"abc", json!(3)),
        // A script's own decodeToString shadows the built-in.
        (
            "function decodeToString(p) { return 'custom:' + String.fromCharCode.apply(String, p); }\n\
             return decodeToString(payload);",
            b"ok",
            json!("custom:ok"),
        ),
        // Date works; no file/network/process access exists.
        (
            "return typeof new Date().getTime() === 'number' && !isNaN(Date.parse('2024-01-01'));",
            b"",
            json!(true),
        ),
        (
            "return [typeof require, typeof std, typeof os, typeof process, typeof fetch, typeof XMLHttpRequest];",
            b"",
            json!([
                "undefined",
                "undefined",
                "undefined",
                "undefined",
                "undefined",
                "undefined"
            ]),
        ),
    ];
    for (source, payload, expected) in cases {
        check(source, payload, &[], expected.clone());
    }
}

#[test]
fn metadata_is_a_plain_string_object() {
    check(
        "return { dev: metadata.deviceName, keys: Object.keys(metadata).sort(), n: metadata.missing === undefined };",
        b"",
        &[("deviceName", "SN-7"), ("integrationName", "coap")],
        json!({"dev": "SN-7", "keys": ["deviceName", "integrationName"], "n": true}),
    );
}

/// The engine makes each call's metadata object from names and values it keeps per script:
/// what one call does to its object must not reach the next, and other metadata must be seen
/// as it is.
#[test]
fn each_call_gets_a_fresh_metadata_object() {
    let mut engine = Engine::new(Limits::default());
    let decoder = script(
        "var seen = JSON.stringify(metadata); metadata.added = 'x'; delete metadata.uri; \
         metadata.integrationName = 'changed'; Object.defineProperty(metadata, 'fixed', {value: 1}); \
         return {seen: seen};",
    );
    let first = meta(&[("integrationName", "coap"), ("uri", "/i/key")]);
    let seen = |engine: &mut Engine, m: &BTreeMap<String, String>| -> Value {
        engine.decode(&decoder, b"", m).unwrap()["seen"].clone()
    };
    let expected = json!(r#"{"integrationName":"coap","uri":"/i/key"}"#);
    assert_eq!(seen(&mut engine, &first), expected);
    assert_eq!(seen(&mut engine, &first), expected, "the second call saw the first call's changes");
    let other = meta(&[("integrationName", "other"), ("uri", "/i/key2"), ("é ключ", "значение 😀")]);
    assert_eq!(seen(&mut engine, &other), json!(r#"{"integrationName":"other","uri":"/i/key2","é ключ":"значение 😀"}"#));
    assert_eq!(seen(&mut engine, &first), expected);
    assert_eq!(seen(&mut engine, &BTreeMap::new()), json!("{}"));
}

#[test]
fn base64_helpers_reject_invalid_input_like_browsers() {
    for source in [
        "return atob('a');",
        "return atob('@@@@');",
        "return btoa('\\u0100');",
    ] {
        match run(source, b"", &[]) {
            Err(ScriptError::Runtime { message, line, .. }) => {
                assert!(message.starts_with("InvalidCharacterError"), "{message}");
                assert_eq!(line, Some(1));
            }
            other => panic!("{source}: expected runtime error, got {other:?}"),
        }
    }
}

#[test]
fn compile_error_reports_user_line() {
    let err = run("var a = 1;\nvar b = 2;\nvar c = ;\nreturn a;", b"", &[]).unwrap_err();
    assert!(
        matches!(err, ScriptError::Compile { line: Some(3), .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("SyntaxError") && text.ends_with("at line 3"),
        "{text}"
    );
}

#[test]
fn runtime_error_reports_user_line_and_stack() {
    let err = run("var a = 1;\n\nfoo(a);\nreturn a;", b"", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ReferenceError: foo is not defined at line 3"
    );
    match err {
        ScriptError::Runtime { line, stack, .. } => {
            assert_eq!(line, Some(3));
            assert!(stack.unwrap().contains("decoder.js:3"));
        }
        other => panic!("{other:?}"),
    }
    // The innermost user frame wins, even when the throw comes from a helper.
    let err = run("var x = 1;\nreturn decodeToJson(payload);", b"{bad", &[]).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(err.to_string().starts_with("SyntaxError"), "{err}");
    // Thrown non-Error values are still reported.
    let err = run("throw 'no device name';", b"", &[]).unwrap_err();
    assert!(err.to_string().contains("no device name"), "{err}");
}

#[test]
fn timeout_stops_script_and_engine_stays_usable() {
    let limits = Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let mut engine = Engine::new(limits);
    let m = BTreeMap::new();
    for source in [
        "while (true) {}",
        // The interrupt cannot be caught by the script.
        "try { for (;;) {} } catch (e) { return 'caught'; }",
        // Catastrophic regex backtracking is interrupted too.
        "return /^(a+)+$/.test('a'.repeat(40) + 'b');",
    ] {
        let started = Instant::now();
        let err = engine.decode(&script(source), b"", &m).unwrap_err();
        assert_eq!(
            err,
            ScriptError::Timeout {
                limit: Duration::from_millis(100)
            },
            "{source}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(err.to_string(), "script execution timed out after 100 ms");
    }
    let out = engine
        .decode(&script(SEED), b"X,t,a,1", &m)
        .expect("engine must work after a timeout");
    assert_eq!(out["telemetry"]["a"], json!(1));
}

#[test]
fn memory_limit_is_enforced_and_engine_recovers() {
    let limits = Limits {
        memory_bytes: 16 * 1024 * 1024,
        // The memory limit, not the clock, must stop these, also on a busy machine.
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let mut engine = Engine::new(limits);
    let m = BTreeMap::new();
    for source in [
        "var a = []; while (true) a.push({k: 'v' + a.length});",
        "var a = []; while (true) a.push('x'.repeat(100000 + a.length));",
        "return new ArrayBuffer(64 * 1024 * 1024).byteLength;",
    ] {
        let err = engine.decode(&script(source), b"", &m).unwrap_err();
        assert_eq!(
            err,
            ScriptError::MemoryLimit {
                limit_bytes: 16 * 1024 * 1024,
                message: None,
            },
            "{source}"
        );
        let out = engine.decode(&script("return payload.length;"), b"abc", &m);
        assert_eq!(out, Ok(json!(3)), "engine must work after OOM");
    }
}

#[test]
fn deep_recursion_is_an_error_not_a_crash() {
    let mut engine = Engine::new(Limits::default());
    let m = BTreeMap::new();
    let err = engine
        .decode(
            &script("function r(n) { return r(n + 1) + 1; }\nreturn r(0);"),
            b"",
            &m,
        )
        .unwrap_err();
    match &err {
        ScriptError::Runtime { message, line, .. } => {
            assert!(message.starts_with("RangeError"), "{message}");
            assert_eq!(*line, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.decode(&script("return 1;"), b"", &m), Ok(json!(1)));
}

#[test]
fn size_limits_are_checked_outside_the_engine() {
    let limits = Limits {
        max_payload_bytes: 10,
        max_result_chars: 100,
        ..Limits::default()
    };
    let long = format!("return 1; // {}", "x".repeat(50_000));
    let err = decode_once(&script(&long), b"", &BTreeMap::new(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ScriptError::TooLarge { what, limit: 50_000, .. } if what.starts_with("script")),
        "{err:?}"
    );
    let err = decode_once(&script("return 1;"), &[0; 11], &BTreeMap::new(), &limits).unwrap_err();
    assert!(
        matches!(err, ScriptError::TooLarge { what, size: 11, .. } if what.starts_with("payload"))
    );
    let err = decode_once(
        &script("return 'y'.repeat(200);"),
        b"",
        &BTreeMap::new(),
        &limits,
    )
    .unwrap_err();
    assert!(matches!(err, ScriptError::TooLarge { what, .. } if what.starts_with("result")));
    let big_metadata: BTreeMap<String, String> = [("k".to_string(), "v".repeat(10))].into_iter().collect();
    let err = decode_once(&script("return 1;"), b"", &big_metadata, &limits).unwrap_err();
    assert!(matches!(err, ScriptError::TooLarge { what, size: 11, .. } if what.contains("metadata")), "{err:?}");
    assert!(!err.counts_towards_block(), "the device's input, not the script's fault");
    // Multi-byte characters count once.
    let ok = decode_once(
        &script("return 'é'.repeat(60);"),
        b"",
        &BTreeMap::new(),
        &limits,
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn compiled_scripts_are_cached_per_id_and_version() {
    let mut engine = Engine::new(Limits::default());
    let m = BTreeMap::new();
    let mut s = script(SEED);
    for _ in 0..5 {
        engine.decode(&s, b"A,b,c,1", &m).unwrap();
    }
    assert_eq!(engine.compile_count(), 1);
    // A new version is a different script and must be compiled again.
    s.version = 2;
    s.source = "return 'v2';".into();
    assert_eq!(engine.decode(&s, b"", &m), Ok(json!("v2")));
    assert_eq!(engine.compile_count(), 2);
}

#[test]
fn cache_is_bounded() {
    let mut engine = coapgate_script::JsEngine::new(&Limits {
        cache_entries: 3,
        ..Limits::default()
    })
    .unwrap();
    let m = BTreeMap::new();
    for i in 0..10 {
        engine
            .decode(&script(&format!("return {i};")), b"", &m)
            .unwrap();
    }
    assert_eq!(engine.cached_scripts(), 3);
    assert_eq!(engine.compile_count(), 10);
}

#[test]
fn builtins_cannot_be_replaced_for_other_scripts() {
    let mut engine = Engine::new(Limits::default());
    let m = BTreeMap::new();
    engine
        .decode(
            &script("atob = null; decodeToString = function () { return 'evil'; }; return 1;"),
            b"",
            &m,
        )
        .unwrap();
    let out = engine.decode(
        &script("return [atob('aGk='), decodeToString(payload)];"),
        b"ok",
        &m,
    );
    assert_eq!(out, Ok(json!(["hi", "ok"])));
}

#[test]
fn tbel_scripts_run() {
    let s = DecoderScript {
        lang: ScriptLang::Tbel,
        ..script("return {n: payload.size(), first: payload[0]};")
    };
    let out = decode_once(&s, &[0xFF, 1], &BTreeMap::new(), &Limits::default());
    assert_eq!(out, Ok(json!({"n": 2, "first": -1})));
}

/// Warm-path cost of the seed script; run with
/// `cargo test -p coapgate-script --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_warm_seed_decode() {
    let mut engine = Engine::new(Limits::default());
    let m = meta(&[("deviceName", "x")]);
    let s = script(SEED);
    let payload = b"SN-001,default,temperature,25.7,humidity,69\n";
    engine.decode(&s, payload, &m).unwrap();
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        engine.decode(&s, payload, &m).unwrap();
    }
    let per = started.elapsed() / n;
    let started = Instant::now();
    decode_once(&s, payload, &m, &Limits::default()).unwrap();
    let cold = started.elapsed();
    // First run of a new script in a warm engine: its own context, the
    // prelude and a compile; and what each cached script costs in memory.
    let mut js = coapgate_script::JsEngine::new(&Limits::default()).unwrap();
    js.decode(&s, payload, &m).unwrap();
    let before = js.memory_used();
    let n_scripts = 100;
    let started = Instant::now();
    for i in 0..n_scripts {
        js.decode(&script(&format!("{SEED}\n// {i}")), payload, &m)
            .unwrap();
    }
    let miss = started.elapsed() / n_scripts;
    let per_script = (js.memory_used() - before) / i64::from(n_scripts);
    println!(
        "warm decode: {per:?}/decode; cold decode_once: {cold:?}; \
         first run of a script in a warm engine: {miss:?}; memory per cached script: {per_script} bytes"
    );
}

/// Doubles leave the script exactly as the engine computed them: ThingsBoard (and QuickJS's
/// own `String()`) print 4508000/65535 - 45 as 23.787670710307466; a JSON parser that is not
/// correctly rounded turns it into ...463.
#[test]
fn doubles_are_exact_in_both_languages() {
    let js = run("return {v: 4508000/65535 - 45, w: 0.1 + 0.2, s: String(4508000/65535 - 45)};", b"", &[]).unwrap();
    assert_eq!(serde_json::to_string(&js).unwrap(), r#"{"v":23.787670710307466,"w":0.30000000000000004,"s":"23.787670710307466"}"#);
    let tbel = DecoderScript { lang: coapgate_script::ScriptLang::Tbel, ..script("return {v: 4508000.0/65535 - 45, w: 0.1 + 0.2};") };
    let out = decode_once(&tbel, b"", &meta(&[]), &Limits::default()).unwrap();
    assert_eq!(serde_json::to_string(&out).unwrap(), r#"{"v":23.787670710307466,"w":0.30000000000000004}"#);
}
