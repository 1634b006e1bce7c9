//! Fault injection (issue 9): an EINTR storm. A signal whose handler is installed without
//! `SA_RESTART` hits the sending and the receiving thread every 50 µs for a few seconds,
//! so every blocking system call (read, write, poll, futex wait) keeps failing with EINTR.
//! Over `unix://` and `shm://` (adaptive and blocking waits): every message arrives intact
//! and in order, no call returns `Interrupted` or any other spurious error, and timeouts are
//! neither cut short nor much extended by the interruptions.

mod common;
#[path = "common/storm.rs"]
mod storm;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{LONG, SLACK};
use ipckit::{Error, MessageReceiver, MessageSender};
use storm::{install_handler, storm, Target};

/// How long each storm lasts.
const STORM: Duration = Duration::from_secs(3);

fn msg(i: usize) -> Vec<u8> {
    let len = [0usize, 1, 64, 4000, 70_000][i % 5];
    (0..len).map(|k| (k as u8) ^ (i as u8)).collect()
}

/// Streams messages from one thread to another (and echoes a few back) under the storm.
fn run(url: &str) {
    install_handler();
    let mut listener = ipckit::bind(url).expect("bind");
    let url = listener.endpoint().to_string();
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let signals = storm(targets.clone(), Vec::new(), stop.clone());
    let received = Arc::new(AtomicUsize::new(0));

    let client = {
        let (targets, stop, url) = (targets.clone(), stop.clone(), url.clone());
        std::thread::spawn(move || {
            let _t = Target::new(&targets);
            let mut c = ipckit::connect_timeout(url.as_str(), LONG).expect("connect");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = c.send_timeout(&msg(i), LONG) {
                    panic!("send {i} under the storm: {e:?}");
                }
                i += 1;
            }
            c.send_timeout(b"end", LONG).expect("send end");
            // The server's timed waits, then its echo.
            let mut buf = Vec::new();
            c.recv_into_timeout(&mut buf, LONG).expect("echo");
            assert_eq!(buf, b"end");
            i
        })
    };

    let _t = Target::new(&targets);
    let mut server = listener.accept_timeout(LONG).expect("accept");
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut i = 0;
    loop {
        if started.elapsed() > STORM {
            stop.store(true, Ordering::Relaxed);
        }
        match server.recv_into_timeout(&mut buf, LONG) {
            Ok(()) if buf == b"end" => break,
            Ok(()) => {
                assert_eq!(buf, msg(i), "message {i} under the storm");
                i += 1;
            }
            Err(e) => panic!("recv {i} under the storm: {e:?}"),
        }
    }
    received.store(i, Ordering::Relaxed);

    // Timeouts under a storm: nothing is coming, so each call must wait its full time.
    stop.store(false, Ordering::Relaxed);
    let signals2 = storm(targets.clone(), Vec::new(), stop.clone());
    for timeout in [Duration::from_millis(20), Duration::from_millis(300)] {
        let t0 = Instant::now();
        match server.recv_into_timeout(&mut buf, timeout) {
            Err(Error::Timeout { .. }) => {}
            other => panic!("idle recv_timeout({timeout:?}) under the storm gave {other:?}"),
        }
        let took = t0.elapsed();
        assert!(
            took >= timeout,
            "recv_timeout({timeout:?}) returned after {took:?}"
        );
        assert!(
            took < timeout + SLACK,
            "recv_timeout({timeout:?}) returned after {took:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = signals.join().unwrap() + signals2.join().unwrap();
    server.send_timeout(b"end", LONG).expect("echo end");
    let client_sent = client.join().expect("client thread");
    assert_eq!(client_sent, received.load(Ordering::Relaxed));
    assert!(sent > 1000, "only {sent} signals were delivered");
    eprintln!("{url}: {client_sent} messages under {sent} signals");
}

#[test]
fn eintr_storm_unix() {
    let dir = common::tempdir();
    run(&format!("unix://{}/eintr.sock", dir.path().display()));
}

#[test]
fn eintr_storm_tcp() {
    run("tcp://127.0.0.1:0");
}

#[test]
fn eintr_storm_shm_adaptive() {
    run(&format!(
        "shm://ipckit-fault-eintr-a-{}",
        std::process::id()
    ));
}

#[test]
fn eintr_storm_shm_block() {
    run(&format!(
        "shm://ipckit-fault-eintr-b-{}?wait=block",
        std::process::id()
    ));
}
