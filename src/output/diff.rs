//! Comparing two profiles: per-state, per-function and (for saved profiles) per-lock shares,
//! what grew, and a differential flamegraph. Both sides are folded stacks
//! (`frame;...;[state] COUNT`), with the lock table of each side that is a saved profile.
//!
//! Normalisation: every sample stands for one thread during one sampling period, so a
//! profile's samples add up to the thread-seconds it observed (samples / rate). A share is
//! a count over the profile's own total: the fraction of observed thread-time spent in a
//! state or a function. Shares compare across different durations, rates and thread counts;
//! deltas are in percentage points. docs/ci.md explains why this denominator
//! rather than threads × duration.

pub mod markdown;

use std::collections::{BTreeMap, BTreeSet};

use super::summary_json::LockSummary;
use crate::profile::State;

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("line {line} is not a folded stack (`frame;frame;... COUNT`): {text:?}")]
    BadLine { line: usize, text: String },
    #[error("no samples to compare")]
    Empty,
    #[error("line {0}: the sample counts add up past 2^64")]
    Overflow(usize),
}

/// Sample counts of one profile, keyed the way the diff compares them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub samples: u64,
    /// Samples whose innermost code frame is the function.
    pub self_: BTreeMap<String, u64>,
    /// Samples with the function anywhere on the stack (once per stack).
    pub total: BTreeMap<String, u64>,
    /// Samples per state (`lock`, `compute`, ...), from the `[state]` leaf.
    pub states: BTreeMap<String, u64>,
    /// Contended locks by name (addresses change from run to run; names do not).
    pub locks: BTreeMap<String, LockCounts>,
    /// Threads on a CPU at once, on average (a saved profile's, when it has one).
    pub effective_parallelism: Option<f64>,
}

/// One contended lock of one profile.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LockCounts {
    /// Samples of threads blocked acquiring it.
    pub waits: u64,
    /// Threads seen waiting.
    pub waiters: usize,
    /// Samples of its holders by the function they were in, while others waited.
    pub holders_in: BTreeMap<String, u64>,
    /// The share of the time it was held, when its state was read at every tick.
    pub held_share: Option<f64>,
}

impl Counts {
    /// Count folded lines. A trailing `[state]` frame counts toward states, not functions.
    pub fn from_folded<S: AsRef<str>>(lines: &[S]) -> Result<Counts, DiffError> {
        let mut c = Counts::default();
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_ref().trim_end();
            if line.is_empty() {
                continue;
            }
            let bad = || DiffError::BadLine {
                line: i + 1,
                text: line.chars().take(80).collect(),
            };
            let (stack, n) = line.rsplit_once(' ').ok_or_else(bad)?;
            let n: u64 = n.parse().map_err(|_| bad())?;
            // Every other count is a sum of some of these: it cannot overflow if this does not.
            c.samples = c.samples.checked_add(n).ok_or(DiffError::Overflow(i + 1))?;
            let mut frames: Vec<&str> = stack.split(';').collect();
            if let Some(state) = frames.last().and_then(|l| state_of(l)) {
                *c.states.entry(state.name().to_string()).or_default() += n;
                frames.pop();
            }
            if let Some(leaf) = frames.last() {
                *c.self_.entry(function_key(leaf)).or_default() += n;
            }
            let distinct: BTreeSet<String> = frames.iter().map(|f| function_key(f)).collect();
            for f in distinct {
                *c.total.entry(f).or_default() += n;
            }
        }
        Ok(c)
    }

    /// Add a saved profile's lock table (folded stacks have none).
    pub fn with_locks(mut self, locks: &[LockSummary]) -> Counts {
        for l in locks {
            let c = self.locks.entry(l.name.clone()).or_default();
            c.waits += l.wait_samples;
            c.waiters += l.waiters.len();
            c.held_share = c.held_share.or(l.held_share);
            for h in &l.holder_activity {
                *c.holders_in.entry(h.function.clone()).or_default() += h.samples;
            }
        }
        self
    }

    /// Percent of samples in the lock states (blocked or spinning).
    pub fn lock_share(&self) -> f64 {
        let lock: u64 = [State::Lock, State::LockSpin]
            .iter()
            .map(|s| self.states.get(s.name()).copied().unwrap_or(0))
            .sum();
        percent(lock, self.samples)
    }
}

/// The state named by a folded leaf like `[lock]`.
fn state_of(leaf: &str) -> Option<State> {
    State::from_name(leaf.strip_prefix('[')?.strip_suffix(']')?)
}

/// What identifies a function across two runs: its label without a Python line number
/// (`run (app.py:12)` → `run (app.py)`), since lines move between versions.
fn function_key(label: &str) -> String {
    if let Some(open) = label.rfind(" (")
        && let Some((file, line)) = label[open + 2..]
            .strip_suffix(')')
            .and_then(|s| s.rsplit_once(':'))
        && !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("{} ({})", &label[..open], file);
    }
    label.to_string()
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

/// One compared quantity, in percent of each side's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub base: f64,
    pub new: f64,
}

impl Row {
    /// Change in percentage points.
    pub fn delta(&self) -> f64 {
        self.new - self.base
    }
}

/// Which measure of a function grew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The function itself was the innermost frame.
    Self_,
    /// The function was anywhere on the stack.
    Total,
    /// The lock states (lock + lock_spin) of all threads.
    LockShare,
    /// The waits for one lock (the row's name).
    Lock,
}

/// A share that grew past the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    pub measure: Measure,
    pub row: Row,
    /// What else is known: for a lock, what its holders did (`; holders in …`).
    pub note: String,
}

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.measure {
            Measure::Self_ => format!("{} (self)", self.row.name),
            Measure::Total => format!("{} (total)", self.row.name),
            Measure::LockShare => "lock share".to_string(),
            Measure::Lock => format!("lock `{}`: waits", self.row.name),
        };
        write!(
            f,
            "{what} {:+.1} points ({:.1}% → {:.1}%){}",
            self.row.delta(),
            self.row.base,
            self.row.new,
            self.note
        )
    }
}

/// Everything the reports show. Rows are sorted by the size of their change, largest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub base_samples: u64,
    pub new_samples: u64,
    pub states: Vec<Row>,
    pub lock: Row,
    pub self_: Vec<Row>,
    pub total: Vec<Row>,
    /// Locks either side waited for, largest change in waits first.
    pub locks: Vec<LockRow>,
    /// The effective parallelism (base, new), when both sides have it.
    pub parallelism: Option<(f64, f64)>,
}

/// One lock on both sides, matched by name.
#[derive(Debug, Clone, PartialEq)]
pub struct LockRow {
    /// Its waits in percent of each side's samples; the row's name is the lock's.
    pub waits: Row,
    pub waiters: (usize, usize),
    /// The function its holders were seen in most (on the new side, else the base), in
    /// percent of each side's samples.
    pub holders_in: Option<Row>,
    /// The share of the time it was held (percent), when both sides read it.
    pub held: Option<(f64, f64)>,
}

impl LockRow {
    /// `lock `big`: waits +7.0 points (2.0% → 9.0%), 2 → 2 waiting thread(s); holders in …`
    pub fn describe(&self) -> String {
        format!(
            "lock `{}`: waits {:+.1} points ({:.1}% → {:.1}%){}",
            self.waits.name,
            self.waits.delta(),
            self.waits.base,
            self.waits.new,
            self.details()
        )
    }

    /// `, 2 → 2 waiting thread(s); held 40% → 62% of the time; holders in …`
    pub fn details(&self) -> String {
        format!(
            ", {} → {} waiting thread(s){}{}",
            self.waiters.0,
            self.waiters.1,
            self.held
                .map(|(b, n)| format!("; held {b:.0}% → {n:.0}% of the time"))
                .unwrap_or_default(),
            self.holders_note()
        )
    }

    /// `; holders in `update_shared` 4.1x as much (2.0% → 8.2% of samples)`, or nothing.
    pub fn holders_note(&self) -> String {
        let Some(h) = &self.holders_in else {
            return String::new();
        };
        let how = if h.base > 0.0 {
            format!("{:.1}x as much", h.new / h.base)
        } else {
            "newly".to_string()
        };
        format!(
            "; holders in `{}` {how} ({:.1}% → {:.1}% of samples)",
            h.name, h.base, h.new
        )
    }
}

pub fn compare(base: &Counts, new: &Counts) -> Result<Comparison, DiffError> {
    if base.samples == 0 || new.samples == 0 {
        return Err(DiffError::Empty);
    }
    let rows = |b: &BTreeMap<String, u64>, n: &BTreeMap<String, u64>| {
        let names: BTreeSet<&String> = b.keys().chain(n.keys()).collect();
        let mut v: Vec<Row> = names
            .into_iter()
            .map(|k| Row {
                name: k.clone(),
                base: percent(b.get(k).copied().unwrap_or(0), base.samples),
                new: percent(n.get(k).copied().unwrap_or(0), new.samples),
            })
            .collect();
        v.sort_by(|x, y| {
            y.delta()
                .abs()
                .total_cmp(&x.delta().abs())
                .then_with(|| x.name.cmp(&y.name))
        });
        v
    };
    let mut states = rows(&base.states, &new.states);
    // States read best in their fixed order, not by change.
    states.sort_by_key(|r| State::ALL.iter().position(|s| s.name() == r.name));
    Ok(Comparison {
        base_samples: base.samples,
        new_samples: new.samples,
        states,
        lock: Row {
            name: "lock".into(),
            base: base.lock_share(),
            new: new.lock_share(),
        },
        self_: rows(&base.self_, &new.self_),
        total: rows(&base.total, &new.total),
        locks: lock_rows(base, new),
        parallelism: base.effective_parallelism.zip(new.effective_parallelism),
    })
}

fn lock_rows(base: &Counts, new: &Counts) -> Vec<LockRow> {
    let names: BTreeSet<&String> = base.locks.keys().chain(new.locks.keys()).collect();
    let none = LockCounts::default();
    let mut v: Vec<LockRow> = names
        .into_iter()
        .map(|name| {
            let (b, n) = (
                base.locks.get(name).unwrap_or(&none),
                new.locks.get(name).unwrap_or(&none),
            );
            // Holders whose activity is unknown (`?`: not sampled at that tick) name nothing.
            let busiest = |c: &LockCounts| {
                c.holders_in
                    .iter()
                    .filter(|(f, _)| f.as_str() != "?")
                    .max_by(|x, y| x.1.cmp(y.1).then_with(|| y.0.cmp(x.0)))
                    .map(|(f, _)| f.clone())
            };
            let holders_in = busiest(n).or_else(|| busiest(b)).map(|f| Row {
                base: percent(b.holders_in.get(&f).copied().unwrap_or(0), base.samples),
                new: percent(n.holders_in.get(&f).copied().unwrap_or(0), new.samples),
                name: f,
            });
            LockRow {
                waits: Row {
                    name: name.clone(),
                    base: percent(b.waits, base.samples),
                    new: percent(n.waits, new.samples),
                },
                waiters: (b.waiters, n.waiters),
                holders_in,
                held: b
                    .held_share
                    .zip(n.held_share)
                    .map(|(b, n)| (100.0 * b, 100.0 * n)),
            }
        })
        .collect();
    v.sort_by(|x, y| {
        y.waits
            .delta()
            .abs()
            .total_cmp(&x.waits.delta().abs())
            .then_with(|| x.waits.name.cmp(&y.waits.name))
    });
    v
}

impl Comparison {
    /// Shares that grew by more than `points` percentage points: the lock share, each
    /// lock's waits (with what its holders did), and each function's self and total shares.
    /// Thread-entry frames whose total is ~100% on both sides never trip it, since only
    /// growth counts.
    pub fn regressions(&self, points: f64) -> Vec<Regression> {
        let mut out = Vec::new();
        if self.lock.delta() > points {
            // Which lock grew most, and what its holders did: the waits of spinning threads
            // (`lock_spin`) name no lock, so a lock's own waits can grow less than the share.
            let note = self
                .locks
                .iter()
                .find(|l| l.waits.delta() > 0.0)
                .map(|l| format!("; most of all {}", l.describe()))
                .unwrap_or_default();
            out.push(Regression {
                measure: Measure::LockShare,
                row: self.lock.clone(),
                note,
            });
        }
        out.extend(
            self.locks
                .iter()
                .filter(|l| l.waits.delta() > points)
                .map(|l| Regression {
                    measure: Measure::Lock,
                    row: l.waits.clone(),
                    note: l.details(),
                }),
        );
        for (measure, rows) in [(Measure::Self_, &self.self_), (Measure::Total, &self.total)] {
            out.extend(
                rows.iter()
                    .filter(|r| r.delta() > points)
                    .map(|r| Regression {
                        measure,
                        row: r.clone(),
                        note: String::new(),
                    }),
            );
        }
        out
    }
}

/// A differential flamegraph (inferno): widths from `new`, red where a stack grew and
/// blue where it shrank, with both sides scaled to the same total first.
pub fn flamegraph<S: AsRef<str>>(
    base: &[S],
    new: &[S],
    title: &str,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let join = |lines: &[S]| {
        lines
            .iter()
            .map(|l| format!("{}\n", l.as_ref()))
            .collect::<String>()
    };
    let mut diffed = Vec::new();
    let opts = inferno::differential::Options {
        normalize: true,
        strip_hex: false,
    };
    inferno::differential::from_readers(
        opts,
        join(base).as_bytes(),
        join(new).as_bytes(),
        &mut diffed,
    )?;
    let text = String::from_utf8(diffed)?;
    let mut fg = inferno::flamegraph::Options::default();
    fg.title = title.to_string();
    fg.count_name = "samples".into();
    fg.deterministic = true;
    inferno::flamegraph::from_lines(&mut fg, text.lines(), out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_self_total_and_states() {
        let c = Counts::from_folded(&[
            "main;work;[compute] 6",
            "main;work;work;[lock] 2",
            "main;[wait] 2",
            "",
        ])
        .unwrap();
        assert_eq!(c.samples, 10);
        assert_eq!(c.self_["work"], 8);
        assert_eq!(c.total["work"], 8, "recursion counts once per stack");
        assert_eq!(c.total["main"], 10);
        assert_eq!(c.states["lock"], 2);
        assert_eq!(c.lock_share(), 20.0);
    }

    #[test]
    fn python_lines_do_not_split_a_function() {
        assert_eq!(function_key("run (app.py:12)"), "run (app.py)");
        assert_eq!(function_key("f (x)"), "f (x)");
        assert_eq!(function_key("operator() (a:b)"), "operator() (a:b)");
    }

    #[test]
    fn bad_lines_are_errors() {
        let e = Counts::from_folded(&["main 1", "main;work"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2 is not a folded stack (`frame;frame;... COUNT`): \"main;work\""
        );
        let huge = format!("main {}", u64::MAX);
        let e = Counts::from_folded(&["main 1", &huge]).unwrap_err();
        assert_eq!(e.to_string(), "line 2: the sample counts add up past 2^64");
    }

    #[test]
    fn growth_past_the_threshold_is_a_regression() {
        let base = Counts::from_folded(&["main;a;[compute] 90", "main;b;[lock] 10"]).unwrap();
        // Twice the samples over all: shares, not counts, are compared.
        let new = Counts::from_folded(&["main;a;[compute] 120", "main;b;[lock] 80"]).unwrap();
        let c = compare(&base, &new).unwrap();
        let r = c.regressions(5.0);
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].to_string(), "lock share +30.0 points (10.0% → 40.0%)");
        assert_eq!(r[1].to_string(), "b (self) +30.0 points (10.0% → 40.0%)");
        assert!(compare(&base, &base).unwrap().regressions(0.0).is_empty());
    }

    #[test]
    fn a_lock_whose_waits_grew_is_named_with_what_its_holders_did() {
        let lock = |waits: u64, inside: u64| LockCounts {
            waits,
            waiters: 2,
            holders_in: BTreeMap::from([("work_inside".to_string(), inside)]),
            held_share: Some(waits as f64 / 50.0),
        };
        let mut base = Counts::from_folded(&["main;a;[compute] 90", "main;b;[lock] 10"]).unwrap();
        base.locks.insert("big".into(), lock(10, 5));
        let mut new = Counts::from_folded(&["main;a;[compute] 60", "main;b;[lock] 40"]).unwrap();
        new.locks.insert("big".into(), lock(40, 20));
        let c = compare(&base, &new).unwrap();
        let r = c.regressions(5.0);
        assert_eq!(
            r[1].to_string(),
            "lock `big`: waits +30.0 points (10.0% → 40.0%), 2 → 2 waiting thread(s); held 20% \
             → 80% of the time; holders in `work_inside` 4.0x as much (5.0% → 20.0% of samples)"
        );
        assert!(compare(&new, &new).unwrap().regressions(0.0).is_empty());
    }
}
