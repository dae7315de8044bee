//! Block-wise uploads (RFC 7959 Block1) with libcoap's `coap-client-notls -b`, the body limit
//! (4.13 with Size1), and an incomplete transfer (4.08).

mod common;

use coapgate_coap::message::{BlockOption, Code, MessageType, option};
use common::*;
use serde_json::json;

/// A converter that stores the body's length and its last characters, so the test can tell
/// that every block arrived in order.
const LENGTH_DECODER: &str =
    "var s = decodeToString(payload); return {deviceName: 'big', telemetry: {len: s.length, tail: s.substring(s.length - 6)}};";

#[test]
fn coap_client_block_wise_upload_is_reassembled() {
    let server = Server::start();
    let integration = server.create_integration("big", &server.create_converter("len", LENGTH_DECODER), json!({}));
    let endpoint = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string();
    let dir = temp_dir("blockwise");
    let body: String = (0..700).map(|i| char::from(b'a' + (i % 26) as u8)).collect::<String>() + "-END-1";
    std::fs::write(dir.join("body.txt"), &body).unwrap();
    let out = shell(&format!(
        "coap-client-notls -m post -b 64 -t text/plain -f {} {endpoint}",
        dir.join("body.txt").display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let device = server.device("big").expect("the reassembled uplink was stored");
    let latest = server.latest(&device);
    assert_eq!(latest["len"], body.len().to_string());
    assert_eq!(latest["tail"], "-END-1");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bodies_over_the_limit_get_413_with_size1() {
    let server = Server::start_with(&[("COAP_MAX_BODY_BYTES", "200")], &[]);
    let integration = server.create_integration("big", &server.create_converter("len", LENGTH_DECODER), json!({}));
    let path = endpoint_path(&integration);
    let mut client = CoapClient::new(server.coap);
    // In one datagram.
    let m = client.build(MessageType::Confirmable, Code::POST, &path, &[b'x'; 300]);
    let r = client.exchange(&m);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.get_uint_option(option::SIZE1), Some(200));
    // Block-wise, announced with Size1.
    let mut m = client.build(MessageType::Confirmable, Code::POST, &path, &[b'x'; 64]);
    m.set_block1(BlockOption::new(0, true, 2).unwrap());
    m.set_uint_option(option::SIZE1, 1000);
    let r = client.exchange(&m);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.get_uint_option(option::SIZE1), Some(200));
    // Block-wise, found out by accumulation.
    let mut last = Code::EMPTY;
    for num in 0..5u32 {
        let mut m = client.build(MessageType::Confirmable, Code::POST, &path, &[b'y'; 64]);
        m.set_block1(BlockOption::new(num, true, 2).unwrap());
        last = client.exchange(&m).code;
        if last != Code::CONTINUE {
            break;
        }
    }
    assert_eq!(last, Code::REQUEST_ENTITY_TOO_LARGE);
    assert!(server.device("big").is_none(), "nothing stored");
}

#[test]
fn a_transfer_without_its_first_block_is_incomplete() {
    let server = Server::start();
    let integration = server.create_integration("big", &server.create_converter("len", LENGTH_DECODER), json!({}));
    let path = endpoint_path(&integration);
    let mut client = CoapClient::new(server.coap);
    let mut m = client.build(MessageType::Confirmable, Code::POST, &path, &[b'z'; 32]);
    m.set_block1(BlockOption::new(3, false, 1).unwrap());
    assert_eq!(client.exchange(&m).code, Code::REQUEST_ENTITY_INCOMPLETE);

    // A proper two-block transfer: 2.31 with the Block1 echo, then 2.01 echoing the last block.
    let mut first = client.build(MessageType::Confirmable, Code::POST, &path, &[b'a'; 32]);
    first.set_block1(BlockOption::new(0, true, 1).unwrap());
    let r = client.exchange(&first);
    assert_eq!(r.code, Code::CONTINUE);
    assert_eq!(r.block1().map(|b| (b.num(), b.more())), Some((0, true)));
    let mut second = client.build(MessageType::Confirmable, Code::POST, &path, b"-END-2");
    second.set_block1(BlockOption::new(1, false, 1).unwrap());
    let r = client.exchange(&second);
    assert_eq!(r.code, Code::CREATED);
    assert_eq!(r.block1().map(|b| (b.num(), b.more())), Some((1, false)));
    let latest = server.latest(&server.device("big").unwrap());
    assert_eq!((latest["len"].as_str(), latest["tail"].as_str()), (Some("38"), Some("-END-2")));
}
