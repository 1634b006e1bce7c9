//! # ipckit: inter-process communication for Rust
//!
//! Every mechanism behind one message API, chosen by URL:
//!
//! ```
//! use ipckit::{MessageReceiver, MessageSender, TypedReceiver, TypedSender};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("unix://{}/hello.sock", dir.path().display()); // or tcp://127.0.0.1:7000, …
//!
//! let mut listener = ipckit::bind(&url)?;
//! let mut client = ipckit::connect(&url)?;
//! let mut server = listener.accept_timeout(Duration::from_secs(5))?;
//!
//! client.send(b"hello")?;
//! let mut buf = Vec::new();
//! server.recv_into_timeout(&mut buf, Duration::from_secs(5))?; // reuses buf's allocation
//! assert_eq!(buf, b"hello");
//!
//! server.send_typed(&("answer", 42u32))?;
//! let (word, n): (String, u32) = client.recv_typed_timeout(Duration::from_secs(5))?;
//! assert_eq!((word.as_str(), n), ("answer", 42));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! | URL | transport | module |
//! |---|---|---|
//! | `pipe:` | anonymous pipe to a parent, or stdin/stdout | [`pipe`] |
//! | `fifo:///path` | named pipe | [`pipe`] |
//! | `unix:///path` | Unix stream socket, framed | [`socket`] |
//! | `unix+dgram:///path` | Unix datagram socket | [`socket`] |
//! | `unix+seqpacket:///path` | Unix sequenced-packet socket | [`socket`] |
//! | `tcp://host:port` | TCP, framed | [`socket`] |
//! | `udp://host:port` | UDP (≤ 65,507 bytes, may drop) | [`socket`] |
//! | `queue:///dir` | durable on-disk queue, consumer groups, at-least-once | [`queue`] |
//!
//! Every blocking call has `try_` and `_timeout` forms over one core method taking a
//! [`Wait`]; every failure is a variant of [`Error`].

#![warn(missing_docs)]

#[cfg(feature = "tokio")]
pub mod aio;
#[cfg(not(loom))]
pub mod bus;
// Under loom, of the bus only its handshakes are built, for their models.
#[cfg(loom)]
#[path = "bus/protocol.rs"]
mod bus_protocol;
#[cfg(loom)]
#[path = "bus/writer_lock.rs"]
mod bus_writer_lock;
mod connection;
pub mod endpoint;
mod error;
pub mod framing;
#[doc(hidden)]
pub mod fuzzing;
mod inherit;
mod loom;
pub mod mmap;
pub mod mq;
pub mod pipe;
pub mod promise;
pub mod queue;
mod region;
#[cfg(feature = "tokio")]
pub mod rpc;
pub mod shm;
pub mod signal;
pub mod socket;
mod stream;
pub mod sync;
pub mod sys;
mod transport;

pub use connection::{bind, connect, connect_timeout, connect_with, Connection, Listener};
pub use endpoint::{Endpoint, PeerPolicy, Scheme, ToEndpoint, UrlError, WaitMode};
pub use error::{Error, Result};
pub use sys::PeerCredentials;
pub use transport::{decode, MessageReceiver, MessageSender, TypedReceiver, TypedSender, Wait};
