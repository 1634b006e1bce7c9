//! Durable queues (`queue:///path/to/dir`): an append-only log in a directory, that
//! producers and consumers use at different times, surviving crashes of either.
//!
//! ```
//! use ipckit::{MessageReceiver, MessageSender};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("queue://{}/jobs?durability=os&group=workers", dir.path().display());
//! let mut producer = ipckit::connect(&url)?; // appends; no consumer needs to run
//! producer.send(b"job 1")?;
//! producer.send(b"job 2")?;
//!
//! let mut consumer = ipckit::bind(&url)?.accept()?;
//! assert_eq!(consumer.recv_timeout(Duration::from_secs(5))?, b"job 1");
//! // "job 1" is acknowledged by this next recv: a crash before it would deliver it again.
//! assert_eq!(consumer.recv_timeout(Duration::from_secs(5))?, b"job 2");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Producer`] and [`Consumer`] give the whole interface: sequence numbers, explicit
//! acknowledgements, [`stat`].
//!
//! # Delivery
//! Every message gets the next sequence number of the queue, and each consumer group reads
//! all of them in that order (so the order of each producer's messages is kept). A group has
//! a committed offset: [`Consumer::ack`] advances it; after a restart the group resumes at
//! the first message not acknowledged, so every message is delivered **at least once** (a
//! crash between delivery and acknowledgement delivers it again). Through the generic
//! [`MessageReceiver`](crate::MessageReceiver) interface of a bound `queue://` connection, a
//! message is acknowledged automatically when the next `recv` is called; use
//! [`Connection::as_queue_consumer`](crate::Connection::as_queue_consumer) to acknowledge
//! earlier or later.
//!
//! # Durability
//! - [`Durability::Fsync`] (default, `?durability=fsync`): `send` returns once the record is
//!   on disk (`fdatasync`). Concurrent senders, in any processes, share one `fdatasync`
//!   (group commit): while one sync runs, the others append, and the next sync covers them
//!   all. A failed `fdatasync` is reported to every sender it may concern
//!   ([`Error::SyncFailed`]) and is never retried silently: the segment takes no more
//!   records.
//! - [`Durability::Os`] (`?durability=os`): `send` returns once the record is in the page
//!   cache: it survives the crash of any process, not a power cut.
//!
//! # Layout
//! ```text
//! DIR/00000000000000000001.seg   segments, named by their first sequence number (format in
//! DIR/00000000000000001735.seg   record.rs: header, then records of length | CRC32C | seq |
//!                                payload)
//! DIR/groups/NAME                each group's committed offset
//! DIR/queue.ctl                  the shared control page (locks, end of log, doorbell)
//! DIR/queue.lock                 serialises opening
//! ```
//! A producer starts a new segment when the next record would take the current one past
//! [`QueueOptions::segment_size`]. [Retention](QueueOptions::retain_bytes) removes segments
//! every group has consumed, and optionally by total size or age.
//!
//! # Design choices
//! - **Appends are serialised by a robust process-shared mutex in the control page**, not by
//!   an `flock` per append. Both survive a holder's death (the kernel releases an `flock`,
//!   and marks a robust mutex so the next holder repairs the tail), but an `flock` pair costs
//!   two system calls per message: measured here, `flock` + `pwrite` + unlock reach about
//!   1.07 M appends/s against 1.6 M for the `pwrite` alone. The mutex costs an atomic
//!   instruction when nobody else holds it, so an append is one `pwritev`.
//! - **Consumers wait on a futex doorbell in the control page**, not inotify. A producer
//!   rings it only when a consumer has said it may be asleep (one atomic load otherwise),
//!   so neither side makes a system call while the consumer keeps up; inotify would cost the
//!   consumer a `read` per wake-up and the kernel an event per write, and cannot carry the
//!   "nobody is asleep" shortcut. The doorbell works because every process maps the same
//!   page of the same file (futexes on shared file mappings are keyed by file and offset).
//! - **Segments are written with `pwritev` and read with `pread`**, not through mappings: a
//!   full disk is then an `ENOSPC` from the write (returned as [`Error::StorageFull`], with
//!   the partial record removed), never a `SIGBUS`.
//! - The control page is a cache of what the segments say. It records the boot id; after a
//!   reboot, or if it is missing or damaged, the first process to open the queue rebuilds it
//!   from the last segment. **Do not delete it while processes use the queue.**
//!
//! # Recovery
//! See [`Recovery`]: opening keeps the longest valid prefix of the log and cuts off (and
//! reports) an unfinished end, but fails with [`Error::CorruptRecord`] (file and offset)
//! when damage is followed by valid records; a consumer reading damaged data gets the same
//! error. Nothing is ever skipped silently. After a power cut in `os` mode the end of the
//! log may be lost, or damaged in a way that is reported as corruption.

mod consumer;
mod ctl;
mod group;
mod producer;
mod record;
mod recovery;
mod retention;
mod segment;
mod stat;

use std::path::Path;
use std::time::Duration;

pub use consumer::Consumer;
pub use group::{GroupName, MAX_GROUP_NAME};
pub use producer::Producer;
pub use recovery::Recovery;
pub use stat::{remove_group, stat, GroupStat, QueueStat, SegmentStat};

use crate::connection::Inner;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::Wait;

/// Default size at which a producer starts a new segment: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Smallest segment size.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Default time a consumer spins before sleeping: 20 µs.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// When `send` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// After `fdatasync`: the message survives a power cut. Concurrent senders share syncs.
    #[default]
    Fsync,
    /// After the write to the page cache: survives a process crash, not a power cut.
    Os,
}

impl Durability {
    /// The URL spelling (`fsync`, `os`).
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Durability> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "os" => Ok(Durability::Os),
            _ => Err(Error::InvalidName {
                name: s.to_owned(),
                reason: "durability is fsync or os",
            }),
        }
    }
}

/// How a queue is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// When `send` returns (default [`Durability::Fsync`]).
    pub durability: Durability,
    /// Size at which a producer starts a new segment (default [`DEFAULT_SEGMENT_SIZE`]); a
    /// larger message goes alone into a segment of its own.
    pub segment_size: u64,
    /// Largest message sent or received (default 16 MiB, at most 1 GiB).
    pub max_message_size: usize,
    /// Remove the oldest segments, consumed or not, while the queue holds more bytes.
    pub retain_bytes: Option<u64>,
    /// Remove segments last written longer ago than this, consumed or not.
    pub retain_age: Option<Duration>,
    /// Permissions of the files created (directories get search permission to match).
    pub mode: u32,
    /// How long a consumer spins before sleeping on the doorbell (default 20 µs;
    /// `?spin_us=N` in the URL).
    pub spin: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            durability: Durability::Fsync,
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_message_size: crate::endpoint::DEFAULT_MAX_MESSAGE_SIZE,
            retain_bytes: None,
            retain_age: None,
            mode: crate::endpoint::DEFAULT_MODE,
            spin: DEFAULT_SPIN,
        }
    }
}

impl QueueOptions {
    /// The defaults.
    pub fn new() -> QueueOptions {
        QueueOptions::default()
    }

    /// Sets the durability.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Sets the segment size (raised to at least [`MIN_SEGMENT_SIZE`]).
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes.max(MIN_SEGMENT_SIZE);
        self
    }

    /// Sets the largest message (at most 1 GiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.min(record::MAX_RECORD);
        self
    }

    /// Keeps at most about this many bytes of segments (the current one always stays).
    pub fn retain_bytes(mut self, bytes: u64) -> Self {
        self.retain_bytes = Some(bytes);
        self
    }

    /// Removes segments last written longer ago than `age`.
    pub fn retain_age(mut self, age: Duration) -> Self {
        self.retain_age = Some(age);
        self
    }

    /// Sets the permissions of the files created.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Sets how long a consumer spins before sleeping (zero: sleep at once).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    fn of_endpoint(ep: &Endpoint) -> QueueOptions {
        let o = ep.options();
        QueueOptions::new()
            .durability(o.durability)
            .max_message_size(o.max_message_size)
            .mode(o.mode)
            .spin(
                o.spin_us
                    .map_or(DEFAULT_SPIN, |us| Duration::from_micros(u64::from(us))),
            )
    }
}

/// One end of a `queue://` connection: the connected side produces, the bound side consumes
/// as the URL's group.
#[derive(Debug)]
pub(crate) enum QueueConn {
    Producer(Box<Producer>),
    Consumer(Box<Consumer>),
}

impl QueueConn {
    pub(crate) fn max(&self) -> usize {
        match self {
            QueueConn::Producer(p) => p.max_message_size(),
            QueueConn::Consumer(c) => c.max_message_size(),
        }
    }

    pub(crate) fn send(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        match self {
            QueueConn::Producer(p) => p.send_with(msg, wait).map(drop),
            QueueConn::Consumer(_) => Err(Error::Unsupported {
                op: "send",
                what: "the consuming (bound) end of a queue:// queue",
            }),
        }
    }

    /// Acknowledges what was delivered before, then receives the next message.
    pub(crate) fn recv_into(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<()> {
        match self {
            QueueConn::Consumer(c) => {
                c.ack_delivered()?;
                c.recv_into_with(buf, wait).map(drop)
            }
            QueueConn::Producer(_) => Err(Error::Unsupported {
                op: "recv",
                what: "the producing (connected) end of a queue:// queue",
            }),
        }
    }

    pub(crate) fn consumer(&mut self) -> Option<&mut Consumer> {
        match self {
            QueueConn::Consumer(c) => Some(c),
            QueueConn::Producer(_) => None,
        }
    }
}

fn dir_of(ep: &Endpoint) -> &Path {
    ep.path().expect("queue endpoints have a path")
}

/// `bind("queue:///dir?group=NAME")`: a consumer of the group.
pub(crate) fn bind(ep: &Endpoint) -> Result<Inner> {
    let c = Consumer::open_group(
        dir_of(ep),
        ep.options().group,
        &QueueOptions::of_endpoint(ep),
    )?;
    Ok(Inner::Queue(QueueConn::Consumer(Box::new(c))))
}

/// `connect("queue:///dir")`: a producer (the queue is created if it does not exist).
pub(crate) fn connect(ep: &Endpoint) -> Result<Inner> {
    let p = Producer::open(dir_of(ep), &QueueOptions::of_endpoint(ep))?;
    Ok(Inner::Queue(QueueConn::Producer(Box::new(p))))
}

#[cfg(test)]
mod tests;
