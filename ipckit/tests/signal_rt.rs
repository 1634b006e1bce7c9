//! Real-time signals with payloads cross process boundaries in order, none lost.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_ipckit-shm-peer");

#[test]
fn queued_signals_carry_their_payload_in_order() {
    let n = 50;
    let mut child = Command::new(PEER)
        .args(["rt-echo", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t = Duration::from_secs(10);
    assert_eq!(rx.recv_timeout(t).unwrap(), "ready");
    let sig = ipckit::signal::sigrtmin() + 1;
    for v in 0..n {
        ipckit::signal::queue(pid, sig, 1000 + v).unwrap();
    }
    for v in 0..n {
        let line = rx.recv_timeout(t).expect("the child reports every signal");
        assert_eq!(line, format!("{} {}", 1000 + v, std::process::id()));
    }
    let watch = ipckit::signal::ProcessWatch::new(pid).unwrap();
    assert!(watch.wait_exit_timeout(t).unwrap());
    let end = Instant::now() + t;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "child reaped");
        std::thread::sleep(Duration::from_millis(5));
    }
}
