//! ThingsBoard's entity data queries, what widgets and entity aliases call:
//! `POST /api/entitiesQuery/find`, `/count` and `/find/keys`.
//!
//! The query JSON (`EntityDataQuery`, `EntityCountQuery`) is parsed here into storage's
//! [`EntityQuery`]; storage pages the matching entities on the database, and the latest values
//! the query asks for are then read for the page's entities only. Key filters with simple
//! predicates (numeric, string, boolean, and complex ones of those) are conditions of the same
//! SQL. Anything of the query model coapgate cannot answer (other filter types, dynamic values,
//! alarm fields) is refused with 400 naming it, never ignored: a dashboard silently showing
//! unfiltered entities would be worse.

use axum::{Extension, Json};
use axum::body::Bytes;
use axum::extract::{Query as QueryParams, State};
use coapgate_storage::Store;
use coapgate_storage::entity_query::{
    EntityColumn, EntityFilter, EntityQuery, EntityRow, KeyFilter, NumericOp, Predicate, QueryKind, SortKey, TextOp,
};
use coapgate_storage::model::{Page, TsValue};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::authority::Caller;
use super::{ApiError, ApiResult, AppState, Query, blocking, parse_body, parse_uuid, query_bool};

/// `/find/keys` looks at the first 100 matches, as ThingsBoard's controller does.
const KEYS_PAGE_SIZE: u32 = 100;
/// An `entityList` longer than this is refused: every id is a bound parameter.
const MAX_LIST_IDS: usize = 10_000;

/// A key the query selects: ThingsBoard's `EntityKey` (`{type, key}`).
#[derive(Debug, Clone)]
struct SelectedKey {
    /// The `EntityKeyType` name, as the response groups values by it.
    key_type: &'static str,
    key: String,
}

impl SelectedKey {
    /// The attribute scope of an attribute key; `Some(None)` for `ATTRIBUTE` (any scope).
    fn attribute_scope(&self) -> Option<Option<&'static str>> {
        match self.key_type {
            "ATTRIBUTE" => Some(None),
            "SERVER_ATTRIBUTE" => Some(Some("SERVER_SCOPE")),
            "SHARED_ATTRIBUTE" => Some(Some("SHARED_SCOPE")),
            "CLIENT_ATTRIBUTE" => Some(Some("CLIENT_SCOPE")),
            _ => None,
        }
    }
}

fn str_field<'a>(object: &'a Map<String, Value>, name: &str, what: &str) -> ApiResult<Option<&'a str>> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("Invalid {what}: '{name}' must be a string"))),
    }
}

fn object<'a>(value: &'a Value, what: &str) -> ApiResult<&'a Map<String, Value>> {
    value.as_object().ok_or_else(|| ApiError::bad_request(format!("Invalid {what}: expected a JSON object")))
}

fn kind(name: Option<&str>) -> ApiResult<QueryKind> {
    let name = name.ok_or_else(|| ApiError::bad_request("Invalid entity filter: 'entityType' is required"))?;
    QueryKind::parse(name).ok_or_else(|| {
        ApiError::bad_request(format!("Unsupported entity type '{name}' in entity filter: DEVICE, ASSET and CUSTOMER can be queried"))
    })
}

fn uuid_list(value: Option<&Value>, field: &str) -> ApiResult<Vec<Uuid>> {
    let Some(items) = value.and_then(Value::as_array) else {
        return Err(ApiError::bad_request(format!("Invalid entity filter: '{field}' must be a list of ids")));
    };
    if items.len() > MAX_LIST_IDS {
        return Err(ApiError::bad_request(format!("Invalid entity filter: at most {MAX_LIST_IDS} ids in '{field}'")));
    }
    items
        .iter()
        .map(|v| v.as_str().ok_or_else(|| ApiError::bad_request(format!("Invalid entity filter: '{field}' must hold id strings"))))
        .map(|s| s.and_then(parse_uuid))
        .collect()
}

/// A `deviceType`/`assetType` filter's profiles: the list of 3.5 and later, or the single
/// deprecated field older clients (and `tb-rest-client`'s models) still send.
fn profile_types(f: &Map<String, Value>, single: &str, list: &str) -> ApiResult<Vec<String>> {
    let mut types: Vec<String> = match f.get(list) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad_request(format!("Invalid entity filter: '{list}' must hold strings"))))
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(ApiError::bad_request(format!("Invalid entity filter: '{list}' must be a list"))),
    };
    if let Some(t) = str_field(f, single, "entity filter")? {
        types.push(t.to_string());
    }
    if types.is_empty() {
        return Err(ApiError::bad_request(format!("Invalid entity filter: '{list}' is required")));
    }
    Ok(types)
}

fn entity_filter(query: &Map<String, Value>) -> ApiResult<EntityFilter> {
    let f = object(query.get("entityFilter").ok_or_else(|| ApiError::bad_request("Entity filter is required"))?, "entity filter")?;
    let filter_type = str_field(f, "type", "entity filter")?.ok_or_else(|| ApiError::bad_request("Invalid entity filter: 'type' is required"))?;
    Ok(match filter_type {
        "singleEntity" => {
            let id = object(f.get("singleEntity").unwrap_or(&Value::Null), "entity filter's 'singleEntity'")?;
            let kind = kind(str_field(id, "entityType", "entity filter")?)?;
            let id = str_field(id, "id", "entity filter")?.ok_or_else(|| ApiError::bad_request("Invalid entity filter: 'singleEntity.id' is required"))?;
            EntityFilter::Single(kind, parse_uuid(id)?)
        }
        "entityList" => EntityFilter::List(kind(str_field(f, "entityType", "entity filter")?)?, uuid_list(f.get("entityList"), "entityList")?),
        "entityType" => EntityFilter::Type(kind(str_field(f, "entityType", "entity filter")?)?),
        "entityName" => {
            let kind = kind(str_field(f, "entityType", "entity filter")?)?;
            EntityFilter::Name(kind, str_field(f, "entityNameFilter", "entity filter")?.unwrap_or_default().to_string())
        }
        "deviceType" => EntityFilter::Profile {
            kind: QueryKind::Device,
            types: profile_types(f, "deviceType", "deviceTypes")?,
            name_prefix: str_field(f, "deviceNameFilter", "entity filter")?.map(str::to_string),
        },
        "assetType" => EntityFilter::Profile {
            kind: QueryKind::Asset,
            types: profile_types(f, "assetType", "assetTypes")?,
            name_prefix: str_field(f, "assetNameFilter", "entity filter")?.map(str::to_string),
        },
        other => {
            return Err(ApiError::bad_request(format!(
                "Unsupported entity filter type '{other}': singleEntity, entityList, entityType, entityName, deviceType and assetType are supported"
            )));
        }
    })
}

/// The value a simple predicate compares with: the user's value when set, else the default.
/// A dynamic value (taken from the current user's, customer's or tenant's attributes) is refused.
fn predicate_value(p: &Map<String, Value>) -> ApiResult<&Value> {
    let value = object(p.get("value").unwrap_or(&Value::Null), "key filter predicate's value")?;
    if value.get("dynamicValue").and_then(Value::as_object).is_some_and(|d| d.get("sourceType").is_some_and(|t| !t.is_null())) {
        return Err(ApiError::bad_request("Dynamic values in key filters are not supported by coapgate"));
    }
    match value.get("userValue") {
        Some(v) if !v.is_null() => Ok(v),
        _ => Ok(value.get("defaultValue").unwrap_or(&Value::Null)),
    }
}

fn predicate(value: &Value) -> ApiResult<Predicate> {
    let p = object(value, "key filter predicate")?;
    let operation = str_field(p, "operation", "key filter predicate")?.unwrap_or_default();
    let unsupported = |kind: &str| ApiError::bad_request(format!("Unsupported {kind} operation '{operation}' in key filter"));
    Ok(match str_field(p, "type", "key filter predicate")? {
        Some("NUMERIC") => {
            let op = match operation {
                "EQUAL" => NumericOp::Equal,
                "NOT_EQUAL" => NumericOp::NotEqual,
                "GREATER" => NumericOp::Greater,
                "LESS" => NumericOp::Less,
                "GREATER_OR_EQUAL" => NumericOp::GreaterOrEqual,
                "LESS_OR_EQUAL" => NumericOp::LessOrEqual,
                _ => return Err(unsupported("numeric")),
            };
            let number = match predicate_value(p)? {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| ApiError::bad_request("Invalid key filter: a numeric predicate needs a number"))?;
            Predicate::Numeric(op, number)
        }
        Some("STRING") => {
            let op = match operation {
                "EQUAL" => TextOp::Equal,
                "NOT_EQUAL" => TextOp::NotEqual,
                "STARTS_WITH" => TextOp::StartsWith,
                "ENDS_WITH" => TextOp::EndsWith,
                "CONTAINS" => TextOp::Contains,
                "NOT_CONTAINS" => TextOp::NotContains,
                "IN" => TextOp::In,
                "NOT_IN" => TextOp::NotIn,
                _ => return Err(unsupported("string")),
            };
            let text = match predicate_value(p)? {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            Predicate::Text { op, value: text, ignore_case: p.get("ignoreCase").and_then(Value::as_bool).unwrap_or(false) }
        }
        Some("BOOLEAN") => {
            let equal = match operation {
                "EQUAL" => true,
                "NOT_EQUAL" => false,
                _ => return Err(unsupported("boolean")),
            };
            let value = match predicate_value(p)? {
                Value::Bool(b) => *b,
                Value::String(s) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => s.eq_ignore_ascii_case("true"),
                _ => return Err(ApiError::bad_request("Invalid key filter: a boolean predicate needs true or false")),
            };
            Predicate::Boolean { equal, value }
        }
        Some("COMPLEX") => {
            let and = match operation {
                "AND" => true,
                "OR" => false,
                _ => return Err(unsupported("complex")),
            };
            let predicates = match p.get("predicates") {
                Some(Value::Array(items)) => items.iter().map(predicate).collect::<ApiResult<Vec<_>>>()?,
                _ => return Err(ApiError::bad_request("Invalid key filter: a complex predicate needs 'predicates'")),
            };
            Predicate::Complex { and, predicates }
        }
        Some(other) => return Err(ApiError::bad_request(format!("Unsupported key filter predicate type '{other}'"))),
        None => return Err(ApiError::bad_request("Invalid key filter predicate: 'type' is required")),
    })
}

/// A key a filter or the sort order names, as storage reads it.
fn stored_key(key: &SelectedKey) -> Option<SortKey> {
    match key.key_type {
        "ENTITY_FIELD" => entity_column(&key.key).map(SortKey::Column),
        "TIME_SERIES" => Some(SortKey::Timeseries(key.key.clone())),
        _ => Some(SortKey::Attribute { scope: key.attribute_scope().flatten().map(str::to_string), key: key.key.clone() }),
    }
}

/// `keyFilters` with `keyFiltersOperation` (AND unless OR): whether any must match rather than all.
fn key_filters(query: &Map<String, Value>) -> ApiResult<(Vec<KeyFilter>, bool)> {
    let filters = match query.get("keyFilters") {
        None | Some(Value::Null) => return Ok((Vec::new(), false)),
        Some(Value::Array(filters)) => filters,
        Some(_) => return Err(ApiError::bad_request("Invalid query: 'keyFilters' must be a list")),
    };
    let filters = filters
        .iter()
        .map(|f| {
            let f = object(f, "key filter")?;
            let key = entity_key(f.get("key").unwrap_or(&Value::Null), "key filter's key")?;
            let key = stored_key(&key).ok_or_else(|| {
                ApiError::bad_request(format!("Unsupported entity field '{}' in key filter: name, type, label and createdTime can be filtered", key.key))
            })?;
            Ok(KeyFilter { key, predicate: predicate(f.get("predicate").unwrap_or(&Value::Null))? })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let any = match str_field(query, "keyFiltersOperation", "query")? {
        None | Some("AND") => false,
        Some("OR") => true,
        Some(other) => return Err(ApiError::bad_request(format!("Invalid query: 'keyFiltersOperation' must be AND or OR, not '{other}'"))),
    };
    Ok((filters, any))
}

fn entity_key(value: &Value, what: &str) -> ApiResult<SelectedKey> {
    let k = object(value, what)?;
    let key = str_field(k, "key", what)?.ok_or_else(|| ApiError::bad_request(format!("Invalid {what}: 'key' is required")))?;
    let key_type = match str_field(k, "type", what)? {
        Some("ENTITY_FIELD") => "ENTITY_FIELD",
        Some("TIME_SERIES") => "TIME_SERIES",
        Some("ATTRIBUTE") => "ATTRIBUTE",
        Some("SERVER_ATTRIBUTE") => "SERVER_ATTRIBUTE",
        Some("SHARED_ATTRIBUTE") => "SHARED_ATTRIBUTE",
        Some("CLIENT_ATTRIBUTE") => "CLIENT_ATTRIBUTE",
        Some(other) => return Err(ApiError::bad_request(format!("Unsupported key type '{other}' in {what}"))),
        None => return Err(ApiError::bad_request(format!("Invalid {what}: 'type' is required"))),
    };
    Ok(SelectedKey { key_type, key: key.to_string() })
}

fn key_list(query: &Map<String, Value>, field: &str) -> ApiResult<Vec<SelectedKey>> {
    match query.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(keys)) => keys.iter().map(|k| entity_key(k, field)).collect(),
        Some(_) => Err(ApiError::bad_request(format!("Invalid query: '{field}' must be a list"))),
    }
}

/// The stored column behind an entity field, for search and sort; fields coapgate has no
/// column for have none.
fn entity_column(field: &str) -> Option<EntityColumn> {
    match field {
        "name" | "title" => Some(EntityColumn::Name),
        "type" => Some(EntityColumn::Type),
        "label" => Some(EntityColumn::Label),
        "createdTime" => Some(EntityColumn::CreatedTime),
        _ => None,
    }
}

/// An entity field's value as ThingsBoard prints it; `None` when the entity has no such field
/// (ThingsBoard then leaves `value` out).
fn entity_field_value(row: &EntityRow, field: &str, tenant_id: Uuid) -> Option<String> {
    match field {
        "name" | "title" => Some(row.name.clone()),
        "type" => row.entity_type.clone(),
        "label" => row.label.clone(),
        "createdTime" => Some(row.created_time.to_string()),
        "id" => Some(row.id.to_string()),
        "entityType" => Some(row.kind.as_str().to_string()),
        "ownerType" => Some(if row.customer_id.is_some() { "CUSTOMER" } else { "TENANT" }.to_string()),
        "ownerId" => Some(row.customer_id.unwrap_or(tenant_id).to_string()),
        _ => None,
    }
}

/// A whole `EntityDataQuery` for `/find`, `/find/keys` and the WebSocket's `entityDataCmds`.
pub(super) struct DataQuery {
    pub(super) query: EntityQuery,
    entity_fields: Vec<SelectedKey>,
    latest_values: Vec<SelectedKey>,
}

impl DataQuery {
    /// The latest values the query selects as ThingsBoard's (`EntityKeyType`, key) pairs.
    pub(super) fn latest_keys(&self) -> Vec<(String, String)> {
        self.latest_values.iter().map(|k| (k.key_type.to_string(), k.key.clone())).collect()
    }

    /// Selects more latest values (a WebSocket `latestCmd`'s `keys`), each once.
    pub(super) fn add_latest_values(&mut self, keys: Option<&Value>) -> ApiResult<()> {
        let Some(keys) = keys.filter(|k| !k.is_null()) else { return Ok(()) };
        let keys = keys.as_array().ok_or_else(|| ApiError::bad_request("Invalid latest command: 'keys' must be a list"))?;
        for key in keys {
            let key = entity_key(key, "latest command's key")?;
            if !self.latest_values.iter().any(|k| k.key_type == key.key_type && k.key == key.key) {
                self.latest_values.push(key);
            }
        }
        Ok(())
    }
}

pub(super) fn data_query(body: &Map<String, Value>) -> ApiResult<DataQuery> {
    let filter = entity_filter(body)?;
    let (key_filters, key_filters_any) = key_filters(body)?;
    let entity_fields = key_list(body, "entityFields")?;
    let latest_values = key_list(body, "latestValues")?;
    let page_link = object(body.get("pageLink").ok_or_else(|| ApiError::bad_request("Page link is required"))?, "page link")?;
    let number = |name: &str, default: u32| -> ApiResult<u32> {
        match page_link.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ApiError::bad_request(format!("Invalid page link: '{name}' must be a non-negative number"))),
        }
    };
    let page_size = number("pageSize", 10)?;
    if page_size == 0 {
        return Err(ApiError::bad_request("Invalid page link: 'pageSize' must be greater than 0"));
    }
    let page = number("page", 0)?;
    let text_search = str_field(page_link, "textSearch", "page link")?.map(str::to_string);
    if let Some(text) = &text_search {
        super::bounded_name("textSearch", text)?;
    }
    let sort = match page_link.get("sortOrder") {
        None | Some(Value::Null) => None,
        Some(order) => {
            let order = object(order, "sort order")?;
            let key = entity_key(order.get("key").unwrap_or(&Value::Null), "sort order's key")?;
            let descending = match str_field(order, "direction", "sort order")? {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(other) => return Err(ApiError::bad_request(format!("Invalid sort order: direction must be ASC or DESC, not '{other}'"))),
            };
            // A field without a column (ThingsBoard would sort by its empty values) keeps the
            // default order.
            stored_key(&key).map(|k| (k, descending))
        }
    };
    let search_columns = entity_fields
        .iter()
        .filter(|k| k.key_type == "ENTITY_FIELD")
        .filter_map(|k| entity_column(&k.key))
        .collect();
    let search_values = latest_values.iter().filter(|k| k.key_type != "ENTITY_FIELD").filter_map(stored_key).collect();
    Ok(DataQuery {
        query: EntityQuery {
            filter,
            page_size,
            page,
            text_search,
            search_columns,
            search_values,
            sort,
            key_filters,
            key_filters_any,
            owner: None,
        },
        entity_fields,
        latest_values,
    })
}

fn ts_value(ts: i64, value: Option<String>) -> Value {
    match value {
        Some(v) => json!({"ts": ts, "value": v}),
        None => json!({"ts": ts}),
    }
}

/// The `latest` map of one entity: its entity fields, then its latest values, each key of the
/// query present (a value the entity lacks is ThingsBoard's empty `{ts: 0, value: ""}`).
/// `points` are the page's latest time-series values, read for all its entities at once.
fn latest_of(
    store: &dyn Store,
    row: &EntityRow,
    q: &DataQuery,
    points: &[(Uuid, String, TsValue)],
    now: i64,
) -> coapgate_storage::Result<Value> {
    let tenant_id = store.tenant_id();
    let mut latest: Map<String, Value> = Map::new();
    let mut put = |key_type: &str, key: &str, value: Value| {
        latest.entry(key_type.to_string()).or_insert_with(|| json!({}))[key] = value;
    };
    for field in q.entity_fields.iter().filter(|k| k.key_type == "ENTITY_FIELD") {
        if let Some(value) = entity_field_value(row, &field.key, tenant_id) {
            put("ENTITY_FIELD", &field.key, ts_value(now, Some(value)));
        } else if entity_column(&field.key).is_some() {
            put("ENTITY_FIELD", &field.key, ts_value(now, None));
        }
    }
    let series = q.latest_values.iter().filter(|k| k.key_type == "TIME_SERIES");
    for key in series {
        let value = match points.iter().find(|(id, k, _)| *id == row.id && *k == key.key) {
            Some((_, _, p)) => ts_value(p.ts, Some(p.value.to_display_string())),
            None => ts_value(0, Some(String::new())),
        };
        put("TIME_SERIES", &key.key, value);
    }
    let attribute_keys: Vec<String> =
        q.latest_values.iter().filter(|k| k.attribute_scope().is_some()).map(|k| k.key.clone()).collect();
    if !attribute_keys.is_empty() {
        let attributes = store.attributes(row.id, None, Some(&attribute_keys))?;
        for k in q.latest_values.iter() {
            let Some(scope) = k.attribute_scope() else { continue };
            // `ATTRIBUTE` is whichever scope was written last.
            let found = attributes
                .iter()
                .filter(|(s, a)| a.key == k.key && scope.is_none_or(|scope| s == scope))
                .max_by_key(|(_, a)| a.last_update_ts);
            let value = match found {
                Some((_, a)) => ts_value(a.last_update_ts, Some(a.value.to_display_string())),
                None => ts_value(0, Some(String::new())),
            };
            put(k.key_type, &k.key, value);
        }
    }
    Ok(Value::Object(latest))
}

pub async fn find(State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> ApiResult<Json<Value>> {
    let mut q = data_query(&parse_body(&body)?)?;
    q.query.owner = caller.customer();
    let store = state.store.clone();
    let page = blocking(move || {
        let page = store.query_entities(&q.query)?;
        page_json(store.as_ref(), &q, &page)
    })
    .await?;
    Ok(Json(page))
}

/// `/find`'s answer for a page of matches: ThingsBoard's `PageData<EntityData>`, each entity
/// with the latest values the query selects. The WebSocket's `entityDataCmds` send the same.
pub(super) fn page_json(store: &dyn Store, q: &DataQuery, page: &Page<EntityRow>) -> coapgate_storage::Result<Value> {
    let now = coapgate_storage::now_millis();
    let series: Vec<String> = q.latest_values.iter().filter(|k| k.key_type == "TIME_SERIES").map(|k| k.key.clone()).collect();
    let ids: Vec<Uuid> = page.data.iter().map(|row| row.id).collect();
    let points = if series.is_empty() { Vec::new() } else { store.latest_timeseries_of(&ids, &series)? };
    let data = page
        .data
        .iter()
        .map(|row| {
            Ok(json!({
                "entityId": super::json::entity_id(row.kind.as_str(), row.id),
                "latest": latest_of(store, row, q, &points, now)?,
                "timeseries": {},
            }))
        })
        .collect::<coapgate_storage::Result<Vec<Value>>>()?;
    Ok(json!({
        "data": data,
        "totalPages": page.total_pages,
        "totalElements": page.total_elements,
        "hasNext": page.has_next,
    }))
}

pub async fn count(State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let filter = entity_filter(&body)?;
    let (key_filters, key_filters_any) = key_filters(&body)?;
    let query = EntityQuery {
        filter,
        page_size: 1,
        page: 0,
        text_search: None,
        search_columns: Vec::new(),
        search_values: Vec::new(),
        sort: None,
        key_filters,
        key_filters_any,
        owner: caller.customer(),
    };
    let store = state.store.clone();
    let page = blocking(move || store.query_entities(&query)).await?;
    Ok(Json(json!(page.total_elements)))
}

/// `AvailableEntityKeys`: the time-series and attribute keys of the first 100 matches, sorted
/// and unique; attributes of one scope when `scope` is given.
pub async fn find_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(params): QueryParams<Query>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let mut q = data_query(&parse_body(&body)?)?;
    q.query.owner = caller.customer();
    let timeseries = query_bool(&params, "timeseries")?.ok_or_else(|| ApiError::bad_request("Required request parameter 'timeseries' for method parameter type boolean is not present"))?;
    let attributes = query_bool(&params, "attributes")?.ok_or_else(|| ApiError::bad_request("Required request parameter 'attributes' for method parameter type boolean is not present"))?;
    let scope = match params.get("scope").map(String::as_str).filter(|s| !s.is_empty()) {
        None => None,
        Some(s @ ("SERVER_SCOPE" | "SHARED_SCOPE" | "CLIENT_SCOPE")) => Some(s.to_string()),
        Some(other) => return Err(ApiError::bad_request(format!("Invalid attribute scope '{other}'"))),
    };
    q.query.page_size = q.query.page_size.min(KEYS_PAGE_SIZE);
    let store = state.store.clone();
    let keys = blocking(move || {
        let page = store.query_entities(&q.query)?;
        let mut entity_types: Vec<&str> = Vec::new();
        let (mut series, mut attribute) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
        for row in &page.data {
            if !entity_types.contains(&row.kind.as_str()) {
                entity_types.push(row.kind.as_str());
            }
            if timeseries {
                series.extend(store.timeseries_keys(row.id)?);
            }
            if attributes {
                attribute.extend(store.attribute_keys(row.id, scope.as_deref())?);
            }
        }
        Ok(json!({"entityTypes": entity_types, "timeseries": series, "attribute": attribute}))
    })
    .await?;
    Ok(Json(keys))
}
