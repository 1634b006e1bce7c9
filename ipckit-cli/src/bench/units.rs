//! Numbers as people read them: sizes in B/KiB/MiB, durations and rates with separators.

/// 64 B, 4 KiB, 1 MiB, 1.5 KiB.
pub fn size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes % unit == 0 {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// An integer with thousands separators: 1,234,567.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds: `9,523 ns`.
pub fn ns(n: u64) -> String {
    format!("{} ns", grouped(n))
}

/// Messages per second, three significant figures: `483 k msg/s`, `16.5 M msg/s`.
pub fn rate(per_s: f64) -> String {
    let (value, prefix) = if per_s >= 1e6 {
        (per_s / 1e6, " M")
    } else if per_s >= 1e3 {
        (per_s / 1e3, " k")
    } else {
        (per_s, "")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$}{prefix} msg/s")
}

/// A ratio: `9.8×`, `1.10×`.
pub fn times(ratio: f64) -> String {
    if ratio >= 10.0 {
        format!("{ratio:.0}×")
    } else if ratio >= 2.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(size(64), "64 B");
        assert_eq!(size(4096), "4 KiB");
        assert_eq!(size(1 << 20), "1 MiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(ns(9523), "9,523 ns");
        assert_eq!(rate(483_000.0), "483 k msg/s");
        assert_eq!(rate(16_469_282.0), "16.5 M msg/s");
        assert_eq!(rate(619.0), "619 msg/s");
        assert_eq!(times(9.8), "9.8×");
        assert_eq!(times(1.1), "1.10×");
        assert_eq!(times(17.6), "18×");
    }
}
