//! `parprof report`: render a saved profile to any output format, without the target.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::ReportArgs;
use crate::output::{self, Format};
use crate::profile::{Profile, saved};

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let Some(format) = args.format.or_else(|| Format::from_path(&args.output)) else {
        bail!(
            "cannot tell the format from '{}': pass --format svg|folded|speedscope|pprof|profile",
            args.output.display()
        );
    };
    let profile = load(&args.profile)?;
    if format == Format::Speedscope && profile.timeline.is_none() {
        eprintln!(
            "parprof: {} has no per-sample timestamps; the speedscope timelines are approximate",
            args.profile.display()
        );
    }
    output::write_file(&profile, format, args.threads, &args.states, &args.output)?;
    if let Some(path) = &args.summary {
        output::summary_json::write_file(&profile, path)?;
    }
    let captured = output::text::captured_by(&profile);
    eprintln!(
        "parprof: {} samples of {} threads ({:.1} s{captured}) from {}; wrote {}",
        profile.total_samples(),
        profile.threads.len(),
        profile.meta.duration_s,
        args.profile.display(),
        args.output.display()
    );
    for line in output::text::findings(&profile) {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Read a saved profile, with the file name in any error.
pub fn load(path: &Path) -> anyhow::Result<Profile> {
    saved::read(path).with_context(|| format!("cannot read {}", path.display()))
}
