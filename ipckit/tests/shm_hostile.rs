//! A hostile process scribbles over the `shm://` segments of this process while it receives.
//! Kept in a test binary of its own: the scribbler attacks every ipckit segment this process
//! has open, so no other test may run beside it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipckit::{MessageReceiver, MessageSender};

const T: Duration = Duration::from_secs(10);
const PEER: &str = env!("CARGO_BIN_EXE_ipckit-shm-peer");

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

/// The scribbler process, killed and reaped when dropped.
struct Scribbler(Child);

impl Scribbler {
    fn spawn(pid: u32, secs: f64) -> Scribbler {
        let mut child = Command::new(PEER)
            .args(["scribble", &pid.to_string(), &secs.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ipckit-shm-peer");
        let out = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            lines.for_each(drop);
        });
        assert_eq!(rx.recv_timeout(T).expect("scribbler started"), "ready");
        Scribbler(child)
    }

    fn finished_within(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Scribbler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.finished_within(T);
    }
}

/// A third process writes random bytes over the connection's segments (found through
/// /proc/PID/fd) while this process receives. Every call must come back, within its timeout,
/// with a message or a typed error. `IPCKIT_HOSTILE_SECS` makes it run longer.
#[test]
fn hostile_writer_causes_typed_errors_only() {
    let secs: f64 = common::env_or("IPCKIT_HOSTILE_SECS", 10.0);
    let name = format!("t-hostile-{}", std::process::id());
    let url = format!("shm://{name}?capacity=64K");
    let mut listener = ipckit::bind(&url).unwrap();
    let mut client = ipckit::connect(&url).unwrap();
    let mut server = listener.accept_timeout(T).unwrap();
    let sender = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let (mut ok, mut errors) = (0u64, 0u64);
        while Instant::now() < end {
            match client.send_timeout(&pattern(300, 1), Duration::from_millis(200)) {
                Ok(()) => ok += 1,
                Err(_) => errors += 1,
            }
        }
        (ok, errors)
    });
    let mut scribbler = Scribbler::spawn(std::process::id(), secs);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut messages, mut typed_errors) = (0u64, 0u64);
    let mut buf = Vec::new();
    let slice = Duration::from_millis(200);
    while Instant::now() < end {
        let start = Instant::now();
        match server.recv_into_timeout(&mut buf, slice) {
            Ok(()) => {
                messages += 1;
                assert!(buf.len() <= server.as_shm().unwrap().max_message_size());
            }
            Err(e) => {
                typed_errors += 1;
                let _ = e.to_string();
            }
        }
        // Within its timeout, plus one liveness slice and scheduling slack.
        assert!(
            start.elapsed() < slice + Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    let (sent_ok, send_errors) = sender.join().expect("sender thread did not panic");
    eprintln!(
        "hostile run: received {messages} messages and {typed_errors} typed errors; \
         sender {sent_ok} ok, {send_errors} errors"
    );
    assert!(messages + typed_errors > 0);
    assert!(scribbler.finished_within(T));
}
