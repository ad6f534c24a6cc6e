//! `--summary FILE.json`: the per-thread breakdown and the contended locks, for machines
//! (CI checks, dashboards). The schema is a contract, documented in docs/summary.md; add
//! keys, never rename or remove them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::attribution::locks::display_name;
use crate::profile::locks::LockStats;
use crate::profile::parallelism::Parallelism;
use crate::profile::{Profile, State};

/// How many waiter stacks each lock lists.
const TOP_STACKS: usize = 5;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub rate_hz: f64,
    /// How running threads were captured: `perf` (kernel samples) or `ptrace` (stops).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<String>,
    pub samples: u64,
    /// The target's threads on a CPU at an instant, on average (the mean of `parallelism`),
    /// when the kernel's context switches were recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_parallelism: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<Parallelism>,
    pub threads: Vec<ThreadSummary>,
    pub locks: Vec<LockSummary>,
}

#[derive(Debug, Serialize)]
pub struct ThreadSummary {
    pub tid: i32,
    /// Its Python name (`threading`) when it has one, else the kernel's.
    pub name: String,
    /// The kernel's name, when a Python name is shown instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    pub samples: u64,
    /// Samples per state; every state is present, zero or not.
    pub states: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct LockSummary {
    /// The futex word's address, as a hex string (JSON numbers lose 64-bit precision).
    pub address: String,
    pub kind: String,
    /// The global variable the lock is (or lies in), or null for heap locks.
    pub symbol: Option<String>,
    /// How people are shown the lock: the symbol, else where the first waiter locked it.
    pub name: String,
    /// For the GIL of an isolated subinterpreter: its `Interpreter.id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<i64>,
    pub wait_samples: u64,
    /// Threads seen holding the lock while others waited, most often first.
    pub holders: Vec<i32>,
    /// What the holders were doing meanwhile, most often first.
    pub holder_activity: Vec<HolderActivity>,
    pub waiters: Vec<ThreadCount>,
    pub top_stacks: Vec<StackCount>,
    /// The share of the time the lock was held, from its state read at every tick once it
    /// was known (glibc mutexes, `PyMutex`es, semaphores and the GIL; absent for others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_share: Option<f64>,
    /// The ticks at which its state was read: the shares are over these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_ticks: Option<u64>,
    /// The share of the time it was held while a thread waited for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serialized_share: Option<f64>,
    /// 1 / `held_share`: the most any number of threads can speed up a program whose every
    /// pass takes this lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_ceiling: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct HolderActivity {
    pub tid: i32,
    pub state: &'static str,
    pub function: String,
    pub samples: u64,
}

#[derive(Debug, Serialize)]
pub struct ThreadCount {
    pub tid: i32,
    pub samples: u64,
}

#[derive(Debug, Serialize)]
pub struct StackCount {
    /// Root first.
    pub frames: Vec<String>,
    pub samples: u64,
}

pub fn summary(p: &Profile) -> Summary {
    let threads = p
        .threads
        .values()
        .map(|t| {
            let counts = p.thread_states(t.tid);
            let states = State::ALL
                .iter()
                .map(|s| (s.name(), counts.get(s).copied().unwrap_or(0)))
                .collect();
            ThreadSummary {
                tid: t.tid,
                name: t.name.clone(),
                os_name: t.os_name.clone().filter(|n| !n.is_empty()),
                samples: t.samples,
                states,
            }
        })
        .collect();
    let mut locks: Vec<LockSummary> = p
        .locks
        .iter()
        .map(|(&addr, l)| lock_summary(p, addr, l))
        .collect();
    locks.sort_by(|a, b| {
        b.wait_samples
            .cmp(&a.wait_samples)
            .then_with(|| a.address.cmp(&b.address))
    });
    let parallelism = p.meta.occupancy.as_ref().and_then(|o| o.parallelism());
    Summary {
        duration_s: p.meta.duration_s,
        rate_hz: p.meta.rate_hz,
        capture: p.meta.capture.clone(),
        samples: p.total_samples(),
        effective_parallelism: parallelism.as_ref().map(|x| x.on_cpu),
        parallelism,
        threads,
        locks,
    }
}

/// How a lock is named everywhere: its symbol, the Python line that takes it, or the
/// function its first waiter called the acquire from.
pub fn lock_name(address: u64, l: &LockStats) -> String {
    display_name(
        address,
        &l.kind,
        l.symbol.as_deref(),
        l.site.as_deref(),
        l.first_waiter.as_deref(),
        l.interpreter,
    )
}

fn lock_summary(p: &Profile, address: u64, l: &LockStats) -> LockSummary {
    let holders = by_count(&l.holders)
        .into_iter()
        .map(|(tid, _)| tid)
        .collect();
    let holder_activity = by_count(&l.holder_activity)
        .into_iter()
        .map(|((tid, state, function), samples)| HolderActivity {
            tid,
            state: state.name(),
            function,
            samples,
        })
        .collect();
    let waiters = by_count(&l.waiters)
        .into_iter()
        .map(|(tid, samples)| ThreadCount { tid, samples })
        .collect();
    let mut top_stacks: Vec<StackCount> = by_count(&l.waiter_stacks)
        .into_iter()
        .map(|(stack, samples)| StackCount {
            frames: p.stack(stack).iter().map(|&f| p.frame(f).label()).collect(),
            samples,
        })
        .collect();
    top_stacks.truncate(TOP_STACKS);
    let shares = l.held.shares();
    LockSummary {
        address: format!("{address:#x}"),
        kind: l.kind.clone(),
        symbol: l.symbol.clone(),
        name: lock_name(address, l),
        interpreter: l.interpreter,
        wait_samples: l.wait_samples,
        holders,
        holder_activity,
        waiters,
        top_stacks,
        held_share: shares.map(|s| s.0),
        held_ticks: shares.map(|_| l.held.observed),
        serialized_share: shares.map(|s| s.1),
        speedup_ceiling: shares.and_then(|s| s.2),
    }
}

/// Entries of a count map, highest count first (ties in key order).
pub fn by_count<K: Clone + Ord>(m: &BTreeMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = m.iter().map(|(k, &n)| (k.clone(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Write the summary of `p` to the file at `path`.
pub fn write_file(p: &Profile, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    write(p, &mut std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", path.display()))
}

pub fn write(p: &Profile, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &summary(p))?;
    writeln!(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::profile::Meta;

    #[test]
    fn every_state_key_and_locks_by_wait() {
        let mut p = Profile::new(
            Meta {
                rate_hz: 100.0,
                duration_s: 2.0,
                ..Meta::default()
            },
            false,
        );
        p.thread_seen(7, "worker");
        let s = p.intern_stack(&[
            Frame::native("worker", "a"),
            Frame::native("pthread_mutex_lock", "libc.so.6"),
        ]);
        p.add(7, s, State::Lock, 0, 3);
        let mut l = LockStats {
            kind: "pthread_mutex".into(),
            symbol: Some("big".into()),
            wait_samples: 3,
            ..LockStats::default()
        };
        l.holders.insert(8, 3);
        l.waiter_stacks.insert(s, 3);
        p.locks.insert(0x4010, l);
        p.locks.insert(
            0x5000,
            LockStats {
                kind: "std::sync::Mutex".into(),
                wait_samples: 1,
                ..LockStats::default()
            },
        );
        let v = serde_json::to_value(summary(&p)).unwrap();
        assert_eq!(v["samples"], 3);
        assert_eq!(v["threads"][0]["states"].as_object().unwrap().len(), 8);
        assert_eq!(v["threads"][0]["states"]["lock"], 3);
        assert_eq!(v["threads"][0]["states"]["cpu_wait"], 0);
        assert_eq!(v["locks"][0]["address"], "0x4010");
        assert_eq!(v["locks"][0]["symbol"], "big");
        assert_eq!(v["locks"][0]["holders"], serde_json::json!([8]));
        assert_eq!(
            v["locks"][0]["top_stacks"][0]["frames"][1],
            "pthread_mutex_lock"
        );
        assert_eq!(v["locks"][1]["symbol"], serde_json::Value::Null);
        assert_eq!(v["locks"][1]["name"], "0x5000");
    }
}
