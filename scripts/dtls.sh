#!/usr/bin/env bash
# DTLS on one machine (issue 18): `coapgate serve --demo` with the DTLS endpoint (a throw-away EC
# certificate made here) and its demo integration switched to MIXED with a pre-shared key, then
# `coapgate bench` over coaps:// with PSK and with certificates; libcoap's bare
# coap-server-openssl with the same PSK and load generator beside it. Prints, per run, the bench's
# JSON: `dtls_handshakes` (full handshakes per second and their latency, SESSIONS sessions, each
# its own source port) and the uplinks over the established sessions.
# Bounded in count and time; binds 127.0.0.1 only; stops what it starts.
#
#   scripts/dtls.sh [sessions] [in-flight] [seconds]    (defaults: 1000, 64, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS=${1:-1000}
IN_FLIGHT=${2:-64}
SECONDS_RUN=${3:-10}
. scripts/lib.sh
build_coapgate
HTTP_PORT=${HTTP_PORT:-28180}
DTLS_PORT=${DTLS_PORT:-25784}
WORK=$(mktemp -d)
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# The server's certificate: EC P-256, self-signed (the bench does not verify it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -keyout "$WORK/server.key" -out "$WORK/server.pem" 2> /dev/null
PSK_IDENTITY=bench-device
PSK_KEY=0x62656e63682d6b65792d31 # "bench-key-1"

export COAP_DTLS_ENABLED=true COAP_DTLS_BIND_ADDRESS=127.0.0.1 COAP_DTLS_BIND_PORT=$DTLS_PORT \
  COAP_DTLS_CREDENTIALS_TYPE=PEM COAP_DTLS_PEM_CERT="$WORK/server.pem" COAP_DTLS_PEM_KEY="$WORK/server.key"
start_demo "$WORK"
api() { curl -s -H "X-Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
TOKEN=$(curl -s -X POST "127.0.0.1:$HTTP_PORT/api/auth/login" -H 'content-type: application/json' \
  -d '{"username":"tenant@thingsboard.org","password":"bench-password"}' | jq -r .token)
INTEGRATION=$(api "127.0.0.1:$HTTP_PORT/api/integrations?pageSize=1&page=0" | jq --arg id "$PSK_IDENTITY" --arg key "$PSK_KEY" \
  '.data[0] | .configuration.clientConfiguration.securityMode = "MIXED"
            | .configuration.clientConfiguration.psk = [{"identity": $id, "key": $key}]')
api -X POST "127.0.0.1:$HTTP_PORT/api/integration" -d "$INTEGRATION" > /dev/null
KEY=$(echo "$INTEGRATION" | jq -r .routingKey)
COAPS_URL="coaps://127.0.0.1:$DTLS_PORT/i/$KEY"

bench() { "$COAPGATE_BIN" bench --json --duration "$SECONDS_RUN" --count 10000000 --in-flight "$IN_FLIGHT" "$@"; }
# Warm up over plain CoAP: the devices are created and the script compiled.
"$COAPGATE_BIN" bench --url "$URL" --devices 100 --names 1000 --count 20000 > /dev/null

echo "# coapgate, DTLS with a pre-shared key: $SESSIONS sessions, $IN_FLIGHT in flight"
bench --url "$COAPS_URL" --devices "$SESSIONS" --names 1000 --psk "$PSK_IDENTITY:$PSK_KEY"
echo "# coapgate, DTLS with certificates (ECDHE-ECDSA): $SESSIONS sessions, $IN_FLIGHT in flight"
bench --url "$COAPS_URL" --devices "$SESSIONS" --names 1000
echo "# coapgate, DTLS with a pre-shared key, few endpoints: 64 sessions"
bench --url "$COAPS_URL" --devices 64 --names 1000 --psk "$PSK_IDENTITY:$PSK_KEY"
echo "{\"coapgate_rss_kib\": $(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")}"
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""

echo "# libcoap's bare coap-server-openssl, same PSK and load generator (PUT /example_data)"
coap-server-openssl -A 127.0.0.1 -p $((DTLS_PORT - 1)) -k "$(printf 'bench-key-1')" > /dev/null 2>&1 &
SERVER=$!
sleep 0.5
LIBCOAP_URL="coaps://127.0.0.1:$DTLS_PORT/example_data"
bench --url "$LIBCOAP_URL" --method put --devices "$SESSIONS" --psk "$PSK_IDENTITY:$PSK_KEY"
bench --url "$LIBCOAP_URL" --method put --devices 64 --psk "$PSK_IDENTITY:$PSK_KEY"
