//! One measurement: a mechanism at one message size, from the scratch directory and the peer
//! process to the figures, cleaning up on every path.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::channel::Channel;
use super::mechanism::Mechanism;
use super::peer_process::{PeerProcess, Watch};
use super::pingpong::{self, RoundTrips};
use super::setup::{self, ATTACH_TIMEOUT};
use super::stream::{self, Throughput};
use super::wire;

/// Time the peer gets, beyond setup and both phases, before it is killed.
const SLACK: Duration = Duration::from_secs(30);

/// How long the peer may take to exit after a successful measurement.
const EXIT_PATIENCE: Duration = Duration::from_secs(5);

/// How long a peer may take to report its own error after the parent's side failed.
const ERROR_PATIENCE: Duration = Duration::from_millis(500);

/// What applies to every measurement of a run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Round trips recorded (default: by size).
    pub iters: Option<u64>,
    /// Streaming time.
    pub duration: Duration,
    /// Time cap of the ping-pong phase.
    pub max_pp: Duration,
    /// CPUs for the parent and the peer, when pinning.
    pub cpus: Option<(usize, usize)>,
}

/// The result of one measurement: figures, or why there are none.
#[derive(Debug)]
pub struct Outcome {
    pub mech: Mechanism,
    pub size: usize,
    pub pinned: bool,
    pub rtt: Option<RoundTrips>,
    pub throughput: Option<Throughput>,
    /// Why the size was not measured with this mechanism.
    pub skipped: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
}

/// Measures `mech` with messages of `size` bytes.
pub fn run(mech: Mechanism, size: usize, settings: &Settings) -> Outcome {
    let mut outcome = Outcome {
        mech,
        size,
        pinned: settings.cpus.is_some(),
        rtt: None,
        throughput: None,
        skipped: mech.refuses(size),
        error: None,
    };
    if outcome.skipped.is_none() {
        let measured = if mech == Mechanism::Line {
            super::line::measure(&mut outcome, settings)
        } else if mech.is_yardstick() {
            measure_memcpy(&mut outcome, settings)
        } else if mech.is_pattern() {
            super::patterns::measure(&mut outcome, settings)
        } else {
            measure(&mut outcome, settings)
        };
        if let Err(e) = measured {
            outcome.error = Some(e);
        }
    }
    outcome
}

fn measure(outcome: &mut Outcome, settings: &Settings) -> Result<(), String> {
    let (mech, size) = (outcome.mech, outcome.size);
    let dir = tempfile::Builder::new()
        .prefix("ipckit-bench-")
        .tempdir()
        .map_err(|e| format!("setup: cannot create a scratch directory: {e}"))?;
    let budget = ATTACH_TIMEOUT + settings.max_pp + settings.duration + SLACK;
    let cmd = peer_command(mech, size, settings, budget + SLACK / 2)?;
    let prepared = setup::prepare(mech, size, dir.path()).map_err(|e| format!("setup: {e}"))?;
    let (started, child, nudge) = prepared
        .start(cmd)
        .map_err(|e| format!("setup: cannot start the peer: {e}"))?;
    let peer = PeerProcess::watch(
        child,
        Watch {
            deadline: Instant::now() + budget,
            nudge,
            label: format!("{} {size} B", mech.name()),
            scratch_dir: dir.path().to_owned(),
        },
    );
    let mut ch = match started.attach(Instant::now() + ATTACH_TIMEOUT) {
        Ok(ch) => ch,
        Err(e) => return Err(blame("attach", e, None, peer)),
    };
    ch.set_copies(mech.copies());
    let mut out = wire::pattern(size);
    let mut incoming = Vec::with_capacity(size);
    let plan = pingpong::Plan::new(size, settings.iters, settings.max_pp, mech.is_lossy());
    match pingpong::run(&mut ch, plan, &mut out, &mut incoming) {
        Ok(rtt) => outcome.rtt = Some(rtt),
        Err(e) => return Err(blame("ping-pong", e, Some(ch), peer)),
    }
    // As in the C baseline, names go once both sides hold the objects: the listeners went
    // with their files, so the directory is empty by now, except for unix-dgram, whose
    // replies are addressed to socket files (it goes at the end).
    let _ = std::fs::remove_dir(dir.path());
    match stream::run(
        &mut ch,
        settings.duration,
        mech.is_lossy(),
        &mut out,
        &mut incoming,
    ) {
        Ok(t) => outcome.throughput = Some(t),
        Err(e) => return Err(blame("stream", e, Some(ch), peer)),
    }
    drop(ch);
    match peer.finish(EXIT_PATIENCE).complaint() {
        Some(complaint) => Err(complaint),
        None => Ok(()),
    }
}

/// Copies of one message's bytes, one buffer to another, for half the streaming time (as
/// the C baseline's `memcpy`): the bandwidth the large-message rates are compared with.
fn measure_memcpy(outcome: &mut Outcome, settings: &Settings) -> Result<(), String> {
    let size = outcome.size;
    let src = wire::pattern(size);
    let mut dst = vec![0u8; size];
    // Faults the destination in and warms both.
    dst.copy_from_slice(&src);
    let reps = ((1usize << 20) / size.max(1)).max(1) as u64;
    let duration = settings.duration / 2;
    let (mut copies, t0) = (0u64, Instant::now());
    let elapsed = loop {
        for _ in 0..reps {
            // black_box: the copies are the point; none may be merged or dropped.
            std::hint::black_box(&mut dst).copy_from_slice(std::hint::black_box(&src));
        }
        copies += reps;
        let elapsed = t0.elapsed();
        if elapsed >= duration {
            break elapsed;
        }
    };
    if dst != src {
        return Err("memcpy: the copy differs from its source".to_owned());
    }
    let msgs_per_s = copies as f64 / elapsed.as_secs_f64();
    outcome.throughput = Some(Throughput {
        msgs_per_s,
        gbps: msgs_per_s * size as f64 / 1e9,
        sent: copies,
        drops: 0,
    });
    Ok(())
}

/// The error of a failed phase, with what the peer had to say. Closes the channel first, so
/// a healthy peer sees the parent go and exits.
fn blame(phase: &str, error: String, ch: Option<Channel>, peer: PeerProcess) -> String {
    drop(ch);
    match peer.finish(ERROR_PATIENCE).complaint() {
        Some(complaint) => format!("{phase}: {error} ({complaint})"),
        None => format!("{phase}: {error}"),
    }
}

/// The command that starts the peer (this executable's hidden `bench-peer`), without the
/// arguments that say where to attach.
pub(super) fn peer_command(
    mech: Mechanism,
    size: usize,
    settings: &Settings,
    lifetime: Duration,
) -> Result<Command, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("setup: cannot find this executable to start the peer: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench-peer")
        .args(["--mech", mech.name()])
        .args(["--size", &size.to_string()])
        .args(["--deadline", &format!("{:.3}", lifetime.as_secs_f64())])
        .args(["--parent-pid", &std::process::id().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some((_, peer_cpu)) = settings.cpus {
        cmd.args(["--cpu", &peer_cpu.to_string()]);
    }
    if mech != Mechanism::Pipe {
        cmd.env_remove(ipckit::pipe::ENV_VAR);
    }
    Ok(cmd)
}
