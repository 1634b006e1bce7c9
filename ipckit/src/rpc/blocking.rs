//! The blocking RPC client, for code without an async runtime.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::endpoint::ToEndpoint;
use crate::error::{Error, Result};
use crate::rpc::wire::{self, Frame};
use crate::transport::{MessageReceiver, MessageSender, Wait};
use crate::Connection;

/// A blocking RPC client: one call at a time on its own connection, no runtime needed.
/// Talks to the same [`Server`](super::Server) as the async [`Client`](super::Client).
///
/// ```no_run
/// let mut calc: ipckit::rpc::BlockingClient<(i64, i64), i64> =
///     ipckit::rpc::BlockingClient::connect("unix:///run/user/1000/calc.sock")?;
/// let sum = calc.call_timeout(&(2, 3), std::time::Duration::from_secs(1))?;
/// # Ok::<(), ipckit::Error>(())
/// ```
pub struct BlockingClient<Req, Resp> {
    conn: Connection,
    next_id: u64,
    /// The last response frame (reused by the next).
    buf: Vec<u8>,
    /// The last request frame (reused by the next, unless larger than
    /// [`RETAIN_MAX`](super::RETAIN_MAX)).
    frame: Vec<u8>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for BlockingClient<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("rpc::BlockingClient")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> BlockingClient<Req, Resp> {
    /// Connects to an RPC server.
    pub fn connect(url: impl ToEndpoint) -> Result<Self> {
        Ok(Self::new(crate::connect(url)?))
    }

    /// Connects, waiting at most `timeout` for the server to appear.
    pub fn connect_timeout(url: impl ToEndpoint, timeout: Duration) -> Result<Self> {
        Ok(Self::new(crate::connect_timeout(url, timeout)?))
    }

    /// A client over an established connection.
    pub fn new(conn: Connection) -> Self {
        BlockingClient {
            conn,
            next_id: 1,
            buf: Vec::new(),
            frame: Vec::new(),
            _types: PhantomData,
        }
    }

    /// The core call, waiting as `wait` allows. On a timeout the server is told to cancel
    /// the call, and a response that still comes is skipped by the next call.
    pub fn call_with(&mut self, req: &Req, wait: Wait) -> Result<Resp> {
        let id = self.next_id;
        self.next_id += 1;
        wire::request_into(&mut self.frame, id, req)?;
        let sent = self.conn.send_with(&self.frame, wait);
        if self.frame.capacity() > super::RETAIN_MAX {
            self.frame = Vec::new();
        }
        sent.map_err(gone)?;
        loop {
            match self.conn.recv_into_with(&mut self.buf, wait) {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    // Best effort: the connection may be full or gone.
                    let _ = self.conn.send_with(&wire::cancel(id), Wait::Never);
                    return Err(e);
                }
                Err(e) => return Err(gone(e)),
            }
            let (got, reply) = match wire::decode(&self.buf)? {
                Frame::Response { id, body } => (id, Ok(body)),
                Frame::Failure { id, failure } => (id, Err(Error::from(failure))),
                other => {
                    return Err(Error::Protocol(format!(
                        "an RPC server sent a client frame: {other:?}"
                    )))
                }
            };
            // Responses to earlier calls that timed out are skipped.
            if got == id {
                return crate::transport::decode(reply?);
            }
        }
    }

    /// Calls the server and waits for the response as long as it takes.
    pub fn call(&mut self, req: &Req) -> Result<Resp> {
        self.call_with(req, Wait::Forever)
    }

    /// Calls the server, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn call_timeout(&mut self, req: &Req, timeout: Duration) -> Result<Resp> {
        self.call_with(req, Wait::Until(Instant::now() + timeout))
            .map_err(|e| e.after(timeout))
    }
}

/// A connection that ended under a call: the call's peer is gone.
fn gone(e: Error) -> Error {
    if e.is_disconnect() {
        Error::PeerGone
    } else {
        e
    }
}
