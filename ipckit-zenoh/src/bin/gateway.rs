//! `ipckit-zenoh-gateway --local bus://local/NS --zenoh 'bus://zenoh?...' --topic PATTERN...`:
//! forwards the chosen topics from a `bus://local` namespace to a Zenoh network and back, so
//! local processes stay on shared memory and only cross-machine traffic goes over the
//! network. `ipckit bus gateway ...` runs this program.
//!
//! Loop prevention: the gateway is one node on each side, and it never forwards a message
//! that it published itself (a message it brought from the other side). Two gateways joining
//! the same local namespace to the same Zenoh network would still echo each other's
//! messages: run one per namespace.
//!
//! Prints `gateway ready` when both sides are open and subscribed, then one line per remote
//! subscriber it sees appear on the Zenoh side (`zenoh subscriber PATTERN`); runs until
//! SIGINT or SIGTERM. Requests are not forwarded.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ipckit::bus::{Declaration, PeerEvent};
use ipckit::signal::ShutdownToken;

const SLICE: Duration = Duration::from_millis(100);

const USAGE: &str = "usage: ipckit-zenoh-gateway --local bus://local[/NS] --zenoh 'bus://zenoh?connect=...&listen=...' --topic PATTERN [--topic PATTERN ...]";

struct Args {
    local: String,
    zenoh: String,
    topics: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut local, mut zenoh, mut topics) = (None, None, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key {
            "--local" => local = Some(value()?),
            "--zenoh" => zenoh = Some(value()?),
            "--topic" => topics.push(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let local = local.ok_or("--local is required")?;
    let zenoh = zenoh.ok_or("--zenoh is required")?;
    if topics.is_empty() {
        return Err("at least one --topic is required".into());
    }
    Ok(Args {
        local,
        zenoh,
        topics,
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run(args: Args) -> ipckit::Result<()> {
    let stop = ShutdownToken::on_signals()?;
    let local = ipckit::bus::Bus::open(&args.local)?;
    let zenoh = ipckit_zenoh::Bus::open(&args.zenoh)?;
    let mut workers = Vec::new();
    let failed = Arc::new(std::sync::Mutex::new(None::<ipckit::Error>));
    for pattern in &args.topics {
        // local → zenoh
        let mut from_local = local.subscribe(pattern)?;
        let (z, own, stop2, failed2) =
            (zenoh.clone(), local.node_id(), stop.clone(), failed.clone());
        workers.push(std::thread::spawn(move || {
            while !stop2.is_shutdown() {
                match from_local.recv_timeout(SLICE) {
                    Ok(m) if m.publisher() == own => {} // brought from zenoh by us
                    Ok(m) => {
                        if let Err(e) = z.publish(m.topic(), m.payload()) {
                            eprintln!("ipckit-zenoh-gateway: local → zenoh {}: {e}", m.topic());
                        }
                    }
                    Err(ipckit::Error::Timeout { .. } | ipckit::Error::Corrupted(_)) => {}
                    Err(e) => {
                        *failed2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        stop2.cancel();
                    }
                }
            }
        }));
        // zenoh → local
        let mut from_zenoh = zenoh.subscribe(pattern)?;
        let (l, own, stop2, failed2) =
            (local.clone(), zenoh.node_id(), stop.clone(), failed.clone());
        workers.push(std::thread::spawn(move || {
            while !stop2.is_shutdown() {
                match from_zenoh.recv_timeout(SLICE) {
                    Ok(m) if m.publisher() == own => {} // brought from local by us
                    Ok(m) => {
                        if let Err(e) = l.publish(m.topic(), m.payload()) {
                            eprintln!("ipckit-zenoh-gateway: zenoh → local {}: {e}", m.topic());
                        }
                    }
                    Err(ipckit::Error::Timeout { .. } | ipckit::Error::Corrupted(_)) => {}
                    Err(e) => {
                        *failed2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        stop2.cancel();
                    }
                }
            }
        }));
    }
    let mut watch = zenoh.try_watch()?;
    say("gateway ready");
    while !stop.is_shutdown() {
        match watch.next_timeout(SLICE) {
            Ok(PeerEvent::Declared {
                node_id,
                kind: Declaration::Subscribes,
                topic,
                ..
            }) if node_id != zenoh.node_id() => say(&format!("zenoh subscriber {topic}")),
            Ok(_) | Err(ipckit::Error::Timeout { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for w in workers {
        let _ = w.join();
    }
    let e = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
    match e {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ipckit-zenoh-gateway: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipckit-zenoh-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
