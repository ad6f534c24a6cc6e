//! ELF symbol tables (`.symtab`, then `.dynsym`) as one sorted, size-aware address table.

use object::{Object, ObjectSymbol, SymbolKind};

use crate::process::elf::ElfImage;

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
                if let Ok(name) = sym.name()
                    && !name.is_empty()
                {
                    entries.push(Entry {
                        addr: sym.address(),
                        size: sym.size(),
                        name: name.into(),
                    });
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
        let i = self
            .entries
            .partition_point(|e| e.addr <= svma)
            .checked_sub(1)?;
        let e = &self.entries[i];
        (e.size == 0 || svma - e.addr < e.size).then_some(&*e.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::elf::testdata;

    #[test]
    fn library_symbols_cover_text_and_damaged_copies_never_panic() {
        let image = testdata::some_library();
        let table = SymbolTable::from_images(&[&image]);
        let (start, size) = testdata::text(&image);
        let named = (0..64)
            .filter(|i| table.find(start + size * i / 64).is_some())
            .count();
        assert!(named > 0, "no symbol covers .text");
        for damaged in testdata::damaged_copies(&image) {
            let table = SymbolTable::from_images(&[&damaged]);
            for i in 0..256 {
                let _ = table.find(start + size * i / 256);
            }
            let _ = super::super::dwarf::DebugInfo::load(&damaged);
        }
    }

    #[test]
    fn sized_symbols_do_not_cover_the_gap_after_them() {
        let table = SymbolTable {
            entries: vec![
                Entry {
                    addr: 0x100,
                    size: 0x10,
                    name: "f".into(),
                },
                Entry {
                    addr: 0x120,
                    size: 0,
                    name: "asm_label".into(),
                },
            ],
        };
        assert_eq!(table.find(0x10f), Some("f"));
        assert_eq!(table.find(0x110), None);
        assert_eq!(table.find(0x150), Some("asm_label"));
        assert_eq!(table.find(0xff), None);
    }
}
