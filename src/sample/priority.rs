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

/// Lower the calling thread to the weakest priority while sampling runs: the resolver's
/// unwinding and symbol loading then take a CPU only when the target leaves one idle, and
/// run behind, caught up from the channel before them. Returns the thread's id, for
/// `foreground`.
pub fn background() -> i32 {
    // SAFETY: a plain syscall on the calling thread.
    let tid = unsafe { libc::gettid() };
    lower(tid);
    tid
}

/// Thread `tid` of this process to `SCHED_IDLE` (again): scheduler weight 3 against an
/// ordinary thread's 1024, where nice 19 still has 15 — at nice 19 the resolver's start
/// (loading libc's DWARF) took about 1.5 % of a CPU the target wanted; under `SCHED_IDLE`
/// the target's slowdown at 100 Hz fell from 1.015x to 1.006x (docs/performance.md). Only a
/// thread with CAP_SYS_NICE may leave `SCHED_IDLE` again (`foreground`), so without it the
/// resolver goes to nice 19, which it may leave only as far as its `RLIMIT_NICE` allows.
pub fn lower(tid: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on a thread of this process with a valid parameter.
    unsafe {
        if !may_raise() || libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        }
    }
}

/// Back to the ordinary policy at nice 0 once sampling ended, so the backlog is resolved at
/// full speed however busy the target keeps the CPUs. Needs CAP_SYS_NICE (root); without it
/// the backlog drains at nice 19.
pub fn foreground(tid: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on a thread of this process with a valid parameter.
    unsafe {
        libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param);
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 0);
    }
}

/// Whether this process holds CAP_SYS_NICE in its effective set (bit 23 of `CapEff` in
/// `/proc/self/status`), which a thread needs to leave `SCHED_IDLE`.
fn may_raise() -> bool {
    const CAP_SYS_NICE: u32 = 23;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}
