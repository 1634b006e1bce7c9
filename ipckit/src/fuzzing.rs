//! Entry points for the fuzz targets in `fuzz/` (issue 9). Not part of the stable API.
//!
//! Each function drives one decoder that reads bytes another process controls, over input
//! the fuzzer chooses, and panics only when an invariant that the library promises is broken
//! (an out-of-bounds ring access, two readings of one stream that disagree). Typed errors
//! are the expected outcome for garbage and are ignored.

use std::mem::MaybeUninit;

use crate::error::{Error, Result};
use crate::framing::{decode_frames, ByteSource, FrameReader};
#[cfg(not(loom))]
use crate::loom::Ordering;
#[cfg(not(loom))]
use crate::shm::ring::{max_payload, Consumer, Producer, RingControl, RingData};
use crate::transport::Wait;

/// A byte source that follows a schedule: each read takes the next schedule byte and either
/// fails with `WouldBlock`/`Timeout` or hands out a chunk of its size; once the schedule is
/// used up it hands out everything asked for.
struct Scheduled<'a> {
    data: &'a [u8],
    schedule: &'a [u8],
}

impl Scheduled<'_> {
    /// The next read's size limit, or the refusal the schedule says.
    fn next_chunk(&mut self) -> Result<usize> {
        Ok(match self.schedule.split_first() {
            Some((&s, rest)) => {
                self.schedule = rest;
                match s & 7 {
                    0 => return Err(Error::WouldBlock),
                    1 => return Err(Error::Timeout { after: None }),
                    _ if s & 0x80 != 0 => usize::MAX,
                    _ => usize::from(s >> 3) + 1,
                }
            }
            None => usize::MAX,
        })
    }
}

impl ByteSource for Scheduled<'_> {
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>], _wait: Wait) -> Result<usize> {
        let chunk = self.next_chunk()?;
        let n = buf.len().min(self.data.len()).min(chunk);
        for (dst, src) in buf[..n].iter_mut().zip(&self.data[..n]) {
            dst.write(*src);
        }
        self.data = &self.data[n..];
        Ok(n)
    }

    // Reads into two buffers, as pipes do: the frame reader's direct path is fuzzed too.
    fn reads_head_and_body(&self) -> bool {
        true
    }

    // Takes the next header along, as pipes do.
    fn reads_next_header(&self) -> bool {
        true
    }

    fn read_head_body(
        &mut self,
        head: &mut [u8; crate::framing::HEADER_LEN],
        body: &mut [u8],
        _wait: Wait,
    ) -> Result<usize> {
        let chunk = self.next_chunk()?;
        Ok(crate::framing::head_body_from(
            &mut self.data,
            chunk,
            head,
            body,
        ))
    }
}

/// Reads `stream` with the stream transports' frame reader from a source that delivers it
/// in chunks and interrupts it with `WouldBlock`/`Timeout` as `schedule` says (non-blocking
/// calls resumed after each), and checks the result against [`decode_frames`] reading the
/// same bytes in one piece: same messages, same final error.
///
/// # Panics
/// When the two readings disagree, or a frame exceeds `max`.
pub fn frame_reader(stream: &[u8], max: usize, schedule: &[u8]) {
    let whole = decode_frames(stream, max);
    let mut src = Scheduled {
        data: stream,
        schedule,
    };
    let mut reader = FrameReader::new(max);
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let end = loop {
        match reader.recv(&mut src, &mut buf, Wait::Never) {
            Ok(()) => {
                assert!(buf.len() <= max, "frame of {} bytes over {max}", buf.len());
                frames.push(buf.clone());
            }
            Err(e) if e.is_retryable() => continue,
            Err(Error::Disconnected) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    match whole {
        Ok(w) => {
            assert_eq!(
                end, None,
                "chunked reading failed where whole reading did not"
            );
            assert_eq!(frames, w, "chunked reading gave other messages");
        }
        Err(e) => {
            assert_eq!(
                end,
                Some(e.to_string()),
                "chunked reading ended differently"
            );
        }
    }
}

/// Ring bytes in a plain buffer whose accesses are checked against the ring's contract
/// (offsets `< cap`, `off + len <= cap`): a violation is the bug the fuzzer looks for.
#[cfg(not(loom))]
struct CheckedData {
    bytes: std::cell::RefCell<Vec<u8>>,
}

#[cfg(not(loom))]
impl RingData for CheckedData {
    fn write(&self, off: u32, src: &[u8]) {
        let mut b = self.bytes.borrow_mut();
        let off = off as usize;
        assert!(off + src.len() <= b.len(), "ring write out of bounds");
        b[off..off + src.len()].copy_from_slice(src);
    }
    fn read(&self, off: u32, dst: &mut [u8]) {
        let b = self.bytes.borrow();
        let off = off as usize;
        assert!(off + dst.len() <= b.len(), "ring read out of bounds");
        dst.copy_from_slice(&b[off..off + dst.len()]);
    }
}

#[cfg(not(loom))]
fn take_u32(input: &mut &[u8]) -> u32 {
    let mut w = [0u8; 4];
    let n = input.len().min(4);
    w[..n].copy_from_slice(&input[..n]);
    *input = &input[n..];
    u32::from_le_bytes(w)
}

#[cfg(not(loom))]
fn take_u8(input: &mut &[u8]) -> u8 {
    match input.split_first() {
        Some((&b, rest)) => {
            *input = rest;
            b
        }
        None => 0,
    }
}

/// Reads a shared-memory ring whose image (control words and data bytes) comes from
/// `image`, while a hostile peer, scripted by the rest of the input, moves the indices and
/// scribbles over the data between reads; the consumer and a producer on the same ring must
/// give records inside the ring or typed errors.
///
/// Input layout: `cap_log2: u8` (ring of 2^(4 + n % 13) bytes), `head: u32`, `tail: u32`,
/// `max: u32`, `data_len: u16` and that many data bytes (repeated to fill the ring), then a
/// script of operations (one byte each, some followed by arguments).
///
/// # Panics
/// When the ring code reads or writes outside the ring, or returns a record that does not
/// fit it.
#[cfg(not(loom))]
pub fn shm_ring(mut input: &[u8]) {
    let cap = 1u32 << (4 + take_u8(&mut input) % 13);
    let head = take_u32(&mut input);
    let tail = take_u32(&mut input);
    let raw_max = take_u32(&mut input);
    let max = raw_max.min(max_payload(cap));
    let data_len = usize::from(take_u8(&mut input)) | (usize::from(take_u8(&mut input)) << 8);
    let (image, mut script) = input.split_at(data_len.min(input.len()));
    let mut bytes = vec![0u8; cap as usize];
    if !image.is_empty() {
        for (b, v) in bytes.iter_mut().zip(image.iter().cycle()) {
            *b = *v;
        }
    }
    let data = CheckedData {
        bytes: std::cell::RefCell::new(bytes),
    };
    // SAFETY: `RingControl` is integer atomics and padding only; all-zero bytes are a valid
    // value of it (the state of a fresh ring, as in a new segment).
    let ctl: Box<RingControl> = unsafe { Box::new(std::mem::zeroed()) };
    ctl.producer.0.head.store(head, Ordering::Relaxed);
    ctl.consumer.0.tail.store(tail, Ordering::Relaxed);
    let mut consumer = Consumer::attach(&ctl, cap, max, true);
    let mut producer = Producer::attach(&ctl, cap);
    let mut out = Vec::new();
    // Every operation consumes input, so the loop ends; the bound is a second guard.
    for _ in 0..4096 {
        if script.is_empty() {
            break;
        }
        match take_u8(&mut script) % 6 {
            // Consume one record.
            0 | 1 => match consumer.peek(&ctl, &data) {
                Ok(Some(r)) => {
                    assert!(r.len <= max, "record over the maximum");
                    assert!(
                        u64::from(r.data_off) + u64::from(r.len) <= u64::from(cap),
                        "record outside the ring"
                    );
                    out.resize(r.len as usize, 0);
                    data.read(r.data_off, &mut out);
                    consumer.release(&ctl, r, Ordering::Release);
                }
                Ok(None) => {}
                Err(Error::Corrupted(_)) => consumer.skip_all(&ctl),
                Err(e) => panic!("unexpected error from the ring reader: {e}"),
            },
            // The hostile peer moves the head.
            2 => ctl
                .producer
                .0
                .head
                .store(take_u32(&mut script), Ordering::Release),
            // The hostile peer scribbles a word over the data.
            3 => {
                let off = (take_u32(&mut script) % cap) & !3;
                let v = take_u32(&mut script).to_le_bytes();
                data.write(off, &v);
            }
            // Our producer (the other direction of a channel) appends a message, with a
            // consumer position the hostile peer chose.
            4 => {
                ctl.consumer
                    .0
                    .tail
                    .store(take_u32(&mut script), Ordering::Release);
                let len = u32::from(take_u8(&mut script)) % (max_payload(cap) + 1);
                match producer.reserve(&ctl, len) {
                    Ok(Some(r)) => {
                        assert!(
                            u64::from(r.data_off) + u64::from(r.len) <= u64::from(cap),
                            "reservation outside the ring"
                        );
                        data.write(r.data_off, &vec![0xA5; r.len as usize]);
                        producer.commit(&ctl, &data, r, Ordering::Release);
                    }
                    Ok(None) | Err(Error::Corrupted(_)) => {}
                    Err(e) => panic!("unexpected error from the ring writer: {e}"),
                }
            }
            // Reattach, as after a restart of the reading side.
            _ => consumer = Consumer::attach(&ctl, cap, max, true),
        }
    }
}

/// An input for [`shm_ring`] holding a ring of 2^`cap_log2` bytes (4..=15) into which the
/// real producer code wrote `messages` (as many as fit), followed by a script that reads
/// them all: the seed corpus of the `shm_ring` fuzz target comes from this.
#[cfg(not(loom))]
pub fn shm_ring_seed(cap_log2: u8, messages: &[&[u8]]) -> Vec<u8> {
    let cap_log2 = cap_log2.clamp(4, 15);
    let cap = 1u32 << cap_log2;
    let data = CheckedData {
        bytes: std::cell::RefCell::new(vec![0u8; cap as usize]),
    };
    // SAFETY: as in `shm_ring`: all-zero is a valid (fresh) `RingControl`.
    let ctl: Box<RingControl> = unsafe { Box::new(std::mem::zeroed()) };
    let mut producer = Producer::attach(&ctl, cap);
    let max = max_payload(cap);
    let mut written = 0;
    for m in messages {
        let len = (m.len() as u32).min(max);
        match producer.reserve(&ctl, len) {
            Ok(Some(r)) => {
                data.write(r.data_off, &m[..len as usize]);
                producer.commit(&ctl, &data, r, Ordering::Release);
                written += 1;
            }
            _ => break,
        }
    }
    let mut out = vec![cap_log2 - 4];
    out.extend_from_slice(&ctl.producer.0.head.load(Ordering::Relaxed).to_le_bytes());
    out.extend_from_slice(&ctl.consumer.0.tail.load(Ordering::Relaxed).to_le_bytes());
    out.extend_from_slice(&max.to_le_bytes());
    let bytes = data.bytes.into_inner();
    // cap <= 2^15, so its length fits the u16 field.
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(&bytes);
    // The script: one read per message, and one more that finds the ring empty.
    out.resize(out.len() + written + 1, 0);
    out
}

/// A request type for [`rpc_wire`]: what a server's handler might take.
#[cfg(feature = "tokio")]
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum RpcSample {
    Ping,
    Add(i64, i64),
    Put { key: String, value: Vec<u8> },
    Many(Vec<Option<u32>>),
}

/// Receives `frame` as an RPC peer does ([`crate::rpc`]'s `wire::decode`, then, for a
/// request, the server's decoding of the body into its request type and its answer), and
/// checks that:
/// - anything malformed is [`Error::Protocol`], never a panic or another error;
/// - a decoded frame is exactly the frame the encoder makes of what was decoded (requests,
///   responses and cancels byte for byte; an error response decodes to the same failure
///   when re-encoded, postcard allowing trailing bytes);
/// - a request whose body is not the handler's type is answered with a `BadRequest` error
///   response that the client decodes, and one that is, with a response that decodes to the
///   same value.
///
/// # Panics
/// When one of these does not hold.
#[cfg(feature = "tokio")]
pub fn rpc_wire(frame: &[u8]) {
    use crate::rpc::wire::{self, Failure, Frame};
    let decoded = match wire::decode(frame) {
        Ok(f) => f,
        Err(Error::Protocol(_)) => return,
        Err(e) => panic!("RPC frame decoding failed with a non-Protocol error: {e}"),
    };
    let same_header = |kind: u8, id: u64| {
        assert_eq!(frame[0], kind, "kind byte");
        assert_eq!(frame[1..wire::HEADER], id.to_le_bytes(), "call id");
    };
    match decoded {
        Frame::Request { id, body } => {
            same_header(1, id);
            assert_eq!(body, &frame[wire::HEADER..], "request body");
            // The server's side: decode the body, answer.
            let answer = match postcard::from_bytes::<RpcSample>(body) {
                Ok(req) => {
                    let resp = wire::response(id, &req).expect("a decoded request re-encodes");
                    match wire::decode(&resp).expect("a response frame decodes") {
                        Frame::Response { id: got, body } => {
                            assert_eq!(got, id);
                            let back: RpcSample =
                                postcard::from_bytes(body).expect("an encoded value decodes");
                            assert_eq!(back, req, "response round trip");
                        }
                        other => panic!("response decoded as {other:?}"),
                    }
                    return;
                }
                Err(e) => Failure::BadRequest(e.to_string()),
            };
            let bytes = wire::failure(id, &answer);
            assert_eq!(
                wire::decode(&bytes).expect("an error response decodes"),
                Frame::Failure {
                    id,
                    failure: answer
                }
            );
        }
        Frame::Response { id, body } => {
            same_header(2, id);
            assert_eq!(body, &frame[wire::HEADER..], "response body");
        }
        Frame::Failure { id, failure } => {
            same_header(3, id);
            let again = wire::failure(id, &failure);
            assert!(again.len() <= frame.len(), "re-encoding grew");
            assert_eq!(
                wire::decode(&again).expect("a re-encoded error response decodes"),
                Frame::Failure { id, failure },
            );
        }
        Frame::Cancel { id } => assert_eq!(wire::cancel(id), frame, "cancel frame"),
    }
}

/// Frames of every kind as the RPC code encodes them, for the seed corpus of the `rpc_wire`
/// fuzz target (beside frames captured from a real client and server).
#[cfg(feature = "tokio")]
pub fn rpc_wire_seeds() -> Vec<Vec<u8>> {
    use crate::rpc::wire::{self, Failure};
    let requests = [
        RpcSample::Ping,
        RpcSample::Add(-3, i64::MAX),
        RpcSample::Put {
            key: "k".into(),
            value: vec![1, 2, 3],
        },
        RpcSample::Many(vec![Some(7), None, Some(u32::MAX)]),
    ];
    let mut seeds: Vec<Vec<u8>> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| wire::request(i as u64 + 1, r).expect("encodes"))
        .collect();
    seeds.push(wire::response(9, &(5u8, "five")).expect("encodes"));
    seeds.push(wire::failure(
        10,
        &Failure::BadRequest("unexpected end of input".into()),
    ));
    seeds.push(wire::failure(
        11,
        &Failure::HandlerFailed("panicked".into()),
    ));
    seeds.push(wire::cancel(u64::MAX));
    seeds
}
