//! glibc's allocator gives threads arenas of their own, up to eight per core. What a
//! sensor's task allocates on one thread and frees on another stays spread over those
//! arenas, so with many sensors the process held half as much again as it used: 10,000
//! idle interval timers took 150 MiB resident with the default and 110 MiB with two
//! arenas (`cargo bench --bench sensors`, benches/README.md). Two keep that waste small
//! and still give the runtime's two worker threads one each on this 2-core target.
//! The service's own allocations now go to mimalloc (`allocator.rs`); glibc's malloc serves
//! the C libraries (SQLite's page cache and statements), whose threads the cap still
//! keeps to two arenas.

/// The arenas the service allows glibc, unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`ARENAS`]. An operator's `MALLOC_ARENA_MAX` wins:
/// glibc read it at start-up and this leaves it alone. Call it first in `main`, before
/// any thread starts. Other platforms and allocators are left as they are.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only retunes the allocator, and no other thread exists yet to
        // be allocating meanwhile.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
