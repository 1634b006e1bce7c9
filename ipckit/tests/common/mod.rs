//! Helpers shared by ipckit's integration tests: the peer process, message patterns,
//! temporary directories, bounded waits, and the lock that keeps descriptor counts exact.
//!
//! Every blocking call here is bounded: peers are waited for with a deadline (polling
//! `try_wait`, killing on expiry) and their output is read by threads and handed over through
//! channels read with `recv_timeout`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The environment variable `name` parsed as a `T` (a test's length or seed, raised on
/// request), or `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long anything that should succeed may take (generous: the machine is noisy).
pub const LONG: Duration = Duration::from_secs(10);
/// The timeout given to calls that are expected to time out.
pub const SHORT: Duration = Duration::from_millis(150);
/// Upper bound on how late a timed-out call may return after its timeout.
pub const SLACK: Duration = Duration::from_secs(5);

/// The helper peer binary.
pub const PEER_BIN: &str = env!("CARGO_BIN_EXE_ipckit-test-peer");

/// Message sizes every transport must carry byte for byte (capped by its maximum).
pub const SIZES: [usize; 5] = [0, 1, 64, 4096, 1 << 20];

/// Same as `pattern` in `src/bin/test_peer.rs`: the content of message `index` of `size` bytes.
pub fn pattern(index: usize, size: usize) -> Vec<u8> {
    let mut x = ((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (size as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
        | 1;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    v
}

/// Asserts `got` is exactly message `index` of `size` bytes, with a readable diagnostic.
#[track_caller]
pub fn assert_pattern(got: &[u8], index: usize, size: usize, context: &str) {
    let want = pattern(index, size);
    if got != want.as_slice() {
        let at = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{context}: message #{index}: got {} bytes, want {size}; first differing byte at {at:?}",
            got.len()
        );
    }
}

/// The typed message the peer sends (it uses the equivalent tuple).
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
pub struct Sample {
    pub id: u32,
    pub name: String,
    pub values: Vec<i64>,
    pub flag: Option<bool>,
}

pub fn sample() -> Sample {
    Sample {
        id: 7,
        name: "ipckit ✓".to_owned(),
        values: vec![-1, 0, i64::MAX],
        flag: Some(true),
    }
}

/// Longest a test binary may run: past this, something blocked without a timeout.
const BINARY_WATCHDOG: Duration = Duration::from_secs(300);

/// Starts (once per test binary) a watchdog that aborts the whole binary if it runs for
/// [`BINARY_WATCHDOG`]: a safety net, so that a call that should fail at once but blocks
/// (a regression) fails the run instead of hanging it. Peers are killed by their own
/// watchdog.
pub fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(BINARY_WATCHDOG);
            eprintln!(
                "test binary still running after {BINARY_WATCHDOG:?}: a call hangs; aborting"
            );
            std::process::abort();
        });
    });
}

/// A temporary directory with a path short enough for Unix socket names (< 108 bytes).
pub fn tempdir() -> tempfile::TempDir {
    watchdog();
    let dir = tempfile::tempdir().expect("tempdir");
    if dir.path().as_os_str().len() <= 60 {
        return dir;
    }
    // $TMPDIR is too long for socket paths: fall back to /tmp.
    tempfile::Builder::new()
        .prefix("ipck")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp")
}

/// Names in a directory, sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Permission bits of a file (not following a final symlink).
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Descriptors of this process that are *not* close-on-exec (a child inherits them whatever
/// ipckit does), read from `/proc/self/fdinfo`.
pub fn inheritable_fds() -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for e in std::fs::read_dir("/proc/self/fdinfo")
        .expect("fdinfo")
        .flatten()
    {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
        if let Some(flags) = flags {
            if flags & libc::O_CLOEXEC as u32 == 0 {
                set.insert(n);
            }
        }
    }
    set
}

static FD_LOCK: RwLock<()> = RwLock::new(());

/// Taken (shared) by every test of a binary that also counts descriptors.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    watchdog();
    FD_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Taken by a test that counts descriptors: no other test runs meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    watchdog();
    FD_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// Number of open descriptors of this process.
pub fn fd_count() -> usize {
    ipckit::sys::open_fd_count().expect("count /proc/self/fd")
}

/// Waits for `child` with a deadline; `None` if it is still running.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `ipckit-test-peer` (or any child): its stdout lines arrive on a channel, its
/// stderr is collected, and it is killed and reaped when dropped.
pub struct Peer {
    child: Child,
    what: String,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Peer {
    /// A command for the peer binary with `args`, stdout and stderr piped, stdin closed.
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(PEER_BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A pipe the test process itself was given must not leak into peers.
            .env_remove(ipckit::pipe::ENV_VAR);
        cmd
    }

    /// Spawns the peer binary with `args`.
    pub fn spawn(args: &[&str]) -> Peer {
        let child = Peer::command(args).spawn().expect("spawn ipckit-test-peer");
        Peer::adopt(child, format!("ipckit-test-peer {args:?}"))
    }

    /// Spawns `cmd` with stdin closed and stdout/stderr piped, and takes charge of it.
    pub fn start(mut cmd: Command) -> Peer {
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Peer::adopt(child, what)
    }

    /// Spawns the helper binary `bin` with `args` (see [`Peer::start`]).
    pub fn start_bin(bin: &str, args: &[&str]) -> Peer {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Peer::start(cmd)
    }

    /// Takes charge of a child spawned with piped stdout and stderr.
    pub fn adopt(mut child: Child, what: String) -> Peer {
        watchdog();
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut threads = Vec::new();
        if let Some(out) = child.stdout.take() {
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }));
        }
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            threads.push(std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
            }));
        }
        Peer {
            child,
            what,
            lines,
            stderr,
            threads,
            status: None,
        }
    }

    /// What the peer wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The next stdout line, waiting at most `timeout`.
    #[track_caller]
    pub fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(e) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "{}: no stdout line within {timeout:?} ({e}); status {status:?}; stderr: {}",
                    self.what,
                    self.stderr()
                )
            }
        }
    }

    /// The next stdout line, which must start with `prefix`; returns the rest.
    #[track_caller]
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let l = self.line(LONG);
        match l.strip_prefix(prefix) {
            Some(rest) => rest.trim().to_owned(),
            None => panic!(
                "{}: expected a line starting with {prefix:?}, got {l:?}; stderr: {}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// Waits for the peer to exit, at most `timeout` (then kills it and panics).
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        match wait_deadline(&mut self.child, timeout) {
            Some(s) => {
                self.status = Some(s);
                s
            }
            None => {
                self.kill();
                panic!(
                    "{}: still running after {timeout:?}; killed it; stderr: {}",
                    self.what,
                    self.stderr()
                );
            }
        }
    }

    /// Waits for the peer to exit successfully.
    #[track_caller]
    pub fn expect_success(&mut self) {
        let s = self.wait(LONG);
        if !s.success() {
            // Let the stderr reader finish.
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
            panic!("{}: exited with {s}; stderr: {}", self.what, self.stderr());
        }
    }

    /// Kills the peer (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = wait_deadline(&mut self.child, LONG);
        }
        self.status
    }

    /// True while the peer has not exited.
    pub fn running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
        // The readers end once the child's pipes close; joining keeps descriptor counts exact.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs `f`, asserting it returns within `timeout + SLACK`.
#[track_caller]
pub fn bounded<T>(what: &str, timeout: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    assert!(
        took <= timeout + SLACK,
        "{what}: took {took:?}, for a timeout of {timeout:?}"
    );
    r
}

/// A small deterministic generator (xorshift) for tests that pick random moments or offsets.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A current-thread tokio runtime with IO and timers, for the async tests.
#[cfg(feature = "tokio")]
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
