//! In-memory handshakes against the session table with OpenSSL as the client.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use coapgate_dtls::{Credentials, DtlsServer, PskKeys, ServerConfig};
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};

#[derive(Default)]
struct Queue {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}
impl Read for Queue {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let d = self.inbox.pop_front().ok_or(ErrorKind::WouldBlock)?;
        buf[..d.len()].copy_from_slice(&d);
        Ok(d.len())
    }
}
impl Write for Queue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Keys;
impl PskKeys for Keys {
    fn psk_key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        (identity == b"dev-1").then(|| b"secret-key".to_vec())
    }
}

fn self_signed(days_from: i64, days_to: i64) -> Credentials {
    let key = PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now + days_from * 86_400).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + days_to * 86_400).unwrap()).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Credentials { key, chain: vec![b.build()] }
}

fn server(skip_validity: bool) -> DtlsServer {
    DtlsServer::new(ServerConfig {
        credentials: Some(self_signed(-1, 30)),
        psk: Some(Arc::new(Keys)),
        skip_client_cert_validity: skip_validity,
        ..ServerConfig::default()
    })
    .unwrap()
}

/// Runs a handshake and one application record; returns what the server decrypted, or None
/// when the handshake failed.
fn exchange(server: &mut DtlsServer, client: Ssl, peer: SocketAddr) -> Option<Vec<u8>> {
    let mut stream = SslStream::new(client, Queue::default()).unwrap();
    for _ in 0..20 {
        match stream.do_handshake() {
            Ok(()) => {
                stream.ssl_write(b"hello").unwrap();
                let mut got = Vec::new();
                for d in std::mem::take(&mut stream.get_mut().outbox) {
                    got.extend(server.handle(peer, &d, Instant::now()).app_data.concat());
                }
                return Some(got);
            }
            Err(e) if e.code() == ErrorCode::WANT_READ => {}
            Err(_) => return None,
        }
        for d in std::mem::take(&mut stream.get_mut().outbox) {
            let out = server.handle(peer, &d, Instant::now());
            stream.get_mut().inbox.extend(out.datagrams);
        }
    }
    None
}

fn psk_client(key: &'static [u8]) -> Ssl {
    let mut b = SslContext::builder(SslMethod::dtls_client()).unwrap();
    b.set_cipher_list("PSK-AES128-CCM8").unwrap();
    b.set_psk_client_callback(move |_, _, id, psk| {
        id[..6].copy_from_slice(b"dev-1\0");
        psk[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
    let mut ssl = Ssl::new(&b.build()).unwrap();
    ssl.set_connect_state();
    ssl
}

fn cert_client(credentials: Option<Credentials>) -> Ssl {
    let mut b = SslContext::builder(SslMethod::dtls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    if let Some(c) = credentials {
        b.set_private_key(&c.key).unwrap();
        b.set_certificate(&c.chain[0]).unwrap();
    }
    let mut ssl = Ssl::new(&b.build()).unwrap();
    ssl.set_connect_state();
    ssl
}

#[test]
fn psk_handshake_with_cookie_exchange() {
    let mut s = server(false);
    let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    assert_eq!(exchange(&mut s, psk_client(b"secret-key"), peer).unwrap(), b"hello");
    let stats = &s.stats;
    assert_eq!(stats.hello_verify_requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(stats.handshakes_ok.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.session_count(), 1);
    let records = s.send(peer, b"reply").unwrap();
    assert!(!records.is_empty());
}

#[test]
fn wrong_psk_fails() {
    let mut s = server(false);
    assert!(exchange(&mut s, psk_client(b"wrong-key!"), "10.0.0.1:4001".parse().unwrap()).is_none());
    assert_eq!(s.stats.handshakes_ok.load(std::sync::atomic::Ordering::Relaxed), 0);
    // DTLS drops records that fail authentication silently, so the half-open session lives
    // until its handshake timeout.
    s.tick(Instant::now() + std::time::Duration::from_secs(60));
    assert_eq!(s.session_count(), 0);
    assert_eq!(s.stats.handshakes_failed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn certificate_handshakes_and_client_certificate_validity() {
    let mut s = server(false);
    assert_eq!(exchange(&mut s, cert_client(None), "10.0.0.2:1".parse().unwrap()).unwrap(), b"hello");
    assert_eq!(exchange(&mut s, cert_client(Some(self_signed(-1, 10))), "10.0.0.2:2".parse().unwrap()).unwrap(), b"hello");
    assert!(exchange(&mut s, cert_client(Some(self_signed(-10, -1))), "10.0.0.2:3".parse().unwrap()).is_none());
    assert!(exchange(&mut s, cert_client(Some(self_signed(2, 10))), "10.0.0.2:4".parse().unwrap()).is_none());
    let mut lenient = server(true);
    assert_eq!(exchange(&mut lenient, cert_client(Some(self_signed(-10, -1))), "10.0.0.2:5".parse().unwrap()).unwrap(), b"hello");
}

#[test]
fn stray_records_and_cookieless_hellos_allocate_nothing() {
    let mut s = server(false);
    let peer: SocketAddr = "10.0.0.3:9".parse().unwrap();
    assert!(s.handle(peer, &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0], Instant::now()).datagrams.is_empty());
    assert!(s.handle(peer, b"\x40\x01\x00\x01", Instant::now()).datagrams.is_empty());
    // A real first ClientHello, sent from many ports: each gets a HelloVerifyRequest only.
    let mut stream = SslStream::new(psk_client(b"secret-key"), Queue::default()).unwrap();
    let _ = stream.do_handshake();
    let hello = stream.get_mut().outbox.remove(0);
    for port in 1..2000u16 {
        let out = s.handle(SocketAddr::new(peer.ip(), port), &hello, Instant::now());
        assert_eq!(out.datagrams.len(), 1);
    }
    assert_eq!(s.session_count(), 0);
}

/// Throughput of the session table alone (no sockets): full PSK handshakes (cookie exchange
/// included, client side counted too) and application records over established sessions.
/// `cargo test --release -p coapgate-dtls --test handshake -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_psk_handshakes_and_records() {
    let mut s = server(false);
    let n = 2_000u16;
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..n {
        let peer = SocketAddr::new("10.1.0.1".parse().unwrap(), 1000 + i);
        let mut stream = SslStream::new(psk_client(b"secret-key"), Queue::default()).unwrap();
        loop {
            match stream.do_handshake() {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => panic!("{e}"),
            }
            for d in std::mem::take(&mut stream.get_mut().outbox) {
                stream.get_mut().inbox.extend(s.handle(peer, &d, Instant::now()).datagrams);
            }
        }
        clients.push((peer, stream));
    }
    let handshakes = started.elapsed();
    let started = Instant::now();
    let rounds = 50;
    let mut got = 0usize;
    for _ in 0..rounds {
        for (peer, stream) in clients.iter_mut() {
            stream.ssl_write(b"SN-001,default,temperature,25.7,humidity,69").unwrap();
            for d in std::mem::take(&mut stream.get_mut().outbox) {
                got += s.handle(*peer, &d, Instant::now()).app_data.len();
            }
            let reply = s.send(*peer, &[0x60, 0x41, 0, 1]).unwrap();
            stream.get_mut().inbox.extend(reply);
            let mut buf = [0u8; 64];
            stream.ssl_read(&mut buf).unwrap();
        }
    }
    let records = started.elapsed();
    assert_eq!(got, n as usize * rounds);
    eprintln!(
        "{n} PSK handshakes in {handshakes:?} ({:.0}/s, both sides on one core); {} uplink+reply round trips over {n} sessions in {records:?} ({:.0}/s)",
        n as f64 / handshakes.as_secs_f64(),
        got,
        got as f64 / records.as_secs_f64()
    );
}
