//! `SO_PEERCRED` through [`ipckit::Connection::peer_credentials`] (issue 9): a server sees the
//! pid and uid of a client in another process, a client sees the server's, and the transports
//! without such a record say `None`. Run as root, a client of another uid is seen as that
//! uid, and cannot connect at all to a socket of the default mode 0600.

mod common;

use std::os::unix::process::CommandExt;

use common::*;
use ipckit::{MessageReceiver, MessageSender, PeerCredentials};

fn me() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

#[test]
fn a_server_sees_the_client_process() {
    for scheme in ["unix", "unix+seqpacket"] {
        let dir = tempdir();
        let url = format!("{scheme}://{}/s", dir.path().display());
        let mut listener = ipckit::bind(&url).unwrap();
        let mut peer = Peer::spawn(&["connect", &url, "hello", "await"]);
        let mut server = listener.accept_timeout(LONG).expect("accept");
        assert_eq!(server.recv_timeout(LONG).unwrap(), b"hello");
        let cred = server.peer_credentials().unwrap().expect(scheme);
        let (uid, gid) = me();
        assert_eq!(
            cred,
            PeerCredentials {
                pid: peer.id(),
                uid,
                gid
            },
            "{scheme}"
        );
        assert_ne!(cred.pid, std::process::id());
        server.send(b"bye").unwrap();
        peer.expect_success();
    }
}

#[test]
fn a_client_sees_the_server_process() {
    for scheme in ["unix", "unix+seqpacket"] {
        let dir = tempdir();
        let url = format!("{scheme}://{}/s", dir.path().display());
        let mut peer = Peer::spawn(&["bind", &url, "hello", "await"]);
        peer.expect_line("READY");
        let mut client = ipckit::connect_timeout(&url, LONG).unwrap();
        assert_eq!(client.recv_timeout(LONG).unwrap(), b"hello");
        let cred = client.peer_credentials().unwrap().expect(scheme);
        assert_eq!(cred.pid, peer.id(), "{scheme}");
        assert_eq!(cred.uid, me().0);
        client.send(b"bye").unwrap();
        peer.expect_success();
    }
}

#[test]
fn other_transports_have_no_credentials() {
    let dir = tempdir();
    let d = dir.path().display();
    for url in [
        format!("unix+dgram://{d}/dgram"),
        "tcp://127.0.0.1:0".to_string(),
        "udp://127.0.0.1:0".to_string(),
        format!("shm://ipckit-peercred-{}", std::process::id()),
    ] {
        let mut listener = ipckit::bind(&url).unwrap();
        let bound = listener.endpoint().clone();
        let mut client = ipckit::connect_timeout(&bound, LONG).unwrap();
        client.send(b"x").unwrap();
        let server = listener.accept_timeout(LONG).unwrap();
        assert_eq!(client.peer_credentials().unwrap(), None, "{url}");
        assert_eq!(server.peer_credentials().unwrap(), None, "{url}");
    }
}

/// Only as root (skipped otherwise): a client running as another user is seen as that user,
/// and is refused by a socket of the default mode.
#[test]
fn another_user_is_seen_as_such_and_kept_out_by_default() {
    if me().0 != 0 {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = tempdir();
    // Let the other user reach the socket files (the mode of each decides the rest).
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        let mut cmd = Peer::command(args);
        cmd.uid(NOBODY).gid(NOBODY);
        Peer::start(cmd)
    };

    // The default mode 0600: the other user cannot connect.
    let private = format!("unix://{}/private", dir.path().display());
    let _l = ipckit::bind(&private).unwrap();
    let mut peer = as_nobody(&["connect", &private, "hello"]);
    let status = peer.wait(LONG);
    assert!(!status.success(), "another user connected to a 0600 socket");
    // (stderr is collected by a thread: give it a moment after the exit)
    let until = std::time::Instant::now() + LONG;
    while !peer.stderr().contains("permission denied") && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        peer.stderr().contains("permission denied"),
        "{}",
        peer.stderr()
    );

    // Opened up on purpose (?mode=0666): it connects, and the server sees who it is.
    let open = format!("unix://{}/open?mode=0666", dir.path().display());
    let mut listener = ipckit::bind(&open).unwrap();
    let mut peer = as_nobody(&["connect", &open, "hello", "await"]);
    let mut server = listener.accept_timeout(LONG).expect("accept");
    assert_eq!(server.recv_timeout(LONG).unwrap(), b"hello");
    let cred = server.peer_credentials().unwrap().unwrap();
    assert_eq!((cred.pid, cred.uid, cred.gid), (peer.id(), NOBODY, NOBODY));
    server.send(b"bye").unwrap();
    peer.expect_success();
}
