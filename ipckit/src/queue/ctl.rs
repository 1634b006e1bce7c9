//! The control file `queue.ctl`: one page mapped shared by every process using the queue.
//!
//! It holds the robust mutexes that serialise appends and syncs, where the log ends (the
//! last published sequence number, the current segment and the byte where the next record
//! goes), the group-commit watermark, and the consumers' doorbell (a futex word). It is a
//! cache of what the segments say, valid for one boot: it records the boot id, and a process
//! that finds another boot's (or a damaged) control file rebuilds it from the segments.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "IPCKITQC"
//!      8     4  version
//!     16    40  boot id (ASCII)
//!     64    64  append mutex (pthread_mutex_t, robust, process-shared)
//!    128    64  sync mutex
//!    192     8  last published sequence number (consumers read up to it)
//!    200     8  first sequence number of the current (last) segment
//!    208     8  end of the data in the current segment (where the next record goes)
//!    216     8  offset of the last record in the current segment (0: none)
//!    224     8  highest sequence number known to be on disk (fsync mode)
//!    232     8  count of failed syncs
//!    240     8  first sequence number of a segment whose sync failed (takes no more records)
//!    248     4  repair needed (an append-mutex holder died)
//!    256     4  doorbell (futex word, bumped when a sleeping consumer must wake)
//!    260     4  sleeper flag (a consumer may be asleep on the doorbell)
//!    320     4  sync generation (futex word, bumped after each sync; senders waiting for a
//!               sync in progress sleep on it)
//!    328     8  records the last sync covered (how many the next one waits for)
//!    336     8  truncations: bumped whenever bytes past the published end are cut (a dead
//!               writer's, a failed write's), so readers know bytes they read ahead are stale;
//!               bumped after the cut, never before (see `Ctl::truncated`)
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::loom::{fence, FutexWord, Word};
use crate::sys::{self, Locked, RobustMutex, ROBUST_MUTEX_ALIGN, ROBUST_MUTEX_SIZE};
use crate::transport::Wait;

/// File name of the control file in the queue directory.
pub(crate) const CTL_NAME: &str = "queue.ctl";
/// Size of the control file.
pub(crate) const CTL_SIZE: usize = 4096;
const MAGIC: [u8; 8] = *b"IPCKITQC";
const VERSION: u32 = 1;
const BOOT_OFF: usize = 16;
const BOOT_LEN: usize = 40;
const APPEND_MUTEX: usize = 64;
const SYNC_MUTEX: usize = 128;
const LAST_SEQ: usize = 192;
const CUR_BASE: usize = 200;
const CUR_END: usize = 208;
const LAST_OFF: usize = 216;
const SYNCED_SEQ: usize = 224;
const SYNC_FAILURES: usize = 232;
const FAILED_BASE: usize = 240;
const NEEDS_REPAIR: usize = 248;
const DOORBELL: usize = 256;
const SLEEPER: usize = 260;
const SYNC_GEN: usize = 320;
const LAST_GROUP: usize = 328;
const TRUNCATIONS: usize = 336;

/// `FUTEX_WAKE` count that wakes every waiter. The kernel reads the count as an `int`:
/// `u32::MAX` would be -1 and wake only one.
const WAKE_ALL: u32 = i32::MAX as u32;

const _: () = assert!(ROBUST_MUTEX_SIZE <= 64 && 64 % ROBUST_MUTEX_ALIGN == 0);

/// Where the log ends, as recorded in the control file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tail {
    /// Last published sequence number.
    pub(crate) last_seq: u64,
    /// First sequence number of the current segment.
    pub(crate) cur_base: u64,
    /// Where the next record goes in it.
    pub(crate) cur_end: u64,
    /// Offset of its last record (0: none).
    pub(crate) last_off: u64,
}

/// The mapped control file.
pub(crate) struct Ctl {
    map: memmap2::MmapRaw,
    append: RobustMutex,
    sync: RobustMutex,
    _fd: OwnedFd,
}

impl std::fmt::Debug for Ctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl").field("tail", &self.tail()).finish()
    }
}

impl Ctl {
    fn map(fd: OwnedFd) -> Result<Ctl> {
        let map = sys::map_shared(&fd, CTL_SIZE, true, false)?;
        let base = map.as_mut_ptr();
        // SAFETY: the mapping is page-aligned and CTL_SIZE bytes long, so both offsets are
        // inside it and aligned for a mutex (checked at compile time); the mapping lives in
        // `Ctl` next to the handles, and `Ctl` drops the handles with it.
        let (append, sync) = unsafe {
            (
                RobustMutex::from_ptr(base.add(APPEND_MUTEX)),
                RobustMutex::from_ptr(base.add(SYNC_MUTEX)),
            )
        };
        Ok(Ctl {
            map,
            append,
            sync,
            _fd: fd,
        })
    }

    fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= CTL_SIZE);
        let mut v = vec![0u8; len];
        // SAFETY: `off..off+len` is inside the mapping (asserted); the copy reads through a
        // raw pointer into our own buffer and forms no reference to shared memory.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_mut_ptr().add(off), v.as_mut_ptr(), len)
        };
        v
    }

    fn put_bytes(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= CTL_SIZE);
        // SAFETY: inside the mapping (asserted); only used before the file is published
        // under its final name, when no other process maps it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(off),
                bytes.len(),
            )
        };
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= CTL_SIZE);
        // SAFETY: the offset is 8-aligned inside the page-aligned mapping (asserted), which
        // lives as long as `&self`; atomics tolerate concurrent access from other processes.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= CTL_SIZE);
        // SAFETY: as in `u64_at`, for a 4-aligned word.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Opens the control file of `dir` if it exists, is intact and belongs to this boot;
    /// `None` means it must be (re)built.
    pub(crate) fn open_current(dir: &Path) -> Result<Option<Ctl>> {
        let path = dir.join(CTL_NAME);
        let fd = match sys::file_open(&path, true, "queue control file") {
            Ok(fd) => fd,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if sys::file_len(fd.as_fd())? != CTL_SIZE as u64 {
            return Ok(None);
        }
        let ctl = Ctl::map(fd)?;
        let ok = ctl.bytes(0, 8) == MAGIC
            && ctl.bytes(8, 4) == VERSION.to_le_bytes()
            && ctl.bytes(BOOT_OFF, BOOT_LEN) == boot_bytes();
        Ok(ok.then_some(ctl))
    }

    /// Opens the control file read-only for inspection (`stat`), if it is current.
    pub(crate) fn peek(dir: &Path) -> Result<Option<Tail>> {
        let path = dir.join(CTL_NAME);
        let fd = match sys::file_open(&path, false, "queue control file") {
            Ok(fd) => fd,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut page = vec![0u8; CTL_SIZE];
        if sys::pread_full(fd.as_fd(), &mut page, 0)? != CTL_SIZE {
            return Ok(None);
        }
        if page[0..8] != MAGIC
            || page[8..12] != VERSION.to_le_bytes()
            || page[BOOT_OFF..BOOT_OFF + BOOT_LEN] != boot_bytes()[..]
        {
            return Ok(None);
        }
        let word = |off: usize| u64::from_le_bytes(page[off..off + 8].try_into().expect("8"));
        Ok(Some(Tail {
            last_seq: word(LAST_SEQ),
            cur_base: word(CUR_BASE),
            cur_end: word(CUR_END),
            last_off: word(LAST_OFF),
        }))
    }

    /// Builds a fresh control file describing `tail` and publishes it under its name
    /// (replacing any other). Only while holding the queue's open lock.
    pub(crate) fn create(dir: &Path, tail: Tail, mode: u32) -> Result<Ctl> {
        let tmp = super::segment::temp_path(dir, "ctl");
        let fd = sys::file_create(&tmp, mode, "queue control file")?;
        let built = (|| {
            sys::set_len(fd.as_fd(), CTL_SIZE as u64)?;
            let ctl = Ctl::map(
                rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| Error::os("dup", e))?,
            )?;
            ctl.append.init()?;
            ctl.sync.init()?;
            ctl.put_bytes(BOOT_OFF, &boot_bytes());
            ctl.set_tail(tail);
            ctl.u64_at(SYNCED_SEQ)
                .store(tail.last_seq, Ordering::Relaxed);
            ctl.put_bytes(8, &VERSION.to_le_bytes());
            ctl.put_bytes(0, &MAGIC);
            sys::rename_replace(&tmp, &dir.join(CTL_NAME))?;
            Ok(ctl)
        })();
        if built.is_err() {
            let _ = sys::file_unlink(&tmp);
        }
        built
    }

    /// Where the log ends.
    pub(crate) fn tail(&self) -> Tail {
        Tail {
            last_seq: self.u64_at(LAST_SEQ).load(Ordering::Acquire),
            cur_base: self.u64_at(CUR_BASE).load(Ordering::Acquire),
            cur_end: self.u64_at(CUR_END).load(Ordering::Acquire),
            last_off: self.u64_at(LAST_OFF).load(Ordering::Acquire),
        }
    }

    /// Records where the log ends (append mutex held). The last sequence number is stored
    /// last, with release ordering: a consumer that sees it sees the record's bytes.
    pub(crate) fn set_tail(&self, t: Tail) {
        self.u64_at(CUR_BASE).store(t.cur_base, Ordering::Release);
        self.u64_at(CUR_END).store(t.cur_end, Ordering::Release);
        self.u64_at(LAST_OFF).store(t.last_off, Ordering::Release);
        self.u64_at(LAST_SEQ).store(t.last_seq, Ordering::Release);
    }

    /// First sequence number of the current segment.
    pub(crate) fn cur_base(&self) -> u64 {
        self.u64_at(CUR_BASE).load(Ordering::Acquire)
    }

    /// The last published sequence number.
    pub(crate) fn last_seq(&self) -> u64 {
        self.u64_at(LAST_SEQ).load(Ordering::Acquire)
    }

    /// Takes the append mutex. `Locked::OwnerDied` has already been marked consistent, with
    /// the repair flag set for the caller to act on.
    pub(crate) fn lock_append(&self, wait: Wait) -> Result<AppendGuard<'_>> {
        let how = self.append.lock(wait)?;
        if how == Locked::OwnerDied {
            self.u32_at(NEEDS_REPAIR).store(1, Ordering::Relaxed);
            if let Err(e) = self.append.mark_consistent() {
                self.append.unlock();
                return Err(e);
            }
        }
        Ok(AppendGuard { ctl: self })
    }

    /// Takes the sync mutex if it is free (a dead holder leaves nothing to repair): the
    /// caller becomes the one that syncs. `None` while another sender syncs.
    pub(crate) fn try_lock_sync(&self) -> Result<Option<SyncGuard<'_>>> {
        match self.sync.lock(Wait::Never) {
            Ok(how) => {
                if how == Locked::OwnerDied {
                    if let Err(e) = self.sync.mark_consistent() {
                        self.sync.unlock();
                        return Err(e);
                    }
                }
                Ok(Some(SyncGuard { ctl: self }))
            }
            Err(Error::WouldBlock) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The sync generation: bumped (and its sleepers woken) after every sync.
    pub(crate) fn sync_gen(&self) -> &AtomicU32 {
        self.u32_at(SYNC_GEN)
    }

    /// Counts cuts of bytes past the published end (see the layout).
    pub(crate) fn truncations(&self) -> &AtomicU64 {
        self.u64_at(TRUNCATIONS)
    }

    /// Counts a cut of bytes past the published end, once it is made. After it, not before:
    /// a reader notes the count, then reads ahead, and throws away what it read ahead when
    /// it finds the count changed. Counted before the cut, a reader could note the new
    /// count, read the doomed bytes (say a whole record of a writer that died before
    /// publishing it), and keep them after the next writer wrote its own record over the
    /// same place: it then delivered the dead writer's record and read the next one from
    /// the wrong offset ("record N expected, found a header with sequence number ...",
    /// seen about once in 3 runs of `tests/queue_crash.rs` with 2,000 rounds, three runs at
    /// once).
    pub(crate) fn truncated(&self) {
        self.truncations().fetch_add(1, Ordering::SeqCst);
    }

    /// How many records the last sync covered.
    pub(crate) fn last_group(&self) -> &AtomicU64 {
        self.u64_at(LAST_GROUP)
    }

    /// Wakes the senders waiting for a sync: one ended (or the watermark moved).
    pub(crate) fn announce_sync(&self) {
        let gen = self.sync_gen();
        gen.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(gen, WAKE_ALL);
    }

    pub(crate) fn synced_seq(&self) -> &AtomicU64 {
        self.u64_at(SYNCED_SEQ)
    }

    pub(crate) fn sync_failures(&self) -> &AtomicU64 {
        self.u64_at(SYNC_FAILURES)
    }

    pub(crate) fn failed_base(&self) -> &AtomicU64 {
        self.u64_at(FAILED_BASE)
    }

    /// Rings the doorbell after publishing: wakes consumers only if one may be asleep, so a
    /// send costs no system call while consumers keep up.
    pub(crate) fn ring(&self) {
        ring_doorbell(self.u32_at(DOORBELL), self.u32_at(SLEEPER));
    }

    /// Waits until the last published sequence number differs from `seen`, as `wait` allows
    /// (spinning for `spin` first).
    pub(crate) fn wait_for_records(
        &self,
        seen: u64,
        wait: Wait,
        spin: std::time::Duration,
    ) -> Result<()> {
        let last = self.u64_at(LAST_SEQ);
        if wait != Wait::Never && !spin.is_zero() {
            let until = std::time::Instant::now() + spin;
            let mut n = 0u32;
            while last.load(Ordering::Acquire) == seen {
                // Look at the word now and then only: every look takes the cache line from
                // the producer, who writes it with every message.
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
                n += 1;
                if n % 8 == 0 && std::time::Instant::now() >= until {
                    break;
                }
            }
        }
        wait_on_doorbell(
            last,
            self.u32_at(DOORBELL),
            self.u32_at(SLEEPER),
            seen,
            wait,
        )
    }

    /// The async form of [`wait_for_records`](Self::wait_for_records) (no spin): sleeps on
    /// the doorbell through the futex watcher until the last published sequence number
    /// differs from `seen`.
    /// (A plain function of the three words, so the future holds only atomics and stays
    /// `Send`.)
    #[cfg(all(feature = "tokio", not(loom)))]
    pub(crate) fn wait_for_records_async(
        &self,
        seen: u64,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        wait_on_doorbell_async(
            self.u64_at(LAST_SEQ),
            self.u32_at(DOORBELL),
            self.u32_at(SLEEPER),
            seen,
        )
    }

    fn needs_repair(&self) -> &AtomicU32 {
        self.u32_at(NEEDS_REPAIR)
    }
}

/// The append mutex, held.
pub(crate) struct AppendGuard<'a> {
    ctl: &'a Ctl,
}

impl AppendGuard<'_> {
    /// Whether a holder died and the tail must be repaired before anything is appended.
    pub(crate) fn needs_repair(&self) -> bool {
        self.ctl.needs_repair().load(Ordering::Relaxed) != 0
    }

    /// Records that the tail is repaired.
    pub(crate) fn repaired(&self) {
        self.ctl.needs_repair().store(0, Ordering::Relaxed);
    }

    /// Asks the next holder to repair (an append failed half-way and could not be undone).
    pub(crate) fn request_repair(&self) {
        self.ctl.needs_repair().store(1, Ordering::Relaxed);
    }
}

impl Drop for AppendGuard<'_> {
    fn drop(&mut self) {
        self.ctl.append.unlock();
    }
}

/// The sync mutex, held.
pub(crate) struct SyncGuard<'a> {
    ctl: &'a Ctl,
}

impl Drop for SyncGuard<'_> {
    /// Unlocks, then tells the senders waiting for this sync to look at the watermark.
    fn drop(&mut self) {
        self.ctl.sync.unlock();
        self.ctl.announce_sync();
    }
}

fn boot_bytes() -> [u8; BOOT_LEN] {
    let id = sys::boot_id();
    let mut b = [0u8; BOOT_LEN];
    let n = id.len().min(BOOT_LEN);
    b[..n].copy_from_slice(&id.as_bytes()[..n]);
    b
}

/// Sleeps on the consumers' doorbell until `last` differs from `seen` (async).
#[cfg(all(feature = "tokio", not(loom)))]
async fn wait_on_doorbell_async(
    last: &AtomicU64,
    bell: &AtomicU32,
    sleeper: &AtomicU32,
    seen: u64,
) {
    loop {
        let Some(ticket) = arm_doorbell(last, bell, sleeper, seen) else {
            return;
        };
        sys::futex_watch(bell, ticket).await;
        if last.load(Ordering::SeqCst) != seen {
            return;
        }
    }
}

// ---- the consumers' doorbell ------------------------------------------------------------
//
// Three words of the control file: `last` (the last published sequence number), the
// doorbell `bell` (a futex word, bumped when sleepers must wake) and `sleeper` (1 while a
// consumer may be asleep). A producer publishes `last`, then rings ([`ring_doorbell`]); a
// consumer takes the doorbell's ticket, announces itself in `sleeper` and looks at `last`
// once more ([`arm_doorbell`]) before it sleeps on the ticket. All SeqCst: either the
// consumer's last look sees the record, or the producer's look sees the announcement and
// bumps the doorbell, which ends (or forestalls) the sleep on the older ticket. Written over
// [`Word`]s so that loom checks this code (the models at the end of the file).

/// Producer, after publishing a record in `last`: wakes the consumers if one may be asleep.
fn ring_doorbell(bell: &impl FutexWord, sleeper: &impl Word<V = u32>) {
    fence(Ordering::SeqCst);
    if sleeper.load(Ordering::SeqCst) != 0 && sleeper.swap(0, Ordering::SeqCst) != 0 {
        bell.fetch_add(1, Ordering::SeqCst);
        bell.wake(WAKE_ALL);
    }
}

/// Consumer, about to sleep until `last` moves past `seen`: the ticket to sleep on, or
/// `None` when a record came meanwhile. The ticket is taken before the announcement, so a
/// producer that sees the announcement bumps the doorbell past it.
fn arm_doorbell(
    last: &impl Word<V = u64>,
    bell: &impl Word<V = u32>,
    sleeper: &impl Word<V = u32>,
    seen: u64,
) -> Option<u32> {
    let ticket = bell.load(Ordering::SeqCst);
    sleeper.store(1, Ordering::SeqCst);
    // SeqCst accesses alone already order the store before the load (on x86 the store is an
    // `xchg`); the fence says so to loom too, which models SeqCst accesses as AcqRel and,
    // without it, reports a lost wake-up. It costs a few cycles, only on the way to sleep.
    fence(Ordering::SeqCst);
    (last.load(Ordering::SeqCst) == seen).then_some(ticket)
}

/// Consumer: sleeps on the doorbell until `last` moves past `seen`, as `wait` allows.
fn wait_on_doorbell(
    last: &impl Word<V = u64>,
    bell: &impl FutexWord,
    sleeper: &impl Word<V = u32>,
    seen: u64,
    wait: Wait,
) -> Result<()> {
    loop {
        let Some(ticket) = arm_doorbell(last, bell, sleeper, seen) else {
            return Ok(());
        };
        let left = wait.remaining();
        if left == Some(std::time::Duration::ZERO) {
            return Err(wait.expired());
        }
        bell.wait_while(ticket, left)?;
        if last.load(Ordering::SeqCst) != seen {
            return Ok(());
        }
    }
}

/// The doorbell's handshake under loom (`RUSTFLAGS="--cfg loom" cargo test -p ipckit --lib
/// --release loom`). The shim's futex has no timeout, so a lost wake-up leaves a consumer
/// asleep for good and loom reports the deadlock.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicU32, AtomicU64};
    use loom::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Words {
        last: AtomicU64,
        bell: AtomicU32,
        sleeper: AtomicU32,
    }

    impl Words {
        /// A producer: appends one record under the append lock, then rings.
        fn append(&self, lock: &Mutex<()>) {
            {
                let _append = lock.lock().unwrap();
                let last = self.last.load(Ordering::Relaxed);
                self.last.store(last + 1, Ordering::Release);
            }
            ring_doorbell(&self.bell, &self.sleeper);
        }

        /// A consumer: waits for records past `seen`, with no time limit; returns the last.
        fn wait_past(&self, seen: u64) -> u64 {
            wait_on_doorbell(&self.last, &self.bell, &self.sleeper, seen, Wait::Forever).unwrap();
            self.last.load(Ordering::Acquire)
        }
    }

    /// Two consumers asleep for the same record are both woken by the one producer.
    #[test]
    fn loom_every_sleeping_consumer_is_woken() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let w = Arc::new(Words::default());
            let lock = Arc::new(Mutex::new(()));
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let w = w.clone();
                    loom::thread::spawn(move || assert_eq!(w.wait_past(0), 1))
                })
                .collect();
            w.append(&lock);
            for c in consumers {
                c.join().unwrap();
            }
        });
    }

    /// A consumer that sleeps twice while a producer appends two records: the second
    /// sleep's announcement is never lost to the ring that answered the first.
    #[test]
    fn loom_a_consumer_sleeping_again_is_woken_again() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let w = Arc::new(Words::default());
            let lock = Arc::new(Mutex::new(()));
            let consumer = {
                let w = w.clone();
                loom::thread::spawn(move || {
                    let mut seen = w.wait_past(0);
                    if seen < 2 {
                        seen = w.wait_past(seen);
                    }
                    assert_eq!(seen, 2);
                })
            };
            w.append(&lock);
            w.append(&lock);
            consumer.join().unwrap();
        });
    }
}
