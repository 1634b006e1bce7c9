//! Printing benchmark outcomes: one JSON object per line, or an aligned table.

use std::io::{self, Write};

use serde::Serialize;

use super::aggregate::Measured;
use super::append::AppendRow;
use super::case::Outcome;
use super::claims::Claim;

/// One line of `--json` output. Figures that do not apply are `null`; `sent`, `drops` and
/// `rtt_resends` appear for lossy mechanisms only, `skipped` and `error` when they apply.
#[derive(Serialize)]
pub struct JsonRow<'a> {
    mech: &'a str,
    size: usize,
    rtt_ns_median: Option<u64>,
    rtt_ns_p99: Option<u64>,
    rtt_ns_p999: Option<u64>,
    msgs_per_s: Option<f64>,
    gbps: Option<f64>,
    pin: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_samples: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_capped: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_resends: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drops: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> JsonRow<'a> {
    /// The row of one outcome (one repeat, or the medians).
    pub fn of(o: &'a Outcome) -> JsonRow<'a> {
        let lossy = o.mech.is_lossy() && o.skipped.is_none();
        let only_lossy = |v: Option<u64>| lossy.then_some(v);
        JsonRow {
            mech: o.mech.name(),
            size: o.size,
            rtt_ns_median: o.rtt.map(|r| r.median_ns),
            rtt_ns_p99: o.rtt.map(|r| r.p99_ns),
            rtt_ns_p999: o.rtt.map(|r| r.p999_ns),
            msgs_per_s: o.throughput.map(|t| t.msgs_per_s),
            gbps: o.throughput.map(|t| t.gbps),
            pin: if o.pinned { "split" } else { "none" },
            rtt_samples: o.rtt.map(|r| r.samples),
            rtt_capped: o.rtt.filter(|r| r.capped).map(|_| true),
            rtt_resends: only_lossy(o.rtt.map(|r| r.resends)),
            sent: only_lossy(o.throughput.map(|t| t.sent)),
            drops: only_lossy(o.throughput.map(|t| t.drops)),
            skipped: o.skipped.as_deref(),
            error: o.error.as_deref(),
        }
    }
}

/// A row of medians over the repeats, with their spread.
#[derive(Serialize)]
pub struct JsonSummaryRow<'a> {
    #[serde(flatten)]
    pub figures: JsonRow<'a>,
    pub repeats: usize,
    pub rtt_spread: Option<f64>,
    pub msgs_spread: Option<f64>,
}

impl<'a> JsonSummaryRow<'a> {
    pub fn of(m: &'a Measured) -> JsonSummaryRow<'a> {
        JsonSummaryRow {
            figures: JsonRow::of(&m.median),
            repeats: m.runs.len(),
            rtt_spread: m.rtt_spread,
            msgs_spread: m.msgs_spread,
        }
    }
}

/// One line of `--json` output for an append measurement of the queue.
#[derive(Serialize)]
pub struct JsonAppendRow<'a> {
    mech: String,
    producers: usize,
    size: usize,
    msgs_per_s: Option<f64>,
    fdatasync_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> JsonAppendRow<'a> {
    pub fn of(row: &'a AppendRow) -> JsonAppendRow<'a> {
        JsonAppendRow {
            mech: format!("{}-{}", row.mech.name(), row.kind),
            producers: row.producers,
            size: row.size,
            msgs_per_s: row.msgs_per_s,
            fdatasync_per_s: row.fdatasync_per_s,
            error: row.error.as_deref(),
        }
    }
}

/// Writes outcomes as they come.
pub struct Printer<W: Write> {
    out: W,
    json: bool,
    header_done: bool,
}

impl<W: Write> Printer<W> {
    /// A printer of JSON lines (`json`) or of a table.
    pub fn new(out: W, json: bool) -> Printer<W> {
        Printer {
            out,
            json,
            header_done: false,
        }
    }

    /// A comment line above the table (nothing in JSON mode).
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(self.out, "# {text}")?;
        self.out.flush()
    }

    /// Writes the medians of one mechanism and size and flushes.
    pub fn print(&mut self, m: &Measured) -> io::Result<()> {
        let o = &m.median;
        if self.json {
            let line = serde_json::to_string(&JsonSummaryRow::of(m)).map_err(io::Error::other)?;
            writeln!(self.out, "{line}")?;
        } else {
            if !self.header_done {
                writeln!(
                    self.out,
                    "{:<15} {:>8} {:>11} {:>11} {:>11} {:>12} {:>8} {:>6}  notes",
                    "mechanism",
                    "size",
                    "rtt_med_ns",
                    "rtt_p99_ns",
                    "rtt_p999_ns",
                    "msgs/s",
                    "GB/s",
                    "spread"
                )?;
                self.header_done = true;
            }
            let ns = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            writeln!(
                self.out,
                "{:<15} {:>8} {:>11} {:>11} {:>11} {:>12} {:>8} {:>6}  {}",
                o.mech.name(),
                o.size,
                ns(o.rtt.map(|r| r.median_ns)),
                ns(o.rtt.map(|r| r.p99_ns)),
                ns(o.rtt.map(|r| r.p999_ns)),
                o.throughput
                    .map_or("-".to_owned(), |t| format!("{:.0}", t.msgs_per_s)),
                o.throughput
                    .map_or("-".to_owned(), |t| format!("{:.3}", t.gbps)),
                m.worst_spread()
                    .map_or("-".to_owned(), |s| format!("{:.0}%", 100.0 * s)),
                notes(m),
            )?;
        }
        self.out.flush()
    }
}

impl<W: Write> Printer<W> {
    /// Writes one append measurement and flushes.
    pub fn print_append(&mut self, row: &AppendRow) -> io::Result<()> {
        let mech = format!("{}-{}", row.mech.name(), row.kind);
        if self.json {
            let line = serde_json::to_string(&JsonAppendRow::of(row)).map_err(io::Error::other)?;
            writeln!(self.out, "{line}")?;
        } else {
            let plural = if row.producers == 1 { "" } else { "es" };
            let mut notes = if row.kind == "read" {
                format!(
                    "1 consumer process draining what {} producer process{plural} appended",
                    row.producers
                )
            } else {
                format!("{} producer process{plural}", row.producers)
            };
            if let Some(r) = row.fdatasync_per_s {
                notes += &format!("; disk: {r:.0} fdatasync/s");
            }
            if let Some(e) = &row.error {
                notes += &format!("; error: {e}");
            }
            writeln!(
                self.out,
                "{:<15} {:>8} {:>11} {:>11} {:>11} {:>12} {:>8} {:>6}  {notes}",
                mech,
                row.size,
                "-",
                "-",
                "-",
                row.msgs_per_s.map_or("-".to_owned(), |r| format!("{r:.0}")),
                row.msgs_per_s.map_or("-".to_owned(), |r| format!(
                    "{:.3}",
                    r * row.size as f64 / 1e9
                )),
                "-",
            )?;
        }
        self.out.flush()
    }

    /// Writes the claims below the table (nothing in JSON mode: they are in results.json).
    pub fn print_claims(&mut self, claims: &[Claim]) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(self.out, "\nWhat this run shows:")?;
        for c in claims {
            writeln!(self.out, "- {}", c.text)?;
        }
        self.out.flush()
    }
}

/// The notes column of the table.
pub fn notes(m: &Measured) -> String {
    let o = &m.median;
    let mut notes = Vec::new();
    if let Some(reason) = &o.skipped {
        notes.push(format!("skipped: {reason}"));
    }
    if let Some(r) = o.rtt {
        if r.capped {
            notes.push(format!("time cap: {} samples", r.samples));
        }
        if r.resends > 0 {
            notes.push(format!("{} round trips resent", r.resends));
        }
    }
    if let Some(t) = o.throughput {
        if o.mech.is_lossy() {
            let pct = 100.0 * t.drops as f64 / t.sent.max(1) as f64;
            notes.push(format!("drops {pct:.1}% ({} of {})", t.drops, t.sent));
        }
    }
    if m.unsteady() {
        let pct = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.0}%", 100.0 * s));
        notes.push(format!(
            "unsteady: spread of rtt {}, of msgs/s {}",
            pct(m.rtt_spread),
            pct(m.msgs_spread)
        ));
    }
    if let Some(e) = &o.error {
        notes.push(format!("error: {e}"));
    }
    notes.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::mechanism::Mechanism;
    use crate::bench::pingpong::RoundTrips;
    use crate::bench::stream::Throughput;

    fn outcome(mech: Mechanism) -> Outcome {
        Outcome {
            mech,
            size: 64,
            pinned: true,
            rtt: Some(RoundTrips {
                median_ns: 15_000,
                p99_ns: 35_000,
                p999_ns: 50_000,
                samples: 100,
                capped: false,
                resends: 0,
            }),
            throughput: Some(Throughput {
                msgs_per_s: 1e6,
                gbps: 0.064,
                sent: 1000,
                drops: 10,
            }),
            skipped: None,
            error: None,
        }
    }

    fn clone(o: &Outcome) -> Outcome {
        Outcome {
            skipped: o.skipped.clone(),
            error: o.error.clone(),
            ..*o
        }
    }

    fn json(o: &Outcome) -> serde_json::Value {
        let mut p = Printer::new(Vec::new(), true);
        p.print(&Measured::of(vec![clone(o)])).unwrap();
        let text = String::from_utf8(p.out).unwrap();
        assert_eq!(text.lines().count(), 1);
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn json_rows_have_the_documented_keys() {
        let v = json(&outcome(Mechanism::Unix));
        assert_eq!(v["mech"], "unix");
        assert_eq!(v["rtt_ns_p999"], 50_000);
        assert_eq!(v["gbps"], 0.064);
        assert!(v.get("drops").is_none());
        let v = json(&outcome(Mechanism::Udp));
        assert_eq!(v["drops"], 10);
        let mut skipped = outcome(Mechanism::Udp);
        skipped.rtt = None;
        skipped.throughput = None;
        skipped.size = 1 << 20;
        skipped.skipped = Some("too big".into());
        let v = json(&skipped);
        assert!(v["rtt_ns_median"].is_null() && v["msgs_per_s"].is_null());
        assert_eq!(v["skipped"], "too big");
        assert!(v.get("drops").is_none());
    }

    #[test]
    fn table_rows_line_up_under_the_header() {
        let mut p = Printer::new(Vec::new(), false);
        p.print(&Measured::of(vec![outcome(Mechanism::Pipe)]))
            .unwrap();
        let mut failed = outcome(Mechanism::UnixSeqpacket);
        failed.throughput = None;
        failed.error = Some("stream: boom".into());
        p.print(&Measured::of(vec![failed])).unwrap();
        let text = String::from_utf8(p.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("notes").unwrap();
        assert!(lines[2][col..].starts_with("error: stream: boom"), "{text}");
        assert_eq!(lines[1].find(" 15000 "), lines[2].find(" 15000 "));
    }
}
