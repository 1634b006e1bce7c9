//! Retention: which segment files can go.
//!
//! - **Consumed**: a segment every consumer group has acknowledged entirely (the next
//!   segment starts at or before every group's committed offset) is removed. Consumers check
//!   when their committed offset crosses a segment boundary; producers when they start a new
//!   segment. A queue without groups keeps everything (a consumer may come later).
//! - **Size and age** ([`QueueOptions::retain_bytes`](super::QueueOptions::retain_bytes),
//!   [`retain_age`](super::QueueOptions::retain_age)): producers remove the oldest segments
//!   while the queue is over the size, or while the oldest was last written longer ago than
//!   the age, consumed or not; a group that had not read them passes over them and counts
//!   them in [`Consumer::skipped`](super::Consumer::skipped).
//!
//! The segment being written is never removed. Removing a file another process still reads
//! is harmless: its open descriptor keeps the data until it closes it.

use std::time::SystemTime;

use super::group::{group_path, list_groups, read_committed};
use super::recovery::Shared;
use super::segment::{list_segments, segment_path};
use crate::error::Result;
use crate::sys;

/// Removes what retention allows; `by_size_and_age` also applies the size and age limits.
/// Returns how many segments were removed.
pub(crate) fn collect(shared: &Shared, by_size_and_age: bool) -> Result<usize> {
    let dir = &shared.dir;
    let mut segs = list_segments(dir)?;
    let current = shared.ctl.cur_base();
    let mut removed = 0;
    // Consumed by every group.
    let groups = list_groups(dir)?;
    if !groups.is_empty() && segs.len() > 1 {
        let mut min = u64::MAX;
        for g in &groups {
            let path = group_path(dir, g);
            match read_committed(&path) {
                Ok(c) => min = min.min(c),
                Err(crate::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "queue: a group file is unreadable; keeping every segment");
                    min = 0;
                }
            }
        }
        while segs.len() > 1 && segs[0] < current && segs[1] <= min {
            sys::file_unlink(&segment_path(dir, segs[0]))?;
            segs.remove(0);
            removed += 1;
        }
    }
    if !by_size_and_age {
        return Ok(removed);
    }
    let opts = &shared.opts;
    if opts.retain_bytes.is_none() && opts.retain_age.is_none() {
        return Ok(removed);
    }
    let mut infos = Vec::with_capacity(segs.len());
    for &b in &segs {
        if let Some(info) = sys::path_info(&segment_path(dir, b))? {
            infos.push((b, info));
        }
    }
    let mut total: u64 = infos.iter().map(|(_, i)| i.len).sum();
    let now = SystemTime::now();
    for &(b, info) in &infos {
        if b >= current {
            break;
        }
        let too_big = opts.retain_bytes.is_some_and(|max| total > max);
        let too_old = opts.retain_age.is_some_and(|age| {
            now.duration_since(info.modified)
                .is_ok_and(|elapsed| elapsed > age)
        });
        if !(too_big || too_old) {
            break;
        }
        sys::file_unlink(&segment_path(dir, b))?;
        total -= info.len;
        removed += 1;
    }
    Ok(removed)
}
