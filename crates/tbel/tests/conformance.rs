//! Data-driven conformance suite: every `tests/cases/*.txt` line is `SCRIPT => JSON` (the
//! script's value, compared as JSON, so `1` and `1.0` differ) or `SCRIPT !! TEXT` (the
//! script fails and its message contains TEXT). `#` starts a comment line.

use coapgate_tbel::{RunLimits, Script, Value};

fn run(src: &str) -> Result<serde_json::Value, String> {
    let payload = Value::signed_bytes(&[0x01, 0xFF, 0x80, 0x7F]);
    let metadata = Value::string_map([("deviceName", "dev-1"), ("ts", "1700000000000")]);
    let s = Script::compile(src, &["payload", "metadata"]).map_err(|e| e.to_string())?;
    s.run(vec![payload, metadata], &RunLimits::default())
        .map(|v| v.to_json())
        .map_err(|e| e.to_string())
}

/// JSON equality that also tells integers from doubles (`1` ≠ `1.0`).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.is_f64() == y.is_f64() && x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn cases() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, Vec::new());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", f.file_name().unwrap().to_string_lossy(), n + 1);
            if let Some((src, want)) = line.rsplit_once(" => ") {
                let want: serde_json::Value = serde_json::from_str(want)
                    .unwrap_or_else(|e| panic!("{at}: bad expected JSON: {e}"));
                match run(src) {
                    Ok(got) if same(&got, &want) => passed += 1,
                    Ok(got) => failed.push(format!("{at}: {src}\n    want {want}\n    got  {got}")),
                    Err(e) => failed.push(format!("{at}: {src}\n    want {want}\n    error {e}")),
                }
            } else if let Some((src, want)) = line.rsplit_once(" !! ") {
                match run(src) {
                    Err(e) if e.contains(want) => passed += 1,
                    Err(e) => failed.push(format!(
                        "{at}: {src}\n    want error containing {want:?}\n    got error {e}"
                    )),
                    Ok(v) => {
                        failed.push(format!("{at}: {src}\n    want error {want:?}\n    got {v}"))
                    }
                }
            } else {
                panic!("{at}: a case needs ' => ' or ' !! '");
            }
        }
    }
    println!("{passed} cases passed");
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        passed + failed.len(),
        failed.join("\n")
    );
}
