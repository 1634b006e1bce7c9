//! `results.json` of `--report`: every repeat's figures, the medians, the machine, the
//! settings, the warnings and the claims of one run.

use serde::Serialize;

use super::aggregate::Measured;
use super::append::AppendRow;
use super::claims::Claim;
use super::machine::Machine;
use super::report::{JsonAppendRow, JsonRow, JsonSummaryRow};

/// The value of the `schema` key; bump it when a key changes meaning or goes.
pub const SCHEMA: &str = "ipckit-bench-results/1";

/// How the run was made.
#[derive(Debug, Serialize)]
pub struct RunSettings {
    pub mechanisms: Vec<&'static str>,
    pub sizes: Vec<usize>,
    pub repeat: u32,
    /// Round trips asked for (null: the default by size).
    pub iters: Option<u64>,
    pub duration_s: f64,
    pub max_pp_s: f64,
    /// How the processes were pinned, in words.
    pub pinning: String,
    /// CPUs of the parent and of the peer (null when not pinned).
    pub cpus: Option<(usize, usize)>,
}

/// One repeat of one mechanism and size.
#[derive(Serialize)]
struct RunRow<'a> {
    /// 1 for the first round.
    repeat: usize,
    #[serde(flatten)]
    figures: JsonRow<'a>,
}

/// The medians of one mechanism and size, and every repeat behind them.
#[derive(Serialize)]
struct ResultRow<'a> {
    #[serde(flatten)]
    summary: JsonSummaryRow<'a>,
    runs: Vec<RunRow<'a>>,
}

/// The whole file.
#[derive(Serialize)]
struct ResultsFile<'a> {
    schema: &'static str,
    ipckit_version: &'static str,
    created_unix_s: u64,
    machine: &'a Machine,
    settings: &'a RunSettings,
    warnings: &'a [String],
    results: Vec<ResultRow<'a>>,
    append: Vec<JsonAppendRow<'a>>,
    claims: &'a [Claim],
}

/// Everything a run found, for the report.
pub struct Run<'a> {
    pub machine: &'a Machine,
    pub settings: &'a RunSettings,
    pub warnings: &'a [String],
    pub results: &'a [Measured],
    pub append: &'a [AppendRow],
    pub claims: &'a [Claim],
}

/// The text of results.json.
pub fn to_json(run: &Run<'_>) -> serde_json::Result<String> {
    let file = ResultsFile {
        schema: SCHEMA,
        ipckit_version: env!("CARGO_PKG_VERSION"),
        created_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: run.machine,
        settings: run.settings,
        warnings: run.warnings,
        results: run
            .results
            .iter()
            .map(|m| ResultRow {
                summary: JsonSummaryRow::of(m),
                runs: m
                    .runs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| RunRow {
                        repeat: i + 1,
                        figures: JsonRow::of(o),
                    })
                    .collect(),
            })
            .collect(),
        append: run.append.iter().map(JsonAppendRow::of).collect(),
        claims: run.claims,
    };
    serde_json::to_string_pretty(&file)
}
