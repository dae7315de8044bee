//! The QuickJS-backed JavaScript engine.
//!
//! One [`JsEngine`] owns a QuickJS runtime and an LRU cache of compiled
//! decoder functions. Every cached script has its *own* context (global
//! object, built-in prototypes, the ThingsBoard helper globals) inside the
//! shared runtime, so a script that leaves sloppy globals behind or patches
//! `Array.prototype` only affects itself; contexts share the runtime's
//! memory limit and interrupt handler. The engine is single-threaded on
//! purpose: QuickJS runtimes are not thread-safe, so parallelism comes from
//! running one engine per worker thread (see [`crate::pool`]).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use rquickjs::context::EvalOptions;
use rquickjs::{
    Array, Coerced, Context, Ctx, Exception, FromJs, Function, Persistent, Runtime, Value,
};

use crate::cache::LruCache;
use crate::{DecoderScript, Limits, ScriptError};

mod result;

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

/// With many cached scripts, memory is measured only on every this many
/// cache misses (see `JsEngine::make_room`).
const MEMORY_CHECK_EVERY: u64 = 32;

/// State shared with the interrupt handler, which QuickJS calls periodically
/// while executing. `Rc<Cell>` suffices because the handler runs on the
/// engine's own thread.
#[derive(Default)]
struct Watchdog {
    deadline: Cell<Option<Instant>>,
    fired: Cell<bool>,
}

/// A compiled decoder and the context it lives in.
struct Compiled {
    // Field order matters: the function and the metadata's names and values must be released
    // before their context.
    func: Persistent<Function<'static>>,
    metadata: Option<Rc<MetadataTemplate>>,
    context: Context,
}

/// A single-threaded JavaScript decoder engine.
///
/// Reuse one engine for many jobs: creating it costs a runtime, and the
/// first run of each script costs a context, the prelude and a compile
/// (a few hundred microseconds), while a warm decode of a cached script
/// costs only the call itself.
pub struct JsEngine {
    // Field order matters: the cached functions and contexts must be
    // released before the runtime, or QuickJS aborts on leaked objects when
    // the runtime is freed.
    cache: LruCache<CacheKey, Compiled>,
    key_names: result::KeyNames,
    runtime: Runtime,
    watchdog: Rc<Watchdog>,
    limits: Limits,
    compiles: u64,
    misses: u64,
    needs_rebuild: Cell<bool>,
}

impl JsEngine {
    /// Builds a runtime with `limits` applied. Contexts are created per
    /// script on first use.
    pub fn new(limits: &Limits) -> Result<JsEngine, ScriptError> {
        let runtime = Runtime::new()
            .map_err(|e| ScriptError::Internal(format!("failed to create JS runtime: {e}")))?;
        // The limit covers every script's context and compiled code; `0`
        // would mean unlimited, which we never want for untrusted code.
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
        Ok(JsEngine {
            cache: LruCache::new(limits.cache_entries),
            key_names: result::KeyNames::new(),
            runtime,
            watchdog,
            limits: limits.clone(),
            compiles: 0,
            misses: 0,
            needs_rebuild: Cell::new(false),
        })
    }

    /// How many scripts this engine has compiled so far; cache hits do not
    /// count. Exposed so tests and metrics can verify that compiled scripts
    /// are reused.
    pub fn compile_count(&self) -> u64 {
        self.compiles
    }

    /// Number of compiled scripts (each with its own context) currently cached.
    pub fn cached_scripts(&self) -> usize {
        self.cache.len()
    }

    /// Whether contexts of scripts other than `script` live in this runtime.
    pub(crate) fn holds_other_scripts(&self, script: &DecoderScript) -> bool {
        self.cache.len() > usize::from(self.cache.contains_key(&script.cache_key()))
    }

    /// Bytes currently allocated by the runtime, for diagnostics. Walks the
    /// whole heap, so not for hot paths.
    pub fn memory_used(&self) -> i64 {
        self.runtime.memory_usage().malloc_size
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `script` on `payload` and `metadata`, creating its context and
    /// compiling it first unless it is cached.
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
        if !self.cache.contains_key(&key) {
            let c = self.prepare(script)?;
            self.cache.insert(key, c);
        }
        let c = self.cache.get(&key).expect("inserted above");
        let (context, func) = (c.context.clone(), c.func.clone());
        // Devices of one integration send the same metadata, so its names and values are made
        // into JS atoms and strings once, not on every call.
        let cached = c.metadata.as_ref().filter(|t| t.matches(metadata)).cloned();
        let template = match cached {
            Some(t) => t,
            None => {
                let made = context.with(|ctx| MetadataTemplate::new(&ctx, metadata).map_err(|e| self.classify(&ctx, e, false)));
                let t = Rc::new(made?);
                if let Some(c) = self.cache.get(&key) {
                    c.metadata = Some(t.clone());
                }
                t
            }
        };
        match self.call(&context, func, payload, &template)? {
            Output::Walked(value) => Ok(value),
            Output::Json(json) => parse_result(json.as_deref(), self.limits.max_result_chars),
        }
    }

    /// Creates a fresh context for `script` and compiles it there.
    fn prepare(&mut self, script: &DecoderScript) -> Result<Compiled, ScriptError> {
        // Older versions of the same script are dead weight now.
        self.cache.retain(|k| k.0 != script.id);
        self.make_room();
        let context = self.new_context()?;
        let func = self.compile(&context, &script.source)?;
        Ok(Compiled { func, metadata: None, context })
    }

    /// Evicts least recently used scripts while the runtime uses more than
    /// half its memory limit, so that cached contexts (and whatever their
    /// scripts left in their globals) cannot starve the script about to
    /// run. Measuring walks the whole heap (about 20 µs with 10 cached
    /// scripts, 2 ms with 250), so it is done only on a cache miss, which
    /// already costs a context and a compile (about 0.6 ms), and with many
    /// cached scripts only on every [`MEMORY_CHECK_EVERY`]th miss.
    fn make_room(&mut self) {
        self.misses += 1;
        if self.cache.len() > 16 && !self.misses.is_multiple_of(MEMORY_CHECK_EVERY) {
            return;
        }
        let budget = i64::try_from(self.limits.memory_bytes / 2).unwrap_or(i64::MAX);
        while self.cache.len() > 0 && self.memory_used() > budget {
            self.cache.pop_lru();
            self.runtime.run_gc();
        }
    }

    /// A context with all ES intrinsics and the helper globals.
    ///
    /// Failures are engine failures ([`ScriptError::Internal`]) unless the
    /// runtime ran out of memory, which is reported as
    /// [`ScriptError::MemoryLimit`] so that the engine is rebuilt.
    fn new_context(&self) -> Result<Context, ScriptError> {
        let oom = || ScriptError::MemoryLimit {
            limit_bytes: self.limits.memory_bytes,
            message: None,
        };
        // `Context::full` gives all ES intrinsics (JSON, typed arrays, Date,
        // RegExp, Proxy, ...) but no std/os modules: scripts get no file,
        // network or process access.
        let context = Context::full(&self.runtime).map_err(|e| match e {
            rquickjs::Error::Allocation => oom(),
            e => ScriptError::Internal(format!("failed to create JS context: {e}")),
        })?;
        context.with(|ctx| -> Result<(), ScriptError> {
            let fail = |what: &str, e: rquickjs::Error| match self.classify(&ctx, e, false) {
                err @ ScriptError::MemoryLimit { .. } => err,
                err => {
                    tracing::error!(error = %err, "JS prelude failed");
                    ScriptError::Internal(format!("failed to {what}: {err}"))
                }
            };
            let install: Function = ctx
                .eval_with_options(PRELUDE_SOURCE, eval_options(PRELUDE_FILE))
                .map_err(|e| fail("evaluate prelude", e))?;
            let utf8 = Function::new(ctx.clone(), native_utf8)
                .map_err(|e| fail("create decodeToString", e))?;
            install
                .call::<_, ()>((utf8,))
                .map_err(|e| fail("install prelude", e))
        })?;
        Ok(context)
    }

    /// Compiles a script body into a function without running it.
    ///
    /// Evaluating the wrapper only creates the function object, but a body
    /// crafted to close the wrapper early could run code at this point, so
    /// compilation runs under the same deadline as a decode.
    fn compile(
        &mut self,
        context: &Context,
        body: &str,
    ) -> Result<Persistent<Function<'static>>, ScriptError> {
        self.compiles += 1;
        let source = format!("{WRAPPER_PREFIX}{body}{WRAPPER_SUFFIX}");
        self.arm();
        let result = context.with(|ctx| {
            match ctx.eval_with_options::<Value, _>(source, eval_options(SCRIPT_FILE)) {
                Ok(v) => match v.into_function() {
                    Some(f) => Ok(Persistent::save(&ctx, f)),
                    None => Err(ScriptError::Compile {
                        message: "script body does not form a single function".into(),
                        line: None,
                        column: None,
                    }),
                },
                Err(e) => Err(self.classify(&ctx, e, true)),
            }
        });
        self.disarm();
        result.map_err(|e| in_user_text(e, body))
    }

    /// Compiles a script body in a context of its own, as [`JsEngine::decode`] would on a
    /// cache miss, without running it or keeping it: "is this converter's script valid?".
    pub fn check(&mut self, body: &str) -> Result<(), ScriptError> {
        let context = self.new_context()?;
        let func = self.compile(&context, body)?;
        // Dropped in `Compiled`'s field order: the function before its context.
        drop(Compiled { func, metadata: None, context });
        Ok(())
    }

    /// Calls a compiled decoder and returns its result, read from the JS heap when it is plain
    /// data (see [`result`]), else as the JSON text `JSON.stringify` makes of it (`None` when
    /// the result is `undefined` or not representable in JSON).
    fn call(
        &mut self,
        context: &Context,
        func: Persistent<Function<'static>>,
        payload: &[u8],
        metadata: &MetadataTemplate,
    ) -> Result<Output, ScriptError> {
        let max_chars = self.limits.max_result_chars;
        self.arm();
        let result = context.with(|ctx| {
            let run = || -> rquickjs::Result<Output> {
                let func = func.restore(&ctx)?;
                let bytes = byte_array(&ctx, payload)?;
                let meta = metadata.instantiate(&ctx)?;
                let value: Value = func.call((bytes, meta))?;
                let output = match result::walk(&value, max_chars, &mut self.key_names)? {
                    result::Walked::Value(v) => Output::Walked(v),
                    result::Walked::Fallback => Output::Json(match ctx.json_stringify(value)? {
                        Some(s) => Some(s.to_string()?),
                        None => None,
                    }),
                };
                self.run_jobs(&ctx)?;
                Ok(output)
            };
            run().map_err(|e| self.classify(&ctx, e, false))
        });
        self.disarm();
        if matches!(result, Err(ScriptError::Timeout { .. })) && self.runtime.is_job_pending() {
            // The script queued promise jobs that would otherwise run (and
            // eat the time budget of) the next script's call.
            self.needs_rebuild.set(true);
        }
        result
    }

    /// Whether the runtime holds state that a later script could trip over
    /// (e.g. promise jobs left behind by a script that timed out); the
    /// owner should then drop this engine and build a new one.
    pub fn needs_rebuild(&self) -> bool {
        self.needs_rebuild.get()
    }

    /// Runs the promise jobs the script queued (`.then(..)`, `async`
    /// continuations), which would otherwise pile up in the runtime forever
    /// since nothing else runs them. Called after the result is fixed, under
    /// the same deadline, like microtasks after a synchronous return.
    ///
    /// A callback that throws only rejects its promise; a job itself fails
    /// only on an interrupt (timeout) or when memory runs out, and that
    /// failure is the script's result.
    fn run_jobs(&self, ctx: &Ctx<'_>) -> rquickjs::Result<()> {
        let ours = ctx.as_raw().as_ptr();
        loop {
            let mut job_ctx: *mut rquickjs::qjs::JSContext = std::ptr::null_mut();
            // SAFETY: `ours` is a live context of this runtime (we are inside
            // `Context::with`, which holds the runtime lock), and
            // `JS_ExecutePendingJob` only writes a context pointer to `job_ctx`.
            let res = unsafe {
                rquickjs::qjs::JS_ExecutePendingJob(
                    rquickjs::qjs::JS_GetRuntime(ours),
                    &mut job_ctx,
                )
            };
            match res {
                0 => return Ok(()),
                r if r > 0 => {}
                _ if job_ctx == ours || job_ctx.is_null() => {
                    // The exception is pending on our context; `classify`
                    // takes it from there.
                    return Err(rquickjs::Error::Exception);
                }
                _ => {
                    // A job of another script's context (cannot happen while
                    // every call drains its own jobs): clear its exception
                    // and have the runtime rebuilt.
                    // SAFETY: `job_ctx` is a live context of this runtime,
                    // returned by QuickJS; the value is freed exactly once.
                    unsafe {
                        let v = rquickjs::qjs::JS_GetException(job_ctx);
                        rquickjs::qjs::JS_FreeValue(job_ctx, v);
                    }
                    self.needs_rebuild.set(true);
                    return Err(rquickjs::Error::Unknown);
                }
            }
        }
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
                    message: None,
                };
            }
            (Some(value), _) => exception_info(value),
            (None, rquickjs::Error::Allocation) => {
                return ScriptError::MemoryLimit {
                    limit_bytes: self.limits.memory_bytes,
                    message: None,
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
                message: None,
            };
        }
        let line = info.stack.as_deref().and_then(user_line);
        let message = match &info.name {
            Some(name) if !name.is_empty() => format!("{name}: {}", info.message),
            _ => info.message,
        };
        if compiling && info.name.as_deref() == Some("SyntaxError") {
            let column = info.stack.as_deref().and_then(user_column);
            ScriptError::Compile { message, line, column }
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
        // Explicit for clarity: compiled functions and held atoms go before the runtime.
        self.cache.clear();
        self.key_names = result::KeyNames::new();
    }
}

/// A decoder's result as [`JsEngine::call`] returns it.
enum Output {
    /// Plain data, read from the JS heap (see [`result`]).
    Walked(serde_json::Value),
    /// `JSON.stringify`'s text of anything else, still to be parsed and checked for size.
    Json(Option<String>),
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

/// The payload as a plain JS array of numbers 0..=255, built in one step: setting element by
/// element cost a third of a seed decoder call.
fn byte_array<'js>(ctx: &Ctx<'js>, payload: &[u8]) -> rquickjs::Result<Value<'js>> {
    let count = i32::try_from(payload.len()).map_err(|_| rquickjs::Error::Allocation)?;
    let values: Vec<rquickjs::qjs::JSValue> =
        payload.iter().map(|b| rquickjs::qjs::JS_MKVAL(rquickjs::qjs::JS_TAG_INT, i32::from(*b))).collect();
    // SAFETY: `ctx` is a live context (we hold it); small integers are immediate values that
    // own no memory, so handing them over (JS_NewArrayFrom takes ownership) needs no dup. The
    // returned value is owned by us and moved into a `Value`, which frees it once.
    unsafe {
        let array = rquickjs::qjs::JS_NewArrayFrom(ctx.as_raw().as_ptr(), count, values.as_ptr());
        if rquickjs::qjs::JS_VALUE_GET_NORM_TAG(array) == rquickjs::qjs::JS_TAG_EXCEPTION {
            return Err(rquickjs::Error::Exception);
        }
        Ok(Value::from_raw(ctx.clone(), array))
    }
}

/// The metadata object's names and values as JS atoms and strings (runtime-wide, immutable), so
/// that each call only makes a fresh object of them: a script may change its `metadata`, and the
/// next call must not see that. Building the object from Rust strings cost about 1,500
/// instructions per entry (atom look-up, string conversion, and `JS_SetProperty`'s search of the
/// prototype chain for a setter); defining cached values costs a fraction of that.
struct MetadataTemplate {
    runtime: *mut rquickjs::qjs::JSRuntime,
    entries: Vec<(String, String)>,
    atoms: Vec<rquickjs::qjs::JSAtom>,
    values: Vec<rquickjs::qjs::JSValue>,
}

impl MetadataTemplate {
    fn new(ctx: &Ctx<'_>, metadata: &BTreeMap<String, String>) -> rquickjs::Result<MetadataTemplate> {
        use rquickjs::qjs;
        let raw = ctx.as_raw().as_ptr();
        let mut template = MetadataTemplate {
            // SAFETY: `raw` is a live context; its runtime outlives every context of it.
            runtime: unsafe { qjs::JS_GetRuntime(raw) },
            entries: Vec::with_capacity(metadata.len()),
            atoms: Vec::with_capacity(metadata.len()),
            values: Vec::with_capacity(metadata.len()),
        };
        for (k, v) in metadata {
            // SAFETY: `raw` is live; the pointers and lengths are those of Rust strings. Each
            // atom and value made is owned by `template`, whose drop frees it (also on the
            // early returns).
            unsafe {
                let atom = qjs::JS_NewAtomLen(raw, k.as_ptr().cast(), k.len() as _);
                if atom == qjs::JS_ATOM_NULL {
                    return Err(rquickjs::Error::Exception);
                }
                template.atoms.push(atom);
                let value = qjs::JS_NewStringLen(raw, v.as_ptr().cast(), v.len() as _);
                if qjs::JS_VALUE_GET_NORM_TAG(value) == qjs::JS_TAG_EXCEPTION {
                    return Err(rquickjs::Error::Exception);
                }
                template.values.push(value);
            }
            template.entries.push((k.clone(), v.clone()));
        }
        Ok(template)
    }

    fn matches(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.entries.len() == metadata.len()
            && self.entries.iter().zip(metadata).all(|((k, v), (mk, mv))| k == mk && v == mv)
    }

    /// A fresh plain object with the entries, in the map's order.
    fn instantiate<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<Value<'js>> {
        use rquickjs::qjs;
        let raw = ctx.as_raw().as_ptr();
        // SAFETY: `raw` is live and belongs to the runtime the atoms and strings were made in
        // (a template is kept per cached script, in that script's context). The new object is
        // moved into a `Value` at once, which frees it on every path; JS_DefinePropertyValue
        // takes ownership of the value it is given, hence the dup.
        unsafe {
            let object = qjs::JS_NewObject(raw);
            if qjs::JS_VALUE_GET_NORM_TAG(object) == qjs::JS_TAG_EXCEPTION {
                return Err(rquickjs::Error::Exception);
            }
            let object = Value::from_raw(ctx.clone(), object);
            for (atom, value) in self.atoms.iter().zip(&self.values) {
                let flags = qjs::JS_PROP_C_W_E as i32;
                if qjs::JS_DefinePropertyValue(raw, object.as_raw(), *atom, qjs::JS_DupValue(raw, *value), flags) < 0 {
                    return Err(rquickjs::Error::Exception);
                }
            }
            Ok(object)
        }
    }
}

impl Drop for MetadataTemplate {
    fn drop(&mut self) {
        // SAFETY: each atom and value is owned by this template and freed once, here, while the
        // runtime is alive (templates live in `Compiled`, dropped before the engine's runtime).
        unsafe {
            for atom in &self.atoms {
                rquickjs::qjs::JS_FreeAtomRT(self.runtime, *atom);
            }
            for value in &self.values {
                rquickjs::qjs::JS_FreeValueRT(self.runtime, *value);
            }
        }
    }
}

/// Native half of `decodeToString`: lossy UTF-8 decoding in Rust is both
/// faster and more correct than a JavaScript implementation. Elements are
/// converted like a `Uint8Array` store (`ToInt32 & 0xFF`), so signed bytes
/// (-1 → 255) work too.
fn native_utf8<'js>(ctx: Ctx<'js>, bytes: Array<'js>) -> rquickjs::Result<String> {
    let mut buf = Vec::with_capacity(bytes.len());
    for i in 0..bytes.len() {
        let index = u32::try_from(i).map_err(|_| rquickjs::Error::Allocation)?;
        // SAFETY: `ctx` and `bytes` are live for this call. The element comes back owned: an
        // integer (the common case, payload bytes) owns nothing and needs no free; anything
        // else is moved into a `Value`, which frees it once.
        let byte = unsafe {
            let element = rquickjs::qjs::JS_GetPropertyUint32(ctx.as_raw().as_ptr(), bytes.as_value().as_raw(), index);
            match rquickjs::qjs::JS_VALUE_GET_NORM_TAG(element) {
                rquickjs::qjs::JS_TAG_INT => rquickjs::qjs::JS_VALUE_GET_INT(element),
                rquickjs::qjs::JS_TAG_EXCEPTION => return Err(rquickjs::Error::Exception),
                _ => Coerced::<i32>::from_js(&ctx, Value::from_raw(ctx.clone(), element))?.0,
            }
        };
        buf.push((byte & 0xFF) as u8);
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

/// The column of the innermost user frame in a QuickJS stack trace
/// (`decoder.js:3:12` → 12), in the wrapped source.
fn user_column(stack: &str) -> Option<u32> {
    let needle = format!("{SCRIPT_FILE}:");
    stack.lines().find_map(|frame| {
        let rest = &frame[frame.find(&needle)? + needle.len()..];
        let rest = &rest[rest.find(':')? + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// Maps a compile error's position in the wrapped source onto the user's body: line 1 shares
/// its line with [`WRAPPER_PREFIX`], so its columns are shifted by the prefix; an error the
/// engine finds only at the wrapper's closing line (an unclosed brace or string) belongs to
/// the end of the user's last line.
fn in_user_text(err: ScriptError, body: &str) -> ScriptError {
    let ScriptError::Compile { message, line: Some(line), column } = err else {
        return err;
    };
    let last = body.split('\n').count();
    let last_u32 = u32::try_from(last).unwrap_or(u32::MAX);
    let (line, column) = if line > last_u32 {
        let end = body.split('\n').next_back().map_or(0, |l| l.chars().count());
        (last_u32, u32::try_from(end + 1).ok())
    } else if line == 1 {
        let prefix = u32::try_from(WRAPPER_PREFIX.chars().count()).unwrap_or(0);
        (1, column.map(|c| c.saturating_sub(prefix).max(1)))
    } else {
        (line, column)
    };
    ScriptError::Compile { message, line: Some(line), column }
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

#[cfg(test)]
mod tests {
    use super::{in_user_text, user_column, user_line};
    use crate::ScriptError;

    #[test]
    fn compile_positions_are_the_users() {
        assert_eq!(user_column("    at decoder.js:3:12\n"), Some(12));
        let at = |line, column| ScriptError::Compile { message: "SyntaxError".into(), line: Some(line), column: Some(column) };
        let pos = |e: ScriptError| (e.line(), e.column());
        // Line 1 follows the 38-character wrapper prefix.
        assert_eq!(pos(in_user_text(at(1, 47), "var a = ;")), (Some(1), Some(9)));
        assert_eq!(pos(in_user_text(at(2, 7), "var a;\nvar b = ;")), (Some(2), Some(7)));
        // The wrapper's closing line is past the user's text: the end of the last line.
        assert_eq!(pos(in_user_text(at(3, 1), "if (a) {\n  return 1;")), (Some(2), Some(12)));
    }

    #[test]
    fn extracts_first_user_frame() {
        let stack = "    at f (<builtins>:10:3)\n    at g (decoder.js:7:9)\n    at Decoder (decoder.js:12:1)\n";
        assert_eq!(user_line(stack), Some(7));
        assert_eq!(user_line("    at <eval> (other.js:1:1)"), None);
    }
}
