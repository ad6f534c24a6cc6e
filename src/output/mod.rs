//! Writing a profile out: folded stacks and flamegraph SVGs.

pub mod flamegraph;
pub mod folded;
pub mod summary_json;
pub mod text;

use std::path::Path;

/// Output formats, chosen with `--format` or from the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Svg,
    Folded,
}

impl Format {
    /// The format a file name implies: `.svg`, `.folded`/`.txt`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "svg" => Some(Format::Svg),
            "folded" | "txt" => Some(Format::Folded),
            _ => None,
        }
    }
}
