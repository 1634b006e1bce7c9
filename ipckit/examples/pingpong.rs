//! Round-trip latency between two threads on different CPUs, for a quick look at any URL:
//! `cargo run --release -p ipckit --example pingpong -- shm://pp?wait=spin 64 100000`
use ipckit::{MessageReceiver, MessageSender};
use std::time::{Duration, Instant};

fn main() -> ipckit::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .map_or("shm://pingpong-example", |s| s.as_str())
        .to_owned();
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let t = Duration::from_secs(10);
    let mut listener = ipckit::bind(&url)?;
    let bound = listener.endpoint().clone();
    let echo = std::thread::spawn(move || -> ipckit::Result<()> {
        let _ = ipckit::sys::pin_current_thread(1);
        let mut c = ipckit::connect_timeout(&bound, t)?;
        let mut buf = Vec::new();
        loop {
            match c.recv_into_timeout(&mut buf, t) {
                Ok(()) => c.send_timeout(&buf, t)?,
                Err(ipckit::Error::Disconnected) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let _ = ipckit::sys::pin_current_thread(0);
    let mut conn = listener.accept_timeout(t)?;
    let msg = vec![1u8; size];
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + iters / 10 {
        let t0 = Instant::now();
        conn.send_timeout(&msg, t)?;
        conn.recv_into_timeout(&mut buf, t)?;
        if i >= iters / 10 {
            samples.push(t0.elapsed().as_nanos() as u64);
        }
    }
    drop(conn);
    echo.join().expect("echo thread")?;
    samples.sort_unstable();
    println!(
        "{url} {size} B: median {} ns, p99 {} ns",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
    Ok(())
}
