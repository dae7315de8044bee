//! `coapgate bench`, the load generator, against a scripted CoAP peer: it must retransmit a CON
//! that got no answer (with `--retransmit`), acknowledge separate responses, count what it got,
//! and keep to one request in flight per device.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coapgate_coap::message::{Code, Message, MessageType};
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
