//! `ipckit bench`: round-trip latency and one-way throughput of every mechanism, between two
//! pinned processes, with the methodology of the C baseline in `ipc-baseline`.
//!
//! Everything goes through the library's public API (`send`, `recv_into` and their timed
//! forms), buffers are reused, and every blocking call is bounded by a timeout or by the
//! watch kept on the peer process ([`peer_process`]).

mod append;
mod case;
mod channel;
mod mechanism;
mod peer;
mod peer_process;
mod pingpong;
mod report;
mod setup;
mod stream;
pub mod wire;

use crate::cli::BenchArgs;
use crate::error::CliError;

pub use append::run_appender;
pub use mechanism::Mechanism;
pub use peer::run as run_peer;

/// Runs `ipckit bench`.
pub fn run(args: BenchArgs) -> Result<(), CliError> {
    let mechs = if args.mechs.is_empty() {
        Mechanism::ALL.to_vec()
    } else {
        args.mechs
    };
    let mut printer = report::Printer::new(std::io::stdout().lock(), args.json);
    let write_err = |source| CliError::Io {
        doing: "cannot write to standard output",
        source,
    };
    let (cpus, pin_note) = if args.no_pin {
        (None, "not pinned (--no-pin)".to_owned())
    } else {
        pin_parent()
    };
    printer.note(&pin_note).map_err(write_err)?;
    let iters = args
        .iters
        .map_or("100000 (2000 above 64 KiB)".to_owned(), |n| n.to_string());
    printer
        .note(&format!(
            "{iters} timed round trips after a warm-up of a tenth (at least 100), at most {} s; \
             streaming for {} s; sizes in bytes, GB/s is decimal",
            args.max_pp_seconds.as_secs_f64(),
            args.duration.as_secs_f64()
        ))
        .map_err(write_err)?;
    let settings = case::Settings {
        iters: args.iters,
        duration: args.duration,
        max_pp: args.max_pp_seconds,
        cpus,
    };
    let (mut failed, mut total) = (0, 0);
    for &mech in &mechs {
        for &size in &args.sizes {
            let outcome = case::run(mech, size, &settings);
            total += 1;
            failed += usize::from(outcome.error.is_some());
            printer.print(&outcome).map_err(write_err)?;
        }
        if mech.queue_durability().is_some() {
            for &size in &args.sizes {
                for row in append_rows(mech, size, args.duration) {
                    total += 1;
                    failed += usize::from(row.error.is_some());
                    printer.print_append(&row).map_err(write_err)?;
                }
            }
        }
    }
    if failed > 0 {
        return Err(CliError::BenchFailed { failed, total });
    }
    Ok(())
}

/// The queue's append (and read) throughput with 1 and 4 producer processes, each beside the disk's
/// `fdatasync` rate measured just before it.
fn append_rows(
    mech: Mechanism,
    size: usize,
    duration: std::time::Duration,
) -> Vec<append::AppendRow> {
    append::PRODUCER_COUNTS
        .iter()
        .flat_map(|&producers| {
            let rate = tempfile::Builder::new()
                .prefix("ipckit-bench-sync-")
                .tempdir()
                .map_err(|e| e.to_string())
                .and_then(|d| append::fdatasync_rate(d.path(), duration));
            let mut rows =
                append::measure(mech, producers, size, duration, rate.as_ref().ok().copied());
            if let (Err(e), Some(first)) = (rate, rows.first_mut()) {
                first.error.get_or_insert(e);
            }
            rows
        })
        .collect()
}

/// Pins this thread to the first allowed CPU and picks the second for the peer. With fewer
/// than two CPUs, or if pinning fails, runs unpinned and says why.
fn pin_parent() -> (Option<(usize, usize)>, String) {
    let cpus = match ipckit::sys::allowed_cpus() {
        Ok(cpus) => cpus,
        Err(e) => {
            return (
                None,
                format!("not pinned: cannot read the allowed CPUs: {e}"),
            )
        }
    };
    let [a, b, ..] = cpus[..] else {
        return (None, format!("not pinned: only CPUs {cpus:?} are allowed"));
    };
    match ipckit::sys::pin_current_thread(a) {
        Ok(()) => (
            Some((a, b)),
            format!("parent pinned to CPU {a}, peer to CPU {b}"),
        ),
        Err(e) => (None, format!("not pinned: cannot pin to CPU {a}: {e}")),
    }
}
