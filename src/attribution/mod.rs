//! What a thread was doing in a sample: computing, waiting on a lock, idle, in I/O…

mod classify;
pub mod state;

pub use classify::classify;
pub use state::State;
