//! FIFOs beyond the conformance suite: `remove_fifo`, symbolic links, umask, and a reader
//! that outlives its writers.

mod common;

use common::*;
use ipckit::{Error, MessageReceiver, MessageSender};

/// `remove_fifo` removes FIFOs and nothing else.
#[test]
fn remove_fifo_refuses_other_files() {
    let dir = tempdir();
    let fifo = dir.path().join("f");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, 0o600.into()).unwrap();
    let file = dir.path().join("precious");
    std::fs::write(&file, b"data").unwrap();

    match ipckit::pipe::remove_fifo(&file) {
        Err(Error::WrongFileType { found, .. }) => assert_eq!(found, "regular file"),
        other => panic!("remove_fifo(regular file): {other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    match ipckit::pipe::remove_fifo(dir.path().join("missing")) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("remove_fifo(missing): {other:?}"),
    }
    ipckit::pipe::remove_fifo(&fifo).expect("remove a FIFO");
    assert!(!fifo.exists());
}

/// A symbolic link is never followed: binding over one or connecting through one is
/// `WrongFileType`, and neither the link nor its target is touched.
#[test]
fn symlinks_are_not_followed() {
    let dir = tempdir();
    let target = dir.path().join("real.fifo");
    rustix::fs::mkfifoat(rustix::fs::CWD, &target, 0o600.into()).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let url = format!("fifo://{}", link.display());
    match ipckit::bind(&url) {
        Err(Error::WrongFileType { found, .. }) => assert_eq!(found, "symbolic link"),
        other => panic!("bind over a symlink: {other:?}"),
    }
    // A reader on the real FIFO, so that only the link can make the connect fail.
    let _reader = ipckit::bind(format!("fifo://{}", target.display())).unwrap();
    match ipckit::connect(&url) {
        Err(Error::WrongFileType { found, .. }) => assert_eq!(found, "symbolic link"),
        other => panic!("connect through a symlink: {other:?}"),
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(dir_entries(dir.path()), ["link", "real.fifo"]);
}

/// The mode is applied after mkfifo, so the umask does not matter: 0666 stays 0666.
#[test]
fn mode_is_not_masked_by_umask() {
    let dir = tempdir();
    let path = dir.path().join("f");
    let _l = ipckit::bind(format!("fifo://{}?mode=0666", path.display())).unwrap();
    assert_eq!(mode_of(&path), 0o666);
}

/// Writers come and go: each accept hands out the next writer's connection. The first writer
/// may connect (and write) before the first accept: the listener opens its read end at bind.
#[test]
fn writers_one_after_another() {
    let dir = tempdir();
    let url = format!("fifo://{}/jobs", dir.path().display());
    let mut l = ipckit::bind(&url).unwrap();
    let mut w = ipckit::connect(&url).expect("connect before the first accept");
    w.send_timeout(&pattern(0, 1000), LONG).expect("send");
    drop(w);
    let mut c = l.accept_timeout(LONG).expect("accept");
    assert_pattern(&c.recv_timeout(LONG).expect("recv"), 0, 1000, "fifo");
    assert!(matches!(c.recv_timeout(LONG), Err(Error::Disconnected)));
    drop(c);
    // Later writers in other processes (they retry while nobody reads).
    for i in 1..3 {
        let send = format!("send:7,{}", 1000 + i);
        let mut p = Peer::spawn(&["connect", &url, &send]);
        let mut c = l.accept_timeout(LONG).expect("accept");
        assert_pattern(&c.recv_timeout(LONG).unwrap(), 0, 7, "fifo");
        assert_pattern(&c.recv_timeout(LONG).unwrap(), 1, 1000 + i, "fifo");
        p.expect_success();
        assert!(matches!(c.recv_timeout(LONG), Err(Error::Disconnected)));
    }
}

/// The listener opens its read end at bind and again right after each accept, so writers
/// can connect from bind on, like a socket's backlog.
#[test]
fn writer_may_connect_between_accepts() {
    let dir = tempdir();
    let url = format!("fifo://{}/jobs", dir.path().display());
    let mut l = ipckit::bind(&url).unwrap();
    let mut w = ipckit::connect(&url).expect("first writer");
    w.send_timeout(b"one", LONG).unwrap();
    drop(w);
    let mut c = l.accept_timeout(LONG).unwrap();
    assert_eq!(c.recv_timeout(LONG).unwrap(), b"one");
    drop(c);
    // The listener is alive and will accept again: a writer should get in.
    match ipckit::connect(&url) {
        Ok(mut w) => {
            w.send_timeout(b"two", LONG).unwrap();
            let mut c = l.accept_timeout(LONG).unwrap();
            assert_eq!(c.recv_timeout(LONG).unwrap(), b"two");
        }
        Err(e) => panic!("second writer, listener alive: {e:?}"),
    }
}

/// A writer whose reader went away gets `Disconnected`, not SIGPIPE or a hang.
#[test]
fn writer_after_reader_is_gone() {
    let dir = tempdir();
    let url = format!("fifo://{}/f", dir.path().display());
    let mut l = ipckit::bind(&url).unwrap();
    let mut w = ipckit::connect_timeout(&url, LONG).unwrap();
    w.send_timeout(b"one", LONG).unwrap();
    let c = l.accept_timeout(LONG).unwrap();
    drop(c);
    drop(l);
    assert!(matches!(
        w.send_timeout(b"two", LONG),
        Err(Error::Disconnected)
    ));
}
