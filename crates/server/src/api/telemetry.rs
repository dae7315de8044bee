//! ThingsBoard's telemetry controller: time-series keys, latest values, history with optional
//! aggregation, and attributes; and writes of attributes (server and shared scope) and time
//! series for any entity, customers included, each one durable commit before the answer.
//!
//! Values are strings unless `useStrictDataTypes=true`, exactly as ThingsBoard prints them, so
//! dashboards and scripts written against ThingsBoard parse them the same way.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::model::{EntityKind, HistoryQuery, KvValue, TsValue};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{ApiError, ApiResult, AppState, Query, blocking, parse_uuid, query_bool, query_number};

/// Checks the entity exists (where coapgate stores that kind) and returns its id.
async fn entity(state: &AppState, entity_type: &str, entity_id: &str) -> ApiResult<Uuid> {
    if entity_type == "CUSTOMER" {
        return Ok(super::customers::existing_customer(state, entity_id).await?.id);
    }
    let kind = EntityKind::parse(entity_type)
        .ok_or_else(|| ApiError::bad_request(format!("Unsupported entity type '{entity_type}'")))?;
    let id = parse_uuid(entity_id)?;
    let store = state.store.clone();
    let exists = match kind {
        EntityKind::Device => blocking(move || store.device(id)).await?.is_some(),
        EntityKind::Integration => blocking(move || store.integration(id)).await?.is_some(),
        EntityKind::Converter => blocking(move || store.converter(id)).await?.is_some(),
        EntityKind::Asset => blocking(move || store.asset(id)).await?.is_some(),
    };
    if !exists {
        return Err(ApiError::item_not_found());
    }
    Ok(id)
}

/// The `keys` parameter; absent or empty means all keys, as ThingsBoard's `StringUtils.isEmpty(keys)`.
fn keys_param(q: &Query) -> Option<Vec<String>> {
    let keys: Vec<String> = q.get("keys")?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    (!keys.is_empty()).then_some(keys)
}

fn value_json(v: &KvValue, strict: bool) -> Value {
    if strict { v.to_json() } else { Value::String(v.to_display_string()) }
}

pub async fn timeseries_keys(State(state): State<AppState>, Path((t, id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let id = entity(&state, &t, &id).await?;
    let store = state.store.clone();
    Ok(Json(json!(blocking(move || store.timeseries_keys(id)).await?)))
}

/// Latest values without `startTs`, history with it.
pub async fn timeseries_values(
    State(state): State<AppState>,
    Path((t, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let id = entity(&state, &t, &id).await?;
    let strict = query_bool(&q, "useStrictDataTypes")?.unwrap_or(false);
    let keys = keys_param(&q);
    let start_ts: Option<i64> = query_number(&q, "startTs")?;
    let store = state.store.clone();
    let Some(start_ts) = start_ts else {
        let latest = blocking(move || store.latest_timeseries(id, keys.as_deref())).await?;
        let mut out = Map::new();
        for (key, point) in latest {
            out.insert(key, json!([{"ts": point.ts, "value": value_json(&point.value, strict)}]));
        }
        return Ok(Json(Value::Object(out)));
    };
    let end_ts: i64 = query_number(&q, "endTs")?.ok_or_else(|| ApiError::bad_request("Parameter 'endTs' is required"))?;
    let keys = keys.filter(|k| !k.is_empty()).ok_or_else(|| ApiError::bad_request("Parameter 'keys' is required"))?;
    let agg = q.get("agg").map(|a| a.to_ascii_uppercase()).unwrap_or_else(|| "NONE".into());
    let limit: u32 = query_number(&q, "limit")?.unwrap_or(100);
    let descending = match q.get("orderBy").map(|o| o.to_ascii_uppercase()) {
        None => true,
        Some(o) if o == "DESC" => true,
        Some(o) if o == "ASC" => false,
        Some(o) => return Err(ApiError::bad_request(format!("Parameter 'orderBy' must be ASC or DESC, not '{o}'"))),
    };
    let aggregation = match agg.as_str() {
        "NONE" => None,
        "MIN" | "MAX" | "AVG" | "SUM" | "COUNT" => {
            let interval: i64 = query_number(&q, "interval")?.unwrap_or(end_ts - start_ts).max(1);
            Some((agg.clone(), interval))
        }
        other => return Err(ApiError::bad_request(format!("Parameter 'agg' must be NONE, MIN, MAX, AVG, SUM or COUNT, not '{other}'"))),
    };
    let query = HistoryQuery {
        keys,
        start_ts,
        end_ts,
        // Aggregation needs every raw point in range; cap it so one request cannot read unbounded rows.
        limit: if aggregation.is_some() { 1_000_000 } else { limit },
        descending,
    };
    let history = blocking(move || store.timeseries_history(id, &query)).await?;
    let mut out = Map::new();
    for (key, points) in history {
        let points = match &aggregation {
            None => points,
            Some((agg, interval)) => aggregate(&points, agg, start_ts, end_ts, *interval, descending, limit as usize),
        };
        let list: Vec<Value> =
            points.iter().map(|p| json!({"ts": p.ts, "value": value_json(&p.value, strict)})).collect();
        out.insert(key, Value::Array(list));
    }
    Ok(Json(Value::Object(out)))
}

/// Buckets of `interval` ms from `start_ts`; each bucket's value at its middle, as ThingsBoard
/// reports aggregated points. Non-numeric values only count for COUNT.
fn aggregate(
    points: &[TsValue],
    agg: &str,
    start_ts: i64,
    end_ts: i64,
    interval: i64,
    descending: bool,
    limit: usize,
) -> Vec<TsValue> {
    let mut buckets: std::collections::BTreeMap<i64, Vec<&KvValue>> = std::collections::BTreeMap::new();
    for p in points {
        if p.ts < start_ts || p.ts > end_ts {
            continue;
        }
        let bucket = start_ts + (p.ts - start_ts) / interval * interval;
        buckets.entry(bucket).or_default().push(&p.value);
    }
    let mut out: Vec<TsValue> = buckets
        .into_iter()
        .filter_map(|(bucket, values)| {
            let ts = bucket + (interval.min(end_ts - bucket + 1)) / 2;
            let numbers: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
            let all_long = values.iter().all(|v| matches!(v, KvValue::Long(_)));
            let value = match agg {
                "COUNT" => KvValue::Long(values.len() as i64),
                _ if numbers.is_empty() => return None,
                "AVG" => KvValue::Double(numbers.iter().sum::<f64>() / numbers.len() as f64),
                "SUM" if all_long => KvValue::Long(numbers.iter().sum::<f64>() as i64),
                "SUM" => KvValue::Double(numbers.iter().sum()),
                "MIN" | "MAX" => {
                    let pick = if agg == "MIN" { f64::min } else { f64::max };
                    let v = numbers.iter().copied().fold(numbers[0], pick);
                    if all_long { KvValue::Long(v as i64) } else { KvValue::Double(v) }
                }
                _ => return None,
            };
            Some(TsValue { ts, value })
        })
        .collect();
    if descending {
        out.reverse();
    }
    out.truncate(limit);
    out
}

pub async fn attribute_keys(State(state): State<AppState>, Path((t, id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    keys_of(state, t, id, None).await
}

pub async fn attribute_keys_scoped(
    State(state): State<AppState>,
    Path((t, id, scope)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    keys_of(state, t, id, Some(scope)).await
}

async fn keys_of(state: AppState, t: String, id: String, scope: Option<String>) -> ApiResult<Json<Value>> {
    let id = entity(&state, &t, &id).await?;
    let scope = scope.map(check_scope).transpose()?;
    let store = state.store.clone();
    Ok(Json(json!(blocking(move || store.attribute_keys(id, scope.as_deref())).await?)))
}

pub async fn attribute_values(
    State(state): State<AppState>,
    Path((t, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    values_of(state, t, id, None, q).await
}

pub async fn attribute_values_scoped(
    State(state): State<AppState>,
    Path((t, id, scope)): Path<(String, String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    values_of(state, t, id, Some(scope), q).await
}

async fn values_of(state: AppState, t: String, id: String, scope: Option<String>, q: Query) -> ApiResult<Json<Value>> {
    let id = entity(&state, &t, &id).await?;
    let scope = scope.map(check_scope).transpose()?;
    let keys = keys_param(&q);
    let store = state.store.clone();
    let attributes = blocking(move || store.attributes(id, scope.as_deref(), keys.as_deref())).await?;
    // Attribute values keep their types in ThingsBoard's API.
    let list: Vec<Value> = attributes
        .into_iter()
        .map(|(_, a)| json!({"lastUpdateTs": a.last_update_ts, "key": a.key, "value": a.value.to_json()}))
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `POST /api/plugins/telemetry/{entityType}/{entityId}/attributes/{scope}` (and ThingsBoard's
/// older `…/{scope}` form): a JSON object of key → value, typed as converter output is.
/// Devices report `CLIENT_SCOPE` themselves; the API writes the server and shared scopes.
pub async fn save_attributes(
    State(state): State<AppState>,
    Path((t, id, scope)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    if scope != "SERVER_SCOPE" && scope != "SHARED_SCOPE" {
        return Err(ApiError::bad_request(format!("Invalid attribute scope '{scope}': use SERVER_SCOPE or SHARED_SCOPE")));
    }
    let id = entity(&state, &t, &id).await?;
    let body = super::parse_body(&body)?;
    let values: Vec<(String, KvValue)> = body.iter().filter_map(|(k, v)| KvValue::from_json(v).map(|kv| (k.clone(), kv))).collect();
    check_keys(values.iter().map(|(k, _)| k))?;
    if values.is_empty() {
        return Err(ApiError::bad_request("No attributes data found in request body!"));
    }
    let store = state.store.clone();
    let ts = coapgate_storage::now_millis();
    let (scope, values) = blocking(move || store.save_attributes(id, &scope, ts, &values).map(|()| (scope, values))).await?;
    state.live.attributes_saved(id, scope, ts, values);
    Ok(StatusCode::OK)
}

/// `POST /api/plugins/telemetry/{entityType}/{entityId}/timeseries/{scope}`: ThingsBoard's
/// telemetry body — `{key: value}` (server time), `{ts, values}`, or an array of those. The
/// scope is ThingsBoard's `ANY`, whatever it says.
pub async fn save_timeseries(
    State(state): State<AppState>,
    Path((t, id, _scope)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let id = entity(&state, &t, &id).await?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
    let points = crate::uplink::telemetry(&body, coapgate_storage::now_millis())
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {}", e.to_string().replace("'telemetry", "'body"))))?;
    check_keys(points.iter().flat_map(|(_, values)| values.iter().map(|(k, _)| k)))?;
    if points.iter().all(|(_, values)| values.is_empty()) {
        return Err(ApiError::bad_request("No timeseries data found in request body!"));
    }
    let store = state.store.clone();
    let points = blocking(move || store.save_timeseries(id, &points).map(|()| points)).await?;
    state.live.timeseries_saved(id, points);
    Ok(StatusCode::OK)
}

/// Keys are names: non-empty and at most ThingsBoard's length.
fn check_keys<'a>(keys: impl Iterator<Item = &'a String>) -> ApiResult<()> {
    for key in keys {
        if key.trim().is_empty() {
            return Err(ApiError::bad_request("Key cannot be empty!"));
        }
        super::bounded_name("key", key)?;
    }
    Ok(())
}

fn check_scope(scope: String) -> ApiResult<String> {
    match scope.as_str() {
        "CLIENT_SCOPE" | "SERVER_SCOPE" | "SHARED_SCOPE" => Ok(scope),
        other => Err(ApiError::bad_request(format!(
            "Invalid attribute scope '{other}': use CLIENT_SCOPE, SERVER_SCOPE or SHARED_SCOPE"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts: i64, v: KvValue) -> TsValue {
        TsValue { ts, value: v }
    }

    #[test]
    fn aggregation_by_bucket() {
        let points = vec![p(0, KvValue::Long(1)), p(5, KvValue::Long(3)), p(10, KvValue::Double(2.5)), p(12, KvValue::Str("x".into()))];
        let check = |agg: &str, expected: Vec<TsValue>| {
            assert_eq!(aggregate(&points, agg, 0, 19, 10, false, 100), expected, "{agg}");
        };
        check("AVG", vec![p(5, KvValue::Double(2.0)), p(15, KvValue::Double(2.5))]);
        check("SUM", vec![p(5, KvValue::Long(4)), p(15, KvValue::Double(2.5))]);
        check("MIN", vec![p(5, KvValue::Long(1)), p(15, KvValue::Double(2.5))]);
        check("MAX", vec![p(5, KvValue::Long(3)), p(15, KvValue::Double(2.5))]);
        check("COUNT", vec![p(5, KvValue::Long(2)), p(15, KvValue::Long(2))]);
        assert_eq!(aggregate(&points, "COUNT", 0, 19, 10, true, 1), vec![p(15, KvValue::Long(2))]);
    }
}
