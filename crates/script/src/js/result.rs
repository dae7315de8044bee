//! The decoder's result as a `serde_json::Value`, read straight from the JS heap.
//!
//! `JSON.stringify` and then `serde_json::from_str` cost about 40% of a seed decoder call
//! (QuickJS lists the properties, quotes every string into a buffer, serde parses it all back).
//! For what decoders return — plain objects and arrays of strings, numbers, booleans and null —
//! this walk gives the value that route gives: the same keys in the same order (own enumerable
//! string keys, integer keys first, as `JSON.stringify` lists them), `undefined`, functions and
//! symbols left out of objects and `null` in arrays, non-finite numbers as `null`, integral
//! numbers as integers. Anything it does not reproduce exactly makes it answer
//! [`Walked::Fallback`] and the caller takes the `JSON.stringify` route: a `toJSON` anywhere on
//! an object's chain, any other class (Date, Proxy, typed arrays, boxed primitives, errors),
//! BigInt, strings or keys with lone surrogates, nesting deeper than [`MAX_DEPTH`] (which is
//! also how cycles end up in `JSON.stringify`'s own error), and results whose JSON text may pass
//! the size limit (an upper bound is kept on the way, so the walk never builds more than the
//! limit allows and the exact count stays `JSON.stringify`'s).
//!
//! Getters run as `JSON.stringify` runs them, in the same order, under the same deadline; after
//! a fallback the stringify route runs them again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rquickjs::atom::PredefinedAtom;
use rquickjs::{qjs, Ctx, Value};

/// Deeper results go through `JSON.stringify`, which reports cycles.
const MAX_DEPTH: usize = 64;

/// Upper bound of a JS number's JSON text (`-1.2345678901234567e-308` is 24 characters).
const NUMBER_CHARS: usize = 25;

pub(super) enum Walked {
    Value(serde_json::Value),
    /// Take the `JSON.stringify` route.
    Fallback,
}

/// Property names already converted to Rust strings, by atom: a decoder returns the same few
/// names on every call, and converting an atom (QuickJS makes a C string of it, which is then
/// checked and copied) cost more than the rest of a key's walk. Each cached atom is held (its
/// reference count raised), so QuickJS cannot free it and give its number to another name.
/// Bounded: when full, it is emptied and refilled by the names in use. Must be dropped before
/// the runtime its atoms belong to.
pub(super) struct KeyNames {
    /// The runtime of the atoms held (known from the first one).
    runtime: *mut qjs::JSRuntime,
    names: HashMap<qjs::JSAtom, Box<str>, BuildHasherDefault<AtomHasher>>,
}

/// An object's own enumerable string keys, in `JSON.stringify`'s order (integer keys first),
/// as QuickJS lists them; the list holds a reference to each atom until dropped.
struct OwnKeys<'js> {
    ctx: Ctx<'js>,
    tab: *mut qjs::JSPropertyEnum,
    len: u32,
}

impl<'js> OwnKeys<'js> {
    fn of(object: &Value<'js>) -> rquickjs::Result<OwnKeys<'js>> {
        let ctx = object.ctx().clone();
        let mut tab = std::ptr::null_mut();
        let mut len = 0;
        let flags = (qjs::JS_GPN_STRING_MASK | qjs::JS_GPN_ENUM_ONLY) as i32;
        // SAFETY: `object` is a live object of `ctx`; on success the table is ours to free.
        if unsafe { qjs::JS_GetOwnPropertyNames(ctx.as_raw().as_ptr(), &mut tab, &mut len, object.as_raw(), flags) } < 0 {
            return Err(rquickjs::Error::Exception);
        }
        Ok(OwnKeys { ctx, tab, len })
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn atoms(&self) -> impl Iterator<Item = &qjs::JSAtom> {
        // SAFETY: QuickJS filled `len` entries (the pointer may be null when `len` is 0).
        let entries = if self.len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(self.tab, self.len as usize) } };
        entries.iter().map(|e| &e.atom)
    }
}

impl Drop for OwnKeys<'_> {
    fn drop(&mut self) {
        // SAFETY: the table and its atoms were given to us by JS_GetOwnPropertyNames.
        unsafe { qjs::JS_FreePropertyEnum(self.ctx.as_raw().as_ptr(), self.tab, self.len) };
    }
}

/// At most this many names are kept per engine.
const KEY_NAMES: usize = 4096;

impl KeyNames {
    pub(super) fn new() -> KeyNames {
        KeyNames { runtime: std::ptr::null_mut(), names: HashMap::default() }
    }

    /// `atom`'s name, or `None` when it is not valid UTF-8 (a lone surrogate; the caller falls
    /// back to `JSON.stringify`, which escapes it).
    fn name(&mut self, ctx: &Ctx<'_>, raw: qjs::JSAtom) -> rquickjs::Result<Option<String>> {
        if let Some(name) = self.names.get(&raw) {
            return Ok(Some(String::from(&**name)));
        }
        let ctx = ctx.as_raw().as_ptr();
        let mut len = 0;
        // SAFETY: `ctx` is live and `raw` an atom of its runtime; the C string QuickJS returns
        // is read (`len` bytes) and freed before leaving the block.
        let name = unsafe {
            let text = qjs::JS_AtomToCStringLen(ctx, &mut len, raw);
            if text.is_null() {
                return Err(rquickjs::Error::Exception);
            }
            let name = std::str::from_utf8(std::slice::from_raw_parts(text.cast::<u8>(), len as usize)).map(Box::<str>::from);
            qjs::JS_FreeCString(ctx, text);
            name
        };
        let Ok(name) = name else { return Ok(None) };
        if self.names.len() >= KEY_NAMES {
            self.clear();
        }
        // SAFETY: `ctx` is live, so is its runtime (the engine's only one); the dup is released
        // in `clear`.
        unsafe {
            self.runtime = qjs::JS_GetRuntime(ctx);
            qjs::JS_DupAtomRT(self.runtime, raw);
        }
        let owned = String::from(&*name);
        self.names.insert(raw, name);
        Ok(Some(owned))
    }

    fn clear(&mut self) {
        for (atom, _) in self.names.drain() {
            // SAFETY: each key holds one reference, taken in `name`.
            unsafe { qjs::JS_FreeAtomRT(self.runtime, atom) };
        }
    }
}

impl Drop for KeyNames {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Atoms are small integers chosen by QuickJS, not by the script: a multiplication spreads them.
#[derive(Default)]
pub(super) struct AtomHasher(u64);

impl Hasher for AtomHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Reads `value` (the decoder's result) if it is an object or array of plain data.
pub(super) fn walk(value: &Value<'_>, max_chars: usize, names: &mut KeyNames) -> rquickjs::Result<Walked> {
    if !is_plain_container(value) {
        return Ok(Walked::Fallback);
    }
    let mut budget = max_chars;
    Ok(match element(value, 0, &mut budget, names)? {
        Some(Some(v)) => Walked::Value(v),
        _ => Walked::Fallback,
    })
}

/// An ordinary object or array (not a function, Proxy, Date, ...).
fn is_plain_container(value: &Value<'_>) -> bool {
    is_plain(plain_class(value))
}

fn is_plain(class: Option<u32>) -> bool {
    matches!(class, Some(CLASS_OBJECT | CLASS_ARRAY))
}

/// The class id of an object (functions, Proxies, Dates... have classes of their own), read
/// from its tag and header: rquickjs's `as_object` and `as_array` classify a value by asking
/// QuickJS up to six questions (is it a Promise, an Error, a Proxy...) each time.
fn plain_class(value: &Value<'_>) -> Option<u32> {
    // SAFETY: `value` is a live object value; reading its class id has no side effect.
    value.is_object().then(|| unsafe { rquickjs::qjs::JS_GetClassID(value.as_raw()) })
}

/// QuickJS's class ids of ordinary objects and arrays (the first two of its fixed list).
const CLASS_OBJECT: u32 = 1;
const CLASS_ARRAY: u32 = 2;

/// Takes `chars` from the budget; false when the text could pass the limit.
fn spend(budget: &mut usize, chars: usize) -> bool {
    match budget.checked_sub(chars) {
        Some(rest) => {
            *budget = rest;
            true
        }
        None => false,
    }
}

/// Upper bound of a string's JSON text in characters: bytes bound characters, plus the escapes.
fn quoted_chars(s: &str) -> usize {
    2 + s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// A JS number as `serde_json` parses `JSON.stringify`'s text of it.
fn number(x: f64) -> serde_json::Value {
    if !x.is_finite() {
        return serde_json::Value::Null;
    }
    // Below 1e21 an integral number is printed as its digits, which serde reads as an integer
    // when it fits (-0 prints as "0").
    if x.fract() == 0.0 && x.abs() < 1e21 {
        if (0.0..18_446_744_073_709_551_616.0).contains(&x) {
            return serde_json::Value::from(x as u64);
        }
        if (-9_223_372_036_854_775_808.0..0.0).contains(&x) {
            return serde_json::Value::from(x as i64);
        }
    }
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// One value: `Some(Some(v))` a JSON value, `Some(None)` nothing (undefined, a function, a
/// symbol: left out of objects, `null` in arrays), `None` fall back.
fn element(
    value: &Value<'_>,
    depth: usize,
    budget: &mut usize,
    names: &mut KeyNames,
) -> rquickjs::Result<Option<Option<serde_json::Value>>> {
    use serde_json::Value as J;
    if let Some(i) = value.as_int() {
        return Ok(spend(budget, 11).then_some(Some(J::from(i))));
    }
    if let Some(x) = value.as_float() {
        return Ok(spend(budget, NUMBER_CHARS).then_some(Some(number(x))));
    }
    // SAFETY (`ref_string`): the tag says it is a string.
    if let Some(s) = value.is_string().then(|| unsafe { value.ref_string() }) {
        let Ok(s) = s.to_string() else {
            // Lone surrogates: not UTF-8; `JSON.stringify` escapes them.
            return Ok(None);
        };
        return Ok(spend(budget, quoted_chars(&s)).then_some(Some(J::String(s))));
    }
    if let Some(b) = value.as_bool() {
        return Ok(spend(budget, 5).then_some(Some(J::Bool(b))));
    }
    if value.is_null() {
        return Ok(spend(budget, 4).then_some(Some(J::Null)));
    }
    if value.is_undefined() || value.is_symbol() {
        return Ok(Some(None));
    }
    let class = plain_class(value);
    if !is_plain(class) {
        // A function is left out like `undefined`; anything else (BigInt, Proxy, Date...)
        // falls back.
        return Ok(value.is_function().then_some(None));
    }
    if depth >= MAX_DEPTH {
        return Ok(None);
    }
    // SAFETY (`ref_object`, `ref_array`): the tag says object, the class id array.
    let object = unsafe { value.ref_object() };
    // The predefined atom: no look-up of the name per object.
    if !object.get::<_, Value>(PredefinedAtom::ToJSON)?.is_undefined() {
        return Ok(None);
    }
    if let Some(array) = (class == Some(CLASS_ARRAY)).then(|| unsafe { value.ref_array() }) {
        if !spend(budget, 2) {
            return Ok(None);
        }
        let mut items = Vec::with_capacity(array.len().min(*budget));
        for i in 0..array.len() {
            let item: Value = array.get(i)?;
            match element(&item, depth + 1, budget, names)? {
                Some(v) if spend(budget, 1) => items.push(v.unwrap_or(J::Null)),
                _ => return Ok(None),
            }
        }
        return Ok(Some(Some(J::Array(items))));
    }
    if !spend(budget, 2) {
        return Ok(None);
    }
    let ctx = value.ctx();
    let keys = OwnKeys::of(value)?;
    // Sized once: growing the map rehashes every key it holds.
    let mut map = serde_json::Map::with_capacity(keys.len());
    for &atom in keys.atoms() {
        // SAFETY: `value` is a live object of `ctx`, `atom` one of its keys (held by `keys`);
        // the property comes back owned and is moved into a `Value` at once.
        let item = unsafe {
            let item = qjs::JS_GetProperty(ctx.as_raw().as_ptr(), value.as_raw(), atom);
            if qjs::JS_VALUE_GET_NORM_TAG(item) == qjs::JS_TAG_EXCEPTION {
                return Err(rquickjs::Error::Exception);
            }
            Value::from_raw(ctx.clone(), item)
        };
        let Some(item) = element(&item, depth + 1, budget, names)? else {
            return Ok(None);
        };
        let Some(item) = item else { continue };
        let Some(key) = names.name(ctx, atom)? else {
            return Ok(None);
        };
        if !spend(budget, quoted_chars(&key) + 2) {
            return Ok(None);
        }
        map.insert(key, item);
    }
    Ok(Some(Some(J::Object(map))))
}

#[cfg(test)]
mod tests {
    use super::{walk, KeyNames, Walked};
    use rquickjs::{Context, Runtime, Value};

    /// Each expression's result read by the walk equals `JSON.stringify` then `serde_json`, or
    /// the walk falls back (`false` in the table) and the caller takes that route.
    #[test]
    fn walk_equals_stringify_then_parse() {
        let cases: &[(&str, bool)] = &[
            (r#"({deviceName: "SN-001", deviceType: "default", telemetry: {temperature: 25.7, humidity: 69}, attributes: {}})"#, true),
            (r#"({b: 1, a: 2, 10: "ten", 2: "two", "x y": null, t: true, f: false})"#, true),
            (r#"({u: undefined, fn: function () {}, s: Symbol("s"), kept: 1})"#, true),
            (r#"[1, undefined, function () {}, null, , "x"]"#, true),
            (r#"({n: [NaN, Infinity, -Infinity, -0, 0.1 + 0.2, 1e21, 1e20, 2e19, -9.3e18, 5e-7, 1.5e300, 2147483648, -2147483649]})"#, true),
            (r#"({s: "quote \" backslash \\ nl \n tab \t ctl \u0001 é 😀 \u2028"})"#, true),
            (r#"({deep: {er: {and: [[{deeper: [1, [2, [3]]]}]]}}})"#, true),
            (r#"(function () { var o = {}; Object.defineProperty(o, "hidden", {value: 1, enumerable: false}); o.shown = 2; return o; })()"#, true),
            (r#"({get g() { return 42; }, p: Object.create({inherited: 1})})"#, true),
            (r#"({d: new Date(0)})"#, false),
            (r#"({x: 1, toJSON: function () { return "custom"; }})"#, false),
            (r#"(function () { Array.prototype.toJSON = function () { return "arr"; }; var r = {a: [1]}; return r; })()"#, false),
            (r#"({p: new Proxy({a: 1}, {})})"#, false),
            (r#"({m: new Map([[1, 2]]), e: new Error("x")})"#, false),
            (r#"({b: 10n})"#, false),
            (r#"({c: class {}, a: [() => 1, async function () {}], inst: new (class { constructor() { this.v = 1; } })()})"#, true),
            (r#"({boxed: new Number(3)})"#, false),
            (r#"({t: new Uint8Array([1, 2])})"#, false),
            (r#"({lone: "\ud800"})"#, false),
            (r#"({"\udc00 key": 1})"#, false),
            (r#"({a: 1, nested: {a: 2, b: [{a: 3}]}, b: "same names again"})"#, true),
            ("\"top-level string\"", false),
            ("42", false),
        ];
        let runtime = Runtime::new().unwrap();
        for (source, walked) in cases {
            // A context per case: one case's prototype changes must not reach the next.
            let context = Context::full(&runtime).unwrap();
            context.with(|ctx| {
                let value: Value = ctx.eval(*source).unwrap();
                match walk(&value, 1_000_000, &mut KeyNames::new()).unwrap() {
                    Walked::Value(v) => {
                        assert!(walked, "{source}: expected a fallback, walked to {v}");
                        // (Only here: `JSON.stringify` throws for some fallback cases, BigInt.)
                        let json = ctx.json_stringify(value.clone()).unwrap().unwrap().to_string().unwrap();
                        let expected: serde_json::Value = serde_json::from_str(&json).unwrap();
                        assert_eq!(v, expected, "{source}");
                        // Same key order as the JSON text, not only the same map.
                        assert_eq!(v.to_string(), expected.to_string(), "{source}");
                    }
                    Walked::Fallback => assert!(!walked, "{source}: fell back"),
                }
            });
        }
    }

    /// A cycle ends in `JSON.stringify`, which reports it; a result that may pass the size
    /// limit also takes that route, where the exact count is made.
    #[test]
    fn cycles_and_large_results_fall_back() {
        let runtime = Runtime::new().unwrap();
        let context = Context::full(&runtime).unwrap();
        context.with(|ctx| {
            let cyclic: Value = ctx.eval("var o = {a: {}}; o.a.back = o; o").unwrap();
            assert!(matches!(walk(&cyclic, 1_000_000, &mut KeyNames::new()).unwrap(), Walked::Fallback));
            let text: Value = ctx.eval(r#"({s: "0123456789"})"#).unwrap();
            // {"s":"0123456789"} is 18 characters; the walk's bound on the way is a little above.
            assert!(matches!(walk(&text, 20, &mut KeyNames::new()).unwrap(), Walked::Value(_)));
            assert!(matches!(walk(&text, 17, &mut KeyNames::new()).unwrap(), Walked::Fallback));
        });
    }
}
