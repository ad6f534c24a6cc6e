//! `parprof dump` on a deadlocked process: one cycle with both threads and both mutexes,
//! the idle waiter left out, and the target left exactly as it was.

mod attribution_fixtures;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attribution_fixtures::*;

/// Kills the fixture however the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn syscall_nr(pid: u32, tid: i64) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[test]
fn abba_deadlock_is_one_cycle_and_the_target_is_left_as_it_was() {
    let _serial = serial();
    let exe = build_c("abba");
    let mut child = Killed(Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap());
    let pid = child.0.id();
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let tids: Vec<i64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    let (one, two, idle) = (tids[0], tids[1], tids[2]);
    // Wait (bounded) until both are blocked in the futex of the mutex they will never get.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ![one, two]
        .iter()
        .all(|&t| syscall_nr(pid, t) == Some(libc::SYS_futex))
    {
        assert!(Instant::now() < deadline, "the fixture never deadlocked");
        std::thread::sleep(Duration::from_millis(10));
    }

    let out = run_ok(parprof().args(["dump", "--json", "--pid", &pid.to_string()]));
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&dump["deadlocks"]).unwrap()
    );
    let deadlocks = dump["deadlocks"].as_array().unwrap();
    assert_eq!(deadlocks.len(), 1, "{dump}");
    let mut cycle_tids: Vec<i64> = deadlocks[0]["tids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    cycle_tids.sort();
    let mut want = vec![one, two];
    want.sort();
    assert_eq!(cycle_tids, want);
    assert!(!cycle_tids.contains(&idle));
    let mut locks: Vec<&str> = deadlocks[0]["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    locks.sort();
    assert_eq!(locks, ["A", "B"]);
    let thread = |tid: i64| {
        dump["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid)
            .unwrap()
            .clone()
    };
    assert_eq!(thread(one)["state"], "lock");
    assert_eq!(thread(one)["waiting_on"]["symbol"], "B");
    assert_eq!(thread(one)["waiting_on"]["holder"], two);
    assert_eq!(thread(two)["waiting_on"]["symbol"], "A");
    assert_eq!(thread(idle)["state"], "wait");
    assert_eq!(thread(idle)["waiting_on"]["lock"], false);
    assert!(
        thread(one)["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "one")
    );

    let text = run_ok(parprof().args(["dump", "--pid", &pid.to_string()]));
    let text = String::from_utf8(text.stdout).unwrap();
    let sentence = text
        .lines()
        .find(|l| l.starts_with("deadlock: "))
        .expect("a deadlock sentence");
    assert!(
        sentence.contains(&format!("({one})")) && sentence.contains(&format!("({two})")),
        "{sentence}"
    );
    assert!(
        sentence.contains(" holds ") && sentence.contains(" which waits for "),
        "{sentence}"
    );

    // Left as it was: nothing traced, nothing stopped, every thread where it was.
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(entry.unwrap().path().join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(field("TracerPid:"), "0", "{status}");
        assert!(field("State:").starts_with('S'), "{status}");
    }
    assert_eq!(syscall_nr(pid, one), Some(libc::SYS_futex));
}

#[test]
fn dump_of_a_missing_process_is_one_clear_line() {
    let out = parprof()
        .args(["dump", "--pid", "999999999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no process with pid 999999999"), "{err}");
}
