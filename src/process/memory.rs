//! Reading the target's memory: live (`process_vm_readv`) and from a stack copy taken at
//! sample time. Readers take `&dyn Memory`, so the unwinder and the CPython reader can be
//! tested and fuzzed over byte arrays.

use std::io::IoSliceMut;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("address {0:#x} is not mapped in the target")]
    Unmapped(u64),
    #[error("short read at {0:#x}")]
    Short(u64),
    #[error("the target process is gone")]
    ProcessGone,
    #[error("not permitted to read the target's memory")]
    Permission,
}

/// Read-only access to a target's address space.
pub trait Memory {
    /// Fill `buf` from `addr`, whole or not at all.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read_i32(&self, addr: u64) -> Result<i32, MemError> {
        self.read_u32(addr).map(|v| v as i32)
    }

    fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, MemError> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    /// Fill each buffer of `reads` from its address, whole, as one read where this memory
    /// can make one of many ranges; returns how many, from the first, were filled (the
    /// one after them could not be).
    fn read_each(&self, reads: &mut [(u64, &mut [u8])]) -> usize {
        let mut filled = 0;
        for (addr, buf) in reads.iter_mut() {
            if self.read(*addr, buf).is_err() {
                break;
            }
            filled += 1;
        }
        filled
    }
}

/// The live memory of process `pid`, read with `process_vm_readv` (no ptrace stop needed).
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pub pid: i32,
}

impl ProcessMemory {
    pub fn new(pid: i32) -> Self {
        ProcessMemory { pid }
    }

    /// Read up to `buf.len()` bytes, stopping at the first unreadable page; returns how
    /// many bytes were read. Used for stack copies, whose top may cross a guard page.
    pub fn read_partial(&self, addr: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len();
        let mut local = [IoSliceMut::new(buf)];
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        match process_vm_readv(Pid::from_raw(self.pid), &mut local, &remote) {
            Ok(n) => Ok(n),
            Err(nix::errno::Errno::ESRCH) => Err(MemError::ProcessGone),
            Err(nix::errno::Errno::EPERM) => Err(MemError::Permission),
            Err(_) => Err(MemError::Unmapped(addr)),
        }
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let n = self.read_partial(addr, buf)?;
        if n == buf.len() {
            Ok(())
        } else {
            Err(MemError::Short(addr + n as u64))
        }
    }

    /// One `process_vm_readv` for every range (up to the kernel's `IOV_MAX` each): it
    /// stops at the first range it cannot read, and the byte count it returns says where.
    fn read_each(&self, reads: &mut [(u64, &mut [u8])]) -> usize {
        const IOV_MAX: usize = 1024;
        let mut filled = 0;
        for batch in reads.chunks_mut(IOV_MAX) {
            let remote: Vec<RemoteIoVec> = batch
                .iter()
                .map(|(addr, buf)| RemoteIoVec {
                    base: *addr as usize,
                    len: buf.len(),
                })
                .collect();
            let mut local: Vec<IoSliceMut> = batch
                .iter_mut()
                .map(|(_, buf)| IoSliceMut::new(buf))
                .collect();
            let Ok(mut n) = process_vm_readv(Pid::from_raw(self.pid), &mut local, &remote) else {
                return filled;
            };
            for r in &remote {
                if n < r.len {
                    return filled;
                }
                n -= r.len;
                filled += 1;
            }
        }
        filled
    }
}

/// The bytes of a thread's stack from its stack pointer upwards, copied at sample time so
/// that unwinding later, on another thread, sees the stack as it was.
#[derive(Debug, Clone, Default)]
pub struct StackSnapshot {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl StackSnapshot {
    /// Copy the stack starting at `sp`, as much of it as fits in `scratch` (whose size is
    /// the most a sample keeps). Reading into a buffer kept from sample to sample and
    /// keeping only what was read costs a copy of the used part of the stack, which is
    /// usually a few KiB; a fresh zeroed buffer per sample cost more than the read.
    pub fn capture(mem: &ProcessMemory, sp: u64, scratch: &mut [u8]) -> Result<Self, MemError> {
        // A stack ends at the end of its mapping; read page by page from there on failure.
        let n = match mem.read_partial(sp, scratch) {
            Ok(n) if n > 0 => n,
            Ok(_) | Err(MemError::Unmapped(_)) => {
                let to_page_end = (0x1000 - (sp & 0xfff)) as usize;
                let len = to_page_end.min(scratch.len());
                mem.read_partial(sp, &mut scratch[..len])?
            }
            Err(e) => return Err(e),
        };
        Ok(StackSnapshot {
            base: sp,
            bytes: scratch[..n].to_vec(),
        })
    }

    /// Read on from where a copy the kernel cut short ended, up to `want` bytes in all; the
    /// bytes added. The kernel copies the stack in its timer interrupt, where it cannot fault
    /// a page in: a page the thread never touched ends the copy, though its live frames lie
    /// above it. OpenBLAS's Haswell dgemm kernel aligns a 28 KiB buffer below its caller and
    /// leaves its upper pages untouched, so every copy stopped 16 KiB up, and its callers
    /// were read when the resolver got to the sample, seconds later (3-6 % of them wrong
    /// frames). Read now, the hole maps the zero page, and the kernel's later copies pass it.
    pub fn read_on(&mut self, mem: &ProcessMemory, want: usize) -> usize {
        let have = self.bytes.len();
        if have >= want {
            return 0;
        }
        self.bytes.resize(want, 0);
        let added = mem
            .read_partial(self.base + have as u64, &mut self.bytes[have..])
            .unwrap_or(0);
        self.bytes.truncate(have + added);
        added
    }

    pub fn contains(&self, addr: u64, len: usize) -> bool {
        addr >= self.base && addr + len as u64 <= self.base + self.bytes.len() as u64
    }
}

impl Memory for StackSnapshot {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if !self.contains(addr, buf.len()) {
            return Err(MemError::Unmapped(addr));
        }
        let off = (addr - self.base) as usize;
        buf.copy_from_slice(&self.bytes[off..off + buf.len()]);
        Ok(())
    }
}

/// A stack copy in front of another memory (usually the live process): reads inside the
/// copy come from the copy, the rest (e.g. a signal frame's saved context on an alternate
/// stack) from the fallback.
pub struct Layered<'a> {
    pub stack: &'a StackSnapshot,
    pub rest: &'a dyn Memory,
}

impl Memory for Layered<'_> {
    /// The bytes the copy holds come from the copy, even in a read that runs past its end
    /// (a stack scan's chunk): beyond it the live stack has moved on since the sample, and
    /// a chunk read whole from there held a later call's return addresses, whose chains
    /// stood in for the sampled ones in 3 % of the samples in numpy's BLAS kernel.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let copy_end = self.stack.base + self.stack.bytes.len() as u64;
        if addr < self.stack.base || addr >= copy_end {
            return self.rest.read(addr, buf);
        }
        let copied = ((copy_end - addr) as usize).min(buf.len());
        let (head, tail) = buf.split_at_mut(copied);
        self.stack.read(addr, head)?;
        if tail.is_empty() {
            return Ok(());
        }
        self.rest.read(copy_end, tail)
    }
}

/// A byte array at an address: the memory of tests and fuzz targets.
pub struct Bytes<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl Memory for Bytes<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = addr
            .checked_sub(self.base)
            .ok_or(MemError::Unmapped(addr))? as usize;
        let end = off.checked_add(buf.len()).ok_or(MemError::Unmapped(addr))?;
        let src = self.bytes.get(off..end).ok_or(MemError::Unmapped(addr))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vectored_read_fills_the_ranges_before_the_first_unreadable_one() {
        let words: [u64; 3] = [0x1111, 0x2222, 0x3333];
        let at = |i: usize| &words[i] as *const u64 as u64;
        let mem = ProcessMemory::new(std::process::id() as i32);
        let mut bufs = [[0u8; 8]; 4];
        let [a, b, c, d] = &mut bufs;
        // The third range is the unmapped page at address 0.
        let mut reads = [
            (at(2), &mut a[..]),
            (at(0), &mut b[..]),
            (0, &mut c[..]),
            (at(1), &mut d[..]),
        ];
        assert_eq!(mem.read_each(&mut reads), 2);
        assert_eq!(u64::from_le_bytes(bufs[0]), 0x3333);
        assert_eq!(u64::from_le_bytes(bufs[1]), 0x1111);
        // The same through the default, one read at a time.
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let local = Bytes {
            base: 0x1000,
            bytes: &bytes,
        };
        let mut bufs = [[0u8; 8]; 3];
        let [a, b, c] = &mut bufs;
        let mut reads = [
            (0x1010, &mut a[..]),
            (0x1008, &mut b[..]),
            (0x1018, &mut c[..]),
        ];
        assert_eq!(local.read_each(&mut reads), 2);
        assert_eq!(u64::from_le_bytes(bufs[1]), 0x2222);
    }
}
