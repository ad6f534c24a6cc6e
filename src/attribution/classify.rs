//! Sample → state.

use super::State;
use crate::frame::Frame;
use crate::sample::Fresh;
use crate::target::Syscall;

/// Classify one fresh sample from its OS state, syscall and stack (root first).
pub fn classify(f: &Fresh, _frames: &[Frame]) -> State {
    match (f.os_state, f.syscall) {
        ('R', _) if f.cpu_wait_ns > f.run_ns => State::CpuWait,
        ('R', _) => State::Compute,
        (_, Syscall::Blocked { nr, .. }) => syscall_state(nr),
        _ => State::Other,
    }
}

fn syscall_state(nr: i64) -> State {
    match nr {
        libc::SYS_futex => State::Wait,
        libc::SYS_nanosleep | libc::SYS_clock_nanosleep => State::Sleep,
        libc::SYS_read
        | libc::SYS_write
        | libc::SYS_readv
        | libc::SYS_writev
        | libc::SYS_pread64
        | libc::SYS_pwrite64
        | libc::SYS_recvfrom
        | libc::SYS_recvmsg
        | libc::SYS_sendto
        | libc::SYS_sendmsg
        | libc::SYS_poll
        | libc::SYS_ppoll
        | libc::SYS_select
        | libc::SYS_pselect6
        | libc::SYS_epoll_wait
        | libc::SYS_epoll_pwait
        | libc::SYS_accept
        | libc::SYS_accept4
        | libc::SYS_connect => State::Io,
        _ => State::Other,
    }
}
