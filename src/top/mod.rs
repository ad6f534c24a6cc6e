//! `parprof top --pid PID`: `record`'s sampler and resolver, with a live screen instead of
//! an output file. The tick loop runs on this thread as in `record`, the resolver on its
//! own, and the screen on a third; the resolver hands the screen a [`Snapshot`] at every
//! refresh, so drawing never holds up sampling or resolving.

mod screen;
mod snapshot;

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};

use crate::cli::{DEFAULT_STACK_BYTES, TopArgs};
use crate::process::{Maps, check, proc};
use crate::profile::Profile;
use crate::record::{STOP, check_rate, install_stop_handlers, meta_for, resolve_all};
use crate::sample::{Backlog, Processes, Sampler, Settings, priority, run_ticks};
use screen::Closed;
use snapshot::Snapshot;

pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    check_rate(args.rate)?;
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        bail!("--interval must be at least 0.1 seconds");
    }
    let pid = check::check_pid(&args.pid)?;
    install_stop_handlers();
    let maps = Maps::read(pid).with_context(|| format!("reading the memory map of pid {pid}"))?;
    let settings = Settings {
        stack_bytes: DEFAULT_STACK_BYTES,
        capture: args.capture,
        rate_hz: args.rate,
    };
    let mut processes = Processes::new(Sampler::new(pid, maps, settings), false, settings);
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let (asks_tx, asks_rx) = crossbeam_channel::unbounded();
    processes.take_asks(asks_rx);
    // One snapshot in flight: a screen that falls behind skips refreshes, never queues them.
    let (snap_tx, snap_rx) = crossbeam_channel::bounded::<Snapshot>(1);
    let profile = Profile::new(meta_for(pid, proc::cmdline(pid), args.rate), false);
    let refresh_ns = (args.interval * 1e9) as u64;
    let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
    let resolver = std::thread::Builder::new()
        .name("parprof-resolve".into())
        .spawn(move || {
            let _ = tid_tx.send(priority::background());
            let mut next_ns = 0;
            resolve_all(rx, profile, true, asks_tx, |profile, resolvers, time_ns| {
                if time_ns < next_ns {
                    return;
                }
                next_ns = time_ns + refresh_ns;
                for r in resolvers.values_mut() {
                    r.catch_up(profile);
                }
                let _ = snap_tx.try_send(Snapshot::of(profile, time_ns as f64 / 1e9));
            })
        })?;
    let resolver_tid = tid_rx.recv().ok();
    let screen = std::thread::Builder::new()
        .name("parprof-screen".into())
        .spawn(move || {
            let closed = screen::run(&snap_rx, &STOP);
            STOP.store(true, Ordering::Relaxed);
            closed
        })?;

    priority::sample_on_time();
    run_ticks(
        &mut processes,
        args.rate,
        None,
        &STOP,
        |_, _| true,
        &tx,
        Backlog::new(resolver_tid),
    );
    // Released before anything else: the target must not wait on the screen.
    drop(processes);
    drop(tx);
    let _ = resolver.join();
    let closed = screen
        .join()
        .map_err(|_| anyhow::anyhow!("the screen thread panicked"))?
        .context("drawing on the terminal")?;
    if closed == Closed::TargetGone {
        eprintln!("parprof top: pid {pid} exited");
    }
    Ok(ExitCode::SUCCESS)
}
