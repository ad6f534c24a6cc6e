//! Command-line definitions (the contract in docs/usage.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;
use crate::profile::State;
use crate::sample::Capture;

/// Bytes of stack a sample copies unless told otherwise.
pub const DEFAULT_STACK_BYTES: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "parprof",
    version,
    about = "Where does each thread's time go: compute, or waiting on a lock?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample every thread of a process and write a flamegraph or folded stacks.
    Record(RecordArgs),
    /// Every thread's stack and state now, who waits for whom, and any deadlock.
    Dump(DumpArgs),
    /// Render a saved profile (.parprof) to any output format, without the target.
    Report(ReportArgs),
    /// Compare two profiles: what grew, a differential flamegraph, and a CI gate.
    Diff(DiffArgs),
    /// A live view of a running process: threads and their states, hottest functions,
    /// contended locks, parallelism and what limits it, refreshed every second.
    Top(TopArgs),
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The running process to watch.
    #[arg(long, short, allow_hyphen_values = true)]
    pub pid: String,

    /// Samples per second per thread.
    #[arg(long, short, default_value_t = 100.0, allow_negative_numbers = true)]
    pub rate: f64,

    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,

    /// How running threads are captured (see `record --help`).
    #[arg(long, value_enum, default_value = "perf", env = "PARPROF_CAPTURE")]
    pub capture: Capture,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The running process to inspect.
    #[arg(long, short)]
    pub pid: String,

    /// Write JSON (schema in docs/dump.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A saved profile, written by `parprof record --format profile` (.parprof).
    pub profile: PathBuf,

    /// Where to write the rendering.
    #[arg(long, short, default_value = "parprof.svg")]
    pub output: PathBuf,

    /// Output format (default: from the output file's extension).
    #[arg(long, short)]
    pub format: Option<Format>,

    /// Start each stack with its thread (`name tid`).
    #[arg(long)]
    pub threads: bool,

    /// Also write the per-thread breakdown and contended locks as JSON (docs/summary.md),
    /// as `record --summary` does.
    #[arg(long, value_name = "FILE.json")]
    pub summary: Option<PathBuf>,

    /// Draw only the samples in these states (`--state lock --state lock_spin`: where the
    /// lock waits are); the end-of-run text and `--summary` still count every sample.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<State>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The baseline: a saved profile (.parprof) or folded stacks.
    pub base: PathBuf,

    /// The profile to compare with it, in either form.
    pub new: PathBuf,

    /// Write a differential flamegraph (SVG) here.
    #[arg(long, short)]
    pub output: Option<PathBuf>,

    /// Write the comparison as markdown here (e.g. a CI job summary).
    #[arg(long)]
    pub markdown: Option<PathBuf>,

    /// Exit with status 3 when the lock share or any function's self or total share grew
    /// by more than PCT percentage points.
    #[arg(long, value_name = "PCT")]
    pub fail_on_regression: Option<f64>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Attach to this running process.
    #[arg(long, short, conflicts_with = "command", allow_hyphen_values = true)]
    pub pid: Option<String>,

    /// Samples per second, per thread.
    #[arg(long, short, default_value_t = 100.0, allow_negative_numbers = true)]
    pub rate: f64,

    /// Stop after this many seconds (default: until the target exits or Ctrl-C).
    #[arg(long, short)]
    pub duration: Option<f64>,

    /// Where to write the profile.
    #[arg(long, short, default_value = "parprof.svg")]
    pub output: PathBuf,

    /// Output format (default: from the output file's extension).
    #[arg(long, short)]
    pub format: Option<Format>,

    /// Also write the per-thread breakdown and contended locks as JSON (docs/summary.md).
    #[arg(long, value_name = "FILE.json")]
    pub summary: Option<PathBuf>,

    /// Start each stack with its thread (`name tid`).
    #[arg(long)]
    pub threads: bool,

    /// Draw only the samples in these states (`--state lock --state lock_spin`: where the
    /// lock waits are); the end-of-run text and `--summary` still count every sample.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<State>,

    /// Leave out native frames (Python processes only show Python frames).
    #[arg(long)]
    pub no_native: bool,

    /// Also sample the processes the target forks, and theirs, through their execs; each
    /// thread is then labelled with its process (`name (pid N)`) when it is not the target's.
    #[arg(long)]
    pub subprocesses: bool,

    /// Bytes of each thread's stack copied per sample.
    #[arg(long, default_value_t = DEFAULT_STACK_BYTES, hide = true)]
    pub stack_bytes: usize,

    /// How running threads are captured: `perf` samples them in the kernel without
    /// stopping them (needs root, CAP_PERFMON or kernel.perf_event_paranoid <= 0; falls back
    /// to ptrace otherwise, saying so); `ptrace` stops each briefly at every tick.
    #[arg(long, value_enum, default_value = "perf", env = "PARPROF_CAPTURE")]
    pub capture: Capture,

    /// The command to start and profile until it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// A state name as the outputs write it (`lock`, `lock_spin`, `compute`, …).
fn parse_state(s: &str) -> Result<State, String> {
    State::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = State::ALL.iter().map(|st| st.name()).collect();
        format!("no state '{s}'; the states are {}", names.join(", "))
    })
}
