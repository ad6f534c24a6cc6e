//! The time the hypervisor gave this machine's CPUs to others ("steal", from `/proc/stat`).
//! A thread on a CPU whose virtual CPU is not running is on a CPU by the kernel's context
//! switches, which parprof's effective parallelism integrates, but gains no CPU time, which
//! a fixture's clock counts: with steal, the two differ by up to the stolen share.

/// The machine's CPU ticks at a moment: (busy or stolen, stolen).
pub struct Steal(u64, u64);

impl Steal {
    pub fn now() -> Steal {
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .expect("the cpu line of /proc/stat")
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse().expect("a tick count"))
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let busy: u64 = [0, 1, 2, 5, 6].iter().map(|&i| ticks[i]).sum();
        Steal(busy + ticks[7], ticks[7])
    }

    /// The share of the machine's busy time since `self` that was stolen.
    pub fn share_since(&self) -> f64 {
        let now = Steal::now();
        (now.1 - self.1) as f64 / (now.0 - self.0).max(1) as f64
    }
}

/// How far effective `parallelism` may exceed a fixture's CPU time over wall time: `base`,
/// plus the part of it that a `stolen` share of the time can account for.
pub fn allowed_above(parallelism: f64, stolen: f64, base: f64) -> f64 {
    base + parallelism * stolen
}
