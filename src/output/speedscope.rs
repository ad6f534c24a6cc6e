//! speedscope JSON (https://www.speedscope.app/file-format-schema.json): one "sampled"
//! profile per thread, samples in time order, so speedscope's time-order view shows when
//! each thread computed and when it waited. Each stack ends with its state (`[lock]`,
//! `[compute]`, ...) as a frame, as in folded output.
//!
//! Weights are nanoseconds: with a timeline, a sample lasts until that thread's next
//! sample (the last one lasts one sampling period); a profile saved without timestamps
//! falls back to one sample per distinct stack and state, weighted count × period.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::profile::{Profile, StackId, State};

#[derive(Serialize)]
struct File {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<Sampled>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Serialize)]
struct Frame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct Sampled {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

pub fn write(p: &Profile, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    serde_json::to_writer(out, &build(p))?;
    Ok(())
}

fn build(p: &Profile) -> File {
    let mut frames: Vec<Frame> = p
        .frames()
        .iter()
        .map(|f| Frame {
            name: f.label(),
            file: f.file.clone(),
            line: f.line,
        })
        .collect();
    // The state frames follow the profile's frames, in `State::ALL` order.
    let state_base = frames.len();
    frames.extend(State::ALL.iter().map(|s| Frame {
        name: s.leaf(),
        file: None,
        line: None,
    }));
    let state_frame = |s: State| state_base + State::ALL.iter().position(|x| *x == s).unwrap_or(0);
    let stack_of = |stack: StackId, state: State| -> Vec<usize> {
        let mut v: Vec<usize> = p.stack(stack).iter().map(|&f| f as usize).collect();
        v.push(state_frame(state));
        v
    };

    let period_ns = if p.meta.rate_hz > 0.0 {
        (1e9 / p.meta.rate_hz) as u64
    } else {
        10_000_000
    };
    let mut per_thread: BTreeMap<i32, Sampled> = p
        .threads
        .values()
        .map(|t| {
            let name = if t.name.is_empty() {
                format!("tid {}", t.tid)
            } else {
                format!("{} (tid {})", t.name, t.tid)
            };
            (
                t.tid,
                Sampled {
                    kind: "sampled",
                    name,
                    unit: "nanoseconds",
                    start_value: 0,
                    end_value: 0,
                    samples: Vec::new(),
                    weights: Vec::new(),
                },
            )
        })
        .collect();

    match p.thread_runs() {
        Some(runs) => {
            for (tid, runs) in runs {
                let (Some(prof), Some(first), Some(last)) =
                    (per_thread.get_mut(&tid), runs.first(), runs.last())
                else {
                    continue;
                };
                prof.start_value = first.start_ns;
                prof.end_value = last.end_ns;
                for r in &runs {
                    prof.samples.push(stack_of(r.stack, r.state));
                    prof.weights.push(r.end_ns - r.start_ns);
                }
            }
        }
        None => {
            for (&(tid, stack, state), &n) in &p.counts {
                let Some(prof) = per_thread.get_mut(&tid) else {
                    continue;
                };
                prof.samples.push(stack_of(stack, state));
                prof.weights.push(n * period_ns);
                prof.end_value += n * period_ns;
            }
        }
    }

    File {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: Shared { frames },
        profiles: per_thread
            .into_values()
            .filter(|t| !t.samples.is_empty())
            .collect(),
        name: format!("parprof: {} (pid {})", p.meta.command, p.meta.pid),
        active_profile_index: 0,
        exporter: format!("parprof@{}", env!("CARGO_PKG_VERSION")),
    }
}
