//! TbDate: `new Date(...)`, `Date.now()`, `Date.UTC`, getters and setters as ThingsBoard's
//! TbDate has them (months 1-12, `getDay()` 1 = Monday .. 7 = Sunday), time zones through
//! `chrono-tz`, and `toLocale*String(locale, timeZone | options)`. The server's default zone
//! is UTC; the formatting styles are those of the `en-US` locale (other locales fall back to
//! it).

use std::cell::RefCell;
use std::rc::Rc;

use crate::error::{Result, TbelError};
use crate::lib_methods::long_arg;
use crate::value::Value;

mod fmt;
pub(crate) use fmt::{Zone, format_pattern, local_fields, zone_of};

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

/// Java's `Instant.toString()`: seconds always, milliseconds only when not zero.
pub(crate) fn to_iso(ms: i64) -> String {
    let (y, m, d, h, mi, s, milli, _) = fields(ms);
    let frac = if milli == 0 {
        String::new()
    } else {
        format!(".{milli:03}")
    };
    if (0..=9999).contains(&y) {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z")
    } else {
        format!(
            "{}{:06}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z",
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

/// The server's default zone (ThingsBoard runs in UTC).
const SYSTEM_ZONE: Zone = fmt::UTC_ZONE;

fn parse_err(s: &str) -> TbelError {
    err(format!("Cannot parse value [{s}] as instant"))
}

/// Two-digit years as TbDate reads them: `< 70` → 20xx, `70..=99` → 19xx.
fn full_year(y: i64) -> i64 {
    if y < 70 {
        2000 + y
    } else if y <= 99 {
        1900 + y
    } else {
        y
    }
}

fn from_fields(f: &[i64; 7], zone: Zone) -> Result<i64> {
    let local = fmt::naive(full_year(f[0]), f[1], f[2], f[3], f[4], f[5], f[6])?;
    Ok(zone.to_epoch(local))
}

pub(crate) fn construct(args: &[Value]) -> Result<Value> {
    Ok(match args {
        [] => date(now_ms()),
        [Value::Str(s)] => date(parse(s).ok_or_else(|| parse_err(s))?),
        [Value::Date(d)] => date(*d.borrow()),
        [v] => date(long_arg(v, "Date")?),
        [Value::Str(s), Value::Str(_), rest @ ..] if rest.len() <= 2 => {
            // (text, pattern[, locale[, zone]]): the text is read as ISO/RFC 1123 when it is
            // one; a zone given as the fourth argument applies when the text has none.
            let zone = match rest.get(1) {
                Some(z) => zone_of(&z.to_java_string())?,
                None => SYSTEM_ZONE,
            };
            let ms = parse(s).ok_or_else(|| parse_err(s))?;
            let has_zone = s.ends_with(['Z', 'z']) || s.contains("GMT") || {
                let t = s.get(10..).unwrap_or("");
                t.contains('+') || t.contains('-')
            };
            if has_zone {
                date(ms)
            } else {
                date(from_fields(
                    &local_fields(ms, fmt::UTC_ZONE).date_time(),
                    zone,
                )?)
            }
        }
        _ => {
            // (year, month 1-12, day[, hours, minutes[, seconds[, millis]]][, zone])
            let (nums, zone) = match args.last() {
                Some(Value::Str(z)) => (
                    &args[..args.len() - 1],
                    if z.is_empty() {
                        SYSTEM_ZONE
                    } else {
                        zone_of(z)?
                    },
                ),
                _ => (args, SYSTEM_ZONE),
            };
            if !matches!(nums.len(), 3 | 5 | 6 | 7) {
                return Err(err(format!(
                    "unable to resolve constructor: TbDate() [arglength={}]",
                    args.len()
                )));
            }
            let mut f = [0i64; 7];
            for (i, v) in nums.iter().enumerate() {
                f[i] = long_arg(v, "Date")?;
            }
            date(from_fields(&f, zone)?)
        }
    })
}

pub(crate) fn static_call(member: &str, args: &[Value]) -> Result<Value> {
    Ok(match (member, args.len()) {
        ("now", 0) => Value::Long(now_ms()),
        ("parse", 1) => Value::Long(parse(&args[0].to_java_string()).unwrap_or(-1)),
        ("parse", 2) => Value::Long(parse(&args[0].to_java_string()).unwrap_or(-1)),
        ("UTC", 1..=7) => {
            let mut f = [0i64; 7];
            for (i, v) in args.iter().enumerate() {
                f[i] = long_arg(v, "Date.UTC")?;
            }
            if f[0] == 0 {
                f[0] = 1899;
            }
            if f[1] == 0 {
                f[1] = 12;
            }
            if f[2] == 0 {
                f[2] = 31;
            }
            Value::Long(from_fields(&f, fmt::UTC_ZONE)?)
        }
        _ => {
            return Err(err(format!(
                "unable to resolve method: Date.{member}() [arglength={}]",
                args.len()
            )));
        }
    })
}

/// `DateTimeFormatOptions` from a JSON object string, or a bare zone id.
struct Options {
    zone: Zone,
    date_style: fmt::Style,
    time_style: fmt::Style,
    pattern: Option<String>,
}

fn options(s: Option<&str>) -> Result<Options> {
    let mut o = Options {
        zone: SYSTEM_ZONE,
        date_style: fmt::Style::Short,
        time_style: fmt::Style::Medium,
        pattern: None,
    };
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(o);
    };
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(m)) => {
            let text = |k: &str| m.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
            if let Some(z) = text("timeZone") {
                o.zone = zone_of(z)?;
            }
            if let Some(d) = text("dateStyle") {
                o.date_style = fmt::Style::parse(d)?;
            }
            if let Some(t) = text("timeStyle") {
                o.time_style = fmt::Style::parse(t)?;
            }
            o.pattern = text("pattern").map(str::to_string);
        }
        _ => o.zone = zone_of(s)?,
    }
    Ok(o)
}

#[derive(Clone, Copy)]
enum Kind {
    DateTime,
    Date,
    Time,
    FullDateTime,
    FullDate,
    FullTime,
    Utc,
}

fn to_locale_string(ms: i64, opts: Option<&str>, kind: Kind) -> Result<Value> {
    let o = options(opts)?;
    let zone = if matches!(kind, Kind::Utc) {
        fmt::UTC_ZONE
    } else {
        o.zone
    };
    let pattern = match (&o.pattern, kind) {
        (Some(p), _) => p.clone(),
        (None, Kind::DateTime) => fmt::Style::date_time_pattern(o.date_style, o.time_style),
        (None, Kind::Date) => o.date_style.date_pattern().to_string(),
        (None, Kind::Time) => o.time_style.time_pattern().to_string(),
        (None, Kind::FullDateTime) => {
            fmt::Style::date_time_pattern(fmt::Style::Full, fmt::Style::Full)
        }
        (None, Kind::FullDate) => fmt::Style::Full.date_pattern().to_string(),
        (None, Kind::FullTime) => fmt::Style::Full.time_pattern().to_string(),
        (None, Kind::Utc) => fmt::Style::date_time_pattern(fmt::Style::Full, fmt::Style::Medium),
    };
    Ok(Value::string(format_pattern(
        &local_fields(ms, zone),
        &pattern,
    )?))
}

pub(crate) fn method(o: &Value, name: &str, args: Vec<Value>) -> Result<Value> {
    let Value::Date(d) = o else { unreachable!() };
    let ms = *d.borrow();
    let n = args.len();
    let set = |new: i64| {
        *d.borrow_mut() = new;
        Ok(Value::Null)
    };
    let arg = |i: usize| long_arg(&args[i], "Date");
    let sarg = |i: usize| -> Option<String> {
        args.get(i)
            .filter(|v| !v.is_null())
            .map(Value::to_java_string)
    };
    let l = local_fields(ms, SYSTEM_ZONE);
    let cur = l.date_time();
    // Replace fields from index `from` with the arguments and rebuild the instant.
    let with = |from: usize| -> Result<i64> {
        let mut f = cur;
        for i in 0..n {
            f[from + i] = arg(i)?;
        }
        let local = fmt::naive(f[0], f[1], f[2], f[3], f[4], f[5], f[6])?;
        Ok(SYSTEM_ZONE.to_epoch(local))
    };
    // Year/month setters keep a day past the 28th by counting days from the 1st.
    let with_ym = |from: usize| -> Result<i64> {
        if n >= 3 - from || l.day <= 28 {
            return with(from);
        }
        let mut f = cur;
        for i in 0..n {
            f[from + i] = arg(i)?;
        }
        let local = fmt::naive(f[0], f[1], 1, f[3], f[4], f[5], f[6])?;
        Ok(SYSTEM_ZONE.to_epoch(local) + (l.day as i64 - 1) * 86_400_000)
    };
    let plus_months = |months: i64| -> i64 {
        use chrono::Months;
        let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap_or_default();
        let r = if months >= 0 {
            t.checked_add_months(Months::new(months as u32))
        } else {
            t.checked_sub_months(Months::new(months.unsigned_abs() as u32))
        };
        r.map_or(ms, |r| r.timestamp_millis())
    };
    let name = match name {
        "getYear" => "getFullYear",
        n => n,
    };
    let base = name.replacen("UTC", "", 1);
    Ok(match (base.as_str(), n) {
        ("getTime" | "valueOf" | "parseSecondMilli", 0) => Value::Long(ms),
        ("parseSecond", 0) => Value::Long(ms.div_euclid(1000)),
        ("getFullYear", 0) => Value::Int(l.year as i32),
        ("getMonth", 0) => Value::Int(l.month as i32),
        ("getDate", 0) => Value::Int(l.day as i32),
        ("getDay", 0) => Value::Int(l.weekday as i32),
        ("getHours", 0) => Value::Int(l.hour as i32),
        ("getMinutes", 0) => Value::Int(l.minute as i32),
        ("getSeconds", 0) => Value::Int(l.second as i32),
        ("getMilliseconds", 0) => Value::Int(l.milli as i32),
        ("toISOString" | "toJSON", 0) if name == base => Value::string(to_iso(ms)),
        ("toString", 0..=2) if name == base => {
            to_locale_string(ms, sarg(1).as_deref(), Kind::FullDateTime)?
        }
        ("toDateString", 0..=2) if name == base => {
            to_locale_string(ms, sarg(1).as_deref(), Kind::FullDate)?
        }
        ("toTimeString", 0..=2) if name == base => {
            to_locale_string(ms, sarg(1).as_deref(), Kind::FullTime)?
        }
        ("toString", 0..=1) => to_locale_string(ms, None, Kind::Utc)?,
        ("toLocaleString", 0..=2) => to_locale_string(ms, sarg(1).as_deref(), Kind::DateTime)?,
        ("toLocaleDateString", 0..=2) => {
            if n == 2 {
                to_locale_string(ms, sarg(1).as_deref(), Kind::Date)?
            } else {
                to_locale_string(ms, None, Kind::FullDate)?
            }
        }
        ("toLocaleTimeString", 0..=2) => to_locale_string(ms, sarg(1).as_deref(), Kind::Time)?,
        ("setTime", 1) => return set(arg(0)?),
        ("setFullYear", 1..=3) => return set(with_ym(0)?),
        ("setMonth", 1..=2) => return set(with_ym(1)?),
        ("setDate", 1) => return set(with(2)?),
        ("setHours", 1..=4) => return set(with(3)?),
        ("setMinutes", 1..=3) => return set(with(4)?),
        ("setSeconds", 1..=2) => return set(with(5)?),
        ("setMilliseconds", 1) => return set(with(6)?),
        ("addYears", 1) => return set(plus_months(arg(0)? * 12)),
        ("addMonths", 1) => return set(plus_months(arg(0)?)),
        ("addWeeks", 1) => return set(ms + arg(0)? * 7 * 86_400_000),
        ("addDays", 1) => return set(ms + arg(0)? * 86_400_000),
        ("addHours", 1) => return set(ms + arg(0)? * 3_600_000),
        ("addMinutes", 1) => return set(ms + arg(0)? * 60_000),
        ("addSeconds", 1) => return set(ms + arg(0)? * 1000),
        ("addNanos", 1) => return set(ms + arg(0)?.div_euclid(1_000_000)),
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
                "unable to resolve method: TbDate.{name}() [arglength={n}]"
            )));
        }
    })
}
