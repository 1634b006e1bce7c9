//! A two-way message channel over one connection, or over two one-way ones (FIFOs).

use ipckit::{Connection, MessageReceiver, MessageSender, Wait};

/// What each benchmark process talks through. It implements the library's message traits by
/// delegating to the connections' own `send_with`/`recv_into_with`, so `send`, `recv_into` and
/// their `_timeout` forms run exactly the code users call.
pub struct Channel {
    /// Receives, and sends too unless `outbound` is set.
    inbound: Connection,
    /// A separate connection for sending (the second FIFO).
    outbound: Option<Connection>,
}

impl Channel {
    /// One connection carrying both directions.
    pub fn duplex(conn: Connection) -> Channel {
        Channel {
            inbound: conn,
            outbound: None,
        }
    }

    /// Separate connections per direction.
    pub fn split(rx: Connection, tx: Connection) -> Channel {
        Channel {
            inbound: rx,
            outbound: Some(tx),
        }
    }

    fn sender(&self) -> &Connection {
        self.outbound.as_ref().unwrap_or(&self.inbound)
    }
}

impl MessageSender for Channel {
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
    fn recv_into_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> ipckit::Result<()> {
        self.inbound.recv_into_with(buf, wait)
    }

    fn max_message_size(&self) -> usize {
        MessageReceiver::max_message_size(&self.inbound)
    }
}
