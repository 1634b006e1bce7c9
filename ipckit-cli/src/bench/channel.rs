//! A two-way message channel over one connection, or over two one-way ones (FIFOs).

use ipckit::{Connection, Error, MessageReceiver, MessageSender, Wait};

use super::mechanism::Copies;
use super::wire::{SEQ_LEN, TRAILER_LEN};

/// What each benchmark process talks through. It implements the library's message traits by
/// delegating to the connections' own `send_with`/`recv_into_with`, so `send`, `recv_into` and
/// their `_timeout` forms run exactly the code users call.
pub struct Channel {
    /// Receives, and sends too unless `outbound` is set.
    inbound: Connection,
    /// A separate connection for sending (the second FIFO).
    outbound: Option<Connection>,
    /// How [`send_data`](Self::send_data) and [`recv_data`](Self::recv_data) move payloads.
    copies: Copies,
}

impl Channel {
    /// One connection carrying both directions.
    pub fn duplex(conn: Connection) -> Channel {
        Channel {
            inbound: conn,
            outbound: None,
            copies: Copies::Both,
        }
    }

    /// Separate connections per direction.
    pub fn split(rx: Connection, tx: Connection) -> Channel {
        Channel {
            inbound: rx,
            outbound: Some(tx),
            copies: Copies::Both,
        }
    }

    /// Moves the benchmark's messages as `copies` says (the in-place ways need `shm://`).
    pub fn set_copies(&mut self, copies: Copies) {
        self.copies = copies;
    }

    /// Sends a benchmark message (sequence number first, trailer last). `full`: the receiver
    /// compares this one's whole payload, so a loan gets all of it, not only the fields
    /// that change from one message to the next.
    #[inline(always)]
    pub fn send_data(&mut self, msg: &[u8], full: bool) -> ipckit::Result<()> {
        if self.copies != Copies::None {
            return self.send(msg);
        }
        let n = msg.len();
        let mut loan = self.shm()?.loan(n)?;
        if full || n < SEQ_LEN + TRAILER_LEN {
            loan.write(0, msg)?;
        } else {
            loan.write(0, &msg[..SEQ_LEN])?;
            loan.write(n - TRAILER_LEN, &msg[n - TRAILER_LEN..])?;
        }
        loan.commit();
        Ok(())
    }

    /// Receives a benchmark message into `buf`. Read in place, only its sequence number and
    /// trailer are copied out, unless `full` (the whole payload is to be compared); the
    /// rest of `buf` then keeps whatever it held, at the message's length.
    #[inline(always)]
    pub fn recv_data(&mut self, buf: &mut Vec<u8>, full: bool) -> ipckit::Result<()> {
        if self.copies == Copies::Both {
            return self.recv_into(buf);
        }
        let msg = self.shm()?.recv_ref()?;
        let n = msg.len();
        if buf.len() != n {
            buf.resize(n, 0);
        }
        if full || n < SEQ_LEN + TRAILER_LEN {
            msg.read(0, buf)
        } else {
            msg.read(0, &mut buf[..SEQ_LEN])?;
            msg.read(n - TRAILER_LEN, &mut buf[n - TRAILER_LEN..])
        }
    }

    /// The `shm://` connection behind an in-place mechanism.
    fn shm(&mut self) -> ipckit::Result<&mut ipckit::shm::ShmConn> {
        self.inbound.as_shm().ok_or(Error::Unsupported {
            op: "reading and writing messages in place",
            what: "a transport other than shm://",
        })
    }

    fn sender(&self) -> &Connection {
        self.outbound.as_ref().unwrap_or(&self.inbound)
    }
}

impl MessageSender for Channel {
    #[inline(always)]
    fn send_with(&mut self, msg: &[u8], wait: Wait) -> ipckit::Result<()> {
        match &mut self.outbound {
            Some(tx) => tx.send_with(msg, wait),
            None => self.inbound.send_with(msg, wait),
        }
    }

    fn max_message_size(&self) -> usize {
        MessageSender::max_message_size(self.sender())
    }
}

impl MessageReceiver for Channel {
    #[inline(always)]
    fn recv_into_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> ipckit::Result<()> {
        self.inbound.recv_into_with(buf, wait)
    }

    fn max_message_size(&self) -> usize {
        MessageReceiver::max_message_size(&self.inbound)
    }
}
