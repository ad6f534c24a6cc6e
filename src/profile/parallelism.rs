//! How many of the target's threads ran at once: the effective parallelism, and how many
//! were runnable (on a CPU or queued for one). The sampler integrates it between the
//! kernel's context-switch records, so it is the kernel's own account of every instant,
//! not a count of samples: samples can be lost, dropped or undercounted, and a share of
//! samples says how time split, not how many threads ran together.

use serde::{Deserialize, Serialize};

/// Nanoseconds spent with each number of the target's threads on a CPU (`on_cpu_ns[k]`: k
/// threads) and runnable (`runnable_ns[k]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupancy {
    pub on_cpu_ns: Vec<u64>,
    pub runnable_ns: Vec<u64>,
}

/// The figures shown: means and how the time splits over thread counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parallelism {
    /// Threads on a CPU at an instant, on average: the effective parallelism.
    pub on_cpu: f64,
    /// Threads on a CPU or queued for one, on average.
    pub runnable: f64,
    /// Share of the time with k threads on a CPU, for k = 0, 1, 2, …
    pub on_cpu_shares: Vec<f64>,
    /// Seconds the figures cover.
    pub covered_s: f64,
}

impl Occupancy {
    /// `ns` nanoseconds with `on_cpu` threads on a CPU and `runnable` runnable.
    pub fn add(&mut self, on_cpu: usize, runnable: usize, ns: u64) {
        bump(&mut self.on_cpu_ns, on_cpu, ns);
        bump(&mut self.runnable_ns, runnable.max(on_cpu), ns);
    }

    /// Add what `other` counted (the next stretch of the same recording).
    pub fn merge(&mut self, other: &Occupancy) {
        for (k, &ns) in other.on_cpu_ns.iter().enumerate() {
            bump(&mut self.on_cpu_ns, k, ns);
        }
        for (k, &ns) in other.runnable_ns.iter().enumerate() {
            bump(&mut self.runnable_ns, k, ns);
        }
    }

    /// The figures, or `None` when nothing was covered.
    pub fn parallelism(&self) -> Option<Parallelism> {
        let total: u64 = self.on_cpu_ns.iter().sum();
        if total == 0 {
            return None;
        }
        let mean = |v: &[u64]| {
            v.iter()
                .enumerate()
                .map(|(k, &ns)| k as f64 * ns as f64)
                .sum::<f64>()
                / total as f64
        };
        Some(Parallelism {
            on_cpu: mean(&self.on_cpu_ns),
            runnable: mean(&self.runnable_ns),
            on_cpu_shares: self
                .on_cpu_ns
                .iter()
                .map(|&ns| ns as f64 / total as f64)
                .collect(),
            covered_s: total as f64 / 1e9,
        })
    }
}

impl Parallelism {
    /// `(k, share)` for each count of threads on a CPU that took at least 1 % of the time.
    pub fn notable_shares(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.on_cpu_shares
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, share)| *share >= 0.01)
    }
}

fn bump(v: &mut Vec<u64>, k: usize, ns: u64) {
    if v.len() <= k {
        v.resize(k + 1, 0);
    }
    v[k] += ns;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_and_shares_weigh_each_count_by_its_time() {
        let mut o = Occupancy::default();
        assert_eq!(o.parallelism(), None);
        o.add(2, 3, 750);
        o.add(0, 0, 250);
        let p = o.parallelism().unwrap();
        assert_eq!((p.on_cpu, p.runnable), (1.5, 2.25));
        assert_eq!(p.on_cpu_shares, vec![0.25, 0.0, 0.75]);
        // Runnable counts the threads on a CPU even when none is queued.
        o.add(1, 0, 1000);
        assert_eq!(o.runnable_ns, vec![250, 1000, 0, 750]);
        let mut sum = Occupancy::default();
        sum.merge(&o);
        sum.merge(&o);
        assert_eq!(sum.on_cpu_ns, vec![500, 2000, 1500]);
    }
}
