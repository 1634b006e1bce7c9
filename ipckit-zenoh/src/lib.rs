//! The Zenoh backend of the ipckit bus: `bus://zenoh?connect=tcp/HOST:PORT&listen=tcp/ADDR:PORT`.
//!
//! The same publish/subscribe and request/reply API as [`ipckit::bus::Bus`] (`bus://local`),
//! across machines, over [Zenoh](https://zenoh.io): the method names and signatures are the
//! same, so code written against one runs against the other by changing the `use` line and
//! the URL.
//!
//! ipckit does not link zenoh: `ipckit::bus::Bus::open("bus://zenoh?...")` answers with
//! [`ipckit::Error::Unsupported`] (naming this crate) until [`install`] has registered this
//! crate as the backend of `bus://zenoh` URLs. From then on, in this process,
//! `ipckit::bus::Bus::open` returns an [`ipckit::bus::Bus`] that works over zenoh, so code
//! and tools written against `ipckit::bus` alone (such as `ipckit bus pub|sub|req|ls`, which
//! runs this crate's `ipckit-zenoh-bus` for a `bus://zenoh` URL) take either backend from the
//! URL. What only this crate has ([`Bus::wait_for`], [`Bus::session`], [`Bus::try_peers`],
//! [`Bus::try_watch`]) stays on [`Bus`]: [`Bus::from_ipckit`] gives it back from an
//! `ipckit::bus::Bus`.
//!
//! ```
//! # use std::time::Duration;
//! ipckit_zenoh::install();
//! let sock = std::env::temp_dir().join(format!("ipckit-zenoh-doc2-{}.sock", std::process::id()));
//! let bus = ipckit::bus::Bus::open(&format!("bus://zenoh/doc?listen=unixsock-stream/{}", sock.display()))?;
//! let mut sub = bus.subscribe("a/*")?;
//! bus.publish("a/b", b"over zenoh")?;                 // a node receives its own messages
//! assert_eq!(sub.recv_timeout(Duration::from_secs(10))?.payload(), b"over zenoh");
//! assert!(ipckit_zenoh::Bus::from_ipckit(&bus).is_some());
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! ```
//! use ipckit_zenoh::Bus;
//! use std::time::Duration;
//!
//! // Two nodes: one listens, the other connects (here on a Unix socket; across machines
//! // `listen=tcp/0.0.0.0:7447` on one and `connect=tcp/HOST:7447` on the other).
//! let sock = std::env::temp_dir().join(format!("ipckit-zenoh-doc-{}.sock", std::process::id()));
//! let a = Bus::open(&format!("bus://zenoh/doc?listen=unixsock-stream/{}", sock.display()))?;
//! let b = Bus::open(&format!("bus://zenoh/doc?connect=unixsock-stream/{}", sock.display()))?;
//!
//! let mut temps = b.subscribe("sensors/*/temp")?;   // `*`: one level, `**`: any depth
//! let _echo = a.serve("svc/echo", |req| req.payload().to_vec())?;
//! // Wait until `a` sees the subscription (liveliness), then publish.
//! a.wait_for(|p| p.subscribes.iter().any(|s| s == "sensors/*/temp"), Duration::from_secs(10))?;
//! a.publish("sensors/kitchen/temp", b"21.5")?;
//! let msg = temps.recv_timeout(Duration::from_secs(10))?;
//! assert_eq!((msg.topic(), msg.payload()), ("sensors/kitchen/temp", &b"21.5"[..]));
//!
//! b.wait_for(|p| p.serves.iter().any(|s| s == "svc/echo"), Duration::from_secs(10))?;
//! assert_eq!(b.request("svc/echo", b"hi", Duration::from_secs(10))?, b"hi");
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! ## The URL
//! `bus://zenoh[/NAMESPACE]?connect=E&listen=E&...` where each `E` is `tcp/HOST:PORT` or
//! `unixsock-stream/PATH` (these two transports only; `%2F` may stand for `/` in a path);
//! `connect` and `listen` may repeat. A node listens only where the URL says (nowhere by
//! default) and scouts with multicast only with `scouting=multicast`. Also: `mode=peer`
//! (default) `|client|router`, `depth=N` and `overflow=drop|block` (subscription defaults),
//! `timeout_ms=N`, `lease_ms=N` (how soon a silent peer is declared gone; default 10 s — a
//! killed process whose socket the kernel closes is noticed at once). With a namespace,
//! every key is `NAMESPACE/topic`; without, the topic is the zenoh key itself, so plain zenoh
//! applications can publish to and subscribe from ipckit ones.
//!
//! ## Topics and patterns
//! The same as `bus://local` ([`validate_topic`], [`ipckit::bus::Pattern`]): levels separated
//! by `/`, `*` one level and `**` any number of levels (zero included), mapped to the zenoh
//! key-expression wildcards `*` and `**`, which mean the same. Zenoh also refuses `#`, `?`,
//! `$` and levels starting with `@` ([`ipckit::Error::InvalidName`]).
//!
//! ## Overflow
//! Every subscription has a bounded queue of `depth` messages with an explicit [`Overflow`]:
//! - [`Overflow::DropOldest`] (default): the oldest message is skipped and counted
//!   ([`Subscriber::drops`]). zenoh's reception never waits for a slow subscriber.
//! - [`Overflow::Block`]: delivery into the full queue waits for room, at most the URL's
//!   `timeout_ms` (default 1 s), then that message is dropped and counted. While it waits it
//!   holds back zenoh's reception from that peer and, as every publish uses zenoh's
//!   `CongestionControl::Block`, the publisher, whose put waits for room in its link's queue
//!   (zenoh bounds that wait, and closes the link after 5 s of it).
//!
//! Unlike `bus://local`, a publisher cannot see how far remote subscribers lag:
//! [`Bus::stats`] gives what it published, and drops are counted on the subscriber's side.
//!
//! ## Request/reply
//! [`Bus::serve`] declares a zenoh queryable and answers on a thread of its own (requests
//! wait in a queue of the URL's `depth`; when it is full, zenoh's reception waits for room);
//! [`Bus::request`] is a zenoh `get` that takes the first reply, waiting at most its timeout
//! ([`ipckit::Error::Timeout`]), or fails with [`ipckit::Error::ConnectionRefused`] when no
//! responder serves the topic.
//!
//! ## Liveliness
//! Each [`Bus`] declares a zenoh liveliness token for itself and one per topic it publishes
//! on, pattern it serves and pattern it subscribes to. [`Bus::peers`] lists the live nodes,
//! [`Bus::watch`] reports them appearing ([`PeerEvent::Joined`], [`PeerEvent::Declared`]),
//! dropping a subscription or responder ([`PeerEvent::Withdrew`]) and going away
//! ([`PeerEvent::Left`]: closed, crashed, or unreachable for a lease). Unlike
//! `bus://local`, the first events of a watch describe the nodes already there.
//!
//! ## Differences from `ipckit::bus::Bus`
//! No `recv_async`/`request_async` (run the blocking calls on a blocking pool), no
//! `Subscriber::publishers`; [`Bus::peers`] and [`Bus::watch`] have the local signatures and
//! [`Bus::try_peers`]/[`Bus::try_watch`] also say when zenoh could not be asked;
//! [`Bus::wait_for`] is new (waits for a node that satisfies a condition); and [`Bus::publish_with`]'s wait is zenoh's congestion control:
//! `Wait::Never` publishes with `CongestionControl::Drop` (zenoh drops the message if its link
//! queue is full, and says nothing), any other wait with `CongestionControl::Block`.
//!
//! ## Malformed messages
//! Messages of ipckit nodes carry a 13-byte attachment (marker, kind, node id). A message
//! with an attachment that is not one is [`ipckit::Error::Corrupted`] for that message only;
//! the next receive goes on. Messages of plain zenoh applications (no attachment) are
//! delivered with [`Message::publisher`] 0.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod queue;
mod url;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use zenoh::bytes::ZBytes;
use zenoh::handlers::FifoChannelHandler;
use zenoh::key_expr::KeyExpr;
use zenoh::liveliness::LivelinessToken;
use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::query::{ConsolidationMode, Query, QueryTarget};
use zenoh::sample::{Sample, SampleKind};
use zenoh::Wait as _;

pub use ipckit::bus::{
    validate_topic, BusStats, Declaration, Message, Overflow, Pattern, Peer, PeerEvent,
    SubscribeOptions,
};
use ipckit::{Error, Result, Wait};
pub use url::ZenohUrl;

use queue::Queue;

/// Longest a responder thread or a watch sleeps before it looks at its stop flag.
const SLICE: Duration = Duration::from_millis(50);
/// Liveliness tokens of the bus live under this prefix (then the namespace or `_`).
const LIVE_ROOT: &str = "ipckit-live";
/// Attachment marker of messages from ipckit nodes (then a kind byte and the node id).
const MARK: &[u8; 4] = b"ipk1";
const ATTACHMENT_LEN: usize = 13;
const KIND_MESSAGE: u8 = 0;
const KIND_REQUEST: u8 = 1;

/// Turns a zenoh error into an ipckit one: `op` says what was being done.
fn zerr(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        op,
        source: std::io::Error::other(format!("zenoh: {e}")),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

fn attachment(kind: u8, node_id: u64) -> ZBytes {
    let mut a = Vec::with_capacity(ATTACHMENT_LEN);
    a.extend_from_slice(MARK);
    a.push(kind);
    a.extend_from_slice(&node_id.to_le_bytes());
    ZBytes::from(a)
}

/// Reads an attachment: `(kind, node id)`; `Ok(None)` when there is none (a plain zenoh
/// application); `Err` when it is not one of ours.
fn read_attachment(a: Option<&ZBytes>) -> std::result::Result<Option<(u8, u64)>, String> {
    let Some(a) = a else { return Ok(None) };
    let b = a.to_bytes();
    if b.len() != ATTACHMENT_LEN || &b[..4] != MARK || b[4] > KIND_REQUEST {
        return Err(format!(
            "a bus://zenoh message carries an attachment of {} bytes that is not an ipckit one",
            b.len()
        ));
    }
    let id = u64::from_le_bytes(b[5..13].try_into().expect("8 bytes"));
    Ok(Some((b[4], id)))
}

struct Inner {
    url: ZenohUrl,
    session: zenoh::Session,
    node_id: u64,
    /// `ipckit-live/NS/NODE/PID`: the node's token and the prefix of its declarations.
    live_node: String,
    _token: LivelinessToken,
    publishers: Mutex<HashMap<String, (Publisher<'static>, LivelinessToken)>>,
    published: AtomicU64,
    timeouts: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.publishers).clear();
        if let Err(e) = self.session.close().wait() {
            tracing::debug!(error = %e, "bus://zenoh: closing the session");
        }
    }
}

impl Inner {
    fn prefix_len(&self) -> usize {
        if self.url.namespace.is_empty() {
            0
        } else {
            self.url.namespace.len() + 1
        }
    }

    fn full_key(&self, topic: &str) -> String {
        if self.url.namespace.is_empty() {
            topic.to_owned()
        } else {
            format!("{}/{topic}", self.url.namespace)
        }
    }

    fn check_levels(text: &str) -> Result<()> {
        if text.split('/').any(|l| l.starts_with('@')) {
            return Err(Error::InvalidName {
                name: text.to_owned(),
                reason:
                    "a level cannot start with '@' on bus://zenoh (zenoh keeps those for itself)",
            });
        }
        Ok(())
    }

    /// The zenoh key of a topic.
    fn topic_key(&self, topic: &str) -> Result<KeyExpr<'static>> {
        validate_topic(topic)?;
        Self::check_levels(topic)?;
        KeyExpr::try_from(self.full_key(topic)).map_err(|_| Error::InvalidName {
            name: topic.to_owned(),
            reason: "not a zenoh key: a topic on bus://zenoh cannot contain '#', '?' or '$'",
        })
    }

    /// The zenoh key expression of a pattern (`*` and `**` are zenoh's own wildcards).
    fn pattern_key(&self, pattern: &str) -> Result<KeyExpr<'static>> {
        let p = Pattern::parse(pattern)?;
        Self::check_levels(p.as_str())?;
        KeyExpr::autocanonize(self.full_key(p.as_str())).map_err(|_: zenoh::Error| {
            Error::InvalidName {
                name: pattern.to_owned(),
                reason: "not a zenoh key expression: a pattern on bus://zenoh cannot contain \
                         '#', '?' or '$'",
            }
        })
    }

    /// Declares a liveliness token for what this node does.
    fn declare(&self, kind: Declaration, topic: &str) -> Result<LivelinessToken> {
        let k = match kind {
            Declaration::Publishes => "p",
            Declaration::Serves => "q",
            Declaration::Subscribes => "s",
        };
        let key = format!("{}/{k}/{}", self.live_node, hex(topic.as_bytes()));
        self.session
            .liveliness()
            .declare_token(key)
            .wait()
            .map_err(|e| zerr("declare a liveliness token", e))
    }
}

/// A message from what zenoh delivered; `prefix_len` is the length of the namespace prefix
/// (`NS/`) of the key.
fn message(
    prefix_len: usize,
    key: &KeyExpr<'_>,
    payload: &ZBytes,
    att: Option<&ZBytes>,
) -> Result<Message> {
    let (kind, publisher) = read_attachment(att)
        .map_err(Error::Corrupted)?
        .unwrap_or((KIND_MESSAGE, 0));
    let topic = key.as_str().get(prefix_len..).unwrap_or_default();
    Ok(Message::received(
        topic.to_owned(),
        payload.to_bytes().into_owned(),
        publisher,
        kind == KIND_REQUEST,
    ))
}

/// What a liveliness token says: a node (`decl` none) or one of its declarations.
#[derive(Debug, PartialEq, Eq)]
struct LiveKey {
    node: u64,
    pid: u32,
    decl: Option<(Declaration, String)>,
}

/// Reads a liveliness key `ROOT/NODE/PID[/KIND/HEX-TOPIC]`.
fn parse_live_key(root: &str, key: &str) -> Option<LiveKey> {
    let rest = key.strip_prefix(root)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let node = u64::from_str_radix(parts.next()?, 16).ok()?;
    let pid = parts.next()?.parse().ok()?;
    let decl = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some(k), Some(t)) => {
            let kind = match k {
                "p" => Declaration::Publishes,
                "q" => Declaration::Serves,
                "s" => Declaration::Subscribes,
                _ => return None,
            };
            Some((kind, unhex(t)?))
        }
        (Some(_), None) => return None,
    };
    Some(LiveKey { node, pid, decl })
}

fn peer_list(p: &mut Peer, kind: Declaration) -> &mut Vec<String> {
    match kind {
        Declaration::Publishes => &mut p.publishes,
        Declaration::Serves => &mut p.serves,
        Declaration::Subscribes => &mut p.subscribes,
    }
}

/// Makes `ipckit::bus` open `bus://zenoh...` URLs with this crate, in this process:
/// afterwards [`ipckit::bus::Bus::open`] returns an [`ipckit::bus::Bus`] that works over
/// zenoh (its calls go to a [`Bus`] of this crate: see [`Bus::from_ipckit`]), and
/// [`ipckit::bus::list`] lists a zenoh bus (for `ipckit bus ls`). Calling it again changes
/// nothing.
pub fn install() {
    backend::install();
}

/// A handle on a Zenoh bus: publish, subscribe, request, serve. Cheap to clone (clones share
/// one zenoh session); the node leaves the bus when the last handle, subscriber and responder
/// are gone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("namespace", &self.inner.url.namespace)
            .field("node", &format_args!("{:016x}", self.inner.node_id))
            .finish()
    }
}

impl Bus {
    /// Opens a zenoh session as the URL says (see the [crate docs](crate)) and joins the bus.
    /// Endpoints to connect to that are not up yet are retried in the background; a listen
    /// address that cannot be bound is an error.
    pub fn open(url: &str) -> Result<Bus> {
        let url = ZenohUrl::parse(url)?;
        let config = url.config()?;
        let session = zenoh::open(config).wait().map_err(|e| {
            let text = e.to_string();
            if text.contains("in use") {
                Error::AddressInUse {
                    addr: url.listen.join(", "),
                }
            } else {
                zerr("open the zenoh session", text)
            }
        })?;
        let node_id = ipckit::bus::new_node_id();
        let ns = if url.namespace.is_empty() {
            "_"
        } else {
            &url.namespace
        };
        let live_node = format!("{LIVE_ROOT}/{ns}/{node_id:016x}/{}", std::process::id());
        let token = session
            .liveliness()
            .declare_token(live_node.clone())
            .wait()
            .map_err(|e| zerr("declare the node's liveliness token", e))?;
        Ok(Bus {
            inner: Arc::new(Inner {
                url,
                session,
                node_id,
                live_node,
                _token: token,
                publishers: Mutex::new(HashMap::new()),
                published: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
            }),
        })
    }

    /// The zenoh bus behind an [`ipckit::bus::Bus`] opened on a `bus://zenoh` URL (after
    /// [`install`]), for what only this crate has ([`Bus::wait_for`], [`Bus::session`],
    /// [`Bus::try_peers`]...); `None` for a bus of another backend.
    pub fn from_ipckit(bus: &ipckit::bus::Bus) -> Option<&Bus> {
        bus.backend()?.as_any().downcast_ref()
    }

    /// This node's id (as [`Message::publisher`] and [`Peer::node_id`] give it).
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The namespace (empty when the URL names none).
    pub fn namespace(&self) -> &str {
        &self.inner.url.namespace
    }

    /// The zenoh session, for what this API does not cover.
    pub fn session(&self) -> &zenoh::Session {
        &self.inner.session
    }

    /// Publishes `payload` on `topic` (zenoh's `CongestionControl::Block`).
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<()> {
        self.publish_with(topic, payload, Wait::timeout(self.inner.url.timeout))
    }

    /// Publishes; [`Wait::Never`] uses zenoh's `CongestionControl::Drop` (see the crate
    /// docs), any other wait `CongestionControl::Block`.
    pub fn publish_with(&self, topic: &str, payload: &[u8], wait: Wait) -> Result<()> {
        self.publish_kind(topic, payload, wait, KIND_MESSAGE)
    }

    fn publish_kind(&self, topic: &str, payload: &[u8], wait: Wait, kind: u8) -> Result<()> {
        let inner = &self.inner;
        let mut pubs = lock(&inner.publishers);
        if !pubs.contains_key(topic) {
            let key = inner.topic_key(topic)?;
            let publisher = inner
                .session
                .declare_publisher(key)
                .congestion_control(CongestionControl::Block)
                .wait()
                .map_err(|e| zerr("declare a zenoh publisher", e))?;
            let token = inner.declare(Declaration::Publishes, topic)?;
            pubs.insert(topic.to_owned(), (publisher, token));
        }
        let (publisher, _) = pubs.get(topic).expect("inserted above");
        let att = attachment(kind, inner.node_id);
        if wait == Wait::Never {
            inner
                .session
                .put(publisher.key_expr().clone(), payload.to_vec())
                .congestion_control(CongestionControl::Drop)
                .attachment(att)
                .wait()
        } else {
            publisher.put(payload.to_vec()).attachment(att).wait()
        }
        .map_err(|e| zerr("zenoh put", e))?;
        inner.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a value (serde + postcard); receivers use [`Message::decode`].
    pub fn publish_typed<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(Error::Encode)?;
        self.publish(topic, &bytes)
    }

    /// Subscribes to a topic or pattern with the URL's depth and overflow policy.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscriber> {
        self.subscribe_with(
            pattern,
            SubscribeOptions {
                depth: self.inner.url.depth,
                overflow: self.inner.url.overflow,
            },
        )
    }

    /// Subscribes with explicit options. The subscriber receives what matching publishers
    /// publish from now on (once its declaration has reached them: see [`Bus::wait_for`]).
    pub fn subscribe_with(&self, pattern: &str, opts: SubscribeOptions) -> Result<Subscriber> {
        let key = self.inner.pattern_key(pattern)?;
        let queue = Arc::new(Queue::new(
            opts.depth,
            opts.overflow,
            self.inner.url.timeout,
        ));
        // The callback holds no handle on the bus: the session never closes from inside
        // one of zenoh's threads.
        let (q, prefix) = (queue.clone(), self.inner.prefix_len());
        let sub = self
            .inner
            .session
            .declare_subscriber(key)
            .callback(move |sample: Sample| {
                if sample.kind() != SampleKind::Put {
                    return;
                }
                q.push(message(
                    prefix,
                    sample.key_expr(),
                    sample.payload(),
                    sample.attachment(),
                ));
            })
            .wait()
            .map_err(|e| zerr("declare a zenoh subscriber", e))?;
        let token = self.inner.declare(Declaration::Subscribes, pattern)?;
        Ok(Subscriber {
            pattern: pattern.to_owned(),
            queue,
            delivered: 0,
            corrupted: 0,
            _token: token,
            _sub: sub,
            _bus: self.clone(),
        })
    }

    /// Answers requests on `pattern` with `handler` on a thread of its own until the returned
    /// handle is dropped. Requests wait in a queue of the URL's depth.
    pub fn serve<F>(&self, pattern: &str, mut handler: F) -> Result<ServeHandle>
    where
        F: FnMut(&Message) -> Vec<u8> + Send + 'static,
    {
        let key = self.inner.pattern_key(pattern)?;
        let depth = self.inner.url.depth as usize;
        let queryable = self
            .inner
            .session
            .declare_queryable(key)
            .with(zenoh::handlers::FifoChannel::new(depth))
            .wait()
            .map_err(|e| zerr("declare a zenoh queryable", e))?;
        let token = self.inner.declare(Declaration::Serves, pattern)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (inner, prefix) = (self.inner.clone(), self.inner.prefix_len());
        let thread = std::thread::Builder::new()
            .name(format!("ipckit-zenoh-serve {pattern}"))
            .spawn(move || {
                let queries: &FifoChannelHandler<Query> = &queryable;
                while !stop2.load(Ordering::Relaxed) {
                    let query = match queries.recv_timeout(SLICE) {
                        Ok(Some(q)) => q,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    let empty = ZBytes::default();
                    let payload = query.payload().unwrap_or(&empty);
                    match message(prefix, query.key_expr(), payload, query.attachment()) {
                        Ok(msg) => {
                            let publisher = msg.publisher();
                            let msg = Message::received(
                                msg.topic().to_owned(),
                                msg.into_payload(),
                                publisher,
                                true,
                            );
                            let reply = handler(&msg);
                            if let Err(e) = query.reply(query.key_expr().clone(), reply).wait() {
                                tracing::warn!(error = %e, "bus://zenoh responder could not reply");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "bus://zenoh responder: malformed request");
                            let _ = query.reply_err(e.to_string()).wait();
                        }
                    }
                }
                drop(queryable);
                drop(inner);
            })
            .map_err(|e| Error::Io {
                op: "spawn the responder thread",
                source: e,
            })?;
        Ok(ServeHandle {
            stop,
            thread: Some(thread),
            _token: token,
        })
    }

    /// Sends a request on `topic` and waits at most `timeout` for the first reply. With no
    /// responder serving the topic it fails with [`Error::ConnectionRefused`] (as soon as
    /// zenoh knows there is none); with one that does not answer in time, [`Error::Timeout`].
    pub fn request(&self, topic: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        let key = self.inner.topic_key(topic)?;
        let deadline = Instant::now() + timeout;
        let replies = self
            .inner
            .session
            .get(key)
            .payload(payload.to_vec())
            .attachment(attachment(KIND_REQUEST, self.inner.node_id))
            .target(QueryTarget::BestMatching)
            .consolidation(ConsolidationMode::None)
            // zenoh's own timeout later than ours, so that ours tells "no answer in time"
            // from "nobody to ask" (the channel closes without a reply).
            .timeout(timeout + Duration::from_secs(1))
            .wait()
            .map_err(|e| zerr("zenoh get", e))?;
        match replies.recv_deadline(deadline) {
            Ok(Some(reply)) => match reply.result() {
                Ok(sample) => Ok(sample.payload().to_bytes().into_owned()),
                Err(e) => Err(Error::Io {
                    op: "bus://zenoh request",
                    source: std::io::Error::other(format!(
                        "the responder answered with an error: {}",
                        String::from_utf8_lossy(&e.payload().to_bytes())
                    )),
                }),
            },
            Ok(None) => Err(Error::Timeout {
                after: Some(timeout),
            }),
            Err(_) => Err(Error::ConnectionRefused {
                addr: format!("bus://zenoh topic {topic}"),
                reason: "no live responder serves this topic",
            }),
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
        ipckit::decode(&self.request(topic, &bytes, timeout)?)
    }

    fn live_root(&self) -> String {
        let ns = if self.inner.url.namespace.is_empty() {
            "_"
        } else {
            &self.inner.url.namespace
        };
        format!("{LIVE_ROOT}/{ns}")
    }

    /// The live nodes of this bus (this one included) and what they declared, as zenoh's
    /// liveliness knows them (asks the network: waits at most the URL's `timeout_ms`). The
    /// signature of `ipckit::bus::Bus::peers`: if zenoh cannot be asked (the session is
    /// closing), the list is empty and the error is logged (tracing).
    pub fn peers(&self) -> Vec<Peer> {
        self.try_peers().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "bus://zenoh: cannot list the peers");
            Vec::new()
        })
    }

    /// [`peers`](Self::peers), with the error of zenoh's liveliness query.
    pub fn try_peers(&self) -> Result<Vec<Peer>> {
        let root = self.live_root();
        // Replies go to a queue of our own, without a bound on the count: the replies of the
        // local tokens arrive inside `wait()`, and a bounded channel there would deadlock.
        // The queue closes when zenoh drops the callback (the query is complete).
        let replies = Arc::new(Queue::new(u32::MAX, Overflow::DropOldest, Duration::ZERO));
        let (q, q2) = (replies.clone(), replies.clone());
        self.inner
            .session
            .liveliness()
            .get(format!("{root}/**"))
            .timeout(self.inner.url.timeout)
            .with(zenoh::handlers::CallbackDrop {
                callback: move |r: zenoh::query::Reply| {
                    if let Ok(s) = r.result() {
                        q.push(s.key_expr().as_str().to_owned());
                    }
                },
                drop: move || q2.close(),
            })
            .wait()
            .map_err(|e| zerr("zenoh liveliness get", e))?;
        let deadline = Instant::now() + self.inner.url.timeout + Duration::from_millis(500);
        let mut peers: Vec<Peer> = Vec::new();
        while let Ok(key) = replies.pop(Wait::Until(deadline)) {
            let Some(LiveKey { node, pid, decl }) = parse_live_key(&root, &key) else {
                continue;
            };
            let i = match peers.iter().position(|p| p.node_id == node) {
                Some(i) => i,
                None => {
                    peers.push(Peer {
                        node_id: node,
                        pid,
                        ..Peer::default()
                    });
                    peers.len() - 1
                }
            };
            if let Some((kind, topic)) = decl {
                let list = peer_list(&mut peers[i], kind);
                if !list.contains(&topic) {
                    list.push(topic);
                }
            }
        }
        peers.sort_by_key(|p| p.node_id);
        Ok(peers)
    }

    /// Watches nodes joining, declaring and leaving (the liveliness of publishers and
    /// responders). The first events describe the nodes already there. The signature of
    /// `ipckit::bus::Bus::watch`: if zenoh refuses the liveliness subscriber, the watch's
    /// [`PeerWatch::next_with`] reports that error.
    pub fn watch(&self) -> PeerWatch {
        self.try_watch().unwrap_or_else(|e| PeerWatch {
            root: self.live_root(),
            queue: Arc::new(Queue::new(1, Overflow::DropOldest, Duration::ZERO)),
            known: HashMap::new(),
            events: VecDeque::new(),
            failed: Some(e.to_string()),
            _sub: None,
            _bus: self.clone(),
        })
    }

    /// [`watch`](Self::watch), with the error of zenoh's liveliness subscriber.
    pub fn try_watch(&self) -> Result<PeerWatch> {
        let root = self.live_root();
        let queue = Arc::new(Queue::new(65536, Overflow::DropOldest, Duration::ZERO));
        let q = queue.clone();
        let sub = self
            .inner
            .session
            .liveliness()
            .declare_subscriber(format!("{root}/**"))
            .history(true)
            .callback(move |s: Sample| {
                q.push((s.kind(), s.key_expr().as_str().to_owned()));
            })
            .wait()
            .map_err(|e| zerr("declare a zenoh liveliness subscriber", e))?;
        Ok(PeerWatch {
            root,
            queue,
            known: HashMap::new(),
            events: VecDeque::new(),
            failed: None,
            _sub: Some(sub),
            _bus: self.clone(),
        })
    }

    /// Waits until a live node (this one included) satisfies `cond`, at most `timeout`
    /// ([`Error::Timeout`]): e.g. until a responder serves a topic before requesting, or a
    /// subscriber has subscribed before publishing what it must not miss.
    pub fn wait_for(&self, mut cond: impl FnMut(&Peer) -> bool, timeout: Duration) -> Result<Peer> {
        let deadline = Instant::now() + timeout;
        let mut w = self.try_watch()?;
        loop {
            w.drain();
            if let Some(p) = w.peers().into_iter().find(|p| cond(p)) {
                return Ok(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    after: Some(timeout),
                });
            }
            match w.next_timeout(left) {
                Ok(_) | Err(Error::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// What this node published. (Remote subscribers' lag and drops are counted on their
    /// side: `readers` is empty.)
    pub fn stats(&self) -> BusStats {
        BusStats {
            published: self.inner.published.load(Ordering::Relaxed),
            timeouts: self.inner.timeouts.load(Ordering::Relaxed),
            readers: Vec::new(),
        }
    }
}

/// Receives the messages of one subscription ([`Bus::subscribe`]).
pub struct Subscriber {
    pattern: String,
    queue: Arc<Queue<Result<Message>>>,
    delivered: u64,
    corrupted: u64,
    _token: LivelinessToken,
    _sub: zenoh::pubsub::Subscriber<()>,
    _bus: Bus,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // A callback blocked on a full `block` queue returns at once.
        self.queue.close();
    }
}

impl Subscriber {
    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Messages this subscription skipped because it was full.
    pub fn drops(&self) -> u64 {
        self.queue.drops()
    }

    /// Messages received.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Malformed messages met (each was reported once as [`Error::Corrupted`]).
    pub fn corrupted(&self) -> u64 {
        self.corrupted
    }

    /// Messages that reached this subscription's queue (received, waiting or malformed).
    pub fn arrived(&self) -> u64 {
        self.queue.pushed()
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
        self.recv_with(Wait::timeout(timeout)).map_err(|e| match e {
            Error::Timeout { .. } => Error::Timeout {
                after: Some(timeout),
            },
            e => e,
        })
    }

    /// The next message, waiting as `wait` allows.
    pub fn recv_with(&mut self, wait: Wait) -> Result<Message> {
        match self.queue.pop(wait)? {
            Ok(m) => {
                self.delivered += 1;
                Ok(m)
            }
            Err(e) => {
                self.corrupted += 1;
                Err(e)
            }
        }
    }

    /// The next message decoded as a `T` (a payload that is not a `T` is [`Error::Decode`],
    /// and the subscription goes on).
    pub fn recv_typed_timeout<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<(String, T)> {
        let m = self.recv_timeout(timeout)?;
        let v = m.decode()?;
        Ok((m.topic().to_owned(), v))
    }

    /// The core receive: fills `msg`, waiting as `wait` allows.
    pub fn recv_into_with(&mut self, msg: &mut Message, wait: Wait) -> Result<()> {
        *msg = self.recv_with(wait)?;
        Ok(())
    }
}

/// Stops a responder of [`Bus::serve`] when dropped (and withdraws its liveliness token).
pub struct ServeHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _token: LivelinessToken,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle").finish_non_exhaustive()
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reports changes among the nodes of a bus: see [`Bus::watch`].
pub struct PeerWatch {
    root: String,
    queue: Arc<Queue<(SampleKind, String)>>,
    known: HashMap<u64, Peer>,
    events: VecDeque<PeerEvent>,
    /// Why there is no liveliness subscriber.
    failed: Option<String>,
    _sub: Option<zenoh::pubsub::Subscriber<()>>,
    _bus: Bus,
}

impl std::fmt::Debug for PeerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerWatch")
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl PeerWatch {
    /// The nodes known at the last look (after the events returned or queued so far).
    pub fn peers(&self) -> Vec<Peer> {
        let mut v: Vec<Peer> = self.known.values().cloned().collect();
        v.sort_by_key(|p| p.node_id);
        v
    }

    /// Takes in what has arrived (events queue up for `next_with`).
    fn drain(&mut self) {
        while let Ok((kind, key)) = self.queue.pop(Wait::Never) {
            self.apply(kind, &key);
        }
    }

    fn apply(&mut self, kind: SampleKind, key: &str) {
        let Some(LiveKey { node, pid, decl }) = parse_live_key(&self.root, key) else {
            return;
        };
        match (kind, decl) {
            (SampleKind::Put, decl) => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.known.entry(node) {
                    let p = Peer {
                        node_id: node,
                        pid,
                        ..Peer::default()
                    };
                    e.insert(p.clone());
                    self.events.push_back(PeerEvent::Joined(p));
                }
                if let Some((kind, topic)) = decl {
                    let p = self.known.get_mut(&node).expect("inserted above");
                    let list = peer_list(p, kind);
                    if !list.contains(&topic) {
                        list.push(topic.clone());
                        self.events.push_back(PeerEvent::Declared {
                            node_id: node,
                            pid,
                            kind,
                            topic,
                        });
                    }
                }
            }
            (SampleKind::Delete, None) => {
                if let Some(p) = self.known.remove(&node) {
                    self.events.push_back(PeerEvent::Left(p));
                }
            }
            (SampleKind::Delete, Some((kind, topic))) => {
                if let Some(p) = self.known.get_mut(&node) {
                    let list = peer_list(p, kind);
                    if list.contains(&topic) {
                        list.retain(|t| *t != topic);
                        self.events.push_back(PeerEvent::Withdrew {
                            node_id: node,
                            pid,
                            kind,
                            topic,
                        });
                    }
                }
            }
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<PeerEvent> {
        self.next_with(Wait::timeout(timeout))
    }

    /// The next event, waiting as `wait` allows.
    pub fn next_with(&mut self, wait: Wait) -> Result<PeerEvent> {
        if let Some(why) = &self.failed {
            return Err(zerr("declare a zenoh liveliness subscriber", why));
        }
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(e);
            }
            let (kind, key) = self.queue.pop(wait)?;
            self.apply(kind, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_round_trip() {
        let root = "ipckit-live/ns";
        let key = format!("{root}/00000001000000aa/42/q/{}", hex(b"svc/*"));
        assert_eq!(
            parse_live_key(root, &key),
            Some(LiveKey {
                node: 0x1_0000_00aa,
                pid: 42,
                decl: Some((Declaration::Serves, "svc/*".to_owned()))
            })
        );
        assert_eq!(
            parse_live_key(root, &format!("{root}/00000001000000aa/42")),
            Some(LiveKey {
                node: 0x1_0000_00aa,
                pid: 42,
                decl: None
            })
        );
        assert_eq!(parse_live_key(root, "ipckit-live/other/1/2"), None);
        assert_eq!(parse_live_key(root, &format!("{root}/zz/1")), None);
    }

    #[test]
    fn attachments() {
        let a = attachment(KIND_REQUEST, 77);
        assert_eq!(read_attachment(Some(&a)), Ok(Some((KIND_REQUEST, 77))));
        assert_eq!(read_attachment(None), Ok(None));
        assert!(read_attachment(Some(&ZBytes::from(b"junk".to_vec()))).is_err());
    }
}
