//! `parprof dump --pid PID [--json]`: one capture of every thread — its stack, its state
//! and the lock it waits for — the wait-for edges between threads (waiter → lock →
//! holder) and any deadlock cycle, named in one sentence.
//!
//! Threads blocked in a syscall are read from `/proc` without being stopped; running ones
//! are stopped only for as long as it takes to read their registers, then detached, so the
//! target is left as it was.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::attribution::locks::{caller_of_acquire, display_name, python_site};
use crate::attribution::waitfor::{self, Edge};
use crate::attribution::{Attribution, Globals};
use crate::cli::DumpArgs;
use crate::frame::Frame;
use crate::process::{Maps, check, proc};
use crate::profile::State;
use crate::python::own_gil;
use crate::resolve::Resolver;
use crate::sample::{Capture, SampleData, Sampler, Settings, Tick};

/// Stack bytes copied per thread: more than a recording copies, as this happens once.
const STACK_BYTES: usize = 256 * 1024;
/// How long to wait for threads that were waiting for a CPU when they were interrupted.
const LATE_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug, Serialize)]
pub struct Dump {
    pub pid: i32,
    pub command: String,
    pub threads: Vec<ThreadDump>,
    pub edges: Vec<Edge>,
    pub deadlocks: Vec<Deadlock>,
}

#[derive(Debug, Serialize)]
pub struct ThreadDump {
    pub tid: i32,
    /// Its Python name (`threading`) when it has one, else the kernel's.
    pub name: String,
    /// The kernel's name, when a Python name is shown instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    pub state: &'static str,
    /// The innermost Python frame's label, for a thread running Python code: what a
    /// Python programmer reads first.
    pub python: Option<String>,
    /// Frame labels, root first.
    pub frames: Vec<String>,
    /// Labels of the native frames found by scanning the stack for return addresses (code
    /// without unwind info or frame pointer): checked, not proven by unwind info.
    pub scanned: Vec<String>,
    pub waiting_on: Option<WaitingOn>,
}

#[derive(Debug, Serialize)]
pub struct WaitingOn {
    /// The futex word's address, written as a hex string.
    #[serde(serialize_with = "waitfor::hex")]
    pub address: u64,
    pub kind: &'static str,
    /// The global variable the lock is, if it is one.
    pub symbol: Option<String>,
    /// How the lock is named in text: the symbol, else where it was locked from.
    pub name: String,
    /// Whether this is a lock acquire (as opposed to an idle wait on a condvar, join…).
    pub lock: bool,
    pub holder: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct Deadlock {
    pub tids: Vec<i32>,
    /// Lock names; `tids[i]` waits for `locks[i]`, held by the next thread in `tids`.
    pub locks: Vec<String>,
    pub description: String,
}

pub fn run(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let pid = check::check_pid(&args.pid)?;
    let dump = capture(pid)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &dump).context("writing the dump")?;
        use std::io::Write;
        writeln!(out).context("writing the dump")?;
    } else {
        write_text(&dump, &mut out).context("writing the dump")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Capture every thread of `pid` once and build the wait-for graph.
pub fn capture(pid: i32) -> anyhow::Result<Dump> {
    let maps = Maps::read(pid).with_context(|| format!("reading the memory map of pid {pid}"))?;
    let (samples, gils, python_names) = {
        // A snapshot stops each running thread once: ptrace, not the kernel's periodic samples.
        let settings = Settings {
            stack_bytes: STACK_BYTES,
            capture: Capture::Ptrace,
            rate_hz: 1.0,
        };
        let mut sampler = Sampler::new(pid, maps, settings);
        let batch = sampler
            .tick(Tick::now())
            .with_context(|| format!("pid {pid} exited"))?;
        let mut samples = batch.samples;
        // Threads that were waiting for a CPU stop when they get one.
        samples.extend(sampler.collect_late(Instant::now() + LATE_WAIT));
        let python_names: HashMap<i32, String> = batch.thread_names.into_iter().collect();
        (samples, batch.gils, python_names)
        // The sampler is dropped here: any thread still seized is released.
    };
    let mut resolver = Resolver::new(pid, true);
    let mut globals = Globals::new();
    let mut threads = Vec::with_capacity(samples.len());
    for s in &samples {
        let (frames, a) = match &s.data {
            SampleData::Fresh(f) => resolver.resolve(s, f, &gils),
            // Not captured (e.g. it could not be stopped): say so rather than guess.
            _ => (
                vec![Frame::truncated()],
                Attribution {
                    state: State::Other,
                    waiting_on: None,
                },
            ),
        };
        let os_name = s
            .name
            .clone()
            .unwrap_or_else(|| proc::thread_name(pid, s.tid));
        let (name, os_name) = match python_names.get(&s.tid) {
            Some(python) => (python.clone(), Some(os_name)),
            None => (os_name, None),
        };
        let waiting_on = a.waiting_on.map(|w| {
            let symbol = globals.name(resolver.maps(), w.address);
            let frames: Vec<&Frame> = frames.iter().collect();
            let (caller, site) = (caller_of_acquire(&frames, &w), python_site(&frames, &w));
            WaitingOn {
                address: w.address,
                kind: w.kind(),
                name: display_name(
                    w.address,
                    w.kind(),
                    symbol.as_deref(),
                    site.as_deref(),
                    caller.as_deref(),
                    own_gil(&gils, w.address),
                ),
                symbol,
                lock: w.is_lock(),
                holder: w.holder,
            }
        });
        let python = frames.iter().rev().find(|f| f.is_python_code());
        threads.push(ThreadDump {
            tid: s.tid,
            name,
            os_name,
            state: a.state.name(),
            python: python.map(Frame::label),
            frames: frames.iter().map(Frame::label).collect(),
            scanned: resolver.scanned_frames(),
            waiting_on,
        });
    }
    let edges: Vec<Edge> = threads
        .iter()
        .filter_map(|t| {
            let w = t.waiting_on.as_ref().filter(|w| w.lock)?;
            Some(Edge {
                waiter: t.tid,
                lock: w.address,
                holder: w.holder?,
            })
        })
        .collect();
    let deadlocks = deadlocks(&threads, &edges);
    Ok(Dump {
        pid,
        command: proc::cmdline(pid),
        threads,
        edges,
        deadlocks,
    })
}

fn deadlocks(threads: &[ThreadDump], edges: &[Edge]) -> Vec<Deadlock> {
    let names: BTreeMap<i32, &str> = threads.iter().map(|t| (t.tid, t.name.as_str())).collect();
    let lock_names: BTreeMap<u64, &str> = edges
        .iter()
        .filter_map(|e| {
            let t = threads.iter().find(|t| t.tid == e.waiter)?;
            Some((e.lock, t.waiting_on.as_ref()?.name.as_str()))
        })
        .collect();
    let thread = |tid: i32| format!("thread {} ({tid})", names.get(&tid).copied().unwrap_or("?"));
    let lock = |addr: u64| {
        lock_names
            .get(&addr)
            .map_or_else(|| format!("{addr:#x}"), |n| n.to_string())
    };
    waitfor::cycles(edges)
        .into_iter()
        .map(|c| Deadlock {
            description: waitfor::describe(&c, thread, lock),
            locks: c.locks.iter().map(|&l| lock(l)).collect(),
            tids: c.tids,
        })
        .collect()
}

fn write_text(d: &Dump, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "process {} ({}): {} threads",
        d.pid,
        d.command,
        d.threads.len()
    )?;
    for t in &d.threads {
        let waiting = match &t.waiting_on {
            Some(w) => {
                let holder = w
                    .holder
                    .map(|h| format!(", held by {h}"))
                    .unwrap_or_default();
                format!(" on {} [{}]{holder}", w.name, w.kind)
            }
            None => String::new(),
        };
        let python = t
            .python
            .as_ref()
            .map(|f| format!(" in {f}"))
            .unwrap_or_default();
        writeln!(
            out,
            "\nthread {} \"{}\": {}{python}{waiting}",
            t.tid, t.name, t.state
        )?;
        for (i, f) in t.frames.iter().rev().enumerate() {
            writeln!(out, "  #{i:<3} {f}")?;
        }
    }
    if !d.edges.is_empty() {
        writeln!(out, "\nwait-for:")?;
        for e in &d.edges {
            let lock = d
                .threads
                .iter()
                .find(|t| t.tid == e.waiter)
                .and_then(|t| t.waiting_on.as_ref())
                .map_or("?", |w| w.name.as_str());
            writeln!(out, "  {} -> {} -> {}", e.waiter, lock, e.holder)?;
        }
    }
    writeln!(out)?;
    if d.deadlocks.is_empty() {
        writeln!(out, "no deadlock found")?;
    }
    for dl in &d.deadlocks {
        writeln!(out, "{}.", dl.description)?;
    }
    Ok(())
}
