//! The bounded queue of one subscription: zenoh's callback pushes, the [`Subscriber`] pops.
//!
//! [`Subscriber`]: crate::Subscriber

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipckit::bus::Overflow;
use ipckit::{Error, Result, Wait};

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item arrives or the queue closes.
    ready: Condvar,
    /// Signalled when an item leaves (a `block` push waits on it).
    room: Condvar,
    depth: usize,
    overflow: Overflow,
    /// How long a `block` push waits for room before it drops the item and counts it.
    block_timeout: Duration,
}

struct State<T> {
    items: VecDeque<T>,
    drops: u64,
    pushed: u64,
    closed: bool,
}

impl<T> Queue<T> {
    pub(crate) fn new(depth: u32, overflow: Overflow, block_timeout: Duration) -> Queue<T> {
        let depth = depth.max(1) as usize;
        Queue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(depth.min(1024)),
                drops: 0,
                pushed: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            depth,
            overflow,
            block_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an item. Full: drop-oldest skips (and counts) the oldest; block waits for room at
    /// most `block_timeout`, then drops this item and counts it.
    pub(crate) fn push(&self, item: T) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if s.items.len() >= self.depth {
            match self.overflow {
                Overflow::DropOldest => {
                    s.items.pop_front();
                    s.drops += 1;
                }
                Overflow::Block => {
                    let deadline = Instant::now() + self.block_timeout;
                    while s.items.len() >= self.depth && !s.closed {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            s.drops += 1;
                            tracing::debug!("bus://zenoh: a block subscription stayed full");
                            return;
                        }
                        s = self
                            .room
                            .wait_timeout(s, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    if s.closed {
                        return;
                    }
                }
            }
        }
        s.items.push_back(item);
        s.pushed += 1;
        drop(s);
        self.ready.notify_one();
    }

    /// Takes the oldest item, waiting as `wait` allows.
    pub(crate) fn pop(&self, wait: Wait) -> Result<T> {
        let mut s = self.lock();
        loop {
            if let Some(item) = s.items.pop_front() {
                drop(s);
                self.room.notify_one();
                return Ok(item);
            }
            if s.closed {
                return Err(Error::Disconnected);
            }
            s = match wait {
                Wait::Never => return Err(Error::WouldBlock),
                Wait::Forever => self.ready.wait(s).unwrap_or_else(|p| p.into_inner()),
                Wait::Until(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout { after: None });
                    }
                    self.ready
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Items skipped because the queue was full.
    pub(crate) fn drops(&self) -> u64 {
        self.lock().drops
    }

    /// Items queued so far (delivered or still waiting).
    pub(crate) fn pushed(&self) -> u64 {
        self.lock().pushed
    }

    /// No more items: pushes are ignored, pops fail with `Disconnected` once empty, and a
    /// blocked push returns.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn drop_oldest_counts() {
        let q = Queue::new(3, Overflow::DropOldest, Duration::ZERO);
        for i in 0..10 {
            q.push(i);
        }
        assert_eq!(q.drops(), 7);
        let got: Vec<i32> = (0..3).map(|_| q.pop(Wait::Never).unwrap()).collect();
        assert_eq!(got, [7, 8, 9]);
        assert!(matches!(q.pop(Wait::Never), Err(Error::WouldBlock)));
        let r = q.pop(Wait::timeout(Duration::from_millis(20)));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    }

    #[test]
    fn block_waits_for_room_then_counts() {
        let q = Arc::new(Queue::new(1, Overflow::Block, Duration::from_secs(5)));
        q.push(1);
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.push(2));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.pop(Wait::timeout(Duration::from_secs(5))).unwrap(), 1);
        t.join().unwrap();
        assert_eq!(q.pop(Wait::timeout(Duration::from_secs(5))).unwrap(), 2);
        assert_eq!(q.drops(), 0);

        let q = Queue::new(1, Overflow::Block, Duration::from_millis(20));
        q.push(1);
        q.push(2);
        assert_eq!(q.drops(), 1);
        assert_eq!(q.pop(Wait::Never).unwrap(), 1);
        q.close();
        assert!(matches!(q.pop(Wait::Never), Err(Error::Disconnected)));
    }
}
