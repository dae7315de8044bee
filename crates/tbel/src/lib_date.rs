//! TbDate: `new Date(...)`, `Date.now()` and the JavaScript-style getters (UTC).

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{Result, TbelError};
use crate::lib_methods::int_arg;
use crate::value::Value;

fn err(m: impl Into<String>) -> TbelError {
    TbelError::runtime(m)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1-12, day, hour, minute, second, millis, weekday 0=Sunday)
fn fields(ms: i64) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let wd = (days + 4).rem_euclid(7);
    (
        y,
        m,
        d,
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
        wd,
    )
}

fn make(y: i64, mon0: i64, d: i64, h: i64, mi: i64, s: i64, ms: i64) -> i64 {
    let y = y + mon0.div_euclid(12);
    let m = mon0.rem_euclid(12) + 1;
    (days_from_civil(y, m, 1) + d - 1) * 86_400_000 + h * 3_600_000 + mi * 60_000 + s * 1000 + ms
}

pub(crate) fn to_iso(ms: i64) -> String {
    let (y, m, d, h, mi, s, milli, _) = fields(ms);
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    } else {
        format!(
            "{}{:06}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z",
            if y < 0 { '-' } else { '+' },
            y.abs()
        )
    }
}

/// Parses ISO-8601 date-times (`2024-01-02T03:04:05.678Z`, `+02:00` offsets, a space
/// instead of `T`, date only), and RFC 1123 (`Tue, 3 Jun 2008 11:05:30 GMT`).
pub(crate) fn parse(s: &str) -> Option<i64> {
    let t = s.trim();
    let b = t.as_bytes();
    let num = |a: usize, n: usize| -> Option<i64> {
        let p = t.get(a..a + n)?;
        if p.bytes().all(|c| c.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        let mut ms = days_from_civil(y, m, d) * 86_400_000;
        let mut i = 10;
        if i == b.len() {
            return Some(ms);
        }
        if b[i] != b'T' && b[i] != b' ' {
            return None;
        }
        i += 1;
        let (h, mi) = (num(i, 2)?, num(i + 3, 2)?);
        if b.get(i + 2) != Some(&b':') {
            return None;
        }
        i += 5;
        let mut sec = 0;
        if b.get(i) == Some(&b':') {
            sec = num(i + 1, 2)?;
            i += 3;
        }
        let mut frac = 0;
        if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
            i += 1;
            let st = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &t[st..i];
            let d3: String = digits.chars().chain("000".chars()).take(3).collect();
            frac = d3.parse().ok()?;
        }
        ms += h * 3_600_000 + mi * 60_000 + sec * 1000 + frac;
        if i == b.len() || &t[i..] == "Z" || &t[i..] == "z" {
            return Some(ms);
        }
        let sign = match b[i] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let rest = t[i + 1..].replace(':', "");
        if rest.len() != 4 && rest.len() != 2 {
            return None;
        }
        let oh: i64 = rest[..2].parse().ok()?;
        let om: i64 = if rest.len() == 4 {
            rest[2..].parse().ok()?
        } else {
            0
        };
        return Some(ms - sign * (oh * 3_600_000 + om * 60_000));
    }
    // RFC 1123 / JavaScript toUTCString: "Tue, 3 Jun 2008 11:05:30 GMT"
    let parts: Vec<&str> = t.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    if parts.len() >= 5 {
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let d: i64 = parts[1].parse().ok()?;
        let m = MONTHS
            .iter()
            .position(|x| parts[2].to_ascii_lowercase().starts_with(x))? as i64;
        let y: i64 = parts[3].parse().ok()?;
        let hms: Vec<i64> = parts[4]
            .split(':')
            .map(|p| p.parse().ok())
            .collect::<Option<Vec<_>>>()?;
        return Some(make(
            y,
            m,
            d,
            hms[0],
            *hms.get(1).unwrap_or(&0),
            *hms.get(2).unwrap_or(&0),
            0,
        ));
    }
    None
}

fn date(ms: i64) -> Value {
    Value::Date(Rc::new(RefCell::new(ms)))
}

pub(crate) fn construct(args: &[Value]) -> Result<Value> {
    Ok(match args {
        [] => date(now_ms()),
        [Value::Str(s)] => {
            date(parse(s).ok_or_else(|| err(format!("Text '{s}' could not be parsed")))?)
        }
        [Value::Date(d)] => date(*d.borrow()),
        [v] => date(int_arg(v, "Date")?),
        [Value::Str(s), _] | [Value::Str(s), _, _] => {
            date(parse(s).ok_or_else(|| err(format!("Text '{s}' could not be parsed")))?)
        }
        _ => {
            let mut f = [0i64, 0, 1, 0, 0, 0, 0];
            for (i, v) in args.iter().take(7).enumerate() {
                f[i] = int_arg(v, "Date")?;
            }
            date(make(f[0], f[1], f[2], f[3], f[4], f[5], f[6]))
        }
    })
}

pub(crate) fn static_call(member: &str, args: &[Value]) -> Result<Value> {
    Ok(match (member, args.len()) {
        ("now", 0) => Value::Long(now_ms()),
        ("parse", 1) => Value::Long(parse(&args[0].to_java_string()).ok_or_else(|| {
            err(format!(
                "Text '{}' could not be parsed",
                args[0].to_java_string()
            ))
        })?),
        ("UTC", _) if !args.is_empty() => {
            let mut f = [0i64, 0, 1, 0, 0, 0, 0];
            for (i, v) in args.iter().take(7).enumerate() {
                f[i] = int_arg(v, "Date.UTC")?;
            }
            Value::Long(make(f[0], f[1], f[2], f[3], f[4], f[5], f[6]))
        }
        _ => {
            return Err(err(format!(
                "unable to resolve method: Date.{member}() [arglength={}]",
                args.len()
            )));
        }
    })
}

pub(crate) fn method(o: &Value, name: &str, args: Vec<Value>) -> Result<Value> {
    let Value::Date(d) = o else { unreachable!() };
    let ms = *d.borrow();
    let (y, m, day, h, mi, s, milli, wd) = fields(ms);
    let name = name.replace("UTC", "");
    let set = |new: i64| {
        *d.borrow_mut() = new;
        Ok(Value::Long(new))
    };
    let arg = |i: usize| args.get(i).map(|v| int_arg(v, "Date")).transpose();
    Ok(match (name.as_str(), args.len()) {
        ("getTime" | "valueOf", 0) => Value::Long(ms),
        ("getFullYear" | "getYear", 0) => Value::Int(y as i32),
        ("getMonth", 0) => Value::Int((m - 1) as i32),
        ("getDate", 0) => Value::Int(day as i32),
        ("getDay", 0) => Value::Int(wd as i32),
        ("getHours", 0) => Value::Int(h as i32),
        ("getMinutes", 0) => Value::Int(mi as i32),
        ("getSeconds", 0) => Value::Int(s as i32),
        ("getMilliseconds", 0) => Value::Int(milli as i32),
        ("getTimezoneOffset", 0) => Value::Int(0),
        ("toISOString" | "toJSON" | "toString", 0) => Value::string(to_iso(ms)),
        ("toDateString", 0) => Value::string(format!("{y:04}-{m:02}-{day:02}")),
        ("toTimeString", 0) => Value::string(format!("{h:02}:{mi:02}:{s:02}")),
        ("setTime", 1) => return set(arg(0)?.unwrap()),
        ("setFullYear", _) => {
            return set(make(
                arg(0)?.unwrap_or(y),
                arg(1)?.unwrap_or(m - 1),
                arg(2)?.unwrap_or(day),
                h,
                mi,
                s,
                milli,
            ));
        }
        ("setMonth", _) => {
            return set(make(
                y,
                arg(0)?.unwrap_or(m - 1),
                arg(1)?.unwrap_or(day),
                h,
                mi,
                s,
                milli,
            ));
        }
        ("setDate", 1) => return set(make(y, m - 1, arg(0)?.unwrap(), h, mi, s, milli)),
        ("setHours", _) => {
            return set(make(
                y,
                m - 1,
                day,
                arg(0)?.unwrap_or(h),
                arg(1)?.unwrap_or(mi),
                arg(2)?.unwrap_or(s),
                arg(3)?.unwrap_or(milli),
            ));
        }
        ("setMinutes", _) => {
            return set(make(
                y,
                m - 1,
                day,
                h,
                arg(0)?.unwrap_or(mi),
                arg(1)?.unwrap_or(s),
                arg(2)?.unwrap_or(milli),
            ));
        }
        ("setSeconds", _) => {
            return set(make(
                y,
                m - 1,
                day,
                h,
                mi,
                arg(0)?.unwrap_or(s),
                arg(1)?.unwrap_or(milli),
            ));
        }
        ("setMilliseconds", 1) => return set(make(y, m - 1, day, h, mi, s, arg(0)?.unwrap())),
        ("addDays", 1) => return set(ms + arg(0)?.unwrap() * 86_400_000),
        ("addHours", 1) => return set(ms + arg(0)?.unwrap() * 3_600_000),
        ("addMinutes", 1) => return set(ms + arg(0)?.unwrap() * 60_000),
        ("addSeconds", 1) => return set(ms + arg(0)?.unwrap() * 1000),
        ("compareTo", 1) => match &args[0] {
            Value::Date(o) => Value::Int(ms.cmp(&o.borrow()) as i32),
            _ => return Err(err("compareTo: expected a Date")),
        },
        ("before" | "after", 1) => match &args[0] {
            Value::Date(o) => Value::Bool(if name == "before" {
                ms < *o.borrow()
            } else {
                ms > *o.borrow()
            }),
            _ => return Err(err(format!("{name}: expected a Date"))),
        },
        _ => {
            return Err(err(format!(
                "unable to resolve method: TbDate.{name}() [arglength={}]",
                args.len()
            )));
        }
    })
}
