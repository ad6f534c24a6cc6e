//! The short end-of-run summary printed on stderr.

use std::path::Path;

use crate::profile::{Profile, State};
use crate::sample::StopReason;

use super::summary_json::{self, LockSummary};

/// How many contended locks the end-of-run summary lists.
const TOP_LOCKS: usize = 5;

pub fn summary(p: &Profile, reason: StopReason, complete_walks: u64, walks: u64, output: &Path) {
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
    if walks > 0 {
        eprintln!(
            "parprof: {:.1}% of native stacks unwound to their outermost frame",
            100.0 * complete_walks as f64 / walks as f64
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
/// functions, where each thread's time went, and the most waited-on locks.
pub fn findings(p: &Profile) -> Vec<String> {
    let mut lines = Vec::new();
    let hot = p.hottest_functions(5);
    if !hot.is_empty() {
        lines.push("parprof: hottest functions (self samples):".to_string());
        let total = p.total_samples().max(1) as f64;
        for (name, n) in hot {
            lines.push(format!(
                "  {:5.1}%  {n:6}  {name}",
                100.0 * n as f64 / total
            ));
        }
    }
    lines.extend(thread_table(p));
    lines.extend(lock_report(&summary_json::summary(p).locks));
    lines
}

/// The states in the per-thread table, in column order (`other` is what is left).
const COLUMNS: [(State, &str); 7] = [
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
        if let Some(h) = l.holder_activity.first() {
            let others = l.holders.len().saturating_sub(1);
            let more = if others > 0 {
                format!(" (and {others} other holder(s))")
            } else {
                String::new()
            };
            lines.push(format!(
                "          held mostly by {} while it was in {} [{}]{more}",
                h.tid, h.function, h.state
            ));
        }
    }
    lines
}
