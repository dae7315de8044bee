//! `GET /api/coapgate/remoteSettings`: whether this platform accepts remote integrations, on
//! which port and with TLS or not. The console needs it to show the command that starts a
//! remote (`RPC_PORT`, `RPC_SSL_ENABLED`), or to say plainly that remotes are off; the host is
//! the one the browser used, which the server cannot know.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;

/// `{"enabled", "port", "tls"}` from `INTEGRATIONS_RPC_*`: the port the endpoint listens on
/// (also when it was configured as 0, a port chosen at start-up).
pub async fn remote_settings(State(state): State<AppState>) -> Json<Value> {
    Json(match &state.config.rpc {
        Some(rpc) => {
            let port = state.remote.bound().map_or_else(|| configured_port(&rpc.bind), |a| a.port());
            json!({"enabled": true, "port": port, "tls": rpc.tls.is_some()})
        }
        None => json!({"enabled": false, "port": 0, "tls": false}),
    })
}

/// The port of an "addr:port" bind address (IPv6 addresses included); 0 when there is none.
pub(super) fn configured_port(bind: &str) -> u16 {
    crate::config::port_of(bind).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::configured_port;

    #[test]
    fn port_of_a_bind_address() {
        assert_eq!(configured_port("0.0.0.0:9090"), 9090);
        assert_eq!(configured_port("[::]:9443"), 9443);
        assert_eq!(configured_port("127.0.0.1:0"), 0);
        assert_eq!(configured_port("nonsense"), 0);
    }
}
