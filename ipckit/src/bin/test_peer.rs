//! `ipckit-test-peer`: the other process of ipckit's integration conformance suite
//! (`ipckit/tests/conformance.rs` and friends). Not part of the public interface.
//!
//! ```text
//! ipckit-test-peer ROLE TARGET STEP...
//! ```
//!
//! Roles:
//! - `connect URL`: `ipckit::connect_timeout(URL)` (for `pipe:` this takes the inherited pipe).
//! - `bind URL`: `ipckit::bind(URL)`, prints `READY <endpoint>` on stdout, then accepts once.
//! - `listen URL`: `ipckit::bind(URL)`, prints `READY <endpoint>`, keeps the listener and
//!   never accepts (an endpoint that is live but busy).
//! - `raw-unix PATH`, `raw-tcp HOST:PORT`, `raw-fifo PATH`, `raw-pipe`: a plain byte stream
//!   opened with std (no ipckit), for writing hand-made frames (`write-hex:`/`write-junk:`).
//! - `from-env -`: calls `ipckit::pipe::from_env()` twice and prints both results.
//! - `none -`: no connection at all (only `fds`, `print:` … make sense).
//!
//! Steps, run in order:
//! - `hello`: sends `hello` (skipped where this end cannot send).
//! - `send:S1,S2,…`: sends messages of those sizes; message `i` is `pattern(i, size)`.
//! - `send-hex:HEX`: sends one message with exactly these bytes.
//! - `send-report:SIZE`: sends `pattern(0, SIZE)` and prints `send ok` or `send err {e:?}`.
//! - `check:S1,S2,…`: receives messages and verifies each against `pattern(i, size)`.
//! - `report:N`: receives N times and prints `ok LEN` or `err {e:?}` for each.
//! - `echo`: sends back every message until the peer disconnects.
//! - `linger`: waits (bounded) for one message or a disconnection, then goes on.
//! - `await`: waits (bounded) for one message; anything else is a failure.
//! - `hold`: sleeps until killed (bounded by the watchdog).
//! - `print:TEXT`: prints TEXT on stdout.
//! - `partial:SIZE`: `send_timeout(pattern(0, SIZE), 200ms)`, prints the result.
//! - `abort`: `std::process::abort()` (no destructors, no core file).
//! - `typed-send`, `typed-send-bool`, `typed-echo`: typed messages (see [`sample`]).
//! - `fds`: prints the open descriptors as `fds N:TARGET N:TARGET…` and sends the same line.
//! - `write-hex:HEX`, `write-junk:N`: raw roles only, write bytes to the stream.
//!
//! Exit codes: 0 success, 1 a check failed, 2 bad usage, 3 an ipckit call failed,
//! 100 the watchdog fired. Errors are described on stderr.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipckit::{Connection, Error, MessageReceiver, MessageSender, TypedReceiver, TypedSender};

/// Longest any single step may wait.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The peer never outlives this, even if the test that spawned it is gone.
const WATCHDOG: Duration = Duration::from_secs(60);

/// The deterministic content of message `index` of `size` bytes (xorshift64 stream seeded by
/// both, so a shifted, truncated or swapped message never matches). Same as
/// `tests/common/mod.rs`.
fn pattern(index: usize, size: usize) -> Vec<u8> {
    let mut x = ((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (size as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
        | 1;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    v
}

/// The typed message, as a tuple: postcard encodes a struct exactly like the tuple of its
/// fields, so the tests decode it as `struct Sample { id, name, values, flag }`.
type Sample = (u32, String, Vec<i64>, Option<bool>);

fn sample() -> Sample {
    (7, "ipckit ✓".to_owned(), vec![-1, 0, i64::MAX], Some(true))
}

/// A failed step: exit code and message.
struct Fail(u8, String);

type StepResult = Result<(), Fail>;

fn usage(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

fn ipc(what: &str, e: Error) -> Fail {
    Fail(3, format!("{what}: {e:?} ({e})"))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn parse_sizes(list: &str) -> Result<Vec<usize>, Fail> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| usage(format!("bad size {s:?}"))))
        .collect()
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, Fail> {
    if hex.len() % 2 != 0 {
        return Err(usage(format!("odd hex string {hex:?}")));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| usage("bad hex")))
        .collect()
}

/// Descriptors open in this process, with what they point to.
fn open_fds() -> String {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n: i32 = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((n, target.display().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    let mut line = String::from("fds");
    for (n, t) in fds {
        // The directory being listed shows up as one entry: leave it out.
        if t.starts_with("/proc/") && t.ends_with("/fd") {
            continue;
        }
        line.push_str(&format!(" {n}:{t}"));
    }
    line
}

/// What the steps act on.
enum Link {
    None,
    Listening(#[allow(dead_code)] ipckit::Listener),
    Ipc(Connection),
    Raw(Box<dyn Write>),
}

impl Link {
    fn conn(&mut self) -> Result<&mut Connection, Fail> {
        match self {
            Link::Ipc(c) => Ok(c),
            _ => Err(usage(
                "this step needs an ipckit connection (role connect or bind)",
            )),
        }
    }

    fn raw(&mut self) -> Result<&mut Box<dyn Write>, Fail> {
        match self {
            Link::Raw(w) => Ok(w),
            _ => Err(usage("this step needs a raw-* role")),
        }
    }
}

fn retry_until<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_link(role: &str, target: &str) -> Result<Link, Fail> {
    let io = |what: &str, e: std::io::Error| Fail(3, format!("{what}: {e}"));
    Ok(match role {
        "connect" => {
            Link::Ipc(ipckit::connect_timeout(target, STEP_TIMEOUT).map_err(|e| ipc("connect", e))?)
        }
        "bind" => {
            let mut listener = ipckit::bind(target).map_err(|e| ipc("bind", e))?;
            say(&format!("READY {}", listener.endpoint()));
            Link::Ipc(
                listener
                    .accept_timeout(STEP_TIMEOUT)
                    .map_err(|e| ipc("accept", e))?,
            )
            // The listener is dropped here: sockets keep working, the file goes away.
        }
        "listen" => {
            let listener = ipckit::bind(target).map_err(|e| ipc("bind", e))?;
            say(&format!("READY {}", listener.endpoint()));
            Link::Listening(listener)
        }
        "raw-unix" => Link::Raw(Box::new(
            retry_until(|| std::os::unix::net::UnixStream::connect(target))
                .map_err(|e| io("connect", e))?,
        )),
        "raw-tcp" => Link::Raw(Box::new(
            retry_until(|| std::net::TcpStream::connect(target)).map_err(|e| io("connect", e))?,
        )),
        "raw-fifo" => {
            use std::os::unix::fs::OpenOptionsExt;
            // O_NONBLOCK: fail with ENXIO instead of blocking while there is no reader.
            let f = retry_until(|| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(target)
            })
            .map_err(|e| io("open fifo", e))?;
            Link::Raw(Box::new(f))
        }
        "raw-pipe" => {
            // Re-open the inherited write end through /proc (no unsafe needed).
            let value = std::env::var(ipckit::pipe::ENV_VAR)
                .map_err(|_| usage("raw-pipe needs the inherited pipe"))?;
            let w = value
                .split_once(',')
                .map(|(_, w)| w.to_owned())
                .filter(|w| w != "-")
                .ok_or_else(|| usage("raw-pipe needs a write end"))?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{w}"))
                .map_err(|e| io("open pipe", e))?;
            Link::Raw(Box::new(f))
        }
        "from-env" => {
            for _ in 0..2 {
                match ipckit::pipe::from_env() {
                    Ok(c) => {
                        say(&format!("ok {c:?}"));
                        // Keep it: the second call must fail because it is taken.
                        std::mem::forget(c);
                    }
                    Err(e) => say(&format!("err {e:?}")),
                }
            }
            Link::None
        }
        "none" => Link::None,
        _ => return Err(usage(format!("unknown role {role:?}"))),
    })
}

fn step(link: &mut Link, step: &str) -> StepResult {
    let (name, arg) = step.split_once(':').unwrap_or((step, ""));
    match name {
        "hello" => {
            if let Link::Ipc(c) = link {
                match c.send_timeout(b"hello", STEP_TIMEOUT) {
                    Ok(()) | Err(Error::Unsupported { .. }) => {}
                    Err(e) => return Err(ipc("send hello", e)),
                }
            }
        }
        "send" => {
            let c = link.conn()?;
            for (i, size) in parse_sizes(arg)?.into_iter().enumerate() {
                c.send_timeout(&pattern(i, size), STEP_TIMEOUT)
                    .map_err(|e| ipc(&format!("send #{i} ({size} bytes)"), e))?;
            }
        }
        "send-hex" => {
            let bytes = parse_hex(arg)?;
            link.conn()?
                .send_timeout(&bytes, STEP_TIMEOUT)
                .map_err(|e| ipc("send-hex", e))?;
        }
        "send-report" => {
            let size: usize = arg.parse().map_err(|_| usage("bad size"))?;
            match link.conn()?.send_timeout(&pattern(0, size), STEP_TIMEOUT) {
                Ok(()) => say("send ok"),
                Err(e) => say(&format!("send err {e:?}")),
            }
        }
        "check" => {
            let c = link.conn()?;
            let mut buf = Vec::new();
            for (i, size) in parse_sizes(arg)?.into_iter().enumerate() {
                c.recv_into_timeout(&mut buf, STEP_TIMEOUT)
                    .map_err(|e| ipc(&format!("recv #{i} ({size} bytes expected)"), e))?;
                let want = pattern(i, size);
                if buf != want {
                    let at = buf.iter().zip(&want).position(|(a, b)| a != b);
                    return Err(Fail(
                        1,
                        format!(
                            "message #{i}: got {} bytes, want {size}; first difference at {at:?}",
                            buf.len()
                        ),
                    ));
                }
                say(&format!("checked {i} {size}"));
            }
        }
        "report" => {
            let n: usize = arg.parse().map_err(|_| usage("bad count"))?;
            let c = link.conn()?;
            let mut buf = Vec::new();
            for _ in 0..n {
                match c.recv_into_timeout(&mut buf, Duration::from_secs(5)) {
                    Ok(()) => say(&format!("ok {}", buf.len())),
                    Err(e) => say(&format!("err {e:?}")),
                }
            }
        }
        "echo" => {
            let c = link.conn()?;
            let mut buf = Vec::new();
            loop {
                match c.recv_into_timeout(&mut buf, STEP_TIMEOUT) {
                    Ok(()) => c
                        .send_timeout(&buf, STEP_TIMEOUT)
                        .map_err(|e| ipc("echo send", e))?,
                    Err(Error::Disconnected) => break,
                    Err(e) => return Err(ipc("echo recv", e)),
                }
            }
        }
        "linger" => {
            let c = link.conn()?;
            match c.recv_timeout(STEP_TIMEOUT) {
                Ok(_) | Err(Error::Disconnected | Error::Unsupported { .. }) => {}
                Err(e) => return Err(ipc("linger", e)),
            }
        }
        "await" => {
            link.conn()?
                .recv_timeout(STEP_TIMEOUT)
                .map_err(|e| ipc("await", e))?;
        }
        "hold" => std::thread::sleep(WATCHDOG),
        "print" => say(arg),
        "partial" => {
            let size: usize = arg.parse().map_err(|_| usage("bad size"))?;
            let r = link
                .conn()?
                .send_timeout(&pattern(0, size), Duration::from_millis(200));
            say(&format!("partial {r:?}"));
        }
        "abort" => {
            // No core file: the abort is the point of the test, not a crash to debug.
            let _ = rustix::process::setrlimit(
                rustix::process::Resource::Core,
                rustix::process::Rlimit {
                    current: Some(0),
                    maximum: Some(0),
                },
            );
            std::process::abort();
        }
        "typed-send" => link
            .conn()?
            .send_typed_timeout(&sample(), STEP_TIMEOUT)
            .map_err(|e| ipc("typed-send", e))?,
        "typed-send-bool" => link
            .conn()?
            .send_typed_timeout(&true, STEP_TIMEOUT)
            .map_err(|e| ipc("typed-send-bool", e))?,
        "typed-echo" => {
            let c = link.conn()?;
            let (id, name, values, flag): Sample = c
                .recv_typed_timeout(STEP_TIMEOUT)
                .map_err(|e| ipc("typed-echo recv", e))?;
            c.send_typed_timeout(&(id + 1, name, values, flag), STEP_TIMEOUT)
                .map_err(|e| ipc("typed-echo send", e))?;
        }
        "fds" => {
            let line = open_fds();
            say(&line);
            if let Link::Ipc(c) = link {
                c.send_timeout(line.as_bytes(), STEP_TIMEOUT)
                    .map_err(|e| ipc("send fds", e))?;
            }
        }
        "write-hex" => {
            let bytes = parse_hex(arg)?;
            let w = link.raw()?;
            w.write_all(&bytes)
                .and_then(|()| w.flush())
                .map_err(|e| Fail(3, format!("write: {e}")))?;
        }
        "write-junk" => {
            let n: usize = arg.parse().map_err(|_| usage("bad count"))?;
            let w = link.raw()?;
            w.write_all(&pattern(99, n))
                .and_then(|()| w.flush())
                .map_err(|e| Fail(3, format!("write: {e}")))?;
        }
        _ => return Err(usage(format!("unknown step {step:?}"))),
    }
    Ok(())
}

fn run(args: &[String]) -> StepResult {
    let [role, target, steps @ ..] = args else {
        return Err(usage("usage: ipckit-test-peer ROLE TARGET STEP..."));
    };
    let mut link = open_link(role, target)?;
    for s in steps {
        step(&mut link, s)?;
    }
    // `link` is dropped here, before exiting: files this end created are removed.
    Ok(())
}

fn main() -> ExitCode {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("ipckit-test-peer: watchdog fired after {WATCHDOG:?}");
        std::process::exit(100);
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("ipckit-test-peer {args:?}: {msg}");
            ExitCode::from(code)
        }
    }
}
