//! The README's example workload: a pool of worker threads that compute, then update shared
//! state under one mutex — the shape of many real thread pools whose speedup stalls.
//!
//!   cargo build --release --examples
//!   target/release/parprof record --threads -o lock_pool.svg -- target/release/examples/lock_pool
//!
//! Usage: lock_pool [SECONDS] [WORKERS]. Each worker reports how much of its time it spent
//! waiting for the lock, measured by itself, to compare with parprof's figures.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[inline(never)]
fn score(mut x: u64, rounds: u32) -> u64 {
    for _ in 0..rounds {
        x = black_box(x ^ (x << 13) ^ (x >> 7) ^ (x << 17));
    }
    x
}

#[inline(never)]
fn update_shared(table: &Mutex<HashMap<u64, u64>>, key: u64, waited: &mut Duration) {
    let t = Instant::now();
    let mut guard = table.lock().expect("lock");
    *waited += t.elapsed();
    // Work inside the critical section: the contention this example is about.
    let v = score(key, 40_000);
    *guard.entry(key % 1024).or_default() ^= v;
}

#[inline(never)]
fn worker(table: &Mutex<HashMap<u64, u64>>, id: u64, until: Instant) -> (Duration, Duration) {
    let (start, mut waited, mut key) = (Instant::now(), Duration::ZERO, id);
    while Instant::now() < until {
        key = score(key + 1, 60_000);
        update_shared(table, key, &mut waited);
    }
    (start.elapsed(), waited)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let workers: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let table = Mutex::new(HashMap::new());
    let until = Instant::now() + Duration::from_secs_f64(secs);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let table = &table;
                std::thread::Builder::new()
                    .name(format!("pool-{i}"))
                    .spawn_scoped(s, move || worker(table, i, until))
                    .expect("spawn")
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let (total, waited) = h.join().expect("join");
            eprintln!(
                "lock_pool: pool-{i} waited for the lock {:.0}% of its time (own clock)",
                100.0 * waited.as_secs_f64() / total.as_secs_f64()
            );
        }
    });
}
