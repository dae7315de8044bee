//! Several `coapgate serve` nodes on one PostgreSQL database (a private cluster the tests start):
//! a retransmission that reaches another node, the same message at two nodes at once, one new
//! device name at three nodes at once, a converter saved on one node and used at once by the
//! others, and three nodes sharing one CoAP port (SO_REUSEPORT) under CON load from 1,000
//! devices while nodes are killed with SIGKILL and restarted.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, Message, MessageType, Token, option};
use common::*;
use serde_json::{Value, json};

/// A node on `db`, with `env` (e.g. a shared CoAP port).
fn node(db: &PgDatabase, env: &[(&str, &str)]) -> Server {
    Server::start_on(db, temp_dir("cluster-node"), env)
}

/// The request `NAME,SEQ` with Message ID and token from `seq`.
fn request(mtype: MessageType, path: &[String], name: &str, seq: u32) -> Message {
    let mut m = Message::new(mtype, Code::POST, seq as u16);
    m.token = Token::from_slice(&seq.to_be_bytes()).unwrap();
    for s in path {
        m.add_option(option::URI_PATH, s.as_bytes().to_vec());
    }
    m.payload = format!("{name},{seq}").into_bytes();
    m
}

/// The next datagram `socket` receives, with its sender.
fn receive(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

/// A device's copy sent to several nodes (at once, or one after the other) is stored once, and
/// every node answers it with the same bytes: the first copy's response, stored with its data
/// — for a NON too, whose response carries a Message ID of the node that first answered.
#[test]
fn a_message_at_two_nodes_is_stored_once_and_answered_alike() {
    if postgres_already("a_message_at_two_nodes_is_stored_once_and_answered_alike") {
        return;
    }
    let db = PgCluster::database();
    let (a, b) = (node(&db, &[]), node(&db, &[]));
    let converter = a.create_converter("seq", SEQ_DECODER);
    let integration = a.create_integration("twice", &converter, json!({}));
    let path = endpoint_path(&integration);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0;
    for seq in 1..=200u32 {
        let mtype = if seq % 4 == 0 { MessageType::NonConfirmable } else { MessageType::Confirmable };
        let bytes = request(mtype, &path, "twice", seq).encode();
        let at_once = seq % 2 == 0;
        socket.send_to(&bytes, a.coap).unwrap();
        let mut answers: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
        if at_once {
            socket.send_to(&bytes, b.coap).unwrap();
        } else {
            let (answer, from) = receive(&socket, Duration::from_secs(10)).expect("an answer from the first node");
            answers.insert(from, answer);
            socket.send_to(&bytes, b.coap).unwrap();
        }
        while answers.len() < 2 {
            let (answer, from) = receive(&socket, Duration::from_secs(10)).unwrap_or_else(|| panic!("seq {seq}: no answer from both nodes"));
            answers.insert(from, answer);
        }
        let (first, second) = (&answers[&a.coap], &answers[&b.coap]);
        let parsed = Message::parse(first).unwrap();
        assert_eq!(parsed.code, Code::CREATED, "seq {seq}");
        assert_eq!(first, second, "seq {seq} ({mtype:?}, at once: {at_once}): both nodes answer with the same bytes");
        sent += 1;
    }
    let device = a.device("twice").expect("device created");
    let stored = stored_seqs(&a, &id_of(&device));
    assert_eq!(stored, (1..=sent).collect::<Vec<u32>>(), "every message stored exactly once");
}

/// Three nodes receive the first uplink of one new device name at the same moment: one device,
/// three points.
#[test]
fn three_nodes_creating_one_device_make_one() {
    if postgres_already("three_nodes_creating_one_device_make_one") {
        return;
    }
    let db = PgCluster::database();
    let nodes: Vec<Server> = (0..3).map(|_| node(&db, &[])).collect();
    let converter = nodes[0].create_converter("seq", SEQ_DECODER);
    let integration = nodes[0].create_integration("race", &converter, json!({}));
    let path = endpoint_path(&integration);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.coap).collect();
    for round in 0..40u32 {
        let name = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(3));
        let senders: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(k, addr)| {
                let (barrier, path, name, addr) = (barrier.clone(), path.clone(), name.clone(), *addr);
                std::thread::spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    // Message IDs unique across rounds: a later round's socket may get a port an
                    // earlier one had, and the same (peer, Message ID) within 247 s is a
                    // retransmission, rightly answered without being stored.
                    let m = request(MessageType::Confirmable, &path, &name, round * 3 + k as u32 + 1);
                    barrier.wait();
                    socket.send_to(&m.encode(), addr).unwrap();
                    await_answer(&socket, &m, Duration::from_secs(10))
                })
            })
            .collect();
        for sender in senders {
            assert_eq!(sender.join().unwrap(), Some(Code::CREATED), "{name}");
        }
        let page = nodes[1].api("GET", &format!("/api/tenant/devices?pageSize=10&page=0&textSearch={name}"), None);
        let same: Vec<&Value> = page["data"].as_array().unwrap().iter().filter(|d| d["name"] == name.as_str()).collect();
        assert_eq!(same.len(), 1, "{name}: one device for three simultaneous first uplinks: {page}");
        assert_eq!(stored_seqs(&nodes[2], &id_of(same[0])), vec![round * 3 + 1, round * 3 + 2, round * 3 + 3], "{name}");
    }
}

/// A converter saved through one node is the converter of every uplink the other nodes answer
/// after the save returned, 1,000 saves in a row, each followed at once by uplinks at both
/// other nodes: no uplink is stored with an older version's output.
#[test]
fn a_converter_saved_on_one_node_is_used_at_once_by_the_others() {
    if postgres_already("a_converter_saved_on_one_node_is_used_at_once_by_the_others") {
        return;
    }
    let db = PgCluster::database();
    let nodes: Vec<Server> = (0..3).map(|_| node(&db, &[])).collect();
    let decoder = |version: u32| {
        format!(
            "var t = decodeToString(payload).split(','); \
             return {{deviceName: 'conv', telemetry: {{ts: parseInt(t[1]), values: {{made: {version}, sent: parseInt(t[0])}}}}}};"
        )
    };
    let mut converter = nodes[0].create_converter("versioned", &decoder(0));
    let integration = nodes[0].create_integration("versioned", &converter, json!({}));
    let path = endpoint_path(&integration);
    let sockets = [UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap()];
    let rounds = 1000u32;
    // Meanwhile a third device streams uplinks to node 1, each naming the newest version whose
    // save had returned when it was sent: uplinks in flight during a save, which the writer
    // refuses as stale and the node converts again.
    let returned = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let streaming = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let streamer = {
        let (returned, streaming, path, target) = (returned.clone(), streaming.clone(), path.clone(), nodes[1].coap);
        std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (mut seq, mut stored) = (0u32, 0u32);
            while streaming.load(std::sync::atomic::Ordering::Relaxed) {
                seq += 1;
                let known = returned.load(std::sync::atomic::Ordering::SeqCst);
                let mut m = request(MessageType::Confirmable, &path, "unused", seq);
                // Timestamps far from the other devices' ones.
                m.payload = format!("{known},{}", 10_000_000_000u64 + u64::from(seq)).into_bytes();
                socket.send_to(&m.encode(), target).unwrap();
                match await_answer(&socket, &m, Duration::from_secs(10)) {
                    Some(Code::CREATED) => stored += 1,
                    // Overtaken by four saves in a row (one every few milliseconds here): not
                    // stored, come back later.
                    Some(Code::SERVICE_UNAVAILABLE) => {}
                    other => panic!("streamed uplink {seq}: {other:?}"),
                }
            }
            stored
        })
    };
    let started = Instant::now();
    for version in 1..=rounds {
        converter["configuration"]["decoder"] = json!(decoder(version));
        converter = nodes[0].api("POST", "/api/converter", Some(converter));
        returned.store(version, std::sync::atomic::Ordering::SeqCst);
        // Both other nodes at once, right after the save returned.
        let requests: Vec<Message> = (0..2u32)
            .map(|k| {
                let seq = version * 2 + k;
                let mut m = request(MessageType::Confirmable, &path, "unused", seq);
                m.payload = format!("{version},{}", u64::from(seq) * 1000).into_bytes();
                m
            })
            .collect();
        for (k, m) in requests.iter().enumerate() {
            sockets[k].send_to(&m.encode(), nodes[k + 1].coap).unwrap();
        }
        for (k, m) in requests.iter().enumerate() {
            assert_eq!(await_answer(&sockets[k], m, Duration::from_secs(10)), Some(Code::CREATED), "version {version} at node {}", k + 1);
        }
    }
    streaming.store(false, std::sync::atomic::Ordering::Relaxed);
    let streamed = streamer.join().unwrap();
    eprintln!("{rounds} saves, each followed by two uplinks at the other nodes, and {streamed} uplinks streamed (stored), in {:?}", started.elapsed());
    let device = nodes[1].device("conv").expect("device conv");
    let base = format!("/api/plugins/telemetry/DEVICE/{}/values/timeseries?keys=made,sent&startTs=0&endTs=9999999999999&limit=100000&useStrictDataTypes=true", id_of(&device));
    let history = nodes[2].api("GET", &base, None);
    let points = |key: &str| -> BTreeMap<i64, u64> {
        history[key].as_array().unwrap().iter().map(|p| (p["ts"].as_i64().unwrap(), p["value"].as_u64().unwrap())).collect()
    };
    let (made, sent) = (points("made"), points("sent"));
    assert_eq!(sent.len(), 2 * rounds as usize + streamed as usize, "every uplink stored once");
    // The streamed ones may have been converted by a newer version than they knew of.
    let old: Vec<_> = sent.iter().filter(|(ts, v)| made.get(ts).is_none_or(|m| if **ts >= 10_000_000_000 { m < v } else { m != *v })).collect();
    assert!(old.is_empty(), "{} uplinks stored with an older converter, e.g. {:?}", old.len(), &old[..old.len().min(5)]);
}

/// One simulated device of the kill test: its own socket, one CON at a time, retransmitted
/// every 500 ms until answered, whichever node answers.
struct Device {
    socket: mio::net::UdpSocket,
    name: String,
    next_seq: u32,
    waiting: Option<Waiting>,
    /// Sequence numbers answered 2.01.
    acked: Vec<u32>,
    /// Sequence numbers answered with anything else (must not be stored).
    refused: Vec<u32>,
    /// The piggybacked answer each acknowledged Message ID got first.
    answers: HashMap<u16, Vec<u8>>,
    /// Answers to a copy that differed from the first answer to that Message ID.
    mismatches: Vec<String>,
    retransmissions: u32,
}

struct Waiting {
    message: Message,
    bytes: Vec<u8>,
    sent: Instant,
    /// A copy of an answered request sent again, as if its ACK were lost.
    copy: bool,
}

impl Device {
    fn send(&mut self, target: SocketAddr, message: Message, copy: bool) {
        let bytes = message.encode();
        let _ = self.socket.send_to(&bytes, target);
        self.waiting = Some(Waiting { message, bytes, sent: Instant::now(), copy });
    }

    /// Handles what arrived; returns whether the device is free for its next request.
    fn receive(&mut self) -> bool {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            let Ok(answer) = Message::parse(&buf[..n]) else { continue };
            let Some(waiting) = &self.waiting else { continue };
            let piggybacked = answer.mtype == MessageType::Acknowledgement && answer.message_id == waiting.message.message_id;
            if piggybacked && answer.code.is_empty() {
                continue; // a separate response follows
            }
            let separate = !piggybacked && answer.token == waiting.message.token && !answer.code.is_empty();
            if separate && answer.mtype == MessageType::Confirmable {
                let ack = Message::new(MessageType::Acknowledgement, Code::EMPTY, answer.message_id);
                let _ = self.socket.send_to(&ack.encode(), from);
            }
            if !(piggybacked || separate) {
                continue;
            }
            let seq = waiting.message.message_id as u32;
            let mid = waiting.message.message_id;
            if waiting.copy {
                if piggybacked && let Some(first) = self.answers.get(&mid) && first.as_slice() != &buf[..n] {
                    self.mismatches.push(format!("{} seq {seq}: {:?} then {:?}", self.name, first, &buf[..n]));
                }
            } else if answer.code == Code::CREATED {
                self.acked.push(seq);
                if piggybacked {
                    self.answers.insert(mid, buf[..n].to_vec());
                }
            } else {
                self.refused.push(seq);
            }
            self.waiting = None;
        }
        self.waiting.is_none()
    }
}

/// Three nodes share one CoAP port (SO_REUSEPORT) on one database; 1,000 devices send CONs
/// while a random node is killed with SIGKILL and restarted, 20 times. Every uplink ends up
/// answered, every 2.01 stored exactly once, nothing stored that was refused, and a copy of an
/// answered request — which after a kill reaches another node — gets the bytes of the first
/// answer.
#[test]
fn three_nodes_on_one_port_survive_20_kills_under_load() {
    if postgres_already("three_nodes_on_one_port_survive_20_kills_under_load") {
        return;
    }
    use mio::{Events, Interest, Poll, Token as PollToken};
    let db = PgCluster::database();
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port_text = port.to_string();
    let env = [("COAP_REUSE_PORT", "true"), ("COAP_BIND_PORT", port_text.as_str()), ("COAP_PIGGYBACK_TIMEOUT_MS", "2000")];
    let mut nodes: Vec<Option<Server>> = (0..3).map(|_| Some(node(&db, &env))).collect();
    let admin = nodes[0].as_ref().unwrap();
    let converter = admin.create_converter("seq", SEQ_DECODER);
    let integration = admin.create_integration("cluster", &converter, json!({}));
    let path = endpoint_path(&integration);
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let device_count = 1000;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drivers: Vec<_> = (0..2)
        .map(|t| {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut poll = Poll::new().unwrap();
                let mut devices: Vec<Device> = (0..device_count / 2)
                    .map(|d| {
                        let mut socket = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                        poll.registry().register(&mut socket, PollToken(d), Interest::READABLE).unwrap();
                        Device {
                            socket,
                            name: format!("node-{t}-{d}"),
                            next_seq: 1,
                            waiting: None,
                            acked: Vec::new(),
                            refused: Vec::new(),
                            answers: HashMap::new(),
                            mismatches: Vec::new(),
                            retransmissions: 0,
                        }
                    })
                    .collect();
                let mut events = Events::with_capacity(1024);
                let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ t as u64;
                let mut chance = move |one_in: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng.is_multiple_of(one_in)
                };
                // After `stop`, only what is waiting is finished (retransmitted until answered).
                let drain_until = |stopping: bool, devices: &[Device]| stopping && devices.iter().all(|d| d.waiting.is_none());
                let mut last_scan = Instant::now();
                loop {
                    let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
                    if drain_until(stopping, &devices) {
                        break;
                    }
                    for device in devices.iter_mut() {
                        if device.waiting.is_none() && !stopping {
                            let seq = device.next_seq;
                            device.next_seq += 1;
                            let m = request(MessageType::Confirmable, &path, &device.name.clone(), seq);
                            device.send(target, m, false);
                        }
                    }
                    poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
                    for event in events.iter() {
                        let device = &mut devices[event.token().0];
                        let was_copy = device.waiting.as_ref().is_some_and(|w| w.copy);
                        let free = device.receive();
                        // Now and then the answer "got lost": the same request again.
                        if free && !was_copy && !stopping && chance(20) && let Some(&seq) = device.acked.last() {
                            let m = request(MessageType::Confirmable, &path, &device.name.clone(), seq);
                            device.send(target, m, true);
                        }
                    }
                    if last_scan.elapsed() >= Duration::from_millis(100) {
                        last_scan = Instant::now();
                        for device in devices.iter_mut() {
                            if let Some(w) = &mut device.waiting
                                && w.sent.elapsed() >= Duration::from_millis(500)
                            {
                                let _ = device.socket.send_to(&w.bytes, target);
                                w.sent = Instant::now();
                                device.retransmissions += 1;
                            }
                        }
                    }
                }
                devices
            })
        })
        .collect();

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut kills = 0;
    while kills < 20 {
        std::thread::sleep(Duration::from_millis(1500));
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let victim = (seed >> 33) as usize % 3;
        let dir = nodes[victim].take().unwrap().kill();
        kills += 1;
        std::thread::sleep(Duration::from_millis(300));
        let restarted = Instant::now();
        nodes[victim] = Some(Server::start_on(&db, dir, &env));
        eprintln!("kill {kills}: node {victim} back in {:?}", restarted.elapsed());
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let devices: Vec<Device> = drivers.into_iter().flat_map(|d| d.join().unwrap()).collect();

    let reader = nodes[0].as_ref().unwrap();
    let acked: usize = devices.iter().map(|d| d.acked.len()).sum();
    let retransmissions: u32 = devices.iter().map(|d| d.retransmissions).sum();
    let refused: usize = devices.iter().map(|d| d.refused.len()).sum();
    eprintln!("{kills} kills: {acked} uplinks acknowledged, {refused} refused, {retransmissions} retransmissions");
    assert!(acked >= 2 * device_count, "too little load to test anything: {acked}");
    let mismatches: Vec<&String> = devices.iter().flat_map(|d| d.mismatches.iter()).collect();
    assert!(mismatches.is_empty(), "copies answered with other bytes: {mismatches:?}");
    let mut wrong = Vec::new();
    for device in &devices {
        let mut want = device.acked.clone();
        want.sort_unstable();
        want.dedup();
        assert_eq!(want.len(), device.acked.len(), "{}: a sequence number acknowledged twice as new", device.name);
        let stored = match reader.device(&device.name) {
            Some(d) => stored_seqs(reader, &id_of(&d)),
            None => Vec::new(),
        };
        if stored != want {
            wrong.push(format!("{}: stored {:?}, acknowledged {:?}", device.name, stored, want));
        }
    }
    assert!(wrong.is_empty(), "{} devices' stored uplinks differ from the acknowledged ones: {:?}", wrong.len(), &wrong[..wrong.len().min(5)]);
}

/// Behind an HTTP balancer a client's calls reach any node: a token from a login on one node is
/// honoured by the others, logins at several nodes at once all survive, and a logout on one node
/// ends the session on every node within a second.
#[test]
fn a_login_on_one_node_is_a_login_on_all() {
    if postgres_already("a_login_on_one_node_is_a_login_on_all") {
        return;
    }
    let db = PgCluster::database();
    let nodes: Vec<Server> = (0..3).map(|_| node(&db, &[])).collect();
    let login = |n: &Server| -> String {
        let (status, body) = n.request("POST", "/api/auth/login", Some(json!({"username": ADMIN_USER, "password": ADMIN_PASSWORD})), None);
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    };
    // Three logins at once, one per node: none overwrites another.
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter().map(|n| s.spawn(move || login(n))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let user = |n: &Server, token: &str| n.request("GET", "/api/auth/user", None, Some(token)).0;
    for token in &tokens {
        for n in &nodes {
            let accepted = eventually(Duration::from_secs(3), || (user(n, token) == 200).then_some(()));
            assert!(accepted.is_some(), "a token of a login on another node is honoured");
        }
    }
    let (status, _) = nodes[0].request("POST", "/api/auth/logout", None, Some(&tokens[0]));
    assert!((200..300).contains(&status));
    let started = Instant::now();
    for n in &nodes {
        let ended = eventually(Duration::from_secs(5), || (user(n, &tokens[0]) == 401).then_some(()));
        assert!(ended.is_some(), "a logout on one node ends the session on every node");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "within the refresh bound: {:?}", started.elapsed());
    for token in &tokens[1..] {
        for n in &nodes {
            assert_eq!(user(n, token), 200, "the other sessions live on");
        }
    }
}

/// A remote integration links to one node; the REST API of every node shows it connected.
#[test]
fn every_node_shows_a_remote_linked_to_another() {
    if postgres_already("every_node_shows_a_remote_linked_to_another") {
        return;
    }
    let db = PgCluster::database();
    let rpc = [("INTEGRATIONS_RPC_ENABLED", "true"), ("INTEGRATIONS_RPC_BIND_ADDRESS", "127.0.0.1"), ("INTEGRATIONS_RPC_PORT", "0")];
    let (a, b) = (node(&db, &rpc), node(&db, &rpc));
    let converter = a.create_converter("seed", SEED_DECODER);
    let integration = a.create_integration("remote", &converter, json!({"remote": true}));
    let (key, secret) = (integration["routingKey"].as_str().unwrap(), integration["secret"].as_str().unwrap());
    let remote = Remote::start_in(temp_dir("cluster-remote"), a.rpc.unwrap().port(), key, secret, &[]);
    remote.wait_for("linked to the platform", Duration::from_secs(20));
    let status = |n: &Server| n.api("GET", &format!("/api/integration/{}", id_of(&integration)), None)["remoteStatus"].clone();
    let seen = eventually(Duration::from_secs(10), || Some(status(&b)).filter(|s| s["connected"] == true));
    let seen = seen.unwrap_or_else(|| panic!("node B shows the remote linked to node A: {}", status(&b)));
    assert_eq!(seen["serviceId"], status(&a)["serviceId"]);
    drop(remote);
    let gone = eventually(Duration::from_secs(30), || Some(status(&b)).filter(|s| s["connected"] == false));
    assert!(gone.is_some(), "node B stops showing it once it is gone: {}", status(&b));
}


/// A WebSocket subscriber on one node gets what another node commits: an uplink through node B
/// and a REST attribute write on node B both reach a session on node A, with their values.
#[test]
fn a_subscriber_on_one_node_sees_what_another_node_commits() {
    if postgres_already("a_subscriber_on_one_node_sees_what_another_node_commits") {
        return;
    }
    let db = PgCluster::database();
    let (a, b) = (node(&db, &[]), node(&db, &[]));
    let integration = a.seed_integration();
    let path = endpoint_path(&integration);
    let mut client = CoapClient::new(b.coap);
    // Node B routes the new integration once it heard of it (LISTEN/NOTIFY, within a second).
    eventually(Duration::from_secs(10), || (client.post(&path, SEED_PAYLOAD.as_bytes()) == Code::CREATED).then_some(()))
        .expect("node B stores the first uplink");
    let device = id_of(&eventually(Duration::from_secs(5), || a.device("SN-001")).expect("SN-001 on node A"));

    let url = a.http.replacen("http://", "ws://", 1) + &format!("/api/ws?token={}", a.token());
    let (mut ws, _) = tungstenite::connect(url).expect("WebSocket handshake with node A");
    let command = json!({"cmds": [
        {"type": "TIMESERIES", "entityType": "DEVICE", "entityId": device, "scope": "LATEST_TELEMETRY", "cmdId": 1},
        {"type": "ATTRIBUTES", "entityType": "DEVICE", "entityId": device, "scope": "SHARED_SCOPE", "cmdId": 2},
    ]});
    ws.send(tungstenite::Message::text(command.to_string())).unwrap();
    // The two snapshots.
    for _ in 0..2 {
        ws_next(&mut ws, Duration::from_secs(10)).expect("a subscription's first answer");
    }
    // Node B learns of the watch within its announcement (at once when the set grows); until
    // then an uplink is not relayed, so the test sends until one arrives, each with a new value.
    let mut arrived = None;
    for n in 0..50 {
        let temperature = format!("{}.5", 30 + n);
        let payload = format!("SN-001,default,temperature,{temperature},humidity,69");
        assert_eq!(client.post(&path, payload.as_bytes()), Code::CREATED);
        if let Some(update) = ws_next(&mut ws, Duration::from_millis(500)) {
            arrived = Some((update, temperature));
            break;
        }
    }
    let (update, temperature) = arrived.expect("an uplink through node B reaches node A's subscriber");
    assert_eq!(update["subscriptionId"], 1, "{update}");
    assert_eq!(update["data"]["temperature"][0][1], json!(temperature), "{update}");
    // Once the watch is known, every commit arrives: a REST attribute write on node B.
    let (status, body) = b.request(
        "POST",
        &format!("/api/plugins/telemetry/DEVICE/{device}/attributes/SHARED_SCOPE"),
        Some(json!({"setpoint": 21.5, "mode": "eco"})),
        Some(&b.token()),
    );
    assert_eq!(status, 200, "{body}");
    let update = ws_next(&mut ws, Duration::from_secs(10)).expect("node B's attribute write reaches node A's subscriber");
    assert_eq!(update["subscriptionId"], 2, "{update}");
    assert_eq!(update["data"]["setpoint"][0][1], json!("21.5"), "{update}");
    assert_eq!(update["data"]["mode"][0][1], json!("eco"), "{update}");
}
