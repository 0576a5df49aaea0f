//! Process-wide allocator settings for inference: [`keep_freed_memory`].

/// Asks the C allocator (glibc on Linux; elsewhere this does nothing) to keep freed memory for reuse instead of
/// handing it back to the system: no `mmap` for large blocks, no trimming of the heap.
///
/// A model's forward pass allocates and frees activation buffers of megabytes at every layer (MiniLM at 32 x
/// 128 tokens: 6 to 25 MB each). By default glibc serves such blocks with `mmap` and unmaps them when freed, or
/// trims the heap behind them, so every layer of every call faults fresh, zeroed pages in again: about a sixth of
/// an fp32 MiniLM batch went to page faults and the kernel's page zeroing. With this setting the process keeps
/// the high-water mark of its heap. It changes the allocator of the whole process, so it is for programs whose
/// main work is inference (the `runner` binary calls it first thing); a library never calls it on its own.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters, under glibc's own lock; a refused value returns 0
    // and leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
