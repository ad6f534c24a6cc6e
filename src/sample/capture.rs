//! Capturing threads: learn which threads ran since the last tick (from the kernel's
//! context-switch records, or by polling each thread's schedstat where those are not
//! permitted), reuse the last sample of a thread that has not run, read blocked threads
//! from `/proc` without stopping them, and stop only the running ones — all together.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::cpu_samples::{CpuSamples, KernelSample};
use super::in_syscall;
use super::lock_words::{LockWord, LockWords, WordKind};
use super::perf::PerfError;
use super::switches::{Activity, SwitchLog};
use super::{Batch, Capture, Fresh, ProcessEvent, RawSample, SampleData, Settings, Tick};
use crate::process::exec::{ExecWatch, ProcessNow};
use crate::process::proc::ThreadFile;
use crate::process::ptrace::{STOP_DEADLINE, StopError, Tracer};
use crate::process::{
    Maps, MemError, NamedStat, ProcessMemory, Regs, SchedStat, StackSnapshot, Syscall, ThreadStat,
    proc,
};
use crate::python::{PyStack, PythonReader};

pub struct Sampler {
    pub pid: i32,
    mem: ProcessMemory,
    tracer: Tracer,
    python: Option<PythonReader>,
    /// Where each stack is read before the used part is kept; its size is `--stack-bytes`.
    scratch: Vec<u8>,
    threads: HashMap<i32, ThreadMemo>,
    /// Running threads that had not stopped by the deadline, with the ticks they missed.
    late: HashMap<i32, (Ran, Vec<At>)>,
    /// Samples of late threads captured between ticks, sent with the next tick's.
    late_samples: Vec<RawSample>,
    /// Futex waiters to stop for all their registers rather than read from `/proc`, as
    /// asked by the resolver (`Resolver::ask_full_registers_on`).
    full_regs: HashSet<i32>,
    /// Tells when the process executes a new program or ends; `None` if it could not be
    /// opened: the process was already gone, and the first tick says so.
    exec_watch: Option<ExecWatch>,
    /// The memory map given at the start, until the first batch carries it.
    first_maps: Option<Maps>,
    /// The thread list (sorted) and the ticks since it was last read from the task directory.
    tids: Vec<i32>,
    ticks_since_listing: u32,
    /// Context-switch records, when permitted; `None` means schedstat polling.
    switches: Option<SwitchLog>,
    /// What the stat files said, when the switch log last listed the threads, of those
    /// asleep then: a capture takes state and name from it (two files fewer a thread when
    /// attaching to thousands) while the records say the thread stayed idle; cleared once
    /// a tick's records have been read after the listing.
    asleep_at_listing: HashMap<i32, NamedStat>,
    last_tick_ns: u64,
    /// Running threads sampled by the kernel (`--capture perf`); `None`: stopped with ptrace.
    kernel: Option<CpuSamples>,
    /// CLOCK_MONOTONIC at the recording's time zero, which kernel samples are stamped with.
    clock_zero_ns: Option<u64>,
    /// Threads whose perf events could not be opened for want of descriptors: captured
    /// with ptrace stops, as without kernel sampling.
    unwatchable: HashSet<i32>,
    /// Words of contended locks, read at every tick: glibc mutexes a thread was seen
    /// waiting on (the `__owner` beside the futex word named a thread of the target), and
    /// the locks the resolver asks for (`watch_lock`).
    lock_words: LockWords,
    /// The open-file limit, for the message when it is reached.
    file_limit: u64,
    /// Names of threads read while they were on a CPU, for their next kernel sample.
    unsent_names: HashMap<i32, String>,
    /// Each kernel-sampled thread's registers when it last left its CPU.
    switched_out: HashMap<i32, KernelSample>,
    /// Where each kernel-sampled thread's stack copies end for good (its stack's end, where
    /// reading on from a copy found nothing): not read on from again.
    stack_ends: HashMap<i32, u64>,
    /// Stack copy sizes to ask of threads' timer events, set between ticks
    /// (`resize_stack_copies`).
    copy_sizes: HashMap<i32, usize>,
    /// Ticks taken so far.
    ticks: u64,
    /// Threads looked at every tick, whatever the switch records say (`attend_if_needed`).
    attend: HashSet<i32>,
    /// Look at every thread at the next tick (the first, and after an exec).
    visit_all: bool,
    /// Threads found gone since the last batch, for the next one.
    departed: Vec<i32>,
    /// Whether any thread could not be stopped for lack of permission (reported once).
    pub permission_denied: bool,
}

/// The tick a sample describes: its number and its time since the recording started.
#[derive(Debug, Clone, Copy)]
struct At {
    tick: u64,
    time_ns: u64,
}

/// Where each thread visited at a tick went.
#[derive(Default)]
struct Visited {
    /// Its sample.
    samples: Vec<RawSample>,
    /// To be stopped with ptrace.
    running: Vec<Ran>,
    /// On a CPU: the kernel's samples carry it (see `Batch::running`).
    on_cpu: Vec<i32>,
    gone: Vec<i32>,
}

/// One tick's capture, before the batch is made.
struct Captured {
    at: At,
    samples: Vec<RawSample>,
    on_cpu: Vec<i32>,
    gils: Vec<crate::python::GilState>,
    lock_words: Vec<(u64, bool)>,
}

struct ThreadMemo {
    sched_file: ThreadFile,
    sched: SchedStat,
    /// Read each time the thread ran (kept open once it proves busy); `stat` only when
    /// it was not running.
    syscall_file: ThreadFile,
    stat_file: ThreadFile,
    name: String,
    /// Captures since the name was last read (threads rename themselves).
    since_name: u32,
    /// Ticks left in which the name is read whatever the thread does: threads are often
    /// named right after they start (by themselves or their creator), often after the
    /// first capture, and may then block for good.
    young: u8,
    /// The futex the thread was blocked on at its last fresh capture, if the word beside
    /// it then named a thread (a glibc mutex's owner): re-read while the thread sleeps, as
    /// the owner can change under a waiter.
    owned_futex: Option<u64>,
    /// Runnable (state R) when last captured. Such a thread cannot block without running,
    /// so until it runs again it is waiting for a CPU — which no switch record tells.
    runnable: bool,
}

/// Descriptors kept free of perf events, for the files read as needed and those kept open
/// for busy threads (`proc::ThreadFile`).
const FILES_KEPT_FREE: usize = proc::MAX_KEPT + 64;

/// Re-read a thread's name after this many captures.
const NAME_REFRESH: u32 = 100;

/// Ticks after a thread is first seen in which its name is read every tick.
const YOUNG_TICKS: u8 = 10;

/// When polling: listing `/proc/<pid>/task` costs a directory walk per thread; it is redone
/// when the process's thread count changes, and at least this often (a thread that started
/// and another that exited between two ticks leave the count unchanged).
const RELIST_TICKS: u32 = 10;

/// Set to `poll` to sample by polling every thread's schedstat even where context-switch
/// records are available (to compare the two).
pub const SAMPLING_ENV: &str = "PARPROF_SAMPLING";

impl ThreadMemo {
    /// A thread seen for the first time (see `Sampler::memo`); `None` if it is gone.
    fn open(pid: i32, tid: i32, keep_open: bool, born: bool) -> Option<ThreadMemo> {
        let mut sched_file = ThreadFile::open(pid, tid, "schedstat", keep_open).ok()?;
        let sched = sched_file.sched_stat().ok()?;
        Some(ThreadMemo {
            sched_file,
            sched,
            syscall_file: ThreadFile::open(pid, tid, "syscall", false).ok()?,
            stat_file: ThreadFile::open(pid, tid, "stat", false).ok()?,
            name: String::new(),
            since_name: NAME_REFRESH,
            young: if born { YOUNG_TICKS } else { 0 },
            runnable: false,
            owned_futex: None,
        })
    }

    /// The thread's name if it changed: read on its 1st, 2nd, 4th and 8th tick, then every
    /// `NAME_REFRESH` captures in which it ran; `known` when the caller has just read it.
    /// (Every one of its first ten ticks cost a pool of 200 new threads 2,000 reads.)
    fn name_change(
        &mut self,
        pid: i32,
        tid: i32,
        ran: bool,
        known: Option<String>,
    ) -> Option<String> {
        if self.young > 0 {
            self.young -= 1;
            let age = YOUNG_TICKS - self.young;
            if known.is_none() && !age.is_power_of_two() {
                return None;
            }
        } else {
            self.since_name += ran as u32;
            if self.since_name < NAME_REFRESH {
                return None;
            }
        }
        self.since_name = 0;
        let now = known.unwrap_or_else(|| proc::thread_name(pid, tid));
        (now != self.name && !now.is_empty()).then(|| {
            self.name = now.clone();
            now
        })
    }
}

/// A thread that ran since its last sample, read from `/proc` but not yet captured.
struct Ran {
    tid: i32,
    name: Option<String>,
    /// The scheduler state letter from `/proc` (R, S, D...).
    state: char,
    syscall: Syscall,
    run_ns: u64,
    cpu_wait_ns: u64,
    futex_owner: Option<i32>,
}

impl Ran {
    /// Its sample at tick `at`, captured as `data`.
    fn into_sample(self, at: At, data: SampleData) -> RawSample {
        RawSample {
            tid: self.tid,
            time_ns: at.time_ns,
            tick: Some(at.tick),
            name: self.name,
            data,
            futex_owner: self.futex_owner,
        }
    }
}

/// What is copied while a thread is stopped: its stack, and its Python frames.
type Copied = (Result<StackSnapshot, String>, Option<PyStack>);

/// What the tick knows of a thread before reading its counters.
#[derive(Clone, Copy)]
enum Hint {
    /// No switch records this tick: read the counters to find out.
    Unknown,
    /// The switch records say it ran.
    Ran,
    /// The switch records say it neither ran nor was woken.
    Idle,
}

impl Sampler {
    /// A sampler for `pid`, whose memory map is `maps` now (its first batch carries them to
    /// the resolver), reading its CPython frames if it runs CPython, capturing running
    /// threads as `settings` ask when permitted. Opens the context-switch rings unless
    /// `PARPROF_SAMPLING=poll`; what cannot be opened is said once on stderr, with the
    /// fallback taken. Raises parprof's open-file limit (not a command's: it starts before
    /// the sampler).
    pub fn new(pid: i32, maps: Maps, settings: Settings) -> Self {
        let Settings {
            stack_bytes,
            capture,
            rate_hz,
        } = settings;
        let file_limit = proc::allow_a_file_per_thread();
        // Said once, though every followed process has a sampler of its own.
        static SAID: std::sync::Once = std::sync::Once::new();
        let mut switches = if std::env::var(SAMPLING_ENV).is_ok_and(|v| v == "poll") {
            None
        } else {
            SwitchLog::open(pid)
                .inspect_err(|e| {
                    SAID.call_once(|| eprintln!("parprof: {e}; polling every thread's schedstat instead (costlier with many threads)"))
                })
                .ok()
        };
        let python = find_python(pid, &maps);
        // The kernel's samples say nothing of threads off a CPU: the switch records must
        // tell which threads were on one at each tick.
        let kernel = match (capture, &switches) {
            (Capture::Ptrace, _) => None,
            (Capture::Perf, None) => {
                say_ptrace_fallback("context-switch records are not available");
                None
            }
            (Capture::Perf, Some(_)) => {
                CpuSamples::open(pid, rate_hz, stack_bytes, python.is_some())
                    .inspect_err(|e| say_ptrace_fallback(&e.to_string()))
                    .ok()
            }
        };
        // Listed after the rings are open, so a thread created meanwhile is in the list or
        // in a fork record, never in neither.
        let tids = proc::threads(pid).unwrap_or_default();
        let asleep_at_listing = switches
            .as_mut()
            .map(|s| s.reset_threads(&tids))
            .unwrap_or_default();
        Sampler {
            pid,
            mem: ProcessMemory::new(pid),
            tracer: Tracer::default(),
            python,
            scratch: vec![0; stack_bytes],
            threads: HashMap::new(),
            late: HashMap::new(),
            late_samples: Vec::new(),
            full_regs: HashSet::new(),
            exec_watch: ExecWatch::open(pid).ok(),
            first_maps: Some(maps),
            tids,
            ticks_since_listing: 0,
            switches,
            asleep_at_listing,
            last_tick_ns: 0,
            kernel,
            clock_zero_ns: None,
            unwatchable: HashSet::new(),
            lock_words: LockWords::default(),
            file_limit,
            unsent_names: HashMap::new(),
            switched_out: HashMap::new(),
            stack_ends: HashMap::new(),
            copy_sizes: HashMap::new(),
            ticks: 0,
            attend: HashSet::new(),
            visit_all: true,
            departed: Vec::new(),
            permission_denied: false,
        }
    }

    /// Kernel samples dropped because a ring was full (the rings every process shares).
    pub fn kernel_lost(&self) -> u64 {
        self.kernel.as_ref().map_or(0, CpuSamples::lost)
    }

    /// How this sampler captures running threads.
    pub fn capture_kind(&self) -> Capture {
        if self.kernel.is_some() {
            Capture::Perf
        } else {
            Capture::Ptrace
        }
    }

    /// Stop `tid` for all its registers from now on, as the resolver asks (see
    /// `Resolver::ask_full_registers_on`). False when it is not a thread of this process.
    /// Once its kernel events are open, a blocked thread's registers are those it left its
    /// CPU with: there is nothing to stop it for.
    pub fn want_full_registers(&mut self, tid: i32) -> bool {
        let ours = self.tids.binary_search(&tid).is_ok();
        if ours && !self.kernel.as_ref().is_some_and(|k| k.watching(tid)) {
            self.full_regs.insert(tid);
        }
        ours
    }

    /// Read `word` at every tick from now on, as the resolver asks (a lock it identified).
    pub fn watch_lock(&mut self, word: LockWord) {
        self.lock_words.watch(word);
    }

    /// Keep no more of `tid`'s kernel stack copies than up to `top`, its stack's top, as
    /// the resolver found it (see `Resolver::stack_top`), nor read on from them beyond it.
    pub fn stack_top(&mut self, tid: i32, top: u64) {
        if let Some(k) = self.kernel.as_mut()
            && k.watching(tid)
        {
            k.trim_stacks_at(tid, top);
        }
    }

    /// Capture every current thread of the target. `Err` when the process is gone.
    pub fn tick(&mut self, tick: Tick) -> std::io::Result<Batch> {
        let Captured {
            at,
            mut samples,
            on_cpu,
            gils,
            lock_words,
        } = self.capture(tick)?;
        // Checked after the capture: an exec during it flags these samples, so none taken
        // after an exec is resolved against the old program.
        let event = match self
            .exec_watch
            .as_mut()
            .map_or(ProcessNow::Ended, ExecWatch::check)
        {
            ProcessNow::Ended => return Err(std::io::ErrorKind::NotFound.into()),
            ProcessNow::Exec => Some(ProcessEvent::Exec(self.program_replaced(&mut samples))),
            ProcessNow::Same => self.first_maps.take().map(ProcessEvent::Started),
        };
        // After the capture, which must be near the tick's instant; due about once a second.
        let thread_names = self
            .python
            .as_mut()
            .map(|p| p.renamed_threads(Instant::now()))
            .unwrap_or_default();
        Ok(Batch {
            pid: self.pid,
            tick: at.tick,
            time_ns: at.time_ns,
            event,
            samples,
            running: on_cpu,
            gone: std::mem::take(&mut self.departed),
            gils,
            lock_words,
            occupancy: self.switches.as_mut().map(SwitchLog::take_occupancy),
            thread_names,
        })
    }

    /// The process executed a new program: every thread is captured afresh from now on,
    /// and CPython is looked for again (the program may have become, or stopped being,
    /// Python). This tick's Python stacks were read through the old reader: dropped.
    /// Returns the new program's memory map.
    fn program_replaced(&mut self, samples: &mut [RawSample]) -> Maps {
        self.first_maps = None;
        self.threads.clear();
        self.full_regs.clear();
        self.visit_all = true;
        if let Some(k) = self.kernel.as_mut() {
            // The exec'ing thread's events survive; the others' threads are gone. Every
            // thread is watched afresh at the next tick.
            k.unwatch_all();
        }
        self.switched_out.clear();
        self.stack_ends.clear();
        self.copy_sizes.clear();
        self.unwatchable.clear();
        self.lock_words.clear();
        if let Ok(tids) = proc::threads(self.pid) {
            if let Some(s) = self.switches.as_mut() {
                self.asleep_at_listing = s.reset_threads(&tids);
            }
            let old = std::mem::replace(&mut self.tids, tids);
            self.departed_from(&old);
        }
        let maps = Maps::read(self.pid).unwrap_or_default();
        self.python = find_python(self.pid, &maps);
        // Python reached through an exec (a shell, pyenv's shim): its threads' Python
        // frames are read as their kernel samples come, as for a Python target at attach.
        if let (Some(k), Some(_)) = (self.kernel.as_mut(), &self.python)
            && let Err(e) = k.wake_on_each()
        {
            eprintln!("parprof: {e}; Python frames of running threads are read at ticks only");
        }
        for s in samples {
            if let SampleData::Fresh(f) = &mut s.data {
                f.python = None;
            }
        }
        maps
    }

    fn capture(&mut self, tick: Tick) -> std::io::Result<Captured> {
        let zero = *self.clock_zero_ns.get_or_insert(tick.zero_ns);
        let time_ns = tick.planned_ns.saturating_sub(zero).max(self.last_tick_ns);
        let at = At {
            tick: self.ticks,
            time_ns,
        };
        self.ticks += 1;
        // First, as near the tick's instant as can be: a lock held for 200 µs changes hands
        // while parprof reads its threads, and parprof on a CPU delays its next taker.
        let lock_words = self.lock_words.read(&self.mem);
        // Threads that missed a stop deadline are captured and released first, whatever
        // else happens: one left stopped while holding a lock would freeze every waiter.
        let mut out = std::mem::take(&mut self.late_samples);
        out.extend(self.collect_late(Instant::now()));
        let interval_ns = time_ns.saturating_sub(self.last_tick_ns).max(1);
        self.last_tick_ns = time_ns;
        let activity = self
            .switches
            .as_mut()
            .map(|s| s.drain(zero + time_ns))
            .filter(|a| !a.lost);
        match &activity {
            Some(a) => self.apply_births(a)?,
            None => self.thread_list()?,
        }
        // Every thread when the records cannot say which changed; else the few they name.
        let visit = match &activity {
            Some(a) if !std::mem::take(&mut self.visit_all) => self.to_visit(a),
            _ => self.tids.clone(),
        };
        if let Some(py) = self.python.as_mut() {
            py.refresh_threads();
        }
        let gils = self
            .python
            .as_mut()
            .map(PythonReader::gils)
            .unwrap_or_default();
        out.reserve(visit.len());
        // First, so that a thread's tick sample below follows its kernel samples.
        self.kernel_samples(&mut out);
        let first_tick_sample = out.len();
        let mut v = Visited {
            samples: out,
            ..Visited::default()
        };
        for &tid in &visit {
            self.visit(tid, at, interval_ns, &activity, &mut v);
        }
        // True only up to the first drain after the listing, which this tick's was.
        self.asleep_at_listing.clear();
        let Visited {
            samples: mut out,
            running,
            mut on_cpu,
            mut gone,
        } = v;
        self.capture_running(running, at, &mut out, &mut gone);
        // A thread stopped late gives this tick's sample when it stops, in a later batch:
        // until then its resolver must not count its last one for it.
        on_cpu.extend(self.late.keys());
        for &tid in &visit {
            self.attend_if_needed(tid);
        }
        for tid in gone {
            self.forget(tid);
        }
        if self.kernel.is_some() {
            let on_cpu_at = activity.as_ref().map(|a| &a.on_cpu_at);
            self.drop_ran_after_the_tick(
                &mut out,
                first_tick_sample,
                zero + time_ns,
                on_cpu_at,
                &mut on_cpu,
            );
        }
        // An owner that is not a thread of the target is not an owner (not a mutex).
        for s in &mut out {
            s.futex_owner = s.futex_owner.filter(|t| self.tids.binary_search(t).is_ok());
            let word = match &s.data {
                SampleData::Fresh(f) if s.futex_owner.is_some() => f.syscall.arg0(),
                _ => None,
            };
            if let Some(address) = word {
                self.lock_words.watch(LockWord {
                    address,
                    kind: WordKind::Futex,
                });
            }
        }
        Ok(Captured {
            at,
            samples: out,
            on_cpu,
            gils,
            lock_words,
        })
    }

    /// Open what is kept of `tid` when it is first seen; false if it is gone. Its schedstat
    /// file stays open only when every thread is read every tick (polling), and a thread
    /// found after the first tick is young (about to be named, often).
    fn has_memo(&mut self, tid: i32) -> bool {
        if self.threads.contains_key(&tid) {
            return true;
        }
        let (keep_open, born) = (self.switches.is_none(), self.ticks > 1);
        ThreadMemo::open(self.pid, tid, keep_open, born)
            .map(|m| self.threads.insert(tid, m))
            .is_some()
    }

    /// A thread the kernel's samples carry at this tick: its name, if just read, waits for
    /// its next sample.
    fn on_cpu_without_a_sample(&mut self, ran: Ran, on_cpu: &mut Vec<i32>) {
        if let Some(name) = ran.name {
            self.unsent_names.insert(ran.tid, name);
        }
        on_cpu.push(ran.tid);
    }

    /// With switch records, the threads to look at this tick: those that ran or were woken,
    /// those born, and those watched every tick (`attend_if_needed`). The others have not
    /// run since their last sample, which stands for them (see `Batch`).
    fn to_visit(&self, a: &Activity) -> Vec<i32> {
        let mut visit: Vec<i32> = a
            .ran
            .iter()
            .chain(a.woken_waiting.keys())
            .chain(&a.born)
            .chain(&self.attend)
            .chain(self.late.keys())
            .copied()
            .filter(|t| self.tids.binary_search(t).is_ok())
            .collect();
        visit.sort_unstable();
        visit.dedup();
        visit
    }

    /// Threads looked at every tick whatever the switch records say: one seen runnable
    /// (it waits for a CPU, which no record tells), a mutex waiter (its owner can change
    /// under it), one born during the recording in its first ticks (it is often named just
    /// then, by itself or its creator), and one not captured yet. Threads found at attach
    /// are not young: a pool of ten thousand would cost ten reads each.
    fn attend_if_needed(&mut self, tid: i32) {
        let needed = self.tids.binary_search(&tid).is_ok()
            && self
                .threads
                .get(&tid)
                .is_none_or(|m| m.runnable || m.owned_futex.is_some() || m.young > 0);
        if needed {
            self.attend.insert(tid);
        } else {
            self.attend.remove(&tid);
        }
    }

    /// Capture one thread at this tick, into `v`.
    fn visit(
        &mut self,
        tid: i32,
        at: At,
        interval_ns: u64,
        activity: &Option<Activity>,
        v: &mut Visited,
    ) {
        let Visited {
            samples: out,
            running,
            on_cpu,
            gone,
        } = v;
        if let Some((_, ticks)) = self.late.get_mut(&tid) {
            // Seized and still not scheduled: it has not run, so this tick's sample is the
            // one it will give when it stops.
            ticks.push(at);
            return;
        }
        let ran = activity.as_ref().is_none_or(|a| a.ran.contains(&tid));
        match self.on_cpu_and_kernel_sampled(tid, ran) {
            Some(true) => {
                on_cpu.push(tid);
                return;
            }
            Some(false) => {}
            None => {
                gone.push(tid);
                return;
            }
        }
        let hint = match (activity, self.threads.get_mut(&tid)) {
            (Some(a), Some(memo)) if !memo.runnable && !a.ran.contains(&tid) => {
                let cpu_wait_ns = a.woken_waiting.get(&tid).copied().unwrap_or(0);
                out.extend(unchanged(self.pid, &self.mem, tid, memo, at, cpu_wait_ns));
                return;
            }
            (Some(a), _) if a.ran.contains(&tid) => Hint::Ran,
            (Some(a), _) if !a.woken_waiting.contains_key(&tid) => Hint::Idle,
            _ => Hint::Unknown,
        };
        let mut ran = match self.triage(tid, hint, at, interval_ns, out) {
            Triage::Unchanged => return,
            Triage::Gone => {
                gone.push(tid);
                return;
            }
            Triage::Ran(ran) => ran,
        };
        let futex_waiter = ran.syscall.number() == Some(libc::SYS_futex);
        let watched = self.kernel.as_ref().is_some_and(|k| k.watching(tid));
        // Found runnable before it was watched: watched from now on, and until its first
        // kernel samples it is counted as running (or stopped, past the descriptor limit).
        let kernel = watched || ran.state == 'R' && self.kernel_watch(tid) == Some(true);
        if kernel && !watched && ran.syscall == Syscall::Running {
            self.on_cpu_without_a_sample(ran, on_cpu);
            return;
        }
        // Where it left its CPU: it has not run since, or the switch records (and the
        // kernel's samples) would have it on a CPU.
        let left_cpu = self.switched_out.get(&tid).map(|k| k.regs.clone());
        match ran.syscall {
            // Blocked: user registers are frozen until the syscall returns; no stop.
            // Kernel-sampled, a runnable thread still in its syscall is read the same
            // way: it is off its CPU (the switch records say so), waiting for one.
            Syscall::Blocked { sp, pc, .. } | Syscall::BlockedNoSyscall { sp, pc }
                if (ran.state != 'R' || kernel)
                    && !(futex_waiter && self.full_regs.contains(&tid)) =>
            {
                if ran.state == 'R' {
                    ran.run_ns = 0;
                    ran.cpu_wait_ns = ran.cpu_wait_ns.max(1);
                }
                // All its registers if it left its CPU entering this syscall.
                let regs = left_cpu
                    .filter(|r| (r.ip(), r.sp()) == (pc, sp))
                    .unwrap_or_else(|| Regs::from_ip_sp(pc, sp));
                let data = match copy_stack(&self.mem, sp, &mut self.scratch) {
                    // It returned before the copy was complete: the copy may not match
                    // the registers, so capture it as a running thread instead (the
                    // kernel's samples do that when they are on).
                    Ok(_) if self.syscall_now(tid) != Some(ran.syscall) => {
                        if kernel {
                            self.on_cpu_without_a_sample(ran, on_cpu);
                        } else {
                            running.push(ran);
                        }
                        return;
                    }
                    Ok(stack) => {
                        let python = self.python.as_mut().and_then(|p| p.stack(tid));
                        fresh(&ran, regs, stack, python, false)
                    }
                    Err(e) => self.lost(tid, e),
                };
                out.push(ran.into_sample(at, data));
            }
            // Runnable in user code but off its CPU: preempted, waiting for a CPU, with
            // the registers it left its CPU with.
            Syscall::Running if kernel => {
                ran.run_ns = 0;
                ran.cpu_wait_ns = ran.cpu_wait_ns.max(interval_ns);
                // It left its CPU asleep in a futex wait and is runnable now: woken (say, by
                // an unlock), still inside the wait until it runs again. The futex names
                // what it waits for, as for a thread blocked there.
                let woken = left_cpu
                    .as_ref()
                    .and_then(|regs| in_syscall::futex_wait_left_in(&self.mem, regs));
                if let Some(syscall) = woken {
                    ran.futex_owner = syscall.arg0().and_then(|a| owner_beside(&self.mem, a));
                    ran.syscall = syscall;
                }
                let data = left_cpu
                    .and_then(|regs| self.read_preempted(&ran, regs))
                    .unwrap_or(SampleData::Unchanged {
                        cpu_wait_ns: ran.cpu_wait_ns,
                    });
                out.push(ran.into_sample(at, data));
            }
            // A futex waiter whose frames need all its registers (the resolver asked),
            // or any running thread when the kernel does not sample: stopped.
            _ => running.push(ran),
        }
    }

    /// With kernel sampling: tell whether `tid` is on a CPU at this tick, so that the
    /// kernel's samples stand for it (its name is kept for the next one), watching it first
    /// if it `ran` and is not watched yet. `Some(false)` without kernel sampling; `None`
    /// when the thread is gone.
    fn on_cpu_and_kernel_sampled(&mut self, tid: i32, ran: bool) -> Option<bool> {
        let Some(k) = self.kernel.as_ref() else {
            return Some(false);
        };
        let watched = k.watching(tid) || ran && self.kernel_watch(tid)?;
        if !watched {
            return Some(false);
        }
        if !self.switches.as_ref().is_some_and(|s| s.on_cpu(tid)) {
            return Some(false);
        }
        if !self.has_memo(tid) {
            return None;
        }
        let memo = self.threads.get_mut(&tid)?;
        if let Some(name) = memo.name_change(self.pid, tid, true, None) {
            self.unsent_names.insert(tid, name);
        }
        Some(true)
    }

    /// Open `tid`'s kernel events: whether it is watched now (`None`: it is gone). A thread
    /// is watched once it is seen to run, not before: a parked thread is read from `/proc`
    /// and costs no descriptor, and a pool of ten thousand attaches in the time of the
    /// few that run. Past the open-file limit, threads are stopped with ptrace instead.
    fn kernel_watch(&mut self, tid: i32) -> Option<bool> {
        let k = self.kernel.as_mut()?;
        if self.unwatchable.contains(&tid) {
            return Some(false);
        }
        // Descriptors are left for the files read transiently (schedstat, stat, maps).
        let room = (k.descriptors_with_one_more() + FILES_KEPT_FREE) as u64 <= self.file_limit;
        let out_of_files = !room
            || match k.watch(tid) {
                Ok(()) => false,
                Err(PerfError::Open(e))
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
                {
                    true
                }
                Err(_) => return None,
            };
        if out_of_files {
            say_out_of_descriptors(self.file_limit);
            self.unwatchable.insert(tid);
            return Some(false);
        }
        // Its switch-outs carry all its registers from now on.
        self.full_regs.remove(&tid);
        Some(true)
    }

    /// A Python target's kernel-sampled threads are read as their samples come, between
    /// ticks (`take_kernel_samples`), so that the Python frames read after each sample are
    /// those it was running: the descriptors to wait on for that. None otherwise.
    pub fn wake_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        match (&self.kernel, &self.python) {
            (Some(k), Some(_)) => k.poll_fds().collect(),
            _ => Vec::new(),
        }
    }

    /// Between ticks: the kernel's samples so far, for the next tick's batch.
    pub fn take_kernel_samples(&mut self) {
        let mut got = std::mem::take(&mut self.late_samples);
        self.kernel_samples(&mut got);
        self.late_samples = got;
    }

    /// The kernel's samples since they were last taken, as samples of running threads.
    /// Their Python frames are read now, after the sample; the resolver checks them against
    /// the sample's native stack (`PyStack::innermost_runs_in`).
    fn kernel_samples(&mut self, out: &mut Vec<RawSample>) {
        let Some(k) = self.kernel.as_mut() else {
            return;
        };
        // Set at the first tick, before any sample is taken.
        let zero = self.clock_zero_ns.unwrap_or(0);
        let (mut got, mut left) = (Vec::new(), Vec::new());
        let complete = k.drain(&mut got, &mut left);
        let period_ns = k.period_ns();
        if !complete {
            self.switched_out.clear();
        }
        for l in left {
            latest(&mut self.switched_out, l);
        }
        let want = k.stack_bytes();
        // Python frames first, all of them: a running thread's innermost frame changes
        // within microseconds, its stack's outer part (what `read_on` reads) seldom.
        let pythons: Vec<Option<crate::python::PyStack>> = got
            .iter()
            .map(|ks| self.python.as_mut().and_then(|p| p.stack(ks.tid)))
            .collect();
        for (mut ks, python) in got.into_iter().zip(pythons) {
            self.fit_copy_size(&ks);
            self.read_on(&mut ks, want);
            out.push(RawSample {
                tid: ks.tid,
                time_ns: ks.time_ns.saturating_sub(zero),
                tick: None,
                name: self.unsent_names.remove(&ks.tid),
                data: SampleData::Fresh(Box::new(Fresh {
                    os_state: 'R',
                    syscall: Syscall::Running,
                    blocked_after_tick: false,
                    run_ns: period_ns,
                    cpu_wait_ns: 0,
                    regs: ks.regs,
                    stack: ks.stack,
                    python,
                    python_read_after: true,
                })),
                futex_owner: None,
            });
        }
    }

    /// Size the stack copies of a thread whose stack's top is known (`below_top`): twice
    /// what this sample needed, at least `MIN_COPY`, once its top is learnt, and twice again
    /// whenever a sample needs more than its copy holds (read on from at once: see
    /// `read_on`). Applied between ticks (`resize_stack_copies`), away from the instants
    /// the tick reads threads at.
    fn fit_copy_size(&mut self, ks: &KernelSample) {
        const MIN_COPY: u64 = 8192;
        let (Some(k), Some(need)) = (self.kernel.as_ref(), ks.below_top.map(|b| b as u64)) else {
            return;
        };
        let (size, most) = (k.copy_size(ks.tid) as u64, k.stack_bytes() as u64);
        if size == most && need < most / 2 || need > size && size < most {
            let fit = (2 * need).max(MIN_COPY).next_multiple_of(4096).min(most);
            self.copy_sizes.insert(ks.tid, fit as usize);
        }
    }

    /// Open again, with the sizes `fit_copy_size` chose, the timer events of the threads it
    /// resized. Called between ticks.
    pub fn resize_stack_copies(&mut self) {
        let Some(k) = self.kernel.as_mut() else {
            return;
        };
        for (tid, bytes) in self.copy_sizes.drain() {
            // Refused (the thread is gone, descriptors ran out): its copies stay as they are.
            let _ = k.copy_stack_bytes(tid, bytes);
        }
    }

    /// A kernel sample's stack copy cut short of `want` bytes before its stack's end (a
    /// page its thread never touched), read on from the thread now, before the thread gets
    /// far: see `StackSnapshot::read_on`.
    fn read_on(&mut self, ks: &mut KernelSample, want: usize) {
        let end = ks.stack.base + ks.stack.bytes.len() as u64;
        let want = ks.below_top.map_or(want, |b| want.min(b));
        if ks.stack.bytes.len() < want
            && self.stack_ends.get(&ks.tid) != Some(&end)
            && ks.stack.read_on(&self.mem, want) == 0
        {
            self.stack_ends.insert(ks.tid, end);
        }
    }

    /// The tick describes the instant it was planned for (`Tick::planned_ns`, here on the
    /// kernel's clock), before parprof woke and took a CPU; it reads threads 50-500 µs
    /// later. A thread that ran after that instant — it left its CPU later, or has a kernel
    /// sample stamped later — was running at it, and its time there is in the kernel's
    /// samples: often it blocked only because parprof's own wake-up preempted the holder
    /// of the lock it went for. Its tick sample describes parprof, not the program, and is
    /// dropped. Reading every thread as found instead overstated a 1 % lock share as
    /// 6-11 %. Switch-outs are taken now, and timer samples kept for the next batch.
    fn drop_ran_after_the_tick(
        &mut self,
        out: &mut Vec<RawSample>,
        from: usize,
        tick_ns: u64,
        on_cpu_at: Option<&HashSet<i32>>,
        on_cpu: &mut Vec<i32>,
    ) {
        self.take_kernel_samples();
        let zero = self.clock_zero_ns.unwrap_or(0);
        let sampled_after: HashSet<i32> = out[..from]
            .iter()
            .filter(|s| zero + s.time_ns > tick_ns)
            .map(|s| s.tid)
            .collect();
        let (left, names) = (&self.switched_out, &mut self.unsent_names);
        let mut i = 0;
        out.retain_mut(|s| {
            i += 1;
            let keep = i <= from
                || match on_cpu_at {
                    Some(at) => !at.contains(&s.tid),
                    None => {
                        !sampled_after.contains(&s.tid)
                            && left.get(&s.tid).is_none_or(|k| k.time_ns <= tick_ns)
                    }
                };
            if !keep {
                on_cpu.push(s.tid);
                if let Some(name) = s.name.take() {
                    names.insert(s.tid, name);
                }
            }
            keep
        });
    }

    /// What `tid` does in the kernel now, read through its kept file.
    fn syscall_now(&mut self, tid: i32) -> Option<Syscall> {
        self.threads.get_mut(&tid)?.syscall_file.syscall().ok()
    }

    /// A preempted thread's stack from the registers it left its CPU with, if it did not
    /// run again while the stack was copied (its run time says).
    fn read_preempted(&mut self, ran: &Ran, regs: Regs) -> Option<SampleData> {
        let stack = copy_stack(&self.mem, regs.sp(), &mut self.scratch).ok()?;
        let memo = self.threads.get_mut(&ran.tid)?;
        if memo.sched_file.sched_stat().ok()?.run_ns != memo.sched.run_ns {
            return None;
        }
        let python = self.python.as_mut().and_then(|p| p.stack(ran.tid));
        Some(fresh(ran, regs, stack, python, false))
    }

    /// With switch records: the thread list follows their births and exits.
    fn apply_births(&mut self, a: &Activity) -> std::io::Result<()> {
        for tid in &a.exited {
            self.forget(*tid);
        }
        for &tid in &a.born {
            if let Err(i) = self.tids.binary_search(&tid) {
                self.tids.insert(i, tid);
            }
        }
        if self.tids.is_empty() {
            // Every thread exited: is the process gone?
            self.tids = proc::threads(self.pid)?;
        }
        Ok(())
    }

    /// Without switch records: the task directory, re-read when the thread count changes.
    fn thread_list(&mut self) -> std::io::Result<()> {
        let count = ThreadStat::read(self.pid, self.pid)?.num_threads as usize;
        self.ticks_since_listing += 1;
        if count != self.tids.len()
            || self.ticks_since_listing >= RELIST_TICKS
            || self.switches.is_some()
        {
            let old = std::mem::replace(&mut self.tids, proc::threads(self.pid)?);
            self.departed_from(&old);
            self.ticks_since_listing = 0;
            let tids = &self.tids;
            self.threads
                .retain(|tid, _| tids.binary_search(tid).is_ok());
            if let Some(s) = self.switches.as_mut() {
                // Records were lost: the list from the switch log may be stale too.
                self.asleep_at_listing = s.reset_threads(&self.tids);
            }
        }
        Ok(())
    }

    /// Threads of `old` no longer listed have ended.
    fn departed_from(&mut self, old: &[i32]) {
        let tids = &self.tids;
        self.departed
            .extend(old.iter().filter(|t| tids.binary_search(t).is_err()));
        self.attend.retain(|t| tids.binary_search(t).is_ok());
    }

    fn forget(&mut self, tid: i32) {
        if self.tids.binary_search(&tid).is_ok() {
            self.departed.push(tid);
        }
        self.attend.remove(&tid);
        self.threads.remove(&tid);
        self.unsent_names.remove(&tid);
        self.switched_out.remove(&tid);
        self.stack_ends.remove(&tid);
        self.copy_sizes.remove(&tid);
        self.unwatchable.remove(&tid);
        if let Some(k) = self.kernel.as_mut() {
            k.unwatch(tid);
        }
        self.late.remove(&tid);
        self.full_regs.remove(&tid);
        if let Ok(i) = self.tids.binary_search(&tid) {
            self.tids.remove(i);
        }
        if let Some(s) = self.switches.as_mut() {
            s.forget(tid);
        }
    }

    /// Read a thread's counters; push an `Unchanged` sample when it has not run since its
    /// previous sample, else return what is needed to capture it.
    fn triage(
        &mut self,
        tid: i32,
        hint: Hint,
        at: At,
        interval_ns: u64,
        out: &mut Vec<RawSample>,
    ) -> Triage {
        let pid = self.pid;
        // Asleep when listed and idle since: what its stat file said then still holds.
        let listed = match hint {
            Hint::Idle => self.asleep_at_listing.remove(&tid),
            _ => None,
        };
        let is_new = !self.threads.contains_key(&tid);
        if !self.has_memo(tid) {
            return Triage::Gone;
        }
        let Some(memo) = self.threads.get_mut(&tid) else {
            return Triage::Gone;
        };
        // A new thread's counters were read just now, when it was opened.
        let sched = match is_new {
            true => Ok(memo.sched),
            false => memo.sched_file.sched_stat(),
        };
        let Ok(sched) = sched else {
            return Triage::Gone;
        };
        let prev = std::mem::replace(&mut memo.sched, sched);
        let run_ns = sched.run_ns.saturating_sub(prev.run_ns);
        let mut cpu_wait_ns = sched.wait_ns.saturating_sub(prev.wait_ns);
        let ran = is_new
            || run_ns > 0
            || sched.timeslices != prev.timeslices
            || matches!(hint, Hint::Ran);
        if !ran {
            if memo.runnable {
                // Runnable at its last capture and has not run since: it waited all along.
                cpu_wait_ns = cpu_wait_ns.max(interval_ns);
            }
            out.extend(unchanged(pid, &self.mem, tid, memo, at, cpu_wait_ns));
            return Triage::Unchanged;
        }
        let name = memo.name_change(pid, tid, true, listed.as_ref().map(|l| l.name.clone()));
        let Ok(syscall) = memo.syscall_file.syscall() else {
            return Triage::Gone;
        };
        // The kernel says "running" exactly when the thread's state is R; the stat file is
        // read only for the other states, which classification tells apart (S, D, T...).
        let state = match (syscall, listed) {
            (Syscall::Running, _) => 'R',
            (_, Some(listed)) => listed.stat.state,
            _ => match memo.stat_file.stat() {
                Ok(stat) => stat.state,
                Err(_) => return Triage::Gone,
            },
        };
        memo.runnable = state == 'R';
        let futex = match syscall {
            Syscall::Blocked {
                nr: libc::SYS_futex,
                args,
                ..
            } => Some(args[0]),
            _ => None,
        };
        let futex_owner = futex.and_then(|a| owner_beside(&self.mem, a));
        memo.owned_futex = futex.filter(|_| futex_owner.is_some());
        Triage::Ran(Ran {
            tid,
            name,
            state,
            syscall,
            run_ns,
            cpu_wait_ns,
            futex_owner,
        })
    }

    /// Stop the running threads together; copy each one's stack (and Python frames) while
    /// it is stopped, since both change as soon as it runs again. A thread that does not
    /// stop in time is kept for `collect_late`.
    fn capture_running(
        &mut self,
        running: Vec<Ran>,
        at: At,
        out: &mut Vec<RawSample>,
        gone: &mut Vec<i32>,
    ) {
        if running.is_empty() {
            return;
        }
        let tids: Vec<i32> = running.iter().map(|r| r.tid).collect();
        let (mem, scratch, python) = (self.mem, &mut self.scratch, &mut self.python);
        let results = self.tracer.with_stopped(&tids, |tid, regs| {
            (
                copy_stack(&mem, regs.sp(), scratch),
                python.as_mut().and_then(|p| p.stack(tid)),
            )
        });
        let mut by_tid: HashMap<i32, Ran> = running.into_iter().map(|r| (r.tid, r)).collect();
        for (tid, result) in results {
            let Some(ran) = by_tid.remove(&tid) else {
                continue;
            };
            match result {
                Err(StopError::Timeout) => {
                    self.late.insert(tid, (ran, vec![at]));
                }
                Err(StopError::Gone) => gone.push(tid),
                result => self.finish(ran, at, result, out),
            }
        }
    }

    /// Between ticks: capture and release the late threads that have stopped by now, keeping
    /// their samples for the next tick. Returns whether some have yet to stop.
    pub fn release_late(&mut self) -> bool {
        let samples = self.collect_late(Instant::now());
        self.late_samples.extend(samples);
        self.tracer.has_pending()
    }

    /// Capture the threads that missed a tick's stop deadline, as they stop, until all are
    /// in or `until`; as samples of the ticks they missed. A thread reaches its stop before
    /// running any of its own code, so what it shows is what it was at those ticks:
    /// runnable, waiting for a CPU. `tick` includes those stopped by then.
    pub fn collect_late(&mut self, until: Instant) -> Vec<RawSample> {
        let mut out = Vec::new();
        // The tracer's threads, not `late`: a late thread that exited was forgotten here
        // (its exit record came), but is still the tracer's to reap; left unreaped, a
        // killed target stays a zombie and the recording never ends.
        if !self.tracer.has_pending() {
            return out;
        }
        let (mem, scratch, python) = (self.mem, &mut self.scratch, &mut self.python);
        let results = self.tracer.collect_late(until, |tid, regs| {
            (
                copy_stack(&mem, regs.sp(), scratch),
                python.as_mut().and_then(|p| p.stack(tid)),
            )
        });
        for (tid, result) in results {
            let Some((mut ran, ticks)) = self.late.remove(&tid) else {
                continue;
            };
            let wait_ns = STOP_DEADLINE.as_nanos() as u64;
            ran.run_ns = 0;
            ran.cpu_wait_ns = ran.cpu_wait_ns.max(wait_ns);
            if matches!(result, Err(StopError::Gone)) {
                self.forget(tid);
                continue;
            }
            self.finish(ran, ticks[0], result, &mut out);
            for &at in &ticks[1..] {
                let data = SampleData::Unchanged {
                    cpu_wait_ns: wait_ns,
                };
                out.push(RawSample {
                    tid,
                    time_ns: at.time_ns,
                    tick: Some(at.tick),
                    name: None,
                    data,
                    futex_owner: None,
                });
            }
        }
        out
    }

    /// Turn a stop's result into a sample.
    fn finish(
        &mut self,
        ran: Ran,
        at: At,
        result: Result<(Regs, Copied), StopError>,
        out: &mut Vec<RawSample>,
    ) {
        let tid = ran.tid;
        let data = match result {
            Ok((regs, (Ok(stack), py))) => {
                let blocked_after_tick =
                    ran.state == 'R' && in_syscall::interrupted(&self.mem, &regs);
                fresh(&ran, regs, stack, py, blocked_after_tick)
            }
            Ok((_, (Err(e), _))) => self.lost(tid, e),
            Err(e) => {
                self.permission_denied |= e == StopError::Permission;
                self.lost(tid, e.to_string())
            }
        };
        out.push(ran.into_sample(at, data));
    }

    /// A thread that could not be captured: forget its counters so the next tick captures
    /// it afresh.
    fn lost(&mut self, tid: i32, why: impl ToString) -> SampleData {
        self.threads.remove(&tid);
        SampleData::Lost(why.to_string())
    }

    /// Every live thread's name now. Threads often name themselves just after they start,
    /// and one that then blocks for good is never captured afresh to have its name read
    /// again: the names at the end of a recording are the ones to show.
    pub fn names_now(&self) -> Vec<(i32, String)> {
        self.tids
            .iter()
            .map(|&tid| (tid, proc::thread_name(self.pid, tid)))
            .filter(|(_, n)| !n.is_empty())
            .collect()
    }

    /// Every thread's name in Python's `threading` now (threads that ended keep the last
    /// one read); nothing for a process that does not run CPython.
    pub fn python_names_now(&mut self) -> Vec<(i32, String)> {
        self.python
            .as_mut()
            .map(PythonReader::thread_names_now)
            .unwrap_or_default()
    }

    /// The thread list as of the last tick (sorted).
    pub fn tids(&self) -> &[i32] {
        &self.tids
    }

    pub fn python_version(&self) -> Option<String> {
        self.python.as_ref().map(|p| p.version())
    }
}

/// The CPython interpreter of a process mapped as `maps`, if it runs one. One that cannot
/// be read (a version parprof does not know, offsets that fail their checks) is said in one
/// line and left out: native frames only, never Python frames read with a wrong layout.
fn find_python(pid: i32, maps: &Maps) -> Option<PythonReader> {
    PythonReader::detect(pid, maps, ProcessMemory::new(pid))
        .inspect_err(|e| eprintln!("parprof: {e:#}; native frames only, no Python frames"))
        .ok()
        .flatten()
}

enum Triage {
    Unchanged,
    Gone,
    Ran(Ran),
}

/// The sample of a thread that has not run since its last one, if it says anything new:
/// the time it has been waiting for a CPU, its mutex's owner now, or its new name. Without
/// one its last sample stands for this tick (see `Batch`).
fn unchanged(
    pid: i32,
    mem: &ProcessMemory,
    tid: i32,
    memo: &mut ThreadMemo,
    at: At,
    cpu_wait_ns: u64,
) -> Option<RawSample> {
    let futex_owner = memo.owned_futex.and_then(|f| owner_beside(mem, f));
    let name = memo.name_change(pid, tid, false, None);
    (cpu_wait_ns > 0 || memo.owned_futex.is_some() || name.is_some()).then_some(RawSample {
        tid,
        time_ns: at.time_ns,
        tick: Some(at.tick),
        name,
        data: SampleData::Unchanged { cpu_wait_ns },
        futex_owner,
    })
}

/// Keep `k` as its thread's switch-out in `map` unless a later one is there.
fn latest(map: &mut HashMap<i32, KernelSample>, k: KernelSample) {
    if map.get(&k.tid).is_none_or(|prev| prev.time_ns <= k.time_ns) {
        map.insert(k.tid, k);
    }
}

/// The int at `futex + 8`: in a glibc `pthread_mutex_t` that is `__owner`, the tid holding
/// the mutex. Attribution decides whether the futex is a mutex.
fn owner_beside(mem: &ProcessMemory, futex: u64) -> Option<i32> {
    use crate::process::Memory;
    if !futex.is_multiple_of(4) {
        return None;
    }
    mem.read_i32(futex.checked_add(8)?).ok().filter(|&t| t > 0)
}

fn fresh(
    ran: &Ran,
    regs: Regs,
    stack: StackSnapshot,
    python: Option<PyStack>,
    blocked_after_tick: bool,
) -> SampleData {
    SampleData::Fresh(Box::new(Fresh {
        os_state: ran.state,
        syscall: ran.syscall,
        blocked_after_tick,
        run_ns: ran.run_ns,
        cpu_wait_ns: ran.cpu_wait_ns,
        regs,
        stack,
        python,
        python_read_after: false,
    }))
}

/// Copy a thread's stack from `sp` up. Only a vanished process is an error: an unreadable
/// stack still gives the leaf frame.
fn copy_stack(mem: &ProcessMemory, sp: u64, scratch: &mut [u8]) -> Result<StackSnapshot, String> {
    match StackSnapshot::capture(mem, sp, scratch) {
        Ok(s) => Ok(s),
        Err(MemError::ProcessGone) => Err(MemError::ProcessGone.to_string()),
        Err(_) => Ok(StackSnapshot {
            base: sp,
            bytes: Vec::new(),
        }),
    }
}

/// Said once per recording: perf events could not be opened for every thread.
fn say_out_of_descriptors(limit: u64) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "parprof: out of file descriptors (limit {limit}): threads beyond this are captured with ptrace stops, which slow them; raise the hard limit (ulimit -Hn, or run as root) to sample every thread from the kernel"
        )
    });
}

/// Said once per recording: perf capture was asked for (the default) and is not possible.
fn say_ptrace_fallback(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "parprof: {why}; capturing running threads with ptrace stops instead, which slows them (run as root, grant CAP_PERFMON, or set sysctl kernel.perf_event_paranoid=0 to sample from the kernel)"
        )
    });
}
