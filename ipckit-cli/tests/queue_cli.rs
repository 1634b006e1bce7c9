//! The `ipckit` binary with durable queues: `send`/`recv` on `queue://` (the sender needs no
//! receiver; `recv` acknowledges what it wrote out), `queue stat`, and the queue rows of
//! `bench`. Every process is bounded: killed and reaped at its deadline.

mod common;

use std::time::Duration;

use common::{run_ipckit, Finished};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `ipckit ARGS` with `input`, to completion or [`LIMIT`].
fn run(args: &[&str], input: &[u8]) -> Finished {
    run_ipckit(args, input, LIMIT)
}

#[track_caller]
fn ok(f: &Finished, what: &str) {
    assert!(
        f.status.success(),
        "{what} failed ({}): {}",
        f.status,
        f.stderr
    );
}

#[test]
fn send_then_recv_later_and_stat() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let url = format!("queue://{}?durability=os", q.display());
    // Nobody receives yet: the messages wait on disk.
    ok(&run(&["send", &url], b"one\ntwo\nthree\n"), "send");
    let first = run(
        &["recv", &url, "--count", "2", "--timeout", "10", "-q"],
        b"",
    );
    ok(&first, "recv");
    assert_eq!(first.stdout, "one\ntwo\n");
    // What recv wrote out is acknowledged: the next one starts after it.
    let second = run(
        &["recv", &url, "--count", "1", "--timeout", "10", "-q"],
        b"",
    );
    ok(&second, "recv");
    assert_eq!(second.stdout, "three\n");
    // Another group reads everything.
    let other = format!("{url}&group=audit");
    let audit = run(
        &["recv", &other, "--count", "3", "--timeout", "10", "-q"],
        b"",
    );
    ok(&audit, "recv as audit");
    assert_eq!(audit.stdout, "one\ntwo\nthree\n");
    let stat = run(&["queue", "stat", q.to_str().unwrap(), "--json"], b"");
    ok(&stat, "queue stat");
    let v: serde_json::Value = serde_json::from_str(stat.stdout.trim()).unwrap();
    assert_eq!(v["last_seq"], 3);
    assert_eq!(v["segments"].as_array().unwrap().len(), 1);
    assert_eq!(v["segments"][0]["records"], 3);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    for g in groups {
        assert_eq!(
            (g["committed"].as_u64(), g["depth"].as_u64()),
            (Some(4), Some(0)),
            "{g}"
        );
    }
    ok(&run(&["send", &url, "four"], b""), "send four");
    let text = run(&["queue", "stat", q.to_str().unwrap()], b"");
    ok(&text, "queue stat (text)");
    assert!(
        text.stdout.contains("last sequence number: 4"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("default"), "{}", text.stdout);
    let missing = run(
        &["queue", "stat", dir.path().join("nope").to_str().unwrap()],
        b"",
    );
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("does not exist"),
        "{}",
        missing.stderr
    );
}

#[test]
fn the_wrong_direction_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("queue://{}/q", dir.path().display());
    let f = run(&["send", "--bind", &url, "x"], b"");
    assert!(!f.status.success());
    assert!(f.stderr.contains("without --bind"), "{}", f.stderr);
    let f = run(&["recv", "--connect", &url, "--timeout", "1"], b"");
    assert!(!f.status.success());
    assert!(f.stderr.contains("without --connect"), "{}", f.stderr);
}

#[test]
fn bench_measures_both_durabilities_and_append_throughput() {
    let f = run(
        &[
            "bench",
            "--json",
            "--mech",
            "queue-os,queue-fsync",
            "--size",
            "64",
            "--iters",
            "200",
            "--duration",
            "0.2",
        ],
        b"",
    );
    ok(&f, "bench");
    let rows: Vec<serde_json::Value> = f
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}", r["mech"].as_str().unwrap(), r["producers"]))
        .collect();
    assert_eq!(
        names,
        [
            "queue-os/null",
            "queue-os-append/1",
            "queue-os-read/1",
            "queue-os-append/4",
            "queue-fsync/null",
            "queue-fsync-append/1",
            "queue-fsync-read/1",
            "queue-fsync-append/4"
        ]
    );
    for row in &rows {
        assert!(row.get("error").is_none(), "{row}");
        assert_eq!(row["size"], 64);
        assert!(row["msgs_per_s"].as_f64().unwrap() > 0.0, "{row}");
        if row.get("producers").is_some() {
            assert!(row["fdatasync_per_s"].as_f64().unwrap() > 0.0, "{row}");
        } else {
            assert!(row["rtt_ns_median"].as_u64().unwrap() > 0, "{row}");
        }
    }
}
