//! Assets and asset profiles. Integrations create both from converter output (`assetName`,
//! `assetType`); the REST API lists, reads, saves and deletes them.

use axum::{Extension, Json};
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::model::Asset;
use serde_json::Value;
use uuid::Uuid;

use super::entities::{EntityBody, Stored, opt_entity_id};
use super::authority::Caller;
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

pub async fn get_asset(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let a = blocking(move || store.asset(id)).await?.ok_or_else(ApiError::item_not_found)?;
    caller.require_owner(a.customer_id)?;
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
        let stored = |id| Ok(store.asset(id)?.map(|a| Stored::of(a.created_time, a.asset_type, a.customer_id, a.created_by_integration)));
        let profile = |id| Ok(store.asset_profile(id)?.map(|p| p.name));
        let r = fields.resolve(store.as_ref(), stored, (profile_id, "assetProfileId", "asset profile", profile))?;
        store.save_asset(&Asset {
            id: r.id,
            created_time: r.created_time,
            name: fields.name,
            asset_type: r.entity_type,
            asset_profile_id: Uuid::nil(),
            label: fields.label,
            customer_id: r.customer_id,
            created_by_integration: r.created_by_integration,
            description: fields.description,
        })
    })
    .await?;
    Ok(Json(tb::asset(&saved, state.store.tenant_id())))
}

/// `GET /api/asset/types`: ThingsBoard's `EntitySubtype` list — the asset profiles some asset
/// uses, by name.
pub async fn asset_types(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let store = state.store.clone();
    let names = blocking(move || {
        let all = coapgate_storage::model::PageQuery { page_size: 10_000, ..Default::default() };
        let one = coapgate_storage::model::PageQuery { page_size: 1, ..Default::default() };
        let mut names = Vec::new();
        for profile in store.asset_profiles(&all)?.data {
            if store.assets(&one, Some(&profile.name))?.total_elements > 0 {
                names.push(profile.name);
            }
        }
        Ok(names)
    })
    .await?;
    Ok(Json(tb::entity_subtypes("ASSET", names, state.store.tenant_id())))
}
