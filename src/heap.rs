//! The agent's heap: handing memory it freed back to the system.

/// Returns the free memory of the allocator's arenas to the system (glibc's `malloc_trim`). After
/// a large read or a full compile the memory freed would otherwise stay resident.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
