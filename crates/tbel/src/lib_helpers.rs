//! The helper functions ThingsBoard registers for TBEL (TbUtils, NumberUtils), with their
//! overloads, defaults and error messages.

use std::rc::Rc;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::{Result, TbelError};
use crate::interp::Ctx;
use crate::lib_methods::{int_arg, long_arg, str_arg};
use crate::value::{Value, java_double};

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn err(msg: impl Into<String>) -> TbelError {
    TbelError::runtime(msg)
}

fn no_overload(name: &str, n: usize) -> TbelError {
    err(format!(
        "unable to resolve method: {name}() [arglength={n}]"
    ))
}

/// A helper's `boolean` parameter, converted as MVEL converts method arguments.
fn bool_arg(v: &Value) -> bool {
    crate::convert::to_bool(v)
}

/// A helper's string parameter: `null` stays absent.
fn opt_str(v: &Value) -> Option<Rc<str>> {
    if v.is_null() { None } else { Some(str_arg(v)) }
}

/// List → bytes as Guava's `Bytes.toArray` does (each Number's `byteValue()`).
pub(crate) fn bytes_lenient(v: &Value) -> Result<Vec<u8>> {
    match v {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|x| match x {
                Value::Str(s) => crate::lib_static::java_parse_int(s, 10).map(|i| i as u8),
                x => x
                    .as_i64()
                    .map(|i| i as u8)
                    .ok_or_else(|| err(format!("cannot convert {} to byte", x.type_name()))),
            })
            .collect(),
        Value::Str(s) => Ok(s.as_bytes().to_vec()),
        Value::Null | Value::Undef => {
            Err(err("Cannot read the array length because \"data\" is null"))
        }
        v => Err(err(format!(
            "expected a list of bytes, got {}",
            v.type_name()
        ))),
    }
}

/// List → bytes as TbUtils.bytesFromList: Integers in -128..255, numeric Strings, Bytes.
fn bytes_strict(v: &Value) -> Result<Vec<u8>> {
    let Value::List(l) = v else {
        return bytes_lenient(v);
    };
    l.borrow()
        .iter()
        .map(|x| {
            let check = |i: i64| {
                if !(-128..=255).contains(&i) {
                    Err(err(format!(
                        "The value '{i}' could not be correctly converted to a byte. Integer to byte conversion requires the use of only 8 bits (with a range of min/max = -128/255)!"
                    )))
                } else {
                    Ok(i as u8)
                }
            };
            match x {
                Value::Byte(b) => Ok(*b as u8),
                Value::Int(i) => check(*i as i64),
                Value::Str(s) => match parse_int(s, 0)? {
                    Value::Int(i) => check(i as i64),
                    _ => Err(err(format!("The value '{s}' could not be correctly converted to a byte."))),
                },
                x => Err(err(format!(
                    "The value '{}' could not be correctly converted to a byte. Must be a HexDecimal/String/Integer/Byte format !",
                    x.to_java_string()
                ))),
            }
        })
        .collect()
}

fn byte_list(ctx: &mut Ctx, b: &[u8]) -> Result<Value> {
    ctx.alloc(b.len() + 16)?;
    Ok(Value::signed_bytes(b))
}

pub(crate) fn hex_upper(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

fn b64_decode(s: &str) -> Result<Vec<u8>> {
    B64.decode(s.as_bytes()).map_err(|e| match e {
        base64::DecodeError::InvalidByte(_, b) => err(format!("Illegal base64 character {:x}", b)),
        base64::DecodeError::InvalidLength(_) => {
            err("Input byte array has wrong 4-byte ending unit")
        }
        base64::DecodeError::InvalidLastSymbol(_, _) => {
            err("Last unit does not have enough valid bits")
        }
        base64::DecodeError::InvalidPadding => err("Input byte array has incorrect ending byte"),
    })
}

// ---- number strings (prepareNumberString / isValidStringAndRadix) ----

fn prepare_number_string(value: &str, big_endian: bool) -> Result<Option<String>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let v = value
        .trim()
        .replace("0x", "")
        .replace("0X", "")
        .replace(',', ".");
    Ok(Some(if big_endian { v } else { reverse_hex(&v)? }))
}

fn reverse_hex(value: &str) -> Result<String> {
    if value.starts_with('-') {
        return Err(err(
            "The hexadecimal string must be without a negative sign.",
        ));
    }
    let pref = value.starts_with("0x");
    let hex = if pref { &value[2..] } else { value };
    if hex.len() % 2 > 0 {
        return Err(err("The hexadecimal string must be even-length."));
    }
    let mut out = String::with_capacity(hex.len() + 2);
    if pref {
        out.push_str("0x");
    }
    let b = hex.as_bytes();
    let mut i = b.len();
    while i >= 2 {
        out.push_str(&hex[i - 2..i]);
        i -= 2;
    }
    Ok(out)
}

pub(crate) fn is_binary(s: &str) -> i32 {
    if !s.is_empty() && s.chars().all(|c| c == '0' || c == '1') {
        2
    } else {
        -1
    }
}
pub(crate) fn is_octal(s: &str) -> i32 {
    if !s.is_empty() && s.chars().all(|c| ('0'..='7').contains(&c)) {
        8
    } else {
        -1
    }
}
pub(crate) fn is_decimal(s: &str) -> i32 {
    // [+-]?\d+(\.\d+)?([eE][+-]?\d+)?
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let s0 = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s0
    };
    if !digits(&mut i) {
        return -1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return -1;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return -1;
        }
    }
    if i == b.len() { 10 } else { -1 }
}
pub(crate) fn is_hexadecimal(s: &str) -> i32 {
    // ^-?(0[xX])?[0-9a-fA-F]+$
    let t = s.strip_prefix('-').unwrap_or(s);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()) {
        16
    } else {
        -1
    }
}

fn radix10_16(value: &str) -> Result<i32> {
    let r = if is_decimal(value) > 0 {
        10
    } else {
        is_hexadecimal(value)
    };
    if r > 0 {
        Ok(r)
    } else {
        Err(err(format!(
            "Value: \"{value}\" is not numeric or hexDecimal format!"
        )))
    }
}

fn valid_string_and_radix(value_p: &str, radix: i32, value: &str) -> Result<i32> {
    let mut rv = if radix == 0 {
        radix10_16(value_p)?
    } else if (25..=36).contains(&radix) {
        return Ok(radix);
    } else {
        match radix {
            2 => is_binary(value_p),
            8 => is_octal(value_p),
            10 => is_decimal(value_p),
            16 => is_hexadecimal(value_p),
            _ => return Err(err(format!("Invalid radix: [{radix}]"))),
        }
    };
    if rv > 0 {
        if value.starts_with("0x") {
            rv = 16;
        }
        if rv == 16 {
            let v = value.strip_prefix('-').unwrap_or(value);
            if !v.len().is_multiple_of(2) {
                return Err(err(format!(
                    "The hexadecimal value: \"{value}\" must be of even length, or if the decimal value must be a number!"
                )));
            }
        }
        Ok(rv)
    } else if radix > 0 {
        Err(err(format!(
            "Failed radix [{radix}] for value: \"{value}\", must be [{rv}] !"
        )))
    } else {
        Err(err(format!(
            "Invalid \"{value}\". It is not numeric or hexadecimal format!"
        )))
    }
}

fn signed_binary(s: &str, bits: usize) -> Result<i64> {
    let padded = if s.len() < bits {
        format!("{}{s}", "0".repeat(bits - s.len()))
    } else {
        s.to_string()
    };
    let u = u128::from_str_radix(&padded, 2)
        .map_err(|_| err(format!("For input string: \"{s}\" under radix 2")))?;
    if padded.len() > bits {
        return Err(err(format!("For input string: \"{padded}\" under radix 2")));
    }
    Ok(if bits == 32 {
        u as u32 as i32 as i64
    } else {
        u as u64 as i64
    })
}

fn parse_int_full(value: &str, radix: i32, big_endian: bool, long: bool) -> Result<Value> {
    let Some(vp) = prepare_number_string(value, big_endian)? else {
        return Ok(Value::Null);
    };
    let rv = valid_string_and_radix(&vp, radix, value)?;
    let n = if (25..=36).contains(&rv) {
        let r = crate::lib_static::java_parse_long(&vp, rv as u32);
        match r {
            Ok(v) if !long && i32::try_from(v).is_err() => {
                if v > 0 {
                    return Err(err(format!(
                        "Value \"{vp}\"is greater than the maximum Integer value {} !",
                        i32::MAX
                    )));
                }
                return Err(err(format!(
                    "Value \"{vp}\" is  less than the minimum Integer value {} !",
                    i32::MIN
                )));
            }
            Ok(v) => v,
            Err(e) => {
                if vp
                    .trim_start_matches(['-', '+'])
                    .chars()
                    .all(|c| c.is_digit(rv as u32))
                    && !vp.is_empty()
                {
                    let neg = vp.starts_with('-');
                    let (max, min) = if long {
                        (i64::MAX.to_string(), i64::MIN.to_string())
                    } else {
                        (i32::MAX.to_string(), i32::MIN.to_string())
                    };
                    let ty = if long { "Long" } else { "Integer" };
                    if neg {
                        return Err(err(format!(
                            "Value \"{vp}\" is  less than the minimum {ty} value {min} !"
                        )));
                    }
                    return Err(err(format!(
                        "Value \"{vp}\"is greater than the maximum {ty} value {max} !"
                    )));
                }
                return Err(e);
            }
        }
    } else {
        match rv {
            2 => signed_binary(&vp, if long { 64 } else { 32 })?,
            8 | 10 | 16 => {
                if long {
                    crate::lib_static::java_parse_long(&vp, rv as u32)?
                } else {
                    crate::lib_static::java_parse_int(&vp, rv as u32)? as i64
                }
            }
            _ => return Err(err(format!("Invalid radix: [{radix}]"))),
        }
    };
    Ok(if long {
        Value::Long(n)
    } else {
        Value::Int(n as i32)
    })
}

pub(crate) fn parse_int(value: &str, radix: i32) -> Result<Value> {
    parse_int_full(value, radix, true, false)
}

fn parse_float_from(value: &str, vp: &str, radix: i32) -> Result<Value> {
    let rv = valid_string_and_radix(vp, radix, value)?;
    if rv == 16 {
        let bits = crate::lib_static::java_parse_long(vp, 16)? as i32;
        Ok(Value::Float(f32::from_bits(bits as u32)))
    } else {
        crate::lib_static::java_parse_float(value).map(Value::Float)
    }
}

fn parse_double_full(value: &str, radix: i32, big_endian: bool) -> Result<Value> {
    let Some(vp) = prepare_number_string(value, big_endian)? else {
        return Ok(Value::Null);
    };
    let rv = valid_string_and_radix(&vp, radix, value)?;
    if rv == 10 {
        crate::lib_static::java_parse_double(&vp).map(Value::Double)
    } else {
        let bits = u64::from_str_radix(&vp, 16)
            .map_err(|_| err(format!("For input string: \"{vp}\" under radix 16")))?;
        Ok(Value::Double(f64::from_bits(bits)))
    }
}

// ---- bytes → numbers ----

fn validate_length(len: usize, offset: i64, max: i64) -> i64 {
    if (len as i64) < offset {
        len as i64
    } else {
        (len as i64 - offset).min(max)
    }
}

fn validate_number_by_length(len: usize, offset: i64, length: i64, max: i64) -> Result<()> {
    if offset > len as i64 {
        return Err(err(format!(
            "Offset: {offset} is out of bounds for array with length: {len}!"
        )));
    }
    if offset + length > len as i64 {
        return Err(err(format!(
            "Offset: {offset} and Length: {length} is out of bounds for array with length: {len}!"
        )));
    }
    if length > max {
        return Err(err(format!(
            "Length: {length} is too large. Maximum {max} bytes is allowed!"
        )));
    }
    if offset < 0 || length < 0 {
        return Err(err(format!(
            "Index {offset} out of bounds for length {len}"
        )));
    }
    Ok(())
}

/// The ByteBuffer dance: `length` bytes from `offset` into a `size`-byte buffer, right-aligned
/// for big-endian and left-aligned (then read little-endian) otherwise. Returns the raw u64.
fn buffer_value(
    data: &[u8],
    offset: i64,
    length: i64,
    big_endian: bool,
    size: usize,
) -> Result<u64> {
    if offset < 0 || length < 0 || offset + length > data.len() as i64 {
        return Err(err(format!(
            "Offset: {offset} and Length: {length} is out of bounds for array with length: {}!",
            data.len()
        )));
    }
    if length as usize > size {
        return Err(err("BufferOverflowException"));
    }
    let mut buf = [0u8; 8];
    let src = &data[offset as usize..(offset + length) as usize];
    if big_endian {
        buf[size - src.len()..size].copy_from_slice(src);
        let mut v = 0u64;
        for b in &buf[..size] {
            v = (v << 8) | *b as u64;
        }
        Ok(v)
    } else {
        buf[..src.len()].copy_from_slice(src);
        let mut v = 0u64;
        for b in buf[..size].iter().rev() {
            v = (v << 8) | *b as u64;
        }
        Ok(v)
    }
}

/// Common overload handling of parseBytesTo*(data[, offset[, length[, bigEndian]]]).
fn bytes_args(args: &[Value], max: i64) -> Result<(Vec<u8>, i64, i64, bool)> {
    let data = bytes_lenient(&args[0])?;
    let offset = if args.len() > 1 {
        int_arg(&args[1], "offset")?
    } else {
        0
    };
    let length = if args.len() > 2 {
        int_arg(&args[2], "length")?
    } else {
        validate_length(data.len(), offset, max)
    };
    let be = if args.len() > 3 {
        bool_arg(&args[3])
    } else {
        true
    };
    Ok((data, offset, length, be))
}

fn prepare_bytes(data: &[u8], offset: i64, length: i64, be: bool, max: i64) -> Result<Vec<u8>> {
    validate_number_by_length(data.len(), offset, length, max)?;
    let mut v = data[offset as usize..(offset + length) as usize].to_vec();
    if !be {
        v.reverse();
    }
    Ok(v)
}

// ---- hex formatting ----

fn remove_leading_zero_ff(hex: &str, negative: bool, max: usize) -> String {
    let mut h = hex.trim_start_matches('0').to_string();
    if h.is_empty() {
        h = "0".into();
    }
    if !h.len().is_multiple_of(2) {
        h.insert(0, '0');
    }
    if !negative {
        return h;
    }
    let mut f = h.trim_start_matches('F').to_string();
    if f.is_empty() {
        f = "F".into();
    }
    if !f.len().is_multiple_of(2) {
        f.insert(0, 'F');
    }
    if f.len() > max {
        f[f.len() - max..].to_string()
    } else if f.len() == max {
        f
    } else {
        format!("FF{f}")
    }
}

fn number_hex_string(n: i64, be: bool, pref: bool, len: i64, max: i64) -> Result<String> {
    let hex = format!("{:X}", n as u64);
    let max = if max < 0 { hex.len() } else { max as usize };
    let mut h = remove_leading_zero_ff(&hex, n < 0, max);
    if !be {
        h = reverse_hex(&h)?;
    }
    let len = if len == -1 { h.len() as i64 } else { len };
    let start = h.len() as i64 - len;
    if start < 0 || len < 0 {
        return Err(err(format!(
            "begin {start}, end {}, length {}",
            h.len(),
            h.len()
        )));
    }
    let r = &h[start as usize..];
    Ok(if pref {
        format!("0x{r}")
    } else {
        r.to_string()
    })
}

/// BigDecimal.valueOf(v).setScale(scale, HALF_UP) as text (plain notation).
pub(crate) fn to_fixed_string(v: f64, scale: i32) -> String {
    if !v.is_finite() {
        return java_double(v);
    }
    // Exact decimal digits of Double.toString(v).
    let s = format!("{:e}", v);
    let (mant, exp) = s.split_once('e').unwrap();
    let exp: i64 = exp.parse().unwrap();
    let neg = mant.starts_with('-');
    let digits: Vec<u8> = mant
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    // value = 0.d1d2d3... × 10^(exp+1)
    let point = exp + 1; // digits before the decimal point
    let keep = point + scale as i64; // number of digits to keep
    let mut kept: Vec<u8> = if keep <= 0 {
        vec![]
    } else {
        digits.iter().copied().take(keep as usize).collect()
    };
    while (kept.len() as i64) < keep {
        kept.push(0);
    }
    let round_up = if keep < 0 {
        false
    } else {
        digits.get(keep as usize).is_some_and(|d| *d >= 5)
    };
    let mut point = point;
    if round_up {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                point += 1;
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    // Render kept digits with `point` integer digits and `scale` fraction digits.
    let mut int_part = String::new();
    let mut frac = String::new();
    let total = kept.len() as i64;
    for (i, d) in kept.iter().enumerate() {
        let c = (b'0' + d) as char;
        if (i as i64) < total - scale.max(0) as i64 {
            int_part.push(c);
        } else {
            frac.push(c);
        }
    }
    let _ = point;
    if scale < 0 {
        int_part.extend(std::iter::repeat_n('0', (-scale) as usize));
    }
    let int_part = int_part.trim_start_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let mut out = String::new();
    let zero = int_part == "0" && frac.chars().all(|c| c == '0');
    if neg && !zero {
        out.push('-');
    }
    out.push_str(int_part);
    if scale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    out
}

fn to_fixed(v: &Value, scale: i64) -> Result<Value> {
    match v {
        Value::Float(f) => {
            let d: f64 = format!("{f}").parse().unwrap_or(*f as f64);
            let s = to_fixed_string(d, scale as i32);
            Ok(Value::Float(s.parse().unwrap_or(f32::NAN)))
        }
        v => {
            let d = v
                .coerce_f64()
                .ok_or_else(|| err(format!("toFixed: expected a number, got {}", v.type_name())))?;
            let s = to_fixed_string(d, scale as i32);
            Ok(Value::Double(s.parse().unwrap_or(f64::NAN)))
        }
    }
}

// ---- toFlatMap ----

fn flat(
    v: &Value,
    out: &mut indexmap::IndexMap<Rc<str>, Value>,
    exclude: &[String],
    path: &str,
    path_in_key: bool,
) {
    match v {
        Value::List(l) => {
            for (i, x) in l.borrow().iter().enumerate() {
                flat(x, out, exclude, &format!("{path}.{i}"), path_in_key);
            }
        }
        Value::Map(m) => {
            for (k, x) in m.borrow().iter() {
                if exclude.iter().any(|e| e.as_str() == &**k) {
                    continue;
                }
                let p = if path.trim().is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                flat(x, out, exclude, &p, path_in_key);
            }
        }
        leaf => {
            let key = if path_in_key {
                path.to_string()
            } else {
                let last = &path[path.rfind('.').map_or(0, |p| p + 1)..];
                if !last.is_empty() && last.chars().all(|c| c.is_numeric()) {
                    // key = the last two path segments
                    let mut pos = path.len() as i64;
                    for _ in 0..2 {
                        pos = path[..(pos - 1).max(0) as usize]
                            .rfind('.')
                            .map_or(-1, |p| p as i64);
                        if pos < 0 {
                            break;
                        }
                    }
                    path[(pos + 1) as usize..].to_string()
                } else {
                    last.to_string()
                }
            };
            out.insert(key.into(), leaf.clone());
        }
    }
}

// ---- URI ----

fn encode_uri(s: &str) -> String {
    let mut out = String::new();
    for b in s.as_bytes() {
        let c = *b as char;
        if c.is_ascii_alphanumeric() || "-_.!~*'();/?:@&=+$,#".contains(c) {
            out.push(c);
        } else if c == ' ' {
            out.push_str("%20");
        } else {
            out.push_str(&format!("%{:02X}", b));
        }
    }
    out
}

fn decode_uri(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).filter(|h| h.len() == 2);
            let v = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    err(format!(
                        "URLDecoder: Illegal hex characters in escape (%) pattern - {}",
                        s.get(i + 1..).unwrap_or("")
                    ))
                })?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn charset_decode(bytes: &[u8], charset: &str) -> Result<String> {
    match charset.to_ascii_uppercase().replace('_', "-").as_str() {
        "UTF-8" | "UTF8" => Ok(String::from_utf8_lossy(bytes).into_owned()),
        "ISO-8859-1" | "LATIN1" | "ISO8859-1" => Ok(bytes.iter().map(|b| *b as char).collect()),
        "US-ASCII" | "ASCII" => Ok(bytes
            .iter()
            .map(|b| if *b < 128 { *b as char } else { '\u{FFFD}' })
            .collect()),
        "UTF-16" | "UTF-16BE" => Ok(String::from_utf16_lossy(
            &bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect::<Vec<_>>(),
        )),
        "UTF-16LE" => Ok(String::from_utf16_lossy(
            &bytes
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect::<Vec<_>>(),
        )),
        _ => Err(err(charset.to_string())),
    }
}

fn charset_encode(s: &str, charset: &str) -> Result<Vec<u8>> {
    match charset.to_ascii_uppercase().replace('_', "-").as_str() {
        "UTF-8" | "UTF8" => Ok(s.as_bytes().to_vec()),
        "ISO-8859-1" | "LATIN1" | "ISO8859-1" => Ok(s
            .chars()
            .map(|c| if (c as u32) < 256 { c as u8 } else { b'?' })
            .collect()),
        "US-ASCII" | "ASCII" => Ok(s
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect()),
        "UTF-16LE" => Ok(s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()),
        "UTF-16BE" => Ok(s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()),
        _ => Err(err(charset.to_string())),
    }
}

fn char_arg(v: &Value) -> Result<char> {
    match v {
        Value::Char(c) => Ok(*c),
        Value::Str(s) if s.chars().count() == 1 => Ok(s.chars().next().unwrap()),
        Value::Int(i) => Ok(char::from_u32(*i as u32).unwrap_or('\u{FFFD}')),
        v => Err(err(format!(
            "cannot convert {} to char",
            v.to_java_string()
        ))),
    }
}

fn str_param(v: &Value, name: &str) -> Result<Rc<str>> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Null | Value::Undef => Err(err(format!("{name}: argument is null"))),
        v => Ok(v.to_java_string().into()),
    }
}

pub(crate) fn call_helper(ctx: &mut Ctx, name: &str, args: Vec<Value>) -> Result<Value> {
    let n = args.len();
    let a = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    let bad = || no_overload(name, n);
    Ok(match name {
        "btoa" if n == 1 => Value::string(B64.encode(str_param(&a(0), name)?.as_bytes())),
        "atob" if n == 1 => Value::string(
            String::from_utf8_lossy(&b64_decode(&str_param(&a(0), name)?)?).into_owned(),
        ),
        "bytesToString" | "decodeToString" if n == 1 || (n == 2 && name == "bytesToString") => {
            let b = bytes_strict(&a(0))?;
            let s = if n == 2 {
                charset_decode(&b, &str_arg(&a(1)))?
            } else {
                String::from_utf8_lossy(&b).into_owned()
            };
            ctx.check_str(s.len())?;
            Value::string(s)
        }
        "decodeToJson" if n == 1 => {
            let text = match &args[0] {
                Value::Str(s) => s.to_string(),
                v => String::from_utf8_lossy(&bytes_strict(v)?).into_owned(),
            };
            let v = crate::lib_json::parse(&text)?;
            ctx.alloc(text.len())?;
            v
        }
        "stringToBytes" if n == 1 || n == 2 => match &args[0] {
            Value::Str(s) => {
                let b = if n == 2 {
                    charset_encode(s, &str_arg(&a(1)))?
                } else {
                    s.as_bytes().to_vec()
                };
                byte_list(ctx, &b)?
            }
            v => {
                return Err(err(format!(
                    "Invalid type parameter [{}]. Expected 'String'",
                    v.type_name()
                )));
            }
        },
        "parseInt" | "parseLong" if n == 1 || n == 2 => {
            let Some(s) = opt_str(&a(0)) else {
                return Ok(Value::Null);
            };
            let radix = if n == 2 {
                int_arg(&a(1), name)? as i32
            } else {
                0
            };
            parse_int_full(&s, radix, true, name == "parseLong")?
        }
        "parseFloat" if n == 1 || n == 2 => {
            let Some(s) = opt_str(&a(0)) else {
                return Ok(Value::Null);
            };
            let radix = if n == 2 {
                int_arg(&a(1), name)? as i32
            } else {
                0
            };
            match prepare_number_string(&s, true)? {
                Some(vp) => parse_float_from(&s, &vp, radix)?,
                None => Value::Null,
            }
        }
        "parseDouble" if n == 1 || n == 2 => {
            let Some(s) = opt_str(&a(0)) else {
                return Ok(Value::Null);
            };
            let radix = if n == 2 {
                int_arg(&a(1), name)? as i32
            } else {
                radix10_16(&s)?
            };
            parse_double_full(&s, radix, true)?
        }
        "parseHexIntLongToFloat" if n == 2 => {
            let s = str_param(&a(0), name)?;
            match prepare_number_string(&s, bool_arg(&a(1)))? {
                Some(vp) => {
                    let rv = valid_string_and_radix(&vp, 16, &s)?;
                    if rv == 16 {
                        let bits = crate::lib_static::java_parse_long(&vp, 16)? as i32;
                        Value::Float(bits as f32)
                    } else {
                        Value::Null
                    }
                }
                None => Value::Null,
            }
        }
        "parseLittleEndianHexToInt"
        | "parseBigEndianHexToInt"
        | "parseHexToInt"
        | "parseLittleEndianHexToLong"
        | "parseBigEndianHexToLong"
        | "parseHexToLong"
            if n == 1 || (n == 2 && name.starts_with("parseHex")) =>
        {
            let s = str_param(&a(0), name)?;
            let be = if n == 2 {
                bool_arg(&a(1))
            } else {
                !name.contains("Little")
            };
            let r = parse_int_full(&s, 16, be, name.ends_with("Long"))?;
            if r.is_null() && (n == 1) {
                return Err(err("Cannot unbox null value"));
            }
            r
        }
        "parseLittleEndianHexToFloat" | "parseBigEndianHexToFloat" | "parseHexToFloat"
            if n == 1 || (n == 2 && name == "parseHexToFloat") =>
        {
            let s = str_param(&a(0), name)?;
            let be = if n == 2 {
                bool_arg(&a(1))
            } else {
                !name.contains("Little")
            };
            match prepare_number_string(&s, be)? {
                Some(vp) => parse_float_from(&s, &vp, 16)?,
                None => Value::Null,
            }
        }
        "parseLittleEndianHexToDouble" | "parseBigEndianHexToDouble" | "parseHexToDouble"
            if n == 1 || (n == 2 && name == "parseHexToDouble") =>
        {
            let s = str_param(&a(0), name)?;
            let be = if n == 2 {
                bool_arg(&a(1))
            } else {
                !name.contains("Little")
            };
            parse_double_full(&s, 16, be)?
        }
        "parseBytesToInt" | "parseBytesToUnsignedInt" if (1..=4).contains(&n) => {
            let (d, off, len, be) = bytes_args(&args, 4)?;
            validate_number_by_length(d.len(), off, len, 4)?;
            if name == "parseBytesToInt" {
                Value::Int(buffer_value(&d, off, len, be, 4)? as u32 as i32)
            } else {
                // Placed in an 8-byte buffer: never negative.
                Value::Long(buffer_value(&d, off, len, be, 8)? as i64)
            }
        }
        "parseBytesToLong" if (1..=4).contains(&n) => {
            let (d, off, len, be) = bytes_args(&args, 8)?;
            validate_number_by_length(d.len(), off, len, 8)?;
            Value::Long(buffer_value(&d, off, len, be, 8)? as i64)
        }
        "parseBytesToFloat" if (1..=4).contains(&n) => {
            let (d, off, len, be) = bytes_args(&args, 4)?;
            let f = f32::from_bits(buffer_value(&d, off, len, be, 4)? as u32);
            if f.is_nan() {
                return Err(err(format!(
                    "byte[] 0x{} is a Not-a-Number (NaN) value",
                    hex_upper(&d)
                )));
            }
            Value::Float(f)
        }
        "parseBytesToDouble" if (1..=4).contains(&n) => {
            let (d, off, len, be) = bytes_args(&args, 8)?;
            let f = f64::from_bits(buffer_value(&d, off, len, be, 8)?);
            if f.is_nan() {
                return Err(err(format!(
                    "byte[] 0x{} is a Not-a-Number (NaN) value",
                    hex_upper(&d)
                )));
            }
            Value::Double(f)
        }
        "parseBytesIntToFloat" if (1..=4).contains(&n) => {
            let (d, off, len, be) = bytes_args(&args, 4)?;
            let b = prepare_bytes(&d, off, len, be, 4)?;
            let v = b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64);
            Value::Float(v as f32)
        }
        "parseBytesLongToDouble" if (1..=4).contains(&n) => {
            let (d, off, len, be) = bytes_args(&args, 8)?;
            let b = prepare_bytes(&d, off, len, be, 8)?;
            let v = b.iter().fold(0u64, |acc, x| (acc << 8) | *x as u64);
            Value::Double(v as f64)
        }
        "toFixed" if n == 2 => to_fixed(&a(0), int_arg(&a(1), name)?)?,
        "toInt" if n == 1 => {
            let d = a(0).coerce_f64().ok_or_else(bad)?;
            let s = to_fixed_string(d, 0);
            Value::Int(s.parse::<f64>().unwrap_or(0.0) as i32)
        }
        "isNaN" if n == 1 => Value::Bool(a(0).coerce_f64().is_some_and(f64::is_nan)),
        "hexToBytes" | "hexToBytesArray" if n == 1 => {
            let s = str_param(&a(0), name)?;
            let Some(hex) = prepare_number_string(&s, true)? else {
                return Err(err("Hex string must be not empty!"));
            };
            if hex.len() % 2 > 0 {
                return Err(err("Hex string must be even-length."));
            }
            if is_hexadecimal(&s) != 16 {
                return Err(err(format!(
                    "Value: \"{s}\" is not numeric or hexDecimal format!"
                )));
            }
            let mut out = Vec::with_capacity(hex.len() / 2);
            for i in (0..hex.len()).step_by(2) {
                let pair = hex
                    .get(i..i + 2)
                    .ok_or_else(|| err(format!("For input string: \"{hex}\"")))?;
                let v = i32::from_str_radix(pair, 16)
                    .map_err(|_| err(format!("For input string: \"{pair}\" under radix 16")))?;
                out.push(v as u8);
            }
            byte_list(ctx, &out)?
        }
        "printUnsignedBytes" if n == 1 => {
            let b = bytes_lenient(&a(0))?;
            Value::list(b.iter().map(|x| Value::Int(*x as i32)).collect())
        }
        "intToHex" | "longToHex" if (1..=4).contains(&n) => {
            let long = name == "longToHex";
            let v = if long {
                long_arg(&a(0), name)?
            } else {
                int_arg(&a(0), name)?
            };
            let be = if n > 1 { bool_arg(&a(1)) } else { true };
            let pref = if n > 2 { bool_arg(&a(2)) } else { false };
            let len = if n > 3 { int_arg(&a(3), name)? } else { -1 };
            Value::string(number_hex_string(
                v,
                be,
                pref,
                len,
                if long { 16 } else { 8 },
            )?)
        }
        "intLongToRadixString" if (1..=4).contains(&n) => {
            let v = long_arg(&a(0), name)?;
            let radix = if n > 1 { int_arg(&a(1), name)? } else { 10 };
            let be = if n > 2 { bool_arg(&a(2)) } else { true };
            let pref = if n > 3 { bool_arg(&a(3)) } else { false };
            Value::string(match radix {
                25..=36 => crate::lib_static::long_to_string_radix(v, radix as u32),
                2 => {
                    let b = format!("{:b}", v as u64);
                    let w = if b.len() < 8 {
                        8
                    } else if b.len() < 16 {
                        16
                    } else if b.len() < 32 {
                        32
                    } else if b.len() < 64 {
                        64
                    } else {
                        0
                    };
                    if w == 0 { b } else { format!("{b:0>w$}") }
                }
                8 => format!("{:o}", v as u64),
                10 => v.to_string(),
                16 => number_hex_string(v, be, pref, -1, -1)?,
                _ => return Err(err(format!("Invalid radix: [{radix}]"))),
            })
        }
        "floatToHex" if n == 1 || n == 2 => {
            let f = a(0).coerce_f64().ok_or_else(bad)? as f32;
            let bits = if f.is_nan() { 0x7fc00000 } else { f.to_bits() };
            let s = format!("0x{bits:08X}");
            Value::string(if n == 2 && !bool_arg(&a(1)) {
                reverse_hex(&s)?
            } else {
                s
            })
        }
        "doubleToHex" if n == 1 || n == 2 => {
            let f = a(0).coerce_f64().ok_or_else(bad)?;
            let s = format!("0x{:016X}", f.to_bits());
            Value::string(if n == 2 && !bool_arg(&a(1)) {
                reverse_hex(&s)?
            } else {
                s
            })
        }
        "base64ToHex" if n == 1 => Value::string(hex_upper(&b64_decode(&str_param(&a(0), name)?)?)),
        "hexToBase64" if n == 1 => {
            let s = str_param(&a(0), name)?;
            let b = (0..s.len() / 2 * 2)
                .step_by(2)
                .map(|i| {
                    s.get(i..i + 2)
                        .and_then(|p| i32::from_str_radix(p, 16).ok())
                        .map(|v| v as u8)
                        .ok_or_else(|| {
                            err(format!(
                                "For input string: \"{}\" under radix 16",
                                s.get(i..i + 2).unwrap_or("")
                            ))
                        })
                })
                .collect::<Result<Vec<u8>>>()?;
            Value::string(B64.encode(b))
        }
        "base64ToBytes" | "base64ToBytesList" if n == 1 => {
            let b = b64_decode(&str_param(&a(0), name)?)?;
            byte_list(ctx, &b)?
        }
        "bytesToBase64" if n == 1 => Value::string(B64.encode(bytes_lenient(&a(0))?)),
        "bytesToHex" if n == 1 => {
            let b = match &args[0] {
                Value::List(l) => l
                    .borrow()
                    .iter()
                    .map(|x| match x {
                        Value::Byte(b) => Ok(*b as u8),
                        x => {
                            let s = x.to_java_string();
                            s.parse::<i8>().map(|v| v as u8).map_err(|_| {
                                err(format!("Value out of range. Value:\"{s}\" Radix:10"))
                            })
                        }
                    })
                    .collect::<Result<Vec<u8>>>()?,
                v => bytes_lenient(v)?,
            };
            Value::string(hex_upper(&b))
        }
        "toFlatMap" if (1..=3).contains(&n) => {
            let Value::Map(_) = &args[0] else {
                return Err(err(format!(
                    "toFlatMap: expected a Map, got {}",
                    args[0].type_name()
                )));
            };
            let mut exclude = Vec::new();
            let mut path_in_key = true;
            for x in &args[1..] {
                match x {
                    Value::List(l) => {
                        exclude = l.borrow().iter().map(|v| v.to_java_string()).collect()
                    }
                    Value::Bool(b) => path_in_key = *b,
                    _ => return Err(bad()),
                }
            }
            let mut out = indexmap::IndexMap::new();
            flat(&args[0], &mut out, &exclude, "", path_in_key);
            ctx.alloc(out.iter().map(|(k, v)| k.len() + v.shallow_size()).sum())?;
            Value::map(out)
        }
        "encodeURI" if n == 1 => Value::string(encode_uri(&str_param(&a(0), name)?)),
        "decodeURI" if n == 1 => Value::string(decode_uri(&str_param(&a(0), name)?)?),
        "raiseError" if n == 1 || n == 2 => return Err(err(a(0).to_java_string())),
        "isBinary" if n == 1 => Value::Int(opt_str(&a(0)).map_or(-1, |s| is_binary(&s))),
        "isOctal" if n == 1 => Value::Int(opt_str(&a(0)).map_or(-1, |s| is_octal(&s))),
        "isDecimal" if n == 1 => Value::Int(opt_str(&a(0)).map_or(-1, |s| is_decimal(&s))),
        "isHexadecimal" if n == 1 => Value::Int(opt_str(&a(0)).map_or(-1, |s| is_hexadecimal(&s))),
        "bytesToExecutionArrayList" if n == 1 => {
            let b = bytes_lenient(&a(0))?;
            byte_list(ctx, &b)?
        }
        "padStart" | "padEnd" if n == 3 => {
            let s = str_param(&a(0), name)?;
            let target = int_arg(&a(1), name)?;
            let c = char_arg(&a(2))?;
            let len = crate::lib_methods::utf16_len(&s) as i64;
            let pad: String = std::iter::repeat_n(c, (target - len).max(0) as usize).collect();
            ctx.check_str(pad.len() + s.len())?;
            Value::string(if name == "padStart" {
                format!("{pad}{s}")
            } else {
                format!("{s}{pad}")
            })
        }
        "parseByteToBinaryArray" if (1..=3).contains(&n) => {
            let b = int_arg(&a(0), name)? as i8 as i64;
            let bin_len = if n > 1 { int_arg(&a(1), name)? } else { 8 };
            let be = if n > 2 { bool_arg(&a(2)) } else { true };
            if bin_len < 0 {
                return Err(err(format!("NegativeArraySizeException: {bin_len}")));
            }
            let l = bin_len as usize;
            let mut bins = vec![0i8; l];
            for i in 0..l {
                let bit = ((b >> i.min(63)) & 1) as i8;
                if be {
                    bins[l - 1 - i] = bit
                } else {
                    bins[i] = bit
                }
            }
            Value::list(bins.into_iter().map(Value::Byte).collect())
        }
        "parseBytesToBinaryArray" if n == 1 || n == 2 => {
            let d = bytes_lenient(&a(0))?;
            let bin_len = if n == 2 {
                int_arg(&a(1), name)?
            } else {
                d.len() as i64 * 8
            };
            let len8 = validate_length(d.len(), 0, 8);
            validate_number_by_length(d.len(), 0, len8, 8)?;
            let v = buffer_value(&d, 0, len8, true, 8)? as i64;
            long_to_bins(v, bin_len)
        }
        "parseLongToBinaryArray" if n == 1 || n == 2 => {
            let v = long_arg(&a(0), name)?;
            let bin_len = if n == 2 { int_arg(&a(1), name)? } else { 64 };
            long_to_bins(v, bin_len)
        }
        "parseBinaryArrayToInt" if (1..=3).contains(&n) => {
            let d = bytes_lenient(&a(0))?;
            let offset = if n > 1 { int_arg(&a(1), name)? } else { 0 };
            let length = if n > 2 {
                int_arg(&a(2), name)?
            } else {
                d.len() as i64
            };
            let end = (length + offset).min(d.len() as i64);
            let mut r: i32 = 0;
            let mut i = offset.max(0);
            while i < end {
                r = (r << 1) | (d[i as usize] as i32 & 1);
                i += 1;
            }
            if d.len() == 8 && offset == 0 && d[0] == 1 {
                r = r.wrapping_sub(1i32.wrapping_shl((end - offset) as u32));
            }
            Value::Int(r)
        }
        "isInsidePolygon" | "isInsideCircle" if n == 3 => {
            let coord = |v: &Value| {
                v.coerce_f64()
                    .ok_or_else(|| err(format!("cannot convert {} to double", v.type_name())))
            };
            let (lat, lng) = (coord(&a(0))?, coord(&a(1))?);
            let perimeter = str_param(&a(2), name)?;
            Value::Bool(if name == "isInsidePolygon" {
                crate::lib_geo::is_inside_polygon(lat, lng, &perimeter)?
            } else {
                crate::lib_geo::is_inside_circle(lat, lng, &perimeter)?
            })
        }
        "isMap" if n == 1 => Value::Bool(matches!(a(0), Value::Map(_))),
        "isList" if n == 1 => Value::Bool(matches!(a(0), Value::List(_))),
        "isArray" if n == 1 => Value::Bool(false),
        "isSet" if n == 1 => Value::Bool(matches!(a(0), Value::Set(_))),
        "newSet" if n == 0 => Value::Set(Rc::new(std::cell::RefCell::new(Vec::new()))),
        "toSet" if n == 1 => {
            let items = match &args[0] {
                Value::List(l) | Value::Set(l) => l.borrow().clone(),
                Value::Null | Value::Undef => {
                    return Err(err(
                        "Cannot invoke \"java.util.Collection.size()\" because \"c\" is null",
                    ));
                }
                v => {
                    return Err(err(format!(
                        "toSet: expected a List, got {}",
                        v.type_name()
                    )));
                }
            };
            let mut out: Vec<Value> = Vec::with_capacity(items.len());
            for v in items {
                if !out.iter().any(|x| x.java_equals(&v)) {
                    out.push(v);
                }
            }
            ctx.alloc(out.iter().map(|v| v.shallow_size() + 4).sum())?;
            Value::Set(Rc::new(std::cell::RefCell::new(out)))
        }
        _ => {
            return Err(if is_helper(name) {
                bad()
            } else {
                err(format!(
                    "unable to resolve method: {name}() [arglength={n}]"
                ))
            });
        }
    })
}

fn long_to_bins(v: i64, bin_len: i64) -> Value {
    let len = bin_len.clamp(0, 64) as usize;
    let mut bins = vec![Value::Byte(0); len];
    for i in 0..len {
        bins[len - 1 - i] = Value::Byte(((v >> i) & 1) as i8);
    }
    Value::list(bins)
}

fn is_helper(name: &str) -> bool {
    name.starts_with("parse")
        || name.starts_with("bytes")
        || name.starts_with("hex")
        || name.starts_with("is")
}
