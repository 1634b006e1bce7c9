//! `ipckit queue stat DIR`: what a durable queue holds.

use std::io::Write;

use serde::Serialize;

use crate::cli::{QueueCommand, QueueStatArgs};
use crate::error::{CliError, IpcContext};

/// Runs `ipckit queue ...`.
pub fn run(cmd: QueueCommand) -> Result<(), CliError> {
    match cmd {
        QueueCommand::Stat(args) => stat(args),
    }
}

#[derive(Serialize)]
struct JsonSegment {
    file: String,
    first_seq: u64,
    records: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct JsonGroup<'a> {
    name: &'a str,
    committed: u64,
    depth: u64,
}

#[derive(Serialize)]
struct JsonStat<'a> {
    dir: String,
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
    segments: Vec<JsonSegment>,
    groups: Vec<JsonGroup<'a>>,
}

fn stat(args: QueueStatArgs) -> Result<(), CliError> {
    let st = ipckit::queue::stat(&args.dir)
        .doing(|| format!("cannot read the queue in {}", args.dir.display()))?;
    let bytes: u64 = st.segments.iter().map(|s| s.bytes).sum();
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        let json = JsonStat {
            dir: st.dir.display().to_string(),
            first_seq: st.first_seq,
            last_seq: st.last_seq,
            bytes,
            segments: st
                .segments
                .iter()
                .map(|s| JsonSegment {
                    file: s.file.display().to_string(),
                    first_seq: s.first_seq,
                    records: s.records,
                    bytes: s.bytes,
                })
                .collect(),
            groups: st
                .groups
                .iter()
                .map(|g| JsonGroup {
                    name: &g.name,
                    committed: g.committed,
                    depth: g.depth,
                })
                .collect(),
        };
        serde_json::to_string(&json).map_err(|e| CliError::Io {
            doing: "cannot encode JSON",
            source: std::io::Error::other(e),
        })? + "\n"
    } else {
        render(&st, bytes)
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            doing: "cannot write to standard output",
            source,
        })
}

/// The text form.
fn render(st: &ipckit::queue::QueueStat, bytes: u64) -> String {
    let mut s = format!("queue {}\n", st.dir.display());
    let kept = (st.last_seq + 1).saturating_sub(st.first_seq);
    s += &format!(
        "last sequence number: {}\nmessages kept: {kept} (from {} to {}), {bytes} bytes in {} segments\n",
        st.last_seq,
        st.first_seq,
        st.last_seq,
        st.segments.len()
    );
    s += "segments:\n";
    s += &format!(
        "  {:<26} {:>20} {:>10} {:>12}\n",
        "file", "first seq", "records", "bytes"
    );
    for seg in &st.segments {
        let name = seg
            .file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        s += &format!(
            "  {name:<26} {:>20} {:>10} {:>12}\n",
            seg.first_seq, seg.records, seg.bytes
        );
    }
    if st.groups.is_empty() {
        s += "consumer groups: none (segments are kept until a group consumes them)\n";
    } else {
        s += "consumer groups:\n";
        s += &format!("  {:<26} {:>20} {:>10}\n", "group", "committed", "depth");
        for g in &st.groups {
            s += &format!("  {:<26} {:>20} {:>10}\n", g.name, g.committed, g.depth);
        }
    }
    s
}
