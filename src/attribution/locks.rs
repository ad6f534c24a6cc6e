//! Lock identity and holders, one tick at a time. Every thread is sampled at the same
//! tick, so when a waiter names its lock's holder, what the holder was doing at that
//! moment is in the same batch.

use std::collections::HashMap;

use super::{Attribution, Globals, State, WaitOn};
use crate::profile::locks::LockStats;
use crate::profile::{Profile, StackId};
use crate::target::Maps;

/// One thread's sample at a tick, after classification.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub tid: i32,
    pub stack: StackId,
    pub attribution: Attribution,
}

/// Keeps the profile's lock table; names locks as they are first seen (the target's
/// memory map is only valid while it runs).
#[derive(Default)]
pub struct LockBook {
    globals: Globals,
}

impl LockBook {
    pub fn new() -> Self {
        LockBook::default()
    }

    /// Add one tick's lock waits to `profile.locks`.
    pub fn record_tick(&mut self, maps: &Maps, profile: &mut Profile, tick: &[Observed]) {
        let by_tid: HashMap<i32, &Observed> = tick.iter().map(|o| (o.tid, o)).collect();
        for o in tick {
            let Some(w) = o.attribution.waiting_on.filter(|w| w.is_lock() && o.attribution.state == State::Lock) else {
                continue;
            };
            if !profile.locks.contains_key(&w.address) {
                let stats = LockStats {
                    kind: w.kind().to_string(),
                    symbol: self.globals.name(maps, w.address),
                    first_waiter: caller_of_acquire(profile, o.stack, &w),
                    ..LockStats::default()
                };
                profile.locks.insert(w.address, stats);
            }
            let activity = w.holder.filter(|&h| h != o.tid).map(|h| {
                let doing = by_tid.get(&h).map(|holder| (holder.attribution.state, leaf(profile, holder.stack)));
                let (state, function) = doing.unwrap_or((State::Other, String::from("?")));
                (h, state, function)
            });
            let Some(stats) = profile.locks.get_mut(&w.address) else { continue };
            stats.wait_samples += 1;
            *stats.waiters.entry(o.tid).or_default() += 1;
            *stats.waiter_stacks.entry(o.stack).or_default() += 1;
            if let Some(key) = activity {
                *stats.holders.entry(key.0).or_default() += 1;
                *stats.holder_activity.entry(key).or_default() += 1;
            }
        }
    }
}

/// The frame that called the acquire (just outside the frame the rule matched).
fn caller_of_acquire(p: &Profile, stack: StackId, w: &WaitOn) -> Option<String> {
    let frames = p.stack(stack);
    let i = w.frame?.checked_sub(1)?;
    frames.get(i).map(|&f| p.frame(f).label())
}

fn leaf(p: &Profile, stack: StackId) -> String {
    p.stack(stack).last().map(|&f| p.frame(f).label()).unwrap_or_default()
}

/// How a lock is shown to people: its symbol, else "lock taken in CALLER", else its address.
pub fn display_name(address: u64, symbol: Option<&str>, first_waiter: Option<&str>) -> String {
    match (symbol, first_waiter) {
        (Some(s), _) => s.to_string(),
        (None, Some(f)) => format!("{address:#x} (from {f})"),
        (None, None) => format!("{address:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::rules::rule_for;
    use crate::frame::Frame;
    use crate::profile::Meta;

    #[test]
    fn waits_holders_and_holder_activity() {
        let mut p = Profile::new(Meta::default(), false);
        let lock_frames = [Frame::native("worker", "a"), Frame::native("pthread_mutex_lock", "libc.so.6")];
        let waiter = p.intern_stack(&lock_frames);
        let busy = p.intern_stack(&[Frame::native("worker", "a"), Frame::native("crunch", "a")]);
        let wait = WaitOn { address: 0x1000, rule: rule_for(&lock_frames[1]), frame: Some(1), holder: Some(2) };
        let tick = [
            Observed { tid: 1, stack: waiter, attribution: Attribution { state: State::Lock, waiting_on: Some(wait) } },
            Observed { tid: 2, stack: busy, attribution: Attribution { state: State::Compute, waiting_on: None } },
        ];
        let mut book = LockBook::new();
        book.record_tick(&Maps::default(), &mut p, &tick);
        book.record_tick(&Maps::default(), &mut p, &tick);
        let l = &p.locks[&0x1000];
        assert_eq!((l.kind.as_str(), l.wait_samples, l.symbol.as_deref()), ("pthread_mutex", 2, None));
        assert_eq!(l.first_waiter.as_deref(), Some("worker"));
        assert_eq!(l.holders.get(&2), Some(&2));
        assert_eq!(l.holder_activity.get(&(2, State::Compute, "crunch".to_string())), Some(&2));
        assert_eq!(display_name(0x1000, None, l.first_waiter.as_deref()), "0x1000 (from worker)");
    }
}
