//! Shared memory: named POSIX segments (`/dev/shm/ipckit.NAME`) and anonymous ones (memfd)
//! that children inherit.
//!
//! Every segment starts with a 128-byte header (magic, layout version, kind, type
//! fingerprint, creator pid, size), so opening a segment of another kind, version or type is
//! [`crate::Error::Incompatible`]. Processes that hold a segment keep a lock on it that the
//! kernel drops when they die, so [`cleanup_stale`] can remove what crashed processes left.

#[allow(dead_code)] // TEMP: the shm:// channel (in progress) drives the ring
mod ring;
mod segment;

pub use segment::{
    cleanup_stale, fingerprint_of, list, remove, validate_name, Segment, SegmentBuilder,
    SegmentInfo, SegmentKind, ENV_VAR, HEADER_LEN, LAYOUT_VERSION, NAME_MAX, NAME_PREFIX,
};
