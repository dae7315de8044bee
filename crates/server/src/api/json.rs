//! Stored entities as ThingsBoard's JSON, field for field what `tb-rest-client`'s models read.

use coapgate_storage::model::{Converter, Device, DeviceProfile, Integration};
use serde_json::{Value, json};
use uuid::Uuid;

/// ThingsBoard's "no customer" id, which it puts on entities owned by the tenant.
pub const NULL_CUSTOMER_ID: &str = "13814000-1dd2-11b2-8080-808080808080";

pub fn entity_id(entity_type: &str, id: Uuid) -> Value {
    json!({"entityType": entity_type, "id": id})
}

fn debug_mode(debug_settings: &Value) -> bool {
    debug_settings.get("allEnabled").and_then(Value::as_bool).unwrap_or(false)
}

pub fn converter(c: &Converter, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("CONVERTER", c.id),
        "createdTime": c.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "name": c.name,
        "type": c.converter_type,
        "integrationType": c.integration_type,
        "debugMode": debug_mode(&c.debug_settings),
        "debugSettings": c.debug_settings,
        "configuration": c.configuration,
        "additionalInfo": c.additional_info,
        "edgeTemplate": false,
        "converterVersion": 1,
        "version": c.version,
    })
}

pub fn integration(i: &Integration, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("INTEGRATION", i.id),
        "createdTime": i.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "name": i.name,
        "type": i.integration_type,
        "debugMode": debug_mode(&i.debug_settings),
        "debugSettings": i.debug_settings,
        "enabled": i.enabled,
        "remote": i.is_remote,
        "isRemote": i.is_remote,
        "allowCreateDevicesOrAssets": i.allow_create_devices_or_assets,
        "edgeTemplate": false,
        "defaultConverterId": entity_id("CONVERTER", i.default_converter_id),
        "downlinkConverterId": i.downlink_converter_id.map(|id| entity_id("CONVERTER", id)),
        "routingKey": i.routing_key,
        "secret": i.secret,
        "configuration": i.configuration,
        "additionalInfo": i.additional_info,
        "version": i.version,
    })
}

/// `IntegrationInfo`: the list view's shape, without configuration and secret.
pub fn integration_info(i: &Integration, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("INTEGRATION", i.id),
        "createdTime": i.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "name": i.name,
        "type": i.integration_type,
        "debugMode": debug_mode(&i.debug_settings),
        "enabled": i.enabled,
        "remote": i.is_remote,
        "allowCreateDevicesOrAssets": i.allow_create_devices_or_assets,
        "edgeTemplate": false,
        "stats": [],
        "status": null,
    })
}

pub fn device(d: &Device, tenant_id: Uuid) -> Value {
    let customer = d.customer_id.map(|c| c.to_string()).unwrap_or_else(|| NULL_CUSTOMER_ID.to_string());
    json!({
        "id": entity_id("DEVICE", d.id),
        "createdTime": d.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "customerId": {"entityType": "CUSTOMER", "id": customer},
        "ownerId": match d.customer_id {
            Some(c) => entity_id("CUSTOMER", c),
            None => entity_id("TENANT", tenant_id),
        },
        "name": d.name,
        "type": d.device_type,
        "label": d.label,
        "deviceProfileId": entity_id("DEVICE_PROFILE", d.device_profile_id),
        "deviceProfileName": d.device_type,
        "deviceData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}},
        "firmwareId": null,
        "softwareId": null,
        "additionalInfo": {
            "createdByIntegration": d.created_by_integration.map(|id| entity_id("INTEGRATION", id)),
        },
        "version": 1,
    })
}

pub fn device_profile(p: &DeviceProfile, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("DEVICE_PROFILE", p.id),
        "createdTime": p.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "name": p.name,
        "default": p.is_default,
        "type": "DEFAULT",
        "transportType": "DEFAULT",
        "provisionType": "DISABLED",
        "description": null,
        "profileData": {
            "configuration": {"type": "DEFAULT"},
            "transportConfiguration": {"type": "DEFAULT"},
            "provisionConfiguration": {"type": "DISABLED"},
            "alarms": null,
        },
        "version": 1,
    })
}

/// `PageData<T>`.
pub fn page<T>(p: &coapgate_storage::model::Page<T>, item: impl Fn(&T) -> Value) -> Value {
    json!({
        "data": p.data.iter().map(item).collect::<Vec<_>>(),
        "totalPages": p.total_pages,
        "totalElements": p.total_elements,
        "hasNext": p.has_next,
    })
}
