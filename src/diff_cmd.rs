//! `parprof diff BASE NEW`: compare two profiles, print what grew, write a differential
//! flamegraph and markdown, and exit with [`REGRESSION_EXIT`] when a share grew past
//! `--fail-on-regression`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::DiffArgs;
use crate::output::diff::{self, Comparison, Counts, markdown};
use crate::output::folded;
use crate::output::summary_json::{self, LockSummary};
use crate::profile::saved;

/// Exit status when `--fail-on-regression` trips (1 stays for errors).
pub const REGRESSION_EXIT: u8 = 3;

/// One side of the diff: its folded lines (no thread roots, so runs compare) and a
/// one-line description for the reports.
struct Input {
    lines: Vec<String>,
    /// A saved profile's contended locks (none from folded stacks).
    locks: Vec<LockSummary>,
    /// A saved profile's effective parallelism, when it was recorded.
    parallelism: Option<f64>,
    description: String,
}

pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    if let Some(pct) = args
        .fail_on_regression
        .filter(|p| !(p.is_finite() && *p >= 0.0))
    {
        bail!("--fail-on-regression takes percentage points, a number ≥ 0 (got {pct})");
    }
    let base = load(&args.base)?;
    let new = load(&args.new)?;
    let counts = |i: &Input, p: &Path| {
        Counts::from_folded(&i.lines)
            .map(|c| Counts {
                effective_parallelism: i.parallelism,
                ..c.with_locks(&i.locks)
            })
            .with_context(|| format!("cannot read {}", p.display()))
    };
    let comparison = diff::compare(&counts(&base, &args.base)?, &counts(&new, &args.new)?)?;
    let regressions = args
        .fail_on_regression
        .map(|p| comparison.regressions(p))
        .unwrap_or_default();

    if let Some(path) = &args.output {
        let title = format!(
            "parprof diff: {} → {}",
            args.base.display(),
            args.new.display()
        );
        let mut out = Vec::new();
        diff::flamegraph(&base.lines, &new.lines, &title, &mut out)?;
        std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let md = markdown::render(
            &comparison,
            &base.description,
            &new.description,
            args.fail_on_regression,
            &regressions,
        );
        std::fs::write(path, md).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print_summary(&comparison, &base, &new);
    match args.fail_on_regression {
        Some(pct) if !regressions.is_empty() => {
            println!("parprof: regression past {pct} points:");
            for r in &regressions {
                println!("  {r}");
            }
            Ok(ExitCode::from(REGRESSION_EXIT))
        }
        Some(pct) => {
            println!("parprof: no share grew by more than {pct} points");
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// A saved profile, or folded stacks as written by `record --format folded`.
fn load(path: &Path) -> anyhow::Result<Input> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path.display();
    if saved::is_saved(&bytes) {
        let p = saved::decode(&bytes).with_context(|| format!("cannot read {name}"))?;
        let m = &p.meta;
        let description = format!(
            "`{name}`: {} samples of {} threads over {:.1} s at {} Hz (`{}`)",
            p.total_samples(),
            p.threads.len(),
            m.duration_s,
            m.rate_hz,
            m.command.replace('`', "'")
        );
        let summary = summary_json::summary(&p);
        return Ok(Input {
            lines: folded::lines(&p, false),
            locks: summary.locks,
            parallelism: summary.effective_parallelism,
            description,
        });
    }
    let Ok(text) = String::from_utf8(bytes) else {
        bail!("cannot read {name}: neither a parprof profile nor folded stacks");
    };
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let samples = Counts::from_folded(&lines)
        .with_context(|| {
            format!("cannot read {name}: neither a parprof profile nor folded stacks")
        })?
        .samples;
    Ok(Input {
        lines,
        locks: Vec::new(),
        parallelism: None,
        description: format!("`{name}`: {samples} samples (folded stacks)"),
    })
}

fn print_summary(c: &Comparison, base: &Input, new: &Input) {
    println!("parprof diff: {} → {}", base.description, new.description);
    let states: Vec<String> = c
        .states
        .iter()
        .filter(|r| r.delta().abs() >= 0.05)
        .map(|r| format!("{} {:+.1}", r.name, r.delta()))
        .collect();
    if !states.is_empty() {
        println!("  states (points): {}", states.join(", "));
    }
    if let Some((b, n)) = c.parallelism {
        println!("  effective parallelism: {b:.2} → {n:.2} (threads on a CPU at once)");
    }
    for (what, rows) in [("self", &c.self_), ("total", &c.total)] {
        let top: Vec<String> = rows
            .iter()
            .take(3)
            .filter(|r| r.delta().abs() >= 0.05)
            .map(|r| {
                format!(
                    "{} {:+.1} ({:.1}% → {:.1}%)",
                    r.name,
                    r.delta(),
                    r.base,
                    r.new
                )
            })
            .collect();
        if !top.is_empty() {
            println!("  largest {what} changes (points): {}", top.join(", "));
        }
    }
    for l in c
        .locks
        .iter()
        .take(3)
        .filter(|l| l.waits.delta().abs() >= 0.05)
    {
        println!("  {}", l.describe());
    }
}
