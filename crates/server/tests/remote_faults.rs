//! Exactly once through a remote, across both kinds of failure: under CON load on the remote,
//! the platform is killed for 30 s and restarted; then the remote is killed with SIGKILL while
//! it drains its outbox, and restarted. Every uplink answered 2.01 is stored on the platform
//! exactly once, and nothing that was stored was left unanswered at the end.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, Message, MessageType};
use common::*;
use serde_json::json;

const DEVICES: usize = 16;

/// What one device saw: the sequence numbers answered 2.01, those answered 5.03 (not stored),
/// and whether a request was still unanswered when the run ended.
#[derive(Default)]
struct DeviceLog {
    acked: Vec<u32>,
    refused: Vec<u32>,
    unanswered: Option<u32>,
}

/// A device sending one CON at a time and retransmitting it (same bytes) until it is answered:
/// through the platform's outage, through the remote's death and restart. After `stop` it sends
/// nothing new; after `give_up` it stops retransmitting.
fn run_device(remote: SocketAddr, path: Vec<String>, device: usize, stop: Arc<AtomicBool>, give_up: Arc<AtomicBool>) -> DeviceLog {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut log = DeviceLog::default();
    let mut buf = [0u8; 1500];
    for seq in 1.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let m = seq_request(&path, &format!("edge-{device}"), seq);
        let bytes = m.encode();
        let code = loop {
            if give_up.load(Ordering::Relaxed) {
                log.unanswered = Some(seq);
                return log;
            }
            socket.send_to(&bytes, remote).unwrap();
            let answered = loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => match Message::parse(&buf[..n]) {
                        Ok(r) if r.message_id == m.message_id && r.mtype == MessageType::Acknowledgement => break Some(r.code),
                        _ => continue,
                    },
                    Err(_) => break None,
                }
            };
            if let Some(code) = answered {
                break code;
            }
        };
        // A fleet's pace (about 50 uplinks/s per device), so the 30 s outage piles up a backlog
        // a debug build drains in seconds; the throughput is measured in BENCHMARKS.md.
        std::thread::sleep(Duration::from_millis(20));
        match code {
            Code::CREATED => log.acked.push(seq),
            Code::SERVICE_UNAVAILABLE => {
                log.refused.push(seq);
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("device {device} seq {seq}: unexpected {other:?}"),
        }
    }
    log
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn acknowledged_uplinks_are_stored_once_through_platform_outage_and_remote_kill_9() {
    let rpc_port = free_tcp_port();
    let rpc_env = |port: &str| -> Vec<(&'static str, String)> {
        vec![
            ("INTEGRATIONS_RPC_ENABLED", "true".into()),
            ("INTEGRATIONS_RPC_BIND_ADDRESS", "127.0.0.1".into()),
            ("INTEGRATIONS_RPC_PORT", port.to_string()),
        ]
    };
    let port = rpc_port.to_string();
    let env = rpc_env(&port);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let platform = Server::start_in(temp_dir("platform"), &env, &[]);
    let converter = platform.create_converter("seq", SEQ_DECODER);
    let integration = platform.create_integration("edge", &converter, json!({"remote": true}));
    let (key, secret) = (integration["routingKey"].as_str().unwrap().to_string(), integration["secret"].as_str().unwrap().to_string());
    let path = endpoint_path(&integration);
    let coap_port = free_udp_port().to_string();
    let remote_env = [("COAP_BIND_PORT", coap_port.as_str())];
    let remote = Remote::start_in(temp_dir("remote"), rpc_port, &key, &secret, &remote_env);
    remote.wait_for("linked to the platform", Duration::from_secs(20));

    let (stop, give_up) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| {
            let (addr, path, stop, give_up) = (remote.coap, path.clone(), stop.clone(), give_up.clone());
            std::thread::spawn(move || run_device(addr, path, d, stop, give_up))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // The platform dies for 30 s; the remote keeps answering from its outbox.
    let platform_dir = platform.kill();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let platform = Server::start_in(platform_dir, &env, &[]);
    eprintln!("platform back after {:?}", outage.elapsed());

    // Kill the remote while it drains what piled up, and start it again on the same port.
    remote.wait_for("platform unreachable", Duration::from_secs(1));
    let linked = remote.count("linked to the platform");
    let drained_from = eventually(Duration::from_secs(30), || {
        (remote.count("linked to the platform") > linked).then(|| platform.api("GET", &format!("/api/integration/{}", integration["id"]["id"].as_str().unwrap()), None))
    })
    .expect("the remote linked again after the outage");
    // No pause: the drain is fast (a backlog of 20,000 takes about 0.1 s here).
    eprintln!("remote status when killed: {}", drained_from["remoteStatus"]);
    for l in remote.output_text().lines().filter(|l| l.contains("linked") || l.contains("unreachable")) { eprintln!("REMOTE: {l}"); }
    let remote_dir = remote.kill();
    std::thread::sleep(Duration::from_millis(500));
    let remote = Remote::start_in(remote_dir, rpc_port, &key, &secret, &remote_env);
    // It died with part of the backlog still waiting (the banner counts what the outbox holds).
    remote.wait_for("bytes waiting", Duration::from_secs(5));
    let waiting: u64 = remote
        .output_text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("outbox")?.split('(').nth(1)?.split_whitespace().next()?.parse().ok())
        .expect("the outbox line of the banner");
    assert!(waiting > 0, "the remote was killed after it had drained: nothing tested");
    eprintln!("{waiting} uplinks waited in the outbox of the restarted remote");
    remote.wait_for("linked to the platform", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(10));
    give_up.store(true, Ordering::Relaxed);
    let logs: Vec<DeviceLog> = devices.into_iter().map(|t| t.join().unwrap()).collect();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let refused: usize = logs.iter().map(|l| l.refused.len()).sum();
    eprintln!("{acked} uplinks acknowledged, {refused} refused with 5.03");
    assert!(acked > 500, "too little load to test anything ({acked} acknowledged)");
    for (d, log) in logs.iter().enumerate() {
        assert_eq!(log.unanswered, None, "device {d}: a request was never answered");
    }

    // Everything drains; then the platform holds exactly what was acknowledged.
    let id = integration["id"]["id"].as_str().unwrap().to_string();
    let status = || platform.api("GET", &format!("/api/integration/{id}"), None)["remoteStatus"].clone();
    let drained = eventually(Duration::from_secs(120), || Some(status()).filter(|s| s["connected"] == true && s["backlogRecords"] == 0));
    assert!(drained.is_some(), "the outbox never drained: {}", status());
    eprintln!("drained: {}", drained.unwrap());
    let mut expected: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (d, log) in logs.iter().enumerate() {
        expected.insert(format!("edge-{d}"), log.acked.clone());
    }
    for (name, want) in &expected {
        let Some(device) = platform.device(name) else {
            assert!(want.is_empty(), "{name} missing although {} uplinks were acknowledged", want.len());
            continue;
        };
        let stored = stored_seqs(&platform, device["id"]["id"].as_str().unwrap());
        assert_eq!(&stored, want, "{name}: every acknowledged uplink stored exactly once, nothing else");
    }
    drop(remote);
}
