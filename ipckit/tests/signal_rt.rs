//! Real-time signals with payloads cross process boundaries in order, none lost.

mod common;

use std::time::Duration;

use common::Peer;

const PEER: &str = env!("CARGO_BIN_EXE_ipckit-shm-peer");

#[test]
fn queued_signals_carry_their_payload_in_order() {
    let n = 50;
    let mut peer = Peer::start_bin(PEER, &["rt-echo", &n.to_string()]);
    let pid = peer.id();
    peer.expect_line("ready");
    let sig = ipckit::signal::sigrtmin() + 1;
    for v in 0..n {
        ipckit::signal::queue(pid, sig, 1000 + v).unwrap();
    }
    for v in 0..n {
        assert_eq!(
            peer.line(Duration::from_secs(10)),
            format!("{} {}", 1000 + v, std::process::id())
        );
    }
    let watch = ipckit::signal::ProcessWatch::new(pid).unwrap();
    assert!(watch.wait_exit_timeout(Duration::from_secs(10)).unwrap());
    peer.expect_success();
}
