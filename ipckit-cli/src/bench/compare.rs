//! `ipckit bench --compare OLD NEW`: NEW/OLD ratios of the round-trip median and of the
//! streaming rate per mechanism and size, with regressions over 10% marked.
//!
//! Either file may be the results.json of `--report` or the JSON lines of `--json`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::units::{grouped, size};
use crate::error::CliError;

/// A change worse than this (slower round trip, lower rate) is a regression.
pub const REGRESSION: f64 = 0.10;

/// The figures compared, for one row of a run.
#[derive(Clone, Debug, PartialEq)]
struct Figures {
    rtt_ns: Option<f64>,
    msgs_per_s: Option<f64>,
}

/// What identifies a row: mechanism, size, and the producers of a queue append row.
type Key = (String, u64, Option<u64>);

/// One compared row, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Ratio<'a> {
    mech: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    producers: Option<u64>,
    rtt_ratio: Option<f64>,
    msgs_ratio: Option<f64>,
    regression: bool,
}

/// Reads the rows of a results.json or of `--json` lines.
fn load(path: &Path) -> Result<Vec<(Key, Figures)>, CliError> {
    let fail = |why: String| CliError::Compare {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let rows: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut file)) => match file.remove("results") {
            Some(Value::Array(mut rows)) => {
                if let Some(Value::Array(append)) = file.remove("append") {
                    rows.extend(append);
                }
                rows
            }
            // One JSON line on its own.
            _ if file.contains_key("mech") => vec![Value::Object(file)],
            _ => {
                return Err(fail(
                    "a JSON object without a \"results\" array: not a results.json of \
                     `ipckit bench --report`"
                        .to_owned(),
                ))
            }
        },
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with('{'))
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| fail(format!("line {}: {e}", i + 1))))
            .collect::<Result<_, _>>()?,
    };
    let parsed: Vec<(Key, Figures)> = rows
        .iter()
        .filter_map(|row| {
            let mech = row.get("mech")?.as_str()?.to_owned();
            let size = row.get("size")?.as_u64()?;
            let producers = row.get("producers").and_then(Value::as_u64);
            let figures = Figures {
                rtt_ns: row.get("rtt_ns_median").and_then(Value::as_f64),
                msgs_per_s: row.get("msgs_per_s").and_then(Value::as_f64),
            };
            Some(((mech, size, producers), figures))
        })
        .collect();
    if parsed.is_empty() {
        return Err(fail(
            "no rows with \"mech\" and \"size\": not the output of `ipckit bench --json` or \
             --report"
                .to_owned(),
        ));
    }
    Ok(parsed)
}

/// new / old, when both are positive.
fn ratio(old: Option<f64>, new: Option<f64>) -> Option<f64> {
    match (old, new) {
        (Some(o), Some(n)) if o > 0.0 && n > 0.0 => Some(n / o),
        _ => None,
    }
}

/// Whether the change is a regression: a round trip over 10% slower or a rate over 10%
/// lower.
fn is_regression(rtt_ratio: Option<f64>, msgs_ratio: Option<f64>) -> bool {
    rtt_ratio.is_some_and(|r| r > 1.0 + REGRESSION)
        || msgs_ratio.is_some_and(|r| r < 1.0 - REGRESSION)
}

/// Runs `--compare OLD NEW`, printing to `out`.
pub fn run(old: &Path, new: &Path, json: bool, out: &mut impl Write) -> Result<(), CliError> {
    let before = load(old)?;
    let after = load(new)?;
    let write_err = |source| CliError::Io {
        doing: "cannot write to standard output",
        source,
    };
    if !json {
        writeln!(out, "# NEW {} / OLD {}", new.display(), old.display()).map_err(write_err)?;
        writeln!(
            out,
            "# rtt: round-trip median (a ratio above 1 is slower); msgs/s: streaming rate (a \
             ratio below 1 is slower); REGRESSION: worse by more than {:.0}%",
            REGRESSION * 100.0
        )
        .map_err(write_err)?;
        writeln!(
            out,
            "{:<22} {:>8} {:>12} {:>12} {:>7} {:>13} {:>13} {:>7}  verdict",
            "mechanism",
            "size",
            "old rtt ns",
            "new rtt ns",
            "ratio",
            "old msgs/s",
            "new msgs/s",
            "ratio"
        )
        .map_err(write_err)?;
    }
    let (mut compared, mut regressions) = (0, 0);
    let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| grouped(v.round() as u64));
    let rat = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for (key, new_figs) in &after {
        let Some((_, old_figs)) = before.iter().find(|(k, _)| k == key) else {
            if !json {
                writeln!(out, "{:<22} {:>8}  only in NEW", label(key), size_of(key))
                    .map_err(write_err)?;
            }
            continue;
        };
        let rtt_ratio = ratio(old_figs.rtt_ns, new_figs.rtt_ns);
        let msgs_ratio = ratio(old_figs.msgs_per_s, new_figs.msgs_per_s);
        let regression = is_regression(rtt_ratio, msgs_ratio);
        compared += 1;
        regressions += usize::from(regression);
        if json {
            let line = serde_json::to_string(&Ratio {
                mech: &key.0,
                size: key.1,
                producers: key.2,
                rtt_ratio,
                msgs_ratio,
                regression,
            })
            .map_err(|e| write_err(e.into()))?;
            writeln!(out, "{line}").map_err(write_err)?;
            continue;
        }
        let verdict = if regression {
            let mut why = Vec::new();
            if let Some(r) = rtt_ratio.filter(|r| *r > 1.0 + REGRESSION) {
                why.push(format!("rtt +{:.0}%", (r - 1.0) * 100.0));
            }
            if let Some(r) = msgs_ratio.filter(|r| *r < 1.0 - REGRESSION) {
                why.push(format!("msgs/s -{:.0}%", (1.0 - r) * 100.0));
            }
            format!("REGRESSION ({})", why.join(", "))
        } else if rtt_ratio.is_none() && msgs_ratio.is_none() {
            "no figures to compare".to_owned()
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:<22} {:>8} {:>12} {:>12} {:>7} {:>13} {:>13} {:>7}  {verdict}",
            label(key),
            size_of(key),
            num(old_figs.rtt_ns),
            num(new_figs.rtt_ns),
            rat(rtt_ratio),
            num(old_figs.msgs_per_s),
            num(new_figs.msgs_per_s),
            rat(msgs_ratio),
        )
        .map_err(write_err)?;
    }
    if !json {
        for (key, _) in before
            .iter()
            .filter(|(k, _)| !after.iter().any(|(a, _)| a == k))
        {
            writeln!(out, "{:<22} {:>8}  only in OLD", label(key), size_of(key))
                .map_err(write_err)?;
        }
        writeln!(
            out,
            "{regressions} regression(s) over {:.0}% in {compared} compared row(s)",
            REGRESSION * 100.0
        )
        .map_err(write_err)?;
    }
    out.flush().map_err(write_err)
}

/// The mechanism, with the producers of an append row.
fn label(key: &Key) -> String {
    match key.2 {
        Some(p) => format!("{} ({p}p)", key.0),
        None => key.0.clone(),
    }
}

fn size_of(key: &Key) -> String {
    usize::try_from(key.1).map_or(key.1.to_string(), size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn ratios_and_regressions() {
        assert!(is_regression(Some(1.11), None));
        assert!(!is_regression(Some(1.10), Some(0.95)));
        assert!(is_regression(Some(0.5), Some(0.89)));
        assert_eq!(ratio(Some(2.0), Some(3.0)), Some(1.5));
        assert_eq!(ratio(None, Some(3.0)), None);
        assert_eq!(ratio(Some(0.0), Some(3.0)), None);
    }

    #[test]
    fn reads_json_lines_and_results_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = write(
            dir.path(),
            "old.jsonl",
            "{\"mech\":\"unix\",\"size\":64,\"rtt_ns_median\":1000,\"msgs_per_s\":1000000.0}\n\
             {\"mech\":\"pipe\",\"size\":64,\"rtt_ns_median\":1000,\"msgs_per_s\":1000000.0}\n",
        );
        let new = write(
            dir.path(),
            "results.json",
            r#"{"schema":"x","results":[
                {"mech":"unix","size":64,"rtt_ns_median":1500,"msgs_per_s":1000000.0},
                {"mech":"pipe","size":64,"rtt_ns_median":1000,"msgs_per_s":990000.0}],
               "append":[{"mech":"queue-os-append","producers":1,"size":64,"msgs_per_s":5.0}]}"#,
        );
        let mut out = Vec::new();
        run(&old, &new, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let unix = text.lines().find(|l| l.starts_with("unix ")).unwrap();
        assert!(
            unix.contains("1.50") && unix.contains("REGRESSION (rtt +50%)"),
            "{text}"
        );
        let pipe = text.lines().find(|l| l.starts_with("pipe ")).unwrap();
        assert!(!pipe.contains("REGRESSION"), "{text}");
        assert!(text.contains("queue-os-append (1p)") && text.contains("only in NEW"));
        assert!(
            text.contains("1 regression(s) over 10% in 2 compared row(s)"),
            "{text}"
        );

        let mut out = Vec::new();
        run(&old, &new, true, &mut out).unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["regression"], true);

        let bad = write(dir.path(), "bad.json", "{\"x\": 1}");
        let err = run(&bad, &new, false, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("results"), "{err}");
        let missing = dir.path().join("missing.json");
        assert!(run(&missing, &new, false, &mut Vec::new()).is_err());
    }
}
