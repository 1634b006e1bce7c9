//! The instructions of the `bus://local` message path, without the cache-line transfers: a
//! publisher and its own subscriber in one thread, so every receive finds its message at
//! once. Across processes the same path costs these nanoseconds on top of the line transfers
//! (what `ipckit bench --mech bus-local,bus-fanout-8` measures): shrink them here.
//! `cargo bench -p ipckit --bench bus_path`
//!
//! For instruction counts, run the bench binary under `valgrind --tool=callgrind` with
//! `--bench --profile-time 2` and divide by the iterations, or a plain loop of the same calls
//! twice with two counts and take the difference (the sixteenth session's figures in
//! docs/BENCHMARKS.md: publish + `recv_into` 622 instructions, publish + batch receive 386).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ipckit::bus::{Bus, Message, Overflow, SubscribeOptions};
use ipckit::Wait;

/// Messages published before a batch is received.
const BATCH: usize = 512;

fn one_thread(c: &mut Criterion) {
    let url = format!(
        "bus://local/bench-path-{}?max_msg=64&slots=1024&depth=1024",
        std::process::id()
    );
    let bus = Bus::open(&url).expect("open");
    let mut sub = bus
        .subscribe_with(
            "bench/in/*",
            SubscribeOptions {
                depth: 1024,
                overflow: Overflow::Block,
            },
        )
        .expect("subscribe");
    let payload = [7u8; 64];
    let mut msg = Message::default();
    c.bench_function("bus: publish + recv_into, 64 B", |b| {
        b.iter(|| {
            bus.publish("bench/in/data", &payload).expect("publish");
            sub.recv_into_with(&mut msg, Wait::Never).expect("recv");
        })
    });
    c.bench_function("bus: recv_batch of 512 published, 64 B (per batch)", |b| {
        b.iter_batched(
            || {
                for _ in 0..BATCH {
                    bus.publish("bench/in/data", &payload).expect("publish");
                }
            },
            |()| {
                let mut got = 0;
                while got < BATCH {
                    got += sub
                        .recv_batch_with(BATCH, Wait::Never, |m| {
                            std::hint::black_box(m.payload());
                        })
                        .expect("recv_batch");
                }
            },
            BatchSize::PerIteration,
        )
    });
}

criterion_group!(benches, one_thread);
criterion_main!(benches);
