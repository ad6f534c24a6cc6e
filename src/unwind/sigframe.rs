//! Signal frames without CFI: a signal handler returns into a trampoline that calls
//! `rt_sigreturn`; at that point the stack pointer addresses the `ucontext_t` the kernel
//! saved, whose registers are those of the interrupted code. glibc describes its
//! `__restore_rt` with CFI; this covers trampolines that have none (other libcs, JITs).

use crate::process::regs::dwarf;
use crate::process::{Memory, Regs};

/// `mov $15, %rax; syscall` — rt_sigreturn on x86_64.
const RT_SIGRETURN: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Offset of `uc_mcontext.gregs` in `ucontext_t` (flags, link, a 24-byte `stack_t`).
const GREGS: u64 = 40;

/// DWARF register number of each entry of `gregs`, in kernel order (REG_R8 .. REG_RIP).
const GREGS_ORDER: [usize; 17] = [
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    dwarf::RDI,
    dwarf::RSI,
    dwarf::RBP,
    dwarf::RBX,
    dwarf::RDX,
    dwarf::RAX,
    dwarf::RCX,
    dwarf::RSP,
    dwarf::RIP,
];

/// The interrupted registers when `pc` is an rt_sigreturn trampoline, else `None`.
pub fn restore(pc: u64, regs: &Regs, mem: &dyn Memory) -> Option<Regs> {
    let mut code = [0u8; RT_SIGRETURN.len()];
    mem.read(pc, &mut code).ok()?;
    if code != RT_SIGRETURN {
        return None;
    }
    let uc = regs.get(dwarf::RSP)?;
    let mut gregs = [0u8; GREGS_ORDER.len() * 8];
    mem.read(uc + GREGS, &mut gregs).ok()?;
    let mut out = Regs::default();
    for (reg, bytes) in GREGS_ORDER.iter().zip(gregs.chunks_exact(8)) {
        out.set(*reg, u64::from_le_bytes(bytes.try_into().ok()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::Bytes;

    #[test]
    fn reads_the_interrupted_registers_from_the_ucontext() {
        // One buffer: the trampoline's code at 0x1000, the ucontext at 0x1100.
        let mut bytes = vec![0u8; 0x200];
        bytes[..9].copy_from_slice(&RT_SIGRETURN);
        let greg = |i: usize| 0x1100 - 0x1000 + GREGS as usize + i * 8;
        bytes[greg(11)..greg(11) + 8].copy_from_slice(&0xb0b0u64.to_le_bytes()); // rbx
        bytes[greg(15)..greg(15) + 8].copy_from_slice(&0x7ff0_0000u64.to_le_bytes()); // rsp
        bytes[greg(16)..greg(16) + 8].copy_from_slice(&0x40_1000u64.to_le_bytes()); // rip
        let mem = Bytes {
            base: 0x1000,
            bytes: &bytes,
        };
        let r = restore(0x1000, &Regs::from_ip_sp(0x1000, 0x1100), &mem).unwrap();
        assert_eq!(
            (r.ip(), r.sp(), r.get(dwarf::RBX)),
            (0x40_1000, 0x7ff0_0000, Some(0xb0b0))
        );
        assert!(restore(0x1001, &Regs::from_ip_sp(0x1001, 0x1100), &mem).is_none());
    }
}
