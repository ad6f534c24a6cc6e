//! Python thread names: what `threading` calls each thread (`Thread.name`), read from its
//! registry in the target, `threading._active` (ident → `Thread`), each `Thread`'s `_name`
//! and `_native_id` (the OS thread id). Before 3.14 CPython leaves the OS name as the
//! program's (`python3.13`); 3.14 sets it, cut to the kernel's 15 bytes.
//!
//! Every step is a read of a running process: a thread whose entries cannot be read
//! (torn, not yet started) keeps the name last read, or none.

use std::collections::{HashMap, HashSet};

use super::PyError;
use super::objects::{Objects, find_str_key, int_value};
use super::offsets::Layout;
use super::strings::{Types, read_str};
use crate::process::Memory;

/// Threads read at most from the registry.
const MAX_THREADS: usize = 1 << 16;
/// Names kept at most: past this, those of threads that ended are let go (kept, they name
/// the ended threads' samples at the end).
const MAX_NAMES_KEPT: usize = 1 << 16;

/// Where one interpreter's registry was found.
#[derive(Default)]
struct Registry {
    /// `threading._active`, once found.
    active: Option<u64>,
    /// Entries of `sys.modules` when `threading` was last looked for and not found: the
    /// next look waits for a module to be imported.
    modules_seen: Option<usize>,
}

/// Where the registries were found, and what was read from them.
#[derive(Default)]
pub struct ThreadNames {
    objects: Objects,
    /// Each interpreter's (a subinterpreter has a `threading` of its own, naming the
    /// threads started in it).
    registries: HashMap<u64, Registry>,
    /// Each thread's name, and the `str` object it was read from (a thread renamed gets
    /// a new one; the same pointer is the same name, held by its `Thread`).
    names: HashMap<i32, (u64, String)>,
    /// The `Thread`s of the registries not yet read in this sweep of them, and the threads
    /// found so far: a sweep may be read a part at a time (see [`ThreadNames::step`]).
    sweep: Vec<u64>,
    live: HashSet<i32>,
}

impl Registry {
    /// `threading._active`, found through `sys.modules` the first time; `None` until the
    /// program imports `threading`.
    fn active(
        &mut self,
        objects: &Objects,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        interp: u64,
    ) -> Option<u64> {
        if self.active.is_some() {
            return self.active;
        }
        let modules = mem
            .read_u64(interp.wrapping_add(l.objects.interp_modules))
            .ok()?;
        let entries = objects.items(mem, l, t, modules).ok()?;
        if self.modules_seen == Some(entries.len()) {
            return None;
        }
        let Some(module) = find_str_key(mem, l, t, &entries, "threading") else {
            self.modules_seen = Some(entries.len());
            return None;
        };
        let header = mem.read_vec(module, l.object_header as usize + 8).ok()?;
        let word = |at: u64| -> Option<u64> {
            let at = at as usize;
            Some(u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?))
        };
        if word(l.ob_type) != Some(t.module) {
            return None;
        }
        // `md_dict` follows the object header.
        let dict = word(l.object_header)?;
        self.active = objects.lookup(mem, l, t, dict, "_active").ok()?;
        self.active
    }
}

impl ThreadNames {
    /// Read the registries of `interps` (oldest first) whole, now: the threads whose name
    /// is new or changed since the last read. Nothing where `threading` is not imported
    /// (yet).
    pub fn refresh(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        interps: &[u64],
    ) -> Vec<(i32, String)> {
        self.start(mem, l, t, interps);
        self.step(mem, l, t, usize::MAX)
    }

    /// Begin a sweep of the registries of `interps`, oldest first (a sweep under way starts
    /// again): whether there is anything to sweep. A thread known to an older interpreter
    /// keeps that name: a thread that calls into a subinterpreter is the main interpreter's
    /// `Thread` (the subinterpreter may know it only as a `_DummyThread`).
    pub fn start(&mut self, mem: &dyn Memory, l: &Layout, t: &Types, interps: &[u64]) -> bool {
        self.sweep.clear();
        self.live.clear();
        self.registries.retain(|i, _| interps.contains(i));
        for &interp in interps {
            let registry = self.registries.entry(interp).or_default();
            let Some(active) = registry.active(&self.objects, mem, l, t, interp) else {
                continue;
            };
            match self.objects.items(mem, l, t, active) {
                Ok(threads) => self
                    .sweep
                    .extend(threads.into_iter().map(|(_, thread)| thread)),
                // Freed or replaced: looked for again next time.
                Err(_) => registry.active = None,
            }
        }
        self.sweep.truncate(MAX_THREADS);
        !self.sweep.is_empty()
    }

    /// Whether a sweep is under way.
    pub fn sweeping(&self) -> bool {
        !self.sweep.is_empty()
    }

    /// Read `most` more `Thread`s of the sweep: those whose name is new or changed. A
    /// `Thread` that ended since the sweep began reads as torn or not started, and is
    /// passed over.
    pub fn step(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        most: usize,
    ) -> Vec<(i32, String)> {
        let mut changed = Vec::new();
        let take = self.sweep.len().min(most);
        let batch: Vec<u64> = self.sweep.drain(..take).collect();
        for thread in batch {
            let Ok(Some((tid, name_at))) = self.thread(mem, l, t, thread) else {
                continue;
            };
            if !self.live.insert(tid) {
                // Named by an older interpreter in this sweep.
                continue;
            }
            if self.names.get(&tid).is_none_or(|(at, _)| *at != name_at)
                && let Ok(name) = read_str(mem, l, t, name_at)
            {
                self.names.insert(tid, (name_at, name.clone()));
                changed.push((tid, name));
            }
        }
        if self.sweep.is_empty() && self.names.len() > MAX_NAMES_KEPT {
            // Threads come and go (one per connection): the ended ones' names are let go.
            let live = &self.live;
            self.names.retain(|tid, _| live.contains(tid));
        }
        changed
    }

    /// Every name read so far, by OS thread id.
    pub fn all(&self) -> impl Iterator<Item = (i32, &str)> {
        self.names
            .iter()
            .map(|(&tid, (_, name))| (tid, name.as_str()))
    }

    /// A `Thread`'s OS thread id and the `str` object of its name; `None` for one not
    /// started (its `_native_id` is `None`).
    fn thread(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        t: &Types,
        thread: u64,
    ) -> Result<Option<(i32, u64)>, PyError> {
        let o = &mut self.objects;
        let (Some(native_id), Some(name)) = (
            o.attribute(mem, l, t, thread, "_native_id")?,
            o.attribute(mem, l, t, thread, "_name")?,
        ) else {
            return Ok(None);
        };
        let Ok(tid) = int_value(mem, l, t, native_id) else {
            return Ok(None);
        };
        Ok(i32::try_from(tid)
            .ok()
            .filter(|&tid| tid > 0)
            .map(|tid| (tid, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::test_image::{BASE, Image, TYPES, layout_3_12};

    const INTERP: u64 = BASE;
    const TYPE: u64 = BASE + 0x1000;

    /// `sys.modules` → `threading` → `_active` → two `Thread`s, laid out as 3.12 does.
    fn registry(l: &Layout) -> Image {
        let mut img = Image::default();
        img.word(INTERP + l.objects.interp_modules, BASE + 0x100);
        img.dict(BASE + 0x100, BASE + 0x200, 0);
        img.keys(BASE + 0x200, 1, &[(BASE + 0x300, BASE + 0x400)]);
        img.str(BASE + 0x300, "threading");
        img.word(BASE + 0x400 + 8, TYPES.module);
        img.word(BASE + 0x400 + l.object_header, BASE + 0x500);
        img.dict(BASE + 0x500, BASE + 0x600, 0);
        img.keys(BASE + 0x600, 1, &[(BASE + 0x700, BASE + 0x800)]);
        img.str(BASE + 0x700, "_active");
        img.dict(BASE + 0x800, BASE + 0x900, 0);
        img.word(TYPE + l.objects.type_flags, 1 << 4);
        img.word(TYPE + l.objects.heap_cached_keys, BASE + 0x1100);
        img.keys(BASE + 0x1100, 2, &[(BASE + 0x1200, 0), (BASE + 0x1300, 0)]);
        img.str(BASE + 0x1200, "_name");
        img.str(BASE + 0x1300, "_native_id");
        let mut active = Vec::new();
        for (i, (tid, name)) in [(101u32, "MainThread"), (102, "線程-2")]
            .into_iter()
            .enumerate()
        {
            let i = i as u64;
            let (thread, values) = (BASE + 0x2040 + 0x100 * i, BASE + 0x3000 + 0x100 * i);
            img.word(thread + 8, TYPE);
            img.word(thread - 24, values - 1);
            img.word(values, BASE + 0x4000 + 0x100 * i);
            img.word(values + 8, BASE + 0x5000 + 0x100 * i);
            img.str(BASE + 0x4000 + 0x100 * i, name);
            img.int(BASE + 0x5000 + 0x100 * i, 1 << 3, &[tid]);
            // Keyed by ident, an int.
            active.push((BASE + 0x5000 + 0x100 * i, thread));
        }
        img.keys(BASE + 0x900, 0, &active);
        // Memory goes on past the last object, as it does in a process.
        img.word(BASE + 0x7000, 0);
        img
    }

    #[test]
    fn names_are_read_from_the_registry_and_again_when_they_change() {
        let l = layout_3_12();
        let mut img = registry(&l);
        let mut names = ThreadNames::default();
        let mut first = names.refresh(&img.mem(), &l, &TYPES, &[INTERP]);
        first.sort();
        assert_eq!(
            first,
            vec![(101, "MainThread".to_string()), (102, "線程-2".to_string())]
        );
        assert!(names.refresh(&img.mem(), &l, &TYPES, &[INTERP]).is_empty());
        // Renamed: `_name` is a new str.
        img.str(BASE + 0x4400, "renamed-2");
        img.word(BASE + 0x3100, BASE + 0x4400);
        assert_eq!(
            names.refresh(&img.mem(), &l, &TYPES, &[INTERP]),
            vec![(102, "renamed-2".to_string())]
        );
        // Not started: `_native_id` is None, not an int.
        img.word(BASE + 0x5100 + 8, 0x9999);
        img.str(BASE + 0x4500, "unstarted");
        img.word(BASE + 0x3100, BASE + 0x4500);
        assert!(names.refresh(&img.mem(), &l, &TYPES, &[INTERP]).is_empty());
        let mut all: Vec<(i32, &str)> = names.all().collect();
        all.sort();
        assert_eq!(all, vec![(101, "MainThread"), (102, "renamed-2")]);
    }

    #[test]
    fn a_sweep_read_a_part_at_a_time_reads_every_thread_once() {
        let l = layout_3_12();
        let img = registry(&l);
        let mut names = ThreadNames::default();
        assert!(names.start(&img.mem(), &l, &TYPES, &[INTERP]));
        let mut read = names.step(&img.mem(), &l, &TYPES, 1);
        assert_eq!(read.len(), 1);
        assert!(names.sweeping());
        read.extend(names.step(&img.mem(), &l, &TYPES, 1));
        assert!(!names.sweeping());
        assert!(names.step(&img.mem(), &l, &TYPES, 1).is_empty());
        read.sort();
        assert_eq!(read[1], (102, "線程-2".to_string()));
    }

    #[test]
    fn no_names_before_threading_is_imported() {
        let l = layout_3_12();
        let mut img = registry(&l);
        img.str(BASE + 0x300, "threadinf");
        let mut names = ThreadNames::default();
        assert!(names.refresh(&img.mem(), &l, &TYPES, &[INTERP]).is_empty());
        // sys.modules unchanged since: not searched again.
        img.str(BASE + 0x300, "threading");
        assert!(names.refresh(&img.mem(), &l, &TYPES, &[INTERP]).is_empty());
        // A module imported: searched, found.
        img.keys(
            BASE + 0x200,
            1,
            &[(BASE + 0x300, BASE + 0x400), (BASE + 0x700, BASE + 0x400)],
        );
        assert_eq!(names.refresh(&img.mem(), &l, &TYPES, &[INTERP]).len(), 2);
    }
}
