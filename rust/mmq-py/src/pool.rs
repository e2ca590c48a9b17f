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
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

type Slot = Mutex<Option<(u32, Arc<ThreadPool>)>>;
static POOL: Slot = Mutex::new(None);
static SINGLE: Slot = Mutex::new(None);

/// Hand the heap's free pages back to the system. glibc keeps what the tokenizing
/// threads freed (their per-batch buffers) in their arenas, about 0.1 GB at 2M rows,
/// which training would otherwise hold beside the embedding matrix for its whole run.
/// Called once the training rows are built; a no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only hands free pages of glibc's heap back; it takes no
        // pointer of ours.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// This process's pool (as many threads as rayon's default: `RAYON_NUM_THREADS` or the
/// number of cores).
pub fn pool() -> Arc<ThreadPool> {
    per_process(&POOL, 0)
}

/// Replace this process's pool by one of `threads` threads (0: rayon's default), for a
/// worker that is allotted fewer cores than the machine has (a Ray actor with
/// `num_cpus=1`). Work already running keeps the pool it started in.
pub fn set_threads(threads: usize) {
    let p = build(threads);
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = slot.take() {
        if old.0 != std::process::id() {
            std::mem::forget(old); // a parent's pool: its threads are not in this process
        }
    }
    *slot = Some((std::process::id(), p));
}

/// The number of threads of this process's pool.
pub fn threads() -> usize {
    pool().current_num_threads()
}

fn build(threads: usize) -> Arc<ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .or_else(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .expect("a one-thread pool can always be built"),
    )
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
    let p = build(threads);
    *slot = Some((pid, p.clone()));
    p
}

/// The cancellation request of one [`detach_cancel`] call: set by the waiting thread when
/// a signal handler raised (Ctrl-C), read by the work (training callbacks return false
/// once it is set, so the trainers stop with [`mmq_core::MmqError::Interrupted`]).
#[derive(Default)]
pub struct Cancel {
    requested: AtomicBool,
}

impl Cancel {
    /// Whether the caller asked the work to stop.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
}

/// How often the waiting thread runs Python's signal handlers.
const POLL: Duration = Duration::from_millis(50);

/// `f` without the GIL, inside this process's pool (see [`detach_cancel`]).
pub fn detach<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    detach_cancel(py, move |_| f())
}

/// `f` without the GIL, inside this process's pool, while the calling thread waits and
/// runs Python's signal handlers every 50 ms (CPython runs them only on the main thread,
/// so a check from a pool worker would never see Ctrl-C). When a handler raises (Ctrl-C:
/// `KeyboardInterrupt`), the call's [`Cancel`] is set, the work is waited for (work that
/// checks it, such as training, stops early) and the handler's exception is the call's
/// result. A panic of `f` (a bug) is caught and becomes an `mmq.MmqError`, never a
/// `PanicException`. Called from inside the pool (a callback of running work), `f` just
/// runs there.
pub fn detach_cancel<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce(&Cancel) -> T + Send,
    T: Send,
{
    let p = pool();
    let cancel = Cancel::default();
    let run = |cancel: &Cancel| std::panic::catch_unwind(AssertUnwindSafe(|| f(cancel)));
    let out = if rayon::current_thread_index().is_some() {
        py.detach(|| p.install(|| run(&cancel)))
    } else {
        let mut signal: Option<PyErr> = None;
        let out = py.detach(|| {
            let (tx, rx) = mpsc::channel();
            let cancel = &cancel;
            p.in_place_scope(|s| {
                s.spawn(move |_| {
                    let _ = tx.send(run(cancel));
                });
                loop {
                    match rx.recv_timeout(POLL) {
                        Ok(v) => return v,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(Box::new("the pool's task ended without a result"))
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if signal.is_none() {
                                if let Err(e) = Python::attach(|py| py.check_signals()) {
                                    signal = Some(e);
                                    cancel.requested.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            })
        });
        if let Some(e) = signal {
            return Err(e);
        }
        out
    };
    out.map_err(|p| crate::errors::internal(crate::errors::panic_message(p.as_ref())))
}
