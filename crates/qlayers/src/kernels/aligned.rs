//! Zeroed byte buffers for packed weights: cache-line aligned, and on Linux, for those that span a huge page, fresh
//! memory mapped at a 2 MB boundary and backed by transparent huge pages, so that streaming a decoder's weights at
//! batch 1 walks one page-table entry per 2 MB instead of per 4 KB. (From the allocator, such a buffer would often
//! reuse pages a freed buffer had already faulted in 4 KB at a time.)

use std::alloc::Layout;
use std::ptr::NonNull;

/// Bytes of a transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// A zero-initialized byte buffer that starts on a 64-byte boundary, and on a 2 MB one when it spans a huge page.
pub(crate) struct CacheAligned {
    ptr: NonNull<u8>,
    len: usize,
    memory: Memory,
}

/// Where a [`CacheAligned`] buffer's memory came from.
#[derive(Debug, Clone, Copy)]
enum Memory {
    /// The global allocator, with this layout.
    Heap(Layout),
    /// An anonymous mapping of this many bytes from `ptr`, advised for huge pages.
    #[cfg(target_os = "linux")]
    Mapped(usize),
}

// SAFETY: the buffer is owned memory with no interior mutability; `&self` only reads it.
unsafe impl Send for CacheAligned {}
// SAFETY: as for `Send`.
unsafe impl Sync for CacheAligned {}

impl CacheAligned {
    /// `len` zero bytes.
    pub(crate) fn zeroed(len: usize) -> Self {
        #[cfg(target_os = "linux")]
        if len >= HUGE_PAGE {
            if let Some((ptr, size)) = map_huge(len) {
                return Self { ptr, len, memory: Memory::Mapped(size) };
            }
        }
        let layout = Layout::from_size_align(len.max(1).next_multiple_of(64), 64).expect("a buffer size in range");
        // SAFETY: the layout's size is at least 64.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        Self { ptr, len, memory: Memory::Heap(layout) }
    }

    /// Number of bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to the first byte.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the buffer holds `len` initialized bytes, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The first `len / 4` floats, mutably (every bit pattern is a float).
    pub(crate) fn as_mut_f32(&mut self) -> &mut [f32] {
        // SAFETY: the buffer is 64-byte aligned and holds `len` initialized bytes; any 4 bytes are an f32.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.len / 4) }
    }
}

impl Clone for CacheAligned {
    fn clone(&self) -> Self {
        let copy = Self::zeroed(self.len);
        // SAFETY: both buffers hold `len` bytes, and they are distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), copy.ptr.as_ptr(), self.len) };
        copy
    }
}

impl Drop for CacheAligned {
    fn drop(&mut self) {
        match self.memory {
            // SAFETY: `ptr` was allocated with `layout` and is freed once.
            Memory::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            // SAFETY: `ptr` starts a mapping of `size` bytes that this buffer owns; it is unmapped once.
            #[cfg(target_os = "linux")]
            Memory::Mapped(size) => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), size);
            },
        }
    }
}

/// A fresh anonymous mapping of `len` bytes (rounded up to whole base pages) that starts on a 2 MB boundary, its whole
/// huge pages advised for huge pages before anything touches them (its pages are zero) and the rest left in base
/// pages, so that no part of a huge page past the buffer is backed; `None` if the system refuses.
#[cfg(target_os = "linux")]
fn map_huge(len: usize) -> Option<(NonNull<u8>, usize)> {
    // SAFETY: sysconf only reads a system constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok().filter(|&p| p > 0)?;
    let size = len.next_multiple_of(page);
    let span = size + HUGE_PAGE;
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let start = (base as usize).next_multiple_of(HUGE_PAGE);
    let (head, tail) = (start - base as usize, base as usize + span - (start + size));
    // SAFETY: the head and tail lie inside the mapping just made and outside the part kept; unmapping them only
    // trims it.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
    }
    // Before anything touches the pages (they are zeros).
    advise_huge_pages(start as *const u8, size);
    NonNull::new(start as *mut u8).map(|ptr| (ptr, size))
}

impl std::fmt::Debug for CacheAligned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAligned").field("len", &self.len).field("memory", &self.memory).finish()
    }
}

/// Asks Linux to back the 2 MB-aligned interior of the `bytes` from `start` with transparent huge pages when they
/// are first touched (no effect elsewhere, or where the system has none).
pub(crate) fn advise_huge_pages(start: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        let from = (start as usize).next_multiple_of(HUGE_PAGE);
        let to = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
        if to > from {
            // SAFETY: the advice changes how the range's pages are backed, not their contents; a refusal (no
            // transparent huge pages) is harmless.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_aligned_and_cloned_whole() {
        for len in [0, 1, 63, 64, 100_000, HUGE_PAGE + 5] {
            let mut buffer = CacheAligned::zeroed(len);
            assert_eq!(buffer.len(), len);
            let huge = cfg!(target_os = "linux") && len >= HUGE_PAGE;
            assert_eq!(buffer.as_ptr() as usize % if huge { HUGE_PAGE } else { 64 }, 0, "{len}");
            assert!(buffer.as_mut_slice().iter().all(|&b| b == 0));
            buffer.as_mut_slice().iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            let mut copy = buffer.clone();
            assert_eq!(copy.as_mut_slice(), buffer.as_mut_slice());
            drop(buffer);
            assert!(copy.as_mut_slice().iter().enumerate().all(|(i, &b)| b == i as u8));
        }
    }
}
