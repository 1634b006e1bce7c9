//! The one error type of ipckit: each variant names one thing that went wrong.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::endpoint::UrlError;

/// Result alias used across ipckit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when moving messages between processes.
///
/// Variants read like a checklist: match on the ones you can handle (typically
/// [`Error::WouldBlock`], [`Error::Timeout`] and [`Error::Disconnected`]) and report the rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL does not name a valid endpoint.
    #[error(transparent)]
    Url(#[from] UrlError),

    /// The peer is gone: end of file, broken pipe or connection reset.
    #[error("peer disconnected")]
    Disconnected,

    /// A `try_` call found nothing to do without blocking.
    #[error("operation would block")]
    WouldBlock,

    /// A `_timeout` or `_deadline` call ran out of time.
    #[error("timed out{}", fmt_after(.after))]
    Timeout {
        /// How long the call waited, when known.
        after: Option<Duration>,
    },

    /// The message to send is larger than this endpoint carries.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes for {transport} (raise it with ?max_msg=N in the URL where the transport allows)")]
    MessageTooLarge {
        /// Size of the message that was refused.
        size: usize,
        /// Largest message this endpoint accepts.
        max: usize,
        /// Which transport imposed the limit.
        transport: &'static str,
    },

    /// The peer announced or sent a message larger than this endpoint accepts. Nothing was
    /// allocated for it. On a stream the connection can no longer be read.
    #[error("incoming message of {size} bytes exceeds the maximum of {max} bytes")]
    IncomingTooLarge {
        /// Announced (stream) or actual (datagram) size.
        size: u64,
        /// Largest message this endpoint accepts.
        max: usize,
    },

    /// The peer went away in the middle of a message.
    #[error("truncated message: peer closed after {received} of {expected} bytes")]
    Truncated {
        /// Bytes received of the message (including its length prefix).
        received: usize,
        /// Bytes the message should have had.
        expected: usize,
    },

    /// An earlier framing error left the byte stream at an unknown position; it cannot be read
    /// again. Reconnect.
    #[error("stream is desynchronised after an earlier framing error; reconnect")]
    Desynchronized,

    /// A typed message could not be encoded.
    #[error("could not encode typed message: {0}")]
    Encode(#[source] postcard::Error),

    /// A typed message could not be decoded: wrong type on the other side, or corrupt data.
    #[error("could not decode typed message of {len} bytes as {type_name}: {source}")]
    Decode {
        /// The Rust type that was expected.
        type_name: &'static str,
        /// Length of the message.
        len: usize,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
    },

    /// The operation makes no sense on this endpoint (e.g. receiving on the writing end of a FIFO).
    #[error("{op} is not supported on {what}")]
    Unsupported {
        /// The operation attempted.
        op: &'static str,
        /// The endpoint or end it was attempted on.
        what: &'static str,
    },

    /// A bound datagram endpoint replies to the last sender, and nobody has sent yet.
    #[error("no peer to send to yet: a bound {transport} endpoint replies to the last sender, and nothing has been received")]
    NoPeer {
        /// The transport.
        transport: &'static str,
    },

    /// Nothing listens at the address (no socket file, no process bound, no FIFO reader).
    #[error("nobody is listening at {addr}: {reason}")]
    ConnectionRefused {
        /// The address tried.
        addr: String,
        /// Why the OS refused.
        reason: &'static str,
    },

    /// The address is already taken by a live endpoint.
    #[error("address {addr} is already in use")]
    AddressInUse {
        /// The address.
        addr: String,
    },

    /// A file the endpoint needs does not exist.
    #[error("{path} does not exist")]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },

    /// A file exists where the endpoint wanted to create or open an object of another kind.
    #[error("{path} exists but is a {found}, not a {expected}; remove it or choose another path")]
    WrongFileType {
        /// The path.
        path: PathBuf,
        /// What ipckit needed there.
        expected: &'static str,
        /// What it found.
        found: &'static str,
    },

    /// Permission denied by the OS.
    #[error("permission denied: {what}")]
    PermissionDenied {
        /// What was denied.
        what: String,
    },

    /// An existing file or directory ipckit was asked to trust could be controlled by another
    /// user: it is owned by someone else, or others may write it, beyond what the URL's
    /// `mode` grants (for example a `queue://` directory someone else prepared).
    #[error("refusing to use {}: {reason}", path.display())]
    UnsafePermissions {
        /// The file or directory.
        path: PathBuf,
        /// Who owns it or who may write it.
        reason: String,
    },

    /// A descriptor the parent should have passed (an anonymous pipe or segment) is missing,
    /// malformed or already taken.
    #[error("nothing inherited: {0}")]
    NoInheritedPipe(&'static str),

    /// The process ran out of file descriptors (EMFILE/ENFILE).
    #[error("out of file descriptors while {op}: close some or raise `ulimit -n`")]
    TooManyOpenFiles {
        /// What was being done.
        op: &'static str,
    },

    /// A named object already exists and exclusive creation was asked for.
    #[error("{what} {name:?} already exists (open it instead, or remove it with `ipckit rm`)")]
    AlreadyExists {
        /// What kind of object.
        what: &'static str,
        /// Its name.
        name: String,
    },

    /// The name cannot be used for the object.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A shared-memory object exists but is not of the expected kind, version or type.
    #[error("{name:?} is incompatible: {reason}")]
    Incompatible {
        /// The object's name.
        name: String,
        /// What differs.
        reason: String,
    },

    /// A shared-memory object was not initialised by its creator in time (the creator may
    /// have died while creating it).
    #[error("{name:?} was not initialised by its creator in time; if its creator died, remove it")]
    NotReady {
        /// The object's name.
        name: String,
    },

    /// An access outside a shared region.
    #[error("access of {len} bytes at offset {offset} is outside the {size}-byte region")]
    OutOfBounds {
        /// Offset asked for.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// Size of the region.
        size: usize,
    },

    /// An offset that is not aligned for the type accessed there.
    #[error("offset {offset} is not aligned to {align} bytes")]
    Misaligned {
        /// Offset asked for.
        offset: usize,
        /// Alignment needed.
        align: usize,
    },

    /// A mapped file is now shorter than its mapping (another process truncated it); the
    /// access was refused instead of touching pages that are gone.
    #[error("{path} shrank to {now} bytes under a {mapped}-byte mapping")]
    FileShrunk {
        /// The file.
        path: PathBuf,
        /// Bytes mapped.
        mapped: usize,
        /// The file's size now.
        now: u64,
    },

    /// A system limit stops the operation; the message names the limit, its value, what was
    /// needed, and how to raise it.
    #[error("{limit} is {current}, {needed} needed: {how}")]
    LimitExceeded {
        /// The limit.
        limit: &'static str,
        /// Its value now.
        current: u64,
        /// What the operation needed.
        needed: u64,
        /// How to raise it.
        how: String,
    },

    /// A counter would exceed its maximum.
    #[error("{what} would overflow")]
    Overflow {
        /// Which counter.
        what: &'static str,
    },

    /// Shared state failed validation: a crashed or hostile peer wrote something impossible.
    #[error("shared memory corrupted: {0}")]
    Corrupted(String),

    /// Data of a durable queue (`queue://`) failed validation: a record or segment header
    /// with a bad checksum, length or sequence number, or a missing segment. Nothing after
    /// this point was skipped silently; the file and byte offset say where to look.
    #[error("corrupt queue data in {} at byte {offset}: {reason}", file.display())]
    CorruptRecord {
        /// The segment (or other queue file) that holds the damage.
        file: PathBuf,
        /// Byte offset of the damaged record or header in it.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },

    /// The device has no space left (`ENOSPC`/`EDQUOT`): nothing was written, and what was
    /// written before stays readable.
    #[error("no space left on the device holding {}: the message was not written (earlier messages stay readable; free space, or let consumers acknowledge so that retention removes consumed segments)", path.display())]
    StorageFull {
        /// The file that could not be written.
        path: PathBuf,
    },

    /// Writing a durable-queue file failed with an I/O error other than a full device (for
    /// example `EIO` from a failing disk): the message was not written (any part of it that
    /// reached the file is taken back before anyone can read it), and what was written before
    /// stays readable.
    #[error("writing {} failed: {source}; the message was not written", path.display())]
    WriteFailed {
        /// The file that could not be written.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: io::Error,
    },

    /// `fdatasync` failed: the messages of this batch may not be on disk. The segment takes
    /// no more messages (the next send starts a new one); the error is never retried
    /// silently.
    #[error("fdatasync of {} failed: {source}; messages sent since the last successful sync may not be on disk", path.display())]
    SyncFailed {
        /// The file that could not be synced.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: io::Error,
    },

    /// An RPC call (or a cross-process promise) lost its peer: the connection closed or the
    /// other process died with the call in flight. The call may or may not have run.
    #[error("the peer went away with the call in flight")]
    PeerGone,

    /// The RPC server could not decode the request as the type its handler takes.
    #[error("the server could not decode the request: {reason}")]
    BadRequest {
        /// What the server's decoder reported.
        reason: String,
    },

    /// The RPC server's handler failed (it panicked) before producing a response.
    #[error("the server's handler failed: {reason}")]
    HandlerFailed {
        /// What the server reported.
        reason: String,
    },

    /// The peer sent bytes that are not a message of the protocol (RPC frames, promise
    /// values): a bug or a hostile peer. The connection is closed.
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// A cross-process promise was dropped unfulfilled, or its process died.
    #[error("broken promise: the other side dropped it unfulfilled or died")]
    BrokenPromise,

    /// Any other operating-system error, with the operation that failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation that failed (a system call or a step).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn fmt_after(after: &Option<Duration>) -> String {
    match after {
        Some(d) => format!(" after {d:?}"),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an OS error for operation `op`, mapping the errors that have a variant of their own.
    pub(crate) fn os(op: &'static str, e: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        match e {
            Errno::PIPE | Errno::CONNRESET | Errno::NOTCONN => Error::Disconnected,
            Errno::AGAIN => Error::WouldBlock,
            Errno::MFILE | Errno::NFILE => Error::TooManyOpenFiles { op },
            _ => Error::Io {
                op,
                source: e.into(),
            },
        }
    }

    /// Records how long a `_timeout` call waited, for the message.
    pub(crate) fn after(self, waited: Duration) -> Self {
        match self {
            Error::Timeout { after: None } => Error::Timeout {
                after: Some(waited),
            },
            e => e,
        }
    }

    /// True for the errors a `try_`/`_timeout` caller expects and may retry after.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::WouldBlock | Error::Timeout { .. })
    }

    /// True when the peer went away (cleanly or in the middle of a message).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Error::Disconnected | Error::Truncated { .. })
    }
}
