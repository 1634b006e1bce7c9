//! The patterns built on the transports, measured as round trips (no one-way stream):
//! `rpc-unix` and `rpc-shm` (a typed `Vec<u8>` echo through `ipckit::rpc`: the parent calls
//! with a [`BlockingClient`], the peer serves with the async server), and `signal` (SIGUSR1
//! to the peer, SIGUSR1 back; SIGUSR2 ends it). Compare them with the `unix` and `shm` rows
//! of the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipckit::rpc::BlockingClient;
use ipckit::signal::SignalReceiver;

use super::case::{Outcome, Settings};
use super::mechanism::Mechanism;
use super::peer_process::{PeerProcess, Watch};
use super::pingpong::{Plan, RoundTrips};
use super::setup::ATTACH_TIMEOUT;
use crate::cli::PeerArgs;

/// Time the peer gets beyond setup and the ping-pong before it is killed.
const SLACK: Duration = Duration::from_secs(30);
/// How long the peer may take to exit once the parent is done.
const EXIT_PATIENCE: Duration = Duration::from_secs(5);
/// Longest wait for one signal.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Room for the RPC frame header and postcard's length prefix.
const RPC_OVERHEAD: usize = 64;

/// The typed payload: bytes that serde encodes as one byte string (as `serde_bytes` does),
/// not as a sequence of separately encoded `u8`s.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Payload(Vec<u8>);

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// Measures a pattern mechanism into `outcome`.
pub fn measure(outcome: &mut Outcome, settings: &Settings) -> Result<(), String> {
    if outcome.mech.is_bus() {
        return super::bus::measure(outcome, settings);
    }
    let (mech, size) = (outcome.mech, outcome.size);
    let dir = tempfile::Builder::new()
        .prefix("ipckit-bench-")
        .tempdir()
        .map_err(|e| format!("setup: cannot create a scratch directory: {e}"))?;
    let budget = ATTACH_TIMEOUT + settings.max_pp + SLACK;
    let mut cmd = super::case::peer_command(mech, size, settings, budget + SLACK / 2)?;
    let max = size + RPC_OVERHEAD;
    let url = match mech {
        Mechanism::RpcUnix => format!("unix://{}/rpc.sock?max_msg={max}", dir.path().display()),
        Mechanism::RpcShm => {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("shm://bench-rpc-{}-{n}?max_msg={max}", std::process::id())
        }
        _ => String::new(),
    };
    if !url.is_empty() {
        cmd.args(["--bind", &url]);
    }
    // Installed before the peer starts, so its first signal finds a handler.
    let signals = match mech {
        Mechanism::Signal => Some(
            SignalReceiver::new(&[libc::SIGUSR1])
                .map_err(|e| format!("setup: signal handler: {e}"))?,
        ),
        _ => None,
    };
    let child = cmd
        .spawn()
        .map_err(|e| format!("setup: cannot start the peer: {e}"))?;
    let peer_pid = child.id();
    let peer = PeerProcess::watch(
        child,
        Watch {
            deadline: Instant::now() + budget,
            nudge: None,
            label: format!("{} {size} B", mech.name()),
            scratch_dir: dir.path().to_owned(),
        },
    );
    let plan = Plan::new(size, settings.iters, settings.max_pp, false);
    let measured = match signals {
        Some(rx) => signal_round_trips(rx, peer_pid, plan),
        None => rpc_round_trips(&url, size, plan),
    };
    let report = peer.finish(EXIT_PATIENCE);
    match measured {
        Ok(rtt) => outcome.rtt = Some(rtt),
        Err(e) => {
            return Err(match report.complaint() {
                Some(c) => format!("{e} ({c})"),
                None => e,
            })
        }
    }
    match report.complaint() {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

/// Times `round_trip` as the message ping-pong does: a warm-up, then `plan.iters` samples or
/// until the time cap.
pub(super) fn time_round_trips(
    plan: Plan,
    mut round_trip: impl FnMut(u64) -> Result<(), String>,
) -> Result<RoundTrips, String> {
    let mut hist = super::pingpong::histogram()?;
    let start = Instant::now();
    let mut seq = 0u64;
    let mut capped = false;
    while hist.len() < plan.iters {
        seq += 1;
        let t0 = Instant::now();
        round_trip(seq)?;
        let t1 = Instant::now();
        if seq > plan.warmup {
            hist.saturating_record(((t1 - t0).as_nanos() as u64).max(1));
        }
        if t1 - start > plan.cap && !hist.is_empty() {
            capped = hist.len() < plan.iters;
            break;
        }
    }
    Ok(RoundTrips::of(&hist, capped, 0))
}

fn rpc_round_trips(url: &str, size: usize, plan: Plan) -> Result<RoundTrips, String> {
    let mut client = BlockingClient::<Payload, Payload>::connect_timeout(url, ATTACH_TIMEOUT)
        .map_err(|e| format!("attach: {e}"))?;
    let mut payload = Payload(super::wire::pattern(size));
    time_round_trips(plan, |seq| {
        payload.0[..8.min(size)].copy_from_slice(&seq.to_le_bytes()[..8.min(size)]);
        // A plain blocking call, as the raw ping-pong's blocking receive: a server that dies
        // fails it with PeerGone, so it cannot hang.
        let echo = client
            .call(&payload)
            .map_err(|e| format!("call {seq}: {e}"))?;
        if echo.0.len() != size || (seq % 1024 == 0 && echo != payload) {
            return Err(format!("call {seq}: the echo differs from the request"));
        }
        Ok(())
    })
}

fn signal_round_trips(mut rx: SignalReceiver, peer: u32, plan: Plan) -> Result<RoundTrips, String> {
    // The peer's first SIGUSR1 says its handler is installed.
    rx.recv_timeout(ATTACH_TIMEOUT)
        .map_err(|e| format!("attach: no signal from the peer: {e}"))?;
    let r = time_round_trips(plan, |seq| {
        ipckit::signal::send(peer, libc::SIGUSR1).map_err(|e| format!("signal {seq}: {e}"))?;
        rx.recv_timeout(SIGNAL_TIMEOUT)
            .map(drop)
            .map_err(|e| format!("signal {seq}: no answer: {e}"))
    });
    let _ = ipckit::signal::send(peer, libc::SIGUSR2);
    r
}

/// The peer's side of a pattern mechanism.
pub fn run_peer(args: &PeerArgs) -> Result<(), String> {
    match args.mech {
        Mechanism::Signal => signal_peer(args.parent_pid),
        m if m.is_bus() => super::bus::run_peer(args),
        _ => {
            let url = args
                .bind
                .as_ref()
                .ok_or("the parent gave no --bind endpoint")?
                .to_string();
            rpc_peer(&url)
        }
    }
}

/// Serves one RPC client (the parent) until it leaves.
fn rpc_peer(url: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let mut listener = ipckit::aio::bind(url).map_err(|e| format!("bind {url}: {e}"))?;
        let conn = listener
            .accept_timeout(ATTACH_TIMEOUT)
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let echo = Arc::new(|req: Payload| async move { req });
        ipckit::rpc::serve_connection(conn, echo).await;
        Ok(())
    })
}

/// Answers each SIGUSR1 with one to the parent until SIGUSR2.
fn signal_peer(parent: u32) -> Result<(), String> {
    let mut rx = SignalReceiver::new(&[libc::SIGUSR1, libc::SIGUSR2])
        .map_err(|e| format!("signal handler: {e}"))?;
    ipckit::signal::send(parent, libc::SIGUSR1).map_err(|e| format!("ready signal: {e}"))?;
    loop {
        match rx.recv_timeout(ATTACH_TIMEOUT + SIGNAL_TIMEOUT) {
            Ok(libc::SIGUSR2) => return Ok(()),
            Ok(_) => {
                ipckit::signal::send(parent, libc::SIGUSR1).map_err(|e| format!("answer: {e}"))?
            }
            Err(e) => return Err(format!("waiting for a signal: {e}")),
        }
    }
}
