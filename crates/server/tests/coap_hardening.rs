//! Attacks from one source host on the others (issue #13): over real UDP, the attacker on
//! 127.0.0.2 and the device on 127.0.0.3 (both loopback, so both reach the server on 127.0.0.1).
//! Block-wise lockout, a deduplication flood, a retransmission after the exchange left the
//! cache, a converter blocked by one source's crafted payloads, and RFC 7252's 4.02 for
//! unknown critical options.

mod common;

use std::time::Duration;

use coapgate_coap::message::{BlockOption, Code, Message, MessageType, option};
use common::*;
use serde_json::json;

const ATTACKER: &str = "127.0.0.2";
const DEVICE: &str = "127.0.0.3";

/// Reads answers on `client` until `n` arrived (or none comes for a while).
fn drain(client: &CoapClient, n: usize) -> Vec<Message> {
    (0..n).map_while(|_| client.receive()).collect()
}

#[test]
fn a_block_wise_flood_from_one_host_does_not_lock_out_another() {
    let server = Server::start();
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    // The 1,024 datagrams: block 0 from 256 ports x 4 query values (a transfer each).
    let attackers: Vec<CoapClient> = (0..256).map(|_| CoapClient::from_host(server.coap, ATTACKER)).collect();
    for (i, attacker) in attackers.iter().enumerate() {
        for q in 0..4 {
            let mut m = Message::new(MessageType::Confirmable, Code::POST, (i * 4 + q) as u16);
            for s in &path {
                m.add_option(option::URI_PATH, s.as_bytes().to_vec());
            }
            m.add_option(option::URI_QUERY, format!("q={q}").into_bytes());
            m.set_block1(BlockOption::new(0, true, 0).unwrap());
            m.payload = vec![b'x'; 16];
            attacker.send(&m);
        }
    }
    let answers: Vec<Code> = attackers.iter().flat_map(|a| drain(a, 4)).map(|m| m.code).collect();
    assert_eq!(answers.len(), 1024, "every block 0 is answered");
    let refused = answers.iter().filter(|&&c| c == Code::SERVICE_UNAVAILABLE).count();
    assert!(refused >= 900, "the attacker is held to its share: {refused} of 1024 refused");

    // A device on another host uploads block-wise as usual.
    let mut device = CoapClient::from_host(server.coap, DEVICE);
    let body = format!("{SEED_PAYLOAD}{}", ",pad,1".repeat(10));
    let blocks: Vec<&[u8]> = body.as_bytes().chunks(16).collect();
    for (num, chunk) in blocks.iter().enumerate() {
        let more = num + 1 < blocks.len();
        let mut m = device.build(MessageType::Confirmable, Code::POST, &path, chunk);
        m.set_block1(BlockOption::new(num as u32, more, 0).unwrap());
        let r = device.exchange(&m);
        let expected = if more { Code::CONTINUE } else { Code::CREATED };
        assert_eq!(r.code, expected, "block {num} of the device's upload");
    }
    assert_eq!(server.latest(&server.device("SN-001").unwrap())["temperature"], "25.7");
}

#[test]
fn a_dedup_flood_from_one_host_does_not_make_another_hosts_retransmission_count_twice() {
    // A small cache keeps the flood short: 400 entries, 100 per host.
    let server = Server::start_with(&[("COAP_DEDUP_MAX_ENTRIES", "400")], &[]);
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let mut device = CoapClient::from_host(server.coap, DEVICE);
    let uplink = device.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    let first = device.exchange(&uplink);
    assert_eq!(first.code, Code::CREATED);

    // The flood in small: four-byte GETs (each answered, so each entry is evictable)
    // from 40 ports, three times the cache.
    let attackers: Vec<CoapClient> = (0..40).map(|_| CoapClient::from_host(server.coap, ATTACKER)).collect();
    for round in 0..30u16 {
        for attacker in &attackers {
            attacker.send_raw(&Message::new(MessageType::Confirmable, Code::GET, round).encode());
        }
        for attacker in &attackers {
            assert!(attacker.receive().is_some(), "the flood is answered");
        }
    }

    // The device's retransmission is answered as the first time, and not stored again.
    let again = device.exchange(&uplink);
    assert_eq!(again.encode(), first.encode());
    let sn = server.device("SN-001").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.history_len(&sn, "temperature"), 1, "the retransmission was stored again");
}

#[test]
fn a_retransmission_after_its_exchange_left_the_cache_is_answered_and_stored_once() {
    // 40 entries, 10 per host: the device's own later traffic pushes its stored exchange out.
    let server = Server::start_with(&[("COAP_DEDUP_MAX_ENTRIES", "40")], &[]);
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let mut device = CoapClient::from_host(server.coap, DEVICE);
    let uplink = device.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    let first = device.exchange(&uplink);
    assert_eq!(first.code, Code::CREATED);
    for i in 0..30 {
        let payload = format!("SN-{i},default,temperature,{i}");
        assert_eq!(device.post(&path, payload.as_bytes()), Code::CREATED);
    }
    // Other ports of the same host too.
    for _ in 0..10 {
        let mut other = CoapClient::from_host(server.coap, DEVICE);
        assert_eq!(other.post(&path, b"SN-X,default,t,1"), Code::CREATED);
    }
    let again = device.exchange(&uplink);
    assert_eq!(again.encode(), first.encode(), "the same 2.01 as the first time");
    std::thread::sleep(Duration::from_millis(200));
    let sn = server.device("SN-001").unwrap();
    assert_eq!(server.history_len(&sn, "temperature"), 1, "the retransmission was stored again");
}

#[test]
fn one_sources_crafted_payloads_do_not_block_the_converter_for_another() {
    let server = Server::start_with(&[("JS_MAX_EXECUTION_TIME_MS", "200")], &[]);
    // Endless on the crafted payload, the seed converter otherwise.
    let decoder = format!("if (decodeToString(payload) === 'crafted') {{ while (true) {{}} }}\n{SEED_DECODER}");
    let converter = server.create_converter("picky", &decoder);
    let integration = server.create_integration("picky", &converter, json!({}));
    let cid = converter["id"]["id"].as_str().unwrap().to_string();
    let path = endpoint_path(&integration);
    let mut attacker = CoapClient::from_host(server.coap, ATTACKER);
    let texts: Vec<String> = (0..4)
        .map(|_| {
            let m = attacker.build(MessageType::Confirmable, Code::POST, &path, b"crafted");
            let r = attacker.exchange(&m);
            assert_eq!(r.code, Code::BAD_REQUEST);
            String::from_utf8_lossy(&r.payload).into_owned()
        })
        .collect();
    assert!(texts[3].contains("Script invocation is blocked due to maximum error count 3"), "{}", texts[3]);
    for text in &texts {
        assert!(!text.contains(&cid), "the device is told the converter's id: {text}");
    }
    // The attacker is blocked even for a good payload; the device on another host is not.
    let m = attacker.build(MessageType::Confirmable, Code::POST, &path, b"SN-002,default,temperature,1");
    assert_eq!(attacker.exchange(&m).code, Code::BAD_REQUEST);
    let mut device = CoapClient::from_host(server.coap, DEVICE);
    assert_eq!(device.post(&path, SEED_PAYLOAD.as_bytes()), Code::CREATED);
    assert_eq!(server.latest(&server.device("SN-001").unwrap())["temperature"], "25.7");
}

#[test]
fn an_unknown_critical_option_gets_4_02_and_nothing_is_stored() {
    let server = Server::start();
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let mut client = CoapClient::new(server.coap);
    // Option 9 (OSCORE) is critical and unknown to this server.
    let mut con = client.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    con.add_option(9, b"x".to_vec());
    let r = client.exchange(&con);
    assert_eq!((r.mtype, r.code), (MessageType::Acknowledgement, Code::BAD_OPTION));
    // Its retransmission gets the same answer.
    assert_eq!(client.exchange(&con).encode(), r.encode());
    let mut non = client.build(MessageType::NonConfirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    non.add_option(9, b"x".to_vec());
    let r = client.exchange(&non);
    assert_eq!((r.mtype, r.code), (MessageType::Reset, Code::EMPTY));
    // An unknown elective option (even number) is ignored, as RFC 7252 says.
    let mut elective = client.build(MessageType::Confirmable, Code::POST, &path, b"SN-002,default,temperature,2");
    elective.add_option(2048, b"x".to_vec());
    assert_eq!(client.exchange(&elective).code, Code::CREATED);

    // The real libcoap client.
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap();
    let out = shell(&format!("echo -n '{SEED_PAYLOAD}' | coap-client-notls -m post -O 9,x -t text/plain -f- {endpoint}"));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("4.02"), "coap-client-notls printed: {printed}");
    assert!(server.device("SN-001").is_none(), "a request with an unknown critical option was stored");
    assert!(server.device("SN-002").is_some());
}

#[test]
fn a_retransmission_only_the_durable_log_remembers_is_answered_from_it_and_stored_once() {
    // 8 entries (2 per host) and 8 keys in the committed index: the device's later uplinks
    // push its first exchange out of both, so only `coap_exchange_log` still knows it.
    let server = Server::start_with(&[("COAP_DEDUP_MAX_ENTRIES", "8")], &[]);
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let mut device = CoapClient::from_host(server.coap, DEVICE);
    let uplink = device.build(MessageType::Confirmable, Code::POST, &path, SEED_PAYLOAD.as_bytes());
    let first = device.exchange(&uplink);
    assert_eq!(first.code, Code::CREATED);
    for i in 0..30 {
        let payload = format!("SN-{i},default,temperature,{i}");
        assert_eq!(device.post(&path, payload.as_bytes()), Code::CREATED);
    }
    let again = device.exchange(&uplink);
    assert_eq!(again.encode(), first.encode(), "the 2.01 stored with the uplink");
    std::thread::sleep(Duration::from_millis(200));
    let sn = server.device("SN-001").unwrap();
    assert_eq!(server.history_len(&sn, "temperature"), 1, "the retransmission was stored again");
    // New uplinks of that device are not held up: they are ahead of its newest message id.
    assert_eq!(device.post(&path, b"SN-001,default,temperature,26"), Code::CREATED);
    assert_eq!(server.history_len(&sn, "temperature"), 2);
}
