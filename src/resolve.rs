//! The processing side of recording: raw samples in, profile counts out. Unwinds each
//! captured stack, symbolises it (cached per address), merges Python frames, classifies
//! the sample and adds it to the profile. Runs on its own thread so the tick stays on time.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crossbeam_channel::Sender;
use foldhash::fast::RandomState as FastHash;

use crate::attribution::locks::{LockBook, Observed};
use crate::attribution::{self, Attribution, ThreadFacts};
use crate::frame::Frame;
use crate::process::memory::Layered;
use crate::process::{Maps, ProcessMemory, Regs, Syscall};
use crate::profile::{Profile, StackId, State};
use crate::python;
use crate::python::{GilState, gil_for};
use crate::sample::lock_words::LockWord;
use crate::sample::{Ask, Batch, Fresh, RawSample, SampleData};
use crate::symbols::Symbolizer;
use crate::unwind::Unwinder;

/// The modules loaded so far — unwind tables and symbols — shared by the resolvers of every
/// process of a recording. They are keyed by file and by where it is mapped, not by address
/// alone, so they hold across an exec, and across processes: a forked child maps its
/// parent's libc, and loading libc's DWARF again took a second or two per process.
#[derive(Default)]
pub struct Modules {
    unwinder: Unwinder,
    symbolizer: Symbolizer,
}

/// Resolvers run on one thread; each holds a handle on the recording's modules.
pub type SharedModules = Rc<RefCell<Modules>>;

/// A thread's last sample.
struct Last {
    stack: StackId,
    attribution: Attribution,
    /// The tick its last tick sample describes, while it has not run since; `None` once it
    /// has (a kernel sample, or a tick that found it on a CPU).
    parked_at: Option<u64>,
}

/// Native stack walks: how many there were, how many reached the outermost frame, and how
/// many found a return address by scanning the stack (code without CFI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    pub all: u64,
    pub complete: u64,
    pub scanned: u64,
}

impl WalkStats {
    fn add(&mut self, walk: &crate::unwind::Unwound) {
        self.all += 1;
        self.complete += walk.complete as u64;
        self.scanned += !walk.scanned.is_empty() as u64;
    }

    pub fn merge(&mut self, other: WalkStats) {
        self.all += other.all;
        self.complete += other.complete;
        self.scanned += other.scanned;
    }
}

pub struct Resolver {
    pid: i32,
    maps: Maps,
    mem: ProcessMemory,
    modules: SharedModules,
    symbol_cache: HashMap<(u64, bool), Vec<Frame>, FastHash>,
    /// Each thread's last sample, for ticks where it did not run.
    last: HashMap<i32, Last>,
    /// Threads whose last sample waits for a lock: counted at every tick, so that each
    /// tick's lock waits and holders are complete.
    lock_waiters: HashSet<i32>,
    /// The latest batch's tick and time.
    tick: u64,
    time_ns: u64,
    locks: LockBook,
    /// How the native stack walks went (for the summary).
    pub walks: WalkStats,
    pub include_native: bool,
    /// Asks the sampler to stop blocked threads for all their registers (see
    /// `native_frames`), each once, and to watch the words of locks it cannot identify
    /// itself, each once.
    sampler: Option<Sender<Ask>>,
    asked_full_regs: HashSet<i32>,
    watched: HashSet<u64>,
    /// Threads whose stack's top has been looked for (`stack_top`).
    asked_stack_top: HashSet<i32>,
    /// The symbol-cache keys of the pcs that the last sample's native walk found by
    /// scanning the stack, root first: named only when asked (`dump --json`).
    scanned: Vec<(u64, bool)>,
}

impl Resolver {
    pub fn new(pid: i32, include_native: bool) -> Self {
        Resolver::with_maps(
            pid,
            Maps::read(pid).unwrap_or_default(),
            include_native,
            SharedModules::default(),
        )
    }

    /// A resolver for `pid`, whose memory map was read as `maps`, loading modules into
    /// `modules` (shared with the other processes' resolvers).
    pub fn with_maps(pid: i32, maps: Maps, include_native: bool, modules: SharedModules) -> Self {
        Resolver {
            pid,
            maps,
            mem: ProcessMemory::new(pid),
            modules,
            symbol_cache: HashMap::default(),
            last: HashMap::new(),
            lock_waiters: HashSet::new(),
            tick: 0,
            time_ns: 0,
            locks: LockBook::new(),
            walks: WalkStats::default(),
            include_native,
            sampler: None,
            asked_full_regs: HashSet::new(),
            watched: HashSet::new(),
            asked_stack_top: HashSet::new(),
            scanned: Vec::new(),
        }
    }

    /// The samples from now on are of the program mapped as `maps` (the process executed a
    /// new program): what was known by address of the old one no longer holds — its
    /// memory map, the symbols cached by pc, where its locks and globals were. (Modules
    /// stay: another file mapped at the same place is another module.) Threads' last
    /// stacks stay too: a thread that has not run since is still where it was.
    pub fn program_mapped(&mut self, maps: Maps) {
        self.maps = maps;
        self.symbol_cache.clear();
        self.locks = LockBook::new();
        self.asked_full_regs.clear();
        self.watched.clear();
        self.asked_stack_top.clear();
    }

    /// Where to ask the sampler for blocked threads to be stopped rather than read from
    /// `/proc`, and for lock words to be read at every tick.
    pub fn ask_sampler_on(&mut self, tx: Sender<Ask>) {
        self.sampler = Some(tx);
    }

    /// Add one tick's batch to the profile. A thread not in it is where its last tick
    /// sample left it (see `Batch`): that sample is counted again, in bulk, when the thread
    /// next changes or at the end (`finish`), except a lock waiter's, counted every tick.
    pub fn add_tick(&mut self, batch: &Batch, profile: &mut Profile) {
        for &tid in &batch.gone {
            self.fold(tid, batch.tick, Some(self.time_ns), profile);
            self.last.remove(&tid);
            self.lock_waiters.remove(&tid);
        }
        (self.tick, self.time_ns) = (batch.tick, batch.time_ns);
        let mut observed: Vec<Observed> = batch
            .samples
            .iter()
            .filter_map(|s| self.add(s, &batch.gils, profile))
            .collect();
        for &tid in &batch.running {
            self.fold(tid, batch.tick, None, profile);
            if let Some(l) = self.last.get_mut(&tid) {
                l.parked_at = None;
            }
            self.lock_waiters.remove(&tid);
        }
        let present: HashSet<i32> = batch.samples.iter().map(|s| s.tid).collect();
        let mut waiting: Vec<i32> = self
            .lock_waiters
            .iter()
            .filter(|t| !present.contains(t))
            .copied()
            .collect();
        waiting.sort_unstable();
        for tid in waiting {
            let still = RawSample {
                tid,
                time_ns: batch.time_ns,
                tick: Some(batch.tick),
                name: None,
                data: SampleData::Unchanged { cpu_wait_ns: 0 },
                futex_owner: None,
            };
            observed.extend(self.add(&still, &batch.gils, profile));
        }
        // A holder with no sample at this tick is where it last was, unless it ran since
        // (it is on a CPU, its stack unknown).
        let last = &self.last;
        let absent = |tid: i32| {
            last.get(&tid)
                .filter(|l| l.parked_at.is_some())
                .map(|l| (l.attribution.state, l.stack))
        };
        self.locks
            .record_tick(&self.maps, profile, &observed, &batch.gils, &absent);
        self.locks
            .record_held(profile, &batch.lock_words, &batch.gils, &observed);
    }

    /// Count every thread that has not run since its last tick sample as there until the
    /// latest batch: at the end of the recording (or of the process), and before `top`
    /// shows the profile. Later batches go on from there.
    pub fn catch_up(&mut self, profile: &mut Profile) {
        let mut tids: Vec<i32> = self.last.keys().copied().collect();
        tids.sort_unstable();
        for tid in tids {
            self.fold(tid, self.tick + 1, Some(self.time_ns), profile);
        }
    }

    /// Count `tid`'s last tick sample again for every tick after it and before `tick`, at
    /// which it did not run. With `mark`, the repeats get a timeline entry there (the end
    /// of the thread's last stretch); otherwise the thread's next entry ends the stretch.
    fn fold(&mut self, tid: i32, tick: u64, mark: Option<u64>, profile: &mut Profile) {
        let Some(l) = self.last.get_mut(&tid) else {
            return;
        };
        let Some(from) = l.parked_at else {
            return;
        };
        let n = tick.saturating_sub(from + 1);
        if n == 0 {
            return;
        }
        l.parked_at = Some(tick - 1);
        match mark {
            Some(time_ns) => profile.add(tid, l.stack, l.attribution.state, time_ns, n),
            None => profile.add_untimed(tid, l.stack, l.attribution.state, n),
        }
    }

    fn add(&mut self, s: &RawSample, gils: &[GilState], profile: &mut Profile) -> Option<Observed> {
        if let Some(tick) = s.tick {
            self.fold(s.tid, tick, None, profile);
        }
        let (stack, attribution) = match &s.data {
            SampleData::Fresh(f) => {
                let (frames, attribution) = self.resolve(s, f, gils);
                if frames
                    .first()
                    .is_some_and(|f| f.kind == crate::frame::FrameKind::Truncated)
                {
                    self.want_full_registers(s.tid, f);
                }
                (profile.intern_stack(&frames), attribution)
            }
            SampleData::Unchanged { cpu_wait_ns } => {
                let l = self.last.get(&s.tid)?;
                let (stack, mut a) = (l.stack, l.attribution);
                if *cpu_wait_ns > 0 && a.state == State::Compute {
                    a.state = State::CpuWait;
                }
                if let Some(w) = a.waiting_on.as_mut() {
                    w.set_holder(s.futex_owner, gil_for(gils, w.address));
                }
                (stack, a)
            }
            SampleData::Lost(_) => {
                let a = Attribution {
                    state: State::Other,
                    waiting_on: None,
                };
                (profile.intern_stack(&[Frame::truncated()]), a)
            }
        };
        self.last.insert(
            s.tid,
            Last {
                stack,
                attribution,
                parked_at: s.tick,
            },
        );
        if s.tick.is_some() && attribution.state == State::Lock {
            self.lock_waiters.insert(s.tid);
        } else {
            self.lock_waiters.remove(&s.tid);
        }
        profile.add(s.tid, stack, attribution.state, s.time_ns, 1);
        Some(Observed {
            tid: s.tid,
            stack,
            attribution,
        })
    }

    /// The stack (root first) and classification of one fresh sample.
    pub fn resolve(
        &mut self,
        s: &RawSample,
        f: &Fresh,
        gils: &[GilState],
    ) -> (Vec<Frame>, Attribution) {
        let frames = self.frames(s.tid, f);
        // A GIL wait's futex word says which interpreter's GIL it waits for.
        let word = match f.syscall {
            Syscall::Blocked { args, .. } => args[0],
            _ => 0,
        };
        let facts = ThreadFacts {
            os_state: f.os_state,
            syscall: f.syscall,
            blocked_after_tick: f.blocked_after_tick,
            run_ns: f.run_ns,
            cpu_wait_ns: f.cpu_wait_ns,
            futex_owner: s.futex_owner,
            gil: gil_for(gils, word),
        };
        let mut attribution = attribution::classify(&facts, &frames);
        let word = attribution.waiting_on.as_mut().and_then(|w| {
            let stack = Layered {
                stack: &f.stack,
                rest: &self.mem,
            };
            let kind = w.identify(&frames, &stack)?;
            Some(LockWord {
                address: w.address,
                kind,
            })
        });
        if let Some(word) = word {
            self.watch_lock(word);
        }
        (frames, attribution)
    }

    /// A thread blocked in a futex is read from `/proc` with only its stack and instruction
    /// pointers. Code that keeps its frame in `rbp` (Rust's std, frame-pointer builds) needs
    /// `rbp` to be unwound past, so such a walk stops early. From then on the sampler stops
    /// that thread for all its registers; a futex wait restarts transparently after the
    /// stop (unlike, say, `epoll_wait`, which would see EINTR — so only futex waits).
    fn want_full_registers(&mut self, tid: i32, f: &Fresh) {
        let futex = f.syscall.number() == Some(libc::SYS_futex);
        if futex
            && f.regs.bp().is_none()
            && self.asked_full_regs.insert(tid)
            && let Some(tx) = &self.sampler
        {
            let _ = tx.send(Ask::FullRegisters(tid));
        }
    }

    /// The kernel copies a sample's stack from its stack pointer up until a page faults,
    /// and a thread whose stack has a readable mapping above it (glibc's first thread
    /// stack often does) has 63 KiB copied at every sample, of which its frames use a few:
    /// one of two busy C threads copied 63 KiB for 4.4 KiB of stack. When a complete walk's
    /// outermost frame lies in the mapping that holds the stack pointer and the copy runs
    /// past that mapping's end, the end is the thread's stack's top: the sampler is told
    /// to keep no more than that of its copies. Looked for once per thread whose copy runs
    /// `WASTED_COPY` past its outermost frame, in the memory map read afresh then (the one
    /// kept may predate the thread's stack).
    fn stack_top(&mut self, tid: i32, f: &Fresh, walk: &crate::unwind::Unwound) {
        const WASTED_COPY: u64 = 8192;
        let (sp, copy_end) = (f.stack.base, f.stack.base + f.stack.bytes.len() as u64);
        let outermost_sp = walk.regs.last().map_or(sp, Regs::sp);
        if !walk.complete
            || copy_end.saturating_sub(outermost_sp) < WASTED_COPY
            || !self.asked_stack_top.insert(tid)
        {
            return;
        }
        let Some(tx) = &self.sampler else {
            return;
        };
        if let Ok(maps) = Maps::read(self.pid)
            && let Some(m) = maps.find(sp)
            && m.contains(outermost_sp)
            && m.end < copy_end
        {
            let _ = tx.send(Ask::StackTop {
                pid: self.pid,
                tid,
                top: m.end,
            });
        }
    }

    /// Have the sampler read `word` at every tick, for the lock's held share.
    fn watch_lock(&mut self, word: LockWord) {
        if self.watched.insert(word.address)
            && let Some(tx) = &self.sampler
        {
            let _ = tx.send(Ask::WatchLock {
                pid: self.pid,
                word,
            });
        }
    }

    /// Labels of the frames that the last resolved sample's walk found by scanning, root
    /// first.
    pub fn scanned_frames(&self) -> Vec<String> {
        self.scanned
            .iter()
            .flat_map(|key| &self.symbol_cache[key])
            .map(Frame::label)
            .collect()
    }

    /// The target's memory map as last read (for naming addresses).
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The sample's stack, root first.
    fn frames(&mut self, tid: i32, f: &Fresh) -> Vec<Frame> {
        self.scanned.clear();
        let (native, eval) = if self.include_native || f.python.is_some() {
            self.native_frames(tid, f)
        } else {
            (Vec::new(), None)
        };
        let partial;
        let python = match &f.python {
            Some(py) if f.python_read_after && !runs_in(py, f, eval.as_ref()) => {
                partial = python::PyStack::partial();
                Some(&partial)
            }
            py => py.as_ref(),
        };
        match python {
            Some(py) if self.include_native => python::merge(native, py),
            Some(py) => python::python_only(py),
            None => native,
        }
    }

    /// The native frames of a sample, root first, and the registers of its innermost
    /// CPython eval-loop frame with that frame's stack range, if it has one.
    fn native_frames(&mut self, tid: i32, f: &Fresh) -> (Vec<Frame>, Option<EvalFrame>) {
        let mem = Layered {
            stack: &f.stack,
            rest: &self.mem,
        };
        let mut modules = self.modules.borrow_mut();
        let mut walk = modules.unwinder.unwind(&self.maps, &f.regs, &mem);
        let stale = |maps: &Maps, pc: u64| maps.find(pc).is_none_or(|m| !m.executable);
        if walk
            .pcs
            .iter()
            .chain(&walk.unmapped)
            .any(|&pc| stale(&self.maps, pc))
        {
            // A module loaded since the maps were read (dlopen), or a new program (a
            // child's exec) whose code lies where the old map has none, or data: read
            // them again, once.
            if let Ok(m) = Maps::read(self.pid) {
                self.maps = m;
                walk = modules.unwinder.unwind(&self.maps, &f.regs, &mem);
            }
        }
        self.walks.add(&walk);
        let mut frames = Vec::with_capacity(walk.pcs.len() + 1);
        if !walk.complete {
            frames.push(Frame::truncated());
        }
        for (i, &pc) in walk.pcs.iter().enumerate().rev() {
            let key = (pc, i > 0);
            if !self.symbol_cache.contains_key(&key) {
                let resolved = modules
                    .symbolizer
                    .symbolize(&self.maps, &self.mem, pc, i > 0);
                self.symbol_cache.insert(key, resolved);
            }
            if walk.scanned.contains(&i) {
                self.scanned.push(key);
            }
            frames.extend(self.symbol_cache[&key].iter().cloned());
        }
        let eval = f.python.as_ref().and_then(|_| {
            let frames_at = |i: usize| &self.symbol_cache[&(walk.pcs[i], i > 0)];
            let (i, eval) = (0..walk.pcs.len())
                .find_map(|i| Some((i, frames_at(i).iter().find(|f| python::is_eval_frame(f))?)))?;
            let regs = walk.regs[i].clone();
            let end = walk.regs.get(i + 1).map_or(regs.sp(), |r| r.sp());
            Some(EvalFrame {
                stack: regs.sp()..end,
                regs,
                called_out: (0..i).any(|j| frames_at(j).iter().any(|f| f.module != eval.module)),
            })
        });
        drop(modules);
        self.stack_top(tid, f, &walk);
        (frames, eval)
    }
}

/// The innermost eval-loop frame of a native stack: its registers and its stack range.
struct EvalFrame {
    regs: Regs,
    stack: std::ops::Range<u64>,
    /// Frames of another module lie below it: it had called out of the interpreter.
    called_out: bool,
}

/// Whether Python frames read after `f`'s native stack belong to it (see
/// `PyStack::innermost_runs_in`); without an eval-loop frame to check against, they do not.
fn runs_in(py: &python::PyStack, f: &Fresh, eval: Option<&EvalFrame>) -> bool {
    let Some(eval) = eval else {
        return py.frames.is_empty();
    };
    let copy = f.stack.base..f.stack.base + f.stack.bytes.len() as u64;
    let from = eval.stack.start.clamp(copy.start, copy.end);
    let to = eval.stack.end.clamp(from, copy.end);
    let locals = &f.stack.bytes[(from - copy.start) as usize..(to - copy.start) as usize];
    py.innermost_runs_in(&eval.regs, locals, eval.called_out)
}
