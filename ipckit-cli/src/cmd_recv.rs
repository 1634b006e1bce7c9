//! `ipckit recv URL`: writes received messages to standard output.

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use ipckit::{Connection, Endpoint, Error, Listener, MessageReceiver, MessageSender, Scheme, Wait};

use crate::cli::RecvArgs;
use crate::error::{CliError, IpcContext};
use crate::role::{self, Direction, Role};

/// How long `recv --connect` waits for the endpoint when no --timeout is given.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `recv --connect` on a datagram endpoint repeats its announcement.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

/// Runs `ipckit recv`.
pub fn run(args: RecvArgs) -> Result<(), CliError> {
    let role = args.role.resolve(Role::Bind);
    role::check_direction(&args.url, role, Direction::Recv)?;
    let wait = match args.timeout {
        Some(t) => Wait::timeout(t),
        None => Wait::Forever,
    };
    let mut source = Source::open(&args.url, role, wait, args.quiet)?;
    let mut stdout = std::io::stdout().lock();
    let mut buf = Vec::new();
    let mut received = 0u64;
    while !args.count.is_some_and(|n| received >= n) {
        match source.next(&mut buf, wait) {
            Ok(true) => match write_message(&mut stdout, &buf, args.raw) {
                Ok(()) => {
                    received += 1;
                    source.written()?;
                }
                // Whoever reads the output has seen enough (`ipckit recv URL | head -1`).
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(source) => {
                    return Err(CliError::Io {
                        doing: "cannot write to standard output",
                        source,
                    })
                }
            },
            Ok(false) => return incomplete(args.count, received, "the sender disconnected"),
            Err(Error::Timeout { .. }) => return incomplete(args.count, received, "timed out"),
            Err(e) => {
                return Err(CliError::Ipc {
                    doing: format!("cannot receive from {}", args.url),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// The normal end without --count; an error when fewer than --count messages came.
fn incomplete(count: Option<u64>, received: u64, why: &'static str) -> Result<(), CliError> {
    match count {
        Some(expected) if received < expected => Err(CliError::Incomplete {
            received,
            expected,
            why,
        }),
        _ => Ok(()),
    }
}

fn write_message(out: &mut impl Write, msg: &[u8], raw: bool) -> std::io::Result<()> {
    out.write_all(msg)?;
    if !raw {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Where messages come from: one connection at a time.
struct Source {
    /// Set on a bound stream endpoint: when a sender disconnects, the next is accepted.
    listener: Option<Listener>,
    /// The current connection.
    conn: Option<Connection>,
    /// Set on a connected datagram socket until the first message arrives: it announces
    /// itself so a bound peer learns where to send.
    announce: bool,
}

impl Source {
    fn open(url: &Endpoint, role: Role, wait: Wait, quiet: bool) -> Result<Source, CliError> {
        match role {
            Role::Bind => {
                let mut listener = role::bind_and_announce(url, quiet)?;
                if url.scheme() == Scheme::Pipe || role::is_datagram(url.scheme()) {
                    // One connection, handed out at once, receiving from every sender.
                    let conn = listener.accept().doing(|| format!("cannot open {url}"))?;
                    Ok(Source {
                        listener: None,
                        conn: Some(conn),
                        announce: false,
                    })
                } else {
                    Ok(Source {
                        listener: Some(listener),
                        conn: None,
                        announce: false,
                    })
                }
            }
            Role::Connect => {
                let appear = match wait {
                    Wait::Forever => Wait::timeout(DEFAULT_CONNECT_TIMEOUT),
                    limited => limited,
                };
                let conn = ipckit::connect_with(url, appear)
                    .doing(|| format!("cannot connect to {url}"))?;
                Ok(Source {
                    listener: None,
                    conn: Some(conn),
                    announce: role::is_datagram(url.scheme()),
                })
            }
        }
    }

    /// The message received last is written out: on a durable queue, acknowledge it now
    /// (rather than at the next receive, which may never come).
    fn written(&mut self) -> Result<(), CliError> {
        if let Some(consumer) = self.conn.as_mut().and_then(|c| c.as_queue_consumer()) {
            consumer.ack_delivered().map_err(|source| CliError::Ipc {
                doing: "cannot acknowledge the message".to_owned(),
                source,
            })?;
        }
        Ok(())
    }

    /// Receives the next message into `buf`: `Ok(false)` when the input has ended.
    fn next(&mut self, buf: &mut Vec<u8>, wait: Wait) -> ipckit::Result<bool> {
        let Source {
            listener,
            conn,
            announce,
        } = self;
        loop {
            let current = match (conn.as_mut(), listener.as_mut()) {
                (Some(c), _) => c,
                (None, Some(l)) => conn.insert(l.accept_with(wait)?),
                (None, None) => return Ok(false),
            };
            let got = if *announce {
                recv_announcing(current, buf, wait)
            } else {
                current.recv_into_with(buf, wait)
            };
            *announce = false;
            match got {
                Ok(()) => return Ok(true),
                Err(e) if e.is_disconnect() => {
                    if let Error::Truncated { .. } = e {
                        eprintln!("ipckit: warning: a sender disconnected mid-message: {e}");
                    }
                    *conn = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends an empty datagram every [`ANNOUNCE_EVERY`] until the first message arrives, so a
/// bound peer learns where to send. Refusals (nobody bound yet) are retried until `wait` ends.
fn recv_announcing(conn: &mut Connection, buf: &mut Vec<u8>, wait: Wait) -> ipckit::Result<()> {
    loop {
        let slice = wait
            .remaining()
            .map_or(ANNOUNCE_EVERY, |r| r.min(ANNOUNCE_EVERY));
        let started = Instant::now();
        let attempt = conn
            .send(&[])
            .and_then(|()| conn.recv_into_timeout(buf, slice));
        match attempt {
            Ok(()) => return Ok(()),
            Err(Error::Timeout { .. } | Error::Disconnected) => {
                if wait.remaining() == Some(Duration::ZERO) {
                    return Err(Error::Timeout { after: None });
                }
                // A refusal returns at once: pace the retries.
                std::thread::sleep(slice.saturating_sub(started.elapsed()));
            }
            Err(e) => return Err(e),
        }
    }
}
