//! `ipckit`: send and receive messages over any ipckit endpoint from the shell, and benchmark
//! every mechanism.

mod bench;
mod bus_shell;
mod cli;
mod cmd_bus;
mod cmd_queue;
mod cmd_recv;
mod cmd_resources;
mod cmd_send;
mod error;
mod role;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => cmd_send::run(args),
        Command::Recv(args) => cmd_recv::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Queue(cmd) => cmd_queue::run(cmd),
        Command::Ls(args) => cmd_resources::ls(args),
        Command::Rm(args) => cmd_resources::rm(args),
        Command::Doctor => cmd_resources::doctor(),
        Command::Bus(cmd) => cmd_bus::run(cmd),
        Command::QueueAppender(args) => match bench::run_appender(args) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(report) => {
                eprintln!("{report}");
                return ExitCode::from(3);
            }
        },
        Command::BenchPeer(args) => match bench::run_peer(args) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(report) => {
                // The parent reads this line from the peer's standard error.
                eprintln!("{report}");
                return ExitCode::from(3);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipckit: error: {e}");
            ExitCode::FAILURE
        }
    }
}
