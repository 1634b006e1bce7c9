//! `ipckit bus pub|sub|req|ls`: the publish/subscribe bus from the shell (the work is in
//! [`crate::bus_shell`]). For a `bus://zenoh` URL, and for `ipckit bus gateway`, it runs a
//! program of the ipckit-zenoh crate (`ipckit-zenoh-bus`, `ipckit-zenoh-gateway`): they
//! link zenoh, which ipckit does not.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::bus_shell::BusShell;
use crate::cli::{BusCommand, BusGatewayArgs};
use crate::error::CliError;

/// Runs `ipckit bus ...`.
pub fn run(cmd: BusCommand) -> Result<(), CliError> {
    let shell = match cmd {
        BusCommand::Pub(a) => BusShell::Pub {
            url: a.url,
            topic: a.topic,
            message: a.message,
            wait: a.wait,
            linger: a.linger,
        },
        BusCommand::Sub(a) => BusShell::Sub {
            url: a.url,
            pattern: a.pattern,
            count: a.count,
            timeout: a.timeout,
            quiet: a.quiet,
        },
        BusCommand::Req(a) => BusShell::Req {
            url: a.url,
            topic: a.topic,
            message: a.message,
            timeout: a.timeout,
        },
        BusCommand::Ls(a) => BusShell::Ls { url: a.url },
        BusCommand::Gateway(a) => return gateway(a),
    };
    if is_zenoh(shell.url()) {
        let mut cmd = std::process::Command::new(find_program(BUS)?);
        cmd.args(shell.to_args());
        return Err(exec(cmd, BUS));
    }
    shell.run()
}

/// Whether `url` is a `bus://zenoh` URL.
fn is_zenoh(url: &str) -> bool {
    url.strip_prefix("bus://")
        .and_then(|r| r.split(['/', '?']).next())
        == Some("zenoh")
}

/// The program `ipckit bus gateway` runs.
const GATEWAY: &str = "ipckit-zenoh-gateway";
/// The program `ipckit bus pub|sub|req|ls` run for a `bus://zenoh` URL.
const BUS: &str = "ipckit-zenoh-bus";

/// Where `program` is: in `exe_dir` (next to `ipckit`), else in a directory of `path`.
fn find_in(program: &str, exe_dir: Option<&Path>, path: Option<&OsStr>) -> Option<PathBuf> {
    let beside = exe_dir.map(|d| d.join(program)).filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::split_paths(path?)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// Where `program` (of the ipckit-zenoh crate) is, or how to install it.
fn find_program(program: &str) -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    find_in(
        program,
        exe.as_deref().and_then(Path::parent),
        path.as_deref(),
    )
    .ok_or_else(|| missing(program))
}

fn missing(program: &str) -> CliError {
    let what = if program == GATEWAY {
        "ipckit bus gateway"
    } else {
        "ipckit bus with a bus://zenoh URL"
    };
    CliError::Usage(format!(
        "{what} runs {program}, which is neither next to ipckit nor in PATH; it links zenoh, \
         so it comes from its own crate: install it with \
         `cargo install --path ipckit-zenoh --bin {program}` (from the ipckit repository)"
    ))
}

/// Replaces this process with `cmd` (its output, exit status and signals are the
/// command's); returns only if that fails.
fn exec(mut cmd: std::process::Command, program: &'static str) -> CliError {
    let source = cmd.exec();
    CliError::Io {
        doing: if program == GATEWAY {
            "cannot run ipckit-zenoh-gateway"
        } else {
            "cannot run ipckit-zenoh-bus"
        },
        source,
    }
}

/// Runs the gateway in place of this process.
fn gateway(a: BusGatewayArgs) -> Result<(), CliError> {
    let mut cmd = std::process::Command::new(find_program(GATEWAY)?);
    cmd.arg("--local")
        .arg(&a.local)
        .arg("--zenoh")
        .arg(&a.zenoh);
    for t in &a.topics {
        cmd.arg("--topic").arg(t);
    }
    Err(exec(cmd, GATEWAY))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_gateway_is_found_next_to_ipckit_then_in_path() {
        let beside = tempfile::tempdir().unwrap();
        let in_path = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([empty.path(), in_path.path()]).unwrap();
        let find_gateway = |dir: Option<&Path>, path: Option<&OsStr>| find_in(GATEWAY, dir, path);
        assert_eq!(find_gateway(Some(beside.path()), Some(&path)), None);
        std::fs::write(in_path.path().join(GATEWAY), b"").unwrap();
        assert_eq!(
            find_gateway(Some(beside.path()), Some(&path)),
            Some(in_path.path().join(GATEWAY))
        );
        std::fs::write(beside.path().join(GATEWAY), b"").unwrap();
        assert_eq!(
            find_gateway(Some(beside.path()), Some(&path)),
            Some(beside.path().join(GATEWAY))
        );
        assert_eq!(find_gateway(None, None), None);
        let msg = missing(GATEWAY).to_string();
        assert!(msg.contains("cargo install --path ipckit-zenoh"), "{msg}");
        assert!(msg.contains("--bin ipckit-zenoh-gateway"), "{msg}");
        let msg = missing(BUS).to_string();
        assert!(
            msg.contains("cargo install --path ipckit-zenoh --bin ipckit-zenoh-bus"),
            "{msg}"
        );
        assert_eq!(find_in(BUS, Some(beside.path()), Some(&path)), None);
    }

    #[test]
    fn zenoh_urls_are_recognised() {
        assert!(is_zenoh("bus://zenoh"));
        assert!(is_zenoh("bus://zenoh/ns?connect=tcp/1.2.3.4:7447"));
        assert!(is_zenoh("bus://zenoh?listen=tcp/0.0.0.0:7447"));
        assert!(!is_zenoh("bus://local/zenoh"));
        assert!(!is_zenoh("bus://zenohx"));
        assert!(!is_zenoh("shm://zenoh"));
    }

    #[test]
    fn commands_pass_to_ipckit_zenoh_bus_unchanged() {
        let url = "bus://zenoh/ns?connect=tcp/1.2.3.4:7447&depth=8".to_owned();
        let cases = [
            BusShell::Pub {
                url: url.clone(),
                topic: "a/b".into(),
                message: Some("--odd -message".into()),
                wait: Duration::from_millis(1500),
                linger: Duration::ZERO,
            },
            BusShell::Pub {
                url: url.clone(),
                topic: "a/b".into(),
                message: Some(String::new()),
                wait: Duration::from_millis(200),
                linger: Duration::from_micros(1),
            },
            BusShell::Pub {
                url: url.clone(),
                topic: "a/b".into(),
                message: None,
                wait: Duration::ZERO,
                linger: Duration::from_millis(200),
            },
            BusShell::Sub {
                url: url.clone(),
                pattern: "a/**".into(),
                count: Some(3),
                timeout: Some(Duration::from_secs_f64(2.25)),
                quiet: true,
            },
            BusShell::Sub {
                url: url.clone(),
                pattern: "-".into(),
                count: None,
                timeout: None,
                quiet: false,
            },
            BusShell::Req {
                url: url.clone(),
                topic: "svc/x".into(),
                message: "".into(),
                timeout: Duration::from_secs(5),
            },
            BusShell::Ls { url },
        ];
        for c in cases {
            let back = BusShell::from_args(&c.to_args());
            assert_eq!(back.as_ref(), Ok(&c), "{:?}", c.to_args());
        }
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // By hand, without `--`, and the defaults of `ipckit bus`.
        assert_eq!(
            BusShell::from_args(&args(&["sub", "-q", "bus://zenoh", "x", "--count", "2"])),
            Err("sub takes 2 arguments, not 3".into())
        );
        assert_eq!(
            BusShell::from_args(&args(&["sub", "-q", "bus://zenoh", "x", "--count=2"])),
            Ok(BusShell::Sub {
                url: "bus://zenoh".into(),
                pattern: "x".into(),
                count: Some(2),
                timeout: None,
                quiet: true
            })
        );
        assert!(BusShell::from_args(&args(&["pub", "--colour=red", "u", "t"])).is_err());
        assert!(BusShell::from_args(&args(&["serve", "u"])).is_err());
        assert!(BusShell::from_args(&args(&["req", "--timeout=-1", "u", "t", "m"])).is_err());
        assert!(BusShell::from_args(&[]).is_err());
    }
}
