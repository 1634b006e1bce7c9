//! A receive into a reused buffer and a send allocate nothing, on every transport.
//!
//! A counting global allocator counts allocations made by the measuring thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipckit::{MessageReceiver, MessageSender};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to the system allocator unchanged; counting only reads a
// const-initialised thread-local and bumps an atomic, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T: Duration = Duration::from_secs(10);

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Echo peer on another thread; the measuring thread sends and receives `rounds` messages.
fn check(url: &str, size: usize) {
    let mut listener = ipckit::bind(url).unwrap();
    let bound = listener.endpoint().clone();
    let bidirectional = bound.scheme() != ipckit::Scheme::Fifo;
    let mut client = ipckit::connect_timeout(&bound, T).unwrap();
    let msg = vec![7u8; size];
    client.send_timeout(&msg, T).unwrap();
    let mut server = listener.accept_timeout(T).unwrap();
    let rounds = 200;
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..rounds {
            server.recv_into_timeout(&mut buf, T).unwrap();
            if bidirectional {
                server.send_timeout(&buf, T).unwrap();
            }
        }
    });
    let mut buf = Vec::new();
    if bidirectional {
        // Warm up: the first receive sizes the buffers.
        client.recv_into_timeout(&mut buf, T).unwrap();
    }
    let n = allocations_during(|| {
        for _ in 1..rounds {
            client.send_timeout(&msg, T).unwrap();
            if bidirectional {
                client.recv_into_timeout(&mut buf, T).unwrap();
                assert_eq!(buf.len(), size);
            }
        }
    });
    echo.join().unwrap();
    assert_eq!(
        n, 0,
        "{url} at {size} B: {n} allocations in {rounds} round trips"
    );
}

#[test]
fn send_and_recv_into_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    for size in [64, 4096, 60_000] {
        check(&format!("unix://{d}/s{size}"), size);
        check(&format!("unix+dgram://{d}/d{size}"), size);
        check(&format!("unix+seqpacket://{d}/q{size}"), size);
        check(&format!("fifo://{d}/f{size}"), size);
        check("tcp://127.0.0.1:0", size);
        check("udp://127.0.0.1:0", size);
    }
}

/// A typed send encodes into this thread's reused buffer: after the first, nothing is
/// allocated.
#[test]
fn typed_send_allocates_nothing() {
    use ipckit::{TypedReceiver, TypedSender};
    type Value = (u64, [u8; 32], i32);
    let dir = tempfile::tempdir().unwrap();
    let mut listener = ipckit::bind(format!("unix://{}/typed", dir.path().display())).unwrap();
    let mut client = ipckit::connect_timeout(listener.endpoint(), T).unwrap();
    let value: Value = (7, [3; 32], -5);
    // The first sizes the buffer.
    client.send_typed_timeout(&value, T).unwrap();
    let mut server = listener.accept_timeout(T).unwrap();
    let rounds = 200;
    let n = allocations_during(|| {
        for _ in 0..rounds {
            client.send_typed_timeout(&value, T).unwrap();
        }
    });
    for _ in 0..=rounds {
        assert_eq!(server.recv_typed_timeout::<Value>(T).unwrap(), value);
    }
    assert_eq!(n, 0, "{n} allocations in {rounds} typed sends");
}

/// A typed receive receives into this thread's reused buffer: after the first, nothing is
/// allocated for a value that owns no heap memory, on a stream, a datagram (whose largest
/// message, 16 MiB by default, is over what the buffer keeps: its size is looked at first) and
/// a shared-memory connection.
#[test]
fn typed_recv_allocates_nothing() {
    use ipckit::{TypedReceiver, TypedSender};
    type Value = (u64, [u8; 32], i32);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let shm = format!("shm://alloc-typed-{}", std::process::id());
    for url in [
        format!("unix://{d}/typed-s"),
        format!("unix+dgram://{d}/typed-d"),
        "udp://127.0.0.1:0".to_owned(),
        shm,
    ] {
        let mut listener = ipckit::bind(&url).unwrap();
        let mut client = ipckit::connect_timeout(listener.endpoint(), T).unwrap();
        let value: Value = (7, [3; 32], -5);
        client.send_typed_timeout(&value, T).unwrap();
        let mut server = listener.accept_timeout(T).unwrap();
        // The first sizes the buffer.
        assert_eq!(server.recv_typed_timeout::<Value>(T).unwrap(), value);
        // One at a time: a Unix datagram socket queues only 10 (net.unix.max_dgram_qlen).
        let rounds = 100;
        let n = allocations_during(|| {
            for _ in 0..rounds {
                client.send_typed_timeout(&value, T).unwrap();
                assert_eq!(server.recv_typed_timeout::<Value>(T).unwrap(), value);
            }
        });
        assert_eq!(
            n, 0,
            "{url}: {n} allocations in {rounds} typed sends and receives"
        );
    }
}
