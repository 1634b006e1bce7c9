//! Segment files: naming, listing, creation (complete under a temporary name, then renamed
//! into place), opening with a header check, windowed reading, and the scan that finds the
//! valid prefix of a segment.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io::Errno;

use super::record::{
    check_segment_header, parse_segment_name, segment_header, segment_name, RecordHeader,
    REC_HEADER_LEN, SEG_HEADER_LEN,
};
use crate::error::{Error, Result};
use crate::sys;

/// Bytes a reader fetches at once.
const CHUNK: usize = 64 * 1024;

/// Path of the segment starting at `base` in `dir`.
pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_name(base))
}

/// First sequence numbers of the segments in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases: Vec<u64> = sys::dir_list(dir)?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// Maps a failed write to a queue file: a full device is [`Error::StorageFull`], any other
/// error [`Error::WriteFailed`] naming the file (running out of descriptors aside).
pub(crate) fn write_error(path: &Path, e: Errno) -> Error {
    match e {
        Errno::NOSPC | Errno::DQUOT | Errno::FBIG => Error::StorageFull {
            path: path.to_owned(),
        },
        Errno::MFILE | Errno::NFILE => Error::os("write to a queue file", e),
        e => Error::WriteFailed {
            path: path.to_owned(),
            source: e.into(),
        },
    }
}

/// Maps a failed `fdatasync`/`fsync` of `path`.
pub(crate) fn sync_error(path: &Path, e: Errno) -> Error {
    Error::SyncFailed {
        path: path.to_owned(),
        source: e.into(),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The number the next [`temp_path`] takes.
#[cfg(test)]
pub(crate) fn next_temp_number() -> u64 {
    TMP_COUNTER.load(Ordering::Relaxed)
}

/// A temporary name in `dir` no other process or thread uses.
pub(crate) fn temp_path(dir: &Path, what: &str) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{what}.tmp-{}-{n}", std::process::id()))
}

/// Creates the segment starting at `base`: header written (and synced when `durable`) under
/// a temporary name, then renamed into place, so a segment never exists without its header.
/// With `durable`, the directory is synced too. Returns the open (read-write) file.
pub(crate) fn create_segment(dir: &Path, base: u64, mode: u32, durable: bool) -> Result<OwnedFd> {
    let path = segment_path(dir, base);
    let tmp = temp_path(dir, "segment");
    let create = || sys::file_create(&tmp, mode, "queue segment");
    let fd = match create() {
        // The name carries this process's id and a number it never used: a file of that
        // name was left by a process that had the same id before and died creating a
        // segment (ids are reused).
        Err(Error::AlreadyExists { .. }) => {
            sys::file_unlink(&tmp)?;
            create()
        }
        r => r,
    }
    .map_err(|e| match e {
        Error::Io { source, .. } if Errno::from_io_error(&source) == Some(Errno::NOSPC) => {
            Error::StorageFull { path: path.clone() }
        }
        e => e,
    })?;
    let mut renamed = false;
    let done = (|| {
        sys::pwrite_all(fd.as_fd(), &segment_header(base), &[], 0)
            .map_err(|e| write_error(&path, e))?;
        if durable {
            sys::fdatasync(fd.as_fd()).map_err(|e| sync_error(&path, e))?;
        }
        sys::rename_noreplace(&tmp, &path)?;
        renamed = true;
        if durable {
            let d = sys::dir_open(dir)?;
            sys::fsync(d.as_fd()).map_err(|e| sync_error(dir, e))?;
        }
        Ok(())
    })();
    match done {
        Ok(()) => Ok(fd),
        Err(e) => {
            // Nothing was published in it yet: take it back whole.
            let _ = sys::file_unlink(if renamed { &path } else { &tmp });
            Err(e)
        }
    }
}

/// An open segment file.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub(crate) fd: OwnedFd,
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
}

impl SegmentFile {
    /// Opens the segment starting at `base` and checks its header. A missing file is
    /// [`Error::NotFound`]; a bad header is [`Error::CorruptRecord`] at offset 0.
    pub(crate) fn open(dir: &Path, base: u64, writable: bool) -> Result<SegmentFile> {
        let path = segment_path(dir, base);
        let fd = sys::file_open(&path, writable, "queue segment")?;
        let mut h = [0u8; SEG_HEADER_LEN as usize];
        let n = sys::pread_full(fd.as_fd(), &mut h, 0)?;
        check_segment_header(&h[..n], base).map_err(|reason| Error::CorruptRecord {
            file: path.clone(),
            offset: 0,
            reason,
        })?;
        Ok(SegmentFile { fd, base, path })
    }

    /// Wraps a segment just created.
    pub(crate) fn created(fd: OwnedFd, dir: &Path, base: u64) -> SegmentFile {
        SegmentFile {
            fd,
            base,
            path: segment_path(dir, base),
        }
    }

    /// The file's current size.
    pub(crate) fn len(&self) -> Result<u64> {
        sys::file_len(self.fd.as_fd())
    }

    /// A corruption error at `offset` of this segment.
    pub(crate) fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::CorruptRecord {
            file: self.path.clone(),
            offset,
            reason: reason.into(),
        }
    }
}

/// A read-ahead window over one file: positioned reads of [`CHUNK`] bytes or more, so that
/// many small records cost one system call.
#[derive(Debug, Default)]
pub(crate) struct Window {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// Valid bytes in `buf`.
    len: usize,
}

impl Window {
    /// Forgets what was read (the file may have changed beyond what is known valid).
    pub(crate) fn invalidate(&mut self) {
        self.len = 0;
    }

    /// The bytes `[off, off + n)` of `fd`, fewer if the file ends before; reads only when
    /// the window does not hold them yet.
    pub(crate) fn get(&mut self, fd: BorrowedFd<'_>, off: u64, n: usize) -> Result<&[u8]> {
        let have = off >= self.start && off + n as u64 <= self.start + self.len as u64;
        if !have {
            let want = n.max(CHUNK);
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            self.start = off;
            self.len = 0;
            // One read usually brings everything; loop only while short of the `n` needed.
            while self.len < n {
                let got = sys::pread(fd, &mut self.buf[self.len..want], off + self.len as u64)?;
                if got == 0 {
                    break;
                }
                self.len += got;
            }
        }
        let from = (off - self.start) as usize;
        let to = (from + n).min(self.len);
        Ok(&self.buf[from.min(to)..to])
    }
}

/// What a scan of one segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// End of the valid prefix (where the next record goes).
    pub(crate) end: u64,
    /// Sequence number of the last valid record (`base - 1` when there is none).
    pub(crate) last_seq: u64,
    /// Offset of the last valid record (0 when there is none).
    pub(crate) last_off: u64,
    /// Size of the file.
    pub(crate) file_len: u64,
    /// The first invalid point after the valid prefix, and why, if the prefix does not run to
    /// the end of the file.
    pub(crate) bad: Option<(u64, &'static str)>,
}

/// Scans `seg` from its header for valid, consecutive records, stopping before the record
/// `stop_before` (if given) or at the first invalid point.
pub(crate) fn scan(
    seg: &SegmentFile,
    window: &mut Window,
    stop_before: Option<u64>,
) -> Result<Scan> {
    let file_len = seg.len()?;
    let fd = seg.fd.as_fd();
    let mut at = SEG_HEADER_LEN;
    let mut next = seg.base;
    let mut last_off = 0;
    let bad = loop {
        if stop_before == Some(next) || at == file_len {
            break None;
        }
        match check_record(fd, window, at, file_len, next)? {
            Ok(h) => {
                last_off = at;
                at += h.record_len();
                next += 1;
            }
            Err(reason) => break Some((at, reason)),
        }
    };
    Ok(Scan {
        end: at,
        last_seq: next - 1,
        last_off,
        file_len,
        bad,
    })
}

/// Checks the record at `at` that should carry `expected`: its header if whole, else why not.
pub(crate) fn check_record(
    fd: BorrowedFd<'_>,
    window: &mut Window,
    at: u64,
    file_len: u64,
    expected: u64,
) -> Result<std::result::Result<RecordHeader, &'static str>> {
    if at + REC_HEADER_LEN as u64 > file_len {
        return Ok(Err("incomplete record header"));
    }
    let h = RecordHeader::decode(window.get(fd, at, REC_HEADER_LEN)?);
    if let Err(reason) = h.check_shape(at, file_len, expected) {
        return Ok(Err(reason));
    }
    let payload = window.get(fd, at + REC_HEADER_LEN as u64, h.len as usize)?;
    if !h.matches(payload) {
        return Ok(Err("record checksum mismatch"));
    }
    Ok(Ok(h))
}

/// Looks for any valid record after the invalid point `bad` of a segment whose valid prefix
/// ends with sequence number `last_seq`: a record there means the damage is in the middle of
/// the data (not a torn end), and must be reported rather than cut off. Returns its offset.
pub(crate) fn valid_record_after(
    seg: &SegmentFile,
    window: &mut Window,
    bad: u64,
    last_seq: u64,
    file_len: u64,
) -> Result<Option<u64>> {
    let fd = seg.fd.as_fd();
    // A record after `bad` carries a later sequence number, at most one per header's worth of
    // the bytes that follow.
    let max_seq = last_seq + 1 + (file_len - bad) / REC_HEADER_LEN as u64;
    let mut at = bad + 1;
    while at + REC_HEADER_LEN as u64 <= file_len {
        let h = RecordHeader::decode(window.get(fd, at, REC_HEADER_LEN)?);
        if h.seq > last_seq
            && h.seq <= max_seq
            && h.check_shape(at, file_len, h.seq).is_ok()
            && h.matches(window.get(fd, at + REC_HEADER_LEN as u64, h.len as usize)?)
        {
            return Ok(Some(at));
        }
        at += 1;
    }
    Ok(None)
}

/// Whether the record at `at` with header `h` has the payload its checksum says, read in
/// chunks (for records too large to take into memory whole, e.g. over a reader's maximum).
pub(crate) fn record_matches_streaming(
    seg: &SegmentFile,
    at: u64,
    h: &RecordHeader,
) -> Result<bool> {
    let mut chunk = vec![0u8; CHUNK];
    let mut state = RecordHeader::crc_start(h.len, h.seq);
    let mut off = at + REC_HEADER_LEN as u64;
    let mut left = h.len as usize;
    while left > 0 {
        let want = left.min(CHUNK);
        let got = sys::pread_full(seg.fd.as_fd(), &mut chunk[..want], off)?;
        if got < want {
            return Ok(false);
        }
        state = crc32c::crc32c_append(state, &chunk[..got]);
        off += got as u64;
        left -= got;
    }
    Ok(state == h.crc)
}
