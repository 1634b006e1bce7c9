//! `bus://local[/NAMESPACE][?depth=N&overflow=drop|block&timeout_ms=N&slots=N&max_msg=SIZE&spin_us=N]`.

use std::time::Duration;

use crate::endpoint::{parse_size, UrlError};
use crate::error::{Error, Result};

use super::Overflow;

/// Namespaces when the URL names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Messages a subscription holds by default.
pub const DEFAULT_DEPTH: u32 = 64;
/// Default slots of a publisher's ring.
pub const DEFAULT_SLOTS: u32 = 256;
/// How long a publisher blocked by a `block` subscriber waits by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a receive spins before it sleeps, by default.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// What a bus URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusUrl {
    /// The namespace (processes on different namespaces do not see each other).
    pub namespace: String,
    /// Default depth of a subscription.
    pub depth: u32,
    /// Default overflow policy of a subscription.
    pub overflow: Overflow,
    /// How long a publish waits for a blocked subscriber.
    pub timeout: Duration,
    /// Slots of this node's ring (a power of two).
    pub slots: u32,
    /// Bytes of one slot (a power of two).
    pub slot_bytes: u32,
    /// Receive spin budget.
    pub spin: Duration,
}

const UNKNOWN_PARAMETER: &str = "unknown parameter; a bus URL knows depth, overflow (drop|block), \
                                 timeout_ms, slots, max_msg and spin_us";

fn malformed(url: &str, reason: &'static str) -> Error {
    Error::Url(UrlError::Malformed {
        url: url.to_owned(),
        reason,
    })
}

/// Whether `ns` can name a bus namespace: at most 64 letters, digits, '-' or '_' (every
/// backend's URL accepts the same names).
pub fn is_valid_namespace(ns: &str) -> bool {
    ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Overflow {
    /// The policy a URL's `overflow=` names: `drop` (or `drop-oldest`) or `block`.
    pub fn from_url_value(value: &str) -> Option<Overflow> {
        match value {
            "drop" | "drop-oldest" => Some(Overflow::DropOldest),
            "block" => Some(Overflow::Block),
            _ => None,
        }
    }
}

impl BusUrl {
    /// Parses a `bus://` URL.
    pub fn parse(url: &str) -> Result<BusUrl> {
        let rest = url
            .strip_prefix("bus://")
            .ok_or_else(|| malformed(url, "a bus URL starts with bus:// (e.g. bus://local)"))?;
        let (addr, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (backend, ns) = addr.split_once('/').unwrap_or((addr, ""));
        match backend {
            "local" => {}
            "zenoh" => {
                return Err(Error::Unsupported {
                    op: "Bus::open",
                    what: "bus://zenoh before ipckit_zenoh::install() (the Zenoh backend is the \
                           separate ipckit-zenoh crate, which ipckit does not link: add it and \
                           call ipckit_zenoh::install() first)",
                })
            }
            _ => {
                return Err(malformed(
                    url,
                    "the backend is local (bus://local[/NAMESPACE]) or one registered with \
                     ipckit::bus::register_backend",
                ))
            }
        }
        let namespace = if ns.is_empty() {
            DEFAULT_NAMESPACE.to_owned()
        } else {
            ns.to_owned()
        };
        if !is_valid_namespace(&namespace) {
            return Err(malformed(
                url,
                "a namespace is 1 to 64 letters, digits, '-' or '_' (e.g. bus://local/my-app)",
            ));
        }
        let mut out = BusUrl {
            namespace,
            depth: DEFAULT_DEPTH,
            overflow: Overflow::DropOldest,
            timeout: DEFAULT_TIMEOUT,
            slots: DEFAULT_SLOTS,
            slot_bytes: 4096,
            spin: DEFAULT_SPIN,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |key, expected| {
                Error::Url(UrlError::BadParameter {
                    key,
                    value: value.to_owned(),
                    expected,
                })
            };
            let num = |key, expected| value.parse::<u64>().map_err(|_| bad(key, expected));
            match key {
                "depth" => {
                    out.depth = num("depth", "a number of messages from 1 to 65536")? as u32;
                    if !(1..=65536).contains(&out.depth) {
                        return Err(bad("depth", "a number of messages from 1 to 65536"));
                    }
                }
                "overflow" => {
                    out.overflow = Overflow::from_url_value(value)
                        .ok_or_else(|| bad("overflow", "drop or block"))?
                }
                "timeout_ms" => {
                    out.timeout = Duration::from_millis(num("timeout_ms", "milliseconds")?)
                }
                "spin_us" => out.spin = Duration::from_micros(num("spin_us", "microseconds")?),
                "slots" => {
                    let n = num("slots", "a power of two from 16 to 65536")?;
                    if !n.is_power_of_two() || !(16..=65536).contains(&n) {
                        return Err(bad("slots", "a power of two from 16 to 65536"));
                    }
                    out.slots = n as u32;
                }
                "max_msg" => {
                    let n = parse_size(value)
                        .filter(|n| *n <= 16 << 20)
                        .ok_or_else(|| bad("max_msg", "a size up to 16M, e.g. 64K"))?;
                    out.slot_bytes =
                        ((n + super::node::SLOT_HEADER + 256).next_power_of_two()).max(512) as u32;
                }
                _ => {
                    return Err(Error::Url(UrlError::Malformed {
                        url: url.to_owned(),
                        reason: UNKNOWN_PARAMETER,
                    }))
                }
            }
        }
        if out.depth > out.slots {
            // A subscription cannot hold more than the publisher's ring.
            out.depth = out.slots;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = BusUrl::parse("bus://local").unwrap();
        assert_eq!(u.namespace, "default");
        let u = BusUrl::parse("bus://local/app-1?depth=8&overflow=block&max_msg=64K").unwrap();
        assert_eq!(u.namespace, "app-1");
        assert_eq!(u.depth, 8);
        assert_eq!(u.overflow, Overflow::Block);
        assert!(u.slot_bytes as usize >= 64 * 1024);
        assert!(BusUrl::parse("bus://local/a.b").is_err());
        assert!(BusUrl::parse("bus://local?depth=0").is_err());
        assert!(BusUrl::parse("bus://local?colour=red").is_err());
        assert!(BusUrl::parse("bus://elsewhere").is_err());
        assert!(matches!(
            BusUrl::parse("bus://zenoh?connect=tcp/1.2.3.4:7447"),
            Err(Error::Unsupported { .. })
        ));
    }
}
