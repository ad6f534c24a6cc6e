//! Python stacks on every CPython ≥ 3.11 found on the machine (pyenv's versions, the
//! `python3`s on PATH) and the 3.13t, 3.14 and 3.14t that `scripts/cpython` builds, which
//! the matrix requires. Each test starts a fixture from fixtures/python/, records it
//! with the real `parprof` binary (`record --pid` once its workers run) and checks the
//! Python frames of the threads the fixture announced.

// Shared with tests/python_locks.rs; this file uses part of it.
#[path = "common/python.rs"]
#[allow(dead_code)]
mod py;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use py::{Interp, Recording, has_chain, python_function};

/// Record seconds (after the fixture's workers have started).
const SECS: f64 = 2.0;
/// Fixtures run until stopped by the test, bounded by this in case the test dies.
const FIXTURE_SECS: &str = "120";

/// Share of `stacks` (weighted by count) that satisfy `pred`, and the total count.
fn share<'a>(
    stacks: impl Iterator<Item = &'a py::Stack>,
    mut pred: impl FnMut(&py::Stack) -> bool,
) -> (f64, u64) {
    let (mut hit, mut all) = (0u64, 0u64);
    for s in stacks {
        all += s.count;
        if pred(s) {
            hit += s.count;
        }
    }
    (
        if all == 0 {
            0.0
        } else {
            hit as f64 / all as f64
        },
        all,
    )
}

/// The share of announced worker samples showing `chain`, required to be at least `min`.
/// The first `n` worker stacks, for a failure message.
fn examples(rec: &Recording, n: usize) -> Vec<String> {
    rec.worker_stacks()
        .take(n)
        .map(|s| s.frames.join(";"))
        .collect()
}

/// A kernel sample whose Python frames were read after the thread moved on is marked
/// partial (no Python frames, `[truncated]`): unknown, not wrong, so not counted.
fn partial(s: &py::Stack) -> bool {
    s.frames.first().is_some_and(|f| f == "[truncated]")
        && s.frames.iter().all(|f| python_function(f).is_none())
}

/// The fixture announced `expected` workers.
fn announced(rec: &Recording, expected: usize) -> Result<(), String> {
    if rec.workers.len() == expected {
        return Ok(());
    }
    Err(format!(
        "expected {expected} workers to announce themselves, got {:?}",
        rec.workers
    ))
}

fn chain_share(
    rec: &Recording,
    expected_workers: usize,
    chain: &[&str],
    min: f64,
) -> Result<String, String> {
    announced(rec, expected_workers)?;
    let marked: u64 = rec
        .worker_stacks()
        .filter(|s| partial(s))
        .map(|s| s.count)
        .sum();
    let (frac, n) = share(rec.worker_stacks().filter(|s| !partial(s)), |s| {
        has_chain(&s.frames, chain)
    });
    let msg = format!(
        "{:.1}% of {n} worker samples show {} ({marked} more marked partial)",
        100.0 * frac,
        chain.join(" → ")
    );
    if n == 0 || frac < min {
        let sample = examples(rec, 5);
        return Err(format!(
            "{msg} (need {:.0}%); e.g. {sample:#?}",
            100.0 * min
        ));
    }
    Ok(msg)
}

#[test]
fn prime_workers_show_the_full_python_chain() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let rec = py::record(interp, "primes.py", &["3", FIXTURE_SECS], 3, SECS, &[]);
        // 3.14 and 3.14t are held to 95 % (they measured 97.9-99.8 %); older builds to 90 %.
        let min = if interp.minor() >= (3, 14) { 0.95 } else { 0.9 };
        chain_share(
            &rec,
            3,
            &["worker", "count_primes_in_range", "is_prime"],
            min,
        )
    });
}

/// Threads carry the names `threading` gave them, read from the target's memory (its
/// registry of threads), not the OS's (`python3.13`, or on 3.14 the name cut to 15 bytes):
/// a long name, Latin-1 and CJK names, the main thread, and a worker that renames itself
/// after parprof attached. The kernel's name stays beside it in the summary.
#[test]
fn threads_carry_the_names_threading_gave_them() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let dir = py::out_dir();
        let names = dir.join(format!("thread-names-{}.txt", interp.version));
        let summary = dir.join(format!("thread-names-{}.json", interp.version));
        let rec = py::record(
            interp,
            "thread_names.py",
            &[names.to_str().unwrap(), FIXTURE_SECS],
            4,
            SECS,
            &["--summary", summary.to_str().unwrap()],
        );
        announced(&rec, 4)?;
        // The fixture's own account: each thread's final name (a renamed one's last line).
        let text = std::fs::read_to_string(&names).map_err(|e| e.to_string())?;
        let expected: std::collections::BTreeMap<i64, &str> = text
            .lines()
            .filter_map(|l| {
                let (tid, name) = l.split_once(' ')?;
                Some((tid.parse().ok()?, name))
            })
            .collect();
        if expected.len() != 5 {
            return Err(format!(
                "the fixture named {} threads: {text}",
                expected.len()
            ));
        }
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let threads = summary["threads"].as_array().cloned().unwrap_or_default();
        let mut shown = Vec::new();
        for (&tid, &name) in &expected {
            let Some(t) = threads.iter().find(|t| t["tid"] == tid) else {
                return Err(format!("thread {tid} ({name}) is not in the profile"));
            };
            if t["name"] != name || !t["os_name"].is_string() {
                return Err(format!(
                    "thread {tid}: threading names it {name:?}, parprof {} (OS name {})",
                    t["name"], t["os_name"]
                ));
            }
            shown.push(format!(
                "{name} (OS: {})",
                t["os_name"].as_str().unwrap_or("?")
            ));
        }
        Ok(format!(
            "named as threading names them: {}",
            shown.join(", ")
        ))
    });
}

/// Frames a worker of `InterpreterPoolExecutor` runs in the main interpreter (the thread,
/// the executor's work loop, `Interpreter.call`): never inside its subinterpreter's part.
const MAIN_SIDE_FILES: [&str; 3] = ["threading.py", "thread.py", "__init__.py"];

#[test]
fn subinterpreter_workers_show_their_own_interpreters_frames() {
    let interps: Vec<Interp> = py::interpreters()
        .into_iter()
        .filter(|i| i.minor() >= (3, 14))
        .collect();
    assert!(interps.len() >= 2, "3.14 and 3.14t are built: {interps:?}");
    py::each_interpreter(&interps, |interp| {
        let rec = py::record(
            interp,
            "subinterpreters.py",
            &["2", FIXTURE_SECS],
            2,
            SECS,
            &[],
        );
        let chain = ["task", "count_primes_in_range", "is_prime"];
        let marker = |f: &String| f.starts_with("[interpreter ") && f != "[interpreter 0]";
        let mut wrong = None;
        let (frac, n) = share(rec.worker_stacks().filter(|s| !partial(s)), |s| {
            let Some(boundary) = s.frames.iter().position(marker) else {
                return false;
            };
            let (outside, inside) = s.frames.split_at(boundary);
            let main_side = |f: &String| {
                python_function(f).is_some()
                    && MAIN_SIDE_FILES
                        .iter()
                        .any(|m| f.contains(&format!("({m}:")))
            };
            if inside.iter().any(main_side) || inside[1..].iter().any(marker) {
                wrong.get_or_insert_with(|| s.frames.join(";"));
                return false;
            }
            outside.iter().any(main_side) && has_chain(inside, &chain)
        });
        let msg = format!(
            "{:.1}% of {n} worker samples read main-interpreter frames → [interpreter N] → {}",
            100.0 * frac,
            chain.join(" → ")
        );
        if let Some(stack) = wrong {
            return Err(format!("{msg}; a main-interpreter frame inside: {stack}"));
        }
        if n == 0 || frac < 0.9 {
            let sample = examples(&rec, 3);
            return Err(format!("{msg} (need 90%); e.g. {sample:#?}"));
        }
        Ok(msg)
    });
}

#[test]
fn implausible_debug_offsets_give_native_frames_and_one_warning() {
    let interps: Vec<Interp> = py::interpreters()
        .into_iter()
        .filter(|i| [(3, 13), (3, 14)].contains(&i.minor()))
        .collect();
    py::each_interpreter(&interps, |interp| {
        let rec = py::record(interp, "bad_offsets.py", &["2", FIXTURE_SECS], 2, SECS, &[]);
        let warnings: Vec<&str> = rec
            .stderr
            .lines()
            .filter(|l| l.contains("implausible debug offsets"))
            .collect();
        if warnings.len() != 1 {
            return Err(format!("expected one warning line, got: {}", rec.stderr));
        }
        if let Some(s) = rec
            .stacks
            .iter()
            .find(|s| s.frames.iter().any(|f| python_function(f).is_some()))
        {
            return Err(format!("a Python frame: {}", s.frames.join(";")));
        }
        let (frac, n) = share(rec.worker_stacks(), |s| {
            s.frames
                .iter()
                .any(|f| f.starts_with("_PyEval_EvalFrameDefault"))
        });
        let msg = format!(
            "{:?}; {:.1}% of {n} worker samples keep their native eval-loop frames",
            warnings[0],
            100.0 * frac
        );
        if n == 0 || frac < 0.9 {
            return Err(format!("{msg} (need 90%)"));
        }
        Ok(msg)
    });
}

#[test]
fn merged_stacks_read_from_start_thread_through_the_python_chain() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let rec = py::record(interp, "primes.py", &["2", FIXTURE_SECS], 2, SECS, &[]);
        let chain = ["worker", "count_primes_in_range", "is_prime"];
        // A Python walk cut short (a torn read of a running thread's frames: 1 sample in
        // about 400 on 3.14 in CI) is marked `[truncated]` at the root, and the eval-loop
        // frames it could not pair stay native, as merge documents: not a leftover.
        let leftover = rec.stacks.iter().find(|s| {
            s.frames.first().is_some_and(|f| f != "[truncated]")
                && s.frames.iter().any(|f| python_function(f).is_some())
                && s.frames
                    .iter()
                    .any(|f| f.starts_with("_PyEval_EvalFrameDefault"))
        });
        if let Some(s) = leftover {
            return Err(format!(
                "an eval-loop frame was not replaced: {}",
                s.frames.join(";")
            ));
        }
        let (frac, n) = share(rec.worker_stacks(), |s| {
            let root = s.frames.iter().position(|f| f == "start_thread");
            let first_python = s.frames.iter().position(|f| python_function(f).is_some());
            matches!((root, first_python), (Some(r), Some(p)) if r < p)
                && has_chain(&s.frames, &chain)
        });
        let msg = format!(
            "{:.1}% of {n} worker samples read start_thread → … → {}",
            100.0 * frac,
            chain.join(" → ")
        );
        if frac < 0.9 {
            Err(format!("{msg} (need 90%)"))
        } else {
            Ok(msg)
        }
    });
}

#[test]
fn thread_pool_tasks_show_the_executor_chain() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let rec = py::record(interp, "pool.py", &["3", FIXTURE_SECS], 3, SECS, &[]);
        // 3.14's work items run through the executor's `WorkerContext`.
        let chain: &[&str] = if interp.minor() >= (3, 14) {
            &[
                "_worker",
                "_WorkItem.run",
                "WorkerContext.run",
                "task",
                "crunch",
            ]
        } else {
            &["_worker", "_WorkItem.run", "task", "crunch"]
        };
        task_chain_share(&rec, 3, chain)
    });
}

/// For the pool: of the worker samples whose innermost Python frame is the task's leaf
/// (`chain`'s last), the share that shows the whole chain, required to be 90 %, over 100
/// such samples or more (the pool ran its tasks). The other worker samples are the
/// executor's own code between tasks, which on a GIL build largely waits for the GIL at
/// each step of `set_result`, the done callback and `submit` while the other workers
/// compute: 1 % to 60 % of worker samples from run to run (3.11 in CI), the
/// interpreter's scheduling and not parprof's reading.
fn task_chain_share(
    rec: &Recording,
    expected_workers: usize,
    chain: &[&str],
) -> Result<String, String> {
    announced(rec, expected_workers)?;
    let leaf = chain[chain.len() - 1];
    fn innermost(s: &py::Stack) -> Option<&str> {
        s.frames.iter().rev().find_map(|f| python_function(f))
    }
    let stacks = || rec.worker_stacks().filter(|s| !partial(s));
    let (in_task, n) = share(stacks(), |s| innermost(s) == Some(leaf));
    let (whole, n_task) = share(stacks().filter(|s| innermost(s) == Some(leaf)), |s| {
        has_chain(&s.frames, chain)
    });
    let mut elsewhere: Vec<(&str, u64)> = Vec::new();
    for s in stacks().filter(|s| innermost(s) != Some(leaf)) {
        let name = innermost(s).unwrap_or("(no Python frame)");
        match elsewhere.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += s.count,
            None => elsewhere.push((name, s.count)),
        }
    }
    elsewhere.sort_by_key(|&(_, c)| std::cmp::Reverse(c));
    elsewhere.truncate(4);
    let msg = format!(
        "{:.1}% of {n_task} worker samples in {leaf} show {}; {leaf} is {:.1}% of {n} worker samples (elsewhere: {elsewhere:?})",
        100.0 * whole,
        chain.join(" → "),
        100.0 * in_task,
    );
    if n_task < 100 || whole < 0.9 {
        let broken: Vec<String> = stacks()
            .filter(|s| innermost(s) == Some(leaf) && !has_chain(&s.frames, chain))
            .take(3)
            .map(|s| s.frames.join(";"))
            .collect();
        return Err(format!(
            "{msg} (need 90 % of 100 or more); e.g. {broken:#?}"
        ));
    }
    Ok(msg)
}

#[test]
fn python_only_stacks_start_at_the_thread_bootstrap() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let rec = py::record(
            interp,
            "primes.py",
            &["2", FIXTURE_SECS],
            2,
            SECS,
            &["--no-native"],
        );
        let chain = [
            "Thread._bootstrap",
            "Thread._bootstrap_inner",
            "Thread.run",
            "worker",
            "count_primes_in_range",
            "is_prime",
        ];
        let summary = chain_share(&rec, 2, &chain, 0.9)?;
        let native = rec
            .stacks
            .iter()
            .flat_map(|s| &s.frames)
            .find(|f| python_function(f).is_none() && *f != "[truncated]");
        match native {
            Some(f) => Err(format!("--no-native output has the native frame {f}")),
            None => Ok(summary),
        }
    });
}

/// Native frames of zlib's deflate, symbolised or not.
fn is_zlib_frame(label: &str) -> bool {
    [
        "libz.so",
        "deflate",
        "longest_match",
        "fill_window",
        "_tr_",
        "compress2",
        "crc32",
        "adler32",
    ]
    .iter()
    .any(|p| label.contains(p))
}

#[test]
fn c_extension_frames_sit_above_the_python_frames_that_called_them() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let rec = py::record(interp, "compress.py", &["2", FIXTURE_SECS], 2, SECS, &[]);
        let chain = chain_share(&rec, 2, &["compress_loop", "compress_block"], 0.9)?;
        let (frac, n) = share(rec.worker_stacks(), |s| {
            let Some(at) = s
                .frames
                .iter()
                .position(|f| python_function(f) == Some("compress_block"))
            else {
                return false;
            };
            s.frames[at + 1..].iter().any(|f| is_zlib_frame(f))
                && s.frames[at + 1..]
                    .iter()
                    .all(|f| python_function(f).is_none())
        });
        let mixed = format!(
            "{:.1}% of {n} worker samples show zlib frames above compress_block",
            100.0 * frac
        );
        if frac < 0.5 {
            let sample = examples(&rec, 5);
            return Err(format!("{mixed} (need 50%); e.g. {sample:#?}"));
        }
        Ok(format!("{chain}; {mixed}"))
    });
}

/// The C function a native frame belongs to, of the two that alternate.py alternates.
fn alternate_leaf(label: &str) -> Option<&'static str> {
    if label.contains("crc32") {
        Some("crc_phase")
    } else if label.contains("hexlify") || label.contains("strhex") {
        Some("hex_phase")
    } else {
        None
    }
}

/// A thread alternating every ~50 µs between two Python functions, each calling its own C
/// function: above each C leaf, the Python function that calls it, in ≥ 98 % of the
/// samples that show Python frames. Running threads are sampled by the kernel and their
/// Python frames read after the sample, so a sample whose thread has moved on is marked
/// partial instead; a third at least must still show their frames.
#[test]
fn python_frames_belong_to_the_native_stack_they_are_merged_into() {
    py::each_interpreter(&py::interpreters(), |interp| {
        let rec = py::record(interp, "alternate.py", &["2", FIXTURE_SECS], 2, 4.0, &[]);
        let (matched, shown, partial, msg) = frames_of_alternate(&rec);
        // The aim is 99 %; the other builds measure 99.8-100 %. Debian's own 3.11 build
        // (LTO) keeps stale pointers into the other function's bytecode in its eval loop's
        // stack slots: it measured 98.5-99.2 %, and 97.7 % of 128 samples in one CI run.
        let need = if interp.path.starts_with("/usr") && interp.minor() == (3, 11) {
            97
        } else {
            98
        };
        if shown == 0 || matched * 100 < shown * need {
            return Err(format!("{msg} (need {need}%)"));
        }
        // Frames are read 40-150 µs after the sample, one to three of the fixture's phases:
        // 20-31 % of these samples were marked partial (whether the frames are read right
        // after each sample is the exec test's, with longer phases).
        if partial > 2 * shown {
            return Err(format!("{msg} (need a third to show their Python frames)"));
        }
        Ok(msg)
    });
}

/// Of alternate.py's worker samples in crc32/hexlify: those whose innermost Python
/// function is the one that calls it, those with Python frames, those marked partial, and a
/// line saying so.
fn frames_of_alternate(rec: &py::Recording) -> (u64, u64, u64, String) {
    let (mut matched, mut mismatched, mut partial) = (0u64, 0u64, 0u64);
    for s in rec.worker_stacks() {
        let Some(inner) = s.frames.iter().rposition(|f| python_function(f).is_some()) else {
            if s.frames.iter().any(|f| alternate_leaf(f).is_some()) {
                partial += s.count;
            }
            continue;
        };
        let Some(calls) = s.frames[inner + 1..].iter().find_map(|f| alternate_leaf(f)) else {
            continue;
        };
        if python_function(&s.frames[inner]) == Some(calls) {
            matched += s.count;
        } else {
            mismatched += s.count;
        }
    }
    let shown = matched + mismatched;
    let msg = format!(
        "{:.1}% of {shown} samples in crc32/hexlify show their caller; {partial} more marked partial",
        100.0 * matched as f64 / shown.max(1) as f64
    );
    (matched, shown, partial, msg)
}

/// A program that becomes Python through an exec (a shell, pyenv's `python3` shim) has its
/// running threads' Python frames read right after each kernel sample, as one found at
/// attach. The fixture's phases last 2 ms here, so that frames read right after a sample
/// (40-150 µs after it) seldom find the other phase: 2 % of the C-leaf samples were marked
/// partial, against 46 % with each read put off by 3 ms (and half, at 50 µs phases, when
/// the frames were read at the next tick, up to 10 ms late).
#[test]
fn python_frames_are_read_after_each_sample_of_a_program_that_execs_into_python() {
    let interps = py::interpreters();
    let interp = interps.first().expect("no Python interpreter to test");
    py::each_interpreter(std::slice::from_ref(interp), |interp| {
        // Its own duration: parprof records until the command exits.
        let rec = py::record_through_exec(interp, "alternate.py", &["2", "4", "2000"]);
        if rec.workers.len() != 2 {
            return Err(format!("the fixture announced {:?}", rec.workers));
        }
        let (matched, shown, partial, msg) = frames_of_alternate(&rec);
        if shown == 0 || matched * 100 < shown * 97 || 3 * partial > shown {
            return Err(format!(
                "{msg} (need 97% to show their caller, and under a quarter marked partial)"
            ));
        }
        Ok(msg)
    });
}

#[test]
fn numpy_shared_array_sum_shows_python_frames() {
    let interps: Vec<Interp> = py::interpreters()
        .into_iter()
        .filter(|i| py::has_module(i, "numpy"))
        .collect();
    let ft = py::built("3.13t");
    assert!(
        py::has_module(&ft, "numpy"),
        "numpy is missing from {ft}; scripts/cpython 3.13t installs it"
    );
    py::each_interpreter(&interps, |interp| {
        let rec = py::record(interp, "numpy_sum.py", &["3", FIXTURE_SECS], 3, SECS, &[]);
        chain_share(&rec, 3, &["worker", "partial_sum"], 0.9)
    });
}

/// numpy's `a @ b` from two threads on the free-threaded build: the BLAS kernel is assembly
/// without unwind info (OpenBLAS's `dgemm_kernel_HASWELL`, which the fixture asks for),
/// walked out of by a stack scan. Of the samples in the kernel, 90 % must carry (as issue 18
/// asks), with no `[truncated]`, the Python caller, numpy's own C matmul frames and the BLAS
/// driver as the kernel's caller. Kernel sampling measured 95.7-98.4 % (the rest: Python frames,
/// read after the sample, that no longer matched it), the ptrace fallback 100 %.
#[test]
fn numpy_matmul_unwinds_out_of_the_blas_kernel_to_the_python_caller() {
    let ft = py::built("3.13t");
    assert!(
        py::has_module(&ft, "numpy"),
        "numpy is missing from {ft}; scripts/cpython 3.13t installs it"
    );
    py::each_interpreter(&[ft], |interp| {
        let rec = py::record(interp, "np_matmul.py", &["2", FIXTURE_SECS], 2, SECS, &[]);
        let in_kernel: Vec<&py::Stack> = rec
            .worker_stacks()
            .filter(|s| s.frames.last().is_some_and(|f| f.contains("gemm_kernel")))
            .collect();
        let whole = |s: &py::Stack| {
            let f = &s.frames;
            let n = f.len();
            !f.iter().any(|f| f == "[truncated]")
                && f.first().is_some_and(|f| f == "clone3")
                && f.iter().any(|f| f.starts_with("multiply (np_matmul.py:"))
                && f.iter()
                    .any(|f| f.contains("matmul") && !f.contains("np_matmul"))
                && n >= 2
                && is_blas_driver(&f[n - 2])
        };
        let all: u64 = in_kernel.iter().map(|s| s.count).sum();
        let good: u64 = in_kernel.iter().filter(|s| whole(s)).map(|s| s.count).sum();
        let share = good as f64 / all.max(1) as f64;
        let msg = format!(
            "{:.1}% of {all} samples in the BLAS kernel show worker → multiply → numpy's matmul → the BLAS driver → the kernel",
            100.0 * share
        );
        if all < 100 || share < 0.90 {
            let bad: Vec<&Vec<String>> = in_kernel
                .iter()
                .filter(|s| !whole(s))
                .map(|s| &s.frames)
                .take(3)
                .collect();
            return Err(format!("{msg} (need 90% of 100 or more); e.g. {bad:#?}"));
        }
        Ok(msg)
    });
}

/// Whether `frame` is OpenBLAS's level-3 driver (`dgemm_nn`, `dgemm_tn`, …), the kernel's
/// caller: a return address left by an earlier call (`dgemm_beta_HASWELL`, `scipy_cblas_dgemm64_`,
/// numpy's loop setup) in its place would be a wrong frame.
fn is_blas_driver(frame: &str) -> bool {
    frame
        .strip_prefix("dgemm_")
        .is_some_and(|t| t.len() == 2 && t.bytes().all(|b| b == b'n' || b == b't'))
}

/// py-spy, installed from PyPI into a venv under target/ on first use.
fn py_spy(interps: &[Interp]) -> std::path::PathBuf {
    let venv = py::manifest_dir().join("target/py-spy-venv");
    let bin = venv.join("bin/py-spy");
    if !bin.exists() {
        let python = interps
            .iter()
            .find(|i| !i.free_threaded)
            .expect("a GIL interpreter to install py-spy with");
        let ok = Command::new(&python.path)
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "py-spy"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok && bin.exists(),
            "could not install py-spy into {}",
            venv.display()
        );
    }
    bin
}

/// `(function, file name, line)` of a Python frame, innermost first.
type Loc = (String, String, u32);

fn parprof_locs(stack: &py::Stack) -> Vec<Loc> {
    let mut v: Vec<Loc> = stack
        .frames
        .iter()
        .filter_map(|f| {
            let name = python_function(f)?;
            let (file, line) = f[name.len() + 2..f.len() - 1].rsplit_once(':')?;
            Some((name.to_string(), file.to_string(), line.parse().ok()?))
        })
        .collect();
    v.reverse();
    v
}

fn py_spy_locs(thread: &serde_json::Value) -> Vec<Loc> {
    thread["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let file = f["filename"].as_str().unwrap_or("");
            let short = file.rsplit('/').next().unwrap_or(file).to_string();
            (
                f["name"].as_str().unwrap_or("").to_string(),
                short,
                f["line"].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect()
}

/// A process stopped with SIGSTOP for the life of the guard, then continued and killed.
struct Paused(std::process::Child);

impl Drop for Paused {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn python_frames_match_py_spy_on_a_paused_process() {
    let gil: Vec<Interp> = py::interpreters()
        .into_iter()
        .filter(|i| !i.free_threaded)
        .collect();
    assert!(!gil.is_empty(), "no GIL build of CPython >= 3.11 found");
    let py_spy = py_spy(&gil);
    py::each_interpreter(&gil, |interp| {
        let mut child = Command::new(&interp.path)
            .arg(py::fixture("primes.py"))
            .args(["2", "60"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let lines = BufReader::new(child.stdout.take().expect("stdout"));
        let workers: Vec<i32> = lines
            .lines()
            .take(2)
            .filter_map(|l| l.ok()?.strip_prefix("worker-tid ")?.parse().ok())
            .collect();
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(300));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .map_err(|e| e.to_string())?;
        let paused = Paused(child);

        let out_file = py::out_dir().join(format!("paused-{}.folded", interp.version));
        let status = Command::new(env!("CARGO_BIN_EXE_parprof"))
            .args([
                "record",
                "--threads",
                "--no-native",
                "-d",
                "0.3",
                "--pid",
                &pid.to_string(),
                "-o",
            ])
            .arg(&out_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("parprof record --pid failed: {status}"));
        }
        let ours =
            py::parse_folded(&std::fs::read_to_string(&out_file).map_err(|e| e.to_string())?);
        let dump = Command::new(&py_spy)
            .args(["dump", "--json", "--nonblocking", "--pid", &pid.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        drop(paused);
        let theirs: serde_json::Value = serde_json::from_slice(&dump.stdout).map_err(|e| {
            format!(
                "py-spy dump gave no JSON ({e}): {}",
                String::from_utf8_lossy(&dump.stderr)
            )
        })?;

        let mut compared = 0;
        for thread in theirs.as_array().into_iter().flatten() {
            let Some(tid) = thread["os_thread_id"].as_i64() else {
                continue;
            };
            let expected = py_spy_locs(thread);
            let mine: Vec<Vec<Loc>> = ours
                .iter()
                .filter(|s| i64::from(s.tid) == tid)
                .map(parprof_locs)
                .collect();
            if mine.iter().any(|m| *m != expected) || mine.is_empty() {
                return Err(format!(
                    "thread {tid}: py-spy {expected:?}, parprof {mine:?}"
                ));
            }
            compared += 1;
        }
        if compared < workers.len() + 1 {
            return Err(format!(
                "compared {compared} threads, expected the main thread and {} workers",
                workers.len()
            ));
        }
        Ok(format!("{compared} threads match py-spy frame for frame"))
    });
}
