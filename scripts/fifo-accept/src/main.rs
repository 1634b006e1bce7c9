//! Times a FIFO `accept` that has to wait: a writer thread connects every ~32 ms and sends
//! one message; the time from its `send` to the listener holding that message (accept, then
//! receive) is printed as median, p90 and max over N connections (argument, default 40).
use std::time::{Duration, Instant};

use ipckit::{MessageReceiver, MessageSender};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N, a number of connections"))
        .unwrap_or(40)
        .max(1);
    let path = std::env::temp_dir().join(format!("fifo-accept-{}.fifo", std::process::id()));
    let url = format!("fifo://{}", path.display());
    let mut listener = ipckit::bind(&url).expect("bind");
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<Instant>();
    let writer = {
        let url = url.clone();
        std::thread::spawn(move || {
            for _ in 0..n {
                std::thread::sleep(Duration::from_millis(2));
                let mut conn = ipckit::connect(&url).expect("connect");
                let sent = Instant::now();
                conn.send(b"hello").expect("send");
                sent_tx.send(sent).expect("main thread gone");
                // A FIFO is one pipe: the next writer waits until this one was read.
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = listener
            .accept_timeout(Duration::from_secs(5))
            .expect("accept");
        let got = conn.recv_timeout(Duration::from_secs(5)).expect("recv");
        let sent = sent_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("send time");
        took.push(sent.elapsed());
        assert_eq!(got, b"hello");
    }
    writer.join().expect("writer");
    took.sort();
    println!(
        "send -> accepted and received, {n} connections: median {:?}, p90 {:?}, max {:?}",
        took[n / 2],
        took[n * 9 / 10],
        took[n - 1]
    );
}
