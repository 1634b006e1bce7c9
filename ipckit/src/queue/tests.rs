//! Unit tests of the durable queue: delivery and acknowledgement, groups, segments and
//! retention, waiting, group commit, and injected faults (a full disk, a failed sync, a
//! writer that dies holding the append lock).

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::ctl::Ctl;
use super::record::SEG_HEADER_LEN;
use super::recovery::Shared;
use super::segment::{list_segments, segment_path};
use super::*;
use crate::sys::fault::{self, Op};
use crate::{MessageReceiver, MessageSender};

const T: Duration = Duration::from_secs(10);

fn os() -> QueueOptions {
    QueueOptions::new().durability(Durability::Os)
}

fn msg(i: u64) -> Vec<u8> {
    let mut v = format!("message {i} ").into_bytes();
    v.resize(10 + (i as usize * 7) % 50, b'x');
    v
}

fn recv(c: &mut Consumer) -> (u64, Vec<u8>) {
    let mut buf = Vec::new();
    let seq = c.recv_timeout(&mut buf, T).expect("recv");
    (seq, buf)
}

#[test]
fn delivers_in_order_and_redelivers_what_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::open(dir.path(), &os()).unwrap();
    for i in 1..=10 {
        assert_eq!(p.send(&msg(i)).unwrap(), i);
    }
    let mut c = Consumer::open(dir.path(), "g", &os()).unwrap();
    for i in 1..=4 {
        assert_eq!(recv(&mut c), (i, msg(i)));
    }
    c.ack(3).unwrap();
    assert_eq!(c.committed(), 4);
    assert!(matches!(c.ack(5), Err(Error::Unsupported { .. })));
    drop(c);
    // A restart resumes at the first message not acknowledged: 4 comes again.
    let mut c = Consumer::open(dir.path(), "g", &os()).unwrap();
    assert_eq!(c.position(), 4);
    for i in 4..=10 {
        assert_eq!(recv(&mut c), (i, msg(i)));
    }
    let mut buf = Vec::new();
    assert!(matches!(c.try_recv_into(&mut buf), Err(Error::WouldBlock)));
    let t0 = Instant::now();
    assert!(matches!(
        c.recv_timeout(&mut buf, Duration::from_millis(50)),
        Err(Error::Timeout { .. })
    ));
    assert!(t0.elapsed() >= Duration::from_millis(50));
    c.rewind().unwrap();
    assert_eq!(recv(&mut c).0, 4);
    c.ack_delivered().unwrap();
    assert_eq!(c.committed(), 5);
}

#[test]
fn groups_are_independent_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::open(dir.path(), &os()).unwrap();
    for i in 1..=3 {
        p.send(&msg(i)).unwrap();
    }
    let mut a = Consumer::open(dir.path(), "a", &os()).unwrap();
    assert!(matches!(
        Consumer::open(dir.path(), "a", &os()),
        Err(Error::AddressInUse { .. })
    ));
    let mut b = Consumer::open(dir.path(), "b", &os()).unwrap();
    assert_eq!(recv(&mut a).0, 1);
    a.ack(1).unwrap();
    assert_eq!(recv(&mut b).0, 1);
    assert!(matches!(
        Consumer::open(dir.path(), "bad/name", &os()),
        Err(Error::InvalidName { .. })
    ));
    let st = stat(dir.path()).unwrap();
    assert_eq!(st.last_seq, 3);
    let depth: Vec<(String, u64)> = st
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.depth))
        .collect();
    assert_eq!(depth, vec![("a".into(), 2), ("b".into(), 3)]);
    assert!(matches!(
        remove_group(dir.path(), "a"),
        Err(Error::AddressInUse { .. })
    ));
    drop(a);
    remove_group(dir.path(), "a").unwrap();
    // Taken again after its holder went; a removed group starts over at the oldest message.
    let mut a = Consumer::open(dir.path(), "a", &os()).unwrap();
    assert_eq!(recv(&mut a).0, 1);
}

#[test]
fn segments_roll_and_consumed_ones_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = os().segment_size(4096);
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    let mut c = Consumer::open(dir.path(), "only", &opts).unwrap();
    let big = vec![7u8; 1500];
    for i in 1..=20 {
        assert_eq!(p.send(&big).unwrap(), i);
    }
    // 1500-byte records, at most two per 4 KiB segment.
    let segs = list_segments(dir.path()).unwrap();
    assert_eq!(segs.len(), 10, "{segs:?}");
    let st = stat(dir.path()).unwrap();
    assert_eq!(st.segments.iter().map(|s| s.records).sum::<u64>(), 20);
    assert!(st.segments.iter().all(|s| s.bytes <= 4096));
    // A message larger than a segment goes alone into one.
    let huge = vec![1u8; 10_000];
    assert_eq!(p.send(&huge).unwrap(), 21);
    assert_eq!(p.send(b"after").unwrap(), 22);
    for i in 1..=20 {
        let (seq, m) = recv(&mut c);
        assert_eq!((seq, m.len()), (i, 1500));
        c.ack(seq).unwrap();
    }
    assert_eq!(recv(&mut c), (21, huge));
    assert_eq!(recv(&mut c), (22, b"after".to_vec()));
    c.ack(22).unwrap();
    // Everything but the segment being written is consumed, and gone.
    assert_eq!(list_segments(dir.path()).unwrap(), vec![22]);
    // Producers remove consumed segments too, when they start one.
    drop(c);
    p.send(&big).unwrap();
    p.send(&big).unwrap();
    let mut c = Consumer::open(dir.path(), "only", &opts).unwrap();
    assert_eq!(recv(&mut c).0, 23);
    assert_eq!(recv(&mut c).0, 24);
    c.ack(24).unwrap();
    drop(c);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![22]);
    assert_eq!(p.send(&big).unwrap(), 25);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![25]);
}

#[test]
fn size_retention_drops_unread_segments_and_the_consumer_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let opts = os().segment_size(4096).retain_bytes(3 * 4096);
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    // The group exists (committed 1) but reads nothing yet.
    drop(Consumer::open(dir.path(), "slow", &opts).unwrap());
    for _ in 0..40 {
        p.send(&[3u8; 1500]).unwrap();
    }
    let st = stat(dir.path()).unwrap();
    assert!(st.segments.len() <= 4, "{:?}", st.segments);
    let mut c = Consumer::open(dir.path(), "slow", &opts).unwrap();
    let (first, _) = recv(&mut c);
    assert_eq!(first, st.first_seq);
    assert_eq!(c.skipped(), st.first_seq - 1);
}

#[test]
fn a_blocked_consumer_wakes_when_a_message_comes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Consumer::open(dir.path(), "g", &os()).unwrap();
    let path = dir.path().to_owned();
    let sender = std::thread::spawn(move || {
        let mut p = Producer::open(&path, &os()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        p.send(b"late").unwrap();
    });
    let t0 = Instant::now();
    let mut buf = Vec::new();
    assert_eq!(c.recv_timeout(&mut buf, T).unwrap(), 1);
    assert_eq!(buf, b"late");
    assert!(t0.elapsed() < Duration::from_secs(5));
    sender.join().unwrap();
}

#[test]
fn group_commit_shares_syncs_between_concurrent_senders() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = dir.path().to_owned();
            let opts = opts.clone();
            std::thread::spawn(move || {
                let mut p = Producer::open(&path, &opts).unwrap();
                for i in 0..25u64 {
                    p.send(format!("{t} {i}").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (shared, _) = Shared::open(dir.path(), &opts).unwrap();
    assert_eq!(shared.ctl.last_seq(), 100);
    assert!(
        shared
            .ctl
            .synced_seq()
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 100
    );
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    let mut next = [0u64; 4];
    for _ in 0..100 {
        let (_, m) = recv(&mut c);
        let text = String::from_utf8(m).unwrap();
        let (t, i) = text.split_once(' ').unwrap();
        let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "each producer's order is kept");
        next[t] += 1;
    }
}

#[test]
fn a_full_disk_is_an_error_and_the_queue_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::open(dir.path(), &os()).unwrap();
    p.send(b"one").unwrap();
    fault::inject(Op::Write, rustix::io::Errno::NOSPC);
    assert!(matches!(p.send(b"two"), Err(Error::StorageFull { .. })));
    p.send(b"three").unwrap();
    let mut c = Consumer::open(dir.path(), "g", &os()).unwrap();
    assert_eq!(recv(&mut c), (1, b"one".to_vec()));
    assert_eq!(recv(&mut c), (2, b"three".to_vec()));
}

#[test]
fn a_failed_sync_reaches_the_sender_and_closes_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    p.send(b"synced").unwrap();
    fault::inject(Op::Sync, rustix::io::Errno::IO);
    let e = p.send(b"maybe lost").unwrap_err();
    assert!(matches!(e, Error::SyncFailed { .. }), "{e}");
    assert!(e.to_string().contains("fdatasync"), "{e}");
    // Never retried silently: the next record goes to a new segment, synced on its own.
    assert_eq!(p.send(b"after").unwrap(), 3);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 3]);
    // The record whose sync failed stays in the log (its sender was told it may be lost).
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    assert_eq!(recv(&mut c).1, b"synced");
    assert_eq!(recv(&mut c).1, b"maybe lost");
    assert_eq!(recv(&mut c).1, b"after");
}

#[test]
fn a_failed_sync_when_a_segment_is_closed_is_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new().segment_size(4096);
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    p.send(&[1u8; 3000]).unwrap();
    fault::inject(Op::Sync, rustix::io::Errno::IO);
    assert!(matches!(
        p.send(&[2u8; 3000]),
        Err(Error::SyncFailed { .. })
    ));
    assert_eq!(p.send(&[3u8; 3000]).unwrap(), 2);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
}

/// Reads everything there is, then checks nothing more comes: what the log holds.
fn drain(c: &mut Consumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    loop {
        match c.recv_timeout(&mut buf, Duration::from_millis(50)) {
            Ok(_) => out.push(buf.clone()),
            Err(Error::Timeout { .. }) => return out,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn a_write_error_is_typed_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    for i in 1..=3 {
        p.send(&msg(i)).unwrap();
    }
    fault::inject(Op::Write, rustix::io::Errno::IO);
    let e = p.send(b"not written").unwrap_err();
    match &e {
        Error::WriteFailed { path, source } => {
            assert_eq!(path, &segment_path(dir.path(), 1));
            assert_eq!(source.raw_os_error(), Some(libc::EIO));
        }
        e => panic!("expected WriteFailed, got {e:?}"),
    }
    assert_eq!(
        p.send(&msg(4)).unwrap(),
        4,
        "the failed message took no number"
    );
    drop(p);
    let p = Producer::open(dir.path(), &opts).unwrap();
    assert!(p.recovery().is_none(), "nothing to cut: {:?}", p.recovery());
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    assert_eq!(drain(&mut c), (1..=4).map(msg).collect::<Vec<_>>());
}

#[test]
fn a_torn_write_is_taken_back_before_anyone_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    p.send(b"one").unwrap();
    let seg = segment_path(dir.path(), 1);
    let len = std::fs::metadata(&seg).unwrap().len();
    fault::inject(Op::TornWrite, rustix::io::Errno::IO);
    assert!(matches!(
        p.send(&[7u8; 1000]),
        Err(Error::WriteFailed { .. })
    ));
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "part taken back"
    );
    assert_eq!(p.send(b"two").unwrap(), 2);
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    assert_eq!(drain(&mut c), vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn a_torn_write_that_cannot_be_taken_back_is_repaired_by_the_next_sender() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    p.send(b"one").unwrap();
    let seg = segment_path(dir.path(), 1);
    let len = std::fs::metadata(&seg).unwrap().len();
    fault::inject(Op::TornWrite, rustix::io::Errno::IO);
    fault::inject(Op::Truncate, rustix::io::Errno::IO);
    assert!(matches!(
        p.send(&[7u8; 1000]),
        Err(Error::WriteFailed { .. })
    ));
    assert!(
        std::fs::metadata(&seg).unwrap().len() > len,
        "the torn part is there"
    );
    // A consumer reads only what was published: the torn bytes are invisible to it.
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    assert_eq!(drain(&mut c), vec![b"one".to_vec()]);
    // The next holder of the append lock (another producer here) repairs first.
    let mut q = Producer::open(dir.path(), &opts).unwrap();
    assert_eq!(q.send(b"two").unwrap(), 2);
    assert_eq!(p.send(b"three").unwrap(), 3);
    assert_eq!(drain(&mut c), vec![b"two".to_vec(), b"three".to_vec()]);
    drop((p, q, c));
    ctl_missing_rebuilds(dir.path());
    let p = Producer::open(dir.path(), &opts).unwrap();
    assert!(p.recovery().is_none(), "no damage left: {:?}", p.recovery());
}

#[test]
fn a_failed_group_commit_reaches_every_sender_it_covered() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    let mut a = Producer::open(dir.path(), &opts).unwrap();
    a.send(b"synced").unwrap();
    let (syncing_tx, syncing_rx) = std::sync::mpsc::channel();
    let path = dir.path().to_owned();
    let opts_a = opts.clone();
    // A syncs for both: its fdatasync waits until B's record is in the log, then fails.
    let a_thread = std::thread::spawn(move || {
        let (watch, _) = Shared::open(&path, &opts_a).unwrap();
        fault::inject_with(Op::Sync, move || {
            syncing_tx.send(()).unwrap();
            let until = Instant::now() + T;
            while watch.ctl.last_seq() < 3 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            // B is now waiting for this sync (it holds the sync lock).
            std::thread::sleep(Duration::from_millis(20));
            rustix::io::Errno::IO
        });
        a.send(b"a").map(|_| a)
    });
    syncing_rx.recv_timeout(T).unwrap();
    let mut b = Producer::open(dir.path(), &opts).unwrap();
    let e = b.send(b"b").unwrap_err();
    assert!(matches!(e, Error::SyncFailed { .. }), "B: {e}");
    let e = a_thread.join().unwrap().unwrap_err();
    assert!(matches!(e, Error::SyncFailed { .. }), "A: {e}");
    // Never retried silently: what comes next goes to a new segment.
    assert_eq!(b.send(b"after").unwrap(), 4);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 4]);
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    let got = drain(&mut c);
    assert_eq!(
        got,
        [&b"synced"[..], b"a", b"b", b"after"].map(<[u8]>::to_vec)
    );
}

#[test]
fn a_failed_sync_while_creating_the_first_segment_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let opts = QueueOptions::new();
    fault::inject(Op::Sync, rustix::io::Errno::IO);
    let e = Producer::open(dir.path(), &opts).unwrap_err();
    assert!(matches!(e, Error::SyncFailed { .. }), "{e}");
    assert_eq!(list_segments(dir.path()).unwrap(), Vec::<u64>::new());
    let temporaries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(temporaries.is_empty(), "{temporaries:?}");
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    assert_eq!(p.send(b"one").unwrap(), 1);
}

#[test]
fn sizes_are_enforced_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::open(dir.path(), &os()).unwrap();
    p.send(&[0u8; 100]).unwrap();
    let small = os().max_message_size(10);
    let mut tiny = Producer::open(dir.path(), &small).unwrap();
    assert!(matches!(
        tiny.send(&[0u8; 11]),
        Err(Error::MessageTooLarge { max: 10, .. })
    ));
    let mut c = Consumer::open(dir.path(), "g", &small).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        c.recv_timeout(&mut buf, T),
        Err(Error::IncomingTooLarge { size: 100, max: 10 })
    ));
}

#[test]
fn a_writer_that_dies_holding_the_lock_is_repaired_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::open(dir.path(), &os()).unwrap();
    p.send(b"before").unwrap();
    let path = dir.path().to_owned();
    // A thread that exits holding a robust mutex leaves it marked as its holder dying, just
    // as a killed process does; it also leaves half a record behind.
    std::thread::spawn(move || {
        let (shared, _) = Shared::open(&path, &os()).unwrap();
        let guard = shared.ctl.lock_append(Wait::Forever).unwrap();
        let t = shared.ctl.tail();
        let f = crate::sys::file_open(&segment_path(&path, t.cur_base), true, "seg").unwrap();
        crate::sys::pwrite_all(f.as_fd(), &[0xAB; 9], &[], t.cur_end).unwrap();
        std::mem::forget(guard);
        std::mem::forget(shared);
    })
    .join()
    .unwrap();
    assert_eq!(p.send(b"after").unwrap(), 2);
    let mut c = Consumer::open(dir.path(), "g", &os()).unwrap();
    assert_eq!(recv(&mut c), (1, b"before".to_vec()));
    assert_eq!(recv(&mut c), (2, b"after".to_vec()));
}

/// A writer that dies holding the append lock after writing a whole record it never
/// published: a consumer that read that record ahead (with the one before it) still gets the
/// record the next writer puts in its place, and the records after it from the right
/// offsets. And a segment the dead writer was creating is removed.
#[test]
fn a_dead_writers_unpublished_record_read_ahead_is_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Producer::open(dir.path(), &os()).unwrap();
    p.send(b"before").unwrap();
    let path = dir.path().to_owned();
    let stale_tmp = dir.path().join(".segment.tmp-999999-0");
    let tmp = stale_tmp.clone();
    std::thread::spawn(move || {
        let (shared, _) = Shared::open(&path, &os()).unwrap();
        let guard = shared.ctl.lock_append(Wait::Forever).unwrap();
        let t = shared.ctl.tail();
        let f = crate::sys::file_open(&segment_path(&path, t.cur_base), true, "seg").unwrap();
        let dead = b"the dead writer's record, longer than the one that replaces it";
        let header = super::record::record_header(t.last_seq + 1, dead);
        crate::sys::pwrite_all(f.as_fd(), &header, dead, t.cur_end).unwrap();
        std::fs::write(&tmp, b"half a segment").unwrap();
        std::mem::forget(guard);
        std::mem::forget(shared);
    })
    .join()
    .unwrap();
    let mut c = Consumer::open(dir.path(), "g", &os()).unwrap();
    // Reads record 1, and what follows it in the file ahead.
    assert_eq!(recv(&mut c), (1, b"before".to_vec()));
    let mut buf = Vec::new();
    assert!(matches!(c.try_recv_into(&mut buf), Err(Error::WouldBlock)));
    assert_eq!(p.send(b"after").unwrap(), 2);
    assert!(
        !stale_tmp.exists(),
        "the dead writer's segment creation is cleaned up"
    );
    assert_eq!(p.send(b"and then").unwrap(), 3);
    assert_eq!(recv(&mut c), (2, b"after".to_vec()));
    assert_eq!(recv(&mut c), (3, b"and then".to_vec()));
}

#[test]
fn a_temporary_segment_name_left_by_a_dead_process_with_the_same_id_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = os().segment_size(4096);
    // (Opening a queue without a control file removes every temporary: put them after.)
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    // The next temporary names this process will use (other tests in it may take some).
    let next = super::segment::next_temp_number();
    for n in next..next + 256 {
        let name = format!(".segment.tmp-{}-{n}", std::process::id());
        std::fs::write(dir.path().join(name), b"left by a dead process").unwrap();
    }
    for i in 0..20u8 {
        p.send(&[i; 1000]).unwrap();
    }
    assert!(
        list_segments(dir.path()).unwrap().len() > 3,
        "segments rolled"
    );
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    assert_eq!(drain(&mut c).len(), 20);
}

fn ctl_missing_rebuilds(dir: &Path) {
    std::fs::remove_file(dir.join(super::ctl::CTL_NAME)).unwrap();
}

#[test]
fn the_control_file_is_rebuilt_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = os().segment_size(4096);
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    for _ in 0..7 {
        p.send(&[5u8; 1000]).unwrap();
    }
    drop(p);
    ctl_missing_rebuilds(dir.path());
    let st = stat(dir.path()).unwrap();
    assert_eq!(st.last_seq, 7, "stat scans when there is no control file");
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    assert!(p.recovery().is_none());
    assert_eq!(p.last_seq(), 7);
    assert_eq!(p.send(b"8").unwrap(), 8);
    assert!(Ctl::open_current(dir.path()).unwrap().is_some());
}

#[test]
fn through_the_message_api_the_next_recv_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("queue://{}/q?durability=os&group=api", dir.path().display());
    let mut tx = crate::connect(&url).unwrap();
    for i in 1..=3 {
        tx.send(&msg(i)).unwrap();
    }
    assert!(matches!(tx.try_recv(), Err(Error::Unsupported { .. })));
    assert!(tx.as_queue_consumer().is_none());
    let mut listener = crate::bind(&url).unwrap();
    let mut rx = listener.accept_timeout(T).unwrap();
    assert!(matches!(
        listener.try_accept(),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(rx.try_send(b"x"), Err(Error::Unsupported { .. })));
    assert_eq!(rx.recv_timeout(T).unwrap(), msg(1));
    assert_eq!(rx.recv_timeout(T).unwrap(), msg(2)); // acknowledges 1
    drop((rx, listener));
    // 2 was delivered but not acknowledged: it comes again.
    let mut rx = crate::bind(&url).unwrap().accept().unwrap();
    assert_eq!(rx.recv_timeout(T).unwrap(), msg(2));
    rx.as_queue_consumer().unwrap().ack_delivered().unwrap();
    drop(rx);
    let mut rx = crate::bind(&url).unwrap().accept().unwrap();
    assert_eq!(rx.recv_timeout(T).unwrap(), msg(3));
    assert_eq!(
        MessageSender::max_message_size(&tx),
        crate::endpoint::DEFAULT_MAX_MESSAGE_SIZE
    );
}

#[test]
fn damage_in_a_closed_segment_is_reported_by_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let opts = os().segment_size(4096);
    let mut p = Producer::open(dir.path(), &opts).unwrap();
    for _ in 0..6 {
        p.send(&[9u8; 1500]).unwrap();
    }
    // Flip a payload byte of record 2, in the first (closed) segment.
    let first = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&first).unwrap();
    let at = SEG_HEADER_LEN as usize + 1516 + 16 + 100;
    bytes[at] ^= 0x10;
    std::fs::write(&first, &bytes).unwrap();
    let mut c = Consumer::open(dir.path(), "g", &opts).unwrap();
    assert_eq!(recv(&mut c).0, 1);
    let mut buf = Vec::new();
    match c.recv_timeout(&mut buf, T) {
        Err(Error::CorruptRecord { file, offset, .. }) => {
            assert_eq!(file, first);
            assert_eq!(offset, SEG_HEADER_LEN + 1516);
        }
        other => panic!("{other:?}"),
    }
}
