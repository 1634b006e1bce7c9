//! Waiting for the benchmark's child processes without the kernel spinning for good.
//!
//! Reaping a child makes the kernel drop its /proc entries, and the kernel spins there until
//! nobody uses them. Under `chrt -f` every thread of the bench is SCHED_FIFO, and the parent's
//! threads share one CPU: a reaper spinning there never let the bench's other runnable thread
//! (the one the kernel was waiting for) run again, and the bench spun in `wait4` for good,
//! deaf to SIGKILL (seen three times, kernel 6.18; demoting the spinning thread to SCHED_OTHER
//! with `chrt -o -p 0 TID` ended it at once). So [`reap`] waits from a short-lived thread under
//! the normal policy, where the kernel's spin yields to the other threads, and
//! [`has_exited`] asks without reaping.

use std::io;
use std::process::{Child, ExitStatus};

/// Whether `child` has exited, leaving it unreaped (`waitid` with `WNOWAIT`).
pub fn has_exited(child: &Child) -> bool {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return true;
    };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    // An error (already reaped, say) means there is nothing left to wait for.
    !matches!(waitid(WaitId::Pid(pid), options), Ok(None))
}

/// Waits for `child` to exit and reaps it, from a thread under the normal scheduling policy.
pub fn reap(child: &mut Child) -> io::Result<ExitStatus> {
    std::thread::scope(|s| {
        s.spawn(|| {
            normal_policy();
            child.wait()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the reaping thread panicked")))
    })
}

/// Puts the calling thread under SCHED_OTHER (lowering a policy needs no privilege).
fn normal_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` on the calling thread (pid 0) with a valid, initialised
    // `sched_param`; it only changes this thread's scheduling.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn has_exited_leaves_the_child_for_reap() {
        let mut child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !has_exited(&child) {
            assert!(
                Instant::now() < until,
                "sh -c 'exit 7' still running after 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Still unreaped: its status is there to collect.
        assert!(has_exited(&child));
        assert_eq!(reap(&mut child).unwrap().code(), Some(7));
    }

    #[test]
    fn a_running_child_has_not_exited() {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        assert!(!has_exited(&child));
        child.kill().unwrap();
        assert!(reap(&mut child).unwrap().code().is_none());
        assert!(
            has_exited(&child),
            "a reaped child has nothing left to wait for"
        );
    }
}
