//! Offered load far above capacity: the server sheds it with 5.03 + Max-Age, its memory stays
//! bounded, nothing refused is stored, and it serves normally as soon as the flood stops.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, Message, MessageType, option};
use common::*;
use serde_json::json;

#[test]
fn overload_sheds_with_503_keeps_memory_bounded_and_recovers() {
    // A converter that costs ~2 ms and a small in-flight budget make capacity a few hundred
    // uplinks per second, far below what the flood below offers.
    let server = Server::start_with(&[("COAP_MAX_IN_FLIGHT", "64"), ("SCRIPT_QUEUE_CAPACITY", "32")], &[]);
    let converter = server.create_converter(
        "slow",
        // Each point gets its own timestamp: two uplinks of one device committed in the same
        // millisecond would otherwise be one point (entity, key, ts), and the count below would
        // miss an uplink that was stored.
        "var t = Date.now(); while (Date.now() - t < 2) {} var p = decodeToString(payload).split(','); \
         return {deviceName: p[0], telemetry: {ts: 1700000000000 + parseInt(p[1]), values: {n: parseInt(p[1])}}};",
    );
    let integration = server.create_integration("slow", &converter, json!({}));
    let path = endpoint_path(&integration);
    let rss_before = server.rss_kib();

    // Open loop: 40 devices send CONs without waiting, 20,000 in all, then collect the answers.
    let clients: Vec<CoapClient> = (0..40).map(|_| CoapClient::new(server.coap)).collect();
    // Room for every answer of the flood: with the default buffer the 5.03s that come back at
    // once fill it, and the 2.01s that follow after processing would be dropped by the kernel.
    for c in &clients {
        socket2::SockRef::from(&c.socket).set_recv_buffer_size(4 << 20).unwrap();
    }
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    // Each answer once: a separate response (sent when an uplink's commit outlasts the piggyback
    // window) is retransmitted until acknowledged, and its copies are one answer.
    let mut answers = std::collections::HashSet::new();
    let mut repeats = 0;
    let mut max_age_on_every_503 = true;
    let started = Instant::now();
    for i in 0..20_000u32 {
        let c = &clients[(i % 40) as usize];
        let mut m = Message::new(MessageType::Confirmable, Code::POST, (i / 40) as u16);
        for s in &path {
            m.add_option(option::URI_PATH, s.as_bytes().to_vec());
        }
        m.payload = format!("flood-{},{i}", i % 40).into_bytes();
        c.send(&m);
    }
    let offered_for = started.elapsed();
    let rss_peak = server.rss_kib();
    // Let the accepted ones finish, then drain every client's answers.
    std::thread::sleep(Duration::from_millis(1500));
    for (n, c) in clients.iter().enumerate() {
        c.socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while let Some(r) = c.receive() {
            if r.mtype == MessageType::Confirmable {
                c.send(&Message::empty_ack(r.message_id));
            }
            if !answers.insert((n, r.mtype == MessageType::Confirmable, r.message_id)) {
                repeats += 1;
                continue;
            }
            if r.code == Code::SERVICE_UNAVAILABLE && r.get_uint_option(option::MAX_AGE).is_none() {
                max_age_on_every_503 = false;
            }
            if !r.code.is_empty() {
                *codes.entry(r.code.to_string()).or_default() += 1;
            }
        }
    }
    let shed = codes.get("5.03").copied().unwrap_or(0);
    let created = codes.get("2.01").copied().unwrap_or(0);
    println!("offered 20000 in {offered_for:?}: {codes:?} ({repeats} repeated); RSS {rss_before} KiB -> {rss_peak} KiB");
    assert!(shed > 1_000, "a flood far above capacity must be shed with 5.03: {codes:?}");
    assert!(created > 0, "some uplinks still go through: {codes:?}");
    assert!(max_age_on_every_503, "every 5.03 carries Max-Age");
    assert!(rss_peak < rss_before + 100 * 1024, "memory must stay bounded: {rss_before} -> {rss_peak} KiB");

    // Nothing refused was stored: the stored points are exactly the 2.01s (counted per device).
    let stored: u64 = (0..40)
        .filter_map(|d| server.device(&format!("flood-{d}")))
        .map(|dev| server.history_len(&dev, "n") as u64)
        .sum();
    assert!(stored >= created, "every 2.01 is stored ({stored} stored, {created} acknowledged)");

    // And the server recovers at once: once the flood has left the socket buffer (every
    // datagram read, nothing in flight), the next uplink is answered 2.01.
    let metric = |name: &str| -> Option<u64> {
        let text = ureq::get(&format!("{}/metrics", server.http)).call().ok()?.into_string().ok()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let mut last = None;
    eventually(Duration::from_secs(10), || {
        let now = (metric("coapgate_coap_datagrams_total "), metric("coapgate_uplinks_in_flight "));
        let settled = now.1 == Some(0) && last == Some(now.0);
        last = Some(now.0);
        std::thread::sleep(Duration::from_millis(100));
        settled.then_some(())
    })
    .expect("the flood drains");
    let mut client = CoapClient::new(server.coap);
    assert_eq!(client.post(&path, b"after,1"), Code::CREATED);
}
