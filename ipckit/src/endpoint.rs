//! Endpoints: one URL names every transport.
//!
//! | URL | transport |
//! |---|---|
//! | `pipe:` | anonymous pipe inherited from the parent ([`crate::pipe`]), or stdin/stdout |
//! | `fifo:///path` | named pipe (FIFO) |
//! | `unix:///path` | Unix stream socket, length-prefixed frames |
//! | `unix+dgram:///path` | Unix datagram socket |
//! | `unix+seqpacket:///path` | Unix sequenced-packet socket |
//! | `tcp://host:port` | TCP, length-prefixed frames, `TCP_NODELAY` |
//! | `udp://host:port` | UDP datagrams (at most 65,507 bytes) |
//! | `shm://name` | shared-memory ring channel ([`crate::shm`]) |
//! | `mmap:///path` | the same channel in memory-mapped files `path`, `path~…` |
//! | `shm+mpsc://name` | one shared-memory queue, many senders, one receiver |
//! | `mq:///name` | POSIX message queue ([`crate::mq`]), one-way |
//! | `queue:///dir` | durable queue in a directory ([`crate::queue`]), one-way |
//!
//! Query parameters tune an endpoint: `max_msg=N` (largest message, default 16 MiB; suffixes
//! `K`, `M`, `G` are powers of 1024) and, for things ipckit creates in the file system,
//! `mode=0600` (octal permissions). `shm://` also takes `capacity=4M` (bytes of each ring,
//! a power of two), `wait=adaptive|spin|block|sem` and `spin_us=20` (adaptive spin budget); so
//! does `mmap://`. `pipe:` and `fifo://` take `capacity=1M`: the pipe's buffer in the kernel
//! (`F_SETPIPE_SZ`; default the kernel's, 64 KiB; see
//! [`crate::Connection::set_pipe_capacity`]). On pipes, FIFOs and sockets `spin_us=N` makes a
//! blocking receive poll for N µs before it sleeps (default 0). The bound side of `udp://` and `unix+dgram://` takes
//! `peer=first`: it talks only to the first sender, connecting its socket to it (the kernel
//! then drops datagrams from anyone else, and a send skips the address lookup: 64-byte UDP
//! streaming measured about 10 % faster); the default `peer=any` receives from everyone and
//! replies to whoever sent last. `queue://` takes `group=NAME` (the consumer group of the binding side,
//! default `default`) and `durability=fsync|os` (default `fsync`).
//! Paths may be absolute (`unix:///tmp/a.sock`) or relative
//! (`unix://a.sock`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Default largest message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Largest payload of one UDP datagram over IPv4.
pub const UDP_MAX_PAYLOAD: usize = 65_507;

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes including the NUL).
pub const UNIX_PATH_MAX: usize = 107;

/// Default permissions of FIFOs and socket files ipckit creates.
pub const DEFAULT_MODE: u32 = 0o600;

/// The mechanism an endpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `pipe:`
    Pipe,
    /// `fifo:///path`
    Fifo,
    /// `unix:///path`
    Unix,
    /// `unix+dgram:///path`
    UnixDgram,
    /// `unix+seqpacket:///path`
    UnixSeqpacket,
    /// `tcp://host:port`
    Tcp,
    /// `udp://host:port`
    Udp,
    /// `shm://name`
    Shm,
    /// `mmap:///path`
    Mmap,
    /// `shm+mpsc://name`
    ShmMpsc,
    /// `mq:///name`
    Mq,
    /// `queue:///path/to/dir`
    Queue,
}

impl Scheme {
    /// Every scheme, in the order the docs list them.
    pub const ALL: [Scheme; 12] = [
        Scheme::Pipe,
        Scheme::Fifo,
        Scheme::Unix,
        Scheme::UnixDgram,
        Scheme::UnixSeqpacket,
        Scheme::Tcp,
        Scheme::Udp,
        Scheme::Shm,
        Scheme::Mmap,
        Scheme::ShmMpsc,
        Scheme::Mq,
        Scheme::Queue,
    ];

    /// The URL scheme, e.g. `unix+dgram`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Pipe => "pipe",
            Scheme::Fifo => "fifo",
            Scheme::Unix => "unix",
            Scheme::UnixDgram => "unix+dgram",
            Scheme::UnixSeqpacket => "unix+seqpacket",
            Scheme::Tcp => "tcp",
            Scheme::Udp => "udp",
            Scheme::Shm => "shm",
            Scheme::Mmap => "mmap",
            Scheme::ShmMpsc => "shm+mpsc",
            Scheme::Mq => "mq",
            Scheme::Queue => "queue",
        }
    }

    /// An example of a well-formed URL of this scheme.
    pub fn example(self) -> &'static str {
        match self {
            Scheme::Pipe => "pipe:",
            Scheme::Fifo => "fifo:///tmp/my.fifo",
            Scheme::Unix => "unix:///tmp/my.sock",
            Scheme::UnixDgram => "unix+dgram:///tmp/my.sock",
            Scheme::UnixSeqpacket => "unix+seqpacket:///tmp/my.sock",
            Scheme::Tcp => "tcp://127.0.0.1:7000",
            Scheme::Udp => "udp://127.0.0.1:7000",
            Scheme::Shm => "shm://my-channel",
            Scheme::Mmap => "mmap:///tmp/my-channel",
            Scheme::ShmMpsc => "shm+mpsc://my-queue",
            Scheme::Mq => "mq:///my-queue",
            Scheme::Queue => "queue:///tmp/my-queue",
        }
    }

    /// True for one-way transports (FIFOs, MPSC queues): the connecting side only sends.
    pub fn is_one_way(self) -> bool {
        matches!(
            self,
            Scheme::Fifo | Scheme::ShmMpsc | Scheme::Mq | Scheme::Queue
        )
    }

    /// True for transports where messages are whole datagrams that may be lost (UDP).
    pub fn is_lossy(self) -> bool {
        self == Scheme::Udp
    }

    fn address_kind(self) -> AddressKind {
        match self {
            Scheme::Pipe => AddressKind::None,
            Scheme::Fifo | Scheme::Mmap | Scheme::Mq | Scheme::Queue => AddressKind::Path,
            Scheme::Unix | Scheme::UnixDgram | Scheme::UnixSeqpacket => AddressKind::SocketPath,
            Scheme::Tcp | Scheme::Udp => AddressKind::HostPort,
            Scheme::Shm | Scheme::ShmMpsc => AddressKind::Name,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Scheme::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UrlError::UnknownScheme {
                scheme: s.to_owned(),
            })
    }
}

enum AddressKind {
    None,
    Name,
    Path,
    SocketPath,
    HostPort,
}

/// Where an endpoint lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// No address (`pipe:`).
    None,
    /// A plain name (`shm://name`).
    Name(String),
    /// A file-system path (FIFOs and Unix sockets).
    Path(PathBuf),
    /// A host (name or IP literal, without brackets) and port.
    HostPort {
        /// Host name or IP address.
        host: String,
        /// Port; 0 asks the OS for a free one when binding.
        port: u16,
    },
}

/// How a shared-memory endpoint waits for its peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// Spin briefly while the peer is running, then sleep on a futex (default).
    #[default]
    Adaptive,
    /// Busy-poll: lowest latency, burns a CPU while waiting.
    Spin,
    /// Sleep on a futex at once: least CPU, a wake-up per message when the peer sleeps.
    Block,
    /// Count messages in a [`crate::sync::Semaphore`]-style counter the receiver waits on
    /// (a post per message, as with `sem_post`/`sem_wait`). Set by the connecting side.
    Sem,
}

impl WaitMode {
    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitMode::Adaptive => "adaptive",
            WaitMode::Spin => "spin",
            WaitMode::Block => "block",
            WaitMode::Sem => "sem",
        }
    }
}

/// Whom the bound side of a datagram endpoint (`udp://`, `unix+dgram://`) talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PeerPolicy {
    /// Everyone: receives from any sender, replies to whoever sent last (default).
    #[default]
    Any,
    /// The first sender only: the socket is connected to it when its first datagram arrives.
    First,
}

impl PeerPolicy {
    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerPolicy::Any => "any",
            PeerPolicy::First => "first",
        }
    }
}

/// Default ring capacity of `shm://` channels, per direction.
pub const DEFAULT_SHM_CAPACITY: usize = 4 << 20;

/// Default spin budget of the adaptive wait of `shm://`, in microseconds.
pub const DEFAULT_SPIN_US: u32 = 20;

/// Default time a blocking receive on a kernel transport (pipe, FIFO, socket) polls before it
/// sleeps, in microseconds: 0, a plain blocking system call. With `spin_us=N` a reply that
/// comes within N µs is taken without sleeping and without making the sender wake an idle
/// CPU (several microseconds on virtual machines): round trips measured 2.5–4× shorter here
/// for pipes and Unix sockets, but the polling competes with a fast sender for the socket or
/// pipe lock, and one-way streaming measured up to 2× slower (TCP worst), so it is opt-in.
pub const DEFAULT_READ_SPIN_US: u32 = 0;

/// Tuning that travels with an endpoint, set from the URL query or with the `with_` methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// Largest message sent or received; larger ones are refused before any allocation.
    pub max_message_size: usize,
    /// Permissions of files ipckit creates (FIFOs, socket files, segments).
    pub mode: u32,
    /// Bytes of each ring of a `shm://` channel (a power of two).
    pub capacity: usize,
    /// Bytes of a `pipe:` or `fifo://` pipe's buffer in the kernel (`capacity=`); `None`
    /// leaves the kernel's default (64 KiB).
    pub pipe_capacity: Option<usize>,
    /// How a `shm://` endpoint waits.
    pub wait: WaitMode,
    /// How long a blocking receive spins before it sleeps, in microseconds (`spin_us=`):
    /// the adaptive budget of `shm://` (default 20), the poll-before-sleep of kernel
    /// transports (default 0). `None` means the transport's default.
    pub spin_us: Option<u32>,
    /// Most messages an `mq://` queue holds when ipckit creates it.
    pub depth: Option<u64>,
    /// When a `queue://` send returns (`durability=fsync|os`).
    pub durability: crate::queue::Durability,
    /// The consumer group the binding side of a `queue://` endpoint reads as (`group=NAME`).
    pub group: crate::queue::GroupName,
    /// Whom the bound side of a datagram endpoint talks to (`peer=any|first`).
    pub peer: PeerPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            mode: DEFAULT_MODE,
            capacity: DEFAULT_SHM_CAPACITY,
            pipe_capacity: None,
            wait: WaitMode::Adaptive,
            spin_us: None,
            depth: None,
            durability: crate::queue::Durability::default(),
            group: crate::queue::GroupName::default(),
            peer: PeerPolicy::Any,
        }
    }
}

/// A parsed, validated endpoint URL.
///
/// ```
/// use ipckit::{Endpoint, Scheme};
/// let e: Endpoint = "unix:///tmp/demo.sock?max_msg=1M".parse()?;
/// assert_eq!(e.scheme(), Scheme::Unix);
/// assert_eq!(e.options().max_message_size, 1 << 20);
/// assert!("tcp://localhost".parse::<Endpoint>().is_err()); // no port
/// # Ok::<(), ipckit::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    address: Address,
    options: Options,
}

impl Endpoint {
    /// Parses and validates a URL. See the [module docs](self) for the forms.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let (scheme_str, rest) = url.split_once(':').ok_or_else(|| UrlError::Malformed {
            url: url.to_owned(),
            reason: "no scheme: expected SCHEME://ADDRESS",
        })?;
        if scheme_str.is_empty() {
            return Err(UrlError::Malformed {
                url: url.to_owned(),
                reason: "empty scheme before ':'",
            });
        }
        let scheme: Scheme = scheme_str.parse()?;
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let address = match scheme.address_kind() {
            AddressKind::None => {
                if !body.is_empty() && body != "//" {
                    return Err(UrlError::Malformed {
                        url: url.to_owned(),
                        reason: "`pipe:` takes no address (the pipe is inherited or stdio)",
                    });
                }
                Address::None
            }
            kind => {
                let after = body.strip_prefix("//").ok_or(UrlError::Malformed {
                    url: url.to_owned(),
                    reason: "missing '//' after the scheme",
                })?;
                match kind {
                    AddressKind::HostPort => parse_host_port(scheme, url, after)?,
                    AddressKind::Name => parse_name(scheme, after)?,
                    _ => parse_path(scheme, url, after, matches!(kind, AddressKind::SocketPath))?,
                }
            }
        };
        let mut options = Options::default();
        if let Some(q) = query {
            parse_query(scheme, q, &mut options)?;
        }
        Ok(Endpoint {
            scheme,
            address,
            options,
        })
    }

    /// The mechanism.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Where it lives.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The name, for `shm://`.
    pub fn name(&self) -> Option<&str> {
        match &self.address {
            Address::Name(n) => Some(n),
            _ => None,
        }
    }

    /// The file-system path, for FIFOs and Unix sockets.
    pub fn path(&self) -> Option<&Path> {
        match &self.address {
            Address::Path(p) => Some(p),
            _ => None,
        }
    }

    /// Tuning options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Sets whom the bound side of a datagram endpoint talks to (`peer=`).
    pub fn with_peer(mut self, peer: PeerPolicy) -> Self {
        self.options.peer = peer;
        self
    }

    /// The same endpoint with all of `options` (every query parameter) replaced.
    pub fn with_options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Sets the largest message this endpoint sends or receives.
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.options.max_message_size = max.min(u32::MAX as usize);
        self
    }

    /// Sets the permissions of files this endpoint creates.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.options.mode = mode & 0o7777;
        self
    }

    /// How long a blocking receive spins or polls before sleeping.
    pub fn read_spin(&self) -> std::time::Duration {
        let default = match self.scheme {
            Scheme::Shm | Scheme::Mmap | Scheme::ShmMpsc => DEFAULT_SPIN_US,
            _ => DEFAULT_READ_SPIN_US,
        };
        std::time::Duration::from_micros(u64::from(self.options.spin_us.unwrap_or(default)))
    }

    /// Resolves a `tcp://` or `udp://` host and port to socket addresses.
    pub fn socket_addrs(&self) -> Result<Vec<SocketAddr>, UrlError> {
        match &self.address {
            Address::HostPort { host, port } => (host.as_str(), *port)
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<_>>())
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| UrlError::UnresolvableHost { host: host.clone() }),
            _ => Err(UrlError::Malformed {
                url: self.to_string(),
                reason: "not a host:port endpoint",
            }),
        }
    }

    /// The effective largest message: the configured maximum, capped by what the transport can
    /// carry at all.
    pub fn effective_max_message_size(&self) -> usize {
        match self.scheme {
            Scheme::Udp => self.options.max_message_size.min(UDP_MAX_PAYLOAD),
            _ => self.options.max_message_size,
        }
    }
}

impl FromStr for Endpoint {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Endpoint::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::None => write!(f, "{}:", self.scheme)?,
            Address::Path(p) => write!(f, "{}://{}", self.scheme, p.display())?,
            Address::Name(n) => write!(f, "{}://{n}", self.scheme)?,
            Address::HostPort { host, port } if host.contains(':') => {
                write!(f, "{}://[{host}]:{port}", self.scheme)?
            }
            Address::HostPort { host, port } => write!(f, "{}://{host}:{port}", self.scheme)?,
        }
        let d = Options::default();
        let mut sep = '?';
        if self.options.max_message_size != d.max_message_size {
            write!(f, "{sep}max_msg={}", self.options.max_message_size)?;
            sep = '&';
        }
        if self.options.mode != d.mode {
            write!(f, "{sep}mode={:o}", self.options.mode)?;
            sep = '&';
        }
        if self.options.capacity != d.capacity {
            write!(f, "{sep}capacity={}", self.options.capacity)?;
            sep = '&';
        }
        if let Some(bytes) = self.options.pipe_capacity {
            write!(f, "{sep}capacity={bytes}")?;
            sep = '&';
        }
        if self.options.wait != d.wait {
            write!(f, "{sep}wait={}", self.options.wait.as_str())?;
            sep = '&';
        }
        if let Some(us) = self.options.spin_us {
            write!(f, "{sep}spin_us={us}")?;
            sep = '&';
        }
        if self.options.durability != d.durability {
            write!(f, "{sep}durability={}", self.options.durability.as_str())?;
            sep = '&';
        }
        if self.options.group != d.group {
            write!(f, "{sep}group={}", self.options.group)?;
            sep = '&';
        }
        if self.options.peer != d.peer {
            write!(f, "{sep}peer={}", self.options.peer.as_str())?;
            sep = '&';
        }
        if let Some(depth) = self.options.depth {
            write!(f, "{sep}depth={depth}")?;
        }
        Ok(())
    }
}

/// Converts URLs and endpoints into an [`Endpoint`], so `bind`/`connect` take either.
pub trait ToEndpoint {
    /// Parses or clones into an endpoint.
    fn to_endpoint(&self) -> Result<Endpoint, UrlError>;
}

impl ToEndpoint for str {
    fn to_endpoint(&self) -> Result<Endpoint, UrlError> {
        Endpoint::parse(self)
    }
}
impl ToEndpoint for String {
    fn to_endpoint(&self) -> Result<Endpoint, UrlError> {
        Endpoint::parse(self)
    }
}
impl ToEndpoint for Endpoint {
    fn to_endpoint(&self) -> Result<Endpoint, UrlError> {
        Ok(self.clone())
    }
}
impl<T: ToEndpoint + ?Sized> ToEndpoint for &T {
    fn to_endpoint(&self) -> Result<Endpoint, UrlError> {
        (**self).to_endpoint()
    }
}

/// What is wrong with a URL. Each message says what a right one looks like.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL does not have the shape `SCHEME://ADDRESS[?QUERY]`.
    #[error("malformed URL {url:?}: {reason}; expected e.g. unix:///tmp/my.sock or tcp://127.0.0.1:7000")]
    Malformed {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The scheme is not one ipckit knows.
    #[error(
        "unknown scheme {scheme:?}; known schemes: {} (e.g. unix:///tmp/my.sock)",
        known_schemes()
    )]
    UnknownScheme {
        /// The scheme given.
        scheme: String,
    },
    /// A path scheme without a path.
    #[error("{scheme} URL has no path; expected e.g. {example}")]
    MissingPath {
        /// The scheme.
        scheme: Scheme,
        /// A right URL.
        example: &'static str,
    },
    /// The path does not fit in a Unix socket address.
    #[error("socket path is {len} bytes, over the {max}-byte limit of a Unix socket address: {path:?}; use a shorter path, e.g. unix:///tmp/my.sock")]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name that cannot name a shared-memory object.
    #[error("bad {scheme} name {name:?}: {reason}; expected e.g. {example}")]
    BadName {
        /// The scheme.
        scheme: Scheme,
        /// The name given.
        name: String,
        /// What is wrong.
        reason: &'static str,
        /// A right URL.
        example: &'static str,
    },
    /// A host:port scheme without a host.
    #[error("{scheme} URL has no host; expected e.g. {example}")]
    MissingHost {
        /// The scheme.
        scheme: Scheme,
        /// A right URL.
        example: &'static str,
    },
    /// A host:port scheme without a port.
    #[error("{scheme} URL {url:?} has no port; expected e.g. {example}")]
    MissingPort {
        /// The scheme.
        scheme: Scheme,
        /// The URL given.
        url: String,
        /// A right URL.
        example: &'static str,
    },
    /// The port is not a number from 0 to 65535.
    #[error("bad port {port:?}: a port is a number from 0 to 65535, e.g. tcp://127.0.0.1:7000")]
    BadPort {
        /// The port text.
        port: String,
    },
    /// The host name did not resolve.
    #[error("host {host:?} does not resolve; use an IP address such as 127.0.0.1 or [::1]")]
    UnresolvableHost {
        /// The host.
        host: String,
    },
    /// A query parameter ipckit does not know.
    #[error("unknown parameter {key:?} for {scheme}; known: {known}")]
    UnknownParameter {
        /// The scheme.
        scheme: Scheme,
        /// The key given.
        key: String,
        /// The keys this scheme accepts.
        known: &'static str,
    },
    /// A query parameter with a value that does not parse.
    #[error("bad value {value:?} for {key}: expected {expected}")]
    BadParameter {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What a right value looks like.
        expected: &'static str,
    },
}

fn parse_path(scheme: Scheme, _url: &str, after: &str, socket: bool) -> Result<Address, UrlError> {
    if after.is_empty() {
        return Err(UrlError::MissingPath {
            scheme,
            example: scheme.example(),
        });
    }
    let path = PathBuf::from(after);
    if socket && after.len() > UNIX_PATH_MAX {
        return Err(UrlError::PathTooLong {
            len: after.len(),
            path,
            max: UNIX_PATH_MAX,
        });
    }
    Ok(Address::Path(path))
}

fn known_schemes() -> String {
    Scheme::ALL.map(Scheme::as_str).join(", ")
}

fn parse_name(scheme: Scheme, after: &str) -> Result<Address, UrlError> {
    let bad = |reason| UrlError::BadName {
        scheme,
        name: after.to_owned(),
        reason,
        example: scheme.example(),
    };
    if after.is_empty() {
        return Err(UrlError::MissingPath {
            scheme,
            example: scheme.example(),
        });
    }
    if after.contains('/') {
        return Err(bad("a name has no '/' (it is not a path)"));
    }
    if after.len() > 200 {
        return Err(bad("longer than 200 bytes"));
    }
    if after == "." || after == ".." || after.contains('~') || after.contains('\0') {
        return Err(bad("'.', '..', '~' and NUL are not allowed"));
    }
    Ok(Address::Name(after.to_owned()))
}

fn parse_host_port(scheme: Scheme, url: &str, after: &str) -> Result<Address, UrlError> {
    let authority = after.strip_suffix('/').unwrap_or(after);
    if authority.contains('/') {
        return Err(UrlError::Malformed {
            url: url.to_owned(),
            reason: "a host:port address takes no path",
        });
    }
    let missing_port = || UrlError::MissingPort {
        scheme,
        url: url.to_owned(),
        example: scheme.example(),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or(UrlError::Malformed {
            url: url.to_owned(),
            reason: "IPv6 address opened with '[' but not closed with ']'",
        })?;
        let port = tail.strip_prefix(':').ok_or_else(missing_port)?;
        (host, port)
    } else {
        authority.rsplit_once(':').ok_or_else(missing_port)?
    };
    if host.contains(['[', ']']) {
        return Err(UrlError::Malformed {
            url: url.to_owned(),
            reason: "brackets only go around a whole IPv6 address, as in tcp://[::1]:7000",
        });
    }
    if host.is_empty() {
        return Err(UrlError::MissingHost {
            scheme,
            example: scheme.example(),
        });
    }
    if port.is_empty() {
        return Err(missing_port());
    }
    let port: u16 = port.parse().map_err(|_| UrlError::BadPort {
        port: port.to_owned(),
    })?;
    Ok(Address::HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_query(scheme: Scheme, query: &str, options: &mut Options) -> Result<(), UrlError> {
    let kind = scheme.address_kind();
    let files = matches!(
        kind,
        AddressKind::Path | AddressKind::SocketPath | AddressKind::Name
    );
    let shm = matches!(scheme, Scheme::Shm | Scheme::Mmap | Scheme::ShmMpsc);
    let mq = scheme == Scheme::Mq;
    let queue = scheme == Scheme::Queue;
    let datagram = matches!(scheme, Scheme::Udp | Scheme::UnixDgram);
    let pipe = matches!(scheme, Scheme::Pipe | Scheme::Fifo);
    let known = match (files, shm) {
        _ if scheme == Scheme::Pipe => "max_msg, spin_us, capacity",
        _ if scheme == Scheme::Fifo => "max_msg, mode, spin_us, capacity",
        _ if mq => "max_msg, mode, depth",
        _ if queue => "max_msg, mode, spin_us, group, durability",
        _ if scheme == Scheme::UnixDgram => "max_msg, mode, spin_us, peer",
        _ if scheme == Scheme::Udp => "max_msg, spin_us, peer",
        (_, true) => "max_msg, mode, capacity, wait, spin_us",
        (true, false) => "max_msg, mode, spin_us",
        _ => "max_msg, spin_us",
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |key, expected| UrlError::BadParameter {
            key,
            value: value.to_owned(),
            expected,
        };
        match key {
            "max_msg" => {
                options.max_message_size = parse_size(value).ok_or_else(|| {
                    bad(
                        "max_msg",
                        "a byte count from 1 to 4G, e.g. 65536, 64K or 16M",
                    )
                })?;
            }
            "mode" if files => {
                options.mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad("mode", "octal permissions, e.g. 0600 or 0660"))?;
            }
            "capacity" if shm => {
                options.capacity = parse_size(value)
                    .filter(|c| c.is_power_of_two() && (4096..=1 << 30).contains(c))
                    .ok_or_else(|| bad("capacity", "a power of two from 4K to 1G, e.g. 4M"))?;
            }
            "capacity" if pipe => {
                options.pipe_capacity = Some(
                    parse_size(value)
                        .filter(|c| (4096..=1 << 30).contains(c))
                        .ok_or_else(|| bad("capacity", "a byte count from 4K to 1G, e.g. 1M"))?,
                );
            }
            "wait" if shm => {
                options.wait = match value {
                    "adaptive" => WaitMode::Adaptive,
                    "spin" => WaitMode::Spin,
                    "block" => WaitMode::Block,
                    "sem" => WaitMode::Sem,
                    _ => return Err(bad("wait", "adaptive, spin, block or sem")),
                };
            }
            "group" if queue => {
                options.group = crate::queue::GroupName::new(value).map_err(|_| {
                    bad(
                        "group",
                        "1 to 64 ASCII letters, digits, '.', '_' or '-', not starting with '.'",
                    )
                })?;
            }
            "durability" if queue => {
                options.durability = value
                    .parse()
                    .map_err(|_| bad("durability", "fsync or os"))?;
            }
            "peer" if datagram => {
                options.peer = match value {
                    "any" => PeerPolicy::Any,
                    "first" => PeerPolicy::First,
                    _ => return Err(bad("peer", "any or first")),
                };
            }
            "depth" if mq => {
                options.depth = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|d| *d >= 1)
                        .ok_or_else(|| bad("depth", "a number of messages, e.g. 10"))?,
                );
            }
            "spin_us" if !mq => {
                options.spin_us = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|v| *v <= 1_000_000)
                        .ok_or_else(|| bad("spin_us", "microseconds from 0 to 1000000, e.g. 20"))?,
                );
            }
            _ => {
                return Err(UrlError::UnknownParameter {
                    scheme,
                    key: key.to_owned(),
                    known,
                })
            }
        }
    }
    Ok(())
}

/// Parses `65536`, `64K`, `16M`, `1G` (powers of 1024). Returns `None` for 0, garbage, or over
/// `u32::MAX` (the largest length a frame header carries).
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&t[..i], 1 << 20),
        (i, 'g' | 'G') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = digits.parse().ok()?;
    let v = n.checked_mul(mult)?;
    (v >= 1 && v <= u32::MAX as u64).then_some(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_scheme() {
        for s in Scheme::ALL {
            let e = Endpoint::parse(s.example()).unwrap();
            assert_eq!(e.scheme(), s);
            assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e, "{s}");
        }
        let e = Endpoint::parse("tcp://[::1]:80").unwrap();
        assert_eq!(
            e.address(),
            &Address::HostPort {
                host: "::1".into(),
                port: 80
            }
        );
        assert_eq!(
            Endpoint::parse("unix://rel/a.sock").unwrap().path(),
            Some(Path::new("rel/a.sock"))
        );
    }

    #[test]
    fn query_options() {
        let e = Endpoint::parse("fifo:///tmp/x?max_msg=64K&mode=0644").unwrap();
        assert_eq!(e.options().max_message_size, 65536);
        assert_eq!(e.options().mode, 0o644);
        assert!(matches!(
            Endpoint::parse("tcp://h:1?mode=600"),
            Err(UrlError::UnknownParameter { .. })
        ));
        assert!(matches!(
            Endpoint::parse("unix:///a?max_msg=0"),
            Err(UrlError::BadParameter { key: "max_msg", .. })
        ));
        assert!(matches!(
            Endpoint::parse("unix:///a?mode=999"),
            Err(UrlError::BadParameter { key: "mode", .. })
        ));
        let e = Endpoint::parse("shm://ch?capacity=1M&wait=spin&spin_us=5").unwrap();
        assert_eq!(e.name(), Some("ch"));
        assert_eq!(e.options().capacity, 1 << 20);
        assert_eq!(e.options().wait, WaitMode::Spin);
        assert_eq!(e.options().spin_us, Some(5));
        assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
        assert!(matches!(
            Endpoint::parse("shm://ch?capacity=3M"),
            Err(UrlError::BadParameter {
                key: "capacity",
                ..
            })
        ));
        assert!(matches!(
            Endpoint::parse("shm://ch?wait=sometimes"),
            Err(UrlError::BadParameter { key: "wait", .. })
        ));
        assert!(matches!(
            Endpoint::parse("unix:///a?wait=spin"),
            Err(UrlError::UnknownParameter { .. })
        ));
        assert!(matches!(
            Endpoint::parse("shm:///tmp/x"),
            Err(UrlError::BadName { .. })
        ));
        assert_eq!(
            Endpoint::parse("udp://127.0.0.1:9")
                .unwrap()
                .effective_max_message_size(),
            UDP_MAX_PAYLOAD
        );
    }

    #[test]
    fn datagram_peer_policy() {
        for url in [
            "udp://127.0.0.1:9?peer=first",
            "unix+dgram:///tmp/d.sock?peer=first",
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert_eq!(e.options().peer, PeerPolicy::First, "{url}");
            assert_eq!(e.to_string(), url);
            assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
        }
        let any = Endpoint::parse("udp://127.0.0.1:9?peer=any").unwrap();
        assert_eq!(any.options().peer, PeerPolicy::Any);
        assert_eq!(any.to_string(), "udp://127.0.0.1:9");
        assert!(matches!(
            Endpoint::parse("udp://127.0.0.1:9?peer=last"),
            Err(UrlError::BadParameter { key: "peer", .. })
        ));
        for url in [
            "tcp://127.0.0.1:9?peer=first",
            "unix+seqpacket:///tmp/s?peer=first",
            "shm://x?peer=first",
        ] {
            assert!(
                matches!(Endpoint::parse(url), Err(UrlError::UnknownParameter { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn queue_options() {
        use crate::queue::Durability;
        let e = Endpoint::parse("queue:///var/q?group=billing&durability=os&max_msg=1M").unwrap();
        assert_eq!(e.scheme(), Scheme::Queue);
        assert_eq!(e.path(), Some(Path::new("/var/q")));
        assert_eq!(e.options().group.as_str(), "billing");
        assert_eq!(e.options().durability, Durability::Os);
        assert_eq!(Endpoint::parse(&e.to_string()).unwrap(), e);
        let d = Endpoint::parse("queue://rel/q").unwrap();
        assert_eq!(d.options().group.as_str(), "default");
        assert_eq!(d.options().durability, Durability::Fsync);
        assert_eq!(d.to_string(), "queue://rel/q");
        for bad in [
            "group=",
            "group=.hidden",
            "group=a/b",
            "durability=sometimes",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(&format!("queue:///q?{bad}")),
                    Err(UrlError::BadParameter { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Endpoint::parse("unix:///a?group=x"),
            Err(UrlError::UnknownParameter { .. })
        ));
        assert!(Scheme::Queue.is_one_way());
    }

    #[test]
    fn typed_errors_say_what_is_wrong() {
        let e = Endpoint::parse("tcp://localhost").unwrap_err();
        assert!(matches!(e, UrlError::MissingPort { .. }));
        assert!(e.to_string().contains("tcp://127.0.0.1:7000"), "{e}");
        assert!(matches!(
            Endpoint::parse("tcp://localhost:").unwrap_err(),
            UrlError::MissingPort { .. }
        ));
        assert!(matches!(
            Endpoint::parse("tcp://:80").unwrap_err(),
            UrlError::MissingHost { .. }
        ));
        assert!(matches!(
            Endpoint::parse("tcp://h:99999").unwrap_err(),
            UrlError::BadPort { .. }
        ));
        let e = Endpoint::parse("carrier-pigeon://x").unwrap_err();
        assert!(matches!(e, UrlError::UnknownScheme { .. }));
        assert!(e.to_string().contains("unix:///tmp/my.sock"));
        assert!(matches!(
            Endpoint::parse("no scheme here").unwrap_err(),
            UrlError::Malformed { .. }
        ));
        assert!(matches!(
            Endpoint::parse("unix://").unwrap_err(),
            UrlError::MissingPath { .. }
        ));
        assert!(matches!(
            Endpoint::parse("unix:/tmp/x").unwrap_err(),
            UrlError::Malformed { .. }
        ));
        let long = format!("unix:///{}", "a".repeat(107));
        let e = Endpoint::parse(&long).unwrap_err();
        assert!(matches!(e, UrlError::PathTooLong { len: 108, .. }), "{e}");
        let fits = format!("unix:///{}", "a".repeat(106));
        assert!(Endpoint::parse(&fits).is_ok());
        // FIFOs are not limited by sun_path.
        assert!(Endpoint::parse(&format!("fifo:///{}", "a".repeat(300))).is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("16m"), Some(16 << 20));
        assert_eq!(parse_size("4G"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn pipes_take_a_capacity() {
        let e = Endpoint::parse("fifo:///tmp/p?capacity=1M").unwrap();
        assert_eq!(e.options().pipe_capacity, Some(1 << 20));
        assert_eq!(e.to_string(), "fifo:///tmp/p?capacity=1048576");
        assert_eq!(
            Endpoint::parse("pipe:?capacity=256K")
                .unwrap()
                .options()
                .pipe_capacity,
            Some(256 << 10)
        );
        assert_eq!(
            Endpoint::parse("pipe:").unwrap().options().pipe_capacity,
            None
        );
        assert!(matches!(
            Endpoint::parse("pipe:?capacity=100"),
            Err(UrlError::BadParameter {
                key: "capacity",
                ..
            })
        ));
        assert!(matches!(
            Endpoint::parse("unix:///a?capacity=1M"),
            Err(UrlError::UnknownParameter { .. })
        ));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = Endpoint::parse(&s);
        }

        #[test]
        fn parser_never_panics_on_scheme_prefixed(
            scheme in prop::sample::select(Scheme::ALL.to_vec()),
            rest in "[ -~]{0,120}",
        ) {
            let _ = Endpoint::parse(&format!("{scheme}:{rest}"));
            let _ = Endpoint::parse(&format!("{scheme}://{rest}"));
        }

        #[test]
        fn host_port_round_trips(a in 0u8..=255, b in 0u8..=255, port in any::<u16>()) {
            let url = format!("tcp://127.{a}.{b}.1:{port}");
            let e = Endpoint::parse(&url).unwrap();
            prop_assert_eq!(e.to_string(), url);
        }

        #[test]
        fn path_round_trips(path in "/[a-z0-9_./-]{1,100}") {
            let url = format!("unix://{path}");
            let e = Endpoint::parse(&url).unwrap();
            prop_assert_eq!(e.path().unwrap(), Path::new(&path));
            prop_assert_eq!(e.to_string(), url);
        }
    }
}
