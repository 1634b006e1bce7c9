//! Asymmetric fences across processes (`membarrier(2)`, global expedited).
//!
//! A Dekker-style handshake ("I store X then load Y; you store Y then load X; one of us
//! must see the other's store") needs a full fence on both sides. When one side runs it on
//! every message and the other only before it goes to sleep, `membarrier` moves the whole
//! cost to the rare side: the frequent side needs only a compiler fence, and the rare side
//! makes every CPU that runs a registered process execute a full fence before it looks.
//!
//! The frequent side calls [`register_light_side`] once; only when it returns `true` may it
//! leave out its fence. The rare side calls [`heavy_fence`]; when that fails (a kernel or a
//! seccomp filter without `membarrier`), it must not rely on the handshake and should sleep
//! in short slices instead.

use std::sync::OnceLock;

use rustix::thread::{membarrier, membarrier_query, MembarrierCommand};

/// Registers this process as a light side (once; later calls return the first answer).
/// `false`: not supported here, keep the full fence.
pub(crate) fn register_light_side() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        std::env::var_os("IPCKIT_NO_MEMBARRIER").is_none()
            && membarrier_query().contains_command(MembarrierCommand::GlobalExpedited)
            && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
    })
}

/// A full fence on every CPU that runs a registered process, and on this one: afterwards,
/// every store a registered process made before its next load is visible here. Costs an
/// inter-processor interrupt per such CPU (microseconds): for slow paths only. `false`: no
/// such fence was possible.
pub(crate) fn heavy_fence() -> bool {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the kernel offers the command, registering works and the fence is made: the bus
    /// then runs with light publishers. Elsewhere both say no, consistently.
    #[test]
    fn light_side_and_heavy_fence_agree_with_the_kernel() {
        let offered = membarrier_query().contains_command(MembarrierCommand::GlobalExpedited);
        if std::env::var_os("IPCKIT_NO_MEMBARRIER").is_some() {
            assert!(!register_light_side());
            return;
        }
        assert_eq!(register_light_side(), offered);
        assert_eq!(heavy_fence(), offered);
        if !offered {
            eprintln!("skipped in part: this kernel has no MEMBARRIER_CMD_GLOBAL_EXPEDITED");
        }
    }
}
