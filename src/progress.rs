//! The live status line while recording (only on a terminal).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} parprof recording {msg}")
                    .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    /// Called once per tick; cheap when there is no terminal.
    pub fn tick(&self, pid: i32, samples: u64, threads: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "pid {pid}: {:.1} s, {samples} samples, {threads} threads (Ctrl-C to stop)",
                self.started.elapsed().as_secs_f64()
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}
