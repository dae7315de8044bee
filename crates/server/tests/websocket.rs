//! ThingsBoard's WebSocket API with a real client (tungstenite): subscriptions fed by uplinks
//! from `coap-client-notls` and by REST writes, history, authentication, and the bound that
//! drops a client that does not read.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;


fn ws_url(server: &Server, path: &str) -> String {
    server.http.replacen("http://", "ws://", 1) + path
}

fn connect(server: &Server, path: &str) -> Ws {
    let (ws, response) = tungstenite::connect(ws_url(server, path)).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).expect("sending a command");
}


fn expect_update(ws: &mut Ws, what: &str) -> Value {
    ws_next(ws, Duration::from_secs(10)).unwrap_or_else(|| panic!("no update: {what}"))
}

fn uplink(server: &Server, endpoint: &str, payload: &str) {
    let out = shell(&format!("echo -n '{payload}' | coap-client-notls -m post {endpoint} -t text/plain -f-"));
    assert!(out.status.success(), "coap-client failed: {}", String::from_utf8_lossy(&out.stderr));
    let _ = server;
}

/// A server with the seed integration and device SN-001 (created by a first uplink); returns
/// the CoAP endpoint and the device's id.
fn seeded(server: &Server) -> (String, String) {
    let integration = server.seed_integration();
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string();
    uplink(server, &endpoint, SEED_PAYLOAD);
    let device = eventually(Duration::from_secs(5), || server.device("SN-001")).expect("SN-001 created");
    (endpoint, device["id"]["id"].as_str().unwrap().to_string())
}

fn value_of(update: &Value, key: &str) -> Option<String> {
    update["data"][key].as_array()?.last()?[1].as_str().map(String::from)
}

#[test]
fn time_series_subscriptions_get_uplinks_once_stored() {
    let server = Server::start();
    let (endpoint, id) = seeded(&server);

    // ThingsBoard's older wrapper, the token in the URL, all keys.
    let mut all = connect(&server, &format!("/api/ws/plugins/telemetry?token={}", server.token()));
    send(&mut all, json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": id, "scope": "LATEST_TELEMETRY", "cmdId": 10}]}));
    let snapshot = expect_update(&mut all, "the snapshot of latest values");
    assert_eq!(snapshot["subscriptionId"], 10);
    assert_eq!(snapshot["errorCode"], 0);
    assert_eq!(value_of(&snapshot, "temperature").as_deref(), Some("25.7"), "{snapshot}");
    assert_eq!(value_of(&snapshot, "humidity").as_deref(), Some("69"), "{snapshot}");
    let ts = snapshot["data"]["temperature"][0][0].as_i64().unwrap();
    assert_eq!(snapshot["latestValues"]["temperature"], ts);

    // The newer wrapper on /api/ws, authenticated by its first message, one key.
    let mut one = connect(&server, "/api/ws");
    send(
        &mut one,
        json!({"authCmd": {"cmdId": 0, "token": server.token()},
               "cmds": [{"type": "TIMESERIES", "cmdId": 1, "entityType": "DEVICE", "entityId": id, "keys": "humidity"}]}),
    );
    let snapshot = expect_update(&mut one, "the snapshot of humidity");
    assert_eq!(snapshot["data"].as_object().unwrap().keys().collect::<Vec<_>>(), ["humidity"], "{snapshot}");

    let sent = Instant::now();
    uplink(&server, &endpoint, "SN-001,default,temperature,30.5,humidity,70");
    let acknowledged = sent.elapsed();
    let update = expect_update(&mut all, "the uplink's values");
    let received = sent.elapsed();
    eprintln!("uplink acknowledged after {acknowledged:?}, its update arrived after {received:?} (both from the coap-client start)");
    assert_eq!(update["subscriptionId"], 10);
    assert_eq!(value_of(&update, "temperature").as_deref(), Some("30.5"), "{update}");
    assert_eq!(value_of(&update, "humidity").as_deref(), Some("70"), "{update}");
    let update = expect_update(&mut one, "humidity only");
    assert_eq!(update["subscriptionId"], 1);
    assert_eq!(update["data"].as_object().unwrap().keys().collect::<Vec<_>>(), ["humidity"], "{update}");
    assert_eq!(value_of(&update, "humidity").as_deref(), Some("70"));

    // A REST write of time series reaches the subscribers too.
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(json!({"temperature": 12})));
    let update = expect_update(&mut all, "a REST write");
    assert_eq!(value_of(&update, "temperature").as_deref(), Some("12"), "{update}");
    assert_eq!(ws_next(&mut one, Duration::from_millis(500)), None, "a key the subscription does not want");

    // Unsubscribed: nothing more.
    send(&mut all, json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": id, "cmdId": 10, "unsubscribe": true}]}));
    std::thread::sleep(Duration::from_millis(200));
    uplink(&server, &endpoint, "SN-001,default,temperature,31,humidity,71");
    assert_eq!(value_of(&expect_update(&mut one, "still subscribed"), "humidity").as_deref(), Some("71"));
    assert_eq!(ws_next(&mut all, Duration::from_millis(500)), None, "an unsubscribed command gets no update");
}

#[test]
fn attribute_subscriptions_get_rest_writes_of_their_scope() {
    let server = Server::start();
    let (_, id) = seeded(&server);
    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));
    send(
        &mut ws,
        json!({"cmds": [
            {"type": "ATTRIBUTES", "cmdId": 1, "entityType": "DEVICE", "entityId": id, "scope": "SERVER_SCOPE"},
            {"type": "ATTRIBUTES", "cmdId": 2, "entityType": "DEVICE", "entityId": id, "scope": "SHARED_SCOPE", "keys": "mode"},
        ]}),
    );
    for cmd in [1, 2] {
        let snapshot = expect_update(&mut ws, "an empty snapshot");
        assert_eq!(snapshot["subscriptionId"], cmd);
        assert_eq!(snapshot["data"], json!({}), "{snapshot}");
    }
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/attributes/SERVER_SCOPE"), Some(json!({"firmware": "1.2", "limit": 5})));
    let update = expect_update(&mut ws, "the server-scope write");
    assert_eq!(update["subscriptionId"], 1, "{update}");
    assert_eq!(value_of(&update, "firmware").as_deref(), Some("1.2"));
    assert_eq!(value_of(&update, "limit").as_deref(), Some("5"));
    assert_eq!(ws_next(&mut ws, Duration::from_millis(500)), None, "the shared-scope subscription is not told");

    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/attributes/SHARED_SCOPE"), Some(json!({"mode": "eco", "other": 1})));
    let update = expect_update(&mut ws, "the shared-scope write");
    assert_eq!(update["subscriptionId"], 2, "{update}");
    assert_eq!(update["data"].as_object().unwrap().keys().collect::<Vec<_>>(), ["mode"], "{update}");
    assert_eq!(value_of(&update, "mode").as_deref(), Some("eco"));

    // A new subscription starts with what is stored.
    send(&mut ws, json!({"attrSubCmds": [{"entityType": "DEVICE", "entityId": id, "cmdId": 3}]}));
    let snapshot = expect_update(&mut ws, "the snapshot of all scopes");
    assert_eq!(snapshot["subscriptionId"], 3);
    for (key, value) in [("firmware", "1.2"), ("limit", "5"), ("mode", "eco"), ("other", "1")] {
        assert_eq!(value_of(&snapshot, key).as_deref(), Some(value), "{snapshot}");
    }
}

#[test]
fn history_commands_return_stored_points() {
    let server = Server::start();
    let (endpoint, id) = seeded(&server);
    for t in ["26", "27.5"] {
        uplink(&server, &endpoint, &format!("SN-001,default,temperature,{t},humidity,60"));
    }
    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));
    let now = coapgate_now();
    send(
        &mut ws,
        json!({"historyCmds": [{"entityType": "DEVICE", "entityId": id, "keys": "temperature", "startTs": now - 3_600_000, "endTs": now + 60_000, "cmdId": 5}]}),
    );
    let history = expect_update(&mut ws, "the history");
    assert_eq!(history["subscriptionId"], 5);
    let points: Vec<&str> = history["data"]["temperature"].as_array().unwrap().iter().map(|p| p[1].as_str().unwrap()).collect();
    assert_eq!(points, ["27.5", "26", "25.7"], "newest first, as ThingsBoard's default order: {history}");
    assert!(history["data"].get("humidity").is_none());

    send(&mut ws, json!({"cmds": [{"type": "TIMESERIES_HISTORY", "entityType": "DEVICE", "entityId": id, "keys": "temperature", "startTs": 0, "endTs": now + 60_000, "limit": 1, "cmdId": 6}]}));
    let limited = expect_update(&mut ws, "a limited history");
    assert_eq!(limited["data"]["temperature"].as_array().unwrap().len(), 1, "{limited}");

    send(&mut ws, json!({"historyCmds": [{"entityType": "DEVICE", "entityId": id, "startTs": 0, "endTs": now, "cmdId": 7}]}));
    let refused = expect_update(&mut ws, "an error");
    assert_eq!(refused, json!({"subscriptionId": 7, "errorCode": 2, "errorMsg": "Keys are empty!", "data": null, "latestValues": {}}));

    send(&mut ws, json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": uuid_like(), "cmdId": 8}]}));
    let unknown = expect_update(&mut ws, "an unknown device");
    assert_eq!((unknown["subscriptionId"].clone(), unknown["errorCode"].clone()), (json!(8), json!(1)), "{unknown}");
}

/// `agg` in history commands (and in a subscription's time window) reads what REST's
/// `…/values/timeseries` answers for the same query, point for point.
#[test]
fn aggregated_history_equals_the_rest_answer() {
    let server = Server::start();
    let (_, id) = seeded(&server);
    let t0: i64 = 1_700_000_000_000;
    let points: Vec<Value> = (0..10).map(|i| json!({"ts": t0 + 1000 * i, "values": {"level": i as f64 * 1.5, "count": i}})).collect();
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(Value::Array(points)));
    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));
    let (start, end, interval) = (t0, t0 + 10_000, 2_500);
    for (cmd_id, agg) in ["AVG", "MIN", "MAX", "SUM", "COUNT", "NONE"].into_iter().enumerate() {
        send(
            &mut ws,
            json!({"historyCmds": [{"entityType": "DEVICE", "entityId": id, "keys": "level,count", "startTs": start, "endTs": end,
                                    "interval": interval, "agg": agg, "limit": 4, "cmdId": cmd_id}]}),
        );
        let history = expect_update(&mut ws, agg);
        assert_eq!(history["errorCode"], 0, "{history}");
        let rest = server.api(
            "GET",
            &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=level,count&startTs={start}&endTs={end}&interval={interval}&agg={agg}&limit=4"),
            None,
        );
        for key in ["level", "count"] {
            let as_pairs: Vec<Value> = rest[key].as_array().unwrap().iter().map(|p| json!([p["ts"], p["value"]])).collect();
            assert_eq!(history["data"][key], Value::Array(as_pairs), "{agg} {key}: WebSocket {history} REST {rest}");
        }
    }
    // One figure checked by hand: the first 2.5 s bucket holds 0, 1.5 and 3.
    send(
        &mut ws,
        json!({"historyCmds": [{"entityType": "DEVICE", "entityId": id, "keys": "level", "startTs": start, "endTs": end,
                                "interval": interval, "agg": "AVG", "cmdId": 20}]}),
    );
    let avg = expect_update(&mut ws, "AVG by hand");
    assert_eq!(avg["data"]["level"][0][1], "1.5", "{avg}");
    assert_eq!(avg["data"]["level"].as_array().unwrap().len(), 4, "{avg}");

    // A subscription's time window is aggregated the same way.
    send(
        &mut ws,
        json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": id, "keys": "level", "startTs": start, "timeWindow": 10_000,
                              "interval": 5_000, "agg": "MAX", "cmdId": 21}]}),
    );
    let window = expect_update(&mut ws, "an aggregated window");
    let values: Vec<&str> = window["data"]["level"].as_array().unwrap().iter().map(|p| p[1].as_str().unwrap()).collect();
    assert_eq!(values, ["6.0", "13.5"], "{window}");

    send(
        &mut ws,
        json!({"historyCmds": [{"entityType": "DEVICE", "entityId": id, "keys": "level", "startTs": start, "endTs": end,
                                "interval": interval, "agg": "MEDIAN", "cmdId": 22}]}),
    );
    let refused = expect_update(&mut ws, "an unknown aggregation");
    assert_eq!(refused["errorCode"], 2, "{refused}");
    assert!(refused["errorMsg"].as_str().unwrap().contains("MEDIAN"), "{refused}");
}

fn coapgate_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn uuid_like() -> &'static str {
    "0b8f5a6e-6f55-4b1c-9d39-0a1b2c3d4e5f"
}

#[test]
fn bad_tokens_are_refused() {
    let server = Server::start();
    // In the URL: the upgrade is refused with the REST API's 401.
    match tungstenite::connect(ws_url(&server, "/api/ws/plugins/telemetry?token=not-a-jwt")) {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!((body["status"].clone(), body["errorCode"].clone()), (json!(401), json!(10)), "{body}");
        }
        Err(e) => panic!("expected a 401, got {e}"),
        Ok(_) => panic!("a bad token in the URL was accepted"),
    }
    // In the first message: the session is closed with 1008 and ThingsBoard's reason.
    let (status, login) = server.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})), None);
    assert_eq!(status, 200);
    let refresh = login["refreshToken"].as_str().unwrap();
    for token in ["not-a-jwt", refresh] {
        let mut ws = connect(&server, "/api/ws");
        send(&mut ws, json!({"authCmd": {"cmdId": 0, "token": token}, "cmds": []}));
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1008);
                assert_eq!(frame.reason.as_str(), "Authentication failed");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    // Commands before authentication are not served.
    let mut ws = connect(&server, "/api/ws");
    send(&mut ws, json!({"cmds": [{"type": "TIMESERIES_HISTORY", "cmdId": 1, "entityType": "DEVICE", "entityId": uuid_like(), "keys": "a"}]}));
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A client that subscribes and then never reads: once its socket buffers and its bounded queue
/// are full it is disconnected, while devices' uplinks keep being acknowledged and stored.
#[test]
fn a_client_that_never_reads_is_disconnected() {
    let server = Server::start_with(&[("WS_MAX_QUEUE_MESSAGES_PER_SESSION", "4")], &[]);
    let (endpoint, id) = seeded(&server);

    // A small receive buffer, so the server's sends stop soon after the client stops reading.
    let address: std::net::SocketAddr = server.http.trim_start_matches("http://").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let stream: TcpStream = socket.into();
    let (mut ws, _) =
        tungstenite::client(ws_url(&server, &format!("/api/ws?token={}", server.token())), MaybeTlsStream::Plain(stream)).expect("handshake");
    send(&mut ws, json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": id, "cmdId": 1}]}));
    // The snapshot: the subscription is in place from here on.
    let snapshot = ws.read().expect("snapshot");
    assert!(matches!(snapshot, Message::Text(_)));

    // Large updates fill the socket buffers (a few MB on loopback) and then the queue.
    let big = "x".repeat(64 * 1024);
    let writes = 300;
    for i in 0..writes {
        server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(json!({"blob": format!("{i}{big}")})));
    }
    // Devices are served meanwhile and afterwards.
    uplink(&server, &endpoint, "SN-001,default,temperature,41,humidity,42");
    let device = server.device("SN-001").unwrap();
    assert_eq!(server.latest(&device)["temperature"], "41");

    // Reading now: what the buffers held, then the end, well before all the writes' updates.
    // (Pings keep arriving from a live session, so silence alone does not end the loop.)
    if let MaybeTlsStream::Plain(stream) = ws.get_mut() {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut updates = 0;
    let ended = loop {
        assert!(Instant::now() < deadline, "the slow client was not disconnected ({updates} updates read)");
        match ws.read() {
            Ok(Message::Text(_)) => updates += 1,
            Ok(Message::Close(frame)) => break format!("close frame {frame:?}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the slow client was not disconnected ({updates} updates read, then silence)")
            }
            Err(e) => break format!("{e}"),
        }
    };
    eprintln!("slow client: {updates} of {writes} updates read, then {ended}");
    assert!(updates < writes, "every update was buffered for the slow client");
    let metrics = ureq::get(&format!("{}/metrics", server.http)).call().unwrap().into_string().unwrap();
    assert!(metrics.lines().any(|l| l == "coapgate_ws_slow_disconnects_total 1"), "{metrics}");

    // A new session works.
    let mut fresh = connect(&server, &format!("/api/ws?token={}", server.token()));
    send(&mut fresh, json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": id, "keys": "temperature", "cmdId": 2}]}));
    assert_eq!(value_of(&expect_update(&mut fresh, "a fresh session's snapshot"), "temperature").as_deref(), Some("41"));
}

#[test]
fn entity_data_for_a_single_entity() {
    let server = Server::start();
    let (endpoint, id) = seeded(&server);
    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));
    send(
        &mut ws,
        json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 4,
            "query": {
                "entityFilter": {"type": "singleEntity", "singleEntity": {"entityType": "DEVICE", "id": id}},
                "pageLink": {"page": 0, "pageSize": 1},
                "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}, {"type": "ENTITY_FIELD", "key": "type"}],
                "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}, {"type": "TIME_SERIES", "key": "pressure"}]},
            "latestCmd": {"keys": [{"type": "TIME_SERIES", "key": "temperature"}, {"type": "SERVER_ATTRIBUTE", "key": "firmware"}]}}]}),
    );
    let page = expect_update(&mut ws, "the first page");
    assert_eq!((page["cmdId"].clone(), page["cmdUpdateType"].clone(), page["errorCode"].clone()), (json!(4), json!("ENTITY_DATA"), json!(0)));
    assert_eq!(page["data"]["totalElements"], 1, "{page}");
    let entity = &page["data"]["data"][0];
    assert_eq!(entity["entityId"], json!({"entityType": "DEVICE", "id": id}));
    let latest = &entity["latest"];
    assert_eq!(latest["ENTITY_FIELD"]["name"]["value"], "SN-001", "{page}");
    assert_eq!(latest["ENTITY_FIELD"]["type"]["value"], "default");
    assert_eq!(latest["TIME_SERIES"]["temperature"]["value"], "25.7");
    assert_eq!(latest["TIME_SERIES"]["pressure"], json!({"ts": 0, "value": ""}), "a key without a value");
    assert_eq!(latest["SERVER_ATTRIBUTE"]["firmware"], json!({"ts": 0, "value": ""}));

    uplink(&server, &endpoint, "SN-001,default,temperature,33,humidity,50");
    let update = expect_update(&mut ws, "the uplink");
    assert_eq!((update["cmdId"].clone(), update["data"].clone()), (json!(4), Value::Null), "{update}");
    let latest = &update["update"][0]["latest"];
    assert_eq!(latest["TIME_SERIES"]["temperature"]["value"], "33", "{update}");
    assert!(latest["TIME_SERIES"].get("humidity").is_none(), "a key nobody asked for: {update}");

    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/attributes/SERVER_SCOPE"), Some(json!({"firmware": "2.0"})));
    let update = expect_update(&mut ws, "the attribute");
    assert_eq!(update["update"][0]["latest"]["SERVER_ATTRIBUTE"]["firmware"]["value"], "2.0", "{update}");

    send(&mut ws, json!({"cmds": [{"type": "ENTITY_DATA_UNSUBSCRIBE", "cmdId": 4}]}));
    std::thread::sleep(Duration::from_millis(200));
    uplink(&server, &endpoint, "SN-001,default,temperature,34,humidity,50");
    assert_eq!(ws_next(&mut ws, Duration::from_millis(500)), None, "unsubscribed");

}

/// `historyCmd` and `tsCmd` inside an entity data command: each page row carries its entity's
/// points in `timeseries` (as REST reads them, `[]` for a key without any), then a tsCmd's keys
/// arrive live as time-series rows; a later tsCmd alone re-reads the window for the same page.
#[test]
fn entity_data_history_and_time_series_commands() {
    let server = Server::start();
    let (endpoint, id) = seeded(&server);
    let t0: i64 = 1_700_000_000_000;
    let points: Vec<Value> = (0..4).map(|i| json!({"ts": t0 + 1000 * i, "values": {"level": i * 10}})).collect();
    server.api("POST", &format!("/api/plugins/telemetry/DEVICE/{id}/timeseries/ANY"), Some(Value::Array(points)));
    let query = json!({
        "entityFilter": {"type": "singleEntity", "singleEntity": {"entityType": "DEVICE", "id": id}},
        "pageLink": {"page": 0, "pageSize": 1},
        "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}]});
    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));

    send(&mut ws, json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 1, "query": query,
        "historyCmd": {"keys": ["level", "nothing"], "startTs": t0, "endTs": t0 + 4000, "interval": 2000, "limit": 100, "agg": "SUM"}}]}));
    let page = expect_update(&mut ws, "the page with its history");
    let row = &page["data"]["data"][0];
    assert_eq!(row["latest"]["ENTITY_FIELD"]["name"]["value"], "SN-001", "{page}");
    let rest = server.api(
        "GET",
        &format!("/api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=level&startTs={t0}&endTs={}&interval=2000&agg=SUM", t0 + 4000),
        None,
    );
    assert_eq!(row["timeseries"]["level"], rest["level"], "the REST answer, bucket for bucket: {page}");
    assert_eq!(row["timeseries"]["level"].as_array().unwrap().iter().map(|p| p["value"].clone()).collect::<Vec<_>>(), [json!("10"), json!("50")]);
    assert_eq!(row["timeseries"]["nothing"], json!([]), "{page}");

    let now = coapgate_now();
    send(&mut ws, json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 2, "query": query,
        "tsCmd": {"keys": ["temperature"], "startTs": now - 3_600_000, "timeWindow": 3_700_000, "limit": 10}}]}));
    let page = expect_update(&mut ws, "the page with its window");
    assert_eq!(page["cmdId"], 2);
    let window = page["data"]["data"][0]["timeseries"]["temperature"].as_array().unwrap().clone();
    assert_eq!(window.iter().map(|p| p["value"].clone()).collect::<Vec<_>>(), [json!("25.7")], "{page}");

    uplink(&server, &endpoint, "SN-001,default,temperature,31.5,humidity,40");
    let update = expect_update(&mut ws, "a live point");
    assert_eq!((update["cmdId"].clone(), update["data"].clone()), (json!(2), Value::Null), "{update}");
    let row = &update["update"][0];
    assert_eq!(row["entityId"], json!({"entityType": "DEVICE", "id": id}));
    assert_eq!(row["latest"], Value::Null, "a time-series row: {update}");
    assert_eq!(row["timeseries"]["temperature"][0]["value"], "31.5", "{update}");
    assert!(row["timeseries"].get("humidity").is_none(), "a key the tsCmd did not ask for: {update}");

    // A new window for the same page, without the query.
    send(&mut ws, json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 2,
        "tsCmd": {"keys": ["humidity"], "startTs": now - 3_600_000, "timeWindow": 3_700_000, "limit": 10}}]}));
    let update = expect_update(&mut ws, "the new window");
    let humidity: Vec<Value> = update["update"][0]["timeseries"]["humidity"].as_array().unwrap().iter().map(|p| p["value"].clone()).collect();
    assert_eq!(humidity, [json!("40"), json!("69")], "newest first: {update}");
    uplink(&server, &endpoint, "SN-001,default,temperature,32,humidity,41");
    let update = expect_update(&mut ws, "a live point of the new key");
    assert_eq!(update["update"][0]["timeseries"]["humidity"][0]["value"], "41", "{update}");
    assert!(update["update"][0]["timeseries"].get("temperature").is_none(), "{update}");
}

/// The rows of an entity data page or update by device name, with their temperature.
fn temperatures(rows: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rows
        .as_array()
        .unwrap_or_else(|| panic!("rows: {rows}"))
        .iter()
        .map(|row| {
            let latest = &row["latest"];
            let name = latest["ENTITY_FIELD"]["name"]["value"].as_str().unwrap_or_default().to_string();
            (name, latest["TIME_SERIES"]["temperature"]["value"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn entity_data_for_queries_of_many_entities() {
    let server = Server::start();
    let (endpoint, sn1) = seeded(&server);
    uplink(&server, &endpoint, "SN-002,default,temperature,20,humidity,40");
    uplink(&server, &endpoint, "LAB-3,default,temperature,18.5,humidity,30");
    let lab = eventually(Duration::from_secs(5), || server.device("LAB-3")).expect("LAB-3 created");
    let lab = lab["id"]["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(5), || server.device("SN-002")).expect("SN-002 created");

    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));
    send(
        &mut ws,
        json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 1,
            "query": {
                "entityFilter": {"type": "entityType", "entityType": "DEVICE"},
                "pageLink": {"page": 0, "pageSize": 10, "sortOrder": {"key": {"type": "ENTITY_FIELD", "key": "name"}, "direction": "ASC"}},
                "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
                "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]},
            "latestCmd": {"keys": [{"type": "TIME_SERIES", "key": "temperature"}]}}]}),
    );
    let page = expect_update(&mut ws, "the page of devices");
    assert_eq!((page["cmdId"].clone(), page["cmdUpdateType"].clone(), page["errorCode"].clone()), (json!(1), json!("ENTITY_DATA"), json!(0)), "{page}");
    assert_eq!(page["update"], Value::Null);
    assert_eq!((page["data"]["totalElements"].clone(), page["data"]["totalPages"].clone(), page["data"]["hasNext"].clone()), (json!(3), json!(1), json!(false)), "{page}");
    let names: Vec<&str> = page["data"]["data"].as_array().unwrap().iter().map(|r| r["latest"]["ENTITY_FIELD"]["name"]["value"].as_str().unwrap()).collect();
    assert_eq!(names, ["LAB-3", "SN-001", "SN-002"], "sorted by name: {page}");
    assert_eq!(
        temperatures(&page["data"]["data"]),
        [("LAB-3".into(), "18.5".into()), ("SN-001".into(), "25.7".into()), ("SN-002".into(), "20".into())]
    );
    // The same rows as the REST query's.
    let rest = server.api(
        "POST",
        "/api/entitiesQuery/find",
        Some(json!({"entityFilter": {"type": "entityType", "entityType": "DEVICE"},
            "pageLink": {"page": 0, "pageSize": 10, "sortOrder": {"key": {"type": "ENTITY_FIELD", "key": "name"}, "direction": "ASC"}},
            "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
            "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]})),
    );
    let ids = |rows: &Value| rows.as_array().unwrap().iter().map(|r| r["entityId"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&page["data"]["data"]), ids(&rest["data"]), "{rest}");

    // An uplink of one device: an update of that device only.
    uplink(&server, &endpoint, "LAB-3,default,temperature,19,humidity,31");
    let update = expect_update(&mut ws, "LAB-3's uplink");
    assert_eq!((update["cmdId"].clone(), update["data"].clone(), update["cmdUpdateType"].clone()), (json!(1), Value::Null, json!("ENTITY_DATA")), "{update}");
    let rows = update["update"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{update}");
    assert_eq!(rows[0]["entityId"], json!({"entityType": "DEVICE", "id": lab}), "{update}");
    assert_eq!(rows[0]["latest"]["TIME_SERIES"]["temperature"]["value"], "19", "{update}");
    assert_eq!(ws_next(&mut ws, Duration::from_millis(500)), None, "no update for the other devices");

    // A page of one: only the entity on it is watched.
    send(
        &mut ws,
        json!({"entityDataCmds": [{"cmdId": 2, "query": {
            "entityFilter": {"type": "entityName", "entityType": "DEVICE", "entityNameFilter": "sn-"},
            "pageLink": {"page": 0, "pageSize": 1, "sortOrder": {"key": {"type": "ENTITY_FIELD", "key": "name"}, "direction": "ASC"}},
            "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
            "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]}}]}),
    );
    let page = expect_update(&mut ws, "the page of SN devices");
    assert_eq!(page["cmdId"], 2, "{page}");
    assert_eq!((page["data"]["totalElements"].clone(), page["data"]["totalPages"].clone(), page["data"]["hasNext"].clone()), (json!(2), json!(2), json!(true)), "{page}");
    assert_eq!(temperatures(&page["data"]["data"]), [("SN-001".into(), "25.7".into())]);
    uplink(&server, &endpoint, "SN-002,default,temperature,21,humidity,41");
    let update = expect_update(&mut ws, "SN-002's uplink for the list of all devices");
    assert_eq!(update["cmdId"], 1, "SN-002 is not on command 2's page: {update}");
    assert_eq!(ws_next(&mut ws, Duration::from_millis(500)), None, "command 2 is not told of SN-002");
    uplink(&server, &endpoint, "SN-001,default,temperature,26,humidity,41");
    let mut cmds: Vec<i64> = (0..2).map(|_| expect_update(&mut ws, "SN-001's uplink")).map(|u| {
        assert_eq!(u["update"][0]["entityId"]["id"], sn1.as_str(), "{u}");
        assert_eq!(u["update"][0]["latest"]["TIME_SERIES"]["temperature"]["value"], "26", "{u}");
        u["cmdId"].as_i64().unwrap()
    }).collect();
    cmds.sort();
    assert_eq!(cmds, [1, 2]);

    // The entity name filter alone: only the matching devices.
    send(
        &mut ws,
        json!({"entityDataCmds": [{"cmdId": 3, "query": {
            "entityFilter": {"type": "entityName", "entityType": "DEVICE", "entityNameFilter": "SN"},
            "pageLink": {"page": 0, "pageSize": 10},
            "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
            "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]}}]}),
    );
    let page = expect_update(&mut ws, "the devices named SN…");
    assert_eq!(temperatures(&page["data"]["data"]), [("SN-001".into(), "26".into()), ("SN-002".into(), "21".into())], "{page}");

    // Filters the REST query refuses are refused with its reason, not answered with nothing.
    send(
        &mut ws,
        json!({"entityDataCmds": [{"cmdId": 5, "query": {
            "entityFilter": {"type": "relationsQuery", "rootEntity": {"entityType": "DEVICE", "id": sn1}, "direction": "FROM"},
            "pageLink": {"page": 0, "pageSize": 10}}}]}),
    );
    let refused = expect_update(&mut ws, "an unsupported filter");
    assert_eq!((refused["cmdId"].clone(), refused["errorCode"].clone(), refused["cmdUpdateType"].clone()), (json!(5), json!(2), json!("ENTITY_DATA")), "{refused}");
    assert!(refused["errorMsg"].as_str().unwrap().contains("Unsupported entity filter type 'relationsQuery'"), "{refused}");
    assert_eq!((refused["data"].clone(), refused["update"].clone()), (Value::Null, Value::Null));
    send(&mut ws, json!({"entityDataCmds": [{"cmdId": 6, "query": {"entityFilter": {"type": "entityType", "entityType": "DEVICE"}}}]}));
    let refused = expect_update(&mut ws, "a query without a page link");
    assert_eq!((refused["errorCode"].clone(), refused["errorMsg"].clone()), (json!(2), json!("Page link is required")), "{refused}");
}

/// `coapgate bench-ws` end to end at a small size: every subscriber must count every stored
/// uplink, in the fixed-rate phase and in the full-speed run with subscribers. (The inbox bound
/// is raised so that a slow test machine cannot close a session and make the count short.)
#[test]
fn bench_ws_subscribers_get_every_update() {
    let server = Server::start_with(&[("WS_MAX_QUEUE_MESSAGES_PER_SESSION", "1000000")], &[]);
    let integration = server.seed_integration();
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench-ws", "--http", &server.http, "--url", endpoint, "--subscribers", "20"])
        .args(["--rate", "50", "--count", "50", "--duration", "30", "--rounds", "1", "--ingest-seconds", "1", "--json"])
        .env("COAPGATE_BENCH_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let latency = &report["latency"];
    assert_eq!(latency["uplinks_stored"], 50, "{report}");
    assert_eq!(latency["updates_expected"], 50 * 20, "{report}");
    assert_eq!(latency["updates_received"], 50 * 20, "{report}");
    assert_eq!(latency["subscribers_complete"], 20, "{report}");
    assert!(latency["update_latency_ms"]["max"].as_f64().unwrap() > 0.0, "{report}");
    let runs = report["ingest"]["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["subscribers"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 20], "{report}");
    let with = &runs[1];
    assert!(with["uplinks_stored"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(with["updates_received"], with["updates_expected"], "{report}");
    assert_eq!(with["sessions_closed"], 0, "{report}");
    assert_eq!(runs[0]["updates_received"], 0, "unsubscribed sessions get nothing: {report}");
    let device = server.device("WS-BENCH").expect("the bench's device");
    assert!(server.history_len(&device, "sent") > 50, "every run's uplinks were stored");
}

/// The next entity data message of `cmd_id` that carries a whole page (`data`), skipping
/// others (value updates, other commands); `None` when none came within `timeout`.
fn next_page(ws: &mut Ws, cmd_id: i64, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while let Some(message) = ws_next(ws, deadline.saturating_duration_since(Instant::now())) {
        if message["cmdId"] == cmd_id && !message["data"].is_null() {
            return Some(message);
        }
    }
    None
}

fn page_names(page: &Value) -> Vec<String> {
    page["data"]["data"].as_array().unwrap().iter().map(|r| r["latest"]["ENTITY_FIELD"]["name"]["value"].as_str().unwrap().to_string()).collect()
}

/// ThingsBoard's dynamic page: an entity data query is run again when entities are created
/// (by an uplink) or deleted (through REST), and when the latest value it sorts by changes on
/// its page; the new page comes whole, as `data`.
#[test]
fn entity_data_pages_follow_entity_changes() {
    let server = Server::start();
    let (endpoint, sn1) = seeded(&server);
    let mut ws = connect(&server, &format!("/api/ws?token={}", server.token()));
    send(
        &mut ws,
        json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 1, "query": {
            "entityFilter": {"type": "entityType", "entityType": "DEVICE"},
            "pageLink": {"page": 0, "pageSize": 10, "sortOrder": {"key": {"type": "ENTITY_FIELD", "key": "name"}, "direction": "ASC"}},
            "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
            "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]}}]}),
    );
    let page = expect_update(&mut ws, "the first page");
    assert_eq!(page_names(&page), ["SN-001"], "{page}");

    uplink(&server, &endpoint, "SN-002,default,temperature,20,humidity,40");
    let page = next_page(&mut ws, 1, Duration::from_secs(10)).expect("the page with the device the uplink created");
    assert_eq!(page_names(&page), ["SN-001", "SN-002"], "{page}");
    assert_eq!(page["update"], Value::Null, "{page}");
    assert_eq!(page["data"]["totalElements"], 2, "{page}");
    assert_eq!(temperatures(&page["data"]["data"])[1], ("SN-002".to_string(), "20".to_string()));
    // The new device is watched: its next values arrive as updates.
    uplink(&server, &endpoint, "SN-002,default,temperature,21,humidity,40");
    let update = expect_update(&mut ws, "the new device's values");
    assert_eq!(update["update"][0]["latest"]["TIME_SERIES"]["temperature"]["value"], "21", "{update}");

    server.api("DELETE", &format!("/api/device/{sn1}"), None);
    let page = next_page(&mut ws, 1, Duration::from_secs(10)).expect("the page without the deleted device");
    assert_eq!(page_names(&page), ["SN-002"], "{page}");

    // Sorted by the latest temperature, one per page: the device on the page cooling down
    // moves the other one onto it.
    uplink(&server, &endpoint, "SN-003,default,temperature,30,humidity,40");
    next_page(&mut ws, 1, Duration::from_secs(10)).expect("command 1 sees SN-003");
    send(
        &mut ws,
        json!({"cmds": [{"type": "ENTITY_DATA", "cmdId": 2, "query": {
            "entityFilter": {"type": "entityType", "entityType": "DEVICE"},
            "pageLink": {"page": 0, "pageSize": 1, "sortOrder": {"key": {"type": "TIME_SERIES", "key": "temperature"}, "direction": "DESC"}},
            "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}],
            "latestValues": [{"type": "TIME_SERIES", "key": "temperature"}]}}]}),
    );
    let page = next_page(&mut ws, 2, Duration::from_secs(10)).expect("the warmest device");
    assert_eq!(page_names(&page), ["SN-003"], "{page}");
    uplink(&server, &endpoint, "SN-003,default,temperature,10,humidity,40");
    let page = next_page(&mut ws, 2, Duration::from_secs(10)).expect("the page re-sorted");
    assert_eq!(page_names(&page), ["SN-002"], "{page}");
}
