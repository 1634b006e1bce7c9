//! `ipckit bus pub|sub|req|ls` with a bus://zenoh URL: the `ipckit` command (main workspace,
//! no zenoh) runs this crate's `ipckit-zenoh-bus`, and prints and exits as on bus://local.
//!
//! `ipckit` is not a binary of this crate (nor of its workspace), so the test builds it from
//! the main workspace (`cargo build --locked -p ipckit-cli`) into `ipckit-workspace/` of this
//! crate's target directory, once per run (incremental). Every blocking call has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
/// A cold build of `ipckit` on a 2-CPU machine takes a few minutes.
const BUILD: Duration = Duration::from_secs(900);

/// Waits for `child` at most `limit` (killing it then): its exit code.
fn wait(child: &mut Child, limit: Duration, what: &str) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `ipckit` command, built from the main workspace.
fn ipckit() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("ipckit-zenoh sits in the ipckit repository");
        let target = Path::new(env!("CARGO_BIN_EXE_ipckit-zenoh-bus"))
            .parent()
            .and_then(Path::parent)
            .expect("the target directory")
            .join("ipckit-workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut child = Command::new(cargo)
            .args([
                "build",
                "--locked",
                "--quiet",
                "-p",
                "ipckit-cli",
                "--bin",
                "ipckit",
            ])
            .arg("--manifest-path")
            .arg(repo.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .stdout(Stdio::null())
            .spawn()
            .expect("run cargo");
        let code = wait(&mut child, BUILD, "building ipckit");
        assert_eq!(code, Some(0), "cargo build -p ipckit-cli failed");
        target.join("debug").join("ipckit")
    })
}

/// PATH with the directory of `ipckit-zenoh-bus` (where `ipckit` looks for it) first.
fn path_with_helper() -> std::ffi::OsString {
    let dir = Path::new(env!("CARGO_BIN_EXE_ipckit-zenoh-bus"))
        .parent()
        .unwrap()
        .to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).unwrap()
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `ipckit ARGS` (standard input: `stdin`) to completion within `T`.
fn run(args: &[&str], stdin: &str, path: &std::ffi::OsStr) -> Out {
    let mut child = Command::new(ipckit())
        .args(args)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ipckit");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let code = wait(&mut child, T, &format!("ipckit {args:?}"));
    let (stdout, stderr) = reader.join().unwrap();
    Out {
        code,
        stdout,
        stderr,
    }
}

/// A running `ipckit bus sub`, its stdout lines on a channel.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    fn spawn(args: &[&str], path: &std::ffi::OsStr) -> Sub {
        let mut child = Command::new(ipckit())
            .args(args)
            .env("PATH", path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run ipckit bus sub");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Sub { child, lines }
    }

    /// Its lines until it exits (within `T`), and its exit code.
    fn finish(mut self) -> (Vec<String>, Option<i32>) {
        let code = wait(&mut self.child, T, "ipckit bus sub");
        (self.lines.iter().collect(), code)
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the same commands print on `url`, where `ready(pattern)` returns once a subscriber
/// of the pattern is there: (sub's lines and exit code, req's output, the output of a req
/// nobody serves and of a sub that times out).
fn session(url: &str, ready: impl Fn(&str), path: &std::ffi::OsStr) -> Vec<String> {
    let mut seen = Vec::new();
    let sub = Sub::spawn(
        &[
            "bus",
            "sub",
            url,
            "cli/**",
            "--count",
            "3",
            "--timeout",
            "20",
        ],
        path,
    );
    ready("cli/**");
    let o = run(
        &["bus", "pub", url, "cli/a", "hello", "--wait", "5"],
        "",
        path,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = run(
        &["bus", "pub", url, "cli/b", "-", "--wait", "5"],
        "x\ny\n",
        path,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let (lines, code) = sub.finish();
    seen.push(format!("sub: {code:?} {lines:?}"));

    let o = run(
        &[
            "bus",
            "sub",
            url,
            "none/*",
            "-q",
            "--count",
            "2",
            "--timeout",
            "0.3",
        ],
        "",
        path,
    );
    seen.push(format!(
        "sub timeout: {:?} {:?} {}",
        o.code, o.stdout, o.stderr
    ));

    let o = run(
        &["bus", "req", url, "svc/echo", "hi", "--timeout", "10"],
        "",
        path,
    );
    seen.push(format!("req: {:?} {:?} {:?}", o.code, o.stdout, o.stderr));
    let o = run(
        &["bus", "req", url, "svc/none", "x", "--timeout", "1"],
        "",
        path,
    );
    // The reason's address names the backend: compare up to it.
    let why = o.stderr.split(':').take(3).collect::<Vec<_>>().join(":");
    seen.push(format!("req none: {:?} {:?} {why}", o.code, o.stdout));
    seen
}

#[test]
fn pub_sub_req_ls_over_zenoh_print_as_on_local() {
    let pid = std::process::id();
    let path = path_with_helper();

    // bus://local: the reference.
    let local = format!("bus://local/zcli-{pid}");
    let lbus = ipckit::bus::Bus::open(&local).unwrap();
    let _lecho = lbus
        .serve("svc/echo", |m| [b"echo:", m.payload()].concat())
        .unwrap();
    let lready = |pattern: &str| {
        let t0 = Instant::now();
        while !lbus
            .peers()
            .iter()
            .any(|p| p.subscribes.iter().any(|s| s == pattern))
        {
            assert!(t0.elapsed() < T, "no local subscriber of {pattern}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let want = session(&local, lready, &path);

    // bus://zenoh: this process is the router the commands connect to.
    let sock = std::env::temp_dir().join(format!("ipckit-zenoh-cli-{pid}.sock"));
    let _ = std::fs::remove_file(&sock);
    let ep = format!("unixsock-stream/{}", sock.display());
    let zbus =
        ipckit_zenoh::Bus::open(&format!("bus://zenoh/zcli?listen={ep}&mode=router")).unwrap();
    let _zecho = zbus
        .serve("svc/echo", |m| [b"echo:", m.payload()].concat())
        .unwrap();
    let zready = |pattern: &str| {
        zbus.wait_for(|p| p.subscribes.iter().any(|s| s == pattern), T)
            .unwrap_or_else(|e| panic!("no zenoh subscriber of {pattern}: {e}"));
    };
    // Clients of the router: zenoh routes for clients (peers that cannot reach each other
    // directly would see each other's liveliness through the router, but not their data).
    let zurl = format!("bus://zenoh/zcli?connect={ep}&mode=client");
    let got = session(&zurl, zready, &path);
    assert_eq!(got, want);
    assert!(
        want[0].contains(r#"["cli/a\thello", "cli/b\tx", "cli/b\ty"]"#),
        "{want:?}"
    );
    assert!(want[2].contains("\"echo:hi\\n\""), "{want:?}");

    // ls: the router and what it serves (the asking node left out).
    let o = run(&["bus", "ls", &zurl], "", &path);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.starts_with("1 live node(s)\n"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!("{:016x}", zbus.node_id())),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("svc/echo"), "{}", o.stdout);
    drop((_zecho, zbus));
    // A peer (a client needs its router) finds nobody.
    let peer = format!("bus://zenoh/zcli?connect={ep}");
    let o = run(&["bus", "ls", &peer], "", &path);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout, format!("no live node on {peer}\n"));
    ipckit::bus::remove_stale(Some(&format!("zcli-{pid}")));
}

#[test]
fn without_ipckit_zenoh_bus_ipckit_says_how_to_install_it() {
    let empty = std::env::temp_dir().join(format!("ipckit-zenoh-nopath-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(
        &["bus", "ls", "bus://zenoh?connect=tcp/127.0.0.1:9"],
        "",
        empty.as_os_str(),
    );
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("cargo install --path ipckit-zenoh --bin ipckit-zenoh-bus"),
        "{}",
        o.stderr
    );
    // Its own arguments it cannot read: 2, with its usage.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipckit-zenoh-bus"))
        .args(["serve", "bus://zenoh"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait(&mut child, T, "ipckit-zenoh-bus"), Some(2));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("usage: ipckit-zenoh-bus"), "{err}");
    let _ = std::fs::remove_dir(&empty);
}
