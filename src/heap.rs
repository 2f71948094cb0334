//! The agent's heap: one arena, and handing memory it freed back to the system.

/// Returns the free memory of the allocator's arenas to the system (glibc's `malloc_trim`). After
/// a large read or a full compile the memory freed would otherwise stay resident.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from one arena (glibc's `M_ARENA_MAX`); call it before any thread
/// starts. glibc gives each thread that allocates its own arena by default: the agent's few
/// threads build the store on one, compile on another, and each arena keeps its own partly used
/// pages, which at 100k pods is some 8 MiB more resident than one arena holds. The agent
/// allocates from few threads at once, so they do not contend for it.
pub fn use_one_arena() {
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
