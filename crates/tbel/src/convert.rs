//! Typed declarations and casts.

use crate::ast::DeclType;
use crate::error::{Result, TbelError};
use crate::value::{Value, parse_java_double};

/// `int x = v`: MVEL converts the value to the declared type.
pub(crate) fn to_decl(ty: DeclType, v: Value) -> Result<Value> {
    if ty == DeclType::Any || v.is_null() {
        return Ok(v);
    }
    // TypedVarNode converts the value with DataConversion.convert: the same converters as a
    // method parameter of that type (IntegerCH, LongCH, DoubleCH, ...).
    const WHAT: &str = "typed declaration";
    Ok(match ty {
        DeclType::Str => match v {
            Value::Str(_) => v,
            v => Value::string(v.to_java_string()),
        },
        DeclType::Int => Value::Int(to_int(&v, WHAT)?),
        DeclType::Long => Value::Long(to_long(&v, WHAT)?),
        DeclType::Double => Value::Double(to_double(&v, WHAT)?),
        _ => return cast(ty, v),
    })
}

fn num_of(v: &Value) -> Result<Value> {
    match v {
        Value::Str(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Value::Long(i))
            } else if let Some(d) = parse_java_double(t) {
                Ok(Value::Double(d))
            } else {
                Err(TbelError::runtime(format!("For input string: \"{s}\"")))
            }
        }
        Value::Bool(b) => Ok(Value::Int(*b as i32)),
        v if v.is_number() => Ok(v.clone()),
        v => Err(TbelError::runtime(format!(
            "cannot convert {} to a number",
            v.type_name()
        ))),
    }
}

/// `(int) v` with Java's narrowing rules (floating point truncates and saturates).
pub(crate) fn cast(ty: DeclType, v: Value) -> Result<Value> {
    if v.is_null() {
        return Ok(v);
    }
    Ok(match ty {
        DeclType::Any => v,
        DeclType::Str => match v {
            Value::Str(_) => v,
            Value::Int(i) => Value::Char(char::from_u32(i as u32).unwrap_or('\u{FFFD}')),
            v => Value::string(v.to_java_string()),
        },
        // MVEL's BooleanCH: see ops::to_boolean.
        DeclType::Bool => crate::ops::to_boolean(&v)?,
        _ => {
            let n = num_of(&v)?;
            let as_long = |n: &Value| match n {
                Value::Float(f) => *f as i64,
                Value::Double(f) => *f as i64,
                n => n.as_i64().unwrap(),
            };
            match ty {
                DeclType::Int => Value::Int(match n {
                    Value::Float(f) => f as i32,
                    Value::Double(f) => f as i32,
                    n => n.as_i64().unwrap() as i32,
                }),
                DeclType::Long => Value::Long(as_long(&n)),
                DeclType::Short => Value::Int(as_long(&n) as i32 as i16 as i32),
                DeclType::Byte => Value::Byte(match n {
                    Value::Float(f) => f as i32 as i8,
                    Value::Double(f) => f as i32 as i8,
                    n => n.as_i64().unwrap() as i8,
                }),
                DeclType::Float => Value::Float(n.as_f64().unwrap() as f32),
                _ => Value::Double(match n {
                    Value::Float(f) => f as f64,
                    n => n.as_f64().unwrap(),
                }),
            }
        }
    })
}

// ---- Method arguments ----
//
// When MVEL calls a Java method whose parameter type differs from the argument's, it picks
// the overload (ParseTools.getBestCandidate) and then converts each argument with
// DataConversion.convert to the parameter's type. These mirror the converters it uses
// (IntegerCH, LongCH, DoubleCH, BooleanCH, StringCH), so a helper or method declared with
// an `int`/`long`/`double`/`boolean`/`String` parameter accepts what TBEL accepts and
// converts it the same way. MVEL has no Byte converter for these targets; Byte (the
// payload's elements) is widened here instead of failing, a deliberate leniency.

fn no_conversion(v: &Value, to: &str, what: &str) -> TbelError {
    TbelError::runtime(format!(
        "unable to resolve method: {what}: cannot convert {} to {to}",
        v.type_name()
    ))
}

/// An `int` parameter (IntegerCH): strings go through `Integer.parseInt` (no trimming),
/// booleans are 1/0, and a Long or floating value above `Integer.MAX_VALUE` is refused
/// rather than wrapped (only the upper bound is checked, as in MVEL).
pub(crate) fn to_int(v: &Value, what: &str) -> Result<i32> {
    let too_big = |from: &str, shown: String| {
        TbelError::runtime(format!(
            "cannot coerce {from} to Integer since the value ({shown}) exceeds that maximum precision of Integer."
        ))
    };
    Ok(match v {
        Value::Int(i) => *i,
        Value::Byte(b) => *b as i32,
        Value::Char(c) => *c as i32,
        Value::Bool(b) => *b as i32,
        Value::Long(l) if *l > i32::MAX as i64 => return Err(too_big("Long", l.to_string())),
        Value::Long(l) => *l as i32,
        Value::Float(f) if *f > i32::MAX as f32 => {
            return Err(too_big("Float", crate::value::java_float(*f)));
        }
        Value::Float(f) => *f as i32,
        // MVEL's Double converter words its message as if from Long.
        Value::Double(d) if *d > i32::MAX as f64 => {
            return Err(too_big("Long", crate::value::java_double(*d)));
        }
        Value::Double(d) => *d as i32,
        Value::Str(s) => crate::lib_static::java_parse_int(s, 10)?,
        v => return Err(no_conversion(v, "int", what)),
    })
}

/// A `long` parameter (LongCH): an empty string is 0, other strings go through
/// `Long.parseLong`, floating values truncate.
pub(crate) fn to_long(v: &Value, what: &str) -> Result<i64> {
    Ok(match v {
        Value::Bool(b) => *b as i64,
        Value::Str(s) if s.is_empty() => 0,
        Value::Str(s) => crate::lib_static::java_parse_long(s, 10)?,
        v => v.as_i64().ok_or_else(|| no_conversion(v, "long", what))?,
    })
}

/// A `double` parameter (DoubleCH): an empty string is 0.0, other strings go through
/// `Double.parseDouble`.
pub(crate) fn to_double(v: &Value, what: &str) -> Result<f64> {
    Ok(match v {
        Value::Bool(b) => *b as i32 as f64,
        Value::Str(s) if s.is_empty() => 0.0,
        Value::Str(s) => crate::lib_static::java_parse_double(s)?,
        v => v.as_f64().ok_or_else(|| no_conversion(v, "double", what))?,
    })
}

/// A `boolean` parameter (BooleanCH): a string is true unless it is "false", "no", "off"
/// (any case), "0" or empty; a number is true when positive.
pub(crate) fn to_bool(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Str(s) => {
            !(s.eq_ignore_ascii_case("false")
                || s.eq_ignore_ascii_case("no")
                || s.eq_ignore_ascii_case("off")
                || s.as_ref() == "0"
                || s.is_empty())
        }
        v => v.as_f64().is_some_and(|f| f > 0.0),
    }
}
