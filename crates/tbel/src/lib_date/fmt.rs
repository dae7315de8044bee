//! Zones and Java `DateTimeFormatter`-style formatting (English names, `en-US` styles).

use std::str::FromStr;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{OffsetName, Tz};

use crate::error::{Result, TbelError};

fn err(m: impl Into<String>) -> TbelError {
    TbelError::runtime(m)
}

/// A `java.time.ZoneId`: a region or a fixed offset.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Zone {
    Region(Tz),
    Fixed(FixedOffset),
}

fn parse_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (h, m, sec): (i32, i32, i32) = match parts.as_slice() {
        [h] if h.len() <= 2 => (h.parse().ok()?, 0, 0),
        [hm] if hm.len() == 4 => (hm[..2].parse().ok()?, hm[2..].parse().ok()?, 0),
        [h, m] => (h.parse().ok()?, m.parse().ok()?, 0),
        [h, m, s] => (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    if h > 18 || m > 59 || sec > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + sec))
}

/// `ZoneId.of(id)`.
pub(crate) fn zone_of(id: &str) -> Result<Zone> {
    if id == "Z" {
        return Ok(Zone::Fixed(FixedOffset::east_opt(0).unwrap()));
    }
    if let Some(off) = parse_offset(id) {
        return Ok(Zone::Fixed(FixedOffset::east_opt(off).unwrap()));
    }
    for p in ["UTC", "GMT", "UT"] {
        if let Some(rest) = id.strip_prefix(p)
            && !rest.is_empty()
            && let Some(off) = parse_offset(rest)
        {
            return Ok(Zone::Fixed(FixedOffset::east_opt(off).unwrap()));
        }
    }
    Tz::from_str(id)
        .map(Zone::Region)
        .map_err(|_| err(format!("Unknown time-zone ID: {id}")))
}

pub(crate) const UTC_ZONE: Zone = Zone::Region(Tz::UTC);

impl Zone {
    /// Local date-time → epoch milliseconds as `ZonedDateTime.of` resolves it (a gap moves
    /// forward by its length, an overlap takes the earlier offset).
    pub(crate) fn to_epoch(self, local: NaiveDateTime) -> i64 {
        match self {
            Zone::Fixed(f) => (local - chrono::Duration::seconds(f.local_minus_utc() as i64))
                .and_utc()
                .timestamp_millis(),
            Zone::Region(tz) => match tz.from_local_datetime(&local) {
                chrono::LocalResult::Single(d) => d.timestamp_millis(),
                chrono::LocalResult::Ambiguous(a, _) => a.timestamp_millis(),
                chrono::LocalResult::None => {
                    // Offset before the gap, applied to the local time.
                    let before = tz
                        .offset_from_utc_datetime(&(local - chrono::Duration::hours(12)))
                        .fix()
                        .local_minus_utc();
                    (local - chrono::Duration::seconds(before as i64))
                        .and_utc()
                        .timestamp_millis()
                }
            },
        }
    }

    /// (offset seconds, short name, long name, zone id) at an instant.
    fn describe(self, ms: i64) -> (i32, String, String, String) {
        let utc = chrono::DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .naive_utc();
        match self {
            Zone::Fixed(f) => {
                let off = f.local_minus_utc();
                let id = offset_id(off);
                (off, id.clone(), id.clone(), id)
            }
            Zone::Region(tz) => {
                let o = tz.offset_from_utc_datetime(&utc);
                let off = o.fix().local_minus_utc();
                let abbr = o.abbreviation().unwrap_or("").to_string();
                let short = if abbr.starts_with(['+', '-']) || abbr.is_empty() {
                    gmt_id(off, true)
                } else {
                    abbr.clone()
                };
                let long = long_name(tz.name(), &abbr).unwrap_or_else(|| gmt_id(off, true));
                (off, short, long, tz.name().to_string())
            }
        }
    }
}

fn offset_id(off: i32) -> String {
    if off == 0 {
        return "Z".into();
    }
    let a = off.abs();
    format!(
        "{}{:02}:{:02}",
        if off < 0 { '-' } else { '+' },
        a / 3600,
        a / 60 % 60
    )
}

fn gmt_id(off: i32, long: bool) -> String {
    if off == 0 {
        return "GMT".into();
    }
    let a = off.abs();
    let sign = if off < 0 { '-' } else { '+' };
    if long || a % 3600 != 0 {
        format!("GMT{sign}{:02}:{:02}", a / 3600, a / 60 % 60)
    } else {
        format!("GMT{sign}{}", a / 3600)
    }
}

/// English long zone names for the common abbreviations.
fn long_name(id: &str, abbr: &str) -> Option<String> {
    if matches!(
        id,
        "UTC" | "Etc/UTC" | "Etc/UCT" | "UCT" | "Universal" | "Zulu" | "Etc/Universal" | "Etc/Zulu"
    ) {
        return Some("Coordinated Universal Time".into());
    }
    let n = match abbr {
        "GMT" => "Greenwich Mean Time",
        "EST" => "Eastern Standard Time",
        "EDT" => "Eastern Daylight Time",
        "CST" if id.starts_with("America") => "Central Standard Time",
        "CDT" if id.starts_with("America") => "Central Daylight Time",
        "MST" => "Mountain Standard Time",
        "MDT" => "Mountain Daylight Time",
        "PST" => "Pacific Standard Time",
        "PDT" => "Pacific Daylight Time",
        "AKST" => "Alaska Standard Time",
        "AKDT" => "Alaska Daylight Time",
        "HST" => "Hawaii-Aleutian Standard Time",
        "CET" => "Central European Standard Time",
        "CEST" => "Central European Summer Time",
        "EET" => "Eastern European Standard Time",
        "EEST" => "Eastern European Summer Time",
        "WET" => "Western European Standard Time",
        "WEST" => "Western European Summer Time",
        "BST" if id == "Europe/London" => "British Summer Time",
        "MSK" => "Moscow Standard Time",
        "IST" if id == "Asia/Kolkata" || id == "Asia/Calcutta" => "India Standard Time",
        "JST" => "Japan Standard Time",
        "KST" => "Korean Standard Time",
        "AEST" => "Australian Eastern Standard Time",
        "AEDT" => "Australian Eastern Daylight Time",
        _ => return None,
    };
    Some(n.into())
}

/// The wall-clock fields of an instant in a zone.
pub(crate) struct Local {
    pub(crate) year: i64,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
    pub(crate) milli: u32,
    /// 1 = Monday .. 7 = Sunday.
    pub(crate) weekday: u32,
    pub(crate) day_of_year: u32,
    offset: i32,
    short: String,
    long: String,
    id: String,
}

impl Local {
    /// Year, month, day, hour, minute, second and millisecond, in the order `from_fields` takes.
    pub(crate) fn date_time(&self) -> [i64; 7] {
        [
            self.year,
            self.month as i64,
            self.day as i64,
            self.hour as i64,
            self.minute as i64,
            self.second as i64,
            self.milli as i64,
        ]
    }
}

pub(crate) fn local_fields(ms: i64, zone: Zone) -> Local {
    use chrono::{Datelike, Timelike};
    let (offset, short, long, id) = zone.describe(ms);
    let t = chrono::DateTime::<Utc>::from_timestamp_millis(ms + offset as i64 * 1000)
        .unwrap_or_default()
        .naive_utc();
    Local {
        year: t.year() as i64,
        month: t.month(),
        day: t.day(),
        hour: t.hour(),
        minute: t.minute(),
        second: t.second(),
        milli: t.nanosecond() / 1_000_000,
        weekday: t.weekday().number_from_monday(),
        day_of_year: t.ordinal(),
        offset,
        short,
        long,
        id,
    }
}

pub(crate) fn naive(
    y: i64,
    mo: i64,
    d: i64,
    h: i64,
    mi: i64,
    s: i64,
    ms: i64,
) -> Result<NaiveDateTime> {
    let check = |v: i64, lo: i64, hi: i64, what: &str| {
        if v < lo || v > hi {
            Err(err(format!(
                "Invalid value for {what} (valid values {lo} - {hi}): {v}"
            )))
        } else {
            Ok(())
        }
    };
    check(mo, 1, 12, "MonthOfYear")?;
    check(d, 1, 31, "DayOfMonth")?;
    check(h, 0, 23, "HourOfDay")?;
    check(mi, 0, 59, "MinuteOfHour")?;
    check(s, 0, 59, "SecondOfMinute")?;
    check(ms, 0, 999, "MilliOfSecond")?;
    let date = NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32).ok_or_else(|| {
        err(format!(
            "Invalid date '{} {d}'",
            MONTHS[mo as usize - 1].to_uppercase()
        ))
    })?;
    Ok(date
        .and_hms_milli_opt(h as u32, mi as u32, s as u32, ms as u32)
        .unwrap())
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// `FormatStyle` of `DateTimeFormatOptions` (`full`, `long`, `medium`, `short`).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Style {
    Full,
    Long,
    Medium,
    Short,
}

impl Style {
    pub(crate) fn parse(s: &str) -> Result<Style> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "full" => Style::Full,
            "long" => Style::Long,
            "medium" => Style::Medium,
            "short" => Style::Short,
            _ => {
                return Err(err(format!(
                    "No enum constant java.time.format.FormatStyle.{}",
                    s.to_uppercase()
                )));
            }
        })
    }
    pub(crate) fn date_pattern(self) -> &'static str {
        match self {
            Style::Full => "EEEE, MMMM d, y",
            Style::Long => "MMMM d, y",
            Style::Medium => "MMM d, y",
            Style::Short => "M/d/yy",
        }
    }
    pub(crate) fn time_pattern(self) -> &'static str {
        match self {
            Style::Full => "h:mm:ss a zzzz",
            Style::Long => "h:mm:ss a z",
            Style::Medium => "h:mm:ss a",
            Style::Short => "h:mm a",
        }
    }
    pub(crate) fn date_time_pattern(date: Style, time: Style) -> String {
        let join = if matches!(date, Style::Full | Style::Long) {
            " 'at' "
        } else {
            ", "
        };
        format!("{}{join}{}", date.date_pattern(), time.time_pattern())
    }
}

fn pad(out: &mut String, v: i64, width: usize) {
    if v < 0 {
        out.push('-');
    }
    let s = v.unsigned_abs().to_string();
    for _ in s.len()..width {
        out.push('0');
    }
    out.push_str(&s);
}

fn offset_text(out: &mut String, off: i32, colon: bool, z_for_zero: bool, with_secs: bool) {
    if off == 0 && z_for_zero {
        out.push('Z');
        return;
    }
    let a = off.abs();
    out.push(if off < 0 { '-' } else { '+' });
    pad(out, (a / 3600) as i64, 2);
    if colon {
        out.push(':');
    }
    pad(out, (a / 60 % 60) as i64, 2);
    if with_secs && a % 60 != 0 {
        if colon {
            out.push(':');
        }
        pad(out, (a % 60) as i64, 2);
    }
}

/// Formats with a Java `DateTimeFormatter` pattern (English text).
pub(crate) fn format_pattern(t: &Local, pattern: &str) -> Result<String> {
    let c: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\'' {
            if c.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < c.len() {
                if c[i] == '\'' {
                    if c.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                out.push(c[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if !ch.is_ascii_alphabetic() {
            if ch != '[' && ch != ']' {
                out.push(ch);
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while i + n < c.len() && c[i + n] == ch {
            n += 1;
        }
        i += n;
        let h12 = |h: u32| if h.is_multiple_of(12) { 12 } else { h % 12 } as i64;
        match ch {
            'G' => out.push_str(if n == 4 {
                "Anno Domini"
            } else if n == 5 {
                "A"
            } else {
                "AD"
            }),
            'y' | 'u' | 'Y' => {
                if n == 2 {
                    pad(&mut out, t.year.rem_euclid(100), 2)
                } else {
                    pad(&mut out, t.year, n)
                }
            }
            'M' | 'L' => match n {
                1 | 2 => pad(&mut out, t.month as i64, n),
                3 => out.push_str(&MONTHS[t.month as usize - 1][..3]),
                4 => out.push_str(MONTHS[t.month as usize - 1]),
                _ => out.push_str(&MONTHS[t.month as usize - 1][..1]),
            },
            'd' => pad(&mut out, t.day as i64, n),
            'D' => pad(&mut out, t.day_of_year as i64, n),
            'E' | 'e' | 'c' if ch == 'E' || n >= 3 => {
                let name = DAYS[t.weekday as usize - 1];
                match n {
                    1..=3 => out.push_str(&name[..3]),
                    4 => out.push_str(name),
                    _ => out.push_str(&name[..1]),
                }
            }
            'e' | 'c' => pad(&mut out, (t.weekday % 7 + 1) as i64, n),
            'a' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'H' => pad(&mut out, t.hour as i64, n),
            'h' => pad(&mut out, h12(t.hour), n),
            'k' => pad(&mut out, if t.hour == 0 { 24 } else { t.hour as i64 }, n),
            'K' => pad(&mut out, (t.hour % 12) as i64, n),
            'm' => pad(&mut out, t.minute as i64, n),
            's' => pad(&mut out, t.second as i64, n),
            'S' => {
                let digits = format!("{:03}", t.milli) + &"0".repeat(n.saturating_sub(3));
                out.push_str(&digits[..n.min(digits.len())]);
            }
            'A' => pad(
                &mut out,
                ((t.hour * 3600 + t.minute * 60 + t.second) * 1000 + t.milli) as i64,
                n,
            ),
            'n' => pad(&mut out, t.milli as i64 * 1_000_000, n),
            'V' => out.push_str(&t.id),
            'z' => out.push_str(if n >= 4 { &t.long } else { &t.short }),
            'O' => out.push_str(&gmt_id(t.offset, n >= 4)),
            'Z' => match n {
                1..=3 => offset_text(&mut out, t.offset, false, false, false),
                4 => out.push_str(&gmt_id(t.offset, true)),
                _ => offset_text(&mut out, t.offset, true, true, true),
            },
            'X' | 'x' => {
                let z = ch == 'X';
                if n == 1 {
                    if t.offset == 0 && z {
                        out.push('Z');
                    } else {
                        let a = t.offset.abs();
                        out.push(if t.offset < 0 { '-' } else { '+' });
                        pad(&mut out, (a / 3600) as i64, 2);
                        if a / 60 % 60 != 0 {
                            pad(&mut out, (a / 60 % 60) as i64, 2);
                        }
                    }
                } else {
                    offset_text(&mut out, t.offset, n % 2 == 1, z, n >= 4);
                }
            }
            _ => return Err(err(format!("Unknown pattern letter: {ch}"))),
        }
    }
    Ok(out)
}
