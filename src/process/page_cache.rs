//! Whole pages of the target kept for one walk of its data structures. A Python stack walk
//! makes two small reads per frame (the frame, its code object) and a thread-state walk
//! three per thread; each `process_vm_readv` costs about the same for 80 bytes as for a
//! page (the syscall, the task lookup and pinning the page dominate). CPython's frames sit
//! side by side in each thread's data-stack chunk and a recursive function's frames share
//! one code object, so reading the page and answering later reads from it turned some 40
//! syscalls per 20-frame stack into a handful.
//!
//! Pages are kept only for one walk ([`Pages::view`] forgets them): a walk already reads a
//! moving target and checks what it reads, and a page a few microseconds old is no
//! staler than the word read next to it; a page from an earlier tick would be.

use std::cell::RefCell;

use super::memory::{MemError, Memory};

const PAGE: u64 = 4096;

/// The storage of the pages, kept from walk to walk so that no walk allocates.
pub struct Pages {
    /// Page addresses, in the order they were read; slot `i`'s bytes are at `i * PAGE`.
    addrs: Vec<u64>,
    bytes: Vec<u8>,
    /// The slot the next page read replaces once all are in use.
    next: usize,
    capacity: usize,
}

impl Pages {
    /// Room for `capacity` pages (at least one).
    pub fn new(capacity: usize) -> Pages {
        let capacity = capacity.max(1);
        Pages {
            addrs: Vec::with_capacity(capacity),
            bytes: Vec::new(),
            next: 0,
            capacity,
        }
    }

    /// A fresh view of `mem` for one walk: nothing read before is kept.
    pub fn view<'a>(&'a mut self, mem: &'a dyn Memory) -> PageCache<'a> {
        self.addrs.clear();
        self.next = 0;
        PageCache {
            mem,
            pages: RefCell::new(self),
        }
    }

    /// The slot holding page `page`, reading it into one if it is not there.
    fn slot(&mut self, mem: &dyn Memory, page: u64) -> Result<usize, MemError> {
        if let Some(i) = self.addrs.iter().position(|&a| a == page) {
            return Ok(i);
        }
        let i = if self.addrs.len() < self.capacity {
            self.addrs.push(u64::MAX);
            self.addrs.len() - 1
        } else {
            let i = self.next;
            self.next = (self.next + 1) % self.capacity;
            i
        };
        let end = (i + 1) * PAGE as usize;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        let read = mem.read(page, &mut self.bytes[end - PAGE as usize..end]);
        self.addrs[i] = if read.is_ok() { page } else { u64::MAX };
        read.map(|()| i)
    }
}

/// Reads through the pages of one walk (see the module's doc). Reads of more than a page,
/// and any read a page could not serve, go straight to the memory behind, which then gives
/// its own answer and error.
pub struct PageCache<'a> {
    mem: &'a dyn Memory,
    pages: RefCell<&'a mut Pages>,
}

impl PageCache<'_> {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mut pages = self.pages.borrow_mut();
        let mut done = 0;
        while done < buf.len() {
            let at = addr
                .checked_add(done as u64)
                .ok_or(MemError::Unmapped(addr))?;
            let page = at & !(PAGE - 1);
            let slot = pages.slot(self.mem, page)?;
            let from = slot * PAGE as usize + (at - page) as usize;
            let n = (buf.len() - done).min((PAGE - (at - page)) as usize);
            buf[done..done + n].copy_from_slice(&pages.bytes[from..from + n]);
            done += n;
        }
        Ok(())
    }
}

impl Memory for PageCache<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if buf.len() as u64 > PAGE || self.read_pages(addr, buf).is_err() {
            return self.mem.read(addr, buf);
        }
        Ok(())
    }

    /// Straight to the memory behind, in one read there: a caller gathers ranges it knows
    /// lie apart (one per object), where pages would each cost a read and a page's copy.
    fn read_each(&self, reads: &mut [(u64, &mut [u8])]) -> usize {
        self.mem.read_each(reads)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::process::memory::Bytes;

    /// Memory that counts the reads made of it.
    struct Counting<'a> {
        inner: Bytes<'a>,
        reads: Cell<usize>,
    }

    impl Memory for Counting<'_> {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.read(addr, buf)
        }
    }

    const BASE: u64 = 0x10_000;

    fn image() -> Vec<u8> {
        (0..3 * PAGE as usize)
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    fn counting(bytes: &[u8]) -> Counting<'_> {
        Counting {
            inner: Bytes { base: BASE, bytes },
            reads: Cell::new(0),
        }
    }

    #[test]
    fn reads_within_a_page_cost_one_read_of_it() {
        let bytes = image();
        let mem = counting(&bytes);
        let mut pages = Pages::new(4);
        let view = pages.view(&mem);
        for off in [8u64, 100, 4000, 16] {
            assert_eq!(
                view.read_u64(BASE + off).unwrap(),
                mem.inner.read_u64(BASE + off).unwrap()
            );
        }
        assert_eq!(
            mem.reads.get(),
            1,
            "four reads through the view, one of the page"
        );
    }

    #[test]
    fn a_read_across_pages_joins_them_and_the_next_walk_reads_again() {
        let bytes = image();
        let mem = counting(&bytes);
        let mut pages = Pages::new(4);
        let at = BASE + PAGE - 5;
        {
            let view = pages.view(&mem);
            assert_eq!(
                view.read_vec(at, 16).unwrap(),
                bytes[PAGE as usize - 5..][..16]
            );
            assert_eq!(mem.reads.get(), 2);
        }
        let view = pages.view(&mem);
        view.read_u64(at).unwrap();
        assert_eq!(
            mem.reads.get(),
            4,
            "a new view keeps nothing of the last walk"
        );
    }

    #[test]
    fn unmapped_and_large_reads_answer_as_the_memory_behind() {
        let bytes = image();
        let mem = counting(&bytes);
        let mut pages = Pages::new(1);
        let view = pages.view(&mem);
        // The last page is mapped, the one after it is not: a read across both fails as a
        // direct read does, and a read inside the last page still succeeds.
        let end = BASE + 3 * PAGE;
        assert_eq!(view.read_vec(end - 4, 8), mem.inner.read_vec(end - 4, 8));
        assert!(view.read_vec(end - 4, 8).is_err());
        assert_eq!(
            view.read_u32(end - 4).unwrap(),
            mem.inner.read_u32(end - 4).unwrap()
        );
        let whole = view.read_vec(BASE, 2 * PAGE as usize + 3).unwrap();
        assert_eq!(whole, bytes[..2 * PAGE as usize + 3]);
    }

    #[test]
    fn with_every_slot_taken_the_oldest_page_is_replaced() {
        let bytes = image();
        let mem = counting(&bytes);
        let mut pages = Pages::new(2);
        let view = pages.view(&mem);
        for page in 0..3 {
            let at = BASE + page * PAGE + 24;
            assert_eq!(view.read_u64(at).unwrap(), mem.inner.read_u64(at).unwrap());
        }
        let before = mem.reads.get();
        view.read_u64(BASE + 2 * PAGE).unwrap();
        assert_eq!(mem.reads.get(), before, "the newest page is kept");
        view.read_u64(BASE + 8).unwrap();
        assert_eq!(mem.reads.get(), before + 1, "the oldest was replaced");
    }
}
