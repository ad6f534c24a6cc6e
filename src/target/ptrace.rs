//! The one intrusive thing parprof does: stop a running thread for as long as it takes to
//! read its registers. `PTRACE_SEIZE` (no SIGSTOP, invisible to the target's job control),
//! `PTRACE_INTERRUPT`, `PTRACE_GETREGS`, `PTRACE_DETACH` — and on every path, detach.
//!
//! If parprof is killed while a thread is seized, the kernel detaches it and wakes it up
//! (`exit_ptrace`), so a `kill -9` at any moment cannot leave the target stopped.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
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

/// How long to wait for a running thread to reach the interrupt stop. A thread that is
/// running stops within microseconds; one that just went into uninterruptible sleep may
/// not, and is then read from `/proc` instead on the next tick.
const STOP_DEADLINE: Duration = Duration::from_millis(20);

/// Stops threads, reads their registers, and lets them go. Threads are interrupted
/// together and released one by one as soon as their registers and stack are copied, so a
/// tick costs about one scheduling delay, not one per thread. A thread that had not
/// stopped by the deadline is remembered and detached by `Tracer::settle` or on drop.
#[derive(Default)]
pub struct Tracer {
    pending: Vec<i32>,
}

impl Tracer {
    /// Stop every thread of `tids`, and for each, read its registers, run `while_stopped`
    /// (to copy what must be consistent with them: the stack, interpreter frames), then
    /// release it. One result per tid, in the order they stopped.
    pub fn with_stopped<T>(
        &mut self,
        tids: &[i32],
        mut while_stopped: impl FnMut(i32, &Regs) -> T,
    ) -> Vec<(i32, Result<(Regs, T), StopError>)> {
        let mut results = Vec::with_capacity(tids.len());
        let mut waiting = Vec::with_capacity(tids.len());
        for &tid in tids {
            match interrupt(tid) {
                Ok(()) => waiting.push(tid),
                Err(e) => results.push((tid, Err(e))),
            }
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut rounds = 0u32;
        while !waiting.is_empty() {
            waiting.retain(|&tid| {
                let pid = Pid::from_raw(tid);
                let signal = match wait_for_stop_now(pid) {
                    Ok(Some(sig)) => sig,
                    Ok(None) => return true,
                    Err(e) => {
                        results.push((tid, Err(e)));
                        return false;
                    }
                };
                let read = ptrace::getregs(pid).map(|u| {
                    let regs = Regs::from_user_regs(&u);
                    let extra = while_stopped(tid, &regs);
                    (regs, extra)
                });
                // A signal that arrived while the thread was ours is handed back on detach.
                let _ = ptrace::detach(pid, signal);
                results.push((tid, read.map_err(errno_error)));
                false
            });
            if Instant::now() >= deadline {
                for &tid in &waiting {
                    results.push((tid, Err(StopError::Timeout)));
                }
                self.pending.append(&mut waiting);
                break;
            }
            rounds += 1;
            if rounds > 50 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::thread::yield_now();
            }
        }
        results
    }

    /// Detach threads left seized by a timed-out stop, once they have stopped.
    pub fn settle(&mut self) {
        self.pending.retain(|&tid| {
            let pid = Pid::from_raw(tid);
            match wait_for_stop_now(pid) {
                Ok(Some(sig)) => {
                    let _ = ptrace::detach(pid, sig);
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            }
        });
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.settle();
            std::thread::sleep(Duration::from_millis(1));
        }
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
        if traced { StopError::Busy } else { StopError::Permission }
    }
}

/// Seize `tid` and ask it to stop; it stops asynchronously.
fn interrupt(tid: i32) -> Result<(), StopError> {
    let pid = Pid::from_raw(tid);
    ptrace::seize(pid, ptrace::Options::empty()).map_err(|e| match e {
        Errno::EPERM => StopError::busy_or_permission(tid),
        e => errno_error(e),
    })?;
    // This fails only for a thread that is exiting, whose seize the kernel drops.
    ptrace::interrupt(pid).map_err(errno_error)
}

fn errno_error(e: Errno) -> StopError {
    if e == Errno::ESRCH { StopError::Gone } else { StopError::Other(e) }
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
