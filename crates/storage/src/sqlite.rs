//! The embedded SQLite backend.
//!
//! One database file in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! killed process and a power cut. Readers and entity edits use a small pool of connections; the
//! uplink path has its own connection in [`SqliteUplinkWriter`], used by one thread only, so
//! group commits never wait for each other. Entity ids are stored as 16-byte blobs and time-series
//! keys through a key dictionary, which keeps the hot tables small.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::Value;
use uuid::Uuid;

use crate::model::*;
use crate::{Result, StorageError, Store, UplinkWriter, now_millis};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS setting (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS app_user (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL, authority TEXT NOT NULL, first_name TEXT, last_name TEXT);
CREATE TABLE IF NOT EXISTS converter (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    integration_type TEXT, debug_settings TEXT NOT NULL, configuration TEXT NOT NULL,
    additional_info TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS integration (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    enabled INTEGER NOT NULL, allow_create INTEGER NOT NULL, is_remote INTEGER NOT NULL,
    debug_settings TEXT NOT NULL, converter_id BLOB NOT NULL, downlink_converter_id BLOB,
    routing_key TEXT NOT NULL UNIQUE, secret TEXT NOT NULL, configuration TEXT NOT NULL,
    additional_info TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_profile (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL UNIQUE,
    is_default INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, device_profile_id BLOB NOT NULL, label TEXT, customer_id BLOB,
    integration_id BLOB);
CREATE INDEX IF NOT EXISTS device_created ON device (created_time);
CREATE TABLE IF NOT EXISTS event (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, entity_type TEXT NOT NULL,
    entity_id BLOB NOT NULL, event_type TEXT NOT NULL, uid TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS event_by_entity ON event (entity_id, event_type, created_time);
CREATE INDEX IF NOT EXISTS event_by_time ON event (created_time);
CREATE TABLE IF NOT EXISTS key_dictionary (key_id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS ts_kv (
    entity_id BLOB NOT NULL, key INTEGER NOT NULL, ts INTEGER NOT NULL,
    bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT,
    PRIMARY KEY (entity_id, key, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ts_kv_latest (
    entity_id BLOB NOT NULL, key INTEGER NOT NULL, ts INTEGER NOT NULL,
    bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT,
    PRIMARY KEY (entity_id, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attribute_kv (
    entity_id BLOB NOT NULL, scope TEXT NOT NULL, key INTEGER NOT NULL,
    last_update_ts INTEGER NOT NULL,
    bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT,
    PRIMARY KEY (entity_id, scope, key)) WITHOUT ROWID;
"#;

/// The largest page any list returns, whatever the caller asks for.
const MAX_PAGE_SIZE: u32 = 10_000;

/// How long a connection waits for another connection's write lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct SqliteStore {
    path: PathBuf,
    tenant_id: Uuid,
    /// Idle connections for reads and entity edits; a caller takes one and puts it back.
    pool: Mutex<Vec<Connection>>,
    /// Bumped whenever a device is deleted, so the writer drops its name → id cache.
    device_generation: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        let tenant_id = match conn
            .query_row("SELECT value FROM setting WHERE name = 'tenant_id'", [], |r| r.get::<_, String>(0))
            .optional()?
        {
            Some(text) => Uuid::parse_str(&text).map_err(|e| StorageError::Other(format!("bad tenant id: {e}")))?,
            None => {
                let id = Uuid::new_v4();
                conn.execute("INSERT INTO setting (name, value) VALUES ('tenant_id', ?1)", [id.to_string()])?;
                id
            }
        };
        let has_default_profile: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM device_profile WHERE is_default = 1)", [], |r| r.get(0))?;
        if !has_default_profile {
            conn.execute(
                "INSERT OR IGNORE INTO device_profile (id, created_time, name, is_default) VALUES (?1, ?2, 'default', 1)",
                params![Uuid::new_v4(), now_millis()],
            )?;
        }
        Ok(SqliteStore {
            path: path.to_path_buf(),
            tenant_id,
            pool: Mutex::new(vec![conn]),
            device_generation: Arc::new(AtomicU64::new(0)),
        })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        let result = f(&mut conn);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        result
    }

    fn page<T>(
        &self,
        table: &str,
        columns: &str,
        query: &PageQuery,
        extra_filter: Option<(&str, String)>,
        map: impl Fn(&Row) -> rusqlite::Result<T>,
    ) -> Result<Page<T>> {
        let mut filters = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(search) = query.text_search.as_deref().filter(|s| !s.is_empty()) {
            args.push(format!("%{}%", search.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
            filters.push(format!("name LIKE ?{} ESCAPE '\\'", args.len()));
        }
        if let Some((column, value)) = extra_filter {
            args.push(value);
            filters.push(format!("{column} = ?{}", args.len()));
        }
        let where_clause = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sort_column = match query.sort_property.as_deref() {
            Some("name") => "name",
            Some("type") => "type",
            _ => "created_time",
        };
        let order = if query.sort_descending || query.sort_property.is_none() { "DESC" } else { "ASC" };
        let size = query.page_size.clamp(1, MAX_PAGE_SIZE);
        let offset = u64::from(query.page) * u64::from(size);
        self.with_conn(|conn| {
            let total: u64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM {table} {where_clause}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            let sql = format!(
                "SELECT {columns} FROM {table} {where_clause} ORDER BY {sort_column} {order}, id LIMIT {size} OFFSET {offset}"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let data = stmt.query_map(params_from_iter(args.iter()), &map)?.collect::<rusqlite::Result<Vec<T>>>()?;
            // Totals follow the page size actually served, so a clamped request still pages through everything.
            Ok(Page::new(data, total, &PageQuery { page_size: size, ..query.clone() }))
        })
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the writer; FULL makes every commit durable (fsync of the WAL),
    // which the "2.01 only after durable commit" invariant needs. Group commit pays for it.
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;")?;
    Ok(conn)
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

const USER_COLUMNS: &str = "id, created_time, email, password_hash, authority, first_name, last_name";
fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        created_time: r.get(1)?,
        email: r.get(2)?,
        password_hash: r.get(3)?,
        authority: r.get(4)?,
        first_name: r.get(5)?,
        last_name: r.get(6)?,
    })
}

const CONVERTER_COLUMNS: &str =
    "id, created_time, name, type, integration_type, debug_settings, configuration, additional_info, version";
fn converter_from_row(r: &Row) -> rusqlite::Result<Converter> {
    Ok(Converter {
        id: r.get(0)?,
        created_time: r.get(1)?,
        name: r.get(2)?,
        converter_type: r.get(3)?,
        integration_type: r.get(4)?,
        debug_settings: parse_json(r.get(5)?),
        configuration: parse_json(r.get(6)?),
        additional_info: parse_json(r.get(7)?),
        version: r.get(8)?,
    })
}

const INTEGRATION_COLUMNS: &str = "id, created_time, name, type, enabled, allow_create, is_remote, debug_settings, \
     converter_id, downlink_converter_id, routing_key, secret, configuration, additional_info, version";
fn integration_from_row(r: &Row) -> rusqlite::Result<Integration> {
    Ok(Integration {
        id: r.get(0)?,
        created_time: r.get(1)?,
        name: r.get(2)?,
        integration_type: r.get(3)?,
        enabled: r.get(4)?,
        allow_create_devices_or_assets: r.get(5)?,
        is_remote: r.get(6)?,
        debug_settings: parse_json(r.get(7)?),
        default_converter_id: r.get(8)?,
        downlink_converter_id: r.get(9)?,
        routing_key: r.get(10)?,
        secret: r.get(11)?,
        configuration: parse_json(r.get(12)?),
        additional_info: parse_json(r.get(13)?),
        version: r.get(14)?,
    })
}

const DEVICE_COLUMNS: &str = "id, created_time, name, type, device_profile_id, label, customer_id, integration_id";
fn device_from_row(r: &Row) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        created_time: r.get(1)?,
        name: r.get(2)?,
        device_type: r.get(3)?,
        device_profile_id: r.get(4)?,
        label: r.get(5)?,
        customer_id: r.get(6)?,
        created_by_integration: r.get(7)?,
    })
}

const PROFILE_COLUMNS: &str = "id, created_time, name, is_default";
fn profile_from_row(r: &Row) -> rusqlite::Result<DeviceProfile> {
    Ok(DeviceProfile { id: r.get(0)?, created_time: r.get(1)?, name: r.get(2)?, is_default: r.get(3)? })
}

/// Reads the typed value from the five value columns starting at `first`.
fn kv_from_row(r: &Row, first: usize) -> rusqlite::Result<KvValue> {
    if let Some(v) = r.get::<_, Option<bool>>(first)? {
        return Ok(KvValue::Bool(v));
    }
    if let Some(v) = r.get::<_, Option<i64>>(first + 1)? {
        return Ok(KvValue::Long(v));
    }
    if let Some(v) = r.get::<_, Option<f64>>(first + 2)? {
        return Ok(KvValue::Double(v));
    }
    if let Some(v) = r.get::<_, Option<String>>(first + 3)? {
        return Ok(KvValue::Str(v));
    }
    Ok(KvValue::Json(r.get::<_, Option<String>>(first + 4)?.unwrap_or_default()))
}

/// The five value columns for a typed value, exactly one of them set.
type KvColumns<'a> = (Option<bool>, Option<i64>, Option<f64>, Option<&'a str>, Option<&'a str>);
fn kv_columns(v: &KvValue) -> KvColumns<'_> {
    match v {
        KvValue::Bool(b) => (Some(*b), None, None, None, None),
        KvValue::Long(l) => (None, Some(*l), None, None, None),
        KvValue::Double(d) => (None, None, Some(*d), None, None),
        KvValue::Str(s) => (None, None, None, Some(s), None),
        KvValue::Json(s) => (None, None, None, None, Some(s)),
    }
}

fn map_unique_violation(e: rusqlite::Error, what: &str) -> StorageError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StorageError::Conflict(what.to_string())
        }
        _ => StorageError::Database(e),
    }
}

/// Keys in `keys` that are known, with their dictionary ids; unknown keys have no data.
fn key_ids(conn: &Connection, keys: &[String]) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT key_id FROM key_dictionary WHERE key = ?1")?;
    let mut out = Vec::new();
    for k in keys {
        if let Some(id) = stmt.query_row([k], |r| r.get::<_, i64>(0)).optional()? {
            out.push((k.clone(), id));
        }
    }
    Ok(out)
}

impl Store for SqliteStore {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.with_conn(|c| {
            Ok(c.query_row("SELECT value FROM setting WHERE name = ?1", [name], |r| r.get(0)).optional()?)
        })
    }

    fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO setting (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [name, value],
            )?;
            Ok(())
        })
    }

    fn user_count(&self) -> Result<u64> {
        self.with_conn(|c| Ok(c.query_row("SELECT COUNT(*) FROM app_user", [], |r| r.get(0))?))
    }

    fn insert_user(&self, u: &User) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                &format!("INSERT INTO app_user ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![u.id, u.created_time, u.email, u.password_hash, u.authority, u.first_name, u.last_name],
            )
            .map_err(|e| map_unique_violation(e, "User with such email already exists!"))?;
            Ok(())
        })
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {USER_COLUMNS} FROM app_user WHERE email = ?1"), [email], user_from_row)
                .optional()?)
        })
    }

    fn user(&self, id: Uuid) -> Result<Option<User>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {USER_COLUMNS} FROM app_user WHERE id = ?1"), [id], user_from_row)
                .optional()?)
        })
    }

    fn save_converter(&self, v: &Converter) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                &format!(
                    "INSERT INTO converter ({CONVERTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, type = excluded.type, \
                     integration_type = excluded.integration_type, debug_settings = excluded.debug_settings, \
                     configuration = excluded.configuration, additional_info = excluded.additional_info, \
                     version = excluded.version"
                ),
                params![
                    v.id,
                    v.created_time,
                    v.name,
                    v.converter_type,
                    v.integration_type,
                    json_text(&v.debug_settings),
                    json_text(&v.configuration),
                    json_text(&v.additional_info),
                    v.version
                ],
            )?;
            Ok(())
        })
    }

    fn converter(&self, id: Uuid) -> Result<Option<Converter>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {CONVERTER_COLUMNS} FROM converter WHERE id = ?1"), [id], converter_from_row)
                .optional()?)
        })
    }

    fn converters(&self, query: &PageQuery) -> Result<Page<Converter>> {
        self.page("converter", CONVERTER_COLUMNS, query, None, converter_from_row)
    }

    fn delete_converter(&self, id: Uuid) -> Result<bool> {
        self.with_conn(|c| {
            let users: u64 = c.query_row(
                "SELECT COUNT(*) FROM integration WHERE converter_id = ?1 OR downlink_converter_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if users > 0 {
                return Err(StorageError::Conflict(
                    "The converter referenced by the integration cannot be deleted!".to_string(),
                ));
            }
            Ok(c.execute("DELETE FROM converter WHERE id = ?1", [id])? > 0)
        })
    }

    fn save_integration(&self, v: &Integration) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                &format!(
                    "INSERT INTO integration ({INTEGRATION_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, type = excluded.type, \
                     enabled = excluded.enabled, allow_create = excluded.allow_create, is_remote = excluded.is_remote, \
                     debug_settings = excluded.debug_settings, converter_id = excluded.converter_id, \
                     downlink_converter_id = excluded.downlink_converter_id, routing_key = excluded.routing_key, \
                     secret = excluded.secret, configuration = excluded.configuration, \
                     additional_info = excluded.additional_info, version = excluded.version"
                ),
                params![
                    v.id,
                    v.created_time,
                    v.name,
                    v.integration_type,
                    v.enabled,
                    v.allow_create_devices_or_assets,
                    v.is_remote,
                    json_text(&v.debug_settings),
                    v.default_converter_id,
                    v.downlink_converter_id,
                    v.routing_key,
                    v.secret,
                    json_text(&v.configuration),
                    json_text(&v.additional_info),
                    v.version
                ],
            )
            .map_err(|e| map_unique_violation(e, "Integration with such routing key already exists!"))?;
            Ok(())
        })
    }

    fn integration(&self, id: Uuid) -> Result<Option<Integration>> {
        self.with_conn(|c| {
            Ok(c.query_row(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM integration WHERE id = ?1"),
                [id],
                integration_from_row,
            )
            .optional()?)
        })
    }

    fn integration_by_routing_key(&self, routing_key: &str) -> Result<Option<Integration>> {
        self.with_conn(|c| {
            Ok(c.query_row(
                &format!("SELECT {INTEGRATION_COLUMNS} FROM integration WHERE routing_key = ?1"),
                [routing_key],
                integration_from_row,
            )
            .optional()?)
        })
    }

    fn integrations(&self, query: &PageQuery) -> Result<Page<Integration>> {
        self.page("integration", INTEGRATION_COLUMNS, query, None, integration_from_row)
    }

    fn all_integrations(&self) -> Result<Vec<Integration>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {INTEGRATION_COLUMNS} FROM integration"))?;
            Ok(stmt.query_map([], integration_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn delete_integration(&self, id: Uuid) -> Result<bool> {
        self.with_conn(|c| Ok(c.execute("DELETE FROM integration WHERE id = ?1", [id])? > 0))
    }

    fn device(&self, id: Uuid) -> Result<Option<Device>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {DEVICE_COLUMNS} FROM device WHERE id = ?1"), [id], device_from_row)
                .optional()?)
        })
    }

    fn device_by_name(&self, name: &str) -> Result<Option<Device>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {DEVICE_COLUMNS} FROM device WHERE name = ?1"), [name], device_from_row)
                .optional()?)
        })
    }

    fn devices(&self, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>> {
        let filter = device_type.filter(|t| !t.is_empty()).map(|t| ("type", t.to_string()));
        self.page("device", DEVICE_COLUMNS, query, filter, device_from_row)
    }

    fn delete_device(&self, id: Uuid) -> Result<bool> {
        let deleted = self.with_conn(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM device WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM ts_kv WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM ts_kv_latest WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM attribute_kv WHERE entity_id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })?;
        self.device_generation.fetch_add(1, Ordering::SeqCst);
        Ok(deleted)
    }

    fn device_profile(&self, id: Uuid) -> Result<Option<DeviceProfile>> {
        self.with_conn(|c| {
            Ok(c.query_row(&format!("SELECT {PROFILE_COLUMNS} FROM device_profile WHERE id = ?1"), [id], profile_from_row)
                .optional()?)
        })
    }

    fn delete_device_profile(&self, id: Uuid) -> Result<bool> {
        let deleted = self.with_conn(|c| {
            let Some(profile) = c
                .query_row(&format!("SELECT {PROFILE_COLUMNS} FROM device_profile WHERE id = ?1"), [id], profile_from_row)
                .optional()?
            else {
                return Ok(false);
            };
            if profile.is_default {
                return Err(StorageError::Conflict("Deletion of Default Device Profile is prohibited!".into()));
            }
            let used: bool = c.query_row("SELECT EXISTS (SELECT 1 FROM device WHERE device_profile_id = ?1)", [id], |r| r.get(0))?;
            if used {
                return Err(StorageError::Conflict("The device profile referenced by the devices cannot be deleted!".into()));
            }
            Ok(c.execute("DELETE FROM device_profile WHERE id = ?1", [id])? > 0)
        })?;
        // The writer caches profile ids by name; make it look again.
        self.device_generation.fetch_add(1, Ordering::SeqCst);
        Ok(deleted)
    }

    fn device_profiles(&self, query: &PageQuery) -> Result<Page<DeviceProfile>> {
        self.page("device_profile", PROFILE_COLUMNS, query, None, profile_from_row)
    }

    fn timeseries_keys(&self, entity_id: Uuid) -> Result<Vec<String>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.key FROM ts_kv_latest l JOIN key_dictionary d ON d.key_id = l.key \
                 WHERE l.entity_id = ?1 ORDER BY d.key",
            )?;
            Ok(stmt.query_map([entity_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn latest_timeseries(&self, entity_id: Uuid, keys: Option<&[String]>) -> Result<Vec<(String, TsValue)>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.key, l.ts, l.bool_v, l.long_v, l.dbl_v, l.str_v, l.json_v \
                 FROM ts_kv_latest l JOIN key_dictionary d ON d.key_id = l.key WHERE l.entity_id = ?1 ORDER BY d.key",
            )?;
            let rows = stmt
                .query_map([entity_id], |r| Ok((r.get::<_, String>(0)?, TsValue { ts: r.get(1)?, value: kv_from_row(r, 2)? })))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(match keys {
                None => rows,
                Some(keys) => keys
                    .iter()
                    .filter_map(|k| rows.iter().find(|(name, _)| name == k).cloned())
                    .collect(),
            })
        })
    }

    fn timeseries_history(&self, entity_id: Uuid, query: &HistoryQuery) -> Result<Vec<(String, Vec<TsValue>)>> {
        self.with_conn(|c| {
            let order = if query.descending { "DESC" } else { "ASC" };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT ts, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv \
                 WHERE entity_id = ?1 AND key = ?2 AND ts >= ?3 AND ts <= ?4 ORDER BY ts {order} LIMIT ?5"
            ))?;
            let mut out = Vec::new();
            for (key, key_id) in key_ids(c, &query.keys)? {
                let points = stmt
                    .query_map(params![entity_id, key_id, query.start_ts, query.end_ts, query.limit], |r| {
                        Ok(TsValue { ts: r.get(0)?, value: kv_from_row(r, 1)? })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                if !points.is_empty() {
                    out.push((key, points));
                }
            }
            Ok(out)
        })
    }

    fn attribute_keys(&self, entity_id: Uuid, scope: Option<&str>) -> Result<Vec<String>> {
        Ok(self.attributes(entity_id, scope, None)?.into_iter().map(|(_, a)| a.key).collect())
    }

    fn attributes(
        &self,
        entity_id: Uuid,
        scope: Option<&str>,
        keys: Option<&[String]>,
    ) -> Result<Vec<(String, AttributeValue)>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT a.scope, d.key, a.last_update_ts, a.bool_v, a.long_v, a.dbl_v, a.str_v, a.json_v \
                 FROM attribute_kv a JOIN key_dictionary d ON d.key_id = a.key \
                 WHERE a.entity_id = ?1 AND (?2 IS NULL OR a.scope = ?2) ORDER BY a.scope, d.key",
            )?;
            let rows = stmt
                .query_map(params![entity_id, scope], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        AttributeValue { key: r.get(1)?, last_update_ts: r.get(2)?, value: kv_from_row(r, 3)? },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(match keys {
                None => rows,
                Some(keys) => rows.into_iter().filter(|(_, a)| keys.contains(&a.key)).collect(),
            })
        })
    }

    fn insert_events(&self, events: &[Event]) -> Result<()> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO event (id, created_time, entity_type, entity_id, event_type, uid, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in events {
                    stmt.execute(params![
                        e.id,
                        e.created_time,
                        e.entity_kind.as_str(),
                        e.entity_id,
                        e.event_type,
                        e.uid,
                        json_text(&e.body)
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn events(&self, query: &EventQuery) -> Result<Page<Event>> {
        let mut filters = vec!["entity_id = ?1".to_string(), "event_type = ?2".to_string()];
        let mut args: Vec<rusqlite::types::Value> =
            vec![rusqlite::types::Value::Blob(query.entity_id.as_bytes().to_vec()), query.event_type.clone().into()];
        if let Some(start) = query.start_time {
            args.push(start.into());
            filters.push(format!("created_time >= ?{}", args.len()));
        }
        if let Some(end) = query.end_time {
            args.push(end.into());
            filters.push(format!("created_time <= ?{}", args.len()));
        }
        for (field, value) in &query.body_equals {
            args.push(format!("$.{}", field.replace(['"', '\\'], "")).into());
            args.push(value.clone().into());
            filters.push(format!("json_extract(body, ?{}) = ?{}", args.len() - 1, args.len()));
        }
        if let Some(text) = query.error_contains.as_deref().filter(|t| !t.is_empty()) {
            args.push(format!("%{}%", text.replace('%', "").replace('_', "")).into());
            filters.push(format!("json_extract(body, '$.error') LIKE ?{}", args.len()));
        }
        match query.has_error {
            Some(true) => filters.push("COALESCE(json_extract(body, '$.error'), '') != ''".into()),
            Some(false) => filters.push("COALESCE(json_extract(body, '$.error'), '') = ''".into()),
            None => {}
        }
        let where_clause = filters.join(" AND ");
        let order = if query.page.sort_property.is_some() && !query.page.sort_descending { "ASC" } else { "DESC" };
        let size = query.page.page_size.clamp(1, MAX_PAGE_SIZE);
        let offset = u64::from(query.page.page) * u64::from(size);
        self.with_conn(|c| {
            let total: u64 =
                c.query_row(&format!("SELECT COUNT(*) FROM event WHERE {where_clause}"), params_from_iter(args.iter()), |r| {
                    r.get(0)
                })?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT id, created_time, entity_type, entity_id, event_type, uid, body FROM event \
                 WHERE {where_clause} ORDER BY created_time {order}, id LIMIT {size} OFFSET {offset}"
            ))?;
            let data = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok(Event {
                        id: r.get(0)?,
                        created_time: r.get(1)?,
                        entity_kind: EntityKind::parse(&r.get::<_, String>(2)?).unwrap_or(EntityKind::Integration),
                        entity_id: r.get(3)?,
                        event_type: r.get(4)?,
                        uid: r.get(5)?,
                        body: parse_json(r.get(6)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let clamped = PageQuery { page_size: size, ..query.page.clone() };
            Ok(Page::new(data, total, &clamped))
        })
    }

    fn delete_events_before(&self, ts: Millis) -> Result<u64> {
        self.with_conn(|c| Ok(c.execute("DELETE FROM event WHERE created_time < ?1", [ts])? as u64))
    }

    fn delete_events_of(&self, entity_id: Uuid) -> Result<u64> {
        self.with_conn(|c| Ok(c.execute("DELETE FROM event WHERE entity_id = ?1", [entity_id])? as u64))
    }

    fn uplink_writer(&self) -> Result<Box<dyn UplinkWriter>> {
        Ok(Box::new(SqliteUplinkWriter {
            conn: open_connection(&self.path)?,
            devices: HashMap::new(),
            profiles: HashMap::new(),
            keys: HashMap::new(),
            device_generation: self.device_generation.clone(),
            seen_generation: self.device_generation.load(Ordering::SeqCst),
        }))
    }
}

/// The group-commit writer. Its caches (device by name, profile by name, key dictionary) make
/// the common uplink — a known device — cost only the value inserts. The database stays the
/// truth: entries are added only after the transaction that created them commits.
pub struct SqliteUplinkWriter {
    conn: Connection,
    devices: HashMap<String, Uuid>,
    profiles: HashMap<String, Uuid>,
    keys: HashMap<String, i64>,
    device_generation: Arc<AtomicU64>,
    seen_generation: u64,
}

/// Cache entries made inside the current transaction, applied only once it commits.
#[derive(Default)]
struct PendingCache {
    devices: Vec<(String, Uuid)>,
    profiles: Vec<(String, Uuid)>,
    keys: Vec<(String, i64)>,
}

impl SqliteUplinkWriter {
    fn lookup_device(&self, pending: &PendingCache, name: &str) -> Result<Option<Uuid>> {
        if let Some(id) = self.devices.get(name) {
            return Ok(Some(*id));
        }
        if let Some((_, id)) = pending.devices.iter().find(|(n, _)| n == name) {
            return Ok(Some(*id));
        }
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM device WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    fn profile_id(&self, pending: &mut PendingCache, name: &str) -> Result<Uuid> {
        if let Some(id) = self.profiles.get(name) {
            return Ok(*id);
        }
        if let Some((_, id)) = pending.profiles.iter().find(|(n, _)| n == name) {
            return Ok(*id);
        }
        let existing: Option<Uuid> = self
            .conn
            .prepare_cached("SELECT id FROM device_profile WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4();
                self.conn
                    .prepare_cached("INSERT INTO device_profile (id, created_time, name, is_default) VALUES (?1, ?2, ?3, 0)")?
                    .execute(params![id, now_millis(), name])?;
                id
            }
        };
        pending.profiles.push((name.to_string(), id));
        Ok(id)
    }

    fn key_id(&self, pending: &mut PendingCache, key: &str) -> Result<i64> {
        if let Some(id) = self.keys.get(key) {
            return Ok(*id);
        }
        if let Some((_, id)) = pending.keys.iter().find(|(k, _)| k == key) {
            return Ok(*id);
        }
        self.conn.prepare_cached("INSERT OR IGNORE INTO key_dictionary (key) VALUES (?1)")?.execute([key])?;
        let id: i64 =
            self.conn.prepare_cached("SELECT key_id FROM key_dictionary WHERE key = ?1")?.query_row([key], |r| r.get(0))?;
        pending.keys.push((key.to_string(), id));
        Ok(id)
    }

    fn write_record(
        &self,
        pending: &mut PendingCache,
        record: &UplinkRecord,
    ) -> Result<std::result::Result<UplinkOutcome, UplinkRejection>> {
        // Resolve first, write second: a rejected record must leave nothing behind.
        let mut resolved = Vec::with_capacity(record.devices.len());
        for update in &record.devices {
            let id = self.lookup_device(pending, &update.name)?;
            if id.is_none() && !record.allow_create_devices {
                return Ok(Err(UplinkRejection::CreatingDevicesForbidden));
            }
            resolved.push(id);
        }
        let mut outcome = UplinkOutcome::default();
        for (update, id) in record.devices.iter().zip(resolved) {
            let id = match id {
                Some(id) => id,
                None => {
                    let id = Uuid::new_v4();
                    let profile = self.profile_id(pending, &update.device_type)?;
                    self.conn
                        .prepare_cached(
                            "INSERT INTO device (id, created_time, name, type, device_profile_id, label, integration_id) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?
                        .execute(params![
                            id,
                            now_millis(),
                            update.name,
                            update.device_type,
                            profile,
                            update.label,
                            record.integration_id
                        ])?;
                    pending.devices.push((update.name.clone(), id));
                    outcome.created_devices.push(id);
                    id
                }
            };
            outcome.devices.push(id);
            for (ts, values) in &update.telemetry {
                for (key, value) in values {
                    let key_id = self.key_id(pending, key)?;
                    let (b, l, d, s, j) = kv_columns(value);
                    self.conn
                        .prepare_cached(
                            "INSERT INTO ts_kv (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (entity_id, key, ts) DO UPDATE SET \
                             bool_v = excluded.bool_v, long_v = excluded.long_v, dbl_v = excluded.dbl_v, \
                             str_v = excluded.str_v, json_v = excluded.json_v",
                        )?
                        .execute(params![id, key_id, ts, b, l, d, s, j])?;
                    self.conn
                        .prepare_cached(
                            "INSERT INTO ts_kv_latest (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (entity_id, key) DO UPDATE SET \
                             ts = excluded.ts, bool_v = excluded.bool_v, long_v = excluded.long_v, \
                             dbl_v = excluded.dbl_v, str_v = excluded.str_v, json_v = excluded.json_v \
                             WHERE excluded.ts >= ts_kv_latest.ts",
                        )?
                        .execute(params![id, key_id, ts, b, l, d, s, j])?;
                }
            }
            for (key, value) in &update.attributes {
                let key_id = self.key_id(pending, key)?;
                let (b, l, d, s, j) = kv_columns(value);
                self.conn
                    .prepare_cached(
                        "INSERT INTO attribute_kv (entity_id, scope, key, last_update_ts, bool_v, long_v, dbl_v, str_v, json_v) \
                         VALUES (?1, 'CLIENT_SCOPE', ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (entity_id, scope, key) DO UPDATE SET \
                         last_update_ts = excluded.last_update_ts, bool_v = excluded.bool_v, long_v = excluded.long_v, \
                         dbl_v = excluded.dbl_v, str_v = excluded.str_v, json_v = excluded.json_v",
                    )?
                    .execute(params![id, key_id, record.received_ts, b, l, d, s, j])?;
            }
        }
        Ok(Ok(outcome))
    }
}

impl UplinkWriter for SqliteUplinkWriter {
    fn commit(
        &mut self,
        batch: &[UplinkRecord],
    ) -> Result<Vec<std::result::Result<UplinkOutcome, UplinkRejection>>> {
        let generation = self.device_generation.load(Ordering::SeqCst);
        if generation != self.seen_generation {
            self.devices.clear();
            self.profiles.clear();
            self.seen_generation = generation;
        }
        let mut pending = PendingCache::default();
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(batch.len());
        for record in batch {
            match self.write_record(&mut pending, record) {
                Ok(r) => results.push(r),
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        self.devices.extend(pending.devices);
        self.profiles.extend(pending.profiles);
        self.keys.extend(pending.keys);
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempdir::Dir, SqliteStore) {
        let dir = tempdir::Dir::new();
        let store = SqliteStore::open(&dir.path.join("test.db")).unwrap();
        (dir, store)
    }

    /// A tiny self-cleaning temporary directory, to avoid a dev-dependency for one use.
    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir().join(format!("coapgate-storage-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    fn record(name: &str, allow: bool, ts: i64, values: Vec<(&str, KvValue)>) -> UplinkRecord {
        UplinkRecord {
            integration_id: Uuid::nil(),
            allow_create_devices: allow,
            received_ts: ts,
            devices: vec![DeviceUpdate {
                name: name.to_string(),
                device_type: "thermo".to_string(),
                label: None,
                telemetry: vec![(ts, values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())],
                attributes: vec![("fw".to_string(), KvValue::Str("1.0".into()))],
            }],
        }
    }

    #[test]
    fn group_commit_creates_devices_and_stores_values() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let batch = vec![
            record("SN-001", true, 1000, vec![("temperature", KvValue::Double(25.7)), ("humidity", KvValue::Long(69))]),
            record("SN-001", true, 2000, vec![("temperature", KvValue::Double(26.0))]),
            record("SN-002", false, 2000, vec![("temperature", KvValue::Double(1.0))]),
        ];
        let results = writer.commit(&batch).unwrap();
        assert_eq!(results[0].as_ref().unwrap().created_devices.len(), 1);
        assert!(results[1].as_ref().unwrap().created_devices.is_empty(), "same device reused within a batch");
        assert_eq!(results[2], Err(UplinkRejection::CreatingDevicesForbidden));
        assert!(store.device_by_name("SN-002").unwrap().is_none());

        let device = store.device_by_name("SN-001").unwrap().unwrap();
        assert_eq!(device.device_type, "thermo");
        assert!(store.device_profiles(&PageQuery { page_size: 10, ..Default::default() }).unwrap().data.iter().any(|p| p.name == "thermo"));
        let latest = store.latest_timeseries(device.id, None).unwrap();
        assert_eq!(
            latest,
            vec![
                ("humidity".to_string(), TsValue { ts: 1000, value: KvValue::Long(69) }),
                ("temperature".to_string(), TsValue { ts: 2000, value: KvValue::Double(26.0) }),
            ]
        );
        let history = store
            .timeseries_history(
                device.id,
                &HistoryQuery { keys: vec!["temperature".into()], start_ts: 0, end_ts: 5000, limit: 100, descending: true },
            )
            .unwrap();
        assert_eq!(history[0].1.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![2000, 1000]);
        let attrs = store.attributes(device.id, Some("CLIENT_SCOPE"), None).unwrap();
        assert_eq!(attrs[0].1.value, KvValue::Str("1.0".into()));
    }

    #[test]
    fn latest_value_keeps_the_newest_timestamp() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        writer.commit(&[record("A", true, 2000, vec![("t", KvValue::Long(2))])]).unwrap();
        writer.commit(&[record("A", true, 1000, vec![("t", KvValue::Long(1))])]).unwrap();
        let id = store.device_by_name("A").unwrap().unwrap().id;
        assert_eq!(store.latest_timeseries(id, None).unwrap()[0].1, TsValue { ts: 2000, value: KvValue::Long(2) });
    }

    #[test]
    fn deleted_device_is_recreated_by_the_writer() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        writer.commit(&[record("A", true, 1, vec![("t", KvValue::Long(1))])]).unwrap();
        let first = store.device_by_name("A").unwrap().unwrap().id;
        assert!(store.delete_device(first).unwrap());
        let results = writer.commit(&[record("A", true, 2, vec![("t", KvValue::Long(2))])]).unwrap();
        let second = store.device_by_name("A").unwrap().unwrap().id;
        assert_ne!(first, second);
        assert_eq!(results[0].as_ref().unwrap().created_devices, vec![second]);
    }

    #[test]
    fn routing_keys_are_unique_and_paging_searches_names() {
        let (_dir, store) = temp_store();
        let mut integration = Integration {
            id: Uuid::new_v4(),
            created_time: 1,
            name: "CoAP one".into(),
            integration_type: "COAP".into(),
            enabled: true,
            allow_create_devices_or_assets: true,
            is_remote: false,
            debug_settings: Value::Null,
            default_converter_id: Uuid::new_v4(),
            downlink_converter_id: None,
            routing_key: "k".into(),
            secret: "s".into(),
            configuration: serde_json::json!({}),
            additional_info: Value::Null,
            version: 1,
        };
        store.save_integration(&integration).unwrap();
        integration.id = Uuid::new_v4();
        integration.name = "Other".into();
        assert!(matches!(store.save_integration(&integration), Err(StorageError::Conflict(_))));
        integration.routing_key = "k2".into();
        store.save_integration(&integration).unwrap();
        let q = PageQuery { page_size: 10, text_search: Some("coap".into()), ..Default::default() };
        let page = store.integrations(&q).unwrap();
        assert_eq!(page.total_elements, 1);
        assert_eq!(page.data[0].name, "CoAP one");
    }

    #[test]
    fn oversized_pages_are_clamped_consistently() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let batch: Vec<UplinkRecord> = (0..10_005).map(|i| record(&format!("D{i}"), true, 1, vec![])).collect();
        writer.commit(&batch).unwrap();
        let page = store.devices(&PageQuery { page_size: 20_000, ..Default::default() }, None).unwrap();
        assert_eq!(page.total_elements, 10_005);
        assert_eq!(page.data.len(), 10_000, "page size is capped");
        assert!(page.has_next, "the capped page must say there is more");
        assert_eq!(page.total_pages, 2);
        let second = store.devices(&PageQuery { page_size: 20_000, page: 1, ..Default::default() }, None).unwrap();
        assert_eq!((second.data.len(), second.has_next), (5, false));
    }

    #[test]
    fn tenant_id_survives_reopening() {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("t.db");
        let first = SqliteStore::open(&path).unwrap().tenant_id();
        assert_eq!(SqliteStore::open(&path).unwrap().tenant_id(), first);
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    fn event(entity: Uuid, t: i64, event_type: &str, body: Value) -> Event {
        Event {
            id: Uuid::new_v4(),
            created_time: t,
            entity_kind: EntityKind::Integration,
            entity_id: entity,
            event_type: event_type.into(),
            uid: "node".into(),
            body,
        }
    }

    #[test]
    fn events_page_filter_and_expire() {
        let dir = std::env::temp_dir().join(format!("coapgate-events-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("e.db")).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut events = Vec::new();
        for t in 0..10 {
            let status = if t % 2 == 0 { "OK" } else { "ERROR" };
            events.push(event(a, t, "DEBUG_INTEGRATION", serde_json::json!({"status": status, "error": format!("e{t}")})));
        }
        events.push(event(a, 5, "STATS", serde_json::json!({})));
        events.push(event(b, 5, "DEBUG_INTEGRATION", serde_json::json!({"status": "OK"})));
        store.insert_events(&events).unwrap();

        let query = |f: &dyn Fn(&mut EventQuery)| {
            let mut q = EventQuery {
                entity_id: a,
                event_type: "DEBUG_INTEGRATION".into(),
                page: PageQuery { page_size: 3, ..Default::default() },
                ..Default::default()
            };
            f(&mut q);
            store.events(&q).unwrap()
        };
        let page = query(&|_| {});
        assert_eq!(page.total_elements, 10);
        assert_eq!(page.data.iter().map(|e| e.created_time).collect::<Vec<_>>(), vec![9, 8, 7], "newest first");
        assert!(page.has_next);
        let page = query(&|q| {
            q.start_time = Some(2);
            q.end_time = Some(6);
        });
        assert_eq!(page.total_elements, 5);
        let page = query(&|q| q.body_equals = vec![("status".into(), "ERROR".into())]);
        assert_eq!(page.total_elements, 5);
        let page = query(&|q| q.error_contains = Some("e7".into()));
        assert_eq!(page.data.len(), 1);
        assert_eq!(query(&|q| q.has_error = Some(true)).total_elements, 10);
        assert_eq!(query(&|q| q.has_error = Some(false)).total_elements, 0);

        assert_eq!(store.delete_events_before(5).unwrap(), 5);
        assert_eq!(query(&|_| {}).total_elements, 5);
        assert_eq!(store.delete_events_of(b).unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
