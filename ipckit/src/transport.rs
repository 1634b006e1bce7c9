//! The shared message traits every transport implements.
//!
//! Each operation has one core method taking a [`Wait`] (`send_with`, `recv_into_with`); the
//! blocking, `try_`, `_timeout` and `_deadline` forms are thin wrappers over it, so every
//! transport behaves the same way at the edges.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// How long a call may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block until the operation completes or fails.
    Forever,
    /// Do not block: fail with [`Error::WouldBlock`] if the operation cannot proceed now.
    Never,
    /// Block until the deadline, then fail with [`Error::Timeout`].
    Until(Instant),
}

impl Wait {
    /// A wait of at most `d` from now.
    pub fn timeout(d: Duration) -> Wait {
        match Instant::now().checked_add(d) {
            Some(t) => Wait::Until(t),
            None => Wait::Forever,
        }
    }

    /// Time left before the deadline: `None` for [`Wait::Forever`], zero for [`Wait::Never`]
    /// or a deadline in the past.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Wait::Forever => None,
            Wait::Never => Some(Duration::ZERO),
            Wait::Until(t) => Some(t.saturating_duration_since(Instant::now())),
        }
    }

    /// How long to sleep before checking again: `max`, or less when the deadline is nearer.
    /// Fails with [`Wait::expired`]'s error once the deadline has passed (or at once for
    /// [`Wait::Never`]).
    pub(crate) fn slice(self, max: Duration) -> Result<Duration> {
        match self.remaining() {
            None => Ok(max),
            Some(left) if left.is_zero() => Err(self.expired()),
            Some(left) => Ok(left.min(max)),
        }
    }

    /// The error to return when this wait runs out.
    pub(crate) fn expired(self) -> Error {
        match self {
            Wait::Never => Error::WouldBlock,
            _ => Error::Timeout { after: None },
        }
    }
}

/// Sends whole messages.
pub trait MessageSender {
    /// The core send: delivers `msg` as one message, waiting as `wait` allows.
    ///
    /// On a stream transport, a message counts as sent once its first byte is written; if the
    /// wait runs out part-way, the rest is kept and written before the next message.
    fn send_with(&mut self, msg: &[u8], wait: Wait) -> Result<()>;

    /// The largest message this endpoint sends.
    fn max_message_size(&self) -> usize;

    /// Sends, blocking as long as needed.
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_with(msg, Wait::Forever)
    }

    /// Sends without blocking, or fails with [`Error::WouldBlock`].
    fn try_send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_with(msg, Wait::Never)
    }

    /// Sends, waiting at most `timeout`, or fails with [`Error::Timeout`].
    fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(msg, Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// Sends, waiting until `deadline` at most.
    fn send_deadline(&mut self, msg: &[u8], deadline: Instant) -> Result<()> {
        self.send_with(msg, Wait::Until(deadline))
    }
}

/// Receives whole messages.
pub trait MessageReceiver {
    /// The core receive: replaces the contents of `buf` with the next message, waiting as
    /// `wait` allows. `buf`'s allocation is reused; once it is large enough, receiving
    /// allocates nothing. On error the contents of `buf` are unspecified.
    fn recv_into_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<()>;

    /// The largest message this endpoint accepts.
    fn max_message_size(&self) -> usize;

    /// Receives into `buf` as [`recv_into_with`](Self::recv_into_with) does, into a buffer
    /// kept for messages of any size (typed receives keep one per thread): where
    /// `recv_into_with` would reserve the largest message allowed in `buf` (a datagram
    /// endpoint), this reserves the message's own size when the largest is over 4 MiB, which
    /// may cost a look at the next datagram's size first.
    fn recv_sized_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<()> {
        self.recv_into_with(buf, wait)
    }

    /// Receives the next message as an owned vector, waiting as `wait` allows.
    fn recv_with(&mut self, wait: Wait) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_into_with(&mut v, wait)?;
        Ok(v)
    }

    /// Receives into `buf`, blocking as long as needed.
    #[inline]
    fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.recv_into_with(buf, Wait::Forever)
    }

    /// Receives into `buf` without blocking, or fails with [`Error::WouldBlock`].
    fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.recv_into_with(buf, Wait::Never)
    }

    /// Receives into `buf`, waiting at most `timeout`.
    fn recv_into_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<()> {
        self.recv_into_with(buf, Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// Receives into `buf`, waiting until `deadline` at most.
    fn recv_into_deadline(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        self.recv_into_with(buf, Wait::Until(deadline))
    }

    /// Receives the next message, blocking as long as needed.
    fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::Forever)
    }

    /// Receives without blocking, or fails with [`Error::WouldBlock`].
    fn try_recv(&mut self) -> Result<Vec<u8>> {
        self.recv_with(Wait::Never)
    }

    /// Receives, waiting at most `timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// Receives, waiting until `deadline` at most.
    fn recv_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        self.recv_with(Wait::Until(deadline))
    }
}

/// Typed messages over any [`MessageSender`], encoded with postcard.
///
/// ```
/// # fn demo(conn: &mut ipckit::Connection) -> ipckit::Result<()> {
/// use ipckit::TypedSender;
/// conn.send_typed(&(42u32, "hello"))?;
/// # Ok(()) }
/// ```
pub trait TypedSender: MessageSender {
    /// Encodes `value` and sends it as one message, waiting as `wait` allows.
    fn send_typed_with<T: Serialize + ?Sized>(&mut self, value: &T, wait: Wait) -> Result<()> {
        with_encoded(value, |bytes| self.send_with(bytes, wait))
    }
    /// Encodes and sends, blocking as long as needed.
    fn send_typed<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send_typed_with(value, Wait::Forever)
    }
    /// Encodes and sends without blocking.
    fn try_send_typed<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send_typed_with(value, Wait::Never)
    }
    /// Encodes and sends, waiting at most `timeout`.
    fn send_typed_timeout<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<()> {
        self.send_typed_with(value, Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }
}

impl<S: MessageSender + ?Sized> TypedSender for S {}

/// Typed messages over any [`MessageReceiver`], decoded with postcard. A message that does not
/// decode as `T` is [`Error::Decode`], never a panic.
pub trait TypedReceiver: MessageReceiver {
    /// Receives one message and decodes it, waiting as `wait` allows.
    fn recv_typed_with<T: DeserializeOwned>(&mut self, wait: Wait) -> Result<T> {
        with_scratch(&RECV_SCRATCH, |buf| {
            self.recv_sized_with(buf, wait)?;
            decode(buf)
        })
    }
    /// Receives and decodes, blocking as long as needed.
    fn recv_typed<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.recv_typed_with(Wait::Forever)
    }
    /// Receives and decodes without blocking.
    fn try_recv_typed<T: DeserializeOwned>(&mut self) -> Result<T> {
        self.recv_typed_with(Wait::Never)
    }
    /// Receives and decodes, waiting at most `timeout`.
    fn recv_typed_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
        self.recv_typed_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }
}

impl<R: MessageReceiver + ?Sized> TypedReceiver for R {}

thread_local! {
    /// Where typed sends encode, reused by this thread's next typed send instead of
    /// allocating a buffer per message (for large messages the allocator hands the memory
    /// back to the system, and it was faulted in anew every time: see `rpc::FramePool`).
    /// Kept up to [`RETAIN_MAX`] bytes.
    static SEND_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// Where typed receives receive, reused by this thread's next one (as `SEND_SCRATCH`).
    static RECV_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest buffer kept for reuse after a message (typed sends' scratch, RPC frames, an
/// async connection's encoding buffer): larger ones go back to the allocator.
pub(crate) const RETAIN_MAX: usize = 4 << 20;

/// Encodes `value` with postcard into this thread's scratch buffer and hands the bytes to
/// `f` (a synchronous send: the bytes are not kept).
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    with_scratch(&SEND_SCRATCH, |buf| {
        encode_append(value, buf)?;
        f(buf)
    })
}

/// Appends `value`, encoded with postcard, to `out`.
pub(crate) fn encode_append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    postcard::serialize_with_flavor(value, AppendVec(out)).map_err(Error::Encode)
}

/// postcard's output appended to a vector, byte strings with `extend_from_slice` (one
/// `memcpy`). postcard's own `to_extend` feeds them through a byte iterator: a typed send of
/// 64 KiB over `shm://` (between two threads, medians of 8) took 8.6 us that way, 7.0 with a
/// fresh vector per message (`to_stdvec`), 6.5 with this.
struct AppendVec<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Runs `f` with one of this thread's scratch buffers, emptied (a fresh buffer if it is in
/// use further up the stack).
fn with_scratch<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<u8>>>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<R>,
) -> Result<R> {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > RETAIN_MAX {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Decodes one postcard message as `T`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let err = |source| Error::Decode {
        type_name: std::any::type_name::<T>(),
        len: bytes.len(),
        source,
    };
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(err)?;
    if !rest.is_empty() {
        return Err(err(postcard::Error::DeserializeBadEncoding));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Point {
        x: i32,
        name: String,
    }

    #[test]
    fn decode_rejects_wrong_type_and_trailing_bytes() {
        let bytes = postcard::to_stdvec(&Point {
            x: -3,
            name: "p".into(),
        })
        .unwrap();
        assert_eq!(
            decode::<Point>(&bytes).unwrap(),
            Point {
                x: -3,
                name: "p".into()
            }
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Point>(&longer),
            Err(Error::Decode { .. })
        ));
        assert!(matches!(
            decode::<Point>(&[0xff; 3]),
            Err(Error::Decode { .. })
        ));
        assert!(matches!(decode::<u64>(&[]), Err(Error::Decode { .. })));
    }

    #[test]
    fn scratch_is_reused_fresh_when_nested_and_dropped_when_large() {
        let first = with_scratch(&SEND_SCRATCH, |buf| {
            buf.extend_from_slice(&[1; 100]);
            Ok(buf.as_ptr())
        })
        .unwrap();
        with_scratch(&SEND_SCRATCH, |buf| {
            assert!(buf.is_empty(), "handed over emptied");
            assert_eq!(buf.as_ptr(), first, "the same buffer again");
            with_scratch(&SEND_SCRATCH, |inner| {
                assert_ne!(inner.as_ptr(), first, "in use: a fresh one");
                Ok(())
            })
        })
        .unwrap();
        with_scratch(&SEND_SCRATCH, |buf| {
            buf.reserve(RETAIN_MAX + 1);
            Ok(())
        })
        .unwrap();
        with_scratch(&SEND_SCRATCH, |buf| {
            assert_eq!(buf.capacity(), 0, "a large buffer is not kept");
            Ok(())
        })
        .unwrap();
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Point>(&bytes);
            let _ = decode::<(u64, String, Vec<u16>)>(&bytes);
        }
    }

    #[test]
    fn wait_remaining() {
        assert_eq!(Wait::Forever.remaining(), None);
        assert_eq!(Wait::Never.remaining(), Some(Duration::ZERO));
        let w = Wait::timeout(Duration::from_secs(60));
        assert!(w.remaining().unwrap() > Duration::from_secs(59));
        assert!(matches!(Wait::Never.expired(), Error::WouldBlock));
        assert!(matches!(w.expired(), Error::Timeout { .. }));
    }
}
