//! parprof: a sampling profiler for multithreaded programs on Linux that tells, per thread,
//! where the time goes — compute, or waiting on a lock (which lock, held by whom).
//!
//! Data flows one way: `process` (reading the process) → `sample` (the tick loop) →
//! `resolve` (`unwind`, `symbols`, `python`, `attribution`) → `profile` → `output`. Imports
//! follow it: `attribution` decides a sample's `profile::State` and records lock holders in
//! the profile, while `profile` imports nothing of the crate but `frame`.

pub mod attribution;
pub mod cli;
pub mod diff_cmd;
pub mod dump;
pub mod frame;
pub mod output;
pub mod process;
pub mod profile;
pub mod progress;
pub mod python;
pub mod record;
pub mod report;
pub mod resolve;
pub mod sample;
pub mod symbols;
pub mod top;
pub mod unwind;
