//! The traced process: its threads and their OS state, its memory maps and the ELF files
//! mapped there, its memory, and the brief ptrace stops used to read the registers of
//! threads that are running.
//!
//! Everything here only reads the target. The one ptrace use is `PTRACE_SEIZE` +
//! `PTRACE_INTERRUPT` + `PTRACE_GETREGS` + `PTRACE_DETACH`; nothing writes target memory or
//! registers (a test greps the source for it).

pub mod check;
mod debuginfod;
pub mod elf;
pub mod exec;
pub mod maps;
pub mod memory;
pub mod module;
pub mod page_cache;
pub mod proc;
pub mod ptrace;
pub mod regs;

pub use maps::{Mapping, Maps};
pub use memory::{MemError, Memory, ProcessMemory, StackSnapshot};
pub use proc::{NamedStat, SchedStat, Syscall, ThreadStat};
pub use regs::Regs;
