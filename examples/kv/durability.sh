#!/usr/bin/env bash
# The durability benchmark of issue 7, with every anchor measured in the same run:
#   1. fio: 4 KiB O_DIRECT random writes with an fdatasync after each, at QD1 (the
#      single-writer ceiling of synced commits), then 128 KiB sequential reads at QD8 (for the
#      recovery ratio), on a scratch file in DIR (the same filesystem as the databases);
#   2. synced updates (`kv bench --workload update --durability immediate`, one write
#      transaction per operation) on bufpool, LMDB (sync per commit) and redb
#      (Durability::Immediate) with each thread count;
#   3. bufpool's `--durability none` and `periodic` at the same thread counts;
#   4. bufpool's recovery workload: updates under `none`, a drop without checkpoint, the
#      reopen's log replay in MiB/s against fio's sequential read.
# Prints a table with ratios to fio's synced-write IOPS and to LMDB and redb at the same
# thread count (--json: JSON lines instead, with the same ratios as fields). Every run's JSON
# line is also appended to OUT (default DIR/MODE.jsonl); kv's stderr goes to DIR/MODE.stderr.
#
# Usage: examples/kv/durability.sh [in-memory|out-of-memory] [--seconds S] [--json]
#            [--threads "1 8 32"] [--records N] [--dir DIR] [--out FILE] [--fio-size SIZE]
#   in-memory (default): 1M records, 1024 MiB budget: the data fits in every engine's memory.
#   out-of-memory:       20M records, 1024 MiB pool, every engine capped by a cgroup at
#                        1200 MiB (`--cgroup-mb`, root needed), 5 s unmeasured warm-up.
# Databases are loaded once per engine (under DIR/kv-data/) and reused (--reuse) afterwards.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mode=in-memory
case "${1:-}" in
    in-memory|out-of-memory) mode="$1"; shift ;;
esac
seconds=10
threads="1 8 32"
records=""
dir="$repo/target/kv-durability"
out=""
json=0
fio_size=1G
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --records) records="$2"; shift 2 ;;
        --dir) dir="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --fio-size) fio_size="$2"; shift 2 ;;
        --json) json=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "durability.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$mode" in
    in-memory)
        records="${records:-1000000}"
        common=(--pool-mb 1024 --seconds "$seconds" --warmup 2) ;;
    out-of-memory)
        records="${records:-20000000}"
        common=(--pool-mb 1024 --cgroup-mb 1200 --seconds "$seconds" --warmup 5) ;;
esac
common+=(--records "$records" --reuse --json)
for tool in fio python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "durability.sh: $tool is not installed (apt-get install -y $tool)" >&2
        exit 1
    fi
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"  # absolute: the runs cd into it
case "$(stat -f -c %T "$dir")" in
    tmpfs|ramfs) echo "durability.sh: $dir has no O_DIRECT (tmpfs); use a disk filesystem" >&2
                 exit 1 ;;
esac
out="${out:-$dir/$mode.jsonl}"
run_file="$(mktemp "$dir/run.XXXXXX")"  # this run's lines, for the table
trap 'rm -f "$run_file"' EXIT
log() { echo "durability.sh: $*" >&2; }

(cd "$repo" && cargo build --release -p kv --quiet)
kv="${CARGO_TARGET_DIR:-$repo/target}/release/kv"

record() {
    # Tags a JSON line with this run's mode and keeps it.
    line="$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["mode"]=sys.argv[2]; print(json.dumps(d))' "$1" "$mode")"
    echo "$line" >>"$run_file"
    echo "$line" >>"$out"
}

fio_job() {
    # fio_job JOB: runs benches/fio/JOB.fio on the scratch file; records its figures.
    local job="$1"
    log "fio $job (${seconds}s)"
    FIO_FILE="$dir/fio-scratch.data" FIO_SIZE="$fio_size" FIO_RUNTIME="$seconds" \
        fio --output-format=json "$repo/benches/fio/$job.fio" 2>>"$dir/$mode.stderr" |
        python3 -c '
import json, sys
job = json.load(sys.stdin)["jobs"][0]
name = sys.argv[1]
pct = lambda lat, q: round(lat["percentile"].get(q, 0) / 1000, 1) if lat.get("percentile") else None
if job["write"]["total_ios"] > 0:
    side = job["write"]
    sync = job.get("sync", {}).get("lat_ns", {})
    line = {"engine": "fio", "job": name, "iops": round(side["iops"], 1),
            "write_p50_us": pct(side["clat_ns"], "50.000000"),
            "sync_p50_us": pct(sync, "50.000000") if sync else None,
            "sync_p99_us": pct(sync, "99.000000") if sync else None}
else:
    side = job["read"]
    line = {"engine": "fio", "job": name, "iops": round(side["iops"], 1),
            "mb_per_s": round(side["bw_bytes"] / 2**20, 1)}
print(json.dumps(line))
' "$job"
}

kv_run() {
    # kv_run ENGINE DURABILITY THREADS [WORKLOAD]: one kv bench run; records its JSON line.
    local engine="$1" durability="$2" nthreads="$3" workload="${4:-update}" line
    log "$engine $workload --durability $durability --threads $nthreads (${seconds}s)"
    line="$(cd "$dir" && "$kv" bench --engine "$engine" --workload "$workload" \
        --durability "$durability" --threads "$nthreads" "${common[@]}" \
        2>>"$dir/$mode.stderr" | tail -1)" || true
    if [ "${line:0:1}" != "{" ]; then
        log "$engine failed: $(tail -1 "$dir/$mode.stderr")"
        return 0
    fi
    record "$line"
}

log "$mode on $(nproc) cores, $(uname -r), $(stat -f -c %T "$dir") at $dir; JSON lines in $out"
record "$(fio_job randwrite-fdatasync-qd1)"
record "$(fio_job seqread-128k-qd8)"
rm -f "$dir/fio-scratch.data"
for nthreads in $threads; do
    for engine in bufpool lmdb redb; do
        kv_run "$engine" immediate "$nthreads"
    done
    for durability in periodic none; do
        kv_run bufpool "$durability" "$nthreads"
    done
done
kv_run bufpool none 2 recovery

python3 - "$run_file" "$json" "$mode" <<'PY'
import json, sys
lines = [json.loads(text) for text in open(sys.argv[1]) if text.strip()]
as_json, mode = sys.argv[2] == "1", sys.argv[3]
fio = {d["job"]: d for d in lines if d["engine"] == "fio"}
sync_iops = fio.get("randwrite-fdatasync-qd1", {}).get("iops")
seq_mb = fio.get("seqread-128k-qd8", {}).get("mb_per_s")
runs = [d for d in lines if d["engine"] != "fio"]
def peer(engine, d):
    for other in runs:
        if (other["engine"], other["durability"], other["threads"], other["workload"]) == \
                (engine, d["durability"], d["threads"], d["workload"]):
            return other["ops_per_s"]
    return None
ratio = lambda a, b: round(a / b, 2) if a is not None and b else None
for d in runs:
    d["ratio_fio"] = ratio(d["ops_per_s"], sync_iops)
    d["ratio_lmdb"] = ratio(d["ops_per_s"], peer("lmdb", d))
    d["ratio_redb"] = ratio(d["ops_per_s"], peer("redb", d))
    if d["workload"] == "recovery":
        d["ratio_fio_seqread"] = ratio(d.get("recovery_mb_per_s"), seq_mb)
if as_json:
    for d in lines:
        print(json.dumps(d))
    sys.exit(0)
fmt = lambda v, spec="{:,.0f}": "-" if v is None else spec.format(v)
print(f"{mode}: fio 4 KiB randwrite+fdatasync QD1 {fmt(sync_iops)} IOPS "
      f"(sync p50 {fmt(fio.get('randwrite-fdatasync-qd1', {}).get('sync_p50_us'), '{:.0f}')} µs); "
      f"fio 128 KiB seqread {fmt(seq_mb)} MiB/s")
print("%-8s %-10s %7s %10s %9s %10s %10s %6s %6s %6s" % ("engine", "durability", "threads",
      "ops/s", "syncs/s", "commit_p50", "commit_p99", "×fio", "×lmdb", "×redb"))
for d in runs:
    if d["workload"] != "update":
        continue
    print("%-8s %-10s %7d %10s %9s %10s %10s %6s %6s %6s" % (d["engine"], d["durability"],
          d["threads"], fmt(d["ops_per_s"]), fmt(d["syncs_per_s"]),
          fmt(d["commit_p50_us"], "{:.1f}"), fmt(d["commit_p99_us"], "{:.1f}"),
          fmt(d["ratio_fio"], "{:.2f}"), fmt(d["ratio_lmdb"], "{:.2f}"),
          fmt(d["ratio_redb"], "{:.2f}")))
for d in runs:
    if d["workload"] == "recovery":
        print(f"recovery: {fmt(d['recovery_log_bytes'] / 2**20, '{:.1f}')} MiB of log replayed in "
              f"{d['recovery_seconds']:.3f} s = {fmt(d['recovery_mb_per_s'])} MiB/s, "
              f"{fmt(d['ratio_fio_seqread'], '{:.2f}')}× fio's sequential read "
              f"(reopen {d['reopen_seconds']:.3f} s, after {fmt(d['commits'])} updates "
              f"under --durability none)")
PY
