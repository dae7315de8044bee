#!/usr/bin/env bash
# Seed ingestion with and without a wrong-password login flood (issue #13): `coapgate serve
# --demo` on a fresh data directory bound to 127.0.0.1; a 10 s `coapgate bench` alone, then the
# same while PARALLEL (default 32) loops post wrong logins as fast as they are answered, each
# loop from its own loopback address (127.0.1.x) with a new unknown user name per attempt, so
# neither the per-address nor the per-user limit alone holds them back. Prints both reports and
# the login answers counted by status. Bounded in time; stops what it starts.
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
for i in $(seq 1 "$PARALLEL"); do
  (
    end=$(( $(date +%s) + SECONDS_EACH + 2 ))
    n=0
    while [ "$(date +%s)" -lt "$end" ]; do
      n=$((n + 1))
      curl -s -o /dev/null -w '%{http_code}\n' --interface "127.0.1.$i" -X POST \
        "http://127.0.0.1:$HTTP_PORT/api/auth/login" -H 'content-type: application/json' \
        -d "{\"username\":\"nobody-$i-$n@example.com\",\"password\":\"wrong-password\"}" || true
    done > "$WORK/logins-$i.txt"
  ) &
  LOOPS+=($!)
done
sleep 1
echo "# with $PARALLEL parallel wrong-password login loops"
"$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight 64 --count 10000000 --duration "$SECONDS_EACH" --json
wait "${LOOPS[@]}" 2>/dev/null || true
LOOPS=()
echo "# login answers by status"
cat "$WORK"/logins-*.txt | sort | uniq -c
