//! Async waits of shared-memory connections and listeners (feature `tokio`).
//!
//! The same protocol as the blocking `block_until`: spin briefly while the peer runs
//! (adaptive mode), then announce the sleep in the ring's `*_waiting` flag and sleep on the
//! futex word the peer bumps — here through the process's futex watcher
//! ([`crate::sys::futex_watch`]), so an idle async receiver costs no CPU and no thread of
//! its own. The peer cannot tell an async sleeper from a blocking one. Liveness is checked
//! every [`LIVENESS_SLICE`], as for blocking calls.

use super::*;

impl ShmConn {
    /// A receive would find a record (or learn that the peer closed). The head counts only
    /// when ahead of the tail: a consumer that took records by their sealed headers
    /// (`shm::ring`) is ahead of a head not yet stored, or never stored by a producer that
    /// died between the two; counting that as news would spin this wait forever, without
    /// the liveness check.
    fn recv_ready(&self) -> bool {
        let ctl = self.rx_ctl();
        let head = ctl.producer.0.head.load(Ordering::Acquire);
        let tail = ctl.consumer.0.tail.load(Ordering::Relaxed);
        tail.wrapping_sub(head) > self.cap || self.peer_closed_flag().load(Ordering::Acquire) != 0
    }

    /// A send that found the ring full could find room now (the consumer moved since).
    fn send_ready(&self) -> bool {
        self.tx_ctl().consumer.0.tail.load(Ordering::Acquire) != self.tx.cached_tail()
            || self.peer_closed_flag().load(Ordering::Acquire) != 0
    }

    /// Waits until a receive (`recv`) or a send that found the ring full (`send`) may make
    /// progress. Returns [`Error::Disconnected`] when the peer died or closed with nothing
    /// left to read. Cancel-safe: dropping the future leaves the connection as it was.
    pub(crate) async fn wait_async(&mut self, recv: bool, send: bool) -> Result<()> {
        let ready = |c: &ShmConn| (recv && c.recv_ready()) || (send && c.send_ready());
        if ready(self) {
            return Ok(());
        }
        if self.mode == WaitMode::Adaptive && !self.spin.is_zero() {
            // Spin, but hand the thread back to the runtime between rounds: other tasks
            // (such as the handler whose reply we will send next) must not wait for us.
            let start = Instant::now();
            while self.peer_running() && start.elapsed() < self.spin {
                for _ in 0..64 {
                    spin_hint();
                    if ready(self) {
                        return Ok(());
                    }
                }
                tokio::task::yield_now().await;
            }
        }
        // The peer wakes sleepers only through the ring's futex words: not at all in `spin`
        // mode, through a semaphore for `sem` receivers; MPSC producers also wait for each
        // other's lock. Those re-check on a timer (`spin`: at every scheduling turn).
        let poll = match self.mode {
            WaitMode::Spin => Some(Duration::ZERO),
            WaitMode::Sem if recv => Some(Duration::from_millis(1)),
            _ if send && matches!(self.role, Role::Producer { .. }) => {
                Some(Duration::from_millis(1))
            }
            _ => None,
        };
        let mut last_check = Instant::now();
        loop {
            match poll {
                Some(d) if d.is_zero() => tokio::task::yield_now().await,
                Some(d) => tokio::time::sleep(d).await,
                None => self.sleep_on_words(recv, send, &ready).await,
            }
            if ready(self) {
                return Ok(());
            }
            if last_check.elapsed() >= LIVENESS_SLICE {
                last_check = Instant::now();
                if !self.peer_alive() {
                    return if ready(self) {
                        Ok(())
                    } else {
                        Err(Error::Disconnected)
                    };
                }
            }
        }
    }

    /// One sleep of at most a liveness slice on the words the peer bumps.
    async fn sleep_on_words(&self, recv: bool, send: bool, ready: &impl Fn(&ShmConn) -> bool) {
        let (rx, tx) = (self.rx_ctl(), self.tx_ctl());
        let (rx_flag, tx_flag) = (
            &rx.consumer_waiting.0.waiting,
            &tx.producer_waiting.0.waiting,
        );
        // Announced, then the fence that pairs with the one in `notify` (or stands in for it,
        // see `sleep_fence`): either the peer sees our flag, or we see its store in `ready`
        // below. A swap, as `ring::announce_sleep` does it (why is said there).
        if recv {
            rx_flag.swap(ring::SLEEPING, Ordering::Relaxed);
        }
        if send {
            tx_flag.swap(ring::SLEEPING, Ordering::Relaxed);
        }
        let slice = sleep_fence(|| {
            (recv && rx.producer_waiting.0.light.load(Ordering::Relaxed) != 0)
                || (send && tx.consumer_waiting.0.light.load(Ordering::Relaxed) != 0)
        });
        if !ready(self) {
            // On the announcements themselves, as `block_until` sleeps (see
            // `ring::wake_sleeper`).
            let on_head = async {
                match recv {
                    true => sys::futex_watch(rx_flag, ring::SLEEPING).await,
                    false => std::future::pending().await,
                }
            };
            let on_tail = async {
                match send {
                    true => sys::futex_watch(tx_flag, ring::SLEEPING).await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                () = on_head => {}
                () = on_tail => {}
                () = tokio::time::sleep(slice) => {}
            }
        }
        if recv {
            rx_flag.store(0, Ordering::Relaxed);
        }
        if send {
            tx_flag.store(0, Ordering::Relaxed);
        }
    }
}

impl ShmListener {
    /// Takes the next posted connection, sleeping on the rendezvous word in between.
    pub(crate) async fn accept_async(&mut self) -> Result<Inner> {
        loop {
            let posted = rendezvous_of(&self.rendezvous)
                .posted
                .load(Ordering::Acquire);
            match self.accept(Wait::Never) {
                Err(Error::WouldBlock) => {}
                r => return r,
            }
            let rv = rendezvous_of(&self.rendezvous);
            tokio::select! {
                () = sys::futex_watch(&rv.posted, posted) => {}
                () = tokio::time::sleep(LIVENESS_SLICE) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A consumer ahead of the head (it took a record by its sealed header before the head
    /// was stored, or the producer died in between) has no news: only a head ahead of the
    /// tail, or a close, makes a receive ready.
    #[test]
    fn a_tail_ahead_of_the_head_is_not_news() {
        let name = format!("shm://wait-async-ahead-{}", std::process::id());
        let mut listener = crate::bind(&name).unwrap();
        let mut client = crate::connect(&name).unwrap();
        let mut server = listener.accept_timeout(Duration::from_secs(5)).unwrap();
        let server = server.as_shm().unwrap();
        assert!(!server.recv_ready(), "nothing sent");
        let tail = &server.rx_ctl().consumer.0.tail;
        tail.store(8, std::sync::atomic::Ordering::Relaxed);
        assert!(!server.recv_ready(), "tail one record ahead of the head");
        tail.store(0, std::sync::atomic::Ordering::Relaxed);
        crate::MessageSender::send(&mut client, b"x").unwrap();
        assert!(server.recv_ready(), "a record published");
    }
}
