//! Peers, hosts and exchanges as hash-map keys that SipHash reads in one word.
//!
//! The deduplication cache and the endpoint look peers up about twenty times per uplink, with
//! the standard library's randomly keyed SipHash on purpose (peers choose their ports and
//! message ids; a fixed fast hash would let them engineer collisions). `SocketAddr`'s derived
//! `Hash` feeds SipHash four writes of 24 bytes in all (the variant, the address as a
//! length-prefixed byte array, the port), and a `(SocketAddr, u16)` one more: a quarter of the
//! receive thread's instructions went there. These keys feed the same keyed hash the fields
//! that equality compares, packed in one `u64` for IPv4 (a `u128` and a `u32` for IPv6).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

/// A peer (its socket address) as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerKey(pub SocketAddr);

impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        write_peer(&self.0, 0, state);
    }
}

/// An exchange, (peer, message id), as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeKey(pub SocketAddr, pub u16);

impl Hash for ExchangeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        write_peer(&self.0, self.1, state);
    }
}

/// A source host (see [`crate::host::source_host`]) as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostKey(pub IpAddr);

impl Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            IpAddr::V4(ip) => state.write_u64(u64::from(ip.to_bits())),
            IpAddr::V6(ip) => state.write_u128(ip.to_bits()),
        }
    }
}

/// Equal keys must hash equally, so only fields that equality compares are written; an IPv6
/// peer's flow label and scope id are left out, which at worst makes two keys share a hash.
fn write_peer<H: Hasher>(peer: &SocketAddr, message_id: u16, state: &mut H) {
    match peer {
        SocketAddr::V4(a) => {
            state.write_u64(
                (u64::from(a.ip().to_bits()) << 32)
                    | (u64::from(a.port()) << 16)
                    | u64::from(message_id),
            );
        }
        SocketAddr::V6(a) => {
            state.write_u128(a.ip().to_bits());
            state.write_u32((u32::from(a.port()) << 16) | u32::from(message_id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(key: impl Hash) -> u64 {
        // One keyed hasher for every key of a test, as one map has.
        thread_local!(static STATE: std::hash::RandomState = std::hash::RandomState::new());
        STATE.with(|s| s.hash_one(key))
    }

    #[test]
    fn each_field_changes_the_hash_and_equal_keys_share_it() {
        let a: SocketAddr = "10.0.0.1:5683".parse().unwrap();
        let same_port_other_ip: SocketAddr = "10.0.0.2:5683".parse().unwrap();
        let same_ip_other_port: SocketAddr = "10.0.0.1:5684".parse().unwrap();
        assert_eq!(hash(ExchangeKey(a, 7)), hash(ExchangeKey(a, 7)));
        assert_ne!(hash(ExchangeKey(a, 7)), hash(ExchangeKey(a, 8)));
        assert_ne!(
            hash(ExchangeKey(a, 7)),
            hash(ExchangeKey(same_port_other_ip, 7))
        );
        assert_ne!(
            hash(ExchangeKey(a, 7)),
            hash(ExchangeKey(same_ip_other_port, 7))
        );
        assert_ne!(hash(PeerKey(a)), hash(PeerKey(same_ip_other_port)));

        let v6: SocketAddr = "[2001:db8::1]:5683".parse().unwrap();
        let v6_other: SocketAddr = "[2001:db8::2]:5683".parse().unwrap();
        assert_eq!(hash(PeerKey(v6)), hash(PeerKey(v6)));
        assert_ne!(hash(PeerKey(v6)), hash(PeerKey(v6_other)));
        assert_ne!(hash(ExchangeKey(v6, 1)), hash(ExchangeKey(v6, 2)));
        // Flow label and scope id are not hashed, so keys that differ only there share a hash
        // (they are still different keys).
        let SocketAddr::V6(mut scoped) = v6 else {
            unreachable!()
        };
        scoped.set_scope_id(3);
        assert_eq!(hash(PeerKey(v6)), hash(PeerKey(SocketAddr::V6(scoped))));
        assert_ne!(PeerKey(v6), PeerKey(SocketAddr::V6(scoped)));

        assert_ne!(
            hash(HostKey("10.0.0.1".parse().unwrap())),
            hash(HostKey("10.0.0.2".parse().unwrap()))
        );
        assert_ne!(
            hash(HostKey("2001:db8::".parse().unwrap())),
            hash(HostKey("2001:db9::".parse().unwrap()))
        );
    }

    #[test]
    fn maps_keyed_by_them_find_what_was_inserted() {
        let mut map = std::collections::HashMap::new();
        for port in 1000..1100u16 {
            for mid in [0u16, 1, u16::MAX] {
                map.insert(
                    ExchangeKey(SocketAddr::from(([127, 0, 0, 1], port)), mid),
                    (port, mid),
                );
            }
        }
        assert_eq!(map.len(), 300);
        assert_eq!(
            map.get(&ExchangeKey(
                SocketAddr::from(([127, 0, 0, 1], 1050)),
                u16::MAX
            )),
            Some(&(1050, u16::MAX))
        );
        assert_eq!(
            map.get(&ExchangeKey(SocketAddr::from(([127, 0, 0, 2], 1050)), 1)),
            None
        );
    }
}
