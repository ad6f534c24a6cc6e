//! The unwinder over random stack bytes and registers, with the real modules of this
//! process (their CFI, frame pointers, signal trampolines) and an anonymous executable
//! mapping without unwind info, then every pc symbolised. Input: a 2-byte mask of the
//! registers that are known, 17 register words, then the stack bytes.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use parprof::process::memory::Bytes;
use parprof::process::regs::dwarf;
use parprof::process::{Mapping, Maps, Regs};
use parprof::symbols::Symbolizer;
use parprof::unwind::{MAX_DEPTH, Unwinder};

const STACK: u64 = 0x7ff0_0000_0000;
const ANON: Mapping = Mapping {
    start: 0x10_0000,
    end: 0x20_0000,
    offset: 0,
    readable: true,
    executable: true,
    dev: String::new(),
    inode: 0,
    path: String::new(),
};

/// Loaded once: module tables are cached across inputs, as in a recording.
struct State {
    maps: Maps,
    code: Vec<(u64, u64)>,
    unwinder: Unwinder,
    symbolizer: Symbolizer,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let mut maps = Maps::read(std::process::id() as i32).expect("own maps");
        maps.mappings.push(ANON);
        maps.mappings.sort_by_key(|m| m.start);
        let code = maps
            .mappings
            .iter()
            .filter(|m| m.executable)
            .map(|m| (m.start, m.end - m.start))
            .collect();
        Mutex::new(State {
            maps,
            code,
            unwinder: Unwinder::new(),
            symbolizer: Symbolizer::new(),
        })
    })
}

fn word(data: &[u8], i: usize) -> u64 {
    data.get(i * 8..i * 8 + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mask = u16::from_le_bytes([data[0], data[1]]);
    let words = &data[2..];
    let stack = words.get(dwarf::COUNT * 8..).unwrap_or(&[]);
    let mem = Bytes {
        base: STACK,
        bytes: stack,
    };
    let mut guard = state().lock().unwrap_or_else(|e| e.into_inner());
    let s = &mut *guard;
    let len = stack.len() as u64 + 64;
    let mut regs = Regs::default();
    for r in 0..dwarf::COUNT {
        let raw = word(words, r);
        let value = match r {
            // The pc somewhere in real code, the sp in (or just past) the stack bytes.
            dwarf::RIP => {
                let (start, size) = s.code[(raw >> 48) as usize % s.code.len()];
                start + (raw & 0xffff_ffff_ffff) % size
            }
            dwarf::RSP => STACK + raw % len,
            // Other registers: stack addresses when the top bit says so, else raw values.
            _ if raw >> 63 == 1 => STACK + raw % len,
            _ => raw,
        };
        if matches!(r, dwarf::RIP | dwarf::RSP) || mask & (1 << r) != 0 {
            regs.set(r, value);
        }
    }
    let out = s.unwinder.unwind(&s.maps, &regs, &mem);
    assert!(
        !out.pcs.is_empty() && out.pcs.len() <= MAX_DEPTH,
        "{} pcs",
        out.pcs.len()
    );
    for (i, &pc) in out.pcs.iter().enumerate() {
        let frames = s.symbolizer.symbolize(&s.maps, &mem, pc, i > 0);
        assert!(!frames.is_empty());
    }
});
