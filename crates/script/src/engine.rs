//! Language dispatch: one [`Engine`] per thread, whatever the script language.

use std::collections::BTreeMap;

use crate::js::JsEngine;
use crate::{DecoderScript, Limits, ScriptError, ScriptLang};

/// Single-threaded front door for running decoder scripts of any language.
///
/// It checks the language-independent input limits, dispatches on
/// [`ScriptLang`], and creates language engines lazily (a worker that only
/// ever sees TBEL scripts never pays for a QuickJS runtime). A TBEL engine
/// will be another lazily created field next to `js`. Engines whose state
/// may be corrupt after an error (out of memory) are dropped here and
/// rebuilt on the next job, so callers never have to care.
#[derive(Debug)]
pub struct Engine {
    limits: Limits,
    js: Option<JsEngine>,
    /// Compiles done by JS engines that were discarded, so
    /// [`Engine::compile_count`] stays monotonic across rebuilds.
    retired_compiles: u64,
}

impl Engine {
    /// Creates an engine; language runtimes are built on first use.
    pub fn new(limits: Limits) -> Engine {
        Engine {
            limits,
            js: None,
            retired_compiles: 0,
        }
    }

    /// The limits applied to every script run by this engine.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Total number of script compilations performed, across all languages
    /// and engine rebuilds. Cache hits do not count.
    pub fn compile_count(&self) -> u64 {
        self.retired_compiles + self.js.as_ref().map_or(0, JsEngine::compile_count)
    }

    /// Runs `script` with the raw `payload` bytes and `metadata`.
    pub fn decode(
        &mut self,
        script: &DecoderScript,
        payload: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ScriptError> {
        check_inputs(script, payload, &self.limits)?;
        match script.lang {
            ScriptLang::Js => {
                match self.decode_js(script, payload, metadata) {
                    (Err(ScriptError::MemoryLimit { .. }), true) => {
                        // Other scripts' contexts shared the runtime's memory
                        // limit, so the failure may not be this script's
                        // fault (another one may keep data in its globals).
                        // Retry once in a fresh runtime where the script is
                        // alone; only that answer counts.
                        tracing::debug!(script = %script.id, "memory limit in a shared runtime; retrying alone");
                        self.decode_js(script, payload, metadata).0
                    }
                    (result, _) => result,
                }
            }
            ScriptLang::Tbel => Err(ScriptError::Unsupported(
                "TBEL scripts are not supported yet; use a JavaScript decoder".into(),
            )),
        }
    }

    /// Runs a JS script; also tells whether other scripts' contexts shared
    /// the runtime (and so its memory limit) during the run.
    fn decode_js(
        &mut self,
        script: &DecoderScript,
        payload: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> (Result<serde_json::Value, ScriptError>, bool) {
        if self.js.is_none() {
            match JsEngine::new(&self.limits) {
                Ok(js) => self.js = Some(js),
                Err(e) => return (Err(e), false),
            }
        }
        let js = self.js.as_mut().expect("JS engine was just created");
        let shared = js.holds_other_scripts(script);
        let result = js.decode(script, payload, metadata);
        if js.needs_rebuild()
            || matches!(
                result,
                Err(ScriptError::MemoryLimit { .. } | ScriptError::Internal(_))
            )
        {
            self.discard_js();
        }
        (result, shared)
    }

    /// Drops the JS runtime and its compiled scripts; the next JS job builds
    /// a fresh one. Used after errors that may leave QuickJS inconsistent.
    pub fn discard_js(&mut self) {
        if let Some(js) = self.js.take() {
            self.retired_compiles += js.compile_count();
            tracing::debug!("discarding JS runtime and its compiled scripts");
        }
    }
}

/// Rejects oversized inputs before any engine work is done, so that huge
/// scripts or payloads cost nothing but a length check.
fn check_inputs(
    script: &DecoderScript,
    payload: &[u8],
    limits: &Limits,
) -> Result<(), ScriptError> {
    // UTF-8 length bounds the char count from above; count only if needed.
    if script.source.len() > limits.max_script_chars {
        let chars = script.source.chars().count();
        if chars > limits.max_script_chars {
            return Err(ScriptError::TooLarge {
                what: "script source (chars)",
                size: chars,
                limit: limits.max_script_chars,
            });
        }
    }
    if payload.len() > limits.max_payload_bytes {
        return Err(ScriptError::TooLarge {
            what: "payload (bytes)",
            size: payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

/// Runs a script once in a freshly built engine.
///
/// Meant for the offline CLI decoder, "test converter" requests and tests:
/// it pays the full engine start-up cost (a few hundred microseconds to a
/// few milliseconds) on every call, so the ingestion path should use
/// [`EnginePool`](crate::EnginePool) instead.
pub fn decode_once(
    script: &DecoderScript,
    payload: &[u8],
    metadata: &BTreeMap<String, String>,
    limits: &Limits,
) -> Result<serde_json::Value, ScriptError> {
    Engine::new(limits.clone()).decode(script, payload, metadata)
}
