//! A CoAP endpoint: the message layer and the hand-off to the pipeline, over one transport —
//! plain UDP, or DTLS (whose receive loop in `dtls_endpoint` hands decrypted datagrams to the
//! very same [`CoapEndpoint::handle_datagram`], and whose sends are encrypted per session).
//!
//! The receive loop only parses, deduplicates, routes and submits; it never waits on a script or
//! the database. Each accepted uplink travels socket → script pool → writer → commit, and carries
//! a [`Responder`] that answers the peer from whichever thread learns the answer (the writer's
//! sync thread for a stored uplink): piggybacked in the ACK when the answer comes within the
//! piggyback window. A sweeper task acknowledges CONs still unanswered after that window with an
//! empty ACK, and their answer then goes out as a separate confirmable response. No task, timer
//! or channel per request: those hand-offs cost more CPU than the rest of the message layer.
//!
//! Bounds: `max_in_flight` caps the uplinks accepted but not yet answered (above it: 5.03 with
//! Max-Age), and the script and writer queues are bounded too (full: 5.03), so memory between
//! the socket and the disk is bounded under any load.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coapgate_coap::message::option::{URI_PATH, URI_QUERY};
use coapgate_coap::message::{Code, Message, MessageType, Token};
use coapgate_coap::keys::ExchangeKey;
use coapgate_coap::{Block1Assembler, Block1Config, Block1Outcome, DedupCache, DedupConfig, Lookup, params};
use coapgate_script::EnginePool;
use coapgate_storage::model::Exchange;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use coapgate_dtls::PeerInfo;

use crate::dtls_endpoint::DtlsTransport;
use crate::pipeline::Pipeline;
use crate::registry::{Registry, Route, SecurityMode};

/// Seconds a client should wait before retrying after a 5.03.
const OVERLOAD_MAX_AGE_SECS: u32 = 1;

/// The critical options (odd numbers, RFC 7252 §5.4.1) this server understands: RFC 7252's and
/// RFC 7959's Block1/Block2. Any other critical option in a request is answered 4.02 Bad Option.
const RECOGNIZED_CRITICAL_OPTIONS: [u16; 11] = {
    use coapgate_coap::message::option::*;
    [IF_MATCH, URI_HOST, IF_NONE_MATCH, URI_PORT, URI_PATH, URI_QUERY, ACCEPT, BLOCK2, BLOCK1, PROXY_URI, PROXY_SCHEME]
};

/// The answer to one request, before it is framed as ACK, NON or separate CON.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: Code,
    pub payload: Vec<u8>,
    pub max_age: Option<u32>,
    pub content_format: Option<u32>,
}

impl Reply {
    pub fn new(code: Code, text: &str) -> Reply {
        Reply { code, payload: text.as_bytes().to_vec(), max_age: None, content_format: None }
    }

    pub fn created() -> Reply {
        Reply::new(Code::CREATED, "")
    }

    pub fn overloaded() -> Reply {
        Reply {
            code: Code::SERVICE_UNAVAILABLE,
            payload: b"server overloaded".to_vec(),
            max_age: Some(OVERLOAD_MAX_AGE_SECS),
            content_format: None,
        }
    }

    /// A 4.00 with a short diagnostic; devices have tiny buffers, the full text goes to the logs.
    pub fn bad_request(text: &str) -> Reply {
        let short: String = text.chars().take(120).collect();
        Reply::new(Code::BAD_REQUEST, &short)
    }
}

/// Counters of the endpoint, read by logs, tests and metrics.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub datagrams: AtomicU64,
    pub malformed: AtomicU64,
    pub duplicates: AtomicU64,
    /// Requests whose Message ID came back with another token while remembered: new requests.
    pub reused_ids: AtomicU64,
    pub uplinks_ok: AtomicU64,
    pub uplinks_failed: AtomicU64,
    pub overloaded: AtomicU64,
}

pub struct EndpointConfig {
    pub piggyback_timeout: Duration,
    pub max_in_flight: usize,
    pub dedup: DedupConfig,
    pub block1: Block1Config,
    /// Where the exchanges of stored uplinks are durably logged, for the retransmissions the
    /// deduplication cache can no longer answer from memory ([`Lookup::Unsure`]).
    pub exchange_log: Option<Arc<dyn coapgate_storage::ExchangeLog>>,
}

/// Durable-log lookups in progress at once (each on a blocking thread, never the receive
/// loop); above it an unsure request gets 5.03 and its retransmission tries again.
const MAX_EXCHANGE_LOOKUPS: usize = 4;

/// How an endpoint's datagrams travel.
pub enum Transport {
    /// A blocking socket: one thread receives on it in batches, any thread sends (see udp_io).
    Udp(Arc<std::net::UdpSocket>),
    Dtls(Arc<DtlsTransport>),
}

/// Shared state of the endpoint. Response tasks hold it through an `Arc`.
pub struct CoapEndpoint {
    transport: Transport,
    registry: Arc<Registry>,
    pool: Arc<EnginePool>,
    pipeline: Pipeline,
    config: EndpointConfig,
    /// Block-wise uploads in progress, bounded in total and per peer.
    block1: Mutex<Block1Assembler>,
    /// Exchanges seen within EXCHANGE_LIFETIME; a std mutex because it is held for microseconds
    /// and never across an await.
    dedup: Mutex<DedupCache>,
    /// Uplinks accepted and not yet answered, against `config.max_in_flight`.
    in_flight: AtomicUsize,
    /// Durable-log lookups in progress, against [`MAX_EXCHANGE_LOOKUPS`].
    lookups: AtomicUsize,
    /// Message ids for the NON and separate CON responses this server originates.
    next_message_id: AtomicU16,
    /// Separate responses waiting for the peer's ACK or RST, by (peer, message id).
    awaiting_ack: Mutex<HashMap<ExchangeKey, oneshot::Sender<()>>>,
    /// Confirmable uplinks in flight, by (peer, message id): when each arrived, and whether the
    /// sweeper has already sent its empty ACK (then its answer goes out as a separate response).
    unanswered: Mutex<HashMap<ExchangeKey, Unanswered>>,
    /// The runtime for work the answering thread must not do itself (separate responses with
    /// their retransmissions).
    runtime: Option<Handle>,
    pub stats: EndpointStats,
    /// Whether this endpoint is the DTLS one, which decides the security-mode checks.
    secure: bool,
}

/// Whose request this is, beyond the address: the DTLS session's peer, if any.
type Auth<'a> = Option<&'a PeerInfo>;

/// A confirmable uplink not answered yet; see [`CoapEndpoint::unanswered`].
struct Unanswered {
    since: Instant,
    acked: bool,
}

/// Answers one uplink, exactly once, from any thread. Dropped without an answer (a worker lost
/// the job), it answers 5.00 so the device is never left waiting and the in-flight slot is freed.
pub struct Responder {
    endpoint: Arc<CoapEndpoint>,
    /// The request without its payload: what framing the answer needs.
    request: Message,
    peer: SocketAddr,
    /// The success answer, framed when the request arrived (and stored with the uplink).
    created: Arc<[u8]>,
    answered: bool,
}

impl Responder {
    pub fn send(mut self, reply: Reply) {
        self.answer(reply);
    }

    /// Answers a retransmission whose first copy another node stored with the response stored
    /// there, so the device gets the same bytes whichever node its copies reached.
    pub fn replay(mut self, stored: Vec<u8>) {
        self.created = stored.into();
        self.answer(Reply::created());
    }

    fn answer(&mut self, reply: Reply) {
        if !std::mem::replace(&mut self.answered, true) {
            self.endpoint.answer_uplink(&self.request, self.peer, reply, &self.created);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.answer(Reply::new(Code::INTERNAL_SERVER_ERROR, "uplink processing was interrupted"));
    }
}

impl CoapEndpoint {
    pub fn new(
        socket: std::net::UdpSocket,
        registry: Arc<Registry>,
        pool: Arc<EnginePool>,
        pipeline: Pipeline,
        config: EndpointConfig,
    ) -> Arc<CoapEndpoint> {
        CoapEndpoint::with_transport(Transport::Udp(Arc::new(socket)), registry, pool, pipeline, config)
    }

    /// An endpoint over `transport`; a DTLS transport makes it the secure endpoint.
    pub fn with_transport(
        transport: Transport,
        registry: Arc<Registry>,
        pool: Arc<EnginePool>,
        pipeline: Pipeline,
        config: EndpointConfig,
    ) -> Arc<CoapEndpoint> {
        let secure = matches!(transport, Transport::Dtls(_));
        Arc::new(CoapEndpoint {
            transport,
            registry,
            pool,
            pipeline,
            dedup: Mutex::new(DedupCache::new(config.dedup)),
            block1: Mutex::new(Block1Assembler::new(config.block1)),
            config,
            in_flight: AtomicUsize::new(0),
            lookups: AtomicUsize::new(0),
            next_message_id: AtomicU16::new(rand::random()),
            awaiting_ack: Mutex::new(HashMap::new()),
            unanswered: Mutex::new(HashMap::new()),
            runtime: Handle::try_current().ok(),
            stats: EndpointStats::default(),
            secure,
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn dedup_len(&self) -> usize {
        self.dedup.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Peers whose message ids have a table of their own (see `DedupCache::dense_peers`).
    pub fn dedup_dense_peers(&self) -> usize {
        self.dedup.lock().unwrap_or_else(|e| e.into_inner()).dense_peers()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.transport {
            Transport::Udp(socket) => socket.local_addr(),
            Transport::Dtls(dtls) => dtls.local_addr(),
        }
    }

    /// The DTLS transport, for the DTLS endpoint.
    pub fn dtls(&self) -> Option<&Arc<DtlsTransport>> {
        match &self.transport {
            Transport::Dtls(dtls) => Some(dtls),
            Transport::Udp(_) => None,
        }
    }

    /// The receive loop. Errors on one datagram never end it. Plain UDP is received on its own
    /// thread, many datagrams per system call, and the immediate answers to one batch (replays,
    /// errors) leave in one call too.
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().sweep_unanswered());
        let socket = match &self.transport {
            Transport::Udp(socket) => socket.clone(),
            Transport::Dtls(dtls) => return crate::dtls_endpoint::run(self.clone(), dtls.clone()).await,
        };
        let endpoint = self.clone();
        let spawned = std::thread::Builder::new().name("coap-receive".into()).spawn(move || {
            let mut batch = crate::udp_io::RecvBatch::default();
            loop {
                match batch.recv(&socket) {
                    Ok(_) => crate::udp_io::coalesce(|| {
                        for (datagram, peer) in batch.datagrams() {
                            endpoint.stats.datagrams.fetch_add(1, Ordering::Relaxed);
                            endpoint.handle_datagram(datagram, peer, None);
                        }
                    }),
                    // ICMP port-unreachable from an earlier send surfaces here on Linux; not fatal.
                    Err(e) => tracing::debug!("coap receive error: {e}"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the CoAP receive thread: {e}");
        }
    }

    fn send(&self, bytes: &[u8], peer: SocketAddr) {
        match &self.transport {
            // A blocking send: UDP sends wait only for socket buffer space, which the large
            // buffer (SOCKET_BUFFER_BYTES) and the kernel free within microseconds.
            Transport::Udp(socket) => crate::udp_io::send_to(socket, bytes, peer),
            Transport::Dtls(dtls) => dtls.send(bytes, peer),
        }
    }

    fn fresh_message_id(&self) -> u16 {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// One CoAP datagram from `peer` (decrypted already, on the DTLS endpoint, whose session
    /// says who the peer is in `auth`).
    pub(crate) fn handle_datagram(self: &Arc<Self>, datagram: &[u8], peer: SocketAddr, auth: Auth<'_>) {
        let message = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                // RFC 7252 §4.2: a malformed CON is rejected with RST; anything else is ignored.
                if let Some((MessageType::Confirmable, mid)) = e.header() {
                    self.send(&Message::reset(mid).encode(), peer);
                }
                return;
            }
        };
        match message.mtype {
            MessageType::Acknowledgement | MessageType::Reset => {
                let waiter = self.awaiting_ack.lock().unwrap_or_else(|e| e.into_inner()).remove(&ExchangeKey(peer, message.message_id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(());
                }
            }
            MessageType::Confirmable if message.code.is_empty() => {
                // CoAP ping.
                self.send(&Message::reset(message.message_id).encode(), peer);
            }
            MessageType::Confirmable | MessageType::NonConfirmable if message.code.is_request() => {
                self.handle_request(message, peer, auth);
            }
            MessageType::Confirmable => {
                // A response or reserved code in a CON is nothing we can process.
                self.send(&Message::reset(message.message_id).encode(), peer);
            }
            MessageType::NonConfirmable => {}
        }
    }

    fn handle_request(self: &Arc<Self>, request: Message, peer: SocketAddr, auth: Auth<'_>) {
        let confirmable = request.mtype == MessageType::Confirmable;
        let (lookup, reused) = {
            let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
            let before = dedup.reused_ids();
            let lookup = dedup.check_request(peer, request.message_id, request.token, confirmable, Instant::now());
            (lookup, dedup.reused_ids() != before)
        };
        if reused {
            self.stats.reused_ids.fetch_add(1, Ordering::Relaxed);
        }
        let unsure = match lookup {
            Lookup::New => false,
            Lookup::Unsure => true,
            Lookup::InProgress => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Lookup::Replay(bytes) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                self.send(&bytes, peer);
                return;
            }
            Lookup::Committed => {
                // A retransmission of a stored uplink whose entry was evicted: what was stored
                // with it is the 2.01 framed for this very request, which framing reproduces.
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                self.send(&self.frame(&request, &Reply::created()).encode(), peer);
                return;
            }
            Lookup::Full(_) => {
                self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                let reply = Reply::overloaded();
                self.send(&self.frame(&request, &reply).encode(), peer);
                return;
            }
        };
        // RFC 7252 §5.4.1: a critical option we do not understand makes the request fail as a
        // whole (4.02 for a CON, RST for a NON); it is never processed, let alone stored.
        if let Some(number) = request.unrecognized_critical_option(&RECOGNIZED_CRITICAL_OPTIONS) {
            tracing::debug!("request from {peer} with unrecognized critical option {number}");
            if !confirmable {
                let rst: Arc<[u8]> = Message::reset(request.message_id).encode().into();
                return self.answer_with(&request, peer, rst);
            }
            return self.answer_now(&request, peer, Reply::new(Code::BAD_OPTION, "Bad Option"));
        }
        match self.route(&request, auth) {
            Err(reply) => self.answer_now(&request, peer, reply),
            // Only an uplink can have been stored, so only an uplink needs the durable log.
            Ok(route) if unsure => self.look_up_exchange(request, peer, route),
            Ok(route) => self.reassemble(request, peer, route),
        }
    }

    /// An uplink the deduplication cache cannot vouch for (it may retransmit one whose entry
    /// left memory): the durable exchange log decides, on a blocking thread, since the receive
    /// loop never waits for the database. Found, it is answered with the stored response and
    /// not processed again; not found, it goes on as new.
    fn look_up_exchange(self: &Arc<Self>, request: Message, peer: SocketAddr, route: Arc<Route>) {
        let (Some(log), Some(runtime)) = (self.config.exchange_log.clone(), self.runtime.clone()) else {
            return self.reassemble(request, peer, route);
        };
        if self.lookups.fetch_add(1, Ordering::AcqRel) >= MAX_EXCHANGE_LOOKUPS {
            self.lookups.fetch_sub(1, Ordering::AcqRel);
            return self.refuse_untracked(&request, peer);
        }
        let endpoint = self.clone();
        runtime.spawn_blocking(move || {
            let since = coapgate_storage::now_millis() - coapgate_storage::sqlite::EXCHANGE_LIFETIME_MS;
            let found = log.find_exchange(&endpoint.exchange_peer(peer), request.message_id, since);
            endpoint.lookups.fetch_sub(1, Ordering::AcqRel);
            match found {
                // Stored under this id for another token: a new request that reused the id.
                Ok(Some(exchange)) if Token::of_encoded(&exchange.response) != Some(request.token) => {
                    endpoint.stats.reused_ids.fetch_add(1, Ordering::Relaxed);
                    endpoint.reassemble(request, peer, route)
                }
                Ok(Some(exchange)) => {
                    endpoint.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    let bytes: Arc<[u8]> = exchange.response.into();
                    endpoint.dedup_lock().complete_committed(peer, request.message_id, bytes.clone());
                    endpoint.send(&bytes, peer);
                }
                Ok(None) => endpoint.reassemble(request, peer, route),
                Err(e) => {
                    tracing::warn!("looking up the CoAP exchange log failed: {e:#}");
                    endpoint.refuse_untracked(&request, peer);
                }
            }
        });
    }

    /// 5.03 for a request that was tracked but cannot be decided now; forgotten, so that its
    /// retransmission is decided afresh.
    fn refuse_untracked(&self, request: &Message, peer: SocketAddr) {
        self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
        self.dedup_lock().forget(peer, request.message_id);
        self.send(&self.frame(request, &Reply::overloaded()).encode(), peer);
    }

    fn dedup_lock(&self) -> std::sync::MutexGuard<'_, DedupCache> {
        self.dedup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block-wise uploads (RFC 7959 Block1): blocks are collected until the body is complete,
    /// which then travels the pipeline like a single-datagram uplink. Also enforces the body
    /// limit on plain requests (4.13 with Size1).
    fn reassemble(self: &Arc<Self>, mut request: Message, peer: SocketAddr, route: Arc<Route>) {
        let outcome = self.block1.lock().unwrap_or_else(|e| e.into_inner()).offer(peer, &request, Instant::now());
        match outcome {
            Block1Outcome::NotBlockwise => self.start_uplink(request, peer, route),
            Block1Outcome::Complete { body, .. } => {
                if body.is_empty() {
                    return self.answer_now(&request, peer, Reply::bad_request("Payload is empty"));
                }
                // The final response echoes this last block's Block1 (see `frame`).
                request.payload = body;
                self.start_uplink(request, peer, route)
            }
            other => {
                let code = other.response_code().unwrap_or(Code::BAD_REQUEST);
                let mut reply = if code == Code::SERVICE_UNAVAILABLE { Reply::overloaded() } else { Reply::new(code, "") };
                if code == Code::REQUEST_ENTITY_INCOMPLETE {
                    reply.payload = b"Request Entity Incomplete".to_vec();
                }
                let mut response = self.frame(&request, &reply);
                other.add_response_options(&mut response);
                self.answer_with(&request, peer, response.encode().into());
            }
        }
    }

    /// Decides what a request is for, or the immediate answer when it cannot be an uplink.
    fn route(&self, request: &Message, auth: Auth<'_>) -> Result<Arc<Route>, Reply> {
        // Borrowed from the datagram (lossy only for invalid UTF-8): no string per segment.
        let mut segments: Vec<Cow<'_, str>> = request.options_with(URI_PATH).map(String::from_utf8_lossy).collect();
        // Some firmware puts the whole path into one Uri-Path option.
        if segments.len() == 1 && segments[0].contains('/') {
            let whole = segments.remove(0);
            segments = whole.split('/').filter(|s| !s.is_empty()).map(|s| Cow::Owned(s.to_string())).collect();
        }
        if segments.len() == 2 && segments[0] == ".well-known" && segments[1] == "core" {
            // Discovery must never reveal routing keys: the integration resource is all there is.
            let mut reply = Reply::new(Code::CONTENT, "</i>;rt=\"coapgate.integration\"");
            reply.content_format = Some(coapgate_coap::message::content_format::LINK_FORMAT);
            return Err(reply);
        }
        let n = segments.len();
        if n < 2 || segments[n - 2] != "i" {
            return Err(Reply::new(Code::NOT_FOUND, "Not Found"));
        }
        let route = self.registry.lookup(&segments[n - 1]).ok_or_else(|| Reply::new(Code::NOT_FOUND, "Not Found"))?;
        let prefix = if self.secure { &route.dtls_path_prefix } else { &route.path_prefix };
        // Disabled integrations have no route at all (the registry leaves them out).
        if prefix.len() != n - 2 || prefix.iter().zip(&segments).any(|(p, s)| p != s) {
            return Err(Reply::new(Code::NOT_FOUND, "Not Found"));
        }
        if request.code != Code::POST && request.code != Code::PUT {
            return Err(Reply::new(Code::METHOD_NOT_ALLOWED, "Method Not Allowed"));
        }
        match (self.secure, route.security) {
            (false, SecurityMode::Dtls) => return Err(Reply::bad_request("Secure connection is required")),
            (true, SecurityMode::NoSecure) => return Err(Reply::bad_request("No secure connection is not allowed")),
            _ => {}
        }
        // A pre-shared key opens the integration that owns it, and no other.
        if let Some(identity) = auth.and_then(|a| a.psk_identity.as_deref())
            && self.registry.psk_owner(identity) != Some(route.integration.id)
        {
            return Err(Reply::new(Code::FORBIDDEN, "Forbidden"));
        }
        if request.payload.is_empty() && request.block1().is_none() {
            return Err(Reply::bad_request("Payload is empty"));
        }
        Ok(route)
    }

    /// Frames `reply` for `request`: piggybacked ACK for a CON, NON for a NON.
    fn frame(&self, request: &Message, reply: &Reply) -> Message {
        let mut response = if request.mtype == MessageType::Confirmable {
            Message::piggybacked_response(request, reply.code, reply.payload.clone())
        } else {
            Message::non_response(request, reply.code, reply.payload.clone(), self.fresh_message_id())
        };
        if let Some(max_age) = reply.max_age {
            response.set_uint_option(coapgate_coap::message::option::MAX_AGE, max_age);
        }
        if let Some(format) = reply.content_format {
            response.set_uint_option(coapgate_coap::message::option::CONTENT_FORMAT, format);
        }
        // The final response of a block-wise upload echoes its last block (RFC 7959 §2.3).
        if let Some(block) = request.block1().filter(|b| !b.more()) {
            response.set_block1(block);
        }
        response
    }

    /// Caches the answer for duplicates, then sends it. In that order: a peer that retransmits
    /// the moment it sees the answer must find it cached, not still "in progress" (dropped).
    fn answer_now(&self, request: &Message, peer: SocketAddr, reply: Reply) {
        let bytes: Arc<[u8]> = self.frame(request, &reply).encode().into();
        self.answer_with(request, peer, bytes);
    }

    fn answer_with(&self, request: &Message, peer: SocketAddr, bytes: Arc<[u8]>) {
        self.dedup.lock().unwrap_or_else(|e| e.into_inner()).complete(peer, request.message_id, bytes.clone());
        self.send(&bytes, peer);
    }

    fn start_uplink(self: &Arc<Self>, mut request: Message, peer: SocketAddr, route: Arc<Route>) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.config.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            return self.answer_now(&request, peer, Reply::overloaded());
        }
        let metadata = converter_metadata(&route, &request);
        // The answer a stored uplink gets, framed now so the very same bytes are stored with
        // the data (for replay after a crash) and sent.
        let created: Arc<[u8]> = self.frame(&request, &Reply::created()).encode().into();
        let exchange = Exchange {
            peer: self.exchange_peer(peer),
            message_id: request.message_id,
            ts: coapgate_storage::now_millis(),
            response: created.to_vec(),
        };
        let confirmable = request.mtype == MessageType::Confirmable;
        let key = ExchangeKey(peer, request.message_id);
        // Registered before the job can finish, so the answer always finds (and removes) it.
        if confirmable {
            self.unanswered_lock().insert(key, Unanswered { since: Instant::now(), acked: false });
        }
        let payload = std::mem::take(&mut request.payload);
        let content_format = request.content_format();
        let responder = Responder { endpoint: self.clone(), request, peer, created, answered: false };
        let mut job = self.pipeline.decode_job(route, content_format, payload, metadata, responder, Some(exchange));
        // A converter blocked by one source's payloads stays open to the others.
        job.source = Some(coapgate_coap::host::source_host(peer));
        if let Err(refused) = self.pool.try_submit(job) {
            // The job's own completion answers (5.03 for a full pool) through its responder.
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            let error = refused.to_script_error();
            (refused.into_job().on_done)(Err(error), Duration::ZERO);
        }
    }

    fn unanswered_lock(&self) -> std::sync::MutexGuard<'_, HashMap<ExchangeKey, Unanswered>> {
        self.unanswered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer to an accepted uplink, on whichever thread has it.
    fn answer_uplink(self: &Arc<Self>, request: &Message, peer: SocketAddr, reply: Reply, created: &Arc<[u8]>) {
        self.settle(&reply);
        let separate = request.mtype == MessageType::Confirmable
            && self.unanswered_lock().remove(&ExchangeKey(peer, request.message_id)).is_some_and(|u| u.acked);
        if !separate {
            return self.deliver(request, peer, reply, created);
        }
        if reply == Reply::created() {
            // Its entry keeps the empty ACK; once stored, its key must outlive an eviction.
            self.dedup.lock().unwrap_or_else(|e| e.into_inner()).mark_committed(peer, request.message_id);
        }
        match &self.runtime {
            Some(runtime) => {
                let (endpoint, request) = (self.clone(), request.clone());
                runtime.spawn(async move { endpoint.send_separate(&request, peer, &reply).await });
            }
            None => tracing::warn!("no runtime to send a separate response to {peer}"),
        }
    }

    /// Acknowledges, with an empty ACK, every confirmable uplink still unanswered after the
    /// piggyback window, so the device stops retransmitting; duplicates get the same ACK until
    /// the separate response is out. Checks a few times per window.
    async fn sweep_unanswered(self: Arc<Self>) {
        let window = self.config.piggyback_timeout;
        let mut tick = tokio::time::interval((window / 4).clamp(Duration::from_millis(2), Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            // Under the lock, so an answer arriving now either finds `acked` set (and goes out
            // as a separate response) or was delivered piggybacked before this ACK was sent.
            let mut unanswered = self.unanswered_lock();
            for (&ExchangeKey(peer, message_id), waiting) in unanswered.iter_mut() {
                if !waiting.acked && now.duration_since(waiting.since) >= window {
                    waiting.acked = true;
                    let ack: Arc<[u8]> = Message::empty_ack(message_id).encode().into();
                    self.dedup.lock().unwrap_or_else(|e| e.into_inner()).complete(peer, message_id, ack.clone());
                    self.send(&ack, peer);
                }
            }
        }
    }

    /// Answers with the pre-framed success bytes when the uplink was stored, so what a replay
    /// after a crash sends is exactly what was sent the first time.
    fn deliver(&self, request: &Message, peer: SocketAddr, reply: Reply, created: &Arc<[u8]>) {
        if reply == Reply::created() {
            // Committed: should the entry be evicted, its key stays (see `DedupCache`).
            self.dedup.lock().unwrap_or_else(|e| e.into_inner()).complete_committed(
                peer,
                request.message_id,
                created.clone(),
            );
            self.send(created, peer);
        } else {
            self.answer_now(request, peer, reply);
        }
    }

    /// How an exchange's peer is stored with its uplink: DTLS peers carry a `dtls:` prefix so
    /// each endpoint restores only its own exchanges.
    fn exchange_peer(&self, peer: SocketAddr) -> String {
        if self.secure { format!("dtls:{peer}") } else { peer_text(peer) }
    }

    /// Refills the deduplication cache with the exchanges of uplinks stored before a restart,
    /// so their retransmissions are answered 2.01 without being stored again. `all` says
    /// whether these are all the log holds within EXCHANGE_LIFETIME; if not, misses that could
    /// be retransmissions of older ones consult the log until those have expired.
    pub fn restore_exchanges(&self, exchanges: Vec<Exchange>, all: bool) -> usize {
        let now_ms = coapgate_storage::now_millis();
        let now = Instant::now();
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        if !all {
            let oldest = exchanges.first().map_or(now_ms, |e| e.ts);
            let left = coapgate_storage::sqlite::EXCHANGE_LIFETIME_MS - (now_ms - oldest);
            dedup.mark_unsure_until(now + Duration::from_millis(left.max(0) as u64));
        }
        let mut restored = 0;
        for e in exchanges {
            let text = if self.secure { e.peer.strip_prefix("dtls:") } else { Some(e.peer.as_str()) };
            let Some(Ok(peer)) = text.map(str::parse::<SocketAddr>) else { continue };
            let age = Duration::from_millis(now_ms.saturating_sub(e.ts).max(0) as u64);
            let inserted = now.checked_sub(age).unwrap_or(now);
            // The stored answer carries the request's token (it was framed for it).
            let token = Token::of_encoded(&e.response).unwrap_or(Token::EMPTY);
            if dedup.check_request(peer, e.message_id, token, true, inserted) == Lookup::New {
                dedup.complete_committed(peer, e.message_id, e.response.into());
                restored += 1;
            }
        }
        restored
    }

    /// The uplink's processing is over: it leaves the in-flight count *before* the answer goes
    /// out, so a peer that sends its next request on receipt finds the slot free, and a separate
    /// response waiting (up to MAX_TRANSMIT_WAIT) for an ACK that never comes holds no slot.
    fn settle(&self, reply: &Reply) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let counter = if reply.code == Code::CREATED { &self.stats.uplinks_ok } else { &self.stats.uplinks_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a separate CON response and retransmits it (RFC 7252 §4.2) until ACK or RST.
    async fn send_separate(&self, request: &Message, peer: SocketAddr, reply: &Reply) {
        let message_id = self.fresh_message_id();
        let mut response = Message::separate_response(request, reply.code, reply.payload.clone(), message_id);
        if let Some(max_age) = reply.max_age {
            response.set_uint_option(coapgate_coap::message::option::MAX_AGE, max_age);
        }
        let bytes = response.encode();
        let (acked_tx, mut acked_rx) = oneshot::channel();
        self.awaiting_ack.lock().unwrap_or_else(|e| e.into_inner()).insert(ExchangeKey(peer, message_id), acked_tx);
        let factor = 1.0 + rand::random::<f64>() * (params::ACK_RANDOM_FACTOR - 1.0);
        let mut timeout = params::ACK_TIMEOUT.mul_f64(factor);
        for _attempt in 0..=params::MAX_RETRANSMIT {
            self.send(&bytes, peer);
            if tokio::time::timeout(timeout, &mut acked_rx).await.is_ok() {
                return;
            }
            timeout *= 2;
        }
        self.awaiting_ack.lock().unwrap_or_else(|e| e.into_inner()).remove(&ExchangeKey(peer, message_id));
        tracing::debug!("separate response to {peer} was never acknowledged");
    }
}

/// `peer.to_string()` for the exchange log, written by hand for IPv4: the formatting machinery
/// took more instructions per uplink than parsing the datagram. IPv6 (rare) keeps `Display`.
fn peer_text(peer: SocketAddr) -> String {
    let SocketAddr::V4(v4) = peer else { return peer.to_string() };
    let mut text = String::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_decimal(&mut text, u16::from(octet));
    }
    text.push(':');
    push_decimal(&mut text, v4.port());
    text
}

fn push_decimal(text: &mut String, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        text.push(char::from(d));
    }
}

/// The request's URI as ThingsBoard's `Option:uri`: `/` and the path segments joined by `/`,
/// then `?` and the queries joined by `&`; written into one string (no string per segment).
fn request_uri(request: &Message) -> String {
    let mut uri = String::with_capacity(64);
    for segment in request.options_with(URI_PATH) {
        uri.push('/');
        uri.push_str(&String::from_utf8_lossy(segment));
    }
    if uri.is_empty() {
        uri.push('/');
    }
    for (i, query) in request.options_with(URI_QUERY).enumerate() {
        uri.push(if i == 0 { '?' } else { '&' });
        uri.push_str(&String::from_utf8_lossy(query));
    }
    uri
}

/// ThingsBoard's metadata for a converter call: the integration's name and metadata, and the
/// request's options as `Option:*` keys.
fn converter_metadata(route: &Route, request: &Message) -> BTreeMap<String, String> {
    let mut metadata: BTreeMap<String, String> = route.metadata.iter().cloned().collect();
    metadata.insert("integrationName".into(), route.integration.name.clone());
    if let Some(format) = request.content_format() {
        metadata.insert("Option:content-format".into(), format.to_string());
    }
    metadata.insert("Option:uri".into(), request_uri(request));
    let location_path = request.location_path();
    if !location_path.is_empty() {
        metadata.insert("Option:location-path".into(), location_path.join(","));
    }
    let location_query = request.location_query();
    if !location_query.is_empty() {
        metadata.insert("Option:location-query".into(), location_query.join(","));
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_what_display_writes() {
        for text in ["0.0.0.0:0", "127.0.0.1:5683", "255.255.255.255:65535", "10.20.3.4:10", "1.22.133.9:100", "[::1]:5683"] {
            let peer: SocketAddr = text.parse().unwrap();
            assert_eq!(peer_text(peer), peer.to_string());
        }
        for port in [1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
            let peer = SocketAddr::from(([192, 168, 0, 255], port));
            assert_eq!(peer_text(peer), peer.to_string());
        }
    }

    #[test]
    fn request_uri_joins_path_and_query_as_before() {
        let uri = |path: &[&[u8]], query: &[&str]| {
            let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
            for p in path {
                m.add_option(URI_PATH, p.to_vec());
            }
            for q in query {
                m.add_option(URI_QUERY, q.as_bytes().to_vec());
            }
            let old = {
                let mut uri = format!("/{}", m.uri_path().join("/"));
                if !m.uri_query().is_empty() {
                    uri.push('?');
                    uri.push_str(&m.uri_query().join("&"));
                }
                uri
            };
            assert_eq!(request_uri(&m), old);
            request_uri(&m)
        };
        assert_eq!(uri(&[], &[]), "/");
        assert_eq!(uri(&[b"i", b"key"], &[]), "/i/key");
        assert_eq!(uri(&[b"api", b"i", b"key"], &["a=1", "b"]), "/api/i/key?a=1&b");
        assert_eq!(uri(&[], &["x=2"]), "/?x=2");
        assert_eq!(uri(&[b"bad\xff"], &[]), "/bad\u{fffd}");
    }
}
