//! Helper threads of the bench's processes (deadlines, a peer's standard error) that leave
//! the descriptor table to the thread that measures.
//!
//! While a process's descriptor table is shared, and any second thread shares it, Linux takes
//! a reference on the file for every system call on a descriptor (`fdget`, then `fput`); a
//! process of one thread skips both. The C yardstick runs one thread per process, so a
//! helper thread sharing the table made every kernel row pay for the harness: the C
//! yardstick itself with one idle thread added to each process (4 alternations, 64 B
//! streams) went from 3.05 M to 2.68 M msg/s over a pipe and from 2.39 M to 2.14 M over a
//! FIFO, and `ipckit bench` with its helpers apart from the table (8 runs each, interleaved
//! with C at 3.08 M and 2.33 M) went from 2.30 M to 2.63 M over a pipe and from 1.83 M to
//! 2.10 M over a FIFO.
//!
//! So a helper takes a private copy of the table (`unshare(CLONE_FILES)`) and closes every
//! descriptor of that copy but standard input, output and error and the one it is given,
//! whose copy in the spawning thread's table is then closed. A kernel without `close_range`
//! (before 5.9) or a refused `unshare` leaves the helper on the shared table: correct, only
//! slower.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Runs `f` on a helper thread apart from the descriptor table.
pub fn spawn<T, F>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_with(None, move |_| f())
}

/// Runs `f` on a helper thread apart from the descriptor table, handing it `fd`, the one
/// descriptor it keeps. Returns once the helper has its own table (and `fd` is closed in the
/// caller's).
pub fn spawn_with<T, F>(fd: Option<OwnedFd>, f: F) -> JoinHandle<T>
where
    F: FnOnce(Option<OwnedFd>) -> T + Send + 'static,
    T: Send + 'static,
{
    let keep = fd.as_ref().map(AsRawFd::as_raw_fd);
    let (apart_tx, apart_rx) = mpsc::sync_channel(1);
    let thread = std::thread::spawn(move || {
        let _ = apart_tx.send(leave_table(keep));
        f(fd)
    });
    // The helper says whether it left before it runs `f`; if it died first (it cannot
    // panic before), nothing is closed here.
    if let (Ok(true), Some(k)) = (apart_rx.recv(), keep) {
        // SAFETY: `k`'s owner moved into the helper, which has its own copy of the table by
        // now and closes its own copy of `k` when done; the copy closed here, in the
        // caller's table, has no owner left in this process, and nothing here uses `k`.
        unsafe { libc::close(k) };
    }
    thread
}

/// Takes this thread off the shared descriptor table and closes every copy in its own table
/// but 0, 1, 2 and `keep`. Returns whether it did.
fn leave_table(keep: Option<RawFd>) -> bool {
    // An empty range past any descriptor: whether the kernel has `close_range`.
    // SAFETY: closes nothing.
    if unsafe { libc::close_range(u32::MAX, u32::MAX, 0) } != 0 {
        return false;
    }
    // SAFETY: from here on this thread sees only descriptors of its own table: the copies
    // closed below are never looked at, and what it uses after (0, 1, 2, `keep`, which it
    // owns, and whatever it opens itself) is its own (`unshare_unsafe`'s condition).
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FILES) };
    if unshared.is_err() {
        return false;
    }
    let ranges = match keep.and_then(|k| u32::try_from(k).ok()).filter(|&k| k >= 3) {
        Some(k) => [(3, k - 1), (k + 1, u32::MAX)],
        None => [(3, u32::MAX), (1, 0)],
    };
    for (first, last) in ranges.into_iter().filter(|(a, b)| a <= b) {
        // SAFETY: closes copies in this thread's own table only: their owners live on in
        // other threads, whose tables keep their own copies open.
        unsafe { libc::close_range(first, last, 0) };
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn open_here(fd: RawFd) -> bool {
        std::path::Path::new(&format!("/proc/thread-self/fd/{fd}")).exists()
    }

    /// A helper keeps no copy of the caller's descriptors (a pipe whose write end the caller
    /// closes ends at once), and the descriptor it is handed is gone from the caller's table.
    #[test]
    fn a_helper_holds_only_what_it_is_given() {
        let (r, w) = std::io::pipe().unwrap();
        let (opened_tx, opened_rx) = mpsc::channel();
        let (seen_tx, seen_rx) = mpsc::channel::<()>();
        let idle = spawn(move || {
            // A descriptor opened in the helper is not in the caller's table.
            let null = std::fs::File::open("/dev/null").unwrap();
            opened_tx.send(null.as_raw_fd()).unwrap();
            let _ = seen_rx.recv_timeout(Duration::from_secs(10));
        });
        let null = opened_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let target = std::fs::read_link(format!("/proc/thread-self/fd/{null}")).ok();
        assert_ne!(target.as_deref(), Some(std::path::Path::new("/dev/null")));
        seen_tx.send(()).unwrap();
        let (given_r, mut given_w) = std::io::pipe().unwrap();
        let given = given_r.as_raw_fd();
        let reader = spawn_with(Some(given_r.into()), |fd| {
            let mut s = String::new();
            std::fs::File::from(fd.expect("handed over"))
                .read_to_string(&mut s)
                .map(|_| s)
        });
        assert!(
            !open_here(given),
            "the handed-over descriptor is closed here"
        );
        given_w.write_all(b"given").unwrap();
        drop(given_w);
        assert_eq!(reader.join().unwrap().unwrap(), "given");
        drop(w);
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call; waits at most 10 s.
        let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(ready, 1, "the pipe ended while the idle helper lives");
        let mut buf = [0u8; 4];
        assert_eq!((&r).read(&mut buf).unwrap(), 0);
        idle.join().unwrap();
    }
}
