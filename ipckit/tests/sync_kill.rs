//! Process-shared synchronization across real processes: a mutex whose holder is SIGKILLed
//! at random moments, and a semaphore used as a lock by four processes.

mod common;

use std::time::{Duration, Instant};

use common::Peer;
use ipckit::sync::{LockError, Mutex, Semaphore};

const T: Duration = Duration::from_secs(10);
const PEER: &str = env!("CARGO_BIN_EXE_ipckit-shm-peer");

/// `ipckit-shm-peer ARGS…`, killed and reaped when dropped.
fn shm_peer(args: &[&str]) -> Peer {
    Peer::start_bin(PEER, args)
}

fn shm_entries(name: &str) -> usize {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("ipckit.{name}")))
        .count()
}

/// `IPCKIT_KILL_ROUNDS` rounds (1,000 by default): a child hammers the mutex and is killed at
/// a random moment; the parent must always get the lock back within its timeout, and must
/// never be handed an inconsistent pair without being told the holder died.
#[test]
fn mutex_survives_holders_killed_at_random_points() {
    let rounds: u32 = common::env_or("IPCKIT_KILL_ROUNDS", 1000);
    let name = format!("t-mutex-kill-{}", std::process::id());
    let m = Mutex::create(&name, [0u64; 2]).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let (mut died_holding, mut inconsistent) = (0u32, 0u32);
    for _ in 0..rounds {
        let mut child = shm_peer(&["mutex-hammer", &name]);
        child.expect_line("ready");
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let spin = Duration::from_micros(rng % 2000);
        let t0 = Instant::now();
        while t0.elapsed() < spin {
            std::hint::spin_loop();
        }
        assert!(child.kill().is_some(), "killed child is reaped");
        let g = match m.lock_timeout(T) {
            Ok(g) => {
                let v = g.get();
                assert_eq!(
                    v[0], v[1],
                    "a clean lock must never show a half-done update"
                );
                g
            }
            Err(LockError::OwnerDied(g)) => {
                died_holding += 1;
                let mut v = g.get();
                if v[0] != v[1] {
                    inconsistent += 1;
                    v[1] = v[0];
                    g.set(v);
                }
                g.make_consistent();
                g
            }
            Err(e) => panic!("lock after a kill: {e}"),
        };
        drop(g);
    }
    eprintln!(
        "{rounds} kills: {died_holding} died holding the lock, {inconsistent} left it half-updated"
    );
    assert!(
        died_holding > 0,
        "some kills must land while the lock is held"
    );
    drop(m);
    assert_eq!(shm_entries(&name), 0);
}

/// Four processes use a semaphore as a lock around a plain read-modify-write; a million
/// operations in all. Lost or duplicated permits would show as a wrong total or value.
#[test]
fn semaphore_stress_across_four_processes() {
    let per: u64 = common::env_or("IPCKIT_SEM_OPS", 250_000);
    let sem_name = format!("t-sem-stress-{}", std::process::id());
    let seg_name = format!("t-sem-counter-{}", std::process::id());
    let sem = Semaphore::create(&sem_name, 1).unwrap();
    let seg = ipckit::shm::Segment::builder(&seg_name)
        .size(8)
        .create()
        .unwrap();
    let mut peers: Vec<Peer> = (0..4)
        .map(|_| shm_peer(&["sem-count", &sem_name, &seg_name, &per.to_string()]))
        .collect();
    for p in &mut peers {
        p.expect_line("ready");
    }
    for p in &mut peers {
        assert!(p.wait(Duration::from_secs(120)).success());
    }
    use ipckit::shm::SharedBytes;
    assert_eq!(seg.read::<u64>(0).unwrap(), 4 * per, "no update lost");
    assert_eq!(sem.value(), 1, "no permit lost or duplicated");
    drop((sem, seg));
    assert_eq!(shm_entries(&sem_name) + shm_entries(&seg_name), 0);
}
