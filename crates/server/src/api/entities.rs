//! Converters, integrations, devices and device profiles.
//!
//! Saving a converter or an integration reloads the routing table before answering, so the
//! change is live for the next CoAP request.

use axum::{Extension, Json};
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use base64::Engine as _;
use coapgate_script::{DecodeJob, ScriptLang};
use coapgate_storage::model::{Converter, Device, Integration, PageQuery};
use coapgate_storage::StorageError;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::authority::Caller;
use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_body, parse_uuid};
use crate::events::DebugSettings;
use crate::registry::{SecurityMode, endpoint_url};

/// ThingsBoard's limit on a converter script body.
const MAX_SCRIPT_CHARS: usize = 50_000;

pub(super) fn opt_str<'a>(body: &'a Map<String, Value>, field: &str) -> ApiResult<Option<&'a str>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::bad_request(format!("Field '{field}' must be a string"))),
    }
}

pub(super) fn opt_bool(body: &Map<String, Value>, field: &str) -> ApiResult<Option<bool>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!("Field '{field}' must be true or false"))),
    }
}

pub(super) fn opt_object(body: &Map<String, Value>, field: &str) -> ApiResult<Option<Map<String, Value>>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(_) => Err(ApiError::bad_request(format!("Field '{field}' must be an object"))),
    }
}

/// The `id` of an `{entityType, id}` object field, if given.
pub(super) fn opt_entity_id(body: &Map<String, Value>, field: &str) -> ApiResult<Option<Uuid>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => match o.get("id") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Uuid::parse_str(s)
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("Field '{field}.id' is not a valid UUID: {s}"))),
            Some(_) => Err(ApiError::bad_request(format!("Field '{field}.id' must be a string"))),
        },
        Some(_) => Err(ApiError::bad_request(format!("Field '{field}' must be an object {{entityType, id}}"))),
    }
}

/// `debugSettings` as given, or built from the legacy `debugMode` flag; "debug all" is limited
/// to 15 minutes from now.
fn debug_settings(body: &Map<String, Value>) -> ApiResult<Value> {
    let given = opt_object(body, "debugSettings")?.map(Value::Object);
    let legacy = opt_bool(body, "debugMode")?.unwrap_or(false);
    Ok(DebugSettings::normalized(given.as_ref(), legacy, coapgate_storage::now_millis()))
}

pub async fn save_converter(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let name = opt_str(&body, "name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Converter name should be specified!"))?
        .to_string();
    super::bounded_name("name", &name)?;
    let converter_type = opt_str(&body, "type")?.ok_or_else(|| ApiError::bad_request("Converter type should be specified!"))?;
    if converter_type != "UPLINK" && converter_type != "DOWNLINK" {
        return Err(ApiError::bad_request(format!("Field 'type' must be UPLINK or DOWNLINK, not '{converter_type}'")));
    }
    let converter_type = converter_type.to_string();
    let mut configuration = opt_object(&body, "configuration")?
        .ok_or_else(|| ApiError::bad_request("Converter configuration should be specified!"))?;
    if converter_type == "UPLINK" {
        validate_uplink_configuration(&mut configuration)?;
    }
    let integration_type = opt_str(&body, "integrationType")?.map(str::to_string);
    let debug_settings = debug_settings(&body)?;
    let additional_info = body.get("additionalInfo").cloned().unwrap_or(Value::Null);
    let id = opt_entity_id(&body, "id")?;
    let store = state.store.clone();
    let saved = blocking(move || {
        let existing = match id {
            Some(id) => Some(store.converter(id)?.ok_or(coapgate_storage::StorageError::NotFound)?),
            None => None,
        };
        let converter = Converter {
            id: id.unwrap_or_else(Uuid::new_v4),
            created_time: existing.as_ref().map(|c| c.created_time).unwrap_or_else(coapgate_storage::now_millis),
            name,
            converter_type,
            integration_type,
            debug_settings,
            configuration: Value::Object(configuration),
            additional_info,
            version: existing.as_ref().map(|c| c.version + 1).unwrap_or(1),
        };
        store.save_converter(&converter)?;
        Ok(converter)
    })
    .await?;
    reload_routes(&state).await?;
    Ok(Json(tb::converter(&saved, state.store.tenant_id())))
}

/// Checks `scriptLang` and the script fields, defaulting the language like ThingsBoard's UI.
fn validate_uplink_configuration(configuration: &mut Map<String, Value>) -> ApiResult<()> {
    let lang = match opt_str(configuration, "scriptLang")? {
        Some(lang) => lang.to_string(),
        None if configuration.contains_key("decoder") => "JS".to_string(),
        None => "TBEL".to_string(),
    };
    let field = match lang.as_str() {
        "JS" => "decoder",
        "TBEL" => "tbelDecoder",
        other => {
            return Err(ApiError::bad_request(format!(
                "Field 'configuration.scriptLang' must be JS or TBEL, not '{other}'"
            )));
        }
    };
    let script = opt_str(configuration, field)
        .map_err(|_| ApiError::bad_request(format!("Field 'configuration.{field}' must be a string")))?
        .ok_or_else(|| ApiError::bad_request(format!("Field 'configuration.{field}' should be specified!")))?;
    if script.chars().count() > MAX_SCRIPT_CHARS {
        return Err(ApiError::bad_request(format!(
            "Field 'configuration.{field}' is longer than {MAX_SCRIPT_CHARS} characters"
        )));
    }
    configuration.insert("scriptLang".into(), Value::String(lang));
    Ok(())
}

pub async fn get_converter(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let c = blocking(move || store.converter(id)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::converter(&c, state.store.tenant_id())))
}

pub async fn list_converters(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.converters(&query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |c| tb::converter(c, tenant))))
}

pub async fn delete_converter(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_converter(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

/// "Test payload decoder": runs the script on the worker pool, stores nothing.
pub async fn test_uplink(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<Query>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let lang = match q.get("scriptLang").map(String::as_str).unwrap_or("JS") {
        "JS" => ScriptLang::Js,
        "TBEL" => ScriptLang::Tbel,
        other => return Err(ApiError::bad_request(format!("Parameter 'scriptLang' must be JS or TBEL, not '{other}'"))),
    };
    let payload = opt_str(&body, "payload")?.unwrap_or("");
    let payload = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| ApiError::bad_request(format!("Field 'payload' is not valid Base64: {e}")))?;
    let decoder = opt_str(&body, "decoder")?.ok_or_else(|| ApiError::bad_request("Field 'decoder' should be specified!"))?;
    let metadata = opt_object(&body, "metadata")?
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    let script = coapgate_script::DecoderScript {
        // A fresh id per test: ad-hoc scripts must not evict or reuse real converters' entries.
        id: Uuid::new_v4(),
        version: 1,
        lang,
        source: decoder.into(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = DecodeJob {
        script: std::sync::Arc::new(script),
        payload: payload.into(),
        metadata: std::sync::Arc::new(metadata),
        source: None,
        on_done: Box::new(move |result, _| {
            let _ = tx.send(result);
        }),
    };
    state
        .pool
        .try_submit(job)
        .map_err(|_| ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: "Script workers are busy".into(), error_code: 2 })?;
    let result = rx.await.map_err(|_| ApiError::internal("script worker stopped"))?;
    Ok(Json(match result {
        Ok(output) => json!({"output": serde_json::to_string_pretty(&output).unwrap_or_default(), "error": ""}),
        Err(e) => json!({"output": "", "error": e.to_string()}),
    }))
}

pub async fn save_integration(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let name = opt_str(&body, "name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Integration name should be specified!"))?
        .to_string();
    super::bounded_name("name", &name)?;
    let integration_type = opt_str(&body, "type")?.ok_or_else(|| ApiError::bad_request("Integration type should be specified!"))?;
    if integration_type != "COAP" {
        return Err(ApiError::bad_request(format!("Field 'type': integration type '{integration_type}' is not supported, only COAP")));
    }
    let converter_id = opt_entity_id(&body, "defaultConverterId")?
        .ok_or_else(|| ApiError::bad_request("Integration default converter should be specified!"))?;
    let id = opt_entity_id(&body, "id")?;
    let routing_key = opt_str(&body, "routingKey")?.filter(|k| !k.is_empty()).map(str::to_string);
    if let Some(key) = &routing_key
        && (key.contains('/') || key.contains('?'))
    {
        return Err(ApiError::bad_request("Field 'routingKey' must not contain '/' or '?'"));
    }
    let secret = opt_str(&body, "secret")?.filter(|s| !s.is_empty()).map(str::to_string);
    let enabled = opt_bool(&body, "enabled")?.unwrap_or(true);
    let allow_create = opt_bool(&body, "allowCreateDevicesOrAssets")?.unwrap_or(true);
    let is_remote = opt_bool(&body, "remote")?.or(opt_bool(&body, "isRemote")?).unwrap_or(false);
    let debug_settings = debug_settings(&body)?;
    let additional_info = body.get("additionalInfo").cloned().unwrap_or(Value::Null);
    let configuration = opt_object(&body, "configuration")?.unwrap_or_default();
    let downlink_converter_id = opt_entity_id(&body, "downlinkConverterId")?;

    let store = state.store.clone();
    let config = state.config.clone();
    let saved = blocking(move || {
        let converter = store.converter(converter_id)?;
        let Some(converter) = converter else {
            return Err(coapgate_storage::StorageError::Conflict(format!(
                "Field 'defaultConverterId': converter {converter_id} does not exist"
            )));
        };
        if converter.converter_type != "UPLINK" {
            return Err(coapgate_storage::StorageError::Conflict(
                "Field 'defaultConverterId' must name an UPLINK converter".into(),
            ));
        }
        let existing = match id {
            Some(id) => Some(store.integration(id)?.ok_or(coapgate_storage::StorageError::NotFound)?),
            None => None,
        };
        let routing_key = routing_key
            .or_else(|| existing.as_ref().map(|e| e.routing_key.clone()))
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let secret = secret.or_else(|| existing.as_ref().map(|e| e.secret.clone())).unwrap_or_else(random_secret);
        let configuration = complete_configuration(configuration, &routing_key, &config, is_remote)
            .map_err(coapgate_storage::StorageError::Conflict)?;
        check_psk_identities_unique(store.as_ref(), id, &configuration)?;
        let integration = Integration {
            id: id.unwrap_or_else(Uuid::new_v4),
            created_time: existing.as_ref().map(|e| e.created_time).unwrap_or_else(coapgate_storage::now_millis),
            name,
            integration_type: "COAP".into(),
            enabled,
            allow_create_devices_or_assets: allow_create,
            is_remote,
            debug_settings,
            default_converter_id: converter_id,
            downlink_converter_id,
            routing_key,
            secret,
            configuration,
            additional_info,
            version: existing.as_ref().map(|e| e.version + 1).unwrap_or(1),
        };
        store.save_integration(&integration)?;
        Ok(integration)
    })
    .await?;
    reload_routes(&state).await?;
    Ok(Json(with_remote_status(&state, tb::integration(&saved, state.store.tenant_id()), &saved)))
}

/// A PSK identity may belong to one integration only: it decides which integration a PSK
/// session may reach.
fn check_psk_identities_unique(
    store: &dyn coapgate_storage::Store,
    id: Option<Uuid>,
    configuration: &Value,
) -> coapgate_storage::Result<()> {
    let mine = crate::registry::parse_psk(configuration.pointer("/clientConfiguration/psk"))
        .map_err(coapgate_storage::StorageError::Conflict)?;
    if mine.is_empty() {
        return Ok(());
    }
    for other in store.all_integrations()? {
        if Some(other.id) == id {
            continue;
        }
        let theirs = crate::registry::psk_credentials(&other).unwrap_or_default();
        if let Some((identity, _)) = mine.iter().find(|(identity, _)| theirs.iter().any(|(t, _)| t == identity)) {
            return Err(coapgate_storage::StorageError::Conflict(format!(
                "Field 'configuration.clientConfiguration.psk': identity `{identity}` already belongs to integration '{}'",
                other.name
            )));
        }
    }
    Ok(())
}

/// An integration secret as ThingsBoard makes them: 20 lower-case letters and digits.
pub fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 20).to_ascii_lowercase()
}

/// Fills in `clientConfiguration` the way ThingsBoard's UI does: base URLs, security mode and
/// the endpoint URLs derived from them. A given endpoint must end in `/i/<routingKey>`. A
/// remote integration's devices talk to its remote, whose DTLS endpoint is its own: this
/// server's COAP_DTLS_ENABLED says nothing about it.
fn complete_configuration(
    mut configuration: Map<String, Value>,
    routing_key: &str,
    config: &crate::config::Config,
    is_remote: bool,
) -> Result<Value, String> {
    let mut client = match configuration.remove("clientConfiguration") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("Field 'configuration.clientConfiguration' must be an object".into()),
    };
    let text = |client: &Map<String, Value>, field: &str| -> Result<Option<String>, String> {
        match client.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("Field 'configuration.clientConfiguration.{field}' must be a string")),
        }
    };
    let mode_text = text(&client, "securityMode")?.unwrap_or_else(|| "NO_SECURE".into());
    let mode = SecurityMode::parse(&mode_text).ok_or_else(|| {
        format!("Field 'configuration.clientConfiguration.securityMode' must be NO_SECURE, DTLS or MIXED, not '{mode_text}'")
    })?;
    if mode != SecurityMode::NoSecure && !config.dtls_enabled && !is_remote {
        return Err(format!(
            "Field 'configuration.clientConfiguration.securityMode': {mode_text} needs the DTLS endpoint, \
             which is disabled on this server (COAP_DTLS_ENABLED=false)"
        ));
    }
    let base_url = text(&client, "baseUrl")?.unwrap_or_else(|| config.coap_base_url.clone());
    if !base_url.starts_with("coap://") {
        return Err("Field 'configuration.clientConfiguration.baseUrl' must start with coap://".into());
    }
    let path = text(&client, "path")?;
    let suffix = format!("/i/{routing_key}");
    let endpoint = match text(&client, "coapEndpoint")? {
        Some(e) if e.trim_end_matches('/').ends_with(&suffix) => e.trim_end_matches('/').to_string(),
        Some(_) => {
            return Err(format!("Field 'configuration.clientConfiguration.coapEndpoint' must end with {suffix}"));
        }
        None => endpoint_url(&base_url, path.as_deref(), routing_key),
    };
    let dtls_base_url = text(&client, "dtlsBaseUrl")?.unwrap_or_else(|| config.coap_dtls_base_url.clone());
    if !dtls_base_url.starts_with("coaps://") {
        return Err("Field 'configuration.clientConfiguration.dtlsBaseUrl' must start with coaps://".into());
    }
    // Tools that predate the DTLS endpoint re-key an integration by clearing `coapEndpoint`
    // only, so a `dtlsCoapEndpoint` naming another routing key is derived anew, not refused.
    let dtls_endpoint = match text(&client, "dtlsCoapEndpoint")? {
        Some(e) if e.trim_end_matches('/').ends_with(&suffix) => e.trim_end_matches('/').to_string(),
        _ => endpoint_url(&dtls_base_url, path.as_deref(), routing_key),
    };
    crate::registry::parse_psk(client.get("psk"))?;
    client.insert("baseUrl".into(), Value::String(base_url));
    client.insert("dtlsBaseUrl".into(), Value::String(dtls_base_url));
    client.insert("securityMode".into(), Value::String(mode_text));
    client.insert("coapEndpoint".into(), Value::String(endpoint));
    client.insert("dtlsCoapEndpoint".into(), Value::String(dtls_endpoint));
    configuration.insert("clientConfiguration".into(), Value::Object(client));
    configuration.entry("metadata").or_insert_with(|| json!({}));
    if !configuration["metadata"].is_object() {
        return Err("Field 'configuration.metadata' must be an object".into());
    }
    Ok(Value::Object(configuration))
}

/// Adds `remoteStatus` to a remote integration's JSON (and fills the list view's `status`):
/// whether its remote is linked now, its service id, last seen, outbox backlog and rate.
fn with_remote_status(state: &AppState, mut json: Value, i: &coapgate_storage::model::Integration) -> Value {
    if i.is_remote {
        let status = state.remote.status_json(i.id);
        if let Value::Object(map) = &mut json {
            if map.contains_key("status") {
                map.insert("status".into(), status.clone());
            }
            map.insert("remoteStatus".into(), status);
        }
    }
    json
}

/// Makes a change live and records the integrations' lifecycle events.
async fn reload_routes(state: &AppState) -> ApiResult<()> {
    let store = state.store.clone();
    let registry = state.registry.clone();
    let changes = blocking(move || registry.reload(store.as_ref())).await?;
    // Other nodes on a shared database: the call returns once they route by it too.
    let store = state.store.clone();
    if !blocking(move || store.await_config_applied(crate::config_sync::APPLY_WAIT)).await? {
        tracing::warn!("a node did not apply the configuration change within {:?}", crate::config_sync::APPLY_WAIT);
    }
    state.events.record_lifecycle(&changes);
    Ok(())
}

pub async fn get_integration(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let i = blocking(move || store.integration(id)).await?.ok_or_else(ApiError::item_not_found)?;
    let json = with_remote_status(&state, tb::integration(&i, state.store.tenant_id()), &i);
    let mut rows = super::events::with_message_counts(&state, vec![json]).await?;
    Ok(Json(rows.remove(0)))
}

pub async fn get_integration_by_routing_key(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Json<Value>> {
    let store = state.store.clone();
    let i = blocking(move || store.integration_by_routing_key(&key)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(with_remote_status(&state, tb::integration(&i, state.store.tenant_id()), &i)))
}

pub async fn list_integrations(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.integrations(&query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |i| with_remote_status(&state, tb::integration(i, tenant), i))))
}

pub async fn list_integration_infos(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.integrations(&query)).await?;
    let tenant = state.store.tenant_id();
    let mut json = tb::page(&page, |i| with_remote_status(&state, tb::integration_info(i, tenant), i));
    if let Some(Value::Array(rows)) = json.get_mut("data") {
        *rows = super::events::with_message_counts(&state, std::mem::take(rows)).await?;
    }
    Ok(Json(json))
}

pub async fn delete_integration(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_integration(id)).await? {
        return Err(ApiError::item_not_found());
    }
    reload_routes(&state).await?;
    Ok(StatusCode::OK)
}

/// `GET /api/tenant/devices`: a page, or one device when `deviceName` is given (ThingsBoard
/// serves both from this path).
pub async fn list_devices(State(state): State<AppState>, q: QueryParams<Query>) -> ApiResult<Json<Value>> {
    if q.0.contains_key("deviceName") {
        return device_by_name(State(state), q).await;
    }
    let query = page_query(&q.0)?;
    let device_type = q.0.get("type").cloned();
    let store = state.store.clone();
    let page = blocking(move || store.devices(&query, device_type.as_deref())).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |d| tb::device(d, tenant))))
}

pub async fn device_by_name(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let name = q.get("deviceName").cloned().ok_or_else(|| ApiError::bad_request("Parameter 'deviceName' is required"))?;
    let store = state.store.clone();
    let d = blocking(move || store.device_by_name(&name)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::device(&d, state.store.tenant_id())))
}

pub async fn get_device(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let d = blocking(move || store.device(id)).await?.ok_or_else(ApiError::item_not_found)?;
    caller.require_owner(d.customer_id)?;
    Ok(Json(tb::device(&d, state.store.tenant_id())))
}

pub async fn delete_device(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_device(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

pub async fn list_device_profiles(State(state): State<AppState>, QueryParams(q): QueryParams<Query>) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let store = state.store.clone();
    let page = blocking(move || store.device_profiles(&query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |p| tb::device_profile(p, tenant))))
}

pub async fn delete_device_profile(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    if !blocking(move || store.delete_device_profile(id)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(StatusCode::OK)
}

pub async fn get_device_profile(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_uuid(&id)?;
    let store = state.store.clone();
    let p = blocking(move || store.device_profile(id)).await?.ok_or_else(ApiError::item_not_found)?;
    Ok(Json(tb::device_profile(&p, state.store.tenant_id())))
}

/// What `POST /api/device` and `POST /api/asset` take from ThingsBoard's JSON. A save replaces
/// the entity as ThingsBoard's does (its UI and clients send the whole object), except the
/// customer: absent or null keeps the current one, so an edit never unassigns by omission.
/// The fields of a device or asset that a save through the API keeps or derives rather than
/// takes from the body: what `EntityBody::resolve` looks up of the stored entity (`of`, whose
/// id is unused) and what it returns (with the id to save under).
pub(super) struct Stored {
    pub id: Uuid,
    pub created_time: i64,
    pub entity_type: String,
    pub customer_id: Option<Uuid>,
    pub created_by_integration: Option<Uuid>,
}

impl Stored {
    pub fn of(created_time: i64, entity_type: String, customer_id: Option<Uuid>, created_by_integration: Option<Uuid>) -> Stored {
        Stored { id: Uuid::nil(), created_time, entity_type, customer_id, created_by_integration }
    }
}

pub(super) struct EntityBody {
    pub id: Option<Uuid>,
    pub name: String,
    pub entity_type: Option<String>,
    pub label: Option<String>,
    pub description: Option<String>,
    /// `Some(None)`: ThingsBoard's null customer id, the tenant's own.
    pub customer: Option<Option<Uuid>>,
}

impl EntityBody {
    /// `what` is "Device" or "Asset", as ThingsBoard's messages name them.
    pub fn parse(body: &Map<String, Value>, what: &str) -> ApiResult<EntityBody> {
        let name = opt_str(body, "name")?
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request(format!("{what} name should be specified!")))?
            .to_string();
        super::bounded_name("name", &name)?;
        let entity_type = opt_str(body, "type")?.map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        if let Some(t) = &entity_type {
            super::bounded_name("type", t)?;
        }
        let label = opt_str(body, "label")?.map(str::trim).filter(|l| !l.is_empty()).map(str::to_string);
        if let Some(l) = &label {
            super::bounded_name("label", l)?;
        }
        let description = match opt_object(body, "additionalInfo")? {
            Some(info) => opt_str(&info, "description")
                .map_err(|_| ApiError::bad_request("Field 'additionalInfo.description' must be a string"))?
                .filter(|d| !d.trim().is_empty())
                .map(str::to_string),
            None => None,
        };
        let customer = match opt_entity_id(body, "customerId")? {
            None => None,
            Some(id) if id.to_string() == tb::NULL_CUSTOMER_ID => Some(None),
            Some(id) => Some(Some(id)),
        };
        Ok(EntityBody { id: opt_entity_id(body, "id")?, name, entity_type, label, description, customer })
    }

    /// What a device or asset being saved keeps or derives: its id (new if none), creation time
    /// and creating integration kept from the stored one (`stored`; NotFound for an unknown
    /// id), the type from the profile id given (`profile`: id, field, what, name lookup), else
    /// `type`, else the stored type, else `default`, and the customer (`customer_id`).
    pub fn resolve(
        &self,
        store: &dyn coapgate_storage::Store,
        stored: impl Fn(Uuid) -> coapgate_storage::Result<Option<Stored>>,
        profile: (Option<Uuid>, &str, &str, impl Fn(Uuid) -> coapgate_storage::Result<Option<String>>),
    ) -> coapgate_storage::Result<Stored> {
        let existing = match self.id {
            Some(id) => Some(stored(id)?.ok_or(StorageError::NotFound)?),
            None => None,
        };
        let (profile_id, field, what, profile_name) = profile;
        let by_profile = match profile_id {
            Some(id) => Some(
                profile_name(id)?.ok_or_else(|| StorageError::Conflict(format!("Field '{field}': {what} {id} does not exist")))?,
            ),
            None => None,
        };
        let entity_type = by_profile
            .or(self.entity_type.clone())
            .or_else(|| existing.as_ref().map(|e| e.entity_type.clone()))
            .unwrap_or_else(|| "default".into());
        Ok(Stored {
            id: self.id.unwrap_or_else(Uuid::new_v4),
            created_time: existing.as_ref().map(|e| e.created_time).unwrap_or_else(coapgate_storage::now_millis),
            entity_type,
            customer_id: self.customer_id(store, existing.as_ref().and_then(|e| e.customer_id))?,
            created_by_integration: existing.as_ref().and_then(|e| e.created_by_integration),
        })
    }

    /// The customer the saved entity belongs to: the one named (which must exist), else `current`.
    pub fn customer_id(&self, store: &dyn coapgate_storage::Store, current: Option<Uuid>) -> coapgate_storage::Result<Option<Uuid>> {
        match self.customer {
            None => Ok(current),
            Some(None) => Ok(None),
            Some(Some(id)) => match store.customer(id)? {
                Some(_) => Ok(Some(id)),
                None => Err(StorageError::Conflict(format!("Field 'customerId': customer {id} does not exist"))),
            },
        }
    }
}

/// `POST /api/device`: creates a device, or updates the one `id` names (404 if none). The
/// profile is `deviceProfileId`'s, else the one `type` names (created if missing), else the
/// current one, else `default`. A name another device has is refused with ThingsBoard's 400.
///
/// A new device gets an access token: `accessToken`'s, else a generated one (ThingsBoard's).
pub async fn save_device(State(state): State<AppState>, QueryParams(q): QueryParams<Query>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let access_token = q.get("accessToken").filter(|t| !t.is_empty()).cloned();
    if let Some(token) = &access_token {
        super::credentials::check_access_token(token)?;
    }
    let fields = EntityBody::parse(&body, "Device")?;
    let profile_id = opt_entity_id(&body, "deviceProfileId")?;
    let store = state.store.clone();
    let saved = blocking(move || {
        let stored = |id| Ok(store.device(id)?.map(|d| Stored::of(d.created_time, d.device_type, d.customer_id, d.created_by_integration)));
        let profile = |id| Ok(store.device_profile(id)?.map(|p| p.name));
        let created = fields.id.is_none();
        let r = fields.resolve(store.as_ref(), stored, (profile_id, "deviceProfileId", "device profile", profile))?;
        let saved = store.save_device(&Device {
            id: r.id,
            created_time: r.created_time,
            name: fields.name,
            device_type: r.entity_type,
            device_profile_id: Uuid::nil(),
            label: fields.label,
            customer_id: r.customer_id,
            created_by_integration: r.created_by_integration,
            description: fields.description,
        })?;
        // ThingsBoard gives every new device an access token.
        let mut credentials = super::credentials::new_access_token(saved.id);
        if let Some(token) = access_token {
            credentials.credentials_id = token;
        }
        if let Err(e) = store.ensure_device_credentials(&credentials) {
            // A token another device holds: the new device is not kept, as ThingsBoard's one
            // transaction would not keep it.
            if created {
                store.delete_device(saved.id)?;
            }
            return Err(e);
        }
        Ok(saved)
    })
    .await?;
    Ok(Json(tb::device(&saved, state.store.tenant_id())))
}

/// `GET /api/device/types`: ThingsBoard's `EntitySubtype` list — the device profiles some device
/// uses, by name.
pub async fn device_types(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let store = state.store.clone();
    let names = blocking(move || {
        let all = PageQuery { page_size: 10_000, ..PageQuery::default() };
        let one = PageQuery { page_size: 1, ..PageQuery::default() };
        let mut names = Vec::new();
        for profile in store.device_profiles(&all)?.data {
            if store.devices(&one, Some(&profile.name))?.total_elements > 0 {
                names.push(profile.name);
            }
        }
        Ok(names)
    })
    .await?;
    Ok(Json(tb::entity_subtypes("DEVICE", names, state.store.tenant_id())))
}

/// `GET /api/deviceInfos/all` (ThingsBoard PE, `get_tenant_device_infos`): a page of
/// `DeviceInfo`s — the device with its customer's title and profile name — optionally of one
/// `deviceProfileId`: the tenant's own devices, and its customers' too with `includeCustomers=true`
/// (the PE client's documented default is false).
/// PE's `GET /api/deviceInfos/all`: the tenant's devices (with `includeCustomers`, or only the
/// unassigned ones), or a customer user's customer's devices.
pub async fn all_device_infos(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let query = page_query(&q)?;
    let profile_id = q.get("deviceProfileId").filter(|p| !p.is_empty()).map(|p| parse_uuid(p)).transpose()?;
    let include_customers = super::query_bool(&q, "includeCustomers")?.unwrap_or(false);
    let store = state.store.clone();
    let (page, titles) = blocking(move || {
        let device_type = match profile_id {
            Some(id) => Some(store.device_profile(id)?.ok_or(StorageError::NotFound)?.name),
            None => None,
        };
        let page = if let Some(customer) = caller.customer() {
            store.customer_devices(customer, &query, device_type.as_deref())?
        } else if include_customers {
            store.devices(&query, device_type.as_deref())?
        } else {
            store.unassigned_devices(&query, device_type.as_deref())?
        };
        let mut titles = std::collections::HashMap::new();
        for customer in page.data.iter().filter_map(|d| d.customer_id) {
            if let std::collections::hash_map::Entry::Vacant(slot) = titles.entry(customer) {
                slot.insert(store.customer(customer)?.map(|c| c.title));
            }
        }
        // PE's `groups`: the entity groups each device is in, as `EntityInfo`s.
        let mut groups = std::collections::HashMap::new();
        for d in &page.data {
            let mut infos = Vec::new();
            for group_id in store.groups_of_entity(d.id)? {
                if let Some(g) = store.entity_group(group_id)? {
                    infos.push(json!({"id": tb::entity_group_id(g.id), "name": g.name}));
                }
            }
            groups.insert(d.id, infos);
        }
        Ok((page, (titles, groups)))
    })
    .await?;
    let (titles, groups) = titles;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |d| {
        let mut info = tb::device(d, tenant);
        let title = d.customer_id.and_then(|c| titles.get(&c).cloned().flatten());
        info["customerTitle"] = json!(title);
        info["customerIsPublic"] = json!(false);
        // The owner's name: the customer's title (coapgate keeps no title for its one tenant).
        info["ownerName"] = json!(title);
        info["groups"] = json!(groups.get(&d.id).cloned().unwrap_or_default());
        // coapgate keeps no device activity state (ThingsBoard's `active` attribute).
        info["active"] = json!(false);
        info
    })))
}
