#!/usr/bin/env bash
# The first uplinks after a long quiet spell (issue 13, finding 8): load, then idle for longer
# than EXCHANGE_LIFETIME (247 s) so every exchange of the load expires during the quiet spell,
# then a short probe at the same load. Prints the load's and the probe's reports and the
# probe's per-second stored rate. Upkeep that waits for traffic shows as a slow probe.
#
#   scripts/idle_upkeep.sh [load-seconds] [idle-seconds] [probe-seconds]   (60 260 10)
#   COAPGATE_BIN=/path/to/coapgate to compare builds; COAP_PORT/HTTP_PORT to run two at once.
set -euo pipefail
cd "$(dirname "$0")/.."
LOAD=${1:-60}
IDLE=${2:-260}
PROBE=${3:-10}
. scripts/lib.sh
build_coapgate
HTTP_PORT=${HTTP_PORT:-28180}
WORK=$(mktemp -d)
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

start_demo "$WORK"
stored() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^coapgate_uplinks_total\{result="created"\}/ {print $2}'; }
echo "load ${LOAD}s:"
"$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight 64 --count 1000000000 --duration "$LOAD" | sed 's/^/  /'
echo "idle ${IDLE}s"
sleep "$IDLE"
echo "probe ${PROBE}s after the idle period:"
"$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight 64 --count 1000000000 --duration "$PROBE" > "$WORK/probe.txt" &
BENCH=$!
previous=$(stored)
for s in $(seq "$PROBE"); do
  sleep 1
  now=$(stored)
  echo "  t=${s}s stored/s=$(( now - previous ))"
  previous=$now
done
wait "$BENCH" || true
sed 's/^/  /' "$WORK/probe.txt"
