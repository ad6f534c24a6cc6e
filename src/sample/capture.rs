//! Capturing threads: read each thread's state from `/proc` first (never stop a thread to
//! learn it was asleep), reuse the last sample of a thread that has not run, read blocked
//! threads without stopping them, and stop only the running ones — all together.

use std::collections::HashMap;

use super::{Fresh, RawSample, SampleData};
use crate::python::{PyStack, PythonReader};
use crate::target::ptrace::{StopError, Tracer};
use crate::target::proc::SchedStatFile;
use crate::target::{MemError, ProcessMemory, Regs, SchedStat, StackSnapshot, Syscall, ThreadStat, proc};

pub struct Sampler {
    pub pid: i32,
    mem: ProcessMemory,
    tracer: Tracer,
    python: Option<PythonReader>,
    stack_bytes: usize,
    threads: HashMap<i32, ThreadMemo>,
    /// The thread list and the ticks since it was last read from the task directory.
    tids: Vec<i32>,
    ticks_since_listing: u32,
    /// Whether any thread could not be stopped for lack of permission (reported once).
    pub permission_denied: bool,
}

struct ThreadMemo {
    sched_file: SchedStatFile,
    sched: SchedStat,
    name: String,
    /// Captures since the name was last read (threads rename themselves).
    since_name: u32,
    /// The futex the thread was blocked on at its last fresh capture, if the word beside
    /// it then named a thread (a glibc mutex's owner): re-read while the thread sleeps, as
    /// the owner can change under a waiter.
    owned_futex: Option<u64>,
}

/// Re-read a thread's name after this many fresh captures.
const NAME_REFRESH: u32 = 100;

/// Listing `/proc/<pid>/task` costs a directory walk per thread; it is redone when the
/// process's thread count changes, and at least this often (a thread that started and
/// another that exited between two ticks leave the count unchanged).
const RELIST_TICKS: u32 = 10;

/// A thread that ran since its last sample, read from `/proc` but not yet captured.
struct Ran {
    tid: i32,
    name: Option<String>,
    stat: ThreadStat,
    syscall: Syscall,
    run_ns: u64,
    cpu_wait_ns: u64,
    futex_owner: Option<i32>,
}

impl Sampler {
    pub fn new(pid: i32, python: Option<PythonReader>, stack_bytes: usize) -> Self {
        Sampler {
            pid,
            mem: ProcessMemory::new(pid),
            tracer: Tracer::default(),
            python,
            stack_bytes,
            threads: HashMap::new(),
            tids: Vec::new(),
            ticks_since_listing: 0,
            permission_denied: false,
        }
    }

    /// Capture every current thread of the target. `Err` when the process is gone.
    pub fn tick(&mut self, time_ns: u64) -> std::io::Result<Vec<RawSample>> {
        // A thread that did not stop by the last deadline is in its ptrace stop by now:
        // release it before anything else (it would not look "running" to be stopped again).
        self.tracer.settle();
        let tids = self.thread_list()?;
        if let Some(py) = self.python.as_mut() {
            py.refresh_threads();
        }
        let mut out = Vec::with_capacity(tids.len());
        let mut running = Vec::new();
        for &tid in &tids {
            let Some(ran) = self.triage(tid, time_ns, &mut out) else { continue };
            match ran.syscall {
                // Blocked: user registers are frozen until the syscall returns; no stop.
                Syscall::Blocked { sp, pc, .. } | Syscall::BlockedNoSyscall { sp, pc } if ran.stat.state != 'R' => {
                    let data = match copy_stack(&self.mem, sp, self.stack_bytes) {
                        // It returned before the copy was complete: the copy may not match
                        // the registers, so capture it as a running thread instead.
                        Ok(_) if Syscall::read(self.pid, tid).ok() != Some(ran.syscall) => {
                            running.push(ran);
                            continue;
                        }
                        Ok(stack) => {
                            let python = self.python.as_mut().and_then(|p| p.stack(tid));
                            fresh(&ran, Regs::from_ip_sp(pc, sp), stack, python, false)
                        }
                        Err(e) => self.lost(tid, e),
                    };
                    out.push(RawSample { tid, time_ns, name: ran.name, data, futex_owner: ran.futex_owner });
                }
                _ => running.push(ran),
            }
        }
        self.capture_running(running, time_ns, &mut out);
        // An owner that is not a thread of the target is not an owner (not a mutex).
        for s in &mut out {
            s.futex_owner = s.futex_owner.filter(|t| tids.binary_search(t).is_ok());
        }
        self.threads.retain(|tid, _| tids.binary_search(tid).is_ok());
        // Threads that vanished this tick are dropped from the list until the next listing.
        self.tids.retain(|tid| self.threads.contains_key(tid));
        Ok(out)
    }

    fn thread_list(&mut self) -> std::io::Result<Vec<i32>> {
        let count = ThreadStat::read(self.pid, self.pid)?.num_threads as usize;
        self.ticks_since_listing += 1;
        if count != self.tids.len() || self.ticks_since_listing >= RELIST_TICKS {
            self.tids = proc::threads(self.pid)?;
            self.ticks_since_listing = 0;
        }
        Ok(self.tids.clone())
    }

    /// Read a thread's counters; push an `Unchanged` sample and return `None` when it has
    /// not run since its previous sample, else return what is needed to capture it.
    fn triage(&mut self, tid: i32, time_ns: u64, out: &mut Vec<RawSample>) -> Option<Ran> {
        let pid = self.pid;
        let is_new = !self.threads.contains_key(&tid);
        if is_new {
            let sched_file = SchedStatFile::open(pid, tid).ok()?;
            let sched = sched_file.read().ok()?;
            let memo = ThreadMemo { sched_file, sched, name: String::new(), since_name: NAME_REFRESH, owned_futex: None };
            self.threads.insert(tid, memo);
        }
        let memo = self.threads.get_mut(&tid)?;
        let Ok(sched) = memo.sched_file.read() else {
            self.threads.remove(&tid);
            return None;
        };
        let prev = std::mem::replace(&mut memo.sched, sched);
        let run_ns = sched.run_ns.saturating_sub(prev.run_ns);
        let cpu_wait_ns = sched.wait_ns.saturating_sub(prev.wait_ns);
        memo.since_name += 1;
        let mut name = None;
        if memo.since_name >= NAME_REFRESH {
            memo.since_name = 0;
            let now = proc::thread_name(pid, tid);
            if now != memo.name {
                memo.name = now.clone();
                name = Some(now);
            }
        }
        // Idle captures count too: a thread that names itself right after it starts and
        // then blocks must not keep its inherited name for a whole recording.
        if !is_new && run_ns == 0 && sched.timeslices == prev.timeslices {
            let futex_owner = memo.owned_futex.and_then(|a| owner_beside(&self.mem, a));
            let data = SampleData::Unchanged { cpu_wait_ns };
            out.push(RawSample { tid, time_ns, name, data, futex_owner });
            return None;
        }
        let stat = ThreadStat::read(pid, tid).ok()?;
        let syscall = Syscall::read(pid, tid).ok()?;
        let futex = match syscall {
            Syscall::Blocked { nr: libc::SYS_futex, args, .. } => Some(args[0]),
            _ => None,
        };
        let futex_owner = futex.and_then(|a| owner_beside(&self.mem, a));
        memo.owned_futex = futex.filter(|_| futex_owner.is_some());
        Some(Ran { tid, name, stat, syscall, run_ns, cpu_wait_ns, futex_owner })
    }

    /// Stop the running threads together; copy each one's stack (and Python frames) while
    /// it is stopped, since both change as soon as it runs again.
    fn capture_running(&mut self, running: Vec<Ran>, time_ns: u64, out: &mut Vec<RawSample>) {
        if running.is_empty() {
            return;
        }
        let tids: Vec<i32> = running.iter().map(|r| r.tid).collect();
        let (mem, bytes, python) = (self.mem, self.stack_bytes, &mut self.python);
        let results = self.tracer.with_stopped(&tids, |tid, regs| {
            (copy_stack(&mem, regs.sp(), bytes), python.as_mut().and_then(|p| p.stack(tid)))
        });
        let mut by_tid: HashMap<i32, Ran> = running.into_iter().map(|r| (r.tid, r)).collect();
        for (tid, result) in results {
            let Some(ran) = by_tid.remove(&tid) else { continue };
            let data = match result {
                Ok((regs, (Ok(stack), py))) => {
                    let blocked_after_tick = ran.stat.state == 'R' && after_syscall_instruction(&mem, regs.ip());
                    fresh(&ran, regs, stack, py, blocked_after_tick)
                }
                Ok((_, (Err(e), _))) => self.lost(tid, e),
                Err(StopError::Gone) => {
                    self.threads.remove(&tid);
                    continue;
                }
                Err(e) => {
                    self.permission_denied |= e == StopError::Permission;
                    self.lost(tid, e.to_string())
                }
            };
            out.push(RawSample { tid, time_ns, name: ran.name, data, futex_owner: ran.futex_owner });
        }
    }

    /// A thread that could not be captured: forget it so the next tick starts afresh.
    fn lost(&mut self, tid: i32, why: impl ToString) -> SampleData {
        self.threads.remove(&tid);
        SampleData::Lost(why.to_string())
    }

    pub fn python_version(&self) -> Option<String> {
        self.python.as_ref().map(|p| p.version())
    }
}

/// Whether `ip` follows a `syscall` instruction (0f 05): a thread that was runnable at the
/// tick and is stopped there had blocked in a system call in between.
fn after_syscall_instruction(mem: &ProcessMemory, ip: u64) -> bool {
    use crate::target::Memory;
    let mut insn = [0u8; 2];
    ip.checked_sub(2).is_some_and(|a| mem.read(a, &mut insn).is_ok()) && insn == [0x0f, 0x05]
}

/// The int at `futex + 8`: in a glibc `pthread_mutex_t` that is `__owner`, the tid holding
/// the mutex. Attribution decides whether the futex is a mutex.
fn owner_beside(mem: &ProcessMemory, futex: u64) -> Option<i32> {
    use crate::target::Memory;
    if futex % 4 != 0 {
        return None;
    }
    mem.read_i32(futex.checked_add(8)?).ok().filter(|&t| t > 0)
}

fn fresh(ran: &Ran, regs: Regs, stack: StackSnapshot, python: Option<PyStack>, blocked_after_tick: bool) -> SampleData {
    SampleData::Fresh(Box::new(Fresh {
        os_state: ran.stat.state,
        syscall: ran.syscall,
        blocked_after_tick,
        run_ns: ran.run_ns,
        cpu_wait_ns: ran.cpu_wait_ns,
        regs,
        stack,
        python,
    }))
}

/// Copy a thread's stack from `sp` up. Only a vanished process is an error: an unreadable
/// stack still gives the leaf frame.
fn copy_stack(mem: &ProcessMemory, sp: u64, max: usize) -> Result<StackSnapshot, String> {
    match StackSnapshot::capture(mem, sp, max) {
        Ok(s) => Ok(s),
        Err(MemError::ProcessGone) => Err(MemError::ProcessGone.to_string()),
        Err(_) => Ok(StackSnapshot { base: sp, bytes: Vec::new() }),
    }
}
