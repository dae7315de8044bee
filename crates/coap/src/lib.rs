//! Sans-IO building blocks for the coapgate CoAP (RFC 7252) server.
//!
//! The crate deliberately performs no I/O and reads no clock: callers hand in
//! datagrams and `std::time::Instant`s, which keeps every piece deterministic
//! and unit-testable and lets the server choose its own runtime. It knows
//! nothing about integrations, scripts or storage.
//!
//! Modules:
//! - [`message`]: strict RFC 7252 §3 message parser/encoder plus option, block and response helpers.
//! - [`params`]: RFC 7252 §4.8 transmission parameters and the time spans derived from them.
//! - [`blockwise`]: bounded server-side reassembly of RFC 7959 Block1 uploads.
//! - [`dedup`]: bounded per-peer and per-host message-deduplication cache for a server (RFC 7252 §4.5).
//! - [`host`]: what one source is (IPv4 address, IPv6 /64) for per-source bounds.
//! - [`keys`]: peers, hosts and exchanges as map keys that the keyed SipHash reads in one word.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod blockwise;
pub mod dedup;
pub mod host;
pub mod keys;
pub mod message;
pub mod params;

pub use blockwise::{Block1Assembler, Block1Config, Block1Outcome};
pub use dedup::{DedupCache, DedupConfig, Entry, Limit, Lookup};
pub use message::{
    BlockOption, CoapOption, Code, FormatError, Message, MessageType, ParseError, Token,
};
