//! The classes every sample falls into: the state column of the profile. Attribution
//! decides a sample's state; the profile, saved files and outputs count and name it, so the
//! enum lives with the profile and depends on nothing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// On a CPU running its own code.
    Compute,
    /// Blocked acquiring a lock.
    Lock,
    /// On a CPU inside a lock acquire (spinning).
    LockSpin,
    /// Idle: condvar, channel, queue, join, barrier, unknown futex waits.
    Wait,
    /// Blocked reading, writing or polling.
    Io,
    /// Sleeping on purpose (nanosleep).
    Sleep,
    /// Runnable but queued for a CPU.
    CpuWait,
    /// Anything else (page faults, unknown syscalls, stopped).
    Other,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Compute,
        State::Lock,
        State::LockSpin,
        State::Wait,
        State::Io,
        State::Sleep,
        State::CpuWait,
        State::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Compute => "compute",
            State::Lock => "lock",
            State::LockSpin => "lock_spin",
            State::Wait => "wait",
            State::Io => "io",
            State::Sleep => "sleep",
            State::CpuWait => "cpu_wait",
            State::Other => "other",
        }
    }

    pub fn from_name(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.name() == s)
    }

    /// The folded-stack leaf: `[lock]`.
    pub fn leaf(self) -> String {
        format!("[{}]", self.name())
    }
}
