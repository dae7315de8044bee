//! `GET /api/coapgate/coapSettings`: the server's own view of where devices reach it, for the
//! console's integration wizard. The base URL a device needs is `COAP_BASE_URL` when set;
//! otherwise the host the browser used with the port the endpoint listens on — not this host's
//! name, which devices often cannot resolve, and never a port the server is not on.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::remote_settings::configured_port;

/// `{"coap": {"enabled", "port", "baseUrl"}, "dtls": {...}}`, with `baseUrl` null where the
/// setting is empty and the listening port (also when configured as 0).
pub async fn coap_settings(State(state): State<AppState>) -> Json<Value> {
    let config = &state.config;
    let coap_port = state.metrics.endpoint.local_addr().map_or_else(|_| configured_port(&config.coap_bind), |a| a.port());
    let dtls_port = match (&state.metrics.dtls, &config.dtls) {
        (Some(endpoint), _) => endpoint.local_addr().map(|a| a.port()).unwrap_or(0),
        (None, Some(settings)) => configured_port(&settings.bind),
        (None, None) => 0,
    };
    Json(json!({
        "coap": {
            "enabled": true,
            "port": coap_port,
            "baseUrl": config.coap_base_url_set.then_some(&config.coap_base_url),
        },
        "dtls": {
            "enabled": config.dtls_enabled,
            "port": dtls_port,
            "baseUrl": config.coap_dtls_base_url_set.then_some(&config.coap_dtls_base_url),
        },
    }))
}
