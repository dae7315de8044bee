#!/usr/bin/env bash
# `coapgate migrate` on a large data directory: makes a SQLite data directory with POINTS
# time-series points, starts a throwaway PostgreSQL cluster, times the migration into it, and
# removes both.
#
#   scripts/migrate_bench.sh [points] [recent-points] [devices]   (10000000 300000 1000)
#   COAPGATE_BIN=/path/to/coapgate to use a given build; WORK=DIR for the scratch space (default
#   /work/scratch-migrate; the postgres user must be able to reach it: not a 0700 /tmp).
#
# The data directory: `coapgate serve --demo` creates the files (schema, admin, demo converter
# and integration) and is stopped; then Python's sqlite3 adds `devices` devices with 10 keys
# each (8 double, 1 long, 1 boolean), points every ~9 hours through 2025 in the history file
# (hist.ts_kv, with ts_kv_latest), and `recent-points` newer points in ts_kv_recent, not yet
# moved — the state a killed server leaves. Points = devices × 10 × per-series + recent.
set -euo pipefail
cd "$(dirname "$0")/.."
POINTS=${1:-10000000}
RECENT=${2:-300000}
DEVICES=${3:-1000}
. scripts/lib.sh
build_coapgate
WORK=${WORK:-/work/scratch-migrate}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
mkdir -p "$WORK"
SERVER=""
PG_DATA="$WORK/pg"
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  [ -f "$PG_DATA/postmaster.pid" ] && as_postgres "$PG_BIN/pg_ctl" stop -m immediate -D "$PG_DATA" > /dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

# Any free ports: the server only creates the files.
COAP_PORT=0 HTTP_PORT=0 start_demo "$WORK"
kill "$SERVER" && wait "$SERVER" || true
SERVER=""

echo "generating $POINTS points ($RECENT not yet moved) for $DEVICES devices"
start=$(date +%s.%N)
python3 - "$WORK/data/coapgate.db" "$WORK/data/coapgate-history.db" "$POINTS" "$RECENT" "$DEVICES" <<'EOF'
import sqlite3, sys, time, uuid
db, hist, points, recent, devices = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
KEYS = 10
series = devices * KEYS
per_series = (points - recent) // series
recent_per_series = recent // series
START = 1_735_689_600_000  # 2025-01-01T00:00:00Z
STEP = 365 * 86_400_000 // per_series
c = sqlite3.connect(db, isolation_level=None)
c.execute("ATTACH ? AS hist", (hist,))
c.executescript("PRAGMA synchronous=OFF; PRAGMA hist.synchronous=OFF; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-1000000; BEGIN;")
profile = c.execute("SELECT id FROM device_profile WHERE is_default = 1").fetchone()[0]
integration = c.execute("SELECT id FROM integration").fetchone()[0]
now = int(time.time() * 1000)
ids = sorted(uuid.uuid4().bytes for _ in range(devices))
c.executemany(
    "INSERT INTO device (id, created_time, name, type, device_profile_id, label, customer_id, integration_id) VALUES (?, ?, ?, 'meter', ?, NULL, NULL, ?)",
    [(d, now, f"bench-{i:06}", profile, integration) for i, d in enumerate(ids)])
c.execute("CREATE TEMP TABLE gen_dev (n INTEGER PRIMARY KEY, id BLOB NOT NULL)")
c.executemany("INSERT INTO gen_dev (n, id) VALUES (?, ?)", list(enumerate(ids)))
c.execute("CREATE TEMP TABLE gen_key (n INTEGER PRIMARY KEY, key_id INTEGER NOT NULL)")
for n in range(KEYS):
    c.execute("INSERT OR IGNORE INTO key_dictionary (key) VALUES (?)", (f"k{n}",))
    c.execute("INSERT INTO gen_key (n, key_id) SELECT ?, key_id FROM key_dictionary WHERE key = ?", (n, f"k{n}"))
# k0 a long, k1 a boolean, the others doubles.
VALUES = """CASE WHEN k.n = 1 THEN (s.i % 2) END, CASE WHEN k.n = 0 THEN s.i END,
            CASE WHEN k.n > 1 THEN 20.0 + (s.i % 100) / 10.0 + k.n END"""
c.execute(f"""INSERT INTO hist.ts_kv (entity_id, key, ts, bool_v, long_v, dbl_v)
    WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {per_series})
    SELECT d.id, k.key_id, {START} + s.i * {STEP}, {VALUES} FROM gen_dev d, gen_key k, s
    ORDER BY d.id, k.key_id, s.i""")
c.execute(f"""INSERT INTO hist.ts_kv_latest (entity_id, key, ts, bool_v, long_v, dbl_v)
    WITH s(i) AS (SELECT {per_series - 1})
    SELECT d.id, k.key_id, {START} + s.i * {STEP}, {VALUES} FROM gen_dev d, gen_key k, s ORDER BY d.id, k.key_id""")
# Newer points in arrival order, as uplinks append them: every series at each step of 2026, one
# row per device and step with its 10 points encoded as the server does (crates/storage/src/
# sqlite_points.rs: a format byte, then per point key and ts as i64, a type tag, the value).
import struct
key_ids = [r[0] for r in c.execute("SELECT key_id FROM gen_key ORDER BY n")]
def row(i):
    out = [b"\x01"]
    ts = START + i * STEP
    for n, key_id in enumerate(key_ids):
        out.append(struct.pack("<qq", key_id, ts))
        if n == 0:
            out.append(b"\x02" + struct.pack("<q", i))
        elif n == 1:
            out.append(b"\x01" if i % 2 else b"\x00")
        else:
            out.append(b"\x03" + struct.pack("<d", 20.0 + (i % 100) / 10.0 + n))
    return b"".join(out)
for i in range(per_series, per_series + recent_per_series):
    points = row(i)
    c.executemany("INSERT INTO ts_kv_recent (entity_id, points) VALUES (?, ?)", [(d, points) for d in ids])
c.execute("COMMIT")
waiting = c.execute("SELECT count(*) FROM ts_kv_recent WHERE rowid > (SELECT moved_upto FROM hist.compaction)").fetchone()[0]
total = c.execute("SELECT count(*) FROM hist.ts_kv").fetchone()[0] + waiting * KEYS
print(f"  {total} points: {series} series of {per_series} in the history, {recent_per_series} each not yet moved")
c.execute("PRAGMA main.wal_checkpoint(TRUNCATE)")
c.execute("PRAGMA hist.wal_checkpoint(TRUNCATE)")
EOF
echo "  generated in $(echo "$(date +%s.%N) - $start" | bc) s; data directory: $(du -sh "$WORK/data" | cut -f1)"

# A throwaway cluster with PostgreSQL's default settings, on a free loopback port.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$PG_DATA" && [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DATA"
as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 > /dev/null
as_postgres "$PG_BIN/pg_ctl" start -w -D "$PG_DATA" -l "$PG_DATA/server.log" \
  -o "-p $PORT -k $PG_DATA -c listen_addresses=127.0.0.1" > /dev/null
as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres coapgate
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PORT (default settings)"

echo "coapgate migrate:"
start=$(date +%s.%N)
"$COAPGATE_BIN" migrate --data-dir "$WORK/data" --to "postgres://postgres@127.0.0.1:$PORT/coapgate" | sed 's/^/  /'
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
printf 'migrated %s points in %.1f s (%.0f points/s), PostgreSQL database: %s\n' "$POINTS" "$elapsed" \
  "$(echo "$POINTS / $elapsed" | bc -l)" \
  "$(psql -h 127.0.0.1 -p "$PORT" -U postgres -d coapgate -Atc "SELECT pg_size_pretty(pg_database_size('coapgate'))")"
