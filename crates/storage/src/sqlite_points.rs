//! The points of one `ts_kv_recent` row: an uplink writes one row per entity holding all its
//! points in one encoded value, instead of one row per key (each row inserted, later moved into
//! the history file and deleted again: the per-key cost of an uplink). SQL reads them through
//! the `recent_points(points)` table-valued function registered on every connection, and the
//! temporary view `ts_kv_recent_points` (one row per point, `src` the row's rowid) built on it,
//! so the compactor, latest values, history and entity queries stay one statement each.
//!
//! The encoding is ours and versioned by its first byte. Each point: key id (i64), ts (i64),
//! a type tag and the value: a bool as one byte, a long or a double (its bits, so every double
//! comes back exactly) as 8 bytes, text and JSON as a u32 length and UTF-8 bytes; little-endian.
//!
//! A row never holds two points of the same (key, ts): the writer starts a new row for such a
//! point, so "the later write wins" stays decidable by rowid alone (as with one row per point).

use std::ffi::c_int;
use std::marker::PhantomData;

use rusqlite::ffi;
use rusqlite::vtab::{
    eponymous_only_module, Context, Filters, IndexConstraintOp, IndexInfo, VTab, VTabConfig, VTabConnection, VTabCursor,
};
use rusqlite::Connection;

use crate::model::KvValue;

/// The first byte of every encoded row.
const FORMAT: u8 = 1;

const TAG_FALSE: u8 = 0;
const TAG_TRUE: u8 = 1;
const TAG_LONG: u8 = 2;
const TAG_DOUBLE: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_JSON: u8 = 5;

/// Builds the encoded points of one row.
pub(crate) struct PointsEncoder {
    bytes: Vec<u8>,
    count: usize,
}

impl PointsEncoder {
    pub(crate) fn new() -> PointsEncoder {
        PointsEncoder { bytes: vec![FORMAT], count: 0 }
    }

    pub(crate) fn push(&mut self, key: i64, ts: i64, value: &KvValue) {
        self.bytes.extend_from_slice(&key.to_le_bytes());
        self.bytes.extend_from_slice(&ts.to_le_bytes());
        match value {
            KvValue::Bool(b) => self.bytes.push(if *b { TAG_TRUE } else { TAG_FALSE }),
            KvValue::Long(l) => {
                self.bytes.push(TAG_LONG);
                self.bytes.extend_from_slice(&l.to_le_bytes());
            }
            KvValue::Double(d) => {
                self.bytes.push(TAG_DOUBLE);
                self.bytes.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            KvValue::Str(s) | KvValue::Json(s) => {
                self.bytes.push(if matches!(value, KvValue::Str(_)) { TAG_STR } else { TAG_JSON });
                self.bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.bytes.extend_from_slice(s.as_bytes());
            }
        }
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.truncate(1);
        self.count = 0;
    }
}

/// One decoded point; text borrows from the row's bytes.
#[derive(Debug, PartialEq)]
pub(crate) struct Point<'a> {
    pub key: i64,
    pub ts: i64,
    pub value: PointValue<'a>,
}

#[derive(Debug, PartialEq)]
pub(crate) enum PointValue<'a> {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(&'a str),
    Json(&'a str),
}

impl PointValue<'_> {
    /// A stored value seen as a point's value (text borrowed).
    pub(crate) fn of(value: &KvValue) -> PointValue<'_> {
        match value {
            KvValue::Bool(b) => PointValue::Bool(*b),
            KvValue::Long(l) => PointValue::Long(*l),
            KvValue::Double(d) => PointValue::Double(*d),
            KvValue::Str(s) => PointValue::Str(s),
            KvValue::Json(s) => PointValue::Json(s),
        }
    }

    pub(crate) fn to_kv(&self) -> KvValue {
        match *self {
            PointValue::Bool(b) => KvValue::Bool(b),
            PointValue::Long(l) => KvValue::Long(l),
            PointValue::Double(d) => KvValue::Double(d),
            PointValue::Str(s) => KvValue::Str(s.to_string()),
            PointValue::Json(s) => KvValue::Json(s.to_string()),
        }
    }
}

/// Decodes the point at `*at` and moves past it; `None` at the end or on bytes that are not
/// this format (a damaged row reads as fewer points rather than failing every read).
fn decode_at<'a>(bytes: &'a [u8], at: &mut usize) -> Option<Point<'a>> {
    let rest = bytes.get(*at..)?;
    let key = i64::from_le_bytes(rest.get(0..8)?.try_into().ok()?);
    let ts = i64::from_le_bytes(rest.get(8..16)?.try_into().ok()?);
    let tag = *rest.get(16)?;
    let (value, len) = match tag {
        TAG_FALSE | TAG_TRUE => (PointValue::Bool(tag == TAG_TRUE), 17),
        TAG_LONG => (PointValue::Long(i64::from_le_bytes(rest.get(17..25)?.try_into().ok()?)), 25),
        TAG_DOUBLE => (PointValue::Double(f64::from_bits(u64::from_le_bytes(rest.get(17..25)?.try_into().ok()?))), 25),
        TAG_STR | TAG_JSON => {
            let n = u32::from_le_bytes(rest.get(17..21)?.try_into().ok()?) as usize;
            let text = std::str::from_utf8(rest.get(21..21 + n)?).ok()?;
            (if tag == TAG_STR { PointValue::Str(text) } else { PointValue::Json(text) }, 21 + n)
        }
        _ => return None,
    };
    *at += len;
    Some(Point { key, ts, value })
}

/// The points of an encoded row, in the order they were written.
pub(crate) fn decode(bytes: &[u8]) -> impl Iterator<Item = Point<'_>> {
    let mut at = if bytes.first() == Some(&FORMAT) { 1 } else { bytes.len() };
    std::iter::from_fn(move || decode_at(bytes, &mut at))
}

/// How many points an encoded row holds.
pub(crate) fn count(bytes: &[u8]) -> usize {
    decode(bytes).count()
}

/// Registers `recent_points` and creates the `ts_kv_recent_points` view on a connection.
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_module(c"recent_points", eponymous_only_module::<RecentPointsTab>(), None)?;
    create_view(conn)
}

/// The view alone (SQLite checks temporary views when a table is dropped or renamed, so a
/// conversion of `ts_kv_recent` drops the view first and creates it again after).
pub(crate) fn create_view(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TEMP VIEW IF NOT EXISTS ts_kv_recent_points AS \
         SELECT r.rowid AS src, r.entity_id AS entity_id, p.key AS key, p.ts AS ts, p.bool_v AS bool_v, \
                p.long_v AS long_v, p.dbl_v AS dbl_v, p.str_v AS str_v, p.json_v AS json_v \
         FROM main.ts_kv_recent AS r, recent_points(r.points) AS p",
    )
}

/// Column numbers of `recent_points`; `points` is the hidden argument.
const COLUMN_KEY: c_int = 0;
const COLUMN_TS: c_int = 1;
const COLUMN_BOOL: c_int = 2;
const COLUMN_LONG: c_int = 3;
const COLUMN_DOUBLE: c_int = 4;
const COLUMN_STR: c_int = 5;
const COLUMN_JSON: c_int = 6;
const COLUMN_POINTS: c_int = 7;

#[repr(C)]
struct RecentPointsTab {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab,
}

unsafe impl<'vtab> VTab<'vtab> for RecentPointsTab {
    type Aux = ();
    type Cursor = RecentPointsCursor<'vtab>;

    fn connect(db: &mut VTabConnection, _aux: Option<&()>, _args: &[&[u8]]) -> rusqlite::Result<(String, Self)> {
        db.config(VTabConfig::Innocuous)?;
        Ok((
            "CREATE TABLE x(key, ts, bool_v, long_v, dbl_v, str_v, json_v, points hidden)".to_owned(),
            RecentPointsTab { base: ffi::sqlite3_vtab::default() },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<()> {
        // Only usable with its argument: a plan without it is refused, so SQLite puts the
        // ts_kv_recent row first and calls us once per row (as json_each does).
        let mut argument = None;
        for (i, constraint) in info.constraints().enumerate() {
            if constraint.column() == COLUMN_POINTS {
                if !constraint.is_usable() || constraint.operator() != IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
                    return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CONSTRAINT), None));
                }
                argument = Some(i);
            }
        }
        let Some(i) = argument else {
            return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CONSTRAINT), None));
        };
        let mut usage = info.constraint_usage(i);
        usage.set_argv_index(1);
        usage.set_omit(true);
        info.set_estimated_cost(1.0);
        info.set_estimated_rows(10);
        Ok(())
    }

    fn open(&'vtab mut self) -> rusqlite::Result<RecentPointsCursor<'vtab>> {
        Ok(RecentPointsCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            bytes: Vec::new(),
            next_at: 0,
            current: None,
            row: 0,
            phantom: PhantomData,
        })
    }
}

/// The current point is kept as offsets into `bytes` (decoded again per column would cost more
/// than keeping the parsed value; text is the only borrowed part).
#[repr(C)]
struct RecentPointsCursor<'vtab> {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab_cursor,
    bytes: Vec<u8>,
    next_at: usize,
    current: Option<OwnedPoint>,
    row: i64,
    phantom: PhantomData<&'vtab RecentPointsTab>,
}

struct OwnedPoint {
    key: i64,
    ts: i64,
    value: OwnedValue,
}

enum OwnedValue {
    Bool(bool),
    Long(i64),
    Double(f64),
    /// Text as a range of the row's bytes.
    Str(usize, usize),
    Json(usize, usize),
}

impl RecentPointsCursor<'_> {
    fn advance(&mut self) {
        let start = self.next_at;
        let point = decode_at(&self.bytes, &mut self.next_at);
        self.current = point.map(|p| {
            let range = |text: &str| {
                let offset = text.as_ptr() as usize - self.bytes.as_ptr() as usize;
                (offset, offset + text.len())
            };
            let value = match p.value {
                PointValue::Bool(b) => OwnedValue::Bool(b),
                PointValue::Long(l) => OwnedValue::Long(l),
                PointValue::Double(d) => OwnedValue::Double(d),
                PointValue::Str(s) => {
                    let (a, b) = range(s);
                    OwnedValue::Str(a, b)
                }
                PointValue::Json(s) => {
                    let (a, b) = range(s);
                    OwnedValue::Json(a, b)
                }
            };
            OwnedPoint { key: p.key, ts: p.ts, value }
        });
        debug_assert!(self.current.is_none() || self.next_at > start);
        self.row += 1;
    }

    fn text(&self, from: usize, to: usize) -> &str {
        // Checked as UTF-8 when decoded.
        std::str::from_utf8(&self.bytes[from..to]).unwrap_or_default()
    }
}

unsafe impl VTabCursor for RecentPointsCursor<'_> {
    fn filter(&mut self, _idx_num: c_int, _idx_str: Option<&str>, args: &Filters<'_>) -> rusqlite::Result<()> {
        self.bytes.clear();
        if let Some(rusqlite::types::ValueRef::Blob(b)) = args.iter().next() {
            self.bytes.extend_from_slice(b);
        }
        self.next_at = if self.bytes.first() == Some(&FORMAT) { 1 } else { self.bytes.len() };
        self.row = 0;
        self.advance();
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.advance();
        Ok(())
    }

    fn eof(&self) -> bool {
        self.current.is_none()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let Some(p) = &self.current else { return ctx.set_result(&rusqlite::types::Null) };
        match (i, &p.value) {
            (COLUMN_KEY, _) => ctx.set_result(&p.key),
            (COLUMN_TS, _) => ctx.set_result(&p.ts),
            (COLUMN_BOOL, OwnedValue::Bool(b)) => ctx.set_result(b),
            (COLUMN_LONG, OwnedValue::Long(l)) => ctx.set_result(l),
            (COLUMN_DOUBLE, OwnedValue::Double(d)) => ctx.set_result(d),
            (COLUMN_STR, OwnedValue::Str(a, b)) => ctx.set_result(&self.text(*a, *b)),
            (COLUMN_JSON, OwnedValue::Json(a, b)) => ctx.set_result(&self.text(*a, *b)),
            (COLUMN_POINTS, _) => ctx.set_result(&self.bytes),
            _ => ctx.set_result(&rusqlite::types::Null),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_comes_back_exactly_in_order() {
        let values = [
            KvValue::Bool(true),
            KvValue::Bool(false),
            KvValue::Long(i64::MIN),
            KvValue::Double(0.1 + 0.2),
            KvValue::Double(-0.0),
            KvValue::Str("température ✓".into()),
            KvValue::Json(r#"{"a":[1,2]}"#.into()),
            KvValue::Str(String::new()),
        ];
        let mut encoder = PointsEncoder::new();
        for (i, v) in values.iter().enumerate() {
            encoder.push(i as i64 + 7, 1_700_000_000_000 + i as i64, v);
        }
        let decoded: Vec<Point> = decode(encoder.bytes()).collect();
        assert_eq!(decoded.len(), values.len());
        for (i, (p, v)) in decoded.iter().zip(&values).enumerate() {
            assert_eq!((p.key, p.ts), (i as i64 + 7, 1_700_000_000_000 + i as i64));
            let back = p.value.to_kv();
            match (&back, v) {
                (KvValue::Double(a), KvValue::Double(b)) => assert_eq!(a.to_bits(), b.to_bits()),
                _ => assert_eq!(&back, v),
            }
        }
    }

    #[test]
    fn the_view_yields_one_row_per_point_with_sql_types() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE ts_kv_recent (entity_id BLOB NOT NULL, points BLOB NOT NULL)").unwrap();
        register(&conn).unwrap();
        let mut encoder = PointsEncoder::new();
        encoder.push(1, 10, &KvValue::Long(5));
        encoder.push(2, 10, &KvValue::Double(2.5));
        encoder.push(3, 11, &KvValue::Str("x".into()));
        conn.execute("INSERT INTO ts_kv_recent VALUES (x'01', ?1)", [encoder.bytes()]).unwrap();
        encoder.clear();
        encoder.push(1, 12, &KvValue::Bool(true));
        conn.execute("INSERT INTO ts_kv_recent VALUES (x'02', ?1)", [encoder.bytes()]).unwrap();
        let rows: Vec<(i64, i64, i64, String)> = conn
            .prepare(
                "SELECT src, key, ts, coalesce(CAST(bool_v AS TEXT), CAST(long_v AS TEXT), CAST(dbl_v AS TEXT), str_v, json_v, 'null') \
                 FROM ts_kv_recent_points WHERE src > 0 ORDER BY src, key",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, 1, 10, "5".to_string()),
                (1, 2, 10, "2.5".to_string()),
                (1, 3, 11, "x".to_string()),
                (2, 1, 12, "1".to_string())
            ]
        );
        let of_b: i64 = conn.query_row("SELECT count(*) FROM ts_kv_recent_points WHERE entity_id = x'02'", [], |r| r.get(0)).unwrap();
        assert_eq!(of_b, 1);
    }
}
