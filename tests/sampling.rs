//! The two ways of knowing which threads ran — context-switch records and schedstat
//! polling — give the same profile: parked threads keep one stack and state, busy threads
//! are captured afresh (and seen waiting for a CPU when they share one), threads started
//! after attaching appear, and no thread is left stopped or traced.

mod common;

use std::collections::BTreeSet;

use common::*;

/// The environment variable that forces polling (`parprof::sample::SAMPLING_ENV`).
const SAMPLING_ENV: &str = "PARPROF_SAMPLING";

/// A profile's threads by role (thread name) and each thread's set of (stack, state).
struct Run {
    stacks: Vec<Stack>,
    stderr: String,
}

impl Run {
    fn threads(&self, role: &str) -> Vec<(String, BTreeSet<Vec<String>>)> {
        let mut by_thread = std::collections::BTreeMap::<String, BTreeSet<Vec<String>>>::new();
        for s in thread_stacks(&self.stacks, &format!("{role} ")) {
            by_thread
                .entry(s.frames[0].clone())
                .or_default()
                .insert(s.frames[1..].to_vec());
        }
        by_thread.into_iter().collect()
    }

    fn states(&self, role: &str) -> BTreeSet<String> {
        thread_stacks(&self.stacks, &format!("{role} "))
            .iter()
            .map(|s| s.state().to_string())
            .collect()
    }

    fn samples_in(&self, role: &str, state: &str) -> u64 {
        thread_stacks(&self.stacks, &format!("{role} "))
            .iter()
            .filter(|s| s.state() == state)
            .map(|s| s.count)
            .sum()
    }
}

/// Start the fixture pinned to one CPU (so its busy threads queue for it), record it for
/// 2 s with `mode` ("poll" or the default), and check nothing is left stopped.
fn record(mode: Option<&str>) -> Run {
    let exe = build("fixtures/bench/parked.c", &[]);
    // 20 idle, 3 busy, 4 late threads (started 0.5 s after ready), 6 s in all.
    let args = ["-c", "0", exe.to_str().unwrap(), "6", "20", "3", "4"];
    let fx = Fixture::start(std::path::Path::new("taskset"), &args);
    let out = scratch_file("sampling.folded");
    let mut cmd = parprof();
    cmd.args(two_seconds_of(fx.pid(), &out));
    match mode {
        Some(m) => cmd.env(SAMPLING_ENV, m),
        None => cmd.env_remove(SAMPLING_ENV),
    };
    let res = cmd.output().expect("run parprof");
    let stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(res.status.success(), "parprof failed: {stderr}");
    let left = stopped_or_traced(fx.pid());
    assert!(left.is_empty(), "threads left stopped or traced: {left:?}");
    let stacks = parse_folded(&std::fs::read_to_string(&out).expect("folded output"));
    Run { stacks, stderr }
}

/// `record` of `pid` for 2 s into `out`, by thread.
fn two_seconds_of(pid: i32, out: &std::path::Path) -> Vec<String> {
    let args = [
        "record",
        "--pid",
        &pid.to_string(),
        "-d",
        "2",
        "--threads",
        "-o",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(out.to_str().unwrap().to_string());
    args
}

/// Switch records are expected where perf allows CPU-wide events: as root, or with
/// `perf_event_paranoid` at most 0.
fn switch_records_allowed() -> bool {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    // /proc/self belongs to the process's effective user.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    root || paranoid.is_some_and(|p| p <= 0)
}

/// Every idle and late thread has one stack and state, and they all share it.
fn parked_stack(run: &Run) -> Vec<String> {
    let idle = run.threads("idle");
    let late = run.threads("late");
    assert_eq!(idle.len(), 20, "idle threads seen: {idle:?}");
    assert_eq!(
        late.len(),
        4,
        "threads started after attaching, seen: {late:?}"
    );
    // A thread started after attaching may be caught starting up, running in `clone3`,
    // before it parks: only its parked stacks are compared.
    let late: Vec<_> = late
        .into_iter()
        .map(|(thread, set)| {
            let parked: BTreeSet<_> = set
                .into_iter()
                .filter(|stack| stack.last().is_some_and(|s| s == "[wait]"))
                .collect();
            (thread, parked)
        })
        .collect();
    let all: BTreeSet<_> = idle
        .iter()
        .chain(&late)
        .flat_map(|(_, set)| set.iter().cloned())
        .collect();
    for (thread, set) in idle.iter().chain(&late) {
        assert_eq!(
            set.len(),
            1,
            "{thread} has several stacks or states: {set:?}"
        );
    }
    assert_eq!(all.len(), 1, "parked threads disagree: {all:?}");
    all.into_iter().next().unwrap()
}

fn check_busy(run: &Run) {
    assert_eq!(run.threads("busy").len(), 3);
    let states = run.states("busy");
    assert!(
        states
            .iter()
            .all(|s| ["[compute]", "[cpu_wait]", "[other]"].contains(&s.as_str())),
        "busy threads in {states:?}"
    );
    // Three busy threads share one CPU: each runs and each waits for it.
    assert!(
        run.samples_in("busy", "[compute]") > 0,
        "no compute samples: {states:?}"
    );
    assert!(
        run.samples_in("busy", "[cpu_wait]") > 0,
        "no cpu_wait samples: {states:?}"
    );
}

#[test]
fn switch_records_and_polling_agree() {
    let switched = record(None);
    let polled = record(Some("poll"));
    if switch_records_allowed() {
        assert!(
            !switched.stderr.contains("polling"),
            "switch records were expected: {}",
            switched.stderr
        );
    }
    for run in [&switched, &polled] {
        check_busy(run);
    }
    assert_eq!(
        parked_stack(&switched),
        parked_stack(&polled),
        "the two paths see parked threads differently"
    );
}

/// What a slow, exhaustive read of `/proc` says of each thread of `pid` now: its name and
/// the syscall it is blocked in (`None` when running).
fn proc_says(pid: i32) -> std::collections::BTreeMap<i32, (String, Option<i64>)> {
    let task = format!("/proc/{pid}/task");
    std::fs::read_dir(&task)
        .expect("the fixture's task directory")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|tid| {
            let read = |f: &str| std::fs::read_to_string(format!("{task}/{tid}/{f}")).ok();
            let nr = read("syscall")?.split_whitespace().next()?.parse().ok();
            Some((tid, (read("comm")?.trim().to_string(), nr)))
        })
        .collect()
}

/// A pool of parked threads costs nothing per tick: a thread that did not run is counted
/// from its last sample, not read again. The profile must still be exact: every one of
/// 3,000 parked threads appears, with one stack and the state a slow read of `/proc`
/// gives, counted at every tick like the main thread (itself asleep throughout).
#[test]
fn thousands_of_parked_threads_each_appear_with_the_state_proc_gives() {
    let exe = build("fixtures/bench/parked.c", &[]);
    let fx = Fixture::start(&exe, &["8", "3000", "2"]);
    let before = proc_says(fx.pid());
    let (out, summary) = (
        scratch_file("parked-pool.folded"),
        scratch_file("parked-pool.json"),
    );
    let mut args = two_seconds_of(fx.pid(), &out);
    args.extend([
        "--summary".to_string(),
        summary.to_str().unwrap().to_string(),
    ]);
    run_parprof(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let after = proc_says(fx.pid());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let threads: std::collections::BTreeMap<i64, &serde_json::Value> = summary["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tid"].as_i64().unwrap(), t))
        .collect();
    let stacks = parse_folded(&std::fs::read_to_string(&out).unwrap());
    let main = threads[&(fx.pid() as i64)];
    let ticks = main["samples"].as_u64().unwrap();
    assert_eq!(main["states"]["sleep"].as_u64(), Some(ticks), "{main}");
    assert!(ticks >= 100, "{ticks} ticks in 2 s at 100 Hz");
    let parked: Vec<i32> = before
        .iter()
        .filter(|(tid, (name, nr))| {
            name == "idle" && *nr == Some(libc_futex()) && after.get(tid) == before.get(tid)
        })
        .map(|(&tid, _)| tid)
        .collect();
    assert_eq!(parked.len(), 3000, "parked threads by /proc");
    for tid in parked {
        let t = threads
            .get(&(tid as i64))
            .unwrap_or_else(|| panic!("parked thread {tid} missing from the profile"));
        assert_eq!(t["samples"].as_u64(), Some(ticks), "{t}");
        assert_eq!(t["states"]["wait"].as_u64(), Some(ticks), "{t}");
        let label = format!("idle {tid}");
        let own: Vec<&Stack> = stacks.iter().filter(|s| s.frames[0] == label).collect();
        assert_eq!(own.len(), 1, "thread {tid}: {own:?}");
        assert!(
            own[0].has_chain(&["parked", "pthread_cond_wait"])
                || own[0].has_chain(&["parked", "___pthread_cond_wait"]),
            "thread {tid}: {:?}",
            own[0].frames
        );
    }
    let busy: Vec<_> = threads.values().filter(|t| t["name"] == "busy").collect();
    assert_eq!(busy.len(), 2);
    assert!(
        busy.iter()
            .all(|t| t["states"]["compute"].as_u64() > Some(0))
    );
}

/// `SYS_futex` on x86_64, as `/proc/<tid>/syscall` prints it.
fn libc_futex() -> i64 {
    202
}
