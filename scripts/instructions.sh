#!/usr/bin/env bash
# Server instructions per uplink, counted by valgrind's callgrind: a figure that does not move
# with what else the machine is doing (timings on this shared 2-core machine do), for comparing
# two builds of the uplink path (issue 18). Starts `coapgate serve --demo` under callgrind
# (every thread counted), warms it up (devices created, the script compiled), zeroes the
# counters, sends COUNT uplinks with `coapgate bench`, dumps, and prints instructions per uplink
# for payloads with 2, 10 and 50 telemetry keys. Slow (about 50 times slower than native), bounded
# in count and time, binds 127.0.0.1 only, stops what it starts.
#
#   scripts/instructions.sh [count]        (default 10000; COAPGATE_BIN=... to measure another build)
#
# KEYS="2 50" measures only those payloads; KEEP_DUMPS=DIR keeps each callgrind dump there as
# DIR/callgrind.<keys>keys.out, for `callgrind_annotate --inclusive=yes` (where the cost goes).
# The release profile carries line tables (debug = 1), so the dumps name functions.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-10000}
. scripts/lib.sh
build_coapgate
COAP_PORT=${COAP_PORT:-25793}
HTTP_PORT=${HTTP_PORT:-28193}
WORK=$(mktemp -d)
VG=""
cleanup() {
  [ -n "$VG" ] && kill "$VG" 2>/dev/null && wait "$VG" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# A payload template of the seed uplink's shape with N numeric keys.
payload() {
  local n=$1 p="SN-{name},default"
  for i in $(seq 1 "$n"); do p="$p,k$i,$((i * 7 % 100)).5"; done
  echo "$p"
}

KEYS=${KEYS:-2 10 50}
KEEP_DUMPS=${KEEP_DUMPS:-}
[ -n "$KEEP_DUMPS" ] && mkdir -p "$KEEP_DUMPS"

for keys in $KEYS; do
  rm -rf "$WORK/data" "$WORK"/cg.out*
  COAP_BIND_ADDRESS=127.0.0.1 HTTP_BIND_ADDRESS=127.0.0.1 COAP_BIND_PORT=$COAP_PORT HTTP_BIND_PORT=$HTTP_PORT \
    COAPGATE_ADMIN_PASSWORD=bench-password COAPGATE_DATA_DIR="$WORK/data" RUST_LOG=warn \
    timeout 1800 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$COAPGATE_BIN" serve --demo \
    > "$WORK/out.txt" 2> "$WORK/valgrind.txt" &
  VG=$!
  # Start-up under valgrind takes long on a busy machine.
  for _ in $(seq 3000); do grep -q 'coap-client' "$WORK/out.txt" 2>/dev/null && break; sleep 0.1; done
  URL=$(grep -o 'coap://[^ ]*' "$WORK/out.txt" | tail -1 || true)
  [ -n "$URL" ] || { echo "coapgate serve --demo did not start under valgrind:" >&2; cat "$WORK/out.txt" "$WORK/valgrind.txt" >&2; exit 1; }
  PAYLOAD=$(payload "$keys")
  run() { "$COAPGATE_BIN" bench --url "$URL" --devices 64 --names 1000 --in-flight 16 --timeout 30 --duration 1200 --payload "$PAYLOAD" --json "$@"; }
  run --count 3000 > /dev/null
  # Our own valgrind (timeout's child), not whichever callgrind run `callgrind_control` lists first.
  PID=$(pgrep -P "$VG" | head -1)
  callgrind_control -z "$PID" > /dev/null
  REPORT=$(run --count "$COUNT")
  callgrind_control -d "$PID" > /dev/null
  TOTAL=$(awk '/^summary:/ {print $2}' "$WORK"/cg.out.* | head -1)
  ANSWERED=$(echo "$REPORT" | jq .answered)
  echo "{\"keys\": $keys, \"uplinks\": $ANSWERED, \"instructions\": $TOTAL, \"per_uplink\": $((TOTAL / ANSWERED))}"
  if [ -n "$KEEP_DUMPS" ]; then cp "$(ls "$WORK"/cg.out.* | head -1)" "$KEEP_DUMPS/callgrind.${keys}keys.out"; fi
  kill "$VG"; wait "$VG" 2>/dev/null || true; VG=""
done
