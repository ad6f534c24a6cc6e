//! The last resort for a frame that no CFI covers and whose frame pointer leads nowhere
//! (hand-written assembly, such as the BLAS kernels under numpy and PyTorch, which keep
//! data in `rbp`): scan the stack above the stack pointer for the return address, as
//! Breakpad and crashpad do.
//!
//! A word is taken as the return address only when all of these hold, so that a code
//! address left on the stack as data (a function pointer, a spilled pc) is never taken:
//! 1. it points just past a call instruction (decoded from the code bytes before it: a
//!    `call rel32` whose target is executable, or an indirect `call r/m64` whose length
//!    from its ModRM byte ends exactly there);
//! 2. the walk continues consistently from it: where the code it returns into has CFI,
//!    that CFI unwinds the caller to a higher stack pointer and a return address that is
//!    0 (the outermost frame) or in executable memory; where that code has no CFI either
//!    (a caller in the same assembly library), a scan from its frame finds a caller that
//!    passes these checks in turn, at most `NESTED` frames on.

use super::rule::{self, Step};
use super::{Plan, Unwinder};
use crate::process::{Maps, Memory, Regs};

/// Stack words looked at above the stack pointer, at most: 16 KiB, room for a kernel's
/// own frame and spills. Most candidates are rejected by a map lookup alone.
const SCAN_WORDS: u64 = 2048;

/// Frames without CFI a candidate may be vouched for through, before code with CFI.
const NESTED: u32 = 2;

impl Unwinder {
    /// The caller of the frame whose registers are `regs`, found by scanning its stack;
    /// `None` when no word passes the checks. The callee-saved registers are passed on as
    /// they are: the caller's CFI restores what it saved, and the consistency check
    /// rejects a continuation that needed a value the callee had overwritten.
    pub(super) fn scan(&mut self, maps: &Maps, regs: &Regs, mem: &dyn Memory) -> Option<Regs> {
        self.scan_nested(maps, regs, mem, NESTED)
    }

    /// `scan`, vouching for a caller without CFI through at most `depth` more scans.
    fn scan_nested(
        &mut self,
        maps: &Maps,
        regs: &Regs,
        mem: &dyn Memory,
        depth: u32,
    ) -> Option<Regs> {
        let sp = regs.sp();
        for i in 0..SCAN_WORDS {
            let slot = sp.checked_add(i * 8)?;
            let word = mem.read_u64(slot).ok()?;
            let executable = maps
                .find(word.wrapping_sub(1))
                .is_some_and(|m| m.executable);
            if !executable || !self.follows_a_call(maps, word, mem) {
                continue;
            }
            let mut caller = regs.clone();
            caller.set(crate::process::regs::dwarf::RIP, word);
            caller.set(crate::process::regs::dwarf::RSP, slot + 8);
            if self.continues(maps, &caller, mem, depth) {
                return Some(caller);
            }
        }
        None
    }

    /// Whether the code just before `ret` is a call instruction (cached per address).
    fn follows_a_call(&mut self, maps: &Maps, ret: u64, mem: &dyn Memory) -> bool {
        if let Some(&known) = self.call_sites.get(&ret) {
            return known;
        }
        let mut code = [0u8; 8];
        let is_call = ret
            .checked_sub(8)
            .is_some_and(|at| mem.read(at, &mut code).is_ok())
            && call_ends_at(
                &code,
                |target| maps.find(target).is_some_and(|m| m.executable),
                ret,
            );
        if self.call_sites.len() >= super::RULE_CACHE_LIMIT {
            self.call_sites.clear();
        }
        self.call_sites.insert(ret, is_call);
        is_call
    }

    /// Whether the walk continues consistently from `caller`: through the CFI of the code
    /// it returns into, or, without CFI there, through a scan `depth` allows.
    fn continues(&mut self, maps: &Maps, caller: &Regs, mem: &dyn Memory, depth: u32) -> bool {
        let lookup = caller.ip().wrapping_sub(1);
        let Some(mapping) = maps.find(lookup) else {
            return false;
        };
        let Plan::Cfi(rule) = self.plan(maps, mapping, mem, lookup) else {
            return depth > 0 && self.scan_nested(maps, caller, mem, depth - 1).is_some();
        };
        match rule::apply(&rule, caller, mem) {
            Ok(Step::Outermost) => true,
            Ok(Step::Caller(next)) => {
                next.sp() > caller.sp()
                    && (next.ip() == 0
                        || maps
                            .find(next.ip().wrapping_sub(1))
                            .is_some_and(|m| m.executable))
            }
            Err(_) => false,
        }
    }
}

/// Whether `code`, the 8 bytes before address `ret`, ends with an x86-64 call: `E8 rel32`
/// whose target `executable` accepts, or `FF /2` (an indirect call through a register or
/// memory, optionally after a REX prefix) whose ModRM, SIB and displacement bytes end
/// exactly at `ret`.
fn call_ends_at(code: &[u8; 8], executable: impl Fn(u64) -> bool, ret: u64) -> bool {
    if code[3] == 0xE8 {
        let rel = i32::from_le_bytes([code[4], code[5], code[6], code[7]]);
        if executable(ret.wrapping_add_signed(rel as i64)) {
            return true;
        }
    }
    (2..=7).any(|len| {
        let at = 8 - len;
        code[at] == 0xFF && (code[at + 1] >> 3) & 7 == 2 && indirect_len(&code[at + 1..]) == len
    })
}

/// The length of an `FF /2` instruction (opcode included) from its ModRM byte on.
fn indirect_len(modrm_on: &[u8]) -> usize {
    let modrm = modrm_on[0];
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return 2;
    }
    let sib = rm == 4;
    let base_is_disp32 = sib && modrm_on.get(1).is_some_and(|s| s & 7 == 5);
    let disp = match md {
        0 if rm == 5 || base_is_disp32 => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    2 + sib as usize + disp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 8 bytes before a return address, with `tail` at their end.
    fn before(tail: &[u8]) -> [u8; 8] {
        let mut code = [0x90u8; 8];
        code[8 - tail.len()..].copy_from_slice(tail);
        code
    }

    #[test]
    fn calls_of_every_form_are_recognised_by_their_length() {
        let anywhere = |_| true;
        let ret = 0x40_1000;
        for tail in [
            &[0xE8, 0x10, 0x00, 0x00, 0x00][..],         // call rel32
            &[0xFF, 0xD0],                               // call rax
            &[0x41, 0xFF, 0xD3],                         // call r11
            &[0xFF, 0x10],                               // call [rax]
            &[0xFF, 0x14, 0x24],                         // call [rsp]
            &[0xFF, 0x50, 0x08],                         // call [rax+8]
            &[0xFF, 0x15, 0x00, 0x10, 0x00, 0x00],       // call [rip+0x1000]
            &[0xFF, 0x94, 0xC8, 0x00, 0x01, 0x00, 0x00], // call [rax+rcx*8+0x100]
        ] {
            assert!(call_ends_at(&before(tail), anywhere, ret), "{tail:x?}");
        }
    }

    #[test]
    fn code_that_is_not_a_call_is_refused() {
        let ret = 0x40_1000;
        for tail in [
            &[0xC3][..],               // ret
            &[0x55, 0x48, 0x89, 0xE5], // push rbp; mov rbp, rsp
            &[0xFF, 0xE0],             // jmp rax (FF /4)
            &[0xFF, 0x50],             // call [rax+disp8] cut short
            &[0x48, 0x83, 0xC4, 0x08], // add rsp, 8
        ] {
            assert!(!call_ends_at(&before(tail), |_| true, ret), "{tail:x?}");
        }
        // A `call rel32` into memory that is not code.
        let e8 = before(&[0xE8, 0x00, 0x00, 0x00, 0x10]);
        assert!(!call_ends_at(&e8, |_| false, ret));
    }
}
