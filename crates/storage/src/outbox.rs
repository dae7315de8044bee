//! A remote integration's outbox: converted uplinks that are durable at the edge and wait for
//! the platform to commit them.
//!
//! `coapgate remote` answers a device 2.01 once its uplink is in here (the same group-commit
//! writer as `serve` drives [`OutboxWriter`], and every commit is `synchronous=FULL`), and a row
//! leaves only when the platform has acknowledged it ([`Outbox::remove`]). Rows are numbered by
//! SQLite's AUTOINCREMENT, so sequence numbers grow and are never reused, even after every row is
//! gone; together with the outbox's id (a UUID made with the file) they name a record exactly,
//! which is what lets the platform store a resend once.
//!
//! The file also keeps the CoAP exchanges of the uplinks it holds (for the deduplication cache
//! across a restart, as the platform's database does for `serve`) and small named values (the
//! last configuration the platform sent, so a remote restarted while the platform is away
//! ingests at once).
//!
//! The outbox is bounded in bytes: a record that would take it over the limit is refused
//! ([`UplinkRejection::OutboxFull`], a 5.03 for the device); nothing already in it is ever
//! dropped to make room.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::model::{Exchange, Millis, UplinkOutcome, UplinkRecord, UplinkRejection};
use crate::sqlite::{EXCHANGE_LIFETIME_MS, expire_exchanges, open_file, remember_exchanges};
use crate::{ExchangeLog, Result, StorageError, UplinkWriter};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, received_ts INTEGER NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS coap_exchange_log (
    ts INTEGER NOT NULL, peer TEXT NOT NULL, message_id INTEGER NOT NULL, response BLOB NOT NULL);
"#;

/// What a row costs beyond its record bytes (sequence number, timestamp, B-tree cell), counted
/// against the limit so that many tiny records cannot exceed it by far.
pub const ROW_OVERHEAD_BYTES: u64 = 32;

/// One record waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub seq: u64,
    pub received_ts: Millis,
    pub record: Vec<u8>,
}

/// Turns a record into the bytes the outbox keeps (the remote protocol's encoding).
pub type Encoder = Arc<dyn Fn(&UplinkRecord) -> Vec<u8> + Send + Sync>;

pub struct Outbox {
    path: PathBuf,
    id: Uuid,
    max_bytes: u64,
    conn: Mutex<Connection>,
    /// Rows and bytes (records plus [`ROW_OVERHEAD_BYTES`] each) in the outbox now.
    records: AtomicU64,
    bytes: AtomicU64,
    /// Records committed since the process started.
    received: AtomicU64,
    /// The highest sequence number committed so far (0: none ever), so a sender can tell
    /// without a query that nothing new is waiting.
    newest: AtomicU64,
}

impl Outbox {
    /// Opens (creating if needed) the outbox file; `max_bytes` bounds what it holds. Refuses a
    /// file whose write-ahead log is damaged: acknowledged uplinks would be lost silently.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Arc<Outbox>> {
        if let Some(report) = crate::sqlite_wal::check_wal(path)
            .map_err(|e| StorageError::Other(format!("{}: cannot read the write-ahead log: {e}", path.display())))?
            && report.damage.is_some()
        {
            return Err(StorageError::DamagedWal(vec![report]));
        }
        let opened = (|| -> Result<(Connection, Uuid, u64, u64, u64)> {
            let conn = open_file(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            // FULL: a commit is on disk when it returns, which is when the device gets its 2.01.
            conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")?;
            conn.execute_batch(SCHEMA)?;
            let id = match conn
                .query_row("SELECT value FROM meta WHERE name = 'outbox_id'", [], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            {
                Some(bytes) => Uuid::from_slice(&bytes).map_err(|e| StorageError::Other(format!("outbox id: {e}")))?,
                None => {
                    let id = Uuid::new_v4();
                    conn.execute("INSERT INTO meta (name, value) VALUES ('outbox_id', ?1)", [id.as_bytes().to_vec()])?;
                    id
                }
            };
            let (records, bytes): (i64, i64) =
                conn.query_row("SELECT count(*), coalesce(sum(length(record)), 0) FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let newest: i64 = conn.query_row(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
                [],
                |r| r.get(0),
            )?;
            Ok((conn, id, records as u64, bytes as u64 + records as u64 * ROW_OVERHEAD_BYTES, newest as u64))
        })()
        .map_err(|e| StorageError::Other(format!("{}: {e}", path.display())))?;
        let (conn, id, records, bytes, newest) = opened;
        Ok(Arc::new(Outbox {
            path: path.to_path_buf(),
            id,
            max_bytes,
            conn: Mutex::new(conn),
            records: AtomicU64::new(records),
            bytes: AtomicU64::new(bytes),
            received: AtomicU64::new(0),
            newest: AtomicU64::new(newest),
        }))
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Rows and bytes waiting now.
    pub fn backlog(&self) -> (u64, u64) {
        (self.records.load(Ordering::Acquire), self.bytes.load(Ordering::Acquire))
    }

    /// The highest sequence number committed so far (0: none ever).
    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    /// Records committed since the process started.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `limit` rows (and about `max_bytes`, at least one row) after `after`, oldest first.
    pub fn pending(&self, after: u64, limit: usize, max_bytes: usize) -> Result<Vec<OutboxRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT seq, received_ts, record FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let mut rows = Vec::new();
        let mut bytes = 0;
        let mut query = stmt.query(params![after as i64, limit as i64])?;
        while let Some(r) = query.next()? {
            let row = OutboxRow { seq: r.get::<_, i64>(0)? as u64, received_ts: r.get(1)?, record: r.get(2)? };
            bytes += row.record.len();
            rows.push(row);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(rows)
    }

    /// The rows with these sequence numbers that are still waiting, oldest first.
    pub fn rows(&self, seqs: &[u64]) -> Result<Vec<OutboxRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT seq, received_ts, record FROM outbox WHERE seq = ?1")?;
        let mut rows = Vec::new();
        for seq in seqs {
            if let Some(row) = stmt
                .query_row([*seq as i64], |r| {
                    Ok(OutboxRow { seq: r.get::<_, i64>(0)? as u64, received_ts: r.get(1)?, record: r.get(2)? })
                })
                .optional()?
            {
                rows.push(row);
            }
        }
        rows.sort_by_key(|r| r.seq);
        Ok(rows)
    }

    /// The lowest sequence number still waiting; when none is, one above the highest ever used.
    /// Everything below it has left the outbox for good.
    pub fn lowest_waiting(&self) -> Result<u64> {
        let conn = self.lock();
        let (min, next): (Option<i64>, i64) = conn.query_row(
            "SELECT (SELECT min(seq) FROM outbox), coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0) + 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(min.unwrap_or(next) as u64)
    }

    /// Removes rows the platform acknowledged, in one transaction. Not synced on its own: a
    /// removal lost in a crash only makes the remote send those rows again, and the platform
    /// answers them as duplicates.
    pub fn remove(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut freed = (0u64, 0u64);
        {
            let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1 RETURNING length(record)")?;
            for seq in seqs {
                if let Some(len) = stmt.query_row([*seq as i64], |r| r.get::<_, i64>(0)).optional()? {
                    freed.0 += 1;
                    freed.1 += len as u64 + ROW_OVERHEAD_BYTES;
                }
            }
        }
        tx.commit()?;
        self.records.fetch_sub(freed.0, Ordering::AcqRel);
        self.bytes.fetch_sub(freed.1, Ordering::AcqRel);
        Ok(())
    }

    /// A named value kept in the outbox file (the last configuration, for instance).
    pub fn value(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    }

    /// Stores a named value durably (the connection is `synchronous=FULL`).
    pub fn put_value(&self, name: &str, value: &[u8]) -> Result<()> {
        self.lock().execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)", params![name, value])?;
        Ok(())
    }

    /// The writer for the group-commit thread: `encode` turns a record into the bytes kept,
    /// `committed` is called after every commit that added rows (it wakes the sender).
    pub fn writer(self: &Arc<Self>, encode: Encoder, committed: Arc<dyn Fn() + Send + Sync>) -> Box<dyn UplinkWriter> {
        Box::new(OutboxWriter { outbox: self.clone(), encode, committed, last_expiry: std::time::Instant::now() })
    }
}

impl ExchangeLog for Outbox {
    fn recent_exchanges(&self, since: Millis, limit: usize) -> Result<Vec<Exchange>> {
        crate::sqlite::recent_exchanges(&self.lock(), since, limit)
    }

    fn find_exchange(&self, peer: &str, message_id: u16, since: Millis) -> Result<Option<Exchange>> {
        crate::sqlite::find_exchange(&self.lock(), peer, message_id, since)
    }
}

/// The outbox's side of the group-commit writer.
struct OutboxWriter {
    outbox: Arc<Outbox>,
    encode: Encoder,
    committed: Arc<dyn Fn() + Send + Sync>,
    last_expiry: std::time::Instant,
}

impl UplinkWriter for OutboxWriter {
    fn commit(&mut self, batch: &[UplinkRecord]) -> Result<Vec<std::result::Result<UplinkOutcome, UplinkRejection>>> {
        let encoded: Vec<Vec<u8>> = batch.iter().map(|r| (self.encode)(r)).collect();
        let outbox = &self.outbox;
        let mut conn = outbox.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut added = (0u64, 0u64);
        let mut newest = 0;
        {
            let mut insert = tx.prepare_cached("INSERT INTO outbox (received_ts, record) VALUES (?1, ?2)")?;
            let mut exchanges = Vec::with_capacity(batch.len());
            let used = outbox.bytes.load(Ordering::Acquire);
            for (record, bytes) in batch.iter().zip(&encoded) {
                let cost = bytes.len() as u64 + ROW_OVERHEAD_BYTES;
                if used + added.1 + cost > outbox.max_bytes {
                    results.push(Err(UplinkRejection::OutboxFull));
                    continue;
                }
                insert.execute(params![record.received_ts, bytes])?;
                // Read here: the exchanges' rows come after, and the connection's last rowid
                // is theirs then.
                newest = tx.last_insert_rowid() as u64;
                exchanges.extend(&record.exchange);
                added.0 += 1;
                added.1 += cost;
                results.push(Ok(UplinkOutcome::default()));
            }
            remember_exchanges(&tx, &exchanges)?;
        }
        tx.commit()?;
        drop(conn);
        if added.0 > 0 {
            outbox.newest.fetch_max(newest, Ordering::AcqRel);
        }
        outbox.records.fetch_add(added.0, Ordering::AcqRel);
        outbox.bytes.fetch_add(added.1, Ordering::AcqRel);
        outbox.received.fetch_add(added.0, Ordering::Relaxed);
        if added.0 > 0 {
            (self.committed)();
        }
        Ok(results)
    }

    fn maintain(&mut self) -> Result<bool> {
        if self.last_expiry.elapsed() < std::time::Duration::from_secs(1) {
            return Ok(false);
        }
        self.last_expiry = std::time::Instant::now();
        let deleted = expire_exchanges(&self.outbox.lock(), crate::now_millis() - EXCHANGE_LIFETIME_MS)?;
        Ok(deleted > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityUpdate;

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("coapgate-outbox-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(ts: i64) -> UplinkRecord {
        UplinkRecord {
            integration_id: Uuid::nil(),
            allow_create_devices: true,
            received_ts: ts,
            update_only_keys: Arc::from(Vec::new()),
            entities: vec![EntityUpdate::device("SN-1", "default")],
            exchange: Some(Exchange { peer: "127.0.0.1:1".into(), message_id: ts as u16, ts, response: vec![0x60] }),
            remote: None,
            converter: None,
        }
    }

    fn encoder() -> Encoder {
        Arc::new(|r: &UplinkRecord| vec![0u8; 10 + r.received_ts as usize % 3])
    }

    #[test]
    fn rows_keep_their_numbers_across_a_reopen_and_numbers_are_never_reused() {
        let dir = dir();
        let path = dir.join("outbox.db");
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        let id = outbox.id();
        let mut writer = outbox.writer(encoder(), Arc::new(|| {}));
        let results = writer.commit(&[record(1), record(2), record(3)]).unwrap();
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(outbox.backlog().0, 3);
        outbox.remove(&[1, 2, 3]).unwrap();
        assert_eq!(outbox.backlog(), (0, 0));
        assert_eq!(outbox.lowest_waiting().unwrap(), 4, "an empty outbox still remembers its last number");
        assert_eq!(outbox.newest(), 3);
        writer.commit(&[record(4)]).unwrap();
        drop(writer);
        drop(outbox);
        let outbox = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(outbox.id(), id);
        assert_eq!(outbox.newest(), 4, "the newest number survives a reopen");
        let rows = outbox.pending(0, 10, 1 << 20).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4]);
        assert_eq!(outbox.backlog().0, 1);
        assert_eq!(outbox.recent_exchanges(0, 10).unwrap().len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The link sends up to `newest`: it must be the last record's number, not the row number
    /// of the exchange committed after it (the two differ once a record came without one).
    #[test]
    fn newest_is_the_last_records_number_whatever_the_exchanges() {
        let dir = dir();
        let outbox = Outbox::open(&dir.join("outbox.db"), 1 << 20).unwrap();
        let mut writer = outbox.writer(encoder(), Arc::new(|| {}));
        let without = |ts| UplinkRecord { exchange: None, ..record(ts) };
        writer.commit(&[without(1), without(2), without(3)]).unwrap();
        assert_eq!(outbox.newest(), 3);
        writer.commit(&[record(4), record(5)]).unwrap();
        assert_eq!(outbox.newest(), 5, "the exchanges' rows are 1 and 2");
        assert_eq!(outbox.recent_exchanges(0, 10).unwrap().iter().map(|e| e.message_id).collect::<Vec<_>>(), vec![4, 5]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_outbox_refuses_new_records_and_keeps_the_old_ones() {
        let dir = dir();
        let outbox = Outbox::open(&dir.join("outbox.db"), 3 * (10 + ROW_OVERHEAD_BYTES)).unwrap();
        let mut writer = outbox.writer(Arc::new(|_: &UplinkRecord| vec![0u8; 10]), Arc::new(|| {}));
        let results = writer.commit(&[record(1), record(2), record(3), record(4)]).unwrap();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(results[3], Err(UplinkRejection::OutboxFull));
        assert_eq!(outbox.pending(0, 10, 1 << 20).unwrap().len(), 3);
        outbox.remove(&[1]).unwrap();
        assert!(writer.commit(&[record(5)]).unwrap()[0].is_ok(), "room again once a row left");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
