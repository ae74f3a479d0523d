//! Keeps the memory a training step frees in the process heap for the next step.
//!
//! libtorch allocates every CPU tensor with `malloc`. With glibc's defaults, freed
//! memory goes back to the kernel as soon as more than a few MiB sit free at the top
//! of the heap, and blocks above a (self-adjusting, at most 32 MiB) threshold get
//! their own `mmap`. A training loop frees its activations and gradients at the end
//! of every step, so the next step gets them back as fresh pages: one page fault and
//! a zeroed 4 KiB page each (1.5 µs per page on the 2-core benchmark machine). On the
//! demo's small CNN at batch 128 that was about 7,400 faults (11 ms) in a 45 ms step,
//! and how many depended on where the last free happened to leave the top of the heap:
//! PyTorch's loop, doing the same work, got 50 to 7,700 per step from run to run.
//! With the thresholds below the steps run with next to no page faults (that row:
//! 0 per step, 2,795 → 3,350 images/s, medians of four alternating runs on a quiet
//! machine; with the same thresholds PyTorch's loop got 3,191).
//!
//! The cost: the process keeps up to [`TRIM_THRESHOLD`] of freed memory mapped after
//! a run instead of returning it, which the next run (or step) reuses, and large
//! blocks now share the heap, so its peak can be a little higher (the Alignment
//! Calibration run on the demo: 986 → 1,161 MiB peak resident).

use std::sync::Once;

/// Free memory at the top of the heap kept rather than returned to the kernel: more
/// than one step of the largest built-in model frees at once (CIFAR ResNet-18 at
/// batch 128 peaks at about 1.5 GiB in all).
pub const TRIM_THRESHOLD: i32 = 1 << 30;

/// Blocks from this size up get their own `mmap` (and are unmapped when freed); below
/// it they come from the heap and are reused. Above the largest activation of the
/// built-in models at the batch sizes in use (ResNet-18's first stage at batch 128 is
/// 32 MiB per tensor; the small CNN's first layer at batch 512, 49 MiB).
pub const MMAP_THRESHOLD: i32 = 256 << 20;

/// Sets the heap thresholds once per process (later calls do nothing). Environment
/// settings of glibc's malloc (`GLIBC_TUNABLES` with `glibc.malloc`, or
/// `MALLOC_TRIM_THRESHOLD_` / `MALLOC_MMAP_THRESHOLD_`) win: then nothing is changed.
/// Only glibc on Linux has these knobs; elsewhere this does nothing.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if user_tuned_malloc() {
            return;
        }
        set_thresholds();
    });
}

fn user_tuned_malloc() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    tunables.contains("glibc.malloc.")
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() {
    // SAFETY: mallopt only changes malloc's parameters under its own lock; any thread
    // may call it at any time.
    unsafe {
        // glibc before 2.35 refuses an mmap threshold above 32 MiB: take its maximum.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() {}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn faults() -> i64 {
        // SAFETY: getrusage fills the zeroed struct we own.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer; RUSAGE_THREAD is valid on Linux.
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
            0
        );
        usage.ru_minflt
    }

    /// One "step": allocates `blocks` blocks of `bytes` with malloc (as libtorch
    /// allocates tensors), writes every page, then frees them all; returns the page
    /// faults the writing took.
    fn step(blocks: usize, bytes: usize) -> i64 {
        // SAFETY: malloc/free pairs on blocks written only within their length.
        unsafe {
            let before = faults();
            let mut held = Vec::with_capacity(blocks);
            for _ in 0..blocks {
                let p = libc::malloc(bytes).cast::<u8>();
                assert!(!p.is_null());
                for i in (0..bytes).step_by(4096) {
                    p.add(i).write_volatile(1);
                }
                held.push(p);
            }
            let taken = faults() - before;
            for p in held {
                libc::free(p.cast());
            }
            taken
        }
    }

    #[test]
    fn the_next_step_reuses_the_freed_memory_without_page_faults() {
        // Twelve 4 MiB tensors alive at once, all freed at the end of the step. With
        // glibc's defaults every repetition faults in all 12,288 pages again (the
        // freed top of the heap is returned to the kernel); measured on glibc 2.36.
        keep_freed_memory();
        let (blocks, bytes) = (12, 4 << 20);
        let pages = (blocks * bytes / 4096) as i64;
        step(blocks, bytes);
        let again: Vec<i64> = (0..3).map(|_| step(blocks, bytes)).collect();
        assert!(
            again.iter().all(|&f| f < pages / 20),
            "page faults per repeated step of {pages} pages: {again:?}"
        );
    }
}
