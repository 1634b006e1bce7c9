//! Helper process for the bus tests (`ipckit/tests/bus_*.rs`).
//!
//! ```text
//! ipckit-bus-peer pub URL TOPIC N INTERVAL_US   publish N messages (u64 counter, LE) on TOPIC,
//!                                               one per INTERVAL_US; N = 0: forever
//! ipckit-bus-peer stall URL PATTERN DEPTH       subscribe with the block policy and never read
//! ipckit-bus-peer count URL PATTERN N           receive N messages, print "got N drops D"
//! ipckit-bus-peer batches URL PATTERN N         receive N counters (0, 1, ...) in batches of up
//!                                               to 100 (skipping topics ending in /warm), print
//!                                               "in order N batches B"
//! ipckit-bus-peer serve URL PATTERN             answer requests with "PID:" + the request;
//!                                               after a request "stop", drop the responder,
//!                                               print "stopped" and live on; to a request
//!                                               "hang", print "hanging" and never answer
//! ipckit-bus-peer malformed URL TOPIC           publish "before", a malformed slot, "after"
//! ipckit-bus-peer scribble URL TOPIC MILLIS R    once R subscriptions read it, for MILLIS ms,
//!                                               publish on TOPIC and write random bytes over
//!                                               its own node segment and, in the last
//!                                               quarter, now and then the registry (a hostile
//!                                               or broken publisher),
//!                                               then print "done N"
//! ```
//! Each prints "ready" once set up (and, for `pub`, after every 100 messages "sent N").
//! Exit codes: 0 done, 2 usage, 3 an ipckit error (printed to stderr).

use std::io::Write;
use std::time::Duration;

use ipckit::bus::{Bus, Overflow, SubscribeOptions};

const T: Duration = Duration::from_secs(20);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    // Never outlive a test that forgot us.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(4);
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    let r = match arg(0) {
        "pub" => publish(arg(1), arg(2), num(3), num(4)),
        "stall" => stall(arg(1), arg(2), num(3) as u32),
        "count" => count(arg(1), arg(2), num(3)),
        "batches" => batches(arg(1), arg(2), num(3)),
        "serve" => serve(arg(1), arg(2)),
        "malformed" => malformed(arg(1), arg(2)),
        "scribble" => scribble(arg(1), arg(2), num(3), num(4) as usize),
        _ => {
            eprintln!("usage: see the source");
            std::process::exit(2)
        }
    };
    if let Err(e) = r {
        eprintln!("ipckit-bus-peer: {e}");
        std::process::exit(3);
    }
}

fn publish(url: &str, topic: &str, n: u64, interval_us: u64) -> ipckit::Result<()> {
    let bus = Bus::open(url)?;
    say("ready");
    let mut i = 0u64;
    while n == 0 || i < n {
        bus.publish(topic, &i.to_le_bytes())?;
        i += 1;
        if i % 100 == 0 {
            say(&format!("sent {i}"));
        }
        if interval_us > 0 {
            std::thread::sleep(Duration::from_micros(interval_us));
        }
    }
    say("done");
    std::thread::sleep(T);
    Ok(())
}

fn stall(url: &str, pattern: &str, depth: u32) -> ipckit::Result<()> {
    let bus = Bus::open(url)?;
    let _sub = bus.subscribe_with(
        pattern,
        SubscribeOptions {
            depth,
            overflow: Overflow::Block,
        },
    )?;
    say("ready");
    std::thread::sleep(T * 3);
    Ok(())
}

fn count(url: &str, pattern: &str, n: u64) -> ipckit::Result<()> {
    let bus = Bus::open(url)?;
    let mut sub = bus.subscribe(pattern)?;
    say("ready");
    for _ in 0..n {
        sub.recv_timeout(T)?;
    }
    say(&format!("got {n} drops {}", sub.drops()));
    Ok(())
}

fn batches(url: &str, pattern: &str, n: u64) -> ipckit::Result<()> {
    let bus = Bus::open(url)?;
    let mut sub = bus.subscribe_with(
        pattern,
        SubscribeOptions {
            depth: 1024,
            overflow: Overflow::Block,
        },
    )?;
    say("ready");
    let (mut next, mut batches, mut wrong) = (0u64, 0u64, None);
    while next < n {
        sub.recv_batch_timeout(100, T, |m| {
            if m.topic().ends_with("/warm") {
                return;
            }
            let got = <[u8; 8]>::try_from(m.payload())
                .ok()
                .map(u64::from_le_bytes);
            if got != Some(next) && wrong.is_none() {
                wrong = Some(format!("message {next}: {:?}", m.payload()));
            }
            next += 1;
        })?;
        batches += 1;
    }
    match wrong {
        Some(w) => say(&format!("out of order at {w}")),
        None => say(&format!("in order {next} batches {batches}")),
    }
    Ok(())
}

fn serve(url: &str, pattern: &str) -> ipckit::Result<()> {
    let bus = Bus::open(url)?;
    let pid = std::process::id();
    let (stop, stopped) = std::sync::mpsc::channel();
    let h = bus.serve(pattern, move |m| {
        match m.payload() {
            b"stop" => {
                let _ = stop.send(());
            }
            b"hang" => {
                say("hanging");
                std::thread::sleep(T * 3);
            }
            _ => {}
        }
        [format!("{pid}:").as_bytes(), m.payload()].concat()
    })?;
    say("ready");
    if stopped.recv_timeout(T * 3).is_ok() {
        drop(h);
        say("stopped");
        std::thread::sleep(T);
    }
    Ok(())
}

fn malformed(url: &str, topic: &str) -> ipckit::Result<()> {
    let bus = Bus::open(url)?;
    say("ready");
    // Wait for the subscriber to read us (it attaches once we declare the topic).
    bus.publish(topic, b"before")?;
    std::thread::sleep(Duration::from_millis(200));
    bus.publish_malformed(&[0xff; 64])?;
    let mut raw = vec![0u8; 24];
    raw[0..4].copy_from_slice(&u32::MAX.to_le_bytes()); // payload length beyond the slot
    raw[4..6].copy_from_slice(&3u16.to_le_bytes());
    raw[6] = 1;
    bus.publish_malformed(&raw)?;
    bus.publish(topic, b"after")?;
    say("done");
    std::thread::sleep(T);
    Ok(())
}

fn scribble(url: &str, topic: &str, millis: u64, readers: usize) -> ipckit::Result<()> {
    use std::os::unix::fs::FileExt;
    let bus = Bus::open(url)?;
    // Scribbling starts once the subscriptions read the node (a node garbled before anyone
    // opened it is never read at all).
    let attach_by = std::time::Instant::now() + T;
    while bus.stats().readers.len() < readers {
        if std::time::Instant::now() > attach_by {
            return Err(ipckit::Error::Timeout { after: Some(T) });
        }
        bus.publish(topic, b"first")?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let ns = ipckit::bus::BusUrl::parse(url)?.namespace;
    let io = |op| move |source| ipckit::Error::Io { op, source };
    let open = |path: String| -> ipckit::Result<(std::fs::File, u64)> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("open a bus segment"))?;
        let len = f.metadata().map_err(io("fstat"))?.len();
        Ok((f, len))
    };
    let node = open(format!("/dev/shm/ipckit.bus.{ns}.n.{:016x}", bus.node_id()))?;
    // The namespace's registry too, now and then in the last quarter (every node reads it;
    // its garbled entries soon hide the node, and the rest of the run would test little).
    let registry = open(format!("/dev/shm/ipckit.bus.{ns}"))?;
    say("ready");
    // xorshift64*: no dependency, a different stream per process.
    let mut x = u64::from(std::process::id()) | 1 << 40;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let end = std::time::Instant::now() + Duration::from_millis(millis);
    let mut scribbles = 0u64;
    let mut junk = [0u8; 256];
    while std::time::Instant::now() < end {
        // Our own publishes may fail once our segment is garbage: that is not what is tested.
        for i in 0..8u64 {
            let _ = bus.publish_with(topic, &i.to_le_bytes(), ipckit::Wait::Never);
        }
        let n = 1 + (next() % junk.len() as u64) as usize;
        for b in &mut junk[..n] {
            *b = next() as u8;
        }
        let late = std::time::Instant::now() + Duration::from_millis(millis / 4) > end;
        let (file, len) = if late && next() % 64 == 0 {
            &registry
        } else {
            &node
        };
        // Half the time into the first 4 KiB (header, reader slots), else anywhere.
        let span = if next() % 2 == 0 {
            4096.min(*len)
        } else {
            *len
        };
        let at = next() % span.saturating_sub(n as u64).max(1);
        file.write_all_at(&junk[..n], at).map_err(io("pwrite"))?;
        scribbles += 1;
    }
    say(&format!("done {scribbles}"));
    // Dropping the bus removes the node's segment (by name, whatever it holds now).
    Ok(())
}
