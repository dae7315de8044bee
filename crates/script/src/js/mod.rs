//! The QuickJS-backed JavaScript engine.
//!
//! One [`JsEngine`] owns a QuickJS runtime, a single context with the
//! ThingsBoard helper globals, and an LRU cache of compiled decoder
//! functions. It is single-threaded on purpose: QuickJS runtimes are not
//! thread-safe, so parallelism comes from running one engine per worker
//! thread (see [`crate::pool`]).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use rquickjs::context::EvalOptions;
use rquickjs::{
    Array, Coerced, Context, Ctx, Exception, FromJs, Function, Object, Persistent, Runtime, Value,
};

use crate::cache::LruCache;
use crate::{DecoderScript, Limits, ScriptError};

/// File name QuickJS reports for user code; used to find user frames in
/// stack traces.
const SCRIPT_FILE: &str = "decoder.js";
/// File name of the built-in helpers, so their frames are never mistaken for
/// user code when extracting a line number.
const PRELUDE_FILE: &str = "<builtins>";
/// The wrapper's opening text. It sits on the same line as the first line of
/// the user's body so that engine line numbers equal the user's line numbers.
const WRAPPER_PREFIX: &str = "(function Decoder(payload, metadata) {";
/// Closes the wrapper on its own line, so a trailing `// comment` in the body
/// cannot swallow it.
const WRAPPER_SUFFIX: &str = "\n})";
const PRELUDE_SOURCE: &str = include_str!("prelude.js");

type CacheKey = (uuid::Uuid, u64);

/// State shared with the interrupt handler, which QuickJS calls periodically
/// while executing. `Rc<Cell>` suffices because the handler runs on the
/// engine's own thread.
#[derive(Default)]
struct Watchdog {
    deadline: Cell<Option<Instant>>,
    fired: Cell<bool>,
}

/// A single-threaded JavaScript decoder engine.
///
/// Reuse one engine for many jobs: creating it costs a runtime, a context and
/// the prelude evaluation, while a warm decode of a cached script costs only
/// the call itself.
pub struct JsEngine {
    // Field order matters: the cached functions must be released before the
    // context and the runtime, or QuickJS aborts on leaked objects when the
    // runtime is freed.
    cache: LruCache<CacheKey, Persistent<Function<'static>>>,
    context: Context,
    runtime: Runtime,
    watchdog: Rc<Watchdog>,
    limits: Limits,
    compiles: u64,
}

impl JsEngine {
    /// Builds a runtime with `limits` applied and installs the helper globals.
    pub fn new(limits: &Limits) -> Result<JsEngine, ScriptError> {
        let internal = |what: &str, e: rquickjs::Error| {
            ScriptError::Internal(format!("failed to {what}: {e}"))
        };
        let runtime = Runtime::new().map_err(|e| internal("create JS runtime", e))?;
        // The limit covers the prelude and cached scripts too; `0` would mean
        // unlimited, which we never want for untrusted code.
        runtime.set_memory_limit(limits.memory_bytes.max(1024 * 1024));
        runtime.set_max_stack_size(limits.max_stack_bytes);
        let watchdog = Rc::new(Watchdog::default());
        let handler_state = Rc::clone(&watchdog);
        runtime.set_interrupt_handler(Some(Box::new(move || match handler_state.deadline.get() {
            Some(deadline) if Instant::now() >= deadline => {
                handler_state.fired.set(true);
                true
            }
            _ => false,
        })));
        // `Context::full` gives all ES intrinsics (JSON, typed arrays, Date,
        // RegExp, Proxy, ...) but no std/os modules: scripts get no file,
        // network or process access.
        let context = Context::full(&runtime).map_err(|e| internal("create JS context", e))?;
        context.with(|ctx| -> Result<(), ScriptError> {
            let install: Function = ctx
                .eval_with_options(PRELUDE_SOURCE, eval_options(PRELUDE_FILE))
                .map_err(|e| internal("evaluate prelude", describe(&ctx, e)))?;
            let utf8 = Function::new(ctx.clone(), native_utf8)
                .map_err(|e| internal("create decodeToString", e))?;
            install
                .call::<_, ()>((utf8,))
                .map_err(|e| internal("install prelude", describe(&ctx, e)))
        })?;
        Ok(JsEngine {
            cache: LruCache::new(limits.cache_entries),
            context,
            runtime,
            watchdog,
            limits: limits.clone(),
            compiles: 0,
        })
    }

    /// How many scripts this engine has compiled so far; cache hits do not
    /// count. Exposed so tests and metrics can verify that compiled scripts
    /// are reused.
    pub fn compile_count(&self) -> u64 {
        self.compiles
    }

    /// Number of compiled scripts currently cached.
    pub fn cached_scripts(&self) -> usize {
        self.cache.len()
    }

    /// Bytes currently allocated by the runtime, for diagnostics.
    pub fn memory_used(&self) -> i64 {
        self.runtime.memory_usage().malloc_size
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `script` on `payload` and `metadata`, compiling it first unless
    /// it is cached.
    ///
    /// Size limits on the script and the payload are checked by the caller
    /// ([`crate::Engine`]); this checks the result size. After
    /// [`ScriptError::MemoryLimit`] the engine should be discarded, because
    /// QuickJS gives no guarantee that a runtime which ran out of memory is
    /// in a consistent state.
    pub fn decode(
        &mut self,
        script: &DecoderScript,
        payload: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ScriptError> {
        let key = script.cache_key();
        let func = match self.cache.get(&key) {
            Some(f) => f.clone(),
            None => {
                let f = self.compile(&script.source)?;
                self.cache.insert(key, f.clone());
                f
            }
        };
        let json = self.call(func, payload, metadata)?;
        parse_result(json.as_deref(), self.limits.max_result_chars)
    }

    /// Compiles a script body into a function without running it.
    ///
    /// Evaluating the wrapper only creates the function object, but a body
    /// crafted to close the wrapper early could run code at this point, so
    /// compilation runs under the same deadline as a decode.
    fn compile(&mut self, body: &str) -> Result<Persistent<Function<'static>>, ScriptError> {
        self.compiles += 1;
        let source = format!("{WRAPPER_PREFIX}{body}{WRAPPER_SUFFIX}");
        self.arm();
        let result = self.context.with(|ctx| {
            match ctx.eval_with_options::<Value, _>(source, eval_options(SCRIPT_FILE)) {
                Ok(v) => match v.into_function() {
                    Some(f) => Ok(Persistent::save(&ctx, f)),
                    None => Err(ScriptError::Compile {
                        message: "script body does not form a single function".into(),
                        line: None,
                    }),
                },
                Err(e) => Err(self.classify(&ctx, e, true)),
            }
        });
        self.disarm();
        result
    }

    /// Calls a compiled decoder and returns the JSON text of its result
    /// (`None` when the result is `undefined` or not representable in JSON).
    fn call(
        &mut self,
        func: Persistent<Function<'static>>,
        payload: &[u8],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<String>, ScriptError> {
        self.arm();
        let result = self.context.with(|ctx| {
            let run = || -> rquickjs::Result<Option<String>> {
                let func = func.restore(&ctx)?;
                let bytes = Array::new(ctx.clone())?;
                for (i, b) in payload.iter().enumerate() {
                    bytes.set(i, i32::from(*b))?;
                }
                let meta = Object::new(ctx.clone())?;
                for (k, v) in metadata {
                    meta.set(k.as_str(), v.as_str())?;
                }
                let value: Value = func.call((bytes, meta))?;
                match ctx.json_stringify(value)? {
                    Some(s) => Ok(Some(s.to_string()?)),
                    None => Ok(None),
                }
            };
            run().map_err(|e| self.classify(&ctx, e, false))
        });
        self.disarm();
        result
    }

    fn arm(&self) {
        self.watchdog.fired.set(false);
        self.watchdog
            .deadline
            .set(Some(Instant::now() + self.limits.timeout));
    }

    fn disarm(&self) {
        self.watchdog.deadline.set(None);
    }

    /// Turns an rquickjs error (usually a pending JS exception) into a
    /// [`ScriptError`], distinguishing our own interrupts and out-of-memory
    /// conditions from ordinary script exceptions.
    fn classify(&self, ctx: &Ctx<'_>, err: rquickjs::Error, compiling: bool) -> ScriptError {
        let caught = match err {
            rquickjs::Error::Exception => Some(ctx.catch()),
            _ => None,
        };
        if self.watchdog.fired.get() {
            return ScriptError::Timeout {
                limit: self.limits.timeout,
            };
        }
        let info = match (caught, err) {
            // QuickJS throws a bare `null` when it runs out of memory while
            // creating the "out of memory" error itself. A script could also
            // `throw null`, but treating that as an out-of-memory condition
            // only costs an engine rebuild, whereas missing a real one could
            // leave a broken runtime in service.
            (Some(value), _) if value.is_null() => {
                return ScriptError::MemoryLimit {
                    limit_bytes: self.limits.memory_bytes,
                };
            }
            (Some(value), _) => exception_info(value),
            (None, rquickjs::Error::Allocation) => {
                return ScriptError::MemoryLimit {
                    limit_bytes: self.limits.memory_bytes,
                };
            }
            (None, other) => ExceptionInfo {
                name: None,
                message: other.to_string(),
                stack: None,
            },
        };
        if info.name.as_deref() == Some("InternalError") && info.message == "out of memory" {
            return ScriptError::MemoryLimit {
                limit_bytes: self.limits.memory_bytes,
            };
        }
        let line = info.stack.as_deref().and_then(user_line);
        let message = match &info.name {
            Some(name) if !name.is_empty() => format!("{name}: {}", info.message),
            _ => info.message,
        };
        if compiling && info.name.as_deref() == Some("SyntaxError") {
            ScriptError::Compile { message, line }
        } else {
            ScriptError::Runtime {
                message,
                line,
                stack: info.stack,
            }
        }
    }
}

impl std::fmt::Debug for JsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsEngine")
            .field("cached_scripts", &self.cache.len())
            .field("compiles", &self.compiles)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for JsEngine {
    fn drop(&mut self) {
        // Explicit for clarity: compiled functions go before the runtime.
        self.cache.clear();
    }
}

/// Evaluation options: global (non-module) code, sloppy mode like the
/// ThingsBoard JS executor, with a file name that identifies user frames.
fn eval_options(file: &str) -> EvalOptions {
    let mut opts = EvalOptions::default();
    opts.global = true;
    opts.strict = false;
    opts.filename = Some(file.to_string());
    opts
}

/// Native half of `decodeToString`: lossy UTF-8 decoding in Rust is both
/// faster and more correct than a JavaScript implementation. Elements are
/// converted like a `Uint8Array` store (`ToInt32 & 0xFF`), so signed bytes
/// (-1 → 255) work too.
fn native_utf8(bytes: Array<'_>) -> rquickjs::Result<String> {
    let mut buf = Vec::with_capacity(bytes.len());
    for b in bytes.iter::<Coerced<i32>>() {
        buf.push((b?.0 & 0xFF) as u8);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

struct ExceptionInfo {
    name: Option<String>,
    message: String,
    stack: Option<String>,
}

fn exception_info(value: Value<'_>) -> ExceptionInfo {
    if let Some(exc) = value
        .as_object()
        .and_then(|o| Exception::from_object(o.clone()))
    {
        let name = exc
            .get::<_, Option<Coerced<String>>>("name")
            .ok()
            .flatten()
            .map(|c| c.0);
        return ExceptionInfo {
            name,
            message: exc.message().unwrap_or_default(),
            stack: exc.stack().filter(|s| !s.trim().is_empty()),
        };
    }
    // `throw "text"` or `throw {..}`: report the thrown value itself.
    let message = if value.is_string() {
        value
            .as_string()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_default()
    } else {
        let ctx = value.ctx().clone();
        ctx.json_stringify(value.clone())
            .ok()
            .flatten()
            .and_then(|s| s.to_string().ok())
            .or_else(|| Coerced::<String>::from_js(&ctx, value).ok().map(|c| c.0))
            .unwrap_or_else(|| "unknown exception".into())
    };
    ExceptionInfo {
        name: Some("Uncaught".into()),
        message,
        stack: None,
    }
}

/// Finds the innermost user-code line in a QuickJS stack trace, whose frames
/// look like `    at Decoder (decoder.js:3:12)`.
fn user_line(stack: &str) -> Option<u32> {
    let needle = format!("{SCRIPT_FILE}:");
    stack.lines().find_map(|frame| {
        let rest = &frame[frame.find(&needle)? + needle.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// Checks the result size and parses the engine's JSON text, which keeps
/// integers as integers (69) and fractions as floats (25.7).
pub(crate) fn parse_result(
    json: Option<&str>,
    max_chars: usize,
) -> Result<serde_json::Value, ScriptError> {
    let Some(json) = json else {
        return Ok(serde_json::Value::Null);
    };
    // Byte length bounds the char count from above, so count chars only
    // when the cheap check fails.
    if json.len() > max_chars {
        let chars = json.chars().count();
        if chars > max_chars {
            return Err(ScriptError::TooLarge {
                what: "result (JSON chars)",
                size: chars,
                limit: max_chars,
            });
        }
    }
    serde_json::from_str(json)
        .map_err(|e| ScriptError::Internal(format!("engine produced invalid JSON: {e}")))
}

/// Keeps the rquickjs error text when there is no JS exception to inspect.
fn describe(ctx: &Ctx<'_>, err: rquickjs::Error) -> rquickjs::Error {
    if let rquickjs::Error::Exception = err {
        let info = exception_info(ctx.catch());
        tracing::error!(message = %info.message, stack = ?info.stack, "JS prelude failed");
    }
    err
}

#[cfg(test)]
mod tests {
    use super::user_line;

    #[test]
    fn extracts_first_user_frame() {
        let stack = "    at f (<builtins>:10:3)\n    at g (decoder.js:7:9)\n    at Decoder (decoder.js:12:1)\n";
        assert_eq!(user_line(stack), Some(7));
        assert_eq!(user_line("    at <eval> (other.js:1:1)"), None);
    }
}
