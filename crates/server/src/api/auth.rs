//! Login, tokens, logout, password changes and the first admin user.
//!
//! Tokens are JWTs signed with HS512 like ThingsBoard's, with the same claims (`sub`, `scopes`,
//! `userId`, `tenantId`, `sessionId`, `exp` in seconds), so clients that decode them
//! (tb-rest-client reads `exp` to schedule its refresh) work unchanged. The signing secret is
//! generated on first start and kept in the database, so tokens survive a restart.
//!
//! A token is honoured only while (1) its login session is live ([`sessions`]: logout, refresh
//! rotation and reuse detection) and (2) it was issued under the user's current password (the
//! `cv` claim, see [`password::credentials_version`]). Logins pass the rate limits of
//! [`login_limits`] before any bcrypt work, and bcrypt runs on the bounded [`HashPool`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use coapgate_storage::{StorageError, Store};
use coapgate_storage::model::{Activation, User};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::login_limits::{LoginLimits, RetryAfter};
use super::password::{self, HashPool, HashRefused};
use super::sessions::{Rotation, Sessions};
use super::{ApiError, ApiResult, AppState, blocking, json::NULL_CUSTOMER_ID, parse_body};

/// ThingsBoard's default lifetimes: 2.5 hours for access, one week for refresh tokens.
const ACCESS_TOKEN_SECONDS: u64 = 9_000;
const REFRESH_TOKEN_SECONDS: u64 = 604_800;
const REFRESH_SCOPE: &str = "REFRESH_TOKEN";
/// ThingsBoard's `ThingsboardErrorCode.TOO_MANY_REQUESTS`.
const TOO_MANY_REQUESTS_CODE: u32 = 33;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    scopes: Vec<String>,
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(rename = "tenantId")]
    tenant_id: String,
    #[serde(rename = "customerId")]
    customer_id: String,
    #[serde(rename = "isPublic")]
    is_public: bool,
    enabled: bool,
    /// The login session this token belongs to; ended by logout, a password change or a reused
    /// refresh token.
    #[serde(rename = "sessionId")]
    session_id: Uuid,
    /// The token's own id; for refresh tokens, what rotation compares.
    jti: Uuid,
    /// The credentials version (bcrypt salt) of the password the token was issued under.
    cv: String,
    iss: String,
    iat: u64,
    exp: u64,
}

/// The token service: signing, sessions, and the guard in front of password checks.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    sessions: Sessions,
    /// bcrypt on at most two threads; see [`password`].
    hashing: HashPool,
    limits: LoginLimits,
}

enum TokenKind {
    Access,
    Refresh { jti: Uuid, expires: u64 },
}

impl Jwt {
    /// Loads the signing secret and the login sessions from storage, creating the secret on
    /// first start.
    pub fn load(store: Arc<dyn Store>) -> coapgate_storage::Result<Jwt> {
        let secret = match store.setting("jwt_secret")? {
            Some(s) => s,
            None => {
                let bytes: [u8; 64] = rand::random();
                let s = base64::engine::general_purpose::STANDARD.encode(bytes);
                store.put_setting("jwt_secret", &s)?;
                s
            }
        };
        Ok(Jwt {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            sessions: Sessions::load(store)?,
            hashing: HashPool::default(),
            limits: LoginLimits::default(),
        })
    }

    fn issue(&self, user: &User, tenant_id: Uuid, session_id: Uuid, kind: TokenKind) -> String {
        let now = now_secs();
        let (scope, jti, exp) = match kind {
            TokenKind::Access => (user.authority.as_str(), Uuid::new_v4(), now + ACCESS_TOKEN_SECONDS),
            TokenKind::Refresh { jti, expires } => (REFRESH_SCOPE, jti, expires),
        };
        let claims = Claims {
            sub: user.email.clone(),
            scopes: vec![scope.to_string()],
            user_id: user.id.to_string(),
            tenant_id: tenant_id.to_string(),
            customer_id: user.customer_id.map_or_else(|| NULL_CUSTOMER_ID.to_string(), |c| c.to_string()),
            is_public: false,
            enabled: true,
            session_id,
            jti,
            cv: password::credentials_version(&user.password_hash),
            iss: "coapgate".into(),
            iat: now,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &self.encoding).expect("HS512 signing cannot fail")
    }

    fn pair(&self, user: &User, tenant_id: Uuid, session_id: Uuid, refresh_jti: Uuid, expires: u64) -> Value {
        json!({
            "token": self.issue(user, tenant_id, session_id, TokenKind::Access),
            "refreshToken": self.issue(user, tenant_id, session_id, TokenKind::Refresh { jti: refresh_jti, expires }),
            "scope": null,
        })
    }

    /// A new login session for `user` and its first token pair.
    async fn start_session(&self, user: &User, tenant_id: Uuid) -> ApiResult<Value> {
        let now = now_secs();
        let expires = now + REFRESH_TOKEN_SECONDS;
        let (session_id, jti) = self.sessions.start(user.id, expires, now).await?;
        Ok(self.pair(user, tenant_id, session_id, jti, expires))
    }

    /// Ends every login session of a user (disabled or deleted), so its tokens stop working now.
    pub(super) async fn end_sessions_of(&self, user_id: Uuid) -> ApiResult<()> {
        Ok(self.sessions.end_all_of(user_id).await?)
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS512);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthorized("Token has expired", 11),
                _ => ApiError::unauthorized("Authentication failed", 10),
            }
        })
    }

    /// Prometheus lines for `/metrics`: the hashing pool and the login limits.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        self.hashing.render_metrics(&mut out);
        let _ = writeln!(out, "# HELP coapgate_login_refused_total Logins refused with 429 before any password check.");
        let _ = writeln!(out, "# TYPE coapgate_login_refused_total counter");
        let _ = writeln!(out, "coapgate_login_refused_total{{reason=\"user_locked\"}} {}", self.limits.refused_lockout.load(Relaxed));
        let _ = writeln!(out, "coapgate_login_refused_total{{reason=\"address_rate\"}} {}", self.limits.refused_address.load(Relaxed));
        out
    }
}

fn now_secs() -> u64 {
    coapgate_storage::now_millis() as u64 / 1000
}

/// 429 in ThingsBoard's error JSON with `Retry-After`.
fn too_many_requests(message: &str, retry: RetryAfter) -> Response {
    let mut response =
        ApiError { status: StatusCode::TOO_MANY_REQUESTS, message: message.into(), error_code: TOO_MANY_REQUESTS_CODE }
            .into_response();
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(retry.seconds()));
    response
}

fn hash_refused(e: HashRefused) -> Response {
    match e {
        HashRefused::Busy => too_many_requests(
            "Too many login attempts in progress, try again shortly",
            RetryAfter(std::time::Duration::from_secs(1)),
        ),
        HashRefused::Failed(e) => ApiError::internal(e).into_response(),
    }
}

/// Creates the admin user on first start. Returns the generated password when none was
/// configured, for the start-up banner to print once. A configured password must meet the
/// password policy; after the first start it is not applied (use `coapgate reset-password`),
/// and a differing one is reported so that the change is not silently lost.
pub fn ensure_admin_user(store: &dyn Store, username: &str, password: Option<&str>) -> anyhow::Result<Option<String>> {
    if store.user_count()? > 0 {
        if let (Some(password), Some(user)) = (password, store.user_by_email(username)?)
            && !bcrypt::verify(password, &user.password_hash).unwrap_or(false)
        {
            tracing::warn!(
                "COAPGATE_ADMIN_PASSWORD differs from {username}'s password and is ignored: it only sets the first \
                 password; run `coapgate reset-password` to change it"
            );
        }
        return Ok(None);
    }
    let (password, generated) = match password {
        Some(p) => {
            password::check_policy(p).map_err(|e| anyhow::anyhow!("COAPGATE_ADMIN_PASSWORD: {e}"))?;
            (p.to_string(), false)
        }
        None => (generate_password(), true),
    };
    let user = User {
        id: Uuid::new_v4(),
        created_time: coapgate_storage::now_millis(),
        email: username.to_string(),
        password_hash: bcrypt::hash(&password, password::HASH_COST)?,
        authority: "TENANT_ADMIN".into(),
        first_name: None,
        last_name: None,
        customer_id: None,
        enabled: true,
    };
    match store.insert_user(&user) {
        Ok(()) => Ok(generated.then_some(password)),
        // Another node starting on the same new database created the first user between the
        // count and the insert (the hash above takes a while): that one is the admin.
        Err(StorageError::Conflict(_)) if store.user_by_email(username)?.is_some() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A random 16-character password, for the first start and `coapgate reset-password`.
pub fn generate_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

/// The peer's address, when the server was started with connection info; logins from a server
/// without it share one rate-limit bucket.
fn peer_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `POST /api/auth/login`: rate limits first (no work for a refused attempt), then one bcrypt
/// verification on the bounded pool whether or not the user exists.
/// How long a refused login (429) waits before it is answered. Refusals cost no hashing, but a
/// client that retries at once would otherwise turn them into a flood of HTTP work: measured on
/// two cores, 32 connections retrying without pause took 12,700 refusals/s and half of the CoAP
/// ingestion. Held for a second, the same client gets 32 answers a second; the wait is a timer,
/// not a thread.
const REFUSAL_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let ip = peer_ip(&request);
    match login_inner(&state, ip, request).await {
        Ok(pair) => Json(pair).into_response(),
        Err(response) => {
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                tokio::time::sleep(REFUSAL_DELAY).await;
            }
            response
        }
    }
}

async fn login_inner(state: &AppState, ip: IpAddr, request: Request) -> Result<Value, Response> {
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")).into_response())?;
    let body = parse_body(&body).map_err(IntoResponse::into_response)?;
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    let username = field("username").ok_or_else(|| ApiError::bad_request("Field 'username' is required").into_response())?;
    let password = field("password").ok_or_else(|| ApiError::bad_request("Field 'password' is required").into_response())?;
    let jwt = &state.jwt;
    jwt.limits.admit_address(ip).map_err(|retry| too_many_requests("Too many failed login attempts from this address", retry))?;
    let store = state.store.clone();
    let name = username.clone();
    let user = blocking(move || store.user_by_email(&name)).await.map_err(IntoResponse::into_response)?;
    let credentials = user.as_ref().map(|u| password::credentials_version(&u.password_hash)).unwrap_or_default();
    jwt.limits
        .check_user(&username, &credentials)
        .map_err(|retry| too_many_requests("User account is locked due to security policy", retry))?;
    let ok = match jwt.hashing.verify(password, user.as_ref().map(|u| u.password_hash.clone())).await {
        Ok(ok) => ok,
        Err(e) => {
            // Not judged, so not counted against the address.
            jwt.limits.refund_address(ip);
            return Err(hash_refused(e));
        }
    };
    let user = match user {
        Some(user) if ok => user,
        _ => {
            jwt.limits.record_failure(&username, &credentials);
            return Err(ApiError::unauthorized("Invalid username or password", 10).into_response());
        }
    };
    jwt.limits.record_success(&username);
    jwt.limits.refund_address(ip);
    if !user.enabled {
        return Err(ApiError::unauthorized("User account is not active", 10).into_response());
    }
    jwt.start_session(&user, state.store.tenant_id()).await.map_err(IntoResponse::into_response)
}

/// `POST /api/auth/token`: rotates the refresh token; an already-used one ends its session.
pub async fn refresh(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let token = body
        .get("refreshToken")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("Field 'refreshToken' is required"))?;
    let claims = state.jwt.verify(token)?;
    if claims.scopes.iter().all(|s| s != REFRESH_SCOPE) {
        return Err(ApiError::unauthorized("Invalid refresh token", 10));
    }
    let user = user_of(&state, &claims).await?;
    match state.jwt.sessions.rotate(claims.session_id, claims.jti, now_secs()).await? {
        Rotation::Rotated { new_jti, expires } => {
            Ok(Json(state.jwt.pair(&user, state.store.tenant_id(), claims.session_id, new_jti, expires)))
        }
        Rotation::Reused => Err(ApiError::unauthorized("Refresh token was already used; the session is ended", 10)),
        Rotation::Unknown => Err(ApiError::unauthorized("Session is no longer valid", 10)),
    }
}

/// The user of a token, which must have been issued under the user's current password.
async fn user_of(state: &AppState, claims: &Claims) -> ApiResult<User> {
    let id = Uuid::parse_str(&claims.user_id).map_err(|_| ApiError::unauthorized("Authentication failed", 10))?;
    let store = state.store.clone();
    let user = blocking(move || store.user(id)).await?.ok_or_else(|| ApiError::unauthorized("User not found", 10))?;
    if password::credentials_version(&user.password_hash) != claims.cv {
        return Err(ApiError::unauthorized("Authentication failed", 10));
    }
    if !user.enabled {
        return Err(ApiError::unauthorized("User account is disabled", 10));
    }
    Ok(user)
}

/// The authenticated user, put into request extensions by [`require_token`].
#[derive(Clone)]
pub struct AuthUser(pub User);

/// The login session of the request's token, for logout.
#[derive(Clone, Copy)]
pub struct AuthSession(pub Uuid);

/// Accepts `X-Authorization: Bearer <token>` (ThingsBoard's header) or the standard
/// `Authorization` header; refresh tokens are not access tokens.
pub async fn require_token(State(state): State<AppState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get("x-authorization")
        .or_else(|| request.headers().get(axum::http::header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("Authentication failed", 10))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authentication failed", 10))?;
    let (user, session_id) = authenticate(&state, token).await?;
    request.extensions_mut().insert(super::authority::Caller::of(&user));
    request.extensions_mut().insert(AuthUser(user));
    request.extensions_mut().insert(AuthSession(session_id));
    Ok(next.run(request).await)
}

/// The user an access token stands for, and its login session; the REST API's header and the
/// WebSocket API's `?token=` and `authCmd` all go through here.
pub async fn authenticate(state: &AppState, token: &str) -> Result<(User, Uuid), ApiError> {
    let claims = state.jwt.verify(token.trim())?;
    if claims.scopes.iter().any(|s| s == REFRESH_SCOPE) {
        return Err(ApiError::unauthorized("Authentication failed", 10));
    }
    if !state.jwt.sessions.is_live(claims.session_id, now_secs()).await {
        return Err(ApiError::unauthorized("Session is no longer valid", 10));
    }
    let user = user_of(state, &claims).await?;
    Ok((user, claims.session_id))
}

pub async fn current_user(
    State(state): State<AppState>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
) -> Json<Value> {
    Json(super::users::user_json(&user, state.store.tenant_id()))
}

/// `POST /api/noauth/activate` with ThingsBoard's `{activateToken, password}`: sets the invited
/// user's first password and logs it in (a token pair, as ThingsBoard answers). Attempts count
/// against the address as logins do; the password policy is checked before the token is used,
/// so a refused password leaves the link working.
pub async fn activate(State(state): State<AppState>, request: Request) -> Response {
    let ip = peer_ip(&request);
    match activate_inner(&state, ip, request).await {
        Ok(pair) => Json(pair).into_response(),
        Err(response) => {
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                tokio::time::sleep(REFUSAL_DELAY).await;
            }
            response
        }
    }
}

async fn activate_inner(state: &AppState, ip: IpAddr, request: Request) -> Result<Value, Response> {
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")).into_response())?;
    let body = parse_body(&body).map_err(IntoResponse::into_response)?;
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    let token = field("activateToken").ok_or_else(|| ApiError::bad_request("Field 'activateToken' is required").into_response())?;
    let password = field("password").ok_or_else(|| ApiError::bad_request("Field 'password' is required").into_response())?;
    let jwt = &state.jwt;
    jwt.limits.admit_address(ip).map_err(|retry| too_many_requests("Too many failed login attempts from this address", retry))?;
    password::check_policy(&password).map_err(|e| {
        jwt.limits.refund_address(ip);
        ApiError::bad_request(e).into_response()
    })?;
    let hash = jwt.hashing.hash(password).await.map_err(|e| {
        jwt.limits.refund_address(ip);
        hash_refused(e)
    })?;
    let store = state.store.clone();
    let token_hash = super::users::token_hash(&token);
    let now = coapgate_storage::now_millis();
    let activation = blocking(move || store.activate_user(&token_hash, now, &hash)).await.map_err(IntoResponse::into_response)?;
    let user = match activation {
        Activation::Activated(user) => user,
        // A wrong token counts against the address (it stays counted); ThingsBoard's messages.
        Activation::Unknown => {
            return Err(ApiError::bad_request(format!("Unable to find user credentials by activateToken [{token}]")).into_response());
        }
        Activation::Expired => return Err(ApiError::bad_request("Activation token expired").into_response()),
    };
    jwt.limits.refund_address(ip);
    if !user.enabled {
        return Err(ApiError::unauthorized("User account is not active", 10).into_response());
    }
    jwt.start_session(&user, state.store.tenant_id()).await.map_err(IntoResponse::into_response)
}

/// `POST /api/auth/logout`: ends the token's session, so neither its access token nor its
/// refresh token works any more.
pub async fn logout(
    State(state): State<AppState>,
    axum::Extension(AuthSession(session_id)): axum::Extension<AuthSession>,
) -> ApiResult<StatusCode> {
    state.jwt.sessions.end(session_id).await?;
    Ok(StatusCode::OK)
}

/// `POST /api/auth/changePassword` with ThingsBoard's `{currentPassword, newPassword}`: checks
/// the current password and the policy, ends every session of the user, and answers a new token
/// pair as ThingsBoard does.
pub async fn change_password(
    State(state): State<AppState>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
    body: Bytes,
) -> Result<Response, Response> {
    let body = parse_body(&body).map_err(IntoResponse::into_response)?;
    let field = |name: &str| -> ApiResult<String> {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request(format!("Field '{name}' is required")))
    };
    let current = field("currentPassword").map_err(IntoResponse::into_response)?;
    let new = field("newPassword").map_err(IntoResponse::into_response)?;
    let jwt = &state.jwt;
    let credentials = password::credentials_version(&user.password_hash);
    jwt.limits
        .check_user(&user.email, &credentials)
        .map_err(|retry| too_many_requests("User account is locked due to security policy", retry))?;
    if !jwt.hashing.verify(current.clone(), Some(user.password_hash.clone())).await.map_err(hash_refused)? {
        // A stolen token must not become a free password oracle: failures count as for login.
        jwt.limits.record_failure(&user.email, &credentials);
        return Err(ApiError::bad_request("Current password doesn't match!").into_response());
    }
    password::check_policy(&new).map_err(|e| ApiError::bad_request(e).into_response())?;
    if new == current {
        return Err(ApiError::bad_request("New password should be different from existing!").into_response());
    }
    let hash = jwt.hashing.hash(new).await.map_err(hash_refused)?;
    let store = state.store.clone();
    let (id, stored) = (user.id, hash.clone());
    blocking(move || store.set_user_password_hash(id, &stored)).await.map_err(IntoResponse::into_response)?;
    jwt.sessions.end_all_of(user.id).await.map_err(|e| ApiError::from(e).into_response())?;
    let user = User { password_hash: hash, ..user };
    let pair = jwt.start_session(&user, state.store.tenant_id()).await.map_err(IntoResponse::into_response)?;
    Ok(Json(pair).into_response())
}
