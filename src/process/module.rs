//! Per-module data, loaded once per module and shared by the unwinder and the symbolizer:
//! the cache that finds a mapping's module and load bias, the module's separate debug file
//! when one is installed or a debuginfod server has it, and its MiniDebugInfo when it
//! carries one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::Object;

use crate::process::debuginfod;
use crate::process::elf::{self, ElfImage};
use crate::process::{Mapping, Maps, Memory};

/// How a module is identified in the caches: the same file mapped by the same path, or for
/// the vDSO and other images without a file, the address it sits at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleKey {
    path: String,
    dev: String,
    inode: u64,
    /// Only for images without a file (the vDSO).
    start: u64,
}

impl ModuleKey {
    pub fn of(m: &Mapping) -> Self {
        let start = if m.is_file() { 0 } else { m.start };
        ModuleKey {
            path: m.path.clone(),
            dev: m.dev.clone(),
            inode: m.inode,
            start,
        }
    }
}

/// The separate debug file of an image, looked up inside the target's root: by build id
/// under `/usr/lib/debug/.build-id/xx/rest.debug`, then by `.gnu_debuglink` beside the
/// file, in its `.debug/` folder and under `/usr/lib/debug/<dir>/`; last, for an image
/// without DWARF of its own, from the debuginfod servers `DEBUGINFOD_URLS` names.
pub fn debug_file(maps: &Maps, m: &Mapping, image: &ElfImage) -> Option<ElfImage> {
    let file = image.object()?;
    let root = PathBuf::from(format!("/proc/{}/root", maps.pid));
    let mut candidates = Vec::new();
    let build_id = file.build_id().ok().flatten().filter(|id| id.len() >= 2);
    if let Some(id) = build_id {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        candidates.push(root.join(format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        )));
    }
    if let Ok(Some((link, _crc))) = file.gnu_debuglink()
        && let (Ok(link), Some(dir)) = (
            std::str::from_utf8(link),
            Path::new(m.path.trim_end_matches(" (deleted)")).parent(),
        )
    {
        let dir = dir.strip_prefix("/").unwrap_or(dir);
        for c in [
            root.join(dir).join(link),
            root.join(dir).join(".debug").join(link),
            root.join("usr/lib/debug").join(dir).join(link),
        ] {
            candidates.push(c);
        }
    }
    let own_len = image.bytes.len();
    let local = candidates
        .into_iter()
        .filter(|p| p.is_file())
        .find_map(|p| {
            let debug = ElfImage::open(&p).ok()?;
            // A debuglink can name the file itself (same directory, same name).
            (debug.bytes.len() != own_len || debug.bytes[..] != image.bytes[..]).then_some(debug)
        });
    local.or_else(|| {
        (!image.has_section(".debug_info"))
            .then(|| debuginfod::debug_file(build_id?))
            .flatten()
    })
}

/// Most bytes a `.gnu_debugdata` section may decompress to. MiniDebugInfo is a symbol table
/// of a few MiB at most; a section that claims more is hostile input and is ignored.
const MINI_DEBUGINFO_MAX: usize = 64 << 20;

/// The MiniDebugInfo of `image`: its `.gnu_debugdata` section, an xz-compressed ELF file
/// holding the symbols of the functions `strip` removed (Fedora and others ship binaries
/// so). `None` when there is none, or it does not decompress within bounds or parse.
pub fn mini_debuginfo(image: &ElfImage) -> Option<ElfImage> {
    let (bytes, range) = image.section_bytes(".gnu_debugdata")?;
    let mut out = Bounded {
        bytes: Vec::new(),
        limit: MINI_DEBUGINFO_MAX,
    };
    lzma_rs::xz_decompress(&mut &bytes[range], &mut out).ok()?;
    ElfImage::from_bytes(elf::SharedBytes::owned(out.bytes)).ok()
}

/// A byte sink that refuses to grow past `limit`.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("decompressed section too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A mapping's identity: start, end, file offset, inode.
type MappingKey = (u64, u64, u64, u64);

/// Per-module data (unwind tables, symbol tables) loaded once per module, and found for a
/// mapping together with the mapping's load bias.
pub struct ModuleCache<T> {
    modules: Vec<Option<T>>,
    by_key: HashMap<ModuleKey, usize>,
    /// A mapping → its module and load bias.
    placed: HashMap<MappingKey, Option<(usize, u64)>>,
}

impl<T> Default for ModuleCache<T> {
    fn default() -> Self {
        ModuleCache {
            modules: Vec::new(),
            by_key: HashMap::new(),
            placed: HashMap::new(),
        }
    }
}

impl<T> ModuleCache<T> {
    /// The module index and load bias of mapping `m`, opening the module and building its
    /// data with `load` on first use. `None` for memory no module backs; a module whose
    /// `load` gave nothing keeps its index, so it is not loaded again.
    pub fn place(
        &mut self,
        maps: &Maps,
        m: &Mapping,
        mem: &dyn Memory,
        load: impl FnOnce(&ElfImage) -> Option<T>,
    ) -> Option<(usize, u64)> {
        let key = (m.start, m.end, m.offset, m.inode);
        if let Some(p) = self.placed.get(&key) {
            return *p;
        }
        let placed = elf::open(maps, m, mem).ok().and_then(|image| {
            let bias = image.bias(m)?;
            Some((self.index(m, &image, load), bias))
        });
        self.placed.insert(key, placed);
        placed
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.modules.get(index)?.as_ref()
    }

    /// The index of `m`'s module, its data built from `image` with `load` when new.
    fn index(
        &mut self,
        m: &Mapping,
        image: &ElfImage,
        load: impl FnOnce(&ElfImage) -> Option<T>,
    ) -> usize {
        let key = ModuleKey::of(m);
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        self.modules.push(load(image));
        self.by_key.insert(key, self.modules.len() - 1);
        self.modules.len() - 1
    }
}
