//! POSIX message queues (`mq:///name`): kernel-held queues of whole messages with priorities,
//! that outlive the processes using them.
//!
//! Limits are small on many machines (Linux defaults: 10 messages of at most 8 KiB per
//! queue, and an 800 KiB per-user budget that only CAP_SYS_RESOURCE can raise); when one
//! bites, the error is [`Error::LimitExceeded`] naming the limit, its value and how to raise
//! it.
//!
//! Through the message API a queue is one-way: `bind` opens (or creates) it for receiving,
//! `connect` opens an existing one for sending; URL parameters `depth=N` (most messages,
//! default 10) and `max_msg=N` (largest message, default 8 KiB). [`MessageQueue`] gives the
//! whole interface: priorities, attributes, removal.
//!
//! ```
//! use ipckit::mq::MessageQueue;
//! use std::time::Duration;
//!
//! let name = format!("/doc-mq-{}", std::process::id());
//! let mut q = MessageQueue::create(&name, 4, 128)?; // removed when dropped
//! let mut sender = MessageQueue::open(&name)?;      // as another process would
//! sender.send(b"low", 1)?;
//! sender.send(b"urgent", 9)?;
//! assert_eq!(q.attributes()?.current_messages, 2);
//! let mut buf = Vec::new();
//! assert_eq!(q.recv_timeout(&mut buf, Duration::from_secs(5))?, 9); // highest first
//! assert_eq!(buf, b"urgent");
//! # Ok::<(), ipckit::Error>(())
//! ```

use std::time::Duration;

use crate::connection::Inner;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::sys::{self, Dir, FdKind, IoFd};
use crate::transport::Wait;

pub use crate::sys::{mq_limits, MqAttributes};

/// Default depth of queues ipckit creates.
pub const DEFAULT_DEPTH: u64 = 10;
/// Default largest message of queues ipckit creates.
pub const DEFAULT_MESSAGE_SIZE: u64 = 8192;

/// Checks a queue name: `/` then 1 to 254 bytes without `/`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(rest) = name.strip_prefix('/') else {
        return bad("a queue name starts with '/', e.g. /jobs");
    };
    if rest.is_empty() || rest.len() > 254 {
        return bad("a queue name has 1 to 254 bytes after the '/'");
    }
    if rest.contains('/') || rest.contains('\0') {
        return bad("no '/' or NUL after the leading '/'");
    }
    Ok(())
}

/// An open POSIX message queue.
#[derive(Debug)]
pub struct MessageQueue {
    fd: IoFd,
    name: String,
    remove_on_drop: bool,
    message_size: usize,
}

impl MessageQueue {
    /// Creates a queue (mode 0600); fails if the name exists. Removed when dropped unless
    /// [`keep`](Self::keep) is called.
    pub fn create(name: &str, max_messages: u64, message_size: u64) -> Result<MessageQueue> {
        Self::create_with_mode(name, max_messages, message_size, 0o600)
    }

    /// [`create`](Self::create) with explicit permissions.
    pub fn create_with_mode(
        name: &str,
        max_messages: u64,
        message_size: u64,
        mode: u32,
    ) -> Result<MessageQueue> {
        validate_name(name)?;
        let fd = sys::mq_create(name, max_messages, message_size, mode)?;
        let mut q = Self::wrap(fd, name)?;
        q.remove_on_drop = true;
        Ok(q)
    }

    /// Opens an existing queue.
    pub fn open(name: &str) -> Result<MessageQueue> {
        validate_name(name)?;
        Self::wrap(sys::mq_open(name)?, name)
    }

    /// Opens the queue, creating it if it does not exist (only then is it removed on drop).
    pub fn open_or_create(
        name: &str,
        max_messages: u64,
        message_size: u64,
        mode: u32,
    ) -> Result<MessageQueue> {
        loop {
            match Self::open(name) {
                Err(Error::NotFound { .. }) => {}
                other => return other,
            }
            match Self::create_with_mode(name, max_messages, message_size, mode) {
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    fn wrap(fd: std::os::fd::OwnedFd, name: &str) -> Result<MessageQueue> {
        let fd = IoFd::new(fd, FdKind::Other, true);
        let attrs = sys::mq_attributes(fd.fd())?;
        Ok(MessageQueue {
            fd,
            name: name.to_owned(),
            remove_on_drop: false,
            message_size: attrs.message_size as usize,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Largest message the queue takes.
    pub fn message_size(&self) -> usize {
        self.message_size
    }

    /// Depth, message size and messages waiting now.
    pub fn attributes(&self) -> Result<MqAttributes> {
        sys::mq_attributes(self.fd.fd())
    }

    /// Keeps the queue after this handle is dropped.
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }

    /// Sends `msg` with priority `prio` (higher is received first), waiting as `wait` allows
    /// while the queue is full.
    pub fn send_with(&mut self, msg: &[u8], prio: u32, wait: Wait) -> Result<()> {
        if msg.len() > self.message_size {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.message_size,
                transport: "mq",
            });
        }
        self.fd
            .io(Dir::Write, wait, |fd, _| sys::mq_send(fd, msg, prio))?
            .map_err(|e| Error::os("mq_send", e))
    }

    /// Sends, blocking while the queue is full.
    pub fn send(&mut self, msg: &[u8], prio: u32) -> Result<()> {
        self.send_with(msg, prio, Wait::Forever)
    }

    /// Receives the oldest message of the highest priority into `buf`; returns its priority.
    pub fn recv_into_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<u32> {
        buf.clear();
        buf.reserve(self.message_size);
        let size = self.message_size;
        let (len, prio) = self
            .fd
            .io(Dir::Read, wait, |fd, _| {
                sys::mq_receive(fd, &mut buf.spare_capacity_mut()[..size])
            })?
            .map_err(|e| Error::os("mq_receive", e))?;
        // SAFETY: mq_receive initialised `len <= size` bytes of the spare capacity.
        unsafe { buf.set_len(len.min(size)) };
        Ok(prio)
    }

    /// Receives, waiting at most `timeout`; returns the priority.
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u32> {
        self.recv_into_with(buf, Wait::timeout(timeout))
    }

    /// Removes a queue by name (processes that have it open keep using it).
    pub fn remove(name: &str) -> Result<()> {
        validate_name(name)?;
        sys::mq_unlink(name)
    }
}

/// Async sends and receives through the queue descriptor (feature `tokio`): the task sleeps
/// in the tokio reactor until the queue is readable or writable, with no thread per queue and
/// no polling.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ipckit::Result<()> {
/// use ipckit::mq::{AsyncMessageQueue, MessageQueue};
/// let name = format!("/doc-mq-async-{}", std::process::id());
/// let mut rx = AsyncMessageQueue::new(MessageQueue::create(&name, 4, 64)?)?;
/// let mut tx = AsyncMessageQueue::new(MessageQueue::open(&name)?)?;
/// tx.send(b"hello", 0).await?;
/// let mut buf = Vec::new();
/// assert_eq!(rx.recv(&mut buf).await?, 0);
/// assert_eq!(buf, b"hello");
/// # Ok(()) }
/// ```
#[cfg(feature = "tokio")]
pub struct AsyncMessageQueue {
    // Declared (so dropped) before `q`: the registration ends before the descriptor closes.
    ready: tokio::io::unix::AsyncFd<std::os::fd::RawFd>,
    q: MessageQueue,
}

#[cfg(feature = "tokio")]
impl AsyncMessageQueue {
    /// Registers the queue's descriptor with the current tokio runtime.
    pub fn new(q: MessageQueue) -> Result<AsyncMessageQueue> {
        use std::os::fd::{AsFd, AsRawFd};
        let raw = q.fd.as_fd().as_raw_fd();
        // SAFETY: `raw` is the open descriptor owned by `q`, which the returned struct owns
        // and drops only after `ready` (field order), so it stays open and the same for the
        // registration's whole life.
        let ready = unsafe { tokio::io::unix::AsyncFd::register(raw) }.map_err(|e| Error::Io {
            op: "registering the queue with tokio",
            source: e.into(),
        })?;
        Ok(AsyncMessageQueue { ready, q })
    }

    /// Sends, waiting in the reactor while the queue is full.
    pub async fn send(&mut self, msg: &[u8], prio: u32) -> Result<()> {
        loop {
            let mut guard = self.ready.writable().await.map_err(|source| Error::Io {
                op: "waiting for the queue",
                source,
            })?;
            match self.q.send_with(msg, prio, Wait::Never) {
                Err(Error::WouldBlock) => guard.clear_ready(),
                r => return r,
            }
        }
    }

    /// Receives the next message into `buf`, waiting in the reactor; returns its priority.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> Result<u32> {
        loop {
            let mut guard = self.ready.readable().await.map_err(|source| Error::Io {
                op: "waiting for the queue",
                source,
            })?;
            match self.q.recv_into_with(buf, Wait::Never) {
                Err(Error::WouldBlock) => guard.clear_ready(),
                r => return r,
            }
        }
    }

    /// The queue, for its other calls.
    pub fn get_mut(&mut self) -> &mut MessageQueue {
        &mut self.q
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = sys::mq_unlink(&self.name);
        }
    }
}

/// One end of an `mq://` connection: the bound side receives, the connected side sends.
#[derive(Debug)]
pub(crate) struct MqConn {
    q: MessageQueue,
    receiving: bool,
}

impl MqConn {
    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// The queue descriptor, for readiness.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.q.fd.fd()
    }

    pub(crate) fn max(&self) -> usize {
        self.q.message_size
    }

    pub(crate) fn send(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        if self.receiving {
            return Err(Error::Unsupported {
                op: "send",
                what: "the receiving (bound) end of an mq:// queue",
            });
        }
        self.q.send_with(msg, 0, wait)
    }

    pub(crate) fn recv_into(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<()> {
        if !self.receiving {
            return Err(Error::Unsupported {
                op: "recv",
                what: "the sending (connected) end of an mq:// queue",
            });
        }
        self.q.recv_into_with(buf, wait).map(drop)
    }
}

fn queue_name(ep: &Endpoint) -> Result<String> {
    let name = ep
        .path()
        .expect("mq endpoints have a path")
        .display()
        .to_string();
    validate_name(&name)?;
    Ok(name)
}

fn size_of_endpoint(ep: &Endpoint) -> u64 {
    if ep.options().max_message_size == crate::endpoint::DEFAULT_MAX_MESSAGE_SIZE {
        DEFAULT_MESSAGE_SIZE
    } else {
        ep.options().max_message_size as u64
    }
}

/// `bind("mq:///name")`: opens or creates the queue to receive from it.
pub(crate) fn bind(ep: &Endpoint) -> Result<Inner> {
    let q = MessageQueue::open_or_create(
        &queue_name(ep)?,
        ep.options().depth.unwrap_or(DEFAULT_DEPTH),
        size_of_endpoint(ep),
        ep.options().mode,
    )?;
    Ok(Inner::Mq(MqConn { q, receiving: true }))
}

/// `connect("mq:///name")`: opens an existing queue to send into it.
pub(crate) fn connect(ep: &Endpoint) -> Result<Inner> {
    let q = MessageQueue::open(&queue_name(ep)?).map_err(|e| match e {
        Error::NotFound { .. } => Error::ConnectionRefused {
            addr: ep.to_string(),
            reason: "no such queue (the receiving side creates it)",
        },
        e => e,
    })?;
    Ok(Inner::Mq(MqConn {
        q,
        receiving: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(tag: &str) -> String {
        format!("/ipckit-test-{tag}-{}", std::process::id())
    }

    #[test]
    fn names_are_checked() {
        for bad in ["jobs", "/", "/a/b", ""] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("/jobs").is_ok());
    }

    #[test]
    fn full_queue_blocks_then_times_out_and_sizes_are_enforced() {
        let mut q = MessageQueue::create(&name("full"), 2, 64).unwrap();
        q.send(b"a", 0).unwrap();
        q.send(b"b", 0).unwrap();
        assert!(matches!(
            q.send_with(b"c", 0, Wait::Never),
            Err(Error::WouldBlock)
        ));
        assert!(matches!(
            q.send_with(b"c", 0, Wait::timeout(Duration::from_millis(20))),
            Err(Error::Timeout { .. })
        ));
        assert!(matches!(
            q.send(&[0; 65], 0),
            Err(Error::MessageTooLarge { max: 64, .. })
        ));
        let mut buf = Vec::new();
        q.recv_into_with(&mut buf, Wait::Never).unwrap();
        assert_eq!(buf, b"a");
        assert_eq!(q.attributes().unwrap().current_messages, 1);
    }

    #[test]
    fn limits_that_bite_are_named() {
        let (msg_max, msgsize_max, _, _) = mq_limits();
        // With CAP_SYS_RESOURCE a process may exceed msg_max (up to a hard ceiling).
        match MessageQueue::create(&name("deep"), msg_max + 1, 64) {
            Ok(_) => {}
            Err(Error::LimitExceeded { limit, .. }) => assert!(
                limit.contains("msg_max") || limit.contains("RLIMIT_MSGQUEUE"),
                "{limit}"
            ),
            Err(other) => panic!("{other}"),
        }
        let e = MessageQueue::create(&name("huge"), 10, msgsize_max.max(1 << 20) * 64).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        assert!(
            e.to_string().contains("sysctl") || e.to_string().contains("ulimit"),
            "{e}"
        );
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "current_thread")]
    async fn async_receive_waits_in_the_reactor() {
        let n = name("async");
        let mut rx = AsyncMessageQueue::new(MessageQueue::create(&n, 2, 32).unwrap()).unwrap();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut tx = MessageQueue::open(&n).unwrap();
            for i in 0..5u8 {
                tx.send_with(&[i; 8], 0, Wait::timeout(Duration::from_secs(5)))
                    .unwrap();
            }
        });
        let mut buf = Vec::new();
        for i in 0..5u8 {
            tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .expect("a message within 5 s")
                .unwrap();
            assert_eq!(buf, [i; 8]);
        }
        sender.join().unwrap();
    }

    #[test]
    fn through_the_message_api_one_way() {
        use crate::{MessageReceiver, MessageSender};
        let url = format!("mq://{}?depth=4&max_msg=256", name("api"));
        let mut listener = crate::bind(&url).unwrap();
        let mut tx = crate::connect(&url).unwrap();
        let mut rx = listener.accept_timeout(Duration::from_secs(5)).unwrap();
        tx.send(b"one").unwrap();
        tx.send(&[7; 256]).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), b"one");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            vec![7; 256]
        );
        assert!(matches!(
            tx.send(&[0; 257]),
            Err(Error::MessageTooLarge { .. })
        ));
        assert!(matches!(tx.try_recv(), Err(Error::Unsupported { .. })));
        assert!(matches!(rx.try_recv(), Err(Error::WouldBlock)));
        drop((tx, rx, listener));
        assert!(matches!(
            crate::connect(&url),
            Err(Error::ConnectionRefused { .. })
        ));
    }
}
