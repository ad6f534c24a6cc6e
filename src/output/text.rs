//! The short end-of-run summary printed on stderr.

use std::path::Path;

use crate::profile::Profile;
use crate::sample::StopReason;

pub fn summary(p: &Profile, reason: StopReason, complete_walks: u64, walks: u64, output: &Path) {
    let why = match reason {
        StopReason::Duration => "duration reached",
        StopReason::Interrupted => "interrupted",
        StopReason::TargetExited => "target exited",
    };
    eprintln!(
        "parprof: {} samples of {} threads over {:.1} s ({why}); wrote {}",
        p.total_samples(),
        p.threads.len(),
        p.meta.duration_s,
        output.display()
    );
    if walks > 0 {
        eprintln!(
            "parprof: {:.1}% of native stacks unwound to their outermost frame",
            100.0 * complete_walks as f64 / walks as f64
        );
    }
    let hot = p.hottest_functions(5);
    if !hot.is_empty() {
        eprintln!("parprof: hottest functions (self samples):");
        let total = p.total_samples().max(1) as f64;
        for (name, n) in hot {
            eprintln!("  {:5.1}%  {n:6}  {name}", 100.0 * n as f64 / total);
        }
    }
}
