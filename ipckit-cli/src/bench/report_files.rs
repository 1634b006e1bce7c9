//! `--report DIR`: results.json, latency.svg, throughput.svg and index.html.

use std::path::Path;

use super::html::{self, LATENCY_SVG, RESULTS_JSON, THROUGHPUT_SVG};
use super::plot;
use super::results::{self, Run};
use crate::error::CliError;

/// Writes the four files into `dir` (created if missing).
pub fn write(dir: &Path, run: &Run<'_>) -> Result<(), CliError> {
    let fail = |path: &Path, why: String| CliError::Report {
        path: path.to_owned(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
    let files = [
        (
            RESULTS_JSON,
            results::to_json(run).map_err(|e| e.to_string()),
        ),
        (LATENCY_SVG, plot::latency_svg(run.results)),
        (THROUGHPUT_SVG, plot::throughput_svg(run.results)),
        ("index.html", Ok(html::index_html(run))),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        let text = text.map_err(|why| fail(&path, why))?;
        std::fs::write(&path, text).map_err(|e| fail(&path, e.to_string()))?;
    }
    Ok(())
}
