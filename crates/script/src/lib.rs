//! Runs user-supplied ThingsBoard-style decoder ("uplink converter") scripts.
//!
//! A decoder script is the *body* of `function Decoder(payload, metadata)`:
//! `payload` is the raw message as an array of byte values (0..=255) and
//! `metadata` a plain object of strings; whatever the body returns becomes a
//! [`serde_json::Value`]. This crate knows nothing about CoAP or storage; it
//! only turns `(script, bytes, metadata)` into JSON, safely and quickly.
//!
//! Modules:
//! - [`error`]: [`ScriptError`], the one error type callers see.
//! - [`limits`]: [`Limits`] on time, memory, stack and input/output sizes.
//! - [`script`]: [`DecoderScript`] and [`ScriptLang`], engine-independent.
//! - [`engine`]: [`Engine`], the single-threaded language dispatcher, and
//!   [`decode_once`] for one-shot use (CLI, tests), [`check_once`] to compile
//!   without running (the console's editor).
//! - [`js`]: [`JsEngine`], the QuickJS-based JavaScript engine with the
//!   ThingsBoard helper globals (`decodeToString`, `decodeToJson`, `atob`,
//!   `btoa`) and a compile cache.
//! - [`pool`]: [`EnginePool`], worker threads fed by a bounded, fair queue
//!   (per-script FIFOs served round-robin; one script never holds every
//!   worker while others wait), with ThingsBoard-style blocking of scripts
//!   that keep timing out or failing to compile.
//!
//! Each script gets its own JavaScript context (global object and built-in
//! prototypes) inside its worker's runtime, so a script that assigns sloppy
//! globals or patches `Array.prototype` only affects itself.
//!
//! Scripts have no access to files, network or processes: QuickJS exposes
//! none of these unless its std/os modules are installed, and this crate
//! never installs them.

pub mod engine;
pub mod error;
pub mod js;
pub mod limits;
pub mod pool;
pub mod script;

mod block;
mod cache;
mod sched;

pub use engine::{Engine, check_once, decode_once};
pub use error::ScriptError;
pub use js::JsEngine;
pub use limits::Limits;
pub use pool::{DecodeJob, EnginePool, OnDone, PoolConfig, SubmitError};
pub use script::{DecoderScript, ScriptLang};
