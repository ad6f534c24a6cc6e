//! Naming an address in a module's static data: a lock that is a global (`big`, `A`, or
//! `cond+0x8` inside one) gets the name of the variable. Heap locks have none.
//!
//! Function names come from the symbolizer; this only needs the data symbols (`.data`,
//! `.bss`) of the module whose loaded image covers the address, indexed once per module and
//! named (demangled) only for the addresses asked about.

use std::collections::HashMap;

use crate::process::elf::ElfImage;
use crate::process::{Mapping, Maps};
use crate::symbols::{SymbolKind, SymbolTable, demangle};

/// Data symbols per module, loaded on first use.
#[derive(Default)]
pub struct Globals {
    modules: HashMap<String, Option<ModuleData>>,
}

struct ModuleData {
    /// Kept for its segments: the bias is computed per call, as the same file may be loaded
    /// at another address in another followed process.
    image: ElfImage,
    symbols: SymbolTable,
}

impl Globals {
    pub fn new() -> Self {
        Globals::default()
    }

    /// `name` or `name+0xoff` for an address inside a module's static data.
    pub fn name(&mut self, maps: &Maps, addr: u64) -> Option<String> {
        let module = owning_module(maps, addr)?;
        let data = self
            .modules
            .entry(module.path.clone())
            .or_insert_with(|| ModuleData::load(maps, module))
            .as_ref()?;
        let vaddr = addr.wrapping_sub(data.image.load_bias(maps, module)?);
        // Memory size, so `.bss` counts.
        if !data
            .image
            .segments
            .iter()
            .any(|s| vaddr >= s.vaddr && vaddr < s.vaddr.saturating_add(s.memsz))
        {
            return None;
        }
        let (start, name) = data.symbols.find(vaddr)?;
        let name = demangle(name.split('@').next()?);
        Some(match vaddr - start {
            0 => name,
            off => format!("{name}+{off:#x}"),
        })
    }
}

/// The file-backed mapping an address belongs to: the mapping covering it, or for `.bss`
/// that spilled into anonymous memory, the file mapping right before it.
fn owning_module(maps: &Maps, addr: u64) -> Option<&Mapping> {
    let i = maps.mappings.partition_point(|m| m.start <= addr);
    let covering = maps.mappings[..i].last().filter(|m| m.contains(addr))?;
    if covering.is_file() {
        return Some(covering);
    }
    if !covering.path.is_empty() {
        return None;
    }
    maps.mappings[..i - 1]
        .last()
        .filter(|m| m.is_file() && m.end == covering.start)
}

impl ModuleData {
    fn load(maps: &Maps, m: &Mapping) -> Option<ModuleData> {
        let image = ElfImage::of_file(maps, m).ok()?;
        let symbols = SymbolTable::from_images(&[&image], SymbolKind::Data);
        Some(ModuleData { image, symbols })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(non_upper_case_globals)]
    #[unsafe(no_mangle)]
    static parprof_test_global: [u64; 4] = [1, 2, 3, 4];

    #[test]
    fn names_a_global_of_this_test_binary() {
        let maps = Maps::read(std::process::id() as i32).unwrap();
        let mut g = Globals::new();
        let addr = std::ptr::addr_of!(parprof_test_global) as u64;
        assert_eq!(g.name(&maps, addr).as_deref(), Some("parprof_test_global"));
        assert_eq!(
            g.name(&maps, addr + 8).as_deref(),
            Some("parprof_test_global+0x8")
        );
        let heap = Box::new(5u64);
        assert_eq!(g.name(&maps, &*heap as *const u64 as u64), None);
    }
}
