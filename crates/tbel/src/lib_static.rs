//! Static members of the allowed Java classes and `new`.

use std::rc::Rc;

use crate::error::{Result, TbelError};
use crate::interp::Ctx;
use crate::lib_methods::{int_arg, long_arg, str_arg};
use crate::value::{Value, java_double, java_float, parse_java_double};

fn err(m: impl Into<String>) -> TbelError {
    TbelError::runtime(m)
}

fn nfe(s: &str, radix: u32) -> TbelError {
    if radix == 10 {
        err(format!("For input string: \"{s}\""))
    } else {
        err(format!("For input string: \"{s}\" under radix {radix}"))
    }
}

/// Java `Long.parseLong(s, radix)`.
pub(crate) fn java_parse_long(s: &str, radix: u32) -> Result<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(nfe(s, radix));
    }
    i64::from_str_radix(s, radix).map_err(|_| nfe(s, radix))
}

/// Java `Integer.parseInt(s, radix)`.
pub(crate) fn java_parse_int(s: &str, radix: u32) -> Result<i32> {
    let v = java_parse_long(s, radix)?;
    i32::try_from(v).map_err(|_| nfe(s, radix))
}

pub(crate) fn java_parse_double(s: &str) -> Result<f64> {
    parse_java_double(s).ok_or_else(|| {
        if s.trim().is_empty() {
            err("empty String")
        } else {
            err(format!("For input string: \"{s}\""))
        }
    })
}

pub(crate) fn java_parse_float(s: &str) -> Result<f32> {
    java_parse_double(s).map(|d| {
        // Parse again as f32 for correct single rounding.
        s.trim()
            .trim_end_matches(['f', 'F', 'd', 'D'])
            .parse::<f32>()
            .unwrap_or(d as f32)
    })
}

pub(crate) fn long_to_string_radix(v: i64, radix: u32) -> String {
    if v == 0 {
        return "0".into();
    }
    let neg = v < 0;
    let mut u = (v as i128).unsigned_abs();
    let mut out = Vec::new();
    while u > 0 {
        out.push(std::char::from_digit((u % radix as u128) as u32, radix).unwrap());
        u /= radix as u128;
    }
    if neg {
        out.push('-');
    }
    out.iter().rev().collect()
}

fn num(v: &Value, what: &str) -> Result<f64> {
    v.coerce_f64()
        .ok_or_else(|| err(format!("{what}: expected a number, got {}", v.type_name())))
}

fn string_arg(v: &Value, what: &str) -> Result<Rc<str>> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Null | Value::Undef => Err(err(format!("{what}: Cannot parse null string: null"))),
        v => Ok(v.to_java_string().into()),
    }
}

pub(crate) fn call_static(
    ctx: &mut Ctx,
    class: &str,
    member: &str,
    args: Option<Vec<Value>>,
) -> Result<Value> {
    let Some(args) = args else {
        return static_field(class, member);
    };
    let n = args.len();
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let unknown = || {
        err(format!(
            "unable to resolve method: {class}.{member}() [arglength={n}]"
        ))
    };
    Ok(match (class, member, n) {
        // parseInt/parseLong exist only with a String parameter, so MVEL converts any other
        // argument with String.valueOf first (`Integer.parseInt(5)` is 5, `(5.0)` fails).
        // valueOf also has an int/long overload, which wins for a number.
        ("Integer", "parseInt", 1 | 2) | ("Integer", "valueOf", 2) => {
            let radix = if n == 2 {
                int_arg(&a(1), member)? as u32
            } else {
                10
            };
            let s = string_arg(&a(0), member)?;
            Value::Int(java_parse_int(&s, radix)?)
        }
        ("Integer", "valueOf", 1) if matches!(a(0), Value::Str(_)) || a(0).is_null() => {
            Value::Int(java_parse_int(&string_arg(&a(0), member)?, 10)?)
        }
        ("Integer", "valueOf", 1) => Value::Int(int_arg(&a(0), member)? as i32),
        ("Long", "parseLong", 1 | 2) | ("Long", "valueOf", 2) => {
            let radix = if n == 2 {
                int_arg(&a(1), member)? as u32
            } else {
                10
            };
            let s = string_arg(&a(0), member)?;
            Value::Long(java_parse_long(&s, radix)?)
        }
        ("Long", "valueOf", 1) if matches!(a(0), Value::Str(_)) || a(0).is_null() => {
            Value::Long(java_parse_long(&string_arg(&a(0), member)?, 10)?)
        }
        ("Long", "valueOf", 1) => Value::Long(long_arg(&a(0), member)?),
        ("Short", "parseShort", 1) => {
            let s = string_arg(&a(0), member)?;
            let v = java_parse_int(&s, 10)?;
            Value::Int(
                i16::try_from(v)
                    .map_err(|_| err(format!("Value out of range. Value:\"{s}\" Radix:10")))?
                    as i32,
            )
        }
        ("Byte", "parseByte", 1 | 2) => {
            let radix = if n == 2 {
                int_arg(&a(1), member)? as u32
            } else {
                10
            };
            let s = string_arg(&a(0), member)?;
            let v = java_parse_int(&s, radix)?;
            Value::Byte(
                i8::try_from(v)
                    .map_err(|_| err(format!("Value out of range. Value:\"{s}\" Radix:{radix}")))?,
            )
        }
        // parseDouble/parseFloat take only a String: anything else goes through String.valueOf.
        ("Double", "parseDouble", 1) => {
            Value::Double(java_parse_double(&string_arg(&a(0), member)?)?)
        }
        ("Float", "parseFloat", 1) => Value::Float(java_parse_float(&string_arg(&a(0), member)?)?),
        ("Double", "valueOf", 1) => match a(0) {
            Value::Str(s) => Value::Double(java_parse_double(&s)?),
            v if v.is_number() => Value::Double(v.as_f64().unwrap()),
            v => return Err(err(format!("Cannot parse {}", v.type_name()))),
        },
        ("Float", "valueOf", 1) => match a(0) {
            Value::Str(s) => Value::Float(java_parse_float(&s)?),
            v if v.is_number() => Value::Float(v.as_f64().unwrap() as f32),
            v => return Err(err(format!("Cannot parse {}", v.type_name()))),
        },
        ("Boolean", "parseBoolean" | "valueOf", 1) => Value::Bool(match a(0) {
            Value::Bool(b) => b,
            Value::Str(s) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }),
        ("Integer", "toString", 1) => Value::string(int_arg(&a(0), member)?.to_string()),
        ("Long", "toString", 1) => Value::string(long_arg(&a(0), member)?.to_string()),
        ("Integer" | "Long", "toString", 2) => {
            let radix = int_arg(&a(1), member)?;
            let radix = if (2..=36).contains(&radix) {
                radix as u32
            } else {
                10
            };
            let v = if class == "Integer" {
                int_arg(&a(0), member)?
            } else {
                long_arg(&a(0), member)?
            };
            Value::string(long_to_string_radix(
                if class == "Integer" {
                    v as i32 as i64
                } else {
                    v
                },
                radix,
            ))
        }
        ("Integer", "toHexString" | "toBinaryString" | "toOctalString", 1) => {
            let v = int_arg(&a(0), member)? as i32 as u32;
            Value::string(match member {
                "toHexString" => format!("{v:x}"),
                "toBinaryString" => format!("{v:b}"),
                _ => format!("{v:o}"),
            })
        }
        ("Long", "toHexString" | "toBinaryString" | "toOctalString", 1) => {
            let v = long_arg(&a(0), member)? as u64;
            Value::string(match member {
                "toHexString" => format!("{v:x}"),
                "toBinaryString" => format!("{v:b}"),
                _ => format!("{v:o}"),
            })
        }
        ("Integer", "toUnsignedString", 1) => {
            Value::string((int_arg(&a(0), member)? as i32 as u32).to_string())
        }
        ("Integer", "toUnsignedLong", 1) => {
            Value::Long(int_arg(&a(0), member)? as i32 as u32 as i64)
        }
        ("Byte", "toUnsignedInt", 1) => Value::Int(int_arg(&a(0), member)? as u8 as i32),
        ("Integer", "reverseBytes", 1) => Value::Int((int_arg(&a(0), member)? as i32).swap_bytes()),
        ("Integer", "bitCount", 1) => {
            Value::Int((int_arg(&a(0), member)? as i32).count_ones() as i32)
        }
        ("Integer", "signum", 1) => Value::Int(int_arg(&a(0), member)?.signum() as i32),
        ("Long", "signum", 1) => Value::Int(long_arg(&a(0), member)?.signum() as i32),
        ("Integer", "compare", 2) => {
            Value::Int(int_arg(&a(0), member)?.cmp(&int_arg(&a(1), member)?) as i32)
        }
        ("Long", "compare", 2) => {
            Value::Int(long_arg(&a(0), member)?.cmp(&long_arg(&a(1), member)?) as i32)
        }
        ("Integer", "max" | "min" | "sum", 2) => {
            let (x, y) = (
                int_arg(&a(0), member)? as i32,
                int_arg(&a(1), member)? as i32,
            );
            Value::Int(match member {
                "max" => x.max(y),
                "min" => x.min(y),
                _ => x.wrapping_add(y),
            })
        }
        ("Double", "toString", 1) => Value::string(java_double(num(&a(0), member)?)),
        ("Float", "toString", 1) => Value::string(java_float(num(&a(0), member)? as f32)),
        ("Double", "isNaN", 1) | ("Float", "isNaN", 1) => Value::Bool(num(&a(0), member)?.is_nan()),
        ("Double", "isFinite", 1) => Value::Bool(num(&a(0), member)?.is_finite()),
        ("Double", "isInfinite", 1) => Value::Bool(num(&a(0), member)?.is_infinite()),
        ("Float", "intBitsToFloat", 1) => {
            Value::Float(f32::from_bits(int_arg(&a(0), member)? as i32 as u32))
        }
        ("Float", "floatToIntBits", 1) => {
            Value::Int(((num(&a(0), member)? as f32).to_bits()) as i32)
        }
        ("Double", "longBitsToDouble", 1) => {
            Value::Double(f64::from_bits(long_arg(&a(0), member)? as u64))
        }
        ("Double", "doubleToLongBits" | "doubleToRawLongBits", 1) => {
            Value::Long(num(&a(0), member)?.to_bits() as i64)
        }
        ("Boolean", "toString", 1) => Value::string(a(0).to_java_string()),
        ("String", "valueOf", 1) => Value::string(a(0).to_java_string()),
        ("String", "format", _) if n >= 1 => {
            let f = string_arg(&a(0), member)?;
            let s = java_format(&f, &args[1..])?;
            ctx.check_str(s.len())?;
            Value::string(s)
        }
        ("String", "join", _) if n >= 1 => {
            let sep = str_arg(&a(0));
            let parts: Vec<String> = if n == 2 && matches!(a(1), Value::List(_)) {
                match a(1) {
                    Value::List(l) => l.borrow().iter().map(Value::to_java_string).collect(),
                    _ => unreachable!(),
                }
            } else {
                args[1..].iter().map(Value::to_java_string).collect()
            };
            let s = parts.join(&sep);
            ctx.check_str(s.len())?;
            Value::string(s)
        }
        ("Character", "isDigit", 1) => {
            Value::Bool(char_of(&a(0)).is_some_and(|c| c.is_ascii_digit()))
        }
        ("Character", "isLetter", 1) => {
            Value::Bool(char_of(&a(0)).is_some_and(char::is_alphabetic))
        }
        ("Character", "isLetterOrDigit", 1) => {
            Value::Bool(char_of(&a(0)).is_some_and(char::is_alphanumeric))
        }
        ("Character", "isWhitespace", 1) => {
            Value::Bool(char_of(&a(0)).is_some_and(char::is_whitespace))
        }
        ("Character", "isUpperCase", 1) => {
            Value::Bool(char_of(&a(0)).is_some_and(char::is_uppercase))
        }
        ("Character", "isLowerCase", 1) => {
            Value::Bool(char_of(&a(0)).is_some_and(char::is_lowercase))
        }
        ("Character", "getNumericValue", 1) => Value::Int(
            char_of(&a(0))
                .and_then(|c| c.to_digit(36))
                .map_or(-1, |d| d as i32),
        ),
        ("Character", "toString" | "valueOf", 1) => Value::string(a(0).to_java_string()),
        // java.lang.Character's int-parameter statics: arguments converted as MVEL converts
        // them for an `int` parameter (a double truncates).
        ("Character", "forDigit", 2) => {
            let digit = int_arg(&a(0), member)?;
            let radix = int_arg(&a(1), member)?;
            let c = if (2..=36).contains(&radix) && (0..radix).contains(&digit) {
                std::char::from_digit(digit as u32, radix as u32).unwrap_or('\0')
            } else {
                '\0'
            };
            Value::Char(c)
        }
        ("Character", "digit", 2) => {
            let radix = int_arg(&a(1), member)?;
            let d = char_of(&a(0))
                .filter(|_| (2..=36).contains(&radix))
                .and_then(|c| c.to_digit(radix as u32));
            Value::Int(d.map_or(-1, |d| d as i32))
        }
        ("Character", "toLowerCase", 1) => match char_of(&a(0)) {
            Some(c) => Value::Char(c.to_lowercase().next().unwrap_or(c)),
            None => return Err(err("toLowerCase: expected a char")),
        },
        ("Character", "toUpperCase", 1) => match char_of(&a(0)) {
            Some(c) => Value::Char(c.to_uppercase().next().unwrap_or(c)),
            None => return Err(err("toUpperCase: expected a char")),
        },
        ("Arrays", "copyOfRange", 3) => {
            let Value::List(l) = a(0) else {
                return Err(err("copyOfRange: expected an array"));
            };
            let from = int_arg(&a(1), member)?;
            let to = int_arg(&a(2), member)?;
            let len = l.borrow().len() as i64;
            if from > to {
                return Err(err(format!("{from} > {to}")));
            }
            if from < 0 || from > len {
                return Err(err(format!("Array index out of range: {from}")));
            }
            let zero = l.borrow().first().map(zero_like).unwrap_or(Value::Null);
            let mut v: Vec<Value> = l.borrow()[from as usize..(to.min(len)) as usize].to_vec();
            while (v.len() as i64) < to - from {
                v.push(zero.clone());
            }
            ctx.alloc(v.len() * 4 + 16)?;
            Value::list(v)
        }
        ("Arrays", "copyOf", 2) => {
            let Value::List(l) = a(0) else {
                return Err(err("copyOf: expected an array"));
            };
            let to = int_arg(&a(1), member)?.max(0) as usize;
            let zero = l.borrow().first().map(zero_like).unwrap_or(Value::Null);
            let mut v: Vec<Value> = l.borrow().iter().take(to).cloned().collect();
            v.resize(to, zero);
            ctx.alloc(v.len() * 4 + 16)?;
            Value::list(v)
        }
        ("Arrays", "asList", _) => {
            if n == 1
                && let Value::List(l) = a(0)
            {
                Value::list(l.borrow().clone())
            } else {
                Value::list(args)
            }
        }
        ("Arrays", "toString", 1) => Value::string(a(0).to_java_string()),
        ("Arrays", "fill", 2) => {
            if let Value::List(l) = a(0) {
                for x in l.borrow_mut().iter_mut() {
                    *x = a(1);
                }
            }
            Value::Null
        }
        ("Arrays", "sort", 1) | ("Collections", "sort", 1) => {
            crate::lib_methods::call_method(ctx, &a(0), "sort", vec![])?;
            Value::Null
        }
        ("Collections", "reverse", 1) => {
            crate::lib_methods::call_method(ctx, &a(0), "reverse", vec![])?;
            Value::Null
        }
        ("Collections", "emptyList", 0) => Value::list(vec![]),
        ("Collections", "emptyMap", 0) => Value::map(Default::default()),
        ("JSON", "stringify", 1) => {
            let s = crate::lib_json::stringify(&a(0));
            ctx.check_str(s.len())?;
            Value::string(s)
        }
        ("JSON", "parse", 1) => {
            let s = string_arg(&a(0), member)?;
            ctx.alloc(s.len())?;
            crate::lib_json::parse(&s)?
        }
        ("Date", _, _) => crate::lib_date::static_call(member, &args)?,
        ("Math", _, _) => math(member, &args).ok_or_else(unknown)??,
        _ => return Err(unknown()),
    })
}

fn zero_like(v: &Value) -> Value {
    match v {
        Value::Byte(_) => Value::Byte(0),
        Value::Int(_) => Value::Int(0),
        Value::Long(_) => Value::Long(0),
        Value::Double(_) => Value::Double(0.0),
        Value::Float(_) => Value::Float(0.0),
        Value::Bool(_) => Value::Bool(false),
        _ => Value::Null,
    }
}

fn char_of(v: &Value) -> Option<char> {
    match v {
        Value::Char(c) => Some(*c),
        Value::Str(s) => s.chars().next(),
        Value::Int(i) => char::from_u32(*i as u32),
        _ => None,
    }
}

fn static_field(class: &str, member: &str) -> Result<Value> {
    Ok(match (class, member) {
        ("Integer", "MIN_VALUE") => Value::Int(i32::MIN),
        ("Integer", "MAX_VALUE") => Value::Int(i32::MAX),
        ("Integer", "SIZE") => Value::Int(32),
        ("Integer", "BYTES") => Value::Int(4),
        ("Long", "MIN_VALUE") => Value::Long(i64::MIN),
        ("Long", "MAX_VALUE") => Value::Long(i64::MAX),
        ("Long", "SIZE") => Value::Int(64),
        ("Byte", "MIN_VALUE") => Value::Byte(i8::MIN),
        ("Byte", "MAX_VALUE") => Value::Byte(i8::MAX),
        ("Short", "MIN_VALUE") => Value::Int(i16::MIN as i32),
        ("Short", "MAX_VALUE") => Value::Int(i16::MAX as i32),
        ("Double", "MAX_VALUE") => Value::Double(f64::MAX),
        ("Double", "MIN_VALUE") => Value::Double(f64::from_bits(1)),
        ("Double", "NaN") => Value::Double(f64::NAN),
        ("Double", "POSITIVE_INFINITY") => Value::Double(f64::INFINITY),
        ("Double", "NEGATIVE_INFINITY") => Value::Double(f64::NEG_INFINITY),
        ("Float", "MAX_VALUE") => Value::Float(f32::MAX),
        ("Float", "MIN_VALUE") => Value::Float(f32::from_bits(1)),
        ("Float", "NaN") => Value::Float(f32::NAN),
        ("Math", "PI") => Value::Double(std::f64::consts::PI),
        ("Math", "E") => Value::Double(std::f64::consts::E),
        ("Boolean", "TRUE") => Value::Bool(true),
        ("Boolean", "FALSE") => Value::Bool(false),
        _ => {
            return Err(err(format!(
                "unable to resolve static field: {class}.{member}"
            )));
        }
    })
}

fn math(member: &str, args: &[Value]) -> Option<Result<Value>> {
    let n = args.len();
    // Math's double parameters convert as MVEL's DoubleCH does (strings parsed, "" is 0.0).
    let f = |i: usize| crate::convert::to_double(&args[i], &format!("Math.{member}"));
    let integral = |v: &Value| matches!(v, Value::Int(_) | Value::Byte(_) | Value::Char(_));
    let long = |v: &Value| matches!(v, Value::Long(_));
    Some((|| -> Result<Value> {
        Ok(match (member, n) {
            ("abs", 1) => match &args[0] {
                Value::Int(i) => Value::Int(i.wrapping_abs()),
                Value::Byte(b) => Value::Int((*b as i32).abs()),
                Value::Long(l) => Value::Long(l.wrapping_abs()),
                Value::Float(x) => Value::Float(x.abs()),
                _ => Value::Double(f(0)?.abs()),
            },
            ("max" | "min", 2) => {
                let (x, y) = (&args[0], &args[1]);
                let mx = member == "max";
                if integral(x) && integral(y) {
                    let (p, q) = (x.as_i64().unwrap() as i32, y.as_i64().unwrap() as i32);
                    Value::Int(if mx { p.max(q) } else { p.min(q) })
                } else if (integral(x) || long(x)) && (integral(y) || long(y)) {
                    let (p, q) = (x.as_i64().unwrap(), y.as_i64().unwrap());
                    Value::Long(if mx { p.max(q) } else { p.min(q) })
                } else {
                    let (p, q) = (f(0)?, f(1)?);
                    Value::Double(if p.is_nan() || q.is_nan() {
                        f64::NAN
                    } else if mx {
                        p.max(q)
                    } else {
                        p.min(q)
                    })
                }
            }
            ("pow", 2) => Value::Double(f(0)?.powf(f(1)?)),
            ("sqrt", 1) => Value::Double(f(0)?.sqrt()),
            ("cbrt", 1) => Value::Double(f(0)?.cbrt()),
            // A long argument picks round(float) (long widens to float in MVEL's scoring,
            // only converts to double), so the result is an int, saturated.
            ("round", 1) => match &args[0] {
                Value::Float(x) => Value::Int((x + 0.5).floor() as i32),
                Value::Long(l) => Value::Int(((*l as f32) + 0.5).floor() as i32),
                _ => {
                    let x = f(0)?;
                    Value::Long(if x.is_nan() {
                        0
                    } else {
                        (x + 0.5).floor() as i64
                    })
                }
            },
            ("floor", 1) => Value::Double(f(0)?.floor()),
            ("ceil", 1) => Value::Double(f(0)?.ceil()),
            ("rint", 1) => Value::Double(f(0)?.round_ties_even()),
            ("log", 1) => Value::Double(f(0)?.ln()),
            ("log10", 1) => Value::Double(f(0)?.log10()),
            ("log1p", 1) => Value::Double(f(0)?.ln_1p()),
            ("exp", 1) => Value::Double(f(0)?.exp()),
            ("expm1", 1) => Value::Double(f(0)?.exp_m1()),
            ("sin", 1) => Value::Double(f(0)?.sin()),
            ("cos", 1) => Value::Double(f(0)?.cos()),
            ("tan", 1) => Value::Double(f(0)?.tan()),
            ("asin", 1) => Value::Double(f(0)?.asin()),
            ("acos", 1) => Value::Double(f(0)?.acos()),
            ("atan", 1) => Value::Double(f(0)?.atan()),
            ("atan2", 2) => Value::Double(f(0)?.atan2(f(1)?)),
            ("sinh", 1) => Value::Double(f(0)?.sinh()),
            ("cosh", 1) => Value::Double(f(0)?.cosh()),
            ("tanh", 1) => Value::Double(f(0)?.tanh()),
            ("hypot", 2) => Value::Double(f(0)?.hypot(f(1)?)),
            ("toRadians", 1) => Value::Double(f(0)?.to_radians()),
            ("toDegrees", 1) => Value::Double(f(0)?.to_degrees()),
            ("signum", 1) => {
                let x = f(0)?;
                Value::Double(if x == 0.0 || x.is_nan() {
                    x
                } else {
                    x.signum()
                })
            }
            ("random", 0) => Value::Double(pseudo_random()),
            ("floorDiv", 2) | ("floorMod", 2) => {
                let (x, y) = (args[0].as_i64().unwrap_or(0), args[1].as_i64().unwrap_or(0));
                if y == 0 {
                    return Err(err("/ by zero"));
                }
                let r = if member == "floorDiv" {
                    x.div_euclid(y)
                        - if (x.rem_euclid(y) != 0) && y < 0 {
                            1
                        } else {
                            0
                        }
                } else {
                    ((x % y) + y) % y
                };
                if integral(&args[0]) && integral(&args[1]) {
                    Value::Int(r as i32)
                } else {
                    Value::Long(r)
                }
            }
            _ => {
                return Err(err(format!(
                    "unable to resolve method: Math.{member}() [arglength={n}]"
                )));
            }
        })
    })())
}

fn pseudo_random() -> f64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

pub(crate) fn new_object(ctx: &mut Ctx, class: &str, args: Vec<Value>) -> Result<Value> {
    Ok(match class {
        "Date" | "TbDate" => crate::lib_date::construct(&args)?,
        "ArrayList" | "LinkedList" | "HashSet" | "LinkedHashSet" | "ExecutionArrayList" => {
            match args.first() {
                Some(Value::List(l)) => Value::list(l.borrow().clone()),
                _ => Value::list(vec![]),
            }
        }
        "HashMap" | "LinkedHashMap" | "TreeMap" | "ExecutionHashMap" => match args.first() {
            Some(Value::Map(m)) => Value::map(m.borrow().clone()),
            _ => Value::map(Default::default()),
        },
        "String" => match args.first() {
            None => Value::str(""),
            Some(Value::List(_)) => {
                let b = crate::lib_helpers::bytes_lenient(&args[0])?;
                let s = String::from_utf8_lossy(&b).into_owned();
                ctx.check_str(s.len())?;
                Value::string(s)
            }
            Some(v) => Value::string(v.to_java_string()),
        },
        "Integer" => Value::Int(int_arg(args.first().unwrap_or(&Value::Int(0)), "Integer")? as i32),
        "Long" => Value::Long(long_arg(args.first().unwrap_or(&Value::Int(0)), "Long")?),
        "Double" => Value::Double(num(args.first().unwrap_or(&Value::Int(0)), "Double")?),
        _ => return Err(err(format!("could not resolve class: {class}"))),
    })
}

/// A subset of `java.util.Formatter`: %s %d %x %X %o %f %e %b %c %n %% with flags, width, precision.
pub(crate) fn java_format(fmt: &str, args: &[Value]) -> Result<String> {
    let mut out = String::new();
    let cs: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut next = 0;
    while i < cs.len() {
        let c = cs[i];
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let start = i;
        // argument index
        let mut explicit = None;
        let mut j = i;
        while j < cs.len() && cs[j].is_ascii_digit() {
            j += 1;
        }
        if j < cs.len() && cs[j] == '$' && j > i {
            explicit = Some(
                cs[i..j]
                    .iter()
                    .collect::<String>()
                    .parse::<usize>()
                    .unwrap_or(1)
                    - 1,
            );
            i = j + 1;
        }
        let mut flags = String::new();
        while i < cs.len() && "-#+ 0,(".contains(cs[i]) {
            flags.push(cs[i]);
            i += 1;
        }
        let mut width = String::new();
        while i < cs.len() && cs[i].is_ascii_digit() {
            width.push(cs[i]);
            i += 1;
        }
        let mut prec = None;
        if i < cs.len() && cs[i] == '.' {
            i += 1;
            let mut p = String::new();
            while i < cs.len() && cs[i].is_ascii_digit() {
                p.push(cs[i]);
                i += 1;
            }
            prec = Some(p.parse::<usize>().unwrap_or(0));
        }
        let Some(&conv) = cs.get(i) else {
            return Err(err(format!(
                "UnknownFormatConversionException: Conversion = '%{}'",
                cs[start..].iter().collect::<String>()
            )));
        };
        i += 1;
        if conv == '%' {
            out.push('%');
            continue;
        }
        if conv == 'n' {
            out.push('\n');
            continue;
        }
        let idx = explicit.unwrap_or_else(|| {
            next += 1;
            next - 1
        });
        let arg = args.get(idx).ok_or_else(|| {
            err(format!(
                "MissingFormatArgumentException: Format specifier '%{conv}'"
            ))
        })?;
        let width: usize = width.parse().unwrap_or(0);
        let left = flags.contains('-');
        let zero = flags.contains('0');
        let mut body = match conv {
            's' | 'S' => {
                let mut s = arg.to_java_string();
                if let Some(p) = prec {
                    s = s.chars().take(p).collect();
                }
                if conv == 'S' { s.to_uppercase() } else { s }
            }
            'b' | 'B' => match arg {
                Value::Null => "false".into(),
                Value::Bool(b) => b.to_string(),
                _ => "true".into(),
            },
            'c' => match arg {
                Value::Char(c) => c.to_string(),
                v => v
                    .as_i64()
                    .and_then(|i| char::from_u32(i as u32))
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| v.to_java_string()),
            },
            'd' => {
                let v = match arg {
                    Value::Int(_) | Value::Long(_) | Value::Byte(_) => arg.as_i64().unwrap(),
                    v => {
                        return Err(err(format!(
                            "IllegalFormatConversionException: d != java.lang.{}",
                            v.type_name()
                        )));
                    }
                };
                let mut s = v.unsigned_abs().to_string();
                if flags.contains(',') {
                    s = group(&s);
                }
                if v < 0 {
                    s.insert(0, '-');
                } else if flags.contains('+') {
                    s.insert(0, '+');
                } else if flags.contains(' ') {
                    s.insert(0, ' ');
                }
                s
            }
            'x' | 'X' | 'o' => {
                let s = match arg {
                    Value::Int(v) => {
                        if conv == 'o' {
                            format!("{:o}", *v as u32)
                        } else {
                            format!("{:x}", *v as u32)
                        }
                    }
                    Value::Byte(v) => {
                        if conv == 'o' {
                            format!("{:o}", *v as u8)
                        } else {
                            format!("{:x}", *v as u8)
                        }
                    }
                    Value::Long(v) => {
                        if conv == 'o' {
                            format!("{:o}", *v as u64)
                        } else {
                            format!("{:x}", *v as u64)
                        }
                    }
                    v => {
                        return Err(err(format!(
                            "IllegalFormatConversionException: {conv} != java.lang.{}",
                            v.type_name()
                        )));
                    }
                };
                let s = if flags.contains('#') {
                    format!("{}{s}", if conv == 'o' { "0" } else { "0x" })
                } else {
                    s
                };
                if conv == 'X' { s.to_uppercase() } else { s }
            }
            'f' | 'e' | 'E' => {
                let v = match arg {
                    Value::Double(_) | Value::Float(_) => arg.as_f64().unwrap(),
                    v => {
                        return Err(err(format!(
                            "IllegalFormatConversionException: {conv} != java.lang.{}",
                            v.type_name()
                        )));
                    }
                };
                let v = if let Value::Float(x) = arg {
                    format!("{x}").parse().unwrap_or(v)
                } else {
                    v
                };
                let p = prec.unwrap_or(6);
                let mut s = if !v.is_finite() {
                    java_double(v)
                } else if conv == 'f' {
                    crate::lib_helpers::to_fixed_string(v, p as i32)
                } else {
                    let t = format!("{:.*e}", p, v);
                    let (m, e) = t.split_once('e').unwrap();
                    let e: i32 = e.parse().unwrap();
                    let t = format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
                    if conv == 'E' { t.to_uppercase() } else { t }
                };
                if conv == 'f' && flags.contains(',') {
                    let (ip, fp) = s.split_once('.').map_or((s.clone(), None), |(a, b)| {
                        (a.to_string(), Some(b.to_string()))
                    });
                    let neg = ip.starts_with('-');
                    let g = group(ip.trim_start_matches('-'));
                    s = format!(
                        "{}{g}{}",
                        if neg { "-" } else { "" },
                        fp.map_or(String::new(), |f| format!(".{f}"))
                    );
                }
                if v >= 0.0 && flags.contains('+') {
                    s.insert(0, '+');
                }
                s
            }
            other => {
                return Err(err(format!(
                    "UnknownFormatConversionException: Conversion = '{other}'"
                )));
            }
        };
        let len = body.chars().count();
        if len < width {
            let pad = width - len;
            if left {
                body.extend(std::iter::repeat_n(' ', pad));
            } else if zero && "dxXofeE".contains(conv) {
                let sign = body.starts_with(['-', '+']);
                let at = if sign {
                    1
                } else if body.starts_with("0x") {
                    2
                } else {
                    0
                };
                body.insert_str(at, &"0".repeat(pad));
            } else {
                body.insert_str(0, &" ".repeat(pad));
            }
        }
        out.push_str(&body);
    }
    Ok(out)
}

fn group(digits: &str) -> String {
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
