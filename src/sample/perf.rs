//! What the two perf-event users (context-switch records, kernel stack samples) share: opening
//! an event, mapping its ring, copying out what the kernel wrote, walking the records, and
//! the clock and CPU list they are stamped with.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use perf_event_open_sys as sys;
use perf_event_open_sys::bindings as pb;

#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(
        "not permitted to open perf events (needs root or CAP_PERFMON, or sysctl kernel.perf_event_paranoid <= 0)"
    )]
    Permission,
    #[error("perf_event_open failed: {0}")]
    Open(std::io::Error),
    #[error("cannot map the perf ring: {0}")]
    Mmap(std::io::Error),
    #[error("cannot read the online CPUs: {0}")]
    Cpus(std::io::Error),
}

/// An attribute block stamped with CLOCK_MONOTONIC (the clock `Instant` reads), every record
/// carrying its pid, tid and time.
pub fn base_attr() -> pb::perf_event_attr {
    let mut attr = pb::perf_event_attr {
        size: std::mem::size_of::<pb::perf_event_attr>() as u32,
        sample_type: (pb::PERF_SAMPLE_TID | pb::PERF_SAMPLE_TIME) as u64,
        clockid: libc::CLOCK_MONOTONIC,
        ..Default::default()
    };
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr
}

/// Open an event for thread `tid` (-1: every thread) on `cpu` (-1: any CPU).
pub fn open(attr: &mut pb::perf_event_attr, tid: i32, cpu: i32) -> Result<OwnedFd, PerfError> {
    // SAFETY: `attr` is a fully initialised attribute block of the size it declares.
    let fd = unsafe {
        sys::perf_event_open(
            attr,
            tid,
            cpu,
            -1,
            pb::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => PerfError::Permission,
            _ => PerfError::Open(e),
        });
    }
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send `fd`'s records into the ring of `into` (same CPU, same clock).
pub fn redirect(fd: &OwnedFd, into: RawFd) -> Result<(), PerfError> {
    // SAFETY: both descriptors are perf events; the kernel checks CPU and clock.
    if unsafe { sys::ioctls::SET_OUTPUT(fd.as_raw_fd(), into) } != 0 {
        return Err(PerfError::Open(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The ring buffer mapped over one event's descriptor; other events may be redirected into
/// it. Read by copying what the kernel wrote since the last read.
pub struct Ring {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
    data_pages: usize,
}

// SAFETY: the mapping is owned by the Ring and only touched through `&mut self`.
unsafe impl Send for Ring {}

impl Ring {
    /// Map `data_pages` (a power of two) of ring after the header page.
    pub fn map(fd: OwnedFd, data_pages: usize) -> Result<Ring, PerfError> {
        let len = page_size() * (1 + data_pages);
        // SAFETY: a fresh shared read-write mapping of the perf fd, as perf_event_open(2) describes.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(PerfError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(Ring {
            fd,
            base: base.cast(),
            len,
            data_pages,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The descriptor to poll: readable when the kernel wakes the ring's readers.
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Hand each record written since the last read to `each`, then give their space back
    /// to the kernel. Records are read where the kernel wrote them (a timer sample holds a
    /// 63 KiB stack copy, and copying each out first took longer than the rest of its
    /// handling); only one that wraps around the ring's end is joined in `scratch`.
    pub fn read(&mut self, scratch: &mut Vec<u8>, mut each: impl FnMut(RawRecord<'_>)) {
        let h: *mut pb::perf_event_mmap_page = self.base.cast();
        // SAFETY: the header page is mapped for the ring's lifetime; data_head is written by
        // the kernel and read with acquire ordering, data_tail is ours.
        let (head, tail, offset, size) = unsafe {
            let head = AtomicU64::from_ptr(&raw mut (*h).data_head).load(Ordering::Acquire);
            let tail = (*h).data_tail;
            let offset = match (*h).data_offset {
                0 => page_size() as u64,
                o => o,
            };
            let size = match (*h).data_size {
                0 => (self.data_pages * page_size()) as u64,
                s => s,
            };
            (head, tail, offset as usize, size as usize)
        };
        // SAFETY: the data area lies inside the mapping, `size` bytes from `offset`; the
        // kernel writes none of the space between tail and head until the tail passes it.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(offset), size) };
        let mut at = tail;
        while let Some(rec) = record_at(data, at, head, scratch) {
            at += rec.bytes.len() as u64;
            each(rec);
        }
        // SAFETY: as above; release so the kernel sees our reads done before reusing space.
        unsafe { AtomicU64::from_ptr(&raw mut (*h).data_tail).store(head, Ordering::Release) };
    }
}

/// The record at ring position `at` of the ring `data`, whose kernel is writing at `head`;
/// none if it does not fit before `head`. Its header never wraps (records are 8-byte
/// aligned in a ring of a power of two pages); its body may, and is then joined in
/// `scratch`.
fn record_at<'a>(
    data: &'a [u8],
    at: u64,
    head: u64,
    scratch: &'a mut Vec<u8>,
) -> Option<RawRecord<'a>> {
    let start = (at % data.len() as u64) as usize;
    let size = u16_at(data, start + 6)? as usize;
    if size < 8 || size as u64 > head.checked_sub(at)? {
        return None;
    }
    let bytes = match data.get(start..start + size) {
        Some(b) => b,
        None => {
            scratch.clear();
            scratch.extend_from_slice(&data[start..]);
            scratch.extend_from_slice(data.get(..size - scratch.len())?);
            scratch
        }
    };
    Some(RawRecord {
        kind: u32_at(bytes, 0)?,
        misc: u16_at(bytes, 4)?,
        bytes,
    })
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `map`; the fd closes after.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One record of a ring: its type, `misc` flags and whole bytes (header included).
pub struct RawRecord<'a> {
    pub kind: u32,
    pub misc: u16,
    pub bytes: &'a [u8],
}

/// The records in a ring's bytes, stopping at the first one that does not fit (the
/// parsers' tests build rings' bytes).
#[cfg(test)]
pub fn records(buf: &[u8]) -> impl Iterator<Item = RawRecord<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let kind = u32_at(buf, at)?;
        let misc = u16_at(buf, at + 4)?;
        let size = u16_at(buf, at + 6)? as usize;
        let bytes = buf.get(at..at + size).filter(|_| size >= 8)?;
        at += size;
        Some(RawRecord { kind, misc, bytes })
    })
}

pub fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Online CPUs from `/sys/devices/system/cpu/online` (`0-3,6,8-9`).
pub fn online_cpus() -> Result<Vec<usize>, PerfError> {
    let text =
        std::fs::read_to_string("/sys/devices/system/cpu/online").map_err(PerfError::Cpus)?;
    let bad = || {
        PerfError::Cpus(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable CPU list {text:?}"),
        ))
    };
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock the records are stamped with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list() {
        assert!(online_cpus().is_ok_and(|c| !c.is_empty()));
    }

    #[test]
    fn records_stop_at_a_torn_end() {
        let mut buf = Vec::new();
        buf.extend(9u32.to_ne_bytes());
        buf.extend(0u16.to_ne_bytes());
        buf.extend(16u16.to_ne_bytes());
        buf.extend(7u64.to_ne_bytes());
        // A second header claiming more bytes than there are.
        buf.extend(9u32.to_ne_bytes());
        buf.extend(0u16.to_ne_bytes());
        buf.extend(64u16.to_ne_bytes());
        let all: Vec<_> = records(&buf).map(|r| (r.kind, r.bytes.len())).collect();
        assert_eq!(all, vec![(9, 16)]);
    }

    #[test]
    fn a_record_that_wraps_around_the_ring_is_joined_and_one_past_head_is_left() {
        // A 64-byte ring: a 24-byte record at 48 wraps; the kernel's head is at 72 + 16.
        let mut data = vec![0u8; 64];
        let header =
            |kind: u32, size: u16| [&kind.to_ne_bytes()[..], &[0, 0], &size.to_ne_bytes()].concat();
        data[48..56].copy_from_slice(&header(9, 24));
        data[56..64].copy_from_slice(&1u64.to_ne_bytes());
        data[0..8].copy_from_slice(&2u64.to_ne_bytes());
        data[8..16].copy_from_slice(&header(10, 16));
        let mut scratch = Vec::new();
        let rec = record_at(&data, 48, 88, &mut scratch).expect("the wrapped record");
        assert_eq!(
            (rec.kind, u64_at(rec.bytes, 8), u64_at(rec.bytes, 16)),
            (9, Some(1), Some(2))
        );
        // The next one claims 16 bytes where the head leaves 16: it fits; at head-8 it does not.
        assert!(record_at(&data, 72, 88, &mut scratch).is_some_and(|r| r.kind == 10));
        assert!(record_at(&data, 72, 80, &mut scratch).is_none());
    }
}
