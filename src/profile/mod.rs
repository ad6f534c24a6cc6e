//! The in-memory profile: interned frames and stacks, and sample counts per
//! (thread, stack, state). Memory grows with distinct stacks, not with samples; per-sample
//! timestamps are kept only when a timeline output asks for them.

pub mod locks;
pub mod parallelism;
pub mod saved;
mod state;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::frame::Frame;

pub use state::State;

pub type FrameId = u32;
pub type StackId = u32;

/// What was profiled, for titles and saved profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub command: String,
    pub pid: i32,
    /// Seconds since the Unix epoch when recording started.
    pub start_unix_s: u64,
    pub duration_s: f64,
    pub rate_hz: f64,
    pub host: String,
    pub parprof_version: String,
    pub python: Option<String>,
    /// How running threads were captured (`perf` or `ptrace`); `None` from a version-1 file.
    pub capture: Option<String>,
    /// How many of the target's threads ran at once, from the kernel's context switches;
    /// `None` without them (and from files before version 3).
    pub occupancy: Option<parallelism::Occupancy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub tid: i32,
    /// The name shown: the thread's Python name (`threading`) when it has one, else the
    /// kernel's.
    pub name: String,
    /// The kernel's name (`comm`), kept when a Python name is shown instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    pub samples: u64,
}

/// One sample on the timeline (only when recorded with timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedSample {
    pub time_ns: u64,
    pub tid: i32,
    pub stack: StackId,
    pub state: State,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub meta: Meta,
    pub threads: BTreeMap<i32, ThreadInfo>,
    frames: Vec<Frame>,
    frame_ids: HashMap<Frame, FrameId>,
    /// Each stack root first, as frame ids.
    stacks: Vec<Vec<FrameId>>,
    stack_ids: HashMap<Vec<FrameId>, StackId>,
    pub counts: BTreeMap<(i32, StackId, State), u64>,
    /// Contended locks by address (the futex word).
    pub locks: BTreeMap<u64, locks::LockStats>,
    /// Python names of threads that have no sample yet.
    unseen_names: HashMap<i32, String>,
    pub timeline: Option<Vec<TimedSample>>,
}

impl Profile {
    pub fn new(meta: Meta, keep_timeline: bool) -> Profile {
        Profile {
            meta,
            timeline: keep_timeline.then(Vec::new),
            ..Profile::default()
        }
    }

    pub fn intern_frame(&mut self, f: &Frame) -> FrameId {
        if let Some(&id) = self.frame_ids.get(f) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(f.clone());
        self.frame_ids.insert(f.clone(), id);
        id
    }

    pub fn intern_stack(&mut self, frames: &[Frame]) -> StackId {
        let ids: Vec<FrameId> = frames.iter().map(|f| self.intern_frame(f)).collect();
        self.intern_stack_ids(ids)
    }

    pub fn intern_stack_ids(&mut self, ids: Vec<FrameId>) -> StackId {
        if let Some(&id) = self.stack_ids.get(&ids) {
            return id;
        }
        let id = self.stacks.len() as StackId;
        self.stacks.push(ids.clone());
        self.stack_ids.insert(ids, id);
        id
    }

    /// Thread `tid`'s name as the kernel has it now.
    pub fn thread_seen(&mut self, tid: i32, name: &str) {
        let t = self.thread(tid);
        if name.is_empty() {
            return;
        }
        match t.os_name.as_mut() {
            Some(os) => *os = name.to_string(),
            None => t.name = name.to_string(),
        }
    }

    /// Thread `tid`'s name in its language's runtime (Python's `threading`): shown from
    /// now on, the kernel's kept beside it. A thread without samples yet is named when its
    /// first one comes.
    pub fn thread_named(&mut self, tid: i32, name: &str) {
        if name.is_empty() {
            return;
        }
        let Some(t) = self.threads.get_mut(&tid) else {
            self.unseen_names.insert(tid, name.to_string());
            return;
        };
        let shown = std::mem::replace(&mut t.name, name.to_string());
        t.os_name.get_or_insert(shown);
    }

    fn thread(&mut self, tid: i32) -> &mut ThreadInfo {
        let unseen = &mut self.unseen_names;
        self.threads
            .entry(tid)
            .or_insert_with(|| match unseen.remove(&tid) {
                Some(name) => ThreadInfo {
                    tid,
                    name,
                    // The kernel's name comes with the sample.
                    os_name: Some(String::new()),
                    samples: 0,
                },
                None => ThreadInfo {
                    tid,
                    ..ThreadInfo::default()
                },
            })
    }

    /// Count `n` samples of thread `tid` on stack `stack` in `state`, with one timeline
    /// entry at `time_ns`. The timeline stays in time order: a tick's batch holds the
    /// kernel's samples up to when it was drained, and its own samples describe its planned
    /// instant, before some of those (a thread off its CPU then that ran since has both).
    pub fn add(&mut self, tid: i32, stack: StackId, state: State, time_ns: u64, n: u64) {
        self.add_untimed(tid, stack, state, n);
        if let Some(tl) = self.timeline.as_mut() {
            let later = tl.iter().rev().take_while(|s| s.time_ns > time_ns).count();
            let entry = TimedSample {
                time_ns,
                tid,
                stack,
                state,
            };
            tl.insert(tl.len() - later, entry);
        }
    }

    /// Count `n` more samples like the thread's latest timeline entry (it stayed as it was):
    /// that entry lasts until the thread's next one.
    pub fn add_untimed(&mut self, tid: i32, stack: StackId, state: State, n: u64) {
        self.thread(tid).samples += n;
        *self.counts.entry((tid, stack, state)).or_default() += n;
    }

    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn stack(&self, id: StackId) -> &[FrameId] {
        &self.stacks[id as usize]
    }

    pub fn stacks(&self) -> &[Vec<FrameId>] {
        &self.stacks
    }

    pub fn total_samples(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Samples per state for one thread.
    pub fn thread_states(&self, tid: i32) -> BTreeMap<State, u64> {
        let mut out = BTreeMap::new();
        for ((t, _, st), n) in self.counts.range((tid, 0, State::Compute)..) {
            if *t != tid {
                break;
            }
            *out.entry(*st).or_default() += n;
        }
        out
    }

    /// A copy with only the samples in `states`: frames, threads and locks stay, each
    /// thread's sample count is what is left of it, and the timeline goes (an entry lasts
    /// until the thread's next one, so leaving entries out would lengthen others).
    pub fn only_states(&self, states: &[State]) -> Profile {
        let mut p = Profile {
            timeline: None,
            ..self.clone()
        };
        p.counts.retain(|&(_, _, state), _| states.contains(&state));
        for t in p.threads.values_mut() {
            t.samples = 0;
        }
        for (&(tid, _, _), &n) in &p.counts {
            if let Some(t) = p.threads.get_mut(&tid) {
                t.samples += n;
            }
        }
        p
    }

    /// Each thread's timeline as runs, in time order: an entry lasts until the thread's
    /// next one, its last one for one sampling period. `None` without a timeline.
    pub fn thread_runs(&self) -> Option<BTreeMap<i32, Vec<Run>>> {
        let period_ns = if self.meta.rate_hz > 0.0 {
            (1e9 / self.meta.rate_hz) as u64
        } else {
            10_000_000
        };
        let mut runs: BTreeMap<i32, Vec<Run>> = BTreeMap::new();
        for s in self.timeline.as_ref()? {
            let thread = runs.entry(s.tid).or_default();
            if let Some(last) = thread.last_mut() {
                last.end_ns = s.time_ns.max(last.start_ns);
            }
            thread.push(Run {
                start_ns: s.time_ns,
                end_ns: s.time_ns + period_ns,
                stack: s.stack,
                state: s.state,
            });
        }
        Some(runs)
    }

    /// Self samples per frame label (the leaf function of each stack), highest first.
    pub fn hottest_functions(&self, limit: usize) -> Vec<Hot> {
        self.hottest_by(limit, |stack| stack.last().copied())
    }

    /// Self samples of native code (stacks whose leaf is not a Python frame), highest first.
    pub fn hottest_native_functions(&self, limit: usize) -> Vec<Hot> {
        self.hottest_by(limit, |stack| {
            stack
                .last()
                .copied()
                .filter(|&f| !self.frame(f).is_python_code())
        })
    }

    /// Samples per innermost Python function (`name (file.py:line)`), highest first: where
    /// a Python program's time went, in its own terms, whatever native code ran beneath.
    pub fn hottest_python_functions(&self, limit: usize) -> Vec<Hot> {
        self.hottest_by(limit, |stack| {
            stack
                .iter()
                .rev()
                .copied()
                .find(|&f| self.frame(f).is_python_code())
        })
    }

    /// Samples per the frame `key` picks from each stack (root first), split by state.
    fn hottest_by(&self, limit: usize, key: impl Fn(&[FrameId]) -> Option<FrameId>) -> Vec<Hot> {
        let mut by_name: HashMap<String, Hot> = HashMap::new();
        for ((_, stack, state), n) in &self.counts {
            if let Some(frame) = key(self.stack(*stack)) {
                let label = self.frame(frame).label();
                let hot = by_name.entry(label.clone()).or_insert_with(|| Hot {
                    name: label,
                    ..Hot::default()
                });
                hot.samples += n;
                *hot.states.entry(*state).or_default() += n;
            }
        }
        let mut v: Vec<Hot> = by_name.into_values().collect();
        v.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.name.cmp(&b.name)));
        v.truncate(limit);
        v
    }
}

/// A stretch of one thread's timeline in one stack and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub start_ns: u64,
    pub end_ns: u64,
    pub stack: StackId,
    pub state: State,
}

/// A function's samples in one of [`Profile`]'s hottest lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hot {
    pub name: String,
    pub samples: u64,
    pub states: BTreeMap<State, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_and_counts() {
        let mut p = Profile::new(Meta::default(), true);
        let a = Frame::native("main", "x");
        let b = Frame::native("work", "x");
        let s1 = p.intern_stack(&[a.clone(), b.clone()]);
        let s2 = p.intern_stack(&[a.clone(), b.clone()]);
        let s3 = p.intern_stack(std::slice::from_ref(&a));
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
        p.add(7, s1, State::Compute, 0, 3);
        p.add(7, s3, State::Lock, 10, 1);
        p.add(8, s3, State::Lock, 10, 2);
        assert_eq!(p.total_samples(), 6);
        assert_eq!(p.thread_states(7).get(&State::Compute), Some(&3));
        assert_eq!(p.thread_states(7).get(&State::Lock), Some(&1));
        assert_eq!(p.threads[&8].samples, 2);
        let hot = p.hottest_functions(1);
        assert_eq!((hot[0].name.as_str(), hot[0].samples), ("main", 3));
        assert_eq!(hot[0].states, BTreeMap::from([(State::Lock, 3)]));
        assert_eq!(p.timeline.as_ref().unwrap().len(), 3);
    }

    #[test]
    fn timeline_entries_added_out_of_order_are_kept_in_time_order() {
        let mut p = Profile::new(Meta::default(), true);
        let s = p.intern_stack(&[Frame::native("main", "x")]);
        // A tick's batch: kernel samples drained at 30 and 50, then the tick's own at 40
        // (its planned instant), then one more at 40 for another thread.
        for (tid, t) in [(7, 30), (7, 50), (7, 40), (8, 40), (7, 60)] {
            p.add(tid, s, State::Compute, t, 1);
        }
        let tl: Vec<(i32, u64)> = p
            .timeline
            .unwrap()
            .iter()
            .map(|e| (e.tid, e.time_ns))
            .collect();
        assert_eq!(tl, [(7, 30), (7, 40), (8, 40), (7, 50), (7, 60)]);
    }
}
