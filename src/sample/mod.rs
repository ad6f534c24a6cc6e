//! The tick loop: at every tick, capture every thread of the target — its OS state, the
//! syscall it is blocked in, its registers and a copy of its stack — and hand the raw
//! samples to the processing thread. Nothing slow happens here: no unwinding, no symbols.

mod capture;
mod cpu_samples;
mod in_syscall;
pub mod lock_words;
mod perf;
pub mod priority;
mod processes;
mod switches;
mod ticker;

pub use capture::{SAMPLING_ENV, Sampler};
pub use processes::Processes;
pub use ticker::{Backlog, StopReason, run_ticks};

use crate::process::{Maps, Regs, StackSnapshot, Syscall};
use crate::profile::parallelism::Occupancy;
use crate::python::{GilState, PyStack};
use lock_words::LockWord;

/// How running threads are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Capture {
    /// Sampled by the kernel at the timer interrupt (perf events): never stopped.
    Perf,
    /// Stopped briefly with ptrace at each tick: needs no perf permission.
    Ptrace,
}

impl Capture {
    pub fn name(self) -> &'static str {
        match self {
            Capture::Perf => "perf",
            Capture::Ptrace => "ptrace",
        }
    }
}

/// What every sampler of a recording is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bytes of stack copied per sample (`--stack-bytes`).
    pub stack_bytes: usize,
    pub capture: Capture,
    pub rate_hz: f64,
}

/// When a tick falls, on CLOCK_MONOTONIC, the clock the kernel stamps its samples with.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// The instant the tick was planned for. parprof's tick thread wakes then and takes a
    /// CPU; whatever threads do from then on may be parprof's doing, so the tick describes
    /// this instant, not the later one at which it reads them.
    pub planned_ns: u64,
    /// The recording's time zero.
    pub zero_ns: u64,
}

impl Tick {
    /// A tick now, at time zero (a one-off capture).
    pub fn now() -> Tick {
        let now = perf::monotonic_ns();
        Tick {
            planned_ns: now,
            zero_ns: now,
        }
    }
}

/// One process's samples at one tick. Only threads that changed are in it: a thread of the
/// process that is in none of `samples`, `running` and `gone` is where its previous tick
/// sample left it, with the same stack and state, and its resolver counts it there. So a
/// tick costs the threads that ran, not every thread: a thousand parked threads cost
/// nothing until they wake.
#[derive(Debug)]
pub struct Batch {
    pub pid: i32,
    /// The sampler's tick count (0 for its first batch).
    pub tick: u64,
    /// Nanoseconds since the recording started.
    pub time_ns: u64,
    /// What happened to the process, which its resolver must know before these samples.
    pub event: Option<ProcessEvent>,
    pub samples: Vec<RawSample>,
    /// Threads on a CPU at this tick: the kernel's samples carry their time, and this tick
    /// has no sample of them (or, stopped late with ptrace, has it in a later batch).
    pub running: Vec<i32>,
    /// Threads that ended since the previous tick.
    pub gone: Vec<i32>,
    /// The CPython GILs at this tick, the main interpreter's first.
    pub gils: Vec<GilState>,
    /// The contended locks whose words are watched, and whether each was held at this
    /// tick: how often each is held, waited for or not.
    pub lock_words: Vec<(u64, bool)>,
    /// How many of the process's threads ran at once since the previous batch, from the
    /// kernel's context switches; `None` without them.
    pub occupancy: Option<Occupancy>,
    /// Threads that Python's `threading` named or renamed since the previous batch.
    pub thread_names: Vec<(i32, String)>,
}

impl Batch {
    /// Bytes of stack its samples copied: most of what a batch waiting in the channel holds.
    pub fn stack_bytes(&self) -> usize {
        self.samples
            .iter()
            .map(|s| match &s.data {
                SampleData::Fresh(f) => f.stack.bytes.len(),
                _ => 0,
            })
            .sum()
    }

    /// A followed child's last batch: it exited. Its resolver ends its threads at its
    /// previous batch.
    pub fn exited(pid: i32) -> Batch {
        Batch {
            pid,
            tick: 0,
            time_ns: 0,
            event: Some(ProcessEvent::Exited),
            samples: Vec::new(),
            running: Vec::new(),
            gone: Vec::new(),
            gils: Vec::new(),
            lock_words: Vec::new(),
            occupancy: None,
            thread_names: Vec::new(),
        }
    }
}

/// What a resolver asks of its process's sampler; `Processes` takes the asks at every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Stop this thread for all its registers from now on (see
    /// `Resolver::want_full_registers`).
    FullRegisters(i32),
    /// Read this lock's word in process `pid` at every tick (a lock only the resolver can
    /// identify: see `lock_words`).
    WatchLock { pid: i32, word: LockWord },
    /// Thread `tid` of process `pid` has its stack's top at `top`, below where its stack
    /// copies end: keep no more of them than up to it (see `Resolver::stack_top`).
    StackTop { pid: i32, tid: i32, top: u64 },
}

/// The memory maps come from the sampler, read when it saw the event: the resolver runs
/// behind, and by the time it would read them the process may have exec'd or exited.
#[derive(Debug)]
pub enum ProcessEvent {
    /// Sampling of the process began (its first batch), with its memory map then.
    Started(Maps),
    /// It executed a new program at or before this batch's samples, mapped as given: what
    /// was cached about the old one (symbols and unwind rules by address) no longer holds.
    Exec(Maps),
    /// A followed child exited; this, its last batch, has no samples.
    Exited,
}

/// One thread at one tick, as captured.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub tid: i32,
    /// Nanoseconds since the recording started.
    pub time_ns: u64,
    /// The tick this sample describes the thread at; `None` for a kernel sample of a
    /// running thread, taken between ticks.
    pub tick: Option<u64>,
    /// The thread's name, when first seen or changed.
    pub name: Option<String>,
    pub data: SampleData,
    /// For a thread blocked on a futex: the int 8 bytes past the futex word, read at the
    /// tick, when it is the tid of a thread of the target. In a glibc `pthread_mutex_t`
    /// that is `__owner`, the tid holding the mutex; attribution decides whether it applies.
    pub futex_owner: Option<i32>,
}

#[derive(Debug, Clone)]
pub enum SampleData {
    /// The thread has not run since its previous sample: same stack, same state.
    Unchanged {
        cpu_wait_ns: u64,
    },
    Fresh(Box<Fresh>),
    /// The thread could not be captured this tick (it exited, or could not be stopped).
    Lost(String),
}

#[derive(Debug, Clone)]
pub struct Fresh {
    /// The `/proc/<tid>/stat` state letter.
    pub os_state: char,
    pub syscall: Syscall,
    /// Runnable at the tick but found sitting in a syscall when stopped later: it blocked
    /// in between, so its stack shows where it went, not where it was at the tick.
    pub blocked_after_tick: bool,
    /// Nanoseconds on a CPU and waiting for one since the thread's previous sample.
    pub run_ns: u64,
    pub cpu_wait_ns: u64,
    pub regs: Regs,
    pub stack: StackSnapshot,
    pub python: Option<PyStack>,
    /// The Python frames were read after the registers and stack were taken (a kernel
    /// sample of a running thread): the resolver keeps them only if the native stack
    /// shows the thread was running their innermost frame.
    pub python_read_after: bool,
}
