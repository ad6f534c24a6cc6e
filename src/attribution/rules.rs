//! The one table that says which frames mean "acquiring a lock" and which mean "waiting
//! for something to happen". Classification reads it as data; adding a library is adding
//! rows here, not branches elsewhere.
//!
//! A pattern is a glob (`*` matches anything) over the normalised function name (see
//! [`normalise`]). It matches the whole name, or a path suffix of it at a `::` or `.`
//! boundary, so `Mutex::lock_contended` matches
//! `std::sys::sync::mutex::futex::Mutex::lock_contended` whatever module std moves it to.
//!
//! Which frame decides: the rule of the highest [`Layer`] found on the stack, and among
//! rules of that layer the innermost frame. "Innermost wins" alone is wrong for runtimes
//! built from primitives: CPython's `take_gil` waits in `pthread_cond_timedwait`, which
//! by itself means an idle condvar wait, but here it is the GIL.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::frame::{Frame, FrameKind};

/// What a frame says the thread is doing when it blocks (or spins) under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Acquiring a lock: blocked → `lock`, on a CPU → `lock_spin`.
    Acquire,
    /// Waiting for an event (condvar, channel, join, barrier): blocked → `wait`.
    Idle,
}

/// How high-level a rule is; a higher layer outranks a lower one found deeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// Building blocks that many things wait in: semaphores, parking lots, futex helpers.
    Primitive,
    /// A library's lock or wait: pthread mutex, Rust `Mutex`, a channel's `recv`.
    Library,
    /// A language runtime's own lock built from the above: the GIL, `threading.Lock`.
    Runtime,
    /// Interpreted code whose purpose is known (Python's `Condition.wait`, `Queue.get`).
    Intent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub pattern: &'static str,
    /// For interpreted frames: the source file the function must come from.
    pub file: Option<&'static str>,
    pub role: Role,
    pub layer: Layer,
    /// The lock or wait kind reported: `pthread_mutex`, `GIL`, `std channel`…
    pub kind: &'static str,
    /// What the futex word says about the lock, and where its holder can be read.
    pub lock: LockId,
}

/// How a waiter's lock is identified, beyond "the futex word it sleeps on".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockId {
    /// The futex word is the lock; its holder cannot be read.
    Futex,
    /// A glibc mutex: the futex word is the lock and the int 8 bytes past it (`__owner`)
    /// is the holder's tid.
    MutexOwner,
    /// CPython's GIL: waiters sleep on one of its condition variables or its mutex; the
    /// lock is the GIL structure and its holder is read from it at the tick.
    Gil,
    /// CPython's parking lot: the futex is the waiter's own semaphore, inside a
    /// `wait_entry { park_arg, addr, sema, … }` on its stack; the lock is `addr`, the
    /// word just before the semaphore. Applies to every wait under the matching frame.
    Parked,
    /// One lock per process whatever address each waiter sleeps on (a stop-the-world
    /// pause parks each thread on its own state word): merged and named by kind.
    PerProcess,
}

const fn acquire(layer: Layer, kind: &'static str, pattern: &'static str) -> Rule {
    Rule {
        pattern,
        file: None,
        role: Role::Acquire,
        layer,
        kind,
        lock: LockId::Futex,
    }
}

const fn idle(layer: Layer, kind: &'static str, pattern: &'static str) -> Rule {
    Rule {
        pattern,
        file: None,
        role: Role::Idle,
        layer,
        kind,
        lock: LockId::Futex,
    }
}

const fn python(role: Role, kind: &'static str, file: &'static str, pattern: &'static str) -> Rule {
    Rule {
        pattern,
        file: Some(file),
        role,
        layer: Layer::Intent,
        kind,
        lock: LockId::Futex,
    }
}

/// A rule whose lock is identified as `lock` says.
const fn with(rule: Rule, lock: LockId) -> Rule {
    Rule { lock, ..rule }
}

use Layer::{Library, Primitive, Runtime};
use LockId::{Gil, MutexOwner, Parked, PerProcess};

pub const RULES: &[Rule] = &[
    // glibc (C, and C++ std::mutex / std::shared_mutex / std::condition_variable through it).
    with(
        acquire(Library, "pthread_mutex", "*pthread_mutex_lock"),
        MutexOwner,
    ),
    with(
        acquire(Library, "pthread_mutex", "*pthread_mutex_lock_full"),
        MutexOwner,
    ),
    with(
        acquire(Library, "pthread_mutex", "*pthread_mutex_timedlock"),
        MutexOwner,
    ),
    with(
        acquire(Library, "pthread_mutex", "*pthread_mutex_clocklock*"),
        MutexOwner,
    ),
    with(
        acquire(Library, "pthread_mutex", "__pthread_mutex_cond_lock*"),
        MutexOwner,
    ),
    with(
        acquire(Primitive, "pthread_mutex", "__lll_lock_wait"),
        MutexOwner,
    ),
    acquire(Primitive, "glibc internal lock", "__lll_lock_wait_private"),
    acquire(Library, "pthread_rwlock", "*pthread_rwlock_*rdlock"),
    acquire(Library, "pthread_rwlock", "*pthread_rwlock_*wrlock"),
    acquire(Library, "pthread_spinlock", "*pthread_spin_lock"),
    acquire(Library, "std::mutex", "std::*mutex::lock"),
    acquire(
        Library,
        "std::shared_mutex",
        "std::shared_mutex::lock_shared",
    ),
    idle(Library, "pthread_cond", "*pthread_cond_wait"),
    idle(Library, "pthread_cond", "*pthread_cond_timedwait"),
    idle(Library, "pthread_cond", "*pthread_cond_clockwait"),
    idle(
        Library,
        "condition_variable",
        "std::condition_variable::wait*",
    ),
    idle(Library, "pthread_barrier", "*pthread_barrier_wait"),
    idle(Library, "thread join", "*pthread_join"),
    idle(Library, "thread join", "*pthread_clockjoin_ex"),
    idle(Library, "thread join", "*pthread_clockjoin_np"),
    idle(Library, "thread join", "*pthread_timedjoin_np"),
    idle(Library, "thread join", "std::thread::join"),
    idle(Primitive, "semaphore", "*sem_wait"),
    idle(Primitive, "semaphore", "*sem_timedwait"),
    idle(Primitive, "semaphore", "*sem_clockwait"),
    idle(Primitive, "semaphore", "__new_sem_wait_slow*"),
    // Rust std.
    acquire(Library, "std::sync::Mutex", "std::*Mutex::lock_contended"),
    acquire(Library, "std::sync::RwLock", "std::*RwLock::read_contended"),
    acquire(
        Library,
        "std::sync::RwLock",
        "std::*RwLock::write_contended",
    ),
    idle(Library, "std::sync::Condvar", "std::*Condvar::wait*"),
    idle(Library, "std channel", "std::sync::mpmc::*recv*"),
    idle(Library, "std channel", "std::sync::mpmc::*wait_until"),
    idle(Library, "std channel", "std::sync::mpsc::*recv*"),
    idle(Library, "std::sync::Barrier", "std::sync::*Barrier::wait"),
    idle(Library, "thread join", "std::thread::*JoinHandle::join"),
    idle(Library, "thread join", "std::thread::*JoinInner::join"),
    idle(Primitive, "thread park", "std::thread::park*"),
    idle(Primitive, "thread park", "std::sys::*Parker::park*"),
    // parking_lot.
    acquire(
        Library,
        "parking_lot::Mutex",
        "parking_lot::*RawMutex::lock_slow",
    ),
    acquire(
        Library,
        "parking_lot::RwLock",
        "parking_lot::*RawRwLock::lock_*slow",
    ),
    idle(
        Library,
        "parking_lot::Condvar",
        "parking_lot::*Condvar::wait*",
    ),
    idle(Primitive, "parking_lot park", "parking_lot_core::*park"),
    // crossbeam.
    idle(Library, "crossbeam channel", "crossbeam_channel::*recv*"),
    idle(
        Library,
        "crossbeam channel",
        "crossbeam_channel::*Context::wait_until",
    ),
    idle(
        Library,
        "crossbeam channel",
        "crossbeam_channel::*run_select*",
    ),
    idle(
        Primitive,
        "crossbeam park",
        "crossbeam_utils::*Parker::park*",
    ),
    // CPython (3.11–3.14, default and free-threaded builds). Stacks seen on real
    // interpreters (3.11.7, 3.12.1, 3.13.0, 3.13t), innermost last:
    //   GIL:  eval_frame_handle_pending (3.11) | _Py_HandlePending (3.12) |
    //         _Py_HandlePending → _PyThreadState_Attach (3.13), or PyEval_RestoreThread
    //         after a blocking call → take_gil → pthread_cond_timedwait (sometimes
    //         __pthread_mutex_cond_lock → __lll_lock_wait on the GIL's mutex).
    //   threading.Lock, 3.11–3.13 default builds: lock_PyThread_acquire_lock →
    //         acquire_timed → [PyThread_acquire_lock_timed_with_retries (3.13)] →
    //         PyThread_acquire_lock_timed → sem_clockwait; 3.13t: lock_PyThread_acquire_lock
    //         → _PyMutex_LockTimed → _Py_yield → sched_yield (spinning) or
    //         _PyParkingLot_Park → _PySemaphore_Wait → sem_clockwait.
    GIL,
    // The thread that was asked to drop the GIL waits until the requester has taken it
    // (FORCE_SWITCHING): time lost to the GIL hand-over.
    with(acquire(Runtime, "GIL", "drop_gil"), Gil),
    acquire(Library, "PyMutex", "PyMutex_Lock"),
    acquire(Library, "PyMutex", "_PyMutex_LockTimed"),
    acquire(Library, "PyMutex", "_PyMutex_LockSlow"),
    acquire(Library, "PyMutex", "_PyRawMutex_LockSlow"),
    acquire(Library, "PyMutex", "_PyRWMutex_*Lock"),
    with(acquire(Primitive, "PyMutex", "_PyParkingLot_Park"), Parked),
    idle(Primitive, "PySemaphore", "_PySemaphore_Wait"),
    idle(Library, "PyEvent", "PyEvent_WaitTimed"),
    idle(Library, "PyEvent", "PyEvent_Wait"),
    acquire(Runtime, "threading.Lock", "lock_PyThread_acquire_lock"),
    acquire(Library, "threading.Lock", "PyThread_acquire_lock_timed"),
    acquire(
        Library,
        "threading.Lock",
        "PyThread_acquire_lock_timed_with_retries",
    ),
    acquire(Library, "threading.Lock", "acquire_timed"),
    acquire(Runtime, "threading.RLock", "rlock_acquire"),
    acquire(Library, "threading.RLock", "_PyRecursiveMutex_LockTimed"),
    acquire(Runtime, "critical section", "_PyCriticalSection*BeginSlow"),
    with(
        acquire(Runtime, "stop-the-world", "_PyEval_StopTheWorld*"),
        PerProcess,
    ),
    with(
        acquire(Runtime, "stop-the-world", "stop_the_world"),
        PerProcess,
    ),
    with(
        acquire(Runtime, "stop-the-world", "tstate_wait_attach"),
        PerProcess,
    ),
    // Python code whose purpose is known: waits built on threading.Lock.
    python(Role::Idle, "threading.Condition", "threading.py", "wait"),
    python(
        Role::Idle,
        "threading.Condition",
        "threading.py",
        "wait_for",
    ),
    python(
        Role::Acquire,
        "threading.Condition",
        "threading.py",
        "_acquire_restore",
    ),
    python(Role::Idle, "thread join", "threading.py", "join"),
    python(
        Role::Idle,
        "thread join",
        "threading.py",
        "_wait_for_tstate_lock",
    ),
    python(Role::Idle, "threading.Semaphore", "threading.py", "acquire"),
    python(Role::Idle, "queue", "queue.py", "get"),
    python(Role::Idle, "queue", "queue.py", "put"),
];

/// Waiting for the GIL. Also applied to any futex wait inside the GIL's structure: distro
/// builds without debug symbols do not name the static `take_gil`.
pub const GIL: Rule = with(acquire(Runtime, "GIL", "take_gil"), LockId::Gil);

/// The deciding rule for a stack (root first) and the index of the frame it matched.
pub fn decide(frames: &[Frame]) -> Option<(usize, &'static Rule)> {
    let mut best: Option<(usize, &'static Rule)> = None;
    for (i, f) in frames.iter().enumerate() {
        if let Some(rule) = rule_for(f) {
            // Later (inner) frames win ties: `>=`.
            if best.is_none_or(|(_, b)| rule.layer >= b.layer) {
                best = Some((i, rule));
            }
        }
    }
    best
}

thread_local! {
    /// What each frame matched. Matching (normalising the name, then each rule's glob
    /// against each `::`/`.` suffix) was the costliest step of classifying a sample, and a
    /// program shows few distinct frames, so each is matched once.
    static MATCHED: RefCell<HashMap<Frame, Option<&'static Rule>>> = RefCell::new(HashMap::new());
}

/// The first rule matching one frame.
pub fn rule_for(frame: &Frame) -> Option<&'static Rule> {
    MATCHED.with_borrow_mut(|matched| {
        if let Some(&rule) = matched.get(frame) {
            return rule;
        }
        let rule = first_match(frame);
        matched.insert(frame.clone(), rule);
        rule
    })
}

fn first_match(frame: &Frame) -> Option<&'static Rule> {
    if frame.kind == FrameKind::Truncated {
        return None;
    }
    let name = normalise(&frame.function);
    RULES.iter().find(|r| {
        let file_ok = match (r.file, &frame.file) {
            (None, _) => frame.kind != FrameKind::Python,
            (Some(want), Some(file)) => frame.kind == FrameKind::Python && file_matches(file, want),
            (Some(_), None) => false,
        };
        file_ok && name_matches(r.pattern, &name)
    })
}

fn file_matches(file: &str, want: &str) -> bool {
    file == want
        || file
            .strip_suffix(want)
            .is_some_and(|dir| dir.ends_with('/') || dir.ends_with('\\'))
}

/// The whole name, or a `::`/`.`-separated suffix of it, matches the glob.
fn name_matches(pattern: &str, name: &str) -> bool {
    if glob(pattern.as_bytes(), name.as_bytes()) {
        return true;
    }
    let bytes = name.as_bytes();
    (1..bytes.len()).any(|i| {
        let boundary = bytes[i - 1] == b'.' || (i >= 2 && &bytes[i - 2..i] == b"::");
        boundary && glob(pattern.as_bytes(), &bytes[i..])
    })
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A function name with what varies between builds taken off: symbol versions
/// (`@@GLIBC_2.2.5`), glibc's `__GI_` alias prefix, compiler clone suffixes (`.cold`, `.isra.0`, `.constprop.0`,
/// `.part.0`, `.llvm.123`), Rust hashes (`::h0123456789abcdef`), generic arguments
/// (`Channel<T>::recv` → `Channel::recv`) and C++ parameter lists (`lock()` → `lock`).
pub fn normalise(name: &str) -> String {
    let mut s = name.split('@').next().unwrap_or(name);
    // glibc's internal aliases: `__GI___pthread_mutex_lock` is `__pthread_mutex_lock`.
    s = s.strip_prefix("__GI_").unwrap_or(s);
    for suffix in [
        ".cold",
        ".isra",
        ".constprop",
        ".part",
        ".lto_priv",
        ".llvm.",
    ] {
        if let Some(i) = s.find(suffix) {
            s = &s[..i];
        }
    }
    if let Some(i) = s.rfind("::h") {
        let hash = &s[i + 3..];
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            s = &s[..i];
        }
    }
    let s = s.trim_end_matches(" const");
    strip_params(&strip_generics(s))
}

/// Remove generic arguments (`Channel<T>::recv` → `Channel::recv`) and unwrap qualified
/// paths to the type they name (`<Mutex>::lock_contended` → `Mutex::lock_contended`,
/// `<RawMutex as lock_api::RawMutex>::lock` → `RawMutex::lock`).
fn strip_generics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let Some(len) = matching_close(from) else {
            out.push_str(from);
            return out;
        };
        let inner = &from[1..len];
        let at_segment_start = before.is_empty() || before.ends_with("::");
        if at_segment_start {
            // A qualified path: keep its type, without the trait it is viewed as.
            let ty = inner.split(" as ").next().unwrap_or(inner);
            out.push_str(&strip_generics(ty));
        }
        rest = &from[len + 1..];
    }
    out.push_str(rest);
    out
}

/// The index of the `>` that closes the `<` at the start of `s`.
fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Remove a trailing C++ parameter list.
fn strip_params(s: &str) -> String {
    if !s.ends_with(')') {
        return s.to_string();
    }
    let mut depth = 0i32;
    for (i, c) in s.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return s[..i].to_string();
                }
            }
            _ => {}
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(names: &[&str]) -> Vec<Frame> {
        names.iter().map(|n| Frame::native(*n, "m")).collect()
    }

    fn kind(names: &[&str]) -> Option<(Role, &'static str)> {
        decide(&stack(names)).map(|(_, r)| (r.role, r.kind))
    }

    /// A stack's frame names (root first) and the role and kind it must be decided as.
    type Case<'a> = (&'a [&'a str], Option<(Role, &'a str)>);

    /// Each stack is decided as given.
    fn expect_kinds(cases: &[Case]) {
        for (names, expected) in cases {
            assert_eq!(kind(names), *expected, "{names:?}");
        }
    }

    #[test]
    fn normalises_build_noise() {
        assert_eq!(
            normalise("pthread_mutex_lock@@GLIBC_2.2.5"),
            "pthread_mutex_lock"
        );
        assert_eq!(normalise("take_gil.cold"), "take_gil");
        assert_eq!(normalise("__GI___lll_lock_wait"), "__lll_lock_wait");
        assert_eq!(normalise("acquire_timed.isra.0"), "acquire_timed");
        assert_eq!(normalise("stop_the_world.constprop.0"), "stop_the_world");
        assert_eq!(
            normalise("std::sys::sync::mutex::futex::Mutex::lock_contended::h0123456789abcdef"),
            "std::sys::sync::mutex::futex::Mutex::lock_contended"
        );
        assert_eq!(
            normalise("std::sync::mpmc::list::Channel<T>::recv::{{closure}}"),
            "std::sync::mpmc::list::Channel::recv::{{closure}}"
        );
        assert_eq!(normalise("std::mutex::lock()"), "std::mutex::lock");
        assert_eq!(
            normalise("<std::sys::sync::mutex::futex::Mutex>::lock_contended"),
            "std::sys::sync::mutex::futex::Mutex::lock_contended"
        );
        assert_eq!(
            normalise("<parking_lot::raw_mutex::RawMutex as lock_api::mutex::RawMutex>::lock"),
            "parking_lot::raw_mutex::RawMutex::lock"
        );
        assert_eq!(
            normalise("<std::sync::mpmc::list::Channel<T>>::recv"),
            "std::sync::mpmc::list::Channel::recv"
        );
        assert_eq!(normalise("foo(int, std::vector<int>)"), "foo");
    }

    #[test]
    fn glob_and_suffix_matching() {
        assert!(name_matches("*pthread_mutex_lock", "___pthread_mutex_lock"));
        assert!(!name_matches("*pthread_mutex_lock", "pthread_mutex_unlock"));
        assert!(name_matches(
            "_PyCriticalSection*BeginSlow",
            "_PyCriticalSection2_BeginSlow"
        ));
        assert!(name_matches(
            "std::*Mutex::lock_contended",
            "std::sys::sync::mutex::futex::Mutex::lock_contended"
        ));
        assert!(name_matches("wait", "Condition.wait"));
        assert!(!name_matches("take_gil", "my_take_gil"));
        assert!(!name_matches(
            "*pthread_rwlock_*rdlock",
            "pthread_rwlock_unlock"
        ));
    }

    #[test]
    fn glibc_and_cpp() {
        expect_kinds(&[
            (
                &["main", "worker", "pthread_mutex_lock", "__lll_lock_wait"],
                Some((Role::Acquire, "pthread_mutex")),
            ),
            (
                &["worker", "__pthread_mutex_lock_full"],
                Some((Role::Acquire, "pthread_mutex")),
            ),
            (
                &["worker", "pthread_rwlock_wrlock@@GLIBC_2.34"],
                Some((Role::Acquire, "pthread_rwlock")),
            ),
            (
                &["worker", "pthread_spin_lock"],
                Some((Role::Acquire, "pthread_spinlock")),
            ),
            (
                &["worker", "pthread_cond_wait@@GLIBC_2.3.2"],
                Some((Role::Idle, "pthread_cond")),
            ),
            (
                &["main", "__pthread_clockjoin_ex"],
                Some((Role::Idle, "thread join")),
            ),
            (&["main", "pthread_join"], Some((Role::Idle, "thread join"))),
            (
                &["w", "pthread_barrier_wait"],
                Some((Role::Idle, "pthread_barrier")),
            ),
            (&["w", "sem_wait"], Some((Role::Idle, "semaphore"))),
            (
                &["w", "std::mutex::lock()", "pthread_mutex_lock"],
                Some((Role::Acquire, "pthread_mutex")),
            ),
        ]);
        // Waking from a condvar and re-taking its mutex is a lock wait.
        assert_eq!(
            kind(&[
                "w",
                "pthread_cond_wait",
                "__pthread_mutex_cond_lock",
                "__lll_lock_wait"
            ]),
            Some((Role::Acquire, "pthread_mutex"))
        );
        assert_eq!(kind(&["main", "work", "compute"]), None);
    }

    #[test]
    fn rust_libraries() {
        let m = "std::sys::sync::mutex::futex::Mutex::lock_contended::h1111111111111111";
        expect_kinds(&[
            (
                &["worker", "std::sync::poison::mutex::Mutex<T>::lock", m],
                Some((Role::Acquire, "std::sync::Mutex")),
            ),
            (
                &[
                    "w",
                    "std::sys::sync::rwlock::futex::RwLock::write_contended",
                ],
                Some((Role::Acquire, "std::sync::RwLock")),
            ),
            (
                &[
                    "w",
                    "std::sync::poison::condvar::Condvar::wait<T>",
                    "std::sys::sync::condvar::futex::Condvar::wait",
                ],
                Some((Role::Idle, "std::sync::Condvar")),
            ),
            (
                &[
                    "w",
                    "std::sync::mpsc::Receiver<T>::recv",
                    "std::sync::mpmc::list::Channel<T>::recv",
                    "std::sync::mpmc::context::Context::wait_until",
                ],
                Some((Role::Idle, "std channel")),
            ),
            (
                &[
                    "main",
                    "std::thread::JoinHandle<T>::join",
                    "std::thread::JoinInner<T>::join",
                    "pthread_join",
                ],
                Some((Role::Idle, "thread join")),
            ),
            (
                &[
                    "w",
                    "parking_lot::raw_mutex::RawMutex::lock_slow",
                    "parking_lot_core::parking_lot::park",
                ],
                Some((Role::Acquire, "parking_lot::Mutex")),
            ),
            (
                &["w", "parking_lot::raw_rwlock::RawRwLock::lock_shared_slow"],
                Some((Role::Acquire, "parking_lot::RwLock")),
            ),
            (
                &[
                    "w",
                    "parking_lot::condvar::Condvar::wait_until_internal",
                    "parking_lot_core::parking_lot::park",
                ],
                Some((Role::Idle, "parking_lot::Condvar")),
            ),
            (
                &[
                    "w",
                    "crossbeam_channel::channel::Receiver<T>::recv",
                    "crossbeam_channel::context::Context::wait_until",
                ],
                Some((Role::Idle, "crossbeam channel")),
            ),
        ]);
        // Re-taking the mutex on wake-up from a Rust condvar.
        assert_eq!(
            kind(&[
                "w",
                "std::sync::poison::condvar::Condvar::wait",
                "std::sys::sync::mutex::futex::Mutex::lock_contended"
            ]),
            Some((Role::Acquire, "std::sync::Mutex"))
        );
    }

    #[test]
    fn cpython_runtime_outranks_primitives() {
        expect_kinds(&[
            (
                &[
                    "PyEval_RestoreThread",
                    "take_gil",
                    "pthread_cond_timedwait@@GLIBC_2.3.2",
                ],
                Some((Role::Acquire, "GIL")),
            ),
            (
                &[
                    "lock_PyThread_acquire_lock",
                    "_PyMutex_LockTimed",
                    "_PyParkingLot_Park",
                    "_PySemaphore_Wait",
                    "sem_clockwait",
                ],
                Some((Role::Acquire, "threading.Lock")),
            ),
            (
                &[
                    "rlock_acquire",
                    "acquire_timed.isra.0",
                    "PyThread_acquire_lock_timed",
                    "sem_clockwait",
                ],
                Some((Role::Acquire, "threading.RLock")),
            ),
            (
                &[
                    "x",
                    "PyMutex_Lock",
                    "_PyMutex_LockTimed",
                    "_PyParkingLot_Park",
                ],
                Some((Role::Acquire, "PyMutex")),
            ),
            (
                &["x", "_PyCriticalSection2_BeginSlow", "_PyMutex_LockTimed"],
                Some((Role::Acquire, "critical section")),
            ),
            (
                &[
                    "gc",
                    "_PyEval_StopTheWorldAll",
                    "stop_the_world",
                    "PyEvent_WaitTimed",
                    "_PyParkingLot_Park",
                ],
                Some((Role::Acquire, "stop-the-world")),
            ),
            (
                &[
                    "x",
                    "PyEvent_WaitTimed",
                    "_PyParkingLot_Park",
                    "_PySemaphore_Wait",
                ],
                Some((Role::Idle, "PyEvent")),
            ),
        ]);
        // Stacks recorded on real interpreters.
        expect_kinds(&[
            (
                &[
                    "is_prime",
                    "_Py_HandlePending",
                    "drop_gil",
                    "pthread_cond_wait",
                ],
                Some((Role::Acquire, "GIL")),
            ),
            (
                &[
                    "lock_PyThread_acquire_lock",
                    "acquire_timed",
                    "PyThread_acquire_lock_timed_with_retries",
                    "PyThread_acquire_lock_timed",
                    "__new_sem_wait_slow64",
                ],
                Some((Role::Acquire, "threading.Lock")),
            ),
            (
                &[
                    "list_pop",
                    "_PyCriticalSection_BeginSlow",
                    "_PyMutex_Lock",
                    "PyMutex_Lock",
                    "_PyMutex_LockTimed",
                    "_PyParkingLot_Park",
                ],
                Some((Role::Acquire, "critical section")),
            ),
            (
                &[
                    "_Py_HandlePending",
                    "_PyThreadState_Attach",
                    "tstate_wait_attach",
                    "_PyParkingLot_Park",
                ],
                Some((Role::Acquire, "stop-the-world")),
            ),
        ]);
    }

    #[test]
    fn python_frames_give_intent() {
        let mut cond = Frame::native("Condition.wait", "");
        cond.kind = FrameKind::Python;
        cond.file = Some("/usr/lib/python3.13/threading.py".into());
        let frames = vec![
            cond.clone(),
            Frame::native("lock_PyThread_acquire_lock", "python3.13"),
            Frame::native("_PyMutex_LockTimed", "python3.13"),
        ];
        assert_eq!(
            decide(&frames).map(|(i, r)| (i, r.role)),
            Some((0, Role::Idle))
        );
        // A user function called `wait` in another file is not the stdlib's.
        cond.file = Some("/app/mythreading.py".into());
        let frames = vec![
            cond,
            Frame::native("lock_PyThread_acquire_lock", "python3.13"),
        ];
        assert_eq!(decide(&frames).map(|(_, r)| r.kind), Some("threading.Lock"));
        // Native names never match Python-only rules.
        assert_eq!(kind(&["wait"]), None);
    }
}
