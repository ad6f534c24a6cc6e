//! pprof export: gzipped `perftools.profiles.Profile` (google/pprof's proto/profile.proto),
//! the format `go tool pprof`, Pyroscope, Parca and Grafana read.
//!
//! Three sample values: `samples/count`, `wall/nanoseconds` (count × sampling period) and
//! `cpu/nanoseconds` (the same for samples on a CPU: `compute` and `lock_spin`), so tools
//! show wall-clock and CPU views. Every sample carries the labels `thread_id` (number),
//! `thread_name` and `state`; states are labels, not frames, so `-top` lists functions.
//! A function's `system_name` (`module!name`) differs from its `name`: pprof then keeps the
//! name whole instead of cutting what looks like C++ templates out of it (`<std::sync::
//! Mutex<T>>::lock` became `::lock`, Python's `<module>` nothing). Mappings are per module
//! name: parprof keeps no addresses after symbolizing, so locations have address 0 and one
//! line each.

/// prost types generated from proto/profile.proto by proto/gen (checked in, so building
/// parprof needs no `protoc`).
#[allow(clippy::all)]
pub mod proto;

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

use crate::profile::{Profile, State};

/// Label keys on every sample.
pub const LABEL_THREAD_ID: &str = "thread_id";
pub const LABEL_THREAD_NAME: &str = "thread_name";
pub const LABEL_STATE: &str = "state";

pub fn write(p: &Profile, out: &mut dyn Write) -> anyhow::Result<()> {
    let bytes = build(p).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}

/// The string table: index 0 is always "".
struct Strings {
    list: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            list: vec![String::new()],
            ids: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.list.len() as i64;
        self.list.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }
}

/// Builds the function, location and mapping tables, deduplicating functions and mappings.
#[derive(Default)]
struct Tables {
    mappings: Vec<proto::Mapping>,
    mapping_ids: HashMap<String, u64>,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<proto::Location>,
}

impl Tables {
    fn mapping(&mut self, strings: &mut Strings, module: &str) -> u64 {
        if module.is_empty() {
            return 0;
        }
        if let Some(&id) = self.mapping_ids.get(module) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        self.mappings.push(proto::Mapping {
            id,
            filename: strings.id(module),
            has_functions: true,
            ..Default::default()
        });
        self.mapping_ids.insert(module.to_string(), id);
        id
    }

    fn function(&mut self, strings: &mut Strings, name: &str, file: &str) -> u64 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let short_file = file.rsplit('/').next().unwrap_or(file);
        self.functions.push(proto::Function {
            id,
            name: strings.id(name),
            system_name: strings.id(&format!("{short_file}!{name}")),
            filename: strings.id(file),
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    /// A new location with one line; returns its id.
    fn location(&mut self, mapping_id: u64, function_id: u64, line: i64) -> u64 {
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            line: vec![proto::Line {
                function_id,
                line,
                column: 0,
            }],
            ..Default::default()
        });
        id
    }
}

fn build(p: &Profile) -> proto::Profile {
    let mut s = Strings::new();
    let mut t = Tables::default();
    let period_ns = if p.meta.rate_hz > 0.0 {
        (1e9 / p.meta.rate_hz) as i64
    } else {
        0
    };

    // pprof takes mapping[0] for the main binary: the command's own module goes first.
    let exe = p
        .meta
        .command
        .split_whitespace()
        .next()
        .and_then(|c| c.rsplit('/').next())
        .unwrap_or("");
    if p.frames().iter().any(|f| f.module == exe) {
        t.mapping(&mut s, exe);
    }
    // Location ids: frame id + 1.
    for f in p.frames() {
        let mapping = t.mapping(&mut s, &f.module);
        let file = f.file.as_deref().unwrap_or(&f.module);
        let function = t.function(&mut s, &f.function, file);
        t.location(mapping, function, f.line.map_or(0, i64::from));
    }

    let keys = [LABEL_THREAD_ID, LABEL_THREAD_NAME, LABEL_STATE].map(|k| s.id(k));
    let samples = p
        .counts
        .iter()
        .map(|(&(tid, stack, state), &n)| {
            // The leaf is at location_id[0].
            let location_id = p.stack(stack).iter().rev().map(|&f| f as u64 + 1).collect();
            let name = p.threads.get(&tid).map(|t| t.name.as_str()).unwrap_or("");
            let label = vec![
                proto::Label {
                    key: keys[0],
                    num: tid as i64,
                    ..Default::default()
                },
                proto::Label {
                    key: keys[1],
                    str: s.id(name),
                    ..Default::default()
                },
                proto::Label {
                    key: keys[2],
                    str: s.id(state.name()),
                    ..Default::default()
                },
            ];
            let wall = n as i64 * period_ns;
            let on_cpu = matches!(state, State::Compute | State::LockSpin);
            proto::Sample {
                location_id,
                value: vec![n as i64, wall, if on_cpu { wall } else { 0 }],
                label,
            }
        })
        .collect();

    let m = &p.meta;
    let sample_type = vec![
        proto::ValueType {
            r#type: s.id("samples"),
            unit: s.id("count"),
        },
        proto::ValueType {
            r#type: s.id("wall"),
            unit: s.id("nanoseconds"),
        },
        proto::ValueType {
            r#type: s.id("cpu"),
            unit: s.id("nanoseconds"),
        },
    ];
    let period_type = Some(proto::ValueType {
        r#type: s.id("wall"),
        unit: s.id("nanoseconds"),
    });
    let comment = vec![s.id(&format!(
        "parprof {}: {} (pid {}) on {}",
        m.parprof_version, m.command, m.pid, m.host
    ))];
    let default_sample_type = s.id("wall");
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: t.mappings,
        location: t.locations,
        function: t.functions,
        time_nanos: (m.start_unix_s as i64).saturating_mul(1_000_000_000),
        duration_nanos: (m.duration_s * 1e9) as i64,
        period_type,
        period: period_ns,
        comment,
        default_sample_type,
        string_table: s.list,
        ..Default::default()
    }
}
