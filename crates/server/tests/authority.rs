//! Who may call what: a customer user against every REST route, and over the WebSocket API.
//!
//! The route list comes from the binary itself (`coapgate routes`), and every route must have a
//! row in [`EXPECTATIONS`]: a new route without a decision here fails the test, and so does a row
//! for a route that no longer exists. Each row is then exercised with a customer user's token
//! against its own customer's entities and another customer's.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

/// What a customer user gets from a route. Paths in rows use `{DEV}`, `{ASSET}`, `{CUST}` and
/// `{USER}`, filled with the customer user's own device, asset, customer and a user of that
/// customer, or another customer's.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Tenant administrators only: 403 with ThingsBoard's PERMISSION_DENIED (errorCode 20)
    /// whatever the path's ids are.
    Refused,
    /// 2xx for the user's own entities, 403 for another customer's.
    Owned { call: &'static str, body: Option<&'static str> },
    /// 2xx, and every device, asset or customer in the answer is the user's own.
    Listed { call: &'static str, body: Option<&'static str> },
    /// 2xx for any user: nothing of another customer in it (tenant-wide names such as types).
    Open { call: &'static str },
    /// The user's own session or password, exercised separately (see the test).
    OwnAccount,
    /// `POST /api/user`: a customer user may change itself, not create or change anyone else.
    UserSave,
}

use Expect::*;

const DEVICE_QUERY: &str = r#"{"entityFilter": {"type": "entityType", "entityType": "DEVICE"},
    "pageLink": {"pageSize": 100, "page": 0},
    "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
    "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]}"#;
const CUSTOMER_QUERY: &str = r#"{"entityFilter": {"type": "entityType", "entityType": "CUSTOMER"},
    "pageLink": {"pageSize": 100, "page": 0}}"#;

/// One row per `(method, route)` that `coapgate routes` prints.
const EXPECTATIONS: &[(&str, &str, Expect)] = &[
    ("GET", "/api/auth/user", Open { call: "/api/auth/user" }),
    ("POST", "/api/auth/logout", OwnAccount),
    ("POST", "/api/auth/changePassword", OwnAccount),
    ("GET", "/api/coapgate/remoteSettings", Refused),
    ("GET", "/api/coapgate/coapSettings", Refused),
    ("POST", "/api/coapgate/converter/checkScript", Refused),
    ("POST", "/api/converter", Refused),
    ("POST", "/api/converter/testUpLink", Refused),
    ("GET", "/api/converter/{id}", Refused),
    ("DELETE", "/api/converter/{id}", Refused),
    ("GET", "/api/converter/{id}/debugIn", Refused),
    ("GET", "/api/converters", Refused),
    ("GET", "/api/events/{entity_type}/{entity_id}/{event_type}", Refused),
    ("POST", "/api/events/{entity_type}/{entity_id}", Refused),
    ("GET", "/api/coapgate/events/{entity_type}/{entity_id}/dropped", Refused),
    ("GET", "/api/coapgate/integrations/messages24h", Refused),
    ("POST", "/api/integration", Refused),
    ("GET", "/api/integration/{id}", Refused),
    ("DELETE", "/api/integration/{id}", Refused),
    ("GET", "/api/integration/routingKey/{key}", Refused),
    ("GET", "/api/integrations", Refused),
    ("GET", "/api/integrationInfos", Refused),
    ("GET", "/api/tenant/devices", Refused),
    ("GET", "/api/tenant/deviceInfos", Refused),
    ("GET", "/api/tenant/device", Refused),
    ("POST", "/api/device", Refused),
    ("GET", "/api/device/types", Open { call: "/api/device/types" }),
    ("POST", "/api/device/credentials", Refused),
    ("GET", "/api/device/{id}/credentials", Owned { call: "/api/device/{DEV}/credentials", body: None }),
    ("GET", "/api/deviceInfos/all", Listed { call: "/api/deviceInfos/all?pageSize=100&page=0&includeCustomers=true", body: None }),
    ("GET", "/api/device/{id}", Owned { call: "/api/device/{DEV}", body: None }),
    ("DELETE", "/api/device/{id}", Refused),
    ("GET", "/api/deviceProfiles", Refused),
    ("GET", "/api/deviceProfileInfos", Open { call: "/api/deviceProfileInfos?pageSize=10&page=0" }),
    ("GET", "/api/deviceProfile/{id}", Refused),
    ("DELETE", "/api/deviceProfile/{id}", Refused),
    ("GET", "/api/tenant/assets", Refused),
    ("GET", "/api/tenant/asset", Refused),
    ("POST", "/api/asset", Refused),
    ("GET", "/api/asset/types", Open { call: "/api/asset/types" }),
    ("GET", "/api/asset/{id}", Owned { call: "/api/asset/{ASSET}", body: None }),
    ("DELETE", "/api/asset/{id}", Refused),
    ("GET", "/api/assetProfiles", Refused),
    ("GET", "/api/assetProfileInfos", Open { call: "/api/assetProfileInfos?pageSize=10&page=0" }),
    ("GET", "/api/assetProfile/{id}", Refused),
    ("DELETE", "/api/assetProfile/{id}", Refused),
    ("GET", "/api/customers", Refused),
    ("GET", "/api/tenant/customers", Refused),
    ("GET", "/api/customer/{id}", Owned { call: "/api/customer/{CUST}", body: None }),
    ("DELETE", "/api/customer/{id}", Refused),
    ("GET", "/api/customer/{id}/devices", Owned { call: "/api/customer/{CUST}/devices?pageSize=10&page=0", body: None }),
    ("GET", "/api/customer/{id}/assets", Owned { call: "/api/customer/{CUST}/assets?pageSize=10&page=0", body: None }),
    ("POST", "/api/customer", Refused),
    ("POST", "/api/customer/{id}/device/{device_id}", Refused),
    ("DELETE", "/api/customer/device/{device_id}", Refused),
    ("POST", "/api/customer/{id}/asset/{asset_id}", Refused),
    ("DELETE", "/api/customer/asset/{asset_id}", Refused),
    ("POST", "/api/owner/CUSTOMER/{owner_id}/{entity_type}/{entity_id}", Refused),
    ("POST", "/api/owner/TENANT/{owner_id}/{entity_type}/{entity_id}", Refused),
    ("GET", "/api/entityGroups/{p1}", Refused),
    ("GET", "/api/entityGroups/{p1}/{p2}", Refused),
    ("GET", "/api/entityGroups/{p1}/{p2}/{p3}", Refused),
    ("GET", "/api/entityGroups/{p1}/{p2}/{p3}/all", Refused),
    ("GET", "/api/entityGroup/{p1}", Refused),
    ("DELETE", "/api/entityGroup/{p1}", Refused),
    ("GET", "/api/entityGroup/{p1}/entities", Refused),
    ("GET", "/api/entityGroup/{p1}/{p2}/{p3}/{p4}", Refused),
    ("POST", "/api/user", UserSave),
    ("GET", "/api/user/users", Listed { call: "/api/user/users?pageSize=100&page=0", body: None }),
    ("POST", "/api/user/sendActivationMail", Refused),
    ("GET", "/api/users", Listed { call: "/api/users?pageSize=100&page=0", body: None }),
    ("GET", "/api/user/{id}", Owned { call: "/api/user/{USER}", body: None }),
    ("DELETE", "/api/user/{id}", Refused),
    ("GET", "/api/user/{id}/activationLink", Refused),
    ("GET", "/api/user/{id}/activationLinkInfo", Refused),
    ("POST", "/api/user/{id}/userCredentialsEnabled", Refused),
    ("GET", "/api/customer/{id}/users", Refused),
    ("GET", "/api/tenant/{id}/users", Refused),
    ("POST", "/api/entitiesQuery/find", Listed { call: "/api/entitiesQuery/find", body: Some(DEVICE_QUERY) }),
    ("POST", "/api/entitiesQuery/count", Open { call: "/api/entitiesQuery/count" }),
    ("POST", "/api/entitiesQuery/find/keys", Listed { call: "/api/entitiesQuery/find/keys?timeseries=true&attributes=true", body: Some(DEVICE_QUERY) }),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/timeseries",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/keys/timeseries", body: None },
    ),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/values/timeseries",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/values/timeseries", body: None },
    ),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/values/timeseries/history",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/values/timeseries/history?keys=temperature&startTs=0&endTs=9999999999999", body: None },
    ),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/attributes",
        Owned { call: "/api/plugins/telemetry/ASSET/{ASSET}/keys/attributes", body: None },
    ),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/keys/attributes/{scope}",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/keys/attributes/SERVER_SCOPE", body: None },
    ),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/values/attributes",
        Owned { call: "/api/plugins/telemetry/CUSTOMER/{CUST}/values/attributes", body: None },
    ),
    (
        "GET",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/values/attributes/{scope}",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/values/attributes/SERVER_SCOPE", body: None },
    ),
    (
        "POST",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/attributes/{scope}",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/attributes/SHARED_SCOPE", body: Some(r#"{"setpoint": 21}"#) },
    ),
    (
        "POST",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/{scope}",
        Owned { call: "/api/plugins/telemetry/ASSET/{ASSET}/timeseries/ANY", body: Some(r#"{"level": 3}"#) },
    ),
    (
        "POST",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/{scope}/{ttl}",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/timeseries/ANY/60", body: Some(r#"{"level": 4}"#) },
    ),
    (
        "DELETE",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/delete",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/timeseries/delete?keys=level&deleteAllDataForKeys=true", body: None },
    ),
    (
        "POST",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/{scope}",
        Owned { call: "/api/plugins/telemetry/CUSTOMER/{CUST}/SERVER_SCOPE", body: Some(r#"{"plan": "gold"}"#) },
    ),
    (
        "DELETE",
        "/api/plugins/telemetry/{entity_type}/{entity_id}/{scope}",
        Owned { call: "/api/plugins/telemetry/DEVICE/{DEV}/SHARED_SCOPE?keys=setpoint", body: None },
    ),
    ("POST", "/api/plugins/telemetry/{entity_type}/{entity_id}", Owned { call: "/api/plugins/telemetry/{DEV}/SHARED_SCOPE", body: Some(r#"{"mode": "eco"}"#) }),
    ("DELETE", "/api/plugins/telemetry/{entity_type}/{entity_id}", Owned { call: "/api/plugins/telemetry/{DEV}/SHARED_SCOPE?keys=mode", body: None }),
];

/// The customer, device and asset of one side.
#[derive(Clone)]
struct Owned3 {
    customer: String,
    device: String,
    asset: String,
    /// A customer user of the customer.
    user: String,
}

impl Owned3 {
    fn fill(&self, path: &str) -> String {
        path.replace("{DEV}", &self.device)
            .replace("{ASSET}", &self.asset)
            .replace("{CUST}", &self.customer)
            .replace("{USER}", &self.user)
    }
}

/// A customer with one device and one asset of its own, each with a value stored.
fn customer_with_entities(server: &Server, name: &str) -> Owned3 {
    let customer = id_of(&server.api("POST", "/api/customer", Some(json!({"title": format!("Customer {name}")}))));
    let device = id_of(&server.api("POST", "/api/device", Some(json!({"name": format!("meter-{name}"), "type": "meter"}))));
    let asset = id_of(&server.api("POST", "/api/asset", Some(json!({"name": format!("site-{name}"), "type": "site"}))));
    server.api("POST", &format!("/api/customer/{customer}/device/{device}"), None);
    server.api("POST", &format!("/api/customer/{customer}/asset/{asset}"), None);
    server.api(
        "POST",
        &format!("/api/plugins/telemetry/DEVICE/{device}/timeseries/ANY"),
        Some(json!({"temperature": 20, format!("only_{name}"): 1})),
    );
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{device}/attributes/SERVER_SCOPE"), Some(json!({"floor": 2})));
    server.api("POST", &format!("/api/plugins/telemetry/ASSET/{asset}/attributes/SERVER_SCOPE"), Some(json!({"area": 5})));
    Owned3 { customer, device, asset, user: String::new() }
}

const CUSTOMER_PASSWORD: &str = "Customer-pass-1234";

/// A customer user of `customer`, created, activated through its link and logged in, as a
/// tenant administrator invites one: returns its id and access token.
fn customer_user(server: &Server, customer: &str, email: &str) -> (String, String) {
    let user = server.api(
        "POST",
        "/api/user?sendActivationMail=false",
        Some(json!({"email": email, "authority": "CUSTOMER_USER", "customerId": {"entityType": "CUSTOMER", "id": customer}})),
    );
    let link = server.api("GET", &format!("/api/user/{}/activationLink", id_of(&user)), None);
    let link = link.as_str().unwrap_or_else(|| panic!("activation link: {link}"));
    let token = link.split("activateToken=").nth(1).unwrap_or_else(|| panic!("no token in {link}"));
    let (status, pair) = server.request(
        "POST",
        "/api/noauth/activate?sendActivationMail=false",
        Some(json!({"activateToken": token, "password": CUSTOMER_PASSWORD})),
        None,
    );
    assert_eq!(status, 200, "activation: {pair}");
    (id_of(&user), login(server, email))
}

fn login(server: &Server, email: &str) -> String {
    let (status, pair) =
        server.request("POST", "/api/auth/login", Some(json!({"username": email, "password": CUSTOMER_PASSWORD})), None);
    assert_eq!(status, 200, "login of {email}: {pair}");
    pair["token"].as_str().unwrap().to_string()
}

/// Every `{entityType: DEVICE|ASSET|CUSTOMER|USER, id}` in an answer.
fn entity_ids(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let (Some(Value::String(kind)), Some(Value::String(id))) = (map.get("entityType"), map.get("id"))
                && matches!(kind.as_str(), "DEVICE" | "ASSET" | "CUSTOMER" | "USER")
                && id != "13814000-1dd2-11b2-8080-808080808080"
            {
                out.insert(id.clone());
            }
            map.values().for_each(|v| entity_ids(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| entity_ids(v, out)),
        _ => {}
    }
}

/// The route table as the binary prints it: `METHOD PATH RULE` per line.
fn routes() -> Vec<(String, String, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coapgate")).arg("routes").output().expect("coapgate routes");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "a route line: {line}");
            (parts[0].to_string(), parts[1].to_string(), parts[2].to_string())
        })
        .collect()
}

#[test]
fn every_route_has_a_decision_and_customer_users_reach_only_their_own() {
    let table = routes();
    let expectations: HashMap<(&str, &str), Expect> = EXPECTATIONS.iter().map(|(m, p, e)| ((*m, *p), *e)).collect();
    let missing: Vec<String> = table
        .iter()
        .filter(|(m, p, _)| !expectations.contains_key(&(m.as_str(), p.as_str())))
        .map(|(m, p, r)| format!("{m} {p} ({r})"))
        .collect();
    assert!(missing.is_empty(), "routes without a row in EXPECTATIONS (decide what a customer user gets):\n{}", missing.join("\n"));
    let stale: Vec<String> = EXPECTATIONS
        .iter()
        .filter(|(m, p, _)| !table.iter().any(|(tm, tp, _)| tm == m && tp == p))
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert!(stale.is_empty(), "rows for routes that do not exist: {stale:?}");
    // The rule the server applies agrees with the row: refused rows are the tenant-admin ones.
    for (m, p, rule) in &table {
        let refused = matches!(expectations[&(m.as_str(), p.as_str())], Refused);
        assert_eq!(refused, rule == "tenant-admin", "{m} {p}: rule {rule} but the row says {:?}", expectations[&(m.as_str(), p.as_str())]);
    }

    let server = Server::start();
    let mut mine = customer_with_entities(&server, "A");
    let mut theirs = customer_with_entities(&server, "B");
    // The tenant's own device, assigned to nobody.
    let tenant_device = id_of(&server.api("POST", "/api/device", Some(json!({"name": "meter-T", "type": "meter"}))));
    let (alice, token) = customer_user(&server, &mine.customer, "alice@customer-a.example");
    // A colleague of the same customer, and a user of the other one.
    mine.user = customer_user(&server, &mine.customer, "dave@customer-a.example").0;
    theirs.user = customer_user(&server, &theirs.customer, "carol@customer-b.example").0;
    let call = |method: &str, path: &str, body: Option<&str>| {
        server.request(method, path, body.map(|b| serde_json::from_str(b).unwrap()), Some(&token))
    };
    let own_ids: BTreeSet<String> =
        [&mine.customer, &mine.device, &mine.asset, &mine.user, &alice].into_iter().cloned().collect();

    for (method, route, expect) in EXPECTATIONS {
        match *expect {
            Refused => {
                // Any ids will do: the rule answers before the handler reads them.
                let path = route
                    .replace("{entity_type}", "DEVICE")
                    .replace("{scope}", "SERVER_SCOPE")
                    .split('/')
                    .map(|seg| if seg.starts_with('{') { mine.device.as_str() } else { seg })
                    .collect::<Vec<_>>()
                    .join("/");
                let (status, body) = call(method, &path, Some("{}"));
                assert_eq!((status, body["errorCode"].as_u64()), (403, Some(20)), "{method} {path}: {body}");
                assert_eq!(body["message"], "You don't have permission to perform this operation!");
            }
            Owned { call: template, body } => {
                let (status, answer) = call(method, &mine.fill(template), body);
                assert!((200..300).contains(&status), "{method} {} (own) -> {status}: {answer}", mine.fill(template));
                let (status, answer) = call(method, &theirs.fill(template), body);
                assert_eq!(status, 403, "{method} {} (another customer's) -> {status}: {answer}", theirs.fill(template));
                if template.contains("{DEV}") {
                    let tenant_path = template.replace("{DEV}", &tenant_device);
                    let (status, answer) = call(method, &tenant_path, body);
                    assert_eq!(status, 403, "{method} {tenant_path} (the tenant's) -> {status}: {answer}");
                }
            }
            Listed { call: path, body } => {
                let (status, answer) = call(method, path, body);
                assert!((200..300).contains(&status), "{method} {path} -> {status}: {answer}");
                let mut seen = BTreeSet::new();
                entity_ids(&answer, &mut seen);
                if path.contains("user") {
                    assert!(seen.contains(&alice) && seen.contains(&mine.user), "{method} {path}: {answer}");
                } else if path.contains("/keys") {
                    // Keys of the user's device only: not the other customer's "area" or the
                    // tenant device's (it has none), but the own device's.
                    let keys = answer["timeseries"].as_array().unwrap();
                    assert!(keys.contains(&json!("only_A")) && !keys.contains(&json!("only_B")), "{answer}");
                } else {
                    assert!(seen.contains(&mine.device), "{method} {path}: own device missing: {answer}");
                }
                assert!(seen.is_subset(&own_ids), "{method} {path}: another customer's entity in {answer}");
            }
            Open { call: path } => {
                let body = (*method == "POST").then_some(DEVICE_QUERY);
                let (status, answer) = call(method, path, body);
                assert!((200..300).contains(&status), "{method} {path} -> {status}: {answer}");
                let mut seen = BTreeSet::new();
                entity_ids(&answer, &mut seen);
                assert!(seen.is_subset(&own_ids), "{method} {path}: another customer's entity in {answer}");
            }
            UserSave => {
                let create = r#"{"email": "eve@customer-a.example", "authority": "CUSTOMER_USER"}"#;
                assert_eq!(call(method, route, Some(create)).0, 403, "a customer user creates a user");
                let (_, colleague) = call("GET", &format!("/api/user/{}", mine.user), None);
                let mut edited = colleague.clone();
                edited["firstName"] = json!("Renamed");
                let (status, answer) =
                    server.request(method, route, Some(edited), Some(&token));
                assert_eq!(status, 403, "a customer user changes a colleague: {answer}");
                let (_, me) = call("GET", &format!("/api/user/{alice}"), None);
                let mut edited = me.clone();
                edited["firstName"] = json!("Alice");
                let (status, answer) = server.request(method, route, Some(edited), Some(&token));
                assert_eq!((status, answer["firstName"].clone()), (200, json!("Alice")), "a customer user changes itself: {answer}");
                let (_, other) = server.request("GET", &format!("/api/user/{}", theirs.user), None, Some(&server.token()));
                let (status, _) = server.request(method, route, Some(other), Some(&token));
                assert_eq!(status, 403, "a customer user changes another customer's user");
            }
            OwnAccount => {}
        }
    }

    // Counts and customer queries are the user's too.
    let (_, count) = call("POST", "/api/entitiesQuery/count", Some(DEVICE_QUERY));
    assert_eq!(count, json!(1), "devices a customer user counts");
    let (_, customers) = call("POST", "/api/entitiesQuery/find", Some(CUSTOMER_QUERY));
    assert_eq!(customers["totalElements"], 1, "{customers}");
    assert_eq!(customers["data"][0]["entityId"]["id"], json!(mine.customer));
    let (_, me) = call("GET", "/api/auth/user", None);
    assert_eq!(me["authority"], "CUSTOMER_USER");
    assert_eq!(me["customerId"]["id"], json!(mine.customer), "{me}");
    // The user's own account: a wrong current password is the password check's 400 (the route is
    // reachable), and logout ends that session only.
    let (status, answer) = call(
        "POST",
        "/api/auth/changePassword",
        Some(r#"{"currentPassword": "not-it", "newPassword": "Another-pass-5678"}"#),
    );
    assert_eq!(status, 400, "{answer}");
    let second = login(&server, "alice@customer-a.example");
    assert_eq!(server.request("POST", "/api/auth/logout", None, Some(&second)).0, 200);
    assert_eq!(server.request("GET", "/api/auth/user", None, Some(&second)).0, 401);
    assert_eq!(call("GET", "/api/auth/user", None).0, 200, "the first session is still live");

    // A tenant administrator still reaches everything.
    let all = server.api("POST", "/api/entitiesQuery/count", Some(serde_json::from_str(DEVICE_QUERY).unwrap()));
    assert_eq!(all, json!(3));
}


#[test]
fn a_customer_users_websocket_reaches_only_its_customers_devices() {
    let server = Server::start();
    let mine = customer_with_entities(&server, "A");
    let theirs = customer_with_entities(&server, "B");
    let (_, token) = customer_user(&server, &mine.customer, "bob@customer-a.example");
    let url = server.http.replacen("http://", "ws://", 1) + "/api/ws";
    let (mut ws, _) = tungstenite::connect(url).expect("WebSocket handshake");
    let subscribe = |cmd_id: u32, device: &str| {
        json!({"authCmd": {"cmdId": 0, "token": token},
               "cmds": [{"type": "TIMESERIES", "entityType": "DEVICE", "entityId": device, "scope": "LATEST_TELEMETRY", "cmdId": cmd_id}]})
    };
    // Another customer's device: refused as ThingsBoard refuses it (an error update, no data).
    ws.send(Message::text(subscribe(1, &theirs.device).to_string())).unwrap();
    let refused = ws_next(&mut ws, Duration::from_secs(10)).expect("an answer to the refused subscription");
    assert_eq!(refused["subscriptionId"], 1);
    assert_ne!(refused["errorCode"], 0, "{refused}");
    assert!(refused["data"].as_object().is_none_or(|d| d.is_empty()), "{refused}");
    // Its own: the current value, then a new one written by the tenant administrator.
    ws.send(Message::text(json!({"cmds": [{"type": "TIMESERIES", "entityType": "DEVICE", "entityId": mine.device, "scope": "LATEST_TELEMETRY", "cmdId": 2}]}).to_string()))
        .unwrap();
    let first = ws_next(&mut ws, Duration::from_secs(10)).expect("the own device's values");
    assert_eq!((first["subscriptionId"].clone(), first["errorCode"].clone()), (json!(2), json!(0)), "{first}");
    assert!(first["data"]["temperature"].is_array(), "{first}");
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{}/timeseries/ANY", theirs.device), Some(json!({"temperature": 99})));
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{}/timeseries/ANY", mine.device), Some(json!({"temperature": 23})));
    let update = ws_next(&mut ws, Duration::from_secs(10)).expect("an update for the own device");
    assert_eq!(update["subscriptionId"], 2, "{update}");
    assert_eq!(update["data"]["temperature"][0][1], "23", "{update}");
    // An entity data query of all devices pages only the customer's.
    let query: Value = serde_json::from_str(DEVICE_QUERY).unwrap();
    ws.send(Message::text(json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 3, "query": query, "latestCmd": {"keys": [{"type": "TIME_SERIES", "key": "temperature"}]}}]}).to_string()))
        .unwrap();
    let page = loop {
        let message = ws_next(&mut ws, Duration::from_secs(10)).expect("the entity data page");
        if message["cmdId"] == 3 {
            break message;
        }
    };
    let ids: Vec<&Value> = page["data"]["data"].as_array().unwrap().iter().map(|row| &row["entityId"]["id"]).collect();
    assert_eq!(ids, vec![&json!(mine.device)], "{page}");
}
