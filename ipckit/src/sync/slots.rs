//! Process slots with generations: who may hold a lock that survives its holder's death
//! ([`super::raw_mutex`]), and whether a holder is alive.
//!
//! A process claims a slot by locking one byte of the segment's file (`lock_base + slot`,
//! an OFD lock the kernel drops when the process dies) and bumping the slot's generation.
//! Its token (bits 0..8: slot + 1, bits 8..31: generation) goes into the lock word. A holder
//! is alive while its slot's byte is locked through another open file description *and* its
//! generation is still the slot's, so a process that claims the slot after the holder died
//! never passes for it (nor does a reused pid).

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::raw_mutex::Liveness;
use crate::error::Result;
use crate::sys;

/// Most slots a table can have: the slot takes the low 8 bits of a token.
pub(crate) const MAX_SLOTS: usize = 255;
/// Generations are 23 bits: bits 8..31 of a token (bit 31 is the lock word's).
const GEN_MASK: u32 = (1 << 23) - 1;

/// Claims the first free slot of `gens` (lock bytes from `lock_base`) for this open file
/// description and returns its token; `None` if every slot is taken.
pub(crate) fn claim(fd: BorrowedFd<'_>, gens: &[AtomicU32], lock_base: u64) -> Result<Option<u32>> {
    debug_assert!(gens.len() <= MAX_SLOTS);
    for (i, gen) in gens.iter().enumerate() {
        if sys::ofd_lock(fd, lock_base + i as u64, 1, true)? {
            let g = gen.fetch_add(1, Ordering::SeqCst).wrapping_add(1) & GEN_MASK;
            return Ok(Some((g << 8) | (i as u32 + 1)));
        }
    }
    Ok(None)
}

/// [`Liveness`] of the holders of a slot table, seen by the holder of token `me`.
pub(crate) struct SlotLiveness<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) gens: &'a [AtomicU32],
    pub(crate) lock_base: u64,
    pub(crate) me: u32,
}

impl Liveness for SlotLiveness<'_> {
    fn token(&self) -> u32 {
        self.me
    }

    fn alive(&self, token: u32) -> bool {
        if token == self.me {
            return true;
        }
        let slot = (token & 0xFF) as usize;
        // A token read from shared memory: checked before use.
        let Some(gen) = slot.checked_sub(1).and_then(|i| self.gens.get(i)) else {
            return false;
        };
        if gen.load(Ordering::Acquire) & GEN_MASK != token >> 8 {
            return false;
        }
        sys::ofd_locked_by_other(self.fd, self.lock_base + slot as u64 - 1, 1).unwrap_or(true)
    }
}
