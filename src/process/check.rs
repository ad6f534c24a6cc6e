//! Checking a target before recording, so bad input gets one clear line.

use super::proc::{self, ThreadStat};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("'{0}' is not a process id (expected a positive number)")]
    NotANumber(String),
    #[error("no process with pid {0} (it may have exited)")]
    NoSuchProcess(i32),
    #[error("pid {0} is a kernel thread; parprof profiles user-space processes")]
    KernelThread(i32),
    #[error(
        "pid {0} is a zombie (it has exited and waits for its parent to reap it); nothing to profile"
    )]
    Zombie(i32),
    #[error(
        "not permitted to read process {0}: run parprof as the same user as the target with \
         kernel.yama.ptrace_scope=0 (sysctl kernel.yama.ptrace_scope=0), or as root / with CAP_SYS_PTRACE"
    )]
    Permission(i32),
}

/// Parse and check a `--pid` argument.
pub fn check_pid(arg: &str) -> Result<i32, TargetError> {
    let pid: i32 = arg
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| TargetError::NotANumber(arg.to_string()))?;
    check_process(pid)?;
    Ok(pid)
}

pub fn check_process(pid: i32) -> Result<(), TargetError> {
    let stat = ThreadStat::read(pid, pid).map_err(|_| TargetError::NoSuchProcess(pid))?;
    if stat.is_kernel_thread() {
        return Err(TargetError::KernelThread(pid));
    }
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(TargetError::Zombie(pid));
    }
    // Reading the memory map needs the same access as ptrace-reading the process.
    let maps = match super::Maps::read(pid) {
        Ok(maps) => maps,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(TargetError::Permission(pid));
        }
        Err(_) => return Err(TargetError::NoSuchProcess(pid)),
    };
    let mut probe = [0u8; 1];
    let mem = super::ProcessMemory::new(pid);
    if let Err(super::MemError::Permission) = mem.read_partial(first_readable(&maps), &mut probe) {
        return Err(TargetError::Permission(pid));
    }
    let _ = proc::threads(pid).map_err(|_| TargetError::NoSuchProcess(pid))?;
    Ok(())
}

fn first_readable(maps: &super::Maps) -> u64 {
    maps.mappings
        .iter()
        .find(|m| m.readable)
        .map_or(0, |m| m.start)
}
