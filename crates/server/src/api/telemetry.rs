//! ThingsBoard's telemetry controller: time-series keys, latest values, history with optional
//! aggregation, and attributes; and writes of attributes (server and shared scope) and time
//! series for any entity, customers included, each one durable commit before the answer.
//!
//! Values are strings unless `useStrictDataTypes=true`, exactly as ThingsBoard prints them, so
//! dashboards and scripts written against ThingsBoard parse them the same way.

use axum::Json;
use axum::body::Bytes;
use axum::Extension;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use coapgate_storage::model::{EntityKind, HistoryQuery, KvValue, TimeseriesDeletion, TsValue};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::authority::Caller;
use super::{ApiError, ApiResult, AppState, Query, blocking, parse_uuid, query_bool, query_number};

/// The entity a telemetry path names: 404 when it does not exist, then 403 when the caller may
/// not reach it (a customer user reaches its customer's devices and assets and the customer
/// itself; ThingsBoard checks in the same order).
pub(super) async fn entity(state: &AppState, caller: Caller, entity_type: &str, entity_id: &str) -> ApiResult<Uuid> {
    if entity_type == "CUSTOMER" {
        let id = super::customers::existing_customer(state, entity_id).await?.id;
        caller.require_owner(Some(id))?;
        return Ok(id);
    }
    let kind = EntityKind::parse(entity_type)
        .ok_or_else(|| ApiError::bad_request(format!("Unsupported entity type '{entity_type}'")))?;
    let id = parse_uuid(entity_id)?;
    let store = state.store.clone();
    // Some(owner) when the entity exists; integrations and converters belong to the tenant.
    let owner: Option<Option<Uuid>> = match kind {
        EntityKind::Device => blocking(move || store.device(id)).await?.map(|d| d.customer_id),
        EntityKind::Asset => blocking(move || store.asset(id)).await?.map(|a| a.customer_id),
        EntityKind::Integration => blocking(move || store.integration(id)).await?.map(|_| None),
        EntityKind::Converter => blocking(move || store.converter(id)).await?.map(|_| None),
    };
    let owner = owner.ok_or_else(ApiError::item_not_found)?;
    caller.require_owner(owner)?;
    Ok(id)
}

/// The `keys` parameter; absent or empty means all keys, as ThingsBoard's `StringUtils.isEmpty(keys)`.
/// Without `keys`, the repeated `key` parameter (what `tb-rest-client` sends for a list) is read.
fn keys_param(q: &Query) -> Option<Vec<String>> {
    let text = q.get("keys").filter(|k| !k.trim().is_empty()).or_else(|| q.get("key"))?;
    let keys: Vec<String> = text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    (!keys.is_empty()).then_some(keys)
}

fn value_json(v: &KvValue, strict: bool) -> Value {
    if strict { v.to_json() } else { Value::String(v.to_display_string()) }
}

pub async fn timeseries_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let id = entity(&state, caller, &t, &id).await?;
    let store = state.store.clone();
    Ok(Json(json!(blocking(move || store.timeseries_keys(id)).await?)))
}

/// Latest values without `startTs`, history with it.
pub async fn timeseries_values(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let id = entity(&state, caller, &t, &id).await?;
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
    let history = read_history(&state, id, keys, start_ts, end_ts, &q).await?;
    let mut out = Map::new();
    for (key, points) in history {
        let list: Vec<Value> =
            points.iter().map(|p| json!({"ts": p.ts, "value": value_json(&p.value, strict)})).collect();
        out.insert(key, Value::Array(list));
    }
    Ok(Json(Value::Object(out)))
}

/// A history read as `GET …/values/timeseries` makes it, raw or aggregated (`agg`, `interval`,
/// `intervalType`, `timeZone`, `limit`, `orderBy` from `q`): the REST route and the WebSocket's
/// history commands share it, so both give the same points for the same query.
pub(super) async fn read_history(
    state: &AppState,
    id: Uuid,
    keys: Vec<String>,
    start_ts: i64,
    end_ts: i64,
    q: &Query,
) -> ApiResult<Vec<(String, Vec<TsValue>)>> {
    let agg = q.get("agg").map(|a| a.to_ascii_uppercase()).unwrap_or_else(|| "NONE".into());
    let limit: u32 = query_number(q, "limit")?.unwrap_or(100);
    let descending = match q.get("orderBy").map(|o| o.to_ascii_uppercase()) {
        None => true,
        Some(o) if o == "DESC" => true,
        Some(o) if o == "ASC" => false,
        Some(o) => return Err(ApiError::bad_request(format!("Parameter 'orderBy' must be ASC or DESC, not '{o}'"))),
    };
    if !matches!(agg.as_str(), "NONE" | "MIN" | "MAX" | "AVG" | "SUM" | "COUNT") {
        return Err(ApiError::bad_request(format!("Parameter 'agg' must be NONE, MIN, MAX, AVG, SUM or COUNT, not '{agg}'")));
    }
    let buckets = buckets_of(q, &agg)?;
    let query = HistoryQuery {
        keys,
        start_ts,
        // ThingsBoard reads `startTs <= ts < endTs`; storage's range includes its end.
        end_ts: end_ts.saturating_sub(1),
        // `limit` counts raw points (ThingsBoard applies it only with agg=NONE); aggregation needs
        // every raw point in range, capped so one request cannot read unbounded rows.
        limit: if buckets.is_some() { 1_000_000 } else { limit },
        descending,
    };
    let store = state.store.clone();
    let history = blocking(move || store.timeseries_history(id, &query)).await?;
    Ok(history
        .into_iter()
        .map(|(key, points)| match &buckets {
            None => (key, points),
            // Buckets come in time order whatever `orderBy` says: ThingsBoard's SQL DAO lists them
            // as it walks the range and orders only raw reads.
            Some(bucketing) => {
                let points = aggregate(&points, &agg, &bucketing.buckets(start_ts, end_ts));
                (key, points)
            }
        })
        .collect())
}

/// How an aggregated history is cut into buckets: fixed milliseconds, or calendar weeks, months
/// or quarters in a time zone (ThingsBoard's `AggregationParams`).
#[derive(Debug, Clone, PartialEq)]
enum Bucketing {
    Millis(i64),
    Calendar(Calendar, chrono_tz::Tz),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Calendar {
    /// Sunday to Saturday.
    Week,
    /// Monday to Sunday.
    WeekIso,
    Month,
    Quarter,
}

/// ThingsBoard's choice: `agg=NONE` reads raw points; otherwise `intervalType` absent or
/// `MILLISECONDS` aggregates by `interval` ms, and an interval of 0 (the default) reads raw
/// points too; `WEEK`, `WEEK_ISO`, `MONTH`, `QUARTER` aggregate by calendar in `timeZone`
/// (the server's, UTC here, when absent). `None`: raw points.
fn buckets_of(q: &Query, agg: &str) -> ApiResult<Option<Bucketing>> {
    if agg == "NONE" {
        return Ok(None);
    }
    let calendar = match q.get("intervalType").map(|t| t.to_ascii_uppercase()).as_deref() {
        None | Some("") | Some("MILLISECONDS") => None,
        Some("WEEK") => Some(Calendar::Week),
        Some("WEEK_ISO") => Some(Calendar::WeekIso),
        Some("MONTH") => Some(Calendar::Month),
        Some("QUARTER") => Some(Calendar::Quarter),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Parameter 'intervalType' must be MILLISECONDS, WEEK, WEEK_ISO, MONTH or QUARTER, not '{other}'"
            )));
        }
    };
    match calendar {
        None => {
            let interval: i64 = query_number(q, "interval")?.unwrap_or(0);
            if interval < 0 {
                return Err(ApiError::bad_request("Parameter 'interval' must not be negative"));
            }
            Ok((interval > 0).then_some(Bucketing::Millis(interval)))
        }
        Some(calendar) => {
            let zone = match q.get("timeZone").filter(|z| !z.is_empty()) {
                None => chrono_tz::UTC,
                Some(name) => name
                    .parse::<chrono_tz::Tz>()
                    .map_err(|_| ApiError::bad_request(format!("Invalid time zone '{name}'")))?,
            };
            Ok(Some(Bucketing::Calendar(calendar, zone)))
        }
    }
}

impl Bucketing {
    /// Where each point falls, as ThingsBoard walks the range: from `start_ts` to
    /// `max(start_ts + 1, end_ts)`, each bucket `[from, to)`, the last one cut at the end.
    fn buckets(&self, start_ts: i64, end_ts: i64) -> Buckets {
        let end = end_ts.max(start_ts + 1);
        match self {
            Bucketing::Millis(interval) => Buckets::Millis { start: start_ts, end, interval: *interval },
            Bucketing::Calendar(calendar, zone) => {
                // Calendar buckets are few (a century holds 5,200 weeks), so they are listed.
                let mut edges = Vec::new();
                let mut from = start_ts;
                while from < end && edges.len() < 100_000 {
                    let to = calendar_end(from, *calendar, *zone).min(end).max(from + 1);
                    edges.push((from, to));
                    from = to;
                }
                Buckets::Listed(edges)
            }
        }
    }
}

/// The buckets of one history query.
enum Buckets {
    Millis { start: i64, end: i64, interval: i64 },
    Listed(Vec<(i64, i64)>),
}

impl Buckets {
    /// The bucket `[from, to)` holding `ts`, if `ts` is in the range.
    fn of(&self, ts: i64) -> Option<(i64, i64)> {
        match self {
            Buckets::Millis { start, end, interval } => {
                if ts < *start || ts >= *end {
                    return None;
                }
                let from = start + (ts - start) / interval * interval;
                Some((from, from.saturating_add(*interval).min(*end)))
            }
            Buckets::Listed(edges) => {
                let i = edges.partition_point(|&(_, to)| to <= ts);
                edges.get(i).copied().filter(|&(from, _)| from <= ts)
            }
        }
    }
}

/// The end of the calendar week, month or quarter holding `ts` in `zone`: local midnight at the
/// start of the next one (ThingsBoard's `TimeUtils.calculateIntervalEnd`).
fn calendar_end(ts: i64, calendar: Calendar, zone: chrono_tz::Tz) -> i64 {
    use chrono::{Datelike, Days, Months, NaiveDate, TimeZone};
    let Some(local) = zone.timestamp_millis_opt(ts).single() else { return ts + 1 };
    let day: NaiveDate = local.date_naive();
    let next: Option<NaiveDate> = match calendar {
        Calendar::Week => day.checked_sub_days(Days::new(u64::from(day.weekday().num_days_from_sunday())))
            .and_then(|d| d.checked_add_days(Days::new(7))),
        Calendar::WeekIso => day.checked_sub_days(Days::new(u64::from(day.weekday().num_days_from_monday())))
            .and_then(|d| d.checked_add_days(Days::new(7))),
        Calendar::Month => day.with_day(1).and_then(|d| d.checked_add_months(Months::new(1))),
        Calendar::Quarter => {
            NaiveDate::from_ymd_opt(day.year(), (day.month0() / 3) * 3 + 1, 1).and_then(|d| d.checked_add_months(Months::new(3)))
        }
    };
    let Some(next) = next else { return i64::MAX };
    let midnight = next.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A zone whose clocks skip midnight (a DST change at 00:00) starts the day at the first
    // instant that exists, as java.time does.
    match zone.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
        chrono::LocalResult::None => zone
            .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
            .earliest()
            .map_or(ts + 1, |t| t.timestamp_millis()),
    }
}

/// One value per non-empty bucket `[from, to)`, at the bucket's middle as ThingsBoard reports
/// aggregated points. Non-numeric values only count for COUNT.
fn aggregate(points: &[TsValue], agg: &str, buckets: &Buckets) -> Vec<TsValue> {
    let mut grouped: std::collections::BTreeMap<(i64, i64), Vec<&KvValue>> = std::collections::BTreeMap::new();
    for p in points {
        if let Some(bucket) = buckets.of(p.ts) {
            grouped.entry(bucket).or_default().push(&p.value);
        }
    }
    grouped
        .into_iter()
        .filter_map(|((from, to), values)| {
            let ts = from + (to - from) / 2;
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
        .collect()
}

pub async fn attribute_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    keys_of(state, caller, t, id, None).await
}

pub async fn attribute_keys_scoped(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id, scope)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    keys_of(state, caller, t, id, Some(scope)).await
}

async fn keys_of(state: AppState, caller: Caller, t: String, id: String, scope: Option<String>) -> ApiResult<Json<Value>> {
    let id = entity(&state, caller, &t, &id).await?;
    let scope = scope.map(check_scope).transpose()?;
    let store = state.store.clone();
    Ok(Json(json!(blocking(move || store.attribute_keys(id, scope.as_deref())).await?)))
}

pub async fn attribute_values(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    values_of(state, caller, t, id, None, q).await
}

pub async fn attribute_values_scoped(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id, scope)): Path<(String, String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    values_of(state, caller, t, id, Some(scope), q).await
}

async fn values_of(state: AppState, caller: Caller, t: String, id: String, scope: Option<String>, q: Query) -> ApiResult<Json<Value>> {
    let id = entity(&state, caller, &t, &id).await?;
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
    Extension(caller): Extension<Caller>,
    Path((t, id, scope)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    // CLIENT_SCOPE is what devices report; users write the other two (ThingsBoard's message).
    if scope != "SERVER_SCOPE" && scope != "SHARED_SCOPE" {
        return Err(ApiError::bad_request(format!("Invalid scope: {scope}")));
    }
    let id = entity(&state, caller, &t, &id).await?;
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
    Extension(caller): Extension<Caller>,
    Path((t, id, _scope)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let id = entity(&state, caller, &t, &id).await?;
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

/// `POST /api/plugins/telemetry/{deviceId}/{scope}`: ThingsBoard's oldest attribute write,
/// for a device.
pub async fn save_device_attributes(
    state: State<AppState>,
    caller: Extension<Caller>,
    Path((id, scope)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    save_attributes(state, caller, Path(("DEVICE".to_string(), id, scope)), body).await
}

/// `POST …/timeseries/{scope}/{ttl}`: as without a TTL. ThingsBoard on SQL storage ignores a
/// point's TTL too (only Cassandra keeps one); points expire by the configured retention.
pub async fn save_timeseries_with_ttl(
    state: State<AppState>,
    caller: Extension<Caller>,
    Path((t, id, scope, ttl)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    ttl.parse::<i64>().map_err(|_| ApiError::bad_request(format!("Parameter 'ttl' must be a number, not '{ttl}'")))?;
    save_timeseries(state, caller, Path((t, id, scope)), body).await
}

/// `DELETE /api/plugins/telemetry/{entityType}/{entityId}/{scope}?keys=`: attributes of any
/// scope, the devices' own CLIENT_SCOPE included, as ThingsBoard allows.
pub async fn delete_attributes(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id, scope)): Path<(String, String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<StatusCode> {
    let scope = check_scope(scope)?;
    let keys = keys_param(&q).ok_or_else(|| empty_keys(&q))?;
    let id = entity(&state, caller, &t, &id).await?;
    let store = state.store.clone();
    blocking(move || store.delete_attributes(id, &scope, &keys)).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /api/plugins/telemetry/{deviceId}/{scope}?keys=`: the device form of the above.
pub async fn delete_device_attributes(
    state: State<AppState>,
    caller: Extension<Caller>,
    Path((id, scope)): Path<(String, String)>,
    q: QueryParams<Query>,
) -> ApiResult<StatusCode> {
    delete_attributes(state, caller, Path(("DEVICE".to_string(), id, scope)), q).await
}

/// ThingsBoard's 400 for a missing or empty `keys`.
fn empty_keys(q: &Query) -> ApiError {
    ApiError::bad_request(format!("Empty keys: {}", q.get("keys").map(String::as_str).unwrap_or("null")))
}

/// `DELETE …/timeseries/delete?keys=&deleteAllDataForKeys=&startTs=&endTs=&deleteLatest=&rewriteLatestIfDeleted=`:
/// points with `startTs <= ts < endTs` (all up to now with `deleteAllDataForKeys`); the latest
/// value goes too when it was among them (unless `deleteLatest=false`), replaced by the newest
/// point left before the range with `rewriteLatestIfDeleted=true`.
pub async fn delete_timeseries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((t, id)): Path<(String, String)>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<StatusCode> {
    let keys = keys_param(&q).ok_or_else(|| empty_keys(&q))?;
    let all = query_bool(&q, "deleteAllDataForKeys")?.unwrap_or(false);
    let (start_ts, end_ts) = if all {
        (0, coapgate_storage::now_millis())
    } else {
        match (query_number::<i64>(&q, "startTs")?, query_number::<i64>(&q, "endTs")?) {
            (Some(start), Some(end)) => (start, end),
            _ => {
                return Err(ApiError::bad_request(
                    "When deleteAllDataForKeys is false, start and end timestamp values shouldn't be empty",
                ));
            }
        }
    };
    let delete = TimeseriesDeletion {
        keys,
        start_ts,
        end_ts,
        delete_latest: query_bool(&q, "deleteLatest")?.unwrap_or(true),
        rewrite_latest: query_bool(&q, "rewriteLatestIfDeleted")?.unwrap_or(false),
    };
    let id = entity(&state, caller, &t, &id).await?;
    let store = state.store.clone();
    blocking(move || store.delete_timeseries(id, &delete)).await?;
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
        let buckets = Bucketing::Millis(10).buckets(0, 20);
        let check = |agg: &str, expected: Vec<TsValue>| {
            assert_eq!(aggregate(&points, agg, &buckets), expected, "{agg}");
        };
        check("AVG", vec![p(5, KvValue::Double(2.0)), p(15, KvValue::Double(2.5))]);
        check("SUM", vec![p(5, KvValue::Long(4)), p(15, KvValue::Double(2.5))]);
        check("MIN", vec![p(5, KvValue::Long(1)), p(15, KvValue::Double(2.5))]);
        check("MAX", vec![p(5, KvValue::Long(3)), p(15, KvValue::Double(2.5))]);
        check("COUNT", vec![p(5, KvValue::Long(2)), p(15, KvValue::Long(2))]);
        // The end is exclusive and the last bucket is cut there: [10, 12) holds one point.
        let cut = Bucketing::Millis(10).buckets(0, 12);
        assert_eq!(aggregate(&points, "COUNT", &cut), vec![p(5, KvValue::Long(2)), p(11, KvValue::Long(1))]);
    }

    #[test]
    fn calendar_ends_follow_thingsboard() {
        // ThingsBoard's own TimeUtilsTest: Wednesday 2024-01-10 15:15:27 UTC.
        let ts = 1_704_899_727_000;
        let kyiv: chrono_tz::Tz = "Europe/Kyiv".parse().unwrap();
        let amsterdam: chrono_tz::Tz = "Europe/Amsterdam".parse().unwrap();
        assert_eq!(calendar_end(ts, Calendar::Week, kyiv), 1_705_183_200_000);
        assert_eq!(calendar_end(ts, Calendar::WeekIso, kyiv), 1_705_269_600_000);
        assert_eq!(calendar_end(ts, Calendar::Week, amsterdam), 1_705_186_800_000);
        assert_eq!(calendar_end(ts, Calendar::WeekIso, amsterdam), 1_705_273_200_000);
        // 2024-02-01 00:00 in Kyiv (UTC+2) and 2024-04-01 00:00 (UTC+3, summer time).
        assert_eq!(calendar_end(ts, Calendar::Month, kyiv), 1_706_738_400_000);
        assert_eq!(calendar_end(ts, Calendar::Quarter, kyiv), 1_711_918_800_000);
        assert_eq!(calendar_end(ts, Calendar::Month, chrono_tz::UTC), 1_706_745_600_000);
    }
}
