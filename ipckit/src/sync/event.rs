//! [`Event`]: wait until signalled, across processes.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::shm::{Segment, SegmentKind};
use crate::transport::Wait;
use std::sync::atomic::{AtomicU32, Ordering};

/// How long a waiter sleeps before it re-checks (bounds the effect of a notifier dying
/// between its update and its wake-up).
const SLICE: Duration = Duration::from_millis(50);

#[repr(C, align(64))]
struct EventWords {
    /// Bumped by every set/notify; the futex word waiters sleep on.
    seq: AtomicU32,
    /// 1 while the event is set (manual reset).
    set: AtomicU32,
    /// Processes waiting now.
    waiters: AtomicU32,
    /// Wake-ups handed out by `notify_one`/`notify_all`, each taken by one waiter.
    tokens: AtomicU32,
}

/// An event shared by name: [`set`](Self::set) releases every waiter until
/// [`reset`](Self::reset); [`notify_one`](Self::notify_one) and
/// [`notify_all`](Self::notify_all) release waiters that are waiting now, without setting it.
///
/// ```
/// use ipckit::sync::Event;
/// use std::time::Duration;
///
/// let name = format!("doc-event-{}", std::process::id());
/// let ready = Event::create(&name)?;
/// let other = Event::open(&name)?;
/// std::thread::spawn(move || other.set());
/// ready.wait_timeout(Duration::from_secs(5))?;
/// assert!(ready.is_set());
/// # Ok::<(), ipckit::Error>(())
/// ```
///
/// A waiter that dies leaves its count behind, so a later `notify_one` may release one waiter
/// too many: treat a wake-up as a hint and re-check your condition, as with any condition
/// variable.
#[derive(Debug)]
pub struct Event {
    seg: Segment,
}

impl Event {
    /// Creates a named event, not set (mode 0600); fails if the name exists.
    pub fn create(name: &str) -> Result<Event> {
        Self::create_with_mode(name, 0o600)
    }

    /// [`create`](Self::create) with explicit permissions.
    pub fn create_with_mode(name: &str, mode: u32) -> Result<Event> {
        let seg = Segment::builder(name)
            .size(std::mem::size_of::<EventWords>())
            .typed::<EventWords>()
            .kind(SegmentKind::Event)
            .mode(mode)
            .create()?;
        Ok(Event { seg })
    }

    /// Opens an existing named event.
    pub fn open(name: &str) -> Result<Event> {
        let seg = Segment::builder(name)
            .typed::<EventWords>()
            .kind(SegmentKind::Event)
            .open()?;
        Ok(Event { seg })
    }

    fn words(&self) -> &EventWords {
        // SAFETY: the segment was created or checked (kind Event, fingerprint of EventWords)
        // to hold an EventWords at its 64-aligned data start; atomics only; tied to `self`.
        unsafe { &*self.seg.as_ptr().cast::<EventWords>() }
    }

    fn bump_and_wake(&self, n: u32) {
        let w = self.words();
        w.seq.fetch_add(1, Ordering::SeqCst);
        crate::sys::futex_wake(&w.seq, n);
    }

    /// Sets the event: every waiter, now and later, returns until [`reset`](Self::reset).
    pub fn set(&self) {
        self.words().set.store(1, Ordering::SeqCst);
        self.bump_and_wake(u32::MAX);
    }

    /// Clears the event.
    pub fn reset(&self) {
        self.words().set.store(0, Ordering::SeqCst);
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.words().set.load(Ordering::Acquire) != 0
    }

    /// Releases one process waiting now (if any), without setting the event.
    pub fn notify_one(&self) {
        let w = self.words();
        let mut t = w.tokens.load(Ordering::Relaxed);
        loop {
            if t >= w.waiters.load(Ordering::SeqCst) {
                return; // nobody waits, or every waiter already has a wake-up
            }
            match w
                .tokens
                .compare_exchange(t, t + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => t = now,
            }
        }
        self.bump_and_wake(1);
    }

    /// Releases every process waiting now, without setting the event.
    pub fn notify_all(&self) {
        let w = self.words();
        w.tokens
            .store(w.waiters.load(Ordering::SeqCst), Ordering::SeqCst);
        self.bump_and_wake(u32::MAX);
    }

    /// Waits until set or notified, as `wait` allows.
    pub fn wait_with(&self, wait: Wait) -> Result<()> {
        let w = self.words();
        if w.set.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        if wait == Wait::Never {
            return Err(Error::WouldBlock);
        }
        w.waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            let seq = w.seq.load(Ordering::SeqCst);
            if w.set.load(Ordering::SeqCst) != 0 || take_token(&w.tokens) {
                break Ok(());
            }
            let slice = match wait.slice(SLICE) {
                Ok(slice) => slice,
                Err(e) => break Err(e),
            };
            if let Err(e) = crate::sys::futex_wait(&w.seq, seq, Some(slice)) {
                break Err(e);
            }
        };
        w.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Waits until set or notified, blocking as long as needed.
    pub fn wait(&self) -> Result<()> {
        self.wait_with(Wait::Forever)
    }

    /// Returns at once: `Ok` if set, else [`Error::WouldBlock`]. (A pending notification is
    /// not taken: only a waiter that waits takes one.)
    pub fn try_wait(&self) -> Result<()> {
        self.wait_with(Wait::Never)
    }

    /// Waits at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// Keeps the name after this handle is dropped.
    pub fn keep(&mut self) {
        self.seg.keep();
    }
}

fn take_token(tokens: &AtomicU32) -> bool {
    let mut t = tokens.load(Ordering::Relaxed);
    while t > 0 {
        match tokens.compare_exchange(t, t - 1, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => t = now,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(tag: &str) -> String {
        format!("test-event-{tag}-{}", std::process::id())
    }

    #[test]
    fn set_releases_everyone_until_reset() {
        let e = Event::create(&name("set")).unwrap();
        assert!(matches!(e.try_wait(), Err(Error::WouldBlock)));
        let short = Duration::from_millis(20);
        assert!(matches!(
            e.wait_timeout(short),
            Err(Error::Timeout { after: Some(d) }) if d == short
        ));
        e.set();
        e.try_wait().unwrap();
        e.wait_timeout(Duration::from_secs(1)).unwrap();
        e.wait_timeout(Duration::from_secs(1)).unwrap();
        e.reset();
        assert!(!e.is_set());
    }

    #[test]
    fn notify_one_releases_one_waiter() {
        let n = name("one");
        let e = Event::create(&n).unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let n = n.clone();
                std::thread::spawn(move || {
                    Event::open(&n)
                        .unwrap()
                        .wait_timeout(Duration::from_millis(500))
                        .is_ok()
                })
            })
            .collect();
        while e.words().waiters.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        e.notify_one();
        let released: usize = waiters
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(released, 1);
    }
}
