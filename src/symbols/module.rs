//! A module's ELF image, loaded once and shared by the unwinder and the symbolizer: mapped
//! from its file (opened through the target's `/proc/<pid>/root`), or copied out of target
//! memory for the vDSO, plus its separate debug file when one is installed. Also the load
//! bias that turns a target address into the file's own virtual address.
//!
//! Nothing here trusts the file: a truncated, corrupt or stripped ELF gives an error or an
//! image without the sections asked for, never a panic.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

use crate::process::{Mapping, Maps, Memory};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    #[error("not a readable ELF image: {0}")]
    Elf(#[from] object::Error),
    #[error("cannot read the vDSO from the target: {0}")]
    Memory(#[from] crate::process::MemError),
    #[error("mapping {0} is not backed by an ELF image")]
    NotElf(String),
}

/// The bytes of an ELF image: a file mapping or an owned copy.
#[derive(Debug)]
enum Blob {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// Cheaply clonable, address-stable bytes: the backing store of gimli readers that live as
/// long as the cache does.
#[derive(Debug, Clone)]
pub struct SharedBytes(Arc<Blob>);

impl SharedBytes {
    pub fn owned(v: Vec<u8>) -> Self {
        SharedBytes(Arc::new(Blob::Owned(v)))
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.0 {
            Blob::Mapped(m) => m,
            Blob::Owned(v) => v,
        }
    }
}

// SAFETY: the bytes live in an `Arc`'d mapping or vector that is never mutated or moved,
// so every clone derefs to the same address for as long as any clone exists.
unsafe impl gimli::StableDeref for SharedBytes {}
unsafe impl gimli::CloneStableDeref for SharedBytes {}

/// A `PT_LOAD` segment: where a file range is placed in the image's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub executable: bool,
}

/// A parsed-enough ELF image: its bytes and load segments.
#[derive(Debug, Clone)]
pub struct ElfImage {
    pub bytes: SharedBytes,
    pub segments: Vec<Segment>,
}

impl ElfImage {
    pub fn from_bytes(bytes: SharedBytes) -> Result<Self, ModuleError> {
        let file = object::File::parse(&*bytes)?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(ModuleError::NotElf("not ELF".into()));
        }
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let executable = matches!(s.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.contains(object::elf::PF_X));
                Segment { offset, vaddr: s.address(), filesz, executable }
            })
            .collect();
        drop(file);
        Ok(ElfImage { bytes, segments })
    }

    pub fn open(path: &Path) -> Result<Self, ModuleError> {
        let f = File::open(path).map_err(|e| ModuleError::Open(path.into(), e))?;
        // SAFETY: the mapping is read-only and private; a file shrunk underneath it would
        // fault, which is the same risk every profiler and debugger takes with mmap.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| ModuleError::Open(path.into(), e))?;
        Self::from_bytes(SharedBytes(Arc::new(Blob::Mapped(map))))
    }

    /// Parse the image again (cheap: headers only) to reach sections and symbols.
    pub fn object(&self) -> Option<object::File<'_>> {
        object::File::parse(&*self.bytes).ok()
    }

    /// The bias to subtract from a target address inside mapping `m` to get the image's
    /// virtual address: the segment whose file range holds the mapping's offset places it.
    pub fn bias(&self, m: &Mapping) -> Option<u64> {
        let holds = |s: &&Segment| {
            s.offset & !0xfff <= m.offset && m.offset < s.offset.saturating_add(s.filesz.max(1))
        };
        let seg = self
            .segments
            .iter()
            .filter(holds)
            .find(|s| s.executable == m.executable)
            .or_else(|| self.segments.iter().find(holds))?;
        Some(
            m.start
                .wrapping_sub(m.offset)
                .wrapping_add(seg.offset)
                .wrapping_sub(seg.vaddr),
        )
    }

    /// The image has section `name` with contents (not a NOBITS placeholder).
    pub fn has_section(&self, name: &str) -> bool {
        self.object()
            .and_then(|f| {
                f.section_by_name(name)
                    .map(|s| s.kind() != object::SectionKind::UninitializedData)
            })
            .unwrap_or(false)
    }

    /// The file range of a section, uncompressed: a slice of the image when stored plainly,
    /// an owned copy when compressed (debug files often are).
    pub fn section_bytes(&self, name: &str) -> Option<(SharedBytes, std::ops::Range<usize>)> {
        let file = self.object()?;
        let section = file.section_by_name(name)?;
        if section.kind() == object::SectionKind::UninitializedData {
            return None; // NOBITS: a debug file's placeholder for a section kept in the binary
        }
        let range = section.compressed_file_range().ok()?;
        if range.format == object::CompressionFormat::None {
            let start = usize::try_from(range.offset).ok()?;
            let end = start.checked_add(usize::try_from(range.uncompressed_size).ok()?)?;
            return (end <= self.bytes.len()).then(|| (self.bytes.clone(), start..end));
        }
        // A corrupt header could claim any size; no real section is near this bound.
        if range.uncompressed_size > MAX_SECTION {
            return None;
        }
        let data = section.uncompressed_data().ok()?.into_owned();
        let len = data.len();
        Some((SharedBytes::owned(data), 0..len))
    }
}

/// The largest compressed section worth inflating.
const MAX_SECTION: u64 = 1 << 30;

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

/// The mapping's ELF image: its file, or for the vDSO a copy read from target memory.
pub fn open(maps: &Maps, m: &Mapping, mem: &dyn Memory) -> Result<ElfImage, ModuleError> {
    if m.is_vdso() {
        let len =
            usize::try_from(m.end - m.start).map_err(|_| ModuleError::NotElf(m.path.clone()))?;
        let bytes = mem.read_vec(m.start, len.min(1 << 20))?;
        return ElfImage::from_bytes(SharedBytes::owned(bytes));
    }
    if !m.is_file() {
        return Err(ModuleError::NotElf(m.short_name().to_string()));
    }
    ElfImage::open(&maps.file_path(m))
}

/// The separate debug file of an image, looked up inside the target's root: by build id
/// under `/usr/lib/debug/.build-id/xx/rest.debug`, then by `.gnu_debuglink` beside the
/// file, in its `.debug/` folder and under `/usr/lib/debug/<dir>/`.
pub fn debug_file(maps: &Maps, m: &Mapping, image: &ElfImage) -> Option<ElfImage> {
    let file = image.object()?;
    let root = PathBuf::from(format!("/proc/{}/root", maps.pid));
    let mut candidates = Vec::new();
    if let Ok(Some(id)) = file.build_id()
        && id.len() >= 2
    {
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
    candidates
        .into_iter()
        .filter(|p| p.is_file())
        .find_map(|p| {
            let debug = ElfImage::open(&p).ok()?;
            // A debuglink can name the file itself (same directory, same name).
            (debug.bytes.len() != own_len || debug.bytes[..] != image.bytes[..]).then_some(debug)
        })
}

/// Real and damaged ELF images for tests.
#[cfg(test)]
pub(crate) mod testdata {
    use super::*;

    /// A shared library this test process has mapped (found at run time, not named).
    pub fn some_library() -> ElfImage {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let path = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains(".so"))
            .expect("a mapped library");
        ElfImage::open(Path::new(path)).unwrap()
    }

    /// Address and size of `.text`.
    pub fn text(image: &ElfImage) -> (u64, u64) {
        let file = image.object().unwrap();
        let s = file.section_by_name(".text").unwrap();
        (s.address(), s.size())
    }

    /// Copies of `image` cut short, or with a page of garbage written over them, that
    /// still parse as ELF.
    pub fn damaged_copies(image: &ElfImage) -> Vec<ElfImage> {
        let bytes: &[u8] = &image.bytes;
        let mut out: Vec<Vec<u8>> = [2, 3, 5, 9]
            .iter()
            .map(|d| bytes[..bytes.len() * 2 / d].to_vec())
            .collect();
        for start in [
            bytes.len() / 4,
            bytes.len() / 2,
            bytes.len() * 3 / 4,
            bytes.len() - 4096,
        ] {
            let mut b = bytes.to_vec();
            for (i, x) in b[start..start + 4096].iter_mut().enumerate() {
                *x = (i as u8).wrapping_mul(151).wrapping_add(7);
            }
            out.push(b);
        }
        let images: Vec<ElfImage> = out
            .into_iter()
            .filter_map(|b| ElfImage::from_bytes(SharedBytes::owned(b)).ok())
            .collect();
        assert!(
            images.len() >= 3,
            "damage meant to keep the headers readable broke them"
        );
        images
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: u64, offset: u64, executable: bool) -> Mapping {
        Mapping {
            start,
            end: start + 0x1000,
            offset,
            readable: true,
            executable,
            dev: "fd:01".into(),
            inode: 7,
            path: "/x".into(),
        }
    }

    #[test]
    fn bias_places_pie_segments() {
        let image = ElfImage {
            bytes: SharedBytes::owned(Vec::new()),
            segments: vec![
                Segment {
                    offset: 0,
                    vaddr: 0,
                    filesz: 0x6d0,
                    executable: false,
                },
                Segment {
                    offset: 0x1000,
                    vaddr: 0x1000,
                    filesz: 0x2000,
                    executable: true,
                },
                Segment {
                    offset: 0x3db8,
                    vaddr: 0x4db8,
                    filesz: 0x260,
                    executable: false,
                },
            ],
        };
        assert_eq!(
            image.bias(&mapping(0x5555_5555_5000, 0x1000, true)),
            Some(0x5555_5555_4000)
        );
        // A data segment whose vaddr is a page above its offset.
        assert_eq!(
            image.bias(&mapping(0x5555_5555_8000, 0x3000, false)),
            Some(0x5555_5555_4000)
        );
        assert_eq!(image.bias(&mapping(0x5555_5556_0000, 0x9000, false)), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            vec![],
            vec![0x7f, b'E', b'L', b'F'],
            vec![0u8; 64],
            b"\x7fELF\x02\x01\x01".repeat(20),
        ] {
            assert!(ElfImage::from_bytes(SharedBytes::owned(bytes)).is_err());
        }
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
        let placed = self.load(maps, m, mem, load);
        self.placed.insert(key, placed);
        placed
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.modules.get(index)?.as_ref()
    }

    fn load(
        &mut self,
        maps: &Maps,
        m: &Mapping,
        mem: &dyn Memory,
        load: impl FnOnce(&ElfImage) -> Option<T>,
    ) -> Option<(usize, u64)> {
        if !(m.is_file() || m.is_vdso()) {
            return None;
        }
        let image = open(maps, m, mem).ok()?;
        let bias = image.bias(m)?;
        let key = ModuleKey::of(m);
        if let Some(&i) = self.by_key.get(&key) {
            return Some((i, bias));
        }
        self.modules.push(load(&image));
        self.by_key.insert(key, self.modules.len() - 1);
        Some((self.modules.len() - 1, bias))
    }
}
