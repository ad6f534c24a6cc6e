//! The lock-scaling fixture (fixtures/artifacts/lockscale.c) recorded to saved profiles,
//! shared by the artifact and diff tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

use crate::common::{build, run_parprof, scratch_file};

pub fn exe() -> PathBuf {
    build("fixtures/artifacts/lockscale.c", &[])
}

/// Record `lockscale THREADS SECONDS LOCKED_SCALE` from start to exit at `rate` Hz into a
/// `.parprof`; returns the file and parprof's stderr.
pub fn record(threads: u32, seconds: u32, locked_scale: u32, rate: u32) -> (PathBuf, String) {
    record_with_unit(threads, seconds, locked_scale, rate, None)
}

/// `record`, with `unit` iterations in a unit of work (the fixture's default: about 60 µs).
pub fn record_with_unit(
    threads: u32,
    seconds: u32,
    locked_scale: u32,
    rate: u32,
    unit: Option<u32>,
) -> (PathBuf, String) {
    let tag = unit.map(|u| format!("-u{u}")).unwrap_or_default();
    let out = scratch_file(&format!("lockscale-{threads}-{locked_scale}{tag}.parprof"));
    let exe = exe();
    let args = [
        threads.to_string(),
        seconds.to_string(),
        locked_scale.to_string(),
        rate.to_string(),
    ];
    let mut cmd = crate::common::parprof();
    cmd.args(["record", "--rate", &args[3], "-o"])
        .arg(&out)
        .arg("--")
        .arg(&exe)
        .args(&args[..3]);
    if let Some(u) = unit {
        cmd.env("LOCKSCALE_UNIT", u.to_string());
    }
    let o = cmd.output().expect("run parprof record");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "parprof record failed:\n{stderr}");
    (out, stderr)
}

/// `parprof report PROFILE -o OUTPUT [extra...]`; returns OUTPUT's bytes.
pub fn report(profile: &Path, output_name: &str, extra: &[&str]) -> Vec<u8> {
    let out = scratch_file(output_name);
    let mut args = vec![
        "report",
        profile.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_parprof(&args);
    std::fs::read(&out).expect("report wrote its output")
}

/// The sample count from record's end-of-run summary (`parprof: N samples of ...`).
pub fn summary_samples(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" samples of "))
        .expect("record printed its summary");
    let n = line
        .trim_start_matches("parprof: ")
        .split(' ')
        .next()
        .unwrap();
    n.parse().expect("sample count")
}

/// The stderr of a parprof run expected to fail, checked to be one line, with its status.
pub fn failure(args: &[&str]) -> (Option<i32>, String) {
    let o = crate::common::parprof()
        .args(args)
        .output()
        .expect("run parprof");
    assert!(!o.status.success(), "parprof {args:?} succeeded");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "parprof {args:?} printed more than one line:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    (o.status.code(), err)
}
