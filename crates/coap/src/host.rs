//! What counts as one *source* when bounding per-source state.
//!
//! Bounds per socket address alone are no bound at all against a host that sends from many
//! ports (or, over IPv6, from many addresses of its own /64, which a single machine is usually
//! given). The deduplication cache and the block-wise assembler therefore also bound state per
//! source host: the IPv4 address, or the /64 prefix of an IPv6 address (an IPv4-mapped IPv6
//! address counts as its IPv4 address).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The source host of `peer`: its IPv4 address, or its IPv6 address with the low 64 bits cleared.
pub fn source_host(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_interface_ids_share_a_host() {
        let a: SocketAddr = "192.0.2.7:1000".parse().unwrap();
        let b: SocketAddr = "192.0.2.7:2000".parse().unwrap();
        assert_eq!(source_host(a), source_host(b));
        assert_ne!(
            source_host(a),
            source_host("192.0.2.8:1000".parse().unwrap())
        );
        let v6a: SocketAddr = "[2001:db8:1:2::1]:5683".parse().unwrap();
        let v6b: SocketAddr = "[2001:db8:1:2:ffff::9]:5684".parse().unwrap();
        let v6c: SocketAddr = "[2001:db8:1:3::1]:5683".parse().unwrap();
        assert_eq!(source_host(v6a), source_host(v6b));
        assert_ne!(source_host(v6a), source_host(v6c));
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:9".parse().unwrap();
        assert_eq!(source_host(mapped), source_host(a));
    }
}
