//! Fault injection (issue 9): 1,000 concurrent connections to one `unix://` and one
//! `tcp://` listener. Eight client threads open 125 connections each while the server
//! accepts; with all 1,000 open at once, every client sends one message and the server
//! echoes each; then everything closes and the descriptor count is back where it started.
//! The descriptor limit is raised within the test (each connection costs two descriptors).

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::LONG;
use ipckit::{MessageReceiver, MessageSender};

const CLIENTS: usize = 1000;
const THREADS: usize = 8;

fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
        assert!(
            r.rlim_cur >= want,
            "RLIMIT_NOFILE hard limit {} is below the {want} descriptors this test needs",
            r.rlim_max
        );
    }
}

fn run(url: &str) {
    raise_nofile(4 * CLIENTS as u64 + 256);
    let _guard = common::exclusive();
    let fds_before = common::fd_count();
    let mut listener = ipckit::bind(url).expect("bind");
    let url = listener.endpoint().to_string();
    // All connected before anyone sends; all echoed before anyone closes.
    let connected = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (url, connected, done) = (url.clone(), connected.clone(), done.clone());
            std::thread::spawn(move || {
                let mut conns: Vec<_> = (0..CLIENTS / THREADS)
                    .map(|i| {
                        ipckit::connect_timeout(url.as_str(), LONG)
                            .unwrap_or_else(|e| panic!("connection {t}/{i}: {e:?}"))
                    })
                    .collect();
                connected.wait();
                for (i, c) in conns.iter_mut().enumerate() {
                    c.send_timeout(format!("{t}/{i}").as_bytes(), LONG)
                        .expect("send");
                }
                let mut buf = Vec::new();
                for (i, c) in conns.iter_mut().enumerate() {
                    c.recv_into_timeout(&mut buf, LONG).expect("echo");
                    assert_eq!(buf, format!("{t}/{i}").as_bytes());
                }
                done.wait();
            })
        })
        .collect();
    let mut accepted: Vec<_> = (0..CLIENTS)
        .map(|i| {
            listener
                .accept_timeout(LONG)
                .unwrap_or_else(|e| panic!("accept {i}: {e:?}"))
        })
        .collect();
    connected.wait();
    assert!(
        common::fd_count() >= fds_before + 2 * CLIENTS,
        "not all connections are open at once"
    );
    let mut buf = Vec::new();
    for c in &mut accepted {
        c.recv_into_timeout(&mut buf, LONG).expect("recv");
        c.send_timeout(&buf, LONG).expect("echo");
    }
    done.wait();
    for c in clients {
        c.join().expect("client thread");
    }
    drop(accepted);
    drop(listener);
    // Closing is synchronous, but give the kernel's socket teardown a moment to settle.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(common::fd_count(), fds_before, "descriptors leaked");
}

#[test]
fn thousand_connections_unix() {
    let dir = common::tempdir();
    run(&format!("unix://{}/many.sock", dir.path().display()));
}

#[test]
fn thousand_connections_tcp() {
    run("tcp://127.0.0.1:0");
}
