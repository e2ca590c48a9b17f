//! The thread pool every parallel call of the extension runs in, safe across `fork()`.
//!
//! rayon's global pool lives in threads that a forked child does not inherit: a child
//! process (`multiprocessing` with the fork start method, gunicorn's preload, a data
//! loader's workers) that used it would wait forever for workers that are gone. So the
//! bindings run their parallel work in this pool instead, and a process whose id differs
//! from the one that built it builds its own (the parent's pool is left alone: its
//! threads do not exist in the child, so it must not be dropped there).
use pyo3::prelude::*;
use rayon::ThreadPool;
use std::sync::{Arc, Mutex};

type Slot = Mutex<Option<(u32, Arc<ThreadPool>)>>;
static POOL: Slot = Mutex::new(None);
static SINGLE: Slot = Mutex::new(None);

/// This process's pool (as many threads as rayon's default: `RAYON_NUM_THREADS` or the
/// number of cores).
pub fn pool() -> Arc<ThreadPool> {
    per_process(&POOL, 0)
}

/// This process's one-thread pool, for work that must not fan out (a caller that is
/// already parallel).
pub fn single() -> Arc<ThreadPool> {
    per_process(&SINGLE, 1)
}

/// The pool in `slot` if this process built it, else a new one of `threads` threads
/// (0: rayon's default).
fn per_process(slot: &Slot, threads: usize) -> Arc<ThreadPool> {
    let pid = std::process::id();
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, p)) = slot.as_ref() {
        if *owner == pid {
            return p.clone();
        }
    }
    if let Some(inherited) = slot.take() {
        std::mem::forget(inherited);
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .expect("a one-thread pool can always be built"),
    );
    *slot = Some((pid, p.clone()));
    p
}

/// `f` without the GIL, inside this process's pool.
pub fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let p = pool();
    py.detach(move || p.install(f))
}
