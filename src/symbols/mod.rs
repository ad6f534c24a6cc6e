//! Addresses to function names: ELF symbol tables, DWARF file:line and inlined frames, the
//! separate debug file when installed or on a debuginfod server, MiniDebugInfo
//! (`.gnu_debugdata`), demangled Rust and C++ names. Each module is loaded once. Code no
//! symbol names is named by the function its unwind info puts it in,
//! `module!fn_START` (the FDE's start address), the same at every pc in the function; an
//! address nothing covers is shown as `module+0xoffset` (file offset, like perf).

mod demangle;
mod dwarf;
mod symtab;

use crate::frame::{Frame, FrameKind};
use crate::process::elf::ElfImage;
use crate::process::module::{self, ModuleCache};
use crate::process::{Mapping, Maps, Memory};
use crate::unwind::CfiTables;

pub use demangle::demangle;
/// Public so the fuzz targets can load symbols and DWARF from arbitrary bytes.
pub use dwarf::DebugInfo;
pub use symtab::{Kind as SymbolKind, SymbolTable};

/// What is known about one module's symbols.
struct SymbolModule {
    symbols: SymbolTable,
    debug: Option<DebugInfo>,
    /// The module's FDEs, whose address ranges are its functions when symbols are missing.
    cfi: CfiTables,
}

impl SymbolModule {
    /// Symbols from the binary, its separate debug file and its MiniDebugInfo; DWARF from
    /// the debug file when there is one, else from the binary itself; the unwind tables.
    /// `None` when there is none of them.
    fn load(maps: &Maps, m: &Mapping, image: &ElfImage) -> Option<SymbolModule> {
        let debug_image = module::debug_file(maps, m, image);
        let mini = module::mini_debuginfo(image);
        let images: Vec<_> = std::iter::once(image)
            .chain(debug_image.as_ref())
            .chain(mini.as_ref())
            .collect();
        let symbols = SymbolTable::from_images(&images, SymbolKind::Functions);
        let debug = debug_image
            .as_ref()
            .and_then(DebugInfo::load)
            .or_else(|| DebugInfo::load(image));
        let cfi = CfiTables::load(image, debug_image.as_ref());
        (!symbols.is_empty() || debug.is_some() || !cfi.is_empty()).then_some(SymbolModule {
            symbols,
            debug,
            cfi,
        })
    }
}

#[derive(Default)]
pub struct Symbolizer {
    modules: ModuleCache<SymbolModule>,
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer::default()
    }

    /// The frames at `addr`, outermost first (a function, then what was inlined into it).
    /// `return_address` says `addr` is a return address, to be looked up as `addr - 1`.
    pub fn symbolize(
        &mut self,
        maps: &Maps,
        mem: &dyn Memory,
        addr: u64,
        return_address: bool,
    ) -> Vec<Frame> {
        let probe = if return_address {
            addr.wrapping_sub(1)
        } else {
            addr
        };
        let Some(m) = maps.find(probe) else {
            return vec![Frame::native(format!("[unknown]+{addr:#x}"), "[unknown]")];
        };
        // Like perf: the offset in the module's file.
        let fallback = format!(
            "{}+{:#x}",
            m.short_name(),
            addr.wrapping_sub(m.start).wrapping_add(m.offset)
        );
        let frames = self.lookup(maps, mem, m, probe, &fallback).or_else(|| {
            // A "return address" at the very start of a function is where a signal handler
            // returns: the signal trampoline (glibc's `__restore_rt`), whose symbol starts
            // at the address itself, `addr - 1` being the padding before it.
            (return_address && m.contains(addr))
                .then(|| self.lookup(maps, mem, m, addr, &fallback))
                .flatten()
        });
        frames.unwrap_or_else(|| vec![Frame::native(fallback, m.short_name())])
    }

    /// The frames at `probe` in mapping `m`, `None` when nothing covers it. `fallback`
    /// names a DWARF function that has no name and no symbol.
    fn lookup(
        &mut self,
        maps: &Maps,
        mem: &dyn Memory,
        m: &Mapping,
        probe: u64,
        fallback: &str,
    ) -> Option<Vec<Frame>> {
        let (index, bias) = self
            .modules
            .place(maps, m, mem, |image| SymbolModule::load(maps, m, image))?;
        let module = self.modules.get(index)?;
        let name = m.short_name();
        let svma = probe.wrapping_sub(bias);
        let symbol = module.symbols.find(svma).map(|(_, name)| name);
        let from_dwarf = module
            .debug
            .as_ref()
            .map(|d| d.frames(svma))
            .unwrap_or_default();
        if from_dwarf.is_empty() {
            let function = symbol.as_deref().map(demangle).or_else(|| {
                let start = module.cfi.function_start(svma)?;
                Some(format!("{name}!fn_{start:x}"))
            })?;
            return Some(vec![Frame::native(function, name)]);
        }
        let frames = from_dwarf
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let function = f
                    .function
                    .or_else(|| (i == 0).then(|| symbol.as_deref().map(demangle)).flatten())
                    .unwrap_or_else(|| fallback.to_string());
                let kind = if i == 0 {
                    FrameKind::Native
                } else {
                    FrameKind::Inlined
                };
                Frame {
                    function,
                    module: name.to_string(),
                    file: f.file,
                    line: f.line,
                    kind,
                }
            })
            .collect();
        Some(frames)
    }
}
