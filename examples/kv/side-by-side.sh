#!/usr/bin/env bash
# The side-by-side of issue 4: the same data set and workload on bufpool, LMDB, redb and a std
# BTreeMap (in memory), or on bufpool and the peers under the same memory budget with fio's
# 4 KiB QD32 random-read IOPS on the same disk in the same run (out of memory).
# cpu_us/l is process CPU time per lookup (all threads): unlike lookups/s it stays meaningful
# when other work shares the machine; `load` is the load average before the run.
# Prints one table row per run, appends every run's JSON line to OUT (default
# DIR/MODE.jsonl) and kv's stderr (progress, memory cap, errors) to DIR/MODE.stderr.
#
# Usage: examples/kv/side-by-side.sh in-memory|out-of-memory [--rounds N] [--seconds S]
#                                    [--dir DIR] [--out FILE] [--records N]
#                                    [--bufpool-args "--threads 8 --batch 32"]
#   in-memory:     10M records, 2 threads, 2048 MiB budget; each run loads fresh (warm).
#   out-of-memory: 20M records, 32 threads, 1024 MiB pool, every engine capped by a cgroup at
#                  1200 MiB (pool or page cache plus the process); databases reused (--reuse)
#                  after a first load, each run starts cold and warms up for 10 s unmeasured.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode="${1:-}"
[ $# -gt 0 ] && shift
rounds=1
seconds=10
records=""
dir="$repo/target/kv-side-by-side"
out=""
bufpool_args=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --records) records="$2"; shift 2 ;;
        --bufpool-args) bufpool_args="$2"; shift 2 ;;
        *) echo "side-by-side.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$mode" in
    in-memory)
        engines=(bufpool lmdb redb btreemap)
        records="${records:-10000000}"
        common=(--threads 2 --pool-mb 2048 --seconds "$seconds") ;;
    out-of-memory)
        engines=(bufpool lmdb redb)
        records="${records:-20000000}"
        common=(--threads 32 --pool-mb 1024 --cgroup-mb 1200
                --seconds "$seconds" --warmup 10 --reuse) ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
common+=(--records "$records")
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"  # absolute: the runs cd into it
out="${out:-$dir/$mode.jsonl}"
(cd "$repo" && cargo build --release -p kv --quiet)
kv="${CARGO_TARGET_DIR:-$repo/target}/release/kv"

fio_qd32() {
    # Read-only on the bufpool data file; prints IOPS.
    FIO_FILE="$1" FIO_SIZE="$(stat -c %s "$1")" FIO_RUNTIME="$seconds" \
        fio --output-format=json "$repo/benches/fio/randread-qd32.fio" 2>/dev/null |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))'
}

row() {
    python3 -c '
import json, sys
d = json.loads(sys.argv[1])
fmt = lambda v: "-" if v is None else "{:,.0f}".format(v)
cpu = d["cpu_us_per_lookup"]
print("%-9s %11s %9s %8.1f %8.1f %8s %8s %6.2f  %s  load %s" % (d["engine"],
      fmt(d["lookups_per_s"]), fmt(d["reads_per_s"]), d["p50_us"], d["p99_us"],
      fmt(d["resident_mb"]), "-" if cpu is None else "%.2f" % cpu, d["cpu_cores_used"],
      d["memory_cap"], sys.argv[2]))
' "$1" "$2"
}

echo "$mode on $(nproc) cores, $(uname -r); JSON lines in $out"
printf '%-9s %11s %9s %8s %8s %8s %8s %6s\n' engine lookups/s reads/s p50_us p99_us res_MiB \
    cpu_us/l cores
for round in $(seq "$rounds"); do
    for engine in "${engines[@]}"; do
        load="$(cut -d' ' -f1-3 /proc/loadavg)"
        args=("${common[@]}")
        if [ "$engine" = bufpool ] && [ -n "$bufpool_args" ]; then
            # bufpool's own best concurrency (batched, overlapped misses) may differ from the
            # peers': its flags replace the common --threads.
            args=()
            skip=0
            for arg in "${common[@]}"; do
                if [ "$skip" = 1 ]; then skip=0; continue; fi
                if [ "$arg" = --threads ]; then skip=1; continue; fi
                args+=("$arg")
            done
            read -r -a extra <<<"$bufpool_args"
            args+=("${extra[@]}")
        fi
        line="$(cd "$dir" && "$kv" bench --engine "$engine" "${args[@]}" --json \
            2>>"$dir/$mode.stderr" | tail -1)" || true
        if [ "${line:0:1}" != "{" ]; then
            echo "$engine failed: $(tail -1 "$dir/$mode.stderr")"
            continue
        fi
        echo "$line" >>"$out"
        row "$line" "$load"
    done
    if [ "$mode" = out-of-memory ] && command -v fio >/dev/null 2>&1; then
        iops="$(fio_qd32 "$dir/kv-data/bench-bufpool.db")"
        echo "{\"engine\":\"fio-randread-qd32\",\"iops\":$iops}" >>"$out"
        printf '%-9s %11s %9s\n' fio - "$iops"
    fi
done
