//! The lock-free handshakes of `bus://local` between a node's publisher and its readers, in
//! one place so that loom checks the code the bus runs (the models at the end:
//! `RUSTFLAGS="--cfg loom" cargo test -p ipckit --lib --release loom`).
//!
//! - **Slot stamps** (a seqlock). The publisher stamps slot `seq % slots` with `2*seq+1`
//!   ([`open_slot`]) before it changes a byte of it and with `2*seq+2` after
//!   ([`seal_slot`]), then moves the write position. A reader takes the stamp
//!   ([`stamp_of`]), copies the message out, and keeps the copy only if the stamp is still
//!   the same ([`unchanged`]). A reader that was lapped sees a newer stamp and counts a
//!   drop; it never keeps a torn copy.
//! - **Room for block readers.** A block-policy reader publishes its cursor
//!   ([`publish_cursor`]) once it has copied the messages before it; the publisher writes
//!   message `seq` only while `seq` is under every such reader's [`room_limit`].
//! - **A publisher waiting for room** says which reader it waits for, fences and reads the
//!   `space` word ([`announce_wait`]), looks at that reader's cursor once more, and sleeps
//!   on `space`. The reader, once its cursor is out, fences and, if it is the one waited
//!   for ([`waited_for`]), bumps `space` ([`make_room`]) and wakes it. One of the two sees
//!   the other.
//! - **Parked block readers.** A block-policy reader of a node that publishes no topic it
//!   matches holds a reader slot without reading: it [`park`]s, saying how far it has looked
//!   at the node's catalog. The publisher counts it only from the first message of a topic
//!   listed past that point ([`parked_room_limit`]), until the reader parks again further on
//!   or [`unpark`]s: cursor first, at that message or later, then the parked word.
//! - **A subscriber going to sleep** counts itself in the node's sleeping readers, arms its
//!   doorbell ([`arm`]), fences and looks for messages once more before it sleeps on the
//!   doorbell. The publisher, after each message, fences, and if readers sleep, disarms
//!   their doorbells ([`disarm`]) and wakes them.
//!
//! In the library the words are atomics in shared memory (std's types over the mapping);
//! in the models they are loom's. [`Word`] lets the same functions take both.

use crate::loom::{fence, Ordering, Word};

/// What reading slot `seq` found instead of a message.
pub(crate) enum SlotRead {
    /// The writer has not finished it yet.
    NotYet,
    /// The writer overwrote it before (or while) we read: the reader was overtaken.
    Overwritten,
    /// The slot holds something impossible.
    Corrupt(String),
}

// ---- slot stamps ------------------------------------------------------------------------

/// Publisher: marks slot `seq` as being written, before any byte of it changes.
#[inline]
pub(crate) fn open_slot(stamp: &impl Word<V = u64>, seq: u64) {
    stamp.store(2 * seq + 1, Ordering::Relaxed);
    // Orders the stamp before the writes of the body: a reader that copies any of them
    // then sees this stamp (or a later one) when it checks.
    fence(Ordering::Release);
}

/// Publisher: marks slot `seq` complete and publishes it (the write position, `write_seq`,
/// becomes `seq + 1`).
#[inline]
pub(crate) fn seal_slot(stamp: &impl Word<V = u64>, write_seq: &impl Word<V = u64>, seq: u64) {
    stamp.store(2 * seq + 2, Ordering::Release);
    write_seq.store(seq + 1, Ordering::Release);
}

/// Reader: the stamp slot `seq` has if it holds message `seq`, complete (to hand to
/// [`unchanged`] once the message is copied out). `seq` is at most `MAX_SEQ`: no overflow.
#[inline]
pub(crate) fn stamp_of(stamp: &impl Word<V = u64>, seq: u64) -> Result<u64, SlotRead> {
    let want = 2 * seq + 2;
    let s1 = stamp.load(Ordering::Acquire);
    if s1 == want {
        Ok(s1)
    } else if s1 > want {
        Err(SlotRead::Overwritten)
    } else if s1 == want - 1 {
        Err(SlotRead::NotYet)
    } else {
        // Older than expected although the writer says it is published.
        Err(stale_stamp(seq, s1))
    }
}

#[cold]
#[inline(never)]
fn stale_stamp(seq: u64, s1: u64) -> SlotRead {
    SlotRead::Corrupt(format!("slot of message {seq} has stamp {s1}"))
}

/// Reader: whether the slot still has stamp `s1`, so that what was copied out of it since
/// [`stamp_of`] is whole (the writer did not start overwriting it meanwhile).
#[inline]
pub(crate) fn unchanged(stamp: &impl Word<V = u64>, s1: u64) -> bool {
    // Orders the copies before the second look at the stamp.
    fence(Ordering::Acquire);
    stamp.load(Ordering::Relaxed) == s1
}

// ---- room for block readers -------------------------------------------------------------

/// Publisher: the first message a block-policy reader with cursor word `cursor` and
/// `depth` (at least 1, at most the ring's slots) has no room for; `seq` is the next
/// message to write, and a cursor ahead of it is a lie that counts as caught up.
#[inline]
pub(crate) fn room_limit(cursor: &impl Word<V = u64>, seq: u64, depth: u64) -> u64 {
    // Acquire: the reader's copies of the messages before its cursor are done before the
    // publisher overwrites their slots.
    cursor.load(Ordering::Acquire).min(seq) + depth
}

/// Reader: publishes its cursor, once it has copied every message before it.
#[inline]
pub(crate) fn publish_cursor(cursor: &impl Word<V = u64>, at: u64) {
    cursor.store(at, Ordering::Release);
}

/// Reader: parks after looking at the node's catalog up to byte `checked`, or moves that
/// point on. (A publisher waiting for it is then woken as for a cursor: [`waited_for`].)
#[inline]
pub(crate) fn park(parked: &impl Word<V = u32>, checked: u32) {
    parked.store(checked + 1, Ordering::Release);
}

/// Reader: leaves the parked state, reading from message `at` on (at least the first message
/// of the topic it found to match, which the publisher has counted it from).
#[inline]
pub(crate) fn unpark(parked: &impl Word<V = u32>, cursor: &impl Word<V = u64>, at: u64) {
    publish_cursor(cursor, at);
    // Release: a publisher that sees the reader unparked sees the cursor too.
    parked.store(0, Ordering::Release);
}

/// Publisher: [`room_limit`] of a block-policy reader that may be parked, `None` if it holds
/// nothing back. `owed(checked)`: the first message of a topic listed past `checked` (or
/// not listed at all), if any, where a reader that has looked up to `checked` stands for the
/// publisher until it looks again.
#[inline]
pub(crate) fn parked_room_limit(
    parked: &impl Word<V = u32>,
    cursor: &impl Word<V = u64>,
    seq: u64,
    depth: u64,
    owed: impl Fn(usize) -> Option<u64>,
) -> Option<u64> {
    // Acquire: an unparked reader's cursor (stored before) is the one `room_limit` reads.
    let p = parked.load(Ordering::Acquire);
    let limit = room_limit(cursor, seq, depth);
    if p == 0 {
        return Some(limit);
    }
    let from = owed(p as usize - 1)?;
    Some(limit.max(from.min(seq) + depth))
}

/// Publisher about to wait for reader `i`: says so (`waiting`), fences, and returns the
/// `space` word's value to sleep on. It must look at the reader's room again after this,
/// and sleep only if there is still none (then a reader that made room meanwhile has seen
/// `waiting` and changed `space`).
#[inline]
pub(crate) fn announce_wait(
    waiting: &impl Word<V = u32>,
    space: &impl Word<V = u32>,
    i: usize,
) -> u32 {
    waiting.store(i as u32 + 1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    // Acquire: had it been relaxed, a publisher could see the `space` a reader bumped and
    // still an older cursor of that reader, then sleep on the new value with nobody left
    // to wake it (loom found it: `waiting_publisher_is_woken` below).
    space.load(Ordering::Acquire)
}

/// Reader `i`, after [`publish_cursor`]: whether a publisher waits for it (then it calls
/// [`make_room`] and wakes it).
#[inline]
pub(crate) fn waited_for(waiting: &impl Word<V = u32>, i: usize) -> bool {
    fence(Ordering::SeqCst);
    waiting.load(Ordering::Relaxed) == i as u32 + 1
}

/// Reader: changes `space`, so that a publisher about to sleep on its old value does not.
#[inline]
pub(crate) fn make_room(space: &impl Word<V = u32>) {
    space.fetch_add(1, Ordering::Release);
}

// ---- doorbells ----------------------------------------------------------------------------

/// Subscriber about to sleep: arms its node's doorbell (makes it odd) and returns the value
/// to sleep on. It fences and looks for messages once more before it sleeps.
#[inline]
pub(crate) fn arm(doorbell: &impl Word<V = u32>) -> u32 {
    doorbell.fetch_or(1, Ordering::Relaxed) | 1
}

/// Publisher, after its fence, for a node with sleeping readers: disarms the doorbell if it
/// is armed; true if this call did (then it wakes the sleepers). A disarmed doorbell costs
/// later publishers no system call until a receiver arms it again.
#[inline]
pub(crate) fn disarm(doorbell: &impl Word<V = u32>) -> bool {
    let v = doorbell.load(Ordering::Relaxed);
    v & 1 == 1
        && doorbell
            .compare_exchange(v, v.wrapping_add(1), Ordering::Release, Ordering::Relaxed)
            .is_ok()
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The models run the functions above with loom's atomics. A message's body is words
    //! stored and loaded relaxed: a seqlock reads while the writer may be writing, by
    //! design, and decides afterwards whether what it read counts (the library copies
    //! plain bytes out of shared memory the same way). Sleeps go through the loom shim's
    //! futex, which has no timeout: a wake-up that nobody sends leaves the sleeper blocked
    //! and loom reports the deadlock.

    use super::*;
    use crate::loom::{futex_wait, futex_wake};
    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::sync::Arc;

    const WORDS: usize = 2;

    /// One node's ring and control words.
    struct Node {
        stamps: Vec<AtomicU64>,
        body: Vec<AtomicU64>,
        write_seq: AtomicU64,
        cursor: AtomicU64,
        waiting: AtomicU32,
        space: AtomicU32,
        sleeping: AtomicU32,
        doorbell: AtomicU32,
        parked: AtomicU32,
    }

    impl Node {
        fn new(slots: usize) -> Node {
            Node {
                stamps: (0..slots).map(|_| AtomicU64::new(0)).collect(),
                body: (0..slots * WORDS).map(|_| AtomicU64::new(0)).collect(),
                write_seq: AtomicU64::new(0),
                cursor: AtomicU64::new(0),
                waiting: AtomicU32::new(0),
                space: AtomicU32::new(0),
                sleeping: AtomicU32::new(0),
                doorbell: AtomicU32::new(0),
                parked: AtomicU32::new(0),
            }
        }

        fn slot(&self, seq: u64) -> usize {
            (seq % self.stamps.len() as u64) as usize
        }

        /// Message `seq`'s body word `j`.
        fn value(seq: u64, j: usize) -> u64 {
            100 * (seq + 1) + j as u64
        }

        fn write(&self, seq: u64) {
            let s = self.slot(seq);
            open_slot(&self.stamps[s], seq);
            for j in 0..WORDS {
                self.body[s * WORDS + j].store(Node::value(seq, j), Ordering::Relaxed);
            }
            seal_slot(&self.stamps[s], &self.write_seq, seq);
        }

        /// Copies message `seq` out; `Ok(None)` if it is not there yet.
        fn read(&self, seq: u64) -> Result<Option<[u64; WORDS]>, ()> {
            let s = self.slot(seq);
            let s1 = match stamp_of(&self.stamps[s], seq) {
                Ok(s1) => s1,
                Err(SlotRead::NotYet) => return Ok(None),
                Err(SlotRead::Overwritten) => return Err(()),
                Err(SlotRead::Corrupt(why)) => panic!("{why}"),
            };
            let mut out = [0; WORDS];
            for (j, w) in out.iter_mut().enumerate() {
                *w = self.body[s * WORDS + j].load(Ordering::Relaxed);
            }
            if unchanged(&self.stamps[s], s1) {
                Ok(Some(out))
            } else {
                Err(())
            }
        }
    }

    /// The reader's wake-up of a publisher waiting for it (`notify_writer`).
    fn notify(n: &Node) {
        if waited_for(&n.waiting, 0) {
            make_room(&n.space);
            futex_wake(&n.space, u32::MAX);
        }
    }

    /// A block-policy reader taking messages `from..to` whole: it must never find one
    /// overwritten. After each it publishes its cursor and wakes a publisher waiting for it
    /// (`set_cursor` with a wake-up).
    fn read_as_block_reader(node: &Node, from: u64, to: u64) {
        for seq in from..to {
            let body = loop {
                if seq < node.write_seq.load(Ordering::Acquire) {
                    match node.read(seq) {
                        Ok(Some(body)) => break body,
                        Ok(None) => {}
                        Err(()) => panic!("a block reader was overwritten at {seq}"),
                    }
                }
                loom::thread::yield_now();
            };
            assert_eq!(body, [Node::value(seq, 0), Node::value(seq, 1)]);
            publish_cursor(&node.cursor, seq + 1);
            notify(node);
        }
    }

    /// Writes messages `0..messages`, waiting before each while `no_room(seq)` as
    /// `wait_for_room` does, without its spinning and time slices (reader slot 0).
    fn publish_when_room(n: &Node, messages: u64, no_room: impl Fn(u64) -> bool) {
        for seq in 0..messages {
            while no_room(seq) {
                let observed = announce_wait(&n.waiting, &n.space, 0);
                if !no_room(seq) {
                    break;
                }
                futex_wait(&n.space, observed, None).unwrap();
            }
            n.waiting.store(0, Ordering::Relaxed);
            n.write(seq);
        }
    }

    /// A reader the writer laps (one slot, no block policy) keeps whole messages only.
    #[test]
    fn loom_lapped_reader_never_keeps_a_torn_message() {
        loom::model(|| {
            let node = Arc::new(Node::new(1));
            let n2 = node.clone();
            let writer = loom::thread::spawn(move || {
                for seq in 0..2 {
                    n2.write(seq);
                }
            });
            let mut seq = 0;
            while seq < 2 {
                let w = node.write_seq.load(Ordering::Acquire);
                if seq >= w {
                    loom::thread::yield_now();
                    continue;
                }
                match node.read(seq) {
                    Ok(Some(body)) => {
                        for (j, &v) in body.iter().enumerate() {
                            assert_eq!(v, Node::value(seq, j), "message {seq} torn");
                        }
                        seq += 1;
                    }
                    // The slot is being rewritten for a later message: the write position
                    // says so soon.
                    Ok(None) => loom::thread::yield_now(),
                    // Lapped: a drop.
                    Err(()) => seq += 1,
                }
            }
            writer.join().unwrap();
        });
    }

    /// A block-policy reader is never overwritten, and a publisher that sleeps waiting for
    /// it is always woken (one slot of depth one: the publisher waits before every message
    /// but the first).
    #[test]
    fn loom_waiting_publisher_is_woken() {
        loom::model(|| {
            const MESSAGES: u64 = 2;
            let node = Arc::new(Node::new(1));
            let n2 = node.clone();
            let writer = loom::thread::spawn(move || {
                let n = &*n2;
                publish_when_room(n, MESSAGES, |seq| seq >= room_limit(&n.cursor, seq, 1));
            });
            read_as_block_reader(&node, 0, MESSAGES);
            writer.join().unwrap();
        });
    }

    /// A subscriber that goes to sleep is woken by the next message: either its last look
    /// finds the message or the publisher finds it asleep and rings.
    #[test]
    fn loom_sleeping_subscriber_is_woken() {
        loom::model(|| {
            let node = Arc::new(Node::new(2));
            let n2 = node.clone();
            let writer = loom::thread::spawn(move || {
                let n = &*n2;
                n.write(0);
                // `publish`'s fence, then the look at the sleeping readers.
                fence(Ordering::SeqCst);
                if n.sleeping.load(Ordering::Relaxed) > 0 && disarm(&n.doorbell) {
                    futex_wake(&n.doorbell, u32::MAX);
                }
            });
            let look = |node: &Node| node.write_seq.load(Ordering::Acquire) > 0;
            // `recv_some` once it has spun, and `sleep_until_message`.
            let mut got = look(&node);
            while !got {
                // Counted asleep, the doorbell armed, the heavy fence, the last look.
                node.sleeping.fetch_add(1, Ordering::Relaxed);
                let observed = arm(&node.doorbell);
                fence(Ordering::SeqCst);
                got = look(&node);
                if !got {
                    futex_wait(&node.doorbell, observed, None).unwrap();
                    got = look(&node);
                }
                node.sleeping.fetch_sub(1, Ordering::Relaxed);
            }
            assert!(matches!(node.read(0), Ok(Some(_))));
            writer.join().unwrap();
        });
    }

    /// The publisher's side of both parked models: writes `messages` messages of a topic
    /// listed at catalog byte 0 (owed from message 0 to a reader parked before it), waiting
    /// for the reader as `wait_for_room` does.
    fn publish_past_parked(n: &Node, messages: u64) {
        let owed = |checked: usize| (checked == 0).then_some(0);
        publish_when_room(n, messages, |seq| {
            parked_room_limit(&n.parked, &n.cursor, seq, 1, owed).is_some_and(|l| seq >= l)
        });
    }

    /// A parked block reader that finds the new topic matches unparks at its first message
    /// and reads every message: the publisher, which counted it from that message on, never
    /// overwrites one it has not read, and is woken when it waits.
    #[test]
    fn loom_unparked_reader_reads_the_topic_from_its_first_message() {
        // Unbounded, the model did not finish in 20 minutes; with three preemptions it
        // takes under a second (the writer-lock and queue models are bounded the same way).
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            const MESSAGES: u64 = 2;
            let node = Arc::new(Node::new(1));
            park(&node.parked, 0);
            let n2 = node.clone();
            let writer = loom::thread::spawn(move || publish_past_parked(&n2, MESSAGES));
            // The scan that finds the topic listed at 0 matching.
            unpark(&node.parked, &node.cursor, 0);
            notify(&node);
            read_as_block_reader(&node, 0, MESSAGES);
            writer.join().unwrap();
        });
    }

    /// A parked block reader that finds the new topic does not match parks further on and
    /// reads nothing: a publisher held back on it (depth one, two messages) is woken and goes
    /// on.
    #[test]
    fn loom_reparked_reader_lets_the_publisher_go() {
        loom::model(|| {
            let node = Arc::new(Node::new(1));
            park(&node.parked, 0);
            let n2 = node.clone();
            let writer = loom::thread::spawn(move || publish_past_parked(&n2, 2));
            // The scan that finds the topic listed at 0 not matching: looked up to byte 1.
            park(&node.parked, 1);
            notify(&node);
            writer.join().unwrap();
            assert_eq!(node.write_seq.load(Ordering::Acquire), 2);
        });
    }
}
