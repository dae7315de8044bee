#!/usr/bin/env bash
# Remote integration on one machine: `coapgate serve --demo` with INTEGRATIONS_RPC_ENABLED (its
# demo integration switched to Execute remotely) and a `coapgate remote` linked to it, all on
# 127.0.0.1. Prints:
#   1. the remote's RSS idle (linked, nothing to do);
#   2. live: `coapgate bench` against the remote for SECONDS (what devices get), the platform's
#      stored rate over the link meanwhile, and the remote's RSS (now and peak);
#   3. drain: with the platform stopped, bench fills the outbox for SECONDS; the platform is
#      started again and the time until the outbox is empty gives remote → platform records/s.
# Bounded in time; stops what it starts.
#
#   scripts/remote.sh [seconds] [in-flight] [rate]    (defaults: 20, 64, as fast as it goes;
#                                                      a rate limits the live phase, e.g. a gateway's 1000/s)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-20}
IN_FLIGHT=${2:-64}
RATE=${3:-}
. scripts/lib.sh
build_coapgate
HTTP_PORT=${HTTP_PORT:-28180}
RPC_PORT=${RPC_PORT:-29090}
REMOTE_COAP_PORT=${REMOTE_COAP_PORT:-25785}
WORK=$(mktemp -d)
SERVER=""
REMOTE=""
cleanup() {
  [ -n "$REMOTE" ] && kill "$REMOTE" 2>/dev/null && wait "$REMOTE" 2>/dev/null
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

export INTEGRATIONS_RPC_ENABLED=true INTEGRATIONS_RPC_BIND_ADDRESS=127.0.0.1 INTEGRATIONS_RPC_PORT=$RPC_PORT
start_demo "$WORK"
api() { curl -s -H "X-Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
TOKEN=$(curl -s -X POST "127.0.0.1:$HTTP_PORT/api/auth/login" -H 'content-type: application/json' \
  -d '{"username":"tenant@thingsboard.org","password":"bench-password"}' | jq -r .token)
INTEGRATION=$(api "127.0.0.1:$HTTP_PORT/api/integrations?pageSize=1&page=0" | jq '.data[0] | .remote = true')
api -X POST "127.0.0.1:$HTTP_PORT/api/integration" -d "$INTEGRATION" > /dev/null
ID=$(echo "$INTEGRATION" | jq -r .id.id)
KEY=$(echo "$INTEGRATION" | jq -r .routingKey)
SECRET=$(echo "$INTEGRATION" | jq -r .secret)
REMOTE_URL="coap://127.0.0.1:$REMOTE_COAP_PORT/$(echo "$URL" | cut -d/ -f4-)"
status() { api "127.0.0.1:$HTTP_PORT/api/integration/$ID" | jq -c .remoteStatus; }
rss() { awk "/$2/ {print int(\$2/1024)}" "/proc/$1/status"; }

start_remote() {
  COAP_BIND_ADDRESS=127.0.0.1 COAP_BIND_PORT=$REMOTE_COAP_PORT RPC_HOST=127.0.0.1 RPC_PORT=$RPC_PORT \
    INTEGRATION_ROUTING_KEY=$KEY INTEGRATION_SECRET=$SECRET RPC_CLIENT_ID=bench-edge RUST_LOG=info \
    COAPGATE_DATA_DIR="$WORK/remote" "$COAPGATE_BIN" remote >> "$WORK/remote.txt" 2>&1 &
  REMOTE=$!
}
start_remote
for _ in $(seq 100); do grep -q 'linked to the platform' "$WORK/remote.txt" 2>/dev/null && break; sleep 0.1; done
grep -q 'linked to the platform' "$WORK/remote.txt" || { echo "the remote did not link:"; cat "$WORK/remote.txt"; exit 1; }
sleep 5
echo "1. remote idle, linked: RSS $(rss "$REMOTE" VmRSS) MiB"

stored_total() { status | jq .storedTotal; }
before=$(stored_total); t0=$(date +%s.%N)
"$COAPGATE_BIN" bench --url "$REMOTE_URL" --devices 1000 --in-flight "$IN_FLIGHT" --count 100000000 --duration "$SECONDS_RUN" ${RATE:+--rate "$RATE"} > "$WORK/bench.txt"
echo "2. live, $SECONDS_RUN s at $IN_FLIGHT in flight${RATE:+, at most $RATE/s,} against the remote:"
sed 's/^/     /' "$WORK/bench.txt"
echo "   remote RSS $(rss "$REMOTE" VmRSS) MiB (peak $(rss "$REMOTE" VmHWM) MiB); status right after: $(status)"
sleep 3
after=$(stored_total); t1=$(date +%s.%N)
echo "   stored on the platform over the link: $((after - before)) in $(echo "$t1 - $t0" | bc) s (the run plus 3 s)"

kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
"$COAPGATE_BIN" bench --url "$REMOTE_URL" --devices 1000 --in-flight "$IN_FLIGHT" --count 100000000 --duration "$SECONDS_RUN" > "$WORK/bench2.txt"
backlog=$(grep -o '[0-9]* uplinks waiting' "$WORK/remote.txt" | tail -1 || true)
echo "3. platform stopped; $SECONDS_RUN s of load into the outbox:"
sed 's/^/     /' "$WORK/bench2.txt"
echo "   remote RSS $(rss "$REMOTE" VmRSS) MiB (peak $(rss "$REMOTE" VmHWM) MiB), outbox $(du -m "$WORK/remote/remote-outbox.db" | cut -f1) MiB"
COAP_BIND_ADDRESS=127.0.0.1 HTTP_BIND_ADDRESS=127.0.0.1 COAP_BIND_PORT=${COAP_PORT:-25783} HTTP_BIND_PORT=$HTTP_PORT \
  COAPGATE_DATA_DIR="$WORK/data" RUST_LOG=warn "$COAPGATE_BIN" serve >> "$WORK/out.txt" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$HTTP_PORT/" > /dev/null 2>&1 && break; sleep 0.1; done
TOKEN=$(curl -s -X POST "127.0.0.1:$HTTP_PORT/api/auth/login" -H 'content-type: application/json' \
  -d '{"username":"tenant@thingsboard.org","password":"bench-password"}' | jq -r .token)
for _ in $(seq 600); do
  line=$(grep 'linked to the platform' "$WORK/remote.txt" | tail -1)
  [ "$(grep -c 'linked to the platform' "$WORK/remote.txt")" -ge 2 ] && break; sleep 0.05
done
waiting=$(echo "$line" | grep -o '[0-9]* uplinks waiting' | cut -d' ' -f1)
t0=$(date +%s.%N)
for _ in $(seq 6000); do [ "$(status | jq .backlogRecords)" = 0 ] && break; sleep 0.05; done
t1=$(date +%s.%N)
elapsed=$(echo "$t1 - $t0" | bc)
echo "   platform back: $waiting waiting uplinks drained in ${elapsed} s = $(echo "$waiting / $elapsed" | bc) records/s (status polled every 50 ms, 1 s resolution)"
echo "   final status: $(status)"
