//! The REST API: ThingsBoard's paths and JSON for the subset coapgate serves.
//!
//! Handlers are thin: they parse and validate ThingsBoard's JSON, call [`Store`] on the blocking
//! pool, and map the result back. Field-level validation errors name the field, unknown ids are
//! 404 and a missing or bad token is 401, all in ThingsBoard's error JSON, because
//! `tb-rest-client` and existing scripts parse those.

mod assets;
mod auth;
mod credentials;
mod customers;
mod endpoint_settings;
mod entities;
mod entity_query;
mod events;
mod groups;
mod json;
mod login_limits;
mod password;
mod remote_settings;
mod script_check;
mod sessions;
mod telemetry;
mod ws;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use coapgate_script::EnginePool;
use coapgate_storage::model::PageQuery;
use coapgate_storage::{StorageError, Store};
use serde_json::{Value, json};

use crate::config::Config;
use crate::events::EventSink;
use crate::registry::Registry;

pub use auth::{Jwt, ensure_admin_user, generate_password};
pub use password::{HASH_COST as PASSWORD_HASH_COST, check_policy as check_password_policy};
pub use entities::random_secret;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub jwt: Arc<Jwt>,
    pub config: Arc<Config>,
    pub pool: Arc<EnginePool>,
    pub events: Arc<EventSink>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Remote integrations' links and their status.
    pub remote: Arc<crate::remote_link::RemoteHub>,
    /// WebSocket subscribers of committed changes; writes publish to it after their commit.
    pub live: Arc<crate::live::Hub>,
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/auth/user", get(auth::current_user))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/changePassword", post(auth::change_password))
        .route("/api/coapgate/remoteSettings", get(remote_settings::remote_settings))
        .route("/api/coapgate/coapSettings", get(endpoint_settings::coap_settings))
        .route("/api/coapgate/converter/checkScript", post(script_check::check_script))
        .route("/api/converter", post(entities::save_converter))
        .route("/api/converter/testUpLink", post(entities::test_uplink))
        .route("/api/converter/{id}", get(entities::get_converter).delete(entities::delete_converter))
        .route("/api/converter/{id}/debugIn", get(events::converter_debug_in))
        .route("/api/converters", get(entities::list_converters))
        .route("/api/events/{entity_type}/{entity_id}/{event_type}", get(events::by_type))
        .route("/api/events/{entity_type}/{entity_id}", post(events::filtered))
        .route("/api/coapgate/events/{entity_type}/{entity_id}/dropped", get(events::dropped))
        .route("/api/coapgate/integrations/messages24h", get(events::messages_24h))
        .route("/api/integration", post(entities::save_integration))
        .route("/api/integration/{id}", get(entities::get_integration).delete(entities::delete_integration))
        .route("/api/integration/routingKey/{key}", get(entities::get_integration_by_routing_key))
        .route("/api/integrations", get(entities::list_integrations))
        .route("/api/integrationInfos", get(entities::list_integration_infos))
        .route("/api/tenant/devices", get(entities::list_devices))
        .route("/api/tenant/deviceInfos", get(entities::list_devices))
        .route("/api/tenant/device", get(entities::device_by_name))
        .route("/api/device", post(entities::save_device))
        .route("/api/device/types", get(entities::device_types))
        .route("/api/device/credentials", post(credentials::save_credentials))
        .route("/api/device/{id}/credentials", get(credentials::get_credentials))
        .route("/api/deviceInfos/all", get(entities::all_device_infos))
        .route("/api/device/{id}", get(entities::get_device).delete(entities::delete_device))
        .route("/api/deviceProfiles", get(entities::list_device_profiles))
        .route("/api/deviceProfileInfos", get(entities::list_device_profiles))
        .route("/api/deviceProfile/{id}", get(entities::get_device_profile).delete(entities::delete_device_profile))
        .route("/api/tenant/assets", get(assets::list_assets))
        .route("/api/tenant/asset", get(assets::asset_by_name))
        .route("/api/asset", post(assets::save_asset))
        .route("/api/asset/types", get(assets::asset_types))
        .route("/api/asset/{id}", get(assets::get_asset).delete(assets::delete_asset))
        .route("/api/assetProfiles", get(assets::list_asset_profiles))
        .route("/api/assetProfileInfos", get(assets::list_asset_profiles))
        .route("/api/assetProfile/{id}", get(assets::get_asset_profile).delete(assets::delete_asset_profile))
        .route("/api/customers", get(customers::list_customers))
        .route("/api/tenant/customers", get(customers::customer_by_title))
        .route("/api/customer/{id}", get(customers::get_customer).delete(customers::delete_customer))
        .route("/api/customer/{id}/devices", get(customers::customer_devices))
        .route("/api/customer/{id}/assets", get(customers::customer_assets))
        .route("/api/customer", post(customers::save_customer))
        .route("/api/customer/{id}/device/{device_id}", post(customers::assign_device))
        .route("/api/customer/device/{device_id}", axum::routing::delete(customers::unassign_device))
        .route("/api/customer/{id}/asset/{asset_id}", post(customers::assign_asset))
        .route("/api/customer/asset/{asset_id}", axum::routing::delete(customers::unassign_asset))
        .route("/api/owner/CUSTOMER/{owner_id}/{entity_type}/{entity_id}", post(customers::owner_to_customer))
        .route("/api/owner/TENANT/{owner_id}/{entity_type}/{entity_id}", post(customers::owner_to_tenant))
        .route("/api/entityGroups/{p1}", get(groups::by_type))
        .route("/api/entityGroups/{p1}/{p2}", get(groups::all_by_type_or_of_entity))
        .route("/api/entityGroups/{p1}/{p2}/{p3}", get(groups::by_owner_and_type))
        .route("/api/entityGroups/{p1}/{p2}/{p3}/all", get(groups::all_by_owner_and_type))
        .route("/api/entityGroup/{p1}", get(groups::get_group).delete(groups::delete_group))
        .route("/api/entityGroup/{p1}/entities", get(groups::group_entities))
        .route("/api/entityGroup/{p1}/{p2}/{p3}/{p4}", get(groups::by_owner_type_and_name))
        .route("/api/entitiesQuery/find", post(entity_query::find))
        .route("/api/entitiesQuery/count", post(entity_query::count))
        .route("/api/entitiesQuery/find/keys", post(entity_query::find_keys))
        .route("/api/plugins/telemetry/{entity_type}/{entity_id}/keys/timeseries", get(telemetry::timeseries_keys))
        .route("/api/plugins/telemetry/{entity_type}/{entity_id}/values/timeseries", get(telemetry::timeseries_values))
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}/values/timeseries/history",
            get(telemetry::timeseries_values),
        )
        .route("/api/plugins/telemetry/{entity_type}/{entity_id}/keys/attributes", get(telemetry::attribute_keys))
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/attributes/{scope}",
            get(telemetry::attribute_keys_scoped),
        )
        .route("/api/plugins/telemetry/{entity_type}/{entity_id}/values/attributes", get(telemetry::attribute_values))
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}/values/attributes/{scope}",
            get(telemetry::attribute_values_scoped),
        )
        .route("/api/plugins/telemetry/{entity_type}/{entity_id}/attributes/{scope}", post(telemetry::save_attributes))
        .route("/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/{scope}", post(telemetry::save_timeseries))
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/{scope}/{ttl}",
            post(telemetry::save_timeseries_with_ttl),
        )
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/delete",
            axum::routing::delete(telemetry::delete_timeseries),
        )
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}/{scope}",
            post(telemetry::save_attributes).delete(telemetry::delete_attributes),
        )
        // ThingsBoard's `/{deviceId}/{scope}`; the router wants one name per segment position.
        .route(
            "/api/plugins/telemetry/{entity_type}/{entity_id}",
            post(telemetry::save_device_attributes).delete(telemetry::delete_device_attributes),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/token", post(auth::refresh))
        // The WebSocket API authenticates itself: a token in the URL or in its first message.
        .route("/api/ws", get(ws::upgrade))
        .route("/api/ws/plugins/telemetry", get(ws::upgrade))
        .route("/metrics", get(|State(state): State<AppState>| async move { state.metrics.render() + &state.jwt.render_metrics() + &state.live.render_metrics() }))
        .merge(protected)
        // The web console's page and files; any other path is the API's 404.
        .fallback(|method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
            crate::console::response(&method, &uri, &headers)
                .unwrap_or_else(|| ApiError::not_found("Requested item wasn't found!").into_response())
        })
        .method_not_allowed_fallback(|| async {
            ApiError { status: StatusCode::METHOD_NOT_ALLOWED, message: "Request method not supported".into(), error_code: 2 }
        })
        .with_state(state)
}

/// An error in ThingsBoard's JSON: `{status, message, errorCode, timestamp}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// ThingsBoard's `ThingsboardErrorCode` numbers, which clients switch on.
    pub error_code: u32,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), error_code: 31 }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into(), error_code: 32 }
    }

    pub fn unauthorized(message: impl Into<String>, error_code: u32) -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, message: message.into(), error_code }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into(), error_code: 2 }
    }

    pub fn item_not_found() -> ApiError {
        ApiError::not_found("Requested item wasn't found!")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status.as_u16(),
            "message": self.message,
            "errorCode": self.error_code,
            "timestamp": coapgate_storage::now_millis(),
        });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::Conflict(message) => ApiError::bad_request(message),
            StorageError::NotFound => ApiError::item_not_found(),
            other => {
                tracing::error!("storage error in REST call: {other}");
                ApiError::internal(other.to_string())
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Runs a blocking storage call off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("task failed: {e}")))?.map_err(Into::into)
}

/// Parses a request body as a JSON object, or says why not.
pub fn parse_body(body: &[u8]) -> ApiResult<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("Invalid request body: expected a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("Invalid request body: {e}"))),
    }
}

/// Query parameters as given; booleans are compared case-insensitively because the Python
/// client sends `True`.
pub type Query = HashMap<String, String>;

pub fn query_bool(q: &Query, name: &str) -> ApiResult<Option<bool>> {
    match q.get(name).map(|v| v.to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v == "true" => Ok(Some(true)),
        Some(v) if v == "false" => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_request(format!("Parameter '{name}' must be true or false, not '{v}'"))),
    }
}

pub fn query_number<T: std::str::FromStr>(q: &Query, name: &str) -> ApiResult<Option<T>> {
    match q.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("Parameter '{name}' must be a number, not '{v}'"))),
    }
}

/// ThingsBoard's page parameters: `pageSize`, `page`, `textSearch`, `sortProperty`, `sortOrder`.
pub fn page_query(q: &Query) -> ApiResult<PageQuery> {
    let page_size: u32 = query_number(q, "pageSize")?.unwrap_or(10);
    if page_size == 0 {
        return Err(ApiError::bad_request("Parameter 'pageSize' must be greater than 0"));
    }
    let sort_descending = match q.get("sortOrder").map(|s| s.to_ascii_uppercase()) {
        None => false,
        Some(s) if s == "ASC" => false,
        Some(s) if s == "DESC" => true,
        Some(s) => return Err(ApiError::bad_request(format!("Parameter 'sortOrder' must be ASC or DESC, not '{s}'"))),
    };
    // Names are at most 255 characters, so a longer search matches nothing; refusing it keeps a
    // huge LIKE pattern away from the database (which fails on one: a 500 before).
    let text_search = q.get("textSearch").cloned();
    if let Some(text) = &text_search {
        bounded_name("textSearch", text)?;
    }
    Ok(PageQuery {
        page_size,
        page: query_number(q, "page")?.unwrap_or(0),
        text_search,
        sort_property: q.get("sortProperty").cloned().filter(|s| !s.is_empty()),
        sort_descending,
    })
}

/// 400 when a name, type or key given to the API is longer than ThingsBoard allows
/// ([`crate::uplink::MAX_NAME_CHARS`]), with ThingsBoard's `@Length` message.
pub fn bounded_name(field: &str, text: &str) -> ApiResult<()> {
    crate::uplink::check_length(field, text).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub fn parse_uuid(text: &str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::bad_request(format!("Invalid UUID string: {text}")))
}
