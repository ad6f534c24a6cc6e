//! Shared helpers for the integration tests: build fixtures, start them, run parprof,
//! parse folded output, and check that no thread of a target is left stopped or traced.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Mutex;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Scratch space for this test binary, under cargo's target directory.
pub fn scratch() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("parprof-tests");
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// A unique file path in the scratch dir.
pub fn scratch_file(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    scratch().join(format!("{}-{}-{name}", std::process::id(), n))
}

static BUILD: Mutex<()> = Mutex::new(());

/// Compile a fixture (path relative to the repo) once per test binary run, with `cc` for C
/// and `rustc` for Rust sources. Returns the executable's path.
pub fn build(source: &str, flags: &[&str]) -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let src = repo().join(source);
    let stem = src.file_stem().unwrap().to_string_lossy().to_string();
    let tag: String = flags
        .iter()
        .map(|f| f.replace(['-', '=', ' ', '/'], ""))
        .collect();
    let exe = scratch().join(format!("{stem}{tag}"));
    let fresh = exe.metadata().and_then(|m| m.modified()).ok();
    let src_time = src
        .metadata()
        .and_then(|m| m.modified())
        .expect("fixture source exists");
    if fresh.is_some_and(|t| t >= src_time) {
        return exe;
    }
    let mut cmd = if source.ends_with(".rs") {
        let mut c = Command::new("rustc");
        c.args(["--edition", "2021", "-O", "-C", "debuginfo=2"]);
        c
    } else {
        let mut c = Command::new("cc");
        c.args(["-O2", "-g", "-fomit-frame-pointer", "-pthread"]);
        c
    };
    cmd.args(flags).arg(&src).arg("-o").arg(&exe);
    let out = cmd.output().expect("run the compiler");
    assert!(
        out.status.success(),
        "building {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// A started fixture; killed when dropped.
pub struct Fixture {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
}

impl Fixture {
    /// Start `exe` and wait for its `ready <pid>` line.
    pub fn start(exe: &Path, args: &[&str]) -> Fixture {
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fixture");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read fixture stdout");
        assert!(line.starts_with("ready"), "fixture said {line:?}");
        Fixture { child, stdout }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The rest of the fixture's stdout after it exits.
    pub fn wait_output(mut self) -> String {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut s).expect("read fixture output");
        let _ = self.child.wait();
        s
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parprof"))
}

/// Run parprof with `args`, asserting success; returns its output.
pub fn run_parprof(args: &[&str]) -> Output {
    let out = parprof().args(args).output().expect("run parprof");
    assert!(
        out.status.success(),
        "parprof {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One folded line: frames root first (the `[state]` leaf included) and its count.
#[derive(Debug, Clone)]
pub struct Stack {
    pub frames: Vec<String>,
    pub count: u64,
}

impl Stack {
    /// The frames without the trailing `[state]`.
    pub fn code(&self) -> &[String] {
        match self.frames.last() {
            Some(l) if l.starts_with('[') && l.ends_with(']') && l != "[truncated]" => {
                &self.frames[..self.frames.len() - 1]
            }
            _ => &self.frames,
        }
    }

    pub fn state(&self) -> &str {
        self.frames.last().map(|s| s.as_str()).unwrap_or("")
    }

    /// True when `names` appear in this order as consecutive frames.
    pub fn has_chain(&self, names: &[&str]) -> bool {
        self.code()
            .windows(names.len())
            .any(|w| w.iter().zip(names).all(|(f, n)| f == n))
    }

    pub fn has(&self, name: &str) -> bool {
        self.frames.iter().any(|f| f == name)
    }
}

pub fn parse_folded(text: &str) -> Vec<Stack> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (stack, count) = l.rsplit_once(' ').expect("folded line has a count");
            Stack {
                frames: stack.split(';').map(str::to_string).collect(),
                count: count.parse().expect("count"),
            }
        })
        .collect()
}

/// With `--threads`, the stacks of threads whose name starts with `prefix`.
pub fn thread_stacks<'a>(stacks: &'a [Stack], prefix: &str) -> Vec<&'a Stack> {
    stacks
        .iter()
        .filter(|s| s.frames[0].starts_with(prefix))
        .collect()
}

pub fn total(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.count).sum()
}

/// Threads of `pid` that are stopped (`T`/`t`) or have a tracer.
pub fn stopped_or_traced(pid: i32) -> Vec<String> {
    let mut bad = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return bad;
    };
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let state = field("State:");
        let tracer = field("TracerPid:");
        if state.starts_with('T') || state.starts_with('t') || (tracer != "0" && !tracer.is_empty())
        {
            bad.push(format!(
                "tid {} state {state} tracer {tracer}",
                t.file_name().to_string_lossy()
            ));
        }
    }
    bad
}
