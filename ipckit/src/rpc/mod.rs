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

/// Writes queued frames until the transport would block. Returns whether it blocked
/// (frames or part of one remain).
fn pump_out(conn: &mut AsyncConnection, out: &mut VecDeque<Vec<u8>>) -> Result<bool> {
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
                out.pop_front();
            }
            Err(Error::WouldBlock) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}
