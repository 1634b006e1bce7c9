//! Fault injection (issue 9): a peer that never reads. A server has two clients (separate
//! processes): one connects and then never reads, the other echoes. The server floods the
//! first until the kernel buffers (or the ring) are full: `send_timeout` then returns
//! `Timeout` within its time, our memory stays bounded (a stream keeps at most the unsent
//! tail of one message), and the echoing client keeps its round trips meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{Peer, LONG, SLACK};
use ipckit::{Error, MessageReceiver, MessageSender};

/// Private resident memory (heap, stacks): shared mappings such as the rings of `shm://`
/// are the transport's fixed buffers, not memory the sender accumulates.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn run(url: &str) {
    let mut listener = ipckit::bind(url).expect("bind");
    let url = listener.endpoint().to_string();
    let _stuck_peer = Peer::spawn(&["connect", &url, "hold"]);
    let mut stuck = listener
        .accept_timeout(LONG)
        .expect("accept the stuck peer");
    let _echo_peer = Peer::spawn(&["connect", &url, "echo"]);
    let mut live = listener
        .accept_timeout(LONG)
        .expect("accept the echoing peer");

    let msg = vec![0x5au8; 64 << 10];
    let rss_before = rss_kib();
    // Fill whatever buffers there are.
    let mut sent = 0usize;
    let mut timeouts = 0;
    for _ in 0..20_000 {
        match stuck.send_timeout(&msg, Duration::from_millis(20)) {
            Ok(()) => sent += 1,
            Err(Error::Timeout { .. }) => {
                timeouts += 1;
                if timeouts == 3 {
                    break;
                }
            }
            Err(e) => panic!("send to a peer that does not read: {e:?}"),
        }
    }
    assert_eq!(
        timeouts, 3,
        "20,000 sends of 64 KiB never filled the buffers"
    );
    // Now sends time out, on time, and cost no memory. (TCP may still take a little now
    // and then, as the receiver's buffer grows by autotuning: counted, not refused.)
    let mut late_accepts = 0;
    for timeout in [Duration::from_millis(1), Duration::from_millis(50)] {
        for _ in 0..10 {
            let t0 = Instant::now();
            match stuck.send_timeout(&msg, timeout) {
                Err(Error::Timeout { .. }) => {
                    let took = t0.elapsed();
                    assert!(took >= timeout, "send_timeout({timeout:?}) took {took:?}");
                }
                Ok(()) => late_accepts += 1,
                Err(e) => panic!("send_timeout({timeout:?}) to a full peer gave {e:?}"),
            }
            let took = t0.elapsed();
            assert!(
                took < timeout + SLACK,
                "send_timeout({timeout:?}) took {took:?}"
            );
        }
    }
    assert!(
        late_accepts <= 10,
        "{late_accepts} of 20 sends to a full peer succeeded"
    );
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 << 10,
        "{url}: memory grew by {grown} KiB while {sent} messages of 64 KiB went to a peer that never reads"
    );

    // The other client is unaffected.
    let mut buf = Vec::new();
    let mut worst = Duration::ZERO;
    for i in 0..200u32 {
        let m = i.to_le_bytes();
        let t0 = Instant::now();
        live.send_timeout(&m, LONG)
            .expect("send to the echoing peer");
        live.recv_into_timeout(&mut buf, LONG).expect("echo");
        assert_eq!(buf, m);
        worst = worst.max(t0.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "{url}: a round trip to the live peer took {worst:?}"
    );
    eprintln!(
        "{url}: {sent} x 64 KiB buffered for the stuck peer, memory +{grown} KiB, worst live round trip {worst:?}"
    );
}

#[test]
fn never_reading_peer_unix() {
    let dir = common::tempdir();
    run(&format!("unix://{}/slow.sock", dir.path().display()));
}

#[test]
fn never_reading_peer_tcp() {
    run("tcp://127.0.0.1:0");
}

#[test]
fn never_reading_peer_shm() {
    run(&format!("shm://ipckit-fault-slow-{}", std::process::id()));
}
