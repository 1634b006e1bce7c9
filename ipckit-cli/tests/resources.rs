//! `ipckit ls`, `ipckit rm` and `ipckit doctor` run as real processes against segments this
//! test creates. Other tests may create ipckit segments at the same time, so only our own
//! names (which carry this process's id) are asserted on, and `rm --stale` is given a
//! `--prefix` of this process's names: plain `rm --stale` would remove any unheld segment,
//! another test's (or another copy of this test's) included.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run_ipckit, Finished};

use ipckit::shm::Segment;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `ipckit ARGS` to completion or [`LIMIT`].
fn run(args: &[&str]) -> Finished {
    run_ipckit(args, b"", LIMIT)
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

/// A segment name unique to this process and test.
fn unique(tag: &str) -> String {
    format!("cli-resources-{tag}-{}", std::process::id())
}

fn exists(name: &str) -> bool {
    Path::new(&format!("/dev/shm/ipckit.{name}")).exists()
}

/// Removes the named segments when dropped, whatever happened to the test.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = ipckit::shm::remove(name);
        }
    }
}

/// The `ls --json` object named `name`, if listed.
fn json_entry(name: &str) -> Option<serde_json::Value> {
    let f = run(&["ls", "--json"]);
    ok(&f, "ls --json");
    f.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object a line"))
        .find(|v| v["type"] == "shm" && v["name"] == name)
}

#[test]
fn ls_shows_a_live_segment_in_use() {
    let name = unique("ls");
    let _cleanup = Cleanup(vec![name.clone()]);
    let seg = Segment::builder(&name).size(64).create().unwrap();

    let f = run(&["ls"]);
    ok(&f, "ls");
    let row = f
        .stdout
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("{name} not in the table:\n{}", f.stdout));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "data", "{row}");
    assert!(cols.contains(&"yes"), "not shown in use: {row}");
    assert!(
        cols.contains(&std::process::id().to_string().as_str()),
        "no creator pid: {row}"
    );

    let v = json_entry(&name).expect("listed by ls --json");
    assert_eq!(v["kind"], "data");
    assert_eq!(v["size"], 64);
    assert_eq!(v["in_use"], true);
    assert_eq!(v["creator_pid"], std::process::id());
    assert!(v["age_s"].as_f64().unwrap() >= 0.0);
    drop(seg);
    assert!(!exists(&name));
}

#[test]
fn rm_stale_removes_unheld_segments_and_keeps_live_ones() {
    let ours = unique("rm-stale");
    let live_name = format!("{ours}-live");
    let stale_name = format!("{ours}-stale");
    let _cleanup = Cleanup(vec![live_name.clone(), stale_name.clone()]);
    let live = Segment::builder(&live_name).size(64).create().unwrap();
    // Kept and dropped: the name stays with no process holding it, as a crashed process
    // leaves it.
    let mut stale = Segment::builder(&stale_name).size(64).create().unwrap();
    stale.keep();
    drop(stale);
    assert!(exists(&stale_name));

    let v = json_entry(&stale_name).expect("the stale segment is listed");
    assert_eq!(v["in_use"], false);

    let f = run(&["rm", "--stale", "--prefix", &ours]);
    ok(&f, "rm --stale --prefix");
    assert_eq!(f.stdout.lines().count(), 1, "{}", f.stdout);
    assert!(
        f.stdout
            .lines()
            .any(|l| l == format!("removed {stale_name}")),
        "{}",
        f.stdout
    );
    assert!(
        !f.stdout.contains(&live_name),
        "removed a live segment: {}",
        f.stdout
    );
    assert!(!exists(&stale_name));
    assert!(exists(&live_name));
    assert_eq!(
        json_entry(&live_name).expect("still listed")["in_use"],
        true
    );
    assert!(json_entry(&stale_name).is_none());
    drop(live);
    assert!(!exists(&live_name));

    // Nothing of ours left: said on stderr, success all the same.
    let f = run(&["rm", "--stale", "--prefix", &ours]);
    ok(&f, "rm --stale --prefix, nothing left");
    assert!(
        f.stdout.is_empty() && f.stderr.contains("no stale segments"),
        "{f:?}"
    );
    // A prefix is part of a name: no '/'; and it needs --stale.
    let f = run(&["rm", "--stale", "--prefix", "a/b"]);
    assert!(!f.status.success() && f.stderr.contains("'/'"), "{f:?}");
    let f = run(&["rm", "--prefix", &ours]);
    assert!(!f.status.success() && f.stderr.contains("--stale"), "{f:?}");
}

#[test]
fn rm_refuses_foreign_names_and_segments_in_use() {
    // A /dev/shm object that is not ipckit's.
    let foreign = format!("not-ipckit-{}", std::process::id());
    let foreign_path = format!("/dev/shm/{foreign}");
    std::fs::write(&foreign_path, b"x").unwrap();
    struct RemoveFile(String);
    impl Drop for RemoveFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _foreign_guard = RemoveFile(foreign_path.clone());
    let f = run(&["rm", &foreign]);
    assert!(!f.status.success(), "rm of a foreign object succeeded");
    assert!(f.stderr.contains("not an ipckit segment"), "{}", f.stderr);
    assert!(Path::new(&foreign_path).exists());

    let missing = unique("missing");
    let f = run(&["rm", &missing]);
    assert!(!f.status.success(), "rm of a missing name succeeded");
    assert!(f.stderr.contains("not an ipckit segment"), "{}", f.stderr);

    // A segment in use: refused without --force, removed with it.
    let name = unique("held");
    let _cleanup = Cleanup(vec![name.clone()]);
    let seg = Segment::builder(&name).size(64).create().unwrap();
    let f = run(&["rm", &name]);
    assert!(!f.status.success(), "rm of a segment in use succeeded");
    assert!(f.stderr.contains("in use"), "{}", f.stderr);
    assert!(exists(&name));
    let f = run(&["rm", "--force", &name]);
    ok(&f, "rm --force");
    assert_eq!(f.stdout.trim(), format!("removed {name}"));
    assert!(!exists(&name));
    drop(seg);
}

#[test]
fn doctor_prints_the_limits() {
    let f = run(&["doctor"]);
    ok(&f, "doctor");
    for key in [
        "fs.mqueue.msg_max = ",
        "fs.mqueue.msgsize_max = ",
        "RLIMIT_MSGQUEUE = ",
        "/dev/shm size = ",
        "fs.pipe-max-size = ",
        "fs.pipe-user-pages-soft = ",
        "net.unix.max_dgram_qlen = ",
        "net.core.wmem_max = ",
        "RLIMIT_NOFILE = ",
        "CPUs available = ",
    ] {
        assert!(
            f.stdout.lines().any(|l| l.starts_with(key)),
            "no {key:?} line:\n{}",
            f.stdout
        );
    }
    let msgsize = f
        .stdout
        .lines()
        .find(|l| l.starts_with("fs.mqueue.msgsize_max = "))
        .unwrap();
    assert!(
        msgsize.contains("sysctl -w fs.mqueue.msgsize_max="),
        "{msgsize}"
    );
}
