//! Bus backends other than `bus://local`: the traits a backend implements and the
//! process-wide registry that routes `bus://HOST...` URLs to it.
//!
//! ipckit links no network stack; a crate that does (`ipckit-zenoh`) implements [`Backend`]
//! and registers it for its URL host ([`register_backend`], which `ipckit_zenoh::install()`
//! calls for `zenoh`). From then on [`Bus::open`](super::Bus::open) and
//! [`list`](super::list) hand `bus://zenoh...` URLs to it, and the [`Bus`](super::Bus),
//! [`Subscriber`](super::Subscriber), [`PeerWatch`](super::PeerWatch) and
//! [`ServeHandle`](super::ServeHandle) they return dispatch to the backend's objects. The
//! local backend is not behind these traits: its types stay concrete (one `match` per
//! call), so its hot path pays no virtual call or allocation.

use std::any::Any;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::Wait;

use super::{BusStats, Message, Peer, PeerEvent, SubscribeOptions};

/// A bus backend: joins the buses of the URLs of its host. Registered with
/// [`register_backend`].
pub trait Backend: Send + Sync + 'static {
    /// Joins the bus `url` names (a `bus://HOST...` URL of this backend's host).
    fn open(&self, url: &str) -> Result<Box<dyn BackendBus>>;

    /// The live nodes of the bus `url` names, for `ipckit bus ls`. By default: joins the
    /// bus, asks for its peers and leaves this node out.
    fn list(&self, url: &str) -> Result<Vec<Peer>> {
        let bus = self.open(url)?;
        let me = bus.node_id();
        Ok(bus
            .peers()
            .into_iter()
            .filter(|p| p.node_id != me)
            .collect())
    }
}

/// A node of a backend's bus: what [`Bus`](super::Bus) calls. The methods mean what the
/// [`Bus`](super::Bus) methods of the same names document.
pub trait BackendBus: Send + Sync + 'static {
    /// See [`Bus::node_id`](super::Bus::node_id).
    fn node_id(&self) -> u64;
    /// See [`Bus::namespace`](super::Bus::namespace).
    fn namespace(&self) -> &str;
    /// See [`Bus::max_message_size`](super::Bus::max_message_size) (`usize::MAX` when the
    /// backend sets no limit of its own).
    fn max_message_size(&self, topic: &str) -> usize;
    /// See [`Bus::publish`](super::Bus::publish).
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<()>;
    /// See [`Bus::publish_with`](super::Bus::publish_with).
    fn publish_with(&self, topic: &str, payload: &[u8], wait: Wait) -> Result<()>;
    /// See [`Bus::subscribe`](super::Bus::subscribe).
    fn subscribe(&self, pattern: &str) -> Result<Box<dyn BackendSubscriber>>;
    /// See [`Bus::subscribe_with`](super::Bus::subscribe_with).
    fn subscribe_with(
        &self,
        pattern: &str,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn BackendSubscriber>>;
    /// See [`Bus::serve`](super::Bus::serve): the responder runs until the returned value
    /// is dropped.
    fn serve(&self, pattern: &str, handler: Handler) -> Result<Box<dyn Any + Send + Sync>>;
    /// See [`Bus::request`](super::Bus::request).
    fn request(&self, topic: &str, payload: &[u8], timeout: Duration) -> Result<Vec<u8>>;
    /// See [`Bus::peers`](super::Bus::peers).
    fn peers(&self) -> Vec<Peer>;
    /// See [`Bus::watch`](super::Bus::watch).
    fn watch(&self) -> Box<dyn BackendWatch>;
    /// See [`Bus::stats`](super::Bus::stats).
    fn stats(&self) -> BusStats;
    /// The backend's own handle, for what only it has: see
    /// [`Bus::backend`](super::Bus::backend).
    fn as_any(&self) -> &dyn Any;
}

/// The handler of a responder ([`BackendBus::serve`]).
pub type Handler = Box<dyn FnMut(&Message) -> Vec<u8> + Send + 'static>;

/// A subscription of a backend: what [`Subscriber`](super::Subscriber) calls.
pub trait BackendSubscriber: Send + 'static {
    /// See [`Subscriber::pattern`](super::Subscriber::pattern).
    fn pattern(&self) -> &str;
    /// See [`Subscriber::drops`](super::Subscriber::drops).
    fn drops(&self) -> u64;
    /// See [`Subscriber::delivered`](super::Subscriber::delivered).
    fn delivered(&self) -> u64;
    /// See [`Subscriber::corrupted`](super::Subscriber::corrupted).
    fn corrupted(&self) -> u64;
    /// The core receive ([`Subscriber::recv_into_with`](super::Subscriber::recv_into_with)):
    /// every other receive of [`Subscriber`](super::Subscriber) calls it. On timeout,
    /// [`Error::Timeout`] (its `after` is filled in by the caller), with nothing there and
    /// [`Wait::Never`], [`Error::WouldBlock`].
    fn recv_into_with(&mut self, msg: &mut Message, wait: Wait) -> Result<()>;
}

/// A backend's watch of the nodes of its bus: what [`PeerWatch`](super::PeerWatch) calls.
pub trait BackendWatch: Send + 'static {
    /// See [`PeerWatch::peers`](super::PeerWatch::peers).
    fn peers(&self) -> Vec<Peer>;
    /// See [`PeerWatch::next_with`](super::PeerWatch::next_with).
    fn next_with(&mut self, wait: Wait) -> Result<PeerEvent>;
}

type Registry = Vec<(String, Arc<dyn Backend>)>;

static BACKENDS: RwLock<Registry> = RwLock::new(Vec::new());

/// Routes the `bus://HOST...` URLs of `host` to `backend` in this process, from now on
/// (replacing the backend registered for `host` before, if any). `local` is ipckit's own
/// and cannot be replaced; a host is letters, digits, '-' and '_'
/// ([`Error::InvalidName`]).
pub fn register_backend(host: &str, backend: Arc<dyn Backend>) -> Result<()> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid || host == "local" {
        return Err(Error::InvalidName {
            name: host.to_owned(),
            reason: "a bus backend's host is letters, digits, '-' or '_', and not local \
                     (ipckit's own)",
        });
    }
    let mut reg = BACKENDS.write().unwrap_or_else(|p| p.into_inner());
    reg.retain(|(h, _)| h != host);
    reg.push((host.to_owned(), backend));
    Ok(())
}

/// The host of a `bus://HOST[/...][?...]` URL.
fn host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("bus://")?;
    rest.split(['/', '?']).next()
}

/// The backend registered for the host of `url` (never for `bus://local`).
pub(super) fn lookup(url: &str) -> Option<Arc<dyn Backend>> {
    let host = host(url).filter(|h| *h != "local")?;
    let reg = BACKENDS.read().unwrap_or_else(|p| p.into_inner());
    reg.iter().find(|(h, _)| h == host).map(|(_, b)| b.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::bus::{Bus, Declaration, MessageRef, Pattern};

    #[test]
    fn hosts() {
        assert_eq!(host("bus://zenoh/ns?connect=tcp/1.2.3.4:1"), Some("zenoh"));
        assert_eq!(host("bus://zenoh?connect=tcp/1.2.3.4:1"), Some("zenoh"));
        assert_eq!(host("bus://local"), Some("local"));
        assert_eq!(host("shm://x"), None);
        assert!(lookup("bus://local").is_none());
        assert!(register_backend("local", Arc::new(Fake)).is_err());
        assert!(register_backend("a/b", Arc::new(Fake)).is_err());
    }

    /// An in-process backend: one node per open, messages and requests go straight to the
    /// subscriptions and responders of the same `FakeBus`.
    struct Fake;

    type Queue = Arc<Mutex<VecDeque<Message>>>;

    #[derive(Default)]
    struct FakeBus {
        subs: Mutex<Vec<(Pattern, Queue)>>,
        servers: Arc<Mutex<Vec<(Pattern, Handler)>>>,
        published: std::sync::atomic::AtomicU64,
    }

    struct FakeSub {
        pattern: String,
        queue: Queue,
        delivered: u64,
    }

    struct FakeWatch(VecDeque<PeerEvent>);

    const NODE: u64 = 7;

    fn peer() -> Peer {
        Peer {
            node_id: NODE,
            pid: std::process::id(),
            ..Peer::default()
        }
    }

    impl Backend for Fake {
        fn open(&self, url: &str) -> Result<Box<dyn BackendBus>> {
            assert!(url.starts_with("bus://fake"), "{url}");
            Ok(Box::new(FakeBus::default()))
        }
    }

    impl BackendBus for FakeBus {
        fn node_id(&self) -> u64 {
            NODE
        }
        fn namespace(&self) -> &str {
            "fake-ns"
        }
        fn max_message_size(&self, _: &str) -> usize {
            usize::MAX
        }
        fn publish(&self, topic: &str, payload: &[u8]) -> Result<()> {
            self.publish_with(topic, payload, Wait::Forever)
        }
        fn publish_with(&self, topic: &str, payload: &[u8], _: Wait) -> Result<()> {
            super::super::validate_topic(topic)?;
            self.published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (p, q) in self.subs.lock().unwrap().iter() {
                if p.matches(topic) {
                    let m = Message::received(topic.into(), payload.into(), NODE, false);
                    q.lock().unwrap().push_back(m);
                }
            }
            Ok(())
        }
        fn subscribe(&self, pattern: &str) -> Result<Box<dyn BackendSubscriber>> {
            let opts = SubscribeOptions {
                depth: 64,
                overflow: Default::default(),
            };
            self.subscribe_with(pattern, opts)
        }
        fn subscribe_with(
            &self,
            pattern: &str,
            _: SubscribeOptions,
        ) -> Result<Box<dyn BackendSubscriber>> {
            let queue = Queue::default();
            let p = Pattern::parse(pattern)?;
            self.subs.lock().unwrap().push((p, queue.clone()));
            Ok(Box::new(FakeSub {
                pattern: pattern.into(),
                queue,
                delivered: 0,
            }))
        }
        fn serve(&self, pattern: &str, handler: Handler) -> Result<Box<dyn Any + Send + Sync>> {
            let p = Pattern::parse(pattern)?;
            self.servers.lock().unwrap().push((p, handler));
            Ok(Box::new(pattern.to_owned()))
        }
        fn request(&self, topic: &str, payload: &[u8], _: Duration) -> Result<Vec<u8>> {
            let mut servers = self.servers.lock().unwrap();
            let (_, h) = servers.iter_mut().find(|(p, _)| p.matches(topic)).ok_or(
                Error::ConnectionRefused {
                    addr: topic.into(),
                    reason: "no responder",
                },
            )?;
            Ok(h(&Message::received(
                topic.into(),
                payload.into(),
                NODE,
                true,
            )))
        }
        fn peers(&self) -> Vec<Peer> {
            vec![peer()]
        }
        fn watch(&self) -> Box<dyn BackendWatch> {
            Box::new(FakeWatch(
                [
                    PeerEvent::Joined(peer()),
                    PeerEvent::Declared {
                        node_id: NODE,
                        pid: std::process::id(),
                        kind: Declaration::Serves,
                        topic: "svc/*".into(),
                    },
                ]
                .into(),
            ))
        }
        fn stats(&self) -> BusStats {
            BusStats {
                published: self.published.load(std::sync::atomic::Ordering::Relaxed),
                ..BusStats::default()
            }
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    impl BackendSubscriber for FakeSub {
        fn pattern(&self) -> &str {
            &self.pattern
        }
        fn drops(&self) -> u64 {
            0
        }
        fn delivered(&self) -> u64 {
            self.delivered
        }
        fn corrupted(&self) -> u64 {
            0
        }
        fn recv_into_with(&mut self, msg: &mut Message, wait: Wait) -> Result<()> {
            match self.queue.lock().unwrap().pop_front() {
                Some(m) if m.topic().ends_with("/bad") => Err(Error::Corrupted("fake".into())),
                Some(m) => {
                    *msg = m;
                    self.delivered += 1;
                    Ok(())
                }
                None if wait == Wait::Never => Err(Error::WouldBlock),
                None => Err(Error::Timeout { after: None }),
            }
        }
    }

    impl BackendWatch for FakeWatch {
        fn peers(&self) -> Vec<Peer> {
            vec![peer()]
        }
        fn next_with(&mut self, _: Wait) -> Result<PeerEvent> {
            self.0.pop_front().ok_or(Error::Timeout { after: None })
        }
    }

    #[test]
    fn a_registered_backend_gets_its_urls() {
        let url = "bus://fake/ns?x=1";
        assert!(matches!(Bus::open(url), Err(Error::Url(_))));
        let e = Bus::open("bus://zenoh/ns?connect=tcp/127.0.0.1:7447").unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("ipckit_zenoh::install()"), "{e}");

        register_backend("fake", Arc::new(Fake)).unwrap();
        let bus = Bus::open(url).unwrap();
        assert_eq!((bus.node_id(), bus.namespace()), (NODE, "fake-ns"));
        assert!(bus.backend().unwrap().as_any().is::<FakeBus>());
        assert!(format!("{bus:?}").contains("fake-ns"));

        let mut sub = bus.subscribe("a/*").unwrap();
        bus.publish("a/b", b"1").unwrap();
        bus.publish_typed("a/t", &(5u8, "five")).unwrap();
        bus.publish_with("b/c", b"x", Wait::Never).unwrap();
        let t = Duration::from_millis(10);
        let m = sub.recv_timeout(t).unwrap();
        assert_eq!(
            (m.topic(), m.payload(), m.publisher()),
            ("a/b", &b"1"[..], NODE)
        );
        let (topic, v): (String, (u8, String)) = sub.recv_typed_timeout(t).unwrap();
        assert_eq!((topic.as_str(), v), ("a/t", (5, "five".into())));
        assert!(matches!(sub.try_recv(), Err(Error::WouldBlock)));
        assert!(matches!(
            sub.recv_timeout(t),
            Err(Error::Timeout { after: Some(a) }) if a == t
        ));
        assert_eq!((sub.pattern(), sub.delivered(), sub.drops()), ("a/*", 2, 0));
        // Batches: up to `max`; an error after the first message comes with the next call.
        for t in ["a/1", "a/2", "a/bad", "a/3"] {
            bus.publish(t, t.as_bytes()).unwrap();
        }
        let mut got = Vec::new();
        let mut take = |m: MessageRef<'_>| got.push(m.topic().to_owned());
        assert_eq!(sub.recv_batch_timeout(1, t, &mut take).unwrap(), 1);
        assert_eq!(sub.try_recv_batch(10, &mut take).unwrap(), 1);
        assert!(matches!(
            sub.try_recv_batch(10, &mut take),
            Err(Error::Corrupted(_))
        ));
        assert_eq!(sub.recv_batch(10, &mut take).unwrap(), 1);
        assert!(matches!(
            sub.recv_batch_timeout(10, t, &mut take),
            Err(Error::Timeout { after: Some(a) }) if a == t
        ));
        assert_eq!(got, ["a/1", "a/2", "a/3"]);
        assert!(sub.publishers().is_empty());
        assert_eq!(bus.stats().published, 7);

        let _svc = bus
            .serve("svc/*", |m| [m.payload(), b"!"].concat())
            .unwrap();
        assert_eq!(bus.request("svc/x", b"hi", t).unwrap(), b"hi!");
        let _add = bus
            .serve("calc/add", |m| {
                let (x, y): (u32, u32) = m.decode().unwrap_or((0, 0));
                postcard::to_stdvec(&(x + y)).unwrap()
            })
            .unwrap();
        let sum: u32 = bus.request_typed("calc/add", &(2u32, 40u32), t).unwrap();
        assert_eq!(sum, 42);
        assert!(matches!(
            bus.request("none", b"", t),
            Err(Error::ConnectionRefused { .. })
        ));

        assert_eq!(bus.peers(), [peer()]);
        let mut w = bus.watch();
        assert_eq!(w.next_timeout(t).unwrap(), PeerEvent::Joined(peer()));
        assert!(matches!(
            w.next_with(Wait::Never).unwrap(),
            PeerEvent::Declared { .. }
        ));
        assert_eq!(w.peers(), [peer()]);
        // `list` joins and leaves its own node out.
        assert_eq!(super::super::list(url).unwrap(), []);
        assert!(matches!(
            bus.publish_malformed(b"x"),
            Err(Error::Unsupported { .. })
        ));
        // bus://local is untouched.
        let local = Bus::open(&format!("bus://local/fake-{}", std::process::id())).unwrap();
        assert!(local.backend().is_none());
    }
}
