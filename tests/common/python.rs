//! Python test helpers: the interpreter matrix found on this machine, recording a fixture
//! with `parprof record`, and reading the folded output back per thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One interpreter under test.
#[derive(Debug, Clone)]
pub struct Interp {
    /// `3.12.1`, `3.13.5t`.
    pub version: String,
    pub path: PathBuf,
    pub free_threaded: bool,
}

impl Interp {
    /// `(major, minor)`, e.g. `(3, 14)`.
    pub fn minor(&self) -> (u32, u32) {
        let mut parts = self.version.split('.').map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

impl std::fmt::Display for Interp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.version, self.path.display())
    }
}

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    manifest_dir().join("fixtures/python").join(name)
}

/// Where the Python tests write their profiles, created on first use: a test must not rely on
/// another having run before it.
pub fn out_dir() -> PathBuf {
    let dir = manifest_dir().join("target/python-tests");
    std::fs::create_dir_all(&dir).expect("create target/python-tests");
    dir
}

/// Tests that start interpreters take turns: the machine may have few cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Ask an interpreter for its real executable, version and build; `None` below 3.11.
fn probe(python: &Path) -> Option<Interp> {
    let script = "import sys, sysconfig; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3]); \
                  print(int(bool(sysconfig.get_config_var('Py_GIL_DISABLED')))); print(int(sys.version_info >= (3, 11)))";
    let text = output(Command::new(python).args(["-c", script]))?;
    let lines: Vec<&str> = text.lines().collect();
    let [exe, version, ft, new_enough] = lines[..] else {
        return None;
    };
    if new_enough != "1" {
        return None;
    }
    let free_threaded = ft == "1";
    let path = std::fs::canonicalize(exe).ok()?;
    Some(Interp {
        version: format!("{version}{}", if free_threaded { "t" } else { "" }),
        path,
        free_threaded,
    })
}

/// The interpreters `scripts/cpython` builds (and caches) for the tests.
pub const BUILT: [&str; 3] = ["3.13t", "3.14", "3.14t"];

/// The CPython `scripts/cpython FLAVOUR` builds on first use (`3.13t`, `3.14`, `3.14t`). The
/// matrix requires each: a failure here fails the test with the script's own message.
pub fn built(flavour: &str) -> Interp {
    static BUILDS: Mutex<BTreeMap<String, Result<Interp, String>>> = Mutex::new(BTreeMap::new());
    let mut builds = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    builds
        .entry(flavour.to_string())
        .or_insert_with(|| build(flavour))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build(flavour: &str) -> Result<Interp, String> {
    let script = manifest_dir().join("scripts/cpython");
    let out = Command::new(&script)
        .arg(flavour)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {flavour} failed ({}); CPython {flavour} is required",
            script.display(),
            out.status
        ));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let interp = probe(&path).ok_or_else(|| {
        format!(
            "{} {flavour} printed {}, which does not run",
            script.display(),
            path.display()
        )
    })?;
    if interp.free_threaded != flavour.ends_with('t') {
        return Err(format!("{interp} is not the {flavour} build"));
    }
    Ok(interp)
}

/// The free-threaded builds: 3.13t and 3.14t.
pub fn free_threaded() -> Vec<Interp> {
    BUILT
        .iter()
        .filter(|f| f.ends_with('t'))
        .map(|f| built(f))
        .collect()
}

/// Every CPython ≥ 3.11 on this machine: pyenv's versions, each `python3` on PATH, and the
/// builds of [`BUILT`]. Duplicates (a pyenv shim and its version) are listed once.
pub fn interpreters() -> Vec<Interp> {
    static ALL: OnceLock<Vec<Interp>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(root) = output(Command::new("pyenv").arg("root")) {
            let versions =
                output(Command::new("pyenv").args(["versions", "--bare"])).unwrap_or_default();
            for v in versions.lines().map(str::trim).filter(|v| !v.is_empty()) {
                candidates.push(
                    Path::new(&root)
                        .join("versions")
                        .join(v)
                        .join("bin/python3"),
                );
            }
        }
        if let Some(all) = output(Command::new("which").args(["-a", "python3"])) {
            candidates.extend(all.lines().map(PathBuf::from));
        }
        let mut found: BTreeMap<PathBuf, Interp> = BTreeMap::new();
        for c in candidates.iter().filter(|c| c.exists()) {
            if let Some(i) = probe(c) {
                found.entry(i.path.clone()).or_insert(i);
            }
        }
        for interp in BUILT.map(built) {
            found.entry(interp.path.clone()).or_insert(interp);
        }
        let mut v: Vec<Interp> = found.into_values().collect();
        v.sort_by(|a, b| a.version.cmp(&b.version));
        eprintln!(
            "python matrix: {}",
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        v
    })
    .clone()
}

/// Whether `module` imports in `interp`.
pub fn has_module(interp: &Interp, module: &str) -> bool {
    output(Command::new(&interp.path).args(["-c", &format!("import {module}")])).is_some()
}

/// One line of `--threads` folded output.
#[derive(Debug, Clone)]
pub struct Stack {
    pub tid: i32,
    /// Root first, without the thread frame and the state frame.
    pub frames: Vec<String>,
    pub count: u64,
}

/// The result of recording a fixture.
pub struct Recording {
    pub stacks: Vec<Stack>,
    /// Thread ids the fixture announced with `worker-tid N` lines.
    pub workers: Vec<i32>,
    /// What parprof printed on stderr.
    pub stderr: String,
}

impl Recording {
    pub fn worker_stacks(&self) -> impl Iterator<Item = &Stack> {
        self.stacks.iter().filter(|s| self.workers.contains(&s.tid))
    }
}

pub fn parse_folded(text: &str) -> Vec<Stack> {
    text.lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            let mut frames: Vec<String> = stack.split(';').map(str::to_string).collect();
            let thread = frames.remove(0);
            frames.pop()?; // the sample's state, e.g. [compute]
            let tid = thread.rsplit(' ').next()?.parse().ok()?;
            Some(Stack {
                tid,
                frames,
                count: count.parse().ok()?,
            })
        })
        .collect()
}

/// Start `python fixture args...`, wait until `workers` threads announce themselves with
/// `worker-tid N` (so start-up time, long on a loaded machine, is not recorded), then run
/// `parprof record --threads -d SECS -o X.folded [extra] --pid PID` and stop the fixture.
pub fn record(
    interp: &Interp,
    fixture_name: &str,
    args: &[&str],
    workers: usize,
    secs: f64,
    extra: &[&str],
) -> Recording {
    use std::io::{BufRead, BufReader};
    let dir = out_dir();
    let flags: String = extra
        .iter()
        .filter(|f| f.starts_with('-'))
        .map(|f| f.trim_start_matches('-'))
        .collect::<Vec<_>>()
        .join("-");
    let out_file = dir.join(format!(
        "{}-{}{flags}.folded",
        fixture_name.trim_end_matches(".py"),
        interp.version
    ));
    let mut child = Command::new(&interp.path)
        .arg(fixture(fixture_name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {interp}: {e}"));
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let announced: Vec<i32> = stdout
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("worker-tid ")?.trim().parse().ok())
        .take(workers)
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_parprof"))
        .args(["record", "--threads", "-d", &secs.to_string(), "-o"])
        .arg(&out_file)
        .args(extra)
        .args(["--pid", &child.id().to_string()])
        .output()
        .expect("run parprof");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "parprof record on {interp} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).expect("read folded output");
    Recording {
        stacks: parse_folded(&text),
        workers: announced,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `fixture_name` with `args` started by parprof through a shell that execs the
/// interpreter after a moment (`record --threads -- sh -c 'sleep 0.5; exec PYTHON FIXTURE
/// ARGS'`), as pyenv's `python3` shim does: parprof starts sampling a shell, which becomes
/// Python only at the exec.
pub fn record_through_exec(interp: &Interp, fixture_name: &str, args: &[&str]) -> Recording {
    let dir = out_dir();
    let out_file = dir.join(format!(
        "{}-{}-exec.folded",
        fixture_name.trim_end_matches(".py"),
        interp.version
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_parprof"))
        .args(["record", "--threads", "-o"])
        .arg(&out_file)
        .args(["--", "sh", "-c", "sleep 0.5; exec \"$0\" \"$@\""])
        .arg(&interp.path)
        .arg(fixture(fixture_name))
        .args(args)
        .output()
        .expect("run parprof");
    assert!(
        out.status.success(),
        "parprof record -- sh -c '…; exec {interp} …' failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).expect("read folded output");
    Recording {
        stacks: parse_folded(&text),
        workers: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("worker-tid ")?.trim().parse().ok())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The function name of a Python frame label `name (file.py:line)`; `None` for other frames.
pub fn python_function(label: &str) -> Option<&str> {
    let (name, rest) = label.rsplit_once(" (")?;
    let loc = rest.strip_suffix(')')?;
    let (_, line) = loc.rsplit_once(':')?;
    line.parse::<u32>().ok().map(|_| name)
}

/// Whether the Python frames of `frames` contain `chain` consecutively, in order. Native
/// frames in between are allowed: they are where C code called back into Python.
pub fn has_chain(frames: &[String], chain: &[&str]) -> bool {
    let names: Vec<&str> = frames.iter().filter_map(|f| python_function(f)).collect();
    names.windows(chain.len()).any(|w| w == chain)
}

/// Run `check` on each interpreter, print one line per interpreter, fail with all failures.
pub fn each_interpreter(
    interps: &[Interp],
    mut check: impl FnMut(&Interp) -> Result<String, String>,
) {
    let _turn = serial();
    let mut failures = Vec::new();
    for interp in interps {
        match check(interp) {
            Ok(figures) => eprintln!("{interp}: {figures}"),
            Err(why) => {
                eprintln!("{interp}: FAILED {why}");
                failures.push(format!("{interp}: {why}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
