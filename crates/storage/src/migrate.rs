//! `coapgate migrate`: copies a stopped server's SQLite data directory into PostgreSQL, every
//! table with its ids, names, times, values and types, resumable after an interruption at any
//! moment, with the row counts of both sides compared at the end.
//!
//! **What is copied.** Everything a user or a device can tell apart: settings (the tenant id,
//! the JWT secret, the login sessions), users with their bcrypt hashes and pending invitations, converters and
//! integrations (configuration, versions), profiles, customers, devices, assets, entity groups
//! and their members, the key dictionary (with its ids, so keys keep their numbers), attributes
//! of every scope, every time-series point with the latest values, events, remote integrations'
//! record places and the CoAP exchange log.
//! - Time series: the points still waiting in `ts_kv_recent` are first moved into the history
//!   file by the compactor's own step (what `serve` does at start-up before its first commit),
//!   so `hist.ts_kv` and `hist.ts_kv_latest` then hold every point and the latest values, with
//!   the same rule for a timestamp written twice. The source stays a valid data directory.
//! - Remote record places: copied; a remote resends every record it has not seen acknowledged,
//!   and without its place a resend would be stored twice.
//! - Exchanges: copied too, expired or not. They matter only within EXCHANGE_LIFETIME (247 s),
//!   but a quick switch is within it, and the table holds at most a few minutes of uplinks; the
//!   PostgreSQL writer's upkeep deletes the expired ones.
//!
//! **Resumable.** Each table is read in its key order (rowid, or the primary key of a `WITHOUT
//! ROWID` table) and written in chunks, each chunk one PostgreSQL transaction of a binary `COPY`
//! plus the table's progress mark (`migration_progress`: the last key copied). A run that is
//! killed loses at most its open transaction; the next run starts after the last committed key,
//! so every row arrives exactly once. `migration_source` names the data directory a target is
//! being filled from (its tenant id): a target holding anything else is refused.
//!
//! **Fast.** A reader thread turns SQLite rows into chunks while the calling thread copies the
//! previous chunk, `COPY … FROM STDIN BINARY`, without `synchronous_commit` (a chunk lost by a
//! PostgreSQL crash is lost with its progress mark, and copied again).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{Value as SqlValue, ValueRef};
use uuid::Uuid;

use crate::postgres::{Conn, PgConfig, pg, schema};
use crate::{Result, StorageError};

/// Rows per chunk (one PostgreSQL transaction) unless the caller says otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 50_000;

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Rows per committed chunk.
    pub chunk_rows: usize,
    /// For tests of resumption: fail the run, after its `COPY` and before its `COMMIT`, in the
    /// chunk after this many were committed, as a kill at that moment would.
    pub fail_after_chunks: Option<u64>,
}

impl Default for MigrateOptions {
    fn default() -> MigrateOptions {
        MigrateOptions { chunk_rows: DEFAULT_CHUNK_ROWS, fail_after_chunks: None }
    }
}

/// A committed chunk, for progress lines.
#[derive(Debug, Clone)]
pub struct Progress {
    pub table: &'static str,
    /// Rows in this chunk.
    pub rows: u64,
    /// Rows of the table in the target so far, from earlier runs too.
    pub copied: u64,
    /// Rows of the table in the source.
    pub total: u64,
    /// Whether the table is complete.
    pub done: bool,
}

/// One table's rows on both sides after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: u64,
    pub target: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    /// Whether the run continued an earlier, interrupted one (or re-checked a finished one).
    pub resumed: bool,
    /// Points that were waiting in `ts_kv_recent` and were moved into the history first.
    pub moved_recent_points: u64,
    /// Rows this run copied, all tables together.
    pub copied_rows: u64,
    pub counts: Vec<TableCount>,
}

impl MigrationReport {
    /// The tables whose counts differ.
    pub fn mismatches(&self) -> Vec<&TableCount> {
        self.counts.iter().filter(|c| c.source != c.target).collect()
    }
}

/// A column's type in PostgreSQL, and how the SQLite value is turned into it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Uuid,
    Int8,
    Int4,
    Float8,
    Bool,
    Text,
    Bytea,
    Json,
}

impl Kind {
    fn pg_type(self) -> Type {
        match self {
            Kind::Uuid => Type::UUID,
            Kind::Int8 => Type::INT8,
            Kind::Int4 => Type::INT4,
            Kind::Float8 => Type::FLOAT8,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Bytea => Type::BYTEA,
            Kind::Json => Type::JSON,
        }
    }
}

/// One table to copy: where its rows are in SQLite, in which order, and their columns.
struct Table {
    /// The PostgreSQL table, also its name in progress marks and reports.
    name: &'static str,
    /// The SQLite table, with its schema (`main`, `hist` or `ev`).
    source: &'static str,
    /// The source's key, in order: `rowid`, or a `WITHOUT ROWID` table's primary key columns.
    key: &'static [&'static str],
    /// `(source expression, target column, kind)`.
    columns: &'static [(&'static str, &'static str, Kind)],
    /// PostgreSQL's schema migration puts rows of its own into this table (a new tenant id,
    /// default profiles); the source's replace them, in the table's first chunk.
    replaces_defaults: bool,
}

impl Table {
    /// The source's columns, then any key column that is not one of them.
    fn selected(&self) -> Vec<&'static str> {
        let mut out: Vec<&str> = self.columns.iter().map(|c| c.0).collect();
        out.extend(self.key.iter().filter(|k| !self.columns.iter().any(|c| c.0 == **k)));
        out
    }

    fn kinds(&self) -> Vec<Kind> {
        let mut out: Vec<Kind> = self.columns.iter().map(|c| c.2).collect();
        // Only `rowid` is ever a key without being copied.
        out.extend(self.key.iter().filter(|k| !self.columns.iter().any(|c| c.0 == **k)).map(|_| Kind::Int8));
        out
    }

    fn key_positions(&self) -> Vec<usize> {
        let selected = self.selected();
        self.key.iter().map(|k| selected.iter().position(|s| s == k).expect("key column selected")).collect()
    }

    /// Rows after `after` (a key as [`encode_key`] wrote it), in key order.
    fn read_sql(&self, after: bool) -> String {
        let key = self.key.join(", ");
        let filter = if after {
            let placeholders: Vec<String> = (1..=self.key.len()).map(|i| format!("?{i}")).collect();
            format!("WHERE ({key}) > ({})", placeholders.join(", "))
        } else {
            String::new()
        };
        format!("SELECT {} FROM {} {filter} ORDER BY {key}", self.selected().join(", "), self.source)
    }

    fn copy_sql(&self) -> String {
        let columns: Vec<&str> = self.columns.iter().map(|c| c.1).collect();
        format!("COPY {} ({}) FROM STDIN BINARY", self.name, columns.join(", "))
    }
}

use Kind::*;

const VALUES: [(&str, &str, Kind); 5] =
    [("bool_v", "bool_v", Bool), ("long_v", "long_v", Int8), ("dbl_v", "dbl_v", Float8), ("str_v", "str_v", Text), ("json_v", "json_v", Text)];

macro_rules! with_values {
    ($($c:expr),* $(,)?) => {
        &[$($c,)* VALUES[0], VALUES[1], VALUES[2], VALUES[3], VALUES[4]]
    };
}

/// Every table, in copy order (there are no foreign keys; entities come before their data so a
/// half-migrated target reads sensibly).
const TABLES: &[Table] = &[
    Table {
        name: "setting",
        source: "main.setting",
        key: &["rowid"],
        columns: &[("name", "name", Text), ("value", "value", Text)],
        replaces_defaults: true,
    },
    Table {
        name: "app_user",
        source: "main.app_user",
        key: &["rowid"],
        columns: &[
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("email", "email", Text),
            ("password_hash", "password_hash", Text),
            ("authority", "authority", Text),
            ("first_name", "first_name", Text),
            ("last_name", "last_name", Text),
            ("customer_id", "customer_id", Uuid),
            ("enabled", "enabled", Bool),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "user_activation",
        source: "main.user_activation",
        key: &["rowid"],
        columns: &[("user_id", "user_id", Uuid), ("token_hash", "token_hash", Text), ("expires", "expires", Int8)],
        replaces_defaults: false,
    },
    Table {
        name: "converter",
        source: "main.converter",
        key: &["rowid"],
        columns: &[
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("name", "name", Text),
            ("type", "type", Text),
            ("integration_type", "integration_type", Text),
            ("debug_settings", "debug_settings", Text),
            ("configuration", "configuration", Text),
            ("additional_info", "additional_info", Text),
            ("version", "version", Int8),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "integration",
        source: "main.integration",
        key: &["rowid"],
        columns: &[
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("name", "name", Text),
            ("type", "type", Text),
            ("enabled", "enabled", Bool),
            ("allow_create", "allow_create", Bool),
            ("is_remote", "is_remote", Bool),
            ("debug_settings", "debug_settings", Text),
            ("converter_id", "converter_id", Uuid),
            ("downlink_converter_id", "downlink_converter_id", Uuid),
            ("routing_key", "routing_key", Text),
            ("secret", "secret", Text),
            ("configuration", "configuration", Text),
            ("additional_info", "additional_info", Text),
            ("version", "version", Int8),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "device_profile",
        source: "main.device_profile",
        key: &["rowid"],
        columns: &[("id", "id", Uuid), ("created_time", "created_time", Int8), ("name", "name", Text), ("is_default", "is_default", Bool)],
        replaces_defaults: true,
    },
    Table {
        name: "asset_profile",
        source: "main.asset_profile",
        key: &["rowid"],
        columns: &[("id", "id", Uuid), ("created_time", "created_time", Int8), ("name", "name", Text), ("is_default", "is_default", Bool)],
        replaces_defaults: true,
    },
    Table {
        name: "customer",
        source: "main.customer",
        key: &["rowid"],
        columns: &[("id", "id", Uuid), ("created_time", "created_time", Int8), ("title", "title", Text)],
        replaces_defaults: false,
    },
    Table {
        name: "device",
        source: "main.device",
        key: &["rowid"],
        columns: &[
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("name", "name", Text),
            ("type", "type", Text),
            ("device_profile_id", "device_profile_id", Uuid),
            ("label", "label", Text),
            ("customer_id", "customer_id", Uuid),
            ("integration_id", "integration_id", Uuid),
            ("description", "description", Text),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "asset",
        source: "main.asset",
        key: &["rowid"],
        columns: &[
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("name", "name", Text),
            ("type", "type", Text),
            ("asset_profile_id", "asset_profile_id", Uuid),
            ("label", "label", Text),
            ("customer_id", "customer_id", Uuid),
            ("integration_id", "integration_id", Uuid),
            ("description", "description", Text),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "device_credentials",
        source: "main.device_credentials",
        key: &["rowid"],
        columns: &[
            ("device_id", "device_id", Uuid),
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("credentials_type", "credentials_type", Text),
            ("credentials_id", "credentials_id", Text),
            ("credentials_value", "credentials_value", Text),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "entity_group",
        source: "main.entity_group",
        key: &["rowid"],
        columns: &[
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("name", "name", Text),
            ("type", "type", Text),
            ("owner_id", "owner_id", Uuid),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "entity_group_member",
        source: "main.entity_group_member",
        key: &["group_id", "entity_id"],
        columns: &[("group_id", "group_id", Uuid), ("entity_id", "entity_id", Uuid)],
        replaces_defaults: false,
    },
    Table {
        name: "key_dictionary",
        source: "main.key_dictionary",
        key: &["key_id"],
        columns: &[("key_id", "key_id", Int4), ("key", "key", Text)],
        replaces_defaults: false,
    },
    Table {
        name: "attribute_kv",
        source: "main.attribute_kv",
        key: &["entity_id", "scope", "key"],
        columns: with_values![
            ("entity_id", "entity_id", Uuid),
            ("scope", "scope", Text),
            ("key", "key", Int4),
            ("last_update_ts", "last_update_ts", Int8),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "ts_kv_latest",
        source: "hist.ts_kv_latest",
        key: &["entity_id", "key"],
        columns: with_values![("entity_id", "entity_id", Uuid), ("key", "key", Int4), ("ts", "ts", Int8)],
        replaces_defaults: false,
    },
    Table {
        name: "ts_kv",
        source: "hist.ts_kv",
        key: &["entity_id", "key", "ts"],
        columns: with_values![("entity_id", "entity_id", Uuid), ("key", "key", Int4), ("ts", "ts", Int8)],
        replaces_defaults: false,
    },
    Table {
        name: "event",
        source: "ev.event",
        key: &["rowid"],
        // seq keeps SQLite's rowid: events of one millisecond stay in their order.
        columns: &[
            ("rowid", "seq", Int8),
            ("id", "id", Uuid),
            ("created_time", "created_time", Int8),
            ("entity_type", "entity_type", Text),
            ("entity_id", "entity_id", Uuid),
            ("event_type", "event_type", Text),
            ("uid", "uid", Text),
            ("body", "body", Json),
        ],
        replaces_defaults: false,
    },
    Table {
        name: "remote_record",
        source: "main.remote_record",
        key: &["integration_id", "outbox_id", "seq"],
        columns: &[("integration_id", "integration_id", Uuid), ("outbox_id", "outbox_id", Uuid), ("seq", "seq", Int8)],
        replaces_defaults: false,
    },
    Table {
        name: "coap_exchange",
        source: "main.coap_exchange_log",
        key: &["rowid"],
        columns: &[
            ("rowid", "id", Int8),
            ("ts", "ts", Int8),
            ("peer", "peer", Text),
            ("message_id", "message_id", Int4),
            ("response", "response", Bytea),
        ],
        replaces_defaults: false,
    },
];

/// Serial columns whose sequences must continue after the copied ids.
const SEQUENCES: &[(&str, &str)] = &[("key_dictionary", "key_id"), ("event", "seq"), ("coap_exchange", "id")];

/// Held by the run copying into a database (session-level advisory lock).
const MIGRATE_LOCK: i64 = 0x636f_6170_6d76_0000; // "coapmv\0\0"

/// The migration's own bookkeeping in the target. Not part of the versioned schema: only this
/// tool reads it, and `serve` never needs it.
const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS migration_source (
    id int PRIMARY KEY CHECK (id = 1), tenant_id uuid NOT NULL, path text NOT NULL, started_at bigint NOT NULL);
CREATE TABLE IF NOT EXISTS migration_progress (
    table_name text PRIMARY KEY, last_key text, rows_copied bigint NOT NULL, done boolean NOT NULL);
";

/// One value on its way from SQLite to PostgreSQL's binary format.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Uuid(Uuid),
    I64(i64),
    I32(i32),
    F64(f64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON text, sent as `json`'s binary form (which is the text).
    Json(String),
}

impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut postgres::types::private::BytesMut) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Uuid(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
            Cell::Json(v) => {
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn bad_value(table: &str, column: &str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Other(format!("{table}.{column}: {what}"))
}

/// The SQLite value as the PostgreSQL column wants it.
fn cell(table: &str, column: &str, kind: Kind, v: ValueRef<'_>) -> Result<Cell> {
    Ok(match (kind, v) {
        (_, ValueRef::Null) => Cell::Null,
        (Uuid, ValueRef::Blob(b)) => Cell::Uuid(uuid::Uuid::from_slice(b).map_err(|e| bad_value(table, column, e))?),
        (Uuid, ValueRef::Text(t)) => Cell::Uuid(
            uuid::Uuid::parse_str(&String::from_utf8_lossy(t)).map_err(|e| bad_value(table, column, e))?,
        ),
        (Int8, ValueRef::Integer(i)) => Cell::I64(i),
        (Int4, ValueRef::Integer(i)) => {
            Cell::I32(i32::try_from(i).map_err(|_| bad_value(table, column, format!("{i} does not fit an int")))?)
        }
        (Float8, ValueRef::Real(f)) => Cell::F64(f),
        (Float8, ValueRef::Integer(i)) => Cell::F64(i as f64),
        (Bool, ValueRef::Integer(i)) => Cell::Bool(i != 0),
        (Text, ValueRef::Text(t)) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        (Text, ValueRef::Integer(i)) => Cell::Text(i.to_string()),
        (Text, ValueRef::Real(f)) => Cell::Text(f.to_string()),
        (Bytea, ValueRef::Blob(b)) => Cell::Bytes(b.to_vec()),
        (Json, ValueRef::Text(t)) => {
            // SQLite reads an unparsable body as null; PostgreSQL would refuse it.
            let text = String::from_utf8_lossy(t).into_owned();
            if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() { Cell::Json(text) } else { Cell::Json("null".into()) }
        }
        (kind, other) => return Err(bad_value(table, column, format!("a {:?} value where {kind:?} was expected", other.data_type()))),
    })
}

/// A key as the progress mark keeps it: a JSON array of `i:<integer>`, `t:<text>`, `b:<hex>`.
fn encode_key(values: &[SqlValue]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            SqlValue::Integer(i) => format!("i:{i}"),
            SqlValue::Text(t) => format!("t:{t}"),
            SqlValue::Blob(b) => format!("b:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            SqlValue::Real(f) => format!("r:{f}"),
            SqlValue::Null => "n:".to_string(),
        })
        .collect();
    serde_json::to_string(&parts).unwrap_or_default()
}

fn decode_key(text: &str) -> Result<Vec<SqlValue>> {
    let bad = || StorageError::Other(format!("migration_progress holds an unreadable key {text:?}"));
    let parts: Vec<String> = serde_json::from_str(text).map_err(|_| bad())?;
    parts
        .iter()
        .map(|p| {
            let (tag, rest) = p.split_once(':').ok_or_else(bad)?;
            Ok(match tag {
                "i" => SqlValue::Integer(rest.parse().map_err(|_| bad())?),
                "t" => SqlValue::Text(rest.to_string()),
                "r" => SqlValue::Real(rest.parse().map_err(|_| bad())?),
                "n" => SqlValue::Null,
                "b" => SqlValue::Blob(
                    (0..rest.len())
                        .step_by(2)
                        .map(|i| rest.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
                        .collect::<Result<Vec<u8>>>()?,
                ),
                _ => return Err(bad()),
            })
        })
        .collect()
}

/// Where a table stands in the target.
#[derive(Debug, Clone, Default)]
struct Mark {
    last_key: Option<String>,
    rows: u64,
    done: bool,
}

/// A chunk of one table's rows, read and converted, with the key of its last row.
struct Chunk {
    table: usize,
    rows: Vec<Vec<Cell>>,
    last_key: Option<String>,
    /// The table has no rows after these.
    last: bool,
}

/// Copies the SQLite data directory whose main file is `source` into the PostgreSQL database
/// `target`, or finishes an interrupted copy of it; returns both sides' counts. `progress` is
/// called after every committed chunk.
pub fn migrate(
    source: &Path,
    target: &PgConfig,
    options: &MigrateOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<MigrationReport> {
    let (reader, _store, moved_recent_points) = open_source(source)?;
    let tenant_id = {
        let text: String = reader.query_row("SELECT value FROM main.setting WHERE name = 'tenant_id'", [], |r| r.get(0))?;
        uuid::Uuid::parse_str(&text).map_err(|e| StorageError::Other(format!("bad tenant id {text:?} in {}: {e}", source.display())))?
    };
    let source_counts: Vec<u64> = TABLES
        .iter()
        .map(|t| Ok(reader.query_row(&format!("SELECT count(*) FROM {}", t.source), [], |r| r.get::<_, i64>(0))? as u64))
        .collect::<Result<_>>()?;

    // The schema first (PgStore's own migration), then our bookkeeping and the target's state.
    drop(crate::PgStore::open(target.clone())?);
    let mut conn = Conn::open(target)?;
    let client = &mut conn.client;
    // A chunk lost in a PostgreSQL crash is lost with its progress mark: no need to wait for
    // each commit's flush.
    client.batch_execute("SET synchronous_commit = off").map_err(pg)?;
    // Creating a partition or bookkeeping table that exists is a NOTICE: not worth a log line.
    client.batch_execute("SET client_min_messages = warning").map_err(pg)?;
    client.batch_execute(BOOKKEEPING).map_err(pg)?;
    // Held for the session: a second run into the same database would copy the same chunks.
    let alone: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATE_LOCK]).map_err(pg)?.get(0);
    if !alone {
        return Err(StorageError::Other(format!(
            "another coapgate migrate is copying into postgres://{}/{}: let it finish",
            target.address(),
            target.dbname()
        )));
    }
    let resumed = claim_target(client, tenant_id, source, target)?;
    let mut marks: HashMap<String, Mark> = client
        .query("SELECT table_name, last_key, rows_copied, done FROM migration_progress", &[])
        .map_err(pg)?
        .iter()
        .map(|r| (r.get::<_, String>(0), Mark { last_key: r.get(1), rows: r.get::<_, i64>(2) as u64, done: r.get(3) }))
        .collect();

    let starts: Vec<Option<Mark>> = TABLES.iter().map(|t| marks.get(t.name).cloned()).collect();
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Chunk>>(2);
    let chunk_rows = options.chunk_rows.max(1);
    let mut copied_rows = 0u64;
    let mut committed = 0u64;
    let mut months_made: HashSet<i64> = HashSet::new();
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            for (index, table) in TABLES.iter().enumerate() {
                let start = &starts[index];
                if start.as_ref().is_some_and(|m| m.done) {
                    continue;
                }
                let after = start.as_ref().and_then(|m| m.last_key.as_deref());
                let sent = read_table(&reader, index, table, after, chunk_rows, &mut |chunk| sender.send(Ok(chunk)).is_ok());
                match sent {
                    Ok(true) => {}
                    // The copying side stopped (an error it reports itself).
                    Ok(false) => return,
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        return;
                    }
                }
            }
        });
        for chunk in receiver {
            let chunk = chunk?;
            let table = &TABLES[chunk.table];
            let first = !marks.contains_key(table.name);
            if table.name == "ts_kv" {
                make_partitions(client, &chunk.rows, &mut months_made)?;
            }
            let rows = chunk.rows.len() as u64;
            let fail = options.fail_after_chunks.is_some_and(|n| committed >= n);
            copy_chunk(client, table, &chunk, first, fail)?;
            committed += 1;
            copied_rows += rows;
            let mark = marks.entry(table.name.to_string()).or_default();
            mark.rows += rows;
            mark.done = chunk.last;
            if chunk.last_key.is_some() {
                mark.last_key = chunk.last_key;
            }
            progress(&Progress { table: table.name, rows, copied: mark.rows, total: source_counts[chunk.table], done: chunk.last });
        }
        Ok(())
    })?;

    for (table, column) in SEQUENCES {
        client
            .batch_execute(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
            ))
            .map_err(pg)?;
    }
    let mut counts = Vec::new();
    for (table, source) in TABLES.iter().zip(source_counts) {
        let target: i64 = client.query_one(&format!("SELECT count(*) FROM {}", table.name), &[]).map_err(pg)?.get(0);
        counts.push(TableCount { table: table.name, source, target: target as u64 });
    }
    Ok(MigrationReport { resumed, moved_recent_points, copied_rows, counts })
}

/// Opens the source's files the way `serve` does (checking their write-ahead logs, taking the
/// exclusive lock, so no server can start on them while we read), then moves the points still
/// waiting in `ts_kv_recent` into the history file. Returns a connection with `hist` and `ev`
/// attached, the store that keeps the files locked, and how many points were moved.
fn open_source(source: &Path) -> Result<(rusqlite::Connection, crate::SqliteStore, u64)> {
    if !source.is_file() {
        return Err(StorageError::Other(format!("{}: no coapgate database there (check --data-dir)", source.display())));
    }
    for file in crate::sqlite::data_files(source).iter().filter(|f| f.exists()) {
        // A running server holds its files exclusively: fail at once, with one clear line,
        // rather than after the store's busy timeout.
        let probe = crate::sqlite::open_file(file)?;
        match probe.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
            {
                return Err(StorageError::Other(format!(
                    "{} is in use (locked): stop the coapgate server running on this data directory, then migrate again",
                    file.display()
                )));
            }
            Err(e) => return Err(StorageError::Other(format!("{}: {e}", file.display()))),
            Ok(_) => {}
        }
    }
    let store = crate::SqliteStore::open(source)?;
    let conn = crate::sqlite::open_connection(source)?;
    let [_, _, events] = crate::sqlite::data_files(source);
    conn.execute("ATTACH DATABASE ?1 AS ev", [events.to_string_lossy()])?;
    let moved = crate::sqlite::move_all_recent(&conn)?;
    // PostgreSQL keeps one exchange per (peer, Message ID) (a unique index, which makes
    // deduplication hold across nodes); SQLite's log can still hold an older exchange of a key
    // reused after its lifetime that upkeep has not deleted yet. Only the newest ever answers a
    // retransmission, so the older ones go, here as SQLite's upkeep would have removed them.
    conn.execute(
        "DELETE FROM main.coap_exchange_log WHERE rowid NOT IN \
         (SELECT max(rowid) FROM main.coap_exchange_log GROUP BY peer, message_id)",
        [],
    )?;
    Ok((conn, store, moved))
}

/// Reads `table` after the key `after` and hands it on in chunks of `chunk_rows`, the last one
/// marked (possibly empty). Returns false when `send` refused a chunk.
fn read_table(
    conn: &rusqlite::Connection,
    index: usize,
    table: &Table,
    after: Option<&str>,
    chunk_rows: usize,
    send: &mut dyn FnMut(Chunk) -> bool,
) -> Result<bool> {
    let selected = table.selected();
    let kinds = table.kinds();
    let key_positions = table.key_positions();
    let after = after.map(decode_key).transpose()?;
    let mut statement = conn.prepare(&table.read_sql(after.is_some()))?;
    let mut rows = match &after {
        Some(key) => statement.query(rusqlite::params_from_iter(key.iter()))?,
        None => statement.query([])?,
    };
    let mut chunk: Vec<Vec<Cell>> = Vec::with_capacity(chunk_rows);
    let mut last_key = None;
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(selected.len());
        for (i, (column, kind)) in selected.iter().zip(&kinds).enumerate() {
            cells.push(cell(table.name, column, *kind, row.get_ref(i)?)?);
        }
        chunk.push(cells);
        if chunk.len() == chunk_rows {
            last_key = Some(encode_key(&key_positions.iter().map(|&i| row.get::<_, SqlValue>(i)).collect::<rusqlite::Result<Vec<_>>>()?));
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_rows));
            if !send(Chunk { table: index, rows: full, last_key: last_key.clone(), last: false }) {
                return Ok(false);
            }
        }
    }
    // The last chunk's key: from its last row (the mark stays where it was when it is empty).
    let final_key = match chunk.last() {
        Some(cells) => Some(encode_key(&key_positions.iter().map(|&i| cell_key(&cells[i])).collect::<Vec<_>>())),
        None => last_key,
    };
    Ok(send(Chunk { table: index, rows: chunk, last_key: final_key, last: true }))
}

/// A key column's value back in SQLite's terms (keys are uuids, integers and text).
fn cell_key(c: &Cell) -> SqlValue {
    match c {
        Cell::Uuid(u) => SqlValue::Blob(u.as_bytes().to_vec()),
        Cell::I64(i) => SqlValue::Integer(*i),
        Cell::I32(i) => SqlValue::Integer(i64::from(*i)),
        Cell::Text(t) | Cell::Json(t) => SqlValue::Text(t.clone()),
        Cell::F64(f) => SqlValue::Real(*f),
        Cell::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Cell::Bytes(b) => SqlValue::Blob(b.clone()),
        Cell::Null => SqlValue::Null,
    }
}

/// Creates the month partitions the chunk's points need (before the chunk's transaction, as
/// the writer does).
fn make_partitions(client: &mut postgres::Client, rows: &[Vec<Cell>], made: &mut HashSet<i64>) -> Result<()> {
    let ts = TABLES.iter().find(|t| t.name == "ts_kv").and_then(|t| t.columns.iter().position(|c| c.1 == "ts")).expect("ts_kv.ts");
    let mut months: Vec<i64> = rows
        .iter()
        .filter_map(|r| match r[ts] {
            Cell::I64(t) => schema::partition_month(t),
            _ => None,
        })
        .filter(|m| !made.contains(m))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if months.is_empty() {
        return Ok(());
    }
    months.sort_unstable();
    schema::create_partitions(client, &months)?;
    made.extend(months);
    Ok(())
}

/// One chunk in one transaction: its rows and the table's new mark.
fn copy_chunk(client: &mut postgres::Client, table: &Table, chunk: &Chunk, first: bool, fail: bool) -> Result<()> {
    let copy_error = |e: postgres::Error| {
        StorageError::Other(format!("copying into {} failed: {}", table.name, crate::postgres::error_text(&e)))
    };
    let mut tx = client.transaction().map_err(pg)?;
    if first && table.replaces_defaults {
        tx.batch_execute(&format!("DELETE FROM {}", table.name)).map_err(pg)?;
    }
    if !chunk.rows.is_empty() {
        let types: Vec<Type> = table.columns.iter().map(|c| c.2.pg_type()).collect();
        let sink = tx.copy_in(&table.copy_sql()).map_err(copy_error)?;
        let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
        let n = table.columns.len();
        for row in &chunk.rows {
            writer.write_raw(row[..n].iter()).map_err(copy_error)?;
        }
        writer.finish().map_err(copy_error)?;
    }
    tx.execute(
        "INSERT INTO migration_progress (table_name, last_key, rows_copied, done) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (table_name) DO UPDATE SET last_key = coalesce(excluded.last_key, migration_progress.last_key), \
         rows_copied = migration_progress.rows_copied + excluded.rows_copied, done = excluded.done",
        &[&table.name, &chunk.last_key, &(chunk.rows.len() as i64), &chunk.last],
    )
    .map_err(pg)?;
    if fail {
        // Dropping the transaction rolls it back, as a kill before COMMIT would.
        return Err(StorageError::Other(format!("stopped by the test hook before committing a chunk of {}", table.name)));
    }
    tx.commit().map_err(pg)
}

/// Makes the target ours: a first run finds it empty (but for the rows PostgreSQL's schema
/// migration made) and records the source; a later run finds the same source recorded. Returns
/// whether this run resumes.
fn claim_target(client: &mut postgres::Client, tenant_id: Uuid, source: &Path, target: &PgConfig) -> Result<bool> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.batch_execute("LOCK TABLE migration_source IN EXCLUSIVE MODE").map_err(pg)?;
    let recorded = tx.query_opt("SELECT tenant_id, path FROM migration_source", &[]).map_err(pg)?;
    let where_to = format!("postgres://{}/{}", target.address(), target.dbname());
    if let Some(row) = recorded {
        let (tenant, path): (Uuid, String) = (row.get(0), row.get(1));
        if tenant != tenant_id {
            return Err(StorageError::Other(format!(
                "{where_to} holds a migration of another data directory ({path}, tenant {tenant}): migrate into an empty database"
            )));
        }
        return Ok(true);
    }
    let mut held = Vec::new();
    for table in TABLES.iter().map(|t| t.name) {
        let extra = match table {
            "setting" => " WHERE name <> 'tenant_id'",
            "device_profile" | "asset_profile" => " WHERE NOT (is_default AND name = 'default')",
            _ => "",
        };
        let n: i64 = tx.query_one(&format!("SELECT count(*) FROM (SELECT 1 FROM {table}{extra} LIMIT 1000) t"), &[]).map_err(pg)?.get(0);
        if n > 0 {
            held.push(format!("{table}: {n}{}", if n == 1000 { "+" } else { "" }));
        }
    }
    if !held.is_empty() {
        return Err(StorageError::Other(format!(
            "{where_to} already holds data that did not come from {} ({}): migrate into an empty database",
            source.display(),
            held.join(", ")
        )));
    }
    tx.execute(
        "INSERT INTO migration_source (id, tenant_id, path, started_at) VALUES (1, $1, $2, $3)",
        &[&tenant_id, &source.display().to_string(), &crate::now_millis()],
    )
    .map_err(pg)?;
    tx.commit().map_err(pg)?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_their_text_form() {
        let key = vec![SqlValue::Blob(vec![0, 1, 0xab, 0xff]), SqlValue::Text("CLIENT_SCOPE:x".into()), SqlValue::Integer(-42)];
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        assert!(decode_key("[\"x:1\"]").is_err());
    }

    #[test]
    fn every_table_reads_in_key_order_after_a_key() {
        for table in TABLES {
            let sql = table.read_sql(true);
            assert!(sql.contains(&format!("ORDER BY {}", table.key.join(", "))), "{sql}");
            assert_eq!(table.kinds().len(), table.selected().len());
            assert_eq!(table.key_positions().len(), table.key.len());
        }
    }
}
