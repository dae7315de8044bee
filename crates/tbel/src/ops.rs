//! Operators as MVEL's MathProcessor applies them (TBEL is compiled MVEL 2).
//!
//! MathProcessor picks a path from the operands' run-time type codes (DataTypes):
//! 1. both of one type (or integer/boolean operands of a bitwise operator): arithmetic of
//!    that type (doOperationsSameType);
//! 2. both numeric wrappers, or numeric-looking operands of a non-`+` operator: arithmetic
//!    in `double`, narrowed to the "widest" operand type (doPrimWrapperArithmetic);
//! 3. a Boolean against another type (not `+`): both converted to Boolean;
//! 4. a String against a Character: the Character as a String;
//! 5. anything else: `+` concatenates (or appends to a Collection), `==` is `equals`,
//!    `<` is `compareTo`, `-` `*` `/` `%` give null (doOperationNonNumeric).
//!
//! One deliberate exception: `Int op Int` for `+ - * /` uses Java `int` arithmetic (wrapping,
//! truncating division), which is what MVEL's compiler emits (IntAdd/IntSub/IntMult/IntDiv)
//! when both operands are statically `Integer` (int literals, variables assigned from them).
//! MathProcessor's own run-time path would instead widen an overflow to Long and divide to
//! a Double; telling the two apart needs static types from the parser (see BinOp users).

use std::cmp::Ordering;

use crate::ast::BinOp;
use crate::error::{Result, TbelError};
use crate::value::{Value, parse_java_double};

/// MVEL's DataTypes code of a run-time value (ParseTools.__resolveType of its class).
/// Codes of 99 and above are the numeric wrappers (and Character, the highest).
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Ty {
    Object = 0,
    Str = 1,
    Bool = 15,
    Collection = 50,
    Byte = 99,
    Int = 106,
    Long = 107,
    Float = 108,
    Double = 109,
    Char = 112,
}

fn ty(v: &Value) -> Ty {
    match v {
        Value::Str(_) => Ty::Str,
        Value::Bool(_) => Ty::Bool,
        Value::List(_) | Value::Set(_) => Ty::Collection,
        Value::Byte(_) => Ty::Byte,
        Value::Int(_) => Ty::Int,
        Value::Long(_) => Ty::Long,
        Value::Float(_) => Ty::Float,
        Value::Double(_) => Ty::Double,
        Value::Char(_) => Ty::Char,
        _ => Ty::Object,
    }
}

fn is_bitwise(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor | BinOp::Shl | BinOp::Shr | BinOp::UShr
    )
}

fn is_relational(op: BinOp) -> bool {
    matches!(op, BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge)
}

/// ParseTools.isNumber(String): digits with an optional leading `-` and at most one `.`
/// (no exponent, sign `+` or whitespace).
fn is_numeric_str(s: &str) -> bool {
    let body = if s.len() > 1 {
        s.strip_prefix('-').unwrap_or(s)
    } else {
        s
    };
    let mut dot = false;
    for c in body.chars() {
        if c == '.' && !dot {
            dot = true;
        } else if !c.is_ascii_digit() {
            return false;
        }
    }
    !s.is_empty()
}

/// ParseTools.isNumber(Object): numeric strings, Integer, Long, Float, Double, Character
/// (not Byte, not Boolean).
fn is_number(v: &Value) -> bool {
    match v {
        Value::Str(s) => is_numeric_str(s),
        Value::Int(_) | Value::Long(_) | Value::Float(_) | Value::Double(_) | Value::Char(_) => {
            true
        }
        _ => false,
    }
}

/// Java class name, as MVEL's messages print it.
fn java_class(v: &Value) -> &'static str {
    match v {
        Value::Null | Value::Undef => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::Byte(_) => "java.lang.Byte",
        Value::Char(_) => "java.lang.Character",
        Value::Int(_) => "java.lang.Integer",
        Value::Long(_) => "java.lang.Long",
        Value::Float(_) => "java.lang.Float",
        Value::Double(_) => "java.lang.Double",
        Value::Str(_) => "java.lang.String",
        Value::List(_) => "java.util.ArrayList",
        Value::Set(_) => "java.util.LinkedHashSet",
        Value::Map(_) => "java.util.LinkedHashMap",
        Value::Entry(_) => "java.util.Map$Entry",
        Value::Date(_) => "org.thingsboard.script.api.tbel.TbDate",
    }
}

fn op_symbol(op: BinOp) -> &'static str {
    match op {
        BinOp::Add | BinOp::IntAdd => "+",
        BinOp::Sub | BinOp::IntSub => "-",
        BinOp::Mul | BinOp::IntMul => "*",
        BinOp::Div | BinOp::IntDiv => "/",
        BinOp::Rem => "%",
        BinOp::Shl => "<<",
        BinOp::Shr => ">>",
        BinOp::UShr => ">>>",
        BinOp::BitAnd => "&",
        BinOp::BitOr => "|",
        BinOp::BitXor => "^",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::StrictEq => "===",
        BinOp::StrictNe => "!==",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
    }
}

fn bad_operands(op: BinOp, a: &Value, b: &Value) -> TbelError {
    TbelError::runtime(format!(
        "could not perform numeric operation on non-numeric types: left-type={}; right-type={}; operation={}",
        a.type_name(),
        b.type_name(),
        op_symbol(op)
    ))
}

fn class_cast(v: &Value, to: &str) -> TbelError {
    TbelError::runtime(format!(
        "class {} cannot be cast to class {to}",
        java_class(v)
    ))
}

fn div_zero() -> TbelError {
    TbelError::runtime("/ by zero")
}

pub(crate) fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    match op {
        BinOp::StrictEq => return Ok(Value::Bool(a.java_equals(b))),
        BinOp::StrictNe => return Ok(Value::Bool(!a.java_equals(b))),
        BinOp::IntAdd | BinOp::IntSub | BinOp::IntMul | BinOp::IntDiv => {
            return match (a, b) {
                (Value::Int(x), Value::Int(y)) => java_int(op, *x, *y),
                // MVEL de-optimises a node whose operands turn out not to be Integers.
                _ => binary(generic(op), a, b),
            };
        }
        _ => {}
    }
    let (ta, tb) = (ty(a), ty(b));
    let int_or_bool = |t: Ty| matches!(t, Ty::Byte | Ty::Int | Ty::Long | Ty::Bool);
    // Codes above 49 (COLLECTION and the wrappers) or `==`/`!=`: same-type arithmetic.
    if ((ta >= Ty::Collection || matches!(op, BinOp::Eq | BinOp::Ne))
        && ta == tb)
        || (is_bitwise(op) && int_or_bool(ta) && int_or_bool(tb))
    {
        if is_bitwise(op) && int_or_bool(ta) && int_or_bool(tb) {
            return bitwise(op, a, b);
        }
        return same_type(op, a, b);
    }
    if !b.is_null() && numeric_operation(ta, a, op, tb, b) {
        return prim_wrapper(op, number(a)?, number(b)?, ta.max(tb));
    }
    if op != BinOp::Add && (ta == Ty::Bool || tb == Ty::Bool) && ta != tb {
        return non_numeric(op, &to_boolean(a)?, &to_boolean(b)?);
    }
    // MVEL-56: a Character against a String compares (and concatenates) as Strings.
    if (ta == Ty::Str || tb == Ty::Str) && (ta == Ty::Char || tb == Ty::Char) {
        let (x, y) = if ta == Ty::Str {
            (a.clone(), Value::string(b.to_java_string()))
        } else {
            (Value::string(a.to_java_string()), b.clone())
        };
        return non_numeric(op, &x, &y);
    }
    non_numeric(op, a, b)
}

/// MathProcessor.isNumericOperation.
fn numeric_operation(ta: Ty, a: &Value, op: BinOp, tb: Ty, b: &Value) -> bool {
    (ta >= Ty::Byte && tb >= Ty::Byte)
        || (op != BinOp::Add
            && (ta >= Ty::Byte || tb >= Ty::Byte || !is_relational(op))
            && is_number(a)
            && is_number(b))
}

/// MathProcessor.getNumber: Characters and Strings go through Double.parseDouble.
fn number(v: &Value) -> Result<f64> {
    match v {
        Value::Char(_) | Value::Str(_) => {
            let s = v.to_java_string();
            parse_java_double(&s)
                .ok_or_else(|| TbelError::runtime(format!("For input string: \"{s}\"")))
        }
        Value::Bool(b) => Ok(*b as i32 as f64),
        v => Ok(v.as_f64().unwrap_or(0.0)),
    }
}

/// MathProcessor.doPrimWrapperArithmetic: computed in double, then narrowed to the higher
/// type code of the two operands (toType). Character (112) has no narrowing: MVEL throws.
fn prim_wrapper(op: BinOp, x: f64, y: f64, target: Ty) -> Result<Value> {
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        BinOp::Lt => return Ok(Value::Bool(x < y)),
        BinOp::Le => return Ok(Value::Bool(x <= y)),
        BinOp::Gt => return Ok(Value::Bool(x > y)),
        BinOp::Ge => return Ok(Value::Bool(x >= y)),
        BinOp::Eq => return Ok(Value::Bool(x == y)),
        BinOp::Ne => return Ok(Value::Bool(x != y)),
        // No bitwise case there: the result is null.
        _ => return Ok(Value::Null),
    };
    Ok(match target {
        Ty::Double | Ty::Str => Value::Double(r),
        Ty::Float => Value::Float(r as f32),
        Ty::Int => Value::Int(r as i32),
        Ty::Long => Value::Long(r as i64),
        Ty::Byte => Value::Byte(r as i32 as i8),
        _ => {
            return Err(TbelError::runtime(format!(
                "internal error: {}",
                target as i32
            )));
        }
    })
}

/// BooleanCH: strings are true unless "false"/"no"/"off" (any case), "0" or empty;
/// numbers are true when greater than zero.
pub(crate) fn to_boolean(v: &Value) -> Result<Value> {
    Ok(match v {
        Value::Null | Value::Undef | Value::Bool(_) => v.clone(),
        Value::Str(s) => Value::Bool(
            !(s.eq_ignore_ascii_case("false")
                || s.eq_ignore_ascii_case("no")
                || s.eq_ignore_ascii_case("off")
                || s.as_ref() == "0"
                || s.is_empty()),
        ),
        Value::Int(_) | Value::Long(_) | Value::Float(_) | Value::Double(_) => {
            Value::Bool(v.as_f64().is_some_and(|f| f > 0.0))
        }
        v => {
            return Err(TbelError::runtime(format!(
                "cannot convert type: {} to: java.lang.Boolean",
                java_class(v)
            )));
        }
    })
}

/// MathProcessor.doOperationsSameType (non-bitwise operators).
fn same_type(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    let cmp = |o: Option<Ordering>| -> Value {
        Value::Bool(match (op, o) {
            (_, None) => op == BinOp::Ne,
            (BinOp::Lt, Some(o)) => o == Ordering::Less,
            (BinOp::Le, Some(o)) => o != Ordering::Greater,
            (BinOp::Gt, Some(o)) => o == Ordering::Greater,
            (BinOp::Ge, Some(o)) => o != Ordering::Less,
            (BinOp::Eq, Some(o)) => o == Ordering::Equal,
            (_, Some(o)) => o != Ordering::Equal,
        })
    };
    if is_bitwise(op) && matches!(a, Value::Double(_) | Value::Float(_)) {
        return Err(TbelError::runtime(
            "bitwise operation on a non-fixed-point number.",
        ));
    }
    Ok(match (a, b) {
        (Value::List(_) | Value::Set(_), Value::List(y) | Value::Set(y)) => match op {
            BinOp::Add => {
                let mut l = elements(a);
                l.extend(y.borrow().iter().cloned());
                Value::list(l)
            }
            BinOp::Eq => Value::Bool(a.java_equals(b)),
            BinOp::Ne => Value::Bool(!a.java_equals(b)),
            _ => {
                return Err(TbelError::runtime("illegal operation on Collection type"));
            }
        },
        // Integers known only at run time (doOperationsSameType): `+ - *` widen to a Long when
        // the result leaves the int range, `/` divides as doubles (`x / 10` with x = 226 is
        // 22.6), `%` stays an int.
        (Value::Int(x), Value::Int(y)) => match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul => {
                let (x, y) = (*x as i64, *y as i64);
                let r = match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    _ => x * y,
                };
                match i32::try_from(r) {
                    Ok(r) => Value::Int(r),
                    Err(_) => Value::Long(r),
                }
            }
            BinOp::Div => Value::Double(*x as f64 / *y as f64),
            BinOp::Rem if *y == 0 => return Err(div_zero()),
            BinOp::Rem => Value::Int(x.wrapping_rem(*y)),
            _ => cmp(Some(x.cmp(y))),
        },
        // Bytes add, subtract, multiply and take remainders as ints, but divide as doubles.
        (Value::Byte(x), Value::Byte(y)) => {
            let (x, y) = (*x as i32, *y as i32);
            match op {
                BinOp::Add => Value::Int(x + y),
                BinOp::Sub => Value::Int(x - y),
                BinOp::Mul => Value::Int(x * y),
                BinOp::Div => Value::Double(x as f64 / y as f64),
                BinOp::Rem if y == 0 => return Err(div_zero()),
                BinOp::Rem => Value::Int(x % y),
                _ => cmp(Some(x.cmp(&y))),
            }
        }
        // Long / Long is a double division in MathProcessor.
        (Value::Long(x), Value::Long(y)) => match op {
            BinOp::Add => Value::Long(x.wrapping_add(*y)),
            BinOp::Sub => Value::Long(x.wrapping_sub(*y)),
            BinOp::Mul => Value::Long(x.wrapping_mul(*y)),
            BinOp::Div => Value::Double(*x as f64 / *y as f64),
            BinOp::Rem if *y == 0 => return Err(div_zero()),
            BinOp::Rem => Value::Long(x.wrapping_rem(*y)),
            _ => cmp(Some(x.cmp(y))),
        },
        (Value::Double(x), Value::Double(y)) => match op {
            BinOp::Add => Value::Double(x + y),
            BinOp::Sub => Value::Double(x - y),
            BinOp::Mul => Value::Double(x * y),
            BinOp::Div => Value::Double(x / y),
            BinOp::Rem => Value::Double(x % y),
            _ => cmp(x.partial_cmp(y)),
        },
        // Float / Float is a double division too.
        (Value::Float(x), Value::Float(y)) => match op {
            BinOp::Add => Value::Float(x + y),
            BinOp::Sub => Value::Float(x - y),
            BinOp::Mul => Value::Float(x * y),
            BinOp::Div => Value::Double(*x as f64 / *y as f64),
            BinOp::Rem => Value::Float(x % y),
            _ => cmp(x.partial_cmp(y)),
        },
        // Booleans compared for (in)equality as 1/0.
        (Value::Bool(x), Value::Bool(y)) => cmp(Some(x.cmp(y))),
        // Character, String, Map, null...: only `==`, `!=` and `+` (String.valueOf concatenation)
        // are defined; every other operator yields null.
        _ => match op {
            BinOp::Eq => Value::Bool(b.java_equals(a)),
            BinOp::Ne => Value::Bool(!b.java_equals(a)),
            BinOp::Add => {
                let mut s = a.to_java_string();
                b.write_java(&mut s, 0);
                Value::string(s)
            }
            _ => Value::Null,
        },
    })
}

fn elements(v: &Value) -> Vec<Value> {
    match v {
        Value::List(l) | Value::Set(l) => l.borrow().clone(),
        _ => Vec::new(),
    }
}

/// Bitwise operators on Byte/Integer/Long/Boolean (booleans count as 1/0). MathProcessor
/// casts the right operand to Integer (or Long, when the left one is a Long), so a Byte on the
/// right of an Integer, Byte or Long fails with a ClassCastException.
fn bitwise(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    let unbool = |v: &Value| match v {
        Value::Bool(x) => Value::Int(*x as i32),
        v => v.clone(),
    };
    let (a, b) = (unbool(a), unbool(b));
    let int = |x: i32, y: i64| -> i32 {
        match op {
            BinOp::BitAnd => x & y as i32,
            BinOp::BitOr => x | y as i32,
            BinOp::BitXor => x ^ y as i32,
            BinOp::Shl => x.wrapping_shl((y & 31) as u32),
            BinOp::Shr => x >> (y & 31),
            _ => ((x as u32) >> (y & 31)) as i32,
        }
    };
    let long = |x: i64, y: i64| -> i64 {
        match op {
            BinOp::BitAnd => x & y,
            BinOp::BitOr => x | y,
            BinOp::BitXor => x ^ y,
            BinOp::Shl => x.wrapping_shl((y & 63) as u32),
            BinOp::Shr => x >> (y & 63),
            _ => ((x as u64) >> (y & 63)) as i64,
        }
    };
    let shift = matches!(op, BinOp::Shl | BinOp::Shr | BinOp::UShr);
    Ok(match (&a, &b) {
        (Value::Long(x), Value::Int(_) | Value::Long(_)) => {
            Value::Long(long(*x, b.as_i64().unwrap()))
        }
        (Value::Long(_), _) => return Err(class_cast(&b, "java.lang.Long")),
        (Value::Int(_) | Value::Byte(_), Value::Byte(_)) => {
            return Err(class_cast(&b, "java.lang.Integer"));
        }
        // int OP long is a long, except for shifts, whose type is the left operand's.
        (Value::Int(_) | Value::Byte(_), Value::Long(y)) if !shift => {
            Value::Long(long(a.as_i64().unwrap(), *y))
        }
        (Value::Int(_) | Value::Byte(_), _) => {
            Value::Int(int(a.as_i64().unwrap() as i32, b.as_i64().unwrap()))
        }
        _ => return Err(bad_operands(op, &a, &b)),
    })
}

/// MathProcessor.doOperationNonNumeric.
fn non_numeric(op: BinOp, a: &Value, b: &Value) -> Result<Value> {
    Ok(match op {
        BinOp::Add => match a {
            Value::List(_) | Value::Set(_) => {
                let mut l = elements(a);
                l.push(b.clone());
                Value::list(l)
            }
            _ => {
                let mut s = a.to_java_string();
                b.write_java(&mut s, 0);
                Value::string(s)
            }
        },
        BinOp::Eq => Value::Bool(b.java_equals(a)),
        BinOp::Ne => Value::Bool(!b.java_equals(a)),
        BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => Value::Null,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            // Only a Comparable left operand compares (else false); null on the right is false;
            // Comparables of different classes fail as compareTo's ClassCastException does.
            let comparable = !matches!(
                a,
                Value::Null
                    | Value::Undef
                    | Value::List(_)
                    | Value::Set(_)
                    | Value::Map(_)
                    | Value::Entry(_)
            );
            if !comparable || b.is_null() {
                return Ok(Value::Bool(false));
            }
            let o = match (a, b) {
                (Value::Str(x), Value::Str(y)) => x.encode_utf16().cmp(y.encode_utf16()),
                (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
                (Value::Date(x), Value::Date(y)) => x.borrow().cmp(&y.borrow()),
                _ => {
                    return Err(TbelError::runtime(format!(
                        "uncomparable values <<{}>> and <<{}>>",
                        a.to_java_string(),
                        b.to_java_string()
                    )));
                }
            };
            Value::Bool(match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Le => o != Ordering::Greater,
                BinOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
        _ => return Err(bad_operands(op, a, b)),
    })
}

/// MVEL's `==` as a plain bool (for `switch` cases); an operand MVEL cannot compare
/// (e.g. a non-digit Character against a number) counts as unequal.
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    matches!(binary(BinOp::Eq, a, b), Ok(Value::Bool(true)))
}

/// A numeric string becomes an Int, Long or Double (for `sort()` orderings).
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
        v if v.is_number() => Some(v.clone()),
        _ => None,
    }
}

/// Ordering for `sort()` and `compareTo`: numbers (and numeric strings against numbers) by
/// value, strings lexicographically (by UTF-16 code units, as Java compares), dates by time.
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.encode_utf16().cmp(y.encode_utf16())),
        (Value::Date(x), Value::Date(y)) => Some(x.borrow().cmp(&y.borrow())),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => {
            let (x, y) = (numeric(a)?, numeric(b)?);
            match (&x, &y) {
                (Value::Float(_) | Value::Double(_), _)
                | (_, Value::Float(_) | Value::Double(_)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
                _ => Some(x.as_i64()?.cmp(&y.as_i64()?)),
            }
        }
    }
}

/// The run-time operator behind a compile-time Integer one.
fn generic(op: BinOp) -> BinOp {
    match op {
        BinOp::IntAdd => BinOp::Add,
        BinOp::IntSub => BinOp::Sub,
        BinOp::IntMul => BinOp::Mul,
        BinOp::IntDiv => BinOp::Div,
        op => op,
    }
}

/// Java int arithmetic, as MVEL's IntAdd/IntSub/IntMult/IntDiv nodes do it: wrapping, `/`
/// truncating.
fn java_int(op: BinOp, x: i32, y: i32) -> Result<Value> {
    Ok(Value::Int(match op {
        BinOp::IntAdd => x.wrapping_add(y),
        BinOp::IntSub => x.wrapping_sub(y),
        BinOp::IntMul => x.wrapping_mul(y),
        _ if y == 0 => return Err(div_zero()),
        _ => x.wrapping_div(y),
    }))
}
