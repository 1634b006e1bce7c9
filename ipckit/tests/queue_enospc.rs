//! A full disk: the queue lives on a small tmpfs this test mounts (root only; skipped with a
//! message otherwise). Sends fail with `Error::StorageFull` once it is full, whether the
//! record or a new segment does not fit; everything sent before stays readable; and once
//! the consumer has acknowledged, retention frees space and sending works again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipckit::queue::{stat, Consumer, Durability, Producer, QueueOptions};
use ipckit::Error;

/// A tmpfs mounted for the test, unmounted (lazily if busy) when dropped.
struct Tmpfs {
    path: PathBuf,
    _holder: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: mounting a small tmpfs needs root (CI runs as root)");
            return None;
        }
        let holder = tempfile::tempdir().unwrap();
        let path = holder.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path,
                _holder: holder,
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn message(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(300, (i % 251) as u8);
    v
}

fn fill_until_full(p: &mut Producer) -> u64 {
    for n in 0..100_000u64 {
        match p.send(&message(n)) {
            Ok(_) => {}
            Err(Error::StorageFull { path }) => {
                assert!(path.starts_with(p.dir()), "{}", path.display());
                return n;
            }
            Err(e) => panic!("send {n}: expected StorageFull, got {e}"),
        }
    }
    panic!("a 512 KiB tmpfs never filled up");
}

fn no_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "left behind: {name}");
    }
}

fn run(durability: Durability) {
    let Some(fs) = Tmpfs::mount("512k") else {
        return;
    };
    let dir = fs.path.join("q");
    let opts = QueueOptions::new()
        .durability(durability)
        .segment_size(64 * 1024);
    let mut p = Producer::open(&dir, &opts).unwrap();
    // The group exists before the disk fills (creating its file needs a page).
    let mut c = Consumer::open(&dir, "g", &opts).unwrap();
    let sent = fill_until_full(&mut p);
    assert!(sent > 100, "only {sent} messages fitted");
    // Still full: the error repeats, and nothing half-written is left.
    assert!(matches!(
        p.send(&message(sent)),
        Err(Error::StorageFull { .. })
    ));
    no_temporaries(&dir);
    assert_eq!(stat(&dir).unwrap().last_seq, sent);
    // Everything sent is readable, in order, and nothing else.
    let mut buf = Vec::new();
    for n in 0..sent {
        let seq = c.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
        assert_eq!((seq, &buf), (n + 1, &message(n)));
    }
    assert!(matches!(c.try_recv_into(&mut buf), Err(Error::WouldBlock)));
    // Reopening after the failure recovers nothing: the log was left clean.
    drop(p);
    let mut p = Producer::open(&dir, &opts).unwrap();
    assert!(p.recovery().is_none(), "{:?}", p.recovery());
    // Acknowledging lets retention remove consumed segments; then there is room again.
    c.ack(sent).unwrap();
    let segments = stat(&dir).unwrap().segments.len();
    assert_eq!(segments, 1, "consumed segments are removed");
    let more = fill_until_full(&mut p);
    assert!(more > 100, "only {more} messages fitted after retention");
    let seq = c.recv_timeout(&mut buf, Duration::from_secs(10)).unwrap();
    assert_eq!((seq, &buf), (sent + 1, &message(0)));
}

#[test]
fn a_full_disk_fails_the_send_and_keeps_the_queue_readable_os() {
    run(Durability::Os);
}

#[test]
fn a_full_disk_fails_the_send_and_keeps_the_queue_readable_fsync() {
    run(Durability::Fsync);
}
