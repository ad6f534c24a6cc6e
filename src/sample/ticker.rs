//! Ticks at a fixed rate on absolute deadlines (a late tick does not shift the ones after
//! it), until told to stop, the duration is up, or the target is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{RawSample, Sampler};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Interrupted,
    TargetExited,
}

/// Tick until a stop; each tick's samples go down `tx` as one batch.
/// `target_alive(samples so far, threads now)` is polled every tick (a child must be
/// reaped to be seen as gone); it also drives the progress line.
pub fn run_ticks(
    sampler: &mut Sampler,
    rate_hz: f64,
    duration: Option<Duration>,
    stop: &AtomicBool,
    mut target_alive: impl FnMut(u64, usize) -> bool,
    tx: &Sender<Vec<RawSample>>,
) -> StopReason {
    let period = Duration::from_secs_f64(1.0 / rate_hz);
    let start = Instant::now();
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
        match sampler.tick(start.elapsed().as_nanos() as u64) {
            Ok(batch) => {
                samples += batch.len() as u64;
                threads = batch.len();
                if tx.send(batch).is_err() {
                    return StopReason::Interrupted;
                }
            }
            Err(_) => return StopReason::TargetExited,
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Fell behind (a slow tick): skip the missed ticks rather than burst.
            next = now;
        }
    }
}
