//! Ticks that land on time. An ordinary thread that wakes for a tick while every CPU is busy
//! waits for one, and a CPU frees up when some thread blocks — so its samples would land
//! just after threads block, and over-count waiting. On two busy cores this overstated lock
//! shares by about 5 points. The tick thread therefore runs under SCHED_FIFO at the lowest
//! real-time priority, which wakes ahead of any ordinary thread, as a timer interrupt
//! would. It sleeps between ticks and the kernel's real-time throttling caps it regardless.

/// Give the calling thread the lowest real-time priority, if allowed (root or
/// CAP_SYS_NICE). Returns whether it did; without it, sampling still works, with the bias.
pub fn sample_on_time() -> bool {
    // SAFETY: plain syscalls on the calling thread with a valid, initialised parameter.
    unsafe {
        let min = libc::sched_get_priority_min(libc::SCHED_FIFO);
        let param = libc::sched_param {
            sched_priority: min.max(1),
        };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
}

/// Lower the calling thread to the weakest ordinary priority (nice 19) while sampling
/// runs: the resolver's unwinding and symbol loading then take a CPU only when the target
/// leaves one idle, or about 1.5 % of one it wants, instead of an even share, and run
/// behind, caught up from the channel before them. Returns the thread's id, for
/// `foreground`.
pub fn background() -> i32 {
    // SAFETY: a plain syscall on the calling thread.
    let tid = unsafe { libc::gettid() };
    lower(tid);
    tid
}

/// Thread `tid` of this process to nice 19 (again).
pub fn lower(tid: i32) {
    // SAFETY: a plain syscall on a thread of this process.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// Back to the ordinary priority once sampling ended, so the backlog is resolved at full
/// speed however busy the target keeps the CPUs. Needs CAP_SYS_NICE (root); without it the
/// backlog drains at the lower priority.
pub fn foreground(tid: i32) {
    // SAFETY: a plain syscall on a thread of this process.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 0);
    }
}
