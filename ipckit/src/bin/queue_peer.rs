//! `ipckit-queue-peer`: the other process of the durable-queue tests, killed at random
//! moments by them.
//!
//! ```text
//! ipckit-queue-peer produce DIR PRODUCER EPOCH LOG DURABILITY SEGMENT_SIZE SEED
//! ipckit-queue-peer consume DIR GROUP LOG SEGMENT_SIZE SEED
//! ```
//!
//! `produce` appends message after message (in bursts with short pauses), each carrying
//! `(PRODUCER, EPOCH, i)` and a padding derived from them, and writes `ok i` to LOG after
//! each `send` returns. `consume` reads as GROUP, checks each payload, writes
//! `d SEQ PRODUCER EPOCH i` to LOG after each delivery, acknowledges every few deliveries
//! and writes `a SEQ` after each `ack` returns. Every LOG line is one `write`, so what is in
//! the log happened; only the last line can be cut short, where a SIGKILL stops a write at a
//! page boundary of the file (the tests drop a last line without its newline). Both exit on
//! their own after a minute, and when the test process dies.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ipckit::queue::{Consumer, Durability, Producer, QueueOptions};
use ipckit::Error;

/// The payload of message `i` of `producer` in `epoch` (same as in the tests).
fn payload(producer: u32, epoch: u32, i: u64) -> Vec<u8> {
    let pad = ((i * 7 + u64::from(producer) * 13 + u64::from(epoch)) % 97) as usize;
    let mut v = Vec::with_capacity(16 + pad);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&epoch.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    for k in 0..pad {
        v.push((i as u8) ^ (producer as u8).wrapping_mul(31) ^ (k as u8));
    }
    v
}

/// Decodes and checks a payload: `(producer, epoch, i)` if it is one of ours, intact.
fn decode(p: &[u8]) -> Option<(u32, u32, u64)> {
    if p.len() < 16 {
        return None;
    }
    let producer = u32::from_le_bytes(p[0..4].try_into().ok()?);
    let epoch = u32::from_le_bytes(p[4..8].try_into().ok()?);
    let i = u64::from_le_bytes(p[8..16].try_into().ok()?);
    (payload(producer, epoch, i) == p).then_some((producer, epoch, i))
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn log(file: &mut File, line: String) {
    // One write per line (File is unbuffered).
    if file.write_all(line.as_bytes()).is_err() {
        std::process::exit(5);
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("ipckit-queue-peer: argument {i} ({what}) missing or invalid");
        std::process::exit(64);
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(4);
    });
    let open_log = |path: &str| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| {
                eprintln!("ipckit-queue-peer: cannot open {path}: {e}");
                std::process::exit(64);
            })
    };
    match args.first().map(String::as_str) {
        Some("produce") => {
            let dir: String = arg(&args, 1, "DIR");
            let producer: u32 = arg(&args, 2, "PRODUCER");
            let epoch: u32 = arg(&args, 3, "EPOCH");
            let mut out = open_log(&arg::<String>(&args, 4, "LOG"));
            let durability: String = arg(&args, 5, "DURABILITY");
            let durability: Durability = durability.parse().unwrap_or(Durability::Os);
            let opts = QueueOptions::new().durability(durability).segment_size(arg(
                &args,
                6,
                "SEGMENT_SIZE",
            ));
            let mut rng = Rng(arg::<u64>(&args, 7, "SEED") | 1);
            match produce(Path::new(&dir), &opts, producer, epoch, &mut out, &mut rng) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log(&mut out, format!("err {e}\n"));
                    ExitCode::from(2)
                }
            }
        }
        Some("consume") => {
            let dir: String = arg(&args, 1, "DIR");
            let group: String = arg(&args, 2, "GROUP");
            let mut out = open_log(&arg::<String>(&args, 3, "LOG"));
            let opts = QueueOptions::new()
                .durability(Durability::Os)
                .segment_size(arg(&args, 4, "SEGMENT_SIZE"));
            let mut rng = Rng(arg::<u64>(&args, 5, "SEED") | 1);
            match consume(Path::new(&dir), &group, &opts, &mut out, &mut rng) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    log(&mut out, format!("err {e}\n"));
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("usage: ipckit-queue-peer produce|consume ...");
            ExitCode::from(64)
        }
    }
}

fn produce(
    dir: &Path,
    opts: &QueueOptions,
    producer: u32,
    epoch: u32,
    out: &mut File,
    rng: &mut Rng,
) -> ipckit::Result<()> {
    let mut p = Producer::open(dir, opts)?;
    for i in 0u64.. {
        p.send(&payload(producer, epoch, i))?;
        log(out, format!("ok {i}\n"));
        if rng.below(8) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(400)));
        }
    }
    Ok(())
}

fn consume(
    dir: &Path,
    group: &str,
    opts: &QueueOptions,
    out: &mut File,
    rng: &mut Rng,
) -> ipckit::Result<u8> {
    let mut c = Consumer::open(dir, group, opts)?;
    log(out, format!("open {}\n", c.committed()));
    let mut buf = Vec::new();
    let mut until_ack = 1 + rng.below(5);
    loop {
        match c.recv_timeout(&mut buf, Duration::from_millis(100)) {
            Ok(seq) => {
                let Some((p, e, i)) = decode(&buf) else {
                    log(out, format!("bad {seq} {} bytes\n", buf.len()));
                    return Ok(3);
                };
                log(out, format!("d {seq} {p} {e} {i}\n"));
                until_ack -= 1;
                if until_ack == 0 {
                    c.ack(seq)?;
                    log(out, format!("a {seq}\n"));
                    until_ack = 1 + rng.below(5);
                }
            }
            Err(Error::Timeout { .. }) => {}
            Err(e) => return Err(e),
        }
    }
}
