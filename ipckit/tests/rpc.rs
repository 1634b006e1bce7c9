//! RPC and promises across real processes: the server (or the fulfilling side) runs in
//! `ipckit-rpc-peer`. Every wait is bounded.
#![cfg(feature = "tokio")]

#[path = "common/calc.rs"]
mod calc;
mod common;
#[path = "common/storm.rs"]
mod storm;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use calc::{Req, Resp};
use common::{Peer, LONG};
use ipckit::rpc::{BlockingClient, Client};
use ipckit::{Error, MessageReceiver, MessageSender};

const RPC_PEER: &str = env!("CARGO_BIN_EXE_ipckit-rpc-peer");

/// A server process on `url`, ready.
fn server(url: &str) -> ServerPeer {
    let mut peer = Peer::start_bin(RPC_PEER, &["serve", url]);
    peer.expect_line("ready");
    ServerPeer {
        peer,
        shm_name: url
            .strip_prefix("shm://")
            .map(|rest| rest.split('?').next().unwrap_or(rest).to_owned()),
    }
}

/// A server peer. The tests end it with SIGKILL, so its `shm://` listener never removes its
/// name: when dropped, it checks that the name is then seen as stale (nobody holds it) and
/// removes it, as `ipckit rm` or `ipckit::shm::cleanup_stale` would after a crash. (The
/// names used to stay in /dev/shm after every run of this file.)
struct ServerPeer {
    peer: Peer,
    shm_name: Option<String>,
}

impl std::ops::Deref for ServerPeer {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl std::ops::DerefMut for ServerPeer {
    fn deref_mut(&mut self) -> &mut Peer {
        &mut self.peer
    }
}

impl Drop for ServerPeer {
    fn drop(&mut self) {
        self.peer.kill();
        let Some(name) = &self.shm_name else { return };
        let seen = ipckit::shm::list().into_iter().find(|i| &i.name == name);
        if let Some(info) = seen {
            let _ = ipckit::shm::remove(name);
            if !std::thread::panicking() {
                assert!(
                    !info.in_use,
                    "{name}: still held after its server was killed"
                );
            }
        }
    }
}

fn urls(tag: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = common::tempdir();
    let id = std::process::id();
    let urls = vec![
        format!("unix://{}/rpc-{tag}.sock", dir.path().display()),
        format!("shm://rpc-{tag}-{id}"),
    ];
    (dir, urls)
}

async fn client(url: &str) -> Client<Req, Resp> {
    Client::connect_timeout(url, LONG)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

#[test]
fn calls_many_in_flight_and_out_of_order() {
    common::watchdog();
    let (_dir, urls) = urls("many");
    for url in &urls {
        let mut srv = server(url);
        common::rt().block_on(async {
            let c = client(url).await;
            assert_eq!(c.call(&Req::Add(2, 3)).await.unwrap(), Resp::Num(5));

            // 10,000 calls in flight on one connection.
            let calls: Vec<_> = (0..10_000i64)
                .map(|i| {
                    let c = c.clone();
                    tokio::spawn(async move { (i, c.call_timeout(&Req::Add(i, 1), LONG).await) })
                })
                .collect();
            for h in calls {
                let (i, r) = h.await.unwrap();
                assert_eq!(
                    r.unwrap_or_else(|e| panic!("{url}: call {i}: {e}")),
                    Resp::Num(i + 1)
                );
            }

            // A slow call does not hold back a fast one: responses come out of order.
            let start = Instant::now();
            let slow = c.call(&Req::Sleep { ms: 400, tag: 1 });
            let fast = async {
                let r = c.call(&Req::Sleep { ms: 10, tag: 2 }).await;
                (r, start.elapsed())
            };
            let (slow, (fast, fast_took)) = tokio::join!(slow, fast);
            assert_eq!(slow.unwrap(), Resp::Tag(1));
            assert_eq!(fast.unwrap(), Resp::Tag(2));
            assert!(
                fast_took < Duration::from_millis(400),
                "fast call took {fast_took:?}"
            );
            assert_eq!(c.in_flight(), 0);
        });
        srv.kill();
    }
}

/// Frame buffers are reused (`rpc::FramePool`): calls of every size in flight at once, some
/// larger than the pool keeps, each get their own bytes back, from the async client and the
/// blocking one.
#[test]
fn echoes_of_every_size_come_back_exact() {
    common::watchdog();
    let dir = common::tempdir();
    let urls = [
        format!("unix://{}/rpc-sizes.sock?max_msg=8M", dir.path().display()),
        format!("shm://rpc-sizes-{}?max_msg=8M", std::process::id()),
    ];
    let sizes = [0usize, 1, 100, 4096, 65_536, 1 << 20, 5 << 20];
    let bytes = |n: usize, call: usize| -> Vec<u8> {
        (0..n)
            .map(|j| (j as u8).wrapping_add((call as u8).wrapping_mul(37)))
            .collect()
    };
    for url in &urls {
        let mut srv = server(url);
        common::rt().block_on(async {
            let c = client(url).await;
            for round in 0..3 {
                let calls: Vec<_> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        let (c, sent) = (c.clone(), bytes(n, round * 10 + i));
                        tokio::spawn(async move {
                            let r = c.call_timeout(&Req::Echo(sent.clone()), LONG).await;
                            (sent, r)
                        })
                    })
                    .collect();
                for h in calls {
                    let (sent, r) = h.await.unwrap();
                    let n = sent.len();
                    let r = r.unwrap_or_else(|e| panic!("{url}: echo of {n} bytes: {e}"));
                    assert!(r == Resp::Bytes(sent), "{url}: echo of {n} bytes differs");
                }
            }
        });
        let mut b = BlockingClient::<Req, Resp>::connect_timeout(url.as_str(), LONG).unwrap();
        for round in 0..2 {
            for (i, &n) in sizes.iter().enumerate().rev() {
                let sent = bytes(n, round * 10 + i);
                let r = b
                    .call_timeout(&Req::Echo(sent.clone()), LONG)
                    .unwrap_or_else(|e| panic!("{url}: blocking echo of {n} bytes: {e}"));
                assert!(
                    r == Resp::Bytes(sent),
                    "{url}: blocking echo of {n} bytes differs"
                );
            }
        }
        srv.kill();
    }
}

#[test]
fn timeout_and_dropped_call_reach_the_server() {
    common::watchdog();
    let (_dir, urls) = urls("cancel");
    for url in &urls {
        let mut srv = server(url);
        common::rt().block_on(async {
            let c = client(url).await;
            let start = Instant::now();
            let r = c
                .call_timeout(
                    &Req::Sleep {
                        ms: 20_000,
                        tag: 11,
                    },
                    Duration::from_millis(100),
                )
                .await;
            let took = start.elapsed();
            assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
            assert!(took < Duration::from_secs(2), "timed out after {took:?}");

            let call = {
                let c = c.clone();
                tokio::spawn(async move {
                    c.call(&Req::Sleep {
                        ms: 20_000,
                        tag: 12,
                    })
                    .await
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            call.abort();
            // The client keeps working.
            assert_eq!(c.call(&Req::Add(1, 1)).await.unwrap(), Resp::Num(2));
        });
        // The server aborted both handlers.
        let mut dropped = BTreeSet::new();
        while dropped.len() < 2 {
            dropped.insert(srv.expect_line("dropped").trim().to_owned());
        }
        assert_eq!(dropped, BTreeSet::from(["11".to_owned(), "12".to_owned()]));
        srv.kill();
    }
}

#[test]
fn killed_server_fails_every_call_in_flight_at_once() {
    common::watchdog();
    let (_dir, urls) = urls("kill");
    for url in &urls {
        let mut srv = server(url);
        common::rt().block_on(async {
            let c = client(url).await;
            let calls: Vec<_> = (0..1000u64)
                .map(|tag| {
                    let c = c.clone();
                    tokio::spawn(async move {
                        c.call_timeout(&Req::Sleep { ms: 30_000, tag }, LONG).await
                    })
                })
                .collect();
            while c.in_flight() < 1000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let start = Instant::now();
            srv.kill();
            for h in calls {
                let r = h.await.unwrap();
                assert!(matches!(r, Err(Error::PeerGone)), "{url}: {r:?}");
            }
            let took = start.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{url}: calls failed after {took:?}"
            );
            // Later calls fail at once too.
            assert!(matches!(
                c.call(&Req::Add(1, 2)).await,
                Err(Error::PeerGone)
            ));
        });
    }
}

#[test]
fn killed_client_is_cleaned_up_and_others_keep_being_served() {
    common::watchdog();
    let (_dir, urls) = urls("client");
    for url in &urls {
        let mut srv = server(url);
        let mut flood = Peer::start_bin(RPC_PEER, &["flood", url, "20"]);
        flood.expect_line("ready");
        flood.kill();
        // The server aborts the dead client's 20 handlers.
        let mut dropped = 0;
        while dropped < 20 {
            srv.expect_line("dropped");
            dropped += 1;
        }
        common::rt().block_on(async {
            let c = client(url).await;
            assert_eq!(c.call(&Req::Add(20, 22)).await.unwrap(), Resp::Num(42));
        });
        srv.kill();
    }
}

#[test]
fn malformed_request_and_panicking_handler_get_typed_errors() {
    common::watchdog();
    let (_dir, urls) = urls("bad");
    for url in &urls {
        let mut srv = server(url);
        // A request whose body is not a `Req`: that caller gets BadRequest.
        let mut raw = ipckit::connect_timeout(url.as_str(), LONG).unwrap();
        let mut frame = vec![1u8];
        frame.extend_from_slice(&77u64.to_le_bytes());
        frame.extend_from_slice(&[0xff, 0xff, 0xff]);
        raw.send_timeout(&frame, LONG).unwrap();
        let reply = raw.recv_timeout(LONG).unwrap();
        assert_eq!(reply[0], 3, "an error response");
        assert_eq!(&reply[1..9], &77u64.to_le_bytes());

        let mut c = BlockingClient::<Req, Resp>::connect_timeout(url.as_str(), LONG).unwrap();
        let r = c.call_timeout(&Req::Panic, LONG);
        assert!(matches!(r, Err(Error::HandlerFailed { .. })), "{r:?}");
        // Garbage that is not even a frame costs the sender its connection, nobody else.
        raw.send_timeout(b"xy", LONG).unwrap();
        let r = raw.recv_timeout(LONG);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(c.call_timeout(&Req::Add(1, 2), LONG).unwrap(), Resp::Num(3));
        srv.kill();
    }
}

#[test]
fn blocking_client_timeout_then_next_call() {
    common::watchdog();
    let (_dir, urls) = urls("blocking");
    let url = &urls[0];
    let mut srv = server(url);
    let mut c = BlockingClient::<Req, Resp>::connect_timeout(url.as_str(), LONG).unwrap();
    let start = Instant::now();
    let r = c.call_timeout(
        &Req::Sleep { ms: 20_000, tag: 5 },
        Duration::from_millis(100),
    );
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(srv.expect_line("dropped").trim(), "5");
    assert_eq!(
        c.call_timeout(&Req::Echo(vec![1, 2, 3]), LONG).unwrap(),
        Resp::Bytes(vec![1, 2, 3])
    );
    srv.kill();
    let r = c.call_timeout(&Req::Add(1, 1), LONG);
    assert!(matches!(r, Err(Error::PeerGone)), "{r:?}");
}

#[test]
fn promises_across_processes() {
    common::watchdog();
    // Fulfilled by another process.
    let (handle, future) = ipckit::promise::pair::<u64>().unwrap();
    let mut p = Peer::start_bin(RPC_PEER, &["promise-fulfil", handle.url(), "4242"]);
    assert_eq!(future.wait_timeout(LONG).unwrap(), 4242);
    p.expect_success();

    // Dropped unfulfilled.
    let (handle, future) = ipckit::promise::pair::<u64>().unwrap();
    let mut p = Peer::start_bin(RPC_PEER, &["promise-drop", handle.url()]);
    let r = future.wait_timeout(LONG);
    assert!(matches!(r, Err(Error::BrokenPromise)), "{r:?}");
    p.expect_success();

    // The fulfilling process killed while holding it (async wait).
    let (handle, future) = ipckit::promise::pair::<u64>().unwrap();
    let mut p = Peer::start_bin(RPC_PEER, &["promise-hang", handle.url()]);
    common::rt().block_on(async {
        let waiting = tokio::spawn(future.get_timeout(LONG));
        p.expect_line("opened");
        p.kill();
        let r = waiting.await.unwrap();
        assert!(matches!(r, Err(Error::BrokenPromise)), "{r:?}");
    });

    // The fulfilling process dies before it even opens the handle.
    let (_handle, future) = ipckit::promise::pair::<u64>().unwrap();
    let mut p = Peer::start_bin(RPC_PEER, &["no-such-mode"]);
    // It may be gone before we watch it: that is BrokenPromise at once.
    let future = future.fulfilled_by(p.id()).map_err(|e| match e {
        Error::BrokenPromise => e,
        e => panic!("{e}"),
    });
    if let Ok(future) = future {
        let start = Instant::now();
        let r = future.wait_timeout(LONG);
        assert!(matches!(r, Err(Error::BrokenPromise)), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    let _ = p.wait(LONG);
}

#[test]
fn signal_storm_neither_fails_calls_nor_bends_timeouts() {
    common::watchdog();
    storm::install_handler();
    let (_dir, urls) = urls("storm");
    for url in &urls {
        let mut srv = server(url);
        let targets = storm::Targets::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _me = storm::Target::new(&targets);
        let signals = storm::storm(targets.clone(), vec![srv.id()], stop.clone());
        let mut blocking =
            BlockingClient::<Req, Resp>::connect_timeout(url.as_str(), LONG).unwrap();
        let started = Instant::now();
        let mut calls = 0i64;
        common::rt().block_on(async {
            let c = client(url).await;
            // A signal every 50 µs for 5 s, to this thread and to the server, while calling.
            while started.elapsed() < Duration::from_secs(5) {
                let r = blocking.call_timeout(&Req::Add(calls, 1), LONG);
                assert_eq!(
                    r.unwrap_or_else(|e| panic!("{url}: blocking call {calls}: {e:?}")),
                    Resp::Num(calls + 1)
                );
                let r = c.call_timeout(&Req::Add(calls, 2), LONG).await;
                assert_eq!(
                    r.unwrap_or_else(|e| panic!("{url}: async call {calls}: {e:?}")),
                    Resp::Num(calls + 2)
                );
                calls += 1;
                if calls % 500 == 0 {
                    for timeout in [Duration::from_millis(20), Duration::from_millis(200)] {
                        let t0 = Instant::now();
                        let r = blocking.call_timeout(&Req::Sleep { ms: 20_000, tag: 0 }, timeout);
                        let took = t0.elapsed();
                        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
                        assert!(
                            took >= timeout && took < timeout + common::SLACK,
                            "blocking {timeout:?}: {took:?}"
                        );
                        let t0 = Instant::now();
                        let r = c
                            .call_timeout(&Req::Sleep { ms: 20_000, tag: 0 }, timeout)
                            .await;
                        let took = t0.elapsed();
                        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
                        assert!(
                            took >= timeout && took < timeout + common::SLACK,
                            "async {timeout:?}: {took:?}"
                        );
                    }
                }
            }
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = signals.join().unwrap();
        eprintln!("{url}: {calls} call pairs under {sent} signals");
        assert!(calls > 100 && sent > 1000, "{calls} calls, {sent} signals");
        srv.kill();
    }
}
