//! Bounds-checked access to bytes another process can write (shared segments, mapped files).

use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64};

use bytemuck::Pod;

use crate::error::{Error, Result};

/// Typed, bounds-checked access to a shared region, without ever handing out a plain Rust
/// reference to bytes another process may change: values are copied in and out, and only
/// atomics (which tolerate concurrent access by design) are lent out in place.
///
/// # Safety
/// Implementors guarantee that the pointer and length returned by [`region`](Self::region)
/// describe memory that stays mapped (readable, and writable unless the region is read-only)
/// for as long as `&self` is borrowed.
pub unsafe trait SharedBytes {
    /// Start and length of the accessible bytes, after any checks the implementor needs
    /// (a mapped file re-checks its size).
    fn region(&self) -> Result<(*mut u8, usize)>;

    /// Like [`region`](Self::region), for writes and atomics: a read-only region refuses.
    fn region_mut(&self) -> Result<(*mut u8, usize)> {
        self.region()
    }

    /// Copies a `T` out at `offset` (any alignment).
    fn read<T: Pod>(&self, offset: usize) -> Result<T> {
        let p = checked(self.region()?, offset, size_of::<T>(), 1)?;
        // SAFETY: `p..p+size_of::<T>()` is inside the region (checked); `T: Pod` is valid for
        // any bits; an unaligned read through a raw pointer forms no reference.
        Ok(unsafe { ptr::read_unaligned(p.cast::<T>()) })
    }

    /// Copies `value` in at `offset` (any alignment).
    fn write<T: Pod>(&self, offset: usize, value: &T) -> Result<()> {
        let p = checked(self.region_mut()?, offset, size_of::<T>(), 1)?;
        // SAFETY: inside the region (checked); a raw unaligned write, no reference formed.
        unsafe { ptr::write_unaligned(p.cast::<T>(), *value) };
        Ok(())
    }

    /// Copies `buf.len()` bytes out from `offset`.
    fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let p = checked(self.region()?, offset, buf.len(), 1)?;
        // SAFETY: source inside the region (checked); destination our own buffer, which
        // cannot overlap the region because the region is never lent out as a reference.
        unsafe { ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `bytes` in at `offset`.
    fn write_bytes(&self, offset: usize, bytes: &[u8]) -> Result<()> {
        let p = checked(self.region_mut()?, offset, bytes.len(), 1)?;
        // SAFETY: destination inside the region (checked); see `read_bytes` for overlap.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        Ok(())
    }

    /// The `AtomicU32` at `offset` (4-byte aligned).
    fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        let p = checked(self.region_mut()?, offset, 4, 4)?;
        // SAFETY: in bounds and aligned (checked); atomics may be shared with other processes
        // because every access to them is atomic; the trait's contract keeps the memory
        // mapped while `self` is borrowed, which bounds the reference's lifetime.
        Ok(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// The `AtomicU64` at `offset` (8-byte aligned).
    fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        let p = checked(self.region_mut()?, offset, 8, 8)?;
        // SAFETY: as for `atomic_u32`.
        Ok(unsafe { &*p.cast::<AtomicU64>() })
    }
}

/// Checks `offset..offset+len` against the region and the alignment; returns its start.
fn checked(
    (base, size): (*mut u8, usize),
    offset: usize,
    len: usize,
    align: usize,
) -> Result<*mut u8> {
    match offset.checked_add(len) {
        Some(end) if end <= size => {}
        _ => return Err(Error::OutOfBounds { offset, len, size }),
    }
    // SAFETY: offset + len <= size, so the pointer stays inside the region.
    let p = unsafe { base.add(offset) };
    if (p as usize) % align != 0 {
        return Err(Error::Misaligned { offset, align });
    }
    Ok(p)
}
