//! `parprof diff` as a CI gate (issue 5): the lock-scaling fixture recorded at its normal
//! scale and with 4x the work under the lock; the gate must fail and name the function,
//! pass on identical inputs, and refuse bad inputs in one line.

mod common;
mod lockscale;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use parprof::diff_cmd::REGRESSION_EXIT;

/// Base (scale 1) and new (scale 4) recordings of 2 workers for 4 seconds at 200 Hz: two
/// workers keep the one holding the lock from being a small slice of many threads, and
/// a few thousand samples keep sampling noise near one point.
fn recordings() -> &'static (PathBuf, PathBuf) {
    static REC: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    REC.get_or_init(|| {
        (
            lockscale::record(2, 4, 1, 200).0,
            lockscale::record(2, 4, 4, 200).0,
        )
    })
}

/// The gate's threshold in points: well above sampling noise, well below the fixture's
/// growth of `update_shared` (it goes from a fifth of each worker's cycle to half).
const THRESHOLD: &str = "3";

fn diff(args: &[&str]) -> std::process::Output {
    parprof()
        .arg("diff")
        .args(args)
        .output()
        .expect("run parprof diff")
}

#[test]
fn four_times_the_work_under_the_lock_fails_the_gate() {
    let (base, new) = recordings();
    let svg = scratch_file("diff.svg");
    let md = scratch_file("diff.md");
    let out = diff(&[
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--output",
        svg.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
        "--fail-on-regression",
        THRESHOLD,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(REGRESSION_EXIT as i32),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("regression past {THRESHOLD} points"))
            && stdout.contains("update_shared (self)"),
        "{stdout}"
    );
    // The gate names the mutex and the function its holders were in.
    let gate = stdout
        .split("regression past")
        .nth(1)
        .expect("the gate's reasons");
    let lock_line = gate
        .lines()
        .find(|l| l.contains("lock `shared_lock`: waits +"))
        .unwrap_or_else(|| panic!("the mutex is named among the reasons:\n{stdout}"));
    assert!(
        lock_line.contains("holders in `update_shared`"),
        "{lock_line}"
    );
    // Most of the new lock share is named: a waiter woken by the unlocker and not yet back
    // on a CPU still waits for that mutex (with 4,000 handoffs a second most waiters'
    // samples are such), only the time on a CPU in the kernel's futex code names none.
    let after = |line: &str, key: &str| -> f64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}"))..];
        let arrow = rest.find("→ ").expect("a → b") + "→ ".len();
        rest[arrow..].split('%').next().unwrap().parse().unwrap()
    };
    let share_line = gate.lines().find(|l| l.contains("lock share +")).unwrap();
    let (share, named) = (
        after(share_line, "lock share +"),
        after(lock_line, "lock `shared_lock`: waits +"),
    );
    assert!(
        named >= share / 2.0,
        "the mutex's waits are {named}% of samples, the lock share {share}%:\n{stdout}"
    );

    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("❌ regression"), "{md}");
    let regressions = md
        .split("### Regressions")
        .nth(1)
        .expect("a regressions section")
        .split("###")
        .next()
        .unwrap();
    assert!(
        regressions.contains("update_shared (self)")
            && regressions.contains("lock `shared_lock`: waits"),
        "the markdown names the function and the lock:\n{md}"
    );
    let lock_row = md
        .lines()
        .find(|l| l.starts_with("| `shared_lock`"))
        .expect("shared_lock has a row in the lock table");
    assert!(lock_row.contains("`update_shared`"), "{lock_row}");
    // The function's row in the self table shows it grew.
    let row = md
        .lines()
        .find(|l| l.starts_with("| `update_shared`"))
        .expect("update_shared has a row");
    assert!(row.contains("| +"), "{row}");

    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<?xml") && svg.contains("update_shared"),
        "differential flamegraph written"
    );
}

#[test]
fn a_profile_diffed_with_itself_passes() {
    let base = &recordings().0;
    let md = scratch_file("same.md");
    let out = diff(&[
        base.to_str().unwrap(),
        base.to_str().unwrap(),
        "--markdown",
        md.to_str().unwrap(),
        "--fail-on-regression",
        "0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("no share grew by more than 0 points"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&md).unwrap().contains("✅"));

    // The same recording as folded stacks compares equal to its saved form.
    let folded = scratch_file("same.folded");
    std::fs::write(&folded, lockscale::report(base, "same.folded", &[])).unwrap();
    let out = diff(&[
        base.to_str().unwrap(),
        folded.to_str().unwrap(),
        "--fail-on-regression",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn garbage_and_truncated_inputs_fail_in_one_line() {
    let base = &recordings().0;
    let bytes = std::fs::read(base).unwrap();
    let truncated = scratch_file("cut.parprof");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let garbage = scratch_file("garbage.bin");
    std::fs::write(&garbage, [0xffu8, 0x00, 0x13, 0x37, 0xfe].repeat(50)).unwrap();
    let text = scratch_file("words.txt");
    std::fs::write(&text, "these are words\nnot stacks\n").unwrap();
    let missing = scratch_file("missing.parprof");

    for (bad, says) in [
        (&truncated, "truncated or corrupt"),
        (&garbage, "neither a parprof profile nor folded stacks"),
        (&text, "not a folded stack"),
        (&missing, "cannot read"),
    ] {
        let (code, err) =
            lockscale::failure(&["diff", base.to_str().unwrap(), bad.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.starts_with("parprof: cannot read") && err.contains(says),
            "{bad:?}: {err}"
        );
    }
}
