//! Which addresses media (and, later, webhooks) may be fetched from: public
//! unicast addresses, plus an allow-list of CIDRs from the configuration.
//! A leaf: it imports nothing of this crate, so `config` can validate the
//! allow-list with it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An allow-list entry that is not a CIDR or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)")]
pub struct BadCidr(pub String);

/// Whether `ip` is a globally routable unicast address: not private,
/// loopback, link-local, unique-local, shared, multicast, broadcast,
/// documentation, benchmarking, reserved or unspecified. IPv6 forms that
/// embed an IPv4 address (v4-mapped, v4-compatible, NAT64, 6to4) are judged
/// by the embedded address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", incl. 0.0.0.0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || ip.is_multicast()
        || a >= 240) // reserved and broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // v4-mapped ::ffff:a.b.c.d
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // v4-compatible ::a.b.c.d (deprecated, still routed by some stacks), and
    // NAT64 64:ff9b::a.b.c.d: judge the embedded address.
    if seg[..6] == [0, 0, 0, 0, 0, 0] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        if ip.is_unspecified() || ip.is_loopback() {
            return false;
        }
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // 6to4 2002:a.b.c.d::/48
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x2001 && seg[1] < 0x0200) // IETF protocol assignments, Teredo
        || seg[..4] == [0x100, 0, 0, 0]) // discard-only 100::/64
}

/// Which addresses media may be fetched from.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// Public addresses, plus those inside `cidrs` (`browser.media_allow_cidrs`).
    pub fn new<S: AsRef<str>>(cidrs: &[S]) -> Result<Self, BadCidr> {
        let allow = cidrs
            .iter()
            .map(|c| {
                let c = c.as_ref().trim();
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadCidr(c.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // An allow-list entry for 127.0.0.0/8 must also cover ::ffff:127.0.0.1.
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        is_public(ip)
            || self
                .allow
                .iter()
                .any(|n| n.contains(&canonical) || n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_recognised_in_every_form() {
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert!(!is_public(ip(s)), "{s} must not be public");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2a00:1450:4009:81f::200e",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(is_public(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn the_allow_list_opens_exactly_its_ranges() {
        let p = AddressPolicy::new(&["127.0.0.0/8", "fd00::/8", "10.9.9.9"]).unwrap();
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(p.permits(ip("fd00::5")));
        assert!(p.permits(ip("10.9.9.9")));
        assert!(!p.permits(ip("10.9.9.8")));
        assert!(!p.permits(ip("169.254.169.254")));
        assert!(!p.permits(ip("::1")));
        let err = AddressPolicy::new(&["10.0.0.0/33"]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
    }
}
