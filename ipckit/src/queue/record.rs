//! The on-disk format: segment headers and records, and the checks every reader applies.
//!
//! ```text
//! segment file NNNNNNNNNNNNNNNNNNNN.seg (20-digit sequence number of its first record)
//!   header, 64 bytes: magic "IPCKITQS" | version u32 | header length u32 | first seq u64 |
//!                     created (ns since the epoch) u64 | 28 zero bytes | CRC32C of bytes 0..60
//!   records, back to back, no padding:
//!     length u32 | CRC32C u32 | seq u64 | payload (length bytes)
//! ```
//! All integers are little-endian. A record's CRC32C covers its length, its sequence number
//! and its payload; sequence numbers are consecutive from the segment's first one, so a
//! record that is valid but out of place is caught too. Zeros never form a valid record.

use std::time::SystemTime;

/// Magic bytes at the start of every segment.
pub(crate) const SEG_MAGIC: [u8; 8] = *b"IPCKITQS";
/// Version of the segment format.
pub(crate) const SEG_VERSION: u32 = 1;
/// Bytes of a segment header.
pub(crate) const SEG_HEADER_LEN: u64 = 64;
/// Bytes of a record header.
pub(crate) const REC_HEADER_LEN: usize = 16;
/// Largest payload a record may have (1 GiB).
pub(crate) const MAX_RECORD: usize = 1 << 30;
/// Suffix of segment file names.
pub(crate) const SEG_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record is `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}{SEG_SUFFIX}")
}

/// The first sequence number of a segment file name, or `None` for other names.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEG_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|b| *b >= 1)
}

/// A segment header for a segment starting at `base`.
pub(crate) fn segment_header(base: u64) -> [u8; SEG_HEADER_LEN as usize] {
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEG_MAGIC);
    h[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEG_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    h[24..32].copy_from_slice(&created.to_le_bytes());
    let crc = crc32c::crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header read from a file named for `base`; `Err` says what is wrong.
pub(crate) fn check_segment_header(h: &[u8], base: u64) -> Result<(), String> {
    if h.len() < SEG_HEADER_LEN as usize {
        return Err(format!(
            "segment header is {} bytes, {SEG_HEADER_LEN} expected (file truncated)",
            h.len()
        ));
    }
    if h[0..8] != SEG_MAGIC {
        return Err("not an ipckit queue segment (bad magic)".to_owned());
    }
    let crc = u32::from_le_bytes(h[60..64].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[..60]) != crc {
        return Err("segment header checksum mismatch".to_owned());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != SEG_VERSION {
        return Err(format!(
            "segment format version {version}, this ipckit reads {SEG_VERSION}"
        ));
    }
    let hlen = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
    if u64::from(hlen) != SEG_HEADER_LEN {
        return Err(format!(
            "segment header length {hlen}, {SEG_HEADER_LEN} expected"
        ));
    }
    let first = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    if first != base {
        return Err(format!(
            "segment header says it starts at sequence number {first}, its name says {base}"
        ));
    }
    Ok(())
}

fn record_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(RecordHeader::crc_start(len, seq), payload)
}

/// The header of record `seq` carrying `payload` (at most [`MAX_RECORD`] bytes).
pub(crate) fn record_header(seq: u64, payload: &[u8]) -> [u8; REC_HEADER_LEN] {
    debug_assert!(payload.len() <= MAX_RECORD);
    let len = payload.len() as u32;
    let mut h = [0u8; REC_HEADER_LEN];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&record_crc(len, seq, payload).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h
}

/// A decoded record header (not yet checked against its payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) seq: u64,
}

impl RecordHeader {
    /// Decodes the first [`REC_HEADER_LEN`] bytes of `b`.
    pub(crate) fn decode(b: &[u8]) -> RecordHeader {
        RecordHeader {
            len: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        }
    }

    /// Bytes of the whole record.
    pub(crate) fn record_len(&self) -> u64 {
        REC_HEADER_LEN as u64 + u64::from(self.len)
    }

    /// The checksum state after the header fields, to continue over the payload.
    pub(crate) fn crc_start(len: u32, seq: u64) -> u32 {
        let c = crc32c::crc32c(&len.to_le_bytes());
        crc32c::crc32c_append(c, &seq.to_le_bytes())
    }

    /// Whether `payload` is this record's (the checksum matches).
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && record_crc(self.len, self.seq, payload) == self.crc
    }

    /// Checks what can be checked before the payload is read: a length no record may have,
    /// a record that would run past the end of the file, or another sequence number than
    /// `expected`.
    pub(crate) fn check_shape(
        &self,
        at: u64,
        file_len: u64,
        expected: u64,
    ) -> Result<(), &'static str> {
        if self.len as usize > MAX_RECORD {
            return Err("impossible record length");
        }
        if at + self.record_len() > file_len {
            return Err("record runs past the end of the file");
        }
        if self.seq != expected {
            return Err("unexpected sequence number");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // RFC 3720 (iSCSI) test vectors and the classic "123456789" check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c::crc32c(&inc), 0x46DD_794E);
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let h = segment_header(42);
        assert_eq!(check_segment_header(&h, 42), Ok(()));
        assert!(check_segment_header(&h, 43).is_err());
        assert!(check_segment_header(&h[..63], 42).is_err());
        for bit in 0..(64 * 8) {
            let mut d = h;
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(check_segment_header(&d, 42).is_err(), "bit {bit}");
        }
        let payload = b"hello queue";
        let rh = record_header(7, payload);
        let dec = RecordHeader::decode(&rh);
        assert_eq!((dec.len, dec.seq), (11, 7));
        assert!(dec.matches(payload));
        assert!(!dec.matches(b"hello queuf"));
        assert_eq!(dec.check_shape(64, 64 + 27, 7), Ok(()));
        assert!(dec.check_shape(64, 64 + 26, 7).is_err());
        assert!(dec.check_shape(64, 64 + 27, 8).is_err());
        // Zeros never form a valid record, even an empty one.
        let zero = RecordHeader::decode(&[0u8; 16]);
        assert!(!zero.matches(&[]));
    }

    #[test]
    fn names() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000000.seg",
            "00000000000000000001.seg.tmp",
            "queue.ctl",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
