//! Entity groups (ThingsBoard PE): named sets of devices or assets, owned by the tenant or a
//! customer. Integrations create them from converter output (`groupName`); the REST API reads
//! them on ThingsBoard's paths, which overlap: `/api/entityGroups/{a}/{b}` is "all groups of
//! type a" when b is `all`, and "the groups of entity b of type a" otherwise.

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::model::{EntityGroup, EntityKind, Owner, Page, PageQuery};
use serde_json::Value;

use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_uuid};

/// ThingsBoard's group types. Only device and asset groups are ever created here; the others
/// are valid and simply have no groups.
const OTHER_GROUP_TYPES: &[&str] = &["CUSTOMER", "USER", "ENTITY_VIEW", "EDGE", "DASHBOARD"];

/// `Some(kind)` for a group type coapgate stores, `None` for a valid type it never has groups of.
fn group_type(text: &str) -> ApiResult<Option<EntityKind>> {
    match text {
        "DEVICE" => Ok(Some(EntityKind::Device)),
        "ASSET" => Ok(Some(EntityKind::Asset)),
        t if OTHER_GROUP_TYPES.contains(&t) => Ok(None),
        other => Err(ApiError::bad_request(format!(
            "Unsupported entity group type '{other}': use DEVICE, ASSET, {}",
            OTHER_GROUP_TYPES.join(", ")
        ))),
    }
}

/// `{ownerType}/{ownerId}`: the tenant itself or an existing customer, else 404.
async fn owner(state: &AppState, owner_type: &str, owner_id: &str) -> ApiResult<Owner> {
    let id = parse_uuid(owner_id)?;
    match owner_type {
        "TENANT" if id == state.store.tenant_id() => Ok(Owner::Tenant),
        "TENANT" => Err(ApiError::item_not_found()),
        "CUSTOMER" => {
            let store = state.store.clone();
            blocking(move || store.customer(id)).await?.ok_or_else(ApiError::item_not_found)?;
            Ok(Owner::Customer(id))
        }
        other => Err(ApiError::bad_request(format!("Unsupported owner type '{other}': use TENANT or CUSTOMER"))),
    }
}

async fn groups(state: &AppState, kind: Option<EntityKind>, owner: Owner, query: PageQuery) -> ApiResult<Page<EntityGroup>> {
    let Some(kind) = kind else {
        return Ok(Page::new(Vec::new(), 0, &query));
    };
    let store = state.store.clone();
    blocking(move || store.entity_groups(kind, Some(owner), &query)).await
}

/// Every group of one owner and type, as the `.../all` lists return them.
async fn all_groups(state: &AppState, kind: Option<EntityKind>, owner: Owner) -> ApiResult<Json<Value>> {
    let everything = PageQuery { page_size: u32::MAX, sort_property: Some("name".into()), ..Default::default() };
    let page = groups(state, kind, owner, everything).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(Value::Array(page.data.iter().map(|g| tb::entity_group(g, tenant)).collect())))
}

fn group_page(state: &AppState, page: &Page<EntityGroup>) -> Json<Value> {
    let tenant = state.store.tenant_id();
    Json(tb::page(page, |g| tb::entity_group(g, tenant)))
}

/// `GET /api/entityGroups/{groupType}?pageSize&page...`: the tenant's groups of that type
/// (a tenant administrator's own groups; customers' groups are listed per owner).
pub async fn by_type(
    State(state): State<AppState>,
    Path(group): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let kind = group_type(&group)?;
    let page = groups(&state, kind, Owner::Tenant, page_query(&q)?).await?;
    Ok(group_page(&state, &page))
}

/// `GET /api/entityGroups/{groupType}/all` (list of the tenant's groups) or
/// `GET /api/entityGroups/{entityType}/{entityId}` (ids of the groups an entity is in).
pub async fn all_by_type_or_of_entity(
    State(state): State<AppState>,
    Path((first, second)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if second == "all" {
        let kind = group_type(&first)?;
        return all_groups(&state, kind, Owner::Tenant).await;
    }
    let id = parse_uuid(&second)?;
    let store = state.store.clone();
    let exists = match first.as_str() {
        "DEVICE" => blocking(move || store.device(id)).await?.is_some(),
        "ASSET" => blocking(move || store.asset(id)).await?.is_some(),
        other => return Err(ApiError::bad_request(format!("Unsupported entity type '{other}': use DEVICE or ASSET"))),
    };
    if !exists {
        return Err(ApiError::item_not_found());
    }
    let store = state.store.clone();
    let ids = blocking(move || store.groups_of_entity(id)).await?;
    Ok(Json(Value::Array(ids.into_iter().map(tb::entity_group_id).collect())))
}

/// `GET /api/entityGroups/{ownerType}/{ownerId}/{groupType}?pageSize&page...`.
pub async fn by_owner_and_type(
    State(state): State<AppState>,
    Path((owner_type, owner_id, group)): Path<(String, String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let kind = group_type(&group)?;
    let owner = owner(&state, &owner_type, &owner_id).await?;
    let page = groups(&state, kind, owner, page_query(&q)?).await?;
    Ok(group_page(&state, &page))
}

/// `GET /api/entityGroups/{ownerType}/{ownerId}/{groupType}/all`.
pub async fn all_by_owner_and_type(
    State(state): State<AppState>,
    Path((owner_type, owner_id, group)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let kind = group_type(&group)?;
    let owner = owner(&state, &owner_type, &owner_id).await?;
    all_groups(&state, kind, owner).await
}

/// `GET /api/entityGroup/{ownerType}/{ownerId}/{groupType}/{groupName}`: one group, or 404.
pub async fn by_owner_type_and_name(
    State(state): State<AppState>,
    Path((owner_type, owner_id, group, name)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let kind = group_type(&group)?.ok_or_else(ApiError::item_not_found)?;
    let owner = owner(&state, &owner_type, &owner_id).await?;
    let store = state.store.clone();
    let g = blocking(move || store.entity_group_by_name(kind, owner, &name)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::entity_group(&g, state.store.tenant_id())))
}

pub async fn get_group(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let g = blocking(move || store.entity_group(id)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::entity_group(&g, state.store.tenant_id())))
}

/// Deletes the group; its members stay.
pub async fn delete_group(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_entity_group(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

/// `GET /api/entityGroup/{id}/entities?pageSize&page...`: `PageData<ShortEntityView>`.
pub async fn group_entities(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.entity_group_members(id, &query)).await?;
    Ok(Json(tb::page(&page, tb::group_member)))
}
