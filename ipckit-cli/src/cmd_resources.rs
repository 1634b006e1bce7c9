//! `ipckit ls`, `ipckit rm` and `ipckit doctor`: what ipckit left on this machine, removing
//! it, and the system limits that matter.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use ipckit::shm::{SegmentInfo, SegmentKind, NAME_PREFIX};
use serde::Serialize;

use crate::cli::{LsArgs, RmArgs};
use crate::error::{CliError, IpcContext};

/// Where POSIX message queues appear when the mqueue file system is mounted.
const MQUEUE_DIR: &str = "/dev/mqueue";
/// Where named shared-memory objects live.
const SHM_DIR: &str = "/dev/shm";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn kind_name(kind: Option<SegmentKind>) -> &'static str {
    match kind {
        Some(SegmentKind::Data) => "data",
        Some(SegmentKind::Channel) => "channel",
        Some(SegmentKind::Listener) => "listener",
        Some(SegmentKind::Semaphore) => "semaphore",
        Some(SegmentKind::Mutex) => "mutex",
        Some(SegmentKind::Event) => "event",
        None => "unknown",
    }
}

/// One line of `ipckit ls --json`.
#[derive(Serialize)]
struct JsonEntry<'a> {
    #[serde(rename = "type")]
    kind_of_object: &'static str,
    name: &'a str,
    kind: &'static str,
    size: u64,
    creator_pid: u32,
    in_use: Option<bool>,
    created_unix_ms: Option<u64>,
    age_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holders: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_s: Option<f64>,
}

/// A POSIX message queue found in /dev/mqueue.
struct QueueInfo {
    /// `/name`.
    name: String,
    /// Bytes queued now (the kernel's QSIZE).
    queued_bytes: u64,
    owner_uid: u32,
    /// Processes that have it open (those whose descriptors we could read).
    holders: Vec<u32>,
    /// True when every process's descriptors could be read, so an empty `holders` means
    /// nobody holds the queue.
    complete: bool,
    /// Last send or receive (the inode's modification time), ms since the epoch.
    modified_unix_ms: u64,
}

/// The queues in /dev/mqueue, or None if it is not mounted.
fn list_queues() -> Option<Vec<QueueInfo>> {
    let dir_meta = std::fs::metadata(MQUEUE_DIR).ok()?;
    let parent = std::fs::metadata("/dev").ok()?;
    if dir_meta.dev() == parent.dev() {
        // A plain directory: the mqueue file system is not mounted on it.
        return None;
    }
    let mut queues = Vec::new();
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    for entry in std::fs::read_dir(MQUEUE_DIR).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let status = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let queued_bytes = status
            .split_whitespace()
            .find_map(|f| f.strip_prefix("QSIZE:"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let modified_unix_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        inodes.insert((meta.dev(), meta.ino()), queues.len());
        queues.push(QueueInfo {
            name: format!("/{}", entry.file_name().to_string_lossy()),
            queued_bytes,
            owner_uid: meta.uid(),
            holders: Vec::new(),
            complete: true,
            modified_unix_ms,
        });
    }
    if queues.is_empty() {
        return Some(queues);
    }
    // Who holds each queue: a queue descriptor is a file descriptor on the mqueue inode.
    let mut complete = true;
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                // Another user's process (or one that just exited).
                complete = complete && !p.path().exists();
                continue;
            };
            for fd in fds.flatten() {
                let Ok(meta) = std::fs::metadata(fd.path()) else {
                    continue;
                };
                if let Some(&i) = inodes.get(&(meta.dev(), meta.ino())) {
                    if !queues[i].holders.contains(&pid) {
                        queues[i].holders.push(pid);
                    }
                }
            }
        }
    } else {
        complete = false;
    }
    for q in &mut queues {
        q.complete = complete;
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Some(queues)
}

/// Bytes with a binary unit, e.g. `64 B`, `4.0 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A duration in whole seconds, minutes, hours or days.
fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn write_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            doing: "cannot write to standard output",
            source,
        })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::Io {
        doing: "cannot encode JSON",
        source: std::io::Error::other(e),
    })
}

/// Runs `ipckit ls`.
pub fn ls(args: LsArgs) -> Result<(), CliError> {
    let mut segments = ipckit::shm::list();
    segments.sort_by(|a, b| a.name.cmp(&b.name));
    let queues = list_queues();
    let now = now_ms();
    let mut text = String::new();
    if args.json {
        for s in &segments {
            let known = s.created_unix_ms != 0;
            text += &to_json(&JsonEntry {
                kind_of_object: "shm",
                name: &s.name,
                kind: kind_name(s.kind),
                size: s.data_len,
                creator_pid: s.creator_pid,
                in_use: Some(s.in_use),
                created_unix_ms: known.then_some(s.created_unix_ms),
                age_s: known.then(|| now.saturating_sub(s.created_unix_ms) as f64 / 1000.0),
                owner_uid: None,
                holders: None,
                idle_s: None,
            })?;
            text.push('\n');
        }
        for q in queues.iter().flatten() {
            text += &to_json(&JsonEntry {
                kind_of_object: "mq",
                name: &q.name,
                kind: "queue",
                size: q.queued_bytes,
                creator_pid: 0,
                in_use: queue_in_use(q),
                created_unix_ms: None,
                age_s: None,
                owner_uid: Some(q.owner_uid),
                holders: Some(&q.holders),
                idle_s: Some(now.saturating_sub(q.modified_unix_ms) as f64 / 1000.0),
            })?;
            text.push('\n');
        }
        if queues.is_none() {
            eprintln!("ipckit: note: {}", mqueue_not_mounted());
        }
    } else {
        text = render_table(&segments, queues.as_deref(), now);
    }
    write_out(&text)
}

fn queue_in_use(q: &QueueInfo) -> Option<bool> {
    if !q.holders.is_empty() {
        Some(true)
    } else if q.complete {
        Some(false)
    } else {
        None
    }
}

fn mqueue_not_mounted() -> String {
    format!(
        "POSIX message queues are not listed: {MQUEUE_DIR} is not mounted \
         (mount it with: mkdir -p {MQUEUE_DIR} && mount -t mqueue none {MQUEUE_DIR})"
    )
}

fn render_table(segments: &[SegmentInfo], queues: Option<&[QueueInfo]>, now: u64) -> String {
    let mut s = String::new();
    if segments.is_empty() {
        s += &format!("shared memory: no ipckit segments in {SHM_DIR}\n");
    } else {
        s += &format!(
            "shared memory ({SHM_DIR}/{NAME_PREFIX}*): {} segment(s)\n",
            segments.len()
        );
        s += &format!(
            "  {:<10} {:<32} {:>10} {:>8} {:<7} {:>5}\n",
            "KIND", "NAME", "SIZE", "PID", "IN USE", "AGE"
        );
        for seg in segments {
            let pid = if seg.creator_pid == 0 {
                "-".to_owned()
            } else {
                seg.creator_pid.to_string()
            };
            let age = if seg.created_unix_ms == 0 {
                "-".to_owned()
            } else {
                human_age(now.saturating_sub(seg.created_unix_ms))
            };
            let in_use = if seg.in_use { "yes" } else { "no" };
            s += &format!(
                "  {:<10} {:<32} {:>10} {:>8} {:<7} {:>5}\n",
                kind_name(seg.kind),
                seg.name,
                human_bytes(seg.data_len),
                pid,
                in_use,
                age
            );
        }
        let stale = segments.iter().filter(|s| !s.in_use).count();
        if stale > 0 {
            s += &format!(
                "  {stale} segment(s) not in use (left by processes that exited): \
                 `ipckit rm --stale` removes them\n"
            );
        }
    }
    match queues {
        None => s += &format!("{}\n", mqueue_not_mounted()),
        Some([]) => s += &format!("POSIX message queues: none in {MQUEUE_DIR}\n"),
        Some(queues) => {
            s += &format!(
                "POSIX message queues ({MQUEUE_DIR}, any program's): {} queue(s)\n",
                queues.len()
            );
            s += &format!(
                "  {:<32} {:>10} {:>6} {:<7} {:<20} {:>5}\n",
                "NAME", "QUEUED", "UID", "IN USE", "HELD BY", "IDLE"
            );
            for q in queues {
                let in_use = match queue_in_use(q) {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "?",
                };
                let holders = if q.holders.is_empty() {
                    "-".to_owned()
                } else {
                    q.holders
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                };
                s += &format!(
                    "  {:<32} {:>10} {:>6} {:<7} {:<20} {:>5}\n",
                    q.name,
                    human_bytes(q.queued_bytes),
                    q.owner_uid,
                    in_use,
                    holders,
                    human_age(now.saturating_sub(q.modified_unix_ms))
                );
            }
        }
    }
    s
}

/// Runs `ipckit rm`.
pub fn rm(args: RmArgs) -> Result<(), CliError> {
    if args.stale {
        let prefix = args.prefix.as_deref().unwrap_or("");
        let removed = ipckit::shm::cleanup_stale_prefixed(prefix)
            .doing(|| "cannot remove the stale segments".to_owned())?;
        let mut text = String::new();
        if removed.is_empty() {
            eprintln!("ipckit: no stale segments");
        }
        for name in removed {
            text += &format!("removed {name}\n");
        }
        return write_out(&text);
    }
    let segments = ipckit::shm::list();
    let mut failed = Vec::new();
    for given in &args.names {
        let name = given
            .strip_prefix(SHM_DIR)
            .map(|n| n.trim_start_matches('/'))
            .map_or(given.as_str(), |n| n.strip_prefix(NAME_PREFIX).unwrap_or(n));
        let Some(seg) = segments.iter().find(|s| s.name == name) else {
            eprintln!(
                "ipckit: error: {given:?} is not an ipckit segment: rm removes only the \
                 {SHM_DIR}/{NAME_PREFIX}* objects that `ipckit ls` lists"
            );
            failed.push(given.as_str());
            continue;
        };
        if seg.in_use && !args.force {
            let pid = if seg.creator_pid == 0 {
                String::new()
            } else {
                format!(" (created by process {})", seg.creator_pid)
            };
            eprintln!(
                "ipckit: error: {name} is in use{pid}: a process still holds it; --force \
                 removes the name anyway (holders keep their mapping)"
            );
            failed.push(given.as_str());
            continue;
        }
        match ipckit::shm::remove(name) {
            Ok(()) => write_out(&format!("removed {name}\n"))?,
            Err(e) => {
                eprintln!("ipckit: error: cannot remove {name}: {e}");
                failed.push(given.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{} of {} name(s) not removed",
            failed.len(),
            args.names.len()
        )))
    }
}

fn read_proc(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One line of `ipckit doctor`: `name = value  (what; raise: how)`, then a warning if it bites.
fn line(out: &mut String, name: &str, value: &str, what: &str, raise: &str, bites: Option<String>) {
    *out += &format!("{name} = {value}  ({what}; raise: {raise})\n");
    if let Some(why) = bites {
        *out += &format!("  ! {why}\n");
    }
}

fn or_unknown(v: Option<u64>, unit: impl Fn(u64) -> String) -> String {
    v.map_or_else(|| "unknown".to_owned(), unit)
}

/// Runs `ipckit doctor`.
pub fn doctor() -> Result<(), CliError> {
    let mut out = String::new();
    let plain = |n: u64| n.to_string();

    // POSIX message queues.
    let (msg_max, msgsize_max, queues_max, rlimit_mq) = ipckit::mq::mq_limits();
    let known = |v: u64| (v != 0).then_some(v);
    let depth = ipckit::mq::DEFAULT_DEPTH;
    let msg_size = ipckit::mq::DEFAULT_MESSAGE_SIZE;
    line(
        &mut out,
        "fs.mqueue.msg_max",
        &or_unknown(known(msg_max), plain),
        "messages per POSIX queue",
        "sysctl -w fs.mqueue.msg_max=N",
        (known(msg_max).is_some_and(|v| v < depth))
            .then(|| format!("below ipckit's default depth of {depth}: mq:// needs ?depth=N")),
    );
    line(
        &mut out,
        "fs.mqueue.msgsize_max",
        &or_unknown(known(msgsize_max), plain),
        "bytes per POSIX queue message",
        "sysctl -w fs.mqueue.msgsize_max=N",
        (known(msgsize_max).is_some_and(|v| v < msg_size)).then(|| {
            format!("below ipckit's default message size of {msg_size}: mq:// needs ?max_msg=N")
        }),
    );
    line(
        &mut out,
        "fs.mqueue.queues_max",
        &or_unknown(known(queues_max), plain),
        "POSIX queues on this machine, all users",
        "sysctl -w fs.mqueue.queues_max=N",
        None,
    );
    // The kernel charges each queue its messages plus bookkeeping against RLIMIT_MSGQUEUE.
    let per_queue = depth * (msg_size + 2 * std::mem::size_of::<usize>() as u64);
    let unlimited = rlimit_mq == u64::MAX;
    let (mq_value, room) = if unlimited {
        ("unlimited".to_owned(), String::new())
    } else {
        (
            rlimit_mq.to_string(),
            format!(
                ", room for {} queue(s) of {depth} x {msg_size} bytes",
                rlimit_mq / per_queue
            ),
        )
    };
    line(
        &mut out,
        "RLIMIT_MSGQUEUE",
        &mq_value,
        &format!("bytes all of this user's POSIX queues may reserve{room}"),
        "ulimit -q N, up to the hard limit (as root: /etc/security/limits.conf msgqueue)",
        (!unlimited && rlimit_mq < per_queue)
            .then(|| "too small for one queue of the default size".to_owned()),
    );
    if list_queues().is_none() {
        out += &format!("  ! {}\n", mqueue_not_mounted());
    }

    // Shared memory.
    match rustix::fs::statvfs(SHM_DIR) {
        Ok(st) => {
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let channel = ipckit::endpoint::DEFAULT_SHM_CAPACITY as u64;
            line(
                &mut out,
                "/dev/shm size",
                &format!(
                    "{total} ({}), {free} free ({})",
                    human_bytes(total),
                    human_bytes(free)
                ),
                "shared-memory segments and shm:// channels live here",
                "mount -o remount,size=NG /dev/shm",
                (free < 16 * channel).then(|| {
                    format!(
                        "less than {} free: shm:// channels ({} each by default) and \
                         segments may fail to grow (SIGBUS)",
                        human_bytes(16 * channel),
                        human_bytes(channel)
                    )
                }),
            );
        }
        Err(e) => out += &format!("/dev/shm size = unknown ({SHM_DIR}: {e})\n"),
    }

    // Pipes.
    let pipe_max = read_proc("/proc/sys/fs/pipe-max-size");
    line(
        &mut out,
        "fs.pipe-max-size",
        &or_unknown(pipe_max, |v| format!("{v} ({})", human_bytes(v))),
        "largest buffer an unprivileged process may give a pipe or FIFO",
        "sysctl -w fs.pipe-max-size=N",
        pipe_max
            .is_some_and(|v| v < 1 << 20)
            .then(|| "below 1 MiB: large messages over pipes take more system calls".to_owned()),
    );

    let user_pages = read_proc("/proc/sys/fs/pipe-user-pages-soft");
    line(
        &mut out,
        "fs.pipe-user-pages-soft",
        &or_unknown(user_pages, |v| {
            if v == 0 {
                "0 (no limit)".to_owned()
            } else {
                format!(
                    "{v} ({}, {} pipes of 64 KiB)",
                    human_bytes(v * 4096),
                    v / 16
                )
            }
        }),
        "pipe pages all of one user's pipes and FIFOs may hold before new ones get buffers \
         of 2 pages (8 KiB: more system calls per message)",
        "sysctl -w fs.pipe-user-pages-soft=N",
        user_pages
            .filter(|&v| v != 0 && v < 16 * 64)
            .map(|v| format!("room for only {} pipes of the default 64 KiB", v / 16)),
    );

    // Sockets.
    let qlen = read_proc("/proc/sys/net/unix/max_dgram_qlen");
    line(
        &mut out,
        "net.unix.max_dgram_qlen",
        &or_unknown(qlen, plain),
        "datagrams a unix+dgram socket queues before its senders wait (or get WouldBlock)",
        "sysctl -w net.unix.max_dgram_qlen=N",
        None,
    );
    let wmem = read_proc("/proc/sys/net/core/wmem_max");
    let unix_dgram_max = wmem.map(|w| (2 * w).saturating_sub(32).min(4 << 20));
    line(
        &mut out,
        "net.core.wmem_max",
        &or_unknown(wmem, plain),
        &format!(
            "largest socket send buffer; unix+dgram and unix+seqpacket messages are at most \
             min(4 MiB, 2*wmem_max-32) = {} bytes",
            or_unknown(unix_dgram_max, plain)
        ),
        "sysctl -w net.core.wmem_max=N",
        unix_dgram_max.filter(|&m| m < 4 << 20).map(|m| {
            format!(
                "unix+dgram/unix+seqpacket messages above {m} bytes ({}) are refused; \
                 4 MiB needs wmem_max >= {}",
                human_bytes(m),
                (4 << 20) / 2 + 16
            )
        }),
    );
    let rmem = read_proc("/proc/sys/net/core/rmem_max");
    line(
        &mut out,
        "net.core.rmem_max",
        &or_unknown(rmem, plain),
        "largest socket receive buffer (UDP and datagram bursts beyond it are dropped or wait)",
        "sysctl -w net.core.rmem_max=N",
        None,
    );

    // Descriptors.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    line(
        &mut out,
        "RLIMIT_NOFILE",
        &format!("{} (hard {})", show(nofile.current), show(nofile.maximum)),
        "open descriptors per process: every connection, listener and segment takes one",
        "ulimit -n N, up to the hard limit (as root: /etc/security/limits.conf nofile)",
        nofile
            .current
            .filter(|&n| n < 1024)
            .map(|n| format!("only {n} descriptors: servers with many connections will hit it")),
    );

    // CPUs.
    match ipckit::sys::allowed_cpus() {
        Ok(cpus) => line(
            &mut out,
            "CPUs available",
            &format!("{} {cpus:?}", cpus.len()),
            "ipckit bench pins itself and its peer to the first two",
            "taskset -c LIST ipckit ..., or the container's CPU set",
            (cpus.len() < 2).then(|| {
                "fewer than 2 CPUs: ipckit bench runs unpinned and both processes share one CPU"
                    .to_owned()
            }),
        ),
        Err(e) => out += &format!("CPUs available = unknown ({e})\n"),
    }
    write_out(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_bytes(64), "64 B");
        assert_eq!(human_bytes(4 << 20), "4.0 MiB");
        assert_eq!(human_age(59_999), "59s");
        assert_eq!(human_age(3_600_000), "1h");
    }
}
