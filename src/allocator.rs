//! The service's global allocator, declared by the library so that everything linking it
//! (the binary, the benchmarks that run the service in their own process, the tests)
//! allocates the same way.
//!
//! mimalloc rather than glibc's malloc: the pipeline allocates many short-lived buffers
//! (rows, message bodies, JSON values) on one thread and frees them on another, where
//! glibc spent a fifth of the runtime's time in `malloc`/`free` and consolidating chunks;
//! the embedded pipeline ran 5 to 16 % faster with mimalloc (`cargo bench --bench
//! pipeline`, benches/README.md). C libraries (SQLite) still allocate with glibc's
//! malloc, whose arenas `malloc_arenas` caps.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(test)]
mod tests {
    #[test]
    fn the_library_allocates_with_mimalloc() {
        let boxed = Box::new([7u8; 64]);
        // SAFETY: mi_check_owned only reads mimalloc's own bookkeeping for the pointer.
        let owned = unsafe { libmimalloc_sys::mi_check_owned(boxed.as_ptr().cast()) };
        assert!(owned, "a Box was not allocated by mimalloc");
    }
}
