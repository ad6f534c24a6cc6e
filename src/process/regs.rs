//! x86_64 registers indexed by their DWARF register numbers, the numbering CFI uses.

/// DWARF register numbers on x86_64 (System V psABI, figure 3.36).
pub mod dwarf {
    pub const RAX: usize = 0;
    pub const RDX: usize = 1;
    pub const RCX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSI: usize = 4;
    pub const RDI: usize = 5;
    pub const RBP: usize = 6;
    pub const RSP: usize = 7;
    pub const R8: usize = 8;
    /// The return-address column: holds the instruction pointer.
    pub const RIP: usize = 16;
    pub const COUNT: usize = 17;
}

/// A thread's general-purpose registers. Only the instruction pointer and stack pointer
/// are always known; registers that come from `/proc/<tid>/syscall` (a thread blocked in a
/// syscall, read without stopping it) leave the others `None`, which CFI handles: it
/// only needs callee-saved registers that a frame actually restores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    values: [Option<u64>; dwarf::COUNT],
}

impl Regs {
    pub fn from_ip_sp(ip: u64, sp: u64) -> Self {
        let mut r = Regs::default();
        r.set(dwarf::RIP, ip);
        r.set(dwarf::RSP, sp);
        r
    }

    /// Registers as `PTRACE_GETREGS` returns them.
    pub fn from_user_regs(u: &libc::user_regs_struct) -> Self {
        let mut r = Regs::default();
        let pairs = [
            (dwarf::RAX, u.rax),
            (dwarf::RDX, u.rdx),
            (dwarf::RCX, u.rcx),
            (dwarf::RBX, u.rbx),
            (dwarf::RSI, u.rsi),
            (dwarf::RDI, u.rdi),
            (dwarf::RBP, u.rbp),
            (dwarf::RSP, u.rsp),
            (8, u.r8),
            (9, u.r9),
            (10, u.r10),
            (11, u.r11),
            (12, u.r12),
            (13, u.r13),
            (14, u.r14),
            (15, u.r15),
            (dwarf::RIP, u.rip),
        ];
        for (n, v) in pairs {
            r.set(n, v);
        }
        r
    }

    pub fn get(&self, n: usize) -> Option<u64> {
        self.values.get(n).copied().flatten()
    }

    pub fn set(&mut self, n: usize, v: u64) {
        if let Some(slot) = self.values.get_mut(n) {
            *slot = Some(v);
        }
    }

    pub fn clear(&mut self, n: usize) {
        if let Some(slot) = self.values.get_mut(n) {
            *slot = None;
        }
    }

    pub fn ip(&self) -> u64 {
        self.get(dwarf::RIP).unwrap_or(0)
    }

    pub fn sp(&self) -> u64 {
        self.get(dwarf::RSP).unwrap_or(0)
    }

    pub fn bp(&self) -> Option<u64> {
        self.get(dwarf::RBP)
    }
}
