//! `migrate`: a SQLite store filled through the public API, copied into PostgreSQL (a private
//! cluster, `pg_cluster`), must read the same through every `Store` method; an interrupted copy
//! continued until done holds every row once; a target with other data is refused.

mod pg_cluster;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coapgate_storage::migrate::{MigrateOptions, MigrationReport, migrate};
use coapgate_storage::model::*;
use coapgate_storage::{ExchangeLog, EventLog, PgConfig, PgStore, SqliteStore, Store};
use serde_json::json;
use uuid::Uuid;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("coapgate-migrate-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Milliseconds of some UTC dates, so points land in several month partitions (and outside
/// 1970–2200, in the default one).
const JAN_2025: i64 = 1_735_689_600_000;
const MAR_2025: i64 = 1_740_787_200_000;
const DEC_2026: i64 = 1_796_083_200_000;
const YEAR_2300: i64 = 10_413_792_000_000;

fn record(entities: Vec<EntityUpdate>, received_ts: i64) -> UplinkRecord {
    UplinkRecord {
        integration_id: Uuid::nil(),
        allow_create_devices: true,
        received_ts,
        update_only_keys: Arc::from(Vec::new()),
        entities,
        exchange: None,
        remote: None,
        converter: None,
    }
}

fn device(name: &str, customer: Option<&str>, group: Option<&str>, telemetry: Vec<(i64, Vec<(&str, KvValue)>)>) -> EntityUpdate {
    let mut d = EntityUpdate::device(name, if name.ends_with('0') { "meter" } else { "thermo" });
    d.customer_name = customer.map(String::from);
    d.group_name = group.map(String::from);
    d.label = Some(format!("label of {name}"));
    d.telemetry = telemetry.into_iter().map(|(ts, values)| (ts, values.into_iter().map(|(k, v)| (k.to_string(), v)).collect())).collect();
    d.attributes = vec![("fw".into(), KvValue::Str(format!("{name}-1.0"))), ("serial".into(), KvValue::Long(7))];
    d
}

/// Fills a store at `path` through the public API: users, settings, converters and
/// integrations, devices and assets with customers and groups, typed points in several months,
/// attributes, an updateOnlyKeys converter's uplinks, exchanges, remote records and events. The
/// first writer's points are moved into the history (a new writer moves what waits); the second
/// writer's stay in `ts_kv_recent`, one of them overwriting a moved point.
fn fill(path: &Path, devices: usize) {
    let store = SqliteStore::open(path).unwrap();
    store.put_setting("jwt_secret", "c2VjcmV0IG9mIHRoZSB0b2tlbnM=").unwrap();
    store.put_setting("login_sessions", r#"{"a":1}"#).unwrap();
    for (i, email) in ["tenant@thingsboard.org", "Second@Example.com"].iter().enumerate() {
        store
            .insert_user(&User {
                id: Uuid::new_v4(),
                created_time: 1000 + i as i64,
                email: email.to_string(),
                password_hash: format!("$2b$12$hash{i}"),
                authority: "TENANT_ADMIN".into(),
                first_name: Some("First".into()),
                last_name: None,
                customer_id: None,
                enabled: true,
            })
            .unwrap();
    }
    let converter = Converter {
        id: Uuid::new_v4(),
        created_time: 2000,
        name: "uplink".into(),
        converter_type: "UPLINK".into(),
        integration_type: Some("COAP".into()),
        debug_settings: json!({"failuresEnabled": true, "allEnabledUntil": 0}),
        configuration: json!({"scriptLang": "JS", "decoder": "return {};", "updateOnlyKeys": ["state", "fw"]}),
        additional_info: json!({"description": "z before a", "z": 1, "a": 2}),
        version: 4,
    };
    store.save_converter(&converter).unwrap();
    let integration = Integration {
        id: Uuid::new_v4(),
        created_time: 3000,
        name: "coap".into(),
        integration_type: "COAP".into(),
        enabled: true,
        allow_create_devices_or_assets: true,
        is_remote: true,
        debug_settings: json!({"allEnabled": false}),
        default_converter_id: converter.id,
        downlink_converter_id: None,
        routing_key: "rk-1".into(),
        secret: "s3cret".into(),
        configuration: json!({"clientConfiguration": {"coapEndpoint": "coap://x/i/rk-1"}}),
        additional_info: json!(null),
        version: 2,
    };
    store.save_integration(&integration).unwrap();

    let mut writer = store.uplink_writer().unwrap();
    let mut batch = Vec::new();
    for i in 0..devices {
        let name = format!("D{i}");
        let customer = ["Acme", "Globex"].get(i % 3).copied();
        let group = if i % 2 == 0 { Some("Even") } else { None };
        let telemetry = vec![
            (JAN_2025 + i as i64, vec![("t", KvValue::Double(20.5 + i as f64)), ("on", KvValue::Bool(i % 2 == 0))]),
            (MAR_2025 + i as i64, vec![("t", KvValue::Double(21.0)), ("n", KvValue::Long(-(i as i64))), ("s", KvValue::Str("ok".into()))]),
            (-5_000, vec![("old", KvValue::Long(1))]),
            (YEAR_2300, vec![("far", KvValue::Json(r#"{"z":1,"a":[1,2]}"#.into()))]),
        ];
        let mut r = record(vec![device(&name, customer, group, telemetry)], JAN_2025 + 100);
        r.exchange = Some(Exchange { peer: format!("127.0.0.1:{}", 5000 + i), message_id: i as u16, ts: JAN_2025, response: vec![0x60, 0x41, i as u8] });
        batch.push(r);
    }
    let mut asset = EntityUpdate::asset("Building A", "building");
    asset.customer_name = Some("Acme".into());
    asset.group_name = Some("Sites".into());
    asset.telemetry = vec![(DEC_2026, vec![("power".into(), KvValue::Long(1200))])];
    asset.attributes = vec![("address".into(), KvValue::Str("Main St".into()))];
    let mut with_asset = record(vec![device("D-with-asset", None, Some("Even"), vec![(DEC_2026, vec![("t", KvValue::Double(1.5))])]), asset], DEC_2026);
    with_asset.remote = Some(RemoteSeq { outbox: Uuid::new_v4(), seq: 41 });
    batch.push(with_asset);
    for r in writer.commit(&batch).unwrap() {
        r.unwrap();
    }
    // updateOnlyKeys: the second "state" equal to the first is not stored.
    for (ts, state) in [(DEC_2026 + 1, "idle"), (DEC_2026 + 2, "idle"), (DEC_2026 + 3, "busy")] {
        let mut r = record(vec![device("D1", None, None, vec![(ts, vec![("state", KvValue::Str(state.into()))])])], ts);
        r.update_only_keys = Arc::from(vec!["state".to_string(), "fw".to_string()]);
        writer.commit(&[r]).unwrap()[0].as_ref().unwrap();
    }
    drop(writer);

    // A new writer moves what waits into the history first; what it writes stays recent.
    let mut writer = store.uplink_writer().unwrap();
    let batch = vec![
        // Overwrites a moved point (same series and timestamp): the recent value wins.
        record(vec![device("D0", None, None, vec![(JAN_2025, vec![("t", KvValue::Double(99.25))])])], DEC_2026 + 10),
        record(vec![device("Late", Some("Initech"), Some("Late group"), vec![(DEC_2026 + 5, vec![("t", KvValue::Long(5))])])], DEC_2026 + 10),
    ];
    for r in writer.commit(&batch).unwrap() {
        r.unwrap();
    }
    drop(writer);

    let event = |entity: Uuid, t: i64, event_type: &str, body: serde_json::Value| Event {
        id: Uuid::new_v4(),
        created_time: t,
        entity_kind: EntityKind::Integration,
        entity_id: entity,
        event_type: event_type.into(),
        uid: "node".into(),
        body,
    };
    let mut events = Vec::new();
    for t in 0..12 {
        // Several in one millisecond: their order is the insertion order.
        events.push(event(integration.id, 5000 + t / 3, "DEBUG_INTEGRATION", json!({"n": t, "error": if t % 4 == 0 { "bad" } else { "" }})));
    }
    events.push(event(converter.id, 6000, "LC_EVENT", json!({"event": "STARTED", "success": true})));
    store.insert_events(&events).unwrap();
    // Access tokens: a migrated device keeps the one its users provisioned.
    for (i, d) in store.devices(&all(), None).unwrap().data.iter().enumerate().take(3) {
        let credentials = DeviceCredentials {
            id: Uuid::new_v4(),
            created_time: 7000 + i as i64,
            device_id: d.id,
            credentials_type: "ACCESS_TOKEN".into(),
            credentials_id: format!("token-{i}"),
            credentials_value: None,
        };
        store.ensure_device_credentials(&credentials).unwrap();
    }
}

fn all() -> PageQuery {
    PageQuery { page_size: 1000, ..Default::default() }
}

/// Everything `Store` reads, as lines, for one store: equal lines mean the same answers.
fn snapshot(store: &dyn Store) -> Vec<String> {
    let mut out = vec![format!("tenant {}", store.tenant_id())];
    for name in ["tenant_id", "jwt_secret", "login_sessions", "missing"] {
        out.push(format!("setting {name} {:?}", store.setting(name).unwrap()));
    }
    out.push(format!("users {}", store.user_count().unwrap()));
    for email in ["tenant@thingsboard.org", "second@example.com"] {
        let user = store.user_by_email(email).unwrap().unwrap();
        out.push(format!("user {user:?}"));
        out.push(format!("user by id {:?}", store.user(user.id).unwrap()));
    }
    let converters = store.converters(&all()).unwrap();
    out.push(format!("converters {converters:?}"));
    for c in &converters.data {
        out.push(format!("converter {:?}", store.converter(c.id).unwrap()));
        out.push(format!("converter json {}", c.configuration));
    }
    out.push(format!("integrations {:?}", store.integrations(&all()).unwrap()));
    out.push(format!("all integrations {:?}", store.all_integrations().unwrap()));
    out.push(format!("by routing key {:?}", store.integration_by_routing_key("rk-1").unwrap()));
    out.push(format!("device profiles {:?}", store.device_profiles(&all()).unwrap()));
    out.push(format!("asset profiles {:?}", store.asset_profiles(&all()).unwrap()));
    let customers = store.customers(&all()).unwrap();
    out.push(format!("customers {customers:?}"));
    for c in &customers.data {
        out.push(format!("customer {:?} {:?}", store.customer(c.id).unwrap(), store.customer_by_title(&c.title).unwrap()));
        out.push(format!("customer devices {:?}", store.customer_devices(c.id, &all(), None).unwrap()));
        out.push(format!("customer assets {:?}", store.customer_assets(c.id, &all(), None).unwrap()));
    }
    out.push(format!("thermo devices {:?}", store.devices(&all(), Some("thermo")).unwrap()));
    let sorted = PageQuery { sort_property: Some("createdTime".into()), sort_descending: true, ..all() };
    out.push(format!("devices by time {:?}", store.devices(&sorted, None).unwrap()));
    let devices = store.devices(&all(), None).unwrap();
    let assets = store.assets(&all(), None).unwrap();
    let mut entities: Vec<(EntityKind, Uuid)> = devices.data.iter().map(|d| (EntityKind::Device, d.id)).collect();
    entities.extend(assets.data.iter().map(|a| (EntityKind::Asset, a.id)));
    out.push(format!("devices {devices:?}"));
    out.push(format!("assets {assets:?}"));
    for d in &devices.data {
        out.push(format!("device {:?} {:?}", store.device(d.id).unwrap(), store.device_by_name(&d.name).unwrap()));
        out.push(format!("credentials {:?}", store.device_credentials(d.id).unwrap()));
        out.push(format!("profile {:?}", store.device_profile(d.device_profile_id).unwrap()));
    }
    for a in &assets.data {
        out.push(format!("asset {:?} {:?}", store.asset(a.id).unwrap(), store.asset_by_name(&a.name).unwrap()));
        out.push(format!("profile {:?}", store.asset_profile(a.asset_profile_id).unwrap()));
    }
    let mut owners = vec![None, Some(Owner::Tenant)];
    owners.extend(customers.data.iter().map(|c| Some(Owner::Customer(c.id))));
    for kind in [EntityKind::Device, EntityKind::Asset] {
        for owner in &owners {
            let groups = store.entity_groups(kind, *owner, &all()).unwrap();
            out.push(format!("groups {kind:?} {owner:?} {groups:?}"));
            for g in &groups.data {
                out.push(format!("group {:?} {:?}", store.entity_group(g.id).unwrap(), store.entity_group_by_name(kind, g.owner, &g.name).unwrap()));
                out.push(format!("members {:?}", store.entity_group_members(g.id, &all()).unwrap()));
            }
        }
    }
    for (kind, id) in entities {
        out.push(format!("{kind:?} {id} groups {:?}", store.groups_of_entity(id).unwrap()));
        let keys = store.timeseries_keys(id).unwrap();
        out.push(format!("keys {keys:?}"));
        out.push(format!("latest {:?}", store.latest_timeseries(id, None).unwrap()));
        out.push(format!("latest t {:?}", store.latest_timeseries(id, Some(&["t".to_string(), "none".to_string()])).unwrap()));
        for descending in [false, true] {
            let query = HistoryQuery { keys: keys.clone(), start_ts: i64::MIN, end_ts: i64::MAX, limit: 1000, descending };
            out.push(format!("history {:?}", store.timeseries_history(id, &query).unwrap()));
        }
        out.push(format!("attribute keys {:?}", store.attribute_keys(id, None).unwrap()));
        out.push(format!("attributes {:?}", store.attributes(id, None, None).unwrap()));
        out.push(format!("client attributes {:?}", store.attributes(id, Some("CLIENT_SCOPE"), Some(&["fw".to_string()])).unwrap()));
    }
    for i in store.all_integrations().unwrap() {
        for (event_type, ascending) in [("DEBUG_INTEGRATION", false), ("DEBUG_INTEGRATION", true), ("LC_EVENT", false)] {
            let page = PageQuery { page_size: 5, page: 1, sort_property: ascending.then(|| "createdTime".into()), ..Default::default() };
            let query = EventQuery { entity_id: i.id, event_type: event_type.into(), page, ..Default::default() };
            out.push(format!("events {:?}", store.events(&query).unwrap()));
            let errors = EventQuery { entity_id: i.id, event_type: event_type.into(), has_error: Some(true), page: all(), ..Default::default() };
            out.push(format!("error events {:?}", store.events(&errors).unwrap()));
        }
    }
    for c in &converters.data {
        let query = EventQuery { entity_id: c.id, event_type: "LC_EVENT".into(), page: all(), ..Default::default() };
        out.push(format!("converter events {:?}", store.events(&query).unwrap()));
    }
    let mut exchanges = store.recent_exchanges(0, 1000).unwrap();
    exchanges.sort_by(|a, b| a.peer.cmp(&b.peer));
    out.push(format!("exchanges {exchanges:?}"));
    out.push(format!("exchange {:?}", store.find_exchange("127.0.0.1:5001", 1, 0).unwrap()));
    out
}

fn assert_same(sqlite: &[String], postgres: &[String]) {
    assert_eq!(sqlite.len(), postgres.len());
    for (s, p) in sqlite.iter().zip(postgres) {
        assert_eq!(s, p, "SQLite and PostgreSQL answer differently");
    }
}

fn assert_counts_match(report: &MigrationReport) {
    assert!(report.mismatches().is_empty(), "{:?}", report.counts);
    let count = |table: &str| report.counts.iter().find(|c| c.table == table).unwrap().target;
    for table in ["setting", "app_user", "converter", "integration", "device", "asset", "customer", "entity_group", "entity_group_member", "device_credentials", "attribute_kv", "ts_kv", "ts_kv_latest", "event", "remote_record", "coap_exchange"] {
        assert!(count(table) > 0, "{table} copied nothing: {:?}", report.counts);
    }
}

#[test]
fn a_migrated_store_reads_the_same_as_its_source() {
    let dir = TempDir::new();
    let path = dir.0.join("coapgate.db");
    fill(&path, 12);
    let db = pg_cluster::PgCluster::database();
    let target = PgConfig::from_url(&db.url()).unwrap();
    let mut chunks = 0;
    // Small chunks: every table takes several, keyed by rowid or by a composite primary key.
    let options = MigrateOptions { chunk_rows: 7, ..MigrateOptions::default() };
    let report = migrate(&path, &target, &options, &mut |_| chunks += 1).unwrap();
    assert_counts_match(&report);
    assert!(!report.resumed);
    assert!(report.moved_recent_points >= 2, "the second writer's points waited in ts_kv_recent: {report:?}");
    assert!(chunks > 20, "{chunks} chunks");

    let sqlite = SqliteStore::open(&path).unwrap();
    let postgres = PgStore::connect(&db.url()).unwrap();
    let expected = snapshot(&sqlite);
    assert_same(&expected, &snapshot(&postgres));
    // The recent point that overwrote a moved one kept its value, and updateOnlyKeys' skip too.
    let d0 = postgres.device_by_name("D0").unwrap().unwrap();
    let query = HistoryQuery { keys: vec!["t".into()], start_ts: JAN_2025, end_ts: JAN_2025, limit: 10, descending: false };
    assert_eq!(postgres.timeseries_history(d0.id, &query).unwrap()[0].1, vec![TsValue { ts: JAN_2025, value: KvValue::Double(99.25) }]);
    let d1 = postgres.device_by_name("D1").unwrap().unwrap();
    let query = HistoryQuery { keys: vec!["state".into()], start_ts: 0, end_ts: i64::MAX, limit: 10, descending: false };
    assert_eq!(postgres.timeseries_history(d1.id, &query).unwrap()[0].1.len(), 2, "idle, busy");

    // The target works as a store: sequences continue after the copied ids.
    let mut writer = postgres.uplink_writer().unwrap();
    let r = record(vec![device("D0", None, None, vec![(DEC_2026 + 20, vec![("brand new key", KvValue::Long(1))])])], DEC_2026 + 20);
    writer.commit(&[r]).unwrap()[0].as_ref().unwrap();
    assert!(postgres.timeseries_keys(d0.id).unwrap().contains(&"brand new key".to_string()));
    assert_eq!(postgres.latest_timeseries(d0.id, Some(&["t".into()])).unwrap()[0].1.value, KvValue::Double(21.0), "March's");

    // Running it again changes nothing and checks the counts again.
    drop(sqlite);
    let again = migrate(&path, &target, &MigrateOptions::default(), &mut |_| {}).unwrap();
    assert!(again.resumed);
    assert_eq!(again.copied_rows, 0);
    let mismatched: Vec<&str> = again.mismatches().iter().map(|c| c.table).collect();
    // The writer's new point, key and latest value are the target's own now.
    assert_eq!(mismatched, ["key_dictionary", "ts_kv_latest", "ts_kv"], "{:?}", again.counts);
}

#[test]
fn an_interrupted_migration_resumes_and_copies_every_row_once() {
    let dir = TempDir::new();
    let path = dir.0.join("coapgate.db");
    fill(&path, 30);
    let db = pg_cluster::PgCluster::database();
    let target = PgConfig::from_url(&db.url()).unwrap();
    let mut runs = 0;
    let report = loop {
        runs += 1;
        assert!(runs < 200, "no progress");
        // Each run commits three chunks and dies in the fourth, after its COPY, before COMMIT.
        let options = MigrateOptions { chunk_rows: 5, fail_after_chunks: Some(3) };
        match migrate(&path, &target, &options, &mut |_| {}) {
            Ok(report) => break report,
            Err(e) => assert!(e.to_string().contains("stopped by the test hook"), "{e}"),
        }
    };
    assert!(runs > 10, "{runs} runs");
    assert!(report.resumed);
    assert_counts_match(&report);
    let sqlite = SqliteStore::open(&path).unwrap();
    let postgres = PgStore::connect(&db.url()).unwrap();
    assert_same(&snapshot(&sqlite), &snapshot(&postgres));
}

#[test]
fn a_target_with_other_data_is_refused() {
    let (one, two) = (TempDir::new(), TempDir::new());
    let (first, second) = (one.0.join("coapgate.db"), two.0.join("coapgate.db"));
    fill(&first, 2);
    fill(&second, 2);

    // A database a server already runs on.
    let db = pg_cluster::PgCluster::database();
    let target = PgConfig::from_url(&db.url()).unwrap();
    let store = PgStore::connect(&db.url()).unwrap();
    store.put_setting("jwt_secret", "theirs").unwrap();
    let e = migrate(&first, &target, &MigrateOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("already holds data") && e.contains("setting"), "{e}");
    assert_eq!(store.setting("jwt_secret").unwrap().as_deref(), Some("theirs"), "nothing changed");

    // A database being filled from another data directory.
    let db = pg_cluster::PgCluster::database();
    let target = PgConfig::from_url(&db.url()).unwrap();
    let options = MigrateOptions { chunk_rows: 5, fail_after_chunks: Some(1) };
    assert!(migrate(&first, &target, &options, &mut |_| {}).is_err());
    let e = migrate(&second, &target, &MigrateOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("another data directory"), "{e}");
    // The first one's can go on.
    assert_counts_match(&migrate(&first, &target, &MigrateOptions::default(), &mut |_| {}).unwrap());

    // No database at all at the source.
    let e = migrate(&one.0.join("nothing.db"), &target, &MigrateOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("no coapgate database"), "{e}");
}

#[test]
fn an_exchange_key_logged_twice_arrives_once_the_newest() {
    // SQLite's log can hold an older exchange of a (peer, Message ID) reused after its lifetime
    // until upkeep deletes it; PostgreSQL keeps one per key (a unique index).
    let dir = TempDir::new();
    let path = dir.0.join("coapgate.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let mut writer = store.uplink_writer().unwrap();
        for (ts, response) in [(1_000, 1u8), (300_000, 2), (300_001, 3)] {
            let mut r = record(vec![device("X", None, None, vec![(ts, vec![("t", KvValue::Long(ts))])])], ts);
            let message_id = if response == 3 { 8 } else { 7 };
            r.exchange = Some(Exchange { peer: "10.0.0.9:5683".into(), message_id, ts, response: vec![response] });
            writer.commit(&[r]).unwrap()[0].as_ref().unwrap();
        }
    }
    let db = pg_cluster::PgCluster::database();
    let report = migrate(&path, &PgConfig::from_url(&db.url()).unwrap(), &MigrateOptions::default(), &mut |_| {}).unwrap();
    assert!(report.mismatches().is_empty(), "{:?}", report.counts);
    let postgres = PgStore::connect(&db.url()).unwrap();
    let exchanges: Vec<(u16, Vec<u8>)> = postgres.recent_exchanges(0, 10).unwrap().into_iter().map(|e| (e.message_id, e.response)).collect();
    assert_eq!(exchanges, vec![(7, vec![2]), (8, vec![3])]);
}
