#!/usr/bin/env bash
# Runs fio and iobench alternately on the same file for each job in benches/fio/*.fio and
# prints a table. Each side's --seconds are cut into half-second slices that alternate
# (fio, ours, ours, fio, fio, ours, ...), so a drift in background load (other processes, a
# shared disk) hits both sides alike; figures are totals over the slices.
# With --json the last line is one JSON object:
#   {"jobs":[{"name":..., "fio_iops":..., "ours_iops":..., "ratio":..., "fio_cpu_us_per_io":...,
#             "ours_cpu_us_per_io":...}, ...]}
# CPU per I/O: fio's usr_cpu + sys_cpu (percent of its job thread, getrusage RUSAGE_THREAD)
# times job_runtime over its I/O count; ours is getrusage(RUSAGE_SELF) over the measured phase
# divided by our I/O count (the whole process, io_uring worker threads included: stricter).
#
# Usage: benches/fio/compare.sh [--seconds S] [--slices N] [--size SIZE] [--file PATH] [--json]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
seconds=10
slices=""
size=2G
file="$repo/target/bench-data/fio-compare.data"
json=0
jobs=(randread-qd1 randread-qd32 randwrite-qd32 seqread-128k-qd8)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --slices) slices="$2"; shift 2 ;;
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

# Half-second slices by default (at least one).
if [ -z "$slices" ]; then
    slices=$(python3 -c "print(max(1, round(float('$seconds') * 2)))")
fi
slice_ms=$(python3 -c "print(round(float('$seconds') * 1000 / $slices))")
slice_seconds=$(python3 -c "print($slice_ms / 1000)")

run_fio() { # job slice
    FIO_FILE="$file" FIO_SIZE="$size" FIO_RUNTIME="${slice_ms}ms" \
        fio --output-format=json --output="$results/$1.$2.fio.json" "$here/$1.fio"
}
run_ours() { # job slice rw bs depth
    "$IOBENCH" --file "$file" --size "$size" --bs "$4" --rw "$3" --iodepth "$5" \
        --threads 1 --seconds "$slice_seconds" --engine uring --json >"$results/$1.$2.ours.json"
}

for job in "${jobs[@]}"; do
    rw="$(job_value "$job" rw)"; bs="$(job_value "$job" bs)"; depth="$(job_value "$job" iodepth)"
    log "$job: $slices slices of ${slice_seconds}s each side"
    for slice in $(seq 1 "$slices"); do
        if [ $((slice % 2)) -eq 1 ]; then
            run_fio "$job" "$slice"; run_ours "$job" "$slice" "$rw" "$bs" "$depth"
        else
            run_ours "$job" "$slice" "$rw" "$bs" "$depth"; run_fio "$job" "$slice"
        fi
    done
done

python3 - "$results" "$slices" "$json" "${jobs[@]}" <<'PY'
import json, sys
results, slices, as_json, names = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]

def fio_slice(path):
    """(ios, runtime s, cpu s, p99 us) of one fio run."""
    job = json.load(open(path))["jobs"][0]
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    runtime_s = job["job_runtime"] / 1000.0
    cpu_s = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * runtime_s
    side = job["read"] if job["read"]["total_ios"] else job["write"]
    p99_us = side["clat_ns"]["percentile"].get("99.000000", 0) / 1000.0
    return ios, runtime_s, cpu_s, p99_us

def ours_slice(path):
    ours = json.load(open(path))
    return ours["ios"], ours["runtime_s"], ours["usr_s"] + ours["sys_s"], ours["lat_p99_us"]

def totals(slices_figures):
    ios = sum(f[0] for f in slices_figures)
    runtime_s = sum(f[1] for f in slices_figures)
    cpu_s = sum(f[2] for f in slices_figures)
    # p99 over slices: weighted by I/O count (informative only).
    p99_us = sum(f[3] * f[0] for f in slices_figures) / max(ios, 1)
    return ios / runtime_s, cpu_s * 1e6 / ios, p99_us

rows = []
for name in names:
    fio_iops, fio_cpu, fio_p99 = totals([fio_slice(f"{results}/{name}.{s}.fio.json") for s in range(1, slices + 1)])
    ours_iops, ours_cpu, ours_p99 = totals([ours_slice(f"{results}/{name}.{s}.ours.json") for s in range(1, slices + 1)])
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
