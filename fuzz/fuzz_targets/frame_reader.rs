//! The frame reader of the stream transports over a byte source that delivers the stream in
//! arbitrary chunks and interrupts it with WouldBlock/Timeout (resumed calls, partial
//! frames kept): it must read exactly what the one-piece decoder reads.
//!
//! Input: `max_sel: u8`, `schedule_len: u8`, the schedule (one byte per read: see
//! `ipckit::fuzzing::frame_reader`), then the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [max_sel, sched_len, rest @ ..] = data else {
        return;
    };
    let max = match max_sel {
        0..=63 => usize::from(*max_sel),
        64..=127 => usize::from(*max_sel) << 10,
        _ => 16 << 20,
    };
    let (schedule, stream) = rest.split_at(usize::from(*sched_len).min(rest.len()));
    ipckit::fuzzing::frame_reader(stream, max, schedule);
});
