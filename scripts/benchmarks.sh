#!/usr/bin/env bash
# Reproduces the numbers in BENCHMARKS.md on this machine: builds the release binary, starts
# `coapgate serve --demo` on a fresh data directory bound to 127.0.0.1, and runs
# `coapgate bench` scenarios against it, then libcoap's bare coap-server-notls with the same
# load generator. Every run is bounded in count and time; every process started is stopped.
#
# The few-endpoint series (64 source ports) runs each server with a one-thread and a two-thread
# generator and prints, after each run's report, a `bound_report` line (scripts/lib.sh): the
# server's and the generator's CPU per request, how busy they and the machine were, and which
# bound that points to. On two cores a second generator thread takes CPU from the server.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
build_coapgate
BIN=$COAPGATE_BIN
WORK=$(mktemp -d)
COAP_PORT=${COAP_PORT:-25683}
HTTP_PORT=${HTTP_PORT:-28080}
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

start_server() {
  stop_server
  rm -rf "$WORK/data"
  start_demo "$WORK"
  "$BIN" bench --url "$URL" --count 20000 > /dev/null   # warm up: devices created, scripts compiled
}

bench() { "$BIN" bench --url "$URL" "$@" --json; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$SERVER/status"; }

# FEW_THREADS: the generator threads of the few-endpoint series (default: 1 and 2).
FEW_THREADS=${FEW_THREADS:-1 2}

# Every coapgate run gets a fresh server: a 10 s run leaves up to 300,000 points for the
# compactor and all its moved rows to delete, and on one server for all of them each run paid
# for the runs before it (64-port runs after the 1,000-port series: 20,500-44,600/s instead of
# 50,000-62,000/s). `scripts/sustained.sh` measures what holds with every cost paid.
echo "# seed uplink, CON POST, 1,000 devices"
for inflight in 64 128 256; do
  start_server
  bench --devices 1000 --in-flight $inflight --count 1000000 --duration 10
done
echo "# seed uplink, CON POST, few endpoints: 64 source ports (1,000 device names), 1 and 2 generator threads"
for inflight in 64 256; do
  for threads in $FEW_THREADS; do
    start_server
    measured "coapgate, 64 ports, $inflight in flight, $threads generator thread(s)" \
      --devices 64 --names 1000 --in-flight $inflight --threads "$threads" --count 1000000 --duration 10
  done
done

echo "# devices (distinct names) from 1 to 100,000; 1,000 sockets, 64 in flight"
for names in 1 1000 10000 100000; do
  start_server
  bench --devices 1000 --in-flight 64 --names $names --count $((names > 20000 ? names : 20000)) --duration 60 > /dev/null
  bench --devices 1000 --in-flight 64 --names $names --count 200000 --duration 10
  echo "{\"names\": $names, \"rss_kib\": $(rss_kib)}"
done

echo "# libcoap's bare example server, same load generator (PUT /example_data), one socket per device (1,000)"
for inflight in 64 256; do
  start_libcoap
  measured "libcoap, 1000 ports, $inflight in flight, 1 generator thread" \
    --method put --devices 1000 --in-flight $inflight --count 1000000 --duration 10
done
echo "# libcoap, few endpoints (64 source ports), 1 and 2 generator threads"
for inflight in 64 256; do
  for threads in $FEW_THREADS; do
    start_libcoap
    measured "libcoap, 64 ports, $inflight in flight, $threads generator thread(s)" \
      --method put --devices 64 --in-flight $inflight --threads "$threads" --count 1000000 --duration 10
  done
done
