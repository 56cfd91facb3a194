//! The process's heap: one setting of glibc's allocator for a server that reads large bodies.
//!
//! Besides `http::sockets`, the crate's only `unsafe` code: one call that no safe wrapper
//! covers.
#![allow(unsafe_code)]

/// Makes glibc's malloc return large freed blocks to the system. Called once the server
/// starts; harmless when called again.
///
/// Why: glibc serves an allocation of 128 KiB or more with a mapping of its own, but each time
/// such a mapping is freed it raises that threshold to the freed size (up to 32 MiB). After
/// the first large body, later ones come from the heap of the worker thread that reads them,
/// and each worker's heap keeps what it once held. Measured with the release build on one run
/// that logged 200 tool events of 900 KB (a check every 10): 395 to 431 MiB of RSS and still
/// growing, against 55 MiB with the threshold fixed at 128 KiB. Small allocations, nearly all
/// of them, are unaffected. Other C libraries manage their heap otherwise; this is glibc only.
pub fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator, which it guards with its own lock;
    // every value is valid for M_MMAP_THRESHOLD up to 32 MiB, and it returns 0 on refusal.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 0 {
            log::warn!("cannot fix malloc's mmap threshold; large bodies may keep memory");
        }
    }
}
