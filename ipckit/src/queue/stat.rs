//! `stat`: what a queue directory holds, read without changing anything.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::ctl::Ctl;
use super::group::{group_path, list_groups, read_committed};
use super::segment::{list_segments, scan, segment_path, SegmentFile, Window};
use crate::error::{Error, Result};
use crate::sys;

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStat {
    /// Its path.
    pub file: PathBuf,
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Records it holds.
    pub records: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// One consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStat {
    /// Its name.
    pub name: String,
    /// Its committed offset: the first sequence number it has not acknowledged.
    pub committed: u64,
    /// Messages kept that it has not acknowledged.
    pub depth: u64,
}

/// What [`stat`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStat {
    /// The queue directory.
    pub dir: PathBuf,
    /// Segment files, oldest first.
    pub segments: Vec<SegmentStat>,
    /// Sequence number of the oldest message kept (one past `last_seq` when none is).
    pub first_seq: u64,
    /// Sequence number of the last message appended (0 if none ever was).
    pub last_seq: u64,
    /// Consumer groups, by name.
    pub groups: Vec<GroupStat>,
}

/// Describes the queue in `dir`: its segments, the depth of each consumer group and the
/// last sequence number. Reads only; a process appending at the same time may make the
/// figures a little stale.
pub fn stat(dir: impl AsRef<Path>) -> Result<QueueStat> {
    let dir = dir.as_ref();
    if sys::path_info(dir)?.is_none() {
        return Err(Error::NotFound {
            path: dir.to_owned(),
        });
    }
    let bases = list_segments(dir)?;
    let last_seq = match Ctl::peek(dir)? {
        Some(t) => t.last_seq,
        None => match bases.last() {
            Some(&b) => {
                let seg = SegmentFile::open(dir, b, false)?;
                scan(&seg, &mut Window::default(), None)?.last_seq
            }
            None => 0,
        },
    };
    let mut segments = Vec::with_capacity(bases.len());
    for (i, &b) in bases.iter().enumerate() {
        let file = segment_path(dir, b);
        let bytes = match sys::path_info(&file)? {
            Some(info) => info.len,
            None => continue,
        };
        let end = bases.get(i + 1).copied().unwrap_or(last_seq + 1);
        segments.push(SegmentStat {
            file,
            first_seq: b,
            records: end.saturating_sub(b),
            bytes,
        });
    }
    let first_seq = bases.first().copied().unwrap_or(last_seq + 1);
    let mut groups = Vec::new();
    for name in list_groups(dir)? {
        let committed = match read_committed(&group_path(dir, &name)) {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        groups.push(GroupStat {
            depth: (last_seq + 1).saturating_sub(committed.max(first_seq)),
            name,
            committed,
        });
    }
    Ok(QueueStat {
        dir: dir.to_owned(),
        segments,
        first_seq,
        last_seq,
        groups,
    })
}

/// Removes a consumer group (its committed offset), so that it no longer holds back
/// retention. Fails with [`Error::AddressInUse`] while a consumer holds it.
pub fn remove_group(dir: impl AsRef<Path>, group: &str) -> Result<()> {
    let dir = dir.as_ref();
    super::GroupName::new(group)?;
    let path = group_path(dir, group);
    let fd = sys::file_open(&path, true, "queue group file")?;
    if !sys::try_flock_exclusive(fd.as_fd())? {
        return Err(Error::AddressInUse {
            addr: format!(
                "queue://{}?group={group} (a consumer holds this group)",
                dir.display()
            ),
        });
    }
    sys::file_unlink(&path)
}
