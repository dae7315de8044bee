//! Methods and properties on values: Java's String, List, Map, Map.Entry and numbers,
//! plus the JavaScript-style list methods TBEL adds.

use std::rc::Rc;

use crate::error::{Result, TbelError};
use crate::interp::Ctx;
use crate::jregex;
use crate::ops;
use crate::value::Value;

/// A Java `int` parameter, converted as MVEL converts method arguments.
pub(crate) fn int_arg(v: &Value, what: &str) -> Result<i64> {
    crate::convert::to_int(v, what).map(i64::from)
}

/// A Java `long` parameter, converted as MVEL converts method arguments.
pub(crate) fn long_arg(v: &Value, what: &str) -> Result<i64> {
    crate::convert::to_long(v, what)
}

pub(crate) fn str_arg(v: &Value) -> Rc<str> {
    match v {
        Value::Str(s) => s.clone(),
        v => v.to_java_string().into(),
    }
}

fn no_method(name: &str, n: usize, on: &str) -> TbelError {
    TbelError::runtime(format!(
        "unable to resolve method: {on}.{name}() [arglength={n}]"
    ))
}

/// `obj.name` without call.
pub(crate) fn property(o: &Value, name: &str) -> Result<Value> {
    match o {
        Value::Map(m) => Ok(m.borrow().get(name).cloned().unwrap_or(Value::Null)),
        Value::List(l) => match name {
            "size" | "length" => Ok(Value::Int(l.borrow().len() as i32)),
            "empty" => Ok(Value::Bool(l.borrow().is_empty())),
            _ => Err(TbelError::runtime(format!(
                "could not access property ({name}) in: ArrayList"
            ))),
        },
        Value::Set(l) => match name {
            "size" => Ok(Value::Int(l.borrow().len() as i32)),
            "empty" => Ok(Value::Bool(l.borrow().is_empty())),
            _ => Err(TbelError::runtime(format!(
                "could not access property ({name}) in: LinkedHashSet"
            ))),
        },
        Value::Str(s) => match name {
            "length" => Ok(Value::Int(utf16_len(s) as i32)),
            "empty" => Ok(Value::Bool(s.is_empty())),
            "bytes" => Ok(Value::signed_bytes(s.as_bytes())),
            _ => Err(TbelError::runtime(format!(
                "could not access property ({name}) in: String"
            ))),
        },
        Value::Entry(e) => match name {
            "key" => Ok(e.0.clone()),
            "value" => Ok(e.1.clone()),
            _ => Err(TbelError::runtime(format!(
                "could not access property ({name}) in: Entry"
            ))),
        },
        Value::Date(_) => crate::lib_date::method(o, &format!("get{}", capitalize(name)), vec![]),
        v => Err(TbelError::runtime(format!(
            "could not access property ({name}) in: {}",
            v.type_name()
        ))),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(crate) fn index_get(o: &Value, i: &Value) -> Result<Value> {
    match o {
        Value::List(l) => {
            let idx = int_arg(i, "index")?;
            let l = l.borrow();
            if idx < 0 || idx as usize >= l.len() {
                return Err(TbelError::runtime(format!(
                    "Index {idx} out of bounds for length {}",
                    l.len()
                )));
            }
            Ok(l[idx as usize].clone())
        }
        Value::Map(m) => Ok(m.borrow().get(&*i.to_key()).cloned().unwrap_or(Value::Null)),
        Value::Str(s) => {
            let idx = int_arg(i, "index")?;
            char_at(s, idx)
        }
        Value::Null | Value::Undef => Err(TbelError::runtime("Cannot read index of null")),
        v => Err(TbelError::runtime(format!(
            "cannot index into {}",
            v.type_name()
        ))),
    }
}

pub(crate) fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// Java substring by UTF-16 indices (ASCII fast path).
fn substr(s: &str, b: i64, e: i64) -> Result<String> {
    let len = utf16_len(s) as i64;
    if b < 0 || e > len || b > e {
        return Err(TbelError::runtime(format!(
            "begin {b}, end {e}, length {len}"
        )));
    }
    if s.is_ascii() {
        return Ok(s[b as usize..e as usize].to_string());
    }
    let units: Vec<u16> = s.encode_utf16().collect();
    Ok(String::from_utf16_lossy(&units[b as usize..e as usize]))
}

fn char_at(s: &str, idx: i64) -> Result<Value> {
    let len = utf16_len(s) as i64;
    if idx < 0 || idx >= len {
        return Err(TbelError::runtime(format!(
            "Index {idx} out of bounds for length {len}"
        )));
    }
    if s.is_ascii() {
        return Ok(Value::Char(s.as_bytes()[idx as usize] as char));
    }
    let u = s.encode_utf16().nth(idx as usize).unwrap();
    Ok(Value::Char(char::from_u32(u as u32).unwrap_or('\u{FFFD}')))
}

/// Java indexOf on UTF-16 indices.
fn index_of(s: &str, needle: &str, from: i64, last: bool) -> i64 {
    if s.is_ascii() && needle.is_ascii() {
        let from = from.max(0) as usize;
        if last {
            let end = (from.saturating_add(needle.len())).min(s.len());
            return s[..end].rfind(needle).map_or(-1, |i| i as i64);
        }
        if from > s.len() {
            return -1;
        }
        return s[from..].find(needle).map_or(-1, |i| (i + from) as i64);
    }
    let h: Vec<u16> = s.encode_utf16().collect();
    let n: Vec<u16> = needle.encode_utf16().collect();
    if n.len() > h.len() {
        return -1;
    }
    let positions = 0..=(h.len() - n.len());
    if last {
        let max = from.max(-1);
        positions
            .rev()
            .find(|&i| i as i64 <= max && h[i..i + n.len()] == n[..])
            .map_or(-1, |i| i as i64)
    } else {
        positions
            .into_iter()
            .find(|&i| i as i64 >= from && h[i..i + n.len()] == n[..])
            .map_or(-1, |i| i as i64)
    }
}

fn new_str(ctx: &mut Ctx, s: String) -> Result<Value> {
    ctx.check_str(s.len())?;
    Ok(Value::string(s))
}

pub(crate) fn call_method(ctx: &mut Ctx, o: &Value, name: &str, args: Vec<Value>) -> Result<Value> {
    // Methods every object has.
    match (name, args.len()) {
        ("toString", 0) => return new_str(ctx, o.to_java_string()),
        ("equals", 1) => return Ok(Value::Bool(o.java_equals(&args[0]))),
        ("hashCode", 0) => return Ok(Value::Int(java_hash(&o.to_java_string()))),
        ("getClass", 0) => {
            return Err(TbelError::runtime("Access to class objects is not allowed"));
        }
        _ => {}
    }
    match o {
        Value::Str(s) => string_method(ctx, s, name, args),
        Value::List(_) => list_method(ctx, o, name, args),
        Value::Set(s) => set_method(ctx, s, name, args),
        Value::Map(_) => map_method(ctx, o, name, args),
        Value::Entry(e) => match name {
            "getKey" => Ok(e.0.clone()),
            "getValue" => Ok(e.1.clone()),
            _ => Err(no_method(name, args.len(), "Entry")),
        },
        Value::Date(_) => crate::lib_date::method(o, name, args),
        v if v.is_number() => number_method(v, name, args),
        Value::Bool(b) => match name {
            "booleanValue" => Ok(Value::Bool(*b)),
            "compareTo" => Ok(Value::Int(
                b.cmp(&matches!(args.first(), Some(Value::Bool(true)))) as i32,
            )),
            _ => Err(no_method(name, args.len(), "Boolean")),
        },
        v => Err(no_method(name, args.len(), v.type_name())),
    }
}

fn number_method(v: &Value, name: &str, args: Vec<Value>) -> Result<Value> {
    let f = v.as_f64().unwrap();
    let i = v.as_i64().unwrap();
    Ok(match name {
        "intValue" => Value::Int(match v {
            Value::Double(d) => *d as i32,
            Value::Float(d) => *d as i32,
            _ => i as i32,
        }),
        "longValue" => Value::Long(i),
        "doubleValue" => Value::Double(match v {
            Value::Float(x) => format!("{x}").parse().unwrap_or(f),
            _ => f,
        }),
        "floatValue" => Value::Float(f as f32),
        "byteValue" => Value::Byte(i as i8),
        "shortValue" => Value::Int(i as i16 as i32),
        "isNaN" => Value::Bool(f.is_nan()),
        "isInfinite" => Value::Bool(f.is_infinite()),
        "compareTo" => {
            let o = args.first().cloned().unwrap_or(Value::Null);
            Value::Int(ops::compare(v, &o).map_or(0, |c| c as i32))
        }
        "toFixed" => {
            let d = int_arg(args.first().unwrap_or(&Value::Int(0)), "toFixed")?;
            Value::string(crate::lib_helpers::to_fixed_string(f, d as i32))
        }
        _ => return Err(no_method(name, args.len(), v.type_name())),
    })
}

/// ArrayTools.initStartIndex: negative counts from the end, below -len is 0, a positive
/// index is kept as is.
fn start_index(i: i64, len: usize) -> usize {
    let len = len as i64;
    (if i < -len {
        0
    } else if i < 0 {
        i + len
    } else {
        i
    }) as usize
}

/// ArrayTools.initEndIndex: like `start_index`, but capped at `len`.
fn end_index(i: i64, len: usize) -> usize {
    start_index(i, len).min(len)
}

/// The order ExecutionArrayList.sort and ExecutionHashMap's sorts use: numeric (as doubles)
/// when every key's String.valueOf parses as a double, else by String.valueOf. Stable.
pub(crate) fn tbel_sort<T>(items: &mut [T], key: impl Fn(&T) -> &Value, asc: bool) {
    let nums: Option<Vec<f64>> = items
        .iter()
        .map(|x| crate::value::parse_java_double(&key(x).to_java_string()))
        .collect();
    let mut idx: Vec<usize> = (0..items.len()).collect();
    match nums {
        Some(d) => idx.sort_by(|&x, &y| {
            // Double.compareTo: NaN above everything, -0.0 below 0.0.
            let c = match (d[x].is_nan(), d[y].is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => d[x].total_cmp(&d[y]),
            };
            if asc { c } else { c.reverse() }
        }),
        None => {
            let s: Vec<String> = items.iter().map(|x| key(x).to_java_string()).collect();
            idx.sort_by(|&x, &y| {
                let c = java_compare(&s[x], &s[y]).cmp(&0);
                if asc { c } else { c.reverse() }
            });
        }
    }
    // Apply the permutation.
    let mut pos: Vec<usize> = vec![0; idx.len()];
    for (to, &from) in idx.iter().enumerate() {
        pos[from] = to;
    }
    for i in 0..items.len() {
        while pos[i] != i {
            let j = pos[i];
            items.swap(i, j);
            pos.swap(i, j);
        }
    }
}

pub(crate) fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

fn string_method(ctx: &mut Ctx, s: &Rc<str>, name: &str, args: Vec<Value>) -> Result<Value> {
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let n = args.len();
    Ok(match (name, n) {
        ("length", 0) => Value::Int(utf16_len(s) as i32),
        ("isEmpty", 0) => Value::Bool(s.is_empty()),
        ("isBlank", 0) => Value::Bool(s.trim().is_empty()),
        ("substring", 1) => {
            let b = int_arg(&a(0), "substring")?;
            Value::string(substr(s, b, utf16_len(s) as i64)?)
        }
        ("substring", 2) => Value::string(substr(
            s,
            int_arg(&a(0), "substring")?,
            int_arg(&a(1), "substring")?,
        )?),
        ("substr", 1 | 2) => {
            // JavaScript's substr(start, length)
            let len = utf16_len(s) as i64;
            let mut b = int_arg(&a(0), "substr")?;
            if b < 0 {
                b = (len + b).max(0);
            }
            let b = b.min(len);
            let l = if n == 2 {
                int_arg(&a(1), "substr")?.max(0)
            } else {
                len
            };
            Value::string(substr(s, b, (b + l).min(len))?)
        }
        ("indexOf", 1 | 2) => {
            let from = if n == 2 {
                int_arg(&a(1), "indexOf")?
            } else {
                0
            };
            Value::Int(index_of(s, &needle(&a(0)), from, false) as i32)
        }
        ("lastIndexOf", 1 | 2) => {
            let from = if n == 2 {
                int_arg(&a(1), "lastIndexOf")?
            } else {
                i32::MAX as i64
            };
            Value::Int(index_of(s, &needle(&a(0)), from, true) as i32)
        }
        ("charAt", 1) => char_at(s, int_arg(&a(0), "charAt")?)?,
        ("codePointAt" | "charCodeAt", 1) => match char_at(s, int_arg(&a(0), name)?)? {
            Value::Char(c) => Value::Int(c as i32),
            v => v,
        },
        ("contains" | "includes", 1) => Value::Bool(s.contains(&*str_arg(&a(0)))),
        ("startsWith", 1) => Value::Bool(s.starts_with(&*str_arg(&a(0)))),
        ("startsWith", 2) => {
            let off = int_arg(&a(1), "startsWith")?;
            let len = utf16_len(s) as i64;
            Value::Bool(
                off >= 0 && off <= len && substr(s, off, len)?.starts_with(&*str_arg(&a(0))),
            )
        }
        ("endsWith", 1) => Value::Bool(s.ends_with(&*str_arg(&a(0)))),
        ("equalsIgnoreCase", 1) => Value::Bool(match a(0) {
            Value::Str(o) => s.to_lowercase() == o.to_lowercase(),
            _ => false,
        }),
        ("compareTo", 1) => Value::Int(java_compare(s, &str_arg(&a(0)))),
        ("compareToIgnoreCase", 1) => Value::Int(java_compare(
            &s.to_lowercase(),
            &str_arg(&a(0)).to_lowercase(),
        )),
        ("toUpperCase", 0) => Value::string(s.to_uppercase()),
        ("toLowerCase", 0) => Value::string(s.to_lowercase()),
        ("trim", 0) => Value::str(s.trim_matches(|c: char| c <= ' ')),
        ("strip", 0) => Value::str(s.trim()),
        ("stripLeading" | "trimStart", 0) => Value::str(s.trim_start()),
        ("stripTrailing" | "trimEnd", 0) => Value::str(s.trim_end()),
        ("concat", 1) => new_str(ctx, format!("{s}{}", str_arg(&a(0))))?,
        ("replace", 2) => {
            let from = str_arg(&a(0));
            let to = str_arg(&a(1));
            let r = if from.is_empty() {
                // Java inserts the replacement around every char.
                let mut out = String::from(&*to);
                for c in s.chars() {
                    out.push(c);
                    out.push_str(&to);
                }
                out
            } else {
                s.replace(&*from, &to)
            };
            new_str(ctx, r)?
        }
        ("replaceAll" | "replaceFirst", 2) => {
            let pat = str_arg(&a(0));
            let rep = str_arg(&a(1));
            let all = name == "replaceAll";
            let out = match jregex::literal(&pat) {
                Some(lit) if !lit.is_empty() && !rep.contains(['$', '\\']) => {
                    if all {
                        s.replace(lit.as_str(), &rep)
                    } else {
                        s.replacen(lit.as_str(), &rep, 1)
                    }
                }
                _ => {
                    let re = jregex::compile(&pat)?;
                    let rep = jregex::replacement(&rep)?;
                    if all {
                        re.replace_all(s, rep.as_str()).into_owned()
                    } else {
                        re.replacen(s, 1, rep.as_str()).into_owned()
                    }
                }
            };
            new_str(ctx, out)?
        }
        ("matches", 1) => {
            let re = jregex::compile(&format!("^(?:{})$", str_arg(&a(0))))?;
            Value::Bool(re.is_match(s))
        }
        ("split", 1 | 2) => {
            let limit = if n == 2 {
                int_arg(&a(1), "split")? as i32
            } else {
                0
            };
            let parts = jregex::split(s, &str_arg(&a(0)), limit)?;
            ctx.alloc(parts.iter().map(|p| p.len() + 4).sum::<usize>() + 16)?;
            Value::list(parts.into_iter().map(Value::string).collect())
        }
        ("toCharArray", 0) => {
            ctx.alloc(s.len() * 2)?;
            Value::list(s.chars().map(Value::Char).collect())
        }
        ("getBytes", 0 | 1) => {
            ctx.alloc(s.len())?;
            Value::signed_bytes(s.as_bytes())
        }
        ("repeat", 1) => {
            let k = int_arg(&a(0), "repeat")?;
            if k < 0 {
                return Err(TbelError::runtime(format!("count is negative: {k}")));
            }
            ctx.check_str(s.len().saturating_mul(k as usize))?;
            Value::string(s.repeat(k as usize))
        }
        ("intern", 0) => Value::Str(s.clone()),
        _ => return Err(no_method(name, n, "String")),
    })
}

/// What String.indexOf/lastIndexOf look for: an Integer selects the `int ch` overload
/// (a character code), anything else is converted to a String.
fn needle(v: &Value) -> Rc<str> {
    match v {
        Value::Int(c) => char::from_u32(*c as u32)
            .map_or_else(|| "\u{FFFF}\u{0}".into(), |c| c.to_string().into()),
        v => str_arg(v),
    }
}

fn java_compare(a: &str, b: &str) -> i32 {
    let (x, y): (Vec<u16>, Vec<u16>) = (a.encode_utf16().collect(), b.encode_utf16().collect());
    for (p, q) in x.iter().zip(y.iter()) {
        if p != q {
            return *p as i32 - *q as i32;
        }
    }
    x.len() as i32 - y.len() as i32
}

fn list_method(ctx: &mut Ctx, o: &Value, name: &str, args: Vec<Value>) -> Result<Value> {
    let Value::List(l) = o else { unreachable!() };
    let n = args.len();
    let len = l.borrow().len();
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let index = |v: &Value, max: usize| -> Result<usize> {
        let i = int_arg(v, name)?;
        if i < 0 || i as usize > max {
            return Err(TbelError::runtime(format!(
                "Index {i} out of bounds for length {len}"
            )));
        }
        Ok(i as usize)
    };
    Ok(match (name, n) {
        ("size" | "length", 0) => Value::Int(len as i32),
        ("isEmpty", 0) => Value::Bool(len == 0),
        ("get", 1) => {
            let i = int_arg(&a(0), "get")?;
            if i < 0 || i as usize >= len {
                return Err(TbelError::runtime(format!(
                    "Index {i} out of bounds for length {len}"
                )));
            }
            l.borrow()[i as usize].clone()
        }
        ("add", 1) => {
            let v = a(0);
            ctx.alloc(v.shallow_size() + 4)?;
            l.borrow_mut().push(v);
            Value::Bool(true)
        }
        ("add", 2) => {
            let i = index(&a(0), len)?;
            let v = a(1);
            ctx.alloc(v.shallow_size() + 4)?;
            l.borrow_mut().insert(i, v);
            Value::Null
        }
        // ExecutionArrayList.push(e) is add(e): one element, returns true.
        ("push", 1) => {
            let v = a(0);
            ctx.alloc(v.shallow_size() + 4)?;
            l.borrow_mut().push(v);
            Value::Bool(true)
        }
        // unshift(E...) is void.
        ("unshift", _) => {
            for (k, v) in args.into_iter().enumerate() {
                ctx.alloc(v.shallow_size() + 4)?;
                l.borrow_mut().insert(k, v);
            }
            Value::Null
        }
        ("addAll", 1) | ("addAll", 2) | ("concat", 1) => {
            let (at, src) = if n == 2 {
                (index(&a(0), len)?, a(1))
            } else {
                (len, a(0))
            };
            let items: Vec<Value> = match &src {
                Value::List(s) | Value::Set(s) => s.borrow().clone(),
                Value::Null => {
                    return Err(TbelError::runtime(
                        "Cannot invoke \"Collection.toArray()\" because \"c\" is null",
                    ));
                }
                // The parameter is a Collection, which MVEL cannot convert anything else to.
                _ => return Err(no_method(name, n, "ArrayList")),
            };
            ctx.alloc(items.iter().map(|v| v.shallow_size() + 4).sum())?;
            if name == "concat" {
                let mut v = l.borrow().clone();
                v.extend(items);
                return Ok(Value::list(v));
            }
            let changed = !items.is_empty();
            l.borrow_mut().splice(at..at, items);
            Value::Bool(changed)
        }
        ("set", 2) => {
            let i = int_arg(&a(0), "set")?;
            if i < 0 || i as usize >= len {
                return Err(TbelError::runtime(format!(
                    "Index {i} out of bounds for length {len}"
                )));
            }
            std::mem::replace(&mut l.borrow_mut()[i as usize], a(1))
        }
        // remove(int) wins only for an Integer: for a Long, Byte or Character MVEL's scoring
        // prefers remove(Object), which removes by equality.
        ("remove", 1) => match a(0) {
            Value::Int(_) => {
                let i = int_arg(&a(0), "remove")?;
                if i < 0 || i as usize >= len {
                    return Err(TbelError::runtime(format!(
                        "Index {i} out of bounds for length {len}"
                    )));
                }
                let v = l.borrow_mut().remove(i as usize);
                ctx.free(v.shallow_size() + 4);
                v
            }
            v => {
                let pos = l.borrow().iter().position(|x| x.java_equals(&v));
                match pos {
                    Some(p) => {
                        l.borrow_mut().remove(p);
                        Value::Bool(true)
                    }
                    None => Value::Bool(false),
                }
            }
        },
        ("pop", 0) => l.borrow_mut().pop().unwrap_or(Value::Null),
        // shift() is remove(0): an empty list throws (pop() returns null instead).
        ("shift", 0) => {
            if len == 0 {
                return Err(TbelError::runtime("Index 0 out of bounds for length 0"));
            }
            l.borrow_mut().remove(0)
        }
        ("clear", 0) => {
            l.borrow_mut().clear();
            Value::Null
        }
        ("contains" | "includes", 1) => {
            Value::Bool(l.borrow().iter().any(|x| x.java_equals(&args[0])))
        }
        ("containsAll", 1) => match &args[0] {
            Value::List(o) | Value::Set(o) => {
                let o = o.borrow().clone();
                Value::Bool(
                    o.iter()
                        .all(|y| l.borrow().iter().any(|x| x.java_equals(y))),
                )
            }
            _ => Value::Bool(false),
        },
        // indexOf(o, from) searches slice(from): a negative from counts from the end.
        ("indexOf", 2) => {
            let from = start_index(int_arg(&a(1), name)?, len);
            Value::Int(
                l.borrow()
                    .iter()
                    .skip(from)
                    .position(|x| x.java_equals(&args[0]))
                    .map_or(-1, |p| (p + from) as i32),
            )
        }
        ("indexOf", 1) => Value::Int(
            l.borrow()
                .iter()
                .position(|x| x.java_equals(&args[0]))
                .map_or(-1, |p| p as i32),
        ),
        ("lastIndexOf", 1) => Value::Int(
            l.borrow()
                .iter()
                .rposition(|x| x.java_equals(&args[0]))
                .map_or(-1, |p| p as i32),
        ),
        // sort/toSorted order numerically when every element reads as a double, otherwise
        // by string; sort() and reverse() are void.
        ("sort", 0) | ("toSorted", 0) | ("sort", 1) | ("toSorted", 1) => {
            let asc = n == 0 || crate::convert::to_bool(&a(0));
            let mut v = l.borrow().clone();
            tbel_sort(&mut v, |x| x, asc);
            if name == "toSorted" {
                return Ok(Value::list(v));
            }
            *l.borrow_mut() = v;
            Value::Null
        }
        ("reverse" | "toReversed", 0) => {
            if name == "toReversed" {
                let mut v = l.borrow().clone();
                v.reverse();
                return Ok(Value::list(v));
            }
            l.borrow_mut().reverse();
            Value::Null
        }
        // with(i, v) inserts v at i in a copy (TBEL splices without deleting).
        ("with", 2) => {
            let i = int_arg(&a(0), name)?;
            let at = if i < 0 { i + len as i64 } else { i };
            if at < 0 || at >= len as i64 {
                return Err(TbelError::runtime(format!("Index: {i}, Size: {len}")));
            }
            let mut v = l.borrow().clone();
            v.insert(at as usize, a(1));
            ctx.alloc(v.len() * 4 + 16)?;
            Value::list(v)
        }
        ("toSpliced", _) if n >= 1 => {
            let copy = Value::list(l.borrow().clone());
            ctx.alloc(len * 4 + 16)?;
            list_method(ctx, &copy, "splice", args)?;
            copy
        }
        ("slice", 0..=2) => {
            // slice(start, end) is subList(initStartIndex, initEndIndex): an empty range is
            // fine, a reversed one throws.
            let b = if n >= 1 {
                start_index(int_arg(&a(0), "slice")?, len)
            } else {
                0
            };
            let e = if n >= 2 {
                end_index(int_arg(&a(1), "slice")?, len)
            } else {
                len
            };
            if b > e {
                return Err(TbelError::runtime(format!("fromIndex({b}) > toIndex({e})")));
            }
            let v = l.borrow()[b..e].to_vec();
            ctx.alloc(v.len() * 4 + 16)?;
            Value::list(v)
        }
        ("subList", 2) => {
            let b = int_arg(&a(0), "subList")?;
            let e = int_arg(&a(1), "subList")?;
            // java.util.ArrayList's range checks, in their order.
            if b < 0 {
                return Err(TbelError::runtime(format!("fromIndex = {b}")));
            }
            if e > len as i64 {
                return Err(TbelError::runtime(format!("toIndex = {e}")));
            }
            if b > e {
                return Err(TbelError::runtime(format!("fromIndex({b}) > toIndex({e})")));
            }
            Value::list(l.borrow()[b as usize..e as usize].to_vec())
        }
        ("splice", _) if n >= 1 => {
            let start = int_arg(&a(0), "splice")?;
            let start = if start < 0 {
                (len as i64 + start).max(0) as usize
            } else {
                (start as usize).min(len)
            };
            let count = if n >= 2 {
                (int_arg(&a(1), "splice")?.max(0) as usize).min(len - start)
            } else {
                len - start
            };
            let removed: Vec<Value> = l
                .borrow_mut()
                .splice(start..start + count, args[2.min(n)..].iter().cloned())
                .collect();
            Value::list(removed)
        }
        // join: each element's toString (null fails), then ", ", "[" and "]" are edited out
        // of the result, which flattens nested lists.
        ("join", 0 | 1) => {
            let sep = if n == 1 { str_arg(&a(0)) } else { ",".into() };
            let mut parts = Vec::with_capacity(len);
            for v in l.borrow().iter() {
                if v.is_null() {
                    return Err(TbelError::runtime(
                        "Cannot invoke \"Object.toString()\" because the element is null",
                    ));
                }
                parts.push(v.to_java_string());
            }
            let s = parts.join(&sep).replace(", ", ",").replace(['[', ']'], "");
            new_str(ctx, s)?
        }
        ("fill", 1..=3) => {
            let norm = |v: i64| {
                if v < 0 {
                    (len as i64 + v).max(0) as usize
                } else {
                    (v as usize).min(len)
                }
            };
            let b = if n >= 2 {
                norm(int_arg(&a(1), "fill")?)
            } else {
                0
            };
            let e = if n >= 3 {
                norm(int_arg(&a(2), "fill")?)
            } else {
                len
            };
            for x in l.borrow_mut()[b.min(e)..e].iter_mut() {
                *x = a(0);
            }
            o.clone()
        }
        ("toArray" | "clone", 0) => Value::list(l.borrow().clone()),
        ("toList", 0) => Value::list(l.borrow().clone()),
        _ => return Err(no_method(name, n, "ArrayList")),
    })
}

fn map_method(ctx: &mut Ctx, o: &Value, name: &str, args: Vec<Value>) -> Result<Value> {
    let Value::Map(m) = o else { unreachable!() };
    let n = args.len();
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    Ok(match (name, n) {
        ("size", 0) => Value::Int(m.borrow().len() as i32),
        ("isEmpty", 0) => Value::Bool(m.borrow().is_empty()),
        ("get", 1) => m
            .borrow()
            .get(&*a(0).to_key())
            .cloned()
            .unwrap_or(Value::Null),
        ("getOrDefault", 2) => m.borrow().get(&*a(0).to_key()).cloned().unwrap_or(a(1)),
        // ExecutionHashMap.put(k, null) removes k (and returns what was there).
        ("put", 2) if a(1).is_null() => {
            let old = m.borrow_mut().shift_remove(&*a(0).to_key());
            old.unwrap_or(Value::Null)
        }
        ("put", 2) => {
            let k = a(0).to_key();
            let v = a(1);
            // TBEL's ExecutionHashMap.put removes the key when the value is null.
            if v.is_null() {
                return Ok(m.borrow_mut().shift_remove(&k).unwrap_or(Value::Null));
            }
            ctx.alloc(k.len() + v.shallow_size())?;
            m.borrow_mut().insert(k, v).unwrap_or(Value::Null)
        }
        // Map.replace only touches a key that is present.
        ("replace", 2) => {
            let k = a(0).to_key();
            let mut d = m.borrow_mut();
            match d.get_mut(&*k) {
                Some(slot) => std::mem::replace(slot, a(1)),
                None => Value::Null,
            }
        }
        ("replace", 3) => {
            let k = a(0).to_key();
            let mut d = m.borrow_mut();
            match d.get_mut(&*k) {
                Some(slot) if slot.java_equals(&args[1]) => {
                    *slot = a(2);
                    Value::Bool(true)
                }
                _ => Value::Bool(false),
            }
        }
        ("putIfAbsent", 2) => {
            let k = a(0).to_key();
            let existing = m.borrow().get(&k).cloned();
            match existing {
                Some(v) if !v.is_null() => v,
                _ => {
                    let v = a(1);
                    ctx.alloc(k.len() + v.shallow_size())?;
                    m.borrow_mut().insert(k, v);
                    Value::Null
                }
            }
        }
        ("putAll", 1) => {
            match a(0) {
                Value::Map(src) => {
                    let items: Vec<(Rc<str>, Value)> = src
                        .borrow()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    ctx.alloc(items.iter().map(|(k, v)| k.len() + v.shallow_size()).sum())?;
                    let mut d = m.borrow_mut();
                    for (k, v) in items {
                        d.insert(k, v);
                    }
                }
                Value::Null => {
                    return Err(TbelError::runtime(
                        "Cannot invoke \"java.util.Map.size()\" because \"m\" is null",
                    ));
                }
                v => {
                    return Err(TbelError::runtime(format!(
                        "putAll: expected a Map, got {}",
                        v.type_name()
                    )));
                }
            }
            Value::Null
        }
        ("containsKey", 1) => Value::Bool(m.borrow().contains_key(&*a(0).to_key())),
        ("containsValue", 1) => Value::Bool(m.borrow().values().any(|v| v.java_equals(&args[0]))),
        ("remove", 1) => {
            let v = m.borrow_mut().shift_remove(&*a(0).to_key());
            match v {
                Some(v) => {
                    ctx.free(v.shallow_size());
                    v
                }
                None => Value::Null,
            }
        }
        ("clear", 0) => {
            m.borrow_mut().clear();
            Value::Null
        }
        ("keySet" | "keys", 0) => {
            ctx.alloc(m.borrow().len() * 4)?;
            Value::list(m.borrow().keys().map(|k| Value::Str(k.clone())).collect())
        }
        ("values", 0) => {
            ctx.alloc(m.borrow().len() * 4)?;
            Value::list(m.borrow().values().cloned().collect())
        }
        ("entrySet" | "entries", 0) => {
            ctx.alloc(m.borrow().len() * 8)?;
            Value::list(
                m.borrow()
                    .iter()
                    .map(|(k, v)| Value::Entry(Rc::new((Value::Str(k.clone()), v.clone()))))
                    .collect(),
            )
        }
        // ExecutionHashMap's orderings: by key or by value, numeric when every one reads as
        // a double, else by string (ExecutionArrayList.sort's rule). sortBy*/reverse/invert
        // rearrange in place and are void; the to* forms return a new map.
        ("sortByKey" | "sortByValue" | "toSorted" | "toSortedByKey" | "toSortedByValue", 0 | 1) => {
            let asc = n == 0 || crate::convert::to_bool(&a(0));
            let mut items: Vec<(Value, Value)> = m
                .borrow()
                .iter()
                .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                .collect();
            if name.ends_with("Value") {
                tbel_sort(&mut items, |e| &e.1, asc);
            } else {
                tbel_sort(&mut items, |e| &e.0, asc);
            }
            let sorted = items.into_iter().map(|(k, v)| (k.to_key(), v)).collect();
            if name.starts_with("to") {
                ctx.alloc(m.borrow().len() * 8)?;
                return Ok(Value::map(sorted));
            }
            *m.borrow_mut() = sorted;
            Value::Null
        }
        ("reverse" | "toReversed", 0) => {
            let rev = m
                .borrow()
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if name == "toReversed" {
                ctx.alloc(m.borrow().len() * 8)?;
                return Ok(Value::map(rev));
            }
            *m.borrow_mut() = rev;
            Value::Null
        }
        // invert: value -> key; a String value held by several keys maps to the list of
        // those keys, any other repeated value to its last key (TBEL counts repeats by
        // value.toString() but looks them up by the value, so only Strings are counted).
        ("invert" | "toInverted", 0) => {
            let items: Vec<(Rc<str>, Value)> = m
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut count: std::collections::HashMap<String, usize> = Default::default();
            for (_, v) in &items {
                if v.is_null() {
                    return Err(TbelError::runtime(
                        "Cannot invoke \"Object.toString()\" because \"value\" is null",
                    ));
                }
                if let Value::Str(s) = v {
                    *count.entry(s.to_string()).or_default() += 1;
                }
            }
            let mut out: indexmap::IndexMap<Rc<str>, Value> = Default::default();
            for (k, v) in items {
                let repeated = matches!(&v, Value::Str(s) if count[&**s] > 1);
                if repeated {
                    let slot = out.entry(v.to_key()).or_insert_with(|| Value::list(vec![]));
                    if let Value::List(l) = slot {
                        l.borrow_mut().push(Value::Str(k));
                    }
                } else {
                    out.insert(v.to_key(), Value::Str(k));
                }
            }
            ctx.alloc(out.len() * 8)?;
            if name == "toInverted" {
                return Ok(Value::map(out));
            }
            *m.borrow_mut() = out;
            Value::Null
        }
        // slice([start[, end]]): the entries between two key positions, in a new map.
        ("slice", 0..=2) => {
            let len = m.borrow().len();
            let b = if n >= 1 {
                start_index(int_arg(&a(0), name)?, len)
            } else {
                0
            };
            let e = if n >= 2 {
                end_index(int_arg(&a(1), name)?, len)
            } else {
                len
            };
            if e < b {
                return Err(TbelError::runtime(format!(
                    "Illegal initial capacity: {}",
                    e as i64 - b as i64
                )));
            }
            let out = m
                .borrow()
                .iter()
                .skip(b)
                .take(e - b)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            ctx.alloc((e - b) * 8)?;
            Value::map(out)
        }
        ("clone", 0) => Value::map(m.borrow().clone()),
        _ => return Err(no_method(name, n, "LinkedHashMap")),
    })
}

/// Elements of a collection argument (`addAll`, `removeAll`, ...).
fn coll_items(v: &Value) -> Result<Vec<Value>> {
    match v {
        Value::List(s) | Value::Set(s) => Ok(s.borrow().clone()),
        Value::Null | Value::Undef => Err(TbelError::runtime(
            "Cannot invoke \"java.util.Collection.iterator()\" because \"c\" is null",
        )),
        v => Err(TbelError::runtime(format!(
            "{} cannot be cast to class java.util.Collection",
            v.type_name()
        ))),
    }
}

/// Methods of a `Set` (Java LinkedHashSet semantics: `add` keeps the first occurrence).
fn set_method(
    ctx: &mut Ctx,
    l: &crate::value::ListRef,
    name: &str,
    args: Vec<Value>,
) -> Result<Value> {
    let n = args.len();
    let has = |v: &Value| l.borrow().iter().any(|x| x.java_equals(v));
    Ok(match (name, n) {
        ("size", 0) => Value::Int(l.borrow().len() as i32),
        ("isEmpty", 0) => Value::Bool(l.borrow().is_empty()),
        ("contains", 1) => Value::Bool(has(&args[0])),
        ("add", 1) => {
            let v = args.into_iter().next().unwrap();
            if has(&v) {
                Value::Bool(false)
            } else {
                ctx.alloc(v.shallow_size() + 4)?;
                l.borrow_mut().push(v);
                Value::Bool(true)
            }
        }
        ("addAll", 1) => {
            let mut changed = false;
            for v in coll_items(&args[0])? {
                if !has(&v) {
                    ctx.alloc(v.shallow_size() + 4)?;
                    l.borrow_mut().push(v);
                    changed = true;
                }
            }
            Value::Bool(changed)
        }
        ("remove", 1) => {
            let pos = l.borrow().iter().position(|x| x.java_equals(&args[0]));
            match pos {
                Some(p) => {
                    let v = l.borrow_mut().remove(p);
                    ctx.free(v.shallow_size() + 4);
                    Value::Bool(true)
                }
                None => Value::Bool(false),
            }
        }
        ("removeAll" | "retainAll", 1) => {
            let other = coll_items(&args[0])?;
            let keep_if_in = name == "retainAll";
            let before = l.borrow().len();
            l.borrow_mut()
                .retain(|x| other.iter().any(|y| y.java_equals(x)) == keep_if_in);
            Value::Bool(l.borrow().len() != before)
        }
        ("containsAll", 1) => {
            let other = coll_items(&args[0])?;
            Value::Bool(other.iter().all(has))
        }
        ("clear", 0) => {
            l.borrow_mut().clear();
            Value::Null
        }
        ("clone", 0) => Value::Set(std::rc::Rc::new(std::cell::RefCell::new(
            l.borrow().clone(),
        ))),
        ("toArray", 0) => Value::list(l.borrow().clone()),
        _ => return Err(no_method(name, n, "LinkedHashSet")),
    })
}
