//! A `queue:///dir` that already exists is only used if nobody but us could have prepared it
//! (issue 9): owned by this user (or root) and not writable by its group or by everyone,
//! unless the URL's `?mode=` grants that access. Otherwise opening is
//! [`ipckit::Error::UnsafePermissions`].

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use ipckit::queue::{Consumer, Producer, QueueOptions};
use ipckit::Error;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn expect_unsafe(r: ipckit::Result<impl std::fmt::Debug>, what: &str) -> String {
    match r {
        Err(e @ Error::UnsafePermissions { .. }) => e.to_string(),
        other => panic!("{what}: expected UnsafePermissions, got {other:?}"),
    }
}

#[test]
fn a_directory_others_may_write_is_refused() {
    let dir = tempdir();
    let q = dir.path().join("q");
    let opts = QueueOptions::new();
    // Created by ipckit: fine, and still fine when reopened.
    Producer::open(&q, &opts).unwrap().send(b"one").unwrap();
    Producer::open(&q, &opts).unwrap();

    chmod(&q, 0o777);
    let msg = expect_unsafe(Producer::open(&q, &opts), "0777");
    assert!(msg.contains("writable by its group and everyone"), "{msg}");
    expect_unsafe(Consumer::open(&q, "g", &opts), "consumer, 0777");
    let url = format!("queue://{}", q.display());
    expect_unsafe(ipckit::connect(&url), "connect, 0777");
    expect_unsafe(ipckit::bind(&url), "bind, 0777");

    chmod(&q, 0o720);
    let msg = expect_unsafe(Producer::open(&q, &opts), "0720");
    assert!(msg.contains("writable by its group,"), "{msg}");
    // ... unless the URL grants the group write access itself.
    Producer::open(&q, &opts.clone().mode(0o660)).unwrap();
    ipckit::connect(format!("{url}?mode=0660")).unwrap();

    // The groups directory inside is checked too.
    chmod(&q, 0o700);
    chmod(&q.join("groups"), 0o777);
    expect_unsafe(Producer::open(&q, &opts), "groups 0777");
    chmod(&q.join("groups"), 0o700);
    Producer::open(&q, &opts).unwrap();
}

#[test]
fn a_symbolic_link_is_judged_by_its_target() {
    // /tmp is world-writable (sticky, owned by root): never a queue directory by default.
    let dir = tempdir();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/tmp", &link).unwrap();
    expect_unsafe(Producer::open(&link, &QueueOptions::new()), "link to /tmp");
}

/// Only as root (skipped otherwise): a directory another user owns is refused even if only
/// its owner may write it.
#[test]
fn a_directory_owned_by_another_user_is_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root to give a directory to another user");
        return;
    }
    let dir = tempdir();
    let q = dir.path().join("q");
    std::fs::create_dir(&q).unwrap();
    chmod(&q, 0o700);
    std::os::unix::fs::chown(&q, Some(65534), Some(65534)).unwrap();
    let msg = expect_unsafe(Producer::open(&q, &QueueOptions::new()), "owned by 65534");
    assert!(msg.contains("owned by uid 65534"), "{msg}");
    // Sharing with the group (?mode=0660) accepts a directory a group member made.
    chmod(&q, 0o770);
    Producer::open(&q, &QueueOptions::new().mode(0o660)).unwrap();
}
