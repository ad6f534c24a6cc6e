//! The words of contended locks, read at the start of every tick: whether each lock is held
//! at each instant, contended or not, is how much of the time it is held (`held_share`).
//! A glibc mutex is found by the sampler itself (its waiter's futex word sits beside an
//! `__owner` naming a thread of the target); a `PyMutex`, a Rust std `Mutex` or a semaphore
//! used as a lock only by the resolver, from its waiter's stack, which then asks the
//! sampler to watch it.

use crate::process::Memory;

/// How a lock's word says it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordKind {
    /// A futex word that is the lock itself (four bytes): 0 is unlocked. A glibc mutex's
    /// `__lock`, and Rust std's `Mutex` (0 unlocked, 1 locked, 2 locked with waiters).
    Futex,
    /// A CPython `PyMutex` (`_bits`, one byte): bit 0 is set while it is locked (bit 1 says
    /// that a thread is parked on it).
    PyMutex,
    /// A glibc semaphore used as a lock (its count, four bytes): 0 is taken.
    Semaphore,
}

/// A lock whose word is read at every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWord {
    /// The word's address, which is also the lock's identity in the profile.
    pub address: u64,
    pub kind: WordKind,
}

impl LockWord {
    /// Whether the lock is held now, `None` when its word cannot be read.
    fn held(&self, mem: &dyn Memory) -> Option<bool> {
        match self.kind {
            WordKind::Futex => mem.read_u32(self.address).ok().map(|w| w != 0),
            WordKind::Semaphore => mem.read_u32(self.address).ok().map(|w| w == 0),
            WordKind::PyMutex => {
                let mut bits = [0u8];
                mem.read(self.address, &mut bits).ok()?;
                Some(bits[0] & 1 != 0)
            }
        }
    }
}

/// Words read at every tick, at most: the first locks seen contended. Each read is one
/// small `process_vm_readv`, taken at the instant of the tick.
const MOST: usize = 8;

/// The words watched so far.
#[derive(Debug, Default)]
pub struct LockWords {
    words: Vec<LockWord>,
}

impl LockWords {
    /// Read `word` at every tick from now on, unless it already is or enough are.
    pub fn watch(&mut self, word: LockWord) {
        if self.words.len() < MOST && !self.words.iter().any(|w| w.address == word.address) {
            self.words.push(word);
        }
    }

    /// Forget every word (the process executed a new program).
    pub fn clear(&mut self) {
        self.words.clear();
    }

    /// Each lock's address and whether it is held now, for those whose word could be read.
    pub fn read(&self, mem: &dyn Memory) -> Vec<(u64, bool)> {
        self.words
            .iter()
            .filter_map(|w| w.held(mem).map(|h| (w.address, h)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::Bytes;

    #[test]
    fn each_kind_of_word_says_held_its_own_way() {
        // A glibc mutex word of 2 (locked, contended); a PyMutex of 2 (a thread parked,
        // not locked) and of 3 (locked, a thread parked); a semaphore's count of 0 (taken).
        let mem = Bytes {
            base: 0x1000,
            bytes: &[2, 0, 0, 0, 2, 3, 0, 0, 0, 0],
        };
        let mut words = LockWords::default();
        for (address, kind) in [
            (0x1000, WordKind::Futex),
            (0x1004, WordKind::PyMutex),
            (0x1005, WordKind::PyMutex),
            (0x1006, WordKind::Semaphore),
            (0x9000, WordKind::PyMutex),
        ] {
            words.watch(LockWord { address, kind });
        }
        words.watch(LockWord {
            address: 0x1000,
            kind: WordKind::PyMutex,
        });
        assert_eq!(
            words.read(&mem),
            [
                (0x1000, true),
                (0x1004, false),
                (0x1005, true),
                (0x1006, true)
            ]
        );
    }

    #[test]
    fn only_the_first_few_words_are_watched() {
        let mut words = LockWords::default();
        for i in 0..20 {
            words.watch(LockWord {
                address: 0x1000 + i,
                kind: WordKind::PyMutex,
            });
        }
        let mem = Bytes {
            base: 0x1000,
            bytes: &[1; 64],
        };
        assert_eq!(words.read(&mem).len(), MOST);
    }
}
