//! Converters in the style of ThingsBoard's published JavaScript converters for real devices
//! (LoRaWAN network-server envelopes with Base64 device bytes, channel/type byte streams,
//! arrays of readings, NB-IoT hex payloads), run unchanged and compared to exact outputs —
//! first through "Test payload decoder", then over CoAP into storage.

mod common;

use base64::Engine as _;
use coapgate_coap::message::{Code, MessageType, option};
use common::*;
use serde_json::{Value, json};

/// A network-server envelope: JSON with the device bytes in Base64, decoded with bit operations;
/// the timestamp comes from the envelope. Defines its own `base64ToBytes` on top of `atob`.
const ENVELOPE: &str = r#"
var data = decodeToJson(payload);
function base64ToBytes(input) {
    var binary = atob(input);
    var out = [];
    for (var i = 0; i < binary.length; i++) out.push(binary.charCodeAt(i));
    return out;
}
var bytes = base64ToBytes(data.data);
var ts = new Date(data.time).getTime();
var values = {};
if (bytes[0] === 0x01) {
    var raw = (bytes[1] << 8) | bytes[2];
    if (raw & 0x8000) raw = raw - 0x10000;
    values.temperature = raw / 100;
    values.humidity = bytes[3] / 2;
    values.battery = ((bytes[4] << 8) | bytes[5]) / 1000;
}
return {
    deviceName: data.deviceInfo.deviceName,
    deviceType: data.deviceInfo.deviceProfileName,
    telemetry: { ts: ts, values: values },
    attributes: { fPort: data.fPort, devEui: data.deviceInfo.devEui }
};
"#;

/// A channel/type byte stream (Milesight style) with typed arrays and little-endian reads.
const CHANNELS: &str = r#"
const bytes = Uint8Array.from(payload);
const view = new DataView(bytes.buffer);
const out = {};
for (let i = 0; i < bytes.length;) {
    const channel = bytes[i], type = bytes[i + 1];
    if (channel === 0x01 && type === 0x75) { out.battery = bytes[i + 2]; i += 3; }
    else if (channel === 0x03 && type === 0x67) { out.temperature = view.getInt16(i + 2, true) / 10; i += 4; }
    else if (channel === 0x04 && type === 0x68) { out.humidity = bytes[i + 2] / 2; i += 3; }
    else if (channel === 0x05 && type === 0x00) { out.door = bytes[i + 2] === 1 ? 'open' : 'closed'; i += 3; }
    else break;
}
return { deviceName: 'EM300-' + metadata.serial, deviceType: 'EM300-TH', telemetry: out };
"#;

/// Arrays of readings with modern JavaScript: arrow functions, destructuring,
/// `Object.fromEntries`, `filter`/`map`/`reduce`; two entities in one output.
const READINGS: &str = r#"
const msg = JSON.parse(decodeToString(payload));
const telemetry = msg.readings
    .filter(r => r.ok !== false)
    .map(r => ({ ts: r.ts, values: Object.fromEntries(Object.entries(r).filter(([k]) => k !== 'ts' && k !== 'ok')) }));
const avg = telemetry.reduce((s, t) => s + t.values.t, 0) / telemetry.length;
return [
    { deviceName: msg.sn, deviceType: 'multi', telemetry, attributes: { avg: Math.round(avg * 100) / 100, count: telemetry.length } },
    { deviceName: `${msg.sn}-gw`, deviceType: 'gateway', attributes: Object.assign({}, msg.gw) }
];
"#;

/// An NB-IoT JSON message with a hex payload: `parseInt`, `>>>`, big-endian float32,
/// `toFixed`, `padStart`.
const HEX: &str = r#"
var data = decodeToJson(payload);
function hexToBytes(h) { var b = []; for (var i = 0; i < h.length; i += 2) b.push(parseInt(h.substr(i, 2), 16)); return b; }
var b = hexToBytes(data.payload);
var pressure = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
var f = new DataView(new Uint8Array(b.slice(4, 8)).buffer).getFloat32(0);
return {
    deviceName: data.imei,
    telemetry: { pressure: pressure / Math.pow(10, 2), level: Number(f.toFixed(2)),
                 raw: b.map(function (x) { return x.toString(16).padStart(2, '0'); }).join('') },
    attributes: { imei: data.imei, online: true }
};
"#;

const ENVELOPE_PAYLOAD: &str = r#"{"deviceInfo":{"deviceName":"env-01","deviceProfileName":"th-sensor","devEui":"a84041000181c061"},"fPort":2,"time":"2026-11-27T08:00:00Z","data":"Af84iwzk"}"#;
const READINGS_PAYLOAD: &str = r#"{"sn":"multi-7","gw":{"fw":"2.1","rssi":-71},"readings":[{"ts":1700000000000,"t":21.5,"h":40},{"ts":1700000060000,"t":22,"ok":false},{"ts":1700000120000,"t":23,"h":41}]}"#;
const HEX_PAYLOAD: &str = r#"{"imei":"867723030000001","payload":"000186A041CD999A"}"#;

fn cases() -> Vec<(&'static str, &'static str, Vec<u8>, Value, Value)> {
    vec![
        (
            "envelope",
            ENVELOPE,
            ENVELOPE_PAYLOAD.as_bytes().to_vec(),
            json!({}),
            json!({"deviceName": "env-01", "deviceType": "th-sensor",
                   "telemetry": {"ts": 1795766400000_i64, "values": {"temperature": -2, "humidity": 69.5, "battery": 3.3}},
                   "attributes": {"fPort": 2, "devEui": "a84041000181c061"}}),
        ),
        (
            "channels",
            CHANNELS,
            vec![0x01, 0x75, 0x5c, 0x03, 0x67, 0x10, 0x01, 0x04, 0x68, 0x71, 0x05, 0x00, 0x01],
            json!({"serial": "6136A"}),
            json!({"deviceName": "EM300-6136A", "deviceType": "EM300-TH",
                   "telemetry": {"battery": 92, "temperature": 27.2, "humidity": 56.5, "door": "open"}}),
        ),
        (
            "readings",
            READINGS,
            READINGS_PAYLOAD.as_bytes().to_vec(),
            json!({}),
            json!([
                {"deviceName": "multi-7", "deviceType": "multi",
                 "telemetry": [{"ts": 1700000000000_i64, "values": {"t": 21.5, "h": 40}}, {"ts": 1700000120000_i64, "values": {"t": 23, "h": 41}}],
                 "attributes": {"avg": 22.25, "count": 2}},
                {"deviceName": "multi-7-gw", "deviceType": "gateway", "attributes": {"fw": "2.1", "rssi": -71}}
            ]),
        ),
        (
            "hex",
            HEX,
            HEX_PAYLOAD.as_bytes().to_vec(),
            json!({}),
            json!({"deviceName": "867723030000001",
                   "telemetry": {"pressure": 1000, "level": 25.7, "raw": "000186a041cd999a"},
                   "attributes": {"imei": "867723030000001", "online": true}}),
        ),
    ]
}

#[test]
fn test_payload_decoder_gives_exact_outputs() {
    let server = Server::start();
    for (name, script, payload, metadata, expected) in cases() {
        let body = json!({
            "payload": base64::engine::general_purpose::STANDARD.encode(&payload),
            "metadata": metadata,
            "decoder": script,
        });
        let result = server.api("POST", "/api/converter/testUpLink?scriptLang=JS", Some(body));
        assert_eq!(result["error"], "", "{name}: {}", result["error"]);
        let output: Value = serde_json::from_str(result["output"].as_str().unwrap()).unwrap();
        assert_eq!(output, expected, "{name}");
    }
}

#[test]
fn published_style_converters_store_over_coap() {
    let server = Server::start();
    let mut client = CoapClient::new(server.coap);
    for (name, script, payload, metadata, _) in cases() {
        let converter = server.create_converter(name, script);
        let integration = server.create_integration(
            name,
            &converter,
            json!({"configuration": {"clientConfiguration": {"baseUrl": format!("coap://127.0.0.1:{}", server.coap.port())}, "metadata": metadata}}),
        );
        let mut m = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(&integration), &payload);
        m.set_uint_option(option::CONTENT_FORMAT, if name == "channels" { 42 } else { 50 });
        assert_eq!(client.exchange(&m).code, Code::CREATED, "{name}");
    }

    let strict = |device: &Value, query: &str| -> Value {
        let id = device["id"]["id"].as_str().unwrap();
        server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?useStrictDataTypes=true{query}"), None)
    };
    let env = server.device("env-01").expect("env-01");
    assert_eq!(env["type"], "th-sensor");
    let latest = strict(&env, "");
    assert_eq!(latest["temperature"][0], json!({"ts": 1795766400000_i64, "value": -2}));
    assert_eq!(latest["humidity"][0]["value"], 69.5);
    assert_eq!(latest["battery"][0]["value"], 3.3);
    let attrs = server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{}/values/attributes/CLIENT_SCOPE", env["id"]["id"].as_str().unwrap()), None);
    assert!(attrs.as_array().unwrap().iter().any(|a| a["key"] == "fPort" && a["value"] == 2), "{attrs}");

    let em = server.device("EM300-6136A").expect("EM300");
    let latest = strict(&em, "");
    assert_eq!((latest["temperature"][0]["value"].clone(), latest["door"][0]["value"].clone()), (json!(27.2), json!("open")));

    let multi = server.device("multi-7").expect("multi-7");
    let history = strict(&multi, "&keys=t&startTs=0&endTs=9999999999999&orderBy=ASC");
    assert_eq!(history["t"], json!([{"ts": 1700000000000_i64, "value": 21.5}, {"ts": 1700000120000_i64, "value": 23}]));
    let gw = server.device("multi-7-gw").expect("gateway device from the same uplink");
    assert_eq!(gw["type"], "gateway");

    let nb = server.device("867723030000001").expect("hex device");
    assert_eq!(nb["type"], "default");
    let latest = strict(&nb, "");
    assert_eq!((latest["pressure"][0]["value"].clone(), latest["level"][0]["value"].clone()), (json!(1000), json!(25.7)));
}
