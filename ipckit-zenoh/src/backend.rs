//! This crate as a backend of `ipckit::bus` ([`install`](crate::install)): the zenoh
//! [`Bus`], [`Subscriber`] and [`PeerWatch`] behind ipckit's backend traits.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipckit::bus::backend::{Backend, BackendBus, BackendSubscriber, BackendWatch, Handler};
use ipckit::{Result, Wait};
use zenoh::Wait as _;

use crate::{Bus, BusStats, Message, Peer, PeerEvent, PeerWatch, SubscribeOptions, Subscriber};

/// Opens `bus://zenoh...` URLs for `ipckit::bus`.
pub(crate) struct Zenoh;

impl Backend for Zenoh {
    fn open(&self, url: &str) -> Result<Box<dyn BackendBus>> {
        Ok(Box::new(Bus::open(url)?))
    }

    /// Joins, waits (at most the URL's `timeout_ms`) until the session has reached a peer
    /// or router when the URL connects somewhere, and lists the others.
    fn list(&self, url: &str) -> Result<Vec<Peer>> {
        let bus = Bus::open(url)?;
        if !bus.inner.url.connect.is_empty() {
            let deadline = Instant::now() + bus.inner.url.timeout;
            let info = bus.session().info();
            while info.peers_zid().wait().next().is_none()
                && info.routers_zid().wait().next().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let me = bus.node_id();
        Ok(bus
            .try_peers()?
            .into_iter()
            .filter(|p| p.node_id != me)
            .collect())
    }
}

impl BackendBus for Bus {
    fn node_id(&self) -> u64 {
        Bus::node_id(self)
    }

    fn namespace(&self) -> &str {
        Bus::namespace(self)
    }

    /// zenoh sets no message size of its own.
    fn max_message_size(&self, _topic: &str) -> usize {
        usize::MAX
    }

    fn publish(&self, topic: &str, payload: &[u8]) -> Result<()> {
        Bus::publish(self, topic, payload)
    }

    fn publish_with(&self, topic: &str, payload: &[u8], wait: Wait) -> Result<()> {
        Bus::publish_with(self, topic, payload, wait)
    }

    fn subscribe(&self, pattern: &str) -> Result<Box<dyn BackendSubscriber>> {
        Ok(Box::new(Bus::subscribe(self, pattern)?))
    }

    fn subscribe_with(
        &self,
        pattern: &str,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn BackendSubscriber>> {
        Ok(Box::new(Bus::subscribe_with(self, pattern, opts)?))
    }

    fn serve(&self, pattern: &str, handler: Handler) -> Result<Box<dyn Any + Send + Sync>> {
        Ok(Box::new(Bus::serve(self, pattern, handler)?))
    }

    fn request(&self, topic: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        Bus::request(self, topic, payload, timeout)
    }

    fn peers(&self) -> Vec<Peer> {
        Bus::peers(self)
    }

    fn watch(&self) -> Box<dyn BackendWatch> {
        Box::new(Bus::watch(self))
    }

    fn stats(&self) -> BusStats {
        Bus::stats(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl BackendSubscriber for Subscriber {
    fn pattern(&self) -> &str {
        Subscriber::pattern(self)
    }

    fn drops(&self) -> u64 {
        Subscriber::drops(self)
    }

    fn delivered(&self) -> u64 {
        Subscriber::delivered(self)
    }

    fn corrupted(&self) -> u64 {
        Subscriber::corrupted(self)
    }

    fn recv_into_with(&mut self, msg: &mut Message, wait: Wait) -> Result<()> {
        Subscriber::recv_into_with(self, msg, wait)
    }
}

impl BackendWatch for PeerWatch {
    fn peers(&self) -> Vec<Peer> {
        PeerWatch::peers(self)
    }

    fn next_with(&mut self, wait: Wait) -> Result<PeerEvent> {
        PeerWatch::next_with(self, wait)
    }
}

/// Registers [`Zenoh`] for `bus://zenoh` URLs.
pub(crate) fn install() {
    // "zenoh" is a valid host and not "local": registering cannot fail.
    ipckit::bus::register_backend("zenoh", Arc::new(Zenoh)).expect("zenoh is a valid backend host");
}
