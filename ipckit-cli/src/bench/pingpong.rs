//! The parent's ping-pong phase: round-trip latency, as `parent_pingpong` in the C baseline.
//!
//! Message `seq` goes out, the peer checks and echoes it, and the time around `send` +
//! `recv_into` is one sample. The first round trips are a warm-up (not recorded); the phase
//! stops early at the time cap. Then END is sent and its echo awaited. On a lossy transport
//! every receive has a timeout: a round trip whose message or echo was lost is resent, not
//! recorded, and counted.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ipckit::{Error, MessageReceiver, MessageSender};

use super::channel::Channel;
use super::wire::{self, END, READY};

/// Wait for an echo on a lossy transport before resending.
pub const RESEND_AFTER: Duration = Duration::from_millis(100);

/// Consecutive resends of one message before giving up.
pub const MAX_RESENDS: u32 = 50;

/// Highest latency the histogram holds (longer samples are clamped): one hour.
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

/// How many round trips, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Round trips recorded.
    pub iters: u64,
    /// Round trips before recording starts.
    pub warmup: u64,
    /// Time cap of the whole phase, warm-up included.
    pub cap: Duration,
    /// Whether messages may be lost (receives then time out and resend).
    pub lossy: bool,
}

impl Plan {
    /// The C baseline's defaults: 100 000 round trips up to 64 KiB, 2000 above; a warm-up of a
    /// tenth of that, at least 100.
    pub fn new(size: usize, iters: Option<u64>, cap: Duration, lossy: bool) -> Plan {
        let iters = iters.unwrap_or(if size > 64 * 1024 { 2000 } else { 100_000 });
        Plan {
            iters,
            warmup: (iters / 10).max(100),
            cap,
            lossy,
        }
    }
}

/// Round-trip figures in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct RoundTrips {
    pub median_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    /// Round trips recorded.
    pub samples: u64,
    /// True when the time cap stopped the phase before `iters` samples.
    pub capped: bool,
    /// Messages resent because they or their echo were lost (lossy transports).
    pub resends: u64,
}

impl RoundTrips {
    /// The figures of a histogram of round-trip times in nanoseconds.
    pub fn of(hist: &Histogram<u64>, capped: bool, resends: u64) -> RoundTrips {
        RoundTrips {
            median_ns: hist.value_at_quantile(0.5),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            samples: hist.len(),
            capped,
            resends,
        }
    }
}

/// A histogram for round-trip times in nanoseconds (up to an hour, 3 significant digits).
pub fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_NS, 3).map_err(|e| format!("histogram: {e}"))
}

/// The timing of a ping-pong phase: a warm-up, then round trips recorded until the plan's
/// count or its time cap.
pub struct Timer {
    plan: Plan,
    hist: Histogram<u64>,
    start: Instant,
    measuring: bool,
    capped: bool,
}

impl Timer {
    /// Starts the phase's clock.
    pub fn start(plan: Plan) -> Result<Timer, String> {
        Ok(Timer {
            plan,
            hist: histogram()?,
            start: Instant::now(),
            measuring: false,
            capped: false,
        })
    }

    /// Whether more round trips are wanted.
    pub fn wants_more(&self) -> bool {
        self.hist.len() < self.plan.iters
    }

    /// Counts round trip `seq`, which took `t0` to `t1` (recorded once the warm-up is over,
    /// if `timed`); false once the phase's time is up.
    pub fn lap(&mut self, seq: u64, t0: Instant, t1: Instant, timed: bool) -> bool {
        let elapsed = t1 - self.start;
        if self.measuring {
            if timed {
                self.hist
                    .saturating_record(((t1 - t0).as_nanos() as u64).max(1));
            }
        } else if seq >= self.plan.warmup || elapsed > self.plan.cap / 10 {
            self.measuring = true;
        }
        if elapsed > self.plan.cap && !self.hist.is_empty() {
            self.capped = self.hist.len() < self.plan.iters;
            return false;
        }
        true
    }

    /// The figures.
    pub fn finish(&self, resends: u64) -> RoundTrips {
        RoundTrips::of(&self.hist, self.capped, resends)
    }
}

/// Runs the phase. `out` holds a patterned message of the benchmark's size; `echo` is reused
/// for every receive.
pub fn run(
    ch: &mut Channel,
    plan: Plan,
    out: &mut [u8],
    echo: &mut Vec<u8>,
) -> Result<RoundTrips, String> {
    let size = out.len();
    let lossy = plan.lossy;
    let mut timer = Timer::start(plan)?;
    let mut resends = 0u64;
    let mut seq = 0u64;
    while timer.wants_more() {
        seq += 1;
        wire::stamp(out, seq);
        let t0 = Instant::now();
        let resent = if lossy {
            round_trip_lossy(ch, out, echo, seq)?
        } else {
            let full = wire::full_check_due(seq);
            ch.send_data(out, full)
                .map_err(|e| format!("send {seq}: {e}"))?;
            ch.recv_data(echo, full)
                .map_err(|e| format!("recv {seq}: {e}"))?;
            0
        };
        let t1 = Instant::now();
        wire::check(echo, size, seq).map_err(|e| format!("echo: {e}"))?;
        if wire::full_check_due(seq) && echo.as_slice() != &*out {
            return Err(format!("echo of message {seq}: payload corrupted"));
        }
        resends += u64::from(resent);
        if !timer.lap(seq, t0, t1, resent == 0) {
            break;
        }
    }
    wire::mark(out, END);
    let resent = if lossy {
        round_trip_lossy(ch, out, echo, END)?
    } else {
        ch.send(out).map_err(|e| format!("send END: {e}"))?;
        ch.recv_into(echo)
            .map_err(|e| format!("recv END echo: {e}"))?;
        0
    };
    resends += u64::from(resent);
    if wire::seq_of(echo) != Some(END) {
        return Err("END was not echoed".to_owned());
    }
    Ok(timer.finish(resends))
}

/// Sends `out` (numbered `seq`) and receives its echo, resending every [`RESEND_AFTER`]
/// while none comes. Late echoes of earlier messages and repeated READYs are skipped.
/// Returns how many times the message was resent.
pub fn round_trip_lossy(
    ch: &mut Channel,
    out: &[u8],
    echo: &mut Vec<u8>,
    seq: u64,
) -> Result<u32, String> {
    ch.send(out).map_err(|e| format!("send {seq}: {e}"))?;
    let mut resent = 0;
    loop {
        match ch.recv_into_timeout(echo, RESEND_AFTER) {
            Ok(()) => match wire::seq_of(echo) {
                Some(got) if got == seq => return Ok(resent),
                Some(got) if got < seq || got == READY => continue,
                _ => {
                    return Err(format!(
                        "expected the echo of {seq}, got {}",
                        wire::what_is(echo)
                    ))
                }
            },
            Err(Error::Timeout { .. }) if resent < MAX_RESENDS => {
                resent += 1;
                ch.send(out).map_err(|e| format!("resend {seq}: {e}"))?;
            }
            Err(Error::Timeout { .. }) => {
                return Err(format!(
                    "no echo of {seq} after {MAX_RESENDS} resends {} ms apart",
                    RESEND_AFTER.as_millis()
                ))
            }
            Err(e) => return Err(format!("recv echo of {seq}: {e}")),
        }
    }
}
