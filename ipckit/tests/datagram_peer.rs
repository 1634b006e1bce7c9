//! `peer=first` on the bound side of datagram endpoints: it talks to its first sender only.
//! Every receive has a timeout.

use std::time::Duration;

use ipckit::{Connection, Error, MessageReceiver, MessageSender};

const T: Duration = Duration::from_secs(5);

/// The bound side (`url` binds), and two clients of it.
fn setup(url: &str) -> (Connection, Connection, Connection) {
    let mut listener = ipckit::bind(url).expect("bind");
    let bound = listener.endpoint().to_string();
    let first = ipckit::connect(&bound).expect("connect first");
    let second = ipckit::connect(&bound).expect("connect second");
    let server = listener.accept_timeout(T).expect("accept");
    (server, first, second)
}

/// The first sender's datagrams arrive and the replies reach it; a later sender's are
/// dropped by the kernel (the socket is connected to the first), not delivered.
fn only_the_first_sender_is_heard(url: &str) {
    let (mut server, mut first, mut second) = setup(url);
    first.send(b"first 1").unwrap();
    assert_eq!(server.recv_timeout(T).unwrap(), b"first 1");
    second.send(b"second 1").unwrap_or(());
    first.send(b"first 2").unwrap();
    assert_eq!(server.recv_timeout(T).unwrap(), b"first 2");
    assert!(matches!(
        server.recv_timeout(Duration::from_millis(200)),
        Err(Error::Timeout { .. })
    ));
    server.send(b"reply").unwrap();
    assert_eq!(first.recv_timeout(T).unwrap(), b"reply");
    // Nothing for the second: over UDP the kernel even told it the port refused its datagram
    // (ICMP port unreachable, hence Disconnected); a Unix datagram simply went nowhere.
    assert!(matches!(
        second.recv_timeout(Duration::from_millis(200)),
        Err(Error::Timeout { .. } | Error::Disconnected)
    ));
}

/// Without the option (`peer=any`, the default) the bound side hears everyone and replies to
/// whoever sent last.
fn everyone_is_heard_by_default(url: &str) {
    let (mut server, mut first, mut second) = setup(url);
    first.send(b"first").unwrap();
    assert_eq!(server.recv_timeout(T).unwrap(), b"first");
    second.send(b"second").unwrap();
    assert_eq!(server.recv_timeout(T).unwrap(), b"second");
    server.send(b"to second").unwrap();
    assert_eq!(second.recv_timeout(T).unwrap(), b"to second");
}

#[test]
fn udp_peer_first() {
    only_the_first_sender_is_heard("udp://127.0.0.1:0?peer=first");
    everyone_is_heard_by_default("udp://127.0.0.1:0");
}

#[test]
fn unix_dgram_peer_first() {
    let dir = tempfile::tempdir().unwrap();
    only_the_first_sender_is_heard(&format!(
        "unix+dgram://{}/first.sock?peer=first",
        dir.path().display()
    ));
    everyone_is_heard_by_default(&format!("unix+dgram://{}/any.sock", dir.path().display()));
}

/// Before its first datagram the bound side has nobody to send to.
#[test]
fn no_peer_before_the_first_datagram() {
    let (mut server, _first, _second) = setup("udp://127.0.0.1:0?peer=first");
    assert!(matches!(server.send(b"x"), Err(Error::NoPeer { .. })));
}

/// A listener bound to port 0 reports its real port with every option of its URL (they used
/// to be dropped, all but `max_msg`, so `spin_us` never reached accepted TCP connections).
#[test]
fn a_port_0_listener_keeps_its_options() {
    for url in [
        "udp://127.0.0.1:0?peer=first&spin_us=3&max_msg=1K",
        "tcp://127.0.0.1:0?spin_us=3&max_msg=1K",
    ] {
        let listener = ipckit::bind(url).unwrap();
        let asked = ipckit::Endpoint::parse(url).unwrap();
        let bound = listener.endpoint();
        assert_ne!(bound.to_string(), asked.to_string(), "{url}: port resolved");
        assert_eq!(bound.options(), asked.options(), "{url}");
    }
}
