//! Where things are in CPython's structures, for one target interpreter.
//!
//! 3.13 and later describe themselves: `_PyRuntime` starts with `_Py_DebugOffsets`, a table of
//! `uint64_t` offsets and sizes (CPython's `Include/internal/pycore_debug_offsets.h`, formerly
//! in `pycore_runtime.h`). The table's own layout differs per minor version, so each supported
//! minor version has a short description of its sections and fields below; every offset
//! parprof uses is then read from the target. 3.11 and 3.12 have no such table: their offsets
//! are in one small table each, taken from the release builds' debug information and checked
//! against the 3.11/3.12 headers. Both paths produce the same [`Layout`], so there is a single
//! walk for every version.

use super::PyError;
use crate::process::Memory;

/// A CPython version from `Py_Version` (`PY_VERSION_HEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PyVersion {
    pub major: u8,
    pub minor: u8,
    pub micro: u8,
    /// 0xA alpha, 0xB beta, 0xC release candidate, 0xF final.
    pub level: u8,
    pub serial: u8,
}

impl PyVersion {
    pub fn from_hex(v: u64) -> PyVersion {
        PyVersion {
            major: (v >> 24) as u8,
            minor: (v >> 16) as u8,
            micro: (v >> 8) as u8,
            level: ((v >> 4) & 0xf) as u8,
            serial: (v & 0xf) as u8,
        }
    }

    /// `3.13.0`, `3.14.0rc2`.
    pub fn text(&self) -> String {
        let pre = match self.level {
            0xa => format!("a{}", self.serial),
            0xb => format!("b{}", self.serial),
            0xc => format!("rc{}", self.serial),
            _ => String::new(),
        };
        format!("{}.{}.{}{}", self.major, self.minor, self.micro, pre)
    }
}

/// How a thread state leads to its innermost frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CurrentFrame {
    /// `tstate->current_frame` (3.13+).
    Direct(u64),
    /// `tstate->cframe->current_frame` (3.11, 3.12).
    ViaCFrame { cframe: u64, current_frame: u64 },
}

/// Where the GIL's state is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GilAt {
    /// One GIL inside `_PyRuntime` (3.11): offset of the GIL struct in the runtime.
    Runtime(u64),
    /// Per interpreter (3.12+): offset in the interpreter of the pointer to the GIL in use.
    InterpPointer(u64),
}

/// Where an instance of a Python class keeps its attributes (a class with
/// `Py_TPFLAGS_MANAGED_DICT`, as every class defined in Python is): read for
/// `threading.Thread`'s `_name` and `_native_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceDict {
    /// 3.11: a dict pointer 3 words before the object or, while it has none, a values
    /// array 4 words before it.
    PreHeader,
    /// 3.12: one word 3 words before the object: a dict, or, with its low bit set, a
    /// values array's address minus one.
    Tagged,
    /// 3.13+: a dict pointer at `dict_offset` from the object (3 words before it, 1 in
    /// free-threaded builds, which have no GC header) or, while it has none, values inline
    /// after the object's `tp_basicsize` bytes.
    Inline { dict_offset: i64 },
}

/// Offsets into plain objects (dicts, ints, types, modules, instances), for reading
/// `threading`'s registry of threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    /// `interp->modules` (3.11) or `interp->imports.modules`: `sys.modules`.
    pub interp_modules: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    /// Where a values array's pointers start (3.13 put capacity, size, embedded and valid
    /// bytes in front of them).
    pub values_start: u64,
    /// An int's `ob_size` (3.11: signed digit count) or `lv_tag` (3.12+: digit count << 3
    /// and the sign in the low bits); its 30-bit digits start at `long_digits`.
    pub long_size: u64,
    pub long_digits: u64,
    pub long_tagged: bool,
    pub type_basicsize: u64,
    pub type_flags: u64,
    /// `PyHeapTypeObject.ht_cached_keys`: the keys a class's instances share.
    pub heap_cached_keys: u64,
    pub instance_dict: InstanceDict,
}

/// What `PyHeapTypeObject` puts between its `PyTypeObject` and `ht_cached_keys` (x86_64,
/// 3.10 to 3.14): the async, number, mapping, sequence and buffer method tables (4, 36, 3,
/// 10 and 2 pointers), then `ht_name`, `ht_slots` and `ht_qualname`.
const HEAP_TYPE_CACHED_KEYS: u64 = 8 * (4 + 36 + 3 + 10 + 2 + 3);

/// `tp_basicsize` follows `tp_name`.
const TP_BASICSIZE_AFTER_NAME: u64 = 8;

/// Offsets (in bytes) into CPython's structures, and the facts about object layout that
/// the walk needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub version: PyVersion,
    pub free_threaded: bool,

    pub runtime_interpreters_head: u64,
    pub interp_next: u64,
    /// `int64_t id`: the number Python shows (`Interpreter.id`), 0 for the main interpreter.
    pub interp_id: u64,
    pub interp_threads_head: u64,

    pub gil: GilAt,
    /// Within the GIL struct.
    pub gil_locked: u64,
    pub gil_holder: u64,
    /// Within the GIL struct; free-threaded builds only (the GIL can be turned on at run time).
    pub gil_enabled: Option<u64>,

    pub tstate_next: u64,
    pub tstate_interp: u64,
    pub tstate_native_thread_id: u64,
    pub tstate_current_frame: CurrentFrame,

    pub frame_previous: u64,
    pub frame_executable: u64,
    /// `instr_ptr` (3.13+) or `prev_instr` (3.11, 3.12).
    pub frame_instr_ptr: u64,
    pub frame_owner: u64,
    /// 3.11's `is_entry` flag; later versions mark eval-loop entries with a shim frame.
    pub frame_is_entry: Option<u64>,
    /// 3.14t: index of the thread-local bytecode copy the frame runs.
    pub frame_tlbc_index: Option<u64>,
    pub frame_size: u64,
    /// Owner values at or above this are entry shims, not Python frames (None: 3.11, no shims).
    pub shim_owner: Option<u8>,
    /// The largest valid owner value.
    pub max_owner: u8,

    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    pub code_adaptive: u64,
    /// 3.14t: `co_tlbc`, the array of per-thread bytecode copies.
    pub code_tlbc: Option<u64>,

    /// Size of the object header: where `ob_size` of variable-size objects is.
    pub object_header: u64,
    pub ob_type: u64,
    pub bytes_ob_size: u64,
    pub bytes_ob_sval: u64,

    pub unicode_state: u64,
    pub unicode_length: u64,
    /// `sizeof(PyASCIIObject)`: where compact ASCII data starts.
    pub ascii_object_size: u64,
    /// `sizeof(PyCompactUnicodeObject) - sizeof(PyASCIIObject)`.
    pub compact_extra: u64,
    /// Bit position of `kind` in the state word (`interned` comes first: 2 bits, or a whole
    /// byte in 3.14's free-threaded build).
    pub state_kind_shift: u32,

    /// Low bits of `f_executable` that are tags, not address (3.14 stack references).
    pub executable_tag_bits: u64,

    pub objects: ObjectLayout,
}

/// One section of the debug-offsets table: its name and its fields, in order.
type Section = (&'static str, &'static [&'static str]);

/// The `runtime_state` section, the same in 3.13 and 3.14.
const RUNTIME_STATE: Section = (
    "runtime_state",
    &["size", "finalizing", "interpreters_head"],
);

/// The `thread_state` section, the same in 3.13 and 3.14.
const THREAD_STATE: Section = (
    "thread_state",
    &[
        "size",
        "prev",
        "next",
        "interp",
        "current_frame",
        "thread_id",
        "native_thread_id",
        "datastack_chunk",
        "status",
    ],
);

/// Sections whose fields are the same in every version that has them (3.13 to 3.15).
const PYOBJECT: Section = ("pyobject", &["size", "ob_type"]);
const TUPLE_OBJECT: Section = ("tuple_object", &["size", "ob_item", "ob_size"]);
const LIST_OBJECT: Section = ("list_object", &["size", "ob_item", "ob_size"]);
const SET_OBJECT: Section = ("set_object", &["size", "used", "table", "mask"]);
const DICT_OBJECT: Section = ("dict_object", &["size", "ma_keys", "ma_values"]);
const FLOAT_OBJECT: Section = ("float_object", &["size", "ob_fval"]);
const LONG_OBJECT: Section = ("long_object", &["size", "lv_tag", "ob_digit"]);
const BYTES_OBJECT: Section = ("bytes_object", &["size", "ob_size", "ob_sval"]);

/// `_Py_DebugOffsets` of 3.13 (identical in the GIL and free-threaded builds).
const DEBUG_OFFSETS_3_13: &[Section] = &[
    RUNTIME_STATE,
    (
        "interpreter_state",
        &[
            "size",
            "id",
            "next",
            "threads_head",
            "gc",
            "imports_modules",
            "sysdict",
            "builtins",
            "ceval_gil",
            "gil_runtime_state",
            "gil_runtime_state_enabled",
            "gil_runtime_state_locked",
            "gil_runtime_state_holder",
        ],
    ),
    THREAD_STATE,
    (
        "interpreter_frame",
        &[
            "size",
            "previous",
            "executable",
            "instr_ptr",
            "localsplus",
            "owner",
        ],
    ),
    (
        "code_object",
        &[
            "size",
            "filename",
            "name",
            "qualname",
            "linetable",
            "firstlineno",
            "argcount",
            "localsplusnames",
            "localspluskinds",
            "co_code_adaptive",
        ],
    ),
    PYOBJECT,
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    TUPLE_OBJECT,
    LIST_OBJECT,
    DICT_OBJECT,
    FLOAT_OBJECT,
    LONG_OBJECT,
    BYTES_OBJECT,
    (
        "unicode_object",
        &["size", "state", "length", "asciiobject_size"],
    ),
    ("gc", &["size", "collecting"]),
];

/// Sections of 3.14 that 3.15 keeps (3.14 added fields to their 3.13 forms).
const INTERPRETER_STATE_3_14: Section = (
    "interpreter_state",
    &[
        "size",
        "id",
        "next",
        "threads_head",
        "threads_main",
        "gc",
        "imports_modules",
        "sysdict",
        "builtins",
        "ceval_gil",
        "gil_runtime_state",
        "gil_runtime_state_enabled",
        "gil_runtime_state_locked",
        "gil_runtime_state_holder",
        "code_object_generation",
        "tlbc_generation",
    ],
);

const INTERPRETER_FRAME_3_14: Section = (
    "interpreter_frame",
    &[
        "size",
        "previous",
        "executable",
        "instr_ptr",
        "localsplus",
        "owner",
        "stackpointer",
        "tlbc_index",
    ],
);

const CODE_OBJECT_3_14: Section = (
    "code_object",
    &[
        "size",
        "filename",
        "name",
        "qualname",
        "linetable",
        "firstlineno",
        "argcount",
        "localsplusnames",
        "localspluskinds",
        "co_code_adaptive",
        "co_tlbc",
    ],
);

/// `_Py_DebugOffsets` of 3.14: adds `threads_main`, code-object and TLBC generations, frame
/// `stackpointer`/`tlbc_index`, code `co_tlbc` and a set section (later sections unused here).
const DEBUG_OFFSETS_3_14: &[Section] = &[
    RUNTIME_STATE,
    INTERPRETER_STATE_3_14,
    THREAD_STATE,
    INTERPRETER_FRAME_3_14,
    CODE_OBJECT_3_14,
    PYOBJECT,
    ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]),
    TUPLE_OBJECT,
    LIST_OBJECT,
    SET_OBJECT,
    DICT_OBJECT,
    FLOAT_OBJECT,
    LONG_OBJECT,
    BYTES_OBJECT,
    (
        "unicode_object",
        &["size", "state", "length", "asciiobject_size"],
    ),
];

/// `_Py_DebugOffsets` of 3.15, as its release candidates have it (up to the last section
/// read here). **Untested**: no 3.15 build can be had where parprof is tested. Against 3.14,
/// `thread_state` gains `base_frame`, `last_profiled_frame` and `last_profiled_frame_seq`
/// after `current_frame` and four fields at its end, `err_stackitem` and `heap_type_object`
/// are new, and `type_object` and `unicode_object` grow, so every later section moves.
/// Earlier 3.15 pre-releases had other layouts; a table read with the wrong one fails
/// [`Layout::plausible`] and Python frames are not read.
const DEBUG_OFFSETS_3_15: &[Section] = &[
    RUNTIME_STATE,
    INTERPRETER_STATE_3_14,
    (
        "thread_state",
        &[
            "size",
            "prev",
            "next",
            "interp",
            "current_frame",
            "base_frame",
            "last_profiled_frame",
            "last_profiled_frame_seq",
            "thread_id",
            "native_thread_id",
            "datastack_chunk",
            "status",
            "holds_gil",
            "gil_requested",
            "current_exception",
            "exc_state",
        ],
    ),
    ("err_stackitem", &["exc_value"]),
    INTERPRETER_FRAME_3_14,
    CODE_OBJECT_3_14,
    PYOBJECT,
    (
        "type_object",
        &[
            "size",
            "tp_name",
            "tp_repr",
            "tp_flags",
            "tp_basicsize",
            "tp_dictoffset",
        ],
    ),
    ("heap_type_object", &["size", "ht_cached_keys"]),
    TUPLE_OBJECT,
    LIST_OBJECT,
    SET_OBJECT,
    DICT_OBJECT,
    FLOAT_OBJECT,
    LONG_OBJECT,
    BYTES_OBJECT,
    (
        "unicode_object",
        &[
            "size",
            "state",
            "length",
            "asciiobject_size",
            "compactunicodeobject_size",
        ],
    ),
];

/// The header of `_Py_DebugOffsets`: cookie, version, free_threaded.
const HEADER: u64 = 24;
const COOKIE: &[u8; 8] = b"xdebugpy";

/// A debug-offsets table read from the target, looked up by section and field name.
struct Table<'a> {
    sections: &'a [Section],
    bytes: Vec<u8>,
}

impl Table<'_> {
    fn get(&self, section: &str, field: &str) -> Result<u64, PyError> {
        let mut index = 0usize;
        for (name, fields) in self.sections {
            if *name == section
                && let Some(i) = fields.iter().position(|f| *f == field)
            {
                let at = HEADER as usize + (index + i) * 8;
                let raw = self
                    .bytes
                    .get(at..at + 8)
                    .ok_or(PyError::BadOffsets("table too short"))?;
                return Ok(u64::from_le_bytes(raw.try_into().expect("8 bytes")));
            }
            index += fields.len();
        }
        Err(PyError::BadOffsets("unknown debug-offsets field"))
    }

    fn len(sections: &[Section]) -> u64 {
        HEADER + 8 * sections.iter().map(|(_, f)| f.len() as u64).sum::<u64>()
    }
}

impl Layout {
    /// The layout of the interpreter whose `_PyRuntime` is at `runtime` and whose
    /// `Py_Version` is `version_hex`.
    pub fn read(mem: &dyn Memory, runtime: u64, version_hex: u64) -> Result<Layout, PyError> {
        let version = PyVersion::from_hex(version_hex);
        match (version.major, version.minor) {
            (3, 11) => Ok(v3_11(version)),
            (3, 12) => Ok(v3_12(version)),
            (3, 13) => from_debug_offsets(mem, runtime, version, DEBUG_OFFSETS_3_13),
            (3, 14) => from_debug_offsets(mem, runtime, version, DEBUG_OFFSETS_3_14),
            (3, 15) => from_debug_offsets(mem, runtime, version, DEBUG_OFFSETS_3_15),
            _ => Err(PyError::Unsupported(version.text())),
        }
    }

    /// True for offsets that fit the structures they index: a table read with the wrong
    /// layout (or from the wrong address) fails this, and no read is ever sized from a
    /// garbage offset.
    fn plausible(&self) -> bool {
        let within = |limit: u64, offsets: &[u64]| offsets.iter().all(|&o| o < limit);
        let frame_fields = [
            self.frame_previous,
            self.frame_executable,
            self.frame_instr_ptr,
            self.frame_owner,
        ];
        let optional = [self.frame_is_entry, self.frame_tlbc_index]
            .into_iter()
            .flatten();
        let code_fields = [
            self.code_filename,
            self.code_name,
            self.code_qualname,
            self.code_linetable,
            self.code_firstlineno,
        ];
        let state_fits = self.unicode_state + 4 <= self.ascii_object_size
            && self.unicode_length + 8 <= self.ascii_object_size;
        let o = &self.objects;
        let objects_fit = within(128, &[o.dict_keys, o.dict_values, o.values_start])
            && within(128, &[o.long_size, o.long_digits])
            && o.long_size + 8 <= o.long_digits
            && within(1024, &[o.type_basicsize, o.type_flags])
            && within(2048, &[o.heap_cached_keys])
            && match o.instance_dict {
                InstanceDict::Inline { dict_offset } => (-64..0).contains(&dict_offset),
                InstanceDict::PreHeader | InstanceDict::Tagged => true,
            };
        (self.object_header == 16 || self.object_header == 32)
            && objects_fit
            && self.ob_type + 8 <= self.object_header
            && (48..512).contains(&self.frame_size)
            && within(self.frame_size, &frame_fields)
            && optional.chain(self.code_tlbc).all(|o| o < 1024)
            && (self.object_header..1024).contains(&self.code_adaptive)
            && within(self.code_adaptive, &code_fields)
            && (32..128).contains(&self.ascii_object_size)
            && state_fits
            && self.bytes_ob_size + 8 <= self.bytes_ob_sval
            && self.bytes_ob_sval < 128
            && within(
                4096,
                &[
                    self.gil_locked,
                    self.gil_holder,
                    self.gil_enabled.unwrap_or(0),
                ],
            )
            && within(
                1 << 20,
                &[
                    self.runtime_interpreters_head,
                    self.interp_next,
                    self.objects.interp_modules,
                    self.interp_id,
                    self.interp_threads_head,
                    self.tstate_next,
                    self.tstate_interp,
                    self.tstate_native_thread_id,
                    match self.tstate_current_frame {
                        CurrentFrame::Direct(o) => o,
                        CurrentFrame::ViaCFrame {
                            cframe,
                            current_frame,
                        } => cframe.max(current_frame),
                    },
                    match self.gil {
                        GilAt::Runtime(o) | GilAt::InterpPointer(o) => o,
                    },
                ],
            )
    }
}

fn from_debug_offsets(
    mem: &dyn Memory,
    runtime: u64,
    version: PyVersion,
    sections: &[Section],
) -> Result<Layout, PyError> {
    let bytes = mem
        .read_vec(runtime, Table::len(sections) as usize)
        .map_err(PyError::Memory)?;
    if &bytes[..8] != COOKIE {
        return Err(PyError::BadOffsets(
            "no xdebugpy cookie at the start of _PyRuntime",
        ));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let table_version = PyVersion::from_hex(word(8));
    if (table_version.major, table_version.minor) != (version.major, version.minor) {
        return Err(PyError::BadOffsets(
            "debug offsets disagree with Py_Version",
        ));
    }
    let free_threaded = word(16) != 0;
    let t = Table { sections, bytes };
    let newer = version.minor >= 14;
    // 3.15's table names the type fields that 3.13 and 3.14 leave to be derived.
    let (type_basicsize, heap_cached_keys) = if version.minor >= 15 {
        (
            t.get("type_object", "tp_basicsize")?,
            t.get("heap_type_object", "ht_cached_keys")?,
        )
    } else {
        (
            t.get("type_object", "tp_name")? + TP_BASICSIZE_AFTER_NAME,
            t.get("type_object", "size")? + HEAP_TYPE_CACHED_KEYS,
        )
    };
    let objects = ObjectLayout {
        interp_modules: t.get("interpreter_state", "imports_modules")?,
        dict_keys: t.get("dict_object", "ma_keys")?,
        dict_values: t.get("dict_object", "ma_values")?,
        values_start: 8,
        long_size: t.get("long_object", "lv_tag")?,
        long_digits: t.get("long_object", "ob_digit")?,
        long_tagged: true,
        type_basicsize,
        type_flags: t.get("type_object", "tp_flags")?,
        heap_cached_keys,
        instance_dict: InstanceDict::Inline {
            dict_offset: if free_threaded { -8 } else { -24 },
        },
    };
    let gil_struct = t.get("interpreter_state", "gil_runtime_state")?;
    let nonzero = |v: u64| (v != 0).then_some(v);
    let ascii_object_size = t.get("unicode_object", "asciiobject_size")?;
    let layout = Layout {
        version,
        free_threaded,
        runtime_interpreters_head: t.get("runtime_state", "interpreters_head")?,
        interp_next: t.get("interpreter_state", "next")?,
        interp_id: t.get("interpreter_state", "id")?,
        interp_threads_head: t.get("interpreter_state", "threads_head")?,
        gil: GilAt::InterpPointer(t.get("interpreter_state", "ceval_gil")?),
        // The table gives these relative to the interpreter's own `_gil`; the GIL in use may
        // be another interpreter's, so keep them relative to the GIL struct.
        gil_locked: t
            .get("interpreter_state", "gil_runtime_state_locked")?
            .wrapping_sub(gil_struct),
        gil_holder: t
            .get("interpreter_state", "gil_runtime_state_holder")?
            .wrapping_sub(gil_struct),
        gil_enabled: if free_threaded {
            Some(t.get("interpreter_state", "gil_runtime_state_enabled")?)
        } else {
            None
        },
        tstate_next: t.get("thread_state", "next")?,
        tstate_interp: t.get("thread_state", "interp")?,
        tstate_native_thread_id: t.get("thread_state", "native_thread_id")?,
        tstate_current_frame: CurrentFrame::Direct(t.get("thread_state", "current_frame")?),
        frame_previous: t.get("interpreter_frame", "previous")?,
        frame_executable: t.get("interpreter_frame", "executable")?,
        frame_instr_ptr: t.get("interpreter_frame", "instr_ptr")?,
        frame_owner: t.get("interpreter_frame", "owner")?,
        frame_is_entry: None,
        frame_tlbc_index: if newer {
            nonzero(t.get("interpreter_frame", "tlbc_index")?)
        } else {
            None
        },
        frame_size: t.get("interpreter_frame", "size")?,
        // 3.13: FRAME_OWNED_BY_CSTACK = 3; 3.14: FRAME_OWNED_BY_INTERPRETER = 3, CSTACK = 4;
        // 3.15: FRAME_OWNED_BY_INTERPRETER = 3 (CSTACK is gone).
        shim_owner: Some(3),
        max_owner: if newer { 4 } else { 3 },
        code_filename: t.get("code_object", "filename")?,
        code_name: t.get("code_object", "name")?,
        code_qualname: t.get("code_object", "qualname")?,
        code_linetable: t.get("code_object", "linetable")?,
        code_firstlineno: t.get("code_object", "firstlineno")?,
        code_adaptive: t.get("code_object", "co_code_adaptive")?,
        code_tlbc: if newer {
            nonzero(t.get("code_object", "co_tlbc")?)
        } else {
            None
        },
        object_header: t.get("pyobject", "size")?,
        ob_type: t.get("pyobject", "ob_type")?,
        bytes_ob_size: t.get("bytes_object", "ob_size")?,
        bytes_ob_sval: t.get("bytes_object", "ob_sval")?,
        unicode_state: t.get("unicode_object", "state")?,
        unicode_length: t.get("unicode_object", "length")?,
        ascii_object_size,
        // PyCompactUnicodeObject adds utf8_length and utf8 (3.12+).
        compact_extra: 16,
        // 3.14's free-threaded build makes `interned` a whole byte.
        state_kind_shift: if newer && free_threaded { 8 } else { 2 },
        executable_tag_bits: if newer { 3 } else { 0 },
        objects,
    };
    if layout.plausible() {
        Ok(layout)
    } else {
        Err(PyError::BadOffsets("implausible debug offsets"))
    }
}

/// Offsets shared by the 3.11 and 3.12 tables (same object header, code object names).
fn gil_era(version: PyVersion) -> Layout {
    Layout {
        version,
        free_threaded: false,
        runtime_interpreters_head: 40,
        interp_next: 0,
        interp_id: 0,
        interp_threads_head: 0,
        gil: GilAt::Runtime(0),
        gil_locked: 16,
        gil_holder: 8,
        gil_enabled: None,
        tstate_next: 8,
        tstate_interp: 16,
        tstate_native_thread_id: 0,
        tstate_current_frame: CurrentFrame::ViaCFrame {
            cframe: 56,
            current_frame: 0,
        },
        frame_previous: 0,
        frame_executable: 0,
        frame_instr_ptr: 56,
        frame_owner: 0,
        frame_is_entry: None,
        frame_tlbc_index: None,
        frame_size: 80,
        shim_owner: None,
        max_owner: 2,
        code_filename: 112,
        code_name: 120,
        code_qualname: 128,
        code_linetable: 136,
        code_firstlineno: 0,
        code_adaptive: 0,
        code_tlbc: None,
        object_header: 16,
        ob_type: 8,
        bytes_ob_size: 16,
        bytes_ob_sval: 32,
        unicode_state: 32,
        unicode_length: 16,
        ascii_object_size: 0,
        compact_extra: 0,
        state_kind_shift: 2,
        executable_tag_bits: 0,
        objects: ObjectLayout {
            interp_modules: 0,
            dict_keys: 32,
            dict_values: 40,
            values_start: 0,
            long_size: 16,
            long_digits: 24,
            long_tagged: false,
            type_basicsize: 32,
            type_flags: 168,
            heap_cached_keys: 0,
            instance_dict: InstanceDict::PreHeader,
        },
    }
}

/// 3.11: one GIL in `_PyRuntime.ceval.gil`; `_PyCFrame` starts with `use_tracing`; frames
/// carry `is_entry` and no shims; `PyASCIIObject` still has `wstr`; `sizeof(PyTypeObject)`
/// is 408 (3.12 adds `tp_watched`).
fn v3_11(version: PyVersion) -> Layout {
    Layout {
        interp_id: 48,
        interp_threads_head: 16,
        gil: GilAt::Runtime(360),
        tstate_native_thread_id: 160,
        tstate_current_frame: CurrentFrame::ViaCFrame {
            cframe: 56,
            current_frame: 8,
        },
        frame_previous: 48,
        frame_executable: 32,
        frame_owner: 69,
        frame_is_entry: Some(68),
        code_firstlineno: 72,
        code_adaptive: 184,
        ascii_object_size: 48,
        compact_extra: 24,
        objects: ObjectLayout {
            interp_modules: 888,
            heap_cached_keys: 408 + HEAP_TYPE_CACHED_KEYS,
            ..gil_era(version).objects
        },
        ..gil_era(version)
    }
}

/// 3.12: per-interpreter GIL pointer in `interp->ceval.gil`; `f_code` first in the frame;
/// entry shims owned by `FRAME_OWNED_BY_CSTACK` (3).
fn v3_12(version: PyVersion) -> Layout {
    Layout {
        interp_id: 8,
        interp_threads_head: 72,
        gil: GilAt::InterpPointer(384),
        tstate_native_thread_id: 144,
        frame_previous: 8,
        frame_executable: 0,
        frame_owner: 70,
        shim_owner: Some(3),
        max_owner: 3,
        code_firstlineno: 68,
        code_adaptive: 192,
        ascii_object_size: 40,
        compact_extra: 16,
        objects: ObjectLayout {
            interp_modules: 944,
            long_tagged: true,
            heap_cached_keys: 416 + HEAP_TYPE_CACHED_KEYS,
            instance_dict: InstanceDict::Tagged,
            ..gil_era(version).objects
        },
        ..gil_era(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::Bytes;

    #[test]
    fn version_text() {
        assert_eq!(PyVersion::from_hex(0x030d00f0).text(), "3.13.0");
        assert_eq!(PyVersion::from_hex(0x030e00c2).text(), "3.14.0rc2");
        assert!(PyVersion::from_hex(0x030c0100) > PyVersion::from_hex(0x030b07f0));
    }

    /// The debug offsets of a 3.13.0 release build (read from its `_PyRuntime`).
    const REAL_3_13: &[(&str, &str, u64)] = &[
        ("runtime_state", "interpreters_head", 632),
        ("interpreter_state", "next", 7264),
        ("interpreter_state", "id", 7272),
        ("interpreter_state", "threads_head", 7344),
        ("interpreter_state", "ceval_gil", 16),
        ("interpreter_state", "gil_runtime_state", 7752),
        ("interpreter_state", "gil_runtime_state_locked", 7768),
        ("interpreter_state", "gil_runtime_state_holder", 7760),
        ("thread_state", "next", 8),
        ("thread_state", "interp", 16),
        ("thread_state", "current_frame", 72),
        ("thread_state", "native_thread_id", 160),
        ("interpreter_frame", "size", 80),
        ("interpreter_frame", "previous", 8),
        ("interpreter_frame", "executable", 0),
        ("interpreter_frame", "instr_ptr", 56),
        ("interpreter_frame", "owner", 70),
        ("code_object", "filename", 112),
        ("code_object", "name", 120),
        ("code_object", "qualname", 128),
        ("code_object", "linetable", 136),
        ("code_object", "firstlineno", 68),
        ("code_object", "co_code_adaptive", 200),
        ("pyobject", "size", 16),
        ("pyobject", "ob_type", 8),
        ("bytes_object", "ob_size", 16),
        ("bytes_object", "ob_sval", 32),
        ("unicode_object", "state", 32),
        ("unicode_object", "length", 16),
        ("unicode_object", "asciiobject_size", 40),
        ("interpreter_state", "imports_modules", 7656),
        ("type_object", "size", 416),
        ("type_object", "tp_name", 24),
        ("type_object", "tp_flags", 168),
        ("dict_object", "ma_keys", 32),
        ("dict_object", "ma_values", 40),
        ("long_object", "lv_tag", 16),
        ("long_object", "ob_digit", 24),
    ];

    /// A 3.13 table: `REAL_3_13` with `changes` applied, other fields 0.
    fn table_3_13(changes: &[(&str, &str, u64)], free_threaded: u64) -> Vec<u8> {
        table(0x030d05f0, DEBUG_OFFSETS_3_13, changes, free_threaded)
    }

    /// A table of `version` laid out as `sections`: `REAL_3_13`'s values by name with
    /// `changes` applied, other fields 0.
    fn table(
        version: u64,
        sections: &[Section],
        changes: &[(&str, &str, u64)],
        free_threaded: u64,
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(COOKIE);
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&free_threaded.to_le_bytes());
        for (section, fields) in sections {
            for field in *fields {
                let find = |set: &[(&str, &str, u64)]| {
                    set.iter()
                        .find(|(s, f, _)| s == section && f == field)
                        .map(|v| v.2)
                };
                let v = find(changes).or_else(|| find(REAL_3_13)).unwrap_or(0);
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        bytes
    }

    /// Only that the 3.15 description is wired in and its moved sections are read where it
    /// puts them: no 3.15 build was at hand to take real values from.
    #[test]
    fn reads_3_15_debug_offsets_where_its_layout_puts_them() {
        let moved = [
            ("thread_state", "last_profiled_frame_seq", 999_999_999),
            ("unicode_object", "compactunicodeobject_size", 999_999_999),
        ];
        let bytes = table(0x030f00f0, DEBUG_OFFSETS_3_15, &moved, 0);
        let mem = Bytes {
            base: 0x1000,
            bytes: &bytes,
        };
        let l = Layout::read(&mem, 0x1000, 0x030f00f0).unwrap();
        assert_eq!(
            (l.tstate_native_thread_id, l.frame_owner, l.code_adaptive),
            (160, 70, 200)
        );
        assert_eq!((l.unicode_length, l.ascii_object_size), (16, 40));
        // Read with 3.14's layout, the same words are implausible.
        let as_3_14 = table(0x030e00f0, DEBUG_OFFSETS_3_15, &moved, 0);
        let mem = Bytes {
            base: 0x1000,
            bytes: &as_3_14,
        };
        assert!(Layout::read(&mem, 0x1000, 0x030e00f0).is_err());
    }

    #[test]
    fn reads_3_13_debug_offsets() {
        // The free-threaded build's differences.
        let values = [
            ("interpreter_state", "gil_runtime_state", 7760),
            ("interpreter_state", "gil_runtime_state_locked", 7784),
            ("interpreter_state", "gil_runtime_state_holder", 7776),
            ("interpreter_state", "gil_runtime_state_enabled", 0),
            ("code_object", "co_code_adaptive", 216),
            ("pyobject", "size", 32),
            ("pyobject", "ob_type", 24),
            ("bytes_object", "ob_size", 32),
            ("bytes_object", "ob_sval", 48),
            ("unicode_object", "state", 48),
            ("unicode_object", "length", 32),
            ("unicode_object", "asciiobject_size", 56),
        ];
        let bytes = table_3_13(&values, 1);
        let mem = Bytes {
            base: 0x1000,
            bytes: &bytes,
        };
        let l = Layout::read(&mem, 0x1000, 0x030d05f0).unwrap();
        assert!(l.free_threaded);
        assert_eq!(l.runtime_interpreters_head, 632);
        assert_eq!(
            (l.gil_locked, l.gil_holder, l.gil_enabled),
            (24, 16, Some(0))
        );
        assert_eq!(
            (
                l.ob_type,
                l.object_header,
                l.ascii_object_size,
                l.code_adaptive
            ),
            (24, 32, 56, 216)
        );
        assert_eq!(l.shim_owner, Some(3));
    }

    #[test]
    fn rejects_bad_cookie_version_and_values() {
        let read = |bytes: &[u8], version| Layout::read(&Bytes { base: 0, bytes }, 0, version);
        assert!(read(&table_3_13(&[], 0), 0x030d05f0).is_ok());
        let mut bytes = table_3_13(&[], 0);
        bytes[0] = b'y';
        assert!(read(&bytes, 0x030d05f0).is_err());
        assert!(read(&table_3_13(&[], 0), 0x030e00f0).is_err());
        assert!(read(&table_3_13(&[("pyobject", "size", 8)], 0), 0x030d05f0).is_err());
        assert!(
            read(
                &table_3_13(&[("interpreter_frame", "owner", 1 << 62)], 0),
                0x030d05f0
            )
            .is_err()
        );
        assert!(
            read(
                &table_3_13(&[("thread_state", "current_frame", u64::MAX)], 0),
                0x030d05f0
            )
            .is_err()
        );
        assert!(read(&table_3_13(&[], 0)[..40], 0x030d05f0).is_err());
        assert!(matches!(
            read(&[], 0x030a00f0),
            Err(PyError::Unsupported(_))
        ));
    }

    #[test]
    fn built_in_tables_are_plausible() {
        assert!(v3_11(PyVersion::from_hex(0x030b07f0)).plausible());
        assert!(v3_12(PyVersion::from_hex(0x030c01f0)).plausible());
    }
}
