//! `bus://zenoh[/NAMESPACE]?connect=ENDPOINT&listen=ENDPOINT&...`.

use std::time::Duration;

use ipckit::bus::Overflow;
use ipckit::{Error, Result, UrlError};

/// Messages a subscription holds by default (as `bus://local`).
pub const DEFAULT_DEPTH: u32 = 64;
/// How long a `block` subscription holds back delivery before it drops and counts, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// What a `bus://zenoh` URL says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZenohUrl {
    /// Prefix of every key (`NS/topic`); empty: topics are the keys themselves.
    pub namespace: String,
    /// Endpoints to connect to (`tcp/HOST:PORT`, `unixsock-stream/PATH`).
    pub connect: Vec<String>,
    /// Endpoints to listen on. None by default: a node listens only where the URL says.
    pub listen: Vec<String>,
    /// Multicast scouting (`scouting=multicast`); off by default.
    pub multicast: bool,
    /// Zenoh mode: `peer` (default), `client` or `router`.
    pub mode: String,
    /// Default depth of a subscription.
    pub depth: u32,
    /// Default overflow policy of a subscription.
    pub overflow: Overflow,
    /// How long a `block` subscription holds back delivery, and the default wait of calls that
    /// take no explicit timeout.
    pub timeout: Duration,
    /// The link lease (how soon a silent peer is declared gone; a killed process whose
    /// socket the kernel closes is noticed at once).
    pub lease: Option<Duration>,
}

const PARAMETERS: &str = "unknown parameter; a bus://zenoh URL knows connect, listen, \
                          scouting (multicast|none), mode (peer|client|router), depth, \
                          overflow (drop|block), timeout_ms and lease_ms";

fn malformed(url: &str, reason: &'static str) -> Error {
    Error::Url(UrlError::Malformed {
        url: url.to_owned(),
        reason,
    })
}

fn bad(key: &'static str, value: &str, expected: &'static str) -> Error {
    Error::Url(UrlError::BadParameter {
        key,
        value: value.to_owned(),
        expected,
    })
}

/// Undoes `%XX` escapes (a unix socket path may need them in a URL).
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn endpoint(key: &'static str, value: &str) -> Result<String> {
    const EXPECTED: &str =
        "tcp/HOST:PORT or unixsock-stream/PATH (the transports ipckit-zenoh is built with)";
    let v = unescape(value).ok_or_else(|| bad(key, value, EXPECTED))?;
    let rest = v
        .strip_prefix("tcp/")
        .or_else(|| v.strip_prefix("unixsock-stream/"))
        .ok_or_else(|| bad(key, value, EXPECTED))?;
    if rest.is_empty() || v.contains(['"', '\\', '\n']) {
        return Err(bad(key, value, EXPECTED));
    }
    Ok(v)
}

impl ZenohUrl {
    /// Parses a `bus://zenoh` URL.
    pub fn parse(url: &str) -> Result<ZenohUrl> {
        let rest = url.strip_prefix("bus://zenoh").ok_or_else(|| {
            malformed(
                url,
                "a Zenoh bus URL starts with bus://zenoh (e.g. bus://zenoh?connect=tcp/10.0.0.2:7447)",
            )
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let namespace = match path {
            "" | "/" => String::new(),
            p if p.starts_with('/') => p[1..].to_owned(),
            _ => {
                return Err(malformed(
                    url,
                    "a Zenoh bus URL starts with bus://zenoh (e.g. bus://zenoh?connect=tcp/10.0.0.2:7447)",
                ))
            }
        };
        if !ipckit::bus::is_valid_namespace(&namespace) {
            return Err(malformed(
                url,
                "a namespace is up to 64 letters, digits, '-' or '_' (e.g. bus://zenoh/my-app?...)",
            ));
        }
        let mut out = ZenohUrl {
            namespace,
            connect: Vec::new(),
            listen: Vec::new(),
            multicast: false,
            mode: "peer".to_owned(),
            depth: DEFAULT_DEPTH,
            overflow: Overflow::DropOldest,
            timeout: DEFAULT_TIMEOUT,
            lease: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let num = |key, expected| value.parse::<u64>().map_err(|_| bad(key, value, expected));
            match key {
                "connect" => out.connect.push(endpoint("connect", value)?),
                "listen" => out.listen.push(endpoint("listen", value)?),
                "scouting" => {
                    out.multicast = match value {
                        "multicast" => true,
                        "none" | "off" => false,
                        _ => return Err(bad("scouting", value, "multicast or none")),
                    }
                }
                "mode" => {
                    if !["peer", "client", "router"].contains(&value) {
                        return Err(bad("mode", value, "peer, client or router"));
                    }
                    out.mode = value.to_owned();
                }
                "depth" => {
                    let d = num("depth", "a number of messages from 1 to 65536")?;
                    if !(1..=65536).contains(&d) {
                        return Err(bad("depth", value, "a number of messages from 1 to 65536"));
                    }
                    out.depth = d as u32;
                }
                "overflow" => {
                    out.overflow = Overflow::from_url_value(value)
                        .ok_or_else(|| bad("overflow", value, "drop or block"))?
                }
                "timeout_ms" => {
                    out.timeout = Duration::from_millis(num("timeout_ms", "milliseconds")?)
                }
                "lease_ms" => {
                    let ms = num("lease_ms", "milliseconds, at least 100")?;
                    if ms < 100 {
                        return Err(bad("lease_ms", value, "milliseconds, at least 100"));
                    }
                    out.lease = Some(Duration::from_millis(ms));
                }
                _ => return Err(malformed(url, PARAMETERS)),
            }
        }
        if out.mode == "client" && out.connect.is_empty() {
            return Err(malformed(
                url,
                "mode=client needs a connect= endpoint (a router to connect to)",
            ));
        }
        Ok(out)
    }

    /// The zenoh configuration this URL describes.
    pub fn config(&self) -> Result<zenoh::Config> {
        fn list(v: &[String]) -> String {
            let items: Vec<String> = v.iter().map(|e| format!("\"{e}\"")).collect();
            format!("[{}]", items.join(","))
        }
        let mut c = zenoh::Config::default();
        let mut set = |key: &str, value: String| {
            c.insert_json5(key, &value).map_err(|e| Error::Io {
                op: "configure zenoh",
                source: std::io::Error::other(format!("{key}={value}: {e}")),
            })
        };
        set("mode", format!("\"{}\"", self.mode))?;
        set("connect/endpoints", list(&self.connect))?;
        set("listen/endpoints", list(&self.listen))?;
        set("scouting/multicast/enabled", self.multicast.to_string())?;
        // A peer that is not up yet (or restarted) is retried quickly, in the background.
        set(
            "connect/retry",
            "{period_init_ms:100,period_max_ms:1000,period_increase_factor:2}".into(),
        )?;
        if let Some(lease) = self.lease {
            set("transport/link/tx/lease", lease.as_millis().to_string())?;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = ZenohUrl::parse(
            "bus://zenoh/app?connect=tcp/10.0.0.2:7447&connect=unixsock-stream/%2Ftmp%2Fz.sock\
             &listen=tcp/127.0.0.1:0&depth=8&overflow=block&lease_ms=1000",
        )
        .unwrap();
        assert_eq!(u.namespace, "app");
        assert_eq!(
            u.connect,
            ["tcp/10.0.0.2:7447", "unixsock-stream//tmp/z.sock"]
        );
        assert_eq!(u.listen, ["tcp/127.0.0.1:0"]);
        assert!(!u.multicast);
        assert_eq!((u.depth, u.overflow), (8, Overflow::Block));
        assert_eq!(u.lease, Some(Duration::from_secs(1)));
        assert!(u.config().is_ok());

        let u = ZenohUrl::parse("bus://zenoh?scouting=multicast").unwrap();
        assert!(u.multicast && u.namespace.is_empty() && u.listen.is_empty());

        for bad in [
            "bus://local",
            "bus://zenohx",
            "bus://zenoh?connect=udp/1.2.3.4:7447",
            "bus://zenoh?connect=quic/1.2.3.4:7447",
            "bus://zenoh?listen=tcp/",
            "bus://zenoh?colour=red",
            "bus://zenoh?depth=0",
            "bus://zenoh?mode=client",
            "bus://zenoh/a.b",
        ] {
            assert!(ZenohUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
