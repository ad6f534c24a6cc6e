//! The diff as GitHub-flavoured markdown, ready for a CI job summary: the verdict first,
//! then tables of state, lock and function shares.

use std::fmt::Write;

use super::{Comparison, LockRow, Regression, Row};

/// Rows shown per function table.
const TOP: usize = 15;

/// `base` and `new` describe the inputs (file name, samples, duration); `threshold` is
/// `--fail-on-regression` if given.
pub fn render(
    c: &Comparison,
    base: &str,
    new: &str,
    threshold: Option<f64>,
    regressions: &[Regression],
) -> String {
    let mut md = String::new();
    let verdict = match threshold {
        Some(t) if !regressions.is_empty() => {
            format!("❌ regression: shares grew by more than {t} points")
        }
        Some(t) => format!("✅ no share grew by more than {t} points"),
        None => "comparison".to_string(),
    };
    let _ = writeln!(md, "## parprof diff: {verdict}\n");
    let _ = writeln!(md, "- base: {base}\n- new: {new}\n");
    let _ = writeln!(
        md,
        "Shares are percentages of sampled thread-time (every sample is one thread for one sampling period), \
         so runs of different lengths, rates and thread counts compare; changes are in percentage points.\n"
    );
    if !regressions.is_empty() {
        let _ = writeln!(md, "### Regressions\n");
        for r in regressions {
            let _ = writeln!(md, "- {r}");
        }
        md.push('\n');
    }
    let _ = writeln!(md, "### Thread states\n");
    table(&mut md, "state", &c.states);
    if let Some((b, n)) = c.parallelism {
        let _ = writeln!(
            md,
            "Effective parallelism (threads on a CPU at once): {b:.2} → {n:.2}\n"
        );
    }
    if !c.locks.is_empty() {
        let _ = writeln!(
            md,
            "### Locks (samples of threads blocked acquiring them)\n"
        );
        lock_table(&mut md, &c.locks[..c.locks.len().min(TOP)]);
    }
    let _ = writeln!(md, "### Functions by self time (innermost frame)\n");
    table(&mut md, "function", top(&c.self_));
    let _ = writeln!(md, "### Functions by total time (anywhere on the stack)\n");
    table(&mut md, "function", top(&c.total));
    md
}

fn top(rows: &[Row]) -> &[Row] {
    &rows[..rows.len().min(TOP)]
}

fn table(md: &mut String, what: &str, rows: &[Row]) {
    let _ = writeln!(
        md,
        "| {what} | base | new | change |\n| --- | ---: | ---: | ---: |"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| `{}` | {:.1}% | {:.1}% | {:+.1} points |",
            cell(&r.name),
            r.base,
            r.new,
            r.delta()
        );
    }
    md.push('\n');
}

fn lock_table(md: &mut String, locks: &[LockRow]) {
    let _ = writeln!(
        md,
        "| lock | base | new | change | waiting threads | holders were in |\n| --- | ---: | ---: | ---: | ---: | --- |"
    );
    for l in locks {
        let holders = l.holders_in.as_ref().map_or(String::new(), |h| {
            format!("`{}`: {:.1}% → {:.1}%", cell(&h.name), h.base, h.new)
        });
        let _ = writeln!(
            md,
            "| `{}` | {:.1}% | {:.1}% | {:+.1} points | {} → {} | {holders} |",
            cell(&l.waits.name),
            l.waits.base,
            l.waits.new,
            l.waits.delta(),
            l.waiters.0,
            l.waiters.1
        );
    }
    md.push('\n');
}

/// Text safe inside a table cell and backticks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'")
}
