//! CPU affinity, for benchmarks that pin each process to its own CPU.

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    let set = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

/// Pins the calling thread to `cpu` (`sched_setaffinity`).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    pin_current_thread_to(&[cpu])
}

/// Restricts the calling thread to `cpus` (`sched_setaffinity`); the scheduler chooses
/// among them.
pub fn pin_current_thread_to(cpus: &[usize]) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    sched_setaffinity(None, &set)?;
    Ok(())
}

/// Pins the calling thread to `cpu`; alias kept for readability at call sites in processes
/// that have one thread.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    pin_current_thread(cpu)
}

/// A cache hint on the line holding `p`: one instruction that reads and writes no memory,
/// cannot fault, and touches neither the stack nor the flags; nothing on other
/// architectures (and under loom).
macro_rules! cache_hint {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        #[inline]
        pub(crate) fn $name(p: *const u8) {
            #[cfg(all(target_arch = "x86_64", not(loom)))]
            // SAFETY: a cache hint (see `cache_hint!`): it accesses no memory through `p`,
            // faults on no address, and preserves the stack and the flags.
            unsafe {
                std::arch::asm!(
                    concat!($insn, " [{0}]"),
                    in(reg) p,
                    options(nostack, preserves_flags, readonly)
                );
            }
            #[cfg(not(all(target_arch = "x86_64", not(loom))))]
            let _ = p;
        }
    };
}

cache_hint!(
    /// Hints the CPU to fetch the cache line holding `p` for writing (`prefetchw`), so that a
    /// store there soon after does not wait for the line. A hint: never faults, even for an
    /// address that is not mapped.
    prefetch_write,
    "prefetchw"
);

cache_hint!(
    /// Hints the CPU to fetch the cache line holding `p` for reading (`prefetcht0`); as
    /// [`prefetch_write`].
    prefetch_read,
    "prefetcht0"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_restricted_to_a_set_may_run_on_each_cpu_of_it_and_no_other() {
        let all = allowed_cpus().expect("allowed CPUs");
        // In a thread of its own: the restriction must not leak into other tests.
        std::thread::spawn(move || {
            let first = all[..1].to_vec();
            pin_current_thread_to(&first).expect("restrict to one CPU");
            assert_eq!(allowed_cpus().expect("read back"), first);
            // Widening again is allowed, and every CPU named is kept, not only the first.
            pin_current_thread_to(&all).expect("widen to every allowed CPU");
            assert_eq!(allowed_cpus().expect("read back"), all);
        })
        .join()
        .expect("the pinned thread");
    }
}
