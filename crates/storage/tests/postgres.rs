//! What only the PostgreSQL backend promises: several nodes (here, several writers and stores
//! on one database, in threads) racing for the same names, places and keys; partitions by month;
//! schema versions; a lost connection failing one batch only. On a private cluster (`pg_cluster`).

mod pg_cluster;

use std::sync::{Arc, Barrier};

use coapgate_storage::model::*;
use coapgate_storage::{PgConfig, PgStore, Store, UplinkWriter, now_millis};
use uuid::Uuid;

const NODES: usize = 4;

fn record(name: &str, ts: i64, values: Vec<(&str, KvValue)>) -> UplinkRecord {
    let mut device = EntityUpdate::device(name, "thermo");
    device.customer_name = Some("Acme".into());
    device.group_name = Some("All".into());
    device.telemetry = vec![(ts, values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())];
    UplinkRecord {
        integration_id: Uuid::nil(),
        allow_create_devices: true,
        received_ts: ts,
        update_only_keys: Arc::from(Vec::new()),
        entities: vec![device],
        exchange: None,
        remote: None,
        converter: None,
    }
}

/// Runs `work(node)` on NODES threads, each with its own store and writer, started together.
fn on_nodes<T: Send + 'static>(
    url: &str,
    work: impl Fn(usize, &dyn Store, &mut dyn UplinkWriter) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(NODES));
    let threads: Vec<_> = (0..NODES)
        .map(|node| {
            let (url, work, barrier) = (url.to_string(), work.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = PgStore::connect(&url).unwrap();
                let mut writer = store.uplink_writer().unwrap();
                barrier.wait();
                work(node, &store, writer.as_mut())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn nodes_creating_the_same_names_at_once_make_one_device_each() {
    let db = pg_cluster::PgCluster::database();
    let store = PgStore::connect(&db.url()).unwrap();
    const NAMES: usize = 40;
    let created = on_nodes(&db.url(), |node, _, writer| {
        let mut created = Vec::new();
        // Every node writes every name, in a different order (opposite orders would deadlock
        // without the writer's sorted name locks), a few names per batch.
        let mut names: Vec<usize> = (0..NAMES).collect();
        names.rotate_left(node * NAMES / NODES);
        if node % 2 == 1 {
            names.reverse();
        }
        for chunk in names.chunks(5) {
            let batch: Vec<UplinkRecord> =
                chunk.iter().map(|i| record(&format!("race-{i}"), 1000 + node as i64, vec![("t", KvValue::Long(node as i64))])).collect();
            for result in writer.commit(&batch).unwrap() {
                created.extend(result.unwrap().created);
            }
        }
        created
    });
    let created: Vec<(EntityKind, Uuid)> = created.into_iter().flatten().collect();
    assert_eq!(created.len(), NAMES, "each name created by exactly one node");
    let page = store.devices(&PageQuery { page_size: 1000, ..Default::default() }, None).unwrap();
    assert_eq!(page.total_elements, NAMES as u64);
    assert_eq!(store.customers(&PageQuery { page_size: 10, ..Default::default() }).unwrap().total_elements, 1);
    let group = store.entity_groups(EntityKind::Device, None, &PageQuery { page_size: 10, ..Default::default() }).unwrap();
    assert_eq!(group.total_elements, 1);
    assert_eq!(store.entity_group_members(group.data[0].id, &PageQuery { page_size: 1000, ..Default::default() }).unwrap().total_elements, NAMES as u64);
    for device in page.data {
        let customer = store.customer_by_title("Acme").unwrap().unwrap();
        assert_eq!(device.customer_id, Some(customer.id), "{}", device.name);
        let points = store
            .timeseries_history(device.id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 10_000, limit: 100, descending: false })
            .unwrap();
        assert_eq!(points[0].1.len(), NODES, "every node's point is stored: {}", device.name);
    }
}

#[test]
fn a_remote_place_sent_to_every_node_at_once_is_stored_once() {
    let db = pg_cluster::PgCluster::database();
    let outbox = Uuid::new_v4();
    let stored = on_nodes(&db.url(), move |node, _, writer| {
        let mut stored = 0;
        for seq in 0..30u64 {
            let mut r = record("remote", seq as i64, vec![("t", KvValue::Long(node as i64))]);
            r.remote = Some(RemoteSeq { outbox, seq });
            if !writer.commit(&[r]).unwrap()[0].as_ref().unwrap().duplicate {
                stored += 1;
            }
        }
        stored
    });
    assert_eq!(stored.iter().sum::<usize>(), 30, "each place stored by one node: {stored:?}");
    let store = PgStore::connect(&db.url()).unwrap();
    let id = store.device_by_name("remote").unwrap().unwrap().id;
    let points = store
        .timeseries_history(id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 100, limit: 100, descending: false })
        .unwrap();
    assert_eq!(points[0].1.len(), 30);
}

#[test]
fn update_only_keys_hold_across_nodes() {
    let db = pg_cluster::PgCluster::database();
    let store = PgStore::connect(&db.url()).unwrap();
    store.uplink_writer().unwrap().commit(&[record("D", 1, vec![("other", KvValue::Long(0))])]).unwrap();
    // Every node sends the same value again and again, at once: stored once, by one node.
    let skipped = on_nodes(&db.url(), |node, _, writer| {
        let mut skipped = 0;
        for i in 0..20 {
            let ts = 10 + (i * NODES + node) as i64;
            let mut r = record("D", ts, vec![("t", KvValue::Long(7))]);
            r.entities[0].attributes = vec![("fw".into(), KvValue::Str("1.0".into()))];
            r.update_only_keys = Arc::from(vec!["t".to_string(), "fw".to_string()]);
            skipped += writer.commit(&[r]).unwrap()[0].as_ref().unwrap().unchanged_skipped;
        }
        skipped
    });
    let id = store.device_by_name("D").unwrap().unwrap().id;
    let points = store
        .timeseries_history(id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 1000, limit: 1000, descending: false })
        .unwrap();
    assert_eq!(points[0].1.len(), 1, "one point stored: {:?}", points[0].1);
    assert_eq!(skipped.iter().sum::<usize>(), 2 * (20 * NODES - 1), "every other value and attribute skipped");
}

#[test]
fn a_deletion_on_one_node_is_seen_by_the_writers_of_others() {
    let db = pg_cluster::PgCluster::database();
    let a = PgStore::connect(&db.url()).unwrap();
    let b = PgStore::connect(&db.url()).unwrap();
    let mut writer = a.uplink_writer().unwrap();
    writer.commit(&[record("X", 1, vec![("t", KvValue::Long(1))])]).unwrap();
    let customer = a.customer_by_title("Acme").unwrap().unwrap();
    assert!(b.delete_customer(customer.id).unwrap());
    writer.commit(&[record("Y", 2, vec![])]).unwrap();
    let again = a.customer_by_title("Acme").unwrap().expect("the writer created the customer again");
    assert_ne!(again.id, customer.id);
    assert_eq!(a.device_by_name("Y").unwrap().unwrap().customer_id, Some(again.id));
}

#[test]
fn time_series_go_to_monthly_partitions() {
    let db = pg_cluster::PgCluster::database();
    let store = PgStore::connect(&db.url()).unwrap();
    let mut writer = store.uplink_writer().unwrap();
    let dec_2026 = 1_796_632_448_000;
    let jan_2027 = dec_2026 + 31 * 86_400_000;
    writer.commit(&[record("P", dec_2026, vec![("t", KvValue::Long(1))]), record("P", jan_2027, vec![("t", KvValue::Long(2))])]).unwrap();
    writer.commit(&[record("P", -1, vec![("t", KvValue::Long(0))])]).unwrap();
    // Another writer (node) meets the partitions existing already.
    store.uplink_writer().unwrap().commit(&[record("P", dec_2026 + 1, vec![("t", KvValue::Long(3))])]).unwrap();
    let mut client = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT c.relname::text, (SELECT count(*) FROM ts_kv t WHERE t.tableoid = c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ts_kv'::regclass ORDER BY 1",
            &[],
        )
        .unwrap();
    let partitions: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        partitions,
        vec![("ts_kv_2026_12".to_string(), 2), ("ts_kv_2027_01".to_string(), 1), ("ts_kv_default".to_string(), 1)]
    );
    let version: i32 = client.query_one("SELECT max(version) FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(version, PgStore::schema_version());
}

#[test]
fn a_newer_schema_is_refused_and_an_older_one_migrated_once() {
    let db = pg_cluster::PgCluster::database();
    // Nodes opening an empty database at once migrate it once.
    let tenants = on_nodes(&db.url(), |_, store, _| store.tenant_id());
    assert!(tenants.iter().all(|t| *t == tenants[0]), "one tenant: {tenants:?}");
    let store = PgStore::connect(&db.url()).unwrap();
    assert_eq!(store.device_profiles(&PageQuery { page_size: 10, ..Default::default() }).unwrap().total_elements, 1);
    let mut client = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
    client.execute("INSERT INTO schema_version VALUES (1000, 0)", &[]).unwrap();
    let error = PgStore::connect(&db.url()).err().expect("a newer schema is refused").to_string();
    assert!(error.contains("version 1000") && error.contains("upgrade coapgate"), "{error}");
}

#[test]
fn a_lost_connection_fails_one_batch_and_the_next_reconnects() {
    let db = pg_cluster::PgCluster::database();
    let store = PgStore::connect(&db.url()).unwrap();
    let mut writer = store.uplink_writer().unwrap();
    writer.commit(&[record("L", 1, vec![("t", KvValue::Long(1))])]).unwrap();
    let mut admin = postgres::Client::connect(&db.url(), postgres::NoTls).unwrap();
    let kill = |admin: &mut postgres::Client| {
        admin
            .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", &[])
            .unwrap();
    };
    kill(&mut admin);
    let failed = writer.commit(&[record("L", 2, vec![("t", KvValue::Long(2))])]);
    assert!(failed.is_err(), "a batch on a lost connection fails: {failed:?}");
    writer.commit(&[record("L", 3, vec![("t", KvValue::Long(3))])]).expect("the next batch reconnects");
    // The store's idle connection was terminated as well: one call fails, the next reconnects.
    assert!(store.device_by_name("L").is_err());
    let id = store.device_by_name("L").unwrap().unwrap().id;
    let points = store
        .timeseries_history(id, &HistoryQuery { keys: vec!["t".into()], start_ts: 0, end_ts: 10, limit: 10, descending: false })
        .unwrap();
    assert_eq!(points[0].1.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![1, 3], "nothing of the failed batch");
}

#[test]
fn connection_errors_name_the_server() {
    let cluster = pg_cluster::PgCluster::shared();
    let config = PgConfig::from_jdbc(&format!("jdbc:postgresql://127.0.0.1:{}/no_such_db", cluster.port), Some("postgres"), None).unwrap();
    let error = PgStore::open(config).err().expect("no such database").to_string();
    assert!(error.contains(&format!("127.0.0.1:{}", cluster.port)) && error.contains("no_such_db"), "{error}");
    assert!(error.contains("does not exist"), "the server's reason: {error}");
}

#[test]
fn an_exchange_sent_to_every_node_at_once_is_stored_once_and_answered_alike() {
    let db = pg_cluster::PgCluster::database();
    const MESSAGES: u16 = 40;
    // Every node gets every message (the same peer and Message ID), each with the response it
    // framed itself; in opposite orders on odd nodes, a few per batch.
    let outcomes = on_nodes(&db.url(), |node, _, writer| {
        let mut ids: Vec<u16> = (0..MESSAGES).collect();
        if node % 2 == 1 {
            ids.reverse();
        }
        let mut outcomes = Vec::new();
        for chunk in ids.chunks(4) {
            let batch: Vec<UplinkRecord> = chunk
                .iter()
                .map(|&mid| {
                    let mut r = record("peer", i64::from(mid), vec![("t", KvValue::Long(node as i64))]);
                    r.exchange = Some(Exchange { peer: "10.0.0.1:5683".into(), message_id: mid, ts: now_millis(), response: vec![node as u8, mid as u8] });
                    r
                })
                .collect();
            for (mid, result) in chunk.iter().zip(writer.commit(&batch).unwrap()) {
                outcomes.push((*mid, node, result.unwrap()));
            }
        }
        outcomes
    });
    let outcomes: Vec<(u16, usize, UplinkOutcome)> = outcomes.into_iter().flatten().collect();
    for mid in 0..MESSAGES {
        let copies: Vec<&(u16, usize, UplinkOutcome)> = outcomes.iter().filter(|(m, _, _)| *m == mid).collect();
        let first: Vec<_> = copies.iter().filter(|(_, _, o)| !o.duplicate).collect();
        assert_eq!(first.len(), 1, "message {mid} stored by exactly one node");
        let response = vec![first[0].1 as u8, mid as u8];
        for (_, node, outcome) in copies.iter().filter(|(_, _, o)| o.duplicate) {
            assert_eq!(outcome.replay.as_ref(), Some(&response), "node {node} answers message {mid} with the stored response");
        }
    }
    let store = PgStore::connect(&db.url()).unwrap();
    assert_eq!(points_of(&store, "peer", "t").len(), MESSAGES as usize, "one point per message");
    // After EXCHANGE_LIFETIME the same Message ID is a new message.
    let mut later = record("peer", 5000, vec![("t", KvValue::Long(9))]);
    later.exchange = Some(Exchange { peer: "10.0.0.1:5683".into(), message_id: 0, ts: now_millis() + 248_000, response: vec![9] });
    let outcome = store.uplink_writer().unwrap().commit(&[later]).unwrap().remove(0).unwrap();
    assert!(!outcome.duplicate, "a Message ID reused after its lifetime is stored");
}

/// A converter (the writer only looks at its id and version).
fn converter_at(version: i64) -> Converter {
    Converter {
        id: Uuid::new_v4(),
        created_time: 1,
        name: "c".into(),
        converter_type: "UPLINK".into(),
        integration_type: Some("COAP".into()),
        debug_settings: serde_json::json!({}),
        configuration: serde_json::json!({}),
        additional_info: serde_json::json!({}),
        version,
    }
}

/// The points of `key` a device stored, oldest first.
fn points_of(store: &PgStore, device: &str, key: &str) -> Vec<TsValue> {
    let id = store.device_by_name(device).unwrap().unwrap().id;
    let query = HistoryQuery { keys: vec![key.into()], start_ts: 0, end_ts: i64::MAX, limit: 100_000, descending: false };
    store.timeseries_history(id, &query).unwrap().remove(0).1
}

#[test]
fn a_record_made_with_an_older_converter_is_refused_as_stale() {
    let db = pg_cluster::PgCluster::database();
    let store = PgStore::connect(&db.url()).unwrap();
    let converter = converter_at(3);
    store.save_converter(&converter).unwrap();
    let mut writer = store.uplink_writer().unwrap();
    let made_with = |version: i64, ts: i64| {
        let mut r = record("conv", ts, vec![("t", KvValue::Long(version))]);
        r.converter = Some(ConverterVersion { id: converter.id, version });
        r
    };
    let results = writer.commit(&[made_with(2, 1), made_with(3, 2), made_with(4, 3)]).unwrap();
    assert_eq!(results[0], Err(UplinkRejection::StaleConverter), "older than the stored version");
    assert!(results[1].is_ok() && results[2].is_ok(), "the stored version (or a newer save racing it) is current");
    store.delete_converter(converter.id).unwrap();
    let results = writer.commit(&[made_with(3, 4)]).unwrap();
    assert_eq!(results[0], Err(UplinkRejection::StaleConverter), "its converter was deleted");
    assert_eq!(points_of(&store, "conv", "t").len(), 2);
}

#[test]
fn a_configuration_change_wakes_every_watch() {
    let db = pg_cluster::PgCluster::database();
    let store = PgStore::connect(&db.url()).unwrap();
    let mut watch = store.config_watch().unwrap().expect("PostgreSQL is shared by nodes");
    let before = watch.wait(std::time::Duration::from_millis(10)).unwrap();
    let other = PgStore::connect(&db.url()).unwrap();
    let saver = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        let mut c = converter_at(1);
        other.save_converter(&c).unwrap();
        c.version = 2;
        other.save_converter(&c).unwrap();
        started
    });
    // Woken by the notification well before the 30 s timeout.
    let woke = watch.wait(std::time::Duration::from_secs(30)).unwrap();
    let saved_at = saver.join().unwrap();
    assert!(woke > before, "the epoch moved: {before} -> {woke}");
    assert!(saved_at.elapsed() < std::time::Duration::from_secs(10), "woken by the notification, not the timeout");
}
