//! Running threads sampled by the kernel at the timer interrupt, so that capturing a running
//! thread neither stops it nor delays it: a CPU-clock event per thread and CPU fires after
//! each sampling period of the thread's own time on a CPU and copies its user registers and
//! the top of its user stack into a ring, one ring per CPU. parprof unwinds those copies
//! later with its own CFI unwinder, as it does stacks it copied itself.
//!
//! Why per-thread events: a CPU-wide sampling event would fire for every process on the
//! machine and copy their stacks too (the cost would follow the machine's other processes,
//! and parprof would receive memory of processes it may not read). Per-thread events cost
//! a descriptor per thread and CPU, opened once; the kernel only ever samples the target.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use perf_event_open_sys::bindings as pb;

use super::perf::{self, PerfError, u32_at, u64_at};
use crate::process::{Regs, StackSnapshot, regs::dwarf};

/// One running thread as the kernel caught it.
#[derive(Debug)]
pub struct KernelSample {
    pub tid: i32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    pub regs: Regs,
    pub stack: StackSnapshot,
}

pub struct CpuSamples {
    pid: i32,
    cpus: Vec<usize>,
    /// One ring per CPU, mapped over a CPU-wide dummy event that records nothing itself:
    /// every thread's event on that CPU writes into it.
    rings: Vec<perf::Ring>,
    /// Each watched thread's events, one per CPU.
    events: HashMap<i32, Vec<OwnedFd>>,
    attr: pb::perf_event_attr,
    buf: Vec<u8>,
    /// Samples the kernel dropped because a ring was full.
    pub lost: u64,
}

/// Pages of ring per CPU (a power of two): 4 MiB holds over a hundred 32 KiB stack samples,
/// a second of one busy thread at 100 Hz; rings are drained at every tick.
const RING_PAGES: usize = 1024;

/// The most stack a sample copies. The kernel caps a record at 64 KiB; perf copies 8 KiB by
/// default, which loses the outer frames of deep Rust and Python stacks.
pub const MAX_STACK_BYTES: usize = 32 * 1024;

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
    /// Rings for `pid`'s samples at `rate_hz` of each thread's CPU time, each copying up to
    /// `stack_bytes` of stack; threads are then added with `watch`.
    pub fn open(pid: i32, rate_hz: f64, stack_bytes: usize) -> Result<CpuSamples, PerfError> {
        let cpus = perf::online_cpus()?;
        let mut rings = Vec::with_capacity(cpus.len());
        for &cpu in &cpus {
            let mut attr = perf::base_attr();
            attr.type_ = pb::PERF_TYPE_SOFTWARE;
            attr.config = pb::PERF_COUNT_SW_DUMMY as u64;
            let fd = perf::open(&mut attr, -1, cpu as i32)?;
            rings.push(perf::Ring::map(fd, RING_PAGES)?);
        }
        let mut attr = perf::base_attr();
        attr.type_ = pb::PERF_TYPE_SOFTWARE;
        attr.config = pb::PERF_COUNT_SW_CPU_CLOCK as u64;
        attr.__bindgen_anon_1.sample_period = (1e9 / rate_hz).max(10_000.0) as u64;
        attr.sample_type |= (pb::PERF_SAMPLE_REGS_USER | pb::PERF_SAMPLE_STACK_USER) as u64;
        attr.sample_regs_user = SAMPLED_REGS.iter().map(|(r, _)| 1u64 << r).sum();
        attr.sample_stack_user = (stack_bytes.min(MAX_STACK_BYTES) & !7) as u32;
        attr.set_exclude_hv(1);
        Ok(CpuSamples {
            pid,
            cpus,
            rings,
            events: HashMap::new(),
            attr,
            buf: Vec::new(),
            lost: 0,
        })
    }

    /// Nanoseconds of a thread's CPU time between two of its samples.
    pub fn period_ns(&self) -> u64 {
        // SAFETY: the union holds the period: the attribute block never sets `freq`.
        unsafe { self.attr.__bindgen_anon_1.sample_period }
    }

    pub fn watching(&self, tid: i32) -> bool {
        self.events.contains_key(&tid)
    }

    /// Sample `tid` from now on. A thread that has exited is an error, as is a refusal.
    pub fn watch(&mut self, tid: i32) -> Result<(), PerfError> {
        let mut fds = Vec::with_capacity(self.cpus.len());
        for (ring, &cpu) in self.rings.iter().zip(&self.cpus) {
            let fd = match perf::open(&mut self.attr, tid, cpu as i32) {
                // Kernel-mode samples need more privilege than user-mode ones; the user
                // registers and stack are the same either way, only samples taken while
                // the thread is in the kernel are lost.
                Err(PerfError::Permission) if self.attr.exclude_kernel() == 0 => {
                    self.attr.set_exclude_kernel(1);
                    perf::open(&mut self.attr, tid, cpu as i32)?
                }
                r => r?,
            };
            perf::redirect(&fd, ring.fd())?;
            fds.push(fd);
        }
        self.events.insert(tid, fds);
        Ok(())
    }

    /// Stop sampling `tid` (it exited, or the program was replaced).
    pub fn unwatch(&mut self, tid: i32) {
        self.events.remove(&tid);
    }

    pub fn unwatch_all(&mut self) {
        self.events.clear();
    }

    /// Append every sample taken since the last drain to `out`.
    pub fn drain(&mut self, out: &mut Vec<KernelSample>) {
        for ring in &mut self.rings {
            ring.read(&mut self.buf);
            for r in perf::records(&self.buf) {
                match r.kind {
                    pb::PERF_RECORD_SAMPLE => out.extend(parse_sample(r.bytes, self.pid)),
                    pb::PERF_RECORD_LOST => self.lost += u64_at(r.bytes, 16).unwrap_or(1),
                    _ => {}
                }
            }
        }
    }
}

/// A sample record: header, pid, tid, time, user ABI and registers, stack size, stack bytes,
/// the size actually copied. `None` for another process's sample (never read further) and
/// for samples without user registers.
fn parse_sample(rec: &[u8], pid: i32) -> Option<KernelSample> {
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
    let size = u64_at(rec, at)? as usize;
    at += 8;
    let data = rec.get(at..at.checked_add(size)?)?;
    let dyn_size = if size == 0 {
        0
    } else {
        u64_at(rec, at + size)? as usize
    };
    Some(KernelSample {
        tid,
        time_ns,
        stack: StackSnapshot {
            base: regs.sp(),
            bytes: data[..dyn_size.min(size)].to_vec(),
        },
        regs,
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
        let s = parse_sample(&rec, 40).expect("a sample of the target");
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
        assert!(parse_sample(&rec, 99).is_none());
        for cut in [10, 30, 100, rec.len() - 4] {
            assert!(parse_sample(&rec[..cut], 40).is_none(), "cut at {cut}");
        }
        // A copied size larger than the stack area is bounded by it.
        let big = sample(40, &[9; 8], 1 << 40);
        assert_eq!(parse_sample(&big, 40).map(|s| s.stack.bytes.len()), Some(8));
    }
}
