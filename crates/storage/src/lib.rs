//! Storage for coapgate: one interface, [`Store`], with the embedded SQLite backend behind it.
//!
//! Modules:
//! - [`model`]: the stored entities and typed values, free of any API shape.
//! - [`sqlite`]: the SQLite backend (bundled SQLite, WAL, one writer connection).
//! - [`postgres`]: the PostgreSQL backend, for several nodes on one database (not yet selectable
//!   in `serve`; see issue 15).
//! - [`entity_query`]: ThingsBoard's entity data queries, one SQL builder for both backends.
//! - [`migrate`]: `coapgate migrate`, a SQLite data directory copied into PostgreSQL, resumable.
//! - `sqlite_points`: the encoded points of one `ts_kv_recent` row and the SQL function that
//!   reads them.
//! - [`outbox`]: a remote integration's durable outbox (SQLite too): converted uplinks waiting
//!   for the platform's acknowledgement, with their CoAP exchanges.
//!
//! **No other crate speaks SQL.** The server talks to storage only through [`Store`] for reads and
//! entity edits, and through an [`UplinkWriter`] for the hot write path, which commits many
//! uplinks per transaction (group commit). Both backends implement the same traits, and
//! `tests/backends.rs` runs one set of behaviours against each.

pub mod entity_query;
mod listing;
pub mod migrate;
pub mod model;
pub mod outbox;
pub mod postgres;
pub mod sqlite;
mod sqlite_points;
pub mod sqlite_wal;

use model::*;
use uuid::Uuid;

pub use outbox::Outbox;
pub use postgres::{PgConfig, PgStore};
pub use sqlite::SqliteStore;

/// Errors at the storage boundary. The server matches on [`StorageError::Conflict`] to answer
/// 400 and reports everything else as an internal error with the cause.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Not a `#[source]`: the message already carries the SQLite error, and a source would make
    /// `{:#}` (the start-up error line) print it two more times.
    #[error("database error: {0}")]
    Database(rusqlite::Error),
    #[error("{0}")]
    Conflict(String),
    /// The entity an edit refers to does not exist.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Other(String),
    /// Write-ahead logs SQLite would replay only in part, dropping committed transactions.
    #[error("{}", damaged_wal_text(.0))]
    DamagedWal(Vec<sqlite_wal::WalReport>),
}

fn damaged_wal_text(reports: &[sqlite_wal::WalReport]) -> String {
    let files: Vec<String> = reports
        .iter()
        .filter_map(|r| r.damage.as_ref().map(|d| format!("{} is damaged: {d}", r.wal.display())))
        .collect();
    files.join("; ")
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        StorageError::Database(e)
    }
}

/// ThingsBoard's message for an access token another device holds.
pub(crate) const CREDENTIALS_TAKEN: &str = "Specified credentials are already registered!";

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything the server reads and edits, apart from the uplink write path.
///
/// Methods are blocking: callers on an async runtime use `spawn_blocking`. The single tenant's
/// id is fixed when the database is created.
/// The durable record of CoAP exchanges whose uplinks were stored, which refills and backs the
/// deduplication caches: the platform's database for `serve`, the outbox for `remote`.
pub trait ExchangeLog: Send + Sync + 'static {
    /// The newest `limit` exchanges of stored uplinks that arrived at or after `since`, one per
    /// (peer, message id) — the newest — oldest first, to refill the deduplication cache at
    /// start-up. The cache holds a bounded number anyway; at 30,000 uplinks/s the table keeps
    /// 7 million within EXCHANGE_LIFETIME, too many to load after a crash.
    fn recent_exchanges(&self, since: Millis, limit: usize) -> Result<Vec<Exchange>>;

    /// The newest exchange of a stored uplink from `peer` with `message_id` that arrived at or
    /// after `since`, if any: for a retransmission the deduplication cache no longer holds.
    /// Without an index on the key (it would dirty random pages in every uplink commit) this
    /// reads the log from its newest row back, so callers keep it rare and off the hot path.
    fn find_exchange(&self, peer: &str, message_id: u16, since: Millis) -> Result<Option<Exchange>>;
}

/// Where debug, lifecycle, statistics and error events are kept: the events database for
/// `serve`; for `coapgate remote`, the link that carries them to the platform.
pub trait EventLog: Send + Sync + 'static {
    /// Stores events in one transaction.
    fn insert_events(&self, events: &[Event]) -> Result<()>;
    /// Deletes events created before `ts`; returns how many.
    fn delete_events_before(&self, ts: Millis) -> Result<u64>;
}

pub trait Store: ExchangeLog + EventLog {
    fn tenant_id(&self) -> Uuid;

    // Settings: small named values the server keeps across restarts (e.g. its token secret).
    fn setting(&self, name: &str) -> Result<Option<String>>;
    fn put_setting(&self, name: &str, value: &str) -> Result<()>;
    /// Replaces a setting with what `change` makes of its current value, as one step for every
    /// process sharing the store (on PostgreSQL, under the row's lock; a store only this process
    /// writes needs no more than its callers serialising their updates). Returns the new value.
    fn update_setting(&self, name: &str, change: &mut dyn FnMut(Option<String>) -> String) -> Result<String> {
        let value = change(self.setting(name)?);
        self.put_setting(name, &value)?;
        Ok(value)
    }

    fn user_count(&self) -> Result<u64>;
    fn insert_user(&self, user: &User) -> Result<()>;
    fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    fn user(&self, id: Uuid) -> Result<Option<User>>;
    /// Replaces a user's bcrypt hash and ends its pending invitation (a password set any other
    /// way makes the activation link useless); false when there is no such user.
    fn set_user_password_hash(&self, id: Uuid, password_hash: &str) -> Result<bool>;
    /// A page of users; text search looks at the e-mail and both names, `sortProperty` is
    /// ThingsBoard's `createdTime`, `email`, `firstName` or `lastName`.
    fn users(&self, filter: UserFilter, query: &PageQuery) -> Result<Page<User>>;
    /// Changes a user's e-mail and names; its authority, customer, password and enabled flag
    /// stay. False when there is no such user; an e-mail another user has is a Conflict.
    fn update_user(&self, user: &User) -> Result<bool>;
    /// ThingsBoard's `userCredentialsEnabled`; false when there is no such user.
    fn set_user_enabled(&self, id: Uuid, enabled: bool) -> Result<bool>;
    /// Deletes the user with its pending invitation. Its login sessions live in a setting the
    /// server keeps, which ends them itself (a token of a user that is gone fails anyway).
    fn delete_user(&self, id: Uuid) -> Result<bool>;
    /// Replaces the user's pending invitation with one for `token_hash` (a hash of the token:
    /// the token itself is never stored), valid until `expires`. False when there is no such user.
    fn set_activation_token(&self, user_id: Uuid, token_hash: &str, expires: Millis) -> Result<bool>;
    /// Sets the password of the user invited with `token_hash` and ends the invitation, as one
    /// step, so a token works once even when two requests present it at the same time.
    fn activate_user(&self, token_hash: &str, now: Millis, password_hash: &str) -> Result<Activation>;

    /// Inserts or replaces the converter with this id.
    fn save_converter(&self, converter: &Converter) -> Result<()>;
    fn converter(&self, id: Uuid) -> Result<Option<Converter>>;
    fn converters(&self, query: &PageQuery) -> Result<Page<Converter>>;
    /// Refuses (Conflict) while an integration uses the converter.
    fn delete_converter(&self, id: Uuid) -> Result<bool>;

    /// Inserts or replaces the integration with this id; routing keys are unique (Conflict).
    fn save_integration(&self, integration: &Integration) -> Result<()>;
    fn integration(&self, id: Uuid) -> Result<Option<Integration>>;
    fn integration_by_routing_key(&self, routing_key: &str) -> Result<Option<Integration>>;
    fn integrations(&self, query: &PageQuery) -> Result<Page<Integration>>;
    fn all_integrations(&self) -> Result<Vec<Integration>>;
    fn delete_integration(&self, id: Uuid) -> Result<bool>;

    fn device(&self, id: Uuid) -> Result<Option<Device>>;
    fn device_by_name(&self, name: &str) -> Result<Option<Device>>;
    fn devices(&self, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>>;
    /// The devices the tenant owns itself: assigned to no customer (ThingsBoard PE's "own"
    /// devices of a tenant administrator).
    fn unassigned_devices(&self, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>>;
    /// The devices assigned to one customer.
    fn customer_devices(&self, customer_id: Uuid, query: &PageQuery, device_type: Option<&str>) -> Result<Page<Device>>;
    /// Deletes the device with its telemetry, attributes, credentials and group memberships.
    fn delete_device(&self, id: Uuid) -> Result<bool>;
    /// The device's credentials, if it has any yet.
    fn device_credentials(&self, device_id: Uuid) -> Result<Option<DeviceCredentials>>;
    /// Stores `credentials` unless the device has credentials already; returns the device's
    /// credentials either way (race-safe: two callers end with the same).
    fn ensure_device_credentials(&self, credentials: &DeviceCredentials) -> Result<DeviceCredentials>;
    /// Replaces the device's credentials (its `id` and `created_time` are kept when it had some).
    /// A credentials id another device holds is refused (Conflict, ThingsBoard's message).
    fn save_device_credentials(&self, credentials: &DeviceCredentials) -> Result<DeviceCredentials>;
    fn device_profile(&self, id: Uuid) -> Result<Option<DeviceProfile>>;
    /// Refuses (Conflict) the default profile and profiles that devices still use.
    fn delete_device_profile(&self, id: Uuid) -> Result<bool>;
    fn device_profiles(&self, query: &PageQuery) -> Result<Page<DeviceProfile>>;

    fn asset(&self, id: Uuid) -> Result<Option<Asset>>;
    fn asset_by_name(&self, name: &str) -> Result<Option<Asset>>;
    fn assets(&self, query: &PageQuery, asset_type: Option<&str>) -> Result<Page<Asset>>;
    /// The assets assigned to one customer.
    fn customer_assets(&self, customer_id: Uuid, query: &PageQuery, asset_type: Option<&str>) -> Result<Page<Asset>>;
    /// Deletes the asset with its telemetry, attributes and group memberships.
    fn delete_asset(&self, id: Uuid) -> Result<bool>;
    fn asset_profile(&self, id: Uuid) -> Result<Option<AssetProfile>>;
    fn asset_profiles(&self, query: &PageQuery) -> Result<Page<AssetProfile>>;
    /// Refuses (Conflict) the default profile and profiles that assets still use.
    fn delete_asset_profile(&self, id: Uuid) -> Result<bool>;

    fn customer(&self, id: Uuid) -> Result<Option<Customer>>;
    fn customer_by_title(&self, title: &str) -> Result<Option<Customer>>;
    /// Pages search and sort by title.
    fn customers(&self, query: &PageQuery) -> Result<Page<Customer>>;
    /// Deletes the customer with its own telemetry and attributes, the entity groups it owns
    /// and its users (with their invitations). Its devices and assets are kept and become the tenant's again (unassigned), so no
    /// device data is lost with a customer.
    fn delete_customer(&self, id: Uuid) -> Result<bool>;

    fn entity_group(&self, id: Uuid) -> Result<Option<EntityGroup>>;
    /// Groups of one type; of one owner, or of every owner when `owner` is `None`.
    fn entity_groups(&self, group_type: EntityKind, owner: Option<Owner>, query: &PageQuery) -> Result<Page<EntityGroup>>;
    fn entity_group_by_name(&self, group_type: EntityKind, owner: Owner, name: &str) -> Result<Option<EntityGroup>>;
    /// A page of the group's members; `NotFound` when the group does not exist.
    fn entity_group_members(&self, group_id: Uuid, query: &PageQuery) -> Result<Page<GroupMember>>;
    /// The groups an entity belongs to.
    fn groups_of_entity(&self, entity_id: Uuid) -> Result<Vec<Uuid>>;
    /// Deletes the group and its memberships; the members themselves stay.
    fn delete_entity_group(&self, id: Uuid) -> Result<bool>;

    /// Creates the device, or updates the one with its id: name, profile, label, description
    /// and customer (`created_time` and the creating integration of an existing device are
    /// kept). The profile is the one named `device_type`, created if missing; the returned
    /// device carries its id. Names are unique (Conflict with ThingsBoard's message); an id that
    /// does not exist is created with that id, as ThingsBoard does not: callers check first.
    fn save_device(&self, device: &Device) -> Result<Device>;
    /// As [`Store::save_device`], for assets and asset profiles.
    fn save_asset(&self, asset: &Asset) -> Result<Asset>;
    /// Creates or updates (by id) a customer; titles are unique (Conflict).
    fn save_customer(&self, customer: &Customer) -> Result<()>;
    /// Writes attributes of any entity in one durable transaction, replacing same-named keys of
    /// the scope; `last_update_ts` is `ts`.
    fn save_attributes(&self, entity_id: Uuid, scope: &str, ts: Millis, values: &[(String, KvValue)]) -> Result<()>;
    /// Writes time-series points of any entity in one durable transaction; a point of an
    /// existing (key, ts) replaces it, and the latest value follows the newest point.
    fn save_timeseries(&self, entity_id: Uuid, points: &[(Millis, Vec<(String, KvValue)>)]) -> Result<()>;

    /// Deletes attributes of one scope by key in one durable transaction; absent keys are no error.
    fn delete_attributes(&self, entity_id: Uuid, scope: &str, keys: &[String]) -> Result<()>;
    /// Deletes time-series points (and latest values) as [`TimeseriesDeletion`] says, in one
    /// durable transaction.
    fn delete_timeseries(&self, entity_id: Uuid, deletion: &TimeseriesDeletion) -> Result<()>;

    fn timeseries_keys(&self, entity_id: Uuid) -> Result<Vec<String>>;
    /// Latest value per key; all keys when `keys` is `None`.
    fn latest_timeseries(&self, entity_id: Uuid, keys: Option<&[String]>) -> Result<Vec<(String, TsValue)>>;
    /// Latest values of `keys` for several entities at once, as (entity, key, value): the values a
    /// page of an entity query shows. A backend where each entity's read is an index lookup can
    /// keep this loop; SQLite reads its not-yet-moved points in one pass instead of one per entity.
    fn latest_timeseries_of(&self, entity_ids: &[Uuid], keys: &[String]) -> Result<Vec<(Uuid, String, TsValue)>> {
        let mut out = Vec::new();
        for id in entity_ids {
            out.extend(self.latest_timeseries(*id, Some(keys))?.into_iter().map(|(k, v)| (*id, k, v)));
        }
        Ok(out)
    }
    /// Raw history per key within `[start_ts, end_ts]`, at most `limit` points per key.
    fn timeseries_history(&self, entity_id: Uuid, query: &HistoryQuery) -> Result<Vec<(String, Vec<TsValue>)>>;
    fn attribute_keys(&self, entity_id: Uuid, scope: Option<&str>) -> Result<Vec<String>>;
    /// Attributes with their scope; all scopes when `scope` is `None`, all keys when `keys` is `None`.
    fn attributes(
        &self,
        entity_id: Uuid,
        scope: Option<&str>,
        keys: Option<&[String]>,
    ) -> Result<Vec<(String, AttributeValue)>>;

    /// One page of the devices, assets or customers a ThingsBoard entity query matches, paged
    /// and sorted by the database, with how many match in all.
    fn query_entities(&self, query: &entity_query::EntityQuery) -> Result<Page<entity_query::EntityRow>>;

    /// A page of events, newest first unless the query says ascending.
    fn events(&self, query: &EventQuery) -> Result<Page<Event>>;
    /// Deletes all events of one entity.
    fn delete_events_of(&self, entity_id: Uuid) -> Result<u64>;

    /// Forgets that records of a remote's outbox below `below` were stored: the remote has
    /// removed them from its outbox and will never send them again.
    fn forget_remote_records(&self, integration_id: Uuid, outbox: Uuid, below: u64) -> Result<u64>;

    /// Whether several nodes may share this store (PostgreSQL). Then the uplink writer itself
    /// refuses a (peer, Message ID) committed within EXCHANGE_LIFETIME by whichever node,
    /// answering it with the stored response, so the deduplication caches need no refill at
    /// start-up (they only save scripts); and what a node keeps in memory of the store (login
    /// sessions, the routing table) must be refreshed from it.
    fn shared_by_nodes(&self) -> bool {
        false
    }

    /// For a store several nodes share: a watch that tells this node when any node changed the
    /// configuration (converters, integrations). `None` for a store only this process writes.
    fn config_watch(&self) -> Result<Option<Box<dyn ConfigWatch>>> {
        Ok(None)
    }

    /// For a store several nodes share: one end of a channel every node hears, for telling the
    /// other nodes' WebSocket subscribers what this node committed (and which entities this
    /// node's subscribers watch). Each call opens another end (one to send, one to receive).
    /// `None` for a store only this process writes.
    fn live_channel(&self) -> Result<Option<Box<dyn LiveChannel>>> {
        Ok(None)
    }

    /// For a store several nodes share: waits until every live node reports that it routes by
    /// the current configuration, at most `within`; false when some node did not in time (it
    /// has just died, or is stuck). A store only this process writes returns true at once.
    fn await_config_applied(&self, within: std::time::Duration) -> Result<bool> {
        let _ = within;
        Ok(true)
    }

    /// How many uplink writers the server should run side by side, each on its own thread:
    /// 1 for a database with one writer at a time (SQLite); more where transactions commit in
    /// parallel and the writes of one batch wait for the server (PostgreSQL).
    fn parallel_writers(&self) -> usize {
        1
    }

    /// Opens a writer for the uplink path. It owns its connection and caches, and is driven
    /// from a single thread; the server opens [`Store::parallel_writers`] of them.
    fn uplink_writer(&self) -> Result<Box<dyn UplinkWriter>>;
}

/// Messages between the nodes sharing a store ([`Store::live_channel`]); best effort: a message
/// sent while another node's end is reconnecting is lost for that node.
pub trait LiveChannel: Send {
    /// Sends each payload (at most [`LIVE_PAYLOAD_MAX`] bytes) to every node's receiving end,
    /// this node's included, in one round trip.
    fn send(&mut self, payloads: &[String]) -> Result<()>;

    /// Waits up to `timeout` for payloads sent since the last call; empty when none came.
    fn receive(&mut self, timeout: std::time::Duration) -> Result<Vec<String>>;
}

/// The largest payload a [`LiveChannel`] carries (PostgreSQL's NOTIFY takes under 8,000 bytes).
pub const LIVE_PAYLOAD_MAX: usize = 7_800;

/// Learns of configuration changes other nodes make (see [`Store::config_watch`]).
pub trait ConfigWatch: Send {
    /// Waits until a change may have been made or `timeout` passed, then returns the
    /// configuration epoch, which every change of a converter or integration increases: the
    /// caller reloads when it differs from the epoch of its last reload. Reading the epoch each
    /// time is the fallback for a notification lost with a connection.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<i64>;

    /// Tells the other nodes that this one routes by the configuration of `epoch` and is alive
    /// (called at least every second; see [`Store::await_config_applied`]).
    fn report(&mut self, epoch: i64) -> Result<()>;
}

/// The uplink write path: many uplinks per durable transaction.
pub trait UplinkWriter: Send {
    /// Stores `batch` in one transaction and makes it durable before returning.
    ///
    /// The outer `Err` means nothing of the batch was stored. Otherwise there is one entry per
    /// record: a record is either stored completely or rejected completely (e.g. a device that
    /// may not be created), and rejected records never affect the others. Customers, profiles
    /// and entity groups an uplink needs are created in the same transaction as its entities.
    fn commit(&mut self, batch: &[UplinkRecord]) -> Result<Vec<Result<UplinkOutcome, UplinkRejection>>>;

    /// Background upkeep between commits (e.g. deleting points already moved into their final
    /// table, expiring old exchanges). Called by the writer thread after each commit and, while
    /// no uplinks arrive, on a timer; must keep its pauses short. Returns whether more work is
    /// waiting: an idle writer then calls it again at once, so a backlog is worked off before
    /// traffic returns rather than a slice per commit once it has.
    fn maintain(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Splits durability from the commit, for a writer that can overlap the two: after this
    /// returns `Some(barrier)`, `commit` returns once the batch is written but not yet durable,
    /// and a batch is durable once a call to `barrier.sync()` that *started after* its commit
    /// returned has returned `Ok`. The caller then runs the syncs on another thread, so the next
    /// batch is prepared while the disk flushes the previous ones, and one flush covers several
    /// commits. `None` (the default) keeps every commit durable on return.
    fn split_durability(&mut self) -> Result<Option<Box<dyn DurabilityBarrier>>> {
        Ok(None)
    }
}

/// Makes every commit that returned before `sync` was called durable. See
/// [`UplinkWriter::split_durability`].
pub trait DurabilityBarrier: Send {
    fn sync(&mut self) -> Result<()>;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
