//! The `line` yardstick: the cache-line round trip between the bench's two CPUs, as the C
//! baseline's `spin_flag`. The parent's thread writes a counter into one cache line and
//! spins until a second thread, on the peer's CPU, copies it into another; each round trip
//! is two line transfers and nothing else. Every shared-memory round trip of the run pays
//! at least this, so it says what the shm rows' figures are made of: on this project's VM
//! it moves between about 80 ns (when the two virtual CPUs share a core's caches) and
//! 350-500 ns, from one minute to the next (docs/BENCHMARKS.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::case::{Outcome, Settings};
use super::pingpong::{self, RoundTrips};

/// The value that tells the echo thread to stop.
const STOP: u64 = u64::MAX;

/// Spins between two looks at the clock while waiting.
const LOOKS_PER_CLOCK: u32 = 1 << 12;

/// A counter alone in its cache lines (128 bytes: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// Spins until `line` differs from `last`, or `deadline` passes (`None`).
fn wait_change(line: &Line, last: u64, deadline: Instant) -> Option<u64> {
    let mut looks = 0u32;
    loop {
        let v = line.0.load(Ordering::Acquire);
        if v != last {
            return Some(v);
        }
        std::hint::spin_loop();
        looks = looks.wrapping_add(1);
        if looks % LOOKS_PER_CLOCK == 0 && Instant::now() >= deadline {
            return None;
        }
    }
}

/// Measures the cache-line round trip into `outcome.rtt`.
pub fn measure(outcome: &mut Outcome, settings: &Settings) -> Result<(), String> {
    // Two spinning threads on one CPU would take turns a scheduler tick apart. (Pinned, the
    // bench has two CPUs, though this thread may run on only one of them.)
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if settings.cpus.is_none() && cpus < 2 {
        outcome.skipped = Some("the cache-line floor needs two CPUs".to_owned());
        return Ok(());
    }
    let plan = pingpong::Plan::new(outcome.size, settings.iters, settings.max_pp, false);
    // The echo thread gives up this long after the phase's cap, whatever happens here.
    let deadline = Instant::now() + settings.max_pp + Duration::from_secs(5);
    let (ping, pong) = (Line::default(), Line::default());
    let peer_cpu = settings.cpus.map(|(_, b)| b);
    // The echo thread starts on the parent's CPU; the parent sleeps (not spins) until it is
    // pinned to the other one: under `chrt -f` a spinning parent would never let it run.
    let (pinned_tx, pinned_rx) = std::sync::mpsc::sync_channel(1);
    let (ping, pong) = (&ping, &pong);
    std::thread::scope(|s| {
        let echo = s.spawn(move || -> Result<(), String> {
            if let Some(cpu) = peer_cpu {
                let pinned = ipckit::sys::pin_current_thread(cpu)
                    .map_err(|e| format!("cannot pin the echo thread to CPU {cpu}: {e}"));
                let _ = pinned_tx.send(pinned.is_ok());
                pinned?;
            } else {
                let _ = pinned_tx.send(true);
            }
            let mut last = 0;
            loop {
                match wait_change(ping, last, deadline) {
                    Some(STOP) => return Ok(()),
                    Some(v) => {
                        last = v;
                        pong.0.store(v, Ordering::Release);
                    }
                    None => return Err("the echo thread heard nothing in time".to_owned()),
                }
            }
        });
        let timed = match pinned_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(true) => round_trips(ping, pong, plan, deadline),
            Ok(false) => Err("the echo thread could not be pinned".to_owned()),
            Err(_) => Err("the echo thread did not start".to_owned()),
        };
        ping.0.store(STOP, Ordering::Release);
        let echoed = echo
            .join()
            .unwrap_or_else(|_| Err("the echo thread panicked".to_owned()));
        // The echo thread's own complaint says why, when it has one.
        outcome.rtt = Some(timed.map_err(|e| match &echoed {
            Err(why) => format!("{e}: {why}"),
            Ok(()) => e,
        })?);
        echoed
    })
}

/// The parent's side: numbered pings, each timed until its echo.
fn round_trips(
    ping: &Line,
    pong: &Line,
    plan: pingpong::Plan,
    deadline: Instant,
) -> Result<RoundTrips, String> {
    let mut timer = pingpong::Timer::start(plan)?;
    let mut seq = 0u64;
    while timer.wants_more() {
        seq += 1;
        let t0 = Instant::now();
        ping.0.store(seq, Ordering::Release);
        match wait_change(pong, seq - 1, deadline) {
            Some(v) if v == seq => {}
            Some(v) => return Err(format!("echo {v} for ping {seq}")),
            None => return Err(format!("no echo of ping {seq} in time")),
        }
        if !timer.lap(seq, t0, Instant::now(), true) {
            break;
        }
    }
    Ok(timer.finish(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::mechanism::Mechanism;

    fn outcome() -> Outcome {
        Outcome {
            mech: Mechanism::Line,
            size: 64,
            pinned: false,
            rtt: None,
            throughput: None,
            skipped: None,
            error: None,
        }
    }

    /// Few round trips: under a loaded test run the two threads may share a CPU for a while,
    /// taking turns a scheduler tick apart.
    const SETTINGS: Settings = Settings {
        iters: Some(200),
        duration: Duration::from_millis(10),
        max_pp: Duration::from_secs(20),
        cpus: None,
    };

    /// Round trips are timed and counted: as many samples as asked for, each one at least a
    /// nanosecond, and no stream figure.
    #[test]
    fn measures_the_round_trips_asked_for() {
        let mut outcome = outcome();
        measure(&mut outcome, &SETTINGS).expect("measured");
        let rtt = outcome.rtt.expect("round trips");
        assert_eq!(rtt.samples, 200);
        assert!(!rtt.capped);
        assert!(rtt.median_ns >= 1 && rtt.median_ns <= rtt.p99_ns, "{rtt:?}");
        assert!(outcome.throughput.is_none());
    }

    /// On one CPU the floor is not measured (the two threads would take turns a scheduler
    /// tick apart) but skipped, saying why.
    #[test]
    fn one_cpu_skips_it() {
        std::thread::spawn(|| {
            let cpu = ipckit::sys::allowed_cpus().expect("allowed CPUs")[0];
            ipckit::sys::pin_current_thread(cpu).expect("pinned");
            let mut outcome = outcome();
            measure(&mut outcome, &SETTINGS).expect("no error");
            assert!(outcome.rtt.is_none());
            assert_eq!(
                outcome.skipped.as_deref(),
                Some("the cache-line floor needs two CPUs")
            );
        })
        .join()
        .expect("the test thread");
    }
}
