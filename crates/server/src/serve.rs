//! `coapgate serve`: start-up as a short list of steps, then run until Ctrl-C or SIGTERM.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use coapgate_coap::{Block1Config, DedupConfig};
use coapgate_script::{EnginePool, Limits, PoolConfig};
use coapgate_storage::{ExchangeLog, PgStore, SqliteStore, StorageError, Store};
use tokio::net::TcpListener;

use crate::api::{self, AppState, Jwt};
use crate::coap_endpoint::{CoapEndpoint, EndpointConfig, Transport};
use crate::dtls_endpoint::DtlsTransport;
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::histogram::Histogram;
use crate::http_server::HttpServer;
use crate::pipeline::{Pipeline, SCRIPT_MICROS_BUCKETS};
use crate::config::{Config, Database};
use crate::registry::Registry;
use crate::writer::{self, WriterConfig};

/// How `serve` treats damaged data files.
#[derive(Clone, Copy, Default)]
pub struct StartOptions {
    /// Start on a damaged write-ahead log, dropping what SQLite cannot replay (and saying so),
    /// instead of refusing to start.
    pub salvage: bool,
}

pub fn run(config: Config, demo: bool, options: StartOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(config, demo, options))
}

async fn serve(mut config: Config, demo: bool, options: StartOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    // The DTLS and HTTPS credentials first: a wrong key store password stops start-up before
    // anything is created on disk.
    let dtls_credentials = match &config.dtls {
        Some(settings) => Some(crate::dtls_endpoint::load_credentials(&settings.credentials)?),
        None => None,
    };
    let tls = config.ssl.as_ref().map(crate::http_server::tls_acceptor).transpose()?;
    let (store, salvaged) = blocking(|| open_store(&config, options))?;
    let generated_password =
        blocking(|| api::ensure_admin_user(store.as_ref(), &config.admin_username, config.admin_password.as_deref()))
            .context("creating the admin user")?;
    let jwt = Arc::new(blocking(|| Jwt::load(store.clone())).context("loading the token secret")?);
    // A blocking std socket, never registered with tokio: one thread receives on it in batches
    // and any thread sends (udp_io).
    let coap_socket = crate::udp_io::bind(&config.coap_bind, config.reuse_port)
        .with_context(|| format!("COAP_BIND_ADDRESS/COAP_BIND_PORT: cannot listen on udp {}", config.coap_bind))?;
    enlarge_socket_buffers(&coap_socket, config.socket_buffer_bytes);
    let coap_addr = coap_socket.local_addr()?;
    // A default base URL made from COAP_BIND_PORT=0 names the port chosen now, so that the
    // endpoint URLs the server derives reach it.
    if !config.coap_base_url_set && crate::config::port_of(&config.coap_bind) == Some(0) {
        config.coap_base_url = crate::config::default_base_url("coap", coap_addr.port(), 5683);
    }
    let demo_command = if demo { Some(blocking(|| crate::demo::setup(store.as_ref(), &config, coap_addr))?) } else { None };
    let events = EventSink::start(store.clone(), config.events_ttl);
    let registry = Arc::new(Registry::default());
    for (integration, change) in blocking(|| registry.reload(store.as_ref())).context("loading integrations")? {
        events.lifecycle(integration, change.name(), None);
    }
    let pool = Arc::new(start_script_pool(&config));
    // SQLite has one writer at a time, whatever the setting.
    let writers = match (config.writer_threads, store.parallel_writers()) {
        (_, 1) | (0, _) => store.parallel_writers().max(1),
        (n, _) => n,
    };
    let uplink_writers = blocking(|| (0..writers).map(|_| store.uplink_writer()).collect::<Result<Vec<_>, _>>())
        .context("opening the uplink writer")?;
    // WebSocket subscriptions: the writers publish what they made durable, the API serves it.
    let live = Arc::new(crate::live::Hub::new(config.ws_queue_capacity, crate::http_server::websocket_session_cap()));
    // Several nodes: other nodes' subscribers get this node's commits, and the other way round.
    crate::live_relay::start(&store, live.clone()).context("starting the live relay between nodes")?;
    let writer_config = WriterConfig {
        queue_capacity: config.writer_queue_capacity,
        max_batch: config.writer_max_batch,
        batch_window: config.writer_batch_window,
        live: Some(live.clone()),
    };
    // Blocking too: the writer sets its connection up for split durability.
    let (writer, _writer_thread) = blocking(|| writer::start_many(uplink_writers, writer_config.clone()));
    // Remote integrations' records must be stored in the remote's order, which writers side by
    // side would not keep (a later batch can commit first): with more than one, the links get a
    // single writer of their own. (A device's own uplinks need no such care: it sends the next
    // only after the 2.01 of the last, which follows its commit.)
    let remote_writer = if writers > 1 && config.rpc.is_some() {
        let own = blocking(|| store.uplink_writer()).context("opening the remote integrations' writer")?;
        blocking(|| writer::start(own, writer_config)).0
    } else {
        writer.clone()
    };
    let endpoint_config = || endpoint_config(&config, store.clone());
    let script_micros = Arc::new(Histogram::new(SCRIPT_MICROS_BUCKETS));
    // Other nodes' configuration changes, and uplinks converted again after one.
    let resync = Some(crate::config_sync::ConfigSync::start(store.clone(), registry.clone(), pool.clone(), events.clone())?);
    let pipeline = Pipeline { writer: writer.clone(), events: events.clone(), script_micros: script_micros.clone(), resync };
    let endpoint = CoapEndpoint::new(coap_socket, registry.clone(), pool.clone(), pipeline.clone(), endpoint_config());
    // The DTLS endpoint: the same message layer and pipeline over the DTLS session table.
    let dtls_endpoint = match (&config.dtls, dtls_credentials) {
        (Some(settings), Some(credentials)) => {
            let transport = DtlsTransport::start(settings, credentials, registry.clone()).await?;
            Some(CoapEndpoint::with_transport(
                Transport::Dtls(transport),
                registry.clone(),
                pool.clone(),
                pipeline,
                endpoint_config(),
            ))
        }
        _ => None,
    };
    // On a store that claims exchanges itself (PostgreSQL: every node's, in the uplink's
    // transaction), a retransmission the cache misses is still answered from the database; a
    // refill would only load other nodes' exchanges, and grows with the cluster's rate (seconds
    // per restart at 450,000).
    if !store.shared_by_nodes() {
        blocking(|| restore_exchanges(store.as_ref(), &config, dtls_endpoint.iter().chain([&endpoint])))?;
    }
    let http = TcpListener::bind(&config.http_bind)
        .await
        .with_context(|| format!("HTTP_BIND_ADDRESS/HTTP_BIND_PORT: cannot listen on tcp {}", config.http_bind))?;

    let remote = crate::remote_link::RemoteHub::new(store.clone(), remote_writer, events.clone(), registry.clone());
    remote.share_statuses();
    let rpc_addr = match &config.rpc {
        Some(settings) => Some(remote.start(settings).await?),
        None => None,
    };
    let metrics = Arc::new(Metrics {
        endpoint: endpoint.clone(),
        dtls: dtls_endpoint.clone(),
        writer: writer.clone(),
        pool: pool.clone(),
        events: events.clone(),
        script_micros,
    });
    let http_settings = config.http.clone();
    let config = Arc::new(config);
    let app = api::router(AppState { store, registry, jwt, config: config.clone(), pool, events, metrics, remote, live });
    let http = HttpServer::new(http, app, http_settings, tls);

    print_banner(&config, &endpoint, dtls_endpoint.as_deref(), &http, generated_password.as_deref(), demo_command.as_deref(), started);
    if let Some(rpc) = rpc_addr {
        let tls = if config.rpc.as_ref().is_some_and(|r| r.tls.is_some()) { ", TLS" } else { "" };
        println!("  remotes   grpc://{rpc}  (coapgate remote connects here{tls})");
    }
    for line in &salvaged {
        println!("  salvaged  {line}");
    }
    tokio::spawn(endpoint.run());
    if let Some(dtls) = dtls_endpoint {
        tokio::spawn(dtls.run());
    }
    http.run(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs a start-up step that uses the store outside the runtime's context: PostgreSQL's client
/// blocks on a runtime of its own, which cannot start inside another (SQLite does not care).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The CoAP message layer's settings (plain and DTLS alike); `log` backs the deduplication
/// cache across restarts.
pub(crate) fn endpoint_config(config: &Config, log: Arc<dyn ExchangeLog>) -> EndpointConfig {
    EndpointConfig {
        piggyback_timeout: config.piggyback_timeout,
        max_in_flight: config.max_in_flight,
        dedup: DedupConfig {
            max_entries: config.dedup_max_entries,
            max_entries_per_peer: config.dedup_max_entries_per_peer,
            // A quarter of the cache per source host: one host (from any number of ports) can
            // churn only its own entries; evicting anyone else's takes four hosts.
            max_entries_per_host: (config.dedup_max_entries / 4).max(1),
            ..DedupConfig::default()
        },
        block1: Block1Config { max_body: config.max_body_bytes, ..Block1Config::default() },
        exchange_log: Some(log),
    }
}

/// Refills the endpoints' deduplication caches with the exchanges of uplinks stored before a
/// restart: their retransmissions are answered, not stored again.
pub(crate) fn restore_exchanges<'a>(
    log: &dyn ExchangeLog,
    config: &Config,
    endpoints: impl Iterator<Item = &'a Arc<CoapEndpoint>>,
) -> anyhow::Result<()> {
    let since = coapgate_storage::now_millis() - coapgate_storage::sqlite::EXCHANGE_LIFETIME_MS;
    // No more than the deduplication caches (plain and DTLS) can hold.
    let limit = 2 * config.dedup_max_entries;
    let exchanges = log.recent_exchanges(since, limit).context("loading recent CoAP exchanges")?;
    // Fewer than asked for is all there is; as many may have left some behind in the log.
    let all = exchanges.len() < limit;
    let mut restored = 0;
    for e in endpoints {
        restored += e.restore_exchanges(exchanges.clone(), all);
    }
    if restored > 0 {
        tracing::info!("remembering {restored} CoAP exchanges from before the restart");
    }
    Ok(())
}

/// Gives a CoAP socket large kernel buffers. With the default (~200 KiB) a burst of a few
/// hundred small datagrams overflows the receive buffer on loopback and the kernel drops them
/// (RcvbufErrors), which devices only recover from by retransmitting seconds later. The kernel
/// caps the size at net.core.rmem_max / wmem_max; a smaller grant is logged, not fatal.
pub fn enlarge_socket_buffers(socket: &impl std::os::fd::AsFd, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(bytes);
    let _ = sock.set_send_buffer_size(bytes);
    if let Ok(granted) = sock.recv_buffer_size()
        && granted < bytes
    {
        tracing::info!("UDP receive buffer is {granted} bytes (asked for {bytes}; raise net.core.rmem_max for more)");
    }
}

/// Opens the database: PostgreSQL (connecting, then creating or migrating the schema), or SQLite
/// after checking its write-ahead logs (a damaged one stops start-up unless `--salvage`); returns
/// the store and, when salvaging, one line per file saying what was dropped.
fn open_store(config: &Config, options: StartOptions) -> anyhow::Result<(Arc<dyn Store>, Vec<String>)> {
    if let Database::Postgres { config: pg, setting } = &config.database {
        let store = PgStore::open((**pg).clone()).map_err(|e| {
            // The storage error says where again ("cannot connect to PostgreSQL at h:p (database
            // "db"): reason"); keep the reason. It never holds the password.
            let text = e.to_string();
            match text.strip_prefix("cannot connect to PostgreSQL at ") {
                Some(rest) => {
                    let reason = rest.split_once("): ").map_or(rest, |(_, reason)| reason);
                    anyhow::anyhow!("{setting}: cannot connect to PostgreSQL at {}/{}: {reason}", pg.address(), pg.dbname())
                }
                None => anyhow::anyhow!("{setting}: cannot open the database at postgres://{}/{}: {text}", pg.address(), pg.dbname()),
            }
        })?;
        return Ok((Arc::new(store), Vec::new()));
    }
    if let Some(parent) = config.database_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("COAPGATE_DATA_DIR: cannot create {}", parent.display()))?;
    }
    let (store, salvaged) = match SqliteStore::open_checked(&config.database_path, options.salvage) {
        Ok(opened) => opened,
        Err(StorageError::DamagedWal(reports)) => anyhow::bail!(
            "refusing to start: {}. Keep a copy of the data directory, then start with --salvage \
             (or COAPGATE_SALVAGE=true) to drop that and run on the rest",
            StorageError::DamagedWal(reports)
        ),
        Err(e) => {
            // The storage error names the file at fault (main, history or events).
            return Err(e).context("DATABASE_URL: cannot open the SQLite database");
        }
    };
    let salvaged: Vec<String> = salvaged
        .iter()
        .filter_map(|r| r.damage.as_ref().map(|d| format!("{} was damaged ({d}): dropped, as --salvage asks", r.wal.display())))
        .collect();
    for line in &salvaged {
        tracing::warn!("salvaged {line}");
    }
    Ok((Arc::new(store), salvaged))
}

pub(crate) fn start_script_pool(config: &Config) -> EnginePool {
    EnginePool::start(PoolConfig {
        workers: config.script_workers,
        queue_capacity: config.script_queue_capacity,
        limits: script_limits(config),
    })
}

/// The limits every converter script runs under (the pool's, and the console's script check).
pub(crate) fn script_limits(config: &Config) -> Limits {
    Limits {
        timeout: config.js_timeout,
        memory_bytes: config.js_memory_bytes,
        tbel_timeout: config.tbel_timeout,
        tbel_memory_bytes: config.tbel_memory_bytes,
        ..Limits::default()
    }
}

fn print_banner(
    config: &Config,
    endpoint: &CoapEndpoint,
    dtls: Option<&CoapEndpoint>,
    http: &HttpServer,
    generated_password: Option<&str>,
    demo_command: Option<&str>,
    started: Instant,
) {
    let coap = endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let (scheme, http) = (http.scheme(), http.local_addr().map(|a| a.to_string()).unwrap_or_default());
    println!("coapgate {} ready in {} ms", env!("CARGO_PKG_VERSION"), started.elapsed().as_millis());
    println!("  CoAP      udp://{coap}  (devices: {}/i/<routing key>)", config.coap_base_url);
    if let Some(dtls) = dtls {
        let addr = dtls.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("  DTLS      udp://{addr}  (devices: {}/i/<routing key>)", config.coap_dtls_base_url);
    }
    println!("  REST API  {scheme}://{http}/api");
    println!("  data      {} (database {})", config.data_dir.display(), config.database.describe());
    if let Some(password) = generated_password {
        println!("  admin     {} / {password}   (generated now and shown only this once)", config.admin_username);
    }
    if let Some(command) = demo_command {
        println!("\nDemo integration ready. Send the seed uplink with:\n\n  {command}\n");
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
