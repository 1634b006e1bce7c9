//! Fault injection (issue 9): descriptor exhaustion. In a child process (this test binary,
//! re-executed, so the lowered limit touches nothing else) `RLIMIT_NOFILE` is set a little
//! above what is open; then connections, pipes and shared-memory channels are opened until
//! the limit bites. Each failure must be the typed `Error::TooManyOpenFiles` (never a panic,
//! a hang or an unrelated error), and once some descriptors are closed everything works
//! again: the backlog is accepted, new connections carry messages.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::LONG;
use ipckit::{Connection, Error, MessageReceiver, MessageSender};

const CHILD_ENV: &str = "IPCKIT_FAULT_FD_CHILD";

fn set_nofile(n: u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = n;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
}

fn is_fd_error(e: &Error) -> bool {
    matches!(e, Error::TooManyOpenFiles { .. })
}

/// Opens connections to `url` until the limit bites; returns (clients, accepted, error).
fn exhaust(listener: &mut ipckit::Listener, url: &str) -> (Vec<Connection>, Vec<Connection>) {
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    for i in 0..10_000 {
        match ipckit::connect_timeout(url, LONG) {
            Ok(c) => clients.push(c),
            Err(e) => {
                assert!(is_fd_error(&e), "{url}: connect #{i} failed with {e:?}");
                println!("{url}: connect #{i}: {e}");
                return (clients, accepted);
            }
        }
        match listener.accept_timeout(LONG) {
            Ok(c) => accepted.push(c),
            Err(e) => {
                assert!(is_fd_error(&e), "{url}: accept #{i} failed with {e:?}");
                println!("{url}: accept #{i}: {e}");
                return (clients, accepted);
            }
        }
    }
    panic!("{url}: 10,000 connections under a limit of a few dozen descriptors");
}

/// The limit bites, then recovers, for one connection-oriented URL.
fn exhaust_and_recover(url: &str) {
    let mut listener = ipckit::bind(url).expect("bind");
    let url = listener.endpoint().to_string();
    let (mut clients, mut accepted) = exhaust(&mut listener, &url);
    assert!(!clients.is_empty(), "{url}: not a single connection");
    // Other objects fail the same typed way while the table is full.
    if let Err(e) = ipckit::pipe::duplex() {
        assert!(is_fd_error(&e), "pipe::duplex under exhaustion: {e:?}");
    }
    // Free some descriptors: everything works again. Half the pairs are dropped; if the
    // limit bit on `accept`, the last client's connection still waits in the backlog and
    // must be accepted now (with its peer still open) so that it pairs with its client.
    let keep = clients.len() / 2;
    let mut dropped = clients.split_off(keep);
    let pending = dropped.len() - accepted.len().saturating_sub(keep);
    accepted.truncate(keep);
    let first_pending = dropped.len() - pending;
    for (i, client) in dropped.iter_mut().enumerate().skip(first_pending) {
        let mut s = listener
            .accept_timeout(LONG)
            .expect("accept the backlog after recovery");
        client.send_timeout(b"late", LONG).unwrap();
        assert_eq!(
            s.recv_timeout(LONG).unwrap(),
            b"late",
            "{url}: backlog connection {i}"
        );
    }
    drop(dropped);
    let mut c = ipckit::connect_timeout(url.as_str(), LONG).expect("connect after recovery");
    let mut s = listener
        .accept_timeout(LONG)
        .expect("accept after recovery");
    c.send_timeout(b"after", LONG).unwrap();
    assert_eq!(s.recv_timeout(LONG).unwrap(), b"after");
    for (c, s) in clients.iter_mut().zip(&mut accepted) {
        c.send_timeout(b"x", LONG).unwrap();
        assert_eq!(s.recv_timeout(LONG).unwrap(), b"x");
    }
    println!("{url}: {} connections, recovered", keep + 1);
}

/// The child's work: runs with a limit of open + 24 descriptors.
fn child() {
    let dir = common::tempdir();
    let open = common::fd_count() as u64;
    set_nofile(open + 24);
    // A connection takes descriptors on both sides, so whether `connect` or `accept` meets
    // the limit first depends on what is open already: run each transport twice, the
    // second time with one more descriptor held, so both paths are exercised whatever the
    // environment left open.
    for shift in [false, true] {
        let _held = shift.then(|| std::fs::File::open("/dev/null").unwrap());
        exhaust_and_recover(&format!("unix://{}/fd-{shift}.sock", dir.path().display()));
        exhaust_and_recover("tcp://127.0.0.1:0");
        exhaust_and_recover(&format!(
            "shm://ipckit-fault-fd-{}-{shift}",
            std::process::id()
        ));
    }
    // Creating endpoints under exhaustion: typed errors, then success.
    let mut hog = Vec::new();
    loop {
        match ipckit::pipe::duplex() {
            Ok(p) => hog.push(p),
            Err(e) => {
                assert!(is_fd_error(&e), "pipe::duplex: {e:?}");
                break;
            }
        }
        assert!(hog.len() < 10_000);
    }
    // A pipe pair takes four descriptors: fill the last few singly.
    let mut singles = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        singles.push(f);
        assert!(singles.len() < 100);
    }
    let url = format!("unix://{}/late.sock", dir.path().display());
    match ipckit::bind(url.as_str()) {
        Err(e) => assert!(is_fd_error(&e), "bind under exhaustion: {e:?}"),
        Ok(_) => panic!("bind succeeded with no descriptor free"),
    }
    hog.clear();
    singles.clear();
    ipckit::bind(url.as_str()).expect("bind after recovery");
    println!("child ok");
}

#[test]
fn descriptor_exhaustion_is_typed_and_recovers() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "descriptor_exhaustion_is_typed_and_recovers",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("wait for the child"),
        Err(_) => {
            // SAFETY: kill(2) with a pid of our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the child hangs (killed it)");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "child ok"),
        "child failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{stdout}");
}
