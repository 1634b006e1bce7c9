//! The parent's hold on the benchmark's peer process: its standard error, a deadline after
//! which it is killed, and a wake-up for a parent blocked on a transport that does not notice
//! the peer's death by itself.
//!
//! - When the peer exits (its standard error reaches end of file), the parent's bound endpoint
//!   is *nudged*: connected to and, for datagram sockets, sent [`WAKE`]. A parent
//!   blocked in `accept` or in `recv` on a datagram socket wakes up and sees something that is
//!   not the expected message. Stream transports report the peer's death by themselves.
//! - At the deadline the peer is killed (which triggers the nudge). If the parent is still not
//!   done after a grace period, the process removes its scratch directory and exits: the
//!   benchmark never hangs.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipckit::{Endpoint, MessageSender, Scheme};

use super::wire::WAKE;
use super::{helper_thread, reap};

/// How long the parent may stay stuck after the peer was killed at the deadline.
const GRACE: Duration = Duration::from_secs(10);

/// How long reaping waits for the peer's standard error to close after killing it.
const STDERR_PATIENCE: Duration = Duration::from_secs(5);

/// What the watch needs to know besides the child.
pub struct Watch {
    /// When to kill the peer.
    pub deadline: Instant,
    /// The parent's bound endpoint, to nudge when the peer exits.
    pub nudge: Option<Endpoint>,
    /// Names the measurement in the last-resort message.
    pub label: String,
    /// Removed if the process has to give up.
    pub scratch_dir: PathBuf,
}

/// How the peer ended.
pub struct PeerReport {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote on standard error (its error message, if it failed).
    pub stderr: String,
    /// Set when the deadline passed and the peer was killed.
    pub killed_at_deadline: bool,
}

impl PeerReport {
    /// A one-line account for an error message, or `None` if the peer succeeded quietly.
    pub fn complaint(&self) -> Option<String> {
        let text = self.stderr.trim();
        if self.killed_at_deadline {
            Some("the peer was killed at the deadline".to_owned())
        } else if !text.is_empty() {
            Some(format!("peer: {}", text.replace('\n', "; ")))
        } else if !self.status.success() {
            Some(format!("the peer ended with {}", self.status))
        } else {
            None
        }
    }
}

/// Shared between the parent's thread and the deadline thread.
#[derive(Default)]
struct Deadline {
    /// Set when the parent no longer needs the deadline.
    stopped: Mutex<bool>,
    wake: Condvar,
    /// Set when the deadline passed and the peer was killed.
    fired: Mutex<bool>,
}

/// A running peer process under watch. Dropping it kills and reaps the peer.
pub struct PeerProcess {
    child: Arc<Mutex<Child>>,
    deadline: Arc<Deadline>,
    timer: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PeerProcess {
    /// Watches `child`, which must have been spawned with a piped standard error.
    pub fn watch(mut child: Child, watch: Watch) -> PeerProcess {
        let stderr_pipe = child.stderr.take().map(OwnedFd::from);
        let nudge = watch.nudge.clone();
        // Both threads apart from the descriptor table (see `helper_thread`).
        let stderr = helper_thread::spawn_with(stderr_pipe, move |pipe| {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = std::fs::File::from(pipe).read_to_end(&mut bytes);
            }
            if let Some(ep) = &nudge {
                nudge_endpoint(ep);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let child = Arc::new(Mutex::new(child));
        let deadline = Arc::new(Deadline::default());
        let timer = {
            let (child, deadline) = (Arc::clone(&child), Arc::clone(&deadline));
            helper_thread::spawn(move || enforce_deadline(&child, &deadline, watch))
        };
        PeerProcess {
            child,
            deadline,
            timer: Some(timer),
            stderr: Some(stderr),
        }
    }

    /// Waits up to `patience` for the peer to exit by itself (killing it then), and reports.
    pub fn finish(mut self, patience: Duration) -> PeerReport {
        self.stop_timer();
        let until = Instant::now() + patience;
        loop {
            let exited = reap::has_exited(&lock(&self.child));
            if exited || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.reap()
    }

    fn stop_timer(&mut self) {
        *lock(&self.deadline.stopped) = true;
        self.deadline.wake.notify_all();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }

    /// Kills the peer if it still runs, waits for it and collects its standard error.
    ///
    /// The standard-error thread is let finish (the peer's death closes the pipe) before the
    /// peer is reaped, and the reaping itself runs under the normal policy ([`reap::reap`]):
    /// under `chrt -f` a reaper spinning in the kernel starved our other thread, and the
    /// bench spun in `wait4` for good (seen three times, kernel 6.18; the third time the
    /// reaping was `finish`'s `try_wait`, now a look that does not reap).
    fn reap(&mut self) -> PeerReport {
        let _ = lock(&self.child).kill();
        let until = Instant::now() + STDERR_PATIENCE;
        while self.stderr.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = reap::reap(&mut lock(&self.child));
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        PeerReport {
            status: status.unwrap_or_default(),
            stderr,
            killed_at_deadline: *lock(&self.deadline.fired),
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            self.stop_timer();
            self.reap();
        }
    }
}

/// The deadline thread: kills the peer at the deadline, and gives up on the whole process if
/// the parent is still stuck [`GRACE`] later.
fn enforce_deadline(child: &Mutex<Child>, deadline: &Deadline, watch: Watch) {
    if wait_for_stop(deadline, watch.deadline) {
        return;
    }
    *lock(&deadline.fired) = true;
    let _ = lock(child).kill();
    if wait_for_stop(deadline, Instant::now() + GRACE) {
        return;
    }
    eprintln!(
        "ipckit bench: {}: still blocked {} s after the peer was killed at the deadline; giving up",
        watch.label,
        GRACE.as_secs()
    );
    let _ = std::fs::remove_dir_all(&watch.scratch_dir);
    std::process::exit(3);
}

/// Waits until the parent stops the timer (true) or `until` passes (false).
fn wait_for_stop(deadline: &Deadline, until: Instant) -> bool {
    let mut stopped = lock(&deadline.stopped);
    while !*stopped {
        let now = Instant::now();
        if now >= until {
            return false;
        }
        stopped = deadline
            .wake
            .wait_timeout(stopped, until - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

/// Wakes a parent blocked on its bound endpoint: connects (which completes a pending
/// `accept`) and, on datagram sockets, sends [`WAKE`], which is no benchmark message.
/// Failures are ignored: the parent may be done with the endpoint already.
fn nudge_endpoint(ep: &Endpoint) {
    if let Ok(mut conn) = ipckit::connect(ep) {
        // A durable queue's consumer, like a datagram socket, waits for a message.
        if matches!(ep.scheme(), Scheme::UnixDgram | Scheme::Udp | Scheme::Queue) {
            let _ = conn.try_send(WAKE);
        }
    }
}
