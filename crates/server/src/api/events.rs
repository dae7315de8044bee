//! ThingsBoard's event controller: debug, lifecycle, statistics and error events of an entity,
//! and a converter's latest debug input.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use coapgate_storage::model::{EntityKind, Event, EventQuery};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_body, parse_uuid, query_number};

const EVENT_TYPES: &[&str] = &["DEBUG_INTEGRATION", "DEBUG_CONVERTER", "LC_EVENT", "STATS", "ERROR"];

fn event_type(text: &str) -> ApiResult<String> {
    let upper = text.to_ascii_uppercase();
    // ThingsBoard's UI also says LIFECYCLE and DEBUG for these.
    let name = match upper.as_str() {
        "LIFECYCLE" => "LC_EVENT".to_string(),
        _ => upper,
    };
    if EVENT_TYPES.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!("Unsupported event type '{text}': use one of {}", EVENT_TYPES.join(", "))))
    }
}

/// ThingsBoard's `EventInfo`.
fn event_info(e: &Event, tenant_id: uuid::Uuid) -> Value {
    json!({
        "id": {"id": e.id},
        "createdTime": e.created_time,
        "tenantId": tb::entity_id("TENANT", tenant_id),
        "type": e.event_type,
        "uid": e.uid,
        "entityId": tb::entity_id(e.entity_kind.as_str(), e.entity_id),
        "body": e.body,
    })
}

fn base_query(entity_type: &str, entity_id: &str, event_type: String, q: &Query) -> ApiResult<EventQuery> {
    EntityKind::parse(entity_type).ok_or_else(|| ApiError::bad_request(format!("Unsupported entity type '{entity_type}'")))?;
    let mut page = page_query(q)?;
    // Events are newest first unless the caller asks for ascending order explicitly.
    if page.sort_property.is_none() {
        page.sort_descending = true;
    }
    page.sort_property.get_or_insert_with(|| "createdTime".into());
    Ok(EventQuery {
        entity_id: parse_uuid(entity_id)?,
        event_type,
        start_time: query_number(q, "startTime")?,
        end_time: query_number(q, "endTime")?,
        page,
        ..EventQuery::default()
    })
}

async fn run(state: &AppState, query: EventQuery) -> ApiResult<Json<Value>> {
    let store = state.store.clone();
    let page = blocking(move || store.events(&query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |e| event_info(e, tenant))))
}

/// `GET /api/events/{entityType}/{entityId}/{eventType}`.
pub async fn by_type(
    State(state): State<AppState>,
    Path((entity_type, entity_id, kind)): Path<(String, String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let query = base_query(&entity_type, &entity_id, event_type(&kind)?, &q)?;
    run(&state, query).await
}

/// `POST /api/events/{entityType}/{entityId}` with ThingsBoard's `EventFilter` body.
pub async fn filtered(
    State(state): State<AppState>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let filter = parse_body(&body)?;
    let kind = filter
        .get("eventType")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Field 'eventType' should be specified!"))?;
    let mut query = base_query(&entity_type, &entity_id, event_type(kind)?, &q)?;
    apply_filter(&mut query, &filter)?;
    run(&state, query).await
}

/// Equality on the body fields a filter names, the error substring, and `isError`.
fn apply_filter(query: &mut EventQuery, filter: &Map<String, Value>) -> ApiResult<()> {
    for field in ["server", "type", "messageType", "inMessageType", "event", "method"] {
        if let Some(value) = filter.get(field).and_then(Value::as_str).filter(|v| !v.is_empty()) {
            query.body_equals.push((field.to_string(), value.to_string()));
        }
    }
    // DEBUG_INTEGRATION filters name the status `statusIntegration`; lifecycle filters `status`.
    let status = ["status", "statusIntegration"].iter().find_map(|f| filter.get(*f).and_then(Value::as_str).filter(|v| !v.is_empty()));
    if let Some(status) = status {
        match status.to_ascii_uppercase().as_str() {
            // Lifecycle events say Success/Failure in ThingsBoard's filter, stored as `success`.
            "SUCCESS" => query.has_error = Some(false),
            "FAILURE" => query.has_error = Some(true),
            other => query.body_equals.push(("status".into(), other.to_string())),
        }
    }
    query.error_contains = filter.get("errorStr").and_then(Value::as_str).map(str::to_string);
    match filter.get("isError") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => query.has_error = Some(*b),
        Some(_) => return Err(ApiError::bad_request("Field 'isError' must be true or false")),
    }
    Ok(())
}

/// `GET /api/converter/{id}/debugIn`: the input of the converter's latest debug event, to
/// prefill "Test payload decoder".
pub async fn converter_debug_in(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let (converter, latest) = blocking(move || {
        let converter = store.converter(id)?;
        let query = EventQuery {
            entity_id: id,
            event_type: "DEBUG_CONVERTER".into(),
            page: coapgate_storage::model::PageQuery { page_size: 1, sort_descending: true, ..Default::default() },
            ..EventQuery::default()
        };
        Ok((converter, store.events(&query)?.data.into_iter().next()))
    })
    .await?;
    converter.ok_or_else(ApiError::item_not_found)?;
    let Some(event) = latest else {
        return Ok(Json(Value::Null));
    };
    let metadata = event
        .body
        .get("metadata")
        .and_then(Value::as_str)
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .unwrap_or_else(|| json!({}));
    Ok(Json(json!({
        "inContent": event.body.get("in").cloned().unwrap_or(Value::Null),
        "inContentType": event.body.get("inMessageType").cloned().unwrap_or(Value::Null),
        "inMetadata": metadata,
    })))
}

/// `GET /api/coapgate/events/{entityType}/{entityId}/dropped?startTime=&endTime=` (beyond
/// ThingsBoard): how many events of the entity this node dropped in the period, by its per-entity
/// rate cap or because the recording queue was full, counted by minute (a minute overlapping the
/// period counts whole). Per node: each node counts what it dropped itself.
pub async fn dropped(
    State(state): State<AppState>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let kind = EntityKind::parse(&entity_type).ok_or_else(|| ApiError::bad_request(format!("Unsupported entity type '{entity_type}'")))?;
    let id = parse_uuid(&entity_id)?;
    let end = query_number(&q, "endTime")?.unwrap_or_else(coapgate_storage::now_millis);
    let start = query_number(&q, "startTime")?.unwrap_or(0);
    let report = state.events.dropped_between(id, start, end);
    Ok(Json(json!({
        "entityId": tb::entity_id(kind.as_str(), id),
        "startTime": start,
        "endTime": end,
        "dropped": report.rate_limited + report.queue_full,
        "rateLimited": report.rate_limited,
        "queueFull": report.queue_full,
        "rateCapPerSecond": state.events.rate_cap(),
        "rememberedSince": report.remembered_since,
        "node": state.events.server(),
        "scope": "node",
    })))
}

/// Adds `messages24h` (`{processed, errors}`, beyond ThingsBoard) to integration JSON rows: the
/// stored `STATS` events of the last 24 hours plus this node's counts not stored yet, so the
/// number is current within a second of an uplink this node handled.
pub async fn with_message_counts(state: &AppState, mut rows: Vec<Value>) -> ApiResult<Vec<Value>> {
    let ids: Vec<uuid::Uuid> =
        rows.iter().map(|r| r["id"]["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_default()).collect();
    let (store, events) = (state.store.clone(), state.events.clone());
    let counts = blocking(move || ids.iter().map(|id| events.message_counts(store.as_ref(), *id)).collect::<Result<Vec<_>, _>>()).await?;
    for (row, c) in rows.iter_mut().zip(counts) {
        if let Value::Object(map) = row {
            map.insert("messages24h".into(), json!({"processed": c.processed, "errors": c.errors}));
        }
    }
    Ok(rows)
}

/// `GET /api/coapgate/integrations/messages24h?ids=ID,ID,…` (beyond ThingsBoard): the live
/// `messages24h` of up to 100 integrations in one call, for a list that shows them every second.
pub async fn messages_24h(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let ids = q
        .get("ids")
        .map(|s| s.split(',').filter(|s| !s.is_empty()).map(parse_uuid).collect::<ApiResult<Vec<_>>>())
        .transpose()?
        .unwrap_or_default();
    if ids.len() > 100 {
        return Err(ApiError::bad_request("At most 100 ids"));
    }
    let rows = ids.iter().map(|id| json!({"id": {"id": id}})).collect();
    let rows = with_message_counts(&state, rows).await?;
    let mut out = Map::new();
    for (id, row) in ids.iter().zip(rows) {
        out.insert(id.to_string(), row["messages24h"].clone());
    }
    Ok(Json(Value::Object(out)))
}
