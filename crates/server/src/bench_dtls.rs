//! DTLS for `coapgate bench` (a `coaps://` URL): each simulated device runs its own DTLS 1.2
//! client session over its own UDP socket, so a run measures full handshakes (one per device)
//! and then uplinks over established sessions.
//!
//! The session sits on the DTLS crate's in-memory datagram pipe rather than on the socket, as
//! the server's session table does: the generator's single event loop (mio) owns every socket
//! and feeds each session the datagrams of its own socket, so thousands of sessions need no
//! thread each.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coapgate_dtls::pipe::DatagramPipe as Pipe;
use openssl::ssl::{ErrorCode, HandshakeError, MidHandshakeSslStream, Ssl, SslContext, SslMethod, SslStream, SslVerifyMode};

/// How a device authenticates: a pre-shared key (identity, key bytes), or a certificate
/// handshake in which the bench does not verify the server (it measures, it does not trust).
#[derive(Clone)]
pub enum DtlsAuth {
    Psk { identity: Vec<u8>, key: Vec<u8> },
    Certificate,
}

impl DtlsAuth {
    /// `--psk IDENTITY:KEY`, the key as UTF-8 text or as hex after `0x` (the server's PSK
    /// notation); no `--psk`: a certificate handshake.
    pub fn parse(psk: Option<&str>) -> anyhow::Result<DtlsAuth> {
        let Some(psk) = psk else { return Ok(DtlsAuth::Certificate) };
        let Some((identity, key)) = psk.split_once(':') else { bail!("--psk: IDENTITY:KEY expected") };
        let key = match key.strip_prefix("0x") {
            Some(hex) => (0..hex.len())
                .step_by(2)
                .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .filter(|k| !k.is_empty())
                .context("--psk: the key after 0x must be pairs of hex digits")?,
            None => key.as_bytes().to_vec(),
        };
        if identity.is_empty() || identity.len() > 128 || key.is_empty() || key.len() > 64 {
            bail!("--psk: identity 1-128 bytes and key 1-64 bytes expected");
        }
        Ok(DtlsAuth::Psk { identity: identity.as_bytes().to_vec(), key })
    }

    /// One client context for every session of the run.
    pub fn context(&self) -> anyhow::Result<SslContext> {
        let mut b = SslContext::builder(SslMethod::dtls_client())?;
        match self {
            DtlsAuth::Psk { identity, key } => {
                b.set_cipher_list("PSK-AES128-CCM8:PSK-AES128-GCM-SHA256")?;
                let (identity, key) = (identity.clone(), key.clone());
                b.set_psk_client_callback(move |_, _, id, psk| {
                    // OpenSSL wants the identity NUL-terminated within `id`.
                    id[..identity.len()].copy_from_slice(&identity);
                    id[identity.len()] = 0;
                    psk[..key.len()].copy_from_slice(&key);
                    Ok(key.len())
                });
            }
            DtlsAuth::Certificate => {
                b.set_verify(SslVerifyMode::NONE);
                b.set_cipher_list("ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")?;
            }
        }
        Ok(b.build())
    }
}

enum State {
    Handshaking(MidHandshakeSslStream<Pipe>),
    Established(SslStream<Pipe>),
    /// Between a failed attempt and the next `start`.
    Failed,
}

/// One device's DTLS client session.
pub struct DtlsLink {
    state: State,
    /// When the current handshake attempt began (for its latency and its retry).
    pub attempt_started: Instant,
    /// When the device's first attempt began: the handshake gives up `--timeout` after it.
    pub first_started: Instant,
    pub attempts: u32,
}

/// What a datagram did to a session.
pub enum Input {
    /// Still handshaking (or a record that carried nothing for the application).
    Nothing,
    /// The handshake completed with this datagram.
    Established,
    /// The handshake failed (alert, bad record); `start` begins a new attempt.
    Failed(String),
    /// Application data: CoAP messages.
    Data(Vec<Vec<u8>>),
}

/// How long a handshake attempt may take before the bench starts a new one: simpler than
/// driving OpenSSL's retransmission timer (DTLSv1_handle_timeout, as the server's `tick` does),
/// and on loopback a flight is rarely lost; a retry is counted in the report.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

impl DtlsLink {
    /// Starts the first handshake; returns the link and the datagrams to send (ClientHello).
    pub fn start(context: &SslContext, now: Instant) -> anyhow::Result<(DtlsLink, Vec<Vec<u8>>)> {
        let mut link = DtlsLink { state: State::Failed, attempt_started: now, first_started: now, attempts: 0 };
        let out = link.restart(context, now)?;
        Ok((link, out))
    }

    /// A new handshake attempt on a fresh session.
    pub fn restart(&mut self, context: &SslContext, now: Instant) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut ssl = Ssl::new(context)?;
        ssl.set_mtu(1400)?;
        self.attempt_started = now;
        self.attempts += 1;
        match ssl.connect(Pipe::default()) {
            Ok(mut stream) => {
                let out = stream.get_mut().take_outbox();
                self.state = State::Established(stream);
                Ok(out)
            }
            Err(HandshakeError::WouldBlock(mut mid)) => {
                let out = mid.get_mut().take_outbox();
                self.state = State::Handshaking(mid);
                Ok(out)
            }
            Err(e) => bail!("starting a DTLS handshake: {e}"),
        }
    }

    pub fn established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Feeds one received datagram; `out` gets the datagrams to send in answer.
    pub fn input(&mut self, datagram: &[u8], out: &mut Vec<Vec<u8>>) -> Input {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Handshaking(mut mid) => {
                mid.get_mut().put(datagram);
                match mid.handshake() {
                    Ok(mut stream) => {
                        out.append(&mut stream.get_mut().take_outbox());
                        self.state = State::Established(stream);
                        Input::Established
                    }
                    Err(HandshakeError::WouldBlock(mut mid)) => {
                        out.append(&mut mid.get_mut().take_outbox());
                        self.state = State::Handshaking(mid);
                        Input::Nothing
                    }
                    Err(e) => Input::Failed(e.to_string()),
                }
            }
            State::Established(mut stream) => {
                stream.get_mut().put(datagram);
                let mut data = Vec::new();
                let mut buf = [0u8; 1500];
                let result = loop {
                    match stream.ssl_read(&mut buf) {
                        Ok(n) => data.push(buf[..n].to_vec()),
                        Err(e) if e.code() == ErrorCode::WANT_READ => break None,
                        Err(e) if e.code() == ErrorCode::ZERO_RETURN => break Some("the server closed the session".to_string()),
                        Err(e) => break Some(e.to_string()),
                    }
                };
                out.append(&mut stream.get_mut().take_outbox());
                match result {
                    Some(error) => Input::Failed(error),
                    None => {
                        self.state = State::Established(stream);
                        if data.is_empty() { Input::Nothing } else { Input::Data(data) }
                    }
                }
            }
            State::Failed => Input::Nothing,
        }
    }

    /// Encrypts one CoAP message; the records to send, or None when the session is not up.
    pub fn seal(&mut self, message: &[u8]) -> Option<Vec<Vec<u8>>> {
        let State::Established(stream) = &mut self.state else { return None };
        stream.ssl_write(message).ok()?;
        Some(stream.get_mut().take_outbox())
    }
}
