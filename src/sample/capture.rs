//! Capturing one thread: read its state from `/proc` first (never stop a thread to learn
//! it was asleep), then take registers the cheapest way that is exact.

use std::collections::HashMap;

use super::{Fresh, RawSample, SampleData};
use crate::python::{PyStack, PythonReader};
use crate::target::ptrace::{StopError, Tracer};
use crate::target::{proc, ProcessMemory, Regs, SchedStat, StackSnapshot, Syscall, ThreadStat};

/// What a capture of one thread produced, besides the sample itself.
pub enum Capture {
    Sample(RawSample),
    /// The thread is gone; drop it from the bookkeeping.
    Gone,
}

pub struct Sampler {
    pub pid: i32,
    mem: ProcessMemory,
    tracer: Tracer,
    python: Option<PythonReader>,
    stack_bytes: usize,
    threads: HashMap<i32, ThreadMemo>,
    /// Whether any thread could not be stopped for lack of permission (reported once).
    pub permission_denied: bool,
}

struct ThreadMemo {
    sched: SchedStat,
    name: String,
    /// Fresh captures since the name was last read (threads rename themselves).
    since_name: u32,
    /// The futex the thread was blocked on at its last fresh capture.
    futex: Option<u64>,
}

/// Re-read a thread's name after this many fresh captures.
const NAME_REFRESH: u32 = 100;

impl Sampler {
    pub fn new(pid: i32, python: Option<PythonReader>, stack_bytes: usize) -> Self {
        Sampler {
            pid,
            mem: ProcessMemory::new(pid),
            tracer: Tracer::default(),
            python,
            stack_bytes,
            threads: HashMap::new(),
            permission_denied: false,
        }
    }

    /// Capture every current thread of the target. `Err` when the process is gone.
    pub fn tick(&mut self, time_ns: u64) -> std::io::Result<Vec<RawSample>> {
        let tids = proc::threads(self.pid)?;
        // Release threads whose stop came after a capture gave up waiting for it. They are
        // not running, so no later capture would stop them (and settle) again: without this
        // they would stay stopped for the rest of the recording.
        self.tracer.settle();
        if let Some(py) = self.python.as_mut() {
            py.refresh_threads();
        }
        // Every thread's state first, within microseconds and before any thread is stopped:
        // stopping one thread (say, a lock holder) changes what the others do next, and
        // reading them after it would over-count waits.
        let pid = self.pid;
        let now: HashMap<i32, (ThreadStat, Syscall)> = tids
            .iter()
            .filter_map(|&tid| Some((tid, (ThreadStat::read(pid, tid).ok()?, Syscall::read(pid, tid).ok()?))))
            .collect();
        let mut out = Vec::with_capacity(tids.len());
        for &tid in &tids {
            let Some(&state) = now.get(&tid) else { continue };
            if let Capture::Sample(mut s) = self.capture(tid, time_ns, state) {
                s.futex_owner = s.futex_owner.filter(|t| tids.binary_search(t).is_ok());
                out.push(s);
            }
        }
        self.threads.retain(|tid, _| tids.binary_search(tid).is_ok());
        Ok(out)
    }

    fn capture(&mut self, tid: i32, time_ns: u64, state: (ThreadStat, Syscall)) -> Capture {
        let Ok(sched) = SchedStat::read(self.pid, tid) else { return Capture::Gone };
        let (pid, is_new) = (self.pid, !self.threads.contains_key(&tid));
        let memo = self.threads.entry(tid).or_insert_with(|| ThreadMemo { sched, name: String::new(), since_name: NAME_REFRESH, futex: None });
        let prev = (!is_new).then_some(memo.sched);
        memo.sched = sched;
        let (run_ns, cpu_wait_ns) = match prev {
            Some(p) => (sched.run_ns.saturating_sub(p.run_ns), sched.wait_ns.saturating_sub(p.wait_ns)),
            None => (0, 0),
        };
        // Every capture counts, idle ones too: a thread that names itself just after it
        // starts must not keep its inherited name for a whole recording.
        memo.since_name += 1;
        let name = (memo.since_name >= NAME_REFRESH).then(|| {
            memo.since_name = 0;
            let name = proc::thread_name(pid, tid);
            let changed = name != memo.name;
            memo.name = name;
            changed.then(|| memo.name.clone())
        });
        let name = name.flatten();
        if prev.is_some() && run_ns == 0 && sched.timeslices == prev.map_or(0, |p| p.timeslices) {
            let data = SampleData::Unchanged { cpu_wait_ns };
            let futex_owner = memo.futex.and_then(|addr| owner_beside(&self.mem, addr));
            return Capture::Sample(RawSample { tid, time_ns, name, data, futex_owner });
        }
        let mut futex_owner = None;
        let data = match self.fresh(tid, run_ns, cpu_wait_ns, state) {
            Ok(f) => {
                let futex = match f.syscall {
                    Syscall::Blocked { nr: libc::SYS_futex, args, .. } => Some(args[0]),
                    _ => None,
                };
                if let Some(memo) = self.threads.get_mut(&tid) {
                    memo.futex = futex;
                }
                futex_owner = futex.and_then(|a| owner_beside(&self.mem, a));
                SampleData::Fresh(Box::new(f))
            }
            Err(CaptureError::Gone) => return Capture::Gone,
            Err(CaptureError::Lost(why)) => {
                // Forget the thread so the next tick captures it afresh.
                self.threads.remove(&tid);
                SampleData::Lost(why)
            }
        };
        Capture::Sample(RawSample { tid, time_ns, name, data, futex_owner })
    }

    /// `at_tick` is the thread's state read at the start of the tick; it is what the sample
    /// reports, as long as the stack copied now is still the one it describes.
    fn fresh(&mut self, tid: i32, run_ns: u64, cpu_wait_ns: u64, at_tick: (ThreadStat, Syscall)) -> Result<Fresh, CaptureError> {
        let (mut stat, mut syscall) = at_tick;
        if let Some(blocked) = self.blocked(tid, stat, syscall)? {
            let (regs, stack, python) = blocked;
            return Ok(Fresh { os_state: stat.state, syscall, blocked_after_tick: false, run_ns, cpu_wait_ns, regs, stack, python });
        }
        if stat.state != 'R' {
            // It woke up since the tick started: describe it as it is now.
            stat = ThreadStat::read(self.pid, tid).map_err(|_| CaptureError::Gone)?;
            syscall = Syscall::read(self.pid, tid).map_err(|_| CaptureError::Gone)?;
        }
        let (regs, stack, python) = match self.blocked(tid, stat, syscall)? {
            Some(b) => b,
            None => self.stopped(tid)?,
        };
        let blocked_after_tick = stat.state == 'R' && after_syscall_instruction(&self.mem, regs.ip());
        Ok(Fresh { os_state: stat.state, syscall, blocked_after_tick, run_ns, cpu_wait_ns, regs, stack, python })
    }

    /// A thread blocked in the kernel: its user registers are frozen until it returns, so
    /// its stack is copied without stopping it. `None` when it is running, or when it
    /// returned before the copy was complete (the copy would not match the registers).
    fn blocked(&mut self, tid: i32, stat: ThreadStat, syscall: Syscall) -> Result<Option<(Regs, StackSnapshot, Option<PyStack>)>, CaptureError> {
        let (Syscall::Blocked { sp, pc, .. } | Syscall::BlockedNoSyscall { sp, pc }) = syscall else { return Ok(None) };
        if stat.state == 'R' {
            return Ok(None);
        }
        let stack = copy_stack(&self.mem, sp, self.stack_bytes)?;
        if Syscall::read(self.pid, tid).map_err(|_| CaptureError::Gone)? != syscall {
            return Ok(None);
        }
        let python = self.python.as_mut().and_then(|p| p.stack(tid));
        Ok(Some((Regs::from_ip_sp(pc, sp), stack, python)))
    }

    /// Stop a running thread, copy what must be consistent with its registers, release it.
    fn stopped(&mut self, tid: i32) -> Result<(Regs, StackSnapshot, Option<PyStack>), CaptureError> {
        let (mem, bytes) = (self.mem, self.stack_bytes);
        let python = &mut self.python;
        let captured = self.tracer.with_stopped(tid, |regs| {
            let stack = copy_stack(&mem, regs.sp(), bytes);
            (stack, python.as_mut().and_then(|p| p.stack(tid)))
        });
        match captured {
            Ok((regs, (stack, python))) => Ok((regs, stack?, python)),
            Err(StopError::Gone) => Err(CaptureError::Gone),
            Err(StopError::Permission) => {
                self.permission_denied = true;
                Err(CaptureError::Lost("permission denied".into()))
            }
            Err(e) => Err(CaptureError::Lost(e.to_string())),
        }
    }

    pub fn python_version(&self) -> Option<String> {
        self.python.as_ref().map(|p| p.version())
    }
}

enum CaptureError {
    Gone,
    Lost(String),
}

/// Whether `ip` follows a `syscall` instruction (0f 05): a thread stopped there was
/// interrupted inside a system call rather than while running its own code.
fn after_syscall_instruction(mem: &ProcessMemory, ip: u64) -> bool {
    use crate::target::Memory;
    let mut insn = [0u8; 2];
    ip.checked_sub(2).is_some_and(|a| mem.read(a, &mut insn).is_ok()) && insn == [0x0f, 0x05]
}

/// The int at `futex + 8` (glibc `pthread_mutex_t.__owner`), if readable and plausible.
fn owner_beside(mem: &ProcessMemory, futex: u64) -> Option<i32> {
    use crate::target::Memory;
    if futex % 4 != 0 {
        return None;
    }
    mem.read_i32(futex.checked_add(8)?).ok().filter(|&t| t > 0)
}

fn copy_stack(mem: &ProcessMemory, sp: u64, max: usize) -> Result<StackSnapshot, CaptureError> {
    StackSnapshot::capture(mem, sp, max).or_else(|e| match e {
        crate::target::MemError::ProcessGone => Err(CaptureError::Gone),
        // An unreadable stack still gives the leaf frame.
        _ => Ok(StackSnapshot { base: sp, bytes: Vec::new() }),
    })
}
