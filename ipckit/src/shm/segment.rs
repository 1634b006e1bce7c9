//! Named and anonymous shared-memory segments with a self-describing header.

use std::mem::{align_of, size_of};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::region::SharedBytes;
use crate::sys;

/// Prefix of the OS names of every segment ipckit creates, so `ipckit ls` can find them.
pub const NAME_PREFIX: &str = "ipckit.";

/// Longest user name of a segment, in bytes.
pub const NAME_MAX: usize = 200;

/// Bytes of header at the start of every segment; user data starts after it.
pub const HEADER_LEN: usize = 128;

/// Version of the header layout; bumped on any incompatible change.
pub const LAYOUT_VERSION: u32 = 1;

const MAGIC: u64 = u64::from_le_bytes(*b"IPCKITsg");

/// Byte offsets (far past the end of any segment) of the locks that record who holds a
/// segment. Locks on an open file description vanish when the holder dies, so liveness does
/// not depend on comparing process ids (which the OS reuses).
pub(crate) const LOCK_ATTACHED: u64 = 1 << 40;

/// How long `open` waits for a creator that is still initialising the header.
const INIT_WAIT: Duration = Duration::from_secs(1);

/// What a segment holds; opening a segment as the wrong kind is [`Error::Incompatible`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// User data, accessed through [`Segment`]'s typed and byte accessors.
    Data = 1,
    /// One connection of an `shm://` channel: two rings.
    Channel = 2,
    /// The rendezvous point of an `shm://` listener.
    Listener = 3,
    /// A [`crate::sync::Semaphore`].
    Semaphore = 4,
    /// A [`crate::sync::Mutex`].
    Mutex = 5,
    /// A [`crate::sync::Event`].
    Event = 6,
}

impl SegmentKind {
    fn from_raw(v: u32) -> Option<SegmentKind> {
        match v {
            1 => Some(SegmentKind::Data),
            2 => Some(SegmentKind::Channel),
            3 => Some(SegmentKind::Listener),
            4 => Some(SegmentKind::Semaphore),
            5 => Some(SegmentKind::Mutex),
            6 => Some(SegmentKind::Event),
            _ => None,
        }
    }
}

/// The header as laid out in shared memory. Only `magic` is accessed atomically; the rest is
/// written once by the creator before `magic` is published, and read with volatile copies.
#[repr(C)]
struct RawHeader {
    magic: AtomicU64,
    version: u32,
    header_len: u32,
    kind: u32,
    creator_pid: u32,
    fingerprint: u64,
    data_len: u64,
    created_unix_ms: u64,
    _reserved: [u8; 80],
}

const _: () = assert!(size_of::<RawHeader>() == HEADER_LEN);
const _: () = assert!(align_of::<RawHeader>() == 8);
const _: () = assert!(std::mem::offset_of!(RawHeader, fingerprint) == 24);
const _: () = assert!(std::mem::offset_of!(RawHeader, data_len) == 32);

/// What a segment's header says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The user name (without [`NAME_PREFIX`]).
    pub name: String,
    /// What it holds.
    pub kind: Option<SegmentKind>,
    /// Bytes of user data.
    pub data_len: u64,
    /// Process that created it.
    pub creator_pid: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Whether any process still has it open (through ipckit).
    pub in_use: bool,
}

/// A 64-bit fingerprint of a type's name, size and alignment (FNV-1a), stored in the header so
/// that a process opening a segment as another type gets [`Error::Incompatible`].
pub fn fingerprint_of<T: 'static>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(std::any::type_name::<T>().as_bytes());
    eat(&(size_of::<T>() as u64).to_le_bytes());
    eat(&(align_of::<T>() as u64).to_le_bytes());
    h
}

/// Checks a user segment name: 1 to [`NAME_MAX`] bytes, no `/`, no NUL, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name needs at least one character");
    }
    if name.len() > NAME_MAX {
        return bad("longer than 200 bytes");
    }
    if name.contains('/') {
        return bad("contains '/': use a plain name such as \"sensor-data\"");
    }
    if name.contains('\0') {
        return bad("contains a NUL byte");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not names");
    }
    Ok(())
}

fn os_name(name: &str) -> String {
    format!("{NAME_PREFIX}{name}")
}

/// Where a named segment lives: POSIX shared memory, or a file in a directory (a mapped
/// file, for channels that must survive in or be placed on a file system).
fn create_object(dir: Option<&Path>, name: &str, mode: u32) -> Result<OwnedFd> {
    match dir {
        None => sys::shm_create(&os_name(name), mode, "shared-memory segment"),
        Some(d) => sys::file_create(&d.join(name), mode, "mapped file"),
    }
}

fn open_object(dir: Option<&Path>, name: &str, writable: bool) -> Result<OwnedFd> {
    match dir {
        None => sys::shm_open(&os_name(name), writable, "shared-memory segment"),
        Some(d) => sys::file_open(&d.join(name), writable, "mapped file"),
    }
}

fn unlink_object(dir: Option<&Path>, name: &str) -> Result<()> {
    match dir {
        None => sys::shm_unlink(&os_name(name)),
        Some(d) => sys::file_unlink(&d.join(name)),
    }
}

/// Options for creating or opening a named segment; ends in [`create`](Self::create),
/// [`open`](Self::open) or [`open_or_create`](Self::open_or_create).
#[derive(Clone, Debug)]
pub struct SegmentBuilder {
    name: String,
    size: usize,
    mode: u32,
    fingerprint: u64,
    kind: SegmentKind,
    writable: bool,
    dir: Option<PathBuf>,
    populate: bool,
}

impl SegmentBuilder {
    /// Backs the segment with a file `DIR/NAME` instead of POSIX shared memory (the segment
    /// is then a memory-mapped file; `ipckit ls` does not list it).
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Bytes of user data (for creation).
    pub fn size(mut self, bytes: usize) -> Self {
        self.size = bytes;
        self
    }

    /// Permissions of a created segment (default 0600).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Records (on create) and checks (on open) that the segment holds a `T`.
    pub fn typed<T: 'static>(mut self) -> Self {
        self.fingerprint = fingerprint_of::<T>();
        self
    }

    /// Opens read-only (writes fail with a permission error).
    pub fn read_only(mut self) -> Self {
        self.writable = false;
        self
    }

    /// Maps every page at once (`MAP_POPULATE`) instead of on first touch: the memory is
    /// committed when the segment is created or opened, and the first pass over it takes no
    /// page faults (each costs microseconds; a ring hot path should not pay them).
    pub fn populate(mut self) -> Self {
        self.populate = true;
        self
    }

    pub(crate) fn kind(mut self, kind: SegmentKind) -> Self {
        self.kind = kind;
        self
    }

    /// Creates the segment; fails with [`Error::AlreadyExists`] if the name is taken. The
    /// returned segment removes the name when dropped unless [`Segment::keep`] is called.
    pub fn create(self) -> Result<Segment> {
        validate_name(&self.name)?;
        let dir = self.dir.as_deref();
        let fd = create_object(dir, &self.name, self.mode)?;
        // From here on, a failure must remove the half-made name.
        let made = (|| {
            // Held from the start, so `cleanup_stale` cannot take the half-made segment for
            // a crashed process's; it leaves alone the empty ones younger than
            // `CREATION_GRACE`, which covers the moment before this lock.
            sys::ofd_lock(sys::fd_of(&fd), LOCK_ATTACHED, 1, false)?;
            sys::set_len(sys::fd_of(&fd), (HEADER_LEN + self.size) as u64)?;
            let seg = Segment::map(
                fd,
                &self.name,
                dir,
                HEADER_LEN + self.size,
                true,
                self.populate,
            )?;
            seg.write_header(&self);
            Ok(seg)
        })();
        match made {
            Ok(mut seg) => {
                seg.remove_on_drop = true;
                Ok(seg)
            }
            Err(e) => {
                let _ = unlink_object(dir, &self.name);
                Err(e)
            }
        }
    }

    /// Opens an existing segment and checks its header (magic, version, kind, type).
    pub fn open(self) -> Result<Segment> {
        validate_name(&self.name)?;
        let fd = open_object(self.dir.as_deref(), &self.name, self.writable)?;
        let len = sys::file_len(sys::fd_of(&fd))? as usize;
        if len < HEADER_LEN {
            // Either being created right now or not ipckit's: wait briefly for the size.
            let deadline = Instant::now() + INIT_WAIT;
            loop {
                let len = sys::file_len(sys::fd_of(&fd))? as usize;
                if len >= HEADER_LEN {
                    return self.open_mapped(fd, len);
                }
                if Instant::now() >= deadline {
                    return Err(Error::NotReady { name: self.name });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.open_mapped(fd, len)
    }

    fn open_mapped(self, fd: OwnedFd, len: usize) -> Result<Segment> {
        let seg = Segment::map(
            fd,
            &self.name,
            self.dir.as_deref(),
            len,
            self.writable,
            self.populate,
        )?;
        seg.check_header(&self, len)?;
        Ok(seg)
    }

    /// Opens the segment if it exists, else creates it. Of several processes racing, exactly
    /// one creates (and owns) it.
    pub fn open_or_create(self) -> Result<Segment> {
        loop {
            match self.clone().open() {
                Err(Error::NotFound { .. }) => {}
                other => return other,
            }
            match self.clone().create() {
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }
}

/// A shared-memory segment mapped into this process.
///
/// Access goes through the [`SharedBytes`] methods: bounds-checked copies (`read`, `write`,
/// `read_bytes`, `write_bytes`) and atomics at aligned offsets (`atomic_u32`, `atomic_u64`).
/// No plain Rust reference into the shared bytes is ever handed out, because another process
/// may write them at any time.
///
/// ```
/// use ipckit::shm::{Segment, SharedBytes};
/// use std::sync::atomic::Ordering;
///
/// let name = format!("doc-{}", std::process::id());
/// let seg = Segment::builder(&name).size(4096).create()?; // removed when dropped
/// seg.write(0, &[1u32, 2, 3, 4])?;
/// let other = Segment::builder(&name).open()?; // as another process would
/// assert_eq!(other.read::<[u32; 4]>(0)?, [1, 2, 3, 4]);
/// other.atomic_u64(64)?.fetch_add(5, Ordering::SeqCst);
/// assert_eq!(seg.atomic_u64(64)?.load(Ordering::SeqCst), 5);
/// assert!(seg.read::<u64>(4095).is_err()); // out of bounds: a typed error
/// # Ok::<(), ipckit::Error>(())
/// ```
///
/// Like any shared mapping, a process that shrinks the segment (`ftruncate`) under a reader
/// makes the reader's next access to the lost pages raise `SIGBUS`; ipckit never shrinks
/// segments, and gives other users no write permission by default (0600).
pub struct Segment {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    name: Option<String>,
    dir: Option<PathBuf>,
    remove_on_drop: bool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Starts building a named segment.
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder {
            name: name.to_owned(),
            size: 0,
            mode: 0o600,
            fingerprint: 0,
            kind: SegmentKind::Data,
            writable: true,
            dir: None,
            populate: false,
        }
    }

    /// An anonymous segment (`memfd`) of `size` bytes of user data; children inherit it
    /// through [`Segment::share_with`].
    pub fn anonymous(size: usize) -> Result<Segment> {
        let fd = sys::memfd("ipckit-anon")?;
        sys::set_len(sys::fd_of(&fd), (HEADER_LEN + size) as u64)?;
        let mut seg = Segment::map(fd, "", None, HEADER_LEN + size, true, false)?;
        seg.write_header(&Segment::builder("anonymous").size(size));
        seg.name = None;
        Ok(seg)
    }

    fn map(
        fd: OwnedFd,
        name: &str,
        dir: Option<&Path>,
        len: usize,
        writable: bool,
        populate: bool,
    ) -> Result<Segment> {
        let map = sys::map_shared(&fd, len, writable, populate)?;
        // Mark this process as a holder, for `in_use`/`cleanup_stale`.
        sys::ofd_lock(sys::fd_of(&fd), LOCK_ATTACHED, 1, false)?;
        Ok(Segment {
            map,
            fd,
            name: Some(name.to_owned()),
            dir: dir.map(Path::to_owned),
            remove_on_drop: false,
        })
    }

    /// The descriptor (for liveness locks).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        sys::fd_of(&self.fd)
    }

    /// Unlinks the name now (the mapping stays valid); nothing is removed on drop after.
    pub(crate) fn unlink_now(&mut self) {
        if let Some(n) = &self.name {
            if !n.is_empty() {
                let _ = unlink_object(self.dir.as_deref(), n);
            }
        }
        self.remove_on_drop = false;
    }

    fn header_ptr(&self) -> *mut RawHeader {
        self.map.as_mut_ptr().cast()
    }

    fn magic(&self) -> &AtomicU64 {
        // SAFETY:
        // - the mapping is at least HEADER_LEN bytes, page-aligned, so the first 8 bytes are a
        //   valid, aligned AtomicU64 for as long as `self` (and so the mapping) lives;
        // - it is only ever accessed atomically, by every process.
        unsafe { &*ptr::addr_of!((*self.header_ptr()).magic) }
    }

    fn write_header(&self, b: &SegmentBuilder) {
        let h = self.header_ptr();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // SAFETY:
        // - `h` points to HEADER_LEN writable mapped bytes, suitably aligned (page start);
        // - nobody reads these fields before `magic` is published below (Release), and we
        //   write through raw pointers without forming references.
        unsafe {
            ptr::addr_of_mut!((*h).version).write_volatile(LAYOUT_VERSION);
            ptr::addr_of_mut!((*h).header_len).write_volatile(HEADER_LEN as u32);
            ptr::addr_of_mut!((*h).kind).write_volatile(b.kind as u32);
            ptr::addr_of_mut!((*h).creator_pid).write_volatile(std::process::id());
            ptr::addr_of_mut!((*h).fingerprint).write_volatile(b.fingerprint);
            ptr::addr_of_mut!((*h).data_len).write_volatile(b.size as u64);
            ptr::addr_of_mut!((*h).created_unix_ms).write_volatile(now);
        }
        self.magic().store(MAGIC, Ordering::Release);
    }

    /// Reads the header fields (after `magic` was seen published).
    fn raw_info(&self) -> (u32, u32, u32, u32, u64, u64, u64) {
        let h = self.header_ptr();
        // SAFETY: as in `write_header`; volatile reads of plain integers, validated by callers.
        unsafe {
            (
                ptr::addr_of!((*h).version).read_volatile(),
                ptr::addr_of!((*h).header_len).read_volatile(),
                ptr::addr_of!((*h).kind).read_volatile(),
                ptr::addr_of!((*h).creator_pid).read_volatile(),
                ptr::addr_of!((*h).fingerprint).read_volatile(),
                ptr::addr_of!((*h).data_len).read_volatile(),
                ptr::addr_of!((*h).created_unix_ms).read_volatile(),
            )
        }
    }

    fn check_header(&self, want: &SegmentBuilder, file_len: usize) -> Result<()> {
        let incompatible = |reason: String| Error::Incompatible {
            name: want.name.clone(),
            reason,
        };
        let deadline = Instant::now() + INIT_WAIT;
        loop {
            match self.magic().load(Ordering::Acquire) {
                MAGIC => break,
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                0 => {
                    return Err(Error::NotReady {
                        name: want.name.clone(),
                    })
                }
                _ => return Err(incompatible("not an ipckit segment (bad magic)".into())),
            }
        }
        let (version, header_len, kind, _pid, fingerprint, data_len, _) = self.raw_info();
        if version != LAYOUT_VERSION {
            return Err(incompatible(format!(
                "layout version {version}, this ipckit reads version {LAYOUT_VERSION}"
            )));
        }
        if header_len as usize != HEADER_LEN {
            return Err(incompatible(format!("header of {header_len} bytes")));
        }
        if kind != want.kind as u32 {
            return Err(incompatible(format!(
                "holds {:?}, expected {:?}",
                SegmentKind::from_raw(kind),
                want.kind
            )));
        }
        if want.fingerprint != 0 && fingerprint != want.fingerprint {
            return Err(incompatible(
                "created for another type (type fingerprint differs)".into(),
            ));
        }
        if data_len.checked_add(HEADER_LEN as u64) != Some(file_len as u64) {
            return Err(Error::Corrupted(format!(
                "header says {data_len} bytes of data but the object has {file_len} bytes"
            )));
        }
        Ok(())
    }

    /// The user name (None for anonymous segments).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref().filter(|n| !n.is_empty())
    }

    /// Bytes of user data.
    pub fn len(&self) -> usize {
        self.map.len() - HEADER_LEN
    }

    /// True if the segment has no user data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the name after this segment is dropped (it stays in /dev/shm until removed).
    pub fn keep(&mut self) {
        self.remove_on_drop = false;
    }

    /// What the header says, and whether any process holds the segment.
    pub fn info(&self) -> SegmentInfo {
        let (_, _, kind, creator_pid, _, data_len, created_unix_ms) = self.raw_info();
        SegmentInfo {
            name: self.name().unwrap_or("").to_owned(),
            kind: SegmentKind::from_raw(kind),
            data_len,
            creator_pid,
            created_unix_ms,
            in_use: true,
        }
    }

    /// Pointer to the first byte of user data. Valid while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER_LEN <= map length (checked on create and open).
        unsafe { self.map.as_mut_ptr().add(HEADER_LEN) }
    }

    /// Lets a child spawned from `cmd` open this segment with [`Segment::from_env`] (the
    /// descriptor is inherited; the variable [`ENV_VAR`] carries its number). Keep `self`
    /// alive until the child is spawned.
    pub fn share_with(&self, cmd: &mut std::process::Command) {
        crate::inherit::pass_fds(cmd, ENV_VAR, &[Some(self.fd.as_raw_fd())]);
    }

    /// The segment a parent shared with [`Segment::share_with`]. Can be taken once.
    pub fn from_env() -> Result<Segment> {
        let fd = crate::inherit::take_fds(ENV_VAR, 1, crate::inherit::Expect::SharedMemory)?
            .pop()
            .flatten()
            .ok_or(Error::NoInheritedPipe("IPCKIT_SHM_FD names no descriptor"))?;
        let len = sys::file_len(sys::fd_of(&fd))? as usize;
        let mut seg = Segment::map(fd, "", None, len, true, false)?;
        seg.check_header(&Segment::builder("inherited"), len)?;
        seg.name = None;
        Ok(seg)
    }
}

/// The environment variable through which a child inherits an anonymous segment.
pub const ENV_VAR: &str = "IPCKIT_SHM_FD";

// SAFETY: `as_ptr()..as_ptr() + len()` is mapped for as long as the segment lives, and
// segments never shrink.
unsafe impl SharedBytes for Segment {
    fn region(&self) -> Result<(*mut u8, usize)> {
        Ok((self.as_ptr(), self.len()))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.remove_on_drop {
            if let Some(n) = &self.name {
                let _ = unlink_object(self.dir.as_deref(), n);
            }
        }
    }
}

/// Removes a named segment.
pub fn remove(name: &str) -> Result<()> {
    validate_name(name)?;
    sys::shm_unlink(&os_name(name))
}

/// Lists the segments ipckit created on this machine, with whether any process holds them.
pub fn list() -> Vec<SegmentInfo> {
    let mut out = Vec::new();
    for os in sys::list_shm(NAME_PREFIX) {
        let name = os[NAME_PREFIX.len()..].to_owned();
        let Ok(fd) = sys::shm_open(&os, false, "shared-memory segment") else {
            continue;
        };
        let in_use = sys::ofd_locked_by_other(sys::fd_of(&fd), LOCK_ATTACHED, 1).unwrap_or(true);
        let len = sys::file_len(sys::fd_of(&fd)).unwrap_or(0) as usize;
        let mut info = SegmentInfo {
            name: name.clone(),
            kind: None,
            data_len: len.saturating_sub(HEADER_LEN) as u64,
            creator_pid: 0,
            created_unix_ms: 0,
            in_use,
        };
        if len >= HEADER_LEN {
            if let Ok(map) = sys::map_shared(&fd, HEADER_LEN, false, false) {
                let h = map.as_mut_ptr().cast::<RawHeader>();
                // SAFETY: HEADER_LEN mapped readable bytes at a page-aligned address; plain
                // volatile integer reads, no reference formed; values only reported.
                unsafe {
                    info.kind = SegmentKind::from_raw(ptr::addr_of!((*h).kind).read_volatile());
                    info.creator_pid = ptr::addr_of!((*h).creator_pid).read_volatile();
                    info.created_unix_ms = ptr::addr_of!((*h).created_unix_ms).read_volatile();
                }
            }
        }
        out.push(info);
    }
    out
}

/// How long an empty segment that no process holds is taken for one being created (between
/// `shm_open` and the creator's lock), not for one a crashed process left.
const CREATION_GRACE: Duration = Duration::from_secs(10);

/// Removes every ipckit segment that no process holds any more (left by crashed processes).
/// Returns the names removed.
pub fn cleanup_stale() -> Result<Vec<String>> {
    cleanup_stale_prefixed("")
}

/// As [`cleanup_stale`], for the segments whose names start with `prefix` only: one
/// application's leftovers, not those of another (or of a test running beside it) that may
/// be about to look at its own.
///
/// ```
/// use ipckit::shm::{cleanup_stale_prefixed, Segment};
///
/// let name = format!("doc-crashed-{}", std::process::id());
/// let mut seg = Segment::builder(&name).size(64).create()?;
/// seg.keep(); // as if its creator had died before removing it
/// drop(seg);
/// assert_eq!(cleanup_stale_prefixed(&name)?, vec![name]);
/// # Ok::<(), ipckit::Error>(())
/// ```
///
/// A prefix that contains `/` or NUL, or is longer than a name may be, is
/// [`Error::InvalidName`].
pub fn cleanup_stale_prefixed(prefix: &str) -> Result<Vec<String>> {
    if !prefix.is_empty() {
        validate_name(prefix)?;
    }
    let mut removed = Vec::new();
    for os in sys::list_shm(&os_name(prefix)) {
        let Ok(fd) = sys::shm_open(&os, true, "shared-memory segment") else {
            continue;
        };
        if being_created(sys::fd_of(&fd)) {
            continue;
        }
        // An exclusive lock succeeds only if no other open description holds one.
        if sys::ofd_lock(sys::fd_of(&fd), LOCK_ATTACHED, 1, true)? {
            sys::shm_unlink(&os)?;
            removed.push(os[NAME_PREFIX.len()..].to_owned());
        }
    }
    Ok(removed)
}

/// True for a segment still empty and younger than [`CREATION_GRACE`]: its creator may not
/// have locked it yet.
fn being_created(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    sys::file_len(fd).map_or(true, |len| len == 0)
        && sys::modified_ago(fd).map_or(true, |ago| ago < CREATION_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::SharedBytes;
    use std::sync::atomic::AtomicU32;

    fn unique(tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn exists(name: &str) -> bool {
        std::path::Path::new(&format!("{}/{}", sys::SHM_DIR, os_name(name))).exists()
    }

    #[test]
    fn create_is_exclusive_and_owner_removes() {
        let name = unique("excl");
        let seg = Segment::builder(&name).size(100).create().unwrap();
        assert_eq!(seg.len(), 100);
        assert!(matches!(
            Segment::builder(&name).size(100).create(),
            Err(Error::AlreadyExists { .. })
        ));
        let opened = Segment::builder(&name).open().unwrap();
        assert_eq!(opened.len(), 100);
        assert_eq!(opened.info().creator_pid, std::process::id());
        drop(opened);
        assert!(exists(&name));
        drop(seg);
        assert!(!exists(&name));
        assert!(matches!(
            Segment::builder(&name).open(),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn mode_is_0600_by_default_and_settable() {
        use std::os::unix::fs::PermissionsExt;
        let name = unique("mode");
        let _seg = Segment::builder(&name).size(8).create().unwrap();
        let path = format!("{}/{}", sys::SHM_DIR, os_name(&name));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let name2 = unique("mode");
        let _seg2 = Segment::builder(&name2)
            .size(8)
            .mode(0o640)
            .create()
            .unwrap();
        let path2 = format!("{}/{}", sys::SHM_DIR, os_name(&name2));
        assert_eq!(
            std::fs::metadata(&path2).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn keep_leaves_the_name_until_removed() {
        let name = unique("keep");
        let mut seg = Segment::builder(&name).size(8).create().unwrap();
        seg.keep();
        drop(seg);
        assert!(exists(&name));
        remove(&name).unwrap();
        assert!(!exists(&name));
    }

    #[test]
    fn typed_and_kind_mismatch_are_incompatible() {
        let name = unique("typed");
        let _seg = Segment::builder(&name)
            .size(64)
            .typed::<[u64; 8]>()
            .create()
            .unwrap();
        assert!(Segment::builder(&name).typed::<[u64; 8]>().open().is_ok());
        let e = Segment::builder(&name)
            .typed::<[u32; 16]>()
            .open()
            .unwrap_err();
        assert!(matches!(e, Error::Incompatible { .. }), "{e}");
        let e = Segment::builder(&name)
            .kind(SegmentKind::Channel)
            .open()
            .unwrap_err();
        assert!(matches!(e, Error::Incompatible { .. }), "{e}");
    }

    #[test]
    fn foreign_object_is_incompatible() {
        let os = os_name(&unique("foreign"));
        let fd = sys::shm_create(&os, 0o600, "test").unwrap();
        sys::set_len(sys::fd_of(&fd), 4096).unwrap();
        let map = sys::map_shared(&fd, 8, true, false).unwrap();
        // SAFETY: 8 mapped writable bytes at a page-aligned address.
        unsafe { map.as_mut_ptr().cast::<u64>().write(0xdead_beef) };
        let e = Segment::builder(&os[NAME_PREFIX.len()..])
            .open()
            .unwrap_err();
        assert!(matches!(e, Error::Incompatible { .. }), "{e}");
        sys::shm_unlink(&os).unwrap();
    }

    #[test]
    fn half_created_object_is_not_ready() {
        let os = os_name(&unique("half"));
        let fd = sys::shm_create(&os, 0o600, "test").unwrap();
        sys::set_len(sys::fd_of(&fd), 4096).unwrap();
        let e = Segment::builder(&os[NAME_PREFIX.len()..])
            .open()
            .unwrap_err();
        assert!(matches!(e, Error::NotReady { .. }), "{e}");
        sys::shm_unlink(&os).unwrap();
    }

    #[test]
    fn accessors_check_bounds_and_alignment() {
        let seg = Segment::anonymous(64).unwrap();
        assert_eq!(seg.name(), None);
        seg.write(60, &7u32).unwrap();
        assert_eq!(seg.read::<u32>(60).unwrap(), 7);
        assert!(matches!(
            seg.read::<u64>(60),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            seg.read::<u8>(usize::MAX),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(
            seg.write_bytes(63, &[0, 0]),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(matches!(seg.atomic_u64(4), Err(Error::Misaligned { .. })));
        assert!(matches!(seg.atomic_u32(64), Err(Error::OutOfBounds { .. })));
        seg.atomic_u32(8).unwrap().store(9, Ordering::SeqCst);
        let mut b = [0u8; 4];
        seg.read_bytes(8, &mut b).unwrap();
        assert_eq!(u32::from_ne_bytes(b), 9);
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", "a/b", "..", ".", "nul\0"] {
            let bad = bad.replace("\\0", "\0");
            assert!(
                matches!(validate_name(&bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"x".repeat(NAME_MAX)).is_ok());
        assert!(validate_name(&"x".repeat(NAME_MAX + 1)).is_err());
    }

    #[test]
    fn open_or_create_races_to_one_owner() {
        let name = unique("race");
        let owners: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let name = name.clone();
                    s.spawn(move || {
                        let seg = Segment::builder(&name).size(32).open_or_create().unwrap();
                        let owner = seg.remove_on_drop;
                        let mut seg = seg;
                        seg.keep();
                        usize::from(owner)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(owners, 1);
        remove(&name).unwrap();
    }

    #[test]
    fn stale_segments_are_found_and_removed() {
        let live = unique("live");
        let stale = unique("stale");
        let _live = Segment::builder(&live).size(8).create().unwrap();
        let mut s = Segment::builder(&stale).size(8).create().unwrap();
        s.keep();
        drop(s); // nobody holds it now, as if its creator had died
        let infos = list();
        let find = |n: &str| infos.iter().find(|i| i.name == n).cloned();
        assert!(find(&live).unwrap().in_use);
        assert!(!find(&stale).unwrap().in_use);
        // Only this test's names: another test's cleanup beside it must not take them.
        assert!(cleanup_stale_prefixed(&live).unwrap().is_empty());
        assert_eq!(cleanup_stale_prefixed(&stale).unwrap(), vec![stale.clone()]);
        assert!(exists(&live) && !exists(&stale));
        assert!(cleanup_stale_prefixed("a/b").is_err());
    }

    /// An empty segment no process holds is the moment between a creator's `shm_open` and its
    /// lock: left alone while young, removed once older than the grace (its creator died).
    #[test]
    fn a_segment_being_created_is_not_taken_for_stale() {
        let young = unique("young");
        let old = unique("old");
        drop(sys::shm_create(&os_name(&young), 0o600, "test").unwrap());
        let fd = sys::shm_create(&os_name(&old), 0o600, "test").unwrap();
        let past = rustix::fs::Timespec {
            tv_sec: (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - CREATION_GRACE * 2)
                .as_secs() as _,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            &fd,
            &rustix::fs::Timestamps {
                last_access: past,
                last_modification: past,
            },
        )
        .unwrap();
        drop(fd);
        assert!(cleanup_stale_prefixed(&young).unwrap().is_empty() && exists(&young));
        assert_eq!(cleanup_stale_prefixed(&old).unwrap(), vec![old.clone()]);
        assert!(!exists(&old));
        remove(&young).unwrap();
    }
}
