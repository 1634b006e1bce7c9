//! Durable-queue recovery over arbitrary segment files: opening a queue directory whose
//! segments (and group file) hold fuzzer-chosen bytes, then reading everything, must give
//! records, a typed error (`CorruptRecord`, `Corrupted`, ...) or a recovery report, never a
//! panic or a hang; when recovery succeeds and the log reads cleanly to its end, a message
//! appended afterwards is delivered with the next sequence number.
//!
//! Input: `files: u8`, then per file `base: u32` (first sequence number, names the file),
//! `len: u16` and `len` bytes; an optional group file after a `base` of 0. Queue options:
//! `os` durability, 4 KiB segments, 64 KiB maximum message.
#![no_main]

use ipckit::queue::{Consumer, Durability, Producer, QueueOptions};
use ipckit::Error;
use libfuzzer_sys::fuzz_target;

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, b) = input.split_at(n.min(input.len()));
    *input = b;
    a
}

fn take_u32(input: &mut &[u8]) -> u32 {
    let mut w = [0u8; 4];
    let b = take(input, 4);
    w[..b.len()].copy_from_slice(b);
    u32::from_le_bytes(w)
}

fn take_u16(input: &mut &[u8]) -> u16 {
    let mut w = [0u8; 2];
    let b = take(input, 2);
    w[..b.len()].copy_from_slice(b);
    u16::from_le_bytes(w)
}

fn opts() -> QueueOptions {
    QueueOptions::new()
        .durability(Durability::Os)
        .segment_size(4096)
        .max_message_size(64 << 10)
}

/// Errors a damaged queue may legitimately give.
fn typed(e: &Error) -> bool {
    !matches!(
        e,
        Error::WouldBlock | Error::Timeout { .. } | Error::Disconnected
    )
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let dir = tempfile::tempdir().expect("tempdir");
    let files = take(&mut input, 1).first().copied().unwrap_or(0) % 5;
    for _ in 0..files {
        let base = take_u32(&mut input);
        let len = take_u16(&mut input) as usize;
        let bytes = take(&mut input, len);
        let path = if base == 0 {
            std::fs::create_dir_all(dir.path().join("groups")).unwrap();
            dir.path().join("groups/g")
        } else {
            dir.path().join(format!("{:020}.seg", base))
        };
        std::fs::write(path, bytes).unwrap();
    }
    let mut consumer = match Consumer::open(dir.path(), "g", &opts()) {
        Ok(c) => c,
        Err(e) => {
            assert!(typed(&e), "open failed with {e:?}");
            return;
        }
    };
    let mut buf = Vec::new();
    let mut clean = false;
    let mut last = None;
    for _ in 0..10_000 {
        match consumer.try_recv_into(&mut buf) {
            Ok(seq) => {
                if let Some(prev) = last {
                    assert_eq!(seq, prev + 1, "sequence numbers not consecutive");
                }
                last = Some(seq);
                assert!(buf.len() <= 64 << 10);
            }
            Err(Error::WouldBlock) => {
                clean = true;
                break;
            }
            Err(e) => {
                assert!(typed(&e), "read failed with {e:?}");
                break;
            }
        }
    }
    if !clean {
        return;
    }
    let mut producer = match Producer::open(dir.path(), &opts()) {
        Ok(p) => p,
        Err(e) => {
            assert!(typed(&e), "producer open failed with {e:?}");
            return;
        }
    };
    let Ok(seq) = producer.send(b"probe") else {
        return;
    };
    assert_eq!(seq, producer.last_seq());
    match consumer.try_recv_into(&mut buf) {
        Ok(got) => {
            assert_eq!(got, seq, "the appended message came with another number");
            assert_eq!(buf, b"probe");
        }
        Err(e) => panic!("appended message {seq} not delivered: {e:?}"),
    }
});
