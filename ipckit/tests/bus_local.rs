//! The local bus (`bus://local`) across real processes: wildcards, a publisher killed
//! mid-stream, a subscriber killed while it blocks a publisher, a slow subscriber with the
//! drop policy, 1,000 topics, malformed messages, request/reply. Every blocking call has a
//! timeout.

mod common;

use std::time::{Duration, Instant};

use common::Peer;
use ipckit::bus::{Bus, Overflow, PeerEvent, PeerWatch, SubscribeOptions};
use ipckit::Error;

const T: Duration = Duration::from_secs(10);
const PEER: &str = env!("CARGO_BIN_EXE_ipckit-bus-peer");

fn url(tag: &str, query: &str) -> String {
    format!("bus://local/t-{tag}-{}{query}", std::process::id())
}

fn node_segments(tag: &str) -> Vec<String> {
    let prefix = format!("ipckit.bus.t-{tag}-{}.n.", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn counter(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload.try_into().expect("an 8-byte counter"))
}

#[test]
fn wildcards_across_processes() {
    let u = url("wild", "?overflow=block");
    let bus = Bus::open(&u).unwrap();
    let mut one = bus.subscribe("w/*/c").unwrap();
    let mut any = bus.subscribe("w/**").unwrap();
    let mut none = bus.subscribe("x/**").unwrap();
    let mut a = Peer::start_bin(PEER, &["pub", &u, "w/b/c", "10", "0"]);
    let mut b = Peer::start_bin(PEER, &["pub", &u, "w/b/d/c", "10", "0"]);
    a.expect_line("ready");
    b.expect_line("ready");
    let mut got_any = Vec::new();
    for _ in 0..20 {
        got_any.push(any.recv_timeout(T).unwrap().topic().to_owned());
    }
    assert_eq!(got_any.iter().filter(|t| *t == "w/b/c").count(), 10);
    assert_eq!(got_any.iter().filter(|t| *t == "w/b/d/c").count(), 10);
    for i in 0..10 {
        let m = one.recv_timeout(T).unwrap();
        assert_eq!((m.topic(), counter(m.payload())), ("w/b/c", i));
    }
    assert!(matches!(
        one.recv_timeout(Duration::from_millis(100)),
        Err(Error::Timeout { .. })
    ));
    assert!(matches!(none.try_recv(), Err(Error::WouldBlock)));
}

#[test]
fn publisher_killed_mid_stream() {
    let u = url("pubkill", "");
    let bus = Bus::open(&u).unwrap();
    let mut watch = bus.watch();
    let mut sub = bus.subscribe("k/*").unwrap();
    let mut a = Peer::start_bin(PEER, &["pub", &u, "k/a", "0", "300"]);
    let mut b = Peer::start_bin(PEER, &["pub", &u, "k/b", "0", "300"]);
    a.expect_line("ready");
    b.expect_line("ready");
    let (mut from_a, mut from_b) = (0, 0);
    let deadline = Instant::now() + T;
    while (from_a < 50 || from_b < 50) && Instant::now() < deadline {
        match sub.recv_timeout(T).unwrap().topic() {
            "k/a" => from_a += 1,
            _ => from_b += 1,
        }
    }
    assert!(from_a >= 50 && from_b >= 50, "a {from_a}, b {from_b}");
    let a_pid = a.id();
    // Liveliness: the watcher has seen A join (and publish) ...
    let deadline = Instant::now() + T;
    while !watch.peers().iter().any(|p| p.pid == a_pid) {
        match watch.next_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => {}
            Err(e) => panic!("no Joined event for the publisher: {e}"),
        }
    }
    a.kill();
    // ... and sees it leave.
    let deadline = Instant::now() + T;
    loop {
        match watch.next_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(PeerEvent::Left(p)) if p.pid == a_pid => break,
            Ok(_) => {}
            Err(e) => panic!("no Left event for the killed publisher: {e}"),
        }
    }
    // The survivors keep working.
    let mut after = 0;
    while after < 100 {
        let m = sub.recv_timeout(T).unwrap();
        if m.topic() == "k/b" {
            after += 1;
        }
    }
    assert!(!bus.peers().iter().any(|p| p.pid == a_pid));
    // Its node segment was removed (the registry cleans dead entries).
    assert_eq!(
        node_segments("pubkill").len(),
        2,
        "{:?}",
        node_segments("pubkill")
    );
}

#[test]
fn subscriber_killed_while_blocking_the_publisher() {
    let u = url("subkill", "?timeout_ms=8000");
    let bus = Bus::open(&u).unwrap();
    let mut stall = Peer::start_bin(PEER, &["stall", &u, "s", "4"]);
    stall.expect_line("ready");
    let mut fast = bus
        .subscribe_with(
            "s",
            SubscribeOptions {
                depth: 8,
                overflow: Overflow::DropOldest,
            },
        )
        .unwrap();
    // The stalled subscriber attaches when the topic is declared: publish until it blocks.
    let mut sent = 0;
    loop {
        match bus.publish_with("s", b"x", ipckit::Wait::Never) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 100, "the block-policy subscriber never blocked");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(bus
        .stats()
        .readers
        .iter()
        .any(|r| r.overflow == Overflow::Block));
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stall.kill();
    });
    let t0 = Instant::now();
    bus.publish("s", b"after").unwrap();
    let waited = t0.elapsed();
    killer.join().unwrap();
    assert!(
        waited < Duration::from_secs(3),
        "blocked {waited:?} after the kill"
    );
    // The other subscriber was never affected.
    let mut last = Vec::new();
    while let Ok(m) = fast.try_recv() {
        last = m.into_payload();
    }
    assert_eq!(last, b"after");
    // The registry forgets the dead subscriber.
    let deadline = Instant::now() + T;
    while bus.peers().len() != 1 {
        assert!(Instant::now() < deadline, "dead subscriber still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!bus
        .stats()
        .readers
        .iter()
        .any(|r| r.overflow == Overflow::Block));
    assert_eq!(node_segments("subkill").len(), 1);
}

#[test]
fn slow_subscriber_drops_and_others_get_everything() {
    let u = url("slow", "?overflow=block&depth=64");
    let bus = Bus::open(&u).unwrap();
    let mut slow = bus
        .subscribe_with(
            "f/**",
            SubscribeOptions {
                depth: 8,
                overflow: Overflow::DropOldest,
            },
        )
        .unwrap();
    let mut fast = Peer::start_bin(PEER, &["count", &u, "f/**", "1000"]);
    fast.expect_line("ready");
    // Declare the topic and let the fast subscriber attach before the burst.
    bus.publish("f/x", &u64::MAX.to_le_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..999u64 {
        bus.publish("f/x", &i.to_le_bytes()).unwrap();
    }
    assert_eq!(fast.expect_line("got 1000 drops"), "0");
    let mut got = 0;
    while slow.try_recv().is_ok() {
        got += 1;
    }
    assert_eq!(got, 8);
    assert_eq!(slow.drops(), 1000 - 8);
    let st = bus.stats();
    let drop_reader = st
        .readers
        .iter()
        .find(|r| r.overflow == Overflow::DropOldest)
        .unwrap();
    assert_eq!(drop_reader.drops, 1000 - 8);
    fast.wait(T);
}

/// Two subscriber processes take a publisher's stream in batches (`recv_batch`) under the
/// block policy: each gets every message, in order, in fewer calls than messages.
#[test]
fn batch_receives_across_processes() {
    let u = url("batches", "?overflow=block");
    let bus = Bus::open(&u).unwrap();
    let mut a = Peer::start_bin(PEER, &["batches", &u, "n/**", "50000"]);
    let mut b = Peer::start_bin(PEER, &["batches", &u, "n/**", "50000"]);
    a.expect_line("ready");
    b.expect_line("ready");
    // Both attached before the stream: a subscriber attaches to a node once it publishes a
    // matching topic.
    let deadline = Instant::now() + T;
    while bus.stats().readers.len() < 2 {
        assert!(Instant::now() < deadline, "the subscribers did not attach");
        bus.publish("n/warm", b"").unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..50_000u64 {
        bus.publish_with("n/x", &i.to_le_bytes(), ipckit::Wait::timeout(T))
            .unwrap();
    }
    for p in [&mut a, &mut b] {
        let batches: u64 = p.expect_line("in order 50000 batches").parse().unwrap();
        assert!((1..50_000).contains(&batches), "{batches} batches");
        p.wait(T);
    }
}

#[test]
fn a_thousand_topics() {
    let u = url("many", "?overflow=block&depth=256");
    let bus = Bus::open(&u).unwrap();
    let mut peer = Peer::start_bin(PEER, &["count", &u, "t/**", "1000"]);
    peer.expect_line("ready");
    // Not read until the end: the drop policy keeps it from holding up the publisher.
    let mut exact = bus
        .subscribe_with(
            "t/999",
            SubscribeOptions {
                depth: 16,
                overflow: Overflow::DropOldest,
            },
        )
        .unwrap();
    assert!(matches!(
        bus.subscribe("t/5*").unwrap_err(),
        Error::InvalidName { .. }
    ));
    for i in 0..1000u64 {
        bus.publish(&format!("t/{i}"), &i.to_le_bytes()).unwrap();
    }
    assert_eq!(peer.expect_line("got 1000 drops"), "0");
    let m = exact.recv_timeout(T).unwrap();
    assert_eq!(counter(m.payload()), 999);
    assert!(matches!(exact.try_recv(), Err(Error::WouldBlock)));
    let me = bus
        .peers()
        .into_iter()
        .find(|p| p.node_id == bus.node_id())
        .unwrap();
    assert_eq!(me.publishes.len(), 1000);
}

#[test]
fn malformed_messages_are_typed_errors() {
    let u = url("bad", "");
    let bus = Bus::open(&u).unwrap();
    let mut sub = bus.subscribe("m/x").unwrap();
    let mut peer = Peer::start_bin(PEER, &["malformed", &u, "m/x"]);
    peer.expect_line("ready");
    assert_eq!(sub.recv_timeout(T).unwrap().payload(), b"before");
    assert!(matches!(sub.recv_timeout(T), Err(Error::Corrupted(_))));
    assert!(matches!(sub.recv_timeout(T), Err(Error::Corrupted(_))));
    assert_eq!(sub.recv_timeout(T).unwrap().payload(), b"after");
    assert_eq!(sub.corrupted(), 2);
    // A typed receive of bytes that are not the type: a typed error, and the bus goes on.
    bus.publish("m/x", &[0xff, 0xff, 0xff]).unwrap();
    bus.publish_typed("m/x", &(7u32, "seven")).unwrap();
    assert!(matches!(
        sub.recv_typed_timeout::<(u32, String)>(T),
        Err(Error::Decode { .. })
    ));
    let (topic, v) = sub.recv_typed_timeout::<(u32, String)>(T).unwrap();
    assert_eq!((topic.as_str(), v), ("m/x", (7, "seven".to_owned())));
}

/// A publisher that writes random bytes over its own node segment (header, reader slots,
/// catalog, ring) and the namespace's registry while it publishes: its subscriptions (drop
/// and block policy), taking single messages and batches in turn, get messages or typed
/// errors, never a panic, and every call returns within its timeout. `IPCKIT_SCRIBBLE_MS` runs it longer (default 3 s).
#[test]
fn a_scribbling_publisher_gives_messages_or_typed_errors() {
    let ms: u64 = common::env_or("IPCKIT_SCRIBBLE_MS", 3000);
    let u = url("scribble", "");
    let bus = Bus::open(&u).unwrap();
    let mut dropping = bus.subscribe("h/**").unwrap();
    let block = SubscribeOptions {
        depth: 64,
        overflow: Overflow::Block,
    };
    let mut blocking = bus.subscribe_with("h/**", block).unwrap();
    // The peer scribbles once we read its node, which our receives below attach to.
    let mut peer = Peer::start_bin(PEER, &["scribble", &u, "h/x", &ms.to_string(), "2"]);
    let wait = Duration::from_millis(100);
    let end = Instant::now() + Duration::from_millis(ms) + Duration::from_secs(2);
    let (mut messages, mut corrupted, mut quiet, mut calls) = (0u64, 0u64, 0u64, 0u64);
    while Instant::now() < end {
        let start = Instant::now();
        let sub = if calls % 4 < 2 {
            &mut dropping
        } else {
            &mut blocking
        };
        let r = if calls % 2 == 0 {
            sub.recv_batch_timeout(32, wait, |m| {
                assert!(m.topic().starts_with("h/"), "topic {:?}", m.topic());
                messages += 1;
            })
            .map(drop)
        } else {
            sub.recv_timeout(wait).map(|m| {
                assert!(m.topic().starts_with("h/"), "topic {:?}", m.topic());
                messages += 1;
            })
        };
        calls += 1;
        match r {
            Ok(()) => {}
            Err(Error::Corrupted(_)) => corrupted += 1,
            Err(Error::Timeout { .. }) => quiet += 1,
            Err(e) => panic!("call {calls}: {e:?}"),
        }
        let took = start.elapsed();
        assert!(
            took < wait + Duration::from_secs(2),
            "call {calls} took {took:?}"
        );
    }
    peer.expect_line("ready");
    let scribbles: u64 = peer.expect_line("done").parse().unwrap();
    eprintln!(
        "{scribbles} scribbles: {messages} messages, {corrupted} corrupted, {quiet} timeouts \
         in {calls} calls"
    );
    assert!(scribbles > 0 && messages > 0);
    assert_eq!(dropping.corrupted() + blocking.corrupted(), corrupted);
}

/// Starts a responder process serving `svc/**` on `u` and waits until `watch` sees it (the
/// liveliness events); returns it and its pid.
fn start_responder(u: &str, watch: &mut PeerWatch) -> (Peer, u32) {
    let mut server = Peer::start_bin(PEER, &["serve", u, "svc/**"]);
    server.expect_line("ready");
    let pid = server.id();
    let deadline = Instant::now() + T;
    loop {
        match watch.next_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(PeerEvent::Declared { pid: p, topic, .. }) if p == pid && topic == "svc/**" => break,
            Ok(PeerEvent::Joined(p)) if p.pid == pid && p.serves.contains(&"svc/**".into()) => {
                break
            }
            Ok(_) => {}
            Err(e) => panic!("responder never seen: {e}"),
        }
    }
    (server, pid)
}

#[test]
fn request_reply_across_processes() {
    let u = url("rr", "");
    let bus = Bus::open(&u).unwrap();
    assert!(matches!(
        bus.request("svc/echo", b"x", T),
        Err(Error::ConnectionRefused { .. })
    ));
    let mut watch = bus.watch();
    let (mut server, pid) = start_responder(&u, &mut watch);
    for i in 0..200 {
        let req = format!("hello {i}");
        let rep = bus.request("svc/echo/x", req.as_bytes(), T).unwrap();
        assert_eq!(rep, format!("{pid}:{req}").as_bytes());
    }
    // A responder killed before it answers: the request fails at once, not at its timeout.
    let b2 = bus.clone();
    let hung = std::thread::spawn(move || b2.request("svc/echo", b"hang", T * 3));
    server.expect_line("hanging");
    server.kill();
    let r = hung.join().unwrap();
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    let deadline = Instant::now() + T;
    loop {
        match bus.request("svc/echo", b"x", Duration::from_millis(200)) {
            Err(Error::ConnectionRefused { .. }) => break,
            Err(Error::Timeout { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "dead responder still found");
    }
    // A responder dropped in a process that lives on is withdrawn: a request fails at once
    // (it used to wait for its whole timeout), and the watch says so.
    let (mut server, pid) = start_responder(&u, &mut watch);
    let deadline = Instant::now() + T;
    assert_eq!(
        bus.request("svc/echo/x", b"stop", T).unwrap(),
        format!("{pid}:stop").as_bytes()
    );
    server.expect_line("stopped");
    let r = bus.request("svc/echo", b"x", T);
    assert!(matches!(r, Err(Error::ConnectionRefused { .. })), "{r:?}");
    loop {
        match watch.next_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(PeerEvent::Withdrew { pid: p, topic, .. }) if p == pid && topic == "svc/**" => break,
            Ok(_) => {}
            Err(e) => panic!("withdrawal never seen: {e}"),
        }
    }
    assert!(bus
        .peers()
        .iter()
        .any(|p| p.pid == pid && p.serves.is_empty()));
}

#[cfg(feature = "tokio")]
#[test]
fn async_receive_and_request() {
    let u = url("async", "");
    let bus = Bus::open(&u).unwrap();
    let _h = bus.serve("a/echo", |m| m.payload().to_vec()).unwrap();
    let mut sub = bus.subscribe("a/t").unwrap();
    let rt = common::rt();
    rt.block_on(async {
        let b2 = bus.clone();
        let publisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b2.publish("a/t", b"late").unwrap();
        });
        let m = tokio::time::timeout(T, sub.recv_async())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload(), b"late");
        publisher.await.unwrap();
        let r = bus.request_async("a/echo", b"ping", T).await.unwrap();
        assert_eq!(r, b"ping");
    });
}
