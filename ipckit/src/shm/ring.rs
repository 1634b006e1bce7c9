//! The index protocol of a single-producer single-consumer ring of variable-size messages.
//!
//! Positions are byte counts that only grow (wrapping at 2³²); the ring holds `cap` bytes
//! (a power of two). A record is an 8-byte header — `len: u32` and `check = len ^ CHECK ^
//! pos`, `pos` being the record's position — then the payload, padded to 8 bytes. A record
//! never wraps: if it does not fit before the end, the producer writes a PAD header and
//! starts at offset 0.
//!
//! Ownership: the producer alone writes `head` and the bytes in `[head, tail + cap)`; the
//! consumer alone writes `tail` and reads `[tail, head)`. `head` is published with Release
//! after the bytes, read with Acquire before them, and the same for `tail` the other way.
//! Both sides keep private copies of their own index and a cached copy of the other's, so
//! the hot path is one load (when the cache is stale) and one store, no read-modify-write.
//!
//! The header is stored last, in one atomic 8-byte store, just before the head, and its
//! check names the record's position. A waiting consumer watches the header's place of the
//! next record rather than the head: the record's first line then brings the news and the
//! data in one transfer, where watching the head cost one transfer for the head and then
//! another for the record. With one producer ([`Consumer::attach`]'s `seal_publishes`) a
//! header sealed for the consumer's position publishes its record by itself; with several
//! (shm+mpsc) it only sends the consumer to the head, which stays the authority. Old bytes
//! cannot pass for a sealed header: the producer zeroes the next header's place before it
//! seals a record (unless the ring is full, when that place holds the oldest unread
//! record's header, sealed for a position one ring earlier). Every [`THOROUGH_EVERY`]th
//! idle look reads the head whatever the header says, so a corrupted ring is noticed.
//! Measured with 64-byte messages between two processes (see docs/BENCHMARKS.md), a round
//! trip went from about 940 ns to 530, the C ring of the same run taking 522.
//!
//! Every value read from shared memory is checked before use: the other side may have
//! crashed half-way or be hostile, so impossible positions or headers are
//! [`Error::Corrupted`], never an out-of-bounds access.

use crate::error::{Error, Result};
use crate::loom::{fence, futex_wake, AtomicU32, AtomicU64, Ordering};

/// Bytes of a record header.
pub(crate) const REC_HEADER: u32 = 8;
const CHECK: u32 = 0x5A17_C0DE;
const PAD_LEN: u32 = u32::MAX;
const PAD_CHECK: u32 = 0x0BAD_F00D;

/// An idle consumer reads the head itself on every this many looks, whatever the next
/// record's header says.
pub(crate) const THOROUGH_EVERY: u32 = 64;

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

/// One side's sleep announcement, and whether that side leaves out the fence between its
/// position store and its look at the other side's announcement.
#[repr(C)]
pub(crate) struct WaitWords {
    /// Set before the side sleeps (on the other side's position), cleared after.
    pub(crate) waiting: AtomicU32,
    /// Set once, before the side's first message, if it publishes with only a compiler
    /// fence (`membarrier` registered): the other side must then make a heavy fence
    /// (`sys::heavy_fence`) before it sleeps, or sleep in short slices.
    pub(crate) light: AtomicU32,
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
    /// The producer's: it sleeps waiting for space.
    pub(crate) producer_waiting: Line<WaitWords>,
    /// The consumer's: it sleeps waiting for data.
    pub(crate) consumer_waiting: Line<WaitWords>,
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
            producer_waiting: Line(WaitWords {
                waiting: AtomicU32::new(0),
                light: AtomicU32::new(0),
            }),
            consumer_waiting: Line(WaitWords {
                waiting: AtomicU32::new(0),
                light: AtomicU32::new(0),
            }),
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

/// A side's sleep announcement (`WaitWords::waiting`) while it sleeps, or is about to: the
/// futex word it sleeps on while the word still says so.
pub(crate) const SLEEPING: u32 = 1;

/// The waking half of the sleep handshake, after this side published its position: wakes
/// the peer if it announced (in `flag`) that it sleeps, clearing the announcement (one
/// wake per sleep). The fence pairs with the sleeper's (see [`announce_sleep`]): either the
/// sleeper's last look sees our position or we see its flag. `light`: this side leaves its
/// fence to the sleeper's heavy one (`membarrier`) and makes only a compiler fence.
///
/// The sleeper sleeps on the flag itself, not on our position: a waker that read the flag
/// of an earlier sleep and clears it late (after the sleeper took what it waited for and
/// announced its next sleep) then clears the new announcement, and the sleeper, finding
/// its flag changed, does not sleep (or is woken). Sleeping on the position instead, that
/// late clear took the announcement away, the next waker saw no sleeper, and the sleeper
/// slept out its liveness slice (50 ms): loom found it
/// (`consumer_sleeping_for_data_is_woken`).
#[inline]
pub(crate) fn wake_sleeper(flag: &AtomicU32, light: bool) {
    if light {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
    if flag.load(Ordering::Relaxed) != 0 {
        wake_announced(flag);
    }
}

/// [`wake_sleeper`]'s wake-up, out of the hot path (the system call's registers inlined
/// cost every message saves and restores).
#[cold]
#[inline(never)]
fn wake_announced(flag: &AtomicU32) {
    if flag.swap(0, Ordering::AcqRel) != 0 {
        // Several MPSC producers may sleep on the same flag.
        futex_wake(flag, u32::MAX);
    }
}

/// The sleeping half, first part: announces in `flag` that this side is about to sleep and
/// makes `fence_half` (a full fence, and a heavy one for a light peer), returning what it
/// returned. The caller then looks once more for what it waits for and, only if it is still
/// not there, sleeps on `flag` while it holds [`SLEEPING`]; it clears `flag` when it wakes.
///
/// The announcement is a swap, not a plain store: the same here (nobody else sets the
/// flag), and loom then orders it after a waker's clear of an earlier announcement. With a
/// store, loom (whose modification order is only what each thread has seen) let the next
/// waker read that older clear although the store came after it, and reported a lost
/// wake-up that the C++ memory model rules out.
#[inline]
pub(crate) fn announce_sleep<R>(flag: &AtomicU32, fence_half: impl FnOnce() -> R) -> R {
    flag.swap(SLEEPING, Ordering::Relaxed);
    fence_half()
}

/// The ring's data bytes. Offsets passed are always `< cap` with `off + len <= cap`, and
/// multiples of 8 for headers.
pub(crate) trait RingData {
    /// Copies `src` into the ring at `off`.
    fn write(&self, off: u32, src: &[u8]);
    /// Copies ring bytes at `off` into `dst`.
    fn read(&self, off: u32, dst: &mut [u8]);
    /// Stores the 8-byte record header `word` (little-endian: `len`, then `check`) at the
    /// 8-aligned `off`, in one store a concurrent [`seal_hint`](Self::seal_hint) cannot
    /// tear.
    #[inline]
    fn write_header(&self, off: u32, word: u64) {
        self.write(off, &word.to_le_bytes());
    }
    /// The 8 bytes at the 8-aligned `off` (`off + 8 <= cap`), read while the producer may
    /// be storing a header there; `None` where the data cannot be read that way (then the
    /// consumer reads the head on every look). A hint: never trusted.
    #[inline]
    fn seal_hint(&self, _off: u32) -> Option<u64> {
        None
    }
    /// Hints that the producer will soon write the cache line holding `off` (`< cap`).
    #[inline]
    fn prefetch_write(&self, _off: u32) {}
    /// Hints that the consumer will soon read the cache line holding `off` (`< cap`).
    #[inline]
    fn prefetch_read(&self, _off: u32) {}
}

/// Cache-line size the prefetch hints step by.
const LINE: u32 = 64;

/// What a check of a value read from shared memory found wrong. The checks sit on the hot
/// path; the message is made out of line, in [`corrupted`] (formatted in place, it kept a
/// stack frame and six saved registers on every send and receive).
#[derive(Clone, Copy, Debug)]
enum Bad {
    ProducerOffBoundary { head: u32 },
    ConsumerImpossible { tail: u32, head: u32 },
    OverMax { len: u32, max: u32 },
    PastRing { len: u32, off: u32 },
    ProducerImpossible { head: u32, tail: u32 },
    PadPastHead { pad: u32 },
    Header { off: u32 },
    PastPublished { len: u32, off: u32 },
}

#[cold]
#[inline(never)]
fn corrupted(bad: Bad) -> Error {
    Error::Corrupted(match bad {
        Bad::ProducerOffBoundary { head } => {
            format!("producer position {head} is not on a record boundary")
        }
        Bad::ConsumerImpossible { tail, head } => {
            format!("consumer position {tail} is impossible for producer position {head}")
        }
        Bad::OverMax { len, max } => format!("record of {len} bytes over the maximum {max}"),
        Bad::PastRing { len, off } => {
            format!("record of {len} bytes at offset {off} runs past the ring")
        }
        Bad::ProducerImpossible { head, tail } => {
            format!("producer position {head} is impossible for consumer position {tail}")
        }
        Bad::PadPastHead { pad } => format!("padding of {pad} bytes past the head"),
        Bad::Header { off } => format!("bad record header at offset {off}"),
        Bad::PastPublished { len, off } => {
            format!("record of {len} bytes at offset {off} runs past the published data")
        }
    })
}

/// The producer's private state.
#[derive(Debug)]
pub(crate) struct Producer {
    head: u32,
    cached_tail: u32,
    cap: u32,
    /// What the last successful `try_reserve` reserved, for `commit_pending`.
    pending: Reservation,
}

/// Space reserved by [`Producer::reserve`]: the payload goes at `data_off`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Reservation {
    pub(crate) data_off: u32,
    pub(crate) len: u32,
    new_head: u32,
    /// The record's header, stored by `commit`.
    header: u64,
    /// Bytes of padding before the record (at the producer's position), 0 for none.
    pad: u32,
}

impl Producer {
    /// Resumes from the published positions (a fresh ring has both at 0).
    pub(crate) fn attach(ctl: &RingControl, cap: u32) -> Producer {
        let head = ctl.producer.0.head.load(Ordering::Relaxed);
        Producer {
            head,
            cached_tail: ctl.consumer.0.tail.load(Ordering::Acquire),
            cap,
            pending: Reservation::default(),
        }
    }

    #[cfg_attr(any(loom, not(feature = "tokio")), allow(dead_code))]
    /// The consumer position this producer last saw (where a full ring left it).
    pub(crate) fn cached_tail(&self) -> u32 {
        self.cached_tail
    }

    /// Bytes the ring has no room for a record of `len`: `Ok(None)` when full now.
    // Inlined: returned through memory, the result was written in 4-byte pieces and read back
    // 16 bytes at once, a load the store buffer cannot forward; it then waited for every
    // older store to drain, the previous message's stores to lines the consumer holds
    // included: a whole line transfer per message (87% of a stream's producer samples).
    #[inline(always)]
    pub(crate) fn reserve(&mut self, ctl: &RingControl, len: u32) -> Result<Option<Reservation>> {
        Ok(self.try_reserve(ctl, len)?.then_some(self.pending))
    }

    /// [`reserve`](Self::reserve) that keeps the reservation in `self` (see
    /// [`pending_data_off`](Self::pending_data_off),
    /// [`commit_pending`](Self::commit_pending)): true if reserved, false if the ring is full
    /// now. The hot path's form: a reservation returned by value went through the stack,
    /// with the stall described above.
    #[inline(always)]
    pub(crate) fn try_reserve(&mut self, ctl: &RingControl, len: u32) -> Result<bool> {
        debug_assert!(len <= max_payload(self.cap));
        // The head's line is needed at `commit`; asking for it now overlaps its transfer
        // with the payload's instead of following it. (The consumer watches the record's
        // header, not the head, so this does not take the line from under a spinning
        // reader.)
        crate::sys::prefetch_write((&ctl.producer.0.head as *const AtomicU32).cast());
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
            return Err(corrupted(Bad::ProducerOffBoundary { head: self.head }));
        }
        let cached_used = self.head.wrapping_sub(self.cached_tail);
        if cached_used > self.cap || self.cap - cached_used < total {
            let tail = ctl.consumer.0.tail.load(Ordering::Acquire);
            let used = self.head.wrapping_sub(tail);
            if used > self.cap || (tail & 7) != 0 {
                return Err(corrupted(Bad::ConsumerImpossible {
                    tail,
                    head: self.head,
                }));
            }
            self.cached_tail = tail;
            if self.cap - used < total {
                return Ok(false);
            }
        }
        let rec = if pad > 0 { 0 } else { off };
        self.pending.data_off = rec + REC_HEADER;
        self.pending.len = len;
        self.pending.new_head = self.head.wrapping_add(total);
        self.pending.header = header(len, len ^ CHECK ^ self.head.wrapping_add(pad));
        self.pending.pad = pad;
        Ok(true)
    }

    /// Where the payload of the last reservation goes.
    #[inline(always)]
    pub(crate) fn pending_data_off(&self) -> u32 {
        self.pending.data_off
    }

    /// The payload length of the last reservation.
    #[inline(always)]
    pub(crate) fn pending_len(&self) -> u32 {
        self.pending.len
    }

    /// Publishes a reserved record (Release: its bytes are visible before the position).
    ///
    /// In this order, each store Release after the one before: the next header's place is
    /// cleared (so that a consumer that waits there finds zeros, not old bytes that could
    /// look like a header for that position), then the record's header, then the PAD header
    /// in front of it if the record went to offset 0 (a consumer that sees the PAD finds
    /// the record written), then the head.
    ///
    /// The headers are written here, after the payload, rather than in `reserve`: a store
    /// to a line the consumer holds waits for that line, and code between the store and the
    /// publication (building the reservation on the stack) stalled behind it, a whole line
    /// transfer before the head store even started (96% of `reserve`'s samples).
    #[inline(always)]
    pub(crate) fn commit<D: RingData>(
        &mut self,
        ctl: &RingControl,
        data: &D,
        r: Reservation,
        order: Ordering,
    ) {
        self.pending = r;
        self.commit_pending(ctl, data, order);
    }

    /// [`commit`](Self::commit) of the reservation `try_reserve` keeps.
    #[inline(always)]
    pub(crate) fn commit_pending<D: RingData>(
        &mut self,
        ctl: &RingControl,
        data: &D,
        order: Ordering,
    ) {
        // Field by field, not the whole struct (see `try_reserve`).
        let new_head = self.pending.new_head;
        // Free after this record, as far as we know (a stale cached tail only makes it
        // smaller). When none is left, the next header's place holds the oldest unread
        // record's header, sealed for a position `cap` earlier: nothing to clear.
        let used = new_head.wrapping_sub(self.cached_tail);
        if used <= self.cap && self.cap - used >= REC_HEADER {
            data.write_header(new_head & (self.cap - 1), 0);
        }
        data.write_header(self.pending.data_off - REC_HEADER, self.pending.header);
        if self.pending.pad > 0 {
            data.write_header(
                self.head & (self.cap - 1),
                header(PAD_LEN, PAD_CHECK ^ self.head),
            );
        }
        self.head = new_head;
        ctl.producer.0.head.store(new_head, order);
        let stats = &ctl.producer_stats.0;
        bump(&stats.messages, 1);
        bump(&stats.bytes, u64::from(self.pending.len));
    }

    /// Hints the CPU to own the line after the one the head is in, where the next record
    /// will be written: call it while idle (waiting for a reply), so that line's transfer
    /// overlaps the wait instead of delaying the next publication. Only a line wholly past
    /// the head (the head's own line may hold bytes the consumer still reads) and only in
    /// free space (in a full ring that is the line the consumer reads next). Right after
    /// each commit instead, it slowed streaming: it took lines the consumer's side was
    /// fetching.
    pub(crate) fn prefetch_next<D: RingData>(&self, data: &D) {
        let off = self.head & (self.cap - 1);
        let next = (off | (LINE - 1)) + 1;
        let free = self
            .cap
            .wrapping_sub(self.head.wrapping_sub(self.cached_tail));
        if next < self.cap && free <= self.cap && free >= (next - off) + 2 * LINE {
            data.prefetch_write(next);
        }
    }
}

/// A header as the little-endian word `len | check << 32`.
fn header(len: u32, check: u32) -> u64 {
    u64::from(len) | (u64::from(check) << 32)
}

/// Whether `word` is a header (record or PAD) written for position `pos`.
fn sealed_for(word: u64, pos: u32) -> bool {
    let (len, check) = (word as u32, (word >> 32) as u32);
    check == len ^ CHECK ^ pos || (len == PAD_LEN && check == PAD_CHECK ^ pos)
}

/// The consumer's private state.
#[derive(Debug)]
pub(crate) struct Consumer {
    tail: u32,
    cached_head: u32,
    cap: u32,
    max: u32,
    /// Looks at an empty ring since the head was last read.
    idle_looks: u32,
    /// A record whose header is sealed for its position is published, without the head
    /// (one producer only: see [`Consumer::attach`]).
    seal_publishes: bool,
    /// What the last successful `try_peek` found, for `found` and `release_found`.
    found: Record,
}

/// A record found by [`Consumer::peek`]: `len` bytes at `data_off`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Record {
    pub(crate) data_off: u32,
    pub(crate) len: u32,
    next_tail: u32,
}

impl Consumer {
    /// Resumes from the published positions. `seal_publishes`: a sealed header alone
    /// publishes its record (with one producer, whose records are whole once sealed). With
    /// several producers taking turns it must be false: one that dies between its header
    /// and its head store leaves a record the next producer writes over, since it starts
    /// from the head.
    pub(crate) fn attach(ctl: &RingControl, cap: u32, max: u32, seal_publishes: bool) -> Consumer {
        let tail = ctl.consumer.0.tail.load(Ordering::Relaxed);
        Consumer {
            tail,
            cached_head: tail,
            cap,
            max,
            idle_looks: 0,
            seal_publishes,
            found: Record::default(),
        }
    }

    /// [`try_peek`](Self::try_peek) returning the record by value (tests, the fuzzer).
    pub(crate) fn peek<D: RingData>(
        &mut self,
        ctl: &RingControl,
        data: &D,
    ) -> Result<Option<Record>> {
        Ok(self.try_peek(ctl, data)?.then_some(self.found))
    }

    /// Where the payload of the record `try_peek` found starts.
    #[inline(always)]
    pub(crate) fn found_data_off(&self) -> u32 {
        self.found.data_off
    }

    /// Length of the record `try_peek` found.
    #[inline(always)]
    pub(crate) fn found_len(&self) -> u32 {
        self.found.len
    }

    /// [`release`](Self::release) of the record `try_peek` found.
    #[inline(always)]
    pub(crate) fn release_found(&mut self, ctl: &RingControl, order: Ordering) {
        // Field by field, not the whole struct (see `try_peek`).
        let (next_tail, len) = (self.found.next_tail, self.found.len);
        self.tail = next_tail;
        ctl.consumer.0.tail.store(next_tail, order);
        let stats = &ctl.consumer_stats.0;
        bump(&stats.messages, 1);
        bump(&stats.bytes, u64::from(len));
    }

    /// Looks for the next record: true if one is published (then see `found_data_off`,
    /// `found_len`, `release_found`). Validates everything it reads.
    // The record stays in `self`, read back field by field: returned by value (an
    // `Option<Record>` through the caller's stack), it was stored in 4-byte pieces and
    // loaded 8 bytes at once, a load the store buffer cannot forward, which waited for
    // every older store (65% of `next_record`'s samples with both ends in one thread).
    #[inline(always)]
    pub(crate) fn try_peek<D: RingData>(&mut self, ctl: &RingControl, data: &D) -> Result<bool> {
        loop {
            let mut avail = self.cached_head.wrapping_sub(self.tail);
            if avail == 0 {
                self.idle_looks = self.idle_looks.wrapping_add(1);
                let off = self.tail & (self.cap - 1);
                // Watch the next header, but read the head on every THOROUGH_EVERYth look.
                // (Reading the head on the first few looks, in case a stream's next records
                // were there already, was slower both ways: 584 against 530 ns a round trip,
                // and no faster streaming.)
                let watch = self.idle_looks % THOROUGH_EVERY != 0
                    && off & 7 == 0
                    && off + REC_HEADER <= self.cap;
                if let Some(word) = watch.then(|| data.seal_hint(off)).flatten() {
                    if !sealed_for(word, self.tail) {
                        return Ok(false);
                    }
                    if self.seal_publishes {
                        // Published up to the end of this record (or PAD): check it below
                        // as if the head said so.
                        self.idle_looks = 0;
                        let len = word as u32;
                        let span = if len == PAD_LEN {
                            self.cap - off
                        } else if len <= self.max {
                            record_size(len)
                        } else {
                            return Err(corrupted(Bad::OverMax { len, max: self.max }));
                        };
                        self.cached_head = self.tail.wrapping_add(span);
                        // The record's next line, already written: fetch it now, not when
                        // the copy gets there.
                        let next = (off | (LINE - 1)) + 1;
                        if next < self.cap && span > next - off {
                            data.prefetch_read(next);
                        }
                        if len == PAD_LEN {
                            continue;
                        }
                        // The seal is the header the check below would read, its check
                        // already verified for this position: only the end is left to check.
                        // (Going round the loop again for it cost about 30 instructions a
                        // message.)
                        if off + span > self.cap {
                            return Err(corrupted(Bad::PastRing { len, off }));
                        }
                        self.found.data_off = off + REC_HEADER;
                        self.found.len = len;
                        self.found.next_tail = self.cached_head;
                        return Ok(true);
                    }
                }
                let head = ctl.producer.0.head.load(Ordering::Acquire);
                avail = head.wrapping_sub(self.tail);
                if avail == 0 || (self.seal_publishes && self.tail.wrapping_sub(head) <= self.cap) {
                    // (With sealed headers publishing, the head may still be behind the
                    // records taken, by at most a ring.)
                    return Ok(false);
                }
                self.idle_looks = 0;
                self.cached_head = head;
                // The header's line and the next are fetched together, not one after the
                // other (a 64-byte message's record spans two lines). Only published bytes:
                // a line the producer is still writing would bounce.
                let off = self.tail & (self.cap - 1);
                let next = (off | (LINE - 1)) + 1;
                if next < self.cap && avail > next - off && avail <= self.cap {
                    data.prefetch_read(next);
                }
            }
            if avail > self.cap
                || avail < REC_HEADER
                || (self.cached_head & 7) != 0
                || (self.tail & 7) != 0
            {
                return Err(corrupted(Bad::ProducerImpossible {
                    head: self.cached_head,
                    tail: self.tail,
                }));
            }
            let off = self.tail & (self.cap - 1);
            let mut h = [0u8; 8];
            data.read(off, &mut h);
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let check = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            if len == PAD_LEN && check == PAD_CHECK ^ self.tail {
                let pad = self.cap - off;
                if pad > avail {
                    return Err(corrupted(Bad::PadPastHead { pad }));
                }
                self.tail = self.tail.wrapping_add(pad);
                continue;
            }
            if check != len ^ CHECK ^ self.tail {
                return Err(corrupted(Bad::Header { off }));
            }
            if len > self.max {
                return Err(corrupted(Bad::OverMax { len, max: self.max }));
            }
            let need = record_size(len);
            if need > avail || off + need > self.cap {
                return Err(corrupted(Bad::PastPublished { len, off }));
            }
            self.found.data_off = off + REC_HEADER;
            self.found.len = len;
            self.found.next_tail = self.tail.wrapping_add(need);
            return Ok(true);
        }
    }

    /// Frees a record's space (Release: our reads happen before the producer reuses it).
    #[inline(always)]
    pub(crate) fn release(&mut self, ctl: &RingControl, r: Record, order: Ordering) {
        self.found = r;
        self.release_found(ctl, order);
    }

    /// Drops everything published (after corruption): jumps to the head (never back).
    pub(crate) fn skip_all(&mut self, ctl: &RingControl) {
        let head = ctl.producer.0.head.load(Ordering::Acquire) & !7;
        if head.wrapping_sub(self.tail) <= self.cap {
            self.tail = head;
        }
        self.tail &= !7;
        self.cached_head = self.tail;
        ctl.consumer.0.tail.store(self.tail, Ordering::Release);
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

    /// A [`Heap`] whose consumer may watch headers ([`RingData::seal_hint`]), as the
    /// shared-memory channel's does.
    struct HintHeap(Heap);
    impl RingData for HintHeap {
        fn write(&self, off: u32, src: &[u8]) {
            self.0.write(off, src)
        }
        fn read(&self, off: u32, dst: &mut [u8]) {
            self.0.read(off, dst)
        }
        fn seal_hint(&self, off: u32) -> Option<u64> {
            let mut w = [0u8; 8];
            self.0.read(off, &mut w);
            Some(u64::from_le_bytes(w))
        }
    }

    fn heap(cap: u32) -> Heap {
        Heap(UnsafeCell::new(vec![0; cap as usize]))
    }

    fn ctl() -> Box<RingControl> {
        // SAFETY: RingControl is all atomics of integers; all-zero is a valid initial state.
        unsafe { Box::new(std::mem::zeroed()) }
    }

    fn send<D: RingData>(p: &mut Producer, c: &RingControl, d: &D, msg: &[u8]) -> bool {
        match p.reserve(c, msg.len() as u32).unwrap() {
            Some(r) => {
                d.write(r.data_off, msg);
                p.commit(c, d, r, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn recv<D: RingData>(k: &mut Consumer, c: &RingControl, d: &D) -> Option<Vec<u8>> {
        let r = k.peek(c, d).unwrap()?;
        let mut v = vec![0; r.len as usize];
        d.read(r.data_off, &mut v);
        k.release(c, r, Ordering::Release);
        Some(v)
    }

    #[test]
    fn wraps_and_fills() {
        wraps_and_fills_with(heap(256), true);
    }

    #[test]
    fn wraps_and_fills_watching_headers() {
        wraps_and_fills_with(HintHeap(heap(256)), true);
        wraps_and_fills_with(HintHeap(heap(256)), false);
    }

    fn wraps_and_fills_with<D: RingData>(d: D, seal_publishes: bool) {
        let cap = 256;
        let c = ctl();
        let mut p = Producer::attach(&c, cap);
        let mut k = Consumer::attach(&c, cap, max_payload(cap), seal_publishes);
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

    /// A sealed header publishes its record only once committed, and then without the head
    /// when `seal_publishes` says so; a consumer that must not trust seals waits for it.
    #[test]
    fn a_sealed_header_publishes_only_after_commit() {
        for seal_publishes in [true, false] {
            let cap = 256;
            let (c, d) = (ctl(), HintHeap(heap(cap)));
            let mut p = Producer::attach(&c, cap);
            let mut k = Consumer::attach(&c, cap, max_payload(cap), seal_publishes);
            let r = p.reserve(&c, 5).unwrap().unwrap();
            d.write(r.data_off, b"hello");
            assert!(k.peek(&c, &d).unwrap().is_none(), "reserved, not committed");
            p.commit(&c, &d, r, Ordering::Release);
            // As if the head store were not visible yet.
            c.producer.0.head.store(0, Ordering::Relaxed);
            let got = k.peek(&c, &d).unwrap();
            assert_eq!(got.is_some(), seal_publishes);
            if let Some(r) = got {
                let mut v = [0; 5];
                d.read(r.data_off, &mut v);
                assert_eq!(&v, b"hello");
            }
        }
    }

    /// Bytes left in the ring by an earlier lap that read as a header sealed for the place a
    /// consumer waits at do not publish anything: the producer clears that place when it
    /// commits the record before it.
    #[test]
    fn old_bytes_that_look_like_a_header_publish_nothing() {
        let cap = 512u32;
        let (c, d) = (ctl(), HintHeap(heap(cap)));
        let mut p = Producer::attach(&c, cap);
        let mut k = Consumer::attach(&c, cap, max_payload(cap), true);
        // Lap 1: one record over [0, 192) whose payload holds, at offset 64, a header sealed
        // for position 576 (offset 64 of lap 2).
        let mut m1 = vec![0u8; 184];
        m1[56..64].copy_from_slice(&header(8, 8 ^ CHECK ^ 576).to_le_bytes());
        assert!(send(&mut p, &c, &d, &m1));
        assert_eq!(recv(&mut k, &c, &d).unwrap(), m1);
        // [192, 352), [352, 512), then lap 2's [0, 64): the head ends at position 576.
        for (fill, len) in [(2u8, 152), (3, 152), (4, 56)] {
            assert!(send(&mut p, &c, &d, &vec![fill; len]));
        }
        for (fill, len) in [(2u8, 152), (3, 152), (4, 56)] {
            assert_eq!(recv(&mut k, &c, &d).unwrap(), vec![fill; len]);
        }
        assert_eq!(c.producer.0.head.load(Ordering::Relaxed), 576);
        for _ in 0..2 * THOROUGH_EVERY {
            assert!(k.peek(&c, &d).unwrap().is_none());
        }
    }

    #[test]
    fn garbage_is_corruption_not_a_crash() {
        let cap = 128;
        let c = ctl();
        let d = Heap(UnsafeCell::new(vec![0; cap as usize]));
        let mut k = Consumer::attach(&c, cap, max_payload(cap), true);
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
            match p.reserve(&c, 40) {
                Ok(Some(r)) => p.commit(&c, &d, r, Ordering::Release),
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
        assert!(matches!(p.reserve(&c, 8), Err(Error::Corrupted(_))));
        c.producer.0.head.store(72, Ordering::Relaxed);
        let mut k = Consumer::attach(&c, cap, max_payload(cap), true);
        assert!(matches!(k.peek(&c, &d), Err(Error::Corrupted(_))));
        // A head far ahead of the cached tail is checked, not subtracted into a wrap.
        c.producer.0.head.store(0, Ordering::Relaxed);
        c.consumer.0.tail.store(8, Ordering::Relaxed);
        let mut p = Producer::attach(&c, cap);
        assert!(matches!(p.reserve(&c, 8), Err(Error::Corrupted(_))));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// Ring bytes as one loom cell per 8-byte word, so loom reports any access to a word that
    /// is not ordered by the index protocol. Headers are also stored in an atomic per word
    /// (Release after the cell), which the consumer may watch (`seal_hint`, Acquire) as it
    /// watches the header in shared memory: a read of a cell that only a seal orders is then
    /// checked too.
    struct Words(Vec<UnsafeCell<[u8; 8]>>, Vec<AtomicU64>, bool);
    impl Words {
        fn new(cap: u32, watch_headers: bool) -> Words {
            Words(
                (0..cap / 8).map(|_| UnsafeCell::new([0; 8])).collect(),
                (0..cap / 8).map(|_| AtomicU64::new(0)).collect(),
                watch_headers,
            )
        }
    }
    impl RingData for Words {
        fn write_header(&self, off: u32, word: u64) {
            self.write(off, &word.to_le_bytes());
            self.1[off as usize / 8].store(word, Ordering::Release);
        }
        fn seal_hint(&self, off: u32) -> Option<u64> {
            self.2
                .then(|| self.1[off as usize / 8].load(Ordering::Acquire))
        }
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
        spsc_model(false);
    }

    #[test]
    fn spsc_with_sealed_headers_publishing_delivers_in_order_without_races() {
        spsc_model(true);
    }

    /// The library's sleep (`ShmConn::block_until` past its spin): announce, fence, look
    /// again, sleep on the announcement while it stands. The fence is the library's under
    /// loom: a full one (no side is light).
    fn sleep_until<T>(flag: &AtomicU32, mut look: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(t) = look() {
                return t;
            }
            announce_sleep(flag, || fence(Ordering::SeqCst));
            if let Some(t) = look() {
                flag.store(0, Ordering::Relaxed);
                return t;
            }
            crate::loom::futex_wait(flag, SLEEPING, None).unwrap();
            flag.store(0, Ordering::Relaxed);
        }
    }

    /// A consumer that sleeps for data is always woken (the shim's futex has no timeout: a
    /// lost wake-up leaves it blocked, and loom reports the deadlock). Two messages: the
    /// producer never waits.
    #[test]
    fn consumer_sleeping_for_data_is_woken() {
        sleeping_model(2, false);
    }

    /// A producer that sleeps for space is always woken: a ring of two records, three
    /// messages (the consumer spins).
    #[test]
    fn producer_sleeping_for_space_is_woken() {
        sleeping_model(3, true);
    }

    /// `messages` of 8 bytes through a ring of two records; the producer sleeps when the ring
    /// is full (`producer_sleeps`), or else the consumer sleeps when it is empty; the other
    /// side yields (a model with both sleeping took over ten minutes).
    fn sleeping_model(messages: u8, producer_sleeps: bool) {
        loom::model(move || {
            let cap = 32u32;
            let ctl = Arc::new(RingControl::new());
            let data = Arc::new(Words::new(cap, false));
            let (c2, d2) = (ctl.clone(), data.clone());
            let producer = loom::thread::spawn(move || {
                let c = &*c2;
                let mut p = Producer::attach(c, cap);
                for i in 0..messages {
                    let space = || p.reserve(c, 8).unwrap();
                    let r = if producer_sleeps {
                        sleep_until(&c.producer_waiting.0.waiting, space)
                    } else {
                        spin_until(space)
                    };
                    d2.write(r.data_off, &[i; 8]);
                    p.commit(c, &*d2, r, Ordering::Release);
                    if !producer_sleeps {
                        wake_sleeper(&c.consumer_waiting.0.waiting, false);
                    }
                }
            });
            let c = &*ctl;
            let mut k = Consumer::attach(c, cap, max_payload(cap), false);
            for i in 0..messages {
                let data_there = || k.peek(c, &*data).unwrap();
                let r = if producer_sleeps {
                    spin_until(data_there)
                } else {
                    sleep_until(&c.consumer_waiting.0.waiting, data_there)
                };
                let mut buf = [0u8; 8];
                data.read(r.data_off, &mut buf);
                assert_eq!(buf, [i; 8]);
                k.release(c, r, Ordering::Release);
                if producer_sleeps {
                    wake_sleeper(&c.producer_waiting.0.waiting, false);
                }
            }
            producer.join().unwrap();
        });
    }

    fn spin_until<T>(mut look: impl FnMut() -> Option<T>) -> T {
        loop {
            if let Some(t) = look() {
                return t;
            }
            loom::thread::yield_now();
        }
    }

    fn spsc_model(watch_headers: bool) {
        loom::model(move || {
            let cap = 64u32;
            let ctl = Arc::new(RingControl::new());
            let data = Arc::new(Words::new(cap, watch_headers));
            let (c2, d2) = (ctl.clone(), data.clone());
            let producer = loom::thread::spawn(move || {
                let mut p = Producer::attach(&c2, cap);
                for i in 0..3u8 {
                    let msg = [i; 20];
                    loop {
                        if let Some(r) = p.reserve(&c2, msg.len() as u32).unwrap() {
                            d2.write(r.data_off, &msg);
                            p.commit(&c2, &*d2, r, Ordering::Release);
                            break;
                        }
                        loom::thread::yield_now();
                    }
                }
            });
            let mut k = Consumer::attach(&ctl, cap, max_payload(cap), watch_headers);
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
