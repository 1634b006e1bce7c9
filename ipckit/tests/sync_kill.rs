//! Process-shared synchronization across real processes: a mutex whose holder is SIGKILLed
//! at random moments, and a semaphore used as a lock by four processes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipckit::sync::{LockError, Mutex, Semaphore};

const T: Duration = Duration::from_secs(10);
const PEER: &str = env!("CARGO_BIN_EXE_ipckit-shm-peer");

struct Peer(Child);

impl Peer {
    fn spawn(args: &[&str]) -> Peer {
        Peer(
            Command::new(PEER)
                .args(args)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn ipckit-shm-peer"),
        )
    }

    fn wait_ready(&mut self) {
        let out = self.0.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let _ = tx.send(lines.next().and_then(|l| l.ok()));
            lines.for_each(drop);
        });
        assert_eq!(rx.recv_timeout(T).unwrap().as_deref(), Some("ready"));
    }

    fn finish(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.finish(T);
    }
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
    let rounds: u32 = std::env::var("IPCKIT_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let name = format!("t-mutex-kill-{}", std::process::id());
    let m = Mutex::create(&name, [0u64; 2]).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let (mut died_holding, mut inconsistent) = (0u32, 0u32);
    for _ in 0..rounds {
        let mut child = Peer::spawn(&["mutex-hammer", &name]);
        child.wait_ready();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let spin = Duration::from_micros(rng % 2000);
        let t0 = Instant::now();
        while t0.elapsed() < spin {
            std::hint::spin_loop();
        }
        let _ = child.0.kill();
        assert!(child.finish(T).is_some(), "killed child is reaped");
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
    let per: u64 = std::env::var("IPCKIT_SEM_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(250_000);
    let sem_name = format!("t-sem-stress-{}", std::process::id());
    let seg_name = format!("t-sem-counter-{}", std::process::id());
    let sem = Semaphore::create(&sem_name, 1).unwrap();
    let seg = ipckit::shm::Segment::builder(&seg_name)
        .size(8)
        .create()
        .unwrap();
    let mut peers: Vec<Peer> = (0..4)
        .map(|_| Peer::spawn(&["sem-count", &sem_name, &seg_name, &per.to_string()]))
        .collect();
    for p in &mut peers {
        p.wait_ready();
    }
    for p in &mut peers {
        let status = p.finish(Duration::from_secs(120)).expect("peer finishes");
        assert!(status.success());
    }
    use ipckit::shm::SharedBytes;
    assert_eq!(seg.read::<u64>(0).unwrap(), 4 * per, "no update lost");
    assert_eq!(sem.value(), 1, "no permit lost or duplicated");
    drop((sem, seg));
    assert_eq!(shm_entries(&sem_name) + shm_entries(&seg_name), 0);
}
