//! The command line: every subcommand and option, as clap derive types.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipckit::Endpoint;

use crate::bench::Mechanism;
use crate::role::Role;

const URL_HELP: &str = "\
URLs:
  pipe:                          standard input/output (or the pipe inherited through IPCKIT_PIPE_FDS)
  fifo:///tmp/my.fifo            named pipe, one way: the binding side reads, the connecting side writes
  unix:///tmp/my.sock            Unix stream socket
  unix+dgram:///tmp/my.sock      Unix datagram socket
  unix+seqpacket:///tmp/my.sock  Unix sequenced-packet socket
  tcp://127.0.0.1:7000           TCP (port 0 binds a free port; the side that binds prints it)
  udp://127.0.0.1:7000           UDP (at most 65507 bytes per message; messages may be lost)
  shm://my-channel               shared-memory rings (/dev/shm), both ways; ?capacity=4M (bytes of
                                 each ring), ?wait=adaptive|spin|block|sem, ?spin_us=20
  mmap:///tmp/my-channel         the shm:// channel in memory-mapped files (same options)
  shm+mpsc://my-queue            one shared-memory queue, many senders, one receiver (one way)
  mq:///my-queue                 POSIX message queue, one way (limits: `ipckit doctor`)
  queue:///var/lib/my-queue      durable queue in a directory, one way: send appends (no receiver needs
                                 to run), recv reads as a consumer group (?group=NAME, default
                                 \"default\") and acknowledges each message once it is written out;
                                 ?durability=fsync (default: send waits for the disk) or os
Query options: ?max_msg=16M (largest message), ?mode=0600 (permissions of files created).
The publish/subscribe bus has URLs of its own (bus://local, bus://zenoh?...): see `ipckit bus --help`.";

/// Send, receive and benchmark messages over every ipckit transport.
#[derive(Debug, Parser)]
#[command(name = "ipckit", version, after_help = URL_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send messages to an endpoint (connects to it unless --bind).
    #[command(after_help = SEND_HELP)]
    Send(SendArgs),
    /// Receive messages and write them to standard output (binds the endpoint unless --connect).
    #[command(after_help = RECV_HELP)]
    Recv(RecvArgs),
    /// Measure round-trip latency and throughput between two processes, per mechanism and size.
    #[command(after_help = BENCH_HELP)]
    Bench(BenchArgs),
    /// The peer process of `ipckit bench` (started by the benchmark itself).
    #[command(hide = true)]
    BenchPeer(PeerArgs),
    /// Inspect durable queues (`queue://` directories).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// An appending process of the queue benchmark (started by the benchmark itself).
    #[command(hide = true)]
    QueueAppender(AppenderArgs),
    /// List the shared-memory segments (and POSIX message queues) on this machine, with
    /// whether any process still holds them.
    #[command(after_help = LS_HELP)]
    Ls(LsArgs),
    /// Remove ipckit's named shared-memory segments, or every stale one (--stale).
    #[command(after_help = RM_HELP)]
    Rm(RmArgs),
    /// Print the system limits that matter to ipckit, whether they bite, and how to raise them.
    Doctor,
    /// Publish, subscribe, request and list on a bus (bus://local[/NAMESPACE], or
    /// bus://zenoh?... through ipckit-zenoh-bus), and join the two (gateway).
    #[command(subcommand)]
    Bus(BusCommand),
}

/// `ipckit bus ...`.
#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// Publish MESSAGE (or each line of standard input) on TOPIC.
    Pub(BusPubArgs),
    /// Print the messages of topics matching PATTERN (`*`: one level, `**`: any depth).
    Sub(BusSubArgs),
    /// Send a request on TOPIC and print the first reply.
    Req(BusReqArgs),
    /// List the live nodes of a bus with the topics they publish, subscribe to and serve.
    Ls(BusLsArgs),
    /// Forward chosen topics between a bus://local namespace and a Zenoh network, both ways
    /// (runs ipckit-zenoh-gateway, from the ipckit-zenoh crate: ipckit does not link zenoh).
    Gateway(BusGatewayArgs),
}

/// `ipckit bus pub`.
#[derive(Debug, Args)]
pub struct BusPubArgs {
    /// The bus, e.g. bus://local, bus://local/my-app?overflow=block or
    /// 'bus://zenoh/my-app?connect=tcp/10.0.0.2:7447' (runs ipckit-zenoh-bus, crate
    /// ipckit-zenoh: ipckit does not link zenoh).
    pub url: String,
    /// The topic, e.g. sensors/kitchen/temp.
    pub topic: String,
    /// The message; `-` or nothing: one message per line of standard input.
    pub message: Option<String>,
    /// Before publishing, wait at most this long for a subscriber of the topic to be seen
    /// (lets subscribers that are starting find us).
    #[arg(long, value_name = "SECS", default_value = "0.2", value_parser = parse_seconds)]
    pub wait: Duration,
    /// After the last message, stay at most this long for subscribers to read it (on
    /// bus://local, until every subscriber of the topic has read all; elsewhere, this long).
    #[arg(long, value_name = "SECS", default_value = "0.2", value_parser = parse_seconds)]
    pub linger: Duration,
}

/// `ipckit bus sub`.
#[derive(Debug, Args)]
pub struct BusSubArgs {
    /// The bus, e.g. bus://local.
    pub url: String,
    /// The topic or pattern, e.g. sensors/*/temp or sensors/**.
    pub pattern: String,
    /// Stop after N messages (fail if fewer arrive before --timeout).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Print only the payloads (not "TOPIC<TAB>").
    #[arg(long, short)]
    pub quiet: bool,
}

/// `ipckit bus req`.
#[derive(Debug, Args)]
pub struct BusReqArgs {
    /// The bus, e.g. bus://local.
    pub url: String,
    /// The topic a responder serves (on bus://zenoh, the request waits within --timeout
    /// until one is seen).
    pub topic: String,
    /// The request.
    pub message: String,
    /// How long to wait for the reply.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub timeout: Duration,
}

/// `ipckit bus ls`.
#[derive(Debug, Args)]
pub struct BusLsArgs {
    /// The bus, e.g. bus://local.
    #[arg(default_value = "bus://local")]
    pub url: String,
}

/// `ipckit bus gateway`.
#[derive(Debug, Args)]
pub struct BusGatewayArgs {
    /// The local bus, e.g. bus://local/my-app.
    #[arg(long, value_name = "URL")]
    pub local: String,
    /// The Zenoh bus, e.g. 'bus://zenoh?connect=tcp/10.0.0.2:7447&listen=tcp/0.0.0.0:7447'.
    #[arg(long, value_name = "URL")]
    pub zenoh: String,
    /// A topic or pattern to forward both ways, e.g. sensors/** (repeat for more).
    #[arg(long = "topic", value_name = "PATTERN", required = true)]
    pub topics: Vec<String>,
}

const LS_HELP: &str = "\
Segments are the /dev/shm/ipckit.* objects: data segments, shm:// connections (channel) and
rendezvous points (listener), semaphores, mutexes and events. IN USE says whether any process
still has the segment open (a lock the kernel drops when the process dies), so a segment that
is not in use was left behind and `ipckit rm --stale` removes it. POSIX message queues are
listed from /dev/mqueue when it is mounted (any program's queues, not only ipckit's).

--json prints one object per line; keys: type (shm or mq), name, kind, size (bytes of data;
for queues, bytes queued now), creator_pid (0 when unknown), in_use, created_unix_ms, age_s
(null when unknown); queues add owner_uid and holders (pids that have the queue open).";

const RM_HELP: &str = "\
Only names that `ipckit ls` lists as segments are removed; a segment still in use is refused
unless --force (its holders keep their mapping, but nobody can open it by name any more).
Removing a name does not free the memory until the last holder unmaps it.

Examples:
  ipckit rm sensor-data
  ipckit rm --stale          # every segment no process holds
  ipckit rm --stale --prefix myapp-   # only those of names starting with myapp-";

/// `ipckit ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ipckit rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Names of segments, as `ipckit ls` prints them.
    #[arg(value_name = "NAME", required_unless_present = "stale")]
    pub names: Vec<String>,
    /// Remove every ipckit segment that no process holds, and print their names.
    #[arg(long, conflicts_with_all = ["names", "force"])]
    pub stale: bool,
    /// With --stale: only the segments whose names start with PREFIX.
    #[arg(long, value_name = "PREFIX", requires = "stale")]
    pub prefix: Option<String>,
    /// Remove the named segments even if a process still holds them.
    #[arg(long)]
    pub force: bool,
}

/// `ipckit queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show a queue's segments, the depth of each consumer group and the last sequence number.
    Stat(QueueStatArgs),
}

/// `ipckit queue stat`.
#[derive(Debug, Args)]
pub struct QueueStatArgs {
    /// The queue directory (the path of a queue:// URL).
    pub dir: std::path::PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `ipckit queue-appender`: appends to a queue from a start time until a stop time, then
/// prints how many messages it sent and how long that took.
#[derive(Debug, Args)]
pub struct AppenderArgs {
    /// The queue directory.
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// fsync or os.
    #[arg(long)]
    pub durability: String,
    /// Message size in bytes.
    #[arg(long)]
    pub size: usize,
    /// Start appending at this many milliseconds since the Unix epoch.
    #[arg(long)]
    pub start_ms: u64,
    /// Append for this many seconds.
    #[arg(long, value_parser = parse_positive_seconds)]
    pub duration: Duration,
    /// The benchmark's process id: the appender exits when that process does.
    #[arg(long)]
    pub parent_pid: u32,
    /// Drain the queue as a consumer instead of appending.
    #[arg(long)]
    pub read: bool,
    /// CPUs to run on (comma-separated; the scheduler chooses among them).
    #[arg(long, value_delimiter = ',')]
    pub cpu: Vec<usize>,
}

const SEND_HELP: &str = "\
Examples:
  ipckit send unix:///tmp/my.sock hello
  printf 'one\\ntwo\\n' | ipckit send tcp://127.0.0.1:7000
  ipckit send pipe: hello | ipckit recv pipe:

With --bind on a datagram endpoint (unix+dgram, udp) the bound side can only reply to a peer
that has sent something: `send --bind` first waits for one datagram from its peer (its content
is ignored; `ipckit recv --connect` sends an empty one) and then sends to that peer.
A FIFO carries messages one way: `send` must connect to it (open it for writing).

URLs: see `ipckit --help`.";

const RECV_HELP: &str = "\
Examples:
  ipckit recv unix:///tmp/my.sock --count 2
  ipckit recv tcp://127.0.0.1:0 --timeout 30      # prints the port it bound on standard error

Bound to a stream endpoint (unix, unix+seqpacket, tcp, fifo), recv reads one sender until it
disconnects, then waits for the next, until --count messages or --timeout. Bound to a datagram
endpoint (unix+dgram, udp) it receives from every sender. With pipe: or --connect it stops when
the peer disconnects. With --connect on a datagram endpoint it first announces itself with an
empty datagram, repeated every 100 ms until the first message arrives, so that a `send --bind`
peer learns where to send.

URLs: see `ipckit --help`.";

const BENCH_HELP: &str = "\
For each mechanism and size, the benchmark starts a second ipckit process as the peer (the
parent pinned to the first allowed CPU, the peer to the second), measures round trips after a
warm-up (each timed separately; median, p99 and p99.9 from an HDR histogram), then streams
messages one way for --duration and reports messages per second and decimal GB/s of payload.
Every message carries its sequence number in its first 8 bytes and the complement in its last
8; both are checked on every message and the whole payload on 1 in 1024. The methodology
mirrors the C baseline in ipc-baseline, so the figures can be compared as ratios.

UDP carries at most 65507 bytes per datagram; larger sizes are skipped. UDP figures tolerate
loss: lost round trips are resent and not timed, and the stream rate is the received rate.

Every row copies each message twice (send copies it in, the receive copies it out) except
shm-ref (the receiver reads it in place with recv_ref: one copy) and shm-loan (the sender
writes in a loan only what changes, the sequence number and the trailer, and the whole
payload on the messages checked in full; the receiver reads in place: no copy; its GB/s is
payload carried, not copied). memcpy is no IPC: one copy of a message in the parent alone,
for half of --duration, the yardstick of the large-message rates (no round trip). line is no
IPC either: two threads of the parent, one on each CPU, bounce a counter through two cache
lines (round trips only, at the smallest size): the floor under every shared-memory round
trip of the run, which on virtual machines can move several-fold from minute to minute. The
claims that compare mechanisms leave memcpy, line, shm-ref and shm-loan out; claims of their
own set the shm rows against line and against memcpy.

Every mechanism and size is measured --repeat times, in rounds over the whole matrix (round 1
over every mechanism and size, then round 2, ...) so that drift of the machine hits them all
alike. Figures are the medians of the repeats; the spread column is (max - min) / median of
the round-trip median or of msgs/s, whichever is larger. A warning goes to standard error when
a spread is over 30% or when the load average is over half the CPU count before the run.
The table ends with claims computed from this run's figures (fastest mechanisms, shared memory
against the kernel, UDP against TCP, the cost of a wake-up against busy polling, the shm rows
against the cache-line floor and, at the largest size, against memcpy).

--json keys: mech, size, rtt_ns_median, rtt_ns_p99, rtt_ns_p999, msgs_per_s, gbps (null when
not measured), pin (split or none), rtt_samples; udp adds sent, drops and rtt_resends (sums
over the repeats); rtt_capped when the time cap cut the ping-pong short; skipped or error with
the reason; repeats, rtt_spread and msgs_spread (relative, null with one repeat).

--report DIR writes results.json (every repeat's figures, the machine, the settings, the
warnings and the claims), latency.svg, throughput.svg and index.html (plots and table; it
needs no network). --compare OLD NEW reads two such results.json files (or --json outputs)
and prints NEW/OLD per mechanism and size; REGRESSION marks a round trip over 10% slower or
a rate over 10% lower.

queue-os and queue-fsync (durable queues, durability=os and fsync) add append rows per size:
N producer processes (1, then 4) append to one fresh queue for --duration without a consumer;
--json keys mech (queue-os-append, queue-fsync-append), producers, size, msgs_per_s (the sum
of the producers' rates) and fdatasync_per_s (a lone writer's fdatasync rate on the same file
system, measured just before: one fsync-mode producer cannot beat it; group commit lets
several do). After the one-producer run, a consumer process drains what it appended,
acknowledging each message: mech queue-os-read / queue-fsync-read, same keys.
The exit status is 1 if any measurement failed.";

/// Bind or connect: which side of the endpoint this process takes.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Bind the endpoint (listen; create the socket file or FIFO).
    #[arg(long, conflicts_with = "connect")]
    pub bind: bool,
    /// Connect to the endpoint.
    #[arg(long)]
    pub connect: bool,
}

impl RoleArgs {
    /// The role the flags ask for, or `default`.
    pub fn resolve(&self, default: Role) -> Role {
        if self.bind {
            Role::Bind
        } else if self.connect {
            Role::Connect
        } else {
            default
        }
    }
}

/// `ipckit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Endpoint URL, e.g. unix:///tmp/my.sock or tcp://127.0.0.1:7000.
    pub url: Endpoint,
    /// The message to send. Without it, or with `-`, messages are read from standard input, one
    /// per line (without the newline).
    pub message: Option<OsString>,
    /// Send all of standard input as one message, byte for byte.
    #[arg(long)]
    pub raw: bool,
    /// Seconds to wait for the receiver to appear, and at most for each message to be taken.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// Do not print the "listening on URL" line on standard error (with --bind).
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub role: RoleArgs,
}

/// `ipckit recv`.
#[derive(Debug, Args)]
pub struct RecvArgs {
    /// Endpoint URL, e.g. unix:///tmp/my.sock or tcp://127.0.0.1:7000.
    pub url: Endpoint,
    /// Stop after N messages; having fewer when the input ends or --timeout passes is an error.
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds in all (default: no limit; with --connect, the peer must appear
    /// within 10 seconds).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
    /// Write messages exactly as received, without a newline after each.
    #[arg(long)]
    pub raw: bool,
    /// Do not print the "listening on URL" line on standard error.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub role: RoleArgs,
}

/// `ipckit bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Mechanisms to measure, comma-separated [default: all]
    #[arg(long = "mech", value_name = "NAMES", value_enum, value_delimiter = ',')]
    pub mechs: Vec<Mechanism>,
    /// Message sizes in bytes, comma-separated; K, M suffixes are powers of 1024 (at least 16).
    #[arg(
        long = "size",
        value_name = "BYTES",
        value_delimiter = ',',
        value_parser = parse_message_size,
        default_value = "64,4096,65536,1048576"
    )]
    pub sizes: Vec<usize>,
    /// Round trips measured per mechanism and size [default: 100000, or 2000 above 64 KiB]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: Option<u64>,
    /// Seconds of one-way streaming per mechanism and size.
    #[arg(long, value_name = "SECS", default_value = "1.0", value_parser = parse_positive_seconds)]
    pub duration: Duration,
    /// Cap on the time of one ping-pong phase (warm-up included), in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_seconds)]
    pub max_pp_seconds: Duration,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Do not pin the two processes to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Measure every mechanism and size N times, in N rounds over the whole matrix, and
    /// report the median with the spread.
    #[arg(long, value_name = "N", default_value = "3", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Also write results.json, latency.svg, throughput.svg and index.html into DIR
    /// (created if missing).
    #[arg(long, value_name = "DIR")]
    pub report: Option<std::path::PathBuf>,
    /// Measure nothing: print NEW/OLD ratios per mechanism and size of two earlier runs
    /// (results.json of --report, or the lines of --json), marking regressions over 10%.
    #[arg(
        long,
        num_args = 2,
        value_names = ["OLD", "NEW"],
        conflicts_with_all = ["report", "mechs", "iters", "repeat", "no_pin"]
    )]
    pub compare: Vec<std::path::PathBuf>,
}

/// `ipckit bench-peer`: how the benchmark's peer process finds its side of the channel.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The mechanism.
    #[arg(long, value_enum)]
    pub mech: Mechanism,
    /// The message size.
    #[arg(long)]
    pub size: usize,
    /// Endpoint to connect to (sockets; the parent's FIFO for fifo).
    #[arg(long)]
    pub connect: Option<Endpoint>,
    /// Endpoint to bind (the peer's own FIFO for fifo).
    #[arg(long)]
    pub bind: Option<Endpoint>,
    /// Bus URL (the bus mechanisms).
    #[arg(long)]
    pub bus: Option<String>,
    /// CPUs to pin to (one, or a comma-separated list the scheduler chooses from).
    #[arg(long, value_delimiter = ',')]
    pub cpu: Vec<usize>,
    /// Exit after this many seconds whatever happens.
    #[arg(long, value_parser = parse_positive_seconds)]
    pub deadline: Duration,
    /// The benchmark's process id: the peer exits when that process does.
    #[arg(long)]
    pub parent_pid: u32,
}

/// Parses a number of seconds (fractions allowed) into a duration.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds, e.g. 10 or 0.5"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{text:?} is not a usable number of seconds (it must be 0 or more)"))
}

/// Like [`parse_seconds`], but zero is refused.
fn parse_positive_seconds(text: &str) -> Result<Duration, String> {
    let d = parse_seconds(text)?;
    if d.is_zero() {
        return Err("the duration must be more than 0 seconds".to_owned());
    }
    Ok(d)
}

/// Parses a benchmark message size: a byte count with an optional K/M/G suffix, at least
/// [`crate::bench::wire::MIN_SIZE`].
fn parse_message_size(text: &str) -> Result<usize, String> {
    let min = crate::bench::wire::MIN_SIZE;
    let size = ipckit::endpoint::parse_size(text)
        .ok_or_else(|| format!("{text:?} is not a size; expected e.g. 64, 4K or 1M"))?;
    if size < min {
        return Err(format!(
            "{size} bytes is too small: every message carries its sequence number in its first \
             8 bytes and the complement in its last 8, so sizes start at {min} bytes"
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_url_help_names_every_scheme() {
        // Each example URL starts a line, two spaces in, and parses.
        let shown: Vec<ipckit::Scheme> = URL_HELP
            .lines()
            .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
            .filter(|word| word.contains(':'))
            .map(|url| {
                url.parse::<Endpoint>()
                    .unwrap_or_else(|e| panic!("{url}: {e}"))
                    .scheme()
            })
            .collect();
        for scheme in ipckit::Scheme::ALL {
            assert!(
                shown.contains(&scheme),
                "`ipckit --help` shows no {} URL",
                scheme.as_str()
            );
        }
    }

    #[test]
    fn seconds_and_sizes() {
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_positive_seconds("0").is_err());
        assert_eq!(parse_message_size("4K"), Ok(4096));
        assert_eq!(parse_message_size("16"), Ok(16));
        let err = parse_message_size("8").unwrap_err();
        assert!(
            err.contains("at least") || err.contains("start at 16"),
            "{err}"
        );
        assert!(parse_message_size("big").is_err());
    }
}
