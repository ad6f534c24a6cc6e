//! The processes of one recording: the target and, when following subprocesses, every
//! process it forks and the ones those fork, through their execs. Each has a sampler of its
//! own — its own thread list, tracer, memory and CPython reader — and all are ticked
//! together, each tick giving one batch per process.
//!
//! Children are found by reading `/proc/<pid>/task/<tid>/children` of every thread of every
//! followed process, every `SCAN_EVERY`: one small read per thread, and no permission
//! beyond the one sampling needs (perf's fork records would need CAP_PERFMON). A process
//! that forks and exits between two scans leaves its children to be found by nobody.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{Ask, Batch, Capture, Sampler, Settings, Tick};
use crate::process::{Maps, proc, ptrace};

/// How often the followed processes are searched for new children.
const SCAN_EVERY: Duration = Duration::from_millis(100);

pub struct Processes {
    /// The target first, then followed children in the order found.
    samplers: Vec<Sampler>,
    /// Whether children are followed (`--subprocesses`).
    follow: bool,
    /// Children's samplers are made with the target's settings.
    settings: Settings,
    next_scan: Instant,
    /// Children that ended but are still listed (zombies not yet reaped): not adopted again.
    ended: HashSet<i32>,
    /// What the resolvers ask of the samplers (of any process).
    asks: Option<Receiver<Ask>>,
}

impl Processes {
    /// The target's sampler; with `follow`, its descendants are sampled too, with the same
    /// `settings`.
    pub fn new(target: Sampler, follow: bool, settings: Settings) -> Processes {
        let next_scan = Instant::now();
        Processes {
            samplers: vec![target],
            follow,
            settings,
            next_scan,
            ended: HashSet::new(),
            asks: None,
        }
    }

    /// Take what the resolvers ask of the samplers from `rx`.
    pub fn take_asks(&mut self, rx: Receiver<Ask>) {
        self.asks = Some(rx);
    }

    /// One tick of every process. `Err` when the target is gone; a child that is gone ends
    /// only its own sampling, with a last batch that says so.
    pub fn tick(&mut self, tick: Tick) -> std::io::Result<Vec<Batch>> {
        if let Some(rx) = &self.asks {
            for ask in rx.try_iter() {
                match ask {
                    Ask::FullRegisters(tid) => {
                        self.samplers.iter_mut().any(|s| s.want_full_registers(tid));
                    }
                    Ask::WatchLock { pid, word } => self
                        .samplers
                        .iter_mut()
                        .filter(|s| s.pid == pid)
                        .for_each(|s| s.watch_lock(word)),
                    Ask::StackTop { pid, tid, top } => self
                        .samplers
                        .iter_mut()
                        .filter(|s| s.pid == pid)
                        .for_each(|s| s.stack_top(tid, top)),
                }
            }
        }
        if self.follow && Instant::now() >= self.next_scan {
            self.adopt_children();
            self.next_scan = Instant::now() + SCAN_EVERY;
        }
        let mut batches = vec![self.samplers[0].tick(tick)?];
        let mut i = 1;
        while i < self.samplers.len() {
            match self.samplers[i].tick(tick) {
                Ok(batch) => {
                    batches.push(batch);
                    i += 1;
                }
                Err(_) => {
                    let gone = self.samplers.remove(i);
                    self.ended.insert(gone.pid);
                    batches.push(Batch::exited(gone.pid));
                }
            }
        }
        Ok(batches)
    }

    /// Start sampling every child of a followed process that is not sampled yet. A child
    /// found is pushed behind the others, so its own children are found in the same pass.
    fn adopt_children(&mut self) {
        let mut listed = HashSet::new();
        let mut i = 0;
        while i < self.samplers.len() {
            let s = &self.samplers[i];
            let children: Vec<i32> = s
                .tids()
                .iter()
                .flat_map(|&tid| proc::children(s.pid, tid))
                .collect();
            for pid in children {
                listed.insert(pid);
                if !self.ended.contains(&pid) && !self.samplers.iter().any(|s| s.pid == pid) {
                    let maps = Maps::read(pid).unwrap_or_default();
                    self.samplers.push(Sampler::new(pid, maps, self.settings));
                }
            }
            i += 1;
        }
        self.ended.retain(|pid| listed.contains(pid));
    }

    /// Open again the timer events whose stack copies were resized (see
    /// `Sampler::resize_stack_copies`).
    pub fn resize_stack_copies(&mut self) {
        self.samplers
            .iter_mut()
            .for_each(Sampler::resize_stack_copies);
    }

    /// Until `until`: capture and release, as they stop, the threads of every process that
    /// missed their tick's deadline (they were waiting for a CPU), so that none stays
    /// stopped until the next tick. Sleeps while waiting.
    pub fn collect_late(&mut self, until: Instant) {
        loop {
            let waiting = self
                .samplers
                .iter_mut()
                .fold(false, |any, s| s.release_late() | any);
            let now = Instant::now();
            if !waiting || now >= until {
                return;
            }
            ptrace::sleep_until_a_stop(until - now);
        }
    }

    /// Until `until`: wait, taking the kernel's samples of Python targets as they come
    /// (see `Sampler::wake_fds`); plain sleep when no sampler needs that.
    pub fn wait_until(&mut self, until: Instant) {
        use nix::poll::{PollFd, PollFlags, ppoll};
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let mut fds = Vec::new();
            let mut owner = Vec::new();
            for (i, s) in self.samplers.iter().enumerate() {
                for fd in s.wake_fds() {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    owner.push(i);
                }
            }
            if fds.is_empty() {
                std::thread::sleep(until - now);
                return;
            }
            let timeout = nix::sys::time::TimeSpec::from_duration(until - now);
            let ready: Vec<usize> = match ppoll(&mut fds, Some(timeout), None) {
                Ok(0) => return,
                Ok(_) => fds
                    .iter()
                    .zip(&owner)
                    .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, &i)| i)
                    .collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => {
                    std::thread::sleep(until - now);
                    return;
                }
            };
            drop(fds);
            for i in ready {
                self.samplers[i].take_kernel_samples();
            }
        }
    }

    /// Every live thread's name now, as `(pid, tid, name)` (see `Sampler::names_now`).
    pub fn names_now(&self) -> Vec<(i32, i32, String)> {
        self.samplers
            .iter()
            .flat_map(|s| {
                s.names_now()
                    .into_iter()
                    .map(|(tid, name)| (s.pid, tid, name))
            })
            .collect()
    }

    /// Every thread's name in Python's `threading` now, as `(pid, tid, name)` (see
    /// `Sampler::python_names_now`).
    pub fn python_names_now(&mut self) -> Vec<(i32, i32, String)> {
        self.samplers
            .iter_mut()
            .flat_map(|s| {
                let pid = s.pid;
                s.python_names_now()
                    .into_iter()
                    .map(move |(tid, name)| (pid, tid, name))
            })
            .collect()
    }

    /// Kernel samples dropped, over every process.
    pub fn kernel_lost(&self) -> u64 {
        self.samplers.iter().map(Sampler::kernel_lost).sum()
    }

    /// How the target's running threads are captured.
    pub fn capture(&self) -> Capture {
        self.samplers[0].capture_kind()
    }

    /// The target's CPython version, if it runs CPython.
    pub fn python_version(&self) -> Option<String> {
        self.samplers[0].python_version()
    }

    /// Whether any thread of any process could not be stopped for lack of permission.
    pub fn permission_denied(&self) -> bool {
        self.samplers.iter().any(|s| s.permission_denied)
    }
}
