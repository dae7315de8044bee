//! Typed declarations and casts.

use crate::ast::DeclType;
use crate::error::{Result, TbelError};
use crate::value::{Value, parse_java_double};

/// `int x = v`: MVEL converts the value to the declared type.
pub(crate) fn to_decl(ty: DeclType, v: Value) -> Result<Value> {
    if ty == DeclType::Any || v.is_null() {
        return Ok(v);
    }
    if ty == DeclType::Str {
        return Ok(match v {
            Value::Str(_) => v,
            v => Value::string(v.to_java_string()),
        });
    }
    cast(ty, v)
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
