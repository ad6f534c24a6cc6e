//! The CPython reader over random memory: a version (one of the supported ones, or any),
//! the address of `_PyRuntime` and of the type objects, then the memory itself, placed at
//! address 0 so that small numbers in it are pointers into it. Detection of the layout,
//! the thread list, every thread's frame walk and the GIL holder must end, boundedly,
//! with frames or an error, and so must reading `threading`'s thread names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parprof::process::memory::Bytes;
use parprof::process::{MemError, Memory};
use parprof::python::PythonReader;
use parprof::python::offsets::Layout;
use parprof::python::strings::Types;
use parprof::python::walk::{MAX_DEPTH, Walker};

/// Owned bytes at address 0: the reader keeps its memory (`Box<dyn Memory + Send>`).
struct Owned(Vec<u8>);

impl Memory for Owned {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        Bytes {
            base: 0,
            bytes: &self.0,
        }
        .read(addr, buf)
    }
}

const VERSIONS: [u64; 6] = [
    0x030b_04f0,
    0x030c_07f0,
    0x030d_00f0,
    0x030d_05f0,
    0x030e_00f0,
    0x030e_00a1,
];

fn word(data: &[u8], i: usize) -> u64 {
    data.get(i * 8..i * 8 + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let version = VERSIONS
        .get(pick as usize % 8)
        .copied()
        .unwrap_or_else(|| word(rest, 0));
    let runtime = word(rest, 1) % 4096;
    let types = Types {
        code: word(rest, 2),
        unicode: word(rest, 3),
        bytes: word(rest, 4),
        dict: word(rest, 5),
        long: word(rest, 6),
        module: word(rest, 7),
    };
    let memory = rest.get(64..).unwrap_or(&[]).to_vec();

    let mem = Owned(memory.clone());
    let Ok(layout) = Layout::read(&mem, runtime, version) else {
        return;
    };
    let mut walker = Walker::new(layout, types, runtime);
    let (threads, interps) = walker.thread_states(&mem).unwrap_or_default();
    for t in threads.iter().take(64) {
        let stack = walker.stack(&mem, t.tstate);
        assert!(stack.frames.len() <= MAX_DEPTH);
    }
    for &interp in interps.iter().take(8) {
        let _ = walker.gil_holder_tstate(&mem, interp);
    }

    let Ok(mut reader) = PythonReader::new(Box::new(Owned(memory)), runtime, version, types) else {
        return;
    };
    let _ = reader.version();
    reader.refresh_threads();
    for t in threads.iter().take(64) {
        let _ = reader.stack(t.tid);
    }
    let _ = reader.gils();
    let _ = reader.thread_names_now();
});
