//! The wait-for graph of one moment: waiter → lock → holder, and the cycles in it
//! (deadlocks). A blocked thread waits on one lock, so each thread has at most one
//! outgoing edge and a cycle is found by following edges from each thread.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// `waiter` is blocked acquiring `lock`, which `holder` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub waiter: i32,
    #[serde(serialize_with = "hex")]
    pub lock: u64,
    pub holder: i32,
}

/// Addresses go into JSON as hex strings: JSON numbers lose 64-bit precision.
pub fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// Threads `tids[i]` waits for `locks[i]`, held by `tids[i + 1]` (the last by the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub tids: Vec<i32>,
    pub locks: Vec<u64>,
}

/// Every cycle among `edges`, each once, starting at its lowest tid.
pub fn cycles(edges: &[Edge]) -> Vec<Cycle> {
    let next: BTreeMap<i32, &Edge> = edges.iter().map(|e| (e.waiter, e)).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &start in next.keys() {
        let mut path: Vec<i32> = Vec::new();
        let mut at = Some(start);
        while let Some(t) = at.filter(|t| seen.insert(*t)) {
            path.push(t);
            at = next.get(&t).map(|e| e.holder);
        }
        // The walk stopped at a thread seen before: a cycle only if it is on this path.
        if let Some(pos) = at.and_then(|a| path.iter().position(|&t| t == a)) {
            let mut tids = path[pos..].to_vec();
            let low = tids
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map_or(0, |(i, _)| i);
            tids.rotate_left(low);
            let locks = tids.iter().map(|t| next[t].lock).collect();
            out.push(Cycle { tids, locks });
        }
    }
    out
}

/// "deadlock: thread A (1) holds Y and waits for X, held by thread B (2), which waits for Y."
pub fn describe(c: &Cycle, thread: impl Fn(i32) -> String, lock: impl Fn(u64) -> String) -> String {
    let n = c.tids.len();
    let mut s = format!(
        "deadlock: {} holds {} and waits for {}",
        thread(c.tids[0]),
        lock(c.locks[n - 1]),
        lock(c.locks[0])
    );
    for i in 1..n {
        s += &format!(
            ", held by {}, which waits for {}",
            thread(c.tids[i]),
            lock(c.locks[i])
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(waiter: i32, lock: u64, holder: i32) -> Edge {
        Edge {
            waiter,
            lock,
            holder,
        }
    }

    #[test]
    fn abba_is_one_cycle_chains_are_none() {
        let edges = [
            e(11, 0xa, 10),
            e(10, 0xb, 11),
            e(12, 0xa, 10),
            e(13, 0xc, 14),
        ];
        let c = cycles(&edges);
        assert_eq!(
            c,
            vec![Cycle {
                tids: vec![10, 11],
                locks: vec![0xb, 0xa]
            }]
        );
        let text = describe(
            &c[0],
            |t| format!("thread t{t} ({t})"),
            |l| if l == 0xa { "A".into() } else { "B".into() },
        );
        assert_eq!(
            text,
            "deadlock: thread t10 (10) holds A and waits for B, held by thread t11 (11), which waits for A"
        );
    }

    #[test]
    fn three_way_cycle_and_self_wait() {
        let c = cycles(&[e(3, 0x3, 1), e(1, 0x1, 2), e(2, 0x2, 3)]);
        assert_eq!(
            c,
            vec![Cycle {
                tids: vec![1, 2, 3],
                locks: vec![0x1, 0x2, 0x3]
            }]
        );
        // A thread relocking a mutex it holds (error-checking off) waits on itself.
        let c = cycles(&[e(5, 0x9, 5)]);
        assert_eq!(
            c,
            vec![Cycle {
                tids: vec![5],
                locks: vec![0x9]
            }]
        );
        assert!(cycles(&[e(1, 0x1, 2)]).is_empty());
    }
}
