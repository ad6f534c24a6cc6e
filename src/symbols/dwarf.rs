//! File, line and inlined frames from DWARF through addr2line, over sections of the binary
//! or of its separate debug file (decompressed once when compressed).

use gimli::{EndianReader, RunTimeEndian};

use super::demangle::demangle;
use crate::process::elf::{ElfImage, SharedBytes};

pub type Reader = EndianReader<RunTimeEndian, SharedBytes>;

/// One frame from DWARF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DwarfFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

pub struct DebugInfo {
    ctx: addr2line::Context<Reader>,
}

impl DebugInfo {
    /// The DWARF of `image`, or `None` when it has no `.debug_info`.
    pub fn load(image: &ElfImage) -> Option<DebugInfo> {
        image.section_bytes(".debug_info")?;
        let endian = RunTimeEndian::Little;
        let section = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            // Location lists and macros are not needed for names and lines; skipping them
            // spares decompressing megabytes of a large debug file.
            let wanted = !matches!(
                id,
                gimli::SectionId::DebugLoc
                    | gimli::SectionId::DebugLocLists
                    | gimli::SectionId::DebugMacinfo
                    | gimli::SectionId::DebugMacro
            );
            Ok(match image.section_bytes(id.name()).filter(|_| wanted) {
                Some((bytes, range)) => EndianReader::new(bytes, endian).range(range),
                None => EndianReader::new(SharedBytes::owned(Vec::new()), endian),
            })
        };
        let dwarf = gimli::Dwarf::load(section).ok()?;
        let ctx = addr2line::Context::from_dwarf(dwarf).ok()?;
        Some(DebugInfo { ctx })
    }

    /// The frames at `svma`, outermost first (the function, then what was inlined into it).
    pub fn frames(&self, svma: u64) -> Vec<DwarfFrame> {
        let mut out = Vec::new();
        // addr2line looks up the range [svma, svma + 1), which overflows (a panic with
        // overflow checks) at the last address; no code is there (found by the elf fuzz
        // target, from a hostile image's segment addresses).
        if svma == u64::MAX {
            return out;
        }
        let Ok(mut iter) = self.ctx.find_frames(svma).skip_all_loads() else {
            return out;
        };
        while let Ok(Some(f)) = iter.next() {
            let function = f
                .function
                .as_ref()
                .and_then(|n| n.raw_name().ok())
                .map(|n| demangle(&n));
            let (file, line) = f
                .location
                .map_or((None, None), |l| (l.file.map(str::to_string), l.line));
            out.push(DwarfFrame {
                function,
                file,
                line,
            });
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_address_has_no_frames_and_no_panic() {
        // This test binary's own DWARF: real units, so the lookup gets as far as a range.
        let exe = std::env::current_exe().unwrap();
        let image = ElfImage::open(&exe).unwrap();
        let debug = DebugInfo::load(&image).expect("the test binary has DWARF");
        assert!(debug.frames(u64::MAX).is_empty());
    }
}
