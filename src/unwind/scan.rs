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
//! 2. the walk continued from it reaches the thread's outermost frame, through CFI and
//!    frame pointers, and through further scans (a caller in the same assembly library)
//!    at most `NESTED` deep. This refuses stale return addresses that earlier, deeper
//!    calls left below the live frames: their chains look right for a frame or two, then
//!    break. Only a frame whose CFI ends the walk (`clone3`, `_start`) counts: a chain of
//!    stale frames often ends on a zero it reads as a return address (zeroed buffers lie
//!    where earlier calls had their frames), which ends a walk but proves nothing here.
//!    Taking such zeros as the outermost frame let printf's frames, left below OpenBLAS's
//!    Haswell kernel by an earlier call, stand in for its live callers in 3 % of samples.

use super::{Unwinder, Unwound};
use crate::process::{Maps, Memory, Regs};

/// Stack words looked at above the stack pointer, at most: 48 KiB. OpenBLAS's Haswell
/// dgemm kernel aligns a 28 KiB buffer below its caller's frame, so its return address
/// sits 28–32 KiB above its stack pointer. Most words are rejected by a map lookup alone.
const SCAN_WORDS: usize = 6144;

/// Words read at once: the copied stack ends well before 48 KiB, and the rest is read
/// from the target, a chunk per read rather than a word per read.
const CHUNK_WORDS: usize = 512;

/// Scans a walk may make within the walks that vouch for its candidates: the frames
/// without CFI above a scanned one (callers in the same assembly library).
pub(super) const NESTED: u32 = 2;

impl Unwinder {
    /// The caller of the frame whose registers are `regs`, found by scanning its stack;
    /// `None` when no word passes the checks. The caller knows only its pc and stack
    /// pointer: where the scanned code saved the callee-saved registers it reuses is
    /// unknown, and passing on the values it left (a BLAS kernel's loop counters in `rbx`
    /// and `rbp`) sent frame-pointer-based CFA rules above into heap memory, through
    /// invented frames that happened to reach `clone3`. Unknown, such a rule stops the walk.
    /// `depth` bounds the scans the walks that vouch for a candidate may make in turn.
    pub(super) fn scan(
        &mut self,
        maps: &Maps,
        regs: &Regs,
        mem: &dyn Memory,
        depth: u32,
    ) -> Option<Regs> {
        let sp = regs.sp();
        let mut chunk = [0u8; CHUNK_WORDS * 8];
        for first in (0..SCAN_WORDS).step_by(CHUNK_WORDS) {
            let base = sp.checked_add(first as u64 * 8)?;
            // A chunk past the stack's end: its words up to there, one by one.
            let words = if mem.read(base, &mut chunk).is_ok() {
                CHUNK_WORDS
            } else {
                readable_words(mem, base, &mut chunk)
            };
            if words == 0 {
                return None;
            }
            for (i, bytes) in chunk[..words * 8].chunks_exact(8).enumerate() {
                let word = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                let slot = base + i as u64 * 8;
                let executable = maps
                    .find(word.wrapping_sub(1))
                    .is_some_and(|m| m.executable);
                if !executable || !self.follows_a_call(maps, word, mem) {
                    continue;
                }
                let caller = Regs::from_ip_sp(word, slot + 8);
                if self.continues(maps, &caller, mem, depth.saturating_sub(1)) {
                    return Some(caller);
                }
            }
        }
        None
    }

    /// Whether a caller found another way (a frame pointer in code without CFI) passes the
    /// checks a scanned word must: it returns just past a call, and the walk continued
    /// from it reaches the outermost frame, with scans `depth` allows.
    pub(super) fn vouched(
        &mut self,
        maps: &Maps,
        caller: &Regs,
        mem: &dyn Memory,
        depth: u32,
    ) -> bool {
        // A return address of 0 ends the walk: nothing to vouch for.
        caller.ip() == 0
            || (self.follows_a_call(maps, caller.ip(), mem)
                && self.continues(maps, caller, mem, depth.saturating_sub(1)))
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

    /// Whether the walk continues consistently from `caller`: walked on from there (with
    /// scans `depth` allows), it reaches the outermost frame. A stale return address left
    /// below the live frames by an earlier, deeper call is consistent for a frame or two
    /// (its own CFI unwinds it into the stale frames above it), but its chain breaks
    /// before the thread's entry; the live one reaches it.
    fn continues(&mut self, maps: &Maps, caller: &Regs, mem: &dyn Memory, depth: u32) -> bool {
        let mut rest = Unwound {
            pcs: vec![caller.ip()],
            regs: vec![caller.clone()],
            ..Unwound::default()
        };
        self.walk(maps, &mut rest, mem, false, depth) == super::End::Outermost
    }
}

/// Read words from `base` into `chunk` one by one until one cannot be read; how many were.
fn readable_words(mem: &dyn Memory, base: u64, chunk: &mut [u8]) -> usize {
    let mut n = 0;
    for (i, word) in chunk.chunks_exact_mut(8).enumerate() {
        if mem.read(base + i as u64 * 8, word).is_err() {
            break;
        }
        n += 1;
    }
    n
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
