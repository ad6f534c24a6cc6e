//! The one intrusive thing parprof does: stop a running thread for as long as it takes to
//! read its registers. `PTRACE_SEIZE` (no SIGSTOP, invisible to the target's job control),
//! `PTRACE_INTERRUPT`, `PTRACE_GETREGS`, `PTRACE_DETACH` — and on every path, detach.
//!
//! If parprof is killed while a thread is seized, the kernel detaches it and wakes it up
//! (`exit_ptrace`), so a `kill -9` at any moment cannot leave the target stopped.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Regs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    #[error("thread exited")]
    Gone,
    #[error("not permitted to trace the thread")]
    Permission,
    #[error("thread is already traced by another debugger")]
    Busy,
    #[error("thread did not stop in time")]
    Timeout,
    #[error("ptrace failed: {0}")]
    Other(Errno),
}

/// How long a tick waits for its threads to reach the interrupt stop. A thread on a CPU
/// stops within microseconds; one waiting for a CPU stops only when it gets one, which on
/// busy cores takes milliseconds (ticks that waited for them lasted up to 20 ms, and 100 Hz
/// fell to 76). Those are captured late instead, between ticks, as they stop.
pub const STOP_DEADLINE: Duration = Duration::from_millis(2);

/// Stops threads, reads their registers, and lets them go. Threads are interrupted
/// together and released one by one as soon as their registers and stack are copied, so a
/// tick costs about one scheduling delay, not one per thread. A thread that had not
/// stopped by the deadline is remembered, and captured and released by `collect_late` (or on drop).
#[derive(Default)]
pub struct Tracer {
    pending: Vec<i32>,
    /// Threads whose detach failed: killed while stopped, they exit still traced, and stay
    /// zombies (keeping their whole process from being reaped) until their exit is
    /// collected here.
    dying: Vec<i32>,
}

/// One thread's outcome of a stop: its registers and what was copied while it was stopped.
pub type Stopped<T> = (i32, Result<(Regs, T), StopError>);

impl Tracer {
    /// Stop every thread of `tids`, and for each, read its registers, run `while_stopped`
    /// (to copy what must be consistent with them: the stack, interpreter frames), then
    /// release it. One result per tid, in the order they stopped; a thread that has not
    /// stopped by the deadline gets `Timeout` and is left to `collect_late`.
    pub fn with_stopped<T>(
        &mut self,
        tids: &[i32],
        mut while_stopped: impl FnMut(i32, &Regs) -> T,
    ) -> Vec<Stopped<T>> {
        let mut results = Vec::with_capacity(tids.len());
        let mut waiting = Vec::with_capacity(tids.len());
        for &tid in tids {
            match interrupt(tid) {
                Ok(()) => waiting.push(tid),
                Err(e) => results.push((tid, Err(e))),
            }
        }
        read_as_they_stop(
            &mut waiting,
            Instant::now() + STOP_DEADLINE,
            &mut while_stopped,
            &mut results,
            &mut self.dying,
        );
        for &tid in &waiting {
            results.push((tid, Err(StopError::Timeout)));
        }
        self.pending.append(&mut waiting);
        results
    }

    /// Whether threads are still held: seized and not yet stopped, or exited and not yet
    /// collected.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.dying.is_empty()
    }

    /// Threads that missed an earlier deadline, captured as they stop, until all are in or
    /// `until` (pass `Instant::now()` for those stopped already). They were waiting for a
    /// CPU; a thread reaches its ptrace stop before running any of its own code, so its
    /// registers are still those it had at the tick, and it is captured like the others,
    /// late. Each is released at once: waiting here between ticks, asleep, keeps a thread
    /// that stops late from staying stopped until the next tick.
    pub fn collect_late<T>(
        &mut self,
        until: Instant,
        mut while_stopped: impl FnMut(i32, &Regs) -> T,
    ) -> Vec<Stopped<T>> {
        self.dying.retain(|&tid| !collected(tid));
        let mut results = Vec::new();
        read_as_they_stop(
            &mut self.pending,
            until,
            &mut while_stopped,
            &mut results,
            &mut self.dying,
        );
        results
    }
}

/// Whether a thread whose detach failed is gone for good: its exit collected, or not ours
/// any more. One that stopped again (a stop the kill overtook) is detached once more.
fn collected(tid: i32) -> bool {
    let pid = Pid::from_raw(tid);
    match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => false,
        Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => true,
        Ok(_) => ptrace::detach(pid, None).is_ok(),
    }
}

/// Read and release each thread of `tids` as it stops, asleep in between, until all have
/// or `until`; those that have not stay in `tids`.
fn read_as_they_stop<T>(
    tids: &mut Vec<i32>,
    until: Instant,
    while_stopped: &mut impl FnMut(i32, &Regs) -> T,
    results: &mut Vec<Stopped<T>>,
    dying: &mut Vec<i32>,
) {
    loop {
        tids.retain(|&tid| !read_if_stopped(tid, while_stopped, results, dying));
        let now = Instant::now();
        if tids.is_empty() || now >= until {
            return;
        }
        sleep_until_a_stop(until - now);
    }
}

/// Block SIGCHLD in the calling thread, and so in every thread it starts afterwards. The
/// kernel tells a tracer of each tracee stop with a SIGCHLD to the tracer's process; blocked
/// in every thread, it stays pending until `sleep_until_a_stop` takes it. Unblocked in any
/// thread, it would be delivered there and dropped (its default action is to ignore it).
/// Call it first thing in `main`, before any thread starts.
pub fn block_stop_notices() {
    let _ = stop_notice().thread_block();
}

fn stop_notice() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set
}

/// Sleep until some tracee stops (or any child changes state), for at most `max`, and at
/// most a millisecond so that a notice taken by a thread that does not block SIGCHLD costs
/// a millisecond, not the whole deadline. Waiting asleep matters: the tick thread runs at
/// real-time priority, and polling there takes a CPU from the very threads it waits for.
pub fn sleep_until_a_stop(max: Duration) {
    let max = max.min(Duration::from_millis(1));
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: max.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid signal set and timespec; the siginfo pointer may be null.
    unsafe {
        libc::sigtimedwait(stop_notice().as_ref(), std::ptr::null_mut(), &timeout);
    }
}

/// If `tid` is in its ptrace stop: read its registers, run `while_stopped`, detach it, push
/// the result and return true. False while it has not stopped yet. A thread whose detach
/// fails (killed meanwhile) goes to `dying`, to have its exit collected.
fn read_if_stopped<T>(
    tid: i32,
    while_stopped: &mut impl FnMut(i32, &Regs) -> T,
    results: &mut Vec<Stopped<T>>,
    dying: &mut Vec<i32>,
) -> bool {
    let pid = Pid::from_raw(tid);
    let signal = match wait_for_stop_now(pid) {
        Ok(Some(sig)) => sig,
        Ok(None) => return false,
        Err(e) => {
            results.push((tid, Err(e)));
            return true;
        }
    };
    let read = ptrace::getregs(pid).map(|u| {
        let regs = Regs::from_user_regs(&u);
        let extra = while_stopped(tid, &regs);
        (regs, extra)
    });
    // A signal that arrived while the thread was ours is handed back on detach.
    if ptrace::detach(pid, signal).is_err() {
        dying.push(tid);
    }
    results.push((tid, read.map_err(errno_error)));
    true
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.collect_late(Instant::now() + Duration::from_secs(1), |_, _| ());
        // Whatever is left is detached by the kernel when parprof exits.
    }
}

impl StopError {
    fn busy_or_permission(tid: i32) -> StopError {
        // EPERM means either "already traced" or "not allowed"; TracerPid tells which.
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
        let traced = status
            .lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .is_some_and(|v| v.trim() != "0");
        if traced {
            StopError::Busy
        } else {
            StopError::Permission
        }
    }
}

/// Seize `tid` and ask it to stop; it stops asynchronously. Once seized it is ours until it
/// stops or its exit is collected, so it is waited for even when the interrupt fails: that
/// happens to a thread already exiting (killed with the rest of its process), which stays
/// a traced zombie, and keeps its whole process from being reaped, until its tracer
/// collects the exit.
fn interrupt(tid: i32) -> Result<(), StopError> {
    let pid = Pid::from_raw(tid);
    ptrace::seize(pid, ptrace::Options::empty()).map_err(|e| match e {
        Errno::EPERM => StopError::busy_or_permission(tid),
        e => errno_error(e),
    })?;
    let _ = ptrace::interrupt(pid);
    Ok(())
}

fn errno_error(e: Errno) -> StopError {
    if e == Errno::ESRCH {
        StopError::Gone
    } else {
        StopError::Other(e)
    }
}

/// `Some(signal to re-inject)` once the thread is in a ptrace stop, `None` if not yet.
fn wait_for_stop_now(pid: Pid) -> Result<Option<Option<Signal>>, StopError> {
    match waitpid(pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Ok(None),
        Ok(WaitStatus::PtraceEvent(..)) => Ok(Some(None)),
        // Our interrupt and group stops come as `PtraceEvent`; `Stopped` is a signal on its
        // way to the thread, which must get it after the detach.
        Ok(WaitStatus::Stopped(_, sig)) => Ok(Some(Some(sig))),
        Ok(WaitStatus::PtraceSyscall(_)) => Ok(Some(None)),
        Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => Err(StopError::Gone),
        Ok(_) => Ok(None),
        Err(Errno::ECHILD) | Err(Errno::ESRCH) => Err(StopError::Gone),
        Err(Errno::EINTR) => Ok(None),
        Err(e) => Err(StopError::Other(e)),
    }
}
