//! The conformance suite: one set of cases, run against every transport, between this test
//! process and a real separate process (the helper peer `ipckit-test-peer`,
//! `src/bin/test_peer.rs`).
//!
//! To give a new transport the whole suite: add a row to
//! [`TRANSPORTS`] describing what it can do, and its name to the `conformance_suite!`
//! invocation at the bottom. Tests are named `<transport>::<case>`, e.g.
//! `unix_dgram::peer_killed_mid_send`, so a failure names both. A case that does not apply to
//! a transport (no file to check, one-way…) says so on stderr and passes; a case that fails
//! because of a library bug is listed in [`KNOWN_BUGS`] and gets an `#[ignore = "BUG: …"]`.
//!
//! Every blocking call has a timeout; peers are waited for with a deadline and killed when
//! dropped (and a watchdog aborts the binary if something hangs anyway). The `no_fd_leaks`
//! case takes an exclusive lock (every other test holds it shared), so the descriptor counts
//! it compares are not disturbed by tests on other threads.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use ipckit::endpoint::{Address, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MODE};
use ipckit::{
    Connection, Endpoint, Error, Listener, MessageReceiver, MessageSender, TypedReceiver,
    TypedSender, UrlError, Wait,
};

// ---------------------------------------------------------------------------------------------
// The transport table
// ---------------------------------------------------------------------------------------------

/// How a transport is addressed and set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `pipe:`: the test creates the pipes and spawns the peer with them.
    Pipe,
    /// A FIFO in the file system: the binder reads, the connector writes.
    Fifo,
    /// A Unix socket file.
    UnixSocket,
    /// `host:port` on the loopback interface (bound to port 0).
    Inet,
    /// A name in a system-wide namespace (`shm://name`: objects in /dev/shm).
    Name,
    /// `mmap:///dir/name`: the `shm://` channel in memory-mapped files `dir/name`,
    /// `dir/name~…`.
    MappedFile,
    /// `mq:///name`: a POSIX message queue, held by the kernel (no file to see: /dev/mqueue
    /// is not mounted everywhere).
    MqName,
    /// `queue:///dir`: a durable queue, a directory of files that outlives every process by
    /// design.
    QueueDir,
}

/// How messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Length-prefixed frames on a byte stream: partial frames are possible when a peer dies
    /// (`Truncated`), and a framing error leaves the stream `Desynchronized`.
    Stream,
    /// One message per datagram or packet: a message arrives whole or not at all.
    Message,
}

/// What `Listener::accept` hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accepts {
    /// A new connection per client; waits for the next one.
    EachClient,
    /// The next writer, once it has sent something (FIFO).
    NextWriter,
    /// One connection, at once, receiving from every sender and replying to the last one.
    Once,
    /// One receiving connection, at once, taking from every sender; it cannot send
    /// (`shm+mpsc://`, `mq://`, `queue://`).
    OnceOneWay,
    /// Not applicable (`pipe:`: the pipe is created by the parent, not bound).
    NotBound,
}

/// What connecting to an endpoint nobody serves gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Missing {
    /// `Error::ConnectionRefused`.
    Refused,
    /// `Error::NotFound` (the file does not exist).
    NotFound,
    /// Connectionless: `connect` succeeds; sending works; a later receive may report
    /// `Disconnected` (ICMP port unreachable) or time out.
    Connects,
    /// `pipe:`: `from_env()` without an inherited pipe is `Error::NoInheritedPipe`.
    NoInheritedPipe,
    /// `queue://`: connecting creates the queue; what is sent waits there for a consumer.
    Creates,
}

/// What sending gives once the receiving process is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeadReceiver {
    /// `Error::Disconnected`, once what the transport buffers is used up (lossy transports
    /// may just drop instead).
    Disconnected,
    /// The kernel keeps the queue, and its messages, without a receiver: sends succeed until
    /// it is full, then wait (`Timeout`), never `Disconnected` (`mq://`).
    FillsThenWaits,
    /// A durable log on disk: every send succeeds, and never waits for a consumer
    /// (`queue://`).
    Stores,
}

/// Who enforces the receiver's `?max_msg=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MaxMsg {
    /// Each end has its own maximum: a sender allowed more gets through, the receiver refuses
    /// the message (`IncomingTooLarge`).
    PerEnd,
    /// The receiver's maximum is the queue's: every sender is held to it (`MessageTooLarge`
    /// at the sender, whatever its own URL says).
    Receivers,
}

/// One transport and what it can do: the cases read their expectations from here.
#[derive(Debug)]
struct Transport {
    /// Also the name of the test module: `<name>::<case>`.
    name: &'static str,
    /// URL scheme.
    scheme: &'static str,
    kind: Kind,
    framing: Framing,
    /// Both ends can send and receive on one connection.
    duplex: bool,
    /// Messages may be dropped (the cases retry or accept loss where it matters).
    lossy: bool,
    /// Largest message with the default options (`max_message_size()`).
    max_payload: usize,
    /// A receiver learns that its peer died (`Disconnected`/`Truncated`). Where it cannot
    /// (connectionless datagrams), a receive after the peer's death times out: never a
    /// partial message, never a hang.
    recv_sees_peer_death: bool,
    accepts: Accepts,
    missing: Missing,
    /// The message a peer is killed while sending: for stream transports, too large for the
    /// kernel buffers between the two processes, so that it dies mid-message.
    kill_size: usize,
    /// What sending to a dead receiver gives.
    dead_receiver: DeadReceiver,
    /// Who enforces `?max_msg=`.
    max_msg: MaxMsg,
}

const MIB: usize = 1 << 20;

/// Every transport the suite covers. A new transport is one more row (and one more name in
/// `conformance_suite!` below).
const TRANSPORTS: &[Transport] = &[
    Transport {
        name: "fifo",
        scheme: "fifo",
        kind: Kind::Fifo,
        framing: Framing::Stream,
        duplex: false, // one-way: the binder reads, the connector writes
        lossy: false,
        max_payload: DEFAULT_MAX_MESSAGE_SIZE,
        recv_sees_peer_death: true,
        accepts: Accepts::NextWriter,
        missing: Missing::NotFound,
        kill_size: MIB, // pipe buffer: 64 KiB
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "unix",
        scheme: "unix",
        kind: Kind::UnixSocket,
        framing: Framing::Stream,
        duplex: true,
        lossy: false,
        max_payload: DEFAULT_MAX_MESSAGE_SIZE,
        recv_sees_peer_death: true,
        accepts: Accepts::EachClient,
        missing: Missing::Refused,
        kill_size: MIB, // socket buffer: ~200 KiB
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "unix_dgram",
        scheme: "unix+dgram",
        kind: Kind::UnixSocket,
        framing: Framing::Message,
        duplex: true,
        lossy: false,
        // The kernel allocates at most 4 MiB for one Unix datagram (see `unix_packet_limit`).
        max_payload: 4 << 20,
        recv_sees_peer_death: false,
        accepts: Accepts::Once,
        missing: Missing::Refused,
        kill_size: MIB,
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "unix_seqpacket",
        scheme: "unix+seqpacket",
        kind: Kind::UnixSocket,
        framing: Framing::Message,
        duplex: true,
        lossy: false,
        // The kernel allocates at most 4 MiB for one Unix datagram (see `unix_packet_limit`).
        max_payload: 4 << 20,
        recv_sees_peer_death: true,
        accepts: Accepts::EachClient,
        missing: Missing::Refused,
        kill_size: MIB,
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "tcp",
        scheme: "tcp",
        kind: Kind::Inet,
        framing: Framing::Stream,
        duplex: true,
        lossy: false,
        max_payload: DEFAULT_MAX_MESSAGE_SIZE,
        recv_sees_peer_death: true,
        accepts: Accepts::EachClient,
        missing: Missing::Refused,
        kill_size: 12 * MIB, // loopback buffers can hold a few MiB
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "udp",
        scheme: "udp",
        kind: Kind::Inet,
        framing: Framing::Message,
        duplex: true,
        lossy: true,
        max_payload: 65_507,
        recv_sees_peer_death: false,
        accepts: Accepts::Once,
        missing: Missing::Connects,
        kill_size: 60_000,
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "shm",
        scheme: "shm",
        kind: Kind::Name,
        framing: Framing::Message,
        duplex: true,
        lossy: false,
        // Default ring of 4 MiB per direction: half of it, less an 8-byte record header.
        max_payload: (4 << 20) / 2 - 8,
        recv_sees_peer_death: true, // the peer's OFD lock goes with it
        accepts: Accepts::EachClient,
        missing: Missing::Refused,
        kill_size: MIB,
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "pipe",
        scheme: "pipe",
        kind: Kind::Pipe,
        framing: Framing::Stream,
        duplex: true, // with pipe::duplex(); to_child()/from_child() are one-way
        lossy: false,
        max_payload: DEFAULT_MAX_MESSAGE_SIZE,
        recv_sees_peer_death: true,
        accepts: Accepts::NotBound,
        missing: Missing::NoInheritedPipe,
        kill_size: MIB, // pipe buffer: 64 KiB
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "mmap",
        scheme: "mmap",
        kind: Kind::MappedFile,
        framing: Framing::Message,
        duplex: true,
        lossy: false,
        // The shm:// channel: default ring of 4 MiB per direction, half of it less a header.
        max_payload: (4 << 20) / 2 - 8,
        recv_sees_peer_death: true, // the peer's OFD lock goes with it
        accepts: Accepts::EachClient,
        missing: Missing::Refused,
        kill_size: MIB,
        dead_receiver: DeadReceiver::Disconnected,
        max_msg: MaxMsg::PerEnd,
    },
    Transport {
        name: "shm_mpsc",
        scheme: "shm+mpsc",
        kind: Kind::Name,
        framing: Framing::Message,
        duplex: false, // connect = a sender, bind = the one receiver
        lossy: false,
        // One ring of 4 MiB (the default capacity): half of it less a record header.
        max_payload: (4 << 20) / 2 - 8,
        // The receiver takes from any number of senders, like a bound datagram socket: a
        // sender's death is nothing it is told about.
        recv_sees_peer_death: false,
        accepts: Accepts::OnceOneWay,
        missing: Missing::Refused,
        kill_size: MIB,
        // Senders check the receiver's lock: the ring fills, then `Disconnected`.
        dead_receiver: DeadReceiver::Disconnected,
        // The receiver writes its maximum into the queue's header; senders use it.
        max_msg: MaxMsg::Receivers,
    },
    Transport {
        name: "mq",
        scheme: "mq",
        kind: Kind::MqName,
        framing: Framing::Message,
        duplex: false, // bind = the receiver, connect = a sender
        lossy: false,
        // Queues ipckit creates take messages of 8 KiB by default (fs.mqueue.msgsize_max is
        // 8192 on most machines, and 10 × 8 KiB fits the 800 KiB per-user budget).
        max_payload: ipckit::mq::DEFAULT_MESSAGE_SIZE as usize,
        recv_sees_peer_death: false, // any process may send; nobody is told of a death
        accepts: Accepts::OnceOneWay,
        missing: Missing::Refused, // the receiving side creates the queue
        kill_size: ipckit::mq::DEFAULT_MESSAGE_SIZE as usize, // one message, all or nothing
        dead_receiver: DeadReceiver::FillsThenWaits,
        // The queue's message size is fixed when it is created: senders cannot exceed it.
        max_msg: MaxMsg::Receivers,
    },
    Transport {
        name: "queue",
        scheme: "queue",
        kind: Kind::QueueDir,
        framing: Framing::Message,
        duplex: false, // bind = a consumer (of the URL's group), connect = a producer
        lossy: false,
        max_payload: DEFAULT_MAX_MESSAGE_SIZE,
        // Producers come and go; the log stays: a consumer waits for more.
        recv_sees_peer_death: false,
        accepts: Accepts::OnceOneWay,
        missing: Missing::Creates,
        kill_size: MIB,
        dead_receiver: DeadReceiver::Stores,
        max_msg: MaxMsg::PerEnd,
    },
];

/// The query every `queue://` URL of the suite carries: `durability=os` (a send returns once
/// the record is in the page cache; `fsync` would only make the suite slow).
const QUEUE_QUERY: &str = "?durability=os";

/// `url` with the query `q` (`?a=1…`, or empty) added to whatever query it has.
fn add_query(url: &str, q: &str) -> String {
    match q.strip_prefix('?') {
        Some(rest) if url.contains('?') => format!("{url}&{rest}"),
        _ => format!("{url}{q}"),
    }
}

/// The largest Unix datagram or packet a default endpoint can send here: 4 MiB (the kernel's
/// largest single buffer), or less when `net.core.wmem_max` caps the send buffer (the kernel
/// doubles the value asked for and keeps 32 bytes).
fn unix_packet_limit() -> usize {
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX / 4);
    DEFAULT_MAX_MESSAGE_SIZE
        .min(4 << 20)
        .min((2 * wmem_max).saturating_sub(32))
}

fn transport(name: &str) -> &'static Transport {
    TRANSPORTS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no transport {name:?} in TRANSPORTS"))
}

impl Transport {
    /// A fresh URL for this transport (without query, but for `queue://`'s
    /// [`QUEUE_QUERY`]: add more with [`add_query`]) in `dir`: the same `(dir, name)` gives
    /// the same URL; different temporary directories give different URLs.
    fn url_in(&self, dir: &Path, name: &str) -> String {
        match self.kind {
            Kind::Pipe => "pipe:".to_owned(),
            Kind::Fifo | Kind::UnixSocket | Kind::MappedFile => {
                format!("{}://{}/{name}", self.scheme, dir.display())
            }
            Kind::QueueDir => format!("{}://{}/{name}{QUEUE_QUERY}", self.scheme, dir.display()),
            Kind::Inet => format!("{}://127.0.0.1:0", self.scheme),
            Kind::Name => format!("{}://{}", self.scheme, shm_name(dir, name)),
            Kind::MqName => format!("{}:///{}", self.scheme, shm_name(dir, name)),
        }
    }

    /// The file system object an endpoint `name` in `dir` creates and removes, if any.
    fn object_file(&self, dir: &Path, name: &str) -> Option<PathBuf> {
        match self.kind {
            Kind::Fifo | Kind::UnixSocket | Kind::MappedFile => Some(dir.join(name)),
            Kind::Name => {
                Some(Path::new("/dev/shm").join(format!("ipckit.{}", shm_name(dir, name))))
            }
            // A queue's directory is its data: it stays, by design.
            Kind::Pipe | Kind::Inet | Kind::MqName | Kind::QueueDir => None,
        }
    }

    /// Endpoints live in the file system as a file of ours (FIFO, socket, shared memory,
    /// mapped file) that goes with the endpoint.
    fn has_file(&self) -> bool {
        self.object_file(Path::new("/"), "x").is_some()
    }

    /// Why a case about the endpoint's own file does not apply.
    fn why_no_file(&self) -> &'static str {
        match self.kind {
            Kind::MqName => "a kernel object, no file of its own to check",
            Kind::QueueDir => "its directory is the durable data, kept by design",
            _ => "no file",
        }
    }

    /// Endpoints are paths the user chooses, where other files can be in the way.
    fn has_path(&self) -> bool {
        matches!(self.kind, Kind::Fifo | Kind::UnixSocket)
    }

    /// The sizes of [`SIZES`] this transport carries.
    fn sizes(&self) -> Vec<usize> {
        SIZES
            .iter()
            .copied()
            .filter(|&s| s <= self.max_payload)
            .collect()
    }

    fn is_stream(&self) -> bool {
        self.framing == Framing::Stream
    }
}

/// The `shm://` name of endpoint `name` of a test using `dir` (unique per temporary directory).
fn shm_name(dir: &Path, name: &str) -> String {
    let unique = dir.file_name().unwrap_or_default().to_string_lossy();
    format!("ipckit-conformance{unique}-{name}")
}

/// The endpoint names the cases use (`mq://` queues cannot be listed without /dev/mqueue:
/// [`leftovers`] looks for these).
const ENDPOINT_NAMES: &[&str] = &["ep", "default", "custom", "nobody", "x"];

/// Files a test using `dir` left behind: in `dir`, named objects in /dev/shm, and message
/// queues.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut left = dir_entries(dir);
    let prefix = format!("ipckit.{}", shm_name(dir, ""));
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        left.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix)),
        );
    }
    for name in ENDPOINT_NAMES {
        let q = format!("/{}", shm_name(dir, name));
        match ipckit::mq::MessageQueue::open(&q) {
            Err(Error::NotFound { .. }) => {}
            Ok(_) => left.push(format!("message queue {q}")),
            Err(e) => left.push(format!("message queue {q}: {e:?}")),
        }
    }
    left
}

/// Removes what a test using `dir` may leave when a peer that bound an endpoint is killed
/// (no destructor runs): named shared memory and message queues. Dropped at the end of a
/// session, after the checks that the library removed them itself where it should.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in ENDPOINT_NAMES {
            let n = shm_name(&self.0, name);
            let _ = ipckit::shm::remove(&n);
            let _ = ipckit::mq::MessageQueue::remove(&format!("/{n}"));
        }
    }
}

fn join(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The URL of an endpoint without its query (options back to their defaults).
fn base_url(ep: &Endpoint) -> String {
    ep.clone()
        .with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
        .with_mode(DEFAULT_MODE)
        .to_string()
}

/// Asserts that `$e` is `Err($p)`, showing what it was otherwise (without dumping payloads).
macro_rules! assert_err {
    ($e:expr, $p:pat $(if $g:expr)?, $($ctx:tt)+) => {
        match $e {
            Err($p) $(if $g)? => {}
            Err(e) => panic!("{}: expected Err({}), got Err({e:?})", format!($($ctx)+), stringify!($p)),
            Ok(_) => panic!("{}: expected Err({}), got Ok", format!($($ctx)+), stringify!($p)),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Sessions: the test process on one end, the peer process on the other
// ---------------------------------------------------------------------------------------------

/// Who sends, which decides who binds for one-way transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The peer sends, the test receives.
    PeerSends,
    /// The test sends, the peer receives.
    TestSends,
    /// Both (duplex transports only).
    Both,
}

struct Session {
    conn: Connection,
    peer: Peer,
    listener: Option<Listener>,
    /// The endpoint's URL without query (for `tcp`/`udp`, with the real port).
    url: String,
    can_send: bool,
    /// The endpoint is a durable queue: its directory (`ep`) stays, by design.
    durable: bool,
    /// Removes what a killed peer left (after `finish` has checked that nothing is left).
    cleanup: Cleanup,
    dir: tempfile::TempDir,
}

impl Session {
    /// Unwraps `r`, or panics with the peer's stderr.
    #[track_caller]
    fn ok<T>(&self, what: &str, r: ipckit::Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e:?} ({e}); peer stderr: {}", self.peer.stderr()))
    }

    #[track_caller]
    fn expect_hello(&mut self) {
        let r = self.conn.recv_timeout(LONG);
        let m = self.ok("receive the peer's hello", r);
        assert_eq!(m, b"hello", "first message from the peer");
    }

    /// Lets a peer started with [`gated`] steps go on.
    #[track_caller]
    fn go(&mut self) {
        if self.can_send {
            let r = self.conn.send_timeout(b"go", LONG);
            self.ok("send go", r);
        }
    }

    /// Ends a session where the peer finishes by itself: wakes a lingering peer (`wake`),
    /// closes the connection, expects the peer to succeed, and checks that no file is left.
    #[track_caller]
    fn finish(self, wake: bool) {
        let Session {
            mut conn,
            mut peer,
            listener,
            dir,
            can_send,
            durable,
            cleanup,
            ..
        } = self;
        if wake && can_send {
            // Best effort: the peer may already be gone.
            let _ = conn.send_timeout(b"done", LONG);
        }
        drop(conn);
        peer.expect_success();
        drop(listener);
        let left: Vec<String> = leftovers(dir.path())
            .into_iter()
            .filter(|n| !(durable && n == "ep"))
            .collect();
        assert!(left.is_empty(), "files left behind: {left:?}");
        drop(cleanup);
    }

    /// Ends a session by killing the peer.
    fn finish_killed(mut self) {
        self.peer.kill();
    }
}

/// Whether the test's end of a session for `flow` can send (a one-way pipe or FIFO cannot
/// send against the flow).
fn test_can_send(t: &Transport, flow: Flow) -> bool {
    flow != Flow::PeerSends || (t.duplex && t.kind != Kind::Pipe)
}

/// Steps that make the peer wait until the test has accepted it (the test then sends `go`
/// with [`Session::go`]), followed by `steps`: so that a peer that exits right after sending
/// does not race with the test's accept (see `peer_exits_before_accept` for that race).
fn gated<'a>(t: &Transport, flow: Flow, steps: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::new();
    if test_can_send(t, flow) {
        v.push("await");
    }
    v.extend_from_slice(steps);
    v
}

/// Spawns the peer with `args` and the child's ends of a pipe made for `flow`.
fn spawn_pipe_peer(flow: Flow, args: &[&str]) -> (Connection, Peer) {
    let (conn, end) = match flow {
        Flow::Both => ipckit::pipe::duplex(),
        Flow::TestSends => ipckit::pipe::to_child(),
        Flow::PeerSends => ipckit::pipe::from_child(),
    }
    .expect("create pipes");
    let mut cmd = Peer::command(args);
    let child = end.spawn(&mut cmd).expect("spawn peer with pipes");
    (
        conn,
        Peer::adopt(child, format!("ipckit-test-peer {args:?}")),
    )
}

/// Opens a session: the test binds (or makes the pipe) and the peer connects, says hello and
/// runs `steps`; except for a FIFO the test writes to, which the peer binds.
fn open(t: &Transport, flow: Flow, steps: &[&str]) -> Session {
    open_q(t, flow, "", "", steps)
}

/// Like [`open`], with URL queries for the test's end and the peer's end.
fn open_q(t: &Transport, flow: Flow, test_q: &str, peer_q: &str, steps: &[&str]) -> Session {
    assert!(flow != Flow::Both || t.duplex, "{}: not duplex", t.name);
    let dir = tempdir();
    let can_send = test_can_send(t, flow);
    let can_recv = flow != Flow::TestSends || (t.duplex && t.kind != Kind::Pipe);
    match t.kind {
        Kind::Pipe => {
            assert!(test_q.is_empty(), "the parent's pipe ends take no options");
            let peer_url = format!("pipe:{peer_q}");
            let mut args = vec!["connect", peer_url.as_str(), "hello"];
            args.extend_from_slice(steps);
            let (conn, peer) = spawn_pipe_peer(flow, &args);
            let mut s = Session {
                conn,
                peer,
                listener: None,
                url: "pipe:".to_owned(),
                can_send,
                durable: t.kind == Kind::QueueDir,
                cleanup: Cleanup(dir.path().to_owned()),
                dir,
            };
            if can_recv {
                s.expect_hello();
            }
            s
        }
        // One-way: the sending end connects, so the peer binds.
        _ if flow == Flow::TestSends && !t.duplex => {
            let url = t.url_in(dir.path(), "ep");
            let peer_url = add_query(&url, peer_q);
            let mut args = vec!["bind", peer_url.as_str()];
            args.extend_from_slice(steps);
            let mut peer = Peer::spawn(&args);
            peer.expect_line("READY");
            let conn = ipckit::connect_timeout(add_query(&url, test_q), LONG)
                .unwrap_or_else(|e| panic!("connect to {url}: {e:?}; peer: {}", peer.stderr()));
            Session {
                conn,
                peer,
                listener: None,
                url,
                can_send,
                durable: t.kind == Kind::QueueDir,
                cleanup: Cleanup(dir.path().to_owned()),
                dir,
            }
        }
        _ => {
            let url = t.url_in(dir.path(), "ep");
            let mut listener = ipckit::bind(add_query(&url, test_q)).expect("bind");
            let base = base_url(listener.endpoint());
            let peer_url = add_query(&base, peer_q);
            let mut args = vec!["connect", peer_url.as_str(), "hello"];
            args.extend_from_slice(steps);
            let peer = Peer::spawn(&args);
            let conn = listener
                .accept_timeout(LONG)
                .unwrap_or_else(|e| panic!("accept on {base}: {e:?}; peer: {}", peer.stderr()));
            let mut s = Session {
                conn,
                peer,
                listener: Some(listener),
                url: base,
                can_send,
                durable: t.kind == Kind::QueueDir,
                cleanup: Cleanup(dir.path().to_owned()),
                dir,
            };
            s.expect_hello();
            s
        }
    }
}

/// Opens a session where the peer binds (printing `READY <endpoint>`) and the test connects.
fn open_peer_binds(t: &Transport, steps: &[&str]) -> Session {
    assert!(t.kind != Kind::Pipe);
    let dir = tempdir();
    let url = t.url_in(dir.path(), "ep");
    let mut args = vec!["bind", url.as_str()];
    args.extend_from_slice(steps);
    let mut peer = Peer::spawn(&args);
    let ready = peer.expect_line("READY");
    let ep: Endpoint = ready.parse().expect("peer's endpoint");
    let url = base_url(&ep);
    let conn = ipckit::connect_timeout(&url, LONG)
        .unwrap_or_else(|e| panic!("connect to {url}: {e:?}; peer: {}", peer.stderr()));
    Session {
        conn,
        peer,
        listener: None,
        url,
        can_send: true,
        durable: t.kind == Kind::QueueDir,
        cleanup: Cleanup(dir.path().to_owned()),
        dir,
    }
}

/// Opens a session where the peer writes hand-made bytes to a stream transport (no ipckit on
/// its side): `raw_steps` are `write-hex:`/`write-junk:` steps.
fn open_raw(t: &Transport, test_q: &str, raw_steps: &[&str]) -> Session {
    assert!(t.is_stream());
    let dir = tempdir();
    let mut steps = raw_steps.to_vec();
    steps.push("hold");
    if t.kind == Kind::Pipe {
        let mut args = vec!["raw-pipe", "-"];
        args.extend_from_slice(&steps);
        let (conn, peer) = spawn_pipe_peer(Flow::PeerSends, &args);
        return Session {
            conn,
            peer,
            listener: None,
            url: "pipe:".to_owned(),
            can_send: false,
            durable: false,
            cleanup: Cleanup(dir.path().to_owned()),
            dir,
        };
    }
    let url = t.url_in(dir.path(), "ep");
    let mut listener = ipckit::bind(format!("{url}{test_q}")).expect("bind");
    let ep = listener.endpoint().clone();
    let (role, target) = match (t.kind, ep.address()) {
        (Kind::Fifo, Address::Path(p)) => ("raw-fifo", p.display().to_string()),
        (Kind::UnixSocket, Address::Path(p)) => ("raw-unix", p.display().to_string()),
        (Kind::Inet, Address::HostPort { host, port }) => ("raw-tcp", format!("{host}:{port}")),
        other => panic!("no raw peer for {other:?}"),
    };
    let mut args = vec![role, target.as_str()];
    args.extend_from_slice(&steps);
    let peer = Peer::spawn(&args);
    let conn = listener
        .accept_timeout(LONG)
        .unwrap_or_else(|e| panic!("accept: {e:?}; peer: {}", peer.stderr()));
    Session {
        conn,
        peer,
        listener: Some(listener),
        url: base_url(&ep),
        can_send: t.kind != Kind::Fifo,
        durable: false,
        cleanup: Cleanup(dir.path().to_owned()),
        dir,
    }
}

/// Sends every size to an echoing peer and checks what comes back (owned receives). On a
/// lossy transport a lost message or echo is sent again, a few times.
fn echo_every_size(t: &Transport, s: &mut Session) {
    for (i, size) in t.sizes().into_iter().enumerate() {
        let msg = pattern(i, size);
        let mut attempts = 0;
        let back = loop {
            attempts += 1;
            let r = s.conn.send_timeout(&msg, LONG);
            s.ok("send", r);
            match s.conn.recv_timeout(if t.lossy { SHORT * 4 } else { LONG }) {
                Err(Error::Timeout { .. }) if t.lossy && attempts < 5 => continue,
                r => break s.ok(&format!("echo of #{i} ({size} bytes)"), r),
            }
        };
        assert_pattern(&back, i, size, t.name);
    }
}

/// How a receive loop after the peer's death ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Truncated,
    Disconnected,
    TimedOut,
}

/// Receives what is left after the peer died while sending `pattern(0, size)`: at most that
/// whole message, then the transport's way of saying the peer is gone. Never a partial
/// message, never a hang.
fn drain_after_death(t: &Transport, s: &mut Session, size: usize) -> Ending {
    let mut buf = Vec::new();
    let mut whole = 0;
    let timeout = if t.recv_sees_peer_death {
        LONG
    } else {
        SHORT * 4
    };
    loop {
        let r = bounded("receive after the peer died", timeout, || {
            s.conn.recv_into_timeout(&mut buf, timeout)
        });
        match r {
            Ok(()) => {
                assert_pattern(&buf, 0, size, t.name);
                whole += 1;
                assert_eq!(whole, 1, "{}: the message arrived twice", t.name);
            }
            Err(Error::Truncated { received, expected }) => {
                assert!(
                    t.is_stream(),
                    "{}: Truncated on a message transport",
                    t.name
                );
                assert_eq!(expected, 4 + size, "{}: expected frame size", t.name);
                assert!(received < expected, "{}: {received} of {expected}", t.name);
                assert_err!(
                    s.conn.recv_timeout(LONG),
                    Error::Desynchronized,
                    "{}: after Truncated",
                    t.name
                );
                return Ending::Truncated;
            }
            Err(Error::Disconnected) => {
                assert!(
                    t.recv_sees_peer_death,
                    "{}: unexpected Disconnected",
                    t.name
                );
                assert_err!(
                    s.conn.recv_timeout(LONG),
                    Error::Disconnected,
                    "{}: a dead peer stays dead",
                    t.name
                );
                return Ending::Disconnected;
            }
            Err(Error::Timeout { .. }) => {
                assert!(
                    !t.recv_sees_peer_death,
                    "{}: receive timed out although the transport sees peer death",
                    t.name
                );
                return Ending::TimedOut;
            }
            Err(e) => panic!("{}: unexpected error after the peer died: {e:?}", t.name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases: each takes a transport and reads its expectations from the table
// ---------------------------------------------------------------------------------------------

mod cases {
    use super::*;

    type CaseFn = fn(&Transport);

    /// Messages of every size, peer → test, verified byte for byte (one reused buffer).
    pub fn sizes_peer_to_test(t: &Transport) {
        let sizes = t.sizes();
        let send = format!("send:{}", join(&sizes));
        let mut s = open(t, Flow::PeerSends, &[&send, "linger"]);
        let mut buf = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let r = s.conn.recv_into_timeout(&mut buf, LONG);
            s.ok(&format!("receive message #{i} ({size} bytes)"), r);
            assert_pattern(&buf, i, size, t.name);
        }
        s.finish(true);
    }

    /// Messages of every size, test → peer; the peer verifies them byte for byte.
    pub fn sizes_test_to_peer(t: &Transport) {
        let sizes = t.sizes();
        let check = format!("check:{}", join(&sizes));
        let mut s = open(t, Flow::TestSends, &[&check]);
        for (i, &size) in sizes.iter().enumerate() {
            let r = s.conn.send_timeout(&pattern(i, size), LONG);
            s.ok(&format!("send message #{i} ({size} bytes)"), r);
        }
        for (i, &size) in sizes.iter().enumerate() {
            assert_eq!(s.peer.expect_line("checked"), format!("{i} {size}"));
        }
        s.finish(false);
    }

    /// Every size sent and echoed back (owned receives).
    pub fn echo_round_trip(t: &Transport) {
        if !t.duplex {
            return eprintln!("{}: one-way, no echo", t.name);
        }
        let mut s = open(t, Flow::Both, &["echo"]);
        echo_every_size(t, &mut s);
        if t.recv_sees_peer_death {
            // The peer's echo loop ends when it sees us go.
            s.finish(false);
        } else {
            s.finish_killed();
        }
    }

    /// The other way round: the peer binds, the test connects.
    pub fn peer_binds_test_connects(t: &Transport) {
        match t.kind {
            Kind::Pipe => eprintln!("pipe: nothing to bind"),
            _ if !t.duplex => {
                // The binder reads: the peer checks what the test writes.
                let sizes = t.sizes();
                let check = format!("check:{}", join(&sizes));
                let mut s = open_peer_binds(t, &[&check]);
                for (i, &size) in sizes.iter().enumerate() {
                    let r = s.conn.send_timeout(&pattern(i, size), LONG);
                    s.ok("send", r);
                }
                s.finish(false);
            }
            _ => {
                let mut s = open_peer_binds(t, &["echo"]);
                echo_every_size(t, &mut s);
                if t.recv_sees_peer_death {
                    s.finish(false);
                } else {
                    s.finish_killed();
                }
            }
        }
    }

    /// Typed messages across processes; a message of another type is `Decode`, and the
    /// connection keeps working after it.
    pub fn typed_round_trip(t: &Transport) {
        let flow = if t.duplex {
            Flow::Both
        } else {
            Flow::PeerSends
        };
        let mut steps = vec!["typed-send", "typed-send-bool"];
        if t.duplex {
            steps.push("typed-echo");
        }
        let mut s = open(t, flow, &steps);
        let r = s.conn.recv_typed_timeout::<Sample>(LONG);
        assert_eq!(s.ok("typed receive", r), sample());
        match s.conn.recv_typed_timeout::<Sample>(LONG) {
            Err(Error::Decode { type_name, len, .. }) => {
                assert!(type_name.contains("Sample"), "type name {type_name:?}");
                assert_eq!(len, 1, "a bool is one byte");
            }
            other => panic!("{}: a bool decoded as Sample: {other:?}", t.name),
        }
        if t.duplex {
            let mine = Sample {
                id: 41,
                name: "from the test".into(),
                values: vec![i64::MIN, 3],
                flag: None,
            };
            let r = s.conn.send_typed_timeout(&mine, LONG);
            s.ok("typed send", r);
            let r = s.conn.recv_typed_timeout::<Sample>(LONG);
            let back = s.ok("typed echo", r);
            assert_eq!(back, Sample { id: 42, ..mine });
        }
        s.finish(false);
    }

    /// `try_` calls with nothing to do are `WouldBlock`, `_timeout` calls are `Timeout` in
    /// bounded time, and the connection still works afterwards.
    pub fn recv_would_block_and_timeout(t: &Transport) {
        let flow = if t.duplex {
            Flow::Both
        } else {
            Flow::PeerSends
        };
        let steps: &[&str] = if t.duplex { &["echo"] } else { &["hold"] };
        let mut s = open(t, flow, steps);
        let mut buf = Vec::new();
        assert_err!(s.conn.try_recv(), Error::WouldBlock, "{}: try_recv", t.name);
        assert_err!(
            s.conn.try_recv_into(&mut buf),
            Error::WouldBlock,
            "{}: try_recv_into",
            t.name
        );
        assert_err!(
            s.conn.try_recv_typed::<Sample>(),
            Error::WouldBlock,
            "{}: try_recv_typed",
            t.name
        );
        let r = bounded("recv_timeout", SHORT, || s.conn.recv_timeout(SHORT));
        assert_err!(r, Error::Timeout { .. }, "{}: recv_timeout", t.name);
        let r = bounded("recv_into_timeout", SHORT, || {
            s.conn.recv_into_timeout(&mut buf, SHORT)
        });
        assert_err!(r, Error::Timeout { .. }, "{}: recv_into_timeout", t.name);
        let deadline = Instant::now() + SHORT;
        let r = bounded("recv_deadline", SHORT, || s.conn.recv_deadline(deadline));
        assert_err!(r, Error::Timeout { .. }, "{}: recv_deadline", t.name);
        let r = bounded("recv_typed_timeout", SHORT, || {
            s.conn.recv_typed_timeout::<Sample>(SHORT)
        });
        assert_err!(r, Error::Timeout { .. }, "{}: recv_typed_timeout", t.name);
        if t.duplex {
            let r = s.conn.send_timeout(b"still there?", LONG);
            s.ok("send after timeouts", r);
            let r = s.conn.recv_timeout(LONG);
            assert_eq!(s.ok("echo after timeouts", r), b"still there?");
            if t.recv_sees_peer_death {
                return s.finish(false);
            }
        }
        s.finish_killed();
    }

    /// `try_accept` and `accept_timeout` on a listener nobody connects to; datagram listeners
    /// hand out one connection, which has nobody to reply to yet (`NoPeer`).
    pub fn accept_would_block_and_timeout(t: &Transport) {
        if t.accepts == Accepts::NotBound {
            return eprintln!("{}: nothing to accept", t.name);
        }
        let dir = tempdir();
        let mut l = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
        match t.accepts {
            Accepts::EachClient | Accepts::NextWriter => {
                assert_err!(l.try_accept(), Error::WouldBlock, "{}: try_accept", t.name);
                assert_err!(
                    l.accept_with(Wait::Never),
                    Error::WouldBlock,
                    "{}: accept_with(Never)",
                    t.name
                );
                let r = bounded("accept_timeout", SHORT, || l.accept_timeout(SHORT));
                assert_err!(r, Error::Timeout { .. }, "{}: accept_timeout", t.name);
            }
            Accepts::Once => {
                let mut c = l.try_accept().expect("the one datagram connection");
                assert_err!(
                    l.try_accept(),
                    Error::Unsupported { .. },
                    "{}: second accept",
                    t.name
                );
                assert_err!(
                    l.accept_timeout(SHORT),
                    Error::Unsupported { .. },
                    "{}: third accept",
                    t.name
                );
                assert_err!(
                    c.try_send(b"x"),
                    Error::NoPeer { .. },
                    "{}: try_send",
                    t.name
                );
                assert_err!(
                    c.send_timeout(b"x", SHORT),
                    Error::NoPeer { .. },
                    "{}: send",
                    t.name
                );
                assert_err!(c.try_recv(), Error::WouldBlock, "{}: try_recv", t.name);
            }
            Accepts::OnceOneWay => {
                let mut c = l.try_accept().expect("the one receiving connection");
                assert_err!(
                    l.try_accept(),
                    Error::Unsupported { .. },
                    "{}: second accept",
                    t.name
                );
                assert_err!(
                    l.accept_timeout(SHORT),
                    Error::Unsupported { .. },
                    "{}: third accept",
                    t.name
                );
                assert_err!(
                    c.try_send(b"x"),
                    Error::Unsupported { .. },
                    "{}: try_send on the receiving end",
                    t.name
                );
                assert_err!(c.try_recv(), Error::WouldBlock, "{}: try_recv", t.name);
                let r = bounded("recv_timeout", SHORT, || c.recv_timeout(SHORT));
                assert_err!(r, Error::Timeout { .. }, "{}: recv_timeout", t.name);
            }
            Accepts::NotBound => unreachable!(),
        }
    }

    /// The missing direction of a one-way end is `Unsupported`, not a hang or a crash.
    pub fn one_way_ends(t: &Transport) {
        match t.kind {
            Kind::Pipe => {}
            _ if !t.duplex => {
                let mut s = open(t, Flow::PeerSends, &["linger"]);
                assert_err!(
                    s.conn.send(b"x"),
                    Error::Unsupported { .. },
                    "{}: reader send",
                    t.name
                );
                assert_err!(
                    s.conn.try_send(b"x"),
                    Error::Unsupported { .. },
                    "{}: reader try_send",
                    t.name
                );
                assert_err!(
                    s.conn.send_timeout(b"x", SHORT),
                    Error::Unsupported { .. },
                    "{}: reader send_timeout",
                    t.name
                );
                // A second writer of our own, while the reader is open.
                let mut w = ipckit::connect_timeout(&s.url, LONG).expect("connect a writer");
                assert_err!(
                    w.recv(),
                    Error::Unsupported { .. },
                    "{}: writer recv",
                    t.name
                );
                assert_err!(
                    w.try_recv(),
                    Error::Unsupported { .. },
                    "{}: writer try_recv",
                    t.name
                );
                assert_err!(
                    w.recv_timeout(SHORT),
                    Error::Unsupported { .. },
                    "{}: writer recv_timeout",
                    t.name
                );
                drop(w);
                return s.finish(false);
            }
            _ => return eprintln!("{}: both directions work (see echo_round_trip)", t.name),
        }
        // pipe: from_child() and to_child() are one-way.
        let mut s = open(t, Flow::PeerSends, &[]);
        assert_err!(
            s.conn.send(b"x"),
            Error::Unsupported { .. },
            "from_child send"
        );
        s.finish(false);
        let mut s = open(t, Flow::TestSends, &["check:3"]);
        assert_err!(s.conn.recv(), Error::Unsupported { .. }, "to_child recv");
        assert_err!(
            s.conn.try_recv(),
            Error::Unsupported { .. },
            "to_child try_recv"
        );
        let r = s.conn.send_timeout(&pattern(0, 3), LONG);
        s.ok("send", r);
        s.finish(false);
    }

    /// A sender whose peer does not read eventually gets `WouldBlock` from `try_send` and
    /// `Timeout` from `send_timeout` (lossy transports may drop instead).
    pub fn send_would_block_and_timeout(t: &Transport) {
        if t.dead_receiver == DeadReceiver::Stores {
            return eprintln!(
                "{}: an unbounded log on disk: a send never waits for the consumer",
                t.name
            );
        }
        let mut s = open(t, Flow::TestSends, &["hold"]);
        let msg = vec![0x5a; (32 * 1024).min(t.max_payload)];
        let limit = if t.lossy { 200 } else { 8192 }; // 256 MiB: more than any buffer
        let mut blocked = false;
        for i in 0..limit {
            match s.conn.try_send(&msg) {
                Ok(()) => {}
                Err(Error::WouldBlock) => {
                    blocked = true;
                    break;
                }
                Err(e) => panic!("{}: try_send #{i}: {e:?}", t.name),
            }
        }
        assert!(blocked || t.lossy, "{}: try_send never blocked", t.name);
        if blocked {
            // The kernel may still make a little room (TCP window updates): each `Ok` means
            // some bytes went out; with nobody reading, the timeout must come soon.
            let mut timed_out = 0;
            for i in 0..200 {
                let r = if i % 2 == 0 {
                    bounded("send_timeout", SHORT, || s.conn.send_timeout(&msg, SHORT))
                } else {
                    let deadline = Instant::now() + SHORT;
                    bounded("send_deadline", SHORT, || {
                        s.conn.send_deadline(&msg, deadline)
                    })
                };
                match r {
                    Ok(()) => {}
                    Err(Error::Timeout { .. }) => {
                        timed_out += 1;
                        if timed_out == 2 {
                            break;
                        }
                    }
                    Err(e) => panic!("{}: send to a full connection: {e:?}", t.name),
                }
            }
            assert_eq!(
                timed_out, 2,
                "{}: sends to a full connection kept succeeding",
                t.name
            );
        }
        s.finish_killed();
    }

    /// The peer is SIGKILLed while sending a message larger than the kernel buffers: the
    /// receiver gets `Truncated` or `Disconnected` (stream), the whole message or nothing
    /// (datagrams), never a partial message, a hang or a panic.
    pub fn peer_killed_mid_send(t: &Transport) {
        let send = format!("send:{}", t.kill_size);
        let mut s = open(
            t,
            Flow::PeerSends,
            &["print:SENDING", &send, "print:SENT", "hold"],
        );
        s.peer.expect_line("SENDING");
        // Give it time to get into the send (any outcome below is checked, so a slow peer
        // only makes the case weaker, never wrong).
        std::thread::sleep(Duration::from_millis(300));
        s.peer.kill();
        let ending = drain_after_death(t, &mut s, t.kill_size);
        eprintln!("{}: after SIGKILL mid-send: {ending:?}", t.name);
        s.finish_killed();
    }

    /// The peer writes part of a frame (a send that timed out part-way) and aborts: a stream
    /// receiver gets exactly `Truncated`, then `Desynchronized`.
    pub fn peer_aborts_mid_frame(t: &Transport) {
        let partial = format!("partial:{}", t.kill_size);
        let steps = gated(t, Flow::PeerSends, &[&partial, "abort"]);
        let mut s = open(t, Flow::PeerSends, &steps);
        s.go();
        let result = s.peer.expect_line("partial");
        let status = s.peer.wait(LONG);
        assert!(!status.success(), "the peer aborted: {status}");
        let ending = drain_after_death(t, &mut s, t.kill_size);
        eprintln!(
            "{}: peer's partial send: {result}; then: {ending:?}",
            t.name
        );
        if t.is_stream() {
            assert_eq!(result, "Ok(())", "a partly written frame counts as sent");
            assert_eq!(ending, Ending::Truncated, "{}", t.name);
        }
        s.finish_killed();
    }

    /// The peer sends an empty message and exits at once: the empty message still arrives,
    /// then the end of the connection.
    pub fn empty_message_then_exit(t: &Transport) {
        let steps = gated(t, Flow::PeerSends, &["send:0"]);
        let mut s = open(t, Flow::PeerSends, &steps);
        s.go();
        s.peer.expect_success();
        let r = s.conn.recv_timeout(LONG);
        assert_eq!(s.ok("receive the empty message", r), b"");
        if t.recv_sees_peer_death {
            assert_err!(
                s.conn.recv_timeout(LONG),
                Error::Disconnected,
                "{}: after the peer exited",
                t.name
            );
        } else {
            assert_err!(
                s.conn.recv_timeout(SHORT),
                Error::Timeout { .. },
                "{}: after the peer exited",
                t.name
            );
        }
    }

    /// Sending to a peer that was killed: `Disconnected` once what the transport buffers is
    /// used up (at once for sockets and pipes; a shared-memory ring accepts messages until it
    /// is full); lossy transports may just drop them. A message queue outlives its receiver
    /// (it fills, then a send waits); a durable queue stores every message.
    pub fn send_to_dead_peer(t: &Transport) {
        let mut s = open(t, Flow::TestSends, &["hold"]);
        s.peer.kill();
        let msg = vec![0x33; (32 * 1024).min(t.max_payload)];
        let mut saw = None;
        let (count, timeout) = match t.dead_receiver {
            // 32 MiB at most: more than any kernel buffer or ring between the two.
            DeadReceiver::Disconnected => (1024, LONG),
            // The queue is bounded: the send that finds it full waits; do not wait long.
            DeadReceiver::FillsThenWaits => (1024, SHORT),
            // Every send is stored: a few MiB show it.
            DeadReceiver::Stores => (64, LONG),
        };
        for i in 0..count {
            match bounded("send", timeout, || s.conn.send_timeout(&msg, timeout)) {
                Ok(()) if i < 20 => std::thread::sleep(Duration::from_millis(20)),
                Ok(()) => {}
                Err(e) => {
                    saw = Some((i, e));
                    break;
                }
            }
        }
        match (t.dead_receiver, saw) {
            (DeadReceiver::Disconnected, Some((i, Error::Disconnected))) => {
                eprintln!("{}: Disconnected at send #{i} after the peer died", t.name)
            }
            (DeadReceiver::Disconnected, None) if t.lossy => {}
            (DeadReceiver::FillsThenWaits, Some((i, Error::Timeout { .. }))) => {
                assert_eq!(
                    i as u64,
                    ipckit::mq::DEFAULT_DEPTH,
                    "{}: the queue holds its depth",
                    t.name
                );
                eprintln!(
                    "{}: the queue kept {i} messages, then the send waited",
                    t.name
                )
            }
            (DeadReceiver::Stores, None) => {
                eprintln!("{}: every send was stored for a later consumer", t.name)
            }
            (_, other) => panic!("{}: sending to a dead peer: {other:?}", t.name),
        }
    }

    /// A peer connects, sends and exits before the test accepts: the connection is still
    /// accepted and its messages delivered, then the end of it (as for a socket's backlog).
    pub fn peer_exits_before_accept(t: &Transport) {
        if t.accepts == Accepts::NotBound {
            return eprintln!("{}: nothing to accept", t.name);
        }
        let dir = tempdir();
        let mut l = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
        let url = base_url(l.endpoint());
        let mut p = Peer::spawn(&["connect", &url, "send:3,4000"]);
        p.expect_success();
        let mut c = l
            .accept_timeout(LONG)
            .unwrap_or_else(|e| panic!("{}: accept after the peer exited: {e:?}", t.name));
        for (i, size) in [3, 4000].into_iter().enumerate() {
            let m = c
                .recv_timeout(LONG)
                .unwrap_or_else(|e| panic!("{}: message #{i} of the gone peer: {e:?}", t.name));
            assert_pattern(&m, i, size, t.name);
        }
        if t.recv_sees_peer_death {
            assert_err!(
                c.recv_timeout(LONG),
                Error::Disconnected,
                "{}: then",
                t.name
            );
        } else {
            assert_err!(
                c.recv_timeout(SHORT),
                Error::Timeout { .. },
                "{}: then",
                t.name
            );
        }
    }

    /// A length prefix larger than the maximum (garbage `0xFFFFFFFF`, or just over the
    /// limit) is refused before anything is allocated for it; the stream is then unusable.
    pub fn bad_length_prefix(t: &Transport) {
        if !t.is_stream() {
            // No length prefix to corrupt: bytes that look like one are just a message.
            let junk = "ffffffff6a756e6b";
            let mut s = open(t, Flow::PeerSends, &[&format!("send-hex:{junk}"), "linger"]);
            let r = s.conn.recv_timeout(LONG);
            assert_eq!(s.ok("receive", r), b"\xff\xff\xff\xffjunk");
            return s.finish(true);
        }
        let mut cases = vec![
            ("", u32::MAX as usize, DEFAULT_MAX_MESSAGE_SIZE),
            ("", DEFAULT_MAX_MESSAGE_SIZE + 1, DEFAULT_MAX_MESSAGE_SIZE),
        ];
        if t.kind != Kind::Pipe {
            cases.push(("?max_msg=1K", 1025, 1024));
        }
        for (query, announced, max) in cases {
            let header = format!("write-hex:{:08x}", (announced as u32).swap_bytes());
            let mut s = open_raw(t, query, &[&header, "write-junk:100"]);
            let mut buf = Vec::new();
            match bounded("recv", LONG, || s.conn.recv_into_timeout(&mut buf, LONG)) {
                Err(Error::IncomingTooLarge { size, max: m }) => {
                    assert_eq!(size, announced as u64, "{}: announced size", t.name);
                    assert_eq!(m, max, "{}: max", t.name);
                }
                other => panic!(
                    "{}: header {announced} with max {max}: {:?}; peer: {}",
                    t.name,
                    other.map(|()| buf.len()),
                    s.peer.stderr()
                ),
            }
            assert_eq!(
                buf.capacity(),
                0,
                "{}: bytes allocated for a refused frame",
                t.name
            );
            assert_err!(
                s.conn.recv_into_timeout(&mut buf, LONG),
                Error::Desynchronized,
                "{}: after a refused frame",
                t.name
            );
            assert_err!(
                s.conn.try_recv(),
                Error::Desynchronized,
                "{}: try_recv",
                t.name
            );
            assert_err!(
                s.conn.recv_timeout(LONG),
                Error::Desynchronized,
                "{}: recv_timeout",
                t.name
            );
            assert_eq!(buf.capacity(), 0, "{}: allocation after desync", t.name);
            s.finish_killed();
        }
    }

    /// `?max_msg=1K` is enforced on both sides: sending 1025 bytes is `MessageTooLarge`; a
    /// peer allowed 4K sending 2 KiB gets `IncomingTooLarge` at the receiver (a stream is then
    /// `Desynchronized`; a datagram transport just goes on with the next message). Where the
    /// receiver's maximum is the queue's (`shm+mpsc://`, `mq://`), the 4K sender is held to
    /// 1K itself.
    pub fn max_message_size_enforced(t: &Transport) {
        if t.kind == Kind::Pipe {
            // The parent's pipe ends have the default maximum; the child picks its own.
            let mut s = open_q(
                t,
                Flow::Both,
                "",
                "?max_msg=1K",
                &["report:2", "send-report:1025", "send-report:1024"],
            );
            // One message: the child may be gone before a second one could be written.
            let r = s.conn.send_timeout(&pattern(0, 2048), LONG);
            s.ok("send", r);
            assert_eq!(
                s.peer.line(LONG),
                "err IncomingTooLarge { size: 2048, max: 1024 }"
            );
            assert_eq!(s.peer.line(LONG), "err Desynchronized");
            assert_eq!(
                s.peer.line(LONG),
                "send err MessageTooLarge { size: 1025, max: 1024, transport: \"pipe\" }"
            );
            assert_eq!(s.peer.line(LONG), "send ok");
            let r = s.conn.recv_timeout(LONG);
            assert_pattern(&s.ok("receive", r), 0, 1024, t.name);
            return s.finish(false);
        }
        if t.max_msg == MaxMsg::Receivers {
            // The queue's maximum is the receiver's: a sender that asks for more is still held
            // to it, before anything is sent.
            let mut s = open_q(
                t,
                Flow::PeerSends,
                "?max_msg=1K",
                "?max_msg=4K",
                &["send-report:2048", "send-report:1025", "send-report:1024"],
            );
            assert_eq!(
                MessageReceiver::max_message_size(&s.conn),
                1024,
                "{}: the receiving end's own ?max_msg=1K",
                t.name
            );
            let transport = if t.kind == Kind::MqName { "mq" } else { "shm" };
            for size in [2048, 1025] {
                assert_eq!(
                    s.peer.line(LONG),
                    format!(
                        "send err MessageTooLarge {{ size: {size}, max: 1024, transport: \"{transport}\" }}"
                    ),
                    "{}: a sender allowed 4K",
                    t.name
                );
            }
            assert_eq!(s.peer.line(LONG), "send ok");
            let r = s.conn.recv_timeout(LONG);
            assert_pattern(&s.ok("receive", r), 0, 1024, t.name);
            return s.finish(false);
        }
        // On a stream nothing after the refused frame can be read: send just that one (the
        // test may close before a second one could be written).
        let send = if t.is_stream() {
            "send:2048"
        } else {
            "send:2048,64"
        };
        let mut s = open_q(
            t,
            Flow::PeerSends,
            "?max_msg=1K",
            "?max_msg=4K",
            &[send, "linger"],
        );
        assert_eq!(
            MessageReceiver::max_message_size(&s.conn),
            1024,
            "{}: the receiving end's own ?max_msg=1K",
            t.name
        );
        let mut buf = Vec::new();
        match s.conn.recv_into_timeout(&mut buf, LONG) {
            Err(Error::IncomingTooLarge {
                size: 2048,
                max: 1024,
            }) => {}
            other => panic!(
                "{}: 2 KiB to a 1K receiver: {:?}",
                t.name,
                other.map(|()| buf.len())
            ),
        }
        // A stream refuses the frame from its header alone; a datagram receive may size the
        // buffer to the maximum (1 KiB), never to the 2 KiB announced.
        let allowed = if t.is_stream() { 0 } else { 1024 };
        assert!(
            buf.capacity() <= allowed,
            "{}: {} bytes allocated for a refused message",
            t.name,
            buf.capacity()
        );
        match t.framing {
            Framing::Stream => assert_err!(
                s.conn.recv_into_timeout(&mut buf, LONG),
                Error::Desynchronized,
                "{}: after IncomingTooLarge",
                t.name
            ),
            Framing::Message => {
                let r = s.conn.recv_into_timeout(&mut buf, LONG);
                s.ok("the next message", r);
                assert_pattern(&buf, 1, 64, t.name);
            }
        }
        // The sending side.
        let url_1k = add_query(&s.url, "?max_msg=1K");
        let mut own_writer;
        let sender: &mut Connection = if s.can_send {
            &mut s.conn
        } else {
            own_writer = ipckit::connect_timeout(&url_1k, LONG).expect("a writer of our own");
            &mut own_writer
        };
        assert_eq!(MessageSender::max_message_size(sender), 1024);
        assert_err!(
            sender.send(&[0; 1025]),
            Error::MessageTooLarge {
                size: 1025,
                max: 1024,
                ..
            },
            "{}: sending 1025 bytes",
            t.name
        );
        sender
            .send_timeout(&[1; 1024], LONG)
            .expect("1024 bytes fit");
        // The peer's linger receives that (or sees that it cannot receive) and exits.
        s.finish(false);
    }

    /// The largest message the transport claims to carry goes through; one byte more is
    /// `MessageTooLarge` before anything is sent (UDP: 65,507).
    pub fn transport_size_limit(t: &Transport) {
        let max = match t.name {
            "unix_dgram" | "unix_seqpacket" => unix_packet_limit(),
            _ => t.max_payload,
        };
        let mut s = open(t, Flow::TestSends, &[&format!("check:{max}")]);
        assert_eq!(MessageSender::max_message_size(&s.conn), max);
        let too_big = vec![0u8; max + 1];
        assert_err!(
            s.conn.send(&too_big),
            Error::MessageTooLarge { size, max: m, .. } if size == max + 1 && m == max,
            "{}: one byte over the limit",
            t.name
        );
        drop(too_big);
        let r = s.conn.send_timeout(&pattern(0, max), LONG);
        s.ok(&format!("send {max} bytes (the maximum)"), r);
        s.peer.expect_line("checked");
        s.finish(false);
    }

    /// Several peers at once: each accept is its own connection (sockets), the next writer
    /// (FIFO), one connection that replies to the last sender (datagrams), or one receiving
    /// connection that takes from every sender (MPSC, message and durable queues).
    pub fn several_peers(t: &Transport) {
        let dir = tempdir();
        match t.accepts {
            Accepts::NotBound => eprintln!("{}: one pipe per child", t.name),
            Accepts::EachClient => {
                let mut l = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
                let url = base_url(l.endpoint());
                let mut peers: Vec<Peer> = (0..3)
                    .map(|i| {
                        let send = format!("send:{}", 100 + i);
                        Peer::spawn(&["connect", &url, &send, "echo"])
                    })
                    .collect();
                let mut conns: Vec<Connection> = (0..3)
                    .map(|_| l.accept_timeout(LONG).expect("accept"))
                    .collect();
                let mut seen = Vec::new();
                for c in &mut conns {
                    let m = c.recv_timeout(LONG).expect("first message");
                    let i = m.len() - 100;
                    assert_pattern(&m, 0, 100 + i, t.name);
                    seen.push(i);
                    c.send_timeout(&m, LONG).expect("send back");
                    assert_eq!(c.recv_timeout(LONG).expect("echo"), m);
                }
                seen.sort();
                assert_eq!(seen, [0, 1, 2], "each peer on its own connection");
                drop(conns);
                for p in &mut peers {
                    p.expect_success();
                }
            }
            Accepts::NextWriter => {
                let mut l = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
                let url = base_url(l.endpoint());
                for i in 0..2 {
                    let send = format!("send:{}", 10 + i);
                    let mut p = Peer::spawn(&["connect", &url, &send]);
                    let mut c = l.accept_timeout(LONG).expect("accept the next writer");
                    let m = c.recv_timeout(LONG).expect("message");
                    assert_pattern(&m, 0, 10 + i, t.name);
                    p.expect_success();
                    assert_err!(c.recv_timeout(LONG), Error::Disconnected, "writer {i} gone");
                }
            }
            Accepts::Once => {
                let mut l = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
                let url = base_url(l.endpoint());
                let mut c = l.accept_timeout(LONG).expect("accept");
                let mut peers = Vec::new();
                let mut order = Vec::new();
                for name in ["41", "42"] {
                    peers.push(Peer::spawn(&[
                        "connect",
                        &url,
                        &format!("send-hex:{name}"),
                        "linger",
                    ]));
                    // One at a time, so we know who sent last.
                    let m = c.recv_timeout(LONG).expect("hello");
                    order.push(m);
                }
                assert_eq!(order, [b"A".to_vec(), b"B".to_vec()]);
                c.send_timeout(b"to the last sender", LONG).expect("reply");
                peers[1].expect_success(); // B's linger got the reply
                std::thread::sleep(SHORT);
                assert!(peers[0].running(), "the reply went to the last sender only");
            }
            Accepts::OnceOneWay => {
                let mut l = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
                let url = base_url(l.endpoint());
                let mut c = l.accept_timeout(LONG).expect("accept");
                // All at once: one receiver takes from every sender.
                let mut peers: Vec<Peer> = (0..3)
                    .map(|i| Peer::spawn(&["connect", &url, &format!("send:{}", 100 + i)]))
                    .collect();
                let mut seen = Vec::new();
                for _ in 0..3 {
                    let m = c.recv_timeout(LONG).expect("a message of one of the peers");
                    let i = m.len().wrapping_sub(100);
                    assert!(i < 3, "{}: a message of {} bytes", t.name, m.len());
                    assert_pattern(&m, 0, 100 + i, t.name);
                    seen.push(i);
                }
                seen.sort();
                assert_eq!(seen, [0, 1, 2], "{}: every sender", t.name);
                for p in &mut peers {
                    p.expect_success();
                }
                assert_err!(
                    c.recv_timeout(SHORT),
                    Error::Timeout { .. },
                    "{}: after every sender exited",
                    t.name
                );
            }
        }
    }

    /// Connecting where nobody is: the typed error at once, and `connect_timeout` gives up in
    /// bounded time; no file is left behind.
    pub fn connect_to_missing(t: &Transport) {
        let dir = tempdir();
        match t.missing {
            Missing::NoInheritedPipe => {
                assert_err!(
                    ipckit::pipe::from_env(),
                    Error::NoInheritedPipe(_),
                    "from_env in a process without a pipe"
                );
                let mut p = Peer::spawn(&["from-env", "-"]);
                assert!(p.line(LONG).starts_with("err NoInheritedPipe"));
                p.expect_success();
            }
            Missing::NotFound | Missing::Refused => {
                let url = t.url_in(dir.path(), "nobody");
                let check = |r: ipckit::Result<Connection>, what: &str| match (t.missing, r) {
                    (Missing::NotFound, Err(Error::NotFound { path })) => {
                        assert_eq!(path, dir.path().join("nobody"))
                    }
                    (Missing::Refused, Err(Error::ConnectionRefused { .. })) => {}
                    (_, r) => panic!("{}: {what} to a missing endpoint: {r:?}", t.name),
                };
                let url = if t.kind == Kind::Inet {
                    format!("{}://127.0.0.1:{}", t.scheme, free_port())
                } else {
                    url
                };
                check(ipckit::connect(&url), "connect");
                let r = bounded("connect_timeout", SHORT, || {
                    ipckit::connect_timeout(&url, SHORT)
                });
                match r {
                    Err(Error::Timeout { .. }) => {}
                    r => check(r, "connect_timeout"),
                }
                check(
                    ipckit::connect_with(&url, Wait::Never),
                    "connect_with(Never)",
                );
                assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "files left");
                if t.kind == Kind::Fifo {
                    // The FIFO exists but nobody reads it (made by hand: a listener holds a
                    // read end from bind on).
                    let path = dir.path().join("nobody");
                    rustix::fs::mkfifoat(rustix::fs::CWD, &path, 0o600.into()).expect("mkfifo");
                    assert_err!(
                        ipckit::connect(&url),
                        Error::ConnectionRefused { .. },
                        "fifo without reader"
                    );
                    let r = bounded("connect_timeout", SHORT, || {
                        ipckit::connect_timeout(&url, SHORT)
                    });
                    assert_err!(
                        r,
                        Error::ConnectionRefused { .. } | Error::Timeout { .. },
                        "fifo without reader, with timeout"
                    );
                    // A listener opens its read end at bind: writers may connect at once.
                    let mut l = ipckit::bind(&url).expect("bind over an existing FIFO");
                    let mut w =
                        ipckit::connect_with(&url, Wait::Never).expect("connect before accept");
                    w.send_timeout(b"early", LONG).expect("send before accept");
                    let mut c = l.accept_timeout(LONG).expect("accept");
                    assert_eq!(c.recv_timeout(LONG).expect("recv"), b"early");
                }
            }
            Missing::Creates => {
                // A producer needs no consumer: it creates the queue, and what it sends waits
                // there for the first consumer of the group.
                let url = t.url_in(dir.path(), "nobody");
                let mut c = bounded("connect", SHORT, || ipckit::connect_timeout(&url, SHORT))
                    .expect("connect creates the queue");
                c.send_timeout(b"for later", LONG)
                    .expect("send with no consumer");
                drop(c);
                assert_eq!(dir_entries(dir.path()), ["nobody"], "{}: the queue", t.name);
                let mut l = ipckit::bind(&url).expect("bind");
                let mut r = l.accept_timeout(LONG).expect("accept");
                assert_eq!(r.recv_timeout(LONG).expect("recv"), b"for later");
            }
            Missing::Connects => {
                let url = format!("{}://127.0.0.1:{}", t.scheme, free_port_udp());
                let mut c = ipckit::connect(&url).expect("connectionless connect succeeds");
                c.send_timeout(b"anyone?", LONG)
                    .expect("the first send goes out");
                // ICMP port unreachable comes back as a refused connection on the next call.
                match bounded("recv", LONG, || c.recv_timeout(LONG)) {
                    Err(Error::Disconnected | Error::Timeout { .. }) => {}
                    other => panic!("{}: recv from nobody: {other:?}", t.name),
                }
            }
        }
    }

    /// Malformed URLs give the typed `UrlError`, from bind, connect and connect_timeout alike,
    /// and create nothing.
    pub fn bad_urls(t: &Transport) {
        let dir = tempdir();
        let s = t.scheme;
        let d = dir.path().display();
        let mut cases: Vec<(String, &str)> = vec![];
        match t.kind {
            Kind::Name => {
                let n = shm_name(dir.path(), "x");
                cases.push((format!("{s}://"), "MissingPath"));
                cases.push((format!("{s}:{n}"), "Malformed"));
                cases.push((format!("{s}://a/b"), "BadName"));
                cases.push((format!("{s}://{d}/x"), "BadName"));
                cases.push((format!("{s}://a~b"), "BadName"));
                cases.push((format!("{s}://.."), "BadName"));
                cases.push((format!("{s}://{}", "n".repeat(201)), "BadName"));
                cases.push((format!("{s}://{n}?bogus=1"), "UnknownParameter"));
                cases.push((format!("{s}://{n}?max_msg=0"), "BadParameter"));
                cases.push((format!("{s}://{n}?capacity=3000"), "BadParameter"));
                cases.push((format!("{s}://{n}?wait=sometimes"), "BadParameter"));
                cases.push((format!("{s}://{n}?mode=999"), "BadParameter"));
            }
            Kind::MappedFile | Kind::QueueDir | Kind::MqName => {
                cases.push((format!("{s}://"), "MissingPath"));
                cases.push((format!("{s}:{d}/x"), "Malformed"));
                cases.push((format!("{s}://{d}/x?mode=999"), "BadParameter"));
                cases.push((format!("{s}://{d}/x?bogus=1"), "UnknownParameter"));
                cases.push((format!("{s}://{d}/x?max_msg=0"), "BadParameter"));
                cases.push((format!("{s}://{d}/x?max_msg=8G"), "BadParameter"));
                match t.kind {
                    Kind::MappedFile => {
                        cases.push((format!("{s}://{d}/x?capacity=3000"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?wait=sometimes"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?depth=3"), "UnknownParameter"));
                    }
                    Kind::QueueDir => {
                        cases.push((format!("{s}://{d}/x?group=.hidden"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?group=a/b"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?durability=maybe"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?capacity=4M"), "UnknownParameter"));
                    }
                    _ => {
                        cases.push((format!("{s}://{d}/x?depth=0"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?depth=ten"), "BadParameter"));
                        cases.push((format!("{s}://{d}/x?spin_us=5"), "UnknownParameter"));
                        cases.push((format!("{s}://{d}/x?capacity=4M"), "UnknownParameter"));
                    }
                }
            }
            Kind::Pipe => {
                cases.push(("pipe://somewhere".into(), "Malformed"));
                cases.push(("pipe:?mode=0600".into(), "UnknownParameter"));
                cases.push(("pipe:?max_msg=0".into(), "BadParameter"));
                cases.push(("pipe:?max_msg=1K&bogus=1".into(), "UnknownParameter"));
            }
            Kind::Fifo | Kind::UnixSocket => {
                cases.push((format!("{s}://"), "MissingPath"));
                cases.push((format!("{s}:{d}/x"), "Malformed"));
                cases.push((format!("{s}://{d}/x?mode=999"), "BadParameter"));
                cases.push((format!("{s}://{d}/x?mode=rw"), "BadParameter"));
                cases.push((format!("{s}://{d}/x?bogus=1"), "UnknownParameter"));
                cases.push((format!("{s}://{d}/x?max_msg=0"), "BadParameter"));
                cases.push((format!("{s}://{d}/x?max_msg=lots"), "BadParameter"));
                cases.push((format!("{s}://{d}/x?max_msg=8G"), "BadParameter"));
                if t.kind == Kind::UnixSocket {
                    cases.push((format!("{s}:///{}", "a".repeat(107)), "PathTooLong"));
                }
            }
            Kind::Inet => {
                cases.push((format!("{s}://127.0.0.1"), "MissingPort"));
                cases.push((format!("{s}://127.0.0.1:"), "MissingPort"));
                cases.push((format!("{s}://:7000"), "MissingHost"));
                cases.push((format!("{s}://127.0.0.1:65536"), "BadPort"));
                cases.push((format!("{s}://127.0.0.1:http"), "BadPort"));
                cases.push((format!("{s}://127.0.0.1:7000/path"), "Malformed"));
                cases.push((format!("{s}://[::1:7000"), "Malformed"));
                cases.push((format!("{s}:127.0.0.1:7000"), "Malformed"));
                cases.push((
                    format!("{s}://127.0.0.1:7000?mode=0600"),
                    "UnknownParameter",
                ));
                cases.push((format!("{s}://127.0.0.1:7000?max_msg=0"), "BadParameter"));
            }
        }
        for (url, variant) in &cases {
            let results: [(&str, ipckit::Result<()>); 3] = [
                ("bind", ipckit::bind(url).map(drop)),
                ("connect", ipckit::connect(url).map(drop)),
                (
                    "connect_timeout",
                    ipckit::connect_timeout(url, SHORT).map(drop),
                ),
            ];
            for (what, r) in results {
                match r {
                    Err(Error::Url(e)) => {
                        let shown = format!("{e:?}");
                        assert!(
                            shown.starts_with(variant),
                            "{what}({url:?}): got {shown}, want {variant}"
                        );
                        assert!(!e.to_string().is_empty());
                    }
                    other => panic!("{what}({url:?}): want Url({variant}), got {other:?}"),
                }
            }
        }
        if t.kind == Kind::MqName {
            // A well-formed URL, but not a queue name (`/` then no other `/`): the typed error
            // from the queue's side, and nothing is created.
            for name in [format!("{d}/x"), "a/b".to_owned(), "x".repeat(300)] {
                let url = format!("{s}:///{name}");
                let results: [(&str, ipckit::Result<()>); 3] = [
                    ("bind", ipckit::bind(&url).map(drop)),
                    ("connect", ipckit::connect(&url).map(drop)),
                    (
                        "connect_timeout",
                        ipckit::connect_timeout(&url, SHORT).map(drop),
                    ),
                ];
                for (what, r) in results {
                    assert_err!(r, Error::InvalidName { .. }, "{what}({url:?})");
                }
            }
        }
        assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "files created");
    }

    /// Files ipckit creates are 0600 by default, and `?mode=` is honoured (whatever the umask).
    pub fn file_modes(t: &Transport) {
        match t.kind {
            Kind::MqName => return eprintln!("{}: {}", t.name, t.why_no_file()),
            Kind::QueueDir => return queue_file_modes(t),
            _ if !t.has_file() => return eprintln!("{}: creates no file", t.name),
            _ => {}
        }
        let dir = tempdir();
        let default = t.url_in(dir.path(), "default");
        let custom = t.url_in(dir.path(), "custom");
        let l1 = ipckit::bind(&default).expect("bind");
        let l2 = ipckit::bind(format!("{custom}?mode=0640")).expect("bind with mode");
        let file = |name| t.object_file(dir.path(), name).unwrap();
        assert_eq!(mode_of(&file("default")), 0o600, "{}: default", t.name);
        assert_eq!(mode_of(&file("custom")), 0o640, "{}: ?mode=0640", t.name);
        if t.accepts == Accepts::Once {
            // A datagram client gets an automatic address for replies: no file of its own.
            let c = ipckit::connect_timeout(&default, LONG).expect("connect");
            let own: Vec<String> = dir_entries(dir.path())
                .into_iter()
                .filter(|n| n != "default" && n != "custom")
                .collect();
            assert_eq!(own, Vec::<String>::new(), "no client socket file");
            drop(c);
        }
        drop((l1, l2));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "files left");
    }

    /// `queue://`: every file of the queue directory is 0600 by default, 0640 with
    /// `?mode=0640`; directories get search permission to match.
    fn queue_file_modes(t: &Transport) {
        let dir = tempdir();
        for (name, q, file_mode, dir_mode) in [
            ("default", "", 0o600, 0o700),
            ("custom", "?mode=0640", 0o640, 0o750),
        ] {
            let url = add_query(&t.url_in(dir.path(), name), q);
            let mut p = ipckit::connect_timeout(&url, LONG).expect("connect");
            p.send_timeout(b"x", LONG).expect("send");
            let mut l = ipckit::bind(&url).expect("bind");
            let mut c = l.accept_timeout(LONG).expect("accept");
            assert_eq!(c.recv_timeout(LONG).expect("recv"), b"x");
            let mut todo = vec![dir.path().join(name)];
            let mut files = 0;
            while let Some(path) = todo.pop() {
                let meta = std::fs::symlink_metadata(&path).expect("stat");
                if meta.is_dir() {
                    assert_eq!(mode_of(&path), dir_mode, "{}: {}", t.name, path.display());
                    todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                } else {
                    files += 1;
                    assert_eq!(mode_of(&path), file_mode, "{}: {}", t.name, path.display());
                }
            }
            assert!(files >= 3, "{}: segment, control file, group", t.name);
        }
    }

    /// Binding where a regular file or a directory is: `WrongFileType`, and it is untouched.
    pub fn wrong_file_type(t: &Transport) {
        if t.kind == Kind::MappedFile {
            // A file that is not ours is never touched: binding over it is refused as over a
            // live listener (its lock cannot be checked: it is no rendezvous); connecting to
            // it finds no segment header.
            let dir = tempdir();
            let file = dir.path().join("precious");
            std::fs::write(&file, b"precious data").unwrap();
            let sub = dir.path().join("subdir");
            std::fs::create_dir(&sub).unwrap();
            std::fs::write(sub.join("inside"), b"x").unwrap();
            for (name, found) in [("precious", "regular"), ("subdir", "directory")] {
                assert_err!(
                    ipckit::bind(t.url_in(dir.path(), name)),
                    Error::AddressInUse { .. },
                    "{}: bind over a {found}",
                    t.name
                );
            }
            assert_err!(
                ipckit::connect(t.url_in(dir.path(), "precious")),
                Error::NotReady { .. } | Error::Incompatible { .. },
                "{}: connect to a regular file",
                t.name
            );
            assert_eq!(std::fs::read(&file).unwrap(), b"precious data");
            assert!(std::fs::metadata(&file).unwrap().is_file());
            assert_eq!(std::fs::read(sub.join("inside")).unwrap(), b"x");
            assert_eq!(dir_entries(dir.path()), ["precious", "subdir"]);
            return;
        }
        if !t.has_path() {
            return eprintln!("{}: no FIFO or socket path", t.name);
        }
        let dir = tempdir();
        let file = dir.path().join("precious");
        std::fs::write(&file, b"precious data").unwrap();
        let sub = dir.path().join("subdir");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("inside"), b"x").unwrap();
        for (name, found) in [("precious", "regular"), ("subdir", "directory")] {
            let url = t.url_in(dir.path(), name);
            match ipckit::bind(&url) {
                Err(Error::WrongFileType { path, .. }) => assert_eq!(path, dir.path().join(name)),
                other => panic!("{}: bind over a {found}: {other:?}", t.name),
            }
        }
        match (t.kind, ipckit::connect(t.url_in(dir.path(), "precious"))) {
            (Kind::Fifo, Err(Error::WrongFileType { .. })) => {}
            (Kind::UnixSocket, Err(Error::ConnectionRefused { .. })) => {}
            (_, other) => panic!("{}: connect to a regular file: {other:?}", t.name),
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"precious data");
        assert!(std::fs::metadata(&file).unwrap().is_file());
        assert_eq!(std::fs::read(sub.join("inside")).unwrap(), b"x");
        assert_eq!(dir_entries(dir.path()), ["precious", "subdir"]);
    }

    /// Connecting to a directory: the typed error (`WrongFileType` for a FIFO, which is
    /// documented to refuse anything that is not a FIFO; `ConnectionRefused` for sockets).
    pub fn connect_to_directory(t: &Transport) {
        if t.kind == Kind::MappedFile {
            let dir = tempdir();
            std::fs::create_dir(dir.path().join("subdir")).unwrap();
            match ipckit::connect(t.url_in(dir.path(), "subdir")) {
                Err(Error::WrongFileType { found, .. }) => assert_eq!(found, "directory"),
                other => panic!("{}: connect to a directory: {other:?}", t.name),
            }
            assert_eq!(dir_entries(dir.path()), ["subdir"]);
            return;
        }
        if !t.has_path() {
            return eprintln!("{}: no FIFO or socket path", t.name);
        }
        let dir = tempdir();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        match (t.kind, ipckit::connect(t.url_in(dir.path(), "subdir"))) {
            (Kind::Fifo, Err(Error::WrongFileType { found, .. })) => {
                assert_eq!(found, "directory")
            }
            (Kind::UnixSocket, Err(Error::ConnectionRefused { .. })) => {}
            (_, other) => panic!("{}: connect to a directory: {other:?}", t.name),
        }
        assert_eq!(dir_entries(dir.path()), ["subdir"]);
    }

    /// A `bind` refused with `AddressInUse` leaves the live listener alone: its next accept
    /// finds no connection it did not get from a real client.
    pub fn failed_bind_leaves_live_endpoint_alone(t: &Transport) {
        if matches!(t.kind, Kind::Pipe | Kind::Fifo | Kind::MqName) {
            // mq://: a second bind opens the same queue, a second receiver.
            return eprintln!("{}: not exclusive", t.name);
        }
        let dir = tempdir();
        let mut live = ipckit::bind(t.url_in(dir.path(), "ep")).expect("bind");
        let url = base_url(live.endpoint());
        assert_err!(
            ipckit::bind(&url),
            Error::AddressInUse { .. },
            "{}: second bind",
            t.name
        );
        match t.accepts {
            Accepts::Once | Accepts::OnceOneWay => {
                let mut c = live.try_accept().expect("the datagram connection");
                assert_err!(
                    c.try_recv(),
                    Error::WouldBlock,
                    "{}: stray datagram",
                    t.name
                );
            }
            _ => match live.try_accept() {
                Err(Error::WouldBlock) => {}
                Ok(mut c) => panic!(
                    "{}: accept returned a connection nobody made (it says {:?})",
                    t.name,
                    c.recv_timeout(SHORT).map(|m| m.len())
                ),
                Err(e) => panic!("{}: try_accept: {e:?}", t.name),
            },
        }
    }

    /// A live endpoint is not taken over (`AddressInUse`); one left by a killed process is
    /// replaced; a listener removes the file it created when dropped.
    pub fn stale_and_live_endpoint(t: &Transport) {
        if !t.has_file() {
            return eprintln!("{}: {}", t.name, t.why_no_file());
        }
        let dir = tempdir();
        let url = t.url_in(dir.path(), "ep");
        let path = t.object_file(dir.path(), "ep").unwrap();
        let mut owner = Peer::spawn(&["listen", &url, "hold"]);
        owner.expect_line("READY");
        match (t.kind, ipckit::bind(&url)) {
            (Kind::UnixSocket | Kind::Name | Kind::MappedFile, Err(Error::AddressInUse { .. })) => {
            }
            // FIFOs are not exclusive: a second reader may open an existing FIFO.
            (Kind::Fifo, Ok(_)) => {}
            (_, other) => panic!("{}: bind over a live endpoint: {other:?}", t.name),
        }
        owner.kill(); // SIGKILL: no destructor runs, the file stays
        assert!(path.exists(), "{}: the killed owner's file", t.name);
        let mut l = ipckit::bind(&url).expect("bind over a stale file");
        // The peer stays until killed: see `peer_exits_before_accept` for one that does not.
        let mut p = Peer::spawn(&["connect", &url, "hello", "hold"]);
        let mut c = l.accept_timeout(LONG).expect("accept");
        assert_eq!(c.recv_timeout(LONG).expect("hello"), b"hello");
        p.kill();
        drop(c);
        drop(l);
        // Sockets: the stale file was replaced by ours, which goes with the listener. FIFO: the
        // existing one was reused, and a listener removes only what it created.
        assert_eq!(
            path.exists(),
            t.kind == Kind::Fifo,
            "{}: file after drop",
            t.name
        );
    }

    /// Dropping the listener removes its file at once (datagram: once the connection that
    /// owns the socket is dropped too); accepted connections keep working.
    pub fn listener_drop_removes_file(t: &Transport) {
        if !t.has_file() {
            return eprintln!("{}: {}", t.name, t.why_no_file());
        }
        let mut s = open(t, Flow::PeerSends, &["send:10", "linger"]);
        let path = t.object_file(s.dir.path(), "ep").unwrap();
        assert!(path.exists());
        drop(s.listener.take());
        if matches!(t.accepts, Accepts::Once | Accepts::OnceOneWay) {
            assert!(
                path.exists(),
                "{}: the connection still uses the socket",
                t.name
            );
        } else {
            assert!(
                !path.exists(),
                "{}: file after dropping the listener",
                t.name
            );
        }
        let r = s.conn.recv_timeout(LONG);
        assert_pattern(
            &s.ok("receive after the listener is gone", r),
            0,
            10,
            t.name,
        );
        s.finish(true);
    }

    /// No descriptor leaks: the count is the same before and after each scenario (run here
    /// one after the other, with every other test of this binary held off).
    pub fn no_fd_leaks(t: &Transport) {
        let scenarios: &[(&str, CaseFn)] = &[
            ("sizes_peer_to_test", sizes_peer_to_test),
            ("sizes_test_to_peer", sizes_test_to_peer),
            ("echo_round_trip", echo_round_trip),
            ("peer_binds_test_connects", peer_binds_test_connects),
            ("recv_would_block_and_timeout", recv_would_block_and_timeout),
            (
                "accept_would_block_and_timeout",
                accept_would_block_and_timeout,
            ),
            ("peer_killed_mid_send", peer_killed_mid_send),
            ("peer_aborts_mid_frame", peer_aborts_mid_frame),
            ("send_to_dead_peer", send_to_dead_peer),
            ("peer_exits_before_accept", peer_exits_before_accept),
            ("bad_length_prefix", bad_length_prefix),
            ("max_message_size_enforced", max_message_size_enforced),
            ("connect_to_missing", connect_to_missing),
            ("bad_urls", bad_urls),
            ("wrong_file_type", wrong_file_type),
            ("connect_to_directory", connect_to_directory),
            (
                "failed_bind_leaves_live_endpoint_alone",
                failed_bind_leaves_live_endpoint_alone,
            ),
            ("stale_and_live_endpoint", stale_and_live_endpoint),
            ("one_way_ends", one_way_ends),
        ];
        // Warm up lazily opened process-wide descriptors, if any, and this thread's: a FIFO
        // `accept` that has to wait keeps one inotify instance per thread (`sys::fifo`), which
        // the first scenario makes only if its peer is slow to connect (seen under load,
        // `scripts/stress-tests.sh`: "sizes_peer_to_test: 5 -> 6"). An accept that times
        // out always waits.
        sizes_peer_to_test(t);
        accept_would_block_and_timeout(t);
        let mut leaks = Vec::new();
        for (name, f) in scenarios {
            if KNOWN_BUGS.contains(&(t.name, *name)) {
                // Its own (ignored) test shows the bug; here it would only cost time-outs.
                continue;
            }
            let before = fd_count();
            // A scenario that fails (a known bug, reported by its own test) still unwinds and
            // drops what it opened: only the count matters here.
            let outcome = std::panic::catch_unwind(|| f(t));
            let after = fd_count();
            if outcome.is_err() {
                eprintln!(
                    "{}: {name} failed (see its own test); counting anyway",
                    t.name
                );
            }
            if before != after {
                leaks.push(format!("{name}: {before} -> {after}"));
            }
        }
        assert!(
            leaks.is_empty(),
            "{}: descriptors leaked: {leaks:?}",
            t.name
        );
    }
}

/// A TCP port nobody listens on (just released by us).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// A UDP port nobody is bound to (just released by us).
fn free_port_udp() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().unwrap().port()
}

/// The lock each test takes: exclusive for the descriptor-counting case.
enum Lock {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

fn lock_for(case: &str) -> Lock {
    if case == "no_fd_leaks" {
        Lock::Exclusive(exclusive())
    } else {
        Lock::Shared(shared())
    }
}

// ---------------------------------------------------------------------------------------------
// Tests that are not per transport
// ---------------------------------------------------------------------------------------------

/// URLs no transport accepts.
#[test]
fn unknown_and_malformed_urls() {
    let _lock = shared();
    for (url, variant) in [
        ("carrier-pigeon://coop", "UnknownScheme"),
        ("smoke-signal:///hill", "UnknownScheme"),
        ("no scheme here", "Malformed"),
        ("", "Malformed"),
        ("://x", "Malformed"),
    ] {
        for r in [
            ipckit::bind(url).map(drop),
            ipckit::connect(url).map(drop),
            ipckit::connect_timeout(url, SHORT).map(drop),
        ] {
            match r {
                Err(Error::Url(e)) => {
                    assert!(format!("{e:?}").starts_with(variant), "{url:?}: {e:?}");
                    if let UrlError::UnknownScheme { scheme } = &e {
                        assert!(url.starts_with(scheme.as_str()));
                    }
                }
                other => panic!("{url:?}: {other:?}"),
            }
        }
    }
}

/// Every transport in the table has its module in the suite, and the other way round.
#[test]
fn table_and_suite_agree() {
    let _lock = shared();
    let mut names: Vec<&str> = TRANSPORTS.iter().map(|t| t.name).collect();
    names.sort();
    let mut suite: Vec<&str> = SUITE_TRANSPORTS.to_vec();
    suite.sort();
    assert_eq!(names, suite);
    for t in TRANSPORTS {
        let url = t.url_in(Path::new("/tmp"), "x");
        let ep: Endpoint = url.parse().expect("table URL parses");
        assert_eq!(ep.scheme().as_str(), t.scheme);
        assert_eq!(ep.scheme().is_lossy(), t.lossy);
    }
}

// ---------------------------------------------------------------------------------------------
// The suite: every case × every transport
// ---------------------------------------------------------------------------------------------

/// `(transport, case)` pairs that fail because of a library bug: each has an `#[ignore]` arm
/// with the reason in `conformance_test!` below (keep both in sync; `known_bugs_are_real`
/// checks the names). `no_fd_leaks` skips them.
const KNOWN_BUGS: &[(&str, &str)] = &[];

#[test]
fn known_bugs_are_real() {
    let _lock = shared();
    for (t, case) in KNOWN_BUGS {
        assert!(SUITE_TRANSPORTS.contains(t), "{t}");
        assert!(SUITE_CASES.contains(case), "{case}");
    }
}

/// One test: `(transport, case)`. Known library bugs get an `#[ignore]` arm of their own
/// (listed first), so the failing test stays in the suite.
macro_rules! conformance_test {
    (@emit $(#[$m:meta])* $t:ident, $case:ident) => {
        #[test]
        $(#[$m])*
        fn $case() {
            let _lock = super::lock_for(stringify!($case));
            super::cases::$case(super::transport(stringify!($t)));
        }
    };
    ($t:ident, $case:ident) => {
        conformance_test!(@emit $t, $case);
    };
}

macro_rules! conformance_suite {
    (transports: [$($t:ident),* $(,)?], cases: $cases:tt) => {
        const SUITE_TRANSPORTS: &[&str] = &[$(stringify!($t)),*];
        conformance_suite!(@names $cases);
        $( conformance_suite!(@transport $t $cases); )*
    };
    (@names [$($case:ident),* $(,)?]) => {
        const SUITE_CASES: &[&str] = &[$(stringify!($case)),*];
    };
    (@transport $t:ident [$($case:ident),* $(,)?]) => {
        mod $t {
            $( conformance_test!($t, $case); )*
        }
    };
}

conformance_suite! {
    transports: [fifo, unix, unix_dgram, unix_seqpacket, tcp, udp, shm, pipe, mmap, shm_mpsc, mq, queue],
    cases: [
        sizes_peer_to_test,
        sizes_test_to_peer,
        echo_round_trip,
        peer_binds_test_connects,
        typed_round_trip,
        recv_would_block_and_timeout,
        accept_would_block_and_timeout,
        one_way_ends,
        send_would_block_and_timeout,
        peer_killed_mid_send,
        peer_aborts_mid_frame,
        empty_message_then_exit,
        send_to_dead_peer,
        peer_exits_before_accept,
        bad_length_prefix,
        max_message_size_enforced,
        transport_size_limit,
        several_peers,
        connect_to_missing,
        bad_urls,
        file_modes,
        wrong_file_type,
        connect_to_directory,
        failed_bind_leaves_live_endpoint_alone,
        stale_and_live_endpoint,
        listener_drop_removes_file,
        no_fd_leaks,
    ]
}
