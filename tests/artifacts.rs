//! Profiles as artifacts (issue 5): one real recording of the lock-scaling fixture saved as
//! `.parprof`, then rendered by `parprof report` to folded, pprof and speedscope, each
//! checked against the others and against the decoded profile.

mod common;
mod lockscale;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use parprof::output::pprof::proto;
use parprof::profile::{Profile, State, saved};
use prost::Message;
use serde_json::Value;

/// One recording shared by the tests of this binary: 4 workers for 2 seconds.
fn recording() -> &'static (PathBuf, String) {
    static REC: OnceLock<(PathBuf, String)> = OnceLock::new();
    REC.get_or_init(|| lockscale::record(4, 2, 1, 100))
}

fn decoded() -> Profile {
    saved::read(&recording().0).expect("the recording decodes")
}

/// Folded lines as a map, so order and merging do not matter.
fn folded_map(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in parse_folded(text) {
        *m.entry(s.frames.join(";")).or_default() += s.count;
    }
    m
}

#[test]
fn saved_profile_reports_the_recorded_stacks() {
    let (path, stderr) = recording();
    let p = decoded();
    // Everything the recording counted is in the file, with its timeline and metadata.
    assert_eq!(
        p.total_samples(),
        lockscale::summary_samples(stderr),
        "{stderr}"
    );
    // The timeline has an entry where a thread changed: a thread that sat where it was
    // for ten ticks is one entry lasting ten ticks. So every count of the profile is of
    // a (thread, stack, state) the timeline shows, and the timeline shows nothing else.
    let timeline = p.timeline.as_ref().expect("a timeline");
    assert!(timeline.len() as u64 <= p.total_samples());
    let shown: std::collections::BTreeSet<_> =
        timeline.iter().map(|s| (s.tid, s.stack, s.state)).collect();
    let counted: std::collections::BTreeSet<_> = p.counts.keys().copied().collect();
    assert_eq!(shown, counted);
    assert!(p.meta.command.contains("lockscale"), "{:?}", p.meta);
    assert!(
        p.meta.pid > 0 && p.meta.duration_s > 0.0 && p.meta.rate_hz == 100.0,
        "{:?}",
        p.meta
    );
    assert_eq!(p.meta.parprof_version, env!("CARGO_PKG_VERSION"));
    assert!(
        p.threads.len() >= 5,
        "4 workers and main expected: {:?}",
        p.threads
    );
    // What the recording said at its end is what the file says: its threads' time, its
    // contended locks with their holders, and how running threads were captured.
    let capture = p.meta.capture.as_deref().expect("the capture backend");
    assert!(
        stderr.contains(&format!("running threads captured by {capture}")),
        "{stderr}"
    );
    assert!(!p.locks.is_empty(), "the lock table is saved: {stderr}");
    for line in parprof::output::text::findings(&p) {
        assert!(stderr.contains(&line), "{line:?} not in:\n{stderr}");
    }
    // `report --summary` writes the saved profile's summary, locks included.
    let json = scratch_file("report-summary.json");
    run_parprof(&[
        "report",
        path.to_str().unwrap(),
        "-o",
        scratch_file("report-summary.folded").to_str().unwrap(),
        "--summary",
        json.to_str().unwrap(),
    ]);
    let reported: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let expected = serde_json::to_value(parprof::output::summary_json::summary(&p)).unwrap();
    assert_eq!(reported, expected);
    assert!(!reported["locks"].as_array().unwrap().is_empty());

    for threads in [false, true] {
        let extra: &[&str] = if threads { &["--threads"] } else { &[] };
        let reported = String::from_utf8(lockscale::report(path, "round.folded", extra)).unwrap();
        let direct = parprof::output::folded::lines(&p, threads).join("\n") + "\n";
        assert_eq!(
            reported, direct,
            "report --threads={threads} differs from the decoded profile's folded lines"
        );
        let total: u64 = parse_folded(&reported).iter().map(|s| s.count).sum();
        assert_eq!(total, p.total_samples());
    }
    // The saved profile re-saved by `report` is byte-for-byte the same file.
    let resaved = lockscale::report(path, "again.parprof", &[]);
    assert_eq!(resaved, std::fs::read(path).unwrap());
}

#[test]
fn pprof_has_the_same_samples_labels_and_locations_as_folded() {
    let path = &recording().0;
    let folded = String::from_utf8(lockscale::report(path, "pp.folded", &["--threads"])).unwrap();
    let gz = lockscale::report(path, "pp.pb.gz", &[]);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("the pprof file is gzipped");
    let pp = proto::Profile::decode(&raw[..])
        .expect("the pprof file decodes as perftools.profiles.Profile");

    let st = &pp.string_table;
    let s = |i: i64| st[i as usize].as_str();
    assert_eq!(s(0), "");
    let types: Vec<(&str, &str)> = pp
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(
        types,
        [
            ("samples", "count"),
            ("wall", "nanoseconds"),
            ("cpu", "nanoseconds")
        ]
    );
    assert_eq!(pp.period, 10_000_000, "100 Hz is a 10 ms period");

    let functions: BTreeMap<u64, &proto::Function> =
        pp.function.iter().map(|f| (f.id, f)).collect();
    let mappings: BTreeMap<u64, &proto::Mapping> = pp.mapping.iter().map(|m| (m.id, m)).collect();
    let locations: BTreeMap<u64, &proto::Location> =
        pp.location.iter().map(|l| (l.id, l)).collect();
    assert_eq!(
        functions.len(),
        pp.function.len(),
        "function ids are unique"
    );
    assert_eq!(
        locations.len(),
        pp.location.len(),
        "location ids are unique"
    );
    assert!(
        !mappings.contains_key(&0) && !locations.contains_key(&0) && !functions.contains_key(&0)
    );
    let name_of = |loc: &u64| -> &str {
        let l = locations
            .get(loc)
            .unwrap_or_else(|| panic!("location {loc} missing"));
        assert!(
            l.mapping_id == 0 || mappings.contains_key(&l.mapping_id),
            "mapping {} missing",
            l.mapping_id
        );
        assert_eq!(l.line.len(), 1);
        s(functions[&l.line[0].function_id].name)
    };

    // Rebuild `thread;frames...;[state] count` from each sample: leaf-first locations,
    // thread from the labels; it must equal report's folded output with --threads.
    let mut rebuilt: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &pp.sample {
        let label = |k: &str| {
            sample
                .label
                .iter()
                .find(|l| s(l.key) == k)
                .unwrap_or_else(|| panic!("label {k} missing"))
        };
        let tid = label(parprof::output::pprof::LABEL_THREAD_ID).num;
        let name = s(label(parprof::output::pprof::LABEL_THREAD_NAME).str);
        let state = s(label(parprof::output::pprof::LABEL_STATE).str);
        // States are labels, not frames.
        let mut frames = vec![format!("{name} {tid}")];
        frames.extend(
            sample
                .location_id
                .iter()
                .rev()
                .map(|l| name_of(l).to_string()),
        );
        assert!(
            State::ALL
                .iter()
                .all(|st| frames.last() != Some(&st.leaf())),
            "no state location: {frames:?}"
        );
        frames.push(format!("[{state}]"));
        assert_eq!(sample.value.len(), 3);
        assert_eq!(sample.value[1], sample.value[0] * pp.period);
        let on_cpu = ["compute", "lock_spin"].contains(&state);
        assert_eq!(sample.value[2], if on_cpu { sample.value[1] } else { 0 });
        *rebuilt.entry(frames.join(";")).or_default() += sample.value[0] as u64;
    }
    assert_eq!(rebuilt, folded_map(&folded));
}

#[test]
fn speedscope_has_one_valid_timeline_per_thread() {
    let path = &recording().0;
    let json: Value =
        serde_json::from_slice(&lockscale::report(path, "ss.json", &[])).expect("valid JSON");
    let errors = speedscope_schema_errors(&json);
    assert!(
        errors.is_empty(),
        "speedscope schema violations: {errors:#?}"
    );

    let p = decoded();
    let profiles = json["profiles"].as_array().unwrap();
    assert_eq!(
        profiles.len(),
        p.threads.values().filter(|t| t.samples > 0).count(),
        "one profile per thread"
    );
    let frames = json["shared"]["frames"].as_array().unwrap();
    let timeline = p.timeline.as_ref().unwrap();
    for (prof, t) in profiles
        .iter()
        .zip(p.threads.values().filter(|t| t.samples > 0))
    {
        assert!(
            prof["name"]
                .as_str()
                .unwrap()
                .contains(&format!("tid {}", t.tid)),
            "{}",
            prof["name"]
        );
        // Time order: each entry lasts until the thread's next one.
        let times: Vec<u64> = timeline
            .iter()
            .filter(|s| s.tid == t.tid)
            .map(|s| s.time_ns)
            .collect();
        let samples = prof["samples"].as_array().unwrap();
        assert_eq!(samples.len(), times.len());
        let weights: Vec<u64> = prof["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        for (i, w) in times.windows(2).enumerate() {
            assert_eq!(weights[i], w[1] - w[0]);
        }
        assert_eq!(prof["startValue"].as_u64(), Some(times[0]));
        for s in samples {
            let leaf = s.as_array().unwrap().last().unwrap().as_u64().unwrap() as usize;
            let name = frames[leaf]["name"].as_str().unwrap();
            assert!(
                name.starts_with('[') && name.ends_with(']'),
                "every stack ends with its state: {name}"
            );
        }
    }
}

#[test]
fn report_refuses_bad_files_in_one_line() {
    let garbage = scratch_file("garbage.parprof");
    std::fs::write(&garbage, b"this is not a profile at all").unwrap();
    let (code, err) = lockscale::failure(&["report", garbage.to_str().unwrap(), "-o", "x.svg"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a parprof profile"), "{err}");

    let bytes = std::fs::read(&recording().0).unwrap();
    let truncated = scratch_file("truncated.parprof");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (_, err) = lockscale::failure(&["report", truncated.to_str().unwrap(), "-o", "x.svg"]);
    assert!(err.contains("truncated or corrupt"), "{err}");

    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(saved::VERSION + 1).to_le_bytes());
    let newer_path = scratch_file("newer.parprof");
    std::fs::write(&newer_path, &newer).unwrap();
    let (_, err) = lockscale::failure(&["report", newer_path.to_str().unwrap(), "-o", "x.svg"]);
    assert!(
        err.contains(&format!(
            "version {} is newer than this parprof supports",
            saved::VERSION + 1
        )),
        "{err}"
    );
}

/// The checks of speedscope's file-format schema (its `FileFormat.File` type, from which
/// https://www.speedscope.app/file-format-schema.json is generated), for sampled and
/// evented profiles; returns every violation found.
fn speedscope_schema_errors(v: &Value) -> Vec<String> {
    let mut e = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            e.push(what)
        }
    };
    let allowed = |obj: &serde_json::Map<String, Value>, keys: &[&str]| {
        obj.keys()
            .filter(|k| !keys.contains(&k.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    let Some(file) = v.as_object() else {
        return vec!["the file is not an object".into()];
    };
    need(
        file.get("$schema").and_then(Value::as_str)
            == Some("https://www.speedscope.app/file-format-schema.json"),
        "$schema".into(),
    );
    let extra = allowed(
        file,
        &[
            "$schema",
            "shared",
            "profiles",
            "name",
            "activeProfileIndex",
            "exporter",
        ],
    );
    need(extra.is_empty(), format!("unknown keys {extra:?}"));
    need(
        file.get("name").is_none_or(Value::is_string),
        "name is a string".into(),
    );
    need(
        file.get("exporter").is_none_or(Value::is_string),
        "exporter is a string".into(),
    );
    let frames = file
        .get("shared")
        .and_then(|s| s.get("frames"))
        .and_then(Value::as_array);
    need(frames.is_some(), "shared.frames is an array".into());
    let frames = frames.map(Vec::as_slice).unwrap_or_default();
    for (i, f) in frames.iter().enumerate() {
        let Some(f) = f.as_object() else {
            need(false, format!("frame {i} is an object"));
            continue;
        };
        need(
            f.get("name").is_some_and(Value::is_string),
            format!("frame {i} has a string name"),
        );
        need(
            f.get("file").is_none_or(Value::is_string),
            format!("frame {i} file is a string"),
        );
        for k in ["line", "col"] {
            need(
                f.get(k).is_none_or(Value::is_number),
                format!("frame {i} {k} is a number"),
            );
        }
        let extra = allowed(f, &["name", "file", "line", "col"]);
        need(
            extra.is_empty(),
            format!("frame {i} has unknown keys {extra:?}"),
        );
    }
    let profiles = file.get("profiles").and_then(Value::as_array);
    need(profiles.is_some(), "profiles is an array".into());
    let profiles = profiles.map(Vec::as_slice).unwrap_or_default();
    if let Some(i) = file.get("activeProfileIndex") {
        need(
            i.as_u64()
                .is_some_and(|i| (i as usize) < profiles.len().max(1)),
            "activeProfileIndex in range".into(),
        );
    }
    let units = [
        "none",
        "nanoseconds",
        "microseconds",
        "milliseconds",
        "seconds",
        "bytes",
    ];
    for (i, p) in profiles.iter().enumerate() {
        need(
            p.get("name").is_some_and(Value::is_string),
            format!("profile {i} has a string name"),
        );
        need(
            p.get("unit")
                .and_then(Value::as_str)
                .is_some_and(|u| units.contains(&u)),
            format!("profile {i} unit"),
        );
        let start = p.get("startValue").and_then(Value::as_f64);
        let end = p.get("endValue").and_then(Value::as_f64);
        need(
            start.is_some() && end.is_some(),
            format!("profile {i} start/endValue are numbers"),
        );
        need(start <= end, format!("profile {i} endValue >= startValue"));
        let frame_ok = |x: &Value| x.as_u64().is_some_and(|n| (n as usize) < frames.len());
        match p.get("type").and_then(Value::as_str) {
            Some("sampled") => {
                let samples = p.get("samples").and_then(Value::as_array);
                let weights = p.get("weights").and_then(Value::as_array);
                need(
                    samples.is_some() && weights.is_some(),
                    format!("profile {i} has samples and weights arrays"),
                );
                let (samples, weights) = (
                    samples.map(Vec::as_slice).unwrap_or_default(),
                    weights.map(Vec::as_slice).unwrap_or_default(),
                );
                need(
                    samples.len() == weights.len(),
                    format!("profile {i}: as many weights as samples"),
                );
                need(
                    weights.iter().all(Value::is_number),
                    format!("profile {i}: weights are numbers"),
                );
                need(
                    samples
                        .iter()
                        .all(|s| s.as_array().is_some_and(|s| s.iter().all(frame_ok))),
                    format!("profile {i}: every sample is an array of frame indices"),
                );
                let extra = allowed(
                    p.as_object().unwrap(),
                    &[
                        "type",
                        "name",
                        "unit",
                        "startValue",
                        "endValue",
                        "samples",
                        "weights",
                    ],
                );
                need(
                    extra.is_empty(),
                    format!("profile {i} has unknown keys {extra:?}"),
                );
            }
            Some("evented") => {
                let events = p
                    .get("events")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                need(
                    events.iter().all(|ev| {
                        matches!(ev.get("type").and_then(Value::as_str), Some("O" | "C"))
                            && ev.get("at").is_some_and(Value::is_number)
                            && ev.get("frame").is_some_and(frame_ok)
                    }),
                    format!("profile {i}: events"),
                );
            }
            other => need(false, format!("profile {i} type {other:?}")),
        }
    }
    e
}

/// Hue in degrees of an SVG `rgb(r,g,b)` fill.
fn hue(fill: &str) -> Option<f64> {
    let inner = fill.strip_prefix("rgb(")?.strip_suffix(')')?;
    let c: Vec<f64> = inner
        .split(',')
        .map(|v| v.trim().parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let [r, g, b] = c[..] else { return None };
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    if max == min {
        return Some(0.0);
    }
    let d = max - min;
    let h = if max == r {
        60.0 * ((g - b) / d)
    } else if max == g {
        60.0 * ((b - r) / d) + 120.0
    } else {
        60.0 * ((r - g) / d) + 240.0
    };
    Some(h.rem_euclid(360.0))
}

#[test]
fn flamegraph_frames_are_coloured_by_the_states_beneath_them() {
    // Two workers on two cores, four times the work under the lock: functions that almost
    // only compute and functions that almost only wait for the lock.
    let (path, _) = lockscale::record(2, 2, 4, 100);
    let p = saved::read(&path).expect("the recording decodes");
    // Per function: its samples' states, each stack counted once (the profile's own data).
    let mut states: BTreeMap<String, BTreeMap<State, u64>> = BTreeMap::new();
    for (&(_, stack, state), &n) in &p.counts {
        let labels: std::collections::BTreeSet<String> =
            p.stack(stack).iter().map(|&f| p.frame(f).label()).collect();
        for label in labels {
            *states.entry(label).or_default().entry(state).or_default() += n;
        }
    }
    // At least 90 % of at least 20 samples in these states (a busy thread still waits for a
    // CPU now and then; a lock waiter is parked, or runnable inside the acquire), of the
    // samples whose state is known: `other` says a ptrace stop came after the thread had
    // blocked, so what it ran at the tick is not known (about 10 % of the lock wait's
    // samples under the ptrace fallback, over 10 % in one run of six).
    let mostly = |want: &[State]| -> Vec<&String> {
        states
            .iter()
            .filter(|(_, s)| {
                let all: u64 = s.values().sum::<u64>() - s.get(&State::Other).unwrap_or(&0);
                let n: u64 = want.iter().filter_map(|w| s.get(w)).sum();
                n >= 20 && n * 10 >= all * 9
            })
            .map(|(f, _)| f)
            .collect()
    };
    let lock = mostly(&[State::Lock, State::LockSpin]);
    let compute = mostly(&[State::Compute]);
    assert!(
        !lock.is_empty() && !compute.is_empty(),
        "functions mostly in lock waits {lock:?} and mostly computing {compute:?}: {states:?}"
    );
    let svg = String::from_utf8(lockscale::report(&path, "states.svg", &[])).unwrap();
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&svg, opts).expect("the SVG parses");
    // Each frame is a <g> holding <title>NAME (N samples, P%)</title> and a filled <rect>.
    let mut fills: BTreeMap<String, String> = BTreeMap::new();
    for g in doc.descendants().filter(|n| n.has_tag_name("g")) {
        let title = g
            .children()
            .find(|c| c.has_tag_name("title"))
            .and_then(|t| t.text());
        let fill = g
            .children()
            .find(|c| c.has_tag_name("rect"))
            .and_then(|r| r.attribute("fill"));
        if let (Some(title), Some(fill)) = (title, fill)
            && let Some((name, _)) = title.rsplit_once(" (")
        {
            fills.insert(name.to_string(), fill.to_string());
        }
    }
    let hue_of = |f: &String| {
        let fill = fills
            .get(f)
            .unwrap_or_else(|| panic!("{f} is not in the SVG"));
        hue(fill).unwrap_or_else(|| panic!("{f}: fill {fill}"))
    };
    let (gap, l, c) = lock
        .iter()
        .flat_map(|l| compute.iter().map(move |c| (l, c)))
        .map(|(l, c)| {
            let gap = (hue_of(l) - hue_of(c)).abs();
            (gap.min(360.0 - gap), l, c)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("pairs");
    eprintln!(
        "{} lock-wait and {} compute functions; closest hues {gap:.0}° apart",
        lock.len(),
        compute.len()
    );
    assert!(
        gap >= 60.0,
        "{l} (lock waits, {}) and {c} (compute, {}): hues {gap:.0}° apart",
        fills[*l],
        fills[*c]
    );
}

#[test]
fn a_state_filter_draws_only_those_samples() {
    let p = decoded();
    let waits: u64 = p
        .counts
        .iter()
        .filter(|((_, _, s), _)| *s == State::Lock)
        .map(|(_, n)| n)
        .sum();
    assert!(waits > 0, "the fixture's threads wait for its lock");
    let folded = String::from_utf8(lockscale::report(
        &recording().0,
        "locks-only.folded",
        &["--state", "lock"],
    ))
    .unwrap();
    let lines = parse_folded(&folded);
    assert!(
        lines
            .iter()
            .all(|s| s.frames.last().is_some_and(|f| f == "[lock]")),
        "{folded}"
    );
    assert_eq!(lines.iter().map(|s| s.count).sum::<u64>(), waits);
    let (status, err) = lockscale::failure(&[
        "report",
        recording().0.to_str().unwrap(),
        "--state",
        "locked",
    ]);
    assert_eq!(status, Some(2), "{err}");
    assert!(err.contains("no state 'locked'"), "{err}");
}

/// The function column of `go tool pprof -top` lines (`flat flat% sum% cum cum% NAME`).
fn top_names(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut rest = l.trim_start();
            for _ in 0..5 {
                let (_, after) = rest.split_once(char::is_whitespace)?;
                rest = after.trim_start();
            }
            (!rest.is_empty()).then(|| rest.to_string())
        })
        .collect()
}

#[test]
fn go_tool_pprof_shows_rust_names_whole_and_the_labels() {
    let exe = build("fixtures/record/rust_threads.rs", &[]);
    let pb = scratch_file("rust.pb.gz");
    run_parprof(&[
        "record",
        "-o",
        pb.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "2",
        "2",
    ]);
    let go = |args: &[&str]| {
        let out = std::process::Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(&pb)
            .output()
            .expect("go is installed by scripts/install-test-deps (Debian's golang-go)");
        assert!(
            out.status.success(),
            "go tool pprof {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(&pb).unwrap()[..])
        .read_to_end(&mut raw)
        .unwrap();
    let pp = proto::Profile::decode(&raw[..]).unwrap();
    let ours: std::collections::BTreeSet<&str> = pp
        .function
        .iter()
        .map(|f| pp.string_table[f.name as usize].as_str())
        .collect();
    let top = go(&["-top", "-nodecount=1000"]);
    let names = top_names(&top);
    assert!(names.len() > 10, "{top}");
    for name in &names {
        assert!(
            ours.contains(name.as_str()) && !name.starts_with("::"),
            "go tool pprof shows {name:?}, not one of parprof's names:\n{top}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with('<') && n.contains(">::")),
        "generic Rust names are shown whole:\n{top}"
    );
    assert!(
        names.iter().any(|n| n == "rust_threads::rust_stage_two"),
        "{top}"
    );
    let tags = go(&["-tags"]);
    for label in [
        "state:",
        "thread_name:",
        "thread_id:",
        "compute",
        "worker-0",
    ] {
        assert!(tags.contains(label), "{label} not in:\n{tags}");
    }
    // pprof offers the CPU view, which counts only samples on a CPU (the sleeping main
    // thread's are not: `pprof_has_the_same_samples_labels_and_locations_as_folded` checks
    // each sample's values).
    let total_ms = |view: &str| -> f64 {
        let text = go(&["-unit=ms", "-sample_index", view, "-top"]);
        let total = text
            .split("Total samples = ")
            .nth(1)
            .and_then(|t| t.split("ms").next())
            .and_then(|t| t.trim().parse().ok());
        total.unwrap_or_else(|| panic!("no total in:\n{text}"))
    };
    let (wall, cpu) = (total_ms("wall"), total_ms("cpu"));
    assert!(cpu > 0.0 && cpu < wall, "cpu {cpu} ms, wall {wall} ms");
}

#[test]
fn timeline_has_one_lane_per_thread_as_chromium_reads_it() {
    let p = decoded();
    let svg_path = scratch_file("lanes.timeline.svg");
    std::fs::write(
        &svg_path,
        lockscale::report(&recording().0, "lanes.timeline.svg", &[]),
    )
    .unwrap();
    // Debian's chromium (installed by scripts/install-test-deps) loads the file and prints
    // the document it parsed; an SVG that does not parse prints an error page instead.
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", svg_path.display()))
        .output()
        .expect("chromium is installed by scripts/install-test-deps");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("<svg") && !dom.contains("parsererror"),
        "chromium: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lanes: Vec<i32> = dom
        .split("<g class=\"lane\" data-tid=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect();
    let threads: Vec<i32> = p
        .threads
        .values()
        .filter(|t| t.samples > 0)
        .map(|t| t.tid)
        .collect();
    assert_eq!(lanes, threads, "one lane per thread, in tid order");
    // A lock wait's tooltip names the lock and its holder.
    assert!(
        dom.contains("waiting for shared_lock (pthread_mutex), held mostly by"),
        "{dom}"
    );
}
