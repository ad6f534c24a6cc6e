//! `parprof record`: attach to (or start) a process, tick until a stop, and write the
//! profile. The tick loop runs on this thread; resolving runs on another, fed by a channel.

use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::cli::RecordArgs;
use crate::output::{self, Format};
use crate::profile::{Meta, Profile};
use crate::python::PythonReader;
use crate::resolve::Resolver;
use crate::sample::{RawSample, Sampler, StopReason, run_ticks};
use crate::target::{check, proc, Maps, ProcessMemory};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
        bail!("--rate {} is out of range: give samples per second between 1 and 10000 (default 100)", args.rate);
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration must be a positive number of seconds");
    }
    let format = match args.format.or_else(|| Format::from_path(&args.output)) {
        Some(f) => f,
        None => bail!("cannot tell the format from '{}': pass --format svg|folded|speedscope|pprof|profile", args.output.display()),
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
    let meta = Meta {
        // A command just started may not show its arguments in /proc yet: use our own copy.
        command: if args.command.is_empty() { proc::cmdline(pid) } else { args.command.join(" ") },
        pid,
        start_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        rate_hz: args.rate,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string(),
        parprof_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Meta::default()
    };
    let maps = Maps::read(pid).with_context(|| format!("reading the memory map of pid {pid}"))?;
    let python = PythonReader::detect(pid, &maps, ProcessMemory::new(pid)).unwrap_or(None);
    let mut sampler = Sampler::new(pid, python, args.stack_bytes);

    let (tx, rx) = crossbeam_channel::bounded::<Vec<RawSample>>(1024);
    let (full_regs_tx, full_regs_rx) = crossbeam_channel::unbounded();
    sampler.take_full_register_requests(full_regs_rx);
    let include_native = !args.no_native;
    let keep_timeline = format.needs_timeline();
    let resolver_thread = std::thread::Builder::new().name("parprof-resolve".into()).spawn(move || {
        let mut resolver = Resolver::new(pid, include_native);
        resolver.ask_full_registers_on(full_regs_tx);
        let mut profile = Profile::new(meta, keep_timeline);
        for batch in rx {
            for s in &batch {
                if let Some(name) = &s.name {
                    profile.thread_seen(s.tid, name);
                }
            }
            resolver.add_tick(&batch, &mut profile);
        }
        (profile, resolver.complete_walks, resolver.walks)
    })?;

    let progress = crate::progress::Progress::new();
    let started = Instant::now();
    let duration = args.duration.map(Duration::from_secs_f64);
    crate::sample::priority::sample_on_time();
    let reason = run_ticks(&mut sampler, args.rate, duration, &STOP, |samples, threads| {
        progress.tick(pid, samples, threads);
        alive(pid, &mut child)
    }, &tx);
    let elapsed = started.elapsed();
    let python_version = sampler.python_version();
    let names = sampler.names_now();
    let permission_denied = sampler.permission_denied;
    drop(sampler);
    drop(tx);
    progress.finish();

    let (mut profile, complete, walks) = resolver_thread.join().map_err(|_| anyhow::anyhow!("the resolver thread panicked"))?;
    profile.meta.duration_s = elapsed.as_secs_f64();
    profile.meta.python = python_version;
    for (tid, name) in names {
        if profile.threads.contains_key(&tid) {
            profile.thread_seen(tid, &name);
        }
    }
    if permission_denied {
        eprintln!("parprof: some running threads could not be stopped to read their registers (permission denied); their samples are marked [truncated]");
    }
    output::write_file(&profile, format, args.threads, &args.output)?;
    if let Some(path) = &args.summary {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        output::summary_json::write(&profile, &mut out).with_context(|| format!("writing {}", path.display()))?;
    }
    crate::output::text::summary(&profile, reason, complete, walks, &args.output);
    if let Some(mut c) = child {
        if reason != StopReason::TargetExited {
            // The command goes on running (a --duration stop); wait for it like a shell would.
            let _ = c.wait();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Start the command with the terminal's stdin/stdout/stderr, and return once it has
/// executed its program (so the first maps read are the program's, not parprof's).
fn spawn(command: &[String]) -> anyhow::Result<Child> {
    let (prog, rest) = command.split_first().context("give a process to profile: --pid PID or -- COMMAND [ARGS...]")?;
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

fn alive(pid: i32, child: &mut Option<Child>) -> bool {
    match child {
        Some(c) => matches!(c.try_wait(), Ok(None)),
        None => proc::ThreadStat::read(pid, pid).is_ok_and(|s| s.state != 'Z' && s.state != 'X'),
    }
}

fn install_stop_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(on_stop_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
}
