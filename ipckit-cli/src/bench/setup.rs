//! Opening the benchmark's channel on both sides.
//!
//! The parent prepares its side before starting the peer (binding the socket, creating its
//! FIFO, making the pipes), starts the peer with the arguments that say where to attach, and
//! waits for the peer's READY message, every wait bounded by [`ATTACH_TIMEOUT`].
//!
//! FIFOs, POSIX message queues and durable queues are one-way, so those mechanisms use two: the parent binds (reads) `to-parent`
//! and connects (writes) to `to-child`; the peer does the opposite. To avoid a deadlock the
//! peer connects to `to-parent` first (the parent is already reading it), sends READY there,
//! and only then opens `to-child` for reading, which the parent connects to once READY came.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ipckit::pipe::ChildEnd;
use ipckit::{Connection, Endpoint, Listener, MessageReceiver, MessageSender, Wait};

use super::channel::Channel;
use super::mechanism::Mechanism;
use super::wire::{self, CONTROL_LEN, READY};

/// Longest wait for either side to attach.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// The parent's side of the channel, before the peer has attached.
enum ParentSide {
    Pipe(Connection),
    Fifo {
        inbound: Listener,
        outbound: Endpoint,
    },
    Socket {
        listener: Listener,
        datagram: bool,
    },
}

/// The parent's side, ready for the peer to be started.
pub struct Prepared {
    side: ParentSide,
    /// The pipe ends the peer inherits (pipe only).
    child_end: Option<ChildEnd>,
    /// Tells the peer where to attach.
    peer_args: Vec<String>,
    /// The endpoint the parent waits on, to nudge if the peer dies.
    nudge: Option<Endpoint>,
}

/// An endpoint for `url`, sized for the benchmark's messages (as the C baseline sizes its
/// socket buffers for one message).
fn endpoint(url: String, size: usize) -> ipckit::Result<Endpoint> {
    Ok(url
        .parse::<Endpoint>()?
        .with_max_message_size(size.max(CONTROL_LEN)))
}

fn path_url(scheme: &str, dir: &Path, name: &str, size: usize) -> ipckit::Result<Endpoint> {
    endpoint(format!("{scheme}://{}", dir.join(name).display()), size)
}

/// Prepares the parent's side for `mech` and messages of `size` bytes; named objects go in
/// `dir`.
pub fn prepare(mech: Mechanism, size: usize, dir: &Path) -> ipckit::Result<Prepared> {
    let scheme = mech.scheme().as_str();
    match mech {
        Mechanism::RpcUnix
        | Mechanism::RpcShm
        | Mechanism::Signal
        | Mechanism::BusLocal
        | Mechanism::BusFanout2
        | Mechanism::BusFanout4
        | Mechanism::BusFanout8 => Err(ipckit::Error::Unsupported {
            op: "the message ping-pong",
            what: "a pattern mechanism (measured by bench/patterns.rs)",
        }),
        Mechanism::Memcpy => Err(ipckit::Error::Unsupported {
            op: "the message ping-pong",
            what: "memcpy, which has no peer (measured by bench/case.rs)",
        }),
        Mechanism::Line => Err(ipckit::Error::Unsupported {
            op: "the message ping-pong",
            what: "the cache-line floor, which has no peer process (measured by bench/line.rs)",
        }),
        Mechanism::Pipe => {
            let (conn, child_end) = ipckit::pipe::duplex()?;
            Ok(Prepared {
                side: ParentSide::Pipe(conn),
                child_end: Some(child_end),
                peer_args: Vec::new(),
                nudge: None,
            })
        }
        Mechanism::Fifo | Mechanism::Mq | Mechanism::QueueOs | Mechanism::QueueFsync => {
            let (to_parent, to_child) = one_way_pair(mech, dir, size)?;
            let inbound = ipckit::bind(&to_parent)?;
            Ok(Prepared {
                peer_args: vec![
                    "--bind".into(),
                    to_child.to_string(),
                    "--connect".into(),
                    to_parent.to_string(),
                ],
                nudge: Some(to_parent),
                side: ParentSide::Fifo {
                    inbound,
                    outbound: to_child,
                },
                child_end: None,
            })
        }
        Mechanism::Unix | Mechanism::UnixDgram | Mechanism::UnixSeqpacket => {
            socket(mech, path_url(scheme, dir, "bench.sock", size)?)
        }
        Mechanism::Tcp | Mechanism::Udp => {
            socket(mech, endpoint(format!("{scheme}://127.0.0.1:0"), size)?)
        }
        Mechanism::Shm
        | Mechanism::ShmSpin
        | Mechanism::ShmBlock
        | Mechanism::ShmRef
        | Mechanism::ShmLoan
        | Mechanism::Sem => {
            let wait = mech.shm_wait().unwrap_or("adaptive");
            let url = format!("shm://{}-ring?wait={wait}", unique_tag(dir));
            socket(mech, endpoint(url, size)?)
        }
        Mechanism::Mmap => {
            let wait = mech.shm_wait().unwrap_or("adaptive");
            let url = format!("mmap://{}?wait={wait}", dir.join("ring").display());
            socket(mech, endpoint(url, size)?)
        }
    }
}

/// A name no other run uses: the run's temporary directory's own name.
fn unique_tag(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("ipckit-bench-{}", std::process::id()))
}

/// The two one-way channels of a FIFO, message-queue or durable-queue pair: (to the parent,
/// to the child).
fn one_way_pair(mech: Mechanism, dir: &Path, size: usize) -> ipckit::Result<(Endpoint, Endpoint)> {
    let scheme = mech.scheme().as_str();
    match mech {
        Mechanism::Mq => {
            let tag = unique_tag(dir);
            Ok((
                endpoint(format!("mq:///{tag}-to-parent?depth=10"), size)?,
                endpoint(format!("mq:///{tag}-to-child?depth=10"), size)?,
            ))
        }
        Mechanism::QueueOs | Mechanism::QueueFsync => {
            let durability = mech.queue_durability().unwrap_or("fsync");
            let url = |name: &str| {
                endpoint(
                    format!(
                        "queue://{}?durability={durability}&group=bench",
                        dir.join(name).display()
                    ),
                    size,
                )
            };
            Ok((url("to-parent")?, url("to-child")?))
        }
        _ => Ok((
            path_url(scheme, dir, "to-parent.fifo", size)?,
            path_url(scheme, dir, "to-child.fifo", size)?,
        )),
    }
}

fn socket(mech: Mechanism, url: Endpoint) -> ipckit::Result<Prepared> {
    let datagram = matches!(mech, Mechanism::UnixDgram | Mechanism::Udp);
    // The bound datagram socket talks to the peer only (`peer=first`: connected to it once
    // READY comes), as the C yardstick's connected pair does; with the default `peer=any`
    // each send would name the peer's address (for UDP, a route lookup per send: about 10 %
    // of 64-byte streaming measured).
    let url = if datagram {
        url.with_peer(ipckit::PeerPolicy::First)
    } else {
        url
    };
    let listener = ipckit::bind(&url)?;
    let bound = listener.endpoint().clone();
    Ok(Prepared {
        side: ParentSide::Socket { listener, datagram },
        child_end: None,
        peer_args: vec!["--connect".into(), bound.to_string()],
        nudge: Some(bound),
    })
}

/// The parent's side with the peer started, waiting for it to attach.
pub struct Started {
    side: ParentSide,
}

impl Prepared {
    /// Starts the peer: `cmd` plus the arguments that tell it where to attach. Returns the
    /// child, and the endpoint to nudge if it dies.
    pub fn start(self, mut cmd: Command) -> ipckit::Result<(Started, Child, Option<Endpoint>)> {
        cmd.args(&self.peer_args);
        let child = match self.child_end {
            Some(end) => end.spawn(&mut cmd)?,
            None => cmd.spawn().map_err(|source| ipckit::Error::Io {
                op: "spawn",
                source,
            })?,
        };
        Ok((Started { side: self.side }, child, self.nudge))
    }
}

impl Started {
    /// Completes the parent's side and waits for the peer's READY, until `deadline`.
    pub fn attach(self, deadline: Instant) -> Result<Channel, String> {
        let wait = Wait::Until(deadline);
        let mut channel = match self.side {
            ParentSide::Pipe(conn) => Channel::duplex(conn),
            ParentSide::Socket {
                mut listener,
                datagram,
            } => {
                // A bound datagram socket is one connection, handed out at once; it learns
                // where the peer is from the READY message.
                let conn = if datagram {
                    listener.accept()
                } else {
                    listener.accept_with(wait)
                };
                Channel::duplex(conn.map_err(|e| format!("accept: {e}"))?)
            }
            ParentSide::Fifo {
                mut inbound,
                outbound,
            } => {
                let rx = inbound
                    .accept_with(wait)
                    .map_err(|e| format!("accept on the inbound FIFO: {e}"))?;
                let tx = ipckit::connect_with(&outbound, wait)
                    .map_err(|e| format!("connect to the outbound FIFO: {e}"))?;
                Channel::split(rx, tx)
            }
        };
        let mut msg = Vec::with_capacity(CONTROL_LEN);
        channel
            .recv_into_with(&mut msg, wait)
            .map_err(|e| format!("waiting for the peer to be ready: {e}"))?;
        if !wire::is_control(&msg, READY) {
            return Err(format!(
                "expected the peer's READY message, got {}",
                wire::what_is(&msg)
            ));
        }
        Ok(channel)
    }
}

/// The peer's side: attaches as the parent said and sends READY, until `deadline`.
pub fn attach_peer(
    mech: Mechanism,
    bind: Option<&Endpoint>,
    connect: Option<&Endpoint>,
    deadline: Instant,
) -> Result<Channel, String> {
    let wait = Wait::Until(deadline);
    let ready = wire::control(READY, [0; 3]);
    let need = |ep: Option<&Endpoint>, flag: &str| {
        ep.cloned()
            .ok_or_else(|| format!("{} needs {flag}", mech.name()))
    };
    let mut channel = match mech {
        Mechanism::Pipe => {
            Channel::duplex(ipckit::pipe::from_env().map_err(|e| format!("pipe: {e}"))?)
        }
        Mechanism::Fifo | Mechanism::Mq | Mechanism::QueueOs | Mechanism::QueueFsync => {
            let (own, parent) = (need(bind, "--bind")?, need(connect, "--connect")?);
            let mut listener = ipckit::bind(&own).map_err(|e| format!("bind {own}: {e}"))?;
            let mut tx = ipckit::connect_with(&parent, wait)
                .map_err(|e| format!("connect to {parent}: {e}"))?;
            tx.send_with(&ready, wait)
                .map_err(|e| format!("sending READY: {e}"))?;
            let rx = listener
                .accept_with(wait)
                .map_err(|e| format!("accept on {own}: {e}"))?;
            return Ok(Channel::split(rx, tx));
        }
        _ => {
            let url = need(connect, "--connect")?;
            Channel::duplex(
                ipckit::connect_with(&url, wait).map_err(|e| format!("connect to {url}: {e}"))?,
            )
        }
    };
    channel
        .send_with(&ready, wait)
        .map_err(|e| format!("sending READY: {e}"))?;
    Ok(channel)
}
