//! Length-prefixed framing of messages on byte streams (pipes, FIFOs, Unix stream sockets, TCP).
//!
//! Wire format: each message is a 4-byte little-endian length `N` followed by `N` bytes.
//!
//! - The reader checks `N` against the endpoint's maximum *before* allocating anything; a
//!   larger `N` is [`Error::IncomingTooLarge`] and the stream is then unusable
//!   ([`Error::Desynchronized`]).
//! - The reader keeps a 64 KiB read-ahead buffer and asks the OS for one frame of the last
//!   size at a time (see `FrameReader::last_len` for why not more). Once a frame's header is
//!   in, the rest of its body is read straight into the caller's buffer (no extra copy).
//! - On pipes and FIFOs each read also asks for the next frame's header (4 more bytes). In a
//!   stream the next header has usually come: it is kept, and the next frame's body is then
//!   read with one plain `read` straight into the caller's buffer, so a stream of frames
//!   takes one system call and one copy (the kernel's) per message. Stream sockets read one
//!   whole frame per read instead (see `ByteSource::reads_next_header`).
//! - When no header is buffered (a round trip's reply, a first frame), a frame of up to
//!   4 KiB is read into the read-ahead buffer and copied out, and a larger one, on pipes and
//!   FIFOs, with one `readv` of its header into a word and its body straight into the
//!   caller's buffer, when that buffer already has the room.
//! - The writer sends each frame with one system call: a frame of up to 4 KiB of message is
//!   copied next to its header and written with `write`/`send`, a larger one goes as header and
//!   message with one `writev`/`sendmsg`.
//! - A `try_`/`_timeout` call that runs out of time mid-frame keeps what it has (reader) or what
//!   is left to write (writer) and resumes with the next call, so the stream never desyncs on a
//!   timeout.

use std::io::IoSlice;
use std::mem::MaybeUninit;

use crate::error::{Error, Result};
use crate::transport::Wait;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// Read-ahead buffer size.
const READ_AHEAD: usize = 64 * 1024;

/// When no header is buffered, frames of at most this many body bytes are read with one
/// plain `read` into the read-ahead buffer and copied out, larger ones (up to
/// [`READ_AHEAD`]) with one `readv` of the header into a word and the body straight into
/// the caller's buffer. Copying a small
/// body costs less than `readv`'s import of the vector, and the reader is what bounds a
/// pipe stream (it ran at 100 % of its CPU while the writer idled 13 %, `perf record -a`).
/// Interleaved with the C yardstick (`scripts/interleave.sh stream 10`, `readv` -> `read`):
/// pipe 64 B 0.92 -> 0.98 of C, 4 KiB 0.79 -> 0.81; FIFO 64 B 0.81 -> 0.83 (14 runs),
/// 4 KiB 0.78 -> 0.80; round trips 1-5 % shorter.
const COPY_OUT_MAX: usize = 4096;

/// Something frames can be read from. `read` returns 0 at end of stream.
pub(crate) trait ByteSource {
    /// Reads into `buf`, initialising and returning the first `n` bytes.
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>], wait: Wait) -> Result<usize>;

    /// Whether [`read_head_body`](Self::read_head_body) reads into both buffers with one
    /// call (the frame reader then reads a frame's body straight into the caller's buffer).
    fn reads_head_and_body(&self) -> bool {
        false
    }

    /// Whether reads may ask for the next frame's header along with a body (pipes and
    /// FIFOs: see [`FrameReader::read_body`]). On a stream socket a read that ends 4 bytes
    /// into the next message takes two of the kernel's buffers where one would do: Unix
    /// 64-byte streams went from 1.00 to 0.87 of C.
    fn reads_next_header(&self) -> bool {
        false
    }

    /// Reads into `head`, then on into `body` (one `readv`), returning how many bytes came in
    /// all (`head` fills first). Called only where
    /// [`reads_head_and_body`](Self::reads_head_and_body) says so.
    fn read_head_body(
        &mut self,
        head: &mut [u8; HEADER_LEN],
        body: &mut [u8],
        wait: Wait,
    ) -> Result<usize>;
}

/// [`ByteSource::read_head_body`] from bytes in memory: up to `limit` bytes of `data` into
/// `head` then `body`, which are taken off `data`.
pub(crate) fn head_body_from(
    data: &mut &[u8],
    limit: usize,
    head: &mut [u8; HEADER_LEN],
    body: &mut [u8],
) -> usize {
    let n = (HEADER_LEN + body.len()).min(data.len()).min(limit);
    let h = n.min(HEADER_LEN);
    head[..h].copy_from_slice(&data[..h]);
    body[..n - h].copy_from_slice(&data[h..n]);
    *data = &data[n..];
    n
}

/// Something frames can be written to.
pub(crate) trait ByteSink {
    /// Writes some prefix of `bufs`, returning its length.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>], wait: Wait) -> Result<usize>;
}

/// Bytes of the next frame's header a read may ask for after a body of `len` bytes: none
/// where the source says not to, or where the caller's buffer would then grow past the
/// read-ahead size (a large message comes in a vector of its own size, and one more system
/// call per frame is nothing there).
#[inline]
fn next_header_len<S: ByteSource + ?Sized>(src: &S, len: usize) -> usize {
    if len + HEADER_LEN <= READ_AHEAD && src.reads_next_header() {
        HEADER_LEN
    } else {
        0
    }
}

/// The body length a frame header at the start of `b` (at least [`HEADER_LEN`] bytes)
/// states.
#[inline(always)]
fn frame_len(b: &[u8]) -> usize {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Reads and appends up to `n` bytes to `v` (at most its spare capacity).
#[inline(always)]
fn read_append<S: ByteSource + ?Sized>(
    src: &mut S,
    v: &mut Vec<u8>,
    n: usize,
    wait: Wait,
) -> Result<usize> {
    let spare = v.spare_capacity_mut();
    let n = n.min(spare.len());
    let got = src.read_uninit(&mut spare[..n], wait)?;
    debug_assert!(got <= n);
    // SAFETY:
    // - `read_uninit` initialised the first `got` bytes of the spare capacity, and `got <= n`
    //   which is within the spare capacity, so `len + got <= capacity`.
    unsafe { v.set_len(v.len() + got.min(n)) };
    Ok(got)
}

/// The reading half of a framed stream.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// Read-ahead: unconsumed bytes are `ahead[start..]`.
    ahead: Vec<u8>,
    start: usize,
    /// Body length of a frame whose body was partly received when a wait ran out.
    partial_len: Option<usize>,
    /// The partly received body itself (swapped with the caller's buffer, never copied).
    partial_body: Vec<u8>,
    desynchronized: bool,
    max: usize,
    /// Body length of the last frame. When nothing is buffered, a read asks for one frame of
    /// that size (as a reader that knows the message size would), not for everything queued:
    /// draining the pipe or socket in one gulp leaves the reader idle and asleep, and then
    /// the sender pays a cross-CPU wake-up for nearly every message (measured: 63 k context
    /// switches on the reader's CPU in 2 s against 6 k, and 30 % less 64-byte throughput).
    last_len: usize,
}

impl FrameReader {
    pub(crate) fn new(max: usize) -> FrameReader {
        FrameReader {
            ahead: Vec::new(),
            start: 0,
            partial_len: None,
            partial_body: Vec::new(),
            desynchronized: false,
            max,
            last_len: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.ahead[self.start..]
    }

    /// Refills the read-ahead buffer; returns bytes read (0 at end of stream).
    fn fill<S: ByteSource + ?Sized>(&mut self, src: &mut S, wait: Wait) -> Result<usize> {
        if self.ahead.capacity() < READ_AHEAD {
            self.ahead.reserve_exact(READ_AHEAD - self.ahead.len());
        }
        if self.start == self.ahead.len() {
            self.ahead.clear();
            self.start = 0;
        } else if self.start > 0 && self.ahead.capacity() - self.ahead.len() < HEADER_LEN {
            self.ahead.drain(..self.start);
            self.start = 0;
        }
        let want = if self.buffered().is_empty() {
            HEADER_LEN + self.last_len.max(1)
        } else {
            usize::MAX
        };
        read_append(src, &mut self.ahead, want, wait)
    }

    /// Replaces `out` with the next message.
    #[inline(always)]
    pub(crate) fn recv<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        out: &mut Vec<u8>,
        wait: Wait,
    ) -> Result<()> {
        if self.desynchronized {
            return Err(Error::Desynchronized);
        }
        if let Some(len) = self.partial_len.take() {
            std::mem::swap(out, &mut self.partial_body);
            self.partial_body.clear();
            return self.read_body(src, out, len, wait);
        }
        let buffered = self.ahead.len() - self.start;
        if buffered == HEADER_LEN {
            // A stream's common case: the last read brought this frame's header.
            return self.recv_headed(src, out, wait);
        }
        if buffered == 0 && self.last_len <= COPY_OUT_MAX && self.ahead.capacity() >= READ_AHEAD {
            return self.recv_small(src, out, wait);
        }
        // Only into room `out` already has: nothing is allocated before the header is read
        // and checked against the maximum.
        if self.buffered().is_empty()
            && self.last_len > COPY_OUT_MAX
            && self.last_len <= READ_AHEAD
            && out.capacity() >= self.last_len + next_header_len(src, self.last_len)
            && src.reads_head_and_body()
        {
            return self.recv_direct(src, out, wait);
        }
        self.recv_buffered(src, out, wait)
    }

    /// The next frame when exactly its header is buffered: the body (and the next header)
    /// with one read straight into `out`.
    #[inline(always)]
    fn recv_headed<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        out: &mut Vec<u8>,
        wait: Wait,
    ) -> Result<()> {
        let b = &self.ahead[self.start..];
        let len = frame_len(b);
        if len > self.max {
            return self.recv_buffered(src, out, wait);
        }
        self.ahead.clear();
        self.start = 0;
        self.last_len = len;
        out.clear();
        self.read_body(src, out, len, wait)
    }

    /// The next frame when nothing is buffered and frames of `last_len` bytes, at most
    /// [`COPY_OUT_MAX`], are expected: one read of one such frame into the read-ahead
    /// buffer, its body copied out. What [`recv_buffered`](Self::recv_buffered) does, in
    /// fewer steps: this is a small-message stream's whole receive path.
    #[inline(always)]
    fn recv_small<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        out: &mut Vec<u8>,
        wait: Wait,
    ) -> Result<()> {
        self.ahead.clear();
        self.start = 0;
        // One frame and, on pipes, the next one's header, which in a stream has usually
        // come: the next frame's body is then read by `recv_headed` into the caller's buffer.
        let want = HEADER_LEN + self.last_len.max(1) + next_header_len(src, self.last_len);
        let got = read_append(src, &mut self.ahead, want, wait)?;
        if got >= HEADER_LEN {
            let b = &self.ahead[..got];
            let len = frame_len(b);
            if len <= self.max && got - HEADER_LEN >= len {
                out.clear();
                out.extend_from_slice(&b[HEADER_LEN..HEADER_LEN + len]);
                self.start = HEADER_LEN + len;
                self.last_len = len;
                return Ok(());
            }
        } else if got == 0 {
            return Err(Error::Disconnected);
        }
        // Part of a frame, or one too large: what is read stays buffered.
        self.recv_buffered(src, out, wait)
    }

    /// The next frame when nothing is buffered, frames of `last_len` bytes are expected and
    /// `out` has room for one: one read of the header into a word here and of the body
    /// straight into `out` (a frame of that size, the common case of a stream, is then
    /// copied once, by the kernel, as a reader that knows the size would). Whatever else
    /// came is kept for the next frames.
    fn recv_direct<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        out: &mut Vec<u8>,
        wait: Wait,
    ) -> Result<()> {
        // The body and the next frame's header, as in `recv_small`.
        let want = self.last_len + next_header_len(src, self.last_len);
        // Reuses what `out` holds: a stream of one size initialises it once, not per frame.
        // Until a header has come, `out` is as the caller left it (zeros appended within its
        // capacity and taken off again at most).
        let orig = out.len();
        if orig < want {
            out.resize(want, 0);
        }
        let mut head = [0u8; HEADER_LEN];
        let got = match src.read_head_body(&mut head, &mut out[..want], wait) {
            Ok(n) => n,
            Err(e) => {
                out.truncate(orig);
                return Err(e);
            }
        };
        if got < HEADER_LEN {
            out.truncate(orig);
            if got == 0 {
                return Err(Error::Disconnected);
            }
            // Part of a header: the buffered path reads the rest.
            self.ahead.clear();
            self.start = 0;
            self.ahead.extend_from_slice(&head[..got]);
            return self.recv_buffered(src, out, wait);
        }
        let len = u32::from_le_bytes(head) as usize;
        if len > self.max {
            // The stream is unusable from here; `out` keeps its length (the bytes that came
            // after the header may have been written over its start).
            out.truncate(orig);
            self.desynchronized = true;
            return Err(Error::IncomingTooLarge {
                size: len as u64,
                max: self.max,
            });
        }
        let body_got = (got - HEADER_LEN).min(want);
        out.truncate(body_got);
        self.last_len = len;
        if body_got > len {
            // The frame was shorter than expected: what follows it is the next frames'.
            self.ahead.clear();
            self.start = 0;
            self.ahead.extend_from_slice(&out[len..]);
            out.truncate(len);
            return Ok(());
        }
        out.reserve(len + next_header_len(src, len) - out.len());
        self.read_body(src, out, len, wait)
    }

    /// The next frame through the read-ahead buffer.
    fn recv_buffered<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        out: &mut Vec<u8>,
        wait: Wait,
    ) -> Result<()> {
        while self.buffered().len() < HEADER_LEN {
            if self.fill(src, wait)? == 0 {
                let have = self.buffered().len();
                return Err(if have == 0 {
                    Error::Disconnected
                } else {
                    Error::Truncated {
                        received: have,
                        expected: HEADER_LEN,
                    }
                });
            }
        }
        let b = self.buffered();
        let len = frame_len(b);
        if len > self.max {
            self.desynchronized = true;
            return Err(Error::IncomingTooLarge {
                size: len as u64,
                max: self.max,
            });
        }
        self.start += HEADER_LEN;
        self.last_len = len;
        out.clear();
        out.reserve(len + next_header_len(src, len));
        let take = len.min(self.buffered().len());
        out.extend_from_slice(&self.ahead[self.start..self.start + take]);
        self.start += take;
        self.read_body(src, out, len, wait)
    }

    /// Reads the rest of a frame's body into `out` (all of `self.ahead` was taken). Each
    /// read asks for the rest of the body and the next frame's header, straight into `out`:
    /// in a stream the next header has usually come, and is then read with this body instead
    /// of with the next, so a stream of frames whose header came before their body is read
    /// with one system call per frame and no copy. Bytes past the body go back to the
    /// read-ahead buffer. With the leaner paths of `recv_small` and `recv_headed` (325 -> 214
    /// instructions per 64-byte receive, callgrind), interleaved with the C yardstick
    /// (`DUR=0.5 scripts/interleave.sh stream 8`), ratio to C before -> after: pipe 64 B
    /// 0.88 -> 0.96, 4 KiB 0.86 -> 0.87; FIFO 4 KiB 0.88 -> 0.91, FIFO 64 B 13 % more
    /// messages a second; Unix and TCP unchanged (they do not take the next header).
    #[inline(always)]
    fn read_body<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        out: &mut Vec<u8>,
        len: usize,
        wait: Wait,
    ) -> Result<()> {
        while out.len() < len {
            let want = len - out.len() + next_header_len(src, len);
            out.reserve(want);
            match read_append(src, out, want, wait) {
                Ok(0) => return Err(self.truncated(out.len(), len)),
                Ok(_) => {}
                Err(e) => return Err(self.body_interrupted(out, len, e)),
            }
        }
        if out.len() > len {
            self.keep_after_body(out, len);
        }
        Ok(())
    }

    /// Moves what came after a body (part or all of the next header) from `out` to the
    /// read-ahead buffer, which is empty.
    fn keep_after_body(&mut self, out: &mut Vec<u8>, len: usize) {
        debug_assert_eq!(self.start, self.ahead.len());
        self.ahead.clear();
        self.start = 0;
        self.ahead.extend_from_slice(&out[len..]);
        out.truncate(len);
    }

    /// End of stream after `got` of a body's `len` bytes.
    #[cold]
    fn truncated(&mut self, got: usize, len: usize) -> Error {
        self.desynchronized = true;
        Error::Truncated {
            received: HEADER_LEN + got,
            expected: HEADER_LEN + len,
        }
    }

    /// A read of a body failed with `e`. If the call may be retried (a wait ran out), keeps
    /// what came for the next call; otherwise the stream is unusable.
    #[cold]
    fn body_interrupted(&mut self, out: &mut Vec<u8>, len: usize, e: Error) -> Error {
        if e.is_retryable() {
            std::mem::swap(out, &mut self.partial_body);
            self.partial_len = Some(len);
        } else {
            self.desynchronized = true;
        }
        e
    }
}

/// The writing half of a framed stream.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    /// Unwritten tail of a frame whose wait ran out part-way.
    pending: Vec<u8>,
    max: usize,
    /// A small frame, header and message side by side, for one plain `write`.
    contiguous: Vec<u8>,
}

/// Frames up to this size (header included) are copied into one buffer and written with a
/// plain `write`/`send`; larger ones go out as header and message with `writev`/`sendmsg`.
/// Two buffers cost the kernel more than the copy of a small message: 64-byte streams went
/// 7 % faster on pipes, 8 % on FIFOs, 7 % on Unix sockets and 5 % on TCP (one binary, six
/// interleaved runs each); at 4 KiB it was even (+0.4 % and +1 %).
const CONTIGUOUS_MAX: usize = HEADER_LEN + 4096;

impl FrameWriter {
    pub(crate) fn new(max: usize) -> FrameWriter {
        FrameWriter {
            pending: Vec::new(),
            max,
            contiguous: Vec::new(),
        }
    }

    /// Writes any tail left from an earlier send.
    pub(crate) fn flush_pending<S: ByteSink + ?Sized>(
        &mut self,
        dst: &mut S,
        wait: Wait,
    ) -> Result<()> {
        while !self.pending.is_empty() {
            let n = dst.write_vectored(&[IoSlice::new(&self.pending)], wait)?;
            self.pending.drain(..n);
        }
        Ok(())
    }

    /// Sends `msg` as one frame.
    #[inline(always)]
    pub(crate) fn send<S: ByteSink + ?Sized>(
        &mut self,
        dst: &mut S,
        msg: &[u8],
        wait: Wait,
        transport: &'static str,
    ) -> Result<()> {
        if msg.len() > self.max {
            return Err(Error::MessageTooLarge {
                size: msg.len(),
                max: self.max,
                transport,
            });
        }
        self.flush_pending(dst, wait)?;
        let header = (msg.len() as u32).to_le_bytes();
        let total = HEADER_LEN + msg.len();
        let small = total <= CONTIGUOUS_MAX;
        if small {
            self.contiguous.clear();
            self.contiguous.extend_from_slice(&header);
            self.contiguous.extend_from_slice(msg);
        }
        let mut done = 0;
        while done < total {
            let result = if small {
                dst.write_vectored(&[IoSlice::new(&self.contiguous[done..])], wait)
            } else if done < HEADER_LEN {
                dst.write_vectored(&[IoSlice::new(&header[done..]), IoSlice::new(msg)], wait)
            } else {
                dst.write_vectored(&[IoSlice::new(&msg[done - HEADER_LEN..])], wait)
            };
            match result {
                Ok(0) => return Err(Error::Disconnected),
                Ok(n) => done += n,
                Err(e) if e.is_retryable() && done > 0 => {
                    if small {
                        self.pending.extend_from_slice(&self.contiguous[done..]);
                    } else if done < HEADER_LEN {
                        self.pending.extend_from_slice(&header[done..]);
                        self.pending.extend_from_slice(msg);
                    } else {
                        self.pending.extend_from_slice(&msg[done - HEADER_LEN..]);
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Decodes a complete in-memory byte string as a sequence of frames, as the reader would.
/// Used by tests and fuzzing: never panics, never allocates more than `max` per frame.
pub fn decode_frames(mut bytes: &[u8], max: usize) -> Result<Vec<Vec<u8>>> {
    let mut src = SliceSource {
        data: &mut bytes,
        chunk: usize::MAX,
        next_header: true,
    };
    let mut reader = FrameReader::new(max);
    let mut frames = Vec::new();
    loop {
        let mut out = Vec::new();
        match reader.recv(&mut src, &mut out, Wait::Forever) {
            Ok(()) => frames.push(out),
            Err(Error::Disconnected) => return Ok(frames),
            Err(e) => return Err(e),
        }
    }
}

/// An in-memory source that hands out at most `chunk` bytes per read; empty means end of
/// stream.
pub(crate) struct SliceSource<'a, 'b> {
    pub(crate) data: &'a mut &'b [u8],
    pub(crate) chunk: usize,
    /// What [`ByteSource::reads_next_header`] says.
    pub(crate) next_header: bool,
}

impl ByteSource for SliceSource<'_, '_> {
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>], _wait: Wait) -> Result<usize> {
        let n = buf.len().min(self.data.len()).min(self.chunk);
        for (dst, src) in buf[..n].iter_mut().zip(&self.data[..n]) {
            dst.write(*src);
        }
        *self.data = &self.data[n..];
        Ok(n)
    }

    fn reads_head_and_body(&self) -> bool {
        true
    }

    fn reads_next_header(&self) -> bool {
        self.next_header
    }

    fn read_head_body(
        &mut self,
        head: &mut [u8; HEADER_LEN],
        body: &mut [u8],
        _wait: Wait,
    ) -> Result<usize> {
        Ok(head_body_from(self.data, self.chunk, head, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A sink that accepts at most `chunk` bytes per call and then, once, says WouldBlock.
    struct ChunkSink {
        out: Vec<u8>,
        chunk: usize,
        block_after: Option<usize>,
    }

    impl ByteSink for ChunkSink {
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>], _wait: Wait) -> Result<usize> {
            if let Some(limit) = self.block_after {
                if self.out.len() >= limit {
                    self.block_after = None;
                    return Err(Error::WouldBlock);
                }
            }
            let mut n = 0;
            for b in bufs {
                let take = (self.chunk - n).min(b.len());
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.chunk {
                    break;
                }
            }
            Ok(n)
        }
    }

    fn encode(msgs: &[Vec<u8>], chunk: usize) -> Vec<u8> {
        let mut sink = ChunkSink {
            out: Vec::new(),
            chunk,
            block_after: None,
        };
        let mut w = FrameWriter::new(usize::MAX);
        for m in msgs {
            w.send(&mut sink, m, Wait::Forever, "test").unwrap();
        }
        sink.out
    }

    #[test]
    fn oversized_header_is_refused_without_allocating() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let err = decode_frames(&bytes, 1024).unwrap_err();
        assert!(
            matches!(err, Error::IncomingTooLarge { size, max: 1024 } if size == u32::MAX as u64)
        );
        let mut src_bytes: &[u8] = &bytes;
        let mut src = SliceSource {
            data: &mut src_bytes,
            chunk: usize::MAX,
            next_header: true,
        };
        let mut r = FrameReader::new(1024);
        let mut out = Vec::new();
        assert!(r.recv(&mut src, &mut out, Wait::Forever).is_err());
        assert_eq!(out.capacity(), 0, "nothing allocated for the refused frame");
        assert!(matches!(
            r.recv(&mut src, &mut out, Wait::Forever),
            Err(Error::Desynchronized)
        ));
    }

    #[test]
    fn truncated_frames() {
        let e = decode_frames(&[5, 0], 100).unwrap_err();
        assert!(matches!(
            e,
            Error::Truncated {
                received: 2,
                expected: 4
            }
        ));
        let e = decode_frames(&[5, 0, 0, 0, 1, 2], 100).unwrap_err();
        assert!(matches!(
            e,
            Error::Truncated {
                received: 6,
                expected: 9
            }
        ));
        assert_eq!(decode_frames(&[], 100).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(decode_frames(&[0, 0, 0, 0], 100).unwrap(), vec![vec![]]);
    }

    #[test]
    fn writer_keeps_tail_when_wait_runs_out_mid_frame() {
        let mut sink = ChunkSink {
            out: Vec::new(),
            chunk: 3,
            block_after: Some(6),
        };
        let mut w = FrameWriter::new(100);
        w.send(&mut sink, b"hello world", Wait::Never, "test")
            .unwrap();
        assert_eq!(sink.out.len(), 6);
        w.send(&mut sink, b"next", Wait::Never, "test").unwrap();
        assert_eq!(
            decode_frames(&sink.out, 100).unwrap(),
            vec![b"hello world".to_vec(), b"next".to_vec()]
        );
        assert!(matches!(
            w.send(&mut sink, &[0; 101], Wait::Never, "test"),
            Err(Error::MessageTooLarge {
                size: 101,
                max: 100,
                ..
            })
        ));
    }

    /// Frames up to `CONTIGUOUS_MAX` go out as one buffer, larger ones as header and message;
    /// either kind resumes after a partial write that ran out of time.
    #[test]
    fn small_frames_are_one_buffer_large_ones_two() {
        struct Counting {
            out: Vec<u8>,
            slices: Vec<usize>,
        }
        impl ByteSink for Counting {
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>], _wait: Wait) -> Result<usize> {
                self.slices.push(bufs.len());
                bufs.iter().for_each(|b| self.out.extend_from_slice(b));
                Ok(bufs.iter().map(|b| b.len()).sum())
            }
        }
        let mut sink = Counting {
            out: Vec::new(),
            slices: Vec::new(),
        };
        let mut w = FrameWriter::new(usize::MAX);
        let small = vec![1u8; CONTIGUOUS_MAX - HEADER_LEN];
        let large = vec![2u8; CONTIGUOUS_MAX - HEADER_LEN + 1];
        for m in [&small, &large, &Vec::new()] {
            w.send(&mut sink, m, Wait::Forever, "test").unwrap();
        }
        assert_eq!(sink.slices, [1, 2, 1]);
        assert_eq!(
            decode_frames(&sink.out, usize::MAX).unwrap(),
            [small.clone(), large.clone(), Vec::new()]
        );

        for (m, stop) in [(&small, 2), (&small, 100), (&large, 2), (&large, 100)] {
            let mut sink = ChunkSink {
                out: Vec::new(),
                chunk: 50,
                block_after: Some(stop),
            };
            w.send(&mut sink, m, Wait::Never, "test").unwrap();
            w.send(&mut sink, b"after", Wait::Never, "test").unwrap();
            assert_eq!(
                decode_frames(&sink.out, usize::MAX).unwrap(),
                [m.clone(), b"after".to_vec()],
                "{} bytes, blocked after {stop}",
                m.len()
            );
        }
    }

    /// A source that says WouldBlock every other call.
    struct Stuttering<'a, 'b> {
        inner: SliceSource<'a, 'b>,
        flip: bool,
    }
    impl ByteSource for Stuttering<'_, '_> {
        fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>], wait: Wait) -> Result<usize> {
            self.flip = !self.flip;
            if self.flip {
                return Err(Error::WouldBlock);
            }
            self.inner.read_uninit(buf, wait)
        }

        fn reads_head_and_body(&self) -> bool {
            self.inner.reads_head_and_body()
        }

        fn reads_next_header(&self) -> bool {
            self.inner.reads_next_header()
        }

        fn read_head_body(
            &mut self,
            head: &mut [u8; HEADER_LEN],
            body: &mut [u8],
            wait: Wait,
        ) -> Result<usize> {
            self.flip = !self.flip;
            if self.flip {
                return Err(Error::WouldBlock);
            }
            self.inner.read_head_body(head, body, wait)
        }
    }

    /// Reads `bytes` as frames through a reused buffer (the direct path once it has room),
    /// `chunk` bytes at most per read, every other read refused.
    fn read_all_reusing(bytes: &[u8], chunk: usize, next_header: bool) -> Vec<Vec<u8>> {
        let mut data: &[u8] = bytes;
        let mut src = Stuttering {
            inner: SliceSource {
                data: &mut data,
                chunk,
                next_header,
            },
            flip: false,
        };
        let mut r = FrameReader::new(usize::MAX);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        loop {
            match r.recv(&mut src, &mut buf, Wait::Never) {
                Ok(()) => got.push(buf.clone()),
                Err(Error::WouldBlock) => continue,
                Err(Error::Disconnected) => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A source that counts its reads.
    struct Counting<'a, 'b> {
        inner: SliceSource<'a, 'b>,
        head_body_reads: usize,
        plain_reads: usize,
    }
    impl ByteSource for Counting<'_, '_> {
        fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>], wait: Wait) -> Result<usize> {
            self.plain_reads += 1;
            self.inner.read_uninit(buf, wait)
        }

        fn reads_head_and_body(&self) -> bool {
            true
        }

        fn reads_next_header(&self) -> bool {
            self.inner.reads_next_header()
        }

        fn read_head_body(
            &mut self,
            head: &mut [u8; HEADER_LEN],
            body: &mut [u8],
            wait: Wait,
        ) -> Result<usize> {
            self.head_body_reads += 1;
            self.inner.read_head_body(head, body, wait)
        }
    }

    /// Receives frames of `size` bytes one at a time (one frame in the source per call, as
    /// from a writer that sends one per read) and returns, per frame, the reads of each
    /// kind it took and whether it landed in the buffer the previous one did.
    fn reads_per_frame(size: usize) -> Vec<(usize, usize, bool)> {
        let mut r = FrameReader::new(100_000);
        let mut buf = Vec::new();
        let mut at = None;
        (0..5u8)
            .map(|i| {
                let msg = vec![i; size];
                let bytes = encode(std::slice::from_ref(&msg), usize::MAX);
                let mut data: &[u8] = &bytes;
                let mut src = Counting {
                    inner: SliceSource {
                        data: &mut data,
                        chunk: usize::MAX,
                        next_header: true,
                    },
                    head_body_reads: 0,
                    plain_reads: 0,
                };
                r.recv(&mut src, &mut buf, Wait::Never).unwrap();
                assert_eq!(buf, msg);
                assert!(src.inner.data.is_empty() && r.buffered().is_empty());
                let same = at == Some(buf.as_ptr());
                at = Some(buf.as_ptr());
                (src.head_body_reads, src.plain_reads, same)
            })
            .collect()
    }

    #[test]
    fn a_stream_of_one_size_is_read_one_frame_per_read() {
        // Up to COPY_OUT_MAX: one plain read per frame (into the read-ahead buffer).
        for size in [0, 64, COPY_OUT_MAX] {
            // (The first frame's size is not known yet: its header comes first.)
            for (i, &(head_body, plain, _)) in reads_per_frame(size).iter().enumerate().skip(1) {
                assert_eq!((head_body, plain), (0, 1), "{size} bytes, frame {i}");
            }
        }
        // Larger: once the size is known, one read of header and body straight into the
        // caller's buffer (nothing allocated or copied).
        for (i, &(head_body, plain, same)) in reads_per_frame(5000).iter().enumerate() {
            if i == 0 {
                // The size is not known yet: through the read-ahead buffer.
                assert_eq!(head_body, 0);
            } else {
                assert_eq!((head_body, plain, same), (1, 0, true), "frame {i}");
            }
        }
        // Nothing allocated for a refused frame on the direct path either.
        let mut r = FrameReader::new(10_000);
        let mut buf = Vec::new();
        for _ in 0..2 {
            let bytes = encode(&[vec![1; 5000]], usize::MAX);
            let mut data: &[u8] = &bytes;
            let mut src = SliceSource {
                data: &mut data,
                chunk: usize::MAX,
                next_header: true,
            };
            r.recv(&mut src, &mut buf, Wait::Never).unwrap();
        }
        let too_big = encode(&[vec![9; 10_001]], usize::MAX);
        let mut data: &[u8] = &too_big;
        let mut src = SliceSource {
            data: &mut data,
            chunk: usize::MAX,
            next_header: true,
        };
        let mut fresh = Vec::with_capacity(5000);
        assert!(matches!(
            r.recv(&mut src, &mut fresh, Wait::Never),
            Err(Error::IncomingTooLarge {
                size: 10_001,
                max: 10_000
            })
        ));
        assert_eq!((fresh.len(), fresh.capacity()), (0, 5000));
    }

    /// Frames of one size queued back to back, as from a writer ahead of its reader: after
    /// the first, one read per frame. A source that may read past a frame (pipes) gets the
    /// next header with each body and the body straight in the caller's buffer, with plain
    /// reads; one that may not (sockets) reads one whole frame per read.
    #[test]
    fn queued_frames_are_read_one_per_read() {
        for next_header in [true, false] {
            for size in [0, 1, 64, COPY_OUT_MAX, 5000] {
                let msgs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; size]).collect();
                let bytes = encode(&msgs, usize::MAX);
                let mut data: &[u8] = &bytes;
                let mut src = Counting {
                    inner: SliceSource {
                        data: &mut data,
                        chunk: usize::MAX,
                        next_header,
                    },
                    head_body_reads: 0,
                    plain_reads: 0,
                };
                let mut r = FrameReader::new(100_000);
                let mut buf = Vec::new();
                let mut reads = Vec::new();
                for m in &msgs {
                    let before = (src.head_body_reads, src.plain_reads);
                    r.recv(&mut src, &mut buf, Wait::Never).unwrap();
                    assert_eq!(&buf, m);
                    reads.push((src.head_body_reads - before.0, src.plain_reads - before.1));
                }
                let case = format!("{size} bytes, next header {next_header}: {reads:?}");
                for &(head_body, plain) in &reads[1..] {
                    // (Empty frames are headers alone: a read may bring several.)
                    assert!(
                        head_body + plain == 1 || size == 0 && head_body + plain == 0,
                        "{case}"
                    );
                    if next_header {
                        assert_eq!(head_body, 0, "{case}");
                    }
                }
                assert!(
                    src.inner.data.is_empty() && r.buffered().is_empty(),
                    "{case}"
                );
                assert!(matches!(
                    r.recv(&mut src, &mut buf, Wait::Never),
                    Err(Error::Disconnected)
                ));
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip_any_chunking(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40_000), 0..8),
            wchunk in 1usize..70_000,
            rchunk in 1usize..70_000,
            next_header in any::<bool>(),
        ) {
            let bytes = encode(&msgs, wchunk);
            prop_assert_eq!(read_all_reusing(&bytes, rchunk, next_header), msgs);
        }

        #[test]
        fn round_trip_runs_of_one_size(
            runs in proptest::collection::vec((0usize..9_000, 1usize..6), 0..6),
            rchunk in 1usize..20_000,
            next_header in any::<bool>(),
        ) {
            // Runs of equal sizes: the direct path's expected size is right, then too small
            // or too large when the size changes.
            let mut msgs = Vec::new();
            for (k, &(size, count)) in runs.iter().enumerate() {
                for i in 0..count {
                    msgs.push(vec![(k * 7 + i) as u8; size]);
                }
            }
            let bytes = encode(&msgs, usize::MAX);
            prop_assert_eq!(read_all_reusing(&bytes, rchunk, next_header), msgs);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..64) {
            let _ = decode_frames(&bytes, max);
        }
    }
}
