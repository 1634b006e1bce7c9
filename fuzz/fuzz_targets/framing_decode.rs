//! The stream framing decoder over a complete byte string: messages or a typed error, never
//! a panic, and nothing allocated beyond the maximum per frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the maximum message size (small ones make the limit bite).
    let Some((&m, stream)) = data.split_first() else {
        return;
    };
    let max = match m {
        0..=63 => usize::from(m),
        64..=127 => usize::from(m) << 8,
        _ => 16 << 20,
    };
    if let Ok(frames) = ipckit::framing::decode_frames(stream, max) {
        let total: usize = frames.iter().map(|f| f.len() + 4).sum();
        assert_eq!(total, stream.len(), "frames do not account for the input");
        assert!(frames.iter().all(|f| f.len() <= max));
    }
});
