//! The group-commit uplink writer on PostgreSQL: one transaction per batch.
//!
//! A batch runs in this order, each step a statement or a few:
//! 1. partitions for months not seen before (own transaction, see `schema::create_partitions`);
//! 2. `BEGIN`; the deletion lock, shared; `entity_epoch` (caches dropped if it moved);
//! 3. advisory locks, in one sorted order: the (entity name, key) pairs under `updateOnlyKeys`,
//!    and every name the batch may create (entities not cached, their profiles, customers and
//!    groups), so batches creating the same new names on several nodes queue instead of
//!    deadlocking;
//! 4. the stored versions of the batch's converters: a record made with an older one is refused
//!    as stale (the caller converts it again);
//! 5. the CoAP exchanges' (peer, Message ID) claimed, sorted: a key another node (or an earlier
//!    batch) committed makes the record a duplicate answered with the stored response;
//! 6. keys of the batch into `key_dictionary`, sorted (so two nodes never wait on each other's
//!    new keys in opposite orders), and the ids of every entity name not cached, in one query
//!    per kind;
//! 7. per record, in order: its remote place claimed, its entities resolved (a rejection writes
//!    nothing and gives the place or exchange back), created where missing, its values compared
//!    for `updateOnlyKeys` and collected;
//! 8. the collected points, latest values and attributes, one statement each, rows sorted by key
//!    (a fixed lock order across nodes); `COMMIT`.
//!
//! A deadlock or serialization failure (which the fixed lock order should leave to
//! rare cases) rolls the batch back and runs it again after a short random pause, a few times;
//! any other error fails the batch.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Statement, Transaction};
use uuid::Uuid;

use super::{Conn, DELETION_LOCK, PgConfig, owner_column, pg, schema};
use crate::model::*;
use crate::{Result, UplinkWriter, now_millis};

/// How long a stored exchange is remembered: CoAP's EXCHANGE_LIFETIME (RFC 7252 §4.8.2).
const EXCHANGE_LIFETIME_MS: Millis = 247_000;
/// Most expired exchanges deleted at once, so upkeep pauses stay short.
const EXCHANGE_SLICE: i64 = 10_000;
/// How often the writer looks for expired exchanges while it is not behind.
const EXCHANGE_CHECK: Duration = Duration::from_millis(100);
/// How often a batch that met a deadlock is run again before it fails.
const ATTEMPTS: usize = 5;

type Outcomes = Vec<std::result::Result<UplinkOutcome, UplinkRejection>>;

pub struct PgUplinkWriter {
    config: PgConfig,
    conn: Conn,
    cache: Cache,
    /// Months whose `ts_kv` partition exists (created by any node; partitions are never dropped
    /// by coapgate, so this only grows).
    partitions: HashSet<i64>,
    last_exchange_cleanup: Instant,
    exchanges_behind: bool,
    /// The last call failed on a connection that no longer answers: reconnect before the next.
    broken: bool,
    /// Durability is split off (`split_durability`): commits run with `synchronous_commit=off`
    /// and a [`PgBarrier`] makes them durable.
    split: bool,
}

/// Name → id maps, committed. Valid while `entity_epoch` equals `epoch` (see the module doc of
/// `postgres`); keys are never deleted, so key ids stay valid for good.
#[derive(Default)]
struct Cache {
    epoch: Option<i64>,
    names: Names,
    keys: HashMap<String, i32>,
}

#[derive(Default)]
struct Names {
    devices: HashMap<String, Uuid>,
    assets: HashMap<String, Uuid>,
    device_profiles: HashMap<String, Uuid>,
    asset_profiles: HashMap<String, Uuid>,
    customers: HashMap<String, Uuid>,
    groups: HashMap<(EntityKind, Owner, String), Uuid>,
}

impl Names {
    fn entities(&mut self, kind: EntityKind) -> &mut HashMap<String, Uuid> {
        if kind == EntityKind::Asset { &mut self.assets } else { &mut self.devices }
    }

    fn profiles(&mut self, kind: EntityKind) -> &mut HashMap<String, Uuid> {
        if kind == EntityKind::Asset { &mut self.asset_profiles } else { &mut self.device_profiles }
    }

    fn extend(&mut self, other: Names) {
        self.devices.extend(other.devices);
        self.assets.extend(other.assets);
        self.device_profiles.extend(other.device_profiles);
        self.asset_profiles.extend(other.asset_profiles);
        self.customers.extend(other.customers);
        self.groups.extend(other.groups);
    }
}

/// What one batch has written so far, merged into the caches only after `COMMIT`.
#[derive(Default)]
struct Batch {
    names: Names,
    keys: HashMap<String, i32>,
    /// Points by (entity, key, ts): a later write of the same timestamp wins, as in SQLite.
    points: HashMap<(Uuid, i32, Millis), KvValue>,
    /// The newest point written per (entity, key): ts_kv_latest's new rows.
    newest: HashMap<(Uuid, i32), (Millis, KvValue)>,
    /// ts_kv_latest as the transaction found it, for the keys compared so far.
    stored_latest: HashMap<(Uuid, i32), Option<(Millis, KvValue)>>,
    /// Client attributes written: (entity, key) → (last_update_ts, value).
    attributes: HashMap<(Uuid, i32), (Millis, KvValue)>,
}

fn table_of(kind: EntityKind) -> (&'static str, &'static str) {
    if kind == EntityKind::Asset { ("asset", "asset_profile") } else { ("device", "device_profile") }
}

/// A stable 64-bit hash (FNV-1a) for advisory lock keys: the same on every node and build.
fn lock_key(kind: EntityKind, name: &str, key: &str) -> i64 {
    lock_key_of(&[kind.as_str().as_bytes(), b"\0", name.as_bytes(), b"\0", key.as_bytes()])
}

fn lock_key_of(parts: &[&[u8]]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash as i64
}

/// The advisory lock key of a name a batch may create (see `try_commit`).
fn name_lock(kind: &str, name: &str) -> i64 {
    lock_key_of(&[b"name\0", kind.as_bytes(), b"\0", name.as_bytes()])
}

/// The statement for `sql` on this connection, prepared once.
fn statement(tx: &mut Transaction<'_>, statements: &mut HashMap<String, Statement>, sql: &str) -> std::result::Result<Statement, postgres::Error> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let s = tx.prepare(sql)?;
    if statements.len() >= super::MAX_STATEMENTS {
        statements.clear();
    }
    statements.insert(sql.to_string(), s.clone());
    Ok(s)
}

type KvArrays = (Vec<Option<bool>>, Vec<Option<i64>>, Vec<Option<f64>>, Vec<Option<String>>, Vec<Option<String>>);

fn push_value(arrays: &mut KvArrays, value: &KvValue) {
    let (b, l, d, s, j) = arrays;
    b.push(if let KvValue::Bool(v) = value { Some(*v) } else { None });
    l.push(if let KvValue::Long(v) = value { Some(*v) } else { None });
    d.push(if let KvValue::Double(v) = value { Some(*v) } else { None });
    s.push(if let KvValue::Str(v) = value { Some(v.clone()) } else { None });
    j.push(if let KvValue::Json(v) = value { Some(v.clone()) } else { None });
}

impl PgUplinkWriter {
    pub(crate) fn open(config: &PgConfig) -> Result<PgUplinkWriter> {
        Ok(PgUplinkWriter {
            config: config.clone(),
            conn: Conn::open(config)?,
            cache: Cache::default(),
            partitions: HashSet::new(),
            last_exchange_cleanup: Instant::now(),
            exchanges_behind: false,
            broken: false,
            split: false,
        })
    }

    /// A connection the server closed is replaced before the next batch (the batch that met
    /// the loss failed).
    fn reconnect_if_closed(&mut self) -> Result<()> {
        if self.broken || self.conn.client.is_closed() {
            self.conn = Conn::open(&self.config)?;
            if self.split {
                self.conn.client.batch_execute("SET synchronous_commit = off").map_err(pg)?;
            }
            self.broken = false;
        }
        Ok(())
    }

    /// Marks the connection for replacement when a failed call left it unusable.
    fn checked<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() && !self.conn.usable() {
            self.broken = true;
        }
        result
    }

    fn try_commit(&mut self, batch: &[UplinkRecord]) -> std::result::Result<Outcomes, postgres::Error> {
        let Conn { client, statements } = &mut self.conn;
        let cache = &mut self.cache;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&DELETION_LOCK])?;
        // A statement of its own, after the lock: its snapshot sees every deletion and every
        // converter save committed. One round trip for the epoch and the converters' versions.
        let (epoch, current) = epoch_and_versions(&mut tx, statements, batch)?;
        if cache.epoch != Some(epoch) {
            cache.names = Names::default();
            cache.epoch = Some(epoch);
        }

        let mut locks: Vec<i64> = Vec::new();
        let mut new_keys: Vec<String> = Vec::new();
        let mut unknown: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for record in batch {
            for update in &record.entities {
                let keys = update.telemetry.iter().flat_map(|(_, values)| values.iter().map(|(k, _)| k)).chain(update.attributes.iter().map(|(k, _)| k));
                for key in keys {
                    if record.update_only_keys.iter().any(|k| k == key) {
                        locks.push(lock_key(update.kind, &update.name, key));
                    }
                    if !cache.keys.contains_key(key) {
                        new_keys.push(key.clone());
                    }
                }
                if !cache.names.entities(update.kind).contains_key(&update.name) {
                    unknown[usize::from(update.kind == EntityKind::Asset)].push(update.name.clone());
                    // The batch may create this name and the profile, customer and group it
                    // names: locked in the same sorted order on every node, so two batches
                    // creating overlapping new names never wait on each other in a cycle.
                    locks.push(name_lock(update.kind.as_str(), &update.name));
                    if !cache.names.profiles(update.kind).contains_key(&update.entity_type) {
                        locks.push(name_lock("profile", &update.entity_type));
                    }
                    if let Some(customer) = update.customer_name.as_deref().filter(|c| !cache.names.customers.contains_key(*c)) {
                        locks.push(name_lock("customer", customer));
                    }
                    if let Some(group) = update.group_name.as_deref() {
                        locks.push(name_lock("group", group));
                    }
                }
            }
        }
        if !locks.is_empty() {
            locks.sort_unstable();
            locks.dedup();
            tx.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k", &[&locks])?;
        }
        let mut pending = Batch::default();
        let stale: Vec<bool> = batch
            .iter()
            .map(|r| r.converter.is_some_and(|c| current.get(&c.id).is_none_or(|stored| *stored > c.version)))
            .collect();
        let replays = claim_exchanges(&mut tx, statements, batch, &stale)?;
        if !new_keys.is_empty() {
            new_keys.sort_unstable();
            new_keys.dedup();
            let insert = statement(&mut tx, statements, "INSERT INTO key_dictionary (key) SELECT k FROM unnest($1::text[]) AS k ON CONFLICT DO NOTHING")?;
            tx.execute(&insert, &[&new_keys])?;
            let select = statement(&mut tx, statements, "SELECT key, key_id FROM key_dictionary WHERE key = ANY($1)")?;
            for row in tx.query(&select, &[&new_keys])? {
                pending.keys.insert(row.get(0), row.get(1));
            }
        }
        for (kind, names) in [(EntityKind::Device, &unknown[0]), (EntityKind::Asset, &unknown[1])] {
            if names.is_empty() {
                continue;
            }
            let (table, _) = table_of(kind);
            let select = statement(&mut tx, statements, &format!("SELECT name, id FROM {table} WHERE name = ANY($1)"))?;
            // Committed by someone, and no deletion can commit before this batch does: safe to
            // cache at once.
            for row in tx.query(&select, &[names])? {
                cache.names.entities(kind).insert(row.get(0), row.get(1));
            }
        }

        let mut writer = BatchWriter { tx: &mut tx, statements, cache, pending: &mut pending };
        let mut results = Vec::with_capacity(batch.len());
        for ((record, stale), replay) in batch.iter().zip(stale).zip(replays) {
            results.push(if stale {
                Err(UplinkRejection::StaleConverter)
            } else if let Some(response) = replay {
                Ok(UplinkOutcome { duplicate: true, replay: Some(response), ..UplinkOutcome::default() })
            } else {
                writer.record(record)?
            });
        }
        writer.flush()?;
        tx.commit()?;
        self.cache.names.extend(std::mem::take(&mut pending.names));
        self.cache.keys.extend(std::mem::take(&mut pending.keys));
        Ok(results)
    }
}

/// One batch's transaction with the writer's caches.
struct BatchWriter<'a, 't> {
    tx: &'a mut Transaction<'t>,
    statements: &'a mut HashMap<String, Statement>,
    cache: &'a mut Cache,
    pending: &'a mut Batch,
}

impl BatchWriter<'_, '_> {
    fn prepared(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        statement(self.tx, self.statements, sql)
    }

    fn known_entity(&mut self, kind: EntityKind, name: &str) -> Option<Uuid> {
        self.cache.names.entities(kind).get(name).or_else(|| self.pending.names.entities(kind).get(name)).copied()
    }

    /// One record: its remote place, then resolve (a rejection writes nothing), then write.
    fn record(&mut self, record: &UplinkRecord) -> std::result::Result<std::result::Result<UplinkOutcome, UplinkRejection>, postgres::Error> {
        if let Some(remote) = record.remote {
            let seq = remote.seq as i64;
            let claim = self.prepared(
                "INSERT INTO remote_record (integration_id, outbox_id, seq) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )?;
            // Waits for a node committing the same place right now; then finds it taken.
            if self.tx.execute(&claim, &[&record.integration_id, &remote.outbox, &seq])? == 0 {
                return Ok(Ok(UplinkOutcome { duplicate: true, ..UplinkOutcome::default() }));
            }
            let written = self.write_record(record)?;
            if written.is_err() {
                // A rejected record keeps no place: sent again, it is judged again.
                let release = self.prepared("DELETE FROM remote_record WHERE integration_id = $1 AND outbox_id = $2 AND seq = $3")?;
                self.tx.execute(&release, &[&record.integration_id, &remote.outbox, &seq])?;
            }
            return Ok(written);
        }
        let written = self.write_record(record)?;
        if let (Err(_), Some(exchange)) = (&written, &record.exchange) {
            // Like a remote place: a rejected uplink's retransmission is judged again.
            let release = self.prepared("DELETE FROM coap_exchange WHERE peer = $1 AND message_id = $2")?;
            self.tx.execute(&release, &[&exchange.peer, &i32::from(exchange.message_id)])?;
        }
        Ok(written)
    }

    fn write_record(&mut self, record: &UplinkRecord) -> std::result::Result<std::result::Result<UplinkOutcome, UplinkRejection>, postgres::Error> {
        // Resolve first, write second: a rejected record must leave nothing behind.
        let mut resolved = Vec::with_capacity(record.entities.len());
        for update in &record.entities {
            let mut id = self.known_entity(update.kind, &update.name);
            if id.is_none() && !record.allow_create_devices {
                // Committed by another node since this batch looked: it may be written to.
                let (table, _) = table_of(update.kind);
                let select = self.prepared(&format!("SELECT id FROM {table} WHERE name = $1"))?;
                id = self.tx.query_opt(&select, &[&update.name])?.map(|r| r.get(0));
                match id {
                    Some(found) => {
                        self.cache.names.entities(update.kind).insert(update.name.clone(), found);
                    }
                    None => {
                        return Ok(Err(UplinkRejection::creating_forbidden(update.kind)));
                    }
                }
            }
            resolved.push(id);
        }
        let only_if_changed = |key: &str| record.update_only_keys.iter().any(|k| k == key);
        let mut outcome = UplinkOutcome::default();
        for (update, id) in record.entities.iter().zip(resolved) {
            // The same new name twice in one output: the first occurrence created it.
            let id = match id.or_else(|| self.known_entity(update.kind, &update.name)) {
                Some(id) => id,
                None => {
                    let (id, created) = self.create_entity(record, update)?;
                    if created {
                        outcome.created.push((update.kind, id));
                    }
                    id
                }
            };
            outcome.entities.push((update.kind, id));
            for (ts, values) in &update.telemetry {
                for (key, value) in values {
                    let key_id = self.key_id(key);
                    if only_if_changed(key) && self.latest_value(id, key_id)?.as_ref() == Some(value) {
                        outcome.unchanged_skipped += 1;
                        continue;
                    }
                    self.pending.points.insert((id, key_id, *ts), value.clone());
                    let newer = self.pending.newest.get(&(id, key_id)).is_none_or(|(newest, _)| *ts >= *newest);
                    if newer {
                        self.pending.newest.insert((id, key_id), (*ts, value.clone()));
                    }
                }
            }
            for (key, value) in &update.attributes {
                let key_id = self.key_id(key);
                if only_if_changed(key) && self.attribute_value(id, key_id)?.as_ref() == Some(value) {
                    outcome.unchanged_skipped += 1;
                    continue;
                }
                self.pending.attributes.insert((id, key_id), (record.received_ts, value.clone()));
            }
        }
        Ok(Ok(outcome))
    }

    fn key_id(&self, key: &str) -> i32 {
        // Every key of the batch was put in the dictionary before the first record.
        self.cache.keys.get(key).or_else(|| self.pending.keys.get(key)).copied().unwrap_or_default()
    }

    /// The latest stored time-series value of a key as this transaction sees it: the newer of
    /// ts_kv_latest and what this batch wrote (a later write of an equal timestamp wins).
    fn latest_value(&mut self, entity: Uuid, key: i32) -> std::result::Result<Option<KvValue>, postgres::Error> {
        if !self.pending.stored_latest.contains_key(&(entity, key)) {
            let select = self.prepared(&format!(
                "SELECT ts, {} FROM ts_kv_latest WHERE entity_id = $1 AND key = $2",
                super::VALUE_COLUMNS
            ))?;
            let stored = self.tx.query_opt(&select, &[&entity, &key])?.map(|r| (r.get::<_, i64>(0), super::kv_from_row(&r, 1)));
            self.pending.stored_latest.insert((entity, key), stored);
        }
        let stored = self.pending.stored_latest[&(entity, key)].as_ref();
        Ok(match (self.pending.newest.get(&(entity, key)), stored) {
            (Some((ts, value)), Some((stored_ts, _))) if ts >= stored_ts => Some(value.clone()),
            (_, Some((_, value))) => Some(value.clone()),
            (Some((_, value)), None) => Some(value.clone()),
            (None, None) => None,
        })
    }

    /// The client-side attribute value of a key as this transaction sees it.
    fn attribute_value(&mut self, entity: Uuid, key: i32) -> std::result::Result<Option<KvValue>, postgres::Error> {
        if let Some((_, value)) = self.pending.attributes.get(&(entity, key)) {
            return Ok(Some(value.clone()));
        }
        let select = self.prepared(&format!(
            "SELECT {} FROM attribute_kv WHERE entity_id = $1 AND scope = 'CLIENT_SCOPE' AND key = $2",
            super::VALUE_COLUMNS
        ))?;
        Ok(self.tx.query_opt(&select, &[&entity, &key])?.map(|r| super::kv_from_row(&r, 0)))
    }

    /// `INSERT … ON CONFLICT DO NOTHING RETURNING id`, else the id another transaction
    /// committed (READ COMMITTED: the `SELECT` after the conflict sees it).
    fn get_or_insert(
        &mut self,
        insert: &str,
        select: &str,
        insert_params: &[&(dyn postgres::types::ToSql + Sync)],
        select_params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> std::result::Result<(Uuid, bool), postgres::Error> {
        let insert = self.prepared(insert)?;
        if let Some(row) = self.tx.query_opt(&insert, insert_params)? {
            return Ok((row.get(0), true));
        }
        let select = self.prepared(select)?;
        Ok((self.tx.query_one(&select, select_params)?.get(0), false))
    }

    fn profile_id(&mut self, kind: EntityKind, name: &str) -> std::result::Result<Uuid, postgres::Error> {
        if let Some(id) = self.cache.names.profiles(kind).get(name).or_else(|| self.pending.names.profiles(kind).get(name)) {
            return Ok(*id);
        }
        let (_, table) = table_of(kind);
        let (id, _) = self.get_or_insert(
            &format!("INSERT INTO {table} (id, created_time, name, is_default) VALUES ($1, $2, $3, false) ON CONFLICT DO NOTHING RETURNING id"),
            &format!("SELECT id FROM {table} WHERE name = $1"),
            &[&Uuid::new_v4(), &now_millis(), &name],
            &[&name],
        )?;
        self.pending.names.profiles(kind).insert(name.to_string(), id);
        Ok(id)
    }

    /// The customer with this title, created if missing (ThingsBoard's `getOrCreateCustomer`).
    fn customer_id(&mut self, title: &str) -> std::result::Result<Uuid, postgres::Error> {
        if let Some(id) = self.cache.names.customers.get(title).or_else(|| self.pending.names.customers.get(title)) {
            return Ok(*id);
        }
        let (id, _) = self.get_or_insert(
            "INSERT INTO customer (id, created_time, title) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id",
            "SELECT id FROM customer WHERE title = $1",
            &[&Uuid::new_v4(), &now_millis(), &title],
            &[&title],
        )?;
        self.pending.names.customers.insert(title.to_string(), id);
        Ok(id)
    }

    /// The group of this type, owner and name, created if missing.
    fn group_id(&mut self, kind: EntityKind, owner: Owner, name: &str) -> std::result::Result<Uuid, postgres::Error> {
        let key = (kind, owner, name.to_string());
        if let Some(id) = self.cache.names.groups.get(&key).or_else(|| self.pending.names.groups.get(&key)) {
            return Ok(*id);
        }
        let owner_id = owner_column(owner);
        let (id, _) = self.get_or_insert(
            "INSERT INTO entity_group (id, created_time, name, type, owner_id) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING RETURNING id",
            "SELECT id FROM entity_group WHERE type = $1 AND owner_id = $2 AND name = $3",
            &[&Uuid::new_v4(), &now_millis(), &name, &kind.as_str(), &owner_id],
            &[&kind.as_str(), &owner_id, &name],
        )?;
        self.pending.names.groups.insert(key, id);
        Ok(id)
    }

    /// Creates a device or asset as ThingsBoard's integration does, unless another node just
    /// did (then its id, and `false`): the entity with its profile first, then — only if this
    /// transaction created it — its customer and its group membership, so an entity another
    /// node created leaves no customer or group behind.
    fn create_entity(&mut self, record: &UplinkRecord, update: &EntityUpdate) -> std::result::Result<(Uuid, bool), postgres::Error> {
        let profile = self.profile_id(update.kind, &update.entity_type)?;
        let (table, profile_table) = table_of(update.kind);
        let (id, created) = self.get_or_insert(
            &format!(
                "INSERT INTO {table} (id, created_time, name, type, {profile_table}_id, label, customer_id, integration_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, $7) ON CONFLICT DO NOTHING RETURNING id"
            ),
            &format!("SELECT id FROM {table} WHERE name = $1"),
            &[&Uuid::new_v4(), &now_millis(), &update.name, &update.entity_type, &profile, &update.label, &record.integration_id],
            &[&update.name],
        )?;
        self.pending.names.entities(update.kind).insert(update.name.clone(), id);
        if !created {
            return Ok((id, false));
        }
        let customer = match update.customer_name.as_deref() {
            Some(title) => {
                let customer = self.customer_id(title)?;
                let assign = self.prepared(&format!("UPDATE {table} SET customer_id = $2 WHERE id = $1"))?;
                self.tx.execute(&assign, &[&id, &customer])?;
                Some(customer)
            }
            None => None,
        };
        if let Some(group) = update.group_name.as_deref() {
            let group = self.group_id(update.kind, Owner::of_customer(customer), group)?;
            let join = self.prepared("INSERT INTO entity_group_member (group_id, entity_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")?;
            self.tx.execute(&join, &[&group, &id])?;
        }
        Ok((id, true))
    }

    /// Writes what the batch collected, one statement per table, rows sorted by key.
    fn flush(&mut self) -> std::result::Result<(), postgres::Error> {
        let value_types = "$4::bool[], $5::int8[], $6::float8[], $7::text[], $8::text[]";
        let updates = "bool_v = excluded.bool_v, long_v = excluded.long_v, dbl_v = excluded.dbl_v, \
                       str_v = excluded.str_v, json_v = excluded.json_v";
        let mut points: Vec<_> = std::mem::take(&mut self.pending.points).into_iter().collect();
        if !points.is_empty() {
            points.sort_unstable_by_key(|((entity, key, ts), _)| (*entity, *key, *ts));
            let (mut ids, mut keys, mut tss, mut values) = (Vec::new(), Vec::new(), Vec::new(), KvArrays::default());
            for ((entity, key, ts), value) in &points {
                ids.push(*entity);
                keys.push(*key);
                tss.push(*ts);
                push_value(&mut values, value);
            }
            let insert = self.prepared(&format!(
                "INSERT INTO ts_kv (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int8[], {value_types}) \
                 ON CONFLICT (entity_id, key, ts) DO UPDATE SET {updates}"
            ))?;
            let (b, l, d, s, j) = &values;
            self.tx.execute(&insert, &[&ids, &keys, &tss, b, l, d, s, j])?;
        }
        let mut newest: Vec<_> = std::mem::take(&mut self.pending.newest).into_iter().collect();
        if !newest.is_empty() {
            newest.sort_unstable_by_key(|((entity, key), _)| (*entity, *key));
            let (mut ids, mut keys, mut tss, mut values) = (Vec::new(), Vec::new(), Vec::new(), KvArrays::default());
            for ((entity, key), (ts, value)) in &newest {
                ids.push(*entity);
                keys.push(*key);
                tss.push(*ts);
                push_value(&mut values, value);
            }
            // An older point arriving late never replaces the latest value; a rewrite of the
            // latest timestamp does. (Attributes below likewise keep the newest uplink's: two
            // writers, or two nodes, may commit one device's uplinks out of arrival order.)
            let upsert = self.prepared(&format!(
                "INSERT INTO ts_kv_latest (entity_id, key, ts, bool_v, long_v, dbl_v, str_v, json_v) \
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int8[], {value_types}) \
                 ON CONFLICT (entity_id, key) DO UPDATE SET ts = excluded.ts, {updates} \
                 WHERE excluded.ts >= ts_kv_latest.ts"
            ))?;
            let (b, l, d, s, j) = &values;
            self.tx.execute(&upsert, &[&ids, &keys, &tss, b, l, d, s, j])?;
        }
        let mut attributes: Vec<_> = std::mem::take(&mut self.pending.attributes).into_iter().collect();
        if !attributes.is_empty() {
            attributes.sort_unstable_by_key(|((entity, key), _)| (*entity, *key));
            let (mut ids, mut keys, mut tss, mut values) = (Vec::new(), Vec::new(), Vec::new(), KvArrays::default());
            for ((entity, key), (ts, value)) in &attributes {
                ids.push(*entity);
                keys.push(*key);
                tss.push(*ts);
                push_value(&mut values, value);
            }
            let upsert = self.prepared(&format!(
                "INSERT INTO attribute_kv (entity_id, key, last_update_ts, bool_v, long_v, dbl_v, str_v, json_v, scope) \
                 SELECT *, 'CLIENT_SCOPE' FROM unnest($1::uuid[], $2::int4[], $3::int8[], {value_types}) \
                 ON CONFLICT (entity_id, scope, key) DO UPDATE SET last_update_ts = excluded.last_update_ts, {updates} \
                 WHERE excluded.last_update_ts >= attribute_kv.last_update_ts"
            ))?;
            let (b, l, d, s, j) = &values;
            self.tx.execute(&upsert, &[&ids, &keys, &tss, b, l, d, s, j])?;
        }
        Ok(())
    }
}

/// `entity_epoch`, and the stored version of every converter the batch's records were made
/// with. Read after the batch took [`DELETION_LOCK`] shared, which every converter save takes
/// exclusively: a save either committed before this read (its version is seen here, and older
/// outputs are refused) or waits for this batch's `COMMIT` (so the batch commits before the
/// save returns).
fn epoch_and_versions(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    batch: &[UplinkRecord],
) -> std::result::Result<(i64, HashMap<Uuid, i64>), postgres::Error> {
    let mut ids: Vec<Uuid> = batch.iter().filter_map(|r| r.converter.map(|c| c.id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let select = statement(
        tx,
        statements,
        "SELECT (SELECT epoch FROM entity_epoch WHERE id = 1), c.id, c.version \
         FROM (SELECT 1) AS one LEFT JOIN converter c ON c.id = ANY($1)",
    )?;
    let rows = tx.query(&select, &[&ids])?;
    let epoch = rows.first().map_or(0, |r| r.get(0));
    let versions = rows.iter().filter_map(|r| Some((r.get::<_, Option<Uuid>>(1)?, r.get::<_, Option<i64>>(2)?))).collect();
    Ok((epoch, versions))
}

/// Claims the (peer, Message ID) of every record's CoAP exchange before anything of the batch
/// is written: one row per key while it is remembered (unique index), so a retransmission that
/// reached another node — even at the same moment — finds the key taken once the first copy's
/// transaction commits, and is answered with the response stored there. A key older than
/// EXCHANGE_LIFETIME is a new exchange (Message IDs wrap) and is taken over. Keys are inserted
/// sorted, a fixed lock order across nodes. Returns, per record, the stored response of a
/// duplicate (`None` for a record claimed now or without an exchange).
fn claim_exchanges(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    batch: &[UplinkRecord],
    skip: &[bool],
) -> std::result::Result<Vec<Option<Vec<u8>>>, postgres::Error> {
    let mut replays: Vec<Option<Vec<u8>>> = vec![None; batch.len()];
    let mut claims: Vec<(&Exchange, usize)> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip[*i])
        .filter_map(|(i, r)| r.exchange.as_ref().map(|e| (e, i)))
        .collect();
    if claims.is_empty() {
        return Ok(replays);
    }
    claims.sort_by(|(a, i), (b, j)| (a.peer.as_str(), a.message_id, i).cmp(&(b.peer.as_str(), b.message_id, j)));
    // One node's deduplication cache keeps a key out of a second batch row, but should one come,
    // its later copies repeat the first (one INSERT may not touch a row twice).
    let mut first: Vec<(&Exchange, usize)> = Vec::with_capacity(claims.len());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (exchange, i) in claims {
        match first.last() {
            Some((e, f)) if e.peer == exchange.peer && e.message_id == exchange.message_id => repeats.push((i, *f)),
            _ => first.push((exchange, i)),
        }
    }
    let tss: Vec<i64> = first.iter().map(|(e, _)| e.ts).collect();
    let peers: Vec<&str> = first.iter().map(|(e, _)| e.peer.as_str()).collect();
    let ids: Vec<i32> = first.iter().map(|(e, _)| i32::from(e.message_id)).collect();
    let responses: Vec<&[u8]> = first.iter().map(|(e, _)| e.response.as_slice()).collect();
    // A stored exchange of the same (peer, Message ID) takes the claim if it is younger than
    // EXCHANGE_LIFETIME and its answer carries this request's token (its first byte's low four
    // bits are the token's length, the token follows the 4-byte header): a retransmission
    // repeats its token, another token is a new request that reused the id (see
    // `coapgate_coap::dedup`), which replaces the old exchange.
    let claim = statement(
        tx,
        statements,
        "INSERT INTO coap_exchange (ts, peer, message_id, response) \
         SELECT ts, peer, message_id, response \
         FROM unnest($1::int8[], $2::text[], $3::int4[], $4::bytea[]) WITH ORDINALITY AS e(ts, peer, message_id, response, n) \
         ORDER BY n \
         ON CONFLICT (peer, message_id) DO UPDATE SET ts = excluded.ts, response = excluded.response \
         WHERE coap_exchange.ts < excluded.ts - $5 \
            OR CASE WHEN length(coap_exchange.response) >= 4 \
                 THEN substring(coap_exchange.response from 5 for get_byte(coap_exchange.response, 0) & 15) END \
               IS DISTINCT FROM CASE WHEN length(excluded.response) >= 4 \
                 THEN substring(excluded.response from 5 for get_byte(excluded.response, 0) & 15) END \
         RETURNING peer, message_id",
    )?;
    let claimed: HashSet<(String, i32)> =
        tx.query(&claim, &[&tss, &peers, &ids, &responses, &EXCHANGE_LIFETIME_MS])?.iter().map(|r| (r.get(0), r.get(1))).collect();
    let taken: Vec<usize> = (0..first.len()).filter(|&k| !claimed.contains(&(peers[k].to_string(), ids[k]))).collect();
    if !taken.is_empty() {
        let taken_peers: Vec<&str> = taken.iter().map(|&k| peers[k]).collect();
        let taken_ids: Vec<i32> = taken.iter().map(|&k| ids[k]).collect();
        let select = statement(
            tx,
            statements,
            "SELECT x.peer, x.message_id, x.response FROM coap_exchange x \
             JOIN unnest($1::text[], $2::int4[]) AS k(peer, message_id) USING (peer, message_id)",
        )?;
        let stored: HashMap<(String, i32), Vec<u8>> =
            tx.query(&select, &[&taken_peers, &taken_ids])?.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
        for k in taken {
            // Gone between the two statements (expired by upkeep): the uplink is then new, but
            // this batch did not claim it; answering the first copy's 2.01 is still right, as
            // that copy was stored.
            let response = stored.get(&(peers[k].to_string(), ids[k])).cloned().unwrap_or_else(|| first[k].0.response.clone());
            replays[first[k].1] = Some(response);
        }
    }
    for (i, f) in repeats {
        replays[i] = Some(replays[f].clone().unwrap_or_else(|| batch[f].exchange.as_ref().map(|e| e.response.clone()).unwrap_or_default()));
    }
    Ok(replays)
}

/// A pause of 1..=`most` milliseconds that differs between nodes and attempts.
fn rand_millis(most: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    1 + u64::from(nanos ^ std::process::id().rotate_left(16)) % most.max(1)
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

impl UplinkWriter for PgUplinkWriter {
    fn commit(&mut self, batch: &[UplinkRecord]) -> Result<Outcomes> {
        self.reconnect_if_closed()?;
        let result = self.commit_batch(batch);
        self.checked(result)
    }

    /// Commits return once PostgreSQL has the transaction in its WAL buffers; the barrier
    /// makes every one of them durable with a single flush. PostgreSQL's WAL is one sequence, so
    /// a flush through the barrier's own commit record covers every commit before it — also
    /// another node's commit that a batch here found (a duplicate is answered only after this
    /// node's barrier, so after the first copy is durable).
    fn split_durability(&mut self) -> Result<Option<Box<dyn crate::DurabilityBarrier>>> {
        self.conn.client.batch_execute("SET synchronous_commit = off").map_err(pg)?;
        self.split = true;
        Ok(Some(Box::new(PgBarrier { config: self.config.clone(), conn: None, id: Uuid::new_v4() })))
    }

    fn maintain(&mut self) -> Result<bool> {
        if !(self.exchanges_behind || self.last_exchange_cleanup.elapsed() >= EXCHANGE_CHECK) {
            return Ok(false);
        }
        self.reconnect_if_closed()?;
        self.last_exchange_cleanup = Instant::now();
        let result = self.expire_exchanges();
        self.checked(result)
    }
}

impl PgUplinkWriter {
    fn commit_batch(&mut self, batch: &[UplinkRecord]) -> Result<Outcomes> {
        let mut months: Vec<i64> = batch
            .iter()
            .flat_map(|r| r.entities.iter())
            .flat_map(|u| u.telemetry.iter())
            .filter_map(|(ts, _)| schema::partition_month(*ts))
            .filter(|m| !self.partitions.contains(m))
            .collect();
        if !months.is_empty() {
            months.sort_unstable();
            months.dedup();
            schema::create_partitions(&mut self.conn.client, &months)?;
            self.partitions.extend(months);
        }
        let mut attempt = 1;
        loop {
            match self.try_commit(batch) {
                Ok(results) => return Ok(results),
                Err(e) if retryable(&e) && attempt < ATTEMPTS => {
                    // Apart, so the two batches do not meet again in the same order.
                    std::thread::sleep(Duration::from_millis(rand_millis(5 * attempt as u64)));
                    attempt += 1;
                }
                Err(e) => return Err(pg(e)),
            }
        }
    }

    /// Deletes up to [`EXCHANGE_SLICE`] of the exchanges older than their lifetime, oldest
    /// first; returns whether more are waiting.
    fn expire_exchanges(&mut self) -> Result<bool> {
        let before = now_millis() - EXCHANGE_LIFETIME_MS;
        let statement = self
            .conn
            .prepared("DELETE FROM coap_exchange WHERE id IN (SELECT id FROM coap_exchange WHERE ts < $1 ORDER BY ts LIMIT $2)")?;
        let deleted = self.conn.client.execute(&statement, &[&before, &EXCHANGE_SLICE]).map_err(pg)?;
        self.exchanges_behind = deleted >= EXCHANGE_SLICE as u64;
        Ok(self.exchanges_behind)
    }
}

/// Makes the writer's asynchronous commits durable: a transaction of its own that writes a row
/// and commits with `synchronous_commit=on`, which returns only once the WAL is flushed through
/// its commit record — through every commit that returned before. (It must write: PostgreSQL
/// flushes at commit only for a transaction that wrote WAL; a bare `txid_current()` does not,
/// which `postgres_crashing_under_load_loses_no_acknowledged_uplink` caught.)
struct PgBarrier {
    config: PgConfig,
    conn: Option<Conn>,
    /// This barrier's row in `wal_barrier`.
    id: Uuid,
}

impl crate::DurabilityBarrier for PgBarrier {
    fn sync(&mut self) -> Result<()> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = Some(Conn::open(&self.config)?);
        }
        let conn = self.conn.as_mut().expect("opened above");
        let result = conn
            .prepared("INSERT INTO wal_barrier (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = wal_barrier.n + 1")
            .and_then(|flush| conn.client.execute(&flush, &[&self.id]).map_err(pg));
        if result.is_err() {
            self.conn = None;
        }
        result.map(|_| ())
    }
}
