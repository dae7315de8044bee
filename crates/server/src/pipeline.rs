//! One uplink's way from the script pool to the reply: decode, validate, store, record events.
//!
//! The CoAP endpoint builds a [`DecodeJob`] here and forgets about it; the job's completion runs
//! on a script worker, hands the record to the writer, and the writer's completion (once the
//! commit is durable) answers the device through the uplink's [`Responder`]. Events are recorded at the
//! step where their facts are known (converter In/Out after the script, the integration's
//! Uplink event and statistics after the commit) and only when the debug settings ask for them.

use std::collections::BTreeMap;
use std::sync::Arc;

use coapgate_coap::message::Code;
use coapgate_script::{DecodeJob, ScriptError};
use coapgate_storage::model::{Exchange, Millis, UplinkRejection};
use coapgate_storage::now_millis;
use serde_json::Value;

use crate::coap_endpoint::{Reply, Responder};
use crate::events::{DataType, EventSink};
use crate::registry::Route;
use crate::uplink::record_from_output;
use crate::histogram::Histogram;
use crate::writer::{WriteJob, WriteResult, WriterHandle};

/// What the pipeline needs beyond the request: where to write and where to record.
#[derive(Clone)]
pub struct Pipeline {
    pub writer: WriterHandle,
    pub events: Arc<EventSink>,
    /// Converter run time per uplink (compile included on a cache miss), in microseconds.
    pub script_micros: Arc<Histogram>,
}

/// Buckets for [`Pipeline::script_micros`].
pub const SCRIPT_MICROS_BUCKETS: &[u64] = &[10, 25, 50, 100, 250, 500, 1000, 5000, 25_000, 100_000, 500_000];

/// The context an uplink carries from step to step.
struct Uplink {
    route: Arc<Route>,
    received_ts: Millis,
    data_type: DataType,
    /// Shared with the script job, for the debug events.
    payload: Arc<[u8]>,
    metadata: Arc<BTreeMap<String, String>>,
    pipeline: Pipeline,
    reply: Responder,
    /// Stored with the uplink's data so a retransmission after a crash is answered, not stored.
    exchange: Option<Exchange>,
    /// The converter's output once there is one.
    output: Option<Value>,
}

impl Pipeline {
    /// The script job for one request; its completion drives the rest of the pipeline.
    pub fn decode_job(
        &self,
        route: Arc<Route>,
        content_format: Option<u32>,
        payload: Vec<u8>,
        metadata: BTreeMap<String, String>,
        reply: Responder,
        exchange: Option<Exchange>,
    ) -> DecodeJob {
        let payload: Arc<[u8]> = payload.into();
        let metadata = Arc::new(metadata);
        let uplink = Uplink {
            exchange,
            output: None,
            received_ts: now_millis(),
            data_type: DataType::of_content_format(content_format),
            payload: payload.clone(),
            metadata: metadata.clone(),
            pipeline: self.clone(),
            reply,
            route: route.clone(),
        };
        DecodeJob {
            script: route.script.clone(),
            payload,
            metadata,
            source: None,
            on_done: Box::new(move |result, elapsed| {
                uplink.pipeline.script_micros.record(elapsed.as_micros() as u64);
                uplink.decoded(result)
            }),
        }
    }
}

impl Uplink {
    fn decoded(mut self, result: Result<Value, ScriptError>) {
        let now = now_millis();
        let route = &self.route;
        let failed = result.is_err();
        if route.converter_debug.records(failed, now) {
            let output = result.as_ref().ok().map(|v| v.to_string());
            let error = result.as_ref().err().map(|e| e.to_string());
            self.pipeline.events.converter_uplink(
                route.script.id,
                self.data_type,
                &self.data_type.render(&self.payload),
                output.as_deref(),
                &serde_json::to_value(&*self.metadata).unwrap_or(Value::Null),
                error.as_deref(),
            );
        }
        let output = match result {
            Ok(output) => output,
            Err(ScriptError::PoolFull) => return self.finish(Reply::overloaded(), Some("script workers are busy".into())),
            Err(e) => {
                // The device is told what went wrong, never the converter's id (the events are).
                let reply = Reply::bad_request(&format!("converter error: {}", e.device_text()));
                return self.finish(reply, Some(e.to_string()));
            }
        };
        let integration = &route.integration;
        let allow_create = integration.allow_create_devices_or_assets;
        let record = record_from_output(&output, integration.id, allow_create, self.received_ts, route.update_only_keys.clone());
        // Kept (not serialised) for the integration's Uplink event, which shows it as Out.
        self.output = Some(output);
        let mut record = match record {
            Ok(record) => record,
            Err(e) => {
                let text = e.to_string();
                return self.finish(Reply::bad_request(&text), Some(text));
            }
        };
        if record.entities.is_empty() {
            // Nothing to store is still a success, as in ThingsBoard.
            return self.finish(Reply::created(), None);
        }
        let writer = self.pipeline.writer.clone();
        record.exchange = self.exchange.take();
        let job = WriteJob { record, done: Box::new(move |result| self.stored(result)) };
        if let Err(job) = writer.try_send(job) {
            (job.done)(WriteResult::QueueFull);
        }
    }

    fn stored(self, result: WriteResult) {
        match result {
            WriteResult::Stored(_) => self.finish(Reply::created(), None),
            // A remote's outbox at its limit is a full queue: come back later, nothing was kept.
            WriteResult::Rejected(UplinkRejection::OutboxFull) => {
                self.finish(Reply::overloaded(), Some(UplinkRejection::OutboxFull.to_string()))
            }
            WriteResult::Rejected(rejection) => {
                let text = rejection.to_string();
                self.finish(Reply::bad_request(&text), Some(text))
            }
            WriteResult::Failed(e) => {
                let text = format!("storing the uplink failed: {e}");
                self.pipeline.events.error(coapgate_storage::model::EntityKind::Integration, self.route.integration.id, "uplink", &text);
                self.finish(Reply::new(Code::INTERNAL_SERVER_ERROR, "storage failed"), Some(text))
            }
            WriteResult::QueueFull => self.finish(Reply::overloaded(), Some("storage queue is full".into())),
        }
    }

    /// Records the integration's Uplink event and statistics, then releases the reply.
    fn finish(self, reply: Reply, error: Option<String>) {
        let integration = self.route.integration.id;
        let events = &self.pipeline.events;
        events.count(integration, error.is_some());
        if self.route.integration_debug.records(error.is_some(), now_millis()) {
            let out = self.output.as_ref().map(Value::to_string);
            events.integration_uplink(
                integration,
                self.data_type,
                &self.data_type.render(&self.payload),
                out.as_deref(),
                error.as_deref(),
            );
        }
        self.reply.send(reply);
    }
}
