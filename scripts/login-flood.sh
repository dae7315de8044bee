#!/usr/bin/env bash
# Seed ingestion with and without a wrong-password login flood (issue #13): `coapgate serve
# --demo` on a fresh data directory bound to 127.0.0.1; a 10 s `coapgate bench` alone, then the
# same while ApacheBench keeps PARALLEL (default 32) wrong-password logins in flight (a C client:
# a shell loop of curl processes would spend the two cores on fork/exec, not on the server).
# Prints both rates, ab's summary and the server's hashing and refusal counters. Needs `ab`
# (Debian's apache2-utils). Bounded in time; stops what it starts.
#
#   scripts/login-flood.sh [parallel] [seconds]      (defaults: 32, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
PARALLEL=${1:-32}
SECONDS_EACH=${2:-10}
. scripts/lib.sh
build_coapgate
HTTP_PORT=${HTTP_PORT:-28180}
WORK=$(mktemp -d)
SERVER=""
LOOPS=()
cleanup() {
  for p in "${LOOPS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
start_demo "$WORK"
"$COAPGATE_BIN" bench --url "$URL" --count 20000 > /dev/null
echo "# alone"
"$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight 64 --count 10000000 --duration "$SECONDS_EACH" --json
echo '{"username":"tenant@thingsboard.org","password":"wrong-password"}' > "$WORK/body.json"
timeout $((SECONDS_EACH + 3)) ab -q -t $((SECONDS_EACH + 1)) -n 100000000 -c "$PARALLEL" -p "$WORK/body.json" \
  -T application/json "http://127.0.0.1:$HTTP_PORT/api/auth/login" > "$WORK/ab.txt" 2>&1 &
LOOPS+=($!)
sleep 1
echo "# with $PARALLEL wrong-password logins in flight"
"$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight 64 --count 10000000 --duration "$SECONDS_EACH" --json
wait "${LOOPS[@]}" 2>/dev/null || true
LOOPS=()
grep -E "Complete requests|Non-2xx|Requests per second" "$WORK/ab.txt"
curl -s "127.0.0.1:$HTTP_PORT/metrics" | grep -E '^coapgate_(password_hashes_total|login_refused_total)'
