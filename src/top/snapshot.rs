//! What `top` shows at one refresh, taken from the profile on the resolver thread so the
//! screen thread never touches the profile: plain rows and lines, cheap to send.

use crate::output::summary_json;
use crate::output::text::{self, COLUMNS};
use crate::profile::Profile;

/// One thread's row: its samples since `top` started and each state's share of them.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRow {
    pub tid: i32,
    pub name: String,
    pub samples: u64,
    /// Percent per state, in the order of `text::COLUMNS`.
    pub shares: [f64; COLUMNS.len()],
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub pid: i32,
    pub command: String,
    /// Seconds of recording the snapshot covers.
    pub seconds: f64,
    pub threads: Vec<ThreadRow>,
    /// The hottest functions, as `record` prints them (Python functions first).
    pub hottest: Vec<String>,
    /// The contended locks with their holders and held shares.
    pub locks: Vec<String>,
    pub parallelism: Option<String>,
    /// What limits scaling, largest first.
    pub limits: Vec<String>,
}

impl Snapshot {
    /// The profile as it stands, `seconds` into the recording.
    pub fn of(p: &Profile, seconds: f64) -> Snapshot {
        let threads = p
            .threads
            .values()
            .map(|t| {
                let states = p.thread_states(t.tid);
                let total = t.samples.max(1) as f64;
                ThreadRow {
                    tid: t.tid,
                    name: t.name.clone(),
                    samples: t.samples,
                    shares: COLUMNS.map(|(state, _)| {
                        100.0 * states.get(&state).copied().unwrap_or(0) as f64 / total
                    }),
                }
            })
            .collect();
        let locks = summary_json::summary(p).locks;
        Snapshot {
            pid: p.meta.pid,
            command: p.meta.command.clone(),
            seconds,
            threads,
            hottest: strip(text::hottest_lines(p)),
            locks: strip(text::lock_report(&locks)),
            parallelism: parallelism(p),
            limits: strip(text::scaling_limits(p, &locks)),
        }
    }
}

/// `effective parallelism 1.93 (1 on a CPU 6 %, 2 on a CPU 93 %), 1.96 runnable`: the
/// end-of-run line, short enough for a screen line.
fn parallelism(p: &Profile) -> Option<String> {
    let x = p.meta.occupancy.as_ref()?.parallelism()?;
    let split: Vec<String> = x
        .notable_shares()
        .map(|(k, share)| format!("{k} on a CPU {:.0} %", 100.0 * share))
        .collect();
    Some(format!(
        "effective parallelism {:.2} ({}), {:.2} runnable",
        x.on_cpu,
        split.join(", "),
        x.runnable
    ))
}

/// The lines without `record`'s `parprof: ` prefix, which on a screen of its own says
/// nothing.
fn strip(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| l.strip_prefix("parprof: ").map(str::to_string).unwrap_or(l))
        .collect()
}
