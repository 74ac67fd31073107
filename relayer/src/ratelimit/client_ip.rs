//! Which client a request comes from: the socket peer, or, behind trusted proxies, the hop
//! `X-Forwarded-For` names; and the key its counters are kept under ([`client_key`]: an IPv4
//! address as is, an IPv6 address masked to `rateLimit.ipv6Prefix`). Pure: the proxies, the
//! peer, the headers and the prefix are passed in.
//!
//! May use: nothing else of the crate (part of `ratelimit/`); `ipnet` for the masking.
//! Headers are the `http` crate's [`HeaderMap`], not axum's re-export.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::{IpNet, Ipv6Net};

/// The client's IP: the socket peer, unless the peer is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. A client can
/// therefore not choose its own key by sending the header: an untrusted peer's header is
/// ignored, and entries left of the first untrusted hop are never read.
pub fn client_ip(trusted_proxies: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = |ip: &IpAddr| {
        let ip = ip.to_canonical();
        trusted_proxies.iter().any(|net| net.contains(&ip))
    };
    if !trusted(&peer) {
        return peer.to_canonical();
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        {
            Ok(ip) => {
                client = ip;
                if !trusted(&ip) {
                    break;
                }
            }
            // NB: a malformed hop means we cannot trust anything further left.
            Err(_) => break,
        }
    }
    client.to_canonical()
}

/// The address `ip`'s counters are kept under: an IPv4 address (also one written IPv4-mapped,
/// `::ffff:a.b.c.d`) as is, an IPv6 address as its network of `ipv6_prefix` bits (`/64` by
/// default: one subscriber usually holds a whole /64, so keying each /128 would let one
/// client take 2^64 budgets).
///
/// `ipv6_prefix` is 1..=128 after validation; a larger one keys the whole address.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            Ipv6Net::new(v6, ipv6_prefix).map_or(IpAddr::V6(v6), |net| IpAddr::V6(net.network()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    #[test]
    fn two_addresses_of_one_slash_64_share_a_key() {
        let a = client_key(ip("2001:db8:1:2::1"), 64);
        let b = client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64);
        assert_eq!(a, b);
        assert_eq!(a, ip("2001:db8:1:2::"));
    }

    #[test]
    fn addresses_of_different_slash_64s_do_not_share_a_key() {
        assert_ne!(
            client_key(ip("2001:db8:1:2::1"), 64),
            client_key(ip("2001:db8:1:3::1"), 64)
        );
    }

    #[test]
    fn the_prefix_decides_how_much_of_the_address_is_the_key() {
        let (a, b) = (ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        // Both in 2001:db8:1::/48, apart at /64.
        assert_eq!(client_key(a, 48), client_key(b, 48));
        assert_eq!(client_key(a, 48), ip("2001:db8:1::"));
        assert_eq!(client_key(a, 56), client_key(b, 56));
        assert_ne!(client_key(a, 64), client_key(b, 64));
        // /128 keys every address on its own.
        assert_eq!(client_key(a, 128), a);
        assert_ne!(client_key(a, 128), client_key(ip("2001:db8:1:2::2"), 128));
        assert_eq!(client_key(a, 1), ip("::"));
    }

    #[test]
    fn ipv4_addresses_are_keyed_whole_even_when_written_ipv4_mapped() {
        assert_eq!(client_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
        assert_ne!(
            client_key(ip("::ffff:192.0.2.7"), 64),
            client_key(ip("::ffff:192.0.2.8"), 64)
        );
    }

    #[test]
    fn a_prefix_beyond_128_keys_the_whole_address() {
        assert_eq!(client_key(ip("2001:db8::1"), 200), ip("2001:db8::1"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_forwarded_ipv6_client_is_masked_by_its_key() {
        let trusted = [IpNet::from(ip("::1"))];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("2001:db8:7:7::42"),
        );
        let client = client_ip(&trusted, ip("::1"), &headers);
        assert_eq!(client, ip("2001:db8:7:7::42"));
        assert_eq!(client_key(client, 64), ip("2001:db8:7:7::"));
    }
}
