//! The instructions of the `shm://` message path, without the cache-line transfers: both ends
//! of one channel in one thread, so a send finds the ring empty and the receive finds the
//! message at once. Across two CPUs the same path costs these nanoseconds on top of the line
//! transfers (what `ipckit bench` measures): shrink them here.
//! `cargo bench -p ipckit --bench shm_path`
//!
//! A hint that moves lines out of this core (`cldemote`, tried in 4342550, removed in the
//! seventeenth session) shows here first: with it a send + `recv_into` took 175-186 ns
//! instead of 24-32, the same core reading back what it had just pushed out. Across two
//! processes it shortened the host's slow-phase round trips by 5-14 % and tripled the fast
//! phase's, where the two CPUs share their caches (docs/BENCHMARKS.md).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ipckit::{MessageReceiver, MessageSender};

fn one_thread(c: &mut Criterion) {
    for wait in ["adaptive", "spin"] {
        let url = format!("shm://bench-path-{wait}-{}?wait={wait}", std::process::id());
        let mut listener = ipckit::bind(&url).expect("bind");
        let mut client = ipckit::connect(&url).expect("connect");
        let mut server = listener
            .accept_timeout(Duration::from_secs(5))
            .expect("accept");
        let msg = [7u8; 64];
        let mut buf = Vec::with_capacity(64);
        c.bench_function(&format!("shm {wait}: send + recv_into, 64 B"), |b| {
            b.iter(|| {
                client.send(&msg).expect("send");
                server.recv_into(&mut buf).expect("recv");
            })
        });
        let (tx, rx) = (client.as_shm().expect("shm"), server.as_shm().expect("shm"));
        c.bench_function(&format!("shm {wait}: loan + recv_ref, 64 B"), |b| {
            b.iter(|| {
                let mut loan = tx.loan(64).expect("loan");
                loan.write(0, &msg[..8]).expect("write");
                loan.commit();
                let got = rx.recv_ref().expect("recv_ref");
                std::hint::black_box(got.len());
            })
        });
    }
}

criterion_group!(benches, one_thread);
criterion_main!(benches);
