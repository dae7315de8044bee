//! The DTLS endpoint's transport: one UDP socket and the session table of `coapgate-dtls`.
//!
//! The receive loop hands every datagram to the session table (one mutex, held only while
//! OpenSSL processes that datagram), sends the records it returns, and passes decrypted CoAP
//! datagrams to the same [`CoapEndpoint::handle_datagram`] as the plain endpoint, with the
//! session's peer (PSK identity, certificate) for the routing checks. Answers go back through
//! [`DtlsTransport::send`], which encrypts them for the peer's session. A timer task drives
//! handshake retransmissions, handshake timeouts, idle eviction and cookie-secret rotation.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use coapgate_dtls::{DtlsServer, DtlsStats, ServerConfig};
use tokio::net::UdpSocket;

use crate::coap_endpoint::CoapEndpoint;
use crate::config::{DtlsCredentials, DtlsSettings};
use crate::registry::Registry;

const TICK: Duration = Duration::from_millis(200);

pub struct DtlsTransport {
    socket: Arc<UdpSocket>,
    server: Mutex<DtlsServer>,
    pub stats: Arc<DtlsStats>,
}

impl DtlsTransport {
    /// Binds the socket and sets up the session table; errors name the setting at fault.
    pub async fn start(
        settings: &DtlsSettings,
        credentials: coapgate_dtls::Credentials,
        registry: Arc<Registry>,
    ) -> anyhow::Result<Arc<DtlsTransport>> {
        if settings.connection_id_length > 0 {
            tracing::info!(
                "COAP_DTLS_CONNECTION_ID_LENGTH={}: RFC 9146 connection IDs are not available with OpenSSL 3; \
                 DTLS sessions are found by the peer's address",
                settings.connection_id_length
            );
        }
        let server = DtlsServer::new(ServerConfig {
            credentials: Some(credentials),
            psk: Some(registry),
            skip_client_cert_validity: settings.skip_client_cert_validity,
            max_sessions: settings.max_sessions,
            max_handshakes: settings.max_handshakes,
            max_handshakes_per_ip: settings.max_handshakes_per_ip,
            handshake_timeout: settings.handshake_timeout,
            idle_timeout: settings.idle_timeout,
            ..ServerConfig::default()
        })
        .map_err(|e| anyhow::anyhow!("COAP_DTLS_CREDENTIALS_TYPE: the server credentials cannot be used for DTLS: {e}"))?;
        let socket = crate::udp_io::bind(&settings.bind, settings.reuse_port)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .with_context(|| format!("COAP_DTLS_BIND_ADDRESS/COAP_DTLS_BIND_PORT: cannot listen on udp {}", settings.bind))?;
        crate::serve::enlarge_socket_buffers(&socket, settings.socket_buffer_bytes);
        let stats = server.stats.clone();
        Ok(Arc::new(DtlsTransport { socket: Arc::new(socket), server: Mutex::new(server), stats }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DtlsServer> {
        self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encrypts and sends one CoAP datagram to `peer`; without a session it is dropped (the
    /// peer went away, and CoAP's retransmission or a new handshake covers it).
    pub fn send(&self, bytes: &[u8], peer: SocketAddr) {
        let records = self.lock().send(peer, bytes);
        match records {
            Some(records) => self.send_records(peer, records),
            None => tracing::debug!("no DTLS session with {peer} for a response"),
        }
    }

    fn send_records(&self, peer: SocketAddr, records: Vec<Vec<u8>>) {
        for record in records {
            if let Err(e) = self.socket.try_send_to(&record, peer) {
                tracing::debug!("dtls send to {peer} failed: {e}");
            }
        }
    }
}

/// The receive loop of the DTLS endpoint. Errors on one datagram never end it.
pub async fn run(endpoint: Arc<CoapEndpoint>, transport: Arc<DtlsTransport>) {
    let timer = transport.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        loop {
            interval.tick().await;
            let outgoing = timer.lock().tick(Instant::now());
            for (peer, record) in outgoing {
                timer.send_records(peer, vec![record]);
            }
        }
    });
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match transport.socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!("dtls receive error: {e}");
                continue;
            }
        };
        let output = transport.lock().handle(peer, &buf[..n], Instant::now());
        transport.send_records(peer, output.datagrams);
        for datagram in &output.app_data {
            endpoint.stats.datagrams.fetch_add(1, Ordering::Relaxed);
            endpoint.handle_datagram(datagram, peer, output.peer.as_deref());
        }
    }
}

/// The server's certificate and key; errors name the setting at fault.
pub fn load_credentials(credentials: &DtlsCredentials) -> anyhow::Result<coapgate_dtls::Credentials> {
    use coapgate_dtls::CredentialsError as E;
    match credentials {
        DtlsCredentials::KeyStore { path, store_type, store_password, key_password, alias } => {
            coapgate_dtls::keystore::load_key_store(path, *store_type, store_password, key_password, alias).map_err(|e| {
                let setting = match &e {
                    E::Unreadable { .. } | E::Format(_) => "COAP_DTLS_KEY_STORE",
                    E::WrongStorePassword(_) => "COAP_DTLS_KEY_STORE_PASSWORD",
                    E::WrongKeyPassword(_) => "COAP_DTLS_KEY_PASSWORD",
                    E::NoSuchAlias { .. } => "COAP_DTLS_KEY_ALIAS",
                };
                anyhow::anyhow!("{setting}: {e}")
            })
        }
        DtlsCredentials::Pem { cert, key, key_password } => {
            coapgate_dtls::keystore::load_pem(cert, key, key_password).map_err(|e| {
                let setting = match &e {
                    E::Unreadable { path, .. } if *path == cert.display().to_string() => "COAP_DTLS_PEM_CERT",
                    E::Format(text) if text.contains("holds no PEM certificate") => "COAP_DTLS_PEM_CERT",
                    E::WrongKeyPassword(_) => "COAP_DTLS_PEM_KEY_PASSWORD",
                    _ => "COAP_DTLS_PEM_KEY",
                };
                anyhow::anyhow!("{setting}: {e}")
            })
        }
    }
}
