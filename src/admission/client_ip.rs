//! Which address a connection is from: the peer's, or, when the peer is a trusted
//! proxy (`TRUSTED_PROXIES`), the right-most address of `X-Forwarded-For` that is not
//! one of the proxies. Addresses to the left of that one were written by the client
//! itself and prove nothing.

use std::net::{IpAddr, SocketAddr};

/// `TRUSTED_PROXIES` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR block")]
pub struct BadProxy(pub String);

/// Addresses and CIDR blocks of the proxies in front of the daemon.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a comma-separated list such as `10.0.0.1, 10.1.0.0/16, fd00::/8`.
    pub fn parse(list: &str) -> Result<Self, BadProxy> {
        let mut blocks = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || BadProxy(item.to_string());
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
                None => (item, None),
            };
            let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = bits.unwrap_or(max);
            if bits > max {
                return Err(bad());
            }
            blocks.push((addr, bits));
        }
        Ok(Self { blocks })
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.blocks
            .iter()
            .any(|&(net, bits)| in_block(ip, net, bits))
    }

    /// The client's address for a request from `peer` carrying these
    /// `X-Forwarded-For` values (in header order).
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            // A proxy writes its own peer's address, which always parses; garbage can
            // only come from further left, where the client wrote.
            let Some(ip) = parse_hop(hop) else {
                return nearest;
            };
            if !self.contains(ip) {
                return ip;
            }
            nearest = ip;
        }
        // Every hop is a proxy of ours: the farthest one is all that is known.
        nearest
    }
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_addresses_and_refuse_bad_entries() {
        let t = TrustedProxies::parse(" 10.0.0.1, 10.1.0.0/16 ,fd00::/8, 0.0.0.0/0 ").unwrap();
        assert!(t.contains(ip("10.1.200.3")) && t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        let t = TrustedProxies::parse("10.0.0.1,10.1.0.0/16").unwrap();
        assert!(t.contains(ip("10.0.0.1")) && !t.contains(ip("10.0.0.2")));
        assert!(!t.contains(ip("10.2.0.1")));
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in ["10.0.0.1/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse("127.0.0.1,10.0.0.0/8").unwrap();
        let client = |peer: &str, xff: &[&str]| t.client_ip(ip(peer), xff.iter().copied());
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client("198.51.100.2", &["203.0.113.9"]), ip("198.51.100.2"));
        assert_eq!(client("127.0.0.1", &["203.0.113.9"]), ip("203.0.113.9"));
        // A spoofed left part is skipped: the right-most untrusted hop is the client.
        assert_eq!(
            client("127.0.0.1", &["1.1.1.1, 203.0.113.9", "10.0.0.7"]),
            ip("203.0.113.9")
        );
        assert_eq!(client("127.0.0.1", &["garbage, 10.0.0.7"]), ip("10.0.0.7"));
        assert_eq!(client("127.0.0.1", &["10.0.0.7"]), ip("10.0.0.7"));
        assert_eq!(client("127.0.0.1", &[]), ip("127.0.0.1"));
        assert_eq!(
            client("127.0.0.1", &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
    }
}
