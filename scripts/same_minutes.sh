#!/usr/bin/env bash
# Issue 18's comparison in the same minutes: coapgate and bare libcoap (`coap-server-notls`,
# PUT /example_data) alternating, ROUNDS times (3), each run 10 s from 64 source ports at 64 in
# flight, with a one- and a two-thread generator (`coapgate bench`). Every coapgate run gets a
# fresh `coapgate serve --demo` warmed with 20,000 uplinks, every libcoap run a fresh server.
# Prints each run's report and its `bound_report` line (scripts/lib.sh): rate, p99, the
# server's and the generator's CPU per request. Binds 127.0.0.1 only; bounded in count and
# time; stops what it starts.
#
#   scripts/same_minutes.sh            ROUNDS=5 scripts/same_minutes.sh
#   COAPGATE_BIN=path/to/coapgate scripts/same_minutes.sh
#   BASELINE_BIN=path/to/older/coapgate scripts/same_minutes.sh   (a third server each round: an
#     older build, so two builds are compared in the same minutes; the generator stays COAPGATE_BIN)
#   THREADS="2" scripts/same_minutes.sh   (only the two-thread generator)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
build_coapgate
WORK=$(mktemp -d)
COAP_PORT=${COAP_PORT:-25783}
SERVER=""
trap 'stop_server; rm -rf "$WORK"' EXIT

start_coapgate() {
  stop_server
  rm -rf "$WORK/data"
  start_demo "$WORK" "${1:-$COAPGATE_BIN}"
  "$COAPGATE_BIN" bench --url "$URL" --count 20000 > /dev/null   # devices created, script compiled
}

for round in $(seq "${ROUNDS:-3}"); do
  for threads in ${THREADS:-1 2}; do
    start_coapgate
    measured "round $round: coapgate, 64 ports, 64 in flight, $threads generator thread(s)" \
      --devices 64 --names 1000 --in-flight 64 --threads "$threads" --count 1000000 --duration 10
    if [ -n "${BASELINE_BIN:-}" ]; then
      start_coapgate "$BASELINE_BIN"
      measured "round $round: baseline coapgate, 64 ports, 64 in flight, $threads generator thread(s)" \
        --devices 64 --names 1000 --in-flight 64 --threads "$threads" --count 1000000 --duration 10
    fi
    start_libcoap
    measured "round $round: libcoap, 64 ports, 64 in flight, $threads generator thread(s)" \
      --method put --devices 64 --in-flight 64 --threads "$threads" --count 1000000 --duration 10
  done
done
