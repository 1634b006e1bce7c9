//! `ipckit bench`: round-trip latency and one-way throughput of every mechanism, between two
//! pinned processes, with the methodology of the C baseline in `ipc-baseline`.
//!
//! Everything goes through the library's public API (`send`, `recv_into` and their timed
//! forms), buffers are reused, and every blocking call is bounded by a timeout or by the
//! watch kept on the peer process ([`peer_process`]).

mod aggregate;
mod append;
mod bus;
mod case;
mod channel;
mod claims;
mod compare;
mod helper_thread;
mod html;
mod line;
mod machine;
mod mechanism;
mod patterns;
mod peer;
mod peer_process;
mod pingpong;
mod plot;
mod progress;
mod reap;
mod report;
mod report_files;
mod results;
mod setup;
mod stream;
mod units;
pub mod wire;

use crate::cli::BenchArgs;
use crate::error::CliError;

use aggregate::{Measured, UNSTEADY_SPREAD};
use machine::Machine;
use progress::Progress;

pub use append::run_appender;
pub use mechanism::Mechanism;
pub use peer::run as run_peer;

/// Runs `ipckit bench`.
pub fn run(args: BenchArgs) -> Result<(), CliError> {
    if let [old, new] = &args.compare[..] {
        return compare::run(old, new, args.json, &mut std::io::stdout().lock());
    }
    let requested = if args.mechs.is_empty() {
        &Mechanism::ALL[..]
    } else {
        &args.mechs[..]
    };
    let mut mechs: Vec<Mechanism> = Vec::new();
    for &m in requested {
        if !mechs.contains(&m) {
            mechs.push(m);
        }
    }
    let machine = Machine::describe();
    let mut warnings: Vec<String> = machine.load_warning().into_iter().collect();
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
    printer.note(&machine.summary()).map_err(write_err)?;
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
    printer
        .note(&format!(
            "{} round(s) over every mechanism and size; figures are the medians, spread is \
             (max - min) / median over the rounds",
            args.repeat
        ))
        .map_err(write_err)?;
    let settings = case::Settings {
        iters: args.iters,
        duration: args.duration,
        max_pp: args.max_pp_seconds,
        cpus,
    };
    let cases: Vec<(Mechanism, usize)> = mechs
        .iter()
        .flat_map(|&m| args.sizes.iter().map(move |&s| (m, s)))
        .collect();
    let queues: Vec<(Mechanism, usize)> = cases
        .iter()
        .copied()
        .filter(|(m, _)| m.queue_durability().is_some())
        .collect();
    let repeat = args.repeat as usize;
    let progress = Progress::new((cases.len() * repeat + queues.len()) as u64);
    for w in &warnings {
        progress.warn(w);
    }
    let mut runs: Vec<Vec<case::Outcome>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 1..=repeat {
        for (runs, &(mech, size)) in runs.iter_mut().zip(&cases) {
            progress.doing(format!(
                "round {round}/{repeat}: {} {}",
                mech.name(),
                units::size(size)
            ));
            runs.push(case::run(mech, size, &settings));
            progress.step();
        }
    }
    let mut append = Vec::new();
    for &(mech, size) in &queues {
        progress.doing(format!("{} appends {}", mech.name(), units::size(size)));
        append.extend(append_rows(mech, size, args.duration, cpus));
        progress.step();
    }
    let results: Vec<Measured> = runs.into_iter().map(Measured::of).collect();
    let unsteady: Vec<String> = results
        .iter()
        .filter(|m| m.unsteady())
        .map(|m| {
            let pct = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.0}%", 100.0 * s));
            format!(
                "{} at {}: the repeats differ by over {:.0}% (round trip {}, rate {}); \
                 re-run, or raise --repeat or --duration",
                m.mech().name(),
                units::size(m.size()),
                UNSTEADY_SPREAD * 100.0,
                pct(m.rtt_spread),
                pct(m.msgs_spread)
            )
        })
        .collect();
    warnings.extend(unsteady.iter().cloned());
    let claims = claims::compute(&results, cpus.is_some());
    let failed = results.iter().map(Measured::failures).sum::<usize>()
        + append.iter().filter(|r| r.error.is_some()).count();
    let total = cases.len() * repeat + append.len();
    progress.finish(&format!(
        "{total} measurements ({} mechanisms x {} sizes x {repeat} rounds{}), {failed} failed, \
         {} warning(s)",
        mechs.len(),
        args.sizes.len(),
        if append.is_empty() {
            String::new()
        } else {
            format!(", and {} queue append rows", append.len())
        },
        warnings.len()
    ));
    // Each mechanism's rows, then its queue append rows, as before rounds existed.
    for &mech in &mechs {
        for m in results.iter().filter(|m| m.mech() == mech) {
            printer.print(m).map_err(write_err)?;
        }
        for row in append.iter().filter(|r| r.mech == mech) {
            printer.print_append(row).map_err(write_err)?;
        }
    }
    printer.print_claims(&claims).map_err(write_err)?;
    for w in &unsteady {
        eprintln!("ipckit bench: warning: {w}");
    }
    if let Some(dir) = &args.report {
        let run_settings = results::RunSettings {
            mechanisms: mechs.iter().map(|m| m.name()).collect(),
            sizes: args.sizes.clone(),
            repeat: args.repeat,
            iters: args.iters,
            duration_s: args.duration.as_secs_f64(),
            max_pp_s: args.max_pp_seconds.as_secs_f64(),
            pinning: pin_note,
            cpus,
        };
        report_files::write(
            dir,
            &results::Run {
                machine: &machine,
                settings: &run_settings,
                warnings: &warnings,
                results: &results,
                append: &append,
                claims: &claims,
            },
        )?;
        eprintln!("ipckit bench: report written to {}", dir.display());
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
    cpus: Option<(usize, usize)>,
) -> Vec<append::AppendRow> {
    append::PRODUCER_COUNTS
        .iter()
        .flat_map(|&producers| {
            let rate = tempfile::Builder::new()
                .prefix("ipckit-bench-sync-")
                .tempdir()
                .map_err(|e| e.to_string())
                .and_then(|d| append::fdatasync_rate(d.path(), duration));
            let mut rows = append::measure(
                mech,
                producers,
                size,
                duration,
                rate.as_ref().ok().copied(),
                cpus,
            );
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
