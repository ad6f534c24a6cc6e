//! Sample → state, from the thread's OS state, its syscall and the rule the stack matches.

use super::rules::{self, LockId, Role, Rule};
use crate::frame::Frame;
use crate::process::{Memory, Syscall};
use crate::profile::State;
use crate::python::GilState;
use crate::sample::lock_words::WordKind;

/// What a sample was doing, and what it waited on if it was blocked on a futex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution {
    pub state: State,
    pub waiting_on: Option<WaitOn>,
}

/// A futex a thread was blocked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOn {
    /// The lock's identity: the futex word (syscall argument 0), or what the rule's
    /// [`LockId`] says stands for the lock (the GIL, the address a parking lot parks on).
    pub address: u64,
    /// The rule that explains the wait; `None` for a futex wait no rule knows.
    pub rule: Option<&'static Rule>,
    /// Index (root first) of the frame the rule matched.
    pub frame: Option<usize>,
    /// The thread that holds the lock, when it can be read (glibc mutex `__owner`).
    pub holder: Option<i32>,
}

impl WaitOn {
    pub fn kind(&self) -> &'static str {
        self.rule.map_or("futex", |r| r.kind)
    }

    pub fn is_lock(&self) -> bool {
        self.rule.is_some_and(|r| r.role == Role::Acquire)
    }

    /// Take what was read at this tick about the lock: the int beside the futex word (a
    /// glibc mutex's `__owner`) and the CPython GIL (its address and holder).
    pub fn set_holder(&mut self, futex_owner: Option<i32>, gil: Option<GilState>) {
        self.holder = match self.rule.map(|r| r.lock) {
            Some(LockId::MutexOwner) => futex_owner,
            Some(LockId::Gil) => gil.and_then(|g| {
                self.address = g.address;
                g.holder
            }),
            _ => None,
        };
    }

    /// Name the lock where its futex is not the lock itself, and say how its word tells
    /// whether it is held, where that is known (its held share can then be read).
    ///
    /// A wait inside CPython's parking lot sleeps on the waiter's own semaphore: the lock
    /// is the address parked on, read from the `wait_entry` on the waiter's stack (`mem`
    /// should read the stack as captured at the tick). It is a `PyMutex` when parked from
    /// `_PyMutex_LockTimed`; others park (`PyEvent`, `_PyRWMutex`) with other words. A lock
    /// acquired through `sem_*wait` is a glibc semaphore, the futex its count; Rust std's
    /// `Mutex` waits on its own word (`FUTEX_LOCKS`). Only a lock
    /// wait's word is a lock's: `Condition.wait` parks on a lock of its own that it took
    /// itself, which is held the whole time by design, and an idle pool has one per worker.
    pub fn identify(&mut self, frames: &[Frame], mem: &dyn Memory) -> Option<WordKind> {
        let from = self.frame.unwrap_or(0);
        let parked = frames.iter().enumerate().skip(from).find_map(|(i, f)| {
            rules::rule_for(f)
                .is_some_and(|r| r.lock == LockId::Parked)
                .then_some(i)
        });
        let Some(parked) = parked else {
            let inside = frames.get(from..).unwrap_or_default();
            let semaphore = || {
                inside
                    .iter()
                    .any(|f| SEMAPHORE_WAITS.contains(&f.function.as_str()))
            };
            return match self.rule {
                _ if !self.is_lock() => None,
                Some(r) if FUTEX_LOCKS.contains(&r.kind) => Some(WordKind::Futex),
                _ => semaphore().then_some(WordKind::Semaphore),
            };
        };
        // `wait_entry { park_arg, addr, sema }`: `addr` is the word before the semaphore.
        let addr = self
            .address
            .checked_sub(8)
            .and_then(|a| mem.read_u64(a).ok())
            .filter(|&a| a != 0 && a < USER_SPACE_END)?;
        self.address = addr;
        // Who parked: the nearest lock function outside the parking lot.
        let parker = frames[..parked]
            .iter()
            .rev()
            .find(|f| rules::rule_for(f).is_some())?;
        (self.is_lock() && PY_MUTEX_LOCKS.contains(&parker.function.as_str()))
            .then_some(WordKind::PyMutex)
    }
}

/// The functions through which a `PyMutex` parks its waiter (threading.Lock and RLock,
/// critical sections and the runtime's own mutexes all lock one through them).
const PY_MUTEX_LOCKS: [&str; 2] = ["_PyMutex_LockTimed", "_PyMutex_LockSlow"];

/// Locks whose waiters sleep on the lock's own futex word, 0 when unlocked, and whose holder
/// it does not name (glibc mutexes name theirs and the sampler finds them by it).
const FUTEX_LOCKS: [&str; 1] = ["std::sync::Mutex"];

/// glibc's semaphore waits (CPython's `threading.Lock` before 3.14 on default builds).
const SEMAPHORE_WAITS: [&str; 4] = [
    "sem_clockwait",
    "sem_timedwait",
    "sem_wait",
    "__new_sem_wait_slow64",
];

/// Addresses at or above this are not user-space pointers on x86_64.
const USER_SPACE_END: u64 = 0x0000_8000_0000_0000;

/// The facts about one thread at one tick that classification needs.
#[derive(Debug, Clone, Copy)]
pub struct ThreadFacts {
    /// The `/proc/<tid>/stat` state letter.
    pub os_state: char,
    pub syscall: Syscall,
    /// Runnable at the tick, but in a syscall by the time its registers were read.
    pub blocked_after_tick: bool,
    /// Nanoseconds on a CPU and queued for one since the previous sample.
    pub run_ns: u64,
    pub cpu_wait_ns: u64,
    /// `__owner` read next to the futex word at the tick (meaningful for glibc mutexes).
    pub futex_owner: Option<i32>,
    /// The CPython GIL at the tick.
    pub gil: Option<GilState>,
}

/// Classify one sample from its facts and its stack (root first).
pub fn classify(t: &ThreadFacts, frames: &[Frame]) -> Attribution {
    let decided = rules::decide(frames);
    let role = decided.map(|(_, r)| r.role);
    let state = match (t.os_state, t.syscall) {
        // Its stack is from after it blocked (say, in the lock it reached after the tick):
        // what it ran at the tick is unknown, and guessing from that stack over-counts locks.
        // A yield does not block: a lock that spins by yielding is still spinning.
        ('R', _) if t.blocked_after_tick && !is_yielding(frames) => State::Other,
        // Runnable but still inside the futex wait of an acquire: woken (by the unlocker,
        // say) and not yet back on a CPU. It waits for the lock it slept on, named by the
        // futex word, like a thread still blocked there.
        ('R', Syscall::Blocked { nr, args, .. })
            if is_futex_wait(nr) && role == Some(Role::Acquire) && !is_yielding(frames) =>
        {
            return futex_wait(t, decided, args[0]);
        }
        // Runnable inside an acquire in user code: spinning (on a CPU or preempted from
        // it). The time is lost to the lock, but no futex names which.
        ('R', _) if role == Some(Role::Acquire) => State::LockSpin,
        ('R', _) if t.cpu_wait_ns > t.run_ns => State::CpuWait,
        ('R', _) => State::Compute,
        // Its syscall was read in a futex wait and its stack yields: it woke between the
        // two reads and spins again. The futex it slept on (a parking-lot semaphore on its
        // own stack) no longer names the lock.
        (_, Syscall::Blocked { nr, .. })
            if is_futex_wait(nr) && role == Some(Role::Acquire) && is_yielding(frames) =>
        {
            State::LockSpin
        }
        (_, Syscall::Blocked { nr, args, .. }) if is_futex_wait(nr) => {
            return futex_wait(t, decided, args[0]);
        }
        // Locks that back off by sleeping or yielding are still lock waits.
        (_, Syscall::Blocked { nr, .. }) if role == Some(Role::Acquire) && is_backoff(nr) => {
            State::Lock
        }
        (_, Syscall::Blocked { nr, .. }) => syscall_state(nr),
        _ => State::Other,
    };
    Attribution {
        state,
        waiting_on: None,
    }
}

/// A wait on the futex word at `word`: a lock wait when the stack's rule is an acquire (or
/// the word is the GIL's), an idle wait otherwise, with the lock and its holder named.
fn futex_wait(t: &ThreadFacts, decided: Option<(usize, &'static Rule)>, word: u64) -> Attribution {
    let (rule, frame) = match decided {
        _ if t.gil.is_some_and(|g| g.contains(word))
            && decided.is_none_or(|(_, r)| r.lock != LockId::Gil) =>
        {
            (Some(&rules::GIL), None)
        }
        Some((i, r)) => (Some(r), Some(i)),
        None => (None, None),
    };
    let mut waiting_on = WaitOn {
        address: word,
        rule,
        frame,
        holder: None,
    };
    waiting_on.set_holder(t.futex_owner, t.gil);
    let state = if waiting_on.is_lock() {
        State::Lock
    } else {
        State::Wait
    };
    Attribution {
        state,
        waiting_on: Some(waiting_on),
    }
}

/// The leaf frame is `sched_yield` (CPython's PyMutex spins with `_Py_yield`).
fn is_yielding(frames: &[Frame]) -> bool {
    frames
        .last()
        .is_some_and(|f| rules::normalise(&f.function) == "sched_yield")
}

fn is_futex_wait(nr: i64) -> bool {
    nr == libc::SYS_futex || nr == libc::SYS_futex_waitv
}

fn is_backoff(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep | libc::SYS_sched_yield
    )
}

/// The state a blocking syscall implies on its own.
fn syscall_state(nr: i64) -> State {
    match nr {
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => State::Sleep,
        libc::SYS_wait4
        | libc::SYS_waitid
        | libc::SYS_pause
        | libc::SYS_rt_sigsuspend
        | libc::SYS_rt_sigtimedwait => State::Wait,
        libc::SYS_read
        | libc::SYS_write
        | libc::SYS_readv
        | libc::SYS_writev
        | libc::SYS_pread64
        | libc::SYS_pwrite64
        | libc::SYS_preadv
        | libc::SYS_pwritev
        | libc::SYS_preadv2
        | libc::SYS_pwritev2
        | libc::SYS_recvfrom
        | libc::SYS_recvmsg
        | libc::SYS_recvmmsg
        | libc::SYS_sendto
        | libc::SYS_sendmsg
        | libc::SYS_sendmmsg
        | libc::SYS_sendfile
        | libc::SYS_splice
        | libc::SYS_poll
        | libc::SYS_ppoll
        | libc::SYS_select
        | libc::SYS_pselect6
        | libc::SYS_epoll_wait
        | libc::SYS_epoll_pwait
        | libc::SYS_epoll_pwait2
        | libc::SYS_io_uring_enter
        | libc::SYS_io_getevents
        | libc::SYS_accept
        | libc::SYS_accept4
        | libc::SYS_connect
        | libc::SYS_fsync
        | libc::SYS_fdatasync
        | libc::SYS_open
        | libc::SYS_openat
        | libc::SYS_flock
        | libc::SYS_fcntl => State::Io,
        _ => State::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(os_state: char, syscall: Syscall) -> ThreadFacts {
        ThreadFacts {
            os_state,
            syscall,
            blocked_after_tick: false,
            run_ns: 1000,
            cpu_wait_ns: 0,
            futex_owner: Some(77),
            gil: None,
        }
    }

    fn blocked(nr: i64, arg0: u64) -> Syscall {
        Syscall::Blocked {
            nr,
            args: [arg0, 0x80, 2, 0, 0, 0],
            sp: 0x7ff0,
            pc: 0x1000,
        }
    }

    fn frames(names: &[&str]) -> Vec<Frame> {
        names.iter().map(|n| Frame::native(*n, "m")).collect()
    }

    #[test]
    fn futex_under_mutex_is_lock_with_holder() {
        let a = classify(
            &facts('S', blocked(libc::SYS_futex, 0x4040)),
            &frames(&["main", "w", "pthread_mutex_lock", "__lll_lock_wait"]),
        );
        assert_eq!(a.state, State::Lock);
        let w = a.waiting_on.unwrap();
        assert_eq!(
            (w.address, w.kind(), w.holder, w.frame),
            (0x4040, "pthread_mutex", Some(77), Some(2))
        );
    }

    #[test]
    fn unknown_futex_is_wait_never_lock() {
        let a = classify(
            &facts('S', blocked(libc::SYS_futex, 0x10)),
            &frames(&["main", "mystery"]),
        );
        assert_eq!(a.state, State::Wait);
        let w = a.waiting_on.unwrap();
        assert_eq!((w.kind(), w.holder, w.is_lock()), ("futex", None, false));
    }

    #[test]
    fn condvar_and_join_are_wait_without_holder() {
        let a = classify(
            &facts('S', blocked(libc::SYS_futex, 0x10)),
            &frames(&["w", "pthread_cond_wait"]),
        );
        assert_eq!((a.state, a.waiting_on.unwrap().holder), (State::Wait, None));
        let a = classify(
            &facts('S', blocked(libc::SYS_futex, 0x10)),
            &frames(&["main", "pthread_join"]),
        );
        assert_eq!(a.state, State::Wait);
    }

    #[test]
    fn running_states() {
        let spin = classify(
            &facts('R', Syscall::Running),
            &frames(&["w", "pthread_spin_lock"]),
        );
        assert_eq!(spin.state, State::LockSpin);
        let compute = classify(&facts('R', Syscall::Running), &frames(&["w", "work"]));
        assert_eq!(compute.state, State::Compute);
        let mut queued = facts('R', Syscall::Running);
        queued.cpu_wait_ns = 5000;
        assert_eq!(
            classify(&queued, &frames(&["w", "work"])).state,
            State::CpuWait
        );
        // Woken inside a mutex's futex wait, queued for a CPU: still waiting for that
        // mutex, named, not spinning; woken inside a condvar wait it waits for a CPU.
        let mut woken = facts('R', blocked(libc::SYS_futex, 0x4040));
        (woken.run_ns, woken.cpu_wait_ns) = (0, 5000);
        let a = classify(
            &woken,
            &frames(&["w", "pthread_mutex_lock", "__lll_lock_wait"]),
        );
        assert_eq!(
            (a.state, a.waiting_on.map(|w| w.address)),
            (State::Lock, Some(0x4040))
        );
        let a = classify(&woken, &frames(&["w", "pthread_cond_wait"]));
        assert_eq!((a.state, a.waiting_on), (State::CpuWait, None));
        let mut late = facts('R', Syscall::Running);
        late.blocked_after_tick = true;
        assert_eq!(
            classify(&late, &frames(&["w", "pthread_mutex_lock"])).state,
            State::Other
        );
    }

    #[test]
    fn syscalls_without_rules() {
        let f = frames(&["main", "reader"]);
        assert_eq!(
            classify(&facts('S', blocked(libc::SYS_read, 3)), &f).state,
            State::Io
        );
        assert_eq!(
            classify(&facts('S', blocked(libc::SYS_clock_nanosleep, 0)), &f).state,
            State::Sleep
        );
        assert_eq!(
            classify(&facts('S', blocked(libc::SYS_wait4, 0)), &f).state,
            State::Wait
        );
        assert_eq!(
            classify(&facts('S', blocked(libc::SYS_getpid, 0)), &f).state,
            State::Other
        );
        assert_eq!(
            classify(&facts('D', Syscall::BlockedNoSyscall { sp: 1, pc: 2 }), &f).state,
            State::Other
        );
        // A spin lock that backs off by sleeping is still waiting for the lock.
        let backoff = frames(&["w", "pthread_spin_lock"]);
        assert_eq!(
            classify(&facts('S', blocked(libc::SYS_nanosleep, 0)), &backoff).state,
            State::Lock
        );
    }

    #[test]
    fn futex_inside_the_gil_is_a_gil_wait_with_its_holder() {
        let gil = GilState {
            address: 0x5000,
            size: 208,
            holder: Some(9),
            interp_id: 0,
        };
        let mut t = facts('S', blocked(libc::SYS_futex, 0x5000 + 48));
        t.gil = Some(gil);
        // No symbol for take_gil (a stripped distro build): the address says GIL.
        let a = classify(
            &t,
            &frames(&["worker", "python3.11+0xf94ee", "pthread_cond_timedwait"]),
        );
        let w = a.waiting_on.unwrap();
        assert_eq!(
            (a.state, w.kind(), w.address, w.holder),
            (State::Lock, "GIL", 0x5000, Some(9))
        );
        // With symbols, the take_gil frame is kept as the deciding frame.
        let a = classify(
            &t,
            &frames(&["worker", "take_gil", "pthread_cond_timedwait"]),
        );
        assert_eq!(a.waiting_on.unwrap().frame, Some(1));
        // A futex just past the GIL is not the GIL.
        let mut t = facts('S', blocked(libc::SYS_futex, 0x5000 + 208));
        t.gil = Some(gil);
        assert_eq!(classify(&t, &frames(&["w", "mystery"])).state, State::Wait);
    }

    #[test]
    fn yielding_inside_an_acquire_is_spinning() {
        let mut t = facts('R', Syscall::Running);
        t.blocked_after_tick = true;
        let f = frames(&[
            "w",
            "lock_PyThread_acquire_lock",
            "_PyMutex_LockTimed",
            "_Py_yield",
            "__GI_sched_yield",
        ]);
        assert_eq!(classify(&t, &f).state, State::LockSpin);
        // Read in a futex wait, then woken and yielding again when its stack was taken: no
        // lock named from the futex it left.
        let t = facts('S', blocked(libc::SYS_futex, 0x7fe5_4f53_5ac0));
        let a = classify(&t, &f);
        assert_eq!((a.state, a.waiting_on.is_none()), (State::LockSpin, true));
    }

    /// A parked waiter's stack at 0x7000: `wait_entry { park_arg, addr, sema }` parked on
    /// the word at 0x02cc_6600_01b0, its semaphore at 0x7010.
    fn parked_stack() -> Vec<u8> {
        let mut bytes = vec![0u8; 32];
        bytes[8..16].copy_from_slice(&0x02cc_6600_01b0_u64.to_le_bytes());
        bytes
    }

    #[test]
    fn parking_lot_waits_are_named_by_the_parked_address() {
        let bytes = parked_stack();
        let mem = crate::process::memory::Bytes {
            base: 0x7000,
            bytes: &bytes,
        };
        let f = frames(&[
            "worker",
            "lock_PyThread_acquire_lock",
            "_PyMutex_LockTimed",
            "_PyParkingLot_Park",
            "_PySemaphore_Wait",
            "sem_clockwait",
        ]);
        let mut w = classify(&facts('S', blocked(libc::SYS_futex, 0x7010)), &f)
            .waiting_on
            .unwrap();
        let word = w.identify(&f, &mem);
        assert_eq!((w.kind(), w.address), ("threading.Lock", 0x02cc_6600_01b0));
        assert_eq!(word, Some(WordKind::PyMutex));
        // An event parks too, but its word is not a mutex's.
        let f = frames(&["worker", "PyEvent_WaitTimed", "_PyParkingLot_Park"]);
        let mut w = WaitOn {
            address: 0x7010,
            rule: None,
            frame: None,
            holder: None,
        };
        assert_eq!(w.identify(&f, &mem), None);
        assert_eq!(w.address, 0x02cc_6600_01b0);
        // A semaphore-based lock (3.11, 3.12): the futex is the lock.
        let f = frames(&[
            "worker",
            "lock_PyThread_acquire_lock",
            "acquire_timed",
            "PyThread_acquire_lock_timed",
            "sem_clockwait",
        ]);
        let mut w = classify(&facts('S', blocked(libc::SYS_futex, 0x7010)), &f)
            .waiting_on
            .unwrap();
        assert_eq!(w.identify(&f, &mem), Some(WordKind::Semaphore));
        assert_eq!(w.address, 0x7010);
    }

    #[test]
    fn a_condition_waiters_own_lock_is_not_a_lock_to_watch() {
        let bytes = parked_stack();
        let mem = crate::process::memory::Bytes {
            base: 0x7000,
            bytes: &bytes,
        };
        let mut wait = Frame::native("Condition.wait", "");
        wait.kind = crate::frame::FrameKind::Python;
        wait.file = Some("/usr/lib/python3.14/threading.py".into());
        let mut f = vec![wait];
        f.extend(frames(&[
            "lock_PyThread_acquire_lock",
            "_PyMutex_LockTimed",
            "_PyParkingLot_Park",
            "_PySemaphore_Wait",
            "sem_clockwait",
        ]));
        let a = classify(&facts('S', blocked(libc::SYS_futex, 0x7010)), &f);
        assert_eq!(a.state, State::Wait);
        let mut w = a.waiting_on.unwrap();
        assert_eq!(w.identify(&f, &mem), None);
        assert_eq!(w.address, 0x02cc_6600_01b0);
    }
}
