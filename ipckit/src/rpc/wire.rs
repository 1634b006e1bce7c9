//! RPC frames: one message of the underlying transport each.
//!
//! ```text
//! byte 0      kind: 1 request, 2 response, 3 error response, 4 cancel
//! bytes 1..9  call id, u64 little-endian (chosen by the client, unique per connection)
//! bytes 9..   request: the postcard-encoded request
//!             response: the postcard-encoded response
//!             error response: the postcard-encoded `Failure`
//!             cancel: nothing
//! ```
//! Decoding checks everything and never panics: a frame that is not one of these is
//! [`Error::Protocol`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes before a frame's body.
pub(crate) const HEADER: usize = 9;

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const FAILURE: u8 = 3;
const CANCEL: u8 = 4;

/// Why the server answered a call with an error instead of a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Failure {
    /// The request did not decode as the handler's type.
    BadRequest(String),
    /// The handler panicked.
    HandlerFailed(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::BadRequest(reason) => Error::BadRequest { reason },
            Failure::HandlerFailed(reason) => Error::HandlerFailed { reason },
        }
    }
}

/// A decoded frame, borrowing its body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Request { id: u64, body: &'a [u8] },
    Response { id: u64, body: &'a [u8] },
    Failure { id: u64, failure: Failure },
    Cancel { id: u64 },
}

/// Appends a frame header to `out` (cleared first); the body follows.
fn start(out: &mut Vec<u8>, kind: u8, id: u64) {
    out.clear();
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
}

/// Encodes a request frame into `out` (cleared first), `body` serialized straight into it.
pub(crate) fn request_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    id: u64,
    body: &T,
) -> Result<()> {
    encode_into(out, REQUEST, id, body)
}

/// Encodes a response frame into `out` (cleared first).
pub(crate) fn response_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    id: u64,
    body: &T,
) -> Result<()> {
    encode_into(out, RESPONSE, id, body)
}

/// [`request_into`] a new buffer.
pub(crate) fn request<T: Serialize + ?Sized>(id: u64, body: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    request_into(&mut out, id, body)?;
    Ok(out)
}

/// [`response_into`] a new buffer.
pub(crate) fn response<T: Serialize + ?Sized>(id: u64, body: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    response_into(&mut out, id, body)?;
    Ok(out)
}

fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    kind: u8,
    id: u64,
    body: &T,
) -> Result<()> {
    start(out, kind, id);
    crate::transport::encode_append(body, out)
}

/// Encodes an error response.
pub(crate) fn failure(id: u64, f: &Failure) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    start(&mut out, FAILURE, id);
    // A Failure is two strings' worth of enum: encoding into a Vec cannot fail.
    postcard::to_extend(f, out).unwrap_or_else(|_| {
        let mut v = Vec::new();
        start(&mut v, FAILURE, id);
        v
    })
}

/// Encodes a cancel frame.
pub(crate) fn cancel(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    start(&mut out, CANCEL, id);
    out
}

/// Decodes a frame; anything malformed is [`Error::Protocol`].
pub(crate) fn decode(bytes: &[u8]) -> Result<Frame<'_>> {
    if bytes.len() < HEADER {
        return Err(Error::Protocol(format!(
            "RPC frame of {} bytes is shorter than its {HEADER}-byte header",
            bytes.len()
        )));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[1..HEADER]);
    let id = u64::from_le_bytes(id);
    let body = &bytes[HEADER..];
    Ok(match bytes[0] {
        REQUEST => Frame::Request { id, body },
        RESPONSE => Frame::Response { id, body },
        FAILURE => match postcard::from_bytes::<Failure>(body) {
            Ok(failure) => Frame::Failure { id, failure },
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "RPC error response for call {id} does not decode: {e}"
                )))
            }
        },
        CANCEL if body.is_empty() => Frame::Cancel { id },
        CANCEL => {
            return Err(Error::Protocol(format!(
                "RPC cancel frame for call {id} carries {} stray bytes",
                body.len()
            )))
        }
        kind => return Err(Error::Protocol(format!("unknown RPC frame kind {kind}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let mut r = Vec::new();
        request_into(&mut r, 7, &(1u32, "x")).unwrap();
        assert_eq!(
            decode(&r).unwrap(),
            Frame::Request {
                id: 7,
                body: &postcard::to_stdvec(&(1u32, "x")).unwrap()
            }
        );
        // A buffer is reused whatever it held.
        response_into(&mut r, u64::MAX, &5u8).unwrap();
        assert_eq!(
            decode(&r).unwrap(),
            Frame::Response {
                id: u64::MAX,
                body: &[5]
            }
        );
        let f = Failure::BadRequest("nope".into());
        assert_eq!(
            decode(&failure(3, &f)).unwrap(),
            Frame::Failure { id: 3, failure: f }
        );
        assert_eq!(decode(&cancel(9)).unwrap(), Frame::Cancel { id: 9 });
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        for bad in [
            &[][..],
            &[1, 2, 3],
            &[9, 0, 0, 0, 0, 0, 0, 0, 0],
            &[4, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ] {
            assert!(matches!(decode(bad), Err(Error::Protocol(_))), "{bad:?}");
        }
        let mut f = failure(1, &Failure::HandlerFailed("x".into()));
        f.truncate(f.len() - 1);
        assert!(matches!(decode(&f), Err(Error::Protocol(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
