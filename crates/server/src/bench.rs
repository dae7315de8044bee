//! `coapgate bench`: a CoAP load generator that behaves like a fleet of devices.
//!
//! Each simulated device has its own UDP socket (so its own source port and Message-ID space) and
//! sends one request at a time, as constrained devices do (NSTART = 1). A semaphore caps the
//! requests in flight across all devices. It stops by itself after `--count` requests or
//! `--duration`, and only ever sends to the `--url` it is given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coapgate_coap::message::{Code, Message, MessageType, Token, option};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::registry::url_path_segments;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Endpoint URL, e.g. coap://127.0.0.1:5683/i/<routing key>.
    #[arg(long)]
    url: String,
    /// Simulated devices, each with its own UDP source port.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Requests in flight at most, across all devices.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Total requests to send (stops at whichever of --count and --duration comes first).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Longest run in seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Message type.
    #[arg(long, value_parser = ["con", "non"], default_value = "con")]
    r#type: String,
    /// Method.
    #[arg(long, value_parser = ["post", "put"], default_value = "post")]
    method: String,
    /// Payload template: {device} is the simulating socket's number, {name} the device name
    /// number (see --names), {seq} the request number, {ts} now in ms.
    #[arg(long, default_value = "SN-{name},default,temperature,25.7,humidity,69")]
    payload: String,
    /// How many distinct device names {name} cycles through (default: --devices). More names
    /// than sockets simulate a large fleet without a socket per device.
    #[arg(long)]
    names: Option<u64>,
    /// Content-Format of the payload (0 = text/plain).
    #[arg(long, default_value_t = 0)]
    content_format: u32,
    /// Seconds to wait for a response before counting a timeout.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Retransmit CON requests like RFC 7252 (ACK_TIMEOUT 2 s, doubling, 4 times).
    #[arg(long)]
    retransmit: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Totals shared by all device tasks.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    timeouts: AtomicU64,
    retransmissions: AtomicU64,
    codes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    latencies_us: std::sync::Mutex<Vec<u32>>,
    /// When the last answer came, in µs since the start: throughput is counted up to it, so a
    /// request that times out at the end does not dilute the rate with its wait.
    last_answer_us: AtomicU64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // One thread: on a 2-core machine the other core belongs to the server under test.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let Some(rest) = args.url.strip_prefix("coap://") else { bail!("--url: must start with coap://") };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:5683") };
    let target: SocketAddr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("--url: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("--url: no address for {authority}"))?;
    let path = url_path_segments(&args.url);
    if args.devices == 0 || args.in_flight == 0 {
        bail!("--devices and --in-flight must be at least 1");
    }
    let args = Arc::new(args);
    let totals = Arc::new(Totals::default());
    let permits = Arc::new(Semaphore::new(args.in_flight));
    let next_seq = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.devices);
    for device in 0..args.devices {
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(bind).await.context("binding a device socket (raise ulimit -n for many devices)")?;
        socket.connect(target).await?;
        // Room for a burst of answers; the kernel caps it at net.core.rmem_max.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(256 * 1024);
        let device_task = Device {
            number: device,
            socket,
            path: path.clone(),
            args: args.clone(),
            totals: totals.clone(),
            permits: permits.clone(),
            next_seq: next_seq.clone(),
            deadline,
            run_started: started,
            message_id: rand::random(),
        };
        tasks.push(tokio::spawn(device_task.run()));
    }
    for t in tasks {
        t.await?;
    }
    report(&args, &totals, started.elapsed());
    Ok(())
}

struct Device {
    number: usize,
    socket: UdpSocket,
    path: Vec<String>,
    args: Arc<BenchArgs>,
    totals: Arc<Totals>,
    permits: Arc<Semaphore>,
    next_seq: Arc<AtomicU64>,
    deadline: Instant,
    run_started: Instant,
    message_id: u16,
}

impl Device {
    async fn run(mut self) {
        let mut buf = [0u8; 1500];
        let confirmable = self.args.r#type == "con";
        loop {
            let Ok(_permit) = self.permits.acquire().await else { return };
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            if seq >= self.args.count || Instant::now() >= self.deadline {
                return;
            }
            self.message_id = self.message_id.wrapping_add(1);
            let request = self.request(seq, confirmable);
            let bytes = request.encode();
            let started = Instant::now();
            self.totals.sent.fetch_add(1, Ordering::Relaxed);
            let mut wait = if confirmable && self.args.retransmit {
                coapgate_coap::params::ACK_TIMEOUT
            } else {
                Duration::from_secs_f64(self.args.timeout)
            };
            let mut attempts = 0;
            let code = 'exchange: loop {
                let _ = self.socket.send(&bytes).await;
                let attempt_deadline = tokio::time::Instant::now() + wait;
                loop {
                    match tokio::time::timeout_at(attempt_deadline, self.socket.recv(&mut buf)).await {
                        Ok(Ok(n)) => {
                            let Ok(response) = Message::parse(&buf[..n]) else { continue };
                            if response.mtype == MessageType::Confirmable {
                                // A separate response: acknowledge it as a device would.
                                let _ = self.socket.send(&Message::empty_ack(response.message_id).encode()).await;
                            }
                            if response.token != request.token || response.code.is_empty() {
                                continue;
                            }
                            break 'exchange Some(response.code);
                        }
                        Ok(Err(_)) => continue,
                        Err(_) => break,
                    }
                }
                attempts += 1;
                if !(confirmable && self.args.retransmit) || attempts > coapgate_coap::params::MAX_RETRANSMIT {
                    break None;
                }
                self.totals.retransmissions.fetch_add(1, Ordering::Relaxed);
                wait *= 2;
            };
            match code {
                Some(code) => {
                    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    self.totals.latencies_us.lock().unwrap().push(micros);
                    let at = self.run_started.elapsed().as_micros() as u64;
                    self.totals.last_answer_us.fetch_max(at, Ordering::Relaxed);
                    *self.totals.codes.lock().unwrap().entry(code.to_string()).or_default() += 1;
                }
                None => {
                    self.totals.timeouts.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn request(&self, seq: u64, confirmable: bool) -> Message {
        let mtype = if confirmable { MessageType::Confirmable } else { MessageType::NonConfirmable };
        let code = if self.args.method == "put" { Code::PUT } else { Code::POST };
        let mut m = Message::new(mtype, code, self.message_id);
        m.token = Token::from_slice(&seq.to_be_bytes()[4..]).expect("4-byte token");
        for segment in &self.path {
            m.add_option(option::URI_PATH, segment.as_bytes().to_vec());
        }
        m.set_uint_option(option::CONTENT_FORMAT, self.args.content_format);
        m.payload = self
            .args
            .payload
            .replace("{device}", &self.number.to_string())
            .replace("{name}", &(seq % self.args.names.unwrap_or(self.args.devices as u64).max(1)).to_string())
            .replace("{seq}", &seq.to_string())
            .replace("{ts}", &coapgate_storage::now_millis().to_string())
            .into_bytes();
        m
    }
}

fn report(args: &BenchArgs, totals: &Totals, elapsed: Duration) {
    let mut latencies = std::mem::take(&mut *totals.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(latencies[index]) / 1000.0
    };
    let answered = latencies.len() as u64;
    let until_last_answer = totals.last_answer_us.load(Ordering::Relaxed);
    let seconds = if until_last_answer > 0 { until_last_answer as f64 / 1e6 } else { elapsed.as_secs_f64() };
    let codes = totals.codes.lock().unwrap().clone();
    let report = json!({
        "url": args.url,
        "devices": args.devices,
        "in_flight": args.in_flight,
        "type": args.r#type,
        "method": args.method,
        "sent": totals.sent.load(Ordering::Relaxed),
        "answered": answered,
        "timeouts": totals.timeouts.load(Ordering::Relaxed),
        "retransmissions": totals.retransmissions.load(Ordering::Relaxed),
        "codes": codes,
        "seconds": seconds,
        "wall_seconds": elapsed.as_secs_f64(),
        "throughput_per_s": answered as f64 / seconds,
        "latency_ms": {
            "p50": percentile(0.50), "p90": percentile(0.90), "p99": percentile(0.99),
            "p999": percentile(0.999), "max": percentile(1.0),
        },
    });
    if args.json {
        println!("{report}");
        return;
    }
    println!(
        "{} requests in {:.2} s (last answer at {:.2} s) from {} devices, {} in flight: {:.0} answered/s",
        report["sent"],
        elapsed.as_secs_f64(),
        seconds,
        args.devices,
        args.in_flight,
        report["throughput_per_s"].as_f64().unwrap_or(0.0)
    );
    println!("  codes:    {}", serde_json::to_string(&codes).unwrap_or_default());
    println!("  timeouts: {}  retransmissions: {}", report["timeouts"], report["retransmissions"]);
    let l = &report["latency_ms"];
    println!("  latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}", l["p50"], l["p90"], l["p99"], l["p999"], l["max"]);
}
