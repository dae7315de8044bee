//! The session table: one OpenSSL `Ssl` per peer over an in-memory datagram pipe, driven by
//! the caller's receive loop (no thread or task per session).
//!
//! A datagram from a peer without a session can only start one if its record header says
//! "epoch-0 handshake, ClientHello"; anything else is dropped before any allocation. Such a
//! ClientHello goes to one shared *listener* `Ssl` running OpenSSL's stateless
//! `DTLSv1_listen`: without a valid cookie it answers HelloVerifyRequest and forgets the peer;
//! with one (an HMAC over the peer address under a secret that rotates, the previous secret
//! still accepted) the listener becomes that peer's session and a fresh listener takes its
//! place. So a flood of spoofed ClientHellos costs one HMAC each and no memory.
//!
//! Bounds: `max_sessions` in total, `max_handshakes` half-open (cookie proven, handshake not
//! finished) in total and `max_handshakes_per_ip` per source address; half-open sessions die
//! after `handshake_timeout`, established ones after `idle_timeout` without traffic.
//!
//! Sessions are keyed by [`SessionKey`], today the peer address. RFC 9146 connection IDs would
//! add a `Cid` key: the record header of a `tls12_cid` (type 25) record carries the CID right
//! after the sequence number, so the lookup could happen here before OpenSSL sees the record.
//! What blocks it is OpenSSL (3.0 up to at least 3.5): it neither negotiates the
//! `connection_id` extension nor reads or writes CID records (which also change the AEAD's
//! additional data), and has no API to set one.

use std::collections::HashMap;
use crate::pipe::DatagramPipe as Pipe;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::hash::MessageDigest;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509, X509StoreContextRef, X509VerifyResult};

use crate::keystore::Credentials;
use crate::record;

/// RFC 7252's mandatory suites (PSK and ECDSA with AES-128-CCM-8) first, then the common
/// AES-GCM and CBC ones so that ordinary OpenSSL, GnuTLS and mbedTLS clients find a match.
pub const DEFAULT_CIPHERS: &str = "PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8:\
ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:\
ECDHE-RSA-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-CCM:\
ECDHE-ECDSA-AES128-CCM:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES128-CBC-SHA256:ECDHE-ECDSA-AES128-SHA256:\
ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-PSK-CHACHA20-POLY1305:PSK-CHACHA20-POLY1305";

/// Pre-shared keys by identity; the server asks during each PSK handshake.
pub trait PskKeys: Send + Sync {
    fn psk_key(&self, identity: &[u8]) -> Option<Vec<u8>>;
}

/// What a session is found by. Today the peer's address; an RFC 9146 connection ID would be a
/// second variant (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Addr(SocketAddr),
}

/// Who is at the other end of an established session.
#[derive(Debug, Default)]
pub struct PeerInfo {
    /// The PSK identity, for PSK cipher suites.
    pub psk_identity: Option<Vec<u8>>,
    /// The client certificate, when the client sent one.
    pub certificate: Option<X509>,
}

pub struct ServerConfig {
    /// Certificate credentials; `None` serves PSK suites only.
    pub credentials: Option<Credentials>,
    pub psk: Option<Arc<dyn PskKeys>>,
    /// Accept client certificates outside their validity period.
    pub skip_client_cert_validity: bool,
    pub ciphers: String,
    pub max_sessions: usize,
    pub max_handshakes: usize,
    pub max_handshakes_per_ip: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// How often the cookie secret changes (cookies of the previous secret stay valid).
    pub cookie_lifetime: Duration,
    /// Path MTU for the handshake flights (certificates are fragmented to fit).
    pub mtu: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            credentials: None,
            psk: None,
            skip_client_cert_validity: false,
            ciphers: DEFAULT_CIPHERS.into(),
            max_sessions: 10_000,
            max_handshakes: 1_000,
            max_handshakes_per_ip: 100,
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(1800),
            cookie_lifetime: Duration::from_secs(60),
            mtu: 1200,
        }
    }
}

/// Counters of the DTLS layer, read by metrics and tests.
#[derive(Debug, Default)]
pub struct DtlsStats {
    pub sessions: AtomicU64,
    pub handshakes_ok: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub hello_verify_requests: AtomicU64,
    /// Datagrams dropped: stray records, ClientHellos over a bound, garbage.
    pub dropped: AtomicU64,
    pub evicted_idle: AtomicU64,
}

/// The result of one datagram: records to send back to the peer, and decrypted application data.
#[derive(Debug, Default)]
pub struct Output {
    pub datagrams: Vec<Vec<u8>>,
    pub app_data: Vec<Vec<u8>>,
    /// The peer's identity when `app_data` is not empty.
    pub peer: Option<Arc<PeerInfo>>,
}

struct Session {
    stream: SslStream<Pipe>,
    peer: SocketAddr,
    established: Option<Arc<PeerInfo>>,
    started: Instant,
    last_active: Instant,
}

/// Cookie secrets: the current one and the one before, rotated every `lifetime`.
struct CookieSecrets {
    current: [u8; 32],
    previous: [u8; 32],
    rotated: Instant,
}

struct CookieJar {
    secrets: RwLock<CookieSecrets>,
    /// The peer whose ClientHello the listener is processing (the callbacks only get the `Ssl`).
    peer: Mutex<Option<SocketAddr>>,
}

impl CookieJar {
    fn cookie(secret: &[u8; 32], peer: SocketAddr) -> Result<Vec<u8>, ErrorStack> {
        let key = PKey::hmac(secret)?;
        let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
        match peer.ip() {
            IpAddr::V4(ip) => signer.update(&ip.octets())?,
            IpAddr::V6(ip) => signer.update(&ip.octets())?,
        }
        signer.update(&peer.port().to_be_bytes())?;
        let mut mac = signer.sign_to_vec()?;
        mac.truncate(16);
        Ok(mac)
    }

    fn current_peer(&self) -> Option<SocketAddr> {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generate(&self, out: &mut [u8]) -> Result<usize, ErrorStack> {
        let peer = self.current_peer().ok_or_else(ErrorStack::get)?;
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let cookie = CookieJar::cookie(&secrets.current, peer)?;
        let n = cookie.len().min(out.len());
        out[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    }

    fn verify(&self, cookie: &[u8]) -> bool {
        let Some(peer) = self.current_peer() else { return false };
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        [&secrets.current, &secrets.previous].into_iter().any(|secret| {
            CookieJar::cookie(secret, peer)
                .map(|c| c.len() == cookie.len() && openssl::memcmp::eq(&c, cookie))
                .unwrap_or(false)
        })
    }

    fn rotate_if_due(&self, now: Instant, lifetime: Duration) {
        let mut secrets = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(secrets.rotated) >= lifetime {
            secrets.previous = secrets.current;
            openssl::rand::rand_bytes(&mut secrets.current).expect("OpenSSL random generator");
            secrets.rotated = now;
        }
    }
}

#[allow(non_camel_case_types)]
type BIO_ADDR = std::ffi::c_void;
unsafe extern "C" {
    fn DTLSv1_listen(s: *mut openssl_sys::SSL, client: *mut BIO_ADDR) -> std::ffi::c_int;
    fn BIO_ADDR_new() -> *mut BIO_ADDR;
    fn BIO_ADDR_free(a: *mut BIO_ADDR);
}
const DTLS_CTRL_HANDLE_TIMEOUT: std::ffi::c_int = 74;

/// A DTLS 1.2 server without I/O: feed it datagrams with their source, send what it returns.
pub struct DtlsServer {
    ctx: SslContext,
    config: ServerConfig,
    cookies: Arc<CookieJar>,
    listener: Option<SslStream<Pipe>>,
    sessions: HashMap<SessionKey, Session>,
    handshaking: usize,
    handshaking_per_ip: HashMap<IpAddr, usize>,
    pub stats: Arc<DtlsStats>,
}

impl DtlsServer {
    pub fn new(config: ServerConfig) -> Result<DtlsServer, ErrorStack> {
        let mut secrets = CookieSecrets { current: [0; 32], previous: [0; 32], rotated: Instant::now() };
        openssl::rand::rand_bytes(&mut secrets.current)?;
        openssl::rand::rand_bytes(&mut secrets.previous)?;
        let cookies = Arc::new(CookieJar { secrets: RwLock::new(secrets), peer: Mutex::new(None) });
        let ctx = build_context(&config, cookies.clone())?;
        Ok(DtlsServer {
            ctx,
            config,
            cookies,
            listener: None,
            sessions: HashMap::new(),
            handshaking: 0,
            handshaking_per_ip: HashMap::new(),
            stats: Arc::new(DtlsStats::default()),
        })
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Processes one datagram from `peer`.
    pub fn handle(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant) -> Output {
        let key = SessionKey::Addr(peer);
        let hello = record::is_client_hello(datagram);
        let mut out = Output::default();
        // The cookie callbacks (in DTLSv1_listen, and again when the handshake goes on) see
        // only the `Ssl`; they read the peer from here.
        *self.cookies.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
        match self.sessions.get_mut(&key) {
            // An epoch-0 ClientHello to an address with an established session is a client that
            // restarted (RFC 6347 §4.2.8): it gets a new session once its cookie is proven, and
            // the old one stays until then.
            Some(session) if !(hello && session.established.is_some()) => {
                session.stream.get_mut().put(datagram);
                session.last_active = now;
                self.drive(key, &mut out);
            }
            _ if hello => self.listen(key, peer, datagram, now, &mut out),
            _ => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        *self.cookies.peer.lock().unwrap_or_else(|e| e.into_inner()) = None;
        out
    }

    /// Encrypts `data` for `peer`'s established session; the records to send, or `None` when
    /// there is no such session.
    pub fn send(&mut self, peer: SocketAddr, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        let session = self.sessions.get_mut(&SessionKey::Addr(peer))?;
        session.established.as_ref()?;
        let result = session.stream.ssl_write(data);
        let records = session.stream.get_mut().take_outbox();
        match result {
            Ok(_) => Some(records),
            Err(e) => {
                tracing_free_log(&format!("dtls write to {peer} failed: {e}"));
                Some(records)
            }
        }
    }

    /// Timers: handshake retransmissions and timeouts, idle eviction, cookie secret rotation.
    /// Call every few hundred milliseconds; returns records to send.
    pub fn tick(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        self.cookies.rotate_if_due(now, self.config.cookie_lifetime);
        let mut expired = Vec::new();
        let mut outgoing = Vec::new();
        for (key, session) in self.sessions.iter_mut() {
            match session.established {
                None if now.duration_since(session.started) > self.config.handshake_timeout => expired.push((*key, false)),
                None => {
                    unsafe {
                        openssl_sys::SSL_ctrl(session.stream.ssl().as_ptr(), DTLS_CTRL_HANDLE_TIMEOUT, 0, std::ptr::null_mut());
                    }
                    let _ = ErrorStack::get();
                    for d in session.stream.get_mut().take_outbox() {
                        outgoing.push((session.peer, d));
                    }
                }
                Some(_) if now.duration_since(session.last_active) > self.config.idle_timeout => expired.push((*key, true)),
                Some(_) => {}
            }
        }
        for (key, idle) in expired {
            let counter = if idle { &self.stats.evicted_idle } else { &self.stats.handshakes_failed };
            counter.fetch_add(1, Ordering::Relaxed);
            self.remove(key);
        }
        outgoing
    }

    fn listen(&mut self, key: SessionKey, peer: SocketAddr, datagram: &[u8], now: Instant, out: &mut Output) {
        let established = self.sessions.get(&key).is_some_and(|s| s.established.is_some());
        let new_sessions = self.sessions.len() - usize::from(established);
        let per_ip = self.handshaking_per_ip.get(&peer.ip()).copied().unwrap_or(0);
        if new_sessions >= self.config.max_sessions
            || self.handshaking >= self.config.max_handshakes
            || per_ip >= self.config.max_handshakes_per_ip
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.listener.is_none() {
            match self.new_stream() {
                Ok(s) => self.listener = Some(s),
                Err(e) => {
                    tracing_free_log(&format!("dtls: cannot create a session: {e}"));
                    return;
                }
            }
        }
        let listener = self.listener.as_mut().expect("listener just created");
        listener.get_mut().put(datagram);
        let result = unsafe {
            let addr = BIO_ADDR_new();
            let r = DTLSv1_listen(listener.ssl().as_ptr(), addr);
            BIO_ADDR_free(addr);
            r
        };
        listener.get_mut().clear();
        let replies = listener.get_mut().take_outbox();
        match result {
            1 => {
                let stream = self.listener.take().expect("listener present");
                if established {
                    self.remove(key);
                }
                self.sessions.insert(key, Session { stream, peer, established: None, started: now, last_active: now });
                self.handshaking += 1;
                *self.handshaking_per_ip.entry(peer.ip()).or_default() += 1;
                self.stats.sessions.store(self.sessions.len() as u64, Ordering::Relaxed);
                out.datagrams.extend(replies);
                self.drive(key, out);
            }
            0 => {
                if !replies.is_empty() {
                    self.stats.hello_verify_requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                out.datagrams.extend(replies);
            }
            _ => {
                // A fatal error leaves the listener in an unknown state: start a fresh one.
                let _ = ErrorStack::get();
                self.listener = None;
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn new_stream(&self) -> Result<SslStream<Pipe>, ErrorStack> {
        let mut ssl = Ssl::new(&self.ctx)?;
        ssl.set_accept_state();
        ssl.set_mtu(self.config.mtu)?;
        SslStream::new(ssl, Pipe::default())
    }

    /// Runs the handshake or reads application data after new input.
    fn drive(&mut self, key: SessionKey, out: &mut Output) {
        let Some(session) = self.sessions.get_mut(&key) else { return };
        let mut failed = false;
        if session.established.is_none() {
            match session.stream.do_handshake() {
                Ok(()) => {
                    let ssl = session.stream.ssl();
                    let info = PeerInfo {
                        psk_identity: ssl.psk_identity().map(<[u8]>::to_vec),
                        certificate: ssl.peer_certificate(),
                    };
                    session.established = Some(Arc::new(info));
                    self.handshaking -= 1;
                    let ip = session.peer.ip();
                    if let Some(n) = self.handshaking_per_ip.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.handshaking_per_ip.remove(&ip);
                        }
                    }
                    self.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                Err(e) => {
                    tracing_free_log(&format!("dtls handshake with {} failed: {e}", session.peer));
                    self.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    failed = true;
                }
            }
        }
        if !failed && session.established.is_some() {
            let mut buf = [0u8; 16_384];
            loop {
                match session.stream.ssl_read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.app_data.push(buf[..n].to_vec()),
                    Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => break,
                    Err(_) => {
                        // close_notify or a fatal alert: the session is over.
                        failed = true;
                        break;
                    }
                }
            }
            if !out.app_data.is_empty() {
                out.peer = session.established.clone();
            }
        }
        session.stream.get_mut().clear();
        out.datagrams.append(&mut session.stream.get_mut().take_outbox());
        if failed {
            self.remove(key);
        }
    }

    fn remove(&mut self, key: SessionKey) {
        if let Some(session) = self.sessions.remove(&key)
            && session.established.is_none()
        {
            self.handshaking -= 1;
            let ip = session.peer.ip();
            if let Some(n) = self.handshaking_per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.handshaking_per_ip.remove(&ip);
                }
            }
        }
        self.stats.sessions.store(self.sessions.len() as u64, Ordering::Relaxed);
    }
}

/// This crate has no logging dependency; failures are counted in [`DtlsStats`] and, with
/// `COAPGATE_DTLS_DEBUG` set, printed to stderr for diagnosis.
fn tracing_free_log(message: &str) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("COAPGATE_DTLS_DEBUG").is_some()) {
        eprintln!("{message}");
    }
}

fn build_context(config: &ServerConfig, cookies: Arc<CookieJar>) -> Result<SslContext, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::dtls_server())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_RENEGOTIATION);
    b.set_mode(SslMode::RELEASE_BUFFERS);
    b.set_cipher_list(&config.ciphers)?;
    b.set_session_id_context(b"coapgate")?;
    if let Some(credentials) = &config.credentials {
        b.set_private_key(&credentials.key)?;
        b.set_certificate(&credentials.chain[0])?;
        for ca in &credentials.chain[1..] {
            b.add_extra_chain_cert(ca.clone())?;
        }
        b.check_private_key()?;
    }
    // Client certificates are wanted, not required, and authenticate nothing by themselves:
    // any chain is accepted, but the client's own certificate must be within its validity
    // period unless that check is switched off.
    let skip_validity = config.skip_client_cert_validity;
    b.set_verify_callback(SslVerifyMode::PEER, move |_preverified, ctx: &mut X509StoreContextRef| {
        if skip_validity || ctx.error_depth() != 0 {
            return true;
        }
        let Some(cert) = ctx.current_cert() else { return true };
        let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else { return false };
        if cert.not_after() < now {
            // SAFETY: a defined X509_V_ERR_* code.
            ctx.set_error(unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED) });
            return false;
        }
        if cert.not_before() > now {
            // SAFETY: a defined X509_V_ERR_* code.
            ctx.set_error(unsafe { X509VerifyResult::from_raw(openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID) });
            return false;
        }
        true
    });
    if let Some(psk) = config.psk.clone() {
        b.set_psk_server_callback(move |_ssl, identity, key_out| {
            let key = identity.and_then(|id| psk.psk_key(id));
            match key {
                Some(key) if key.len() <= key_out.len() => {
                    key_out[..key.len()].copy_from_slice(&key);
                    Ok(key.len())
                }
                // 0 = unknown identity: the handshake fails with unknown_psk_identity.
                _ => Ok(0),
            }
        });
    }
    let jar = cookies.clone();
    b.set_cookie_generate_cb(move |_ssl, out| jar.generate(out));
    b.set_cookie_verify_cb(move |_ssl, cookie| cookies.verify(cookie));
    Ok(b.build())
}
