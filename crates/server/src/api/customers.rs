//! Customers, and the devices and assets assigned to one. Integrations create customers from
//! converter output (`customerName`); the REST API lists, reads, saves and deletes them, and
//! assigns devices and assets to them (ThingsBoard CE's assign/unassign paths, and PE's owner
//! change, which `tb-rest-client`'s `assign_device_to_customer` calls).

use axum::{Extension, Json};
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::StorageError;
use coapgate_storage::model::{Customer, EntityKind};
use serde_json::Value;
use uuid::Uuid;

use super::entities::{opt_entity_id, opt_str};
use super::authority::Caller;
use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_body, parse_uuid};

pub async fn list_customers(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.customers(&query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |c| tb::customer(c, tenant))))
}

/// `GET /api/tenant/customers?customerTitle=`, what `get_tenant_customer` calls.
pub async fn customer_by_title(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let title =
        q.get("customerTitle").cloned().ok_or_else(|| ApiError::bad_request("Parameter 'customerTitle' is required"))?;
    let store = state.store.clone();
    let c = blocking(move || store.customer_by_title(&title)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::customer(&c, state.store.tenant_id())))
}

/// The customer with this id, or 404.
pub async fn existing_customer(state: &AppState, id: &str) -> ApiResult<Customer> {
    let id = parse_uuid(id)?;
    let store = state.store.clone();
    blocking(move || store.customer(id)).await?.ok_or_else(ApiError::item_not_found)
}

pub async fn get_customer(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = existing_customer(&state, &id).await?;
    caller.require_owner(Some(c.id))?;
    Ok(Json(tb::customer(&c, state.store.tenant_id())))
}

/// Deletes the customer, the groups it owns and its users (their tokens stop working); its
/// devices and assets go back to the tenant.
pub async fn delete_customer(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_customer(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

/// `GET /api/customer/{customerId}/devices`: `PageData<Device>`, optionally of one `type`.
pub async fn customer_devices(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let customer: Uuid = existing_customer(&state, &id).await?.id;
    caller.require_owner(Some(customer))?;
    let query = page_query(&q)?;
    let device_type = q.get("type").cloned();
    let store = state.store.clone();
    let page = blocking(move || store.customer_devices(customer, &query, device_type.as_deref())).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |d| tb::device(d, tenant))))
}

/// `GET /api/customer/{customerId}/assets`: `PageData<Asset>`, optionally of one `type`.
pub async fn customer_assets(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let customer: Uuid = existing_customer(&state, &id).await?.id;
    caller.require_owner(Some(customer))?;
    let query = page_query(&q)?;
    let asset_type = q.get("type").cloned();
    let store = state.store.clone();
    let page = blocking(move || store.customer_assets(customer, &query, asset_type.as_deref())).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |a| tb::asset(a, tenant))))
}

/// `POST /api/customer`: creates a customer, or renames the one `id` names (404 if none).
/// Only the title is kept; a title another customer has is refused with ThingsBoard's 400.
pub async fn save_customer(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let title = opt_str(&body, "title")?
        .or(opt_str(&body, "name")?)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("Customer title should be specified!"))?
        .to_string();
    super::bounded_name("title", &title)?;
    let id = opt_entity_id(&body, "id")?;
    let store = state.store.clone();
    let saved = blocking(move || {
        let created_time = match id {
            Some(id) => store.customer(id)?.ok_or(StorageError::NotFound)?.created_time,
            None => coapgate_storage::now_millis(),
        };
        let customer = Customer { id: id.unwrap_or_else(Uuid::new_v4), created_time, title };
        store.save_customer(&customer)?;
        Ok(customer)
    })
    .await?;
    Ok(Json(tb::customer(&saved, state.store.tenant_id())))
}

/// Sets (or clears) the customer of a device or asset and returns the entity's JSON. Clearing
/// one that has no customer is ThingsBoard's 400 ("Device isn't assigned to any customer!").
async fn set_customer(state: &AppState, kind: EntityKind, entity_id: &str, customer: Option<Uuid>) -> ApiResult<Value> {
    let id = parse_uuid(entity_id)?;
    let store = state.store.clone();
    let tenant = state.store.tenant_id();
    blocking(move || {
        let unassigned = |what: &str| StorageError::Conflict(format!("{what} isn't assigned to any customer!"));
        match kind {
            EntityKind::Asset => {
                let a = store.asset(id)?.ok_or(StorageError::NotFound)?;
                if customer.is_none() && a.customer_id.is_none() {
                    return Err(unassigned("Asset"));
                }
                Ok(tb::asset(&store.save_asset(&coapgate_storage::model::Asset { customer_id: customer, ..a })?, tenant))
            }
            _ => {
                let d = store.device(id)?.ok_or(StorageError::NotFound)?;
                if customer.is_none() && d.customer_id.is_none() {
                    return Err(unassigned("Device"));
                }
                Ok(tb::device(&store.save_device(&coapgate_storage::model::Device { customer_id: customer, ..d })?, tenant))
            }
        }
    })
    .await
}

/// `POST /api/customer/{customerId}/device/{deviceId}`.
pub async fn assign_device(State(state): State<AppState>, Path((customer, device)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let customer = existing_customer(&state, &customer).await?.id;
    Ok(Json(set_customer(&state, EntityKind::Device, &device, Some(customer)).await?))
}

/// `DELETE /api/customer/device/{deviceId}`.
pub async fn unassign_device(State(state): State<AppState>, Path(device): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(set_customer(&state, EntityKind::Device, &device, None).await?))
}

/// `POST /api/customer/{customerId}/asset/{assetId}`.
pub async fn assign_asset(State(state): State<AppState>, Path((customer, asset)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let customer = existing_customer(&state, &customer).await?.id;
    Ok(Json(set_customer(&state, EntityKind::Asset, &asset, Some(customer)).await?))
}

/// `DELETE /api/customer/asset/{assetId}`.
pub async fn unassign_asset(State(state): State<AppState>, Path(asset): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(set_customer(&state, EntityKind::Asset, &asset, None).await?))
}

/// ThingsBoard PE's `POST /api/owner/CUSTOMER/{ownerId}/{entityType}/{entityId}`, for devices
/// and assets: the same as assigning.
pub async fn owner_to_customer(
    State(state): State<AppState>,
    Path((owner, entity_type, entity_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let kind = owned_kind(&entity_type)?;
    let customer = existing_customer(&state, &owner).await?.id;
    set_customer(&state, kind, &entity_id, Some(customer)).await?;
    Ok(StatusCode::OK)
}

/// ThingsBoard PE's `POST /api/owner/TENANT/{tenantId}/{entityType}/{entityId}`: back to the
/// tenant (a no-op for an entity the tenant owns already, as in ThingsBoard).
pub async fn owner_to_tenant(
    State(state): State<AppState>,
    Path((owner, entity_type, entity_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let kind = owned_kind(&entity_type)?;
    if parse_uuid(&owner)? != state.store.tenant_id() {
        return Err(ApiError::item_not_found());
    }
    match set_customer(&state, kind, &entity_id, None).await {
        Ok(_) => Ok(StatusCode::OK),
        Err(e) if e.status == StatusCode::BAD_REQUEST => Ok(StatusCode::OK),
        Err(e) => Err(e),
    }
}

fn owned_kind(entity_type: &str) -> ApiResult<EntityKind> {
    match entity_type {
        "DEVICE" => Ok(EntityKind::Device),
        "ASSET" => Ok(EntityKind::Asset),
        other => Err(ApiError::bad_request(format!("Changing the owner of a {other} is not supported: only DEVICE and ASSET"))),
    }
}
