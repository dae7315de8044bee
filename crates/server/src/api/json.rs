//! Stored entities as ThingsBoard's JSON, field for field what `tb-rest-client`'s models read.

use coapgate_storage::model::{
    Asset, AssetProfile, Converter, Customer, Device, DeviceProfile, EntityGroup, GroupMember, Integration, Owner,
};
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
    json!({
        "id": entity_id("DEVICE", d.id),
        "createdTime": d.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "customerId": customer_id(d.customer_id),
        "ownerId": owner_id(Owner::of_customer(d.customer_id), tenant_id),
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
            "description": d.description,
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

/// `customerId` of a device or asset: the customer, or ThingsBoard's null customer id.
pub fn customer_id(customer: Option<Uuid>) -> Value {
    let id = customer.map(|c| c.to_string()).unwrap_or_else(|| NULL_CUSTOMER_ID.to_string());
    json!({"entityType": "CUSTOMER", "id": id})
}

/// `ownerId` (ThingsBoard PE): the customer the entity is assigned to, else the tenant.
pub fn owner_id(owner: Owner, tenant_id: Uuid) -> Value {
    match owner {
        Owner::Tenant => entity_id("TENANT", tenant_id),
        Owner::Customer(c) => entity_id("CUSTOMER", c),
    }
}

pub fn customer(c: &Customer, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("CUSTOMER", c.id),
        "createdTime": c.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "title": c.title,
        "name": c.title,
        "email": null,
        "phone": null,
        "country": null,
        "state": null,
        "city": null,
        "address": null,
        "address2": null,
        "zip": null,
        "additionalInfo": null,
        "parentCustomerId": null,
        "customerId": null,
        "ownerId": entity_id("TENANT", tenant_id),
        "customMenuId": null,
        "version": 1,
    })
}

pub fn asset(a: &Asset, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("ASSET", a.id),
        "createdTime": a.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "customerId": customer_id(a.customer_id),
        "ownerId": owner_id(Owner::of_customer(a.customer_id), tenant_id),
        "name": a.name,
        "type": a.asset_type,
        "label": a.label,
        "assetProfileId": entity_id("ASSET_PROFILE", a.asset_profile_id),
        "additionalInfo": {
            "createdByIntegration": a.created_by_integration.map(|id| entity_id("INTEGRATION", id)),
            "description": a.description,
        },
        "version": 1,
    })
}

pub fn asset_profile(p: &AssetProfile, tenant_id: Uuid) -> Value {
    json!({
        "id": entity_id("ASSET_PROFILE", p.id),
        "createdTime": p.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "name": p.name,
        "default": p.is_default,
        "description": null,
        "image": null,
        "defaultRuleChainId": null,
        "defaultDashboardId": null,
        "defaultQueueName": null,
        "defaultEdgeRuleChainId": null,
        "version": 1,
    })
}

/// ThingsBoard PE's `EntityGroupInfo`; `ownerIds` lists the owner and the owners above it.
pub fn entity_group(g: &EntityGroup, tenant_id: Uuid) -> Value {
    let mut owner_ids = vec![owner_id(g.owner, tenant_id)];
    if g.owner != Owner::Tenant {
        owner_ids.push(entity_id("TENANT", tenant_id));
    }
    json!({
        "id": entity_group_id(g.id),
        "createdTime": g.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "type": g.group_type.as_str(),
        "name": g.name,
        "ownerId": owner_id(g.owner, tenant_id),
        "ownerIds": owner_ids,
        "additionalInfo": null,
        "configuration": null,
        "groupAll": false,
        "edgeGroupAll": false,
        "version": 1,
    })
}

pub fn entity_group_id(id: Uuid) -> Value {
    entity_id("ENTITY_GROUP", id)
}

/// `ShortEntityView`: the member's id and name, with the group list's usual columns beside them.
pub fn group_member(m: &GroupMember) -> Value {
    json!({
        "id": entity_id(m.kind.as_str(), m.id),
        "name": m.name,
        "type": m.entity_type,
        "label": m.label,
        "createdTime": m.created_time,
    })
}

/// `List<EntitySubtype>`: `{tenantId, entityType, type}` per name, sorted by name.
pub fn entity_subtypes(entity_type: &str, mut names: Vec<String>, tenant_id: Uuid) -> Value {
    names.sort();
    names.dedup();
    Value::Array(
        names
            .into_iter()
            .map(|name| json!({"tenantId": entity_id("TENANT", tenant_id), "entityType": entity_type, "type": name}))
            .collect(),
    )
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
