//! The mechanisms the benchmark measures, by the names the command line uses.

use ipckit::endpoint::UDP_MAX_PAYLOAD;
use ipckit::Scheme;

/// How a mechanism's benchmark moves each message's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copies {
    /// `send` copies it in, `recv_into` copies it out (every transport's message API).
    Both,
    /// `send` copies it in; the receiver reads it in place (`recv_ref`), only the bytes it
    /// checks.
    ReadInPlace,
    /// The sender writes in place (`loan`) only the bytes that change (sequence number and
    /// trailer, the whole pattern on the messages checked in full); the receiver reads in
    /// place.
    None,
}

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
    /// `shm://` rings, adaptive wait (spin while the peer runs, then futex).
    Shm,
    /// `shm://` rings, busy-polling.
    ShmSpin,
    /// `shm://` rings, futex wait at once.
    ShmBlock,
    /// `shm://` rings, adaptive wait, read in place: the sender copies each message in
    /// (`send`), the receiver borrows it where it is (`recv_ref`). One copy per message.
    ShmRef,
    /// `shm://` rings, adaptive wait, no copy: the sender builds each message in a loan
    /// (`loan`/`commit`), the receiver borrows it in place (`recv_ref`).
    ShmLoan,
    /// `shm://` rings whose receivers wait on a semaphore (as `sem_post`/`sem_wait`).
    Sem,
    /// The `shm://` channel in memory-mapped files (`mmap://`).
    Mmap,
    /// Two POSIX message queues, one per direction.
    Mq,
    /// Two durable queues (`queue://`), one per direction, `durability=os`.
    QueueOs,
    /// Two durable queues, `durability=fsync` (each send waits for `fdatasync`).
    QueueFsync,
    /// `ipckit::rpc` calls over `unix://` (blocking client, async server, typed payload).
    RpcUnix,
    /// `ipckit::rpc` calls over `shm://`.
    RpcShm,
    /// A signal to the peer and one back (SIGUSR1; no payload).
    Signal,
    /// `ipckit::bus` on `bus://local`: pub→sub round trip through two topics, and one
    /// publisher streaming to one subscriber.
    BusLocal,
    /// One bus publisher streaming to 2 subscriber processes (messages delivered in total).
    #[value(name = "bus-fanout-2")]
    BusFanout2,
    /// One bus publisher streaming to 4 subscriber processes.
    #[value(name = "bus-fanout-4")]
    BusFanout4,
    /// One bus publisher streaming to 8 subscriber processes.
    #[value(name = "bus-fanout-8")]
    BusFanout8,
    /// Not IPC: single-thread `memcpy` of one message, in the parent alone. The yardstick of
    /// the large-message rates (the C baseline's `memcpy`).
    Memcpy,
    /// Not IPC: two threads of the parent, one on each CPU, bounce a counter through two
    /// cache lines (the C baseline's `spin_flag`). The floor under every shared-memory round
    /// trip of the run: what two line transfers between these CPUs cost now.
    Line,
}

impl Mechanism {
    /// Every mechanism, in the order the benchmark runs them.
    pub const ALL: [Mechanism; 26] = [
        Mechanism::Pipe,
        Mechanism::Fifo,
        Mechanism::Unix,
        Mechanism::UnixDgram,
        Mechanism::UnixSeqpacket,
        Mechanism::Tcp,
        Mechanism::Udp,
        Mechanism::Shm,
        Mechanism::ShmSpin,
        Mechanism::ShmBlock,
        Mechanism::ShmRef,
        Mechanism::ShmLoan,
        Mechanism::Sem,
        Mechanism::Mmap,
        Mechanism::Mq,
        Mechanism::QueueOs,
        Mechanism::QueueFsync,
        Mechanism::RpcUnix,
        Mechanism::RpcShm,
        Mechanism::Signal,
        Mechanism::BusLocal,
        Mechanism::BusFanout2,
        Mechanism::BusFanout4,
        Mechanism::BusFanout8,
        Mechanism::Memcpy,
        Mechanism::Line,
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
            Mechanism::Shm => "shm",
            Mechanism::ShmSpin => "shm-spin",
            Mechanism::ShmBlock => "shm-block",
            Mechanism::ShmRef => "shm-ref",
            Mechanism::ShmLoan => "shm-loan",
            Mechanism::Sem => "sem",
            Mechanism::Mmap => "mmap",
            Mechanism::Mq => "mq",
            Mechanism::QueueOs => "queue-os",
            Mechanism::QueueFsync => "queue-fsync",
            Mechanism::RpcUnix => "rpc-unix",
            Mechanism::RpcShm => "rpc-shm",
            Mechanism::Signal => "signal",
            Mechanism::BusLocal => "bus-local",
            Mechanism::BusFanout2 => "bus-fanout-2",
            Mechanism::BusFanout4 => "bus-fanout-4",
            Mechanism::BusFanout8 => "bus-fanout-8",
            Mechanism::Memcpy => "memcpy",
            Mechanism::Line => "line",
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
            Mechanism::Shm
            | Mechanism::ShmSpin
            | Mechanism::ShmBlock
            | Mechanism::ShmRef
            | Mechanism::ShmLoan
            | Mechanism::Sem => Scheme::Shm,
            Mechanism::Mmap => Scheme::Mmap,
            Mechanism::Mq => Scheme::Mq,
            Mechanism::QueueOs | Mechanism::QueueFsync => Scheme::Queue,
            Mechanism::RpcUnix => Scheme::Unix,
            Mechanism::RpcShm => Scheme::Shm,
            // Signals have no scheme; the pipe is the nearest kernel notification path.
            Mechanism::Signal => Scheme::Pipe,
            // The local bus is rings in shared memory.
            Mechanism::BusLocal
            | Mechanism::BusFanout2
            | Mechanism::BusFanout4
            | Mechanism::BusFanout8 => Scheme::Shm,
            // No transport at all; the nearest is a copy into shared memory.
            Mechanism::Memcpy | Mechanism::Line => Scheme::Shm,
        }
    }

    /// True for the yardsticks that are not IPC (`memcpy`, `line`): measured in the parent
    /// alone, and left out of the report's comparisons between mechanisms.
    pub fn is_yardstick(self) -> bool {
        matches!(self, Mechanism::Memcpy | Mechanism::Line)
    }

    /// How the message ping-pong and stream move the payload.
    pub fn copies(self) -> Copies {
        match self {
            Mechanism::ShmRef => Copies::ReadInPlace,
            Mechanism::ShmLoan => Copies::None,
            _ => Copies::Both,
        }
    }

    /// True for the request/response and notification patterns measured by
    /// [`super::patterns`] rather than by the message ping-pong and stream.
    pub fn is_pattern(self) -> bool {
        matches!(
            self,
            Mechanism::RpcUnix | Mechanism::RpcShm | Mechanism::Signal
        ) || self.is_bus()
    }

    /// True for the `ipckit::bus` mechanisms (measured by [`super::bus`]).
    pub fn is_bus(self) -> bool {
        matches!(
            self,
            Mechanism::BusLocal
                | Mechanism::BusFanout2
                | Mechanism::BusFanout4
                | Mechanism::BusFanout8
        )
    }

    /// True when messages may be lost (the benchmark then resends and counts drops).
    pub fn is_lossy(self) -> bool {
        self.scheme().is_lossy()
    }

    /// The `wait=` mode of the shared-memory mechanisms.
    pub fn shm_wait(self) -> Option<&'static str> {
        match self {
            Mechanism::Shm | Mechanism::Mmap | Mechanism::ShmRef | Mechanism::ShmLoan => {
                Some("adaptive")
            }
            Mechanism::ShmSpin => Some("spin"),
            Mechanism::ShmBlock => Some("block"),
            Mechanism::Sem => Some("sem"),
            _ => None,
        }
    }

    /// The `durability=` of the queue mechanisms.
    pub fn queue_durability(self) -> Option<&'static str> {
        match self {
            Mechanism::QueueOs => Some("os"),
            Mechanism::QueueFsync => Some("fsync"),
            _ => None,
        }
    }

    /// Why this mechanism cannot carry messages of `size` bytes, if it cannot.
    pub fn refuses(self, size: usize) -> Option<String> {
        match self {
            Mechanism::Signal if size > 64 => {
                Some("a signal carries no payload (measured at the smallest size only)".into())
            }
            Mechanism::Line if size > 64 => Some(
                "the cache-line floor carries no payload (measured at the smallest size only)"
                    .into(),
            ),
            Mechanism::Udp if size > UDP_MAX_PAYLOAD => Some(format!(
                "a UDP datagram carries at most {UDP_MAX_PAYLOAD} bytes"
            )),
            Mechanism::Mq => {
                let (_, msgsize_max, _, budget) = ipckit::mq::mq_limits();
                // Two queues of 10 messages, charged about size + 16 bytes each.
                let needed = 2 * 10 * (size as u64 + 16);
                if size as u64 > msgsize_max {
                    Some(format!(
                        "fs.mqueue.msgsize_max is {msgsize_max} bytes \
                         (sysctl -w fs.mqueue.msgsize_max=N raises it)"
                    ))
                } else if needed > budget {
                    Some(format!(
                        "two 10-message queues need about {needed} bytes of RLIMIT_MSGQUEUE, \
                         which is {budget} (ulimit -q)"
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
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
