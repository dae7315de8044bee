#!/usr/bin/env bash
# A sustained run, longer than EXCHANGE_LIFETIME (247 s) by default so the exchange log's expiry
# is part of it: `coapgate serve --demo` on a fresh data directory bound to 127.0.0.1 and one
# `coapgate bench` for the whole time. Every 10 s (INTERVAL) it prints the uplinks stored per second, the
# server's RSS and the sizes of the main database and its WAL; at the end, the generator's
# report. Bounded in time; stops what it starts.
#
#   scripts/sustained.sh [seconds] [in-flight] [rate]     (defaults: 300, 64, as fast as it goes)
#   INTERVAL=30 scripts/sustained.sh 1800 64 10000        (the soak: 10,000 uplinks/s for 30 min,
#                                                          a sample every 30 s)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-300}
IN_FLIGHT=${2:-64}
RATE=${3:-}
INTERVAL=${INTERVAL:-10}
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
"$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight "$IN_FLIGHT" --count 1000000000 --duration "$DURATION" ${RATE:+--rate "$RATE"} > "$WORK/bench.txt" &
BENCH=$!

stored() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^coapgate_uplinks_total\{result="created"\}/ {print $2}'; }
mib() { echo $(( $(stat -c %s "$1" 2>/dev/null || echo 0) / 1048576 )); }
previous=$(stored)
started=$(date +%s)
while kill -0 "$BENCH" 2>/dev/null; do
  sleep "$INTERVAL"
  now=$(stored)
  echo "t=$(( $(date +%s) - started ))s  stored/s=$(( (now - previous) / INTERVAL ))  rss=$(( $(awk '/VmRSS/ {print $2}' /proc/$SERVER/status) / 1024 ))MiB  db=$(mib "$WORK/data/coapgate.db")MiB  wal=$(mib "$WORK/data/coapgate.db-wal")MiB"
  previous=$now
done
wait "$BENCH" || true
BENCH=""
cat "$WORK/bench.txt"
curl -s "127.0.0.1:$HTTP_PORT/metrics" | grep -E '^coapgate_writer_sync_microseconds_bucket\{le="(100000|500000|\+Inf)"\}'
