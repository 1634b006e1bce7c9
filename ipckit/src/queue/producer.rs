//! The producer: appends records under the append mutex, rolls segments, and in `fsync`
//! mode waits for a group commit.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ctl::{AppendGuard, Tail};
use super::record::{record_header, MAX_RECORD, REC_HEADER_LEN, SEG_HEADER_LEN};
use super::recovery::{self, Recovery, Shared};
use super::segment::{create_segment, segment_path, sync_error, write_error, SegmentFile};
use super::{retention, Durability, QueueOptions};
use crate::error::{Error, Result};
use crate::sys;
use crate::transport::Wait;

/// Longest sleep of a sender waiting for another's sync before it looks again (bounds the
/// wait when the syncing process died).
const SYNC_WAIT: Duration = Duration::from_millis(20);

/// Appends messages to a durable queue. Several producers, in any processes, may append to
/// the same queue at once; each message gets the next sequence number.
///
/// ```
/// use ipckit::queue::{Consumer, Durability, Producer, QueueOptions};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let opts = QueueOptions::new().durability(Durability::Os);
/// let mut producer = Producer::open(dir.path(), &opts)?;
/// let seq = producer.send(b"first")?;
/// producer.send(b"second")?;
/// drop(producer); // the consumer need not run at the same time
///
/// let mut consumer = Consumer::open(dir.path(), "billing", &opts)?;
/// let mut buf = Vec::new();
/// assert_eq!(consumer.recv_timeout(&mut buf, Duration::from_secs(5))?, seq);
/// assert_eq!(buf, b"first");
/// consumer.ack(seq)?; // without this, "first" is delivered again after a restart
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Producer {
    shared: Shared,
    state: State,
    recovery: Option<Recovery>,
}

/// What a producer keeps open besides the shared state.
#[derive(Debug, Default)]
struct State {
    /// The segment it writes (the current one when it last appended).
    seg: Option<SegmentFile>,
    /// A segment it syncs without writing it (another producer's newer segment).
    sync_seg: Option<SegmentFile>,
    /// How long its last `fdatasync` took.
    last_sync: Duration,
}

impl Producer {
    /// Opens the queue in `dir` for appending, creating it if it does not exist, and
    /// recovering its end if a writer crashed (see [`Producer::recovery`]).
    pub fn open(dir: impl AsRef<Path>, opts: &QueueOptions) -> Result<Producer> {
        let (shared, recovery) = Shared::open(dir.as_ref(), opts)?;
        Ok(Producer {
            shared,
            state: State::default(),
            recovery,
        })
    }

    /// What opening cut off the end of the log, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The largest message this producer sends.
    pub fn max_message_size(&self) -> usize {
        self.shared.opts.max_message_size.min(MAX_RECORD)
    }

    /// The last sequence number published by any producer.
    pub fn last_seq(&self) -> u64 {
        self.shared.ctl.last_seq()
    }

    /// The core send: appends `msg` and returns its sequence number.
    ///
    /// `wait` bounds the wait for the append lock (held by other producers for the time of
    /// one write); nothing is written if it runs out. Once the record is written, in `fsync`
    /// mode the call waits for it to be on disk whatever `wait` says: a record that is in the
    /// log is never reported as not sent. Concurrent senders share one `fdatasync` (group
    /// commit). A failed `fdatasync` is [`Error::SyncFailed`] for every sender whose record
    /// it may have covered; the segment then takes no more records.
    pub fn send_with(&mut self, msg: &[u8], wait: Wait) -> Result<u64> {
        let max = self.max_message_size();
        if msg.len() > max {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max,
                transport: "queue",
            });
        }
        let (seq, failures) = {
            let shared = &self.shared;
            let guard = shared.ctl.lock_append(wait)?;
            if guard.needs_repair() {
                recovery::verify(shared, &guard)?;
            }
            self.state.append(shared, &guard, msg)?
        };
        self.shared.ctl.ring();
        if self.shared.opts.durability == Durability::Fsync {
            self.state.wait_durable(&self.shared, seq, failures)?;
        }
        Ok(seq)
    }

    /// Sends, blocking as long as needed.
    pub fn send(&mut self, msg: &[u8]) -> Result<u64> {
        self.send_with(msg, Wait::Forever)
    }

    /// Sends if the append lock is free now, else [`Error::WouldBlock`].
    pub fn try_send(&mut self, msg: &[u8]) -> Result<u64> {
        self.send_with(msg, Wait::Never)
    }

    /// Sends, waiting at most `timeout` for the append lock.
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<u64> {
        self.send_with(msg, Wait::timeout(timeout))
    }

    /// Runs retention now: removes segments every group has consumed, and old segments past
    /// the size or age limits. Producers also do this whenever they start a new segment.
    pub fn collect(&mut self) -> Result<usize> {
        retention::collect(&self.shared, true)
    }
}

impl State {
    /// The segment starting at `base`, opened for writing if it is not the one held.
    fn segment(&mut self, shared: &Shared, base: u64) -> Result<&SegmentFile> {
        if self.seg.as_ref().map(|s| s.base) != Some(base) {
            self.seg = Some(SegmentFile::open(&shared.dir, base, true)?);
        }
        Ok(self.seg.as_ref().expect("just set"))
    }

    /// Writes the record (append mutex held). Returns its sequence number and the sync
    /// failure count before it was written.
    fn append(
        &mut self,
        shared: &Shared,
        guard: &AppendGuard<'_>,
        msg: &[u8],
    ) -> Result<(u64, u64)> {
        let ctl = &shared.ctl;
        // Read before writing: a failed sync that could cover this record comes later.
        let failures = ctl.sync_failures().load(Ordering::SeqCst);
        let mut t = ctl.tail();
        let rec_len = (REC_HEADER_LEN + msg.len()) as u64;
        let empty = t.cur_end == SEG_HEADER_LEN;
        if ctl.failed_base().load(Ordering::Acquire) == t.cur_base {
            if empty {
                // Nothing was in it when its sync failed: it can take records.
                ctl.failed_base().store(0, Ordering::Release);
            } else {
                t = self.roll(shared, t, false)?;
            }
        } else if !empty && t.cur_end + rec_len > shared.opts.segment_size {
            t = self.roll(shared, t, true)?;
        }
        let seq = t.last_seq + 1;
        let header = record_header(seq, msg);
        let seg = self.segment(shared, t.cur_base)?;
        if let Err(e) = sys::pwrite_all(seg.fd.as_fd(), &header, msg, t.cur_end) {
            // Take back whatever part was written; if even that fails, the next holder does.
            if sys::truncate(seg.fd.as_fd(), t.cur_end).is_err() {
                guard.request_repair();
            }
            ctl.truncated();
            return Err(write_error(&seg.path, e));
        }
        ctl.set_tail(Tail {
            last_seq: seq,
            cur_base: t.cur_base,
            cur_end: t.cur_end + rec_len,
            last_off: t.cur_end,
        });
        Ok((seq, failures))
    }

    /// Starts a new segment (append mutex held). With `sync_old` in `fsync` mode, the old
    /// segment is synced first, so that the group-commit watermark keeps covering it.
    fn roll(&mut self, shared: &Shared, t: Tail, sync_old: bool) -> Result<Tail> {
        let ctl = &shared.ctl;
        let durable = shared.opts.durability == Durability::Fsync;
        if durable && sync_old {
            let seg = self.segment(shared, t.cur_base)?;
            if let Err(e) = sys::fdatasync(seg.fd.as_fd()) {
                ctl.failed_base().store(t.cur_base, Ordering::SeqCst);
                ctl.sync_failures().fetch_add(1, Ordering::SeqCst);
                ctl.announce_sync();
                return Err(sync_error(&seg.path, e));
            }
            ctl.synced_seq().fetch_max(t.last_seq, Ordering::SeqCst);
            ctl.announce_sync();
        }
        let base = t.last_seq + 1;
        let fd = create_segment(&shared.dir, base, shared.opts.mode, durable)?;
        self.seg = Some(SegmentFile::created(fd, &shared.dir, base));
        let next = Tail {
            last_seq: t.last_seq,
            cur_base: base,
            cur_end: SEG_HEADER_LEN,
            last_off: 0,
        };
        ctl.set_tail(next);
        if let Err(e) = retention::collect(shared, true) {
            tracing::warn!(error = %e, "queue: retention failed");
        }
        Ok(next)
    }

    /// `fsync` mode: returns once record `seq` is on disk (group commit). Whoever finds no
    /// sync in progress syncs everything published so far; the others sleep on the sync
    /// generation until that sync ends, and usually find their record covered. A sender
    /// that died syncing holds a robust mutex: the next one takes over (the sleep is bounded).
    fn wait_durable(&mut self, shared: &Shared, seq: u64, failures: u64) -> Result<()> {
        let ctl = &shared.ctl;
        let failed = |shared: &Shared| {
            let base = shared.ctl.failed_base().load(Ordering::Acquire);
            sync_error(
                &segment_path(&shared.dir, base.max(1)),
                rustix::io::Errno::IO,
            )
        };
        loop {
            if ctl.sync_failures().load(Ordering::SeqCst) != failures {
                return Err(failed(shared));
            }
            if ctl.synced_seq().load(Ordering::SeqCst) >= seq {
                return Ok(());
            }
            let gen = ctl.sync_gen().load(Ordering::SeqCst);
            let Some(_guard) = ctl.try_lock_sync()? else {
                sys::futex_wait(ctl.sync_gen(), gen, Some(SYNC_WAIT))?;
                continue;
            };
            if ctl.sync_failures().load(Ordering::SeqCst) != failures {
                return Err(failed(shared));
            }
            if ctl.synced_seq().load(Ordering::SeqCst) >= seq {
                return Ok(());
            }
            // Let the appends already on their way join this sync: the senders the last sync
            // released append again within microseconds. Wait (yielding the CPU to them)
            // until as many records wait as the last sync covered, then while more keep
            // coming; for at most half a sync. A lone sender, whose syncs cover one record,
            // waits one `sched_yield`.
            let synced = ctl.synced_seq().load(Ordering::SeqCst);
            let want = ctl.last_group().load(Ordering::Relaxed).max(1);
            let budget = self.last_sync / 2;
            let started = Instant::now();
            let mut target = ctl.last_seq();
            while started.elapsed() < budget {
                std::thread::yield_now();
                let now = ctl.last_seq();
                if now == target && target.saturating_sub(synced) >= want {
                    break;
                }
                target = now;
            }
            // The watermark first, then the segment: a segment that was current earlier was
            // synced by the roll that replaced it.
            let base = ctl.cur_base();
            let seg = match &self.seg {
                Some(s) if s.base == base => s,
                _ => {
                    if self.sync_seg.as_ref().map(|s| s.base) != Some(base) {
                        self.sync_seg = Some(SegmentFile::open(&shared.dir, base, false)?);
                    }
                    self.sync_seg.as_ref().expect("just set")
                }
            };
            let sync_started = Instant::now();
            if let Err(e) = sys::fdatasync(seg.fd.as_fd()) {
                // The failed segment first, then the count: an appender that sees the new
                // count (it reads the count, then the segment, under the append mutex, which
                // this sync does not hold) then also sees which segment failed and starts a
                // new one, so no record joins a segment after its sync failed.
                ctl.failed_base().store(base, Ordering::SeqCst);
                ctl.sync_failures().fetch_add(1, Ordering::SeqCst);
                return Err(sync_error(&seg.path, e));
            }
            self.last_sync = sync_started.elapsed();
            let before = ctl.synced_seq().fetch_max(target, Ordering::SeqCst);
            ctl.last_group()
                .store(target.saturating_sub(before).max(1), Ordering::Relaxed);
            // Loops once more to return through the checks above.
        }
    }
}
