//! Which of the target's threads ran since the last tick, told by the kernel instead of
//! asked of every thread: one perf ring per CPU receives that CPU's context-switch records
//! (`PERF_RECORD_SWITCH_CPU_WIDE`), thread creations and exits (`task`), and the
//! `sched:sched_wakeup` tracepoint. A tick then costs a few reads per CPU plus work for the
//! threads that actually ran, however many threads sit parked.
//!
//! Why CPU-wide rings rather than one event per thread: per-thread events cost a file
//! descriptor and a ring per thread (a thousand threads, a thousand mmaps), miss threads
//! created between listing and opening, and put perf's per-task context switch on every
//! target switch; CPU-wide rings cost O(CPUs) whatever the thread count, at the price of
//! also receiving (and discarding) other processes' switches — a few thousand small records
//! per second on a busy machine. They need CAP_PERFMON (or root, or
//! `perf_event_paranoid` ≤ 0); without it the sampler polls schedstat instead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use perf_event_open_sys::bindings as pb;

use super::perf::{self, PerfError, monotonic_ns, u32_at, u64_at};
use crate::process::{NamedStat, ThreadStat};
use crate::profile::parallelism::Occupancy;

/// What happened to the target's threads between two drains.
#[derive(Debug, Default)]
pub struct Activity {
    /// Threads that were on a CPU at some moment since the previous drain.
    pub ran: HashSet<i32>,
    /// Threads woken since they last slept that have not had a CPU since: nanoseconds of
    /// the interval they spent runnable but waiting.
    pub woken_waiting: HashMap<i32, u64>,
    /// Threads created and exited since the previous drain.
    pub born: Vec<i32>,
    pub exited: Vec<i32>,
    /// Records were dropped (a ring overflowed): this interval's facts are incomplete.
    pub lost: bool,
    /// The threads on a CPU at the instant `drain` was given (one displaced by parprof
    /// counts as on its CPU).
    pub on_cpu_at: HashSet<i32>,
}

/// One process's view of the context switches, wakeups and thread births/exits that the
/// shared per-CPU rings deliver.
pub struct SwitchLog {
    pid: i32,
    feed: Arc<Mutex<Feed>>,
    /// This log's place in the feed.
    reader: u64,
    /// The target thread each CPU is running (by its latest switch record), if any.
    on_cpu: Vec<Option<i32>>,
    /// parprof's own pid: its threads' switches say which target threads it displaced.
    own_pid: i32,
    /// The target's threads, kept up to date from fork and exit records.
    threads: HashSet<i32>,
    /// Threads woken and not yet switched in: when they were woken (CLOCK_MONOTONIC ns).
    waking: HashMap<i32, u64>,
    /// Threads runnable but off a CPU: woken, or preempted (not by parprof).
    queued: HashSet<i32>,
    /// Slots of `on_cpu` holding a target thread.
    running: usize,
    /// Threads placed on a CPU from their stat file rather than a switch record: until
    /// their first record they may be on another CPU than the one placed.
    placed: HashSet<i32>,
    /// How many threads ran at once, for how long, up to `accounted_ns`.
    occupancy: Occupancy,
    accounted_ns: u64,
    last_drain_ns: u64,
    /// Records taken from the feed, reused each drain.
    scratch: Vec<Record>,
}

/// Pages per ring (a power of two): 256 KiB holds ~5000 switch records, a 10 ms tick's
/// worth at half a million context switches per second.
const RING_PAGES: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Event {
    SwitchIn,
    /// Switched out, by preemption or not, with the process switched in after it.
    SwitchOut {
        preempted: bool,
        next_pid: i32,
    },
    Wakeup(i32),
    Fork,
    Exit,
    /// A ring dropped records: what follows is incomplete.
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    time: u64,
    cpu: usize,
    pid: i32,
    tid: i32,
    event: Event,
}

impl SwitchLog {
    /// The log of `pid`, reading the rings every log of this parprof shares (opened for
    /// every online CPU if none is open); its threads are then told with `reset_threads`.
    pub fn open(pid: i32) -> Result<SwitchLog, PerfError> {
        Ok(SwitchLog::over(pid, Feed::shared()?))
    }

    /// The log of `pid` reading `feed` from now on.
    fn over(pid: i32, feed: Arc<Mutex<Feed>>) -> Self {
        let (reader, max_cpu) = {
            let mut f = feed.lock().unwrap_or_else(PoisonError::into_inner);
            (f.join(), f.max_cpu)
        };
        SwitchLog {
            pid,
            feed,
            reader,
            on_cpu: vec![None; max_cpu],
            own_pid: std::process::id() as i32,
            threads: HashSet::new(),
            waking: HashMap::new(),
            queued: HashSet::new(),
            running: 0,
            placed: HashSet::new(),
            occupancy: Occupancy::default(),
            accounted_ns: monotonic_ns(),
            last_drain_ns: monotonic_ns(),
            scratch: Vec::new(),
        }
    }

    /// Everything recorded since the previous drain, and which threads were on a CPU at
    /// `instant_ns` (a tick's, just past): each CPU's thread before its first record after
    /// the instant, or now if it has none.
    pub fn drain(&mut self, instant_ns: u64) -> Activity {
        let now = monotonic_ns();
        let mut act = Activity::default();
        let mut records = std::mem::take(&mut self.scratch);
        records.clear();
        self.feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(self.reader, &mut records);
        for cpu in self.on_cpu.iter().flatten() {
            act.ran.insert(*cpu);
        }
        let mut at_instant: Vec<Option<Option<i32>>> = vec![None; self.on_cpu.len()];
        for r in &records {
            act.lost |= matches!(r.event, Event::Lost);
            if !act.lost {
                self.account_until(r.time);
            }
            if r.time > instant_ns
                && let Some(slot @ None) = at_instant.get_mut(r.cpu)
            {
                *slot = Some(self.on_cpu[r.cpu]);
            }
            self.apply(r, &mut act);
        }
        act.on_cpu_at = (at_instant.iter().zip(&self.on_cpu))
            .filter_map(|(then, now)| then.unwrap_or(*now))
            .collect();
        if act.lost {
            // Some switches are missing: the counts of this interval are not known.
            self.accounted_ns = self.accounted_ns.max(now);
        } else {
            self.account_until(now);
        }
        for cpu in self.on_cpu.iter().flatten() {
            act.ran.insert(*cpu);
        }
        let since = self.last_drain_ns;
        for (&tid, &woken) in &self.waking {
            if !act.ran.contains(&tid) {
                act.woken_waiting
                    .insert(tid, now.saturating_sub(woken.max(since)).max(1));
            }
        }
        self.last_drain_ns = now;
        self.scratch = records;
        act
    }

    /// Count the time since the last record with the threads on a CPU and queued then.
    fn account_until(&mut self, t: u64) {
        if t > self.accounted_ns {
            let runnable = self.running + self.queued.len();
            self.occupancy
                .add(self.running, runnable, t - self.accounted_ns);
            self.accounted_ns = t;
        }
    }

    /// How many of the target's threads ran at once, for how long, since last taken.
    pub fn take_occupancy(&mut self) -> Occupancy {
        std::mem::take(&mut self.occupancy)
    }

    fn set_on_cpu(&mut self, cpu: usize, tid: Option<i32>) {
        self.running -= self.on_cpu[cpu].is_some() as usize;
        self.running += tid.is_some() as usize;
        self.on_cpu[cpu] = tid;
        if let Some(t) = tid {
            self.queued.remove(&t);
        }
    }

    /// A record of `tid` on `cpu`: if it was placed from its stat file, the place no longer
    /// stands (it may have been another CPU's).
    fn unplace(&mut self, tid: i32, cpu: usize) {
        if self.placed.is_empty() || !self.placed.remove(&tid) {
            return;
        }
        for c in 0..self.on_cpu.len() {
            if c != cpu && self.on_cpu[c] == Some(tid) {
                self.set_on_cpu(c, None);
            }
        }
    }

    fn apply(&mut self, r: &Record, act: &mut Activity) {
        let ours = r.pid == self.pid;
        if ours {
            self.unplace(r.tid, r.cpu);
        }
        match r.event {
            // parprof borrowing a CPU leaves it with the target thread it displaced, if any.
            Event::SwitchIn if r.pid == self.own_pid => {}
            Event::SwitchIn => {
                self.set_on_cpu(r.cpu, ours.then_some(r.tid));
                if ours {
                    act.ran.insert(r.tid);
                    self.waking.remove(&r.tid);
                }
            }
            Event::SwitchOut {
                preempted,
                next_pid,
            } => {
                // A thread that parprof itself displaced still counts as on its CPU: without
                // parprof it would be running, and the tick must describe that program.
                if ours && preempted && next_pid == self.own_pid {
                    self.set_on_cpu(r.cpu, Some(r.tid));
                } else {
                    self.set_on_cpu(r.cpu, None);
                    if ours && preempted {
                        self.queued.insert(r.tid);
                    } else {
                        self.queued.remove(&r.tid);
                    }
                }
                if ours {
                    act.ran.insert(r.tid);
                }
            }
            Event::Wakeup(wakee) => {
                if self.threads.contains(&wakee) && !self.on_cpu.contains(&Some(wakee)) {
                    self.waking.entry(wakee).or_insert(r.time);
                    self.queued.insert(wakee);
                }
            }
            Event::Fork if ours && r.tid != r.pid && self.threads.insert(r.tid) => {
                act.born.push(r.tid)
            }
            Event::Exit if ours && self.threads.remove(&r.tid) => {
                self.waking.remove(&r.tid);
                self.queued.remove(&r.tid);
                act.exited.push(r.tid);
            }
            Event::Fork | Event::Exit | Event::Lost => {}
        }
    }

    /// Whether `tid` is on a CPU as of the last drain (or was displaced from one by parprof).
    pub fn on_cpu(&self, tid: i32) -> bool {
        self.on_cpu.contains(&Some(tid))
    }

    /// Forget a thread the sampler found gone (its exit record may have been lost).
    pub fn forget(&mut self, tid: i32) {
        self.threads.remove(&tid);
        self.waking.remove(&tid);
        self.queued.remove(&tid);
        self.placed.remove(&tid);
        for c in 0..self.on_cpu.len() {
            if self.on_cpu[c] == Some(tid) {
                self.set_on_cpu(c, None);
            }
        }
    }

    /// Start from a thread list (at open, after an exec, and after lost records). A thread
    /// running now has no switch record until it leaves its CPU, which for a lone busy
    /// thread may be seconds away: it is placed on the CPU its stat file names, if no
    /// record placed another thread there. Returns what the stat files said of the
    /// threads found asleep, which holds until the records say they ran or were woken.
    pub fn reset_threads(&mut self, tids: &[i32]) -> HashMap<i32, NamedStat> {
        self.threads = tids.iter().copied().collect();
        self.waking.retain(|tid, _| self.threads.contains(tid));
        self.queued.retain(|tid| self.threads.contains(tid));
        for cpu in 0..self.on_cpu.len() {
            if self.on_cpu[cpu].is_some_and(|t| !self.threads.contains(&t)) {
                self.set_on_cpu(cpu, None);
            }
        }
        let mut asleep = HashMap::new();
        for &tid in tids {
            if self.on_cpu.contains(&Some(tid)) {
                continue;
            }
            let Ok(named) = ThreadStat::read_named(self.pid, tid) else {
                continue;
            };
            let stat = named.stat;
            let cpu = usize::try_from(stat.processor).ok();
            match cpu.filter(|&c| stat.state == 'R' && c < self.on_cpu.len()) {
                Some(c) if self.on_cpu[c].is_none() => {
                    self.set_on_cpu(c, Some(tid));
                    self.placed.insert(tid);
                }
                Some(_) => {
                    self.queued.insert(tid);
                }
                None if stat.state != 'R' => {
                    asleep.insert(tid, named);
                }
                None => {}
            }
        }
        asleep
    }
}

impl Drop for SwitchLog {
    fn drop(&mut self) {
        self.feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .leave(self.reader);
    }
}

/// The per-CPU rings, opened once for every process parprof follows (twenty followed
/// children cost two rings on two CPUs, not forty), each record read and parsed once. A log
/// reads the records that arrive after it joined; records every log has read are dropped.
struct Feed {
    rings: Vec<Ring>,
    /// Where the woken thread's id sits in a `sched_wakeup` raw record, when the
    /// tracepoint could be opened.
    wakee_offset: Option<usize>,
    /// CPUs are numbered below this.
    max_cpu: usize,
    buf: Vec<u8>,
    /// Records some reader has yet to read; the first is record number `first`.
    records: VecDeque<Record>,
    first: u64,
    /// Each reader's next record number.
    readers: HashMap<u64, u64>,
    next_reader: u64,
}

impl Feed {
    /// The feed the logs of this parprof share, opened if no log holds one: it is closed
    /// (its rings released) when the last log is dropped.
    fn shared() -> Result<Arc<Mutex<Feed>>, PerfError> {
        static SHARED: Mutex<Weak<Mutex<Feed>>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(feed) = slot.upgrade() {
            return Ok(feed);
        }
        let feed = Arc::new(Mutex::new(Feed::open()?));
        *slot = Arc::downgrade(&feed);
        Ok(feed)
    }

    /// Rings for every online CPU.
    fn open() -> Result<Feed, PerfError> {
        let cpus = perf::online_cpus()?;
        let wakeup = wakeup_tracepoint();
        let mut rings = Vec::with_capacity(cpus.len());
        let mut wakee_offset = wakeup.map(|(_, off)| off);
        for &cpu in &cpus {
            let mut ring = Ring::open(cpu)?;
            if let Some((id, _)) = wakeup {
                // Without the tracepoint, woken threads that wait for a CPU keep their
                // previous state until they run: a loss of detail, not of correctness.
                if ring.add_wakeups(id).is_err() {
                    wakee_offset = None;
                }
            }
            rings.push(ring);
        }
        let max_cpu = cpus.iter().max().map_or(0, |c| c + 1);
        Ok(Feed::over(rings, wakee_offset, max_cpu))
    }

    fn over(rings: Vec<Ring>, wakee_offset: Option<usize>, max_cpu: usize) -> Feed {
        Feed {
            rings,
            wakee_offset,
            max_cpu,
            buf: Vec::new(),
            records: VecDeque::new(),
            first: 0,
            readers: HashMap::new(),
            next_reader: 0,
        }
    }

    fn end(&self) -> u64 {
        self.first + self.records.len() as u64
    }

    fn join(&mut self) -> u64 {
        let id = self.next_reader;
        self.next_reader += 1;
        self.readers.insert(id, self.end());
        id
    }

    fn leave(&mut self, reader: u64) {
        self.readers.remove(&reader);
        self.trim();
    }

    /// Read the rings, then append to `out` what `reader` has not read yet. A batch with
    /// dropped records starts with a `Lost` record.
    fn read(&mut self, reader: u64, out: &mut Vec<Record>) {
        let mut batch = Vec::new();
        let mut lost = false;
        for ring in &mut self.rings {
            lost |= ring.read(&mut self.buf, self.wakee_offset, &mut batch);
        }
        // Rings are per CPU; a wakeup on one CPU and the switch-in it causes on another
        // must be seen in the order they happened.
        batch.sort_by_key(|r| r.time);
        if lost {
            let time = batch.first().map_or_else(monotonic_ns, |r| r.time);
            self.records.push_back(Record {
                time,
                cpu: 0,
                pid: 0,
                tid: 0,
                event: Event::Lost,
            });
        }
        self.records.extend(batch);
        let end = self.end();
        if let Some(next) = self.readers.get_mut(&reader) {
            let from = next.saturating_sub(self.first) as usize;
            out.extend(self.records.range(from..));
            *next = end;
        }
        self.trim();
    }

    /// Drop the records every reader has read.
    fn trim(&mut self) {
        let oldest = self.readers.values().copied().min().unwrap_or(self.end());
        let read_by_all = (oldest.saturating_sub(self.first) as usize).min(self.records.len());
        self.records.drain(..read_by_all);
        self.first += read_by_all as u64;
    }
}

/// One CPU's ring: the dummy switch/task event, with the wakeup tracepoint's output
/// redirected into it.
struct Ring {
    cpu: usize,
    ring: perf::Ring,
    wakeup_fd: Option<OwnedFd>,
}

impl Ring {
    fn open(cpu: usize) -> Result<Ring, PerfError> {
        let mut attr = perf::base_attr();
        attr.type_ = pb::PERF_TYPE_SOFTWARE;
        attr.config = pb::PERF_COUNT_SW_DUMMY as u64;
        attr.set_context_switch(1);
        attr.set_task(1);
        let fd = perf::open(&mut attr, -1, cpu as i32)?;
        Ok(Ring {
            cpu,
            ring: perf::Ring::map(fd, RING_PAGES)?,
            wakeup_fd: None,
        })
    }

    fn add_wakeups(&mut self, tracepoint_id: u64) -> Result<(), PerfError> {
        let mut attr = perf::base_attr();
        attr.type_ = pb::PERF_TYPE_TRACEPOINT;
        attr.config = tracepoint_id;
        attr.sample_period = 1;
        attr.sample_type |= pb::PERF_SAMPLE_RAW as u64;
        let fd = perf::open(&mut attr, -1, self.cpu as i32)?;
        perf::redirect(&fd, self.ring.fd())?;
        self.wakeup_fd = Some(fd);
        Ok(())
    }

    /// Append this ring's new records to `out`; true if the kernel dropped some.
    fn read(
        &mut self,
        buf: &mut Vec<u8>,
        wakee_offset: Option<usize>,
        out: &mut Vec<Record>,
    ) -> bool {
        let mut lost = false;
        self.ring.read(buf, |r| {
            lost |= parse_record(r, self.cpu, wakee_offset, out)
        });
        lost
    }
}

/// Parse one of a ring's records into `out`; true if it is a `LOST` record.
fn parse_record(
    record: perf::RawRecord<'_>,
    cpu: usize,
    wakee_offset: Option<usize>,
    out: &mut Vec<Record>,
) -> bool {
    let perf::RawRecord {
        kind,
        misc,
        bytes: rec,
    } = record;
    // Every record ends with the sample id (pid, tid, time); samples start with it.
    let trailer = |r: &[u8]| {
        Some((
            u32_at(r, r.len() - 16)? as i32,
            u32_at(r, r.len() - 12)? as i32,
            u64_at(r, r.len() - 8)?,
        ))
    };
    let parsed = match kind {
        pb::PERF_RECORD_SWITCH_CPU_WIDE if rec.len() >= 32 => {
            trailer(rec).map(|(pid, tid, time)| {
                let misc = misc as u32;
                let out = misc & pb::PERF_RECORD_MISC_SWITCH_OUT != 0;
                Record {
                    time,
                    cpu,
                    pid,
                    tid,
                    event: if out {
                        Event::SwitchOut {
                            preempted: misc & pb::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0,
                            next_pid: u32_at(rec, 8).unwrap_or(0) as i32,
                        }
                    } else {
                        Event::SwitchIn
                    },
                }
            })
        }
        pb::PERF_RECORD_FORK | pb::PERF_RECORD_EXIT if rec.len() >= 32 => (|| {
            let (pid, tid, time) = (
                u32_at(rec, 8)? as i32,
                u32_at(rec, 16)? as i32,
                u64_at(rec, 24)?,
            );
            let event = if kind == pb::PERF_RECORD_FORK {
                Event::Fork
            } else {
                Event::Exit
            };
            Some(Record {
                time,
                cpu,
                pid,
                tid,
                event,
            })
        })(),
        pb::PERF_RECORD_SAMPLE => (|| {
            // pid, tid, time, then the raw tracepoint data (u32 size, bytes).
            let (pid, tid, time) = (
                u32_at(rec, 8)? as i32,
                u32_at(rec, 12)? as i32,
                u64_at(rec, 16)?,
            );
            let wakee = u32_at(rec, 28 + wakee_offset?)? as i32;
            Some(Record {
                time,
                cpu,
                pid,
                tid,
                event: Event::Wakeup(wakee),
            })
        })(),
        pb::PERF_RECORD_LOST | pb::PERF_RECORD_LOST_SAMPLES => return true,
        _ => None,
    };
    out.extend(parsed);
    false
}

/// The `sched:sched_wakeup` tracepoint's id and the offset of the woken thread's id in its
/// raw record, from tracefs.
fn wakeup_tracepoint() -> Option<(u64, usize)> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| {
            let dir = format!("{root}/events/sched/sched_wakeup");
            let id = std::fs::read_to_string(format!("{dir}/id"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let format = std::fs::read_to_string(format!("{dir}/format")).ok()?;
            Some((id, field_offset(&format, "pid")?))
        })
}

/// The offset of `field` in a tracefs event format (`field:pid_t pid;\toffset:24;...`).
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.strip_prefix("field:")?;
        if decl.rsplit(' ').next()? != field {
            return None;
        }
        parts.next()?.trim().strip_prefix("offset:")?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_counts_threads_on_a_cpu_and_queued_between_records() {
        let mut log = SwitchLog::over(100, Arc::new(Mutex::new(Feed::over(Vec::new(), None, 2))));
        log.reset_threads(&[]);
        log.threads = [101, 102].into();
        log.accounted_ns = 0;
        let own_pid = log.own_pid;
        let mut act = Activity::default();
        let out = |preempted, next_pid| Event::SwitchOut {
            preempted,
            next_pid,
        };
        for (time, cpu, tid, event) in [
            (10, 0, 101, Event::SwitchIn),
            (20, 1, 102, Event::SwitchIn),
            // Displaced by parprof: still on its CPU.
            (30, 0, 101, out(true, own_pid)),
            // Preempted by another process: queued for a CPU.
            (40, 1, 102, out(true, 999)),
            (50, 1, 102, Event::SwitchIn),
        ] {
            let r = Record {
                time,
                cpu,
                pid: 100,
                tid,
                event,
            };
            log.account_until(r.time);
            log.apply(&r, &mut act);
        }
        log.account_until(60);
        let o = log.take_occupancy();
        assert_eq!(o.on_cpu_ns, vec![10, 10 + 10, 20 + 10]);
        assert_eq!(o.runnable_ns, vec![10, 10, 20 + 10 + 10]);
        assert_eq!(log.take_occupancy(), Occupancy::default());
    }

    #[test]
    fn every_log_reads_each_record_once_from_where_it_joined() {
        let mut feed = Feed::over(Vec::new(), None, 1);
        let record = |time| Record {
            time,
            cpu: 0,
            pid: 1,
            tid: 1,
            event: Event::SwitchIn,
        };
        let times = |out: &[Record]| out.iter().map(|r| r.time).collect::<Vec<_>>();
        let a = feed.join();
        feed.records.extend([record(1), record(2)]);
        let b = feed.join();
        feed.records.push_back(record(3));
        let mut out = Vec::new();
        feed.read(a, &mut out);
        assert_eq!(times(&out), [1, 2, 3]);
        // Read by a, not yet by b: kept for b.
        assert_eq!(times(&Vec::from(feed.records.clone())), [3]);
        out.clear();
        feed.read(b, &mut out);
        assert_eq!(times(&out), [3]);
        assert!(feed.records.is_empty());
        out.clear();
        feed.read(a, &mut out);
        assert!(out.is_empty(), "nothing twice");
        // A reader that leaves holds nothing back.
        feed.records.push_back(record(4));
        feed.leave(b);
        feed.read(a, &mut out);
        assert_eq!(times(&out), [4]);
        assert!(feed.records.is_empty());
    }

    #[test]
    fn wakeup_format_offset() {
        let f = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(f, "pid"), Some(24));
        assert_eq!(field_offset(f, "prio"), None);
    }

    #[test]
    fn switch_and_task_records() {
        let mut buf = Vec::new();
        // SWITCH_CPU_WIDE out: header, next_prev pid/tid, sample id (pid, tid, time).
        buf.extend(15u32.to_ne_bytes());
        buf.extend((pb::PERF_RECORD_MISC_SWITCH_OUT as u16).to_ne_bytes());
        buf.extend(32u16.to_ne_bytes());
        buf.extend(
            [
                7u32.to_ne_bytes(),
                8u32.to_ne_bytes(),
                100u32.to_ne_bytes(),
                101u32.to_ne_bytes(),
            ]
            .concat(),
        );
        buf.extend(5u64.to_ne_bytes());
        // EXIT: header, pid, ppid, tid, ptid, time, sample id.
        buf.extend(4u32.to_ne_bytes());
        buf.extend(0u16.to_ne_bytes());
        buf.extend(48u16.to_ne_bytes());
        buf.extend([100u32, 1, 102, 100].map(u32::to_ne_bytes).concat());
        buf.extend(9u64.to_ne_bytes());
        buf.extend([100u32, 102].map(u32::to_ne_bytes).concat());
        buf.extend(9u64.to_ne_bytes());
        // LOST.
        buf.extend(2u32.to_ne_bytes());
        buf.extend(0u16.to_ne_bytes());
        buf.extend(24u16.to_ne_bytes());
        buf.extend([0u64, 3].map(u64::to_ne_bytes).concat());
        let mut out = Vec::new();
        let lost: Vec<bool> = perf::records(&buf)
            .map(|r| parse_record(r, 1, Some(24), &mut out))
            .collect();
        assert_eq!(lost, [false, false, true]);
        assert_eq!(out.len(), 2);
        assert!(matches!(
            out[0],
            Record {
                pid: 100,
                tid: 101,
                time: 5,
                cpu: 1,
                event: Event::SwitchOut { .. }
            }
        ));
        assert!(matches!(
            out[1],
            Record {
                pid: 100,
                tid: 102,
                time: 9,
                event: Event::Exit,
                ..
            }
        ));
    }
}
