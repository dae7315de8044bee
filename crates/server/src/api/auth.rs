//! Login, tokens and the first admin user.
//!
//! Tokens are JWTs signed with HS512 like ThingsBoard's, with the same claims (`sub`, `scopes`,
//! `userId`, `tenantId`, `exp` in seconds), so clients that decode them (tb-rest-client reads
//! `exp` to schedule its refresh) work unchanged. The signing secret is generated on first start
//! and kept in the database, so tokens survive a restart.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use coapgate_storage::Store;
use coapgate_storage::model::User;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiError, ApiResult, AppState, blocking, json::NULL_CUSTOMER_ID, parse_body};

/// ThingsBoard's default lifetimes: 2.5 hours for access, one week for refresh tokens.
const ACCESS_TOKEN_SECONDS: u64 = 9_000;
const REFRESH_TOKEN_SECONDS: u64 = 604_800;
const REFRESH_SCOPE: &str = "REFRESH_TOKEN";

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
    iss: String,
    iat: u64,
    exp: u64,
}

pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Jwt {
    /// Loads the signing secret from storage, creating it on first start.
    pub fn load(store: &dyn Store) -> coapgate_storage::Result<Jwt> {
        let secret = match store.setting("jwt_secret")? {
            Some(s) => s,
            None => {
                let bytes: [u8; 64] = rand::random();
                let s = base64::engine::general_purpose::STANDARD.encode(bytes);
                store.put_setting("jwt_secret", &s)?;
                s
            }
        };
        Ok(Jwt { encoding: EncodingKey::from_secret(secret.as_bytes()), decoding: DecodingKey::from_secret(secret.as_bytes()) })
    }

    fn issue(&self, user: &User, tenant_id: Uuid, refresh: bool) -> String {
        let now = coapgate_storage::now_millis() as u64 / 1000;
        let (scope, lifetime) =
            if refresh { (REFRESH_SCOPE, REFRESH_TOKEN_SECONDS) } else { (user.authority.as_str(), ACCESS_TOKEN_SECONDS) };
        let claims = Claims {
            sub: user.email.clone(),
            scopes: vec![scope.to_string()],
            user_id: user.id.to_string(),
            tenant_id: tenant_id.to_string(),
            customer_id: NULL_CUSTOMER_ID.to_string(),
            is_public: false,
            enabled: true,
            iss: "coapgate".into(),
            iat: now,
            exp: now + lifetime,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &self.encoding).expect("HS512 signing cannot fail")
    }

    fn pair(&self, user: &User, tenant_id: Uuid) -> Value {
        json!({"token": self.issue(user, tenant_id, false), "refreshToken": self.issue(user, tenant_id, true), "scope": null})
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
}

/// Creates the admin user on first start. Returns the generated password when none was
/// configured, for the start-up banner to print once.
pub fn ensure_admin_user(store: &dyn Store, username: &str, password: Option<&str>) -> anyhow::Result<Option<String>> {
    if store.user_count()? > 0 {
        return Ok(None);
    }
    let (password, generated) = match password {
        Some(p) => (p.to_string(), false),
        None => {
            use rand::distr::{Alphanumeric, SampleString};
            (Alphanumeric.sample_string(&mut rand::rng(), 16), true)
        }
    };
    let user = User {
        id: Uuid::new_v4(),
        created_time: coapgate_storage::now_millis(),
        email: username.to_string(),
        password_hash: bcrypt::hash(&password, 10)?,
        authority: "TENANT_ADMIN".into(),
        first_name: None,
        last_name: None,
    };
    store.insert_user(&user)?;
    Ok(generated.then_some(password))
}

pub async fn login(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let body = parse_body(&body)?;
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    let username = field("username").ok_or_else(|| ApiError::bad_request("Field 'username' is required"))?;
    let password = field("password").ok_or_else(|| ApiError::bad_request("Field 'password' is required"))?;
    let store = state.store.clone();
    let user = blocking(move || store.user_by_email(&username)).await?;
    let invalid = || ApiError::unauthorized("Invalid username or password", 10);
    let user = user.ok_or_else(invalid)?;
    let hash = user.password_hash.clone();
    let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !ok {
        return Err(invalid());
    }
    Ok(Json(state.jwt.pair(&user, state.store.tenant_id())))
}

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
    Ok(Json(state.jwt.pair(&user, state.store.tenant_id())))
}

async fn user_of(state: &AppState, claims: &Claims) -> ApiResult<User> {
    let id = Uuid::parse_str(&claims.user_id).map_err(|_| ApiError::unauthorized("Authentication failed", 10))?;
    let store = state.store.clone();
    blocking(move || store.user(id)).await?.ok_or_else(|| ApiError::unauthorized("User not found", 10))
}

/// The authenticated user, put into request extensions by [`require_token`].
#[derive(Clone)]
pub struct AuthUser(pub User);

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
    let claims = state.jwt.verify(token.trim())?;
    if claims.scopes.iter().any(|s| s == REFRESH_SCOPE) {
        return Err(ApiError::unauthorized("Authentication failed", 10));
    }
    let user = user_of(&state, &claims).await?;
    request.extensions_mut().insert(AuthUser(user));
    Ok(next.run(request).await)
}

pub async fn current_user(
    State(state): State<AppState>,
    axum::Extension(AuthUser(user)): axum::Extension<AuthUser>,
) -> Json<Value> {
    Json(json!({
        "id": {"entityType": "USER", "id": user.id},
        "createdTime": user.created_time,
        "tenantId": {"entityType": "TENANT", "id": state.store.tenant_id()},
        "customerId": {"entityType": "CUSTOMER", "id": NULL_CUSTOMER_ID},
        "email": user.email,
        "name": user.email,
        "authority": user.authority,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "additionalInfo": {},
    }))
}

/// Tokens are stateless; logging out is the client forgetting them, as far as the server goes.
pub async fn logout() -> axum::http::StatusCode {
    axum::http::StatusCode::OK
}
