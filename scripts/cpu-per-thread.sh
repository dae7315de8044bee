#!/usr/bin/env bash
# Where the CPU goes per uplink: starts `coapgate serve --demo` on a fresh data directory bound
# to 127.0.0.1, warms it up, runs one `coapgate bench` and prints each server thread's CPU time
# (from /proc/<pid>/task/*/schedstat) per uplink, the generator's CPU and how busy the machine
# was. Bounded in count and time; stops what it starts.
#
#   scripts/cpu-per-thread.sh [in-flight] [seconds]       (defaults: 64, 10)
#   COAPGATE_BIN=path/to/coapgate scripts/cpu-per-thread.sh   (compare two builds, A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
IN_FLIGHT=${1:-64}
SECONDS_=${2:-10}
. scripts/lib.sh
build_coapgate
WORK=$(mktemp -d)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

start_demo "$WORK"
"$COAPGATE_BIN" bench --url "$URL" --count 20000 > /dev/null   # devices created, script compiled

# thread name -> CPU nanoseconds, summed over threads of the same name
threads() { for t in /proc/$SERVER/task/*; do echo "$(cat "$t/comm") $(cut -d' ' -f1 "$t/schedstat")"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort; }
threads > "$WORK/before"; head -1 /proc/stat > "$WORK/stat_before"
TIMEFORMAT="generator CPU: %U s user, %S s system"
time "$COAPGATE_BIN" bench --url "$URL" --devices 1000 --in-flight "$IN_FLIGHT" --count 100000000 --duration "$SECONDS_" --json > "$WORK/bench.json"
threads > "$WORK/after"; head -1 /proc/stat > "$WORK/stat_after"

ANSWERED=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["answered"])' "$WORK/bench.json")
python3 - "$WORK" "$ANSWERED" <<'EOF'
import json, sys
work, answered = sys.argv[1], int(sys.argv[2])
report = json.load(open(f"{work}/bench.json"))
lat = report["latency_ms"]
print(f"{answered} answered, {report['throughput_per_s']:.0f}/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, p99.9 {lat['p999']} ms")
def load(name):
    return {k: int(v) for k, v in (line.split() for line in open(f"{work}/{name}"))}
before, after = load("before"), load("after")
total = 0
for name in sorted(after):
    ns = after[name] - before.get(name, 0)
    total += ns
    if ns > 0:
        print(f"  {name:<18} {ns / 1e6:8.0f} ms   {ns / 1e3 / max(answered, 1):6.1f} us per uplink")
print(f"  {'server in all':<18} {total / 1e6:8.0f} ms   {total / 1e3 / max(answered, 1):6.1f} us per uplink")
a = list(map(int, open(f"{work}/stat_before").read().split()[1:]))
b = list(map(int, open(f"{work}/stat_after").read().split()[1:]))
d = [y - x for x, y in zip(a, b)]
idle = d[3] + d[4]
print(f"machine busy {100 * (sum(d) - idle) / sum(d):.0f}% (iowait {100 * d[4] / sum(d):.0f}%, steal {100 * d[7] / sum(d):.0f}%)")
EOF
