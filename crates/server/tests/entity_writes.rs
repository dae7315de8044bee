//! Entity writes through ThingsBoard's REST paths: devices, assets and customers created and
//! edited, assigned and unassigned, and attributes and time series written for any entity
//! (customers included), through the real binary and, at the end, the official `tb-rest-client`.

mod common;

use common::*;
use serde_json::{Value, json};

#[test]
fn devices_are_created_edited_and_refused_under_a_taken_name() {
    let server = Server::start();
    let token = server.token();
    let call = |method: &str, path: &str, body: Option<Value>| server.request(method, path, body, Some(&token));

    let device = server.api(
        "POST",
        "/api/device",
        Some(json!({"name": "Meter 1", "type": "meter", "label": "Hall", "additionalInfo": {"description": "first floor"}})),
    );
    let id = id_of(&device);
    assert_eq!(device["name"], "Meter 1");
    assert_eq!(device["type"], "meter");
    assert_eq!(device["label"], "Hall");
    assert_eq!(device["additionalInfo"]["description"], "first floor");
    assert_eq!(device["customerId"]["id"], NULL_CUSTOMER);
    // The profile named by the type was created, and is the device's.
    let profile = server.api("GET", &format!("/api/deviceProfile/{}", device["deviceProfileId"]["id"].as_str().unwrap()), None);
    assert_eq!(profile["name"], "meter");
    assert_eq!(server.api("GET", &format!("/api/device/{id}"), None), device);

    // A second device under the same name: ThingsBoard's 400.
    let message = tb_error("duplicate name", call("POST", "/api/device", Some(json!({"name": "Meter 1", "type": "meter"}))), 400);
    assert_eq!(message, "Device with such name already exists!");
    assert_eq!(server.api("GET", "/api/tenant/devices?pageSize=10&page=0", None)["totalElements"], 1);
    let message = tb_error("no name", call("POST", "/api/device", Some(json!({"type": "meter"}))), 400);
    assert_eq!(message, "Device name should be specified!");

    // Edit: rename, new profile by id, label cleared; created time kept.
    let default_profile = server.api("GET", "/api/deviceProfiles?pageSize=10&page=0&textSearch=default", None)["data"][0].clone();
    let mut edited = device.clone();
    edited["name"] = json!("Meter 1b");
    edited["label"] = Value::Null;
    edited["deviceProfileId"] = default_profile["id"].clone();
    let saved = server.api("POST", "/api/device", Some(edited));
    assert_eq!(id_of(&saved), id);
    assert_eq!(saved["name"], "Meter 1b");
    assert_eq!(saved["type"], "default");
    assert_eq!(saved["label"], Value::Null);
    assert_eq!(saved["createdTime"], device["createdTime"]);
    assert!(server.device("Meter 1").is_none());
    // Renaming onto another device's name is refused too; an unknown id is 404.
    server.api("POST", "/api/device", Some(json!({"name": "Meter 2"})));
    let mut clash = saved.clone();
    clash["name"] = json!("Meter 2");
    tb_error("rename onto a taken name", call("POST", "/api/device", Some(clash)), 400);
    let ghost = json!({"id": {"entityType": "DEVICE", "id": "5f0e8a4e-0000-4000-8000-000000000001"}, "name": "Ghost"});
    tb_error("unknown id", call("POST", "/api/device", Some(ghost)), 404);
}

#[test]
fn devices_and_assets_are_assigned_to_customers_and_unassigned() {
    let server = Server::start();
    let token = server.token();
    let call = |method: &str, path: &str, body: Option<Value>| server.request(method, path, body, Some(&token));

    let customer = server.api("POST", "/api/customer", Some(json!({"title": "Acme"})));
    let customer_id = id_of(&customer);
    assert_eq!(customer["title"], "Acme");
    assert_eq!(customer["name"], "Acme");
    let message = tb_error("duplicate title", call("POST", "/api/customer", Some(json!({"title": "Acme"}))), 400);
    assert_eq!(message, "Customer with such title already exists!");
    tb_error("no title", call("POST", "/api/customer", Some(json!({"email": "a@b.c"}))), 400);
    let mut renamed = customer.clone();
    renamed["title"] = json!("Acme Ltd");
    let renamed = server.api("POST", "/api/customer", Some(renamed));
    assert_eq!((id_of(&renamed), renamed["title"].clone()), (customer_id.clone(), json!("Acme Ltd")));
    assert_eq!(server.api("GET", "/api/tenant/customers?customerTitle=Acme%20Ltd", None)["id"]["id"], customer_id);

    let device = server.api("POST", "/api/device", Some(json!({"name": "D-1"})));
    let device_id = id_of(&device);
    let assigned = server.api("POST", &format!("/api/customer/{customer_id}/device/{device_id}"), None);
    assert_eq!(assigned["customerId"]["id"], customer_id);
    assert_eq!(assigned["ownerId"], json!({"entityType": "CUSTOMER", "id": customer_id}));
    let theirs = server.api("GET", &format!("/api/customer/{customer_id}/devices?pageSize=10&page=0"), None);
    assert_eq!(theirs["data"].as_array().unwrap().iter().map(id_of).collect::<Vec<_>>(), vec![device_id.clone()]);
    // An edit that does not name the customer keeps it.
    let kept = server.api("POST", "/api/device", Some(json!({"id": device["id"], "name": "D-1", "label": "x"})));
    assert_eq!(kept["customerId"]["id"], customer_id);
    let unassigned = server.api("DELETE", &format!("/api/customer/device/{device_id}"), None);
    assert_eq!(unassigned["customerId"]["id"], NULL_CUSTOMER);
    assert_eq!(server.api("GET", &format!("/api/customer/{customer_id}/devices?pageSize=10&page=0"), None)["totalElements"], 0);
    let message = tb_error("unassign twice", call("DELETE", &format!("/api/customer/device/{device_id}"), None), 400);
    assert_eq!(message, "Device isn't assigned to any customer!");
    let nobody = "5f0e8a4e-0000-4000-8000-000000000002";
    tb_error("unknown customer", call("POST", &format!("/api/customer/{nobody}/device/{device_id}"), None), 404);
    tb_error("unknown device", call("POST", &format!("/api/customer/{customer_id}/device/{nobody}"), None), 404);

    let asset = server.api(
        "POST",
        "/api/asset",
        Some(json!({"name": "Site", "type": "building", "customerId": {"entityType": "CUSTOMER", "id": customer_id}})),
    );
    let asset_id = id_of(&asset);
    assert_eq!(asset["type"], "building");
    assert_eq!(asset["customerId"]["id"], customer_id, "a customer given at creation is kept");
    let message = tb_error("duplicate asset", call("POST", "/api/asset", Some(json!({"name": "Site", "type": "building"}))), 400);
    assert_eq!(message, "Asset with such name already exists!");
    let unassigned = server.api("DELETE", &format!("/api/customer/asset/{asset_id}"), None);
    assert_eq!(unassigned["customerId"]["id"], NULL_CUSTOMER);
    let message = tb_error("unassign asset twice", call("DELETE", &format!("/api/customer/asset/{asset_id}"), None), 400);
    assert_eq!(message, "Asset isn't assigned to any customer!");
    let assigned = server.api("POST", &format!("/api/customer/{customer_id}/asset/{asset_id}"), None);
    assert_eq!(assigned["customerId"]["id"], customer_id);
    assert_eq!(server.api("GET", &format!("/api/customer/{customer_id}/assets?pageSize=10&page=0"), None)["totalElements"], 1);

    // Deleting the customer hands both back to the tenant (the existing delete, unchanged).
    server.api("DELETE", &format!("/api/customer/{customer_id}"), None);
    assert_eq!(server.api("GET", &format!("/api/asset/{asset_id}"), None)["customerId"]["id"], NULL_CUSTOMER);
}

#[test]
fn attributes_and_time_series_are_written_for_customers_assets_and_devices() {
    let server = Server::start();
    let token = server.token();
    let call = |method: &str, path: &str, body: Option<Value>| server.request(method, path, body, Some(&token));
    let customer = id_of(&server.api("POST", "/api/customer", Some(json!({"title": "Owner"}))));
    let asset = id_of(&server.api("POST", "/api/asset", Some(json!({"name": "Plant", "type": "site"}))));
    let device = id_of(&server.api("POST", "/api/device", Some(json!({"name": "Probe"}))));

    for (kind, id) in [("CUSTOMER", &customer), ("ASSET", &asset), ("DEVICE", &device)] {
        let base = format!("/api/plugins/telemetry/{kind}/{id}");
        let (status, body) = call("POST", &format!("{base}/attributes/SERVER_SCOPE"), Some(json!({"plan": "gold", "seats": 3, "vip": true})));
        assert_eq!(status, 200, "{kind} server attributes: {body}");
        let (status, _) = call("POST", &format!("{base}/attributes/SHARED_SCOPE"), Some(json!({"limit": 2.5})));
        assert_eq!(status, 200);
        let attrs = server.api("GET", &format!("{base}/values/attributes/SERVER_SCOPE"), None);
        let mut pairs: Vec<(String, Value)> =
            attrs.as_array().unwrap().iter().map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone())).collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(pairs, vec![("plan".into(), json!("gold")), ("seats".into(), json!(3)), ("vip".into(), json!(true))], "{kind}");
        assert_eq!(server.api("GET", &format!("{base}/keys/attributes/SHARED_SCOPE"), None), json!(["limit"]));

        // ThingsBoard's three telemetry shapes.
        let (status, body) = call("POST", &format!("{base}/timeseries/ANY"), Some(json!({"temperature": 21.5})));
        assert_eq!(status, 200, "{kind} flat telemetry: {body}");
        let (status, _) = call("POST", &format!("{base}/timeseries/ANY"), Some(json!({"ts": 1_700_000_000_000i64, "values": {"count": 1}})));
        assert_eq!(status, 200);
        let (status, _) = call(
            "POST",
            &format!("{base}/timeseries/ANY"),
            Some(json!([{"ts": 1_700_000_001_000i64, "values": {"count": 2}}, {"ts": 1_700_000_002_000i64, "values": {"count": "3"}}])),
        );
        assert_eq!(status, 200);
        let latest = server.api("GET", &format!("{base}/values/timeseries?useStrictDataTypes=true"), None);
        assert_eq!(latest["temperature"][0]["value"], json!(21.5), "{kind}: {latest}");
        assert_eq!(latest["count"][0], json!({"ts": 1_700_000_002_000i64, "value": 3}), "{kind}: {latest}");
        let history = server.api("GET", &format!("{base}/values/timeseries?keys=count&startTs=0&endTs=1800000000000&orderBy=ASC"), None);
        let values: Vec<&str> = history["count"].as_array().unwrap().iter().map(|p| p["value"].as_str().unwrap()).collect();
        assert_eq!(values, vec!["1", "2", "3"], "{kind}");
    }

    let base = format!("/api/plugins/telemetry/CUSTOMER/{customer}");
    tb_error("client scope", call("POST", &format!("{base}/attributes/CLIENT_SCOPE"), Some(json!({"a": 1}))), 400);
    tb_error("bad scope", call("POST", &format!("{base}/attributes/NOPE"), Some(json!({"a": 1}))), 400);
    tb_error("empty attributes", call("POST", &format!("{base}/attributes/SERVER_SCOPE"), Some(json!({}))), 400);
    tb_error("not an object", call("POST", &format!("{base}/attributes/SERVER_SCOPE"), Some(json!([1]))), 400);
    tb_error("bad telemetry", call("POST", &format!("{base}/timeseries/ANY"), Some(json!(5))), 400);
    tb_error("bad ts", call("POST", &format!("{base}/timeseries/ANY"), Some(json!({"ts": "soon", "values": {"a": 1}}))), 400);
    let nobody = "5f0e8a4e-0000-4000-8000-000000000003";
    tb_error("unknown customer", call("POST", &format!("/api/plugins/telemetry/CUSTOMER/{nobody}/attributes/SERVER_SCOPE"), Some(json!({"a": 1}))), 404);
    tb_error("unknown type", call("POST", &format!("/api/plugins/telemetry/TENANT/{customer}/timeseries/ANY"), Some(json!({"a": 1}))), 400);
    let (status, _) = server.request("POST", &format!("{base}/attributes/SERVER_SCOPE"), Some(json!({"a": 1})), None);
    assert_eq!(status, 401, "writes need a token");
}

/// A write is durable when the call returns: the server killed with SIGKILL right after it
/// still has it when started again on the same data.
#[test]
fn writes_survive_a_kill_right_after_the_answer() {
    let server = Server::start();
    let customer = id_of(&server.api("POST", "/api/customer", Some(json!({"title": "Durable"}))));
    let device = server.api("POST", "/api/device", Some(json!({"name": "Kept"})));
    server.api("POST", &format!("/api/customer/{customer}/device/{}", id_of(&device)), None);
    server.api("POST", &format!("/api/plugins/telemetry/CUSTOMER/{customer}/attributes/SERVER_SCOPE"), Some(json!({"k": "v"})));
    server.api("POST", &format!("/api/plugins/telemetry/CUSTOMER/{customer}/timeseries/ANY"), Some(json!({"t": 7})));
    let dir = server.kill();
    let server = Server::start_in(dir, &[], &[]);
    let device = server.device("Kept").expect("the device survived");
    assert_eq!(device["customerId"]["id"], customer);
    let attrs = server.api("GET", &format!("/api/plugins/telemetry/CUSTOMER/{customer}/values/attributes"), None);
    assert_eq!(attrs[0]["value"], "v");
    let latest = server.api("GET", &format!("/api/plugins/telemetry/CUSTOMER/{customer}/values/timeseries"), None);
    assert_eq!(latest["t"][0]["value"], "7");
}

#[test]
fn tb_rest_client_creates_and_assigns_entities() {
    let server = Server::start();
    run_python_flow(&server, "tb_rest_client_entity_writes.py", "true");
}
