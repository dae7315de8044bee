//! Live updates across nodes: a WebSocket subscriber on one node gets the changes another node
//! commits (several nodes on one PostgreSQL database; nothing runs on SQLite).
//!
//! Each node announces the entities its sessions watch (at once when the set grows, and again
//! every second while it is not empty); the others remember each announced entity for three
//! seconds. A node that commits a change of an entity announced elsewhere queues it for its
//! `live-relay-send` thread, which packs the queued changes into channel messages
//! ([`coapgate_storage::LiveChannel`], NOTIFY) after the commit was made durable, like every
//! other publication. The `live-relay-receive` thread hands other nodes' changes to this node's
//! sessions. Nothing is relayed while no session anywhere watches anything, so ingestion pays
//! nothing for the relay until a dashboard is open.
//!
//! Best effort, as ThingsBoard's own cluster messaging: a change committed between a new
//! subscription's first read and its announcement reaching the committing node (normally a few
//! milliseconds), or while a node's connection is being reopened, is not delivered; the
//! subscriber reads it at its next snapshot.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use coapgate_storage::model::KvValue;
use coapgate_storage::{LIVE_PAYLOAD_MAX, LiveChannel, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::live::{Change, ChangeData, Hub};

/// Changes waiting for the sender thread at most; more are dropped and counted
/// (`coapgate_ws_relay_dropped_total`) rather than held.
const QUEUE: usize = 10_000;
/// How often the watched set is announced again while not empty.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How long an announcement holds on the other nodes: three announcements may be lost.
const HOLDS_FOR: Duration = Duration::from_secs(3);
/// Entity ids per announcement message (37 bytes each in JSON).
const IDS_PER_MESSAGE: usize = 180;

/// Starts the relay's two threads when the store is shared by nodes; otherwise does nothing.
pub fn start(store: &Arc<dyn Store>, hub: Arc<Hub>) -> anyhow::Result<()> {
    let (Some(sending), Some(receiving)) = (store.live_channel()?, store.live_channel()?) else {
        return Ok(());
    };
    let node = Uuid::new_v4();
    let (tx, rx) = sync_channel(QUEUE);
    hub.attach_relay(tx);
    let sender_hub = hub.clone();
    std::thread::Builder::new()
        .name("live-relay-send".into())
        .spawn(move || send_loop(node, sending, rx, sender_hub))?;
    std::thread::Builder::new().name("live-relay-receive".into()).spawn(move || receive_loop(node, receiving, hub))?;
    Ok(())
}

fn send_loop(node: Uuid, mut channel: Box<dyn LiveChannel>, queue: Receiver<Arc<Change>>, hub: Arc<Hub>) {
    let mut last_announcement = Instant::now() - ANNOUNCE_EVERY;
    let mut failing_since: Option<Instant> = None;
    loop {
        let mut changes = Vec::new();
        match queue.recv_timeout(Duration::from_millis(50)) {
            Ok(change) => {
                changes.push(change);
                changes.extend(queue.try_iter().take(QUEUE));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut payloads = Vec::new();
        let grew = hub.take_watch_grew();
        if grew || last_announcement.elapsed() >= ANNOUNCE_EVERY {
            let watched = hub.watched_entities();
            let pages = hub.has_local_page_watchers();
            if !watched.is_empty() || pages {
                payloads.extend(announcements(node, &watched, pages));
            }
            last_announcement = Instant::now();
        }
        let (packed, too_large) = pack_changes(node, &changes);
        payloads.extend(packed);
        if too_large > 0 {
            hub.count_relay_dropped(too_large);
        }
        if payloads.is_empty() {
            continue;
        }
        match channel.send(&payloads) {
            Ok(()) => {
                if failing_since.take().is_some() {
                    tracing::info!("live updates reach the other nodes again");
                }
            }
            Err(e) => {
                hub.count_relay_dropped(changes.len() as u64);
                if failing_since.is_none() {
                    tracing::warn!("live updates cannot reach the other nodes: {e}; retrying every second");
                    failing_since = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn receive_loop(node: Uuid, mut channel: Box<dyn LiveChannel>, hub: Arc<Hub>) {
    let mut failing = false;
    loop {
        match channel.receive(Duration::from_secs(1)) {
            Ok(payloads) => {
                failing = false;
                for payload in payloads {
                    match decode(&payload) {
                        Some((from, _)) if from == node => {}
                        Some((_, Message::Watching { entities, pages })) => {
                            hub.watched_elsewhere(&entities, pages, Instant::now() + HOLDS_FOR)
                        }
                        Some((_, Message::Changes(changes))) => hub.publish_from_other_node(changes),
                        None => tracing::debug!("ignoring a live relay message that does not parse"),
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot hear the other nodes' live updates: {e}; retrying every second");
                    failing = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// What one channel message says.
enum Message {
    /// Entities the sender's sessions watch, and whether they hold entity data queries.
    Watching { entities: Vec<Uuid>, pages: bool },
    Changes(Vec<Change>),
}

fn announcements(node: Uuid, watched: &[Uuid], pages: bool) -> Vec<String> {
    if watched.is_empty() {
        return vec![json!({"n": node, "w": [], "p": pages}).to_string()];
    }
    watched.chunks(IDS_PER_MESSAGE).map(|ids| json!({"n": node, "w": ids, "p": pages}).to_string()).collect()
}

/// The changes in as few messages as fit; a single change too large for one is left out and
/// counted.
fn pack_changes(node: Uuid, changes: &[Arc<Change>]) -> (Vec<String>, u64) {
    let head = json!({"n": node, "c": []}).to_string();
    let (mut out, mut too_large) = (Vec::new(), 0);
    let mut current: Vec<String> = Vec::new();
    let mut size = head.len();
    for change in changes {
        let encoded = encode_change(change).to_string();
        if head.len() + encoded.len() > LIVE_PAYLOAD_MAX {
            too_large += 1;
            continue;
        }
        if size + encoded.len() + 1 > LIVE_PAYLOAD_MAX {
            out.push(message_of(node, &current));
            current.clear();
            size = head.len();
        }
        size += encoded.len() + 1;
        current.push(encoded);
    }
    if !current.is_empty() {
        out.push(message_of(node, &current));
    }
    (out, too_large)
}

fn message_of(node: Uuid, encoded: &[String]) -> String {
    format!("{{\"n\":\"{node}\",\"c\":[{}]}}", encoded.join(","))
}

fn encode_change(change: &Change) -> Value {
    match &change.data {
        ChangeData::Timeseries(points) => json!({
            "e": change.entity,
            "t": points.iter().map(|(ts, values)| json!([ts, encode_values(values)])).collect::<Vec<_>>(),
        }),
        ChangeData::Attributes { scope, ts, values } => {
            json!({"e": change.entity, "s": scope, "ts": ts, "a": encode_values(values)})
        }
        ChangeData::Created => json!({"e": change.entity, "k": "created"}),
    }
}

/// Values keep their exact type: `[key, tag, value]`.
fn encode_values(values: &[(String, KvValue)]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|(key, value)| match value {
                KvValue::Bool(b) => json!([key, "b", b]),
                KvValue::Long(v) => json!([key, "l", v]),
                // NaN and infinities have no JSON number: their Rust text parses back.
                KvValue::Double(v) => json!([key, "d", v.to_string()]),
                KvValue::Str(s) => json!([key, "s", s]),
                KvValue::Json(s) => json!([key, "j", s]),
            })
            .collect(),
    )
}

fn decode_values(value: &Value) -> Option<Vec<(String, KvValue)>> {
    value
        .as_array()?
        .iter()
        .map(|item| {
            let key = item.get(0)?.as_str()?.to_string();
            let raw = item.get(2)?;
            let value = match item.get(1)?.as_str()? {
                "b" => KvValue::Bool(raw.as_bool()?),
                "l" => KvValue::Long(raw.as_i64()?),
                "d" => KvValue::Double(raw.as_str()?.parse().ok()?),
                "s" => KvValue::Str(raw.as_str()?.to_string()),
                "j" => KvValue::Json(raw.as_str()?.to_string()),
                _ => return None,
            };
            Some((key, value))
        })
        .collect()
}

fn decode(payload: &str) -> Option<(Uuid, Message)> {
    let value: Value = serde_json::from_str(payload).ok()?;
    let node = Uuid::parse_str(value.get("n")?.as_str()?).ok()?;
    if let Some(ids) = value.get("w") {
        let ids = ids.as_array()?.iter().map(|id| Uuid::parse_str(id.as_str()?).ok()).collect::<Option<Vec<_>>>()?;
        let pages = value.get("p").and_then(Value::as_bool).unwrap_or(false);
        return Some((node, Message::Watching { entities: ids, pages }));
    }
    let changes = value
        .get("c")?
        .as_array()?
        .iter()
        .map(|c| {
            let entity = Uuid::parse_str(c.get("e")?.as_str()?).ok()?;
            let data = if let Some(points) = c.get("t") {
                let points = points
                    .as_array()?
                    .iter()
                    .map(|p| Some((p.get(0)?.as_i64()?, decode_values(p.get(1)?)?)))
                    .collect::<Option<Vec<_>>>()?;
                ChangeData::Timeseries(points)
            } else if c.get("k").and_then(Value::as_str) == Some("created") {
                ChangeData::Created
            } else {
                ChangeData::Attributes {
                    scope: c.get("s")?.as_str()?.to_string(),
                    ts: c.get("ts")?.as_i64()?,
                    values: decode_values(c.get("a")?)?,
                }
            };
            Some(Change { entity, data })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((node, Message::Changes(changes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<(String, KvValue)> {
        vec![
            ("b".into(), KvValue::Bool(true)),
            ("l".into(), KvValue::Long(-7)),
            ("d".into(), KvValue::Double(2.0)),
            ("nan".into(), KvValue::Double(f64::NAN)),
            ("s".into(), KvValue::Str("12".into())),
            ("j".into(), KvValue::Json("{\"a\":[1]}".into())),
        ]
    }

    #[test]
    fn changes_cross_with_their_exact_types() {
        let node = Uuid::new_v4();
        let changes = vec![
            Arc::new(Change { entity: Uuid::new_v4(), data: ChangeData::Timeseries(vec![(5, values())]) }),
            Arc::new(Change {
                entity: Uuid::new_v4(),
                data: ChangeData::Attributes { scope: "SHARED_SCOPE".into(), ts: 9, values: values() },
            }),
        ];
        let (payloads, too_large) = pack_changes(node, &changes);
        assert_eq!((payloads.len(), too_large), (1, 0));
        let Some((from, Message::Changes(back))) = decode(&payloads[0]) else { panic!("does not decode") };
        assert_eq!(from, node);
        assert_eq!(back.len(), 2);
        let ChangeData::Timeseries(points) = &back[0].data else { panic!() };
        assert_eq!(points[0].0, 5);
        let (expected, got) = (values(), &points[0].1);
        for ((k1, v1), (k2, v2)) in expected.iter().zip(got) {
            assert_eq!(k1, k2);
            match (v1, v2) {
                (KvValue::Double(a), KvValue::Double(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(v1, v2),
            }
        }
        let ChangeData::Attributes { scope, ts, .. } = &back[1].data else { panic!() };
        assert_eq!((scope.as_str(), *ts), ("SHARED_SCOPE", 9));
    }

    #[test]
    fn messages_stay_under_the_channels_limit() {
        let node = Uuid::new_v4();
        let big = "x".repeat(1_000);
        let changes: Vec<_> = (0..50)
            .map(|_| {
                Arc::new(Change {
                    entity: Uuid::new_v4(),
                    data: ChangeData::Timeseries(vec![(1, vec![("k".into(), KvValue::Str(big.clone()))])]),
                })
            })
            .chain(std::iter::once(Arc::new(Change {
                entity: Uuid::new_v4(),
                data: ChangeData::Timeseries(vec![(1, vec![("k".into(), KvValue::Str("y".repeat(LIVE_PAYLOAD_MAX)))])]),
            })))
            .collect();
        let (payloads, too_large) = pack_changes(node, &changes);
        assert_eq!(too_large, 1, "the change larger than a message is left out");
        assert!(payloads.iter().all(|p| p.len() <= LIVE_PAYLOAD_MAX));
        let carried: usize = payloads
            .iter()
            .map(|p| match decode(p) {
                Some((_, Message::Changes(c))) => c.len(),
                _ => panic!("does not decode"),
            })
            .sum();
        assert_eq!(carried, 50);
        let ids: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
        let announced = announcements(node, &ids, true);
        assert!(announced.iter().all(|p| p.len() <= LIVE_PAYLOAD_MAX));
        let back: usize = announced
            .iter()
            .map(|p| match decode(p) {
                Some((_, Message::Watching { entities, pages })) => {
                    assert!(pages);
                    entities.len()
                }
                _ => panic!("does not decode"),
            })
            .sum();
        assert_eq!(back, 500);
    }
}
