//! `cargo bench -p coapgate-storage`: group-commit throughput of the SQLite uplink writer.
//!
//! Commits the seed uplink (two telemetry values for one of 1,000 devices) in batches of
//! several sizes, durably (WAL, synchronous=FULL), and prints records per second. This is the
//! writer alone: the ceiling the CoAP path can reach with storage in the loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coapgate_storage::model::{EntityUpdate, Exchange, KvValue, UplinkRecord};
use coapgate_storage::{SqliteStore, Store};

fn record(device: usize, ts: i64) -> UplinkRecord {
    let mut update = EntityUpdate::device(format!("SN-{device}"), "default");
    update.telemetry =
        vec![(ts, vec![("temperature".to_string(), KvValue::Double(25.7)), ("humidity".to_string(), KvValue::Long(69))])];
    UplinkRecord {
        integration_id: uuid::Uuid::nil(),
        allow_create_devices: true,
        received_ts: ts,
        update_only_keys: Arc::from(Vec::new()),
        entities: vec![update],
        // Every CoAP uplink carries its exchange for crash-safe deduplication.
        exchange: Some(Exchange {
            peer: format!("10.0.{}.{}:5683", device / 250, device % 250),
            message_id: ts as u16,
            ts,
            response: vec![0x61, 0x41, (ts >> 8) as u8, ts as u8, 0x01],
        }),
        remote: None,
        converter: None,
    }
}

/// The next `size` uplinks, each a moment later than the last, spread over the 1,000 devices.
fn next_batch(size: usize, ts: &mut i64) -> Vec<UplinkRecord> {
    (0..size)
        .map(|i| {
            *ts += 1;
            record((*ts as usize + i) % 1000, *ts)
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("coapgate-writer-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("bench.db")).unwrap();
    let mut writer = store.uplink_writer().unwrap();
    let mut ts = 1;
    // Create the devices first, as a fleet that has been running would have them.
    let warm: Vec<_> = (0..1000).map(|d| record(d, 0)).collect();
    writer.commit(&warm).unwrap();
    // WRITER_BENCH_SPLIT_ONLY=1 skips the synced runs (for profiling the writer's own work).
    let synced: &[usize] = if std::env::var_os("WRITER_BENCH_SPLIT_ONLY").is_some() { &[] } else { &[1, 10, 100, 1000] };
    for &batch_size in synced {
        let started = Instant::now();
        let mut records = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            let batch = next_batch(batch_size, &mut ts);
            writer.commit(&batch).unwrap();
            writer.maintain().unwrap();
            records += batch_size as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("batch {batch_size:>5}: {:>8.0} uplinks/s  {:>7.1} µs/uplink", records as f64 / secs, secs * 1e6 / records as f64);
    }
    // As the server runs it: commits with synchronous=NORMAL and the WAL flushed by another
    // thread, so the writer's own cost per uplink is the commit alone (no fsync in it).
    let _barrier = writer.split_durability().unwrap().expect("SQLite splits durability");
    for batch_size in [20usize, 100] {
        let started = Instant::now();
        let mut records = 0u64;
        let mut committing = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(3) {
            let batch = next_batch(batch_size, &mut ts);
            let commit_started = Instant::now();
            writer.commit(&batch).unwrap();
            writer.maintain().unwrap();
            committing += commit_started.elapsed();
            records += batch_size as u64;
        }
        println!("split, batch {batch_size:>4}: {:>7.2} µs/uplink in the writer (commit + upkeep, flush elsewhere)", committing.as_secs_f64() * 1e6 / records as f64);
    }
    after_a_quiet_spell(writer.as_mut(), &mut ts);
    let _ = std::fs::remove_dir_all(dir);
}

/// The first uplinks after a quiet spell (issue 13, finding 8). A busy period leaves its
/// exchanges in the log; 247 s later they all expire together. When upkeep waited for traffic,
/// the first commits after the quiet spell each carried a 10,000-row slice of that backlog;
/// the writer now works it off on a timer while idle (`catch_up`, here the `while maintain()`),
/// so the first commits cost what commits always cost. The bench's exchanges carry 1970
/// timestamps, so they are expired as soon as they are written.
fn after_a_quiet_spell(writer: &mut dyn coapgate_storage::UplinkWriter, ts: &mut i64) {
    let backlog: usize = std::env::var("WRITER_BENCH_BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    for idle_upkeep in [false, true] {
        // The busy period: commits without upkeep, as if their exchanges had not expired yet.
        while writer.maintain().unwrap() {}
        for _ in 0..backlog / 1000 {
            writer.commit(&next_batch(1000, ts)).unwrap();
        }
        // The quiet spell (only when upkeep runs while idle).
        let quiet = Instant::now();
        if idle_upkeep {
            std::thread::sleep(Duration::from_millis(150));
            while writer.maintain().unwrap() {}
        }
        let quiet = quiet.elapsed();
        // Traffic returns: 20,000 uplinks in batches of 20, upkeep after each commit.
        let started = Instant::now();
        let mut worst = Duration::ZERO;
        for _ in 0..1000 {
            let one = Instant::now();
            writer.commit(&next_batch(20, ts)).unwrap();
            writer.maintain().unwrap();
            worst = worst.max(one.elapsed());
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "after a quiet spell, {backlog} expired exchanges, upkeep {}: first 20,000 uplinks at {:>7.0} uplinks/s, longest commit + upkeep {:>6.1} ms{}",
            if idle_upkeep { "while idle" } else { "waits for traffic" },
            20_000.0 / secs,
            worst.as_secs_f64() * 1e3,
            if idle_upkeep { format!(" (idle upkeep took {:.1} s of the quiet spell)", quiet.as_secs_f64()) } else { String::new() }
        );
    }
}
