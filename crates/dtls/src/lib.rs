//! DTLS 1.2 server side of coapgate, without sockets: OpenSSL sessions keyed by peer, driven by
//! the datagrams the caller hands in, with stateless cookie exchange, and the server
//! credentials as ThingsBoard users have them (JKS, PKCS#12, PEM).
//!
//! This crate knows nothing about CoAP or integrations: it turns datagrams into application
//! data and back, and asks a [`PskKeys`] for pre-shared keys.

pub mod keystore;
pub mod pipe;
pub mod record;
mod server;

pub use keystore::{Credentials, CredentialsError, StoreType};
pub use server::{DtlsServer, DtlsStats, Output, PeerInfo, PskKeys, ServerConfig, SessionKey, DEFAULT_CIPHERS};
