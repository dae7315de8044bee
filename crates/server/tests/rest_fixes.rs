//! Issue 17's REST fixes against ThingsBoard's controllers, through the real binary: entity
//! subtypes, the time-series query semantics (raw points without an interval, `limit` only for
//! raw reads, `key=`, calendar buckets in a time zone), Java's double printing, the PE client's
//! `deviceInfos/all`, attribute writes and deletes by scope, time-series writes with a TTL and
//! deletes, and device credentials; at the end the same calls through `tb-rest-client`.

mod common;

use common::*;
use serde_json::{Value, json};

/// Asserts ThingsBoard's error JSON with `expected` status and returns the message.
fn tb_error(what: &str, (status, body): (u16, Value), expected: u16) -> String {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["status"], expected, "{what}: {body}");
    body["message"].as_str().unwrap_or_else(|| panic!("{what}: no message: {body}")).to_string()
}

/// `{key: [(ts, value)]}` of a telemetry answer.
fn series(answer: &Value, key: &str) -> Vec<(i64, Value)> {
    answer[key]
        .as_array()
        .unwrap_or_else(|| panic!("no series {key} in {answer}"))
        .iter()
        .map(|p| (p["ts"].as_i64().unwrap(), p["value"].clone()))
        .collect()
}

fn device(server: &Server, name: &str, device_type: &str) -> String {
    id_of(&server.api("POST", "/api/device", Some(json!({"name": name, "type": device_type}))))
}

#[test]
fn device_and_asset_types_list_the_profiles_in_use() {
    let server = Server::start();
    device(&server, "Meter A", "meter");
    device(&server, "Meter B", "meter");
    let sensor = device(&server, "Sensor", "sensor");
    server.api("POST", "/api/asset", Some(json!({"name": "Hall", "type": "building"})));
    let tenant = server.api("GET", "/api/auth/user", None)["tenantId"].clone();

    let types = server.api("GET", "/api/device/types", None);
    assert_eq!(
        types,
        json!([
            {"tenantId": tenant, "entityType": "DEVICE", "type": "meter"},
            {"tenantId": tenant, "entityType": "DEVICE", "type": "sensor"},
        ]),
        "the default profile has no device, so it is not a type in use"
    );
    let types = server.api("GET", "/api/asset/types", None);
    assert_eq!(types, json!([{"tenantId": tenant, "entityType": "ASSET", "type": "building"}]));
    // `/api/device/{id}` still serves ids.
    assert_eq!(server.api("GET", &format!("/api/device/{sensor}"), None)["name"], "Sensor");
    server.api("DELETE", &format!("/api/device/{sensor}"), None);
    let types: Vec<Value> = server.api("GET", "/api/device/types", None).as_array().unwrap().iter().map(|t| t["type"].clone()).collect();
    assert_eq!(types, vec![json!("meter")]);
}

#[test]
fn history_follows_thingsboards_aggregation_rules() {
    let server = Server::start();
    let id = device(&server, "Hist", "meter");
    let points: Vec<Value> = (0..5).map(|i| json!({"ts": 1000 + i * 1000, "values": {"t": i + 1}})).collect();
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(Value::Array(points)));
    let get = |query: &str| server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?startTs=0&endTs=100000&orderBy=ASC&{query}"), None);
    let raw: Vec<(i64, Value)> = (0..5).map(|i| (1000 + i * 1000, json!((i + 1).to_string()))).collect();

    // An aggregation without an interval (or with 0) reads raw points, as ThingsBoard does.
    assert_eq!(series(&get("keys=t&agg=AVG"), "t"), raw);
    assert_eq!(series(&get("keys=t&agg=MAX&interval=0"), "t"), raw);
    // `limit` applies to raw reads only.
    assert_eq!(series(&get("keys=t&agg=NONE&limit=2"), "t"), raw[..2].to_vec());
    // Without an interval the read is a raw one, so its limit counts.
    assert_eq!(series(&get("keys=t&agg=AVG&limit=2"), "t"), raw[..2].to_vec());
    let buckets = series(&get("keys=t&agg=SUM&interval=2000&limit=1"), "t");
    assert_eq!(
        buckets,
        vec![(1000, json!("1")), (3000, json!("5")), (5000, json!("9"))],
        "buckets [0,2000) [2000,4000) [4000,6000) at their middles, all of them whatever the limit"
    );
    // The range's end is exclusive, as ThingsBoard's `ts >= startTs AND ts < endTs`.
    let answer = server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=t&startTs=1000&endTs=3000&orderBy=ASC"), None);
    assert_eq!(series(&answer, "t"), raw[..2].to_vec());
    // Buckets come in time order whatever `orderBy` says (ThingsBoard orders raw reads only).
    let answer = server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=t&startTs=0&endTs=6000&agg=SUM&interval=2000&orderBy=DESC"), None);
    assert_eq!(series(&answer, "t"), buckets);
    // `key=` when `keys=` is absent.
    assert_eq!(series(&get("key=t&agg=NONE"), "t"), raw);

    // Calendar months in a time zone: 2024-01-31 22:30 UTC is already February in Kyiv.
    let id = device(&server, "Months", "meter");
    let points = json!([
        {"ts": 1_705_320_000_000_i64, "values": {"m": 10}},
        {"ts": 1_706_740_200_000_i64, "values": {"m": 20}},
        {"ts": 1_707_566_400_000_i64, "values": {"m": 30}},
    ]);
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(points));
    let months = |zone: &str| {
        let q = format!(
            "/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=m&startTs=1704060000000&endTs=1709244000000\
             &agg=SUM&intervalType=MONTH&timeZone={zone}&orderBy=ASC"
        );
        series(&server.api("GET", &q, None), "m")
    };
    assert_eq!(months("Europe/Kyiv"), vec![(1_705_399_200_000, json!("10")), (1_707_991_200_000, json!("50"))]);
    assert_eq!(months("UTC"), vec![(1_705_406_400_000, json!("30")), (1_707_994_800_000, json!("30"))]);
    let (status, body) = server.request(
        "GET",
        &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=m&startTs=0&endTs=1&agg=SUM&intervalType=MONTH&timeZone=Mars/Olympus"),
        None,
        Some(&server.token()),
    );
    assert_eq!(status, 400, "{body}");
}

#[test]
fn doubles_print_as_javas_double_to_string() {
    let server = Server::start();
    let id = device(&server, "Doubles", "meter");
    server.api(
        "POST",
        &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"),
        Some(json!({"big": 12345678.5, "small": 0.0001, "plain": 25.0, "long": 7})),
    );
    let latest = server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries"), None);
    let value = |key: &str| latest[key][0]["value"].clone();
    assert_eq!(value("big"), json!("1.23456785E7"));
    assert_eq!(value("small"), json!("1.0E-4"));
    assert_eq!(value("plain"), json!("25.0"));
    assert_eq!(value("long"), json!("7"));
    let strict = server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?useStrictDataTypes=true"), None);
    assert_eq!(strict["big"][0]["value"], json!(12345678.5));
}

#[test]
fn all_device_infos_carry_customer_titles() {
    let server = Server::start();
    let customer = server.api("POST", "/api/customer", Some(json!({"title": "Acme"})));
    let owned = device(&server, "Owned", "meter");
    device(&server, "Free", "sensor");
    server.api("POST", &format!("/api/customer/{}/device/{owned}", id_of(&customer)), None);
    // The tenant's own devices by default, its customers' too with includeCustomers=true.
    let own = server.api("GET", "/api/deviceInfos/all?pageSize=10&page=0", None);
    assert_eq!((own["totalElements"].clone(), own["data"][0]["name"].clone()), (json!(1), json!("Free")), "{own}");
    let page = server.api("GET", "/api/deviceInfos/all?pageSize=10&page=0&sortProperty=name&sortOrder=ASC&includeCustomers=true", None);
    assert_eq!(page["totalElements"], 2, "{page}");
    let rows: Vec<(Value, Value, Value)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].clone(), d["customerTitle"].clone(), d["ownerName"].clone()))
        .collect();
    assert_eq!(rows, vec![(json!("Free"), Value::Null, Value::Null), (json!("Owned"), json!("Acme"), json!("Acme"))]);
    let meter_profile = server.api("GET", "/api/deviceProfiles?pageSize=10&page=0&textSearch=meter", None)["data"][0]["id"]["id"].clone();
    let page = server.api(
        "GET",
        &format!("/api/deviceInfos/all?pageSize=10&page=0&includeCustomers=true&deviceProfileId={}", meter_profile.as_str().unwrap()),
        None,
    );
    assert_eq!(page["data"][0]["name"], "Owned");
    assert_eq!(page["totalElements"], 1);
}

#[test]
fn attributes_are_written_by_scope_and_deleted() {
    let server = Server::start();
    let token = server.token();
    let call = |method: &str, path: &str, body: Option<Value>| server.request(method, path, body, Some(&token));
    let id = device(&server, "Attrs", "meter");
    let base = format!("/api/plugins/telemetry/DEVICE/{id}");
    // v1 (`/{scope}`), v2 (`/attributes/{scope}`) and the device form (`/{deviceId}/{scope}`).
    server.api("POST", &format!("{base}/SERVER_SCOPE"), Some(json!({"a": 1, "b": 2})));
    server.api("POST", &format!("{base}/attributes/SHARED_SCOPE"), Some(json!({"c": "x"})));
    server.api("POST", &format!("/api/plugins/telemetry/{id}/SHARED_SCOPE"), Some(json!({"d": true})));
    let keys = |scope: &str| server.api("GET", &format!("{base}/keys/attributes/{scope}"), None);
    assert_eq!(keys("SERVER_SCOPE"), json!(["a", "b"]));
    assert_eq!(keys("SHARED_SCOPE"), json!(["c", "d"]));
    // CLIENT_SCOPE is the devices' own: users cannot write it, on any path.
    for path in [format!("{base}/CLIENT_SCOPE"), format!("{base}/attributes/CLIENT_SCOPE"), format!("/api/plugins/telemetry/{id}/CLIENT_SCOPE")] {
        let message = tb_error(&path, call("POST", &path, Some(json!({"e": 1}))), 400);
        assert_eq!(message, "Invalid scope: CLIENT_SCOPE");
    }
    assert_eq!(keys("CLIENT_SCOPE"), json!([]));

    server.api("DELETE", &format!("{base}/SERVER_SCOPE?keys=a"), None);
    assert_eq!(keys("SERVER_SCOPE"), json!(["b"]));
    server.api("DELETE", &format!("/api/plugins/telemetry/{id}/SHARED_SCOPE?keys=c,d"), None);
    assert_eq!(keys("SHARED_SCOPE"), json!([]));
    assert_eq!(tb_error("no keys", call("DELETE", &format!("{base}/SERVER_SCOPE"), None), 400), "Empty keys: null");
    tb_error("bad scope", call("DELETE", &format!("{base}/OTHER_SCOPE?keys=b"), None), 400);
    tb_error("unknown device", call("DELETE", &format!("/api/plugins/telemetry/DEVICE/{}/SERVER_SCOPE?keys=b", uuid_v4()), None), 404);
}

#[test]
fn client_scope_attributes_come_from_devices_and_users_may_delete_them() {
    let server = Server::start();
    let decoder = "var s = decodeToString(payload); return {deviceName: s, deviceType: 'meter', attributes: {fw: '1.2', model: 'X'}, telemetry: {}};";
    let converter = server.create_converter("Attr converter", decoder);
    let integration = server.create_integration("Attr integration", &converter, json!({}));
    let mut coap = CoapClient::new(server.coap);
    assert_eq!(coap.post(&endpoint_path(&integration), b"Attr device"), coapgate_coap::message::Code::CREATED);
    let id = id_of(&server.device("Attr device").expect("created by the uplink"));
    let base = format!("/api/plugins/telemetry/DEVICE/{id}");
    assert_eq!(server.api("GET", &format!("{base}/keys/attributes/CLIENT_SCOPE"), None), json!(["fw", "model"]));
    server.api("DELETE", &format!("{base}/CLIENT_SCOPE?keys=fw"), None);
    assert_eq!(server.api("GET", &format!("{base}/keys/attributes/CLIENT_SCOPE"), None), json!(["model"]));
    // A device an integration created has credentials too, made when first asked for.
    let credentials = server.api("GET", &format!("/api/device/{id}/credentials"), None);
    assert_eq!(credentials["credentialsType"], "ACCESS_TOKEN");
}

#[test]
fn time_series_are_written_with_a_ttl_and_deleted() {
    let server = Server::start();
    let token = server.token();
    let call = |method: &str, path: &str| server.request(method, path, None, Some(&token));
    let id = device(&server, "Series", "meter");
    let base = format!("/api/plugins/telemetry/DEVICE/{id}");
    let points: Vec<Value> = [1000, 2000, 3000].iter().map(|ts| json!({"ts": ts, "values": {"t": ts / 1000}})).collect();
    server.api("POST", &format!("{base}/timeseries/ANY/3600"), Some(Value::Array(points)));
    tb_error("bad ttl", server.request("POST", &format!("{base}/timeseries/ANY/soon"), Some(json!({"t": 1})), Some(&token)), 400);
    let history = || {
        let answer = server.api("GET", &format!("{base}/values/timeseries?keys=t&startTs=0&endTs=100000&orderBy=ASC"), None);
        answer.get("t").map(|_| series(&answer, "t").into_iter().map(|(ts, _)| ts).collect::<Vec<_>>()).unwrap_or_default()
    };
    let latest = || server.api("GET", &format!("{base}/values/timeseries?keys=t"), None)["t"][0]["ts"].as_i64();
    assert_eq!(history(), vec![1000, 2000, 3000]);

    server.api("DELETE", &format!("{base}/timeseries/delete?keys=t&startTs=2500&endTs=3500"), None);
    assert_eq!(history(), vec![1000, 2000]);
    assert_eq!(latest(), None, "the latest value was in the range and is deleted, not rewritten");
    server.api("POST", &format!("{base}/timeseries/ANY"), Some(json!({"ts": 3000, "values": {"t": 3}})));
    server.api("DELETE", &format!("{base}/timeseries/delete?keys=t&startTs=1500&endTs=3500&rewriteLatestIfDeleted=true"), None);
    assert_eq!((history(), latest()), (vec![1000], Some(1000)));
    server.api("DELETE", &format!("{base}/timeseries/delete?keys=t&deleteAllDataForKeys=true"), None);
    assert_eq!((history(), latest()), (vec![], None));
    assert_eq!(server.api("GET", &format!("{base}/keys/timeseries"), None), json!([]));

    let message = tb_error("no range", call("DELETE", &format!("{base}/timeseries/delete?keys=t")), 400);
    assert_eq!(message, "When deleteAllDataForKeys is false, start and end timestamp values shouldn't be empty");
    tb_error("no keys", call("DELETE", &format!("{base}/timeseries/delete?deleteAllDataForKeys=true")), 400);
}

#[test]
fn devices_have_access_token_credentials() {
    let server = Server::start();
    let token = server.token();
    let a = device(&server, "Cred A", "meter");
    let b = device(&server, "Cred B", "meter");
    let credentials = server.api("GET", &format!("/api/device/{a}/credentials"), None);
    assert_eq!(credentials["credentialsType"], "ACCESS_TOKEN");
    assert_eq!(credentials["deviceId"], json!({"entityType": "DEVICE", "id": a}));
    let generated = credentials["credentialsId"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 20, "{credentials}");
    assert!(generated.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(server.api("GET", &format!("/api/device/{a}/credentials"), None), credentials, "stored, not made again");
    assert_ne!(server.api("GET", &format!("/api/device/{b}/credentials"), None)["credentialsId"], json!(generated));

    let mut edited = credentials.clone();
    edited["credentialsId"] = json!("my-token-1");
    let saved = server.api("POST", "/api/device/credentials", Some(edited.clone()));
    assert_eq!((saved["credentialsId"].clone(), saved["id"].clone()), (json!("my-token-1"), credentials["id"].clone()));
    assert_eq!(server.api("GET", &format!("/api/device/{a}/credentials"), None)["credentialsId"], "my-token-1");

    let mut taken = edited.clone();
    taken["deviceId"]["id"] = json!(b);
    let message = tb_error("taken", server.request("POST", "/api/device/credentials", Some(taken.clone()), Some(&token)), 400);
    assert_eq!(message, "Specified credentials are already registered!");
    // A new device asking for a token another holds is refused and not kept.
    let refused = server.request("POST", "/api/device?accessToken=my-token-1", Some(json!({"name": "Cred C"})), Some(&token));
    assert_eq!(tb_error("taken at creation", refused, 400), "Specified credentials are already registered!");
    assert_eq!(server.request("GET", "/api/tenant/devices?deviceName=Cred%20C", None, Some(&token)).0, 404);
    let given = device_with_token(&server, "Cred D", "given-token");
    assert_eq!(server.api("GET", &format!("/api/device/{given}/credentials"), None)["credentialsId"], "given-token");
    let mut x509 = edited.clone();
    x509["credentialsType"] = json!("X509_CERTIFICATE");
    tb_error("x509", server.request("POST", "/api/device/credentials", Some(x509), Some(&token)), 400);
    let mut empty = edited.clone();
    empty["credentialsId"] = json!("");
    assert_eq!(
        tb_error("empty", server.request("POST", "/api/device/credentials", Some(empty), Some(&token)), 400),
        "Device credentials id should be specified!"
    );
    let mut unknown = edited.clone();
    unknown["deviceId"]["id"] = json!(uuid_v4());
    tb_error("unknown", server.request("POST", "/api/device/credentials", Some(unknown), Some(&token)), 404);
    tb_error("unknown", server.request("GET", &format!("/api/device/{}/credentials", uuid_v4()), None, Some(&token)), 404);

    // Deleting a device frees its token for another.
    server.api("DELETE", &format!("/api/device/{a}"), None);
    assert_eq!(server.api("POST", "/api/device/credentials", Some(taken))["credentialsId"], "my-token-1");
}

#[test]
fn deleting_a_customer_removes_its_data_and_keeps_its_devices() {
    let server = Server::start();
    let customer = id_of(&server.api("POST", "/api/customer", Some(json!({"title": "Gone"}))));
    let owned = device(&server, "Kept", "meter");
    server.api("POST", &format!("/api/customer/{customer}/device/{owned}"), None);
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{owned}/timeseries/ANY"), Some(json!({"x": 1})));
    server.api("POST", &format!("/api/plugins/telemetry/CUSTOMER/{customer}/attributes/SERVER_SCOPE"), Some(json!({"plan": "gold"})));
    server.api("DELETE", &format!("/api/customer/{customer}"), None);
    // The device stays, unassigned, with its data.
    let kept = server.api("GET", &format!("/api/device/{owned}"), None);
    assert_eq!(kept["customerId"]["id"], "13814000-1dd2-11b2-8080-808080808080");
    assert_eq!(server.api("GET", &format!("/api/plugins/telemetry/DEVICE/{owned}/keys/timeseries"), None), json!(["x"]));
}

#[test]
fn tb_rest_client_reaches_the_fixed_and_new_calls() {
    let server = Server::start();
    run_python_flow(&server, "tb_rest_client_fixes.py", "true");
}

fn device_with_token(server: &Server, name: &str, token: &str) -> String {
    id_of(&server.api("POST", &format!("/api/device?accessToken={token}"), Some(json!({"name": name}))))
}

fn uuid_v4() -> String {
    // Random enough for an id nobody has: the test process's time and a counter.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    format!("{:08x}-0000-4000-8000-{:012x}", nanos as u32, N.fetch_add(1, Ordering::SeqCst))
}
