//! ELF symbol tables (`.symtab`, then `.dynsym`) as one sorted, size-aware address index:
//! of a module's functions (for the symbolizer), or of its static data (naming a lock that is
//! a global).
//!
//! Names stay in the mapped file until a lookup asks for one: an entry keeps where its name
//! starts in its string table. PyTorch's `libtorch_cpu.so` holds hundreds of thousands of
//! function symbols whose mangled names run to hundreds of bytes; copying them all when the
//! module is first seen cost memory and time for names that no sample ever lands in, and
//! reading each name's first byte alone would fault in the whole string table.

use object::elf::{SHN_XINDEX, STT_COMMON, STT_FUNC, STT_NOTYPE, STT_OBJECT, STT_TLS, SymbolType};
use object::read::elf::{ElfFile64, SectionHeader, Sym, SymbolTable as ElfSymbols};

use crate::process::elf::{ElfImage, SharedBytes};

/// One symbol. 24 bytes; the name is read from `strings[table]` on lookup.
struct Entry {
    addr: u64,
    /// Sizes past 4 GiB (hostile input) are kept as 4 GiB.
    size: u32,
    /// Offset of the name in its string table.
    name: u32,
    /// Which of the tables' string tables holds the name.
    table: u8,
}

/// A string table: the image bytes it lies in and its range there.
struct Strings {
    bytes: SharedBytes,
    range: std::ops::Range<usize>,
}

/// Which symbols a table holds.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// Functions. A function symbol without a size (assembly) covers up to the next one.
    #[default]
    Functions,
    /// Variables, thread-locals and untyped labels. One without a size covers only its own
    /// address: the linker's zero-size markers (`_edata`, `__bss_start`) name no variable.
    Data,
}

impl Kind {
    fn holds(self, st_type: SymbolType) -> bool {
        match self {
            Kind::Functions => st_type == STT_FUNC,
            Kind::Data => matches!(st_type, STT_OBJECT | STT_COMMON | STT_TLS | STT_NOTYPE),
        }
    }
}

/// Symbols of one kind sorted by address.
#[derive(Default)]
pub struct SymbolTable {
    kind: Kind,
    entries: Vec<Entry>,
    strings: Vec<Strings>,
}

impl SymbolTable {
    /// The `kind` symbols of all `images` (a binary, its debug file, its MiniDebugInfo);
    /// the first seen for an address wins, so `.symtab` names come before `.dynsym` aliases.
    pub fn from_images(images: &[&ElfImage], kind: Kind) -> Self {
        let mut t = SymbolTable {
            kind,
            ..SymbolTable::default()
        };
        for image in images {
            let Ok(file) = ElfFile64::<object::Endianness>::parse(&*image.bytes) else {
                continue;
            };
            t.add(&image.bytes, &file, file.elf_symbol_table());
            t.add(&image.bytes, &file, file.elf_dynamic_symbol_table());
        }
        // Stable: keeps the first seen among equal addresses; a sized alias lends its size.
        t.entries.sort_by_key(|e| e.addr);
        t.entries.dedup_by(|later, first| {
            let same = later.addr == first.addr;
            if same && first.size == 0 {
                first.size = later.size;
            }
            same
        });
        t.entries.shrink_to_fit();
        t
    }

    /// The defined, named symbols of `symbols` of this table's kind, names left in place.
    fn add(
        &mut self,
        bytes: &SharedBytes,
        file: &ElfFile64<object::Endianness>,
        symbols: &ElfSymbols<object::elf::FileHeader64<object::Endianness>>,
    ) {
        let endian = file.endian();
        let sections = file.elf_section_table();
        let range_of = |index| {
            let (start, len) = sections.section(index).ok()?.file_range(endian)?;
            let start = usize::try_from(start).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            (end <= bytes.len()).then_some(start..end)
        };
        let Some(range) = range_of(symbols.string_section()) else {
            return;
        };
        let (Ok(table), true) = (u8::try_from(self.strings.len()), !symbols.is_empty()) else {
            return;
        };
        self.entries.reserve(symbols.len());
        let before = self.entries.len();
        for sym in symbols.symbols() {
            let shndx = sym.st_shndx(endian);
            let addr = sym.st_value(endian);
            let name = sym.st_name(endian);
            if !self.kind.holds(sym.st_type())
                || (shndx.is_special() && shndx != SHN_XINDEX)
                || addr == 0
                || name == 0
            {
                continue;
            }
            let size = u32::try_from(sym.st_size(endian)).unwrap_or(u32::MAX);
            self.entries.push(Entry {
                addr,
                size,
                name,
                table,
            });
        }
        if self.entries.len() > before {
            self.strings.push(Strings {
                bytes: bytes.clone(),
                range,
            });
        }
        // Everything a lookup needs from the symbols is in the entries now.
        if let Some(own) = range_of(symbols.section()) {
            bytes.release(own);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The symbol containing `svma`, and where it starts: the closest symbol at or below
    /// it, if its size covers the address (see [`Kind`] for one without a size). `None` also
    /// when its name is empty, runs past its table or is not UTF-8.
    ///
    /// The name is copied out and the string table's pages released (see
    /// [`SharedBytes::release`]): a lookup is made once per address, and on kernels that map
    /// a whole large page-cache folio at a fault, each name read this way kept up to 2 MiB
    /// of the table resident (51 of libtorch_cpu.so's 78 MiB over a 15 s recording).
    pub fn find(&self, svma: u64) -> Option<(u64, String)> {
        let i = self
            .entries
            .partition_point(|e| e.addr <= svma)
            .checked_sub(1)?;
        let e = &self.entries[i];
        let size = match (e.size, self.kind) {
            (0, Kind::Functions) => u64::MAX,
            (0, Kind::Data) => 1,
            (size, _) => u64::from(size),
        };
        if svma - e.addr >= size {
            return None;
        }
        let s = self.strings.get(usize::from(e.table))?;
        let table = s.bytes.get(s.range.clone())?;
        let tail = table.get(usize::try_from(e.name).ok()?..)?;
        let name = &tail[..tail.iter().position(|&b| b == 0)?];
        let name = std::str::from_utf8(name).ok().filter(|n| !n.is_empty());
        let name = name.map(str::to_owned);
        s.bytes.release(s.range.clone());
        Some((e.addr, name?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::elf::testdata;

    #[test]
    fn library_symbols_cover_text_and_damaged_copies_never_panic() {
        let image = testdata::some_library();
        let table = SymbolTable::from_images(&[&image], Kind::Functions);
        let (start, size) = testdata::text(&image);
        let named = (0..64)
            .filter(|i| table.find(start + size * i / 64).is_some())
            .count();
        assert!(named > 0, "no symbol covers .text");
        for damaged in testdata::damaged_copies(&image) {
            let table = SymbolTable::from_images(&[&damaged], Kind::Functions);
            for i in 0..256 {
                let _ = table.find(start + size * i / 256);
            }
            let _ = super::super::dwarf::DebugInfo::load(&damaged);
        }
    }

    #[test]
    fn lazy_names_are_the_names_object_reads() {
        use object::{Object, ObjectSymbol, SymbolKind};
        use std::collections::{HashMap, HashSet};
        let image = testdata::some_library();
        let file = image.object().unwrap();
        let mut by_addr: HashMap<u64, HashSet<String>> = HashMap::new();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            if sym.kind() == SymbolKind::Text && sym.is_definition() && sym.address() != 0 {
                let name = sym.name().unwrap().to_string();
                by_addr.entry(sym.address()).or_default().insert(name);
            }
        }
        let table = SymbolTable::from_images(&[&image], Kind::Functions);
        assert_eq!(table.entries.len(), by_addr.len());
        for e in &table.entries {
            let (_, name) = table.find(e.addr).expect("a symbol names its own address");
            assert!(by_addr[&e.addr].contains(&name), "{name} at {:#x}", e.addr);
        }
    }

    #[test]
    fn sized_symbols_do_not_cover_the_gap_after_them() {
        let strings = b"\0f\0asm_label\0".to_vec();
        let len = strings.len();
        let table = SymbolTable {
            kind: Kind::Functions,
            entries: vec![
                Entry {
                    addr: 0x100,
                    size: 0x10,
                    name: 1,
                    table: 0,
                },
                Entry {
                    addr: 0x120,
                    size: 0,
                    name: 3,
                    table: 0,
                },
            ],
            strings: vec![Strings {
                bytes: SharedBytes::owned(strings),
                range: 0..len,
            }],
        };
        assert_eq!(table.find(0x10f), Some((0x100, "f".to_string())));
        assert_eq!(table.find(0x110), None);
        assert_eq!(table.find(0x150), Some((0x120, "asm_label".to_string())));
        assert_eq!(table.find(0xff), None);
        let data = SymbolTable {
            kind: Kind::Data,
            ..table
        };
        assert_eq!(data.find(0x120), Some((0x120, "asm_label".to_string())));
        assert_eq!(data.find(0x121), None, "an unsized variable is one byte");
    }

    #[test]
    fn names_past_their_table_or_unterminated_are_not_read() {
        let strings = b"\0cut".to_vec();
        let entry = |addr, name| Entry {
            addr,
            size: 0x10,
            name,
            table: 0,
        };
        let table = SymbolTable {
            kind: Kind::Functions,
            entries: vec![entry(0x100, 1), entry(0x200, 99), entry(0x300, 0)],
            strings: vec![Strings {
                bytes: SharedBytes::owned(strings),
                range: 0..4,
            }],
        };
        assert_eq!(table.find(0x100), None, "no NUL before the table's end");
        assert_eq!(table.find(0x200), None, "offset past the table");
        assert_eq!(table.find(0x300), None, "empty name");
    }
}
