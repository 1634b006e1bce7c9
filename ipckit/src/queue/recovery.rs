//! Opening a queue directory, and recovery: making the control file agree with the segments.
//!
//! - **Same boot, holders alive or cleanly gone**: the control file is trusted after a cheap
//!   check of the tail (the current segment is the last file, its size is where the control
//!   file says the data ends, and the last record there is intact with the last published
//!   sequence number).
//! - **An append-mutex holder died** (the robust mutex says so): bytes it wrote past the
//!   published end, and a segment it was creating, are removed. They were never published:
//!   no `send` returned for them and no consumer saw them.
//! - **Anything else** (no control file, another boot's, a tail that does not match): the
//!   last segment is scanned from its header. The longest valid prefix is kept and the rest
//!   cut off and reported ([`Recovery`], and a `tracing` warning) — unless a valid record
//!   follows the first invalid point: then the damage is in the middle of the log and open
//!   fails with [`Error::CorruptRecord`] naming the file and offset, rather than dropping
//!   good records. Damage in earlier segments is found by the consumer that reads it, with
//!   the same error.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::ctl::{AppendGuard, Ctl, Tail};
use super::group::GROUPS_DIR;
use super::record::SEG_HEADER_LEN;
use super::segment::{
    check_record, create_segment, list_segments, scan, valid_record_after, write_error,
    SegmentFile, Window,
};
use super::{Durability, QueueOptions};
use crate::error::{Error, Result};
use crate::sys;
use crate::transport::Wait;

/// Name of the lock file that serialises opening (building the control file).
pub(crate) const LOCK_NAME: &str = "queue.lock";

/// What recovery cut off the end of the log when a queue was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The segment that was cut.
    pub file: PathBuf,
    /// Where it now ends: the end of its last valid record.
    pub offset: u64,
    /// Bytes removed after that point.
    pub dropped_bytes: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// A queue directory opened by this process: its path, control file and options.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) ctl: Ctl,
    pub(crate) opts: QueueOptions,
}

/// Directory permissions for file permissions `mode`: search wherever reading is allowed.
fn dir_mode(mode: u32) -> u32 {
    mode | ((mode & 0o444) >> 2)
}

/// Refuses a queue directory another user could control: one owned by someone other than
/// this user (or root), or writable by group or others beyond what `mode` grants. Whoever
/// can write the directory can forge records, wedge the control file or swap segments, so
/// an existing directory is only trusted if nobody but the people the URL names could have
/// prepared it. When `mode` itself lets the group (or everyone) write, those users may write
/// the queue anyway, and a directory one of them created is accepted.
pub(crate) fn check_dir_permissions(dir: &Path, mode: u32) -> Result<()> {
    let (owner, bits) = sys::dir_owner_mode(dir)?;
    let me = sys::effective_uid();
    let unsafe_dir = |reason: String| Error::UnsafePermissions {
        path: dir.to_owned(),
        reason,
    };
    // Write access the URL grants to the group and to others.
    let granted = mode & 0o022;
    if owner != me && owner != 0 && granted == 0 {
        return Err(unsafe_dir(format!(
            "the directory is owned by uid {owner}, not by this user (uid {me}); another user could have prepared it"
        )));
    }
    let extra = bits & 0o022 & !granted;
    if extra != 0 {
        let who = match extra {
            0o020 => "its group",
            0o002 => "everyone",
            _ => "its group and everyone",
        };
        return Err(unsafe_dir(format!(
            "the directory (mode {:o}) is writable by {who}, which the queue's mode {mode:o} does not grant; tighten it (chmod go-w) or ask for that access with ?mode=",
            bits & 0o7777
        )));
    }
    Ok(())
}

impl Shared {
    /// Opens (creating if needed) the queue in `dir` and brings the control file up to date.
    pub(crate) fn open(dir: &Path, opts: &QueueOptions) -> Result<(Shared, Option<Recovery>)> {
        sys::dir_create_all(dir, dir_mode(opts.mode))?;
        check_dir_permissions(dir, opts.mode)?;
        let groups = dir.join(GROUPS_DIR);
        sys::dir_create_all(&groups, dir_mode(opts.mode))?;
        check_dir_permissions(&groups, opts.mode)?;
        let lock = sys::file_open_or_create(&dir.join(LOCK_NAME), opts.mode)?;
        sys::flock_exclusive(lock.as_fd())?;
        let opened = (|| match Ctl::open_current(dir)? {
            Some(ctl) => {
                let shared = Shared {
                    dir: dir.to_owned(),
                    ctl,
                    opts: opts.clone(),
                };
                let recovery = {
                    let guard = shared.ctl.lock_append(Wait::Forever)?;
                    verify(&shared, &guard)?
                };
                Ok((shared, recovery))
            }
            None => {
                let (tail, recovery) = rebuild(dir, opts, None)?;
                let ctl = Ctl::create(dir, tail, opts.mode)?;
                Ok((
                    Shared {
                        dir: dir.to_owned(),
                        ctl,
                        opts: opts.clone(),
                    },
                    recovery,
                ))
            }
        })();
        sys::funlock(lock.as_fd());
        opened
    }
}

/// With the append mutex held: repairs after a dead holder, checks the tail the control file
/// records against the files, and rebuilds it from the last segment if they disagree.
pub(crate) fn verify(shared: &Shared, guard: &AppendGuard<'_>) -> Result<Option<Recovery>> {
    if guard.needs_repair() {
        repair(shared)?;
        guard.repaired();
    }
    if tail_is_consistent(shared)? {
        return Ok(None);
    }
    let t = shared.ctl.tail();
    let rebuilt = rebuild(&shared.dir, &shared.opts, Some(t.last_seq));
    // Whatever the rebuild cut (or failed half-way through cutting).
    shared.ctl.truncated();
    let (tail, recovery) = rebuilt?;
    shared.ctl.set_tail(tail);
    shared
        .ctl
        .synced_seq()
        .fetch_min(tail.last_seq, Ordering::SeqCst);
    Ok(recovery)
}

/// Removes what a dead append-mutex holder left past the published end, and a segment it
/// was creating.
fn repair(shared: &Shared) -> Result<()> {
    remove_stale_temporaries(&shared.dir)?;
    let t = shared.ctl.tail();
    for base in list_segments(&shared.dir)? {
        if base > t.cur_base {
            // A segment created by a roll that did not complete: nothing was published in it.
            sys::file_unlink(&super::segment::segment_path(&shared.dir, base))?;
        }
    }
    let seg = match SegmentFile::open(&shared.dir, t.cur_base, true) {
        Ok(s) => s,
        // Verification that follows rebuilds from what is there.
        Err(Error::NotFound { .. } | Error::CorruptRecord { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    if seg.len()? > t.cur_end {
        let cut = sys::truncate(seg.fd.as_fd(), t.cur_end);
        shared.ctl.truncated();
        cut.map_err(|e| write_error(&seg.path, e))?;
        tracing::debug!(
            file = %seg.path.display(),
            at = t.cur_end,
            "queue: removed an append left unfinished by a process that died"
        );
    }
    Ok(())
}

/// The cheap check: does the tail in the control file match the last segment?
fn tail_is_consistent(shared: &Shared) -> Result<bool> {
    let t = shared.ctl.tail();
    let segs = list_segments(&shared.dir)?;
    if segs.last() != Some(&t.cur_base) || t.cur_end < SEG_HEADER_LEN {
        return Ok(false);
    }
    let seg = match SegmentFile::open(&shared.dir, t.cur_base, false) {
        Ok(s) => s,
        Err(Error::NotFound { .. } | Error::CorruptRecord { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = seg.len()?;
    if len != t.cur_end || t.last_seq + 1 < t.cur_base {
        return Ok(false);
    }
    if t.last_seq + 1 == t.cur_base {
        return Ok(t.cur_end == SEG_HEADER_LEN && t.last_off == 0);
    }
    let mut window = Window::default();
    Ok(
        match check_record(seg.fd.as_fd(), &mut window, t.last_off, len, t.last_seq)? {
            Ok(h) => t.last_off + h.record_len() == t.cur_end,
            Err(_) => false,
        },
    )
}

/// Rebuilds the tail from the files: scans the last segment (creating the first segment of
/// a new queue), cuts a torn end, and fails on damage in the middle. `known_last` is the
/// last sequence number the control file had, if any, to number a new first segment after.
pub(crate) fn rebuild(
    dir: &Path,
    opts: &QueueOptions,
    known_last: Option<u64>,
) -> Result<(Tail, Option<Recovery>)> {
    remove_stale_temporaries(dir)?;
    let durable = opts.durability == Durability::Fsync;
    let segs = list_segments(dir)?;
    let Some(&base) = segs.last() else {
        let base = known_last.map_or(1, |l| l + 1);
        create_segment(dir, base, opts.mode, durable)?;
        return Ok((
            Tail {
                last_seq: base - 1,
                cur_base: base,
                cur_end: SEG_HEADER_LEN,
                last_off: 0,
            },
            None,
        ));
    };
    let seg = SegmentFile::open(dir, base, true)?;
    let mut window = Window::default();
    let s = scan(&seg, &mut window, None)?;
    let mut recovery = None;
    if let Some((bad, reason)) = s.bad {
        if let Some(good) = valid_record_after(&seg, &mut window, bad, s.last_seq, s.file_len)? {
            return Err(seg.corrupt(
                bad,
                format!(
                    "{reason} (record {}); a valid record follows at byte {good}, so this is \
                     damage inside the log, not an unfinished write at its end",
                    s.last_seq + 1
                ),
            ));
        }
        sys::truncate(seg.fd.as_fd(), s.end).map_err(|e| write_error(&seg.path, e))?;
        if durable {
            sys::fdatasync(seg.fd.as_fd()).map_err(|e| super::segment::sync_error(&seg.path, e))?;
        }
        tracing::warn!(
            file = %seg.path.display(),
            offset = s.end,
            dropped = s.file_len - s.end,
            reason,
            "queue: cut an unfinished or damaged end off the log"
        );
        recovery = Some(Recovery {
            file: seg.path.clone(),
            offset: s.end,
            dropped_bytes: s.file_len - s.end,
            reason: reason.to_owned(),
        });
    }
    Ok((
        Tail {
            last_seq: s.last_seq,
            cur_base: base,
            cur_end: s.end,
            last_off: s.last_off,
        },
        recovery,
    ))
}

/// Removes temporary files of segment creations that did not finish. Segments are only
/// created by the append-mutex holder, or here before any control file exists, so none of
/// these belongs to a live creation.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    for name in sys::dir_list(dir)? {
        if name.starts_with(".segment.tmp-") {
            sys::file_unlink(&dir.join(name))?;
        }
    }
    Ok(())
}
