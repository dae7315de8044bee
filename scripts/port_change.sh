#!/usr/bin/env bash
# A change of peers (issue 18): against one `coapgate serve --demo` (fresh data directory,
# 127.0.0.1), CYCLES times three runs from 64 source ports and then one from 1,000, SECONDS_RUN
# each, 64 in flight. Per run: the bench's counts (timeouts, and `replays`: answers the server
# replayed from an earlier exchange of a reused port and Message ID), the server's
# coapgate_coap_duplicates_total and the kernel's UDP drop counters (/proc/net/snmp) before and
# after; at the end the server socket's buffers (ss -uam). Bounded in time; stops what it starts.
#
#   scripts/port_change.sh [cycles] [seconds]     (defaults: 3, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-3}
SECONDS_RUN=${2:-10}
. scripts/lib.sh
build_coapgate
COAP_PORT=${COAP_PORT:-25783}
HTTP_PORT=${HTTP_PORT:-28180}
WORK=$(mktemp -d)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start_demo "$WORK"
udp() { awk '/^Udp: [0-9]/ {print "InErrors=" $4, "RcvbufErrors=" $6, "SndbufErrors=" $7}' /proc/net/snmp; }
duplicates() { curl -s "127.0.0.1:$HTTP_PORT/metrics" | awk '/^coapgate_coap_duplicates_total/ {print $2}'; }
"$COAPGATE_BIN" bench --url "$URL" --count 20000 > /dev/null   # devices created, script compiled
for _ in $(seq "$CYCLES"); do
  for ports in 64 64 64 1000; do
    before_duplicates=$(duplicates); before_udp=$(udp)
    "$COAPGATE_BIN" bench --url "$URL" --devices $ports --names 1000 --in-flight 64 --count 100000000 \
      --duration "$SECONDS_RUN" --json > "$WORK/run.json"
    jq -c '{devices, sent, answered, timeouts, replays, per_s: (.throughput_per_s | floor), codes}' "$WORK/run.json"
    echo "  duplicates +$(( $(duplicates) - before_duplicates ))  udp before: $before_udp  after: $(udp)"
  done
done
ss -uamn "sport = :$COAP_PORT"
