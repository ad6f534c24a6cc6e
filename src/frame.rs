//! A resolved stack frame: what every output shows.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FrameKind {
    /// Machine code, resolved from an ELF symbol table or DWARF.
    Native,
    /// A function inlined into the native frame below it (from DWARF).
    Inlined,
    /// A Python function, read from the interpreter's frame chain.
    Python,
    /// Marks a stack that could not be walked to its end.
    Truncated,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frame {
    /// Demangled function name, or `module+0xoffset` when no symbol covers the address.
    pub function: String,
    /// Short module name (`libc.so.6`, `python3.13t`), empty for Python frames.
    pub module: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub kind: FrameKind,
}

impl Frame {
    pub fn native(function: impl Into<String>, module: impl Into<String>) -> Frame {
        Frame {
            function: function.into(),
            module: module.into(),
            file: None,
            line: None,
            kind: FrameKind::Native,
        }
    }

    pub fn truncated() -> Frame {
        Frame {
            function: "[truncated]".into(),
            module: String::new(),
            file: None,
            line: None,
            kind: FrameKind::Truncated,
        }
    }

    /// Where a subinterpreter's frames begin: `[interpreter 2]`, outside its outermost
    /// Python frame (the main interpreter's frames are not marked).
    pub fn interpreter(id: i64) -> Frame {
        Frame {
            function: format!("[interpreter {id}]"),
            module: String::new(),
            file: None,
            line: None,
            kind: FrameKind::Python,
        }
    }

    /// A frame of Python code (not a marker such as `[interpreter 2]`).
    pub fn is_python_code(&self) -> bool {
        self.kind == FrameKind::Python && self.file.is_some()
    }

    /// The name shown in flamegraphs and folded stacks: `function`, and for Python
    /// frames `function (file.py:line)`. Folded-format separators (`;`) are replaced.
    pub fn label(&self) -> String {
        let name = match (&self.kind, &self.file, self.line) {
            (FrameKind::Python, Some(file), Some(line)) => {
                let short = file.rsplit('/').next().unwrap_or(file);
                format!("{} ({}:{})", self.function, short, line)
            }
            _ => self.function.clone(),
        };
        name.replace(';', ":")
    }
}
