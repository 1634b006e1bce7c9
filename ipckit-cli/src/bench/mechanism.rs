//! The mechanisms the benchmark measures, by the names the command line uses.

use ipckit::endpoint::UDP_MAX_PAYLOAD;
use ipckit::Scheme;

/// One IPC mechanism, named as on the command line (`--mech unix-dgram`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    /// Anonymous pipes to the child (`ipckit::pipe::duplex`).
    Pipe,
    /// Two FIFOs, one per direction.
    Fifo,
    /// Unix stream socket.
    Unix,
    /// Unix datagram socket.
    UnixDgram,
    /// Unix sequenced-packet socket.
    UnixSeqpacket,
    /// TCP over 127.0.0.1.
    Tcp,
    /// UDP over 127.0.0.1.
    Udp,
}

impl Mechanism {
    /// Every mechanism, in the order the benchmark runs them.
    pub const ALL: [Mechanism; 7] = [
        Mechanism::Pipe,
        Mechanism::Fifo,
        Mechanism::Unix,
        Mechanism::UnixDgram,
        Mechanism::UnixSeqpacket,
        Mechanism::Tcp,
        Mechanism::Udp,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Pipe => "pipe",
            Mechanism::Fifo => "fifo",
            Mechanism::Unix => "unix",
            Mechanism::UnixDgram => "unix-dgram",
            Mechanism::UnixSeqpacket => "unix-seqpacket",
            Mechanism::Tcp => "tcp",
            Mechanism::Udp => "udp",
        }
    }

    /// The URL scheme it uses.
    pub fn scheme(self) -> Scheme {
        match self {
            Mechanism::Pipe => Scheme::Pipe,
            Mechanism::Fifo => Scheme::Fifo,
            Mechanism::Unix => Scheme::Unix,
            Mechanism::UnixDgram => Scheme::UnixDgram,
            Mechanism::UnixSeqpacket => Scheme::UnixSeqpacket,
            Mechanism::Tcp => Scheme::Tcp,
            Mechanism::Udp => Scheme::Udp,
        }
    }

    /// True when messages may be lost (the benchmark then resends and counts drops).
    pub fn is_lossy(self) -> bool {
        self.scheme().is_lossy()
    }

    /// Why this mechanism cannot carry messages of `size` bytes, if it cannot.
    pub fn refuses(self, size: usize) -> Option<String> {
        (self == Mechanism::Udp && size > UDP_MAX_PAYLOAD)
            .then(|| format!("a UDP datagram carries at most {UDP_MAX_PAYLOAD} bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_match_the_command_line() {
        for m in Mechanism::ALL {
            let value = m.to_possible_value().unwrap();
            assert_eq!(value.get_name(), m.name());
        }
        assert_eq!(Mechanism::value_variants(), &Mechanism::ALL);
    }

    #[test]
    fn udp_refuses_what_a_datagram_cannot_hold() {
        assert!(Mechanism::Udp.refuses(65_507).is_none());
        assert!(Mechanism::Udp.refuses(65_508).unwrap().contains("65507"));
        assert!(Mechanism::UnixDgram.refuses(1 << 20).is_none());
    }
}
