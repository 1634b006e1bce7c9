//! `ipckit bench-peer`: the benchmark's second process, as `child_work` in the C baseline.
//!
//! It dies with the parent (parent-death signal, checked against the parent's pid), exits at
//! its own deadline whatever happens, pins itself, attaches, then:
//! 1. echoes every message until END (which it echoes too), checking number and trailer;
//! 2. receives the stream until END, checking order, trailer and (1 in 1024) the payload, and
//!    acknowledges with its count, the time between its first and last message, and the gaps;
//! 3. on a lossy transport, stays a little to acknowledge a resent END, until BYE.

use std::time::{Duration, Instant};

use ipckit::{Error, MessageReceiver, MessageSender};
use rustix::process::{Pid, Signal};

use super::channel::Channel;
use super::pingpong::RESEND_AFTER;
use super::setup::{self, ATTACH_TIMEOUT};
use super::wire::{self, Ack, BYE, END, READY};
use crate::cli::PeerArgs;

/// How long a peer on a lossy transport waits for a resent END or BYE after acknowledging.
const LINGER: Duration = Duration::from_secs(1);

/// Runs the peer; the error is its one-line report to the parent (on standard error).
pub fn run(args: PeerArgs) -> Result<(), String> {
    follow_parent(args.parent_pid)?;
    exit_at(args.deadline);
    pin_to(&args.cpu)?;
    if args.mech.is_pattern() {
        return super::patterns::run_peer(&args);
    }
    let mut ch = setup::attach_peer(
        args.mech,
        args.bind.as_ref(),
        args.connect.as_ref(),
        Instant::now() + ATTACH_TIMEOUT,
    )?;
    ch.set_copies(args.mech.copies());
    let lossy = args.mech.is_lossy();
    let mut buf = Vec::with_capacity(args.size);
    echo_phase(&mut ch, &mut buf, args.size, lossy)?;
    let ack = stream_phase(&mut ch, &mut buf, args.size, lossy)?;
    let ack = ack.encode();
    ch.send(&ack).map_err(|e| format!("send ack: {e}"))?;
    if lossy {
        linger(&mut ch, &mut buf, &ack);
    }
    Ok(())
}

/// Restricts this process to `cpus` (the bench's `--cpu`); none given: left as it is.
pub(super) fn pin_to(cpus: &[usize]) -> Result<(), String> {
    if cpus.is_empty() {
        return Ok(());
    }
    ipckit::sys::pin_current_thread_to(cpus).map_err(|e| format!("pin to CPUs {cpus:?}: {e}"))
}

/// The `--cpu` argument that lets a child run on both of the bench's CPUs (a child inherits
/// the pinned parent's one CPU unless told otherwise).
pub(super) fn both_cpus_arg((a, b): (usize, usize)) -> [String; 2] {
    ["--cpu".to_owned(), format!("{a},{b}")]
}

/// Dies with the parent: asks for SIGKILL when it exits, then checks it had not already.
pub(super) fn follow_parent(parent_pid: u32) -> Result<(), String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    let parent = rustix::process::getppid().map(|p| Pid::as_raw(Some(p)));
    if parent.and_then(|p| u32::try_from(p).ok()) != Some(parent_pid) {
        return Err("the benchmark that started this peer is gone".to_owned());
    }
    Ok(())
}

/// Exits the process after `lifetime`, whatever it is doing then (from a helper thread apart
/// from the descriptor table, see [`super::helper_thread`]).
pub(super) fn exit_at(lifetime: Duration) {
    super::helper_thread::spawn(move || {
        std::thread::sleep(lifetime);
        eprintln!("still running at its deadline ({} s)", lifetime.as_secs());
        std::process::exit(4);
    });
}

/// Receives the next message; on a lossy transport, while waiting for the very first one,
/// repeats READY (the parent may not have got it) every [`RESEND_AFTER`].
fn recv_first(ch: &mut Channel, buf: &mut Vec<u8>) -> Result<(), String> {
    let ready = wire::control(READY, [0; 3]);
    loop {
        match ch.recv_into_timeout(buf, RESEND_AFTER) {
            Ok(()) => return Ok(()),
            Err(Error::Timeout { .. }) => {
                ch.send(&ready).map_err(|e| format!("resend READY: {e}"))?
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
}

/// Phase 1: echo until END. On a lossy transport a message may come twice (the parent resent
/// it because the echo was lost): it is echoed again.
fn echo_phase(ch: &mut Channel, buf: &mut Vec<u8>, size: usize, lossy: bool) -> Result<(), String> {
    let mut expect = 1u64;
    if lossy {
        recv_first(ch, buf)?;
    } else {
        ch.recv_data(buf, wire::full_check_due(expect))
            .map_err(|e| format!("ping-pong: recv: {e}"))?;
    }
    loop {
        let seq = wire::seq_of(buf).unwrap_or_default();
        if seq == END {
            return ch
                .send(buf)
                .map_err(|e| format!("ping-pong: echo END: {e}"));
        }
        let repeat = lossy && expect > 1 && seq == expect - 1;
        let want = if repeat { seq } else { expect };
        wire::check(buf, size, want).map_err(|e| format!("ping-pong: {e}"))?;
        if !repeat {
            expect += 1;
        }
        ch.send_data(buf, wire::full_check_due(seq))
            .map_err(|e| format!("ping-pong: echo {seq}: {e}"))?;
        ch.recv_data(buf, wire::full_check_due(expect))
            .map_err(|e| format!("ping-pong: recv: {e}"))?;
    }
}

/// Phase 2: receive the stream until END, then return the acknowledgement.
fn stream_phase(
    ch: &mut Channel,
    buf: &mut Vec<u8>,
    size: usize,
    lossy: bool,
) -> Result<Ack, String> {
    let reference = wire::pattern(size);
    let (mut count, mut last, mut drops) = (0u64, 0u64, 0u64);
    let mut first_at = None;
    let mut last_at = Instant::now();
    loop {
        ch.recv_data(buf, wire::full_check_due(count + 1))
            .map_err(|e| format!("stream: recv: {e}"))?;
        let seq = wire::seq_of(buf).unwrap_or_default();
        if seq == END {
            if lossy && count == 0 {
                // The parent resent the ping-pong's END: its echo was lost.
                ch.send(buf).map_err(|e| format!("stream: echo END: {e}"))?;
                continue;
            }
            break;
        }
        if count == 0 {
            first_at = Some(Instant::now());
        }
        count += 1;
        if lossy {
            last_at = Instant::now();
            if seq <= last {
                return Err(format!("stream: message {seq} after {last}"));
            }
            drops += seq - last - 1;
        } else if seq != last + 1 {
            return Err(format!("stream: got message {seq}, expected {}", last + 1));
        }
        last = seq;
        wire::check(buf, size, seq).map_err(|e| format!("stream: {e}"))?;
        if wire::full_check_due(count) && buf[8..size - 8] != reference[8..size - 8] {
            return Err(format!("stream: message {seq}: payload corrupted"));
        }
    }
    if !lossy {
        last_at = Instant::now();
    }
    let elapsed = first_at.map_or(Duration::ZERO, |first| last_at - first);
    Ok(Ack {
        count,
        elapsed_ns: elapsed.as_nanos() as u64,
        drops,
    })
}

/// Phase 3 (lossy): acknowledges a resent END again, until BYE or [`LINGER`] of silence.
fn linger(ch: &mut Channel, buf: &mut Vec<u8>, ack: &[u8]) {
    while ch.recv_into_timeout(buf, LINGER).is_ok() {
        let seq = wire::seq_of(buf);
        if seq == Some(BYE) || (seq == Some(END) && ch.send(ack).is_err()) {
            return;
        }
    }
}
