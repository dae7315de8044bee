//! The PostgreSQL backend: the same [`Store`] and [`UplinkWriter`] as the embedded SQLite one,
//! for one database shared by several coapgate nodes.
//!
//! Modules: `config` (URLs, ThingsBoard's JDBC form), `schema` (versioned migrations,
//! time-series partitions), `writer` (the group-commit uplink writer).
//!
//! **Client.** The synchronous `postgres` crate (a thin blocking wrapper of tokio-postgres) with
//! our own small pool of idle connections, not tokio-postgres with deadpool: the `Store` trait is
//! blocking and is called from `spawn_blocking` threads and from the writer thread, so an async
//! client would need a runtime handle and a `block_on` at every call for nothing in return; the
//! pool is a `Mutex<Vec<_>>` of idle connections (a caller takes one, puts it back), the same
//! shape as the SQLite backend's, and each pooled connection keeps its prepared statements.
//!
//! **Durability.** Connections run with `synchronous_commit=on`: a `COMMIT` that returned is
//! durable (flushed by the server, and by its synchronous standbys if any). The uplink writers
//! split durability off (`UplinkWriter::split_durability`): they commit with
//! `synchronous_commit=off`, and the server's sync thread calls a barrier (writer.rs, `PgBarrier`)
//! whose synchronous one-row commit returns once the WAL — one sequence — is flushed through it,
//! so through every commit that returned before, before any uplink of those is acknowledged. A
//! commit or barrier error, including a lost connection, fails the batches it covers.
//!
//! **Several nodes.** Nothing here relies on an in-process cache for correctness:
//! - names are unique in the schema, and entities, profiles, customers, groups and keys are
//!   created with `INSERT … ON CONFLICT DO NOTHING` and read back, so nodes creating one name at
//!   once get one row;
//! - a remote record's place `(integration, outbox, seq)` is claimed with `INSERT … ON CONFLICT
//!   DO NOTHING` before its data is written: a copy committed (or being committed) by another
//!   node makes it a duplicate;
//! - `updateOnlyKeys` compares with `ts_kv_latest` / `attribute_kv` inside the transaction, under
//!   a transaction-level advisory lock per (entity name, key), taken in sorted order at the start
//!   of the batch, so two nodes never both store an unchanged value;
//! - the writer's name caches are validated against `entity_epoch`, which every deletion bumps in
//!   its own transaction; deletions take an exclusive advisory lock that the writers' batches
//!   hold shared, so no deletion commits between a batch reading the epoch and its commit.
//!
//! **Time series.** `ts_kv` is partitioned by range of `ts`, one partition per calendar month
//! (UTC), created by the writer when a batch brings a point of a month it has not seen, in a
//! short transaction of its own before the batch's (creating a partition locks the parent table;
//! uplink transactions never hold that lock). A default partition takes points outside
//! 1970–2200, so a device with a wild clock fails nothing and creates no partitions; since months
//! in that range always get their partition before a point of theirs is inserted, the default
//! partition never holds a point a month partition would (which would make creating that
//! partition fail). Monthly partitions make retention a `DROP TABLE` and keep each month's
//! indexes small. `ts_kv_latest` is maintained by the writer in the batch's transaction.

mod config;
pub(crate) mod schema;
mod writer;

use std::collections::HashMap;
use std::sync::Mutex;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use serde_json::Value;
use uuid::Uuid;

use crate::entity_query::{self, Dialect, EntityQuery, EntityRow, Param};
use crate::listing::*;
use crate::model::*;
use crate::{CREDENTIALS_TAKEN, ConfigWatch, EventLog, ExchangeLog, Result, StorageError, Store, UplinkWriter};

pub(crate) use config::error_text;
pub use config::{PgConfig, redact as redact_url};
pub use writer::PgUplinkWriter;

/// The largest page any list returns, whatever the caller asks for (as SQLite's).
const MAX_PAGE_SIZE: u32 = 10_000;

/// Entity queries on PostgreSQL: `ts_kv_latest` holds every series' latest point; text sorts
/// byte-wise, as SQLite's and the entity columns' ("C") do.
const PG_DIALECT: Dialect = Dialect {
    like: "ILIKE ?",
    placeholder: "$",
    latest_points: |key| format!("SELECT entity_id, ts, bool_v, long_v, dbl_v, str_v, json_v FROM ts_kv_latest WHERE key = {key}"),
    number: |alias| format!("coalesce({alias}.long_v::float8, {alias}.dbl_v)"),
    text: |alias| format!("coalesce({alias}.str_v, {alias}.json_v) COLLATE \"C\""),
    position: "strpos",
    as_text: |a| format!("coalesce({a}.str_v, {a}.json_v, {a}.long_v::text, {a}.dbl_v::text, {a}.bool_v::text)"),
};

/// Prepared statements kept per connection.
pub(crate) const MAX_STATEMENTS: usize = 256;
/// Idle connections kept for reads and entity edits.
const POOL_IDLE: usize = 8;
/// Held shared by every uplink batch and exclusively by every deletion of something the
/// writers cache by name (see the module doc).
pub(crate) const DELETION_LOCK: i64 = 0x636f_6170_6465_6c00; // "coapdel\0"
/// A node that has not reported for this long is taken for dead: changes do not wait for it.
/// Nodes report at least every second.
const NODE_LIVENESS_MS: i64 = 3_000;
/// The LISTEN/NOTIFY channel of configuration changes; the payload is the new epoch.
const CONFIG_CHANNEL: &str = "coapgate_config";

/// Fails with NotFound unless the entity exists, holding deletions off until the transaction
/// ends (see `listing::owner_exists_sql`).
fn require_owner(tx: &mut postgres::Transaction<'_>, entity_id: Uuid) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&DELETION_LOCK]).map_err(pg)?;
    let exists: bool = tx.query_one(&crate::listing::owner_exists_sql("$1"), &[&entity_id]).map_err(pg)?.get(0);
    if exists { Ok(()) } else { Err(StorageError::NotFound) }
}

/// A PostgreSQL error as a storage error: unique violations become `Conflict` where the caller
/// names the conflict; everything else carries the server's message.
pub(crate) fn pg(e: postgres::Error) -> StorageError {
    StorageError::Other(format!("database error: {}", config::error_text(&e)))
}

/// ThingsBoard's 400 for a user whose e-mail another user has (the unique index on it).
fn email_taken(e: postgres::Error) -> StorageError {
    if is_unique_violation(&e) { StorageError::Conflict("User with such email already exists!".into()) } else { pg(e) }
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// One connection with its prepared statements, so a statement is parsed once per connection
/// rather than on every call.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    pub(crate) fn open(config: &PgConfig) -> Result<Conn> {
        let mut client = config.config.connect(NoTls).map_err(|e| {
            StorageError::Other(format!(
                "cannot connect to PostgreSQL at {} (database {:?}): {}",
                config.address(),
                config.dbname(),
                config::error_text(&e)
            ))
        })?;
        // Whatever the server's default: a returned COMMIT must be durable.
        client.batch_execute("SET synchronous_commit = on").map_err(pg)?;
        Ok(Conn { client, statements: HashMap::new() })
    }

    /// After an error: whether the connection still answers (the client learns that the
    /// server closed it only some time after a failed write, so `is_closed` is not enough).
    pub(crate) fn usable(&mut self) -> bool {
        !self.client.is_closed() && self.client.is_valid(std::time::Duration::from_secs(2)).is_ok()
    }

    pub(crate) fn prepared(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(sql).map_err(pg)?;
        // Bounded: list queries vary with their filters; a dropped statement is closed on the server.
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let statement = self.prepared(sql)?;
        self.client.query(&statement, params).map_err(pg)
    }

    fn query_opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        let statement = self.prepared(sql)?;
        self.client.query_opt(&statement, params).map_err(pg)
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let statement = self.prepared(sql)?;
        self.client.execute(&statement, params).map_err(pg)
    }
}

pub struct PgStore {
    config: PgConfig,
    tenant_id: Uuid,
    /// Idle connections; a caller takes one and puts it back if it is still open.
    pool: Mutex<Vec<Conn>>,
}

impl Drop for PgStore {
    /// Closes the idle connections on a thread of their own: `postgres::Client` closes its
    /// connection in `drop` with a `block_on` of its own runtime, which panics on a thread that
    /// runs async tasks, and that is where the last handle of the store goes when `serve` stops,
    /// or fails to start after opening the store.
    fn drop(&mut self) {
        let idle = std::mem::take(self.pool.get_mut().unwrap_or_else(|e| e.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:pass@host:port/db`, or `jdbc:postgresql://…` with
    /// `user=`/`password=` in its query), then creates or migrates the schema.
    pub fn connect(url: &str) -> Result<PgStore> {
        PgStore::open(PgConfig::from_url(url)?)
    }

    /// Opens the store on a configuration ([`PgConfig::from_jdbc`] for ThingsBoard's settings).
    pub fn open(config: PgConfig) -> Result<PgStore> {
        let mut conn = Conn::open(&config)?;
        let tenant_id = schema::migrate(&mut conn.client)?;
        Ok(PgStore { config, tenant_id, pool: Mutex::new(vec![conn]) })
    }

    /// The schema version this build migrates to.
    pub fn schema_version() -> i32 {
        schema::MIGRATIONS.last().map_or(0, |(v, _)| *v)
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) if !c.client.is_closed() => c,
            _ => Conn::open(&self.config)?,
        };
        let result = f(&mut conn);
        // A connection the server closed (restart, failover) is dropped with every idle one,
        // which the same event most likely closed too: one call fails, the next connects again.
        // None is left inside a failed transaction: `Transaction` rolls back on drop.
        let broken = conn.client.is_closed() || (result.is_err() && !conn.usable());
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if broken {
            pool.clear();
        } else if pool.len() < POOL_IDLE {
            pool.push(conn);
        }
        result
    }

    /// Runs `f` in a transaction that deletes something the writers cache by name: it waits for
    /// the uplink batches in flight (on every node) and bumps the epoch that makes writers drop
    /// their caches.
    fn deletion<T>(&self, f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>) -> Result<T> {
        self.exclusively(f, |tx| {
            tx.execute("UPDATE entity_epoch SET epoch = epoch + 1 WHERE id = 1", &[]).map_err(pg)?;
            Ok(())
        })
    }

    /// Runs `f`, then `after`, in one transaction holding [`DELETION_LOCK`] exclusively: uplink
    /// batches in flight on every node commit first, and later ones see what this commits.
    fn exclusively<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>,
        after: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<()>,
    ) -> Result<T> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction().map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DELETION_LOCK]).map_err(pg)?;
            let result = f(&mut tx)?;
            after(&mut tx)?;
            tx.commit().map_err(pg)?;
            Ok(result)
        })
    }

    /// Runs `f` in a transaction that changes what every node routes uplinks by (a converter or
    /// an integration). It takes [`DELETION_LOCK`] exclusively: uplink batches in flight on every
    /// node commit first, and later batches see this change (a record converted with an older
    /// converter is then refused as stale and converted again). It bumps `config_epoch` and
    /// notifies every node's watch, which the server delivers at `COMMIT`.
    fn config_change<T>(&self, f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>) -> Result<T> {
        self.exclusively(f, |tx| {
            let epoch: i64 =
                tx.query_one("UPDATE config_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch", &[]).map_err(pg)?.get(0);
            tx.execute("SELECT pg_notify($1, $2)", &[&CONFIG_CHANNEL, &epoch.to_string()]).map_err(pg)?;
            Ok(())
        })
    }

    fn get_one<T>(&self, sql: &str, arg: &(dyn ToSql + Sync), map: impl FnOnce(&Row) -> T) -> Result<Option<T>> {
        self.with_conn(|c| Ok(c.query_opt(sql, &[arg])?.as_ref().map(map)))
    }

    fn page<T>(
        &self,
        listing: &Listing,
        query: &PageQuery,
        extra_filters: Vec<(&str, Box<dyn ToSql + Sync>)>,
        map: impl Fn(&Row) -> T,
    ) -> Result<Page<T>> {
        let mut filters = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        if let Some(search) = query.text_search.as_deref().filter(|s| !s.is_empty()) {
            args.push(Box::new(format!("%{}%", search.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))));
            // ILIKE: SQLite's LIKE ignores ASCII case, and ThingsBoard's search ignores case.
            filters.push(format!("{} ILIKE ${}", listing.search_column, args.len()));
        }
        for (condition, value) in extra_filters {
            args.push(value);
            filters.push(condition.replace('?', &format!("${}", args.len())));
        }
        let where_clause = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sort_column = query
            .sort_property
            .as_deref()
            .and_then(|p| listing.sortable.iter().find(|(property, _)| *property == p))
            .map(|(_, column)| *column)
            .unwrap_or("created_time");
        let order = if query.sort_descending || query.sort_property.is_none() { "DESC" } else { "ASC" };
        // NULL labels sort first ascending, as in SQLite.
        let nulls = if order == "ASC" { "NULLS FIRST" } else { "NULLS LAST" };
        let size = query.page_size.clamp(1, MAX_PAGE_SIZE);
        let (limit, offset) = (i64::from(size), i64::from(query.page) * i64::from(size));
        let (table, columns) = (listing.table, listing.columns);
        let mut params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        self.with_conn(|c| {
            let total: i64 = c.query(&format!("SELECT count(*) FROM {table} {where_clause}"), &params)?[0].get(0);
            let n = params.len();
            let sql = format!(
                "SELECT {columns} FROM {table} {where_clause} ORDER BY {sort_column} {order} {nulls}, id LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            );
            params.extend([&limit as &(dyn ToSql + Sync), &offset]);
            let data = c.query(&sql, &params)?.iter().map(&map).collect();
            // Totals follow the page size actually served, so a clamped request still pages through everything.
            Ok(Page::new(data, total as u64, &PageQuery { page_size: size, ..query.clone() }))
        })
    }

    /// Deletes a device or asset row with its telemetry, attributes and group memberships.
    fn delete_entity(&self, table: &str, id: Uuid) -> Result<bool> {
        self.deletion(|tx| {
            let n = tx.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id]).map_err(pg)?;
            for sql in [
                "DELETE FROM ts_kv WHERE entity_id = $1",
                "DELETE FROM ts_kv_latest WHERE entity_id = $1",
                "DELETE FROM attribute_kv WHERE entity_id = $1",
                "DELETE FROM entity_group_member WHERE entity_id = $1",
                "DELETE FROM device_credentials WHERE device_id = $1",
            ] {
                tx.execute(sql, &[&id]).map_err(pg)?;
            }
            Ok(n > 0)
        })
    }

    /// Inserts or updates a device or asset row; the profile named `fields.entity_type` is
    /// created if missing. Returns the profile's id. Runs as a deletion does: a rename must
    /// make every node's writer drop the old name from its caches.
    fn save_entity(&self, kind: EntityKind, fields: &EntityFields<'_>) -> Result<Uuid> {
        let (table, profile_table, what) = match kind {
            EntityKind::Asset => ("asset", "asset_profile", "Asset"),
            _ => ("device", "device_profile", "Device"),
        };
        self.deletion(|tx| {
            let taken: Option<Uuid> =
                tx.query_opt(&format!("SELECT id FROM {table} WHERE name = $1"), &[&fields.name]).map_err(pg)?.map(|r| r.get(0));
            if taken.is_some_and(|other| other != fields.id) {
                return Err(StorageError::Conflict(format!("{what} with such name already exists!")));
            }
            tx.execute(
                &format!("INSERT INTO {profile_table} (id, created_time, name, is_default) VALUES ($1, $2, $3, false) ON CONFLICT DO NOTHING"),
                &[&Uuid::new_v4(), &crate::now_millis(), &fields.entity_type],
            )
            .map_err(pg)?;
            let profile: Uuid = tx
                .query_one(&format!("SELECT id FROM {profile_table} WHERE name = $1"), &[&fields.entity_type])
                .map_err(pg)?
                .get(0);
            tx.execute(
                &format!(
                    "INSERT INTO {table} (id, created_time, name, type, {profile_table}_id, label, customer_id, integration_id, description) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                     type = excluded.type, {profile_table}_id = excluded.{profile_table}_id, label = excluded.label, \
                     customer_id = excluded.customer_id, description = excluded.description"
                ),
                &[
                    &fields.id,
                    &fields.created_time,
                    &fields.name,
                    &fields.entity_type,
                    &profile,
                    &fields.label,
                    &fields.customer_id,
                    &fields.created_by_integration,
                    &fields.description,
                ],
            )
            .map_err(|e| {
                // Another node took the name between the check and the insert.
                if is_unique_violation(&e) { StorageError::Conflict(format!("{what} with such name already exists!")) } else { pg(e) }
            })?;
            Ok(profile)
        })
    }

    /// Deletes a device or asset profile unless it is the default or still in use.
    fn delete_profile(&self, kind: EntityKind, id: Uuid) -> Result<bool> {
        let (table, users, what) = match kind {
            EntityKind::Asset => ("asset_profile", "asset", "Asset"),
            _ => ("device_profile", "device", "Device"),
        };
        self.deletion(|tx| {
            let Some(row) = tx.query_opt(&format!("SELECT is_default FROM {table} WHERE id = $1"), &[&id]).map_err(pg)? else {
                return Ok(false);
            };
            if row.get::<_, bool>(0) {
                return Err(StorageError::Conflict(format!("Deletion of Default {what} Profile is prohibited!")));
            }
            let used: bool = tx
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {users} WHERE {table}_id = $1)"), &[&id])
                .map_err(pg)?
                .get(0);
            if used {
                return Err(StorageError::Conflict(format!(
                    "The {} profile referenced by the {users}s cannot be deleted!",
                    what.to_ascii_lowercase()
                )));
            }
            Ok(tx.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id]).map_err(pg)? > 0)
        })
    }
}


fn json_text(v: &Value) -> String {
    v.to_string()
}

fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn user_from_row(r: &Row) -> User {
    User {
        id: r.get(0),
        created_time: r.get(1),
        email: r.get(2),
        password_hash: r.get(3),
        authority: r.get(4),
        first_name: r.get(5),
        last_name: r.get(6),
        customer_id: r.get(7),
        enabled: r.get(8),
    }
}

fn converter_from_row(r: &Row) -> Converter {
    Converter {
        id: r.get(0),
        created_time: r.get(1),
        name: r.get(2),
        converter_type: r.get(3),
        integration_type: r.get(4),
        debug_settings: parse_json(r.get(5)),
        configuration: parse_json(r.get(6)),
        additional_info: parse_json(r.get(7)),
        version: r.get(8),
    }
}

fn integration_from_row(r: &Row) -> Integration {
    Integration {
        id: r.get(0),
        created_time: r.get(1),
        name: r.get(2),
        integration_type: r.get(3),
        enabled: r.get(4),
        allow_create_devices_or_assets: r.get(5),
        is_remote: r.get(6),
        debug_settings: parse_json(r.get(7)),
        default_converter_id: r.get(8),
        downlink_converter_id: r.get(9),
        routing_key: r.get(10),
        secret: r.get(11),
        configuration: parse_json(r.get(12)),
        additional_info: parse_json(r.get(13)),
        version: r.get(14),
    }
}

fn device_from_row(r: &Row) -> Device {
    Device {
        id: r.get(0),
        created_time: r.get(1),
        name: r.get(2),
        device_type: r.get(3),
        device_profile_id: r.get(4),
        label: r.get(5),
        customer_id: r.get(6),
        created_by_integration: r.get(7),
        description: r.get(8),
    }
}

fn profile_from_row(r: &Row) -> DeviceProfile {
    DeviceProfile { id: r.get(0), created_time: r.get(1), name: r.get(2), is_default: r.get(3) }
}
fn asset_profile_from_row(r: &Row) -> AssetProfile {
    AssetProfile { id: r.get(0), created_time: r.get(1), name: r.get(2), is_default: r.get(3) }
}

fn asset_from_row(r: &Row) -> Asset {
    Asset {
        id: r.get(0),
        created_time: r.get(1),
        name: r.get(2),
        asset_type: r.get(3),
        asset_profile_id: r.get(4),
        label: r.get(5),
        customer_id: r.get(6),
        created_by_integration: r.get(7),
        description: r.get(8),
    }
}

fn customer_from_row(r: &Row) -> Customer {
    Customer { id: r.get(0), created_time: r.get(1), title: r.get(2) }
}

fn group_from_row(r: &Row) -> EntityGroup {
    let kind: String = r.get(3);
    EntityGroup {
        id: r.get(0),
        created_time: r.get(1),
        name: r.get(2),
        group_type: EntityKind::parse(&kind).unwrap_or(EntityKind::Device),
        owner: owner_from_column(r.get(4)),
    }
}

/// Tenant-owned groups store the nil UUID as owner, so `UNIQUE (type, owner_id, name)` holds for them too.
pub(crate) fn owner_column(owner: Owner) -> Uuid {
    owner.customer_id().unwrap_or(Uuid::nil())
}
fn owner_from_column(id: Uuid) -> Owner {
    if id.is_nil() { Owner::Tenant } else { Owner::Customer(id) }
}

fn member_from_row(kind: EntityKind) -> impl Fn(&Row) -> GroupMember {
    move |r| GroupMember { kind, id: r.get(0), created_time: r.get(1), name: r.get(2), entity_type: r.get(3), label: r.get(4) }
}

/// Deletes an entity's telemetry and attributes (ThingsBoard deletes them with any entity).
fn delete_entity_data(tx: &mut postgres::Transaction<'_>, id: Uuid) -> Result<()> {
    for sql in
        ["DELETE FROM ts_kv WHERE entity_id = $1", "DELETE FROM ts_kv_latest WHERE entity_id = $1", "DELETE FROM attribute_kv WHERE entity_id = $1"]
    {
        tx.execute(sql, &[&id]).map_err(pg)?;
    }
    Ok(())
}

const CREDENTIALS_COLUMNS: &str = "id, created_time, device_id, credentials_type, credentials_id, credentials_value";

fn credentials_from_row(r: &Row) -> DeviceCredentials {
    DeviceCredentials {
        id: r.get(0),
        created_time: r.get(1),
        device_id: r.get(2),
        credentials_type: r.get(3),
        credentials_id: r.get(4),
        credentials_value: r.get(5),
    }
}

/// A token another device holds is the caller's mistake (400), anything else the database's.
fn credentials_error(e: postgres::Error) -> StorageError {
    if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) {
        StorageError::Conflict(CREDENTIALS_TAKEN.into())
    } else {
        pg(e)
    }
}

/// The value columns, in this order, in every table holding typed values.
pub(crate) const VALUE_COLUMNS: &str = "bool_v, long_v, dbl_v, str_v, json_v";

/// Reads the typed value from the five value columns starting at `first`.
pub(crate) fn kv_from_row(r: &Row, first: usize) -> KvValue {
    if let Some(v) = r.get::<_, Option<bool>>(first) {
        return KvValue::Bool(v);
    }
    if let Some(v) = r.get::<_, Option<i64>>(first + 1) {
        return KvValue::Long(v);
    }
    if let Some(v) = r.get::<_, Option<f64>>(first + 2) {
        return KvValue::Double(v);
    }
    if let Some(v) = r.get::<_, Option<String>>(first + 3) {
        return KvValue::Str(v);
    }
    KvValue::Json(r.get::<_, Option<String>>(first + 4).unwrap_or_default())
}

/// A key's dictionary id, added if new (by whichever node first).
fn dictionary_key(tx: &mut postgres::Transaction<'_>, key: &str) -> Result<i32> {
    tx.execute("INSERT INTO key_dictionary (key) VALUES ($1) ON CONFLICT DO NOTHING", &[&key]).map_err(pg)?;
    Ok(tx.query_one("SELECT key_id FROM key_dictionary WHERE key = $1", &[&key]).map_err(pg)?.get(0))
}

/// A typed value as the five value columns (one set, the others NULL).
#[allow(clippy::type_complexity)]
fn value_columns(v: &KvValue) -> (Option<bool>, Option<i64>, Option<f64>, Option<&str>, Option<&str>) {
    match v {
        KvValue::Bool(b) => (Some(*b), None, None, None, None),
        KvValue::Long(l) => (None, Some(*l), None, None, None),
        KvValue::Double(d) => (None, None, Some(*d), None, None),
        KvValue::Str(s) => (None, None, None, Some(s), None),
        KvValue::Json(s) => (None, None, None, None, Some(s)),
    }
}

/// The `type = ?` filter of device and asset lists, when a type is asked for.
fn type_filter(entity_type: Option<&str>) -> Vec<(&'static str, Box<dyn ToSql + Sync>)> {
    entity_type
        .filter(|t| !t.is_empty())
        .map(|t| ("type = ?", Box::new(t.to_string()) as Box<dyn ToSql + Sync>))
        .into_iter()
        .collect()
}

fn exchange_from_row(r: &Row) -> Exchange {
    Exchange { peer: r.get(0), message_id: r.get::<_, i32>(1) as u16, ts: r.get(2), response: r.get(3) }
}

impl EventLog for PgStore {
    fn insert_events(&self, events: &[Event]) -> Result<()> {
        self.with_conn(|c| {
            let statement = c.prepared(
                "INSERT INTO event (id, created_time, entity_type, entity_id, event_type, uid, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            )?;
            let mut tx = c.client.transaction().map_err(pg)?;
            for e in events {
                tx.execute(
                    &statement,
                    &[&e.id, &e.created_time, &e.entity_kind.as_str(), &e.entity_id, &e.event_type, &e.uid, &e.body],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn delete_events_before(&self, ts: Millis) -> Result<u64> {
        self.with_conn(|c| c.execute("DELETE FROM event WHERE created_time < $1", &[&ts]))
    }
}

impl ExchangeLog for PgStore {
    fn recent_exchanges(&self, since: Millis, limit: usize) -> Result<Vec<Exchange>> {
        // Newest first, so only `limit` rows are read; one row per (peer, message id).
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with_conn(|c| {
            c.query(
                "SELECT peer, message_id, ts, response FROM coap_exchange WHERE ts >= $1 ORDER BY ts DESC LIMIT $2",
                &[&since, &limit],
            )
        })?;
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Exchange> =
            rows.iter().map(exchange_from_row).filter(|e| seen.insert((e.peer.clone(), e.message_id))).collect();
        out.reverse();
        Ok(out)
    }

    fn find_exchange(&self, peer: &str, message_id: u16, since: Millis) -> Result<Option<Exchange>> {
        let message_id = i32::from(message_id);
        Ok(self
            .with_conn(|c| {
                c.query_opt(
                    "SELECT peer, message_id, ts, response FROM coap_exchange \
                     WHERE peer = $1 AND message_id = $2 AND ts >= $3 ORDER BY id DESC LIMIT 1",
                    &[&peer, &message_id, &since],
                )
            })?
            .as_ref()
            .map(exchange_from_row))
    }
}

impl Store for PgStore {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }

    fn setting(&self, name: &str) -> Result<Option<String>> {
        self.get_one("SELECT value FROM setting WHERE name = $1", &name, |r| r.get(0))
    }

    fn update_setting(&self, name: &str, change: &mut dyn FnMut(Option<String>) -> String) -> Result<String> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction().map_err(pg)?;
            // The row exists before it is locked, so two nodes' first updates queue too.
            tx.execute("INSERT INTO setting (name, value) VALUES ($1, '') ON CONFLICT (name) DO NOTHING", &[&name]).map_err(pg)?;
            let current: String = tx.query_one("SELECT value FROM setting WHERE name = $1 FOR UPDATE", &[&name]).map_err(pg)?.get(0);
            let value = change(Some(current).filter(|v| !v.is_empty()));
            tx.execute("UPDATE setting SET value = $2 WHERE name = $1", &[&name, &value]).map_err(pg)?;
            tx.commit().map_err(pg)?;
            Ok(value)
        })
    }

    fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO setting (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&name, &value],
            )?;
            Ok(())
        })
    }

    fn user_count(&self) -> Result<u64> {
        self.with_conn(|c| Ok(c.query("SELECT count(*) FROM app_user", &[])?[0].get::<_, i64>(0) as u64))
    }

    fn insert_user(&self, u: &User) -> Result<()> {
        self.with_conn(|c| {
            let statement = c.prepared(&format!("INSERT INTO app_user ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))?;
            c.client
                .execute(
                    &statement,
                    &[&u.id, &u.created_time, &u.email, &u.password_hash, &u.authority, &u.first_name, &u.last_name, &u.customer_id, &u.enabled],
                )
                .map_err(email_taken)?;
            Ok(())
        })
    }

    fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        self.get_one(&format!("SELECT {USER_COLUMNS} FROM app_user WHERE lower(email) = lower($1)"), &email, user_from_row)
    }

    fn user(&self, id: Uuid) -> Result<Option<User>> {
        self.get_one(&format!("SELECT {USER_COLUMNS} FROM app_user WHERE id = $1"), &id, user_from_row)
    }

    fn set_user_password_hash(&self, id: Uuid, password_hash: &str) -> Result<bool> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction().map_err(pg)?;
            let n = tx.execute("UPDATE app_user SET password_hash = $2 WHERE id = $1", &[&id, &password_hash]).map_err(pg)?;
            tx.execute("DELETE FROM user_activation WHERE user_id = $1", &[&id]).map_err(pg)?;
            tx.commit().map_err(pg)?;
            Ok(n > 0)
        })
    }

    fn users(&self, filter: UserFilter, query: &PageQuery) -> Result<Page<User>> {
        let filters: Vec<(&str, Box<dyn ToSql + Sync>)> = match filter {
            UserFilter::All => Vec::new(),
            UserFilter::TenantAdmins => vec![("authority = ?", Box::new("TENANT_ADMIN".to_string()))],
            UserFilter::Customer(customer) => vec![("customer_id = ?", Box::new(customer))],
        };
        self.page(&USERS, query, filters, user_from_row)
    }

    fn update_user(&self, u: &User) -> Result<bool> {
        self.with_conn(|c| {
            let n = c
                .client
                .execute(
                    "UPDATE app_user SET email = $2, first_name = $3, last_name = $4 WHERE id = $1",
                    &[&u.id, &u.email, &u.first_name, &u.last_name],
                )
                .map_err(email_taken)?;
            Ok(n > 0)
        })
    }

    fn set_user_enabled(&self, id: Uuid, enabled: bool) -> Result<bool> {
        self.with_conn(|c| Ok(c.execute("UPDATE app_user SET enabled = $2 WHERE id = $1", &[&id, &enabled])? > 0))
    }

    fn delete_user(&self, id: Uuid) -> Result<bool> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction().map_err(pg)?;
            let n = tx.execute("DELETE FROM app_user WHERE id = $1", &[&id]).map_err(pg)?;
            tx.execute("DELETE FROM user_activation WHERE user_id = $1", &[&id]).map_err(pg)?;
            tx.commit().map_err(pg)?;
            Ok(n > 0)
        })
    }

    fn set_activation_token(&self, user_id: Uuid, token_hash: &str, expires: Millis) -> Result<bool> {
        self.with_conn(|c| {
            // Inserted only while the user exists, in one statement: a user deleted meanwhile
            // leaves no invitation behind.
            let n = c.execute(
                "INSERT INTO user_activation (user_id, token_hash, expires) SELECT id, $2, $3 FROM app_user WHERE id = $1 \
                 ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, expires = excluded.expires",
                &[&user_id, &token_hash, &expires],
            )?;
            Ok(n > 0)
        })
    }

    fn activate_user(&self, token_hash: &str, now: Millis, password_hash: &str) -> Result<Activation> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction().map_err(pg)?;
            // The DELETE is the one step that decides: of two requests with the same token, one
            // deletes the row and the other finds none.
            let taken = tx
                .query_opt("DELETE FROM user_activation WHERE token_hash = $1 AND expires > $2 RETURNING user_id", &[&token_hash, &now])
                .map_err(pg)?;
            let Some(taken) = taken else {
                let expired = tx
                    .query_opt("SELECT 1 FROM user_activation WHERE token_hash = $1", &[&token_hash])
                    .map_err(pg)?
                    .is_some();
                return Ok(if expired { Activation::Expired } else { Activation::Unknown });
            };
            let user_id: Uuid = taken.get(0);
            let user = tx
                .query_opt(
                    &format!("UPDATE app_user SET password_hash = $2 WHERE id = $1 RETURNING {USER_COLUMNS}"),
                    &[&user_id, &password_hash],
                )
                .map_err(pg)?
                .as_ref()
                .map(user_from_row);
            tx.commit().map_err(pg)?;
            Ok(user.map_or(Activation::Unknown, Activation::Activated))
        })
    }

    fn save_converter(&self, v: &Converter) -> Result<()> {
        self.config_change(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO converter ({CONVERTER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, type = excluded.type, \
                     integration_type = excluded.integration_type, debug_settings = excluded.debug_settings, \
                     configuration = excluded.configuration, additional_info = excluded.additional_info, \
                     version = excluded.version"
                ),
                &[
                    &v.id,
                    &v.created_time,
                    &v.name,
                    &v.converter_type,
                    &v.integration_type,
                    &json_text(&v.debug_settings),
                    &json_text(&v.configuration),
                    &json_text(&v.additional_info),
                    &v.version,
                ],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn converter(&self, id: Uuid) -> Result<Option<Converter>> {
        self.get_one(&format!("SELECT {CONVERTER_COLUMNS} FROM converter WHERE id = $1"), &id, converter_from_row)
    }

    fn converters(&self, query: &PageQuery) -> Result<Page<Converter>> {
        self.page(&CONVERTERS, query, Vec::new(), converter_from_row)
    }

    fn delete_converter(&self, id: Uuid) -> Result<bool> {
        self.config_change(|tx| {
            // Locks the converter row first, so an integration saved at the same time on another
            // node either sees it deleted or is seen here.
            tx.execute("SELECT 1 FROM converter WHERE id = $1 FOR UPDATE", &[&id]).map_err(pg)?;
            let users: i64 = tx
                .query_one("SELECT count(*) FROM integration WHERE converter_id = $1 OR downlink_converter_id = $1", &[&id])
                .map_err(pg)?
                .get(0);
            if users > 0 {
                return Err(StorageError::Conflict("The converter referenced by the integration cannot be deleted!".into()));
            }
            let deleted = tx.execute("DELETE FROM converter WHERE id = $1", &[&id]).map_err(pg)? > 0;
            if deleted {
                delete_entity_data(tx, id)?;
            }
            Ok(deleted)
        })
    }

    fn save_integration(&self, v: &Integration) -> Result<()> {
        self.config_change(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO integration ({INTEGRATION_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, type = excluded.type, \
                     enabled = excluded.enabled, allow_create = excluded.allow_create, is_remote = excluded.is_remote, \
                     debug_settings = excluded.debug_settings, converter_id = excluded.converter_id, \
                     downlink_converter_id = excluded.downlink_converter_id, routing_key = excluded.routing_key, \
                     secret = excluded.secret, configuration = excluded.configuration, \
                     additional_info = excluded.additional_info, version = excluded.version"
                ),
                &[
                    &v.id,
                    &v.created_time,
                    &v.name,
                    &v.integration_type,
                    &v.enabled,
                    &v.allow_create_devices_or_assets,
                    &v.is_remote,
                    &json_text(&v.debug_settings),
                    &v.default_converter_id,
                    &v.downlink_converter_id,
                    &v.routing_key,
                    &v.secret,
                    &json_text(&v.configuration),
                    &json_text(&v.additional_info),
                    &v.version,
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StorageError::Conflict("Integration with such routing key already exists!".into())
                } else {
                    pg(e)
                }
            })?;
            Ok(())
        })
    }

    fn integration(&self, id: Uuid) -> Result<Option<Integration>> {
        self.get_one(&format!("SELECT {INTEGRATION_COLUMNS} FROM integration WHERE id = $1"), &id, integration_from_row)
    }

    fn integration_by_routing_key(&self, routing_key: &str) -> Result<Option<Integration>> {
        self.get_one(
            &format!("SELECT {INTEGRATION_COLUMNS} FROM integration WHERE routing_key = $1"),
            &routing_key,
            integration_from_row,
        )
    }

    fn integrations(&self, query: &PageQuery) -> Result<Page<Integration>> {
        self.page(&INTEGRATIONS, query, Vec::new(), integration_from_row)
    }

    fn all_integrations(&self) -> Result<Vec<Integration>> {
        self.with_conn(|c| {
            Ok(c.query(&format!("SELECT {INTEGRATION_COLUMNS} FROM integration"), &[])?.iter().map(integration_from_row).collect())
        })
    }

    fn delete_integration(&self, id: Uuid) -> Result<bool> {
        self.config_change(|tx| {
            // Its remotes' record places go with it: nothing may be sent for it any more.
            tx.execute("DELETE FROM remote_record WHERE integration_id = $1", &[&id]).map_err(pg)?;
            let deleted = tx.execute("DELETE FROM integration WHERE id = $1", &[&id]).map_err(pg)? > 0;
            if deleted {
                delete_entity_data(tx, id)?;
            }
            Ok(deleted)
        })
    }

    fn device(&self, id: Uuid) -> Result<Option<Device>> {
        self.get_one(&format!("SELECT {DEVICE_COLUMNS} FROM device WHERE id = $1"), &id, device_from_row)
    }

    fn device_by_name(&self, name: &str) -> Result<Option<Device>> {
        self.get_one(&format!("SELECT {DEVICE_COLUMNS} FROM device WHERE name = $1"), &name, device_from_row)
    }

    fn devices(&self, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>> {
        self.page(&DEVICES, query, type_filter(device_type), device_from_row)
    }

    fn unassigned_devices(&self, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>> {
        let mut filters = type_filter(device_type);
        filters.push(("customer_id IS NOT DISTINCT FROM ?", Box::new(None::<Uuid>)));
        self.page(&DEVICES, query, filters, device_from_row)
    }

    fn customer_devices(&self, customer_id: Uuid, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>> {
        let mut filters = type_filter(device_type);
        filters.push(("customer_id = ?", Box::new(customer_id)));
        self.page(&DEVICES, query, filters, device_from_row)
    }

    fn delete_device(&self, id: Uuid) -> Result<bool> {
        self.delete_entity("device", id)
    }

    fn device_profile(&self, id: Uuid) -> Result<Option<DeviceProfile>> {
        self.get_one(&format!("SELECT {PROFILE_COLUMNS} FROM device_profile WHERE id = $1"), &id, profile_from_row)
    }

    fn device_credentials(&self, device_id: Uuid) -> Result<Option<DeviceCredentials>> {
        self.get_one(
            &format!("SELECT {CREDENTIALS_COLUMNS} FROM device_credentials WHERE device_id = $1"),
            &device_id,
            credentials_from_row,
        )
    }

    fn ensure_device_credentials(&self, credentials: &DeviceCredentials) -> Result<DeviceCredentials> {
        let c = credentials;
        self.with_conn(|conn| {
            // Inserted by whichever caller comes first (on any node), then read back.
            conn.client
                .execute(
                    &format!(
                        "INSERT INTO device_credentials ({CREDENTIALS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (device_id) DO NOTHING"
                    ),
                    &[&c.id, &c.created_time, &c.device_id, &c.credentials_type, &c.credentials_id, &c.credentials_value],
                )
                .map_err(credentials_error)?;
            Ok(credentials_from_row(
                &conn
                    .client
                    .query_one(&format!("SELECT {CREDENTIALS_COLUMNS} FROM device_credentials WHERE device_id = $1"), &[&c.device_id])
                    .map_err(pg)?,
            ))
        })
    }

    fn save_device_credentials(&self, credentials: &DeviceCredentials) -> Result<DeviceCredentials> {
        let c = credentials;
        self.with_conn(|conn| {
            let row = conn
                .client
                .query_one(
                    &format!(
                        "INSERT INTO device_credentials ({CREDENTIALS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (device_id) DO UPDATE SET credentials_type = excluded.credentials_type, \
                         credentials_id = excluded.credentials_id, credentials_value = excluded.credentials_value \
                         RETURNING {CREDENTIALS_COLUMNS}"
                    ),
                    &[&c.id, &c.created_time, &c.device_id, &c.credentials_type, &c.credentials_id, &c.credentials_value],
                )
                .map_err(credentials_error)?;
            Ok(credentials_from_row(&row))
        })
    }

    fn delete_device_profile(&self, id: Uuid) -> Result<bool> {
        self.delete_profile(EntityKind::Device, id)
    }

    fn device_profiles(&self, query: &PageQuery) -> Result<Page<DeviceProfile>> {
        self.page(&DEVICE_PROFILES, query, Vec::new(), profile_from_row)
    }

    fn asset(&self, id: Uuid) -> Result<Option<Asset>> {
        self.get_one(&format!("SELECT {ASSET_COLUMNS} FROM asset WHERE id = $1"), &id, asset_from_row)
    }

    fn asset_by_name(&self, name: &str) -> Result<Option<Asset>> {
        self.get_one(&format!("SELECT {ASSET_COLUMNS} FROM asset WHERE name = $1"), &name, asset_from_row)
    }

    fn assets(&self, query: &PageQuery, asset_type: Option<&str>) -> Result<Page<Asset>> {
        self.page(&ASSETS, query, type_filter(asset_type), asset_from_row)
    }

    fn customer_assets(&self, customer_id: Uuid, query: &PageQuery, asset_type: Option<&str>) -> Result<Page<Asset>> {
        let mut filters = type_filter(asset_type);
        filters.push(("customer_id = ?", Box::new(customer_id)));
        self.page(&ASSETS, query, filters, asset_from_row)
    }

    fn delete_asset(&self, id: Uuid) -> Result<bool> {
        self.delete_entity("asset", id)
    }

    fn asset_profile(&self, id: Uuid) -> Result<Option<AssetProfile>> {
        self.get_one(&format!("SELECT {PROFILE_COLUMNS} FROM asset_profile WHERE id = $1"), &id, asset_profile_from_row)
    }

    fn asset_profiles(&self, query: &PageQuery) -> Result<Page<AssetProfile>> {
        self.page(&ASSET_PROFILES, query, Vec::new(), asset_profile_from_row)
    }

    fn delete_asset_profile(&self, id: Uuid) -> Result<bool> {
        self.delete_profile(EntityKind::Asset, id)
    }

    fn customer(&self, id: Uuid) -> Result<Option<Customer>> {
        self.get_one(&format!("SELECT {CUSTOMER_COLUMNS} FROM customer WHERE id = $1"), &id, customer_from_row)
    }

    fn customer_by_title(&self, title: &str) -> Result<Option<Customer>> {
        self.get_one(&format!("SELECT {CUSTOMER_COLUMNS} FROM customer WHERE title = $1"), &title, customer_from_row)
    }

    fn customers(&self, query: &PageQuery) -> Result<Page<Customer>> {
        self.page(&CUSTOMERS, query, Vec::new(), customer_from_row)
    }

    fn delete_customer(&self, id: Uuid) -> Result<bool> {
        self.deletion(|tx| {
            let n = tx.execute("DELETE FROM customer WHERE id = $1", &[&id]).map_err(pg)?;
            if n > 0 {
                for sql in [
                    // The customer's own telemetry and attributes (written through the REST API).
                    "DELETE FROM ts_kv WHERE entity_id = $1",
                    "DELETE FROM ts_kv_latest WHERE entity_id = $1",
                    "DELETE FROM attribute_kv WHERE entity_id = $1",
                    "UPDATE device SET customer_id = NULL WHERE customer_id = $1",
                    "UPDATE asset SET customer_id = NULL WHERE customer_id = $1",
                    "DELETE FROM entity_group_member WHERE group_id IN (SELECT id FROM entity_group WHERE owner_id = $1)",
                    "DELETE FROM entity_group WHERE owner_id = $1",
                    "DELETE FROM user_activation WHERE user_id IN (SELECT id FROM app_user WHERE customer_id = $1)",
                    "DELETE FROM app_user WHERE customer_id = $1",
                ] {
                    tx.execute(sql, &[&id]).map_err(pg)?;
                }
            }
            Ok(n > 0)
        })
    }

    fn entity_group(&self, id: Uuid) -> Result<Option<EntityGroup>> {
        self.get_one(&format!("SELECT {GROUP_COLUMNS} FROM entity_group WHERE id = $1"), &id, group_from_row)
    }

    fn entity_groups(&self, group_type: EntityKind, owner: Option<Owner>, query: &PageQuery) -> Result<Page<EntityGroup>> {
        let mut filters: Vec<(&str, Box<dyn ToSql + Sync>)> = vec![("type = ?", Box::new(group_type.as_str().to_string()))];
        if let Some(owner) = owner {
            filters.push(("owner_id = ?", Box::new(owner_column(owner))));
        }
        self.page(&GROUPS, query, filters, group_from_row)
    }

    fn entity_group_by_name(&self, group_type: EntityKind, owner: Owner, name: &str) -> Result<Option<EntityGroup>> {
        self.with_conn(|c| {
            Ok(c.query_opt(
                &format!("SELECT {GROUP_COLUMNS} FROM entity_group WHERE type = $1 AND owner_id = $2 AND name = $3"),
                &[&group_type.as_str(), &owner_column(owner), &name],
            )?
            .as_ref()
            .map(group_from_row))
        })
    }

    fn entity_group_members(&self, group_id: Uuid, query: &PageQuery) -> Result<Page<GroupMember>> {
        let group = self.entity_group(group_id)?.ok_or(StorageError::NotFound)?;
        let listing = match group.group_type {
            EntityKind::Asset => &ASSET_MEMBERS,
            _ => &DEVICE_MEMBERS,
        };
        let filter: (&str, Box<dyn ToSql + Sync>) =
            ("id IN (SELECT entity_id FROM entity_group_member WHERE group_id = ?)", Box::new(group_id));
        self.page(listing, query, vec![filter], member_from_row(group.group_type))
    }

    fn groups_of_entity(&self, entity_id: Uuid) -> Result<Vec<Uuid>> {
        self.with_conn(|c| {
            Ok(c.query("SELECT group_id FROM entity_group_member WHERE entity_id = $1 ORDER BY group_id", &[&entity_id])?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn delete_entity_group(&self, id: Uuid) -> Result<bool> {
        self.deletion(|tx| {
            let n = tx.execute("DELETE FROM entity_group WHERE id = $1", &[&id]).map_err(pg)?;
            tx.execute("DELETE FROM entity_group_member WHERE group_id = $1", &[&id]).map_err(pg)?;
            Ok(n > 0)
        })
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
        const TAKEN: &str = "Customer with such title already exists!";
        self.deletion(|tx| {
            let taken: Option<Uuid> =
                tx.query_opt("SELECT id FROM customer WHERE title = $1", &[&customer.title]).map_err(pg)?.map(|r| r.get(0));
            if taken.is_some_and(|other| other != customer.id) {
                return Err(StorageError::Conflict(TAKEN.into()));
            }
            tx.execute(
                "INSERT INTO customer (id, created_time, title) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET title = excluded.title",
                &[&customer.id, &customer.created_time, &customer.title],
            )
            .map_err(|e| if is_unique_violation(&e) { StorageError::Conflict(TAKEN.into()) } else { pg(e) })?;
            Ok(())
        })
    }

    fn save_attributes(&self, entity_id: Uuid, scope: &str, ts: Millis, values: &[(String, KvValue)]) -> Result<()> {
        self.with_conn(|c| {
            let mut tx = c.client.transaction().map_err(pg)?;
            require_owner(&mut tx, entity_id)?;
            for (key, value) in values {
                let key_id = dictionary_key(&mut tx, key)?;
                let (b, l, d, s, j) = value_columns(value);
                tx.execute(
                    "INSERT INTO attribute_kv (entity_id, scope, key, last_update_ts, bool_v, long_v, dbl_v, str_v, json_v) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (entity_id, scope, key) DO UPDATE SET \
                     last_update_ts = excluded.last_update_ts, bool_v = excluded.bool_v, long_v = excluded.long_v, \
                     dbl_v = excluded.dbl_v, str_v = excluded.str_v, json_v = excluded.json_v",
                    &[&entity_id, &scope, &key_id, &ts, &b, &l, &d, &s, &j],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }

    fn save_timeseries(&self, entity_id: Uuid, points: &[(Millis, Vec<(String, KvValue)>)]) -> Result<()> {
        let mut months: Vec<i64> = points.iter().filter_map(|(ts, _)| schema::partition_month(*ts)).collect();
        months.sort_unstable();
        months.dedup();
        self.with_conn(|c| {
            // Partitions first, in their own transaction, as the uplink writers make them.
            schema::create_partitions(&mut c.client, &months)?;
            let mut tx = c.client.transaction().map_err(pg)?;
            require_owner(&mut tx, entity_id)?;
            for (ts, values) in points {
                for (key, value) in values {
                    let key_id = dictionary_key(&mut tx, key)?;
                    let (b, l, d, s, j) = value_columns(value);
                    let params: [&(dyn ToSql + Sync); 8] = [&entity_id, &key_id, ts, &b, &l, &d, &s, &j];
                    tx.execute(
                        "INSERT INTO ts_kv (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (entity_id, key, ts) DO UPDATE SET \
                         bool_v = excluded.bool_v, long_v = excluded.long_v, dbl_v = excluded.dbl_v, \
                         str_v = excluded.str_v, json_v = excluded.json_v",
                        &params,
                    )
                    .map_err(pg)?;
                    tx.execute(
                        "INSERT INTO ts_kv_latest (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (entity_id, key) DO UPDATE SET ts = excluded.ts, \
                         bool_v = excluded.bool_v, long_v = excluded.long_v, dbl_v = excluded.dbl_v, \
                         str_v = excluded.str_v, json_v = excluded.json_v WHERE excluded.ts >= ts_kv_latest.ts",
                        &params,
                    )
                    .map_err(pg)?;
                }
            }
            tx.commit().map_err(pg)
        })
    }

    fn delete_attributes(&self, entity_id: Uuid, scope: &str, keys: &[String]) -> Result<()> {
        // As a deletion: every node's writers drop what they cached for `updateOnlyKeys`.
        self.deletion(|tx| {
            tx.execute(
                "DELETE FROM attribute_kv WHERE entity_id = $1 AND scope = $2 \
                 AND key IN (SELECT key_id FROM key_dictionary WHERE key = ANY($3))",
                &[&entity_id, &scope, &keys],
            )
            .map_err(pg)?;
            Ok(())
        })
    }

    fn delete_timeseries(&self, entity_id: Uuid, deletion: &TimeseriesDeletion) -> Result<()> {
        let TimeseriesDeletion { keys, start_ts, end_ts, delete_latest, rewrite_latest } = deletion;
        self.deletion(|tx| {
            let key_ids: Vec<i32> = tx
                .query("SELECT key_id FROM key_dictionary WHERE key = ANY($1)", &[&keys])
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for key_id in key_ids {
                tx.execute(
                    "DELETE FROM ts_kv WHERE entity_id = $1 AND key = $2 AND ts >= $3 AND ts < $4",
                    &[&entity_id, &key_id, start_ts, end_ts],
                )
                .map_err(pg)?;
                if !delete_latest {
                    continue;
                }
                let removed = tx
                    .execute(
                        "DELETE FROM ts_kv_latest WHERE entity_id = $1 AND key = $2 AND ts >= $3 AND ts < $4",
                        &[&entity_id, &key_id, start_ts, end_ts],
                    )
                    .map_err(pg)?;
                if removed > 0 && *rewrite_latest {
                    tx.execute(
                        &format!(
                            "INSERT INTO ts_kv_latest (entity_id, key, ts, {VALUE_COLUMNS}) \
                             SELECT entity_id, key, ts, {VALUE_COLUMNS} FROM ts_kv \
                             WHERE entity_id = $1 AND key = $2 AND ts < $3 ORDER BY ts DESC LIMIT 1"
                        ),
                        &[&entity_id, &key_id, start_ts],
                    )
                    .map_err(pg)?;
                }
            }
            Ok(())
        })
    }

    fn timeseries_keys(&self, entity_id: Uuid) -> Result<Vec<String>> {
        self.with_conn(|c| {
            Ok(c.query(
                "SELECT d.key FROM ts_kv_latest l JOIN key_dictionary d ON d.key_id = l.key WHERE l.entity_id = $1 ORDER BY d.key",
                &[&entity_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn latest_timeseries(&self, entity_id: Uuid, keys: Option<&[String]>) -> Result<Vec<(String, TsValue)>> {
        let rows: Vec<(String, TsValue)> = self.with_conn(|c| {
            Ok(c.query(
                &format!(
                    "SELECT d.key, l.ts, {VALUE_COLUMNS} FROM ts_kv_latest l JOIN key_dictionary d ON d.key_id = l.key \
                     WHERE l.entity_id = $1 ORDER BY d.key"
                ),
                &[&entity_id],
            )?
            .iter()
            .map(|r| (r.get(0), TsValue { ts: r.get(1), value: kv_from_row(r, 2) }))
            .collect())
        })?;
        Ok(match keys {
            None => rows,
            Some(keys) => keys.iter().filter_map(|k| rows.iter().find(|(name, _)| name == k).cloned()).collect(),
        })
    }

    fn timeseries_history(&self, entity_id: Uuid, query: &HistoryQuery) -> Result<Vec<(String, Vec<TsValue>)>> {
        let order = if query.descending { "DESC" } else { "ASC" };
        let limit = i64::from(query.limit);
        self.with_conn(|c| {
            let known: HashMap<String, i32> = c
                .query("SELECT key, key_id FROM key_dictionary WHERE key = ANY($1)", &[&query.keys])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let sql = format!(
                "SELECT ts, {VALUE_COLUMNS} FROM ts_kv WHERE entity_id = $1 AND key = $2 AND ts >= $3 AND ts <= $4 \
                 ORDER BY ts {order} LIMIT $5"
            );
            let mut out = Vec::new();
            for key in &query.keys {
                let Some(key_id) = known.get(key) else { continue };
                let points: Vec<TsValue> = c
                    .query(&sql, &[&entity_id, key_id, &query.start_ts, &query.end_ts, &limit])?
                    .iter()
                    .map(|r| TsValue { ts: r.get(0), value: kv_from_row(r, 1) })
                    .collect();
                if !points.is_empty() {
                    out.push((key.clone(), points));
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
        let rows: Vec<(String, AttributeValue)> = self.with_conn(|c| {
            Ok(c.query(
                "SELECT a.scope, d.key, a.last_update_ts, a.bool_v, a.long_v, a.dbl_v, a.str_v, a.json_v \
                 FROM attribute_kv a JOIN key_dictionary d ON d.key_id = a.key \
                 WHERE a.entity_id = $1 AND ($2::text IS NULL OR a.scope = $2) ORDER BY a.scope COLLATE \"C\", d.key",
                &[&entity_id, &scope],
            )?
            .iter()
            .map(|r| (r.get(0), AttributeValue { key: r.get(1), last_update_ts: r.get(2), value: kv_from_row(r, 3) }))
            .collect())
        })?;
        Ok(match keys {
            None => rows,
            Some(keys) => rows.into_iter().filter(|(_, a)| keys.contains(&a.key)).collect(),
        })
    }

    fn query_entities(&self, query: &EntityQuery) -> Result<Page<EntityRow>> {
        let (built, size) = entity_query::build(&PG_DIALECT, query, MAX_PAGE_SIZE);
        let kind = query.filter.kind();
        let bind = |params: &[Param]| -> Vec<Box<dyn ToSql + Sync>> {
            params
                .iter()
                .map(|p| -> Box<dyn ToSql + Sync> {
                    match p {
                        Param::Text(t) => Box::new(t.clone()),
                        Param::Uuid(id) => Box::new(*id),
                        Param::Number(n) => Box::new(*n),
                    }
                })
                .collect()
        };
        let (count_args, page_args) = (bind(&built.count_params), bind(&built.page_params));
        self.with_conn(|c| {
            // One snapshot for the total and the page.
            let mut tx = c.client.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).read_only(true).start().map_err(pg)?;
            let count_refs: Vec<&(dyn ToSql + Sync)> = count_args.iter().map(|a| a.as_ref()).collect();
            let total: i64 = tx.query_one(&built.count_sql, &count_refs).map_err(pg)?.get(0);
            let page_refs: Vec<&(dyn ToSql + Sync)> = page_args.iter().map(|a| a.as_ref()).collect();
            let data = tx
                .query(&built.page_sql, &page_refs)
                .map_err(pg)?
                .iter()
                .map(|r| EntityRow {
                    kind,
                    id: r.get(0),
                    created_time: r.get(1),
                    name: r.get(2),
                    entity_type: r.get(3),
                    label: r.get(4),
                    customer_id: r.get(5),
                })
                .collect();
            tx.commit().map_err(pg)?;
            Ok(Page::new(data, total as u64, &PageQuery { page_size: size, page: query.page, ..PageQuery::default() }))
        })
    }

    fn events(&self, query: &EventQuery) -> Result<Page<Event>> {
        let mut filters = vec!["entity_id = $1".to_string(), "event_type = $2".to_string()];
        let mut args: Vec<Box<dyn ToSql + Sync>> = vec![Box::new(query.entity_id), Box::new(query.event_type.clone())];
        if let Some(start) = query.start_time {
            args.push(Box::new(start));
            filters.push(format!("created_time >= ${}", args.len()));
        }
        if let Some(end) = query.end_time {
            args.push(Box::new(end));
            filters.push(format!("created_time <= ${}", args.len()));
        }
        for (field, value) in &query.body_equals {
            args.push(Box::new(field.clone()));
            args.push(Box::new(value.clone()));
            filters.push(format!("body ->> ${} = ${}", args.len() - 1, args.len()));
        }
        if let Some(text) = query.error_contains.as_deref().filter(|t| !t.is_empty()) {
            args.push(Box::new(format!("%{}%", text.replace(['%', '_', '\\'], ""))));
            filters.push(format!("body ->> 'error' ILIKE ${}", args.len()));
        }
        match query.has_error {
            Some(true) => filters.push("coalesce(body ->> 'error', '') <> ''".into()),
            Some(false) => filters.push("coalesce(body ->> 'error', '') = ''".into()),
            None => {}
        }
        let where_clause = filters.join(" AND ");
        let order = if query.page.sort_property.is_some() && !query.page.sort_descending { "ASC" } else { "DESC" };
        let size = query.page.page_size.clamp(1, MAX_PAGE_SIZE);
        let (limit, offset) = (i64::from(size), i64::from(query.page.page) * i64::from(size));
        let mut params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        self.with_conn(|c| {
            let total: i64 = c.query(&format!("SELECT count(*) FROM event WHERE {where_clause}"), &params)?[0].get(0);
            let n = params.len();
            params.extend([&limit as &(dyn ToSql + Sync), &offset]);
            let data = c
                .query(
                    &format!(
                        "SELECT id, created_time, entity_type, entity_id, event_type, uid, body FROM event \
                         WHERE {where_clause} ORDER BY created_time {order}, seq {order} LIMIT ${} OFFSET ${}",
                        n + 1,
                        n + 2
                    ),
                    &params,
                )?
                .iter()
                .map(|r| Event {
                    id: r.get(0),
                    created_time: r.get(1),
                    entity_kind: EntityKind::parse(r.get::<_, &str>(2)).unwrap_or(EntityKind::Integration),
                    entity_id: r.get(3),
                    event_type: r.get(4),
                    uid: r.get(5),
                    body: r.get(6),
                })
                .collect();
            let clamped = PageQuery { page_size: size, ..query.page.clone() };
            Ok(Page::new(data, total as u64, &clamped))
        })
    }

    fn delete_events_of(&self, entity_id: Uuid) -> Result<u64> {
        self.with_conn(|c| c.execute("DELETE FROM event WHERE entity_id = $1", &[&entity_id]))
    }

    fn forget_remote_records(&self, integration_id: Uuid, outbox: Uuid, below: u64) -> Result<u64> {
        let below = i64::try_from(below).unwrap_or(i64::MAX);
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM remote_record WHERE integration_id = $1 AND outbox_id = $2 AND seq < $3",
                &[&integration_id, &outbox, &below],
            )
        })
    }

    fn shared_by_nodes(&self) -> bool {
        true
    }

    /// Two: while one batch's statements wait for the server, the next is written (measured
    /// on the seed uplink, BENCHMARKS.md). Batches of one device may then commit out of
    /// arrival order, as on two nodes: latest values and attributes keep the newest timestamp,
    /// and `updateOnlyKeys` compares under its locks.
    fn parallel_writers(&self) -> usize {
        2
    }

    fn config_watch(&self) -> Result<Option<Box<dyn ConfigWatch>>> {
        Ok(Some(Box::new(PgConfigWatch { config: self.config.clone(), conn: None, node: Uuid::new_v4() })))
    }

    fn live_channel(&self) -> Result<Option<Box<dyn crate::LiveChannel>>> {
        Ok(Some(Box::new(PgLiveChannel { config: self.config.clone(), conn: None })))
    }

    fn await_config_applied(&self, within: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + within;
        self.with_conn(|c| {
            let epoch: i64 = c.query_opt("SELECT epoch FROM config_epoch WHERE id = 1", &[])?.map_or(0, |r| r.get(0));
            loop {
                let live_since = crate::now_millis() - NODE_LIVENESS_MS;
                let behind: i64 = c
                    .query_opt("SELECT count(*) FROM cluster_node WHERE seen >= $1 AND applied_epoch < $2", &[&live_since, &epoch])?
                    .map_or(0, |r| r.get(0));
                if behind == 0 {
                    return Ok(true);
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    }

    fn uplink_writer(&self) -> Result<Box<dyn UplinkWriter>> {
        Ok(Box::new(PgUplinkWriter::open(&self.config)?))
    }
}

/// What nodes tell each other for live subscriptions (`LiveChannel`).
const LIVE_CHANNEL: &str = "coapgate_live";

/// A connection of its own, opened on first use and again after a loss; the receiving end
/// `LISTEN`s on [`LIVE_CHANNEL`].
struct PgLiveChannel {
    config: PgConfig,
    conn: Option<Conn>,
}

impl PgLiveChannel {
    fn conn(&mut self, listen: bool) -> Result<&mut Conn> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            let mut conn = Conn::open(&self.config)?;
            if listen {
                conn.client.batch_execute(&format!("LISTEN {LIVE_CHANNEL}")).map_err(pg)?;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }
}

impl crate::LiveChannel for PgLiveChannel {
    fn send(&mut self, payloads: &[String]) -> Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        let conn = self.conn(false)?;
        // Autocommit: each statement's notifications go out when it ends, in one round trip.
        let result = conn
            .client
            .execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", &[&LIVE_CHANNEL, &payloads]);
        result.map(|_| ()).map_err(|e| {
            self.conn = None;
            pg(e)
        })
    }

    fn receive(&mut self, timeout: std::time::Duration) -> Result<Vec<String>> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut out = Vec::new();
        let result = {
            let conn = self.conn(true)?;
            let mut notifications = conn.client.notifications();
            let first = notifications.timeout_iter(timeout).next();
            first.and_then(|first| {
                if let Some(n) = first {
                    out.push(n.payload().to_string());
                    let mut rest = notifications.iter();
                    while let Some(n) = rest.next()? {
                        out.push(n.payload().to_string());
                    }
                }
                Ok(())
            })
        };
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.conn = None;
                Err(pg(e))
            }
        }
    }
}

/// A connection of its own that `LISTEN`s on [`CONFIG_CHANNEL`], reopened after a loss.
struct PgConfigWatch {
    config: PgConfig,
    conn: Option<Conn>,
    /// This process's row in `cluster_node`.
    node: Uuid,
}

impl ConfigWatch for PgConfigWatch {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<i64> {
        use postgres::fallible_iterator::FallibleIterator;
        let result = match &mut self.conn {
            Some(conn) if !conn.client.is_closed() => {
                let mut notifications = conn.client.notifications();
                // One notification ends the wait; the others already queued are the same news.
                let first = notifications.timeout_iter(timeout).next().map(|_| ());
                first.and_then(|()| notifications.iter().count().map(|_| ()))
            }
            _ => {
                // Listening again: what was notified meanwhile shows in the epoch read below.
                let mut conn = Conn::open(&self.config)?;
                conn.client.batch_execute(&format!("LISTEN {CONFIG_CHANNEL}")).map_err(pg)?;
                self.conn = Some(conn);
                Ok(())
            }
        };
        let conn = self.conn.as_mut().expect("opened above");
        let epoch = result.and_then(|()| conn.client.query_one("SELECT epoch FROM config_epoch WHERE id = 1", &[]));
        match epoch {
            Ok(row) => Ok(row.get(0)),
            Err(e) => {
                self.conn = None;
                Err(pg(e))
            }
        }
    }

    fn report(&mut self, epoch: i64) -> Result<()> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let now = crate::now_millis();
        let result = conn
            .client
            .execute(
                "INSERT INTO cluster_node (id, applied_epoch, seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET applied_epoch = excluded.applied_epoch, seen = excluded.seen",
                &[&self.node, &epoch, &now],
            )
            // Rows of nodes gone for a day are of no use to anyone.
            .and_then(|_| conn.client.execute("DELETE FROM cluster_node WHERE seen < $1", &[&(now - 86_400_000)]));
        result.map(|_| ()).map_err(|e| {
            self.conn = None;
            pg(e)
        })
    }
}
