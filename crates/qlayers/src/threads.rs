//! How many threads the kernels use, and [`parallel_for`], which runs a kernel's tasks on the calling thread and
//! the helpers of a small spinning pool (`threads/pool.rs`). The default count is candle's, so that our kernels and
//! candle's own CPU ops (which run at other times) use the same cores.

mod pool;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// 0 means "not set": use candle's count (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the cores).
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's own count while inside [`with_num_threads`] (0: none, the process-wide count applies).
    static THIS_THREAD: Cell<usize> = const { Cell::new(0) };
}

/// Caps the threads one kernel call uses (at least 1). Applies to calls started afterwards.
pub fn set_num_threads(threads: usize) {
    THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// Runs `work` with kernel calls made from this thread capped at `threads` (at least 1), whatever the
/// process-wide count; `None` runs it under the process-wide count. Several models with their own thread counts
/// can so run at once from different threads (the Python module gives each model its own).
pub fn with_num_threads<R>(threads: Option<usize>, work: impl FnOnce() -> R) -> R {
    let Some(threads) = threads else { return work() };
    let outer = THIS_THREAD.with(|t| t.replace(threads.max(1)));
    // Restored however `work` ends, a panic included.
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            THIS_THREAD.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(outer);
    work()
}

/// The number of threads a kernel call made from this thread uses.
pub fn num_threads() -> usize {
    match (THIS_THREAD.with(Cell::get), THREADS.load(Ordering::Relaxed)) {
        (0, 0) => default_threads(),
        (0, n) | (n, _) => n,
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
// SAFETY: as for `Send`.
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not its field).
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_have_its_own_count_for_a_while() {
        let outside = num_threads();
        let inside =
            with_num_threads(Some(3), || (num_threads(), with_num_threads(Some(1), num_threads), num_threads()));
        assert_eq!(inside, (3, 1, 3), "nested counts apply inside and end with their call");
        assert_eq!(num_threads(), outside);
        assert_eq!(with_num_threads(None, num_threads), outside);
        assert_eq!(with_num_threads(Some(0), num_threads), 1);
        let other =
            std::thread::spawn(|| with_num_threads(Some(5), || std::thread::spawn(num_threads).join().unwrap()));
        assert_eq!(other.join().unwrap(), outside, "other threads keep the process-wide count");
        let caught = std::panic::catch_unwind(|| with_num_threads(Some(7), || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(num_threads(), outside, "a panic inside does not leave the count behind");
    }
}
