//! Which client a request comes from: the socket peer, or, behind trusted proxies, the hop
//! `X-Forwarded-For` names. Pure: the proxies, the peer and the headers are passed in.
//!
//! Room: part of `ratelimit/`; uses nothing else of the crate. Headers are the `http` crate's
//! [`HeaderMap`], not axum's re-export.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

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
