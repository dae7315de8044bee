//! The embedded SQLite backend.
//!
//! One database file in WAL mode with `synchronous=FULL`, so a committed transaction survives a
//! killed process and a power cut. Readers and entity edits use a small pool of connections; the
//! uplink path has its own connection in [`SqliteUplinkWriter`], used by one thread only, so
//! group commits never wait for each other. Entity ids are stored as 16-byte blobs and time-series
//! keys through a key dictionary, which keeps the hot tables small.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::Value;
use uuid::Uuid;

use crate::entity_query::{self, Dialect, EntityQuery, EntityRow, Param};
use crate::listing::*;
use crate::model::*;
use crate::{CREDENTIALS_TAKEN, DurabilityBarrier, EventLog, ExchangeLog, Result, StorageError, Store, UplinkWriter, now_millis};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS setting (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS app_user (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL, authority TEXT NOT NULL, first_name TEXT, last_name TEXT);
-- A user's pending invitation: a hash of its activation token, never the token.
CREATE TABLE IF NOT EXISTS user_activation (
    user_id BLOB PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, expires INTEGER NOT NULL);
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
CREATE INDEX IF NOT EXISTS device_customer ON device (customer_id);
-- One per device (ThingsBoard's DeviceCredentials); credentials_id is the access token.
CREATE TABLE IF NOT EXISTS device_credentials (
    device_id BLOB PRIMARY KEY, id BLOB NOT NULL, created_time INTEGER NOT NULL,
    credentials_type TEXT NOT NULL, credentials_id TEXT NOT NULL UNIQUE, credentials_value TEXT);
CREATE TABLE IF NOT EXISTS customer (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, title TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS asset_profile (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL UNIQUE,
    is_default INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS asset (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL, asset_profile_id BLOB NOT NULL, label TEXT, customer_id BLOB,
    integration_id BLOB);
CREATE INDEX IF NOT EXISTS asset_created ON asset (created_time);
CREATE INDEX IF NOT EXISTS asset_customer ON asset (customer_id);
-- owner_id is the customer's id, or the nil UUID for groups the tenant owns.
CREATE TABLE IF NOT EXISTS entity_group (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    owner_id BLOB NOT NULL, UNIQUE (type, owner_id, name));
CREATE TABLE IF NOT EXISTS entity_group_member (
    group_id BLOB NOT NULL, entity_id BLOB NOT NULL, PRIMARY KEY (group_id, entity_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_group_member_by_entity ON entity_group_member (entity_id);
-- Append-only (rowid order is arrival order): a keyed table would dirty a random page per uplink.
CREATE TABLE IF NOT EXISTS coap_exchange_log (
    ts INTEGER NOT NULL, peer TEXT NOT NULL, message_id INTEGER NOT NULL, response BLOB NOT NULL);
-- No index on ts: expired rows are the oldest rowids (see `expire_exchanges`), and a restart
-- reads every row still in the table anyway. An index cost an insert per uplink.
DROP INDEX IF EXISTS coap_exchange_log_ts;
-- Records remote integrations sent, committed with their data: a resend is found here and not
-- stored again. Sequence numbers grow per outbox, so inserts land at the end of each range.
-- Rows are deleted once the remote reports it removed them from its outbox.
CREATE TABLE IF NOT EXISTS remote_record (
    integration_id BLOB NOT NULL, outbox_id BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (integration_id, outbox_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_dictionary (key_id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
-- New time-series points land here first, in arrival order: an uplink's commit then writes a
-- few pages at the end of this table instead of one random leaf of ts_kv per device and key.
-- One row per entity of an uplink, its points encoded together (`sqlite_points`; SQL reads
-- them through the temporary view ts_kv_recent_points, one row per point, `src` the rowid).
-- The compactor moves them into the history database (HISTORY_SCHEMA) in sorted chunks; rows
-- up to hist.compaction.moved_upto are there already and get deleted by the writer later.
CREATE TABLE IF NOT EXISTS ts_kv_recent (entity_id BLOB NOT NULL, points BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS attribute_kv (
    entity_id BLOB NOT NULL, scope TEXT NOT NULL, key INTEGER NOT NULL,
    last_update_ts INTEGER NOT NULL,
    bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT,
    PRIMARY KEY (entity_id, scope, key)) WITHOUT ROWID;
"#;

/// Time series once compacted, in a database file of their own (`<name>-history.db`, attached
/// as `hist` to every connection): moving a chunk of points there touches a page per series,
/// and in its own file that transaction never holds the write lock the uplink commits need.
const HISTORY_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ts_kv (
    entity_id BLOB NOT NULL, key INTEGER NOT NULL, ts INTEGER NOT NULL,
    bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT,
    PRIMARY KEY (entity_id, key, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ts_kv_latest (
    entity_id BLOB NOT NULL, key INTEGER NOT NULL, ts INTEGER NOT NULL,
    bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT,
    PRIMARY KEY (entity_id, key)) WITHOUT ROWID;
-- Every main.ts_kv_recent row with rowid <= moved_upto is in ts_kv and ts_kv_latest.
CREATE TABLE IF NOT EXISTS compaction (id INTEGER PRIMARY KEY CHECK (id = 1), moved_upto INTEGER NOT NULL);
INSERT OR IGNORE INTO compaction (id, moved_upto) VALUES (1, 0);
"#;

/// Rows of ts_kv_recent not yet in the history database (the rest are deleted lazily).
const UNMOVED: &str = "rowid > (SELECT moved_upto FROM hist.compaction)";
/// The same for the points of `ts_kv_recent_points`.
const UNMOVED_POINTS: &str = "src > (SELECT moved_upto FROM hist.compaction)";

/// Entity queries on SQLite: a series' latest point is in `hist.ts_kv_latest` or, until moved,
/// in `ts_kv_recent`; the newest (ts, then write order) wins, as in `latest_timeseries`.
const SQLITE_DIALECT: Dialect = Dialect {
    like: "LIKE ? ESCAPE '\\'",
    placeholder: "?",
    latest_points: |key| {
        format!(
            "SELECT entity_id, ts, bool_v, long_v, dbl_v, str_v, json_v FROM ( \
               SELECT u.*, row_number() OVER (PARTITION BY entity_id ORDER BY ts DESC, src DESC) AS rn FROM ( \
                 SELECT entity_id, ts, 0 AS src, bool_v, long_v, dbl_v, str_v, json_v FROM hist.ts_kv_latest WHERE key = {key} \
                 UNION ALL \
                 SELECT entity_id, ts, src, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_recent_points \
                   WHERE {UNMOVED_POINTS} AND key = {key}) u) l WHERE rn = 1"
        )
    },
    number: |alias| format!("coalesce({alias}.long_v, {alias}.dbl_v)"),
    text: |alias| format!("coalesce({alias}.str_v, {alias}.json_v)"),
    position: "instr",
    as_text: |a| {
        format!(
            "coalesce({a}.str_v, {a}.json_v, CAST({a}.long_v AS text), CAST({a}.dbl_v AS text), \
             CASE {a}.bool_v WHEN 1 THEN 'true' WHEN 0 THEN 'false' END)"
        )
    },
};

/// The largest page any list returns, whatever the caller asks for.
const MAX_PAGE_SIZE: u32 = 10_000;

/// Events live in a database file of their own (`<name>-events.db` beside the main one): they
/// are diagnostics written at up to the uplink rate, and sharing the main file's single write
/// lock would make uplink commits wait for them. Not fsynced on every commit (WAL with
/// synchronous=NORMAL stays consistent after a crash; the newest events may be lost).
const EVENTS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS event (
    id BLOB PRIMARY KEY, created_time INTEGER NOT NULL, entity_type TEXT NOT NULL,
    entity_id BLOB NOT NULL, event_type TEXT NOT NULL, uid TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS event_by_entity ON event (entity_id, event_type, created_time);
CREATE INDEX IF NOT EXISTS event_by_time ON event (created_time);
"#;

/// How long a connection waits for another connection's write lock before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every file is opened through SQLite's `unix-excl` VFS: the process takes an exclusive lock on
/// each database file and keeps the WAL index (the `-shm` file otherwise) in heap memory, shared
/// by all of its connections. With the default VFS the WAL index is the `-shm` file mapped into
/// memory, and a mapped file that stops being writable under the process (`chattr +i`, a
/// read-only remount, a full disk when a page must be allocated) turns the next store into it
/// into SIGBUS: the whole server died instead of one commit failing. Through `unix-excl`
/// nothing is mapped (`mmap_size` is 0 too), so every such fault is an I/O error that fails one
/// transaction (5.00) and goes away with its cause. The lock also keeps a second server (or
/// `coapgate check`) off files in use.
const VFS: &str = "unix-excl";

/// Opens one database file read-write through [`VFS`].
pub(crate) fn open_file(path: &Path) -> Result<Connection> {
    Ok(Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), VFS)?)
}

/// Names the file an error happened in: a damaged history or events file must not be reported
/// under the main database's name. An error that names a file of the data directory already
/// (SQLite's open errors do, and so does an inner call) is left as it is.
fn in_file(path: &Path) -> impl Fn(StorageError) -> StorageError + '_ {
    move |e| {
        let text = e.to_string();
        let dir = path.parent().map(|d| d.display().to_string()).unwrap_or_default();
        if text.contains(&path.display().to_string()) || (!dir.is_empty() && text.contains(&dir)) {
            e
        } else {
            StorageError::Other(format!("{}: {text}", path.display()))
        }
    }
}

/// Logs a failing background task once when it starts failing and once when it recovers,
/// instead of once per retry (ten lines a second while a disk is read-only).
pub(crate) struct FaultLog {
    what: &'static str,
    failures: u64,
}

impl FaultLog {
    pub(crate) fn new(what: &'static str) -> FaultLog {
        FaultLog { what, failures: 0 }
    }

    pub(crate) fn record<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => {
                if self.failures > 0 {
                    eprintln!("coapgate: {} works again (after {} failed attempts)", self.what, self.failures);
                    self.failures = 0;
                }
                Some(v)
            }
            Err(e) => {
                if self.failures == 0 {
                    eprintln!("coapgate: {} failed, retrying quietly until it works: {e}", self.what);
                }
                self.failures += 1;
                None
            }
        }
    }
}

pub struct SqliteStore {
    path: PathBuf,
    tenant_id: Uuid,
    /// Idle connections for reads and entity edits; a caller takes one and puts it back.
    pool: Mutex<Vec<Connection>>,
    /// The events database (see [`EVENTS_SCHEMA`]); one connection, used by the event recorder
    /// and the events API.
    events: Mutex<Connection>,
    /// Bumped whenever an entity the writer caches by name (device, asset, profile, customer,
    /// entity group) is deleted, so the writer drops its caches.
    generation: Arc<AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema; refuses a data directory
    /// whose write-ahead logs are damaged (see [`SqliteStore::open_checked`]).
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_checked(path, false).map(|(store, _)| store)
    }

    /// Opens the database after checking the write-ahead log of each of its files
    /// ([`crate::sqlite_wal`]): SQLite would silently drop every commit after damage in a log.
    /// A damaged log is refused with [`StorageError::DamagedWal`] naming each file and what
    /// would be lost, unless `salvage` is set: then the store opens on what SQLite can replay,
    /// the damaged tail is discarded for good (checkpoint and truncate, so the next start-up is
    /// clean), and the reports of what was dropped are returned.
    pub fn open_checked(path: &Path, salvage: bool) -> Result<(SqliteStore, Vec<crate::sqlite_wal::WalReport>)> {
        let mut damaged = Vec::new();
        for file in data_files(path) {
            let report = crate::sqlite_wal::check_wal(&file)
                .map_err(|e| StorageError::Other(format!("{}: cannot read the write-ahead log: {e}", wal_path(&file).display())))?;
            damaged.extend(report.filter(|r| r.damage.is_some()));
        }
        if !damaged.is_empty() && !salvage {
            return Err(StorageError::DamagedWal(damaged));
        }
        let store = SqliteStore::open_files(path)?;
        if !damaged.is_empty() {
            store.with_conn(|c| Ok(c.execute_batch("PRAGMA main.wal_checkpoint(TRUNCATE); PRAGMA hist.wal_checkpoint(TRUNCATE);")?))?;
            store.with_events(|c| Ok(c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?))?;
        }
        Ok((store, damaged))
    }

    fn open_files(path: &Path) -> Result<SqliteStore> {
        let history_file = history_path(path);
        (|| -> Result<()> {
            let history = open_file(&history_file)?;
            history.busy_timeout(BUSY_TIMEOUT)?;
            history.execute_batch("PRAGMA journal_mode=WAL;")?;
            history.execute_batch(HISTORY_SCHEMA)?;
            Ok(())
        })()
        .map_err(in_file(&history_file))?;
        let (conn, tenant_id) = SqliteStore::open_main(path).map_err(in_file(path))?;
        let events_file = events_path(path);
        let events = (|| -> Result<Connection> {
            let events = open_file(&events_file)?;
            events.busy_timeout(BUSY_TIMEOUT)?;
            events.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
            events.execute_batch(EVENTS_SCHEMA)?;
            Ok(events)
        })()
        .map_err(in_file(&events_file))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            tenant_id,
            events: Mutex::new(events),
            pool: Mutex::new(vec![conn]),
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The main file's schema, its tenant id (created once) and default profiles.
    fn open_main(path: &Path) -> Result<(Connection, Uuid)> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        migrate_history(&conn)?;
        convert_recent_rows(&conn)?;
        add_description_columns(&conn)?;
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
        for table in ["device_profile", "asset_profile"] {
            let has_default_profile: bool =
                conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE is_default = 1)"), [], |r| r.get(0))?;
            if !has_default_profile {
                conn.execute(
                    &format!("INSERT OR IGNORE INTO {table} (id, created_time, name, is_default) VALUES (?1, ?2, 'default', 1)"),
                    params![Uuid::new_v4(), now_millis()],
                )?;
            }
        }
        Ok((conn, tenant_id))
    }

    fn with_events<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        f(&mut self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path)?,
        };
        let result = f(&mut conn);
        // A connection opened while the files could not be written is read-only for life
        // (SQLite falls back to O_RDONLY): it is dropped, so writes work again once they can.
        let writable = !conn.is_readonly("main").unwrap_or(true);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 && writable {
            pool.push(conn);
        }
        result
    }

    fn page<T>(
        &self,
        listing: &Listing,
        query: &PageQuery,
        extra_filters: Vec<(&str, SqlValue)>,
        map: impl Fn(&Row) -> rusqlite::Result<T>,
    ) -> Result<Page<T>> {
        let mut filters = Vec::new();
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(search) = query.text_search.as_deref().filter(|s| !s.is_empty()) {
            args.push(format!("%{}%", search.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")).into());
            filters.push(format!("{} LIKE ?{} ESCAPE '\\'", listing.search_column, args.len()));
        }
        for (condition, value) in extra_filters {
            args.push(value);
            filters.push(condition.replace('?', &format!("?{}", args.len())));
        }
        let where_clause = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sort_column = query
            .sort_property
            .as_deref()
            .and_then(|p| listing.sortable.iter().find(|(property, _)| *property == p))
            .map(|(_, column)| *column)
            .unwrap_or("created_time");
        let order = if query.sort_descending || query.sort_property.is_none() { "DESC" } else { "ASC" };
        let size = query.page_size.clamp(1, MAX_PAGE_SIZE);
        let offset = u64::from(query.page) * u64::from(size);
        let (table, columns) = (listing.table, listing.columns);
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

    /// Deletes an entity row with its telemetry, attributes and group memberships.
    fn delete_entity(&self, table: &str, id: Uuid) -> Result<bool> {
        let deleted = self.with_conn(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?;
            tx.execute("DELETE FROM hist.ts_kv WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM ts_kv_recent WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM hist.ts_kv_latest WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM attribute_kv WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM entity_group_member WHERE entity_id = ?1", [id])?;
            tx.execute("DELETE FROM device_credentials WHERE device_id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(deleted)
    }

    /// Deletes a device or asset profile unless it is the default or still in use.
    fn delete_profile(&self, kind: EntityKind, id: Uuid) -> Result<bool> {
        let (table, users, what) = match kind {
            EntityKind::Asset => ("asset_profile", "asset", "Asset"),
            _ => ("device_profile", "device", "Device"),
        };
        let deleted = self.with_conn(|c| {
            let Some(is_default) = c
                .query_row(&format!("SELECT is_default FROM {table} WHERE id = ?1"), [id], |r| r.get::<_, bool>(0))
                .optional()?
            else {
                return Ok(false);
            };
            if is_default {
                return Err(StorageError::Conflict(format!("Deletion of Default {what} Profile is prohibited!")));
            }
            let used: bool =
                c.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {users} WHERE {table}_id = ?1)"), [id], |r| r.get(0))?;
            if used {
                return Err(StorageError::Conflict(format!(
                    "The {} profile referenced by the {users}s cannot be deleted!",
                    what.to_ascii_lowercase()
                )));
            }
            Ok(c.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])? > 0)
        })?;
        // The writer caches profile ids by name; make it look again.
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(deleted)
    }

    fn get_one<T>(&self, sql: &str, arg: impl rusqlite::ToSql, map: impl FnOnce(&Row) -> rusqlite::Result<T>) -> Result<Option<T>> {
        self.with_conn(|c| Ok(c.query_row(sql, [arg], map).optional()?))
    }

    /// Inserts or updates a device or asset row; the profile named `fields.entity_type` is
    /// created if missing. Returns the profile's id.
    fn save_entity(&self, kind: EntityKind, fields: &EntityFields<'_>) -> Result<Uuid> {
        let (table, profile_table) = entity_tables(kind);
        let what = if kind == EntityKind::Asset { "Asset" } else { "Device" };
        let profile = self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let taken: Option<Uuid> = tx
                .query_row(&format!("SELECT id FROM {table} WHERE name = ?1"), [fields.name], |r| r.get(0))
                .optional()?;
            if taken.is_some_and(|other| other != fields.id) {
                return Err(StorageError::Conflict(format!("{what} with such name already exists!")));
            }
            let existing: Option<Uuid> =
                tx.query_row(&format!("SELECT id FROM {profile_table} WHERE name = ?1"), [fields.entity_type], |r| r.get(0)).optional()?;
            let profile = match existing {
                Some(id) => id,
                None => {
                    let id = Uuid::new_v4();
                    tx.execute(
                        &format!("INSERT INTO {profile_table} (id, created_time, name, is_default) VALUES (?1, ?2, ?3, 0)"),
                        params![id, now_millis(), fields.entity_type],
                    )?;
                    id
                }
            };
            tx.execute(
                &format!(
                    "INSERT INTO {table} (id, created_time, name, type, {profile_table}_id, label, customer_id, integration_id, description) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                     type = excluded.type, {profile_table}_id = excluded.{profile_table}_id, label = excluded.label, \
                     customer_id = excluded.customer_id, description = excluded.description"
                ),
                params![
                    fields.id,
                    fields.created_time,
                    fields.name,
                    fields.entity_type,
                    profile,
                    fields.label,
                    fields.customer_id,
                    fields.created_by_integration,
                    fields.description
                ],
            )?;
            tx.commit()?;
            Ok(profile)
        })?;
        // The writer caches entities by name: a rename must not leave the old name pointing here.
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(profile)
    }
}


/// What `coapgate check` found in one database file; no problems means it is sound.
pub struct FileCheck {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

/// Verifies the files of the store at `path` without changing them: each write-ahead log
/// ([`crate::sqlite_wal`]), then `PRAGMA integrity_check` on what SQLite would read. Files in
/// use by a running server are reported as such (the server holds them exclusively).
pub fn check_files(path: &Path) -> Vec<FileCheck> {
    data_files(path).into_iter().filter(|f| f.exists() || f == path).map(check_file).collect()
}

fn check_file(file: PathBuf) -> FileCheck {
    let mut problems = Vec::new();
    if !file.is_file() {
        problems.push("missing (or not a file)".into());
        return FileCheck { file, problems };
    }
    match crate::sqlite_wal::check_wal(&file) {
        Ok(Some(report)) => problems.extend(report.damage.map(|d| format!("{} is damaged: {d}", report.wal.display()))),
        Ok(None) => {}
        Err(e) => problems.push(format!("cannot read {}: {e}", wal_path(&file).display())),
    }
    // Read-only through the default VFS: nothing is written, the log is replayed in memory and
    // kept (a read-only connection never checkpoints or deletes it), and a server's exclusive
    // lock makes this fail at once rather than read files being written.
    let integrity = (|| -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(&file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut statement = conn.prepare("PRAGMA integrity_check(20)")?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    match integrity {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => problems.extend(lines.into_iter().map(|l| format!("integrity check: {l}"))),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
            problems.push("in use by a running server: stop it, then check again".into())
        }
        Err(e) => problems.push(format!("cannot be read: {e}")),
    }
    FileCheck { file, problems }
}

/// `…/coapgate.db` → `…/coapgate-<part>.db`: the files that live beside the main database.
fn sibling_path(path: &Path, part: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "coapgate".into());
    path.with_file_name(format!("{stem}-{part}.db"))
}

/// The database files of a store: the main one, then history and events.
pub fn data_files(path: &Path) -> [PathBuf; 3] {
    [path.to_path_buf(), history_path(path), events_path(path)]
}

/// The write-ahead log SQLite keeps beside a database file.
pub fn wal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

fn events_path(path: &Path) -> PathBuf {
    sibling_path(path, "events")
}

fn history_path(path: &Path) -> PathBuf {
    sibling_path(path, "history")
}

/// A connection to the main database with the history database attached as `hist`.
pub(crate) fn open_connection(path: &Path) -> Result<Connection> {
    let conn = open_main_connection(path)?;
    let history = history_path(path);
    (|| -> Result<()> {
        conn.execute("ATTACH DATABASE ?1 AS hist", [history.to_string_lossy()])?;
        conn.execute_batch("PRAGMA hist.synchronous=FULL;")?;
        Ok(())
    })()
    .map_err(in_file(&history))?;
    Ok(conn)
}

/// A connection to the main database alone: for the uplink writer, whose `BEGIN IMMEDIATE`
/// would otherwise take the write lock of every attached database and wait for the compactor.
fn open_main_connection(path: &Path) -> Result<Connection> {
    (|| -> Result<Connection> {
        let conn = open_file(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers run beside the writer; FULL makes every commit durable (fsync of the
        // WAL), which the "2.01 only after durable commit" invariant needs. Group commit pays
        // for it.
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;")?;
        crate::sqlite_points::register(&conn)?;
        // rusqlite keeps 16 prepared statements by default; the writer alone uses about that
        // many per batch, and a statement evicted is prepared again on its next use.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    })()
    .map_err(in_file(path))
}

/// Data directories from before devices and assets had a description (set through the REST
/// API) get the column; new ones too, since `SCHEMA` keeps the first version of each table.
fn add_description_columns(conn: &Connection) -> Result<()> {
    for table in ["device", "asset"] {
        add_column(conn, table, "description", "TEXT")?;
    }
    // Users belong to a customer (customer users) and can be disabled; older directories hold
    // only the tenant administrator, enabled.
    add_column(conn, "app_user", "customer_id", "BLOB")?;
    add_column(conn, "app_user", "enabled", "INTEGER NOT NULL DEFAULT 1")?;
    Ok(())
}

fn add_column(conn: &Connection, table: &str, column: &str, definition: &str) -> Result<()> {
    let has: bool = conn.query_row(
        &format!("SELECT EXISTS (SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}')"),
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
    }
    Ok(())
}

/// Data directories from before the history database kept ts_kv and ts_kv_latest in the main
/// file: their rows move over once (copy, then drop, so an interrupted run just repeats).
/// Data directories from before one `ts_kv_recent` row per uplink hold a row per point: each
/// becomes a row of one encoded point under the same rowid (so `hist.compaction.moved_upto`
/// keeps its meaning), in one transaction of the main file.
fn convert_recent_rows(conn: &Connection) -> Result<()> {
    let old: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('ts_kv_recent') WHERE name = 'key')",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    conn.execute_batch("DROP VIEW IF EXISTS temp.ts_kv_recent_points;")?;
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("CREATE TABLE ts_kv_recent_rows (entity_id BLOB NOT NULL, points BLOB NOT NULL);")?;
    {
        let mut read = tx.prepare("SELECT rowid, entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_recent ORDER BY rowid")?;
        let mut insert = tx.prepare("INSERT INTO ts_kv_recent_rows (rowid, entity_id, points) VALUES (?1, ?2, ?3)")?;
        let mut rows = read.query([])?;
        let mut point = crate::sqlite_points::PointsEncoder::new();
        while let Some(r) = rows.next()? {
            let (rowid, entity_id, key, ts): (i64, Vec<u8>, i64, Millis) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            point.clear();
            point.push(key, ts, &kv_from_row(r, 4)?);
            insert.execute(params![rowid, entity_id, point.bytes()])?;
        }
    }
    tx.execute_batch("DROP TABLE ts_kv_recent; ALTER TABLE ts_kv_recent_rows RENAME TO ts_kv_recent;")?;
    tx.commit()?;
    crate::sqlite_points::create_view(conn)?;
    Ok(())
}

fn migrate_history(conn: &Connection) -> Result<()> {
    let old: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE name = 'ts_kv')", [], |r| r.get(0))?;
    if old {
        conn.execute_batch(
            "INSERT OR REPLACE INTO hist.ts_kv SELECT * FROM main.ts_kv; \
             INSERT OR REPLACE INTO hist.ts_kv_latest SELECT * FROM main.ts_kv_latest; \
             DROP TABLE main.ts_kv; DROP TABLE IF EXISTS main.ts_kv_latest;",
        )?;
    }
    Ok(())
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        created_time: r.get(1)?,
        email: r.get(2)?,
        password_hash: r.get(3)?,
        authority: r.get(4)?,
        first_name: r.get(5)?,
        last_name: r.get(6)?,
        customer_id: r.get(7)?,
        enabled: r.get(8)?,
    })
}

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
        description: r.get(8)?,
    })
}

fn profile_from_row(r: &Row) -> rusqlite::Result<DeviceProfile> {
    Ok(DeviceProfile { id: r.get(0)?, created_time: r.get(1)?, name: r.get(2)?, is_default: r.get(3)? })
}
fn asset_profile_from_row(r: &Row) -> rusqlite::Result<AssetProfile> {
    Ok(AssetProfile { id: r.get(0)?, created_time: r.get(1)?, name: r.get(2)?, is_default: r.get(3)? })
}

fn asset_from_row(r: &Row) -> rusqlite::Result<Asset> {
    Ok(Asset {
        id: r.get(0)?,
        created_time: r.get(1)?,
        name: r.get(2)?,
        asset_type: r.get(3)?,
        asset_profile_id: r.get(4)?,
        label: r.get(5)?,
        customer_id: r.get(6)?,
        created_by_integration: r.get(7)?,
        description: r.get(8)?,
    })
}

fn customer_from_row(r: &Row) -> rusqlite::Result<Customer> {
    Ok(Customer { id: r.get(0)?, created_time: r.get(1)?, title: r.get(2)? })
}

fn group_from_row(r: &Row) -> rusqlite::Result<EntityGroup> {
    let kind: String = r.get(3)?;
    Ok(EntityGroup {
        id: r.get(0)?,
        created_time: r.get(1)?,
        name: r.get(2)?,
        group_type: EntityKind::parse(&kind).unwrap_or(EntityKind::Device),
        owner: owner_from_column(r.get(4)?),
    })
}

/// Tenant-owned groups store the nil UUID as owner, so `UNIQUE (type, owner_id, name)` holds for them too.
fn owner_column(owner: Owner) -> Uuid {
    owner.customer_id().unwrap_or(Uuid::nil())
}
fn owner_from_column(id: Uuid) -> Owner {
    if id.is_nil() { Owner::Tenant } else { Owner::Customer(id) }
}

fn member_from_row(kind: EntityKind) -> impl Fn(&Row) -> rusqlite::Result<GroupMember> {
    move |r| {
        Ok(GroupMember {
            kind,
            id: r.get(0)?,
            created_time: r.get(1)?,
            name: r.get(2)?,
            entity_type: r.get(3)?,
            label: r.get(4)?,
        })
    }
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
    point_columns(&crate::sqlite_points::PointValue::of(v))
}

fn map_unique_violation(e: rusqlite::Error, what: &str) -> StorageError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StorageError::Conflict(what.to_string())
        }
        _ => StorageError::Database(e),
    }
}

fn uuid_value(id: Uuid) -> SqlValue {
    SqlValue::Blob(id.as_bytes().to_vec())
}

/// The `type = ?` filter of device and asset lists, when a type is asked for.
fn type_filter(entity_type: Option<&str>) -> Vec<(&'static str, SqlValue)> {
    entity_type.filter(|t| !t.is_empty()).map(|t| ("type = ?", SqlValue::from(t.to_string()))).into_iter().collect()
}

/// Fails with NotFound unless the entity exists (see `listing::owner_exists_sql`).
fn require_owner(tx: &rusqlite::Transaction<'_>, entity_id: Uuid) -> Result<()> {
    let exists: bool = tx.prepare_cached(&crate::listing::owner_exists_sql("?1"))?.query_row([entity_id], |r| r.get(0))?;
    if exists { Ok(()) } else { Err(StorageError::NotFound) }
}

/// A key's dictionary id, added if new.
fn dictionary_key(conn: &Connection, key: &str) -> Result<i64> {
    conn.prepare_cached("INSERT OR IGNORE INTO key_dictionary (key) VALUES (?1)")?.execute([key])?;
    Ok(conn.prepare_cached("SELECT key_id FROM key_dictionary WHERE key = ?1")?.query_row([key], |r| r.get(0))?)
}

/// Keys in `keys` that are known, with their dictionary ids; unknown keys have no data.
const CREDENTIALS_COLUMNS: &str = "id, created_time, device_id, credentials_type, credentials_id, credentials_value";

fn credentials_from_row(r: &Row) -> rusqlite::Result<DeviceCredentials> {
    Ok(DeviceCredentials {
        id: r.get(0)?,
        created_time: r.get(1)?,
        device_id: r.get(2)?,
        credentials_type: r.get(3)?,
        credentials_id: r.get(4)?,
        credentials_value: r.get(5)?,
    })
}

fn insert_credentials(conn: &Connection, c: &DeviceCredentials) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO device_credentials ({CREDENTIALS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![c.id, c.created_time, c.device_id, c.credentials_type, c.credentials_id, c.credentials_value],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StorageError::Conflict(CREDENTIALS_TAKEN.into())
        }
        other => other.into(),
    })?;
    Ok(())
}

/// Deletes an entity's telemetry and attributes (ThingsBoard deletes them with any entity).
fn delete_entity_data(conn: &Connection, id: Uuid) -> Result<()> {
    conn.execute("DELETE FROM hist.ts_kv WHERE entity_id = ?1", [id])?;
    conn.execute("DELETE FROM ts_kv_recent WHERE entity_id = ?1", [id])?;
    conn.execute("DELETE FROM hist.ts_kv_latest WHERE entity_id = ?1", [id])?;
    conn.execute("DELETE FROM attribute_kv WHERE entity_id = ?1", [id])?;
    Ok(())
}

/// Takes one series' points out of the entity's unmoved `ts_kv_recent` rows (rewritten without
/// them; a row left empty stays, so rowids never go back). Moved rows are left to the writer.
fn remove_recent_points(conn: &Connection, entity_id: Uuid, key_id: i64) -> Result<()> {
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare_cached(&format!("SELECT rowid, points FROM ts_kv_recent WHERE {UNMOVED} AND entity_id = ?1"))?
        .query_map(params![entity_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = conn.prepare_cached("UPDATE ts_kv_recent SET points = ?2 WHERE rowid = ?1")?;
    for (rowid, bytes) in rows {
        let points: Vec<_> = crate::sqlite_points::decode(&bytes).collect();
        if points.iter().all(|p| p.key != key_id) {
            continue;
        }
        let mut kept = crate::sqlite_points::PointsEncoder::new();
        for p in points.into_iter().filter(|p| p.key != key_id) {
            kept.push(p.key, p.ts, &p.value.to_kv());
        }
        update.execute(params![rowid, kept.bytes()])?;
    }
    Ok(())
}

/// The newest point of one series with `ts < before`, from the history file or, not moved yet,
/// ts_kv_recent (the newer write wins for equal timestamps).
fn latest_point(conn: &Connection, entity_id: Uuid, key_id: i64, before: Millis) -> Result<Option<TsValue>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT ts, bool_v, long_v, dbl_v, str_v, json_v FROM ( \
               SELECT ts, bool_v, long_v, dbl_v, str_v, json_v, 0 AS src FROM hist.ts_kv_latest \
                 WHERE entity_id = ?1 AND key = ?2 AND ts < ?3 \
               UNION ALL \
               SELECT ts, bool_v, long_v, dbl_v, str_v, json_v, 0 AS src FROM hist.ts_kv \
                 WHERE entity_id = ?1 AND key = ?2 AND ts < ?3 \
               UNION ALL \
               SELECT ts, bool_v, long_v, dbl_v, str_v, json_v, src FROM ts_kv_recent_points \
                 WHERE {UNMOVED_POINTS} AND entity_id = ?1 AND key = ?2 AND ts < ?3) \
             ORDER BY ts DESC, src DESC LIMIT 1"
        ))?
        .query_row(params![entity_id, key_id, before], |r| Ok(TsValue { ts: r.get(0)?, value: kv_from_row(r, 1)? }))
        .optional()?)
}

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

impl EventLog for SqliteStore {
    fn insert_events(&self, events: &[Event]) -> Result<()> {
        self.with_events(|c| {
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

    fn delete_events_before(&self, ts: Millis) -> Result<u64> {
        self.with_events(|c| Ok(c.execute("DELETE FROM event WHERE created_time < ?1", [ts])? as u64))
    }
}

impl ExchangeLog for SqliteStore {
    fn recent_exchanges(&self, since: Millis, limit: usize) -> Result<Vec<Exchange>> {
        self.with_conn(|c| recent_exchanges(c, since, limit))
    }

    fn find_exchange(&self, peer: &str, message_id: u16, since: Millis) -> Result<Option<Exchange>> {
        self.with_conn(|c| find_exchange(c, peer, message_id, since))
    }
}

/// Appends a commit's exchanges to `coap_exchange_log`, several rows per statement: a
/// statement's execution (binding, the VDBE's start and halt, the reset) cost more than the
/// row it appended, once per uplink. Statements of 64, 16, 4 and 1 rows, largest first, so a
/// batch of any size takes few executions and only four statements are ever prepared.
pub(crate) fn remember_exchanges(conn: &Connection, exchanges: &[&Exchange]) -> Result<()> {
    static SQL: [std::sync::OnceLock<String>; 4] = [const { std::sync::OnceLock::new() }; 4];
    const SIZES: [usize; 4] = [64, 16, 4, 1];
    let mut rest = exchanges;
    while !rest.is_empty() {
        let which = SIZES.iter().position(|&n| n <= rest.len()).expect("1 fits any non-empty rest");
        let (now, later) = rest.split_at(SIZES[which]);
        let sql = SQL[which].get_or_init(|| {
            format!("INSERT INTO coap_exchange_log (ts, peer, message_id, response) VALUES {}", value_rows(SIZES[which], 4))
        });
        let mut insert = conn.prepare_cached(sql)?;
        for (i, e) in now.iter().enumerate() {
            let at = i * 4;
            insert.raw_bind_parameter(at + 1, e.ts)?;
            insert.raw_bind_parameter(at + 2, &e.peer)?;
            insert.raw_bind_parameter(at + 3, e.message_id)?;
            insert.raw_bind_parameter(at + 4, &e.response)?;
        }
        insert.raw_execute()?;
        rest = later;
    }
    Ok(())
}

/// [`ExchangeLog::recent_exchanges`] on a database with a `coap_exchange_log` table.
pub(crate) fn recent_exchanges(c: &Connection, since: Millis, limit: usize) -> Result<Vec<Exchange>> {
    // Newest first by arrival (rowid), so only `limit` rows are read; the first row of a
    // (peer, message id) seen is its newest exchange, the one a retransmission belongs to.
    let mut stmt = c.prepare_cached(
        "SELECT peer, message_id, ts, response FROM coap_exchange_log WHERE ts >= ?1 ORDER BY rowid DESC LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for row in stmt.query_map(params![since, limit], |r| {
        Ok(Exchange { peer: r.get(0)?, message_id: r.get(1)?, ts: r.get(2)?, response: r.get(3)? })
    })? {
        let e = row?;
        if seen.insert((e.peer.clone(), e.message_id)) {
            rows.push(e);
        }
    }
    rows.reverse();
    Ok(rows)
}

/// [`ExchangeLog::find_exchange`] on a database with a `coap_exchange_log` table.
pub(crate) fn find_exchange(c: &Connection, peer: &str, message_id: u16, since: Millis) -> Result<Option<Exchange>> {
    let mut stmt = c.prepare_cached(
        "SELECT peer, message_id, ts, response FROM coap_exchange_log \
         WHERE peer = ?1 AND message_id = ?2 AND ts >= ?3 ORDER BY rowid DESC LIMIT 1",
    )?;
    Ok(stmt
        .query_row(params![peer, message_id, since], |r| {
            Ok(Exchange { peer: r.get(0)?, message_id: r.get(1)?, ts: r.get(2)?, response: r.get(3)? })
        })
        .optional()?)
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
                &format!("INSERT INTO app_user ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![u.id, u.created_time, u.email, u.password_hash, u.authority, u.first_name, u.last_name, u.customer_id, u.enabled],
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

    fn set_user_password_hash(&self, id: Uuid, password_hash: &str) -> Result<bool> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("UPDATE app_user SET password_hash = ?2 WHERE id = ?1", params![id, password_hash])?;
            tx.execute("DELETE FROM user_activation WHERE user_id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn users(&self, filter: UserFilter, query: &PageQuery) -> Result<Page<User>> {
        let filters = match filter {
            UserFilter::All => Vec::new(),
            UserFilter::TenantAdmins => vec![("authority = ?", SqlValue::from("TENANT_ADMIN".to_string()))],
            UserFilter::Customer(customer) => vec![("customer_id = ?", uuid_value(customer))],
        };
        self.page(&USERS, query, filters, user_from_row)
    }

    fn update_user(&self, u: &User) -> Result<bool> {
        self.with_conn(|c| {
            let n = c
                .execute(
                    "UPDATE app_user SET email = ?2, first_name = ?3, last_name = ?4 WHERE id = ?1",
                    params![u.id, u.email, u.first_name, u.last_name],
                )
                .map_err(|e| map_unique_violation(e, "User with such email already exists!"))?;
            Ok(n > 0)
        })
    }

    fn set_user_enabled(&self, id: Uuid, enabled: bool) -> Result<bool> {
        self.with_conn(|c| Ok(c.execute("UPDATE app_user SET enabled = ?2 WHERE id = ?1", params![id, enabled])? > 0))
    }

    fn delete_user(&self, id: Uuid) -> Result<bool> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM app_user WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM user_activation WHERE user_id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn set_activation_token(&self, user_id: Uuid, token_hash: &str, expires: Millis) -> Result<bool> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM app_user WHERE id = ?1)", [user_id], |r| r.get(0))?;
            if exists {
                tx.execute(
                    "INSERT INTO user_activation (user_id, token_hash, expires) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(user_id) DO UPDATE SET token_hash = excluded.token_hash, expires = excluded.expires",
                    params![user_id, token_hash, expires],
                )?;
            }
            tx.commit()?;
            Ok(exists)
        })
    }

    fn activate_user(&self, token_hash: &str, now: Millis, password_hash: &str) -> Result<Activation> {
        self.with_conn(|c| {
            // IMMEDIATE: the read and the delete are one step against a concurrent activation.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let found: Option<(Uuid, Millis)> = tx
                .query_row("SELECT user_id, expires FROM user_activation WHERE token_hash = ?1", [token_hash], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((user_id, expires)) = found else { return Ok(Activation::Unknown) };
            if expires <= now {
                return Ok(Activation::Expired);
            }
            tx.execute("DELETE FROM user_activation WHERE user_id = ?1", [user_id])?;
            tx.execute("UPDATE app_user SET password_hash = ?2 WHERE id = ?1", params![user_id, password_hash])?;
            let user = tx
                .query_row(&format!("SELECT {USER_COLUMNS} FROM app_user WHERE id = ?1"), [user_id], user_from_row)
                .optional()?;
            tx.commit()?;
            Ok(user.map_or(Activation::Unknown, Activation::Activated))
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
        self.page(&CONVERTERS, query, Vec::new(), converter_from_row)
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
            let tx = c.transaction()?;
            let deleted = tx.execute("DELETE FROM converter WHERE id = ?1", [id])? > 0;
            if deleted {
                delete_entity_data(&tx, id)?;
            }
            tx.commit()?;
            Ok(deleted)
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
        self.page(&INTEGRATIONS, query, Vec::new(), integration_from_row)
    }

    fn all_integrations(&self) -> Result<Vec<Integration>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {INTEGRATION_COLUMNS} FROM integration"))?;
            Ok(stmt.query_map([], integration_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn delete_integration(&self, id: Uuid) -> Result<bool> {
        self.with_conn(|c| {
            // Its remotes' record places go with it: nothing may be sent for it any more.
            let tx = c.transaction()?;
            tx.execute("DELETE FROM remote_record WHERE integration_id = ?1", [id])?;
            let deleted = tx.execute("DELETE FROM integration WHERE id = ?1", [id])? > 0;
            if deleted {
                delete_entity_data(&tx, id)?;
            }
            tx.commit()?;
            Ok(deleted)
        })
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
        self.page(&DEVICES, query, type_filter(device_type), device_from_row)
    }

    fn unassigned_devices(&self, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>> {
        let mut filters = type_filter(device_type);
        filters.push(("customer_id IS ?", SqlValue::Null));
        self.page(&DEVICES, query, filters, device_from_row)
    }

    fn customer_devices(&self, customer_id: Uuid, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>> {
        let mut filters = type_filter(device_type);
        filters.push(("customer_id = ?", uuid_value(customer_id)));
        self.page(&DEVICES, query, filters, device_from_row)
    }

    fn delete_device(&self, id: Uuid) -> Result<bool> {
        self.delete_entity("device", id)
    }

    fn device_credentials(&self, device_id: Uuid) -> Result<Option<DeviceCredentials>> {
        self.get_one(&format!("SELECT {CREDENTIALS_COLUMNS} FROM device_credentials WHERE device_id = ?1"), device_id, credentials_from_row)
    }

    fn ensure_device_credentials(&self, credentials: &DeviceCredentials) -> Result<DeviceCredentials> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row(
                    &format!("SELECT {CREDENTIALS_COLUMNS} FROM device_credentials WHERE device_id = ?1"),
                    [credentials.device_id],
                    credentials_from_row,
                )
                .optional()?;
            let stored = match existing {
                Some(existing) => existing,
                None => {
                    insert_credentials(&tx, credentials)?;
                    credentials.clone()
                }
            };
            tx.commit()?;
            Ok(stored)
        })
    }

    fn save_device_credentials(&self, credentials: &DeviceCredentials) -> Result<DeviceCredentials> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let holder: Option<Uuid> = tx
                .query_row("SELECT device_id FROM device_credentials WHERE credentials_id = ?1", [&credentials.credentials_id], |r| r.get(0))
                .optional()?;
            if holder.is_some_and(|d| d != credentials.device_id) {
                return Err(StorageError::Conflict(CREDENTIALS_TAKEN.into()));
            }
            let kept: Option<(Uuid, Millis)> = tx
                .query_row("SELECT id, created_time FROM device_credentials WHERE device_id = ?1", [credentials.device_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let stored = match kept {
                Some((id, created_time)) => DeviceCredentials { id, created_time, ..credentials.clone() },
                None => credentials.clone(),
            };
            tx.execute("DELETE FROM device_credentials WHERE device_id = ?1", [credentials.device_id])?;
            insert_credentials(&tx, &stored)?;
            tx.commit()?;
            Ok(stored)
        })
    }

    fn device_profile(&self, id: Uuid) -> Result<Option<DeviceProfile>> {
        self.get_one(&format!("SELECT {PROFILE_COLUMNS} FROM device_profile WHERE id = ?1"), id, profile_from_row)
    }

    fn delete_device_profile(&self, id: Uuid) -> Result<bool> {
        self.delete_profile(EntityKind::Device, id)
    }

    fn device_profiles(&self, query: &PageQuery) -> Result<Page<DeviceProfile>> {
        self.page(&DEVICE_PROFILES, query, Vec::new(), profile_from_row)
    }

    fn asset(&self, id: Uuid) -> Result<Option<Asset>> {
        self.get_one(&format!("SELECT {ASSET_COLUMNS} FROM asset WHERE id = ?1"), id, asset_from_row)
    }

    fn asset_by_name(&self, name: &str) -> Result<Option<Asset>> {
        self.get_one(&format!("SELECT {ASSET_COLUMNS} FROM asset WHERE name = ?1"), name, asset_from_row)
    }

    fn assets(&self, query: &PageQuery, asset_type: Option<&str>) -> Result<Page<Asset>> {
        self.page(&ASSETS, query, type_filter(asset_type), asset_from_row)
    }

    fn customer_assets(&self, customer_id: Uuid, query: &PageQuery, asset_type: Option<&str>) -> Result<Page<Asset>> {
        let mut filters = type_filter(asset_type);
        filters.push(("customer_id = ?", uuid_value(customer_id)));
        self.page(&ASSETS, query, filters, asset_from_row)
    }

    fn delete_asset(&self, id: Uuid) -> Result<bool> {
        self.delete_entity("asset", id)
    }

    fn asset_profile(&self, id: Uuid) -> Result<Option<AssetProfile>> {
        self.get_one(&format!("SELECT {PROFILE_COLUMNS} FROM asset_profile WHERE id = ?1"), id, asset_profile_from_row)
    }

    fn asset_profiles(&self, query: &PageQuery) -> Result<Page<AssetProfile>> {
        self.page(&ASSET_PROFILES, query, Vec::new(), asset_profile_from_row)
    }

    fn delete_asset_profile(&self, id: Uuid) -> Result<bool> {
        self.delete_profile(EntityKind::Asset, id)
    }

    fn customer(&self, id: Uuid) -> Result<Option<Customer>> {
        self.get_one(&format!("SELECT {CUSTOMER_COLUMNS} FROM customer WHERE id = ?1"), id, customer_from_row)
    }

    fn customer_by_title(&self, title: &str) -> Result<Option<Customer>> {
        self.get_one(&format!("SELECT {CUSTOMER_COLUMNS} FROM customer WHERE title = ?1"), title, customer_from_row)
    }

    fn customers(&self, query: &PageQuery) -> Result<Page<Customer>> {
        self.page(&CUSTOMERS, query, Vec::new(), customer_from_row)
    }

    fn delete_customer(&self, id: Uuid) -> Result<bool> {
        let deleted = self.with_conn(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM customer WHERE id = ?1", [id])?;
            if n > 0 {
                // The customer's own telemetry and attributes (written through the REST API).
                delete_entity_data(&tx, id)?;
                tx.execute("UPDATE device SET customer_id = NULL WHERE customer_id = ?1", [id])?;
                tx.execute("UPDATE asset SET customer_id = NULL WHERE customer_id = ?1", [id])?;
                tx.execute(
                    "DELETE FROM entity_group_member WHERE group_id IN (SELECT id FROM entity_group WHERE owner_id = ?1)",
                    [id],
                )?;
                tx.execute("DELETE FROM entity_group WHERE owner_id = ?1", [id])?;
                tx.execute("DELETE FROM user_activation WHERE user_id IN (SELECT id FROM app_user WHERE customer_id = ?1)", [id])?;
                tx.execute("DELETE FROM app_user WHERE customer_id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(n > 0)
        })?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(deleted)
    }

    fn entity_group(&self, id: Uuid) -> Result<Option<EntityGroup>> {
        self.get_one(&format!("SELECT {GROUP_COLUMNS} FROM entity_group WHERE id = ?1"), id, group_from_row)
    }

    fn entity_groups(&self, group_type: EntityKind, owner: Option<Owner>, query: &PageQuery) -> Result<Page<EntityGroup>> {
        let mut filters = vec![("type = ?", SqlValue::from(group_type.as_str().to_string()))];
        if let Some(owner) = owner {
            filters.push(("owner_id = ?", uuid_value(owner_column(owner))));
        }
        self.page(&GROUPS, query, filters, group_from_row)
    }

    fn entity_group_by_name(&self, group_type: EntityKind, owner: Owner, name: &str) -> Result<Option<EntityGroup>> {
        self.with_conn(|c| {
            Ok(c.query_row(
                &format!("SELECT {GROUP_COLUMNS} FROM entity_group WHERE type = ?1 AND owner_id = ?2 AND name = ?3"),
                params![group_type.as_str(), owner_column(owner), name],
                group_from_row,
            )
            .optional()?)
        })
    }

    fn entity_group_members(&self, group_id: Uuid, query: &PageQuery) -> Result<Page<GroupMember>> {
        let group = self.entity_group(group_id)?.ok_or(StorageError::NotFound)?;
        let listing = match group.group_type {
            EntityKind::Asset => &ASSET_MEMBERS,
            _ => &DEVICE_MEMBERS,
        };
        let filter = ("id IN (SELECT entity_id FROM entity_group_member WHERE group_id = ?)", uuid_value(group_id));
        self.page(listing, query, vec![filter], member_from_row(group.group_type))
    }

    fn groups_of_entity(&self, entity_id: Uuid) -> Result<Vec<Uuid>> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached("SELECT group_id FROM entity_group_member WHERE entity_id = ?1 ORDER BY group_id")?;
            Ok(stmt.query_map([entity_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<Uuid>>>()?)
        })
    }

    fn delete_entity_group(&self, id: Uuid) -> Result<bool> {
        let deleted = self.with_conn(|c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM entity_group WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM entity_group_member WHERE group_id = ?1", [id])?;
            tx.commit()?;
            Ok(n > 0)
        })?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(deleted)
    }

    fn save_device(&self, device: &Device) -> Result<Device> {
        let profile = self.save_entity(EntityKind::Device, &EntityFields::of_device(device))?;
        Ok(Device { device_profile_id: profile, ..device.clone() })
    }

    fn save_asset(&self, asset: &Asset) -> Result<Asset> {
        let profile = self.save_entity(EntityKind::Asset, &EntityFields::of_asset(asset))?;
        Ok(Asset { asset_profile_id: profile, ..asset.clone() })
    }

    fn save_customer(&self, customer: &Customer) -> Result<()> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let taken: Option<Uuid> =
                tx.query_row("SELECT id FROM customer WHERE title = ?1", [&customer.title], |r| r.get(0)).optional()?;
            if taken.is_some_and(|other| other != customer.id) {
                return Err(StorageError::Conflict("Customer with such title already exists!".into()));
            }
            tx.execute(
                "INSERT INTO customer (id, created_time, title) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET title = excluded.title",
                params![customer.id, customer.created_time, customer.title],
            )?;
            tx.commit()?;
            Ok(())
        })?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn save_attributes(&self, entity_id: Uuid, scope: &str, ts: Millis, values: &[(String, KvValue)]) -> Result<()> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            require_owner(&tx, entity_id)?;
            for (key, value) in values {
                let key_id = dictionary_key(&tx, key)?;
                let (b, l, d, s, j) = kv_columns(value);
                tx.prepare_cached(
                    "INSERT INTO attribute_kv (entity_id, scope, key, last_update_ts, bool_v, long_v, dbl_v, str_v, json_v) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (entity_id, scope, key) DO UPDATE SET \
                     last_update_ts = excluded.last_update_ts, bool_v = excluded.bool_v, long_v = excluded.long_v, \
                     dbl_v = excluded.dbl_v, str_v = excluded.str_v, json_v = excluded.json_v",
                )?
                .execute(params![entity_id, scope, key_id, ts, b, l, d, s, j])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn save_timeseries(&self, entity_id: Uuid, points: &[(Millis, Vec<(String, KvValue)>)]) -> Result<()> {
        // Through ts_kv_recent like an uplink's points: the compactor moves them into the history
        // database and folds the newest into the latest values. This connection commits with
        // synchronous=FULL, so the points are durable when the call returns.
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            require_owner(&tx, entity_id)?;
            {
                let mut recent = RecentRows::new(&tx)?;
                // The REST API has no updateOnlyKeys: nothing to remember per key.
                let mut unused = WriterCache::default();
                for (ts, values) in points {
                    recent.begin_group(entity_id, *ts, &mut unused)?;
                    for (key, value) in values {
                        let key_id = dictionary_key(&tx, key)?;
                        recent.push(key_id, *ts, value);
                    }
                }
                recent.flush(entity_id, &mut unused)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn delete_attributes(&self, entity_id: Uuid, scope: &str, keys: &[String]) -> Result<()> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for (_, key_id) in key_ids(&tx, keys)? {
                tx.prepare_cached("DELETE FROM attribute_kv WHERE entity_id = ?1 AND scope = ?2 AND key = ?3")?
                    .execute(params![entity_id, scope, key_id])?;
            }
            tx.commit()?;
            Ok(())
        })?;
        // The writers compare `updateOnlyKeys` values with what they cached: make them look again.
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn delete_timeseries(&self, entity_id: Uuid, deletion: &TimeseriesDeletion) -> Result<()> {
        let TimeseriesDeletion { keys, start_ts, end_ts, delete_latest, rewrite_latest } = deletion;
        self.with_conn(|c| {
            // The main file's write lock, then at once the history file's (before reading it, so
            // the read cannot be older than the write): the compactor takes the history lock
            // before it reads what to move, so it never moves a row this transaction deleted.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("UPDATE hist.compaction SET moved_upto = moved_upto", [])?;
            for (_, key_id) in key_ids(&tx, keys)? {
                let latest = latest_point(&tx, entity_id, key_id, i64::MAX)?;
                // The series' points still waiting in ts_kv_recent move into the history file
                // first (as the compactor would, the newer write winning), so its latest value
                // has one place, which the rules below can then delete or rewrite exactly.
                tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO hist.ts_kv (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                     SELECT entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_recent_points \
                     WHERE {UNMOVED_POINTS} AND entity_id = ?1 AND key = ?2 ORDER BY src"
                ))?
                .execute(params![entity_id, key_id])?;
                remove_recent_points(&tx, entity_id, key_id)?;
                tx.prepare_cached("DELETE FROM hist.ts_kv WHERE entity_id = ?1 AND key = ?2 AND ts >= ?3 AND ts < ?4")?
                    .execute(params![entity_id, key_id, start_ts, end_ts])?;
                let Some(latest) = latest else { continue };
                let in_range = latest.ts >= *start_ts && latest.ts < *end_ts;
                let replacement = if !in_range || !delete_latest {
                    Some(latest)
                } else if *rewrite_latest {
                    latest_point(&tx, entity_id, key_id, *start_ts)?
                } else {
                    None
                };
                tx.prepare_cached("DELETE FROM hist.ts_kv_latest WHERE entity_id = ?1 AND key = ?2")?
                    .execute(params![entity_id, key_id])?;
                if let Some(point) = replacement {
                    let (b, l, d, s, j) = kv_columns(&point.value);
                    tx.prepare_cached(
                        "INSERT INTO hist.ts_kv_latest (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![entity_id, key_id, point.ts, b, l, d, s, j])?;
                }
            }
            tx.commit()?;
            Ok(())
        })?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn timeseries_keys(&self, entity_id: Uuid) -> Result<Vec<String>> {
        self.with_conn(|c| {
            // Points not moved yet are only in ts_kv_recent (see `move_recent`).
            let mut stmt = c.prepare_cached(&format!(
                "SELECT d.key FROM key_dictionary d WHERE d.key_id IN ( \
                   SELECT key FROM hist.ts_kv_latest WHERE entity_id = ?1 \
                   UNION SELECT key FROM ts_kv_recent_points WHERE {UNMOVED_POINTS} AND entity_id = ?1) \
                 ORDER BY d.key"
            ))?;
            Ok(stmt.query_map([entity_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn latest_timeseries(&self, entity_id: Uuid, keys: Option<&[String]>) -> Result<Vec<(String, TsValue)>> {
        self.with_conn(|c| {
            // ts_kv_latest holds what compaction folded in; newer points may still wait in
            // ts_kv_recent. The newest (ts, then write order) of each key wins. The main file's
            // snapshot is taken before the history file's (attach order), so a point moved in
            // between is seen in history, never in neither.
            let mut stmt = c.prepare_cached(&format!(
                "SELECT d.key, u.ts, u.src, u.bool_v, u.long_v, u.dbl_v, u.str_v, u.json_v FROM ( \
                   SELECT key, ts, 0 AS src, bool_v, long_v, dbl_v, str_v, json_v FROM hist.ts_kv_latest WHERE entity_id = ?1 \
                   UNION ALL \
                   SELECT key, ts, src, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_recent_points WHERE {UNMOVED_POINTS} AND entity_id = ?1) u \
                 JOIN key_dictionary d ON d.key_id = u.key ORDER BY d.key"
            ))?;
            // Rows come grouped by key: keep the highest-ranked one of each group.
            let mut newest: Vec<(String, (Millis, i64), TsValue)> = Vec::new();
            let mut found = stmt.query([entity_id])?;
            while let Some(r) = found.next()? {
                let (key, rank): (String, (Millis, i64)) = (r.get(0)?, (r.get(1)?, r.get(2)?));
                let value = TsValue { ts: rank.0, value: kv_from_row(r, 3)? };
                match newest.last_mut() {
                    Some((last, best, kept)) if *last == key => {
                        if rank >= *best {
                            (*best, *kept) = (rank, value);
                        }
                    }
                    _ => newest.push((key, rank, value)),
                }
            }
            let rows: Vec<(String, TsValue)> = newest.into_iter().map(|(key, _, value)| (key, value)).collect();
            Ok(match keys {
                None => rows,
                Some(keys) => keys
                    .iter()
                    .filter_map(|k| rows.iter().find(|(name, _)| name == k).cloned())
                    .collect(),
            })
        })
    }

    fn latest_timeseries_of(&self, entity_ids: &[Uuid], keys: &[String]) -> Result<Vec<(Uuid, String, TsValue)>> {
        if entity_ids.is_empty() || keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with_conn(|c| {
            let known = key_ids(c, keys)?;
            if known.is_empty() {
                return Ok(Vec::new());
            }
            // As `latest_timeseries`, for all the entities in one statement: ts_kv_recent has no
            // index by entity, so one pass over its unmoved rows serves the whole page.
            let entity_marks = vec!["?"; entity_ids.len()].join(", ");
            let key_marks = vec!["?"; known.len()].join(", ");
            let sql = format!(
                "SELECT entity_id, key, ts, src, bool_v, long_v, dbl_v, str_v, json_v FROM ( \
                   SELECT entity_id, key, ts, 0 AS src, bool_v, long_v, dbl_v, str_v, json_v FROM hist.ts_kv_latest \
                     WHERE entity_id IN ({entity_marks}) AND key IN ({key_marks}) \
                   UNION ALL \
                   SELECT entity_id, key, ts, src, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_recent_points \
                     WHERE {UNMOVED_POINTS} AND entity_id IN ({entity_marks}) AND key IN ({key_marks}))"
            );
            let mut args: Vec<SqlValue> = Vec::new();
            for _ in 0..2 {
                args.extend(entity_ids.iter().map(|id| uuid_value(*id)));
                args.extend(known.iter().map(|(_, id)| SqlValue::Integer(*id)));
            }
            let mut newest: HashMap<(Uuid, i64), ((Millis, i64), TsValue)> = HashMap::new();
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(args))?;
            while let Some(r) = rows.next()? {
                let (entity, key, rank): (Uuid, i64, (Millis, i64)) = (r.get(0)?, r.get(1)?, (r.get(2)?, r.get(3)?));
                let value = TsValue { ts: rank.0, value: kv_from_row(r, 4)? };
                match newest.get(&(entity, key)) {
                    Some((best, _)) if *best > rank => {}
                    _ => {
                        newest.insert((entity, key), (rank, value));
                    }
                }
            }
            let names: HashMap<i64, &String> = known.iter().map(|(name, id)| (*id, name)).collect();
            Ok(newest.into_iter().map(|((entity, key), (_, value))| (entity, names[&key].clone(), value)).collect())
        })
    }

    fn timeseries_history(&self, entity_id: Uuid, query: &HistoryQuery) -> Result<Vec<(String, Vec<TsValue>)>> {
        self.with_conn(|c| {
            let order = if query.descending { "DESC" } else { "ASC" };
            // Points are in hist.ts_kv or, until moved, in ts_kv_recent; for a timestamp in both,
            // the recent one is the newer write (max(src) picks its row's columns).
            let mut stmt = c.prepare_cached(&format!(
                "SELECT ts, bool_v, long_v, dbl_v, str_v, json_v, max(src) FROM ( \
                   SELECT ts, bool_v, long_v, dbl_v, str_v, json_v, 0 AS src FROM hist.ts_kv \
                     WHERE entity_id = ?1 AND key = ?2 AND ts >= ?3 AND ts <= ?4 \
                   UNION ALL \
                   SELECT ts, bool_v, long_v, dbl_v, str_v, json_v, src FROM ts_kv_recent_points \
                     WHERE {UNMOVED_POINTS} AND entity_id = ?1 AND key = ?2 AND ts >= ?3 AND ts <= ?4) \
                 GROUP BY ts ORDER BY ts {order} LIMIT ?5"
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


    fn query_entities(&self, query: &EntityQuery) -> Result<Page<EntityRow>> {
        let (built, size) = entity_query::build(&SQLITE_DIALECT, query, MAX_PAGE_SIZE);
        let kind = query.filter.kind();
        let bind = |params: &[Param]| -> Vec<SqlValue> {
            params
                .iter()
                .map(|p| match p {
                    Param::Text(t) => SqlValue::Text(t.clone()),
                    Param::Uuid(id) => uuid_value(*id),
                    Param::Number(n) => SqlValue::Real(*n),
                })
                .collect()
        };
        self.with_conn(|c| {
            // One read transaction, so the total and the page come from the same snapshot.
            let tx = c.transaction()?;
            let total: u64 = tx.query_row(&built.count_sql, params_from_iter(bind(&built.count_params)), |r| r.get(0))?;
            let data = {
                let mut stmt = tx.prepare_cached(&built.page_sql)?;
                stmt.query_map(params_from_iter(bind(&built.page_params)), |r| {
                    Ok(EntityRow {
                        kind,
                        id: r.get(0)?,
                        created_time: r.get(1)?,
                        name: r.get(2)?,
                        entity_type: r.get(3)?,
                        label: r.get(4)?,
                        customer_id: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            tx.commit()?;
            Ok(Page::new(data, total, &PageQuery { page_size: size, page: query.page, ..PageQuery::default() }))
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
            args.push(format!("%{}%", text.replace(['%', '_'], "")).into());
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
        self.with_events(|c| {
            let total: u64 =
                c.query_row(&format!("SELECT COUNT(*) FROM event WHERE {where_clause}"), params_from_iter(args.iter()), |r| {
                    r.get(0)
                })?;
            let mut stmt = c.prepare_cached(&format!(
                "SELECT id, created_time, entity_type, entity_id, event_type, uid, body FROM event \
                 WHERE {where_clause} ORDER BY created_time {order}, rowid {order} LIMIT {size} OFFSET {offset}"
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


    fn delete_events_of(&self, entity_id: Uuid) -> Result<u64> {
        self.with_events(|c| Ok(c.execute("DELETE FROM event WHERE entity_id = ?1", [entity_id])? as u64))
    }

    fn forget_remote_records(&self, integration_id: Uuid, outbox: Uuid, below: u64) -> Result<u64> {
        self.with_conn(|c| {
            let n = c
                .prepare_cached("DELETE FROM remote_record WHERE integration_id = ?1 AND outbox_id = ?2 AND seq < ?3")?
                .execute(params![integration_id, outbox, below as i64])?;
            Ok(n as u64)
        })
    }

    fn uplink_writer(&self) -> Result<Box<dyn UplinkWriter>> {
        let conn = open_main_connection(&self.path)?;
        // The writer never checkpoints inside a commit: copying the WAL into the database there
        // would stall every uplink of the batch. A background connection checkpoints instead
        // (and the writer finishes the job between commits when the WAL grows, see `maintain`).
        // A large page cache keeps the hot B-tree pages of many devices in memory, so commits
        // write pages without reading them back from the file first. No mmap: with this cache
        // it changed nothing measurable (A/B, server and writer bench) but mapped the whole
        // file into the RSS (174 MiB of 470 after 150 s under load).
        conn.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-262144;")?;
        // When the writer rewinds the WAL (see `maintain`), the file is cut back to this size.
        conn.execute_batch(&format!("PRAGMA journal_size_limit={WAL_LIMIT_BYTES};"))?;
        start_checkpointer(&self.path)?;
        // Points a previous run left in ts_kv_recent are moved before the first commit, so
        // ts_kv_latest is complete and the writer's (empty) view of newer values is right.
        let compactor = open_connection(&self.path)?;
        let moved_upto = loop {
            let (upto, more) = move_recent(&compactor)?;
            if !more {
                break upto;
            }
        };
        let moved = Arc::new(AtomicI64::new(moved_upto));
        start_compactor(compactor, Arc::downgrade(&moved))?;
        Ok(Box::new(SqliteUplinkWriter {
            conn,
            history: open_history_reader(&self.path)?,
            path: self.path.clone(),
            cache: WriterCache::default(),
            generation: self.generation.clone(),
            seen_generation: self.generation.load(Ordering::SeqCst),
            last_exchange_cleanup: std::time::Instant::now(),
            exchanges_behind: false,
            moved,
            deleted_upto: 0,
            pruned_upto: 0,
            last_wal_check: std::time::Instant::now(),
            wal_limit: WAL_LIMIT_BYTES,
        }))
    }
}

/// The group-commit writer. Its caches (entity, profile, customer and group ids by name, and the
/// key dictionary) make the common uplink — a known device — cost only the value inserts. The
/// database stays the truth: entries are added only after the transaction that created them
/// commits, and all but the key dictionary are dropped when the REST API deletes something.
pub struct SqliteUplinkWriter {
    conn: Connection,
    /// Reads ts_kv_latest (for updateOnlyKeys) from the history database, which the writer's
    /// own connection does not attach.
    history: Connection,
    /// The database file, whose `-wal` file the durability barrier flushes.
    path: PathBuf,
    cache: WriterCache,
    generation: Arc<AtomicU64>,
    seen_generation: u64,
    /// When remembered exchanges older than their lifetime were last deleted.
    last_exchange_cleanup: std::time::Instant,
    /// The last cleanup deleted a full slice: more expired exchanges are waiting.
    exchanges_behind: bool,
    /// ts_kv_recent rows up to here are in the history database (published by the compactor,
    /// which stops once the writer, the only holder of this `Arc`, is gone).
    moved: Arc<AtomicI64>,
    /// ts_kv_recent rows up to here have been deleted by this writer.
    deleted_upto: i64,
    /// `cache.latest` holds no entry of a row up to here.
    pruned_upto: i64,
    /// When the WAL's size was last looked at, and the size it is brought back to.
    last_wal_check: std::time::Instant,
    wal_limit: u64,
}

/// The main database's WAL is rewound once it is larger than this (see `maintain`).
const WAL_LIMIT_BYTES: u64 = 64 << 20;
/// How often the writer looks at the WAL's size.
const WAL_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the compactor looks at how many points wait to be moved.
const COMPACT_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Points are moved once this many rows wait (a row holds an uplink's points of one entity;
/// two for the seed uplink)... Rarer moves cost less per point (a move writes about one page
/// per series, however many points it carries: moving every 8 s instead of every 2 s took the
/// compactor from 6.7 to 2-3 us of CPU per seed uplink), but reads scan the rows not moved yet,
/// so their number is bounded (300,000 rows scan in about 20 ms).
const COMPACT_ROWS: i64 = 150_000;
/// ...or once any have waited this long.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Most rows moved in one transaction...
const COMPACT_CHUNK: i64 = 250_000;
/// ...and about the most points: a chunk is decoded and sorted in memory (about 64 bytes a
/// point), so a chunk of 50-key uplinks holds fewer rows.
const COMPACT_POINTS: usize = 500_000;
/// Most moved rows the writer deletes between two commits, to keep each pause short: the
/// uplinks queued meanwhile wait for it (10,000 at a time, p99 at 64 in flight was 5.4-5.9 ms
/// against 4.0-4.8 ms with 1,000, in three paired runs; a fourth pair showed the reverse).
const DELETE_SLICE: i64 = 1_000;

/// How long a stored exchange is remembered: CoAP's EXCHANGE_LIFETIME (RFC 7252 §4.8.2).
pub const EXCHANGE_LIFETIME_MS: Millis = 247_000;
/// Most expired exchanges deleted at once. Deleting all of them every 10 s, as before, meant
/// 300,000 rows in one statement at 30,000 uplinks/s: a writer stall of most of a second.
const EXCHANGE_SLICE: usize = 10_000;
/// How often the writer looks for expired exchanges while it is not behind.
const EXCHANGE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Deletes up to [`EXCHANGE_SLICE`] of the oldest exchanges, stopping at the first one not
/// older than `before`: rows are appended in arrival order, so everything before that row has
/// expired (and nothing after it is touched, even if the clock went back). Reads at most a
/// slice of rows, by rowid. Returns how many rows it deleted.
pub(crate) fn expire_exchanges(conn: &Connection, before: Millis) -> Result<usize> {
    let deleted = conn
        .prepare_cached(
            "WITH oldest(first) AS (SELECT min(rowid) FROM coap_exchange_log) \
             DELETE FROM coap_exchange_log WHERE rowid < (SELECT coalesce( \
               (SELECT rowid FROM coap_exchange_log, oldest WHERE rowid < first + ?2 AND ts >= ?1 ORDER BY rowid LIMIT 1), \
               (SELECT first + ?2 FROM oldest)))",
        )?
        .execute(params![before, EXCHANGE_SLICE as i64])?;
    Ok(deleted)
}

/// Checkpoints the WAL from its own thread and connection, ten times a second. PASSIVE never waits
/// for the writer or readers; it copies what it can, and the WAL is reused from its start
/// once a checkpoint has caught up.
fn start_checkpointer(path: &Path) -> Result<()> {
    let conn = open_main_connection(path)?;
    std::thread::Builder::new()
        .name("wal-checkpoint".into())
        .spawn(move || {
            let mut faults = FaultLog::new("checkpointing the write-ahead log");
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                faults.record(conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);").map_err(StorageError::from));
            }
        })
        .map_err(|e| StorageError::Other(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

/// Read-write as far as SQLite's locks go (`query_only` keeps it from writing): a read-only
/// open through `unix-excl` would map the `-shm` file whenever no other connection of the
/// process held the file at that moment.
fn open_history_reader(path: &Path) -> Result<Connection> {
    let history = history_path(path);
    (|| -> Result<Connection> {
        let conn = open_file(&history)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA query_only=1;")?;
        Ok(conn)
    })()
    .map_err(in_file(&history))
}

/// Moves points from main.ts_kv_recent into the history database from its own thread and
/// connection, when [`COMPACT_ROWS`] wait or after [`COMPACT_EVERY`], until the writer is
/// dropped.
fn start_compactor(conn: Connection, moved: std::sync::Weak<AtomicI64>) -> Result<()> {
    std::thread::Builder::new()
        .name("ts-compactor".into())
        .spawn(move || {
            let mut last_move = std::time::Instant::now();
            let mut reads = FaultLog::new("counting time series to move into the history database");
            let mut faults = FaultLog::new("moving time series into the history database");
            loop {
                std::thread::sleep(COMPACT_CHECK);
                let Some(waiting) = reads.record(waiting_points(&conn)).map(|(moved, last)| last - moved) else {
                    continue;
                };
                if waiting < COMPACT_ROWS && (waiting == 0 || last_move.elapsed() < COMPACT_EVERY) {
                    if moved.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
                last_move = std::time::Instant::now();
                loop {
                    let Some(moved) = moved.upgrade() else { return };
                    // On failure points stay in ts_kv_recent, where reads find them; retried later.
                    match faults.record(move_recent(&conn)) {
                        Some((upto, more)) => {
                            moved.store(upto, Ordering::Release);
                            if !more {
                                break;
                            }
                        }
                        None => break,
                    }
                }
            }
        })
        .map_err(|e| StorageError::Other(format!("cannot start the compactor thread: {e}")))?;
    Ok(())
}

/// Moves every point still waiting in ts_kv_recent into the history database, chunk by chunk,
/// as the compactor would (for `coapgate migrate`, which then reads the history alone); `conn`
/// has `hist` attached. Returns how many points were moved.
pub(crate) fn move_all_recent(conn: &Connection) -> Result<u64> {
    let waiting: i64 = conn.query_row(&format!("SELECT count(*) FROM ts_kv_recent_points WHERE {UNMOVED_POINTS}"), [], |r| r.get(0))?;
    while move_recent(conn)?.1 {}
    Ok(waiting as u64)
}

const WAITING: &str = "SELECT moved_upto, coalesce((SELECT max(rowid) FROM ts_kv_recent), 0) FROM hist.compaction";

/// How far points are moved, and the newest point's rowid: a plain read, no lock taken.
fn waiting_points(conn: &Connection) -> Result<(i64, i64)> {
    Ok(conn.query_row(WAITING, [], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Moves up to [`COMPACT_CHUNK`] rows (at most about [`COMPACT_POINTS`] points) of the points
/// not moved yet into hist.ts_kv and folds the newest of each series into hist.ts_kv_latest,
/// and records how far it got — one transaction of the history database, synced before it
/// returns, so the writer may then delete the rows. Returns how far the rows are moved and
/// whether more are waiting. Main is only read: uplink commits never wait for it.
///
/// The chunk is decoded and sorted here, once, by (entity, key, ts, row): each B-tree leaf of
/// ts_kv and ts_kv_latest is then written once per chunk, only the last write of a (series, ts)
/// is inserted, and the last point of a series is its newest. Two `INSERT … SELECT … ORDER BY`
/// through the `recent_points` view did the same with two SQLite sorts that spilled to
/// temporary files (the sorter was the largest part of the compactor in perf): 18,800 -> 11,100
/// instructions per point moved (`tests::compactor_probe`, 2 keys an uplink). Inserting 128
/// points per statement ([`MOVE_ROWS`]) and sorting by entity first then took it from 11,100 to
/// 5,560 at 2 keys and from 12,500 to 7,020 at 50 keys (where half the points go into the
/// middle of ts_kv, each seeking from its root page).
fn move_recent(conn: &Connection) -> Result<(i64, bool)> {
    move_chunk(conn, COMPACT_POINTS)
}

/// [`move_recent`] with a chunk of about `max_points` points.
fn move_chunk(conn: &Connection, max_points: usize) -> Result<(i64, bool)> {
    // Nothing to move (an idle server): no write transaction, so no flush every COMPACT_EVERY.
    let (moved, last) = waiting_points(conn)?;
    if last <= moved {
        return Ok((moved, false));
    }
    let tx = conn.unchecked_transaction()?;
    // A write first, so the history database's write lock is taken (waiting if need be) before
    // any snapshot; main is only read, its snapshot taken after.
    tx.execute("UPDATE hist.compaction SET moved_upto = moved_upto", [])?;
    let (moved, last): (i64, i64) = tx.query_row(WAITING, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut upto = last.min(moved + COMPACT_CHUNK);
    // Every row's points, one after the other; the points borrow from it.
    let mut bytes = Vec::new();
    let mut rows: Vec<(i64, u128, std::ops::Range<usize>)> = Vec::new();
    let mut points = 0;
    {
        let mut select = tx.prepare_cached("SELECT rowid, entity_id, points FROM main.ts_kv_recent WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid")?;
        let mut found = select.query([moved, upto])?;
        while let Some(r) = found.next()? {
            let src: i64 = r.get(0)?;
            let entity = entity_key(r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?)?;
            let encoded = r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
            points += crate::sqlite_points::count(encoded);
            let start = bytes.len();
            bytes.extend_from_slice(encoded);
            rows.push((src, entity, start..bytes.len()));
            if points >= max_points {
                // The rest of the range waits for the next chunk.
                upto = src;
                break;
            }
        }
    }
    // Sorted by (entity, key, ts, src), which is unique: a row never holds two points of one
    // (key, ts). The rows are sorted by entity first, then each entity's points, so the points
    // are compared among a few hundred rather than the whole chunk, and entity ids as integers
    // rather than slices: sorting went from 1,100 to 410 (2 keys) and from 1,360 to 280
    // (50 keys) instructions per point.
    rows.sort_unstable_by_key(|&(src, entity, _)| (entity, src));
    let mut chunk: Vec<Moving> = Vec::with_capacity(points);
    let mut first = 0;
    for (i, &(src, entity, ref encoded)) in rows.iter().enumerate() {
        chunk.extend(crate::sqlite_points::decode(&bytes[encoded.clone()]).map(|p| Moving { entity, key: p.key, ts: p.ts, src, value: p.value }));
        if rows.get(i + 1).is_none_or(|next| next.1 != entity) {
            chunk[first..].sort_unstable_by_key(|p| (p.key, p.ts, p.src));
            first = chunk.len();
        }
    }
    // The points stored (the last write of each (series, ts)), and each series' newest.
    let mut history: Vec<&Moving> = Vec::with_capacity(chunk.len());
    let mut latest: Vec<&Moving> = Vec::new();
    for (i, p) in chunk.iter().enumerate() {
        let next = chunk.get(i + 1);
        let same_series = next.is_some_and(|n| n.entity == p.entity && n.key == p.key);
        // A later write of the same (series, ts) replaces this one: only the last is stored.
        if same_series && next.is_some_and(|n| n.ts == p.ts) {
            continue;
        }
        history.push(p);
        if !same_series {
            latest.push(p);
        }
    }
    upsert_points(&tx, &history, |rows| {
        format!(
            "INSERT INTO hist.ts_kv (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) VALUES {} \
             ON CONFLICT (entity_id, key, ts) DO UPDATE SET bool_v = excluded.bool_v, long_v = excluded.long_v, \
             dbl_v = excluded.dbl_v, str_v = excluded.str_v, json_v = excluded.json_v",
            value_rows(rows, 8)
        )
    })?;
    // The newest point of a series becomes its latest value unless the stored one is newer;
    // among equal timestamps the later write (row) wins, as in ts_kv.
    upsert_points(&tx, &latest, |rows| {
        format!(
            "INSERT INTO hist.ts_kv_latest (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) VALUES {} \
             ON CONFLICT (entity_id, key) DO UPDATE SET ts = excluded.ts, bool_v = excluded.bool_v, \
             long_v = excluded.long_v, dbl_v = excluded.dbl_v, str_v = excluded.str_v, json_v = excluded.json_v \
             WHERE excluded.ts >= hist.ts_kv_latest.ts",
            value_rows(rows, 8)
        )
    })?;
    tx.execute("UPDATE hist.compaction SET moved_upto = ?1", [upto])?;
    tx.commit()?;
    Ok((upto, upto < last))
}

/// Rows per INSERT statement of [`move_chunk`]; the rest of a chunk goes in statements of the
/// following sizes. One statement per point spent most of its instructions starting and ending
/// the statement, binding through `params!`, and seeking from the root page of ts_kv for each
/// point, where a statement of many rows keeps its cursor open (SQLite starts from the cursor's
/// page when the next key follows the last of the table). 512 rows a statement cost more than
/// 128 (6,050 against 5,560 instructions per point at 2 keys): most of it preparing them.
const MOVE_ROWS: [usize; 3] = [128, 16, 1];

/// The `VALUES` list of a multi-row INSERT: `rows` rows of `columns` parameters each,
/// `(?, ?, …), (?, ?, …), …`.
fn value_rows(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// Inserts `points` with the statements `sql` builds for a number of rows, the largest
/// first. `points` holds no (series, ts) twice, so no statement inserts one twice and an
/// upsert only ever meets rows of earlier chunks.
///
/// Bindings stay between executions, so a row's entity and key are bound again only when they
/// change (a blob is copied into memory SQLite allocates, and freed when rebound: about 300
/// instructions), and of the five value columns only the one set and the one set before.
fn upsert_points(tx: &Connection, points: &[&Moving], sql: impl Fn(usize) -> String) -> Result<()> {
    use crate::sqlite_points::PointValue;
    let mut rest = points;
    for rows in MOVE_ROWS {
        let groups = rest.chunks_exact(rows);
        let remainder = groups.remainder();
        if groups.len() > 0 {
            let mut insert = tx.prepare_cached(&sql(rows))?;
            // What each row has bound: its value column (the other four being NULL) and its
            // series; nothing yet, as a cached statement comes with its bindings cleared.
            let mut bound: Vec<Option<usize>> = vec![None; rows];
            let mut series: Vec<Option<(u128, i64)>> = vec![None; rows];
            for group in groups {
                for (row, p) in group.iter().enumerate() {
                    let first = row * 8 + 1;
                    match series[row] {
                        Some((entity, key)) if entity == p.entity => {
                            if key != p.key {
                                insert.raw_bind_parameter(first + 1, p.key)?;
                            }
                        }
                        _ => {
                            insert.raw_bind_parameter(first, &p.entity.to_be_bytes()[..])?;
                            insert.raw_bind_parameter(first + 1, p.key)?;
                        }
                    }
                    series[row] = Some((p.entity, p.key));
                    insert.raw_bind_parameter(first + 2, p.ts)?;
                    // bool_v, long_v, dbl_v, str_v, json_v: columns 0-4 of the value.
                    let values = first + 3;
                    let column = match p.value {
                        PointValue::Bool(b) => insert.raw_bind_parameter(values, b).map(|()| 0)?,
                        PointValue::Long(l) => insert.raw_bind_parameter(values + 1, l).map(|()| 1)?,
                        PointValue::Double(d) => insert.raw_bind_parameter(values + 2, d).map(|()| 2)?,
                        PointValue::Str(s) => insert.raw_bind_parameter(values + 3, s).map(|()| 3)?,
                        PointValue::Json(s) => insert.raw_bind_parameter(values + 4, s).map(|()| 4)?,
                    };
                    if let Some(old) = bound[row]
                        && old != column
                    {
                        insert.raw_bind_parameter(values + old, rusqlite::types::Null)?;
                    }
                    bound[row] = Some(column);
                }
                insert.raw_execute()?;
            }
        }
        rest = remainder;
    }
    Ok(())
}

/// An entity id (16 bytes) as an integer that sorts as the bytes do.
fn entity_key(id: &[u8]) -> Result<u128> {
    let id: [u8; 16] = id.try_into().map_err(|_| StorageError::Other(format!("an entity id of {} bytes in ts_kv_recent", id.len())))?;
    Ok(u128::from_be_bytes(id))
}

/// One point of a chunk being moved; text borrows from the chunk's bytes.
struct Moving<'a> {
    entity: u128,
    key: i64,
    ts: Millis,
    /// The ts_kv_recent row it came from: the later row is the later write.
    src: i64,
    value: crate::sqlite_points::PointValue<'a>,
}

/// The five value columns of a decoded point, exactly one of them set.
fn point_columns<'a>(v: &crate::sqlite_points::PointValue<'a>) -> KvColumns<'a> {
    use crate::sqlite_points::PointValue;
    match *v {
        PointValue::Bool(b) => (Some(b), None, None, None, None),
        PointValue::Long(l) => (None, Some(l), None, None, None),
        PointValue::Double(d) => (None, None, Some(d), None, None),
        PointValue::Str(s) => (None, None, None, Some(s), None),
        PointValue::Json(s) => (None, None, None, None, Some(s)),
    }
}

impl SqliteUplinkWriter {
    /// The concrete writer, for tests that drive compaction directly.
    #[cfg(test)]
    fn open_for_test(store: &SqliteStore) -> SqliteUplinkWriter {
        let conn = open_main_connection(&store.path).unwrap();
        SqliteUplinkWriter {
            conn,
            history: open_history_reader(&store.path).unwrap(),
            path: store.path.clone(),
            cache: WriterCache::default(),
            generation: store.generation.clone(),
            seen_generation: store.generation.load(Ordering::SeqCst),
            last_exchange_cleanup: std::time::Instant::now(),
            exchanges_behind: false,
            moved: Arc::new(AtomicI64::new(0)),
            deleted_upto: 0,
            pruned_upto: 0,
            last_wal_check: std::time::Instant::now(),
            wal_limit: WAL_LIMIT_BYTES,
        }
    }
}

/// Name → id maps, one per device/asset kind.
#[derive(Default)]
struct ByKind {
    device: HashMap<String, Uuid>,
    asset: HashMap<String, Uuid>,
}

impl ByKind {
    fn get(&self, kind: EntityKind, name: &str) -> Option<Uuid> {
        self.map(kind).get(name).copied()
    }

    fn map(&self, kind: EntityKind) -> &HashMap<String, Uuid> {
        if kind == EntityKind::Asset { &self.asset } else { &self.device }
    }

    fn insert(&mut self, kind: EntityKind, name: &str, id: Uuid) {
        let map = if kind == EntityKind::Asset { &mut self.asset } else { &mut self.device };
        map.insert(name.to_string(), id);
    }

    fn extend(&mut self, other: ByKind) {
        self.device.extend(other.device);
        self.asset.extend(other.asset);
    }

    fn clear(&mut self) {
        self.device.clear();
        self.asset.clear();
    }
}

/// The writer's caches. The same shape holds the committed entries and, per transaction, the
/// pending ones, which are merged in only after `COMMIT`.
#[derive(Default)]
struct WriterCache {
    entities: ByKind,
    profiles: ByKind,
    customers: HashMap<String, Uuid>,
    groups: HashMap<(EntityKind, Owner, String), Uuid>,
    keys: HashMap<String, i64>,
    /// The newest value written per (entity, key) whose row is not yet in the history database.
    /// Touched for every point an uplink writes: foldhash rather than SipHash (the keys are
    /// random entity ids and dictionary ids, nothing a device chooses; SipHash was a third of
    /// the writer's instructions at 50 keys).
    latest: HashMap<(Uuid, i64), Written, foldhash::fast::RandomState>,
}

/// A time-series value as the writer wrote it to ts_kv_recent.
struct Written {
    ts: Millis,
    value: KvValue,
    rowid: i64,
}

/// `Written::rowid` of a point whose row is not inserted yet (set by `RecentRows::flush`).
const ROW_NOT_WRITTEN: i64 = -1;

/// Builds an entity's `ts_kv_recent` row: its points, encoded together, inserted by `flush`.
/// One per batch, so the insert is prepared and the buffers allocated once.
pub(crate) struct RecentRows<'conn> {
    conn: &'conn Connection,
    insert: rusqlite::CachedStatement<'conn>,
    points: crate::sqlite_points::PointsEncoder,
    /// The timestamps of the groups the row holds: a group of a timestamp already there starts
    /// a new row, so a row never holds one series twice at one timestamp (a group's values come
    /// from one JSON object, so within a group a key appears once).
    times: std::collections::HashSet<Millis>,
    /// Keys whose `Written` entry waits for this row's rowid.
    touched: Vec<i64>,
}

impl<'conn> RecentRows<'conn> {
    pub(crate) fn new(conn: &'conn Connection) -> Result<RecentRows<'conn>> {
        Ok(RecentRows {
            conn,
            insert: conn.prepare_cached("INSERT INTO ts_kv_recent (entity_id, points) VALUES (?1, ?2)")?,
            points: crate::sqlite_points::PointsEncoder::new(),
            times: std::collections::HashSet::new(),
            touched: Vec::new(),
        })
    }

    /// Starts a group of points of one timestamp, in a new row if the current one has that
    /// timestamp already.
    fn begin_group(&mut self, entity_id: Uuid, ts: Millis, pending: &mut WriterCache) -> Result<()> {
        if !self.times.insert(ts) {
            self.flush(entity_id, pending)?;
            self.times.insert(ts);
        }
        Ok(())
    }

    /// A point of the current group.
    fn push(&mut self, key_id: i64, ts: Millis, value: &KvValue) {
        self.points.push(key_id, ts, value);
    }

    /// Inserts the row, if it holds any point, and gives its rowid to the writer's entries.
    fn flush(&mut self, entity_id: Uuid, pending: &mut WriterCache) -> Result<()> {
        if !self.points.is_empty() {
            self.insert.execute(params![entity_id, self.points.bytes()])?;
            let rowid = self.conn.last_insert_rowid();
            for key_id in self.touched.drain(..) {
                if let Some(w) = pending.latest.get_mut(&(entity_id, key_id))
                    && w.rowid == ROW_NOT_WRITTEN
                {
                    w.rowid = rowid;
                }
            }
        }
        self.points.clear();
        self.times.clear();
        self.touched.clear();
        Ok(())
    }
}

impl WriterCache {
    fn extend(&mut self, pending: WriterCache) {
        self.entities.extend(pending.entities);
        self.profiles.extend(pending.profiles);
        self.customers.extend(pending.customers);
        self.groups.extend(pending.groups);
        self.keys.extend(pending.keys);
        // Pending entries were only taken when at least as new as the committed ones.
        self.latest.extend(pending.latest);
    }

    /// Forgets everything a REST deletion may have invalidated; key ids never change.
    fn clear_entities(&mut self) {
        self.entities.clear();
        self.profiles.clear();
        self.customers.clear();
        self.groups.clear();
        self.latest.clear();
    }
}

/// The table of devices or assets, and of their profiles.
fn entity_tables(kind: EntityKind) -> (&'static str, &'static str) {
    if kind == EntityKind::Asset { ("asset", "asset_profile") } else { ("device", "device_profile") }
}

impl SqliteUplinkWriter {
    fn lookup_entity(&self, pending: &WriterCache, kind: EntityKind, name: &str) -> Result<Option<Uuid>> {
        if let Some(id) = self.cache.entities.get(kind, name).or_else(|| pending.entities.get(kind, name)) {
            return Ok(Some(id));
        }
        let (table, _) = entity_tables(kind);
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT id FROM {table} WHERE name = ?1"))?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    fn profile_id(&self, pending: &mut WriterCache, kind: EntityKind, name: &str) -> Result<Uuid> {
        if let Some(id) = self.cache.profiles.get(kind, name).or_else(|| pending.profiles.get(kind, name)) {
            return Ok(id);
        }
        let (_, table) = entity_tables(kind);
        let existing: Option<Uuid> = self
            .conn
            .prepare_cached(&format!("SELECT id FROM {table} WHERE name = ?1"))?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4();
                self.conn
                    .prepare_cached(&format!("INSERT INTO {table} (id, created_time, name, is_default) VALUES (?1, ?2, ?3, 0)"))?
                    .execute(params![id, now_millis(), name])?;
                id
            }
        };
        pending.profiles.insert(kind, name, id);
        Ok(id)
    }

    /// The customer with this title, created if missing (ThingsBoard's `getOrCreateCustomer`).
    fn customer_id(&self, pending: &mut WriterCache, title: &str) -> Result<Uuid> {
        if let Some(id) = self.cache.customers.get(title).or_else(|| pending.customers.get(title)) {
            return Ok(*id);
        }
        let existing: Option<Uuid> = self
            .conn
            .prepare_cached("SELECT id FROM customer WHERE title = ?1")?
            .query_row([title], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4();
                self.conn
                    .prepare_cached("INSERT INTO customer (id, created_time, title) VALUES (?1, ?2, ?3)")?
                    .execute(params![id, now_millis(), title])?;
                id
            }
        };
        pending.customers.insert(title.to_string(), id);
        Ok(id)
    }

    /// The group of this type, owner and name, created if missing.
    fn group_id(&self, pending: &mut WriterCache, kind: EntityKind, owner: Owner, name: &str) -> Result<Uuid> {
        let key = (kind, owner, name.to_string());
        if let Some(id) = self.cache.groups.get(&key).or_else(|| pending.groups.get(&key)) {
            return Ok(*id);
        }
        let existing: Option<Uuid> = self
            .conn
            .prepare_cached("SELECT id FROM entity_group WHERE type = ?1 AND owner_id = ?2 AND name = ?3")?
            .query_row(params![kind.as_str(), owner_column(owner), name], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                let id = Uuid::new_v4();
                self.conn
                    .prepare_cached(
                        "INSERT INTO entity_group (id, created_time, name, type, owner_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![id, now_millis(), name, kind.as_str(), owner_column(owner)])?;
                id
            }
        };
        pending.groups.insert(key, id);
        Ok(id)
    }

    fn key_id(&self, pending: &mut WriterCache, key: &str) -> Result<i64> {
        if let Some(id) = self.cache.keys.get(key).or_else(|| pending.keys.get(key)) {
            return Ok(*id);
        }
        self.conn.prepare_cached("INSERT OR IGNORE INTO key_dictionary (key) VALUES (?1)")?.execute([key])?;
        let id: i64 =
            self.conn.prepare_cached("SELECT key_id FROM key_dictionary WHERE key = ?1")?.query_row([key], |r| r.get(0))?;
        pending.keys.insert(key.to_string(), id);
        Ok(id)
    }

    /// Creates a device or asset as ThingsBoard's integration does: profile, customer and group
    /// (each created if missing), then the entity, then its group membership.
    fn create_entity(&self, pending: &mut WriterCache, record: &UplinkRecord, update: &EntityUpdate) -> Result<Uuid> {
        let customer = match update.customer_name.as_deref() {
            Some(title) => Some(self.customer_id(pending, title)?),
            None => None,
        };
        let profile = self.profile_id(pending, update.kind, &update.entity_type)?;
        let (table, profile_table) = entity_tables(update.kind);
        let id = Uuid::new_v4();
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {table} (id, created_time, name, type, {profile_table}_id, label, customer_id, integration_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                id,
                now_millis(),
                update.name,
                update.entity_type,
                profile,
                update.label,
                customer,
                record.integration_id
            ])?;
        pending.entities.insert(update.kind, &update.name, id);
        if let Some(group) = update.group_name.as_deref() {
            let group = self.group_id(pending, update.kind, Owner::of_customer(customer), group)?;
            self.conn
                .prepare_cached("INSERT OR IGNORE INTO entity_group_member (group_id, entity_id) VALUES (?1, ?2)")?
                .execute(params![group, id])?;
        }
        Ok(id)
    }

    /// The latest stored time-series value of a key, as this transaction sees it: the newer of
    /// what compaction folded into ts_kv_latest and what this writer wrote since.
    fn latest_value(&self, pending: &WriterCache, entity: Uuid, key: i64) -> Result<Option<KvValue>> {
        let written = pending.latest.get(&(entity, key)).or_else(|| self.cache.latest.get(&(entity, key)));
        let folded: Option<(Millis, KvValue)> = self
            .history
            .prepare_cached("SELECT ts, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_latest WHERE entity_id = ?1 AND key = ?2")?
            .query_row(params![entity, key], |r| Ok((r.get(0)?, kv_from_row(r, 1)?)))
            .optional()?;
        Ok(match (written, folded) {
            (Some(w), Some((folded_ts, _))) if w.ts >= folded_ts => Some(w.value.clone()),
            (Some(_), Some((_, value))) | (None, Some((_, value))) => Some(value),
            (Some(w), None) => Some(w.value.clone()),
            (None, None) => None,
        })
    }

    /// The stored client-side attribute value of a key, as this transaction sees it.
    fn attribute_value(&self, entity: Uuid, key: i64) -> Result<Option<KvValue>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT bool_v, long_v, dbl_v, str_v, json_v FROM attribute_kv \
                 WHERE entity_id = ?1 AND scope = 'CLIENT_SCOPE' AND key = ?2",
            )?
            .query_row(params![entity, key], |r| kv_from_row(r, 0))
            .optional()?)
    }

    /// Appends the exchange in the uplink's transaction; reading takes the newest per
    /// (peer, Message ID), so a reused Message ID needs no update in place.
    /// [`Self::write_record`], once per remote record: a record whose (integration, outbox,
    /// seq) is committed already is a resend and writes nothing; a stored one commits its place
    /// with its data (same transaction), so the next resend finds it. A rejected record leaves
    /// no place: sent again, it is judged again.
    fn write_remote_record(
        &self,
        pending: &mut WriterCache,
        record: &UplinkRecord,
        recent: &mut RecentRows<'_>,
    ) -> Result<std::result::Result<UplinkOutcome, UplinkRejection>> {
        let Some(remote) = record.remote else {
            return self.write_record(pending, record, recent);
        };
        let key = params![record.integration_id, remote.outbox, remote.seq as i64];
        let seen: bool = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM remote_record WHERE integration_id = ?1 AND outbox_id = ?2 AND seq = ?3)")?
            .query_row(key, |r| r.get(0))?;
        if seen {
            return Ok(Ok(UplinkOutcome { duplicate: true, ..UplinkOutcome::default() }));
        }
        let written = self.write_record(pending, record, recent)?;
        if written.is_ok() {
            self.conn.prepare_cached("INSERT INTO remote_record (integration_id, outbox_id, seq) VALUES (?1, ?2, ?3)")?.execute(key)?;
        }
        Ok(written)
    }

    fn write_record(
        &self,
        pending: &mut WriterCache,
        record: &UplinkRecord,
        recent: &mut RecentRows<'_>,
    ) -> Result<std::result::Result<UplinkOutcome, UplinkRejection>> {
        // Resolve first, write second: a rejected record must leave nothing behind.
        let mut resolved = Vec::with_capacity(record.entities.len());
        for update in &record.entities {
            let id = self.lookup_entity(pending, update.kind, &update.name)?;
            if id.is_none() && !record.allow_create_devices {
                return Ok(Err(UplinkRejection::creating_forbidden(update.kind)));
            }
            resolved.push(id);
        }
        let only_if_changed = |key: &str| record.update_only_keys.iter().any(|k| k == key);
        let mut outcome = UplinkOutcome::default();
        for (update, id) in record.entities.iter().zip(resolved) {
            // The same new name twice in one output: the first occurrence created it.
            let id = match id.or_else(|| pending.entities.get(update.kind, &update.name)) {
                Some(id) => id,
                None => {
                    let id = self.create_entity(pending, record, update)?;
                    outcome.created.push((update.kind, id));
                    id
                }
            };
            outcome.entities.push((update.kind, id));
            // All of the entity's points in one row (see `sqlite_points`).
            for (ts, values) in &update.telemetry {
                recent.begin_group(id, *ts, pending)?;
                for (key, value) in values {
                    let key_id = self.key_id(pending, key)?;
                    if only_if_changed(key) && self.latest_value(pending, id, key_id)?.as_ref() == Some(value) {
                        outcome.unchanged_skipped += 1;
                        continue;
                    }
                    recent.push(key_id, *ts, value);
                    // ts_kv_latest is brought up to date by compaction; until then this is the
                    // writer's own view of the newest value (for updateOnlyKeys).
                    let written = || Written { ts: *ts, value: value.clone(), rowid: ROW_NOT_WRITTEN };
                    match pending.latest.entry((id, key_id)) {
                        Entry::Occupied(mut newest) => {
                            if *ts >= newest.get().ts {
                                newest.insert(written());
                                recent.touched.push(key_id);
                            }
                        }
                        Entry::Vacant(slot) => {
                            if self.cache.latest.get(&(id, key_id)).is_none_or(|newest| *ts >= newest.ts) {
                                slot.insert(written());
                                recent.touched.push(key_id);
                            }
                        }
                    }
                }
            }
            recent.flush(id, pending)?;
            for (key, value) in &update.attributes {
                let key_id = self.key_id(pending, key)?;
                if only_if_changed(key) && self.attribute_value(id, key_id)?.as_ref() == Some(value) {
                    outcome.unchanged_skipped += 1;
                    continue;
                }
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

/// Flushes the writer's WAL file: everything SQLite wrote to it, from any connection, so every
/// transaction committed before the call. The WAL is one file for the life of the writer's
/// connection (SQLite rewrites it from the start after a checkpoint, never replaces it).
struct WalBarrier {
    wal: File,
}

impl DurabilityBarrier for WalBarrier {
    fn sync(&mut self) -> Result<()> {
        self.wal.sync_data().map_err(|e| StorageError::Other(format!("flushing the write-ahead log failed: {e}")))
    }
}

impl UplinkWriter for SqliteUplinkWriter {
    fn split_durability(&mut self) -> Result<Option<Box<dyn DurabilityBarrier>>> {
        // A commit then only writes its WAL frames; WAL mode keeps a crash consistent (recovery
        // replays a prefix of the commits), and the barrier's fdatasync makes that prefix reach
        // at least every commit that returned before it. The checkpointer's own connection stays
        // FULL, so the database file is synced before the WAL is reused.
        self.conn.execute_batch("PRAGMA synchronous=NORMAL;")?;
        let wal_path = wal_path(&self.path);
        let wal = File::open(&wal_path)
            .map_err(|e| StorageError::Other(format!("opening {} failed: {e}", wal_path.display())))?;
        Ok(Some(Box::new(WalBarrier { wal })))
    }

    fn maintain(&mut self) -> Result<bool> {
        // Rows the compactor moved are deleted a slice at a time; one row always stays, so
        // rowids keep growing (SQLite reuses them from 1 in an empty table) and rows moved stay
        // told apart from rows written later.
        let moved = self.moved.load(Ordering::Acquire);
        if moved > self.deleted_upto {
            let upto = moved.min(self.deleted_upto + DELETE_SLICE);
            self.conn
                .prepare_cached("DELETE FROM ts_kv_recent WHERE rowid <= ?1 AND rowid < (SELECT max(rowid) FROM ts_kv_recent)")?
                .execute([upto])?;
            self.deleted_upto = upto;
        }
        // Newest values whose rows are in the history now are read from ts_kv_latest there:
        // dropped once per move, not per slice (the map has an entry per series).
        if moved > self.pruned_upto {
            self.cache.latest.retain(|_, w| w.rowid > moved);
            self.pruned_upto = moved;
        }
        if self.last_wal_check.elapsed() >= WAL_CHECK {
            self.last_wal_check = std::time::Instant::now();
            let size = std::fs::metadata(wal_path(&self.path)).map(|m| m.len()).unwrap_or(0);
            if size > self.wal_limit {
                // SQLite rewinds the WAL when a write transaction starts while every frame is
                // already copied into the database. The checkpointer copies frames as they
                // come, but with a commit every half millisecond the WAL is never all copied at
                // the moment one starts, so it grew without end (2 GB after 5 minutes at 30,000
                // uplinks/s). Copying the rest here, between two of the writer's own commits,
                // lets the next commit rewind it (journal_size_limit then cuts the file); a
                // reader still on an older snapshot can delay that to a later check.
                self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);")?;
            }
        }
        if self.exchanges_behind || self.last_exchange_cleanup.elapsed() >= EXCHANGE_CHECK {
            self.last_exchange_cleanup = std::time::Instant::now();
            let deleted = expire_exchanges(&self.conn, crate::now_millis() - EXCHANGE_LIFETIME_MS)?;
            self.exchanges_behind = deleted >= EXCHANGE_SLICE;
        }
        Ok(self.exchanges_behind || self.moved.load(Ordering::Acquire) > self.deleted_upto)
    }

    fn commit(
        &mut self,
        batch: &[UplinkRecord],
    ) -> Result<Vec<std::result::Result<UplinkOutcome, UplinkRejection>>> {
        let generation = self.generation.load(Ordering::SeqCst);
        if generation != self.seen_generation {
            self.cache.clear_entities();
            self.seen_generation = generation;
        }
        let mut pending = WriterCache::default();
        // The two statements every uplink runs, looked up once per batch rather than per row
        // (rusqlite's statement cache hashes the SQL text on every lookup).
        let mut recent = RecentRows::new(&self.conn)?;
        // Prepared once (cached), not parsed per commit: `execute_batch` compiles its text every
        // time, about 9,000 instructions each for BEGIN and COMMIT.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let mut results = Vec::with_capacity(batch.len());
        let mut exchanges = Vec::with_capacity(batch.len());
        for record in batch {
            match self.write_remote_record(&mut pending, record, &mut recent) {
                Ok(r) => {
                    // Only a stored uplink's exchange: its answer acknowledges stored data.
                    if r.is_ok() {
                        exchanges.extend(&record.exchange);
                    }
                    results.push(r);
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        drop(recent);
        if let Err(e) = remember_exchanges(&self.conn, &exchanges) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        if let Err(e) = self.conn.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([])) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e.into());
        }
        self.cache.extend(pending);
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
        let mut device = EntityUpdate::device(name, "thermo");
        device.telemetry = vec![(ts, values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())];
        device.attributes = vec![("fw".to_string(), KvValue::Str("1.0".into()))];
        record_of(allow, ts, vec![device])
    }

    fn record_of(allow: bool, ts: i64, entities: Vec<EntityUpdate>) -> UplinkRecord {
        UplinkRecord {
            integration_id: Uuid::nil(),
            allow_create_devices: allow,
            received_ts: ts,
            update_only_keys: Arc::from(Vec::new()),
            entities,
            exchange: None,
            remote: None,
            converter: None,
        }
    }

    /// What the compactor thread does, now: move every waiting point, then let the writer
    /// delete the moved rows.
    fn compact(store: &SqliteStore, raw: &mut SqliteUplinkWriter) {
        let conn = open_connection(&store.path).unwrap();
        loop {
            let (upto, more) = move_recent(&conn).unwrap();
            raw.moved.store(upto, Ordering::Release);
            if !more {
                break;
            }
        }
        while raw.deleted_upto < raw.moved.load(Ordering::Acquire) {
            raw.maintain().unwrap();
        }
    }

    #[test]
    fn a_row_per_point_from_an_older_version_is_converted_at_open() {
        let (dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        raw.commit(&[record("A", true, 1, vec![("t", KvValue::Long(1))])]).unwrap();
        compact(&store, &mut raw);
        let id = store.device_by_name("A").unwrap().unwrap().id;
        let path = store.path.clone();
        drop((raw, store));
        // The older layout: one row per point, rowids above what was moved (the kept last row).
        let conn = open_connection(&path).unwrap();
        let moved: i64 = conn.query_row("SELECT moved_upto FROM hist.compaction", [], |r| r.get(0)).unwrap();
        let t: i64 = conn.query_row("SELECT key_id FROM key_dictionary WHERE key = 't'", [], |r| r.get(0)).unwrap();
        conn.execute_batch(
            "DROP VIEW temp.ts_kv_recent_points; DROP TABLE ts_kv_recent; CREATE TABLE ts_kv_recent (entity_id BLOB NOT NULL, key INTEGER NOT NULL, ts INTEGER NOT NULL, \
             bool_v INTEGER, long_v INTEGER, dbl_v REAL, str_v TEXT, json_v TEXT);",
        )
        .unwrap();
        let insert = "INSERT INTO ts_kv_recent (rowid, entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        conn.execute(insert, params![moved, id, t, 1, None::<bool>, 1, None::<f64>, None::<String>, None::<String>]).unwrap();
        conn.execute(insert, params![moved + 1, id, t, 2, None::<bool>, None::<i64>, 2.5, None::<String>, None::<String>]).unwrap();
        conn.execute(insert, params![moved + 2, id, t, 2, None::<bool>, None::<i64>, None::<f64>, "later".to_string(), None::<String>])
            .unwrap();
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        let history = || {
            store
                .timeseries_history(id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 10, limit: 100, descending: false })
                .unwrap()
        };
        let expected = vec![TsValue { ts: 1, value: KvValue::Long(1) }, TsValue { ts: 2, value: KvValue::Str("later".into()) }];
        assert_eq!(history()[0].1, expected, "the unmoved rows read as before, the later write winning");
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        compact(&store, &mut raw);
        assert_eq!(history()[0].1, expected, "and once moved");
        assert_eq!(store.latest_timeseries(id, None).unwrap()[0].1, TsValue { ts: 2, value: KvValue::Str("later".into()) });
        drop(dir);
    }

    #[test]
    fn a_timestamp_twice_in_one_uplink_keeps_the_later_value() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        let mut device = EntityUpdate::device("A", "thermo");
        device.telemetry = vec![
            (7, vec![("t".to_string(), KvValue::Long(1)), ("h".to_string(), KvValue::Long(10))]),
            (8, vec![("t".to_string(), KvValue::Long(2))]),
            (7, vec![("t".to_string(), KvValue::Long(3))]),
        ];
        raw.commit(&[record_of(true, 7, vec![device])]).unwrap();
        let id = store.device_by_name("A").unwrap().unwrap().id;
        let history = || {
            store
                .timeseries_history(id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 10, limit: 100, descending: false })
                .unwrap()
        };
        let expected = vec![TsValue { ts: 7, value: KvValue::Long(3) }, TsValue { ts: 8, value: KvValue::Long(2) }];
        assert_eq!(history()[0].1, expected);
        assert_eq!(store.latest_timeseries(id, Some(&["t".to_string()])).unwrap()[0].1, TsValue { ts: 8, value: KvValue::Long(2) });
        compact(&store, &mut raw);
        assert_eq!(history()[0].1, expected, "the same once moved");
        assert_eq!(store.latest_timeseries(id, Some(&["t".to_string()])).unwrap()[0].1, TsValue { ts: 8, value: KvValue::Long(2) });
    }

    /// Not a check: a fixed amount of compaction work for callgrind, which counts the
    /// instructions of `move_recent` alone (see BENCHMARKS.md, "The compactor per point"):
    /// 1,000 devices, 20 uplinks each, `COMPACTOR_PROBE_KEYS` numeric keys an uplink (2).
    #[test]
    #[ignore = "a cost probe, run under callgrind"]
    fn compactor_probe() {
        let keys: usize = std::env::var("COMPACTOR_PROBE_KEYS").ok().and_then(|k| k.parse().ok()).unwrap_or(2);
        let names: Vec<String> = (0..keys).map(|k| format!("key{k}")).collect();
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        for round in 0..20i64 {
            let batch: Vec<UplinkRecord> = (0..1000)
                .map(|d| {
                    let values = names.iter().enumerate().map(|(k, n)| (n.as_str(), KvValue::Double(round as f64 + k as f64 / 10.0))).collect();
                    record(&format!("D{d}"), true, 1_700_000_000_000 + round * 1000, values)
                })
                .collect();
            raw.commit(&batch).unwrap();
        }
        let conn = open_connection(&store.path).unwrap();
        while move_recent(&conn).unwrap().1 {}
        let moved: i64 = conn.query_row("SELECT count(*) FROM hist.ts_kv", [], |r| r.get(0)).unwrap();
        assert_eq!(moved, 20_000 * keys as i64);
    }

    #[test]
    fn a_chunk_cut_by_its_point_count_moves_the_rest_next_time() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        // Rows 1-3 hold two points each; row 4 rewrites (t, 3), row 5 an older value of h.
        for ts in 1..=3 {
            raw.commit(&[record("A", true, ts, vec![("t", KvValue::Long(ts)), ("h", KvValue::Double(ts as f64 / 2.0))])]).unwrap();
        }
        raw.commit(&[record("A", true, 3, vec![("t", KvValue::Str("again".into()))])]).unwrap();
        raw.commit(&[record("A", true, 1, vec![("h", KvValue::Bool(true))])]).unwrap();
        let id = store.device_by_name("A").unwrap().unwrap().id;
        let conn = open_connection(&store.path).unwrap();
        let moved = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM hist.ts_kv", [], |r| r.get(0)).unwrap()
        };
        // Three points asked for: the chunk ends with the row that reached them (row 2).
        let (upto, more) = move_chunk(&conn, 3).unwrap();
        assert_eq!((upto, more), (2, true));
        assert_eq!(moved(&conn), 4, "rows 1 and 2, not row 3");
        raw.moved.store(upto, Ordering::Release);
        let latest = || store.latest_timeseries(id, None).unwrap();
        let expected = vec![
            ("h".to_string(), TsValue { ts: 3, value: KvValue::Double(1.5) }),
            ("t".to_string(), TsValue { ts: 3, value: KvValue::Str("again".into()) }),
        ];
        assert_eq!(latest(), expected, "half moved: the newest values come from both places");
        assert_eq!(move_chunk(&conn, 3).unwrap(), (4, true), "rows 3 and 4: three points again");
        assert_eq!(move_chunk(&conn, 3).unwrap(), (5, false));
        raw.moved.store(5, Ordering::Release);
        while raw.deleted_upto < 5 {
            raw.maintain().unwrap();
        }
        assert_eq!(moved(&conn), 6, "(t, 3) stored once, with the later value; (h, 1) replaced");
        assert_eq!(latest(), expected);
        let h = store
            .timeseries_history(id, &HistoryQuery { keys: vec!["h".into()], start_ts: 0, end_ts: 10, limit: 100, descending: false })
            .unwrap();
        assert_eq!(h[0].1[0], TsValue { ts: 1, value: KvValue::Bool(true) });
    }

    /// Enough points for every statement size of `upsert_points` (128, 16 and 1 rows), their
    /// value columns changing from row to row, partly rewritten after a first move.
    #[test]
    fn many_points_of_mixed_types_read_the_same_once_moved() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        let value = |i: i64| match i % 5 {
            0 => KvValue::Long(i),
            1 => KvValue::Double(i as f64 / 4.0),
            2 => KvValue::Str(format!("s{i}")),
            3 => KvValue::Bool(i % 2 == 0),
            _ => KvValue::Json(format!("[{i}]")),
        };
        let keys = ["a", "b", "c"];
        let names = ["A", "B"];
        // 2 devices x 3 keys x 60 timestamps: 360 points, 2 x 128 + 6 x 16 + 8 x 1.
        let write = |raw: &mut SqliteUplinkWriter, shift: i64, times: std::ops::Range<i64>| {
            for ts in times {
                let batch: Vec<UplinkRecord> = names
                    .iter()
                    .enumerate()
                    .map(|(d, name)| record(name, true, ts, keys.iter().enumerate().map(|(k, key)| (*key, value(ts * 7 + (k + d) as i64 + shift))).collect()))
                    .collect();
                raw.commit(&batch).unwrap();
            }
        };
        write(&mut raw, 0, 0..60);
        let ids: Vec<Uuid> = names.iter().map(|n| store.device_by_name(n).unwrap().unwrap().id).collect();
        let read = || {
            ids.iter()
                .map(|id| {
                    let query = HistoryQuery { keys: keys.iter().map(|k| k.to_string()).collect(), start_ts: 0, end_ts: 1000, limit: 1000, descending: false };
                    (store.timeseries_history(*id, &query).unwrap(), store.latest_timeseries(*id, None).unwrap())
                })
                .collect::<Vec<_>>()
        };
        let before = read();
        assert_eq!(before[0].0[0].1.len(), 60);
        compact(&store, &mut raw);
        assert_eq!(read(), before, "the same once moved");
        // Rewrites of moved timestamps, with other types, and newer points.
        write(&mut raw, 1, 30..75);
        let rewritten = read();
        assert_ne!(rewritten, before);
        assert_eq!(rewritten[1].0[2].1.len(), 75);
        compact(&store, &mut raw);
        assert_eq!(read(), rewritten, "the rewrites won once moved");
    }

    #[test]
    fn recent_points_read_the_same_before_and_after_compaction() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        for ts in 1..=5 {
            raw.commit(&[record("A", true, ts, vec![("t", KvValue::Long(ts))])]).unwrap();
        }
        let id = store.device_by_name("A").unwrap().unwrap().id;
        let read = || {
            store
                .timeseries_history(id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 10, limit: 100, descending: false })
                .unwrap()
        };
        let latest = || store.latest_timeseries(id, None).unwrap();
        let before = read();
        assert_eq!(before[0].1.len(), 5);
        assert_eq!(latest(), vec![("t".to_string(), TsValue { ts: 5, value: KvValue::Long(5) })]);
        compact(&store, &mut raw);
        assert_eq!(read(), before, "same points once moved into the history database");
        assert_eq!(latest(), vec![("t".to_string(), TsValue { ts: 5, value: KvValue::Long(5) })]);
        // A rewrite of an already moved timestamp wins over the old value, before and after its
        // own move; so does a rewrite of the latest timestamp, for the latest value.
        raw.commit(&[record("A", true, 3, vec![("t", KvValue::Long(33))])]).unwrap();
        raw.commit(&[record("A", true, 5, vec![("t", KvValue::Long(55))])]).unwrap();
        let rewritten = read();
        assert_eq!(rewritten[0].1[2], TsValue { ts: 3, value: KvValue::Long(33) });
        assert_eq!(rewritten[0].1.len(), 5);
        assert_eq!(latest(), vec![("t".to_string(), TsValue { ts: 5, value: KvValue::Long(55) })]);
        compact(&store, &mut raw);
        assert_eq!(read(), rewritten);
        assert_eq!(latest(), vec![("t".to_string(), TsValue { ts: 5, value: KvValue::Long(55) })]);
        // An older point arriving late never replaces the latest value.
        raw.commit(&[record("A", true, 2, vec![("t", KvValue::Long(22))])]).unwrap();
        compact(&store, &mut raw);
        assert_eq!(latest(), vec![("t".to_string(), TsValue { ts: 5, value: KvValue::Long(55) })]);
        let conn = open_connection(&store.path).unwrap();
        let waiting: i64 = conn.query_row("SELECT count(*) FROM ts_kv_recent", [], |r| r.get(0)).unwrap();
        assert_eq!(waiting, 1, "moved rows are deleted but the newest, which keeps rowids growing");
        // Deleting the device removes points from every table.
        raw.commit(&[record("A", true, 9, vec![("t", KvValue::Long(9))])]).unwrap();
        store.delete_device(id).unwrap();
        let left: i64 = conn
            .query_row("SELECT (SELECT count(*) FROM hist.ts_kv) + (SELECT count(*) FROM ts_kv_recent) + (SELECT count(*) FROM hist.ts_kv_latest)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    /// A batch's exchanges go in with statements of several rows: every size (64, 16, 4, 1)
    /// used, arrival order kept (the log's rowid order is what restart and look-ups read).
    #[test]
    fn a_batchs_exchanges_are_appended_in_arrival_order() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let batch: Vec<UplinkRecord> = (0..87u16)
            .map(|mid| {
                let mut r = record(&format!("D{}", mid % 5), true, 1, vec![("t", KvValue::Long(i64::from(mid)))]);
                r.exchange = Some(Exchange { peer: format!("127.0.0.1:{}", 5000 + mid % 3), message_id: mid, ts: 1000, response: vec![0x60, mid as u8] });
                r
            })
            .collect();
        writer.commit(&batch).unwrap();
        let stored = store.recent_exchanges(0, 1000).unwrap();
        assert_eq!(stored, batch.iter().map(|r| r.exchange.clone().unwrap()).collect::<Vec<_>>());
        let found = store.find_exchange("127.0.0.1:5001", 85, 0).unwrap().unwrap();
        assert_eq!(found.response, vec![0x60, 85]);
    }

    #[test]
    fn exchanges_are_stored_with_their_uplink_only() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let exchange = |mid: u16| Exchange { peer: "127.0.0.1:5000".into(), message_id: mid, ts: 1000 + i64::from(mid), response: vec![0x60, 0x41, 0, mid as u8] };
        let mut stored = record("A", true, 1, vec![("t", KvValue::Long(1))]);
        stored.exchange = Some(exchange(1));
        let mut rejected = record("B", false, 1, vec![("t", KvValue::Long(1))]);
        rejected.exchange = Some(exchange(2));
        let results = writer.commit(&[stored, rejected]).unwrap();
        assert!(results[0].is_ok() && results[1].is_err());
        assert_eq!(store.recent_exchanges(0, 10).unwrap(), vec![exchange(1)]);
        assert!(store.recent_exchanges(1002, 10).unwrap().is_empty(), "older than `since`");
        // The newest of a reused (peer, message id) wins; the limit keeps the newest rows.
        let mut again = record("A", true, 2, vec![("t", KvValue::Long(2))]);
        again.exchange = Some(Exchange { ts: 1500, response: vec![0x60, 0x41, 0, 9], ..exchange(1) });
        let mut other = record("A", true, 3, vec![("t", KvValue::Long(3))]);
        other.exchange = Some(exchange(3));
        writer.commit(&[again.clone(), other]).unwrap();
        assert_eq!(store.recent_exchanges(0, 10).unwrap(), vec![again.exchange.clone().unwrap(), exchange(3)]);
        assert_eq!(store.recent_exchanges(0, 1).unwrap(), vec![exchange(3)]);
        assert_eq!(store.find_exchange("127.0.0.1:5000", 1, 0).unwrap(), again.exchange.clone());
        assert_eq!(store.find_exchange("127.0.0.1:5000", 2, 0).unwrap(), None, "rejected: not stored");
        assert_eq!(store.find_exchange("127.0.0.1:5001", 1, 0).unwrap(), None);
        assert_eq!(store.find_exchange("127.0.0.1:5000", 1, 1501).unwrap(), None, "older than `since`");
    }

    #[test]
    fn the_wal_is_rewound_and_cut_back_under_continuous_commits() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        // As the server runs it (no automatic checkpoints in commits), with a small limit.
        raw.wal_limit = 256 * 1024;
        raw.conn.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=262144;").unwrap();
        let wal_size = || std::fs::metadata(wal_path(&store.path)).unwrap().len();
        let mut ts = 0;
        while wal_size() <= 4 * raw.wal_limit {
            ts += 1;
            raw.commit(&[record(&format!("D{}", ts % 50), true, ts, vec![("t", KvValue::Long(ts))])]).unwrap();
        }
        raw.maintain().unwrap();
        assert!(wal_size() > 4 * raw.wal_limit, "nothing happens before the next check");
        raw.last_wal_check = std::time::Instant::now() - WAL_CHECK;
        raw.maintain().unwrap();
        ts += 1;
        raw.commit(&[record("D0", true, ts, vec![("t", KvValue::Long(ts))])]).unwrap();
        assert!(wal_size() <= raw.wal_limit, "WAL still {} bytes", wal_size());
        // Nothing was lost on the way.
        let id = store.device_by_name("D0").unwrap().unwrap().id;
        let latest = store.latest_timeseries(id, None).unwrap();
        assert_eq!(latest[0].1.ts, ts);
    }

    /// Upkeep says when more is waiting, so an idle writer works a backlog off at once
    /// (issue 13, finding 8) instead of a slice per commit once traffic returns.
    #[test]
    fn upkeep_reports_a_backlog_until_it_is_worked_off() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        let conn = open_connection(&store.path).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..EXCHANGE_SLICE * 2 + 5 {
            conn.execute("INSERT INTO coap_exchange_log (ts, peer, message_id, response) VALUES (1, 'p', 1, x'60')", []).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        std::thread::sleep(EXCHANGE_CHECK);
        let mut calls = 0;
        while raw.maintain().unwrap() {
            calls += 1;
            assert!(calls < 10, "upkeep never caught up");
        }
        assert_eq!(calls, 2, "two full slices said more was waiting, the third did not");
        let left: i64 = conn.query_row("SELECT count(*) FROM coap_exchange_log", [], |r| r.get(0)).unwrap();
        assert_eq!(left, 0);
    }

    /// A copy of the store's files, taken while it is open (so its logs are not checkpointed
    /// away on close), as a crash leaves them.
    fn copy_open_store(store: &SqliteStore, to: &Path) -> PathBuf {
        for file in data_files(&store.path) {
            for f in [wal_path(&file), file] {
                if f.exists() {
                    std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
                }
            }
        }
        to.join(store.path.file_name().unwrap())
    }

    /// Finding 7: damage in the history database's log is refused under that file's name, and
    /// salvaging opens the store and leaves logs that check clean.
    #[test]
    fn a_damaged_history_log_is_refused_by_name_and_salvaged() {
        let (_dir, store) = temp_store();
        let mut raw = SqliteUplinkWriter::open_for_test(&store);
        // Several moves, each one committed transaction of the history database's log.
        for round in 0..20 {
            let values = (0..50).map(|k| (format!("k{k}"), KvValue::Long(round))).collect::<Vec<_>>();
            let values = values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            raw.commit(&[record("dev", true, 1000 + round, values)]).unwrap();
            compact(&store, &mut raw);
        }
        let copy = tempdir::Dir::new();
        let db = copy_open_store(&store, &copy.path);
        let wal = wal_path(&history_path(&db));
        let len = std::fs::metadata(&wal).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len / 2 + 1000).unwrap();

        let error = SqliteStore::open(&db).err().expect("a damaged log is refused").to_string();
        assert!(error.contains("test-history.db-wal is damaged"), "{error}");
        assert!(!error.contains("test.db-wal"), "only the damaged file is named: {error}");
        let (salvaged, reports) = SqliteStore::open_checked(&db, true).unwrap();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].damage.as_ref().unwrap().cut_at.is_some());
        drop(salvaged);
        assert!(check_files(&db).iter().all(|c| c.problems.is_empty()), "clean after salvage");
        SqliteStore::open(&db).expect("and opens without salvage");
    }

    #[test]
    fn expired_exchanges_go_oldest_first_in_bounded_slices() {
        let (_dir, store) = temp_store();
        let conn = open_connection(&store.path).unwrap();
        let insert = |ts: i64| {
            conn.execute("INSERT INTO coap_exchange_log (ts, peer, message_id, response) VALUES (?1, 'p', 1, x'60')", [ts]).unwrap();
        };
        let left = || -> Vec<i64> {
            let mut stmt = conn.prepare("SELECT ts FROM coap_exchange_log ORDER BY rowid").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        // Arrival order; the clock went back once (5 after 100).
        for ts in [1, 2, 3, 100, 5, 200] {
            insert(ts);
        }
        assert_eq!(expire_exchanges(&conn, 50).unwrap(), 3);
        assert_eq!(left(), [100, 5, 200], "stops at the first row still within its lifetime");
        assert_eq!(expire_exchanges(&conn, 50).unwrap(), 0);
        assert_eq!(expire_exchanges(&conn, 150).unwrap(), 2);
        assert_eq!(left(), [200]);
        // More expired rows than a slice: one slice per call, the rest on the next.
        conn.execute_batch("BEGIN").unwrap();
        for _ in 0..EXCHANGE_SLICE + 5 {
            insert(300);
        }
        insert(1000);
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(expire_exchanges(&conn, 500).unwrap(), EXCHANGE_SLICE);
        assert_eq!(expire_exchanges(&conn, 500).unwrap(), 6, "the 200 row went in the first slice");
        assert_eq!(left(), [1000]);
    }

    fn all() -> PageQuery {
        PageQuery { page_size: 100, ..Default::default() }
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
        assert_eq!(results[0].as_ref().unwrap().created.len(), 1);
        assert!(results[1].as_ref().unwrap().created.is_empty(), "same device reused within a batch");
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
        assert_eq!(results[0].as_ref().unwrap().created, vec![(EntityKind::Device, second)]);
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
    fn assets_are_created_with_their_profile_and_store_values() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let mut asset = EntityUpdate::asset("Building A", "building");
        asset.label = Some("HQ".into());
        asset.telemetry = vec![(10, vec![("power".into(), KvValue::Long(5))])];
        asset.attributes = vec![("floors".into(), KvValue::Long(3))];
        // A device and an asset may share a name: they are different kinds of entity.
        let device = EntityUpdate::device("Building A", "meter");
        let results = writer.commit(&[record_of(true, 10, vec![asset, device])]).unwrap();
        let outcome = results[0].as_ref().unwrap();
        assert_eq!(outcome.created.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![EntityKind::Asset, EntityKind::Device]);

        let stored = store.asset_by_name("Building A").unwrap().expect("asset created");
        assert_eq!((stored.asset_type.as_str(), stored.label.as_deref()), ("building", Some("HQ")));
        assert_eq!(stored.created_by_integration, Some(Uuid::nil()));
        assert_eq!(store.asset(stored.id).unwrap().as_ref(), Some(&stored));
        let profile = store.asset_profile(stored.asset_profile_id).unwrap().expect("asset profile created");
        assert_eq!((profile.name.as_str(), profile.is_default), ("building", false));
        let profiles: Vec<String> = store.asset_profiles(&all()).unwrap().data.into_iter().map(|p| p.name).collect();
        assert!(profiles.contains(&"default".to_string()) && profiles.contains(&"building".to_string()), "{profiles:?}");
        assert!(
            !store.device_profiles(&all()).unwrap().data.iter().any(|p| p.name == "building"),
            "asset types are asset profiles, not device profiles"
        );
        assert_eq!(store.latest_timeseries(stored.id, None).unwrap()[0].1, TsValue { ts: 10, value: KvValue::Long(5) });
        assert_eq!(store.attributes(stored.id, None, None).unwrap()[0].1.value, KvValue::Long(3));
        assert_eq!(store.assets(&all(), Some("building")).unwrap().total_elements, 1);
        assert_eq!(store.assets(&all(), Some("meter")).unwrap().total_elements, 0);

        // Known assets are reused; unknown ones are refused with ThingsBoard's asset message.
        let again = writer.commit(&[record_of(false, 11, vec![EntityUpdate::asset("Building A", "other")])]).unwrap();
        assert!(again[0].as_ref().unwrap().created.is_empty());
        let refused = writer.commit(&[record_of(false, 11, vec![EntityUpdate::asset("Building B", "building")])]).unwrap();
        assert_eq!(refused[0], Err(UplinkRejection::CreatingAssetsForbidden));
        assert_eq!(refused[0].as_ref().unwrap_err().to_string(), "Creating assets is forbidden!");

        assert!(matches!(store.delete_asset_profile(profile.id), Err(StorageError::Conflict(_))), "profile in use");
        assert!(store.delete_asset(stored.id).unwrap());
        assert!(store.latest_timeseries(stored.id, None).unwrap().is_empty(), "telemetry goes with the asset");
        assert!(store.delete_asset_profile(profile.id).unwrap());
        // The writer forgets the deleted asset and profile and creates both again.
        let results = writer.commit(&[record_of(true, 12, vec![EntityUpdate::asset("Building A", "building")])]).unwrap();
        assert_eq!(results[0].as_ref().unwrap().created.len(), 1);
        assert!(store.asset_by_name("Building A").unwrap().is_some());
    }

    #[test]
    fn a_rejected_record_leaves_nothing_behind() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        writer.commit(&[record("Known", true, 1, vec![])]).unwrap();
        // The known device comes first, the unknown asset second: still nothing of it is written.
        let mut known = EntityUpdate::device("Known", "thermo");
        known.telemetry = vec![(5, vec![("t".into(), KvValue::Long(1))])];
        let mut unknown = EntityUpdate::asset("New", "site");
        unknown.customer_name = Some("Acme".into());
        unknown.group_name = Some("Sites".into());
        let results = writer.commit(&[record_of(false, 5, vec![known, unknown])]).unwrap();
        assert_eq!(results[0], Err(UplinkRejection::CreatingAssetsForbidden));
        let id = store.device_by_name("Known").unwrap().unwrap().id;
        assert!(store.latest_timeseries(id, None).unwrap().is_empty());
        assert_eq!(store.customers(&all()).unwrap().total_elements, 0);
        assert_eq!(store.entity_groups(EntityKind::Asset, None, &all()).unwrap().total_elements, 0);
        assert_eq!(store.asset_profiles(&all()).unwrap().total_elements, 1, "only the default profile");
    }

    #[test]
    fn customers_and_groups_are_created_once_per_batch_and_only_at_entity_creation() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let device = |name: &str, customer: Option<&str>, group: Option<&str>| {
            let mut d = EntityUpdate::device(name, "thermo");
            d.customer_name = customer.map(str::to_string);
            d.group_name = group.map(str::to_string);
            d
        };
        let mut asset = EntityUpdate::asset("Site 1", "site");
        asset.customer_name = Some("Acme".into());
        asset.group_name = Some("Sensors".into());
        let batch = vec![
            record_of(true, 1, vec![device("D1", Some("Acme"), Some("Sensors"))]),
            // Same customer and group in the same transaction, and twice within one record.
            record_of(true, 1, vec![device("D2", Some("Acme"), Some("Sensors")), device("D2", Some("Acme"), Some("Sensors"))]),
            // Same group name without a customer: a different group, owned by the tenant.
            record_of(true, 1, vec![device("D3", None, Some("Sensors"))]),
            // Same group name for an asset: a group of type ASSET.
            record_of(true, 1, vec![asset]),
            record_of(true, 1, vec![device("D4", Some("Globex"), None)]),
        ];
        let results = writer.commit(&batch).unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(results[1].as_ref().unwrap().created.len(), 1, "a name twice in one output creates one device");

        let customers = store.customers(&all()).unwrap();
        let mut titles: Vec<&str> = customers.data.iter().map(|c| c.title.as_str()).collect();
        titles.sort();
        assert_eq!(titles, vec!["Acme", "Globex"]);
        let acme = store.customer_by_title("Acme").unwrap().unwrap();
        assert_eq!(store.customer(acme.id).unwrap().as_ref(), Some(&acme));
        for name in ["D1", "D2"] {
            assert_eq!(store.device_by_name(name).unwrap().unwrap().customer_id, Some(acme.id), "{name}");
        }
        assert_eq!(store.device_by_name("D3").unwrap().unwrap().customer_id, None);
        assert_eq!(store.asset_by_name("Site 1").unwrap().unwrap().customer_id, Some(acme.id));
        let acme_devices: Vec<String> =
            store.customer_devices(acme.id, &all(), None).unwrap().data.into_iter().map(|d| d.name).collect();
        assert_eq!(acme_devices.len(), 2, "{acme_devices:?}");
        assert_eq!(store.customer_assets(acme.id, &all(), None).unwrap().total_elements, 1);

        let device_groups = store.entity_groups(EntityKind::Device, None, &all()).unwrap();
        assert_eq!(device_groups.total_elements, 2, "one per owner: {:?}", device_groups.data);
        let acme_group = store.entity_group_by_name(EntityKind::Device, Owner::Customer(acme.id), "Sensors").unwrap().unwrap();
        let tenant_group = store.entity_group_by_name(EntityKind::Device, Owner::Tenant, "Sensors").unwrap().unwrap();
        assert_eq!(store.entity_groups(EntityKind::Device, Some(Owner::Tenant), &all()).unwrap().data, vec![tenant_group.clone()]);
        let members = |group: Uuid| -> Vec<String> {
            let mut names: Vec<String> =
                store.entity_group_members(group, &all()).unwrap().data.into_iter().map(|m| m.name).collect();
            names.sort();
            names
        };
        assert_eq!(members(acme_group.id), vec!["D1", "D2"]);
        assert_eq!(members(tenant_group.id), vec!["D3"]);
        let asset_group = store.entity_group_by_name(EntityKind::Asset, Owner::Customer(acme.id), "Sensors").unwrap().unwrap();
        let asset_members = store.entity_group_members(asset_group.id, &all()).unwrap().data;
        assert_eq!((asset_members[0].kind, asset_members[0].name.as_str()), (EntityKind::Asset, "Site 1"));
        let d1 = store.device_by_name("D1").unwrap().unwrap();
        assert_eq!(store.groups_of_entity(d1.id).unwrap(), vec![acme_group.id]);

        // In the next batch (through the writer's cache) nothing is created again, and an existing
        // device keeps its customer and groups whatever the output says now.
        writer.commit(&[record_of(true, 2, vec![device("D1", Some("Initech"), Some("Other")), device("D5", Some("Acme"), Some("Sensors"))])]).unwrap();
        assert_eq!(store.customers(&all()).unwrap().total_elements, 2, "no customer for an existing device");
        assert_eq!(store.entity_groups(EntityKind::Device, None, &all()).unwrap().total_elements, 2);
        assert_eq!(store.device_by_name("D1").unwrap().unwrap().customer_id, Some(acme.id));
        assert_eq!(members(acme_group.id), vec!["D1", "D2", "D5"]);

        // Deleting a customer unassigns its entities and drops the groups it owns; the writer
        // creates both again when an output names them.
        assert!(store.delete_customer(acme.id).unwrap());
        assert_eq!(store.device_by_name("D1").unwrap().unwrap().customer_id, None);
        assert!(store.entity_group(acme_group.id).unwrap().is_none());
        assert!(store.groups_of_entity(d1.id).unwrap().is_empty());
        writer.commit(&[record_of(true, 3, vec![device("D6", Some("Acme"), Some("Sensors"))])]).unwrap();
        let new_acme = store.customer_by_title("Acme").unwrap().expect("customer created again");
        assert_ne!(new_acme.id, acme.id);
        assert!(store.entity_group_by_name(EntityKind::Device, Owner::Customer(new_acme.id), "Sensors").unwrap().is_some());

        assert!(store.delete_device(d1.id).unwrap());
        assert!(matches!(store.entity_group_members(Uuid::new_v4(), &all()), Err(StorageError::NotFound)));
        assert!(store.delete_entity_group(tenant_group.id).unwrap());
        assert!(store.entity_group(tenant_group.id).unwrap().is_none());
    }

    #[test]
    fn update_only_keys_store_a_value_only_when_it_changed() {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("u.db");
        let only = |ts: i64, t: KvValue, h: i64, fw: &str| {
            let mut d = EntityUpdate::device("D", "thermo");
            d.telemetry = vec![(ts, vec![("t".into(), t), ("h".into(), KvValue::Long(h))])];
            d.attributes = vec![("fw".into(), KvValue::Str(fw.into())), ("boot".into(), KvValue::Long(ts))];
            let mut r = record_of(true, ts, vec![d]);
            r.update_only_keys = Arc::from(vec!["t".to_string(), "fw".to_string()]);
            r
        };
        let history = |store: &SqliteStore, key: &str| -> Vec<(i64, KvValue)> {
            let id = store.device_by_name("D").unwrap().unwrap().id;
            let q = HistoryQuery { keys: vec![key.into()], start_ts: 0, end_ts: 1000, limit: 100, descending: false };
            store.timeseries_history(id, &q).unwrap().into_iter().flat_map(|(_, p)| p).map(|p| (p.ts, p.value)).collect()
        };
        {
            let store = SqliteStore::open(&path).unwrap();
            let mut writer = store.uplink_writer().unwrap();
            // Within one batch: the second record sees the first one's value.
            let results = writer.commit(&[only(1, KvValue::Double(20.5), 1, "1.0"), only(2, KvValue::Double(20.5), 1, "1.0")]).unwrap();
            assert_eq!(results[1].as_ref().unwrap().unchanged_skipped, 2, "t and fw unchanged");
            // Across batches, and a changed value is stored.
            writer.commit(&[only(3, KvValue::Double(20.5), 1, "1.0")]).unwrap();
            writer.commit(&[only(4, KvValue::Double(21.0), 1, "1.1")]).unwrap();
            // Same number as another type counts as a change (ThingsBoard types values first).
            writer.commit(&[only(5, KvValue::Long(21), 1, "1.1")]).unwrap();
            // Several points of one key in one record are compared one after the other.
            let mut d = EntityUpdate::device("D", "thermo");
            d.telemetry = vec![
                (6, vec![("t".into(), KvValue::Long(21))]),
                (7, vec![("t".into(), KvValue::Long(22))]),
                (8, vec![("t".into(), KvValue::Long(22))]),
            ];
            let mut r = record_of(true, 8, vec![d]);
            r.update_only_keys = Arc::from(vec!["t".to_string()]);
            writer.commit(&[r]).unwrap();
            assert_eq!(
                history(&store, "t"),
                vec![(1, KvValue::Double(20.5)), (4, KvValue::Double(21.0)), (5, KvValue::Long(21)), (7, KvValue::Long(22))]
            );
            assert_eq!(history(&store, "h").len(), 5, "keys not listed are always stored");
            let id = store.device_by_name("D").unwrap().unwrap().id;
            let attrs = store.attributes(id, None, None).unwrap();
            let fw = attrs.iter().find(|(_, a)| a.key == "fw").unwrap();
            assert_eq!((fw.1.last_update_ts, &fw.1.value), (4, &KvValue::Str("1.1".into())), "unchanged fw is not rewritten");
            let boot = attrs.iter().find(|(_, a)| a.key == "boot").unwrap();
            assert_eq!(boot.1.last_update_ts, 5);
        }
        // After a restart the comparison is with what is stored, not with a lost in-memory cache.
        let store = SqliteStore::open(&path).unwrap();
        let mut writer = store.uplink_writer().unwrap();
        let results = writer.commit(&[only(9, KvValue::Long(22), 1, "1.1")]).unwrap();
        assert_eq!(results[0].as_ref().unwrap().unchanged_skipped, 2);
        assert_eq!(history(&store, "t").last(), Some(&(7, KvValue::Long(22))));
    }

    #[test]
    fn customers_page_by_title() {
        let (_dir, store) = temp_store();
        let mut writer = store.uplink_writer().unwrap();
        let entities = ["Zeta", "alpha", "Mid"]
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut d = EntityUpdate::device(format!("D{i}"), "t");
                d.customer_name = Some(c.to_string());
                d
            })
            .collect();
        writer.commit(&[record_of(true, 1, entities)]).unwrap();
        let q = PageQuery { page_size: 2, sort_property: Some("title".into()), ..Default::default() };
        let page = store.customers(&q).unwrap();
        assert_eq!((page.total_elements, page.has_next), (3, true));
        assert_eq!(page.data.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(), vec!["Mid", "Zeta"]);
        let q = PageQuery { page_size: 10, text_search: Some("ALP".into()), ..Default::default() };
        assert_eq!(store.customers(&q).unwrap().data[0].title, "alpha");
        // An unknown sort property falls back to creation time instead of failing.
        let q = PageQuery { page_size: 10, sort_property: Some("type".into()), ..Default::default() };
        assert_eq!(store.customers(&q).unwrap().total_elements, 3);
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
