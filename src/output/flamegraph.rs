//! Flamegraph SVG through inferno, with a title that says what was profiled, the state of
//! each sample as a coloured top frame (`[lock]` red, `[compute]` green, idle blue/grey),
//! every other frame coloured by the states of the samples beneath it (blended when mixed:
//! a function that mostly waits for a lock is red wherever it appears), and a legend.

use std::collections::{HashMap, HashSet};

use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self, Options};

use crate::profile::{Profile, State};

/// Lock waits hot (red, orange), computing green (90° of hue from a lock wait), idle cool
/// (blue, grey).
pub fn state_colour(s: State) -> (u8, u8, u8) {
    match s {
        State::Compute => (130, 195, 95),
        State::Lock => (220, 30, 30),
        State::LockSpin => (255, 140, 0),
        State::Wait => (90, 140, 225),
        State::Io => (0, 190, 190),
        State::Sleep => (160, 165, 180),
        State::CpuWait => (175, 115, 210),
        State::Other => (205, 205, 205),
    }
}

pub fn write(p: &Profile, threads: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let lines = super::folded::lines(p, threads);
    if lines.is_empty() {
        anyhow::bail!("no samples were recorded, so there is no flamegraph to draw");
    }
    let mut palette = frame_colours(p, threads);
    for s in State::ALL {
        let (r, g, b) = state_colour(s);
        palette.insert(s.leaf(), Color { r, g, b });
    }
    let mut opts = Options::default();
    opts.title = title(p);
    // An empty subtitle reserves the line the legend is drawn on.
    opts.subtitle = Some(String::new());
    opts.count_name = "samples".into();
    // Same input, same picture: colours derive from names, not from a random seed.
    opts.deterministic = true;
    opts.palette_map = Some(&mut palette);
    let font_size = opts.font_size;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)?;
    out.write_all(&with_legend(svg, font_size))?;
    Ok(())
}

/// Each frame label's colour: the state colours of the samples whose stacks hold it, mixed
/// in proportion (a label counted once per stack, however often it recurs there).
fn frame_colours(p: &Profile, threads: bool) -> PaletteMap {
    let mut by_label: HashMap<String, [u64; State::ALL.len()]> = HashMap::new();
    for (&(tid, stack, state), &n) in &p.counts {
        let mut labels: HashSet<String> =
            p.stack(stack).iter().map(|&f| p.frame(f).label()).collect();
        if threads {
            labels.insert(super::folded::thread_label(p, tid));
        }
        let at = State::ALL.iter().position(|&s| s == state).unwrap_or(0);
        for label in labels {
            by_label.entry(label).or_default()[at] += n;
        }
    }
    let mut palette = PaletteMap::default();
    for (label, counts) in by_label {
        palette.insert(&label, blend(&counts));
    }
    palette
}

/// The mean of the state colours weighted by `counts` (indexed as [`State::ALL`]).
fn blend(counts: &[u64; State::ALL.len()]) -> Color {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    let mut rgb = [0.0f64; 3];
    for (state, &n) in State::ALL.into_iter().zip(counts) {
        let (r, g, b) = state_colour(state);
        for (sum, c) in rgb.iter_mut().zip([r, g, b]) {
            *sum += f64::from(c) * n as f64 / total;
        }
    }
    let [r, g, b] = rgb.map(|c| c.round() as u8);
    Color { r, g, b }
}

/// A row of coloured boxes naming the states, at height `y` (also the timeline's legend).
pub fn legend(y: usize, font_size: usize) -> String {
    let mut g = String::from("<g id=\"parprof-legend\">");
    for (i, s) in State::ALL.into_iter().enumerate() {
        let (r, gr, b) = state_colour(s);
        let x = 10 + i * 120;
        g += &format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"rgb({r},{gr},{b})\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"{font_size}\">{}</text>",
            x + 16,
            y + 11,
            s.leaf()
        );
    }
    g + "</g>\n"
}

/// Insert the legend on the subtitle line.
fn with_legend(mut svg: Vec<u8>, font_size: usize) -> Vec<u8> {
    let g = legend(font_size * 3 + 2, font_size);
    match svg.windows(6).rposition(|w| w == b"</svg>") {
        Some(end) => {
            svg.splice(end..end, g.into_bytes());
        }
        None => svg.extend_from_slice(g.as_bytes()),
    }
    svg
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::profile::Meta;

    #[test]
    fn state_frames_get_state_colours_and_a_legend() {
        let mut p = Profile::new(Meta::default(), false);
        let s = p.intern_stack(&[
            Frame::native("main", "a"),
            Frame::native("pthread_mutex_lock", "libc.so.6"),
        ]);
        p.add(1, s, State::Lock, 0, 5);
        let c = p.intern_stack(&[Frame::native("main", "a"), Frame::native("crunch", "a")]);
        p.add(1, c, State::Compute, 0, 5);
        let mut out = Vec::new();
        write(&p, false, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("parprof-legend"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // The [lock] frame's rectangle is filled red.
        let lock_at = svg.find("<title>[lock]").unwrap();
        let rect = &svg[lock_at..lock_at + 400];
        assert!(rect.contains("rgb(220,30,30)"), "{rect}");
    }
}
