//! The process's heap: giving glibc's allocator's free memory back after large requests.
//!
//! Besides `http::sockets`, the crate's only `unsafe` code: one call that no safe wrapper
//! covers.
#![allow(unsafe_code)]

/// Bodies of at least this many bytes are followed by [`release_free_memory`].
pub const LARGE_BODY_BYTES: u64 = 256 * 1024;

/// Gives the allocator's free memory back to the system. Called after a request whose body
/// was at least [`LARGE_BODY_BYTES`].
///
/// Why: glibc serves an allocation of 128 KiB or more with a mapping of its own, but each time
/// such a mapping is freed it raises that threshold to the freed size (up to 32 MiB). After
/// the first large body, later ones come from the heap of the worker thread that reads them,
/// and each worker's heap keeps what it once held. Measured with the release build on one run
/// that logged tool events of 900 KB (a check every 10): 395 to 431 MiB of RSS after 200 and
/// still growing; with this trim, 234 to 243 MiB from event 200 to 300. Fixing the threshold
/// at 128 KiB instead (`mallopt`) kept it at 55 MiB but cost every check a quarter of its
/// throughput (some allocation of a check is that large, and was then mapped and unmapped
/// each time); trimming after large bodies only costs small requests nothing. What remains is
/// memory taken by requests with small bodies (a check reading its run's large events back).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and only returns free pages; any
    // argument is valid (0: keep no extra space at the top of the heap).
    unsafe {
        libc::malloc_trim(0);
    }
}
