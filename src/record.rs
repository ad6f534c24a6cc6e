//! `parprof record`: attach to (or start) a process, tick until a stop, and write the
//! profile. The tick loop runs on this thread; resolving runs on another, fed by a channel.

use std::collections::HashMap;
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use crossbeam_channel::{Receiver, Sender};

use crate::cli::RecordArgs;
use crate::output::{self, Format};
use crate::process::{Maps, check, proc};
use crate::profile::{Meta, Profile};
use crate::resolve::{Resolver, SharedModules, WalkStats};
use crate::sample::{
    Ask, Backlog, Batch, ProcessEvent, Processes, Sampler, Settings, StopReason, priority,
    run_ticks,
};

/// Set by SIGINT and SIGTERM (and `top`'s quit key): the tick loop ends at its next tick.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    check_rate(args.rate)?;
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration must be a positive number of seconds");
    }
    let format = match args.format.or_else(|| Format::from_path(&args.output)) {
        Some(f) => f,
        None => bail!(
            "cannot tell the format from '{}': pass --format svg|folded|speedscope|pprof|profile",
            args.output.display()
        ),
    };
    install_stop_handlers();

    let mut child = None;
    let pid = match &args.pid {
        Some(p) => check::check_pid(p)?,
        None => {
            let c = spawn(&args.command)?;
            let pid = c.id() as i32;
            child = Some(c);
            pid
        }
    };
    // A command just started may not show its arguments in /proc yet: use our own copy.
    let command = if args.command.is_empty() {
        proc::cmdline(pid)
    } else {
        args.command.join(" ")
    };
    let meta = meta_for(pid, command, args.rate);
    let maps = Maps::read(pid).with_context(|| format!("reading the memory map of pid {pid}"))?;
    let settings = Settings {
        stack_bytes: args.stack_bytes,
        capture: args.capture,
        rate_hz: args.rate,
    };
    let mut processes = Processes::new(
        Sampler::new(pid, maps, settings),
        args.subprocesses,
        settings,
    );

    let (tx, rx) = crossbeam_channel::bounded::<Batch>(1024);
    let (asks_tx, asks_rx) = crossbeam_channel::unbounded();
    processes.take_asks(asks_rx);
    let include_native = !args.no_native;
    let profile = Profile::new(meta, format.needs_timeline());
    let (tid_tx, tid_rx) = crossbeam_channel::bounded(1);
    let resolver_thread = std::thread::Builder::new()
        .name("parprof-resolve".into())
        .spawn(move || {
            let _ = tid_tx.send(priority::background());
            resolve_all(rx, profile, include_native, asks_tx, |_, _, _| {})
        })?;
    let resolver_tid = tid_rx.recv().ok();

    let progress = crate::progress::Progress::new();
    let started = Instant::now();
    let duration = args.duration.map(Duration::from_secs_f64);
    priority::sample_on_time();
    let reason = run_ticks(
        &mut processes,
        args.rate,
        duration,
        &STOP,
        |samples, threads| {
            progress.tick(pid, samples, threads);
            alive(&mut child)
        },
        &tx,
        Backlog::new(resolver_tid),
    );
    let elapsed = started.elapsed();
    let python_version = processes.python_version();
    let capture = processes.capture();
    let kernel_lost = processes.kernel_lost();
    let names = processes.names_now();
    let python_names = processes.python_names_now();
    let permission_denied = processes.permission_denied();
    drop(processes);
    drop(tx);
    if let Some(tid) = resolver_tid {
        priority::foreground(tid);
    }
    progress.finish();

    let (mut profile, walks) = resolver_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the resolver thread panicked"))?;
    profile.meta.duration_s = elapsed.as_secs_f64();
    profile.meta.python = python_version;
    profile.meta.capture = Some(capture.name().to_string());
    for (process, tid, name) in names {
        if profile.threads.contains_key(&tid) {
            profile.thread_seen(tid, &thread_label(pid, process, &name));
        }
    }
    for (process, tid, name) in python_names {
        if profile.threads.contains_key(&tid) {
            profile.thread_named(tid, &thread_label(pid, process, &name));
        }
    }
    if permission_denied {
        eprintln!(
            "parprof: some running threads could not be stopped to read their registers (permission denied); their samples are marked [truncated]"
        );
    }
    if kernel_lost > 0 {
        eprintln!(
            "parprof: the kernel dropped {kernel_lost} records because parprof's rings were full (it fell behind); the shares are from the rest"
        );
    }
    output::write_file(&profile, format, args.threads, &args.states, &args.output)?;
    if let Some(path) = &args.summary {
        output::summary_json::write_file(&profile, path)?;
    }
    crate::output::text::summary(&profile, reason, walks, &args.output);
    if let Some(mut c) = child
        && reason != StopReason::TargetExited
    {
        // The command goes on running (a --duration stop); wait for it like a shell would.
        let _ = c.wait();
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn check_rate(rate: f64) -> anyhow::Result<()> {
    if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
        bail!(
            "--rate {rate} is out of range: give samples per second between 1 and 10000 (default 100)"
        );
    }
    Ok(())
}

/// What is known of a recording of `pid` as it starts.
pub(crate) fn meta_for(pid: i32, command: String, rate_hz: f64) -> Meta {
    Meta {
        command,
        pid,
        start_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        rate_hz,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string(),
        parprof_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Meta::default()
    }
}

/// The resolver thread: each batch to its process's resolver (made when the process is first
/// seen, dropped when it exits), every sample into the one profile; `after_batch` sees the
/// profile and the resolvers after each batch (`top` shows them). Returns the profile and
/// how its native stack walks went.
pub(crate) fn resolve_all(
    rx: Receiver<Batch>,
    mut profile: Profile,
    include_native: bool,
    asks: Sender<Ask>,
    mut after_batch: impl FnMut(&mut Profile, &mut HashMap<i32, Resolver>, u64),
) -> (Profile, WalkStats) {
    let target = profile.meta.pid;
    let mut resolvers: HashMap<i32, Resolver> = HashMap::new();
    let modules = SharedModules::default();
    let mut walks = WalkStats::default();
    let mut count = |r: Resolver| walks.merge(r.walks);
    for mut batch in rx {
        match batch.event.take() {
            Some(ProcessEvent::Exited) => {
                if let Some(mut r) = resolvers.remove(&batch.pid) {
                    r.catch_up(&mut profile);
                    count(r);
                }
                continue;
            }
            Some(ProcessEvent::Started(maps) | ProcessEvent::Exec(maps)) => {
                match resolvers.get_mut(&batch.pid) {
                    Some(r) => r.program_mapped(maps),
                    None => {
                        let mut r =
                            Resolver::with_maps(batch.pid, maps, include_native, modules.clone());
                        r.ask_sampler_on(asks.clone());
                        resolvers.insert(batch.pid, r);
                    }
                }
            }
            None => {}
        }
        // Every sampler's first batch starts its process, so this is always found.
        let Some(resolver) = resolvers.get_mut(&batch.pid) else {
            continue;
        };
        for s in &batch.samples {
            if let Some(name) = &s.name {
                profile.thread_seen(s.tid, &thread_label(target, batch.pid, name));
            }
        }
        for (tid, name) in &batch.thread_names {
            profile.thread_named(*tid, &thread_label(target, batch.pid, name));
        }
        // The process given, not its followed children: their instants are not merged.
        if let Some(o) = batch.occupancy.as_ref().filter(|_| batch.pid == target) {
            profile.meta.occupancy.get_or_insert_default().merge(o);
        }
        resolver.add_tick(&batch, &mut profile);
        after_batch(&mut profile, &mut resolvers, batch.time_ns);
    }
    for mut r in resolvers.into_values() {
        r.catch_up(&mut profile);
        count(r);
    }
    (profile, walks)
}

/// A thread's name in the profile. A followed child's threads carry their process,
/// `name (pid N)`, so they stand apart from the target's, whose names are left as they are.
fn thread_label(target: i32, pid: i32, name: &str) -> String {
    if pid == target {
        name.to_string()
    } else {
        format!("{name} (pid {pid})")
    }
}

/// Start the command with the terminal's stdin/stdout/stderr, and return once it has
/// executed its program (so the first maps read are the program's, not parprof's).
fn spawn(command: &[String]) -> anyhow::Result<Child> {
    let (prog, rest) = command
        .split_first()
        .context("give a process to profile: --pid PID or -- COMMAND [ARGS...]")?;
    let child = std::process::Command::new(prog)
        .args(rest)
        .spawn()
        .with_context(|| format!("cannot start '{prog}'"))?;
    let own = std::fs::read_link("/proc/self/exe").ok();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).ok();
        if exe.is_some() && exe != own {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(child)
}

/// A started command must be reaped to be seen as gone. A process given by `--pid` is seen
/// gone by its sampler, which reads its main thread's stat at every tick anyway.
fn alive(child: &mut Option<Child>) -> bool {
    child
        .as_mut()
        .is_none_or(|c| matches!(c.try_wait(), Ok(None)))
}

pub(crate) fn install_stop_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
}
