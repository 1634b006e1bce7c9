//! `pipe:` between a parent and the children it spawns, beyond what the conformance suite
//! checks for every transport: what the child inherits, how `from_env` fails, and `pipe:` over
//! stdin/stdout.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ipckit::{Error, MessageReceiver, MessageSender};

/// The descriptor numbers in a `fds N:TARGET …` line from the peer.
fn parse_fds(line: &str) -> Vec<(i32, String)> {
    line.strip_prefix("fds")
        .expect("an fds line")
        .split_whitespace()
        .map(|item| {
            let (n, target) = item.split_once(':').expect("N:TARGET");
            (n.parse().expect("fd number"), target.to_owned())
        })
        .collect()
}

/// The descriptors `ChildEnd::configure` put in the command's environment.
fn passed_fds(cmd: &Command) -> BTreeSet<i32> {
    let value = cmd
        .get_envs()
        .find(|(k, _)| *k == ipckit::pipe::ENV_VAR)
        .and_then(|(_, v)| v)
        .expect("IPCKIT_PIPE_FDS set on the command")
        .to_str()
        .unwrap()
        .to_owned();
    value
        .split(',')
        .filter(|s| *s != "-")
        .map(|s| s.parse().unwrap())
        .collect()
}

/// The child gets its two pipe ends and stdio, and none of the descriptors ipckit (or anything
/// else that uses close-on-exec) has open in the parent.
#[test]
fn child_inherits_only_its_pipe() {
    let dir = tempdir();
    let d = dir.path().display();
    // Something of every kind open in the parent while the child is spawned.
    let mut unix = ipckit::bind(format!("unix://{d}/u")).unwrap();
    let _client = ipckit::connect_timeout(format!("unix://{d}/u"), LONG).unwrap();
    let _server = unix.accept_timeout(LONG).unwrap();
    let _tcp = ipckit::bind("tcp://127.0.0.1:0").unwrap();
    let mut udp = ipckit::bind("udp://127.0.0.1:0").unwrap();
    let _udp_conn = udp.accept_timeout(LONG).unwrap();
    let _fifo = ipckit::bind(format!("fifo://{d}/f")).unwrap();
    let _dgram = ipckit::bind(format!("unix+dgram://{d}/g")).unwrap();
    let (_other_pipe, _other_end) = ipckit::pipe::duplex().unwrap();

    let inheritable = inheritable_fds();
    let (mut conn, end) = ipckit::pipe::duplex().unwrap();
    let mut cmd = Peer::command(&["connect", "pipe:", "fds"]);
    end.configure(&mut cmd);
    let passed = passed_fds(&cmd);
    assert_eq!(passed.len(), 2, "read and write ends");
    let child = cmd.spawn().expect("spawn");
    drop(end);
    let mut peer = Peer::adopt(child, "fds child".into());

    let line = String::from_utf8(conn.recv_timeout(LONG).expect("fds message")).unwrap();
    peer.expect_success();
    let child_fds = parse_fds(&line);
    let numbers: BTreeSet<i32> = child_fds.iter().map(|(n, _)| *n).collect();
    for fd in [0, 1, 2].iter().chain(&passed) {
        assert!(numbers.contains(fd), "child lacks fd {fd}: {line}");
    }
    for (n, target) in &child_fds {
        assert!(
            *n <= 2 || passed.contains(n) || inheritable.contains(n),
            "the child inherited fd {n} ({target}) that it was not given: {line}"
        );
    }
    for (n, target) in &child_fds {
        if passed.contains(n) {
            assert!(target.starts_with("pipe:"), "fd {n} is {target}");
        }
    }
}

/// `from_env` in a process that was not given a pipe, or given a malformed variable, is
/// `NoInheritedPipe`; a descriptor that is not a pipe is left open for its owner.
#[test]
fn from_env_errors() {
    // This test process has no pipe.
    match ipckit::pipe::from_env() {
        Err(Error::NoInheritedPipe(_)) => {}
        other => panic!("from_env without a pipe: {other:?}"),
    }
    for value in ["", "abc", "3", "3,4,5", "-1,-", "x,y", "99,-"] {
        let mut cmd = Peer::command(&["from-env", "-", "fds"]);
        cmd.env(ipckit::pipe::ENV_VAR, value);
        let mut p = Peer::adopt(cmd.spawn().unwrap(), format!("from-env {value:?}"));
        let first = p.line(LONG);
        assert!(
            first.starts_with("err NoInheritedPipe"),
            "{value:?}: {first}"
        );
        let _second = p.line(LONG);
        let fds = parse_fds(&p.line(LONG));
        assert!(fds.iter().any(|(n, _)| *n == 0), "{value:?}: stdin closed");
        p.expect_success();
    }
    // Descriptor 0 is /dev/null here, not a pipe: refused, and not closed.
    let mut cmd = Peer::command(&["from-env", "-", "fds"]);
    cmd.env(ipckit::pipe::ENV_VAR, "0,-");
    let mut p = Peer::adopt(cmd.spawn().unwrap(), "from-env 0,-".into());
    let first = p.line(LONG);
    assert!(first.contains("not a pipe"), "{first}");
    let _second = p.line(LONG);
    let fds = parse_fds(&p.line(LONG));
    assert!(
        fds.iter().any(|(n, t)| *n == 0 && t == "/dev/null"),
        "fd 0 must stay open: {fds:?}"
    );
    p.expect_success();
}

/// The inherited pipe can be taken once per process.
#[test]
fn from_env_takes_once() {
    let (_conn, end) = ipckit::pipe::duplex().unwrap();
    let mut cmd = Peer::command(&["from-env", "-"]);
    let child = end.spawn(&mut cmd).unwrap();
    let mut p = Peer::adopt(child, "from-env twice".into());
    assert!(p.line(LONG).starts_with("ok Connection"));
    assert_eq!(
        p.line(LONG),
        "err NoInheritedPipe(\"already taken by an earlier call\")"
    );
    p.expect_success();
}

/// `ChildEnd::configure` with a spawn of one's own works like `ChildEnd::spawn`, once the
/// parent's copies of the child's ends are dropped.
#[test]
fn configure_then_spawn() {
    let (mut conn, end) = ipckit::pipe::duplex().unwrap();
    let mut cmd = Peer::command(&["connect", "pipe:", "echo"]);
    end.configure(&mut cmd);
    let child = cmd.spawn().unwrap();
    drop(end);
    let mut p = Peer::adopt(child, "echo child".into());
    conn.send_timeout(b"ping", LONG).unwrap();
    assert_eq!(conn.recv_timeout(LONG).unwrap(), b"ping");
    drop(conn);
    p.expect_success();
}

/// The parent sees `Disconnected` when the child exits, and the child sees it when the
/// parent's end is dropped — for each of duplex, to_child and from_child.
#[test]
fn either_end_going_away() {
    // Child exits: the parent's receive ends.
    let (mut conn, end) = ipckit::pipe::from_child().unwrap();
    let mut cmd = Peer::command(&["connect", "pipe:", "send:5"]);
    let mut p = Peer::adopt(end.spawn(&mut cmd).unwrap(), "sender".into());
    assert_pattern(&conn.recv_timeout(LONG).unwrap(), 0, 5, "from_child");
    p.expect_success();
    assert!(matches!(conn.recv_timeout(LONG), Err(Error::Disconnected)));

    // Parent drops its end: the child's receive ends (its `linger` returns).
    let (conn, end) = ipckit::pipe::to_child().unwrap();
    let mut cmd = Peer::command(&["connect", "pipe:", "linger", "print:gone"]);
    let mut p = Peer::adopt(end.spawn(&mut cmd).unwrap(), "receiver".into());
    drop(conn);
    assert_eq!(p.line(LONG), "gone");
    p.expect_success();
}

/// Reads length-prefixed frames from `r` on a thread; they arrive on the channel.
fn frames_from(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        let mut header = [0u8; 4];
        if r.read_exact(&mut header).is_err() {
            return;
        }
        let mut body = vec![0; u32::from_le_bytes(header) as usize];
        if r.read_exact(&mut body).is_err() || tx.send(body).is_err() {
            return;
        }
    });
    rx
}

fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

/// Without an inherited pipe, `pipe:` is stdin/stdout with the same framing.
#[test]
fn pipe_url_over_stdio() {
    let child = Command::new(PEER_BIN)
        .args(["connect", "pipe:", "hello", "echo"])
        .env_remove(ipckit::pipe::ENV_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let mut stdin = child.stdin.take().unwrap();
    let frames = frames_from(child.stdout.take().unwrap());
    let mut p = Peer::adopt(child, "stdio echo".into());
    assert_eq!(frames.recv_timeout(LONG).expect("hello frame"), b"hello");
    for (i, size) in [0, 1, 64, 4096, 100_000].into_iter().enumerate() {
        stdin.write_all(&frame(&pattern(i, size))).unwrap();
        let back = frames.recv_timeout(LONG).expect("echo frame");
        assert_pattern(&back, i, size, "stdio");
    }
    drop(stdin); // end of input: the child's echo loop sees Disconnected
    p.expect_success();
}

/// A child killed while the parent is blocked sending to it: the parent's send ends with
/// `Disconnected`, not a hang (the pipe buffer is full, then the reader vanishes).
#[test]
fn parent_blocked_in_send_when_child_dies() {
    let (mut conn, end) = ipckit::pipe::to_child().unwrap();
    let mut cmd = Peer::command(&["connect", "pipe:", "print:up", "hold"]);
    let mut p = Peer::adopt(end.spawn(&mut cmd).unwrap(), "holder".into());
    assert_eq!(p.line(LONG), "up");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        p.kill();
        p
    });
    // 1 MiB does not fit in a pipe: this blocks until the child dies.
    let r = bounded("send to a dying child", LONG, || {
        conn.send_timeout(&pattern(0, 1 << 20), LONG)
    });
    let _p = killer.join().unwrap();
    match r {
        // The partial frame counts as sent; the next send sees the broken pipe.
        Ok(()) => assert!(matches!(
            conn.send_timeout(b"x", LONG),
            Err(Error::Disconnected)
        )),
        Err(Error::Disconnected) => {}
        Err(e) => panic!("send to a child killed meanwhile: {e:?}"),
    }
}
