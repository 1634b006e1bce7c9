//! `ipckit bus pub|sub|req|ls`: the local publish/subscribe bus from the shell; `ipckit bus
//! gateway` runs `ipckit-zenoh-gateway` (crate ipckit-zenoh), which joins it to Zenoh.

use std::ffi::OsStr;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipckit::bus::Bus;

use crate::cli::{BusCommand, BusGatewayArgs, BusLsArgs, BusPubArgs, BusReqArgs, BusSubArgs};
use crate::error::{CliError, IpcContext};

/// Runs `ipckit bus ...`.
pub fn run(cmd: BusCommand) -> Result<(), CliError> {
    match cmd {
        BusCommand::Pub(a) => publish(a),
        BusCommand::Sub(a) => subscribe(a),
        BusCommand::Req(a) => request(a),
        BusCommand::Ls(a) => list(a),
        BusCommand::Gateway(a) => gateway(a),
    }
}

/// The program `ipckit bus gateway` runs. It links zenoh, which ipckit does not, so it comes
/// from its own crate (ipckit-zenoh).
const GATEWAY: &str = "ipckit-zenoh-gateway";

/// Where the gateway is: in `exe_dir` (next to `ipckit`), else in a directory of `path`.
fn find_gateway(exe_dir: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let beside = exe_dir.map(|d| d.join(GATEWAY)).filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(path?)
            .map(|d| d.join(GATEWAY))
            .find(|p| p.is_file())
    })
}

fn gateway_missing() -> CliError {
    CliError::Usage(format!(
        "ipckit bus gateway runs {GATEWAY}, which is neither next to ipckit nor in PATH; it \
         links zenoh, so it comes from its own crate: install it with \
         `cargo install --path ipckit-zenoh --bin {GATEWAY}` (from the ipckit repository)"
    ))
}

/// Replaces this process with the gateway (its stdout, exit status and signals are the
/// command's).
fn gateway(a: BusGatewayArgs) -> Result<(), CliError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    let program = find_gateway(exe.as_deref().and_then(Path::parent), path.as_deref())
        .ok_or_else(gateway_missing)?;
    let mut cmd = std::process::Command::new(&program);
    cmd.arg("--local")
        .arg(&a.local)
        .arg("--zenoh")
        .arg(&a.zenoh);
    for t in &a.topics {
        cmd.arg("--topic").arg(t);
    }
    let source = cmd.exec();
    Err(CliError::Io {
        doing: "cannot run ipckit-zenoh-gateway",
        source,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_found_next_to_ipckit_then_in_path() {
        let beside = tempfile::tempdir().unwrap();
        let in_path = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([empty.path(), in_path.path()]).unwrap();
        assert_eq!(find_gateway(Some(beside.path()), Some(&path)), None);
        std::fs::write(in_path.path().join(GATEWAY), b"").unwrap();
        assert_eq!(
            find_gateway(Some(beside.path()), Some(&path)),
            Some(in_path.path().join(GATEWAY))
        );
        std::fs::write(beside.path().join(GATEWAY), b"").unwrap();
        assert_eq!(
            find_gateway(Some(beside.path()), Some(&path)),
            Some(beside.path().join(GATEWAY))
        );
        assert_eq!(find_gateway(None, None), None);
        let msg = gateway_missing().to_string();
        assert!(msg.contains("cargo install --path ipckit-zenoh"), "{msg}");
    }
}
