//! The description of a decoder script, independent of any engine.

use std::sync::Arc;

/// Language a decoder script is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptLang {
    /// ThingsBoard-style JavaScript (ES2020), run by QuickJS.
    Js,
    /// ThingsBoard Expression Language, run by the `coapgate-tbel` interpreter.
    Tbel,
}

/// A decoder script as stored by the server.
///
/// `source` is the *body* of `function Decoder(payload, metadata) { ... }`,
/// exactly as a ThingsBoard user pastes it. `(id, version)` identifies the
/// compiled form in each engine's cache, so the server must bump `version`
/// whenever `source` (or `lang`) changes; a stale version would keep running
/// the old code on workers that already compiled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderScript {
    /// Stable identity of the script (e.g. the converter's id).
    pub id: uuid::Uuid,
    /// Monotonic revision; part of the cache key.
    pub version: u64,
    /// Language of `source`.
    pub lang: ScriptLang,
    /// Script body. `Arc<str>` so jobs can share it without copying.
    pub source: Arc<str>,
}

impl DecoderScript {
    /// Convenience constructor for a JavaScript decoder.
    pub fn js(id: uuid::Uuid, version: u64, source: impl Into<Arc<str>>) -> Self {
        DecoderScript {
            id,
            version,
            lang: ScriptLang::Js,
            source: source.into(),
        }
    }

    /// The key under which engines cache the compiled form of this script.
    pub fn cache_key(&self) -> (uuid::Uuid, u64) {
        (self.id, self.version)
    }
}
