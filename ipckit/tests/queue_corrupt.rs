//! Torn and corrupt queue files: the last segment cut at every byte offset of its last
//! record, and random bits flipped anywhere in the segments. Opening recovers the valid
//! prefix (and says so) or fails with `Error::CorruptRecord` naming the file and the offset
//! of the damaged record; reading never skips a good record, and nothing panics. Each case
//! runs with the control file kept (the cheap check of the tail must notice) and removed
//! (recovery from the segments alone, as after a reboot).

mod common;

use common::Rng;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipckit::queue::{Consumer, Durability, Producer, QueueOptions};
use ipckit::Error;

const T: Duration = Duration::from_secs(10);

fn opts() -> QueueOptions {
    QueueOptions::new()
        .durability(Durability::Os)
        .segment_size(4096)
}

fn message(i: u64) -> Vec<u8> {
    let len = (i * 37 % 150) as usize;
    (0..len)
        .map(|k| (i as u8).wrapping_mul(7) ^ k as u8)
        .collect()
}

/// One record as written: where it is and what it carries.
#[derive(Clone, Debug)]
struct Placed {
    file: PathBuf,
    offset: u64,
    len: u64,
    seq: u64,
}

/// A queue of `n` messages, and where each record landed (from the segment files).
fn build(dir: &Path, n: u64) -> Vec<Placed> {
    let mut p = Producer::open(dir, &opts()).unwrap();
    for i in 1..=n {
        assert_eq!(p.send(&message(i)).unwrap(), i);
    }
    drop(p);
    let mut placed = Vec::new();
    for seg in segments(dir) {
        let bytes = std::fs::read(&seg).unwrap();
        let mut at = 64usize;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
            let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
            placed.push(Placed {
                file: seg.clone(),
                offset: at as u64,
                len: 16 + len,
                seq,
            });
            at += 16 + len as usize;
        }
    }
    assert_eq!(placed.len() as u64, n);
    placed
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Copies the queue directory (files and the groups directory).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Where a run stopped.
#[derive(Debug)]
enum Outcome {
    /// Open and reading succeeded: the messages delivered, and what recovery reported.
    Read {
        got: Vec<(u64, Vec<u8>)>,
        recovered: Option<ipckit::queue::Recovery>,
    },
    /// `CorruptRecord` (at open or while reading), after these deliveries.
    Corrupt {
        file: PathBuf,
        offset: u64,
        got: Vec<(u64, Vec<u8>)>,
    },
}

/// Opens the (damaged) queue as a producer then a consumer, and reads everything.
fn open_and_read(dir: &Path) -> Outcome {
    let corrupt = |e: Error, got| match e {
        Error::CorruptRecord { file, offset, .. } => Outcome::Corrupt { file, offset, got },
        other => panic!("expected CorruptRecord, got {other:?}"),
    };
    let p = match Producer::open(dir, &opts()) {
        Ok(p) => p,
        Err(e) => return corrupt(e, Vec::new()),
    };
    let recovered = p.recovery().cloned();
    let last = p.last_seq();
    drop(p);
    let mut c = match Consumer::open(dir, "check", &opts()) {
        Ok(c) => c,
        Err(e) => return corrupt(e, Vec::new()),
    };
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while c.position() <= last {
        match c.recv_timeout(&mut buf, T) {
            Ok(seq) => got.push((seq, buf.clone())),
            Err(e) => return corrupt(e, got),
        }
    }
    assert!(matches!(c.try_recv_into(&mut buf), Err(Error::WouldBlock)));
    Outcome::Read { got, recovered }
}

/// `got` is messages 1, 2, … exactly: nothing skipped, nothing changed.
#[track_caller]
fn assert_prefix(got: &[(u64, Vec<u8>)], context: &str) {
    for (k, (seq, m)) in got.iter().enumerate() {
        let want = k as u64 + 1;
        assert_eq!(*seq, want, "{context}: a record was skipped");
        assert_eq!(*m, message(want), "{context}: record {want} changed");
    }
}

#[test]
fn a_last_segment_cut_anywhere_in_its_last_record_recovers_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let n = 24; // message 24 is 72 bytes long
    let placed = build(&pristine, n);
    let last = placed.last().unwrap().clone();
    let rel = last.file.strip_prefix(&pristine).unwrap().to_owned();
    let mut cases = 0;
    for cut in last.offset..last.offset + last.len {
        for keep_ctl in [true, false] {
            let dir = tmp.path().join(format!("cut-{cut}-{keep_ctl}"));
            copy_dir(&pristine, &dir);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(&rel))
                .unwrap();
            f.set_len(cut).unwrap();
            drop(f);
            if !keep_ctl {
                std::fs::remove_file(dir.join("queue.ctl")).unwrap();
            }
            let context = format!("cut at {cut}, control file kept: {keep_ctl}");
            let mut p = Producer::open(&dir, &opts()).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(p.last_seq(), n - 1, "{context}");
            match p.recovery() {
                None => assert_eq!(cut, last.offset, "{context}: a cut end must be reported"),
                Some(r) => {
                    assert_eq!(r.file, dir.join(&rel), "{context}");
                    assert_eq!(r.offset, last.offset, "{context}");
                    assert_eq!(r.dropped_bytes, cut - last.offset, "{context}");
                }
            }
            // The queue goes on: the next message takes the lost one's number.
            assert_eq!(p.send(b"next").unwrap(), n, "{context}");
            drop(p);
            match open_and_read(&dir) {
                Outcome::Read { got, recovered } => {
                    assert!(recovered.is_none(), "{context}: recovered twice");
                    assert_eq!(got.len() as u64, n, "{context}");
                    assert_prefix(&got[..n as usize - 1], &context);
                    assert_eq!(got[n as usize - 1], (n, b"next".to_vec()), "{context}");
                }
                other => panic!("{context}: {other:?}"),
            }
            std::fs::remove_dir_all(&dir).unwrap();
            cases += 1;
        }
    }
    assert_eq!(cases, 2 * last.len);
}

#[test]
fn flipped_bits_are_recovered_from_or_reported_never_skipped() {
    let flips: u64 = common::env_or("IPCKIT_QUEUE_FLIPS", 400);
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let n = 240;
    let placed = build(&pristine, n);
    let segs = segments(&pristine);
    assert!(segs.len() >= 5, "several segments: {segs:?}");
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    let (mut recovered_cases, mut corrupt_cases) = (0, 0);
    for case in 0..flips {
        // One case in eight aims at the last record, whose damage is cut off, not refused.
        let (seg, at) = if case % 8 == 0 {
            let r = placed.last().unwrap();
            (&r.file, r.offset + rng.below(r.len))
        } else {
            let seg = &segs[rng.below(segs.len() as u64) as usize];
            (seg, rng.below(std::fs::metadata(seg).unwrap().len()))
        };
        let bit = rng.below(8);
        let keep_ctl = rng.below(2) == 0;
        let context = format!(
            "case {case}: bit {bit} of byte {at} of {}, control file kept: {keep_ctl}",
            seg.file_name().unwrap().to_string_lossy()
        );
        let dir = tmp.path().join(format!("flip-{case}"));
        copy_dir(&pristine, &dir);
        let rel = seg.strip_prefix(&pristine).unwrap();
        let mut bytes = std::fs::read(dir.join(rel)).unwrap();
        bytes[at as usize] ^= 1 << bit;
        std::fs::write(dir.join(rel), &bytes).unwrap();
        if !keep_ctl {
            std::fs::remove_file(dir.join("queue.ctl")).unwrap();
        }
        // Which record (or header) the flip hit.
        let hit = placed
            .iter()
            .find(|r| r.file == *seg && (r.offset..r.offset + r.len).contains(&at));
        let last_record = hit.is_some_and(|r| r.seq == n);
        match open_and_read(&dir) {
            Outcome::Read { got, recovered } => {
                assert!(
                    last_record,
                    "{context}: the flip went unnoticed or cost good records: {} delivered, \
                     recovery {recovered:?}",
                    got.len()
                );
                let r = recovered.unwrap_or_else(|| panic!("{context}: cut without a report"));
                assert_eq!(r.offset, hit.unwrap().offset, "{context}");
                assert_eq!(got.len() as u64, n - 1, "{context}");
                assert_prefix(&got, &context);
                recovered_cases += 1;
            }
            Outcome::Corrupt { file, offset, got } => {
                assert!(
                    !last_record,
                    "{context}: a damaged end must be cut, not refused"
                );
                assert_eq!(file, dir.join(rel), "{context}: wrong file named");
                let (want_offset, first_bad) = match hit {
                    Some(r) => (r.offset, r.seq),
                    // The segment header.
                    None => (0, placed.iter().find(|r| r.file == *seg).unwrap().seq),
                };
                assert_eq!(offset, want_offset, "{context}: wrong offset named");
                assert!(
                    (got.len() as u64) < first_bad,
                    "{context}: read past the damage"
                );
                assert_prefix(&got, &context);
                corrupt_cases += 1;
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("{flips} flips: {recovered_cases} cut a damaged end, {corrupt_cases} reported");
    assert!(recovered_cases + corrupt_cases == flips && corrupt_cases > 0 && recovered_cases > 0);
}
