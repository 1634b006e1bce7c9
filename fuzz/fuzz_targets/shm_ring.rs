//! The shared-memory ring reader (and writer) over an arbitrary ring image, with a hostile
//! peer moving the indices and scribbling over the data between operations: records inside
//! the ring or `Error::Corrupted`, never an out-of-bounds access or a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipckit::fuzzing::shm_ring(data);
});
