#!/usr/bin/env bash
# A sustained run, longer than EXCHANGE_LIFETIME (247 s) by default so the exchange log's expiry
# is part of it: `coapgate serve --demo` on a fresh data directory bound to 127.0.0.1 and one
# `coapgate bench` for the whole time. Every INTERVAL seconds (10) it prints a row: the uplinks
# stored per second, the server's RSS, the whole data directory, the main database, its WAL and
# the history database; at the end, the generator's report. Bounded in time; stops what it
# starts.
#
#   scripts/sustained.sh [seconds] [in-flight] [rate]     (defaults: 300, 64, as fast as it goes)
#   INTERVAL=30 scripts/sustained.sh 1800 64 10000        (the soak: 10,000 uplinks/s for 30 min,
#                                                          a sample every 30 s)
#   THREADS=2 scripts/sustained.sh 300 64 90000           (a two-thread generator; --rate is
#                                                          split between the threads)
#
# DEVICES (1000) is the number of source ports. coapgate takes a Message ID reused with a new
# token as a new request; against another server keep the rate per port under 265/s: faster, a
# port reuses its own Message IDs within EXCHANGE_LIFETIME and such a server answers those
# requests as duplicates (BENCHMARKS.md, "A change of peers"). coapgate gives such a port a
# table of every Message ID (`coapgate_dedup_dense_peers`), up to 122 ports with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-300}
IN_FLIGHT=${2:-64}
RATE=${3:-}
INTERVAL=${INTERVAL:-10}
THREADS=${THREADS:-1}
DEVICES=${DEVICES:-1000}
. scripts/lib.sh
build_coapgate
HTTP_PORT=${HTTP_PORT:-28180}
WORK=$(mktemp -d)
SERVER=""
BENCH=""
cleanup() {
  [ -n "$BENCH" ] && kill "$BENCH" 2>/dev/null
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

start_demo "$WORK"
# --names 1000: as many device names as a 1,000-socket run has, whatever DEVICES is.
"$COAPGATE_BIN" bench --url "$URL" --devices "$DEVICES" --names 1000 --threads "$THREADS" --in-flight "$IN_FLIGHT" \
  --count 1000000000 --duration "$DURATION" ${RATE:+--rate "$RATE"} > "$WORK/bench.txt" &
BENCH=$!

stored() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^coapgate_uplinks_total\{result="created"\}/ {print $2}'; }
mib() { echo $(( $(stat -c %s "$1" 2>/dev/null || echo 0) / 1048576 )); }
DATA=$WORK/data
previous=$(stored)
started=$(date +%s)
printf '%6s %10s %8s %9s %7s %8s %11s\n' t_s stored/s rss_MiB data_MiB db_MiB wal_MiB history_MiB
while kill -0 "$BENCH" 2>/dev/null; do
  sleep "$INTERVAL"
  kill -0 "$SERVER" 2>/dev/null || { echo "the server stopped" >&2; exit 1; }
  now=$(stored)
  printf '%6d %10d %8d %9d %7d %8d %11d\n' $(( $(date +%s) - started )) $(( (now - previous) / INTERVAL )) \
    $(( $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") / 1024 )) "$(du -sm "$DATA" | cut -f1)" \
    "$(mib "$DATA/coapgate.db")" "$(mib "$DATA/coapgate.db-wal")" "$(mib "$DATA/coapgate-history.db")"
  previous=$now
done
wait "$BENCH" || true
BENCH=""
cat "$WORK/bench.txt"
curl -s "127.0.0.1:$HTTP_PORT/metrics" | grep -E '^coapgate_writer_sync_microseconds_bucket\{le="(100000|500000|\+Inf)"\}'
