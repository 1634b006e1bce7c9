//! index.html of `--report`: the plots, the table and the claims in one page that needs no
//! network (the plots are the SVG files beside it; no script, no external style).

use std::fmt::Write as _;

use super::aggregate::Measured;
use super::append::AppendRow;
use super::report::notes;
use super::results::Run;
use super::units::{grouped, size};

/// The file names the page refers to.
pub const LATENCY_SVG: &str = "latency.svg";
pub const THROUGHPUT_SVG: &str = "throughput.svg";
pub const RESULTS_JSON: &str = "results.json";

const STYLE: &str = "\
body { font-family: sans-serif; margin: 2em; color: #222; background: #fff; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fde8e8; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.warn { color: #a40000; }
";

/// Escapes text for HTML and XML (elements and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub fn index_html(run: &Run<'_>) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>ipckit bench report</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <h1>ipckit bench</h1>\n<p>{}<br>ipckit {}; {}; {} repeat(s), medians shown; \
         streaming {} s per measurement. Raw figures: <a href=\"{RESULTS_JSON}\">{RESULTS_JSON}</a>.</p>\n",
        escape(&run.machine.summary()),
        env!("CARGO_PKG_VERSION"),
        escape(&run.settings.pinning),
        run.settings.repeat,
        run.settings.duration_s,
    );
    if !run.warnings.is_empty() {
        h.push_str("<ul class=\"warn\">\n");
        for w in run.warnings {
            let _ = writeln!(h, "<li>warning: {}</li>", escape(w));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>What this run shows</h2>\n<ul class=\"claims\">\n");
    for c in run.claims {
        let _ = writeln!(h, "<li>{}</li>", escape(&c.text));
    }
    h.push_str("</ul>\n");
    let _ = write!(
        h,
        "<h2>Latency</h2>\n<img src=\"{LATENCY_SVG}\" alt=\"round-trip latency against message size\">\n\
         <h2>Throughput</h2>\n<img src=\"{THROUGHPUT_SVG}\" alt=\"throughput against message size\">\n"
    );
    h.push_str(&table(run.results));
    if !run.append.is_empty() {
        h.push_str(&append_table(run.append));
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// The table of medians.
fn table(results: &[Measured]) -> String {
    let mut h = String::from(
        "<h2>Figures</h2>\n<table class=\"results\">\n<tr><th>mechanism</th><th>size</th>\
         <th>RTT median ns</th><th>RTT p99 ns</th><th>RTT p99.9 ns</th><th>msgs/s</th>\
         <th>GB/s</th><th>spread</th><th>notes</th></tr>\n",
    );
    let ns = |v: Option<u64>| v.map_or("-".to_owned(), grouped);
    for m in results {
        let o = &m.median;
        let class = if o.error.is_some() || m.unsteady() {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<tr{class}><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            o.mech.name(),
            size(o.size),
            ns(o.rtt.map(|r| r.median_ns)),
            ns(o.rtt.map(|r| r.p99_ns)),
            ns(o.rtt.map(|r| r.p999_ns)),
            o.throughput
                .map_or("-".to_owned(), |t| grouped(t.msgs_per_s.round() as u64)),
            o.throughput
                .map_or("-".to_owned(), |t| format!("{:.3}", t.gbps)),
            m.worst_spread()
                .map_or("-".to_owned(), |s| format!("{:.0}%", 100.0 * s)),
            escape(&notes(m)),
        );
    }
    h.push_str("</table>\n");
    h
}

/// The durable queue's append rows.
fn append_table(rows: &[AppendRow]) -> String {
    let mut h = String::from(
        "<h2>Durable queue appends</h2>\n<table class=\"append\">\n<tr><th>row</th>\
         <th>producers</th><th>size</th><th>msgs/s</th><th>disk fdatasync/s</th><th>error</th></tr>\n",
    );
    let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| grouped(v.round() as u64));
    for r in rows {
        let _ = writeln!(
            h,
            "<tr><td>{}-{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td></tr>",
            r.mech.name(),
            r.kind,
            r.producers,
            size(r.size),
            num(r.msgs_per_s),
            num(r.fdatasync_per_s),
            escape(r.error.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::aggregate::sample;
    use crate::bench::claims;
    use crate::bench::machine::Machine;
    use crate::bench::mechanism::Mechanism;
    use crate::bench::results::RunSettings;

    #[test]
    fn the_page_refers_to_both_plots_and_nothing_outside() {
        let results = vec![sample(Mechanism::Unix, 64, 10_000, 1e6)];
        let claims = claims::compute(&results, true);
        let machine = Machine {
            cpu_model: Some("Test <CPU>".into()),
            cores: 2,
            kernel: "Linux".into(),
            load_avg_1m: None,
        };
        let settings = RunSettings {
            mechanisms: vec!["unix"],
            sizes: vec![64],
            repeat: 1,
            iters: None,
            duration_s: 0.2,
            max_pp_s: 10.0,
            pinning: "not pinned".into(),
            cpus: None,
        };
        let warnings = vec!["a & b".to_owned()];
        let page = index_html(&Run {
            machine: &machine,
            settings: &settings,
            warnings: &warnings,
            results: &results,
            append: &[],
            claims: &claims,
        });
        assert!(page.contains("src=\"latency.svg\"") && page.contains("src=\"throughput.svg\""));
        assert!(page.contains("Test &lt;CPU&gt;") && page.contains("a &amp; b"));
        assert!(!page.contains("http:") && !page.contains("https:"));
        assert!(page.contains("<td>unix</td>"));
    }
}
