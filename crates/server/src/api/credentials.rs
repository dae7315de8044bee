//! ThingsBoard's device credentials: `GET /api/device/{id}/credentials` and
//! `POST /api/device/credentials`. Each device has one `ACCESS_TOKEN` credential, made when the
//! device is created through the REST API or, for devices an integration created, when first
//! asked for; coapgate's own devices talk through integrations, so the token authenticates
//! nothing here, but provisioning scripts written for ThingsBoard read and set it.

use axum::{Extension, Json};
use axum::body::Bytes;
use axum::extract::{Path, State};
use coapgate_storage::Store;
use coapgate_storage::model::DeviceCredentials;
use serde_json::{Value, json};
use uuid::Uuid;

use super::authority::Caller;
use super::{ApiError, ApiResult, AppState, blocking, json as tb, parse_body, parse_uuid};

/// ThingsBoard's bound on an access token's length.
const MAX_TOKEN_CHARS: usize = 32;

/// A fresh access token as ThingsBoard makes them: 20 random letters and digits.
pub fn new_access_token(device_id: Uuid) -> DeviceCredentials {
    use rand::distr::{Alphanumeric, SampleString};
    DeviceCredentials {
        id: Uuid::new_v4(),
        created_time: coapgate_storage::now_millis(),
        device_id,
        credentials_type: "ACCESS_TOKEN".into(),
        credentials_id: Alphanumeric.sample_string(&mut rand::rng(), 20),
        credentials_value: None,
    }
}

/// The device's credentials, made now if it has none yet (blocking).
pub fn credentials_of(store: &dyn Store, device_id: Uuid) -> coapgate_storage::Result<DeviceCredentials> {
    match store.device_credentials(device_id)? {
        Some(c) => Ok(c),
        None => store.ensure_device_credentials(&new_access_token(device_id)),
    }
}

/// ThingsBoard's checks of an access token's text.
pub fn check_access_token(token: &str) -> ApiResult<()> {
    if token.chars().count() > MAX_TOKEN_CHARS {
        return Err(ApiError::bad_request(format!("Access token length can't be more than {MAX_TOKEN_CHARS}!")));
    }
    if token.contains(char::is_whitespace) {
        return Err(ApiError::bad_request("Access token should not contain spaces!"));
    }
    Ok(())
}

fn to_json(c: &DeviceCredentials) -> Value {
    json!({
        "id": {"id": c.id},
        "createdTime": c.created_time,
        "deviceId": tb::entity_id("DEVICE", c.device_id),
        "credentialsType": c.credentials_type,
        "credentialsId": c.credentials_id,
        "credentialsValue": c.credentials_value,
        "version": 1,
    })
}

/// `GET /api/device/{deviceId}/credentials`: for the tenant, or the device's customer's users
/// (ThingsBoard's READ_CREDENTIALS).
pub async fn get_credentials(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let device_id = parse_uuid(&id)?;
    let store = state.store.clone();
    let owner = blocking(move || store.device(device_id)).await?.ok_or_else(ApiError::item_not_found)?.customer_id;
    caller.require_owner(owner)?;
    let store = state.store.clone();
    let credentials = blocking(move || credentials_of(store.as_ref(), device_id)).await?;
    Ok(Json(to_json(&credentials)))
}

/// `POST /api/device/credentials`: replaces a device's credentials with the body's
/// (`deviceId`, `credentialsType`, `credentialsId`, `credentialsValue`), checked as ThingsBoard
/// checks them; only `ACCESS_TOKEN` is accepted.
pub async fn save_credentials(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let device_id = match body.get("deviceId").and_then(|d| d.get("id")).and_then(Value::as_str) {
        Some(id) => parse_uuid(id)?,
        None => return Err(ApiError::bad_request("Device credentials should be assigned to device!")),
    };
    let credentials_type = match body.get("credentialsType").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => return Err(ApiError::bad_request("Device credentials type should be specified!")),
    };
    if credentials_type != "ACCESS_TOKEN" {
        return Err(ApiError::bad_request(format!(
            "Credentials type '{credentials_type}' is not supported: coapgate keeps ACCESS_TOKEN credentials only"
        )));
    }
    let token = match body.get("credentialsId").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => return Err(ApiError::bad_request("Device credentials id should be specified!")),
    };
    check_access_token(&token)?;
    let store = state.store.clone();
    let saved = blocking(move || {
        if store.device(device_id)?.is_none() {
            return Err(coapgate_storage::StorageError::NotFound);
        }
        let mut credentials = new_access_token(device_id);
        credentials.credentials_id = token;
        store.save_device_credentials(&credentials)
    })
    .await?;
    Ok(Json(to_json(&saved)))
}
