//! What a thread's user registers say about the system call it is in. While a thread is in
//! a syscall the kernel keeps the registers it entered with: `ip` just after the `syscall`
//! instruction, the arguments in `rdi, rsi, rdx, r10, r8, r9`, and in `rax` the kernel's
//! placeholder `-ENOSYS` until the call returns (or a restart code if a signal cut it short).

use crate::process::regs::dwarf::{R8, RAX, RDI, RDX, RSI};
use crate::process::{Memory, ProcessMemory, Regs, Syscall};

/// Whether the thread was stopped inside a blocking system call that our interrupt cut
/// short: `ip` follows a `syscall` instruction and `rax` holds one of the kernel's restart
/// codes. A thread runnable at the tick and found so had blocked in between. A woken
/// thread still on its way out of a syscall (a lock handed to it) returns a real value
/// instead, and is classified by its stack like any running thread.
pub fn interrupted(mem: &ProcessMemory, regs: &Regs) -> bool {
    const RESTART_CODES: [i64; 4] = [-512, -513, -514, -516]; // ERESTARTSYS, NOINTR, NOHAND, _RESTARTBLOCK
    regs.get(RAX)
        .is_some_and(|ax| RESTART_CODES.contains(&(ax as i64)))
        && follows_syscall_instruction(mem, regs.ip())
}

/// The futex wait a thread was in when it left its CPU (`regs` from its switch-out), if it
/// was in one: it slept there, and if it is runnable now it was woken and has not run since.
///
/// The syscall number is not among the registers the kernel samples (it is in `orig_ax`),
/// so a futex wait is told by its arguments: a wait operation in `rsi` and an aligned user
/// address in `rdi`. A `clock_nanosleep(CLOCK_MONOTONIC, 0, …)` also has 0 in `rsi`, but its
/// clock id in `rdi` is no address.
pub fn futex_wait_left_in(mem: &ProcessMemory, regs: &Regs) -> Option<Syscall> {
    const ENOSYS: i64 = -(libc::ENOSYS as i64);
    const WAIT_OPS: [i32; 5] = [
        libc::FUTEX_WAIT,
        libc::FUTEX_LOCK_PI,
        libc::FUTEX_WAIT_BITSET,
        libc::FUTEX_WAIT_REQUEUE_PI,
        libc::FUTEX_LOCK_PI2,
    ];
    let op = regs.get(RSI)? as i32 & !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);
    let word = regs.get(RDI)?;
    let in_syscall = regs.get(RAX)? as i64 == ENOSYS;
    let plausible = (0x1000..USER_SPACE_END).contains(&word) && word.is_multiple_of(4);
    if !(in_syscall && plausible && WAIT_OPS.contains(&op)) {
        return None;
    }
    if !follows_syscall_instruction(mem, regs.ip()) {
        return None;
    }
    let arg = |n: usize| regs.get(n).unwrap_or(0);
    let (r8, r9, r10) = (arg(R8), arg(R8 + 1), arg(R8 + 2));
    Some(Syscall::Blocked {
        nr: libc::SYS_futex,
        args: [word, arg(RSI), arg(RDX), r10, r8, r9],
        sp: regs.sp(),
        pc: regs.ip(),
    })
}

/// Addresses at or above this are not user-space pointers on x86_64.
const USER_SPACE_END: u64 = 0x0000_8000_0000_0000;

/// `ip` is just after a `syscall` instruction (0f 05).
fn follows_syscall_instruction(mem: &ProcessMemory, ip: u64) -> bool {
    let mut insn = [0u8; 2];
    ip.checked_sub(2)
        .is_some_and(|a| mem.read(a, &mut insn).is_ok())
        && insn == [0x0f, 0x05]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::regs::dwarf::RIP;

    /// Registers as a thread's switch-out inside `futex(word, op, 2)` leaves them, with `ip`
    /// after a real `syscall` instruction in this process's memory.
    fn left_in(code: &[u8; 4], rax: i64, word: u64, op: i32) -> Regs {
        let mut r = Regs::from_ip_sp(code.as_ptr() as u64 + 2, 0x7ff0);
        r.set(RAX, rax as u64);
        r.set(RDI, word);
        r.set(RSI, op as u64);
        r.set(RDX, 2);
        r
    }

    #[test]
    fn a_futex_wait_is_told_by_its_arguments_and_the_instruction_before_ip() {
        let mem = ProcessMemory::new(std::process::id() as i32);
        let code = [0x0f, 0x05, 0x90, 0x90];
        let private_wait = libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG;
        let enosys = -(libc::ENOSYS as i64);
        let word = 0x5555_0000_40c0;
        let got = futex_wait_left_in(&mem, &left_in(&code, enosys, word, private_wait));
        assert_eq!(got.and_then(|s| s.arg0()), Some(word));
        assert_eq!(got.and_then(|s| s.number()), Some(libc::SYS_futex));
        let bitset = libc::FUTEX_WAIT_BITSET | libc::FUTEX_CLOCK_REALTIME;
        assert!(futex_wait_left_in(&mem, &left_in(&code, enosys, word, bitset)).is_some());

        // Returned (rax holds a result), a wake, a clock id in rdi (clock_nanosleep), an
        // unaligned word, or no syscall instruction before ip: not a futex wait.
        let not = |r: Regs| assert_eq!(futex_wait_left_in(&mem, &r), None, "{r:?}");
        not(left_in(&code, 0, word, private_wait));
        not(left_in(&code, enosys, word, libc::FUTEX_WAKE));
        not(left_in(&code, enosys, 1, 0));
        not(left_in(&code, enosys, word + 1, private_wait));
        let mut r = left_in(&code, enosys, word, private_wait);
        r.set(RIP, code.as_ptr() as u64 + 4);
        not(r);
    }
}
