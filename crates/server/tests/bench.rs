//! `coapgate bench`, the load generator, against a scripted CoAP peer: it must retransmit a CON
//! that got no answer (with `--retransmit`), acknowledge separate responses, count what it got,
//! keep to one request in flight per device, and send again under a new Message ID a request
//! the peer answered with an earlier exchange's reply; and against the server with two threads.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coapgate_coap::message::{Code, Message, MessageType, Token};
use common::{Server, eventually};
use serde_json::Value;

#[derive(Default)]
struct Seen {
    /// Requests (peer, message id) already dropped once.
    dropped: HashSet<(SocketAddr, u16)>,
    /// Empty ACKs received for our separate responses, by their message id.
    acks: HashSet<u16>,
    /// Requests of each peer that arrived while an earlier one of that peer was unanswered.
    overlapping: usize,
    open: HashMap<SocketAddr, u16>,
}

/// Drops the first transmission of every request; answers the retransmission with an empty ACK
/// and then a separate CON 2.04, which the generator must acknowledge.
fn scripted_peer(socket: UdpSocket, seen: Arc<Mutex<Seen>>) {
    let mut buf = [0u8; 1500];
    let mut next_id: u16 = 1;
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        let message = Message::parse(&buf[..n]).unwrap();
        let mut seen = seen.lock().unwrap();
        if message.mtype == MessageType::Acknowledgement {
            seen.acks.insert(message.message_id);
            continue;
        }
        if let Some(open) = seen.open.get(&peer)
            && *open != message.message_id
        {
            seen.overlapping += 1;
        }
        seen.open.insert(peer, message.message_id);
        if seen.dropped.insert((peer, message.message_id)) {
            continue;
        }
        socket.send_to(&Message::empty_ack(message.message_id).encode(), peer).unwrap();
        let response = Message::separate_response(&message, Code::CHANGED, Vec::new(), next_id);
        next_id += 1;
        seen.open.remove(&peer);
        socket.send_to(&response.encode(), peer).unwrap();
    }
}

#[test]
fn retransmits_acknowledges_separate_responses_and_counts_them() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let peer = {
        let seen = seen.clone();
        std::thread::spawn(move || scripted_peer(socket, seen))
    };
    let out = Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench", "--url", &format!("coap://127.0.0.1:{port}/i/key"), "--devices", "3", "--count", "6"])
        .args(["--retransmit", "--json", "--duration", "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 6);
    assert_eq!(report["answered"], 6);
    assert_eq!(report["timeouts"], 0);
    assert_eq!(report["retransmissions"], 6, "every request was dropped once");
    assert_eq!(report["codes"]["2.04"], 6);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.acks.len(), 6, "each separate response acknowledged");
    assert_eq!(seen.overlapping, 0, "one request at a time per device");
    drop(seen);
    // The peer's socket times out once the generator is gone; nothing else to stop.
    drop(peer);
}

/// Answers every CON at once with a piggybacked 2.04, until the socket has been quiet for 5 s.
fn answering_peer(socket: UdpSocket) {
    let mut buf = [0u8; 1500];
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        let Ok(request) = Message::parse(&buf[..n]) else { continue };
        let mut ack = Message::new(MessageType::Acknowledgement, Code::CHANGED, request.message_id);
        ack.token = request.token;
        let _ = socket.send_to(&ack.encode(), peer);
    }
}

#[test]
fn rate_caps_the_requests_started_per_second() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || answering_peer(socket));
    let out = Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench", "--url", &format!("coap://127.0.0.1:{port}/i/key"), "--devices", "20", "--count", "100000"])
        .args(["--rate", "100", "--duration", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = report["sent"].as_u64().unwrap();
    // Request n starts no earlier than n / rate: at most 100 in the first second, plus the first.
    assert!(sent <= 101, "{report}");
    assert!(sent >= 10, "the generator must still send at the rate it was given: {report}");
    assert_eq!(report["answered"], sent, "{report}");
    drop(peer);
}

/// Answers the first request of every peer with a piggybacked 2.01 carrying another token (as a
/// server does that remembers an exchange of an earlier process with the same port and Message
/// ID), and every later one properly; records the Message IDs each peer used.
fn replaying_peer(socket: UdpSocket, message_ids: Arc<Mutex<HashMap<SocketAddr, Vec<u16>>>>) {
    let mut buf = [0u8; 1500];
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        let Ok(request) = Message::parse(&buf[..n]) else { continue };
        let mut seen = message_ids.lock().unwrap();
        let ids = seen.entry(peer).or_default();
        ids.push(request.message_id);
        let mut ack = Message::new(MessageType::Acknowledgement, Code::CREATED, request.message_id);
        ack.token = if ids.len() == 1 { Token::from_slice(b"old!").unwrap() } else { request.token };
        let _ = socket.send_to(&ack.encode(), peer);
    }
}

#[test]
fn a_replayed_answer_sends_the_request_again_under_a_new_message_id() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let message_ids = Arc::new(Mutex::new(HashMap::new()));
    let peer = {
        let message_ids = message_ids.clone();
        std::thread::spawn(move || replaying_peer(socket, message_ids))
    };
    let out = Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench", "--url", &format!("coap://127.0.0.1:{port}/i/key"), "--devices", "4", "--count", "12"])
        .args(["--json", "--duration", "60", "--timeout", "30"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sent"], 12, "{report}");
    assert_eq!(report["answered"], 12, "{report}");
    assert_eq!(report["timeouts"], 0, "no request waits out its timeout: {report}");
    assert_eq!(report["replays"], 4, "one replayed answer per device: {report}");
    assert_eq!(report["codes"]["2.01"], 12, "{report}");
    let message_ids = message_ids.lock().unwrap();
    assert_eq!(message_ids.len(), 4);
    for ids in message_ids.values() {
        // The replayed request went again at once under the next Message ID, and the device went
        // on from there: four transmissions for three requests, every Message ID a new one.
        assert_eq!(ids.len(), 4, "{ids:?}");
        for pair in ids.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1), "{ids:?}");
        }
    }
    drop(message_ids);
    drop(peer);
}

/// Two generator threads against the server: every request is sent once and answered 2.01, and
/// the threads' request numbers together are those of a one-thread run (one device per number,
/// none twice, none missing).
#[test]
fn two_threads_send_every_request_once_and_get_every_answer() {
    let server = Server::start();
    let integration = server.seed_integration();
    let url = integration["configuration"]["clientConfiguration"]["coapEndpoint"].as_str().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(["bench", "--url", &url, "--threads", "2", "--devices", "9", "--in-flight", "5", "--count", "301"])
        .args(["--payload", "T-{seq},default,temperature,{device}", "--retransmit", "--json", "--duration", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["threads"], 2, "{report}");
    assert_eq!(report["sent"], 301, "{report}");
    assert_eq!(report["answered"], 301, "{report}");
    assert_eq!(report["timeouts"], 0, "{report}");
    assert_eq!(report["codes"]["2.01"], 301, "{report}");
    assert!(report["generator_cpu"]["us_per_request"].as_f64().unwrap() > 0.0, "{report}");
    let devices = eventually(Duration::from_secs(30), || {
        let page = server.api("GET", "/api/tenant/devices?pageSize=1&page=0", None);
        let n = page["totalElements"].as_u64().unwrap();
        (n >= 301).then_some(n)
    });
    assert_eq!(devices, Some(301), "one device per request number: {report}");
    for name in ["T-0", "T-1", "T-150", "T-300"] {
        assert!(server.device(name).is_some(), "{name} missing");
    }
    assert!(server.device("T-301").is_none(), "no request number beyond --count");
    // {device} numbers the sockets across threads: the 9 sockets sent 0 to 8, nothing else.
    let device = server.device("T-300").unwrap();
    let value: f64 = server.latest(&device)["temperature"].as_str().unwrap().parse().unwrap();
    assert!((0.0..9.0).contains(&value) && value.fract() == 0.0, "{value}");
}

#[test]
fn threads_are_refused_for_dtls_and_beyond_the_devices() {
    for (url, extra, expected) in [
        ("coaps://127.0.0.1:1/x", ["--devices", "4"], "DTLS run (coaps://) uses one thread"),
        ("coap://127.0.0.1:1/x", ["--devices", "1"], "must not exceed --devices or --in-flight"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_coapgate"))
            .args(["bench", "--url", url, "--threads", "2", "--count", "1"])
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}
