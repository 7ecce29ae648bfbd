//! Where a request comes from: the device's address as opush knows it (the
//! TCP peer, or behind a trusted reverse proxy the last `X-Forwarded-For`
//! address that is not itself a trusted proxy), and the task-local that
//! carries it to the IMAP logins made for the request.
//!
//! The IMAP backend names this address to the IMAP server before LOGIN (RFC
//! 2971 ID, `x-originating-ip`), so that a server that trusts opush (Dovecot's
//! `login_trusted_networks`) logs the device's address and keeps its per-IP
//! auth penalty per device instead of per opush (see docs/ARCHITECTURE.md,
//! "Dovecot behind opush").
//!
//! `X-Forwarded-For` is only read from peers listed in `[server]
//! trusted_proxies`: anyone else could name any address in it.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use warp::http::HeaderMap;

/// A device's address: its IP, and its port when known (the TCP peer's;
/// `X-Forwarded-For` carries none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The device's IP address.
    pub ip: IpAddr,
    /// Its source port, when known.
    pub port: Option<u16>,
}

impl From<SocketAddr> for ClientAddr {
    fn from(a: SocketAddr) -> Self {
        ClientAddr {
            ip: a.ip().to_canonical(),
            port: Some(a.port()),
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(p)) => write!(f, "{ip}:{p}"),
            (IpAddr::V6(ip), Some(p)) => write!(f, "[{ip}]:{p}"),
        }
    }
}

/// One `[server] trusted_proxies` entry: an address or a CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `192.0.2.1`, `10.0.0.0/8`, `::1`, `fd00::/8`. Host bits set
    /// in a network (`10.1.2.3/8`) are refused: the entry would not mean
    /// what it says.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{s}`: prefix length must be 0-{max}"))?,
        };
        let cidr = Cidr { net, bits };
        if cidr.masked(net) != Some(net) {
            return Err(format!(
                "`{s}` has host bits set (write the network address)"
            ));
        }
        Ok(cidr)
    }

    fn masked(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(v4) if self.net.is_ipv4() => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)))
            }
            IpAddr::V6(v6) if self.net.is_ipv6() => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                Some(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)))
            }
            _ => None,
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 taken as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.masked(ip.to_canonical()) == Some(self.net)
    }
}

/// `[server] trusted_proxies`: the reverse proxies whose `X-Forwarded-For`
/// is believed. Empty (the default): the header is never read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses the configured entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| Cidr::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The device's address for a request from `peer` with `headers`.
    ///
    /// From a trusted proxy, `X-Forwarded-For` is read from its end (the
    /// address the proxy itself saw; several headers count as one list in
    /// their order): the first address that is not a trusted proxy too
    /// (a chain of them), else the leftmost one. A header a trusted proxy
    /// sent that names no address there (garbage, `unknown`) leaves the
    /// peer as the client. From anyone else the header is ignored.
    /// Allocates nothing.
    pub fn client_of(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        let peer_addr = ClientAddr::from(peer);
        if self.0.is_empty() || !self.trusts(peer_addr.ip) {
            return peer_addr;
        }
        let values = headers.get_all("x-forwarded-for");
        let mut found = None;
        for value in values.iter().rev() {
            let Ok(value) = value.to_str() else {
                return peer_addr;
            };
            for part in value.rsplit(',') {
                let Some(ip) = forwarded_ip(part) else {
                    // The chain is broken here: what lies further left
                    // came through a hop nobody vouches for.
                    return found.unwrap_or(peer_addr);
                };
                let addr = ClientAddr { ip, port: None };
                if !self.trusts(ip) {
                    return addr;
                }
                found = Some(addr);
            }
        }
        found.unwrap_or(peer_addr)
    }
}

/// One `X-Forwarded-For` element: `192.0.2.1`, `2001:db8::1`, and the
/// `192.0.2.1:1234` / `[2001:db8::1]:1234` forms some proxies write (the
/// port dropped: a proxy's word on it is not needed).
fn forwarded_ip(part: &str) -> Option<IpAddr> {
    let part = part.trim();
    if let Ok(ip) = part.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = part.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    part.strip_prefix('[')
        .and_then(|p| p.strip_suffix(']'))
        .and_then(|p| p.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

tokio::task_local! {
    static CLIENT: ClientAddr;
}

/// Runs `fut` on behalf of the device at `client`: IMAP logins made inside
/// it (and inside [`carry`]-wrapped tasks it spawns) name that address.
pub async fn scope<F: Future>(client: ClientAddr, fut: F) -> F::Output {
    CLIENT.scope(client, fut).await
}

/// The device the current task works for, if any (none in background
/// tasks: push watchers, start-up work).
pub fn current() -> Option<ClientAddr> {
    CLIENT.try_with(|c| *c).ok()
}

/// `fut` on behalf of the current task's device, for a task it spawns
/// (task-locals do not cross `tokio::spawn`).
pub fn carry<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let client = current();
    async move {
        match client {
            Some(c) => CLIENT.scope(c, fut).await,
            None => fut.await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("X-Forwarded-For", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> ClientAddr {
        ClientAddr {
            ip: s.parse().unwrap(),
            port: None,
        }
    }

    #[test]
    fn cidr_entries_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.2.3".parse().unwrap()),
            "IPv4-mapped"
        );
        assert!(!c.contains("::1".parse().unwrap()));
        let one = Cidr::parse(" 192.0.2.1 ").unwrap();
        assert!(one.contains("192.0.2.1".parse().unwrap()));
        assert!(!one.contains("192.0.2.2".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.1.2.3/8",
            "10.0.0.0/33",
            "::/129",
            "proxy",
            "",
            "10.0.0.0/x",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn forwarded_for_is_read_from_trusted_proxies_only() {
        let proxies = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:5555".parse().unwrap();
        // An untrusted peer's header is ignored: the peer is the client.
        assert_eq!(
            proxies.client_of(stranger, &headers(&["192.0.2.10"])),
            ClientAddr::from(stranger)
        );
        // No proxies configured: never read.
        assert_eq!(
            TrustedProxies::default().client_of(proxy, &headers(&["192.0.2.10"])),
            ClientAddr::from(proxy)
        );
        // From a trusted proxy: the last address, whatever the device
        // itself wrote further left.
        assert_eq!(
            proxies.client_of(proxy, &headers(&["6.6.6.6, 192.0.2.10"])),
            ip("192.0.2.10")
        );
        // Several headers are one list; trusted hops are skipped.
        assert_eq!(
            proxies.client_of(proxy, &headers(&["6.6.6.6, 192.0.2.20", "10.1.1.1"])),
            ip("192.0.2.20")
        );
        // IPv6, bracketed, with a port.
        assert_eq!(
            proxies.client_of(proxy, &headers(&["[2001:db8::7]:4711"])),
            ip("2001:db8::7")
        );
        assert_eq!(
            proxies.client_of(proxy, &headers(&["2001:db8::8"])),
            ip("2001:db8::8")
        );
        assert_eq!(
            proxies.client_of(proxy, &headers(&["192.0.2.30:80"])),
            ip("192.0.2.30")
        );
        // No header, or none that names an address: the proxy itself.
        assert_eq!(
            proxies.client_of(proxy, &HeaderMap::new()),
            ClientAddr::from(proxy)
        );
        assert_eq!(
            proxies.client_of(proxy, &headers(&["unknown"])),
            ClientAddr::from(proxy)
        );
        // Garbage left of a trusted hop stops the walk at that hop.
        assert_eq!(
            proxies.client_of(proxy, &headers(&["bogus, 10.0.0.9"])),
            ip("10.0.0.9")
        );
        // All trusted: the leftmost.
        assert_eq!(
            proxies.client_of(proxy, &headers(&["10.0.0.1, 10.0.0.2"])),
            ip("10.0.0.1")
        );
        // An IPv4-mapped peer counts as its IPv4 address.
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        assert_eq!(
            proxies.client_of(mapped, &headers(&["192.0.2.10"])),
            ip("192.0.2.10")
        );
    }

    #[tokio::test]
    async fn the_client_reaches_spawned_tasks_only_when_carried() {
        assert_eq!(current(), None);
        let c = ip("192.0.2.10");
        scope(c, async move {
            assert_eq!(current(), Some(c));
            let carried = tokio::spawn(carry(async { current() })).await.unwrap();
            assert_eq!(carried, Some(c));
            let bare = tokio::spawn(async { current() }).await.unwrap();
            assert_eq!(bare, None);
        })
        .await;
    }
}
