//! The gateway on one machine: bus://local ⇄ ipckit-zenoh-gateway ⇄ bus://zenoh (a Unix
//! socket), both directions, each message delivered once on each side (no echo).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipckit::Error;

const T: Duration = Duration::from_secs(10);

struct Gateway {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Gateway {
    fn spawn(local: &str, zenoh: &str, topic: &str) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ipckit-zenoh-gateway"))
            .args(["--local", local, "--zenoh", zenoh, "--topic", topic])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the gateway");
        let out = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Gateway { child, lines }
    }

    fn expect(&self, line: &str) {
        let got = self.lines.recv_timeout(T).expect("a line from the gateway");
        assert_eq!(got, line);
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        const SIGTERM: i32 = 15;
        ipckit::signal::send(self.child.id(), SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + T;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn forwards_both_ways_once() {
    let pid = std::process::id();
    let local = format!("bus://local/gwlb-{pid}");
    let sock = std::env::temp_dir().join(format!("ipckit-zenoh-gw-{pid}.sock"));
    let _ = std::fs::remove_file(&sock);
    let ep = format!("unixsock-stream/{}", sock.display());
    let mut gw = Gateway::spawn(&local, &format!("bus://zenoh/gwlb?listen={ep}"), "gw/**");
    gw.expect("gateway ready");

    let zbus = ipckit_zenoh::Bus::open(&format!("bus://zenoh/gwlb?connect={ep}")).unwrap();
    let mut zsub = zbus.subscribe("gw/**").unwrap();
    gw.expect("zenoh subscriber gw/**");
    let lbus = ipckit::bus::Bus::open(&local).unwrap();
    let mut lsub = lbus.subscribe("gw/**").unwrap();

    // local → zenoh
    lbus.publish("gw/l2z", b"a").unwrap();
    let m = zsub.recv_timeout(T).unwrap();
    assert_eq!((m.topic(), m.payload()), ("gw/l2z", &b"a"[..]));
    assert_eq!(lsub.recv_timeout(T).unwrap().payload(), b"a"); // its own, once

    // zenoh → local (once the gateway's zenoh subscription has reached us)
    let me = zbus.node_id();
    zbus.wait_for(
        |p| p.node_id != me && p.subscribes.iter().any(|s| s == "gw/**"),
        T,
    )
    .unwrap();
    zbus.publish("gw/z2l", b"b").unwrap();
    let m = lsub.recv_timeout(T).unwrap();
    assert_eq!((m.topic(), m.payload()), ("gw/z2l", &b"b"[..]));
    assert_eq!(zsub.recv_timeout(T).unwrap().payload(), b"b"); // its own, once

    // Nothing comes back around.
    std::thread::sleep(Duration::from_millis(500));
    assert!(matches!(lsub.try_recv(), Err(Error::WouldBlock)));
    assert!(matches!(zsub.try_recv(), Err(Error::WouldBlock)));

    assert!(gw.terminate().success());
    ipckit::bus::remove_stale(Some(&format!("gwlb-{pid}")));
}

/// Runs the gateway with `args`, expecting it to exit within `T`: (exit code, stderr).
fn run_gateway(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipckit-zenoh-gateway"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not exit on {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code(), err)
}

#[test]
fn bad_arguments_are_refused() {
    let local = format!("bus://local/gwbad-{}", std::process::id());
    let (code, err) = run_gateway(&["--local", &local, "--zenoh", "bus://zenoh"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--topic"), "{err}");
    let (code, err) = run_gateway(&[
        "--local",
        &local,
        "--zenoh",
        "bus://zenoh?connect=udp/1.2.3.4:7447",
        "--topic",
        "a",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("connect"), "{err}");
}
