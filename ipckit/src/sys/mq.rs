//! POSIX message queues (`mq_open` and friends). On Linux a queue descriptor is a file
//! descriptor, so it polls and closes like one.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use nix::errno::Errno as NixErrno;
use nix::mqueue::{MQ_OFlag, MqAttr};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

/// Where the kernel publishes the limits that bite.
const MSG_MAX: &str = "/proc/sys/fs/mqueue/msg_max";
const MSGSIZE_MAX: &str = "/proc/sys/fs/mqueue/msgsize_max";
const QUEUES_MAX: &str = "/proc/sys/fs/mqueue/queues_max";

fn read_limit(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The attributes of a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqAttributes {
    /// Most messages the queue holds.
    pub max_messages: u64,
    /// Largest message, in bytes.
    pub message_size: u64,
    /// Messages in the queue now.
    pub current_messages: u64,
}

/// Bytes the kernel charges to RLIMIT_MSGQUEUE for a queue (its formula: the messages plus a
/// pointer-sized slot per message, conservatively).
fn charged_bytes(maxmsg: u64, msgsize: u64) -> u64 {
    maxmsg * (msgsize + 2 * std::mem::size_of::<usize>() as u64)
}

fn open_error(e: NixErrno, name: &str, maxmsg: u64, msgsize: u64, creating: bool) -> Error {
    match e {
        NixErrno::EEXIST => Error::AlreadyExists {
            what: "message queue",
            name: name.to_owned(),
        },
        NixErrno::ENOENT => Error::NotFound {
            path: format!("/dev/mqueue{name}").into(),
        },
        NixErrno::EACCES | NixErrno::EPERM => Error::PermissionDenied {
            what: format!("message queue {name}"),
        },
        NixErrno::EINVAL if creating && maxmsg > read_limit(MSG_MAX) => Error::LimitExceeded {
            limit: "fs.mqueue.msg_max (messages per queue)",
            current: read_limit(MSG_MAX),
            needed: maxmsg,
            how: format!(
                "sysctl -w fs.mqueue.msg_max={maxmsg} (as root), or ask for fewer messages"
            ),
        },
        NixErrno::EINVAL if creating && msgsize > read_limit(MSGSIZE_MAX) => Error::LimitExceeded {
            limit: "fs.mqueue.msgsize_max (bytes per message)",
            current: read_limit(MSGSIZE_MAX),
            needed: msgsize,
            how: format!(
                "sysctl -w fs.mqueue.msgsize_max={msgsize} (as root), or send smaller messages"
            ),
        },
        NixErrno::EMFILE if creating => {
            let soft = rlimit_msgqueue();
            Error::LimitExceeded {
                limit: "RLIMIT_MSGQUEUE (bytes of all queues of this user)",
                current: soft,
                needed: charged_bytes(maxmsg, msgsize),
                how: "`ulimit -q` / prlimit --msgqueue raises the soft limit up to the hard one; \
                      raising the hard limit needs CAP_SYS_RESOURCE; or make the queue smaller"
                    .into(),
            }
        }
        NixErrno::ENOSPC => Error::LimitExceeded {
            limit: "fs.mqueue.queues_max (queues on the system)",
            current: read_limit(QUEUES_MAX),
            needed: read_limit(QUEUES_MAX) + 1,
            how: "remove unused queues (ls /dev/mqueue) or sysctl -w fs.mqueue.queues_max=N".into(),
        },
        NixErrno::EMFILE | NixErrno::ENFILE => Error::TooManyOpenFiles { op: "mq_open" },
        NixErrno::ENAMETOOLONG => Error::InvalidName {
            name: name.to_owned(),
            reason: "longer than the OS allows (255 bytes)",
        },
        e => Error::Io {
            op: "mq_open",
            source: std::io::Error::from_raw_os_error(e as i32),
        },
    }
}

fn rlimit_msgqueue() -> u64 {
    // SAFETY: getrlimit writes a `struct rlimit` we own; all-zero is a valid value for it.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid resource id and a pointer to our struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}

/// Creates a queue exclusively (`O_CREAT | O_EXCL`), non-blocking and close-on-exec.
pub(crate) fn mq_create(name: &str, maxmsg: u64, msgsize: u64, mode: u32) -> Result<OwnedFd> {
    let attr = MqAttr::new(0, maxmsg as _, msgsize as _, 0);
    let flags = MQ_OFlag::O_CREAT
        | MQ_OFlag::O_EXCL
        | MQ_OFlag::O_RDWR
        | MQ_OFlag::O_NONBLOCK
        | MQ_OFlag::O_CLOEXEC;
    nix::mqueue::mq_open(name, flags, Mode::from_bits_truncate(mode), Some(&attr))
        .map(into_owned)
        .map_err(|e| open_error(e, name, maxmsg, msgsize, true))
}

/// Opens an existing queue, non-blocking and close-on-exec.
pub(crate) fn mq_open(name: &str) -> Result<OwnedFd> {
    let flags = MQ_OFlag::O_RDWR | MQ_OFlag::O_NONBLOCK | MQ_OFlag::O_CLOEXEC;
    nix::mqueue::mq_open(name, flags, Mode::empty(), None)
        .map(into_owned)
        .map_err(|e| open_error(e, name, 0, 0, false))
}

fn into_owned(q: nix::mqueue::MqdT) -> OwnedFd {
    // SAFETY: on Linux an mqd_t is a file descriptor, which the MqdT owned; ownership moves
    // to the OwnedFd, whose close(2) is what mq_close does.
    unsafe { OwnedFd::from_raw_fd(q.into_raw_fd()) }
}

/// `mq_unlink`; a missing queue is not an error.
pub(crate) fn mq_unlink(name: &str) -> Result<()> {
    match nix::mqueue::mq_unlink(name) {
        Ok(()) | Err(NixErrno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Io {
            op: "mq_unlink",
            source: std::io::Error::from_raw_os_error(e as i32),
        }),
    }
}

/// `mq_getattr`.
pub(crate) fn mq_attributes(fd: BorrowedFd<'_>) -> Result<MqAttributes> {
    // SAFETY: `mq_attr` is plain data; all-zero is valid; `fd` is an open queue descriptor.
    let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
    // SAFETY: as above; mq_getattr only writes into `a`.
    if unsafe { libc::mq_getattr(fd.as_raw_fd(), &mut a) } != 0 {
        return Err(Error::Io {
            op: "mq_getattr",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(MqAttributes {
        max_messages: a.mq_maxmsg as u64,
        message_size: a.mq_msgsize as u64,
        current_messages: a.mq_curmsgs as u64,
    })
}

/// `mq_send` on the descriptor as it is (blocking or not, by its O_NONBLOCK flag).
pub(crate) fn mq_send(fd: BorrowedFd<'_>, msg: &[u8], prio: u32) -> rustix::io::Result<()> {
    // SAFETY: `fd` is an open queue descriptor; the buffer is valid for `msg.len()` bytes.
    let r = unsafe { libc::mq_send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), prio) };
    if r == 0 {
        Ok(())
    } else {
        Err(
            rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::IO),
        )
    }
}

/// `mq_receive` into `buf` (which must hold the queue's message size); returns the length
/// and the priority.
pub(crate) fn mq_receive(
    fd: BorrowedFd<'_>,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> rustix::io::Result<(usize, u32)> {
    let mut prio = 0u32;
    // SAFETY: `fd` is an open queue descriptor; `buf` is writable for its length (the kernel
    // only writes initialised bytes into it); `prio` is ours.
    let r = unsafe {
        libc::mq_receive(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut prio,
        )
    };
    if r >= 0 {
        Ok((r as usize, prio))
    } else {
        Err(
            rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::IO),
        )
    }
}

/// The limits in force, for error messages and `ipckit doctor`.
pub fn mq_limits() -> (u64, u64, u64, u64) {
    (
        read_limit(MSG_MAX),
        read_limit(MSGSIZE_MAX),
        read_limit(QUEUES_MAX),
        rlimit_msgqueue(),
    )
}
