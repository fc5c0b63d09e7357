//! The CPU allocator of the ferrovox binaries: mimalloc, set up for inference.
//!
//! Candle allocates every op's output afresh, so a forward frees and reallocates the same
//! large buffers over and over. glibc maps and unmaps them each time; mimalloc keeps freed
//! memory for reuse, but by default it decommits what stays free past a short delay, and the
//! next forward faults those pages in again (on the joe voice's paragraph at one thread,
//! about 25,000 page faults per synthesis). Purging by reset (`MADV_FREE`) instead leaves the
//! pages mapped: reused at once without a fault, and still reclaimed by the kernel under
//! memory pressure.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: ferrovox_device::allocator::MiMalloc = ferrovox_device::allocator::MiMalloc;
//!
//! fn main() {
//!     ferrovox_device::allocator::configure();
//! }
//! ```

pub use mimalloc::MiMalloc;

/// `mi_option_purge_decommits` of mimalloc's `mi_option_t` (v2 and v3 alike).
const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;

/// Environment variable through which mimalloc reads the same option; where it is set, the
/// operator's value stands.
const PURGE_DECOMMITS_ENV: &str = "MIMALLOC_PURGE_DECOMMITS";

/// Applies ferrovox's mimalloc settings; call first thing in `main`, where mimalloc is the
/// global allocator.
pub fn configure() {
    if std::env::var_os(PURGE_DECOMMITS_ENV).is_none() {
        // SAFETY: sets one of mimalloc's own options to a value it documents (0: purge by
        // reset); mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DECOMMITS, 0) };
    }
}

/// Whether mimalloc purges by decommitting (its default) rather than by reset.
pub fn purges_by_decommit() -> bool {
    // SAFETY: reads one of mimalloc's options.
    unsafe { libmimalloc_sys::mi_option_is_enabled(PURGE_DECOMMITS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_switches_purging_to_reset() {
        if std::env::var_os(PURGE_DECOMMITS_ENV).is_some() {
            return;
        }
        configure();
        assert!(!purges_by_decommit());
    }
}
