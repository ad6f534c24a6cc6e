//! The tick loop: at every tick, capture every thread of the target — its OS state, the
//! syscall it is blocked in, its registers and a copy of its stack — and hand the raw
//! samples to the processing thread. Nothing slow happens here: no unwinding, no symbols.

mod capture;
mod ticker;

pub use capture::Sampler;
pub use ticker::{StopReason, run_ticks};

use crate::python::PyStack;
use crate::target::{Regs, StackSnapshot, Syscall};

/// One thread at one tick, as captured.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub tid: i32,
    /// Nanoseconds since the recording started.
    pub time_ns: u64,
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
    Unchanged { cpu_wait_ns: u64 },
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
}
