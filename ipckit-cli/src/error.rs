//! The errors the `ipckit` command reports on standard error before exiting non-zero.

use std::fmt;

/// Something that stops a command.
#[derive(Debug)]
pub enum CliError {
    /// A library call failed; `doing` says what the command was doing.
    Ipc {
        doing: String,
        source: ipckit::Error,
    },
    /// Reading standard input or writing standard output failed.
    Io {
        doing: &'static str,
        source: std::io::Error,
    },
    /// The options ask for something the endpoint cannot do.
    Usage(String),
    /// `recv --count N` ended with fewer messages.
    Incomplete {
        received: u64,
        expected: u64,
        why: &'static str,
    },
    /// Some benchmark measurements failed (each is reported in its row).
    BenchFailed { failed: usize, total: usize },
    /// A file of `bench --report` could not be made or written.
    Report {
        path: std::path::PathBuf,
        why: String,
    },
    /// A file given to `bench --compare` could not be read as benchmark results.
    Compare {
        path: std::path::PathBuf,
        why: String,
    },
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Ipc { doing, source } => write!(f, "{doing}: {source}"),
            CliError::Io { doing, source } => write!(f, "{doing}: {source}"),
            CliError::Usage(msg) => f.write_str(msg),
            CliError::Incomplete {
                received,
                expected,
                why,
            } => write!(f, "{why} after {received} of {expected} messages"),
            CliError::BenchFailed { failed, total } => {
                write!(
                    f,
                    "{failed} of {total} measurements failed (see the error column)"
                )
            }
            CliError::Report { path, why } => {
                write!(f, "cannot write the report {}: {why}", path.display())
            }
            CliError::Compare { path, why } => {
                write!(f, "cannot compare {}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for CliError {}

/// Adds what the command was doing to a library error.
pub trait IpcContext<T> {
    /// Wraps the error with the text `doing()` returns.
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, CliError>;
}

impl<T> IpcContext<T> for ipckit::Result<T> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, CliError> {
        self.map_err(|source| CliError::Ipc {
            doing: doing(),
            source,
        })
    }
}
