//! The RPC wire decoder (`ipckit::rpc`, `rpc/wire.rs`) over arbitrary frames, as a client or
//! a server receives them: a typed `Protocol` error for anything malformed, never a panic;
//! what decodes re-encodes to the same frame; a request the server cannot decode is
//! answered with an error response the client decodes (`ipckit::fuzzing::rpc_wire`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::rpc_wire(data);
});
