//! The converter output contract (SPEC §3), end to end: real uplinks over CoAP through a
//! converter whose output is the payload itself (`return decodeToJson(payload);`), so each case
//! below is exactly the JSON a user's converter returns. What was stored is read back through
//! ThingsBoard's REST API, errors through the CoAP reply and the integration's debug events.

mod common;

use std::time::Duration;

use base64::Engine as _;
use coapgate_coap::message::{Code, MessageType};
use common::*;
use serde_json::{Value, json};

/// A converter that returns its payload, parsed as JSON.
const ECHO: &str = "return decodeToJson(payload);";

/// POSTs `payload` as CON; returns the response code and its payload text.
fn send(server: &Server, integration: &Value, payload: &str) -> (Code, String) {
    let mut client = CoapClient::new(server.coap);
    let m = client.build(MessageType::Confirmable, Code::POST, &endpoint_path(integration), payload.as_bytes());
    let r = client.exchange(&m);
    (r.code, String::from_utf8_lossy(&r.payload).into_owned())
}

fn send_ok(server: &Server, integration: &Value, payload: &str) {
    let (code, text) = send(server, integration, payload);
    assert_eq!(code, Code::CREATED, "uplink {payload}: {text}");
}

/// An echo integration, creating devices and assets unless `allow_create` is false.
fn echo_integration(server: &Server, name: &str, allow_create: bool) -> Value {
    let converter = server.create_converter(&format!("{name} converter"), ECHO);
    server.create_integration(name, &converter, json!({"allowCreateDevicesOrAssets": allow_create}))
}

fn get_opt(server: &Server, path: &str) -> Option<Value> {
    let (status, body) = server.request("GET", path, None, Some(&server.token()));
    match status {
        200 => Some(body),
        404 => None,
        other => panic!("GET {path} -> {other}: {body}"),
    }
}

fn asset(server: &Server, name: &str) -> Option<Value> {
    get_opt(server, &format!("/api/tenant/assets?assetName={}", urlencode(name)))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Latest values of a device or asset as JSON (`useStrictDataTypes=true`): `{key: (ts, value)}`.
fn latest_strict(server: &Server, entity: &Value) -> serde_json::Map<String, Value> {
    let (kind, id) = (entity["id"]["entityType"].as_str().unwrap(), id_of(entity));
    let body = server.api("GET", &format!("/api/plugins/telemetry/{kind}/{id}/values/timeseries?useStrictDataTypes=true"), None);
    body.as_object().unwrap().iter().map(|(k, v)| (k.clone(), json!([v[0]["ts"], v[0]["value"]]))).collect()
}

/// Every stored point of `key`, oldest first, as `(ts, value)` with strict types.
fn history(server: &Server, entity: &Value, key: &str) -> Vec<(i64, Value)> {
    let (kind, id) = (entity["id"]["entityType"].as_str().unwrap(), id_of(entity));
    let body = server.api(
        "GET",
        &format!(
            "/api/plugins/telemetry/{kind}/{id}/values/timeseries?keys={key}&startTs=0&endTs=9999999999999&limit=1000&orderBy=ASC&useStrictDataTypes=true"
        ),
        None,
    );
    body.get(key)
        .and_then(Value::as_array)
        .map(|points| points.iter().map(|p| (p["ts"].as_i64().unwrap(), p["value"].clone())).collect())
        .unwrap_or_default()
}

fn attributes(server: &Server, entity: &Value) -> Vec<Value> {
    let (kind, id) = (entity["id"]["entityType"].as_str().unwrap(), id_of(entity));
    server.api("GET", &format!("/api/plugins/telemetry/{kind}/{id}/values/attributes/CLIENT_SCOPE"), None).as_array().unwrap().clone()
}

fn attribute(server: &Server, entity: &Value, key: &str) -> Option<Value> {
    attributes(server, entity).into_iter().find(|a| a["key"] == key)
}

fn total(server: &Server, path: &str) -> u64 {
    server.api("GET", path, None)["totalElements"].as_u64().unwrap()
}

#[test]
fn every_output_form_is_stored() {
    let server = Server::start();
    let integration = echo_integration(&server, "forms", true);
    let (t1, t2) = (1_700_000_000_000i64, 1_700_000_001_000i64);

    // (what the converter returns, entity name, expected latest values {key: value} with strict types,
    //  expected timestamp of those values: Some(ts) or None for "server time")
    let cases: Vec<(Value, &str, Value, Option<i64>)> = vec![
        (
            json!({"deviceName": "flat", "telemetry": {"temperature": 25.7, "humidity": 69, "on": true, "mode": "eco"}}),
            "flat",
            json!({"temperature": 25.7, "humidity": 69, "on": true, "mode": "eco"}),
            None,
        ),
        (
            json!({"deviceName": "with-ts", "telemetry": {"ts": t1, "values": {"temperature": 20}}}),
            "with-ts",
            json!({"temperature": 20}),
            Some(t1),
        ),
        (
            json!({"deviceName": "series", "telemetry": [{"ts": t1, "values": {"t": 1}}, {"ts": t2, "values": {"t": 2}}]}),
            "series",
            json!({"t": 2}),
            Some(t2),
        ),
        (
            // Numeric strings become numbers, as in ThingsBoard; others stay strings; objects stay JSON.
            json!({"deviceName": "typing", "telemetry": {"temperature": "25.7", "count": "69", "neg": "-3", "code": "1e5",
                   "id": "0012a", "blob": {"a": [1, 2]}}}),
            "typing",
            json!({"temperature": 25.7, "count": 69, "neg": -3, "code": "1e5", "id": "0012a", "blob": {"a": [1, 2]}}),
            None,
        ),
    ];
    for (output, name, expected, ts) in &cases {
        let before = coapgate_storage::now_millis();
        send_ok(&server, &integration, &output.to_string());
        let device = server.device(name).unwrap_or_else(|| panic!("{name} not created by {output}"));
        assert_eq!(device["type"], "default", "{name}: deviceType defaults to 'default'");
        let latest = latest_strict(&server, &device);
        for (key, value) in expected.as_object().unwrap() {
            let got = latest.get(key).unwrap_or_else(|| panic!("{name}: no {key} in {latest:?}"));
            assert_eq!(&got[1], value, "{name}.{key}");
            match ts {
                Some(ts) => assert_eq!(got[0], *ts, "{name}.{key} timestamp"),
                None => assert!(got[0].as_i64().unwrap() >= before, "{name}.{key} at server time"),
            }
        }
        assert_eq!(latest.len(), expected.as_object().unwrap().len(), "{name}: {latest:?}");
    }
    // Both points of the array form are in the history, not only the latest.
    let series = server.device("series").unwrap();
    assert_eq!(history(&server, &series, "t"), vec![(t1, json!(1)), (t2, json!(2))]);
    // Non-strict reads print numbers as ThingsBoard does.
    assert_eq!(server.latest(&server.device("typing").unwrap())["temperature"], "25.7");

    // An array of entities: devices and assets together, with attributes, types and labels.
    let output = json!([
        {"deviceName": "multi-1", "deviceType": "thermostat", "deviceLabel": "Kitchen",
         "telemetry": {"t": 1}, "attributes": {"fw": "1.2", "serial": "SN-9"}},
        {"deviceName": "multi-2", "telemetry": {"t": 2}},
        {"assetName": "Building A", "assetType": "building", "assetLabel": "HQ",
         "telemetry": {"ts": t1, "values": {"power": 12.5}}, "attributes": {"floors": 3}},
    ]);
    send_ok(&server, &integration, &output.to_string());
    let d1 = server.device("multi-1").expect("multi-1");
    assert_eq!((d1["type"].as_str(), d1["label"].as_str()), (Some("thermostat"), Some("Kitchen")));
    assert_eq!(attribute(&server, &d1, "fw").unwrap()["value"], json!(1.2));
    assert_eq!(attribute(&server, &d1, "serial").unwrap()["value"], "SN-9");
    assert_eq!(latest_strict(&server, &server.device("multi-2").expect("multi-2"))["t"][1], 2);
    let building = asset(&server, "Building A").expect("asset created");
    assert_eq!(building["id"]["entityType"], "ASSET");
    assert_eq!((building["type"].as_str(), building["label"].as_str()), (Some("building"), Some("HQ")));
    assert_eq!(building["additionalInfo"]["createdByIntegration"]["id"], integration["id"]["id"]);
    assert_eq!(latest_strict(&server, &building)["power"], json!([t1, 12.5]));
    assert_eq!(attribute(&server, &building, "floors").unwrap()["value"], 3);
    assert_eq!(server.api("GET", &format!("/api/asset/{}", id_of(&building)), None), building);
    let keys = server.api("GET", &format!("/api/plugins/telemetry/ASSET/{}/keys/timeseries", id_of(&building)), None);
    assert_eq!(keys, json!(["power"]));
    assert!(server.device("Building A").is_none(), "an asset is not a device");

    // Outputs with no entity are a success that stores nothing.
    let devices_before = total(&server, "/api/tenant/devices?pageSize=1&page=0");
    let assets_before = total(&server, "/api/tenant/assets?pageSize=1&page=0");
    for nothing in ["null", "42", "[]", "\"just text\""] {
        let (code, text) = send(&server, &integration, nothing);
        assert_eq!((code, text.as_str()), (Code::CREATED, ""), "output {nothing}");
    }
    assert_eq!(total(&server, "/api/tenant/devices?pageSize=1&page=0"), devices_before);
    assert_eq!(total(&server, "/api/tenant/assets?pageSize=1&page=0"), assets_before);
}

#[test]
fn thingsboard_errors_in_the_reply_and_the_events() {
    let server = Server::start();
    // An existing device and asset, so "creation forbidden" is about new names only.
    let open = echo_integration(&server, "open", true);
    send_ok(&server, &open, &json!([{"deviceName": "known"}, {"assetName": "known-asset", "assetType": "site"}]).to_string());

    // (case, creation allowed, converter output, ThingsBoard's message)
    let cases = [
        ("both names", true, json!({"deviceName": "d", "assetName": "a", "assetType": "t"}),
         "Both 'deviceName' and 'assetName' can't be present in the converter output!"),
        ("neither name", true, json!({"telemetry": {"t": 1}}),
         "Either 'deviceName' or 'assetName' should be present in the converter output!"),
        ("neither in an array", true, json!([{"deviceName": "fine"}, {"attributes": {}}]),
         "Either 'deviceName' or 'assetName' should be present in the converter output!"),
        ("asset without type", true, json!({"assetName": "a", "telemetry": {"t": 1}}), "Asset type is not set!"),
        ("asset with null type", true, json!({"assetName": "a", "assetType": null}), "Asset type is not set!"),
        ("new device, creation off", false, json!({"deviceName": "new-device", "telemetry": {"t": 1}}),
         "Creating devices is forbidden!"),
        ("new asset, creation off", false, json!({"assetName": "new-asset", "assetType": "site", "telemetry": {"t": 1}}),
         "Creating assets is forbidden!"),
        // All or nothing: the known device's values are not stored either.
        ("known device with a new asset, creation off", false,
         json!([{"deviceName": "known", "telemetry": {"leaked": 1}}, {"assetName": "new-asset-2", "assetType": "site"}]),
         "Creating assets is forbidden!"),
    ];
    for (i, (case, allow, output, message)) in cases.iter().enumerate() {
        let integration = echo_integration(&server, &format!("errors-{i}"), *allow);
        let (code, text) = send(&server, &integration, &output.to_string());
        assert_eq!(code, Code::BAD_REQUEST, "{case}");
        assert_eq!(text, *message, "{case}: reply payload");

        let path = format!("/api/events/INTEGRATION/{}/DEBUG_INTEGRATION?pageSize=10&page=0", id_of(&integration));
        let events = eventually(Duration::from_secs(5), || {
            let page = server.api("GET", &path, None);
            let data = page["data"].as_array().unwrap().clone();
            (!data.is_empty()).then_some(data)
        })
        .unwrap_or_else(|| panic!("{case}: no DEBUG_INTEGRATION event"));
        assert_eq!(events.len(), 1, "{case}: {events:?}");
        assert_eq!(events[0]["body"]["status"], "ERROR", "{case}");
        assert_eq!(events[0]["body"]["error"], *message, "{case}");
        // No Content-Format: ThingsBoard shows the payload as BINARY, in Base64.
        assert_eq!(events[0]["body"]["messageType"], "BINARY", "{case}");
        let shown = base64::engine::general_purpose::STANDARD.decode(events[0]["body"]["message"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(shown).unwrap(), output.to_string(), "{case}: the payload is shown");
    }
    for name in ["d", "fine", "new-device"] {
        assert!(server.device(name).is_none(), "{name} must not exist");
    }
    for name in ["a", "new-asset", "new-asset-2"] {
        assert!(asset(&server, name).is_none(), "{name} must not exist");
    }
    let known = server.device("known").unwrap();
    assert!(latest_strict(&server, &known).is_empty(), "nothing of a rejected uplink is stored");

    // Known entities are still written when creation is off.
    let closed = echo_integration(&server, "closed", false);
    send_ok(&server, &closed, &json!([{"deviceName": "known", "telemetry": {"t": 5}},
                                      {"assetName": "known-asset", "assetType": "ignored", "telemetry": {"t": 6}}]).to_string());
    assert_eq!(latest_strict(&server, &known)["t"][1], 5);
    let known_asset = asset(&server, "known-asset").unwrap();
    assert_eq!(latest_strict(&server, &known_asset)["t"][1], 6);
    assert_eq!(known_asset["type"], "site", "the type is only taken at creation");
}

#[test]
fn customers_groups_and_assets_through_rest() {
    let server = Server::start();
    let integration = echo_integration(&server, "owners", true);
    let tenant_id = server.api("GET", "/api/auth/user", None)["tenantId"]["id"].as_str().unwrap().to_string();
    send_ok(
        &server,
        &integration,
        &json!([
            {"deviceName": "T-1", "deviceType": "thermostat", "customerName": "Acme", "groupName": "Thermostats", "telemetry": {"t": 1}},
            {"deviceName": "T-2", "deviceType": "thermostat", "customerName": "Acme", "groupName": "Thermostats"},
            {"deviceName": "T-3", "groupName": "Thermostats"},
            {"assetName": "Plant", "assetType": "factory", "customerName": "Acme", "groupName": "Sites", "telemetry": {"power": 7}},
        ])
        .to_string(),
    );

    // One customer, created once although three entities name it.
    let customers = server.api("GET", "/api/customers?pageSize=10&page=0", None);
    assert_eq!(customers["totalElements"], 1, "{customers}");
    let acme = customers["data"][0].clone();
    assert_eq!((acme["title"].as_str(), acme["id"]["entityType"].as_str()), (Some("Acme"), Some("CUSTOMER")));
    let acme_id = id_of(&acme);
    assert_eq!(server.api("GET", &format!("/api/customer/{acme_id}"), None), acme);
    assert_eq!(server.api("GET", "/api/tenant/customers?customerTitle=Acme", None)["id"]["id"], acme_id);
    assert_eq!(total(&server, "/api/customers?pageSize=10&page=0&textSearch=acm"), 1);
    assert_eq!(total(&server, "/api/customers?pageSize=10&page=0&textSearch=zzz"), 0);

    // Devices and the asset carry the customer; the tenant-owned one does not.
    let t1 = server.device("T-1").unwrap();
    assert_eq!(t1["customerId"], json!({"entityType": "CUSTOMER", "id": acme_id}));
    assert_eq!(t1["ownerId"], json!({"entityType": "CUSTOMER", "id": acme_id}));
    assert_eq!(server.device("T-3").unwrap()["ownerId"], json!({"entityType": "TENANT", "id": tenant_id}));
    let customer_devices = server.api("GET", &format!("/api/customer/{acme_id}/devices?pageSize=10&page=0"), None);
    let mut names: Vec<&str> = customer_devices["data"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["T-1", "T-2"]);
    assert_eq!(total(&server, &format!("/api/customer/{acme_id}/devices?pageSize=10&page=0&type=thermostat")), 2);
    assert_eq!(total(&server, &format!("/api/customer/{acme_id}/devices?pageSize=10&page=0&type=default")), 0);
    let plant = asset(&server, "Plant").expect("asset Plant");
    assert_eq!(plant["customerId"]["id"], acme_id);
    let customer_assets = server.api("GET", &format!("/api/customer/{acme_id}/assets?pageSize=10&page=0"), None);
    assert_eq!(customer_assets["data"], json!([plant]));
    assert_eq!(server.api("GET", "/api/tenant/asset?assetName=Plant", None), plant);
    assert_eq!(total(&server, "/api/tenant/assets?pageSize=10&page=0&type=factory"), 1);
    assert_eq!(total(&server, "/api/tenant/assets?pageSize=10&page=0&type=building"), 0);
    let profiles = server.api("GET", "/api/assetProfiles?pageSize=10&page=0", None);
    let mut profile_names: Vec<&str> = profiles["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    profile_names.sort();
    assert_eq!(profile_names, vec!["default", "factory"], "assetType names an asset profile: {profiles}");
    let factory = profiles["data"].as_array().unwrap().iter().find(|p| p["name"] == "factory").unwrap();
    assert_eq!(plant["assetProfileId"], factory["id"]);

    // Groups: "Thermostats" owned by Acme (T-1, T-2) and by the tenant (T-3); "Sites" of type ASSET.
    let tenant_groups = server.api("GET", "/api/entityGroups/DEVICE?pageSize=10&page=0", None);
    assert_eq!(tenant_groups["totalElements"], 1, "{tenant_groups}");
    let tenant_group = &tenant_groups["data"][0];
    assert_eq!((tenant_group["name"].as_str(), tenant_group["type"].as_str()), (Some("Thermostats"), Some("DEVICE")));
    assert_eq!(tenant_group["ownerId"], json!({"entityType": "TENANT", "id": tenant_id}));
    assert_eq!(server.api("GET", "/api/entityGroups/DEVICE/all", None), json!([tenant_group]));
    let acme_groups = server.api("GET", &format!("/api/entityGroups/CUSTOMER/{acme_id}/DEVICE?pageSize=10&page=0"), None);
    assert_eq!(acme_groups["totalElements"], 1, "{acme_groups}");
    let acme_group = acme_groups["data"][0].clone();
    assert_eq!(acme_group["ownerId"], json!({"entityType": "CUSTOMER", "id": acme_id}));
    assert_eq!(acme_group["id"]["entityType"], "ENTITY_GROUP");
    assert_eq!(server.api("GET", &format!("/api/entityGroups/CUSTOMER/{acme_id}/DEVICE/all"), None), json!([acme_group]));
    assert_eq!(server.api("GET", &format!("/api/entityGroup/{}", id_of(&acme_group)), None), acme_group);
    assert_eq!(server.api("GET", &format!("/api/entityGroup/CUSTOMER/{acme_id}/DEVICE/Thermostats"), None), acme_group);
    assert!(get_opt(&server, &format!("/api/entityGroup/CUSTOMER/{acme_id}/DEVICE/Nope")).is_none());
    let members = server.api("GET", &format!("/api/entityGroup/{}/entities?pageSize=10&page=0", id_of(&acme_group)), None);
    let mut member_names: Vec<&str> = members["data"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    member_names.sort();
    assert_eq!(member_names, vec!["T-1", "T-2"], "{members}");
    let member = members["data"].as_array().unwrap().iter().find(|m| m["name"] == "T-1").unwrap();
    assert_eq!(member["id"], t1["id"]);
    let tenant_members = server.api("GET", &format!("/api/entityGroup/{}/entities?pageSize=10&page=0", id_of(tenant_group)), None);
    assert_eq!(tenant_members["data"][0]["name"], "T-3");
    assert_eq!(server.api("GET", &format!("/api/entityGroups/DEVICE/{}", id_of(&t1)), None), json!([acme_group["id"]]));
    let sites = server.api("GET", &format!("/api/entityGroups/CUSTOMER/{acme_id}/ASSET?pageSize=10&page=0"), None);
    assert_eq!(sites["data"][0]["name"], "Sites");
    let site_members = server.api("GET", &format!("/api/entityGroup/{}/entities?pageSize=10&page=0", id_of(&sites["data"][0])), None);
    assert_eq!(site_members["data"][0]["id"], plant["id"]);
    assert_eq!(server.api("GET", "/api/entityGroups/CUSTOMER?pageSize=10&page=0", None)["totalElements"], 0);

    // Customer and group are applied at creation only: an existing device keeps its owner.
    send_ok(&server, &integration, &json!({"deviceName": "T-3", "customerName": "Globex", "groupName": "Other"}).to_string());
    assert_eq!(total(&server, "/api/customers?pageSize=10&page=0"), 1, "no customer for an existing device");
    assert_eq!(server.device("T-3").unwrap()["customerId"]["id"], coapgate_null_customer());

    // Unknown ids and bad parameters answer like ThingsBoard.
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/api/customer/{unknown}"),
        format!("/api/customer/{unknown}/devices?pageSize=10&page=0"),
        format!("/api/asset/{unknown}"),
        format!("/api/entityGroup/{unknown}"),
        format!("/api/entityGroup/{unknown}/entities?pageSize=10&page=0"),
        format!("/api/entityGroups/CUSTOMER/{unknown}/DEVICE?pageSize=10&page=0"),
        "/api/tenant/assets?assetName=nothing".to_string(),
    ] {
        let (status, body) = server.request("GET", &path, None, Some(&server.token()));
        assert_eq!((status, body["errorCode"].as_u64()), (404, Some(32)), "{path}: {body}");
    }
    let (status, _) = server.request("GET", "/api/entityGroups/GADGET?pageSize=10&page=0", None, Some(&server.token()));
    assert_eq!(status, 400);

    // Deleting: the asset goes with its telemetry; a customer's entities go back to the tenant.
    server.api("DELETE", &format!("/api/asset/{}", id_of(&plant)), None);
    assert!(asset(&server, "Plant").is_none());
    let (status, _) =
        server.request("GET", &format!("/api/plugins/telemetry/ASSET/{}/values/timeseries", id_of(&plant)), None, Some(&server.token()));
    assert_eq!(status, 404);
    server.api("DELETE", &format!("/api/customer/{acme_id}"), None);
    assert_eq!(total(&server, "/api/customers?pageSize=10&page=0"), 0);
    assert_eq!(server.device("T-1").unwrap()["customerId"]["id"], coapgate_null_customer());
    assert!(get_opt(&server, &format!("/api/entityGroup/{}", id_of(&acme_group))).is_none(), "its groups go with it");
    let (status, _) = server.request("DELETE", &format!("/api/customer/{acme_id}"), None, Some(&server.token()));
    assert_eq!(status, 404);
    // The next uplink naming the customer creates it again, with the asset.
    send_ok(&server, &integration, &json!({"assetName": "Plant", "assetType": "factory", "customerName": "Acme"}).to_string());
    let acme_again = server.api("GET", "/api/tenant/customers?customerTitle=Acme", None);
    assert_ne!(id_of(&acme_again), acme_id);
    assert_eq!(asset(&server, "Plant").unwrap()["customerId"]["id"], acme_again["id"]["id"]);
}

/// ThingsBoard's id for "no customer".
fn coapgate_null_customer() -> &'static str {
    "13814000-1dd2-11b2-8080-808080808080"
}

#[test]
fn update_only_keys_store_changes_only_and_survive_a_restart() {
    let server = Server::start();
    let converter = server.api(
        "POST",
        "/api/converter",
        Some(json!({"name": "only changes", "type": "UPLINK", "integrationType": "COAP",
                    "configuration": {"scriptLang": "JS", "decoder": ECHO, "updateOnlyKeys": ["state", "fw"]}})),
    );
    assert_eq!(converter["configuration"]["updateOnlyKeys"], json!(["state", "fw"]));
    let integration = server.create_integration("only changes", &converter, json!({}));
    let uplink = |ts: i64, state: &str, t: i64, fw: &str| {
        json!({"deviceName": "U-1", "telemetry": {"ts": ts, "values": {"state": state, "t": t}}, "attributes": {"fw": fw, "boot": ts}})
            .to_string()
    };
    send_ok(&server, &integration, &uplink(1000, "on", 1, "1.0"));
    send_ok(&server, &integration, &uplink(2000, "on", 1, "1.0"));
    let device = server.device("U-1").unwrap();
    assert_eq!(history(&server, &device, "state"), vec![(1000, json!("on"))], "same value twice: one point");
    assert_eq!(history(&server, &device, "t").len(), 2, "keys not listed are always stored");
    let fw = attribute(&server, &device, "fw").unwrap();
    let boot = attribute(&server, &device, "boot").unwrap();
    assert_eq!(boot["value"], 2000);
    let fw_written = fw["lastUpdateTs"].as_i64().unwrap();
    assert!(boot["lastUpdateTs"].as_i64().unwrap() >= fw_written);

    send_ok(&server, &integration, &uplink(3000, "off", 1, "1.1"));
    assert_eq!(history(&server, &device, "state"), vec![(1000, json!("on")), (3000, json!("off"))], "changed: two points");
    let fw = attribute(&server, &device, "fw").unwrap();
    assert_eq!(fw["value"], json!(1.1), "a numeric string is stored as a number");
    assert!(fw["lastUpdateTs"].as_i64().unwrap() >= fw_written);

    // The comparison is with what is stored, so it holds across a restart.
    let dir = server.kill();
    let server = Server::start_in(dir, &[], &[]);
    let integration = server.api("GET", &format!("/api/integration/{}", id_of(&integration)), None);
    send_ok(&server, &integration, &uplink(4000, "off", 1, "1.1"));
    assert_eq!(history(&server, &device, "state").len(), 2, "unchanged after restart: still two points");
    assert_eq!(history(&server, &device, "t").len(), 4);
    send_ok(&server, &integration, &uplink(5000, "on", 1, "1.1"));
    assert_eq!(history(&server, &device, "state").last(), Some(&(5000, json!("on"))));
}

#[test]
fn official_python_client_reads_customers_assets_and_groups() {
    let server = Server::start();
    let send = "echo -n {payload} | coap-client-notls -m post {endpoint} -t application/json -f-";
    run_python_flow(&server, "tb_rest_client_entities.py", send);
}
