//! Just enough of the DTLS record header (RFC 6347 §4.1) to decide, before anything is
//! allocated, whether a datagram may start a new session.

/// Record header length: type, version, epoch, sequence number, length.
pub const HEADER_LEN: usize = 13;
/// Handshake header length in DTLS: type, length, message_seq, fragment offset and length.
pub const HANDSHAKE_HEADER_LEN: usize = 12;

pub const CONTENT_HANDSHAKE: u8 = 22;
pub const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// Whether `datagram` starts with an epoch-0 handshake record holding a ClientHello: the only
/// thing that may create state on the server.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN + HANDSHAKE_HEADER_LEN
        && datagram[0] == CONTENT_HANDSHAKE
        && datagram[1] == 0xfe
        && datagram[3] == 0
        && datagram[4] == 0
        && datagram[HEADER_LEN] == HANDSHAKE_CLIENT_HELLO
}

/// Whether `datagram` starts with something shaped like a DTLS record at all (content types
/// 20..=25, major version 0xfe).
pub fn looks_like_dtls(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && (20..=25).contains(&datagram[0]) && datagram[1] == 0xfe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_is_recognised_by_its_headers() {
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1];
        hello.resize(HEADER_LEN + 40, 0);
        assert!(is_client_hello(&hello));
        let mut epoch1 = hello.clone();
        epoch1[4] = 1;
        assert!(!is_client_hello(&epoch1));
        let mut finished = hello.clone();
        finished[HEADER_LEN] = 20;
        assert!(!is_client_hello(&finished));
        let mut appdata = hello.clone();
        appdata[0] = 23;
        assert!(!is_client_hello(&appdata));
        assert!(looks_like_dtls(&appdata));
        assert!(!is_client_hello(&hello[..20]));
        assert!(!looks_like_dtls(b"\x40\x01\x00\x01"));
    }
}
