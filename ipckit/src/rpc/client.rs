//! The async RPC client: many calls in flight on one connection, answered in any order.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::aio::{AsyncConnection, Ready};
use crate::endpoint::ToEndpoint;
use crate::error::{Error, Result};
use crate::rpc::wire::{self, Frame};
use crate::rpc::FramePool;

/// A response frame, whole (its buffer goes back to the pool once decoded), or why there is
/// none.
type Reply = Result<Vec<u8>>;

/// Calls waiting for their response, by id.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set when the connection ended: later calls fail at once.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    /// Buffers of sent requests and decoded responses, for the next frames.
    frames: FramePool,
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// An RPC client over one connection, typed by its request and response.
///
/// [`call`](Client::call) returns a future of the response; any number of calls may be in
/// flight at once (clone the client to call from several tasks). Dropping a call's future
/// before it completes cancels it: the server is told, and aborts the handler. If the
/// connection ends (the server exits, is killed, or closes it), every call in flight fails
/// with [`Error::PeerGone`] at once.
///
/// The connection is driven by a task spawned on the current tokio runtime; it ends when
/// the last clone of the client is dropped.
pub struct Client<Req, Resp> {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for Client<Req, Resp> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
            out: self.out.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> std::fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("rpc::Client")
            .field("in_flight", &lock(&self.shared.pending).calls.len())
            .finish()
    }
}

impl<Req: Serialize, Resp: DeserializeOwned> Client<Req, Resp> {
    /// Connects to an RPC server (`unix://`, `tcp://`, `shm://`, …) and starts the
    /// connection's task on the current runtime.
    pub async fn connect(url: impl ToEndpoint) -> Result<Self> {
        Ok(Client::new(crate::aio::connect(url).await?))
    }

    /// [`connect`](Self::connect), waiting at most `timeout` for the server to appear.
    pub async fn connect_timeout(url: impl ToEndpoint, timeout: Duration) -> Result<Self> {
        Ok(Client::new(
            crate::aio::connect_timeout(url, timeout).await?,
        ))
    }

    /// A client over an established connection; spawns its task on the current runtime.
    pub fn new(conn: AsyncConnection) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            next_id: AtomicU64::new(1),
            frames: FramePool::default(),
        });
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(conn, rx, shared.clone()));
        Client {
            shared,
            out,
            _types: PhantomData,
        }
    }

    /// Calls the server: sends `req` and waits for the response. Dropping the future
    /// cancels the call (the server aborts its handler).
    pub async fn call(&self, req: &Req) -> Result<Resp> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = self.shared.frames.take();
        wire::request_into(&mut frame, id, req)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.shared.pending);
            if p.closed {
                return Err(Error::PeerGone);
            }
            p.calls.insert(id, tx);
        }
        let mut guard = InFlight {
            id,
            client: &self.shared,
            out: &self.out,
            done: false,
        };
        if self.out.send(frame).is_err() {
            guard.done = true;
            lock(&self.shared.pending).calls.remove(&id);
            return Err(Error::PeerGone);
        }
        let reply = rx.await;
        guard.done = true;
        let frame = reply.unwrap_or(Err(Error::PeerGone))?;
        // `deliver` checked that the frame holds its header.
        let resp = crate::transport::decode(frame.get(wire::HEADER..).unwrap_or_default());
        self.shared.frames.give(frame);
        resp
    }

    /// [`call`](Self::call) with a time limit: past it the call is cancelled (the server is
    /// told) and [`Error::Timeout`] returned.
    pub async fn call_timeout(&self, req: &Req, timeout: Duration) -> Result<Resp> {
        crate::aio::with_timeout(timeout, self.call(req)).await
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.pending).calls.len()
    }
}

/// Cancels a call whose future is dropped before its response came.
struct InFlight<'a> {
    id: u64,
    client: &'a Shared,
    out: &'a mpsc::UnboundedSender<Vec<u8>>,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done && lock(&self.client.pending).calls.remove(&self.id).is_some() {
            let _ = self.out.send(wire::cancel(self.id));
        }
    }
}

/// The connection's task: writes queued frames, reads responses and hands each to its call.
async fn drive(
    mut conn: AsyncConnection,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    let end = run(&mut conn, &mut rx, &shared).await;
    if let Err(e) = &end {
        tracing::debug!(error = %e, "rpc client connection ended");
    }
    let calls = {
        let mut p = lock(&shared.pending);
        p.closed = true;
        std::mem::take(&mut p.calls)
    };
    for (_, call) in calls {
        let _ = call.send(Err(Error::PeerGone));
    }
}

async fn run(
    conn: &mut AsyncConnection,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    shared: &Shared,
) -> Result<()> {
    let mut out = VecDeque::new();
    let mut buf = Vec::new();
    loop {
        let blocked = super::pump_out(conn, &mut out, &shared.frames)?;
        loop {
            match conn.try_recv_into(&mut buf) {
                Ok(()) => deliver(&mut buf, shared)?,
                Err(Error::WouldBlock) => break,
                Err(e) => return Err(e),
            }
        }
        tokio::select! {
            biased;
            frame = rx.recv() => match frame {
                Some(f) => {
                    out.push_back(f);
                    while let Ok(f) = rx.try_recv() {
                        out.push_back(f);
                    }
                }
                // Every clone of the client is gone: nothing can call any more.
                None => return Ok(()),
            },
            r = conn.ready(Ready { recv: true, send: blocked }) => r?,
        }
    }
}

/// Hands a response to its call (a call cancelled meanwhile is simply gone): the frame
/// itself, `buf` taking a buffer from the pool in its place.
fn deliver(buf: &mut Vec<u8>, shared: &Shared) -> Result<()> {
    let (id, failure) = match wire::decode(buf)? {
        Frame::Response { id, .. } => (id, None),
        Frame::Failure { id, failure } => (id, Some(Error::from(failure))),
        other => {
            return Err(Error::Protocol(format!(
                "an RPC server sent a client frame: {other:?}"
            )))
        }
    };
    let Some(call) = lock(&shared.pending).calls.remove(&id) else {
        return Ok(());
    };
    let reply = match failure {
        None => Ok(std::mem::replace(buf, shared.frames.take())),
        Some(e) => Err(e),
    };
    if let Err(Ok(frame)) = call.send(reply) {
        shared.frames.give(frame);
    }
    Ok(())
}
