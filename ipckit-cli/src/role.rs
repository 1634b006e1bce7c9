//! Which side of an endpoint `send` and `recv` take, and what that implies per scheme.

use ipckit::{Endpoint, Listener, Scheme};

use crate::error::{CliError, IpcContext};

/// Bind (listen, create the named object) or connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Bind,
    Connect,
}

/// What a command does with the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Send,
    Recv,
}

/// True for bound endpoints that hand out one connection receiving from every sender.
pub fn is_datagram(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::UnixDgram | Scheme::Udp)
}

/// Refuses the one combination the transport cannot do: a FIFO (or a queue) only carries
/// messages from the side that connects (writes) to the side that binds (reads).
pub fn check_direction(url: &Endpoint, role: Role, direction: Direction) -> Result<(), CliError> {
    if url.scheme() == Scheme::Queue {
        return match (role, direction) {
            (Role::Bind, Direction::Send) => Err(CliError::Usage(
                "a queue:// endpoint carries messages one way and the side that binds it \
                 consumes: use `ipckit send` without --bind (it appends)"
                    .to_owned(),
            )),
            (Role::Connect, Direction::Recv) => Err(CliError::Usage(
                "a queue:// endpoint carries messages one way and the side that connects to it \
                 appends: use `ipckit recv` without --connect (it reads as a consumer group)"
                    .to_owned(),
            )),
            _ => Ok(()),
        };
    }
    if url.scheme() != Scheme::Fifo {
        return Ok(());
    }
    match (role, direction) {
        (Role::Bind, Direction::Send) => Err(CliError::Usage(
            "a FIFO carries messages one way and the side that binds it reads: \
             use `ipckit send` without --bind (it opens the FIFO for writing)"
                .to_owned(),
        )),
        (Role::Connect, Direction::Recv) => Err(CliError::Usage(
            "a FIFO carries messages one way and the side that connects to it writes: \
             use `ipckit recv` without --connect (it creates the FIFO and reads)"
                .to_owned(),
        )),
        _ => Ok(()),
    }
}

/// Binds `url` and, unless `quiet`, says on standard error where it listens (with the real
/// port for `:0`), so scripts and people know when and where to connect.
pub fn bind_and_announce(url: &Endpoint, quiet: bool) -> Result<Listener, CliError> {
    let listener = ipckit::bind(url).doing(|| format!("cannot bind {url}"))?;
    if !quiet && url.scheme() != Scheme::Pipe {
        eprintln!("ipckit: listening on {}", listener.endpoint());
    }
    Ok(listener)
}
