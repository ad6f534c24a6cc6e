//! CPython reader. (Contract for the interpreter reader.)

use crate::frame::Frame;
use crate::target::{Maps, ProcessMemory};

/// One thread's Python frames, innermost first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PyStack {
    pub frames: Vec<PyFrame>,
    /// The walk stopped early (depth cap, cycle, torn read).
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyFrame {
    pub frame: Frame,
    /// This frame is the first one run by its `_PyEval_EvalFrameDefault` call (the frame
    /// above an entry/shim frame): a new native eval-loop frame begins below it.
    pub entry: bool,
}

/// A CPython interpreter found in the target.
pub struct PythonReader {}

impl PythonReader {
    /// `Ok(None)` when the target is not a CPython process.
    pub fn detect(_pid: i32, _maps: &Maps, _mem: ProcessMemory) -> anyhow::Result<Option<PythonReader>> {
        Ok(None)
    }

    /// e.g. `3.13.0t` (the `t` marks a free-threaded build).
    pub fn version(&self) -> String {
        String::new()
    }

    /// Walk the interpreters and their thread states once per tick (tid → thread state).
    pub fn refresh_threads(&mut self) {}

    pub fn stack(&mut self, _tid: i32) -> Option<PyStack> {
        None
    }

    /// The thread holding the GIL, on builds that have one enabled.
    pub fn gil_holder(&mut self) -> Option<i32> {
        None
    }
}

/// Replace each native evaluation-loop frame with the Python frames it was running.
/// `native` is root first; the result is root first.
pub fn merge(native: Vec<Frame>, _py: &PyStack) -> Vec<Frame> {
    native
}

/// Only the Python frames, root first (`--no-native`).
pub fn python_only(py: &PyStack) -> Vec<crate::frame::Frame> {
    let mut v: Vec<_> = py.frames.iter().rev().map(|f| f.frame.clone()).collect();
    if py.truncated {
        v.insert(0, crate::frame::Frame::truncated());
    }
    v
}
