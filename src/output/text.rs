//! The short end-of-run summary printed on stderr.

use std::collections::BTreeMap;
use std::path::Path;

use crate::profile::{Profile, State};
use crate::resolve::WalkStats;
use crate::sample::StopReason;

use super::summary_json::{self, LockSummary};

/// How many contended locks the end-of-run summary lists.
const TOP_LOCKS: usize = 5;

pub fn summary(p: &Profile, reason: StopReason, walks: WalkStats, output: &Path) {
    let why = match reason {
        StopReason::Duration => "duration reached",
        StopReason::Interrupted => "interrupted",
        StopReason::TargetExited => "target exited",
    };
    let captured = captured_by(p);
    eprintln!(
        "parprof: {} samples of {} threads over {:.1} s ({why}{captured}); wrote {}",
        p.total_samples(),
        p.threads.len(),
        p.meta.duration_s,
        output.display()
    );
    if walks.all > 0 {
        let scanned = match walks.scanned {
            0 => String::new(),
            n => format!(
                " ({:.1}% through code without unwind info, by a stack scan)",
                100.0 * n as f64 / walks.all as f64
            ),
        };
        eprintln!(
            "parprof: {:.1}% of native stacks unwound to their outermost frame{scanned}",
            100.0 * walks.complete as f64 / walks.all as f64
        );
    }
    for line in findings(p) {
        eprintln!("{line}");
    }
}

/// `, running threads captured by perf` when the profile says how.
pub fn captured_by(p: &Profile) -> String {
    p.meta
        .capture
        .as_deref()
        .map(|c| format!(", running threads captured by {c}"))
        .unwrap_or_default()
}

/// What a profile says, as `record` ends with it and `report` shows it again: the hottest
/// functions (of a Python process, its Python functions first, then the native leaves),
/// where each thread's time went, and the most waited-on locks.
pub fn findings(p: &Profile) -> Vec<String> {
    let mut lines = hottest_lines(p);
    lines.extend(thread_table(p));
    lines.extend(parallelism_line(p));
    let locks = summary_json::summary(p).locks;
    lines.extend(lock_report(&locks));
    lines.extend(scaling_limits(p, &locks));
    lines
}

/// The hottest functions: of a Python process, its Python functions first (innermost
/// Python frame), then the native leaves.
pub fn hottest_lines(p: &Profile) -> Vec<String> {
    let mut lines = Vec::new();
    let total = p.total_samples().max(1) as f64;
    let lists = if p.meta.python.is_some() {
        vec![
            (
                "hottest Python functions (innermost Python frame)",
                p.hottest_python_functions(HOTTEST),
            ),
            (
                "hottest native functions (self samples)",
                p.hottest_native_functions(HOTTEST),
            ),
        ]
    } else {
        vec![(
            "hottest functions (self samples)",
            p.hottest_functions(HOTTEST),
        )]
    };
    for (title, hot) in lists.into_iter().filter(|(_, hot)| !hot.is_empty()) {
        lines.push(format!("parprof: {title}:"));
        for h in hot {
            lines.push(format!(
                "  {:5.1}%  {:6}  {}  ({})",
                100.0 * h.samples as f64 / total,
                h.samples,
                h.name,
                state_mix(&h.states, h.samples)
            ));
        }
    }
    lines
}

/// Functions in each hottest list.
const HOTTEST: usize = 5;

/// How many threads ran at once, from the kernel's context switches: the mean, how the
/// time split over thread counts (those of at least 1 %), and the runnable mean.
pub fn parallelism_line(p: &Profile) -> Option<String> {
    let x = p.meta.occupancy.as_ref()?.parallelism()?;
    let split: Vec<String> = x
        .notable_shares()
        .map(|(k, share)| format!("{k}: {:.0} %", 100.0 * share))
        .collect();
    Some(format!(
        "parprof: effective parallelism {:.2} (the target's threads on a CPU at once, on average; share of the time with k on a CPU, k: {}); {:.2} runnable, {:.2} of them waiting for a CPU",
        x.on_cpu,
        split.join(", "),
        x.runnable,
        x.runnable - x.on_cpu
    ))
}

/// A lock held this much of the time is named as a limit to scaling.
const LIMITING_HELD_SHARE: f64 = 0.3;
/// This many threads waiting for a CPU at an instant, on average, are named as a limit.
const LIMITING_CPU_WAIT: f64 = 0.5;

/// What stops the program from scaling, in plain words: the lock held most of the time
/// (its speedup ceiling), and threads queued for a CPU (more runnable threads than CPUs).
pub fn scaling_limits(p: &Profile, locks: &[LockSummary]) -> Vec<String> {
    let mut limits = Vec::new();
    let held = locks
        .iter()
        .filter_map(|l| Some((l, l.held_share?, l.speedup_ceiling?)))
        .filter(|(_, held, _)| *held >= LIMITING_HELD_SHARE)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((l, held, ceiling)) = held {
        limits.push(format!(
            "lock `{}` is held {:.0} % of the time: no number of threads can make work that takes it on every pass more than {ceiling:.1}x faster",
            l.name,
            100.0 * held
        ));
    }
    let x = p.meta.occupancy.as_ref().and_then(|o| o.parallelism());
    if let Some(x) = x.filter(|x| x.runnable - x.on_cpu >= LIMITING_CPU_WAIT) {
        limits.push(format!(
            "{:.1} threads are runnable at once for {:.1} on a CPU: {:.1} wait for a CPU at any instant (more threads than CPUs)",
            x.runnable,
            x.on_cpu,
            x.runnable - x.on_cpu
        ));
    }
    limits
        .into_iter()
        .map(|l| format!("parprof: what limits scaling: {l}"))
        .collect()
}

/// `compute 80 %, lock 20 %`: the states of some samples, largest first.
fn state_mix(states: &BTreeMap<State, u64>, samples: u64) -> String {
    let mut v: Vec<(&State, &u64)> = states.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    v.iter()
        .map(|(state, n)| {
            format!(
                "{} {:.0} %",
                state.name(),
                100.0 * **n as f64 / samples.max(1) as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The states in the per-thread table, in column order (`other` is what is left).
pub const COLUMNS: [(State, &str); 7] = [
    (State::Compute, "compute"),
    (State::Lock, "lock"),
    (State::LockSpin, "spin"),
    (State::Wait, "wait"),
    (State::Io, "io"),
    (State::Sleep, "sleep"),
    (State::CpuWait, "cpu_wait"),
];

/// Rows of the per-thread table at most.
const TOP_THREADS: usize = 32;

/// One line per thread: its samples and the share of each state.
pub fn thread_table(p: &Profile) -> Vec<String> {
    if p.threads.is_empty() {
        return Vec::new();
    }
    let mut header = format!("  {:>8}  {:<16} {:>7}", "tid", "name", "samples");
    for (_, name) in COLUMNS {
        header += &format!(" {:>8}", format!("{name} %"));
    }
    let mut lines = vec![
        "parprof: where each thread's time went:".to_string(),
        header,
    ];
    // The busiest threads first; a pool that churned through thousands of threads would
    // otherwise print thousands of lines (all of them are in --summary).
    let mut threads: Vec<_> = p.threads.values().collect();
    threads.sort_by_key(|t| (std::cmp::Reverse(t.samples), t.tid));
    for t in threads.iter().take(TOP_THREADS) {
        let states = p.thread_states(t.tid);
        let total = t.samples.max(1) as f64;
        let name: String = t.name.chars().take(16).collect();
        let mut line = format!("  {:>8}  {:<16} {:>7}", t.tid, name, t.samples);
        for (state, _) in COLUMNS {
            line += &format!(
                " {:>8.1}",
                100.0 * states.get(&state).copied().unwrap_or(0) as f64 / total
            );
        }
        lines.push(line);
    }
    if threads.len() > TOP_THREADS {
        lines.push(format!(
            "  … and {} more threads (all are in --summary)",
            threads.len() - TOP_THREADS
        ));
    }
    lines
}

/// The most waited-on locks, who held them and what the holders were doing.
pub fn lock_report(locks: &[LockSummary]) -> Vec<String> {
    if locks.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        "parprof: most contended locks (samples of threads blocked acquiring them):".to_string(),
    ];
    for l in locks.iter().take(TOP_LOCKS) {
        lines.push(format!(
            "  {:6}  {} ({} at {}), waited on by {} thread(s)",
            l.wait_samples,
            l.name,
            l.kind,
            l.address,
            l.waiters.len()
        ));
        if let (Some(held), Some(serialized)) = (l.held_share, l.serialized_share) {
            let ceiling = l
                .speedup_ceiling
                .map(|c| format!(": no number of threads makes a program whose every pass takes it more than {c:.1}x faster"))
                .unwrap_or_default();
            lines.push(format!(
                "          held {:.0} % of the time, {:.0} % with a thread waiting{ceiling}",
                100.0 * held,
                100.0 * serialized
            ));
        }
        if let Some(h) = l.holder_activity.first() {
            let others = l.holders.len().saturating_sub(1);
            let more = if others > 0 {
                format!(" (and {others} other holder(s))")
            } else {
                String::new()
            };
            // `?`: the holder was on a CPU with no kernel sample near the tick.
            let doing = match h.function.as_str() {
                "?" => "running, its stack at those ticks not captured".to_string(),
                f => format!("while it was in {f} [{}]", h.state),
            };
            lines.push(format!("          held mostly by {} {doing}{more}", h.tid));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameKind};
    use crate::profile::Meta;

    fn python(function: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            module: String::new(),
            file: Some("/app/primes.py".into()),
            line: Some(line),
            kind: FrameKind::Python,
        }
    }

    #[test]
    fn python_processes_lead_with_python_functions_split_by_state() {
        let meta = Meta {
            python: Some("3.14.7t".into()),
            ..Meta::default()
        };
        let mut p = Profile::new(meta, false);
        let worker = python("worker", 30);
        let compute = p.intern_stack(&[
            worker.clone(),
            python("is_prime", 15),
            Frame::native("_PyLong_Add", "python3.14t"),
        ]);
        let lock = p.intern_stack(&[
            worker,
            Frame::native("lock_PyThread_acquire_lock", "python3.14t"),
            Frame::native("__futex_abstimed_wait_common64", "libc.so.6"),
        ]);
        p.add(7, compute, State::Compute, 0, 3);
        p.add(7, lock, State::Lock, 0, 1);
        let lines = findings(&p);
        assert_eq!(
            lines[..4],
            [
                "parprof: hottest Python functions (innermost Python frame):",
                "   75.0%       3  is_prime (primes.py:15)  (compute 100 %)",
                "   25.0%       1  worker (primes.py:30)  (lock 100 %)",
                "parprof: hottest native functions (self samples):",
            ]
        );
        // A native program has one list, of its leaves.
        p.meta.python = None;
        assert_eq!(
            findings(&p)[..2],
            [
                "parprof: hottest functions (self samples):",
                "   75.0%       3  _PyLong_Add  (compute 100 %)",
            ]
        );
    }
}
