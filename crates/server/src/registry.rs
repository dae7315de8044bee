//! The live routing table: routing key → integration, its converter script and its resource path.
//!
//! The CoAP endpoint reads it for every request, so it is an in-memory map behind a read-write
//! lock, rebuilt from storage whenever the REST API changes an integration or converter. That is
//! how creating, editing, disabling or deleting an integration takes effect at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use coapgate_script::{DecoderScript, ScriptLang};
use coapgate_storage::Store;
use coapgate_storage::model::{Converter, Integration};

use crate::events::DebugSettings;

/// How an integration may be reached; ThingsBoard's `securityMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    NoSecure,
    Dtls,
    Mixed,
}

impl SecurityMode {
    pub fn parse(text: &str) -> Option<SecurityMode> {
        match text {
            "NO_SECURE" => Some(SecurityMode::NoSecure),
            "DTLS" => Some(SecurityMode::Dtls),
            "MIXED" => Some(SecurityMode::Mixed),
            _ => None,
        }
    }

    pub fn of(integration: &Integration) -> SecurityMode {
        integration
            .configuration
            .pointer("/clientConfiguration/securityMode")
            .and_then(|v| v.as_str())
            .and_then(SecurityMode::parse)
            .unwrap_or(SecurityMode::NoSecure)
    }
}

/// Everything the endpoint needs to handle an uplink for one integration.
#[derive(Debug)]
pub struct Route {
    pub integration: Integration,
    pub script: Arc<DecoderScript>,
    /// Uri-Path segments before `i/<routingKey>`, from the integration's endpoint URL.
    pub path_prefix: Vec<String>,
    /// The same for the DTLS endpoint, from `dtlsCoapEndpoint`.
    pub dtls_path_prefix: Vec<String>,
    /// The integration's metadata, handed to every converter call.
    pub metadata: Vec<(String, String)>,
    pub security: SecurityMode,
    pub integration_debug: DebugSettings,
    pub converter_debug: DebugSettings,
    /// The converter's `updateOnlyKeys`: keys stored only when their value changed.
    pub update_only_keys: Arc<[String]>,
}

/// A change of an integration's running state, for its lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Started,
    Updated,
    Stopped,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Started => "STARTED",
            Lifecycle::Updated => "UPDATED",
            Lifecycle::Stopped => "STOPPED",
        }
    }
}

/// A DTLS pre-shared key and the integration it belongs to.
#[derive(Debug, Clone)]
pub struct PskEntry {
    pub key: Vec<u8>,
    pub integration: uuid::Uuid,
}

pub struct Registry {
    routes: RwLock<HashMap<String, Arc<Route>>>,
    /// PSK identity → key and owning integration, for the integrations that have a route.
    psk: RwLock<HashMap<Vec<u8>, PskEntry>>,
    /// Bumped after every reload, so the links of remote integrations learn that a
    /// configuration may have changed (they compare versions themselves).
    changes: tokio::sync::watch::Sender<u64>,
    /// Held through a whole reload (read, then install), so of two reloads at once (a REST
    /// change, another node's notification) the one that read later installs later.
    reloading: std::sync::Mutex<()>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            routes: RwLock::default(),
            psk: RwLock::default(),
            changes: tokio::sync::watch::Sender::new(0),
            reloading: std::sync::Mutex::new(()),
        }
    }
}

impl coapgate_dtls::PskKeys for Registry {
    fn psk_key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.psk.read().unwrap_or_else(|e| e.into_inner()).get(identity).map(|e| e.key.clone())
    }
}

impl Registry {
    pub fn lookup(&self, routing_key: &str) -> Option<Arc<Route>> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).get(routing_key).cloned()
    }

    /// The integration a PSK identity belongs to.
    pub fn psk_owner(&self, identity: &[u8]) -> Option<uuid::Uuid> {
        self.psk.read().unwrap_or_else(|e| e.into_inner()).get(identity).map(|e| e.integration)
    }

    /// Notified after every reload (see [`Registry::install`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Rebuilds the table from storage and says which integrations started, changed or stopped.
    /// Integrations that cannot run here (disabled, remote, or whose converter is gone) get no
    /// route, so their devices see 4.04.
    pub fn reload(&self, store: &dyn Store) -> coapgate_storage::Result<Vec<(uuid::Uuid, Lifecycle)>> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let mut running = Vec::new();
        let mut converters: HashMap<uuid::Uuid, Option<Converter>> = HashMap::new();
        for integration in store.all_integrations()? {
            if integration.is_remote || !integration.enabled {
                continue;
            }
            let converter = match converters.get(&integration.default_converter_id) {
                Some(c) => c.clone(),
                None => {
                    let c = store.converter(integration.default_converter_id)?;
                    converters.insert(integration.default_converter_id, c.clone());
                    c
                }
            };
            let Some(converter) = converter else {
                tracing::warn!("integration {} has no converter; it will answer 4.04", integration.name);
                continue;
            };
            running.push((integration, converter));
        }
        Ok(self.install(running))
    }

    /// Replaces the table with routes for these integrations (each with its uplink converter),
    /// all of which run here: `reload` passes the enabled local ones, `coapgate remote` the one
    /// the platform sent while it is enabled.
    pub fn install(&self, running: Vec<(Integration, Converter)>) -> Vec<(uuid::Uuid, Lifecycle)> {
        let mut routes = HashMap::new();
        let mut psk = HashMap::new();
        for (integration, converter) in running {
            let route = Route {
                integration_debug: DebugSettings::from_json(&integration.debug_settings),
                converter_debug: DebugSettings::from_json(&converter.debug_settings),
                script: Arc::new(decoder_script(&converter)),
                update_only_keys: update_only_keys(&converter),
                path_prefix: path_prefix(&integration, "coapEndpoint"),
                // Integrations saved before the DTLS endpoint existed have no dtlsCoapEndpoint.
                dtls_path_prefix: if integration.configuration.pointer("/clientConfiguration/dtlsCoapEndpoint").is_some() {
                    path_prefix(&integration, "dtlsCoapEndpoint")
                } else {
                    path_prefix(&integration, "coapEndpoint")
                },
                metadata: integration_metadata(&integration),
                security: SecurityMode::of(&integration),
                integration,
            };
            for (identity, key) in psk_credentials(&route.integration).unwrap_or_default() {
                psk.insert(identity.into_bytes(), PskEntry { key, integration: route.integration.id });
            }
            routes.insert(route.integration.routing_key.clone(), Arc::new(route));
        }
        let mut table = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let changes = lifecycle_changes(&table, &routes);
        *table = routes;
        *self.psk.write().unwrap_or_else(|e| e.into_inner()) = psk;
        drop(table);
        self.changes.send_modify(|n| *n += 1);
        changes
    }
}

fn lifecycle_changes(
    old: &HashMap<String, Arc<Route>>,
    new: &HashMap<String, Arc<Route>>,
) -> Vec<(uuid::Uuid, Lifecycle)> {
    let versions = |table: &HashMap<String, Arc<Route>>| -> HashMap<uuid::Uuid, (i64, u64)> {
        table.values().map(|r| (r.integration.id, (r.integration.version, r.script.version))).collect()
    };
    let (old, new) = (versions(old), versions(new));
    let mut changes: Vec<(uuid::Uuid, Lifecycle)> = new
        .iter()
        .filter_map(|(id, v)| match old.get(id) {
            None => Some((*id, Lifecycle::Started)),
            Some(o) if o != v => Some((*id, Lifecycle::Updated)),
            Some(_) => None,
        })
        .collect();
    changes.extend(old.keys().filter(|id| !new.contains_key(id)).map(|id| (*id, Lifecycle::Stopped)));
    changes
}

/// The script of a converter as the engines cache it: keyed by converter id and version.
pub fn decoder_script(converter: &Converter) -> DecoderScript {
    let lang = match converter.configuration.get("scriptLang").and_then(|v| v.as_str()) {
        Some("TBEL") => ScriptLang::Tbel,
        _ => ScriptLang::Js,
    };
    let field = if lang == ScriptLang::Tbel { "tbelDecoder" } else { "decoder" };
    let source = converter.configuration.get(field).and_then(|v| v.as_str()).unwrap_or_default();
    DecoderScript { id: converter.id, version: converter.version as u64, lang, source: source.into() }
}

/// `configuration.updateOnlyKeys` of a converter; anything but a list of strings counts as none.
pub fn update_only_keys(converter: &Converter) -> Arc<[String]> {
    let keys = converter.configuration.get("updateOnlyKeys").and_then(|v| v.as_array());
    keys.map(|list| list.iter().filter_map(|k| k.as_str()).map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default()
        .into()
}

fn integration_metadata(integration: &Integration) -> Vec<(String, String)> {
    let Some(map) = integration.configuration.get("metadata").and_then(|m| m.as_object()) else {
        return Vec::new();
    };
    map.iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect()
}

/// `configuration.clientConfiguration.psk` as (identity, key bytes): the key is UTF-8 text, or
/// hex when it starts with `0x`. The error names the offending field.
pub fn psk_credentials(integration: &Integration) -> Result<Vec<(String, Vec<u8>)>, String> {
    parse_psk(integration.configuration.pointer("/clientConfiguration/psk"))
}

/// Longest PSK identity and key accepted (RFC 4279 allows identities up to 2^16 bytes; devices
/// use short ones, and OpenSSL's key buffer is 256 bytes).
const MAX_PSK_IDENTITY: usize = 128;
const MAX_PSK_KEY: usize = 64;

pub fn parse_psk(value: Option<&serde_json::Value>) -> Result<Vec<(String, Vec<u8>)>, String> {
    const FIELD: &str = "configuration.clientConfiguration.psk";
    let list = match value {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(list)) => list,
        Some(_) => return Err(format!("Field '{FIELD}' must be a list of {{\"identity\", \"key\"}} objects")),
    };
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let field = |name: &str| -> Result<&str, String> {
            match entry.get(name) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
                _ => Err(format!("Field '{FIELD}[{i}].{name}' must be a non-empty string")),
            }
        };
        let identity = field("identity")?;
        if identity.len() > MAX_PSK_IDENTITY {
            return Err(format!("Field '{FIELD}[{i}].identity' must be at most {MAX_PSK_IDENTITY} bytes"));
        }
        let text = field("key")?;
        let key = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => decode_hex(hex).ok_or_else(|| format!("Field '{FIELD}[{i}].key' is not valid hex after 0x"))?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() || key.len() > MAX_PSK_KEY {
            return Err(format!("Field '{FIELD}[{i}].key' must be 1 to {MAX_PSK_KEY} bytes"));
        }
        if out.iter().any(|(id, _)| id == identity) {
            return Err(format!("Field '{FIELD}[{i}].identity': `{identity}` is listed twice"));
        }
        out.push((identity.to_string(), key));
    }
    Ok(out)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// The path segments of the integration's CoAP endpoint URL (`field`: `coapEndpoint` or
/// `dtlsCoapEndpoint`) before `/i/<routingKey>`.
pub fn path_prefix(integration: &Integration, field: &str) -> Vec<String> {
    let endpoint = integration
        .configuration
        .get("clientConfiguration")
        .and_then(|c| c.get(field))
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let mut segments = url_path_segments(endpoint);
    let suffix = ["i".to_string(), integration.routing_key.clone()];
    if segments.ends_with(&suffix) {
        segments.truncate(segments.len() - 2);
        segments
    } else {
        Vec::new()
    }
}

/// The non-empty path segments of a `coap://host[:port]/a/b` URL.
pub fn url_path_segments(url: &str) -> Vec<String> {
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let path = after_scheme.split_once('/').map(|(_, p)| p).unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Builds `base[/path]/i/<routingKey>`, the URL devices use.
pub fn endpoint_url(base_url: &str, path: Option<&str>, routing_key: &str) -> String {
    let mut url = base_url.trim_end_matches('/').to_string();
    if let Some(path) = path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) {
        url.push('/');
        url.push_str(path);
    }
    url.push_str("/i/");
    url.push_str(routing_key);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_and_prefixes() {
        assert_eq!(endpoint_url("coap://h", None, "k"), "coap://h/i/k");
        assert_eq!(endpoint_url("coap://h:5683/", Some("/my-path/"), "k"), "coap://h:5683/my-path/i/k");
        assert_eq!(url_path_segments("coap://h:5683/my-path/i/k"), vec!["my-path", "i", "k"]);
        assert_eq!(url_path_segments("coap://h"), Vec::<String>::new());
        assert_eq!(url_path_segments("coap://h/a//b?x=1"), vec!["a", "b"]);
    }

    #[test]
    fn psk_lists() {
        use serde_json::json;
        let ok = parse_psk(Some(&json!([{"identity": "a", "key": "secret"}, {"identity": "b", "key": "0x0aFF"}]))).unwrap();
        assert_eq!(ok, vec![("a".to_string(), b"secret".to_vec()), ("b".to_string(), vec![0x0a, 0xff])]);
        assert!(parse_psk(None).unwrap().is_empty());
        for (bad, field) in [
            (json!({"identity": "a"}), "psk'"),
            (json!([{"key": "k"}]), "psk[0].identity"),
            (json!([{"identity": "a", "key": "0xabc"}]), "psk[0].key"),
            (json!([{"identity": "a", "key": "0xzz"}]), "psk[0].key"),
            (json!([{"identity": "a", "key": ""}]), "psk[0].key"),
            (json!([{"identity": "a", "key": "k"}, {"identity": "a", "key": "l"}]), "psk[1].identity"),
        ] {
            let err = parse_psk(Some(&bad)).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }
}
