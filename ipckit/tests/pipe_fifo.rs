//! FIFOs beyond the conformance suite: `remove_fifo`, symbolic links, umask, a reader
//! that outlives its writers, and the pipe's capacity.

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

/// `capacity=` sizes the FIFO's kernel buffer from either side: a writer then gets 128
/// frames of 4 KiB in (512 KiB) before anything is read, where the default 64 KiB takes 11.
#[test]
fn capacity_from_the_url() {
    let dir = tempdir();
    let url = format!("fifo://{}/big?capacity=1M", dir.path().display());
    let mut l = ipckit::bind(&url).unwrap();
    let mut w = ipckit::connect(&url).unwrap();
    assert_eq!(w.pipe_capacity().unwrap(), 1 << 20);
    for i in 0..128 {
        w.try_send(&pattern(i, 4096))
            .unwrap_or_else(|e| panic!("frame {i} into a 1 MiB FIFO: {e}"));
    }
    let mut c = l.accept_timeout(LONG).unwrap();
    assert_eq!(c.pipe_capacity().unwrap(), 1 << 20);
    for i in 0..128 {
        assert_pattern(&c.recv_timeout(LONG).unwrap(), i, 4096, "fifo");
    }

    // Without the parameter, the kernel's default of 16 pages. A 4,100-byte frame takes 1.5
    // of them on average (the kernel appends a write's first `len % 4096` bytes to the last
    // page when they fit, then starts whole pages), so 11 fit (the 11th partly pending).
    let url = format!("fifo://{}/small", dir.path().display());
    let _l = ipckit::bind(&url).unwrap();
    let mut w = ipckit::connect(&url).unwrap();
    assert_eq!(w.pipe_capacity().unwrap(), 64 << 10);
    let sent = (0..16)
        .take_while(|&i| w.try_send(&pattern(i, 4096)).is_ok())
        .count();
    assert_eq!(sent, 11);

    // Other transports have no pipe.
    let sock = dir.path().join("s.sock");
    let mut ul = ipckit::bind(format!("unix://{}", sock.display())).unwrap();
    let mut uc = ipckit::connect(format!("unix://{}", sock.display())).unwrap();
    let _us = ul.accept_timeout(LONG).unwrap();
    assert!(matches!(
        uc.set_pipe_capacity(1 << 20),
        Err(Error::Unsupported { .. })
    ));
}
