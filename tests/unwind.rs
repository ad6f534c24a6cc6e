//! Native unwinding on real processes. The C fixture (fixtures/unwind/chain.c) is built
//! with `-O2 -g -fomit-frame-pointer`, plus a stripped copy, started, and recorded with the
//! real `parprof` binary; the folded stacks must show each thread's known call chain.
//! A last test drives the unwinder and symbolizer directly on captured stacks and prints
//! their speed.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use parprof::process::memory::Layered;
use parprof::process::ptrace::Tracer;
use parprof::process::{Maps, ProcessMemory, StackSnapshot, proc};
use parprof::symbols::Symbolizer;
use parprof::unwind::Unwinder;

/// The fixture, built three ways.
struct Fixtures {
    /// With symbols, DWARF and `.eh_frame`.
    full: PathBuf,
    /// The same, stripped: `.eh_frame` but no symbols of its own functions.
    stripped: PathBuf,
    /// Built without unwind tables (its CFI is `.debug_frame` only), then split: symbols,
    /// DWARF and `.debug_frame` live in a separate file found through `.gnu_debuglink`.
    split: PathBuf,
    /// Stripped, with MiniDebugInfo added the way distributions build it: the symbols of
    /// the functions `.dynsym` lacks, xz-compressed into `.gnu_debugdata`.
    mini: PathBuf,
}

/// Output of a command that must succeed.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `full` stripped, with MiniDebugInfo, as Fedora's find-debuginfo makes it.
fn with_mini_debuginfo(full: &Path, dir: &Path) -> PathBuf {
    let names = |dynamic: bool| -> std::collections::BTreeSet<String> {
        let mut nm = Command::new("nm");
        if dynamic {
            nm.arg("-D");
        }
        stdout_of(nm.args(["--format=posix", "--defined-only"]).arg(full))
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (name, kind) = (f.next()?, f.next()?);
                (dynamic || kind == "T" || kind == "t").then(|| name.to_string())
            })
            .collect()
    };
    let keep: Vec<String> = names(false).difference(&names(true)).cloned().collect();
    let keep_file = dir.join("chain-mini.keep");
    std::fs::write(&keep_file, keep.join("\n") + "\n").unwrap();
    let debug = dir.join("chain-mini.debug");
    let mini_debug = dir.join("chain-mini.minidebug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(full)
        .arg(&debug));
    run(Command::new("objcopy")
        .args([
            "-S",
            "--remove-section",
            ".gdb_index",
            "--remove-section",
            ".comment",
        ])
        .arg(format!("--keep-symbols={}", keep_file.display()))
        .arg(&debug)
        .arg(&mini_debug));
    run(Command::new("xz").arg("-f").arg(&mini_debug));
    let out = dir.join("chain-mini");
    std::fs::copy(full, &out).unwrap();
    run(Command::new("strip")
        .args(["--strip-all", "-R", ".comment"])
        .arg(&out));
    run(Command::new("objcopy")
        .arg(format!(
            "--add-section=.gnu_debugdata={}.xz",
            mini_debug.display()
        ))
        .arg(&out));
    out
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn fixtures() -> &'static Fixtures {
    static BUILT: OnceLock<Fixtures> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unwind");
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/unwind/chain.c");
        let cc = |out: &Path, extra: &[&str]| {
            run(Command::new("cc")
                .args(["-O2", "-g", "-fomit-frame-pointer", "-pthread"])
                .args(extra)
                .arg("-o")
                .arg(out)
                .arg(&src));
        };
        let full = dir.join("chain");
        cc(&full, &[]);
        let stripped = dir.join("chain-stripped");
        std::fs::copy(&full, &stripped).unwrap();
        run(Command::new("strip").arg(&stripped));
        let split = dir.join("chain-split");
        cc(
            &split,
            &["-fno-asynchronous-unwind-tables", "-fno-unwind-tables"],
        );
        let debug = dir.join("chain-split.debug");
        run(Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&split)
            .arg(&debug));
        run(Command::new("strip").arg(&split));
        run(Command::new("objcopy")
            .arg("--add-gnu-debuglink")
            .arg(&debug)
            .arg(&split)
            .current_dir(&dir));
        let mini = with_mini_debuginfo(&full, &dir);
        Fixtures {
            full,
            stripped,
            split,
            mini,
        }
    })
}

/// A running fixture, killed when dropped. Fixtures run one at a time: each keeps four
/// threads on the CPU, and several at once would starve the sampler on a small machine.
struct Target {
    child: Child,
    _turn: MutexGuard<'static, ()>,
}

impl Target {
    /// Start `exe` and wait until it says every thread is in place.
    fn start(exe: &Path) -> Target {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut child = Command::new(exe)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Target { child, _turn: turn }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One folded line: the thread's name, its frames root first (state dropped), the count.
#[derive(Debug, Clone)]
struct Stack {
    thread: String,
    frames: Vec<String>,
    count: u64,
}

impl Stack {
    /// A sample whose thread could not be captured at all (not an unwinding outcome).
    fn lost(&self) -> bool {
        self.frames.iter().all(|f| f == "[truncated]")
    }

    fn complete(&self) -> bool {
        !self.frames.iter().any(|f| f == "[truncated]")
            && matches!(
                self.frames.first().map(String::as_str),
                Some("clone3" | "clone" | "_start")
            )
    }

    /// `names` appear in this order (not necessarily adjacent).
    fn has_in_order(&self, names: &[&str]) -> bool {
        let mut it = self.frames.iter();
        names.iter().all(|n| it.any(|f| f == n))
    }
}

/// Record the fixture for two seconds with the real binary and parse the folded stacks.
fn record(pid: i32) -> Vec<Stack> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("unwind-{pid}.folded"));
    record_to(pid, &out, &[]);
    folded_stacks(&out)
}

/// What a recording printed on stderr, and how long it took.
struct Run {
    stderr: String,
    wall: Duration,
}

/// Record `pid` for two seconds with the real binary into `out` (the format its extension
/// says), with `env` added to parprof's environment. `DEBUGINFOD_URLS` is cleared first:
/// only the tests that set it reach a debuginfod server, whatever the caller's shell set.
fn record_to(pid: i32, out: &Path, env: &[(&str, &OsStr)]) -> Run {
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_parprof"))
        .args([
            "record",
            "--threads",
            "-d",
            "2",
            "--pid",
            &pid.to_string(),
            "-o",
        ])
        .arg(out)
        .env_remove("DEBUGINFOD_URLS")
        .envs(env.iter().copied())
        .output()
        .expect("run parprof");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        run.status.success(),
        "parprof record failed: {}\n{stderr}",
        run.status
    );
    Run { stderr, wall }
}

/// The stacks of a folded file written with `--threads`.
fn folded_stacks(path: &Path) -> Vec<Stack> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let (stack, count) = l.rsplit_once(' ').unwrap();
            let mut frames: Vec<String> = stack.split(';').map(str::to_string).collect();
            let thread = frames.remove(0).rsplit_once(' ').unwrap().0.to_string();
            assert!(
                frames.pop().unwrap().starts_with('['),
                "state frame last: {l}"
            );
            Stack {
                thread,
                frames,
                count: count.parse().unwrap(),
            }
        })
        .collect()
}

/// The recording of the unstripped fixture, shared by the tests that read it.
fn recording() -> &'static Vec<Stack> {
    static REC: OnceLock<Vec<Stack>> = OnceLock::new();
    REC.get_or_init(|| {
        let target = Target::start(&fixtures().full);
        record(target.pid())
    })
}

/// Share of the captured samples of `thread` for which `ok` holds, and how many there were.
fn share(stacks: &[Stack], thread: &str, ok: impl Fn(&Stack) -> bool) -> (f64, u64) {
    let captured: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.thread == thread && !s.lost())
        .collect();
    let total: u64 = captured.iter().map(|s| s.count).sum();
    let good: u64 = captured.iter().filter(|s| ok(s)).map(|s| s.count).sum();
    assert!(
        total >= 10,
        "too few samples of thread {thread}: {stacks:#?}"
    );
    (good as f64 / total as f64, total)
}

#[test]
fn busy_thread_shows_the_full_chain_from_the_thread_entry() {
    let stacks = recording();
    let (ok, n) = share(stacks, "busy", |s| {
        s.complete()
            && s.has_in_order(&["start_thread"])
            && s.frames
                .ends_with(&["worker", "a", "b", "c"].map(String::from))
    });
    eprintln!(
        "busy thread: {:.1}% of {n} samples carry start_thread → worker → a → b → c",
        ok * 100.0
    );
    assert!(ok >= 0.95, "{stacks:#?}");
}

#[test]
fn signal_handler_unwinds_into_the_interrupted_function() {
    let stacks = recording();
    let (ok, n) = share(stacks, "inhandler", |s| {
        s.complete() && s.has_in_order(&["start_thread", "interrupted", "handler", "handler_spin"])
    });
    eprintln!(
        "thread in a signal handler: {:.1}% of {n} samples unwind through it",
        ok * 100.0
    );
    assert!(ok >= 0.95, "{stacks:#?}");
}

#[test]
fn thread_blocked_in_nanosleep_unwinds_from_ip_and_sp_alone() {
    let stacks = recording();
    let (ok, n) = share(stacks, "sleeper", |s| {
        s.complete()
            && s.has_in_order(&["start_thread", "sleeper", "s1", "s2"])
            && s.frames.last().is_some_and(|f| f.contains("nanosleep"))
    });
    eprintln!(
        "sleeping thread: {:.1}% of {n} samples complete",
        ok * 100.0
    );
    assert!(ok >= 0.95, "{stacks:#?}");
}

/// The vDSO's unwind tables come from its image in target memory. Its `clock_gettime`
/// keeps a frame pointer, so a sample taken with only ip and sp stops there, incomplete
/// by design; samples with full registers must unwind through it to the thread entry.
#[test]
fn thread_in_the_vdso_unwinds_through_it() {
    let stacks = recording();
    // t1 → libc's clock_gettime wrapper → the vDSO's clock_gettime.
    let through_vdso = |s: &Stack| {
        s.complete()
            && s.frames
                .windows(3)
                .any(|w| w[0] == "t1" && w[2].contains("clock_gettime"))
    };
    let n: u64 = stacks
        .iter()
        .filter(|s| s.thread == "clocker" && through_vdso(s))
        .map(|s| s.count)
        .sum();
    eprintln!("thread calling clock_gettime: {n} samples unwound completely from inside the vDSO");
    assert!(n > 0, "{stacks:#?}");
}

#[test]
fn main_thread_is_seen_in_pthread_join_from_start() {
    let stacks = recording();
    let main = stacks.iter().filter(|s| s.thread == "chain" && !s.lost());
    let (mut all, mut good) = (0, 0);
    for s in main {
        all += s.count;
        if s.complete()
            && s.has_in_order(&["_start", "main"])
            && s.frames
                .iter()
                .any(|f| f.contains("pthread_clockjoin") || f.contains("pthread_join"))
        {
            good += s.count;
        }
    }
    assert!(all > 0 && good * 100 >= all * 95, "{stacks:#?}");
}

/// Function symbols of an ELF file by address.
fn function_symbols(path: &Path) -> std::collections::BTreeMap<u64, String> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let bytes = std::fs::read(path).unwrap();
    let file = object::File::parse(&bytes[..]).unwrap();
    file.symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
        .collect()
}

#[test]
fn stripped_binary_names_each_function_once_by_its_unwind_info() {
    let target = Target::start(&fixtures().stripped);
    let stacks = record(target.pid());
    busy_chain_grouped_by_fde(&stacks, "stripped");
}

/// Require the stripped fixture's busy thread to read start_thread → … → worker → a → b → c
/// in 95 % of `stacks`, its own frames named `chain-stripped!fn_START` after the FDE each
/// function starts; `how` says how it was recorded.
fn busy_chain_grouped_by_fde(stacks: &[Stack], how: &str) {
    // The unstripped twin's symbols: the function each `chain-stripped!fn_START` must be.
    let symbols = function_symbols(&fixtures().full);
    let function = |f: &String| {
        let start = f.strip_prefix("chain-stripped!fn_")?;
        symbols.get(&u64::from_str_radix(start, 16).ok()?).cloned()
    };
    let (ok, n) = share(stacks, "busy", |s| {
        let own: Vec<&String> = s
            .frames
            .iter()
            .filter(|f| f.starts_with("chain-stripped"))
            .collect();
        let named: Vec<String> = own.iter().filter_map(|f| function(f)).collect();
        s.complete()
            && s.has_in_order(&["start_thread"])
            && named.len() == own.len()
            && named.ends_with(&["worker", "a", "b", "c"].map(String::from))
    });
    eprintln!(
        "busy thread, {how}: {:.1}% of {n} samples complete, each own frame the function \
         its FDE starts",
        ok * 100.0
    );
    assert!(ok >= 0.95, "{stacks:#?}");
}

/// Record `exe` and require its busy thread to read start_thread → … → worker → a → b → c
/// in 95 % of samples; `how` says where the names came from.
fn busy_chain_complete(exe: &Path, how: &str) {
    let target = Target::start(exe);
    busy_chain_named(&record(target.pid()), how);
}

fn busy_chain_named(stacks: &[Stack], how: &str) {
    let (ok, n) = share(stacks, "busy", |s| {
        s.complete()
            && s.has_in_order(&["start_thread"])
            && s.frames
                .ends_with(&["worker", "a", "b", "c"].map(String::from))
    });
    eprintln!(
        "busy thread, {how}: {:.1}% of {n} samples complete",
        ok * 100.0
    );
    assert!(ok >= 0.95, "{stacks:#?}");
}

#[test]
fn debug_frame_and_symbols_from_a_separate_debug_file() {
    busy_chain_complete(&fixtures().split, "CFI and symbols from a debuglink file");
}

#[test]
fn symbols_from_mini_debuginfo_name_a_stripped_binarys_functions() {
    let mini = &fixtures().mini;
    assert!(
        !stdout_of(Command::new("nm").arg("-a").arg(mini)).contains(" worker"),
        "the binary itself has no symbol for worker"
    );
    busy_chain_complete(mini, "symbols from .gnu_debugdata");
}

/// elfutils' `debuginfod` on a free port, serving the debug files under a directory;
/// stopped when dropped. It listens on every interface (0.188 has no option to bind one)
/// and serves only what the test put in that directory.
struct Debuginfod {
    child: Child,
    url: String,
}

impl Debuginfod {
    /// Start it on `dir` and wait until it serves the debug file of `build_id`: it indexes
    /// the directory in the background after it starts listening.
    fn start(dir: &Path, build_id: &str) -> Debuginfod {
        let port = free_port();
        let child = Command::new("debuginfod")
            .args(["-F", "-p", &port.to_string(), "-d"])
            .arg(dir.with_extension("sqlite"))
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start debuginfod ({e}): scripts/install-test-deps installs it")
            });
        let mut server = Debuginfod {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let file = format!("{}/buildid/{build_id}/debuginfo", server.url);
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = Instant::now();
        while ureq::get(&file).call().is_err() {
            let exited = server.child.try_wait().unwrap();
            assert!(exited.is_none(), "debuginfod exited: {exited:?}");
            assert!(
                Instant::now() < deadline,
                "debuginfod did not serve {file} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "debuginfod served the debug file {:.2} s after it started",
            started.elapsed().as_secs_f64()
        );
        server
    }
}

impl Drop for Debuginfod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 nothing listens on (until someone binds it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn build_id_hex(path: &Path) -> String {
    use object::Object;
    let bytes = std::fs::read(path).unwrap();
    let file = object::File::parse(&bytes[..]).unwrap();
    let id = file
        .build_id()
        .unwrap()
        .expect("the fixture has a build id");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh directory for one test's files.
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Record `pid` into `dir/<tag>.parprof` with `env`; require the busy thread's chain named
/// (`how` says from where) and each of its functions given a line of chain.c.
fn record_with_lines(pid: i32, dir: &Path, tag: &str, env: &[(&str, &OsStr)], how: &str) -> Run {
    let saved = dir.join(format!("{tag}.parprof"));
    let run = record_to(pid, &saved, env);
    let render = |ext: &str| {
        let out = saved.with_extension(ext);
        let status = Command::new(env!("CARGO_BIN_EXE_parprof"))
            .args(["report", "--threads", "-o"])
            .arg(&out)
            .arg(&saved)
            .status()
            .expect("run parprof report");
        assert!(status.success(), "parprof report failed: {status}");
        out
    };
    busy_chain_named(&folded_stacks(&render("folded")), how);
    let speedscope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(render("json")).unwrap()).unwrap();
    let frames = speedscope["shared"]["frames"].as_array().unwrap();
    for function in ["worker", "a", "b", "c"] {
        let placed = frames.iter().find(|f| {
            f["name"] == function
                && f["file"].as_str().is_some_and(|p| p.ends_with("chain.c"))
                && f["line"].as_u64().is_some_and(|l| l > 0)
        });
        assert!(
            placed.is_some(),
            "{how}: no chain.c:line for {function} in {frames:#?}"
        );
    }
    run
}

/// parprof's lines about debuginfod servers on `stderr`.
fn debuginfod_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("parprof: debuginfod"))
        .collect()
}

/// The stripped fixture (no debuglink, no debug file installed) with its debug file only on
/// a local debuginfod server: parprof fetches it by build id into the cache, quietly (the
/// server's 404 for the vDSO is no warning), and names the chain with file:line; with the
/// server stopped, the cache alone still does.
#[test]
fn debug_file_from_a_debuginfod_server_names_the_stripped_chain_with_lines() {
    let dir = test_dir("debuginfod");
    let (served, cache) = (dir.join("served"), dir.join("cache"));
    std::fs::create_dir(&served).unwrap();
    let debug = served.join("chain.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&fixtures().full)
        .arg(&debug));
    let stripped = &fixtures().stripped;
    let id = build_id_hex(stripped);
    assert_eq!(id, build_id_hex(&debug));
    let server = Debuginfod::start(&served, &id);
    let fetch_started = Instant::now();
    let bytes = ureq::get(format!("{}/buildid/{id}/debuginfo", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    eprintln!(
        "the test's own fetch of the {} KiB debug file: {:.1} ms",
        bytes.len() >> 10,
        fetch_started.elapsed().as_secs_f64() * 1e3
    );
    let url = server.url.clone();
    let env = [
        ("DEBUGINFOD_URLS", OsStr::new(&url)),
        ("DEBUGINFOD_CACHE_PATH", cache.as_os_str()),
    ];

    let target = Target::start(stripped);
    let fetched = record_with_lines(
        target.pid(),
        &dir,
        "fetched",
        &env,
        "debug file from debuginfod",
    );
    assert!(
        debuginfod_warnings(&fetched.stderr).is_empty(),
        "no warning with the server up: {}",
        fetched.stderr
    );
    assert_eq!(
        std::fs::read(cache.join(&id).join("debuginfo")).unwrap(),
        std::fs::read(&debug).unwrap(),
        "the cache keeps the file as served, in elfutils' layout"
    );
    drop(server);
    let cached = record_with_lines(
        target.pid(),
        &dir,
        "cached",
        &env,
        "debug file from the debuginfod cache, server stopped",
    );
    eprintln!(
        "recording wall time: {:.2} s fetching, {:.2} s from the cache",
        fetched.wall.as_secs_f64(),
        cached.wall.as_secs_f64()
    );
}

/// With the debuginfod server unreachable (nothing listening on its port; or a listener that
/// never answers, with `DEBUGINFOD_TIMEOUT=1`), the stripped fixture's functions keep their
/// FDE-grouped names, one warning line names the server and what happened, and the recording
/// takes less than a second longer than without `DEBUGINFOD_URLS`.
#[test]
fn debuginfod_server_down_costs_one_warning_and_under_a_second() {
    let dir = test_dir("debuginfod-down");
    let target = Target::start(&fixtures().stripped);
    let base = record_to(target.pid(), &dir.join("base.folded"), &[]);
    let closed = format!("http://127.0.0.1:{}", free_port());
    // The kernel completes the handshake (the listen backlog); nothing reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent.local_addr().unwrap());
    for (tag, url, what) in [
        ("closed", &closed, "connection refused"),
        ("silent", &silent, "silent for 1 s"),
    ] {
        let out = dir.join(format!("{tag}.folded"));
        let cache = dir.join(format!("{tag}-cache"));
        let env = [
            ("DEBUGINFOD_URLS", OsStr::new(url)),
            ("DEBUGINFOD_CACHE_PATH", cache.as_os_str()),
            ("DEBUGINFOD_TIMEOUT", OsStr::new("1")),
        ];
        let run = record_to(target.pid(), &out, &env);
        busy_chain_grouped_by_fde(&folded_stacks(&out), &format!("debuginfod server {tag}"));
        let warnings = debuginfod_warnings(&run.stderr);
        assert!(
            warnings.len() == 1 && warnings[0].contains(url.as_str()) && warnings[0].contains(what),
            "one warning naming {url} ({what}): {}",
            run.stderr
        );
        let delay = run.wall.as_secs_f64() - base.wall.as_secs_f64();
        eprintln!(
            "server {tag}: recording took {:.2} s, {:+.2} s against {:.2} s without DEBUGINFOD_URLS; warning: {}",
            run.wall.as_secs_f64(),
            delay,
            base.wall.as_secs_f64(),
            warnings[0]
        );
        assert!(
            delay < 1.0,
            "server {tag} delayed the recording by {delay:.2} s"
        );
    }
}

/// fixtures/unwind/nocfi_main.c, linked against libnocfi.so built from nocfi_lib.c without
/// unwind info or frame pointers. Returns the program and the library.
fn nocfi_fixture() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nocfi");
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/unwind");
    let lib = dir.join("libnocfi.so");
    run(Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-fno-asynchronous-unwind-tables"])
        .args([
            "-fno-unwind-tables",
            "-fomit-frame-pointer",
            "-mno-red-zone",
            "-o",
        ])
        .arg(&lib)
        .arg(src.join("nocfi_lib.c")));
    let exe = dir.join("nocfi");
    run(Command::new("cc")
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(&exe)
        .arg(src.join("nocfi_main.c"))
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-lnocfi"));
    (exe, lib)
}

/// Code without CFI or a frame pointer, called from normal code (what BLAS kernels are to
/// numpy): the walk finds each return address by scanning the stack, and only there. Code
/// addresses on the stack that follow no call (decoys) never become frames.
#[test]
fn code_without_cfi_or_frame_pointer_unwinds_by_scanning_without_inventing_frames() {
    let (exe, lib) = nocfi_fixture();
    // The fixture is what it claims: no FDE covers the library's functions.
    let starts = fde_starts(&lib);
    let symbols = function_symbols(&lib);
    for f in ["nocfi_leaf", "nocfi_middle", "nocfi_middle_decoys"] {
        let (&at, _) = symbols
            .iter()
            .find(|(_, n)| *n == f)
            .expect("library symbol");
        assert!(!starts.contains(&at), "{f} has an FDE");
    }
    let target = Target::start(&exe);
    let stacks = record(target.pid());
    for (thread, chain) in [
        (
            "nocfi-worker",
            ["nocfi_worker", "nocfi_middle", "nocfi_leaf"],
        ),
        (
            "decoys",
            ["decoy_worker", "nocfi_middle_decoys", "nocfi_leaf"],
        ),
    ] {
        let (ok, n) = share(&stacks, thread, |s| {
            s.complete()
                && s.has_in_order(&["start_thread"])
                && s.frames.ends_with(&chain.map(String::from))
        });
        eprintln!(
            "{thread}: the full chain through code without CFI in {:.1}% of {n} samples",
            100.0 * ok
        );
        assert!(ok >= 0.95, "{thread}: {stacks:#?}");
    }
    let invented: Vec<&Stack> = stacks
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f.starts_with("decoy_") && f != "decoy_worker")
        })
        .collect();
    assert!(invented.is_empty(), "decoys taken as frames: {invented:#?}");
    // `dump --json` marks the frames found by scanning: the callers of code without CFI
    // (`nocfi_worker` is only ever found so, whichever library function the thread is in),
    // never a frame its unwind info gave.
    let dump: serde_json::Value = serde_json::from_str(&stdout_of(
        Command::new(env!("CARGO_BIN_EXE_parprof")).args([
            "dump",
            "--json",
            "--pid",
            &target.pid().to_string(),
        ]),
    ))
    .unwrap();
    let worker = dump["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "nocfi-worker")
        .expect("the nocfi-worker thread in the dump");
    let labels = |key: &str| -> Vec<&str> {
        worker[key]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f.as_str())
            .collect()
    };
    let (frames, scanned) = (labels("frames"), labels("scanned"));
    eprintln!("nocfi-worker in dump: {frames:?}, found by scanning: {scanned:?}");
    assert!(
        frames.last() == Some(&"nocfi_worker") || scanned.contains(&"nocfi_worker"),
        "nocfi_worker not marked as found by scanning: {worker}"
    );
    assert!(
        scanned
            .iter()
            .all(|f| frames.contains(f) && !["start_thread", "clone3"].contains(f)),
        "{worker}"
    );
}

/// The start addresses of the FDEs in `path`'s `.eh_frame`, as binutils' readelf lists them:
/// the functions a stripped module's unwind info says it has.
fn fde_starts(path: &Path) -> std::collections::BTreeSet<u64> {
    let listing = stdout_of(Command::new("readelf").arg("--debug-dump=frames").arg(path));
    listing
        .lines()
        .filter(|l| l.contains(" FDE "))
        .filter_map(|l| {
            let pc = l.split("pc=").nth(1)?.split("..").next()?;
            u64::from_str_radix(pc, 16).ok()
        })
        .collect()
}

/// A compressible file of `mib` MiB: words from a small vocabulary in an order no shorter
/// pattern repeats.
fn corpus(mib: usize) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("corpus-{mib}.txt"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() as usize >= mib << 20) {
        return path;
    }
    const WORDS: [&str; 16] = [
        "lock", "thread", "sample", "stack", "frame", "parked", "wait", "compute", "mutex",
        "futex", "kernel", "tick", "ring", "unwind", "symbol", "profile",
    ];
    let mut text = String::with_capacity((mib << 20) + 64);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while text.len() < mib << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(WORDS[(x % 16) as usize]);
        text.push_str(if x.is_multiple_of(11) { "\n" } else { " " });
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Debian's `xz -T2` and `zstd -T2`, stripped distribution builds, attached by pid while
/// they compress: every leaf frame in their stripped code is named by the function its
/// unwind info puts it in (`module!fn_START`, START an FDE start by readelf), never by a
/// return address, so their leaves are no more than the functions they fall in. The
/// issue measured 105 distinct leaves of xz's in 9 functions before.
#[test]
fn distribution_binaries_leaf_frames_are_their_functions() {
    let input = corpus(48);
    // (program, its arguments, the module its compression code is in)
    for (tool, args, fragment) in [
        ("xz", ["-T2", "-3", "-c"], "liblzma"),
        ("zstd", ["-T2", "-15", "-c"], "bin/zstd"),
    ] {
        let mut child = Command::new(tool)
            .args(args)
            .arg(&input)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {tool} (scripts/install-test-deps installs it): {e}")
            });
        std::thread::sleep(Duration::from_millis(300));
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
        let module_file = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains(fragment))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{tool} maps no {fragment}:\n{maps}"));
        let module = module_file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let starts = fde_starts(&module_file);
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tool}.folded"));
        record_to(child.id() as i32, &out, &[]);
        let _ = child.kill();
        let _ = child.wait();
        let stacks = folded_stacks(&out);
        let own = |f: &String| {
            f.starts_with(&format!("{module}!")) || f.starts_with(&format!("{module}+"))
        };
        let offsets: Vec<&String> = stacks
            .iter()
            .flat_map(|s| &s.frames)
            .filter(|f| own(f) && f.contains("+0x"))
            .collect();
        let leaves: std::collections::BTreeSet<&String> = stacks
            .iter()
            .filter_map(|s| s.frames.last())
            .filter(|f| own(f))
            .collect();
        let unknown: Vec<&&String> = leaves
            .iter()
            .filter(|f| {
                let start = f.rsplit_once("!fn_").map(|(_, s)| s);
                !start
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .is_some_and(|a| starts.contains(&a))
            })
            .collect();
        let samples: u64 = stacks
            .iter()
            .filter(|s| s.frames.last().is_some_and(own))
            .map(|s| s.count)
            .sum();
        eprintln!(
            "{tool}: {samples} samples with a leaf in {module}, {} distinct leaves, each an FDE's function ({} FDEs in the module)",
            leaves.len(),
            starts.len()
        );
        assert!(
            samples >= 100,
            "{tool}: too few samples in {module}: {stacks:#?}"
        );
        assert!(
            offsets.is_empty(),
            "{tool}: frames named by address: {offsets:?}"
        );
        assert!(
            unknown.is_empty(),
            "{tool}: leaves that are not an FDE's function: {unknown:?}"
        );
    }
}

/// CPU time of the calling thread, in nanoseconds: unlike wall time, not inflated when
/// the machine is busy.
fn thread_cpu_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// Unwind and symbolize stacks captured from the running fixture through the library API,
/// checking each walk and printing how much CPU the two steps take (run with --nocapture).
#[test]
fn unwind_and_symbolize_speed_on_captured_stacks() {
    let target = Target::start(&fixtures().full);
    let pid = target.pid();
    let busy = proc::threads(pid)
        .unwrap()
        .into_iter()
        .find(|&t| proc::thread_name(pid, t) == "busy")
        .expect("busy thread");
    let mem = ProcessMemory::new(pid);
    let mut tracer = Tracer::default();
    let mut captured = Vec::new();
    while captured.len() < 50 {
        let copy = |_, regs: &parprof::process::Regs| {
            StackSnapshot::capture(&mem, regs.sp(), &mut vec![0; 64 * 1024])
        };
        let mut stopped = tracer.with_stopped(&[busy], copy);
        // Waiting for a CPU at the interrupt, it stops when it gets one.
        stopped.extend(tracer.collect_late(Instant::now() + Duration::from_secs(1), copy));
        if let Some((_, Ok((regs, Ok(stack))))) = stopped.into_iter().find(|(_, r)| r.is_ok()) {
            captured.push((regs, stack));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let maps = Maps::read(pid).unwrap();
    let (mut unwinder, mut symbolizer) = (Unwinder::new(), Symbolizer::new());

    // The first walk loads the modules: unwind tables, symbol tables, DWARF.
    let t = thread_cpu_ns();
    let (regs, stack) = &captured[0];
    let first = unwinder.unwind(&maps, regs, &Layered { stack, rest: &mem });
    let cold_unwind = thread_cpu_ns() - t;
    let t = thread_cpu_ns();
    for (i, &pc) in first.pcs.iter().enumerate() {
        symbolizer.symbolize(&maps, &mem, pc, i > 0);
    }
    let cold_symbols = thread_cpu_ns() - t;
    // Every stack is of the same thread, so its modules are loaded: the target can go,
    // leaving the CPU to this measurement.
    drop(target);

    const ROUNDS: u32 = 20;
    let (mut unwind_ns, mut symbol_ns, mut walks, mut frames) = (0u128, 0u128, 0u32, 0u32);
    for _ in 0..ROUNDS {
        for (regs, stack) in &captured {
            let t = thread_cpu_ns();
            let walk = unwinder.unwind(&maps, regs, &Layered { stack, rest: &mem });
            unwind_ns += thread_cpu_ns() - t;
            let t = thread_cpu_ns();
            let names: Vec<String> = walk
                .pcs
                .iter()
                .enumerate()
                .flat_map(|(i, &pc)| symbolizer.symbolize(&maps, &mem, pc, i > 0))
                .map(|f| f.function)
                .rev()
                .collect();
            symbol_ns += thread_cpu_ns() - t;
            assert!(walk.complete, "incomplete walk: {names:?}");
            // The leaf is c, or b/a/worker between their calls.
            assert!(
                names.starts_with(&["clone3", "start_thread", "worker"].map(String::from)),
                "{names:?}"
            );
            walks += 1;
            frames += walk.pcs.len() as u32;
        }
    }
    eprintln!(
        "CPU time, first walk loading modules: unwind {:.1} ms, symbolize {:.1} ms; then per stack ({} frames avg): unwind {:.2} µs, symbolize {:.2} µs (no address cache)",
        cold_unwind as f64 / 1e6,
        cold_symbols as f64 / 1e6,
        frames / walks,
        unwind_ns as f64 / walks as f64 / 1e3,
        symbol_ns as f64 / walks as f64 / 1e3,
    );
}
