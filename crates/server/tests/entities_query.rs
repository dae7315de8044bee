//! ThingsBoard's entity data queries (`/api/entitiesQuery/find`, `/count`, `/find/keys`), what
//! widgets and entity aliases call: every supported filter, paging, sorting by entity fields and
//! by latest values, text search, latest values of each key type, and refused queries, through
//! the real binary; at the end the same through the official `tb-rest-client`.

mod common;

use coapgate_coap::message::Code;
use common::*;
use serde_json::{Value, json};

/// What the queries run against: devices and an asset created through REST, a customer, time
/// series and attributes written through REST, and one device created by a CoAP uplink (whose
/// points, on SQLite, are still in the table new points land in).
struct Fixture {
    server: Server,
    customer_id: String,
    ids: std::collections::HashMap<String, String>,
}

fn fixture() -> Fixture {
    let server = Server::start();
    let customer = server.api("POST", "/api/customer", Some(json!({"title": "Acme"})));
    let mut ids = std::collections::HashMap::new();
    // name, type, label, temperature (None: no series), floor attribute (SERVER_SCOPE)
    type Seeded<'a> = (&'a str, &'a str, Option<&'a str>, Option<Value>, Option<i64>);
    let devices: [Seeded; 6] = [
        ("Meter 01", "meter", Some("Hall"), Some(json!(21.5)), Some(3)),
        ("Meter 02", "meter", None, Some(json!(19)), Some(1)),
        ("meter 03", "meter", Some("Roof"), Some(json!(30.25)), Some(2)),
        ("Meter 04", "meter", Some("Cellar"), Some(json!("broken")), None),
        ("Sensor A", "sensor", Some("Hall"), Some(json!(-4)), Some(10)),
        ("Sensor B", "sensor", None, None, None),
    ];
    for (name, device_type, label, temperature, floor) in devices {
        let device = server.api("POST", "/api/device", Some(json!({"name": name, "type": device_type, "label": label})));
        let id = id_of(&device);
        if let Some(t) = temperature {
            // An older point first: the latest value is the newer one.
            server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(json!({"ts": 1_000, "values": {"temperature": 99}})));
            server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(json!({"ts": 2_000, "values": {"temperature": t}})));
        }
        if let Some(floor) = floor {
            server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/attributes/SERVER_SCOPE"), Some(json!({"floor": floor})));
        }
        ids.insert(name.to_string(), id);
    }
    let meter1 = ids["Meter 01"].clone();
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{meter1}/attributes/SHARED_SCOPE"), Some(json!({"mode": "eco"})));
    let asset = server.api("POST", "/api/asset", Some(json!({"name": "Building 1", "type": "building"})));
    server.api("POST", &format!("/api/plugins/telemetry/ASSET/{}/attributes/SERVER_SCOPE", id_of(&asset)), Some(json!({"area": 1200})));
    ids.insert("Building 1".into(), id_of(&asset));

    let integration = server.seed_integration();
    let code = CoapClient::new(server.coap).post(&endpoint_path(&integration), SEED_PAYLOAD.as_bytes());
    assert_eq!(code, Code::CREATED);
    ids.insert("SN-001".into(), id_of(&server.device("SN-001").expect("uplink created SN-001")));
    Fixture { customer_id: id_of(&customer), server, ids }
}

impl Fixture {
    fn find(&self, query: Value) -> Value {
        self.server.api("POST", "/api/entitiesQuery/find", Some(query))
    }

    /// The names of a page's entities, in order.
    fn names(&self, query: Value) -> Vec<String> {
        let page = self.find(query);
        page["data"].as_array().unwrap().iter().map(|e| e["latest"]["ENTITY_FIELD"]["name"]["value"].as_str().unwrap().to_string()).collect()
    }

    fn count(&self, filter: Value) -> u64 {
        self.server.api("POST", "/api/entitiesQuery/count", Some(json!({"entityFilter": filter}))).as_u64().unwrap()
    }
}

fn query(filter: Value, page_link: Value) -> Value {
    json!({
        "entityFilter": filter,
        "pageLink": page_link,
        "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}, {"type": "ENTITY_FIELD", "key": "type"}, {"type": "ENTITY_FIELD", "key": "label"}],
    })
}

fn by_name(direction: &str) -> Value {
    json!({"key": {"type": "ENTITY_FIELD", "key": "name"}, "direction": direction})
}

fn all_by_name(filter: Value) -> Value {
    query(filter, json!({"pageSize": 100, "page": 0, "sortOrder": by_name("ASC")}))
}

#[test]
fn each_entity_filter_selects_its_entities() {
    let f = fixture();
    let single = json!({"type": "singleEntity", "singleEntity": {"entityType": "DEVICE", "id": f.ids["Sensor A"]}});
    assert_eq!(f.names(all_by_name(single.clone())), ["Sensor A"]);
    assert_eq!(f.count(single), 1);

    let list = json!({"type": "entityList", "entityType": "DEVICE", "entityList": [f.ids["Meter 02"], f.ids["SN-001"], f.ids["Building 1"]]});
    // The asset's id is not a device's: only the two devices.
    assert_eq!(f.names(all_by_name(list.clone())), ["Meter 02", "SN-001"]);
    assert_eq!(f.count(list), 2);

    let devices = json!({"type": "entityType", "entityType": "DEVICE"});
    assert_eq!(
        f.names(all_by_name(devices.clone())),
        ["Meter 01", "Meter 02", "Meter 04", "SN-001", "Sensor A", "Sensor B", "meter 03"]
    );
    assert_eq!(f.count(devices), 7);
    assert_eq!(f.names(all_by_name(json!({"type": "entityType", "entityType": "ASSET"}))), ["Building 1"]);
    assert_eq!(f.names(all_by_name(json!({"type": "entityType", "entityType": "CUSTOMER"}))), ["Acme"]);
    let customer = f.find(all_by_name(json!({"type": "entityType", "entityType": "CUSTOMER"})));
    assert_eq!(customer["data"][0]["entityId"], json!({"entityType": "CUSTOMER", "id": f.customer_id}));

    // Name filters: starts with, ignoring case.
    let named = json!({"type": "entityName", "entityType": "DEVICE", "entityNameFilter": "meter"});
    assert_eq!(f.names(all_by_name(named.clone())), ["Meter 01", "Meter 02", "Meter 04", "meter 03"]);
    assert_eq!(f.count(named), 4);
    assert_eq!(f.count(json!({"type": "entityName", "entityType": "DEVICE", "entityNameFilter": "eter"})), 0);

    let sensors = json!({"type": "deviceType", "deviceTypes": ["sensor", "default"]});
    assert_eq!(f.names(all_by_name(sensors)), ["SN-001", "Sensor A", "Sensor B"]);
    // The deprecated single type, with a name filter.
    let one_type = json!({"type": "deviceType", "deviceType": "meter", "deviceNameFilter": "METER 0"});
    assert_eq!(f.names(all_by_name(one_type.clone())), ["Meter 01", "Meter 02", "Meter 04", "meter 03"]);
    assert_eq!(f.count(json!({"type": "deviceType", "deviceTypes": ["sensor"], "deviceNameFilter": "Sensor B"})), 1);
    assert_eq!(f.names(all_by_name(json!({"type": "assetType", "assetTypes": ["building"]}))), ["Building 1"]);
    assert_eq!(f.count(json!({"type": "assetType", "assetType": "plant"})), 0);
}

#[test]
fn pages_are_sorted_searched_and_counted() {
    let f = fixture();
    let devices = json!({"type": "entityType", "entityType": "DEVICE"});
    let page = |n: u32, size: u32, sort: Value| query(devices.clone(), json!({"pageSize": size, "page": n, "sortOrder": sort}));

    let first = f.find(page(0, 3, by_name("DESC")));
    assert_eq!(first["totalElements"], 7);
    assert_eq!(first["totalPages"], 3);
    assert_eq!(first["hasNext"], true);
    let mut walked = Vec::new();
    for n in 0..3 {
        walked.extend(f.names(page(n, 3, by_name("DESC"))));
    }
    assert_eq!(walked, ["meter 03", "Sensor B", "Sensor A", "SN-001", "Meter 04", "Meter 02", "Meter 01"]);
    let last = f.find(page(2, 3, by_name("DESC")));
    assert_eq!(last["hasNext"], false);
    assert_eq!(last["data"].as_array().unwrap().len(), 1);
    assert_eq!(f.find(page(5, 3, by_name("DESC")))["data"], json!([]));

    // By creation time: the order the fixture made them in.
    let created = json!({"key": {"type": "ENTITY_FIELD", "key": "createdTime"}, "direction": "ASC"});
    assert_eq!(f.names(page(0, 3, created)), ["Meter 01", "Meter 02", "meter 03"]);
    // By label: devices without one come last (equal labels in no particular order).
    let label = json!({"key": {"type": "ENTITY_FIELD", "key": "label"}, "direction": "ASC"});
    let mut names = f.names(page(0, 10, label));
    assert_eq!(names[0], "Meter 04");
    names[1..3].sort();
    assert_eq!(&names[1..4], ["Meter 01", "Sensor A", "meter 03"]);
    names[4..].sort();
    assert_eq!(&names[4..], ["Meter 02", "SN-001", "Sensor B"]);

    // By the latest temperature: numbers by value (the newest point counts, the uplink's too),
    // then text, then devices without the series.
    let temperature = |direction: &str| json!({"key": {"type": "TIME_SERIES", "key": "temperature"}, "direction": direction});
    assert_eq!(f.names(page(0, 10, temperature("ASC"))), ["Sensor A", "Meter 02", "Meter 01", "SN-001", "meter 03", "Meter 04", "Sensor B"]);
    assert_eq!(f.names(page(0, 10, temperature("DESC"))), ["meter 03", "SN-001", "Meter 01", "Meter 02", "Sensor A", "Meter 04", "Sensor B"]);
    let floor = json!({"key": {"type": "SERVER_ATTRIBUTE", "key": "floor"}, "direction": "DESC"});
    assert_eq!(&f.names(page(0, 10, floor))[..4], ["Sensor A", "Meter 01", "meter 03", "Meter 02"]);
    let any_scope_floor = json!({"key": {"type": "ATTRIBUTE", "key": "floor"}, "direction": "ASC"});
    assert_eq!(&f.names(page(0, 10, any_scope_floor))[..4], ["Meter 02", "meter 03", "Meter 01", "Sensor A"]);
    // A shared attribute of that name does not exist: the order falls back to id, all "missing".
    let shared_floor = json!({"key": {"type": "SHARED_ATTRIBUTE", "key": "floor"}, "direction": "ASC"});
    assert_eq!(f.find(page(0, 10, shared_floor))["totalElements"], 7);

    // Text search: a substring of a selected field, ignoring case, counted before paging.
    let search = |text: &str| query(devices.clone(), json!({"pageSize": 2, "page": 0, "textSearch": text, "sortOrder": by_name("ASC")}));
    let hall = f.find(search("hALL"));
    assert_eq!(hall["totalElements"], 2);
    assert_eq!(f.names(search("hALL")), ["Meter 01", "Sensor A"]);
    assert_eq!(f.names(search("ter 0")), ["Meter 01", "Meter 02"]);
    assert_eq!(f.find(search("ter 0"))["totalElements"], 4);
    assert_eq!(f.names(search("SENSOR")), ["Sensor A", "Sensor B"]);
    assert_eq!(f.find(search("%"))["totalElements"], 0, "LIKE wildcards are searched as text");

    // The latest values a query selects are searched too (as text); unselected ones are not.
    let search_values = |text: &str, latest: Value| {
        let mut body = search(text);
        body["pageLink"]["pageSize"] = json!(10);
        body["latestValues"] = latest;
        f.names(body)
    };
    let temperature_and_mode = json!([{"type": "TIME_SERIES", "key": "temperature"}, {"type": "SHARED_ATTRIBUTE", "key": "mode"}]);
    assert_eq!(search_values("21.5", temperature_and_mode.clone()), ["Meter 01"]);
    assert_eq!(search_values("BROK", temperature_and_mode.clone()), ["Meter 04"]);
    assert_eq!(search_values("eco", temperature_and_mode.clone()), ["Meter 01"]);
    assert_eq!(search_values("25.7", temperature_and_mode), ["SN-001"]);
    assert_eq!(search_values("eco", json!([{"type": "TIME_SERIES", "key": "temperature"}])), Vec::<String>::new());
}

#[test]
fn latest_values_come_as_thingsboard_prints_them() {
    let f = fixture();
    let list = json!({"type": "entityList", "entityType": "DEVICE", "entityList": [f.ids["Meter 01"], f.ids["Sensor B"], f.ids["SN-001"]]});
    let body = json!({
        "entityFilter": list,
        "pageLink": {"pageSize": 10, "page": 0, "sortOrder": by_name("ASC")},
        "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}, {"type": "ENTITY_FIELD", "key": "label"}, {"type": "ENTITY_FIELD", "key": "createdTime"}],
        "latestValues": [
            {"type": "TIME_SERIES", "key": "temperature"}, {"type": "TIME_SERIES", "key": "humidity"},
            {"type": "SERVER_ATTRIBUTE", "key": "floor"}, {"type": "SHARED_ATTRIBUTE", "key": "mode"},
            {"type": "ATTRIBUTE", "key": "mode"}, {"type": "CLIENT_ATTRIBUTE", "key": "floor"},
        ],
    });
    let page = f.find(body);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let (meter, sn, sensor_b) = (&data[0], &data[1], &data[2]);
    assert_eq!(meter["entityId"], json!({"entityType": "DEVICE", "id": f.ids["Meter 01"]}));
    assert_eq!(meter["timeseries"], json!({}));
    let fields = &meter["latest"]["ENTITY_FIELD"];
    assert_eq!(fields["name"]["value"], "Meter 01");
    assert_eq!(fields["label"]["value"], "Hall");
    let device = f.server.api("GET", &format!("/api/device/{}", f.ids["Meter 01"]), None);
    assert_eq!(fields["createdTime"]["value"], device["createdTime"].to_string());
    assert!(fields["name"]["ts"].as_i64().unwrap() > 0);
    assert_eq!(meter["latest"]["TIME_SERIES"]["temperature"], json!({"ts": 2000, "value": "21.5"}));
    assert_eq!(meter["latest"]["TIME_SERIES"]["humidity"], json!({"ts": 0, "value": ""}));
    assert_eq!(meter["latest"]["SERVER_ATTRIBUTE"]["floor"]["value"], "3");
    assert!(meter["latest"]["SERVER_ATTRIBUTE"]["floor"]["ts"].as_i64().unwrap() > 0);
    assert_eq!(meter["latest"]["SHARED_ATTRIBUTE"]["mode"]["value"], "eco");
    assert_eq!(meter["latest"]["ATTRIBUTE"]["mode"]["value"], "eco");
    assert_eq!(meter["latest"]["CLIENT_ATTRIBUTE"]["floor"], json!({"ts": 0, "value": ""}));

    // The uplink's values, typed as ThingsBoard types them (69 is a long).
    assert_eq!(sn["latest"]["TIME_SERIES"]["temperature"]["value"], "25.7");
    assert_eq!(sn["latest"]["TIME_SERIES"]["humidity"]["value"], "69");
    assert!(sn["latest"]["TIME_SERIES"]["humidity"]["ts"].as_i64().unwrap() > 2000);

    // A device without a label: ThingsBoard leaves the value out.
    assert_eq!(sensor_b["latest"]["ENTITY_FIELD"]["name"]["value"], "Sensor B");
    assert!(sensor_b["latest"]["ENTITY_FIELD"]["label"].get("value").is_none(), "{sensor_b}");
    assert_eq!(sensor_b["latest"]["TIME_SERIES"]["temperature"], json!({"ts": 0, "value": ""}));
}

#[test]
fn keys_of_the_matching_entities_are_listed() {
    let f = fixture();
    let keys = |filter: Value, params: &str| {
        f.server.api("POST", &format!("/api/entitiesQuery/find/keys?{params}"), Some(json!({"entityFilter": filter, "pageLink": {"pageSize": 100, "page": 0}})))
    };
    let meters = json!({"type": "deviceType", "deviceTypes": ["meter"]});
    let both = keys(meters.clone(), "timeseries=true&attributes=true");
    assert_eq!(both, json!({"entityTypes": ["DEVICE"], "timeseries": ["temperature"], "attribute": ["floor", "mode"]}));
    let shared = keys(meters.clone(), "timeseries=false&attributes=true&scope=SHARED_SCOPE");
    assert_eq!(shared, json!({"entityTypes": ["DEVICE"], "timeseries": [], "attribute": ["mode"]}));
    let everything = keys(json!({"type": "entityType", "entityType": "DEVICE"}), "timeseries=true&attributes=false");
    assert_eq!(everything["timeseries"], json!(["humidity", "temperature"]));
    assert_eq!(everything["attribute"], json!([]));
    let asset = keys(json!({"type": "entityType", "entityType": "ASSET"}), "timeseries=true&attributes=true");
    assert_eq!(asset, json!({"entityTypes": ["ASSET"], "timeseries": [], "attribute": ["area"]}));
    let (status, _) = f.server.request("POST", "/api/entitiesQuery/find/keys?attributes=true", Some(json!({"entityFilter": meters, "pageLink": {"pageSize": 10}})), Some(&f.server.token()));
    assert_eq!(status, 400, "timeseries is a required parameter");
}

#[test]
fn queries_coapgate_cannot_answer_are_refused_with_thingsboard_errors() {
    let server = Server::start();
    let token = server.token();
    let devices = json!({"type": "entityType", "entityType": "DEVICE"});
    let page_link = json!({"pageSize": 10, "page": 0});
    let refused = [
        ("no filter", "find", json!({"pageLink": page_link}), "Entity filter is required"),
        ("no page link", "find", json!({"entityFilter": devices}), "Page link is required"),
        ("relations", "find", json!({"entityFilter": {"type": "relationsQuery"}, "pageLink": page_link}), "Unsupported entity filter type 'relationsQuery'"),
        ("dashboards", "count", json!({"entityFilter": {"type": "entityType", "entityType": "DASHBOARD"}}), "Unsupported entity type 'DASHBOARD'"),
        ("bad id", "find", json!({"entityFilter": {"type": "singleEntity", "singleEntity": {"entityType": "DEVICE", "id": "x"}}, "pageLink": page_link}), "Invalid UUID string: x"),
        (
            "dynamic value",
            "count",
            json!({"entityFilter": devices, "keyFilters": [{"key": {"type": "TIME_SERIES", "key": "t"}, "valueType": "NUMERIC",
                   "predicate": {"type": "NUMERIC", "operation": "GREATER",
                                 "value": {"defaultValue": 1, "dynamicValue": {"sourceType": "CURRENT_USER", "sourceAttribute": "limit"}}}}]}),
            "Dynamic values in key filters are not supported",
        ),
        (
            "numeric without a number",
            "find",
            json!({"entityFilter": devices, "pageLink": page_link, "keyFilters": [{"key": {"type": "TIME_SERIES", "key": "t"},
                   "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": "warm"}}}]}),
            "a numeric predicate needs a number",
        ),
        (
            "unknown operation",
            "count",
            json!({"entityFilter": devices, "keyFilters": [{"key": {"type": "ENTITY_FIELD", "key": "name"},
                   "predicate": {"type": "STRING", "operation": "MATCHES", "value": {"defaultValue": "x"}}}]}),
            "Unsupported string operation 'MATCHES'",
        ),
        ("alarm field", "find", json!({"entityFilter": devices, "pageLink": page_link, "latestValues": [{"type": "ALARM_FIELD", "key": "x"}]}), "Unsupported key type 'ALARM_FIELD'"),
        ("zero page size", "find", json!({"entityFilter": devices, "pageLink": {"pageSize": 0}}), "'pageSize' must be greater than 0"),
        ("bad direction", "find", json!({"entityFilter": devices, "pageLink": {"pageSize": 5, "sortOrder": {"key": {"type": "ENTITY_FIELD", "key": "name"}, "direction": "UP"}}}), "direction must be ASC or DESC"),
        ("not json", "find", json!("devices please"), "expected a JSON object"),
    ];
    for (what, path, body, message) in refused {
        let (status, answer) = server.request("POST", &format!("/api/entitiesQuery/{path}"), Some(body), Some(&token));
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["status"], 400, "{what}: {answer}");
        assert_eq!(answer["errorCode"], 31, "{what}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(message), "{what}: {answer}");
    }
    let (status, _) = server.request("POST", "/api/entitiesQuery/count", Some(json!({"entityFilter": devices})), None);
    assert_eq!(status, 401, "a token is required");
}

/// A key filter as ThingsBoard's UI builds it.
fn key_filter(key_type: &str, key: &str, predicate: Value) -> Value {
    json!({"key": {"type": key_type, "key": key}, "valueType": predicate["type"], "predicate": predicate})
}

fn simple(kind: &str, operation: &str, value: Value) -> Value {
    json!({"type": kind, "operation": operation, "value": {"defaultValue": value, "userValue": null, "dynamicValue": null}})
}

#[test]
fn key_filters_compare_fields_and_latest_values() {
    let f = fixture();
    let (meter1, meter2) = (&f.ids["Meter 01"], &f.ids["Meter 02"]);
    f.server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{meter1}/timeseries/ANY"), Some(json!({"online": true})));
    f.server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{meter2}/timeseries/ANY"), Some(json!({"online": false})));
    let devices = json!({"type": "entityType", "entityType": "DEVICE"});
    let matching = |filters: Vec<Value>, operation: Option<&str>| {
        let mut body = all_by_name(devices.clone());
        body["keyFilters"] = json!(filters);
        if let Some(op) = operation {
            body["keyFiltersOperation"] = json!(op);
        }
        let names = f.names(body.clone());
        let count = f.server.api("POST", "/api/entitiesQuery/count", Some(json!({"entityFilter": devices, "keyFilters": body["keyFilters"], "keyFiltersOperation": body.get("keyFiltersOperation")})));
        assert_eq!(count, names.len(), "count and find agree for {filters:?}");
        names
    };
    let one = |key_type: &str, key: &str, predicate: Value| matching(vec![key_filter(key_type, key, predicate)], None);

    // Numbers: the latest point (not the older 99), the uplink's too; text values never match.
    assert_eq!(one("TIME_SERIES", "temperature", simple("NUMERIC", "GREATER", json!(20))), ["Meter 01", "SN-001", "meter 03"]);
    assert_eq!(one("TIME_SERIES", "temperature", simple("NUMERIC", "LESS_OR_EQUAL", json!("19"))), ["Meter 02", "Sensor A"]);
    assert_eq!(one("TIME_SERIES", "temperature", simple("NUMERIC", "EQUAL", json!(30.25))), ["meter 03"]);
    assert_eq!(one("TIME_SERIES", "temperature", simple("NUMERIC", "NOT_EQUAL", json!(99))).len(), 5);
    assert_eq!(one("SERVER_ATTRIBUTE", "floor", simple("NUMERIC", "GREATER_OR_EQUAL", json!(3))), ["Meter 01", "Sensor A"]);
    assert_eq!(one("SHARED_ATTRIBUTE", "floor", simple("NUMERIC", "GREATER_OR_EQUAL", json!(3))), Vec::<String>::new());
    assert_eq!(one("ATTRIBUTE", "floor", simple("NUMERIC", "LESS", json!(2))), ["Meter 02"]);
    assert_eq!(one("ENTITY_FIELD", "createdTime", simple("NUMERIC", "GREATER", json!(0))).len(), 7);

    // Text: entity fields and values, with and without case.
    let text = |op: &str, value: &str, ignore_case: bool| {
        let mut p = simple("STRING", op, json!(value));
        p["ignoreCase"] = json!(ignore_case);
        p
    };
    assert_eq!(one("ENTITY_FIELD", "label", text("CONTAINS", "all", false)), ["Meter 01", "Sensor A"]);
    assert_eq!(one("ENTITY_FIELD", "label", text("CONTAINS", "ALL", false)), Vec::<String>::new());
    assert_eq!(one("ENTITY_FIELD", "label", text("STARTS_WITH", "h", true)), ["Meter 01", "Sensor A"]);
    assert_eq!(one("ENTITY_FIELD", "label", text("ENDS_WITH", "ar", false)), ["Meter 04"]);
    assert_eq!(one("ENTITY_FIELD", "label", text("ENDS_WITH", "a long suffix than any", false)), Vec::<String>::new());
    assert_eq!(one("ENTITY_FIELD", "label", text("EQUAL", "roof", true)), ["meter 03"]);
    assert_eq!(one("ENTITY_FIELD", "label", text("NOT_EQUAL", "Hall", false)), ["Meter 04", "meter 03"]);
    assert_eq!(one("ENTITY_FIELD", "label", text("IN", "Roof, Cellar", false)), ["Meter 04", "meter 03"]);
    assert_eq!(one("ENTITY_FIELD", "label", text("NOT_IN", "Roof,Cellar", false)), ["Meter 01", "Sensor A"]);
    assert_eq!(one("ENTITY_FIELD", "name", text("NOT_CONTAINS", "eter", false)), ["SN-001", "Sensor A", "Sensor B"]);
    assert_eq!(one("TIME_SERIES", "temperature", text("EQUAL", "broken", false)), ["Meter 04"]);
    assert_eq!(one("SHARED_ATTRIBUTE", "mode", text("EQUAL", "eco", false)), ["Meter 01"]);

    // Booleans.
    assert_eq!(one("TIME_SERIES", "online", simple("BOOLEAN", "EQUAL", json!(true))), ["Meter 01"]);
    assert_eq!(one("TIME_SERIES", "online", simple("BOOLEAN", "NOT_EQUAL", json!(true))), ["Meter 02"]);

    // Complex predicates, several filters (all, or any with keyFiltersOperation).
    let outside = json!({"type": "COMPLEX", "operation": "OR", "predicates": [
        simple("NUMERIC", "LESS", json!(0)), simple("NUMERIC", "GREATER", json!(30)),
    ]});
    assert_eq!(one("TIME_SERIES", "temperature", outside), ["Sensor A", "meter 03"]);
    let warm = key_filter("TIME_SERIES", "temperature", simple("NUMERIC", "GREATER", json!(20)));
    let hall = key_filter("ENTITY_FIELD", "label", text("EQUAL", "Hall", false));
    assert_eq!(matching(vec![warm.clone(), hall.clone()], None), ["Meter 01"]);
    assert_eq!(matching(vec![warm, hall], Some("OR")), ["Meter 01", "SN-001", "Sensor A", "meter 03"]);

    // With a page, a search and a sort by the filtered value.
    let body = json!({
        "entityFilter": {"type": "deviceType", "deviceTypes": ["meter", "default"]},
        "pageLink": {"pageSize": 2, "page": 0, "textSearch": "e", "sortOrder": {"key": {"type": "TIME_SERIES", "key": "temperature"}, "direction": "ASC"}},
        "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
        "keyFilters": [key_filter("TIME_SERIES", "temperature", simple("NUMERIC", "GREATER", json!(19)))],
    });
    let page = f.find(body.clone());
    assert_eq!((page["totalElements"].as_u64(), page["hasNext"].as_bool()), (Some(2), Some(false)));
    assert_eq!(f.names(body), ["Meter 01", "meter 03"]);
}

#[test]
fn tb_rest_client_finds_and_counts_entities() {
    let f = fixture();
    run_python_flow(&f.server, "tb_rest_client_entities_query.py", "true");
}
