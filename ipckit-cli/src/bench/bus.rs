//! The bus mechanisms (issue 7), on the local backend (`bus://local`):
//!
//! - `bus-local`: a pub→sub round trip through two topics (the parent publishes on
//!   `bench/in/ping`, the peer answers on `bench/up/pong`), comparable with the `shm` row of
//!   the same run; and one publisher streaming to one subscriber for `--duration`.
//! - `bus-fanout-2`, `-4`, `-8`: one publisher streaming to 2, 4 or 8 subscriber processes;
//!   the rate is the messages delivered in total per second (every subscriber gets every
//!   message: subscriptions use the `block` policy, as deep as the publisher's ring, up to
//!   4096 messages, so nothing is dropped and the publisher goes at the pace of the
//!   slowest). The publisher writes each message once into its ring, whatever the number
//!   of subscribers; compare with `bus-local`'s rate (one subscriber). The publisher stays on
//!   the parent's CPU; the subscribers may run on either of the bench's two CPUs, where the
//!   scheduler puts them.
//!
//! Each subscriber announces itself on `bench/up/ready` once subscribed; `bench/in/end`
//! ends the stream and each subscriber answers on `bench/up/count` with how many messages it
//! received. Subscribers take messages in batches of up to [`BATCH`]
//! (`Subscriber::recv_batch_with`), as a subscriber built for throughput would; the parent's
//! round trips take one message at a time.

use std::time::{Duration, Instant};

use ipckit::bus::{Bus, Overflow, SubscribeOptions, Subscriber};

use super::case::{Outcome, Settings};
use super::mechanism::Mechanism;
use super::peer_process::{PeerProcess, PeerReport, Watch};
use super::pingpong::{Plan, RoundTrips};
use super::setup::ATTACH_TIMEOUT;
use super::stream::Throughput;
use crate::cli::PeerArgs;

/// Time the peers get beyond setup, ping-pong and stream before they are killed.
const SLACK: Duration = Duration::from_secs(30);
/// How long the peers may take to exit once the parent is done.
const EXIT_PATIENCE: Duration = Duration::from_secs(5);
/// Longest wait for one message of the protocol (a pong, a count).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ring memory each node may use: large messages get fewer slots (64 B: 4096 slots of 512
/// bytes, 2 MiB; 4 KiB: 1024 slots of 8 KiB; 1 MiB: 16 slots of 2 MiB).
const RING_BUDGET: usize = 8 << 20;
/// Most slots a publisher's ring gets (small messages), which is also each subscription's
/// depth: a block-policy publisher then writes up to half a ring before a slow subscriber
/// can hold it up, and subscribers read in batches. Eight subscribers share two CPUs with
/// the publisher, so the deeper the ring, the more each does per turn on a CPU. Measured at
/// 64 B (`ROWS=1 scripts/ab.py 8 bus-local,bus-fanout-8`, the host's middle phase, medians
/// of 8 alternating runs): 1024 slots delivered 62.6 M msg/s to 8 subscribers and 18.3 M to
/// one (3.41 times), 4096 slots 88.9 M and 19.0 M (4.54 times), 8192 slots 92.1 M and
/// 19.4 M (4.76 times). (Earlier, on an older ring: depth 64 delivered 0.54 M msg/s in
/// total, 256: 0.96 M, 1024: 1.62 M, 4096: 1.95 M.)
const MAX_SLOTS: usize = 4096;

/// Most messages a subscriber takes per receive ([`ipckit::bus::Subscriber::recv_batch`]).
const BATCH: usize = 256;

/// Subscribers of a bus mechanism.
pub fn subscribers(mech: Mechanism) -> usize {
    match mech {
        Mechanism::BusFanout2 => 2,
        Mechanism::BusFanout4 => 4,
        Mechanism::BusFanout8 => 8,
        _ => 1,
    }
}

/// A fresh namespace for one measurement, sized for `size`-byte messages: rings of up to
/// [`MAX_SLOTS`] slots, subscriptions as deep as the ring.
fn bus_url(size: usize) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slot = (size + 512).next_power_of_two();
    let slots = (RING_BUDGET / slot)
        .clamp(16, MAX_SLOTS)
        .next_power_of_two()
        .min(MAX_SLOTS);
    format!(
        "bus://local/bench-{}-{n}?max_msg={size}&slots={slots}&depth={slots}&timeout_ms=10000",
        std::process::id()
    )
}

fn block(depth: u32) -> SubscribeOptions {
    SubscribeOptions {
        depth,
        overflow: Overflow::Block,
    }
}

/// Measures a bus mechanism into `outcome`.
pub fn measure(outcome: &mut Outcome, settings: &Settings) -> Result<(), String> {
    let (mech, size) = (outcome.mech, outcome.size);
    let n = subscribers(mech);
    let url = bus_url(size);
    let bus = Bus::open(&url).map_err(|e| format!("setup: {url}: {e}"))?;
    // The parent's own control subscription drops rather than blocks: a block-policy
    // subscription holds back every ring it reads, its own node's included, until it is
    // read, and the parent does not read it while it streams.
    let mut up = bus
        .subscribe("bench/up/*")
        .map_err(|e| format!("setup: subscribe: {e}"))?;
    let budget = ATTACH_TIMEOUT + settings.max_pp + settings.duration + SLACK;
    let scratch = tempfile::Builder::new()
        .prefix("ipckit-bench-")
        .tempdir()
        .map_err(|e| format!("setup: cannot create a scratch directory: {e}"))?;
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        // Many subscribers on the two CPUs: the scheduler places them (below).
        let placed = Settings {
            cpus: settings.cpus.filter(|_| n == 1),
            ..*settings
        };
        let mut cmd = super::case::peer_command(mech, size, &placed, budget + SLACK / 2)?;
        cmd.args(["--bus", &url]);
        if let (Some(both), true) = (settings.cpus, n > 1) {
            // Both CPUs, said explicitly: a child inherits the pinned parent's affinity, and
            // until this was said every subscriber shared the publisher's one CPU (8
            // subscribers: 22.4 M deliveries/s there, 29.8 M over both CPUs, 19.4 M all on
            // the other CPU; medians of five alternating runs).
            cmd.args(super::peer::both_cpus_arg(both));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("setup: cannot start peer {i}: {e}"))?;
        peers.push(PeerProcess::watch(
            child,
            Watch {
                deadline: Instant::now() + budget,
                nudge: None,
                label: format!("{} {size} B peer {i}", mech.name()),
                scratch_dir: scratch.path().to_owned(),
            },
        ));
    }
    let measured = run_parent(&bus, &mut up, mech, size, n, settings);
    let reports: Vec<PeerReport> = peers.into_iter().map(|p| p.finish(EXIT_PATIENCE)).collect();
    let complaint = reports.iter().find_map(PeerReport::complaint);
    match measured {
        Ok((rtt, throughput)) => {
            outcome.rtt = rtt;
            outcome.throughput = Some(throughput);
        }
        Err(e) => {
            return Err(match complaint {
                Some(c) => format!("{e} ({c})"),
                None => e,
            })
        }
    }
    match complaint {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

/// The parent's side: waits for the subscribers, times the round trips (`bus-local`), then
/// streams.
fn run_parent(
    bus: &Bus,
    up: &mut Subscriber,
    mech: Mechanism,
    size: usize,
    n: usize,
    settings: &Settings,
) -> Result<(Option<RoundTrips>, Throughput), String> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    let mut ready = 0;
    while ready < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = up
            .recv_timeout(left)
            .map_err(|e| format!("attach: {ready} of {n} subscribers ready: {e}"))?;
        if msg.topic() == "bench/up/ready" {
            ready += 1;
        }
    }
    let mut out = super::wire::pattern(size);
    let rtt = if mech == Mechanism::BusLocal {
        let plan = Plan::new(size, settings.iters, settings.max_pp, false);
        Some(round_trips(bus, up, &mut out, plan)?)
    } else {
        None
    };
    let publish = |topic: &str, payload: &[u8]| {
        bus.publish(topic, payload)
            .map_err(|e| format!("publish {topic}: {e}"))
    };
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < settings.duration {
        for _ in 0..64 {
            publish("bench/in/data", &out)?;
        }
        sent += 64;
    }
    publish("bench/in/end", b"")?;
    let mut delivered = 0u64;
    let mut counts = 0;
    while counts < n {
        let msg = up
            .recv_timeout(STEP_TIMEOUT)
            .map_err(|e| format!("stream: {counts} of {n} counts: {e}"))?;
        if msg.topic() == "bench/up/count" {
            let got: u64 = msg.decode().map_err(|e| format!("count: {e}"))?;
            if got != sent {
                return Err(format!(
                    "a subscriber received {got} of {sent} messages under the block policy"
                ));
            }
            delivered += got;
            counts += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let msgs_per_s = delivered as f64 / secs;
    Ok((
        rtt,
        Throughput {
            msgs_per_s,
            gbps: msgs_per_s * size as f64 / 1e9,
            sent,
            drops: 0,
        },
    ))
}

fn round_trips(
    bus: &Bus,
    up: &mut Subscriber,
    out: &mut [u8],
    plan: Plan,
) -> Result<RoundTrips, String> {
    let mut msg = ipckit::bus::Message::default();
    super::patterns::time_round_trips(plan, |seq| {
        super::wire::stamp(out, seq);
        bus.publish("bench/in/ping", out)
            .map_err(|e| format!("ping {seq}: {e}"))?;
        up.recv_into_with(&mut msg, ipckit::Wait::timeout(STEP_TIMEOUT))
            .map_err(|e| format!("pong {seq}: {e}"))?;
        if msg.topic() != "bench/up/pong" || msg.payload() != &*out {
            return Err(format!("pong {seq}: not the echo of the ping"));
        }
        Ok(())
    })
}

/// A subscriber process: echoes pings, counts the stream, reports the count at the end.
pub fn run_peer(args: &PeerArgs) -> Result<(), String> {
    let url = args.bus.as_deref().ok_or("the parent gave no --bus URL")?;
    let bus = Bus::open(url).map_err(|e| format!("open {url}: {e}"))?;
    let depth = ipckit::bus::BusUrl::parse(url)
        .map_err(|e| format!("{url}: {e}"))?
        .depth;
    let mut sub = bus
        .subscribe_with("bench/in/*", block(depth))
        .map_err(|e| format!("subscribe: {e}"))?;
    bus.publish("bench/up/ready", b"")
        .map_err(|e| format!("ready: {e}"))?;
    let mut count = 0u64;
    loop {
        let mut fault = None;
        let mut end = false;
        // No timeout (no clock read per batch): the peer exits at its deadline, or when the
        // parent does, whatever happens here.
        sub.recv_batch_with(BATCH, ipckit::Wait::Forever, |m| match m.topic() {
            "bench/in/data" => count += 1,
            "bench/in/ping" => {
                if let Err(e) = bus.publish("bench/up/pong", m.payload()) {
                    fault.get_or_insert(format!("pong: {e}"));
                }
            }
            "bench/in/end" => end = true,
            other => {
                fault.get_or_insert(format!("unexpected topic {other}"));
            }
        })
        .map_err(|e| format!("recv: {e}"))?;
        if let Some(f) = fault {
            return Err(f);
        }
        if end {
            return bus
                .publish_typed("bench/up/count", &count)
                .map_err(|e| format!("count: {e}"));
        }
    }
}
