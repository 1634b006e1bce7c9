//! A signal storm for the EINTR tests: a do-nothing SIGUSR2 handler installed without
//! `SA_RESTART`, so every blocking system call of a signalled thread fails with EINTR, and a
//! thread that signals registered threads (and processes) every [`PERIOD`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time between signals.
pub const PERIOD: Duration = Duration::from_micros(50);

extern "C" fn on_signal(_: libc::c_int) {}

/// Installs the do-nothing SIGUSR2 handler without `SA_RESTART` (once per process).
pub fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid to fill in; the handler is async-signal-safe
        // (it does nothing); flags 0 means no SA_RESTART, so interrupted calls fail with EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
    });
}

/// The threads (and processes) a storm signals.
pub type Targets = Arc<Mutex<Vec<libc::pthread_t>>>;

/// Signals the registered threads, and the processes `pids` (which must have installed the
/// handler), every [`PERIOD`] until `stop`; returns the signals sent.
pub fn storm(
    targets: Targets,
    pids: Vec<u32>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            for t in targets.lock().unwrap().iter() {
                // SAFETY: the targets are live threads: each removes itself (under the lock)
                // before it exits, so no id is used after its thread ended.
                if unsafe { libc::pthread_kill(*t, libc::SIGUSR2) } == 0 {
                    sent += 1;
                }
            }
            for &pid in &pids {
                if ipckit::signal::send(pid, libc::SIGUSR2).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(PERIOD);
        }
        sent
    })
}

/// Registers the calling thread as a target until the guard drops.
pub struct Target(Targets, libc::pthread_t);

impl Target {
    pub fn new(list: &Targets) -> Target {
        // SAFETY: pthread_self has no preconditions.
        let t = unsafe { libc::pthread_self() };
        list.lock().unwrap().push(t);
        Target(list.clone(), t)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.0.lock().unwrap().retain(|t| *t != self.1);
    }
}
