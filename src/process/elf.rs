//! The ELF image behind a mapping of the target, and its load bias: the one place parprof
//! opens ELF files, for the unwinder, the symbolizer, CPython detection and the names of
//! global locks alike. A mapped file is opened as `Maps::file_path` says (through the
//! target's `/proc/<pid>/root`, or `map_files` once deleted) and memory-mapped; the vDSO is
//! copied out of target memory. The load bias turns a target address into the file's own
//! virtual address.
//!
//! Nothing here trusts the file: a truncated, corrupt or stripped ELF gives an error or an
//! image without the sections asked for, never a panic.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

use super::{Mapping, Maps, MemError, Memory};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    /// ELF by its magic number, but corrupt.
    #[error("not a readable ELF image: {0}")]
    Elf(#[from] object::Error),
    #[error("cannot read the vDSO from the target: {0}")]
    Memory(#[from] MemError),
    /// Not ELF at all: anonymous memory, a data file, a locale archive.
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

    /// Lets the pages of `range` leave parprof's resident memory: bytes read once and not
    /// needed again (a symbol table, once indexed). A later read faults them back in from
    /// the page cache. Owned bytes stay.
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let Blob::Mapped(m) = &*self.0 {
            // SAFETY: the mapping is read-only and file-backed, so dropping its pages loses
            // nothing: touched again, they read the same bytes from the file.
            let _ = unsafe {
                m.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
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
    /// Size in memory, `.bss` included.
    pub memsz: u64,
    pub executable: bool,
}

/// A parsed-enough ELF image: its bytes and load segments.
#[derive(Debug, Clone)]
pub struct ElfImage {
    pub bytes: SharedBytes,
    pub segments: Vec<Segment>,
}

impl ElfImage {
    /// Files without the ELF magic number are `NotElf`, told apart from corrupt ELF files
    /// (`Elf`): CPython detection skips the former among a target's mapped files but
    /// reports the latter.
    pub fn from_bytes(bytes: SharedBytes) -> Result<Self, ElfError> {
        if !bytes.starts_with(b"\x7fELF") {
            return Err(ElfError::NotElf("not ELF".into()));
        }
        let file = object::File::parse(&*bytes)?;
        let segments = file
            .segments()
            .map(|s| {
                let (offset, filesz) = s.file_range();
                let executable = matches!(s.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.contains(object::elf::PF_X));
                Segment { offset, vaddr: s.address(), filesz, memsz: s.size(), executable }
            })
            .collect();
        Ok(ElfImage { bytes, segments })
    }

    /// Memory-map the ELF file at `path`: a separate debug file, or through `of_file` the
    /// file of a mapping.
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let f = File::open(path).map_err(|e| ElfError::Open(path.into(), e))?;
        // SAFETY: the mapping is read-only and private; a file shrunk underneath it would
        // fault, which is the same risk every profiler and debugger takes with mmap.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| ElfError::Open(path.into(), e))?;
        Self::from_bytes(SharedBytes(Arc::new(Blob::Mapped(map))))
    }

    /// The file mapping `m` maps, wherever `Maps::file_path` finds it.
    pub fn of_file(maps: &Maps, m: &Mapping) -> Result<Self, ElfError> {
        Self::open(&maps.file_path(m))
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

    /// The bias of the whole image as `maps` places it, from the file's lowest mapping: that
    /// one holds the first segment alone, while a later mapping may start in a file page
    /// that two segments share. For data addresses, which any segment can hold.
    pub fn load_bias(&self, maps: &Maps, m: &Mapping) -> Option<u64> {
        self.bias(maps.segments_of(m).min_by_key(|s| s.start)?)
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

/// The mapping's ELF image: its file, or for the vDSO a copy read from target memory.
pub fn open(maps: &Maps, m: &Mapping, mem: &dyn Memory) -> Result<ElfImage, ElfError> {
    if m.is_vdso() {
        let len = vdso_len(m).ok_or_else(|| ElfError::NotElf(m.path.clone()))?;
        let bytes = match mem.read_vec(m.start, len) {
            Ok(bytes) => bytes,
            // Gone before its samples were resolved (the resolver runs behind a busy
            // target): the kernel maps one vDSO image into every process of an ABI, so
            // parprof's own is the target's when the sizes agree. Without it every stack
            // through `clock_gettime` stopped at `[vdso]+0xb66` (7 % complete, CI).
            Err(e) => own_vdso().filter(|own| own.len() == len).ok_or(e)?,
        };
        return ElfImage::from_bytes(SharedBytes::owned(bytes));
    }
    if !m.is_file() {
        return Err(ElfError::NotElf(m.short_name().to_string()));
    }
    ElfImage::of_file(maps, m)
}

/// The bytes of a vDSO mapping worth reading (a few pages in truth).
fn vdso_len(m: &Mapping) -> Option<usize> {
    Some(usize::try_from(m.end - m.start).ok()?.min(1 << 20))
}

/// A copy of parprof's own vDSO.
fn own_vdso() -> Option<Vec<u8>> {
    let pid = std::process::id() as i32;
    let maps = Maps::read(pid).ok()?;
    let m = maps.mappings.iter().find(|m| m.is_vdso())?;
    super::ProcessMemory::new(pid)
        .read_vec(m.start, vdso_len(m)?)
        .ok()
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
                    memsz: 0x6d0,
                    executable: false,
                },
                Segment {
                    offset: 0x1000,
                    vaddr: 0x1000,
                    filesz: 0x2000,
                    memsz: 0x2000,
                    executable: true,
                },
                Segment {
                    offset: 0x3db8,
                    vaddr: 0x4db8,
                    filesz: 0x260,
                    memsz: 0x260,
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
    fn an_exited_processs_vdso_is_read_from_parprofs_own() {
        use object::{Object, ObjectSymbol};
        let maps = Maps::read(std::process::id() as i32).unwrap();
        let vdso = maps.mappings.iter().find(|m| m.is_vdso()).unwrap();
        // Memory that can no longer be read, as a process's that has exited.
        let gone = crate::process::memory::Bytes {
            base: 0,
            bytes: &[],
        };
        let image = open(&maps, vdso, &gone).expect("the vDSO of a process that exited");
        let file = image.object().unwrap();
        assert!(
            file.dynamic_symbols()
                .any(|s| s.name().is_ok_and(|n| n.ends_with("clock_gettime")))
        );
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
