//! Native unwinding over a captured stack. (Contract for the CFI unwinder.)

use crate::target::{Maps, Memory, Regs};

/// The result of walking one stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unwound {
    /// Innermost first: `pcs[0]` is the instruction pointer, the rest are return addresses.
    pub pcs: Vec<u64>,
    /// True when the walk reached the outermost frame (the return address column is
    /// undefined, e.g. in `_start` or `clone3`), false when it stopped early.
    pub complete: bool,
}

/// Walks stacks with per-module unwind tables loaded once and cached.
#[derive(Default)]
pub struct Unwinder {}

impl Unwinder {
    pub fn new() -> Self {
        Unwinder::default()
    }

    pub fn unwind(&mut self, _maps: &Maps, regs: &Regs, _mem: &dyn Memory) -> Unwound {
        Unwound { pcs: vec![regs.ip()], complete: false }
    }
}
