//! Bad input gets one clear line and a non-zero exit — never a panic or a hang.

mod common;

use std::process::Command;

use common::*;

/// Runs parprof, expects failure with exactly one line on stderr containing every `needle`.
fn fails_with_one_line(cmd: &mut Command, needles: &[&str]) {
    let out = cmd.output().expect("run parprof");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{:?} does not mention {n:?}",
            lines[0]
        );
    }
}

fn record(args: &[&str]) -> Command {
    let mut c = parprof();
    c.arg("record")
        .args(args)
        .args(["-o", "/dev/null", "-f", "folded"]);
    c
}

#[test]
fn no_such_pid() {
    // pid_max is at most 2^22, so this pid cannot exist.
    fails_with_one_line(
        &mut record(&["--pid", "4999999"]),
        &["no process with pid 4999999"],
    );
}

#[test]
fn pid_that_is_not_a_number() {
    fails_with_one_line(
        &mut record(&["--pid", "abc"]),
        &["'abc' is not a process id"],
    );
    fails_with_one_line(&mut record(&["--pid", "-5"]), &["not a process id"]);
}

#[test]
fn kernel_thread() {
    // pid 2 is kthreadd wherever there is a kernel thread tree to see.
    let stat = std::fs::read_to_string("/proc/2/stat").expect("pid 2 exists");
    assert!(
        stat.contains("(kthreadd)"),
        "pid 2 is not kthreadd here: {stat}"
    );
    fails_with_one_line(&mut record(&["--pid", "2"]), &["kernel thread"]);
}

#[test]
fn zombie() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    // Not reaped yet: a zombie until `wait` below.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .contains(") Z")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "child did not become a zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    fails_with_one_line(&mut record(&["--pid", &pid.to_string()]), &["zombie"]);
    child.wait().unwrap();
}

#[test]
fn missing_command() {
    fails_with_one_line(
        &mut record(&["--", "/nonexistent/command"]),
        &["cannot start '/nonexistent/command'"],
    );
    fails_with_one_line(&mut record(&[]), &["--pid PID or -- COMMAND"]);
}

#[test]
fn absurd_rates() {
    for rate in ["0", "-3", "1e9", "NaN", "inf"] {
        fails_with_one_line(&mut record(&["--rate", rate, "--pid", "1"]), &["--rate"]);
    }
}

#[test]
fn unknown_output_extension() {
    let mut c = parprof();
    c.args(["record", "--pid", "1", "-o", "profile.xyz"]);
    fails_with_one_line(&mut c, &["cannot tell the format", "--format"]);
}

/// An unprivileged user cannot read a root process: the message names the sysctl and the
/// capability. Runs parprof as `nobody` against a process of the test's own user (root).
#[test]
fn permission_denied_names_the_fix() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root to switch to an unprivileged user"
    );
    let exe = build("fixtures/record/threads.c", &[]);
    let fx = Fixture::start(&exe, &["10", "1"]);
    // parprof lives in the build tree; copy it where `nobody` can execute it.
    let bin = std::env::temp_dir().join(format!("parprof-unprivileged-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_parprof"), &bin).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .args([
            "record",
            "--pid",
            &fx.pid().to_string(),
            "-o",
            "/dev/null",
            "-f",
            "folded",
        ]);
    fails_with_one_line(
        &mut c,
        &[
            "not permitted",
            "kernel.yama.ptrace_scope",
            "CAP_SYS_PTRACE",
        ],
    );
    let _ = std::fs::remove_file(bin);
}

/// parprof only reads its target. clippy.toml refuses every typed call that writes (nix's
/// ptrace writes, process_vm_writev, raw libc::ptrace); this catches what clippy cannot
/// see, a write request passed as a raw constant.
#[test]
fn source_never_writes_to_the_target() {
    let forbidden = ["POKEDATA", "POKETEXT", "POKEUSER", "SETREGS", "SETFPREGS"];
    let mut files = vec![repo().join("src")];
    let mut checked = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for f in forbidden {
                assert!(
                    !text.contains(f),
                    "{} uses {f}: parprof must never write to its target",
                    p.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 10, "walked only {checked} source files");
}
