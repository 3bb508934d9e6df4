//! The memory allocator, and how it gives memory back.
//!
//! A large configuration that shrinks should leave the control plane about as small as it
//! started. glibc's allocator keeps pages of every thread's arena that hold any live object,
//! and the objects of the next configuration land scattered across the pages of the last
//! one: even with `malloc_trim` after every change, 1000 routes scaled back to 10 kept ~40%
//! more than the first 10-route figure. jemalloc, with one arena and small thread caches,
//! packs objects of a size together and returns emptied pages a second after they are freed
//! (a background thread purges them): the same cycle comes back within ~18% (see
//! `docs/benchmarks.md`, `trellis-bench memory`). Without thread caches it comes back within
//! ~11%, but allocation costs twice the CPU (an endpoint change pushed to 2500 proxies: 0.9 s
//! of control-plane CPU instead of 0.35 s).
//!
//! The options can be changed at run time through the `_RJEM_MALLOC_CONF` environment
//! variable (jemalloc's `MALLOC_CONF` syntax).

/// The allocator of every Rust allocation in the process.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: one arena (the control plane's work is mostly one
/// translation at a time); per-thread caches for small objects only (up to 1 KiB: they make
/// allocation cheap, and larger cached objects would hold memory per thread); dirty pages
/// returned by a background thread after one second, none kept in reserve.
///
/// jemalloc reads this NUL-terminated string through the `malloc_conf` symbol (prefixed, as
/// the crate builds it); nothing else refers to it.
#[cfg(target_os = "linux")]
// SAFETY: the name is unique in the process (jemalloc declares it and expects the program to
// define it); the value is a static NUL-terminated byte string, which is what jemalloc reads.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 86] =
    b"background_thread:true,narenas:1,tcache_max:1024,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
