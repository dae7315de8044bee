//! The platform's side of remote integrations: the gRPC service `coapgate remote` processes link
//! to (`INTEGRATIONS_RPC_*`), and the live status the REST API and console show.
//!
//! One link per remote process, one task per link. The link authenticates the remote (routing
//! key and secret, compared in constant time), sends the integration's configuration, and then:
//! - hands each record to the same group-commit writer local uplinks use, tagged with its place
//!   in the remote's outbox (`RemoteSeq`), which storage commits with the data; the record's
//!   acknowledgement is sent from the writer's completion, i.e. after the durable commit, and
//!   names the record (STORED, DUPLICATE for a resend already committed, REJECTED for good with
//!   an error event here, RETRY when busy or failing);
//! - pushes a new configuration when the integration or its converter changes (every registry
//!   reload wakes it), and ends the link when the integration is deleted, stops being remote or
//!   gets a new secret;
//! - records the remote's events under the integration and its converter (only those two);
//! - keeps the status (connected, service id, last seen, backlog, rate) from the remote's
//!   once-a-second `Status`.
//!
//! The protocol's rules are in `docs/remote-protocol.md`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use coapgate_storage::Store;
use coapgate_storage::model::{Converter, EntityKind, Event, Integration, Millis, RemoteSeq, UplinkRecord};
use coapgate_storage::now_millis;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::config::RpcServerSettings;
use crate::events::EventSink;
use crate::registry::{Registry, update_only_keys};
use crate::remote_proto::{self, PROTOCOL_VERSION, pb};
use crate::writer::{WriteJob, WriteResult, WriterHandle};

/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Records of one link handed to the writer and not yet acknowledged; beyond it records are
/// answered RETRY at once. The remote's own window is smaller, so this only stops a runaway.
const MAX_IN_FLIGHT_PER_LINK: usize = 16_384;
/// How long a record waits for room in the writer's queue before it is answered RETRY.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Events kept per batch from a remote; the rest of a larger batch is dropped and counted.
const MAX_EVENTS_PER_BATCH: usize = 1000;

/// What the console and REST API show about an integration's remote.
#[derive(Debug, Clone, Default)]
pub struct LinkStatus {
    /// The live link's number (0: none is live).
    link: u64,
    pub connected: bool,
    pub service_id: String,
    pub address: String,
    pub connected_since: Millis,
    pub last_seen: Millis,
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    pub outbox_max_bytes: u64,
    /// Uplinks the remote took into its outbox since it started.
    pub received_total: u64,
    /// Records stored here, resends found to be stored already, and records rejected for good,
    /// over this link.
    pub stored_total: u64,
    pub duplicates_total: u64,
    pub rejected_total: u64,
    /// Records stored per second, over the last status interval.
    pub rate: f64,
    pub last_error: Option<String>,
    pub last_error_time: Millis,
    pub integration_version: i64,
    pub converter_version: i64,
    rate_mark: (u64, Millis),
}

impl LinkStatus {
    pub fn to_json(&self) -> Value {
        json!({
            "connected": self.connected,
            "serviceId": self.service_id,
            "address": self.address,
            "connectedSince": self.connected_since,
            "lastSeen": self.last_seen,
            "backlogRecords": self.backlog_records,
            "backlogBytes": self.backlog_bytes,
            "outboxMaxBytes": self.outbox_max_bytes,
            "receivedTotal": self.received_total,
            "storedTotal": self.stored_total,
            "duplicatesTotal": self.duplicates_total,
            "rejectedTotal": self.rejected_total,
            "uplinksPerSecond": (self.rate * 10.0).round() / 10.0,
            "lastError": self.last_error,
            "lastErrorTime": if self.last_error.is_some() { Some(self.last_error_time) } else { None },
            "integrationVersion": self.integration_version,
            "converterVersion": self.converter_version,
        })
    }
}

/// Live links and their status, by integration.
pub struct RemoteHub {
    store: Arc<dyn Store>,
    writer: WriterHandle,
    events: Arc<EventSink>,
    registry: Arc<Registry>,
    status: Mutex<HashMap<Uuid, LinkStatus>>,
    /// The live link of each integration and how to end it when a newer one replaces it.
    live: Mutex<HashMap<Uuid, (u64, Arc<Notify>)>>,
    next_link: AtomicU64,
    /// The address the gRPC endpoint listens on, once started (the console shows its port).
    bound: std::sync::OnceLock<SocketAddr>,
    /// Several nodes on one database: the status of remotes linked to other nodes, as those
    /// nodes last published it (see [`RemoteHub::share_statuses`]), with when they did.
    elsewhere: Mutex<HashMap<Uuid, (Millis, Value)>>,
}

/// The setting where nodes publish the status of the remotes linked to them:
/// `{integration id: {"node", "at", "status"}}`.
const SHARED_STATUS: &str = "remote_link_status";
/// How often a node publishes its links' status and reads the others'.
const SHARE_EVERY: Duration = Duration::from_secs(2);
/// A published status older than this is taken as gone with its node.
const SHARED_STATUS_TTL: Millis = 10_000;

impl RemoteHub {
    pub fn new(store: Arc<dyn Store>, writer: WriterHandle, events: Arc<EventSink>, registry: Arc<Registry>) -> Arc<RemoteHub> {
        Arc::new(RemoteHub {
            store,
            writer,
            events,
            registry,
            status: Mutex::default(),
            live: Mutex::default(),
            next_link: AtomicU64::new(1),
            bound: std::sync::OnceLock::new(),
            elsewhere: Mutex::default(),
        })
    }

    /// The status the REST API shows for an integration: its link here if it is connected here,
    /// else a connected link another node published within [`SHARED_STATUS_TTL`], else what this
    /// node knows (a refusal, a last error, or nothing).
    pub fn status_json(&self, integration: Uuid) -> Value {
        let local = self.status(integration);
        if local.as_ref().is_some_and(|s| s.connected) {
            return local.unwrap_or_default().to_json();
        }
        let now = coapgate_storage::now_millis();
        if let Some((_, status)) = self.elsewhere.lock().unwrap_or_else(|e| e.into_inner()).get(&integration).filter(|(at, _)| now - at < SHARED_STATUS_TTL) {
            return status.clone();
        }
        local.unwrap_or_default().to_json()
    }

    /// On a database several nodes share, a remote links to one node while the REST API may be
    /// asked on any: every [`SHARE_EVERY`], this node publishes the status of the links it holds
    /// and reads the ones the other nodes published.
    pub fn share_statuses(self: &Arc<Self>) {
        if !self.store.shared_by_nodes() {
            return;
        }
        let hub = self.clone();
        let node = Uuid::new_v4().to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SHARE_EVERY);
            // Whether the setting holds entries of this node (to take back when its links end).
            let mut published = false;
            loop {
                tick.tick().await;
                let mine: Vec<(Uuid, Value)> =
                    hub.lock_status().iter().filter(|(_, s)| s.connected).map(|(id, s)| (*id, s.to_json())).collect();
                let (store, publisher) = (hub.store.clone(), node.clone());
                let write = published || !mine.is_empty();
                published = !mine.is_empty();
                let shared = tokio::task::spawn_blocking(move || {
                    if !write {
                        // Nothing to publish or take back: only read (no write every 2 s).
                        return store.setting(SHARED_STATUS).map(Option::unwrap_or_default);
                    }
                    let node = publisher;
                    let now = coapgate_storage::now_millis();
                    store.update_setting(SHARED_STATUS, &mut |text| {
                        let mut all: serde_json::Map<String, Value> =
                            text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
                        all.retain(|_, e| e["node"] != node.as_str() && now - e["at"].as_i64().unwrap_or(0) < SHARED_STATUS_TTL);
                        for (id, status) in &mine {
                            all.insert(id.to_string(), json!({"node": node, "at": now, "status": status}));
                        }
                        Value::Object(all).to_string()
                    })
                })
                .await;
                match shared {
                    Ok(Ok(text)) => {
                        let all: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap_or_default();
                        let others = all
                            .iter()
                            .filter(|(_, e)| e["node"] != node.as_str())
                            .filter_map(|(id, e)| Some((Uuid::parse_str(id).ok()?, (e["at"].as_i64()?, e["status"].clone()))))
                            .collect();
                        *hub.elsewhere.lock().unwrap_or_else(|e| e.into_inner()) = others;
                    }
                    Ok(Err(e)) => tracing::debug!("sharing remote link status failed: {e}"),
                    Err(e) => tracing::debug!("sharing remote link status failed: {e}"),
                }
            }
        });
    }

    /// The address remotes connect to, once the endpoint is listening.
    pub fn bound(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }

    /// The status of an integration's remote, if one ever linked or tried to since start-up.
    pub fn status(&self, integration: Uuid) -> Option<LinkStatus> {
        self.lock_status().get(&integration).cloned()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, LinkStatus>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, integration: Uuid, f: impl FnOnce(&mut LinkStatus)) {
        f(self.lock_status().entry(integration).or_default());
    }

    /// A failure shown with the status and recorded as the integration's error event.
    fn failure(&self, integration: Uuid, text: String) {
        self.events.error(EntityKind::Integration, integration, "remote", &text);
        self.update(integration, |s| {
            s.last_error = Some(text);
            s.last_error_time = now_millis();
        });
    }

    /// Serves the gRPC endpoint until the process ends; returns the address it listens on.
    pub async fn start(self: &Arc<Self>, settings: &RpcServerSettings) -> anyhow::Result<SocketAddr> {
        let mut builder = tonic::transport::Server::builder()
            // A remote that vanished without closing (power cut, cable) is noticed within about
            // 30 s, so a restarted one is not refused as a duplicate for long.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_keepalive(Some(Duration::from_secs(30)));
        if let Some((cert, key)) = &settings.tls {
            let cert_pem = std::fs::read(cert)
                .with_context(|| format!("INTEGRATIONS_RPC_SSL_CERT: cannot read {}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .with_context(|| format!("INTEGRATIONS_RPC_SSL_PRIVATE_KEY: cannot read {}", key.display()))?;
            check_pem(&cert_pem, "CERTIFICATE", "INTEGRATIONS_RPC_SSL_CERT", cert)?;
            check_pem(&key_pem, "PRIVATE KEY", "INTEGRATIONS_RPC_SSL_PRIVATE_KEY", key)?;
            let identity = tonic::transport::Identity::from_pem(cert_pem, key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .context("INTEGRATIONS_RPC_SSL_CERT / INTEGRATIONS_RPC_SSL_PRIVATE_KEY: not a usable certificate and key")?;
        }
        let listener = tokio::net::TcpListener::bind(&settings.bind)
            .await
            .with_context(|| format!("INTEGRATIONS_RPC_PORT: cannot listen on tcp {}", settings.bind))?;
        let addr = listener.local_addr()?;
        let _ = self.bound.set(addr);
        let service = pb::remote_integration_server::RemoteIntegrationServer::new(RpcService(self.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = builder.add_service(service);
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                tracing::error!("the remote integrations' endpoint stopped: {e}");
            }
        });
        Ok(addr)
    }

    /// Checks a Hello; the integration and its converter, or the refusal to send.
    async fn authenticate(&self, hello: &pb::Hello, peer: &str) -> Result<(Integration, Converter), pb::Refusal> {
        use pb::RefusalReason as R;
        let refuse = |reason: R, message: String| pb::Refusal { reason: reason as i32, message };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(refuse(
                R::ProtocolVersion,
                format!("this platform speaks protocol version {PROTOCOL_VERSION}, the remote {}", hello.protocol_version),
            ));
        }
        let store = self.store.clone();
        let key = hello.routing_key.clone();
        let found = tokio::task::spawn_blocking(move || {
            let integration = store.integration_by_routing_key(&key)?;
            let converter = match &integration {
                Some(i) => store.converter(i.default_converter_id)?,
                None => None,
            };
            Ok::<_, coapgate_storage::StorageError>((integration, converter))
        })
        .await;
        let (integration, converter) = match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(refuse(R::UnknownIntegration, format!("the platform cannot read its integrations now: {e}"))),
            Err(e) => return Err(refuse(R::UnknownIntegration, format!("the platform failed: {e}"))),
        };
        let Some(integration) = integration else {
            tracing::warn!("remote integration refused: no integration has routing key {:?} (service {:?} from {peer})", hello.routing_key, hello.service_id);
            return Err(refuse(R::UnknownIntegration, "no integration has this routing key".into()));
        };
        if !same_secret(&integration.secret, &hello.secret) {
            // Never the secret itself, in the log or the event.
            let text = format!("connection refused: wrong secret (service {:?} from {peer})", hello.service_id);
            tracing::warn!("remote integration {}: {text}", integration.name);
            self.failure(integration.id, text);
            return Err(refuse(R::WrongSecret, "wrong integration secret".into()));
        }
        if !integration.is_remote {
            let text = format!("connection refused: the integration is not set to execute remotely (service {:?} from {peer})", hello.service_id);
            tracing::warn!("remote integration {}: {text}", integration.name);
            self.failure(integration.id, text);
            return Err(refuse(R::NotRemote, "the integration is not set to execute remotely".into()));
        }
        let Some(converter) = converter else {
            return Err(refuse(R::UnknownIntegration, "the integration's uplink converter does not exist".into()));
        };
        Ok((integration, converter))
    }

    /// Runs one link from its Hello to its end.
    async fn serve_link(self: Arc<Self>, peer: String, mut inbound: Streaming<pb::RemoteMessage>, tx: mpsc::Sender<Result<pb::PlatformMessage, Status>>) {
        let send = |msg: pb::platform_message::Msg| pb::PlatformMessage { msg: Some(msg) };
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::RemoteMessage { msg: Some(pb::remote_message::Msg::Hello(hello)) }))) => hello,
            _ => {
                let _ = tx.send(Err(Status::invalid_argument("the first message must be Hello"))).await;
                return;
            }
        };
        let Ok(outbox) = Uuid::parse_str(&hello.outbox_id) else {
            let _ = tx.send(Err(Status::invalid_argument("Hello.outbox_id must be a UUID"))).await;
            return;
        };
        let (mut integration, mut converter) = match self.authenticate(&hello, &peer).await {
            Ok(found) => found,
            Err(refusal) => {
                let _ = tx.send(Ok(send(pb::platform_message::Msg::Refusal(refusal)))).await;
                return;
            }
        };
        let id = integration.id;
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let replaced = Arc::new(Notify::new());
        if let Some((_, older)) = self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (link, replaced.clone())) {
            older.notify_one();
        }
        let now = now_millis();
        self.update(id, |s| {
            *s = LinkStatus {
                link,
                connected: true,
                service_id: hello.service_id.clone(),
                address: peer.clone(),
                connected_since: now,
                last_seen: now,
                rate_mark: (0, now),
                last_error: s.last_error.take(),
                last_error_time: s.last_error_time,
                ..LinkStatus::default()
            }
        });
        tracing::info!("remote integration {} linked: service {:?} from {peer}", integration.name, hello.service_id);
        let mut sent = (integration.version, converter.version);
        let mut changes = self.registry.subscribe();
        let link_state = Arc::new(LinkCounters::default());
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<pb::Ack>();
        let mut context = Arc::new(RecordContext::new(&integration, &converter, outbox, &hello.service_id, self.events.clone(), link_state.clone()));
        let mut forgotten_below = 0u64;
        let mut last_forget = Instant::now() - Duration::from_secs(60);
        if tx.send(Ok(send(pb::platform_message::Msg::Configuration(remote_proto::configuration(&integration, &converter))))).await.is_err() {
            return self.unlinked(id, link, &integration.name, "the remote went away");
        }
        self.update(id, |s| (s.integration_version, s.converter_version) = sent);
        let ended: String = loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(pb::RemoteMessage { msg: Some(msg) })) => {
                        self.update(id, |s| s.last_seen = now_millis());
                        match msg {
                            pb::remote_message::Msg::Uplinks(batch) => {
                                for uplink in batch.uplinks {
                                    self.accept(&context, uplink, &ack_tx).await;
                                }
                                // Places below this left the remote's outbox: forget them now and then.
                                if batch.acked_below > forgotten_below && last_forget.elapsed() >= Duration::from_secs(1) {
                                    last_forget = Instant::now();
                                    forgotten_below = batch.acked_below;
                                    let store = self.store.clone();
                                    tokio::task::spawn_blocking(move || {
                                        if let Err(e) = store.forget_remote_records(id, outbox, forgotten_below) {
                                            tracing::warn!("forgetting a remote's acknowledged records failed (they are kept): {e}");
                                        }
                                    });
                                }
                            }
                            pb::remote_message::Msg::Events(batch) => self.record_events(&context, batch),
                            pb::remote_message::Msg::Status(status) => self.remote_status(id, link, &status, &link_state),
                            pb::remote_message::Msg::Hello(_) => {}
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "the remote closed the link".into(),
                    Err(e) => break format!("the link failed: {}", e.message()),
                },
                Some(ack) = ack_rx.recv() => {
                    let mut acks = vec![ack];
                    while acks.len() < 4096 {
                        match ack_rx.try_recv() {
                            Ok(ack) => acks.push(ack),
                            Err(_) => break,
                        }
                    }
                    if tx.send(Ok(send(pb::platform_message::Msg::Acks(pb::AckBatch { acks })))).await.is_err() {
                        break "the remote went away".into();
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        break "the platform is stopping".into();
                    }
                    match self.current(id).await {
                        Err(reason) => {
                            let (code, text) = reason;
                            let _ = tx.send(Ok(send(pb::platform_message::Msg::Refusal(pb::Refusal { reason: code as i32, message: text.clone() })))).await;
                            break text;
                        }
                        Ok((now_integration, now_converter)) => {
                            if !same_secret(&now_integration.secret, &hello.secret) {
                                let text = "the integration's secret was regenerated".to_string();
                                let refusal = pb::Refusal { reason: pb::RefusalReason::SecretChanged as i32, message: text.clone() };
                                let _ = tx.send(Ok(send(pb::platform_message::Msg::Refusal(refusal)))).await;
                                break text;
                            }
                            let versions = (now_integration.version, now_converter.version);
                            if versions != sent {
                                integration = now_integration;
                                converter = now_converter;
                                context = Arc::new(RecordContext::new(&integration, &converter, outbox, &hello.service_id, self.events.clone(), link_state.clone()));
                                let configuration = remote_proto::configuration(&integration, &converter);
                                if tx.send(Ok(send(pb::platform_message::Msg::Configuration(configuration)))).await.is_err() {
                                    break "the remote went away".into();
                                }
                                sent = versions;
                                self.update(id, |s| (s.integration_version, s.converter_version) = sent);
                                tracing::info!("remote integration {}: configuration {}/{} sent", integration.name, sent.0, sent.1);
                            }
                        }
                    }
                }
                _ = replaced.notified() => {
                    let text = "another remote linked with the same integration key".to_string();
                    let refusal = pb::Refusal { reason: pb::RefusalReason::Replaced as i32, message: text.clone() };
                    let _ = tx.send(Ok(send(pb::platform_message::Msg::Refusal(refusal)))).await;
                    break text;
                }
            }
        };
        self.unlinked(id, link, &integration.name, &ended);
    }

    /// The integration and converter as stored now, or why the link must end.
    async fn current(&self, id: Uuid) -> Result<(Integration, Converter), (pb::RefusalReason, String)> {
        use pb::RefusalReason as R;
        let store = self.store.clone();
        let found = tokio::task::spawn_blocking(move || {
            let integration = store.integration(id)?;
            let converter = match &integration {
                Some(i) => store.converter(i.default_converter_id)?,
                None => None,
            };
            Ok::<_, coapgate_storage::StorageError>((integration, converter))
        })
        .await
        .map_err(|e| (R::UnknownIntegration, e.to_string()))?
        .map_err(|e| (R::UnknownIntegration, e.to_string()))?;
        match found {
            (None, _) => Err((R::Deleted, "the integration was deleted".into())),
            (Some(i), _) if !i.is_remote => Err((R::NotRemote, "the integration no longer executes remotely".into())),
            (Some(_), None) => Err((R::UnknownIntegration, "the integration's uplink converter was deleted".into())),
            (Some(i), Some(c)) => Ok((i, c)),
        }
    }

    fn unlinked(&self, id: Uuid, link: u64, name: &str, why: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(&id).is_some_and(|(l, _)| *l == link) {
            live.remove(&id);
        }
        drop(live);
        self.update(id, |s| {
            if s.link == link {
                s.connected = false;
                s.link = 0;
                s.rate = 0.0;
            }
        });
        tracing::info!("remote integration {name}: link ended: {why}");
    }

    /// Hands one record to the writer; its acknowledgement follows the durable commit. While
    /// the writer's queue is full the link waits (for up to [`QUEUE_WAIT`]) instead of answering
    /// RETRY: the remote is slowed down by the stream's flow control, and records keep their
    /// order without being sent twice.
    async fn accept(&self, context: &Arc<RecordContext>, uplink: pb::Uplink, acks: &mpsc::UnboundedSender<pb::Ack>) {
        use pb::AckStatus as A;
        let seq = uplink.seq;
        let counters = context.counters.clone();
        let held_from = counters.held_from.load(Ordering::Acquire);
        if seq > held_from {
            let _ = acks.send(pb::Ack { seq, status: A::Retry as i32, message: format!("waiting for record {held_from}") });
            return;
        }
        if seq == held_from {
            counters.held_from.store(u64::MAX, Ordering::Release);
        }
        if counters.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT_PER_LINK {
            counters.held_from.fetch_min(seq, Ordering::AcqRel);
            let _ = acks.send(pb::Ack { seq, status: A::Retry as i32, message: "the platform is busy".into() });
            return;
        }
        let entities = match remote_proto::decode_entities(&uplink.record) {
            Ok(entities) => entities,
            Err(text) => {
                context.rejected(seq, &text);
                let _ = acks.send(pb::Ack { seq, status: A::Rejected as i32, message: text });
                return;
            }
        };
        let record = UplinkRecord {
            integration_id: context.integration,
            allow_create_devices: context.allow_create,
            received_ts: uplink.received_ts,
            update_only_keys: context.update_only_keys.clone(),
            entities,
            exchange: None,
            remote: Some(RemoteSeq { outbox: context.outbox, seq }),
            converter: None,
        };
        counters.in_flight.fetch_add(1, Ordering::AcqRel);
        let acks = acks.clone();
        let rejected = context.clone();
        let done = Box::new(move |result: WriteResult| {
            counters.in_flight.fetch_sub(1, Ordering::AcqRel);
            let (status, message) = match result {
                WriteResult::Stored(outcome) if outcome.duplicate => {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    (A::Duplicate, String::new())
                }
                WriteResult::Stored(_) => {
                    counters.stored.fetch_add(1, Ordering::Relaxed);
                    (A::Stored, String::new())
                }
                WriteResult::Rejected(rejection) => {
                    let text = rejection.to_string();
                    rejected.rejected(seq, &text);
                    (A::Rejected, text)
                }
                WriteResult::Failed(e) => {
                    counters.held_from.fetch_min(seq, Ordering::AcqRel);
                    (A::Retry, format!("storing failed: {e}"))
                }
                WriteResult::QueueFull => {
                    counters.held_from.fetch_min(seq, Ordering::AcqRel);
                    (A::Retry, "the platform is busy".into())
                }
            };
            let _ = acks.send(pb::Ack { seq, status: status as i32, message });
        });
        let mut job = WriteJob { record, done };
        let waiting_since = Instant::now();
        loop {
            match self.writer.try_send(job) {
                Ok(()) => return,
                Err(refused) if waiting_since.elapsed() < QUEUE_WAIT => {
                    job = *refused;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(refused) => return (refused.done)(WriteResult::QueueFull),
            }
        }
    }

    /// The remote's events, for its integration and converter only.
    fn record_events(&self, context: &RecordContext, batch: pb::EventBatch) {
        let now = now_millis();
        for e in batch.events.into_iter().take(MAX_EVENTS_PER_BATCH) {
            let Ok(entity_id) = Uuid::parse_str(&e.entity_id) else { continue };
            let kind = match e.entity_type.as_str() {
                "INTEGRATION" if entity_id == context.integration => EntityKind::Integration,
                "CONVERTER" if entity_id == context.converter => EntityKind::Converter,
                _ => continue,
            };
            if !matches!(e.event_type.as_str(), "DEBUG_INTEGRATION" | "DEBUG_CONVERTER" | "LC_EVENT" | "STATS" | "ERROR") {
                continue;
            }
            let Ok(body @ Value::Object(_)) = serde_json::from_str::<Value>(&e.body) else { continue };
            self.events.forward(Event {
                id: Uuid::new_v4(),
                // A remote's clock may be off; never in the future here.
                created_time: e.created_time.min(now),
                entity_kind: kind,
                entity_id,
                event_type: e.event_type,
                uid: context.service_id.clone(),
                body,
            });
        }
    }

    fn remote_status(&self, id: Uuid, link: u64, status: &pb::Status, counters: &LinkCounters) {
        let now = now_millis();
        let stored = counters.stored.load(Ordering::Relaxed);
        let duplicates = counters.duplicates.load(Ordering::Relaxed);
        let rejected = counters.rejected.load(Ordering::Relaxed);
        self.update(id, |s| {
            if s.link != link {
                return;
            }
            s.backlog_records = status.backlog_records;
            s.backlog_bytes = status.backlog_bytes;
            s.outbox_max_bytes = status.outbox_max_bytes;
            s.received_total = status.received_total;
            s.stored_total = stored;
            s.duplicates_total = duplicates;
            s.rejected_total = rejected;
            let (mark_count, mark_ts) = s.rate_mark;
            if now > mark_ts {
                s.rate = (stored.saturating_sub(mark_count)) as f64 * 1000.0 / (now - mark_ts) as f64;
            }
            s.rate_mark = (stored, now);
        });
    }
}

struct LinkCounters {
    /// The lowest sequence number answered RETRY and not yet received again (`u64::MAX`: none).
    /// Later records are answered RETRY too until it comes back, so a link's records are stored
    /// in their order even when some must wait (the remote resends its RETRY rows in order).
    held_from: AtomicU64,
    in_flight: AtomicUsize,
    stored: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
}

impl Default for LinkCounters {
    fn default() -> LinkCounters {
        LinkCounters {
            held_from: AtomicU64::new(u64::MAX),
            in_flight: AtomicUsize::new(0),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

/// What a record from this link is stored with (shared with the writer completions of its
/// records, which report rejections through it).
struct RecordContext {
    integration: Uuid,
    converter: Uuid,
    allow_create: bool,
    update_only_keys: Arc<[String]>,
    outbox: Uuid,
    service_id: String,
    events: Arc<EventSink>,
    counters: Arc<LinkCounters>,
}

impl RecordContext {
    fn new(
        integration: &Integration,
        converter: &Converter,
        outbox: Uuid,
        service_id: &str,
        events: Arc<EventSink>,
        counters: Arc<LinkCounters>,
    ) -> RecordContext {
        RecordContext {
            integration: integration.id,
            converter: converter.id,
            allow_create: integration.allow_create_devices_or_assets,
            update_only_keys: update_only_keys(converter),
            outbox,
            service_id: service_id.to_string(),
            events,
            counters,
        }
    }

    /// A record refused for good is an error event here (the remote logs it too), never a
    /// silent drop.
    fn rejected(&self, seq: u64, reason: &str) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        let text = format!("record {seq} from remote {:?} rejected: {reason}", self.service_id);
        self.events.error(EntityKind::Integration, self.integration, "uplink", &text);
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && openssl::memcmp::eq(expected.as_bytes(), given.as_bytes())
}

/// A readable error for a file that is not the PEM it should be (rustls's own is terse).
fn check_pem(bytes: &[u8], label: &str, setting: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(bytes);
    if !text.contains("-----BEGIN") || !text.contains(label) {
        anyhow::bail!("{setting}: {} holds no PEM {label}", path.display());
    }
    Ok(())
}

struct RpcService(Arc<RemoteHub>);

#[tonic::async_trait]
impl pb::remote_integration_server::RemoteIntegration for RpcService {
    type LinkStream = ReceiverStream<Result<pb::PlatformMessage, Status>>;

    async fn link(&self, request: Request<Streaming<pb::RemoteMessage>>) -> Result<Response<Self::LinkStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_else(|| "unknown".into());
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.0.clone().serve_link(peer, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
