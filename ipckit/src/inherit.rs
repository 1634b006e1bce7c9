//! Handing descriptors to a child process through an environment variable.
//!
//! The parent lists the descriptor numbers in a variable (`3,4`, `-` for none) and clears
//! close-on-exec on exactly those descriptors in the child, between fork and exec; the child
//! adopts them once, after checking that they are open and of the expected kind.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::sync::Mutex;

use rustix::fs::FileType;

use crate::error::{Error, Result};
use crate::sys;

/// What an inherited descriptor must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A pipe or FIFO.
    Pipe,
    /// Shared memory (a memfd or /dev/shm object: a regular file).
    SharedMemory,
}

/// Sets `var` on `cmd` and makes the child inherit `fds`. The descriptors must stay open in
/// the parent until the child is spawned.
pub(crate) fn pass_fds(cmd: &mut Command, var: &str, fds: &[Option<RawFd>]) {
    let value: Vec<String> = fds
        .iter()
        .map(|fd| fd.map_or_else(|| "-".to_owned(), |fd| fd.to_string()))
        .collect();
    cmd.env(var, value.join(","));
    let fds: Vec<RawFd> = fds.iter().flatten().copied().collect();
    let hook = move || {
        for &fd in &fds {
            // SAFETY:
            // - runs in the forked child before exec; `fd` is open there because the parent
            //   keeps the owning object alive until `spawn` returns;
            // - the borrow lasts only for this call.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        }
        Ok(())
    };
    // SAFETY:
    // - the hook only iterates a vector allocated before the fork and calls fcntl(2), which
    //   is async-signal-safe; it allocates nothing and takes no locks, as code between fork
    //   and exec must.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, hook);
    }
}

static TAKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn malformed(var: &str) -> Error {
    Error::NoInheritedPipe(if var == crate::pipe::ENV_VAR {
        "IPCKIT_PIPE_FDS must be READ,WRITE with descriptor numbers or '-'"
    } else {
        "the descriptor variable must list descriptor numbers or '-'"
    })
}

/// Adopts the `n` descriptors listed in `var`, once per process and variable.
pub(crate) fn take_fds(var: &str, n: usize, expect: Expect) -> Result<Vec<Option<OwnedFd>>> {
    let value = std::env::var(var).map_err(|_| {
        Error::NoInheritedPipe(if var == crate::pipe::ENV_VAR {
            "IPCKIT_PIPE_FDS is not set: this process was not given a pipe"
        } else {
            "IPCKIT_SHM_FD is not set: this process was not given a segment"
        })
    })?;
    let nums: Vec<Option<RawFd>> = value
        .split(',')
        .map(|s| match s {
            "-" => Ok(None),
            s => s
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(Some)
                .ok_or_else(|| malformed(var)),
        })
        .collect::<Result<_>>()?;
    if nums.len() != n {
        return Err(malformed(var));
    }
    {
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        if taken.iter().any(|v| v == var) {
            return Err(Error::NoInheritedPipe("already taken by an earlier call"));
        }
        taken.push(var.to_owned());
    }
    nums.into_iter()
        .map(|fd| fd.map(|fd| adopt(fd, expect)).transpose())
        .collect()
}

/// Takes ownership of an inherited descriptor after checking it is open and of the kind
/// expected.
fn adopt(fd: RawFd, expect: Expect) -> Result<OwnedFd> {
    // SAFETY: F_GETFD on any integer is harmless: it only reports whether it is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::NoInheritedPipe(
            "an inherited descriptor is not open",
        ));
    }
    // SAFETY:
    // - `fd` is open (checked above) and, by the protocol of this module, was passed to this
    //   process for ipckit to own; `TAKEN` ensures it is adopted once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let kind = rustix::fs::fstat(owned.as_fd())
        .map(|st| FileType::from_raw_mode(st.st_mode))
        .map_err(|e| Error::os("fstat", e))?;
    let ok = match expect {
        Expect::Pipe => kind == FileType::Fifo,
        Expect::SharedMemory => kind == FileType::RegularFile,
    };
    if !ok {
        // Not what we were promised: give the number back without closing it.
        let _ = owned.into_raw_fd();
        return Err(Error::NoInheritedPipe(match expect {
            Expect::Pipe => "the inherited descriptor is not a pipe",
            Expect::SharedMemory => "the inherited descriptor is not shared memory",
        }));
    }
    sys::set_cloexec(owned.as_fd(), true)?;
    Ok(owned)
}
