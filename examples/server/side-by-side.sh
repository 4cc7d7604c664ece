#!/usr/bin/env bash
# bufpool-server beside redis-server from the distribution, in one run on one machine: each
# driven by redis-benchmark with the same arguments, for each durability mode, without
# pipelining and with -P 16. Prints redis-benchmark's lines and appends one JSON line per
# result to OUT (server, durability, test, pipeline, rps, p50_ms, p99_ms).
#
# Usage: examples/server/side-by-side.sh [--requests N] [--clients C] [--tests LIST]
#                                        [--modes "always everysec"] [--pipelines "1 16"]
#                                        [--out FILE] [--dir DIR] [--port PORT]
#                                        [--server-args "ARGS"]  (more bufpool-server flags)
# Needs redis-server and redis-benchmark (apt-get install -y redis-server redis-tools) and a
# release build (cargo build --release -p bufpool-server).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
requests=200000
clients=50
tests="set,get,incr,hset,lpush,mset"
modes="always everysec"
pipelines="1 16"
dir="$repo/target/server-side-by-side"
out=""
port=6490
server_args=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --tests) tests="$2"; shift 2 ;;
        --modes) modes="$2"; shift 2 ;;
        --pipelines) pipelines="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --server-args) server_args="$2"; shift 2 ;;
        *) echo "side-by-side.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
out="${out:-$dir/results.jsonl}"
server="$repo/target/release/bufpool-server"
for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "side-by-side.sh: $tool missing (apt-get install -y redis-server redis-tools)" >&2; exit 1; }
done
[ -x "$server" ] || { echo "side-by-side.sh: build first: cargo build --release -p bufpool-server" >&2; exit 1; }
mkdir -p "$dir"

# Another process on the port would be benchmarked in place of the server just started.
port_free() {
    if redis-cli -p "$port" ping >/dev/null 2>&1; then
        echo "side-by-side.sh: port $port is in use; pick another with --port" >&2
        exit 1
    fi
}

wait_ready() {
    for _ in $(seq 1 200); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "side-by-side.sh: server on port $1 did not start" >&2
    exit 1
}

# Runs redis-benchmark against PORT and appends JSON lines for NAME / MODE.
bench() {
    local name="$1" mode="$2" port="$3"
    for pipeline in $pipelines; do
        redis-benchmark -p "$port" -q -n "$requests" -r 1000000 -c "$clients" -P "$pipeline" \
            -t "$tests" --csv 2>/dev/null | tail -n +2 | tr -d '"' |
        while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
            printf '%-14s %-9s P=%-3s %-22s %12s rps  p50 %s ms  p99 %s ms\n' \
                "$name" "$mode" "$pipeline" "$test" "$rps" "$p50" "$p99"
            printf '{"server":"%s","durability":"%s","test":"%s","pipeline":%s,"rps":%s,"p50_ms":%s,"p99_ms":%s}\n' \
                "$name" "$mode" "$test" "$pipeline" "$rps" "$p50" "$p99" >> "$out"
        done
    done
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r); -n $requests -r 1000000 -c $clients -t $tests" | tee -a "$dir/runs.log"
for mode in $modes; do
    rm -rf "$dir/redis-$mode" "$dir/bufpool-$mode"
    mkdir -p "$dir/redis-$mode"
    port_free
    redis-server --port "$port" --dir "$dir/redis-$mode" --save '' --appendonly yes \
        --appendfsync "$mode" --daemonize no >"$dir/redis-$mode.log" 2>&1 &
    redis_pid=$!
    wait_ready "$port"
    bench redis-server "$mode" "$port"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$redis_pid" || true

    port_free
    # shellcheck disable=SC2086 # server_args is a list of flags
    "$server" --port "$port" --dir "$dir/bufpool-$mode" --durability "$mode" $server_args \
        >"$dir/bufpool-$mode.log" 2>&1 &
    bufpool_pid=$!
    wait_ready "$port"
    bench bufpool-server "$mode" "$port"
    redis-cli -p "$port" info all | grep -E "log_syncs|group_commit|replies_per_durable_wait|pool_hits|pool_misses|fast_read" | tr -d '\r' | sed "s/^/  bufpool-server $mode: /"
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    wait "$bufpool_pid" || true
done
echo "JSON lines appended to $out"
