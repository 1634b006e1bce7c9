//! One-shot promises across processes (feature `tokio` for the async wait).
//!
//! [`pair`] makes a [`Future`] (the waiting end, which stays in this process) and a
//! [`PromiseHandle`] — a small serializable value naming where to deliver. Send the handle
//! to another process over any endpoint (it is `serde`); there,
//! [`PromiseHandle::open`] gives the [`Promise`], and [`Promise::fulfil`] delivers the
//! value once. Awaiting the future gives the value, [`Error::Timeout`], or
//! [`Error::BrokenPromise`] if the promise was dropped unfulfilled or its process died
//! (the connection under it closed). A process that dies before it even opens the handle
//! is seen too when the future is told its pid ([`Future::fulfilled_by`]).
//!
//! Underneath, the future binds a private Unix socket (mode 0600, in a fresh directory
//! under the runtime dir or `/tmp`), removed when the future is dropped.
//!
//! ```
//! use std::time::Duration;
//! let (handle, future) = ipckit::promise::pair::<String>()?;
//! // … send `handle` to another process; here, a thread plays it:
//! std::thread::spawn(move || handle.open()?.fulfil(&"done".to_owned()));
//! assert_eq!(future.wait_timeout(Duration::from_secs(5))?, "done");
//! # Ok::<(), ipckit::Error>(())
//! ```

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::signal::ProcessWatch;
use crate::transport::{MessageReceiver, MessageSender, Wait};
use crate::{Connection, Listener};

/// Where a promise delivers: serializable, so it can be sent to the fulfilling process.
#[derive(Serialize, Deserialize)]
pub struct PromiseHandle<T> {
    url: String,
    #[serde(skip)]
    _type: PhantomData<fn(T)>,
}

impl<T> Clone for PromiseHandle<T> {
    fn clone(&self) -> Self {
        PromiseHandle {
            url: self.url.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for PromiseHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromiseHandle")
            .field("url", &self.url)
            .finish()
    }
}

impl<T: Serialize> PromiseHandle<T> {
    /// The endpoint the value goes to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Rebuilds a handle from its URL (as [`url`](Self::url) gave it).
    pub fn from_url(url: impl Into<String>) -> Self {
        PromiseHandle {
            url: url.into(),
            _type: PhantomData,
        }
    }

    /// Connects to the waiting future; from now on, this process dying or dropping the
    /// promise breaks it. Fails with [`Error::BrokenPromise`] if the future is gone.
    pub fn open(self) -> Result<Promise<T>> {
        match crate::connect(self.url.as_str()) {
            Ok(conn) => Ok(Promise {
                conn: Some(conn),
                _type: PhantomData,
            }),
            Err(Error::ConnectionRefused { .. } | Error::NotFound { .. }) => {
                Err(Error::BrokenPromise)
            }
            Err(e) => Err(e),
        }
    }
}

/// The fulfilling end: deliver one value with [`fulfil`](Promise::fulfil). Dropping it
/// unfulfilled breaks the promise.
pub struct Promise<T> {
    conn: Option<Connection>,
    _type: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

impl<T: Serialize> Promise<T> {
    /// Delivers the value (at most 16 MiB encoded). [`Error::BrokenPromise`] if the future
    /// was dropped meanwhile.
    pub fn fulfil(mut self, value: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(Error::Encode)?;
        let mut conn = self.conn.take().ok_or(Error::BrokenPromise)?;
        conn.send_timeout(&bytes, Duration::from_secs(10))
            .map_err(|e| {
                if e.is_disconnect() {
                    Error::BrokenPromise
                } else {
                    e
                }
            })
    }
}

/// Makes a promise/future pair (see the [module docs](self)).
pub fn pair<T: Serialize + DeserializeOwned>() -> Result<(PromiseHandle<T>, Future<T>)> {
    let dir = private_dir()?;
    let path = dir.join("promise.sock");
    let url = format!("unix://{}", path.display());
    let listener = crate::bind(url.as_str())?;
    Ok((
        PromiseHandle::from_url(url),
        Future {
            listener: Some(listener),
            dir: Some(dir),
            watch: None,
            _type: PhantomData,
        },
    ))
}

/// A fresh 0700 directory for one promise's socket.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "ipckit-promise-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "creating a promise's directory",
                    source,
                })
            }
        }
    }
}

/// The waiting end of a promise: the value, a timeout, or [`Error::BrokenPromise`].
pub struct Future<T> {
    listener: Option<Listener>,
    dir: Option<PathBuf>,
    watch: Option<ProcessWatch>,
    _type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("promise::Future")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        drop(self.listener.take());
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// How often a wait checks the fulfilling process while nobody has connected yet.
const CHECK: Duration = Duration::from_millis(20);

impl<T: DeserializeOwned> Future<T> {
    /// Says which process will fulfil the promise: if it exits before it opens the
    /// handle, the wait ends with [`Error::BrokenPromise`] instead of waiting it out.
    pub fn fulfilled_by(mut self, pid: u32) -> Result<Self> {
        self.watch = Some(ProcessWatch::new(pid).map_err(|e| match e {
            Error::NotFound { .. } => Error::BrokenPromise,
            e => e,
        })?);
        Ok(self)
    }

    fn check_fulfiller(&self) -> Result<()> {
        match &self.watch {
            Some(w) if w.has_exited()? => Err(Error::BrokenPromise),
            _ => Ok(()),
        }
    }

    /// The core wait: the connection of the fulfilling side, then its value.
    fn wait_with(mut self, wait: Wait) -> Result<T> {
        let mut listener = self.listener.take().ok_or(Error::BrokenPromise)?;
        let mut conn = loop {
            let slice = match (wait, &self.watch) {
                (_, None) => wait,
                (Wait::Never, _) => Wait::Never,
                (_, Some(_)) => {
                    let until = Instant::now() + CHECK;
                    match wait {
                        Wait::Until(t) if t < until => wait,
                        _ => Wait::Until(until),
                    }
                }
            };
            match listener.accept_with(slice) {
                Ok(c) => break c,
                Err(Error::Timeout { .. }) if slice != wait => self.check_fulfiller()?,
                Err(e) => return Err(e),
            }
        };
        // Nobody else may connect now: the name goes away.
        drop(listener);
        let mut buf = Vec::new();
        match conn.recv_into_with(&mut buf, wait) {
            Ok(()) => crate::transport::decode(&buf),
            Err(e) if e.is_disconnect() => Err(Error::BrokenPromise),
            Err(e) => Err(e),
        }
    }

    /// Waits for the value, blocking, at most `timeout`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T> {
        self.wait_with(Wait::timeout(timeout))
            .map_err(|e| e.after(timeout))
    }

    /// Waits for the value, blocking as long as it takes.
    pub fn wait(self) -> Result<T> {
        self.wait_with(Wait::Forever)
    }
}

#[cfg(feature = "tokio")]
impl<T: DeserializeOwned> Future<T> {
    /// Awaits the value in the tokio reactor.
    pub async fn get(mut self) -> Result<T> {
        let listener = self.listener.take().ok_or(Error::BrokenPromise)?;
        let mut listener = crate::aio::AsyncListener::new(listener)?;
        let gone = async {
            match &self.watch {
                Some(w) => w.exited().await,
                None => std::future::pending().await,
            }
        };
        let accepted = tokio::select! {
            c = listener.accept() => c,
            r = gone => {
                r?;
                // It may have fulfilled and exited in one go: take what it left.
                listener
                    .accept_timeout(Duration::from_millis(1))
                    .await
                    .map_err(|_| Error::BrokenPromise)
            }
        };
        let mut conn = accepted?;
        drop(listener);
        match conn.recv().await {
            Ok(buf) => crate::transport::decode(&buf),
            Err(e) if e.is_disconnect() => Err(Error::BrokenPromise),
            Err(e) => Err(e),
        }
    }

    /// [`get`](Self::get) with a time limit ([`Error::Timeout`]).
    pub async fn get_timeout(self, timeout: Duration) -> Result<T> {
        crate::aio::with_timeout(timeout, self.get()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_promise_is_broken() {
        let (handle, future) = pair::<u32>().unwrap();
        let t = std::thread::spawn(move || drop(handle.open().unwrap()));
        let r = future.wait_timeout(Duration::from_secs(5));
        assert!(matches!(r, Err(Error::BrokenPromise)), "{r:?}");
        t.join().unwrap();
    }

    #[test]
    fn unopened_handle_times_out_and_dropped_future_breaks_the_promise() {
        let (handle, future) = pair::<u32>().unwrap();
        let r = future.wait_timeout(Duration::from_millis(50));
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
        // The future is gone (its socket removed): opening now says so.
        assert!(matches!(handle.open(), Err(Error::BrokenPromise)));
    }

    #[test]
    fn handle_survives_serialization() {
        let (handle, future) = pair::<(String, u8)>().unwrap();
        let bytes = postcard::to_stdvec(&handle).unwrap();
        let back: PromiseHandle<(String, u8)> = postcard::from_bytes(&bytes).unwrap();
        std::thread::spawn(move || back.open().unwrap().fulfil(&("x".into(), 1)).unwrap());
        assert_eq!(
            future.wait_timeout(Duration::from_secs(5)).unwrap(),
            ("x".to_owned(), 1)
        );
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(flavor = "current_thread")]
    async fn async_get() {
        let (handle, future) = pair::<u64>().unwrap();
        std::thread::spawn(move || handle.open().unwrap().fulfil(&99).unwrap());
        assert_eq!(
            future.get_timeout(Duration::from_secs(5)).await.unwrap(),
            99
        );
    }
}
