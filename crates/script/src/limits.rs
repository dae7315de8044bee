//! Resource limits applied to every script invocation.

use std::time::Duration;

/// Default wall-clock budget for one compile or one decode call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default wall-clock budget of one TBEL evaluation (ThingsBoard's TBEL default).
pub const DEFAULT_TBEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Default memory budget of one TBEL evaluation (ThingsBoard's TBEL default, 8 MB).
pub const DEFAULT_TBEL_MEMORY_BYTES: usize = 8 * 1024 * 1024;
/// Default heap limit of one JavaScript runtime (one per worker thread,
/// shared by the contexts of all scripts cached on that worker).
pub const DEFAULT_MEMORY_BYTES: usize = 100 * 1024 * 1024;
/// Default cap on the engine's native stack use, which bounds recursion depth.
pub const DEFAULT_MAX_STACK_BYTES: usize = 512 * 1024;
/// Default cap on the size of a script body, in characters.
pub const DEFAULT_MAX_SCRIPT_CHARS: usize = 50_000;
/// Default cap on the size of one payload, in bytes.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Default cap on the size of a result's JSON text, in characters.
pub const DEFAULT_MAX_RESULT_CHARS: usize = 1024 * 1024;
/// Default number of compiled scripts each engine keeps.
pub const DEFAULT_CACHE_ENTRIES: usize = 256;
/// Default number of consecutive counted errors after which a script is
/// blocked (ThingsBoard's `max_errors`).
pub const DEFAULT_MAX_ERRORS: u32 = 3;
/// Default time a script stays blocked (ThingsBoard's
/// `max_black_list_duration_sec`).
pub const DEFAULT_BLOCK_DURATION: Duration = Duration::from_secs(60);

/// Limits that keep a misbehaving script from hurting the server.
///
/// User scripts are untrusted code that runs on the ingestion path, so every
/// resource they can consume is capped: time and memory inside the engine,
/// input and output sizes in Rust before and after the engine runs. Construct
/// with `Limits { timeout: ..., ..Default::default() }` so new fields do not
/// break callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget for one compile and for one decode call
    /// (each gets the full budget).
    pub timeout: Duration,
    /// Heap limit of the whole runtime, including compiled scripts kept in
    /// the cache. A script that exceeds it fails with
    /// [`ScriptError::MemoryLimit`](crate::ScriptError::MemoryLimit) and the
    /// engine is rebuilt.
    pub memory_bytes: usize,
    /// Native stack the interpreter may use; deep recursion fails with a
    /// `RangeError` instead of crashing the process.
    pub max_stack_bytes: usize,
    /// Largest accepted script body, in characters.
    pub max_script_chars: usize,
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// Largest accepted result, measured as characters of its JSON text.
    pub max_result_chars: usize,
    /// How many compiled scripts one engine keeps (least recently used are
    /// evicted first). Not a safety limit as such, but it bounds memory.
    pub cache_entries: usize,
    /// After this many consecutive timeouts, compile errors, memory-limit
    /// errors or oversized results of one script (by
    /// [`DecoderScript::id`](crate::DecoderScript::id)), an
    /// [`EnginePool`](crate::EnginePool) blocks the script for
    /// [`Limits::block_duration`]: its jobs then fail at once with
    /// [`ScriptError::Blocked`](crate::ScriptError::Blocked) without running.
    /// A success resets the count; `0` disables blocking. Errors thrown by
    /// the script itself do not count (see
    /// [`ScriptError::counts_towards_block`](crate::ScriptError::counts_towards_block)).
    /// Only the pool blocks; [`Engine`](crate::Engine) and
    /// [`decode_once`](crate::decode_once) always run the script.
    pub max_errors: u32,
    /// How long a script stays blocked once it reached
    /// [`Limits::max_errors`]; also how long a counted error is remembered
    /// (an error older than this no longer counts, as in ThingsBoard).
    pub block_duration: Duration,
    /// Wall-clock budget of one TBEL evaluation (TBEL scripts compile without running,
    /// so only evaluation is timed).
    pub tbel_timeout: Duration,
    /// Approximate memory one TBEL evaluation may hold (strings, list and map content);
    /// beyond it the script fails with ThingsBoard's `Script memory overflow`.
    pub tbel_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_stack_bytes: DEFAULT_MAX_STACK_BYTES,
            max_script_chars: DEFAULT_MAX_SCRIPT_CHARS,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_result_chars: DEFAULT_MAX_RESULT_CHARS,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            max_errors: DEFAULT_MAX_ERRORS,
            block_duration: DEFAULT_BLOCK_DURATION,
            tbel_timeout: DEFAULT_TBEL_TIMEOUT,
            tbel_memory_bytes: DEFAULT_TBEL_MEMORY_BYTES,
        }
    }
}
