//! Flamegraph SVG through inferno, with a title that says what was profiled.

use inferno::flamegraph::{self, Options};

use crate::profile::Profile;

pub fn write(p: &Profile, threads: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let lines = super::folded::lines(p, threads);
    let mut opts = Options::default();
    opts.title = title(p);
    opts.count_name = "samples".into();
    // Same input, same picture: colours derive from names, not from a random seed.
    opts.deterministic = true;
    if lines.is_empty() {
        anyhow::bail!("no samples were recorded, so there is no flamegraph to draw");
    }
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)?;
    Ok(())
}

fn title(p: &Profile) -> String {
    let m = &p.meta;
    let mut cmd = m.command.clone();
    if cmd.chars().count() > 80 {
        cmd = cmd.chars().take(77).collect::<String>() + "...";
    }
    format!(
        "parprof: {} (pid {}) — {:.1} s at {} Hz, {} samples, {} threads",
        cmd,
        m.pid,
        m.duration_s,
        m.rate_hz,
        p.total_samples(),
        p.threads.len()
    )
}
