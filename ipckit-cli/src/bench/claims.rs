//! The closing statements of the report, each computed from this run's medians: which
//! mechanism was fastest, what shared memory gains over the kernel, UDP against TCP, what a
//! cross-CPU wake-up costs against busy polling, shared-memory round trips against the
//! cache-line floor (`line`), and large messages against `memcpy`. A statement whose
//! mechanisms were not measured is skipped, and says why.

use ipckit::Scheme;
use serde::Serialize;

use super::aggregate::Measured;
use super::mechanism::{Copies, Mechanism};
use super::stream::Throughput;
use super::units::{grouped, ns, rate, size as fmt_size, times};

/// One statement of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    /// A stable name: fastest_small, fastest_large, shm_vs_kernel, udp_vs_tcp, wakeup_vs_spin,
    /// shm_vs_line, copies_vs_memcpy.
    pub topic: &'static str,
    /// The statement, or `TITLE: skipped: why`.
    pub text: String,
    /// False when the statement was skipped for want of figures.
    pub measured: bool,
}

impl Claim {
    fn made(topic: &'static str, text: String) -> Claim {
        Claim {
            topic,
            text,
            measured: true,
        }
    }

    fn skipped(topic: &'static str, why: String) -> Claim {
        let title = match topic {
            "fastest_small" => "Fastest for small messages",
            "fastest_large" => "Fastest for large messages",
            "shm_vs_kernel" => "Shared memory against the kernel",
            "udp_vs_tcp" => "UDP against TCP",
            "wakeup_vs_spin" => "Wake-up against busy polling",
            "shm_vs_line" => "Shared memory against the cache-line floor",
            "copies_vs_memcpy" => "Copies against memcpy",
            _ => topic,
        };
        Claim {
            topic,
            text: format!("{title}: skipped: {why}"),
            measured: false,
        }
    }
}

/// The size that stands for small messages (64 B, else the smallest measured) and for large
/// ones (1 MiB, else the largest, if it differs from the small one).
fn small_and_large(results: &[Measured]) -> (Option<usize>, Option<usize>) {
    let mut sizes: Vec<usize> = results.iter().map(Measured::size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let small = if sizes.contains(&64) {
        Some(64)
    } else {
        sizes.first().copied()
    };
    let large = if sizes.contains(&(1 << 20)) {
        Some(1 << 20)
    } else {
        sizes.last().copied().filter(|&l| Some(l) != small)
    };
    (small, large)
}

/// Mechanisms compared with one another: every message copied in and out through the message
/// API. Not the yardstick (`memcpy`) nor the in-place rows (`shm-ref`, `shm-loan`), which
/// move less of each message and have a statement of their own (`copies_vs_memcpy`).
fn is_like_for_like(m: Mechanism) -> bool {
    !m.is_yardstick() && m.copies() == Copies::Both
}

/// Mechanisms whose messages go through shared memory, with no system call on the fast path.
fn is_shared_memory(m: Mechanism) -> bool {
    !m.is_pattern()
        && is_like_for_like(m)
        && matches!(m.scheme(), Scheme::Shm | Scheme::Mmap | Scheme::ShmMpsc)
}

/// Mechanisms whose every message goes through a kernel object (pipes, sockets, queues).
fn is_kernel_path(m: Mechanism) -> bool {
    !m.is_pattern()
        && !m.is_yardstick()
        && matches!(
            m.scheme(),
            Scheme::Pipe
                | Scheme::Fifo
                | Scheme::Unix
                | Scheme::UnixDgram
                | Scheme::UnixSeqpacket
                | Scheme::Tcp
                | Scheme::Udp
                | Scheme::Mq
        )
}

/// The row of `mech` at `size` that has a round-trip median.
fn row(results: &[Measured], mech: Mechanism, size: usize) -> Option<&Measured> {
    results
        .iter()
        .find(|r| r.mech() == mech && r.size() == size && r.median.rtt.is_some())
}

/// The lowest round-trip median at `size` among mechanisms that pass `keep`.
fn fastest_rtt(
    results: &[Measured],
    size: usize,
    keep: impl Fn(Mechanism) -> bool,
) -> Option<(Mechanism, u64)> {
    results
        .iter()
        .filter(|r| r.size() == size && keep(r.mech()))
        .filter_map(|r| r.median.rtt.map(|t| (r.mech(), t.median_ns)))
        .min_by_key(|&(_, v)| v)
}

/// The highest streaming rate at `size` among mechanisms that pass `keep`.
fn fastest_rate(
    results: &[Measured],
    size: usize,
    keep: impl Fn(Mechanism) -> bool,
) -> Option<(Mechanism, f64, f64)> {
    results
        .iter()
        .filter(|r| r.size() == size && keep(r.mech()))
        .filter_map(|r| {
            r.median
                .throughput
                .map(|t| (r.mech(), t.msgs_per_s, t.gbps))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Every statement, in the report's order.
pub fn compute(results: &[Measured], pinned: bool) -> Vec<Claim> {
    let (small, large) = small_and_large(results);
    vec![
        fastest("fastest_small", "small", results, small),
        fastest("fastest_large", "large", results, large),
        shm_vs_kernel(results, small, large),
        udp_vs_tcp(results, small),
        wakeup_vs_spin(results, small, pinned),
        shm_vs_line(results, small),
        copies_vs_memcpy(results, large),
    ]
}

fn fastest(topic: &'static str, what: &str, results: &[Measured], size: Option<usize>) -> Claim {
    let Some(size) = size else {
        return Claim::skipped(topic, format!("no {what} size was measured"));
    };
    let rtt = fastest_rtt(results, size, is_like_for_like);
    let tput = fastest_rate(results, size, is_like_for_like);
    let mut parts = Vec::new();
    if let Some((m, v)) = rtt {
        parts.push(format!(
            "the fastest round trip was {} ({} median)",
            m.name(),
            ns(v)
        ));
    }
    if let Some((m, r, gbps)) = tput {
        parts.push(format!(
            "the highest one-way rate was {} ({}, {gbps:.3} GB/s)",
            m.name(),
            rate(r)
        ));
    }
    if parts.is_empty() {
        return Claim::skipped(
            topic,
            format!("no mechanism produced figures at {}", fmt_size(size)),
        );
    }
    Claim::made(
        topic,
        format!(
            "{} messages ({}): {}.",
            cap(what),
            fmt_size(size),
            parts.join("; ")
        ),
    )
}

fn shm_vs_kernel(results: &[Measured], small: Option<usize>, large: Option<usize>) -> Claim {
    const TOPIC: &str = "shm_vs_kernel";
    let mut parts = Vec::new();
    for size in [small, large].into_iter().flatten() {
        let shm = fastest_rtt(results, size, is_shared_memory);
        let kernel = fastest_rtt(results, size, is_kernel_path);
        let (Some((sm, sv)), Some((km, kv))) = (shm, kernel) else {
            continue;
        };
        let mut text = format!(
            "at {} the best shared-memory mechanism ({}, {}) made round trips {} as fast as \
             the fastest kernel path ({}, {})",
            fmt_size(size),
            sm.name(),
            ns(sv),
            times(kv as f64 / sv.max(1) as f64),
            km.name(),
            ns(kv)
        );
        let shm_rate = fastest_rate(results, size, is_shared_memory);
        let kernel_rate = fastest_rate(results, size, is_kernel_path);
        if let (Some((sm, sr, _)), Some((km, kr, _))) = (shm_rate, kernel_rate) {
            if kr > 0.0 {
                text += &format!(
                    " and streamed {} the rate ({} {}, {} {})",
                    times(sr / kr),
                    sm.name(),
                    rate(sr),
                    km.name(),
                    rate(kr)
                );
            }
        }
        parts.push(text);
    }
    if parts.is_empty() {
        return Claim::skipped(
            TOPIC,
            "needs a shared-memory mechanism (shm, shm-spin, shm-block, sem, mmap) and a kernel \
             path (pipe, fifo, unix*, tcp, udp, mq) measured at the same size"
                .to_owned(),
        );
    }
    Claim::made(TOPIC, format!("Shared memory: {}.", parts.join("; ")))
}

fn udp_vs_tcp(results: &[Measured], small: Option<usize>) -> Claim {
    const TOPIC: &str = "udp_vs_tcp";
    let sizes: Vec<usize> = {
        let mut s: Vec<usize> = results
            .iter()
            .filter(|r| r.mech() == Mechanism::Udp && r.median.rtt.is_some())
            .map(Measured::size)
            .filter(|&s| row(results, Mechanism::Tcp, s).is_some())
            .collect();
        s.sort_unstable();
        s
    };
    let Some(size) = small
        .filter(|s| sizes.contains(s))
        .or(sizes.first().copied())
    else {
        return Claim::skipped(
            TOPIC,
            "needs udp and tcp measured at a common size".to_owned(),
        );
    };
    let (Some(udp), Some(tcp)) = (
        row(results, Mechanism::Udp, size),
        row(results, Mechanism::Tcp, size),
    ) else {
        return Claim::skipped(TOPIC, "udp or tcp has no figures".to_owned());
    };
    let (u, t) = (
        udp.median.rtt.map_or(0, |r| r.median_ns),
        tcp.median.rtt.map_or(0, |r| r.median_ns),
    );
    let verdict = if u < t {
        format!(
            "UDP was faster than TCP here: {} round trip",
            times(t as f64 / u.max(1) as f64)
        )
    } else {
        format!(
            "UDP was not faster than TCP here: {} round trip",
            times(t as f64 / u.max(1) as f64)
        )
    };
    let mut text = format!(
        "At {}, {verdict} ({} against {})",
        fmt_size(size),
        ns(u),
        ns(t)
    );
    if let (Some(ut), Some(tt)) = (udp.median.throughput, tcp.median.throughput) {
        text += &format!(
            "; streaming {} against {} ({})",
            rate(ut.msgs_per_s),
            rate(tt.msgs_per_s),
            if ut.msgs_per_s > tt.msgs_per_s {
                "UDP ahead"
            } else {
                "TCP ahead"
            }
        );
    }
    let (sent, drops) = results
        .iter()
        .filter(|r| r.mech() == Mechanism::Udp)
        .flat_map(|r| r.runs.iter())
        .filter_map(|o| o.throughput)
        .fold((0u64, 0u64), |(s, d), t| (s + t.sent, d + t.drops));
    if sent > 0 {
        text += &format!(
            ". UDP dropped {} of {} messages streamed ({:.2}%, all sizes and repeats), which \
             TCP never does",
            grouped(drops),
            grouped(sent),
            100.0 * drops as f64 / sent as f64
        );
    }
    Claim::made(TOPIC, text + ".")
}

fn wakeup_vs_spin(results: &[Measured], small: Option<usize>, pinned: bool) -> Claim {
    const TOPIC: &str = "wakeup_vs_spin";
    let Some(size) = small else {
        return Claim::skipped(TOPIC, "nothing was measured".to_owned());
    };
    let (Some(block), Some(spin)) = (
        row(results, Mechanism::ShmBlock, size),
        row(results, Mechanism::ShmSpin, size),
    ) else {
        return Claim::skipped(
            TOPIC,
            format!(
                "needs shm-block and shm-spin measured at {}",
                fmt_size(size)
            ),
        );
    };
    let b = block.median.rtt.map_or(0, |r| r.median_ns);
    let s = spin.median.rtt.map_or(0, |r| r.median_ns);
    let per_wake = (b as f64 - s as f64) / 2.0;
    let where_ = if pinned {
        "the two processes on different CPUs"
    } else {
        "the processes not pinned, so some wake-ups may have been on the same CPU"
    };
    let cost = if per_wake > 0.0 {
        format!(
            "a wake-up (two per round trip) cost about {} more than busy polling, which \
             keeps a CPU busy while it waits",
            ns(per_wake.round() as u64)
        )
    } else {
        "waking the peer cost nothing measurable over busy polling here".to_owned()
    };
    Claim::made(
        TOPIC,
        format!(
            "Wake-up against busy polling at {} ({where_}): a round trip took {} with futex \
             wake-ups (shm-block) and {} spinning (shm-spin): {cost}.",
            fmt_size(size),
            ns(b),
            ns(s)
        ),
    )
}

/// The shared-memory round trips at the small size against the `line` yardstick of the same
/// run: how far each is above what two cache-line transfers between the CPUs cost now.
fn shm_vs_line(results: &[Measured], small: Option<usize>) -> Claim {
    const TOPIC: &str = "shm_vs_line";
    let Some(size) = small else {
        return Claim::skipped(TOPIC, "nothing was measured".to_owned());
    };
    let Some(floor) = row(results, Mechanism::Line, size).and_then(|r| r.median.rtt) else {
        return Claim::skipped(TOPIC, format!("needs line measured at {}", fmt_size(size)));
    };
    let floor = floor.median_ns.max(1);
    let parts: Vec<String> = results
        .iter()
        .filter(|r| r.size() == size && is_shared_memory(r.mech()))
        .filter_map(|r| r.median.rtt.map(|t| (r.mech(), t.median_ns)))
        .map(|(m, v)| {
            format!(
                "{} {} ({} the floor)",
                m.name(),
                ns(v),
                times(v as f64 / floor as f64)
            )
        })
        .collect();
    if parts.is_empty() {
        return Claim::skipped(
            TOPIC,
            format!(
                "needs a shared-memory mechanism (shm, shm-spin, shm-block, sem, mmap) measured \
                 at {}",
                fmt_size(size)
            ),
        );
    }
    Claim::made(
        TOPIC,
        format!(
            "Shared memory against the cache-line floor at {}: two cache-line transfers between \
             the CPUs (line) took {} a round trip; {}.",
            fmt_size(size),
            ns(floor),
            parts.join("; ")
        ),
    )
}

/// The streaming figures of `mech` at `size`, if it streamed.
fn throughput(results: &[Measured], mech: Mechanism, size: usize) -> Option<Throughput> {
    results
        .iter()
        .find(|r| r.mech() == mech && r.size() == size)
        .and_then(|r| r.median.throughput)
}

/// The `shm://` rows at the large size against one `memcpy` of a message: two copies
/// (`shm`), one (`shm-ref`), none (`shm-loan`).
fn copies_vs_memcpy(results: &[Measured], large: Option<usize>) -> Claim {
    const TOPIC: &str = "copies_vs_memcpy";
    let Some(size) = large else {
        return Claim::skipped(TOPIC, "no large size was measured".to_owned());
    };
    let Some(copy) = throughput(results, Mechanism::Memcpy, size).filter(|t| t.gbps > 0.0) else {
        return Claim::skipped(
            TOPIC,
            format!("needs memcpy measured at {}", fmt_size(size)),
        );
    };
    let parts: Vec<String> = [
        (Mechanism::Shm, "two copies"),
        (Mechanism::ShmRef, "one copy"),
        (Mechanism::ShmLoan, "no copy"),
    ]
    .into_iter()
    .filter_map(|(m, how)| {
        throughput(results, m, size).map(|t| {
            format!(
                "{} ({how}) {:.2} GB/s, {} of it",
                m.name(),
                t.gbps,
                times(t.gbps / copy.gbps)
            )
        })
    })
    .collect();
    if parts.is_empty() {
        return Claim::skipped(
            TOPIC,
            format!(
                "needs shm, shm-ref or shm-loan measured at {}",
                fmt_size(size)
            ),
        );
    }
    Claim::made(
        TOPIC,
        format!(
            "Copies against memcpy at {}: one memcpy of a message ran at {:.2} GB/s; {}.",
            fmt_size(size),
            copy.gbps,
            parts.join("; ")
        ),
    )
}

/// The text with its first letter in upper case.
fn cap(text: &str) -> String {
    let mut c = text.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::aggregate::sample as measured;

    fn topic<'a>(claims: &'a [Claim], topic: &str) -> &'a Claim {
        claims.iter().find(|c| c.topic == topic).unwrap()
    }

    #[test]
    fn statements_follow_the_figures() {
        let results = vec![
            measured(Mechanism::Unix, 64, 10_000, 900_000.0),
            measured(Mechanism::Tcp, 64, 16_000, 600_000.0),
            measured(Mechanism::Udp, 64, 14_000, 450_000.0),
            measured(Mechanism::ShmSpin, 64, 1_000, 12e6),
            measured(Mechanism::ShmBlock, 64, 11_000, 16e6),
            measured(Mechanism::Unix, 1 << 20, 330_000, 5_000.0),
            measured(Mechanism::ShmSpin, 1 << 20, 340_000, 12_000.0),
        ];
        let claims = compute(&results, true);
        assert_eq!(claims.len(), 7);
        let small = topic(&claims, "fastest_small");
        assert!(
            small.text.contains("round trip was shm-spin (1,000 ns"),
            "{}",
            small.text
        );
        assert!(small.text.contains("rate was shm-block"), "{}", small.text);
        let large = topic(&claims, "fastest_large");
        assert!(large.text.contains("1 MiB"), "{}", large.text);
        assert!(large.text.contains("round trip was unix"), "{}", large.text);
        let shm = topic(&claims, "shm_vs_kernel");
        assert!(
            shm.text
                .contains("(shm-spin, 1,000 ns) made round trips 10× as fast"),
            "{}",
            shm.text
        );
        let udp = topic(&claims, "udp_vs_tcp");
        assert!(udp.text.contains("UDP was faster than TCP"), "{}", udp.text);
        assert!(udp.text.contains("dropped 25 of 10,000"), "{}", udp.text);
        let wake = topic(&claims, "wakeup_vs_spin");
        assert!(wake.text.contains("about 5,000 ns more"), "{}", wake.text);
        assert!(!topic(&claims, "copies_vs_memcpy").measured);
        assert!(!topic(&claims, "shm_vs_line").measured);
        assert!(claims.iter().filter(|c| !c.measured).count() == 2);
    }

    #[test]
    fn large_messages_are_set_against_memcpy_and_memcpy_is_no_mechanism() {
        let mb = 1 << 20;
        let results = vec![
            measured(Mechanism::Shm, mb, 400_000, 10_000.0),
            measured(Mechanism::ShmLoan, mb, 1_000, 1e6),
            measured(Mechanism::Memcpy, mb, 1, 20_000.0),
            measured(Mechanism::Memcpy, 64, 1, 300e6),
            measured(Mechanism::Unix, 64, 10_000, 900_000.0),
        ];
        let claims = compute(&results, true);
        let copies = topic(&claims, "copies_vs_memcpy");
        assert!(copies.measured, "{}", copies.text);
        assert!(copies.text.contains("at 1 MiB"), "{}", copies.text);
        assert!(
            copies
                .text
                .contains("shm (two copies) 10.49 GB/s, 0.50× of it"),
            "{}",
            copies.text
        );
        assert!(
            copies.text.contains("shm-loan (no copy)"),
            "{}",
            copies.text
        );
        assert!(!copies.text.contains("shm-ref"), "{}", copies.text);
        // memcpy is the yardstick, and shm-loan moves less of each message: neither is the
        // fastest mechanism nor the best shared memory.
        let small = topic(&claims, "fastest_small");
        assert!(small.text.contains("rate was unix"), "{}", small.text);
        let large = topic(&claims, "fastest_large");
        assert!(
            large.text.contains("round trip was shm (400,000 ns"),
            "{}",
            large.text
        );
    }

    /// The shared-memory rows are set against the cache-line floor of the same run, which is
    /// itself no mechanism: never the fastest, never compared with the kernel.
    #[test]
    fn shared_memory_is_set_against_the_cache_line_floor() {
        let results = vec![
            measured(Mechanism::Line, 64, 400, 0.0),
            measured(Mechanism::ShmSpin, 64, 600, 12e6),
            measured(Mechanism::Shm, 64, 1_000, 11e6),
            measured(Mechanism::ShmRef, 64, 500, 13e6),
            measured(Mechanism::Unix, 64, 10_000, 900_000.0),
        ];
        let claims = compute(&results, true);
        let line = topic(&claims, "shm_vs_line");
        assert!(line.measured, "{}", line.text);
        assert!(line.text.contains("(line) took 400 ns"), "{}", line.text);
        assert!(
            line.text.contains("shm-spin 600 ns (1.50× the floor)"),
            "{}",
            line.text
        );
        assert!(
            line.text.contains("shm 1,000 ns (2.5× the floor)"),
            "{}",
            line.text
        );
        // In place, shm-ref moves less of each message: not in the like-for-like rows.
        assert!(!line.text.contains("shm-ref"), "{}", line.text);
        let small = topic(&claims, "fastest_small");
        assert!(
            small.text.contains("round trip was shm-spin"),
            "{}",
            small.text
        );
        let kernel = topic(&claims, "shm_vs_kernel");
        assert!(!kernel.text.contains("line"), "{}", kernel.text);
        let no_shm = compute(&[measured(Mechanism::Line, 64, 400, 0.0)], true);
        assert!(topic(&no_shm, "shm_vs_line")
            .text
            .contains("skipped: needs a shared-memory mechanism"));
    }

    #[test]
    fn missing_mechanisms_are_skipped_with_the_reason() {
        let results = vec![measured(Mechanism::Pipe, 4096, 12_000, 400_000.0)];
        let claims = compute(&results, false);
        let skipped: Vec<&str> = claims
            .iter()
            .filter(|c| !c.measured)
            .map(|c| c.topic)
            .collect();
        assert_eq!(
            skipped,
            [
                "fastest_large",
                "shm_vs_kernel",
                "udp_vs_tcp",
                "wakeup_vs_spin",
                "shm_vs_line",
                "copies_vs_memcpy"
            ]
        );
        assert!(topic(&claims, "fastest_small").text.contains("4 KiB"));
        assert!(topic(&claims, "wakeup_vs_spin")
            .text
            .starts_with("Wake-up against busy polling: skipped: needs shm-block and shm-spin"));
    }
}
