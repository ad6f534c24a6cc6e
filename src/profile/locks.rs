//! What the profile keeps about each contended lock: how often threads waited on it, from
//! which stacks, who held it and what the holder was doing meanwhile.

use std::collections::BTreeMap;

use super::{StackId, State};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockStats {
    /// `pthread_mutex`, `std::sync::Mutex`, `GIL`… (from the rule that matched the waiters).
    pub kind: String,
    /// The global variable the lock is, or lies in (`big`, `table+0x40`).
    pub symbol: Option<String>,
    /// For a lock that is not a global: the function the first waiter called the acquire
    /// from, a name for heap locks that stays put between runs.
    pub first_waiter: Option<String>,
    /// Where the first waiter's Python code took the lock: `file.py:LINE` of its innermost
    /// Python frame (Python locks have no symbol; this is how people find them).
    pub site: Option<String>,
    /// The subinterpreter whose own GIL this is (`Interpreter.id`), for the GIL of an
    /// isolated subinterpreter.
    pub interpreter: Option<i64>,
    /// Samples of threads blocked acquiring it.
    pub wait_samples: u64,
    /// Wait samples per waiting thread.
    pub waiters: BTreeMap<i32, u64>,
    /// Wait samples per waiter stack.
    pub waiter_stacks: BTreeMap<StackId, u64>,
    /// Wait samples per holder thread (when the holder could be read).
    pub holders: BTreeMap<i32, u64>,
    /// Wait samples per (holder, the holder's state, the holder's leaf function) at the
    /// same tick: what the holder was doing while others waited.
    pub holder_activity: BTreeMap<(i32, State, String), u64>,
    /// Ticks at which the lock's state was read once it was known (a glibc mutex's word,
    /// the GIL's holder), those at which it was held, and those at which it was held while
    /// a thread waited for it.
    pub held: HeldTicks,
}

/// See [`LockStats::held`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldTicks {
    pub observed: u64,
    pub held: u64,
    pub serialized: u64,
}

impl HeldTicks {
    /// The share of the time the lock is held, its share held while a thread waits, and
    /// the most any number of threads can speed up a program every pass of which takes
    /// it (1 / held share); `None` when its state was never read.
    pub fn shares(&self) -> Option<(f64, f64, Option<f64>)> {
        (self.observed > 0).then(|| {
            let held = self.held as f64 / self.observed as f64;
            let serialized = self.serialized as f64 / self.observed as f64;
            (held, serialized, (held > 0.0).then(|| 1.0 / held))
        })
    }
}
