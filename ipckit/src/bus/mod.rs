//! A publish/subscribe and request/reply bus between the processes of one machine, with no
//! daemon: `bus://local` (or `bus://local/NAMESPACE`).
//!
//! ```
//! use ipckit::bus::Bus;
//! use std::time::Duration;
//!
//! let url = format!("bus://local/doc-{}", std::process::id());
//! let bus = Bus::open(&url)?;                       // usually one per process
//! let mut temps = bus.subscribe("sensors/*/temp")?;  // `*`: one level, `**`: any depth
//! bus.publish("sensors/kitchen/temp", b"21.5")?;
//! let msg = temps.recv_timeout(Duration::from_secs(5))?;
//! assert_eq!((msg.topic(), msg.payload()), ("sensors/kitchen/temp", &b"21.5"[..]));
//!
//! let _echo = bus.serve("svc/echo", |req| req.payload().to_vec())?; // answers on a thread
//! assert_eq!(bus.request("svc/echo", b"hi", Duration::from_secs(5))?, b"hi");
//! # Ok::<(), ipckit::Error>(())
//! ```
//!
//! ## How it works
//! Each [`Bus`] is a *node*: an entry in the namespace's registry (a 0600 segment
//! `/dev/shm/ipckit.bus.NS`, owned through a lock the kernel drops when the process dies) and
//! a segment of its own holding a **broadcast ring** of the messages it publishes and a
//! catalog of the topics it publishes, serves and subscribes to. A publish writes the message
//! once into the node's ring (about one shared-memory send, however many subscribers read
//! it) and wakes the nodes whose receivers sleep. A [`Subscriber`] finds the nodes through
//! the registry and reads, with a cursor of its own, the ring of each node whose catalog
//! lists a topic its pattern matches (its own handle's included), from that topic's first
//! message on, keeping the messages whose topic matches. (A node whose catalog is full is read
//! by every subscription.)
//!
//! ## Limits
//! A node has 64 reader slots, one per subscription reading it: at most 64 subscriptions
//! matching what one node publishes, plus the `block` subscriptions of the namespace (which
//! hold a slot of every node, see *Overflow*). [`Bus::subscribe`], `serve` and the reply
//! inbox that a handle's first `request` opens each count as one. Past that, `subscribe`
//! fails with [`Error::LimitExceeded`] rather than miss a node's messages, and a receive
//! reports, once, a node that starts on a matching topic and has no slot left. Each
//! subscription reads all of a matching node's messages (keeping its own topics): publishers
//! of unrelated topics in one busy process cost each other's subscribers reading time. A
//! namespace holds 256 nodes; groups of processes that do not talk to each other can use
//! namespaces of their own (`bus://local/NAME`).
//!
//! ## Receiving
//! One message at a time ([`Subscriber::recv`], `try_recv`, `recv_timeout`, `recv_into` into
//! a reused [`Message`], `recv_async`), or in batches: [`Subscriber::recv_batch`] hands each
//! message there (up to a maximum) to a callback as a [`MessageRef`], and tells the publisher
//! how far it has read once per batch. On a 2-CPU machine a subscriber process taking 64-byte
//! messages in batches of up to 256 received 14.4 M msg/s against 10.3 M one by one (medians
//! of 8 runs, `docs/BENCHMARKS.md`).
//!
//! ## Overflow
//! Every subscription holds at most `depth` messages of each publisher it reads (default 64,
//! `?depth=N`; never more than the publisher's ring, `?slots=`), with an explicit policy
//! ([`Overflow`], `?overflow=drop|block`):
//! - [`Overflow::DropOldest`] (default): a publisher never waits for the subscriber; when it
//!   falls more than `depth` messages behind, the oldest are skipped and counted —
//!   [`Subscriber::drops`] on the subscriber's side, [`Bus::stats`] on the publisher's. A
//!   publisher's drop count covers all its messages the subscriber skipped, including those
//!   on topics it does not match when the publisher mixes topics.
//! - [`Overflow::Block`]: the publisher waits for room, at most its timeout (`?timeout_ms=`,
//!   default 1 s; [`Bus::publish_with`]), and then fails with [`Error::Timeout`] having sent
//!   nothing. A subscriber whose process died stops blocking anyone within 50 ms. A waiting
//!   publisher is woken when the subscriber has read half its depth, so a deep subscription
//!   (`?depth=1024`) lets both sides work in batches: measured on a 2-CPU machine (medians of
//!   8 runs), one publisher streamed 64-byte messages to one subscriber process at 9.7 M/s,
//!   and to 8 block-policy subscriber processes at 22.3 M deliveries/s in total (`ipckit
//!   bench --mech bus-local,bus-fanout-8`).
//!   A publisher can hold back only the subscriptions it knows of, so a block-policy
//!   subscription takes a reader slot of every node when it subscribes (and of every node
//!   that joins), *parked* where the node publishes no topic it matches: it reads nothing
//!   there and holds nothing back ([`ReaderStats::parked`]). A node that starts on a new
//!   topic counts its parked readers from that topic's first message on, until each has
//!   looked at the topic (a receive does, woken by the topic's declaration): one that does
//!   not match stays parked, one that matches reads from that message on. So a stalled
//!   block-policy subscriber of `x/*` holds back a publisher of `y/z` only for the first
//!   `depth` messages of a topic declared after it last looked, and a publisher of `x/1`
//!   until it is read.

//! ## Liveliness
//! [`Bus::peers`] lists the live nodes with their topics; [`Bus::watch`] reports nodes
//! joining, declaring topics, withdrawing them and leaving (a crashed process is reported
//! within about 100 ms, and its entry and segment are removed by whoever notices first).
//! Dropping a [`Subscriber`] or [`ServeHandle`] withdraws its pattern from the node's catalog
//! (the last one, where the node holds several of the same pattern): [`Bus::peers`] no
//! longer lists it, a watch reports [`PeerEvent::Withdrew`], and a [`Bus::request`] on a
//! topic nobody else serves fails at once with [`Error::ConnectionRefused`]. A node keeps
//! the topics it published until it closes. The record stays in the catalog, marked, and is
//! marked live again when the node declares the pattern again: subscribing and dropping in
//! a loop does not fill the catalog.
//!
//! ## Backends
//! `bus://local` is this module's own. Any other `bus://HOST...` URL goes to the backend
//! registered for `HOST` in this process ([`register_backend`], traits in [`backend`]):
//! after `ipckit_zenoh::install()` (crate `ipckit-zenoh`, which links zenoh; ipckit does
//! not), [`Bus::open`]`("bus://zenoh/NS?connect=tcp/HOST:PORT")` returns a [`Bus`] whose
//! calls, and those of its [`Subscriber`]s, [`PeerWatch`]es and [`ServeHandle`]s, go over
//! zenoh; before, it fails with [`Error::Unsupported`]. The methods mean the same on both;
//! what a backend cannot do is said on the method: [`Subscriber::publishers`] is empty and
//! `Subscriber::recv_async` unsupported off `bus://local`, [`Bus::stats`] has no
//! `readers` there. What only a backend has (zenoh's `wait_for`, its session) is on its own
//! type, reached through [`Bus::backend`]. The local types stay concrete behind the
//! public ones (an enum, not a box): a local publish or receive costs what it did.
//!
//! ## Trust
//! Other nodes are other processes, maybe crashed or hostile: everything read from shared
//! memory is bounds-checked and validated; a malformed message is [`Error::Corrupted`] for
//! that message only, and the next receive goes on. Nothing here forms a Rust reference into
//! memory another process writes except atomics.

pub mod backend;
mod handle;
mod node;
mod protocol;
mod registry;
mod topic;
mod url;
mod writer_lock;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::sys;
use crate::transport::Wait;

pub use backend::register_backend;
pub use handle::{Bus, PeerWatch, ServeHandle, Subscriber};
use node::{
    NodeSeg, SlotHeader, CAT_PUBLISH, CAT_SERVE, CAT_SUBSCRIBE, KIND_MESSAGE, KIND_REPLY,
    KIND_REQUEST, MAX_SEQ, POLICY_BLOCK, POLICY_DROP,
};
use protocol::SlotRead;
pub use registry::{namespaces, remove_stale};
use registry::{Registry, KIND_PUB, KIND_SERVE, KIND_SUB};
pub use topic::{validate_topic, Pattern, TOPIC_MAX};
pub use url::{is_valid_namespace, BusUrl};
use writer_lock::WriterLock;

/// Longest a blocked call sleeps before it re-checks liveness and the registry.
const SLICE: Duration = Duration::from_millis(50);
/// Longest a receiver sleeps where the `membarrier` handshake failed (see `sleep_fence`).
const UNFENCED_SLICE: Duration = Duration::from_millis(1);
/// Messages a receiver takes in a row from one publisher before it looks at the next.
const BURST: u32 = 64;
/// Looks at the rings between two yields of a spinning receive (or of a publisher waiting
/// for room). Three alternating series of 6-8 runs, 64 B, 8 looks against 32: 8-subscriber
/// fan-out 29.4, 27.4 and 31.0 M deliveries/s against 27.3, 26.2 and 28.7 M; round trip 722,
/// 736 and 738 ns against 727, 778 and 724. With 1 or 2 looks the round trip grew to
/// 960-1,120 ns; with 128 the fan-out halved.
const SPIN_BURST: u32 = 8;
/// Pauses between two looks of a spinning receive. Each look takes the publisher's
/// write-sequence line, so looking more often makes a stream slower and a round trip
/// shorter. Measured at 64 B, 6 alternating pinned runs: with 4 pauses the round trip was
/// 1.10-1.24x the shm bench's and one subscriber took 4.1-4.7 M msg/s; with 8, 1.28-1.58x and
/// 4.7-5.3 M; the loop before (16 pauses and a yield every other look), 1.6-2.1x and
/// 5.2-6.2 M.
const PAUSES_PER_LOOK: u32 = 4;
/// How often a receiver re-reads the registry even when nothing was announced (to notice
/// crashed publishers).
const RESCAN: Duration = Duration::from_millis(100);
/// Payloads of at least this many bytes are copied from the slot straight into the
/// caller's message, after the topic is looked at (smaller ones come with the topic in one
/// copy through the subscription's buffer, see `read_from`).
const DIRECT_PAYLOAD: usize = 16 * 1024;

/// What happens when a subscription is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Skip the oldest messages and count them (the publisher never waits).
    #[default]
    DropOldest,
    /// Make the publisher wait for room, up to its timeout.
    Block,
}

/// Options of one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Messages of each publisher the subscription holds (capped by the publisher's ring).
    pub depth: u32,
    /// What happens when it is full.
    pub overflow: Overflow,
}

/// A received message.
#[derive(Clone, Default)]
pub struct Message {
    topic: String,
    /// The payload from `payload_at` on. A single-message receive copies the slot's body,
    /// topic then payload, straight in here (one copy, not two): the topic's bytes stay in
    /// front.
    payload: Vec<u8>,
    payload_at: usize,
    publisher: u64,
    kind: u8,
    corr: u64,
    reply_to: u64,
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl Eq for Message {}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload", &self.payload())
            .field("publisher", &self.publisher)
            .field("kind", &self.kind)
            .field("corr", &self.corr)
            .field("reply_to", &self.reply_to)
            .finish()
    }
}

impl Message {
    /// A message as another bus backend (`ipckit-zenoh`) received it, so that both backends
    /// hand their users the same type. `publisher` is the sending node's id (0 if unknown);
    /// `request`: a request, as a responder sees it.
    pub fn received(topic: String, payload: Vec<u8>, publisher: u64, request: bool) -> Message {
        Message {
            topic,
            payload,
            payload_at: 0,
            publisher,
            kind: if request { KIND_REQUEST } else { KIND_MESSAGE },
            corr: 0,
            reply_to: 0,
        }
    }

    /// The topic it was published on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The bytes.
    pub fn payload(&self) -> &[u8] {
        // `payload_at` is within `payload` whenever a message was taken; a receive that took
        // none may have written over the buffer (see `LocalSubscriber::recv_into_with`).
        self.payload.get(self.payload_at..).unwrap_or_default()
    }

    /// The bytes, by value.
    pub fn into_payload(mut self) -> Vec<u8> {
        self.take_payload()
    }

    /// Takes the bytes out, leaving the payload empty.
    fn take_payload(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.payload);
        v.drain(..self.payload_at.min(v.len()));
        self.payload_at = 0;
        v
    }

    /// The node (see [`Peer::node_id`]) that published it.
    pub fn publisher(&self) -> u64 {
        self.publisher
    }

    /// True for a request (as a responder of [`Bus::serve`] sees them).
    pub fn is_request(&self) -> bool {
        self.as_ref().is_request()
    }

    /// Decodes a typed payload ([`Bus::publish_typed`]); a payload that is not a `T` is
    /// [`Error::Decode`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.as_ref().decode()
    }
}

/// A received message lent to the callback of a batch receive
/// ([`Subscriber::recv_batch`]): its topic and payload are in the subscription's own
/// memory (copied out of the publisher's ring and checked), valid for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRef<'a> {
    topic: &'a str,
    payload: &'a [u8],
    publisher: u64,
    kind: u8,
    corr: u64,
    reply_to: u64,
}

impl<'a> MessageRef<'a> {
    /// The topic it was published on.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The node (see [`Peer::node_id`]) that published it.
    pub fn publisher(&self) -> u64 {
        self.publisher
    }

    /// True for a request (as a responder of [`Bus::serve`] sees them).
    pub fn is_request(&self) -> bool {
        self.kind == KIND_REQUEST
    }

    /// Decodes a typed payload ([`Bus::publish_typed`]); a payload that is not a `T` is
    /// [`Error::Decode`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        crate::decode(self.payload)
    }

    /// The message, owned.
    pub fn to_message(&self) -> Message {
        Message {
            topic: self.topic.to_owned(),
            payload: self.payload.to_vec(),
            payload_at: 0,
            publisher: self.publisher,
            kind: self.kind,
            corr: self.corr,
            reply_to: self.reply_to,
        }
    }
}

impl Message {
    /// The message, lent (as a batch receive hands them out).
    pub fn as_ref(&self) -> MessageRef<'_> {
        MessageRef {
            topic: &self.topic,
            payload: self.payload(),
            publisher: self.publisher,
            kind: self.kind,
            corr: self.corr,
            reply_to: self.reply_to,
        }
    }
}

/// Figures of one subscription reading this node, as the publisher sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderStats {
    /// Its policy.
    pub overflow: Overflow,
    /// Its depth (capped by this node's ring).
    pub depth: u32,
    /// It reads none of this node's messages yet: a block-policy subscription whose pattern
    /// matches no topic this node publishes (it holds no publish back).
    pub parked: bool,
    /// Messages published that it has not read yet (0 while parked).
    pub lag: u64,
    /// Messages it has received from this node.
    pub delivered: u64,
    /// This node's messages it skipped (drop policy), counted or pending.
    pub drops: u64,
}

/// What a node has published and who reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Messages this node has published (requests and replies included).
    pub published: u64,
    /// Publishes that failed because a `block` subscriber stayed full.
    pub timeouts: u64,
    /// The subscriptions reading this node.
    pub readers: Vec<ReaderStats>,
}

/// A live node of the bus and what it declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// Its id (unique per [`Bus::open`], not reused).
    pub node_id: u64,
    /// Its process.
    pub pid: u32,
    /// Topics it has published on (internal reply topics left out).
    pub publishes: Vec<String>,
    /// Patterns it serves requests on.
    pub serves: Vec<String>,
    /// Patterns it has subscribed to.
    pub subscribes: Vec<String>,
}

/// What [`PeerWatch`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A node opened the bus.
    Joined(Peer),
    /// A node started publishing on `topic`, serving it or subscribing to it.
    Declared {
        /// The node.
        node_id: u64,
        /// Its process.
        pid: u32,
        /// What it declared.
        kind: Declaration,
        /// The topic or pattern.
        topic: String,
    },
    /// A node stopped serving or subscribing to `topic` (it dropped the responder or the
    /// subscription; the last of them, where it held several) and lives on.
    Withdrew {
        /// The node.
        node_id: u64,
        /// Its process.
        pid: u32,
        /// What it withdrew.
        kind: Declaration,
        /// The topic or pattern.
        topic: String,
    },
    /// A node closed the bus or its process died.
    Left(Peer),
}

/// What a node declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declaration {
    /// It publishes on a topic.
    Publishes,
    /// It serves requests on a pattern.
    Serves,
    /// It subscribed to a pattern.
    Subscribes,
}

/// The state of one node shared by its handles and subscribers.
struct Shared {
    url: BusUrl,
    reg: Registry,
    entry: usize,
    node_id: u64,
    /// This node's segment. Its ring and catalog are written with `writer` held; only
    /// [`Shared::hold`] and [`Held`]'s drop write in place, under `held`.
    node: NodeSeg,
    /// What this node's subscriptions and responders declared, by (kind, pattern).
    held: Mutex<HashMap<(u8, String), HeldCount>>,
    /// Also says whether this process is registered for `membarrier`
    /// (`WriterLock::light`): a publish then needs only a compiler fence before it looks
    /// for sleeping readers, and readers pay for the handshake when they go to sleep.
    /// Measured with a subscriber polling one pause apart: one-subscriber streaming 4.1 M
    /// msg/s with the fence, 5.0 M without (medians of 5; the writer lock's release was
    /// then still a locked instruction, see [`writer_lock`]).
    writer: WriterLock<Writer>,
}

struct Writer {
    /// The next message's sequence number. Kept here and only stored to the segment (its
    /// `write_seq`): what another process may have written there is never read back.
    seq: u64,
    declared: HashSet<String>,
    published: u64,
    timeouts: u64,
    last_reclaim: Instant,
    /// Messages below this sequence number have room in every block-policy reader, as of
    /// the reader set `room_key` (active mask, space word): cursors only move forward, so
    /// until a reader joins or leaves (which changes the key) or the writer reaches it, a
    /// publish reads no reader's cursor (a cache line the readers write all the time).
    room_until: u64,
    room_key: (u64, u32),
    /// The registry entries of the nodes reading this one, as of `room_key` (to wake them
    /// without reading the readers' slots on every publish).
    reader_entries: Vec<usize>,
    /// The topic of the last publish (declared, valid).
    last_topic: String,
    /// Where the catalog lists each topic published (its record's offset) and that topic's
    /// first message, in catalog order: what a parked reader is owed ([`Writer::owed`]).
    listed: Vec<(usize, u64)>,
}

impl Writer {
    /// For a parked block-policy reader that has looked at the catalog up to offset
    /// `checked`: the first message of a topic it has not looked at (listed from there on,
    /// or not listed at all once the catalog is near full), if any (see
    /// `NodeSeg::block_limits`).
    fn owed<'a>(&'a self, node: &'a NodeSeg) -> impl Fn(usize) -> Option<u64> + 'a {
        move |checked| {
            let at = self.listed.partition_point(|&(off, _)| off < checked);
            let listed = self.listed.get(at).map(|&(_, seq)| seq);
            match (listed, node.catalog_full_since()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }
}

/// How many [`Held`] share a declaration, and where the catalog lists it (`None`: the
/// catalog was full).
type HeldCount = (usize, Option<usize>);

/// A declaration of a subscription or responder, withdrawn when the last of its kind and
/// pattern in this node drops ([`Shared::hold`]).
struct Held {
    shared: Arc<Shared>,
    key: (u8, String),
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Held").field(&self.key).finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut held = lock(&shared.held);
        let Some((count, at)) = held.get_mut(&self.key) else {
            return;
        };
        *count -= 1;
        if let (0, Some(at)) = (*count, *at) {
            shared.node.catalog_mark(at, true);
            // Wakes the watches, which look at the catalogs again.
            shared.reg.bump();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.reg.release(self.entry);
        self.reg.remove_if_unused();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh node id: the process id in the high half, the time and a per-process counter in
/// the low half. Every backend names its nodes with it ([`Peer::node_id`],
/// [`Message::publisher`]), so ids stay distinct where backends meet (a gateway).
pub fn new_node_id() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(20))
        .unwrap_or(0);
    (u64::from(std::process::id()) << 32)
        | u64::from(nanos.wrapping_add(NEXT.fetch_add(0x9e37_79b9, Ordering::Relaxed)))
}

fn reply_topic(node_id: u64) -> String {
    format!("_ipckit/reply/{node_id:016x}")
}

impl Shared {
    /// Lists `topic` in the catalog; returns the record's offset (`None`: the catalog is full).
    fn declare_locked(&self, w: &mut Writer, kind: u8, topic: &str) -> Result<Option<usize>> {
        let seq = w.seq;
        let at = self.node.catalog_append(kind, seq, topic)?;
        match at {
            Some(off) if kind == CAT_PUBLISH => w.listed.push((off, seq)),
            Some(_) => {}
            None => tracing::debug!(topic, "bus catalog full: topic not listed"),
        }
        if kind == CAT_PUBLISH {
            // Parked readers that match the topic hold messages back from now on: the room
            // is looked at again.
            w.room_until = 0;
        }
        let bits = match kind {
            CAT_PUBLISH => KIND_PUB,
            CAT_SERVE => KIND_SERVE,
            _ => KIND_SUB,
        };
        self.reg.add_kinds(self.entry, bits);
        self.reg.bump();
        self.reg.wake_all();
        Ok(at)
    }

    /// Declares that this node subscribes to or serves `pattern` (`kind`) until the returned
    /// [`Held`] drops. Holders of the same declaration share one catalog record: the first
    /// lists it (or lists it again, in place), the last to drop withdraws it.
    fn hold(self: &Arc<Self>, kind: u8, pattern: &str) -> Result<Held> {
        let mut held = lock(&self.held);
        let key = (kind, pattern.to_owned());
        match held.get_mut(&key) {
            Some((count, at)) => {
                *count += 1;
                if *count == 1 {
                    if let Some(at) = *at {
                        self.node.catalog_mark(at, false);
                        self.reg.bump();
                    }
                }
            }
            None => {
                // Under `held` too: a drop that withdraws waits, and `Held`'s owners drop
                // their reader slots before it (a publisher holding `writer` may wait for one).
                let at = {
                    let mut w = self.writer.lock();
                    self.declare_locked(&mut w, kind, pattern)?
                };
                held.insert(key.clone(), (1, at));
            }
        }
        Ok(Held {
            shared: self.clone(),
            key,
        })
    }

    /// Publishes one message of `kind`.
    fn send(
        &self,
        kind: u8,
        topic: &str,
        payload: &[u8],
        corr: u64,
        reply_to: u64,
        wait: Option<Wait>,
    ) -> Result<()> {
        let mut w = self.writer.lock();
        if !same_bytes(w.last_topic.as_bytes(), topic.as_bytes()) {
            if !w.declared.contains(topic) {
                validate_topic(topic)?;
                self.declare_locked(&mut w, CAT_PUBLISH, topic)?;
                w.declared.insert(topic.to_owned());
            }
            // A stream on one topic then skips the hash lookup.
            w.last_topic.clear();
            w.last_topic.push_str(topic);
        }
        let cap = self.node.capacity();
        if topic.len() + payload.len() > cap {
            return Err(Error::MessageTooLarge {
                size: payload.len(),
                max: cap - topic.len(),
                transport: "bus (its publisher's slots; raise with ?max_msg=)",
            });
        }
        let seq = w.seq;
        let key = self.node.room_key();
        if key != w.room_key || seq >= w.room_until {
            if let Err(e) = self.wait_for_room(&w, seq, wait) {
                w.timeouts += 1;
                return Err(e);
            }
            // The key first: a reader that joins meanwhile changes it, so the next publish
            // looks again.
            w.room_key = self.node.room_key();
            w.room_until = self.node.room_until(seq, w.owed(&self.node));
            let mut entries = std::mem::take(&mut w.reader_entries);
            entries.clear();
            self.node.for_each_reader_entry(|e| entries.push(e));
            w.reader_entries = entries;
        }
        let h = SlotHeader {
            len: payload.len() as u32,
            topic_len: topic.len() as u16,
            kind,
            corr,
            reply_to,
        };
        self.node.write_slot(seq, &h, topic.as_bytes(), payload);
        w.seq = seq + 1;
        w.published += 1;
        // Pairs with the reader's fence before it sleeps (`sleep_fence`): either the reader
        // sees this message or this publish sees the reader asleep.
        if self.writer.light() {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
        // A reader that joined since the key was read changed it: then its node may sleep
        // without being in the cached list, and every reader's entry is read again.
        if self.node.readers_sleeping().load(Ordering::Relaxed) == 0 {
            // Nobody reading this node sleeps: no doorbell to look at.
        } else if self.node.room_key() == w.room_key {
            for &e in &w.reader_entries {
                self.reg.wake_node(e);
            }
        } else {
            self.node.for_each_reader_entry(|e| self.reg.wake_node(e));
        }
        if w.published % 1024 == 0 && w.last_reclaim.elapsed() > RESCAN {
            w.last_reclaim = Instant::now();
            self.node.reclaim_dead_readers();
        }
        Ok(())
    }

    /// Waits until every block-policy reader has room for message `seq`, as `wait` allows
    /// (`None`: the URL's timeout, from now).
    fn wait_for_room(&self, w: &Writer, seq: u64, wait: Option<Wait>) -> Result<()> {
        let node = &self.node;
        let owed = w.owed(node);
        if node.blocking_reader(seq, &owed).is_none() {
            return Ok(());
        }
        let wait = wait.unwrap_or_else(|| Wait::timeout(self.url.timeout));
        if wait == Wait::Never {
            return Err(Error::WouldBlock);
        }
        let spin_until = Instant::now() + self.url.spin;
        // Looks as a spinning receive does, and yields between bursts: subscribers may
        // outnumber the CPUs, and the one it waits for may be waiting for this CPU. (Spinning
        // without a yield, 8 alternating runs each of two series, 64 B: two subscribers took
        // 12.3 M and 12.2 M deliveries/s against 16.5 M and 15.2 M with the yields; four 20.3
        // and 21.0 M against 22.3 and 21.7 M; eight unchanged, 24.2 and 23.4 M against 24.5
        // and 22.8 M. In the 8-subscriber fan-out the publisher's share of the CPU fell from
        // 26 % to 18 % of the samples, its spin from about half of it to under a tenth.)
        if spin_looking(spin_until, || {
            node.blocking_reader(seq, &owed).is_none().then_some(())
        })
        .is_some()
        {
            return Ok(());
        }
        loop {
            let Some(i) = node.blocking_reader(seq, &owed) else {
                node.writer_waiting().store(0, Ordering::Relaxed);
                return Ok(());
            };
            // Says which reader it waits for: only that one wakes it (`notify_writer`), not
            // every reader that moves (with 8 subscribers, the others woke it for nothing).
            let observed = protocol::announce_wait(node.writer_waiting(), node.space(), i);
            if node.blocking_reader(seq, &owed) != Some(i) {
                // That reader made room meanwhile: look again.
                continue;
            }
            let slice = match wait.slice(SLICE) {
                Ok(s) => s,
                Err(e) => {
                    node.writer_waiting().store(0, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let woke = match sys::futex_wait(node.space(), observed, Some(slice)) {
                Ok(w) => w,
                Err(e) => {
                    node.writer_waiting().store(0, Ordering::Relaxed);
                    return Err(e);
                }
            };
            if woke == sys::FutexWake::TimedOut {
                node.reclaim_dead_readers();
            }
        }
    }
}

/// A node of `bus://local` ([`Bus`] wraps it). Cheap to clone (clones share one node);
/// the node leaves the bus when the last handle, subscriber and responder are gone.
#[derive(Clone)]
struct LocalBus {
    shared: Arc<Shared>,
    replies: Arc<Mutex<Option<Replies>>>,
    next_corr: Arc<AtomicU64>,
    responders: Arc<Mutex<HashMap<String, Responder>>>,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("namespace", &self.shared.url.namespace)
            .field("node", &format_args!("{:016x}", self.shared.node_id))
            .finish()
    }
}

struct Replies {
    sub: LocalSubscriber,
    stash: HashMap<u64, Vec<u8>>,
}

impl LocalBus {
    /// Joins the bus the URL names: `bus://local` or `bus://local/NAMESPACE`, with
    /// `?depth=N&overflow=drop|block` (subscription defaults), `timeout_ms=N` (how long a
    /// publish waits for a `block` subscriber), `slots=N` and `max_msg=SIZE` (this node's
    /// ring), `spin_us=N` (how long a receive, or a publisher waiting for room, spins before it
    /// sleeps; it yields the CPU every few looks).
    pub fn open(url: &str) -> Result<LocalBus> {
        let url = BusUrl::parse(url)?;
        let reg = Registry::open(&url.namespace)?;
        let node_id = new_node_id();
        let node = NodeSeg::create(&url.namespace, node_id, url.slots, url.slot_bytes)?;
        let entry = reg.claim(node_id)?;
        // Subscriptions asleep attach to the new node now rather than when their sleep slice
        // ends: its first messages would otherwise wait up to a slice (50 ms) for them.
        reg.wake_all();
        let shared = Shared {
            url,
            reg,
            entry,
            node_id,
            node,
            held: Mutex::new(HashMap::new()),
            writer: WriterLock::new(
                Writer {
                    seq: 0,
                    declared: HashSet::new(),
                    published: 0,
                    timeouts: 0,
                    last_reclaim: Instant::now(),
                    room_until: 0,
                    room_key: (0, 0),
                    reader_entries: Vec::new(),
                    last_topic: String::new(),
                    listed: Vec::new(),
                },
                sys::register_light_side(),
            ),
        };
        Ok(LocalBus {
            shared: Arc::new(shared),
            replies: Arc::new(Mutex::new(None)),
            next_corr: Arc::new(AtomicU64::new(1)),
            responders: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// This node's id (as [`Message::publisher`] and [`Peer::node_id`] give it).
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.shared.reg.namespace()
    }

    /// The largest payload this node can publish on `topic`.
    pub fn max_message_size(&self, topic: &str) -> usize {
        self.shared.node.capacity().saturating_sub(topic.len())
    }

    /// Publishes `payload` on `topic`, waiting for `block` subscribers at most the URL's
    /// `timeout_ms` (default 1 s).
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<()> {
        // The URL's timeout starts when a wait does: no clock read on the common path.
        self.shared.send(KIND_MESSAGE, topic, payload, 0, 0, None)
    }

    /// Publishes, waiting for `block` subscribers as `wait` allows ([`Wait::Never`]: fail
    /// with [`Error::WouldBlock`] at once). On failure nothing was sent to anyone.
    pub fn publish_with(&self, topic: &str, payload: &[u8], wait: Wait) -> Result<()> {
        self.shared
            .send(KIND_MESSAGE, topic, payload, 0, 0, Some(wait))
    }

    /// Subscribes to a topic or pattern with the URL's depth and overflow policy.
    pub fn subscribe(&self, pattern: &str) -> Result<LocalSubscriber> {
        self.subscribe_with(
            pattern,
            SubscribeOptions {
                depth: self.shared.url.depth,
                overflow: self.shared.url.overflow,
            },
        )
    }

    /// Subscribes with explicit options. The subscriber receives what matching publishers
    /// publish from now on.
    pub fn subscribe_with(&self, pattern: &str, opts: SubscribeOptions) -> Result<LocalSubscriber> {
        let pattern = Pattern::parse(pattern)?;
        let declare = !pattern.as_str().starts_with(topic::RESERVED_PREFIX);
        // Attached to the publishers there first, declared after: a publisher that sees the
        // declaration and then publishes is read from then on. (Declared first, a message
        // published between the two was before the subscriber's start and lost unseen.)
        let mut sub = LocalSubscriber::new(self.shared.clone(), pattern, opts, &[KIND_MESSAGE])?;
        #[cfg(test)]
        tests::SUBSCRIBE_GAP.with(|gap| std::thread::sleep(gap.get()));
        if declare {
            sub.held = Some(self.shared.hold(CAT_SUBSCRIBE, sub.pattern.as_str())?);
        }
        Ok(sub)
    }

    /// Answers requests on `pattern` with `handler` on a thread of its own until the returned
    /// handle is dropped. Requests wait in a subscription with the URL's depth and policy.
    pub fn serve<F>(&self, pattern: &str, mut handler: F) -> Result<LocalServe>
    where
        F: FnMut(&Message) -> Vec<u8> + Send + 'static,
    {
        let p = Pattern::parse(pattern)?;
        let opts = SubscribeOptions {
            depth: self.shared.url.depth,
            overflow: self.shared.url.overflow,
        };
        let mut sub = LocalSubscriber::new(self.shared.clone(), p, opts, &[KIND_REQUEST])?;
        let held = self.shared.hold(CAT_SERVE, sub.pattern.as_str())?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.shared.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ipckit-bus-serve {pattern}"))
            .spawn(move || {
                let mut msg = Message::default();
                while !stop2.load(Ordering::Relaxed) {
                    match sub.recv_into_with(&mut msg, Wait::timeout(SLICE)) {
                        Ok(()) => {
                            let reply = handler(&msg);
                            let topic = reply_topic(msg.reply_to);
                            if let Err(e) =
                                shared.send(KIND_REPLY, &topic, &reply, msg.corr, 0, None)
                            {
                                tracing::warn!(error = %e, "bus responder could not reply");
                            }
                        }
                        Err(Error::Timeout { .. } | Error::Corrupted(_)) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "bus responder");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
            .map_err(|e| Error::Io {
                op: "spawn the responder thread",
                source: e,
            })?;
        Ok(LocalServe {
            stop,
            thread: Some(thread),
            _held: held,
        })
    }

    /// Sends a request on `topic` and waits at most `timeout` for the first reply. With no
    /// live responder serving the topic it fails at once with
    /// [`Error::ConnectionRefused`]; with one that does not answer in time, [`Error::Timeout`];
    /// when the last responder serving it dies or drops its responder before answering,
    /// [`Error::Disconnected`] (within a receive slice, 10 ms, of its going).
    pub fn request(&self, topic: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        validate_topic(topic)?;
        let deadline = Wait::timeout(timeout);
        self.check_responder(topic)?;
        let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
        {
            let mut r = lock(&self.replies);
            if r.is_none() {
                let p = Pattern::parse(&reply_topic(self.shared.node_id))?;
                let opts = SubscribeOptions {
                    depth: self.shared.url.slots,
                    overflow: Overflow::DropOldest,
                };
                *r = Some(Replies {
                    sub: LocalSubscriber::new(self.shared.clone(), p, opts, &[KIND_REPLY])?,
                    stash: HashMap::new(),
                });
            }
        }
        self.shared.send(
            KIND_REQUEST,
            topic,
            payload,
            corr,
            self.shared.node_id,
            Some(deadline),
        )?;
        let mut msg = Message::default();
        loop {
            let mut guard = lock(&self.replies);
            let r = guard.as_mut().expect("created above");
            if let Some(v) = r.stash.remove(&corr) {
                return Ok(v);
            }
            let slice = deadline
                .slice(Duration::from_millis(10))
                .map_err(|_| Error::Timeout {
                    after: Some(timeout),
                })?;
            match r.sub.recv_into_with(&mut msg, Wait::timeout(slice)) {
                Ok(()) if msg.corr == corr => return Ok(msg.take_payload()),
                Ok(()) => {
                    if r.stash.len() >= 1024 {
                        // Replies nobody waits for any more (their requests timed out).
                        r.stash.clear();
                    }
                    r.stash.insert(msg.corr, msg.take_payload());
                }
                Err(Error::Timeout { .. }) if self.check_responder(topic).is_err() => {
                    // Every responder is gone (or dropped its responder): a reply it sent
                    // before is in the ring by now, and none will come after.
                    loop {
                        match r.sub.recv_into_with(&mut msg, Wait::Never) {
                            Ok(()) if msg.corr == corr => return Ok(msg.take_payload()),
                            Ok(()) | Err(Error::Corrupted(_)) => {}
                            Err(_) => return Err(Error::Disconnected),
                        }
                    }
                }
                Err(Error::Timeout { .. } | Error::Corrupted(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Finds a live responder for `topic` (cached per topic while it lives and its node's
    /// catalog withdraws nothing).
    fn check_responder(&self, topic: &str) -> Result<()> {
        let reg = &self.shared.reg;
        let own = Some(self.shared.entry);
        if let Some(r) = lock(&self.responders).get(topic) {
            if reg.is_live(r.idx, r.node_id, own) && r.seg.catalog_gen() == r.gen {
                return Ok(());
            }
        }
        for v in reg.scan(own) {
            if v.kinds & KIND_SERVE == 0 {
                continue;
            }
            let Ok(seg) = open_node(&self.shared, v.node_id) else {
                continue;
            };
            let gen = seg.catalog_gen();
            let (cat, _) = seg.catalog(0);
            let serves = cat.iter().any(|c| {
                c.kind == CAT_SERVE
                    && !c.withdrawn
                    && Pattern::parse(&c.topic).is_ok_and(|p| p.matches(topic))
            });
            if serves {
                let r = Responder {
                    idx: v.idx,
                    node_id: v.node_id,
                    seg,
                    gen,
                };
                lock(&self.responders).insert(topic.to_owned(), r);
                return Ok(());
            }
        }
        Err(Error::ConnectionRefused {
            addr: format!("bus://local/{} topic {topic}", self.namespace()),
            reason: "no live responder serves this topic",
        })
    }

    /// The live nodes of this namespace (this one included) and what they declared.
    pub fn peers(&self) -> Vec<Peer> {
        let mut cache = HashMap::new();
        collect_peers(&self.shared.reg, Some(self.shared.entry), &mut cache)
    }

    /// Watches nodes joining, declaring and leaving (the liveliness of publishers and
    /// responders).
    pub fn watch(&self) -> LocalWatch {
        let mut w = LocalWatch {
            shared: self.shared.clone(),
            cache: HashMap::new(),
            known: HashMap::new(),
            queue: VecDeque::new(),
        };
        for p in w.refresh_peers() {
            w.known.insert(p.node_id, p);
        }
        w
    }

    /// What this node published and how its readers keep up.
    pub fn stats(&self) -> BusStats {
        let w = self.shared.writer.lock();
        BusStats {
            published: w.published,
            timeouts: w.timeouts,
            readers: self.shared.node.readers(),
        }
    }

    /// Writes `raw` as the body of the next message of this node, bypassing every check:
    /// for tests of how receivers handle malformed messages.
    #[doc(hidden)]
    pub fn publish_malformed(&self, raw: &[u8]) -> Result<()> {
        let mut w = self.shared.writer.lock();
        let seq = w.seq;
        self.shared.node.write_raw_slot(seq, raw)?;
        w.seq = seq + 1;
        fence(Ordering::SeqCst);
        self.shared
            .node
            .for_each_reader_entry(|e| self.shared.reg.wake_node(e));
        Ok(())
    }
}

/// The live nodes of the bus `url` names, without joining it (for `ipckit bus ls`). An
/// empty list if nobody has opened it. A URL of a registered backend
/// ([`register_backend`]) goes to its [`Backend::list`](backend::Backend::list).
pub fn list(url: &str) -> Result<Vec<Peer>> {
    if let Some(b) = backend::lookup(url) {
        return b.list(url);
    }
    let url = BusUrl::parse(url)?;
    let reg = match Registry::open_existing(&url.namespace) {
        Ok(r) => r,
        Err(Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut cache = HashMap::new();
    Ok(collect_peers(&reg, None, &mut cache))
}

fn open_node(shared: &Shared, node_id: u64) -> Result<NodeSeg> {
    NodeSeg::open(shared.reg.namespace(), node_id)
}

/// A node's catalog as read so far: its segment, the bytes read, the
/// [`NodeSeg::catalog_gen`] they were read at, and what they say.
type PeerCache = HashMap<u64, (NodeSeg, usize, u32, Peer)>;

fn collect_peers(reg: &Registry, own: Option<usize>, cache: &mut PeerCache) -> Vec<Peer> {
    let views = reg.scan(own);
    cache.retain(|id, _| views.iter().any(|v| v.node_id == *id));
    let mut out = Vec::new();
    for v in views {
        let (seg, off, gen, peer) = match cache.entry(v.node_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Ok(seg) = NodeSeg::open(reg.namespace(), v.node_id) else {
                    continue;
                };
                let peer = Peer {
                    node_id: v.node_id,
                    pid: v.pid,
                    ..Peer::default()
                };
                let gen = seg.catalog_gen();
                e.insert((seg, 0, gen, peer))
            }
        };
        let now = seg.catalog_gen();
        if now != *gen {
            // A record was withdrawn or declared again: read them all again.
            *gen = now;
            *off = 0;
            peer.publishes.clear();
            peer.serves.clear();
            peer.subscribes.clear();
        }
        let (cat, end) = seg.catalog(*off);
        *off = end;
        for c in cat {
            if c.withdrawn || c.topic.starts_with(topic::RESERVED_PREFIX) {
                continue;
            }
            let list = match c.kind {
                CAT_PUBLISH => &mut peer.publishes,
                CAT_SERVE => &mut peer.serves,
                _ => &mut peer.subscribes,
            };
            if !list.contains(&c.topic) {
                list.push(c.topic);
            }
        }
        out.push(peer.clone());
    }
    out
}

/// Reports changes among the nodes of a `bus://local` namespace ([`PeerWatch`] wraps it).
struct LocalWatch {
    shared: Arc<Shared>,
    cache: PeerCache,
    known: HashMap<u64, Peer>,
    queue: VecDeque<PeerEvent>,
}

impl std::fmt::Debug for LocalWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerWatch")
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl LocalWatch {
    fn refresh_peers(&mut self) -> Vec<Peer> {
        collect_peers(&self.shared.reg, Some(self.shared.entry), &mut self.cache)
    }

    /// The nodes known at the last look.
    pub fn peers(&self) -> Vec<Peer> {
        self.known.values().cloned().collect()
    }

    fn diff(&mut self) {
        let now = self.refresh_peers();
        for p in &now {
            match self.known.get(&p.node_id) {
                None => self.queue.push_back(PeerEvent::Joined(p.clone())),
                Some(old) => {
                    let news = [
                        (Declaration::Publishes, &old.publishes, &p.publishes),
                        (Declaration::Serves, &old.serves, &p.serves),
                        (Declaration::Subscribes, &old.subscribes, &p.subscribes),
                    ];
                    for (kind, before, after) in news {
                        for t in after.iter().filter(|t| !before.contains(t)) {
                            self.queue.push_back(PeerEvent::Declared {
                                node_id: p.node_id,
                                pid: p.pid,
                                kind,
                                topic: t.clone(),
                            });
                        }
                        for t in before.iter().filter(|t| !after.contains(t)) {
                            self.queue.push_back(PeerEvent::Withdrew {
                                node_id: p.node_id,
                                pid: p.pid,
                                kind,
                                topic: t.clone(),
                            });
                        }
                    }
                }
            }
        }
        let gone: Vec<u64> = self
            .known
            .keys()
            .filter(|id| !now.iter().any(|p| p.node_id == **id))
            .copied()
            .collect();
        for id in gone {
            if let Some(p) = self.known.remove(&id) {
                self.queue.push_back(PeerEvent::Left(p));
            }
        }
        for p in now {
            self.known.insert(p.node_id, p);
        }
    }

    /// The next event, waiting as `wait` allows.
    pub fn next_with(&mut self, wait: Wait) -> Result<PeerEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(e);
            }
            let g = self.shared.reg.generation().load(Ordering::Acquire);
            self.diff();
            if let Some(e) = self.queue.pop_front() {
                return Ok(e);
            }
            let slice = wait.slice(SLICE)?;
            sys::futex_wait(self.shared.reg.generation(), g, Some(slice))?;
        }
    }
}

/// A node found serving a topic ([`LocalBus::check_responder`]'s cache).
struct Responder {
    /// Its registry entry.
    idx: usize,
    node_id: u64,
    seg: NodeSeg,
    /// Its catalog's [`NodeSeg::catalog_gen`] when it was found serving.
    gen: u32,
}

/// Stops a responder of `bus://local` when dropped ([`ServeHandle`] wraps it).
#[derive(Debug)]
struct LocalServe {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Withdrawn after the thread, and with it the subscription, has ended.
    _held: Held,
}

impl Drop for LocalServe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A node a subscription does not read (yet).
struct Unattached {
    seg: NodeSeg,
    /// The first message the subscription is owed: the node's write position when the
    /// subscription was made for a node there then, 0 for one that joined later.
    floor: u64,
    /// Catalog bytes looked at so far.
    cat_off: usize,
    /// The first message on a topic the pattern matches, once the catalog lists one (or the
    /// first from which the catalog may not list every topic: see [`first_owed`]).
    from: Option<u64>,
    /// The node had no free reader slot, and that was reported.
    reported: bool,
}

/// How a subscription takes up a node it does not read yet.
enum Take {
    /// Reads it from this message on.
    From(u64),
    /// Holds a reader slot without reading, having looked at the catalog up to this offset
    /// (block policy: see [`LocalSubscriber::scan`]).
    Park(usize),
}

impl Unattached {
    /// How a subscription with `pattern` and `policy` takes up this node now, if it does
    /// (see [`LocalSubscriber::scan`]).
    fn take(&mut self, pattern: &Pattern, policy: u32) -> Option<Take> {
        if self.from.is_none() {
            self.from = first_owed(&self.seg, &mut self.cat_off, pattern);
        }
        match self.from {
            Some(from) => Some(Take::From(from.max(self.floor))),
            None if policy == POLICY_BLOCK => Some(Take::Park(self.cat_off)),
            None => None,
        }
    }
}

/// Looks at `seg`'s catalog from `*checked` on (and moves `checked` past what it read): the
/// first message of the first topic published there that `pattern` matches, or the first
/// message from which the catalog may not list every topic (0 for a malformed catalog), if
/// any.
fn first_owed(seg: &NodeSeg, checked: &mut usize, pattern: &Pattern) -> Option<u64> {
    let (listed, next, incomplete) = seg.catalog_read(*checked);
    *checked = next;
    let matched = listed
        .iter()
        .find(|e| e.kind == CAT_PUBLISH && pattern.matches(&e.topic))
        .map(|e| e.seq);
    let from = if incomplete {
        let full = seg.catalog_full_since().unwrap_or(0);
        Some(matched.map_or(full, |m| m.min(full)))
    } else {
        matched
    };
    from.map(|f| f.min(MAX_SEQ))
}

/// One publisher's ring as a subscription reads it.
struct Attachment {
    node_id: u64,
    entry: usize,
    seg: NodeSeg,
    slot: usize,
    cursor: u64,
    drops: u64,
    delivered: u64,
    gone: bool,
    /// Counted in the node's `readers_sleeping` (the subscription sleeps or is about to).
    asleep: bool,
    /// The last topic of this publisher matched against the pattern, and whether it
    /// matched: a stream on one topic is validated and matched once, not once per message.
    /// Kept per publisher, so that two publishers on two topics (a round trip through the
    /// subscriber's own node and a peer's) do not evict each other's entry every message.
    last_topic: String,
    last_matched: bool,
    /// The publisher's write position when last read (see `read_from`).
    known_w: u64,
    /// The cursor at which this reader last looked (with a fence) for a publisher waiting
    /// for room on it.
    notified_at: u64,
    /// The publisher's write position was impossible at the last look (and was reported).
    bad_w: bool,
    /// A block-policy attachment that reads nothing yet: the node publishes no topic the
    /// pattern matches, as far as its catalog up to this offset says.
    parked: Option<usize>,
}

impl Attachment {
    /// Stores the cursor and counts in the segment; `wake_writer`: see
    /// [`NodeSeg::set_cursor`].
    #[inline]
    fn publish_cursor(&mut self, wake_writer: bool) {
        self.seg.set_cursor(
            self.slot,
            self.cursor,
            self.delivered,
            self.drops,
            wake_writer,
        );
    }

    /// Counts this reader in or out of the node's sleeping readers (a parked one never is:
    /// it needs no wake-up per message).
    fn mark_asleep(&mut self, on: bool) {
        if self.asleep != on && (self.parked.is_none() || !on) {
            let n = self.seg.readers_sleeping();
            if on {
                n.fetch_add(1, Ordering::Relaxed);
            } else {
                n.fetch_sub(1, Ordering::Relaxed);
            }
            self.asleep = on;
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.mark_asleep(false);
        self.seg.release_reader(self.slot);
    }
}

/// Where the payload of a message handed to [`Sink::take`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PayloadIn {
    /// In `m.payload` (the subscription's buffer).
    Ref,
    /// Alone in the sink's own buffer ([`Sink::direct`]); `m.payload` is empty.
    Own,
    /// After the topic in the sink's own buffer; `m.payload` is empty.
    OwnAfterTopic,
}

/// Where [`LocalSubscriber::read_some`] hands the messages it takes.
trait Sink {
    /// Whether a payload of `len` bytes is read alone into [`Sink::own_buf`], only the topic
    /// coming through a buffer with it.
    fn direct(&self, len: usize) -> bool;
    /// The sink's own buffer, if it has one: a direct payload goes there, and any other
    /// message too, topic then payload. Without one, messages come through the
    /// subscription's buffer.
    fn own_buf(&mut self) -> Option<&mut Vec<u8>>;
    /// Takes one message, whose payload is where `at` says.
    fn take(&mut self, m: MessageRef<'_>, at: PayloadIn);
}

/// Fills one [`Message`]: the single-message receives.
struct IntoMessage<'m>(&'m mut Message);

impl Sink for IntoMessage<'_> {
    #[inline]
    fn direct(&self, len: usize) -> bool {
        // One copy through the subscription's buffer is cheaper for small messages (the
        // seventh session), a second copy of a large one is not.
        len >= DIRECT_PAYLOAD
    }

    #[inline]
    fn own_buf(&mut self) -> Option<&mut Vec<u8>> {
        Some(&mut self.0.payload)
    }

    #[inline]
    fn take(&mut self, m: MessageRef<'_>, at: PayloadIn) {
        let msg = &mut *self.0;
        if !same_bytes(msg.topic.as_bytes(), m.topic.as_bytes()) {
            msg.topic.clear();
            msg.topic.push_str(m.topic);
        }
        msg.payload_at = match at {
            PayloadIn::OwnAfterTopic => m.topic.len(),
            PayloadIn::Own => 0,
            PayloadIn::Ref => {
                msg.payload.clear();
                msg.payload.extend_from_slice(m.payload);
                0
            }
        };
        msg.publisher = m.publisher;
        msg.kind = m.kind;
        msg.corr = m.corr;
        msg.reply_to = m.reply_to;
    }
}

/// Lends each message to a callback: the batch receives.
struct Batch<F>(F);

impl<F: FnMut(MessageRef<'_>)> Sink for Batch<F> {
    #[inline]
    fn direct(&self, _len: usize) -> bool {
        false
    }

    fn own_buf(&mut self) -> Option<&mut Vec<u8>> {
        None
    }

    #[inline]
    fn take(&mut self, m: MessageRef<'_>, _at: PayloadIn) {
        (self.0)(m)
    }
}

/// Receives the messages of one subscription of `bus://local` ([`Subscriber`] wraps it).
struct LocalSubscriber {
    shared: Arc<Shared>,
    pattern: Pattern,
    policy: u32,
    depth: u32,
    /// The message kinds taken: bit `k` for kind `k`.
    kinds: u8,
    atts: Vec<Attachment>,
    /// Nodes not read (yet): attaching is tried again at each scan.
    waiting: HashMap<u64, Unattached>,
    /// A node found full that a receive has not reported yet.
    unreadable: Option<u64>,
    last_gen: u32,
    last_scan: Instant,
    polls: u32,
    next: usize,
    buf: Vec<u8>,
    /// In a sleeping receive: every attachment is counted in its node's sleeping readers.
    asleep: bool,
    /// Messages taken in a row from the attachment at `next`.
    burst: u32,
    /// Drops of attachments already gone.
    past_drops: u64,
    /// Whether an attachment's node has left (`scan` found it gone): only then does an
    /// empty look go through `atts` for ones whose messages have all been read.
    any_gone: bool,
    delivered: u64,
    corrupted: u64,
    /// The declaration (none for reply subscriptions): last, so that it is withdrawn after
    /// the attachments have let their reader slots go (see [`Shared::hold`]).
    held: Option<Held>,
}

impl std::fmt::Debug for LocalSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("pattern", &self.pattern.as_str())
            .field("publishers", &self.atts.len())
            .finish_non_exhaustive()
    }
}

impl LocalSubscriber {
    fn new(
        shared: Arc<Shared>,
        pattern: Pattern,
        opts: SubscribeOptions,
        kinds: &'static [u8],
    ) -> Result<LocalSubscriber> {
        let mut s = LocalSubscriber {
            policy: match opts.overflow {
                Overflow::DropOldest => POLICY_DROP,
                Overflow::Block => POLICY_BLOCK,
            },
            depth: opts.depth.max(1),
            shared,
            pattern,
            kinds: kinds.iter().fold(0, |m, &k| m | 1 << k),
            atts: Vec::new(),
            waiting: HashMap::new(),
            unreadable: None,
            last_gen: 0,
            last_scan: Instant::now(),
            polls: 0,
            next: 0,
            buf: Vec::new(),
            asleep: false,
            burst: 0,
            past_drops: 0,
            any_gone: false,
            delivered: 0,
            corrupted: 0,
            held: None,
        };
        s.scan(true)?;
        Ok(s)
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    /// Messages this subscription skipped because it was full (drop policy) or overtaken.
    pub fn drops(&self) -> u64 {
        self.atts
            .iter()
            .fold(self.past_drops, |n, a| n.saturating_add(a.drops))
    }

    /// Messages received.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Malformed messages met (each was reported once as [`Error::Corrupted`]).
    pub fn corrupted(&self) -> u64 {
        self.corrupted
    }

    /// The nodes this subscription currently reads (publishers of matching topics).
    pub fn publishers(&self) -> Vec<u64> {
        self.atts
            .iter()
            .filter(|a| !a.gone && a.parked.is_none())
            .map(|a| a.node_id)
            .collect()
    }

    /// Looks for new publishers and gone ones.
    ///
    /// A `drop` subscription reads a node only once the node's catalog lists a topic the
    /// pattern matches, from that topic's first message on: it takes a reader slot of the
    /// node, and time to read its ring, only where there is something for it. A `block`
    /// subscription takes a reader slot of every node from the start (a publisher has to
    /// wait for it from its first message on a matching topic, and knows only the readers
    /// attached by then), parked where nothing matches: each scan looks at the catalog of
    /// those nodes again and parks further on, or unparks at the first message of a topic
    /// that matches.
    fn scan(&mut self, initial: bool) -> Result<()> {
        let shared = self.shared.clone();
        self.last_gen = shared.reg.generation().load(Ordering::Acquire);
        self.last_scan = Instant::now();
        let views = shared.reg.scan(Some(shared.entry));
        for a in &mut self.atts {
            if !views
                .iter()
                .any(|v| v.node_id == a.node_id && v.idx == a.entry)
            {
                a.gone = true;
                self.any_gone = true;
            }
        }
        for a in self.atts.iter_mut().filter(|a| !a.gone) {
            let Some(mut checked) = a.parked else {
                continue;
            };
            match first_owed(&a.seg, &mut checked, &self.pattern) {
                Some(from) => {
                    // Reads from there on: the cursor first, then the slot says so (the
                    // publisher reads them the other way round).
                    a.cursor = a.cursor.max(from);
                    a.known_w = a.cursor;
                    a.notified_at = a.cursor;
                    a.parked = None;
                    a.seg.unpark_reader(a.slot, a.cursor, a.delivered, a.drops);
                    if self.asleep {
                        a.mark_asleep(true);
                    }
                }
                None if Some(checked) != a.parked => {
                    a.parked = Some(checked);
                    a.seg.park_reader(a.slot, checked);
                }
                None => {}
            }
        }
        self.waiting
            .retain(|id, _| views.iter().any(|v| v.node_id == *id));
        for v in views {
            if self.atts.iter().any(|a| a.node_id == v.node_id) {
                continue;
            }
            let mut u = match self.waiting.remove(&v.node_id) {
                Some(known) => known,
                None => match open_node(&shared, v.node_id) {
                    // Nodes there when we subscribed: what they publish from now on. Nodes
                    // that joined later: everything they published (what the ring still
                    // holds, the rest counted as drops). A write position past `MAX_SEQ`
                    // is refused by the first read.
                    Ok(seg) => Unattached {
                        floor: if initial {
                            seg.write_seq().load(Ordering::Acquire).min(MAX_SEQ)
                        } else {
                            0
                        },
                        seg,
                        cat_off: 0,
                        from: None,
                        reported: false,
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "bus: cannot open a node yet");
                        continue;
                    }
                },
            };
            let Some(take) = u.take(&self.pattern, self.policy) else {
                self.waiting.insert(v.node_id, u);
                continue;
            };
            let (start, parked) = match take {
                Take::From(start) => (start, None),
                Take::Park(checked) => (u.floor, Some(checked)),
            };
            let depth = self.depth.min(u.seg.slots());
            match u
                .seg
                .claim_reader(shared.entry, self.policy, depth, start, parked)?
            {
                Some(slot) => {
                    self.atts.push(Attachment {
                        node_id: v.node_id,
                        entry: v.idx,
                        seg: u.seg,
                        slot,
                        cursor: start,
                        drops: 0,
                        delivered: 0,
                        gone: false,
                        asleep: false,
                        known_w: start,
                        notified_at: start,
                        last_topic: String::new(),
                        last_matched: false,
                        bad_w: false,
                        parked,
                    });
                    if self.asleep && parked.is_none() {
                        // Publishers of a node found while we sleep must see us asleep too.
                        if let Some(a) = self.atts.last_mut() {
                            a.mark_asleep(true);
                        }
                    }
                }
                None => {
                    if initial {
                        // The subscription would miss this node's messages from the start:
                        // refused (what it attached to so far is let go with it).
                        return Err(too_many_readers(v.node_id));
                    }
                    if !u.reported {
                        tracing::warn!(
                            node = format_args!("{:016x}", v.node_id),
                            "bus: the node has no free reader slot ({} subscriptions read it)",
                            node::READERS
                        );
                        self.unreadable = Some(v.node_id);
                        u.reported = true;
                    }
                    self.waiting.insert(v.node_id, u);
                }
            }
        }
        Ok(())
    }

    /// Takes up to `max` messages of attachment `i` (at least one, unless there are none
    /// now), handing each to `sink`; returns how many it took.
    ///
    /// The cursor is published to the segment once, at the end (or where a publisher waiting
    /// for room must be woken), not per message. A malformed message after the first one
    /// taken ends the batch before it: the next call reports it as [`Error::Corrupted`].
    fn read_some<S: Sink>(&mut self, i: usize, max: usize, sink: &mut S) -> Result<usize> {
        let a = &mut self.atts[i];
        let slots = u64::from(a.seg.slots());
        let block = self.policy == POLICY_BLOCK;
        let block_depth = u64::from(self.depth).clamp(1, slots);
        // The cursor as the segment has it.
        let mut published = a.cursor;
        let mut taken = 0;
        let fault = loop {
            if taken == max {
                break None;
            }
            // The publisher's write position is read again only once the messages it
            // announced are taken: it is on the line the publisher writes every message,
            // and reading it per message moved that line between the CPUs every time.
            if a.cursor >= a.known_w {
                let w = a.seg.write_seq().load(Ordering::Acquire);
                if w > MAX_SEQ {
                    // Reported once, then the node is as if it had published nothing more
                    // until its write position makes sense again: it does not starve the
                    // other publishers of this subscription.
                    if taken > 0 || a.bad_w {
                        break None;
                    }
                    a.bad_w = true;
                    break Some(format!(
                        "node {:016x} has write position {w}, past any a publisher reaches",
                        a.node_id
                    ));
                }
                a.bad_w = false;
                a.known_w = w;
                if a.cursor > w {
                    // A lie: the publisher's word wins.
                    a.cursor = w;
                }
                // Past the wake point below already (it passed the point while its
                // `known_w` was older): a publisher waiting for room on this reader is woken
                // now. Only if one can be waiting for it: a publisher blocks on this reader
                // only `depth` messages ahead of where the reader last looked (`notified_at`:
                // that look's fence orders the publisher's later look at this cursor), so a
                // reader that keeps up makes no fence per message.
                if block
                    && w - a.cursor <= block_depth / 2
                    && w >= a.notified_at.saturating_add(block_depth)
                {
                    a.notified_at = a.cursor;
                    a.publish_cursor(true);
                    published = a.cursor;
                }
                if a.cursor == w {
                    break None;
                }
                let keep = if block {
                    slots
                } else {
                    u64::from(self.depth).min(slots)
                };
                if w - a.cursor > keep {
                    let skip = w - keep - a.cursor;
                    a.drops = a.drops.saturating_add(skip);
                    a.cursor += skip;
                }
            }
            // A block-policy reader wakes a publisher waiting for room when it is half its
            // depth behind: the publisher then has half the depth to write before it can
            // block again. A publisher blocks on this reader only when it is `depth` or more
            // behind, and while it waits its write position stands still, so the reader
            // passes half the depth on its way (if its `known_w` was older then, it wakes
            // the publisher when it next reads the write position, above). Checking there
            // instead of after every message is enough. (The publisher also re-checks every
            // SLICE on its own.) Drop-policy readers never hold it up.
            let w = a.known_w;
            let seq = a.cursor;
            let slot = a.seg.slot(seq);
            let (s1, h) = match slot.head() {
                Ok(found) => found,
                Err(SlotRead::NotYet) => break None,
                Err(SlotRead::Overwritten) => {
                    a.drops = a.drops.saturating_add(1);
                    a.cursor += 1;
                    // Overtaken: look at the write position again, to skip what is lost.
                    a.known_w = a.cursor;
                    continue;
                }
                Err(SlotRead::Corrupt(why)) => {
                    if taken > 0 {
                        // Left for the next call, which reports it.
                        break None;
                    }
                    a.cursor += 1;
                    if block && w - a.cursor == block_depth / 2 {
                        a.notified_at = a.cursor;
                        a.publish_cursor(true);
                        published = a.cursor;
                    }
                    break Some(why);
                }
            };
            // Here, not where the message is delivered: read then (after the copy), they cost
            // the round trip 100-170 ns (998 against 826 ns, one binary with a switch,
            // eight alternating runs).
            let (corr, reply_to) = slot.refs();
            let tl = h.topic_len();
            // Topic and payload in one copy, then looked at here. (Comparing the topic in
            // place and copying the payload straight to the caller made the bus round
            // trip 14% longer: 882 against 774 ns, medians of six alternating runs.) A large
            // payload is not worth a second copy: a sink that takes it straight (`direct`)
            // gets it there, and only the topic comes through the buffer.
            let direct = sink.direct(h.len());
            let (body, at) = if direct {
                (&mut self.buf, PayloadIn::Own)
            } else {
                match sink.own_buf() {
                    Some(own) => (own, PayloadIn::OwnAfterTopic),
                    None => (&mut self.buf, PayloadIn::Ref),
                }
            };
            body.resize(if direct { tl } else { tl + h.len() }, 0);
            let whole = slot.body(body);
            let raw = &body[..tl];
            let (utf8, matched) = if same_bytes(raw, a.last_topic.as_bytes()) {
                // Validated and matched the first time it came.
                (true, a.last_matched)
            } else {
                match std::str::from_utf8(raw) {
                    Ok(topic) => {
                        let matched = self.pattern.matches(topic);
                        a.last_topic.clear();
                        a.last_topic.push_str(topic);
                        a.last_matched = matched;
                        (true, matched)
                    }
                    Err(_) => (false, false),
                }
            };
            let kind = h.kind();
            let well_formed = utf8 && (KIND_MESSAGE..=KIND_REPLY).contains(&kind);
            if !well_formed && taken > 0 {
                // Left for the next call, which reports it.
                break None;
            }
            let wanted = kind < 8 && self.kinds & (1 << kind) != 0 && matched;
            if let (true, true, Some(out)) = (direct, wanted, sink.own_buf()) {
                // Before the stamp is checked again: a payload overwritten meanwhile is
                // then not delivered.
                out.resize(h.len(), 0);
                let whole_payload = slot.payload(tl, out);
                debug_assert!(whole_payload, "a checked slot is inside the segment");
            }
            a.cursor += 1;
            if !slot.unchanged(s1) {
                // Overwritten while read: what was read is not this message.
                a.drops = a.drops.saturating_add(1);
                a.known_w = a.cursor;
                continue;
            }
            // `Slot::head` checked the sizes against the slot.
            debug_assert!(whole, "a checked slot is inside the segment");
            if wanted {
                a.delivered += 1;
            }
            if block && w - a.cursor == block_depth / 2 {
                a.notified_at = a.cursor;
                a.publish_cursor(true);
                published = a.cursor;
            }
            if !utf8 {
                break Some(format!(
                    "a message of node {:016x} has a topic that is not UTF-8",
                    a.node_id
                ));
            }
            if !well_formed {
                break Some(format!(
                    "a message of node {:016x} has kind {kind}",
                    a.node_id
                ));
            }
            if !wanted {
                continue;
            }
            sink.take(
                MessageRef {
                    // A wanted message matched, so its topic is valid and is `last_topic`.
                    topic: &a.last_topic,
                    payload: match at {
                        PayloadIn::Ref => &self.buf[tl..],
                        PayloadIn::Own | PayloadIn::OwnAfterTopic => &[],
                    },
                    publisher: a.node_id,
                    kind,
                    corr,
                    reply_to,
                },
                at,
            );
            taken += 1;
        };
        if a.cursor != published {
            a.publish_cursor(false);
        }
        self.delivered += taken as u64;
        match fault {
            None => Ok(taken),
            Some(why) => {
                self.corrupted += 1;
                Err(Error::Corrupted(why))
            }
        }
    }

    /// One look at every publisher (and at the registry when it changed): takes up to `max`
    /// messages of the first publisher that has any; returns how many.
    fn poll_once<S: Sink>(&mut self, max: usize, sink: &mut S) -> Result<usize> {
        self.polls = self.polls.wrapping_add(1);
        let gen = self.shared.reg.generation().load(Ordering::Acquire);
        if gen != self.last_gen || (self.polls % 64 == 0 && self.last_scan.elapsed() > RESCAN) {
            self.scan(false)?;
            if let Some(node_id) = self.unreadable.take() {
                return Err(too_many_readers(node_id));
            }
        }
        let n = self.atts.len();
        // Starting at `next`, each attachment once (no division per look).
        let mut i = if self.next < n { self.next } else { 0 };
        for k in 0..n {
            if k > 0 {
                i = if i + 1 < n { i + 1 } else { 0 };
            }
            if self.atts[i].parked.is_some() {
                continue;
            }
            let got = self.read_some(i, max, sink)?;
            if got > 0 {
                // Stay on a publisher that has messages for a burst, then move on: fair
                // between busy publishers, without looking at every idle one per message.
                let got32 = u32::try_from(got).unwrap_or(u32::MAX);
                if k == 0 {
                    self.burst = self.burst.saturating_add(got32);
                } else {
                    self.next = i;
                    self.burst = got32;
                }
                if self.burst >= BURST {
                    self.next = if i + 1 < n { i + 1 } else { 0 };
                    self.burst = 0;
                }
                return Ok(got);
            }
        }
        // Publishers that left and whose messages have all been read.
        if !self.any_gone {
            return Ok(0);
        }
        let before = self.atts.len();
        let mut past = 0;
        self.atts.retain(|a| {
            let done = a.gone
                && (a.parked.is_some() || a.cursor >= a.seg.write_seq().load(Ordering::Acquire));
            if done {
                past = a.drops.saturating_add(past);
            }
            !done
        });
        self.past_drops = self.past_drops.saturating_add(past);
        if self.atts.len() != before {
            self.next = 0;
        }
        self.any_gone = self.atts.iter().any(|a| a.gone);
        Ok(0)
    }

    /// Fills `msg` with the next message (reusing its buffers), waiting as `wait` allows.
    /// Where it takes none, `msg`'s payload may have been written over.
    pub fn recv_into_with(&mut self, msg: &mut Message, wait: Wait) -> Result<()> {
        self.recv_some(1, wait, &mut IntoMessage(msg)).map(drop)
    }

    /// Hands each message there to `f`, up to `max` (at least one: waits for it as `wait`
    /// allows; `max` 0 takes none and returns at once); returns how many.
    pub fn recv_batch_with<F: FnMut(MessageRef<'_>)>(
        &mut self,
        max: usize,
        wait: Wait,
        f: F,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        self.recv_some(max, wait, &mut Batch(f))
    }

    /// The core receive: up to `max` messages (at least one) into `sink`, waiting for the
    /// first as `wait` allows.
    fn recv_some<S: Sink>(&mut self, max: usize, wait: Wait, sink: &mut S) -> Result<usize> {
        let got = self.poll_once(max, sink)?;
        if got > 0 {
            return Ok(got);
        }
        if wait == Wait::Never {
            return Err(Error::WouldBlock);
        }
        let spin_until = Instant::now() + self.shared.url.spin;
        // Looks a few pauses apart, as the shm channel does: a message that comes is seen
        // within tens of nanoseconds. (Sixteen pauses between looks, every other look after
        // a yield, left 250-300 ns between looks here: about 150 ns more per message on
        // average, and a round trip of 1,000-1,200 ns against 700-800.) The clock is read
        // once per burst of looks, and each burst ends with a yield: subscribers may
        // outnumber the CPUs, and one that spins on an idle ring holds a CPU the publisher
        // needs (measured, 8 subscribers on 2 CPUs: 9.9 M deliveries/s in total without
        // yields, 13.5-14.5 M with them; with this loop, 13-22 M, as before it).
        let polled = spin_looking(spin_until, || match self.poll_once(max, sink) {
            Ok(0) => None,
            r => Some(r),
        });
        if let Some(r) = polled {
            return r;
        }
        self.set_asleep(true);
        let r = self.sleep_until_message(max, sink, wait);
        self.set_asleep(false);
        r
    }

    /// Counts this subscription in (or out of) the sleeping readers of every node it reads.
    fn set_asleep(&mut self, on: bool) {
        self.asleep = on;
        for a in &mut self.atts {
            a.mark_asleep(on);
        }
    }

    /// The sleeping part of a receive: the subscription is counted asleep (`set_asleep`).
    fn sleep_until_message<S: Sink>(
        &mut self,
        max: usize,
        sink: &mut S,
        wait: Wait,
    ) -> Result<usize> {
        let shared = self.shared.clone();
        let (doorbell, sleepers) = (
            shared.reg.doorbell(shared.entry),
            shared.reg.sleepers(shared.entry),
        );
        loop {
            sleepers.fetch_add(1, Ordering::Relaxed);
            let _awake = Sleeping(sleepers);
            let observed = shared.reg.arm(shared.entry);
            let longest = sleep_fence();
            let got = self.poll_once(max, sink)?;
            if got > 0 {
                return Ok(got);
            }
            // After the look, as before the fence came: a message there at the deadline is
            // taken, not reported as a timeout.
            let slice = wait.slice(longest)?;
            sys::futex_wait(doorbell, observed, Some(slice))?;
            let got = self.poll_once(max, sink)?;
            if got > 0 {
                return Ok(got);
            }
        }
    }

    /// The next message, from async code: sleeps on the same doorbell through the futex
    /// watcher (no thread per receiver, no CPU while idle).
    #[cfg(feature = "tokio")]
    pub async fn recv_async(&mut self) -> Result<Message> {
        let mut msg = Message::default();
        let shared = self.shared.clone();
        let (doorbell, sleepers) = (
            shared.reg.doorbell(shared.entry),
            shared.reg.sleepers(shared.entry),
        );
        // Counted asleep until a message comes; a future dropped while waiting leaves the
        // counts up (publishers then look at our doorbell for nothing) until the next receive
        // or the subscription's end.
        loop {
            if self.poll_once(1, &mut IntoMessage(&mut msg))? > 0 {
                self.set_asleep(false);
                return Ok(msg);
            }
            self.set_asleep(true);
            sleepers.fetch_add(1, Ordering::Relaxed);
            let _awake = Sleeping(sleepers);
            let observed = shared.reg.arm(shared.entry);
            let slice = sleep_fence();
            if self.poll_once(1, &mut IntoMessage(&mut msg))? > 0 {
                self.set_asleep(false);
                return Ok(msg);
            }
            let _ = tokio::time::timeout(slice, sys::futex_watch(doorbell, observed)).await;
        }
    }
}

/// The reader's side of the sleep handshake, between counting itself asleep and its last
/// look: either that look finds the publisher's message, or the publisher finds the reader
/// asleep and rings its doorbell. Publishers registered for `membarrier` leave out their
/// fence, so this one makes their CPUs fence too. Returns how long the reader may sleep:
/// [`SLICE`], or [`UNFENCED_SLICE`] if that was impossible here (a publisher's message may
/// then wait that long for a reader that missed it).
fn sleep_fence() -> Duration {
    if sys::heavy_fence() {
        SLICE
    } else {
        UNFENCED_SLICE
    }
}

/// `a == b` for short byte strings (topics), eight bytes at a time. Slice equality called
/// the C library's `memcmp`, whose masked vector loads cannot take bytes from stores still
/// in flight: comparing a topic just copied out of a slot stalled there until the copy had
/// reached the cache (15 % of an 8-subscriber fan-out's samples). The plain loads here
/// still wait at the topic's last word (about 8 %, `perf annotate`), but less.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        if n < 4 {
            return a.iter().zip(b).all(|(x, y)| x == y);
        }
        let half = |s: &[u8], i: usize| u32::from_ne_bytes(s[i..i + 4].try_into().expect("4"));
        return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4);
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().expect("8"));
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    // The last eight bytes (overlapping the words already compared).
    word(a, n - 8) == word(b, n - 8)
}

/// A node whose reader slots are all taken: a subscription cannot read it. Out of line: it
/// is met on the receive path, once.
#[cold]
#[inline(never)]
fn too_many_readers(node_id: u64) -> Error {
    Error::LimitExceeded {
        limit: "subscriptions reading one bus node (those matching a topic it publishes, \
                and every block-policy subscription of the namespace)",
        current: node::READERS as u64,
        needed: node::READERS as u64 + 1,
        how: format!(
            "node {node_id:016x} cannot be read by this subscription: use fewer subscriptions \
             of its topics (one per pattern and process is enough) or fewer block-policy \
             ones, or spread them over namespaces (bus://local/NAME)"
        ),
    }
}

/// Calls `look` a few pauses apart until it gives something or `until` passes, yielding the
/// CPU after every [`SPIN_BURST`] looks.
#[inline]
fn spin_looking<T>(until: Instant, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        for _ in 0..SPIN_BURST {
            for _ in 0..PAUSES_PER_LOOK {
                std::hint::spin_loop();
            }
            if let Some(found) = look() {
                return Some(found);
            }
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Counts a receiver out of its node's sleepers when it wakes (or its future is dropped).
struct Sleeping<'a>(&'a AtomicU32);

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(tag: &str) -> String {
        format!("bus://local/t-{tag}-{}", std::process::id())
    }

    #[test]
    fn publish_subscribe_in_one_process() {
        let bus = Bus::open(&url("ps")).unwrap();
        let mut all = bus.subscribe("a/**").unwrap();
        let mut one = bus.subscribe("a/*/c").unwrap();
        bus.publish("a/b/c", b"1").unwrap();
        bus.publish("a/x", b"2").unwrap();
        bus.publish("b/b/c", b"3").unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(all.recv_timeout(t).unwrap().payload(), b"1");
        assert_eq!(all.recv_timeout(t).unwrap().payload(), b"2");
        assert_eq!(one.recv_timeout(t).unwrap().payload(), b"1");
        assert!(matches!(one.try_recv(), Err(Error::WouldBlock)));
        assert!(matches!(all.try_recv(), Err(Error::WouldBlock)));
    }

    thread_local! {
        /// A pause `subscribe_with` makes (on this thread) between its two steps, attaching
        /// to the publishers there and declaring itself: what a slow first subscription of a
        /// process (registering for `membarrier` can take milliseconds) looks like.
        pub(super) static SUBSCRIBE_GAP: std::cell::Cell<Duration> =
            const { std::cell::Cell::new(Duration::ZERO) };
    }

    /// A `drop` subscription reads a node through one of its 64 reader slots once the node
    /// publishes a matching topic. A subscription that could not read such a node is refused
    /// instead of missing that node's messages unseen (before, the 65th subscription of a
    /// namespace received nothing, and only a log line said why).
    #[test]
    fn a_subscription_that_cannot_read_a_node_is_refused() {
        let u = url("full");
        let publisher = Bus::open(&u).unwrap();
        publisher.publish("f/first", b"").unwrap();
        let subs_bus = Bus::open(&u).unwrap();
        let mut subs: Vec<_> = (0..node::READERS)
            .map(|_| subs_bus.subscribe("f/*").unwrap())
            .collect();
        let r = subs_bus.subscribe("f/*");
        assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
        // The ones there are whole: the last one reads the publisher.
        publisher.publish("f/next", b"to the 64th").unwrap();
        let m = subs[node::READERS - 1]
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(m.payload(), b"to the 64th");
        // A subscription to a topic nobody publishes takes no slot. When the publisher
        // starts on it, a receive says (once) that the node cannot be read; once a slot is
        // free the subscription takes it, and reads from that topic's first message on.
        let mut late = subs_bus.subscribe("f/late").unwrap();
        publisher.publish("f/late", b"late").unwrap();
        let r = late.recv_timeout(Duration::from_secs(5));
        assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
        let r = late.recv_timeout(Duration::from_millis(50));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        drop(subs.remove(0));
        let m = late.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(m.payload(), b"late");
    }

    /// A namespace holds more `drop` subscriptions than a node has reader slots: each reads
    /// only the nodes that publish what it matches. (Before, every subscription read every
    /// node, and the 65th of a namespace was refused.) 150 subscriptions, one topic each,
    /// over three publishers of 50 topics.
    #[test]
    fn a_namespace_holds_more_subscriptions_than_a_node_has_reader_slots() {
        const SUBS: usize = 150;
        let u = url("many");
        let publishers: Vec<_> = (0..3).map(|_| Bus::open(&u).unwrap()).collect();
        let subs_bus = Bus::open(&u).unwrap();
        let mut subs: Vec<_> = (0..SUBS)
            .map(|i| subs_bus.subscribe(&format!("m/{i}")).unwrap())
            .collect();
        for i in 0..SUBS {
            publishers[i % 3]
                .publish(&format!("m/{i}"), &i.to_le_bytes())
                .unwrap();
        }
        for (i, sub) in subs.iter_mut().enumerate() {
            let m = sub.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(
                (m.topic(), m.payload()),
                (&*format!("m/{i}"), &i.to_le_bytes()[..])
            );
            assert!(matches!(sub.try_recv(), Err(Error::WouldBlock)));
        }
        for p in &publishers {
            assert_eq!(p.stats().readers.len(), SUBS / 3);
        }
    }

    /// A publisher that sees a subscription declared and publishes at once is read: the
    /// subscription attaches to the publishers already there before it declares itself. (The
    /// other way round, a message published in between fell before the subscription's start
    /// and was lost without a drop counted; `ipckit bus pub`, which waits for a subscriber to
    /// be seen, lost the start of a 300-message burst this way.) The publisher looks for the
    /// declaration in a tight loop; the subscription pauses between its steps.
    #[test]
    fn a_publisher_that_sees_a_subscription_declared_is_read() {
        let u = url("declared");
        let publisher = std::sync::Arc::new(Bus::open(&u).unwrap());
        publisher.publish("d/warm", b"there before").unwrap();
        let subscriber = Bus::open(&u).unwrap();
        SUBSCRIBE_GAP.with(|gap| gap.set(Duration::from_millis(20)));
        for round in 0..5 {
            let pattern = format!("d/r{round}");
            let p = publisher.clone();
            let watched = pattern.clone();
            let t = std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(5);
                while Instant::now() < end {
                    if p.peers()
                        .iter()
                        .any(|peer| peer.subscribes.contains(&watched))
                    {
                        p.publish(&watched, b"first").unwrap();
                        return true;
                    }
                }
                false
            });
            let mut sub = subscriber.subscribe(&pattern).unwrap();
            assert!(
                t.join().unwrap(),
                "round {round}: the declaration was never seen"
            );
            let m = sub.recv_timeout(Duration::from_secs(5));
            assert!(
                matches!(&m, Ok(m) if m.payload() == b"first"),
                "round {round}: {m:?}, drops {}",
                sub.drops()
            );
        }
    }

    /// A subscription asleep attaches to a new node that publishes a matching topic at once
    /// (the topic's declaration wakes it; a node's join does too, for `block` subscriptions,
    /// which read every node), not when its sleep slice ends: a publisher that waits for its
    /// subscribers to attach (`ipckit bus pub`) would otherwise wait up to a slice (50 ms).
    /// Each round a node joins and publishes while the subscriber sleeps, and waits to be
    /// attached: unwoken, 890 ms over the rounds here; woken, 5.4-5.9 ms. The bound (250 ms
    /// in all) is far from both.
    #[test]
    fn a_sleeping_subscription_attaches_to_a_new_node_at_once() {
        const ROUNDS: u32 = 20;
        let u = format!("{}?spin_us=0", url("joinwake"));
        let bus = Bus::open(&u).unwrap();
        let mut sub = bus.subscribe("j/*").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        // The subscriber sleeps (spin_us=0) in receives that find nothing.
        let t = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let _ = sub.recv_timeout(Duration::from_millis(200));
            }
        });
        let mut waited = Duration::ZERO;
        for round in 0..ROUNDS {
            std::thread::sleep(Duration::from_millis(5));
            let node = Bus::open(&u).unwrap();
            node.publish("j/x", b"").unwrap();
            let start = Instant::now();
            let end = start + Duration::from_secs(5);
            while node.stats().readers.is_empty() {
                assert!(Instant::now() < end, "round {round}: never attached");
                std::thread::sleep(Duration::from_micros(200));
            }
            waited += start.elapsed();
        }
        eprintln!("{ROUNDS} new nodes waited {waited:?} in all to be attached");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(
            waited < Duration::from_millis(250),
            "{ROUNDS} new nodes waited {waited:?} in all for a sleeping subscription"
        );
    }

    /// Receivers that sleep at once (`spin_us=0`) are woken by every publish: the sleep
    /// handshake (a compiler fence on the publisher's side once it is registered for
    /// `membarrier`, `sleep_fence` on the receiver's) loses no wake-up. A lost one would
    /// still arrive, a sleep slice (50 ms) late: 100 of them would take 5 s or more, so the
    /// bound below (40 times what it takes) catches them without timing anything fine.
    #[test]
    fn sleeping_receivers_are_woken_by_each_publish() {
        let u = format!("{}?spin_us=0", url("sleep"));
        let bus = Bus::open(&u).unwrap();
        let mut sub = bus.subscribe("s/*").unwrap();
        let publisher = Bus::open(&u).unwrap();
        let start = Instant::now();
        let t = std::thread::spawn(move || {
            for i in 0u32..100 {
                std::thread::sleep(Duration::from_micros(500));
                publisher.publish("s/x", &i.to_le_bytes()).unwrap();
            }
        });
        for i in 0u32..100 {
            let m = sub.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(m.payload(), i.to_le_bytes());
        }
        t.join().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "100 messages 0.5 ms apart took {:?}: wake-ups were lost",
            start.elapsed()
        );
    }

    /// A block-policy publisher waits for the slowest of three subscribers and is woken by
    /// that one only (`writer_waiting` names it; the others, caught up, leave it alone). Each
    /// subscriber reads the write position once per batch, not per message, and must still
    /// wake the publisher once it has made room, also where it passed the half-depth point
    /// with an old write position. A lost wake-up costs a sleep slice (50 ms): with depth 16
    /// the publisher blocks hundreds of times here, so lost ones would show far above the
    /// bound below (which is 50 times what the run takes) without timing anything fine.
    #[test]
    fn a_block_publisher_is_woken_by_the_slow_subscriber_it_waits_for() {
        const N: u32 = 6000;
        let u = format!("{}?slots=16&spin_us=0", url("blockwake"));
        let bus = Bus::open(&u).unwrap();
        let opts = SubscribeOptions {
            depth: 16,
            overflow: Overflow::Block,
        };
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let node = Bus::open(&u).unwrap();
                let mut sub = node.subscribe_with("w/*", opts).unwrap();
                std::thread::spawn(move || {
                    for i in 0..N {
                        let m = sub.recv_timeout(Duration::from_secs(5)).unwrap();
                        assert_eq!(m.payload(), i.to_le_bytes(), "reader {r}");
                        // Reader 0 is slow now and then, so the publisher waits for it.
                        if r == 0 && i % 500 == 0 {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    assert_eq!(sub.drops(), 0);
                    node
                })
            })
            .collect();
        // All three subscribed before the first message.
        let deadline = Instant::now() + Duration::from_secs(5);
        while bus.stats().readers.len() < 3 {
            assert!(Instant::now() < deadline, "subscribers did not attach");
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        for i in 0..N {
            bus.publish("w/x", &i.to_le_bytes()).unwrap();
        }
        for r in readers {
            drop(r.join().unwrap());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{N} messages to three block subscribers took {:?}: wake-ups were lost",
            start.elapsed()
        );
    }

    /// `same_bytes` agrees with `==` for every length up to 40 and a difference at every
    /// position (the word-wise compare reads overlapping tails).
    #[test]
    fn same_bytes_agrees_with_slice_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!same_bytes(&a, &b), "length {n}, byte {at}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_bytes(&a, &longer), "length {n} against {}", n + 1);
        }
    }

    /// A publisher that leaves is let go once its last message has been read (its drops
    /// stay counted); until one leaves, an empty look does not go through the attachments
    /// for gone ones.
    #[test]
    fn a_gone_publisher_is_let_go_after_its_last_message() {
        let u = url("gone");
        let bus = LocalBus::open(&u).unwrap();
        let opts = SubscribeOptions {
            depth: 2,
            overflow: Overflow::DropOldest,
        };
        let mut sub = bus.subscribe_with("g", opts).unwrap();
        let publisher = LocalBus::open(&u).unwrap();
        for i in 0..5u8 {
            publisher.publish("g", &[i]).unwrap();
        }
        let mut m = Message::default();
        sub.recv_into_with(&mut m, Wait::Never).unwrap();
        assert_eq!(m.payload(), [3]);
        // The publisher's node, and the subscriber's own (which may publish on `g` too).
        let attached = sub.atts.len();
        assert!(!sub.any_gone);
        drop(publisher);
        sub.recv_into_with(&mut m, Wait::Never).unwrap();
        assert_eq!(
            m.payload(),
            [4],
            "a gone publisher's last messages are still read"
        );
        assert!(sub.any_gone);
        assert!(matches!(
            sub.recv_into_with(&mut m, Wait::Never),
            Err(Error::WouldBlock)
        ));
        assert_eq!((sub.atts.len(), sub.any_gone), (attached - 1, false));
        assert_eq!(sub.drops(), 3, "its drops stay counted");
    }

    #[test]
    fn drop_oldest_counts_on_both_sides() {
        let bus = Bus::open(&url("drop")).unwrap();
        let mut sub = bus
            .subscribe_with(
                "d",
                SubscribeOptions {
                    depth: 4,
                    overflow: Overflow::DropOldest,
                },
            )
            .unwrap();
        // Read once: the subscription reads the node from its first message on "d".
        bus.publish("d", &[100]).unwrap();
        assert_eq!(sub.try_recv().unwrap().payload(), [100]);
        for i in 0..10u8 {
            bus.publish("d", &[i]).unwrap();
        }
        assert_eq!(bus.stats().readers[0].drops, 6);
        let got: Vec<u8> = (0..4)
            .map(|_| sub.try_recv().unwrap().payload()[0])
            .collect();
        assert_eq!(got, [6, 7, 8, 9]);
        assert_eq!(sub.drops(), 6);
        assert_eq!(bus.stats().readers[0].drops, 6);
    }

    #[test]
    fn block_policy_streams_everything_in_order_between_threads() {
        block_policy_stream("blockstream", false);
    }

    /// The same with batches: the cursor, stored once per batch, still lets the publisher
    /// through.
    #[test]
    fn block_policy_batches_everything_in_order_between_threads() {
        block_policy_stream("blockbatch", true);
    }

    /// A block-policy subscriber with a shallow subscription on another thread, sleeping and
    /// waking many times: the publisher is woken only once the subscriber has made room for
    /// a batch, and the subscriber's doorbell rings once per sleep. Nothing is lost or
    /// reordered, nothing times out.
    fn block_policy_stream(tag: &str, batches: bool) {
        let url = url(tag);
        let publisher = Bus::open(&url).unwrap();
        let reader = Bus::open(&url).unwrap();
        let mut sub = reader
            .subscribe_with(
                "s/*",
                SubscribeOptions {
                    depth: 8,
                    overflow: Overflow::Block,
                },
            )
            .unwrap();
        const N: u32 = 20_000;
        let t = Duration::from_secs(10);
        let reading = std::thread::spawn(move || {
            let mut next = 0u32;
            while next < N {
                let before = next;
                let mut check = |m: MessageRef<'_>| {
                    assert_eq!(m.payload(), next.to_le_bytes(), "message {next}");
                    next += 1;
                };
                if batches {
                    sub.recv_batch_timeout(64, t, check).unwrap();
                } else {
                    check(sub.recv_timeout(t).unwrap().as_ref());
                }
                if before / 1000 != next / 1000 {
                    // Fall behind now and then, so the publisher has to wait for room.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            sub
        });
        for i in 0..N {
            publisher
                .publish_with("s/x", &i.to_le_bytes(), Wait::timeout(t))
                .unwrap();
            if i % 3000 == 0 {
                // And let the subscriber fall asleep now and then.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let sub = reading.join().unwrap();
        assert_eq!(sub.drops(), 0);
        assert_eq!(sub.delivered(), u64::from(N));
    }

    /// Payloads below and above `DIRECT_PAYLOAD` (copied with the topic, or straight into
    /// the message after it) arrive exact, into one reused message, and those of other
    /// topics are skipped.
    #[test]
    fn large_and_small_payloads_into_a_reused_message() {
        let u = format!("{}?max_msg=256K&slots=16", url("sizes"));
        let bus = Bus::open(&u).unwrap();
        let mut sub = bus.subscribe("a/*").unwrap();
        let sizes = [
            0,
            100,
            DIRECT_PAYLOAD - 1,
            DIRECT_PAYLOAD,
            200_000,
            5,
            DIRECT_PAYLOAD + 1,
        ];
        let payload = |i: usize, n: usize| -> Vec<u8> { (0..n).map(|j| (i + j) as u8).collect() };
        for (i, &n) in sizes.iter().enumerate() {
            bus.publish("b/x", &payload(i + 100, n)).unwrap();
            bus.publish("a/x", &payload(i, n)).unwrap();
        }
        let mut msg = Message::default();
        for (i, &n) in sizes.iter().enumerate() {
            sub.recv_into_timeout(&mut msg, Duration::from_secs(2))
                .unwrap();
            assert_eq!(msg.topic(), "a/x");
            assert!(msg.payload() == payload(i, n), "payload {i} of {n} bytes");
        }
        assert!(matches!(sub.try_recv(), Err(Error::WouldBlock)));
    }

    /// A small message is received with its topic in front of its payload in one buffer:
    /// topics of other lengths, one after the other into one reused message, never show in
    /// the payload, nor in comparisons, `Debug` or `into_payload`.
    #[test]
    fn a_received_payload_never_shows_its_topic() {
        let bus = Bus::open(&url("topic-in-front")).unwrap();
        let mut sub = bus.subscribe("t/**").unwrap();
        let topics = ["t/a", "t/much/longer/topic/name", "t/bb", "t/a"];
        for (i, topic) in topics.iter().enumerate() {
            bus.publish(topic, format!("payload {i}").as_bytes())
                .unwrap();
        }
        let mut msg = Message::default();
        for (i, topic) in topics.iter().enumerate() {
            sub.recv_into_timeout(&mut msg, Duration::from_secs(2))
                .unwrap();
            let want = format!("payload {i}");
            assert_eq!(msg.topic(), *topic);
            assert_eq!(msg.payload(), want.as_bytes());
            let expected = Message::received(
                topic.to_string(),
                want.clone().into_bytes(),
                msg.publisher(),
                false,
            );
            assert_eq!(msg, expected);
            assert_eq!(format!("{msg:?}"), format!("{expected:?}"));
            assert_eq!(msg.clone().into_payload(), want.as_bytes());
        }
    }

    /// A publisher overrunning a drop-policy reader with large messages (copied straight
    /// into the caller's message): every message arrives whole or is counted dropped. (A
    /// copy torn by the publisher lapping the reader during it needs the reader preempted
    /// mid-copy, which this does not arrange: in a debug build about a third of the
    /// messages are dropped as overrun, none torn.)
    #[test]
    fn large_payloads_under_overrun_arrive_whole_or_counted_dropped() {
        const SIZE: usize = 64 * 1024;
        const N: u64 = 3_000;
        let u = format!("{}?max_msg=64K&slots=16", url("torn"));
        let publisher = Bus::open(&u).unwrap();
        let reader = Bus::open(&u).unwrap();
        let mut sub = reader
            .subscribe_with(
                "t/*",
                SubscribeOptions {
                    depth: 4,
                    overflow: Overflow::DropOldest,
                },
            )
            .unwrap();
        let t = std::thread::spawn(move || {
            let mut msg = Message::default();
            let mut got = 0u64;
            let mut last = None;
            while last != Some(N - 1) {
                sub.recv_into_timeout(&mut msg, Duration::from_secs(10))
                    .unwrap();
                let p = msg.payload();
                assert_eq!(p.len(), SIZE);
                let seq = u64::from_le_bytes(p[..8].try_into().unwrap());
                assert!(
                    p.chunks(8).all(|w| w == seq.to_le_bytes()),
                    "message {seq} is torn"
                );
                assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
                last = Some(seq);
                got += 1;
            }
            (got, sub.drops())
        });
        let mut msg = vec![0u8; SIZE];
        for seq in 0..N {
            for w in msg.chunks_mut(8) {
                w.copy_from_slice(&seq.to_le_bytes());
            }
            publisher.publish("t/x", &msg).unwrap();
        }
        let (got, drops) = t.join().unwrap();
        assert_eq!(got + drops, N, "every message delivered or counted dropped");
    }

    #[test]
    fn a_reader_taking_a_freed_slot_is_not_overrun() {
        // The publisher caches how far it may write; a new block-policy reader that takes
        // the reader slot another just freed must still hold it back.
        let url = url("reslot");
        let publisher = Bus::open(&url).unwrap();
        let reader = Bus::open(&url).unwrap();
        let opts = |depth| SubscribeOptions {
            depth,
            overflow: Overflow::Block,
        };
        let wide = reader.subscribe_with("r", opts(64)).unwrap();
        publisher.publish("r", b"0").unwrap();
        drop(wide);
        let mut narrow = reader.subscribe_with("r", opts(2)).unwrap();
        publisher.publish("r", b"1").unwrap();
        publisher.publish("r", b"2").unwrap();
        assert!(matches!(
            publisher.publish_with("r", b"3", Wait::Never),
            Err(Error::WouldBlock)
        ));
        assert_eq!(narrow.try_recv().unwrap().payload(), b"1");
        assert_eq!(narrow.try_recv().unwrap().payload(), b"2");
        publisher.publish_with("r", b"3", Wait::Never).unwrap();
        assert_eq!(narrow.try_recv().unwrap().payload(), b"3");
        assert_eq!(narrow.drops(), 0);
    }

    /// A block-policy subscription holds back a publisher only on topics it matches. It
    /// holds a reader slot of every node, parked while the node publishes nothing it
    /// matches: a publisher of other topics it has seen listed is never held back by it,
    /// and one that starts on a topic it matches is held back from that topic's first
    /// message on (its depth ahead of that message), until the subscription reads.
    /// (Before, a stalled block-policy subscriber of `x/*` made a publisher of `y/z` time
    /// out.)
    #[test]
    fn a_block_subscription_holds_back_only_the_topics_it_matches() {
        let u = url("parked");
        let publisher = Bus::open(&u).unwrap();
        publisher.publish("y/z", b"before").unwrap();
        let subscriber = Bus::open(&u).unwrap();
        let mut sub = subscriber
            .subscribe_with(
                "x/*",
                SubscribeOptions {
                    depth: 4,
                    overflow: Overflow::Block,
                },
            )
            .unwrap();
        let readers = publisher.stats().readers;
        assert_eq!(readers.len(), 1, "{readers:?}");
        assert!(readers[0].parked && readers[0].lag == 0, "{readers:?}");
        // The subscriber reads nothing meanwhile.
        for i in 0..1000u32 {
            publisher
                .publish_with("y/z", &i.to_le_bytes(), Wait::Never)
                .unwrap();
        }
        // A matching topic: its first `depth` messages go, then the publisher waits.
        for i in 0..4u8 {
            publisher.publish_with("x/1", &[i], Wait::Never).unwrap();
        }
        let r = publisher.publish_with("x/1", &[4], Wait::Never);
        assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
        // The subscription reads from that topic's first message, and nothing else.
        for i in 0..4u8 {
            let m = sub.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!((m.topic(), m.payload()), ("x/1", &[i][..]));
        }
        assert!(!publisher.stats().readers[0].parked);
        publisher.publish_with("x/1", &[4], Wait::Never).unwrap();
        assert_eq!(sub.try_recv().unwrap().payload(), [4]);
        assert!(matches!(sub.try_recv(), Err(Error::WouldBlock)));
        assert_eq!(sub.drops(), 0);
    }

    /// A parked block-policy subscription that looks at the catalog again lets a publisher
    /// of a new topic it does not match go on: a publisher held back on a new topic
    /// (`depth` messages on) is let go when a receive of the subscription (woken by the
    /// topic's declaration) finds that it does not match.
    #[test]
    fn a_parked_subscription_lets_a_new_unmatched_topic_go_once_it_looks() {
        let u = url("parkmove");
        let publisher = std::sync::Arc::new(Bus::open(&u).unwrap());
        let subscriber = Bus::open(&u).unwrap();
        let mut sub = subscriber
            .subscribe_with(
                "x/*",
                SubscribeOptions {
                    depth: 2,
                    overflow: Overflow::Block,
                },
            )
            .unwrap();
        let p = publisher.clone();
        let t = std::thread::spawn(move || {
            // Up to 2 go at once; the rest wait for the subscription to look.
            for i in 0..100u32 {
                p.publish_with(
                    "y/new",
                    &i.to_le_bytes(),
                    Wait::timeout(Duration::from_secs(5)),
                )
                .unwrap();
            }
        });
        // Receives that find nothing, until the publisher is through.
        let end = Instant::now() + Duration::from_secs(10);
        while !t.is_finished() {
            assert!(Instant::now() < end, "the publisher is still held back");
            let r = sub.recv_timeout(Duration::from_millis(20));
            assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        }
        t.join().unwrap();
        assert!(publisher.stats().readers[0].parked);
        assert_eq!(sub.drops(), 0);
    }

    #[test]
    fn block_policy_times_out_the_publisher() {
        let bus = Bus::open(&url("block")).unwrap();
        let mut sub = bus
            .subscribe_with(
                "k",
                SubscribeOptions {
                    depth: 2,
                    overflow: Overflow::Block,
                },
            )
            .unwrap();
        bus.publish("k", b"1").unwrap();
        bus.publish("k", b"2").unwrap();
        let r = bus.publish_with("k", b"3", Wait::timeout(Duration::from_millis(20)));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        assert_eq!(sub.try_recv().unwrap().payload(), b"1");
        bus.publish("k", b"3").unwrap();
        assert_eq!(sub.drops(), 0);
    }

    #[test]
    fn request_reply_and_no_responder() {
        let bus = Bus::open(&url("rr")).unwrap();
        let t = Duration::from_secs(5);
        assert!(matches!(
            bus.request("svc/none", b"x", t),
            Err(Error::ConnectionRefused { .. })
        ));
        let _h = bus
            .serve("svc/*", |m| [m.topic().as_bytes(), m.payload()].concat())
            .unwrap();
        assert_eq!(bus.request("svc/a", b"!", t).unwrap(), b"svc/a!");
        assert_eq!(bus.request("svc/b", b"?", t).unwrap(), b"svc/b?");
        let peers = bus.peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].serves, ["svc/*"]);
    }

    /// Dropping the last subscription or responder of a pattern withdraws it: peers no longer
    /// list it, a watch says so, a request fails at once; declaring it again reuses the
    /// record, so subscribing and dropping in a loop does not fill the catalog.
    #[test]
    fn a_dropped_subscription_or_responder_is_withdrawn() {
        let u = url("withdraw");
        let a = LocalBus::open(&u).unwrap();
        let b = LocalBus::open(&u).unwrap();
        let mut watch = b.watch();
        let t = Duration::from_secs(5);
        let of_a = |b: &LocalBus| {
            let peers = b.peers();
            let p = peers.iter().find(|p| p.node_id == a.node_id()).unwrap();
            (p.subscribes.clone(), p.serves.clone())
        };
        let mut next = || loop {
            match watch.next_with(Wait::timeout(t)).unwrap() {
                PeerEvent::Joined(_) => {}
                e => return e,
            }
        };
        let s1 = a.subscribe("w/*").unwrap();
        let s2 = a.subscribe("w/*").unwrap();
        let declared = PeerEvent::Declared {
            node_id: a.node_id(),
            pid: std::process::id(),
            kind: Declaration::Subscribes,
            topic: "w/*".into(),
        };
        assert_eq!(next(), declared);
        drop(s1);
        assert_eq!(of_a(&b).0, ["w/*"], "one of the two still subscribes");
        drop(s2);
        assert_eq!(
            next(),
            PeerEvent::Withdrew {
                node_id: a.node_id(),
                pid: std::process::id(),
                kind: Declaration::Subscribes,
                topic: "w/*".into(),
            }
        );
        assert!(of_a(&b).0.is_empty());
        let catalog_len = |bus: &LocalBus| bus.shared.node.catalog(0).1;
        let len = catalog_len(&a);
        for _ in 0..100 {
            drop(a.subscribe("w/*").unwrap());
        }
        assert_eq!(catalog_len(&a), len, "the record is reused");
        assert!(of_a(&b).0.is_empty());
        let _s3 = a.subscribe("w/*").unwrap();
        assert_eq!(of_a(&b).0, ["w/*"]);

        let h = a.serve("svc/*", |m| m.payload().to_vec()).unwrap();
        assert_eq!(b.request("svc/x", b"1", t).unwrap(), b"1");
        drop(h);
        let r = b.request("svc/x", b"2", t);
        assert!(matches!(r, Err(Error::ConnectionRefused { .. })), "{r:?}");
        assert!(of_a(&b).1.is_empty());
        let _h = a.serve("svc/*", |m| m.payload().to_vec()).unwrap();
        assert_eq!(b.request("svc/x", b"3", t).unwrap(), b"3");
        assert_eq!(of_a(&b).1, ["svc/*"]);
    }

    #[test]
    fn malformed_slot_is_a_typed_error() {
        let bus = Bus::open(&url("bad")).unwrap();
        let mut sub = bus.subscribe("m").unwrap();
        bus.publish("m", b"ok").unwrap();
        bus.publish_malformed(&[0xff; 64]).unwrap();
        bus.publish("m", b"after").unwrap();
        let t = Duration::from_secs(1);
        assert_eq!(sub.recv_timeout(t).unwrap().payload(), b"ok");
        assert!(matches!(sub.recv_timeout(t), Err(Error::Corrupted(_))));
        assert_eq!(sub.recv_timeout(t).unwrap().payload(), b"after");
    }

    /// A batch receive takes what is there, in order, at most `max` at a time, skipping
    /// other topics; with nothing there it is `WouldBlock` or a `Timeout` that names its
    /// wait; `max` 0 takes nothing.
    #[test]
    fn batches_in_order_up_to_max() {
        let bus = Bus::open(&format!("{}?max_msg=64K&slots=32", url("batch"))).unwrap();
        let mut sub = bus.subscribe("b/*").unwrap();
        for i in 0..10u32 {
            bus.publish("b/x", &i.to_le_bytes()).unwrap();
            bus.publish("c/x", b"other").unwrap();
        }
        bus.publish("b/y", &[0; 20_000]).unwrap();
        let mut got = Vec::new();
        let mut take = |m: MessageRef<'_>| {
            assert!(!m.is_request());
            assert_eq!(m.publisher(), bus.node_id());
            got.push((m.topic().to_owned(), m.payload().to_vec()));
        };
        assert_eq!(sub.try_recv_batch(4, &mut take).unwrap(), 4);
        assert_eq!(sub.recv_batch_with(0, Wait::Never, &mut take).unwrap(), 0);
        let t = Duration::from_secs(2);
        assert_eq!(sub.recv_batch_timeout(100, t, &mut take).unwrap(), 7);
        assert!(matches!(
            sub.try_recv_batch(100, &mut take),
            Err(Error::WouldBlock)
        ));
        let short = Duration::from_millis(20);
        assert!(matches!(
            sub.recv_batch_timeout(100, short, &mut take),
            Err(Error::Timeout { after: Some(d) }) if d == short
        ));
        assert_eq!(got.len(), 11);
        for (i, (topic, payload)) in got[..10].iter().enumerate() {
            assert_eq!(
                (topic.as_str(), payload.as_slice()),
                ("b/x", &(i as u32).to_le_bytes()[..])
            );
        }
        assert_eq!((got[10].0.as_str(), got[10].1.len()), ("b/y", 20_000));
        assert_eq!(sub.delivered(), 11);
        // The single-message receives go on where the batch stopped.
        bus.publish("b/z", b"one").unwrap();
        let m = sub.recv_timeout(t).unwrap();
        assert_eq!((m.topic(), m.payload()), ("b/z", &b"one"[..]));
        assert_eq!(m.as_ref().to_message(), m);
    }

    /// A malformed message in the middle of a batch ends the batch before it; the next
    /// receive reports it, and the one after goes on.
    #[test]
    fn a_malformed_message_ends_a_batch() {
        let bus = Bus::open(&url("badbatch")).unwrap();
        let mut sub = bus.subscribe("m").unwrap();
        bus.publish("m", b"1").unwrap();
        bus.publish("m", b"2").unwrap();
        bus.publish_malformed(&[0xff; 64]).unwrap();
        bus.publish("m", b"3").unwrap();
        let mut got = Vec::new();
        let mut take = |m: MessageRef<'_>| got.push(m.payload().to_vec());
        assert_eq!(sub.try_recv_batch(10, &mut take).unwrap(), 2);
        assert!(matches!(
            sub.try_recv_batch(10, &mut take),
            Err(Error::Corrupted(_))
        ));
        assert_eq!(sub.try_recv_batch(10, &mut take).unwrap(), 1);
        assert_eq!(got, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        assert_eq!(sub.corrupted(), 1);
    }
}
