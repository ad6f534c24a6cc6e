//! The bytes of a module image, as if mapped from a damaged or hostile file: ELF parsing,
//! load segments and bias, `.eh_frame`/`.eh_frame_hdr`/`.debug_frame` CFI (with each rule
//! applied to registers pointing into the same bytes), symbol tables, demangling, DWARF
//! line and inline lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parprof::process::elf::{ElfImage, SharedBytes};
use parprof::process::memory::Bytes;
use parprof::process::regs::dwarf;
use parprof::process::{Mapping, Regs};
use parprof::symbols::{DebugInfo, SymbolKind, SymbolTable, demangle};
use parprof::unwind::{CfiTables, rule};

/// Where the image's own bytes sit when used as stack memory for the rules.
const STACK: u64 = 0x7ff0_0000_0000;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = ElfImage::from_bytes(SharedBytes::owned(data.to_vec())) else {
        return;
    };
    let mut addrs = Vec::new();
    for s in &image.segments {
        for i in 0..8u64 {
            addrs.push(s.vaddr.wrapping_add(s.filesz / 8 * i));
        }
        let m = Mapping {
            start: 0x5555_0000_0000,
            end: 0x5555_0000_1000,
            offset: s.offset & !0xfff,
            readable: true,
            executable: s.executable,
            dev: "00:01".into(),
            inode: 1,
            path: "/fuzz".into(),
        };
        let _ = image.bias(&m);
    }
    addrs.truncate(256);

    let mem = Bytes {
        base: STACK,
        bytes: data,
    };
    let mut ctx = gimli::UnwindContext::new();
    // The image as its own separate debug file too: `.debug_frame` from either.
    for tables in [
        CfiTables::load(&image, None),
        CfiTables::load(&image, Some(&image)),
    ] {
        for &a in &addrs {
            if let Some(r) = tables.rule_at(a, &mut ctx) {
                let mut regs = Regs::from_ip_sp(a, STACK + 64);
                regs.set(dwarf::RBP, STACK + 128);
                regs.set(dwarf::RBX, STACK + 8);
                let _ = rule::apply(&r, &regs, &mem);
            }
        }
    }

    for kind in [SymbolKind::Functions, SymbolKind::Data] {
        let symbols = SymbolTable::from_images(&[&image, &image], kind);
        for &a in &addrs {
            if let Some((_, name)) = symbols.find(a) {
                let _ = demangle(&name);
            }
        }
    }
    if let Some(debug) = DebugInfo::load(&image) {
        for &a in &addrs {
            let _ = debug.frames(a);
        }
    }
});
