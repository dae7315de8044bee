//! Methods and properties on values: Java's String, List, Map, Map.Entry and numbers,
//! plus the JavaScript-style list methods TBEL adds.

use std::rc::Rc;

use crate::error::{Result, TbelError};
use crate::interp::Ctx;
use crate::jregex;
use crate::ops;
use crate::value::Value;

pub(crate) fn int_arg(v: &Value, what: &str) -> Result<i64> {
    match v {
        Value::Str(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| TbelError::runtime(format!("{what}: expected a number, got \"{s}\""))),
        v => v.as_i64().ok_or_else(|| {
            TbelError::runtime(format!("{what}: expected a number, got {}", v.type_name()))
        }),
    }
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
            Value::Int(index_of(s, &str_arg(&a(0)), from, false) as i32)
        }
        ("lastIndexOf", 1 | 2) => {
            let from = if n == 2 {
                int_arg(&a(1), "lastIndexOf")?
            } else {
                i32::MAX as i64
            };
            Value::Int(index_of(s, &str_arg(&a(0)), from, true) as i32)
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
        ("push", _) => {
            for v in args {
                ctx.alloc(v.shallow_size() + 4)?;
                l.borrow_mut().push(v);
            }
            Value::Int(l.borrow().len() as i32)
        }
        ("unshift", _) => {
            for (k, v) in args.into_iter().enumerate() {
                ctx.alloc(v.shallow_size() + 4)?;
                l.borrow_mut().insert(k, v);
            }
            Value::Int(l.borrow().len() as i32)
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
                v => vec![v.clone()],
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
        ("remove", 1) => match a(0) {
            Value::Int(_) | Value::Long(_) | Value::Byte(_) => {
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
        ("shift", 0) => {
            if len == 0 {
                Value::Null
            } else {
                l.borrow_mut().remove(0)
            }
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
        ("sort", 0) | ("toSorted", 0) | ("sort", 1) | ("toSorted", 1) => {
            let asc = !matches!(args.first(), Some(Value::Bool(false)));
            let mut v = l.borrow().clone();
            let mut err = None;
            v.sort_by(|x, y| {
                let c = ops::compare(x, y).unwrap_or_else(|| {
                    err.get_or_insert_with(|| {
                        TbelError::runtime(format!(
                            "cannot compare {} and {}",
                            x.type_name(),
                            y.type_name()
                        ))
                    });
                    std::cmp::Ordering::Equal
                });
                if asc { c } else { c.reverse() }
            });
            if let Some(e) = err {
                return Err(e);
            }
            if name == "toSorted" {
                return Ok(Value::list(v));
            }
            *l.borrow_mut() = v;
            if name == "sort" {
                o.clone()
            } else {
                Value::Null
            }
        }
        ("reverse" | "toReversed", 0) => {
            if name == "toReversed" {
                let mut v = l.borrow().clone();
                v.reverse();
                return Ok(Value::list(v));
            }
            l.borrow_mut().reverse();
            o.clone()
        }
        ("slice", 0..=2) => {
            let norm = |v: i64| {
                if v < 0 {
                    (len as i64 + v).max(0) as usize
                } else {
                    (v as usize).min(len)
                }
            };
            let b = if n >= 1 {
                norm(int_arg(&a(0), "slice")?)
            } else {
                0
            };
            let e = if n >= 2 {
                norm(int_arg(&a(1), "slice")?)
            } else {
                len
            };
            let v = if b < e {
                l.borrow()[b..e].to_vec()
            } else {
                vec![]
            };
            ctx.alloc(v.len() * 4 + 16)?;
            Value::list(v)
        }
        ("subList", 2) => {
            let b = int_arg(&a(0), "subList")?;
            let e = int_arg(&a(1), "subList")?;
            if b < 0 || e as usize > len || b > e {
                return Err(TbelError::runtime(format!(
                    "fromIndex: {b}, toIndex: {e}, size: {len}"
                )));
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
        ("join", 0 | 1) => {
            let sep = if n == 1 { str_arg(&a(0)) } else { ",".into() };
            let s = l
                .borrow()
                .iter()
                .map(|v| {
                    if v.is_null() {
                        String::new()
                    } else {
                        v.to_java_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(&sep);
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
        ("sortByKey", 0 | 1) | ("sortByValue", 0 | 1) => {
            let asc = !matches!(args.first(), Some(Value::Bool(false)));
            let by_key = name == "sortByKey";
            let mut items: Vec<(Rc<str>, Value)> = m
                .borrow()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            items.sort_by(|x, y| {
                let c = if by_key {
                    ops::compare(&Value::Str(x.0.clone()), &Value::Str(y.0.clone()))
                } else {
                    ops::compare(&x.1, &y.1)
                }
                .unwrap_or(std::cmp::Ordering::Equal);
                if asc { c } else { c.reverse() }
            });
            *m.borrow_mut() = items.into_iter().collect();
            Value::Null
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
