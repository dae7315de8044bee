//! The schema, created and migrated by the store itself when it opens.
//!
//! Migration steps are numbered and applied in order, each once, inside one transaction that
//! also records it in `schema_version`. The transaction holds an advisory lock, so nodes
//! starting together on one database migrate it once, one after the other; a node finding a
//! version newer than its own refuses to start rather than write to a schema it does not know.

use postgres::Transaction;

use super::pg;
use crate::{Result, StorageError};

/// Serializes migrations of nodes starting at the same time.
const MIGRATION_LOCK: i64 = 0x636f_6170_6d69_6700; // "coapmig\0"

/// `(version, SQL)`, in order. Never edit a step that has shipped: add one.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];

/// Text columns that lists sort by use the "C" collation: byte order, as SQLite's default
/// BINARY collation sorts (the database's own locale could sort "alpha" before "Mid").
const V1: &str = r#"
CREATE TABLE setting (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE app_user (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, email text NOT NULL,
    password_hash text NOT NULL, authority text NOT NULL, first_name text, last_name text);
-- E-mail addresses are unique and looked up ignoring case (SQLite: COLLATE NOCASE).
CREATE UNIQUE INDEX app_user_email ON app_user (lower(email));
CREATE TABLE converter (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL, integration_type text, debug_settings text NOT NULL,
    configuration text NOT NULL, additional_info text NOT NULL, version bigint NOT NULL);
CREATE TABLE integration (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL, enabled boolean NOT NULL, allow_create boolean NOT NULL,
    is_remote boolean NOT NULL, debug_settings text NOT NULL, converter_id uuid NOT NULL,
    downlink_converter_id uuid, routing_key text NOT NULL CONSTRAINT integration_routing_key UNIQUE,
    secret text NOT NULL, configuration text NOT NULL, additional_info text NOT NULL,
    version bigint NOT NULL);
CREATE TABLE device_profile (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL UNIQUE,
    is_default boolean NOT NULL);
CREATE TABLE asset_profile (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL UNIQUE,
    is_default boolean NOT NULL);
-- At most one default profile of each kind, also when nodes create them at the same time.
CREATE UNIQUE INDEX device_profile_default ON device_profile (is_default) WHERE is_default;
CREATE UNIQUE INDEX asset_profile_default ON asset_profile (is_default) WHERE is_default;
CREATE TABLE customer (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, title text COLLATE "C" NOT NULL UNIQUE);
CREATE TABLE device (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL UNIQUE,
    type text COLLATE "C" NOT NULL, device_profile_id uuid NOT NULL, label text COLLATE "C",
    customer_id uuid, integration_id uuid);
CREATE INDEX device_created ON device (created_time);
CREATE INDEX device_customer ON device (customer_id);
CREATE INDEX device_profile_users ON device (device_profile_id);
CREATE TABLE asset (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL UNIQUE,
    type text COLLATE "C" NOT NULL, asset_profile_id uuid NOT NULL, label text COLLATE "C",
    customer_id uuid, integration_id uuid);
CREATE INDEX asset_created ON asset (created_time);
CREATE INDEX asset_customer ON asset (customer_id);
CREATE INDEX asset_profile_users ON asset (asset_profile_id);
-- owner_id is the customer's id, or the nil UUID for groups the tenant owns.
CREATE TABLE entity_group (
    id uuid PRIMARY KEY, created_time bigint NOT NULL, name text COLLATE "C" NOT NULL,
    type text NOT NULL, owner_id uuid NOT NULL, UNIQUE (type, owner_id, name));
CREATE TABLE entity_group_member (
    group_id uuid NOT NULL, entity_id uuid NOT NULL, PRIMARY KEY (group_id, entity_id));
CREATE INDEX entity_group_member_by_entity ON entity_group_member (entity_id);
-- Bumped in the transaction of every deletion a writer's cache may hold (entity, profile,
-- customer, group): a writer reads it at the start of each batch and drops its caches when it
-- moved, whichever node deleted.
CREATE TABLE entity_epoch (id int PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL);
INSERT INTO entity_epoch VALUES (1, 0);
-- The exchanges of stored uplinks, for retransmissions: appended with their uplink's data.
CREATE TABLE coap_exchange (
    id bigserial PRIMARY KEY, ts bigint NOT NULL, peer text NOT NULL, message_id int NOT NULL,
    response bytea NOT NULL);
CREATE INDEX coap_exchange_by_key ON coap_exchange (peer, message_id, id);
CREATE INDEX coap_exchange_by_ts ON coap_exchange (ts);
-- Records remote integrations sent, committed with their data; the key makes a resend (also one
-- arriving at another node at the same time) a duplicate.
CREATE TABLE remote_record (
    integration_id uuid NOT NULL, outbox_id uuid NOT NULL, seq bigint NOT NULL,
    PRIMARY KEY (integration_id, outbox_id, seq));
CREATE TABLE key_dictionary (key_id serial PRIMARY KEY, key text COLLATE "C" NOT NULL UNIQUE);
-- Time series, partitioned by month of ts (see `ensure_partitions`); points outside the
-- months partitions are made for land in the default partition.
CREATE TABLE ts_kv (
    entity_id uuid NOT NULL, key int NOT NULL, ts bigint NOT NULL,
    bool_v boolean, long_v bigint, dbl_v double precision, str_v text, json_v text,
    PRIMARY KEY (entity_id, key, ts)) PARTITION BY RANGE (ts);
CREATE TABLE ts_kv_default PARTITION OF ts_kv DEFAULT;
CREATE TABLE ts_kv_latest (
    entity_id uuid NOT NULL, key int NOT NULL, ts bigint NOT NULL,
    bool_v boolean, long_v bigint, dbl_v double precision, str_v text, json_v text,
    PRIMARY KEY (entity_id, key));
CREATE TABLE attribute_kv (
    entity_id uuid NOT NULL, scope text NOT NULL, key int NOT NULL, last_update_ts bigint NOT NULL,
    bool_v boolean, long_v bigint, dbl_v double precision, str_v text, json_v text,
    PRIMARY KEY (entity_id, scope, key));
-- seq orders events created in the same millisecond (SQLite's rowid).
CREATE TABLE event (
    id uuid PRIMARY KEY, seq bigserial NOT NULL, created_time bigint NOT NULL,
    entity_type text NOT NULL, entity_id uuid NOT NULL, event_type text NOT NULL, uid text NOT NULL,
    body json NOT NULL);
CREATE INDEX event_by_entity ON event (entity_id, event_type, created_time);
CREATE INDEX event_by_time ON event (created_time);
"#;

/// Several nodes: one row per remembered (peer, Message ID), so a retransmission that reaches
/// another node is found by the uniqueness constraint in the same transaction as the data
/// (the writer's `claim_exchanges`); `config_epoch`, which every converter or integration
/// change bumps, for nodes that missed a notification; `cluster_node`, where each node reports
/// the epoch it routes by, so a change returns once every live node applied it; `wal_barrier`,
/// what the writers' durability barriers write.
const V2: &str = r#"
DELETE FROM coap_exchange a USING coap_exchange b
    WHERE a.peer = b.peer AND a.message_id = b.message_id AND a.id < b.id;
DROP INDEX coap_exchange_by_key;
CREATE UNIQUE INDEX coap_exchange_key ON coap_exchange (peer, message_id);
CREATE TABLE config_epoch (id int PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL);
INSERT INTO config_epoch VALUES (1, 0);
-- Every running node: the configuration epoch it routes by, and when it last said so.
CREATE TABLE cluster_node (id uuid PRIMARY KEY, applied_epoch bigint NOT NULL, seen bigint NOT NULL);
-- One row per uplink writer: its durability barrier updates it (see writer.rs, PgBarrier).
CREATE TABLE wal_barrier (id uuid PRIMARY KEY, n bigint NOT NULL);
"#;

/// Devices and assets get a description (ThingsBoard's `additionalInfo.description`), set
/// through the REST API.
const V3: &str = r#"
ALTER TABLE device ADD COLUMN description text;
ALTER TABLE asset ADD COLUMN description text;
"#;

/// ThingsBoard's DeviceCredentials, one per device; credentials_id is the access token.
const V4: &str = r#"
CREATE TABLE device_credentials (
    device_id uuid PRIMARY KEY, id uuid NOT NULL, created_time bigint NOT NULL,
    credentials_type text NOT NULL, credentials_id text NOT NULL UNIQUE, credentials_value text);
"#;

/// Users belong to a customer (customer users) and can be disabled (`userCredentialsEnabled`).
const V5: &str = r#"
ALTER TABLE app_user ADD COLUMN customer_id uuid;
ALTER TABLE app_user ADD COLUMN enabled boolean NOT NULL DEFAULT true;
"#;

/// A user's pending invitation: a hash of its activation token, never the token.
const V6: &str = r#"
CREATE TABLE user_activation (
    user_id uuid PRIMARY KEY, token_hash text NOT NULL UNIQUE, expires bigint NOT NULL);
"#;

/// Brings the schema to the newest version and makes the rows every store needs (tenant id,
/// default profiles); returns the tenant id.
pub(crate) fn migrate(client: &mut postgres::Client) -> Result<uuid::Uuid> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY, applied_at bigint NOT NULL)")
        .map_err(pg)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .map_err(pg)?
        .get(0);
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > newest {
        return Err(StorageError::Other(format!(
            "the PostgreSQL schema is at version {current}, newer than this coapgate knows ({newest}): upgrade coapgate"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .map_err(|e| StorageError::Other(format!("schema migration step {version} failed: {}", super::config::error_text(&e))))?;
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", &[version, &crate::now_millis()])
            .map_err(pg)?;
    }
    let tenant_id = tenant_id(&mut tx)?;
    for table in ["device_profile", "asset_profile"] {
        tx.execute(
            &format!(
                "INSERT INTO {table} (id, created_time, name, is_default) \
                 SELECT $1, $2, 'default', true WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE is_default) \
                 ON CONFLICT DO NOTHING"
            ),
            &[&uuid::Uuid::new_v4(), &crate::now_millis()],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)?;
    Ok(tenant_id)
}

fn tenant_id(tx: &mut Transaction<'_>) -> Result<uuid::Uuid> {
    tx.execute(
        "INSERT INTO setting (name, value) VALUES ('tenant_id', $1) ON CONFLICT (name) DO NOTHING",
        &[&uuid::Uuid::new_v4().to_string()],
    )
    .map_err(pg)?;
    let text: String = tx.query_one("SELECT value FROM setting WHERE name = 'tenant_id'", &[]).map_err(pg)?.get(0);
    uuid::Uuid::parse_str(&text).map_err(|e| StorageError::Other(format!("bad tenant id {text:?} in setting: {e}")))
}

/// Months get partitions from 1970 (ts 0) up to 2200; points outside go to the default
/// partition, so a device with a wild clock creates no partition of its own.
const FIRST_MONTH: i64 = 0; // months since 1970-01
const END_MONTH: i64 = (2200 - 1970) * 12;

/// The month (since 1970-01) a timestamp falls in, if it gets a partition of its own.
pub(crate) fn partition_month(ts: crate::model::Millis) -> Option<i64> {
    let days = ts.div_euclid(86_400_000);
    let (year, month) = civil_from_days(days);
    let index = (year - 1970) * 12 + (month - 1);
    (FIRST_MONTH..END_MONTH).contains(&index).then_some(index)
}

/// The partition of one month: its name and `[from, to)` in milliseconds.
pub(crate) fn partition_bounds(month: i64) -> (String, i64, i64) {
    let (year, m) = (1970 + month / 12, month % 12 + 1);
    let (next_year, next_m) = if m == 12 { (year + 1, 1) } else { (year, m + 1) };
    let from = days_from_civil(year, m) * 86_400_000;
    let to = days_from_civil(next_year, next_m) * 86_400_000;
    (format!("ts_kv_{year:04}_{m:02}"), from, to)
}

/// Creates the partition of each month unless it exists. Its own short transaction, before the
/// batch's, so uplink transactions never hold the lock that creating a partition takes on
/// `ts_kv`; nodes creating the same month at once are serialized by an advisory lock.
pub(crate) fn create_partitions(client: &mut postgres::Client, months: &[i64]) -> Result<()> {
    const PARTITION_LOCK: i64 = 0x636f_6170_7061_7274; // "coappart"
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK]).map_err(pg)?;
    for &month in months {
        let (name, from, to) = partition_bounds(month);
        // Rows of this month that went to the default partition (only possible if the
        // partition was dropped by hand) make this fail, naming the problem.
        tx.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {name} PARTITION OF ts_kv FOR VALUES FROM ({from}) TO ({to})"))
            .map_err(|e| StorageError::Other(format!("creating time-series partition {name} failed: {}", super::config::error_text(&e))))?;
    }
    tx.commit().map_err(pg)?;
    Ok(())
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of the first day of a month.
fn days_from_civil(year: i64, month: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5; // day 1 of the month
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse: (year, month) of a day since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_map_to_their_partitions() {
        assert_eq!(partition_month(0), Some(0));
        assert_eq!(partition_month(-1), None, "before 1970: the default partition");
        assert_eq!(partition_month(i64::MAX), None);
        // 2026-12-07T08:34:08Z
        let ts = 1_796_632_448_000;
        let month = partition_month(ts).unwrap();
        let (name, from, to) = partition_bounds(month);
        assert_eq!(name, "ts_kv_2026_12");
        assert!(from <= ts && ts < to);
        assert_eq!(from, 1_796_083_200_000, "2026-12-01T00:00:00Z");
        assert_eq!(to, 1_798_761_600_000, "2027-01-01T00:00:00Z");
        // Every month's end is the next one's start, and February of a leap year has 29 days.
        for m in 0..END_MONTH - 1 {
            assert_eq!(partition_bounds(m).2, partition_bounds(m + 1).1);
            assert_eq!(partition_month(partition_bounds(m).1), Some(m));
            assert_eq!(partition_month(partition_bounds(m).2 - 1), Some(m));
        }
        let feb_2024 = (2024 - 1970) * 12 + 1;
        let (_, from, to) = partition_bounds(feb_2024);
        assert_eq!((to - from) / 86_400_000, 29);
    }
}
