//! Customers, and the devices and assets assigned to one. Integrations create customers from
//! converter output (`customerName`); the REST API lists, reads and deletes them.

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::model::Customer;
use serde_json::Value;
use uuid::Uuid;

use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_uuid};

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

pub async fn get_customer(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let c = existing_customer(&state, &id).await?;
    Ok(Json(tb::customer(&c, state.store.tenant_id())))
}

/// Deletes the customer and the groups it owns; its devices and assets go back to the tenant.
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
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let customer: Uuid = existing_customer(&state, &id).await?.id;
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
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let customer: Uuid = existing_customer(&state, &id).await?.id;
    let query = page_query(&q)?;
    let asset_type = q.get("type").cloned();
    let store = state.store.clone();
    let page = blocking(move || store.customer_assets(customer, &query, asset_type.as_deref())).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |a| tb::asset(a, tenant))))
}
