//! A small pool of helper threads that spin for a while after each job before they sleep.
//!
//! A model's forward pass runs dozens of short parallel regions (one per matmul, attention, ...) separated by
//! short serial work. A pool whose threads sleep as soon as they are idle pays a wake-up (a futex call and a trip
//! through the scheduler, tens of microseconds on a VM) at every region, which at batch 1 costs as much as the
//! work. Here helpers watch an epoch counter for [`SPIN`] (spinning briefly, then yielding the core between
//! checks) before they park, so back-to-back regions start at once without starving other threads.
//!
//! Safety of the borrowed task: a job's closure lives on the caller's stack. Helpers call it only for an index
//! they claimed below `tasks`, and the caller returns only when every claimed index has finished (`pending`
//! reaches 0), so no helper touches the closure after the caller returns. The job itself is shared by `Arc`.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// One parallel region.
struct Job {
    /// The caller's task, its lifetime erased (see the module docs for why that is sound).
    task: *const (dyn Fn(usize) + Sync),
    tasks: usize,
    /// Helpers that may join (the caller is not counted).
    helpers: usize,
    next: AtomicUsize,
    joined: AtomicUsize,
    pending: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `task` points to a `Sync` closure that outlives every call made through it (module docs).
unsafe impl Send for Job {}
// SAFETY: as for `Send`.
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs indices until none is left; a panic is kept for the caller to rethrow.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            // SAFETY: index `i` is claimed and not finished, so the caller is still waiting (module docs).
            let task = unsafe { &*self.task };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| task(i))) {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
            }
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The shared state of the helpers.
struct Pool {
    /// Bumped when a job is posted.
    epoch: AtomicU64,
    /// The newest job.
    job: Mutex<Option<Arc<Job>>>,
    /// Helpers parked on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// Helper threads started so far.
    started: Mutex<usize>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        epoch: AtomicU64::new(0),
        job: Mutex::new(None),
        sleepers: AtomicUsize::new(0),
        sleep: Mutex::new(()),
        wake: Condvar::new(),
        started: Mutex::new(0),
    })
}

/// Runs `task(i)` for every `i < tasks` on the calling thread and up to `helpers` pool threads.
pub(crate) fn run(tasks: usize, helpers: usize, task: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    ensure_helpers(pool, helpers);
    // SAFETY: only erases the lifetime; the module docs explain why no call outlives `task`.
    let task: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
    let job = Arc::new(Job {
        task,
        tasks,
        helpers,
        next: AtomicUsize::new(0),
        joined: AtomicUsize::new(0),
        pending: AtomicUsize::new(tasks),
        panic: Mutex::new(None),
    });
    {
        let mut slot = pool.job.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(job.clone());
        pool.epoch.fetch_add(1, Ordering::SeqCst);
    }
    if pool.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }
    job.work();
    let mut spins = 0u32;
    while job.pending.load(Ordering::Acquire) != 0 {
        spins += 1;
        if spins < 1 << 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    let panic = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// Starts helper threads until there are `wanted`.
fn ensure_helpers(pool: &'static Pool, wanted: usize) {
    let mut started = pool.started.lock().unwrap_or_else(|e| e.into_inner());
    while *started < wanted {
        let spawned = std::thread::Builder::new().name(format!("qlayers-{}", *started + 1)).spawn(move || helper(pool));
        if spawned.is_err() {
            // Without more threads the callers still run every task themselves.
            return;
        }
        *started += 1;
    }
}

/// A helper: waits for a new epoch (spinning, then sleeping), joins the job if it still wants helpers.
fn helper(pool: &'static Pool) {
    let mut seen = 0;
    loop {
        let spin_start = Instant::now();
        let mut spins = 0u32;
        loop {
            if pool.epoch.load(Ordering::SeqCst) != seen {
                break;
            }
            spins = spins.wrapping_add(1);
            if spins < 256 {
                std::hint::spin_loop();
                continue;
            }
            // Then yield between checks, so that other runnable threads (candle's own pool, the caller's other
            // work) get the core while this one waits.
            if spin_start.elapsed() < SPIN {
                std::thread::yield_now();
                continue;
            }
            let guard = pool.sleep.lock().unwrap_or_else(|e| e.into_inner());
            pool.sleepers.fetch_add(1, Ordering::SeqCst);
            let guard = pool
                .wake
                .wait_while(guard, |_| pool.epoch.load(Ordering::SeqCst) == seen)
                .unwrap_or_else(|e| e.into_inner());
            pool.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
        }
        let job = {
            let slot = pool.job.lock().unwrap_or_else(|e| e.into_inner());
            seen = pool.epoch.load(Ordering::SeqCst);
            slot.clone()
        };
        if let Some(job) = job {
            if job.joined.fetch_add(1, Ordering::Relaxed) < job.helpers {
                job.work();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_even_with_several_callers() {
        let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..20 {
                        run(1000, 2, &|i| {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 60));
    }

    #[test]
    fn a_panic_in_a_task_reaches_the_caller_and_the_pool_goes_on() {
        let result = catch_unwind(|| {
            run(100, 2, &|i| {
                if i == 57 {
                    panic!("task 57");
                }
            })
        });
        let payload = result.expect_err("the panic is rethrown");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task 57"));
        let done = AtomicUsize::new(0);
        run(100, 2, &|_| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 100);
    }
}
