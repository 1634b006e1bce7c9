//! The durable queue's append throughput with 1 and 4 concurrent producer processes, beside
//! the `fdatasync` rate of the disk it is on (so that the `fsync` figures can be judged:
//! one producer in `fsync` mode cannot beat the disk's sync rate, and group commit is what
//! lets several producers go beyond it).
//!
//! Each producer is this executable's hidden `queue-appender` command: it opens the queue,
//! waits for a common start time, sends messages back to back for the duration, and prints
//! how many it sent and in how long. The figure is the sum of the producers' rates.
//!
//! After the one-producer run, a consumer process (`queue-appender --read`) drains what it
//! appended, acknowledging every message: the read row.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ipckit::queue::{Consumer, Durability, Producer, QueueOptions};

use super::mechanism::Mechanism;
use super::reap;
use super::wire;
use crate::cli::AppenderArgs;

/// How many producers each measurement uses.
pub const PRODUCER_COUNTS: [usize; 2] = [1, 4];

/// Time the producers get to start and open the queue before the common start.
const START_DELAY: Duration = Duration::from_millis(600);

/// Time beyond the start and the duration after which producers are killed.
const SLACK: Duration = Duration::from_secs(30);

/// One append (or read) measurement.
#[derive(Debug)]
pub struct AppendRow {
    pub mech: Mechanism,
    /// `append`, or `read` (draining what the producers appended).
    pub kind: &'static str,
    pub producers: usize,
    pub size: usize,
    pub msgs_per_s: Option<f64>,
    /// `fdatasync`s per second of a lone writer on the same file system, measured just before.
    pub fdatasync_per_s: Option<f64>,
    pub error: Option<String>,
}

/// `fdatasync` rate of the file system holding `dir`: 64-byte appends, each synced, for
/// `duration` (at most a second).
pub fn fdatasync_rate(dir: &Path, duration: Duration) -> Result<f64, String> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fdatasync-probe");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("fdatasync probe: {e}"))?;
    let block = [0x5Au8; 64];
    let limit = duration.min(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut n = 0u64;
    let result = loop {
        if let Err(e) = file
            .write_all_at(&block, n * 64)
            .and_then(|()| file.sync_data())
        {
            break Err(format!("fdatasync probe: {e}"));
        }
        n += 1;
        if t0.elapsed() >= limit {
            break Ok(n as f64 / t0.elapsed().as_secs_f64());
        }
    };
    let _ = std::fs::remove_file(&path);
    result
}

/// Measures `producers` concurrent appenders to one fresh queue; with one producer, also a
/// consumer draining it.
pub fn measure(
    mech: Mechanism,
    producers: usize,
    size: usize,
    duration: Duration,
    fdatasync_per_s: Option<f64>,
    cpus: Option<(usize, usize)>,
) -> Vec<AppendRow> {
    let row = |kind, result: Result<f64, String>| AppendRow {
        mech,
        kind,
        producers,
        size,
        msgs_per_s: result.as_ref().ok().copied(),
        fdatasync_per_s,
        error: result.err(),
    };
    let scratch = match tempfile::Builder::new()
        .prefix("ipckit-bench-append-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            return vec![row(
                "append",
                Err(format!("setup: cannot create a scratch directory: {e}")),
            )]
        }
    };
    let appended = run_processes(mech, producers, size, duration, scratch.path(), false, cpus);
    let ok = appended.is_ok();
    let mut rows = vec![row("append", appended)];
    if producers == 1 && ok {
        let read = run_processes(mech, 1, size, duration, scratch.path(), true, cpus);
        rows.push(row("read", read));
    }
    rows
}

/// Runs `count` appenders (or readers) on the queue in `scratch`, returns their summed rate.
/// With the bench's two CPUs, they may run on either: a child inherits the pinned parent's one
/// CPU unless told otherwise.
fn run_processes(
    mech: Mechanism,
    count: usize,
    size: usize,
    duration: Duration,
    scratch: &Path,
    read: bool,
    cpus: Option<(usize, usize)>,
) -> Result<f64, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("setup: cannot find this executable: {e}"))?;
    let start = SystemTime::now() + START_DELAY;
    let start_ms = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| format!("setup: clock before 1970: {e}"))?
        .as_millis() as u64;
    let mut children = Vec::with_capacity(count);
    for _ in 0..count {
        let mut cmd = Command::new(&exe);
        cmd.arg("queue-appender");
        if read {
            cmd.arg("--read");
        }
        if let Some(both) = cpus {
            cmd.args(super::peer::both_cpus_arg(both));
        }
        let child = cmd
            .arg("--dir")
            .arg(scratch.join("q"))
            .args(["--durability", mech.queue_durability().unwrap_or("fsync")])
            .args(["--size", &size.to_string()])
            .args(["--start-ms", &start_ms.to_string()])
            .args(["--duration", &format!("{:.3}", duration.as_secs_f64())])
            .args(["--parent-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("setup: cannot start a producer: {e}"))?;
        children.push(Reaped(child));
    }
    let deadline = Instant::now() + START_DELAY + duration + SLACK;
    let mut total = 0.0;
    let mut errors = Vec::new();
    for child in &mut children {
        match child.finish(deadline) {
            Ok((count, elapsed)) if elapsed > 0.0 => total += count as f64 / elapsed,
            Ok(_) => errors.push("a producer reported no time".to_owned()),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(total)
}

/// A producer process, killed and reaped on every path.
struct Reaped(Child);

impl Reaped {
    /// Waits (polling) until the process exits or `deadline`, then parses its report.
    fn finish(&mut self, deadline: Instant) -> Result<(u64, f64), String> {
        // Reaped only once it has exited, and gently (`reap`).
        while !reap::has_exited(&self.0) {
            if Instant::now() >= deadline {
                let _ = self.0.kill();
                let _ = reap::reap(&mut self.0);
                return Err("a producer was still running at its deadline".to_owned());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = reap::reap(&mut self.0).map_err(|e| format!("waiting for a producer: {e}"))?;
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if !status.success() {
            return Err(format!(
                "a producer failed ({status}): {}",
                err.trim().replace('\n', "; ")
            ));
        }
        let mut fields = out.split_whitespace();
        match (
            fields.next().and_then(|c| c.parse::<u64>().ok()),
            fields.next().and_then(|t| t.parse::<u64>().ok()),
        ) {
            (Some(count), Some(ns)) => Ok((count, ns as f64 / 1e9)),
            _ => Err(format!("a producer reported {out:?}")),
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !reap::has_exited(&self.0) {
            let _ = self.0.kill();
        }
        let _ = reap::reap(&mut self.0);
    }
}

/// `ipckit queue-appender`: one producer of the measurement. The output is small (one line)
/// and written at the end, so the parent reads it after the exit without deadlock.
pub fn run_appender(args: AppenderArgs) -> Result<(), String> {
    super::peer::follow_parent(args.parent_pid)?;
    super::peer::exit_at(START_DELAY + args.duration + SLACK);
    super::peer::pin_to(&args.cpu)?;
    let durability: Durability = args
        .durability
        .parse()
        .map_err(|e| format!("--durability: {e}"))?;
    let size = args.size.max(wire::MIN_SIZE);
    let opts = QueueOptions::new()
        .durability(durability)
        .max_message_size(size);
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(args.start_ms);
    if args.read {
        return drain(&args, &opts, start);
    }
    let mut producer = Producer::open(&args.dir, &opts).map_err(|e| format!("open: {e}"))?;
    let mut msg = wire::pattern(size);
    if let Ok(wait) = start.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    // Read the clock every message when each takes a sync, every 64 otherwise.
    let mask = if durability == Durability::Fsync {
        0
    } else {
        63
    };
    let t0 = Instant::now();
    let mut n = 0u64;
    loop {
        n += 1;
        wire::stamp(&mut msg, n);
        producer.send(&msg).map_err(|e| format!("send {n}: {e}"))?;
        if n & mask == 0 && t0.elapsed() >= args.duration {
            break;
        }
    }
    println!("{n} {}", t0.elapsed().as_nanos());
    Ok(())
}

/// `queue-appender --read`: drains the queue as a consumer group of its own, acknowledging
/// every message (as the generic `recv` does), and reports like an appender.
fn drain(args: &AppenderArgs, opts: &QueueOptions, start: SystemTime) -> Result<(), String> {
    let mut consumer =
        Consumer::open(&args.dir, "bench-read", opts).map_err(|e| format!("open: {e}"))?;
    let last = consumer.last_seq();
    let mut buf = Vec::with_capacity(args.size);
    if let Ok(wait) = start.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while consumer.position() <= last {
        let seq = consumer
            .recv_timeout(&mut buf, Duration::from_secs(10))
            .map_err(|e| format!("recv {}: {e}", n + 1))?;
        consumer.ack(seq).map_err(|e| format!("ack {seq}: {e}"))?;
        n += 1;
    }
    println!("{n} {}", t0.elapsed().as_nanos());
    Ok(())
}
