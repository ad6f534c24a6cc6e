#!/usr/bin/env bash
# PyTorch inference on free-threaded CPython (issue 18): parprof attached by pid from the
# process's first instant, beside perf on the same run. One command, from the repository:
#
#     benches/torch.sh
#
# Builds parprof (release), takes the free-threaded 3.13t build the tests use
# (scripts/cpython 3.13t, with its numpy) and installs PyTorch's cp313t wheel into a venv
# under target/bench (several GB with its CUDA dependencies; only the first run downloads).
# fixtures/bench/torch_infer.py then sleeps WAIT s, imports torch (libtorch_cpu.so: 450 MB,
# a full symbol table) and runs THREADS inference workers for SECS s. parprof and
# `perf record --call-graph dwarf` (the same 63 KiB of stack per sample) attach during the
# sleep, so parprof pays for loading every module. Printed per round, then as medians:
#   - native completeness: the share of native stacks unwound to their outermost frame,
#     parprof's over all its walks (its end-of-run line) and over its samples of threads on
#     a CPU (`[compute]` stacks not marked `[truncated]`; a stack whose Python frames could
#     not be placed is marked too), and perf's, which samples only threads on a CPU (stacks
#     whose outermost frame is _start or clone3, the frames whose CFI ends the walk);
#   - the share of parprof's walks that scanned the stack for a return address;
#   - parprof's CPU over the run, as % of one core, and its peak RSS;
#   - the fixture's throughput (forward passes) with both attached.
# Must run as root (or with ptrace and perf permissions). Knobs (environment):
#   ROUNDS=3 SECS=20 THREADS=2 WAIT=2 RATE=100
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-20}
THREADS=${THREADS:-2}
WAIT=${WAIT:-2}
RATE=${RATE:-100}

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$repo/target/bench
tmp=$work/tmp/torch
mkdir -p "$tmp"
say() { printf '%s\n' "$*" >&2; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

say "building parprof (release)..."
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
PARPROF=$repo/target/release/parprof
command -v perf > /dev/null || { say "perf is needed: apt-get install linux-perf"; exit 1; }

python=$("$repo/scripts/cpython" 3.13t)
venv=$work/torch-venv
if ! "$venv/bin/python" -c 'import torch' 2> /dev/null; then
    say "installing PyTorch into $venv (several GB)..."
    rm -rf "$venv"
    # The build's own numpy (the latest numpy may have no cp313t wheel yet).
    "$python" -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install --quiet --only-binary=:all: torch
fi
say "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"

# Share of perf's stacks whose outermost frame ends the walk (perf script prints each
# sample's frames innermost first, then a blank line).
perf_complete() {
    perf script --no-inline -i "$1" -F ip,sym 2> /dev/null | awk '
        NF { last = $2; next }
        last != "" { n++; if (last ~ /^(_start|clone3|__clone3)$/) c++; last = "" }
        END { if (last != "") { n++; if (last ~ /^(_start|clone3|__clone3)$/) c++ }
              printf "%.1f\n", n ? 100 * c / n : 0 }'
}

declare -A col
for round in $(seq "$ROUNDS"); do
    out=$tmp/fixture.out
    "$venv/bin/python" "$repo/fixtures/bench/torch_infer.py" "$SECS" "$THREADS" "$WAIT" > "$out" &
    pid=$!
    until grep -q ready "$out" 2> /dev/null; do sleep 0.01; done
    "$python" "$repo/benches/rusage.py" "$tmp/rusage" sh -c \
        'exec "$0" record --pid "$1" --rate "$2" -o "$3" 2> "$4"' \
        "$PARPROF" "$pid" "$RATE" "$tmp/parprof.folded" "$tmp/parprof.err" &
    rec=$!
    perf record -q -F "$RATE" --call-graph dwarf,64512 -p "$pid" -o "$tmp/perf.data" \
        > /dev/null 2>&1 &
    perfpid=$!
    wait "$pid"
    wait "$rec" || { say "parprof failed:"; cat "$tmp/parprof.err" >&2; exit 1; }
    wait "$perfpid" || true
    read -r cpu wall rss < "$tmp/rusage"
    complete=$(sed -n 's/.*: \([0-9.]*\)% of native stacks unwound.*/\1/p' "$tmp/parprof.err")
    scanned=$(sed -n 's/.*(\([0-9.]*\)% through code without unwind info.*/\1/p' "$tmp/parprof.err")
    on_cpu=$(awk '/\[compute\] [0-9]+$/ { n += $NF; if ($0 !~ /^\[truncated\]/) c += $NF }
        END { printf "%.1f\n", n ? 100 * c / n : 0 }' "$tmp/parprof.folded")
    row=(
        "${complete:-nan}"
        "$on_cpu"
        "$(perf_complete "$tmp/perf.data")"
        "${scanned:-0}"
        "$(awk -v c="$cpu" -v w="$wall" 'BEGIN { printf "%.1f", 100 * c / w }')"
        "$((rss / 1024))"
        "$(sed -n 's/^work //p' "$out")"
    )
    say "round $round: parprof complete ${row[0]} % (on a CPU ${row[1]} %)," \
        "perf complete ${row[2]} %, scanned ${row[3]} %, parprof CPU ${row[4]} % of a core," \
        "peak RSS ${row[5]} MiB, work ${row[6]}"
    for i in "${!row[@]}"; do col[$i]+="${row[$i]}"$'\n'; done
done

m() { printf '%s' "${col[$1]}" | median; }
printf '\nPyTorch %s threads, %s s at %s Hz, medians of %s rounds\n' "$THREADS" "$SECS" "$RATE" "$ROUNDS"
printf '  native stacks complete   parprof %s %% (on a CPU %s %%)   perf %s %%\n' "$(m 0)" "$(m 1)" "$(m 2)"
printf '  walks that scanned       %s %%\n' "$(m 3)"
printf '  parprof CPU              %s %% of a core (issue 18: <= 5)\n' "$(m 4)"
printf '  parprof peak RSS         %s MiB (issue 18: <= 200)\n' "$(m 5)"
printf '  forward passes           %s\n' "$(m 6)"
