//! Datagram connections: Unix datagram, Unix sequenced-packet and UDP sockets. One message
//! is one datagram; nothing is framed (except empty messages over sequenced-packet sockets:
//! see [`SEQPACKET_EMPTY`]).

use std::path::PathBuf;

use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::sys::{self, IoFd, SockAddr};
use crate::transport::Wait;

/// What an empty message travels as over a sequenced-packet socket. A record of 0 bytes
/// reads as 0 bytes, as the end of the connection does, so an empty message sent just
/// before the sender closed (or exited) read as the end and was lost. An empty message goes
/// as this 8-byte record instead, and a message made only of copies of it goes with one
/// copy more; the receiver takes one copy off such a record. Every other message goes as
/// it is. (A peer that is not ipckit sees these 8 bytes for an empty message.)
pub(crate) const SEQPACKET_EMPTY: [u8; 8] = *b"\xFFipckit\x00";

/// Whether `msg` is made only of [`SEQPACKET_EMPTY`] copies (none included): such a message
/// travels with one copy more. Looks at one word for almost every message.
fn only_empty_markers(msg: &[u8]) -> bool {
    msg.len() % SEQPACKET_EMPTY.len() == 0
        && msg
            .chunks_exact(SEQPACKET_EMPTY.len())
            .all(|c| c == SEQPACKET_EMPTY)
}

/// How a datagram connection addresses its peer.
#[derive(Debug)]
pub(crate) enum Peer {
    /// Connected socket (`connect(2)` or a connection-oriented socket): plain `send`/`recv`.
    Connected,
    /// Bound socket: replies go to whoever sent last.
    LastSender(Option<SockAddr>),
    /// Bound socket that talks to its first sender only (`peer=first`): connected to it when
    /// its first datagram comes, then [`Peer::Connected`].
    FirstSender,
}

/// A message-preserving socket connection.
#[derive(Debug)]
pub(crate) struct DatagramConn {
    fd: IoFd,
    peer: Peer,
    /// Largest datagram this side can send (what the kernel grants).
    send_max: usize,
    /// Largest datagram this side accepts.
    max: usize,
    transport: &'static str,
    /// `SOCK_SEQPACKET`: a zero-length read may mean the peer closed.
    seqpacket: bool,
    /// A socket file this connection bound and must remove (Unix datagram clients).
    own_path: Option<PathBuf>,
}

impl DatagramConn {
    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// The socket, for readiness.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.fd()
    }

    pub(crate) fn new(
        fd: IoFd,
        peer: Peer,
        (send_max, max): (usize, usize),
        transport: &'static str,
        seqpacket: bool,
        own_path: Option<PathBuf>,
    ) -> DatagramConn {
        DatagramConn {
            fd,
            peer,
            send_max,
            max,
            transport,
            seqpacket,
            own_path,
        }
    }

    /// Largest message this side can send.
    pub(crate) fn send_max(&self) -> usize {
        self.send_max
    }

    /// Largest message this side accepts.
    pub(crate) fn recv_max(&self) -> usize {
        self.max
    }

    #[inline(always)]
    pub(crate) fn send(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        if msg.len() > self.send_max {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.send_max,
                transport: self.transport,
            });
        }
        if self.seqpacket && only_empty_markers(msg) {
            return self.send_marked(msg, wait);
        }
        self.send_record(msg, wait)
    }

    /// Sends a message made only of [`SEQPACKET_EMPTY`] copies (the empty one included)
    /// with one copy more: such a message can be at most the maximum less 8 bytes.
    #[cold]
    fn send_marked(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        let room = self.send_max.saturating_sub(SEQPACKET_EMPTY.len());
        if msg.len() > room {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: room,
                transport: self.transport,
            });
        }
        let mut record = Vec::with_capacity(msg.len() + SEQPACKET_EMPTY.len());
        record.extend_from_slice(&SEQPACKET_EMPTY);
        record.extend_from_slice(msg);
        self.send_record(&record, wait)
    }

    #[inline(always)]
    fn send_record(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        let to = match &self.peer {
            Peer::Connected => None,
            Peer::LastSender(Some(a)) => Some(a),
            Peer::LastSender(None) | Peer::FirstSender => {
                return Err(Error::NoPeer {
                    transport: self.transport,
                })
            }
        };
        match sys::send_datagram(&mut self.fd, msg, to, wait)? {
            Ok(n) if n == msg.len() => Ok(()),
            Ok(n) => Err(Error::Io {
                op: "send",
                source: std::io::Error::other(format!(
                    "datagram cut short: {n} of {} bytes sent",
                    msg.len()
                )),
            }),
            // ENOBUFS: the kernel could not allocate a buffer that large.
            Err(Errno::MSGSIZE | Errno::NOBUFS) => Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.send_max.min(msg.len().saturating_sub(1)),
                transport: self.transport,
            }),
            Err(Errno::CONNREFUSED | Errno::NOTCONN | Errno::CONNRESET | Errno::PIPE) => {
                Err(Error::Disconnected)
            }
            Err(e) => Err(Error::os("send", e)),
        }
    }

    /// Receives one datagram into `out`. With `exact`, first peeks at its size so `out` is
    /// allocated to fit (owned receives); otherwise `out` is grown once to the maximum size.
    #[inline(always)]
    pub(crate) fn recv_into(&mut self, out: &mut Vec<u8>, wait: Wait, exact: bool) -> Result<()> {
        let want_from = matches!(self.peer, Peer::LastSender(_) | Peer::FirstSender);
        let mut cap = self.max;
        if exact {
            let peeked = self.recv_raw(out, 0, false, true, wait)?;
            cap = peeked.len.min(self.max);
            if peeked.len > self.max {
                // Let the real receive consume it and report the size.
                cap = 0;
            }
        }
        let got = self.recv_raw(out, cap, want_from, false, wait)?;
        if got.len > self.max {
            out.clear();
            return Err(Error::IncomingTooLarge {
                size: got.len as u64,
                max: self.max,
            });
        }
        if self.seqpacket {
            // A sequenced-packet socket reads 0 bytes both for an empty record and at the
            // end. ipckit sends no empty records (see SEQPACKET_EMPTY); one from another
            // program reads as an empty message while the peer is connected, or while bytes
            // are still queued behind it once it hung up, and otherwise as the end.
            if got.len == 0
                && sys::peer_hung_up(self.fd.fd())
                && sys::pending_bytes(self.fd.fd()) == 0
            {
                return Err(Error::Disconnected);
            }
            if !out.is_empty() && only_empty_markers(out) {
                out.truncate(out.len() - SEQPACKET_EMPTY.len());
            }
        }
        match (&mut self.peer, got.from) {
            (Peer::LastSender(last), Some(from)) => *last = Some(from),
            (Peer::FirstSender, Some(from)) => {
                // From now on the kernel delivers only this sender's datagrams, and sends
                // need no address (nor, for UDP, a route lookup each).
                sys::connect(self.fd.fd(), &from, Wait::Never)?;
                self.peer = Peer::Connected;
            }
            _ => {}
        }
        Ok(())
    }

    #[inline(always)]
    fn recv_raw(
        &mut self,
        out: &mut Vec<u8>,
        cap: usize,
        want_from: bool,
        peek: bool,
        wait: Wait,
    ) -> Result<sys::Received> {
        match sys::recv_datagram(&mut self.fd, out, cap, want_from, peek, wait)? {
            Ok(r) => Ok(r),
            Err(Errno::CONNREFUSED | Errno::NOTCONN | Errno::CONNRESET) => Err(Error::Disconnected),
            Err(e) => Err(Error::os("recv", e)),
        }
    }
}

impl Drop for DatagramConn {
    fn drop(&mut self) {
        if let Some(p) = &self.own_path {
            sys::remove_file_if(p, rustix::fs::FileType::Socket);
        }
    }
}
