//! Helper peer of the ipckit-zenoh tests (run in a network namespace by the namespace test).
//!
//! - `ipckit-zenoh-peer serve URL`: serves `svc/echo` (replies `echo:` + request) and
//!   publishes a counter on `data/tick` every 20 ms; prints `ready NODE` once both are
//!   declared. Runs until killed, at most 120 s.
//! - `ipckit-zenoh-peer client URL`: waits for a node serving `svc/echo`, subscribes to
//!   `data/**`, prints `data TOPIC N` for 3 messages, `reply TEXT` for one request, then
//!   `left NODE` when that node goes away. Each step has a timeout; exits 0 when all happened.
//! - `ipckit-zenoh-peer local-pub URL TOPIC COUNT`: publishes COUNT messages `msg-I` on a
//!   `bus://local` URL, one every 20 ms, once a subscriber of TOPIC is there (the gateway).
//! - `ipckit-zenoh-peer sub URL PATTERN COUNT`: prints `data TOPIC PAYLOAD` for COUNT
//!   messages (works for `bus://local` and `bus://zenoh` URLs), at most 30 s each.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipckit::bus::PeerEvent;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn serve(url: &str) -> ipckit::Result<()> {
    let bus = ipckit_zenoh::Bus::open(url)?;
    let _h = bus.serve("svc/echo", |m| [b"echo:", m.payload()].concat())?;
    bus.publish_typed("data/tick", &0u64)?;
    say(&format!("ready {:016x}", bus.node_id()));
    let start = Instant::now();
    let mut n = 1u64;
    while start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
        bus.publish_typed("data/tick", &n)?;
        n += 1;
    }
    Ok(())
}

fn client(url: &str) -> ipckit::Result<()> {
    let t = Duration::from_secs(30);
    let bus = ipckit_zenoh::Bus::open(url)?;
    let server = bus.wait_for(|p| p.serves.iter().any(|s| s == "svc/echo"), t)?;
    say(&format!("found {:016x}", server.node_id));
    let mut watch = bus.try_watch()?;
    let mut sub = bus.subscribe("data/**")?;
    for _ in 0..3 {
        let (topic, n): (String, u64) = sub.recv_typed_timeout(t)?;
        say(&format!("data {topic} {n}"));
    }
    let reply = bus.request("svc/echo", b"hi", t)?;
    say(&format!("reply {}", String::from_utf8_lossy(&reply)));
    let deadline = Instant::now() + t;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match watch.next_timeout(left)? {
            PeerEvent::Left(p) if p.node_id == server.node_id => {
                say(&format!("left {:016x}", p.node_id));
                break;
            }
            e => {
                if std::env::var_os("IPCKIT_ZENOH_PEER_DEBUG").is_some() {
                    say(&format!("event {e:?}"));
                }
            }
        }
    }
    // After the responder left, a request finds nobody to ask.
    match bus.request("svc/echo", b"again", Duration::from_secs(5)) {
        Err(ipckit::Error::ConnectionRefused { .. }) => say("norespond refused"),
        Err(ipckit::Error::Timeout { .. }) => say("norespond timeout"),
        other => say(&format!("norespond unexpected {other:?}")),
    }
    Ok(())
}

fn local_pub(url: &str, topic: &str, count: u32) -> ipckit::Result<()> {
    let bus = ipckit::bus::Bus::open(url)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait for a subscriber (the gateway) so that nothing is published into the void.
    while !bus.peers().iter().any(|p| {
        p.subscribes
            .iter()
            .any(|s| ipckit::bus::Pattern::parse(s).is_ok_and(|p| p.matches(topic)))
    }) {
        if Instant::now() > deadline {
            return Err(ipckit::Error::Timeout { after: None });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    say("subscribed");
    for i in 0..count {
        bus.publish(topic, format!("msg-{i}").as_bytes())?;
        std::thread::sleep(Duration::from_millis(20));
    }
    say("done");
    // Stay a little so that the last messages are read from this node's ring.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

fn sub(url: &str, pattern: &str, count: u32) -> ipckit::Result<()> {
    let t = Duration::from_secs(30);
    if url.starts_with("bus://zenoh") {
        let bus = ipckit_zenoh::Bus::open(url)?;
        let mut s = bus.subscribe(pattern)?;
        say("subscribed");
        for _ in 0..count {
            let m = s.recv_timeout(t)?;
            say(&format!(
                "data {} {}",
                m.topic(),
                String::from_utf8_lossy(m.payload())
            ));
        }
    } else {
        let bus = ipckit::bus::Bus::open(url)?;
        let mut s = bus.subscribe(pattern)?;
        say("subscribed");
        for _ in 0..count {
            let m = s.recv_timeout(t)?;
            say(&format!(
                "data {} {}",
                m.topic(),
                String::from_utf8_lossy(m.payload())
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u32>().ok());
    let r = match (args.first().map(String::as_str), args.get(1)) {
        (Some("serve"), Some(url)) => serve(url),
        (Some("client"), Some(url)) => client(url),
        (Some("local-pub"), Some(url)) if args.len() == 4 && num(3).is_some() => {
            local_pub(url, &args[2], num(3).unwrap_or(0))
        }
        (Some("sub"), Some(url)) if args.len() == 4 && num(3).is_some() => {
            sub(url, &args[2], num(3).unwrap_or(0))
        }
        _ => {
            eprintln!(
                "usage: ipckit-zenoh-peer serve URL | client URL | local-pub URL TOPIC COUNT \
                 | sub URL PATTERN COUNT"
            );
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipckit-zenoh-peer: {e}");
            say(&format!("error {e}"));
            ExitCode::FAILURE
        }
    }
}
