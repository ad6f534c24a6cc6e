//! Running threads sampled by the kernel at the timer interrupt, so that capturing a running
//! thread neither stops it nor delays it: a CPU-clock event per thread and CPU fires after
//! each sampling period of the thread's own time on a CPU and copies its user registers and
//! the top of its user stack into a ring, one ring per CPU. parprof unwinds those copies
//! later with its own CFI unwinder, as it does stacks it copied itself.
//!
//! A second event per thread and CPU fires at each of the thread's context switches and
//! copies only its user registers, where it was when it left its CPU (preempted, or entering
//! the syscall it blocks in). While the switch records show the thread has not run since,
//! those registers and its stack, read then, are what it is at a tick: off-CPU threads are
//! read exactly without being stopped, whatever registers their frames need.
//!
//! The rings are per CPU and shared by every process parprof follows (`--subprocesses`):
//! each process's events write into the same rings, and draining them sorts the samples by
//! process for each process's sampler to take.
//!
//! Why per-thread events: a CPU-wide sampling event would fire for every process on the
//! machine and copy their stacks too (the cost would follow the machine's other processes,
//! and parprof would receive memory of processes it may not read). Per-thread events cost
//! a descriptor per thread and CPU, opened once; the kernel only ever samples the target.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use perf_event_open_sys::bindings as pb;

use super::perf::{self, PerfError, u32_at, u64_at};
use crate::process::{Regs, StackSnapshot, regs::dwarf};

/// One thread as the kernel caught it: on its CPU at a timer interrupt (with a stack copy),
/// or leaving its CPU (registers only, `stack` empty).
#[derive(Debug, Clone)]
pub struct KernelSample {
    pub tid: i32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    pub regs: Regs,
    pub stack: StackSnapshot,
    /// Bytes from the stack pointer to the thread's stack's top, where that is known
    /// (`CpuSamples::trim_stacks_at`) and above the stack pointer: no copy goes past it.
    pub below_top: Option<usize>,
}

/// One process's kernel samples: its threads' events, writing into the shared rings.
pub struct CpuSamples {
    pid: i32,
    rings: Arc<Mutex<Rings>>,
    /// Each watched thread's events, two per CPU.
    events: HashMap<i32, Vec<OwnedFd>>,
    timer: pb::perf_event_attr,
    switch_out: pb::perf_event_attr,
    /// With `wake_on_each`: the timer rings' descriptors, duplicated, to poll on.
    poll_fds: Vec<OwnedFd>,
    /// Threads whose timer events copy less stack than `timer` asks (`copy_stack_bytes`).
    stack_sizes: HashMap<i32, u32>,
}

/// Per CPU, the rings of timer samples and of switch-out registers, each mapped over a
/// CPU-wide dummy event that records nothing itself: every thread's event of that kind on
/// that CPU, of whichever followed process, writes into it.
struct Rings {
    cpus: Vec<usize>,
    timer_rings: Vec<perf::Ring>,
    switch_rings: Vec<perf::Ring>,
    buf: Vec<u8>,
    /// What each process's sampler has yet to take; samples of a process not in it are
    /// dropped unread.
    pending: HashMap<i32, Pending>,
    /// Samples the kernel dropped because a ring was full.
    lost: u64,
}

#[derive(Default)]
struct Pending {
    timer: Vec<KernelSample>,
    switched_out: Vec<KernelSample>,
    /// Switch-outs were dropped since the last take.
    incomplete: bool,
    /// Where threads' stacks end (`CpuSamples::trim_stacks_at`).
    stack_tops: HashMap<i32, u64>,
}

/// A CPU's timer ring holds this long of its samples (one busy thread at the sampling
/// rate): ticks drain it every period, so this is slack for a tick that runs late.
const TIMER_RING_SECONDS: f64 = 0.2;

/// Pages of switch ring per CPU: 512 KiB holds 3,000 switch-outs (168 bytes each), a 10 ms
/// tick's worth at 300,000 switches per second on one CPU. When it overflows, the
/// registers it would have held are forgotten (`drain` says so), never used stale.
const SWITCH_RING_PAGES: usize = 128;

/// The most stack a sample copies: 63 KiB, about all a record holds (the kernel caps one at
/// 64 KiB; perf copies 8 KiB by default, which loses the outer frames of deep Rust and
/// Python stacks). What lies beyond the copy is read from the live thread when the resolver
/// gets to the sample, which under a busy target is seconds later: by then the thread is
/// elsewhere. numpy's matmul under OpenBLAS's Haswell kernel (a 28 KiB aligned buffer
/// below its caller, a 19 KiB frame in the ufunc machinery) has its eval loop 51 KiB above
/// the kernel's stack pointer; with 32 KiB copies 3-6 % of the kernel's samples showed a
/// later call's frames as its callers and 4 % lost their Python frames, with 63 KiB none
/// showed wrong native frames and 2 % lost their Python frames.
pub const MAX_STACK_BYTES: usize = 63 * 1024;

/// `PERF_REG_X86_*` numbers of the registers sampled, in the order the kernel writes them
/// (ascending), with their DWARF numbers.
const SAMPLED_REGS: [(u32, usize); 17] = [
    (0, dwarf::RAX),
    (1, dwarf::RBX),
    (2, dwarf::RCX),
    (3, dwarf::RDX),
    (4, dwarf::RSI),
    (5, dwarf::RDI),
    (6, dwarf::RBP),
    (7, dwarf::RSP),
    (8, dwarf::RIP),
    (16, 8),
    (17, 9),
    (18, 10),
    (19, 11),
    (20, 12),
    (21, 13),
    (22, 14),
    (23, 15),
];

impl CpuSamples {
    /// `pid`'s samples at `rate_hz` of each thread's CPU time, each copying up to
    /// `stack_bytes` of stack, into the rings of this parprof (opened if none are: every
    /// process of a recording has the same rate and stack size); threads are then added
    /// with `watch`. With `wake_on_each`, the rings' descriptors poll readable at every
    /// sample of this process, not only when draining.
    pub fn open(
        pid: i32,
        rate_hz: f64,
        stack_bytes: usize,
        wake_on_each: bool,
    ) -> Result<CpuSamples, PerfError> {
        let stack_bytes = stack_bytes.min(MAX_STACK_BYTES) & !7;
        let rings = Rings::shared(rate_hz, stack_bytes)?;
        rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .insert(pid, Pending::default());
        let mut timer = perf::base_attr();
        timer.type_ = pb::PERF_TYPE_SOFTWARE;
        timer.config = pb::PERF_COUNT_SW_CPU_CLOCK as u64;
        timer.__bindgen_anon_1.sample_period = (1e9 / rate_hz).max(10_000.0) as u64;
        timer.sample_type |= (pb::PERF_SAMPLE_REGS_USER | pb::PERF_SAMPLE_STACK_USER) as u64;
        timer.sample_regs_user = SAMPLED_REGS.iter().map(|(r, _)| 1u64 << r).sum();
        timer.sample_stack_user = stack_bytes as u32;
        timer.set_exclude_hv(1);
        // Fired from the scheduler, in the kernel: it cannot exclude kernel mode, and so
        // needs the privilege that switch records already need.
        let mut switch_out = perf::base_attr();
        switch_out.type_ = pb::PERF_TYPE_SOFTWARE;
        switch_out.config = pb::PERF_COUNT_SW_CONTEXT_SWITCHES as u64;
        switch_out.__bindgen_anon_1.sample_period = 1;
        switch_out.sample_type |= pb::PERF_SAMPLE_REGS_USER as u64;
        switch_out.sample_regs_user = timer.sample_regs_user;
        let mut samples = CpuSamples {
            pid,
            rings,
            events: HashMap::new(),
            timer,
            switch_out,
            poll_fds: Vec::new(),
            stack_sizes: HashMap::new(),
        };
        if wake_on_each {
            samples.wake_on_each()?;
        }
        Ok(samples)
    }

    /// From now on, the rings' descriptors poll readable at every sample of this process
    /// (of the threads watched from now on: a program found to be Python after an exec,
    /// through a shell or a version manager's shim, has all its threads watched afresh).
    pub fn wake_on_each(&mut self) -> Result<(), PerfError> {
        if !self.poll_fds.is_empty() {
            return Ok(());
        }
        self.timer.__bindgen_anon_2.wakeup_events = 1;
        let fds = (self.rings().timer_rings.iter())
            .map(|t| t.poll_fd().try_clone_to_owned())
            .collect::<Result<_, _>>();
        self.poll_fds = fds.map_err(PerfError::Open)?;
        Ok(())
    }

    fn rings(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Samples the kernel dropped because a ring was full, over every process.
    pub fn lost(&self) -> u64 {
        self.rings().lost
    }

    /// Nanoseconds of a thread's CPU time between two of its samples.
    pub fn period_ns(&self) -> u64 {
        // SAFETY: the union holds the period: the attribute block never sets `freq`.
        unsafe { self.timer.__bindgen_anon_1.sample_period }
    }

    /// Bytes of stack a sample asks the kernel to copy.
    pub fn stack_bytes(&self) -> usize {
        self.timer.sample_stack_user as usize
    }

    /// With `wake_on_each`, the descriptors that poll readable when samples are waiting.
    pub fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.poll_fds.iter().map(AsFd::as_fd)
    }

    /// Descriptors this process holds once one more of its threads is watched.
    pub fn descriptors_with_one_more(&self) -> usize {
        (self.events.len() + 1) * 2 * self.rings().cpus.len()
    }

    pub fn watching(&self, tid: i32) -> bool {
        self.events.contains_key(&tid)
    }

    /// Sample `tid` from now on. A thread that has exited is an error, as is a refusal.
    pub fn watch(&mut self, tid: i32) -> Result<(), PerfError> {
        let rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fds = Vec::with_capacity(2 * rings.cpus.len());
        for (i, &cpu) in rings.cpus.iter().enumerate() {
            let timer = open_timer(&mut self.timer, tid, cpu)?;
            perf::redirect(&timer, rings.timer_rings[i].fd())?;
            let switch_out = perf::open(&mut self.switch_out, tid, cpu as i32)?;
            perf::redirect(&switch_out, rings.switch_rings[i].fd())?;
            fds.extend([timer, switch_out]);
        }
        drop(rings);
        self.events.insert(tid, fds);
        Ok(())
    }

    /// How much stack `tid`'s samples copy.
    pub fn copy_size(&self, tid: i32) -> usize {
        (self.stack_sizes.get(&tid)).map_or(self.stack_bytes(), |&b| b as usize)
    }

    /// Have `tid`'s samples copy `bytes` of stack from now on (at most what every thread's
    /// copy): its timer events are opened again with that size, each before its old one
    /// closes (the new one's first sample comes a period later, so none is taken twice).
    /// The kernel copies in the thread's own timer interrupt, on the target's time: 63 KiB
    /// where 8 suffice cost `parked`'s busy threads 2-3 points at 1000 Hz. On an error the
    /// old events stay.
    pub fn copy_stack_bytes(&mut self, tid: i32, bytes: usize) -> Result<(), PerfError> {
        let bytes = bytes.min(self.stack_bytes()).next_multiple_of(8) as u32;
        let Some(fds) = self.events.get_mut(&tid) else {
            return Ok(());
        };
        let mut attr = self.timer;
        attr.sample_stack_user = bytes;
        self.stack_sizes.insert(tid, bytes);
        let rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, &cpu) in rings.cpus.iter().enumerate() {
            let timer = open_timer(&mut attr, tid, cpu)?;
            perf::redirect(&timer, rings.timer_rings[i].fd())?;
            fds[2 * i] = timer;
        }
        Ok(())
    }

    /// Stop sampling `tid` (it exited, or the program was replaced).
    pub fn unwatch(&mut self, tid: i32) {
        self.events.remove(&tid);
        self.stack_sizes.remove(&tid);
        self.pending(|p| p.stack_tops.remove(&tid));
    }

    pub fn unwatch_all(&mut self) {
        self.events.clear();
        self.stack_sizes.clear();
        self.pending(|p| p.stack_tops.clear());
    }

    /// Keep `tid`'s stack copies only up to `top`, where its stack ends: the kernel copies
    /// on into whatever readable mapping lies above it, and the copy out of the ring is
    /// the tick's largest cost (a third of its time at 1000 Hz when one of two busy
    /// threads copied 63 KiB for 4.4 KiB of stack).
    pub fn trim_stacks_at(&mut self, tid: i32, top: u64) {
        self.pending(|p| p.stack_tops.insert(tid, top));
    }

    fn pending<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> Option<T> {
        self.rings().pending.get_mut(&self.pid).map(f)
    }

    /// Append every timer sample of this process taken since the last drain to `timer`,
    /// in time order (a thread that moved between CPUs has samples in two rings), and every
    /// switch-out to `switched_out`, in time order per CPU. Returns false when some
    /// switch-outs were lost (a ring overflowed): a thread's latest one may be missing.
    pub fn drain(
        &mut self,
        timer: &mut Vec<KernelSample>,
        switched_out: &mut Vec<KernelSample>,
    ) -> bool {
        let mut rings = self.rings();
        rings.read();
        let Some(mine) = rings.pending.get_mut(&self.pid) else {
            return true;
        };
        let first_new = timer.len();
        timer.append(&mut mine.timer);
        switched_out.append(&mut mine.switched_out);
        timer[first_new..].sort_by_key(|s| s.time_ns);
        !std::mem::take(&mut mine.incomplete)
    }
}

/// `tid`'s timer event on `cpu`, as `attr` asks, and without kernel-mode samples from now on
/// if those are refused: they need more privilege than user-mode ones, and the user
/// registers and stack are the same either way (only samples taken while the thread is in
/// the kernel are lost).
fn open_timer(attr: &mut pb::perf_event_attr, tid: i32, cpu: usize) -> Result<OwnedFd, PerfError> {
    match perf::open(attr, tid, cpu as i32) {
        Err(PerfError::Permission) if attr.exclude_kernel() == 0 => {
            attr.set_exclude_kernel(1);
            perf::open(attr, tid, cpu as i32)
        }
        r => r,
    }
}

impl Drop for CpuSamples {
    fn drop(&mut self) {
        self.rings().pending.remove(&self.pid);
    }
}

impl Rings {
    /// The rings of this parprof, opened if no process's samples hold them: they are
    /// released when the last is dropped.
    fn shared(rate_hz: f64, stack_bytes: usize) -> Result<Arc<Mutex<Rings>>, PerfError> {
        static SHARED: Mutex<Weak<Mutex<Rings>>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rings) = slot.upgrade() {
            return Ok(rings);
        }
        let rings = Arc::new(Mutex::new(Rings::open(rate_hz, stack_bytes)?));
        *slot = Arc::downgrade(&rings);
        Ok(rings)
    }

    fn open(rate_hz: f64, stack_bytes: usize) -> Result<Rings, PerfError> {
        let cpus = perf::online_cpus()?;
        let carrier = |cpu: usize, pages: usize| {
            let mut attr = perf::base_attr();
            attr.type_ = pb::PERF_TYPE_SOFTWARE;
            attr.config = pb::PERF_COUNT_SW_DUMMY as u64;
            perf::Ring::map(perf::open(&mut attr, -1, cpu as i32)?, pages)
        };
        let timer_bytes = TIMER_RING_SECONDS * rate_hz * (stack_bytes + 512) as f64;
        let timer_pages = ((timer_bytes as usize).div_ceil(perf::page_size()))
            .next_power_of_two()
            .max(64);
        let (mut timer_rings, mut switch_rings) = (Vec::new(), Vec::new());
        for &cpu in &cpus {
            timer_rings.push(carrier(cpu, timer_pages)?);
            switch_rings.push(carrier(cpu, SWITCH_RING_PAGES)?);
        }
        Ok(Rings {
            cpus,
            timer_rings,
            switch_rings,
            buf: Vec::new(),
            pending: HashMap::new(),
            lost: 0,
        })
    }

    /// Read every ring, each sample into its process's pending samples.
    fn read(&mut self) {
        let Rings {
            timer_rings,
            switch_rings,
            buf,
            pending,
            lost,
            ..
        } = self;
        for (rings, stack) in [(timer_rings, true), (switch_rings, false)] {
            for ring in rings.iter_mut() {
                ring.read(buf, |r| match r.kind {
                    pb::PERF_RECORD_SAMPLE => {
                        let pid = u32_at(r.bytes, 8).map(|p| p as i32);
                        if let Some((pid, p)) =
                            pid.and_then(|pid| Some((pid, pending.get_mut(&pid)?)))
                        {
                            if stack {
                                p.timer
                                    .extend(parse_sample(r.bytes, pid, Some(&p.stack_tops)));
                            } else {
                                p.switched_out.extend(parse_sample(r.bytes, pid, None));
                            }
                        }
                    }
                    pb::PERF_RECORD_LOST => {
                        *lost += u64_at(r.bytes, 16).unwrap_or(1);
                        // Lost timer samples are only fewer samples; lost switch-outs
                        // would leave stale registers behind, in any process.
                        if !stack {
                            pending.values_mut().for_each(|p| p.incomplete = true);
                        }
                    }
                    _ => {}
                });
            }
        }
    }
}

/// A sample record: header, pid, tid, time, user ABI and registers, then with a stack: its
/// size, its bytes, the size actually copied, of which what lies below the thread's stack
/// top in `stack_tops` is kept. `None` for another process's sample (never read further)
/// and for samples without user registers.
fn parse_sample(
    rec: &[u8],
    pid: i32,
    stack_tops: Option<&HashMap<i32, u64>>,
) -> Option<KernelSample> {
    if u32_at(rec, 8)? as i32 != pid {
        return None;
    }
    let tid = u32_at(rec, 12)? as i32;
    let time_ns = u64_at(rec, 16)?;
    if u64_at(rec, 24)? == 0 {
        return None;
    }
    let mut regs = Regs::default();
    let mut at = 32;
    for (_, dwarf_reg) in SAMPLED_REGS {
        regs.set(dwarf_reg, u64_at(rec, at)?);
        at += 8;
    }
    let Some(stack_tops) = stack_tops else {
        return Some(KernelSample {
            tid,
            time_ns,
            stack: StackSnapshot {
                base: regs.sp(),
                bytes: Vec::new(),
            },
            regs,
            below_top: None,
        });
    };
    let size = u64_at(rec, at)? as usize;
    at += 8;
    let data = rec.get(at..at.checked_add(size)?)?;
    let dyn_size = if size == 0 {
        0
    } else {
        u64_at(rec, at + size)? as usize
    };
    let below_top = stack_tops
        .get(&tid)
        .and_then(|top| usize::try_from(top.checked_sub(regs.sp())?).ok());
    let kept = dyn_size.min(size).min(below_top.unwrap_or(usize::MAX));
    Some(KernelSample {
        tid,
        time_ns,
        stack: StackSnapshot {
            base: regs.sp(),
            bytes: data[..kept].to_vec(),
        },
        regs,
        below_top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, stack: &[u8], dyn_size: u64) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend([pid, pid + 1].map(u32::to_ne_bytes).concat());
        body.extend(77u64.to_ne_bytes());
        body.extend(2u64.to_ne_bytes()); // PERF_SAMPLE_REGS_ABI_64
        for (i, _) in SAMPLED_REGS.iter().enumerate() {
            body.extend((0x1000 + i as u64).to_ne_bytes());
        }
        body.extend((stack.len() as u64).to_ne_bytes());
        body.extend(stack);
        body.extend(dyn_size.to_ne_bytes());
        let mut rec = Vec::new();
        rec.extend(pb::PERF_RECORD_SAMPLE.to_ne_bytes());
        rec.extend(0u16.to_ne_bytes());
        rec.extend(((8 + body.len()) as u16).to_ne_bytes());
        rec.extend(body);
        rec
    }

    #[test]
    fn sample_registers_land_in_their_dwarf_slots_and_the_stack_is_cut_to_its_copied_size() {
        let rec = sample(40, &[1, 2, 3, 4, 5, 6, 7, 8], 5);
        let s = parse_sample(&rec, 40, Some(&HashMap::new())).expect("a sample of the target");
        assert_eq!((s.tid, s.time_ns), (41, 77));
        // Kernel order AX, BX, CX, DX, SI, DI, BP, SP, IP, R8..R15.
        assert_eq!(s.regs.get(dwarf::RAX), Some(0x1000));
        assert_eq!(s.regs.get(dwarf::RBX), Some(0x1001));
        assert_eq!(s.regs.get(dwarf::RDX), Some(0x1003));
        assert_eq!(s.regs.sp(), 0x1007);
        assert_eq!(s.regs.ip(), 0x1008);
        assert_eq!(s.regs.get(15), Some(0x1010));
        assert_eq!(s.stack.base, 0x1007);
        assert_eq!(s.stack.bytes, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn other_processes_and_torn_records_give_nothing() {
        let rec = sample(40, &[0; 16], 16);
        assert!(parse_sample(&rec, 99, Some(&HashMap::new())).is_none());
        for cut in [10, 30, 100, rec.len() - 4] {
            assert!(
                parse_sample(&rec[..cut], 40, Some(&HashMap::new())).is_none(),
                "cut at {cut}"
            );
        }
        // A copied size larger than the stack area is bounded by it.
        let big = sample(40, &[9; 8], 1 << 40);
        assert_eq!(
            parse_sample(&big, 40, Some(&HashMap::new())).map(|s| s.stack.bytes.len()),
            Some(8)
        );
        // A switch-out record carries registers only.
        let regs_only = &rec[..32 + 8 * SAMPLED_REGS.len()];
        let s = parse_sample(regs_only, 40, None).expect("registers");
        assert_eq!((s.regs.ip(), s.stack.bytes.len()), (0x1008, 0));
    }

    #[test]
    fn copies_are_kept_up_to_their_threads_stack_top_only() {
        // The stack pointer is 0x1007; thread 41's stack ends 3 bytes above it.
        let rec = sample(40, &[1, 2, 3, 4, 5, 6, 7, 8], 8);
        let keep = |tops: &[(i32, u64)]| {
            let tops = tops.iter().copied().collect();
            parse_sample(&rec, 40, Some(&tops)).map(|s| s.stack.bytes)
        };
        assert_eq!(keep(&[(41, 0x100a)]), Some(vec![1, 2, 3]));
        let tops = HashMap::from([(41, 0x100a)]);
        let s = parse_sample(&rec, 40, Some(&tops)).expect("a sample of the target");
        assert_eq!(s.below_top, Some(3));
        // Another thread's top, a top beyond the copy, and a top below the stack pointer
        // (the thread is on another stack) keep the whole copy.
        for tops in [&[(42, 0x100a)][..], &[(41, 0x2000)], &[(41, 0x1000)]] {
            assert_eq!(keep(tops), Some(vec![1, 2, 3, 4, 5, 6, 7, 8]), "{tops:x?}");
        }
    }
}
