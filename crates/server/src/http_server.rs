//! The HTTP(S) server of the REST API and web console: our own accept loop over hyper's HTTP/1
//! connection, because `axum::serve` has neither timeouts nor a connection cap.
//!
//! Every connection holds a permit of one semaphore ([`HttpSettings::max_connections`]), so the
//! process keeps descriptors for its databases however many clients connect. At the cap a new
//! connection takes the place of the oldest one that is not being served (idle between requests,
//! or still sending its request head), as nginx drains idle keep-alive connections when it runs
//! out: thousands of silent connections cannot lock the API away from a client that sends its
//! request at once. When every connection is handling a request, the newcomer is answered `503`
//! (plain HTTP) or closed (HTTPS) at once. A watchdog per connection closes it when it is slow to
//! send a request's head or body (slowloris) or idle between requests too long; a request being
//! handled is never cut.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::config::{DtlsCredentials, HttpSettings, ServerCredentials};

/// The answer to a connection beyond the cap: written without reading the request, then closed.
const BUSY_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n";

/// Most connections the automatic cap allows, whatever the descriptor limit (Tomcat's, and so
/// ThingsBoard's, default `max-connections`).
const AUTO_MAX_CONNECTIONS: usize = 8192;

/// How long open connections get to finish their requests after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The HTTP server's state, shared by the accept loop and every connection task.
pub struct HttpServer {
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    /// The connection cap: the accept loop takes a permit per connection and the connection's
    /// task drops it when the socket is closed.
    permits: Arc<Semaphore>,
    /// The open connections in accept order (the key), so that the cap can close the oldest one
    /// not being served.
    open: Arc<Mutex<BTreeMap<u64, Arc<Activity>>>>,
    max_connections: usize,
    /// `Some` for HTTPS.
    tls: Option<Arc<SslAcceptor>>,
}

impl HttpServer {
    /// The descriptor limit is first raised to its hard maximum (as Go's runtime does), and
    /// `settings.max_connections == 0` takes half of it: HTTP connections must not take the
    /// descriptors that the writer and the compactor need to open their databases.
    pub fn new(listener: TcpListener, app: Router, settings: HttpSettings, tls: Option<SslAcceptor>) -> HttpServer {
        let descriptors = raise_descriptor_limit();
        let max_connections = match settings.max_connections {
            0 => (descriptors / 2).clamp(16, AUTO_MAX_CONNECTIONS),
            n => {
                if n > descriptors / 2 {
                    tracing::warn!(
                        "HTTP_MAX_CONNECTIONS={n} leaves few of the {descriptors} descriptors allowed (ulimit -n) to the databases"
                    );
                }
                n
            }
        };
        tracing::info!("HTTP server: at most {max_connections} connections (HTTP_MAX_CONNECTIONS)");
        HttpServer {
            listener,
            app,
            settings,
            permits: Arc::new(Semaphore::new(max_connections)),
            open: Arc::default(),
            max_connections,
            tls: tls.map(Arc::new),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Accepts connections until `shutdown` completes, then lets open ones finish their requests
    /// (at most [`SHUTDOWN_GRACE`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut last_refusal_log: Option<Instant> = None;
        let mut next_id = 0u64;
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors (EMFILE/ENFILE) or a connection reset before it was
                        // accepted: wait a little rather than spin, and keep serving.
                        tracing::debug!("HTTP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                // The evicted connection's task returns its permit as soon as it runs.
                Err(_) if self.evict_oldest_unserved() => {
                    tokio::time::timeout(Duration::from_secs(1), self.permits.clone().acquire_owned()).await.ok().and_then(Result::ok)
                }
                Err(_) => None,
            };
            let Some(permit) = permit else {
                if last_refusal_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("HTTP_MAX_CONNECTIONS: {} connections open and busy, refusing new ones", self.max_connections);
                    last_refusal_log = Some(Instant::now());
                }
                if self.tls.is_none() {
                    let _ = stream.try_write(BUSY_RESPONSE);
                }
                continue;
            };
            next_id += 1;
            let activity = Arc::new(Activity::new());
            self.open.lock().unwrap().insert(next_id, activity.clone());
            let connection = Connection {
                app: self.app.clone(),
                settings: self.settings.clone(),
                tls: self.tls.clone(),
                peer,
                activity,
                stop: stop_rx.clone(),
                _registration: Registration { id: next_id, open: self.open.clone(), _permit: permit },
            };
            tokio::spawn(connection.run(stream));
        }
        let _ = stop_tx.send(true);
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.permits.acquire_many(all)).await;
    }

    /// Tells the oldest connection that is not handling a request to close; false when every
    /// connection is handling one.
    fn evict_oldest_unserved(&self) -> bool {
        let open = self.open.lock().unwrap();
        for activity in open.values() {
            let unserved = !matches!(*activity.phase.lock().unwrap(), Phase::Busy { .. });
            if unserved && !activity.evicted.swap(true, Ordering::Relaxed) {
                activity.evict.notify_one();
                return true;
            }
        }
        false
    }
}

/// A connection's place under the cap: dropped when its task ends, whatever the reason.
struct Registration {
    id: u64,
    open: Arc<Mutex<BTreeMap<u64, Arc<Activity>>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.open.lock().unwrap().remove(&self.id);
    }
}

/// One accepted connection: its task owns it from the TLS handshake to the close.
struct Connection {
    app: Router,
    settings: HttpSettings,
    tls: Option<Arc<SslAcceptor>>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// Becomes `true` on shutdown: finish the request in progress, then close.
    stop: watch::Receiver<bool>,
    /// Returned to the cap when the connection is dropped.
    _registration: Registration,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let io = Tracked { inner: stream, activity: self.activity.clone() };
        let activity = self.activity.clone();
        let (peer, settings) = (self.peer, self.settings.clone());
        let serve = async move {
            match self.tls.clone() {
                None => self.serve_http(io).await,
                Some(acceptor) => {
                    let Ok(ssl) = Ssl::new(acceptor.context()) else { return };
                    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, io) else { return };
                    if let Err(e) = Pin::new(&mut tls).accept().await {
                        tracing::debug!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                    self.serve_http(tls).await
                }
            }
        };
        // Dropping the connection's future closes the socket; the watchdog only ends while no
        // request is being handled.
        tokio::select! {
            _ = serve => {}
            reason = activity.watchdog(&settings) => tracing::debug!("closing HTTP connection from {peer}: {reason}"),
            _ = activity.evict.notified() => tracing::debug!("closing HTTP connection from {peer}: a newcomer needs its place (HTTP_MAX_CONNECTIONS)"),
        }
    }

    async fn serve_http<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut self, io: I) {
        let router = TowerToHyperService::new(self.app.clone());
        let (activity, peer) = (self.activity.clone(), self.peer);
        let body_timeout = self.settings.header_read_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| TimedBody { inner: body, deadline: Box::pin(tokio::time::sleep(body_timeout)) });
            // What `into_make_service_with_connect_info` gives handlers.
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let busy = activity.request_started();
            let response = router.call(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        // hyper's own header timer would count idle keep-alive time as header time; the
        // watchdog keeps the two apart.
        let connection = hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(io), service)
            // The WebSocket API (`/api/ws`) takes the connection over after its 101 answer.
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("HTTP connection from {peer}: {e}");
                }
                return;
            }
            _ = self.stop.wait_for(|stop| *stop) => connection.as_mut().graceful_shutdown(),
        }
        let _ = connection.await;
    }
}

/// A request body that must arrive whole within a deadline from the end of the head: a trickled
/// body holds a connection as a trickled head does. The handler sees a body error (axum answers
/// 400) and hyper closes the connection, whose body was not read to its end.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body did not arrive within HTTP_HEADER_READ_TIMEOUT_MS".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a connection is in its request cycle, as the watchdog sees it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the rest of a request's headers (or the TLS handshake), since `since`.
    Head { since: Instant },
    /// Requests being handled; no timeout applies.
    Busy { requests: usize },
    /// Between requests: the last response was finished (or its last byte written) at `since`.
    Idle { since: Instant },
}

/// A connection's phase, moved by its reads and writes ([`Tracked`]) and by its service.
struct Activity {
    phase: Mutex<Phase>,
    /// Set once by the accept loop when it chose this connection to make room at the cap.
    evicted: AtomicBool,
    evict: Notify,
}

/// Marks a request in progress; dropping it (when the response is ready) ends it.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase.lock().unwrap();
        *phase = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy { requests: requests - 1 },
            _ => Phase::Idle { since: Instant::now() },
        };
    }
}

impl Activity {
    fn new() -> Activity {
        Activity { phase: Mutex::new(Phase::Head { since: Instant::now() }), evicted: AtomicBool::new(false), evict: Notify::new() }
    }

    fn request_started(self: &Arc<Activity>) -> Busy {
        let mut phase = self.phase.lock().unwrap();
        *phase = match *phase {
            Phase::Busy { requests } => Phase::Busy { requests: requests + 1 },
            _ => Phase::Busy { requests: 1 },
        };
        Busy(self.clone())
    }

    /// Bytes arrived: the first byte after an idle period starts a request's head.
    fn bytes_read(&self) {
        let mut phase = self.phase.lock().unwrap();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head { since: Instant::now() };
        }
    }

    /// Bytes left: a response still streaming after its handler returned is not idleness.
    fn bytes_written(&self) {
        let mut phase = self.phase.lock().unwrap();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Idle { since: Instant::now() };
        }
    }

    /// Completes when the connection has been too slow or idle too long; says which.
    async fn watchdog(&self, settings: &HttpSettings) -> &'static str {
        loop {
            let phase = *self.phase.lock().unwrap();
            let (deadline, reason) = match phase {
                Phase::Head { since } => (since + settings.header_read_timeout, "HTTP_HEADER_READ_TIMEOUT_MS passed"),
                Phase::Idle { since } => (since + settings.keep_alive_timeout, "HTTP_KEEP_ALIVE_TIMEOUT_MS passed"),
                // Look again later: the request's end moves the phase on.
                Phase::Busy { .. } => {
                    let recheck = settings.header_read_timeout.min(settings.keep_alive_timeout);
                    tokio::time::sleep(recheck).await;
                    continue;
                }
            };
            if Instant::now() >= deadline {
                // The phase may have moved while we slept towards a stale deadline.
                let current = *self.phase.lock().unwrap();
                if same_phase(current, phase) {
                    return reason;
                }
                continue;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

fn same_phase(a: Phase, b: Phase) -> bool {
    match (a, b) {
        (Phase::Head { since: x }, Phase::Head { since: y }) | (Phase::Idle { since: x }, Phase::Idle { since: y }) => x == y,
        _ => false,
    }
}

/// The TCP stream, reporting its traffic to the connection's [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result
            && buf.filled().len() > before
        {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.activity.bytes_written();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result
            && n > 0
        {
            self.activity.bytes_written();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Most WebSocket sessions open at once: a quarter of the descriptor limit (at most 8,192).
/// An upgraded connection leaves the HTTP connection cap (its hyper connection has ended), so
/// the sessions have a cap of their own; with the HTTP cap's half, the databases keep a quarter.
pub fn websocket_session_cap() -> usize {
    (raise_descriptor_limit() / 4).clamp(16, AUTO_MAX_CONNECTIONS)
}

/// Raises the soft limit on open descriptors to the hard limit and returns it.
pub(crate) fn raise_descriptor_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// The HTTPS acceptor from the `SSL_*` credentials, loaded with the DTLS endpoint's key store
/// reader; an error names the setting to fix.
pub fn tls_acceptor(credentials: &ServerCredentials) -> anyhow::Result<SslAcceptor> {
    use coapgate_dtls::CredentialsError as E;
    let p = credentials.prefix;
    let loaded = match &credentials.source {
        DtlsCredentials::KeyStore { path, store_type, store_password, key_password, alias } => {
            coapgate_dtls::keystore::load_key_store(path, *store_type, store_password, key_password, alias).map_err(|e| {
                let setting = match &e {
                    E::Unreadable { .. } | E::Format(_) => "KEY_STORE",
                    E::WrongStorePassword(_) => "KEY_STORE_PASSWORD",
                    E::WrongKeyPassword(_) => "KEY_PASSWORD",
                    E::NoSuchAlias { .. } => "KEY_ALIAS",
                };
                anyhow::anyhow!("{p}{setting}: {e}")
            })?
        }
        DtlsCredentials::Pem { cert, key, key_password } => {
            coapgate_dtls::keystore::load_pem(cert, key, key_password).map_err(|e| {
                let setting = match &e {
                    E::Unreadable { path, .. } if *path == cert.display().to_string() => "PEM_CERT",
                    E::Format(text) if text.contains("holds no PEM certificate") => "PEM_CERT",
                    E::WrongKeyPassword(_) => "PEM_KEY_PASSWORD",
                    _ => "PEM_KEY",
                };
                anyhow::anyhow!("{p}{setting}: {e}")
            })?
        }
    };
    let setting = match credentials.source {
        DtlsCredentials::KeyStore { .. } => "KEY_STORE",
        DtlsCredentials::Pem { .. } => "PEM_CERT",
    };
    let build = || -> Result<SslAcceptor, openssl::error::ErrorStack> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        builder.set_private_key(&loaded.key)?;
        builder.set_certificate(&loaded.chain[0])?;
        for intermediate in &loaded.chain[1..] {
            builder.add_extra_chain_cert(intermediate.clone())?;
        }
        builder.check_private_key()?;
        Ok(builder.build())
    };
    build().with_context(|| format!("{p}{setting}: OpenSSL refused the credentials"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HttpSettings {
        HttpSettings { header_read_timeout: Duration::from_secs(20), keep_alive_timeout: Duration::from_secs(60), max_connections: 4 }
    }

    /// Runs the watchdog on paused time; returns its reason and the time it took.
    async fn watch(activity: &Arc<Activity>) -> (&'static str, Duration) {
        let started = Instant::now();
        let reason = activity.watchdog(&settings()).await;
        (reason, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_has_the_header_timeout() {
        let activity = Arc::new(Activity::new());
        assert_eq!(watch(&activity).await, ("HTTP_HEADER_READ_TIMEOUT_MS passed", Duration::from_secs(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_cut_and_idleness_starts_at_its_end() {
        let activity = Arc::new(Activity::new());
        let busy = activity.request_started();
        let ended = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(500)).await;
            drop(busy);
            Instant::now()
        });
        let (reason, _) = watch(&activity).await;
        let ended = ended.await.unwrap();
        assert_eq!((reason, Instant::now() - ended), ("HTTP_KEEP_ALIVE_TIMEOUT_MS passed", Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_after_idleness_starts_the_header_timeout() {
        let activity = Arc::new(Activity::new());
        drop(activity.request_started());
        let poke = {
            let activity = activity.clone();
            tokio::spawn(async move {
                // Written bytes (a response still streaming) keep an idle connection alive.
                tokio::time::sleep(Duration::from_secs(50)).await;
                activity.bytes_written();
                tokio::time::sleep(Duration::from_secs(50)).await;
                activity.bytes_read();
            })
        };
        assert_eq!(watch(&activity).await, ("HTTP_HEADER_READ_TIMEOUT_MS passed", Duration::from_secs(120)));
        poke.await.unwrap();
    }
}
