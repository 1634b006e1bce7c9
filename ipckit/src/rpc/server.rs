//! The RPC server: accepts connections and runs an async handler per request.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::{AbortHandle, JoinSet};

use crate::aio::{AsyncConnection, AsyncListener, Ready};
use crate::endpoint::{Endpoint, ToEndpoint};
use crate::error::{Error, Result};
use crate::rpc::wire::{self, Failure, Frame};
use crate::rpc::FramePool;

/// An RPC server bound to an endpoint (`unix://`, `tcp://`, `shm://`, …).
///
/// [`serve`](Server::serve) accepts clients and, for every request, spawns the handler on
/// the current runtime, so requests of one connection run concurrently and their
/// responses go back in the order they finish. A request that does not decode as `Req`
/// gets [`Error::BadRequest`] at its caller; a handler that panics,
/// [`Error::HandlerFailed`]; a call the client cancels (or times out, or drops) has its
/// handler aborted. A client that dies or sends garbage loses its connection, nobody else
/// notices.
pub struct Server<Req, Resp> {
    listener: AsyncListener,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> std::fmt::Debug for Server<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("rpc::Server")
            .field("endpoint", &self.listener.endpoint().to_string())
            .finish()
    }
}

impl<Req, Resp> Server<Req, Resp>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// Binds `url` (needs a tokio runtime: the listener registers with it).
    pub fn bind(url: impl ToEndpoint) -> Result<Self> {
        Ok(Server {
            listener: crate::aio::bind(url)?,
            _types: PhantomData,
        })
    }

    /// The endpoint as bound (with the real port for `tcp://…:0`).
    pub fn endpoint(&self) -> &Endpoint {
        self.listener.endpoint()
    }

    /// Serves clients until accepting fails (each connection runs in a task of its own).
    /// To stop, drop the future (e.g. in `tokio::select!` with a shutdown signal):
    /// connections already accepted keep being served until their clients leave.
    pub async fn serve<F, Fut>(mut self, handler: F) -> Result<()>
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let handler = Arc::new(handler);
        loop {
            let conn = match self.listener.accept().await {
                Ok(c) => c,
                Err(Error::TooManyOpenFiles { .. }) => {
                    // Keep serving the clients we have; try again shortly.
                    tracing::warn!("rpc server out of descriptors; accept paused");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            tokio::spawn(serve_connection(conn, handler.clone()));
        }
    }
}

/// Serves one connection until it ends, with any number of requests in flight.
pub async fn serve_connection<Req, Resp, F, Fut>(mut conn: AsyncConnection, handler: Arc<F>)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let mut calls = Calls::default();
    let pool = Arc::new(FramePool::default());
    if let Err(e) = run(&mut conn, &*handler, &mut calls, &pool).await {
        tracing::debug!(error = %e, "rpc connection ended");
    }
    // The client is gone: stop its work.
    calls.tasks.abort_all();
}

/// The handlers running for one connection.
struct Calls {
    tasks: JoinSet<(u64, Vec<u8>)>,
    /// Call id → its task, for cancellation.
    by_call: HashMap<u64, AbortHandle>,
    /// Task id → call id, to answer for a handler that panicked.
    by_task: HashMap<tokio::task::Id, u64>,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            tasks: JoinSet::new(),
            by_call: HashMap::new(),
            by_task: HashMap::new(),
        }
    }
}

async fn run<Req, Resp, F, Fut>(
    conn: &mut AsyncConnection,
    handler: &F,
    calls: &mut Calls,
    pool: &Arc<FramePool>,
) -> Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let mut out: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = Vec::new();
    loop {
        let blocked = super::pump_out(conn, &mut out, pool)?;
        loop {
            match conn.try_recv_into(&mut buf) {
                Ok(()) => match take_request(&buf, handler, calls, pool)? {
                    Incoming::Reply(reply) => out.push_back(reply),
                    Incoming::Call(id, mut call) => {
                        // Most handlers finish at once: poll here first and spawn a task
                        // only for those that wait (the task goes on from where this left).
                        let first = std::future::poll_fn(|cx| {
                            std::task::Poll::Ready(std::panic::catch_unwind(
                                std::panic::AssertUnwindSafe(|| call.as_mut().poll(cx)),
                            ))
                        })
                        .await;
                        match first {
                            Ok(std::task::Poll::Ready((_, frame))) => out.push_back(frame),
                            Ok(std::task::Poll::Pending) => {
                                let abort = calls.tasks.spawn(call);
                                calls.by_task.insert(abort.id(), id);
                                calls.by_call.insert(id, abort);
                            }
                            Err(panic) => out.push_back(wire::failure(
                                id,
                                &Failure::HandlerFailed(panic_message(panic)),
                            )),
                        }
                    }
                    Incoming::Nothing => {}
                },
                Err(Error::WouldBlock) => break,
                Err(e) => return Err(e),
            }
        }
        if !out.is_empty() && !blocked {
            continue;
        }
        tokio::select! {
            biased;
            Some(done) = calls.tasks.join_next_with_id(), if !calls.tasks.is_empty() => {
                if let Some(reply) = finished(done, calls) {
                    out.push_back(reply);
                }
                while let Some(done) = calls.tasks.try_join_next_with_id() {
                    if let Some(reply) = finished(done, calls) {
                        out.push_back(reply);
                    }
                }
            }
            r = conn.ready(Ready { recv: true, send: blocked }) => r?,
        }
    }
}

/// What an incoming frame asks for.
enum Incoming {
    /// An answer to send at once (a request that did not decode).
    Reply(Vec<u8>),
    /// A handler to run: it yields the call id and the response frame.
    Call(u64, Pin<Box<dyn Future<Output = (u64, Vec<u8>)> + Send>>),
    /// Nothing to send (a cancellation).
    Nothing,
}

/// Handles one incoming frame: prepares a handler, cancels one, or answers a bad request.
fn take_request<Req, Resp, F, Fut>(
    bytes: &[u8],
    handler: &F,
    calls: &mut Calls,
    pool: &Arc<FramePool>,
) -> Result<Incoming>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    match wire::decode(bytes)? {
        Frame::Request { id, body } => match postcard::from_bytes::<Req>(body) {
            Ok(req) => {
                let fut = handler(req);
                let pool = pool.clone();
                Ok(Incoming::Call(
                    id,
                    Box::pin(async move {
                        let resp = fut.await;
                        let mut frame = pool.take();
                        if let Err(e) = wire::response_into(&mut frame, id, &resp) {
                            frame = wire::failure(id, &Failure::HandlerFailed(e.to_string()));
                        }
                        (id, frame)
                    }),
                ))
            }
            Err(e) => Ok(Incoming::Reply(wire::failure(
                id,
                &Failure::BadRequest(format!(
                    "{} bytes are not a {}: {e}",
                    body.len(),
                    std::any::type_name::<Req>()
                )),
            ))),
        },
        Frame::Cancel { id } => {
            if let Some(task) = calls.by_call.remove(&id) {
                tracing::trace!(id, "rpc call cancelled by its client");
                task.abort();
            }
            Ok(Incoming::Nothing)
        }
        other => Err(Error::Protocol(format!(
            "an RPC client sent a server frame: {other:?}"
        ))),
    }
}

/// The response of a finished handler; `None` for one that was cancelled.
fn finished(
    done: std::result::Result<(tokio::task::Id, (u64, Vec<u8>)), tokio::task::JoinError>,
    calls: &mut Calls,
) -> Option<Vec<u8>> {
    match done {
        Ok((task, (id, frame))) => {
            calls.by_task.remove(&task);
            calls.by_call.remove(&id);
            Some(frame)
        }
        Err(e) => {
            let id = calls.by_task.remove(&e.id())?;
            calls.by_call.remove(&id);
            if e.is_panic() {
                let reason = panic_message(e.into_panic());
                tracing::warn!(id, %reason, "rpc handler panicked");
                Some(wire::failure(id, &Failure::HandlerFailed(reason)))
            } else {
                None
            }
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => format!("handler panicked: {s}"),
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => format!("handler panicked: {s}"),
            Err(_) => "handler panicked".to_owned(),
        },
    }
}
