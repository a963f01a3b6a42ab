//! The StatsD receiver (UDP): `name:value|type[|@rate]` lines, several per packet, turned
//! into Spectator-style meters aggregated over the step. Counters become
//! `statistic=count` rates; timers `count`, `totalTime` and `totalOfSquares` rates (seconds)
//! and a `max` gauge; gauges `statistic=gauge` (`+n`/`-n` adjust the last value); sets the
//! number of distinct members seen in the step. Counts are scaled by 1/rate for sampled
//! lines, as StatsD does; so are a timer's totals, so that totalTime / count stays the mean.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ahash::{AHashMap, AHashSet};
use parking_lot::Mutex;
use tokio::net::UdpSocket;

use crate::config::sanitize;
use crate::health::Health;
use crate::registry::Registry;

/// Distinct members kept per set and step; more are not counted.
const MAX_SET_MEMBERS: usize = 100_000;

/// The receive buffer asked of the kernel: bursts of packets wait here while the agent
/// catches up (the kernel's default, 208 KiB, holds 90 full-size StatsD packets; the
/// kernel caps the request at `net.core.rmem_max`).
const RECEIVE_BUFFER_BYTES: usize = 8 << 20;

/// Binds the StatsD socket with a large receive buffer.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr).await?;
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER_BYTES) {
        tracing::warn!(error = %e, "could not enlarge the StatsD receive buffer");
    }
    Ok(socket)
}

/// Packets the kernel dropped for `socket` because its receive buffer was full: the `drops`
/// column of `/proc/net/udp` (or `udp6`) for the socket's inode. `None` when it cannot be
/// read (not Linux, no /proc).
pub struct KernelDrops {
    inode: Option<u64>,
}

impl KernelDrops {
    pub fn of(socket: &UdpSocket) -> KernelDrops {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok();
        let inode = link.and_then(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
        KernelDrops { inode }
    }

    /// The kernel's count of packets dropped on this socket so far.
    pub fn read(&self) -> Option<u64> {
        let inode = self.inode?;
        ["/proc/self/net/udp", "/proc/self/net/udp6"]
            .iter()
            .find_map(|path| drops_for_inode(&std::fs::read_to_string(path).ok()?, inode))
    }
}

/// The `drops` of the socket with `inode` in a `/proc/net/udp` table.
fn drops_for_inode(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        (fields.get(9)?.parse::<u64>().ok()? == inode).then(|| fields.get(12)?.parse().ok())?
    })
}

#[derive(Debug, PartialEq)]
pub enum Line<'a> {
    Counter {
        name: &'a str,
        value: f64,
        rate: f64,
    },
    Timer {
        name: &'a str,
        ms: f64,
        rate: f64,
    },
    Gauge {
        name: &'a str,
        value: f64,
        delta: bool,
    },
    Set {
        name: &'a str,
        member: &'a str,
    },
}

/// Parses one line; `None` for anything malformed.
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let (name, rest) = line.trim().split_once(':')?;
    if name.is_empty() {
        return None;
    }
    let mut parts = rest.split('|');
    let value = parts.next()?;
    let kind = parts.next()?;
    let rate = match parts.next() {
        Some(r) => r
            .strip_prefix('@')?
            .parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0 && *r <= 1.0)?,
        None => 1.0,
    };
    let number = || value.parse::<f64>().ok().filter(|v| v.is_finite());
    Some(match kind {
        "c" => Line::Counter {
            name,
            value: if value.is_empty() { 1.0 } else { number()? },
            rate,
        },
        "ms" | "h" => Line::Timer {
            name,
            ms: number()?,
            rate,
        },
        "g" => Line::Gauge {
            name,
            value: number()?,
            delta: value.starts_with('+') || value.starts_with('-'),
        },
        "s" => Line::Set {
            name,
            member: value,
        },
        _ => return None,
    })
}

/// Members of sets seen in the current step.
#[derive(Default)]
pub struct Sets {
    members: Mutex<AHashMap<String, AHashSet<String>>>,
}

impl Sets {
    /// Reports each set's distinct count as a gauge and starts the next step empty.
    pub fn flush_into(&self, registry: &Registry) {
        for (name, members) in self.members.lock().drain() {
            registry.set(&name, &[("statistic", "gauge")], members.len() as f64);
        }
    }
}

/// Applies one line to the meters; false when the line is malformed. A series the registry
/// has no room for is its drop to count, not a bad line.
pub fn apply(line: &str, registry: &Registry, sets: &Sets) -> bool {
    let Some(parsed) = parse_line(line) else {
        return false;
    };
    match parsed {
        Line::Counter { name, value, rate } => {
            registry.add(&sanitize(name), &[("statistic", "count")], value / rate);
        }
        Line::Timer { name, ms, rate } => {
            let name = sanitize(name);
            let secs = ms / 1000.0;
            let _ = registry.add(&name, &[("statistic", "count")], 1.0 / rate)
                && registry.add(&name, &[("statistic", "totalTime")], secs / rate)
                && registry.add(
                    &name,
                    &[("statistic", "totalOfSquares")],
                    secs * secs / rate,
                )
                && registry.max(&name, &[("statistic", "max")], secs);
        }
        Line::Gauge { name, value, delta } => {
            let name = sanitize(name);
            if delta {
                registry.adjust(&name, &[("statistic", "gauge")], value);
            } else {
                registry.set(&name, &[("statistic", "gauge")], value);
            }
        }
        Line::Set { name, member } => {
            let mut sets = sets.members.lock();
            let set = sets.entry(sanitize(name)).or_default();
            if set.len() < MAX_SET_MEMBERS {
                set.insert(member.to_string());
            }
        }
    }
    true
}

/// Receives packets until the socket fails.
pub async fn run(socket: UdpSocket, registry: Arc<Registry>, sets: Arc<Sets>, health: Arc<Health>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "statsd receive failed");
                continue;
            }
        };
        health.statsd_packets.fetch_add(1, Ordering::Relaxed);
        let Ok(text) = std::str::from_utf8(&buf[..n]) else {
            health.invalid_input.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            if !apply(line, &registry, &sets) {
                health.invalid_input.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Catalog;

    #[test]
    fn lines() {
        assert_eq!(
            parse_line("app.hits:5|c|@0.5"),
            Some(Line::Counter {
                name: "app.hits",
                value: 5.0,
                rate: 0.5
            })
        );
        assert_eq!(
            parse_line("lat:12.500000|ms"),
            Some(Line::Timer {
                name: "lat",
                ms: 12.5,
                rate: 1.0
            })
        );
        assert_eq!(
            parse_line("t:-2|g"),
            Some(Line::Gauge {
                name: "t",
                value: -2.0,
                delta: true
            })
        );
        assert_eq!(
            parse_line("u:alice|s"),
            Some(Line::Set {
                name: "u",
                member: "alice"
            })
        );
        for bad in [
            "",
            "x",
            "x:1",
            "x:1|q",
            ":1|c",
            "x:a|c",
            "x:1|c|0.5",
            "x:1|c|@2",
            "x:inf|g",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn kernel_drops_are_read_for_this_sockets_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
 1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 5\n\
 2: 0100007F:1F91 00000000:0000 07 00000000:00001200 00:00000000 00000000     0        0 222 2 0000000000000000 1683\n";
        assert_eq!(drops_for_inode(table, 222), Some(1683));
        assert_eq!(drops_for_inode(table, 111), Some(5));
        assert_eq!(drops_for_inode(table, 333), None);
    }

    #[tokio::test]
    async fn a_bound_socket_has_its_drops_read_and_a_large_buffer() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_eq!(KernelDrops::of(&socket).read(), Some(0));
        let size = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        assert!(size > 212_992, "{size}");
    }

    /// The worked example of the protocol notes, over a 10 s step.
    #[test]
    fn spectator_statistics() {
        let catalog = Arc::new(Catalog::default());
        let r = Registry::new(catalog.clone(), Vec::new());
        let sets = Sets::default();
        for l in [
            "xx:1|c|@0.1",
            "tt:100|ms",
            "tt:300|ms",
            "gg:5|g",
            "gg:+2|g",
            "gg:-10|g",
            "ss:a|s",
            "ss:b|s",
            "ss:a|s",
        ] {
            assert!(apply(l, &r, &sets), "{l}");
        }
        sets.flush_into(&r);
        let got: AHashMap<String, f64> = r
            .flush(10_000, 10.0)
            .into_iter()
            .map(|s| {
                let tags = catalog.tags(s.series).unwrap();
                let get = |k: &str| {
                    tags.iter()
                        .find(|(tk, _)| tk == k)
                        .map(|(_, v)| v.clone())
                        .unwrap()
                };
                (format!("{}/{}", get("name"), get("statistic")), s.value)
            })
            .collect();
        assert_eq!(got["xx/count"], 1.0);
        assert_eq!(got["tt/count"], 0.2);
        assert!((got["tt/totalTime"] - 0.04).abs() < 1e-12);
        assert!((got["tt/totalOfSquares"] - 0.01).abs() < 1e-12);
        assert_eq!(got["tt/max"], 0.3);
        assert_eq!(got["gg/gauge"], -3.0);
        assert_eq!(got["ss/gauge"], 2.0);
    }
}
