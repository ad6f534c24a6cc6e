//! Finding CPython in a target: the mapped ELF (the executable or a `libpython`, whatever its
//! file name, for embedded interpreters) that holds `_PyRuntime`, and where that module is
//! loaded, so the runtime, `Py_Version` and the type objects can be read from memory.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use object::{Object, ObjectSection, ObjectSymbol};

use super::PyError;
use super::strings::Types;
use crate::process::elf::{ElfError, ElfImage};
use crate::process::{Mapping, Maps};

/// How long to wait for a process that has just been started: the kernel may still be in
/// `execve`, or the dynamic loader may not have mapped `libpython` yet.
const LOADER_WAIT: Duration = Duration::from_secs(2);

/// Addresses (in the target) found in the module that holds the interpreter.
#[derive(Debug, Clone)]
pub struct Found {
    pub module: String,
    pub runtime: u64,
    pub py_version: u64,
    pub types: Types,
}

/// Symbol addresses of one ELF file, before relocation.
struct Symbols {
    runtime: u64,
    py_version: u64,
    code: u64,
    unicode: u64,
    bytes: u64,
    dict: u64,
    long: u64,
    module: u64,
}

/// The CPython module mapped in `pid`, if any. Modules with "python" in their name are
/// looked at first; then every other mapped file. A process caught in `execve` or before its
/// dynamic loader has mapped `libpython` is given a short while to get there.
pub fn find(pid: i32, maps: &Maps) -> Result<Option<Found>, PyError> {
    let deadline = Instant::now() + LOADER_WAIT;
    let mut fresh;
    let mut maps = maps;
    loop {
        if let Some(found) = scan(maps)? {
            return Ok(Some(found));
        }
        if !still_loading(pid, maps) || Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
        let Ok(m) = Maps::read(pid) else {
            return Ok(None);
        };
        fresh = m;
        maps = &fresh;
    }
}

fn scan(maps: &Maps) -> Result<Option<Found>, PyError> {
    let mut seen = HashSet::new();
    let mut files: Vec<&Mapping> = maps
        .mappings
        .iter()
        .filter(|m| m.is_file() && seen.insert(&m.path))
        .collect();
    files.sort_by_key(|m| !m.short_name().contains("python"));
    for m in files {
        if let Some(found) = examine(maps, m)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Whether the executable is not mapped yet (the kernel is still in `execve`), or links a
/// `libpython` that is not mapped yet (the dynamic loader has not run).
fn still_loading(pid: i32, maps: &Maps) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let exe = exe.to_string_lossy().into_owned();
    let Some(m) = maps.mappings.iter().find(|m| m.path == exe) else {
        return true;
    };
    let Ok(image) = ElfImage::of_file(maps, m) else {
        return false;
    };
    let Some(file) = image.object() else {
        return false;
    };
    file.section_by_name(".dynstr")
        .and_then(|s| s.data().ok())
        .is_some_and(|d| d.windows(9).any(|w| w == b"libpython"))
}

/// The interpreter's addresses if `m` maps the module that holds it. Files that cannot be
/// opened or are not ELF are skipped; a corrupt ELF file is an error.
fn examine(maps: &Maps, m: &Mapping) -> Result<Option<Found>, PyError> {
    let image = match ElfImage::of_file(maps, m) {
        Ok(image) => image,
        Err(ElfError::Elf(e)) => return Err(PyError::Elf(m.path.clone(), e.to_string())),
        Err(_) => return Ok(None),
    };
    let Some(syms) = image.object().as_ref().and_then(symbols) else {
        return Ok(None);
    };
    let Some(bias) = image.load_bias(maps, m) else {
        return Ok(None);
    };
    let at = |v: u64| v.wrapping_add(bias);
    // Symbols the module may lack stay 0: no object is of type 0.
    let found = |v: u64| if v == 0 { 0 } else { at(v) };
    // Caught while the loader maps the file segment by segment: not there yet.
    let mapped = |v: u64| maps.find(at(v)).is_some_and(|f| f.path == m.path);
    if !mapped(syms.runtime) || !mapped(syms.py_version) {
        return Ok(None);
    }
    Ok(Some(Found {
        module: m.short_name().to_string(),
        runtime: at(syms.runtime),
        py_version: at(syms.py_version),
        types: Types {
            code: at(syms.code),
            unicode: at(syms.unicode),
            bytes: at(syms.bytes),
            dict: found(syms.dict),
            long: found(syms.long),
            module: found(syms.module),
        },
    }))
}

fn symbols(file: &object::File) -> Option<Symbols> {
    let runtime_section = file.section_by_name(".PyRuntime").map(|s| s.address());
    let mut s = Symbols {
        runtime: runtime_section.unwrap_or(0),
        py_version: 0,
        code: 0,
        unicode: 0,
        bytes: 0,
        dict: 0,
        long: 0,
        module: 0,
    };
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        let slot = match sym.name() {
            Ok("_PyRuntime") => &mut s.runtime,
            Ok("Py_Version") => &mut s.py_version,
            Ok("PyCode_Type") => &mut s.code,
            Ok("PyUnicode_Type") => &mut s.unicode,
            Ok("PyBytes_Type") => &mut s.bytes,
            Ok("PyDict_Type") => &mut s.dict,
            Ok("PyLong_Type") => &mut s.long,
            Ok("PyModule_Type") => &mut s.module,
            _ => continue,
        };
        if *slot == 0 {
            *slot = sym.address();
        }
    }
    // Py_Version appeared in 3.11, as did the .PyRuntime section: older interpreters and
    // modules that merely import these symbols are skipped. Without the dict, int or module
    // type (never seen) only thread names are lost.
    [s.runtime, s.py_version, s.code, s.unicode, s.bytes]
        .iter()
        .all(|&a| a != 0)
        .then_some(s)
}
