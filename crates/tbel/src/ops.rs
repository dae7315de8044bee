//! Operators with Java's numeric promotion and MVEL's coercions.

use std::cmp::Ordering;

use crate::ast::BinOp;
use crate::error::{Result, TbelError};
use crate::value::{Value, parse_java_double};

/// Numeric rank after Java's binary numeric promotion.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Rank {
    Int,
    Long,
    Float,
    Double,
}

fn rank(v: &Value) -> Option<Rank> {
    Some(match v {
        Value::Byte(_) | Value::Char(_) | Value::Int(_) => Rank::Int,
        Value::Long(_) => Rank::Long,
        Value::Float(_) => Rank::Float,
        Value::Double(_) => Rank::Double,
        _ => return None,
    })
}

/// A numeric string becomes an Int, Long or Double (MVEL coerces them in arithmetic).
fn numeric(v: &Value) -> Option<Value> {
    match v {
        Value::Str(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i32>() {
                Some(Value::Int(i))
            } else if let Ok(l) = t.parse::<i64>() {
                Some(Value::Long(l))
            } else {
                parse_java_double(t).map(Value::Double)
            }
        }
        Value::Bool(_) | Value::Null | Value::Undef => None,
        v if v.is_number() => Some(v.clone()),
        _ => None,
    }
}

fn bad_operands(op: BinOp, a: &Value, b: &Value) -> TbelError {
    let sym = match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Rem => "%",
        BinOp::Shl => "<<",
        BinOp::Shr => ">>",
        BinOp::UShr => ">>>",
        BinOp::BitAnd => "&",
        BinOp::BitOr => "|",
        BinOp::BitXor => "^",
        _ => "comparison",
    };
    TbelError::runtime(format!(
        "could not perform numeric operation on non-numeric types: left-type={}; right-type={}; operation={sym}",
        a.type_name(),
        b.type_name()
    ))
}

pub(crate) fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    match op {
        BinOp::Add => {
            if matches!(a, Value::Str(_)) || matches!(b, Value::Str(_)) {
                let mut s = a.to_java_string();
                b.write_java(&mut s, 0);
                return Ok(Value::string(s));
            }
            arith(op, a, b)
        }
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => arith(op, a, b),
        BinOp::Shl | BinOp::Shr | BinOp::UShr => shift(op, a, b),
        BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor => {
            if let (Value::Bool(x), Value::Bool(y)) = (a, b) {
                return Ok(Value::Bool(match op {
                    BinOp::BitAnd => *x & *y,
                    BinOp::BitOr => *x | *y,
                    _ => *x ^ *y,
                }));
            }
            let (x, y) = (
                numeric(a).ok_or_else(|| bad_operands(op, a, b))?,
                numeric(b).ok_or_else(|| bad_operands(op, a, b))?,
            );
            let r = rank(&x).max(rank(&y)).unwrap();
            if r > Rank::Long {
                return Err(bad_operands(op, a, b));
            }
            let (p, q) = (x.as_i64().unwrap(), y.as_i64().unwrap());
            let v = match op {
                BinOp::BitAnd => p & q,
                BinOp::BitOr => p | q,
                _ => p ^ q,
            };
            Ok(if r == Rank::Int {
                Value::Int(v as i32)
            } else {
                Value::Long(v)
            })
        }
        BinOp::Eq => Ok(Value::Bool(loose_eq(a, b))),
        BinOp::Ne => Ok(Value::Bool(!loose_eq(a, b))),
        BinOp::StrictEq => Ok(Value::Bool(a.java_equals(b))),
        BinOp::StrictNe => Ok(Value::Bool(!a.java_equals(b))),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = compare(a, b).ok_or_else(|| {
                TbelError::runtime(format!(
                    "cannot compare {} and {}",
                    a.type_name(),
                    b.type_name()
                ))
            })?;
            Ok(Value::Bool(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Le => ord != Ordering::Greater,
                BinOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }))
        }
    }
}

fn arith(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    let (x, y) = match (numeric(a), numeric(b)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(bad_operands(op, a, b)),
    };
    let r = rank(&x).max(rank(&y)).unwrap();
    match r {
        Rank::Int => {
            let (p, q) = (x.as_i64().unwrap() as i32, y.as_i64().unwrap() as i32);
            Ok(Value::Int(match op {
                BinOp::Add => p.wrapping_add(q),
                BinOp::Sub => p.wrapping_sub(q),
                BinOp::Mul => p.wrapping_mul(q),
                BinOp::Div => {
                    if q == 0 {
                        return Err(TbelError::runtime("/ by zero"));
                    }
                    p.wrapping_div(q)
                }
                _ => {
                    if q == 0 {
                        return Err(TbelError::runtime("/ by zero"));
                    }
                    p.wrapping_rem(q)
                }
            }))
        }
        Rank::Long => {
            let (p, q) = (x.as_i64().unwrap(), y.as_i64().unwrap());
            Ok(Value::Long(match op {
                BinOp::Add => p.wrapping_add(q),
                BinOp::Sub => p.wrapping_sub(q),
                BinOp::Mul => p.wrapping_mul(q),
                BinOp::Div => {
                    if q == 0 {
                        return Err(TbelError::runtime("/ by zero"));
                    }
                    p.wrapping_div(q)
                }
                _ => {
                    if q == 0 {
                        return Err(TbelError::runtime("/ by zero"));
                    }
                    p.wrapping_rem(q)
                }
            }))
        }
        Rank::Float => {
            let (p, q) = (x.as_f64().unwrap() as f32, y.as_f64().unwrap() as f32);
            Ok(Value::Float(match op {
                BinOp::Add => p + q,
                BinOp::Sub => p - q,
                BinOp::Mul => p * q,
                BinOp::Div => p / q,
                _ => p % q,
            }))
        }
        Rank::Double => {
            let (p, q) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            Ok(Value::Double(match op {
                BinOp::Add => p + q,
                BinOp::Sub => p - q,
                BinOp::Mul => p * q,
                BinOp::Div => p / q,
                _ => p % q,
            }))
        }
    }
}

fn shift(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    let (x, y) = match (numeric(a), numeric(b)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(bad_operands(op, a, b)),
    };
    let n = y.as_i64().ok_or_else(|| bad_operands(op, a, b))?;
    match rank(&x).unwrap() {
        Rank::Int => {
            let v = x.as_i64().unwrap() as i32;
            let n = (n & 31) as u32;
            Ok(Value::Int(match op {
                BinOp::Shl => v.wrapping_shl(n),
                BinOp::Shr => v >> n,
                _ => ((v as u32) >> n) as i32,
            }))
        }
        Rank::Long => {
            let v = x.as_i64().unwrap();
            let n = (n & 63) as u32;
            Ok(Value::Long(match op {
                BinOp::Shl => v.wrapping_shl(n),
                BinOp::Shr => v >> n,
                _ => ((v as u64) >> n) as i64,
            }))
        }
        _ => Err(bad_operands(op, a, b)),
    }
}

/// MVEL's `==`: numbers by value across types, a number and a numeric string by value,
/// otherwise Java equality (strings by content).
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null | Value::Undef, _) | (_, Value::Null | Value::Undef) => {
            a.is_null() && b.is_null()
        }
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Str(s), n) | (n, Value::Str(s))
            if n.is_number() && !matches!(n, Value::Char(_)) =>
        {
            match parse_java_double(s) {
                Some(f) => n.as_f64() == Some(f),
                None => false,
            }
        }
        (Value::Str(s), Value::Bool(x)) | (Value::Bool(x), Value::Str(s)) => {
            s.eq_ignore_ascii_case(if *x { "true" } else { "false" })
        }
        (x, y) if x.is_number() && y.is_number() => match (x, y) {
            (Value::Float(_) | Value::Double(_), _) | (_, Value::Float(_) | Value::Double(_)) => {
                x.as_f64() == y.as_f64()
            }
            _ => x.as_i64() == y.as_i64(),
        },
        _ => a.java_equals(b),
    }
}

/// Ordering for `<`, `sort()`: numbers (and numeric strings against numbers) by value,
/// strings lexicographically (by UTF-16 code units, as Java compares), dates by time.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.encode_utf16().cmp(y.encode_utf16())),
        (Value::Date(x), Value::Date(y)) => Some(x.borrow().cmp(&y.borrow())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => {
            let (x, y) = (numeric(a)?, numeric(b)?);
            match rank(&x).max(rank(&y))? {
                Rank::Int | Rank::Long => Some(x.as_i64()?.cmp(&y.as_i64()?)),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
            }
        }
    }
}
