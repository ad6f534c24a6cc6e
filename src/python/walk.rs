//! Walking the interpreter's state in the target without stopping it: interpreters → thread
//! states (which OS thread runs which thread state), a thread's frame chain, and the GIL.
//!
//! The target keeps running while parprof reads, so every pointer may be stale: each step is
//! bounded (counts, depth, string lengths), checked (object types, owner values, instruction
//! range) and a failure ends the walk with what was read so far, marked truncated.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldhash::fast::RandomState as FastHash;

use super::linetable;
use super::offsets::{CurrentFrame, GilAt, Layout};
use super::strings::{Types, read_bytes, read_str};
use super::{PyError, PyFrame, PyStack};
use crate::frame::{Frame, FrameKind};
use crate::process::Memory;

/// CPython's own limit on frames a remote reader should follow.
pub const MAX_DEPTH: usize = 1024;
const MAX_INTERPRETERS: usize = 256;
const MAX_THREADS: usize = 65536;
/// Forget cached code objects past this many (long runs that generate code).
const MAX_CACHED_CODE: usize = 100_000;

/// One Python thread state and the OS thread running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadState {
    pub tstate: u64,
    pub interp: u64,
    /// The interpreter's id (`Interpreter.id`): 0 for the main interpreter.
    pub interp_id: i64,
    pub tid: i32,
}

/// What the frames of a code object show, read once per code object.
#[derive(Debug)]
struct CodeInfo {
    name: String,
    file: String,
    first_line: u32,
    linetable: Vec<u8>,
    /// Length of the bytecode in 2-byte code units (`Py_SIZE(code)`).
    units: u64,
}

/// A code object is identified by its address and the objects it points at, so that a
/// freed code object whose address is reused by another is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CodeKey {
    addr: u64,
    name: u64,
    file: u64,
    linetable: u64,
}

/// The reading side of a [`super::PythonReader`]: layout, type addresses and caches.
pub struct Walker {
    pub layout: Layout,
    pub types: Types,
    /// Address of `_PyRuntime` in the target.
    pub runtime: u64,
    code: HashMap<CodeKey, Arc<CodeInfo>, FastHash>,
    /// A stack walk's buffers, kept from walk to walk so that a walk does not allocate.
    raw_frames: Vec<RawFrame>,
    codes: Vec<u64>,
    headers: Vec<u8>,
    seen: HashSet<u64, FastHash>,
}

fn word(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn int(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Walker {
    pub fn new(layout: Layout, types: Types, runtime: u64) -> Walker {
        Walker {
            layout,
            types,
            runtime,
            code: HashMap::default(),
            raw_frames: Vec::new(),
            codes: Vec::new(),
            headers: Vec::new(),
            seen: HashSet::default(),
        }
    }

    /// Every thread state of every interpreter, main interpreter last (lists are newest
    /// first). Stops a list at the first inconsistent entry.
    pub fn thread_states(&self, mem: &dyn Memory) -> Result<(Vec<ThreadState>, Vec<u64>), PyError> {
        let l = &self.layout;
        let mut interps = Vec::new();
        let mut threads = Vec::new();
        let mut interp = mem
            .read_u64(self.runtime.wrapping_add(l.runtime_interpreters_head))
            .map_err(PyError::Memory)?;
        while interp != 0 && interps.len() < MAX_INTERPRETERS && !interps.contains(&interp) {
            interps.push(interp);
            let Ok(interp_id) = mem.read_u64(interp.wrapping_add(l.interp_id)) else {
                break;
            };
            let mut seen = HashSet::new();
            let mut tstate = mem
                .read_u64(interp.wrapping_add(l.interp_threads_head))
                .unwrap_or(0);
            while tstate != 0 && seen.len() < MAX_THREADS && seen.insert(tstate) {
                let Ok(owner) = mem.read_u64(tstate.wrapping_add(l.tstate_interp)) else {
                    break;
                };
                if owner != interp {
                    break;
                }
                let (Ok(tid), Ok(next)) = (
                    mem.read_u64(tstate.wrapping_add(l.tstate_native_thread_id)),
                    mem.read_u64(tstate.wrapping_add(l.tstate_next)),
                ) else {
                    break;
                };
                if let Ok(tid) = i32::try_from(tid) {
                    threads.push(ThreadState {
                        tstate,
                        interp,
                        interp_id: interp_id as i64,
                        tid,
                    });
                }
                tstate = next;
            }
            interp = mem
                .read_u64(interp.wrapping_add(l.interp_next))
                .unwrap_or(0);
        }
        Ok((threads, interps))
    }

    /// Whether the thread state at `tstate` still belongs to OS thread `tid` (it is freed
    /// when its thread exits, and its memory may be reused).
    pub fn names_thread(&self, mem: &dyn Memory, tstate: u64, tid: i32) -> bool {
        mem.read_u64(tstate.wrapping_add(self.layout.tstate_native_thread_id))
            .is_ok_and(|t| t == tid as u64)
    }

    /// The innermost frame of a thread state (0 when it runs no Python code).
    fn current_frame(&self, mem: &dyn Memory, tstate: u64) -> Result<u64, PyError> {
        match self.layout.tstate_current_frame {
            CurrentFrame::Direct(off) => mem
                .read_u64(tstate.wrapping_add(off))
                .map_err(PyError::Memory),
            CurrentFrame::ViaCFrame {
                cframe,
                current_frame,
            } => {
                let cf = mem
                    .read_u64(tstate.wrapping_add(cframe))
                    .map_err(PyError::Memory)?;
                if cf == 0 {
                    Ok(0)
                } else {
                    mem.read_u64(cf.wrapping_add(current_frame))
                        .map_err(PyError::Memory)
                }
            }
        }
    }

    /// The Python frames of a thread state, innermost first, in three passes: the chain
    /// of frames (side by side in the thread's data stack, read through the walk's pages),
    /// then the header of each code object they run, all in one read (they lie apart: a
    /// page read each would copy a page each), then the frames. Frames past one that does
    /// not check out are dropped and the stack is marked truncated.
    pub fn stack(&mut self, mem: &dyn Memory, tstate: u64) -> PyStack {
        let mut stack = PyStack {
            truncated: self.chain(mem, tstate).is_err(),
            ..PyStack::default()
        };
        let infos = self.code_infos(mem);
        for raw in std::mem::take(&mut self.raw_frames) {
            if raw.code == 0 {
                // An entry shim: the frame above it began its eval-loop call.
                if let Some(last) = stack.frames.last_mut() {
                    last.entry = true;
                }
                continue;
            }
            let info = match self.codes.binary_search(&raw.code) {
                Ok(i) => infos[i].as_ref().ok().cloned(),
                Err(_) => None,
            };
            match info.map(|info| self.frame(mem, &raw, &info)) {
                Some(Ok(frame)) => stack.frames.push(frame),
                _ => {
                    stack.truncated = true;
                    break;
                }
            }
        }
        stack
    }

    /// The first pass of `stack`: the fields of each frame from the innermost, into
    /// `raw_frames`, and the code objects they run, sorted, into `codes`. An error ends
    /// the chain where it happened.
    fn chain(&mut self, mem: &dyn Memory, tstate: u64) -> Result<(), PyError> {
        self.raw_frames.clear();
        self.codes.clear();
        self.seen.clear();
        let mut frame = self.current_frame(mem, tstate)?;
        let result = loop {
            if frame == 0 {
                break Ok(());
            }
            if self.seen.len() >= MAX_DEPTH || !self.seen.insert(frame) {
                break Err(PyError::Torn("frame chain too long or circular"));
            }
            match self.raw_frame(mem, frame) {
                Ok((raw, previous)) => {
                    if raw.code != 0 {
                        self.codes.push(raw.code);
                    }
                    self.raw_frames.push(raw);
                    frame = previous;
                }
                Err(e) => break Err(e),
            }
        };
        self.codes.sort_unstable();
        self.codes.dedup();
        result
    }

    /// Read one interpreter frame's fields and the address of the one below it.
    fn raw_frame(&self, mem: &dyn Memory, addr: u64) -> Result<(RawFrame, u64), PyError> {
        let l = &self.layout;
        let fields = [
            Some(l.frame_previous),
            Some(l.frame_executable),
            Some(l.frame_instr_ptr),
            Some(l.frame_owner),
            l.frame_is_entry,
            l.frame_tlbc_index,
        ];
        // Every offset is under 1024 (`Layout::plausible`).
        let len = fields.iter().flatten().max().copied().unwrap_or(0) as usize + 8;
        let mut buf = [0u8; 1032];
        let raw = &mut buf[..len];
        mem.read(addr, raw).map_err(PyError::Memory)?;
        let owner = raw[l.frame_owner as usize];
        if owner > l.max_owner {
            return Err(PyError::Torn("bad frame owner"));
        }
        let previous = word(raw, l.frame_previous);
        if l.shim_owner.is_some_and(|s| owner >= s) {
            let shim = RawFrame {
                code: 0,
                instr: 0,
                entry: false,
                tlbc_index: 0,
            };
            return Ok((shim, previous));
        }
        let frame = RawFrame {
            code: word(raw, l.frame_executable) & !l.executable_tag_bits,
            instr: word(raw, l.frame_instr_ptr),
            entry: l.frame_is_entry.is_some_and(|off| raw[off as usize] != 0),
            tlbc_index: l.frame_tlbc_index.map_or(0, |at| int(raw, at)),
        };
        Ok((frame, previous))
    }

    /// The second pass of `stack`: what each of `codes` shows, their headers read in one
    /// go. A header that cannot be read, or is not a code object's, is an error in its
    /// place.
    fn code_infos(&mut self, mem: &dyn Memory) -> Vec<Result<Arc<CodeInfo>, PyError>> {
        let len = self.layout.code_adaptive as usize;
        let mut headers = std::mem::take(&mut self.headers);
        headers.resize(self.codes.len() * len, 0);
        let mut reads: Vec<(u64, &mut [u8])> = self
            .codes
            .iter()
            .copied()
            .zip(headers.chunks_mut(len))
            .collect();
        let mut read = vec![false; reads.len()];
        let mut next = 0;
        while next < reads.len() {
            let filled = mem.read_each(&mut reads[next..]);
            read[next..next + filled].fill(true);
            // The one after those could not be read: the rest go on without it.
            next += filled + 1;
        }
        drop(reads);
        let codes = std::mem::take(&mut self.codes);
        let infos = (codes.iter().zip(headers.chunks(len)))
            .zip(read)
            .map(|((&code, header), read)| match read {
                true => self.code_info(mem, code, header),
                false => Err(PyError::Torn("code object unreadable")),
            })
            .collect();
        self.codes = codes;
        self.headers = headers;
        infos
    }

    /// The third pass of `stack`: one frame, of code object `info`.
    fn frame(&self, mem: &dyn Memory, raw: &RawFrame, info: &CodeInfo) -> Result<PyFrame, PyError> {
        let base = self.bytecode_base(mem, raw.code, raw.tlbc_index)?;
        let instr = raw.instr;
        // 3.11/3.12's prev_instr is one unit before the start until the first instruction runs.
        let index = if instr.wrapping_add(2) == base {
            0
        } else {
            instr.wrapping_sub(base) / 2
        };
        if instr.wrapping_add(2) != base && (instr < base || index >= info.units) {
            return Err(PyError::Torn("instruction pointer outside its code object"));
        }
        let line = linetable::line_for(&info.linetable, info.first_line, index);
        let frame = Frame {
            function: info.name.clone(),
            module: String::new(),
            file: Some(info.file.clone()),
            line: line.or(Some(info.first_line)),
            kind: FrameKind::Python,
        };
        Ok(PyFrame {
            frame,
            entry: raw.entry,
            bytecode: base..base.wrapping_add(info.units.wrapping_mul(2)),
            instr,
        })
    }

    /// Where the bytecode a frame runs starts: the code object's own copy, or on 3.14t
    /// the thread-local copy `co_tlbc->entries[frame->tlbc_index]`.
    fn bytecode_base(&self, mem: &dyn Memory, code: u64, tlbc_index: u32) -> Result<u64, PyError> {
        let l = &self.layout;
        let own = code.wrapping_add(l.code_adaptive);
        let (Some(tlbc), Some(_)) = (l.code_tlbc, l.frame_tlbc_index) else {
            return Ok(own);
        };
        let index = u64::from(tlbc_index);
        if index == 0 {
            return Ok(own);
        }
        let array = mem
            .read_u64(code.wrapping_add(tlbc))
            .map_err(PyError::Memory)?;
        let size = mem.read_u64(array).map_err(PyError::Memory)?;
        if index >= size {
            return Err(PyError::Torn("thread-local bytecode index out of range"));
        }
        mem.read_u64(array.wrapping_add(8).wrapping_add(index.wrapping_mul(8)))
            .map_err(PyError::Memory)
    }

    /// What code object `code`, whose header is `raw`, shows: from the cache when it is
    /// the object cached at that address, else read (its names and line table).
    fn code_info(
        &mut self,
        mem: &dyn Memory,
        code: u64,
        raw: &[u8],
    ) -> Result<Arc<CodeInfo>, PyError> {
        let l = &self.layout;
        if word(raw, l.ob_type) != self.types.code {
            return Err(PyError::Torn("frame does not run a code object"));
        }
        let key = CodeKey {
            addr: code,
            name: word(raw, l.code_qualname),
            file: word(raw, l.code_filename),
            linetable: word(raw, l.code_linetable),
        };
        if let Some(info) = self.code.get(&key) {
            return Ok(info.clone());
        }
        let name = match read_str(mem, l, &self.types, key.name) {
            Ok(n) if !n.is_empty() => n,
            _ => read_str(mem, l, &self.types, word(raw, l.code_name))?,
        };
        let info = Arc::new(CodeInfo {
            name,
            file: read_str(mem, l, &self.types, key.file)?,
            first_line: int(raw, l.code_firstlineno),
            linetable: read_bytes(mem, l, &self.types, key.linetable)?,
            units: word(raw, l.object_header),
        });
        if self.code.len() >= MAX_CACHED_CODE {
            self.code.clear();
        }
        self.code.insert(key, info.clone());
        Ok(info)
    }

    /// The address of the GIL the main interpreter (`main_interp`) uses.
    pub fn gil_address(&self, mem: &dyn Memory, main_interp: u64) -> Option<u64> {
        match self.layout.gil {
            GilAt::Runtime(off) => Some(self.runtime.wrapping_add(off)),
            GilAt::InterpPointer(off) => mem
                .read_u64(main_interp.wrapping_add(off))
                .ok()
                .filter(|&g| g != 0),
        }
    }

    /// The thread state holding the GIL at `gil`, when the build has a GIL and it is
    /// enabled and taken.
    pub fn gil_holder_tstate(&self, mem: &dyn Memory, gil: u64) -> Option<u64> {
        let l = &self.layout;
        if let Some(enabled) = l.gil_enabled
            && mem.read_i32(gil.wrapping_add(enabled)).ok()? == 0
        {
            return None;
        }
        if mem.read_i32(gil.wrapping_add(l.gil_locked)).ok()? == 0 {
            return None;
        }
        mem.read_u64(gil.wrapping_add(l.gil_holder))
            .ok()
            .filter(|&t| t != 0)
    }
}

/// One interpreter frame's fields, as the first pass of a stack walk reads them.
struct RawFrame {
    /// The code object it runs; 0 for an entry shim.
    code: u64,
    /// Its next (3.13+) or last (3.11, 3.12) instruction.
    instr: u64,
    /// The first frame of its eval-loop call (3.11's `is_entry`).
    entry: bool,
    /// 3.14t: which thread-local copy of the bytecode it runs (0: the code object's own).
    tlbc_index: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::MemError;
    use crate::process::memory::Bytes;
    use crate::python::PythonReader;

    /// Memory made of pseudo-random words, most of them pointers back into itself, so the
    /// walk follows long garbage chains: it must end, bounded, without panicking.
    struct Noise {
        base: u64,
        bytes: Vec<u8>,
    }

    impl Memory for Noise {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            Bytes {
                base: self.base,
                bytes: &self.bytes,
            }
            .read(addr, buf)
        }
    }

    fn noise(seed: u64, base: u64, len: usize) -> Noise {
        let mut x = seed | 1;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = match x % 4 {
                0 | 1 => (base + (x >> 8) % len as u64) & !7,
                2 => (x >> 40) & 0xff,
                _ => x,
            };
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        Noise { base, bytes }
    }

    #[test]
    fn random_memory_gives_bounded_walks_not_panics() {
        let base = 0x10_0000;
        for (seed, version) in [
            (1, 0x030b07f0),
            (2, 0x030c01f0),
            (3, 0x030b02f0),
            (4, 0x030c00f0),
        ] {
            let mem = noise(seed, base, 1 << 16);
            let types = Types {
                code: base + 0x100,
                unicode: base + 0x200,
                bytes: base + 0x300,
                dict: base + 0x400,
                long: base + 0x500,
                module: base + 0x600,
            };
            let mut reader =
                PythonReader::new(Box::new(noise(seed, base, 1 << 16)), base, version, types)
                    .unwrap();
            reader.refresh_threads();
            let _ = reader.gils();
            let _ = reader.thread_names_now();
            let mut walker = Walker::new(reader.walker.layout, types, base);
            for addr in (base..base + (1 << 16)).step_by(8 * 97) {
                let stack = walker.stack(&mem, addr);
                assert!(stack.frames.len() <= MAX_DEPTH);
            }
        }
    }
}
