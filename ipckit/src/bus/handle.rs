//! The public handles of the bus: each is the local backend's concrete type or a registered
//! backend's boxed one ([`backend`](super::backend)), chosen by [`Bus::open`]'s URL.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::transport::Wait;

use super::backend::{self, BackendBus, BackendSubscriber, BackendWatch};
use super::{
    BusStats, LocalBus, LocalServe, LocalSubscriber, LocalWatch, Message, MessageRef, Peer,
    PeerEvent, SubscribeOptions,
};

/// A handle on a bus: publish, subscribe, request, serve. Cheap to clone (clones share one
/// node); the node leaves the bus when the last handle, subscriber and responder are gone.
#[derive(Clone)]
pub struct Bus {
    inner: BusInner,
}

#[derive(Clone)]
enum BusInner {
    Local(LocalBus),
    Dyn(Arc<dyn BackendBus>),
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            BusInner::Local(b) => b.fmt(f),
            BusInner::Dyn(b) => f
                .debug_struct("Bus")
                .field("namespace", &b.namespace())
                .field("node", &format_args!("{:016x}", b.node_id()))
                .finish(),
        }
    }
}

impl Bus {
    /// Joins the bus the URL names: `bus://local` or `bus://local/NAMESPACE`, with
    /// `?depth=N&overflow=drop|block` (subscription defaults), `timeout_ms=N` (how long a
    /// publish waits for a `block` subscriber), `slots=N` and `max_msg=SIZE` (this node's
    /// ring), `spin_us=N` (how long a receive, or a publisher waiting for room, spins before it
    /// sleeps; it yields the CPU every few looks).
    ///
    /// Any other `bus://HOST...` goes to the backend registered for `HOST`
    /// ([`register_backend`](super::register_backend)): `bus://zenoh?...` after
    /// `ipckit_zenoh::install()`, and before it [`Error::Unsupported`].
    pub fn open(url: &str) -> Result<Bus> {
        let inner = match backend::lookup(url) {
            Some(b) => BusInner::Dyn(Arc::from(b.open(url)?)),
            None => BusInner::Local(LocalBus::open(url)?),
        };
        Ok(Bus { inner })
    }

    /// The backend's own handle when this bus is not `bus://local`, for what only that
    /// backend has: `bus.backend()?.as_any().downcast_ref::<ipckit_zenoh::Bus>()` (e.g. its
    /// `wait_for` or zenoh session). `None` on `bus://local`.
    pub fn backend(&self) -> Option<&dyn BackendBus> {
        match &self.inner {
            BusInner::Local(_) => None,
            BusInner::Dyn(b) => Some(&**b),
        }
    }

    /// This node's id (as [`Message::publisher`] and [`Peer::node_id`] give it).
    pub fn node_id(&self) -> u64 {
        match &self.inner {
            BusInner::Local(b) => b.node_id(),
            BusInner::Dyn(b) => b.node_id(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        match &self.inner {
            BusInner::Local(b) => b.namespace(),
            BusInner::Dyn(b) => b.namespace(),
        }
    }

    /// The largest payload this node can publish on `topic` (`usize::MAX` on a backend with
    /// no limit of its own).
    pub fn max_message_size(&self, topic: &str) -> usize {
        match &self.inner {
            BusInner::Local(b) => b.max_message_size(topic),
            BusInner::Dyn(b) => b.max_message_size(topic),
        }
    }

    /// Publishes `payload` on `topic`, waiting for `block` subscribers at most the URL's
    /// `timeout_ms` (default 1 s).
    #[inline]
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<()> {
        match &self.inner {
            BusInner::Local(b) => b.publish(topic, payload),
            BusInner::Dyn(b) => b.publish(topic, payload),
        }
    }

    /// Publishes, waiting for `block` subscribers as `wait` allows ([`Wait::Never`]: fail
    /// with [`Error::WouldBlock`] at once). On failure nothing was sent to anyone. (Other
    /// backends say what their wait means: on `bus://zenoh` it chooses zenoh's congestion
    /// control.)
    #[inline]
    pub fn publish_with(&self, topic: &str, payload: &[u8], wait: Wait) -> Result<()> {
        match &self.inner {
            BusInner::Local(b) => b.publish_with(topic, payload, wait),
            BusInner::Dyn(b) => b.publish_with(topic, payload, wait),
        }
    }

    /// Publishes a value (serde + postcard); receivers use [`Message::decode`].
    pub fn publish_typed<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        crate::transport::with_encoded(value, |bytes| self.publish(topic, bytes))
    }

    /// Subscribes to a topic or pattern with the URL's depth and overflow policy. On
    /// `bus://local`, [`Error::LimitExceeded`] when a node publishing a matching topic
    /// already has 64 readers (see the module's *Limits*).
    pub fn subscribe(&self, pattern: &str) -> Result<Subscriber> {
        let inner = match &self.inner {
            BusInner::Local(b) => SubInner::Local(b.subscribe(pattern)?),
            BusInner::Dyn(b) => SubInner::Dyn(b.subscribe(pattern)?),
        };
        Ok(Subscriber {
            inner,
            pending: None,
        })
    }

    /// Subscribes with explicit options. The subscriber receives what matching publishers
    /// publish from now on.
    pub fn subscribe_with(&self, pattern: &str, opts: SubscribeOptions) -> Result<Subscriber> {
        let inner = match &self.inner {
            BusInner::Local(b) => SubInner::Local(b.subscribe_with(pattern, opts)?),
            BusInner::Dyn(b) => SubInner::Dyn(b.subscribe_with(pattern, opts)?),
        };
        Ok(Subscriber {
            inner,
            pending: None,
        })
    }

    /// Answers requests on `pattern` with `handler` on a thread of its own until the returned
    /// handle is dropped. Requests wait in a subscription with the URL's depth and policy.
    pub fn serve<F>(&self, pattern: &str, handler: F) -> Result<ServeHandle>
    where
        F: FnMut(&Message) -> Vec<u8> + Send + 'static,
    {
        let inner = match &self.inner {
            BusInner::Local(b) => ServeInner::Local(b.serve(pattern, handler)?),
            BusInner::Dyn(b) => ServeInner::Dyn(b.serve(pattern, Box::new(handler))?),
        };
        Ok(ServeHandle { _inner: inner })
    }

    /// Sends a request on `topic` and waits at most `timeout` for the first reply. With no
    /// live responder serving the topic it fails at once with
    /// [`Error::ConnectionRefused`]; with one that does not answer in time, [`Error::Timeout`].
    /// On `bus://local`, when the last responder serving it dies or drops its responder
    /// before answering, [`Error::Disconnected`] at once (within 10 ms).
    pub fn request(&self, topic: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        match &self.inner {
            BusInner::Local(b) => b.request(topic, payload, timeout),
            BusInner::Dyn(b) => b.request(topic, payload, timeout),
        }
    }

    /// [`request`](Self::request) with a typed request and reply.
    pub fn request_typed<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        topic: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        let bytes = postcard::to_stdvec(req).map_err(Error::Encode)?;
        crate::decode(&self.request(topic, &bytes, timeout)?)
    }

    /// [`request`](Self::request) from async code (runs on tokio's blocking pool).
    #[cfg(feature = "tokio")]
    pub async fn request_async(
        &self,
        topic: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let (bus, topic, payload) = (self.clone(), topic.to_owned(), payload.to_vec());
        tokio::task::spawn_blocking(move || bus.request(&topic, &payload, timeout))
            .await
            .map_err(|e| Error::Io {
                op: "bus request task",
                source: std::io::Error::other(e),
            })?
    }

    /// The live nodes of this namespace (this one included) and what they declared.
    pub fn peers(&self) -> Vec<Peer> {
        match &self.inner {
            BusInner::Local(b) => b.peers(),
            BusInner::Dyn(b) => b.peers(),
        }
    }

    /// Watches nodes joining, declaring and leaving (the liveliness of publishers and
    /// responders). (On `bus://zenoh` the first events describe the nodes already there.)
    pub fn watch(&self) -> PeerWatch {
        let inner = match &self.inner {
            BusInner::Local(b) => WatchInner::Local(b.watch()),
            BusInner::Dyn(b) => WatchInner::Dyn(b.watch()),
        };
        PeerWatch { inner }
    }

    /// What this node published and how its readers keep up (on a backend whose publishers
    /// cannot see their remote readers, such as `bus://zenoh`, `readers` is empty).
    pub fn stats(&self) -> BusStats {
        match &self.inner {
            BusInner::Local(b) => b.stats(),
            BusInner::Dyn(b) => b.stats(),
        }
    }

    /// Writes `raw` as the body of the next message of this node, bypassing every check:
    /// for tests of how receivers handle malformed messages. `bus://local` only (elsewhere
    /// [`Error::Unsupported`]).
    #[doc(hidden)]
    pub fn publish_malformed(&self, raw: &[u8]) -> Result<()> {
        match &self.inner {
            BusInner::Local(b) => b.publish_malformed(raw),
            BusInner::Dyn(_) => Err(Error::Unsupported {
                op: "publish_malformed",
                what: "a bus backend other than bus://local",
            }),
        }
    }
}

/// Receives the messages of one subscription ([`Bus::subscribe`]).
pub struct Subscriber {
    inner: SubInner,
    /// An error a batch receive met after its first message (other backends than
    /// `bus://local`, which stops a batch before a bad message instead): the next receive
    /// returns it.
    pending: Option<Error>,
}

// The local subscriber stays inline: boxing it would add an indirection to every receive.
#[allow(clippy::large_enum_variant)]
enum SubInner {
    Local(LocalSubscriber),
    Dyn(Box<dyn BackendSubscriber>),
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            SubInner::Local(s) => s.fmt(f),
            SubInner::Dyn(s) => f
                .debug_struct("Subscriber")
                .field("pattern", &s.pattern())
                .finish_non_exhaustive(),
        }
    }
}

impl Subscriber {
    /// The pattern.
    pub fn pattern(&self) -> &str {
        match &self.inner {
            SubInner::Local(s) => s.pattern(),
            SubInner::Dyn(s) => s.pattern(),
        }
    }

    /// Messages this subscription skipped because it was full (drop policy) or overtaken.
    pub fn drops(&self) -> u64 {
        match &self.inner {
            SubInner::Local(s) => s.drops(),
            SubInner::Dyn(s) => s.drops(),
        }
    }

    /// Messages received.
    pub fn delivered(&self) -> u64 {
        match &self.inner {
            SubInner::Local(s) => s.delivered(),
            SubInner::Dyn(s) => s.delivered(),
        }
    }

    /// Malformed messages met (each was reported once as [`Error::Corrupted`]).
    pub fn corrupted(&self) -> u64 {
        match &self.inner {
            SubInner::Local(s) => s.corrupted(),
            SubInner::Dyn(s) => s.corrupted(),
        }
    }

    /// The nodes this subscription currently reads (publishers of matching topics).
    /// `bus://local` only: empty on other backends, whose subscribers do not know their
    /// publishers before a message comes.
    pub fn publishers(&self) -> Vec<u64> {
        match &self.inner {
            SubInner::Local(s) => s.publishers(),
            SubInner::Dyn(_) => Vec::new(),
        }
    }

    /// The next message, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Message> {
        self.recv_with(Wait::Forever)
    }

    /// The next message if one is there, else [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<Message> {
        self.recv_with(Wait::Never)
    }

    /// The next message, waiting at most `timeout`, else [`Error::Timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message> {
        let mut m = Message::default();
        self.recv_into_timeout(&mut m, timeout)?;
        Ok(m)
    }

    /// The next message, waiting as `wait` allows.
    pub fn recv_with(&mut self, wait: Wait) -> Result<Message> {
        let mut m = Message::default();
        self.recv_into_with(&mut m, wait)?;
        Ok(m)
    }

    /// The next message decoded as a `T` (a payload that is not a `T` is [`Error::Decode`],
    /// and the subscription goes on).
    pub fn recv_typed_timeout<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<(String, T)> {
        let m = self.recv_timeout(timeout)?;
        let v = m.decode()?;
        Ok((m.topic, v))
    }

    /// Fills `msg` with the next message (reusing its buffers), waiting as long as it takes.
    pub fn recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.recv_into_with(msg, Wait::Forever)
    }

    /// Fills `msg` with the next message if one is there, else [`Error::WouldBlock`].
    pub fn try_recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.recv_into_with(msg, Wait::Never)
    }

    /// Fills `msg` with the next message, waiting at most `timeout`, else
    /// [`Error::Timeout`].
    pub fn recv_into_timeout(&mut self, msg: &mut Message, timeout: Duration) -> Result<()> {
        self.recv_into_with(msg, Wait::timeout(timeout))
            .map_err(|e| match e {
                Error::Timeout { .. } => Error::Timeout {
                    after: Some(timeout),
                },
                e => e,
            })
    }

    /// The core receive: fills `msg` (reusing its buffers), waiting as `wait` allows.
    #[inline]
    pub fn recv_into_with(&mut self, msg: &mut Message, wait: Wait) -> Result<()> {
        match &mut self.inner {
            SubInner::Local(s) => s.recv_into_with(msg, wait),
            SubInner::Dyn(s) => match self.pending.take() {
                Some(e) => Err(e),
                None => s.recv_into_with(msg, wait),
            },
        }
    }

    /// Hands the messages waiting to `f`, up to `max` of them, waiting as long as it takes
    /// for the first; returns how many. One call for many messages: on `bus://local` the
    /// subscription tells the publisher how far it has read once per batch, not once per
    /// message, and nothing is copied into a [`Message`].
    ///
    /// ```
    /// use ipckit::bus::Bus;
    /// # fn main() -> ipckit::Result<()> {
    /// # let url = format!("bus://local/doc-batch-{}", std::process::id());
    /// let bus = Bus::open(&url)?;
    /// let mut sub = bus.subscribe("sensors/**")?;
    /// for i in 0..3u8 {
    ///     bus.publish("sensors/t", &[i])?;
    /// }
    /// let mut sum = 0;
    /// let n = sub.recv_batch(64, |m| sum += m.payload()[0])?;
    /// assert_eq!((n, sum), (3, 3));
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_batch<F: FnMut(MessageRef<'_>)>(&mut self, max: usize, f: F) -> Result<usize> {
        self.recv_batch_with(max, Wait::Forever, f)
    }

    /// [`recv_batch`](Self::recv_batch) of the messages there now; none there is
    /// [`Error::WouldBlock`].
    pub fn try_recv_batch<F: FnMut(MessageRef<'_>)>(&mut self, max: usize, f: F) -> Result<usize> {
        self.recv_batch_with(max, Wait::Never, f)
    }

    /// [`recv_batch`](Self::recv_batch), waiting at most `timeout` for the first message,
    /// else [`Error::Timeout`].
    pub fn recv_batch_timeout<F: FnMut(MessageRef<'_>)>(
        &mut self,
        max: usize,
        timeout: Duration,
        f: F,
    ) -> Result<usize> {
        self.recv_batch_with(max, Wait::timeout(timeout), f)
            .map_err(|e| e.after(timeout))
    }

    /// The core batch receive: up to `max` messages to `f` (`max` 0 returns 0 at once),
    /// waiting for the first as `wait` allows. A malformed message after the first is left
    /// for the next receive, which reports it ([`Error::Corrupted`]).
    pub fn recv_batch_with<F: FnMut(MessageRef<'_>)>(
        &mut self,
        max: usize,
        wait: Wait,
        mut f: F,
    ) -> Result<usize> {
        match &mut self.inner {
            SubInner::Local(s) => s.recv_batch_with(max, wait, f),
            SubInner::Dyn(s) => {
                if let Some(e) = self.pending.take() {
                    return Err(e);
                }
                let mut msg = Message::default();
                let mut n = 0;
                while n < max {
                    let w = if n == 0 { wait } else { Wait::Never };
                    match s.recv_into_with(&mut msg, w) {
                        Ok(()) => {
                            f(msg.as_ref());
                            n += 1;
                        }
                        Err(Error::WouldBlock) if n > 0 => break,
                        Err(e) if n == 0 => return Err(e),
                        Err(e) => {
                            self.pending = Some(e);
                            break;
                        }
                    }
                }
                Ok(n)
            }
        }
    }

    /// The next message, from async code: sleeps on the same doorbell through the futex
    /// watcher (no thread per receiver, no CPU while idle). `bus://local` only (elsewhere
    /// [`Error::Unsupported`]: call the blocking receives on a blocking pool).
    #[cfg(feature = "tokio")]
    pub async fn recv_async(&mut self) -> Result<Message> {
        match &mut self.inner {
            SubInner::Local(s) => s.recv_async().await,
            SubInner::Dyn(_) => Err(Error::Unsupported {
                op: "Subscriber::recv_async",
                what: "a bus backend other than bus://local (use recv on a blocking pool)",
            }),
        }
    }
}

/// Reports changes among the nodes of a bus: see [`Bus::watch`].
pub struct PeerWatch {
    inner: WatchInner,
}

enum WatchInner {
    Local(LocalWatch),
    Dyn(Box<dyn BackendWatch>),
}

impl std::fmt::Debug for PeerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            WatchInner::Local(w) => w.fmt(f),
            WatchInner::Dyn(_) => f.debug_struct("PeerWatch").finish_non_exhaustive(),
        }
    }
}

impl PeerWatch {
    /// The nodes known at the last look.
    pub fn peers(&self) -> Vec<Peer> {
        match &self.inner {
            WatchInner::Local(w) => w.peers(),
            WatchInner::Dyn(w) => w.peers(),
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<PeerEvent> {
        self.next_with(Wait::timeout(timeout))
    }

    /// The next event, waiting as `wait` allows.
    pub fn next_with(&mut self, wait: Wait) -> Result<PeerEvent> {
        match &mut self.inner {
            WatchInner::Local(w) => w.next_with(wait),
            WatchInner::Dyn(w) => w.next_with(wait),
        }
    }
}

/// Stops a responder of [`Bus::serve`] when dropped.
pub struct ServeHandle {
    _inner: ServeInner,
}

enum ServeInner {
    Local(#[allow(dead_code)] LocalServe),
    Dyn(#[allow(dead_code)] Box<dyn Any + Send + Sync>),
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle").finish_non_exhaustive()
    }
}
