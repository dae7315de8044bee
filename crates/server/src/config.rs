//! Configuration: defaults, then environment variables, then an optional TOML file.
//!
//! Variable names are ThingsBoard's where ThingsBoard has the same setting, so a user's
//! deployment environment carries over. In the TOML file the same names are written in lower
//! case (`coap_bind_port = 5683`); `coapgate config` prints a commented file with every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

/// One setting: its name (as an environment variable), default, and what it means. The table
/// drives parsing, the error messages and the commented example file alike.
struct Setting {
    name: &'static str,
    default: &'static str,
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting { name: "HTTP_BIND_ADDRESS", default: "0.0.0.0", help: "address of the REST API and web console" },
    Setting { name: "HTTP_BIND_PORT", default: "8080", help: "port of the REST API and web console" },
    Setting {
        name: "HTTP_HEADER_READ_TIMEOUT_MS",
        default: "20000",
        help: "a request's head must arrive within this time of connecting (TLS handshake included) or of its first byte, and its body within this time after the head; slower connections are closed",
    },
    Setting {
        name: "HTTP_KEEP_ALIVE_TIMEOUT_MS",
        default: "60000",
        help: "a keep-alive connection idle between requests for this long is closed",
    },
    Setting {
        name: "HTTP_MAX_CONNECTIONS",
        default: "0",
        help: "HTTP connections open at once; a newcomer replaces the oldest connection not being served, or gets 503 (with SSL: is closed) when all are; 0: half the descriptor limit, at most 8192",
    },
    Setting { name: "SSL_ENABLED", default: "false", help: "serve the REST API and web console over HTTPS" },
    Setting { name: "SSL_CREDENTIALS_TYPE", default: "PEM", help: "HTTPS server credentials: PEM or KEYSTORE" },
    Setting {
        name: "SSL_PEM_CERT",
        default: "server.pem",
        help: "PEM certificate chain, server certificate first; may also hold the private key (PEM credentials)",
    },
    Setting { name: "SSL_PEM_KEY", default: "", help: "PEM private key; empty: the key is in SSL_PEM_CERT (PEM credentials)" },
    Setting { name: "SSL_PEM_KEY_PASSWORD", default: "", help: "password of an encrypted PEM private key" },
    Setting { name: "SSL_KEY_STORE", default: "keystore.p12", help: "HTTPS key store file, JKS or PKCS#12 (KEYSTORE credentials)" },
    Setting { name: "SSL_KEY_STORE_TYPE", default: "", help: "JKS or PKCS12; empty: taken from the file" },
    Setting { name: "SSL_KEY_STORE_PASSWORD", default: "thingsboard", help: "HTTPS key store password" },
    Setting { name: "SSL_KEY_ALIAS", default: "tomcat", help: "alias of the server's key entry in the HTTPS key store" },
    Setting { name: "SSL_KEY_PASSWORD", default: "thingsboard", help: "HTTPS private key password; empty: the key store password" },
    Setting { name: "COAP_BIND_ADDRESS", default: "0.0.0.0", help: "address of the plain CoAP (UDP) endpoint" },
    Setting { name: "COAP_BIND_PORT", default: "5683", help: "port of the plain CoAP (UDP) endpoint" },
    Setting {
        name: "COAP_BASE_URL",
        default: "",
        help: "public base URL devices use (e.g. coap://my.host); default coap://<this host's name>[:port]",
    },
    Setting { name: "COAP_DTLS_ENABLED", default: "false", help: "enable the DTLS 1.2 endpoint" },
    Setting { name: "COAP_DTLS_BIND_ADDRESS", default: "0.0.0.0", help: "address of the DTLS endpoint" },
    Setting { name: "COAP_DTLS_BIND_PORT", default: "5684", help: "port of the DTLS endpoint" },
    Setting {
        name: "COAP_DTLS_BASE_URL",
        default: "",
        help: "public base URL of the DTLS endpoint (e.g. coaps://my.host); default coaps://<this host's name>[:port]",
    },
    Setting { name: "COAP_DTLS_CREDENTIALS_TYPE", default: "KEYSTORE", help: "server credentials: KEYSTORE or PEM" },
    Setting { name: "COAP_DTLS_KEY_STORE", default: "coapserver.jks", help: "key store file (JKS or PKCS#12)" },
    Setting { name: "COAP_DTLS_KEY_STORE_TYPE", default: "", help: "JKS or PKCS12; empty: taken from the file" },
    Setting { name: "COAP_DTLS_KEY_STORE_PASSWORD", default: "", help: "key store password" },
    Setting { name: "COAP_DTLS_KEY_PASSWORD", default: "", help: "private key password; empty: the key store password" },
    Setting { name: "COAP_DTLS_KEY_ALIAS", default: "serveralias", help: "alias of the server's key entry in the key store" },
    Setting { name: "COAP_DTLS_PEM_CERT", default: "", help: "PEM certificate chain, server certificate first (PEM credentials)" },
    Setting { name: "COAP_DTLS_PEM_KEY", default: "", help: "PEM private key (PEM credentials)" },
    Setting { name: "COAP_DTLS_PEM_KEY_PASSWORD", default: "", help: "password of an encrypted PEM private key" },
    Setting {
        name: "COAP_DTLS_CONNECTION_ID_LENGTH",
        default: "8",
        help: "RFC 9146 connection ID length, 0 disables; accepted but not yet effective (OpenSSL 3 has no connection IDs)",
    },
    Setting {
        name: "TB_COAP_X509_DTLS_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT",
        default: "false",
        help: "accept client certificates that are expired or not yet valid",
    },
    Setting { name: "COAP_DTLS_MAX_SESSIONS", default: "10000", help: "DTLS sessions kept at once (established and half-open)" },
    Setting {
        name: "COAP_DTLS_MAX_HANDSHAKES",
        default: "1000",
        help: "DTLS handshakes in progress (after the cookie exchange) at once; above it new ClientHellos are dropped",
    },
    Setting { name: "COAP_DTLS_MAX_HANDSHAKES_PER_IP", default: "100", help: "DTLS handshakes in progress from one IP address" },
    Setting { name: "COAP_DTLS_HANDSHAKE_TIMEOUT_MS", default: "20000", help: "a DTLS handshake not finished by then is dropped" },
    Setting { name: "COAP_DTLS_SESSION_IDLE_TIMEOUT_SEC", default: "1800", help: "a DTLS session without traffic for this long is dropped" },
    Setting {
        name: "COAP_PIGGYBACK_TIMEOUT_MS",
        default: "500",
        help: "answer a CON with an empty ACK and a separate response when processing takes longer than this",
    },
    Setting {
        name: "COAP_MAX_IN_FLIGHT",
        default: "20000",
        help: "uplinks accepted but not yet answered; above it requests get 5.03 Service Unavailable",
    },
    Setting {
        name: "COAP_SOCKET_BUFFER_BYTES",
        default: "4194304",
        help: "kernel receive and send buffer of each CoAP socket (capped by net.core.rmem_max / wmem_max)",
    },
    Setting {
        name: "COAP_REUSE_PORT",
        default: "false",
        help: "open the CoAP and DTLS sockets with SO_REUSEPORT, so several nodes on one machine share the ports (the kernel keeps each source address on one node)",
    },
    Setting {
        name: "COAP_MAX_BODY_BYTES",
        default: "65536",
        help: "largest uplink body, block-wise (RFC 7959) included; larger ones get 4.13 with Size1",
    },
    Setting {
        name: "COAP_DEDUP_MAX_ENTRIES",
        default: "0",
        help: "message-deduplication entries kept in memory (beyond them the durable exchange log answers; a peer faster than its Message IDs last gets a 1 MiB table of every id, at most this / 4096 peers); 0: 500000 for serve, 50000 for remote",
    },
    Setting {
        name: "COAP_DEDUP_MAX_ENTRIES_PER_PEER",
        default: "20000",
        help: "message-deduplication entries one peer may hold",
    },
    Setting {
        name: "DATABASE_URL",
        default: "",
        help: "sqlite://FILE, or postgres://USER:PASSWORD@HOST:PORT/DB (also postgresql://) for PostgreSQL; wins over SPRING_DATASOURCE_URL; default: coapgate.db in the data directory",
    },
    Setting {
        name: "SPRING_DATASOURCE_URL",
        default: "",
        help: "PostgreSQL in ThingsBoard's form, jdbc:postgresql://HOST:PORT/DB, with SPRING_DATASOURCE_USERNAME and SPRING_DATASOURCE_PASSWORD; used when DATABASE_URL is empty",
    },
    Setting { name: "SPRING_DATASOURCE_USERNAME", default: "", help: "PostgreSQL user name for SPRING_DATASOURCE_URL" },
    Setting { name: "SPRING_DATASOURCE_PASSWORD", default: "", help: "PostgreSQL password for SPRING_DATASOURCE_URL (never printed)" },
    Setting { name: "COAPGATE_DATA_DIR", default: "./data", help: "directory for the database and secrets" },
    Setting { name: "COAPGATE_ADMIN_USERNAME", default: "tenant@thingsboard.org", help: "first-run admin user" },
    Setting {
        name: "COAPGATE_ADMIN_PASSWORD",
        default: "",
        help: "first-run admin password (6 to 72 characters); a random one is generated and printed once if empty; \
               later changes are ignored: use `coapgate reset-password`",
    },
    Setting { name: "EVENTS_TTL_DAYS", default: "7", help: "how long debug, lifecycle, statistics and error events are kept" },
    Setting { name: "SCRIPT_WORKERS", default: "0", help: "converter worker threads; 0 means one per CPU core" },
    Setting { name: "SCRIPT_QUEUE_CAPACITY", default: "10000", help: "uplinks waiting for a converter worker" },
    Setting { name: "JS_MAX_EXECUTION_TIME_MS", default: "500", help: "JavaScript converter time limit per call" },
    Setting { name: "JS_MAX_MEMORY_MB", default: "100", help: "JavaScript converter memory limit per worker" },
    Setting { name: "TBEL_MAX_EXECUTION_TIME_MS", default: "500", help: "TBEL converter time limit per call" },
    Setting { name: "TBEL_MAX_MEMORY_MB", default: "8", help: "TBEL converter memory limit per call" },
    Setting { name: "WRITER_QUEUE_CAPACITY", default: "20000", help: "decoded uplinks waiting for the database writer" },
    Setting {
        name: "WS_MAX_QUEUE_MESSAGES_PER_SESSION",
        default: "1000",
        help: "committed changes waiting for one WebSocket session; a session that lets more pile up (its client does not read) is closed",
    },
    Setting { name: "WRITER_MAX_BATCH", default: "2000", help: "most uplinks committed in one transaction" },
    Setting {
        name: "WRITER_THREADS",
        default: "0",
        help: "uplink writers committing side by side, each with its own connection; 0: 1 on SQLite (one writer at a time), 2 on PostgreSQL",
    },
    Setting {
        name: "WRITER_BATCH_WINDOW_MS",
        default: "0",
        help: "how long the writer waits for more uplinks before committing a partial batch",
    },
    // The platform's side of remote integrations (`serve`), with ThingsBoard's names.
    Setting { name: "INTEGRATIONS_RPC_ENABLED", default: "false", help: "accept remote integrations (`coapgate remote`) over gRPC" },
    Setting { name: "INTEGRATIONS_RPC_BIND_ADDRESS", default: "0.0.0.0", help: "address remote integrations connect to" },
    Setting { name: "INTEGRATIONS_RPC_PORT", default: "9090", help: "port remote integrations connect to" },
    Setting { name: "INTEGRATIONS_RPC_SSL_ENABLED", default: "false", help: "TLS for remote integrations' connections" },
    Setting {
        name: "INTEGRATIONS_RPC_SSL_CERT",
        default: "certChainFile.pem",
        help: "PEM certificate chain (server certificate first) for remote integrations' TLS",
    },
    Setting { name: "INTEGRATIONS_RPC_SSL_PRIVATE_KEY", default: "privateKeyFile.pem", help: "PEM private key for remote integrations' TLS" },
    // `coapgate remote`, with the names of ThingsBoard's remote integration.
    Setting { name: "RPC_HOST", default: "localhost", help: "remote: the platform's host (its INTEGRATIONS_RPC_PORT is RPC_PORT)" },
    Setting { name: "RPC_PORT", default: "9090", help: "remote: the platform's INTEGRATIONS_RPC_PORT" },
    Setting { name: "RPC_SSL_ENABLED", default: "false", help: "remote: connect to the platform over TLS" },
    Setting {
        name: "RPC_SSL_CERT",
        default: "",
        help: "remote: PEM file of the certificate authority that signed the platform's certificate; empty: the system's roots",
    },
    Setting { name: "RPC_CLIENT_ID", default: "", help: "remote: this remote's service id in the console and its events; default: the host name" },
    Setting { name: "INTEGRATION_ROUTING_KEY", default: "", help: "remote: the integration's routing key (Integration key in the console)" },
    Setting { name: "INTEGRATION_SECRET", default: "", help: "remote: the integration's secret (Integration secret in the console)" },
    Setting {
        name: "REMOTE_OUTBOX_MAX_BYTES",
        default: "268435456",
        help: "remote: most bytes of converted uplinks kept while the platform has not stored them; when full, devices get 5.03",
    },
];

/// The resolved configuration of `coapgate serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_bind: String,
    /// Timeouts and the connection cap of the REST API's HTTP server.
    pub http: HttpSettings,
    /// HTTPS credentials; `Some` exactly when `SSL_ENABLED`.
    pub ssl: Option<ServerCredentials>,
    pub coap_bind: String,
    pub coap_base_url: String,
    /// Whether `COAP_BASE_URL` was set: the console then offers it as it is, and otherwise the
    /// host the browser used with the CoAP port (this host's name may not resolve for devices).
    pub coap_base_url_set: bool,
    pub dtls_enabled: bool,
    /// The DTLS endpoint's settings; `Some` exactly when `dtls_enabled`.
    pub dtls: Option<DtlsSettings>,
    pub coap_dtls_base_url: String,
    /// Whether `COAP_DTLS_BASE_URL` was set (see `coap_base_url_set`).
    pub coap_dtls_base_url_set: bool,
    pub piggyback_timeout: Duration,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    pub socket_buffer_bytes: usize,
    /// `COAP_REUSE_PORT`: several nodes share the CoAP ports of one machine.
    pub reuse_port: bool,
    /// `COAP_DEDUP_MAX_ENTRIES`, with 0 resolved to `serve`'s 500,000 (`coapgate remote`
    /// resolves it to its own, see `dedup_automatic`).
    pub dedup_max_entries: usize,
    /// Whether `COAP_DEDUP_MAX_ENTRIES` was left automatic (0).
    pub dedup_automatic: bool,
    pub dedup_max_entries_per_peer: usize,
    pub data_dir: PathBuf,
    /// Which database `serve` runs on.
    pub database: Database,
    /// The SQLite file (`coapgate check`, `reset-password`, file permissions); with PostgreSQL
    /// the file SQLite would use, which nothing opens.
    pub database_path: PathBuf,
    pub admin_username: String,
    pub admin_password: Option<String>,
    pub events_ttl: Duration,
    pub script_workers: usize,
    pub script_queue_capacity: usize,
    pub js_timeout: Duration,
    pub js_memory_bytes: usize,
    pub tbel_timeout: Duration,
    pub tbel_memory_bytes: usize,
    pub writer_queue_capacity: usize,
    pub writer_max_batch: usize,
    /// `WS_MAX_QUEUE_MESSAGES_PER_SESSION`: the bound of each WebSocket session's inbox.
    pub ws_queue_capacity: usize,
    /// `WRITER_THREADS`; 0 leaves it to the store (`Store::parallel_writers`).
    pub writer_threads: usize,
    pub writer_batch_window: Duration,
    /// The gRPC endpoint for remote integrations; `Some` exactly when `INTEGRATIONS_RPC_ENABLED`.
    pub rpc: Option<RpcServerSettings>,
    /// What `coapgate remote` needs (checked when it starts, not by `serve`).
    pub remote: RemoteSettings,
}

/// The platform's gRPC endpoint for remote integrations.
#[derive(Debug, Clone)]
pub struct RpcServerSettings {
    pub bind: String,
    /// PEM chain and key files, when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// `coapgate remote`'s link to the platform.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// The trust root for the platform's certificate; `None`: the system's roots.
    pub ca_cert: Option<PathBuf>,
    pub service_id: String,
    pub routing_key: String,
    pub secret: String,
    pub outbox_max_bytes: u64,
}

impl RemoteSettings {
    /// The command-line form (`--platform grpc[s]://HOST[:PORT] --routing-key K --secret S`),
    /// which wins over the environment.
    pub fn apply_flags(&mut self, platform: Option<&str>, routing_key: Option<String>, secret: Option<String>) -> anyhow::Result<()> {
        if let Some(url) = platform {
            let (tls, rest) = match url.split_once("://") {
                Some(("grpc" | "http", rest)) => (false, rest),
                Some(("grpcs" | "https", rest)) => (true, rest),
                Some((scheme, _)) => bail!("--platform: `{url}`: the scheme must be grpc:// or grpcs://, not {scheme}://"),
                None => (self.tls, url),
            };
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() || rest.contains('/') {
                bail!("--platform: `{url}` must be grpc://HOST:PORT or grpcs://HOST:PORT");
            }
            // [v6]:port, host:port, or a host alone.
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
                    (host, port.parse::<u16>().map_err(|e| anyhow::anyhow!("--platform: port `{port}`: {e}"))?)
                }
                _ => (rest, 9090),
            };
            self.host = host.trim_matches(['[', ']']).to_string();
            self.port = port;
            self.tls = tls;
        }
        if let Some(key) = routing_key {
            self.routing_key = key;
        }
        if let Some(secret) = secret {
            self.secret = secret;
        }
        Ok(())
    }

    /// What `coapgate remote` cannot start without.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.routing_key.is_empty() {
            bail!("INTEGRATION_ROUTING_KEY: must be set to the integration's key (shown in the console under Execute remotely)");
        }
        if self.secret.is_empty() {
            bail!("INTEGRATION_SECRET: must be set to the integration's secret (shown in the console under Execute remotely)");
        }
        if self.host.is_empty() {
            bail!("RPC_HOST: must name the platform's host");
        }
        Ok(())
    }
}

impl Config {
    /// Reads the environment and, when given, the TOML file (which wins); `data_dir_flag` is the
    /// `--data-dir` command-line flag, which wins over both.
    pub fn load(file: Option<&Path>, data_dir_flag: Option<&Path>) -> anyhow::Result<Config> {
        let mut values: BTreeMap<&'static str, String> =
            SETTINGS.iter().map(|s| (s.name, s.default.to_string())).collect();
        for s in SETTINGS {
            if let Ok(v) = std::env::var(s.name) {
                values.insert(s.name, v);
            }
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--config: cannot read {}", file.display()))?;
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("--config: {} is not valid TOML", file.display()))?;
            for (key, value) in table {
                let Some(setting) = SETTINGS.iter().find(|s| s.name.eq_ignore_ascii_case(&key)) else {
                    bail!("--config: unknown setting `{key}` in {}", file.display());
                };
                let text = match value {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                values.insert(setting.name, text);
            }
        }
        if let Some(dir) = data_dir_flag {
            values.insert("COAPGATE_DATA_DIR", dir.display().to_string());
        }
        Config::from_values(&values)
    }

    fn from_values(v: &BTreeMap<&'static str, String>) -> anyhow::Result<Config> {
        let get = |name: &str| v.get(name).map(String::as_str).unwrap_or_default();
        let data_dir = PathBuf::from(get("COAPGATE_DATA_DIR"));
        let database = Database::from_values(v, &data_dir)?;
        let database_path = match &database {
            Database::Sqlite(path) => path.clone(),
            Database::Postgres { .. } => data_dir.join("coapgate.db"),
        };
        let coap_port: u16 = parse(v, "COAP_BIND_PORT")?;
        let http_port: u16 = parse(v, "HTTP_BIND_PORT")?;
        let coap_base_url = match get("COAP_BASE_URL") {
            "" => default_base_url("coap", coap_port, 5683),
            url if url.starts_with("coap://") => url.trim_end_matches('/').to_string(),
            url => bail!("COAP_BASE_URL: `{url}` must start with coap://"),
        };
        let dtls_port: u16 = parse(v, "COAP_DTLS_BIND_PORT")?;
        let coap_dtls_base_url = match get("COAP_DTLS_BASE_URL") {
            "" => default_base_url("coaps", dtls_port, 5684),
            url if url.starts_with("coaps://") => url.trim_end_matches('/').to_string(),
            url => bail!("COAP_DTLS_BASE_URL: `{url}` must start with coaps://"),
        };
        let dtls_enabled = parse_bool(v, "COAP_DTLS_ENABLED")?;
        let dtls = if dtls_enabled { Some(DtlsSettings::from_values(v, dtls_port)?) } else { None };
        let http = HttpSettings {
            header_read_timeout: Duration::from_millis(positive(v, "HTTP_HEADER_READ_TIMEOUT_MS")? as u64),
            keep_alive_timeout: Duration::from_millis(positive(v, "HTTP_KEEP_ALIVE_TIMEOUT_MS")? as u64),
            max_connections: parse(v, "HTTP_MAX_CONNECTIONS")?,
        };
        let ssl = if parse_bool(v, "SSL_ENABLED")? { Some(ServerCredentials::from_values(v, "SSL_")?) } else { None };
        let admin_password = Some(get("COAPGATE_ADMIN_PASSWORD").to_string()).filter(|p| !p.is_empty());
        let workers: usize = parse(v, "SCRIPT_WORKERS")?;
        let dedup_entries: usize = parse(v, "COAP_DEDUP_MAX_ENTRIES")?;
        let config = Config {
            http_bind: format!("{}:{http_port}", get("HTTP_BIND_ADDRESS")),
            http,
            ssl,
            coap_bind: format!("{}:{coap_port}", get("COAP_BIND_ADDRESS")),
            coap_base_url,
            coap_base_url_set: !get("COAP_BASE_URL").is_empty(),
            dtls_enabled,
            dtls,
            coap_dtls_base_url,
            coap_dtls_base_url_set: !get("COAP_DTLS_BASE_URL").is_empty(),
            piggyback_timeout: Duration::from_millis(parse(v, "COAP_PIGGYBACK_TIMEOUT_MS")?),
            max_in_flight: positive(v, "COAP_MAX_IN_FLIGHT")?,
            max_body_bytes: positive(v, "COAP_MAX_BODY_BYTES")?,
            socket_buffer_bytes: positive(v, "COAP_SOCKET_BUFFER_BYTES")?,
            reuse_port: parse_bool(v, "COAP_REUSE_PORT")?,
            dedup_max_entries: if dedup_entries == 0 { 500_000 } else { dedup_entries },
            dedup_automatic: dedup_entries == 0,
            dedup_max_entries_per_peer: positive(v, "COAP_DEDUP_MAX_ENTRIES_PER_PEER")?,
            data_dir,
            database,
            database_path,
            admin_username: get("COAPGATE_ADMIN_USERNAME").to_string(),
            admin_password,
            events_ttl: Duration::from_secs(positive(v, "EVENTS_TTL_DAYS")? as u64 * 86_400),
            script_workers: if workers == 0 {
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
            } else {
                workers
            },
            script_queue_capacity: positive(v, "SCRIPT_QUEUE_CAPACITY")?,
            js_timeout: Duration::from_millis(positive(v, "JS_MAX_EXECUTION_TIME_MS")? as u64),
            js_memory_bytes: positive(v, "JS_MAX_MEMORY_MB")? * 1024 * 1024,
            tbel_timeout: Duration::from_millis(positive(v, "TBEL_MAX_EXECUTION_TIME_MS")? as u64),
            tbel_memory_bytes: positive(v, "TBEL_MAX_MEMORY_MB")? * 1024 * 1024,
            writer_queue_capacity: positive(v, "WRITER_QUEUE_CAPACITY")?,
            writer_max_batch: positive(v, "WRITER_MAX_BATCH")?,
            ws_queue_capacity: positive(v, "WS_MAX_QUEUE_MESSAGES_PER_SESSION")?,
            writer_threads: parse(v, "WRITER_THREADS")?,
            writer_batch_window: Duration::from_millis(parse(v, "WRITER_BATCH_WINDOW_MS")?),
            rpc: if parse_bool(v, "INTEGRATIONS_RPC_ENABLED")? {
                let port: u16 = parse(v, "INTEGRATIONS_RPC_PORT")?;
                let tls = if parse_bool(v, "INTEGRATIONS_RPC_SSL_ENABLED")? {
                    Some((PathBuf::from(get("INTEGRATIONS_RPC_SSL_CERT")), PathBuf::from(get("INTEGRATIONS_RPC_SSL_PRIVATE_KEY"))))
                } else {
                    None
                };
                Some(RpcServerSettings { bind: format!("{}:{port}", get("INTEGRATIONS_RPC_BIND_ADDRESS")), tls })
            } else {
                None
            },
            remote: RemoteSettings {
                host: get("RPC_HOST").trim().to_string(),
                port: parse(v, "RPC_PORT")?,
                tls: parse_bool(v, "RPC_SSL_ENABLED")?,
                ca_cert: Some(get("RPC_SSL_CERT").trim()).filter(|p| !p.is_empty()).map(PathBuf::from),
                service_id: Some(get("RPC_CLIENT_ID").trim().to_string())
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(crate::events::host_name),
                routing_key: get("INTEGRATION_ROUTING_KEY").trim().to_string(),
                secret: get("INTEGRATION_SECRET").to_string(),
                outbox_max_bytes: positive(v, "REMOTE_OUTBOX_MAX_BYTES")? as u64,
            },
        };
        if config.admin_username.is_empty() {
            bail!("COAPGATE_ADMIN_USERNAME: must not be empty");
        }
        Ok(config)
    }
}

/// The database `serve` runs on: the embedded SQLite (the default) or a PostgreSQL server.
#[derive(Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres {
        /// The connection settings (the password inside is never printed); boxed, it is large.
        config: Box<coapgate_storage::PgConfig>,
        /// The setting it came from, for error messages: `DATABASE_URL` or `SPRING_DATASOURCE_URL`.
        setting: &'static str,
    },
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Database {
    /// `DATABASE_URL` wins; then `SPRING_DATASOURCE_URL` (with its user name and password); then
    /// SQLite in the data directory.
    fn from_values(v: &BTreeMap<&'static str, String>, data_dir: &Path) -> anyhow::Result<Database> {
        let get = |name: &str| v.get(name).map(String::as_str).unwrap_or_default().trim();
        let url = get("DATABASE_URL");
        if !url.is_empty() {
            if let Some(path) = url.strip_prefix("sqlite://") {
                // An empty path would make SQLite use a temporary database and lose everything.
                if path.trim().is_empty() {
                    bail!("DATABASE_URL: sqlite:// needs a file path, e.g. sqlite:///var/lib/coapgate/coapgate.db");
                }
                return Ok(Database::Sqlite(PathBuf::from(path)));
            }
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                // The storage crate's errors never carry the password.
                let config = coapgate_storage::PgConfig::from_url(url).map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
                return Ok(Database::Postgres { config: Box::new(config), setting: "DATABASE_URL" });
            }
            bail!("DATABASE_URL: `{}` is neither sqlite://FILE nor postgres://USER:PASSWORD@HOST:PORT/DB", redact(url));
        }
        let jdbc = get("SPRING_DATASOURCE_URL");
        if !jdbc.is_empty() {
            if !jdbc.starts_with("jdbc:postgresql://") {
                bail!("SPRING_DATASOURCE_URL: `{}` must be jdbc:postgresql://HOST:PORT/DB", redact(jdbc));
            }
            let user = Some(get("SPRING_DATASOURCE_USERNAME")).filter(|u| !u.is_empty());
            // Not trimmed: a password may end with a space.
            let password = v.get("SPRING_DATASOURCE_PASSWORD").map(String::as_str).filter(|p| !p.is_empty());
            let config = coapgate_storage::PgConfig::from_jdbc(jdbc, user, password)
                .map_err(|e| anyhow::anyhow!("SPRING_DATASOURCE_URL: {e}"))?;
            return Ok(Database::Postgres { config: Box::new(config), setting: "SPRING_DATASOURCE_URL" });
        }
        Ok(Database::Sqlite(data_dir.join("coapgate.db")))
    }

    /// For the banner and messages, never with a password: the SQLite file, or
    /// `postgres://HOST:PORT/DB`.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres { config, .. } => format!("postgres://{}/{}", config.address(), config.dbname()),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres { .. })
    }
}

/// A URL with what could be a password (between `://user:` and the last `@`, or after
/// `password=`) replaced, for error messages about URLs that could not be parsed.
fn redact(url: &str) -> String {
    coapgate_storage::postgres::redact_url(url)
}

/// The HTTP server's limits: what a connection may take before it is closed.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// From connecting (TLS handshake included), or from a request's first byte, to the end of
    /// its head; and from there to the end of its body.
    pub header_read_timeout: Duration,
    /// Between the end of a response and the first byte of the next request.
    pub keep_alive_timeout: Duration,
    /// Connections open at once; 0 means derived from the descriptor limit at start-up.
    pub max_connections: usize,
}

/// The HTTPS server's credentials, from ThingsBoard's `SSL_*` settings: a key store or PEM files.
#[derive(Debug, Clone)]
pub struct ServerCredentials {
    /// The settings' prefix (`SSL_`), so that a loading error names the setting to fix.
    pub prefix: &'static str,
    pub source: DtlsCredentials,
}

impl ServerCredentials {
    fn from_values(v: &BTreeMap<&'static str, String>, prefix: &'static str) -> anyhow::Result<ServerCredentials> {
        let get = |name: &str| v.get(format!("{prefix}{name}").as_str()).map(String::as_str).unwrap_or_default().to_string();
        let source = match get("CREDENTIALS_TYPE").trim().to_ascii_uppercase().as_str() {
            "KEYSTORE" => {
                let store_type = match get("KEY_STORE_TYPE").trim().to_ascii_uppercase().as_str() {
                    "" => None,
                    "JKS" => Some(coapgate_dtls::StoreType::Jks),
                    "PKCS12" | "P12" => Some(coapgate_dtls::StoreType::Pkcs12),
                    other => bail!("{prefix}KEY_STORE_TYPE: `{other}` is neither JKS nor PKCS12"),
                };
                let path = get("KEY_STORE");
                if path.trim().is_empty() {
                    bail!("{prefix}KEY_STORE: must name the key store file when {prefix}CREDENTIALS_TYPE=KEYSTORE");
                }
                DtlsCredentials::KeyStore {
                    path: PathBuf::from(path),
                    store_type,
                    store_password: get("KEY_STORE_PASSWORD"),
                    key_password: get("KEY_PASSWORD"),
                    alias: get("KEY_ALIAS"),
                }
            }
            "PEM" => {
                let cert = get("PEM_CERT");
                if cert.trim().is_empty() {
                    bail!("{prefix}PEM_CERT: must name the certificate file when {prefix}CREDENTIALS_TYPE=PEM");
                }
                // As ThingsBoard: without a key file the key is read from the certificate file.
                let key = Some(get("PEM_KEY")).filter(|k| !k.trim().is_empty()).unwrap_or_else(|| cert.clone());
                DtlsCredentials::Pem { cert: cert.into(), key: key.into(), key_password: get("PEM_KEY_PASSWORD") }
            }
            other => bail!("{prefix}CREDENTIALS_TYPE: `{other}` is neither PEM nor KEYSTORE"),
        };
        Ok(ServerCredentials { prefix, source })
    }
}

/// Where server credentials come from (the DTLS endpoint's, and HTTPS's through
/// [`ServerCredentials`]).

#[derive(Debug, Clone)]
pub enum DtlsCredentials {
    KeyStore { path: PathBuf, store_type: Option<coapgate_dtls::StoreType>, store_password: String, key_password: String, alias: String },
    Pem { cert: PathBuf, key: PathBuf, key_password: String },
}

/// The DTLS endpoint's settings (SPEC §1), read only when `COAP_DTLS_ENABLED`.
#[derive(Debug, Clone)]
pub struct DtlsSettings {
    pub bind: String,
    pub credentials: DtlsCredentials,
    /// RFC 9146 connection ID length: accepted, not yet effective (OpenSSL 3 lacks CIDs).
    pub connection_id_length: u8,
    pub skip_client_cert_validity: bool,
    pub max_sessions: usize,
    pub max_handshakes: usize,
    pub max_handshakes_per_ip: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub socket_buffer_bytes: usize,
    /// `COAP_REUSE_PORT`, for the DTLS socket too.
    pub reuse_port: bool,
}

impl DtlsSettings {
    fn from_values(v: &BTreeMap<&'static str, String>, port: u16) -> anyhow::Result<DtlsSettings> {
        let get = |name: &str| v.get(name).map(String::as_str).unwrap_or_default().to_string();
        // The same settings as HTTPS's under another prefix, read the same way (ThingsBoard uses
        // one SslCredentials reader for both): an empty PEM key means the key is in the cert file.
        let credentials = ServerCredentials::from_values(v, "COAP_DTLS_")?.source;
        Ok(DtlsSettings {
            bind: format!("{}:{port}", get("COAP_DTLS_BIND_ADDRESS")),
            credentials,
            connection_id_length: parse(v, "COAP_DTLS_CONNECTION_ID_LENGTH")?,
            skip_client_cert_validity: parse_bool(v, "TB_COAP_X509_DTLS_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT")?,
            max_sessions: positive(v, "COAP_DTLS_MAX_SESSIONS")?,
            max_handshakes: positive(v, "COAP_DTLS_MAX_HANDSHAKES")?,
            max_handshakes_per_ip: positive(v, "COAP_DTLS_MAX_HANDSHAKES_PER_IP")?,
            handshake_timeout: Duration::from_millis(positive(v, "COAP_DTLS_HANDSHAKE_TIMEOUT_MS")? as u64),
            idle_timeout: Duration::from_secs(positive(v, "COAP_DTLS_SESSION_IDLE_TIMEOUT_SEC")? as u64),
            socket_buffer_bytes: positive(v, "COAP_SOCKET_BUFFER_BYTES")?,
            reuse_port: parse_bool(v, "COAP_REUSE_PORT")?,
        })
    }
}

fn parse<T: std::str::FromStr>(v: &BTreeMap<&'static str, String>, name: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let text = v.get(name).map(String::as_str).unwrap_or_default().trim();
    text.parse::<T>().map_err(|e| anyhow::anyhow!("{name}: `{text}` is not valid: {e}"))
}

fn positive(v: &BTreeMap<&'static str, String>, name: &str) -> anyhow::Result<usize> {
    let n: usize = parse(v, name)?;
    if n == 0 {
        bail!("{name}: must be greater than 0");
    }
    Ok(n)
}

fn parse_bool(v: &BTreeMap<&'static str, String>, name: &str) -> anyhow::Result<bool> {
    let text = v.get(name).map(String::as_str).unwrap_or_default().trim();
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => bail!("{name}: `{text}` is not true or false"),
    }
}

pub(crate) fn default_base_url(scheme: &str, port: u16, default_port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    if port == default_port { format!("{scheme}://{host}") } else { format!("{scheme}://{host}:{port}") }
}

/// The port of an "addr:port" bind address (IPv6 addresses included), if it has one.
pub(crate) fn port_of(bind: &str) -> Option<u16> {
    bind.rsplit_once(':').and_then(|(_, port)| port.parse().ok())
}

/// A TOML file with every setting, its default, and a comment saying what it is for.
pub fn commented_example() -> String {
    let mut out = String::from(
        "# coapgate configuration. Every setting can also be given as an environment variable of\n\
         # the same name in upper case; values in this file win over the environment.\n\n",
    );
    for s in SETTINGS {
        out.push_str(&format!("# {} (env {})\n", s.help, s.name));
        let value = if s.default.parse::<f64>().is_ok() || s.default == "true" || s.default == "false" {
            s.default.to_string()
        } else {
            format!("{:?}", s.default)
        };
        out.push_str(&format!("# {} = {}\n\n", s.name.to_ascii_lowercase(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        let mut v: BTreeMap<&'static str, String> = SETTINGS.iter().map(|s| (s.name, s.default.to_string())).collect();
        for (k, val) in pairs {
            v.insert(k, val.to_string());
        }
        v
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::from_values(&values(&[])).unwrap();
        assert_eq!(c.http_bind, "0.0.0.0:8080");
        assert_eq!(c.coap_bind, "0.0.0.0:5683");
        assert_eq!(c.database_path, PathBuf::from("./data/coapgate.db"));
        assert!(c.admin_password.is_none());
        assert!(c.dtls.is_none());
        assert!(c.coap_dtls_base_url.starts_with("coaps://") && !c.coap_dtls_base_url.ends_with(":5684"));
        let c = Config::from_values(&values(&[("COAP_DTLS_ENABLED", "true")])).unwrap();
        let dtls = c.dtls.unwrap();
        assert_eq!(dtls.bind, "0.0.0.0:5684");
        assert_eq!(dtls.connection_id_length, 8);
        assert!(matches!(dtls.credentials, DtlsCredentials::KeyStore { ref alias, .. } if alias == "serveralias"));
        assert!(c.ssl.is_none());
        assert_eq!(c.http.max_connections, 0);
        // ThingsBoard's defaults; a PEM key may sit in the certificate file.
        let c = Config::from_values(&values(&[("SSL_ENABLED", "true")])).unwrap();
        let ssl = c.ssl.unwrap();
        assert!(matches!(ssl.source, DtlsCredentials::Pem { ref cert, ref key, .. } if cert == key && cert.ends_with("server.pem")));
        let c = Config::from_values(&values(&[("SSL_ENABLED", "true"), ("SSL_CREDENTIALS_TYPE", "keystore")])).unwrap();
        assert!(matches!(c.ssl.unwrap().source, DtlsCredentials::KeyStore { ref alias, ref store_password, .. }
            if alias == "tomcat" && store_password == "thingsboard"));
    }

    #[test]
    fn errors_name_the_setting() {
        for (pairs, expected) in [
            (vec![("COAP_BIND_PORT", "70000")], "COAP_BIND_PORT"),
            (vec![("COAP_DTLS_ENABLED", "maybe")], "COAP_DTLS_ENABLED"),
            (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (vec![("WRITER_MAX_BATCH", "0")], "WRITER_MAX_BATCH"),
            (vec![("COAP_BASE_URL", "http://x")], "COAP_BASE_URL"),
            (vec![("COAP_DTLS_ENABLED", "true"), ("COAP_DTLS_CREDENTIALS_TYPE", "X")], "COAP_DTLS_CREDENTIALS_TYPE"),
            (vec![("COAP_DTLS_ENABLED", "true"), ("COAP_DTLS_CREDENTIALS_TYPE", "PEM")], "COAP_DTLS_PEM_CERT"),
            (vec![("COAP_DTLS_ENABLED", "true"), ("COAP_DTLS_KEY_STORE_TYPE", "JCEKS")], "COAP_DTLS_KEY_STORE_TYPE"),
            (vec![("COAP_DTLS_ENABLED", "true"), ("COAP_DTLS_CONNECTION_ID_LENGTH", "300")], "COAP_DTLS_CONNECTION_ID_LENGTH"),
            (vec![("COAP_DTLS_BASE_URL", "coap://x")], "COAP_DTLS_BASE_URL"),
            (vec![("HTTP_HEADER_READ_TIMEOUT_MS", "0")], "HTTP_HEADER_READ_TIMEOUT_MS"),
            (vec![("INTEGRATIONS_RPC_ENABLED", "true"), ("INTEGRATIONS_RPC_PORT", "x")], "INTEGRATIONS_RPC_PORT"),
            (vec![("REMOTE_OUTBOX_MAX_BYTES", "0")], "REMOTE_OUTBOX_MAX_BYTES"),
            (vec![("HTTP_MAX_CONNECTIONS", "-1")], "HTTP_MAX_CONNECTIONS"),
            (vec![("SSL_ENABLED", "yes please")], "SSL_ENABLED"),
            (vec![("SSL_ENABLED", "true"), ("SSL_CREDENTIALS_TYPE", "DER")], "SSL_CREDENTIALS_TYPE"),
            (vec![("SSL_ENABLED", "true"), ("SSL_PEM_CERT", "")], "SSL_PEM_CERT"),
            (vec![("SSL_ENABLED", "true"), ("SSL_CREDENTIALS_TYPE", "KEYSTORE"), ("SSL_KEY_STORE_TYPE", "JCEKS")], "SSL_KEY_STORE_TYPE"),
        ] {
            let err = Config::from_values(&values(&pairs)).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
    }

    #[test]
    fn database_settings() {
        let db = |pairs: &[(&'static str, &str)]| Config::from_values(&values(pairs)).map(|c| (c.database, c.database_path));
        // SQLite by default, in the data directory.
        let (d, path) = db(&[]).unwrap();
        assert!(matches!(d, Database::Sqlite(ref p) if p == &path) && path == Path::new("./data/coapgate.db"));
        let (d, _) = db(&[("DATABASE_URL", "sqlite:///var/lib/x.db")]).unwrap();
        assert!(matches!(d, Database::Sqlite(ref p) if p == &PathBuf::from("/var/lib/x.db")));
        for url in ["postgres://u:hunter2@db.local:6543/tb", "postgresql://u:hunter2@db.local:6543/tb"] {
            let (d, path) = db(&[("DATABASE_URL", url)]).unwrap();
            assert_eq!(d.describe(), "postgres://db.local:6543/tb");
            assert!(d.is_postgres() && path == Path::new("./data/coapgate.db"));
            assert!(!format!("{d:?}").contains("hunter2"));
        }
        // ThingsBoard's form.
        let spring = [
            ("SPRING_DATASOURCE_URL", "jdbc:postgresql://pg:5432/thingsboard"),
            ("SPRING_DATASOURCE_USERNAME", "postgres"),
            ("SPRING_DATASOURCE_PASSWORD", "hunter2"),
        ];
        let (d, _) = db(&spring).unwrap();
        assert!(matches!(d, Database::Postgres { setting: "SPRING_DATASOURCE_URL", .. }));
        assert_eq!(d.describe(), "postgres://pg:5432/thingsboard");
        // DATABASE_URL wins over SPRING_DATASOURCE_URL.
        let mut both = spring.to_vec();
        both.push(("DATABASE_URL", "postgres://u@other:1/db"));
        let (d, _) = db(&both).unwrap();
        assert!(matches!(d, Database::Postgres { setting: "DATABASE_URL", .. }));
        assert_eq!(d.describe(), "postgres://other:1/db");
        both[3] = ("DATABASE_URL", "sqlite:///x.db");
        assert!(matches!(db(&both).unwrap().0, Database::Sqlite(_)));
    }

    #[test]
    fn database_errors_name_the_setting_and_hide_the_password() {
        for (pairs, expected) in [
            (vec![("DATABASE_URL", "mysql://u:hunter2@h/db")], "DATABASE_URL"),
            (vec![("DATABASE_URL", "postgres://u:hunter2@h:99999/db")], "DATABASE_URL"),
            (vec![("DATABASE_URL", "postgres://u:hunter2@h/db?sslmode=require")], "DATABASE_URL"),
            (vec![("DATABASE_URL", "postgres://u:hunter2@h/db?bogus=1")], "DATABASE_URL"),
            (vec![("DATABASE_URL", "sqlite://")], "DATABASE_URL"),
            (vec![("SPRING_DATASOURCE_URL", "jdbc:mysql://h/db?password=hunter2")], "SPRING_DATASOURCE_URL"),
            (vec![("SPRING_DATASOURCE_URL", "jdbc:postgresql://h/db"), ("SPRING_DATASOURCE_PASSWORD", "hunter2")], "SPRING_DATASOURCE_URL"),
            (
                vec![("SPRING_DATASOURCE_URL", "jdbc:postgresql://h:x/db"), ("SPRING_DATASOURCE_USERNAME", "u"), ("SPRING_DATASOURCE_PASSWORD", "hunter2")],
                "SPRING_DATASOURCE_URL",
            ),
        ] {
            let err = format!("{:#}", Config::from_values(&values(&pairs)).unwrap_err());
            assert!(err.starts_with(expected), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn remote_command_line_form() {
        let base = Config::from_values(&values(&[])).unwrap().remote;
        let mut r = base.clone();
        r.apply_flags(Some("grpcs://platform.example:9443"), Some("k".into()), Some("s".into())).unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls, r.routing_key.as_str(), r.secret.as_str()), ("platform.example", 9443, true, "k", "s"));
        let mut r = base.clone();
        r.apply_flags(Some("grpc://[::1]:7000"), None, None).unwrap();
        assert_eq!((r.host.as_str(), r.port, r.tls), ("::1", 7000, false));
        let mut r = base.clone();
        r.apply_flags(Some("10.0.0.5"), None, None).unwrap();
        assert_eq!((r.host.as_str(), r.port), ("10.0.0.5", 9090));
        for bad in ["mqtt://x:1", "grpc://x:port", "grpc://x:1/path", "grpc://"] {
            assert!(base.clone().apply_flags(Some(bad), None, None).unwrap_err().to_string().starts_with("--platform"), "{bad}");
        }
    }

    #[test]
    fn example_file_parses_and_lists_every_setting() {
        let text = commented_example();
        for s in SETTINGS {
            assert!(text.contains(&s.name.to_ascii_lowercase()), "{} missing", s.name);
        }
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = toml::from_str(&uncommented).unwrap();
        assert_eq!(table.len(), SETTINGS.len());
    }
}
