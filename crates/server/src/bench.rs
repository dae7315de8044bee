//! `coapgate bench`: a CoAP load generator that behaves like a fleet of devices.
//!
//! Each simulated device has its own UDP socket (so its own source port and Message-ID space) and
//! sends one request at a time, as constrained devices do (NSTART = 1); at most `--in-flight`
//! requests are out across all devices, and the next one goes from the device idle longest. It
//! stops by itself after `--count` requests or `--duration`, and only ever sends to the `--url`
//! it is given.
//!
//! A `coaps://` URL makes every device a DTLS client (`bench_dtls`): the run first completes a
//! full handshake per device (at most `--in-flight` at once) and reports handshakes per second,
//! then sends the uplinks over the established sessions.
//!
//! One thread runs an event loop over all device sockets (mio): the generator shares the
//! machine with the server it measures, so every microsecond it spends per request is taken
//! from the server. A task, a timer and a semaphore per request (the tokio version) cost about
//! a quarter more CPU per request than this loop. Against a server faster than one such loop
//! (bare libcoap with few endpoints), `--threads N` runs N loops, each with its own share of the
//! devices, the in-flight budget, the count and the rate, and merges what they counted; the
//! report gives the generator's own CPU per request, so a reader can tell which side was the
//! bound.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coapgate_coap::message::{Code, Message, MessageType, Token, option};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll};
use serde_json::json;

use crate::bench_dtls::{ATTEMPT_TIMEOUT, DtlsAuth, DtlsLink, Input};
use crate::registry::url_path_segments;

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Endpoint URL, e.g. coap://127.0.0.1:5683/i/<routing key>, or coaps://… for DTLS.
    #[arg(long)]
    pub(crate) url: String,
    /// With a coaps:// URL: a pre-shared key, IDENTITY:KEY (the key as text, or hex after 0x);
    /// without it, certificate handshakes (the server's certificate is not verified).
    #[arg(long)]
    pub(crate) psk: Option<String>,
    /// Simulated devices, each with its own UDP source port.
    #[arg(long, default_value_t = 1000)]
    pub(crate) devices: usize,
    /// Requests in flight at most, across all devices.
    #[arg(long, default_value_t = 64)]
    pub(crate) in_flight: usize,
    /// Total requests to send (stops at whichever of --count and --duration comes first).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) count: u64,
    /// Longest run in seconds.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) duration: f64,
    /// Message type.
    #[arg(long, value_parser = ["con", "non"], default_value = "con")]
    pub(crate) r#type: String,
    /// Method.
    #[arg(long, value_parser = ["post", "put"], default_value = "post")]
    pub(crate) method: String,
    /// Payload template: {device} is the simulating socket's number, {name} the device name
    /// number (see --names), {seq} the request number, {ts} now in ms, {us} now in µs (the
    /// send time `coapgate bench-ws` measures its updates' latency from).
    #[arg(long, default_value = "SN-{name},default,temperature,25.7,humidity,69")]
    pub(crate) payload: String,
    /// How many distinct device names {name} cycles through (default: --devices). More names
    /// than sockets simulate a large fleet without a socket per device.
    #[arg(long)]
    pub(crate) names: Option<u64>,
    /// Content-Format of the payload (0 = text/plain).
    #[arg(long, default_value_t = 0)]
    pub(crate) content_format: u32,
    /// Seconds to wait for a response before counting a timeout.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) timeout: f64,
    /// Retransmit CON requests like RFC 7252 (ACK_TIMEOUT 2 s, doubling, 4 times).
    #[arg(long)]
    pub(crate) retransmit: bool,
    /// Requests started per second at most (default: as fast as --in-flight allows), for
    /// soak runs at a steady rate.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Generator threads: each runs its own event loop over its share of the devices, of
    /// --in-flight, of --count and of --rate. Plain CoAP only (a DTLS run uses one thread).
    /// Every thread takes CPU from a server on the same machine.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One generator thread's part of a run: its devices, its budget, and how its requests are
/// numbered. Thread `index` of `threads` numbers its requests index, index + threads, …, so the
/// numbers of all threads together are those of a one-thread run (0 to --count), and `{name}`
/// still cycles over every name.
#[derive(Clone, Copy)]
struct Share {
    index: u64,
    threads: u64,
    /// The number of this thread's first device among all (for `{device}`).
    first_device: usize,
    devices: usize,
    in_flight: usize,
    count: u64,
    rate: Option<f64>,
}

impl Share {
    fn of(args: &BenchArgs, index: usize) -> Share {
        let threads = args.threads;
        // An even split, the first threads taking one more where it does not divide.
        let part = |total: usize, i: usize| total / threads + usize::from(i < total % threads);
        let count_part = args.count / threads as u64 + u64::from((index as u64) < args.count % threads as u64);
        Share {
            index: index as u64,
            threads: threads as u64,
            first_device: (0..index).map(|i| part(args.devices, i)).sum(),
            devices: part(args.devices, index),
            in_flight: part(args.in_flight, index),
            count: count_part,
            rate: args.rate.map(|r| r / threads as f64),
        }
    }

    /// The run-wide number of this thread's `local`-th request.
    fn seq(&self, local: u64) -> u64 {
        local * self.threads + self.index
    }
}

/// What a run (or one of its threads) counted.
struct Totals {
    sent: u64,
    timeouts: u64,
    retransmissions: u64,
    /// Answers to an earlier request with the same source port and Message ID (see
    /// `Generator::on_replay`): the request went again under a new Message ID.
    replays: u64,
    codes: BTreeMap<String, u64>,
    /// Answered requests' latencies in microseconds. An HDR histogram (3 significant digits)
    /// rather than every sample: its size does not grow with the run, and the threads' merge by
    /// adding counts.
    latencies_us: hdrhistogram::Histogram<u64>,
    /// When the last answer came: throughput is counted up to it, so a request that times out
    /// at the end does not dilute the rate with its wait.
    last_answer: Option<Duration>,
}

impl Default for Totals {
    fn default() -> Totals {
        Totals {
            sent: 0,
            timeouts: 0,
            retransmissions: 0,
            replays: 0,
            codes: BTreeMap::new(),
            // Auto-resizing: any latency up to --timeout (or beyond, retransmitting) fits.
            latencies_us: hdrhistogram::Histogram::new(3).expect("3 significant digits are supported"),
            last_answer: None,
        }
    }
}

impl Totals {
    /// Adds what another thread counted (started at the same instant).
    fn merge(&mut self, other: &Totals) {
        self.sent += other.sent;
        self.timeouts += other.timeouts;
        self.retransmissions += other.retransmissions;
        self.replays += other.replays;
        for (code, n) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += n;
        }
        self.latencies_us.add(&other.latencies_us).expect("an auto-resizing histogram takes any other");
        self.last_answer = self.last_answer.max(other.last_answer);
    }
}

/// One simulated device: its socket, its Message ID counter and its request in flight.
struct Device {
    socket: UdpSocket,
    message_id: u16,
    pending: Option<Pending>,
    /// Its DTLS session, with a coaps:// URL.
    dtls: Option<DtlsLink>,
}

/// What the handshakes of a DTLS run counted.
#[derive(Default)]
struct Handshakes {
    completed: u64,
    failed: u64,
    /// Attempts started again after `ATTEMPT_TIMEOUT` without an answer, or after an alert.
    retries: u64,
    latencies_us: Vec<u32>,
    /// When the last handshake completed.
    done_at: Option<Duration>,
    last_error: Option<String>,
    /// Established sessions the server ended (an alert, or records it no longer accepts).
    sessions_lost: u64,
}

struct Pending {
    seq: u64,
    message_id: u16,
    token: Token,
    bytes: Vec<u8>,
    sent_at: Instant,
    attempts: u32,
    wait: Duration,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (args, report) = generate(args)?;
    print_report(&args, &report);
    Ok(())
}

/// Runs the generator and returns the report `--json` prints (for `coapgate bench-ws`).
pub(crate) fn measure(args: BenchArgs) -> anyhow::Result<serde_json::Value> {
    Ok(generate(args)?.1)
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn generate(args: BenchArgs) -> anyhow::Result<(BenchArgs, serde_json::Value)> {
    let (rest, default_port) = match (args.url.strip_prefix("coap://"), args.url.strip_prefix("coaps://")) {
        (Some(rest), _) => (rest, 5683),
        (_, Some(rest)) => (rest, 5684),
        _ => bail!("--url: must start with coap:// or coaps://"),
    };
    if args.psk.is_some() && default_port == 5683 {
        bail!("--psk: only with a coaps:// URL");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:{default_port}") };
    let target: SocketAddr = authority
        .to_socket_addrs()
        .with_context(|| format!("--url: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("--url: no address for {authority}"))?;
    if args.devices == 0 || args.in_flight == 0 {
        bail!("--devices and --in-flight must be at least 1");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.threads > 1 && default_port == 5684 {
        // Each DTLS thread would need its own handshake bookkeeping merged; not built.
        bail!("--threads: a DTLS run (coaps://) uses one thread");
    }
    if args.threads > args.devices || args.threads > args.in_flight {
        bail!("--threads must not exceed --devices or --in-flight: every thread needs a device and a request in flight");
    }
    // Every thread's sockets are bound before the clock starts, as a one-thread run's are.
    let mut generators = (0..args.threads)
        .map(|index| Generator::new(args.clone(), Share::of(&args, index), target))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cpu_before = own_cpu_time();
    let started = Instant::now();
    if let [generator] = generators.as_mut_slice() {
        generator.run(started)?;
    } else {
        std::thread::scope(|scope| {
            let threads: Vec<_> = generators.iter_mut().map(|g| scope.spawn(move || g.run(started))).collect();
            threads.into_iter().try_for_each(|t| t.join().expect("a generator thread panicked"))
        })?;
    }
    let elapsed = started.elapsed();
    let cpu_after = own_cpu_time();
    let cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let mut totals = Totals::default();
    for generator in &generators {
        totals.merge(&generator.totals);
    }
    let report = report(&args, &totals, generators[0].dtls.as_ref().map(|d| &d.handshakes), elapsed, cpu);
    Ok((args, report))
}

/// This process's CPU time so far, user and system, in seconds (every thread counted).
fn own_cpu_time() -> (f64, f64) {
    // SAFETY: rusage is a plain C struct for which all-zero bytes are a valid value, and
    // getrusage only writes into the one it is given (it cannot fail for RUSAGE_SELF).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// The DTLS side of a run: the client context, the devices waiting for their first handshake,
/// the attempts' deadlines and what the handshakes counted.
struct DtlsRun {
    context: openssl::ssl::SslContext,
    not_started: VecDeque<usize>,
    handshaking: usize,
    /// (deadline, device, attempt): when an attempt is started again.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    handshakes: Handshakes,
}

struct Generator {
    args: BenchArgs,
    /// This thread's devices, budget and request numbers (all of them with one thread).
    share: Share,
    path: Vec<String>,
    devices: Vec<Device>,
    /// Devices with nothing in flight, longest idle first.
    idle: VecDeque<usize>,
    /// When each request (or retransmission) gives up waiting: (deadline, device, seq, attempt).
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64, u32)>>,
    in_flight: usize,
    /// Requests this thread has started; the next one is numbered `share.seq(started_requests)`.
    started_requests: u64,
    totals: Totals,
    poll: Poll,
    dtls: Option<DtlsRun>,
}

impl Generator {
    fn new(args: BenchArgs, share: Share, target: SocketAddr) -> anyhow::Result<Generator> {
        let poll = Poll::new().context("creating the event loop")?;
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        let mut devices = Vec::with_capacity(share.devices);
        for number in 0..share.devices {
            let mut socket = UdpSocket::bind(bind).context("binding a device socket (raise ulimit -n for many devices)")?;
            socket.connect(target)?;
            // Room for a burst of answers; the kernel caps it at net.core.rmem_max.
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(256 * 1024);
            poll.registry().register(&mut socket, mio::Token(number), Interest::READABLE)?;
            devices.push(Device { socket, message_id: rand::random(), pending: None, dtls: None });
        }
        // DTLS devices become idle (ready to send) once their handshake completes.
        let dtls = if args.url.starts_with("coaps://") {
            Some(DtlsRun {
                context: DtlsAuth::parse(args.psk.as_deref())?.context()?,
                not_started: (0..share.devices).collect(),
                handshaking: 0,
                deadlines: BinaryHeap::new(),
                handshakes: Handshakes::default(),
            })
        } else {
            None
        };
        Ok(Generator {
            path: url_path_segments(&args.url),
            idle: if dtls.is_some() { VecDeque::new() } else { (0..share.devices).collect() },
            dtls,
            devices,
            deadlines: BinaryHeap::new(),
            in_flight: 0,
            started_requests: 0,
            share,
            totals: Totals::default(),
            poll,
            args,
        })
    }

    fn run(&mut self, started: Instant) -> anyhow::Result<()> {
        let stop_sending = started + Duration::from_secs_f64(self.args.duration);
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; 1500];
        loop {
            let now = Instant::now();
            let sending = self.started_requests < self.share.count && now < stop_sending;
            let handshaking = self.start_handshakes(now, sending)?;
            // With --rate, request n starts no earlier than n / rate seconds into the run.
            let budget = self.share.rate.map_or(u64::MAX, |r| ((now - started).as_secs_f64() * r) as u64 + 1);
            while sending
                && self.in_flight < self.share.in_flight
                && self.started_requests < self.share.count
                && self.started_requests < budget
            {
                let Some(device) = self.idle.pop_front() else { break };
                self.send_new(device, now);
            }
            // Done when nothing is out, and either the sending time is over or no device can send
            // any more (every DTLS handshake failed).
            let nobody_left = self.idle.is_empty() && handshaking == 0;
            if self.in_flight == 0 && handshaking == 0 && (!sending || nobody_left) {
                return Ok(());
            }
            // Wake for the earliest deadline, and at the end of the sending time.
            let mut wake = self.deadlines.peek().map(|Reverse(d)| d.0).unwrap_or(now + Duration::from_secs(1));
            if let Some(Reverse((at, _, _))) = self.dtls.as_ref().and_then(|d| d.deadlines.peek()) {
                wake = wake.min(*at);
            }
            if sending {
                wake = wake.min(stop_sending);
                if let Some(rate) = self.share.rate
                    && self.started_requests >= budget
                {
                    wake = wake.min(started + Duration::from_secs_f64(self.started_requests as f64 / rate));
                }
            }
            let timeout = wake.saturating_duration_since(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("waiting for answers"),
            }
            for event in events.iter() {
                self.receive(event.token().0, &mut buf, started);
            }
            self.expire(Instant::now());
            self.expire_handshakes(Instant::now())?;
        }
    }

    /// Starts DTLS handshakes while fewer than `--in-flight` are under way (none after the
    /// sending time); returns how many are under way.
    fn start_handshakes(&mut self, now: Instant, sending: bool) -> anyhow::Result<usize> {
        let Some(dtls) = self.dtls.as_mut() else { return Ok(0) };
        while sending && dtls.handshaking < self.share.in_flight {
            let Some(number) = dtls.not_started.pop_front() else { break };
            let (link, out) = DtlsLink::start(&dtls.context, now)?;
            let device = &mut self.devices[number];
            for datagram in out {
                let _ = device.socket.send(&datagram);
            }
            dtls.deadlines.push(Reverse((now + ATTEMPT_TIMEOUT, number, link.attempts)));
            device.dtls = Some(link);
            dtls.handshaking += 1;
        }
        Ok(dtls.handshaking)
    }

    /// Starts again the handshake attempts that got no answer in time; gives up on a device
    /// after `--timeout`.
    fn expire_handshakes(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some(dtls) = self.dtls.as_mut() else { return Ok(()) };
        while let Some(&Reverse((deadline, number, attempt))) = dtls.deadlines.peek() {
            if deadline > now {
                return Ok(());
            }
            dtls.deadlines.pop();
            let device = &mut self.devices[number];
            let Some(link) = device.dtls.as_mut().filter(|l| !l.established() && l.attempts == attempt) else { continue };
            if now.duration_since(link.first_started).as_secs_f64() >= self.args.timeout {
                dtls.handshakes.failed += 1;
                dtls.handshakes.last_error.get_or_insert_with(|| "no answer to the handshake".into());
                dtls.handshaking -= 1;
                device.dtls = None;
                continue;
            }
            for datagram in link.restart(&dtls.context, now)? {
                let _ = device.socket.send(&datagram);
            }
            dtls.handshakes.retries += 1;
            dtls.deadlines.push(Reverse((now + ATTEMPT_TIMEOUT, number, link.attempts)));
        }
        Ok(())
    }

    /// Sends one CoAP message from a device: as it is, or sealed in its DTLS session.
    fn transmit(&mut self, number: usize, bytes: &[u8]) {
        let device = &mut self.devices[number];
        match device.dtls.as_mut() {
            None => {
                let _ = device.socket.send(bytes);
            }
            Some(link) => {
                for record in link.seal(bytes).unwrap_or_default() {
                    let _ = device.socket.send(&record);
                }
            }
        }
    }

    fn send_new(&mut self, number: usize, now: Instant) {
        let seq = self.share.seq(self.started_requests);
        self.started_requests += 1;
        let confirmable = self.args.r#type == "con";
        let device = &mut self.devices[number];
        device.message_id = device.message_id.wrapping_add(1);
        let message_id = device.message_id;
        let request = request(&self.args, &self.path, self.share.first_device + number, seq, message_id, confirmable);
        let wait = if confirmable && self.args.retransmit {
            coapgate_coap::params::ACK_TIMEOUT
        } else {
            Duration::from_secs_f64(self.args.timeout)
        };
        let bytes = request.encode();
        self.transmit(number, &bytes);
        let device = &mut self.devices[number];
        device.pending = Some(Pending { seq, message_id, token: request.token, bytes, sent_at: now, attempts: 0, wait });
        self.deadlines.push(Reverse((now + wait, number, seq, 0)));
        self.totals.sent += 1;
        self.in_flight += 1;
    }

    /// Takes every datagram waiting on a device's socket (mio is edge-triggered).
    fn receive(&mut self, number: usize, buf: &mut [u8], started: Instant) {
        loop {
            let n = match self.devices[number].socket.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP errors (e.g. port unreachable) surface here; the request times out.
                Err(_) => continue,
            };
            if self.devices[number].dtls.is_none() {
                self.on_message(number, &buf[..n], started);
                continue;
            }
            for message in self.dtls_input(number, &buf[..n], started) {
                self.on_message(number, &message, started);
            }
        }
    }

    /// A datagram of a DTLS device through its session: handshake progress, or the CoAP
    /// messages it carried.
    fn dtls_input(&mut self, number: usize, datagram: &[u8], started: Instant) -> Vec<Vec<u8>> {
        let (Some(dtls), device) = (self.dtls.as_mut(), &mut self.devices[number]) else { return Vec::new() };
        let Some(link) = device.dtls.as_mut() else { return Vec::new() };
        let was_established = link.established();
        let mut out = Vec::new();
        let input = link.input(datagram, &mut out);
        for record in out {
            let _ = device.socket.send(&record);
        }
        match input {
            Input::Nothing => Vec::new(),
            Input::Data(messages) => messages,
            Input::Established => {
                let micros = link.attempt_started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                dtls.handshakes.latencies_us.push(micros);
                dtls.handshakes.completed += 1;
                dtls.handshakes.done_at = Some(started.elapsed());
                dtls.handshaking -= 1;
                self.idle.push_back(number);
                Vec::new()
            }
            Input::Failed(error) if was_established => {
                // The request in flight, if any, times out; the device sends no more.
                dtls.handshakes.sessions_lost += 1;
                dtls.handshakes.last_error = Some(error);
                Vec::new()
            }
            Input::Failed(error) => {
                // An alert during the handshake: the next attempt starts at its deadline.
                dtls.handshakes.last_error = Some(error);
                Vec::new()
            }
        }
    }

    /// One CoAP message received by a device: the answer to its request, or a separate
    /// response to acknowledge.
    fn on_message(&mut self, number: usize, bytes: &[u8], started: Instant) {
        let Ok(response) = Message::parse(bytes) else { return };
        if response.mtype == MessageType::Confirmable {
            // A separate response: acknowledge it as a device would.
            self.transmit(number, &Message::empty_ack(response.message_id).encode());
        }
        let device = &mut self.devices[number];
        let matches = device.pending.as_ref().is_some_and(|p| p.token == response.token);
        if !matches && response.mtype == MessageType::Acknowledgement && !response.code.is_empty() {
            self.on_replay(number, response.message_id);
            return;
        }
        if !matches || response.code.is_empty() {
            return;
        }
        let pending = device.pending.take().expect("checked above");
        let micros = pending.sent_at.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.totals.latencies_us.record(micros).expect("an auto-resizing histogram records any value");
        *self.totals.codes.entry(response.code.to_string()).or_default() += 1;
        self.totals.last_answer = Some(started.elapsed());
        self.finish(number);
    }

    /// A piggybacked answer with the Message ID of the device's request but another token: the
    /// server took the request for a duplicate of an earlier one with the same source port and
    /// Message ID, still within EXCHANGE_LIFETIME (247 s), and replayed that one's answer, as
    /// RFC 7252 §4.5 has it. That happens when this process was given a port an earlier run used
    /// against the same server and its random first Message ID falls into the range that run
    /// used (a port sending faster than 265 requests/s for 247 s uses every Message ID). The
    /// request was not processed: it goes again at once under the device's next Message ID,
    /// keeping its token and its start time, and the report counts it under `replays`.
    fn on_replay(&mut self, number: usize, message_id: u16) {
        let device = &mut self.devices[number];
        let Some(pending) = device.pending.as_mut().filter(|p| p.message_id == message_id) else { return };
        device.message_id = device.message_id.wrapping_add(1);
        pending.message_id = device.message_id;
        let mut request = Message::parse(&pending.bytes).expect("the generator's own request parses");
        request.message_id = pending.message_id;
        pending.bytes = request.encode();
        let bytes = pending.bytes.clone();
        self.transmit(number, &bytes);
        self.totals.replays += 1;
    }

    /// Retransmits (with --retransmit) or gives up on requests whose wait is over.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, number, seq, attempt))) = self.deadlines.peek() {
            if deadline > now {
                return;
            }
            self.deadlines.pop();
            let retransmit = self.args.retransmit && self.args.r#type == "con";
            let device = &mut self.devices[number];
            // Answered already, or an older attempt's deadline: nothing to do.
            let Some(pending) = device.pending.as_mut().filter(|p| p.seq == seq && p.attempts == attempt) else { continue };
            if retransmit && pending.attempts < coapgate_coap::params::MAX_RETRANSMIT {
                pending.attempts += 1;
                pending.wait *= 2;
                let (bytes, attempts, wait) = (pending.bytes.clone(), pending.attempts, pending.wait);
                self.transmit(number, &bytes);
                self.deadlines.push(Reverse((now + wait, number, seq, attempts)));
                self.totals.retransmissions += 1;
            } else {
                device.pending = None;
                self.totals.timeouts += 1;
                self.finish(number);
            }
        }
    }

    fn finish(&mut self, number: usize) {
        self.in_flight -= 1;
        self.idle.push_back(number);
    }
}

/// The next request of simulated device `number`: the URL's path, the payload template filled in.
fn request(args: &BenchArgs, path: &[String], number: usize, seq: u64, message_id: u16, confirmable: bool) -> Message {
    let mtype = if confirmable { MessageType::Confirmable } else { MessageType::NonConfirmable };
    let code = if args.method == "put" { Code::PUT } else { Code::POST };
    let mut m = Message::new(mtype, code, message_id);
    m.token = Token::from_slice(&seq.to_be_bytes()[4..]).expect("4-byte token");
    for segment in path {
        m.add_option(option::URI_PATH, segment.as_bytes().to_vec());
    }
    m.set_uint_option(option::CONTENT_FORMAT, args.content_format);
    let mut payload = args.payload.clone();
    let mut fill = |placeholder: &str, value: &dyn Fn() -> String| {
        if payload.contains(placeholder) {
            payload = payload.replace(placeholder, &value());
        }
    };
    fill("{device}", &|| number.to_string());
    fill("{name}", &|| (seq % args.names.unwrap_or(args.devices as u64).max(1)).to_string());
    fill("{seq}", &|| seq.to_string());
    fill("{ts}", &|| coapgate_storage::now_millis().to_string());
    fill("{us}", &|| now_micros().to_string());
    m.payload = payload.into_bytes();
    m
}

/// Prints what the run counted; `cpu` is the generator's own (user, system) CPU time over it.
fn report(args: &BenchArgs, totals: &Totals, handshakes: Option<&Handshakes>, elapsed: Duration, cpu: (f64, f64)) -> serde_json::Value {
    let latencies = &totals.latencies_us;
    let percentile = |p: f64| latencies.value_at_quantile(p) as f64 / 1000.0;
    let answered = latencies.len();
    let handshake_report = handshakes.map(|h| {
        let mut l = h.latencies_us.clone();
        l.sort_unstable();
        let at = |p: f64| if l.is_empty() { 0.0 } else { f64::from(l[((l.len() as f64 - 1.0) * p).round() as usize]) / 1000.0 };
        let seconds = h.done_at.map_or(0.0, |d| d.as_secs_f64());
        json!({
            "completed": h.completed, "failed": h.failed, "retries": h.retries, "sessions_lost": h.sessions_lost,
            "seconds": seconds,
            "per_s": if seconds > 0.0 { h.completed as f64 / seconds } else { 0.0 },
            "latency_ms": {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)},
            "last_error": h.last_error,
        })
    });
    let seconds = totals.last_answer.unwrap_or(elapsed).as_secs_f64();
    let codes = &totals.codes;
    json!({
        "url": args.url,
        "devices": args.devices,
        "in_flight": args.in_flight,
        "type": args.r#type,
        "method": args.method,
        "sent": totals.sent,
        "answered": answered,
        "timeouts": totals.timeouts,
        "retransmissions": totals.retransmissions,
        "replays": totals.replays,
        "codes": codes,
        "seconds": seconds,
        "wall_seconds": elapsed.as_secs_f64(),
        "throughput_per_s": answered as f64 / seconds,
        "latency_ms": {
            "p50": percentile(0.50), "p90": percentile(0.90), "p99": percentile(0.99),
            "p999": percentile(0.999), "max": latencies.max() as f64 / 1000.0,
        },
        "dtls_handshakes": handshake_report,
        "threads": args.threads,
        "generator_cpu": {
            "user_seconds": cpu.0, "system_seconds": cpu.1,
            "us_per_request": if totals.sent > 0 { (cpu.0 + cpu.1) * 1e6 / totals.sent as f64 } else { 0.0 },
        },
    })
}

fn print_report(args: &BenchArgs, report: &serde_json::Value) {
    if args.json {
        println!("{report}");
        return;
    }
    let codes = &report["codes"];
    println!(
        "{} requests in {:.2} s (last answer at {:.2} s) from {} devices, {} in flight: {:.0} answered/s",
        report["sent"],
        report["wall_seconds"].as_f64().unwrap_or(0.0),
        report["seconds"].as_f64().unwrap_or(0.0),
        args.devices,
        args.in_flight,
        report["throughput_per_s"].as_f64().unwrap_or(0.0)
    );
    if let Some(h) = report["dtls_handshakes"].as_object() {
        println!(
            "  DTLS handshakes: {} completed in {:.2} s ({:.0}/s), {} failed, {} retried, {} sessions lost; ms p50 {} p99 {}{}",
            h["completed"],
            h["seconds"].as_f64().unwrap_or(0.0),
            h["per_s"].as_f64().unwrap_or(0.0),
            h["failed"],
            h["retries"],
            h["sessions_lost"],
            h["latency_ms"]["p50"],
            h["latency_ms"]["p99"],
            h["last_error"].as_str().map(|e| format!("; last error: {e}")).unwrap_or_default()
        );
    }
    println!("  codes:    {}", serde_json::to_string(codes).unwrap_or_default());
    println!(
        "  timeouts: {}  retransmissions: {}  replays: {}",
        report["timeouts"], report["retransmissions"], report["replays"]
    );
    let l = &report["latency_ms"];
    println!("  latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}", l["p50"], l["p90"], l["p99"], l["p999"], l["max"]);
    println!(
        "  generator: {} thread(s), {:.2} µs CPU per request (user {:.2} s, system {:.2} s)",
        args.threads,
        report["generator_cpu"]["us_per_request"].as_f64().unwrap_or(0.0),
        report["generator_cpu"]["user_seconds"].as_f64().unwrap_or(0.0),
        report["generator_cpu"]["system_seconds"].as_f64().unwrap_or(0.0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// Two threads' counts and latencies merge into the run's, latencies of any size kept to
    /// three significant digits.
    #[test]
    fn totals_merge_counts_and_latencies() {
        let mut a = Totals { sent: 101, timeouts: 1, ..Totals::default() };
        let mut b = Totals { sent: 100, replays: 2, ..Totals::default() };
        for ms in 1..=100u64 {
            a.latencies_us.record(ms * 1000).unwrap();
            b.latencies_us.record(200_000 + ms).unwrap();
        }
        a.codes.insert("2.01".into(), 100);
        b.codes.insert("2.01".into(), 99);
        b.codes.insert("5.03".into(), 1);
        a.last_answer = Some(Duration::from_secs(2));
        b.last_answer = Some(Duration::from_secs(3));
        let mut run = Totals::default();
        run.merge(&a);
        run.merge(&b);
        assert_eq!((run.sent, run.timeouts, run.replays), (201, 1, 2));
        assert_eq!(run.codes, BTreeMap::from([("2.01".to_string(), 199), ("5.03".to_string(), 1)]));
        assert_eq!(run.last_answer, Some(Duration::from_secs(3)));
        assert_eq!(run.latencies_us.len(), 200);
        let close = |value: u64, expected: u64| value.abs_diff(expected) * 1000 <= expected;
        assert!(close(run.latencies_us.value_at_quantile(0.5), 100_000), "{}", run.latencies_us.value_at_quantile(0.5));
        assert!(close(run.latencies_us.value_at_quantile(0.25), 50_000));
        assert!(close(run.latencies_us.max(), 200_100), "{}", run.latencies_us.max());
        assert!(close(run.latencies_us.min(), 1_000));
    }

    /// The threads' shares add up to the run's, and their request numbers are 0 to --count,
    /// each once.
    #[test]
    fn shares_split_the_run_and_number_its_requests_once() {
        for (threads, devices, in_flight, count) in [(1, 1000, 64, 100_000), (2, 64, 64, 1_000_001), (3, 10, 7, 11), (4, 4, 4, 2)] {
            let args = Cli::parse_from([
                "bench", "--url", "coap://127.0.0.1/x", "--threads", &threads.to_string(), "--devices", &devices.to_string(),
                "--in-flight", &in_flight.to_string(), "--count", &count.to_string(), "--rate", "1000",
            ])
            .bench;
            let shares: Vec<Share> = (0..threads).map(|i| Share::of(&args, i)).collect();
            assert_eq!(shares.iter().map(|s| s.devices).sum::<usize>(), devices);
            assert_eq!(shares.iter().map(|s| s.in_flight).sum::<usize>(), in_flight);
            assert_eq!(shares.iter().map(|s| s.count).sum::<u64>(), count);
            assert!((shares.iter().map(|s| s.rate.unwrap()).sum::<f64>() - 1000.0).abs() < 1e-6);
            // Each thread's devices follow the previous thread's.
            for pair in shares.windows(2) {
                assert_eq!(pair[1].first_device, pair[0].first_device + pair[0].devices);
            }
            if count <= 1_000 {
                let mut seqs: Vec<u64> = shares.iter().flat_map(|s| (0..s.count).map(|n| s.seq(n))).collect();
                seqs.sort_unstable();
                assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "{threads} threads");
            } else {
                // Every thread's last request number is below --count, and the largest is the last.
                let last = shares.iter().map(|s| s.seq(s.count - 1)).max().unwrap();
                assert_eq!(last, count - 1);
            }
        }
    }
}
