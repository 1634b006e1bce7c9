//! CPU affinity, for benchmarks that pin each process to its own CPU.

use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    let set = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

/// Pins the calling thread to `cpu` (`sched_setaffinity`).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set)?;
    Ok(())
}

/// Pins the calling thread to `cpu`; alias kept for readability at call sites in processes
/// that have one thread.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    pin_current_thread(cpu)
}
