//! [`Event`]: wait until signalled, across processes.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::loom::{futex_wait, futex_wake, AtomicU32, AtomicU64, Ordering};
use crate::shm::{Segment, SegmentKind};
use crate::transport::Wait;

/// How long a waiter sleeps before it re-checks (bounds the effect of a notifier dying
/// between its update and its wake-up).
const SLICE: Duration = Duration::from_millis(50);

#[repr(C, align(64))]
struct EventWordsV2 {
    /// Bumped by every set/notify; the futex word waiters sleep on.
    seq: AtomicU32,
    /// 1 while the event is set (manual reset).
    set: AtomicU32,
    /// The processes waiting now (low 32 bits) and the wake-ups handed out to them by
    /// `notify_one`/`notify_all`, each taken by one waiter (high 32 bits), in one word so
    /// that a notifier compares the two as of one moment. (As two words, a `notify_one`
    /// could read the tokens before a waiter took one and the waiters after it left, find
    /// as many tokens as waiters, and release nobody: loom found it,
    /// `loom_notify_one_twice_releases_two_waiters`.) The type's name changed with it (V2),
    /// so an event of an older ipckit is refused on open (`Incompatible`) rather than shared
    /// with code that updates the two halves on their own.
    counts: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(EventWordsV2, counts) == 8);

/// One waiter in [`EventWordsV2::counts`].
const WAITER: u64 = 1;

fn waiters(counts: u64) -> u64 {
    counts & 0xFFFF_FFFF
}

fn tokens(counts: u64) -> u64 {
    counts >> 32
}

impl EventWordsV2 {
    #[cfg(loom)]
    fn new() -> EventWordsV2 {
        EventWordsV2 {
            seq: AtomicU32::new(0),
            set: AtomicU32::new(0),
            counts: AtomicU64::new(0),
        }
    }

    fn bump_and_wake(&self, n: u32) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(&self.seq, n);
    }

    fn set(&self) {
        self.set.store(1, Ordering::SeqCst);
        self.bump_and_wake(u32::MAX);
    }

    /// Applies `f` to the counts until it says no (`None`) or the update lands; true if it
    /// landed.
    fn update_counts(&self, f: impl FnMut(u64) -> Option<u64>) -> bool {
        self.counts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, f)
            .is_ok()
    }

    fn notify_one(&self) {
        // Nobody waits, or every waiter already has a wake-up: nothing to do.
        if self
            .update_counts(|c| (tokens(c) < waiters(c)).then(|| (tokens(c) + 1) << 32 | waiters(c)))
        {
            self.bump_and_wake(1);
        }
    }

    fn notify_all(&self) {
        self.update_counts(|c| Some(waiters(c) << 32 | waiters(c)));
        self.bump_and_wake(u32::MAX);
    }

    fn wait(&self, wait: Wait) -> Result<()> {
        if self.set.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        if wait == Wait::Never {
            return Err(Error::WouldBlock);
        }
        self.counts.fetch_add(WAITER, Ordering::SeqCst);
        loop {
            let seq = self.seq.load(Ordering::SeqCst);
            // Leaves with a token, if there is one. (Counts read from shared memory: no
            // arithmetic that a corrupted word could make overflow.)
            if self.update_counts(|c| {
                (tokens(c) > 0).then(|| (tokens(c) - 1) << 32 | waiters(c).saturating_sub(1))
            }) {
                return Ok(());
            }
            let outcome = if self.set.load(Ordering::SeqCst) != 0 {
                Some(Ok(()))
            } else {
                match wait.slice(SLICE) {
                    Ok(slice) => futex_wait(&self.seq, seq, Some(slice)).err().map(Err),
                    Err(e) => Some(Err(e)),
                }
            };
            if let Some(r) = outcome {
                // Leaves without one: no more tokens than the waiters left, so that none
                // meant for a waiter of now releases a later one.
                self.update_counts(|c| {
                    let w = waiters(c).saturating_sub(1);
                    Some(tokens(c).min(w) << 32 | w)
                });
                return r;
            }
        }
    }
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
            .size(std::mem::size_of::<EventWordsV2>())
            .typed::<EventWordsV2>()
            .kind(SegmentKind::Event)
            .mode(mode)
            .create()?;
        Ok(Event { seg })
    }

    /// Opens an existing named event.
    pub fn open(name: &str) -> Result<Event> {
        let seg = Segment::builder(name)
            .typed::<EventWordsV2>()
            .kind(SegmentKind::Event)
            .open()?;
        Ok(Event { seg })
    }

    fn words(&self) -> &EventWordsV2 {
        // SAFETY: the segment was created or checked (kind Event, fingerprint of EventWordsV2)
        // to hold an EventWordsV2 at its 64-aligned data start; atomics only; tied to `self`.
        unsafe { &*self.seg.as_ptr().cast::<EventWordsV2>() }
    }

    /// Sets the event: every waiter, now and later, returns until [`reset`](Self::reset).
    pub fn set(&self) {
        self.words().set();
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
        self.words().notify_one();
    }

    /// Releases every process waiting now, without setting the event.
    pub fn notify_all(&self) {
        self.words().notify_all();
    }

    /// Waits until set or notified, as `wait` allows.
    pub fn wait_with(&self, wait: Wait) -> Result<()> {
        self.words().wait(wait)
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

#[cfg(all(test, not(loom)))]
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

    /// A count word another process corrupted gives odd wake-ups at worst, never a panic
    /// (here the waiter count wraps into the token count as this waiter joins).
    #[test]
    fn corrupted_counts_do_not_panic() {
        let e = Event::create(&name("corrupt")).unwrap();
        e.words().counts.store(0xFFFF_FFFF, Ordering::SeqCst);
        let r = e.wait_timeout(Duration::from_millis(20));
        assert!(matches!(r, Ok(()) | Err(Error::Timeout { .. })), "{r:?}");
    }

    #[test]
    fn notify_one_releases_one_waiter() {
        let n = name("one");
        let e = Event::create(&n).unwrap();
        let threads: Vec<_> = (0..2)
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
        while waiters(e.words().counts.load(Ordering::SeqCst)) < 2 {
            std::thread::yield_now();
        }
        e.notify_one();
        let released: usize = threads
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(released, 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Waits until `n` waiters are counted (a notification releases only those waiting now).
    fn until_waiting(e: &EventWordsV2, n: u32) {
        while waiters(e.counts.load(Ordering::SeqCst)) < u64::from(n) {
            loom::thread::yield_now();
        }
    }

    /// `set` releases a waiter, whenever it comes (the shim's futex has no timeout: a lost
    /// wake-up leaves the waiter blocked, and loom reports the deadlock).
    #[test]
    fn loom_set_releases_a_waiter() {
        loom::model(|| {
            let e = Arc::new(EventWordsV2::new());
            let e2 = e.clone();
            let waiter = loom::thread::spawn(move || e2.wait(Wait::Forever));
            e.set();
            waiter.join().unwrap().unwrap();
        });
    }

    /// Two `notify_one`s release both of two waiters: no token is lost or taken twice.
    /// Three threads: bounded to three preemptions (unbounded, it ran over ten minutes; the
    /// lost notification of the two-word layout needs two).
    #[test]
    fn loom_notify_one_twice_releases_two_waiters() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let e = Arc::new(EventWordsV2::new());
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let e = e.clone();
                    loom::thread::spawn(move || e.wait(Wait::Forever))
                })
                .collect();
            until_waiting(&e, 2);
            e.notify_one();
            e.notify_one();
            for w in waiters {
                w.join().unwrap().unwrap();
            }
            assert_eq!(
                e.counts.load(Ordering::SeqCst),
                0,
                "every waiter gone, every token taken"
            );
        });
    }
}
