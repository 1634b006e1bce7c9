//! A node's segment (`/dev/shm/ipckit.bus.NS.n.ID`): what one [`super::Bus`] publishes.
//!
//! ```text
//! 0      header (192 B, three lines): geometry, node id, the writer's futex word and reader
//!        set; the sleeping readers' count; the write sequence
//! 192    64 reader slots (64 B each): one per subscription reading this node
//! 4288   catalog (64 KiB): the topics the node publishes, serves and subscribes to
//! 69824  ring: `slots` slots of `slot_bytes`, message `seq` in slot `seq % slots`
//! ```
//!
//! The ring is a broadcast ring: the publisher writes each message once, however many
//! subscriptions read it; every reader has its own cursor. A slot is guarded by a sequence
//! stamp (`2*seq+1` while being written, `2*seq+2` once complete), so a reader that was
//! overtaken sees it and counts a drop instead of reading a torn message. A reader with the
//! `block` policy makes the writer wait (with a timeout) until it has room; a `drop` reader
//! never does.
//!
//! Readers and writer are different processes that may crash or lie: every offset, length
//! and cursor read from the segment is checked before use. The header, reader slots and
//! catalog are reached through the bounds-checked [`SharedBytes`] copies and atomics; the
//! ring's slots, on every message's path, through one pointer per slot whose bounds follow
//! from the geometry checked when the segment is created or opened ([`NodeSeg::slot`] gives
//! a [`Slot`]), with each copy's length checked against the slot (one check per message
//! instead of one per field: a publish and a batch receive of a 64-byte message went from
//! 553 to 386 instructions, with a single-message receive from 857 to 622). The orderings
//! of the stamps, cursors
//! and wake-up words are [`super::protocol`]'s (loom-checked there).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::error::{Error, Result};
use crate::shm::{Segment, SharedBytes};
use crate::sys;

use super::protocol::{self, SlotRead};
use super::registry::node_name;
use super::topic::TOPIC_MAX;

/// Bytes of a slot before the topic.
pub(crate) const SLOT_HEADER: usize = 32;
/// Reader slots of a node.
pub(crate) const READERS: usize = 64;
/// Past any write position a publisher reaches (a thousand years at 100 M messages/s): a
/// larger one was written by something other than the publisher, and a reader refuses it
/// (its sequence arithmetic stays far from overflow).
pub(crate) const MAX_SEQ: u64 = 1 << 62;
/// How many messages ahead the publisher asks for its slot's lines (at most half the ring).
const PREFETCH_AHEAD: u64 = 16;

const H_SLOTS: usize = 0;
const H_SLOT_BYTES: usize = 4;
const H_NODE: usize = 8;
/// The write position, on a line of its own: a subscriber that has caught up reads it
/// between messages, and on the first line it took the reader set and the space word from
/// the publisher, which reads them on every publish (two alternating series of 8 runs, 64 B:
/// one-subscriber stream 18.2 -> 20.0 M msg/s, 4-subscriber fan-out 23.4 -> 26.0 M,
/// 8 subscribers 31.4 -> 33.7 M, round trip 692 -> 654 ns in the second).
const H_WRITE_SEQ: usize = 128;
const H_SPACE: usize = 24;
const H_WRITER_WAITING: usize = 28;
const H_ACTIVE: usize = 32;
const H_CATALOG_LEN: usize = 40;
/// Counts the catalog records withdrawn or declared again in place ([`NodeSeg::catalog_mark`]):
/// a reader that kept what it read by offset reads the whole catalog again when it changes.
const H_CATALOG_GEN: usize = 44;
/// 1 + the write sequence at which the catalog became too full to be sure of listing every
/// topic (see [`catalog_near_full`]), 0 before.
const H_CATALOG_FULL_SEQ: usize = 48;
/// How many of this node's readers are asleep (or about to sleep): on a cache line of its own,
/// which subscribers write only when they go to sleep or wake, so that a publisher can tell
/// with one load that it need not look at any reader's doorbell.
const H_READERS_SLEEPING: usize = 64;

const OFF_READERS: usize = 192;
const READER: usize = 64;
const R_STATE: usize = 0;
const R_ENTRY: usize = 4;
const R_CURSOR: usize = 8;
const R_DROPS: usize = 16;
const R_DEPTH: usize = 24;
const R_POLICY: usize = 28;
const R_DELIVERED: usize = 32;
/// 0: the reader reads the ring. 1 + a catalog offset: a block-policy reader that found no
/// topic it matches in the catalog before that offset, and reads nothing until one comes
/// (see [`NodeSeg::block_limits`]).
const R_PARKED: usize = 40;

const OFF_CATALOG: usize = OFF_READERS + READERS * READER;
pub(crate) const CATALOG_BYTES: usize = 64 * 1024;
const OFF_RING: usize = OFF_CATALOG + CATALOG_BYTES;
// Slots start 64-byte aligned in the mapping (see `NodeSeg::slot_ptr`): the ring's offset
// and the segment header before the data are multiples of 64, and so is a slot (512 bytes
// or more, a power of two: checked on `open`, and by the URL parser for `create`).
const _: () = assert!(OFF_RING % 64 == 0 && crate::shm::HEADER_LEN % 64 == 0);

/// Lock bytes of the reader slots, held by the reading process on its own descriptor.
const LOCK_READER: u64 = 1 << 41;

/// Reader policies (as stored).
pub(crate) const POLICY_DROP: u32 = 0;
pub(crate) const POLICY_BLOCK: u32 = 1;

/// Message kinds (as stored in the slot).
pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_REQUEST: u8 = 2;
pub(crate) const KIND_REPLY: u8 = 3;

/// Catalog record kinds.
pub(crate) const CAT_PUBLISH: u8 = 1;
pub(crate) const CAT_SERVE: u8 = 2;
pub(crate) const CAT_SUBSCRIBE: u8 = 3;
/// Set in a record's kind byte while what it declares is withdrawn (a subscription or a
/// responder dropped while its node lives on).
const CAT_WITHDRAWN: u8 = 0x80;

/// Marks the node layout (5: catalog records can be withdrawn in place; 4: reader slots can
/// be parked, the catalog says when it filled).
struct BusNodeV5;

/// The fixed part of a slot, as the writer fills it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SlotHeader {
    pub len: u32,
    pub topic_len: u16,
    pub kind: u8,
    pub corr: u64,
    pub reply_to: u64,
}

impl SlotHeader {
    /// The header's three words after the stamp, as stored (little-endian): `len`,
    /// `topic_len` and `kind` in the first (as [`SlotHead`] reads it), then `corr` and
    /// `reply_to`.
    fn words(&self) -> [u64; 3] {
        let first =
            u64::from(self.len) | u64::from(self.topic_len) << 32 | u64::from(self.kind) << 48;
        [first.to_le(), self.corr.to_le(), self.reply_to.to_le()]
    }
}

/// The first word of a slot's header as a reader found it (little-endian `len`,
/// `topic_len`, `kind`), taken apart only where a field is used. (A header copied field by
/// field into a struct and read back as words stalled every read on store forwarding, a
/// quarter of a subscriber's time in an 8-subscriber fan-out. The header's two other words,
/// `corr` and `reply_to`, are read on their own ([`Slot::refs`]): carried in one
/// value with this one, the three words went through the stack as two 8-byte stores read
/// back as one 16-byte load, again a load store forwarding cannot serve, 17.7 % of
/// `poll_once`'s samples in that fan-out.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotHead(u64);

impl SlotHead {
    /// Payload bytes.
    pub fn len(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// Topic bytes (before the payload).
    pub fn topic_len(self) -> usize {
        ((self.0 >> 32) & 0xffff) as usize
    }

    pub fn kind(self) -> u8 {
        (self.0 >> 48) as u8
    }
}

/// A slot whose header announces more than the slot holds.
#[cold]
#[inline(never)]
fn bad_sizes(seq: u64, h: SlotHead, capacity: usize) -> SlotRead {
    SlotRead::Corrupt(format!(
        "message {seq}: topic of {} bytes and payload of {} bytes in a slot of {capacity}",
        h.topic_len(),
        h.len(),
    ))
}

/// One catalog record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CatalogEntry {
    pub kind: u8,
    /// Its node withdrew it (see [`NodeSeg::catalog_mark`]).
    pub withdrawn: bool,
    /// The node's write sequence when it declared the topic (its first message on it).
    pub seq: u64,
    pub topic: String,
}

/// A node segment, mapped, with its checked geometry.
pub(crate) struct NodeSeg {
    seg: Segment,
    slots: u32,
    slot_bytes: u32,
    node_id: u64,
}

impl std::fmt::Debug for NodeSeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSeg")
            .field("node", &format_args!("{:016x}", self.node_id))
            .field("slots", &self.slots)
            .field("slot_bytes", &self.slot_bytes)
            .finish()
    }
}

/// A catalog offset as a parked reader states it (`protocol::park`).
fn catalog_offset(checked: usize) -> u32 {
    checked.min(CATALOG_BYTES) as u32
}

/// Whether a catalog of `len` bytes may have had to leave a topic out: less room is left than
/// the longest record takes.
fn catalog_near_full(len: usize) -> bool {
    CATALOG_BYTES.saturating_sub(len) < 10 + TOPIC_MAX
}

fn ring_len(slots: u32, slot_bytes: u32) -> usize {
    OFF_RING + slots as usize * slot_bytes as usize
}

/// Whether a ring of `slots` slots of `slot_bytes` is one this module reads and writes:
/// powers of two (`slot_off` masks the sequence), slots of 512 bytes or more (whole lines,
/// room for the header and a topic), 16 GiB at most.
fn geometry_ok(slots: u32, slot_bytes: u32) -> bool {
    slots.is_power_of_two()
        && (16..=65536).contains(&slots)
        && slot_bytes.is_power_of_two()
        && (512..=32 << 20).contains(&slot_bytes)
        && u64::from(slots) * u64::from(slot_bytes) <= 1 << 34
}

impl NodeSeg {
    /// Creates this process's node segment (removed when dropped).
    pub(crate) fn create(
        namespace: &str,
        node_id: u64,
        slots: u32,
        slot_bytes: u32,
    ) -> Result<NodeSeg> {
        if !geometry_ok(slots, slot_bytes) {
            // The URL parser allows no other geometry.
            return Err(Error::Unsupported {
                op: "a ring whose slot count or slot size is not a power of two in range \
                     (16 to 65536 slots of 512 bytes to 32 MiB)",
                what: "bus://local",
            });
        }
        let seg = Segment::builder(&node_name(namespace, node_id))
            .size(ring_len(slots, slot_bytes))
            .typed::<BusNodeV5>()
            .create()?;
        seg.write(H_SLOTS, &slots)?;
        seg.write(H_SLOT_BYTES, &slot_bytes)?;
        seg.write(H_NODE, &node_id)?;
        Ok(NodeSeg {
            seg,
            slots,
            slot_bytes,
            node_id,
        })
    }

    /// Opens another node's segment and checks its geometry.
    pub(crate) fn open(namespace: &str, node_id: u64) -> Result<NodeSeg> {
        let name = node_name(namespace, node_id);
        let seg = Segment::builder(&name).typed::<BusNodeV5>().open()?;
        let slots: u32 = seg.read(H_SLOTS)?;
        let slot_bytes: u32 = seg.read(H_SLOT_BYTES)?;
        let id: u64 = seg.read(H_NODE)?;
        let ok = geometry_ok(slots, slot_bytes)
            && seg.len() == ring_len(slots, slot_bytes)
            && id == node_id;
        if !ok {
            return Err(Error::Corrupted(format!(
                "bus node {name}: {slots} slots of {slot_bytes} bytes, node {id:016x}, \
                 segment of {} bytes",
                seg.len()
            )));
        }
        Ok(NodeSeg {
            seg,
            slots,
            slot_bytes,
            node_id,
        })
    }

    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// The largest topic + payload a slot carries.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.slot_bytes as usize - SLOT_HEADER
    }

    #[inline]
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(
            off % 4 == 0 && off + 4 <= OFF_RING,
            "a word before the ring"
        );
        // SAFETY: the mapping's data starts 64-byte aligned and holds at least `OFF_RING`
        // bytes (`create` and `open` check its length against the geometry), so this is an
        // aligned word inside it, mapped while `self` is borrowed (the reference's lifetime).
        // Another process may access it concurrently; every access is atomic.
        unsafe { &*self.seg.as_ptr().add(off).cast::<AtomicU32>() }
    }

    #[inline]
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= OFF_RING,
            "a word before the ring"
        );
        // SAFETY: as for `u32_at`.
        unsafe { &*self.seg.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Readers of this node asleep or about to be (see `H_READERS_SLEEPING`).
    #[inline]
    pub(crate) fn readers_sleeping(&self) -> &AtomicU32 {
        self.u32_at(H_READERS_SLEEPING)
    }

    /// Messages published so far (the next one's sequence number).
    #[inline]
    pub(crate) fn write_seq(&self) -> &AtomicU64 {
        self.u64_at(H_WRITE_SEQ)
    }

    /// The word readers bump when they make room for a waiting writer.
    pub(crate) fn space(&self) -> &AtomicU32 {
        self.u32_at(H_SPACE)
    }

    /// 0, or 1 + the reader slot a publisher waiting for room waits for.
    pub(crate) fn writer_waiting(&self) -> &AtomicU32 {
        self.u32_at(H_WRITER_WAITING)
    }

    /// Bit `i` set: reader slot `i` is in use.
    pub(crate) fn active(&self) -> &AtomicU64 {
        self.u64_at(H_ACTIVE)
    }

    #[inline]
    fn reader_u32(&self, i: usize, field: usize) -> &AtomicU32 {
        assert!(i < READERS);
        self.u32_at(OFF_READERS + i * READER + field)
    }

    #[inline]
    fn reader_u64(&self, i: usize, field: usize) -> &AtomicU64 {
        assert!(i < READERS);
        self.u64_at(OFF_READERS + i * READER + field)
    }

    // ---- the catalog ------------------------------------------------------------------

    /// Appends a record; its offset, or `None` if the catalog is full (the topic still
    /// works, it is just not listed). Only the owning node writes its catalog. The sequence
    /// number at which the catalog becomes [near full](catalog_near_full) is noted first
    /// ([`catalog_full_since`](Self::catalog_full_since)).
    pub(crate) fn catalog_append(&self, kind: u8, seq: u64, topic: &str) -> Result<Option<usize>> {
        let len_word = self.u32_at(H_CATALOG_LEN);
        let used = len_word.load(Ordering::Relaxed) as usize;
        let rec = 10 + topic.len();
        let fits = topic.len() <= TOPIC_MAX && used + rec <= CATALOG_BYTES;
        if !fits || catalog_near_full(used + rec) {
            let full = self.u64_at(H_CATALOG_FULL_SEQ);
            if full.load(Ordering::Relaxed) == 0 {
                // Release: before the length that says it, for a reader of both.
                full.store(seq.saturating_add(1), Ordering::Release);
            }
        }
        if !fits {
            return Ok(None);
        }
        let off = OFF_CATALOG + used;
        self.catalog_kind(used).store(kind, Ordering::Relaxed);
        self.seg.write(off + 1, &(topic.len() as u8))?;
        self.seg.write(off + 2, &seq)?;
        self.seg.write_bytes(off + 10, topic.as_bytes())?;
        len_word.store((used + rec) as u32, Ordering::Release);
        Ok(Some(used))
    }

    /// The kind byte of the record at catalog offset `at`, written in place when the record is
    /// withdrawn or declared again, so always accessed atomically.
    fn catalog_kind(&self, at: usize) -> &AtomicU8 {
        assert!(at < CATALOG_BYTES, "a record inside the catalog");
        // SAFETY: the byte is before `OFF_RING`, inside the mapping (see `u32_at`), and
        // `AtomicU8` needs no alignment. Another process may access it concurrently; every
        // access is atomic.
        unsafe { &*self.seg.as_ptr().add(OFF_CATALOG + at).cast::<AtomicU8>() }
    }

    /// Withdraws the record this node appended at catalog offset `at` (`catalog_append`'s
    /// value), or declares it again: its kind byte says which, so a subscription or responder
    /// made and dropped over and over takes one record, not one per round. Readers see the
    /// change through [`catalog_gen`](Self::catalog_gen). Only the node's own process calls
    /// it, one call per record at a time.
    pub(crate) fn catalog_mark(&self, at: usize, withdrawn: bool) {
        let kind = self.catalog_kind(at);
        let k = kind.load(Ordering::Relaxed) & !CAT_WITHDRAWN;
        kind.store(
            if withdrawn { k | CAT_WITHDRAWN } else { k },
            Ordering::Relaxed,
        );
        // Release: after the byte, for a reader that reads the count and then the catalog.
        self.u32_at(H_CATALOG_GEN).fetch_add(1, Ordering::Release);
    }

    /// How many times records were withdrawn or declared again in place: while it stays the
    /// same, the records read so far stand as read.
    pub(crate) fn catalog_gen(&self) -> u32 {
        self.u32_at(H_CATALOG_GEN).load(Ordering::Acquire)
    }

    /// The write sequence from which the catalog may not list every topic published (it was
    /// near full), if it came to that.
    pub(crate) fn catalog_full_since(&self) -> Option<u64> {
        self.u64_at(H_CATALOG_FULL_SEQ)
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// The catalog records from byte `from` on, and the byte offset after the last one read.
    /// Stops at the first malformed record.
    pub(crate) fn catalog(&self, from: usize) -> (Vec<CatalogEntry>, usize) {
        let (out, pos, _) = self.catalog_read(from);
        (out, pos)
    }

    /// [`catalog`](Self::catalog), and whether the catalog may not list every topic the node
    /// publishes: it holds a record that does not parse (where the read stopped), or it is
    /// so full that a record may not have fitted (`catalog_append` then lists nothing).
    pub(crate) fn catalog_read(&self, from: usize) -> (Vec<CatalogEntry>, usize, bool) {
        let end = (self.u32_at(H_CATALOG_LEN).load(Ordering::Acquire) as usize).min(CATALOG_BYTES);
        let mut out = Vec::new();
        let mut pos = from;
        while pos + 10 <= end {
            let off = OFF_CATALOG + pos;
            let raw = self.catalog_kind(pos).load(Ordering::Relaxed);
            let (kind, withdrawn) = (raw & !CAT_WITHDRAWN, raw & CAT_WITHDRAWN != 0);
            let (Ok(len), Ok(seq)) = (self.seg.read::<u8>(off + 1), self.seg.read::<u64>(off + 2))
            else {
                break;
            };
            let len = len as usize;
            if pos + 10 + len > end || !(CAT_PUBLISH..=CAT_SUBSCRIBE).contains(&kind) {
                break;
            }
            let mut buf = vec![0u8; len];
            if self.seg.read_bytes(off + 10, &mut buf).is_err() {
                break;
            }
            let Ok(topic) = String::from_utf8(buf) else {
                break;
            };
            out.push(CatalogEntry {
                kind,
                withdrawn,
                seq,
                topic,
            });
            pos += 10 + len;
        }
        let incomplete = pos < end || catalog_near_full(end);
        (out, pos, incomplete)
    }

    // ---- the ring: writer side --------------------------------------------------------

    #[inline]
    fn slot_off(&self, seq: u64) -> usize {
        OFF_RING + (seq & u64::from(self.slots - 1)) as usize * self.slot_bytes as usize
    }

    /// Where message `seq`'s slot starts in this mapping: 64-byte aligned (the mapping's data
    /// starts 64-byte aligned, and `OFF_RING` and `slot_bytes` are multiples of 64), and the
    /// whole slot (`slot_bytes`) inside the mapping, whose length `create` and `open` checked
    /// to be `ring_len(slots, slot_bytes)`. The slot's bytes are accessed only through the
    /// raw pointer (copies) and its stamp only atomically: another process may write them.
    #[inline]
    fn slot_ptr(&self, seq: u64) -> *mut u8 {
        self.seg.as_ptr().wrapping_add(self.slot_off(seq))
    }

    /// Message `seq`'s slot, located once for the reads of one message.
    #[inline]
    pub(crate) fn slot(&self, seq: u64) -> Slot<'_> {
        Slot {
            p: self.slot_ptr(seq),
            capacity: self.capacity(),
            seq,
            _seg: std::marker::PhantomData,
        }
    }

    /// Writes message `seq` (the caller is the only writer and has checked the sizes).
    pub(crate) fn write_slot(&self, seq: u64, h: &SlotHeader, topic: &[u8], payload: &[u8]) {
        let fits = topic.len() + payload.len() <= self.capacity();
        assert!(fits, "the caller checks a message's size against the slot");
        let slot = self.slot(seq);
        let p = slot.p;
        let stamp = slot.stamp();
        protocol::open_slot(stamp, seq);
        // SAFETY: the header's words and then topic and payload, `SLOT_HEADER +
        // topic.len() + payload.len() <= slot_bytes` bytes (checked above) from the slot's
        // start, all inside the mapping (`slot_ptr`), aligned words for the header. Raw
        // writes: no reference into the shared bytes is formed, and the sources are this
        // process's own memory, which never overlaps the mapping.
        unsafe {
            let words = p.cast::<u64>();
            for (i, w) in h.words().into_iter().enumerate() {
                words.add(1 + i).write(w);
            }
            let body = p.add(SLOT_HEADER);
            std::ptr::copy_nonoverlapping(topic.as_ptr(), body, topic.len());
            std::ptr::copy_nonoverlapping(payload.as_ptr(), body.add(topic.len()), payload.len());
        }
        protocol::seal_slot(stamp, self.write_seq(), seq);
        // A later message's slot, owned ahead of time (as many lines as this message took,
        // at most two): its lines come while the publisher does something else (waits for a
        // reply, builds the next messages) instead of when it writes there. Same binary, a
        // switch on against off, medians of 12 alternating runs: one-subscriber stream 7.4 M
        // -> 9.8 M msg/s, round trip 829 -> 747 ns; 8-subscriber fan-out unchanged. The slot
        // [`PREFETCH_AHEAD`] messages on rather than the next: a line that a subscriber on
        // another CPU read takes longer to own than one publish lasts (8 alternating runs:
        // stream 9.8 M msg/s one ahead, 12.6 M sixteen ahead, 14.9 M thirty-two ahead; round
        // trip 736, 761, 786 ns; 10 more runs of sixteen against one: 778 against 765 ns).
        let ahead = PREFETCH_AHEAD.min(u64::from(self.slots / 2));
        let next = self.slot_off(seq + ahead);
        let lines = (SLOT_HEADER + topic.len() + payload.len())
            .div_ceil(64)
            .min(2);
        for l in 0..lines {
            // In the mapping: a slot has at least 512 bytes. A hint only: no access is made.
            sys::prefetch_write(self.seg.as_ptr().wrapping_add(next + 64 * l));
        }
    }

    /// Writes arbitrary bytes as the body of message `seq` with a valid stamp (tests of
    /// malformed messages only).
    pub(crate) fn write_raw_slot(&self, seq: u64, raw: &[u8]) -> Result<()> {
        let off = self.slot_off(seq);
        let n = raw.len().min(self.slot_bytes as usize - 8);
        let stamp = self.slot(seq).stamp();
        protocol::open_slot(stamp, seq);
        self.seg.write_bytes(off + 8, &raw[..n])?;
        protocol::seal_slot(stamp, self.write_seq(), seq);
        Ok(())
    }

    /// What changes whenever a reader joins or leaves (or a waiting writer is woken): the
    /// active mask and the space word, which claims and releases bump.
    #[inline]
    pub(crate) fn room_key(&self) -> (u64, u32) {
        (
            self.active().load(Ordering::Acquire),
            self.space().load(Ordering::Acquire),
        )
    }

    /// The first message that some block-policy reader has no room for, as of now
    /// (`u64::MAX` with no such reader); `seq` is the next message to write. `owed`: see
    /// [`block_limits`](Self::block_limits).
    pub(crate) fn room_until(&self, seq: u64, owed: impl Fn(usize) -> Option<u64>) -> u64 {
        self.block_limits(seq, owed)
            .map(|(_, limit)| limit)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Which block-policy reader has no room for message `seq`, if any.
    pub(crate) fn blocking_reader(
        &self,
        seq: u64,
        owed: impl Fn(usize) -> Option<u64>,
    ) -> Option<usize> {
        self.block_limits(seq, owed)
            .find(|&(_, limit)| seq >= limit)
            .map(|(i, _)| i)
    }

    /// The active block-policy readers that hold messages back, each with the first message
    /// it has no room for (its cursor plus its depth; a cursor ahead of `seq`, the writer's,
    /// is a lie and counts as caught up).
    ///
    /// A parked reader (`R_PARKED`: it found no topic it matches in the catalog before some
    /// offset, and reads nothing) holds back only the messages of topics listed from that
    /// offset on, which it has not looked at yet: `owed(offset)` is the first such message
    /// (`None`: there are none), where the reader stands as far as the writer is concerned
    /// until it has looked. It then either moves the offset on, or reads from at least that
    /// message.
    fn block_limits<'a>(
        &'a self,
        seq: u64,
        owed: impl Fn(usize) -> Option<u64> + 'a,
    ) -> impl Iterator<Item = (usize, u64)> + 'a {
        let mut mask = self.active().load(Ordering::Acquire);
        std::iter::from_fn(move || {
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if self.reader_u32(i, R_STATE).load(Ordering::Acquire) != 1
                    || self.reader_u32(i, R_POLICY).load(Ordering::Relaxed) != POLICY_BLOCK
                {
                    continue;
                }
                let depth = u64::from(self.reader_u32(i, R_DEPTH).load(Ordering::Relaxed))
                    .clamp(1, u64::from(self.slots));
                if let Some(limit) = protocol::parked_room_limit(
                    self.reader_u32(i, R_PARKED),
                    self.reader_u64(i, R_CURSOR),
                    seq,
                    depth,
                    &owed,
                ) {
                    return Some((i, limit));
                }
            }
            None
        })
    }

    /// The registry entries of the nodes reading this one (to wake them).
    pub(crate) fn for_each_reader_entry(&self, mut f: impl FnMut(usize)) {
        let mut mask = self.active().load(Ordering::Acquire);
        let mut last = usize::MAX;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let e = self.reader_u32(i, R_ENTRY).load(Ordering::Relaxed) as usize;
            if e != last {
                f(e);
                last = e;
            }
        }
    }

    /// Frees the reader slots whose process has gone (their lock is free). Returns how many.
    pub(crate) fn reclaim_dead_readers(&self) -> usize {
        let mut n = 0;
        let mut mask = self.active().load(Ordering::Acquire);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let held =
                sys::ofd_locked_by_other(self.seg.fd(), LOCK_READER + i as u64, 1).unwrap_or(true);
            if !held {
                self.reader_u32(i, R_STATE).store(0, Ordering::Release);
                self.active().fetch_and(!(1u64 << i), Ordering::AcqRel);
                n += 1;
            }
        }
        n
    }

    /// Per-reader figures, for [`super::Bus::stats`].
    pub(crate) fn readers(&self) -> Vec<super::ReaderStats> {
        let seq = self.write_seq().load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut mask = self.active().load(Ordering::Acquire);
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let policy = self.reader_u32(i, R_POLICY).load(Ordering::Relaxed);
            let depth = u64::from(self.reader_u32(i, R_DEPTH).load(Ordering::Relaxed))
                .clamp(1, u64::from(self.slots));
            let cursor = self
                .reader_u64(i, R_CURSOR)
                .load(Ordering::Relaxed)
                .min(seq);
            let parked = self.reader_u32(i, R_PARKED).load(Ordering::Acquire) != 0;
            let lag = if parked { 0 } else { seq - cursor };
            // Messages a drop reader will find overwritten, but has not counted yet.
            let pending_drops = if policy == POLICY_DROP {
                lag.saturating_sub(depth)
            } else {
                0
            };
            out.push(super::ReaderStats {
                overflow: if policy == POLICY_BLOCK {
                    super::Overflow::Block
                } else {
                    super::Overflow::DropOldest
                },
                depth: depth as u32,
                parked,
                lag,
                delivered: self.reader_u64(i, R_DELIVERED).load(Ordering::Relaxed),
                drops: self
                    .reader_u64(i, R_DROPS)
                    .load(Ordering::Relaxed)
                    .saturating_add(pending_drops),
            });
        }
        out
    }

    // ---- the ring: reader side --------------------------------------------------------

    /// Claims a reader slot for a subscription of the node at registry entry `entry`.
    pub(crate) fn claim_reader(
        &self,
        entry: usize,
        policy: u32,
        depth: u32,
        cursor: u64,
        parked: Option<usize>,
    ) -> Result<Option<usize>> {
        for i in 0..READERS {
            if !sys::ofd_lock(self.seg.fd(), LOCK_READER + i as u64, 1, true)? {
                continue;
            }
            self.reader_u32(i, R_ENTRY)
                .store(entry as u32, Ordering::Relaxed);
            self.reader_u32(i, R_POLICY)
                .store(policy, Ordering::Relaxed);
            self.reader_u32(i, R_DEPTH).store(depth, Ordering::Relaxed);
            self.reader_u64(i, R_CURSOR)
                .store(cursor, Ordering::Relaxed);
            self.reader_u64(i, R_DROPS).store(0, Ordering::Relaxed);
            self.reader_u64(i, R_DELIVERED).store(0, Ordering::Relaxed);
            let parked_word = self.reader_u32(i, R_PARKED);
            parked_word.store(0, Ordering::Relaxed);
            if let Some(checked) = parked {
                protocol::park(parked_word, catalog_offset(checked));
            }
            self.reader_u32(i, R_STATE).store(1, Ordering::Release);
            self.active().fetch_or(1u64 << i, Ordering::AcqRel);
            // A new reader changes the writer's room key even if it takes the bit of one
            // that just left.
            self.space().fetch_add(1, Ordering::AcqRel);
            return Ok(Some(i));
        }
        Ok(None)
    }

    /// Gives a reader slot back (its lock goes with this mapping's descriptor).
    pub(crate) fn release_reader(&self, i: usize) {
        self.reader_u32(i, R_STATE).store(0, Ordering::Release);
        self.active().fetch_and(!(1u64 << i), Ordering::AcqRel);
        self.space().fetch_add(1, Ordering::AcqRel);
        // Whichever reader a waiting publisher waits for: it must look at the readers again.
        if self.writer_waiting().load(Ordering::Relaxed) != 0 {
            sys::futex_wake(self.space(), u32::MAX);
        }
    }

    /// Publishes reader `i`'s position; `wake_writer`: whether a publisher waiting for room
    /// should be woken now (the caller wakes it only once it has made room for a batch, not
    /// for every message: a publisher woken for one slot blocks again at once, and the two
    /// processes then pay a wake-up per message).
    #[inline]
    pub(crate) fn set_cursor(
        &self,
        i: usize,
        cursor: u64,
        delivered: u64,
        drops: u64,
        wake_writer: bool,
    ) {
        protocol::publish_cursor(self.reader_u64(i, R_CURSOR), cursor);
        self.reader_u64(i, R_DELIVERED)
            .store(delivered, Ordering::Relaxed);
        self.reader_u64(i, R_DROPS).store(drops, Ordering::Relaxed);
        if wake_writer {
            self.notify_writer(i);
        }
    }

    /// Parks reader `i` (it has looked at the catalog up to `checked` and reads nothing), or
    /// moves `checked` on, and wakes a publisher waiting for it.
    pub(crate) fn park_reader(&self, i: usize, checked: usize) {
        protocol::park(self.reader_u32(i, R_PARKED), catalog_offset(checked));
        self.notify_writer(i);
    }

    /// Unparks reader `i`, which reads from message `at` on (its figures are stored too),
    /// and wakes a publisher waiting for it.
    pub(crate) fn unpark_reader(&self, i: usize, at: u64, delivered: u64, drops: u64) {
        self.reader_u64(i, R_DELIVERED)
            .store(delivered, Ordering::Relaxed);
        self.reader_u64(i, R_DROPS).store(drops, Ordering::Relaxed);
        protocol::unpark(
            self.reader_u32(i, R_PARKED),
            self.reader_u64(i, R_CURSOR),
            at,
        );
        self.notify_writer(i);
    }

    /// Wakes a publisher waiting for room on reader `i`, the caller (the other half of the
    /// handshake in `wait_for_room`: the caller stored its cursor before). A publisher
    /// waiting for another reader is left alone.
    #[inline]
    pub(crate) fn notify_writer(&self, i: usize) {
        if protocol::waited_for(self.writer_waiting(), i) {
            protocol::make_room(self.space());
            sys::futex_wake(self.space(), u32::MAX);
        }
    }
}

/// One slot of a node's ring, located in the mapping (`NodeSeg::slot`): what a reader reads of
/// one message. Its pointer is valid while the segment it came from is borrowed.
pub(crate) struct Slot<'a> {
    /// The slot's start (`NodeSeg::slot_ptr`: aligned, the whole slot inside the mapping).
    p: *mut u8,
    /// Topic + payload bytes the slot holds.
    capacity: usize,
    seq: u64,
    _seg: std::marker::PhantomData<&'a NodeSeg>,
}

impl<'a> Slot<'a> {
    /// The slot's stamp (its first word).
    #[inline]
    fn stamp(&self) -> &'a AtomicU64 {
        // SAFETY: `p` is 8-byte aligned and its first 8 bytes are inside the mapping, which
        // stays mapped for `'a` (the segment's borrow). Another process may access the word
        // concurrently; every access here is atomic.
        unsafe { &*self.p.cast::<AtomicU64>() }
    }

    /// Word `i` (1 to 3) of the header, as stored.
    #[inline]
    fn header_word(&self, i: usize) -> u64 {
        assert!(
            (1..SLOT_HEADER / 8).contains(&i),
            "a header word after the stamp"
        );
        // SAFETY: an aligned word inside the slot's header, inside the mapping (`p`); copied
        // out through the raw pointer, no reference formed; any bits are a `u64`.
        u64::from_le(unsafe { self.p.cast::<u64>().add(i).read() })
    }

    /// Reads the message's header and checks its sizes: the stamp it was read under (hand it
    /// to [`Slot::unchanged`] once the body is read) and the header, whose topic and payload
    /// are known to fit the slot.
    #[inline]
    pub(crate) fn head(&self) -> Result<(u64, SlotHead), SlotRead> {
        // `seq` is at most `MAX_SEQ` (callers check the write position).
        let s1 = protocol::stamp_of(self.stamp(), self.seq)?;
        let h = SlotHead(self.header_word(1));
        let total = h.topic_len() + h.len();
        if h.topic_len() == 0 || h.topic_len() > TOPIC_MAX || total > self.capacity {
            if !self.unchanged(s1) {
                return Err(SlotRead::Overwritten);
            }
            return Err(bad_sizes(self.seq, h, self.capacity));
        }
        Ok((s1, h))
    }

    /// The message's `corr` and `reply_to` words. Read before [`Slot::unchanged`] confirms
    /// what was read since [`Slot::head`].
    #[inline]
    pub(crate) fn refs(&self) -> (u64, u64) {
        (self.header_word(2), self.header_word(3))
    }

    /// Copies `out.len()` bytes of the body (topic, then payload) from `at` bytes into it;
    /// false (and nothing copied) if that is more than the slot holds.
    #[inline]
    fn copy_body(&self, at: usize, out: &mut [u8]) -> bool {
        if at > self.capacity || out.len() > self.capacity - at {
            return false;
        }
        // SAFETY: `SLOT_HEADER + at + out.len() <= slot_bytes` (checked above): inside the
        // slot, inside the mapping (`p`). A raw copy into this process's own buffer, which
        // never overlaps the mapping; no reference into the shared bytes is formed.
        unsafe {
            let from = self.p.add(SLOT_HEADER + at);
            std::ptr::copy_nonoverlapping(from, out.as_mut_ptr(), out.len());
        }
        true
    }

    /// Copies the first `out.len()` bytes of the body (topic, then payload); false if that is
    /// more than a slot holds (callers pass sizes [`Slot::head`] checked, so it is not).
    #[inline]
    pub(crate) fn body(&self, out: &mut [u8]) -> bool {
        self.copy_body(0, out)
    }

    /// Reads the payload, which follows the topic of `topic_len` bytes, into `out` (its
    /// length). False if that is more than a slot holds.
    #[inline]
    pub(crate) fn payload(&self, topic_len: usize, out: &mut [u8]) -> bool {
        self.copy_body(topic_len, out)
    }

    /// Whether the slot still has stamp `s1`: what was read from it since [`Slot::head`] is
    /// whole (the writer did not start overwriting it meanwhile).
    #[inline]
    pub(crate) fn unchanged(&self, s1: u64) -> bool {
        protocol::unchanged(self.stamp(), s1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(tag: &str) -> String {
        format!("nodeseg-{tag}-{}", std::process::id())
    }

    /// Slots are reached through raw pointers that rely on the geometry: a ring of another
    /// one is refused before anything is created.
    #[test]
    fn a_ring_of_another_geometry_is_refused() {
        for (slots, bytes) in [(100, 512), (16, 500), (16, 256), (8, 512), (1 << 17, 512)] {
            let r = NodeSeg::create(&ns("geometry"), 1, slots, bytes);
            assert!(
                matches!(r, Err(Error::Unsupported { .. })),
                "{slots} x {bytes}: {r:?}"
            );
        }
    }

    #[test]
    fn a_written_slot_reads_back_whole() {
        let seg = NodeSeg::create(&ns("roundtrip"), 2, 16, 512).unwrap();
        let h = SlotHeader {
            len: 5,
            topic_len: 3,
            kind: 2,
            corr: 0x0102_0304_0506_0708,
            reply_to: u64::MAX - 1,
        };
        // Twice round the ring: the second lap reuses the slots.
        for seq in [3, 19] {
            seg.write_slot(seq, &h, b"a/b", b"hello");
            let slot = seg.slot(seq);
            let Ok((s1, head)) = slot.head() else {
                panic!("message {seq} does not read back");
            };
            assert_eq!((head.len(), head.topic_len(), head.kind()), (5, 3, 2));
            assert_eq!(slot.refs(), (h.corr, h.reply_to));
            let mut body = [0u8; 8];
            assert!(slot.body(&mut body));
            assert_eq!(&body, b"a/bhello");
            let mut payload = [0u8; 5];
            assert!(slot.payload(3, &mut payload));
            assert_eq!(&payload, b"hello");
            assert!(slot.unchanged(s1));
        }
        assert!(matches!(seg.slot(3).head(), Err(SlotRead::Overwritten)));
    }

    /// The copies out of a slot stop at its end whatever sizes they are asked for.
    #[test]
    fn copies_past_a_slot_are_refused() {
        let seg = NodeSeg::create(&ns("bounds"), 3, 16, 512).unwrap();
        let cap = seg.capacity();
        let mut buf = vec![0u8; cap + 1];
        let slot = seg.slot(15);
        assert!(!slot.body(&mut buf));
        assert!(slot.body(&mut buf[..cap]));
        assert!(!slot.payload(cap, &mut buf[..1]));
        assert!(!slot.payload(usize::MAX, &mut buf[..0]));
        assert!(slot.payload(cap, &mut buf[..0]));
        assert!(slot.payload(1, &mut buf[..cap - 1]));
    }
}
