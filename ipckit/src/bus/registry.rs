//! The registry of a bus namespace: one small segment (`/dev/shm/ipckit.bus.NS`, 0600) with a
//! table of nodes (one per open [`super::Bus`]) and the futex words that wake them.
//!
//! A node owns its entry through an exclusive lock on one byte of the registry's open file
//! description (`LOCK_ENTRY + index`); the kernel drops it when the process dies, so a dead
//! entry is recognised without comparing process ids, and whoever notices it first (any
//! scanner, or the next node to claim the entry) removes what the dead node left.
//!
//! Everything read from the table is validated where it is used: indices are checked against
//! the table, node ids only name segments (whose headers are checked on open).

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::shm::{Segment, SharedBytes, NAME_PREFIX};
use crate::sys;

/// Nodes a namespace holds at once.
pub(crate) const ENTRIES: usize = 256;

const OFF_GEN: usize = 0;
const OFF_ENTRIES: usize = 64;
const ENTRY: usize = 64;
const E_STATE: usize = 0;
const E_KINDS: usize = 4;
const E_NODE: usize = 8;
const E_PID: usize = 16;
const E_DOORBELL: usize = 20;
const E_SLEEPERS: usize = 24;
const REG_LEN: usize = OFF_ENTRIES + ENTRIES * ENTRY;

/// Lock bytes of the entries (far beyond the segment's end, clear of `LOCK_ATTACHED`).
const LOCK_ENTRY: u64 = 1 << 41;

const STATE_FREE: u32 = 0;
const STATE_LIVE: u32 = 1;

/// Kinds a node declares (bits of `E_KINDS`).
pub(crate) const KIND_PUB: u32 = 1;
pub(crate) const KIND_SUB: u32 = 2;
pub(crate) const KIND_SERVE: u32 = 4;

/// Marks the registry layout (its type fingerprint is checked on open).
struct BusRegistryV1;

/// A live entry, as seen by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryView {
    pub idx: usize,
    pub node_id: u64,
    pub pid: u32,
    pub kinds: u32,
}

pub(crate) struct Registry {
    seg: Segment,
    name: String,
    namespace: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.name)
            .finish()
    }
}

/// The segment name of a namespace's registry.
pub(crate) fn registry_name(namespace: &str) -> String {
    format!("bus.{namespace}")
}

/// The segment name of a node.
pub(crate) fn node_name(namespace: &str, node_id: u64) -> String {
    format!("bus.{namespace}.n.{node_id:016x}")
}

impl Registry {
    /// Opens the namespace's registry, creating it if nobody has.
    pub(crate) fn open(namespace: &str) -> Result<Registry> {
        let name = registry_name(namespace);
        for _ in 0..100 {
            let mut seg = Segment::builder(&name)
                .size(REG_LEN)
                .typed::<BusRegistryV1>()
                .open_or_create()?;
            // The registry outlives its creator: the last node to leave removes it.
            seg.keep();
            // A last node may have removed the name between our open and our hold on it;
            // then we hold an orphan: start again.
            if still_named(&seg, &name) {
                return Ok(Registry {
                    seg,
                    name,
                    namespace: namespace.to_owned(),
                });
            }
        }
        Err(Error::NotReady { name })
    }

    /// Opens the namespace's registry if it exists ([`Error::NotFound`] if not).
    pub(crate) fn open_existing(namespace: &str) -> Result<Registry> {
        let name = registry_name(namespace);
        let seg = Segment::builder(&name).typed::<BusRegistryV1>().open()?;
        if seg.len() != REG_LEN {
            return Err(Error::Corrupted(format!(
                "bus registry {name} has {} bytes, expected {REG_LEN}",
                seg.len()
            )));
        }
        Ok(Registry {
            seg,
            name,
            namespace: namespace.to_owned(),
        })
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.seg
            .atomic_u32(off)
            .expect("registry offsets are constants inside the checked segment")
    }

    fn entry_u32(&self, idx: usize, field: usize) -> &AtomicU32 {
        assert!(idx < ENTRIES);
        self.u32_at(OFF_ENTRIES + idx * ENTRY + field)
    }

    fn entry_u64(&self, idx: usize, field: usize) -> &AtomicU64 {
        assert!(idx < ENTRIES);
        self.seg
            .atomic_u64(OFF_ENTRIES + idx * ENTRY + field)
            .expect("registry offsets are constants inside the checked segment")
    }

    /// The word bumped whenever a node joins, leaves or declares something.
    pub(crate) fn generation(&self) -> &AtomicU32 {
        self.u32_at(OFF_GEN)
    }

    /// The futex word a node's receivers sleep on.
    pub(crate) fn doorbell(&self, idx: usize) -> &AtomicU32 {
        self.entry_u32(idx, E_DOORBELL)
    }

    /// Arms node `idx`'s doorbell before a receiver sleeps on it; returns the value to wait
    /// on (see `wake_node`). Call before the fence that precedes the last look for messages.
    pub(crate) fn arm(&self, idx: usize) -> u32 {
        super::protocol::arm(self.doorbell(idx))
    }

    /// How many receivers of the node sleep (or are about to) on its doorbell.
    pub(crate) fn sleepers(&self, idx: usize) -> &AtomicU32 {
        self.entry_u32(idx, E_SLEEPERS)
    }

    /// Claims a free (or dead) entry for a new node.
    pub(crate) fn claim(&self, node_id: u64) -> Result<usize> {
        for idx in 0..ENTRIES {
            if !sys::ofd_lock(self.seg.fd(), LOCK_ENTRY + idx as u64, 1, true)? {
                continue;
            }
            if self.entry_u32(idx, E_STATE).load(Ordering::Acquire) != STATE_FREE {
                // Its previous owner died without leaving: remove its node segment.
                self.remove_node_segment(self.entry_u64(idx, E_NODE).load(Ordering::Relaxed));
            }
            self.entry_u32(idx, E_KINDS).store(0, Ordering::Relaxed);
            self.entry_u64(idx, E_NODE)
                .store(node_id, Ordering::Relaxed);
            self.entry_u32(idx, E_PID)
                .store(std::process::id(), Ordering::Relaxed);
            self.entry_u32(idx, E_SLEEPERS).store(0, Ordering::Relaxed);
            self.entry_u32(idx, E_STATE)
                .store(STATE_LIVE, Ordering::Release);
            self.bump();
            return Ok(idx);
        }
        Err(Error::LimitExceeded {
            limit: "nodes of a bus namespace",
            current: ENTRIES as u64,
            needed: ENTRIES as u64 + 1,
            how: "close some Bus handles, or use another namespace (bus://local/NAME)".into(),
        })
    }

    /// Gives the entry back (the lock goes with the descriptor when the registry is dropped).
    pub(crate) fn release(&self, idx: usize) {
        self.entry_u32(idx, E_KINDS).store(0, Ordering::Relaxed);
        self.entry_u32(idx, E_STATE)
            .store(STATE_FREE, Ordering::Release);
        self.bump();
    }

    /// Adds kind bits to an entry (and tells the watchers).
    pub(crate) fn add_kinds(&self, idx: usize, kinds: u32) {
        let old = self
            .entry_u32(idx, E_KINDS)
            .fetch_or(kinds, Ordering::AcqRel);
        if old & kinds != kinds {
            self.bump();
        }
    }

    /// Bumps the generation and wakes whoever watches it.
    pub(crate) fn bump(&self) {
        let g = self.generation();
        g.fetch_add(1, Ordering::Release);
        sys::futex_wake(g, u32::MAX);
    }

    /// Wakes the receivers of node `idx` if any sleeps. Call after publishing (the fence
    /// pairs with the sleeper's: either it sees the new message, or we see it sleeping).
    #[inline]
    pub(crate) fn wake_node(&self, idx: usize) {
        if idx >= ENTRIES {
            return;
        }
        if self.sleepers(idx).load(Ordering::Relaxed) == 0 {
            return;
        }
        // One wake-up per sleep: receivers arm the doorbell (make it odd, `arm`) before they
        // sleep; the first publisher to find it armed disarms it (odd → even, which also
        // changes the word so a receiver about to sleep does not) and wakes them. Later
        // publishers find it disarmed and make no system call until a receiver sleeps again:
        // otherwise every publish would pay one futex_wake per sleeping subscriber node.
        let d = self.doorbell(idx);
        if super::protocol::disarm(d) {
            sys::futex_wake(d, u32::MAX);
        }
    }

    /// Wakes every sleeping node (after a declaration, which may concern any of them).
    pub(crate) fn wake_all(&self) {
        fence(Ordering::SeqCst);
        for idx in 0..ENTRIES {
            if self.entry_u32(idx, E_STATE).load(Ordering::Relaxed) == STATE_LIVE {
                self.wake_node(idx);
            }
        }
    }

    /// Whether the process owning entry `idx` still holds it.
    fn held(&self, idx: usize) -> bool {
        sys::ofd_locked_by_other(self.seg.fd(), LOCK_ENTRY + idx as u64, 1).unwrap_or(true)
    }

    /// The live entries. `own` is this handle's entry (held through our own descriptor, so
    /// the lock test cannot see it). Dead entries found on the way are cleaned up.
    pub(crate) fn scan(&self, own: Option<usize>) -> Vec<EntryView> {
        let mut out = Vec::new();
        for idx in 0..ENTRIES {
            if self.entry_u32(idx, E_STATE).load(Ordering::Acquire) != STATE_LIVE {
                continue;
            }
            if Some(idx) != own && !self.held(idx) {
                self.cleanup_dead(idx);
                continue;
            }
            out.push(EntryView {
                idx,
                node_id: self.entry_u64(idx, E_NODE).load(Ordering::Relaxed),
                pid: self.entry_u32(idx, E_PID).load(Ordering::Relaxed),
                kinds: self.entry_u32(idx, E_KINDS).load(Ordering::Acquire),
            });
        }
        out
    }

    /// Whether entry `idx` still belongs to the live node `node_id`.
    pub(crate) fn is_live(&self, idx: usize, node_id: u64, own: Option<usize>) -> bool {
        idx < ENTRIES
            && self.entry_u32(idx, E_STATE).load(Ordering::Acquire) == STATE_LIVE
            && self.entry_u64(idx, E_NODE).load(Ordering::Relaxed) == node_id
            && (Some(idx) == own || self.held(idx))
    }

    /// Frees the entry of a dead node: takes its lock through a fresh descriptor (so that
    /// closing it hands the lock back), removes the node's segment, marks the entry free.
    fn cleanup_dead(&self, idx: usize) {
        let os = format!("{NAME_PREFIX}{}", self.name);
        let Ok(fd) = sys::shm_open(&os, true, "bus registry") else {
            return;
        };
        if !sys::ofd_lock(sys::fd_of(&fd), LOCK_ENTRY + idx as u64, 1, true).unwrap_or(false) {
            return;
        }
        if self.entry_u32(idx, E_STATE).load(Ordering::Acquire) == STATE_LIVE {
            let node = self.entry_u64(idx, E_NODE).load(Ordering::Relaxed);
            tracing::debug!(
                node = format_args!("{node:016x}"),
                "removing a dead bus node"
            );
            self.remove_node_segment(node);
            self.entry_u32(idx, E_KINDS).store(0, Ordering::Relaxed);
            self.entry_u32(idx, E_STATE)
                .store(STATE_FREE, Ordering::Release);
            self.bump();
        }
        drop(fd);
    }

    fn remove_node_segment(&self, node_id: u64) {
        let _ = crate::shm::remove(&node_name(&self.namespace, node_id));
    }

    /// Removes the registry's name if no other process holds it (called by the last node).
    pub(crate) fn remove_if_unused(&self) {
        if sys::ofd_lock(self.seg.fd(), crate::shm::LOCK_ATTACHED, 1, true).unwrap_or(false) {
            // Nobody else has the registry open: entries still marked live belong to
            // processes that died without leaving. Their node segments go with it.
            for idx in 0..ENTRIES {
                if self.entry_u32(idx, E_STATE).load(Ordering::Acquire) == STATE_LIVE {
                    self.remove_node_segment(self.entry_u64(idx, E_NODE).load(Ordering::Relaxed));
                }
            }
            let _ = crate::shm::remove(&self.name);
        }
    }
}

/// Whether `name` still names the object `seg` has mapped (same inode).
fn still_named(seg: &Segment, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let path = format!("{}/{NAME_PREFIX}{name}", sys::SHM_DIR);
    let fd_path = format!("/proc/self/fd/{}", seg.fd().as_raw_fd());
    match (std::fs::metadata(path), std::fs::metadata(fd_path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        (Err(_), _) => false,
        // Without /proc we cannot tell; assume it is (the race needs a last node leaving at
        // the very moment we join).
        (Ok(_), Err(_)) => true,
    }
}

/// Names of the bus registries on this machine (`bus.NS` segments), for `ipckit bus ls`.
pub fn namespaces() -> Vec<String> {
    let mut out: Vec<String> = crate::shm::list()
        .into_iter()
        .filter_map(|s| {
            let ns = s.name.strip_prefix("bus.")?;
            (!ns.contains('.')).then(|| ns.to_owned())
        })
        .collect();
    out.sort();
    out
}

/// Removes the bus segments (registries and nodes) of `namespace` — or of every namespace —
/// that no process holds any more (left by crashed processes). Returns the names removed.
pub fn remove_stale(namespace: Option<&str>) -> Vec<String> {
    let mut removed = Vec::new();
    for s in crate::shm::list() {
        let Some(rest) = s.name.strip_prefix("bus.") else {
            continue;
        };
        let ns = rest.split('.').next().unwrap_or("");
        if s.in_use || namespace.is_some_and(|want| want != ns) {
            continue;
        }
        if crate::shm::remove(&s.name).is_ok() {
            removed.push(s.name);
        }
    }
    removed
}
