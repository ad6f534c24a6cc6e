//! CPython reader: finds the interpreter in a target, reads each thread's Python frames from
//! its memory (no ptrace, no GIL, no pause), and splices them into native stacks.
//!
//! Supported: CPython 3.11–3.14, GIL and free-threaded builds, and 3.15 untested. 3.13+
//! describe their own layout (`_Py_DebugOffsets`); 3.11/3.12 use per-version tables (see
//! [`offsets`]).

pub mod detect;
pub mod linetable;
pub mod merge;
pub mod objects;
pub mod offsets;
pub mod strings;
#[cfg(test)]
mod test_image;
pub mod threading;
pub mod walk;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::frame::Frame;
use crate::process::page_cache::Pages;
use crate::process::{Maps, MemError, Memory, ProcessMemory};
pub use merge::{is_eval_frame, merge, python_only};
use offsets::Layout;
use strings::Types;
use threading::ThreadNames;
use walk::{ThreadState, Walker};

/// One thread's Python frames, innermost first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyStack {
    pub frames: Vec<PyFrame>,
    /// The walk stopped early (depth cap, cycle, torn read).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyFrame {
    pub frame: Frame,
    /// This frame is the first one run by its `_PyEval_EvalFrameDefault` call (the frame
    /// above an entry/shim frame): a new native eval-loop frame begins below it.
    pub entry: bool,
    /// Where the bytecode this frame runs lies in the target's memory: the eval loop that
    /// runs it holds a pointer into it (its next instruction) in a register or its stack.
    pub bytecode: std::ops::Range<u64>,
    /// The frame's instruction pointer as read (`instr_ptr`, 3.11/3.12's `prev_instr`).
    pub instr: u64,
}

/// How far past a frame's saved instruction pointer the eval loop's own may be while the
/// instruction runs: the instruction and its inline caches (`LOAD_ATTR`'s nine, the most),
/// in bytes.
const INSTRUCTION_SPAN: u64 = 2 * (1 + 11);

impl PyStack {
    /// Whether a thread was running this stack's innermost frame when its native stack was
    /// taken: `regs` are the innermost eval-loop frame's registers as the unwind recovered
    /// them and `locals` that frame's part of the stack copy. The eval loop keeps a pointer
    /// into the bytecode it runs (its next instruction) in one of them. Frames read after
    /// the native stack (a kernel sample's) fail this when the thread has since called or
    /// returned into other code. A stack without frames passes.
    ///
    /// `called_out`: the native stack shows the eval loop inside a call out of the
    /// interpreter (frames of another module below it, such as an extension's). The frame's
    /// saved instruction pointer then stays put until the call returns. 3.11+ run a
    /// Python-to-Python call in the caller's C frame, and a pointer into the caller's
    /// bytecode, left in its stack slots, let the caller's frames, read after the callee
    /// returned, pass for the callee's in 1.5 % of numpy's BLAS samples. So the pointer
    /// must then be on that very instruction, or in a register (where the eval loop keeps
    /// its own; its slots hold older values). Not otherwise: between the interpreter's own
    /// helpers the thread moves on within the code before the frames are read, and 3.12's
    /// pure-Python samples checked that way lost 6 % more of their frames.
    pub fn innermost_runs_in(
        &self,
        regs: &crate::process::Regs,
        locals: &[u8],
        called_out: bool,
    ) -> bool {
        let Some(inner) = self.frames.first() else {
            return true;
        };
        let at = inner.instr.saturating_sub(2)..=inner.instr.saturating_add(INSTRUCTION_SPAN);
        let on_it = |v: &u64| at.contains(v);
        let in_code = |v: &u64| inner.bytecode.contains(v);
        let mut registers = (0..crate::process::regs::dwarf::COUNT).filter_map(|r| regs.get(r));
        let mut words = locals
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
        match called_out {
            true => registers.any(|v| on_it(&v) || in_code(&v)) || words.any(|v| on_it(&v)),
            false => registers.any(|v| in_code(&v)) || words.any(|v| in_code(&v)),
        }
    }

    /// Mark these frames, a whole thread state's, as run by subinterpreter `id`: a frame
    /// `[interpreter ID]` outside the outermost one, in its eval-loop group.
    fn mark_interpreter(&mut self, id: i64) {
        let Some(outermost) = self.frames.last_mut() else {
            return;
        };
        let entry = std::mem::take(&mut outermost.entry);
        self.frames.push(PyFrame {
            frame: Frame::interpreter(id),
            entry,
            bytecode: 0..0,
            instr: 0,
        });
    }

    /// A stack whose frames could not be trusted: none, marked partial.
    pub fn partial() -> PyStack {
        PyStack {
            frames: Vec::new(),
            truncated: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error("reading the target: {0}")]
    Memory(MemError),
    #[error("CPython {0} is not supported (3.11 to 3.15 are)")]
    Unsupported(String),
    #[error("unexpected interpreter layout: {0}")]
    BadOffsets(&'static str),
    #[error("inconsistent interpreter state (read while it changed): {0}")]
    Torn(&'static str),
    #[error("cannot parse {0}: {1}")]
    Elf(String, String),
}

/// A CPython interpreter found in the target.
pub struct PythonReader {
    mem: Box<dyn Memory + Send>,
    /// Pages of the target read by the current walk (each walk takes a fresh view).
    pages: Pages,
    walker: Walker,
    /// Thread states by OS thread id, as of the last walk of the thread-state lists; a
    /// thread that called from one interpreter into another has one in each, innermost
    /// (newest interpreter) first.
    threads: HashMap<i32, Vec<ThreadState>>,
    /// Interpreters found by the last walk, newest first (the main one last): with more
    /// than one, frames of subinterpreters are marked with their interpreter, and each
    /// may have a GIL of its own.
    interps: Vec<u64>,
    /// Ticks since the thread-state lists were last walked, and whether that was this tick.
    ticks_since_walk: u32,
    walked_this_tick: bool,
    /// `threading`'s names of the threads, and when they are next read.
    names: ThreadNames,
    names_due: Option<Instant>,
}

/// Ticks between walks of the thread-state lists when no thread asks for one sooner. A walk
/// costs three reads of the target per Python thread: with 200 threads at 1000 Hz, every
/// tick, it took more than half a CPU.
const REWALK_TICKS: u32 = 50;

/// Pages of the target one walk keeps (`process::page_cache`): a deep stack's frames and
/// code objects, or a sweep step's 64 `Thread`s and their dicts, for 256 KiB.
const PAGES_PER_WALK: usize = 64;

/// How often `threading`'s names are read while recording, and how much longer per thread
/// named: a read costs about five small reads of the target per thread (10,000 threads:
/// a read every 10 s). The names are read once more at the end.
const NAMES_EVERY: Duration = Duration::from_secs(1);
const NAMES_EVERY_PER_THREAD: Duration = Duration::from_millis(1);
/// `Thread`s read per tick while a sweep of the registry is under way (some 500 small
/// reads).
const NAMES_PER_TICK: usize = 64;

impl PythonReader {
    /// `Ok(None)` when the target is not a CPython process.
    pub fn detect(
        pid: i32,
        maps: &Maps,
        mem: ProcessMemory,
    ) -> anyhow::Result<Option<PythonReader>> {
        let Some(found) = detect::find(pid, maps)? else {
            return Ok(None);
        };
        let version = mem.read_u64(found.py_version).map_err(PyError::Memory)?;
        let reader = PythonReader::new(Box::new(mem), found.runtime, version, found.types)
            .map_err(|e| anyhow::anyhow!("{} in {}: {e}", "CPython", found.module))?;
        Ok(Some(reader))
    }

    /// A reader over any memory: `runtime` is the address of `_PyRuntime`, `py_version` the
    /// value of `Py_Version`, `types` the addresses of the type objects frames are checked
    /// against. Used by [`PythonReader::detect`] and by tests and fuzzing over byte arrays.
    pub fn new(
        mem: Box<dyn Memory + Send>,
        runtime: u64,
        py_version: u64,
        types: Types,
    ) -> Result<PythonReader, PyError> {
        let layout = Layout::read(&*mem, runtime, py_version)?;
        let walker = Walker::new(layout, types, runtime);
        Ok(PythonReader {
            mem,
            pages: Pages::new(PAGES_PER_WALK),
            walker,
            threads: HashMap::new(),
            interps: Vec::new(),
            ticks_since_walk: 0,
            walked_this_tick: false,
            names: ThreadNames::default(),
            names_due: None,
        })
    }

    /// e.g. `3.13.0t` (the `t` marks a free-threaded build).
    pub fn version(&self) -> String {
        let l = &self.walker.layout;
        format!(
            "{}{}",
            l.version.text(),
            if l.free_threaded { "t" } else { "" }
        )
    }

    pub fn free_threaded(&self) -> bool {
        self.walker.layout.free_threaded
    }

    /// A new tick: the thread states are walked again if they never were, or every
    /// `REWALK_TICKS`; in between, a thread not found, or whose thread state no longer
    /// names it, asks for a walk (at most one per tick).
    pub fn refresh_threads(&mut self) {
        self.walked_this_tick = false;
        self.ticks_since_walk += 1;
        if self.threads.is_empty() || self.ticks_since_walk >= REWALK_TICKS {
            self.walk_threads();
        }
    }

    /// Walk the interpreters and their thread states (tid → thread state). A failed walk
    /// (the interpreter not initialised yet, or finalising) leaves no threads.
    fn walk_threads(&mut self) {
        if self.walked_this_tick {
            return;
        }
        self.walked_this_tick = true;
        self.ticks_since_walk = 0;
        self.threads.clear();
        let mem = self.pages.view(&*self.mem);
        if let Ok((threads, interps)) = self.walker.thread_states(&mem) {
            self.interps = interps;
            for t in threads {
                self.threads.entry(t.tid).or_default().push(t);
            }
        }
    }

    /// The Python frames of OS thread `tid`; `None` when it has no Python thread state.
    ///
    /// A thread with thread states in several interpreters (a worker of
    /// `InterpreterPoolExecutor` runs its task in a subinterpreter called from the main
    /// one) runs them nested: each interpreter's frames are read from its own thread state
    /// and stacked, the newest interpreter's innermost, so that each group lands on its own
    /// eval-loop frames when merged. A part read only partly ends the stack there: the
    /// parts outside it could not be placed.
    pub fn stack(&mut self, tid: i32) -> Option<PyStack> {
        let mem = self.pages.view(&*self.mem);
        let current = self.threads.get(&tid).is_some_and(|states| {
            states
                .iter()
                .all(|t| self.walker.names_thread(&mem, t.tstate, tid))
        });
        if !current {
            self.walk_threads();
        }
        let several = self.interps.len() > 1;
        let mut stack = PyStack::default();
        let mem = self.pages.view(&*self.mem);
        for t in self.threads.get(&tid)? {
            let mut part = self.walker.stack(&mem, t.tstate);
            if several && t.interp_id != 0 && !part.truncated {
                part.mark_interpreter(t.interp_id);
            }
            stack.frames.append(&mut part.frames);
            if part.truncated {
                stack.truncated = true;
                break;
            }
        }
        Some(stack)
    }

    /// The threads `threading` named, or renamed, since this was last asked. A sweep of
    /// its registry begins when one is due at `now` (see `NAMES_EVERY`) and is read
    /// `NAMES_PER_TICK` threads a tick, so that a pool of thousands does not hold up one.
    pub fn renamed_threads(&mut self, now: Instant) -> Vec<(i32, String)> {
        if self.interps.is_empty() {
            return Vec::new();
        }
        let (mem, w) = (self.pages.view(&*self.mem), &self.walker);
        if !self.names.sweeping() {
            if self.names_due.is_some_and(|due| now < due) {
                return Vec::new();
            }
            let per_thread = NAMES_EVERY_PER_THREAD * self.names.all().count() as u32;
            self.names_due = Some(now + NAMES_EVERY.max(per_thread));
            let oldest_first: Vec<u64> = self.interps.iter().rev().copied().collect();
            if !self.names.start(&mem, &w.layout, &w.types, &oldest_first) {
                return Vec::new();
            }
        }
        self.names.step(&mem, &w.layout, &w.types, NAMES_PER_TICK)
    }

    /// Every thread's `threading` name, read now (threads that ended keep the name last
    /// read).
    pub fn thread_names_now(&mut self) -> Vec<(i32, String)> {
        if self.interps.is_empty() {
            self.walk_threads();
        }
        let oldest_first: Vec<u64> = self.interps.iter().rev().copied().collect();
        let w = &self.walker;
        self.names.refresh(
            &self.pages.view(&*self.mem),
            &w.layout,
            &w.types,
            &oldest_first,
        );
        self.names
            .all()
            .map(|(tid, name)| (tid, name.to_string()))
            .collect()
    }

    /// Every GIL in use now, the main interpreter's first (isolated subinterpreters, 3.12+,
    /// have their own): where each is and which thread holds it (on builds that have one
    /// enabled). Read once per tick, so every waiter of that tick is given the same holder.
    pub fn gils(&mut self) -> Vec<GilState> {
        let size = GIL_SIZE + if self.free_threaded() { 8 } else { 0 };
        let mut gils: Vec<GilState> = Vec::new();
        let mut holders = Vec::new();
        let mem = self.pages.view(&*self.mem);
        // Oldest first, so a GIL shared with the main interpreter is the main one's.
        for &interp in self.interps.iter().rev() {
            let Some(address) = self.walker.gil_address(&mem, interp) else {
                continue;
            };
            if gils.iter().any(|g| g.address == address) {
                continue;
            }
            let interp_id = match gils.is_empty() {
                true => 0,
                false => mem
                    .read_u64(interp.wrapping_add(self.walker.layout.interp_id))
                    .map_or(-1, |id| id as i64),
            };
            holders.push(self.walker.gil_holder_tstate(&mem, address));
            gils.push(GilState {
                address,
                size,
                holder: None,
                interp_id,
            });
        }
        for (gil, tstate) in gils.iter_mut().zip(holders) {
            gil.holder = tstate.and_then(|ts| self.thread_of(ts));
        }
        gils
    }

    /// The OS thread running thread state `tstate`, walking the lists again (once per
    /// tick) for one born since the last walk.
    fn thread_of(&mut self, tstate: u64) -> Option<i32> {
        let find = |threads: &HashMap<i32, Vec<ThreadState>>| {
            threads
                .values()
                .flatten()
                .find(|t| t.tstate == tstate)
                .map(|t| t.tid)
        };
        find(&self.threads).or_else(|| {
            self.walk_threads();
            find(&self.threads)
        })
    }
}

impl GilState {
    pub fn contains(&self, address: u64) -> bool {
        address >= self.address && address - self.address < self.size
    }
}

/// `sizeof(struct _gil_runtime_state)` on x86_64, 3.11–3.14 default builds: interval,
/// last_holder, locked, switch_number (32 bytes), then cond (48), mutex (40), switch_cond
/// (48) and switch_mutex (40). Free-threaded builds add an `enabled` int in front.
const GIL_SIZE: u64 = 208;

/// A GIL at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilState {
    /// The GIL structure: the identity of every GIL wait, whichever of its condition
    /// variables or mutex the waiter sleeps on.
    pub address: u64,
    /// Its size: a futex wait inside it is a GIL wait, symbols or not.
    pub size: u64,
    /// The OS thread holding it.
    pub holder: Option<i32>,
    /// The interpreter whose GIL it is (`Interpreter.id`): 0 for the main interpreter's,
    /// which subinterpreters without a GIL of their own share.
    pub interp_id: i64,
}

/// The subinterpreter whose own GIL is at `address` among a tick's `gils` (`None` for the
/// main interpreter's, and for any other address).
pub fn own_gil(gils: &[GilState], address: u64) -> Option<i64> {
    gils.iter()
        .find(|g| g.address == address && g.interp_id != 0)
        .map(|g| g.interp_id)
}

/// The GIL a wait on the futex word `word` is for, among a tick's `gils` (the main
/// interpreter's first): the one whose structure holds the word, else the main one (a wait
/// told by its `take_gil` frame, its word not read).
pub fn gil_for(gils: &[GilState], word: u64) -> Option<GilState> {
    gils.iter()
        .find(|g| g.contains(word))
        .or(gils.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Regs;
    use crate::process::regs::dwarf;

    /// A stack whose innermost frame runs bytecode 0x1000..0x1100, at instruction 0x1040.
    fn at_0x1040() -> PyStack {
        PyStack {
            frames: vec![PyFrame {
                frame: Frame::truncated(),
                entry: true,
                bytecode: 0x1000..0x1100,
                instr: 0x1040,
            }],
            truncated: false,
        }
    }

    fn holding(pointer: u64) -> Regs {
        let mut regs = Regs::default();
        regs.set(dwarf::RBX, pointer);
        regs
    }

    #[test]
    fn called_out_the_eval_loop_must_be_on_the_frames_instruction_or_hold_it_in_a_register() {
        let stack = at_0x1040();
        let in_slot = |pointer: u64| pointer.to_le_bytes();
        let none = Regs::default();
        // Its next instruction, past the call's inline caches.
        assert!(stack.innermost_runs_in(&none, &in_slot(0x1048), true));
        assert!(stack.innermost_runs_in(&holding(0x1044), &[], true));
        // Elsewhere in the same code: in a register, the eval loop's own; in a stack slot,
        // maybe a caller's instruction left there.
        assert!(stack.innermost_runs_in(&holding(0x1080), &[], true));
        assert!(!stack.innermost_runs_in(&none, &in_slot(0x1010), true));
        assert!(!stack.innermost_runs_in(&none, &in_slot(0x1080), true));
        // In the interpreter's own code, the thread may have moved on within the code.
        assert!(stack.innermost_runs_in(&none, &in_slot(0x1080), false));
        assert!(!stack.innermost_runs_in(&holding(0x2000), &in_slot(0x2000), false));
    }
}
