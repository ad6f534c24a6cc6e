//! Native unwinding over a captured stack: DWARF CFI per module (loaded once, rules cached
//! per address), frame pointers where no CFI covers the code (JIT or anonymous memory),
//! signal frames, through the CFI of the signal trampoline or by recognising
//! `rt_sigreturn` and reading the saved context, and where none of these leads on, a scan
//! of the stack for a return address that follows a call and that CFI continues from
//! (`scan`).
//!
//! The walk never guesses: a register the next frame needs but the sample does not have
//! (threads blocked in a syscall only give ip and sp) stops it, marked incomplete.

mod cfi;
pub mod rule;
mod scan;
mod sigframe;

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState as FastHash;
use gimli::UnwindContext;

use crate::process::elf::ElfImage;
use crate::process::module::{self, ModuleCache};
use crate::process::regs::dwarf;
use crate::process::{Mapping, Maps, Memory, Regs};
/// Public so the fuzz targets can load CFI from arbitrary bytes.
pub use cfi::CfiTables;
use rule::{Rule, Step};

/// The result of walking one stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unwound {
    /// Innermost first: `pcs[0]` is the instruction pointer, the rest are return addresses.
    pub pcs: Vec<u64>,
    /// True when the walk reached the outermost frame (the return address column is
    /// undefined, e.g. in `_start` or `clone3`), false when it stopped early.
    pub complete: bool,
    /// Each frame's registers as the walk recovered them, `regs[i]` at `pcs[i]`: a
    /// callee-saved register holds there what that frame's code left in it.
    pub regs: Vec<Regs>,
    /// Indexes into `pcs` of the return addresses found by scanning the stack.
    pub scanned: Vec<usize>,
    /// A return address the walk stepped to that is not in executable memory, left out of
    /// `pcs`: a wrong step (a stale word taken for a saved register), or code loaded after
    /// the memory map was read, which the caller may read again.
    pub unmapped: Option<u64>,
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// At a frame whose CFI leaves its return address undefined (`_start`, `clone3`), or
    /// at the zero return address that ends a frame-pointer chain.
    Outermost,
    /// At a return address of 0 read by a CFI rule: how some runtimes end their threads,
    /// and also what a chain of stale frames reads in a zeroed stack area, so it ends a
    /// walk but does not vouch for a scanned return address (`scan`).
    ZeroReturn,
    /// Before either.
    Stopped,
}

/// Deeper stacks are cut: a bound on any walk, whatever the memory holds.
pub const MAX_DEPTH: usize = 256;

/// Compiled rules kept per address before the cache is emptied and refilled.
const RULE_CACHE_LIMIT: usize = 1 << 16;

/// Walks stacks with per-module unwind tables loaded once and cached.
pub struct Unwinder {
    modules: ModuleCache<CfiTables>,
    /// (module, address in the module) → the compiled rule, or `None` for no CFI.
    rules: HashMap<(usize, u64), Option<Arc<Rule>>, FastHash>,
    /// Return addresses met while scanning → whether a call instruction precedes them.
    call_sites: HashMap<u64, bool, FastHash>,
    ctx: Box<UnwindContext<usize>>,
}

impl Default for Unwinder {
    fn default() -> Self {
        Unwinder {
            modules: ModuleCache::default(),
            rules: HashMap::default(),
            call_sites: HashMap::default(),
            ctx: Box::new(UnwindContext::new()),
        }
    }
}

/// What to do for one frame.
enum Plan {
    Cfi(Arc<Rule>),
    /// No CFI covers the address: frame pointers, or a sigreturn trampoline.
    NoCfi,
}

impl Unwinder {
    pub fn new() -> Self {
        Unwinder::default()
    }

    pub fn unwind(&mut self, maps: &Maps, regs: &Regs, mem: &dyn Memory) -> Unwound {
        let mut walk = Unwound {
            pcs: vec![regs.ip()],
            complete: false,
            regs: vec![regs.clone()],
            scanned: Vec::new(),
            unmapped: None,
        };
        walk.complete = self.walk(maps, &mut walk, mem, true, scan::NESTED) != End::Stopped;
        walk
    }

    /// Extend `walk` frame by frame from its last registers, to the outermost frame or
    /// before. `exact`: its last pc is not a return address (the first pc of a
    /// sample). `scans`: how deep stack scans may vouch for their candidates (0: none).
    fn walk(
        &mut self,
        maps: &Maps,
        walk: &mut Unwound,
        mem: &dyn Memory,
        exact: bool,
        scans: u32,
    ) -> End {
        // The first pc, and the pc interrupted by a signal, are not return addresses.
        let mut exact = exact;
        loop {
            if walk.pcs.len() >= MAX_DEPTH {
                return End::Stopped;
            }
            let regs = walk.regs.last().expect("a walk starts with registers");
            let pc = regs.ip();
            let lookup = if exact { pc } else { pc.wrapping_sub(1) };
            // Code runs only from executable memory: a pc anywhere else is a bad step
            // (a wrong CFA, a scanned word that was data), never a frame, unless it is
            // the thread's own instruction pointer.
            let Some(mapping) = maps.find(lookup).filter(|m| m.executable) else {
                if walk.pcs.len() > 1 {
                    walk.unmapped = walk.pcs.pop();
                    walk.regs.pop();
                }
                return End::Stopped;
            };
            let plan = self.plan(maps, mapping, mem, lookup);
            let by_cfi = matches!(plan, Plan::Cfi(_));
            let step = match plan {
                Plan::Cfi(rule) => rule::apply(&rule, regs, mem).map(|s| (s, rule.signal)),
                Plan::NoCfi => match sigframe::restore(pc, regs, mem) {
                    Some(caller) => Ok((Step::Caller(caller), true)),
                    None => match frame_pointer(regs, mem) {
                        Ok(Step::Caller(c))
                            if leads_on(maps, regs, &c)
                                && (scans == 0 || self.vouched(maps, &c, mem, scans)) =>
                        {
                            Ok((Step::Caller(c), false))
                        }
                        fp => match (scans > 0)
                            .then(|| self.scan(maps, regs, mem, scans))
                            .flatten()
                        {
                            Some(caller) => {
                                walk.scanned.push(walk.pcs.len());
                                Ok((Step::Caller(caller), false))
                            }
                            // A frame pointer's caller that failed the checks is no caller.
                            None => {
                                fp.and(Err(rule::StepError::UnknownRegister(dwarf::RBP as u16)))
                            }
                        },
                    },
                },
            };
            let (caller, signal) = match step {
                Ok((Step::Caller(c), signal)) => (c, signal),
                Ok((Step::Outermost, _)) => return End::Outermost,
                Err(_) => return End::Stopped,
            };
            if caller.ip() == 0 {
                return match by_cfi || signal {
                    true => End::ZeroReturn,
                    false => End::Outermost,
                };
            }
            // A call frame's caller has a higher stack pointer; only a signal frame may
            // switch stacks. This, with the depth bound, ends any cycle.
            if !signal && caller.sp() <= regs.sp() {
                return End::Stopped;
            }
            walk.pcs.push(caller.ip());
            walk.regs.push(caller);
            exact = signal;
        }
    }

    /// The rule for the frame at `avma` inside `mapping`, from the per-address cache.
    fn plan(&mut self, maps: &Maps, mapping: &Mapping, mem: &dyn Memory, avma: u64) -> Plan {
        let load = |image: &ElfImage| {
            // Code built without unwind tables has only .debug_frame, which a stripped
            // binary keeps in its separate debug file.
            let debug = (!image.has_section(".debug_frame"))
                .then(|| module::debug_file(maps, mapping, image))
                .flatten();
            let tables = CfiTables::load(image, debug.as_ref());
            (!tables.is_empty()).then_some(tables)
        };
        let Some((module, bias)) = self.modules.place(maps, mapping, mem, load) else {
            return Plan::NoCfi;
        };
        let svma = avma.wrapping_sub(bias);
        if self.rules.len() >= RULE_CACHE_LIMIT {
            self.rules.clear();
        }
        let rule = match self.rules.get(&(module, svma)) {
            Some(r) => r.clone(),
            None => {
                let r = self
                    .modules
                    .get(module)
                    .and_then(|t| t.rule_at(svma, &mut self.ctx))
                    .map(Arc::new);
                self.rules.insert((module, svma), r.clone());
                r
            }
        };
        rule.map_or(Plan::NoCfi, Plan::Cfi)
    }
}

/// Whether a frame pointer's caller is plausible: above the frame, and returning into
/// code (or to 0, the outermost frame). Code that uses `rbp` for data mostly fails this;
/// where `rbp` happens to point into the stack, the caller must also pass the checks a
/// scanned word does (`Unwinder::vouched`), or it is looked for by scanning instead.
fn leads_on(maps: &Maps, regs: &Regs, caller: &Regs) -> bool {
    caller.sp() > regs.sp()
        && (caller.ip() == 0
            || maps
                .find(caller.ip().wrapping_sub(1))
                .is_some_and(|m| m.executable))
}

/// The caller of a frame that keeps a frame pointer: saved rbp at [rbp], return address
/// at [rbp + 8], caller's sp = rbp + 16. Refused when rbp is unknown or not a plausible
/// frame address above sp.
fn frame_pointer(regs: &Regs, mem: &dyn Memory) -> Result<Step, rule::StepError> {
    let bp = regs
        .bp()
        .ok_or(rule::StepError::UnknownRegister(dwarf::RBP as u16))?;
    if bp < regs.sp() || bp % 8 != 0 {
        return Err(rule::StepError::UnknownRegister(dwarf::RBP as u16));
    }
    let mut caller = Regs::default();
    caller.set(dwarf::RBP, mem.read_u64(bp)?);
    caller.set(dwarf::RIP, mem.read_u64(bp + 8)?);
    caller.set(dwarf::RSP, bp + 16);
    Ok(Step::Caller(caller))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::Bytes;

    fn anon(start: u64, end: u64) -> Mapping {
        Mapping {
            start,
            end,
            offset: 0,
            readable: true,
            executable: true,
            dev: "00:00".into(),
            inode: 0,
            path: String::new(),
        }
    }

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Two byte arrays at their addresses: a stack, and code at 0x10_0000.
    struct CodeAndStack<'a>(Bytes<'a>, Bytes<'a>);

    impl<'a> CodeAndStack<'a> {
        fn new(stack_base: u64, stack: &'a [u8], code: &'a [u8]) -> Self {
            CodeAndStack(
                Bytes {
                    base: stack_base,
                    bytes: stack,
                },
                Bytes {
                    base: 0x10_0000,
                    bytes: code,
                },
            )
        }
    }

    impl Memory for CodeAndStack<'_> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::process::MemError> {
            self.0.read(addr, buf).or_else(|_| self.1.read(addr, buf))
        }
    }

    #[test]
    fn frame_pointer_chain_in_anonymous_code_walks_to_a_zero_return() {
        let maps = Maps {
            pid: 0,
            mappings: vec![anon(0x10_0000, 0x20_0000)],
        };
        // Two frames: rbp → [saved rbp, ret], then a final frame returning to 0. The
        // return address follows a `call rax` (FF D0).
        let base = 0x7000_0000u64;
        let stack = words(&[0, 0, base + 0x20, 0x10_1111, 0, 0, 0, 0]);
        let mut code = vec![0x90u8; 0x2000];
        code[0x110f..0x1111].copy_from_slice(&[0xFF, 0xD0]);
        let mut regs = Regs::from_ip_sp(0x10_0010, base);
        regs.set(dwarf::RBP, base + 0x10);
        let mem = CodeAndStack::new(base, &stack, &code);
        let out = Unwinder::new().unwind(&maps, &regs, &mem);
        assert_eq!((out.pcs, out.complete), (vec![0x10_0010, 0x10_1111], true));
        // The caller's registers: its stack pointer past the return address, its rbp the
        // one saved by the callee.
        assert_eq!(out.regs[1].sp(), base + 0x20);
        assert_eq!(out.regs[1].bp(), Some(base + 0x20));
        // The same return address after code that is not a call: not a frame.
        code[0x110f..0x1111].copy_from_slice(&[0x90, 0x90]);
        let mem = CodeAndStack::new(base, &stack, &code);
        let out = Unwinder::new().unwind(&maps, &regs, &mem);
        assert_eq!((out.pcs, out.complete), (vec![0x10_0010], false));
    }

    #[test]
    fn frame_pointer_cycle_stops_incomplete() {
        let maps = Maps {
            pid: 0,
            mappings: vec![anon(0x10_0000, 0x20_0000)],
        };
        let base = 0x7000_0000u64;
        // rbp points at itself: the same frame forever.
        let stack = words(&[base, 0x10_2222]);
        let mem = Bytes {
            base,
            bytes: &stack,
        };
        let mut regs = Regs::from_ip_sp(0x10_0010, base - 0x10);
        regs.set(dwarf::RBP, base);
        let out = Unwinder::new().unwind(&maps, &regs, &mem);
        assert!(!out.complete);
        assert!(out.pcs.len() <= 3, "{:?}", out.pcs);
    }

    #[test]
    fn ip_and_sp_only_without_cfi_stops_incomplete() {
        let maps = Maps {
            pid: 0,
            mappings: vec![anon(0x10_0000, 0x20_0000)],
        };
        let mem = Bytes {
            base: 0,
            bytes: &[],
        };
        let out = Unwinder::new().unwind(&maps, &Regs::from_ip_sp(0x10_0010, 0x1000), &mem);
        assert_eq!((out.pcs, out.complete), (vec![0x10_0010], false));
    }

    #[test]
    fn a_step_to_memory_that_is_not_code_is_no_frame() {
        let maps = Maps {
            pid: 0,
            mappings: vec![anon(0x10_0000, 0x20_0000)],
        };
        // An rt_sigreturn trampoline whose saved context names pc 0x1 (a torn or stale
        // context): the walk stops there without taking 0x1 as a frame.
        let base = 0x7000_0000u64;
        let mut stack = vec![0u8; 0x100];
        let rip = 40 + 16 * 8;
        stack[rip..rip + 8].copy_from_slice(&1u64.to_le_bytes());
        let mut code = vec![0x90u8; 0x100];
        code[0x10..0x19].copy_from_slice(&[0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05]);
        let mem = CodeAndStack::new(base, &stack, &code);
        let out = Unwinder::new().unwind(&maps, &Regs::from_ip_sp(0x10_0010, base), &mem);
        assert_eq!(
            (out.pcs, out.complete, out.unmapped),
            (vec![0x10_0010], false, Some(1))
        );
    }

    #[test]
    fn unmapped_pc_stops_incomplete() {
        let out = Unwinder::new().unwind(
            &Maps::default(),
            &Regs::from_ip_sp(0x1234, 0x1000),
            &Bytes {
                base: 0,
                bytes: &[],
            },
        );
        assert_eq!((out.pcs, out.complete), (vec![0x1234], false));
    }
}
