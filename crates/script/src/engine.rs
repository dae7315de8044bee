//! Language dispatch: one [`Engine`] per thread, whatever the script language.

use std::collections::BTreeMap;

use std::rc::Rc;

use crate::cache::LruCache;
use crate::js::JsEngine;
use crate::{DecoderScript, Limits, ScriptError, ScriptLang};

/// Single-threaded front door for running decoder scripts of any language.
///
/// It checks the language-independent input limits, dispatches on
/// [`ScriptLang`], and creates language engines lazily (a worker that only
/// ever sees TBEL scripts never pays for a QuickJS runtime). TBEL scripts are
/// parsed once per (id, version) and kept in their own cache. Engines whose state
/// may be corrupt after an error (out of memory) are dropped here and
/// rebuilt on the next job, so callers never have to care.
pub struct Engine {
    limits: Limits,
    js: Option<JsEngine>,
    /// Parsed TBEL scripts by (id, version).
    tbel: LruCache<(uuid::Uuid, u64), Rc<coapgate_tbel::Script>>,
    tbel_compiles: u64,
    /// Compiles done by JS engines that were discarded, so
    /// [`Engine::compile_count`] stays monotonic across rebuilds.
    retired_compiles: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("limits", &self.limits)
            .field("js", &self.js)
            .field("tbel_cached", &self.tbel.len())
            .field("compiles", &self.compile_count())
            .finish()
    }
}

impl Engine {
    /// Creates an engine; language runtimes are built on first use.
    pub fn new(limits: Limits) -> Engine {
        Engine {
            tbel: LruCache::new(limits.cache_entries),
            limits,
            js: None,
            tbel_compiles: 0,
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
        self.retired_compiles
            + self.tbel_compiles
            + self.js.as_ref().map_or(0, JsEngine::compile_count)
    }

    /// Runs `script` with the raw `payload` bytes and `metadata`.
    pub fn decode(
        &mut self,
        script: &DecoderScript,
        payload: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ScriptError> {
        check_inputs(script, payload, metadata, &self.limits)?;
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
            ScriptLang::Tbel => self.decode_tbel(script, payload, metadata),
        }
    }

    /// Compiles `script` as [`Engine::decode`] would before its first run, and runs nothing
    /// of it (a JavaScript body that closes the wrapper early runs that code at compile time,
    /// under the same time limit, exactly as a converter's first decode would). Nothing is
    /// cached, so checking never evicts a converter's compiled script.
    pub fn check(&mut self, script: &DecoderScript) -> Result<(), ScriptError> {
        check_inputs(script, &[], &BTreeMap::new(), &self.limits)?;
        match script.lang {
            ScriptLang::Js => {
                if self.js.is_none() {
                    self.js = Some(JsEngine::new(&self.limits)?);
                }
                let js = self.js.as_mut().expect("JS engine was just created");
                let result = js.check(&script.source);
                if js.needs_rebuild()
                    || matches!(result, Err(ScriptError::MemoryLimit { .. } | ScriptError::Internal(_)))
                {
                    self.discard_js();
                }
                result
            }
            ScriptLang::Tbel => coapgate_tbel::Script::compile_with_limit(
                &script.source,
                &["payload", "metadata"],
                self.limits.max_script_chars,
            )
            .map(drop)
            .map_err(|e| tbel_error(e, &self.limits)),
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

    /// Runs a TBEL script, parsing it only on the first call for its (id, version).
    fn decode_tbel(
        &mut self,
        script: &DecoderScript,
        payload: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ScriptError> {
        let key = script.cache_key();
        let compiled = match self.tbel.get(&key) {
            Some(c) => Rc::clone(c),
            None => {
                self.tbel.retain(|k| k.0 != script.id);
                self.tbel_compiles += 1;
                let c = coapgate_tbel::Script::compile_with_limit(
                    &script.source,
                    &["payload", "metadata"],
                    self.limits.max_script_chars,
                )
                .map_err(|e| tbel_error(e, &self.limits))?;
                let c = Rc::new(c);
                self.tbel.insert(key, Rc::clone(&c));
                c
            }
        };
        let run_limits = coapgate_tbel::RunLimits {
            timeout: Some(self.limits.tbel_timeout),
            memory_bytes: self.limits.tbel_memory_bytes,
            stack_bytes: self.limits.max_stack_bytes,
            ..Default::default()
        };
        let json = compiled
            .decode(
                payload,
                metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &run_limits,
            )
            .map_err(|e| tbel_error(e, &self.limits))?;
        let chars = serde_json::to_string(&json).map_or(0, |s| s.chars().count());
        if chars > self.limits.max_result_chars {
            return Err(ScriptError::TooLarge {
                what: "result (JSON chars)",
                size: chars,
                limit: self.limits.max_result_chars,
            });
        }
        Ok(json)
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

/// Maps an interpreter error onto the engine-independent error classes, so the
/// pool's blocking rules apply to TBEL as to JavaScript.
fn tbel_error(e: coapgate_tbel::TbelError, limits: &Limits) -> ScriptError {
    use coapgate_tbel::ErrorKind;
    let message = match e.column {
        Some(c) => format!("{} (column {c})", e.message),
        None => e.message.clone(),
    };
    match e.kind {
        ErrorKind::Compile => ScriptError::Compile {
            message,
            line: e.line,
            column: e.column,
        },
        ErrorKind::Runtime | ErrorKind::StackOverflow | ErrorKind::NullSafeStop => ScriptError::Runtime {
            message,
            line: e.line,
            stack: None,
        },
        ErrorKind::Timeout => ScriptError::Timeout {
            limit: limits.tbel_timeout,
        },
        ErrorKind::Memory => ScriptError::MemoryLimit {
            limit_bytes: limits.tbel_memory_bytes,
            message: Some(e.message.clone()),
        },
    }
}

/// Rejects oversized inputs before any engine work is done, so that huge
/// scripts or payloads cost nothing but a length check.
fn check_inputs(
    script: &DecoderScript,
    payload: &[u8],
    metadata: &BTreeMap<String, String>,
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
    // Metadata is the script's other argument; it comes from integration settings and request
    // options, and is held to the same bound as the payload.
    let metadata_bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if metadata_bytes > limits.max_payload_bytes {
        return Err(ScriptError::TooLarge {
            what: "payload metadata (bytes)",
            size: metadata_bytes,
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

/// Compiles a script once in a freshly built engine ([`Engine::check`]) on a thread of its
/// own with the native stack a pool worker has, so the interpreter's stack limit holds
/// whatever thread the caller is on. For "is this script valid?" questions (the console's
/// editor); it costs an engine start-up per call, so callers bound how many run at once.
pub fn check_once(script: &DecoderScript, limits: &Limits) -> Result<(), ScriptError> {
    let stack = limits.max_stack_bytes + crate::pool::WORKER_STACK_HEADROOM;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("script-check".into())
            .stack_size(stack)
            .spawn_scoped(scope, || Engine::new(limits.clone()).check(script))
            .map_err(|e| ScriptError::Internal(format!("failed to start a script check: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(ScriptError::Internal("panic while checking the script".into())))
    })
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
