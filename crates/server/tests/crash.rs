//! Exactly once across a crash: under load the server is killed with SIGKILL and restarted on
//! the same data; every uplink that got 2.01 is stored, and CONs retransmitted across the
//! restart (the same bytes from the same port) are answered without being stored twice.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coapgate_coap::message::{Code, Message, MessageType, Token, option};
use common::*;
use serde_json::json;

/// A device's view of the run: what the server acknowledged, and the request that was in
/// flight (sent, unanswered) when the server died.
struct DeviceLog {
    socket: UdpSocket,
    acked: Vec<(u32, Vec<u8>)>,
    pending: Option<(u32, Vec<u8>)>,
}

fn request(path: &[String], device: usize, seq: u32) -> Message {
    let mid = (seq as u16).wrapping_add(device as u16 * 1000);
    let mut m = Message::new(MessageType::Confirmable, Code::POST, mid);
    m.token = Token::from_slice(&seq.to_be_bytes()).unwrap();
    for s in path {
        m.add_option(option::URI_PATH, s.as_bytes().to_vec());
    }
    m.payload = format!("crash-{device},{seq}").into_bytes();
    m
}

fn run_device(server: std::net::SocketAddr, path: Vec<String>, device: usize, stop: Arc<AtomicBool>) -> DeviceLog {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
    let mut log = DeviceLog { socket, acked: Vec::new(), pending: None };
    let mut buf = [0u8; 1500];
    for seq in 1.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let m = request(&path, device, seq);
        let bytes = m.encode();
        log.socket.send_to(&bytes, server).unwrap();
        let answer = loop {
            match log.socket.recv_from(&mut buf) {
                Ok((n, _)) => match Message::parse(&buf[..n]) {
                    Ok(r) if r.message_id == m.message_id => break Some(r.code),
                    _ => continue,
                },
                Err(_) => break None,
            }
        };
        match answer {
            Some(code) => {
                assert_eq!(code, Code::CREATED, "device {device} seq {seq}");
                log.acked.push((seq, bytes));
            }
            None => {
                // The server is gone: keep the request to retransmit after the restart.
                log.pending = Some((seq, bytes));
                break;
            }
        }
    }
    log
}

#[test]
fn acknowledged_uplinks_survive_kill_9_and_retransmissions_are_stored_once() {
    let dir = temp_dir("crash");
    let server = Server::start_in(dir.clone(), &[], &[]);
    let port = server.coap.port();
    let converter = server.create_converter(
        "seq",
        // Each uplink gets its own timestamp (seq * 1000 plus the milliseconds of processing
        // time): two sequence numbers never share one, and storing the same uplink twice gives
        // two points. (Server time alone can repeat within a millisecond for a fast device, and
        // points of one key at one timestamp are one point, as in ThingsBoard.)
        "var t = decodeToString(payload).split(','); var seq = parseInt(t[1]); \
         return {deviceName: t[0], telemetry: {ts: seq * 1000 + Date.now() % 1000, values: {seq: seq}}};",
    );
    let integration = server.create_integration("crash", &converter, json!({}));
    let path = endpoint_path(&integration);

    let stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = (0..16)
        .map(|d| {
            let (addr, path, stop) = (server.coap, path.clone(), stop.clone());
            std::thread::spawn(move || run_device(addr, path, d, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let dir = server.kill();
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<DeviceLog> = devices.into_iter().map(|t| t.join().unwrap()).collect();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    assert!(acked > 50, "too little load before the crash ({acked} uplinks) to test anything");

    let server = Server::start_in(dir, &[("COAP_BIND_PORT", &port.to_string())], &[]);
    assert_eq!(server.coap.port(), port);
    let mut buf = [0u8; 1500];
    let mut retransmit = |log: &DeviceLog, bytes: &[u8]| -> Code {
        let sent = Message::parse(bytes).unwrap();
        log.socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        log.socket.send_to(bytes, server.coap).unwrap();
        loop {
            let (n, _) = log.socket.recv_from(&mut buf).expect("an answer to the retransmission");
            let r = Message::parse(&buf[..n]).unwrap();
            if r.message_id == sent.message_id && r.mtype == MessageType::Acknowledgement {
                return r.code;
            }
        }
    };
    let mut expected: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut replayed = 0;
    for (d, log) in logs.iter().enumerate() {
        let seqs = expected.entry(format!("crash-{d}")).or_default();
        seqs.extend(log.acked.iter().map(|(s, _)| *s));
        // Uplinks acknowledged before the crash whose ACK we pretend was lost.
        for (_, bytes) in log.acked.iter().rev().take(5) {
            assert_eq!(retransmit(log, bytes), Code::CREATED);
            replayed += 1;
        }
        // The request in flight when the server died: stored or not, it must end up stored once.
        if let Some((seq, bytes)) = &log.pending {
            assert_eq!(retransmit(log, bytes), Code::CREATED, "device {d} seq {seq} after restart");
            seqs.push(*seq);
        }
    }
    assert!(replayed > 0);

    for (name, seqs) in &expected {
        let Some(device) = server.device(name) else {
            assert!(seqs.is_empty(), "{name} missing although {} uplinks were acknowledged", seqs.len());
            continue;
        };
        let stored = stored_seqs(&server, device["id"]["id"].as_str().unwrap());
        let mut want = seqs.clone();
        want.sort_unstable();
        assert_eq!(stored, want, "{name}: every acknowledged uplink stored exactly once");
    }
}
