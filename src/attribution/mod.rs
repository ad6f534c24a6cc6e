//! What a thread was doing in a sample — computing, waiting on a lock (which, held by
//! whom), idle, in I/O — and the wait-for graph between threads at one moment.

mod classify;
mod globals;
pub mod locks;
pub mod rules;
pub mod waitfor;

pub use classify::{Attribution, ThreadFacts, WaitOn, classify};
pub use globals::Globals;
