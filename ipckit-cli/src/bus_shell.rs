//! What `ipckit bus pub|sub|req|ls` do and print, written against `ipckit::bus` alone, so that
//! it runs on any backend the URL names.
//!
//! This file is compiled into two programs: `ipckit` (here), and `ipckit-zenoh-bus` (crate
//! ipckit-zenoh, through a `#[path]` module), which links zenoh and calls
//! `ipckit_zenoh::install()` first. `ipckit` must not link zenoh, so for a `bus://zenoh` URL
//! it runs `ipckit-zenoh-bus` with the command in the form [`BusShell::to_args`] writes and
//! [`BusShell::from_args`] reads: both programs print the same lines and exit the same way.
//! It may use only `ipckit`, `std` and `crate::error` (ipckit-cli's `error.rs`, also
//! compiled into both).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use ipckit::bus::{Bus, Pattern, Peer};

use crate::error::{CliError, IpcContext};

/// How often `bus pub` looks whether its subscribers have attached, or read everything.
const LOOK: Duration = Duration::from_millis(1);

/// One of `ipckit bus pub|sub|req|ls`, its options parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum BusShell {
    /// Publish `message` (or each line of standard input) on `topic`.
    Pub {
        url: String,
        topic: String,
        message: Option<String>,
        wait: Duration,
        linger: Duration,
    },
    /// Print the messages of topics matching `pattern`.
    Sub {
        url: String,
        pattern: String,
        count: Option<u64>,
        timeout: Option<Duration>,
        quiet: bool,
    },
    /// Send a request and print the first reply.
    Req {
        url: String,
        topic: String,
        message: String,
        timeout: Duration,
    },
    /// List the live nodes.
    Ls { url: String },
}

/// How `ipckit-zenoh-bus` is called (the form [`BusShell::to_args`] writes).
#[allow(dead_code)] // ipckit-zenoh-bus only
pub const USAGE: &str = "\
usage: ipckit-zenoh-bus pub [--wait=SECS] [--linger=SECS] [--] URL TOPIC [MESSAGE|-]
       ipckit-zenoh-bus sub [--count=N] [--timeout=SECS] [--quiet] [--] URL PATTERN
       ipckit-zenoh-bus req [--timeout=SECS] [--] URL TOPIC MESSAGE
       ipckit-zenoh-bus ls [--] URL
(what `ipckit bus pub|sub|req|ls` run for a bus://zenoh URL; see `ipckit bus --help`)";

fn secs(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

fn parse_secs(key: &str, text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{key}={text:?} is not a number of seconds (0 or more)"))
}

impl BusShell {
    /// The bus URL.
    pub fn url(&self) -> &str {
        match self {
            BusShell::Pub { url, .. }
            | BusShell::Sub { url, .. }
            | BusShell::Req { url, .. }
            | BusShell::Ls { url } => url,
        }
    }

    /// The command as arguments of `ipckit-zenoh-bus`: the subcommand, options as
    /// `--key=value`, then `--` and the positional arguments (so any message passes as is).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = Vec::new();
        let pos: Vec<&str> = match self {
            BusShell::Pub {
                url,
                topic,
                message,
                wait,
                linger,
            } => {
                v.push("pub".into());
                v.push(format!("--wait={}", secs(*wait)));
                v.push(format!("--linger={}", secs(*linger)));
                let mut p = vec![url.as_str(), topic.as_str()];
                p.extend(message.as_deref());
                p
            }
            BusShell::Sub {
                url,
                pattern,
                count,
                timeout,
                quiet,
            } => {
                v.push("sub".into());
                if let Some(n) = count {
                    v.push(format!("--count={n}"));
                }
                if let Some(t) = timeout {
                    v.push(format!("--timeout={}", secs(*t)));
                }
                if *quiet {
                    v.push("--quiet".into());
                }
                vec![url.as_str(), pattern.as_str()]
            }
            BusShell::Req {
                url,
                topic,
                message,
                timeout,
            } => {
                v.push("req".into());
                v.push(format!("--timeout={}", secs(*timeout)));
                vec![url.as_str(), topic.as_str(), message.as_str()]
            }
            BusShell::Ls { url } => {
                v.push("ls".into());
                vec![url.as_str()]
            }
        };
        v.push("--".into());
        v.extend(pos.into_iter().map(str::to_owned));
        v
    }

    /// Reads the arguments [`to_args`](Self::to_args) writes (also typed by hand: `--`
    /// may be left out when no positional argument starts with `-`).
    #[allow(dead_code)] // ipckit-zenoh-bus and the tests
    pub fn from_args(args: &[String]) -> Result<BusShell, String> {
        let (cmd, rest) = args.split_first().ok_or("a subcommand is required")?;
        let mut opts: Vec<(&str, Option<&str>)> = Vec::new();
        let mut pos: Vec<String> = Vec::new();
        let mut it = rest.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                pos.extend(it.by_ref().cloned());
            } else if let Some(opt) = a.strip_prefix("--") {
                let (k, v) = opt
                    .split_once('=')
                    .map_or((opt, None), |(k, v)| (k, Some(v)));
                opts.push((k, v));
            } else if a == "-q" {
                opts.push(("quiet", None));
            } else if a.starts_with('-') && a != "-" {
                return Err(format!("unknown option {a:?}"));
            } else {
                pos.push(a.clone());
            }
        }
        let known: &[&str] = match cmd.as_str() {
            "pub" => &["wait", "linger"],
            "sub" => &["count", "timeout", "quiet"],
            "req" => &["timeout"],
            "ls" => &[],
            other => return Err(format!("unknown subcommand {other:?}")),
        };
        if let Some((k, _)) = opts.iter().find(|(k, _)| !known.contains(k)) {
            return Err(format!("{cmd} has no option --{k}"));
        }
        // The last one counts, as with clap.
        let value = |key: &str| {
            opts.iter()
                .rev()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.unwrap_or_default().to_owned())
        };
        let dur = |key: &str, v: Option<String>, default: Duration| -> Result<Duration, String> {
            v.map_or(Ok(default), |t| parse_secs(key, &t))
        };
        let (n_min, n_max) = match cmd.as_str() {
            "pub" => (2, 3),
            "sub" => (2, 2),
            "req" => (3, 3),
            _ => (1, 1),
        };
        if pos.len() < n_min || pos.len() > n_max {
            return Err(format!(
                "{cmd} takes {} arguments, not {}",
                if n_max > n_min {
                    format!("{n_min} or {n_max}")
                } else {
                    n_min.to_string()
                },
                pos.len()
            ));
        }
        let three = pos.len() == 3;
        let mut pos = pos.into_iter();
        let mut next = || pos.next().unwrap_or_default();
        Ok(match cmd.as_str() {
            "pub" => BusShell::Pub {
                url: next(),
                topic: next(),
                message: three.then(&mut next),
                wait: dur("--wait", value("wait"), Duration::from_millis(200))?,
                linger: dur("--linger", value("linger"), Duration::from_millis(200))?,
            },
            "sub" => BusShell::Sub {
                url: next(),
                pattern: next(),
                count: match value("count") {
                    Some(n) => Some(
                        n.parse()
                            .map_err(|_| format!("--count={n:?} is not a number"))?,
                    ),
                    None => None,
                },
                timeout: match value("timeout") {
                    Some(t) => Some(parse_secs("--timeout", &t)?),
                    None => None,
                },
                quiet: value("quiet").is_some(),
            },
            "req" => BusShell::Req {
                url: next(),
                topic: next(),
                message: next(),
                timeout: dur("--timeout", value("timeout"), Duration::from_secs(5))?,
            },
            _ => BusShell::Ls { url: next() },
        })
    }

    /// Runs the command on the bus its URL names.
    pub fn run(self) -> Result<(), CliError> {
        match self {
            BusShell::Pub {
                url,
                topic,
                message,
                wait,
                linger,
            } => publish(&url, &topic, message.as_deref(), wait, linger),
            BusShell::Sub {
                url,
                pattern,
                count,
                timeout,
                quiet,
            } => subscribe(&url, &pattern, count, timeout, quiet),
            BusShell::Req {
                url,
                topic,
                message,
                timeout,
            } => request(&url, &topic, &message, timeout),
            BusShell::Ls { url } => list(&url),
        }
    }
}

fn open(url: &str) -> Result<Bus, CliError> {
    Bus::open(url).doing(|| format!("cannot open {url}"))
}

/// Whether a node that satisfies `cond` is seen before `until`. On a networked backend
/// (bus://zenoh) declarations travel: a publish or a request waits for the subscriber or
/// responder it is meant for.
fn wait_for_peer(bus: &Bus, until: Instant, cond: impl Fn(&Peer) -> bool) -> bool {
    let mut watch = bus.watch();
    loop {
        if watch.peers().iter().any(&cond) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || watch.next_timeout(left).is_err() {
            return watch.peers().iter().any(&cond);
        }
    }
}

fn matches_any(patterns: &[String], topic: &str) -> bool {
    patterns
        .iter()
        .any(|p| Pattern::parse(p).is_ok_and(|p| p.matches(topic)))
}

fn publish(
    url: &str,
    topic: &str,
    message: Option<&str>,
    wait: Duration,
    linger: Duration,
) -> Result<(), CliError> {
    let bus = open(url)?;
    // Until a subscriber of the topic is seen, at most `wait`: the wait is for subscribers
    // that are still starting.
    let me = bus.node_id();
    let until = Instant::now() + wait;
    wait_for_peer(&bus, until, |p| {
        p.node_id != me && matches_any(&p.subscribes, topic)
    });
    let local = bus.backend().is_none();
    let mut first = true;
    let mut send = |msg: &[u8]| {
        bus.publish(topic, msg)
            .doing(|| format!("cannot publish on {topic}"))?;
        if first && local {
            first = false;
            // A subscription starts reading this node when it sees the topic declared (by the
            // first message), from that message on; a `block` one that was there before this
            // node attaches when it next looks at the registry. Until then a `block`
            // subscription cannot hold this node back, and a burst longer than the ring
            // would overrun either (counted as drops): wait for the matching subscriptions
            // seen to read.
            wait_until(until, || attached_and_read(&bus, topic, false));
        }
        Ok::<(), CliError>(())
    };
    match message {
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
    // Subscribers may still be reading our ring (or zenoh sending): it goes away with this
    // process.
    if local {
        wait_until(Instant::now() + linger, || {
            attached_and_read(&bus, topic, true)
        });
    } else {
        sleep(linger);
    }
    Ok(())
}

/// bus://local: whether as many subscriptions as the other nodes have declared for patterns
/// matching `topic` read this node's ring (attached, not parked) and, with `read`, whether
/// every reader of the ring has read all of it.
fn attached_and_read(bus: &Bus, topic: &str, read: bool) -> bool {
    let me = bus.node_id();
    let expected: usize = bus
        .peers()
        .iter()
        .filter(|p| p.node_id != me)
        .map(|p| {
            p.subscribes
                .iter()
                .chain(&p.serves)
                .filter(|pattern| matches_any(std::slice::from_ref(pattern), topic))
                .count()
        })
        .sum();
    let readers = bus.stats().readers;
    readers.iter().filter(|r| !r.parked).count() >= expected
        && (!read || readers.iter().all(|r| r.lag == 0))
}

/// Looks at `done` every [`LOOK`] until it holds or `until` passes.
fn wait_until(until: Instant, mut done: impl FnMut() -> bool) {
    while !done() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        sleep(left.min(LOOK));
    }
}

fn sleep(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

fn subscribe(
    url: &str,
    pattern: &str,
    count: Option<u64>,
    timeout: Option<Duration>,
    quiet: bool,
) -> Result<(), CliError> {
    let bus = open(url)?;
    let mut sub = bus
        .subscribe(pattern)
        .doing(|| format!("cannot subscribe to {pattern}"))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut out = std::io::stdout().lock();
    let mut got = 0u64;
    while !matches!(count, Some(n) if got >= n) {
        let wait = match deadline {
            Some(d) => ipckit::Wait::Until(d),
            None => ipckit::Wait::Forever,
        };
        let msg = match sub.recv_with(wait) {
            Ok(m) => m,
            Err(ipckit::Error::Timeout { .. }) => {
                report_drops(&sub);
                return match count {
                    Some(expected) => Err(CliError::Incomplete {
                        received: got,
                        expected,
                        why: "timed out",
                    }),
                    None => Ok(()),
                };
            }
            Err(ipckit::Error::Corrupted(why)) => {
                eprintln!("ipckit: skipped a malformed message: {why}");
                continue;
            }
            Err(e) => return Err(e).doing(|| format!("cannot receive from {pattern}")),
        };
        got += 1;
        let body = String::from_utf8_lossy(msg.payload());
        let line = if quiet {
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
    report_drops(&sub);
    Ok(())
}

/// Says on standard error how many messages the subscription dropped, if any (also when it
/// ends short of `--count`: drops are the likely reason).
fn report_drops(sub: &ipckit::bus::Subscriber) {
    if sub.drops() > 0 {
        eprintln!(
            "ipckit: {} messages dropped (subscription full; ?depth=N or ?overflow=block in the \
             URL keeps more)",
            sub.drops()
        );
    }
}

fn request(url: &str, topic: &str, message: &str, timeout: Duration) -> Result<(), CliError> {
    let bus = open(url)?;
    let mut timeout = timeout;
    if bus.backend().is_some() {
        // Not bus://local: wait (within the timeout) until a responder is seen.
        let start = Instant::now();
        if !wait_for_peer(&bus, start + timeout, |p| matches_any(&p.serves, topic)) {
            return Err(ipckit::Error::ConnectionRefused {
                addr: format!("{url} topic {topic}"),
                reason: "no live responder serves this topic",
            })
            .doing(|| format!("request on {topic}"));
        }
        timeout = timeout.saturating_sub(start.elapsed());
    }
    let reply = bus
        .request(topic, message.as_bytes(), timeout)
        .doing(|| format!("request on {topic}"))?;
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

fn list(url: &str) -> Result<(), CliError> {
    let peers = ipckit::bus::list(url).doing(|| format!("cannot read {url}"))?;
    if peers.is_empty() {
        println!("no live node on {url}");
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
