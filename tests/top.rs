//! `parprof top` on a live process, in a real terminal (tmux, installed by
//! scripts/install-test-deps): it shows the threads, their functions and the contended lock,
//! sorts on `s`, quits on `q`, gives the terminal back in cooked mode, and leaves the target
//! running, neither stopped nor traced.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        .args(args)
        .output()
        .expect("run tmux (scripts/install-test-deps installs it)")
}

/// The pane's text now.
fn screen(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
}

/// Wait up to `secs` for the pane to show every one of `wanted`; the last screen seen.
fn wait_for(session: &str, wanted: &[&str], secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = screen(session);
        if wanted.iter().all(|w| s.contains(w)) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the tmux session and the target however the test ends.
struct Cleanup(String, std::process::Child);

impl Drop for Cleanup {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

#[test]
fn top_shows_threads_functions_and_the_lock_sorts_and_quits() {
    // Two workers that compute, then hold the global mutex `big` for 2 ms (lockshare.c).
    let exe = build("fixtures/attribution/lockshare.c", &[]);
    let target = Command::new(&exe)
        .args(["2", "2000", "500", "60"])
        .arg(scratch_file("top-lockshare.out"))
        .spawn()
        .expect("start the fixture");
    let pid = target.id() as i32;
    let session = format!("parprof-top-{pid}");
    let cleanup = Cleanup(session.clone(), target);
    // When top ends, the pane's shell writes top's exit status and the terminal's modes,
    // which must be cooked again.
    let modes = scratch_file("top-stty.txt");
    let _ = std::fs::remove_file(&modes);
    let script = format!(
        "{} top --pid {pid}; echo exit $? > {m}; stty -a >> {m}; sleep 60",
        env!("CARGO_BIN_EXE_parprof"),
        m = modes.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "180",
        "-y",
        "50",
        &script,
    ]);
    assert!(started.status.success(), "{started:?}");

    let wanted = [
        "threads (by samples)",
        "locker",
        "spin",
        "big",
        "effective parallelism",
        "what limits scaling: lock `big`",
    ];
    let shown = wait_for(&session, &wanted, 15);
    for w in wanted {
        assert!(shown.contains(w), "top shows {w:?}:\n{shown}");
    }
    tmux(&["send-keys", "-t", &session, "s"]);
    let sorted = wait_for(&session, &["threads (by compute)"], 5);
    assert!(sorted.contains("threads (by compute)"), "{sorted}");

    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !modes.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let modes = std::fs::read_to_string(&modes).expect("top ended on q and the shell ran on");
    assert!(modes.starts_with("exit 0\n"), "top's exit status:\n{modes}");
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            words.contains(&mode),
            "terminal left without {mode}:\n{modes}"
        );
    }
    assert_eq!(stopped_or_traced(pid), Vec::<String>::new(), "after top");
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the target runs on"
    );
    drop(cleanup);
}
