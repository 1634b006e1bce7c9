//! `ipckit send URL [MESSAGE | -]`: sends one message, every line of standard input, or all
//! of standard input as one message.

use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use ipckit::{Connection, Endpoint, MessageReceiver, MessageSender};

use crate::cli::SendArgs;
use crate::error::{CliError, IpcContext};
use crate::role::{self, Direction, Role};

/// Runs `ipckit send`.
pub fn run(args: SendArgs) -> Result<(), CliError> {
    let role = args.role.resolve(Role::Connect);
    role::check_direction(&args.url, role, Direction::Send)?;
    let mut conn = open(&args.url, role, args.timeout, args.quiet)?;
    let mut send = |msg: &[u8]| {
        conn.send_timeout(msg, args.timeout)
            .doing(|| format!("cannot send to {}", args.url))
    };
    match args.message.as_deref() {
        Some(text) if text != "-" => send(text.as_bytes()),
        _ if args.raw => {
            let mut all = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut all)
                .map_err(|source| CliError::Io {
                    doing: "cannot read standard input",
                    source,
                })?;
            send(&all)
        }
        _ => for_each_line(std::io::stdin().lock(), send),
    }
}

/// The connection to send on: connected, or accepted on the bound endpoint.
fn open(
    url: &Endpoint,
    role: Role,
    timeout: Duration,
    quiet: bool,
) -> Result<Connection, CliError> {
    match role {
        Role::Connect => {
            ipckit::connect_timeout(url, timeout).doing(|| format!("cannot connect to {url}"))
        }
        Role::Bind => {
            let mut listener = role::bind_and_announce(url, quiet)?;
            let mut conn = listener
                .accept_timeout(timeout)
                .doing(|| format!("no peer connected to {url}"))?;
            if role::is_datagram(url.scheme()) {
                // A bound datagram endpoint replies to whoever sent last: learn who that is.
                let mut hello = Vec::new();
                conn.recv_into_timeout(&mut hello, timeout)
                    .doing(|| format!("no peer announced itself on {url}"))?;
            }
            Ok(conn)
        }
    }
}

/// Calls `send` with each line of `input`, without its newline; a last line without a newline
/// counts too.
fn for_each_line(
    mut input: impl BufRead,
    mut send: impl FnMut(&[u8]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| CliError::Io {
                doing: "cannot read standard input",
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        send(&line)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for_each_line(input, |l| {
            got.push(l.to_vec());
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn splits_lines_and_keeps_the_last_unterminated_one() {
        assert_eq!(lines_of(b"a\nb\n"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            lines_of(b"a\n\nb"),
            vec![b"a".to_vec(), vec![], b"b".to_vec()]
        );
        assert_eq!(lines_of(b"x\r\n"), vec![b"x\r".to_vec()]);
        assert!(lines_of(b"").is_empty());
    }
}
