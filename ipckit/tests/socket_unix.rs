//! Unix sockets beyond the conformance suite: the longest socket paths, where datagram
//! clients put their own socket file, and which file a listener removes.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ipckit::{Error, MessageReceiver, MessageSender, UrlError};

const SCHEMES: [&str; 3] = ["unix", "unix+dgram", "unix+seqpacket"];

/// A path in `dir` of exactly `len` bytes.
fn path_of_len(dir: &Path, len: usize) -> PathBuf {
    let prefix = format!("{}/", dir.display());
    assert!(prefix.len() < len, "tempdir too long");
    PathBuf::from(format!("{prefix}{}", "s".repeat(len - prefix.len())))
}

/// Client files of datagram sockets in the temporary directory, for this process.
fn own_temp_client_files() -> Vec<String> {
    let prefix = format!("ipckit-{}-", std::process::id());
    dir_entries(&std::env::temp_dir())
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// 107 bytes (the most `sun_path` holds with its NUL) bind, connect and carry messages; 108
/// is `PathTooLong`. Datagram clients leave no file anywhere.
#[test]
fn longest_socket_path() {
    for scheme in SCHEMES {
        let dir = tempdir();
        let path = path_of_len(dir.path(), 107);
        let url = format!("{scheme}://{}", path.display());
        let mut l = ipckit::bind(&url).unwrap_or_else(|e| panic!("{scheme}: bind: {e:?}"));
        let mut c = ipckit::connect_timeout(&url, LONG).expect("connect");
        c.send_timeout(b"long", LONG).expect("send");
        let mut s = l.accept_timeout(LONG).expect("accept");
        assert_eq!(s.recv_timeout(LONG).expect("recv"), b"long");
        s.send_timeout(b"reply", LONG).expect("reply");
        assert_eq!(c.recv_timeout(LONG).expect("reply"), b"reply");
        assert_eq!(own_temp_client_files(), Vec::<String>::new(), "{scheme}");
        drop((c, s, l));
        assert_eq!(dir_entries(dir.path()), Vec::<String>::new(), "{scheme}");
        assert_eq!(own_temp_client_files(), Vec::<String>::new(), "{scheme}");

        let too_long = format!("{scheme}://{}", path_of_len(dir.path(), 108).display());
        match ipckit::bind(&too_long) {
            Err(Error::Url(UrlError::PathTooLong {
                len: 108, max: 107, ..
            })) => {}
            other => panic!("{scheme}: 108-byte path: {other:?}"),
        }
    }
}

/// A datagram client gets an automatic address for replies: no file appears beside the
/// server's, none stays when the client is killed, and replies to a dead client are refused,
/// typed.
#[test]
fn datagram_clients_leave_no_files() {
    let dir = tempdir();
    let url = format!("unix+dgram://{}/srv", dir.path().display());
    let mut l = ipckit::bind(&url).unwrap();
    let mut server = l.accept_timeout(LONG).unwrap();
    {
        let mut c = ipckit::connect_timeout(&url, LONG).unwrap();
        assert_eq!(dir_entries(dir.path()), ["srv"], "no client file");
        c.send_timeout(b"hi", LONG).unwrap();
        assert_eq!(server.recv_timeout(LONG).unwrap(), b"hi");
        server.send_timeout(b"back", LONG).unwrap();
        assert_eq!(c.recv_timeout(LONG).unwrap(), b"back");
    }
    let mut p = Peer::spawn(&["connect", &url, "hello", "hold"]);
    assert_eq!(server.recv_timeout(LONG).unwrap(), b"hello");
    p.kill();
    assert_eq!(
        dir_entries(dir.path()),
        ["srv"],
        "nothing left by a killed client"
    );
    assert!(matches!(
        server.send_timeout(b"anyone?", LONG),
        Err(Error::Disconnected)
    ));
    let mut p = Peer::spawn(&["connect", &url, "hello", "linger"]);
    assert_eq!(server.recv_timeout(LONG).unwrap(), b"hello");
    server.send_timeout(b"bye", LONG).unwrap();
    p.expect_success();
}

/// A listener removes its socket file only if it is still the file it created.
#[test]
fn listener_removes_only_its_own_file() {
    for scheme in SCHEMES {
        let dir = tempdir();
        let path = dir.path().join("s");
        let url = format!("{scheme}://{}", path.display());
        let first = ipckit::bind(&url).unwrap();
        std::fs::remove_file(&path).unwrap();
        let second = ipckit::bind(&url).expect("bind after the file was removed");
        drop(first);
        assert!(
            path.exists(),
            "{scheme}: the first listener removed the second's file"
        );
        drop(second);
        assert!(!path.exists(), "{scheme}");
    }
}

/// Modes are applied after creation, so the umask does not matter: 0666 stays 0666.
#[test]
fn mode_is_not_masked_by_umask() {
    for scheme in SCHEMES {
        let dir = tempdir();
        let path = dir.path().join("s");
        let _l = ipckit::bind(format!("{scheme}://{}?mode=0666", path.display())).unwrap();
        assert_eq!(mode_of(&path), 0o666, "{scheme}");
    }
}
