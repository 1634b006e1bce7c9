//! Writes the seed corpora of the fuzz targets (`fuzz/corpus/<target>/`) from real traffic:
//! frames captured on a Unix socket that the library writes to, typed messages as the
//! library encodes them, rings filled by the real producer code, and durable-queue segment
//! files written by a real producer. Run by `fuzz/gen-corpus.sh`.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipckit::queue::{Consumer, Durability, Producer, QueueOptions};
use ipckit::{MessageSender, TypedSender};
use serde::Serialize;

fn write_seed(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Sends messages with the library over `unix://` to a plain socket and returns the bytes
/// that crossed the wire.
fn capture(send: impl FnOnce(&mut ipckit::Connection)) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let mut conn = ipckit::connect(format!("unix://{}", path.display())).unwrap();
    let (mut raw, _) = listener.accept().unwrap();
    send(&mut conn);
    drop(conn);
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut wire = Vec::new();
    raw.read_to_end(&mut wire).unwrap();
    wire
}

#[derive(Serialize)]
struct Sample {
    id: u32,
    name: String,
    values: Vec<i64>,
    flag: Option<bool>,
}

#[derive(Serialize)]
enum Request {
    Ping,
    Get { key: String, version: Option<u64> },
    Put(String, Vec<u8>),
}

fn queue_input(dir: &Path, cut: usize) -> Vec<u8> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let mut out = vec![0u8];
    for f in files.iter().rev().take(3).rev() {
        let base: u32 = f.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let mut bytes = std::fs::read(f).unwrap();
        if f == files.last().unwrap() {
            bytes.truncate(bytes.len().saturating_sub(cut));
        }
        out[0] += 1;
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    let group = dir.join("groups/g");
    if let Ok(bytes) = std::fs::read(group) {
        out[0] += 1;
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Real RPC traffic: a `BlockingClient` calls a `Server` (in a tokio runtime) through a
/// relay that records every frame both ways: requests, responses, and the error responses
/// of a panicking handler and of a request the server cannot decode.
fn rpc_traffic() -> Vec<Vec<u8>> {
    use ipckit::rpc::{BlockingClient, Server};
    use ipckit::MessageReceiver;
    let t = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let back = format!("unix://{}/server.sock", dir.path().display());
    let front = format!("unix://{}/relay.sock", dir.path().display());
    let server_url = back.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(&server_url).unwrap();
            let _ = server
                .serve(|(a, b): (i64, i64)| async move {
                    assert!(a != 0, "this handler refuses a zero");
                    a.wrapping_add(b)
                })
                .await;
        });
    });
    let mut listener = ipckit::bind(&front).unwrap();
    let relay = std::thread::spawn(move || {
        let mut frames = Vec::new();
        while let Ok(mut client) = listener.accept_timeout(Duration::from_secs(2)) {
            let mut server = ipckit::connect_timeout(&back, t).unwrap();
            while let Ok(req) = client.recv_timeout(t) {
                server.send(&req).unwrap();
                let resp = server.recv_timeout(t).unwrap();
                client.send(&resp).unwrap();
                frames.push(req);
                frames.push(resp);
            }
        }
        frames
    });
    let mut calc: BlockingClient<(i64, i64), i64> =
        BlockingClient::connect_timeout(&front, t).unwrap();
    assert_eq!(calc.call(&(2, 3)).unwrap(), 5);
    assert_eq!(calc.call(&(-40, i64::MAX)).unwrap(), i64::MAX - 40);
    assert!(calc.call(&(0, 1)).is_err(), "the handler panics");
    drop(calc);
    let mut wrong: BlockingClient<(), i64> = BlockingClient::connect_timeout(&front, t).unwrap();
    assert!(
        wrong.call(&()).is_err(),
        "the server cannot decode the request"
    );
    drop(wrong);
    relay.join().unwrap()
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));

    // URLs: every scheme, with and without options, and some near-misses.
    let urls = [
        "pipe:",
        "fifo:///tmp/ipckit-demo.fifo?mode=0640",
        "unix:///run/ipckit/a.sock",
        "unix+dgram:///tmp/d.sock?max_msg=64k",
        "unix+seqpacket:///tmp/s.sock",
        "tcp://127.0.0.1:7000",
        "tcp://[::1]:7000?max_msg=1M",
        "udp://localhost:9999",
        "shm://demo?capacity=4M&wait=spin&spin_us=50",
        "shm+mpsc://jobs?wait=block",
        "mmap:///tmp/ring.map?capacity=64k",
        "mq:///orders?depth=10&max_msg=8192",
        "queue:///var/tmp/q?durability=os&group=workers",
        "tcp://host",
        "unix://relative",
        "shm://a/b",
        "bogus://x",
    ];
    for (i, u) in urls.iter().enumerate() {
        write_seed(&root, "endpoint_url", &format!("url-{i:02}"), u.as_bytes());
    }

    // Frames as the library writes them on a stream.
    let sizes = [0usize, 1, 5, 64, 300, 4096, 70_000];
    let wire = capture(|c| {
        for (i, n) in sizes.iter().enumerate() {
            c.send(&vec![i as u8; *n]).unwrap();
        }
    });
    let small = capture(|c| {
        for m in [&b"hello"[..], b"", b"world!", &[0xff; 40]] {
            c.send(m).unwrap();
        }
    });
    let typed = capture(|c| {
        c.send_typed(&Sample {
            id: 7,
            name: "ipckit ✓".into(),
            values: vec![-1, 0, i64::MAX],
            flag: Some(true),
        })
        .unwrap();
        c.send_typed(&Request::Ping).unwrap();
        c.send_typed(&Request::Get {
            key: "k".into(),
            version: Some(3),
        })
        .unwrap();
        c.send_typed(&Request::Put("v".into(), vec![1, 2, 3]))
            .unwrap();
        c.send_typed(&"just a string").unwrap();
        c.send_typed(&vec![1u8, 2, 3]).unwrap();
        c.send_typed(&(42u32, "x".to_string(), vec![1u16, 500]))
            .unwrap();
    });
    for (name, max, bytes) in [
        ("small", 0xffu8, &small),
        ("sizes", 0xff, &wire),
        ("typed", 0xff, &typed),
        ("small-max40", 40, &small),
    ] {
        let mut seed = vec![max];
        seed.extend_from_slice(bytes);
        write_seed(&root, "framing_decode", name, &seed);
        // frame_reader: the same streams, read in small chunks with interruptions.
        let mut seed = vec![max, 16];
        seed.extend_from_slice(&[0x12, 0x00, 0x1a, 0x01, 0x82, 0x0a, 0x00, 0xfa]);
        seed.extend_from_slice(&[0x22, 0x09, 0x32, 0x00, 0x42, 0x01, 0x52, 0x8a]);
        seed.extend_from_slice(bytes);
        write_seed(&root, "frame_reader", name, &seed);
    }

    // Typed messages: the payloads of the typed frames, with the selector of their type.
    let frames = ipckit::framing::decode_frames(&typed, 1 << 20).unwrap();
    for (i, (f, which)) in frames.iter().zip([0u8, 1, 1, 1, 2, 3, 4]).enumerate() {
        let mut seed = vec![which];
        seed.extend_from_slice(f);
        write_seed(&root, "typed_decode", &format!("typed-{i}"), &seed);
    }

    // Rings filled by the real producer, including ones that wrapped.
    let msgs: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; (i * 13) % 90]).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    for (i, (cap, n)) in [(8u8, 3usize), (8, 40), (10, 40), (6, 5), (12, 1)]
        .iter()
        .enumerate()
    {
        let seed = ipckit::fuzzing::shm_ring_seed(*cap, &refs[..*n]);
        write_seed(&root, "shm_ring", &format!("ring-{i}"), &seed);
    }

    // Durable queues written by a real producer: several segments, a group file, torn ends.
    let opts = QueueOptions::new()
        .durability(Durability::Os)
        .segment_size(4096)
        .max_message_size(64 << 10);
    for (i, (count, cut, ack)) in [(3u64, 0usize, 0u64), (60, 0, 20), (60, 7, 0), (10, 1, 5)]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Producer::open(dir.path(), &opts).unwrap();
        for k in 0..*count {
            p.send(&vec![k as u8; (k as usize * 31) % 200]).unwrap();
        }
        drop(p);
        if *ack > 0 {
            let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
            let mut buf = Vec::new();
            for _ in 0..*ack {
                c.try_recv_into(&mut buf).unwrap();
            }
            c.ack_delivered().unwrap();
            c.sync_acks().unwrap();
        }
        write_seed(
            &root,
            "queue_recovery",
            &format!("queue-{i}"),
            &queue_input(dir.path(), *cut),
        );
    }
    // RPC frames: captured from a real client and server, and every kind as encoded.
    for (i, f) in rpc_traffic().iter().enumerate() {
        write_seed(&root, "rpc_wire", &format!("traffic-{i}"), f);
    }
    for (i, f) in ipckit::fuzzing::rpc_wire_seeds().iter().enumerate() {
        write_seed(&root, "rpc_wire", &format!("encoded-{i}"), f);
    }
    eprintln!("seed corpora written under {}", root.display());
}
