//! `coapgate bench-ws`: many WebSocket subscribers on one device while CoAP uplinks arrive,
//! measuring how late the updates reach them and what the subscribers cost ingest.
//!
//! The run logs in through the REST API, creates the device with a first uplink, opens
//! `--subscribers` sessions on `/api/ws/plugins/telemetry?token=…` and subscribes each to the
//! device's latest `sent` values (`tsSubCmds`). Then:
//!
//! 1. Latency: `coapgate bench`'s generator sends uplinks at `--rate` for `--duration` (at most
//!    `--count`), each carrying its send time in µs as the value of `sent`; every subscriber
//!    takes latency = receive time − send time for each point it gets, and counts them, so
//!    updates expected (stored uplinks × subscribers) can be set against updates received.
//! 2. Ingest: `--rounds` A/B pairs of full-speed runs of the same generator settings for
//!    `--ingest-seconds` each, A with every session unsubscribed (no subscriber), B with every
//!    session subscribed; the order alternates (A B, B A, …) so that a drift of the machine
//!    falls on both sides. Each run writes to a device of its own, created just before it (and
//!    subscribed to, for B), so every run starts alike: a device that earlier runs filled with
//!    hundreds of thousands of points not yet compacted makes each subscription's first read
//!    (its latest values) scan them.
//!
//! The payload is the seed tutorial's CSV (`NAME,default,sent,<µs>`), so the seed converter
//! (`serve --demo`'s) stores it as is. Everything is bounded: the sessions, the uplinks (count
//! and time), and every wait; all sessions are closed at the end.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{self, BenchArgs, now_micros};

#[derive(clap::Args)]
pub struct BenchWsArgs {
    /// The server's HTTP base URL (REST login and WebSocket), e.g. http://127.0.0.1:8080.
    #[arg(long)]
    http: String,
    /// CoAP endpoint of an integration whose converter is the seed tutorial's (CSV
    /// name,type,key,value), e.g. coap://127.0.0.1:5683/i/<routing key>.
    #[arg(long)]
    url: String,
    /// REST user.
    #[arg(long, default_value = "tenant@thingsboard.org")]
    username: String,
    /// Its password.
    #[arg(long, env = "COAPGATE_BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    /// The device every uplink goes to and every session watches (created by the first uplink).
    #[arg(long, default_value = "WS-BENCH")]
    device: String,
    /// WebSocket sessions, each with one subscription to the device.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Uplinks per second in the latency phase.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Uplinks of the latency phase at most.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// A/B pairs of full-speed ingest runs (0: none).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seconds of each ingest run.
    #[arg(long, default_value_t = 5.0)]
    ingest_seconds: f64,
    /// Simulated CoAP devices (sockets; all send the same device name) of every run.
    #[arg(long, default_value_t = 64)]
    sockets: usize,
    /// Requests in flight at most, in every run.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// How long to wait for the last updates after the last uplink was answered.
    #[arg(long, default_value_t = 10.0)]
    drain_seconds: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// WebSocket handshakes under way at once while the sessions open: more only fill the
/// server's accept queue.
const CONNECTING_AT_ONCE: usize = 32;

/// The command id of every session's one subscription.
const CMD_ID: i64 = 1;

/// What every session adds to, and the phase they count for.
#[derive(Default)]
struct Shared {
    /// Points whose `sent` is older than this belong to an earlier phase (or a snapshot) and
    /// are not counted.
    since_us: AtomicI64,
    /// Whether latencies are kept (the latency phase).
    recording: AtomicBool,
    /// Subscription snapshots received since the last subscribe round.
    snapshots: AtomicUsize,
    /// Sessions the server closed (or that failed).
    closed: AtomicUsize,
}

/// One session's counts.
#[derive(Default)]
struct Counts {
    /// Points counted in the current phase.
    received: AtomicU64,
    /// Latencies in µs, in the latency phase.
    latencies_us: Mutex<Vec<u32>>,
    open: AtomicBool,
}

struct Subscriber {
    commands: mpsc::UnboundedSender<Message>,
    counts: Arc<Counts>,
}

pub fn run(args: BenchWsArgs) -> anyhow::Result<()> {
    if args.subscribers == 0 || !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--subscribers must be at least 1 and --rate a positive number");
    }
    crate::http_server::raise_descriptor_limit();
    let http = args.http.trim_end_matches('/').to_string();
    let token = login(&http, &args.username, &args.password)?;
    // The first uplink creates the device; its answer says the converter took the payload.
    let first = bench::measure(generator(&args, &args.device, 1, 1, Some(args.rate), 1, 10.0))?;
    if first["answered"] != 1 || !first["codes"].as_object().is_some_and(|c| c.keys().all(|k| k.starts_with("2."))) {
        bail!("the first uplink to {} was not stored: {first}", args.url);
    }
    let device_id = device_id(&http, &token, &args.device)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let report = runtime.block_on(measure(&args, &http, &token, &device_id))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    print_report(&args, &report);
    Ok(())
}

/// The generator's settings: `count` uplinks at most in `seconds`, at `rate` or full speed.
fn generator(args: &BenchWsArgs, device: &str, sockets: usize, in_flight: usize, rate: Option<f64>, count: u64, seconds: f64) -> BenchArgs {
    BenchArgs {
        url: args.url.clone(),
        psk: None,
        devices: sockets,
        in_flight,
        count,
        duration: seconds,
        r#type: "con".into(),
        method: "post".into(),
        payload: format!("{device},default,sent,{{us}}"),
        names: None,
        content_format: 0,
        timeout: 5.0,
        retransmit: false,
        rate,
        threads: 1,
        json: true,
    }
}

fn login(http: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let body: Value = ureq::post(&format!("{http}/api/auth/login"))
        .timeout(Duration::from_secs(10))
        .send_json(json!({"username": username, "password": password}))
        .with_context(|| format!("logging in to {http} as {username}"))?
        .into_json()?;
    body["token"].as_str().map(String::from).context("the login answer has no token")
}

/// The device's id, once the first uplink's commit made it visible.
fn device_id(http: &str, token: &str, name: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ureq::get(&format!("{http}/api/tenant/devices"))
            .query("deviceName", name)
            .set("X-Authorization", &format!("Bearer {token}"))
            .timeout(Duration::from_secs(10))
            .call();
        match answer {
            Ok(response) => {
                let body: Value = response.into_json()?;
                return body["id"]["id"].as_str().map(String::from).context("the device answer has no id");
            }
            Err(ureq::Error::Status(404, _)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).with_context(|| format!("finding device {name}")),
        }
    }
}

fn subscribe_command(device_id: &str) -> Message {
    Message::text(json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": device_id, "keys": "sent", "cmdId": CMD_ID}]}).to_string())
}

fn unsubscribe_command(device_id: &str) -> Message {
    Message::text(json!({"tsSubCmds": [{"entityType": "DEVICE", "entityId": device_id, "cmdId": CMD_ID, "unsubscribe": true}]}).to_string())
}

async fn measure(args: &BenchWsArgs, http: &str, token: &str, watched_id: &str) -> anyhow::Result<Value> {
    let shared = Arc::new(Shared::default());
    let ws_url = format!("{}/api/ws/plugins/telemetry?token={token}", http.replacen("http", "ws", 1));
    let opening = Instant::now();
    let connected: Vec<anyhow::Result<Subscriber>> = futures_util::stream::iter(0..args.subscribers)
        .map(|_| open_session(&ws_url, shared.clone()))
        .buffer_unordered(CONNECTING_AT_ONCE)
        .collect()
        .await;
    let subscribers: Vec<Subscriber> = connected.into_iter().collect::<anyhow::Result<_>>()?;
    let subscribed = subscribe_all(&subscribers, &shared, watched_id).await;
    let open_seconds = opening.elapsed().as_secs_f64();
    if subscribed < subscribers.len() {
        bail!("only {subscribed} of {} subscriptions were answered", subscribers.len());
    }

    // 1. Latency at a fixed rate.
    start_phase(&subscribers, &shared, true);
    let coap = run_generator(generator(args, &args.device, args.sockets, args.in_flight, Some(args.rate), args.count, args.duration)).await?;
    let stored = stored_uplinks(&coap);
    let (received, complete) = drain(&subscribers, stored, args.drain_seconds).await;
    shared.recording.store(false, Ordering::Release);
    let mut latencies: Vec<u32> = Vec::new();
    for s in &subscribers {
        latencies.append(&mut s.counts.latencies_us.lock().unwrap());
    }
    latencies.sort_unstable();
    let at = |p: f64| if latencies.is_empty() { 0.0 } else { f64::from(latencies[((latencies.len() as f64 - 1.0) * p).round() as usize]) / 1000.0 };
    let latency = json!({
        "uplinks_sent": coap["sent"], "uplinks_stored": stored, "uplinks_per_s": coap["throughput_per_s"],
        "coap_latency_ms": coap["latency_ms"],
        "updates_expected": stored * subscribers.len() as u64, "updates_received": received,
        "subscribers_complete": complete,
        "update_latency_ms": {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p999": at(0.999), "max": at(1.0)},
        "sessions_closed": shared.closed.load(Ordering::Acquire),
    });

    // 2. Ingest at full speed, without (A) and with (B) the subscribers, interleaved.
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for with_subscribers in order {
            let device = format!("{}-{}{round}", args.device, if with_subscribers { "B" } else { "A" });
            let created = run_generator(generator(args, &device, 1, 1, None, 1, 10.0)).await?;
            if stored_uplinks(&created) != 1 {
                bail!("the first uplink of {device} was not stored: {created}");
            }
            let (http, token, name) = (http.to_string(), token.to_string(), device.clone());
            let run_device_id = tokio::task::spawn_blocking(move || device_id(&http, &token, &name)).await??;
            let subscribers_now = if with_subscribers {
                subscribe_all(&subscribers, &shared, &run_device_id).await
            } else {
                for s in &subscribers {
                    let _ = s.commands.send(unsubscribe_command(&run_device_id));
                }
                // Unsubscribing has no answer; give the sessions a moment to read it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                0
            };
            start_phase(&subscribers, &shared, false);
            let closed_before = shared.closed.load(Ordering::Acquire);
            let coap = run_generator(generator(args, &device, args.sockets, args.in_flight, None, u64::MAX / 2, args.ingest_seconds)).await?;
            let stored = stored_uplinks(&coap);
            let received = if with_subscribers {
                drain(&subscribers, stored, args.drain_seconds).await.0
            } else {
                // Nothing should come; what does is counted (a moment for stragglers).
                tokio::time::sleep(Duration::from_millis(200)).await;
                total_received(&subscribers)
            };
            runs.push(json!({
                "device": device, "subscribers": subscribers_now, "uplinks_per_s": coap["throughput_per_s"], "uplinks_stored": stored,
                "timeouts": coap["timeouts"], "coap_latency_ms": coap["latency_ms"],
                "updates_expected": stored * subscribers_now as u64, "updates_received": received,
                "sessions_closed": shared.closed.load(Ordering::Acquire) - closed_before,
            }));
        }
    }
    let mean = |with: bool| {
        let rates: Vec<f64> = runs
            .iter()
            .filter(|r| (r["subscribers"].as_u64().unwrap_or(0) > 0) == with)
            .filter_map(|r| r["uplinks_per_s"].as_f64())
            .collect();
        if rates.is_empty() { 0.0 } else { rates.iter().sum::<f64>() / rates.len() as f64 }
    };
    let (without, with) = (mean(false), mean(true));

    // Close every session and give them a moment to say goodbye.
    for s in subscribers {
        drop(s.commands);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(json!({
        "subscribers": args.subscribers, "rate": args.rate, "sessions_open_seconds": open_seconds,
        "latency": latency,
        "ingest": {
            "runs": runs, "without_subscribers_per_s": without, "with_subscribers_per_s": with,
            "change_percent": if without > 0.0 { (with - without) / without * 100.0 } else { 0.0 },
        },
    }))
}

/// Opens one session; its task counts what it receives until its command channel closes.
async fn open_session(url: &str, shared: Arc<Shared>) -> anyhow::Result<Subscriber> {
    // A small read buffer: tungstenite zeroes its free part before every read (as in api/ws.rs).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::connect_async_with_config(url, Some(config), true))
        .await
        .context("opening a WebSocket session timed out")?
        .context("opening a WebSocket session")?;
    let (commands, rx) = mpsc::unbounded_channel();
    let counts = Arc::new(Counts::default());
    counts.open.store(true, Ordering::Release);
    tokio::spawn(session(ws, rx, shared, counts.clone()));
    Ok(Subscriber { commands, counts })
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn session(mut ws: Ws, mut commands: mpsc::UnboundedReceiver<Message>, shared: Arc<Shared>, counts: Arc<Counts>) {
    // Whether the next message answers a subscribe command (the snapshot, not an update).
    let mut awaiting_snapshot = false;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    awaiting_snapshot = command.to_text().is_ok_and(|t| !t.contains("unsubscribe"));
                    if ws.send(command).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    counts.open.store(false, Ordering::Release);
                    return;
                }
            },
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let now = now_micros();
                    if std::mem::take(&mut awaiting_snapshot) {
                        shared.snapshots.fetch_add(1, Ordering::AcqRel);
                        continue;
                    }
                    count_points(text.as_str(), now, &shared, &counts);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    counts.open.store(false, Ordering::Release);
    shared.closed.fetch_add(1, Ordering::AcqRel);
}

/// Counts the update's `sent` points of the current phase, and their latencies when recording.
fn count_points(text: &str, now_us: i64, shared: &Shared, counts: &Counts) {
    let Ok(update) = serde_json::from_str::<Value>(text) else { return };
    let Some(points) = update["data"]["sent"].as_array() else { return };
    let since = shared.since_us.load(Ordering::Acquire);
    let recording = shared.recording.load(Ordering::Acquire);
    let mut latencies = Vec::new();
    for point in points {
        let Some(sent) = point[1].as_str().and_then(|v| v.parse::<i64>().ok()) else { continue };
        if sent < since {
            continue;
        }
        counts.received.fetch_add(1, Ordering::AcqRel);
        if recording {
            latencies.push((now_us - sent).clamp(0, i64::from(u32::MAX)) as u32);
        }
    }
    if !latencies.is_empty() {
        counts.latencies_us.lock().unwrap().extend(latencies);
    }
}

/// Subscribes every open session and waits (30 s at most) for their snapshots; returns how
/// many came.
async fn subscribe_all(subscribers: &[Subscriber], shared: &Shared, device_id: &str) -> usize {
    shared.snapshots.store(0, Ordering::Release);
    let mut asked = 0;
    for s in subscribers.iter().filter(|s| s.counts.open.load(Ordering::Acquire)) {
        if s.commands.send(subscribe_command(device_id)).is_ok() {
            asked += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.snapshots.load(Ordering::Acquire) < asked && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.snapshots.load(Ordering::Acquire)
}

/// Resets the counts: what is sent from now on belongs to the new phase.
fn start_phase(subscribers: &[Subscriber], shared: &Shared, recording: bool) {
    for s in subscribers {
        s.counts.received.store(0, Ordering::Release);
        s.counts.latencies_us.lock().unwrap().clear();
    }
    shared.since_us.store(now_micros(), Ordering::Release);
    shared.recording.store(recording, Ordering::Release);
}

async fn run_generator(args: BenchArgs) -> anyhow::Result<Value> {
    tokio::task::spawn_blocking(move || bench::measure(args)).await.context("the generator thread failed")?
}

/// Uplinks answered with a success code: each one is a stored point every subscriber must get.
fn stored_uplinks(coap: &Value) -> u64 {
    coap["codes"].as_object().map_or(0, |codes| {
        codes.iter().filter(|(code, _)| code.starts_with("2.")).filter_map(|(_, n)| n.as_u64()).sum()
    })
}

fn total_received(subscribers: &[Subscriber]) -> u64 {
    subscribers.iter().map(|s| s.counts.received.load(Ordering::Acquire)).sum()
}

/// Waits until every open session has counted `expected` points, or `seconds` without
/// progress; returns the points counted and the sessions that got them all.
async fn drain(subscribers: &[Subscriber], expected: u64, seconds: f64) -> (u64, usize) {
    let total = || total_received(subscribers);
    let complete = || subscribers.iter().filter(|s| s.counts.received.load(Ordering::Acquire) >= expected).count();
    let patience = Duration::from_secs_f64(seconds);
    let (mut last, mut progress_at) = (total(), Instant::now());
    loop {
        let open = subscribers.iter().filter(|s| s.counts.open.load(Ordering::Acquire)).count();
        if complete() >= open || progress_at.elapsed() > patience {
            return (total(), complete());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = total();
        if now != last {
            (last, progress_at) = (now, Instant::now());
        }
    }
}

fn print_report(args: &BenchWsArgs, report: &Value) {
    if args.json {
        println!("{report}");
        return;
    }
    let l = &report["latency"];
    let u = &l["update_latency_ms"];
    println!(
        "{} subscribers on one device, {} uplinks/s asked ({:.0} achieved) for {} s:",
        report["subscribers"],
        args.rate,
        l["uplinks_per_s"].as_f64().unwrap_or(0.0),
        args.duration
    );
    println!(
        "  updates: {} expected, {} received; {} subscribers got every one; {} sessions closed",
        l["updates_expected"], l["updates_received"], l["subscribers_complete"], l["sessions_closed"]
    );
    println!("  update latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}", u["p50"], u["p90"], u["p99"], u["p999"], u["max"]);
    println!("  CoAP answer latency ms: p99 {}", l["coap_latency_ms"]["p99"]);
    let i = &report["ingest"];
    if let Some(runs) = i["runs"].as_array().filter(|r| !r.is_empty()) {
        println!("  ingest at full speed ({} s runs):", args.ingest_seconds);
        println!("    {:>11} {:>10} {:>10} {:>16} {:>16} {:>7}", "subscribers", "uplinks/s", "CoAP p99", "updates expected", "updates received", "closed");
        for r in runs {
            // A JSON value prints without padding: as text first.
            println!(
                "    {:>11} {:>10.0} {:>10} {:>16} {:>16} {:>7}",
                r["subscribers"].to_string(),
                r["uplinks_per_s"].as_f64().unwrap_or(0.0),
                r["coap_latency_ms"]["p99"].to_string(),
                r["updates_expected"].to_string(),
                r["updates_received"].to_string(),
                r["sessions_closed"].to_string()
            );
        }
        println!(
            "    mean: {:.0}/s without, {:.0}/s with subscribers ({:+.1} %)",
            i["without_subscribers_per_s"].as_f64().unwrap_or(0.0),
            i["with_subscribers_per_s"].as_f64().unwrap_or(0.0),
            i["change_percent"].as_f64().unwrap_or(0.0)
        );
    }
}
