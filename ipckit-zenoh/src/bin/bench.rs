//! `ipckit-zenoh-bench [ROUNDS] [SIZE]`: the `bus-zenoh` round trip beside a plain zenoh
//! put/subscribe ping-pong of the same run, two processes on loopback TCP.
//!
//! This process pings, a copy of it (re-executed) pongs. Each round publishes SIZE bytes
//! (default 64) on `ping` and waits for the same bytes back on `pong`; the pong side receives
//! and publishes back from a thread. `bus-zenoh` uses [`ipckit_zenoh::Bus`] on both sides;
//! `zenoh` uses a zenoh session directly with the same configuration: a publisher with
//! `CongestionControl::Block`, a subscriber with zenoh's default FIFO handler. The two are
//! measured in alternating blocks so that both see the same machine. Prints the median and
//! p99 of each, and the ratio of the medians (issue 7 asks for at most 1.2).
//!
//! Build with `--release`: `cargo run --release --bin ipckit-zenoh-bench`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use zenoh::qos::CongestionControl;
use zenoh::Wait as _;

const T: Duration = Duration::from_secs(10);
const BLOCKS: usize = 5;

fn url(ns: &str, role: &str, port: u16) -> String {
    format!("bus://zenoh/{ns}?{role}=tcp/127.0.0.1:{port}")
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The zenoh configuration `ipckit_zenoh` makes from the same URL.
fn raw_session(role: &str, port: u16) -> Result<zenoh::Session, String> {
    let u = ipckit_zenoh::ZenohUrl::parse(&url("raw", role, port)).map_err(err)?;
    zenoh::open(u.config().map_err(err)?).wait().map_err(err)
}

fn pong_bus(port: u16) -> Result<(), String> {
    let bus = ipckit_zenoh::Bus::open(&url("bench", "connect", port)).map_err(err)?;
    let mut sub = bus.subscribe("ping").map_err(err)?;
    println!("ready");
    loop {
        match sub.recv_timeout(T) {
            Ok(m) => bus.publish("pong", m.payload()).map_err(err)?,
            Err(ipckit::Error::Timeout { .. }) => return Ok(()),
            Err(e) => return Err(err(e)),
        }
    }
}

fn pong_raw(port: u16) -> Result<(), String> {
    let s = raw_session("connect", port)?;
    let publisher = s
        .declare_publisher("raw/pong")
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(err)?;
    let sub = s.declare_subscriber("raw/ping").wait().map_err(err)?;
    println!("ready");
    while let Ok(Some(sample)) = sub.recv_timeout(T) {
        publisher
            .put(sample.payload().clone())
            .wait()
            .map_err(err)?;
    }
    Ok(())
}

fn spawn_pong(role: &str, port: u16) -> Result<std::process::Child, String> {
    let mut child = Command::new(std::env::current_exe().map_err(err)?)
        .args([role, &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(err)?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(err)?;
    if line.trim() != "ready" {
        return Err(format!("the pong process said {line:?}"));
    }
    Ok(child)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

/// Round trips of `rounds` pings through ipckit_zenoh (after warming up).
fn ping_bus(
    bus: &ipckit_zenoh::Bus,
    sub: &mut ipckit_zenoh::Subscriber,
    msg: &[u8],
    rounds: usize,
    out: &mut Vec<Duration>,
) -> Result<(), String> {
    for i in 0..rounds {
        let t0 = Instant::now();
        bus.publish("ping", msg).map_err(err)?;
        let m = sub.recv_timeout(T).map_err(|e| format!("round {i}: {e}"))?;
        let dt = t0.elapsed();
        if m.payload() != msg {
            return Err("pong carried other bytes".into());
        }
        out.push(dt);
    }
    Ok(())
}

fn ping_raw(
    publisher: &zenoh::pubsub::Publisher<'_>,
    sub: &zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    msg: &[u8],
    rounds: usize,
    out: &mut Vec<Duration>,
) -> Result<(), String> {
    for i in 0..rounds {
        let t0 = Instant::now();
        publisher.put(msg.to_vec()).wait().map_err(err)?;
        let s = sub
            .recv_timeout(T)
            .map_err(err)?
            .ok_or_else(|| format!("round {i}: no pong within {T:?}"))?;
        let dt = t0.elapsed();
        if *s.payload().to_bytes() != *msg {
            return Err("pong carried other bytes".into());
        }
        out.push(dt);
    }
    Ok(())
}

fn stats(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let q = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.99))
}

fn bench(rounds: usize, size: usize) -> Result<(), String> {
    let msg = vec![0x5a; size];
    let (pb, pr) = (free_port()?, free_port()?);

    let bus = ipckit_zenoh::Bus::open(&url("bench", "listen", pb)).map_err(err)?;
    let mut bus_sub = bus.subscribe("pong").map_err(err)?;
    let mut bus_child = spawn_pong("pong-bus", pb)?;
    bus.wait_for(|p| p.subscribes.iter().any(|s| s == "ping"), T)
        .map_err(err)?;

    let raw = raw_session("listen", pr)?;
    let raw_pub = raw
        .declare_publisher("raw/ping")
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(err)?;
    let raw_sub = raw.declare_subscriber("raw/pong").wait().map_err(err)?;
    let mut raw_child = spawn_pong("pong-raw", pr)?;
    // The raw ponger's subscription reaches us asynchronously: ping until it answers.
    let deadline = Instant::now() + T;
    loop {
        raw_pub.put(msg.clone()).wait().map_err(err)?;
        if raw_sub
            .recv_timeout(Duration::from_millis(100))
            .map_err(err)?
            .is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("the raw zenoh ponger never answered".into());
        }
    }
    while let Ok(Some(_)) = raw_sub.try_recv() {}

    let (mut b, mut r) = (Vec::new(), Vec::new());
    let warm = (rounds / 10).max(100);
    ping_bus(&bus, &mut bus_sub, &msg, warm, &mut Vec::new())?;
    ping_raw(&raw_pub, &raw_sub, &msg, warm, &mut Vec::new())?;
    for _ in 0..BLOCKS {
        ping_raw(&raw_pub, &raw_sub, &msg, rounds / BLOCKS, &mut r)?;
        ping_bus(&bus, &mut bus_sub, &msg, rounds / BLOCKS, &mut b)?;
    }
    let _ = bus_child.kill();
    let _ = raw_child.kill();
    let _ = bus_child.wait();
    let _ = raw_child.wait();
    let (bm, b99) = stats(&mut b);
    let (rm, r99) = stats(&mut r);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "round trip, {size}-byte messages, {} rounds each, two processes on loopback TCP",
        b.len()
    );
    let _ = writeln!(out, "{:<10} {:>12} {:>12}", "", "median µs", "p99 µs");
    let _ = writeln!(out, "{:<10} {:>12.1} {:>12.1}", "zenoh", rm, r99);
    let _ = writeln!(out, "{:<10} {:>12.1} {:>12.1}", "bus-zenoh", bm, b99);
    let _ = writeln!(out, "bus-zenoh / zenoh (medians): {:.3}", bm / rm);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = || args.get(1).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    let r = match args.first().map(String::as_str) {
        Some("pong-bus") => pong_bus(port()),
        Some("pong-raw") => pong_raw(port()),
        _ => {
            let rounds = args.first().and_then(|s| s.parse().ok()).unwrap_or(20_000);
            let size = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
            bench(rounds, size)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipckit-zenoh-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
