//! The index protocol of a single-producer single-consumer ring of variable-size messages.
//!
//! Positions are byte counts that only grow (wrapping at 2³²); the ring holds `cap` bytes
//! (a power of two). A record is an 8-byte header — `len: u32` and `check = len ^ CHECK` —
//! then the payload, padded to 8 bytes. A record never wraps: if it does not fit before the
//! end, the producer writes a PAD header and starts at offset 0.
//!
//! Ownership: the producer alone writes `head` and the bytes in `[head, tail + cap)`; the
//! consumer alone writes `tail` and reads `[tail, head)`. `head` is published with Release
//! after the bytes, read with Acquire before them, and the same for `tail` the other way.
//! Both sides keep private copies of their own index and a cached copy of the other's, so
//! the hot path is one load (when the cache is stale) and one store, no read-modify-write.
//!
//! Every value read from shared memory is checked before use: the other side may have
//! crashed half-way or be hostile, so impossible positions or headers are
//! [`Error::Corrupted`], never an out-of-bounds access.

use crate::error::{Error, Result};
use crate::loom::{AtomicU32, AtomicU64, Ordering};

/// Bytes of a record header.
pub(crate) const REC_HEADER: u32 = 8;
const CHECK: u32 = 0x5A17_C0DE;
const PAD_LEN: u32 = u32::MAX;
const PAD_CHECK: u32 = 0x0BAD_F00D;

/// Pads a message length to the 8-byte record granularity, plus the header.
pub(crate) fn record_size(len: u32) -> u32 {
    REC_HEADER + ((len + 7) & !7)
}

/// Largest payload a ring of `cap` bytes can always carry (a record plus the worst-case pad
/// must fit in an empty ring).
pub(crate) fn max_payload(cap: u32) -> u32 {
    cap / 2 - REC_HEADER
}

/// One cache-line-padded (128 bytes: the adjacent-line prefetcher pairs lines) group of
/// words written by one side only.
#[repr(C, align(128))]
pub(crate) struct Line<T>(pub(crate) T);

/// The producer's position, alone on its line: the consumer spins on it, so nothing else
/// the producer writes per message may share it (each extra store would cost the consumer
/// another cache-line transfer).
#[repr(C)]
pub(crate) struct ProducerWords {
    /// Bytes published (wrapping). Futex word the consumer sleeps on.
    pub(crate) head: AtomicU32,
}

/// The consumer's position, alone on its line.
#[repr(C)]
pub(crate) struct ConsumerWords {
    /// Bytes consumed (wrapping). Futex word the producer sleeps on.
    pub(crate) tail: AtomicU32,
}

/// Counters the producer keeps, on a line nobody reads in the hot path.
#[repr(C)]
pub(crate) struct ProducerStats {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Times the producer found the ring full and had to wait.
    pub(crate) full_waits: AtomicU64,
    /// Messages refused because the ring was full (`try_send`, expired timeouts).
    pub(crate) drops: AtomicU64,
}

/// Counters the consumer keeps.
#[repr(C)]
pub(crate) struct ConsumerStats {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

/// The shared control block of one ring. The sleep announcements have lines of their own:
/// they are written only around sleeps, so the other side can check them on every publish
/// without a cache miss.
#[repr(C)]
pub(crate) struct RingControl {
    pub(crate) producer: Line<ProducerWords>,
    pub(crate) consumer: Line<ConsumerWords>,
    /// Set by the producer before it sleeps waiting for space.
    pub(crate) producer_waiting: Line<AtomicU32>,
    /// Set by the consumer before it sleeps waiting for data.
    pub(crate) consumer_waiting: Line<AtomicU32>,
    pub(crate) producer_stats: Line<ProducerStats>,
    pub(crate) consumer_stats: Line<ConsumerStats>,
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<RingControl>() == 768);
    assert!(std::mem::offset_of!(RingControl, consumer) == 128);
    assert!(std::mem::offset_of!(RingControl, consumer_waiting) == 384);
    assert!(std::mem::align_of::<RingControl>() == 128);
};

impl RingControl {
    #[cfg(loom)]
    pub(crate) fn new() -> RingControl {
        RingControl {
            producer: Line(ProducerWords {
                head: AtomicU32::new(0),
            }),
            consumer: Line(ConsumerWords {
                tail: AtomicU32::new(0),
            }),
            producer_waiting: Line(AtomicU32::new(0)),
            consumer_waiting: Line(AtomicU32::new(0)),
            producer_stats: Line(ProducerStats {
                messages: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
                full_waits: AtomicU64::new(0),
                drops: AtomicU64::new(0),
            }),
            consumer_stats: Line(ConsumerStats {
                messages: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            }),
        }
    }
}

/// Adds one to a counter that only this side writes: a load and a store, no RMW.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// The ring's data bytes. Offsets passed are always `< cap` with `off + len <= cap`, and
/// multiples of 8 for headers.
pub(crate) trait RingData {
    /// Copies `src` into the ring at `off`.
    fn write(&self, off: u32, src: &[u8]);
    /// Copies ring bytes at `off` into `dst`.
    fn read(&self, off: u32, dst: &mut [u8]);
}

fn corrupted(what: String) -> Error {
    Error::Corrupted(what)
}

/// The producer's private state.
#[derive(Debug)]
pub(crate) struct Producer {
    head: u32,
    cached_tail: u32,
    cap: u32,
}

/// Space reserved by [`Producer::reserve`]: the payload goes at `data_off`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reservation {
    pub(crate) data_off: u32,
    pub(crate) len: u32,
    new_head: u32,
}

impl Producer {
    /// Resumes from the published positions (a fresh ring has both at 0).
    pub(crate) fn attach(ctl: &RingControl, cap: u32) -> Producer {
        let head = ctl.producer.0.head.load(Ordering::Relaxed);
        Producer {
            head,
            cached_tail: ctl.consumer.0.tail.load(Ordering::Acquire),
            cap,
        }
    }

    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// The consumer position this producer last saw (where a full ring left it).
    pub(crate) fn cached_tail(&self) -> u32 {
        self.cached_tail
    }

    /// Bytes the ring has no room for a record of `len`: `Ok(None)` when full now.
    pub(crate) fn reserve<D: RingData>(
        &mut self,
        ctl: &RingControl,
        data: &D,
        len: u32,
    ) -> Result<Option<Reservation>> {
        debug_assert!(len <= max_payload(self.cap));
        let need = record_size(len);
        let off = self.head & (self.cap - 1);
        let pad = if off + need > self.cap {
            self.cap - off
        } else {
            0
        };
        let total = pad + need;
        // Our own position comes from shared memory (attach): a value that is not a record
        // boundary would put the header (or the PAD header) across the end of the ring.
        if self.head & 7 != 0 {
            return Err(corrupted(format!(
                "producer position {} is not on a record boundary",
                self.head
            )));
        }
        let cached_used = self.head.wrapping_sub(self.cached_tail);
        if cached_used > self.cap || self.cap - cached_used < total {
            let tail = ctl.consumer.0.tail.load(Ordering::Acquire);
            let used = self.head.wrapping_sub(tail);
            if used > self.cap || (tail & 7) != 0 {
                return Err(corrupted(format!(
                    "consumer position {tail} is impossible for producer position {}",
                    self.head
                )));
            }
            self.cached_tail = tail;
            if self.cap - used < total {
                return Ok(None);
            }
        }
        let rec = if pad > 0 {
            data.write(off, &header(PAD_LEN, PAD_CHECK));
            0
        } else {
            off
        };
        data.write(rec, &header(len, len ^ CHECK));
        Ok(Some(Reservation {
            data_off: rec + REC_HEADER,
            len,
            new_head: self.head.wrapping_add(total),
        }))
    }

    /// Publishes a reserved record (Release: its bytes are visible before the position).
    pub(crate) fn commit(&mut self, ctl: &RingControl, r: Reservation, order: Ordering) {
        self.head = r.new_head;
        ctl.producer.0.head.store(r.new_head, order);
        let stats = &ctl.producer_stats.0;
        bump(&stats.messages, 1);
        bump(&stats.bytes, u64::from(r.len));
    }
}

fn header(len: u32, check: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4..].copy_from_slice(&check.to_le_bytes());
    h
}

/// The consumer's private state.
#[derive(Debug)]
pub(crate) struct Consumer {
    tail: u32,
    cached_head: u32,
    cap: u32,
    max: u32,
}

/// A record found by [`Consumer::peek`]: `len` bytes at `data_off`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Record {
    pub(crate) data_off: u32,
    pub(crate) len: u32,
    next_tail: u32,
}

impl Consumer {
    /// Resumes from the published positions.
    pub(crate) fn attach(ctl: &RingControl, cap: u32, max: u32) -> Consumer {
        let tail = ctl.consumer.0.tail.load(Ordering::Relaxed);
        Consumer {
            tail,
            cached_head: tail,
            cap,
            max,
        }
    }

    /// The next record, if one is published. Validates everything it reads.
    pub(crate) fn peek<D: RingData>(
        &mut self,
        ctl: &RingControl,
        data: &D,
    ) -> Result<Option<Record>> {
        loop {
            let mut avail = self.cached_head.wrapping_sub(self.tail);
            if avail == 0 {
                self.cached_head = ctl.producer.0.head.load(Ordering::Acquire);
                avail = self.cached_head.wrapping_sub(self.tail);
                if avail == 0 {
                    return Ok(None);
                }
            }
            if avail > self.cap
                || avail < REC_HEADER
                || (self.cached_head & 7) != 0
                || (self.tail & 7) != 0
            {
                return Err(corrupted(format!(
                    "producer position {} is impossible for consumer position {}",
                    self.cached_head, self.tail
                )));
            }
            let off = self.tail & (self.cap - 1);
            let mut h = [0u8; 8];
            data.read(off, &mut h);
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let check = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            if len == PAD_LEN && check == PAD_CHECK {
                let pad = self.cap - off;
                if pad > avail {
                    return Err(corrupted(format!("padding of {pad} bytes past the head")));
                }
                self.tail = self.tail.wrapping_add(pad);
                continue;
            }
            if check != len ^ CHECK {
                return Err(corrupted(format!("bad record header at offset {off}")));
            }
            if len > self.max {
                return Err(corrupted(format!(
                    "record of {len} bytes over the maximum {}",
                    self.max
                )));
            }
            let need = record_size(len);
            if need > avail || off + need > self.cap {
                return Err(corrupted(format!(
                    "record of {len} bytes at offset {off} runs past the published data"
                )));
            }
            return Ok(Some(Record {
                data_off: off + REC_HEADER,
                len,
                next_tail: self.tail.wrapping_add(need),
            }));
        }
    }

    /// Frees a record's space (Release: our reads happen before the producer reuses it).
    pub(crate) fn release(&mut self, ctl: &RingControl, r: Record, order: Ordering) {
        self.tail = r.next_tail;
        ctl.consumer.0.tail.store(r.next_tail, order);
        let stats = &ctl.consumer_stats.0;
        bump(&stats.messages, 1);
        bump(&stats.bytes, u64::from(r.len));
    }

    /// Drops everything published (after corruption): jumps to the head.
    pub(crate) fn skip_all(&mut self, ctl: &RingControl) {
        let head = ctl.producer.0.head.load(Ordering::Acquire) & !7;
        self.tail = head;
        self.cached_head = head;
        ctl.consumer.0.tail.store(head, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::cell::UnsafeCell;

    struct Heap(UnsafeCell<Vec<u8>>);
    impl RingData for Heap {
        fn write(&self, off: u32, src: &[u8]) {
            // SAFETY: single-threaded test; offsets are in bounds by the ring's contract.
            unsafe {
                (&mut (*self.0.get()))[off as usize..off as usize + src.len()].copy_from_slice(src)
            }
        }
        fn read(&self, off: u32, dst: &mut [u8]) {
            // SAFETY: as above.
            unsafe {
                dst.copy_from_slice(&(&(*self.0.get()))[off as usize..off as usize + dst.len()])
            }
        }
    }

    fn ctl() -> Box<RingControl> {
        // SAFETY: RingControl is all atomics of integers; all-zero is a valid initial state.
        unsafe { Box::new(std::mem::zeroed()) }
    }

    fn send(p: &mut Producer, c: &RingControl, d: &Heap, msg: &[u8]) -> bool {
        match p.reserve(c, d, msg.len() as u32).unwrap() {
            Some(r) => {
                d.write(r.data_off, msg);
                p.commit(c, r, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn recv(k: &mut Consumer, c: &RingControl, d: &Heap) -> Option<Vec<u8>> {
        let r = k.peek(c, d).unwrap()?;
        let mut v = vec![0; r.len as usize];
        d.read(r.data_off, &mut v);
        k.release(c, r, Ordering::Release);
        Some(v)
    }

    #[test]
    fn wraps_and_fills() {
        let cap = 256;
        let c = ctl();
        let d = Heap(UnsafeCell::new(vec![0; cap as usize]));
        let mut p = Producer::attach(&c, cap);
        let mut k = Consumer::attach(&c, cap, max_payload(cap));
        let mut expect = std::collections::VecDeque::new();
        let mut n = 0u8;
        for round in 0..2000 {
            let len = (round * 37) % (max_payload(cap) as usize + 1);
            let msg: Vec<u8> = (0..len).map(|i| (i as u8) ^ n).collect();
            if send(&mut p, &c, &d, &msg) {
                expect.push_back(msg);
                n = n.wrapping_add(1);
            } else {
                assert!(
                    !expect.is_empty(),
                    "an empty ring must take a max-size record"
                );
                assert_eq!(recv(&mut k, &c, &d).unwrap(), expect.pop_front().unwrap());
            }
            if round % 3 == 0 {
                if let Some(m) = recv(&mut k, &c, &d) {
                    assert_eq!(m, expect.pop_front().unwrap());
                }
            }
        }
        while let Some(m) = recv(&mut k, &c, &d) {
            assert_eq!(m, expect.pop_front().unwrap());
        }
        assert!(expect.is_empty());
    }

    #[test]
    fn garbage_is_corruption_not_a_crash() {
        let cap = 128;
        let c = ctl();
        let d = Heap(UnsafeCell::new(vec![0; cap as usize]));
        let mut k = Consumer::attach(&c, cap, max_payload(cap));
        c.producer.0.head.store(4096, Ordering::Release);
        assert!(matches!(k.peek(&c, &d), Err(Error::Corrupted(_))));
        k.skip_all(&c);
        c.producer.0.head.store(4096 + 16, Ordering::Release);
        // SAFETY: single-threaded test.
        unsafe { (*d.0.get()).fill(0xEE) };
        assert!(matches!(k.peek(&c, &d), Err(Error::Corrupted(_))));
        let mut p = Producer::attach(&c, cap);
        c.consumer.0.tail.store(12345, Ordering::Release);
        let mut detected = false;
        for _ in 0..4 {
            match p.reserve(&c, &d, 40) {
                Ok(Some(r)) => p.commit(&c, r, Ordering::Release),
                Err(Error::Corrupted(_)) => {
                    detected = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            detected,
            "a bogus consumer position is noticed once it is read"
        );
    }

    /// Found by the `shm_ring` fuzz target (issue 9): positions that are not record
    /// boundaries, read from shared memory at attach, put an 8-byte header across the end
    /// of the ring (an out-of-bounds write or read).
    #[test]
    fn misaligned_positions_are_corruption() {
        let cap = 64;
        let c = ctl();
        let d = Heap(UnsafeCell::new(vec![0; cap as usize]));
        c.producer.0.head.store(60, Ordering::Relaxed);
        c.consumer.0.tail.store(60, Ordering::Relaxed);
        let mut p = Producer::attach(&c, cap);
        assert!(matches!(p.reserve(&c, &d, 8), Err(Error::Corrupted(_))));
        c.producer.0.head.store(72, Ordering::Relaxed);
        let mut k = Consumer::attach(&c, cap, max_payload(cap));
        assert!(matches!(k.peek(&c, &d), Err(Error::Corrupted(_))));
        // A head far ahead of the cached tail is checked, not subtracted into a wrap.
        c.producer.0.head.store(0, Ordering::Relaxed);
        c.consumer.0.tail.store(8, Ordering::Relaxed);
        let mut p = Producer::attach(&c, cap);
        assert!(matches!(p.reserve(&c, &d, 8), Err(Error::Corrupted(_))));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// Ring bytes as one loom cell per 8-byte word, so loom reports any access to a word that
    /// is not ordered by the index protocol.
    struct Words(Vec<UnsafeCell<[u8; 8]>>);
    impl RingData for Words {
        fn write(&self, off: u32, src: &[u8]) {
            for (i, chunk) in src.chunks(8).enumerate() {
                self.0[off as usize / 8 + i].with_mut(|w| {
                    // SAFETY: loom checks the access is ordered against every other one.
                    unsafe { (&mut *w)[..chunk.len()].copy_from_slice(chunk) }
                });
            }
        }
        fn read(&self, off: u32, dst: &mut [u8]) {
            for (i, chunk) in dst.chunks_mut(8).enumerate() {
                self.0[off as usize / 8 + i].with(|w| {
                    // SAFETY: as above.
                    chunk.copy_from_slice(unsafe { &(&*w)[..chunk.len()] })
                });
            }
        }
    }

    #[test]
    fn spsc_delivers_in_order_without_races() {
        loom::model(|| {
            let cap = 64u32;
            let ctl = Arc::new(RingControl::new());
            let data = Arc::new(Words(
                (0..cap / 8).map(|_| UnsafeCell::new([0; 8])).collect(),
            ));
            let (c2, d2) = (ctl.clone(), data.clone());
            let producer = loom::thread::spawn(move || {
                let mut p = Producer::attach(&c2, cap);
                for i in 0..3u8 {
                    let msg = [i; 20];
                    loop {
                        if let Some(r) = p.reserve(&c2, &*d2, msg.len() as u32).unwrap() {
                            d2.write(r.data_off, &msg);
                            p.commit(&c2, r, Ordering::Release);
                            break;
                        }
                        loom::thread::yield_now();
                    }
                }
            });
            let mut k = Consumer::attach(&ctl, cap, max_payload(cap));
            for i in 0..3u8 {
                let r = loop {
                    if let Some(r) = k.peek(&ctl, &*data).unwrap() {
                        break r;
                    }
                    loom::thread::yield_now();
                };
                let mut buf = [0u8; 20];
                data.read(r.data_off, &mut buf);
                assert_eq!(buf, [i; 20]);
                k.release(&ctl, r, Ordering::Release);
            }
            producer.join().unwrap();
        });
    }
}
