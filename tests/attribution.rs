//! Thread states and lock attribution on real processes: each fixture does one known thing
//! (or measures its own lock time), parprof records it, and the summary must agree.

mod attribution_fixtures;
#[path = "common/steal.rs"]
mod steal;

use attribution_fixtures::*;

/// Each worker's share of its time spent inside `pthread_mutex_lock`, by its own clock and
/// by parprof (lock + lock_spin samples over samples whose state is known), within 5
/// points per thread. 6 s at 200 Hz gives each thread about 1200 samples: a sampling error
/// of about 1.4 points at these shares. And the scaling figures against the fixture's
/// own: the mutex's held share (its passes times the time each holds it, over wall time)
/// within 5 points, the speedup ceiling within 10 % of 1 / that share, and the effective
/// parallelism within 0.15 of the workers' CPU time over wall time (above it, also what
/// the hypervisor's steal explains: see `common/steal.rs`).
#[test]
fn lock_share_held_share_and_parallelism_match_the_fixtures_own_clocks() {
    let _serial = serial();
    let exe = build_c("lockshare");
    // (threads, inside µs, outside µs): heavy and lighter contention, and three threads on
    // this machine's two CPUs; phases long against the time it takes to stop a thread. The
    // outside phase is jittered by ±50 %: two workers at a fixed 1000/1500 cycle can fall
    // into turns that never meet (0.1 % of their time in the lock, by their own clocks, in
    // one CI run), and a lock that is never contended has no held share to measure.
    for (threads, inside, outside) in [(2, 2000, 500), (2, 1000, 1500), (3, 1000, 1500)] {
        let tag = format!("lockshare-{threads}-{inside}-{outside}");
        let measured = work_dir().join(format!("{tag}.out"));
        let svg = work_dir().join(format!("{tag}.svg"));
        let summary_path = work_dir().join(format!("{tag}.json"));
        let stolen = steal::Steal::now();
        run_ok(
            parprof()
                .args(["record", "--rate", "200", "-o"])
                .arg(&svg)
                .arg("--summary")
                .arg(&summary_path)
                .arg("--")
                .arg(&exe)
                .args([threads, inside, outside, 6].map(|n| n.to_string()))
                .arg(&measured)
                .arg("50"),
        );
        let stolen = stolen.share_since();
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
        let text = std::fs::read_to_string(&measured).unwrap();
        let (mut own_lock, mut own_total, mut our_lock, mut our_total) = (0i64, 0i64, 0u64, 0u64);
        let (mut held_ns, mut wall_ns, mut cpu_ns) = (0i64, 0i64, 0i64);
        for line in text.lines() {
            let v: Vec<i64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let (tid, lock_ns, total_ns) = (v[0], v[1], v[2]);
            // Each pass holds the mutex for INSIDE_US of wall time (the fixture spins on
            // the clock), longer when its thread loses its CPU around the spin: the
            // fixture clocks it, one thread at a time.
            held_ns += v[5];
            wall_ns = wall_ns.max(total_ns);
            cpu_ns += v[4];
            let t = thread_by_tid(&summary, tid);
            eprintln!(
                "lockshare {threads}x {inside}/{outside} µs: tid {tid}: fixture {:.1}% parprof {:.1}% ({} samples)",
                100.0 * lock_ns as f64 / total_ns as f64,
                100.0 * lock_share(t),
                t["samples"]
            );
            let (own_thread, our_thread) = (lock_ns as f64 / total_ns as f64, lock_share(t));
            assert!(
                (own_thread - our_thread).abs() <= 0.05,
                "tid {tid}: fixture says {:.1}% in pthread_mutex_lock, parprof {:.1}%",
                own_thread * 100.0,
                our_thread * 100.0
            );
            own_lock += lock_ns;
            own_total += total_ns;
            our_lock += state(t, "lock") + state(t, "lock_spin");
            our_total += known(t);
        }
        let own = own_lock as f64 / own_total as f64;
        let ours = our_lock as f64 / our_total as f64;
        eprintln!(
            "lockshare {threads}x {inside}/{outside} µs: all workers: fixture {:.1}% parprof {:.1}%",
            own * 100.0,
            ours * 100.0
        );
        assert!(
            (own - ours).abs() <= 0.05,
            "fixture says {:.1}% in pthread_mutex_lock, parprof {:.1}%",
            own * 100.0,
            ours * 100.0
        );
        // The lock is the global `big`, waited on by both workers, held by them in turn.
        let lock = &summary["locks"][0];
        assert_eq!(lock["symbol"], "big", "{lock}");
        assert_eq!(lock["kind"], "pthread_mutex");
        // How much of the time the mutex is held, read at every tick, against the passes
        // the workers made.
        let own_held = held_ns as f64 / wall_ns as f64;
        let held = lock["held_share"]
            .as_f64()
            .expect("held_share of a glibc mutex");
        let serialized = lock["serialized_share"].as_f64().expect("serialized_share");
        let ceiling = lock["speedup_ceiling"].as_f64().expect("speedup_ceiling");
        eprintln!(
            "lockshare {threads}x {inside}/{outside} µs: held {:.1}% by the fixture's clock, parprof {:.1}% ({:.1}% with a waiter)",
            100.0 * own_held,
            100.0 * held,
            100.0 * serialized
        );
        assert!(
            (held - own_held).abs() <= 0.05 && serialized <= held,
            "the passes held the mutex {:.1}% of the time, parprof says {:.1}% ({:.1}% with a waiter)",
            100.0 * own_held,
            100.0 * held,
            100.0 * serialized
        );
        assert!(
            (ceiling * own_held - 1.0).abs() <= 0.1,
            "speedup ceiling {ceiling:.2}, 1 / held share {:.2}",
            1.0 / own_held
        );
        let own_parallelism = cpu_ns as f64 / wall_ns as f64;
        let parallelism = summary["effective_parallelism"]
            .as_f64()
            .expect("effective_parallelism");
        eprintln!(
            "lockshare {threads}x {inside}/{outside} µs: CPU time / wall {own_parallelism:.2}, effective parallelism {parallelism:.2} ({:.0} % of busy time stolen by the hypervisor)",
            100.0 * stolen
        );
        assert!(
            own_parallelism - parallelism <= 0.15
                && parallelism - own_parallelism <= steal::allowed_above(parallelism, stolen, 0.15),
            "the workers' CPU time over wall time is {own_parallelism:.2}, parprof says {parallelism:.2}"
        );
        assert!(!lock["holders"].as_array().unwrap().is_empty(), "{lock}");
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(
            svg.contains("parprof-legend")
                && svg.contains("<title>[lock]")
                && svg.contains("rgb(220,30,30)")
        );
    }
}

#[test]
fn idle_waits_io_and_sleep_are_told_apart() {
    let _serial = serial();
    let exe = build_c("states");
    let summary = record_summary("states", &[], &[exe.to_str().unwrap(), "3"]);
    for (name, expected) in [
        ("condwait", "wait"),
        ("joiner", "wait"),
        ("piperead", "io"),
        ("sleeper", "sleep"),
    ] {
        let threads = threads_named(&summary, name);
        assert_eq!(threads.len(), 1, "one thread named {name} in {summary}");
        let t = threads[0];
        let n = t["samples"].as_u64().unwrap();
        eprintln!("{name}: {t}");
        assert!(
            state(t, expected) * 10 >= n * 9,
            "{name} should be {expected} in 90% of samples: {t}"
        );
        assert_eq!(state(t, "lock"), 0, "{name} never waits for a lock: {t}");
    }
    assert!(
        summary["locks"].as_array().unwrap().is_empty(),
        "no lock is contended: {}",
        summary["locks"]
    );
    let folded = std::fs::read_to_string(work_dir().join("states.folded")).unwrap();
    assert!(
        folded
            .lines()
            .any(|l| l.contains("pthread_cond_wait") && l.contains(";[wait] ")),
        "{folded}"
    );
}

/// Two workers that mostly compute, pinned to one CPU with taskset: at most one runs at a
/// time and the other waits for the CPU, and the end-of-run text says that is what limits
/// scaling.
#[test]
fn workers_pinned_to_one_cpu_are_reported_oversubscribed() {
    let _serial = serial();
    let exe = build_c("lockshare");
    let dir = work_dir();
    let summary_path = dir.join("pinned.json");
    let out = run_ok(
        parprof()
            .args(["record", "--rate", "200", "-o"])
            .arg(dir.join("pinned.folded"))
            .arg("--summary")
            .arg(&summary_path)
            .args(["--", "taskset", "-c", "0"])
            .arg(&exe)
            .args(["2", "200", "2000", "3"])
            .arg(dir.join("pinned.out")),
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let x = &summary["parallelism"];
    let (on_cpu, runnable) = (
        x["on_cpu"].as_f64().unwrap(),
        x["runnable"].as_f64().unwrap(),
    );
    eprintln!("pinned: {on_cpu:.2} on a CPU, {runnable:.2} runnable");
    assert!(
        on_cpu <= 1.05,
        "two workers on one CPU: {on_cpu:.2} on a CPU"
    );
    // Under the ptrace fallback a stopped thread is off the run queue while stopped, and
    // on one CPU that reads as fewer runnable threads (1.35 of 2 measured): the
    // oversubscription is for the kernel capture to show.
    if std::env::var("PARPROF_CAPTURE").is_ok_and(|c| c == "ptrace") {
        return;
    }
    assert!(
        runnable - on_cpu >= 0.5,
        "two busy workers on one CPU: {on_cpu:.2} on a CPU, {runnable:.2} runnable"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.lines()
            .any(|l| l.starts_with("parprof: what limits scaling:") && l.contains("wait for a CPU")),
        "{text}"
    );
}

#[test]
fn more_busy_threads_than_cores_wait_for_a_cpu() {
    let _serial = serial();
    let exe = build_c("states");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy = (2 * cores).to_string();
    let summary = record_summary("busy", &[], &[exe.to_str().unwrap(), "3", &busy]);
    let spinners = threads_named(&summary, "spinner");
    assert_eq!(spinners.len(), 2 * cores);
    let (cpu_wait, total): (u64, u64) = spinners.iter().fold((0, 0), |(w, n), t| {
        (w + state(t, "cpu_wait"), n + t["samples"].as_u64().unwrap())
    });
    eprintln!(
        "{} spinners on {cores} cores: cpu_wait {cpu_wait} of {total} samples",
        2 * cores
    );
    // Half of the spinners' time is queued in theory; a tenth must show.
    assert!(cpu_wait * 10 >= total, "cpu_wait {cpu_wait} of {total}");
}

#[test]
fn rust_std_mutex_contention_is_lock() {
    let _serial = serial();
    let exe = build_rust("rust_mutex");
    let summary = record_summary("rust_mutex", &[], &[exe.to_str().unwrap(), "3", "3"]);
    let workers = threads_named(&summary, "rust-locker");
    assert_eq!(workers.len(), 3);
    for t in &workers {
        eprintln!("rust-locker: {t}");
        // Three threads share one lock held 300 of every 350 µs: each waits for it most of
        // the time it is not holding it. On two cores part of that shows as cpu_wait (a
        // holder preempted, a woken waiter queued), so ask for a clear share, not a majority.
        assert!(lock_share(t) >= 0.15, "{t}");
        // And no wait on the mutex is taken for an idle wait.
        assert!(state(t, "wait") * 10 <= state(t, "lock"), "{t}");
    }
    let lock = &summary["locks"][0];
    assert_eq!(lock["kind"], "std::sync::Mutex", "{lock}");
    assert!(
        lock["symbol"]
            .as_str()
            .is_some_and(|s| s.ends_with("COUNTER")),
        "{lock}"
    );
    let folded = std::fs::read_to_string(work_dir().join("rust_mutex.folded")).unwrap();
    assert!(
        folded
            .lines()
            .any(|l| l.contains("lock_contended") && l.contains(";[lock] "))
    );
    // Its held share, read from the mutex's own word once a waiter names it, against the
    // time the fixture's threads held it: two threads, 500 µs in for 1500 µs out, about
    // half the time held, for 6 s.
    let measured = work_dir().join("rust_mutex_held.out");
    let summary = record_summary(
        "rust_mutex_held",
        &[],
        &[
            exe.to_str().unwrap(),
            "2",
            "6",
            "500",
            "1500",
            measured.to_str().unwrap(),
        ],
    );
    let (mut held_ns, mut wall_ns) = (0u64, 0u64);
    for line in std::fs::read_to_string(&measured).unwrap().lines() {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        held_ns += v[0];
        wall_ns = wall_ns.max(v[1]);
    }
    let own_held = held_ns as f64 / wall_ns as f64;
    let lock = &summary["locks"][0];
    let held = lock["held_share"]
        .as_f64()
        .expect("held_share of a std Mutex");
    eprintln!(
        "std::sync::Mutex: held {:.1}% by the fixture's clock, parprof {:.1}% over {} ticks",
        100.0 * own_held,
        100.0 * held,
        lock["held_ticks"]
    );
    // Two sigmas of the ticks the word was read at (1,100 in 6 s: 3 points), plus what the
    // backend bends: 2 points under kernel sampling. Under the ptrace fallback the holder's
    // stops lengthen its sections, which the fixture counts and the tick's read, taken
    // before the stops, does not (43.1 % against 48.1 % in one CI run): 10 points, as for
    // CPython's locks (tests/python_locks.rs).
    let ticks = lock["held_ticks"].as_f64().unwrap_or(0.0).max(1.0);
    let ptrace = std::env::var("PARPROF_CAPTURE").is_ok_and(|c| c == "ptrace");
    let allowed =
        if ptrace { 0.10 } else { 0.02 } + 2.0 * (own_held * (1.0 - own_held) / ticks).sqrt();
    assert!(
        (held - own_held).abs() <= allowed,
        "the threads held the mutex {:.1}% of the time, parprof says {:.1}% (allowed {:.1} points): {lock}",
        100.0 * own_held,
        100.0 * held,
        100.0 * allowed
    );
}
