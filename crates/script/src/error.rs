//! Error type shared by every script language and by the pool.

use std::time::Duration;

/// Everything that can go wrong while compiling or running a decoder script.
///
/// The variants are deliberately coarse so the server can map them onto
/// responses and metrics without knowing which language produced them; the
/// `Display` text is a single line meant to be shown verbatim to the user who
/// wrote the script (for example in a "test converter" UI or a debug event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The script source could not be parsed. `line` refers to the user's
    /// script body (line 1 is the first line the user wrote).
    #[error("compile error: {message}{}", at_line(*.line))]
    Compile {
        /// Engine message, prefixed with the error class (e.g. `SyntaxError: ...`).
        message: String,
        /// 1-based line in the user's script body, when the engine reported one.
        line: Option<u32>,
        /// 1-based column on that line (in characters of the user's text), when known. Not
        /// part of `Display`, which keeps the text ThingsBoard users know; editors use it to
        /// place a marker.
        column: Option<u32>,
    },
    /// The script threw (or the engine raised) an exception while running.
    #[error("{message}{}", at_line(*.line))]
    Runtime {
        /// Error class and message, e.g. `ReferenceError: foo is not defined`.
        message: String,
        /// 1-based line in the user's script body of the innermost user frame.
        line: Option<u32>,
        /// The engine's stack trace, kept for debug output; not part of `Display`.
        stack: Option<String>,
    },
    /// The script ran longer than [`Limits::timeout`](crate::Limits::timeout).
    #[error("script execution timed out after {} ms", .limit.as_millis())]
    Timeout {
        /// The limit that was exceeded.
        limit: Duration,
    },
    /// The script tried to use more memory than
    /// [`Limits::memory_bytes`](crate::Limits::memory_bytes) allows.
    #[error("{}", memory_text(*.limit_bytes, .message.as_deref()))]
    MemoryLimit {
        /// The limit that was exceeded.
        limit_bytes: usize,
        /// The engine's own wording when it has one (TBEL's `Script memory overflow …!`, which
        /// ThingsBoard users search for).
        message: Option<String>,
    },
    /// An input or output exceeded a size limit that is checked outside the
    /// engine (script source, payload or result).
    #[error("{what} too large: {size} (limit {limit})")]
    TooLarge {
        /// What was too large, e.g. `"script source (chars)"`.
        what: &'static str,
        /// Its actual size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The script's language (or a feature it needs) is not available.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The script failed [`Limits::max_errors`](crate::Limits::max_errors)
    /// times in a row (timeouts, compile errors, memory-limit errors,
    /// oversized results) and is blocked for
    /// [`Limits::block_duration`](crate::Limits::block_duration); the job was
    /// not run. The text is ThingsBoard's, word for word.
    #[error(
        "Script invocation is blocked due to maximum error count {max_errors}, scriptId {script_id}!"
    )]
    Blocked {
        /// [`DecoderScript::id`](crate::DecoderScript::id) of the blocked script.
        script_id: uuid::Uuid,
        /// The configured [`Limits::max_errors`](crate::Limits::max_errors).
        max_errors: u32,
    },
    /// The pool's job queue is full; the caller should shed load (CoAP 5.03).
    #[error("script engine pool is full")]
    PoolFull,
    /// The engine itself failed (e.g. it could not be created). Not caused by
    /// the script; worth logging at error level.
    #[error("script engine failure: {0}")]
    Internal(String),
}

fn at_line(line: Option<u32>) -> String {
    match line {
        Some(l) => format!(" at line {l}"),
        None => String::new(),
    }
}

impl ScriptError {
    /// The 1-based line in the user's script body this error points at, if known.
    pub fn line(&self) -> Option<u32> {
        match self {
            ScriptError::Compile { line, .. } | ScriptError::Runtime { line, .. } => *line,
            _ => None,
        }
    }

    /// The 1-based column on [`ScriptError::line`] this error points at, if known (compile
    /// errors only).
    pub fn column(&self) -> Option<u32> {
        match self {
            ScriptError::Compile { column, .. } => *column,
            _ => None,
        }
    }

    /// Whether the error is the script author's fault (as opposed to load
    /// shedding or an engine failure). The server can use this to decide
    /// between "converter error" events and operational alarms.
    pub fn is_script_fault(&self) -> bool {
        !matches!(
            self,
            ScriptError::PoolFull | ScriptError::Internal(_) | ScriptError::Unsupported(_)
        )
    }

    /// The error as told to whoever sent the payload (a device): the same text, except that
    /// nothing internal is named — a block says it is one without the converter's id, which
    /// only the events (for the tenant) carry.
    pub fn device_text(&self) -> String {
        match self {
            ScriptError::Blocked { max_errors, .. } => {
                format!("Script invocation is blocked due to maximum error count {max_errors}!")
            }
            other => other.to_string(),
        }
    }

    /// Whether this error counts towards blocking the script
    /// ([`Limits::max_errors`](crate::Limits::max_errors)).
    ///
    /// Like ThingsBoard (`AbstractScriptInvokeService`, which counts every
    /// failure except `RUNTIME` ones): timeouts, compile errors and size
    /// limits of the script body or its result count, and so do memory-limit
    /// errors, which ThingsBoard's Node executor reports as crashes. Errors
    /// the script throws itself (`throw new Error(..)`, `TypeError`s, stack
    /// overflow) do not: they are ordinary answers to bad payloads and cost
    /// no more than a success. Unlike ThingsBoard, an oversized *payload*
    /// does not count either, since the device sent it, not the script.
    /// Load shedding, engine failures and the block itself never count.
    pub fn counts_towards_block(&self) -> bool {
        match self {
            ScriptError::Compile { .. }
            | ScriptError::Timeout { .. }
            | ScriptError::MemoryLimit { .. } => true,
            ScriptError::TooLarge { what, .. } => !what.starts_with("payload"),
            ScriptError::Runtime { .. }
            | ScriptError::Unsupported(_)
            | ScriptError::Blocked { .. }
            | ScriptError::PoolFull
            | ScriptError::Internal(_) => false,
        }
    }
}

fn memory_text(limit_bytes: usize, message: Option<&str>) -> String {
    match message {
        Some(m) => m.to_string(),
        None => format!("script memory limit exceeded ({limit_bytes} bytes)"),
    }
}
