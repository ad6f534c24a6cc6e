//! Noticing that a process has executed a new program (exec), cheaply enough to ask at every
//! tick. Everything a recording caches about a process's code — its memory map, symbols and
//! unwind rules by address, its CPython interpreter — belongs to one program; after an exec
//! the same addresses may hold other functions.
//!
//! How: the main thread's `stat` gives the process's memory layout — where its code, data,
//! heap and stack start, and where its arguments and environment lie. exec builds a new
//! layout: with address randomisation the stack and heap move on every exec, and without it
//! a different program or different arguments still move some of these fields. The file is
//! kept open (it follows the pid through an exec from any thread) and re-read with one
//! `pread` per tick, about 3 µs, so no sample taken after an exec is resolved against the
//! old program. The thread's file, not the process's: that one sums over every thread.
//! Missed: an exec of the same program with the same arguments and randomisation off —
//! which maps the same files at the same addresses, so only CPython state would be stale.
//!
//! Why not the alternatives: `/proc/<pid>/exe` does not change when a program re-executes
//! itself; perf's exec-flagged COMM records would need another event on every CPU ring
//! (delivering every exec on the machine) and do not exist when the sampler polls.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::proc::StatFields;

/// What a process did since the previous check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessNow {
    Same,
    /// It executed a new program.
    Exec,
    /// It exited: gone, or a zombie with no thread left.
    Ended,
}

/// Fields 26–28 and 45–51 of `/proc/<pid>/stat`: start and end of code, start of stack,
/// start and end of data, start of heap, start and end of arguments and of environment.
type Layout = [u64; 10];

pub struct ExecWatch {
    stat: File,
    layout: Option<Layout>,
}

impl ExecWatch {
    pub fn open(pid: i32) -> io::Result<ExecWatch> {
        let stat = File::open(format!("/proc/{pid}/task/{pid}/stat"))?;
        let mut watch = ExecWatch { stat, layout: None };
        watch.check();
        Ok(watch)
    }

    pub fn check(&mut self) -> ProcessNow {
        let mut buf = [0u8; 1024];
        let Ok(n) = self.stat.read_at(&mut buf, 0) else {
            return ProcessNow::Ended;
        };
        let Some((state, threads, layout)) = parse(&buf[..n]) else {
            return ProcessNow::Ended;
        };
        if matches!(state, 'Z' | 'X') && threads <= 1 {
            return ProcessNow::Ended;
        }
        if layout == [0; 10] {
            // No memory to describe (a main thread that exited before the others), or not
            // permitted to see it: nothing to compare.
            return ProcessNow::Same;
        }
        match self.layout.replace(layout) {
            Some(old) if old != layout => ProcessNow::Exec,
            _ => ProcessNow::Same,
        }
    }
}

/// State, thread count and layout from a stat line.
fn parse(line: &[u8]) -> Option<(char, u32, Layout)> {
    let fields = StatFields::parse(std::str::from_utf8(line).ok()?)?;
    let mut layout = [0; 10];
    for (slot, n) in layout.iter_mut().zip((26..=28).chain(45..=51)) {
        *slot = fields.number(n)?;
    }
    Some((
        fields.state()?,
        u32::try_from(fields.number(20)?).ok()?,
        layout,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_layout_is_stable_and_a_change_is_an_exec() {
        let mut w = ExecWatch::open(std::process::id() as i32).unwrap();
        assert_eq!(w.check(), ProcessNow::Same);
        w.layout.as_mut().unwrap()[2] ^= 0x1000;
        assert_eq!(w.check(), ProcessNow::Exec);
        assert_eq!(w.check(), ProcessNow::Same);
    }

    #[test]
    fn parses_a_name_with_parentheses() {
        let tail: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        let line = format!("42 (a) b (c)) Z {}", tail.join(" "));
        let (state, threads, layout) = parse(line.as_bytes()).unwrap();
        assert_eq!((state, threads), ('Z', 20));
        assert_eq!(layout, [26, 27, 28, 45, 46, 47, 48, 49, 50, 51]);
        assert!(parse(b"42 (short) R 1 2").is_none());
    }
}
