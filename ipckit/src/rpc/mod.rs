//! Request/response RPC over any connection-oriented transport (feature `tokio`).
//!
//! A [`Server`] bound to `unix://`, `tcp://`, `shm://` (or any other duplex endpoint)
//! serves typed requests with an async handler; a [`Client`]'s
//! [`call`](Client::call) returns a future of the typed response. Many calls may be in
//! flight on one connection: each carries an id, and responses come back in the order the
//! handlers finish. Dropping a call's future (or its timeout running out) tells the server,
//! which aborts the handler. When the server dies every call in flight fails at once with
//! [`Error::PeerGone`](crate::Error::PeerGone). [`BlockingClient`] calls the same servers
//! from code without a runtime.
//!
//! Requests and responses are encoded with postcard; the frame format is in the source of
//! `rpc/wire.rs` (one transport message per frame).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> ipckit::Result<()> {
//! use ipckit::rpc::{Client, Server};
//! let dir = tempfile::tempdir().unwrap();
//! let url = format!("unix://{}/calc.sock", dir.path().display());
//!
//! let server = Server::bind(&url)?;
//! tokio::spawn(server.serve(|(a, b): (i64, i64)| async move { a + b }));
//!
//! let calc: Client<(i64, i64), i64> = Client::connect(&url).await?;
//! let (x, y) = tokio::join!(calc.call(&(2, 3)), calc.call(&(40, 2)));
//! assert_eq!((x?, y?), (5, 42));
//! # Ok(()) }
//! ```

mod blocking;
mod client;
mod server;
pub(crate) mod wire;

use std::collections::VecDeque;

pub use blocking::BlockingClient;
pub use client::Client;
pub use server::{serve_connection, Server};

use crate::aio::AsyncConnection;
use crate::error::{Error, Result};

/// Frame buffers kept for reuse by one connection, so that a call does not allocate its
/// frames afresh. For large messages that is most of a call's cost: the allocator hands
/// memory of a megabyte or more back to the system when it is freed, and the next call
/// faults it in again page by page (`rpc-shm` at 1 MiB, round trip: 2.5 ms, and 0.8 ms with
/// glibc told to keep such memory, docs/BENCHMARKS.md). Keeps at most [`POOL_MAX`]
/// buffers of at most [`RETAIN_MAX`] bytes each.
#[derive(Debug, Default)]
pub(crate) struct FramePool {
    spare: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Buffers a pool keeps.
const POOL_MAX: usize = 4;
pub(crate) use crate::transport::RETAIN_MAX;

impl FramePool {
    /// A buffer to encode a frame into (empty; with room left by an earlier frame if any).
    pub(crate) fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// Hands a frame's buffer back for a later one.
    pub(crate) fn give(&self, mut frame: Vec<u8>) {
        if frame.capacity() == 0 || frame.capacity() > RETAIN_MAX {
            return;
        }
        let mut spare = self.lock();
        if spare.len() < POOL_MAX {
            frame.clear();
            spare.push(frame);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes queued frames until the transport would block, handing each sent frame's buffer
/// to `pool`. Returns whether it blocked (frames or part of one remain).
fn pump_out(
    conn: &mut AsyncConnection,
    out: &mut VecDeque<Vec<u8>>,
    pool: &FramePool,
) -> Result<bool> {
    loop {
        match conn.try_flush() {
            Ok(()) => {}
            Err(Error::WouldBlock) => return Ok(true),
            Err(e) => return Err(e),
        }
        let Some(frame) = out.front() else {
            return Ok(false);
        };
        match conn.try_send(frame) {
            Ok(()) => {
                if let Some(sent) = out.pop_front() {
                    pool.give(sent);
                }
            }
            Err(Error::WouldBlock) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_keeps_a_few_buffers_of_bounded_size() {
        let pool = FramePool::default();
        assert_eq!(pool.take().capacity(), 0);
        let mut frame = pool.take();
        frame.extend_from_slice(&[1; 1000]);
        let cap = frame.capacity();
        pool.give(frame);
        let again = pool.take();
        assert!(again.is_empty(), "a buffer comes back cleared");
        assert_eq!(again.capacity(), cap, "the same buffer comes back");
        pool.give(Vec::with_capacity(RETAIN_MAX + 1));
        assert_eq!(pool.take().capacity(), 0, "an oversized buffer is not kept");
        for _ in 0..POOL_MAX + 2 {
            pool.give(Vec::with_capacity(64));
        }
        assert_eq!(pool.lock().len(), POOL_MAX);
    }
}
