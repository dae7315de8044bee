//! The REST API against ThingsBoard's contract: auth, validation errors, 404s, paging, entity
//! lifecycles and the telemetry controller, through the real binary.

mod common;

use std::time::Duration;

use base64::Engine as _;
use coapgate_coap::message::Code;
use common::*;
use serde_json::{Value, json};

/// A request with a raw (possibly non-JSON) body and the admin's token.
fn raw(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let response = ureq::request(method, &format!("{}{path}", server.http))
        .timeout(Duration::from_secs(30))
        .set("X-Authorization", &format!("Bearer {}", server.token()))
        .set("Content-Type", "application/json")
        .send_string(body);
    let response = match response {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Asserts ThingsBoard's error JSON with the given status and error code; returns the message.
fn assert_tb_error(what: &str, status: u16, body: &Value, expected_status: u16, expected_code: u64) -> String {
    assert_eq!(status, expected_status, "{what}: {body}");
    assert_eq!(body["status"], expected_status, "{what}: `status` field: {body}");
    assert_eq!(body["errorCode"], expected_code, "{what}: `errorCode` field: {body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("{what}: no `message`: {body}"));
    assert!(!message.trim().is_empty(), "{what}: empty message");
    message.to_string()
}

fn id_of(entity: &Value) -> &str {
    entity["id"]["id"].as_str().unwrap()
}

/// Sends one uplink as CON POST and requires 2.01 Created.
fn uplink(server: &Server, integration: &Value, payload: &str) {
    let code = CoapClient::new(server.coap).post(&endpoint_path(integration), payload.as_bytes());
    assert_eq!(code, Code::CREATED, "uplink {payload:?}");
}

fn jwt_claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn auth_tokens_and_errors() {
    let server = Server::start();

    // No token, a malformed one, a wrong scheme: 401 in ThingsBoard's JSON.
    let (status, body) = server.request("GET", "/api/converters?pageSize=10&page=0", None, None);
    assert_tb_error("no token", status, &body, 401, 10);
    for bad in ["abc", "a.b.c", "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln"] {
        let (status, body) = server.request("GET", "/api/auth/user", None, Some(bad));
        assert_tb_error(&format!("token {bad:?}"), status, &body, 401, 10);
    }

    // Wrong password, unknown user.
    for (user, password) in [(ADMIN_USER, "wrong-password"), ("nobody@example.com", ADMIN_PASSWORD)] {
        let (status, body) =
            server.request("POST", "/api/auth/login", Some(json!({"username": user, "password": password})), None);
        assert_tb_error(&format!("login {user}/{password}"), status, &body, 401, 10);
    }

    let (status, pair) = server.request(
        "POST",
        "/api/auth/login",
        Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})),
        None,
    );
    assert_eq!(status, 200, "{pair}");
    let token = pair["token"].as_str().unwrap().to_string();
    let refresh = pair["refreshToken"].as_str().unwrap().to_string();

    // The access token is a JWT that tb-rest-client can read: `exp` in seconds, 2.5 h ahead.
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], ADMIN_USER, "{claims}");
    let exp = claims["exp"].as_i64().unwrap_or_else(|| panic!("exp is not an integer: {claims}"));
    let ahead = exp - now_secs();
    assert!((8_940..=9_060).contains(&ahead), "exp is {ahead} s ahead, expected ~9000: {claims}");

    let (status, user) = server.request("GET", "/api/auth/user", None, Some(&token));
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email"], ADMIN_USER);
    assert_eq!(user["authority"], "TENANT_ADMIN");

    // A refresh token is not an access token.
    let (status, body) = server.request("GET", "/api/auth/user", None, Some(&refresh));
    assert_tb_error("refresh token as access token", status, &body, 401, 10);
    // And an access token is not a refresh token.
    let (status, body) = server.request("POST", "/api/auth/token", Some(json!({"refreshToken": token})), None);
    assert_eq!(status, 401, "access token used to refresh: {body}");

    // Refreshing gives a new working pair.
    let (status, new_pair) = server.request("POST", "/api/auth/token", Some(json!({"refreshToken": refresh})), None);
    assert_eq!(status, 200, "{new_pair}");
    let new_token = new_pair["token"].as_str().expect("token");
    assert!(new_pair["refreshToken"].as_str().is_some_and(|t| !t.is_empty()), "{new_pair}");
    let (status, user) = server.request("GET", "/api/auth/user", None, Some(new_token));
    assert_eq!((status, user["email"].as_str()), (200, Some(ADMIN_USER)));
    let (status, body) = server.request("GET", "/api/converters?pageSize=10&page=0", None, Some(new_token));
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        server.request("POST", "/api/auth/token", Some(json!({"refreshToken": new_pair["refreshToken"]})), None);
    assert_eq!(status, 200, "the refreshed refresh token works too: {body}");
}

#[test]
fn invalid_bodies_are_400_naming_the_field() {
    let server = Server::start();
    let converter = server.create_converter("valid", "return null;");
    let cid = converter["id"].clone();
    let base_url = format!("coap://127.0.0.1:{}", server.coap.port());
    let integration = |extra: Value| {
        let mut body = json!({"name": "i", "type": "COAP", "defaultConverterId": cid,
            "configuration": {"clientConfiguration": {"baseUrl": base_url, "securityMode": "NO_SECURE"}, "metadata": {}}});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    b.insert(k, v);
                }
            }
        }
        body.to_string()
    };
    let converter_body = |name: Value, ty: &str, lang: &str, decoder: &str| {
        let mut body = json!({"type": ty, "integrationType": "COAP",
            "configuration": {"scriptLang": lang, "decoder": decoder}});
        if !name.is_null() {
            body["name"] = name;
        }
        body.to_string()
    };
    let long_decoder = format!("//{}", "x".repeat(50_000 - 1));
    let unknown = uuid::Uuid::new_v4();

    // (what, path, body, text the message must contain)
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("not JSON", "/api/converter", "{name: oops".into(), "body"),
        ("JSON array", "/api/converter", "[1, 2]".into(), "object"),
        ("not JSON (integration)", "/api/integration", "hello".into(), "body"),
        (
            "converter without name",
            "/api/converter",
            converter_body(Value::Null, "UPLINK", "JS", "return {};"),
            "Converter name should be specified!",
        ),
        (
            "converter with blank name",
            "/api/converter",
            converter_body(json!("  "), "UPLINK", "JS", "return {};"),
            "Converter name should be specified!",
        ),
        ("converter type FOO", "/api/converter", converter_body(json!("c"), "FOO", "JS", "return {};"), "type"),
        (
            "scriptLang PY",
            "/api/converter",
            converter_body(json!("c"), "UPLINK", "PY", "return {};"),
            "configuration.scriptLang",
        ),
        (
            "decoder over 50,000 chars",
            "/api/converter",
            converter_body(json!("c"), "UPLINK", "JS", &long_decoder),
            "configuration.decoder",
        ),
        (
            "integration without defaultConverterId",
            "/api/integration",
            integration(json!({"defaultConverterId": null})),
            "converter",
        ),
        (
            "unknown defaultConverterId",
            "/api/integration",
            integration(json!({"defaultConverterId": {"entityType": "CONVERTER", "id": unknown}})),
            "defaultConverterId",
        ),
        (
            "defaultConverterId not a UUID",
            "/api/integration",
            integration(json!({"defaultConverterId": {"entityType": "CONVERTER", "id": "nope"}})),
            "defaultConverterId",
        ),
        (
            "securityMode DTLS without DTLS endpoint",
            "/api/integration",
            integration(
                json!({"configuration": {"clientConfiguration": {"baseUrl": base_url, "securityMode": "DTLS"}}}),
            ),
            "securityMode",
        ),
        (
            "securityMode MIXED without DTLS endpoint",
            "/api/integration",
            integration(
                json!({"configuration": {"clientConfiguration": {"baseUrl": base_url, "securityMode": "MIXED"}}}),
            ),
            "securityMode",
        ),
        (
            "securityMode BOGUS",
            "/api/integration",
            integration(
                json!({"configuration": {"clientConfiguration": {"baseUrl": base_url, "securityMode": "BOGUS"}}}),
            ),
            "securityMode",
        ),
        ("integration type MQTT", "/api/integration", integration(json!({"type": "MQTT"})), "type"),
        (
            "coapEndpoint not ending in /i/<routingKey>",
            "/api/integration",
            integration(
                json!({"routingKey": "rk-1", "configuration": {"clientConfiguration": {"baseUrl": base_url, "coapEndpoint": format!("{base_url}/i/other")}}}),
            ),
            "coapEndpoint",
        ),
        ("enabled not a boolean", "/api/integration", integration(json!({"enabled": "yes"})), "enabled"),
        ("routingKey with a slash", "/api/integration", integration(json!({"routingKey": "a/b"})), "routingKey"),
        (
            "baseUrl not coap://",
            "/api/integration",
            integration(json!({"configuration": {"clientConfiguration": {"baseUrl": "http://127.0.0.1"}}})),
            "baseUrl",
        ),
        ("integration without name", "/api/integration", integration(json!({"name": null})), "name"),
        ("login without password", "/api/auth/login", json!({"username": ADMIN_USER}).to_string(), "password"),
    ];
    for (what, path, body, needle) in &cases {
        let (status, response) = raw(&server, "POST", path, body);
        let message = assert_tb_error(what, status, &response, 400, 31);
        assert!(message.contains(needle), "{what}: message {message:?} should mention {needle:?}");
    }

    // Nothing was created by the refused requests.
    let converters = server.api("GET", "/api/converters?pageSize=100&page=0", None);
    assert_eq!(converters["totalElements"], 1, "{converters}");
    let integrations = server.api("GET", "/api/integrations?pageSize=100&page=0", None);
    assert_eq!(integrations["totalElements"], 0, "{integrations}");

    // The limit itself is allowed.
    let at_limit = format!("//{}", "x".repeat(50_000 - 2));
    let (status, body) =
        raw(&server, "POST", "/api/converter", &converter_body(json!("at limit"), "UPLINK", "JS", &at_limit));
    assert_eq!(status, 200, "a decoder of exactly 50,000 chars: {body}");
}

#[test]
fn unknown_ids_are_404_and_bad_ids_400() {
    let server = Server::start();
    let unknown = uuid::Uuid::new_v4();
    let cases = [
        ("GET", format!("/api/converter/{unknown}")),
        ("DELETE", format!("/api/converter/{unknown}")),
        ("GET", format!("/api/integration/{unknown}")),
        ("DELETE", format!("/api/integration/{unknown}")),
        ("GET", "/api/integration/routingKey/no-such-key".to_string()),
        ("GET", format!("/api/device/{unknown}")),
        ("DELETE", format!("/api/device/{unknown}")),
        ("GET", format!("/api/deviceProfile/{unknown}")),
        ("GET", "/api/tenant/devices?deviceName=no-such-device".to_string()),
        ("GET", "/api/tenant/device?deviceName=no-such-device".to_string()),
        ("GET", format!("/api/plugins/telemetry/DEVICE/{unknown}/values/timeseries")),
        ("GET", format!("/api/plugins/telemetry/DEVICE/{unknown}/keys/timeseries")),
        ("GET", format!("/api/plugins/telemetry/DEVICE/{unknown}/values/timeseries?keys=t&startTs=0&endTs=10")),
        ("GET", format!("/api/plugins/telemetry/DEVICE/{unknown}/values/attributes/CLIENT_SCOPE")),
    ];
    for (method, path) in &cases {
        let (status, body) = server.request(method, path, None, Some(&server.token()));
        assert_tb_error(&format!("{method} {path}"), status, &body, 404, 32);
        assert_eq!(body["message"], "Requested item wasn't found!", "{method} {path}");
    }
    for (method, path) in [
        ("GET", "/api/converter/not-a-uuid"),
        ("DELETE", "/api/converter/not-a-uuid"),
        ("GET", "/api/integration/12345"),
        ("GET", "/api/device/xyz"),
        ("DELETE", "/api/device/xyz"),
        ("GET", "/api/deviceProfile/xyz"),
        ("GET", "/api/plugins/telemetry/DEVICE/xyz/values/timeseries"),
    ] {
        let (status, body) = server.request(method, path, None, Some(&server.token()));
        assert_tb_error(&format!("{method} {path}"), status, &body, 400, 31);
    }
}

/// SPEC §7: "GET /api/device/{id}, DELETE /api/device/{id}; likewise … device profiles".
#[test]
fn device_profile_delete_unknown_is_404() {
    let server = Server::start();
    let (status, body) =
        server.request("DELETE", &format!("/api/deviceProfile/{}", uuid::Uuid::new_v4()), None, Some(&server.token()));
    assert_tb_error("DELETE deviceProfile", status, &body, 404, 32);
}

#[test]
fn integrations_lifecycle_and_paging() {
    let server = Server::start();
    let converter = server.create_converter("conv", "return null;");
    let base_url = format!("coap://127.0.0.1:{}", server.coap.port());
    let names = ["Alpha Sensor", "beta SENSOR", "Gamma"];
    let created: Vec<Value> = names.iter().map(|n| server.create_integration(n, &converter, json!({}))).collect();

    for integration in &created {
        let key = integration["routingKey"].as_str().expect("routingKey generated");
        let parsed = uuid::Uuid::parse_str(key).unwrap_or_else(|_| panic!("routingKey {key} is not a UUID"));
        assert_eq!(parsed.get_version_num(), 4, "routingKey {key} is not a v4 UUID");
        assert_eq!(integration["secret"].as_str().map(str::len), Some(20), "{integration}");
        assert_eq!(
            integration["configuration"]["clientConfiguration"]["coapEndpoint"],
            format!("{base_url}/i/{key}"),
            "{integration}"
        );
        assert_eq!(integration["type"], "COAP");
        assert_eq!(integration["defaultConverterId"]["id"], converter["id"]["id"]);
        let found = server.api("GET", &format!("/api/integration/routingKey/{key}"), None);
        assert_eq!(found["id"], integration["id"]);
        let by_id = server.api("GET", &format!("/api/integration/{}", id_of(integration)), None);
        assert_eq!(by_id["name"], integration["name"]);
    }
    let keys: std::collections::HashSet<_> = created.iter().map(|i| i["routingKey"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 3, "routing keys are distinct");

    // Paging: one per page over three pages.
    let mut seen = std::collections::HashSet::new();
    for page in 0..3 {
        let body = server.api("GET", &format!("/api/integrations?pageSize=1&page={page}"), None);
        assert_eq!(body["totalPages"], 3, "page {page}: {body}");
        assert_eq!(body["totalElements"], 3, "page {page}: {body}");
        assert_eq!(body["hasNext"], page < 2, "page {page}: {body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "page {page}: {body}");
        seen.insert(data[0]["id"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 3, "every integration on exactly one page");
    let beyond = server.api("GET", "/api/integrations?pageSize=1&page=3", None);
    assert_eq!((beyond["data"].as_array().map(Vec::len), &beyond["hasNext"]), (Some(0), &json!(false)), "{beyond}");

    // textSearch: case-insensitive substring of the name.
    for (search, expected) in [("sensor", 2), ("SENSOR", 2), ("alp", 1), ("amm", 1), ("nothing", 0)] {
        let body = server.api("GET", &format!("/api/integrations?pageSize=10&page=0&textSearch={search}"), None);
        assert_eq!(body["totalElements"], expected, "textSearch={search}: {body}");
        assert_eq!(body["data"].as_array().unwrap().len(), expected, "textSearch={search}");
        for item in body["data"].as_array().unwrap() {
            assert!(item["name"].as_str().unwrap().to_lowercase().contains(&search.to_lowercase()));
        }
    }

    // integrationInfos: the list without secrets.
    let infos = server.api("GET", "/api/integrationInfos?pageSize=10&page=0", None);
    assert_eq!(infos["totalElements"], 3, "{infos}");
    for info in infos["data"].as_array().unwrap() {
        assert!(info.get("secret").is_none(), "integrationInfos leaks the secret: {info}");
        assert!(info["name"].is_string() && info["id"]["id"].is_string(), "{info}");
    }
    assert!(!infos.to_string().contains(created[0]["secret"].as_str().unwrap()), "secret in integrationInfos");

    // Update as tb-rest-client does (the whole entity back), then a partial one without the key.
    let original = &created[0];
    let mut edited = server.api("GET", &format!("/api/integration/{}", id_of(original)), None);
    edited["name"] = json!("Alpha Renamed");
    let updated = server.api("POST", "/api/integration", Some(edited));
    assert_eq!(updated["name"], "Alpha Renamed");
    assert_eq!(updated["id"], original["id"]);
    assert_eq!(updated["createdTime"], original["createdTime"]);
    assert_eq!(updated["routingKey"], original["routingKey"]);
    assert_eq!(updated["secret"], original["secret"]);
    assert_eq!(updated["version"].as_i64(), original["version"].as_i64().map(|v| v + 1), "version bumped: {updated}");
    let partial = server.api(
        "POST",
        "/api/integration",
        Some(
            json!({"id": original["id"], "name": "Alpha Again", "type": "COAP", "defaultConverterId": converter["id"],
                    "configuration": {"clientConfiguration": {"baseUrl": base_url}}}),
        ),
    );
    assert_eq!(partial["routingKey"], original["routingKey"], "an update without routingKey keeps it");
    assert_eq!(partial["secret"], original["secret"], "an update without secret keeps it");
    assert_eq!(partial["createdTime"], original["createdTime"]);
    assert_eq!(partial["version"].as_i64(), updated["version"].as_i64().map(|v| v + 1));
    let listed = server.api("GET", "/api/integrations?pageSize=10&page=0", None);
    assert_eq!(listed["totalElements"], 3, "an update does not add an integration: {listed}");

    // Updating an unknown id is not a create.
    let (status, body) = server.request(
        "POST",
        "/api/integration",
        Some(json!({"id": {"entityType": "INTEGRATION", "id": uuid::Uuid::new_v4()}, "name": "ghost", "type": "COAP",
                    "defaultConverterId": converter["id"]})),
        Some(&server.token()),
    );
    assert_eq!(status, 404, "update of an unknown integration: {body}");

    // Explicit routing keys are unique.
    let first = server.create_integration("keyed 1", &converter, json!({"routingKey": "my-fixed-key"}));
    assert_eq!(first["routingKey"], "my-fixed-key");
    assert!(
        first["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().ends_with("/i/my-fixed-key")
    );
    let (status, body) = server.request(
        "POST",
        "/api/integration",
        Some(json!({"name": "keyed 2", "type": "COAP", "routingKey": "my-fixed-key", "defaultConverterId": converter["id"],
                    "configuration": {"clientConfiguration": {"baseUrl": base_url}}})),
        Some(&server.token()),
    );
    assert_tb_error("duplicate routingKey", status, &body, 400, 31);
    // ... also when an existing integration is edited onto another's key.
    let mut stealing = server.api("GET", &format!("/api/integration/{}", id_of(&created[1])), None);
    stealing["routingKey"] = json!("my-fixed-key");
    stealing["configuration"]["clientConfiguration"]["coapEndpoint"] = Value::Null;
    let (status, body) = server.request("POST", "/api/integration", Some(stealing), Some(&server.token()));
    assert_tb_error("routingKey taken by another integration", status, &body, 400, 31);

    // Edits take effect at once on the CoAP side: disable, enable, new routing key, delete.
    let live =
        server.create_integration("live", &server.create_converter("live", "return {deviceName: 'L'};"), json!({}));
    let mut client = CoapClient::new(server.coap);
    assert_eq!(client.post(&endpoint_path(&live), b"1"), Code::CREATED);
    let mut edit = server.api("GET", &format!("/api/integration/{}", id_of(&live)), None);
    edit["enabled"] = json!(false);
    let disabled = server.api("POST", "/api/integration", Some(edit.clone()));
    assert_eq!(client.post(&endpoint_path(&disabled), b"2"), Code::NOT_FOUND, "disabled integration");
    edit["enabled"] = json!(true);
    edit["routingKey"] = json!("renamed-key");
    edit["configuration"]["clientConfiguration"]["coapEndpoint"] = Value::Null;
    let rekeyed = server.api("POST", "/api/integration", Some(edit));
    assert!(
        rekeyed["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().ends_with("/i/renamed-key"),
        "{rekeyed}"
    );
    assert_eq!(client.post(&endpoint_path(&live), b"3"), Code::NOT_FOUND, "old routing key");
    assert_eq!(client.post(&endpoint_path(&rekeyed), b"4"), Code::CREATED, "new routing key");
    server.api("DELETE", &format!("/api/integration/{}", id_of(&live)), None);
    assert_eq!(client.post(&endpoint_path(&rekeyed), b"5"), Code::NOT_FOUND, "deleted integration");

    // A path prefix is part of the endpoint devices use.
    let prefixed = server.create_integration(
        "prefixed",
        &converter,
        json!({"configuration": {"clientConfiguration": {"baseUrl": base_url, "path": "/my/path/"}, "metadata": {}}}),
    );
    let key = prefixed["routingKey"].as_str().unwrap();
    assert_eq!(prefixed["configuration"]["clientConfiguration"]["coapEndpoint"], format!("{base_url}/my/path/i/{key}"));
    assert_eq!(client.post(&endpoint_path(&prefixed), b"6"), Code::CREATED, "prefixed endpoint");
    server.api("DELETE", &format!("/api/integration/{}", id_of(&prefixed)), None);

    // Delete, then it is gone everywhere.
    server.api("DELETE", &format!("/api/integration/{}", id_of(&first)), None);
    let (status, body) =
        server.request("GET", &format!("/api/integration/{}", id_of(&first)), None, Some(&server.token()));
    assert_tb_error("GET deleted integration", status, &body, 404, 32);
    let (status, _) = server.request("GET", "/api/integration/routingKey/my-fixed-key", None, Some(&server.token()));
    assert_eq!(status, 404);
    let (status, body) =
        server.request("DELETE", &format!("/api/integration/{}", id_of(&first)), None, Some(&server.token()));
    assert_tb_error("DELETE twice", status, &body, 404, 32);
}

#[test]
fn converters_lifecycle_and_live_decoder_update() {
    let server = Server::start();
    let a = server.create_converter("Conv A", "return {deviceName: 'U1', telemetry: {a: decodeToString(payload)}};");
    assert_eq!(a["type"], "UPLINK");
    assert_eq!(a["configuration"]["scriptLang"], "JS");
    assert!(a["createdTime"].as_i64().unwrap() > 0);
    let got = server.api("GET", &format!("/api/converter/{}", id_of(&a)), None);
    assert_eq!(got["name"], "Conv A");
    assert_eq!(got["configuration"]["decoder"], a["configuration"]["decoder"]);
    // A configuration comes back with its keys in the order they were saved (as ThingsBoard's
    // Jackson keeps them), not sorted: the console and exports show what the user wrote.
    let ordered = server.api(
        "POST",
        "/api/converter",
        Some(json!({"name": "Ordered", "type": "UPLINK", "integrationType": "COAP",
                    "configuration": {"scriptLang": "JS", "decoder": "return null;", "updateOnlyKeys": ["b", "a"], "encoder": null}})),
    );
    let got = server.api("GET", &format!("/api/converter/{}", id_of(&ordered)), None);
    let keys: Vec<&str> = got["configuration"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["scriptLang", "decoder", "updateOnlyKeys", "encoder"], "{got}");
    server.api("DELETE", &format!("/api/converter/{}", id_of(&ordered)), None);
    let b = server.create_converter("Conv B", "return null;");
    let list = server.api("GET", "/api/converters?pageSize=10&page=0", None);
    assert_eq!(list["totalElements"], 2, "{list}");
    let list = server.api("GET", "/api/converters?pageSize=10&page=0&textSearch=conv%20b", None);
    assert_eq!(list["totalElements"], 1, "{list}");
    assert_eq!(list["data"][0]["id"], b["id"]);

    // Delete an unused converter.
    server.api("DELETE", &format!("/api/converter/{}", id_of(&b)), None);
    let (status, body) = server.request("GET", &format!("/api/converter/{}", id_of(&b)), None, Some(&server.token()));
    assert_tb_error("deleted converter", status, &body, 404, 32);

    // A converter in use cannot be deleted.
    let integration = server.create_integration("uses A", &a, json!({}));
    let (status, body) =
        server.request("DELETE", &format!("/api/converter/{}", id_of(&a)), None, Some(&server.token()));
    assert_tb_error("delete converter in use", status, &body, 400, 31);
    server.api("GET", &format!("/api/converter/{}", id_of(&a)), None);

    uplink(&server, &integration, "first");
    let device = server.device("U1").expect("U1 created");
    assert_eq!(server.latest(&device).get("a"), Some(&json!("first")));

    // Update the decoder: the very next uplink uses it.
    let mut edited = server.api("GET", &format!("/api/converter/{}", id_of(&a)), None);
    edited["configuration"]["decoder"] = json!("return {deviceName: 'U1', telemetry: {b: decodeToString(payload)}};");
    let updated = server.api("POST", "/api/converter", Some(edited));
    assert_eq!(updated["id"], a["id"]);
    assert_eq!(updated["createdTime"], a["createdTime"]);
    assert_eq!(updated["version"].as_i64(), a["version"].as_i64().map(|v| v + 1), "{updated}");
    uplink(&server, &integration, "second");
    let latest = server.latest(&device);
    assert_eq!(latest.get("b"), Some(&json!("second")), "new decoder not used: {latest:?}");
    assert_eq!(latest.get("a"), Some(&json!("first")), "old key untouched: {latest:?}");
    assert_eq!(server.history_len(&device, "a"), 1);

    // After the integration is gone the converter can be deleted.
    server.api("DELETE", &format!("/api/integration/{}", id_of(&integration)), None);
    server.api("DELETE", &format!("/api/converter/{}", id_of(&a)), None);
    let list = server.api("GET", "/api/converters?pageSize=10&page=0", None);
    assert_eq!(list["totalElements"], 0, "{list}");
}

#[test]
fn devices_profiles_and_deletion() {
    let server = Server::start();
    let converter = server.create_converter(
        "name,type",
        "var p = decodeToString(payload).split(','); return {deviceName: p[0], deviceType: p[1], telemetry: {v: Number(p[2])}};",
    );
    let integration = server.create_integration("devices", &converter, json!({}));
    for payload in ["D1,x,1", "D2,y,2", "D3,x,3"] {
        uplink(&server, &integration, payload);
    }

    let page = server.api("GET", "/api/tenant/devices?pageSize=2&page=0", None);
    assert_eq!(
        (&page["totalElements"], &page["totalPages"], &page["hasNext"]),
        (&json!(3), &json!(2), &json!(true)),
        "{page}"
    );
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let page = server.api("GET", "/api/tenant/devices?pageSize=2&page=1", None);
    assert_eq!((page["data"].as_array().unwrap().len(), &page["hasNext"]), (1, &json!(false)), "{page}");

    let xs = server.api("GET", "/api/tenant/devices?pageSize=10&page=0&type=x", None);
    assert_eq!(xs["totalElements"], 2, "{xs}");
    let mut names: Vec<&str> = xs["data"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["D1", "D3"]);
    assert!(xs["data"].as_array().unwrap().iter().all(|d| d["type"] == "x"));

    let d1 = server.api("GET", "/api/tenant/device?deviceName=D1", None);
    assert_eq!((d1["name"].as_str(), d1["type"].as_str()), (Some("D1"), Some("x")), "{d1}");
    assert_eq!(d1["id"]["entityType"], "DEVICE");
    assert_eq!(d1["additionalInfo"]["createdByIntegration"]["id"], integration["id"]["id"], "{d1}");
    let same = server.api("GET", "/api/tenant/devices?deviceName=D1", None);
    assert_eq!(same["id"], d1["id"]);
    let by_id = server.api("GET", &format!("/api/device/{}", id_of(&d1)), None);
    assert_eq!(by_id["name"], "D1");

    let profiles = server.api("GET", "/api/deviceProfiles?pageSize=10&page=0", None);
    let mut profile_names: Vec<&str> =
        profiles["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    profile_names.sort();
    assert_eq!(profile_names, ["default", "x", "y"], "{profiles}");
    assert_eq!(profiles["totalElements"], 3);
    let x_profile = profiles["data"].as_array().unwrap().iter().find(|p| p["name"] == "x").unwrap();
    assert_eq!(d1["deviceProfileId"]["id"], x_profile["id"]["id"], "device points at its profile");
    let profile = server.api("GET", &format!("/api/deviceProfile/{}", id_of(x_profile)), None);
    assert_eq!(profile["name"], "x");
    let default = profiles["data"].as_array().unwrap().iter().find(|p| p["name"] == "default").unwrap();
    assert_eq!(default["default"], true);

    // Delete D1: gone, with its telemetry; the next uplink recreates it with a new id.
    assert_eq!(server.history_len(&d1, "v"), 1);
    server.api("DELETE", &format!("/api/device/{}", id_of(&d1)), None);
    let (status, body) = server.request("GET", &format!("/api/device/{}", id_of(&d1)), None, Some(&server.token()));
    assert_tb_error("deleted device", status, &body, 404, 32);
    assert!(server.device("D1").is_none());
    let (status, _) = server.request(
        "GET",
        &format!("/api/plugins/telemetry/DEVICE/{}/values/timeseries?keys=v&startTs=0&endTs=9999999999999", id_of(&d1)),
        None,
        Some(&server.token()),
    );
    assert_eq!(status, 404, "telemetry of a deleted device");
    let page = server.api("GET", "/api/tenant/devices?pageSize=10&page=0", None);
    assert_eq!(page["totalElements"], 2);

    uplink(&server, &integration, "D1,y,7");
    let again = server.device("D1").expect("D1 recreated");
    assert_ne!(again["id"], d1["id"], "a recreated device gets a new id");
    assert_eq!(again["type"], "y", "type taken from the uplink that created it");
    assert_eq!(server.history_len(&again, "v"), 1, "old telemetry does not come back");
    assert_eq!(server.latest(&again).get("v"), Some(&json!("7")));
}

const TELEMETRY_DECODER: &str = r#"return {deviceName: "T",
  telemetry: [{ts: 1000, values: {t: 1, s: "str", b: true, d: 2.5, j: {"x": 1}}}, {ts: 2000, values: {t: 3}}],
  attributes: {fw: "1.0.3", n: 7}};"#;

#[test]
fn telemetry_and_attributes() {
    let server = Server::start();
    let converter = server.create_converter("telemetry", TELEMETRY_DECODER);
    let integration = server.create_integration("telemetry", &converter, json!({}));
    let before = coapgate_storage::now_millis();
    uplink(&server, &integration, "x");
    let device = server.device("T").expect("T created");
    let base = format!("/api/plugins/telemetry/DEVICE/{}", id_of(&device));

    let keys = server.api("GET", &format!("{base}/keys/timeseries"), None);
    assert_eq!(keys, json!(["b", "d", "j", "s", "t"]));

    // Latest values: strings by default, typed with useStrictDataTypes (the Python client sends `True`).
    let latest = server.api("GET", &format!("{base}/values/timeseries?keys=t,s,b,d,j"), None);
    let expect_latest = |key: &str, ts: i64, value: Value| {
        assert_eq!(latest[key], json!([{"ts": ts, "value": value}]), "latest {key}: {latest}");
    };
    expect_latest("t", 2000, json!("3"));
    expect_latest("s", 1000, json!("str"));
    expect_latest("b", 1000, json!("true"));
    expect_latest("d", 1000, json!("2.5"));
    let j_text = latest["j"][0]["value"].as_str().expect("j as text");
    assert_eq!(serde_json::from_str::<Value>(j_text).unwrap(), json!({"x": 1}), "{j_text}");
    for strict in ["true", "True"] {
        let typed =
            server.api("GET", &format!("{base}/values/timeseries?keys=t,s,b,d,j&useStrictDataTypes={strict}"), None);
        for (key, value) in
            [("t", json!(3)), ("s", json!("str")), ("b", json!(true)), ("d", json!(2.5)), ("j", json!({"x": 1}))]
        {
            assert_eq!(typed[key][0]["value"], value, "strict={strict} {key}: {typed}");
        }
    }
    let only = server.api("GET", &format!("{base}/values/timeseries?keys=d"), None);
    assert_eq!(only.as_object().unwrap().keys().collect::<Vec<_>>(), ["d"], "{only}");
    let all = server.api("GET", &format!("{base}/values/timeseries"), None);
    assert_eq!(all.as_object().unwrap().len(), 5, "{all}");
    // An empty `keys` means all keys, as in ThingsBoard (`StringUtils.isEmpty(keys)`).
    let empty_keys = server.api("GET", &format!("{base}/values/timeseries?keys="), None);
    assert_eq!(empty_keys, all, "keys= (empty) should list every key");

    // History: DESC by default, ASC on request, limit.
    let history =
        |query: &str| server.api("GET", &format!("{base}/values/timeseries?keys=t&startTs=0&endTs=3000{query}"), None);
    assert_eq!(history("")["t"], json!([{"ts": 2000, "value": "3"}, {"ts": 1000, "value": "1"}]));
    assert_eq!(history("&orderBy=ASC")["t"], json!([{"ts": 1000, "value": "1"}, {"ts": 2000, "value": "3"}]));
    assert_eq!(history("&limit=1")["t"], json!([{"ts": 2000, "value": "3"}]));
    assert_eq!(history("&limit=1&orderBy=ASC")["t"], json!([{"ts": 1000, "value": "1"}]));
    assert_eq!(history("&useStrictDataTypes=true")["t"], json!([{"ts": 2000, "value": 3}, {"ts": 1000, "value": 1}]));
    let window = server.api("GET", &format!("{base}/values/timeseries?keys=t&startTs=1500&endTs=3000"), None);
    assert_eq!(window["t"], json!([{"ts": 2000, "value": "3"}]), "startTs bounds the range");
    let empty = server.api("GET", &format!("{base}/values/timeseries?keys=t&startTs=5000&endTs=6000"), None);
    assert!(empty.get("t").is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)), "{empty}");
    let two_keys = server.api("GET", &format!("{base}/values/timeseries?keys=t,d&startTs=0&endTs=3000"), None);
    assert_eq!(two_keys["d"], json!([{"ts": 1000, "value": "2.5"}]), "{two_keys}");
    let via_history_path =
        server.api("GET", &format!("{base}/values/timeseries/history?keys=t&startTs=0&endTs=3000"), None);
    assert_eq!(via_history_path["t"].as_array().map(Vec::len), Some(2));

    // Aggregation over one interval covering both points of t (1 and 3).
    for (agg, text, typed) in [
        ("AVG", "2.0", json!(2.0)),
        ("SUM", "4", json!(4)),
        ("MAX", "3", json!(3)),
        ("MIN", "1", json!(1)),
        ("COUNT", "2", json!(2)),
    ] {
        let body = history(&format!("&agg={agg}&interval=3000"));
        let points = body["t"].as_array().unwrap_or_else(|| panic!("agg={agg}: {body}"));
        assert_eq!(points.len(), 1, "agg={agg}: {body}");
        assert_eq!(points[0]["value"], text, "agg={agg}: {body}");
        assert_eq!(points[0]["ts"], 1500, "agg={agg}: the bucket's middle: {body}");
        let strict = history(&format!("&agg={agg}&interval=3000&useStrictDataTypes=true"));
        assert_eq!(strict["t"][0]["value"], typed, "agg={agg} strict: {strict}");
    }
    // Two intervals: one point each.
    let split = history("&agg=AVG&interval=1500&orderBy=ASC");
    assert_eq!(split["t"].as_array().map(Vec::len), Some(2), "{split}");
    assert_eq!(split["t"][0]["value"], "1.0");
    assert_eq!(split["t"][1]["value"], "3.0");
    let (status, body) = server.request(
        "GET",
        &format!("{base}/values/timeseries?keys=t&startTs=0&endTs=3000&agg=MEDIAN"),
        None,
        Some(&server.token()),
    );
    assert_tb_error("agg=MEDIAN", status, &body, 400, 31);

    // Attributes: CLIENT_SCOPE, typed, with lastUpdateTs.
    let attributes = server.api("GET", &format!("{base}/values/attributes/CLIENT_SCOPE"), None);
    let list = attributes.as_array().unwrap_or_else(|| panic!("{attributes}"));
    assert_eq!(list.len(), 2, "{attributes}");
    let attr =
        |key: &str| list.iter().find(|a| a["key"] == key).unwrap_or_else(|| panic!("{key} missing: {attributes}"));
    assert_eq!(attr("fw")["value"], "1.0.3", "not numeric, stays a string");
    assert_eq!(attr("n")["value"], 7);
    for a in list {
        let ts = a["lastUpdateTs"].as_i64().unwrap_or_else(|| panic!("lastUpdateTs: {a}"));
        assert!(ts >= before && ts <= coapgate_storage::now_millis(), "lastUpdateTs {ts} not the receive time: {a}");
    }
    let empty_keys = server.api("GET", &format!("{base}/values/attributes/CLIENT_SCOPE?keys="), None);
    assert_eq!(empty_keys.as_array().map(Vec::len), Some(2), "keys= (empty) should list every attribute: {empty_keys}");
    let unscoped = server.api("GET", &format!("{base}/values/attributes"), None);
    assert_eq!(unscoped.as_array().map(Vec::len), Some(2), "{unscoped}");
    let only_n = server.api("GET", &format!("{base}/values/attributes/CLIENT_SCOPE?keys=n"), None);
    assert_eq!(only_n.as_array().map(Vec::len), Some(1), "{only_n}");
    assert_eq!(only_n[0]["key"], "n");
    let mut attr_keys: Vec<String> =
        serde_json::from_value(server.api("GET", &format!("{base}/keys/attributes"), None)).unwrap();
    attr_keys.sort();
    assert_eq!(attr_keys, ["fw", "n"]);
    let mut client_keys: Vec<String> =
        serde_json::from_value(server.api("GET", &format!("{base}/keys/attributes/CLIENT_SCOPE"), None)).unwrap();
    client_keys.sort();
    assert_eq!(client_keys, ["fw", "n"]);
    assert_eq!(server.api("GET", &format!("{base}/keys/attributes/SERVER_SCOPE"), None), json!([]));
    assert_eq!(server.api("GET", &format!("{base}/values/attributes/SHARED_SCOPE"), None), json!([]));
    for path in [format!("{base}/values/attributes/BAD_SCOPE"), format!("{base}/keys/attributes/client_scope")] {
        let (status, body) = server.request("GET", &path, None, Some(&server.token()));
        assert_tb_error(&path, status, &body, 400, 31);
    }
    let (status, body) = server.request(
        "GET",
        &format!("/api/plugins/telemetry/WIDGET/{}/values/timeseries", id_of(&device)),
        None,
        Some(&server.token()),
    );
    assert_tb_error("unsupported entity type", status, &body, 400, 31);
}

#[test]
fn test_uplink_runs_the_script_and_stores_nothing() {
    let server = Server::start();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let decoder = "return {deviceName: decodeToString(payload), deviceType: metadata.kind, telemetry: {n: payload.length, first: payload[0]}};";
    let body = server.api(
        "POST",
        "/api/converter/testUpLink?scriptLang=JS",
        Some(json!({"payload": b64("probe-device"), "metadata": {"kind": "k1"}, "decoder": decoder})),
    );
    assert_eq!(body["error"], "", "{body}");
    let output: Value =
        serde_json::from_str(body["output"].as_str().expect("output is JSON text")).expect("output parses");
    assert_eq!(output, json!({"deviceName": "probe-device", "deviceType": "k1", "telemetry": {"n": 12, "first": 112}}));

    // The seed decoder on the seed payload.
    let seed = server.api(
        "POST",
        "/api/converter/testUpLink?scriptLang=JS",
        Some(json!({"payload": b64(SEED_PAYLOAD), "metadata": {}, "decoder": SEED_DECODER})),
    );
    let text = seed["output"].as_str().unwrap();
    let output: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        output,
        json!({"deviceName": "SN-001", "deviceType": "default", "telemetry": {"temperature": 25.7, "humidity": 69}, "attributes": {}})
    );
    // The person reading "Test payload decoder" sees the keys in the script's order, as in
    // ThingsBoard, not sorted.
    let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap_or_else(|| panic!("{key} in {text}"));
    assert!(at("deviceName") < at("deviceType") && at("deviceType") < at("telemetry") && at("telemetry") < at("attributes"), "{text}");
    assert!(at("temperature") < at("humidity"), "{text}");

    // Doubles are printed exactly as the engine computed them (QuickJS and ThingsBoard agree).
    for lang in ["JS", "TBEL"] {
        let exact = server.api(
            "POST",
            &format!("/api/converter/testUpLink?scriptLang={lang}"),
            Some(json!({"payload": b64("x"), "metadata": {}, "decoder": "return {v: 4508000.0/65535 - 45};"})),
        );
        assert!(exact["output"].as_str().unwrap().contains("23.787670710307466"), "{lang}: {exact}");
    }

    // Errors come back in `error`, with the line.
    for (script, line) in [
        ("var a = 1;\nvar b = ;\nreturn a;", 2),
        ("var a = 1;\nvar b = 2;\nthrow new Error('boom');", 3),
        ("var a = 1;\nreturn a.b.c;", 2),
    ] {
        let body = server.api(
            "POST",
            "/api/converter/testUpLink?scriptLang=JS",
            Some(json!({"payload": b64("x"), "metadata": {}, "decoder": script})),
        );
        let error = body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{script:?}: {body}");
        assert!(error.contains(&format!("line {line}")), "{script:?}: error {error:?} should name line {line}");
    }
    // The script size limit applies here too.
    let too_long = format!("return null;//{}", "x".repeat(50_000));
    let (status, body) = server.request(
        "POST",
        "/api/converter/testUpLink?scriptLang=JS",
        Some(json!({"payload": b64("x"), "metadata": {}, "decoder": too_long})),
        Some(&server.token()),
    );
    assert!(
        status == 400 || body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a decoder over 50,000 chars must be refused: {status} {body}"
    );
    let (status, body) = server.request(
        "POST",
        "/api/converter/testUpLink?scriptLang=JS",
        Some(json!({"payload": "***not base64***", "decoder": decoder})),
        Some(&server.token()),
    );
    let message = assert_tb_error("bad base64", status, &body, 400, 31);
    assert!(message.contains("payload"), "{message}");

    // Nothing stored.
    assert!(server.device("probe-device").is_none(), "testUpLink created a device");
    assert!(server.device("SN-001").is_none(), "testUpLink created a device");
    let devices = server.api("GET", "/api/tenant/devices?pageSize=10&page=0", None);
    assert_eq!(devices["totalElements"], 0, "{devices}");
    let profiles = server.api("GET", "/api/deviceProfiles?pageSize=10&page=0", None);
    assert_eq!(profiles["totalElements"], 1, "testUpLink created a profile: {profiles}");
    let converters = server.api("GET", "/api/converters?pageSize=10&page=0", None);
    assert_eq!(converters["totalElements"], 0, "{converters}");
}
