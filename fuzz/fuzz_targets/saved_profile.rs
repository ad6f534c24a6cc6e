//! The readers of profile files given to `parprof report` and `parprof diff`: the saved
//! format (`.parprof`) and folded stacks. First byte 0: the bytes as a file; 1: a valid
//! header and the rest gzipped, so the table decoder and its checks are reached; else the
//! bytes as folded text for `diff`. A profile that decodes is rendered in every format.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use parprof::output::{self, Format, diff};
use parprof::profile::saved;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let profile = match mode {
        0 => saved::decode(rest),
        1 => {
            let mut file = saved::MAGIC.to_vec();
            file.extend_from_slice(&saved::VERSION.to_le_bytes());
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            gz.write_all(rest).unwrap();
            saved::decode(&gz.finish().unwrap())
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let lines: Vec<&str> = text.lines().collect();
            if let Ok(counts) = diff::Counts::from_folded(&lines) {
                let _ = diff::compare(&counts, &counts);
                let _ = counts.lock_share();
            }
            return;
        }
    };
    let Ok(profile) = profile else { return };
    for format in [
        Format::Folded,
        Format::Svg,
        Format::Speedscope,
        Format::Pprof,
        Format::Profile,
    ] {
        let mut out = Vec::new();
        let _ = output::write(&profile, format, true, &mut out);
        if format == Format::Profile {
            saved::decode(&out).expect("a profile written by parprof reads back");
        }
    }
    let _ = output::summary_json::write(&profile, &mut std::io::sink());
});
