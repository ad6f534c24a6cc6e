#!/usr/bin/env bash
# parprof's overhead beside perf, samply and py-spy (issues 6 and 12). One command, from the
# repository:
#
#     benches/overhead.sh
#
# Builds parprof (release) and the fixtures, installs py-spy into a venv under target/bench
# and inferno's CLI under target/bench/cargo when they are not on PATH, then prints:
#   a. target slowdown on fixed work (fixtures/bench/parked.c, 0 parked + 2 or 8 busy
#      threads; fixtures/bench/pywork.py on python3, 2 busy + PY_PARKED parked threads):
#      parprof with each capture backend (perf: kernel samples; ptrace: stops) vs
#      perf / samply / py-spy, each vs nothing. samply refuses to run unless
#      kernel.perf_event_paranoid <= 1: the script lowers it for samply's runs only and
#      restores it (also on Ctrl-C);
#   b. parprof's own CPU, attach included, with PARKED_COUNTS parked + 2 busy threads at
#      100 Hz for 10 s (and schedstat polling for comparison at 1000), with its peak RSS and
#      the threads in the profile;
#   c. post-processing of a POST_SECS 8-thread recording to SVG: parprof's end-of-recording
#      write vs `perf script | inferno-collapse-perf | inferno-flamegraph`;
#   d. parprof's peak RSS recording 100 threads, extrapolated to 10 minutes;
#   e. Python frames that belong to their native stack: fixtures/python/alternate.py (two
#      functions taking turns every 50 µs, each calling its own C function), per backend;
#   f. --subprocesses: CHILDREN forked children of a shell, each with 50 parked threads (the
#      first also 2 busy ones), beside one process with as many threads: parprof's CPU,
#      descriptors and perf ring mappings 5 s in, and the busy threads' samples;
#   g. fidelity (issue 12): fixtures/attribution/lockshare.c, 2 threads through one mutex in
#      short critical sections (0.2 ms inside, 0.3 ms outside), at each of FIDELITY_RATES:
#      its lock share by its own clock alone and under parprof with each capture backend,
#      and its throughput under each against the runs alone just before and after
#      (tests/fidelity.rs asserts the lock shares; the throughput is too noisy for a test).
# Each scenario runs ROUNDS times, interleaved; figures are medians. Must run as root (or
# with ptrace and perf permissions). Knobs (environment):
#   ROUNDS=5 SECS=4 RATES="100 1000" BUSY="2 8" POST_SECS=60 POST_ROUNDS=3 MEM_SECS="30 120"
#   PY_PARKED=200 PARKED_COUNTS="1000 10000" CHILDREN=20 FIDELITY_RATES="20 100 500"
#   ONLY="a b c d" (a subset of scenarios)
set -euo pipefail

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-4}
RATES=${RATES:-100 1000}
BUSY=${BUSY:-2 8}
POST_SECS=${POST_SECS:-60}
POST_ROUNDS=${POST_ROUNDS:-3}
MEM_SECS=${MEM_SECS:-30 120}
ONLY=${ONLY:-a b c d e f g}
CHILDREN=${CHILDREN:-20}
PY_PARKED=${PY_PARKED:-200}
PARKED_COUNTS=${PARKED_COUNTS:-1000 10000}
FIDELITY_RATES=${FIDELITY_RATES:-20 100 500}

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$repo/target/bench
tmp=$work/tmp
mkdir -p "$work" "$tmp"
say() { printf '%s\n' "$*" >&2; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }

# --- tools ---------------------------------------------------------------------------
say "building parprof (release) and fixtures..."
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
PARPROF=$repo/target/release/parprof
cc -O2 -g -pthread "$repo/fixtures/bench/parked.c" -o "$work/parked"
PARKED=$work/parked
PYTHON=$(command -v python3)
PYWORK=$repo/fixtures/bench/pywork.py
RUSAGE=("$PYTHON" "$repo/benches/rusage.py")

PERF=$(command -v perf || true)
if [[ -n $PERF ]] && ! "$PERF" record -q -o "$tmp/probe.data" -- true >/dev/null 2>&1; then
    say "skipping perf: 'perf record' does not work here"; PERF=
elif [[ -z $PERF ]]; then
    say "skipping perf: not installed (apt-get install linux-perf)"
fi

PYSPY=$(command -v py-spy || true)
if [[ -z $PYSPY ]]; then
    if [[ ! -x $work/venv/bin/py-spy ]]; then
        say "installing py-spy into $work/venv..."
        "$PYTHON" -m venv "$work/venv" && "$work/venv/bin/pip" install -q py-spy >&2 || true
    fi
    if [[ -x $work/venv/bin/py-spy ]]; then PYSPY=$work/venv/bin/py-spy; else say "skipping py-spy: could not be installed"; fi
fi

SAMPLY=$(command -v samply || echo "$work/cargo/bin/samply")
if wants a && [[ ! -x $SAMPLY ]]; then
    say "installing samply into $work/cargo..."
    cargo install --quiet --locked samply --root "$work/cargo" >&2 || true
fi
[[ -x $SAMPLY ]] || { say "skipping samply: could not be installed"; SAMPLY=; }
PARANOID=$(cat /proc/sys/kernel/perf_event_paranoid)
restore_paranoid() { echo "$PARANOID" >/proc/sys/kernel/perf_event_paranoid 2>/dev/null || true; }
trap restore_paranoid EXIT

INFERNO_BIN=
if wants c; then
    INFERNO_BIN=$(dirname "$(command -v inferno-flamegraph || echo "$work/cargo/bin/x")")
    if [[ ! -x $INFERNO_BIN/inferno-flamegraph ]]; then
        say "installing inferno's CLI into $work/cargo..."
        cargo install --quiet --locked inferno --root "$work/cargo" >&2 || true
        INFERNO_BIN=$work/cargo/bin
    fi
    [[ -x $INFERNO_BIN/inferno-flamegraph ]] || { say "skipping inferno: could not be installed"; INFERNO_BIN=; }
fi

# Start a fixture in the background; sets FX_PID once it printed "ready".
start_fixture() {
    local out=$tmp/fixture.out
    : >"$out"
    "$@" >"$out" 2>/dev/null &
    FX_PID=$!
    until grep -q '^ready' "$out" 2>/dev/null; do sleep 0.05; done
}
stop_fixture() { kill "$FX_PID" 2>/dev/null || true; wait "$FX_PID" 2>/dev/null || true; }
work_of() { awk '/^work/ {print $2}'; }

# --- a. target slowdown on fixed work ----------------------------------------------------
# One run of the native fixture under TOOL at HZ with BUSY threads: prints its work count.
native_run() {
    local tool=$1 hz=$2 busy=$3
    local cmd=("$PARKED" "$SECS" 0 "$busy")
    case $tool in
        none) "${cmd[@]}" ;;
        parprof) "$PARPROF" record --capture perf --rate "$hz" -o "$tmp/a.folded" -- "${cmd[@]}" 2>/dev/null ;;
        parprof-ptrace) "$PARPROF" record --capture ptrace --rate "$hz" -o "$tmp/a.folded" -- "${cmd[@]}" 2>/dev/null ;;
        perf) "$PERF" record -q --call-graph dwarf -F "$hz" -o "$tmp/a.data" -- "${cmd[@]}" 2>/dev/null ;;
        samply) samply_run "$hz" "${cmd[@]}" ;;
    esac | work_of
}

# samply at HZ on a command, with perf_event_paranoid lowered to 1 for this run only.
samply_run() {
    local hz=$1; shift
    echo 1 >/proc/sys/kernel/perf_event_paranoid
    "$SAMPLY" record --save-only -r "$hz" -o "$tmp/a.samply.json.gz" -- "$@" 2>/dev/null
    restore_paranoid
}

python_run() {
    local tool=$1 hz=$2
    local cmd=("$PYTHON" "$PYWORK" "$SECS" 2 "$PY_PARKED")
    case $tool in
        none) "${cmd[@]}" ;;
        parprof) "$PARPROF" record --capture perf --rate "$hz" -o "$tmp/py.folded" -- "${cmd[@]}" 2>/dev/null ;;
        parprof-ptrace) "$PARPROF" record --capture ptrace --rate "$hz" -o "$tmp/py.folded" -- "${cmd[@]}" 2>/dev/null ;;
        # py-spy 0.4 once hung for 20 minutes with the target's threads stopped: bounded.
        py-spy) timeout -s KILL $((SECS * 4 + 10)) "$PYSPY" record -r "$hz" -f raw -o "$tmp/py.txt" -- "${cmd[@]}" 2>/dev/null || true ;;
    esac | work_of
}

mean() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "") print a b; else print (a + b) / 2}'; }

# Slowdown in percent of the run's work against the same round's unprofiled work.
slowdown() { awk -v w="$1" -v base="$2" 'BEGIN {if (w == "" || base == "" || base == 0) print "nan"; else printf "%.2f\n", (1 - w / base) * 100}'; }

if wants a; then
    say "a. target slowdown: $ROUNDS rounds of ${SECS}s runs..."
    declare -A A
    native_tools=(parprof parprof-ptrace); [[ -n $PERF ]] && native_tools+=(perf)
    [[ -n $SAMPLY ]] && native_tools+=(samply)
    py_tools=(parprof parprof-ptrace); [[ -n $PYSPY ]] && py_tools+=(py-spy)
    for ((r = 1; r <= ROUNDS; r++)); do
        # Each profiled run is compared with unprofiled runs just before and after it (their
        # mean), so the load other processes put on the machine cancels out as far as it can.
        for busy in $BUSY; do
            before=$(native_run none 0 "$busy")
            for hz in $RATES; do
                for tool in "${native_tools[@]}"; do
                    w=$(native_run "$tool" "$hz" "$busy")
                    after=$(native_run none 0 "$busy")
                    A["$busy $hz $tool"]+="$(slowdown "$w" "$(mean "$before" "$after")") "
                    before=$after
                done
            done
        done
        for hz in $RATES; do
            before=$(python_run none 0)
            for tool in "${py_tools[@]}"; do
                w=$(python_run "$tool" "$hz")
                after=$(python_run none 0)
                A["py $hz $tool"]+="$(slowdown "$w" "$(mean "$before" "$after")") "
                before=$after
            done
        done
        say "  round $r done"
    done
    echo
    echo "a. target slowdown on fixed work (median ratio of unprofiled work to profiled work, $ROUNDS interleaved rounds of ${SECS}s)"
    cell() { local v; v=$(tr ' ' '\n' <<<"${A["$1"]:-}" | awk NF | median); awk -v v="$v" 'BEGIN {if (v == "nan") print "-"; else printf "%.3fx", 1 / (1 - v / 100)}'; }
    printf '   %-30s %10s %10s %10s %10s\n' "workload @ rate" parprof "parprof" perf samply
    printf '   %-30s %10s %10s %10s %10s\n' "" "(perf)" "(ptrace)" "(dwarf)" ""
    for busy in $BUSY; do
        for hz in $RATES; do
            printf '   %-30s %10s %10s %10s %10s\n' "C, $busy busy @ $hz Hz" "$(cell "$busy $hz parprof")" \
                "$(cell "$busy $hz parprof-ptrace")" "$(cell "$busy $hz perf")" "$(cell "$busy $hz samply")"
        done
    done
    printf '   %-30s %10s %10s %10s\n' "" parprof "parprof" py-spy
    printf '   %-30s %10s %10s %10s\n' "" "(perf)" "(ptrace)" ""
    for hz in $RATES; do
        printf '   %-30s %10s %10s %10s\n' "Python 2 busy + $PY_PARKED parked @ $hz Hz" "$(cell "py $hz parprof")" \
            "$(cell "py $hz parprof-ptrace")" "$(cell "py $hz py-spy")"
    done
fi

# --- b. parprof's own CPU with many parked threads ---------------------------------------------
if wants b; then
    declare -A B RSS SEEN
    for n in $PARKED_COUNTS; do
        say "b. own CPU, $n parked + 2 busy @ 100 Hz: $ROUNDS rounds of 10 s..."
        modes=switch
        ((n <= 1000)) && modes="switch poll"
        for ((r = 1; r <= ROUNDS; r++)); do
            for mode in $modes; do
                start_fixture "$PARKED" 14 "$n" 2
                PARPROF_SAMPLING=$mode "${RUSAGE[@]}" "$tmp/b.rusage" "$PARPROF" record --pid "$FX_PID" --rate 100 --duration 10 \
                    --summary "$tmp/b.json" -o "$tmp/b.folded" || true
                stop_fixture
                B[$n $mode]+="$(awk '{printf "%.2f", $1 / $2 * 100}' "$tmp/b.rusage") "
                RSS[$n $mode]+="$(awk '{printf "%.1f", $3 / 1024}' "$tmp/b.rusage") "
                SEEN[$n $mode]=$("$PYTHON" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["threads"]))' "$tmp/b.json" 2>/dev/null || echo "?")
            done
        done
    done
    echo
    echo "b. parprof's own CPU, attach included, N parked + 2 busy threads @ 100 Hz for 10 s (medians of $ROUNDS rounds)"
    printf '   %-8s %-24s %12s %14s %18s\n' "parked" "which threads ran" "% of a core" "peak RSS MiB" "threads profiled"
    for n in $PARKED_COUNTS; do
        for mode in switch poll; do
            [[ -n ${B[$n $mode]:-} ]] || continue
            label="context-switch records"; [[ $mode == poll ]] && label="schedstat polling"
            printf '   %-8s %-24s %12s %14s %18s\n' "$n" "$label" "$(tr ' ' '\n' <<<"${B[$n $mode]}" | awk NF | median)" \
                "$(tr ' ' '\n' <<<"${RSS[$n $mode]}" | awk NF | median)" "${SEEN[$n $mode]} of $((n + 3))"
        done
    done
fi

# --- c. post-processing to SVG -----------------------------------------------------------------
if wants c; then
    say "c. post-processing: $POST_ROUNDS rounds of ${POST_SECS}s recordings of 8 busy threads..."
    declare -A C
    for ((r = 1; r <= POST_ROUNDS; r++)); do
        start_fixture "$PARKED" $((POST_SECS + 15)) 0 8
        "${RUSAGE[@]}" "$tmp/c.rusage" "$PARPROF" record --pid "$FX_PID" --rate 100 --duration "$POST_SECS" -o "$tmp/c.svg" || true
        stop_fixture
        # Wall time past the recording's duration: draining the resolver and writing the SVG.
        C[parprof]+="$(awk -v d="$POST_SECS" '{printf "%.2f", $2 - d}' "$tmp/c.rusage") "
        if [[ -n $PERF && -n $INFERNO_BIN ]]; then
            start_fixture "$PARKED" $((POST_SECS + 15)) 0 8
            "$PERF" record -q --call-graph dwarf -F 100 -p "$FX_PID" -o "$tmp/c.data" -- sleep "$POST_SECS" 2>/dev/null >/dev/null
            stop_fixture
            start=$(date +%s.%N)
            "$PERF" script -i "$tmp/c.data" 2>/dev/null | "$INFERNO_BIN/inferno-collapse-perf" | "$INFERNO_BIN/inferno-flamegraph" >"$tmp/c-perf.svg"
            C[perf]+="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.2f", e - s}') "
        fi
    done
    echo
    echo "c. post-processing of a ${POST_SECS}s 8-thread recording @ 100 Hz to SVG (median s, $POST_ROUNDS rounds)"
    printf '   %-52s %8ss\n' "parprof (end of recording until the SVG is written)" "$(tr ' ' '\n' <<<"${C[parprof]}" | awk NF | median)"
    if [[ -n ${C[perf]:-} ]]; then
        printf '   %-52s %8ss\n' "perf script | inferno-collapse-perf | inferno-flamegraph" "$(tr ' ' '\n' <<<"${C[perf]}" | awk NF | median)"
    else
        echo "   perf + inferno: skipped (see above)"
    fi
fi

# --- d. memory on a long recording -------------------------------------------------------------
if wants d; then
    say "d. memory: 100 threads @ 100 Hz for $MEM_SECS s..."
    echo
    echo "d. parprof's peak RSS recording 100 threads (96 parked + 4 busy) @ 100 Hz"
    points=()
    for secs in $MEM_SECS; do
        start_fixture "$PARKED" $((secs + 10)) 96 4
        "${RUSAGE[@]}" "$tmp/d.rusage" "$PARPROF" record --pid "$FX_PID" --rate 100 --duration "$secs" -o "$tmp/d.folded" || true
        stop_fixture
        kib=$(awk '{print $3}' "$tmp/d.rusage")
        printf '   %6s s: %8.1f MiB\n' "$secs" "$(awk -v k="$kib" 'BEGIN {print k / 1024}')"
        points+=("$secs $kib")
    done
    if ((${#points[@]} >= 2)); then
        printf '%s\n' "${points[@]}" | awk 'NR == 1 {t1 = $1; k1 = $2} {t2 = $1; k2 = $2}
            END {slope = (t2 > t1) ? (k2 - k1) / (t2 - t1) : 0; if (slope < 0) slope = 0
                 printf "   600 s (extrapolated linearly from the runs above): %.1f MiB (%.1f KiB/s growth)\n", (k2 + slope * (600 - t2)) / 1024, slope}'
    fi
fi
# --- e. Python frames of the sample instant ------------------------------------------------
if wants e; then
    say "e. Python frames against their native leaves..."
    echo
    echo "e. samples of alternate.py whose Python function matches their C leaf (1 thread, 5 s @ 100 Hz)"
    for capture in perf ptrace; do
        (cd "$repo/fixtures/python" && "$PARPROF" record --capture "$capture" --rate 100 -o "$tmp/e-$capture.folded" -- "$PYTHON" alternate.py 1 5 2>/dev/null)
        printf '   %-10s %s\n' "$capture" "$("$PYTHON" "$repo/benches/frames_match.py" "$tmp/e-$capture.folded")"
    done
fi

# --- g. fidelity: the program's own clocks, alone and under parprof ---------------------------
# One lockshare run alone (TOOL none) or under parprof with capture TOOL at HZ: prints the
# fixture's lock share (% of its threads' time inside pthread_mutex_lock) and its passes/s.
lockshare_run() {
    local tool=$1 hz=$2 out=$tmp/g.out
    local cmd=("$work/lockshare" 2 200 300 "$SECS" "$out")
    case $tool in
        none) "${cmd[@]}" ;;
        *) "$PARPROF" record --capture "$tool" --rate "$hz" -o "$tmp/g.folded" -- "${cmd[@]}" 2>/dev/null ;;
    esac >/dev/null
    awk '{lock += $2; total += $3; rate += $4 * 1e9 / $3} END {printf "%.2f %.1f\n", 100 * lock / total, rate}' "$out"
}

if wants g; then
    cc -O1 -g -pthread "$repo/fixtures/attribution/lockshare.c" -o "$work/lockshare"
    say "g. fidelity: $ROUNDS rounds of ${SECS}s runs of short critical sections..."
    declare -A G
    for ((r = 1; r <= ROUNDS; r++)); do
        for hz in $FIDELITY_RATES; do
            before=$(lockshare_run none 0)
            for capture in perf ptrace; do
                under=$(lockshare_run "$capture" "$hz")
                after=$(lockshare_run none 0)
                G["$hz alone"]+="${before% *} ${after% *} "
                G["$hz $capture"]+="${under% *} "
                G["$hz $capture x"]+="$(awk -v w="${under#* }" -v a="${before#* }" -v b="${after#* }" 'BEGIN {printf "%.4f", 2 * w / (a + b)}') "
                before=$after
            done
        done
        say "  round $r done"
    done
    echo
    echo "g. fidelity: lockshare, 2 threads, 0.2 ms inside one mutex, 0.3 ms outside (medians of $ROUNDS interleaved rounds of ${SECS}s)"
    med() { tr ' ' '\n' <<<"${G["$1"]:-}" | awk NF | median; }
    spread() { tr ' ' '\n' <<<"${G["$1"]:-}" | awk NF | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.1f-%.1f %%", lo, hi}'; }
    printf '   %-8s %16s %14s %14s %14s %14s\n' rate "lock share alone" "under (perf)" "under (ptrace)" "speed (perf)" "speed (ptrace)"
    for hz in $FIDELITY_RATES; do
        printf '   %-8s %16s %14s %14s %14s %14s\n' "$hz Hz" "$(spread "$hz alone")" \
            "$(printf '%.1f %%' "$(med "$hz perf")")" "$(printf '%.1f %%' "$(med "$hz ptrace")")" \
            "$(printf '%.3fx' "$(med "$hz perf x")")" "$(printf '%.3fx' "$(med "$hz ptrace x")")"
    done
fi


# --- f. many followed processes ---------------------------------------------------------------
# One recording of 10 s: "tree" is a shell with CHILDREN children, "one" a single process
# with the same threads. Prints CPU %, descriptors, perf ring mappings, busy samples.
follow_run() {
    local shape=$1 rec=(--rate 100 --duration 10 --summary "$tmp/f.json" -o "$tmp/f.folded")
    if [[ $shape == tree ]]; then
        bash -c 'for i in $(seq "$2"); do busy=0; ((i == 1)) && busy=2; "$1" 16 50 "$busy" >/dev/null & done; wait' _ "$PARKED" "$CHILDREN" &
        FX_PID=$!
        sleep 1
        rec+=(--subprocesses)
    else
        start_fixture "$PARKED" 16 $((CHILDREN * 50)) 2
    fi
    "${RUSAGE[@]}" "$tmp/f.rusage" "$PARPROF" record --pid "$FX_PID" "${rec[@]}" 2>/dev/null &
    local rec_pid=$!
    sleep 5
    local pp fds maps
    pp=$(pgrep -P "$rec_pid" -x parprof || echo "$rec_pid")
    fds=$(ls "/proc/$pp/fd" 2>/dev/null | wc -l)
    maps=$(grep -c perf_event "/proc/$pp/maps" 2>/dev/null || echo 0)
    wait "$rec_pid" || true
    pkill -P "$FX_PID" 2>/dev/null || true
    stop_fixture
    local busy
    busy=$("$PYTHON" -c 'import json, sys; print(sum(t["samples"] for t in json.load(open(sys.argv[1]))["threads"] if t.get("name", "").startswith("busy")))' "$tmp/f.json" 2>/dev/null || echo "?")
    echo "$(awk '{printf "%.2f", $1 / $2 * 100}' "$tmp/f.rusage") $fds $maps $busy"
}

if wants f; then
    say "f. --subprocesses: $ROUNDS rounds of $CHILDREN children x 50 parked threads beside one process..."
    declare -A F
    for ((r = 1; r <= ROUNDS; r++)); do
        for shape in tree one; do F[$shape]+="$(follow_run "$shape")"$'\n'; done
    done
    echo
    echo "f. --subprocesses, 100 Hz for 10 s (medians of $ROUNDS rounds; busy samples: 2 threads, 2000 expected)"
    printf '   %-34s %12s %12s %16s %14s\n' "target" "% of a core" "descriptors" "perf mappings" "busy samples"
    for shape in tree one; do
        label="$CHILDREN processes x 50 parked"; [[ $shape == one ]] && label="1 process, $((CHILDREN * 50)) parked"
        col() { awk NF <<<"${F[$shape]}" | awk -v c="$1" '{print $c}' | median; }
        printf '   %-34s %12s %12s %16s %14s\n' "$label" "$(col 1)" "$(col 2)" "$(col 3)" "$(col 4)"
    done
fi

echo
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
