//! The parent's streaming phase: one-way throughput, as `parent_stream` in the C baseline.
//!
//! Numbered messages go out back to back for the duration (the clock is read every 64
//! messages below 64 KiB, after every message from 64 KiB), then END. The peer checks and
//! counts them and acknowledges END with its count. The rate is count / (first send to the
//! acknowledgement); on a lossy transport it is the received rate, count / (the peer's first
//! to last message), and the END is resent until acknowledged.

use std::time::{Duration, Instant};

use ipckit::{Error, MessageReceiver, MessageSender};

use super::channel::Channel;
use super::pingpong::{MAX_RESENDS, RESEND_AFTER};
use super::wire::{self, Ack, BYE, END};

/// Streaming figures.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub msgs_per_s: f64,
    /// Decimal gigabytes of payload per second.
    pub gbps: f64,
    /// Messages sent.
    pub sent: u64,
    /// Messages that never arrived (lossy transports).
    pub drops: u64,
}

/// Runs the phase. `out` holds a patterned message of the benchmark's size; `ack` is reused
/// for the acknowledgement.
pub fn run(
    ch: &mut Channel,
    duration: Duration,
    lossy: bool,
    out: &mut [u8],
    ack: &mut Vec<u8>,
) -> Result<Throughput, String> {
    let size = out.len();
    let mask: u64 = if size >= 64 * 1024 { 0 } else { 63 };
    let mut seq = 0u64;
    let t0 = Instant::now();
    loop {
        seq += 1;
        wire::stamp(out, seq);
        ch.send_data(out, wire::full_check_due(seq))
            .map_err(|e| format!("send {seq}: {e}"))?;
        if seq & mask == 0 && t0.elapsed() >= duration {
            break;
        }
    }
    let sent = seq;
    wire::mark(out, END);
    let got = if lossy {
        acknowledged_lossy(ch, out, ack)?
    } else {
        ch.send(out).map_err(|e| format!("send END: {e}"))?;
        ch.recv_into(ack).map_err(|e| format!("recv ack: {e}"))?;
        Ack::decode(ack).ok_or_else(|| format!("expected the ack, got {}", wire::what_is(ack)))?
    };
    let t1 = Instant::now();
    if got.count > sent || (!lossy && got.count != sent) {
        return Err(format!("the peer counted {} of {sent} messages", got.count));
    }
    let secs = if lossy {
        got.elapsed_ns as f64 / 1e9
    } else {
        (t1 - t0).as_secs_f64()
    };
    if secs <= 0.0 {
        return Err(format!("{} messages received: too few to time", got.count));
    }
    let msgs_per_s = got.count as f64 / secs;
    Ok(Throughput {
        msgs_per_s,
        gbps: msgs_per_s * size as f64 / 1e9,
        sent,
        drops: if lossy { sent - got.count } else { 0 },
    })
}

/// Sends END until the acknowledgement comes (at most [`MAX_RESENDS`] times,
/// [`RESEND_AFTER`] apart), then BYE so the peer need not linger.
fn acknowledged_lossy(ch: &mut Channel, end: &[u8], ack: &mut Vec<u8>) -> Result<Ack, String> {
    for _ in 0..MAX_RESENDS {
        ch.send(end).map_err(|e| format!("send END: {e}"))?;
        loop {
            match ch.recv_into_timeout(ack, RESEND_AFTER) {
                Ok(()) => {
                    if let Some(got) = Ack::decode(ack) {
                        // Lost or not, BYE only spares the peer its wait.
                        let _ = ch.try_send(&wire::control(BYE, [0; 3]));
                        return Ok(got);
                    }
                }
                Err(Error::Timeout { .. }) => break,
                Err(e) => return Err(format!("recv ack: {e}")),
            }
        }
    }
    Err(format!(
        "no ack for END after {MAX_RESENDS} tries {} ms apart",
        RESEND_AFTER.as_millis()
    ))
}
