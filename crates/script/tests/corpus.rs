//! ThingsBoard's published converters for real devices (`tests/converter-corpus/`, see its
//! README), run the way the library's own check runs them against ThingsBoard: the payload is
//! the payload file's JSON as Python's `json.dumps` writes it, the script runs on the engine the
//! server uses, the output goes through the text "Test payload decoder" returns
//! (`serde_json::to_string_pretty`) and is parsed again, then compared with the result file as
//! Python's `==` compares parsed JSON (numbers by value, key order ignored).
//!
//! Prints the pass rate per language and vendor; fails unless every case passes.
//! `CORPUS_FILTER=<substring of the case's path>` runs a subset; `CORPUS_DIR=<folder of vendors>`
//! runs another set of converters laid out the same way (to measure against converters that are
//! not in the project).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coapgate_script::{DecoderScript, Engine, Limits, ScriptLang};
use serde_json::Value;

struct Case {
    dir: PathBuf,
    payload_file: String,
    result_file: String,
}

/// Every `payload[_N].json` with its `result[_N].json`, under every `uplink` folder.
fn cases(root: &Path) -> Vec<Case> {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() == "converter.json" && d.ends_with("uplink") {
                dirs.push(d.clone());
            }
        }
    }
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("payload") && n.ends_with(".json"))
            .collect();
        names.sort();
        for payload_file in names {
            let result_file = payload_file.replacen("payload", "result", 1);
            if dir.join(&result_file).exists() {
                out.push(Case { dir: dir.clone(), payload_file, result_file });
            }
        }
    }
    out
}

/// Python's `json.dumps(value)` with its defaults: `", "` and `": "` separators, non-ASCII as
/// `\uXXXX` escapes, floats as `repr` writes them.
fn python_dumps(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_f64() => out.push_str(&python_float_repr(n.as_f64().unwrap())),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut buf = [0u16; 2];
                        for unit in c.encode_utf16(&mut buf) {
                            out.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_dumps(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_dumps(&Value::String(k.clone()), out);
                out.push_str(": ");
                python_dumps(item, out);
            }
            out.push('}');
        }
    }
}

/// `repr(float)`: the shortest round-trip digits, in exponent form below 1e-4 or from 1e16.
fn python_float_repr(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}"); // e.g. 1.5e-5
        let (mantissa, exp) = s.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let s = format!("{f:?}"); // Debug keeps ".0" on integral values, as repr does
        s
    }
}

/// Python's `==` on parsed JSON: numbers by value (`28 == 28.0`), objects regardless of order.
fn python_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| python_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| python_eq(v, w)))
        }
        _ => a == b,
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn published_converters_give_thingsboards_outputs() {
    let root = match std::env::var_os("CORPUS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/converter-corpus/VENDORS"),
    };
    let filter = std::env::var("CORPUS_FILTER").unwrap_or_default();
    let mut engine = Engine::new(Limits::default());
    // (language, vendor) -> (passed, total)
    let mut tally: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in cases(&root) {
        let rel = case.dir.strip_prefix(&root).unwrap().display().to_string();
        if !rel.contains(&filter) {
            continue;
        }
        let converter = read_json(&case.dir.join("converter.json"));
        let config = &converter["configuration"];
        let (lang, source) = match config["scriptLang"].as_str() {
            Some("TBEL") => (ScriptLang::Tbel, config["tbelDecoder"].as_str().unwrap()),
            _ => (ScriptLang::Js, config["decoder"].as_str().unwrap()),
        };
        // As `testUpLink` reads metadata: strings as they are, anything else as its JSON text.
        let metadata: BTreeMap<String, String> = read_json(&case.dir.join("metadata.json"))
            .as_object()
            .map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect()
            })
            .unwrap_or_default();
        let mut payload = String::new();
        python_dumps(&read_json(&case.dir.join(&case.payload_file)), &mut payload);
        let expected = read_json(&case.dir.join(&case.result_file));
        let script = DecoderScript { id: uuid::Uuid::new_v4(), version: 1, lang, source: source.into() };

        let outcome = engine.decode(&script, payload.as_bytes(), &metadata).map_err(|e| e.to_string()).and_then(|out| {
            let text = serde_json::to_string_pretty(&out).unwrap();
            serde_json::from_str::<Value>(&text).map_err(|e| format!("output is not JSON: {e}"))
        });
        let vendor = rel.split('/').next().unwrap().to_string();
        let lang_name = if lang == ScriptLang::Tbel { "TBEL" } else { "JS" };
        let entry = tally.entry((lang_name.to_string(), vendor)).or_default();
        entry.1 += 1;
        match outcome {
            Ok(got) if python_eq(&got, &expected) => entry.0 += 1,
            Ok(got) => failures.push(format!(
                "{rel}/{}: output differs\n    want {}\n    got  {}",
                case.payload_file,
                serde_json::to_string(&expected).unwrap(),
                serde_json::to_string(&got).unwrap()
            )),
            Err(e) => failures.push(format!("{rel}/{}: error {e}", case.payload_file)),
        }
    }
    let mut by_lang: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for ((lang, vendor), (passed, total)) in &tally {
        println!("{lang:5} {vendor:12} {passed:4} / {total:4}");
        let e = by_lang.entry(lang).or_default();
        e.0 += passed;
        e.1 += total;
    }
    for (lang, (passed, total)) in &by_lang {
        println!("{lang:5} {:12} {passed:4} / {total:4} ({:.1}%)", "all", 100.0 * *passed as f64 / (*total).max(1) as f64);
    }
    let total: usize = by_lang.values().map(|t| t.1).sum();
    assert!(total > 0, "no corpus case matched CORPUS_FILTER={filter:?}");
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
}
