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
use coapgate_storage::model::{ConverterVersion, Exchange, Millis, UplinkOutcome, UplinkRejection};
use coapgate_storage::now_millis;
use serde_json::Value;

use crate::coap_endpoint::{Reply, Responder};
use crate::config_sync::ConfigSync;
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
    /// For a store other nodes write too: where an uplink whose converter was saved elsewhere
    /// while it was converted goes to be converted again. `None` where that cannot happen.
    pub resync: Option<Arc<ConfigSync>>,
}

/// How often one uplink is converted again because its converter kept changing under it
/// before it is answered 5.03 (the device sends it again later).
const MAX_CONVERSIONS: u8 = 4;

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
    /// Conversions so far (more than one when the converter changed under it).
    conversions: u8,
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
        Uplink {
            exchange,
            output: None,
            conversions: 0,
            received_ts: now_millis(),
            data_type: DataType::of_content_format(content_format),
            payload: payload.into(),
            metadata: Arc::new(metadata),
            pipeline: self.clone(),
            reply,
            route,
        }
        .job()
    }
}

impl Uplink {
    /// The script job that converts this uplink with its route's converter.
    fn job(mut self) -> DecodeJob {
        self.conversions += 1;
        self.output = None;
        DecodeJob {
            script: self.route.script.clone(),
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            source: None,
            on_done: Box::new(move |result, elapsed| {
                self.pipeline.script_micros.record(elapsed.as_micros() as u64);
                self.decoded(result)
            }),
        }
    }

    /// Converts the uplink again with the converter as the registry has it after a reload:
    /// another node saved it after this uplink was converted.
    fn convert_again(mut self, sync: &ConfigSync) {
        tracing::debug!("converting an uplink of {} again: its converter was saved meanwhile", self.route.integration.name);
        match sync.registry().lookup(&self.route.integration.routing_key) {
            Some(route) => self.route = route,
            None => return self.finish(Reply::new(Code::NOT_FOUND, "Not Found"), Some("the integration was removed".into())),
        }
        if let Err(refused) = sync.pool().try_submit(self.job()) {
            let error = refused.to_script_error();
            (refused.into_job().on_done)(Err(error), std::time::Duration::ZERO);
        }
    }

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
        record.exchange = self.exchange.clone();
        record.converter = Some(ConverterVersion { id: route.script.id, version: route.script.version as i64 });
        let job = WriteJob { record, done: Box::new(move |result| self.stored(result)) };
        if let Err(job) = writer.try_send(job) {
            (job.done)(WriteResult::QueueFull);
        }
    }

    fn stored(self, result: WriteResult) {
        match result {
            // Another node stored its first copy: the device gets the response stored there.
            WriteResult::Stored(UplinkOutcome { replay: Some(stored), .. }) => self.reply.replay(stored),
            WriteResult::Stored(_) => self.finish(Reply::created(), None),
            WriteResult::Rejected(UplinkRejection::StaleConverter) => match self.pipeline.resync.clone() {
                Some(sync) if self.conversions < MAX_CONVERSIONS => {
                    sync.clone().refresh_then(Box::new(move || self.convert_again(&sync)));
                }
                _ => self.finish(Reply::overloaded(), Some(UplinkRejection::StaleConverter.to_string())),
            },
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
