//! The shipper pool: a few threads that run the shippers of every replicated database of the
//! process, one step at a time.
//!
//! Owns the worker threads, the queue of shippers ready to step (FIFO, so one database's backlog
//! waits its turn behind the others instead of starving them) and their timers (when each wants
//! its next step: its sync interval, a retry, maintenance). A database costs a queue entry and a
//! timer, not a thread; 10 000 of them run on `THREADS` threads.
//!
//! A shipper runs on one worker at a time (a job is queued at most once, and a wake-up during a
//! step queues it again after the step). Never runs app code, never blocks a caller: `wake` only
//! marks and queues. A step that panics ends that database's replication (said in the log); the
//! worker and every other database carry on. In a forked child there are no workers (threads do
//! not survive `fork`) and nothing here is touched: the pool's lock may have been held by a
//! worker at the moment of the fork.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;

use super::Shipper;

/// Worker threads, started as jobs need them. `WALSHIP_SHIPPER_THREADS` (1..=64) overrides.
const THREADS: usize = 4;

const IDLE: u8 = 0;
const QUEUED: u8 = 1;
const RUNNING: u8 = 2;
/// Woken while running: queue again after the step.
const RUNNING_AGAIN: u8 = 3;
const DONE: u8 = 4;

/// One database's shipper in the pool.
pub(super) struct Job {
    shipper: Mutex<Option<Shipper>>,
    state: AtomicU8,
    /// Bumped at every step: a timer set by an earlier step is stale.
    generation: AtomicU64,
    finished: Mutex<bool>,
    finished_cv: Condvar,
    name: String,
}

struct Timer {
    at: Instant,
    seq: u64,
    generation: u64,
    job: Arc<Job>,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Arc<Job>>,
    timers: BinaryHeap<Reverse<Timer>>,
    seq: u64,
    threads: usize,
    /// Workers waiting for work.
    waiting: usize,
}

struct Pool {
    queue: Mutex<Queue>,
    cv: Condvar,
    owner: crate::process::Owner,
    max_threads: usize,
}

static POOL: Lazy<Pool> = Lazy::new(|| Pool {
    queue: Mutex::new(Queue::default()),
    cv: Condvar::new(),
    owner: crate::process::Owner::this(),
    max_threads: std::env::var("WALSHIP_SHIPPER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(THREADS),
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// True in the process that created the pool (false in a forked child).
fn in_owner() -> bool {
    POOL.owner.is_current()
}

impl Job {
    /// Adds a shipper to the pool; `attach` sees the job before its first step, which runs at
    /// once.
    pub fn start_with(shipper: Shipper, name: &str, attach: impl FnOnce(&Arc<Job>)) -> Arc<Job> {
        let job = Arc::new(Job {
            shipper: Mutex::new(Some(shipper)),
            state: AtomicU8::new(IDLE),
            generation: AtomicU64::new(0),
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
            name: name.to_string(),
        });
        attach(&job);
        job.wake();
        job
    }

    /// Asks for a step as soon as a worker is free. Never blocks on a step.
    pub fn wake(self: &Arc<Self>) {
        if !in_owner() {
            return;
        }
        loop {
            let s = self.state.load(Ordering::Acquire);
            let next = match s {
                IDLE => QUEUED,
                RUNNING => RUNNING_AGAIN,
                _ => return,
            };
            if self
                .state
                .compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if next == QUEUED {
                    push_ready(self.clone());
                }
                return;
            }
        }
    }

    /// Waits until the shipper has finished (its last step returned and it was dropped), at
    /// most `timeout`; true if it did.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.finished);
        while !*done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .finished_cv
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn finish(&self) {
        // The shipper is dropped before anyone hears it finished: a reopen of the database
        // never overlaps the old shipper's last act.
        drop(lock(&self.shipper).take());
        self.state.store(DONE, Ordering::Release);
        *lock(&self.finished) = true;
        self.finished_cv.notify_all();
    }
}

fn push_ready(job: Arc<Job>) {
    let mut q = lock(&POOL.queue);
    q.ready.push_back(job);
    wake_worker(&mut q);
}

/// Wakes a waiting worker, or starts one while below the limit.
fn wake_worker(q: &mut Queue) {
    if q.waiting > 0 {
        POOL.cv.notify_one();
    } else if q.threads < POOL.max_threads {
        let spawned = std::thread::Builder::new()
            .name("walship-shipper".into())
            .spawn(worker);
        match spawned {
            Ok(_) => q.threads += 1,
            // With at least one worker the job still runs, later.
            Err(e) if q.threads > 0 => log::debug!("walship: cannot start a shipper thread: {e}"),
            Err(e) => {
                log::error!("walship: cannot start a shipper thread: {e}; nothing is shipped")
            }
        }
    }
}

fn worker() {
    let mut q = lock(&POOL.queue);
    loop {
        let now = Instant::now();
        while q.timers.peek().is_some_and(|t| t.0.at <= now) {
            let Reverse(t) = q.timers.pop().expect("peeked");
            if t.generation == t.job.generation.load(Ordering::Acquire)
                && t.job
                    .state
                    .compare_exchange(IDLE, QUEUED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                q.ready.push_back(t.job);
            }
        }
        if let Some(job) = q.ready.pop_front() {
            if !q.ready.is_empty() && q.waiting > 0 {
                POOL.cv.notify_one();
            }
            drop(q);
            run(&job);
            q = lock(&POOL.queue);
            continue;
        }
        let wait = q
            .timers
            .peek()
            .map(|t| t.0.at.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(3600));
        q.waiting += 1;
        q = POOL
            .cv
            .wait_timeout(q, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        q.waiting -= 1;
    }
}

/// One step of one shipper, then its next turn: queued again at once, or a timer.
fn run(job: &Arc<Job>) {
    job.state.store(RUNNING, Ordering::SeqCst);
    let generation = job.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let next = {
        let mut guard = lock(&job.shipper);
        match guard.as_mut() {
            Some(s) => catch_unwind(AssertUnwindSafe(|| s.step())).unwrap_or_else(|e| {
                let msg = e
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!(
                    "{}: the shipper failed ({msg}); this database is no longer replicated \
                     in this process",
                    job.name
                );
                None
            }),
            None => None,
        }
    };
    let Some(at) = next else {
        job.finish();
        return;
    };
    if at > Instant::now() {
        let mut q = lock(&POOL.queue);
        q.seq += 1;
        let seq = q.seq;
        let first = q.timers.peek().is_none_or(|t| at < t.0.at);
        q.timers.push(Reverse(Timer {
            at,
            seq,
            generation,
            job: job.clone(),
        }));
        // A waiting worker sleeps until the earliest timer it knew of.
        if first && q.waiting > 0 {
            POOL.cv.notify_one();
        }
        drop(q);
        if job
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
    }
    // Due now, or woken during the step: behind every job already waiting.
    job.state.store(QUEUED, Ordering::Release);
    push_ready(job.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_order_by_time_then_arrival() {
        let mut h = BinaryHeap::new();
        let t0 = Instant::now();
        let job = Arc::new(Job {
            shipper: Mutex::new(None),
            state: AtomicU8::new(IDLE),
            generation: AtomicU64::new(0),
            finished: Mutex::new(false),
            finished_cv: Condvar::new(),
            name: "t".into(),
        });
        for (i, ms) in [(1u64, 30u64), (2, 10), (3, 10), (4, 20)] {
            h.push(Reverse(Timer {
                at: t0 + Duration::from_millis(ms),
                seq: i,
                generation: 0,
                job: job.clone(),
            }));
        }
        let order: Vec<u64> = std::iter::from_fn(|| h.pop().map(|t| t.0.seq)).collect();
        assert_eq!(order, vec![2, 3, 4, 1]);
    }
}
