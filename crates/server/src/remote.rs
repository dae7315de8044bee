//! `coapgate remote`: one integration run near its devices, linked to the platform over gRPC.
//!
//! The remote has `serve`'s CoAP and DTLS endpoints, script pool and group-commit writer; what
//! differs is where records go and where the configuration comes from:
//! - the writer commits into the outbox (`coapgate_storage::Outbox`, a SQLite file in the data
//!   directory), so a device's 2.01 follows a durable local commit, exactly as on the platform;
//! - the link task sends the outbox's rows to the platform in order, keeps a bounded window in
//!   flight, and removes a row only when the platform's acknowledgement names it as stored, a
//!   duplicate, or rejected for good; RETRY rows are sent again; after a reconnect every row
//!   still waiting is sent again (the platform answers DUPLICATE for those it has);
//! - the integration and converter are the platform's, sent on every link and whenever they
//!   change; the last one is kept in the outbox file, so a remote restarted while the platform is
//!   down ingests at once;
//! - events go up the link (a bounded buffer while the platform is away; see [`EventForwarder`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use coapgate_storage::model::{EntityKind, Event, Millis};
use coapgate_storage::{EventLog, Outbox, StorageError};
use prost::Message;
use rand::Rng;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::coap_endpoint::{CoapEndpoint, Transport};
use crate::config::{Config, RemoteSettings};
use crate::dtls_endpoint::DtlsTransport;
use crate::events::EventSink;
use crate::histogram::Histogram;
use crate::pipeline::{Pipeline, SCRIPT_MICROS_BUCKETS};
use crate::registry::Registry;
use crate::remote_proto::{self, PROTOCOL_VERSION, pb};
use crate::serve::{endpoint_config, enlarge_socket_buffers, restore_exchanges, shutdown_signal, start_script_pool};
use crate::writer::{self, WriterConfig};

/// The outbox file in the data directory.
pub const OUTBOX_FILE: &str = "remote-outbox.db";
/// Where the outbox keeps the platform's last configuration (an encoded `pb::Configuration`).
const CONFIGURATION_KEY: &str = "configuration";
/// Records sent and not yet acknowledged (the platform takes up to 16,384 per link).
const WINDOW: usize = 8192;
/// Records per batch sent, and about how many bytes.
const BATCH_RECORDS: usize = 512;
const BATCH_BYTES: usize = 1 << 20;
/// Events kept while the platform is away; beyond it the oldest are dropped (and counted).
const EVENT_BUFFER: usize = 2000;
/// Reconnect delays: doubling from the first to the last, each drawn between half and all of it.
/// The last is short (an attempt costs one TCP connect): a platform back from an outage gets its
/// backlog within seconds, not after a long backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// Pauses before RETRY rows are sent again (see `Link::session`).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_secs(1);

/// The deduplication cache of a remote whose `COAP_DEDUP_MAX_ENTRIES` is automatic: a gateway's
/// fleet (200 devices at one uplink a second over EXCHANGE_LIFETIME), not a platform's. Older
/// exchanges are still answered from the outbox's exchange log.
const REMOTE_DEDUP_ENTRIES: usize = 50_000;

/// Called first thing in `main` for `coapgate remote`, before the allocator maps its first
/// arena: transparent huge pages made the allocator's mostly untouched arenas count 2 MiB at a
/// time, 22 of an idle remote's 37 MiB resident. A gateway cares about resident memory, not TLB
/// misses.
pub fn small_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and affects this process only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

pub fn run(mut config: Config) -> anyhow::Result<()> {
    config.remote.check()?;
    if config.dedup_automatic {
        config.dedup_max_entries = REMOTE_DEDUP_ENTRIES;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(remote(config))
}

async fn remote(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let settings = config.remote.clone();
    let dtls_credentials = match &config.dtls {
        Some(settings) => Some(crate::dtls_endpoint::load_credentials(&settings.credentials)?),
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("COAPGATE_DATA_DIR: cannot create {}", config.data_dir.display()))?;
    let outbox_path = config.data_dir.join(OUTBOX_FILE);
    let outbox = match Outbox::open(&outbox_path, settings.outbox_max_bytes) {
        Ok(outbox) => outbox,
        Err(e @ StorageError::DamagedWal(_)) => anyhow::bail!(
            "refusing to start: {e}. Keep a copy of {}: it holds uplinks the platform has not stored",
            config.data_dir.display()
        ),
        Err(e) => return Err(e).context("COAPGATE_DATA_DIR: cannot open the remote's outbox"),
    };
    let forwarder = Arc::new(EventForwarder::default());
    let events = EventSink::start_as(forwarder.clone(), config.events_ttl, settings.service_id.clone());
    let registry = Arc::new(Registry::default());
    let last = outbox.value(CONFIGURATION_KEY).context("reading the last configuration")?;
    let last = last.filter(|b| !b.is_empty()).and_then(|bytes| pb::Configuration::decode(bytes.as_slice()).ok());
    if let Some(configuration) = &last {
        apply(&registry, &events, configuration).map_err(|e| anyhow::anyhow!("the stored configuration is unusable: {e}"))?;
    }
    let pool = Arc::new(start_script_pool(&config));
    let wake = Arc::new(Notify::new());
    let committed = {
        let wake = wake.clone();
        Arc::new(move || wake.notify_one())
    };
    let (writer, _writer_thread) = writer::start(
        outbox.writer(Arc::new(remote_proto::encode_record), committed),
        WriterConfig {
            queue_capacity: config.writer_queue_capacity,
            max_batch: config.writer_max_batch,
            batch_window: config.writer_batch_window,
            live: None,
        },
    );
    let coap_socket = std::net::UdpSocket::bind(&config.coap_bind)
        .with_context(|| format!("COAP_BIND_ADDRESS/COAP_BIND_PORT: cannot listen on udp {}", config.coap_bind))?;
    enlarge_socket_buffers(&coap_socket, config.socket_buffer_bytes);
    let script_micros = Arc::new(Histogram::new(SCRIPT_MICROS_BUCKETS));
    // The outbox never refuses a record as stale: the platform's configuration reaches this
    // process only through the link, which installs it before the next uplink.
    let pipeline = Pipeline { writer, events: events.clone(), script_micros, resync: None };
    let endpoint = CoapEndpoint::new(coap_socket, registry.clone(), pool.clone(), pipeline.clone(), endpoint_config(&config, outbox.clone()));
    let dtls_endpoint = match (&config.dtls, dtls_credentials) {
        (Some(dtls), Some(credentials)) => {
            let transport = DtlsTransport::start(dtls, credentials, registry.clone()).await?;
            Some(CoapEndpoint::with_transport(Transport::Dtls(transport), registry.clone(), pool, pipeline, endpoint_config(&config, outbox.clone())))
        }
        _ => None,
    };
    restore_exchanges(outbox.as_ref(), &config, dtls_endpoint.iter().chain([&endpoint]))?;

    let (records, bytes) = outbox.backlog();
    let coap = endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("coapgate remote {} ready in {} ms", env!("CARGO_PKG_VERSION"), started.elapsed().as_millis());
    println!("  CoAP      udp://{coap}");
    if let Some(dtls) = &dtls_endpoint {
        println!("  DTLS      udp://{}", dtls.local_addr().map(|a| a.to_string()).unwrap_or_default());
    }
    let tls = if settings.tls { " (TLS)" } else { "" };
    println!("  platform  {}:{}{tls}, as service {:?}", settings.host, settings.port, settings.service_id);
    println!("  outbox    {} ({records} uplinks, {bytes} bytes waiting; limit {} bytes)", outbox_path.display(), settings.outbox_max_bytes);
    match &last {
        Some(c) => println!("  running   {:?} with the configuration of the last link, until the platform sends a newer one", c.name),
        None => println!("  waiting   for the platform's configuration: devices get 4.04 until the first link"),
    }
    let remover = Remover::start(outbox.clone())?;
    let link = Link { settings, outbox, registry, events, forwarder, wake, rejected: AtomicU64::new(0), remover };
    tokio::spawn(Arc::new(link).run());
    tokio::spawn(endpoint.run());
    if let Some(dtls) = dtls_endpoint {
        tokio::spawn(dtls.run());
    }
    shutdown_signal().await;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the platform's configuration: the integration's route while it is enabled, none
/// while it is disabled (devices get 4.04, as on the platform).
fn apply(registry: &Registry, events: &EventSink, configuration: &pb::Configuration) -> Result<(), String> {
    let (integration, converter) = remote_proto::from_configuration(configuration)?;
    let running = if integration.enabled { vec![(integration, converter)] } else { Vec::new() };
    for (id, change) in registry.install(running) {
        events.lifecycle(id, change.name(), None);
    }
    Ok(())
}

/// How a link ended.
enum LinkEnd {
    /// The platform refused it or ended it for a reason that a quick retry will not change.
    Refused,
    /// The connection was lost or could not be made.
    Lost(String),
}

struct Link {
    settings: RemoteSettings,
    outbox: Arc<Outbox>,
    registry: Arc<Registry>,
    events: Arc<EventSink>,
    forwarder: Arc<EventForwarder>,
    /// Notified after every outbox commit.
    wake: Arc<Notify>,
    rejected: AtomicU64,
    /// Acknowledged rows to remove from the outbox (see [`Remover`]).
    remover: Remover,
}

impl Link {
    /// Links, and links again whenever the link ends, with jittered exponential backoff.
    async fn run(self: Arc<Self>) {
        let mut delay = BACKOFF_FIRST;
        let mut lost_since: Option<Instant> = None;
        loop {
            let began = Instant::now();
            let end = self.link_once().await;
            if began.elapsed() > Duration::from_secs(10) {
                delay = BACKOFF_FIRST;
            }
            match end {
                LinkEnd::Refused => delay = delay.max(Duration::from_secs(5)),
                LinkEnd::Lost(why) => {
                    // One line when the platform becomes unreachable, not one per attempt.
                    if lost_since.is_none() {
                        tracing::warn!("platform unreachable, uplinks wait in the outbox: {why}");
                        lost_since = Some(Instant::now());
                    } else {
                        tracing::debug!("linking failed again: {why}");
                    }
                }
            }
            let jittered = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
            tokio::time::sleep(jittered).await;
            delay = (delay * 2).min(BACKOFF_LAST);
            if lost_since.is_some_and(|t| t.elapsed() > Duration::from_secs(600)) {
                // A reminder every ten minutes while the platform stays away.
                tracing::warn!("platform still unreachable; {} uplinks wait in the outbox", self.outbox.backlog().0);
                lost_since = Some(Instant::now());
            }
        }
    }

    async fn connect(&self) -> Result<tonic::transport::Channel, String> {
        let s = &self.settings;
        let host = if s.host.contains(':') && !s.host.starts_with('[') { format!("[{}]", s.host) } else { s.host.clone() };
        let scheme = if s.tls { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{host}:{}", s.port))
            .map_err(|e| format!("RPC_HOST/RPC_PORT: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        if s.tls {
            let mut tls = tonic::transport::ClientTlsConfig::new().domain_name(s.host.trim_matches(['[', ']']));
            tls = match &s.ca_cert {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| format!("RPC_SSL_CERT: cannot read {}: {e}", path.display()))?;
                    tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
                }
                None => tls.with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("RPC_SSL_CERT: {e}"))?;
        }
        // tonic's transport error says little on its own: its causes, on one line.
        endpoint.connect().await.map_err(|e| format!("cannot connect to {host}:{}: {:#}", s.port, anyhow::Error::new(e)))
    }

    async fn link_once(&self) -> LinkEnd {
        let channel = match self.connect().await {
            Ok(channel) => channel,
            Err(e) => return LinkEnd::Lost(e),
        };
        let mut client = pb::remote_integration_client::RemoteIntegrationClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel::<pb::RemoteMessage>(8);
        let running = self.outbox.value(CONFIGURATION_KEY).ok().flatten().filter(|b| !b.is_empty()).and_then(|b| pb::Configuration::decode(b.as_slice()).ok());
        let hello = pb::Hello {
            protocol_version: PROTOCOL_VERSION,
            routing_key: self.settings.routing_key.clone(),
            secret: self.settings.secret.clone(),
            service_id: self.settings.service_id.clone(),
            outbox_id: self.outbox.id().to_string(),
            integration_version: running.as_ref().map_or(0, |c| c.integration_version),
            converter_version: running.as_ref().and_then(|c| c.converter.as_ref()).map_or(0, |c| c.version),
            software_version: env!("CARGO_PKG_VERSION").into(),
        };
        let _ = tx.send(pb::RemoteMessage { msg: Some(pb::remote_message::Msg::Hello(hello)) }).await;
        let mut inbound = match client.link(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return LinkEnd::Lost(format!("the platform did not open the link: {}", status.message())),
        };
        match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
            Ok(Ok(Some(pb::PlatformMessage { msg: Some(pb::platform_message::Msg::Configuration(c)) }))) => {
                if let Err(e) = self.configure(&c) {
                    return LinkEnd::Lost(format!("the platform's configuration is unusable: {e}"));
                }
                tracing::info!(
                    "linked to the platform: integration {:?}, configuration {}/{}, {} uplinks waiting",
                    c.name,
                    c.integration_version,
                    c.converter.as_ref().map_or(0, |c| c.version),
                    self.outbox.backlog().0
                );
            }
            Ok(Ok(Some(pb::PlatformMessage { msg: Some(pb::platform_message::Msg::Refusal(r)) }))) => return self.refused(&r),
            Ok(Ok(_)) => return LinkEnd::Lost("the platform closed the link".into()),
            Ok(Err(status)) => return LinkEnd::Lost(format!("the link failed: {}", status.message())),
            Err(_) => return LinkEnd::Lost("the platform did not answer Hello within 15 s".into()),
        }
        match self.session(&tx, &mut inbound).await {
            Ok(end) => end,
            Err(why) => self.refusal_left_behind(&mut inbound).await.unwrap_or(LinkEnd::Lost(why)),
        }
    }

    /// A refusal the platform sent just before it ended the link, still waiting in `inbound`.
    /// The platform sends it and closes its side at once; a status or rows sent at that moment
    /// fail first, and the session ended as "lost" with the refusal (a regenerated secret, a
    /// deleted integration) unread, so the operator never saw why and the remote kept retrying.
    async fn refusal_left_behind(&self, inbound: &mut tonic::Streaming<pb::PlatformMessage>) -> Option<LinkEnd> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, inbound.message()).await {
                Ok(Ok(Some(pb::PlatformMessage { msg: Some(pb::platform_message::Msg::Refusal(r)) }))) => return Some(self.refused(&r)),
                // Acks and configurations of a link that is ending: the records are sent again
                // on the next link, and the platform keeps them once (`remote_record`).
                Ok(Ok(Some(_))) => {}
                _ => return None,
            }
        }
    }

    /// Applies and keeps a configuration from the platform.
    fn configure(&self, configuration: &pb::Configuration) -> Result<(), String> {
        apply(&self.registry, &self.events, configuration)?;
        self.outbox.put_value(CONFIGURATION_KEY, &configuration.encode_to_vec()).map_err(|e| format!("keeping it failed: {e}"))
    }

    fn refused(&self, refusal: &pb::Refusal) -> LinkEnd {
        use pb::RefusalReason as R;
        let reason = R::try_from(refusal.reason).unwrap_or(R::UnknownIntegration);
        tracing::error!("the platform refused the link ({}): {}", reason.as_str_name(), refusal.message);
        if matches!(reason, R::Deleted | R::NotRemote | R::UnknownIntegration) {
            // Nothing may run for an integration the platform no longer has for us; uplinks
            // already in the outbox stay there (an operator may restore the integration).
            for (id, change) in self.registry.install(Vec::new()) {
                self.events.lifecycle(id, change.name(), None);
            }
            if let Err(e) = self.outbox.put_value(CONFIGURATION_KEY, &[]) {
                tracing::warn!("forgetting the configuration failed: {e}");
            }
        }
        LinkEnd::Refused
    }

    /// Sends the outbox and the events, applies acknowledgements and configurations, until the
    /// link ends.
    async fn session(&self, tx: &mpsc::Sender<pb::RemoteMessage>, inbound: &mut tonic::Streaming<pb::PlatformMessage>) -> Result<LinkEnd, String> {
        let mut cursor = 0u64;
        let mut in_flight: BTreeSet<u64> = BTreeSet::new();
        let mut retry: BTreeSet<u64> = BTreeSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // RETRY rows go again after a pause that doubles (50 ms to 1 s) while rounds of them
        // keep coming back RETRY, and starts over once one round stores something.
        let mut retry_pause = RETRY_FIRST;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            self.fill(tx, &mut cursor, &mut in_flight).await?;
            if !retry.is_empty() && retry_at.is_none() {
                retry_at = Some(tokio::time::Instant::now() + retry_pause);
            }
            let retry_due = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = retry_due => {
                    retry_at = None;
                    let seqs: Vec<u64> = std::mem::take(&mut retry).into_iter().collect();
                    let rows = self.blocking(move |o| o.rows(&seqs)).await?;
                    self.send_rows(tx, rows).await?;
                    retry_pause = (retry_pause * 2).min(RETRY_LAST);
                }
                _ = tick.tick() => self.send_status(tx).await?,
                message = inbound.message() => match message {
                    Ok(Some(pb::PlatformMessage { msg: Some(msg) })) => match msg {
                        pb::platform_message::Msg::Acks(batch) => {
                            if self.acknowledged(batch, &mut in_flight, &mut retry).await? {
                                retry_pause = RETRY_FIRST;
                            }
                        }
                        pb::platform_message::Msg::Configuration(c) => {
                            self.configure(&c)?;
                            tracing::info!("configuration {}/{} from the platform", c.integration_version, c.converter.as_ref().map_or(0, |c| c.version));
                        }
                        pb::platform_message::Msg::Refusal(r) => return Ok(self.refused(&r)),
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("the platform closed the link".into()),
                    Err(status) => return Err(format!("the link failed: {}", status.message())),
                },
            }
        }
    }

    /// Sends waiting rows while the window has room.
    async fn fill(&self, tx: &mpsc::Sender<pb::RemoteMessage>, cursor: &mut u64, in_flight: &mut BTreeSet<u64>) -> Result<(), String> {
        // Nothing committed beyond the cursor: no query (this runs after every ack batch).
        while in_flight.len() < WINDOW && self.outbox.newest() > *cursor {
            let after = *cursor;
            let limit = BATCH_RECORDS.min(WINDOW - in_flight.len());
            let rows = self.blocking(move |o| o.pending(after, limit, BATCH_BYTES)).await?;
            let Some(last) = rows.last() else { break };
            *cursor = last.seq;
            in_flight.extend(rows.iter().map(|r| r.seq));
            self.send_rows(tx, rows).await?;
        }
        Ok(())
    }

    async fn send_rows(&self, tx: &mpsc::Sender<pb::RemoteMessage>, rows: Vec<coapgate_storage::outbox::OutboxRow>) -> Result<(), String> {
        if rows.is_empty() {
            return Ok(());
        }
        let acked_below = self.remover.acked_below.load(Ordering::Acquire);
        let uplinks = rows.into_iter().map(|r| pb::Uplink { seq: r.seq, received_ts: r.received_ts, record: r.record }).collect();
        let batch = pb::UplinkBatch { uplinks, acked_below };
        tx.send(pb::RemoteMessage { msg: Some(pb::remote_message::Msg::Uplinks(batch)) }).await.map_err(|_| "the link closed".to_string())
    }

    /// Applies a batch of acknowledgements; whether any of them stored a record.
    async fn acknowledged(&self, batch: pb::AckBatch, in_flight: &mut BTreeSet<u64>, retry: &mut BTreeSet<u64>) -> Result<bool, String> {
        use pb::AckStatus as A;
        let mut done = Vec::with_capacity(batch.acks.len());
        for ack in batch.acks {
            match A::try_from(ack.status).unwrap_or(A::Retry) {
                A::Stored | A::Duplicate => done.push(ack.seq),
                A::Rejected => {
                    // Never silent: a line here, an error event on both sides.
                    tracing::warn!("the platform rejected uplink {} for good: {}; it leaves the outbox", ack.seq, ack.message);
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(route) = self.registry.lookup(&self.settings.routing_key) {
                        let text = format!("the platform rejected uplink {}: {}", ack.seq, ack.message);
                        self.events.error(EntityKind::Integration, route.integration.id, "uplink", &text);
                    }
                    done.push(ack.seq);
                }
                A::Retry => {
                    retry.insert(ack.seq);
                    continue;
                }
            }
        }
        // They leave the window now and the outbox as soon as the remover gets to them; should
        // the link end first, they are sent again and the platform answers DUPLICATE.
        for seq in &done {
            in_flight.remove(seq);
        }
        let progress = !done.is_empty();
        self.remover.remove(done);
        Ok(progress)
    }

    async fn send_status(&self, tx: &mpsc::Sender<pb::RemoteMessage>) -> Result<(), String> {
        let (backlog_records, backlog_bytes) = self.outbox.backlog();
        let status = pb::Status {
            backlog_records,
            backlog_bytes,
            received_total: self.outbox.received(),
            rejected_total: self.rejected.load(Ordering::Relaxed),
            outbox_max_bytes: self.outbox.max_bytes(),
        };
        let closed = |_| "the link closed".to_string();
        tx.send(pb::RemoteMessage { msg: Some(pb::remote_message::Msg::Status(status)) }).await.map_err(closed)?;
        let events = self.forwarder.take(500);
        if !events.is_empty() {
            let events = events
                .into_iter()
                .map(|e| pb::Event {
                    entity_type: e.entity_kind.as_str().to_string(),
                    entity_id: e.entity_id.to_string(),
                    event_type: e.event_type,
                    created_time: e.created_time,
                    body: e.body.to_string(),
                })
                .collect();
            tx.send(pb::RemoteMessage { msg: Some(pb::remote_message::Msg::Events(pb::EventBatch { events })) }).await.map_err(closed)?;
        }
        Ok(())
    }

    /// Runs an outbox call on a blocking thread (it takes the outbox's lock and may wait for a
    /// commit's fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Outbox) -> coapgate_storage::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let outbox = self.outbox.clone();
        match tokio::task::spawn_blocking(move || f(&outbox)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("the outbox failed: {e}")),
            Err(e) => Err(format!("the outbox failed: {e}")),
        }
    }
}

/// Removes acknowledged rows from the outbox on its own thread, many per transaction: one fsync
/// per ack batch on the link's path capped the link at about 7,000 records/s, however fast the
/// platform was. The removal commit is durable before `acked_below` (what the platform may
/// forget) moves past the rows it removed: a removal lost in a crash would make the remote send
/// rows again that the platform no longer remembers storing.
struct Remover {
    tx: std::sync::mpsc::Sender<Vec<u64>>,
    acked_below: Arc<AtomicU64>,
}

impl Remover {
    fn start(outbox: Arc<Outbox>) -> anyhow::Result<Remover> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u64>>();
        let acked_below = Arc::new(AtomicU64::new(outbox.lowest_waiting().context("reading the outbox")?));
        let below = acked_below.clone();
        std::thread::Builder::new().name("outbox-remover".into()).spawn(move || {
            let mut failing = false;
            while let Ok(first) = rx.recv() {
                let mut seqs = first;
                seqs.extend(rx.try_iter().flatten());
                match outbox.remove(&seqs).and_then(|()| outbox.lowest_waiting()) {
                    Ok(lowest) => {
                        below.store(lowest, Ordering::Release);
                        if failing {
                            tracing::info!("removing acknowledged uplinks from the outbox works again");
                            failing = false;
                        }
                    }
                    // They stay, and are sent again on the next link (the platform answers
                    // DUPLICATE); nothing is lost.
                    Err(e) => {
                        if !failing {
                            tracing::warn!("removing acknowledged uplinks from the outbox failed: {e}");
                            failing = true;
                        }
                    }
                }
            }
        })?;
        Ok(Remover { tx, acked_below })
    }

    fn remove(&self, seqs: Vec<u64>) {
        if !seqs.is_empty() {
            let _ = self.tx.send(seqs);
        }
    }
}

/// The remote's event log: events wait here for the link's next status tick. Bounded: while the
/// platform is away the oldest are dropped (debug events are a window on recent traffic, and the
/// uplinks themselves wait in the outbox, never here).
#[derive(Default)]
pub struct EventForwarder {
    queue: Mutex<VecDeque<Event>>,
    dropped: AtomicU64,
}

impl EventForwarder {
    fn take(&self, n: usize) -> Vec<Event> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(queue.len());
        queue.drain(..n).collect()
    }
}

impl EventLog for EventForwarder {
    fn insert_events(&self, events: &[Event]) -> coapgate_storage::Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            if queue.len() >= EVENT_BUFFER {
                queue.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(e.clone());
        }
        Ok(())
    }

    fn delete_events_before(&self, ts: Millis) -> coapgate_storage::Result<u64> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let before = queue.len();
        queue.retain(|e| e.created_time >= ts);
        Ok((before - queue.len()) as u64)
    }
}
