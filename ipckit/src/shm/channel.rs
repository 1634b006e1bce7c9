//! `shm://name`: message channels in shared memory.
//!
//! `bind("shm://jobs")` creates a small rendezvous segment `jobs` with a backlog of slots.
//! `connect` creates a connection segment (`jobs~<id>`) holding two rings (client→server and
//! server→client), posts its id in a free slot and can send at once; `accept` takes the slot,
//! maps the connection segment and unlinks its name, so nothing is left in /dev/shm once both
//! sides have it mapped, whatever happens to them afterwards.
//!
//! Each side holds a lock on its role in the connection segment (and the listener one on the
//! rendezvous); the kernel drops it when the process dies, so a survivor blocked in a call
//! notices within one sleep slice (50 ms) and gets [`Error::Disconnected`] — no pid
//! comparison, so pid reuse cannot fool it.
//!
//! Waiting ([`WaitMode`]): `spin` busy-polls; `block` sleeps on a futex at once; `adaptive`
//! spins for up to `spin_us` while the peer is running (not itself asleep), then sleeps. A
//! side only issues a wake-up when the other has announced that it sleeps.

use std::ptr;
use std::time::{Duration, Instant};

use crate::connection::Inner;
use crate::endpoint::{Endpoint, WaitMode};
use crate::error::{Error, Result};
use crate::loom::{fence, futex_wait, futex_wake, spin_hint, AtomicU32, AtomicU64, Ordering};
use crate::shm::ring::{self, Consumer, Producer, RingControl, RingData};
use crate::shm::segment::{Segment, SegmentKind, LOCK_ATTACHED};
use crate::sync::{claim_slot, Acquired, MutexWords, SemWords, SlotLiveness};
use crate::sys;
use crate::transport::Wait;

#[cfg(all(feature = "tokio", not(loom)))]
mod wait_async;

/// Lock byte held by the client of a connection segment.
const LOCK_CLIENT: u64 = LOCK_ATTACHED + 1;
/// Lock byte held by the server (of a connection segment, and of the rendezvous).
const LOCK_SERVER: u64 = LOCK_ATTACHED + 2;

/// Longest a blocked call sleeps before it checks that the peer is alive.
const LIVENESS_SLICE: Duration = Duration::from_millis(50);

/// Longest sleep of a side whose peer publishes without a fence when the heavy fence that
/// should stand in for it failed (a wake-up may then be missed; this bounds the delay).
const UNFENCED_SLICE: Duration = Duration::from_millis(1);

/// The sleeper's half of the wake-up handshake, after it announced its sleep: a full fence,
/// and a heavy one (`membarrier`) if `peer_light` (read after the full fence) says the peer
/// is light (`WaitWords::light`). Returns the longest the sleep may last:
/// [`LIVENESS_SLICE`], or [`UNFENCED_SLICE`] when the heavy fence was needed and failed.
pub(super) fn sleep_fence(peer_light: impl FnOnce() -> bool) -> Duration {
    fence(Ordering::SeqCst);
    if peer_light() && !sys::heavy_fence() {
        UNFENCED_SLICE
    } else {
        LIVENESS_SLICE
    }
}

/// Spin-loop pauses between two looks at the consumer's position by a sender that waits
/// for space.
const SPACE_POLL_PAUSES: u32 = 16;

/// Pending connections a listener holds before `connect` has to wait.
const BACKLOG: usize = 32;

const SLOT_EMPTY: u32 = 0;
const SLOT_CLAIMED: u32 = 1;
const SLOT_READY: u32 = 2;

/// The header of a connection segment, written by the client before it posts the connection.
#[repr(C, align(128))]
struct ChannelHeader {
    capacity: u32,
    max_msg: u32,
    client_pid: u32,
    server_pid: AtomicU32,
    client_closed: AtomicU32,
    server_closed: AtomicU32,
    server_attached: AtomicU32,
    /// `FLAG_MPSC` for a many-producer queue.
    flags: u32,
    /// MPSC only: the producers' lock, free or held by a producer slot's token (see
    /// `OFF_PRODUCER_GENS`), taken over from a holder that died.
    tx_lock: MutexWords,
}

const FLAG_MPSC: u32 = 1;
/// The receivers wait on per-ring message counters (`wait=sem`).
const FLAG_SEM: u32 = 2;
/// Producers an MPSC queue admits at once.
const MPSC_PRODUCERS: u32 = 64;
/// Lock bytes of MPSC producer slots: `LOCK_PRODUCER + slot`.
const LOCK_PRODUCER: u64 = LOCK_ATTACHED + 16;

/// The ring format, recorded in each channel segment's type fingerprint: records whose
/// header check names their position and publishes them (see `shm::ring`), and sides that
/// may publish without a fence (`WaitWords::light`), sleeping on their announcement
/// (`ring::wake_sleeper`), not on the peer's position. A segment of an ipckit with an
/// earlier format is refused on open, not misread (nor slept on in the old way, which an
/// old peer would not wake); and (V5) MPSC producers' lock words and slot generations.
struct SealedRecordsFlagWakeSlotLockV5;

/// Offsets in a connection segment's data area.
const OFF_C2S: usize = 128;
const OFF_S2C: usize = 896;
/// Message counters of `wait=sem` connections, one per ring.
const OFF_SEM_C2S: usize = 1664;
const OFF_SEM_S2C: usize = 1728;
/// MPSC only: the generation of each producer slot's latest claim (`sync::claim_slot`).
const OFF_PRODUCER_GENS: usize = 1792;
/// Ring data starts on a page boundary of the mapping (the data area starts after the
/// 128-byte segment header).
const OFF_DATA: usize = 4096 - crate::shm::HEADER_LEN;

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<ChannelHeader>() == 128);
    assert!(OFF_C2S + std::mem::size_of::<RingControl>() == OFF_S2C);
    assert!(OFF_S2C + std::mem::size_of::<RingControl>() <= OFF_SEM_C2S);
    assert!(OFF_SEM_S2C + std::mem::size_of::<SemWords>() <= OFF_PRODUCER_GENS);
    assert!(OFF_PRODUCER_GENS + 4 * MPSC_PRODUCERS as usize <= OFF_DATA);
};

/// The MPSC producer slots' generations in a connection segment.
/// (std's atomics even under loom: slots are not part of any model.)
fn producer_gens(seg: &Segment) -> &[std::sync::atomic::AtomicU32] {
    // SAFETY: callers pass a connection segment checked to be at least OFF_DATA bytes (every
    // `ShmConn`'s is `channel_len(cap)`; `connect_mpsc` checks before it claims a slot), so
    // the 64 words at OFF_PRODUCER_GENS (4-aligned) are inside the mapping; atomics only (zero
    // in a fresh segment, a valid value); the borrow is tied to `seg`, which keeps it mapped.
    unsafe {
        &*seg
            .as_ptr()
            .add(OFF_PRODUCER_GENS)
            .cast::<[std::sync::atomic::AtomicU32; MPSC_PRODUCERS as usize]>()
    }
}

fn channel_len(cap: u32) -> usize {
    OFF_DATA + 2 * cap as usize
}

/// The rendezvous segment: a futex word bumped on every post, and the backlog.
#[repr(C)]
struct Rendezvous {
    posted: AtomicU32,
    _pad: u32,
    slots: [Slot; BACKLOG],
}

#[repr(C)]
struct Slot {
    state: AtomicU32,
    _pad: u32,
    conn_id: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Rendezvous>() == 8 + 16 * BACKLOG);

/// The `max_msg` an endpoint's URL asked for, if it asked.
fn explicit_max(ep: &Endpoint) -> Option<u32> {
    let m = ep.options().max_message_size;
    (m != crate::endpoint::DEFAULT_MAX_MESSAGE_SIZE).then(|| m.min(u32::MAX as usize) as u32)
}

/// Sizes a channel for an endpoint: the ring capacity grows to carry `max_msg`.
fn geometry(ep: &Endpoint) -> (u32, u32) {
    let o = ep.options();
    let explicit_max = o.max_message_size != crate::endpoint::DEFAULT_MAX_MESSAGE_SIZE;
    let mut cap = o.capacity.clamp(4096, 1 << 30) as u32;
    if explicit_max {
        while (ring::max_payload(cap) as usize) < o.max_message_size && cap < 1 << 30 {
            cap *= 2;
        }
    }
    let max = if explicit_max {
        (o.max_message_size as u32).min(ring::max_payload(cap))
    } else {
        ring::max_payload(cap)
    };
    (cap, max)
}

/// Ring bytes in the mapping; offsets come validated from the ring protocol.
struct ShmData {
    base: *mut u8,
}

impl RingData for ShmData {
    #[inline]
    fn write(&self, off: u32, src: &[u8]) {
        // SAFETY:
        // - the ring protocol only passes `off + src.len() <= cap`, and `base` points to `cap`
        //   mapped bytes owned by this connection's segment for as long as `self` exists;
        // - the range is producer-owned (not yet published), and is written through a raw
        //   pointer: no reference into shared memory is formed.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off as usize), src.len()) }
    }
    #[inline]
    fn read(&self, off: u32, dst: &mut [u8]) {
        // SAFETY: as for `write`, for a published, consumer-owned range.
        unsafe {
            ptr::copy_nonoverlapping(self.base.add(off as usize), dst.as_mut_ptr(), dst.len())
        }
    }
    #[inline]
    fn write_header(&self, off: u32, word: u64) {
        // SAFETY: `base + off` is 8-aligned (the mapping's data area starts on a page and
        // headers sit at multiples of 8) with 8 mapped bytes (the ring's contract); only
        // accessed atomically here and in `seal_hint`, through a pointer, never a reference
        // held across calls.
        let a =
            unsafe { std::sync::atomic::AtomicU64::from_ptr(self.base.add(off as usize).cast()) };
        a.store(u64::from_le(word), std::sync::atomic::Ordering::Relaxed);
    }
    #[inline]
    fn seal_hint(&self, off: u32) -> Option<u64> {
        // SAFETY: as in `write_header`.
        let a =
            unsafe { std::sync::atomic::AtomicU64::from_ptr(self.base.add(off as usize).cast()) };
        Some(u64::from_le(a.load(std::sync::atomic::Ordering::Relaxed)))
    }
    #[inline]
    fn prefetch_write(&self, off: u32) {
        sys::prefetch_write(self.base.wrapping_add(off as usize));
    }
    #[inline]
    fn prefetch_read(&self, off: u32) {
        sys::prefetch_read(self.base.wrapping_add(off as usize));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `shm://` client: sends client→server, receives server→client.
    Client,
    /// `shm://` server (accepted connection).
    Server,
    /// `shm+mpsc://` sender, one of up to 64, holding the producer slot its token names
    /// (`sync::claim_slot`).
    Producer { token: u32 },
    /// `shm+mpsc://` receiver.
    Consumer,
}

/// Counters of one connection, as seen from this side. Both sides see the same figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages this side sent.
    pub sent_messages: u64,
    /// Payload bytes this side sent.
    pub sent_bytes: u64,
    /// Messages this side received.
    pub received_messages: u64,
    /// Payload bytes this side received.
    pub received_bytes: u64,
    /// Times this side found the outgoing ring full and had to wait.
    pub full_waits: u64,
    /// Messages this side could not send because the ring stayed full (`try_send`, timeouts).
    pub drops: u64,
    /// The same four figures of the peer's direction.
    pub peer_sent_messages: u64,
    /// Messages the peer could not send (ring full).
    pub peer_drops: u64,
    /// Times the peer waited for space.
    pub peer_full_waits: u64,
}

/// One end of an `shm://` connection. Reached through [`crate::Connection::as_shm`] for the
/// zero-copy calls ([`loan`](Self::loan), [`recv_ref`](Self::recv_ref)) and
/// [`stats`](Self::stats); everything else goes through the shared message traits.
pub struct ShmConn {
    seg: Segment,
    /// Client only: the rendezvous, to watch the server until it has attached.
    rendezvous: Option<Segment>,
    role: Role,
    tx: Producer,
    rx: Consumer,
    tx_ctl: *const RingControl,
    rx_ctl: *const RingControl,
    tx_data: ShmData,
    rx_data: ShmData,
    /// `wait=sem`: counters of messages published into the outgoing and incoming rings.
    tx_sem: *const SemWords,
    rx_sem: *const SemWords,
    header: *const ChannelHeader,
    cap: u32,
    max: u32,
    mode: WaitMode,
    /// A client or server (both rings, one producer each): the send fast path applies.
    duplex: bool,
    /// Publishes and releases without a fence (see `lighten`).
    light: bool,
    spin: Duration,
    corrupted: bool,
}

// SAFETY: the raw pointers point into `seg`'s mapping, which the struct owns and which is
// not tied to a thread; all shared state behind them is accessed atomically or by copies.
unsafe impl Send for ShmConn {}

// SAFETY: every method that takes `&self` only loads or stores atomics in the mapping (or
// reads fields that never change); everything that moves ring bytes or private positions
// takes `&mut self`. Sharing `&ShmConn` between threads is therefore free of data races.
unsafe impl Sync for ShmConn {}

impl std::fmt::Debug for ShmConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmConn")
            .field("role", &self.role)
            .field("max", &self.max)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ShmConn {
    fn new(
        seg: Segment,
        rendezvous: Option<Segment>,
        role: Role,
        ep: &Endpoint,
    ) -> Result<ShmConn> {
        let base = seg.as_ptr();
        let header = base.cast::<ChannelHeader>().cast_const();
        // SAFETY: the segment was created or checked to be `channel_len(cap)` bytes, which is
        // more than OFF_DATA, so these offsets are inside the mapping and 128-byte aligned.
        let (c2s, s2c) = unsafe {
            (
                base.add(OFF_C2S).cast::<RingControl>().cast_const(),
                base.add(OFF_S2C).cast::<RingControl>().cast_const(),
            )
        };
        // SAFETY: `header` points to the checked ChannelHeader; these fields were written by
        // the client before the connection was posted and never change afterwards. Volatile
        // reads through raw pointers; the values are validated right below.
        let (cap, max) = unsafe {
            (
                ptr::addr_of!((*header).capacity).read_volatile(),
                ptr::addr_of!((*header).max_msg).read_volatile(),
            )
        };
        if !cap.is_power_of_two()
            || !(4096..=1 << 30).contains(&cap)
            || max > ring::max_payload(cap)
            || seg.len() != channel_len(cap)
        {
            return Err(Error::Corrupted(format!(
                "channel header: capacity {cap}, max message {max}, segment of {} bytes",
                seg.len()
            )));
        }
        // Records are checked against what the header's writer allows; the side that did not
        // write it may allow less, and refuses larger records one by one.
        let record_max = max;
        let max = if role == Role::Server {
            max.min(explicit_max(ep).unwrap_or(u32::MAX))
        } else {
            max
        };
        // SAFETY: OFF_DATA + 2 * cap == seg.len() (checked above).
        let (c2s_data, s2c_data) =
            unsafe { (base.add(OFF_DATA), base.add(OFF_DATA + cap as usize)) };
        let (tx_ctl, rx_ctl, tx_data, rx_data) = match role {
            Role::Client | Role::Producer { .. } => (c2s, s2c, c2s_data, s2c_data),
            Role::Server | Role::Consumer => (s2c, c2s, s2c_data, c2s_data),
        };
        // SAFETY: OFF_SEM_* + size_of::<SemWords>() <= OFF_DATA < seg.len(), 64-aligned.
        let (sem_c2s, sem_s2c) = unsafe {
            (
                base.add(OFF_SEM_C2S).cast::<SemWords>().cast_const(),
                base.add(OFF_SEM_S2C).cast::<SemWords>().cast_const(),
            )
        };
        let (tx_sem, rx_sem) = match role {
            Role::Client | Role::Producer { .. } => (sem_c2s, sem_s2c),
            Role::Server | Role::Consumer => (sem_s2c, sem_c2s),
        };
        // SAFETY: a plain integer the client wrote before posting the connection.
        let flags = unsafe { ptr::addr_of!((*header).flags).read_volatile() };
        // The connecting side decides whether receivers count on semaphores.
        let mode = match (flags & FLAG_SEM != 0, ep.options().wait) {
            (true, _) => WaitMode::Sem,
            (false, WaitMode::Sem) => WaitMode::Block,
            (false, m) => m,
        };
        // SAFETY: the control blocks are in bounds, aligned, and consist of atomics only.
        let (txc, rxc) = unsafe { (&*tx_ctl, &*rx_ctl) };
        Ok(ShmConn {
            tx: Producer::attach(txc, cap),
            // One producer per ring except in shm+mpsc (see `Consumer::attach`).
            rx: Consumer::attach(rxc, cap, record_max, role != Role::Consumer),
            seg,
            rendezvous,
            role,
            tx_ctl,
            rx_ctl,
            tx_data: ShmData { base: tx_data },
            rx_data: ShmData { base: rx_data },
            tx_sem,
            rx_sem,
            header,
            cap,
            max,
            mode,
            duplex: matches!(role, Role::Client | Role::Server),
            light: false,
            spin: ep.read_spin(),
            corrupted: false,
        }
        .lighten())
    }

    /// Lets this side publish and release without a fence where it waits adaptively and
    /// `membarrier` can stand in (see `notify`); says so in its `WaitWords::light`, with a
    /// fence after, so that the peer sees it before any message that relies on it. In
    /// `block` and `sem` modes the peer sleeps on every message, and a heavy fence there
    /// each time would cost more than the fence saved here.
    fn lighten(mut self) -> ShmConn {
        if self.mode != WaitMode::Adaptive || !sys::register_light_side() {
            return self;
        }
        if self.role != Role::Consumer {
            self.tx_ctl()
                .producer_waiting
                .0
                .light
                .store(1, Ordering::Relaxed);
        }
        if !matches!(self.role, Role::Producer { .. }) {
            self.rx_ctl()
                .consumer_waiting
                .0
                .light
                .store(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        self.light = true;
        self
    }

    fn tx_ctl(&self) -> &RingControl {
        // SAFETY: points into the mapping owned by `self.seg` (see `new`); atomics only.
        unsafe { &*self.tx_ctl }
    }

    fn rx_ctl(&self) -> &RingControl {
        // SAFETY: as for `tx_ctl`.
        unsafe { &*self.rx_ctl }
    }

    fn header(&self) -> &ChannelHeaderAtomics {
        // SAFETY: `header` points to the ChannelHeader in the mapping owned by `self.seg`;
        // the view only exposes its atomic fields.
        unsafe { &*self.header.cast::<ChannelHeaderAtomics>() }
    }

    /// The largest message this connection carries.
    pub fn max_message_size(&self) -> usize {
        self.max as usize
    }

    /// Counters of both directions.
    pub fn stats(&self) -> ChannelStats {
        let (tx, rx) = (
            &self.tx_ctl().producer_stats.0,
            &self.rx_ctl().consumer_stats.0,
        );
        let peer = &self.rx_ctl().producer_stats.0;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChannelStats {
            sent_messages: r(&tx.messages),
            sent_bytes: r(&tx.bytes),
            received_messages: r(&rx.messages),
            received_bytes: r(&rx.bytes),
            full_waits: r(&tx.full_waits),
            drops: r(&tx.drops),
            peer_sent_messages: r(&peer.messages),
            peer_drops: r(&peer.drops),
            peer_full_waits: r(&peer.full_waits),
        }
    }

    fn peer_closed_flag(&self) -> &AtomicU32 {
        match self.role {
            Role::Client | Role::Producer { .. } => &self.header().server_closed,
            // Producers come and go; an MPSC receiver never sees them as closed.
            Role::Server | Role::Consumer => &self.header().client_closed,
        }
    }

    /// Whether the peer process still holds the connection (a lock the kernel drops on death).
    fn peer_alive(&mut self) -> bool {
        if self.peer_closed_flag().load(Ordering::Acquire) != 0 {
            return false;
        }
        match self.role {
            Role::Consumer => true,
            Role::Producer { .. } => {
                sys::ofd_locked_by_other(self.seg.fd(), LOCK_SERVER, 1).unwrap_or(true)
            }
            Role::Server => sys::ofd_locked_by_other(self.seg.fd(), LOCK_CLIENT, 1).unwrap_or(true),
            Role::Client => {
                if self.header().server_attached.load(Ordering::Acquire) != 0 {
                    self.rendezvous = None;
                    sys::ofd_locked_by_other(self.seg.fd(), LOCK_SERVER, 1).unwrap_or(true)
                } else {
                    match &self.rendezvous {
                        Some(r) => sys::ofd_locked_by_other(r.fd(), LOCK_SERVER, 1).unwrap_or(true),
                        None => false,
                    }
                }
            }
        }
    }

    /// True while the peer is running rather than asleep in a wait of its own.
    fn peer_running(&self) -> bool {
        self.tx_ctl()
            .consumer_waiting
            .0
            .waiting
            .load(Ordering::Relaxed)
            == 0
            && self
                .rx_ctl()
                .producer_waiting
                .0
                .waiting
                .load(Ordering::Relaxed)
                == 0
    }

    /// Wakes the peer if it announced (in `flag`) that it sleeps. In `spin` mode nobody is
    /// expected to sleep, and the check is skipped (a peer that sleeps anyway notices within
    /// its liveness slice).
    #[inline]
    fn notify(&self, flag: &AtomicU32) {
        if self.mode == WaitMode::Spin {
            return;
        }
        // A light side leaves its half to the sleeper's heavy fence: the full fence here
        // drained the store buffer, the record's lines and the position included, on every
        // message (92% of `publish`'s samples, 87% of `recv_into`'s, in a 64-byte stream).
        ring::wake_sleeper(flag, self.light);
    }

    /// Waits until `ready` says yes, as `wait` and the wait mode allow (`sending`: for
    /// space in the tx ring, else for data in the rx ring).
    fn block_until(
        &mut self,
        wait: Wait,
        sending: bool,
        mut ready: impl FnMut(&mut ShmConn) -> Result<bool>,
    ) -> Result<()> {
        if ready(self)? {
            return Ok(());
        }
        if self.peer_closed_flag().load(Ordering::Acquire) != 0 {
            // Graceful close: deliver what is left, then report it.
            return if ready(self)? {
                Ok(())
            } else {
                Err(Error::Disconnected)
            };
        }
        if wait == Wait::Never {
            return Err(Error::WouldBlock);
        }
        // Spin phase.
        let spin_for = match self.mode {
            WaitMode::Spin => None,
            WaitMode::Adaptive => Some(self.spin),
            WaitMode::Block | WaitMode::Sem => Some(Duration::ZERO),
        };
        // A sender waiting for space polls the consumer's position less often: each poll
        // takes that cache line from the consumer, which then waits for it to store its next
        // position, and a full ring with a sender polling flat out moved in lockstep, one
        // record at a time.
        let pause_per_poll = if sending { SPACE_POLL_PAUSES } else { 1 };
        // The first burst of looks comes before the clock is read: a running peer's answer
        // usually comes within it, and a clock read (20-50 ns on a virtual machine) between
        // two looks delays taking it. (A waiting side's budget then starts a burst late.)
        let burst = match spin_for {
            None => true,
            Some(budget) => !budget.is_zero() && self.peer_running(),
        };
        if burst {
            for _ in 0..64 / pause_per_poll {
                for _ in 0..pause_per_poll {
                    spin_hint();
                }
                if ready(self)? {
                    return Ok(());
                }
            }
        }
        let start = Instant::now();
        let deadline = match wait {
            Wait::Until(t) => Some(t),
            _ => None,
        };
        let mut last_check = start;
        let mut i: u32 = 0;
        loop {
            match spin_for {
                Some(budget) if budget.is_zero() || !self.peer_running() => break,
                _ => {}
            }
            for _ in 0..64 / pause_per_poll {
                for _ in 0..pause_per_poll {
                    spin_hint();
                }
                if ready(self)? {
                    return Ok(());
                }
            }
            i = i.wrapping_add(1);
            let now = Instant::now();
            if let Some(budget) = spin_for {
                if now - start >= budget {
                    break;
                }
                if now - start > Duration::from_micros(2) && i % 4 == 0 {
                    // Let a peer pinned to this CPU run.
                    std::thread::yield_now();
                }
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(wait.expired());
            }
            if now - last_check >= LIVENESS_SLICE {
                last_check = now;
                if !self.peer_alive() {
                    return if ready(self)? {
                        Ok(())
                    } else {
                        Err(Error::Disconnected)
                    };
                }
            }
        }
        // Sleep phase.
        if self.mode == WaitMode::Sem && !sending {
            return self.sleep_on_sem(wait, ready);
        }
        // Our announcement (the futex word we sleep on), and the peer's light flag.
        let (flag, peer_light) = if sending {
            (
                &self.tx_ctl().producer_waiting.0.waiting as *const AtomicU32,
                &self.tx_ctl().consumer_waiting.0.light as *const AtomicU32,
            )
        } else {
            (
                &self.rx_ctl().consumer_waiting.0.waiting as *const AtomicU32,
                &self.rx_ctl().producer_waiting.0.light as *const AtomicU32,
            )
        };
        // SAFETY: both point into the mapping owned by `self.seg`, which outlives this call;
        // raw pointers only so `ready(self)` can take `&mut self` meanwhile.
        let (flag, peer_light) = unsafe { (&*flag, &*peer_light) };
        loop {
            let slice_cap = ring::announce_sleep(flag, || {
                sleep_fence(|| peer_light.load(Ordering::Relaxed) != 0)
            });
            if ready(self)? {
                flag.store(0, Ordering::Relaxed);
                return Ok(());
            }
            let slice = match wait.slice(slice_cap) {
                Ok(slice) => slice,
                Err(e) => {
                    flag.store(0, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let timed_out = futex_wait(flag, ring::SLEEPING, Some(slice))?;
            flag.store(0, Ordering::Relaxed);
            if ready(self)? {
                return Ok(());
            }
            if timed_out && !self.peer_alive() {
                return if ready(self)? {
                    Ok(())
                } else {
                    Err(Error::Disconnected)
                };
            }
            if self.peer_closed_flag().load(Ordering::Acquire) != 0 {
                return Err(Error::Disconnected);
            }
        }
    }

    /// `wait=sem` receive: take a message permit (a permit without a record, left by a
    /// producer that died between its post and our look, is simply a spurious wake-up).
    fn sleep_on_sem(
        &mut self,
        wait: Wait,
        mut ready: impl FnMut(&mut ShmConn) -> Result<bool>,
    ) -> Result<()> {
        loop {
            let slice = wait.slice(LIVENESS_SLICE)?;
            // SAFETY: points into the mapping owned by `self.seg`; atomics only.
            let sem = unsafe { &*self.rx_sem };
            let timed_out = match sem.acquire(Wait::timeout(slice)) {
                Ok(()) => false,
                Err(Error::Timeout { .. }) => true,
                Err(e) => return Err(e),
            };
            if ready(self)? {
                return Ok(());
            }
            if (timed_out && !self.peer_alive())
                || self.peer_closed_flag().load(Ordering::Acquire) != 0
            {
                return if ready(self)? {
                    Ok(())
                } else {
                    Err(Error::Disconnected)
                };
            }
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.corrupted {
            return Err(Error::Corrupted(
                "an earlier check failed; reconnect".into(),
            ));
        }
        Ok(())
    }

    /// Reserves `len` bytes in the outgoing ring; the reservation stays in `self.tx`
    /// ([`Producer::pending_data_off`]) for `publish`.
    fn reserve(&mut self, len: usize, wait: Wait) -> Result<()> {
        if self.role == Role::Consumer {
            return Err(Error::Unsupported {
                op: "send",
                what: "the receiving end of an shm+mpsc:// queue",
            });
        }
        if let Role::Producer { token } = self.role {
            self.lock_tx(token, wait)?;
            // SAFETY: see `tx_ctl`. Under the lock the shared head is ours to advance.
            self.tx = Producer::attach(unsafe { &*self.tx_ctl }, self.cap);
            let r = self.reserve_unlocked(len, wait);
            if r.is_err() {
                self.unlock_tx();
            }
            return r;
        }
        self.reserve_unlocked(len, wait)
    }

    /// Takes the MPSC producers' lock. A holder that died (its slot's lock byte is free, or
    /// the slot was claimed again since) is replaced; what it had half-written was never
    /// published, so it is simply overwritten.
    fn lock_tx(&mut self, token: u32, wait: Wait) -> Result<()> {
        let live = SlotLiveness {
            fd: self.seg.fd(),
            gens: producer_gens(&self.seg),
            lock_base: LOCK_PRODUCER,
            me: token,
        };
        let lock = &self.header().tx_lock;
        match lock.lock(&live, wait)? {
            Acquired::Clean => {}
            Acquired::OwnerDied | Acquired::Poisoned => {
                tracing::debug!("took over the lock of a dead shm+mpsc producer");
                lock.make_consistent();
            }
        }
        Ok(())
    }

    #[inline]
    fn unlock_tx(&self) {
        if let Role::Producer { .. } = self.role {
            self.header().tx_lock.unlock();
        }
    }

    fn reserve_unlocked(&mut self, len: usize, wait: Wait) -> Result<()> {
        self.check_usable()?;
        if len > self.max as usize {
            return Err(Error::MessageTooLarge {
                size: len,
                max: self.max as usize,
                transport: "shm",
            });
        }
        if self.peer_closed_flag().load(Ordering::Relaxed) != 0 {
            return Err(Error::Disconnected);
        }
        let len = len as u32;
        let mut waited = false;
        let r = self.block_until(wait, true, |c| {
            // SAFETY: see `tx_ctl`; a raw deref so `c.tx` can be borrowed mutably alongside.
            let ctl = unsafe { &*c.tx_ctl };
            if c.tx.try_reserve(ctl, len)? {
                return Ok(true);
            }
            if !waited {
                waited = true;
                ring::bump(&ctl.producer_stats.0.full_waits, 1);
            }
            Ok(false)
        });
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                if e.is_retryable() {
                    ring::bump(&self.tx_ctl().producer_stats.0.drops, 1);
                }
                if matches!(e, Error::Corrupted(_)) {
                    self.corrupted = true;
                }
                Err(e)
            }
        }
    }

    /// Publishes what `reserve` reserved.
    #[inline(always)]
    fn publish(&mut self) {
        // SAFETY: see `tx_ctl`.
        let ctl = unsafe { &*self.tx_ctl };
        // Release; `notify` adds the SeqCst fence that pairs with a sleeper's.
        self.tx
            .commit_pending(ctl, &self.tx_data, Ordering::Release);
        self.unlock_tx();
        if self.mode == WaitMode::Sem {
            self.post_sem();
        } else {
            self.notify(&ctl.consumer_waiting.0.waiting);
        }
    }

    /// `sem` mode's half of `publish`: the receiver counts messages on the semaphore
    /// instead of watching the head.
    #[inline(never)]
    fn post_sem(&self) {
        // SAFETY: points into the mapping owned by `self.seg`; atomics only.
        let _ = unsafe { &*self.tx_sem }.release(1);
    }

    /// Waits for the next record; it stays in `self.rx` (`found_data_off`, `found_len`) until
    /// [`release`](Self::release).
    fn next_record(&mut self, wait: Wait) -> Result<()> {
        if let Role::Producer { .. } = self.role {
            return Err(Error::Unsupported {
                op: "recv",
                what: "a sending end of an shm+mpsc:// queue",
            });
        }
        self.check_usable()?;
        let mut primed = false;
        let r = self.block_until(wait, false, |c| {
            // SAFETY: see `rx_ctl`.
            let ctl = unsafe { &*c.rx_ctl };
            let found = c.rx.try_peek(ctl, &c.rx_data)?;
            if !found && !primed {
                // Idle until the peer answers: get ready for our next send meanwhile.
                primed = true;
                if matches!(c.role, Role::Client | Role::Server) {
                    c.tx.prefetch_next(&c.tx_data);
                }
            }
            Ok(found)
        });
        match r {
            Ok(()) => {
                let len = self.rx.found_len();
                if len > self.max {
                    // The sender allows larger messages than we do: skip this one, say so.
                    self.release();
                    return Err(Error::IncomingTooLarge {
                        size: u64::from(len),
                        max: self.max as usize,
                    });
                }
                Ok(())
            }
            Err(Error::Corrupted(what)) => {
                // Drop what the peer published and say so; the next call starts afresh.
                // SAFETY: see `rx_ctl`.
                let ctl = unsafe { &*self.rx_ctl };
                self.rx.skip_all(ctl);
                Err(Error::Corrupted(what))
            }
            Err(e) => Err(e),
        }
    }

    /// Hands the space of the record `next_record` found back to the sender.
    #[inline(always)]
    fn release(&mut self) {
        // SAFETY: see `rx_ctl`.
        let ctl = unsafe { &*self.rx_ctl };
        self.rx.release_found(ctl, Ordering::Release);
        self.notify(&ctl.producer_waiting.0.waiting);
    }

    /// A reservation in the common case, inlined: a client or server whose ring has room
    /// now. False: nothing is reserved; the general path (`reserve`) waits, or says what is
    /// wrong. (Through `reserve` and `block_until`, a 64-byte send and receive in one thread
    /// ran about 535 instructions; see `benches/shm_path.rs`.)
    #[inline(always)]
    fn try_reserve_fast(&mut self, len: usize) -> bool {
        if !self.duplex
            || self.corrupted
            || len > self.max as usize
            || self.peer_closed_flag().load(Ordering::Relaxed) != 0
        {
            return false;
        }
        // SAFETY: see `tx_ctl`; a raw deref so `self.tx` can be borrowed mutably alongside.
        let ctl = unsafe { &*self.tx_ctl };
        // Full, or something impossible (the general path finds it again and reports it).
        matches!(self.tx.try_reserve(ctl, len as u32), Ok(true))
    }

    /// A receive's look in the common case, inlined: a receiving end (not an MPSC
    /// producer) with a record there now, of an acceptable size (it stays in `self.rx`, as
    /// `next_record` leaves it). False: the general path (`next_record`) waits, or says what
    /// is wrong.
    #[inline(always)]
    fn try_next_record_fast(&mut self) -> bool {
        if matches!(self.role, Role::Producer { .. }) || self.corrupted {
            return false;
        }
        // SAFETY: see `rx_ctl`.
        let ctl = unsafe { &*self.rx_ctl };
        matches!(self.rx.try_peek(ctl, &self.rx_data), Ok(true)) && self.rx.found_len() <= self.max
    }

    /// Sends `msg`. The common case (room in the ring now) is inlined into the caller, the
    /// rest is [`send_slow`](Self::send_slow): with the two in one function, every send
    /// paid for the slow path's stack frame and saved registers, as every receive did.
    /// (With `publish` and `release` inlined and the error messages out of line, a 64-byte
    /// send and receive in one thread went from 366 to 225 instructions, `wait=spin`.)
    #[inline]
    pub(crate) fn send(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        if self.try_reserve_fast(msg.len()) {
            self.tx_data.write(self.tx.pending_data_off(), msg);
            self.publish();
            return Ok(());
        }
        self.send_slow(msg, wait)
    }

    /// A send that waits for room, or fails.
    #[inline(never)]
    fn send_slow(&mut self, msg: &[u8], wait: Wait) -> Result<()> {
        self.reserve(msg.len(), wait)?;
        self.tx_data.write(self.tx.pending_data_off(), msg);
        self.publish();
        Ok(())
    }

    /// Receives into `out`; the common case inlined, as for [`send`](Self::send).
    #[inline]
    pub(crate) fn recv_into(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<()> {
        if self.try_next_record_fast() {
            self.take_into(out);
            return Ok(());
        }
        self.recv_into_slow(out, wait)
    }

    /// A receive that waits for a record, or fails.
    #[inline(never)]
    fn recv_into_slow(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<()> {
        self.next_record(wait)?;
        self.take_into(out);
        Ok(())
    }

    /// Copies the record found into `out` and releases it.
    #[inline(always)]
    fn take_into(&mut self, out: &mut Vec<u8>) {
        let (off, len) = (
            self.rx.found_data_off() as usize,
            self.rx.found_len() as usize,
        );
        out.clear();
        out.reserve(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        // SAFETY:
        // - source: `len` bytes at `off`, validated by the ring to lie inside the ring and
        //   inside the published range; copied through a raw pointer;
        // - destination: `len` bytes of `out`'s spare capacity (reserved above);
        // - afterwards exactly those bytes are initialised, so `set_len` is sound.
        unsafe {
            ptr::copy_nonoverlapping(
                self.rx_data.base.add(off),
                spare.as_mut_ptr().cast::<u8>(),
                len,
            );
            out.set_len(len);
        }
        self.release();
    }

    /// Reserves `len` bytes in the outgoing ring, blocking while it is full. Fill the loan and
    /// [`commit`](Loan::commit) it; dropping it uncommitted sends nothing.
    ///
    /// ```
    /// use ipckit::MessageReceiver;
    /// use std::time::Duration;
    /// let name = format!("doc-loan-{}", std::process::id());
    /// let mut listener = ipckit::bind(format!("shm://{name}"))?;
    /// let mut client = ipckit::connect(format!("shm://{name}"))?;
    /// let mut loan = client.as_shm().unwrap().loan(5)?;
    /// loan.write(0, b"hello")?;
    /// loan.commit();
    /// let mut server = listener.accept_timeout(Duration::from_secs(5))?;
    /// let msg = server.as_shm().unwrap().recv_ref_timeout(Duration::from_secs(5))?;
    /// assert_eq!(msg.to_vec(), b"hello");
    /// # Ok::<(), ipckit::Error>(())
    /// ```
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>> {
        self.loan_with(len, Wait::Forever)
    }

    /// [`loan`](Self::loan) if the ring has room now, else [`Error::WouldBlock`].
    pub fn try_loan(&mut self, len: usize) -> Result<Loan<'_>> {
        self.loan_with(len, Wait::Never)
    }

    /// [`loan`](Self::loan), waiting at most `timeout` for space.
    pub fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<Loan<'_>> {
        self.loan_with(len, Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// [`loan`](Self::loan), waiting as `wait` allows for space.
    pub fn loan_with(&mut self, len: usize, wait: Wait) -> Result<Loan<'_>> {
        if !self.try_reserve_fast(len) {
            self.reserve(len, wait)?;
        }
        Ok(Loan { conn: self })
    }

    /// Borrows the next message in place; it is released (its space handed back) when the
    /// [`RecvRef`] is dropped.
    pub fn recv_ref(&mut self) -> Result<RecvRef<'_>> {
        self.recv_ref_with(Wait::Forever)
    }

    /// [`recv_ref`](Self::recv_ref) if a message is there now, else [`Error::WouldBlock`].
    pub fn try_recv_ref(&mut self) -> Result<RecvRef<'_>> {
        self.recv_ref_with(Wait::Never)
    }

    /// [`recv_ref`](Self::recv_ref), waiting at most `timeout`.
    pub fn recv_ref_timeout(&mut self, timeout: Duration) -> Result<RecvRef<'_>> {
        self.recv_ref_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// [`recv_ref`](Self::recv_ref), waiting as `wait` allows.
    pub fn recv_ref_with(&mut self, wait: Wait) -> Result<RecvRef<'_>> {
        if !self.try_next_record_fast() {
            self.next_record(wait)?;
        }
        Ok(RecvRef { conn: self })
    }
}

impl Drop for ShmConn {
    fn drop(&mut self) {
        if self.role == Role::Client && self.header().server_attached.load(Ordering::Acquire) == 0 {
            // Not accepted yet: what we sent must still reach the server when it accepts (as
            // a socket's backlog would deliver it). The listener removes the segment then, or
            // when it is dropped; `cleanup_stale` if both sides die.
            self.seg.keep();
        }
        let h = self.header();
        let mine = match self.role {
            Role::Client => &h.client_closed,
            Role::Server | Role::Consumer => &h.server_closed,
            // Other producers go on; our slot lock goes with the descriptor.
            Role::Producer { .. } => return,
        };
        mine.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        // Wake the peer wherever it sleeps, waiting for our data or for our reads: its
        // announcement cleared, so that a peer about to sleep does not either.
        for flag in [
            &self.tx_ctl().consumer_waiting.0.waiting,
            &self.rx_ctl().producer_waiting.0.waiting,
        ] {
            flag.store(0, Ordering::Relaxed);
            futex_wake(flag, u32::MAX);
        }
        if self.mode == WaitMode::Sem {
            // SAFETY: points into the mapping owned by `self.seg`; atomics only.
            let _ = unsafe { &*self.tx_sem }.release(1);
        }
    }
}

/// The atomic fields of [`ChannelHeader`], viewed without the plain ones.
#[repr(C, align(128))]
struct ChannelHeaderAtomics {
    _capacity: AtomicU32,
    _max_msg: AtomicU32,
    _client_pid: AtomicU32,
    server_pid: AtomicU32,
    client_closed: AtomicU32,
    server_closed: AtomicU32,
    server_attached: AtomicU32,
    _flags: AtomicU32,
    tx_lock: MutexWords,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<ChannelHeaderAtomics>() == 128);

/// Space in the outgoing ring, reserved by [`ShmConn::loan`]: fill it, then
/// [`commit`](Loan::commit).
pub struct Loan<'a> {
    /// Only the connection: the reservation stays in its producer (`pending_data_off`,
    /// `pending_len`). A loan that carried a copy of it, or even its length and a flag, was
    /// written field by field and moved out of the `Result` in one wider load, which the
    /// store buffer cannot forward: it waited for every older store, the last message's to
    /// lines the receiver reads included (81% of the bench's send samples; 64-byte loans
    /// streamed at a third to two thirds of `send`'s rate).
    conn: &'a mut ShmConn,
}

impl Loan<'_> {
    /// Bytes reserved.
    pub fn len(&self) -> usize {
        self.conn.tx.pending_len() as usize
    }

    /// True for a zero-length loan.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `bytes` into the loan at `offset` (bounds-checked).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        match offset.checked_add(bytes.len()) {
            Some(end) if end <= self.len() => {}
            _ => {
                return Err(Error::OutOfBounds {
                    offset,
                    len: bytes.len(),
                    size: self.len(),
                })
            }
        }
        self.conn
            .tx_data
            .write(self.conn.tx.pending_data_off() + offset as u32, bytes);
        Ok(())
    }

    /// Pointer to the reserved bytes (valid until commit or drop).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: `data_off + len <= cap`, validated by the ring.
        unsafe {
            self.conn
                .tx_data
                .base
                .add(self.conn.tx.pending_data_off() as usize)
        }
    }

    /// The reserved bytes as a slice, to build a message in place.
    ///
    /// # Safety
    /// The slice points into shared memory. It is sound as long as the peer process follows
    /// the ring protocol (it never writes to space the producer has reserved). A hostile peer
    /// could write into it concurrently, which Rust treats as a data race; use
    /// [`write`](Self::write) when the peer is not trusted.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len();
        // SAFETY: in bounds (see `as_mut_ptr`); exclusivity is the caller's promise above.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), len) }
    }

    /// Publishes the message.
    pub fn commit(self) {
        // Not dropped: the drop is for loans given up. (A loan owns nothing but the borrow.)
        let mut this = std::mem::ManuallyDrop::new(self);
        // The connection is borrowed by the loan: its pending reservation is this one.
        this.conn.publish();
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        // Given up, nothing published: an MPSC producer hands the lock back.
        self.conn.unlock_tx();
    }
}

/// A received message, in place in the ring; its space goes back to the sender on drop.
pub struct RecvRef<'a> {
    /// Borrowed mutably, so the record it found stays the one in `conn.rx` until the drop.
    conn: &'a mut ShmConn,
}

impl RecvRef<'_> {
    /// Length of the message.
    pub fn len(&self) -> usize {
        self.conn.rx.found_len() as usize
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of the message in the ring.
    fn data_off(&self) -> u32 {
        self.conn.rx.found_data_off()
    }

    /// Pointer to the message bytes (valid while `self` lives).
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: `data_off + len <= cap`, validated by the ring.
        unsafe { self.conn.rx_data.base.add(self.data_off() as usize) }
    }

    /// Copies `dst.len()` bytes from `offset` of the message (bounds-checked).
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        match offset.checked_add(dst.len()) {
            Some(end) if end <= self.len() => {}
            _ => {
                return Err(Error::OutOfBounds {
                    offset,
                    len: dst.len(),
                    size: self.len(),
                })
            }
        }
        self.conn.rx_data.read(self.data_off() + offset as u32, dst);
        Ok(())
    }

    /// Copies the message into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.conn.rx_data.read(self.data_off(), &mut v);
        v
    }

    /// The message as a slice, without copying.
    ///
    /// # Safety
    /// The slice points into shared memory. It is sound as long as the peer follows the ring
    /// protocol (it never writes to published, unreleased space). A hostile peer could change
    /// the bytes while you read them, which Rust treats as a data race; use
    /// [`read`](Self::read) or [`to_vec`](Self::to_vec) when the peer is not trusted.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: in bounds (see `as_ptr`); immutability is the caller's promise above.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl Drop for RecvRef<'_> {
    fn drop(&mut self) {
        self.conn.release();
    }
}

/// The listening side of `shm://name`.
pub(crate) struct ShmListener {
    rendezvous: Segment,
    place: Place,
    endpoint: Endpoint,
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        // Connections posted but never accepted: nobody will map them any more.
        let rv = rendezvous_of(&self.rendezvous);
        for slot in &rv.slots {
            if slot.state.load(Ordering::Acquire) == SLOT_READY {
                let id = slot.conn_id.load(Ordering::Relaxed);
                slot.state.store(SLOT_EMPTY, Ordering::Release);
                if let Ok(mut seg) = self.place.connection(id).open() {
                    seg.unlink_now();
                }
            }
        }
    }
}

impl std::fmt::Debug for ShmListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmListener")
            .field("place", &self.place)
            .finish()
    }
}

fn rendezvous_of(seg: &Segment) -> &Rendezvous {
    // SAFETY: the rendezvous segment is created with (or checked to have) room for a
    // `Rendezvous`, at the 128-aligned start of its data; it consists of atomics only.
    unsafe { &*seg.as_ptr().cast::<Rendezvous>() }
}

/// Where an endpoint's segments live: `shm://name` in POSIX shared memory, `mmap:///dir/name`
/// in files of `dir`.
#[derive(Clone, Debug)]
struct Place {
    dir: Option<std::path::PathBuf>,
    name: String,
}

impl Place {
    fn of(ep: &Endpoint) -> Result<Place> {
        if let Some(name) = ep.name() {
            return Ok(Place {
                dir: None,
                name: name.to_owned(),
            });
        }
        let path = ep.path().expect("mmap endpoints have a path");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidName {
                name: path.display().to_string(),
                reason: "an mmap channel path must end in a UTF-8 file name",
            })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => ".".into(),
        };
        Ok(Place {
            dir: Some(dir),
            name: name.to_owned(),
        })
    }

    fn builder(&self, name: &str) -> crate::shm::SegmentBuilder {
        let b = Segment::builder(name);
        match &self.dir {
            Some(d) => b.in_dir(d),
            None => b,
        }
    }

    fn rendezvous(&self) -> crate::shm::SegmentBuilder {
        self.builder(&self.name)
            .size(std::mem::size_of::<Rendezvous>())
            .kind(SegmentKind::Listener)
    }

    fn connection(&self, id: u64) -> crate::shm::SegmentBuilder {
        self.builder(&format!("{}~{id:x}", self.name))
            .kind(SegmentKind::Channel)
            .typed::<SealedRecordsFlagWakeSlotLockV5>()
    }
}

impl ShmListener {
    pub(crate) fn bind(ep: &Endpoint) -> Result<ShmListener> {
        let place = Place::of(ep)?;
        let seg = create_replacing_stale(ep, || place.rendezvous().mode(ep.options().mode))?;
        if !sys::ofd_lock(seg.fd(), LOCK_SERVER, 1, true)? {
            return Err(Error::AddressInUse {
                addr: ep.to_string(),
            });
        }
        Ok(ShmListener {
            rendezvous: seg,
            place,
            endpoint: ep.clone(),
        })
    }

    /// Takes the next posted connection.
    pub(crate) fn accept(&mut self, wait: Wait) -> Result<Inner> {
        loop {
            let rv = rendezvous_of(&self.rendezvous);
            let posted = rv.posted.load(Ordering::Acquire);
            for slot in &rv.slots {
                if slot.state.load(Ordering::Acquire) != SLOT_READY {
                    continue;
                }
                let id = slot.conn_id.load(Ordering::Relaxed);
                // Only this listener (it holds the server lock) takes slots, so the slot can
                // stay READY while the connection is attached. Out of descriptors, it stays
                // posted, like a kernel backlog: a later accept takes it once some are free.
                let attached = self.attach(id);
                if !matches!(attached, Err(Error::TooManyOpenFiles { .. })) {
                    slot.state.store(SLOT_EMPTY, Ordering::Release);
                }
                if let Some(conn) = attached? {
                    return Ok(Inner::Shm(Box::new(conn)));
                }
            }
            if wait == Wait::Never {
                return Err(Error::WouldBlock);
            }
            let slice = wait.slice(LIVENESS_SLICE)?;
            futex_wait(&rv.posted, posted, Some(slice))?;
        }
    }

    /// Maps a posted connection; `None` if its client vanished before we got to it.
    fn attach(&self, id: u64) -> Result<Option<ShmConn>> {
        let mut seg = match self.place.connection(id).populate().open() {
            Ok(s) => s,
            Err(Error::NotFound { .. } | Error::Incompatible { .. } | Error::NotReady { .. }) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if !sys::ofd_lock(seg.fd(), LOCK_SERVER, 1, true)? {
            return Ok(None);
        }
        // Both sides have it mapped now: the name is no longer needed.
        seg.unlink_now();
        let conn = match ShmConn::new(seg, None, Role::Server, &self.endpoint) {
            Ok(c) => c,
            Err(Error::Corrupted(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let h = conn.header();
        h.server_pid.store(std::process::id(), Ordering::Relaxed);
        h.server_attached.store(1, Ordering::Release);
        Ok(Some(conn))
    }
}

/// Creates a segment that a server owns (rendezvous, MPSC queue); if the name exists but its
/// server is dead (its lock is free), replaces it; if the server lives, the address is in use.
fn create_replacing_stale(
    ep: &Endpoint,
    builder: impl Fn() -> crate::shm::SegmentBuilder,
) -> Result<Segment> {
    match builder().create() {
        Err(Error::AlreadyExists { .. }) => {
            let in_use = || Error::AddressInUse {
                addr: ep.to_string(),
            };
            let mut old = builder().open().map_err(|_| in_use())?;
            if sys::ofd_locked_by_other(old.fd(), LOCK_SERVER, 1).unwrap_or(true) {
                return Err(in_use());
            }
            tracing::debug!(endpoint = %ep, "replacing what a dead listener left");
            old.unlink_now();
            builder().create()
        }
        other => other,
    }
}

/// `bind("shm+mpsc://name")`: creates the queue and returns its receiving end.
pub(crate) fn bind_mpsc(ep: &Endpoint) -> Result<Inner> {
    let place = Place::of(ep)?;
    let (cap, max) = geometry(ep);
    let seg = create_replacing_stale(ep, || {
        place
            .builder(&place.name)
            .size(channel_len(cap))
            .mode(ep.options().mode)
            .kind(SegmentKind::Channel)
            .typed::<SealedRecordsFlagWakeSlotLockV5>()
            .populate()
    })?;
    if !sys::ofd_lock(seg.fd(), LOCK_SERVER, 1, true)? {
        return Err(Error::AddressInUse {
            addr: ep.to_string(),
        });
    }
    let sem = if ep.options().wait == WaitMode::Sem {
        FLAG_SEM
    } else {
        0
    };
    write_header(&seg, cap, max, FLAG_MPSC | sem);
    Ok(Inner::Shm(Box::new(ShmConn::new(
        seg,
        None,
        Role::Consumer,
        ep,
    )?)))
}

/// `connect("shm+mpsc://name")`: one more sender into the queue.
pub(crate) fn connect_mpsc(ep: &Endpoint) -> Result<Inner> {
    let place = Place::of(ep)?;
    let refused = |reason| Error::ConnectionRefused {
        addr: ep.to_string(),
        reason,
    };
    let seg = match place
        .builder(&place.name)
        .kind(SegmentKind::Channel)
        .typed::<SealedRecordsFlagWakeSlotLockV5>()
        .populate()
        .open()
    {
        Ok(s) => s,
        Err(Error::NotFound { .. }) => return Err(refused("no shm+mpsc queue has this name")),
        Err(e) => return Err(e),
    };
    let header = seg.as_ptr().cast::<ChannelHeader>();
    // SAFETY: the segment passed the Channel header check, so it holds at least a
    // ChannelHeader; a volatile read of a plain integer, validated right away.
    let flags = unsafe { ptr::addr_of!((*header).flags).read_volatile() };
    if flags & FLAG_MPSC == 0 {
        return Err(Error::Incompatible {
            name: place.name.clone(),
            reason: "an shm:// connection, not an shm+mpsc:// queue".into(),
        });
    }
    if !sys::ofd_locked_by_other(seg.fd(), LOCK_SERVER, 1)? {
        return Err(refused("the receiver's process is gone"));
    }
    if seg.len() < OFF_DATA {
        return Err(Error::Corrupted(format!(
            "shm+mpsc queue {}: a segment of {} bytes, too short for a queue",
            place.name,
            seg.len()
        )));
    }
    let token = claim_slot(seg.fd(), producer_gens(&seg), LOCK_PRODUCER)?
        .ok_or_else(|| refused("all 64 producer slots are taken"))?;
    Ok(Inner::Shm(Box::new(ShmConn::new(
        seg,
        None,
        Role::Producer { token },
        ep,
    )?)))
}

/// Writes the fields of a new channel's header that never change afterwards.
fn write_header(seg: &Segment, cap: u32, max: u32, flags: u32) {
    let header = seg.as_ptr().cast::<ChannelHeader>();
    // SAFETY: the fresh segment is at least OFF_DATA bytes and nobody else knows it yet;
    // plain writes through raw pointers, published by whatever makes the segment known
    // (a Release store or the name appearing).
    unsafe {
        ptr::addr_of_mut!((*header).capacity).write_volatile(cap);
        ptr::addr_of_mut!((*header).max_msg).write_volatile(max);
        ptr::addr_of_mut!((*header).client_pid).write_volatile(std::process::id());
        ptr::addr_of_mut!((*header).flags).write_volatile(flags);
    }
}

/// Connects to `shm://name`: creates the connection segment and posts it to the listener.
pub(crate) fn connect(ep: &Endpoint, wait: Wait) -> Result<Inner> {
    let place = Place::of(ep)?;
    let refused = |reason| Error::ConnectionRefused {
        addr: ep.to_string(),
        reason,
    };
    let rendezvous = match place.rendezvous().open() {
        Ok(s) => s,
        Err(Error::NotFound { .. }) => return Err(refused("no shm listener has this name")),
        Err(e) => return Err(e),
    };
    if !sys::ofd_locked_by_other(rendezvous.fd(), LOCK_SERVER, 1)? {
        return Err(refused("the listener's process is gone"));
    }
    let (cap, max) = geometry(ep);
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let id = (u64::from(std::process::id()) << 32)
        | u64::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    // Populated on both sides: a ring's first pass would otherwise take a page fault every
    // 4 KiB in each process (they were the shm-spin p99: 5.6-6.0 us against 1.45 us).
    let seg = place
        .connection(id)
        .size(channel_len(cap))
        .mode(ep.options().mode)
        .populate()
        .create()?;
    sys::ofd_lock(seg.fd(), LOCK_CLIENT, 1, true)?;
    let flags = if ep.options().wait == WaitMode::Sem {
        FLAG_SEM
    } else {
        0
    };
    write_header(&seg, cap, max, flags);
    let conn = ShmConn::new(seg, Some(rendezvous), Role::Client, ep)?;
    post(&conn, id, wait, refused)?;
    Ok(Inner::Shm(Box::new(conn)))
}

/// Puts the connection id into a free backlog slot and wakes the listener.
fn post(
    conn: &ShmConn,
    id: u64,
    wait: Wait,
    refused: impl Fn(&'static str) -> Error,
) -> Result<()> {
    let rv = rendezvous_of(conn.rendezvous.as_ref().expect("client has the rendezvous"));
    loop {
        for slot in &rv.slots {
            if slot
                .state
                .compare_exchange(
                    SLOT_EMPTY,
                    SLOT_CLAIMED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                slot.conn_id.store(id, Ordering::Relaxed);
                slot.state.store(SLOT_READY, Ordering::Release);
                rv.posted.fetch_add(1, Ordering::Release);
                futex_wake(&rv.posted, u32::MAX);
                return Ok(());
            }
        }
        let server_gone = conn
            .rendezvous
            .as_ref()
            .is_some_and(|r| !sys::ofd_locked_by_other(r.fd(), LOCK_SERVER, 1).unwrap_or(true));
        if server_gone {
            return Err(refused("the listener's process is gone"));
        }
        match wait.remaining() {
            Some(left) if left.is_zero() => return Err(refused("the listener's backlog is full")),
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The `try_` and `_timeout` forms of the in-place calls: an empty ring is
    /// `WouldBlock` at once and a `Timeout` naming the wait; a full one the same for loans.
    #[test]
    fn in_place_calls_have_try_and_timeout_forms() {
        let url = format!("shm://t-forms-{}?capacity=4K", std::process::id());
        let mut listener = crate::bind(&url).unwrap();
        let mut client = crate::connect(&url).unwrap();
        let mut server = listener.accept_timeout(Duration::from_secs(5)).unwrap();
        let short = Duration::from_millis(20);
        let rx = server.as_shm().unwrap();
        assert!(matches!(rx.try_recv_ref(), Err(Error::WouldBlock)));
        assert!(matches!(
            rx.recv_ref_timeout(short),
            Err(Error::Timeout { after: Some(d) }) if d == short
        ));
        let tx = client.as_shm().unwrap();
        let mut sent = 0;
        loop {
            match tx.try_loan(1000) {
                Ok(loan) => {
                    loan.commit();
                    sent += 1;
                }
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("try_loan: {e}"),
            }
            assert!(sent < 10, "a 4 KiB ring took {sent} loans of 1000 bytes");
        }
        assert!(sent >= 1);
        assert!(matches!(
            tx.loan_timeout(1000, short),
            Err(Error::Timeout { after: Some(d) }) if d == short
        ));
        let rx = server.as_shm().unwrap();
        for _ in 0..sent {
            assert_eq!(rx.try_recv_ref().unwrap().len(), 1000);
        }
        assert!(matches!(rx.try_recv_ref(), Err(Error::WouldBlock)));
        client
            .as_shm()
            .unwrap()
            .loan_timeout(1000, Duration::from_secs(5))
            .unwrap()
            .commit();
    }

    /// Adaptive sides publish and release without a fence where `membarrier` can stand in
    /// for it, and say so in their `WaitWords`; `block` and `spin` sides never do.
    #[test]
    fn adaptive_sides_are_light_where_membarrier_works_and_others_never() {
        for (wait, light) in [
            ("adaptive", sys::register_light_side()),
            ("block", false),
            ("spin", false),
        ] {
            let url = format!("shm://t-light-{wait}-{}?wait={wait}", std::process::id());
            let mut listener = crate::bind(&url).unwrap();
            let mut client = crate::connect(&url).unwrap();
            let mut server = listener.accept_timeout(Duration::from_secs(5)).unwrap();
            for conn in [&mut client, &mut server] {
                let c = conn.as_shm().unwrap();
                assert_eq!(c.light, light, "{wait}");
                let said = |w: &AtomicU32| w.load(Ordering::Relaxed) != 0;
                assert_eq!(said(&c.tx_ctl().producer_waiting.0.light), light, "{wait}");
                assert_eq!(said(&c.rx_ctl().consumer_waiting.0.light), light, "{wait}");
            }
        }
    }
}
