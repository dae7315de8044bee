//! Debug, lifecycle, statistics and error events, recorded without slowing uplinks.
//!
//! The uplink path only builds an event and `try_send`s it to a bounded queue; a background
//! thread inserts queued events in batches (one transaction per batch) and deletes expired ones.
//! When the queue is full the event is dropped and counted: events are diagnostics, and
//! uplinks must never wait for them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use coapgate_storage::EventLog;
use coapgate_storage::model::{EntityKind, Event, Millis};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::{Value, json};
use uuid::Uuid;

/// Event texts (messages, payloads, outputs, errors) are cut to this many characters.
pub const MAX_TEXT_CHARS: usize = 4096;
/// ThingsBoard keeps "debug all" on for at most 15 minutes.
pub const MAX_DEBUG_ALL: Duration = Duration::from_secs(15 * 60);

const QUEUE_CAPACITY: usize = 20_000;
/// Events one entity may record per second; more are dropped and counted. A converter failing on
/// every uplink of a flood would otherwise write as many events as the flood has uplinks.
const MAX_EVENTS_PER_ENTITY_PER_SECOND: u32 = 100;
const BATCH: usize = 1_000;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const EXPIRE_EVERY: Duration = Duration::from_secs(600);

/// ThingsBoard's `debugSettings` of an integration or converter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DebugSettings {
    pub failures_enabled: bool,
    pub all_enabled: bool,
    pub all_enabled_until: Millis,
}

impl DebugSettings {
    pub fn from_json(v: &Value) -> DebugSettings {
        DebugSettings {
            failures_enabled: v.get("failuresEnabled").and_then(Value::as_bool).unwrap_or(false),
            all_enabled: v.get("allEnabled").and_then(Value::as_bool).unwrap_or(false),
            all_enabled_until: v.get("allEnabledUntil").and_then(Value::as_i64).unwrap_or(0),
        }
    }

    /// Whether to record an event: failures when `failuresEnabled`; everything while
    /// `allEnabledUntil` is in the future.
    pub fn records(&self, failure: bool, now: Millis) -> bool {
        (failure && self.failures_enabled) || (self.all_enabled && self.all_enabled_until > now)
    }

    /// The settings as saved: "debug all" is limited to 15 minutes from now, as in ThingsBoard;
    /// turning it on without an end time means the full 15 minutes.
    pub fn normalized(v: Option<&Value>, legacy_debug_mode: bool, now: Millis) -> Value {
        let mut s = v.map(DebugSettings::from_json).unwrap_or(DebugSettings {
            failures_enabled: true,
            all_enabled: legacy_debug_mode,
            all_enabled_until: 0,
        });
        let cap = now + MAX_DEBUG_ALL.as_millis() as Millis;
        if s.all_enabled {
            if s.all_enabled_until <= now || s.all_enabled_until > cap {
                s.all_enabled_until = cap;
            }
        } else {
            s.all_enabled_until = 0;
        }
        json!({"failuresEnabled": s.failures_enabled, "allEnabled": s.all_enabled, "allEnabledUntil": s.all_enabled_until})
    }
}

/// How a payload is shown in events, decided by its Content-Format as ThingsBoard does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataType {
    Json,
    Text,
    Binary,
}

impl DataType {
    pub fn of_content_format(format: Option<u32>) -> DataType {
        match format {
            Some(50) | Some(110) | Some(11543) => DataType::Json,
            Some(0) | Some(41) | Some(11542) => DataType::Text,
            _ => DataType::Binary,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Json => "JSON",
            DataType::Text => "TEXT",
            DataType::Binary => "BINARY",
        }
    }

    /// The payload as event text: UTF-8 for JSON and TEXT, Base64 for BINARY.
    pub fn render(self, payload: &[u8]) -> String {
        match self {
            DataType::Json | DataType::Text => String::from_utf8_lossy(payload).into_owned(),
            DataType::Binary => base64::engine::general_purpose::STANDARD.encode(payload),
        }
    }
}

/// Cuts `text` to [`MAX_TEXT_CHARS`] characters.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((byte, _)) => text[..byte].to_string(),
        None => text.to_string(),
    }
}

/// Per-integration counters for `STATS` events.
#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    errors: AtomicU64,
    /// Counted in a `STATS` event that is queued but not yet stored: the live counts add them,
    /// so an uplink never disappears from the counts between a flush and its insert.
    pending_processed: AtomicU64,
    pending_errors: AtomicU64,
}

/// An integration's messages of the last 24 hours: stored `STATS` events plus what this node
/// counted and has not stored yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct MessageCounts {
    pub processed: u64,
    pub errors: u64,
}

/// How long a sum of stored `STATS` events is reused. This node's own flushes invalidate it at
/// once; other nodes' flushes (every [`STATS_EVERY`]) show within this time.
const STORED_COUNTS_TTL: Duration = Duration::from_secs(5);
/// The window of the live counts.
pub const COUNTS_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Events dropped per entity, by minute, in this node's memory: how many the per-entity rate
/// cap refused and how many found the queue full. Bounded: [`DROP_MINUTES`] minutes per entity
/// (the oldest go first) and [`DROP_ENTITIES`] entities (the one whose last drop is oldest goes
/// first): at most about 5 MB (128 × 1440 × 24 bytes), in practice a few entries.
#[derive(Default)]
struct DropBook {
    entities: HashMap<Uuid, std::collections::VecDeque<DropMinute>>,
}

#[derive(Debug, Clone, Copy)]
struct DropMinute {
    /// Minutes since the epoch.
    minute: i64,
    rate_limited: u64,
    queue_full: u64,
}

const DROP_MINUTES: usize = 24 * 60;
const DROP_ENTITIES: usize = 128;

/// The sum of an integration's stored `STATS` events, as last read.
#[derive(Debug, Clone, Copy, Default)]
struct StoredCounts {
    read_at: Option<Instant>,
    counts: MessageCounts,
    /// When this node last stored a `STATS` event of the integration: a sum read before that
    /// misses it.
    stored_at: Option<Instant>,
}

impl StoredCounts {
    fn fresh(&self) -> Option<MessageCounts> {
        let read_at = self.read_at?;
        (read_at.elapsed() < STORED_COUNTS_TTL && self.stored_at.is_none_or(|s| s < read_at)).then_some(self.counts)
    }
}

/// What [`EventSink::dropped_between`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DropReport {
    pub rate_limited: u64,
    pub queue_full: u64,
    /// The oldest minute still remembered for this entity (ms), if any.
    pub remembered_since: Option<Millis>,
}

impl DropBook {
    fn add(&mut self, entity: Uuid, now: Millis, queue_full: bool) {
        let minute = now.div_euclid(60_000);
        if !self.entities.contains_key(&entity) && self.entities.len() >= DROP_ENTITIES {
            let oldest = self.entities.iter().min_by_key(|(_, m)| m.back().map_or(i64::MIN, |b| b.minute)).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.entities.remove(&oldest);
            }
        }
        let minutes = self.entities.entry(entity).or_default();
        if minutes.back().is_none_or(|b| b.minute != minute) {
            if minutes.len() >= DROP_MINUTES {
                minutes.pop_front();
            }
            minutes.push_back(DropMinute { minute, rate_limited: 0, queue_full: 0 });
        }
        let slot = minutes.back_mut().expect("pushed above");
        if queue_full {
            slot.queue_full += 1;
        } else {
            slot.rate_limited += 1;
        }
    }

    /// Drops in the minutes that overlap `[start, end]`.
    fn between(&self, entity: Uuid, start: Millis, end: Millis) -> DropReport {
        let Some(minutes) = self.entities.get(&entity) else { return DropReport::default() };
        let mut report = DropReport { remembered_since: minutes.front().map(|m| m.minute * 60_000), ..DropReport::default() };
        for m in minutes.iter().filter(|m| m.minute * 60_000 + 59_999 >= start && m.minute * 60_000 <= end) {
            report.rate_limited += m.rate_limited;
            report.queue_full += m.queue_full;
        }
        report
    }
}

/// The handle every producer of events holds.
pub struct EventSink {
    tx: Sender<Event>,
    server: String,
    stats: Mutex<HashMap<Uuid, Arc<Counters>>>,
    /// Per entity: the second (since the epoch) being counted and how many events it recorded.
    rate: Mutex<HashMap<Uuid, (i64, u32)>>,
    /// Per entity and minute, the events dropped (rate cap or full queue).
    drops: Mutex<DropBook>,
    /// Per integration: the sum of its stored `STATS` events of the last 24 hours and when it
    /// was read.
    stored_counts: Mutex<HashMap<Uuid, StoredCounts>>,
    pub dropped: AtomicU64,
    pub rate_limited: AtomicU64,
    pub recorded: AtomicU64,
}

impl EventSink {
    /// Starts the recording thread; `ttl` is how long events are kept. Events name this
    /// machine as their `server`.
    pub fn start(store: Arc<dyn EventLog>, ttl: Duration) -> Arc<EventSink> {
        EventSink::start_as(store, ttl, host_name())
    }

    /// [`EventSink::start`] with events naming `server` (a remote's service id).
    pub fn start_as(store: Arc<dyn EventLog>, ttl: Duration, server: String) -> Arc<EventSink> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_CAPACITY);
        let sink = Arc::new(EventSink {
            tx,
            server,
            stats: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
            drops: Mutex::new(DropBook::default()),
            stored_counts: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
        });
        let thread_sink = Arc::downgrade(&sink);
        std::thread::Builder::new()
            .name("event-recorder".into())
            .spawn(move || record_loop(store, rx, ttl, thread_sink))
            .expect("spawning the event recorder");
        sink
    }

    /// Records an event a remote integration recorded, as it recorded it (its time, its
    /// `server`), under the same per-entity rate cap as local ones.
    pub fn forward(&self, event: Event) {
        self.enqueue(event);
    }

    /// Whether `entity` may record one more event this second.
    fn within_rate(&self, entity: Uuid, now: Millis) -> bool {
        let second = now / 1000;
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        if rate.len() > 10_000 {
            rate.retain(|_, (s, _)| *s == second);
        }
        let slot = rate.entry(entity).or_insert((second, 0));
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
        slot.1 <= MAX_EVENTS_PER_ENTITY_PER_SECOND
    }

    fn push(&self, entity_kind: EntityKind, entity_id: Uuid, event_type: &str, mut body: Value) {
        if let Value::Object(map) = &mut body {
            map.insert("server".into(), Value::String(self.server.clone()));
        }
        self.enqueue(Event {
            id: Uuid::new_v4(),
            created_time: coapgate_storage::now_millis(),
            entity_kind,
            entity_id,
            event_type: event_type.into(),
            uid: self.server.clone(),
            body,
        });
    }

    /// Queues an event for the recorder, under the per-entity rate cap for debug and error
    /// events (lifecycle and statistics events are rare and always kept).
    fn enqueue(&self, event: Event) {
        let rate_capped = matches!(event.event_type.as_str(), "DEBUG_INTEGRATION" | "DEBUG_CONVERTER" | "ERROR");
        let now = coapgate_storage::now_millis();
        if rate_capped && !self.within_rate(event.entity_id, now) {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.drops.lock().unwrap_or_else(|e| e.into_inner()).add(event.entity_id, now, false);
            return;
        }
        let entity = event.entity_id;
        if let Err(refused) = self.tx.try_send(event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.drops.lock().unwrap_or_else(|e| e.into_inner()).add(entity, now, true);
            // A lost STATS event's counts are gone; they must not stay pending for ever.
            self.stats_stored(&refused.into_inner());
        }
    }

    /// The events of `entity` this node dropped in the minutes overlapping `[start, end]`.
    /// Per node by design: drops happen when a node is overloaded, and writing them to the
    /// shared database would add load exactly then.
    pub fn dropped_between(&self, entity: Uuid, start: Millis, end: Millis) -> DropReport {
        self.drops.lock().unwrap_or_else(|e| e.into_inner()).between(entity, start, end)
    }

    /// The per-entity rate cap (events per second).
    pub fn rate_cap(&self) -> u32 {
        MAX_EVENTS_PER_ENTITY_PER_SECOND
    }

    /// The name events of this node carry as their `server`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An integration's messages of the last 24 hours, current to the last uplink this node
    /// finished: stored `STATS` events (the sum is reused for [`STORED_COUNTS_TTL`], and read
    /// again as soon as this node stores one) plus the counters not stored yet.
    pub fn message_counts(&self, store: &dyn coapgate_storage::Store, integration: Uuid) -> coapgate_storage::Result<MessageCounts> {
        let cached = self
            .stored_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&integration)
            .and_then(StoredCounts::fresh);
        let stored = match cached {
            Some(c) => c,
            None => {
                // Read before the counters below: a flush in between is then counted as pending
                // or, once stored, invalidates this sum; never counted twice for long.
                let read_at = Instant::now();
                let since = coapgate_storage::now_millis() - COUNTS_WINDOW.as_millis() as Millis;
                let c = stored_stats_sum(store, integration, since)?;
                let mut cache = self.stored_counts.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() > 10_000 {
                    cache.retain(|_, entry| entry.fresh().is_some());
                }
                let entry = cache.entry(integration).or_default();
                entry.read_at = Some(read_at);
                entry.counts = c;
                c
            }
        };
        let live = self.stats.lock().unwrap_or_else(|e| e.into_inner()).get(&integration).cloned();
        let (processed, errors) = live.map_or((0, 0), |c| {
            (
                c.processed.load(Ordering::Relaxed) + c.pending_processed.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed) + c.pending_errors.load(Ordering::Relaxed),
            )
        });
        Ok(MessageCounts { processed: stored.processed + processed, errors: stored.errors + errors })
    }

    /// A `STATS` event left the queue (stored, or lost): its counts are no longer pending, and
    /// the integration's stored sum is read again next time.
    fn stats_stored(&self, event: &Event) {
        if event.event_type != "STATS" {
            return;
        }
        let processed = event.body.get("messagesProcessed").and_then(Value::as_u64).unwrap_or(0);
        let errors = event.body.get("errorsOccurred").and_then(Value::as_u64).unwrap_or(0);
        if let Some(c) = self.stats.lock().unwrap_or_else(|e| e.into_inner()).get(&event.entity_id) {
            let _ = c.pending_processed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(processed)));
            let _ = c.pending_errors.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(errors)));
        }
        let mut cache = self.stored_counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = cache.get_mut(&event.entity_id) {
            entry.stored_at = Some(Instant::now());
        }
    }

    /// The integration's `Uplink` debug event.
    /// The integration's `Uplink` debug event. Beyond ThingsBoard it also carries the converter's
    /// output as `out`, so one event shows In, Out and the result.
    pub fn integration_uplink(
        &self,
        integration: Uuid,
        data_type: DataType,
        message: &str,
        output: Option<&str>,
        error: Option<&str>,
    ) {
        self.push(
            EntityKind::Integration,
            integration,
            "DEBUG_INTEGRATION",
            json!({
                "type": "Uplink",
                "messageType": data_type.name(),
                "message": cut(message),
                "out": output.map(cut),
                "status": if error.is_some() { "ERROR" } else { "OK" },
                "error": error.map(cut),
            }),
        );
    }

    /// The converter's `Uplink` debug event: what went in, what came out, or the error.
    pub fn converter_uplink(
        &self,
        converter: Uuid,
        data_type: DataType,
        input: &str,
        output: Option<&str>,
        metadata: &Value,
        error: Option<&str>,
    ) {
        self.push(
            EntityKind::Converter,
            converter,
            "DEBUG_CONVERTER",
            json!({
                "type": "Uplink",
                "inMessageType": data_type.name(),
                "in": cut(input),
                "outMessageType": "JSON",
                "out": output.map(cut),
                "metadata": cut(&metadata.to_string()),
                "error": error.map(cut),
            }),
        );
    }

    /// The lifecycle events of a reload of the routing table, whichever reload found the
    /// changes (a REST call's, or the configuration watch's when it got there first): one
    /// event per change per node.
    pub fn record_lifecycle(&self, changes: &[(Uuid, crate::registry::Lifecycle)]) {
        for (integration, change) in changes {
            if *change == crate::registry::Lifecycle::Stopped {
                self.flush_stats(Some(*integration));
            }
            self.lifecycle(*integration, change.name(), None);
        }
    }

    /// A lifecycle event: `STARTED`, `UPDATED`, `STOPPED` or `FAILED`.
    pub fn lifecycle(&self, integration: Uuid, event: &str, error: Option<&str>) {
        self.push(
            EntityKind::Integration,
            integration,
            "LC_EVENT",
            json!({"event": event, "success": error.is_none(), "error": error.map(cut)}),
        );
    }

    pub fn error(&self, kind: EntityKind, entity: Uuid, method: &str, error: &str) {
        self.push(kind, entity, "ERROR", json!({"method": method, "error": cut(error)}));
    }

    /// Counts one processed uplink of an integration for its next `STATS` event.
    pub fn count(&self, integration: Uuid, failed: bool) {
        let counters = self.stats.lock().unwrap_or_else(|e| e.into_inner()).entry(integration).or_default().clone();
        counters.processed.fetch_add(1, Ordering::Relaxed);
        if failed {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a `STATS` event for every integration with activity since the last one, or for
    /// `only` (on stop) even without activity.
    pub fn flush_stats(&self, only: Option<Uuid>) {
        let counters: Vec<(Uuid, Arc<Counters>)> = {
            let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.iter().filter(|(id, _)| only.is_none_or(|o| o == **id)).map(|(id, c)| (*id, c.clone())).collect()
        };
        for (id, c) in counters {
            // Pending first, then taken from the live counters: a reader in between counts an
            // uplink twice for an instant rather than not at all.
            let processed = c.processed.load(Ordering::Relaxed);
            let errors = c.errors.load(Ordering::Relaxed);
            c.pending_processed.fetch_add(processed, Ordering::Relaxed);
            c.pending_errors.fetch_add(errors, Ordering::Relaxed);
            c.processed.fetch_sub(processed, Ordering::Relaxed);
            c.errors.fetch_sub(errors, Ordering::Relaxed);
            if processed > 0 || only.is_some() {
                self.push(
                    EntityKind::Integration,
                    id,
                    "STATS",
                    json!({"messagesProcessed": processed, "errorsOccurred": errors}),
                );
            }
        }
    }

    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }
}

/// This machine's name, which events carry as their `server`.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "coapgate".into())
}

/// The sum of an integration's stored `STATS` events created at or after `since`.
fn stored_stats_sum(store: &dyn coapgate_storage::Store, integration: Uuid, since: Millis) -> coapgate_storage::Result<MessageCounts> {
    let mut counts = MessageCounts::default();
    let mut page = 0;
    loop {
        let query = coapgate_storage::model::EventQuery {
            entity_id: integration,
            event_type: "STATS".into(),
            start_time: Some(since),
            page: coapgate_storage::model::PageQuery { page_size: 10_000, page, sort_descending: true, ..Default::default() },
            ..Default::default()
        };
        let found = store.events(&query)?;
        for e in &found.data {
            counts.processed += e.body.get("messagesProcessed").and_then(Value::as_u64).unwrap_or(0);
            counts.errors += e.body.get("errorsOccurred").and_then(Value::as_u64).unwrap_or(0);
        }
        if !found.has_next || page >= 100 {
            return Ok(counts);
        }
        page += 1;
    }
}

/// How often integrations' statistics are recorded.
pub const STATS_EVERY: Duration = Duration::from_secs(60);

fn record_loop(store: Arc<dyn EventLog>, rx: Receiver<Event>, ttl: Duration, sink: std::sync::Weak<EventSink>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_expiry = Instant::now() - EXPIRE_EVERY;
    let mut last_stats = Instant::now();
    let mut dropped = 0u64;
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(e) => {
                batch.push(e);
                batch.extend(rx.try_iter().take(BATCH - 1));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = store.insert_events(&batch);
                return;
            }
        }
        if !batch.is_empty() {
            let result = store.insert_events(&batch);
            if let Some(s) = sink.upgrade() {
                for e in &batch {
                    s.stats_stored(e);
                }
            }
            match result {
                Ok(()) => {
                    if let Some(s) = sink.upgrade() {
                        s.recorded.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    if dropped > 0 {
                        tracing::warn!("recording events works again ({dropped} events were dropped meanwhile)");
                        dropped = 0;
                    }
                }
                // One line when recording starts failing (a read-only or full disk) and one when
                // it works again, not one per batch.
                Err(e) => {
                    if dropped == 0 {
                        tracing::warn!("recording events failed, dropping them until it works again: {e}");
                    }
                    dropped += batch.len() as u64;
                }
            }
            batch.clear();
        }
        if last_stats.elapsed() >= STATS_EVERY {
            last_stats = Instant::now();
            if let Some(s) = sink.upgrade() {
                s.flush_stats(None);
            }
        }
        if last_expiry.elapsed() >= EXPIRE_EVERY {
            last_expiry = Instant::now();
            let cutoff = coapgate_storage::now_millis() - ttl.as_millis() as Millis;
            match store.delete_events_before(cutoff) {
                Ok(n) if n > 0 => tracing::info!("deleted {n} expired events"),
                Ok(_) => {}
                Err(e) => tracing::warn!("deleting expired events failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_gating() {
        let now = 1_000_000;
        let s = DebugSettings { failures_enabled: true, all_enabled: false, all_enabled_until: 0 };
        assert!(s.records(true, now) && !s.records(false, now));
        let s = DebugSettings { failures_enabled: false, all_enabled: true, all_enabled_until: now + 1 };
        assert!(s.records(false, now) && s.records(true, now));
        assert!(!s.records(false, now + 1), "all ends at allEnabledUntil");
        let s = DebugSettings { failures_enabled: false, all_enabled: false, all_enabled_until: now + 10 };
        assert!(!s.records(true, now));
    }

    #[test]
    fn debug_all_is_capped_at_15_minutes() {
        let now = 1_000_000;
        let cap = now + 15 * 60 * 1000;
        let v = DebugSettings::normalized(Some(&json!({"allEnabled": true, "allEnabledUntil": now + 99_999_999})), false, now);
        assert_eq!(v["allEnabledUntil"], cap);
        let v = DebugSettings::normalized(Some(&json!({"allEnabled": true})), false, now);
        assert_eq!(v["allEnabledUntil"], cap);
        let v = DebugSettings::normalized(Some(&json!({"allEnabled": true, "allEnabledUntil": now + 5})), false, now);
        assert_eq!(v["allEnabledUntil"], now + 5);
        let v = DebugSettings::normalized(None, true, now);
        assert_eq!((v["failuresEnabled"].as_bool(), v["allEnabledUntil"].as_i64()), (Some(true), Some(cap)));
        let v = DebugSettings::normalized(Some(&json!({"failuresEnabled": true, "allEnabledUntil": now + 5})), false, now);
        assert_eq!(v["allEnabledUntil"], 0);
    }

    #[test]
    fn drops_are_counted_by_entity_and_minute_within_bounds() {
        let mut book = DropBook::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t = 1_000 * 60_000;
        book.add(a, t + 5, false);
        book.add(a, t + 59_999, true);
        book.add(a, t + 60_000, false);
        book.add(b, t, false);
        let r = book.between(a, t, t + 30_000);
        assert_eq!((r.rate_limited, r.queue_full), (1, 1), "the whole first minute counts, not the next");
        assert_eq!(book.between(a, 0, t + 120_000).rate_limited, 2);
        assert_eq!(book.between(a, 0, t - 1), DropReport { remembered_since: Some(t), ..DropReport::default() });
        assert_eq!(book.between(b, 0, i64::MAX).rate_limited, 1);
        // Bounded in minutes per entity and in entities.
        for m in 0..(DROP_MINUTES as i64 + 10) {
            book.add(a, t + m * 60_000, false);
        }
        assert_eq!(book.entities[&a].len(), DROP_MINUTES);
        for _ in 0..DROP_ENTITIES + 5 {
            book.add(Uuid::new_v4(), t + 10 * 60_000_000, false);
        }
        assert_eq!(book.entities.len(), DROP_ENTITIES);
    }

    #[test]
    fn payload_rendering_and_cutting() {
        assert_eq!(DataType::of_content_format(Some(50)), DataType::Json);
        assert_eq!(DataType::of_content_format(Some(0)), DataType::Text);
        assert_eq!(DataType::of_content_format(None), DataType::Binary);
        assert_eq!(DataType::of_content_format(Some(42)), DataType::Binary);
        assert_eq!(DataType::Binary.render(&[1, 2, 3]), "AQID");
        assert_eq!(DataType::Text.render(b"hi"), "hi");
        let long = "é".repeat(5000);
        assert_eq!(cut(&long).chars().count(), MAX_TEXT_CHARS);
        assert_eq!(cut("short"), "short");
    }
}
