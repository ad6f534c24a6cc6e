//! The per-thread state timeline (`--format timeline`, an SVG): one lane per thread, time
//! left to right, each stretch coloured by its state as in the flamegraph, with a tooltip
//! that says the state, when, the innermost function and, for a lock wait, the lock and who
//! held it. The picture of VTune's threading view or samply's thread tracks, drawn from the
//! recording's timeline (kept by `record` for this format and for saved profiles).

use std::fmt::Write as _;

use anyhow::bail;

use super::flamegraph::{legend, state_colour};
use super::summary_json::lock_name;
use crate::profile::{Profile, Run, StackId, State};

const WIDTH: f64 = 1200.0;
/// Left of the lanes: thread names.
const GUTTER: f64 = 220.0;
const PLOT: f64 = WIDTH - GUTTER - 20.0;
const FONT: usize = 12;
const LANE: f64 = 14.0;
const LANE_GAP: f64 = 4.0;
/// Where the first lane starts: title, legend and time axis above it.
const TOP: f64 = 76.0;

pub fn write(p: &Profile, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let Some(threads) = p.thread_runs() else {
        bail!(
            "this profile has no timeline (per-sample times): record with --format timeline, \
             or save it with --format profile and render that"
        );
    };
    let (Some(t0), Some(t1)) = (
        threads.values().flatten().map(|r| r.start_ns).min(),
        threads.values().flatten().map(|r| r.end_ns).max(),
    ) else {
        bail!("no samples were recorded, so there is no timeline to draw");
    };
    let span = (t1 - t0).max(1) as f64;
    let x_of = |ns: u64| GUTTER + (ns - t0) as f64 / span * PLOT;
    let height = TOP + threads.len() as f64 * (LANE + LANE_GAP) + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"monospace\" font-size=\"{FONT}\">"
    );
    let title = escape(&format!(
        "parprof timeline: {} (pid {}): {} threads over {:.2} s",
        p.meta.command,
        p.meta.pid,
        threads.len(),
        span / 1e9
    ));
    let _ = writeln!(
        svg,
        "<title>{title}</title><text x=\"10\" y=\"18\">{title}</text>"
    );
    svg += &legend(26, FONT);
    axis(&mut svg, span);
    for (i, (tid, runs)) in threads.iter().enumerate() {
        let y = TOP + i as f64 * (LANE + LANE_GAP);
        let name = p.threads.get(tid).map_or("", |t| t.name.as_str());
        let _ = write!(
            svg,
            "<g class=\"lane\" data-tid=\"{tid}\"><text x=\"10\" y=\"{}\">{}</text>",
            y + LANE - 3.0,
            escape(&format!("{name} {tid}"))
        );
        for stretch in merged(p, *tid, runs) {
            let (r, g, b) = state_colour(stretch.state);
            let x = x_of(stretch.start_ns);
            let w = (x_of(stretch.end_ns) - x).max(0.5);
            let _ = write!(
                svg,
                "<rect x=\"{x:.2}\" y=\"{y}\" width=\"{w:.2}\" height=\"{LANE}\" \
                 fill=\"rgb({r},{g},{b})\"><title>{} {:.3}–{:.3} s: {}</title></rect>",
                stretch.state.name(),
                (stretch.start_ns - t0) as f64 / 1e9,
                (stretch.end_ns - t0) as f64 / 1e9,
                escape(&stretch.what)
            );
        }
        svg += "</g>\n";
    }
    svg += "</svg>\n";
    out.write_all(svg.as_bytes())?;
    Ok(())
}

/// Seconds marks along the top of the lanes, about ten of them at a round step.
fn axis(svg: &mut String, span_ns: f64) {
    let span_s = span_ns / 1e9;
    let raw = span_s / 10.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(raw);
    let y = TOP - 8.0;
    let mut t = 0.0;
    while t <= span_s + 1e-9 && step > 0.0 {
        let x = GUTTER + t / span_s * PLOT;
        let _ = write!(
            svg,
            "<line x1=\"{x:.2}\" y1=\"{}\" x2=\"{x:.2}\" y2=\"{y}\" stroke=\"grey\"/>\
             <text x=\"{x:.2}\" y=\"{}\" font-size=\"10\">{t:.3} s</text>",
            y - 6.0,
            y - 8.0
        );
        t += step;
    }
    svg.push('\n');
}

/// Consecutive runs that read the same (state and tooltip) drawn as one.
struct Stretch {
    start_ns: u64,
    end_ns: u64,
    state: State,
    what: String,
}

fn merged(p: &Profile, tid: i32, runs: &[Run]) -> Vec<Stretch> {
    let mut out: Vec<Stretch> = Vec::new();
    for r in runs {
        let what = describe(p, tid, r.stack, r.state);
        match out.last_mut() {
            Some(last) if last.state == r.state && last.what == what => last.end_ns = r.end_ns,
            _ => out.push(Stretch {
                start_ns: r.start_ns,
                end_ns: r.end_ns,
                state: r.state,
                what,
            }),
        }
    }
    out
}

/// The innermost function of `stack` and, for a lock wait, the lock whose waiters include
/// this thread on this stack and the thread that held it most while they waited.
fn describe(p: &Profile, tid: i32, stack: StackId, state: State) -> String {
    let leaf = p
        .stack(stack)
        .last()
        .map_or(String::from("?"), |&f| p.frame(f).label());
    if state != State::Lock {
        return leaf;
    }
    let lock = p
        .locks
        .iter()
        .find(|(_, l)| l.waiter_stacks.contains_key(&stack) && l.waiters.contains_key(&tid));
    let Some((&address, l)) = lock else {
        return leaf;
    };
    let holder = l
        .holders
        .iter()
        .max_by_key(|(h, n)| (**n, std::cmp::Reverse(**h)))
        .map(|(h, _)| format!(", held mostly by {h}"))
        .unwrap_or_default();
    format!(
        "{leaf}, waiting for {} ({}){holder}",
        lock_name(address, l),
        l.kind
    )
}

/// Text safe inside SVG elements and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
