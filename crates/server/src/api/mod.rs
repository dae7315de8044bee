//! The REST API: ThingsBoard's paths and JSON for the subset coapgate serves.
//!
//! Handlers are thin: they parse and validate ThingsBoard's JSON, call [`Store`] on the blocking
//! pool, and map the result back. Field-level validation errors name the field, unknown ids are
//! 404 and a missing or bad token is 401, all in ThingsBoard's error JSON, because
//! `tb-rest-client` and existing scripts parse those.

mod assets;
mod auth;
mod authority;
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
mod users;
mod ws;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::http::Method;
use axum::routing::{delete, get, post};
use coapgate_script::EnginePool;
use coapgate_storage::model::PageQuery;
use coapgate_storage::{StorageError, Store};
use serde_json::{Value, json};

use crate::config::Config;
use crate::events::EventSink;
use crate::registry::Registry;
use authority::Routes;
use authority::Rule::{Any, Tenant};

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

/// Every route that needs a token, with who may call it ([`authority`]).
fn protected_routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/api/auth/user", Any, get(auth::current_user))
        .add(Method::POST, "/api/auth/logout", Any, post(auth::logout))
        .add(Method::POST, "/api/auth/changePassword", Any, post(auth::change_password))
        .add(Method::GET, "/api/coapgate/remoteSettings", Tenant, get(remote_settings::remote_settings))
        .add(Method::GET, "/api/coapgate/coapSettings", Tenant, get(endpoint_settings::coap_settings))
        .add(Method::POST, "/api/coapgate/converter/checkScript", Tenant, post(script_check::check_script))
        .add(Method::POST, "/api/converter", Tenant, post(entities::save_converter))
        .add(Method::POST, "/api/converter/testUpLink", Tenant, post(entities::test_uplink))
        .add(Method::GET, "/api/converter/{id}", Tenant, get(entities::get_converter))
        .add(Method::DELETE, "/api/converter/{id}", Tenant, delete(entities::delete_converter))
        .add(Method::GET, "/api/converter/{id}/debugIn", Tenant, get(events::converter_debug_in))
        .add(Method::GET, "/api/converters", Tenant, get(entities::list_converters))
        .add(Method::GET, "/api/events/{entity_type}/{entity_id}/{event_type}", Tenant, get(events::by_type))
        .add(Method::POST, "/api/events/{entity_type}/{entity_id}", Tenant, post(events::filtered))
        .add(Method::GET, "/api/coapgate/events/{entity_type}/{entity_id}/dropped", Tenant, get(events::dropped))
        .add(Method::GET, "/api/coapgate/integrations/messages24h", Tenant, get(events::messages_24h))
        .add(Method::POST, "/api/integration", Tenant, post(entities::save_integration))
        .add(Method::GET, "/api/integration/{id}", Tenant, get(entities::get_integration))
        .add(Method::DELETE, "/api/integration/{id}", Tenant, delete(entities::delete_integration))
        .add(Method::GET, "/api/integration/routingKey/{key}", Tenant, get(entities::get_integration_by_routing_key))
        .add(Method::GET, "/api/integrations", Tenant, get(entities::list_integrations))
        .add(Method::GET, "/api/integrationInfos", Tenant, get(entities::list_integration_infos))
        .add(Method::GET, "/api/tenant/devices", Tenant, get(entities::list_devices))
        .add(Method::GET, "/api/tenant/deviceInfos", Tenant, get(entities::list_devices))
        .add(Method::GET, "/api/tenant/device", Tenant, get(entities::device_by_name))
        .add(Method::POST, "/api/device", Tenant, post(entities::save_device))
        .add(Method::GET, "/api/device/types", Any, get(entities::device_types))
        .add(Method::POST, "/api/device/credentials", Tenant, post(credentials::save_credentials))
        .add(Method::GET, "/api/device/{id}/credentials", Any, get(credentials::get_credentials))
        .add(Method::GET, "/api/deviceInfos/all", Any, get(entities::all_device_infos))
        .add(Method::GET, "/api/device/{id}", Any, get(entities::get_device))
        .add(Method::DELETE, "/api/device/{id}", Tenant, delete(entities::delete_device))
        .add(Method::GET, "/api/deviceProfiles", Tenant, get(entities::list_device_profiles))
        .add(Method::GET, "/api/deviceProfileInfos", Any, get(entities::list_device_profiles))
        .add(Method::GET, "/api/deviceProfile/{id}", Tenant, get(entities::get_device_profile))
        .add(Method::DELETE, "/api/deviceProfile/{id}", Tenant, delete(entities::delete_device_profile))
        .add(Method::GET, "/api/tenant/assets", Tenant, get(assets::list_assets))
        .add(Method::GET, "/api/tenant/asset", Tenant, get(assets::asset_by_name))
        .add(Method::POST, "/api/asset", Tenant, post(assets::save_asset))
        .add(Method::GET, "/api/asset/types", Any, get(assets::asset_types))
        .add(Method::GET, "/api/asset/{id}", Any, get(assets::get_asset))
        .add(Method::DELETE, "/api/asset/{id}", Tenant, delete(assets::delete_asset))
        .add(Method::GET, "/api/assetProfiles", Tenant, get(assets::list_asset_profiles))
        .add(Method::GET, "/api/assetProfileInfos", Any, get(assets::list_asset_profiles))
        .add(Method::GET, "/api/assetProfile/{id}", Tenant, get(assets::get_asset_profile))
        .add(Method::DELETE, "/api/assetProfile/{id}", Tenant, delete(assets::delete_asset_profile))
        .add(Method::GET, "/api/customers", Tenant, get(customers::list_customers))
        .add(Method::GET, "/api/tenant/customers", Tenant, get(customers::customer_by_title))
        .add(Method::GET, "/api/customer/{id}", Any, get(customers::get_customer))
        .add(Method::DELETE, "/api/customer/{id}", Tenant, delete(customers::delete_customer))
        .add(Method::GET, "/api/customer/{id}/devices", Any, get(customers::customer_devices))
        .add(Method::GET, "/api/customer/{id}/assets", Any, get(customers::customer_assets))
        .add(Method::POST, "/api/customer", Tenant, post(customers::save_customer))
        .add(Method::POST, "/api/customer/{id}/device/{device_id}", Tenant, post(customers::assign_device))
        .add(Method::DELETE, "/api/customer/device/{device_id}", Tenant, delete(customers::unassign_device))
        .add(Method::POST, "/api/customer/{id}/asset/{asset_id}", Tenant, post(customers::assign_asset))
        .add(Method::DELETE, "/api/customer/asset/{asset_id}", Tenant, delete(customers::unassign_asset))
        .add(Method::POST, "/api/owner/CUSTOMER/{owner_id}/{entity_type}/{entity_id}", Tenant, post(customers::owner_to_customer))
        .add(Method::POST, "/api/owner/TENANT/{owner_id}/{entity_type}/{entity_id}", Tenant, post(customers::owner_to_tenant))
        .add(Method::GET, "/api/entityGroups/{p1}", Tenant, get(groups::by_type))
        .add(Method::GET, "/api/entityGroups/{p1}/{p2}", Tenant, get(groups::all_by_type_or_of_entity))
        .add(Method::GET, "/api/entityGroups/{p1}/{p2}/{p3}", Tenant, get(groups::by_owner_and_type))
        .add(Method::GET, "/api/entityGroups/{p1}/{p2}/{p3}/all", Tenant, get(groups::all_by_owner_and_type))
        .add(Method::GET, "/api/entityGroup/{p1}", Tenant, get(groups::get_group))
        .add(Method::DELETE, "/api/entityGroup/{p1}", Tenant, delete(groups::delete_group))
        .add(Method::GET, "/api/entityGroup/{p1}/entities", Tenant, get(groups::group_entities))
        .add(Method::GET, "/api/entityGroup/{p1}/{p2}/{p3}/{p4}", Tenant, get(groups::by_owner_type_and_name))
        .add(Method::POST, "/api/entitiesQuery/find", Any, post(entity_query::find))
        .add(Method::POST, "/api/entitiesQuery/count", Any, post(entity_query::count))
        .add(Method::POST, "/api/entitiesQuery/find/keys", Any, post(entity_query::find_keys))
        // Users (api/users.rs): customer users read their customer's users and change themselves.
        .add(Method::POST, "/api/user", Any, post(users::save_user))
        .add(Method::GET, "/api/user/users", Any, get(users::list_users))
        .add(Method::POST, "/api/user/sendActivationMail", Tenant, post(users::send_activation_mail))
        .add(Method::GET, "/api/users", Any, get(users::list_users))
        .add(Method::GET, "/api/user/{id}", Any, get(users::get_user))
        .add(Method::DELETE, "/api/user/{id}", Tenant, delete(users::delete_user))
        .add(Method::GET, "/api/user/{id}/activationLink", Tenant, get(users::activation_link))
        .add(Method::GET, "/api/user/{id}/activationLinkInfo", Tenant, get(users::activation_link_info))
        .add(Method::POST, "/api/user/{id}/userCredentialsEnabled", Tenant, post(users::set_credentials_enabled))
        .add(Method::GET, "/api/customer/{id}/users", Tenant, get(users::customer_users))
        .add(Method::GET, "/api/tenant/{id}/users", Tenant, get(users::tenant_admins))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/timeseries", Any, get(telemetry::timeseries_keys))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/values/timeseries", Any, get(telemetry::timeseries_values))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/values/timeseries/history", Any, get(telemetry::timeseries_values))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/attributes", Any, get(telemetry::attribute_keys))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/attributes/{scope}", Any, get(telemetry::attribute_keys_scoped))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/values/attributes", Any, get(telemetry::attribute_values))
        .add(Method::GET, "/api/plugins/telemetry/{entity_type}/{entity_id}/values/attributes/{scope}", Any, get(telemetry::attribute_values_scoped))
        .add(Method::POST, "/api/plugins/telemetry/{entity_type}/{entity_id}/attributes/{scope}", Any, post(telemetry::save_attributes))
        .add(Method::POST, "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/{scope}", Any, post(telemetry::save_timeseries))
        .add(Method::POST, "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/{scope}/{ttl}", Any, post(telemetry::save_timeseries_with_ttl))
        .add(Method::DELETE, "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/delete", Any, delete(telemetry::delete_timeseries))
        .add(Method::POST, "/api/plugins/telemetry/{entity_type}/{entity_id}/{scope}", Any, post(telemetry::save_attributes))
        .add(Method::DELETE, "/api/plugins/telemetry/{entity_type}/{entity_id}/{scope}", Any, delete(telemetry::delete_attributes))
        // ThingsBoard's `/{deviceId}/{scope}`; the router wants one name per segment position.
        .add(Method::POST, "/api/plugins/telemetry/{entity_type}/{entity_id}", Any, post(telemetry::save_device_attributes))
        .add(Method::DELETE, "/api/plugins/telemetry/{entity_type}/{entity_id}", Any, delete(telemetry::delete_device_attributes))
}

/// `(method, path, rule)` of every authenticated route, for `coapgate routes`.
pub fn route_table() -> Vec<(Method, &'static str, authority::Rule)> {
    protected_routes().into_parts().1
}

pub fn router(state: AppState) -> Router {
    let protected = protected_routes()
        .into_parts()
        .0
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), ws::entities_changed_after_writes))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/token", post(auth::refresh))
        // An invited user has no token yet: activation is a login of its own, rate-limited as one.
        .route("/api/noauth/activate", get(users::activation_page).post(auth::activate))
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
