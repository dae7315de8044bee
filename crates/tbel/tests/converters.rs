//! Converters written in the style of ThingsBoard's published TBEL converters, and hostile
//! scripts, with exact expected outputs.

use coapgate_tbel::{ErrorKind, RunLimits, Script};
use serde_json::json;

fn decode(src: &str, payload: &[u8], metadata: &[(&str, &str)]) -> serde_json::Value {
    let s = Script::compile(src, &["payload", "metadata"]).expect("compiles");
    s.decode(payload, metadata.iter().copied(), &RunLimits::default())
        .expect("runs")
}

fn fails(src: &str) -> coapgate_tbel::TbelError {
    let s = Script::compile(src, &["payload", "metadata"]).expect("compiles");
    s.decode(
        b"",
        [],
        &RunLimits {
            timeout: Some(std::time::Duration::from_millis(200)),
            ..Default::default()
        },
    )
    .expect_err("must fail")
}

pub const SEED: &str = r#"var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
var result = { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
return result;"#;

#[test]
fn seed_decoder() {
    let out = decode(SEED, b"SN-001,default,temperature,25.7,humidity,69\n", &[]);
    assert_eq!(
        out,
        json!({"deviceName": "SN-001", "deviceType": "default",
               "telemetry": {"temperature": 25.7, "humidity": 69.0}, "attributes": {}})
    );
}

/// The shape of most published LoRaWAN converters: a JSON envelope, base64 data decoded
/// with parseBytesToInt, metadata merged with putAll, a foreach over entrySet().
const ENVELOPE: &str = r#"
var data = decodeToJson(payload);
var deviceName = data.deviceInfo.deviceName;
var bytes = base64ToBytes(data.data);
var result = {
    deviceName: deviceName,
    deviceType: data.deviceInfo.?deviceProfileName,
    attributes: {},
    telemetry: { ts: new Date(data.time).getTime(), values: {} }
};
var values = decodePayload(bytes);
result.telemetry.values.putAll(values);
var extra = {fPort: data.fPort, rssi: data.rxInfo[0].rssi};
foreach (element : extra.entrySet()) {
    if (element.getValue() != null) {
        result.attributes.put(element.getKey(), element.getValue());
    }
}
if (data.?missing.?field == null) {
    result.attributes.put("missing", true);
}
return result;

function decodePayload(input) {
    var out = {};
    var temp = parseBytesToInt(input, 0, 2, true);
    if (temp > 32767) { temp = temp - 65536; }
    out.temperature = toFixed(temp / 100.0, 1);
    out.humidity = parseBytesToInt(input, 2, 1) / 2.0;
    out.battery = parseBytesToInt(input, 3, 2, false);
    out.status = (input[5] & 0x80) != 0 ? "alarm" : "ok";
    out.counter = parseBytesToLong(input, 6, 4);
    out.minInt = Integer.MIN_VALUE;
    return out;
}
"#;

#[test]
fn lorawan_envelope() {
    // FF 38 = -200 → -2.0 °C; 0x8B = 139 → 69.5 %; 0x0E10 LE = 4110... (10 0E) → 3600 mV
    let data = [0xFFu8, 0x38, 0x8B, 0x10, 0x0E, 0x80, 0x00, 0x00, 0x01, 0x00];
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let body = format!(
        r#"{{"deviceInfo":{{"deviceName":"env-7","deviceProfileName":"Env"}},"time":"2024-05-01T12:00:00.250Z","fPort":2,"rxInfo":[{{"rssi":-97}}],"data":"{b64}"}}"#
    );
    let out = decode(ENVELOPE, body.as_bytes(), &[]);
    assert_eq!(
        out,
        json!({
            "deviceName": "env-7", "deviceType": "Env",
            "attributes": {"fPort": 2, "rssi": -97, "missing": true},
            "telemetry": {"ts": 1714564800250i64, "values": {
                "temperature": -2.0, "humidity": 69.5, "battery": 3600, "status": "alarm",
                "counter": 256, "minInt": -2147483648
            }}
        })
    );
}

/// Text payloads reshaped with regex groups, a switch and String.format.
const TEXT: &str = r#"
var s = decodeToString(payload);
var id = s.replaceFirst("^ID=(\\w+);.*$", "$1");
var parts = s.substring(s.lastIndexOf(";") + 1).split(",");
var values = {};
for (var i = 0; i < parts.size(); i++) {
    var kv = parts.get(i).split(":");
    switch (kv[0]) {
        case "T": values.put("temperature", Double.parseDouble(kv[1])); break;
        case "H": values.put("humidity", Integer.parseInt(kv[1])); break;
        default: values.put(kv[0].toLowerCase(), kv[1]);
    }
}
var list = [];
list.push(String.format("%04X", parseHexToInt(metadata.code)));
list.add(String.join("/", ["a", "b"]));
var sliced = list.slice(0, 1);
return {deviceName: id.toUpperCase(), telemetry: values, attributes: {code: sliced[0], joined: list.get(1), n: list.size()}};
"#;

#[test]
fn text_with_regex_groups() {
    let out = decode(TEXT, b"ID=ab12;x;T:21.5,H:40,Mode:ECO", &[("code", "0A0B")]);
    assert_eq!(
        out,
        json!({"deviceName": "AB12", "telemetry": {"temperature": 21.5, "humidity": 40, "mode": "ECO"},
               "attributes": {"code": "0A0B", "joined": "a/b", "n": 2}})
    );
}

/// Hex payloads, arrays copied with Arrays.copyOfRange, bit fields with >>> and masks.
const HEX: &str = r#"
var bytes = hexToBytes(decodeToString(payload));
var header = java.util.Arrays.copyOfRange(bytes, 0, 2);
var flags = bytes[2] & 0xFF;
var out = {deviceName: "hex-" + bytesToHex(header), telemetry: {}};
out.telemetry.open = (flags >>> 7) == 1;
out.telemetry.level = (flags >> 4) & 0x07;
out.telemetry.raw = parseBytesToInt(bytes, 3, 4);
out.telemetry.f = parseBytesToFloat(bytes, 7, 4);
out.telemetry.bits = parseByteToBinaryArray(bytes[2]);
out.telemetry.wrapped = Integer.MAX_VALUE + parseBytesToInt(bytes, 3, 1);
return out;
"#;

#[test]
fn hex_bit_fields() {
    let out = decode(HEX, b"CAFEB2FFFFFFFE41CC0000", &[]);
    assert_eq!(
        out,
        json!({"deviceName": "hex-CAFE", "telemetry": {
            "open": true, "level": 3, "raw": -2, "f": 25.5,
            // An int sum known only at run time widens to a Long (MathProcessor), no wrap.
            "bits": [1, 0, 1, 1, 0, 0, 1, 0], "wrapped": 2147483902i64
        }})
    );
}

/// An array of devices, as converters for gateways return.
#[test]
fn several_devices() {
    let src = r#"
var msg = decodeToJson(payload);
var result = [];
foreach (d : msg.devices) {
    result.add({deviceName: d.name, telemetry: {v: d.v * 2}});
}
return result;
"#;
    let out = decode(
        src,
        br#"{"devices":[{"name":"a","v":1},{"name":"b","v":2.5}]}"#,
        &[],
    );
    assert_eq!(
        out,
        json!([{"deviceName": "a", "telemetry": {"v": 2}}, {"deviceName": "b", "telemetry": {"v": 5.0}}])
    );
}

#[test]
fn endless_loop_times_out() {
    let e = fails("while (true) { }");
    assert_eq!(e.kind, ErrorKind::Timeout);
    let e = fails("var i = 0; for (;;) { i++; }");
    assert_eq!(e.kind, ErrorKind::Timeout);
    let e = fails("function f() { while (true) {} } f();");
    assert_eq!(e.kind, ErrorKind::Timeout);
}

#[test]
fn huge_list_overflows_memory() {
    // A generous deadline: the memory limit, not the clock, must stop it, also in a debug
    // build on a busy machine.
    let s = Script::compile("var l = []; while (true) { l.add(\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"); }", &["payload", "metadata"]).unwrap();
    let limits = RunLimits { timeout: Some(std::time::Duration::from_secs(30)), ..Default::default() };
    let e = s.decode(b"", [], &limits).expect_err("must fail");
    assert_eq!(e.kind, ErrorKind::Memory);
    assert!(
        e.message.starts_with("Script memory overflow ("),
        "{}",
        e.message
    );
    assert!(e.message.ends_with(" > 8388608)!"), "{}", e.message);
    let e = fails("var s = \"x\"; while (true) { s = s + s; }");
    assert_eq!(e.kind, ErrorKind::Memory);
    let e = fails("var a = new byte[100000000];");
    assert_eq!(e.kind, ErrorKind::Memory);
    assert!(
        e.message.starts_with("Max array length overflow"),
        "{}",
        e.message
    );
}

#[test]
fn deep_recursion_is_stopped() {
    let e = fails("function f(n) { return f(n + 1); } f(0);");
    assert_eq!(e.kind, ErrorKind::StackOverflow);
    // Legitimate recursion still works (debug builds need more stack per level).
    const DEPTH: i32 = if cfg!(debug_assertions) { 10 } else { 150 };
    let src =
        format!("function f(n) {{ if (n == 0) {{ return 0; }} return 1 + f(n - 1); }} f({DEPTH})");
    let s = Script::compile(&src, &[]).unwrap();
    let r = s.run(vec![], &RunLimits::default());
    assert_eq!(r.clone().map(|v| v.to_json()), Ok(json!(DEPTH)), "{r:?}");
}

#[test]
fn deep_nesting_is_a_compile_error() {
    let src = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(Script::compile_with_limit(&src, &[], 0).is_err());
    let src = "x".repeat(50_001);
    let e = Script::compile(&src, &[]).unwrap_err();
    assert!(e.message.contains("50000"), "{}", e.message);
}

#[test]
fn errors_carry_line_and_column() {
    let e = Script::compile("var a = 1;\nvar b = (2;\n", &[]).unwrap_err();
    assert_eq!(
        (e.kind, e.line, e.column),
        (ErrorKind::Compile, Some(2), Some(11))
    );
    let s = Script::compile("var a = 1;\n\n  var b = a.foo.bar;", &[]).unwrap();
    let e = s.run(vec![], &RunLimits::default()).unwrap_err();
    assert_eq!((e.kind, e.line), (ErrorKind::Runtime, Some(3)));
}

#[test]
fn parse_once_run_many() {
    let s = Script::compile(SEED, &["payload", "metadata"]).unwrap();
    for i in 0..100 {
        let p = format!("D{i},t,x,{i}");
        let out = s.decode(p.as_bytes(), [], &RunLimits::default()).unwrap();
        assert_eq!(out["deviceName"], json!(format!("D{i}")));
    }
}
