//! The saved-profile format (`.parprof`), so a recording can be rendered, diffed and
//! archived later without the target. Layout (docs/profile-format.md has the details):
//!
//! ```text
//! b"PARPROF\0"  u32 little-endian format version  gzip( postcard( FileV2 ) )
//! ```
//!
//! The header stays uncompressed so a reader can refuse a newer file before decoding it.
//! The body is a set of tables (strings, frames, stacks, threads, counts, an optional
//! delta-encoded timeline) defined by the `*V1` structs below, then (version 2) the capture
//! backend and the lock table (`*V2`), then (version 3) how many threads ran at once
//! (`*V3`); not by the in-memory types: changing an in-memory type never changes the file,
//! and changing a file struct means a new version number and a decoder kept beside the old
//! one. Version 1 and 2 files still read, without what came later.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::locks::{HeldTicks, LockStats};
use super::parallelism::Occupancy;
use super::{FrameId, Meta, Profile, StackId, State, ThreadInfo, TimedSample};
use crate::frame::{Frame, FrameKind};

pub const MAGIC: &[u8; 8] = b"PARPROF\0";
/// The newest format version this parprof writes and reads.
pub const VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("not a parprof profile (it does not start with the PARPROF header)")]
    NotAProfile,
    #[error(
        "profile format version {found} is newer than this parprof supports ({supported}); upgrade parprof"
    )]
    Newer { found: u32, supported: u32 },
    #[error("profile format version {0} does not exist")]
    BadVersion(u32),
    #[error("the profile is truncated or corrupt ({0})")]
    Corrupt(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FileV1 {
    meta: MetaV1,
    strings: Vec<String>,
    frames: Vec<FrameV1>,
    /// Frame ids, root first.
    stacks: Vec<Vec<u32>>,
    /// String ids of the state names; `state` fields below index this list.
    states: Vec<u32>,
    threads: Vec<ThreadV1>,
    counts: Vec<CountV1>,
    timeline: Option<Vec<TimedV1>>,
}

/// Version 2: version 1's tables (its string table serves both), then what else a live
/// recording shows.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FileV2 {
    v1: FileV1,
    /// How running threads were captured (`perf`, `ptrace`).
    capture: Option<String>,
    locks: Vec<LockV2>,
}

/// Version 3: version 2, then the time spent with each number of threads on a CPU and
/// runnable, when the kernel's context switches were recorded, and how often each lock
/// was held.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FileV3 {
    v2: FileV2,
    occupancy: Option<OccupancyV3>,
    /// Per lock of `v2.locks` (by address): ticks its state was read, held, held while
    /// a thread waited.
    lock_held: Vec<(u64, u64, u64, u64)>,
}

/// `Occupancy`: nanoseconds with k threads on a CPU, and runnable, for k = 0, 1, …
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OccupancyV3 {
    on_cpu_ns: Vec<u64>,
    runnable_ns: Vec<u64>,
}

/// `LockStats` of the lock at `address`; strings, stacks and states as in version 1.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct LockV2 {
    address: u64,
    kind: u32,
    symbol: Option<u32>,
    first_waiter: Option<u32>,
    site: Option<u32>,
    wait_samples: u64,
    waiters: Vec<(i32, u64)>,
    waiter_stacks: Vec<(u32, u64)>,
    holders: Vec<(i32, u64)>,
    /// (holder, its state, its leaf function, samples).
    holder_activity: Vec<(i32, u8, u32, u64)>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct MetaV1 {
    command: String,
    pid: i32,
    start_unix_s: u64,
    duration_s: f64,
    rate_hz: f64,
    host: String,
    parprof_version: String,
    python: Option<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FrameV1 {
    function: u32,
    module: u32,
    file: Option<u32>,
    line: Option<u32>,
    /// 0 native, 1 inlined, 2 python, 3 truncated.
    kind: u8,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ThreadV1 {
    tid: i32,
    name: u32,
    samples: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CountV1 {
    tid: i32,
    stack: u32,
    state: u8,
    count: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct TimedV1 {
    /// Nanoseconds since the previous timeline entry (the first: since recording began).
    dt_ns: i64,
    tid: i32,
    stack: u32,
    state: u8,
}

const KINDS: [FrameKind; 4] = [
    FrameKind::Native,
    FrameKind::Inlined,
    FrameKind::Python,
    FrameKind::Truncated,
];

/// Write `p` in the saved format.
pub fn write(p: &Profile, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    let body = postcard::to_stdvec(&to_file(p)).map_err(std::io::Error::other)?;
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&body)?;
    gz.finish()?;
    Ok(())
}

/// Read a saved profile from a file.
pub fn read(path: &Path) -> Result<Profile, SavedError> {
    decode(&std::fs::read(path)?)
}

/// True when `bytes` start with the saved-profile header (any version).
pub fn is_saved(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Decode a saved profile, checking the header, the version and every table reference.
pub fn decode(bytes: &[u8]) -> Result<Profile, SavedError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(SavedError::NotAProfile)?;
    let (version, body) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("no format version"))?;
    match u32::from_le_bytes(*version) {
        1 => from_file(FileV3 {
            v2: FileV2 {
                v1: tables(body)?,
                capture: None,
                locks: Vec::new(),
            },
            occupancy: None,
            lock_held: Vec::new(),
        }),
        2 => from_file(FileV3 {
            v2: tables(body)?,
            occupancy: None,
            lock_held: Vec::new(),
        }),
        3 => from_file(tables(body)?),
        found if found > VERSION => Err(SavedError::Newer {
            found,
            supported: VERSION,
        }),
        other => Err(SavedError::BadVersion(other)),
    }
}

/// The body's record, which must fill it.
fn tables<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SavedError> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut raw)
        .map_err(corrupt)?;
    let (file, extra) = postcard::take_from_bytes::<T>(&raw).map_err(corrupt)?;
    if !extra.is_empty() {
        return Err(corrupt(format!(
            "{} unexpected bytes after the tables",
            extra.len()
        )));
    }
    Ok(file)
}

fn corrupt(e: impl std::fmt::Display) -> SavedError {
    SavedError::Corrupt(e.to_string())
}

/// Interns strings into the file's string table.
#[derive(Default)]
struct Strings {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Strings {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }
}

fn to_file(p: &Profile) -> FileV3 {
    let mut strings = Strings::default();
    let frames = p
        .frames()
        .iter()
        .map(|f| FrameV1 {
            function: strings.id(&f.function),
            module: strings.id(&f.module),
            file: f.file.as_deref().map(|s| strings.id(s)),
            line: f.line,
            kind: KINDS.iter().position(|k| *k == f.kind).unwrap_or(0) as u8,
        })
        .collect();
    let states = State::ALL.iter().map(|s| strings.id(s.name())).collect();
    let code = |s: State| State::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8;
    let threads = p
        .threads
        .values()
        .map(|t| ThreadV1 {
            tid: t.tid,
            name: strings.id(&t.name),
            samples: t.samples,
        })
        .collect();
    let counts = p
        .counts
        .iter()
        .map(|(&(tid, stack, state), &count)| CountV1 {
            tid,
            stack,
            state: code(state),
            count,
        })
        .collect();
    let timeline = p.timeline.as_ref().map(|tl| {
        let mut prev = 0u64;
        tl.iter()
            .map(|s| {
                let dt_ns = s.time_ns.wrapping_sub(prev) as i64;
                prev = s.time_ns;
                TimedV1 {
                    dt_ns,
                    tid: s.tid,
                    stack: s.stack,
                    state: code(s.state),
                }
            })
            .collect()
    });
    let locks = p
        .locks
        .iter()
        .map(|(&address, l)| LockV2 {
            address,
            kind: strings.id(&l.kind),
            symbol: l.symbol.as_deref().map(|s| strings.id(s)),
            first_waiter: l.first_waiter.as_deref().map(|s| strings.id(s)),
            site: l.site.as_deref().map(|s| strings.id(s)),
            wait_samples: l.wait_samples,
            waiters: l.waiters.iter().map(|(&t, &n)| (t, n)).collect(),
            waiter_stacks: l.waiter_stacks.iter().map(|(&s, &n)| (s, n)).collect(),
            holders: l.holders.iter().map(|(&t, &n)| (t, n)).collect(),
            holder_activity: l
                .holder_activity
                .iter()
                .map(|((t, s, f), &n)| (*t, code(*s), strings.id(f), n))
                .collect(),
        })
        .collect();
    let m = &p.meta;
    let v1 = FileV1 {
        meta: MetaV1 {
            command: m.command.clone(),
            pid: m.pid,
            start_unix_s: m.start_unix_s,
            duration_s: m.duration_s,
            rate_hz: m.rate_hz,
            host: m.host.clone(),
            parprof_version: m.parprof_version.clone(),
            python: m.python.clone(),
        },
        strings: strings.list,
        frames,
        stacks: p.stacks().to_vec(),
        states,
        threads,
        counts,
        timeline,
    };
    let lock_held = p
        .locks
        .iter()
        .filter(|(_, l)| l.held.observed > 0)
        .map(|(&a, l)| (a, l.held.observed, l.held.held, l.held.serialized))
        .collect();
    FileV3 {
        lock_held,
        v2: FileV2 {
            v1,
            capture: m.capture.clone(),
            locks,
        },
        occupancy: m.occupancy.as_ref().map(|o| OccupancyV3 {
            on_cpu_ns: o.on_cpu_ns.clone(),
            runnable_ns: o.runnable_ns.clone(),
        }),
    }
}

/// Rebuilds a profile from the tables, rejecting any reference that points outside them.
fn from_file(
    FileV3 {
        v2: file,
        occupancy,
        lock_held,
    }: FileV3,
) -> Result<Profile, SavedError> {
    let f = file.v1;
    let string = |id: u32| {
        f.strings
            .get(id as usize)
            .cloned()
            .ok_or_else(|| corrupt(format!("string id {id} out of range")))
    };
    let mut states = Vec::with_capacity(f.states.len());
    for &id in &f.states {
        let name = string(id)?;
        states.push(
            State::from_name(&name)
                .ok_or_else(|| corrupt(format!("unknown thread state '{name}'")))?,
        );
    }
    let state = |code: u8| {
        states
            .get(code as usize)
            .copied()
            .ok_or_else(|| corrupt(format!("state {code} out of range")))
    };

    let m = f.meta;
    let meta = Meta {
        command: m.command,
        pid: m.pid,
        start_unix_s: m.start_unix_s,
        duration_s: m.duration_s,
        rate_hz: m.rate_hz,
        host: m.host,
        parprof_version: m.parprof_version,
        python: m.python,
        capture: file.capture,
        occupancy: occupancy.map(|o| Occupancy {
            on_cpu_ns: o.on_cpu_ns,
            runnable_ns: o.runnable_ns,
        }),
    };
    let mut p = Profile::new(meta, f.timeline.is_some());
    let mut frame_ids: Vec<FrameId> = Vec::with_capacity(f.frames.len());
    for fr in &f.frames {
        let kind = KINDS
            .get(fr.kind as usize)
            .cloned()
            .ok_or_else(|| corrupt(format!("frame kind {}", fr.kind)))?;
        let frame = Frame {
            function: string(fr.function)?,
            module: string(fr.module)?,
            file: fr.file.map(string).transpose()?,
            line: fr.line,
            kind,
        };
        frame_ids.push(p.intern_frame(&frame));
    }
    let mut stack_ids: Vec<StackId> = Vec::with_capacity(f.stacks.len());
    for s in &f.stacks {
        let ids = s
            .iter()
            .map(|&id| {
                frame_ids
                    .get(id as usize)
                    .copied()
                    .ok_or_else(|| corrupt(format!("frame id {id} out of range")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        stack_ids.push(p.intern_stack_ids(ids));
    }
    let stack = |id: u32| {
        stack_ids
            .get(id as usize)
            .copied()
            .ok_or_else(|| corrupt(format!("stack id {id} out of range")))
    };
    for t in &f.threads {
        p.threads.insert(
            t.tid,
            ThreadInfo {
                tid: t.tid,
                name: string(t.name)?,
                os_name: None,
                samples: t.samples,
            },
        );
    }
    for c in &f.counts {
        *p.counts
            .entry((c.tid, stack(c.stack)?, state(c.state)?))
            .or_default() += c.count;
    }
    if let (Some(out), Some(tl)) = (p.timeline.as_mut(), &f.timeline) {
        let mut time_ns = 0u64;
        for s in tl {
            time_ns = time_ns.wrapping_add(s.dt_ns as u64);
            out.push(TimedSample {
                time_ns,
                tid: s.tid,
                stack: stack(s.stack)?,
                state: state(s.state)?,
            });
        }
    }
    for l in file.locks {
        let mut lock = LockStats {
            kind: string(l.kind)?,
            symbol: l.symbol.map(string).transpose()?,
            first_waiter: l.first_waiter.map(string).transpose()?,
            site: l.site.map(string).transpose()?,
            wait_samples: l.wait_samples,
            waiters: l.waiters.into_iter().collect(),
            holders: l.holders.into_iter().collect(),
            ..LockStats::default()
        };
        for (s, n) in l.waiter_stacks {
            *lock.waiter_stacks.entry(stack(s)?).or_default() += n;
        }
        for (t, s, f, n) in l.holder_activity {
            *lock
                .holder_activity
                .entry((t, state(s)?, string(f)?))
                .or_default() += n;
        }
        p.locks.insert(l.address, lock);
    }
    for (address, observed, held, serialized) in lock_held {
        let lock = p.locks.get_mut(&address).ok_or_else(|| {
            corrupt(format!(
                "held ticks of lock {address:#x}, not in the lock table"
            ))
        })?;
        lock.held = HeldTicks {
            observed,
            held,
            serialized,
        };
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_profile() -> Profile {
        let meta = Meta {
            command: "lockscale 8 60".into(),
            pid: 42,
            start_unix_s: 1_700_000_000,
            duration_s: 2.5,
            rate_hz: 100.0,
            host: "box".into(),
            parprof_version: "0.1.0".into(),
            python: Some("3.13.1".into()),
            capture: Some("perf".into()),
            occupancy: Some(Occupancy {
                on_cpu_ns: vec![10, 200, 3000],
                runnable_ns: vec![10, 200, 1000, 2000],
            }),
        };
        let mut p = Profile::new(meta, true);
        let main = Frame::native("main", "lockscale");
        let work = Frame::native("update_shared", "lockscale");
        let py = Frame {
            function: "run".into(),
            module: String::new(),
            file: Some("/app/x.py".into()),
            line: Some(12),
            kind: FrameKind::Python,
        };
        let a = p.intern_stack(&[main.clone(), work.clone()]);
        let b = p.intern_stack(&[main.clone(), py, Frame::truncated()]);
        p.thread_seen(7, "worker-1");
        p.thread_seen(8, "worker-2");
        p.add(7, a, State::Compute, 10_000_000, 1);
        p.add(8, b, State::Lock, 10_000_500, 1);
        p.add(7, a, State::CpuWait, 20_000_000, 1);
        p.add(8, a, State::LockSpin, 19_000_000, 2);
        p.locks.insert(
            0x5000,
            LockStats {
                kind: "pthread_mutex".into(),
                symbol: Some("big".into()),
                first_waiter: Some("update_shared".into()),
                site: None,
                interpreter: None,
                wait_samples: 3,
                waiters: [(8, 3)].into(),
                waiter_stacks: [(b, 3)].into(),
                holders: [(7, 2)].into(),
                holder_activity: [((7, State::Compute, "update_shared".into()), 2)].into(),
                held: HeldTicks {
                    observed: 40,
                    held: 30,
                    serialized: 3,
                },
            },
        );
        p
    }

    fn encode(p: &Profile) -> Vec<u8> {
        let mut out = Vec::new();
        write(p, &mut out).unwrap();
        out
    }

    /// The file of version `version` holding `body`.
    fn file_of(version: u32, body: &impl Serialize) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(version.to_le_bytes());
        let mut gz = flate2::write::GzEncoder::new(&mut bytes, flate2::Compression::fast());
        gz.write_all(&postcard::to_stdvec(body).unwrap()).unwrap();
        gz.finish().unwrap();
        bytes
    }

    #[test]
    fn version_1_files_still_read_without_locks_or_capture() {
        let p = sample_profile();
        let old = decode(&file_of(1, &to_file(&p).v2.v1)).unwrap();
        assert_eq!((old.meta.capture.as_deref(), old.locks.len()), (None, 0));
        assert_eq!(old.counts, p.counts);
        assert_eq!(old.timeline, p.timeline);
    }

    #[test]
    fn version_2_files_still_read_without_occupancy() {
        let p = sample_profile();
        let old = decode(&file_of(2, &to_file(&p).v2)).unwrap();
        assert_eq!(old.meta.occupancy, None);
        let mut locks = p.locks.clone();
        locks
            .values_mut()
            .for_each(|l| l.held = HeldTicks::default());
        assert_eq!((old.locks, old.meta.capture), (locks, p.meta.capture));
    }

    #[test]
    fn encode_then_decode_gives_the_same_profile() {
        let p = sample_profile();
        assert_eq!(decode(&encode(&p)).unwrap(), p);
        let mut no_timeline = sample_profile();
        no_timeline.timeline = None;
        assert_eq!(decode(&encode(&no_timeline)).unwrap(), no_timeline);
    }

    #[test]
    fn newer_version_names_both_versions() {
        let mut bytes = encode(&sample_profile());
        bytes[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let msg = decode(&bytes).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "profile format version {} is newer than this parprof supports ({VERSION}); upgrade parprof",
                VERSION + 1
            )
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample_profile());
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "decoding the first {len} bytes succeeded"
            );
        }
    }

    #[test]
    fn out_of_range_references_are_rejected() {
        let p = sample_profile();
        let mut file = to_file(&p);
        file.v2.v1.stacks[0].push(99);
        assert_eq!(
            decode(&file_of(VERSION, &file)).unwrap_err().to_string(),
            "the profile is truncated or corrupt (frame id 99 out of range)"
        );
        let mut file = to_file(&p);
        file.v2.locks[0].waiter_stacks[0].0 = 77;
        assert_eq!(
            decode(&file_of(VERSION, &file)).unwrap_err().to_string(),
            "the profile is truncated or corrupt (stack id 77 out of range)"
        );
    }

    #[test]
    fn garbage_is_not_a_profile() {
        assert!(matches!(
            decode(b"hello world, not a profile"),
            Err(SavedError::NotAProfile)
        ));
    }
}
