//! From converter output to storage writes: ThingsBoard's converter output contract.
//!
//! The converter returns an object or an array of objects; each names one device or asset and
//! carries telemetry and attributes, and for a new entity its type, label, customer and group.
//! This module validates that output with ThingsBoard's own error messages (users search for
//! them) and turns it into an [`UplinkRecord`] for the writer.

use std::sync::Arc;

use coapgate_storage::model::{EntityUpdate, KvValue, Millis, UplinkRecord};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Why a converter's output cannot be stored. The text is ThingsBoard's where it has one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputError {
    #[error("Either 'deviceName' or 'assetName' should be present in the converter output!")]
    NoEntityName,
    #[error("Both 'deviceName' and 'assetName' can't be present in the converter output!")]
    BothEntityNames,
    #[error("Asset type is not set!")]
    AssetTypeMissing,
    #[error("'{0}' must be a non-empty string")]
    BadName(&'static str),
    #[error("'{field}' must be {expected}")]
    BadField { field: String, expected: &'static str },
    /// ThingsBoard's `@Length` message; the name is never stored, however long.
    #[error("{0} length must be equal or less than {MAX_NAME_CHARS}")]
    TooLong(String),
}

/// ThingsBoard's limit on entity names, types, labels and telemetry or attribute keys (its
/// `@Length` default and the `varchar(255)` columns): a longer one is refused, never stored.
pub const MAX_NAME_CHARS: usize = 255;

/// `Err` when `text` is longer than [`MAX_NAME_CHARS`] characters.
pub fn check_length(field: &str, text: &str) -> Result<(), OutputError> {
    // Bytes bound characters from above: count characters only for long texts.
    if text.len() > MAX_NAME_CHARS && text.chars().count() > MAX_NAME_CHARS {
        return Err(OutputError::TooLong(field.to_string()));
    }
    Ok(())
}

/// Builds the record for one uplink from the converter's output. `received_ts` is the server time
/// used for telemetry without its own `ts` and for attributes; `update_only_keys` is the
/// converter's list of keys stored only when their value changed.
pub fn record_from_output(
    output: &Value,
    integration_id: Uuid,
    allow_create_devices: bool,
    received_ts: Millis,
    update_only_keys: Arc<[String]>,
) -> Result<UplinkRecord, OutputError> {
    let objects: Vec<&Map<String, Value>> = match output {
        Value::Object(o) => vec![o],
        Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
        // ThingsBoard treats anything else (null, a number) as "nothing to store".
        _ => Vec::new(),
    };
    let entities = objects
        .into_iter()
        .map(|o| entity_update(o, received_ts))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UplinkRecord { integration_id, allow_create_devices, received_ts, update_only_keys, entities, exchange: None, remote: None, converter: None })
}

fn entity_update(o: &Map<String, Value>, received_ts: Millis) -> Result<EntityUpdate, OutputError> {
    let has_device = field(o, "deviceName").is_some_and(|v| !v.is_null());
    let has_asset = field(o, "assetName").is_some_and(|v| !v.is_null());
    let mut update = match (has_device, has_asset) {
        (false, false) => return Err(OutputError::NoEntityName),
        (true, true) => return Err(OutputError::BothEntityNames),
        (false, true) => {
            let name = text_field(o, "assetName")?.ok_or(OutputError::BadName("assetName"))?;
            // ThingsBoard has no default asset type: the converter must name one.
            let asset_type = text_field(o, "assetType")?.ok_or(OutputError::AssetTypeMissing)?;
            let mut asset = EntityUpdate::asset(name, asset_type);
            asset.label = text_field(o, "assetLabel")?;
            asset
        }
        (true, false) => {
            let name = text_field(o, "deviceName")?.ok_or(OutputError::BadName("deviceName"))?;
            let device_type = text_field(o, "deviceType")?.unwrap_or_else(|| "default".to_string());
            let mut device = EntityUpdate::device(name, device_type);
            device.label = text_field(o, "deviceLabel")?;
            device
        }
    };
    update.customer_name = text_field(o, "customerName")?;
    update.group_name = text_field(o, "groupName")?;
    update.telemetry = match field(o, "telemetry") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => telemetry(t, received_ts)?,
    };
    update.attributes = match field(o, "attributes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(a)) => typed_values(a),
        Some(_) => return Err(OutputError::BadField { field: "attributes".into(), expected: "an object" }),
    };
    let telemetry_keys = update.telemetry.iter().flat_map(|(_, values)| values.iter().map(|(k, _)| ("telemetry key", k)));
    for (field, key) in telemetry_keys.chain(update.attributes.iter().map(|(k, _)| ("attribute key", k))) {
        check_length(field, key)?;
    }
    Ok(update)
}

/// A string field, absent when missing, null or empty. Numbers are accepted as their text, as
/// ThingsBoard reads these fields with `asText()`.
fn text_field(o: &Map<String, Value>, name: &'static str) -> Result<Option<String>, OutputError> {
    match field(o, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => check_length(name, s).map(|()| Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err(OutputError::BadName(name)),
    }
}

/// `o[name]`. An output object has a handful of entries, and comparing them costs less than
/// hashing the name with the map's SipHash (ten look-ups per output were a tenth of its
/// conversion); a large object is still looked up by hash.
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if o.len() <= 16 {
        o.iter().find_map(|(k, v)| (k == name).then_some(v))
    } else {
        o.get(name)
    }
}

/// Telemetry as storage takes it: values grouped by timestamp.
type Points = Vec<(Millis, Vec<(String, KvValue)>)>;

/// `telemetry` is a flat object (server time), `{ts, values}`, or an array of either; also the
/// body of the REST API's time-series writes, which takes the same shapes.
pub fn telemetry(t: &Value, received_ts: Millis) -> Result<Points, OutputError> {
    match t {
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(telemetry(item, received_ts)?);
            }
            Ok(out)
        }
        Value::Object(o) if let (Some(ts), Some(values)) = (field(o, "ts"), field(o, "values")) => {
            let ts = timestamp(ts)?;
            match values {
                Value::Object(values) => Ok(vec![(ts, typed_values(values))]),
                _ => Err(OutputError::BadField { field: "telemetry.values".into(), expected: "an object" }),
            }
        }
        Value::Object(o) => Ok(if o.is_empty() { Vec::new() } else { vec![(received_ts, typed_values(o))] }),
        _ => Err(OutputError::BadField { field: "telemetry".into(), expected: "an object or an array" }),
    }
}

fn timestamp(v: &Value) -> Result<Millis, OutputError> {
    let bad = || OutputError::BadField { field: "telemetry.ts".into(), expected: "a number of milliseconds" };
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).ok_or_else(bad),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn typed_values(o: &Map<String, Value>) -> Vec<(String, KvValue)> {
    o.iter().filter_map(|(k, v)| KvValue::from_json(v).map(|kv| (k.clone(), kv))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(output: &Value) -> Result<UplinkRecord, OutputError> {
        record_from_output(output, Uuid::nil(), true, 1000, Arc::from(Vec::new()))
    }

    fn check(output: Value, expected: Result<Vec<EntityUpdate>, OutputError>) {
        let got = record(&output).map(|r| r.entities);
        assert_eq!(got, expected, "output {output}");
    }

    fn device(name: &str, ty: &str, telemetry: Vec<(Millis, Vec<(&str, KvValue)>)>) -> EntityUpdate {
        let mut d = EntityUpdate::device(name, ty);
        d.telemetry = telemetry
            .into_iter()
            .map(|(ts, kv)| (ts, kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
            .collect();
        d
    }

    #[test]
    fn output_forms() {
        check(
            json!({"deviceName": "SN-001", "deviceType": "default", "telemetry": {"temperature": 25.7, "humidity": 69}, "attributes": {}}),
            Ok(vec![device(
                "SN-001",
                "default",
                // The output's own key order, as ThingsBoard keeps it.
                vec![(1000, vec![("temperature", KvValue::Double(25.7)), ("humidity", KvValue::Long(69))])],
            )]),
        );
        check(
            json!({"deviceName": "A", "telemetry": {"ts": 5, "values": {"t": "1.5"}}}),
            Ok(vec![device("A", "default", vec![(5, vec![("t", KvValue::Double(1.5))])])]),
        );
        check(
            json!({"deviceName": "A", "telemetry": [{"ts": 5, "values": {"t": 1}}, {"ts": "6", "values": {"t": 2}}]}),
            Ok(vec![device(
                "A",
                "default",
                vec![(5, vec![("t", KvValue::Long(1))]), (6, vec![("t", KvValue::Long(2))])],
            )]),
        );
        check(
            json!([{"deviceName": "A"}, {"deviceName": "B", "deviceType": "x"}]),
            Ok(vec![device("A", "default", vec![]), device("B", "x", vec![])]),
        );
        check(json!(null), Ok(vec![]));
        check(json!(42), Ok(vec![]));
        check(json!("text"), Ok(vec![]));
    }

    #[test]
    fn assets_customers_and_groups() {
        let mut asset = EntityUpdate::asset("Building A", "building");
        asset.label = Some("HQ".into());
        asset.customer_name = Some("Acme".into());
        asset.group_name = Some("Buildings".into());
        asset.telemetry = vec![(1000, vec![("power".into(), KvValue::Double(1.5))])];
        check(
            json!({"assetName": "Building A", "assetType": "building", "assetLabel": "HQ", "customerName": "Acme",
                   "groupName": "Buildings", "telemetry": {"power": "1.5"}}),
            Ok(vec![asset]),
        );
        let mut d = device("SN-1", "thermo", vec![]);
        d.label = Some("Kitchen".into());
        d.customer_name = Some("Acme".into());
        d.group_name = Some("Thermostats".into());
        check(
            json!([{"deviceName": "SN-1", "deviceType": "thermo", "deviceLabel": "Kitchen", "customerName": "Acme",
                    "groupName": "Thermostats", "assetLabel": "ignored for devices"},
                   {"assetName": "Site", "assetType": "site", "customerName": "", "groupName": null}]),
            Ok(vec![d, EntityUpdate::asset("Site", "site")]),
        );
    }

    #[test]
    fn update_only_keys_travel_with_the_record() {
        let keys: Arc<[String]> = Arc::from(vec!["fw".to_string()]);
        let r = record_from_output(&json!({"deviceName": "a"}), Uuid::nil(), false, 5, keys.clone()).unwrap();
        assert_eq!(r.update_only_keys, keys);
        assert!(!r.allow_create_devices);
    }

    #[test]
    fn error_messages_are_thingsboards() {
        check(json!({"telemetry": {}}), Err(OutputError::NoEntityName));
        check(json!({"deviceName": "a", "assetName": "b"}), Err(OutputError::BothEntityNames));
        check(json!({"assetName": "b"}), Err(OutputError::AssetTypeMissing));
        check(json!({"assetName": "b", "assetType": null}), Err(OutputError::AssetTypeMissing));
        check(json!({"assetName": "b", "assetType": ""}), Err(OutputError::AssetTypeMissing));
        check(json!({"deviceName": null, "assetName": "b", "assetType": "t"}), Ok(vec![EntityUpdate::asset("b", "t")]));
        check(json!([{"deviceName": "ok"}, {"telemetry": {}}]), Err(OutputError::NoEntityName));
        assert_eq!(OutputError::BothEntityNames.to_string(), "Both 'deviceName' and 'assetName' can't be present in the converter output!");
        assert_eq!(OutputError::AssetTypeMissing.to_string(), "Asset type is not set!");
        check(json!({"deviceName": ""}), Err(OutputError::BadName("deviceName")));
        check(json!({"deviceName": {"x": 1}}), Err(OutputError::BadName("deviceName")));
        check(
            json!({"deviceName": "a", "telemetry": {"ts": "soon", "values": {}}}),
            Err(OutputError::BadField { field: "telemetry.ts".into(), expected: "a number of milliseconds" }),
        );
        assert_eq!(
            OutputError::NoEntityName.to_string(),
            "Either 'deviceName' or 'assetName' should be present in the converter output!"
        );
    }

    #[test]
    fn names_and_keys_are_bounded_as_thingsboard() {
        let at_limit = "n".repeat(MAX_NAME_CHARS);
        let over = "é".repeat(MAX_NAME_CHARS + 1);
        assert!(record(&json!({"deviceName": at_limit, "telemetry": {at_limit.clone(): 1}})).is_ok());
        // Multi-byte characters count as one: 255 of them fit.
        assert!(record(&json!({"deviceName": "é".repeat(MAX_NAME_CHARS)})).is_ok());
        for (output, field) in [
            (json!({"deviceName": "n".repeat(900_000)}), "deviceName"),
            (json!({"deviceName": over}), "deviceName"),
            (json!({"deviceName": "a", "deviceType": over}), "deviceType"),
            (json!({"deviceName": "a", "deviceLabel": over}), "deviceLabel"),
            (json!({"assetName": over, "assetType": "t"}), "assetName"),
            (json!({"assetName": "a", "assetType": over}), "assetType"),
            (json!({"deviceName": "a", "customerName": over}), "customerName"),
            (json!({"deviceName": "a", "groupName": over}), "groupName"),
            (json!({"deviceName": "a", "telemetry": {over.clone(): 1}}), "telemetry key"),
            (json!({"deviceName": "a", "telemetry": [{"ts": 1, "values": {over.clone(): 1}}]}), "telemetry key"),
            (json!({"deviceName": "a", "attributes": {over.clone(): 1}}), "attribute key"),
        ] {
            assert_eq!(record(&output).unwrap_err(), OutputError::TooLong(field.into()), "{field}");
        }
        assert_eq!(
            OutputError::TooLong("deviceName".into()).to_string(),
            "deviceName length must be equal or less than 255"
        );
    }

    #[test]
    fn attributes_are_typed() {
        let r = record(&json!({"deviceName": "a", "attributes": {"fw": "1.2", "on": true, "x": null}})).unwrap();
        assert_eq!(
            r.entities[0].attributes,
            vec![("fw".to_string(), KvValue::Double(1.2)), ("on".to_string(), KvValue::Bool(true))]
        );
    }
}
