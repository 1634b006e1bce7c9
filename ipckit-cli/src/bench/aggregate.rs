//! The repeats of one mechanism and size, reduced to medians with their spread.

use super::case::Outcome;
use super::mechanism::Mechanism;
use super::pingpong::RoundTrips;
use super::stream::Throughput;

/// Above this relative spread a figure is flagged as unsteady.
pub const UNSTEADY_SPREAD: f64 = 0.30;

/// One mechanism and size over all its repeats.
#[derive(Debug)]
pub struct Measured {
    /// Medians of the repeats that produced figures (each figure separately); the sums of
    /// sent messages, drops and resends; the first error, if any repeat failed.
    pub median: Outcome,
    /// Every repeat, in the order they ran.
    pub runs: Vec<Outcome>,
    /// (max - min) / median of the round-trip medians, with two repeats or more.
    pub rtt_spread: Option<f64>,
    /// (max - min) / median of the streaming rates, with two repeats or more.
    pub msgs_spread: Option<f64>,
}

impl Measured {
    /// Reduces the repeats of one mechanism and size (at least one).
    pub fn of(runs: Vec<Outcome>) -> Measured {
        let first = &runs[0];
        let (mech, size, pinned) = (first.mech, first.size, first.pinned);
        let rtts: Vec<RoundTrips> = runs.iter().filter_map(|o| o.rtt).collect();
        let tputs: Vec<Throughput> = runs.iter().filter_map(|o| o.throughput).collect();
        let rtt = (!rtts.is_empty()).then(|| RoundTrips {
            median_ns: median_u64(rtts.iter().map(|r| r.median_ns)),
            p99_ns: median_u64(rtts.iter().map(|r| r.p99_ns)),
            p999_ns: median_u64(rtts.iter().map(|r| r.p999_ns)),
            samples: median_u64(rtts.iter().map(|r| r.samples)),
            capped: rtts.iter().any(|r| r.capped),
            resends: rtts.iter().map(|r| r.resends).sum(),
        });
        let throughput = (!tputs.is_empty()).then(|| Throughput {
            msgs_per_s: median_f64(tputs.iter().map(|t| t.msgs_per_s)),
            gbps: median_f64(tputs.iter().map(|t| t.gbps)),
            sent: tputs.iter().map(|t| t.sent).sum(),
            drops: tputs.iter().map(|t| t.drops).sum(),
        });
        let repeats = runs.len();
        let failures: Vec<String> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.error.as_ref().map(|e| (i, e)))
            .map(|(i, e)| {
                if repeats > 1 {
                    format!("repeat {} of {repeats}: {e}", i + 1)
                } else {
                    e.clone()
                }
            })
            .collect();
        let median = Outcome {
            mech,
            size,
            pinned,
            rtt,
            throughput,
            skipped: first.skipped.clone(),
            error: (!failures.is_empty()).then(|| failures.join("; ")),
        };
        Measured {
            rtt_spread: spread(rtts.iter().map(|r| r.median_ns as f64)),
            msgs_spread: spread(tputs.iter().map(|t| t.msgs_per_s)),
            median,
            runs,
        }
    }

    pub fn mech(&self) -> Mechanism {
        self.median.mech
    }

    pub fn size(&self) -> usize {
        self.median.size
    }

    /// The larger of the two spreads.
    pub fn worst_spread(&self) -> Option<f64> {
        match (self.rtt_spread, self.msgs_spread) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when a spread is over [`UNSTEADY_SPREAD`].
    pub fn unsteady(&self) -> bool {
        self.worst_spread().is_some_and(|s| s > UNSTEADY_SPREAD)
    }

    /// How many repeats failed.
    pub fn failures(&self) -> usize {
        self.runs.iter().filter(|o| o.error.is_some()).count()
    }
}

/// A one-repeat result with made-up figures, for the tests of the modules that read results.
#[cfg(test)]
pub fn sample(mech: Mechanism, size: usize, rtt_ns: u64, msgs_per_s: f64) -> Measured {
    Measured::of(vec![Outcome {
        mech,
        size,
        pinned: true,
        rtt: Some(RoundTrips {
            median_ns: rtt_ns,
            p99_ns: rtt_ns * 2,
            p999_ns: rtt_ns * 3,
            samples: 1000,
            capped: false,
            resends: 0,
        }),
        throughput: Some(Throughput {
            msgs_per_s,
            gbps: msgs_per_s * size as f64 / 1e9,
            sent: 10_000,
            drops: if mech == Mechanism::Udp { 25 } else { 0 },
        }),
        skipped: None,
        error: None,
    }])
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median_f64(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    median_f64(values.map(|v| v as f64)).round() as u64
}

/// (max - min) / median, for two values or more.
fn spread(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.collect();
    if v.len() < 2 {
        return None;
    }
    let (min, max) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let median = median_f64(v.into_iter());
    (median > 0.0).then(|| (max - min) / median)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(median_ns: u64, msgs_per_s: f64, error: Option<&str>) -> Outcome {
        Outcome {
            mech: Mechanism::Udp,
            size: 64,
            pinned: true,
            rtt: error.is_none().then_some(RoundTrips {
                median_ns,
                p99_ns: median_ns * 2,
                p999_ns: median_ns * 3,
                samples: 100,
                capped: false,
                resends: 1,
            }),
            throughput: error.is_none().then_some(Throughput {
                msgs_per_s,
                gbps: msgs_per_s * 64.0 / 1e9,
                sent: 1000,
                drops: 5,
            }),
            skipped: None,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn medians_spreads_and_sums() {
        let m = Measured::of(vec![
            run(1000, 1e6, None),
            run(3000, 2e6, None),
            run(2000, 4e6, None),
        ]);
        let rtt = m.median.rtt.unwrap();
        assert_eq!((rtt.median_ns, rtt.p99_ns, rtt.resends), (2000, 4000, 3));
        let t = m.median.throughput.unwrap();
        assert_eq!((t.msgs_per_s, t.sent, t.drops), (2e6, 3000, 15));
        assert_eq!(m.rtt_spread, Some(1.0));
        assert_eq!(m.msgs_spread, Some(1.5));
        assert!(m.unsteady());
        assert!(m.median.error.is_none());
    }

    #[test]
    fn one_repeat_has_no_spread_and_failures_are_kept() {
        let m = Measured::of(vec![run(1000, 1e6, None)]);
        assert_eq!((m.rtt_spread, m.msgs_spread), (None, None));
        assert!(!m.unsteady());
        let m = Measured::of(vec![run(1000, 1e6, None), run(0, 0.0, Some("boom"))]);
        assert_eq!(m.failures(), 1);
        assert_eq!(m.median.error.as_deref(), Some("repeat 2 of 2: boom"));
        assert_eq!(m.median.rtt.unwrap().median_ns, 1000);
        assert_eq!(median_u64([1, 2, 3, 4].into_iter()), 3);
    }
}
