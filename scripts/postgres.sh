#!/usr/bin/env bash
# The seed uplink on SQLite, on PostgreSQL with one node, and on PostgreSQL with three nodes
# sharing one CoAP port (COAP_REUSE_PORT), in the same minutes, with the same load generator.
# PostgreSQL is a private cluster under /work started for the run (fsync and
# synchronous_commit on, as shipped), stopped and deleted at the end, like every server here.
#
#   ./scripts/postgres.sh [SECONDS per run, default 10] [IN-FLIGHT list, default "64 256"]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
build_coapgate
SECONDS_PER_RUN=${1:-10}
IN_FLIGHT=${2:-64 256}
WORK=$(mktemp -d -p "${BENCH_DIR:-/work}" pgbench-XXXX)
chmod 755 "$WORK"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=${PGPORT:-25432}
COAP_PORT=${COAP_PORT:-25783}
PIDS=()
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/pg" "$WORK/sock"
[ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$WORK/pg" "$WORK/sock"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg/log" -w \
  -o "-p $PGPORT -k $WORK/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
PSQL="psql -h 127.0.0.1 -p $PGPORT -U postgres -q"

# start_node N DATABASE_URL EXTRA_ENV...: node N (HTTP port 28180+N), its pid appended to PIDS.
start_node() {
  local n=$1 url=$2; shift 2
  mkdir -p "$WORK/node$n"
  env COAP_BIND_ADDRESS=127.0.0.1 HTTP_BIND_ADDRESS=127.0.0.1 COAP_BIND_PORT=$COAP_PORT HTTP_BIND_PORT=$((28180 + n)) \
    COAPGATE_ADMIN_PASSWORD=bench-password COAPGATE_DATA_DIR="$WORK/node$n" RUST_LOG=warn DATABASE_URL="$url" "$@" \
    "$COAPGATE_BIN" serve --demo > "$WORK/node$n/out.txt" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'coap-client' "$WORK/node$n/out.txt" 2>/dev/null && break; sleep 0.1; done
  URL=$(grep -o 'coap://[^ ]*' "$WORK/node$n/out.txt" | tail -1 || true)
  [ -n "$URL" ] || { echo "node $n did not start:" >&2; cat "$WORK/node$n/out.txt" >&2; exit 1; }
}
stop_nodes() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
bench() { "$COAPGATE_BIN" bench --url "$URL" "$@" --json; }
runs() {
  local label=$1
  "$COAPGATE_BIN" bench --url "$URL" --count 20000 > /dev/null   # warm up: devices created, scripts compiled
  for inflight in $IN_FLIGHT; do
    echo "{\"setup\": \"$label\", \"in_flight\": $inflight, \"result\": $(bench --devices 1000 --in-flight "$inflight" --count 10000000 --duration "$SECONDS_PER_RUN")}"
  done
}

echo "# SQLite, one node"
start_node 0 ""
runs sqlite
stop_nodes

echo "# PostgreSQL on the same machine, one node"
$PSQL -c 'CREATE DATABASE one'
start_node 0 "postgres://postgres@127.0.0.1:$PGPORT/one"
runs postgres-1
stop_nodes

echo "# PostgreSQL, three nodes sharing udp/$COAP_PORT (SO_REUSEPORT)"
$PSQL -c 'CREATE DATABASE three'
for n in 0 1 2; do start_node $n "postgres://postgres@127.0.0.1:$PGPORT/three" COAP_REUSE_PORT=true; done
runs postgres-3
stop_nodes
