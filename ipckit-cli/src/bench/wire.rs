//! The benchmark's message layout, the same as the C baseline's: sequence number in the first
//! 8 bytes (little-endian), its bitwise complement in the last 8, a fixed pattern between.
//! Control messages put a marker where the sequence number goes.

/// Bytes of the sequence number at the start of a message.
pub const SEQ_LEN: usize = 8;
/// Bytes of the trailer (the sequence number's complement) at the end.
pub const TRAILER_LEN: usize = 8;
/// Smallest message: sequence number plus trailer.
pub const MIN_SIZE: usize = SEQ_LEN + TRAILER_LEN;

/// Marker of the message that ends a phase (and of the stream's acknowledgement).
pub const END: u64 = 1 << 62;
/// Marker of the peer's "attached and ready" message.
pub const READY: u64 = END + 1;
/// Marker of the parent's "done, you may exit" message (lossy transports only).
pub const BYE: u64 = END + 2;

/// Length of control messages (READY, the acknowledgement, BYE): marker and three fields.
pub const CONTROL_LEN: usize = 32;

/// What the parent's bound endpoint receives when the peer process exits: no benchmark
/// message is this short, so a parent waiting for one wakes up and sees it.
pub const WAKE: &[u8] = b"wake";

/// Names a message that is not the one expected, for error messages.
pub fn what_is(msg: &[u8]) -> String {
    if msg == WAKE {
        "the wake-up sent when the peer process exited".to_owned()
    } else {
        format!("a message of {} bytes", msg.len())
    }
}

/// The whole payload is compared on messages whose number has these low bits equal to 1.
pub const FULL_CHECK_MASK: u64 = 1023;

/// True for the messages whose whole payload is compared (1 in 1024).
pub fn full_check_due(n: u64) -> bool {
    n & FULL_CHECK_MASK == 1
}

/// A message of `size` bytes filled with the fixed pattern.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| i.wrapping_mul(131).wrapping_add(17) as u8)
        .collect()
}

/// Writes `seq` at the start of `msg` and its complement at the end.
pub fn stamp(msg: &mut [u8], seq: u64) {
    let n = msg.len();
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    msg[n - 8..].copy_from_slice(&(!seq).to_le_bytes());
}

/// Writes a marker (e.g. [`END`]) at the start of `msg`, leaving the rest as it is.
pub fn mark(msg: &mut [u8], marker: u64) {
    msg[..8].copy_from_slice(&marker.to_le_bytes());
}

/// The 64-bit field at byte `offset`, if the message is long enough.
fn field(msg: &[u8], offset: usize) -> Option<u64> {
    let bytes = msg.get(offset..offset + 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The sequence number or marker of a message, if it has one.
pub fn seq_of(msg: &[u8]) -> Option<u64> {
    field(msg, 0)
}

/// Checks a data message: its size, its sequence number and its trailer.
pub fn check(msg: &[u8], size: usize, seq: u64) -> Result<(), String> {
    if msg.len() != size {
        return Err(format!(
            "expected message {seq} of {size} bytes, got {}",
            what_is(msg)
        ));
    }
    let got = seq_of(msg).unwrap_or_default();
    if got != seq {
        return Err(format!("got message {got}, expected {seq}"));
    }
    if field(msg, size - 8) != Some(!seq) {
        return Err(format!("message {seq}: bad trailer"));
    }
    Ok(())
}

/// A control message: `marker` followed by three fields.
pub fn control(marker: u64, fields: [u64; 3]) -> [u8; CONTROL_LEN] {
    let mut msg = [0u8; CONTROL_LEN];
    for (slot, value) in msg
        .chunks_exact_mut(8)
        .zip([marker, fields[0], fields[1], fields[2]])
    {
        slot.copy_from_slice(&value.to_le_bytes());
    }
    msg
}

/// True for a control message with this marker.
pub fn is_control(msg: &[u8], marker: u64) -> bool {
    msg.len() == CONTROL_LEN && seq_of(msg) == Some(marker)
}

/// The peer's acknowledgement of the stream: what it counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Messages received.
    pub count: u64,
    /// Nanoseconds from the first message received to the last (lossy) or to END.
    pub elapsed_ns: u64,
    /// Sequence numbers that never arrived (lossy transports).
    pub drops: u64,
}

impl Ack {
    /// The acknowledgement as a control message (fields at byte offsets 8, 16 and 24).
    pub fn encode(self) -> [u8; CONTROL_LEN] {
        control(END, [self.count, self.elapsed_ns, self.drops])
    }

    /// Reads an acknowledgement, if `msg` is one.
    pub fn decode(msg: &[u8]) -> Option<Ack> {
        if !is_control(msg, END) {
            return None;
        }
        Some(Ack {
            count: field(msg, 8)?,
            elapsed_ns: field(msg, 16)?,
            drops: field(msg, 24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_checks() {
        let mut m = pattern(64);
        assert_eq!(m[1], 148); // 131 + 17, as in the C baseline
        stamp(&mut m, 7);
        assert_eq!(check(&m, 64, 7), Ok(()));
        assert!(check(&m, 64, 8).is_err());
        assert!(check(&m[..32], 64, 7).unwrap_err().contains("32 bytes"));
        assert!(check(WAKE, 64, 7)
            .unwrap_err()
            .contains("peer process exited"));
        m[63] ^= 1;
        assert!(check(&m, 64, 7).unwrap_err().contains("trailer"));
        mark(&mut m, END);
        assert_eq!(seq_of(&m), Some(END));
        assert_eq!(seq_of(b"wake"), None);
    }

    #[test]
    fn acks_round_trip_and_are_told_apart() {
        let ack = Ack {
            count: 3,
            elapsed_ns: 4,
            drops: 5,
        };
        assert_eq!(Ack::decode(&ack.encode()), Some(ack));
        assert_eq!(Ack::decode(&control(READY, [0; 3])), None);
        let mut end = pattern(64);
        mark(&mut end, END);
        assert_eq!(Ack::decode(&end), None);
        assert!(full_check_due(1) && full_check_due(1025) && !full_check_due(2));
    }
}
