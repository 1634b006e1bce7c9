//! Helper process for the `shm://` tests (`ipckit/tests/shm_channel.rs`).
//!
//! ```text
//! ipckit-shm-peer echo URL                 echo every message until the peer goes away
//! ipckit-shm-peer flood URL N SIZE         send N messages of SIZE bytes (seq, then pid)
//! ipckit-shm-peer loan-and-hang URL        loan 4096 bytes, fill half, print "ready", sleep
//! ipckit-shm-peer recv-ref-and-hang URL    hold a received message in place, print "ready", sleep
//! ipckit-shm-peer listen-and-hang URL      bind, print "ready", sleep (to be killed)
//! ipckit-shm-peer inherited-add            add the u64 at 0 of the inherited segment to the one at 8
//! ipckit-shm-peer mutex-hammer NAME        forever: lock Mutex<[u64; 2]> NAME, bump [0], bump [1]
//! ipckit-shm-peer rt-echo N                receive N real-time signals (SIGRTMIN+1), print
//!                                          each payload and sender pid
//! ipckit-shm-peer sem-count SEM SEG N      N times: wait SEM, bump the u64 at 0 of segment SEG
//!                                          with a plain read and write, post SEM
//! ipckit-shm-peer scribble PID SECS        write random bytes over PID's open ipckit segments
//! ```
//!
//! Exit codes: 0 done, 2 usage, 3 an ipckit error (printed to stderr).

use std::io::Write;
use std::time::{Duration, Instant};

use ipckit::{MessageReceiver, MessageSender};

const T: Duration = Duration::from_secs(20);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let r = match arg(0) {
        "echo" => echo(arg(1)),
        "flood" => flood(
            arg(1),
            arg(2).parse().unwrap_or(0),
            arg(3).parse().unwrap_or(64),
        ),
        "loan-and-hang" => loan_and_hang(arg(1)),
        "recv-ref-and-hang" => recv_ref_and_hang(arg(1)),
        "listen-and-hang" => ipckit::bind(arg(1)).map(|_listener| {
            ready();
            std::thread::sleep(Duration::from_secs(60));
        }),
        "inherited-add" => inherited_add(),
        "mutex-hammer" => mutex_hammer(arg(1)),
        "rt-echo" => rt_echo(arg(1).parse().unwrap_or(1)),
        "sem-count" => sem_count(arg(1), arg(2), arg(3).parse().unwrap_or(0)),
        "scribble" => {
            scribble(arg(1).parse().unwrap_or(0), arg(2).parse().unwrap_or(1.0));
            Ok(())
        }
        _ => {
            eprintln!("usage: see the source of ipckit-shm-peer");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("ipckit-shm-peer: {e}");
        std::process::exit(3);
    }
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn echo(url: &str) -> ipckit::Result<()> {
    let mut c = ipckit::connect_timeout(url, T)?;
    ready();
    let mut buf = Vec::new();
    loop {
        match c.recv_into_timeout(&mut buf, T) {
            Ok(()) => c.send_timeout(&buf, T)?,
            Err(ipckit::Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn flood(url: &str, n: u64, size: usize) -> ipckit::Result<()> {
    let mut c = ipckit::connect_timeout(url, T)?;
    ready();
    let mut msg = vec![0xA5u8; size.max(16)];
    msg[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    for seq in 0..n {
        msg[..8].copy_from_slice(&seq.to_le_bytes());
        c.send_timeout(&msg, T)?;
    }
    // On a two-way channel, stay until the reader has everything (it closes first); an
    // shm+mpsc sender cannot receive, and its messages outlive it.
    match c.recv_timeout(T) {
        Err(ipckit::Error::Disconnected | ipckit::Error::Unsupported { .. }) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

fn inherited_add() -> ipckit::Result<()> {
    use ipckit::shm::SharedBytes;
    let seg = ipckit::shm::Segment::from_env()?;
    let a: u64 = seg.read(0)?;
    seg.atomic_u64(8)?
        .fetch_add(a, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

fn rt_echo(n: u32) -> ipckit::Result<()> {
    use ipckit::signal::{sigrtmin, RtSignalReceiver};
    // Created before any other thread exists, so the signal is blocked process-wide.
    let mut rx = RtSignalReceiver::new(sigrtmin() + 1)?;
    ready();
    for _ in 0..n {
        let info = rx.recv_timeout(T)?;
        println!("{} {}", info.value, info.pid);
    }
    Ok(())
}

fn mutex_hammer(name: &str) -> ipckit::Result<()> {
    use ipckit::sync::{LockError, Mutex};
    let m = Mutex::<[u64; 2]>::open(name)?;
    ready();
    loop {
        let g = match m.lock_timeout(T) {
            Ok(g) | Err(LockError::OwnerDied(g)) | Err(LockError::Poisoned(g)) => g,
            Err(LockError::Failed(e)) => return Err(e),
        };
        // Two separate stores, so a kill between them leaves the pair inconsistent.
        let mut v = g.get();
        v[0] += 1;
        g.set(v);
        std::hint::black_box(&v);
        v[1] += 1;
        g.set(v);
        g.make_consistent();
    }
}

fn sem_count(sem: &str, seg: &str, n: u64) -> ipckit::Result<()> {
    use ipckit::shm::SharedBytes;
    let s = ipckit::sync::Semaphore::open(sem)?;
    let seg = ipckit::shm::Segment::builder(seg).open()?;
    ready();
    for _ in 0..n {
        s.wait_timeout(T)?;
        let v: u64 = seg.read(0)?;
        seg.write(0, &(v + 1))?;
        s.post()?;
    }
    Ok(())
}

fn loan_and_hang(url: &str) -> ipckit::Result<()> {
    let mut c = ipckit::connect_timeout(url, T)?;
    let shm = c.as_shm().expect("an shm:// URL");
    let mut loan = shm.loan(4096)?;
    loan.write(0, &[7u8; 2048])?;
    ready();
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

fn recv_ref_and_hang(url: &str) -> ipckit::Result<()> {
    let mut c = ipckit::connect_timeout(url, T)?;
    ready();
    let shm = c.as_shm().expect("an shm:// URL");
    let _held = shm.recv_ref_timeout(T)?;
    println!("holding");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Maps every ipckit segment that process `pid` has open (through /proc/PID/fd, which works
/// after the names were unlinked) and overwrites random ranges with random bytes.
fn scribble(pid: u32, secs: f64) {
    let mut maps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while Instant::now() < deadline {
        if maps.is_empty() {
            maps = open_targets(pid);
            if maps.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            ready();
        }
        for m in &maps {
            let m: &memmap2::MmapRaw = m;
            let len = m.len();
            // Mostly small writes (indices, headers), sometimes long runs (payload).
            let start = (next() as usize) % len;
            let run = if next() % 8 == 0 { 4096 } else { 8 };
            for i in start..(start + run).min(len) {
                // SAFETY: `i < len` of a live mapping owned by `maps`; a raw volatile store,
                // which is the point of this hostile helper.
                unsafe { m.as_mut_ptr().add(i).write_volatile(next() as u8) };
            }
        }
    }
}

fn open_targets(pid: u32) -> Vec<memmap2::MmapRaw> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("/dev/shm/ipckit.") {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(e.path())
        else {
            continue;
        };
        if let Ok(m) = memmap2::MmapOptions::new().map_raw(&file) {
            out.push(m);
        }
    }
    out
}
