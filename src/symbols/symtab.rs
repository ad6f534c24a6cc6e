//! ELF symbol tables (`.symtab`, then `.dynsym`) as one sorted, size-aware address table.

use object::{Object, ObjectSymbol, SymbolKind};

use super::module::ElfImage;

struct Entry {
    addr: u64,
    size: u64,
    name: Box<str>,
}

/// Function symbols sorted by address.
#[derive(Default)]
pub struct SymbolTable {
    entries: Vec<Entry>,
}

impl SymbolTable {
    /// The function symbols of all `images` (a binary and its debug file); the first name
    /// seen for an address wins, so `.symtab` names come before `.dynsym` aliases.
    pub fn from_images(images: &[&ElfImage]) -> Self {
        let mut entries = Vec::new();
        for image in images {
            let Some(file) = image.object() else { continue };
            for sym in file.symbols().chain(file.dynamic_symbols()) {
                if sym.kind() != SymbolKind::Text || !sym.is_definition() || sym.address() == 0 {
                    continue;
                }
                if let Ok(name) = sym.name() {
                    if !name.is_empty() {
                        entries.push(Entry { addr: sym.address(), size: sym.size(), name: name.into() });
                    }
                }
            }
        }
        // Stable: keeps the first seen among equal addresses, globals sorted by size after.
        entries.sort_by_key(|e| e.addr);
        entries.dedup_by(|later, first| {
            let same = later.addr == first.addr;
            if same && first.size == 0 {
                first.size = later.size;
            }
            same
        });
        SymbolTable { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The function containing `svma`: the closest symbol at or below it, if its size
    /// covers the address (a symbol without a size covers up to the next symbol).
    pub fn find(&self, svma: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.addr <= svma).checked_sub(1)?;
        let e = &self.entries[i];
        (e.size == 0 || svma - e.addr < e.size).then_some(&*e.name)
    }
}
