//! Times connection set-up on any connection-oriented URL (first argument; default a FIFO
//! in the temporary directory) over N connections (second argument, default 40): a client
//! thread connects every ~32 ms and sends one message while the listener waits in `accept`.
//! Prints median, p90 and max of `connect`, and of the time from the client's `send` to the
//! listener holding that message (accept, then receive). The first connection is left out of
//! the `connect` figures: it pays the process's one-time set-up.
use std::time::{Duration, Instant};

use ipckit::{MessageReceiver, MessageSender};

fn main() {
    let n: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("N, a number of connections"))
        .unwrap_or(40)
        .max(1);
    let url = std::env::args().nth(1).unwrap_or_else(|| {
        let path = std::env::temp_dir().join(format!("fifo-accept-{}.fifo", std::process::id()));
        format!("fifo://{}", path.display())
    });
    let mut listener = ipckit::bind(&url).expect("bind");
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<(Duration, Instant)>();
    let writer = {
        let url = url.clone();
        std::thread::spawn(move || {
            for _ in 0..n {
                std::thread::sleep(Duration::from_millis(2));
                let start = Instant::now();
                let mut conn = ipckit::connect(&url).expect("connect");
                let connected = start.elapsed();
                let sent = Instant::now();
                conn.send(b"hello").expect("send");
                sent_tx.send((connected, sent)).expect("main thread gone");
                // A FIFO is one pipe: the next writer waits until this one was read.
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    let mut took = Vec::with_capacity(n);
    let mut connects = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = listener
            .accept_timeout(Duration::from_secs(5))
            .expect("accept");
        let got = conn.recv_timeout(Duration::from_secs(5)).expect("recv");
        let (connected, sent) = sent_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("send time");
        took.push(sent.elapsed());
        connects.push(connected);
        assert_eq!(got, b"hello");
    }
    writer.join().expect("writer");
    print_spread("connect (first left out)", &mut connects[1..]);
    print_spread("send -> accepted and received", &mut took);
}

fn print_spread(what: &str, v: &mut [Duration]) {
    if v.is_empty() {
        return;
    }
    v.sort();
    let n = v.len();
    println!(
        "{what}, {n} connections: median {:?}, p90 {:?}, max {:?}",
        v[n / 2],
        v[n * 9 / 10],
        v[n - 1]
    );
}
