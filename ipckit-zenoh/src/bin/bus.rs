//! `ipckit-zenoh-bus pub|sub|req|ls ...`: `ipckit bus pub|sub|req|ls` for `bus://zenoh` URLs.
//! `ipckit` links no zenoh, so for such a URL it runs this program with the command (see
//! `USAGE`); this program registers the zenoh backend (`ipckit_zenoh::install()`) and runs
//! the very code of `ipckit bus` (ipckit-cli's `bus_shell.rs` and `error.rs`, compiled in
//! here), so the output and exit status are the same as `ipckit`'s: 0, 1 with
//! `ipckit: error: ...` on standard error, 2 for arguments it cannot read.

use std::process::ExitCode;

// `ipckit`'s side of it (`BusShell::to_args`) is not used here.
#[allow(dead_code)]
#[path = "../../../ipckit-cli/src/bus_shell.rs"]
mod bus_shell;
// The other errors of the `ipckit` command (benchmarks, reports) do not occur here.
#[allow(dead_code)]
#[path = "../../../ipckit-cli/src/error.rs"]
mod error;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match bus_shell::BusShell::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipckit-zenoh-bus: {e}");
            eprintln!("{}", bus_shell::USAGE);
            return ExitCode::from(2);
        }
    };
    ipckit_zenoh::install();
    match cmd.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipckit: error: {e}");
            ExitCode::FAILURE
        }
    }
}
