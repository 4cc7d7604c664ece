#!/usr/bin/env bash
# Runs fio and iobench alternately on the same file for each job in benches/fio/*.fio and
# prints a table; with --json the last line is one JSON object:
#   {"jobs":[{"name":..., "fio_iops":..., "ours_iops":..., "ratio":..., "fio_cpu_us_per_io":...,
#             "ours_cpu_us_per_io":...}, ...]}
# CPU per I/O: fio's usr_cpu + sys_cpu (percent of its job thread, getrusage RUSAGE_THREAD)
# times job_runtime over its I/O count; ours is getrusage(RUSAGE_SELF) over the measured phase
# divided by our I/O count (the whole process, io_uring worker threads included: stricter).
#
# Usage: benches/fio/compare.sh [--seconds S] [--rounds N] [--size SIZE] [--file PATH] [--json]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
seconds=10
rounds=1
size=2G
file="$repo/target/bench-data/fio-compare.data"
json=0
jobs=(randread-qd1 randread-qd32 randwrite-qd32 seqread-128k-qd8)

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --file) file="$2"; shift 2 ;;
        --json) json=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

if ! command -v fio >/dev/null 2>&1; then
    echo "compare.sh: fio is not installed; install it with: apt-get install fio" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "compare.sh: python3 is needed to read fio's JSON; install it with: apt-get install python3" >&2
    exit 1
fi

log() { echo "compare.sh: $*" >&2; }

# Build iobench (release) unless IOBENCH points at a binary already.
if [ -z "${IOBENCH:-}" ]; then
    log "building iobench (release)"
    (cd "$repo" && cargo build --release --quiet -p bufpool-benches --bin iobench)
    IOBENCH="${CARGO_TARGET_DIR:-$repo/target}/release/iobench"
fi

mkdir -p "$(dirname "$file")"
fs_type="$(stat -f -c %T "$(dirname "$file")")"
case "$fs_type" in
    tmpfs|ramfs) echo "compare.sh: $file is on $fs_type, which has no O_DIRECT; use a disk filesystem" >&2; exit 1 ;;
esac

# iobench creates and fills the file when it is missing or short; fio then finds it complete.
log "preparing $file ($size)"
"$IOBENCH" --file "$file" --size "$size" --bs 4k --rw randread --iodepth 1 --seconds 0.1 --json >/dev/null

results="$(mktemp -d "${TMPDIR:-/tmp}/compare.XXXXXX")"
trap 'rm -rf "$results"' EXIT

job_value() { sed -n "s/^$2=//p" "$here/$1.fio" | tail -1; }

for round in $(seq 1 "$rounds"); do
    for job in "${jobs[@]}"; do
        rw="$(job_value "$job" rw)"; bs="$(job_value "$job" bs)"; depth="$(job_value "$job" iodepth)"
        log "round $round/$rounds: $job: fio"
        FIO_FILE="$file" FIO_SIZE="$size" FIO_RUNTIME="${seconds}s" \
            fio --output-format=json --output="$results/$job.$round.fio.json" "$here/$job.fio"
        log "round $round/$rounds: $job: iobench"
        "$IOBENCH" --file "$file" --size "$size" --bs "$bs" --rw "$rw" --iodepth "$depth" \
            --threads 1 --seconds "$seconds" --engine uring --json >"$results/$job.$round.ours.json"
    done
done

python3 - "$results" "$rounds" "$json" "${jobs[@]}" <<'PY'
import json, sys
results, rounds, as_json, names = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]

def fio_figures(path):
    job = json.load(open(path))["jobs"][0]
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    iops = job["read"]["iops"] + job["write"]["iops"]
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * job["job_runtime"] / 1000.0
    side = job["read"] if job["read"]["total_ios"] else job["write"]
    p99_us = side["clat_ns"]["percentile"].get("99.000000", 0) / 1000.0
    return iops, cpu_s * 1e6 / ios, p99_us

def ours_figures(path):
    ours = json.load(open(path))
    return ours["iops"], ours["cpu_us_per_io"], ours["lat_p99_us"]

def mean(values):
    return sum(values) / len(values)

rows = []
for name in names:
    fio = [fio_figures(f"{results}/{name}.{r}.fio.json") for r in range(1, rounds + 1)]
    ours = [ours_figures(f"{results}/{name}.{r}.ours.json") for r in range(1, rounds + 1)]
    fio_iops, fio_cpu, fio_p99 = (mean([row[i] for row in fio]) for i in range(3))
    ours_iops, ours_cpu, ours_p99 = (mean([row[i] for row in ours]) for i in range(3))
    rows.append({
        "name": name,
        "fio_iops": round(fio_iops, 1),
        "ours_iops": round(ours_iops, 1),
        "ratio": round(ours_iops / fio_iops, 3),
        "fio_cpu_us_per_io": round(fio_cpu, 3),
        "ours_cpu_us_per_io": round(ours_cpu, 3),
        "fio_p99_us": round(fio_p99, 1),
        "ours_p99_us": round(ours_p99, 1),
    })

header = f"{'job':<18} {'fio IOPS':>10} {'ours IOPS':>10} {'ratio':>6} {'fio CPU us/IO':>14} {'ours CPU us/IO':>15} {'fio p99 us':>11} {'ours p99 us':>12}"
print(header)
print("-" * len(header))
for row in rows:
    print(f"{row['name']:<18} {row['fio_iops']:>10.0f} {row['ours_iops']:>10.0f} {row['ratio']:>6.3f} "
          f"{row['fio_cpu_us_per_io']:>14.2f} {row['ours_cpu_us_per_io']:>15.2f} {row['fio_p99_us']:>11.0f} {row['ours_p99_us']:>12.0f}")
if as_json:
    keys = ["name", "fio_iops", "ours_iops", "ratio", "fio_cpu_us_per_io", "ours_cpu_us_per_io"]
    print(json.dumps({"jobs": [{key: row[key] for key in keys} for row in rows]}))
PY
