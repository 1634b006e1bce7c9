//! Uncontended costs of the process-shared primitives: no system call should be involved.
//! `cargo bench -p ipckit --bench sync`

use criterion::{criterion_group, criterion_main, Criterion};
use ipckit::sync::{Mutex, Semaphore};

fn uncontended(c: &mut Criterion) {
    let pid = std::process::id();
    let m = Mutex::create(&format!("bench-mutex-{pid}"), 0u64).expect("create mutex");
    c.bench_function("mutex lock+unlock (uncontended)", |b| {
        b.iter(|| {
            let g = m.lock().expect("uncontended lock");
            std::hint::black_box(&g);
        })
    });
    let s = Semaphore::create(&format!("bench-sem-{pid}"), 0).expect("create semaphore");
    c.bench_function("semaphore post+try_wait (uncontended)", |b| {
        b.iter(|| {
            s.post().expect("post");
            s.try_wait().expect("a permit is there");
        })
    });
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
