//! Run-time values, with Java's types and MVEL's conversions.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use indexmap::IndexMap;

use crate::error::Result;

/// An insertion-ordered map with string keys (JSON objects, `{a: 1}` literals, `new HashMap()`).
pub type MapRef = Rc<RefCell<IndexMap<Rc<str>, Value>>>;
/// A list (`[1, 2]`, `new ArrayList()`, Java arrays, byte arrays).
pub type ListRef = Rc<RefCell<Vec<Value>>>;

/// A TBEL value. Numbers keep their Java type: arithmetic on `Int`s stays 32-bit.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `boolean`.
    Bool(bool),
    /// `byte` (signed), e.g. elements of `payload`.
    Byte(i8),
    /// `char`, from `charAt` and `toCharArray`.
    Char(char),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `String`.
    Str(Rc<str>),
    /// `List` and arrays.
    List(ListRef),
    /// `Set` (a Java LinkedHashSet: insertion order, no duplicates), from `newSet`/`toSet`.
    Set(ListRef),
    /// `Map`.
    Map(MapRef),
    /// A `Map.Entry` from `entrySet()`.
    Entry(Rc<(Value, Value)>),
    /// A TbDate: milliseconds since the epoch (UTC).
    Date(Rc<RefCell<i64>>),
    /// A declared variable that was never assigned (reading it is an error).
    #[doc(hidden)]
    Undef,
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }
    /// A string value from an owned `String`.
    pub fn string(s: String) -> Value {
        Value::Str(Rc::from(s))
    }
    /// A list value.
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(RefCell::new(v)))
    }
    /// A map value.
    pub fn map(m: IndexMap<Rc<str>, Value>) -> Value {
        Value::Map(Rc::new(RefCell::new(m)))
    }
    /// The payload as ThingsBoard passes it: a list of signed bytes.
    pub fn signed_bytes(bytes: &[u8]) -> Value {
        Value::list(bytes.iter().map(|b| Value::Byte(*b as i8)).collect())
    }
    /// A map of strings, e.g. `metadata`.
    pub fn string_map<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
        Value::map(
            entries
                .into_iter()
                .map(|(k, v)| (Rc::from(k), Value::str(v)))
                .collect(),
        )
    }

    /// Java's simple class name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null | Value::Undef => "null",
            Value::Bool(_) => "Boolean",
            Value::Byte(_) => "Byte",
            Value::Char(_) => "Character",
            Value::Int(_) => "Integer",
            Value::Long(_) => "Long",
            Value::Float(_) => "Float",
            Value::Double(_) => "Double",
            Value::Str(_) => "String",
            Value::List(_) => "ArrayList",
            Value::Set(_) => "LinkedHashSet",
            Value::Map(_) => "LinkedHashMap",
            Value::Entry(_) => "Entry",
            Value::Date(_) => "TbDate",
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Value::Null | Value::Undef)
    }

    pub(crate) fn is_number(&self) -> bool {
        matches!(
            self,
            Value::Byte(_)
                | Value::Char(_)
                | Value::Int(_)
                | Value::Long(_)
                | Value::Float(_)
                | Value::Double(_)
        )
    }

    /// Integral value (truncating floating point), if numeric.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        Some(match self {
            Value::Byte(v) => *v as i64,
            Value::Char(c) => *c as i64,
            Value::Int(v) => *v as i64,
            Value::Long(v) => *v,
            Value::Float(v) => *v as i64,
            Value::Double(v) => *v as i64,
            _ => return None,
        })
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        Some(match self {
            Value::Byte(v) => *v as f64,
            Value::Char(c) => *c as u32 as f64,
            Value::Int(v) => *v as f64,
            Value::Long(v) => *v as f64,
            Value::Float(v) => *v as f64,
            Value::Double(v) => *v,
            _ => return None,
        })
    }

    /// Number or numeric string → f64 (MVEL coerces strings in arithmetic and comparisons).
    pub(crate) fn coerce_f64(&self) -> Option<f64> {
        match self {
            Value::Str(s) => parse_java_double(s),
            Value::Bool(b) => Some(*b as i32 as f64),
            v => v.as_f64(),
        }
    }

    /// Java `String.valueOf(this)`.
    pub fn to_java_string(&self) -> String {
        let mut s = String::new();
        self.write_java(&mut s, 0);
        s
    }

    pub(crate) fn write_java(&self, out: &mut String, depth: usize) {
        match self {
            Value::Null | Value::Undef => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Byte(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Char(c) => out.push(*c),
            Value::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Long(v) => {
                let _ = write!(out, "{v}");
            }
            Value::Float(v) => out.push_str(&java_float(*v)),
            Value::Double(v) => out.push_str(&java_double(*v)),
            Value::Str(s) => out.push_str(s),
            Value::List(l) | Value::Set(l) => {
                if depth > 64 {
                    out.push_str("[...]");
                    return;
                }
                out.push('[');
                for (i, v) in l.borrow().iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write_java(out, depth + 1);
                }
                out.push(']');
            }
            Value::Map(m) => {
                if depth > 64 {
                    out.push_str("{...}");
                    return;
                }
                out.push('{');
                for (i, (k, v)) in m.borrow().iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push('=');
                    v.write_java(out, depth + 1);
                }
                out.push('}');
            }
            Value::Entry(e) => {
                e.0.write_java(out, depth + 1);
                out.push('=');
                e.1.write_java(out, depth + 1);
            }
            Value::Date(d) => out.push_str(&crate::lib_date::to_iso(*d.borrow())),
        }
    }

    /// Key under which this value is stored in a map.
    pub(crate) fn to_key(&self) -> Rc<str> {
        match self {
            Value::Str(s) => s.clone(),
            v => Rc::from(v.to_java_string()),
        }
    }

    /// Converts to JSON as ThingsBoard's Jackson serialises results: integers stay integers,
    /// doubles stay doubles (`1.0` stays `1.0`), dates become epoch milliseconds.
    pub fn to_json(&self) -> serde_json::Value {
        self.to_json_depth(0)
    }

    fn to_json_depth(&self, depth: usize) -> serde_json::Value {
        use serde_json::Value as J;
        if depth > 200 {
            return J::Null;
        }
        match self {
            Value::Null | Value::Undef => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Byte(v) => J::from(*v),
            Value::Char(c) => J::String(c.to_string()),
            Value::Int(v) => J::from(*v),
            Value::Long(v) => J::from(*v),
            // Through the shortest decimal text, so 0.1f serialises as 0.1 like Jackson does.
            Value::Float(v) => {
                if v.is_finite() {
                    J::from(format!("{v}").parse::<f64>().unwrap_or(*v as f64))
                } else {
                    J::String(java_float(*v))
                }
            }
            Value::Double(v) => {
                if v.is_finite() {
                    J::from(*v)
                } else {
                    J::String(java_double(*v))
                }
            }
            Value::Str(s) => J::String(s.to_string()),
            Value::List(l) | Value::Set(l) => J::Array(
                l.borrow()
                    .iter()
                    .map(|v| v.to_json_depth(depth + 1))
                    .collect(),
            ),
            Value::Map(m) => J::Object(
                m.borrow()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json_depth(depth + 1)))
                    .collect(),
            ),
            Value::Entry(e) => {
                let mut o = serde_json::Map::new();
                o.insert(e.0.to_java_string(), e.1.to_json_depth(depth + 1));
                J::Object(o)
            }
            Value::Date(d) => J::from(*d.borrow()),
        }
    }

    /// Converts JSON into values as TbJson.parse does: integers that fit an int become
    /// `Int`, larger ones `Long`, fractions `Double`.
    pub fn from_json(j: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    match i32::try_from(i) {
                        Ok(v) => Value::Int(v),
                        Err(_) => Value::Long(i),
                    }
                } else if let Some(u) = n.as_u64() {
                    Value::Double(u as f64)
                } else {
                    Value::Double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::str(s),
            J::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            J::Object(o) => Value::map(
                o.iter()
                    .map(|(k, v)| (Rc::from(k.as_str()), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Java `equals` (used by `contains`, `indexOf`, `===`).
    pub(crate) fn java_equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null | Value::Undef, Value::Null | Value::Undef) => true,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                Rc::ptr_eq(a, b) || {
                    let (a, b) = (a.borrow(), b.borrow());
                    a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.java_equals(y))
                }
            }
            (Value::Set(a), Value::Set(b)) => {
                Rc::ptr_eq(a, b) || {
                    let (a, b) = (a.borrow(), b.borrow());
                    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.java_equals(y)))
                }
            }
            (Value::Map(a), Value::Map(b)) => {
                Rc::ptr_eq(a, b) || {
                    let (a, b) = (a.borrow(), b.borrow());
                    a.len() == b.len()
                        && a.iter()
                            .all(|(k, v)| b.get(k).is_some_and(|w| v.java_equals(w)))
                }
            }
            (Value::Date(a), Value::Date(b)) => *a.borrow() == *b.borrow(),
            (Value::Entry(a), Value::Entry(b)) => a.0.java_equals(&b.0) && a.1.java_equals(&b.1),
            (a, b) if a.is_number() && b.is_number() => match (a, b) {
                (Value::Float(_) | Value::Double(_), _)
                | (_, Value::Float(_) | Value::Double(_)) => a.as_f64() == b.as_f64(),
                _ => a.as_i64() == b.as_i64(),
            },
            (Value::Char(c), Value::Str(s)) | (Value::Str(s), Value::Char(c)) => {
                let mut it = s.chars();
                it.next() == Some(*c) && it.next().is_none()
            }
            _ => false,
        }
    }

    /// Approximate memory held by this value (for the sandbox's accounting).
    pub(crate) fn shallow_size(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::List(_) | Value::Set(_) | Value::Map(_) | Value::Entry(_) => 4,
            Value::Long(_) | Value::Double(_) | Value::Date(_) => 8,
            Value::Byte(_) | Value::Bool(_) | Value::Char(_) => 1,
            _ => 4,
        }
    }
}

/// A condition's truth: booleans as they are, `null` false, numbers non-zero,
/// strings `"true"` (MVEL converts strings with Boolean.parseBoolean-like rules).
pub(crate) fn truthy(v: &Value) -> Result<bool> {
    Ok(match v {
        Value::Bool(b) => *b,
        Value::Null | Value::Undef => false,
        Value::Str(s) => {
            s.eq_ignore_ascii_case("true")
                || (!s.is_empty() && !s.eq_ignore_ascii_case("false") && s.as_ref() != "0")
        }
        v if v.is_number() => v.as_f64().is_some_and(|f| f != 0.0),
        Value::List(l) | Value::Set(l) => !l.borrow().is_empty(),
        Value::Map(m) => !m.borrow().is_empty(),
        _ => true,
    })
}

/// Java's `Double.toString`: shortest round-trip digits, plain between 1e-3 and 1e7,
/// `d.dddE±n` outside.
pub fn java_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    format_java_fp(&format!("{:e}", v), v.abs() >= 1e-3 && v.abs() < 1e7)
}

/// Java's `Float.toString`.
pub fn java_float(v: f32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    format_java_fp(&format!("{:e}", v), v.abs() >= 1e-3 && v.abs() < 1e7)
}

/// `sci` is Rust's shortest `{:e}` text (`-1.2345e3`).
fn format_java_fp(sci: &str, plain: bool) -> String {
    let (mant, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let neg = mant.starts_with('-');
    let mant = mant.trim_start_matches('-');
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if plain {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        if digits.len() > 1 {
            out.push_str(&digits[1..]);
        } else {
            out.push('0');
        }
        let _ = write!(out, "E{exp}");
    }
    out
}

/// Java's `Double.parseDouble`: trims whitespace, accepts a trailing `d`/`f`, `NaN`, `Infinity`.
pub(crate) fn parse_java_double(s: &str) -> Option<f64> {
    let t = s.trim();
    let t = t.strip_suffix(['d', 'D', 'f', 'F']).unwrap_or(t);
    if t.is_empty() {
        return None;
    }
    match t {
        "NaN" | "+NaN" | "-NaN" => return Some(f64::NAN),
        "Infinity" | "+Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    t.parse::<f64>().ok()
}
