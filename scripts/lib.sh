# Shared by the measuring scripts: sourced, not run.
#
# build_coapgate: sets COAPGATE_BIN, building the release binary unless it is set already (set
#   it to compare two builds).
# start_demo WORKDIR [BIN]: starts `coapgate serve --demo` (BIN, default $COAPGATE_BIN) on a fresh
#   data directory in WORKDIR, bound to 127.0.0.1 (COAP_PORT, HTTP_PORT), waits for it, sets
#   SERVER (its pid) and URL (the demo integration's endpoint). The caller's EXIT trap must stop
#   $SERVER.

build_coapgate() {
  if [ -z "${COAPGATE_BIN:-}" ]; then
    cargo build --release -q -p coapgate
    COAPGATE_BIN=$PWD/target/release/coapgate
  fi
}

start_demo() {
  local work=$1 bin=${2:-$COAPGATE_BIN}
  COAP_BIND_ADDRESS=127.0.0.1 HTTP_BIND_ADDRESS=127.0.0.1 COAP_BIND_PORT=${COAP_PORT:-25783} HTTP_BIND_PORT=${HTTP_PORT:-28180} \
    COAPGATE_ADMIN_PASSWORD=bench-password COAPGATE_DATA_DIR="$work/data" RUST_LOG=warn "$bin" serve --demo > "$work/out.txt" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do grep -q 'coap-client' "$work/out.txt" 2>/dev/null && break; sleep 0.1; done
  URL=$(grep -o 'coap://[^ ]*' "$work/out.txt" | tail -1 || true)
  [ -n "$URL" ] || { echo "coapgate serve --demo did not start:" >&2; cat "$work/out.txt" >&2; return 1; }
}
#
# cpu_ticks PID: the process's CPU time so far (user + system, every thread), in clock ticks
#   (getconf CLK_TCK per second).
# busy_ticks / all_ticks: the machine's busy and total CPU ticks so far, from /proc/stat (every
#   process, other users' too).
# bound_report LABEL RUN_JSON SERVER_TICKS BUSY_TICKS ALL_TICKS: one JSON line for a bench run:
#   rate, p99, the server's and the generator's CPU per answered request, how busy the
#   generator's threads, the server (in cores), the two processes together and the whole machine
#   were, and which bound that points to.

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
all_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

bound_report() {
  jq -c --arg name "$1" --argjson server_ticks "$3" --argjson busy "$4" --argjson all "$5" \
    --argjson hz "$(getconf CLK_TCK)" --argjson cores "$(nproc)" '
    (if .answered > 0 then .answered else 1 end) as $n
    | (.generator_cpu.user_seconds + .generator_cpu.system_seconds) as $generator
    | ($server_ticks / $hz) as $server
    | {run: $name, threads, devices, in_flight, per_s: (.throughput_per_s | floor), p99_ms: .latency_ms.p99, timeouts,
       server_us_per_request: ($server * 1e7 / $n | floor / 10),
       generator_us_per_request: (.generator_cpu.us_per_request * 10 | floor / 10),
       generator_threads_busy: ($generator / .wall_seconds / .threads * 100 | floor / 100),
       server_cores_busy: ($server / .wall_seconds * 100 | floor / 100),
       both_busy: (($generator + $server) / .wall_seconds / $cores * 100 | floor / 100),
       machine_busy: (if $all > 0 then ($busy / $all * 100 | floor / 100) else null end)}
    | . + {bound: (if .generator_threads_busy >= 0.85 then "the generator: its threads are busy"
                   elif .both_busy >= 0.85 then "the cores: server and generator fill them between them"
                   elif .server_cores_busy >= 0.85 and .server_cores_busy < 1.15 then "the server: one core busy (the limit of a one-thread server such as libcoap)"
                   elif .machine_busy != null and .machine_busy >= 0.85 then "the cores, with other processes"
                   else "no core full: the round trip (in flight / latency)" end)}' "$2"
}

# The rest is for scripts that run `coapgate bench` ($COAPGATE_BIN) against a server in $SERVER
# at $URL, with a scratch directory $WORK and the port COAP_PORT:
# stop_server: stops $SERVER, if any, and waits for it.
# start_libcoap: a fresh libcoap `coap-server-notls` (PUT /example_data) on 127.0.0.1:COAP_PORT,
#   the previous server stopped first (libcoap keeps a session per peer, so a second run against
#   the same process is slower); sets SERVER and URL.
# measured LABEL BENCH_ARGS...: one `coapgate bench --url $URL BENCH_ARGS... --json` run: its
#   report, then its bound_report line.

stop_server() {
  if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  SERVER=""
}

start_libcoap() {
  stop_server
  coap-server-notls -A 127.0.0.1 -p "$COAP_PORT" > /dev/null 2>&1 &
  SERVER=$!
  sleep 0.5
  URL=coap://127.0.0.1:$COAP_PORT/example_data
}

measured() {
  local label=$1; shift
  local ticks busy all
  ticks=$(cpu_ticks "$SERVER"); busy=$(busy_ticks); all=$(all_ticks)
  "$COAPGATE_BIN" bench --url "$URL" "$@" --json > "$WORK/run.json"
  ticks=$(( $(cpu_ticks "$SERVER") - ticks )); busy=$(( $(busy_ticks) - busy )); all=$(( $(all_ticks) - all ))
  cat "$WORK/run.json"
  bound_report "$label" "$WORK/run.json" "$ticks" "$busy" "$all"
}
