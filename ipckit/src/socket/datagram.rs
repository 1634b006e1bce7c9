//! Datagram connections: Unix datagram, Unix sequenced-packet and UDP sockets. One message
//! is one datagram; nothing is framed.

use std::path::PathBuf;

use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::sys::{self, IoFd, SockAddr};
use crate::transport::Wait;

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

    pub(crate) fn send(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        if msg.len() > self.send_max {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.send_max,
                transport: self.transport,
            });
        }
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
        // A sequenced-packet socket reads 0 bytes both for an empty record and at the end.
        // Once the peer has hung up, a 0-byte read with no bytes queued behind it is the end;
        // with bytes still queued it was an empty record. (Empty records sent just before
        // closing, with nothing after them, therefore read as the end.)
        if got.len == 0
            && self.seqpacket
            && sys::peer_hung_up(self.fd.fd())
            && sys::pending_bytes(self.fd.fd()) == 0
        {
            return Err(Error::Disconnected);
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
