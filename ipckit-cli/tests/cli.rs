//! End-to-end tests of the `ipckit` binary: real processes, real endpoints. Every wait is
//! bounded; a process still running at its deadline is killed and the test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ipckit");

/// Longest any ipckit process may run in these tests (generous: the machine has 2 cores and
/// tests run in parallel).
const LIMIT: Duration = Duration::from_secs(60);

/// An `ipckit` command with no input and its output captured.
fn ipckit(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// How a finished process ended.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// A running process whose output is collected in the background.
struct Running {
    what: String,
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<String>>,
    stderr_lines: Receiver<String>,
    feeder: Option<JoinHandle<()>>,
}

impl Running {
    /// Spawns `cmd`, writing `input` to its standard input if given.
    fn start(cmd: &mut Command, input: Option<&[u8]>) -> Running {
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let child = cmd.spawn().expect("spawn ipckit");
        Running::watch(child, format!("{cmd:?}"), input)
    }

    /// Collects whatever pipes `child` still has.
    fn watch(mut child: Child, what: String, input: Option<&[u8]>) -> Running {
        let feeder = match (input, child.stdin.take()) {
            (Some(data), Some(mut stdin)) => {
                let data = data.to_vec();
                Some(std::thread::spawn(move || {
                    let _ = stdin.write_all(&data);
                }))
            }
            _ => None,
        };
        let stdout = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = out.read_to_end(&mut bytes);
                bytes
            })
        });
        let (tx, stderr_lines) = mpsc::channel();
        let stderr = child.stderr.take().map(|err| {
            std::thread::spawn(move || {
                let mut all = String::new();
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    all.push_str(&line);
                    all.push('\n');
                }
                all
            })
        });
        Running {
            what,
            child,
            stdout,
            stderr,
            stderr_lines,
            feeder,
        }
    }

    /// Waits for the "ipckit: listening on URL" line and returns the URL.
    fn listening_url(&self) -> String {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix("ipckit: listening on ") {
                    Some(url) => return url.to_owned(),
                    None => seen.push(line),
                },
                Err(_) => break,
            }
        }
        panic!("{}: no 'listening on' line; stderr: {seen:?}", self.what);
    }

    /// Waits for the process to exit, killing it (and failing) after [`LIMIT`].
    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} still running after {LIMIT:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(f) = self.feeder.take() {
            f.join().unwrap();
        }
        Finished {
            status,
            stdout: self
                .stdout
                .take()
                .map(|t| t.join().unwrap())
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|t| t.join().unwrap())
                .unwrap_or_default(),
        }
    }
}

/// Runs `ipckit ARGS` with `input` on standard input, to completion.
fn run(args: &[&str], input: Option<&[u8]>) -> Finished {
    Running::start(&mut ipckit(args), input).finish()
}

fn assert_success(f: &Finished, what: &str) {
    assert!(
        f.status.success(),
        "{what} failed ({}): {}",
        f.status,
        f.stderr
    );
}

/// `recv URL --count 2` in one process, `send` of two lines in another; `recv` binds (and
/// reports the real address), `send` connects.
fn two_lines_through(url: &str) {
    let recv = Running::start(
        &mut ipckit(&["recv", url, "--count", "2", "--timeout", "10"]),
        None,
    );
    let bound = recv.listening_url();
    let send = run(&["send", &bound], Some(b"hello\nworld\n"));
    assert_success(&send, "send");
    let recv = recv.finish();
    assert_success(&recv, "recv");
    assert_eq!(recv.stdout, b"hello\nworld\n", "through {bound}");
}

fn in_temp_dir(scheme: &str, name: &str, test: impl FnOnce(&str)) {
    let dir = tempfile::tempdir().unwrap();
    test(&format!("{scheme}://{}/{name}", dir.path().display()));
}

#[test]
fn fifo_carries_lines() {
    in_temp_dir("fifo", "test.fifo", two_lines_through);
}

#[test]
fn unix_carries_lines() {
    in_temp_dir("unix", "test.sock", two_lines_through);
}

#[test]
fn unix_dgram_carries_lines() {
    in_temp_dir("unix+dgram", "test.sock", two_lines_through);
}

#[test]
fn unix_seqpacket_carries_lines() {
    in_temp_dir("unix+seqpacket", "test.sock", two_lines_through);
}

#[test]
fn tcp_carries_lines() {
    two_lines_through("tcp://127.0.0.1:0");
}

#[test]
fn udp_carries_lines() {
    two_lines_through("udp://127.0.0.1:0");
}

#[test]
fn pipe_carries_lines_from_send_stdout_to_recv_stdin() {
    let mut send_cmd = ipckit(&["send", "pipe:"]);
    send_cmd.stdin(Stdio::piped());
    let mut send = send_cmd.spawn().expect("spawn send");
    let framed = send.stdout.take().expect("send's stdout");
    let recv = Running::start(
        ipckit(&["recv", "pipe:", "--count", "2", "--timeout", "10"]).stdin(Stdio::from(framed)),
        None,
    );
    let send = Running::watch(send, "send pipe:".into(), Some(b"hello\nworld\n")).finish();
    assert_success(&send, "send");
    let recv = recv.finish();
    assert_success(&recv, "recv");
    assert_eq!(recv.stdout, b"hello\nworld\n");
}

#[test]
fn message_argument_and_raw_mode_are_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("unix://{}/raw.sock", dir.path().display());
    let recv = Running::start(
        &mut ipckit(&["recv", &url, "--count", "2", "--raw", "--timeout", "10"]),
        None,
    );
    recv.listening_url();
    let send = run(&["send", &url, "--raw"], Some(b"two\nlines\n\x00\xff"));
    assert_success(&send, "send --raw");
    let send = run(&["send", &url, "hi there"], None);
    assert_success(&send, "send MESSAGE");
    let recv = recv.finish();
    assert_success(&recv, "recv --raw");
    assert_eq!(recv.stdout, b"two\nlines\n\x00\xffhi there");
}

/// `send --bind` and `recv --connect`: the roles flipped, including datagram endpoints where
/// the bound sender waits for the receiver's announcement.
fn two_lines_with_roles_flipped(url: &str) {
    let send = Running::start(
        &mut ipckit(&["send", "--bind", url]),
        Some(b"hello\nworld\n"),
    );
    let bound = send.listening_url();
    let recv = run(
        &[
            "recv",
            "--connect",
            &bound,
            "--count",
            "2",
            "--timeout",
            "10",
        ],
        None,
    );
    assert_success(&recv, "recv --connect");
    assert_eq!(recv.stdout, b"hello\nworld\n", "through {bound}");
    assert_success(&send.finish(), "send --bind");
}

#[test]
fn roles_flip_on_stream_and_datagram_endpoints() {
    in_temp_dir("unix+dgram", "flip.sock", two_lines_with_roles_flipped);
    in_temp_dir("unix", "flip.sock", two_lines_with_roles_flipped);
    two_lines_with_roles_flipped("udp://127.0.0.1:0");
    two_lines_with_roles_flipped("tcp://127.0.0.1:0");
}

#[test]
fn bad_urls_fail_with_a_helpful_message() {
    let f = run(&["recv", "carrier-pigeon://x", "--count", "1"], None);
    assert!(!f.status.success());
    assert!(f.stderr.contains("unknown scheme"), "{}", f.stderr);
    assert!(f.stderr.contains("unix:///tmp/my.sock"), "{}", f.stderr);
    let f = run(&["send", "tcp://127.0.0.1", "hi"], None);
    assert!(!f.status.success());
    assert!(f.stderr.contains("has no port"), "{}", f.stderr);
}

#[test]
fn runtime_errors_exit_non_zero_with_the_library_message() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("unix://{}/nobody.sock", dir.path().display());
    let f = run(&["send", &nobody, "hi", "--timeout", "0.2"], None);
    assert_eq!(f.status.code(), Some(1));
    assert!(f.stderr.contains("nobody is listening"), "{}", f.stderr);

    let f = run(&["recv", &nobody, "--count", "1", "--timeout", "0.2"], None);
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stderr.contains("timed out after 0 of 1 messages"),
        "{}",
        f.stderr
    );

    let fifo = format!("fifo://{}/f", dir.path().display());
    let f = run(&["send", "--bind", &fifo, "hi"], None);
    assert!(!f.status.success());
    assert!(f.stderr.contains("one way"), "{}", f.stderr);
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        &["--help"][..],
        &["send", "--help"],
        &["recv", "--help"],
        &["bench", "--help"],
    ] {
        let f = run(args, None);
        assert_success(&f, &format!("{args:?}"));
        assert!(String::from_utf8_lossy(&f.stdout).contains("Usage"));
    }
    let top = run(&["--help"], None);
    assert!(!String::from_utf8_lossy(&top.stdout).contains("bench-peer"));
}

/// `n` numbered lines, "1\n" to "n\n".
fn numbered_lines(n: usize) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// `bus sub URL t/** --count N` started, then `bus pub URL t/x -` of `n` numbered lines
/// (waiting up to 20 s for the subscriber, lingering up to `linger` s); the publisher must
/// succeed. The subscriber's end.
fn bus_lines_through(url: &str, n: usize, sub_timeout: &str, linger: &str) -> Finished {
    let count = n.to_string();
    let sub = Running::start(
        &mut ipckit(&[
            "bus",
            "sub",
            url,
            "t/**",
            "-q",
            "--count",
            &count,
            "--timeout",
            sub_timeout,
        ]),
        None,
    );
    let publ = run(
        &[
            "bus", "pub", url, "t/x", "-", "--wait", "20", "--linger", linger,
        ],
        Some(&numbered_lines(n)),
    );
    assert_success(&publ, "bus pub");
    sub.finish()
}

/// `bus pub` waits for the subscriber to be seen and stays until it has read every message:
/// with a `block` subscription nothing is lost, in order.
#[test]
fn bus_pub_waits_for_its_subscriber_and_stays_until_all_is_read() {
    let url = format!(
        "bus://local/cli-all-{}?overflow=block&depth=256",
        std::process::id()
    );
    let sub = bus_lines_through(&url, 300, "30", "20");
    assert_success(&sub, "bus sub");
    assert_eq!(sub.stdout, numbered_lines(300), "every message, in order");
}

/// A subscription that overflows (drop-oldest, depth 1) accounts for every message: each is
/// printed or counted in the "messages dropped" line, also when `sub` ends short of --count.
#[test]
fn bus_sub_reports_what_its_full_subscription_dropped() {
    let url = format!("bus://local/cli-drop-{}?depth=1", std::process::id());
    let n = 2000;
    let sub = bus_lines_through(&url, n, "3", "5");
    let got = String::from_utf8_lossy(&sub.stdout).lines().count();
    if got == n {
        assert_success(&sub, "bus sub");
        assert!(!sub.stderr.contains("dropped"), "{}", sub.stderr);
    } else {
        assert!(!sub.status.success(), "short of --count: {}", sub.stderr);
        let dropped = format!("ipckit: {} messages dropped", n - got);
        assert!(
            sub.stderr.contains(&dropped),
            "{got} printed: {}",
            sub.stderr
        );
    }
}

const ALL_MECHS: [&str; 7] = [
    "pipe",
    "fifo",
    "unix",
    "unix-dgram",
    "unix-seqpacket",
    "tcp",
    "udp",
];

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The rows of one short `ipckit bench --json` run (one repeat, 0.1 s streams), which must
/// succeed.
fn bench_rows(mechs: &str, sizes: &str, iters: &str) -> Vec<serde_json::Value> {
    let args = [
        "bench",
        "--json",
        "--mech",
        mechs,
        "--size",
        sizes,
        "--iters",
        iters,
        "--duration",
        "0.1",
        "--repeat",
        "1",
    ];
    let f = run(&args, None);
    assert_success(&f, "bench");
    json_lines(&f.stdout)
}

#[test]
fn bench_measures_every_mechanism() {
    let mechs = ALL_MECHS.join(",");
    let f = run(
        &[
            "bench",
            "--json",
            "--mech",
            &mechs,
            "--size",
            "64",
            "--iters",
            "200",
            "--duration",
            "0.1",
        ],
        None,
    );
    assert_success(&f, "bench");
    let rows = json_lines(&f.stdout);
    assert_eq!(rows.len(), ALL_MECHS.len(), "{rows:?}");
    for (row, mech) in rows.iter().zip(ALL_MECHS) {
        assert_eq!(row["mech"], mech);
        assert_eq!(row["size"], 64);
        assert!(row.get("error").is_none(), "{row}");
        for key in [
            "rtt_ns_median",
            "rtt_ns_p99",
            "rtt_ns_p999",
            "msgs_per_s",
            "gbps",
        ] {
            let v = row[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} in {row}"));
            assert!(v > 0.0, "{key} in {row}");
        }
        assert!(row["rtt_ns_median"].as_u64() <= row["rtt_ns_p99"].as_u64());
        assert!(row["rtt_ns_p99"].as_u64() <= row["rtt_ns_p999"].as_u64());
        assert_eq!(row.get("drops").is_some(), mech == "udp", "{row}");
    }
}

#[test]
fn bench_measures_the_bus_and_its_fan_out() {
    let running = Running::start(
        &mut ipckit(&[
            "bench",
            "--json",
            "--mech",
            "bus-local,bus-fanout-2,bus-fanout-8",
            "--size",
            "64,4096",
            "--iters",
            "300",
            "--duration",
            "0.2",
            "--repeat",
            "1",
        ]),
        None,
    );
    let pid = running.child.id();
    let f = running.finish();
    assert_success(&f, "bench");
    let rows = json_lines(&f.stdout);
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in &rows {
        assert!(row.get("error").is_none(), "{row}");
        // Every subscriber got every message (block policy): the rate is a total.
        let rate = row["msgs_per_s"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{row}");
        let round_trip = row["rtt_ns_median"].as_u64();
        if row["mech"] == "bus-local" {
            assert!(round_trip.unwrap_or(0) > 0, "{row}");
            assert!(round_trip <= row["rtt_ns_p99"].as_u64(), "{row}");
        } else {
            assert!(
                round_trip.is_none(),
                "fan-out rows are a stream only: {row}"
            );
        }
    }
    // Nothing left behind in /dev/shm by the namespaces the run made.
    let ours = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(&format!("bench-{pid}-"))
        })
        .count();
    assert_eq!(ours, 0, "bus segments left in /dev/shm");
}

/// The in-place `shm://` rows check what they read (sequence numbers, trailers, the whole
/// payload of 1 in 1024 messages), so a row without an error is a row whose reads were right.
#[test]
fn bench_measures_shm_in_place_and_the_memcpy_yardstick() {
    let rows = bench_rows("shm-ref,shm-loan,memcpy", "64,65536", "1500");
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in &rows {
        assert!(row.get("error").is_none(), "{row}");
        assert!(row["msgs_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
        assert!(row["gbps"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
        if row["mech"] == "memcpy" {
            assert!(row["rtt_ns_median"].is_null(), "memcpy has no peer: {row}");
        } else {
            let median = row["rtt_ns_median"].as_u64().unwrap_or(0);
            assert!(median > 0, "{row}");
            assert!(row["rtt_ns_median"].as_u64() <= row["rtt_ns_p99"].as_u64());
        }
    }
}

/// `line`, the cache-line floor, is a round trip with no payload and no stream, at the
/// smallest size only; the report sets the shm rows against it.
#[test]
fn bench_measures_the_cache_line_floor() {
    let rows = bench_rows("line,shm-spin", "64,4096", "2000");
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in rows.iter().filter(|r| r["mech"] == "line") {
        assert!(row.get("error").is_none(), "{row}");
        if row["size"] == 4096 {
            assert!(
                row["skipped"].as_str().unwrap().contains("no payload"),
                "{row}"
            );
            continue;
        }
        let median = row["rtt_ns_median"].as_u64().unwrap_or(0);
        assert!(median > 0, "{row}");
        assert!(row["rtt_ns_median"].as_u64() <= row["rtt_ns_p99"].as_u64());
        assert!(row["msgs_per_s"].is_null(), "no stream: {row}");
    }
}

#[test]
fn bench_measures_rpc_and_signal_round_trips() {
    let rows = bench_rows("rpc-unix,rpc-shm,signal", "64,4096", "300");
    assert_eq!(rows.len(), 6, "{rows:?}");
    for row in &rows {
        assert!(row.get("error").is_none(), "{row}");
        if row["mech"] == "signal" && row["size"] == 4096 {
            assert!(row["skipped"].as_str().unwrap().contains("no payload"));
            continue;
        }
        let median = row["rtt_ns_median"].as_u64().unwrap_or(0);
        assert!(median > 0, "{row}");
        assert!(row["rtt_ns_median"].as_u64() <= row["rtt_ns_p99"].as_u64());
    }
}

/// The default sizes include 1 MiB, more than a pipe holds: every byte-stream transport
/// carries it. (A FIFO peer used to wait out its accept: a blocking write larger than the
/// pipe is reported to inotify only when it returns, `sys::fifo::Watch::sleep`.)
#[test]
fn bench_carries_a_mebibyte_on_every_stream() {
    let rows = bench_rows("pipe,fifo,unix,tcp", "1048576", "20");
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        assert!(row.get("error").is_none(), "{row}");
        assert!(row["rtt_ns_median"].as_u64().unwrap_or(0) > 0, "{row}");
        assert!(row["msgs_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
    }
}

#[test]
fn bench_skips_what_a_mechanism_cannot_carry() {
    let f = run(
        &[
            "bench", "--json", "--mech", "udp", "--size", "1M", "--iters", "10",
        ],
        None,
    );
    assert_success(&f, "bench");
    let rows = json_lines(&f.stdout);
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["skipped"].as_str().unwrap().contains("65507"));
    assert!(rows[0]["rtt_ns_median"].is_null() && rows[0]["gbps"].is_null());

    let table = run(&["bench", "--mech", "udp", "--size", "1M"], None);
    assert_success(&table, "bench (table)");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("rtt_med_ns") && text.contains("skipped: "),
        "{text}"
    );
}

#[test]
fn bench_rejects_sizes_too_small_to_number() {
    let f = run(&["bench", "--size", "64,8"], None);
    assert!(!f.status.success());
    assert!(f.stderr.contains("start at 16 bytes"), "{}", f.stderr);
}
