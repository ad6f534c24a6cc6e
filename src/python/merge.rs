//! Splicing Python frames into a native stack.
//!
//! Each native `_PyEval_EvalFrameDefault` frame runs one group of Python frames: those from
//! an entry frame (flagged by the walk) up to the next entry frame. Groups and eval frames
//! are paired from the leaf down, because the leaf end of both stacks is the reliable one (a
//! native unwind loses frames at the root end, not at the leaf). Then:
//! - more groups than eval frames (the unwind stopped early or missed an eval frame): the
//!   outermost groups all go at the outermost eval frame, in order, so no Python frame is
//!   lost and the inner pairing stays right;
//! - no eval frame at all (no symbols for the interpreter, or the unwind failed before the
//!   first eval frame): the Python frames go at the root, after any truncation marker, and
//!   the native frames follow them;
//! - more eval frames than groups (the Python walk was cut short): the unpaired outer eval
//!   frames stay as native frames.

use super::PyStack;
use crate::frame::{Frame, FrameKind};

/// Native frames that run one `_PyEval_EvalFrameDefault` call (compiler clones included).
pub fn is_eval_frame(f: &Frame) -> bool {
    f.kind == FrameKind::Native
        && (f.function == "_PyEval_EvalFrameDefault"
            || f.function.starts_with("_PyEval_EvalFrameDefault."))
}

/// The Python frames in eval-call groups, root first, each group root first.
fn groups(py: &PyStack) -> Vec<Vec<Frame>> {
    let mut out: Vec<Vec<Frame>> = Vec::new();
    let mut current = Vec::new();
    // Innermost first: a group is complete at its entry frame.
    for f in &py.frames {
        current.push(f.frame.clone());
        if f.entry {
            current.reverse();
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        current.reverse();
        out.push(current);
    }
    out.reverse();
    out
}

/// Replace each native evaluation-loop frame with the Python frames it was running.
/// `native` is root first; the result is root first.
pub fn merge(native: Vec<Frame>, py: &PyStack) -> Vec<Frame> {
    let mut groups = groups(py);
    let evals: Vec<usize> = native
        .iter()
        .enumerate()
        .filter(|(_, f)| is_eval_frame(f))
        .map(|(i, _)| i)
        .collect();
    let mut out = Vec::with_capacity(native.len() + py.frames.len() + 1);
    if py.truncated
        && native
            .first()
            .is_none_or(|f| f.kind != FrameKind::Truncated)
    {
        out.push(Frame::truncated());
    }
    if evals.is_empty() {
        let split = native
            .iter()
            .take_while(|f| f.kind == FrameKind::Truncated)
            .count();
        out.extend(native[..split].iter().cloned());
        out.extend(groups.into_iter().flatten());
        out.extend(native[split..].iter().cloned());
        return out;
    }
    // Pair from the leaf: eval frame evals[k] gets group k - offset.
    let offset = evals.len() as isize - groups.len() as isize;
    let first_paired = offset.max(0) as usize;
    let mut outer: Vec<Frame> = if offset < 0 {
        groups.drain(..(-offset) as usize).flatten().collect()
    } else {
        Vec::new()
    };
    let mut groups = groups.into_iter();
    let mut next_eval = 0;
    for (i, f) in native.into_iter().enumerate() {
        if evals.get(next_eval) == Some(&i) {
            next_eval += 1;
            if next_eval > first_paired {
                out.append(&mut outer);
                out.extend(groups.next().into_iter().flatten());
                continue;
            }
        }
        out.push(f);
    }
    out
}

/// Only the Python frames, root first (`--no-native`).
pub fn python_only(py: &PyStack) -> Vec<Frame> {
    let mut v: Vec<_> = py.frames.iter().rev().map(|f| f.frame.clone()).collect();
    if py.truncated {
        v.insert(0, Frame::truncated());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::PyFrame;

    fn py(name: &str, entry: bool) -> PyFrame {
        let frame = Frame {
            function: name.into(),
            module: String::new(),
            file: Some("app.py".into()),
            line: Some(1),
            kind: FrameKind::Python,
        };
        PyFrame {
            frame,
            entry,
            bytecode: 0..0,
            instr: 0,
        }
    }

    fn native(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|n| {
                if *n == "[truncated]" {
                    Frame::truncated()
                } else {
                    Frame::native(*n, "python3")
                }
            })
            .collect()
    }

    fn names(frames: &[Frame]) -> Vec<&str> {
        frames.iter().map(|f| f.function.as_str()).collect()
    }

    const EVAL: &str = "_PyEval_EvalFrameDefault";

    /// `worker` runs in one eval call; `is_prime` is called from C (e.g. `map`) in another.
    fn two_calls() -> PyStack {
        PyStack {
            frames: vec![py("is_prime", true), py("count", false), py("worker", true)],
            truncated: false,
        }
    }

    #[test]
    fn each_eval_frame_gets_its_own_python_frames() {
        let n = native(&[
            "start_thread",
            "thread_run",
            EVAL,
            "map_next",
            EVAL,
            "PyNumber_Add",
        ]);
        let merged = merge(n, &two_calls());
        assert_eq!(
            names(&merged),
            [
                "start_thread",
                "thread_run",
                "worker",
                "count",
                "map_next",
                "is_prime",
                "PyNumber_Add"
            ]
        );
    }

    #[test]
    fn extra_python_groups_go_at_the_outermost_eval_frame() {
        let n = native(&["[truncated]", "map_next", EVAL, "leaf"]);
        let merged = merge(n, &two_calls());
        assert_eq!(
            names(&merged),
            [
                "[truncated]",
                "map_next",
                "worker",
                "count",
                "is_prime",
                "leaf"
            ]
        );
    }

    #[test]
    fn no_eval_frame_puts_python_at_the_root() {
        let n = native(&["[truncated]", "sem_wait"]);
        let merged = merge(n, &two_calls());
        assert_eq!(
            names(&merged),
            ["[truncated]", "worker", "count", "is_prime", "sem_wait"]
        );
    }

    #[test]
    fn unpaired_outer_eval_frames_stay_native_and_truncation_is_marked() {
        let n = native(&["start_thread", EVAL, "call", EVAL, "leaf"]);
        let stack = PyStack {
            frames: vec![py("inner", false)],
            truncated: true,
        };
        let merged = merge(n, &stack);
        assert_eq!(
            names(&merged),
            ["[truncated]", "start_thread", EVAL, "call", "inner", "leaf"]
        );
    }

    #[test]
    fn python_only_is_root_first() {
        let stack = PyStack {
            frames: two_calls().frames,
            truncated: true,
        };
        assert_eq!(
            names(&python_only(&stack)),
            ["[truncated]", "worker", "count", "is_prime"]
        );
    }

    #[test]
    fn a_subinterpreters_frames_land_on_its_own_eval_frames_after_its_marker() {
        // A pool worker: the main interpreter runs `call` (one eval call) into the C
        // function that enters subinterpreter 1, whose eval call runs `task → is_prime`.
        let mut sub = PyStack {
            frames: vec![py("is_prime", false), py("task", true)],
            truncated: false,
        };
        sub.mark_interpreter(1);
        let mut stack = sub;
        stack.frames.push(py("call", true));
        let n = native(&[
            "start_thread",
            EVAL,
            "_interpreters_call",
            EVAL,
            "PyNumber_Add",
        ]);
        assert_eq!(
            names(&merge(n, &stack)),
            [
                "start_thread",
                "call",
                "_interpreters_call",
                "[interpreter 1]",
                "task",
                "is_prime",
                "PyNumber_Add"
            ]
        );
    }
}
