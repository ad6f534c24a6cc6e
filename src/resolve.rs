//! The processing side of recording: raw samples in, profile counts out. Unwinds each
//! captured stack, symbolises it (cached per address), merges Python frames, classifies
//! the sample and adds it to the profile. Runs on its own thread so the tick stays on time.

use std::collections::HashMap;

use crate::attribution::locks::{LockBook, Observed};
use crate::attribution::{self, Attribution, State, ThreadFacts};
use crate::frame::Frame;
use crate::profile::{Profile, StackId};
use crate::python;
use crate::sample::{Fresh, RawSample, SampleData};
use crate::symbols::Symbolizer;
use crate::target::memory::Layered;
use crate::target::{Maps, ProcessMemory};
use crate::unwind::Unwinder;

pub struct Resolver {
    pid: i32,
    maps: Maps,
    mem: ProcessMemory,
    unwinder: Unwinder,
    symbolizer: Symbolizer,
    symbol_cache: HashMap<(u64, bool), Vec<Frame>>,
    /// Each thread's last stack and attribution, for samples where it did not run.
    last: HashMap<i32, (StackId, Attribution)>,
    locks: LockBook,
    /// Stack walks that reached the outermost frame, of all walked (for the summary).
    pub complete_walks: u64,
    pub walks: u64,
    pub include_native: bool,
}

impl Resolver {
    pub fn new(pid: i32, include_native: bool) -> Self {
        Resolver {
            pid,
            maps: Maps::read(pid).unwrap_or_default(),
            mem: ProcessMemory::new(pid),
            unwinder: Unwinder::new(),
            symbolizer: Symbolizer::new(),
            symbol_cache: HashMap::new(),
            last: HashMap::new(),
            locks: LockBook::new(),
            complete_walks: 0,
            walks: 0,
            include_native,
        }
    }

    /// Add one tick's samples (every thread at the same moment) to the profile.
    pub fn add_tick(&mut self, batch: &[RawSample], profile: &mut Profile) {
        let observed: Vec<Observed> = batch.iter().filter_map(|s| self.add(s, profile)).collect();
        self.locks.record_tick(&self.maps, profile, &observed);
    }

    fn add(&mut self, s: &RawSample, profile: &mut Profile) -> Option<Observed> {
        let (stack, attribution) = match &s.data {
            SampleData::Fresh(f) => {
                let (frames, attribution) = self.resolve(s, f);
                (profile.intern_stack(&frames), attribution)
            }
            SampleData::Unchanged { cpu_wait_ns } => {
                let &(stack, mut a) = self.last.get(&s.tid)?;
                if *cpu_wait_ns > 0 && a.state == State::Compute {
                    a.state = State::CpuWait;
                }
                if let Some(w) = a.waiting_on.as_mut() {
                    w.set_holder(s.futex_owner);
                }
                (stack, a)
            }
            SampleData::Lost(_) => {
                let a = Attribution { state: State::Other, waiting_on: None };
                (profile.intern_stack(&[Frame::truncated()]), a)
            }
        };
        self.last.insert(s.tid, (stack, attribution));
        profile.add(s.tid, stack, attribution.state, s.time_ns, 1);
        Some(Observed { tid: s.tid, stack, attribution })
    }

    /// The stack (root first) and classification of one fresh sample.
    pub fn resolve(&mut self, s: &RawSample, f: &Fresh) -> (Vec<Frame>, Attribution) {
        let frames = self.frames(f);
        let facts = ThreadFacts {
            os_state: f.os_state,
            syscall: f.syscall,
            blocked_after_tick: f.blocked_after_tick,
            run_ns: f.run_ns,
            cpu_wait_ns: f.cpu_wait_ns,
            futex_owner: s.futex_owner,
        };
        let attribution = attribution::classify(&facts, &frames);
        (frames, attribution)
    }

    /// The target's memory map as last read (for naming addresses).
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The sample's stack, root first.
    fn frames(&mut self, f: &Fresh) -> Vec<Frame> {
        let native = if self.include_native || f.python.is_some() { self.native_frames(f) } else { Vec::new() };
        match &f.python {
            Some(py) if self.include_native => python::merge(native, py),
            Some(py) => python::python_only(py),
            None => native,
        }
    }

    fn native_frames(&mut self, f: &Fresh) -> Vec<Frame> {
        let mem = Layered { stack: &f.stack, rest: &self.mem };
        let mut walk = self.unwinder.unwind(&self.maps, &f.regs, &mem);
        if walk.pcs.iter().any(|&pc| self.maps.find(pc).is_none()) {
            // A module loaded since the maps were read (dlopen): read them again, once.
            if let Ok(m) = Maps::read(self.pid) {
                self.maps = m;
                walk = self.unwinder.unwind(&self.maps, &f.regs, &mem);
            }
        }
        self.walks += 1;
        self.complete_walks += walk.complete as u64;
        let mut frames = Vec::with_capacity(walk.pcs.len() + 1);
        if !walk.complete {
            frames.push(Frame::truncated());
        }
        for (i, &pc) in walk.pcs.iter().enumerate().rev() {
            let key = (pc, i > 0);
            if !self.symbol_cache.contains_key(&key) {
                let resolved = self.symbolizer.symbolize(&self.maps, &self.mem, pc, i > 0);
                self.symbol_cache.insert(key, resolved);
            }
            frames.extend(self.symbol_cache[&key].iter().cloned());
        }
        frames
    }
}
