//! Lock identity and holders, one tick at a time. Every thread is sampled at the same
//! tick, so when a waiter names its lock's holder, what the holder was doing at that
//! moment is in the same batch.

use std::collections::{HashMap, HashSet};

use super::rules::{LockId, RULES};
use super::{Attribution, Globals, WaitOn};
use crate::frame::{Frame, FrameKind};
use crate::process::Maps;
use crate::profile::locks::LockStats;
use crate::profile::{Profile, StackId, State};
use crate::python::{GilState, own_gil};

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
    /// For kinds that are one lock per process: the address first seen, which stands
    /// for every later wait of that kind.
    per_process: HashMap<&'static str, u64>,
}

impl LockBook {
    pub fn new() -> Self {
        LockBook::default()
    }

    /// Add one tick's lock waits to `profile.locks`. A holder not observed at this tick
    /// is where `absent` says: its state and stack then.
    pub fn record_tick(
        &mut self,
        maps: &Maps,
        profile: &mut Profile,
        tick: &[Observed],
        gils: &[GilState],
        absent: &dyn Fn(i32) -> Option<(State, StackId)>,
    ) {
        let by_tid: HashMap<i32, &Observed> = tick.iter().map(|o| (o.tid, o)).collect();
        for o in tick {
            let Some(mut w) = o
                .attribution
                .waiting_on
                .filter(|w| w.is_lock() && o.attribution.state == State::Lock)
            else {
                continue;
            };
            // One entry per kind for one-per-process locks, whatever futex each waiter
            // sleeps on; but an isolated subinterpreter's GIL, read at the tick, is a lock
            // of its own.
            let own_gil = own_gil(gils, w.address);
            if is_per_process(w.kind()) && own_gil.is_none() {
                w.address = *self.per_process.entry(w.kind()).or_insert(w.address);
            }
            let (caller, site) = {
                let frames: Vec<&Frame> = profile
                    .stack(o.stack)
                    .iter()
                    .map(|&f| profile.frame(f))
                    .collect();
                (caller_of_acquire(&frames, &w), python_site(&frames, &w))
            };
            let activity = w.holder.filter(|&h| h != o.tid).map(|h| {
                let doing = by_tid
                    .get(&h)
                    .map(|holder| (holder.attribution.state, holder.stack))
                    .or_else(|| absent(h))
                    .map(|(state, stack)| (state, leaf(profile, stack)));
                let (state, function) = doing.unwrap_or((State::Other, String::from("?")));
                (h, state, function)
            });
            let stats = profile.locks.entry(w.address).or_insert_with(|| LockStats {
                kind: w.kind().to_string(),
                symbol: self.globals.name(maps, w.address),
                interpreter: own_gil,
                ..LockStats::default()
            });
            // A first waiter seen with a cut-short stack names no caller; a later one may.
            if stats.first_waiter.is_none() {
                stats.first_waiter = caller;
            }
            if stats.site.is_none() {
                stats.site = site;
            }
            stats.wait_samples += 1;
            *stats.waiters.entry(o.tid).or_default() += 1;
            *stats.waiter_stacks.entry(o.stack).or_default() += 1;
            if let Some(key) = activity {
                *stats.holders.entry(key.0).or_default() += 1;
                *stats.holder_activity.entry(key).or_default() += 1;
            }
        }
    }

    /// Whether each known lock was held at this tick: a glibc mutex or `PyMutex` by its
    /// word as the sampler read it, the GIL by its holder; and held while a thread of this
    /// tick waited for it.
    pub fn record_held(
        &self,
        profile: &mut Profile,
        words: &[(u64, bool)],
        gils: &[GilState],
        tick: &[Observed],
    ) {
        let waited: HashSet<u64> = tick
            .iter()
            .filter(|o| o.attribution.state == State::Lock)
            .filter_map(|o| o.attribution.waiting_on)
            .filter(|w| w.is_lock())
            .map(|w| w.address)
            .collect();
        let gils = gils.iter().map(|g| (g.address, g.holder.is_some()));
        for (address, held) in words.iter().copied().chain(gils) {
            let Some(stats) = profile.locks.get_mut(&address) else {
                continue;
            };
            let h = &mut stats.held;
            h.observed += 1;
            h.held += held as u64;
            h.serialized += (held && waited.contains(&address)) as u64;
        }
    }
}

/// The frame that called the acquire (just outside the frame the rule matched), unless the
/// stack was cut short there.
pub fn caller_of_acquire(frames: &[&Frame], w: &WaitOn) -> Option<String> {
    let outside = frames.get(..w.frame?)?;
    let f = outside
        .iter()
        .rev()
        .find(|f| !is_lock_plumbing(&f.function))?;
    (f.kind != FrameKind::Truncated).then(|| f.label())
}

/// Frames of a lock's own implementation between user code and the frame the rule matched
/// (`Mutex::lock` above `lock_contended`, glibc's `pthread_mutex_lock` wrappers): the lock
/// is named after the code that called into them.
fn is_lock_plumbing(function: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "std::sync::",
        "<std::sys::sync::",
        "std::sys::sync::",
        "lock_api::",
        "parking_lot::",
        "<parking_lot::",
        "pthread_",
        "__pthread_",
    ];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// `file.py:LINE` of the innermost Python frame outside the acquire: where Python code
/// took the lock.
pub fn python_site(frames: &[&Frame], w: &WaitOn) -> Option<String> {
    let outside = frames.get(..w.frame?)?;
    let f = outside.iter().rev().find(|f| f.kind == FrameKind::Python)?;
    let file = f.file.as_deref()?;
    Some(format!(
        "{}:{}",
        file.rsplit('/').next().unwrap_or(file),
        f.line?
    ))
}

/// Kinds that are one lock per process (or interpreter): the GIL, stop-the-world pauses.
/// They are named by their kind.
pub fn is_per_process(kind: &str) -> bool {
    RULES
        .iter()
        .any(|r| r.kind == kind && matches!(r.lock, LockId::Gil | LockId::PerProcess))
}

fn leaf(p: &Profile, stack: StackId) -> String {
    p.stack(stack)
        .last()
        .map(|&f| p.frame(f).label())
        .unwrap_or_default()
}

/// How a lock is shown to people: the kind for one-per-process locks (`GIL`, or `GIL of
/// interpreter N` for an isolated subinterpreter's own), else its symbol, else "KIND at
/// file.py:LINE" for locks Python code took, else "ADDRESS (from CALLER)", else its
/// address.
pub fn display_name(
    address: u64,
    kind: &str,
    symbol: Option<&str>,
    site: Option<&str>,
    first_waiter: Option<&str>,
    interpreter: Option<i64>,
) -> String {
    match (symbol, site, first_waiter) {
        _ if is_per_process(kind) => match interpreter {
            Some(id) => format!("{kind} of interpreter {id}"),
            None => kind.to_string(),
        },
        (Some(s), _, _) => s.to_string(),
        (None, Some(site), _) => format!("{kind} at {site}"),
        (None, None, Some(f)) => format!("{kind} taken in {f}"),
        (None, None, None) => format!("{address:#x}"),
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
        let lock_frames = [
            Frame::native("worker", "a"),
            Frame::native("pthread_mutex_lock", "libc.so.6"),
        ];
        let waiter = p.intern_stack(&lock_frames);
        let busy = p.intern_stack(&[Frame::native("worker", "a"), Frame::native("crunch", "a")]);
        let wait = WaitOn {
            address: 0x1000,
            rule: rule_for(&lock_frames[1]),
            frame: Some(1),
            holder: Some(2),
        };
        let tick = [
            Observed {
                tid: 1,
                stack: waiter,
                attribution: Attribution {
                    state: State::Lock,
                    waiting_on: Some(wait),
                },
            },
            Observed {
                tid: 2,
                stack: busy,
                attribution: Attribution {
                    state: State::Compute,
                    waiting_on: None,
                },
            },
        ];
        let mut book = LockBook::new();
        book.record_tick(&Maps::default(), &mut p, &tick, &[], &|_| None);
        // The holder has no sample at the next tick: it is where it last was.
        let absent = |t: i32| (t == 2).then_some((State::Compute, busy));
        book.record_tick(&Maps::default(), &mut p, &tick[..1], &[], &absent);
        let l = &p.locks[&0x1000];
        assert_eq!(
            (l.kind.as_str(), l.wait_samples, l.symbol.as_deref()),
            ("pthread_mutex", 2, None)
        );
        assert_eq!(l.first_waiter.as_deref(), Some("worker"));
        assert_eq!(l.holders.get(&2), Some(&2));
        assert_eq!(
            l.holder_activity
                .get(&(2, State::Compute, "crunch".to_string())),
            Some(&2)
        );
        assert_eq!(
            display_name(
                0x1000,
                &l.kind,
                None,
                l.site.as_deref(),
                l.first_waiter.as_deref(),
                None
            ),
            "pthread_mutex taken in worker"
        );
    }

    fn python_frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            module: String::new(),
            file: Some(file.into()),
            line: Some(line),
            kind: FrameKind::Python,
        }
    }

    #[test]
    fn python_locks_are_named_by_the_acquiring_line_and_process_wide_ones_by_kind() {
        let stack = [
            python_frame("worker", "/app/app.py", 30),
            Frame::native("method_vectorcall_VARARGS_KEYWORDS", "python3.13t"),
            Frame::native("lock_PyThread_acquire_lock", "python3.13t"),
        ];
        let refs: Vec<&Frame> = stack.iter().collect();
        let w = WaitOn {
            address: 0x10,
            rule: rule_for(&stack[2]),
            frame: Some(2),
            holder: None,
        };
        let site = python_site(&refs, &w);
        assert_eq!(site.as_deref(), Some("app.py:30"));
        let caller = caller_of_acquire(&refs, &w);
        assert_eq!(
            display_name(
                0x10,
                w.kind(),
                None,
                site.as_deref(),
                caller.as_deref(),
                None
            ),
            "threading.Lock at app.py:30"
        );
        assert_eq!(
            display_name(0x10, "GIL", Some("_PyRuntime+0x168"), None, None, None),
            "GIL"
        );
        assert_eq!(
            display_name(0x10, "stop-the-world", None, Some("app.py:3"), None, None),
            "stop-the-world"
        );
    }

    #[test]
    fn stop_the_world_waits_are_one_lock() {
        let mut p = Profile::new(Meta::default(), false);
        let frames = [
            Frame::native("_PyThreadState_Attach", "python3.13t"),
            Frame::native("tstate_wait_attach", "python3.13t"),
        ];
        let stack = p.intern_stack(&frames);
        let paused = |tid: i32, address: u64| Observed {
            tid,
            stack,
            attribution: Attribution {
                state: State::Lock,
                waiting_on: Some(WaitOn {
                    address,
                    rule: rule_for(&frames[1]),
                    frame: Some(1),
                    holder: None,
                }),
            },
        };
        // Each paused thread parks on its own state word.
        LockBook::new().record_tick(
            &Maps::default(),
            &mut p,
            &[paused(1, 0x100), paused(2, 0x200)],
            &[],
            &|_| None,
        );
        assert_eq!(p.locks.len(), 1);
        assert_eq!(p.locks.values().next().unwrap().waiters.len(), 2);
    }
}
