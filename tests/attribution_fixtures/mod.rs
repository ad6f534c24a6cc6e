//! Building the attribution fixtures (fixtures/attribution) and running parprof on them.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// Tests that measure timing share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("attribution");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn source(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/attribution")
        .join(file)
}

/// Compile `fixtures/attribution/<name>.c` (with symbols and unwind tables).
pub fn build_c(name: &str) -> PathBuf {
    let out = work_dir().join(name);
    let tmp = work_dir().join(format!("{name}.{}.tmp", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O1", "-g", "-pthread", "-o"])
        .arg(&tmp)
        .arg(source(&format!("{name}.c")))
        .status()
        .expect("a C compiler (cc) is needed to build the fixtures");
    assert!(status.success(), "building {name}.c failed");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Compile `fixtures/attribution/<name>.rs` with rustc.
pub fn build_rust(name: &str) -> PathBuf {
    let out = work_dir().join(name);
    let tmp = work_dir().join(format!("{name}.{}.tmp", std::process::id()));
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["-O", "-g", "--edition", "2021", "-o"])
        .arg(&tmp)
        .arg(source(&format!("{name}.rs")))
        .status()
        .expect("rustc is needed to build the fixtures");
    assert!(status.success(), "building {name}.rs failed");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

pub fn parprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parprof"))
}

/// Run parprof and insist it succeeded; its stderr is shown in the test log.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running parprof");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "parprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `record --summary` of a command: the parsed summary JSON.
pub fn record_summary(tag: &str, extra: &[&str], command: &[&str]) -> serde_json::Value {
    let dir = work_dir();
    let summary = dir.join(format!("{tag}.json"));
    let output = dir.join(format!("{tag}.folded"));
    run_ok(
        parprof()
            .args(["record", "--rate", "200", "-o"])
            .arg(&output)
            .arg("--summary")
            .arg(&summary)
            .args(extra)
            .arg("--")
            .args(command),
    );
    serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap()
}

/// Samples of one state for one thread of a summary.
pub fn state(thread: &serde_json::Value, name: &str) -> u64 {
    thread["states"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no state {name} in {thread}"))
}

/// The summary's threads with this name.
pub fn threads_named<'a>(summary: &'a serde_json::Value, name: &str) -> Vec<&'a serde_json::Value> {
    summary["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == name)
        .collect()
}

/// The summary's thread with this tid.
pub fn thread_by_tid(summary: &serde_json::Value, tid: i64) -> &serde_json::Value {
    summary["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == tid)
        .expect("worker in the summary")
}

/// Samples of a thread whose state is known (`other`: parprof could not tell).
pub fn known(t: &serde_json::Value) -> u64 {
    t["samples"].as_u64().unwrap() - state(t, "other")
}

/// Share of a thread's known samples in `lock` + `lock_spin`. Both count because a
/// fixture's clock around `pthread_mutex_lock` includes the time after the unlocker woke
/// it and before it ran again (runnable inside the acquire: `lock_spin`), not only the
/// futex sleep.
pub fn lock_share(t: &serde_json::Value) -> f64 {
    (state(t, "lock") + state(t, "lock_spin")) as f64 / known(t).max(1) as f64
}
