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
        name: "COAP_MAX_BODY_BYTES",
        default: "65536",
        help: "largest uplink body, block-wise (RFC 7959) included; larger ones get 4.13 with Size1",
    },
    Setting { name: "COAP_DEDUP_MAX_ENTRIES", default: "500000", help: "message-deduplication entries kept in memory" },
    Setting {
        name: "COAP_DEDUP_MAX_ENTRIES_PER_PEER",
        default: "20000",
        help: "message-deduplication entries one peer may hold",
    },
    Setting { name: "DATABASE_URL", default: "", help: "sqlite://FILE; default: coapgate.db in the data directory" },
    Setting { name: "COAPGATE_DATA_DIR", default: "./data", help: "directory for the database and secrets" },
    Setting { name: "COAPGATE_ADMIN_USERNAME", default: "tenant@thingsboard.org", help: "first-run admin user" },
    Setting {
        name: "COAPGATE_ADMIN_PASSWORD",
        default: "",
        help: "first-run admin password; a random one is generated and printed once if empty",
    },
    Setting { name: "EVENTS_TTL_DAYS", default: "7", help: "how long debug, lifecycle, statistics and error events are kept" },
    Setting { name: "SCRIPT_WORKERS", default: "0", help: "converter worker threads; 0 means one per CPU core" },
    Setting { name: "SCRIPT_QUEUE_CAPACITY", default: "10000", help: "uplinks waiting for a converter worker" },
    Setting { name: "JS_MAX_EXECUTION_TIME_MS", default: "500", help: "JavaScript converter time limit per call" },
    Setting { name: "JS_MAX_MEMORY_MB", default: "100", help: "JavaScript converter memory limit per worker" },
    Setting { name: "TBEL_MAX_EXECUTION_TIME_MS", default: "500", help: "TBEL converter time limit per call" },
    Setting { name: "TBEL_MAX_MEMORY_MB", default: "8", help: "TBEL converter memory limit per call" },
    Setting { name: "WRITER_QUEUE_CAPACITY", default: "20000", help: "decoded uplinks waiting for the database writer" },
    Setting { name: "WRITER_MAX_BATCH", default: "2000", help: "most uplinks committed in one transaction" },
    Setting {
        name: "WRITER_BATCH_WINDOW_MS",
        default: "0",
        help: "how long the writer waits for more uplinks before committing a partial batch",
    },
];

/// The resolved configuration of `coapgate serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_bind: String,
    pub coap_bind: String,
    pub coap_base_url: String,
    pub dtls_enabled: bool,
    pub piggyback_timeout: Duration,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    pub dedup_max_entries: usize,
    pub dedup_max_entries_per_peer: usize,
    pub data_dir: PathBuf,
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
    pub writer_batch_window: Duration,
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
        let database_path = match get("DATABASE_URL") {
            "" => data_dir.join("coapgate.db"),
            url => match url.strip_prefix("sqlite://") {
                // An empty path would make SQLite use a temporary database and lose everything.
                Some(path) if path.trim().is_empty() => {
                    bail!("DATABASE_URL: sqlite:// needs a file path, e.g. sqlite:///var/lib/coapgate/coapgate.db")
                }
                Some(path) => PathBuf::from(path),
                None if url.starts_with("postgres") => {
                    bail!("DATABASE_URL: the PostgreSQL backend is not available in this version; use sqlite://FILE")
                }
                None => bail!("DATABASE_URL: `{url}` is neither sqlite://FILE nor postgres://…"),
            },
        };
        let coap_port: u16 = parse(v, "COAP_BIND_PORT")?;
        let http_port: u16 = parse(v, "HTTP_BIND_PORT")?;
        let coap_base_url = match get("COAP_BASE_URL") {
            "" => default_base_url(coap_port),
            url if url.starts_with("coap://") => url.trim_end_matches('/').to_string(),
            url => bail!("COAP_BASE_URL: `{url}` must start with coap://"),
        };
        let admin_password = Some(get("COAPGATE_ADMIN_PASSWORD").to_string()).filter(|p| !p.is_empty());
        let workers: usize = parse(v, "SCRIPT_WORKERS")?;
        let config = Config {
            http_bind: format!("{}:{http_port}", get("HTTP_BIND_ADDRESS")),
            coap_bind: format!("{}:{coap_port}", get("COAP_BIND_ADDRESS")),
            coap_base_url,
            dtls_enabled: parse_bool(v, "COAP_DTLS_ENABLED")?,
            piggyback_timeout: Duration::from_millis(parse(v, "COAP_PIGGYBACK_TIMEOUT_MS")?),
            max_in_flight: positive(v, "COAP_MAX_IN_FLIGHT")?,
            max_body_bytes: positive(v, "COAP_MAX_BODY_BYTES")?,
            dedup_max_entries: positive(v, "COAP_DEDUP_MAX_ENTRIES")?,
            dedup_max_entries_per_peer: positive(v, "COAP_DEDUP_MAX_ENTRIES_PER_PEER")?,
            data_dir,
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
            writer_batch_window: Duration::from_millis(parse(v, "WRITER_BATCH_WINDOW_MS")?),
        };
        if config.admin_username.is_empty() {
            bail!("COAPGATE_ADMIN_USERNAME: must not be empty");
        }
        if config.dtls_enabled {
            bail!("COAP_DTLS_ENABLED: the DTLS endpoint is not available in this version yet; set it to false");
        }
        Ok(config)
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

fn default_base_url(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    if port == 5683 { format!("coap://{host}") } else { format!("coap://{host}:{port}") }
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
    }

    #[test]
    fn errors_name_the_setting() {
        for (pairs, expected) in [
            (vec![("COAP_BIND_PORT", "70000")], "COAP_BIND_PORT"),
            (vec![("COAP_DTLS_ENABLED", "maybe")], "COAP_DTLS_ENABLED"),
            (vec![("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (vec![("WRITER_MAX_BATCH", "0")], "WRITER_MAX_BATCH"),
            (vec![("COAP_BASE_URL", "http://x")], "COAP_BASE_URL"),
        ] {
            let err = Config::from_values(&values(&pairs)).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
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
