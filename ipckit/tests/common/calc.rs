//! The request and response types of the RPC test server (`ipckit-rpc-peer`), shared by
//! the tests and the peer (included by path in both).

use serde::{Deserialize, Serialize};

/// What the test server can be asked.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Req {
    /// Returns `a + b`.
    Add(i64, i64),
    /// Sleeps `ms` milliseconds, then returns `tag`; prints `dropped TAG` if aborted.
    Sleep { ms: u64, tag: u64 },
    /// Returns the bytes.
    Echo(Vec<u8>),
    /// Panics in the handler.
    Panic,
}

/// What it answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Resp {
    Num(i64),
    Tag(u64),
    Bytes(Vec<u8>),
}
