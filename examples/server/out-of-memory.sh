#!/usr/bin/env bash
# The server's out-of-memory benchmark: a data set many times the buffer pool, random GETs,
# and the disk's own limit measured in the same run.
#
#  1. Loads --keys keys of 100-byte values into bufpool-server (--pool-mb pool) with the
#     keys redis-benchmark's -r uses (key:%012d, 0 <= d < --keys), fed as RESP SETs through
#     `redis-cli --pipe` under --load-durability, then SAVE (a checkpoint) and stop.
#  2. fio: 4 KiB random O_DIRECT reads at QD32 (benches/fio/randread-qd32.fio) on the
#     server's data file, before and after the GET runs; the mean is the anchor.
#  3. For each --modes durability: restarts the server, warms the pool up, then runs
#     `redis-benchmark -t get -r KEYS -n REQUESTS -c CLIENTS -P P` for each --pipelines P,
#     sampling INFO bufpool around each run: page reads/s (pool reads), hit ratio, RSS.
#  4. The round trip's ceiling: redis-server with --ceiling-keys keys, all in memory, under
#     the same GET runs. No server answers GETs faster from memory than this one on this
#     machine with this client, so its GETs/s times bufpool-server's page reads per GET is
#     the most page reads/s any server could drive at that pipeline depth.
#  5. redis-server from the distribution with --maxmemory --redis-maxmemory and each
#     --redis-policies policy: loads the same keys and says what it does (OOM errors with
#     noeviction, evictions with allkeys-lru), then the same GET runs (keyspace hit ratio).
#
# Prints a readable line per result and appends one JSON line per result to --out:
# server, durability, test, pipeline (0: the redis-cli --pipe load), rps, p50_ms, p99_ms, and
# where they apply page_reads_per_s, fio_qd32_iops, ratio_to_fio, hit_ratio, rss_mb, keys.
# bufpool-server's hit_ratio is over pool page accesses (inner nodes included, each miss's
# re-lookup after its read counted as a hit); page_reads_per_get is the leaf-level figure.
# Redis's hit_ratio is keyspace hits over GETs. Diagnostics per GET run (printed and in its
# JSON): GETs per executor turn, the executor thread's share of time on a CPU and runnable
# but waiting for one, server CPU per GET, the load average, the disk's counters (its average
# queue depth in the JSON).
#
# Usage: examples/server/out-of-memory.sh [flags]
#   --keys N               keys to load (default 20000000: about 6 GB on disk)
#   --pool-mb M            bufpool-server's pool in MiB (default 512)
#   --requests N           GETs per redis-benchmark run (default 1000000)
#   --clients C            redis-benchmark connections (default 50)
#   --pipelines "1 16"     redis-benchmark -P values to run
#   --modes "always"       durability modes the server is restarted under for the GETs
#   --load-durability no   durability during the load (no or everysec; SAVE follows)
#   --fio-seconds S        length of each fio run (default 10)
#   --ceiling-keys 1000000 keys redis-server holds in memory for step 4 (0 skips it)
#   --redis-maxmemory 600mb  redis-server's --maxmemory
#   --redis-policies "noeviction allkeys-lru"  redis-server's policies to try ("" skips Redis)
#   --reuse                keep a finished load from an earlier run with the same --keys
#   --server-args "ARGS"   more bufpool-server flags for the GET runs (e.g. "--io-threads 1")
#   --port P               port for the servers under test, one at a time (default 6497)
#   --dir DIR              work directory, on a disk filesystem, never tmpfs
#                          (default target/server-oom)
#   --out FILE             JSON lines file, appended to (default DIR/results.jsonl)
#   -h, --help             this text
# Needs redis-server, redis-tools, fio and python3 (apt-get install -y redis-server
# redis-tools fio) and a release build (cargo build --release -p bufpool-server).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
keys=20000000
pool_mb=512
requests=1000000
clients=50
pipelines="1 16"
modes="always"
load_durability="no"
fio_seconds=10
redis_maxmemory="600mb"
ceiling_keys=1000000
redis_policies="noeviction allkeys-lru"
reuse=0
server_args=""
port=6497
dir="$repo/target/server-oom"
out=""

usage() { sed -n '2,51p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys="$2"; shift 2 ;;
        --pool-mb) pool_mb="$2"; shift 2 ;;
        --requests) requests="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --pipelines) pipelines="$2"; shift 2 ;;
        --modes) modes="$2"; shift 2 ;;
        --load-durability) load_durability="$2"; shift 2 ;;
        --fio-seconds) fio_seconds="$2"; shift 2 ;;
        --redis-maxmemory) redis_maxmemory="$2"; shift 2 ;;
        --ceiling-keys) ceiling_keys="$2"; shift 2 ;;
        --redis-policies) redis_policies="$2"; shift 2 ;;
        --reuse) reuse=1; shift ;;
        --server-args) server_args="$2"; shift 2 ;;
        --port) port="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "out-of-memory.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$load_durability" in no|everysec) ;; *)
    echo "out-of-memory.sh: --load-durability must be no or everysec" >&2; exit 2 ;;
esac

server="${CARGO_TARGET_DIR:-$repo/target}/release/bufpool-server"
for tool in redis-server redis-benchmark redis-cli fio python3; do
    command -v "$tool" >/dev/null || {
        echo "out-of-memory.sh: $tool missing (apt-get install -y redis-server redis-tools fio python3)" >&2
        exit 1
    }
done
[ -x "$server" ] || { echo "out-of-memory.sh: build first: cargo build --release -p bufpool-server" >&2; exit 1; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
case "$(stat -f -c %T "$dir")" in
    tmpfs|ramfs) echo "out-of-memory.sh: $dir is on tmpfs: O_DIRECT and the point of the test need a disk" >&2; exit 1 ;;
esac
out="${out:-$dir/results.jsonl}"
data="$dir/bufpool"
server_pid=""
redis_pid=""

say() { echo "$*"; }
json() { echo "$1" >> "$out"; }

cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
}
trap cleanup EXIT

wait_ready() {
    for _ in $(seq 1 600); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "out-of-memory.sh: server on port $port did not start" >&2
    exit 1
}

# One field of INFO SECTION.
info() { redis-cli -p "$port" info "$1" | tr -d '\r' | sed -n "s/^$2://p"; }

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# The load as RESP: SET key:%012d to a 100-byte value naming its key (key order, so the
# load is sequential in both servers; GETs then hit the keys in random order). Reports
# progress on stderr: sent is within a few MiB of buffers of what the server has applied.
generate() {
    python3 - "$1" <<'PY'
import sys, time
n = int(sys.argv[1])
out = sys.stdout.buffer
pad = b"x" * 85
chunk = 20000
report_every = max(n // 20, 100000)
next_report = report_every
start = time.monotonic()
for first in range(0, n, chunk):
    last = min(n, first + chunk)
    out.write(b"".join(
        b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$100\r\nv:%012d:%s\r\n" % (i, i, pad)
        for i in range(first, last)))
    if last >= next_report or last == n:
        out.flush()
        elapsed = time.monotonic() - start
        rate = last / elapsed if elapsed > 0 else 0
        eta = (n - last) / rate if rate > 0 else 0
        print(f"  load: {last:>11,}/{n:,} keys sent ({100 * last // n:>3}%), "
              f"{rate:,.0f} keys/s, eta {eta:,.0f} s", file=sys.stderr, flush=True)
        next_report += report_every
PY
}

# Feeds the load (of $2 keys, default --keys) to the server on $port. Sets load_seconds,
# load_errors, and writes the distinct error replies with their counts to $1.
load() {
    local errors_file="$1" count="${2:-$keys}" started
    started="$(now)"
    # redis-cli --pipe exits 1 when any reply was an error (Redis refusing SETs at its
    # maxmemory): its summary line is what counts, read below.
    generate "$count" | redis-cli -p "$port" --pipe 2> >(awk '{ count[$0]++ } END { for (line in count) print count[line], line }' > "$errors_file") > "$dir/pipe.out" || true
    load_seconds="$(calc %.3f "$(now) - $started")"
    load_errors="$(sed -n 's/^errors: \([0-9]*\),.*/\1/p' "$dir/pipe.out")"
    [ -n "$load_errors" ] || { echo "out-of-memory.sh: redis-cli --pipe failed:" >&2; cat "$dir/pipe.out" >&2; exit 1; }
    # The awk behind the process substitution may still be writing.
    sleep 0.5
}

# redis-benchmark GET run over $3 keys (default --keys): sets rps p50 p99 and elapsed.
get_run() {
    local pipeline="$1" n="$2" range="${3:-$keys}" started line
    started="$(now)"
    line="$(redis-benchmark -p "$port" -t get -n "$n" -r "$range" -c "$clients" -P "$pipeline" --csv 2>/dev/null | tail -n 1 | tr -d '"')"
    elapsed="$(calc %.3f "$(now) - $started")"
    IFS=, read -r _test rps _avg _min p50 _p95 p99 _max <<< "$line"
}

# "R reads/s, average queue depth Q, busy B" between two disk_stat samples over S seconds.
disk_figures() {
    local r0 t0 q0 r1 t1 q1
    read -r r0 t0 q0 <<< "$1"; read -r r1 t1 q1 <<< "$2"
    [ -n "$disk_dev" ] || { echo "counters unavailable"; return; }
    calc "%.0f reads/s, average queue depth %.1f, busy %.2f" "($r1 - $r0) / $3, ($q1 - $q0) / ($3 * 1000), ($t1 - $t0) / ($3 * 1000)"
}

fio_run() { # label; sets fio_iops fio_p50_ms fio_p99_ms
    local size
    size=$(( $(stat -c %s "$data/data.db") / 4096 * 4096 ))
    local disk0 disk1 started elapsed_fio
    disk0="$(disk_stat)"; started="$(now)"
    FIO_FILE="$data/data.db" FIO_SIZE="$size" FIO_RUNTIME="${fio_seconds}s" \
        fio --output-format=json --output="$dir/fio-$1.json" "$repo/benches/fio/randread-qd32.fio"
    disk1="$(disk_stat)"; elapsed_fio="$(calc %.3f "$(now) - $started")"
    read -r fio_iops fio_p50_ms fio_p99_ms fio_cpu_us < <(python3 - "$dir/fio-$1.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
read = job["read"]
pct = read["clat_ns"]["percentile"]
# CPU per I/O as benches/fio/compare.sh counts it: fio's job thread, user + system.
cpu_us = (job["usr_cpu"] + job["sys_cpu"]) / 100 * job["job_runtime"] * 1000 / max(read["total_ios"], 1)
print(f'{read["iops"]:.0f} {pct["50.000000"] / 1e6:.3f} {pct["99.000000"] / 1e6:.3f} {cpu_us:.1f}')
PY
)
    say "fio $1: QD32 4 KiB random O_DIRECT reads on data.db ($((size >> 20)) MiB): $fio_iops IOPS, p50 $fio_p50_ms ms, p99 $fio_p99_ms ms, CPU $fio_cpu_us us per I/O; load average $(cut -d' ' -f1 /proc/loadavg); disk $(disk_figures "$disk0" "$disk1" "$elapsed_fio")"
}

start_server() { # durability
    # shellcheck disable=SC2086 # server_args is a list of flags
    "$server" --port "$port" --dir "$data" --pool-mb "$pool_mb" --durability "$1" $server_args \
        >>"$dir/bufpool-server.log" 2>&1 &
    server_pid=$!
    wait_ready
}

start_redis() { # name, then more redis-server flags; no persistence, data in DIR/redis-NAME
    local name="$1"
    shift
    rm -rf "$dir/redis-$name"
    mkdir -p "$dir/redis-$name"
    redis-server --port "$port" --dir "$dir/redis-$name" --save '' --appendonly no \
        --daemonize no "$@" >"$dir/redis-$name.log" 2>&1 &
    redis_pid=$!
    wait_ready
}

stop_redis() {
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$redis_pid" || true
    redis_pid=""
}

stop_server() {
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    wait "$server_pid" || true
    server_pid=""
}

# CPU seconds of a process (all threads) or of one thread: utime + stime.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "$1/stat"; }
thread_dir() { # pid name: /proc/PID/task/TID of the thread called NAME
    local task
    for task in /proc/"$1"/task/*; do
        [ "$(cat "$task/comm" 2>/dev/null)" = "$2" ] && { echo "$task"; return 0; }
    done
    echo "/proc/$1"
}

# The data directory's block device, for its counters (reads, busy ms, queue ms); empty if
# not found (then the disk figures are left out).
disk_dev="$(basename "$(readlink -f "$(df --output=source "$dir" | tail -1)")")"
[ -r "/sys/class/block/$disk_dev/stat" ] || disk_dev=""
disk_stat() { # reads completed, io_ticks ms, time_in_queue ms
    if [ -n "$disk_dev" ]; then awk '{ print $1, $10, $11 }' "/sys/class/block/$disk_dev/stat"; else echo 0 0 0; fi
}
# A thread's time waiting for a CPU while runnable, in seconds (schedstat's run_delay).
run_delay_s() { awk '{ printf "%.3f", $2 / 1e9 }' "$1/schedstat"; }

rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

say "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
say "# keys $keys (100-byte values), pool $pool_mb MiB, GETs -n $requests -c $clients -P {$pipelines}, dir $dir ($(df -h --output=avail "$dir" | tail -1 | tr -d ' ') free)"

# ---- 1. the load ------------------------------------------------------------------------
marker="$data/loaded-keys"
if [ "$reuse" = 1 ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$keys" ]; then
    say "bufpool-server: reusing the load of $keys keys in $data"
else
    rm -rf "$data"
    mkdir -p "$data"
    start_server "$load_durability"
    say "bufpool-server: loading $keys keys (durability $load_durability, pool $pool_mb MiB) with redis-cli --pipe"
    load "$dir/bufpool-load-errors.txt"
    stored="$(redis-cli -p "$port" dbsize)"
    save_started="$(now)"
    redis-cli -p "$port" save >/dev/null
    save_seconds="$(calc %.1f "$(now) - $save_started")"
    load_rss="$(rss_mb "$server_pid")"
    stop_server
    if [ "$load_errors" != 0 ] || [ "$stored" != "$keys" ]; then
        echo "out-of-memory.sh: bufpool-server stored $stored of $keys keys, $load_errors errors:" >&2
        cat "$dir/bufpool-load-errors.txt" >&2
        exit 1
    fi
    echo "$keys" > "$marker"
    load_rps="$(calc %.0f "$keys / $load_seconds")"
    say "bufpool-server: loaded $keys keys in $load_seconds s ($load_rps keys/s), SAVE $save_seconds s, RSS $load_rss MiB, data.db $(( $(stat -c %s "$data/data.db") >> 20 )) MiB"
    json "{\"server\":\"bufpool-server\",\"durability\":\"$load_durability\",\"test\":\"load\",\"pipeline\":0,\"rps\":$load_rps,\"p50_ms\":null,\"p99_ms\":null,\"keys\":$keys,\"pool_mb\":$pool_mb,\"seconds\":$load_seconds,\"save_seconds\":$save_seconds,\"rss_mb\":$load_rss,\"data_bytes\":$(stat -c %s "$data/data.db")}"
fi
data_mb=$(( $(stat -c %s "$data/data.db") >> 20 ))
say "bufpool-server: data.db $data_mb MiB = $(calc %.1f "$data_mb / $pool_mb")x the pool"

# ---- 2-3. fio, GETs under each mode, fio again ------------------------------------------
fio_run before
fio_before="$fio_iops"
pending=()
for mode in $modes; do
    start_server "$mode"
    executor="$(thread_dir "$server_pid" executor)"
    # The data survived the restart: the last key holds the value that names it.
    probe="$(printf 'key:%012d' $((keys - 1)))"
    case "$(redis-cli -p "$port" get "$probe")" in
        "v:${probe#key:}:"*) ;;
        *) echo "out-of-memory.sh: $probe is wrong or missing after the restart" >&2; exit 1 ;;
    esac
    # Fill the pool first so the runs measure the steady state: about two GETs per pool page.
    warm=$(( pool_mb * 256 * 2 ))
    get_run 16 "$warm"
    say "bufpool-server $mode: warm-up $warm GETs (P=16): $rps rps, pool resident $(( $(info bufpool pool_resident_bytes) >> 20 )) MiB"
    for pipeline in $pipelines; do
        hits0="$(info bufpool pool_hits)"; misses0="$(info bufpool pool_misses)"; reads0="$(info bufpool pool_reads)"
        batches0="$(info stats executor_batches)"; commands0="$(info stats total_commands_processed)"
        cpu0="$(cpu_s "/proc/$server_pid")"; exec_cpu0="$(cpu_s "$executor")"
        load_avg="$(cut -d' ' -f1 /proc/loadavg)"
        delay0="$(run_delay_s "$executor")"; disk0="$(disk_stat)"
        get_run "$pipeline" "$requests"
        delay1="$(run_delay_s "$executor")"; disk1="$(disk_stat)"
        cpu1="$(cpu_s "/proc/$server_pid")"; exec_cpu1="$(cpu_s "$executor")"
        hits1="$(info bufpool pool_hits)"; misses1="$(info bufpool pool_misses)"; reads1="$(info bufpool pool_reads)"
        batches1="$(info stats executor_batches)"; commands1="$(info stats total_commands_processed)"
        rss="$(rss_mb "$server_pid")"
        # Why page reads fall short of fio, if they do: GETs per executor turn (the most
        # reads one submission can carry), the executor thread's busy share of one core, and
        # the server's CPU per GET, on a machine whose load average is shown.
        per_turn="$(calc %.1f "($commands1 - $commands0) / ($batches1 - $batches0)")"
        exec_busy="$(calc %.2f "($exec_cpu1 - $exec_cpu0) / $elapsed")"
        exec_waiting="$(calc %.2f "($delay1 - $delay0) / $elapsed")"
        cpu_us="$(calc %.1f "($cpu1 - $cpu0) * 1e6 / $requests")"
        read -r _ _ q0 <<< "$disk0"; read -r _ _ q1 <<< "$disk1"
        disk_qd="$(calc %.1f "($q1 - $q0) / ($elapsed * 1000)")"
        say "  diagnostics: $per_turn GETs per executor turn; executor thread on a CPU $exec_busy and runnable but waiting for one $exec_waiting of the time; server CPU $cpu_us us per GET; load average $load_avg on $(nproc) cores; disk $(disk_figures "$disk0" "$disk1" "$elapsed")"
        reads_per_s="$(calc %.0f "($reads1 - $reads0) / $elapsed")"
        misses_per_s="$(calc %.0f "($misses1 - $misses0) / $elapsed")"
        hit_ratio="$(calc %.4f "($hits1 - $hits0) / (($hits1 - $hits0) + ($misses1 - $misses0))")"
        reads_per_get="$(calc %.3f "($reads1 - $reads0) / $requests")"
        say "bufpool-server $mode P=$pipeline: GET $rps rps, p50 $p50 ms, p99 $p99 ms; page reads $reads_per_s/s ($reads_per_get per GET), pool misses $misses_per_s/s, hit ratio $hit_ratio, RSS $rss MiB"
        pending+=("$mode $pipeline $rps $p50 $p99 $reads_per_s $misses_per_s $reads_per_get $hit_ratio $rss $per_turn $exec_busy $exec_waiting $cpu_us $load_avg $disk_qd")
    done
    say "bufpool-server $mode: peak RSS $(hwm_mb "$server_pid") MiB; executor batches $(info stats executor_batches) for $(info stats total_commands_processed) commands"
    stop_server
done
fio_run after

# ---- 4. the round trip's ceiling --------------------------------------------------------
declare -A ceiling_rps=()
if [ "$ceiling_keys" -gt 0 ]; then
    start_redis ceiling
    load "$dir/redis-ceiling-load-errors.txt" "$ceiling_keys"
    for pipeline in $pipelines; do
        get_run "$pipeline" "$requests" "$ceiling_keys"
        ceiling_rps[$pipeline]="$rps"
        say "redis-server in memory ($ceiling_keys keys) P=$pipeline: GET $rps rps, p50 $p50 ms, p99 $p99 ms (the round trip's ceiling)"
        json "{\"server\":\"redis-server\",\"durability\":\"none\",\"test\":\"get-in-memory-ceiling\",\"pipeline\":$pipeline,\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99,\"keys\":$ceiling_keys}"
    done
    stop_redis
fi

fio_mean="$(calc %.0f "($fio_before + $fio_iops) / 2")"
json "{\"server\":\"fio\",\"durability\":null,\"test\":\"randread-qd32-4k\",\"pipeline\":32,\"rps\":$fio_mean,\"p50_ms\":$fio_p50_ms,\"p99_ms\":$fio_p99_ms,\"fio_qd32_iops\":$fio_mean,\"before\":$fio_before,\"after\":$fio_iops}"
say "fio QD32 IOPS (mean of before and after): $fio_mean"
for row in "${pending[@]}"; do
    read -r mode pipeline rps p50 p99 reads_per_s misses_per_s reads_per_get hit_ratio rss per_turn exec_busy exec_waiting cpu_us load_avg disk_qd <<< "$row"
    ratio="$(calc %.3f "$reads_per_s / $fio_mean")"
    say "bufpool-server $mode P=$pipeline: page reads/s $reads_per_s = ${ratio}x fio QD32 (target >= 0.8)"
    if [ -n "${ceiling_rps[$pipeline]:-}" ]; then
        reach="$(calc %.0f "${ceiling_rps[$pipeline]} * $reads_per_get")"
        say "  ceiling at P=$pipeline: redis-server's in-memory ${ceiling_rps[$pipeline]} GETs/s x $reads_per_get reads per GET = $reach page reads/s = $(calc %.3f "$reach / $fio_mean")x fio; bufpool-server's GETs/s are $(calc %.3f "$rps / ${ceiling_rps[$pipeline]}")x that ceiling"
    fi
    json "{\"server\":\"bufpool-server\",\"durability\":\"$mode\",\"test\":\"get\",\"pipeline\":$pipeline,\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99,\"page_reads_per_s\":$reads_per_s,\"pool_misses_per_s\":$misses_per_s,\"page_reads_per_get\":$reads_per_get,\"hit_ratio\":$hit_ratio,\"rss_mb\":$rss,\"gets_per_turn\":$per_turn,\"executor_busy\":$exec_busy,\"executor_runnable_waiting\":$exec_waiting,\"disk_avg_qd\":$disk_qd,\"cpu_us_per_get\":$cpu_us,\"load_avg\":$load_avg,\"fio_qd32_iops\":$fio_mean,\"ratio_to_fio\":$ratio,\"ceiling_rps\":${ceiling_rps[$pipeline]:-null},\"keys\":$keys,\"pool_mb\":$pool_mb}"
done

# ---- 5. redis-server with maxmemory -----------------------------------------------------
for policy in $redis_policies; do
    start_redis "$policy" --maxmemory "$redis_maxmemory" --maxmemory-policy "$policy"
    say "redis-server maxmemory $redis_maxmemory $policy: loading $keys keys with redis-cli --pipe"
    load "$dir/redis-$policy-load-errors.txt"
    stored="$(redis-cli -p "$port" dbsize)"
    evicted="$(info stats evicted_keys)"
    used_mb="$(calc %.1f "$(info memory used_memory) / 1048576")"
    rss="$(rss_mb "$redis_pid")"
    first_error="$(sort -rn "$dir/redis-$policy-load-errors.txt" | head -1 | cut -d' ' -f2- | tr -d '"\\')"
    load_rps="$(calc %.0f "$keys / $load_seconds")"
    if [ "$load_errors" != 0 ]; then
        what="refused $load_errors of $keys SETs (\"$first_error\"): holds the first $stored keys"
    else
        what="accepted every SET, evicted $evicted keys: holds $stored of $keys"
    fi
    say "redis-server $policy: $what; used_memory $used_mb MiB, RSS $rss MiB, load $load_seconds s"
    json "{\"server\":\"redis-server\",\"durability\":\"none\",\"test\":\"load\",\"pipeline\":0,\"rps\":$load_rps,\"p50_ms\":null,\"p99_ms\":null,\"maxmemory\":\"$redis_maxmemory\",\"maxmemory_policy\":\"$policy\",\"keys\":$keys,\"keys_stored\":$stored,\"oom_errors\":$load_errors,\"evicted_keys\":$evicted,\"used_memory_mb\":$used_mb,\"rss_mb\":$rss,\"outcome\":\"$what\"}"
    for pipeline in $pipelines; do
        hits0="$(info stats keyspace_hits)"; misses0="$(info stats keyspace_misses)"
        get_run "$pipeline" "$requests"
        hits1="$(info stats keyspace_hits)"; misses1="$(info stats keyspace_misses)"
        hit_ratio="$(calc %.4f "($hits1 - $hits0) / (($hits1 - $hits0) + ($misses1 - $misses0))")"
        say "redis-server $policy P=$pipeline: GET $rps rps, p50 $p50 ms, p99 $p99 ms; keyspace hit ratio $hit_ratio (the rest are nil replies: keys it does not have)"
        json "{\"server\":\"redis-server\",\"durability\":\"none\",\"test\":\"get\",\"pipeline\":$pipeline,\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99,\"hit_ratio\":$hit_ratio,\"maxmemory\":\"$redis_maxmemory\",\"maxmemory_policy\":\"$policy\",\"keys\":$keys,\"keys_stored\":$stored}"
    done
    stop_redis
done
say "JSON lines appended to $out"
