//! Ticks at a fixed average rate until told to stop, the duration is up, or the target is
//! gone. Tick k falls at a random instant inside the k-th period (stratified sampling):
//! the rate stays exact and a late tick does not shift the ones after it, but a workload
//! whose cycle is a multiple of the period cannot alias with it. A fixed 10 ms tick on
//! two threads alternating through a lock every 5 ms sampled the same phase of their
//! cycle again and again, and overstated one thread's lock share by 6 points.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::perf::monotonic_ns;
use super::{Batch, Processes, Tick, priority};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    TargetExited,
}

/// The resolver thread, lowered to `SCHED_IDLE` while sampling runs (`priority::background`),
/// raised while the backlog before it is large: a full channel would block the tick loop,
/// and the kernel would drop the samples no tick drains. Twenty followed processes' first
/// captures once filled the 1024 batches in 2 s (at nice 19); the loop blocked for 3.8 s and 700
/// samples were lost. Samples also hold their stack copies (up to 63 KiB each) until
/// resolved: PyTorch on both CPUs of a 2-CPU machine starves a `SCHED_IDLE` resolver for
/// the whole run, and the queue grew by 6-13 MB/s. So the backlog counts bytes too, past
/// `BACKLOG_BYTES`. Raised, the resolver resolves at an ordinary thread's share until the
/// backlog is down to a quarter.
pub struct Backlog {
    resolver: Option<i32>,
    raised: bool,
    /// The stack bytes of recent batches, averaged (bytes per batch, smoothed over about
    /// 64 batches): the channel says how many batches wait, not how large they are.
    batch_bytes: f64,
}

/// Stack copies waiting for the resolver beyond which it is raised: 48 MiB, a few seconds
/// of two busy threads' deep stacks at 100 Hz.
const BACKLOG_BYTES: f64 = 48.0 * 1024.0 * 1024.0;

impl Backlog {
    pub fn new(resolver: Option<i32>) -> Backlog {
        Backlog {
            resolver,
            raised: false,
            batch_bytes: 0.0,
        }
    }

    fn before_send(&mut self, tx: &Sender<Batch>, batch: &Batch) {
        let Some(tid) = self.resolver else {
            return;
        };
        self.batch_bytes += (batch.stack_bytes() as f64 - self.batch_bytes) / 64.0;
        let queued_bytes = tx.len() as f64 * self.batch_bytes;
        let quarter = tx.capacity().map_or(0, |c| c / 4);
        if !self.raised && (tx.is_full() || queued_bytes > BACKLOG_BYTES) {
            priority::foreground(tid);
            self.raised = true;
        } else if self.raised && tx.len() <= quarter && queued_bytes <= BACKLOG_BYTES / 4.0 {
            priority::lower(tid);
            self.raised = false;
        }
    }
}

/// Tick until a stop; each tick's samples go down `tx`, one batch per process, the
/// resolver raised when it falls far behind (`backlog`). `target_alive(samples so far,
/// threads now)` is polled every tick (a child must be reaped to be seen as gone); it also
/// drives the progress line.
pub fn run_ticks(
    processes: &mut Processes,
    rate_hz: f64,
    duration: Option<Duration>,
    stop: &AtomicBool,
    mut target_alive: impl FnMut(u64, usize) -> bool,
    tx: &Sender<Batch>,
    mut backlog: Backlog,
) -> StopReason {
    let period = Duration::from_secs_f64(1.0 / rate_hz);
    let start = Instant::now();
    let zero_ns = monotonic_ns();
    // Instants become readings of the kernel's sample clock through this pair (Rust's
    // `Instant` is CLOCK_MONOTONIC on Linux, but does not say so).
    let clock_at = |at: Instant| zero_ns + at.saturating_duration_since(start).as_nanos() as u64;
    let mut slot = start;
    let mut next = start;
    let (mut samples, mut threads) = (0u64, 0usize);
    loop {
        if stop.load(Ordering::Relaxed) {
            return StopReason::Interrupted;
        }
        if duration.is_some_and(|d| start.elapsed() >= d) {
            return StopReason::Duration;
        }
        if !target_alive(samples, threads) {
            return StopReason::TargetExited;
        }
        let tick = Tick {
            planned_ns: clock_at(next),
            zero_ns,
        };
        match processes.tick(tick) {
            Ok(batches) => {
                threads = batches.iter().map(|b| b.samples.len()).sum();
                samples += threads as u64;
                for batch in batches {
                    backlog.before_send(tx, &batch);
                    if tx.send(batch).is_err() {
                        return StopReason::Interrupted;
                    }
                }
            }
            Err(_) => return StopReason::TargetExited,
        }
        slot += period;
        let now = Instant::now();
        if slot + period <= now {
            // Fell behind (a slow tick): skip the missed periods rather than burst.
            slot = now;
        }
        next = (slot + period.mul_f64(fastrand::f64())).max(next);
        processes.resize_stack_copies();
        processes.collect_late(next);
        processes.wait_until(next);
    }
}
