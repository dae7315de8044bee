//! The remote-integration protocol's generated types (`proto/remote.proto`) and the conversions
//! between them and storage's model, shared by the platform side (`remote_link`) and the remote
//! process (`remote`).

use coapgate_storage::model::{Converter, EntityKind, EntityUpdate, Integration, KvValue, UplinkRecord};
use prost::Message;
use serde_json::Value;
use uuid::Uuid;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("coapgate.remote.v1");
}

/// The protocol version this build speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// A record as the outbox keeps it and the link carries it: an encoded [`pb::Record`].
pub fn encode_record(record: &UplinkRecord) -> Vec<u8> {
    let entities = record
        .entities
        .iter()
        .map(|e| pb::Entity {
            kind: match e.kind {
                EntityKind::Asset => pb::EntityKind::Asset as i32,
                _ => pb::EntityKind::Device as i32,
            },
            name: e.name.clone(),
            r#type: e.entity_type.clone(),
            label: e.label.clone(),
            customer_name: e.customer_name.clone(),
            group_name: e.group_name.clone(),
            telemetry: e
                .telemetry
                .iter()
                .map(|(ts, values)| pb::TsValues { ts: *ts, values: values.iter().map(key_value).collect() })
                .collect(),
            attributes: e.attributes.iter().map(key_value).collect(),
        })
        .collect();
    pb::Record { entities }.encode_to_vec()
}

fn key_value((key, value): &(String, KvValue)) -> pb::KeyValue {
    use pb::key_value::Value as V;
    let value = match value {
        KvValue::Bool(b) => V::BoolV(*b),
        KvValue::Long(l) => V::LongV(*l),
        KvValue::Double(d) => V::DoubleV(*d),
        KvValue::Str(s) => V::StringV(s.clone()),
        KvValue::Json(j) => V::JsonV(j.clone()),
    };
    pb::KeyValue { key: key.clone(), value: Some(value) }
}

/// The entities of an encoded [`pb::Record`]; an error text for bytes that are not one.
pub fn decode_entities(bytes: &[u8]) -> Result<Vec<EntityUpdate>, String> {
    use pb::key_value::Value as V;
    let record = pb::Record::decode(bytes).map_err(|e| format!("undecodable record: {e}"))?;
    let kv = |kv: pb::KeyValue| -> Result<(String, KvValue), String> {
        let value = match kv.value {
            Some(V::BoolV(b)) => KvValue::Bool(b),
            Some(V::LongV(l)) => KvValue::Long(l),
            Some(V::DoubleV(d)) => KvValue::Double(d),
            Some(V::StringV(s)) => KvValue::Str(s),
            Some(V::JsonV(j)) => KvValue::Json(j),
            None => return Err(format!("key {} has no value", kv.key)),
        };
        Ok((kv.key, value))
    };
    record
        .entities
        .into_iter()
        .map(|e| {
            let kind = if e.kind == pb::EntityKind::Asset as i32 { EntityKind::Asset } else { EntityKind::Device };
            if e.name.is_empty() {
                return Err("an entity has no name".to_string());
            }
            let mut update = if kind == EntityKind::Asset {
                EntityUpdate::asset(e.name, e.r#type)
            } else {
                EntityUpdate::device(e.name, e.r#type)
            };
            update.label = e.label;
            update.customer_name = e.customer_name;
            update.group_name = e.group_name;
            update.telemetry = e
                .telemetry
                .into_iter()
                .map(|t| Ok((t.ts, t.values.into_iter().map(kv).collect::<Result<Vec<_>, String>>()?)))
                .collect::<Result<_, String>>()?;
            update.attributes = e.attributes.into_iter().map(kv).collect::<Result<_, String>>()?;
            Ok(update)
        })
        .collect()
}

/// The configuration the platform sends for an integration and its uplink converter.
pub fn configuration(integration: &Integration, converter: &Converter) -> pb::Configuration {
    pb::Configuration {
        integration_id: integration.id.to_string(),
        name: integration.name.clone(),
        enabled: integration.enabled,
        allow_create_devices_or_assets: integration.allow_create_devices_or_assets,
        routing_key: integration.routing_key.clone(),
        configuration: integration.configuration.to_string(),
        debug_settings: integration.debug_settings.to_string(),
        integration_version: integration.version,
        converter: Some(pb::Converter {
            id: converter.id.to_string(),
            name: converter.name.clone(),
            configuration: converter.configuration.to_string(),
            debug_settings: converter.debug_settings.to_string(),
            version: converter.version,
        }),
    }
}

/// The integration and converter a remote runs, from the platform's configuration. The secret
/// stays out: the remote has its own copy and never needs the platform's.
pub fn from_configuration(c: &pb::Configuration) -> Result<(Integration, Converter), String> {
    let json = |text: &str, what: &str| -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))
    };
    let uuid = |text: &str, what: &str| -> Result<Uuid, String> { Uuid::parse_str(text).map_err(|e| format!("{what}: {e}")) };
    let converter = c.converter.as_ref().ok_or("the configuration has no converter")?;
    let converter = Converter {
        id: uuid(&converter.id, "converter id")?,
        created_time: 0,
        name: converter.name.clone(),
        converter_type: "UPLINK".into(),
        integration_type: Some("COAP".into()),
        debug_settings: json(&converter.debug_settings, "converter debugSettings")?,
        configuration: json(&converter.configuration, "converter configuration")?,
        additional_info: Value::Null,
        version: converter.version,
    };
    let integration = Integration {
        id: uuid(&c.integration_id, "integration id")?,
        created_time: 0,
        name: c.name.clone(),
        integration_type: "COAP".into(),
        enabled: c.enabled,
        allow_create_devices_or_assets: c.allow_create_devices_or_assets,
        is_remote: true,
        debug_settings: json(&c.debug_settings, "integration debugSettings")?,
        default_converter_id: converter.id,
        downlink_converter_id: None,
        routing_key: c.routing_key.clone(),
        secret: String::new(),
        configuration: json(&c.configuration, "integration configuration")?,
        additional_info: Value::Null,
        version: c.integration_version,
    };
    Ok((integration, converter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_crosses_the_link_unchanged() {
        let mut device = EntityUpdate::device("SN-001", "default");
        device.label = Some("Boiler".into());
        device.customer_name = Some("ACME".into());
        device.telemetry = vec![
            (1_700_000_000_000, vec![("temperature".into(), KvValue::Double(42.5)), ("n".into(), KvValue::Long(-3))]),
            (1_700_000_000_001, vec![("ok".into(), KvValue::Bool(true)), ("j".into(), KvValue::Json("{\"a\":1}".into()))]),
        ];
        device.attributes = vec![("fw".into(), KvValue::Str("1.0".into()))];
        let mut asset = EntityUpdate::asset("Building", "building");
        asset.group_name = Some("North".into());
        let record = UplinkRecord {
            integration_id: Uuid::nil(),
            allow_create_devices: true,
            received_ts: 5,
            update_only_keys: std::sync::Arc::from(Vec::new()),
            entities: vec![device.clone(), asset.clone()],
            exchange: None,
            remote: None,
            converter: None,
        };
        assert_eq!(decode_entities(&encode_record(&record)).unwrap(), vec![device, asset]);
        assert!(decode_entities(&[0xff, 0xff, 0xff]).is_err());
    }
}
