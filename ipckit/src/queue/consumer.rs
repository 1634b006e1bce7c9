//! The consumer: reads a group's records in order from its committed offset, waits on the
//! doorbell for new ones, and commits acknowledgements.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use super::group::{GroupFile, GroupName};
use super::record::{RecordHeader, MAX_RECORD, REC_HEADER_LEN, SEG_HEADER_LEN};
use super::recovery::{Recovery, Shared};
use super::segment::{
    list_segments, record_matches_streaming, scan, segment_path, SegmentFile, Window,
};
use super::{retention, QueueOptions};
use crate::error::{Error, Result};
use crate::transport::Wait;

/// Reads a durable queue as one consumer group: every message from the group's committed
/// offset on, in order, each delivered at least once.
///
/// [`recv`](Self::recv_into_with) delivers the next message after the last one delivered;
/// [`ack`](Self::ack) commits everything up to a sequence number. After a restart (or a
/// crash), delivery resumes at the first message not acknowledged. One consumer holds a
/// group at a time (a second gets [`Error::AddressInUse`]); different groups read the same
/// messages independently. A new group starts at the oldest message still kept.
///
/// Waiting for new messages costs no CPU: the consumer spins for a few microseconds, then
/// sleeps on a futex in the shared control file that producers ring only when a consumer
/// may be asleep.
#[derive(Debug)]
pub struct Consumer {
    shared: Shared,
    group: GroupName,
    gfile: GroupFile,
    seg: Option<SegmentFile>,
    window: Window,
    /// File offset of record `cursor` in `seg`.
    pos: u64,
    /// The next sequence number to deliver.
    cursor: u64,
    /// The last published sequence number, as last read.
    known_last: u64,
    /// The control file's truncation count when `window` may last have been filled: while it
    /// is unchanged, bytes read ahead of the published end are still what is in the file.
    epoch: u64,
    /// Messages passed over because retention removed them before they were read.
    skipped: u64,
    /// Retention runs again when the committed offset reaches this (a segment boundary) ...
    retain_at: u64,
    /// ... or when a segment newer than this one appears.
    newest_seen: u64,
    max: usize,
    recovery: Option<Recovery>,
}

impl Consumer {
    /// Opens the queue in `dir` (creating it if needed) as a consumer of `group`.
    pub fn open(dir: impl AsRef<Path>, group: &str, opts: &QueueOptions) -> Result<Consumer> {
        let group = GroupName::new(group)?;
        Self::open_group(dir.as_ref(), group, opts)
    }

    /// [`open`](Self::open) with a checked group name.
    pub fn open_group(dir: &Path, group: GroupName, opts: &QueueOptions) -> Result<Consumer> {
        let (shared, recovery) = Shared::open(dir, opts)?;
        let oldest = list_segments(dir)?
            .first()
            .copied()
            .unwrap_or_else(|| shared.ctl.last_seq() + 1);
        let gfile = GroupFile::take(dir, group.as_str(), oldest, opts.mode)?;
        let known_last = shared.ctl.last_seq();
        let mut committed = gfile.committed().max(1);
        if committed > known_last + 1 {
            tracing::warn!(
                group = group.as_str(),
                committed,
                last = known_last,
                "queue: the log ends before this group's committed offset (it was cut after \
                 damage or a power cut); resuming at its end"
            );
            committed = known_last + 1;
            gfile.commit(committed);
        }
        let mut c = Consumer {
            max: opts.max_message_size.min(MAX_RECORD),
            shared,
            group,
            gfile,
            seg: None,
            window: Window::default(),
            pos: SEG_HEADER_LEN,
            cursor: committed,
            known_last,
            epoch: 0,
            skipped: 0,
            retain_at: 0,
            newest_seen: 0,
            recovery,
        };
        c.locate()?;
        c.retain();
        Ok(c)
    }

    /// The largest message this consumer accepts ([`Error::IncomingTooLarge`] beyond).
    pub fn max_message_size(&self) -> usize {
        self.max
    }

    /// The group this consumer reads as.
    pub fn group(&self) -> &str {
        self.group.as_str()
    }

    /// What opening cut off the end of the log, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// The group's committed offset: the first sequence number not acknowledged.
    pub fn committed(&self) -> u64 {
        self.gfile.committed()
    }

    /// The sequence number the next `recv` delivers (if it exists by then).
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// The last sequence number published by any producer.
    pub fn last_seq(&self) -> u64 {
        self.shared.ctl.last_seq()
    }

    /// Messages passed over because size or age retention removed them before this group
    /// read them (each such jump is also logged as a warning).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Finds segment and offset of `cursor`.
    fn locate(&mut self) -> Result<()> {
        let segs = list_segments(&self.shared.dir)?;
        let Some(&oldest) = segs.first() else {
            return Err(Error::CorruptRecord {
                file: self.shared.dir.clone(),
                offset: 0,
                reason: "the queue directory has no segment files".to_owned(),
            });
        };
        if self.cursor < oldest {
            self.skip_to(oldest);
        }
        let base = *segs
            .iter()
            .rev()
            .find(|b| **b <= self.cursor)
            .expect("the oldest segment is at or before the cursor");
        let seg = SegmentFile::open(&self.shared.dir, base, false)?;
        self.reset_window();
        let s = scan(&seg, &mut self.window, Some(self.cursor))?;
        if s.last_seq + 1 != self.cursor {
            // Records before the committed offset were published: they must be there.
            let (at, reason) = s.bad.unwrap_or((s.end, "segment ends"));
            return Err(seg.corrupt(
                at,
                format!(
                    "{reason} at record {} while looking for record {} (records up to {} were \
                     published)",
                    s.last_seq + 1,
                    self.cursor,
                    self.known_last
                ),
            ));
        }
        self.pos = s.end;
        self.seg = Some(seg);
        Ok(())
    }

    /// Forgets the bytes read ahead, noting the truncation count they will be read under.
    fn reset_window(&mut self) {
        self.epoch = self
            .shared
            .ctl
            .truncations()
            .load(std::sync::atomic::Ordering::SeqCst);
        self.window.invalidate();
    }

    fn skip_to(&mut self, seq: u64) {
        tracing::warn!(
            group = self.group.as_str(),
            from = self.cursor,
            to = seq,
            "queue: messages were removed by retention before this group read them"
        );
        self.skipped += seq - self.cursor;
        self.cursor = seq;
    }

    /// The core receive: replaces `buf`'s contents with the next message and returns its
    /// sequence number, waiting as `wait` allows. The message counts as delivered; it is
    /// delivered again after a restart unless [`ack`](Self::ack)ed.
    pub fn recv_into_with(&mut self, buf: &mut Vec<u8>, wait: Wait) -> Result<u64> {
        loop {
            if self.cursor <= self.known_last {
                return self.read_next(buf);
            }
            let last = self.shared.ctl.last_seq();
            if last != self.known_last {
                self.known_last = last;
                // Bytes read ahead of the published end are kept (they save a read per
                // message at the end of the log) unless some were cut since: they may be an
                // unfinished append of a writer that died, replaced since.
                let epoch = self
                    .shared
                    .ctl
                    .truncations()
                    .load(std::sync::atomic::Ordering::SeqCst);
                if epoch != self.epoch {
                    self.reset_window();
                }
                continue;
            }
            self.shared
                .ctl
                .wait_for_records(last, wait, self.shared.opts.spin)?;
        }
    }

    /// Waits (async, no thread, no polling) until a receive may find a new message.
    #[cfg(all(feature = "tokio", not(loom)))]
    pub(crate) fn wait_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        let last = self.shared.ctl.last_seq();
        let ready = self.cursor <= self.known_last || last != self.known_last;
        let wait = self.shared.ctl.wait_for_records_async(last);
        async move {
            if !ready {
                wait.await;
            }
        }
    }

    /// Receives, blocking as long as needed.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u64> {
        self.recv_into_with(buf, Wait::Forever)
    }

    /// Receives if a message is there, else [`Error::WouldBlock`].
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u64> {
        self.recv_into_with(buf, Wait::Never)
    }

    /// Receives, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn recv_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u64> {
        self.recv_into_with(buf, Wait::timeout(timeout))
    }

    /// Reads record `cursor`, which is published.
    fn read_next(&mut self, buf: &mut Vec<u8>) -> Result<u64> {
        loop {
            let Some(seg) = &self.seg else {
                self.locate()?;
                continue;
            };
            let fd = seg.fd.as_fd();
            let head = self.window.get(fd, self.pos, REC_HEADER_LEN)?;
            if head.is_empty() {
                // This segment ends here: the record is in the next one.
                self.next_segment()?;
                continue;
            }
            let seq = self.cursor;
            if head.len() < REC_HEADER_LEN {
                return Err(seg.corrupt(
                    self.pos,
                    format!("record {seq} was published but its header is cut off"),
                ));
            }
            let h = RecordHeader::decode(head);
            if h.seq != seq || h.len as usize > MAX_RECORD {
                return Err(seg.corrupt(
                    self.pos,
                    format!(
                        "record {seq} expected, found a header with sequence number {} and \
                         length {}",
                        h.seq, h.len
                    ),
                ));
            }
            if h.len as usize > self.max {
                // Too large for this reader, or a damaged length: only the checksum tells.
                if self.pos + h.record_len() > seg.len()? {
                    return Err(seg.corrupt(
                        self.pos,
                        format!("record {seq} runs past the end of the file"),
                    ));
                }
                if !record_matches_streaming(seg, self.pos, &h)? {
                    return Err(seg.corrupt(self.pos, format!("record {seq}: checksum mismatch")));
                }
                // A valid record this reader refuses: step past it, so the records after it
                // stay reachable (an acknowledgement of a later record covers it; after a
                // crash before that, it is refused again).
                self.pos += h.record_len();
                self.cursor += 1;
                return Err(Error::IncomingTooLarge {
                    size: u64::from(h.len),
                    max: self.max,
                });
            }
            let payload = self
                .window
                .get(fd, self.pos + REC_HEADER_LEN as u64, h.len as usize)?;
            if payload.len() < h.len as usize {
                return Err(seg.corrupt(
                    self.pos,
                    format!("record {seq} was published but is cut off"),
                ));
            }
            if !h.matches(payload) {
                return Err(seg.corrupt(self.pos, format!("record {seq}: checksum mismatch")));
            }
            buf.clear();
            buf.extend_from_slice(payload);
            self.pos += h.record_len();
            self.cursor += 1;
            return Ok(seq);
        }
    }

    /// Moves to the segment that starts at `cursor`.
    fn next_segment(&mut self) -> Result<()> {
        let segs = list_segments(&self.shared.dir)?;
        let target = if segs.contains(&self.cursor) {
            self.cursor
        } else {
            match segs.first() {
                Some(&oldest) if oldest > self.cursor => {
                    self.skip_to(oldest);
                    oldest
                }
                _ => {
                    return Err(Error::CorruptRecord {
                        file: segment_path(&self.shared.dir, self.cursor),
                        offset: 0,
                        reason: format!(
                            "the segment holding record {} is missing (records up to {} were \
                             published)",
                            self.cursor, self.known_last
                        ),
                    })
                }
            }
        };
        self.seg = Some(SegmentFile::open(&self.shared.dir, target, false)?);
        self.reset_window();
        self.pos = SEG_HEADER_LEN;
        Ok(())
    }

    /// Acknowledges every message up to and including `seq`: the group's committed offset
    /// becomes `seq + 1` (it never moves back). Only delivered messages can be acknowledged.
    /// The acknowledgement is one store into a shared mapping of the group's file, so it
    /// survives a crash of this process at once; see [`sync_acks`](Self::sync_acks) for a
    /// power cut.
    pub fn ack(&mut self, seq: u64) -> Result<()> {
        if seq >= self.cursor {
            return Err(Error::Unsupported {
                op: "acknowledging a message not delivered yet",
                what: "a queue consumer",
            });
        }
        let next = seq + 1;
        if next > self.gfile.committed() {
            self.gfile.commit(next);
            let reading = self.seg.as_ref().map_or(0, |s| s.base);
            if next >= self.retain_at || reading > self.newest_seen {
                self.retain();
            }
        }
        Ok(())
    }

    /// Acknowledges every message delivered so far.
    pub fn ack_delivered(&mut self) -> Result<()> {
        if self.cursor > self.gfile.committed() {
            self.ack(self.cursor - 1)?;
        }
        Ok(())
    }

    /// Writes the committed offset to disk (`fdatasync` of the group's file), so that
    /// acknowledgements survive a power cut too.
    pub fn sync_acks(&self) -> Result<()> {
        self.gfile.sync()
    }

    /// Delivers again, from the committed offset, every message delivered but not
    /// acknowledged (what a restart would do).
    pub fn rewind(&mut self) -> Result<()> {
        self.cursor = self.gfile.committed();
        self.seg = None;
        self.locate()
    }

    /// Removes segments all groups have consumed, and notes when to try again: when this
    /// group's committed offset crosses the next segment boundary, or a new segment appears.
    fn retain(&mut self) {
        if let Err(e) = retention::collect(&self.shared, false) {
            tracing::warn!(error = %e, "queue: retention failed");
        }
        let committed = self.gfile.committed();
        let segs = list_segments(&self.shared.dir).unwrap_or_default();
        self.newest_seen = segs
            .last()
            .copied()
            .unwrap_or(0)
            .max(self.shared.ctl.cur_base());
        self.retain_at = segs
            .into_iter()
            .find(|b| *b > committed)
            .unwrap_or(u64::MAX);
    }
}
