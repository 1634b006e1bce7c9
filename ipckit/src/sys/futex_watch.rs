//! Async waits on futex words in shared memory, with no thread per waiter and no polling.
//!
//! A futex has no descriptor that epoll could watch. Instead, one watcher thread per 127
//! waiting futures sleeps in `futex_waitv(2)` (Linux ≥ 5.16) on all of their words at once,
//! plus a private "kick" word that new registrations bump. When a word is woken (or no
//! longer holds the value its waiter saw) the watcher wakes that future's task. An idle
//! async receiver therefore costs one sleeping thread for the whole process, and its peer
//! pays nothing more than the ordinary `FUTEX_WAKE` it issues for a blocking receiver.
//!
//! The watcher never dereferences the words itself: it only hands their addresses to the
//! kernel, which reports a vanished mapping as `EFAULT`. A future that was leaked (never
//! dropped) after its mapping went away therefore cannot make the watcher touch freed
//! memory; its entry is dropped at the next fault.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use rustix::io::Errno;
use rustix::thread::futex;

/// Words one `futex_waitv` call takes (the kernel's `FUTEX_WAITV_MAX`), the kick included.
const WAITV_MAX: usize = 128;

/// One registered wait.
struct Entry {
    id: u64,
    /// Address of the futex word (never dereferenced by the watcher).
    addr: usize,
    /// The value the waiter saw; the wait ends when the word is woken or differs.
    expected: u32,
    waker: Waker,
    /// Set by the watcher when it wakes this entry.
    fired: Arc<AtomicU32>,
}

/// One watcher thread and the words it sleeps on.
struct Watcher {
    entries: Mutex<Vec<Entry>>,
    /// Bumped (and woken) whenever `entries` changes, so the thread rebuilds its list.
    kick: AtomicU32,
}

static WATCHERS: OnceLock<Mutex<Vec<Arc<Watcher>>>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data (a list of wakers) stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Watcher {
    fn kick(&self) {
        self.kick.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&self.kick, futex::Flags::PRIVATE, 1);
    }

    fn run(self: Arc<Watcher>) {
        let mut waits: Vec<futex::Wait> = Vec::with_capacity(WAITV_MAX);
        let mut ids: Vec<u64> = Vec::with_capacity(WAITV_MAX);
        loop {
            waits.clear();
            ids.clear();
            let kick_seen = self.kick.load(Ordering::Acquire);
            waits.push(wait_entry(
                std::ptr::addr_of!(self.kick) as usize,
                kick_seen,
                futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE,
            ));
            for e in lock(&self.entries).iter() {
                waits.push(wait_entry(e.addr, e.expected, futex::WaitFlags::SIZE_U32));
                ids.push(e.id);
            }
            let outcome = futex::waitv(
                &waits,
                futex::WaitvFlags::empty(),
                None,
                futex::ClockId::Monotonic,
            );
            match outcome {
                Ok(0) | Err(Errno::INTR) => {}
                Ok(i) => self.fire(|id| id == ids[i - 1]),
                // Some word differs from its expected value: the kick (then just rebuild), or
                // an entry (find which without touching its memory ourselves).
                Err(Errno::AGAIN) => {
                    if self.kick.load(Ordering::Acquire) == kick_seen {
                        let stale: Vec<u64> = waits[1..]
                            .iter()
                            .zip(&ids)
                            .filter(|(w, _)| probe_differs(w))
                            .map(|(_, id)| *id)
                            .collect();
                        self.fire(|id| stale.contains(&id));
                    }
                }
                // A mapping went away under a leaked waiter, or the kernel has no futex_waitv:
                // wake everyone (they re-check and re-register) and back off a little.
                Err(e) => {
                    if e == Errno::NOSYS {
                        tracing::warn!("futex_waitv unavailable (Linux < 5.16): async shared-memory waits poll every millisecond");
                    }
                    self.fire(|_| true);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    /// Removes and wakes the entries `which` selects.
    fn fire(&self, which: impl Fn(u64) -> bool) {
        let fired: Vec<Entry> = {
            let mut entries = lock(&self.entries);
            let (hit, keep): (Vec<Entry>, Vec<Entry>) =
                entries.drain(..).partition(|e| which(e.id));
            *entries = keep;
            hit
        };
        for e in fired {
            e.fired.store(1, Ordering::Release);
            e.waker.wake();
        }
    }
}

fn wait_entry(addr: usize, expected: u32, flags: futex::WaitFlags) -> futex::Wait {
    let mut w = futex::Wait::new();
    w.val = u64::from(expected);
    w.uaddr = futex::WaitPtr::new(addr as *mut std::ffi::c_void);
    w.flags = flags;
    w
}

/// Asks the kernel whether one word differs from its expected value (a zero-timeout wait):
/// `EAGAIN` says it differs, `EFAULT` that it is gone (treated as differing: wake it).
fn probe_differs(w: &futex::Wait) -> bool {
    // An absolute deadline long past: the kernel checks the value, then times out at once.
    let past = futex::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    !matches!(
        futex::waitv(
            std::slice::from_ref(w),
            futex::WaitvFlags::empty(),
            Some(&past),
            futex::ClockId::Monotonic,
        ),
        Err(Errno::TIMEDOUT)
    )
}

/// A watcher with room for one more word, started on first use.
fn watcher() -> Arc<Watcher> {
    let mut all = lock(WATCHERS.get_or_init(|| Mutex::new(Vec::new())));
    if let Some(w) = all.iter().find(|w| lock(&w.entries).len() < WAITV_MAX - 1) {
        return w.clone();
    }
    let w = Arc::new(Watcher {
        entries: Mutex::new(Vec::new()),
        kick: AtomicU32::new(0),
    });
    let run = w.clone();
    // If the thread cannot start, waits fall back to the timeouts their callers put on them.
    if let Err(e) = std::thread::Builder::new()
        .name("ipckit-futex-watch".into())
        .spawn(move || run.run())
    {
        tracing::warn!(error = %e, "could not start the futex watcher thread");
    }
    all.push(w.clone());
    w
}

/// A future that completes when the futex word `word` is woken or no longer equals
/// `expected`. Spurious completions are possible: callers re-check their condition.
pub(crate) fn watch(word: &AtomicU32, expected: u32) -> FutexWatch<'_> {
    FutexWatch {
        word,
        expected,
        reg: None,
    }
}

/// See [`watch`].
pub(crate) struct FutexWatch<'a> {
    word: &'a AtomicU32,
    expected: u32,
    reg: Option<(Arc<Watcher>, u64, Arc<AtomicU32>)>,
}

impl Future for FutexWatch<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((_, _, fired)) = &self.reg {
            if fired.load(Ordering::Acquire) != 0 {
                self.reg = None;
                return Poll::Ready(());
            }
        }
        if self.word.load(Ordering::Acquire) != self.expected {
            self.unregister();
            return Poll::Ready(());
        }
        match &self.reg {
            Some((w, id, _)) => {
                // Still registered: refresh the waker in case the task moved.
                let mut entries = lock(&w.entries);
                if let Some(e) = entries.iter_mut().find(|e| e.id == *id) {
                    if !e.waker.will_wake(cx.waker()) {
                        e.waker = cx.waker().clone();
                    }
                }
            }
            None => {
                let w = watcher();
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let fired = Arc::new(AtomicU32::new(0));
                lock(&w.entries).push(Entry {
                    id,
                    addr: self.word as *const AtomicU32 as usize,
                    expected: self.expected,
                    waker: cx.waker().clone(),
                    fired: fired.clone(),
                });
                w.kick();
                self.reg = Some((w, id, fired));
            }
        }
        Poll::Pending
    }
}

impl FutexWatch<'_> {
    fn unregister(&mut self) {
        if let Some((w, id, _)) = self.reg.take() {
            lock(&w.entries).retain(|e| e.id != id);
            // The thread may still sleep on the word; that is harmless, and the next
            // registration rebuilds its list.
        }
    }
}

impl Drop for FutexWatch<'_> {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn wakes_on_futex_wake_and_on_change() {
        let word = Box::leak(Box::new(AtomicU32::new(5)));
        // Already different: completes at once.
        tokio::time::timeout(Duration::from_secs(5), watch(word, 4))
            .await
            .unwrap();
        let w: &'static AtomicU32 = word;
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w.store(6, Ordering::Release);
            crate::sys::futex_wake(w, u32::MAX);
        });
        tokio::time::timeout(Duration::from_secs(5), watch(word, 5))
            .await
            .expect("the watcher woke us");
        t.join().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_waiters_spread_over_watchers() {
        let words: &'static [AtomicU32] = Box::leak(
            (0..300)
                .map(|_| AtomicU32::new(0))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let mut set = Vec::new();
        for w in words.iter() {
            set.push(tokio::spawn(tokio::time::timeout(
                Duration::from_secs(10),
                watch(w, 0),
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for w in words.iter() {
            w.store(1, Ordering::Release);
            crate::sys::futex_wake(w, 1);
        }
        for h in set {
            h.await.unwrap().expect("every waiter woke");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropped_waiter_unregisters() {
        let word = Box::leak(Box::new(AtomicU32::new(0)));
        let r = tokio::time::timeout(Duration::from_millis(20), watch(word, 0)).await;
        assert!(r.is_err(), "nothing woke the word");
        for w in lock(WATCHERS.get().unwrap()).iter() {
            assert!(lock(&w.entries)
                .iter()
                .all(|e| e.addr != word as *const AtomicU32 as usize));
        }
    }
}
