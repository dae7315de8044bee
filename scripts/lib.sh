# Shared by the measuring scripts: sourced, not run.
#
# build_coapgate: sets COAPGATE_BIN, building the release binary unless it is set already (set
#   it to compare two builds).
# start_demo WORKDIR: starts `coapgate serve --demo` on a fresh data directory in WORKDIR, bound
#   to 127.0.0.1 (COAP_PORT, HTTP_PORT), waits for it, sets SERVER (its pid) and URL (the demo
#   integration's endpoint). The caller's EXIT trap must stop $SERVER.

build_coapgate() {
  if [ -z "${COAPGATE_BIN:-}" ]; then
    cargo build --release -q -p coapgate
    COAPGATE_BIN=$PWD/target/release/coapgate
  fi
}

start_demo() {
  local work=$1
  COAP_BIND_ADDRESS=127.0.0.1 HTTP_BIND_ADDRESS=127.0.0.1 COAP_BIND_PORT=${COAP_PORT:-25783} HTTP_BIND_PORT=${HTTP_PORT:-28180} \
    COAPGATE_ADMIN_PASSWORD=bench-password COAPGATE_DATA_DIR="$work/data" RUST_LOG=warn "$COAPGATE_BIN" serve --demo > "$work/out.txt" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do grep -q 'coap-client' "$work/out.txt" 2>/dev/null && break; sleep 0.1; done
  URL=$(grep -o 'coap://[^ ]*' "$work/out.txt" | tail -1 || true)
  [ -n "$URL" ] || { echo "coapgate serve --demo did not start:" >&2; cat "$work/out.txt" >&2; return 1; }
}
