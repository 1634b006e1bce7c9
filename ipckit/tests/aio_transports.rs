//! Async connections (`ipckit::aio`) over every transport: messages of every size both
//! ways, a dead shared-memory peer detected while awaiting, and an idle async shared-memory
//! receiver that costs no CPU.
#![cfg(feature = "tokio")]

mod common;

use std::time::{Duration, Instant};

use common::{assert_pattern, pattern, Peer, LONG};
use ipckit::aio::{self, AsyncConnection};

const SHM_PEER: &str = env!("CARGO_BIN_EXE_ipckit-shm-peer");

/// Sends every size from `a` to `b` and back, concurrently (so large messages need the
/// two sides to take turns through full buffers).
async fn exchange(a: &mut AsyncConnection, b: &mut AsyncConnection, sizes: &[usize], what: &str) {
    for (i, &size) in sizes.iter().enumerate() {
        let msg = pattern(i, size);
        let (sent, got) = tokio::join!(a.send_timeout(&msg, LONG), b.recv_timeout(LONG));
        sent.unwrap_or_else(|e| panic!("{what}: send of {size} bytes: {e}"));
        let got = got.unwrap_or_else(|e| panic!("{what}: recv of {size} bytes: {e}"));
        assert_pattern(&got, i, size, what);
        // Sized to the message, not to the largest allowed (16 MiB for a datagram).
        assert!(
            got.capacity() <= size.max(64 << 10),
            "{what}: {size} bytes came in a vector of {} bytes",
            got.capacity()
        );
        let (sent, got) = tokio::join!(b.send_timeout(&got, LONG), a.recv_timeout(LONG));
        sent.unwrap_or_else(|e| panic!("{what}: reply of {size} bytes: {e}"));
        assert_pattern(&got.unwrap(), i, size, what);
    }
}

#[test]
fn every_duplex_transport_both_ways() {
    common::watchdog();
    let dir = common::tempdir();
    let d = dir.path().display();
    let id = std::process::id();
    let cases = [
        (format!("unix://{d}/s.sock"), &[0, 1, 64, 4096, 1 << 20][..]),
        (
            format!("unix+seqpacket://{d}/p.sock"),
            &[1, 64, 4096, 100_000][..],
        ),
        (
            "tcp://127.0.0.1:0".to_owned(),
            &[0, 1, 64, 4096, 1 << 20][..],
        ),
        (format!("shm://aio-{id}"), &[0, 1, 64, 4096, 1 << 20][..]),
        (
            format!("shm://aio-block-{id}?wait=block&capacity=65536"),
            &[0, 64, 30_000][..],
        ),
        (format!("shm://aio-spin-{id}?wait=spin"), &[0, 64, 4096][..]),
    ];
    common::rt().block_on(async {
        for (url, sizes) in &cases {
            let mut listener =
                aio::bind(url.as_str()).unwrap_or_else(|e| panic!("bind {url}: {e}"));
            let bound = listener.endpoint().to_string();
            let (client, server) = tokio::join!(
                aio::connect_timeout(bound.as_str(), LONG),
                listener.accept_timeout(LONG)
            );
            let mut client = client.unwrap_or_else(|e| panic!("connect {url}: {e}"));
            let mut server = server.unwrap_or_else(|e| panic!("accept {url}: {e}"));
            exchange(&mut client, &mut server, sizes, url).await;
            // Typed messages go through the same path (the second and third reuse the
            // buffer the first was encoded in, whatever it held).
            client.send_typed(&("typed", 7u32)).await.unwrap();
            let (w, n): (String, u32) = server.recv_typed().await.unwrap();
            assert_eq!((w.as_str(), n), ("typed", 7));
            client.send_typed(&("a longer word", 8u32)).await.unwrap();
            client.send_typed(&("x", 9u32)).await.unwrap();
            let (w, n): (String, u32) = server.recv_typed().await.unwrap();
            assert_eq!((w.as_str(), n), ("a longer word", 8));
            let (w, n): (String, u32) = server.recv_typed().await.unwrap();
            assert_eq!((w.as_str(), n), ("x", 9));
            // The peer closing is Disconnected, not a hang.
            drop(client);
            let r = server.recv_timeout(LONG).await;
            assert!(
                matches!(r, Err(ipckit::Error::Disconnected)),
                "{url}: after close: {r:?}"
            );
        }
    });
}

#[test]
fn one_way_transports() {
    common::watchdog();
    let dir = common::tempdir();
    let d = dir.path().display();
    let id = std::process::id();
    let urls = [
        format!("fifo://{d}/f"),
        format!("mq:///aio-{id}"),
        format!("shm+mpsc://aio-mpsc-{id}"),
        format!("unix+dgram://{d}/d.sock"),
        format!("queue://{d}/q"),
    ];
    common::rt().block_on(async {
        for url in &urls {
            let mut listener =
                aio::bind(url.as_str()).unwrap_or_else(|e| panic!("bind {url}: {e}"));
            let mut tx = aio::connect_timeout(url.as_str(), LONG)
                .await
                .unwrap_or_else(|e| panic!("connect {url}: {e}"));
            // The receiver starts waiting before anything is sent.
            let recv = async {
                let mut rx = listener.accept_timeout(LONG).await?;
                let mut got = Vec::new();
                for _ in 0..20 {
                    got.push(rx.recv_timeout(LONG).await?);
                }
                Ok::<_, ipckit::Error>(got)
            };
            let send = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                for i in 0..20 {
                    tx.send_timeout(&pattern(i, 100), LONG).await?;
                }
                Ok::<_, ipckit::Error>(())
            };
            let (got, sent) = tokio::join!(recv, send);
            sent.unwrap_or_else(|e| panic!("{url}: send: {e}"));
            let got = got.unwrap_or_else(|e| panic!("{url}: recv: {e}"));
            for (i, m) in got.iter().enumerate() {
                assert_pattern(m, i, 100, url);
                // Sized to the message, not to the largest allowed (16 MiB for a datagram).
                assert!(
                    m.capacity() <= 64 << 10,
                    "{url}: a vector of {}",
                    m.capacity()
                );
            }
        }
    });
}

/// utime + stime of a `stat` file, in clock ticks.
fn ticks_of(path: &std::path::Path) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0;
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU ticks of the threads doing the async waiting: this one (it runs the current-thread
/// runtime) and ipckit's futex watchers. Other tests of this binary run in parallel in the
/// same process, so the process-wide figure of /proc/self/stat would count them too.
fn cpu_ticks() -> u64 {
    let mut total = ticks_of(std::path::Path::new("/proc/thread-self/stat"));
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("ipckit-futex") {
            total += ticks_of(&task.path().join("stat"));
        }
    }
    total
}

#[test]
fn idle_async_shm_receiver_costs_no_cpu_and_sees_a_killed_peer() {
    common::watchdog();
    let url = format!("shm://aio-idle-{}", std::process::id());
    common::rt().block_on(async {
        let mut listener = aio::bind(url.as_str()).unwrap();
        let mut peer = Peer::start_bin(SHM_PEER, &["echo", &url]);
        let mut conn = listener.accept_timeout(LONG).await.unwrap();
        peer.expect_line("ready");
        conn.send_timeout(b"ping", LONG).await.unwrap();
        assert_eq!(conn.recv_timeout(LONG).await.unwrap(), b"ping");

        // Idle: the peer sleeps in its blocking receive, we in our async one.
        let before = cpu_ticks();
        let r = conn.recv_timeout(Duration::from_secs(2)).await;
        let used = cpu_ticks() - before;
        assert!(matches!(r, Err(ipckit::Error::Timeout { .. })), "{r:?}");
        // Clock ticks are 10 ms: an idle wait may cost at most a tick or two of liveness
        // checks, never the 200 ticks of a spinning receiver.
        assert!(
            used <= 3,
            "idle async receive used {used} ticks of CPU in 2 s"
        );

        // A receive in progress learns of the peer's death.
        let waiting = tokio::spawn(async move {
            let start = Instant::now();
            (conn.recv_timeout(LONG).await, start.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.kill();
        let (r, took) = waiting.await.unwrap();
        assert!(matches!(r, Err(ipckit::Error::Disconnected)), "{r:?}");
        assert!(took < Duration::from_secs(2), "noticed after {took:?}");
    });
}
