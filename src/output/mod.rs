//! Writing a profile out: folded stacks, flamegraph SVGs, speedscope, pprof, saved profiles.

pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod pprof;
pub mod speedscope;
pub mod summary_json;
pub mod text;
pub mod timeline;

use std::path::Path;

use crate::profile::{Profile, State};

/// Output formats, chosen with `--format` or from the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Svg,
    Folded,
    /// speedscope JSON: one timeline per thread.
    Speedscope,
    /// gzipped pprof profile.proto.
    Pprof,
    /// parprof's saved profile, for `parprof report` and `parprof diff`.
    Profile,
    /// A per-thread state timeline, an SVG (`.timeline.svg`).
    Timeline,
}

impl Format {
    /// The format a file name implies: `.svg`, `.folded`/`.txt`, `.json`, `.pb.gz`, `.parprof`,
    /// `.timeline.svg`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.to_str()?;
        if name.ends_with(".pb.gz") {
            return Some(Format::Pprof);
        }
        if name.ends_with(".timeline.svg") {
            return Some(Format::Timeline);
        }
        match path.extension()?.to_str()? {
            "svg" => Some(Format::Svg),
            "folded" | "txt" => Some(Format::Folded),
            "json" => Some(Format::Speedscope),
            "parprof" => Some(Format::Profile),
            _ => None,
        }
    }

    /// True when the format shows when each sample was taken, so recording must keep
    /// per-sample timestamps.
    pub fn needs_timeline(self) -> bool {
        matches!(
            self,
            Format::Speedscope | Format::Profile | Format::Timeline
        )
    }
}

/// Write `p` in `format`; `threads` starts each stack with its thread where the format has
/// no other place for it (folded, SVG).
pub fn write(
    p: &Profile,
    format: Format,
    threads: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    match format {
        Format::Svg => flamegraph::write(p, threads, out)?,
        Format::Folded => folded::write(p, threads, out)?,
        Format::Speedscope => speedscope::write(p, out)?,
        Format::Pprof => pprof::write(p, out)?,
        Format::Profile => crate::profile::saved::write(p, out)?,
        Format::Timeline => timeline::write(p, out)?,
    }
    Ok(())
}

/// Create `path` and write `p` into it in `format`.
/// Write `p` as `format` to `path`; given `states`, only the samples in those states.
pub fn write_file(
    p: &Profile,
    format: Format,
    threads: bool,
    states: &[State],
    path: &Path,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let only;
    let p = if states.is_empty() {
        p
    } else {
        only = p.only_states(states);
        &only
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    write(p, format, threads, &mut out)?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
