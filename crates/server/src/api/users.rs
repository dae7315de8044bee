//! Users: tenant administrators and customer users (ThingsBoard CE's `UserController`, and PE's
//! `/api/user/users`, which `tb-rest-client`'s `get_users` calls).
//!
//! There is no mail server. A new user has no password; it is invited with an activation link
//! (`GET /api/user/{id}/activationLink`, shown by the console with a Copy button) which leads to
//! the console's "set your password" page; `POST /api/noauth/activate` (in [`super::auth`], as
//! it answers a token pair like a login) sets the password. `sendActivationMail=true`, which is
//! ThingsBoard's default and what `tb-rest-client` sends when told nothing, creates the user
//! all the same and writes the link to the server's log instead of a mail.
//!
//! Activation tokens are 32 random alphanumeric characters (190 bits), valid for 24 hours and
//! once; the database keeps only their SHA-256, so a copy of it invites no one. Asking for the
//! link again makes a new token and the old link stops working.
//!
//! Who may do what follows ThingsBoard's permissions: a tenant administrator everything of the
//! tenant; a customer user may read the users of its own customer and change only itself.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coapgate_storage::StorageError;
use coapgate_storage::model::{Millis, User, UserFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use super::authority::{Caller, forbidden};
use super::entities::{opt_entity_id, opt_str};
use super::json::{NULL_CUSTOMER_ID, entity_id};
use super::{ApiError, ApiResult, AppState, Query, blocking, json as tb, page_query, parse_body, parse_uuid, query_bool};

pub const TENANT_ADMIN: &str = "TENANT_ADMIN";
pub const CUSTOMER_USER: &str = "CUSTOMER_USER";

/// ThingsBoard's default lifetime of an activation link (`user_activation_token_ttl`, hours).
const ACTIVATION_TOKEN_MILLIS: Millis = 24 * 3600 * 1000;
const ACTIVATION_TOKEN_CHARS: usize = 32;

/// ThingsBoard's `User` JSON. `additionalInfo.userCredentialsEnabled` is true only for a user
/// that can log in: activated (has a password) and not disabled, as ThingsBoard's credentials
/// flag; `userActivated` says which of the two is missing.
pub fn user_json(u: &User, tenant_id: Uuid) -> Value {
    let activated = !u.password_hash.is_empty();
    let owner = match u.customer_id {
        Some(c) => entity_id("CUSTOMER", c),
        None => entity_id("TENANT", tenant_id),
    };
    json!({
        "id": entity_id("USER", u.id),
        "createdTime": u.created_time,
        "tenantId": entity_id("TENANT", tenant_id),
        "customerId": tb::customer_id(u.customer_id),
        "email": u.email,
        "name": u.email,
        "authority": u.authority,
        "firstName": u.first_name,
        "lastName": u.last_name,
        "phone": null,
        "additionalInfo": {"userCredentialsEnabled": activated && u.enabled, "userActivated": activated},
        "ownerId": owner,
        "customMenuId": null,
        "version": 1,
    })
}

/// The user with this id, or 404.
async fn existing_user(state: &AppState, id: &str) -> ApiResult<User> {
    let id = parse_uuid(id)?;
    let store = state.store.clone();
    blocking(move || store.user(id)).await?.ok_or_else(ApiError::item_not_found)
}

/// ThingsBoard's `CustomerUserPermissions` for users: a customer user reads the users of its
/// own customer and changes only itself; a tenant administrator anything.
fn may_read(caller: &Caller, user: &User) -> bool {
    match caller.customer() {
        None => true,
        Some(customer) => user.authority == CUSTOMER_USER && user.customer_id == Some(customer),
    }
}

fn may_write(caller: &Caller, user: &User) -> bool {
    caller.is_tenant_admin() || (may_read(caller, user) && caller.user() == user.id)
}

/// `POST /api/user?sendActivationMail=`: creates a user (tenant administrators only) or
/// changes one's e-mail and names (its authority and customer stay).
pub async fn save_user(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    QueryParams(q): QueryParams<Query>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let email = opt_str(&body, "email")?
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::bad_request("User email should be specified!"))?
        .to_string();
    check_email(&email)?;
    let name = |field: &str| -> ApiResult<Option<String>> {
        let value = opt_str(&body, field)?.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(v) = &value {
            super::bounded_name(field, v)?;
        }
        Ok(value)
    };
    let (first_name, last_name) = (name("firstName")?, name("lastName")?);
    let tenant = state.store.tenant_id();
    if let Some(id) = opt_entity_id(&body, "id")? {
        let existing = existing_user(&state, &id.to_string()).await?;
        if !may_write(&caller, &existing) {
            return Err(forbidden());
        }
        let changed = User { email, first_name, last_name, ..existing };
        let store = state.store.clone();
        let stored = changed.clone();
        if !blocking(move || store.update_user(&stored)).await? {
            return Err(ApiError::item_not_found());
        }
        return Ok(Json(user_json(&changed, tenant)));
    }
    caller.require_tenant_admin()?;
    let authority = opt_str(&body, "authority")?.ok_or_else(|| ApiError::bad_request("User authority should be specified!"))?;
    let customer_id = opt_entity_id(&body, "customerId")?.filter(|c| c.to_string() != NULL_CUSTOMER_ID);
    let customer_id = match (authority, customer_id) {
        (TENANT_ADMIN, None) => None,
        (TENANT_ADMIN, Some(_)) => return Err(ApiError::bad_request("Tenant administrator can't be assigned to customer!")),
        (CUSTOMER_USER, None) => return Err(ApiError::bad_request("Customer user should be assigned to customer!")),
        (CUSTOMER_USER, Some(customer)) => Some(customer),
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "User authority must be {TENANT_ADMIN} or {CUSTOMER_USER}, not '{other}'"
            )));
        }
    };
    let user = User {
        id: Uuid::new_v4(),
        created_time: coapgate_storage::now_millis(),
        email,
        // No password until the user sets one with its activation link: no hash matches "".
        password_hash: String::new(),
        authority: authority.to_string(),
        first_name,
        last_name,
        customer_id,
        enabled: true,
    };
    let store = state.store.clone();
    let stored = user.clone();
    let token = new_activation_token();
    let hash = token_hash(&token);
    blocking(move || {
        if let Some(customer) = stored.customer_id
            && store.customer(customer)?.is_none()
        {
            return Err(StorageError::Conflict("User is referencing to non-existent customer!".into()));
        }
        store.insert_user(&stored)?;
        store.set_activation_token(stored.id, &hash, coapgate_storage::now_millis() + ACTIVATION_TOKEN_MILLIS)?;
        Ok(())
    })
    .await?;
    if query_bool(&q, "sendActivationMail")?.unwrap_or(true) {
        // ThingsBoard would mail this; without a mail server the server's log is where it goes.
        tracing::warn!(
            "sendActivationMail: there is no mail server, so here is the activation link for {}: {}",
            user.email,
            activation_url(&state, &headers, &token)
        );
    }
    Ok(Json(user_json(&user, tenant)))
}

/// ThingsBoard checks e-mail addresses with a pattern; this keeps its shape: something, `@`,
/// a domain with a dot, no spaces.
fn check_email(email: &str) -> ApiResult<()> {
    let valid = email.len() <= 255
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        });
    if valid { Ok(()) } else { Err(ApiError::bad_request(format!("Invalid email address format '{email}'!"))) }
}

/// `GET /api/user/{userId}`.
pub async fn get_user(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = existing_user(&state, &id).await?;
    if !may_read(&caller, &user) {
        return Err(forbidden());
    }
    Ok(Json(user_json(&user, state.store.tenant_id())))
}

/// `DELETE /api/user/{userId}`: the user, its invitation and its login sessions. An
/// administrator cannot delete itself (the tenant could be left without one).
pub async fn delete_user(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let user = existing_user(&state, &id).await?;
    if user.id == caller.user() {
        return Err(ApiError { message: "You can't delete your own user".into(), ..forbidden() });
    }
    let store = state.store.clone();
    if !blocking(move || store.delete_user(user.id)).await? {
        return Err(ApiError::item_not_found());
    }
    state.jwt.end_sessions_of(user.id).await?;
    Ok(StatusCode::OK)
}

async fn users_page(state: &AppState, filter: UserFilter, q: &Query) -> ApiResult<Json<Value>> {
    let query = page_query(q)?;
    let store = state.store.clone();
    let page = blocking(move || store.users(filter, &query)).await?;
    let tenant = state.store.tenant_id();
    Ok(Json(tb::page(&page, |u| user_json(u, tenant))))
}

/// `GET /api/users` (CE) and `GET /api/user/users` (PE): every user of the tenant for its
/// administrator, the users of its own customer for a customer user.
pub async fn list_users(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let filter = match caller.customer() {
        None => UserFilter::All,
        Some(customer) => UserFilter::Customer(customer),
    };
    users_page(&state, filter, &q).await
}

/// `GET /api/customer/{customerId}/users`.
pub async fn customer_users(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    let customer = super::customers::existing_customer(&state, &id).await?.id;
    users_page(&state, UserFilter::Customer(customer), &q).await
}

/// `GET /api/tenant/{tenantId}/users`: the tenant's administrators (a system administrator's
/// call in ThingsBoard; here the one tenant's administrator may make it).
pub async fn tenant_admins(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<Json<Value>> {
    if parse_uuid(&id)? != state.store.tenant_id() {
        return Err(ApiError::item_not_found());
    }
    users_page(&state, UserFilter::TenantAdmins, &q).await
}

/// A new invitation for a user who has not set a password yet; the link to give them.
async fn new_activation_link(state: &AppState, headers: &HeaderMap, id: &str) -> ApiResult<String> {
    let user = existing_user(state, id).await?;
    if !user.password_hash.is_empty() {
        return Err(ApiError::bad_request("User is already activated!"));
    }
    let token = new_activation_token();
    let hash = token_hash(&token);
    let store = state.store.clone();
    if !blocking(move || store.set_activation_token(user.id, &hash, coapgate_storage::now_millis() + ACTIVATION_TOKEN_MILLIS)).await? {
        return Err(ApiError::item_not_found());
    }
    Ok(activation_url(state, headers, &token))
}

/// `GET /api/user/{userId}/activationLink`: the link as plain text, as ThingsBoard answers it.
pub async fn activation_link(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Response> {
    let link = new_activation_link(&state, &headers, &id).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], link).into_response())
}

/// `GET /api/user/{userId}/activationLinkInfo`: `{value, ttlMs}`.
pub async fn activation_link_info(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let link = new_activation_link(&state, &headers, &id).await?;
    Ok(Json(json!({"value": link, "ttlMs": ACTIVATION_TOKEN_MILLIS})))
}

/// `POST /api/user/sendActivationMail?email=` (tb-rest-client's `send_activation_email`): a new
/// link for a user who has not activated, written to the server's log as there is no mail
/// server to send it; the administrator can also ask for it with `activationLink`.
pub async fn send_activation_mail(State(state): State<AppState>, headers: HeaderMap, QueryParams(q): QueryParams<Query>) -> ApiResult<StatusCode> {
    let email = q.get("email").cloned().ok_or_else(|| ApiError::bad_request("Parameter 'email' is required"))?;
    let store = state.store.clone();
    let user = blocking(move || store.user_by_email(&email)).await?.ok_or_else(ApiError::item_not_found)?;
    let link = new_activation_link(&state, &headers, &user.id.to_string()).await?;
    tracing::warn!("sendActivationMail: there is no mail server, so here is the activation link for {}: {link}", user.email);
    Ok(StatusCode::OK)
}

/// `POST /api/user/{userId}/userCredentialsEnabled?userCredentialsEnabled=` (default true).
/// Disabling ends the user's sessions at once; an administrator cannot disable itself.
pub async fn set_credentials_enabled(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<Query>,
) -> ApiResult<StatusCode> {
    let enabled = query_bool(&q, "userCredentialsEnabled")?.unwrap_or(true);
    let user = existing_user(&state, &id).await?;
    if !enabled && user.id == caller.user() {
        return Err(ApiError { message: "You can't disable your own user".into(), ..forbidden() });
    }
    let store = state.store.clone();
    if !blocking(move || store.set_user_enabled(user.id, enabled)).await? {
        return Err(ApiError::item_not_found());
    }
    if !enabled {
        state.jwt.end_sessions_of(user.id).await?;
    }
    Ok(StatusCode::OK)
}

/// `GET /api/noauth/activate?activateToken=`: ThingsBoard sends the browser on to its
/// create-password page; here, to the console's (the token travels in the fragment, which
/// browsers never send to a server or in a Referer).
pub async fn activation_page(QueryParams(q): QueryParams<Query>) -> ApiResult<Response> {
    let token = q.get("activateToken").ok_or_else(|| ApiError::bad_request("Parameter 'activateToken' is required"))?;
    if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(format!("Unable to find user credentials by activateToken [{token}]")));
    }
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, format!("/#/activate?activateToken={token}"))]).into_response())
}

fn new_activation_token() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), ACTIVATION_TOKEN_CHARS)
}

/// What the database keeps of an activation token.
pub fn token_hash(token: &str) -> String {
    openssl::sha::sha256(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `{base}/api/noauth/activate?activateToken=…`, ThingsBoard's link. The base is the address
/// the administrator reached this server at (its `Host`), as ThingsBoard's default when no base
/// URL is configured; `https` when this server serves TLS.
fn activation_url(state: &AppState, headers: &HeaderMap, token: &str) -> String {
    let scheme = if state.config.ssl.is_some() { "https" } else { "http" };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
        .map(str::to_string)
        .unwrap_or_else(|| state.config.http_bind.clone());
    format!("{scheme}://{host}/api/noauth/activate?activateToken={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_have_a_local_part_and_a_dotted_domain() {
        for good in ["a@b.co", "first.last+tag@example.org"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        for bad in ["", "plain", "@b.co", "a@b", "a@.co", "a@b.", "a b@c.org", "a@b@c.org"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_long_random_and_stored_as_hashes() {
        let (a, b) = (new_activation_token(), new_activation_token());
        assert_eq!(a.len(), ACTIVATION_TOKEN_CHARS);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert!(!token_hash(&a).contains(&a));
    }

    use super::super::authority::test_user as user;

    #[test]
    fn customer_users_read_their_customers_users_and_change_only_themselves() {
        let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        let me = user(CUSTOMER_USER, Some(mine));
        let caller = Caller::of(&me);
        let colleague = user(CUSTOMER_USER, Some(mine));
        assert!(may_read(&caller, &me) && may_write(&caller, &me));
        assert!(may_read(&caller, &colleague) && !may_write(&caller, &colleague));
        assert!(!may_read(&caller, &user(CUSTOMER_USER, Some(theirs))));
        assert!(!may_read(&caller, &user(TENANT_ADMIN, None)));
        let admin = Caller::of(&user(TENANT_ADMIN, None));
        assert!(may_read(&admin, &colleague) && may_write(&admin, &colleague));
    }
}
