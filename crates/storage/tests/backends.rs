//! One behaviour suite for every storage backend: each test is written once against `Store` and
//! `UplinkWriter`, and runs on SQLite (a temporary directory) and on PostgreSQL (a private
//! cluster the tests start, see `pg_cluster`).

mod pg_cluster;

use std::sync::Arc;

use coapgate_storage::model::*;
use coapgate_storage::{PgStore, SqliteStore, StorageError, Store};
use serde_json::{Value, json};
use uuid::Uuid;

/// A place a store lives, which can be opened again (for "after a restart" checks).
trait Backend {
    fn open(&self) -> Box<dyn Store>;
    /// Whether several stores (nodes) may share the database, each seeing the others' edits.
    /// A SQLite data directory belongs to one process and its one store.
    fn shared_by_nodes(&self) -> bool;
}

struct Sqlite {
    dir: std::path::PathBuf,
}

impl Sqlite {
    fn new() -> Sqlite {
        let dir = std::env::temp_dir().join(format!("coapgate-backends-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Sqlite { dir }
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.dir.join("test.db")).unwrap())
    }

    fn shared_by_nodes(&self) -> bool {
        false
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Postgres {
    database: pg_cluster::PgDatabase,
}

impl Backend for Postgres {
    fn open(&self) -> Box<dyn Store> {
        Box::new(PgStore::connect(&self.database.url()).unwrap())
    }

    fn shared_by_nodes(&self) -> bool {
        true
    }
}

/// Each behaviour twice: `sqlite::name` and `postgres::name`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Sqlite::new()); } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Postgres { database: super::pg_cluster::PgCluster::database() }); } )*
        }
    };
}

backend_tests!(
    devices_are_created_once_and_reused,
    creating_is_forbidden_without_permission,
    a_rejected_record_leaves_nothing_behind,
    assets_are_created_with_their_profile_and_store_values,
    customers_and_groups_are_created_once_and_only_at_entity_creation,
    update_only_keys_compare_with_the_stored_value,
    history_and_latest_values,
    attributes_are_client_scope_and_overwritten,
    a_remote_record_is_stored_once,
    exchanges_are_stored_with_their_uplink_only,
    events_page_filter_and_expire,
    converters_and_integrations_round_trip_with_unique_routing_keys,
    devices_page_sort_and_search,
    oversized_pages_are_clamped_consistently,
    deleting_a_device_removes_its_data_and_the_writer_creates_it_again,
    profiles_in_use_or_default_are_not_deleted,
    users_and_settings,
    users_are_listed_by_tenant_and_customer_with_search_and_sort,
    users_are_updated_disabled_and_deleted,
    an_activation_token_works_once_and_not_after_it_expires,
    deleting_a_customer_deletes_its_users,
    tenant_id_survives_reopening,
    a_store_can_be_dropped_on_a_thread_running_async_tasks,
    devices_assets_and_customers_are_saved_with_unique_names,
    attributes_and_time_series_are_written_for_any_entity,
    writes_to_an_entity_that_is_gone_are_refused,
    attributes_are_deleted_by_scope_and_key,
    time_series_are_deleted_by_range_with_thingsboards_latest_rules,
    deleting_a_customer_integration_or_converter_removes_its_own_data,
    device_credentials_are_one_unique_token_per_device,
    unassigned_devices_are_the_tenants_own,
);

fn all() -> PageQuery {
    PageQuery { page_size: 100, ..Default::default() }
}

fn record(name: &str, allow: bool, ts: i64, values: Vec<(&str, KvValue)>) -> UplinkRecord {
    let mut device = EntityUpdate::device(name, "thermo");
    device.telemetry = vec![(ts, values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())];
    device.attributes = vec![("fw".to_string(), KvValue::Str("1.0".into()))];
    record_of(allow, ts, vec![device])
}

fn record_of(allow: bool, ts: i64, entities: Vec<EntityUpdate>) -> UplinkRecord {
    UplinkRecord {
        integration_id: Uuid::nil(),
        allow_create_devices: allow,
        received_ts: ts,
        update_only_keys: Arc::from(Vec::new()),
        entities,
        exchange: None,
        remote: None,
        converter: None,
    }
}

fn history(store: &dyn Store, id: Uuid, key: &str) -> Vec<(i64, KvValue)> {
    let q = HistoryQuery { keys: vec![key.into()], start_ts: i64::MIN, end_ts: i64::MAX, limit: 1000, descending: false };
    store.timeseries_history(id, &q).unwrap().into_iter().flat_map(|(_, p)| p).map(|p| (p.ts, p.value)).collect()
}

fn devices_are_created_once_and_reused(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let batch = vec![
        record("SN-001", true, 1000, vec![("temperature", KvValue::Double(25.7)), ("humidity", KvValue::Long(69))]),
        record("SN-001", true, 2000, vec![("temperature", KvValue::Double(26.0))]),
    ];
    let results = writer.commit(&batch).unwrap();
    let first = results[0].as_ref().unwrap();
    assert_eq!(first.created.len(), 1);
    assert!(results[1].as_ref().unwrap().created.is_empty(), "same device reused within a batch");
    let device = store.device_by_name("SN-001").unwrap().unwrap();
    assert_eq!(first.created, vec![(EntityKind::Device, device.id)]);
    assert_eq!(results[1].as_ref().unwrap().entities, vec![(EntityKind::Device, device.id)]);
    assert_eq!(device.device_type, "thermo");
    assert_eq!(device.created_by_integration, Some(Uuid::nil()));
    assert_eq!(store.device(device.id).unwrap().as_ref(), Some(&device));
    let profile = store.device_profile(device.device_profile_id).unwrap().unwrap();
    assert_eq!((profile.name.as_str(), profile.is_default), ("thermo", false));
    // The next batch (through the writer's cache) and a new writer reuse it too.
    let again = writer.commit(&[record("SN-001", false, 3000, vec![("t", KvValue::Long(1))])]).unwrap();
    assert!(again[0].as_ref().unwrap().created.is_empty());
    let mut other = store.uplink_writer().unwrap();
    let again = other.commit(&[record("SN-001", false, 4000, vec![("t", KvValue::Long(2))])]).unwrap();
    assert_eq!(again[0].as_ref().unwrap().entities, vec![(EntityKind::Device, device.id)]);
    assert_eq!(store.devices(&all(), None).unwrap().total_elements, 1);
    assert_eq!(store.device_profiles(&all()).unwrap().total_elements, 2, "default and thermo");
}

fn creating_is_forbidden_without_permission(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let results = writer
        .commit(&[record("SN-002", false, 2000, vec![("t", KvValue::Double(1.0))]), record("SN-003", true, 2000, vec![])])
        .unwrap();
    assert_eq!(results[0], Err(UplinkRejection::CreatingDevicesForbidden));
    assert_eq!(results[0].as_ref().unwrap_err().to_string(), "Creating devices is forbidden!");
    assert!(results[1].is_ok(), "a rejection does not affect the others");
    assert!(store.device_by_name("SN-002").unwrap().is_none());
    assert!(store.device_by_name("SN-003").unwrap().is_some());
}

fn a_rejected_record_leaves_nothing_behind(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    writer.commit(&[record("Known", true, 1, vec![])]).unwrap();
    // The known device comes first, the unknown asset second: still nothing of it is written.
    let mut known = EntityUpdate::device("Known", "thermo");
    known.telemetry = vec![(5, vec![("t".into(), KvValue::Long(1))])];
    known.attributes = vec![("a".into(), KvValue::Long(1))];
    let mut unknown = EntityUpdate::asset("New", "site");
    unknown.customer_name = Some("Acme".into());
    unknown.group_name = Some("Sites".into());
    let mut rejected = record_of(false, 5, vec![known, unknown]);
    rejected.exchange = Some(Exchange { peer: "10.0.0.1:1".into(), message_id: 7, ts: 5, response: vec![1] });
    let results = writer.commit(&[rejected]).unwrap();
    assert_eq!(results[0], Err(UplinkRejection::CreatingAssetsForbidden));
    let id = store.device_by_name("Known").unwrap().unwrap().id;
    assert!(store.latest_timeseries(id, None).unwrap().is_empty());
    assert!(store.attributes(id, None, Some(&["a".to_string()])).unwrap().is_empty());
    assert_eq!(store.customers(&all()).unwrap().total_elements, 0);
    assert_eq!(store.entity_groups(EntityKind::Asset, None, &all()).unwrap().total_elements, 0);
    assert_eq!(store.asset_profiles(&all()).unwrap().total_elements, 1, "only the default profile");
    assert!(store.recent_exchanges(0, 10).unwrap().is_empty());
}

fn assets_are_created_with_their_profile_and_store_values(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let mut asset = EntityUpdate::asset("Building A", "building");
    asset.label = Some("HQ".into());
    asset.telemetry = vec![(10, vec![("power".into(), KvValue::Long(5))])];
    asset.attributes = vec![("floors".into(), KvValue::Long(3))];
    // A device and an asset may share a name: they are different kinds of entity.
    let device = EntityUpdate::device("Building A", "meter");
    let results = writer.commit(&[record_of(true, 10, vec![asset, device])]).unwrap();
    let outcome = results[0].as_ref().unwrap();
    assert_eq!(outcome.created.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![EntityKind::Asset, EntityKind::Device]);

    let stored = store.asset_by_name("Building A").unwrap().expect("asset created");
    assert_eq!((stored.asset_type.as_str(), stored.label.as_deref()), ("building", Some("HQ")));
    assert_eq!(store.asset(stored.id).unwrap().as_ref(), Some(&stored));
    let profile = store.asset_profile(stored.asset_profile_id).unwrap().expect("asset profile created");
    assert_eq!((profile.name.as_str(), profile.is_default), ("building", false));
    assert!(!store.device_profiles(&all()).unwrap().data.iter().any(|p| p.name == "building"));
    assert_eq!(store.latest_timeseries(stored.id, None).unwrap()[0].1, TsValue { ts: 10, value: KvValue::Long(5) });
    assert_eq!(store.attributes(stored.id, None, None).unwrap()[0].1.value, KvValue::Long(3));
    assert_eq!(store.assets(&all(), Some("building")).unwrap().total_elements, 1);
    assert_eq!(store.assets(&all(), Some("meter")).unwrap().total_elements, 0);

    let again = writer.commit(&[record_of(false, 11, vec![EntityUpdate::asset("Building A", "other")])]).unwrap();
    assert!(again[0].as_ref().unwrap().created.is_empty());
    let refused = writer.commit(&[record_of(false, 11, vec![EntityUpdate::asset("Building B", "building")])]).unwrap();
    assert_eq!(refused[0], Err(UplinkRejection::CreatingAssetsForbidden));

    assert!(matches!(store.delete_asset_profile(profile.id), Err(StorageError::Conflict(_))), "profile in use");
    assert!(store.delete_asset(stored.id).unwrap());
    assert!(store.latest_timeseries(stored.id, None).unwrap().is_empty(), "telemetry goes with the asset");
    assert!(store.delete_asset_profile(profile.id).unwrap());
    // The writer forgets the deleted asset and profile and creates both again.
    let results = writer.commit(&[record_of(true, 12, vec![EntityUpdate::asset("Building A", "building")])]).unwrap();
    assert_eq!(results[0].as_ref().unwrap().created.len(), 1);
    let recreated = store.asset_by_name("Building A").unwrap().unwrap();
    assert!(store.asset_profile(recreated.asset_profile_id).unwrap().is_some());
}

fn customers_and_groups_are_created_once_and_only_at_entity_creation(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let device = |name: &str, customer: Option<&str>, group: Option<&str>| {
        let mut d = EntityUpdate::device(name, "thermo");
        d.customer_name = customer.map(str::to_string);
        d.group_name = group.map(str::to_string);
        d
    };
    let mut asset = EntityUpdate::asset("Site 1", "site");
    asset.customer_name = Some("Acme".into());
    asset.group_name = Some("Sensors".into());
    let batch = vec![
        record_of(true, 1, vec![device("D1", Some("Acme"), Some("Sensors"))]),
        record_of(true, 1, vec![device("D2", Some("Acme"), Some("Sensors")), device("D2", Some("Acme"), Some("Sensors"))]),
        record_of(true, 1, vec![device("D3", None, Some("Sensors"))]),
        record_of(true, 1, vec![asset]),
        record_of(true, 1, vec![device("D4", Some("Globex"), None)]),
    ];
    let results = writer.commit(&batch).unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results[1].as_ref().unwrap().created.len(), 1, "a name twice in one output creates one device");

    let mut titles: Vec<String> = store.customers(&all()).unwrap().data.into_iter().map(|c| c.title).collect();
    titles.sort();
    assert_eq!(titles, vec!["Acme", "Globex"]);
    let acme = store.customer_by_title("Acme").unwrap().unwrap();
    assert_eq!(store.customer(acme.id).unwrap().as_ref(), Some(&acme));
    for name in ["D1", "D2"] {
        assert_eq!(store.device_by_name(name).unwrap().unwrap().customer_id, Some(acme.id), "{name}");
    }
    assert_eq!(store.device_by_name("D3").unwrap().unwrap().customer_id, None);
    assert_eq!(store.asset_by_name("Site 1").unwrap().unwrap().customer_id, Some(acme.id));
    assert_eq!(store.customer_devices(acme.id, &all(), None).unwrap().total_elements, 2);
    assert_eq!(store.customer_assets(acme.id, &all(), None).unwrap().total_elements, 1);

    assert_eq!(store.entity_groups(EntityKind::Device, None, &all()).unwrap().total_elements, 2, "one per owner");
    let acme_group = store.entity_group_by_name(EntityKind::Device, Owner::Customer(acme.id), "Sensors").unwrap().unwrap();
    let tenant_group = store.entity_group_by_name(EntityKind::Device, Owner::Tenant, "Sensors").unwrap().unwrap();
    assert_eq!(store.entity_groups(EntityKind::Device, Some(Owner::Tenant), &all()).unwrap().data, vec![tenant_group.clone()]);
    let members = |group: Uuid| -> Vec<String> {
        let mut names: Vec<String> = store.entity_group_members(group, &all()).unwrap().data.into_iter().map(|m| m.name).collect();
        names.sort();
        names
    };
    assert_eq!(members(acme_group.id), vec!["D1", "D2"]);
    assert_eq!(members(tenant_group.id), vec!["D3"]);
    let asset_group = store.entity_group_by_name(EntityKind::Asset, Owner::Customer(acme.id), "Sensors").unwrap().unwrap();
    let asset_members = store.entity_group_members(asset_group.id, &all()).unwrap().data;
    assert_eq!((asset_members[0].kind, asset_members[0].name.as_str()), (EntityKind::Asset, "Site 1"));
    let d1 = store.device_by_name("D1").unwrap().unwrap();
    assert_eq!(store.groups_of_entity(d1.id).unwrap(), vec![acme_group.id]);

    // An existing device keeps its customer and groups whatever the output says now.
    writer
        .commit(&[record_of(true, 2, vec![device("D1", Some("Initech"), Some("Other")), device("D5", Some("Acme"), Some("Sensors"))])])
        .unwrap();
    assert_eq!(store.customers(&all()).unwrap().total_elements, 2, "no customer for an existing device");
    assert_eq!(store.entity_groups(EntityKind::Device, None, &all()).unwrap().total_elements, 2);
    assert_eq!(members(acme_group.id), vec!["D1", "D2", "D5"]);

    // Deleting a customer unassigns its entities and drops the groups it owns; the writer
    // creates both again when an output names them.
    assert!(store.delete_customer(acme.id).unwrap());
    assert_eq!(store.device_by_name("D1").unwrap().unwrap().customer_id, None);
    assert!(store.entity_group(acme_group.id).unwrap().is_none());
    assert!(store.groups_of_entity(d1.id).unwrap().is_empty());
    writer.commit(&[record_of(true, 3, vec![device("D6", Some("Acme"), Some("Sensors"))])]).unwrap();
    let new_acme = store.customer_by_title("Acme").unwrap().expect("customer created again");
    assert_ne!(new_acme.id, acme.id);
    assert!(store.entity_group_by_name(EntityKind::Device, Owner::Customer(new_acme.id), "Sensors").unwrap().is_some());

    assert!(matches!(store.entity_group_members(Uuid::new_v4(), &all()), Err(StorageError::NotFound)));
    assert!(store.delete_entity_group(tenant_group.id).unwrap());
    assert!(store.entity_group(tenant_group.id).unwrap().is_none());
    assert!(!store.delete_entity_group(tenant_group.id).unwrap());
}

fn update_only_keys_compare_with_the_stored_value(backend: &dyn Backend) {
    let only = |ts: i64, t: KvValue, h: i64, fw: &str| {
        let mut d = EntityUpdate::device("D", "thermo");
        d.telemetry = vec![(ts, vec![("t".into(), t), ("h".into(), KvValue::Long(h))])];
        d.attributes = vec![("fw".into(), KvValue::Str(fw.into())), ("boot".into(), KvValue::Long(ts))];
        let mut r = record_of(true, ts, vec![d]);
        r.update_only_keys = Arc::from(vec!["t".to_string(), "fw".to_string()]);
        r
    };
    {
        let store = backend.open();
        let mut writer = store.uplink_writer().unwrap();
        // Within one batch: the second record sees the first one's value.
        let results = writer.commit(&[only(1, KvValue::Double(20.5), 1, "1.0"), only(2, KvValue::Double(20.5), 1, "1.0")]).unwrap();
        assert_eq!(results[1].as_ref().unwrap().unchanged_skipped, 2, "t and fw unchanged");
        // Across batches, and a changed value is stored.
        writer.commit(&[only(3, KvValue::Double(20.5), 1, "1.0")]).unwrap();
        writer.commit(&[only(4, KvValue::Double(21.0), 1, "1.1")]).unwrap();
        // Same number as another type counts as a change.
        writer.commit(&[only(5, KvValue::Long(21), 1, "1.1")]).unwrap();
        // Several points of one key in one record are compared one after the other.
        let mut d = EntityUpdate::device("D", "thermo");
        d.telemetry = vec![
            (6, vec![("t".into(), KvValue::Long(21))]),
            (7, vec![("t".into(), KvValue::Long(22))]),
            (8, vec![("t".into(), KvValue::Long(22))]),
        ];
        let mut r = record_of(true, 8, vec![d]);
        r.update_only_keys = Arc::from(vec!["t".to_string()]);
        writer.commit(&[r]).unwrap();
        let id = store.device_by_name("D").unwrap().unwrap().id;
        assert_eq!(
            history(store.as_ref(), id, "t"),
            vec![(1, KvValue::Double(20.5)), (4, KvValue::Double(21.0)), (5, KvValue::Long(21)), (7, KvValue::Long(22))]
        );
        assert_eq!(history(store.as_ref(), id, "h").len(), 5, "keys not listed are always stored");
        let attrs = store.attributes(id, None, None).unwrap();
        let fw = attrs.iter().find(|(_, a)| a.key == "fw").unwrap();
        assert_eq!((fw.1.last_update_ts, &fw.1.value), (4, &KvValue::Str("1.1".into())), "unchanged fw is not rewritten");
        let boot = attrs.iter().find(|(_, a)| a.key == "boot").unwrap();
        assert_eq!(boot.1.last_update_ts, 5);
    }
    // After a restart (and from another writer) the comparison is with what is stored.
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let results = writer.commit(&[only(9, KvValue::Long(22), 1, "1.1")]).unwrap();
    assert_eq!(results[0].as_ref().unwrap().unchanged_skipped, 2);
    let id = store.device_by_name("D").unwrap().unwrap().id;
    assert_eq!(history(store.as_ref(), id, "t").last(), Some(&(7, KvValue::Long(22))));
}

fn history_and_latest_values(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    // Real timestamps over two months (PostgreSQL: two partitions), one far in the future and
    // one before 1970 (its default partition).
    let now = 1_796_632_448_000; // 2026-12-07
    let month = 31 * 86_400_000;
    let points = [now - month, now, now + 1000, 7_000_000_000_000, -5];
    for (i, ts) in points.iter().enumerate() {
        writer.commit(&[record("H", true, *ts, vec![("t", KvValue::Long(i as i64)), ("s", KvValue::Str(format!("v{i}")))])]).unwrap();
    }
    // Types round-trip.
    let values = vec![
        ("b", KvValue::Bool(true)),
        ("l", KvValue::Long(-7)),
        ("d", KvValue::Double(25.5)),
        ("s", KvValue::Str("text".into())),
        ("j", KvValue::Json("{\"a\":[1,2]}".into())),
    ];
    writer.commit(&[record("T", true, now, values.clone())]).unwrap();
    let t = store.device_by_name("T").unwrap().unwrap().id;
    let latest = store.latest_timeseries(t, None).unwrap();
    let mut expected: Vec<(String, TsValue)> =
        values.iter().map(|(k, v)| (k.to_string(), TsValue { ts: now, value: v.clone() })).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(latest, expected);
    assert_eq!(store.timeseries_keys(t).unwrap(), vec!["b", "d", "j", "l", "s"]);
    let some = store.latest_timeseries(t, Some(&["s".to_string(), "b".to_string(), "nope".to_string()])).unwrap();
    assert_eq!(some.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["s", "b"], "in the order asked");

    let h = store.device_by_name("H").unwrap().unwrap().id;
    let mut sorted = points.to_vec();
    sorted.sort();
    assert_eq!(history(store.as_ref(), h, "t").iter().map(|(ts, _)| *ts).collect::<Vec<_>>(), sorted);
    let q = HistoryQuery { keys: vec!["t".into(), "s".into(), "x".into()], start_ts: now - month, end_ts: now + 1000, limit: 2, descending: true };
    let read = store.timeseries_history(h, &q).unwrap();
    assert_eq!(read.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), vec!["t", "s"], "unknown keys have no data");
    assert_eq!(read[0].1, vec![TsValue { ts: now + 1000, value: KvValue::Long(2) }, TsValue { ts: now, value: KvValue::Long(1) }]);
    // The latest value is the newest timestamp, not the last write.
    assert_eq!(store.latest_timeseries(h, Some(&["t".to_string()])).unwrap()[0].1, TsValue { ts: 7_000_000_000_000, value: KvValue::Long(3) });
    // A rewrite of a timestamp replaces its value, in history and (if newest) in latest.
    writer.commit(&[record("H", true, 7_000_000_000_000, vec![("t", KvValue::Long(33))])]).unwrap();
    writer.commit(&[record("H", true, now, vec![("t", KvValue::Long(11))])]).unwrap();
    let t_history = history(store.as_ref(), h, "t");
    assert_eq!(t_history.len(), 5);
    assert!(t_history.contains(&(now, KvValue::Long(11))) && t_history.contains(&(7_000_000_000_000, KvValue::Long(33))));
    assert_eq!(store.latest_timeseries(h, Some(&["t".to_string()])).unwrap()[0].1.value, KvValue::Long(33));
    // The same timestamp twice in one batch: the later write wins.
    writer
        .commit(&[record("H", true, now, vec![("t", KvValue::Long(100))]), record("H", true, now, vec![("t", KvValue::Long(101))])])
        .unwrap();
    assert!(history(store.as_ref(), h, "t").contains(&(now, KvValue::Long(101))));
}

fn attributes_are_client_scope_and_overwritten(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let mut d = EntityUpdate::device("A", "thermo");
    d.attributes = vec![("fw".into(), KvValue::Str("1.0".into())), ("count".into(), KvValue::Long(1))];
    writer.commit(&[record_of(true, 100, vec![d.clone()])]).unwrap();
    d.attributes = vec![("fw".into(), KvValue::Str("2.0".into()))];
    writer.commit(&[record_of(true, 200, vec![d])]).unwrap();
    let id = store.device_by_name("A").unwrap().unwrap().id;
    let attrs = store.attributes(id, Some("CLIENT_SCOPE"), None).unwrap();
    assert_eq!(
        attrs,
        vec![
            ("CLIENT_SCOPE".to_string(), AttributeValue { key: "count".into(), last_update_ts: 100, value: KvValue::Long(1) }),
            ("CLIENT_SCOPE".to_string(), AttributeValue { key: "fw".into(), last_update_ts: 200, value: KvValue::Str("2.0".into()) }),
        ]
    );
    assert!(store.attributes(id, Some("SERVER_SCOPE"), None).unwrap().is_empty());
    assert_eq!(store.attribute_keys(id, None).unwrap(), vec!["count", "fw"]);
    assert_eq!(store.attributes(id, None, Some(&["fw".to_string()])).unwrap().len(), 1);
}

/// A remote's record is stored once however often it is sent, in one batch or several, and
/// its place is forgotten only when the remote says it left its outbox.
fn a_remote_record_is_stored_once(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let outbox = Uuid::new_v4();
    let sent = |seq: u64, ts: i64| {
        let mut r = record("R-1", true, ts, vec![("t", KvValue::Long(ts))]);
        r.remote = Some(RemoteSeq { outbox, seq });
        r
    };
    let first = writer.commit(&[sent(1, 1000), sent(1, 1000), sent(2, 2000)]).unwrap();
    let duplicates: Vec<bool> = first.iter().map(|r| r.as_ref().unwrap().duplicate).collect();
    assert_eq!(duplicates, vec![false, true, false], "a copy in the same batch is a duplicate");
    let again = writer.commit(&[sent(2, 2000)]).unwrap();
    assert!(again[0].as_ref().unwrap().duplicate);
    // Another writer (another node) finds it too.
    let mut other = store.uplink_writer().unwrap();
    assert!(other.commit(&[sent(2, 2000)]).unwrap()[0].as_ref().unwrap().duplicate);
    let mut other_outbox = sent(2, 3000);
    other_outbox.remote = Some(RemoteSeq { outbox: Uuid::new_v4(), seq: 2 });
    assert!(!writer.commit(&[other_outbox]).unwrap()[0].as_ref().unwrap().duplicate, "numbers are per outbox");
    let device = store.device_by_name("R-1").unwrap().unwrap();
    assert_eq!(history(store.as_ref(), device.id, "t").len(), 3, "1000, 2000 and the other outbox's 3000");
    // A rejected record keeps no place: judged again when sent again.
    let mut refused = record("R-2", false, 1, vec![]);
    refused.remote = Some(RemoteSeq { outbox, seq: 3 });
    assert!(writer.commit(&[refused.clone()]).unwrap()[0].is_err());
    refused.allow_create_devices = true;
    assert!(!writer.commit(&[refused]).unwrap()[0].as_ref().unwrap().duplicate);
    assert_eq!(store.forget_remote_records(Uuid::nil(), outbox, 2).unwrap(), 1);
    assert!(!writer.commit(&[sent(1, 1000)]).unwrap()[0].as_ref().unwrap().duplicate, "forgotten below 2");
}

fn exchanges_are_stored_with_their_uplink_only(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let exchange = |mid: u16| Exchange {
        peer: "127.0.0.1:5000".into(),
        message_id: mid,
        ts: 1000 + i64::from(mid),
        response: vec![0x60, 0x41, 0, mid as u8],
    };
    let mut stored = record("A", true, 1, vec![("t", KvValue::Long(1))]);
    stored.exchange = Some(exchange(1));
    let mut rejected = record("B", false, 1, vec![("t", KvValue::Long(1))]);
    rejected.exchange = Some(exchange(2));
    let results = writer.commit(&[stored, rejected]).unwrap();
    assert!(results[0].is_ok() && results[1].is_err());
    assert_eq!(store.recent_exchanges(0, 10).unwrap(), vec![exchange(1)]);
    assert!(store.recent_exchanges(1002, 10).unwrap().is_empty(), "older than `since`");
    // A (peer, message id) reused after EXCHANGE_LIFETIME is a new exchange, and the newest
    // wins; the limit keeps the newest rows.
    let mut again = record("A", true, 2, vec![("t", KvValue::Long(2))]);
    again.exchange = Some(Exchange { ts: 248_002, response: vec![0x60, 0x41, 0, 9], ..exchange(1) });
    let mut other = record("A", true, 3, vec![("t", KvValue::Long(3))]);
    other.exchange = Some(Exchange { ts: 249_000, ..exchange(3) });
    writer.commit(&[again.clone(), other.clone()]).unwrap();
    let newest = other.exchange.clone().unwrap();
    assert_eq!(store.recent_exchanges(0, 10).unwrap(), vec![again.exchange.clone().unwrap(), newest.clone()]);
    assert_eq!(store.recent_exchanges(0, 1).unwrap(), vec![newest]);
    assert_eq!(store.find_exchange("127.0.0.1:5000", 1, 0).unwrap(), again.exchange.clone());
    assert_eq!(store.find_exchange("127.0.0.1:5000", 2, 0).unwrap(), None, "rejected: not stored");
    assert_eq!(store.find_exchange("127.0.0.1:5001", 1, 0).unwrap(), None);
    assert_eq!(store.find_exchange("127.0.0.1:5000", 1, 248_003).unwrap(), None, "older than `since`");
    // Upkeep runs (nothing has expired: these exchanges are from 1970, so it deletes them).
    while writer.maintain().unwrap() {}
}

fn events_page_filter_and_expire(backend: &dyn Backend) {
    let store = backend.open();
    let event = |entity: Uuid, t: i64, event_type: &str, body: Value| Event {
        id: Uuid::new_v4(),
        created_time: t,
        entity_kind: EntityKind::Integration,
        entity_id: entity,
        event_type: event_type.into(),
        uid: "node".into(),
        body,
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = Vec::new();
    for t in 0..10 {
        let status = if t % 2 == 0 { "OK" } else { "ERROR" };
        events.push(event(a, t, "DEBUG_INTEGRATION", json!({"status": status, "error": format!("e{t}"), "n": {"z": 1, "a": 2}})));
    }
    events.push(event(a, 5, "STATS", json!({})));
    events.push(event(b, 5, "DEBUG_INTEGRATION", json!({"status": "OK"})));
    store.insert_events(&events).unwrap();

    let query = |f: &dyn Fn(&mut EventQuery)| {
        let mut q = EventQuery {
            entity_id: a,
            event_type: "DEBUG_INTEGRATION".into(),
            page: PageQuery { page_size: 3, ..Default::default() },
            ..Default::default()
        };
        f(&mut q);
        store.events(&q).unwrap()
    };
    let page = query(&|_| {});
    assert_eq!(page.total_elements, 10);
    assert_eq!(page.data.iter().map(|e| e.created_time).collect::<Vec<_>>(), vec![9, 8, 7], "newest first");
    assert!(page.has_next);
    assert_eq!(page.data[0], events[9], "round-trips, body key order included");
    assert_eq!(page.data[0].body.to_string(), events[9].body.to_string());
    let ascending = query(&|q| q.page.sort_property = Some("createdTime".into()));
    assert_eq!(ascending.data.iter().map(|e| e.created_time).collect::<Vec<_>>(), vec![0, 1, 2]);
    let page = query(&|q| {
        q.start_time = Some(2);
        q.end_time = Some(6);
    });
    assert_eq!(page.total_elements, 5);
    assert_eq!(query(&|q| q.body_equals = vec![("status".into(), "ERROR".into())]).total_elements, 5);
    let page = query(&|q| q.error_contains = Some("e7".into()));
    assert_eq!(page.data.len(), 1);
    assert_eq!(query(&|q| q.has_error = Some(true)).total_elements, 10);
    assert_eq!(query(&|q| q.has_error = Some(false)).total_elements, 0);

    assert_eq!(store.delete_events_before(5).unwrap(), 5);
    assert_eq!(query(&|_| {}).total_elements, 5);
    assert_eq!(store.delete_events_of(b).unwrap(), 1);
}

fn integration(name: &str, routing_key: &str, converter: Uuid) -> Integration {
    Integration {
        id: Uuid::new_v4(),
        created_time: 1,
        name: name.into(),
        integration_type: "COAP".into(),
        enabled: true,
        allow_create_devices_or_assets: true,
        is_remote: false,
        debug_settings: json!({"failuresEnabled": true, "allEnabledUntil": 0}),
        default_converter_id: converter,
        downlink_converter_id: None,
        routing_key: routing_key.into(),
        secret: "s".into(),
        configuration: json!({"z": 1, "a": {"y": 2, "b": 3}}),
        additional_info: Value::Null,
        version: 1,
    }
}

fn converters_and_integrations_round_trip_with_unique_routing_keys(backend: &dyn Backend) {
    let store = backend.open();
    let mut converter = Converter {
        id: Uuid::new_v4(),
        created_time: 5,
        name: "Seed converter".into(),
        converter_type: "UPLINK".into(),
        integration_type: Some("COAP".into()),
        debug_settings: json!({}),
        configuration: json!({"scriptLang": "JS", "decoder": "return {};", "updateOnlyKeys": ["t"]}),
        additional_info: json!({"description": "d"}),
        version: 1,
    };
    store.save_converter(&converter).unwrap();
    assert_eq!(store.converter(converter.id).unwrap().as_ref(), Some(&converter));
    converter.version = 2;
    converter.name = "Renamed".into();
    store.save_converter(&converter).unwrap();
    assert_eq!(store.converter(converter.id).unwrap().as_ref(), Some(&converter), "saved again in place");
    assert_eq!(store.converters(&all()).unwrap().total_elements, 1);

    let first = integration("CoAP one", "k", converter.id);
    store.save_integration(&first).unwrap();
    let stored = store.integration(first.id).unwrap().unwrap();
    assert_eq!(stored, first);
    assert_eq!(stored.configuration.to_string(), first.configuration.to_string(), "key order kept");
    assert_eq!(store.integration_by_routing_key("k").unwrap().as_ref(), Some(&first));
    let mut second = integration("Other", "k", converter.id);
    let conflict = store.save_integration(&second);
    assert!(matches!(conflict, Err(StorageError::Conflict(ref m)) if m == "Integration with such routing key already exists!"), "{conflict:?}");
    second.routing_key = "k2".into();
    store.save_integration(&second).unwrap();
    let q = PageQuery { page_size: 10, text_search: Some("coap".into()), ..Default::default() };
    let page = store.integrations(&q).unwrap();
    assert_eq!((page.total_elements, page.data[0].name.as_str()), (1, "CoAP one"));
    assert_eq!(store.all_integrations().unwrap().len(), 2);

    assert!(matches!(store.delete_converter(converter.id), Err(StorageError::Conflict(_))), "in use");
    assert!(store.delete_integration(first.id).unwrap());
    assert!(store.delete_integration(second.id).unwrap());
    assert!(!store.delete_integration(second.id).unwrap());
    assert!(store.integration_by_routing_key("k").unwrap().is_none());
    assert!(store.delete_converter(converter.id).unwrap());
    assert!(store.converter(converter.id).unwrap().is_none());
}

fn devices_page_sort_and_search(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let names = ["Zeta", "alpha", "Mid", "beta_1", "beta%2", "Beta3"];
    let entities = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut d = EntityUpdate::device(*n, if i % 2 == 0 { "even" } else { "odd" });
            d.label = (i != 0).then(|| format!("L{i}"));
            d.customer_name = Some(format!("C-{n}"));
            d
        })
        .collect();
    writer.commit(&[record_of(true, 1, entities)]).unwrap();
    let names_of = |page: Page<Device>| page.data.into_iter().map(|d| d.name).collect::<Vec<_>>();
    let q = PageQuery { page_size: 4, sort_property: Some("name".into()), ..Default::default() };
    let page = store.devices(&q, None).unwrap();
    assert_eq!((page.total_elements, page.total_pages, page.has_next), (6, 2, true));
    assert_eq!(names_of(page), vec!["Beta3", "Mid", "Zeta", "alpha"], "byte order, as SQLite sorts");
    let second = store.devices(&PageQuery { page: 1, ..q.clone() }, None).unwrap();
    assert_eq!(names_of(second), vec!["beta%2", "beta_1"]);
    let desc = store.devices(&PageQuery { sort_descending: true, ..q.clone() }, None).unwrap();
    assert_eq!(names_of(desc)[0], "beta_1");
    let search = |text: &str| {
        let mut n = names_of(store.devices(&PageQuery { page_size: 10, text_search: Some(text.into()), ..Default::default() }, None).unwrap());
        n.sort();
        n
    };
    assert_eq!(search("BETA"), vec!["Beta3", "beta%2", "beta_1"], "case-insensitive");
    assert_eq!(search("ta_"), vec!["beta_1"], "_ is literal");
    assert_eq!(search("a%"), vec!["beta%2"], "% is literal");
    assert_eq!(store.devices(&all(), Some("odd")).unwrap().total_elements, 3);
    let by_label = store.devices(&PageQuery { page_size: 10, sort_property: Some("label".into()), ..Default::default() }, None).unwrap();
    assert_eq!(by_label.data[0].name, "Zeta", "no label sorts first");
    let by_type = store.devices(&PageQuery { page_size: 10, sort_property: Some("type".into()), ..Default::default() }, Some("even")).unwrap();
    assert_eq!(by_type.total_elements, 3);
    // Customers page by title, byte order; unknown sort properties fall back to creation time.
    let q = PageQuery { page_size: 2, sort_property: Some("title".into()), ..Default::default() };
    let customers = store.customers(&q).unwrap();
    assert_eq!(customers.data.iter().map(|c| c.title.as_str()).collect::<Vec<_>>(), vec!["C-Beta3", "C-Mid"]);
    let q = PageQuery { page_size: 10, sort_property: Some("bogus".into()), ..Default::default() };
    assert_eq!(store.customers(&q).unwrap().total_elements, 6);
    let acme = store.customer_by_title("C-Mid").unwrap().unwrap();
    assert_eq!(names_of(store.customer_devices(acme.id, &all(), None).unwrap()), vec!["Mid"]);
    assert_eq!(store.customer_devices(acme.id, &all(), Some("odd")).unwrap().total_elements, 0);
}

fn oversized_pages_are_clamped_consistently(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let batch: Vec<UplinkRecord> = (0..10_005).map(|i| record(&format!("D{i}"), true, 1, vec![])).collect();
    writer.commit(&batch).unwrap();
    let page = store.devices(&PageQuery { page_size: 20_000, ..Default::default() }, None).unwrap();
    assert_eq!(page.total_elements, 10_005);
    assert_eq!(page.data.len(), 10_000, "page size is capped");
    assert!(page.has_next);
    assert_eq!(page.total_pages, 2);
    let second = store.devices(&PageQuery { page_size: 20_000, page: 1, ..Default::default() }, None).unwrap();
    assert_eq!((second.data.len(), second.has_next), (5, false));
}

fn deleting_a_device_removes_its_data_and_the_writer_creates_it_again(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let mut d = EntityUpdate::device("A", "thermo");
    d.group_name = Some("G".into());
    d.telemetry = vec![(1, vec![("t".into(), KvValue::Long(1))])];
    d.attributes = vec![("a".into(), KvValue::Long(1))];
    writer.commit(&[record_of(true, 1, vec![d])]).unwrap();
    let first = store.device_by_name("A").unwrap().unwrap().id;
    let group = store.entity_group_by_name(EntityKind::Device, Owner::Tenant, "G").unwrap().unwrap();
    assert_eq!(store.groups_of_entity(first).unwrap(), vec![group.id]);
    assert!(store.delete_device(first).unwrap());
    assert!(!store.delete_device(first).unwrap());
    assert!(store.device(first).unwrap().is_none());
    assert!(store.latest_timeseries(first, None).unwrap().is_empty());
    assert!(history(store.as_ref(), first, "t").is_empty());
    assert!(store.timeseries_keys(first).unwrap().is_empty());
    assert!(store.attributes(first, None, None).unwrap().is_empty());
    assert!(store.groups_of_entity(first).unwrap().is_empty());
    assert_eq!(store.entity_group_members(group.id, &all()).unwrap().total_elements, 0);
    let results = writer.commit(&[record("A", true, 2, vec![("t", KvValue::Long(2))])]).unwrap();
    let second = store.device_by_name("A").unwrap().unwrap().id;
    assert_ne!(first, second);
    assert_eq!(results[0].as_ref().unwrap().created, vec![(EntityKind::Device, second)]);
    if backend.shared_by_nodes() {
        // Deleted by another node: the writer's cache does not keep it alive.
        let other = backend.open();
        assert!(other.delete_device(second).unwrap());
        let results = writer.commit(&[record("A", false, 3, vec![("t", KvValue::Long(3))])]).unwrap();
        assert_eq!(results[0], Err(UplinkRejection::CreatingDevicesForbidden), "the writer saw the deletion");
        assert!(store.latest_timeseries(second, None).unwrap().is_empty());
    }
}

fn profiles_in_use_or_default_are_not_deleted(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    writer.commit(&[record("P", true, 1, vec![])]).unwrap();
    let device = store.device_by_name("P").unwrap().unwrap();
    let default = store.device_profiles(&all()).unwrap().data.into_iter().find(|p| p.is_default).unwrap();
    assert_eq!(default.name, "default");
    let refused = store.delete_device_profile(default.id);
    assert!(matches!(refused, Err(StorageError::Conflict(ref m)) if m == "Deletion of Default Device Profile is prohibited!"), "{refused:?}");
    let in_use = store.delete_device_profile(device.device_profile_id);
    assert!(matches!(in_use, Err(StorageError::Conflict(ref m)) if m == "The device profile referenced by the devices cannot be deleted!"), "{in_use:?}");
    assert!(store.delete_device(device.id).unwrap());
    assert!(store.delete_device_profile(device.device_profile_id).unwrap());
    assert!(!store.delete_device_profile(device.device_profile_id).unwrap());
    let q = PageQuery { page_size: 10, text_search: Some("DEF".into()), ..Default::default() };
    assert_eq!(store.device_profiles(&q).unwrap().total_elements, 1);
    assert_eq!(store.asset_profiles(&all()).unwrap().data[0].name, "default");
}

fn users_and_settings(backend: &dyn Backend) {
    let store = backend.open();
    assert_eq!(store.user_count().unwrap(), 0);
    let user = User {
        id: Uuid::new_v4(),
        created_time: 1,
        email: "Tenant@ThingsBoard.org".into(),
        password_hash: "$2b$hash".into(),
        authority: "TENANT_ADMIN".into(),
        first_name: Some("T".into()),
        last_name: None,
        customer_id: None,
        enabled: true,
    };
    store.insert_user(&user).unwrap();
    assert_eq!(store.user_count().unwrap(), 1);
    assert_eq!(store.user_by_email("tenant@thingsboard.org").unwrap().as_ref(), Some(&user), "e-mail ignores case");
    assert_eq!(store.user(user.id).unwrap().as_ref(), Some(&user));
    let again = store.insert_user(&User { id: Uuid::new_v4(), email: "TENANT@thingsboard.org".into(), ..user.clone() });
    assert!(matches!(again, Err(StorageError::Conflict(_))), "{again:?}");
    assert!(store.set_user_password_hash(user.id, "$2b$new").unwrap());
    assert!(!store.set_user_password_hash(Uuid::new_v4(), "x").unwrap());
    assert_eq!(store.user(user.id).unwrap().unwrap().password_hash, "$2b$new");
    assert_eq!(store.setting("jwt").unwrap(), None);
    store.put_setting("jwt", "a").unwrap();
    store.put_setting("jwt", "b").unwrap();
    assert_eq!(store.setting("jwt").unwrap().as_deref(), Some("b"));
}

fn new_user(email: &str, authority: &str, customer_id: Option<Uuid>, created_time: i64) -> User {
    User {
        id: Uuid::new_v4(),
        created_time,
        email: email.into(),
        password_hash: String::new(),
        authority: authority.into(),
        first_name: None,
        last_name: None,
        customer_id,
        enabled: true,
    }
}

fn emails(page: &Page<User>) -> Vec<&str> {
    page.data.iter().map(|u| u.email.as_str()).collect()
}

fn users_are_listed_by_tenant_and_customer_with_search_and_sort(backend: &dyn Backend) {
    let store = backend.open();
    let (north, south) = (Uuid::new_v4(), Uuid::new_v4());
    let admin = new_user("admin@t.org", "TENANT_ADMIN", None, 1);
    let mut ann = new_user("ann@north.org", "CUSTOMER_USER", Some(north), 2);
    ann.last_name = Some("Zimmer".into());
    let mut bob = new_user("bob@north.org", "CUSTOMER_USER", Some(north), 3);
    bob.first_name = Some("Robert".into());
    bob.last_name = Some("Adams".into());
    let cid = new_user("cid@south.org", "CUSTOMER_USER", Some(south), 4);
    for u in [&admin, &ann, &bob, &cid] {
        store.insert_user(u).unwrap();
    }
    // Without a sort property, newest first, as every listing.
    assert_eq!(emails(&store.users(UserFilter::All, &all()).unwrap()), ["cid@south.org", "bob@north.org", "ann@north.org", "admin@t.org"]);
    assert_eq!(emails(&store.users(UserFilter::TenantAdmins, &all()).unwrap()), ["admin@t.org"]);
    assert_eq!(emails(&store.users(UserFilter::Customer(north), &all()).unwrap()), ["bob@north.org", "ann@north.org"]);
    assert_eq!(store.users(UserFilter::Customer(Uuid::new_v4()), &all()).unwrap().total_elements, 0);
    // Search looks at names too, ignoring case.
    let search = |text: &str| PageQuery { page_size: 10, text_search: Some(text.into()), ..Default::default() };
    assert_eq!(emails(&store.users(UserFilter::All, &search("ROBERT")).unwrap()), ["bob@north.org"]);
    assert_eq!(emails(&store.users(UserFilter::All, &search("zimm")).unwrap()), ["ann@north.org"]);
    assert_eq!(emails(&store.users(UserFilter::Customer(south), &search("north")).unwrap()), Vec::<&str>::new());
    let by = |property: &str| PageQuery { page_size: 10, sort_property: Some(property.into()), ..Default::default() };
    assert_eq!(
        emails(&store.users(UserFilter::Customer(north), &by("lastName")).unwrap()),
        ["bob@north.org", "ann@north.org"],
        "Adams before Zimmer"
    );
    assert_eq!(emails(&store.users(UserFilter::All, &by("email")).unwrap())[0], "admin@t.org");
    let paged = store.users(UserFilter::All, &PageQuery { page_size: 3, page: 1, ..Default::default() }).unwrap();
    assert_eq!((paged.total_elements, paged.total_pages, paged.has_next), (4, 2, false));
    assert_eq!(emails(&paged), ["admin@t.org"]);
}

fn users_are_updated_disabled_and_deleted(backend: &dyn Backend) {
    let store = backend.open();
    let customer = Uuid::new_v4();
    let mut user = new_user("old@c.org", "CUSTOMER_USER", Some(customer), 1);
    user.password_hash = "$2b$kept".into();
    store.insert_user(&user).unwrap();
    store.insert_user(&new_user("taken@c.org", "CUSTOMER_USER", Some(customer), 2)).unwrap();
    // The e-mail and names change; the authority, customer, password and flag do not.
    let changed = User {
        email: "new@c.org".into(),
        first_name: Some("New".into()),
        authority: "TENANT_ADMIN".into(),
        customer_id: None,
        password_hash: "$2b$other".into(),
        enabled: false,
        ..user.clone()
    };
    assert!(store.update_user(&changed).unwrap());
    let stored = store.user(user.id).unwrap().unwrap();
    assert_eq!((stored.email.as_str(), stored.first_name.as_deref()), ("new@c.org", Some("New")));
    assert_eq!((stored.authority.as_str(), stored.customer_id, stored.password_hash.as_str(), stored.enabled), ("CUSTOMER_USER", Some(customer), "$2b$kept", true));
    let clash = store.update_user(&User { email: "TAKEN@c.org".into(), ..stored.clone() });
    assert!(matches!(clash, Err(StorageError::Conflict(_))), "{clash:?}");
    assert!(!store.update_user(&User { id: Uuid::new_v4(), email: "x@c.org".into(), ..stored.clone() }).unwrap());

    assert!(store.set_user_enabled(user.id, false).unwrap());
    assert!(!store.user(user.id).unwrap().unwrap().enabled);
    assert!(store.set_user_enabled(user.id, true).unwrap());
    assert!(store.user(user.id).unwrap().unwrap().enabled);
    assert!(!store.set_user_enabled(Uuid::new_v4(), false).unwrap());

    store.set_activation_token(user.id, "hash-of-deleted", i64::MAX).unwrap();
    assert!(store.delete_user(user.id).unwrap());
    assert!(!store.delete_user(user.id).unwrap());
    assert_eq!(store.user(user.id).unwrap(), None);
    assert_eq!(store.user_by_email("new@c.org").unwrap(), None);
    assert_eq!(store.activate_user("hash-of-deleted", 1, "$2b$x").unwrap(), Activation::Unknown, "its invitation went with it");
    assert_eq!(store.user_count().unwrap(), 1);
}

fn an_activation_token_works_once_and_not_after_it_expires(backend: &dyn Backend) {
    let store = backend.open();
    let user = new_user("invited@c.org", "CUSTOMER_USER", Some(Uuid::new_v4()), 1);
    store.insert_user(&user).unwrap();
    assert!(!store.set_activation_token(Uuid::new_v4(), "nobody", 1_000).unwrap(), "no invitation for a user that does not exist");
    assert!(store.set_activation_token(user.id, "first", 1_000).unwrap());
    // A new link replaces the old one.
    assert!(store.set_activation_token(user.id, "second", 1_000).unwrap());
    assert_eq!(store.activate_user("first", 10, "$2b$a").unwrap(), Activation::Unknown);
    assert_eq!(store.activate_user("second", 1_000, "$2b$a").unwrap(), Activation::Expired, "valid until, not at, its expiry");
    assert_eq!(store.user(user.id).unwrap().unwrap().password_hash, "", "nothing set by a refused token");
    match store.activate_user("second", 999, "$2b$set").unwrap() {
        Activation::Activated(activated) => {
            assert_eq!((activated.id, activated.password_hash.as_str()), (user.id, "$2b$set"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.activate_user("second", 999, "$2b$again").unwrap(), Activation::Unknown, "one use");
    assert_eq!(store.user(user.id).unwrap().unwrap().password_hash, "$2b$set");
    // A password set another way (reset-password) ends a pending invitation.
    assert!(store.set_activation_token(user.id, "third", 1_000).unwrap());
    assert!(store.set_user_password_hash(user.id, "$2b$reset").unwrap());
    assert_eq!(store.activate_user("third", 10, "$2b$late").unwrap(), Activation::Unknown);
    assert_eq!(store.user(user.id).unwrap().unwrap().password_hash, "$2b$reset");
}

fn deleting_a_customer_deletes_its_users(backend: &dyn Backend) {
    let store = backend.open();
    let (leaving, staying) = (Customer { id: Uuid::new_v4(), created_time: 1, title: "Leaving".into() }, Customer {
        id: Uuid::new_v4(),
        created_time: 1,
        title: "Staying".into(),
    });
    store.save_customer(&leaving).unwrap();
    store.save_customer(&staying).unwrap();
    let gone = new_user("gone@l.org", "CUSTOMER_USER", Some(leaving.id), 1);
    let kept = new_user("kept@s.org", "CUSTOMER_USER", Some(staying.id), 1);
    let admin = new_user("admin@t.org", "TENANT_ADMIN", None, 1);
    for u in [&gone, &kept, &admin] {
        store.insert_user(u).unwrap();
    }
    store.set_activation_token(gone.id, "gone-token", i64::MAX).unwrap();
    assert!(store.delete_customer(leaving.id).unwrap());
    assert_eq!(store.user(gone.id).unwrap(), None);
    assert_eq!(store.activate_user("gone-token", 1, "$2b$x").unwrap(), Activation::Unknown);
    assert!(store.user(kept.id).unwrap().is_some());
    assert!(store.user(admin.id).unwrap().is_some());
}

fn tenant_id_survives_reopening(backend: &dyn Backend) {
    let first = backend.open().tenant_id();
    assert!(!first.is_nil());
    assert_eq!(backend.open().tenant_id(), first);
}

/// The server's last handle of its store can go on a tokio worker thread (when `serve` stops, or
/// fails to start after opening the store, e.g. for an admin password against the policy): the
/// store must close there without panicking.
fn a_store_can_be_dropped_on_a_thread_running_async_tasks(backend: &dyn Backend) {
    let store = backend.open();
    // A connection in the idle pool, as a server has after its first call.
    assert!(store.device_by_name("nobody").unwrap().is_none());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async move { drop(store) });
}

fn new_device(name: &str, device_type: &str) -> Device {
    Device {
        id: Uuid::new_v4(),
        created_time: 1,
        name: name.into(),
        device_type: device_type.into(),
        device_profile_id: Uuid::nil(),
        label: None,
        customer_id: None,
        created_by_integration: None,
        description: None,
    }
}

fn devices_assets_and_customers_are_saved_with_unique_names(backend: &dyn Backend) {
    let store = backend.open();
    let mut writer = store.uplink_writer().unwrap();
    let acme = Customer { id: Uuid::new_v4(), created_time: 5, title: "Acme".into() };
    store.save_customer(&acme).unwrap();
    let other = Customer { id: Uuid::new_v4(), created_time: 6, title: "Acme".into() };
    assert!(matches!(store.save_customer(&other), Err(StorageError::Conflict(m)) if m == "Customer with such title already exists!"));
    let renamed = Customer { title: "Acme Ltd".into(), ..acme.clone() };
    store.save_customer(&renamed).unwrap();
    assert_eq!(store.customer(acme.id).unwrap(), Some(renamed.clone()));
    assert!(store.customer_by_title("Acme").unwrap().is_none());

    let saved = store.save_device(&new_device("M-1", "meter")).unwrap();
    let profile = store.device_profile(saved.device_profile_id).unwrap().expect("the profile named by the type was created");
    assert_eq!(profile.name, "meter");
    assert_eq!(store.device(saved.id).unwrap(), Some(saved.clone()));
    assert!(matches!(
        store.save_device(&new_device("M-1", "meter")),
        Err(StorageError::Conflict(m)) if m == "Device with such name already exists!"
    ));
    // An update renames, assigns and describes; the creation time stays what the caller kept.
    let edited = Device {
        name: "M-2".into(),
        label: Some("Hall".into()),
        description: Some("the meter in the hall".into()),
        customer_id: Some(acme.id),
        ..saved.clone()
    };
    let edited = store.save_device(&edited).unwrap();
    assert_eq!(edited.device_profile_id, saved.device_profile_id, "the same profile is found again");
    assert_eq!(store.device(saved.id).unwrap(), Some(edited.clone()));
    assert_eq!(store.customer_devices(acme.id, &all(), None).unwrap().data, vec![edited.clone()]);
    // The uplink writer follows the rename: the new name is this device, the old one is new.
    writer.commit(&[record("M-2", true, 10, vec![("t", KvValue::Long(1))])]).unwrap();
    assert_eq!(store.device_by_name("M-2").unwrap().unwrap().id, saved.id);
    writer.commit(&[record("M-1", true, 11, vec![("t", KvValue::Long(2))])]).unwrap();
    assert_ne!(store.device_by_name("M-1").unwrap().unwrap().id, saved.id);
    // Unassigned again.
    store.save_device(&Device { customer_id: None, ..edited }).unwrap();
    assert_eq!(store.customer_devices(acme.id, &all(), None).unwrap().total_elements, 0);

    let asset = Asset {
        id: Uuid::new_v4(),
        created_time: 7,
        name: "Site".into(),
        asset_type: "building".into(),
        asset_profile_id: Uuid::nil(),
        label: None,
        customer_id: Some(acme.id),
        created_by_integration: None,
        description: Some("HQ".into()),
    };
    let saved = store.save_asset(&asset).unwrap();
    assert_eq!(store.asset_profile(saved.asset_profile_id).unwrap().unwrap().name, "building");
    assert_eq!(store.asset(asset.id).unwrap(), Some(saved.clone()));
    assert_eq!(store.customer_assets(acme.id, &all(), None).unwrap().data, vec![saved]);
    let twin = Asset { id: Uuid::new_v4(), ..asset.clone() };
    assert!(matches!(store.save_asset(&twin), Err(StorageError::Conflict(m)) if m == "Asset with such name already exists!"));
    if backend.shared_by_nodes() {
        // Another node sees the edits at once.
        let other = backend.open();
        assert_eq!(other.asset_by_name("Site").unwrap().map(|a| a.description), Some(Some("HQ".into())));
    }
}

fn attributes_and_time_series_are_written_for_any_entity(backend: &dyn Backend) {
    let store = backend.open();
    let customer = Customer { id: Uuid::new_v4(), created_time: 1, title: "Owner".into() };
    store.save_customer(&customer).unwrap();
    let id = customer.id;
    store
        .save_attributes(id, "SERVER_SCOPE", 100, &[("plan".into(), KvValue::Str("gold".into())), ("seats".into(), KvValue::Long(3))])
        .unwrap();
    store.save_attributes(id, "SHARED_SCOPE", 101, &[("plan".into(), KvValue::Bool(true))]).unwrap();
    store.save_attributes(id, "SERVER_SCOPE", 102, &[("seats".into(), KvValue::Long(4))]).unwrap();
    let server: Vec<(String, i64, KvValue)> = store
        .attributes(id, Some("SERVER_SCOPE"), None)
        .unwrap()
        .into_iter()
        .map(|(_, a)| (a.key, a.last_update_ts, a.value))
        .collect();
    assert_eq!(server, vec![("plan".into(), 100, KvValue::Str("gold".into())), ("seats".into(), 102, KvValue::Long(4))]);
    assert_eq!(store.attribute_keys(id, Some("SHARED_SCOPE")).unwrap(), vec!["plan".to_string()]);

    let now = 1_760_000_000_000;
    store
        .save_timeseries(id, &[(now, vec![("revenue".into(), KvValue::Double(1.5))]), (now - 1000, vec![("revenue".into(), KvValue::Long(1))])])
        .unwrap();
    // A rewrite of an existing point replaces it.
    store.save_timeseries(id, &[(now, vec![("revenue".into(), KvValue::Double(2.5)), ("note".into(), KvValue::Str("x".into()))])]).unwrap();
    let latest = store.latest_timeseries(id, None).unwrap();
    assert_eq!(
        latest,
        vec![
            ("note".to_string(), TsValue { ts: now, value: KvValue::Str("x".into()) }),
            ("revenue".to_string(), TsValue { ts: now, value: KvValue::Double(2.5) })
        ]
    );
    let points = history(store.as_ref(), id, "revenue");
    assert_eq!(points.first(), Some(&(now - 1000, KvValue::Long(1))));
    assert_eq!(points.last(), Some(&(now, KvValue::Double(2.5))));
    assert_eq!(store.timeseries_keys(id).unwrap(), vec!["note".to_string(), "revenue".to_string()]);
    // Written durably: a store opened again reads them.
    drop(store);
    let store = backend.open();
    assert_eq!(store.latest_timeseries(id, Some(&["revenue".to_string()])).unwrap().len(), 1);
    assert_eq!(store.attributes(id, None, None).unwrap().len(), 3);
}

/// A customer to own attributes and time series written through the API (which must exist).
fn owner(store: &dyn Store) -> Uuid {
    let customer = Customer { id: Uuid::new_v4(), created_time: 1, title: format!("Owner {}", Uuid::new_v4()) };
    store.save_customer(&customer).unwrap();
    customer.id
}

fn writes_to_an_entity_that_is_gone_are_refused(backend: &dyn Backend) {
    let store = backend.open();
    let customer = Customer { id: Uuid::new_v4(), created_time: 1, title: "Gone".into() };
    store.save_customer(&customer).unwrap();
    assert!(store.delete_customer(customer.id).unwrap());
    // The existence check is in the writing transaction: a deletion that won the race leaves
    // the write refused, not rows of an entity that no longer exists.
    let attribute = store.save_attributes(customer.id, "SERVER_SCOPE", 100, &[("plan".into(), KvValue::Long(1))]);
    assert!(matches!(attribute, Err(StorageError::NotFound)), "{attribute:?}");
    let point = store.save_timeseries(customer.id, &[(1_760_000_000_000, vec![("revenue".into(), KvValue::Long(1))])]);
    assert!(matches!(point, Err(StorageError::NotFound)), "{point:?}");
    assert!(store.attributes(customer.id, None, None).unwrap().is_empty());
    assert!(store.latest_timeseries(customer.id, None).unwrap().is_empty());
    let unknown = store.save_attributes(Uuid::new_v4(), "SERVER_SCOPE", 100, &[("plan".into(), KvValue::Long(1))]);
    assert!(matches!(unknown, Err(StorageError::NotFound)), "{unknown:?}");
}

fn attributes_are_deleted_by_scope_and_key(backend: &dyn Backend) {
    let store = backend.open();
    let id = owner(store.as_ref());
    store.save_attributes(id, "SERVER_SCOPE", 1, &[("a".into(), KvValue::Long(1)), ("b".into(), KvValue::Long(2))]).unwrap();
    store.save_attributes(id, "SHARED_SCOPE", 1, &[("a".into(), KvValue::Long(3))]).unwrap();
    store.delete_attributes(id, "SERVER_SCOPE", &["a".into(), "never-written".into()]).unwrap();
    let left: Vec<(String, String)> =
        store.attributes(id, None, None).unwrap().into_iter().map(|(scope, a)| (scope, a.key)).collect();
    assert_eq!(left, vec![("SERVER_SCOPE".into(), "b".into()), ("SHARED_SCOPE".into(), "a".into())]);
}

fn time_series_are_deleted_by_range_with_thingsboards_latest_rules(backend: &dyn Backend) {
    let store = backend.open();
    let id = owner(store.as_ref());
    let write = |ts: i64, v: i64| store.save_timeseries(id, &[(ts, vec![("t".into(), KvValue::Long(v)), ("other".into(), KvValue::Long(v))])]).unwrap();
    let delete = |start_ts, end_ts, delete_latest, rewrite_latest| {
        let d = TimeseriesDeletion { keys: vec!["t".into()], start_ts, end_ts, delete_latest, rewrite_latest };
        store.delete_timeseries(id, &d).unwrap();
    };
    let latest = || store.latest_timeseries(id, Some(&["t".to_string()])).unwrap().into_iter().map(|(_, p)| p.ts).next();
    for (ts, v) in [(1000, 1), (2000, 2), (3000, 3)] {
        write(ts, v);
    }
    // [2500, 3500) holds the newest point: the latest value goes, nothing replaces it.
    delete(2500, 3500, true, false);
    assert_eq!(history(store.as_ref(), id, "t"), vec![(1000, KvValue::Long(1)), (2000, KvValue::Long(2))]);
    assert_eq!(latest(), None);
    // The end is exclusive; with rewriteLatestIfDeleted the newest point before the range is the latest.
    write(3000, 3);
    delete(1500, 3000, true, true);
    assert_eq!(history(store.as_ref(), id, "t"), vec![(1000, KvValue::Long(1)), (3000, KvValue::Long(3))]);
    assert_eq!(latest(), Some(3000), "the latest point was not in the range");
    delete(2000, 4000, true, true);
    assert_eq!(latest(), Some(1000));
    // deleteLatest=false keeps the latest value although its point is gone.
    write(5000, 5);
    delete(4000, 6000, false, false);
    assert_eq!(history(store.as_ref(), id, "t"), vec![(1000, KvValue::Long(1))]);
    assert_eq!(latest(), Some(5000));
    // Other keys are untouched.
    assert_eq!(history(store.as_ref(), id, "other").len(), 4);
    drop(store);
    let store = backend.open();
    assert_eq!(history(store.as_ref(), id, "t"), vec![(1000, KvValue::Long(1))]);
}

fn deleting_a_customer_integration_or_converter_removes_its_own_data(backend: &dyn Backend) {
    let store = backend.open();
    let customer = Customer { id: Uuid::new_v4(), created_time: 1, title: "Leaving".into() };
    store.save_customer(&customer).unwrap();
    let id = customer.id;
    store.save_attributes(id, "SERVER_SCOPE", 1, &[("plan".into(), KvValue::Str("gold".into()))]).unwrap();
    store.save_timeseries(id, &[(1000, vec![("revenue".into(), KvValue::Long(5))])]).unwrap();
    assert!(store.delete_customer(id).unwrap());
    assert!(store.attributes(id, None, None).unwrap().is_empty());
    assert!(store.latest_timeseries(id, None).unwrap().is_empty());
    assert!(history(store.as_ref(), id, "revenue").is_empty());
    assert!(store.timeseries_keys(id).unwrap().is_empty());

    // So do integrations and converters, which the API lets users write data to as well.
    let converter = Converter {
        id: Uuid::new_v4(),
        created_time: 1,
        name: "c".into(),
        converter_type: "UPLINK".into(),
        integration_type: Some("COAP".into()),
        debug_settings: json!({}),
        configuration: json!({}),
        additional_info: json!({}),
        version: 1,
    };
    store.save_converter(&converter).unwrap();
    let integration = integration("i", "rk-data", converter.id);
    store.save_integration(&integration).unwrap();
    for id in [integration.id, converter.id] {
        store.save_attributes(id, "SERVER_SCOPE", 1, &[("note".into(), KvValue::Str("x".into()))]).unwrap();
        store.save_timeseries(id, &[(1000, vec![("load".into(), KvValue::Long(5))])]).unwrap();
    }
    assert!(store.delete_integration(integration.id).unwrap());
    assert!(store.delete_converter(converter.id).unwrap());
    for id in [integration.id, converter.id] {
        assert!(store.attributes(id, None, None).unwrap().is_empty());
        assert!(store.latest_timeseries(id, None).unwrap().is_empty());
        assert!(history(store.as_ref(), id, "load").is_empty());
    }
}

fn device_credentials_are_one_unique_token_per_device(backend: &dyn Backend) {
    let store = backend.open();
    let a = store.save_device(&new_device("cred-a", "meter")).unwrap();
    let b = store.save_device(&new_device("cred-b", "meter")).unwrap();
    let token = |device_id: Uuid, token: &str| DeviceCredentials {
        id: Uuid::new_v4(),
        created_time: 5,
        device_id,
        credentials_type: "ACCESS_TOKEN".into(),
        credentials_id: token.into(),
        credentials_value: None,
    };
    assert_eq!(store.device_credentials(a.id).unwrap(), None);
    let first = store.ensure_device_credentials(&token(a.id, "token-a")).unwrap();
    // A second ensure keeps the first.
    assert_eq!(store.ensure_device_credentials(&token(a.id, "token-other")).unwrap(), first);
    assert_eq!(store.device_credentials(a.id).unwrap(), Some(first.clone()));
    // Replacing keeps the credentials' id and created time; a token another device holds is refused.
    let replaced = store.save_device_credentials(&token(a.id, "token-a2")).unwrap();
    assert_eq!((replaced.id, replaced.created_time, replaced.credentials_id.as_str()), (first.id, first.created_time, "token-a2"));
    match store.save_device_credentials(&token(b.id, "token-a2")) {
        Err(StorageError::Conflict(message)) => assert_eq!(message, "Specified credentials are already registered!"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(store.ensure_device_credentials(&token(b.id, "token-a2")), Err(StorageError::Conflict(_))));
    // Deleting the device frees its token.
    assert!(store.delete_device(a.id).unwrap());
    assert_eq!(store.device_credentials(a.id).unwrap(), None);
    assert_eq!(store.save_device_credentials(&token(b.id, "token-a2")).unwrap().credentials_id, "token-a2");
    drop(store);
    let store = backend.open();
    assert_eq!(store.device_credentials(b.id).unwrap().unwrap().credentials_id, "token-a2");
}

fn unassigned_devices_are_the_tenants_own(backend: &dyn Backend) {
    let store = backend.open();
    let customer = Customer { id: Uuid::new_v4(), created_time: 1, title: "Buyer".into() };
    store.save_customer(&customer).unwrap();
    store.save_device(&new_device("own-meter", "meter")).unwrap();
    store.save_device(&new_device("own-sensor", "sensor")).unwrap();
    store.save_device(&Device { customer_id: Some(customer.id), ..new_device("sold-meter", "meter") }).unwrap();
    let names = |page: Page<Device>| page.data.into_iter().map(|d| d.name).collect::<Vec<_>>();
    let by_name = PageQuery { page_size: 10, sort_property: Some("name".into()), ..Default::default() };
    assert_eq!(names(store.unassigned_devices(&by_name, None).unwrap()), vec!["own-meter", "own-sensor"]);
    assert_eq!(names(store.unassigned_devices(&by_name, Some("meter")).unwrap()), vec!["own-meter"]);
    assert_eq!(store.unassigned_devices(&by_name, None).unwrap().total_elements, 2);
    assert_eq!(store.devices(&by_name, None).unwrap().total_elements, 3);
}
