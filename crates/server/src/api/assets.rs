//! Assets and asset profiles. Integrations create both from converter output (`assetName`,
//! `assetType`); the REST API lists, reads, saves and deletes them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::StorageError;
use coapgate_storage::model::Asset;
use serde_json::Value;
use uuid::Uuid;

use super::entities::{EntityBody, opt_entity_id};
use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_body, parse_uuid};

/// `GET /api/tenant/assets`: a page, or one asset when `assetName` is given (ThingsBoard serves
/// both from this path).
pub async fn list_assets(State(state): State<AppState>, q: QueryParams<Query>) -> ApiResult<Json<Value>> {
    if q.0.contains_key("assetName") {
        return asset_by_name(State(state), q).await;
    }
    let query = page_query(&q.0)?;
    let asset_type = q.0.get("type").cloned();
    let store = state.store.clone();
    let page = blocking(move || store.assets(&query, asset_type.as_deref())).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |a| tb::asset(a, tenant))))
}

/// `GET /api/tenant/asset?assetName=`, what `tb-rest-client`'s `get_tenant_asset` calls.
pub async fn asset_by_name(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let name = q.get("assetName").cloned().ok_or_else(|| ApiError::bad_request("Parameter 'assetName' is required"))?;
    let store = state.store.clone();
    let a = blocking(move || store.asset_by_name(&name)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::asset(&a, state.store.tenant_id())))
}

pub async fn get_asset(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let a = blocking(move || store.asset(id)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::asset(&a, state.store.tenant_id())))
}

pub async fn delete_asset(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_asset(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

pub async fn list_asset_profiles(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.asset_profiles(&query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |p| tb::asset_profile(p, tenant))))
}

pub async fn get_asset_profile(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let p = blocking(move || store.asset_profile(id)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::asset_profile(&p, state.store.tenant_id())))
}

pub async fn delete_asset_profile(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_asset_profile(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

/// `POST /api/asset`: as `POST /api/device` (see `entities::save_device`), with asset profiles.
pub async fn save_asset(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let fields = EntityBody::parse(&body, "Asset")?;
    let profile_id = opt_entity_id(&body, "assetProfileId")?;
    let store = state.store.clone();
    let saved = blocking(move || {
        let existing = match fields.id {
            Some(id) => Some(store.asset(id)?.ok_or(StorageError::NotFound)?),
            None => None,
        };
        let by_profile = match profile_id {
            Some(id) => Some(
                store
                    .asset_profile(id)?
                    .ok_or_else(|| StorageError::Conflict(format!("Field 'assetProfileId': asset profile {id} does not exist")))?
                    .name,
            ),
            None => None,
        };
        let asset_type = by_profile
            .or(fields.entity_type.clone())
            .or_else(|| existing.as_ref().map(|a| a.asset_type.clone()))
            .unwrap_or_else(|| "default".into());
        let customer_id = fields.customer_id(store.as_ref(), existing.as_ref().and_then(|a| a.customer_id))?;
        store.save_asset(&Asset {
            id: fields.id.unwrap_or_else(Uuid::new_v4),
            created_time: existing.as_ref().map(|a| a.created_time).unwrap_or_else(coapgate_storage::now_millis),
            name: fields.name,
            asset_type,
            asset_profile_id: Uuid::nil(),
            label: fields.label,
            customer_id,
            created_by_integration: existing.as_ref().and_then(|a| a.created_by_integration),
            description: fields.description,
        })
    })
    .await?;
    Ok(Json(tb::asset(&saved, state.store.tenant_id())))
}
