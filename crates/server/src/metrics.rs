//! `GET /metrics`: counters and queue depths in Prometheus' text format.
//!
//! Everything here is read from atomics and queue lengths the components already keep, so a
//! scrape costs nothing on the uplink path.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use coapgate_script::EnginePool;

use crate::coap_endpoint::CoapEndpoint;
use crate::events::EventSink;
use crate::histogram::Histogram;
use crate::writer::WriterHandle;

pub struct Metrics {
    pub endpoint: Arc<CoapEndpoint>,
    /// The DTLS endpoint, when enabled.
    pub dtls: Option<Arc<CoapEndpoint>>,
    pub writer: WriterHandle,
    pub pool: Arc<EnginePool>,
    pub events: Arc<EventSink>,
    pub script_micros: Arc<Histogram>,
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let s = &self.endpoint.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        metric("coapgate_coap_datagrams_total", "counter", "CoAP datagrams received", &[("", load(&s.datagrams))]);
        metric("coapgate_coap_malformed_total", "counter", "datagrams that were not valid CoAP", &[("", load(&s.malformed))]);
        metric("coapgate_coap_duplicates_total", "counter", "duplicate requests answered from the deduplication cache", &[("", load(&s.duplicates))]);
        metric(
            "coapgate_coap_reused_message_ids_total",
            "counter",
            "requests whose Message ID came back with another token while remembered, processed as new",
            &[("", load(&s.reused_ids))],
        );
        metric(
            "coapgate_uplinks_total",
            "counter",
            "uplinks answered, by result",
            &[("{result=\"created\"}", load(&s.uplinks_ok)), ("{result=\"error\"}", load(&s.uplinks_failed))],
        );
        metric("coapgate_overloaded_total", "counter", "requests answered 5.03 because a queue was full", &[("", load(&s.overloaded))]);
        metric("coapgate_uplinks_in_flight", "gauge", "uplinks accepted and not yet answered", &[("", self.endpoint.in_flight() as u64)]);
        metric("coapgate_dedup_entries", "gauge", "exchanges remembered for deduplication", &[("", self.endpoint.dedup_len() as u64)]);
        metric(
            "coapgate_dedup_dense_peers",
            "gauge",
            "peers sending faster than their message ids last, whose ids have a table of their own (1 MiB each)",
            &[("", self.endpoint.dedup_dense_peers() as u64)],
        );
        metric("coapgate_script_queue_depth", "gauge", "uplinks waiting for a script worker", &[("", self.pool.queue_len() as u64)]);
        metric("coapgate_writer_queue_depth", "gauge", "decoded uplinks waiting for the writer", &[("", self.writer.queue_len() as u64)]);
        let w = &self.writer.stats;
        metric("coapgate_writer_commits_total", "counter", "group commits", &[("", load(&w.commits))]);
        metric("coapgate_writer_syncs_total", "counter", "flushes of committed batches by the sync thread", &[("", load(&w.syncs))]);
        metric("coapgate_writer_records_total", "counter", "uplinks committed", &[("", load(&w.records))]);
        metric("coapgate_writer_failed_commits_total", "counter", "commits that failed (nothing acknowledged)", &[("", load(&w.failed_commits))]);
        metric("coapgate_events_recorded_total", "counter", "events stored", &[("", load(&self.events.recorded))]);
        metric("coapgate_events_dropped_total", "counter", "events dropped because their queue was full", &[("", load(&self.events.dropped))]);
        metric(
            "coapgate_events_rate_limited_total",
            "counter",
            "debug and error events dropped because their entity recorded too many that second",
            &[("", load(&self.events.rate_limited))],
        );
        if let Some(dtls) = self.dtls.as_ref().and_then(|e| e.dtls()) {
            let d = &dtls.stats;
            metric("coapgate_dtls_sessions", "gauge", "DTLS sessions (established and half-open)", &[("", load(&d.sessions))]);
            metric(
                "coapgate_dtls_handshakes_total",
                "counter",
                "DTLS handshakes, by result",
                &[("{result=\"ok\"}", load(&d.handshakes_ok)), ("{result=\"failed\"}", load(&d.handshakes_failed))],
            );
            metric("coapgate_dtls_hello_verify_requests_total", "counter", "ClientHellos answered with a cookie", &[("", load(&d.hello_verify_requests))]);
            metric("coapgate_dtls_dropped_total", "counter", "DTLS datagrams dropped (stray records, bounds)", &[("", load(&d.dropped))]);
        }
        metric("coapgate_events_queue_depth", "gauge", "events waiting to be stored", &[("", self.events.queue_len() as u64)]);
        w.batch_size.render(&mut out, "coapgate_writer_batch_size", "uplinks per group commit");
        w.commit_micros.render(&mut out, "coapgate_writer_commit_microseconds", "duration of each group commit (its flush is separate when coapgate_writer_syncs_total grows)");
        w.sync_micros.render(&mut out, "coapgate_writer_sync_microseconds", "duration of each flush (fdatasync of the write-ahead log)");
        self.script_micros.render(&mut out, "coapgate_script_microseconds", "converter run time per uplink");
        out
    }
}
