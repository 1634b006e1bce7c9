//! `ipckit bus pub|sub|req|ls`: the local publish/subscribe bus from the shell.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use ipckit::bus::Bus;

use crate::cli::{BusCommand, BusLsArgs, BusPubArgs, BusReqArgs, BusSubArgs};
use crate::error::{CliError, IpcContext};

/// Runs `ipckit bus ...`.
pub fn run(cmd: BusCommand) -> Result<(), CliError> {
    match cmd {
        BusCommand::Pub(a) => publish(a),
        BusCommand::Sub(a) => subscribe(a),
        BusCommand::Req(a) => request(a),
        BusCommand::Ls(a) => list(a),
    }
}

fn open(url: &str) -> Result<Bus, CliError> {
    Bus::open(url).doing(|| format!("cannot open {url}"))
}

/// Gives subscribers that are starting at the same moment a chance to see this node before
/// it publishes (they read nodes from the moment they see them).
fn settle(wait: Duration) {
    if !wait.is_zero() {
        std::thread::sleep(wait);
    }
}

fn publish(a: BusPubArgs) -> Result<(), CliError> {
    let bus = open(&a.url)?;
    settle(a.wait);
    let send = |msg: &[u8]| {
        bus.publish(&a.topic, msg)
            .doing(|| format!("cannot publish on {}", a.topic))
    };
    match a.message.as_deref() {
        Some(text) if text != "-" => send(text.as_bytes())?,
        _ => {
            for line in std::io::stdin().lock().lines() {
                let line = line.map_err(|source| CliError::Io {
                    doing: "cannot read standard input",
                    source,
                })?;
                send(line.as_bytes())?;
            }
        }
    }
    // Subscribers may still be reading our ring: it goes away with this process.
    settle(a.linger);
    Ok(())
}

fn subscribe(a: BusSubArgs) -> Result<(), CliError> {
    let bus = open(&a.url)?;
    let mut sub = bus
        .subscribe(&a.pattern)
        .doing(|| format!("cannot subscribe to {}", a.pattern))?;
    let deadline = a.timeout.map(|t| Instant::now() + t);
    let mut out = std::io::stdout().lock();
    let mut got = 0u64;
    while !matches!(a.count, Some(n) if got >= n) {
        let wait = match deadline {
            Some(d) => ipckit::Wait::Until(d),
            None => ipckit::Wait::Forever,
        };
        let msg = match sub.recv_with(wait) {
            Ok(m) => m,
            Err(ipckit::Error::Timeout { .. }) => {
                return match a.count {
                    Some(expected) => Err(CliError::Incomplete {
                        received: got,
                        expected,
                        why: "timed out",
                    }),
                    None => Ok(()),
                }
            }
            Err(ipckit::Error::Corrupted(why)) => {
                eprintln!("ipckit: skipped a malformed message: {why}");
                continue;
            }
            Err(e) => return Err(e).doing(|| format!("cannot receive from {}", a.pattern)),
        };
        got += 1;
        let body = String::from_utf8_lossy(msg.payload());
        let line = if a.quiet {
            format!("{body}\n")
        } else {
            format!("{}\t{body}\n", msg.topic())
        };
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|source| CliError::Io {
                doing: "cannot write standard output",
                source,
            })?;
    }
    if sub.drops() > 0 {
        eprintln!(
            "ipckit: {} messages dropped (subscription full)",
            sub.drops()
        );
    }
    Ok(())
}

fn request(a: BusReqArgs) -> Result<(), CliError> {
    let bus = open(&a.url)?;
    let reply = bus
        .request(&a.topic, a.message.as_bytes(), a.timeout)
        .doing(|| format!("request on {}", a.topic))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(|source| CliError::Io {
            doing: "cannot write standard output",
            source,
        })
}

/// Publishers, subscribers and responders of one topic.
type Pids = (Vec<u32>, Vec<u32>, Vec<u32>);

fn list(a: BusLsArgs) -> Result<(), CliError> {
    let peers = ipckit::bus::list(&a.url).doing(|| format!("cannot read {}", a.url))?;
    if peers.is_empty() {
        println!("no live node on {}", a.url);
        return Ok(());
    }
    let mut topics: std::collections::BTreeMap<&str, Pids> = Default::default();
    for p in &peers {
        for t in &p.publishes {
            topics.entry(t).or_default().0.push(p.pid);
        }
        for t in &p.subscribes {
            topics.entry(t).or_default().1.push(p.pid);
        }
        for t in &p.serves {
            topics.entry(t).or_default().2.push(p.pid);
        }
    }
    println!("{} live node(s)", peers.len());
    println!(
        "{:<18} {:>8}  {:>5} {:>5} {:>5}",
        "NODE", "PID", "PUB", "SUB", "SERVE"
    );
    for p in &peers {
        println!(
            "{:016x}   {:>8}  {:>5} {:>5} {:>5}",
            p.node_id,
            p.pid,
            p.publishes.len(),
            p.subscribes.len(),
            p.serves.len()
        );
    }
    println!();
    println!(
        "{:<40} {:<20} {:<20} SERVERS (pids)",
        "TOPIC / PATTERN", "PUBLISHERS", "SUBSCRIBERS"
    );
    let pids = |v: &Vec<u32>| {
        let s: Vec<String> = v.iter().map(u32::to_string).collect();
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.join(",")
        }
    };
    for (t, (p, s, r)) in topics {
        println!("{t:<40} {:<20} {:<20} {}", pids(&p), pids(&s), pids(&r));
    }
    Ok(())
}
