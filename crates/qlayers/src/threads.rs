//! How many threads the kernels use, and [`parallel_for`], which runs a kernel's tasks on the calling thread and
//! the helpers of a small spinning pool (`threads/pool.rs`). The default count is candle's, so that our kernels and
//! candle's own CPU ops (which run at other times) use the same cores.

mod pool;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// 0 means "not set": use candle's count (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the cores).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Caps the threads one kernel call uses (at least 1). Applies to calls started afterwards.
pub fn set_num_threads(threads: usize) {
    THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// The number of threads a kernel call uses.
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// candle's thread count, asked once: without `RAYON_NUM_THREADS` candle counts physical cores by parsing
/// `/proc/cpuinfo`, which costs tens of microseconds, far more than a decoding-sized matmul.
fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// Runs `task(i)` for every `i < tasks` on up to [`num_threads`] threads (the caller and pool helpers); each takes
/// the next index until none is left, so uneven tasks balance themselves. A panic in a task is rethrown here after
/// the other tasks have finished.
pub fn parallel_for(tasks: usize, task: impl Fn(usize) + Sync) {
    let workers = num_threads().min(tasks);
    if workers <= 1 {
        (0..tasks).for_each(task);
        return;
    }
    pool::run(tasks, workers - 1, &task);
}

/// Work (in multiply-adds or comparable steps) below which handing tasks to other threads costs more than it saves.
pub const PARALLEL_MIN_WORK: usize = 1 << 15;

/// [`parallel_for`] for `tasks` that together do about `work` steps: run on the calling thread alone when the
/// work is too small to be worth handing out.
pub fn parallel_for_work(tasks: usize, work: usize, task: impl Fn(usize) + Sync) {
    if work < PARALLEL_MIN_WORK {
        (0..tasks).for_each(task);
    } else {
        parallel_for(tasks, task);
    }
}

/// A raw pointer that tasks of one [`parallel_for`] share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);

// SAFETY: tasks write disjoint ranges, and `parallel_for` returns only after every task has finished.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not its field).
    pub fn get(self) -> *mut T {
        self.0
    }
}
