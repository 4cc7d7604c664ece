#!/usr/bin/env bash
# The tournament of issue 10: YCSB A-F (zipfian; D reads the latest, as YCSB defines it) on
# bufpool, LMDB, redb and RocksDB (where it builds), in one run and on the same data set, in
# memory and out of memory, with fio's 4 KiB QD32 random-read IOPS on bufpool's data file.
# Each engine loads once per setting and runs every workload in the same process
# (`kv bench --workload ycsb-a,ycsb-b,...`), one JSON line per workload, tagged with the
# setting and a label; --plot draws them with `kv plot` (one panel per setting, grouped bars).
#
#   in memory:     --records (10M) records, 2 threads, 2048 MiB budget, 2 s warm-up each.
#   out of memory: --oom-records (20M) records, 32 threads, 1024 MiB budget, every engine
#                  capped by a cgroup at 1200 MiB (kv bench --cgroup-mb: pool or caches plus
#                  the process), 10 s warm-up each (--oom-warmup); bufpool also with its batched settings
#                  (--bufpool-batched, default "--threads 8 --batch 32") on ycsb-c, the one
#                  workload whose operations are all lookups (a batch of K is K YCSB reads).
#                  The peers whose caches are malloc'd get the allocator setting their
#                  adapters' docs give for a cap (bufpool's frames and LMDB's map are not
#                  malloc'd): redb MALLOC_ARENA_MAX=1 (each glibc arena keeps its own free
#                  space: with 2 arenas it grew by 105 MiB through ycsb-b and the cap killed
#                  redb at the start of ycsb-c; with 1 it stayed under 105 MiB), RocksDB
#                  jemalloc (Debian's libjemalloc.so.2 preloaded, as RocksDB recommends; on
#                  glibc it outgrew the cap), or a note that it runs without. Their data is
#                  loaded (if not already there) by a process of its own before the capped one:
#                  kv loads uncapped and then enters the cap, and what the load leaves in
#                  malloc's free lists stays charged outside the cap yet is reused under it
#                  (redb's load left 1 GiB: the capped run then used 1.6 GiB in a 1.2 GiB cap).
#
# Usage: examples/kv/tournament.sh [--records N] [--oom-records N] [--seconds S]
#            [--warmup S] [--oom-warmup S] [--workloads "ycsb-a ycsb-b ..."] [--engines "bufpool lmdb redb rocksdb"]
#            [--skip-oom] [--skip-in-memory] [--bufpool-batched "ARGS"] [--dir DIR]
#            [--out FILE.jsonl] [--plot FILE.svg] [--table FILE.txt]
# RocksDB: built with `--features rocksdb` against the system's librocksdb when
# /usr/lib/x86_64-linux-gnu/librocksdb.so exists (Debian: apt-get install librocksdb-dev
# libclang-dev), else from source (long); left out, with a note, if the build fails.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
records=10000000
oom_records=20000000
seconds=10
warmup=2
oom_warmup=10
workloads="ycsb-a ycsb-b ycsb-c ycsb-d ycsb-e ycsb-f"
engines="bufpool lmdb redb rocksdb"
skip_oom=0
skip_in_memory=0
bufpool_batched="--threads 8 --batch 32"
target="${CARGO_TARGET_DIR:-$repo/target}"
dir="$target/kv-tournament"
out=""
plot=""
table=""
while [ $# -gt 0 ]; do
    case "$1" in
        --records) records="$2"; shift 2 ;;
        --oom-records) oom_records="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --warmup) warmup="$2"; shift 2 ;;
        --oom-warmup) oom_warmup="$2"; shift 2 ;;
        --workloads) workloads="$2"; shift 2 ;;
        --engines) engines="$2"; shift 2 ;;
        --skip-oom) skip_oom=1; shift ;;
        --skip-in-memory) skip_in_memory=1; shift ;;
        --bufpool-batched) bufpool_batched="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --plot) plot="$2"; shift 2 ;;
        --table) table="$2"; shift 2 ;;
        *) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"  # absolute: the runs cd into it
out="${out:-$dir/results.jsonl}"
: >"$out"
stderr_log="$dir/stderr.log"

(cd "$repo" && cargo build --release -p kv --quiet)
kv="$target/release/kv"
if [[ " $engines " == *" rocksdb "* ]]; then
    if [ -z "${ROCKSDB_LIB_DIR:-}" ] && [ -e /usr/lib/x86_64-linux-gnu/librocksdb.so ]; then
        export ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu ROCKSDB_INCLUDE_DIR=/usr/include
    fi
    if (cd "$repo" && CARGO_TARGET_DIR="$target/rocksdb" \
            cargo build --release -p kv --features rocksdb --quiet) 2>>"$stderr_log"; then
        kv="$target/rocksdb/release/kv"  # every engine runs on this one binary
    else
        echo "tournament: kv --features rocksdb did not build (see $stderr_log): no RocksDB"
        engines="${engines/rocksdb/}"
    fi
fi
workload_list="$(echo $workloads | tr ' ' ',')"

# Appends kv's JSON lines to $out with the setting and label; prints a summary line each.
record() {
    local setting="$1" label="$2"
    python3 -c '
import json, sys
setting, label, out = sys.argv[1:4]
with open(out, "a") as sink:
    for line in sys.stdin:
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        d["setting"], d["label"] = setting, label
        sink.write(json.dumps(d) + "\n")
        ops = d["lookups_per_s"] if d["batch"] > 1 else d["ops_per_s"]
        print("  %-18s %-7s %12s ops/s  p99 %8.1f us  cpu %6.2f us/op  %s" % (label,
              d["workload"], "{:,.0f}".format(ops), d["p99_us"],
              d["cpu_us_per_op"] or 0, d["memory_cap"]))
' "$setting" "$label" "$out"
}

fio_qd32() {
    # Read-only on the bufpool data file; appends a JSON line and prints the IOPS.
    local file="$1" setting="$2"
    [ -f "$file" ] && command -v fio >/dev/null 2>&1 || return 0
    local iops
    iops="$(FIO_FILE="$file" FIO_SIZE="$(stat -c %s "$file")" FIO_RUNTIME="$seconds" \
        fio --output-format=json "$repo/benches/fio/randread-qd32.fio" 2>>"$stderr_log" |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))')"
    echo "{\"engine\":\"fio-randread-qd32\",\"iops\":$iops,\"setting\":\"$setting\"}" >>"$out"
    echo "  fio QD32 random reads on $file: $iops IOPS"
}

launcher=()  # what runs kv: the peers' allocator settings out of memory
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
bench() {
    # bench SETTING-DIR LABEL ENGINE ARGS...: one kv process, every workload on one load.
    local where="$1" setting="$2" label="$3" engine="$4"
    shift 4
    mkdir -p "$where"
    (cd "$where" && "${launcher[@]}" "$kv" bench --engine "$engine" "$@" --json \
        2>>"$stderr_log") |
        record "$setting" "$label" || echo "  $label failed: $(tail -1 "$stderr_log")"
}

echo "tournament on $(nproc) cores, $(uname -r), $(date -u +%FT%TZ); JSON lines in $out"
if [ "$skip_in_memory" = 0 ]; then
    echo "in memory: $records records, 2 threads, 2048 MiB budget"
    for engine in $engines; do
        bench "$dir/in-memory" "in memory" "$engine" "$engine" --records "$records" \
            --threads 2 --pool-mb 2048 --seconds "$seconds" --warmup "$warmup" \
            --workload "$workload_list"
    done
    if [ "$skip_oom" = 1 ]; then
        fio_qd32 "$dir/in-memory/kv-data/bench-bufpool.db" "in memory"
    fi
fi
if [ "$skip_oom" = 0 ]; then
    echo "out of memory: $oom_records records, 32 threads, 1024 MiB budget, 1200 MiB cgroup"
    oom=(--records "$oom_records" --pool-mb 1024 --cgroup-mb 1200 --seconds "$seconds"
         --warmup "$oom_warmup" --reuse)
    for engine in $engines; do
        case "$engine" in
            redb) launcher=(env MALLOC_ARENA_MAX=1) ;;
            rocksdb)
                if [ -e "$jemalloc" ]; then
                    launcher=(env LD_PRELOAD="$jemalloc")
                else
                    echo "  no $jemalloc (Debian: libjemalloc2): RocksDB on glibc's malloc"
                fi ;;
        esac
        if [ "$engine" = redb ] || [ "$engine" = rocksdb ]; then
            # The load (or the check that the data is there), in its own process: see above.
            (cd "$dir/out-of-memory" && "${launcher[@]}" "$kv" bench --engine "$engine" \
                --records "$oom_records" --pool-mb 1024 --reuse --threads 1 --seconds 0.1 \
                --warmup 0 --workload ycsb-c --json >/dev/null 2>>"$stderr_log") ||
                echo "  $engine: loading failed: $(tail -1 "$stderr_log")"
        fi
        bench "$dir/out-of-memory" "out of memory" "$engine" "$engine" "${oom[@]}" \
            --threads 32 --workload "$workload_list"
        launcher=()
    done
    if [[ " $engines " == *" bufpool "* ]] && [[ " $workloads " == *" ycsb-c "* ]]; then
        read -r -a batched <<<"$bufpool_batched"
        bench "$dir/out-of-memory" "out of memory" "bufpool batched" bufpool "${oom[@]}" \
            "${batched[@]}" --workload ycsb-c
    fi
    fio_qd32 "$dir/out-of-memory/kv-data/bench-bufpool.db" "out of memory"
fi
if [ -n "$plot" ] || [ -n "$table" ]; then
    text="$("$kv" plot --in "$out" --out "${plot:-$dir/tournament.svg}")"
    echo "$text"
    if [ -n "$table" ]; then echo "$text" >"$table"; fi
fi
