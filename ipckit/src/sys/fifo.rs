//! Named pipes (FIFOs) in the file system.

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::inotify;
use rustix::fs::{FileType, Mode, OFlags, CWD};
use rustix::io::Errno;
use rustix::process::Pid;

use crate::error::{Error, Result};
use crate::transport::Wait;

fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Fifo => "FIFO",
        _ => "special file",
    }
}

/// Checks that `path` is a FIFO (without following a final symlink).
pub(crate) fn expect_fifo(path: &Path) -> Result<()> {
    let st = rustix::fs::lstat(path).map_err(|e| fs_error("lstat", path, e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::Fifo {
        return Err(Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: file_type_name(t),
        });
    }
    Ok(())
}

pub(crate) fn fs_error(op: &'static str, path: &Path, e: Errno) -> Error {
    match e {
        Errno::NOENT => Error::NotFound {
            path: path.to_owned(),
        },
        Errno::ACCESS | Errno::PERM => Error::PermissionDenied {
            what: format!("{op} {}", path.display()),
        },
        _ => Error::os(op, e),
    }
}

/// `mkfifo(path, mode)` (then `chmod`, so the umask cannot loosen or tighten `mode`).
/// Returns true if this call created it; an existing FIFO is reused, anything else is an error.
pub(crate) fn make_fifo(path: &Path, mode: u32) -> Result<bool> {
    match rustix::fs::mkfifoat(CWD, path, Mode::from_raw_mode(mode)) {
        Ok(()) => {
            rustix::fs::chmod(path, Mode::from_raw_mode(mode))
                .map_err(|e| fs_error("chmod", path, e))?;
            Ok(true)
        }
        Err(Errno::EXIST) => expect_fifo(path).map(|()| false),
        Err(e) => Err(fs_error("mkfifo", path, e)),
    }
}

/// Opens a FIFO without blocking: for reading this always succeeds; for writing it fails
/// with `ENXIO` (mapped to [`Error::ConnectionRefused`]) while no reader has it open.
/// Refuses anything that is not a FIFO. The descriptor is close-on-exec and non-blocking.
pub(crate) fn open_fifo(path: &Path, write: bool) -> Result<OwnedFd> {
    let access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    let fd = rustix::fs::open(
        path,
        access | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NXIO => Error::ConnectionRefused {
            addr: path.display().to_string(),
            reason: "no process has the FIFO open for reading",
        },
        Errno::LOOP => Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: "symbolic link",
        },
        Errno::ISDIR => Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: "directory",
        },
        e => fs_error("open", path, e),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e))?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::Fifo {
        return Err(Error::WrongFileType {
            path: path.to_owned(),
            expected: "FIFO",
            found: file_type_name(t),
        });
    }
    Ok(fd)
}

/// Removes `path` if it is still of type `kind` (so we never delete what someone else put
/// there after us). Errors are ignored: this runs on drop.
pub(crate) fn remove_file_if(path: &Path, kind: FileType) {
    if let Ok(st) = rustix::fs::lstat(path) {
        if FileType::from_raw_mode(st.st_mode) == kind {
            let _ = rustix::fs::unlink(path);
        }
    }
}

/// Waits until the FIFO read end `fd` has bytes to read, as `wait` allows, without
/// `poll(2)` on the FIFO.
///
/// A pipe that has been polled once makes every later write wake its readers, whether they
/// wait or not (the kernel's `pipe->poll_usage`, since Linux 5.16, kept for the pipe's
/// life). In C, one `poll` of a FIFO's read end before a 64-byte stream cut it from 1.4-1.6
/// M to 0.94-1.14 M msg/s here (`scripts/pollusage.c`, see
/// docs/BENCHMARKS.md). So this counts the bytes there (`FIONREAD`, which polls nothing)
/// and sleeps on an inotify watch of the FIFO's inode for writes, looking again at least
/// every [`WATCHED_SLICE`] (a blocking write larger than the pipe is reported only when it
/// returns); where inotify is not to be had (no `/proc`, the per-user instance limit), it
/// sleeps in slices of up to [`UNWATCHED_SLICE`] instead.
pub(crate) fn wait_fifo_data(fd: BorrowedFd<'_>, wait: Wait) -> Result<()> {
    if has_data(fd)? {
        return Ok(());
    }
    if wait == Wait::Never {
        return Err(wait.expired());
    }
    // The watch first, then the look: a write between the two is not missed.
    wait_data_with(fd, wait, watch_writes(fd))
}

/// [`wait_fifo_data`] past its first look, with `watch` (or sleeps where it is `None`).
fn wait_data_with(fd: BorrowedFd<'_>, wait: Wait, watch: Option<Watch>) -> Result<()> {
    let mut nap = Duration::from_micros(50);
    loop {
        if has_data(fd)? {
            return Ok(());
        }
        match &watch {
            Some(w) => w.sleep(wait)?,
            None => {
                std::thread::sleep(wait.slice(nap)?);
                nap = (nap * 2).min(UNWATCHED_SLICE);
            }
        }
    }
}

/// Whether the pipe open on `fd` holds bytes (`FIONREAD`: no `poll`, nothing read).
fn has_data(fd: BorrowedFd<'_>) -> Result<bool> {
    rustix::io::ioctl_fionread(fd)
        .map(|n| n > 0)
        .map_err(|e| Error::os("ioctl(FIONREAD)", e))
}

/// The longest sleep between two looks of [`wait_fifo_data`] without inotify.
const UNWATCHED_SLICE: Duration = Duration::from_millis(10);

/// The longest sleep between two looks of [`wait_fifo_data`] with an inotify watch (see
/// [`Watch::sleep`]).
const WATCHED_SLICE: Duration = Duration::from_millis(10);

std::thread_local! {
    /// The calling thread's inotify instance for [`wait_fifo_data`], made on first use and
    /// kept for the thread's life, between waits without a watch. Closing an instance that
    /// has held a watch waits for the kernel's mark reaper (an SRCU grace period): 5-15 ms
    /// per `close` here (`strace -T` of a FIFO accept that had to wait, and a C loop),
    /// against about 10 us to remove the watch and keep the instance. One instance per
    /// thread, not per process, so no thread reads another's events. (Closed when the
    /// thread exits; that close is quick unless a watch was removed just before: 25-36 us
    /// 0.1 s after one here.)
    static WATCHER: Cell<Option<Watcher>> = const { Cell::new(None) };
}

/// An inotify instance and the process that made it. A child made by `fork` inherits the
/// forking thread's instance; shared with the parent, each could read (and drain) the
/// other's events and sleep through its own wake-up, so the child makes its own.
struct Watcher {
    ino: OwnedFd,
    pid: Pid,
}

/// Runs `f` on the thread's inotify instance, made on first use (and again in a child made
/// by `fork`); `None` if there is none to be had (no inotify, the per-user limit of
/// instances, the thread exiting).
fn with_watcher<R>(f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
    WATCHER
        .try_with(|cell| {
            let pid = rustix::process::getpid();
            // An inherited instance is closed here, in this process only (the parent's
            // stays open).
            let w = match cell.take() {
                Some(w) if w.pid == pid => w,
                _ => {
                    let flags = inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK;
                    Watcher {
                        ino: inotify::init(flags).ok()?,
                        pid,
                    }
                }
            };
            let r = f(w.ino.as_fd());
            cell.set(Some(w));
            Some(r)
        })
        .ok()
        .flatten()
}

/// A watch for writes to one file on the thread's inotify instance; dropping it removes the
/// watch (the instance stays).
struct Watch {
    wd: i32,
}

impl Watch {
    /// Sleeps until the watched file is written to, [`WATCHED_SLICE`] has passed or `wait`
    /// runs out (one slice of [`UNWATCHED_SLICE`], if the thread's instance is gone: only
    /// while the thread exits). Not longer: the kernel reports a write when the `write`
    /// call returns, and a blocking write of more than the pipe holds returns only after
    /// this reader has read, so its first bytes are seen by looking again.
    fn sleep(&self, wait: Wait) -> Result<()> {
        let slice = wait.slice(WATCHED_SLICE)?;
        match with_watcher(|ino| {
            let woke = super::fd::poll_one(ino, PollFlags::IN, Wait::timeout(slice));
            drain_events(ino);
            match woke {
                Ok(_) | Err(Error::Timeout { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        }) {
            Some(woke) => woke,
            None => {
                std::thread::sleep(wait.slice(UNWATCHED_SLICE)?);
                Ok(())
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        with_watcher(|ino| {
            let _ = inotify::remove_watch(ino, self.wd);
            // Whatever the watch queued, and the `IN_IGNORED` its removal queues.
            drain_events(ino);
        });
    }
}

/// A watch on the thread's inotify instance for writes to the file open on `fd`
/// (`IN_MODIFY`, which the kernel sends after every `write` to a pipe or FIFO); `None` if
/// that fails (no inotify, no `/proc`, the per-user limits of instances and watches).
fn watch_writes(fd: BorrowedFd<'_>) -> Option<Watch> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    with_watcher(|ino| inotify::add_watch(ino, path.as_str(), inotify::WatchFlags::MODIFY).ok())
        .flatten()
        .map(|wd| Watch { wd })
}

/// Reads the pending inotify events (their content does not matter), so the next poll
/// sleeps until a new one.
fn drain_events(ino: BorrowedFd<'_>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(ino, &mut buf) {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn fifo(tag: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{tag}.fifo"));
        assert!(make_fifo(&path, 0o600).unwrap());
        (dir, path)
    }

    /// Nothing there: `Never` says so at once, a deadline runs out; a write from another
    /// thread ends the wait, through the inotify watch and through the sleeps without it.
    #[test]
    fn waits_for_data_without_polling_the_fifo() {
        let (_dir, path) = fifo("wait");
        let rx = open_fifo(&path, false).unwrap();
        let tx = open_fifo(&path, true).unwrap();
        assert!(matches!(
            wait_fifo_data(rx.as_fd(), Wait::Never),
            Err(Error::WouldBlock)
        ));
        let t0 = Instant::now();
        let short = Wait::Until(Instant::now() + Duration::from_millis(30));
        assert!(matches!(
            wait_fifo_data(rx.as_fd(), short),
            Err(Error::Timeout { .. })
        ));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        for watched in [true, false] {
            let writer = {
                let tx = tx.try_clone().unwrap();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    rustix::io::write(&tx, b"x").unwrap();
                })
            };
            let watch = if watched {
                watch_writes(rx.as_fd())
            } else {
                None
            };
            assert_eq!(watch.is_some(), watched, "inotify is available here");
            let deadline = Wait::Until(Instant::now() + Duration::from_secs(10));
            wait_data_with(rx.as_fd(), deadline, watch).unwrap();
            writer.join().unwrap();
            let mut b = [0u8; 4];
            assert_eq!(rustix::io::read(&rx, &mut b).unwrap(), 1);
        }
    }

    /// A blocking write of more than the pipe holds is inside `write` until the reader reads,
    /// and the kernel reports a write to inotify only when it returns: the wait must still
    /// end, and soon (it looks again every [`WATCHED_SLICE`]).
    #[test]
    fn a_wait_sees_a_write_larger_than_the_pipe() {
        let (_dir, path) = fifo("large");
        let rx = open_fifo(&path, false).unwrap();
        let tx = open_fifo(&path, true).unwrap();
        rustix::fs::fcntl_setfl(&tx, rustix::fs::OFlags::empty()).unwrap();
        const BIG: usize = 1 << 20;
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let big = vec![7u8; BIG];
            let mut done = 0;
            while done < BIG {
                done += rustix::io::write(&tx, &big[done..]).unwrap();
            }
        });
        let t0 = Instant::now();
        wait_fifo_data(
            rx.as_fd(),
            Wait::Until(Instant::now() + Duration::from_secs(5)),
        )
        .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        rustix::fs::fcntl_setfl(&rx, rustix::fs::OFlags::empty()).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < BIG {
            let n = rustix::io::read(&rx, &mut buf).unwrap();
            assert!(n > 0, "the writer stopped after {got} bytes");
            got += n;
        }
        writer.join().unwrap();
    }

    /// The thread's instance as it is, without making one: its descriptor and maker.
    fn current_watcher() -> Option<(i32, Pid)> {
        WATCHER.with(|c| {
            let w = c.take();
            let seen = w.as_ref().map(|w| (w.ino.as_raw_fd(), w.pid));
            c.set(w);
            seen
        })
    }

    /// An instance made by another process (what a child made by `fork` finds in its
    /// thread) is not used: this process makes its own.
    #[test]
    fn an_inherited_instance_is_replaced() {
        let me = rustix::process::getpid();
        assert!(with_watcher(|_| ()).is_some(), "inotify is available here");
        let other = Pid::from_raw(me.as_raw_nonzero().get() ^ 1).unwrap();
        WATCHER.with(|c| {
            let mut w = c.take().unwrap();
            w.pid = other;
            c.set(Some(w));
        });
        assert_eq!(current_watcher().map(|(_, pid)| pid), Some(other));
        assert!(with_watcher(|_| ()).is_some());
        assert_eq!(current_watcher().map(|(_, pid)| pid), Some(me));
    }

    /// A wait that slept keeps the thread's inotify instance (closing it would wait for the
    /// kernel's mark reaper) and takes its watch off: later writes queue nothing.
    #[test]
    fn a_wait_keeps_the_instance_and_drops_the_watch() {
        let (_dir, path) = fifo("keep");
        let rx = open_fifo(&path, false).unwrap();
        let tx = open_fifo(&path, true).unwrap();
        let instance = || current_watcher().map(|(fd, _)| fd);
        let mut seen = None;
        for _ in 0..3 {
            let writer = {
                let tx = tx.try_clone().unwrap();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    rustix::io::write(&tx, b"x").unwrap();
                })
            };
            wait_fifo_data(
                rx.as_fd(),
                Wait::Until(Instant::now() + Duration::from_secs(10)),
            )
            .unwrap();
            writer.join().unwrap();
            let mut b = [0u8; 4];
            assert_eq!(rustix::io::read(&rx, &mut b).unwrap(), 1);
            let now = instance();
            assert!(now.is_some(), "the thread keeps its instance");
            assert!(
                seen.is_none() || seen == now,
                "the same instance every time"
            );
            seen = now;
        }
        rustix::io::write(&tx, b"y").unwrap();
        let mut buf = [0u8; 256];
        let queued = with_watcher(|ino| rustix::io::read(ino, &mut buf)).unwrap();
        assert_eq!(queued, Err(Errno::AGAIN), "no watch is left on the FIFO");
    }
}
