//! Shared memory: named POSIX segments (`/dev/shm/ipckit.NAME`) and anonymous ones (memfd)
//! that children inherit.
//!
//! Every segment starts with a 128-byte header (magic, layout version, kind, type
//! fingerprint, creator pid, size), so opening a segment of another kind, version or type is
//! [`crate::Error::Incompatible`]. Processes that hold a segment keep a lock on it that the
//! kernel drops when they die, so [`cleanup_stale`] can remove what crashed processes left.
//!
//! The `shm://name` channel ([`ShmConn`]) carries messages through two rings in shared memory
//! behind the same [`crate::bind`]/[`crate::connect`] API as every other transport, with a
//! zero-copy path ([`ShmConn::loan`], [`ShmConn::recv_ref`]):
//!
//! ```
//! use ipckit::{MessageReceiver, MessageSender};
//! use std::time::Duration;
//!
//! let url = format!("shm://doc-echo-{}?wait=adaptive", std::process::id());
//! let mut listener = ipckit::bind(&url)?;
//! let mut client = ipckit::connect(&url)?;
//! client.send(b"over shared memory")?;
//! let mut server = listener.accept_timeout(Duration::from_secs(5))?;
//! let msg = server.recv_timeout(Duration::from_secs(5))?;
//! server.send(&msg)?;
//! assert_eq!(client.recv_timeout(Duration::from_secs(5))?, b"over shared memory");
//! println!("{:?}", client.as_shm().unwrap().stats());
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! A connection costs more to set up than a socket's, and is meant to be kept: `connect`
//! creates both rings and maps every page of them at once, so the first lap takes no page
//! faults (they were the `shm-spin` p99). Here, with the default 4 MiB rings, `connect` took
//! a median 6.5 ms and the listener 1.3 ms more to accept and receive the first message;
//! with `?capacity=256K`, 0.58 ms and 0.22 ms; a Unix socket, 0.065 ms and 0.12 ms
//! (`scripts/accept-latency`, 10 connections each). A process's first `adaptive` channel
//! (the default) registers it for `membarrier(2)`, which waits for an RCU grace period
//! (milliseconds) when the process already runs several threads.

mod channel;
pub(crate) mod ring;
mod segment;

pub use crate::region::SharedBytes;
pub(crate) use channel::{bind_mpsc, connect as connect_channel, connect_mpsc, ShmListener};
pub use channel::{ChannelStats, Loan, RecvRef, ShmConn};
pub(crate) use segment::LOCK_ATTACHED;
pub use segment::{
    cleanup_stale, cleanup_stale_prefixed, fingerprint_of, list, remove, validate_name, Segment,
    SegmentBuilder, SegmentInfo, SegmentKind, ENV_VAR, HEADER_LEN, LAYOUT_VERSION, NAME_MAX,
    NAME_PREFIX,
};
