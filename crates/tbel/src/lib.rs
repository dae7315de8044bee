//! TBEL, ThingsBoard's expression language (a sandboxed fork of MVEL 2), in Rust.
//!
//! A pure language implementation: source → tokens ([`lexer`]) → syntax tree with variables
//! resolved to frame slots ([`parser`], parsed once) → a tree-walking evaluator ([`interp`])
//! built to run the same [`Script`] many times. Values keep Java's types ([`Value`]): 32-bit
//! `int` arithmetic wraps, `/` on integers truncates, `"123" == 123` is true as in MVEL.
//! The helper library ThingsBoard registers for TBEL (TbUtils, NumberUtils, TbJson, TbDate)
//! lives in the `lib_*` modules.
//!
//! The sandbox: a deadline checked every few hundred steps, approximate memory accounting
//! with ThingsBoard's `Script memory overflow` error, a recursion limit, a size limit on the
//! source, and only an allow-list of classes (`Math`, `Integer`, `Date`, `JSON`, ...).
//!
//! This crate knows nothing about CoAP, storage or converters: inputs and outputs are
//! [`Value`]s, with conversions to and from `serde_json`.

mod ast;
mod convert;
mod error;
mod interp;
mod jregex;
mod lexer;
mod lib_date;
mod lib_geo;
mod lib_helpers;
mod lib_json;
mod lib_methods;
mod lib_static;
mod ops;
mod parser;
mod stack;
mod value;

use std::time::{Duration, Instant};

pub use error::{ErrorKind, Pos, TbelError};
pub use value::{ListRef, MapRef, Value, java_double, java_float};

/// ThingsBoard's limit on a TBEL script's size, in characters.
pub const DEFAULT_MAX_SCRIPT_CHARS: usize = 50_000;

/// Limits for one evaluation.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Wall-clock budget; `None` runs without a deadline.
    pub timeout: Option<Duration>,
    /// Approximate bytes of strings and collection content the script may hold (0 = no limit).
    pub memory_bytes: usize,
    /// Native stack the evaluator may use for script recursion.
    pub stack_bytes: usize,
    /// Maximum depth of script function calls.
    pub max_call_depth: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            timeout: Some(Duration::from_millis(500)),
            memory_bytes: 8 * 1024 * 1024,
            stack_bytes: 512 * 1024,
            max_call_depth: 200,
        }
    }
}

/// A parsed script, ready to be evaluated any number of times.
#[derive(Debug)]
pub struct Script {
    prog: ast::Program,
}

impl Script {
    /// Parses `source`; `inputs` names the variables the caller passes to [`Script::run`]
    /// (for a converter: `["payload", "metadata"]`).
    pub fn compile(source: &str, inputs: &[&str]) -> Result<Script, TbelError> {
        Self::compile_with_limit(source, inputs, DEFAULT_MAX_SCRIPT_CHARS)
    }

    /// Like [`Script::compile`] with an explicit size limit in characters (0 = none).
    pub fn compile_with_limit(
        source: &str,
        inputs: &[&str],
        max_chars: usize,
    ) -> Result<Script, TbelError> {
        if max_chars > 0 && source.len() > max_chars {
            let n = source.chars().count();
            if n > max_chars {
                return Err(TbelError::new(
                    ErrorKind::Compile,
                    format!(
                        "Script body exceeds maximum allowed size of {max_chars} symbols ({n})"
                    ),
                ));
            }
        }
        let toks = lexer::tokenize(source)?;
        let prog = parser::Parser::parse(toks, inputs)?;
        Ok(Script { prog })
    }

    /// Evaluates the script with `inputs` (in the order given to [`Script::compile`]) and
    /// returns the value of its `return` or of its last expression.
    pub fn run(&self, inputs: Vec<Value>, limits: &RunLimits) -> Result<Value, TbelError> {
        let deadline = limits.timeout.map(|t| Instant::now() + t);
        let mut ctx = interp::Ctx::new(
            &self.prog,
            deadline,
            limits.memory_bytes,
            limits.stack_bytes,
            limits.max_call_depth,
        );
        let mut inputs = inputs.into_iter();
        for slot in &self.prog.inputs {
            ctx.set_global(*slot, inputs.next().unwrap_or(Value::Null));
        }
        ctx.run()
    }

    /// Runs a converter script as ThingsBoard does: `payload` a list of signed bytes,
    /// `metadata` a map of strings; the result as JSON.
    pub fn decode<'a>(
        &self,
        payload: &[u8],
        metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
        limits: &RunLimits,
    ) -> Result<serde_json::Value, TbelError> {
        let v = self.run(
            vec![Value::signed_bytes(payload), Value::string_map(metadata)],
            limits,
        )?;
        Ok(v.to_json())
    }
}

/// Parses and runs `source` once with no inputs (tests, tools).
pub fn eval(source: &str) -> Result<Value, TbelError> {
    Script::compile(source, &[])?.run(vec![], &RunLimits::default())
}
