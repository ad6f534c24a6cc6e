//! Per-thread facts from `/proc`, read without stopping anything: the thread list, names,
//! scheduler state, the syscall a thread is blocked in (with its user stack and instruction
//! pointers) and schedstat counters.

use std::fs;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The tids of every thread of `pid`, in the order the kernel lists them.
pub fn threads(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

pub fn thread_name(pid: i32, tid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The processes thread `tid` of `pid` forked that are still its children (a child is
/// listed under the thread that forked it; needs a kernel with `CONFIG_PROC_CHILDREN`).
pub fn children(pid: i32, tid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The command line of a process, for titles and metadata.
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// From `/proc/<pid>/task/<tid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStat {
    /// R running/runnable, S sleeping, D uninterruptible, T stopped, t traced, Z zombie…
    pub state: char,
    /// Flags (PF_KTHREAD marks kernel threads).
    pub flags: u64,
    /// CPU the thread last ran on.
    pub processor: i32,
    /// Threads in the thread's process.
    pub num_threads: u32,
}

impl ThreadStat {
    pub fn read(pid: i32, tid: i32) -> io::Result<ThreadStat> {
        ThreadStat::read_named(pid, tid).map(|named| named.stat)
    }

    /// With the thread's name, which the stat line carries too: one file instead of two
    /// where both are wanted (attaching to thousands of threads).
    pub fn read_named(pid: i32, tid: i32) -> io::Result<NamedStat> {
        let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))?;
        let stat = parse_stat(&text)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))?;
        Ok(NamedStat {
            stat,
            name: stat_name(&text).to_string(),
        })
    }

    pub fn is_kernel_thread(&self) -> bool {
        const PF_KTHREAD: u64 = 0x0020_0000;
        self.flags & PF_KTHREAD != 0
    }
}

/// A thread's stat with its name (`comm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedStat {
    pub stat: ThreadStat,
    pub name: String,
}

/// The command name of a stat line: from the first `(` to the last `)`, as the kernel
/// writes it (the name may itself hold parentheses).
fn stat_name(text: &str) -> &str {
    text.split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or("", |(name, _)| name)
}

fn parse_stat(text: &str) -> Option<ThreadStat> {
    let fields = StatFields::parse(text)?;
    Some(ThreadStat {
        state: fields.state()?,
        flags: fields.number(9)?,
        processor: i32::try_from(fields.number(39)?).ok()?,
        num_threads: u32::try_from(fields.number(20)?).ok()?,
    })
}

/// The fields of a `/proc/<pid>/stat` line (a thread's or a process's) that follow the
/// command name. The name is in parentheses and may itself hold spaces and parentheses, so
/// it ends at the line's last `)`. Whatever the kernel or a corrupt read gives, this returns
/// `None` for a field it cannot find, never panics: every reader of `stat` goes through it.
#[derive(Debug)]
pub struct StatFields<'a>(Vec<&'a str>);

impl<'a> StatFields<'a> {
    /// `None` when there is no `)` closing a command name.
    pub fn parse(text: &'a str) -> Option<StatFields<'a>> {
        let (_, rest) = text.rsplit_once(')')?;
        Some(StatFields(rest.split_ascii_whitespace().collect()))
    }

    /// Field 3, the state letter.
    pub fn state(&self) -> Option<char> {
        self.0.first()?.chars().next()
    }

    /// Field `n`, numbered as in proc(5) (1 is the pid, 3 the state), as a number.
    pub fn number(&self, n: usize) -> Option<u64> {
        self.0.get(n.checked_sub(3)?)?.parse().ok()
    }
}

/// From `/proc/<pid>/task/<tid>/syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// The thread is on a CPU (or runnable): its registers change, it must be stopped to read them.
    Running,
    /// Blocked in syscall `nr`; the user-space stack pointer and instruction pointer are
    /// frozen until it returns, so it can be unwound without stopping it.
    Blocked {
        nr: i64,
        args: [u64; 6],
        sp: u64,
        pc: u64,
    },
    /// Blocked in the kernel but not in a syscall (a page fault, a ptrace stop).
    BlockedNoSyscall { sp: u64, pc: u64 },
}

impl Syscall {
    pub fn read(pid: i32, tid: i32) -> io::Result<Syscall> {
        ThreadFile::open(pid, tid, "syscall", false)?.syscall()
    }

    pub fn number(&self) -> Option<i64> {
        match self {
            Syscall::Blocked { nr, .. } => Some(*nr),
            _ => None,
        }
    }

    pub fn arg0(&self) -> Option<u64> {
        match self {
            Syscall::Blocked { args, .. } => Some(args[0]),
            _ => None,
        }
    }
}

fn parse_syscall(text: &str) -> Option<Syscall> {
    let f: Vec<&str> = text.split_whitespace().collect();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    match f.as_slice() {
        ["running"] => Some(Syscall::Running),
        ["-1", sp, pc] => Some(Syscall::BlockedNoSyscall {
            sp: hex(sp)?,
            pc: hex(pc)?,
        }),
        [nr, a0, a1, a2, a3, a4, a5, sp, pc] => Some(Syscall::Blocked {
            nr: nr.parse().ok()?,
            args: [hex(a0)?, hex(a1)?, hex(a2)?, hex(a3)?, hex(a4)?, hex(a5)?],
            sp: hex(sp)?,
            pc: hex(pc)?,
        }),
        _ => None,
    }
}

/// From `/proc/<pid>/task/<tid>/schedstat`: time on a CPU and time runnable but waiting
/// for one, both cumulative nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

impl SchedStat {
    pub fn read(pid: i32, tid: i32) -> io::Result<SchedStat> {
        ThreadFile::open(pid, tid, "schedstat", false)?.sched_stat()
    }

    fn parse(text: &str) -> SchedStat {
        let mut it = text
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        SchedStat {
            run_ns: it.next().unwrap_or(0),
            wait_ns: it.next().unwrap_or(0),
            timeslices: it.next().unwrap_or(0),
        }
    }
}

/// Raise the limit on open files as far as allowed. Each sampled thread keeps its
/// schedstat file open, and kernel sampling opens two perf events per thread and CPU: ten
/// thousand threads on two CPUs take 50,000 descriptors, where the usual soft limit is
/// 1024 and hard limits are often 20,000 or so. The hard limit is raised to the kernel's
/// `fs.nr_open` where permitted (root, CAP_SYS_RESOURCE), else the soft one to the hard.
/// Returns the limit now.
pub fn allow_a_file_per_thread() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<libc::rlim_t>().ok());
    // SAFETY: getrlimit/setrlimit read and write one valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if let Some(n) = nr_open.filter(|&n| n > limit.rlim_max) {
            let raised = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return n;
            }
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// One of a thread's files under `/proc/<pid>/task/<tid>/`, re-read from its start with
/// `pread`. Kept open, a read costs one syscall instead of three (open, read, close), which
/// matters when a thousand parked threads are checked per tick.
#[derive(Debug)]
pub enum ThreadFile {
    Open(fs::File),
    /// Opened at each read: where few threads are read per tick, a descriptor per thread
    /// is not worth its place under the open-file limit. A thread read this way for the
    /// `KEEP_AFTER`th time is one that runs often (parked threads are not read), and keeps
    /// its file from then on while fewer than `MAX_KEPT` are kept.
    Path {
        pid: i32,
        tid: i32,
        name: &'static str,
        reads: u8,
    },
    Kept(KeptFile),
}

/// Reads by path after which a thread's file is kept open.
const KEEP_AFTER: u8 = 3;
/// Files kept open at once beyond those of polling (which raises the open-file limit for a
/// file per thread): those of the threads that keep running, not of a pool of thousands
/// that each woke a few times.
pub const MAX_KEPT: usize = 256;
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// A file kept open after its thread proved busy, counted against `MAX_KEPT`.
#[derive(Debug)]
pub struct KeptFile(fs::File);

impl KeptFile {
    fn keep(f: fs::File) -> Option<KeptFile> {
        KEPT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_KEPT).then_some(n + 1)
        })
        .ok()
        .map(|_| KeptFile(f))
    }
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ThreadFile {
    /// File `name` of `tid`, kept open from the start with `keep_open`.
    pub fn open(pid: i32, tid: i32, name: &'static str, keep_open: bool) -> io::Result<ThreadFile> {
        if keep_open {
            fs::File::open(format!("/proc/{pid}/task/{tid}/{name}")).map(ThreadFile::Open)
        } else {
            Ok(ThreadFile::Path {
                pid,
                tid,
                name,
                reads: 0,
            })
        }
    }

    /// The file's text now, in `buf`. Fails once the thread has exited (ESRCH, or ENOENT
    /// when opened by path), and on an empty read.
    pub fn read<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<&'b str> {
        use std::os::unix::fs::FileExt;
        let n = match self {
            ThreadFile::Open(f) | ThreadFile::Kept(KeptFile(f)) => f.read_at(buf, 0)?,
            ThreadFile::Path {
                pid,
                tid,
                name,
                reads,
            } => {
                let f = fs::File::open(format!("/proc/{pid}/task/{tid}/{name}"))?;
                let n = f.read_at(buf, 0)?;
                *reads = reads.saturating_add(1);
                if *reads >= KEEP_AFTER
                    && let Some(kept) = KeptFile::keep(f)
                {
                    *self = ThreadFile::Kept(kept);
                }
                n
            }
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty file"));
        }
        std::str::from_utf8(&buf[..n])
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))
    }

    /// The thread's scheduler counters (a `schedstat` file).
    pub fn sched_stat(&mut self) -> io::Result<SchedStat> {
        self.read(&mut [0u8; 128]).map(SchedStat::parse)
    }

    /// The thread's state and counters (a `stat` file: at most 52 numbers and a 16-byte
    /// name, well within the buffer).
    pub fn stat(&mut self) -> io::Result<ThreadStat> {
        parse_stat(self.read(&mut [0u8; 2048])?)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
    }

    /// What the thread is doing in the kernel (a `syscall` file).
    pub fn syscall(&mut self) -> io::Result<Syscall> {
        parse_syscall(self.read(&mut [0u8; 256])?)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed syscall file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parens_in_name() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 123 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.processor, 1);
        assert_eq!(s.num_threads, 3);
        assert!(!s.is_kernel_thread());
        assert_eq!(stat_name(line), "a) b (c)");
        assert_eq!(stat_name("1234 (a"), "");
    }

    #[test]
    fn short_and_odd_stat_lines_give_none_not_a_panic() {
        let tail: Vec<String> = (4..=52).map(|n| n.to_string()).collect();
        let full = format!("1234 (a) b) (c) R {}", tail.join(" "));
        let s = parse_stat(&full).unwrap();
        assert_eq!(
            (s.state, s.flags, s.num_threads, s.processor),
            ('R', 9, 20, 39)
        );
        let fields = StatFields::parse(&full).unwrap();
        assert_eq!(fields.number(4), Some(4));
        assert_eq!(fields.number(52), Some(52));
        assert_eq!(fields.number(53), None);
        assert_eq!(fields.number(2), None, "the name is not a numbered field");

        for line in [
            "",
            "1234 a R 1 2 3",
            "1234 (a",
            "1234 (a)",
            "1234 (a)\n",
            "1234 (a)é",
            "1234 (a) R",
            "1234 (a) R 1 2 3 4 5",
        ] {
            assert_eq!(parse_stat(line), None, "{line:?}");
        }
        assert_eq!(StatFields::parse("").map(|f| f.state()), None);
        assert_eq!(StatFields::parse("1234 (a)").unwrap().state(), None);
        assert_eq!(StatFields::parse("1234 (a) R").unwrap().state(), Some('R'));
        // A field that is not a number, or one that does not fit.
        let bad = full.replace(" 9 ", " x ");
        assert_eq!(parse_stat(&bad), None);
        let huge = full.replace(" 20 ", " 99999999999 ");
        assert_eq!(parse_stat(&huge), None);
    }

    #[test]
    fn syscall_forms() {
        assert_eq!(parse_syscall("running\n"), Some(Syscall::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffc0 0x401000\n"),
            Some(Syscall::BlockedNoSyscall {
                sp: 0x7ffc0,
                pc: 0x401000
            })
        );
        let s = parse_syscall("202 0x5555 0x80 0x2 0x0 0x0 0x0 0x7ffd10 0x7f0010\n").unwrap();
        assert_eq!(s.number(), Some(202));
        assert_eq!(s.arg0(), Some(0x5555));
        assert_eq!(parse_syscall("nonsense"), None);
    }
}
