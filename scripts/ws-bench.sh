#!/usr/bin/env bash
# The WebSocket figures of BENCHMARKS.md: SUBSCRIBERS sessions (default 1,000) watch one device
# while uplinks arrive at RATE per second (default 1,000) for SECONDS; then ROUNDS interleaved
# A/B pairs of full-speed ingest runs without and with the subscribers. Starts `coapgate serve
# --demo` on a fresh data directory bound to 127.0.0.1 and runs `coapgate bench-ws` against it;
# every run is bounded in count and time, and the server is stopped at the end.
#   scripts/ws-bench.sh                      # the table
#   JSON=1 scripts/ws-bench.sh               # the report as JSON
#   COAPGATE_BIN=old CLIENT_BIN=new scripts/ws-bench.sh   # another server build, this client
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
build_coapgate
WORK=$(mktemp -d)
SERVER=""
trap 'stop_server; rm -rf "$WORK"' EXIT

COAP_PORT=${COAP_PORT:-25983}
HTTP_PORT=${HTTP_PORT:-28380}
start_demo "$WORK"
# Warm up: the converter compiled, the database's first pages written (another device).
"${CLIENT_BIN:-$COAPGATE_BIN}" bench --url "$URL" --devices 64 --names 1 --payload 'WARM-UP,default,sent,{us}' --count 5000 --duration 10 --json > /dev/null

COAPGATE_BENCH_PASSWORD=bench-password "${CLIENT_BIN:-$COAPGATE_BIN}" bench-ws \
  --http "http://127.0.0.1:$HTTP_PORT" --url "$URL" \
  --subscribers "${SUBSCRIBERS:-1000}" --rate "${RATE:-1000}" --duration "${SECONDS_AT_RATE:-10}" \
  --rounds "${ROUNDS:-2}" --ingest-seconds "${INGEST_SECONDS:-5}" ${JSON:+--json}
echo "server RSS after the run: $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status") KiB;" \
  "server CPU: $(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$SERVER/stat") s;" \
  "client CPU (bench-ws and its generator): $(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($16 + $17) / hz}' /proc/$$/stat) s"
