//! Server-side reassembly of block-wise request bodies (RFC 7959 Block1).
//!
//! A client uploading a body larger than one datagram sends it as a series of
//! requests, each carrying one block and a Block1 option `NUM/M/SZX`. The
//! server answers every block but the last with 2.31 Continue, echoing the
//! Block1 option, and processes the request once the last block (`M = 0`)
//! has arrived. [`Block1Assembler`] holds the partial bodies between those
//! requests; it performs no I/O and reads no clock (`now` is passed in).
//!
//! # Matching blocks to a transfer
//!
//! RFC 7959 §2.4 matches the blocks of one operation by the client endpoint
//! and the request, *not* by the token, which may change from block to
//! block. A transfer is therefore keyed by the peer's socket address, the
//! request method and the options that name the target resource: Uri-Host,
//! Uri-Port, Uri-Path, Uri-Query, Proxy-Uri and Proxy-Scheme. Other options
//! (Content-Format, Block1, Size1, ...) do not take part in matching, so a
//! client that only sends Content-Format with the first block still gets its
//! body assembled; the caller processes the completed body with the options
//! of the request that carried the last block.
//!
//! # Block sizes
//!
//! Every block except the last must carry exactly `2^(SZX+4)` bytes, and the
//! last one at most that many (anything else is [`Block1Outcome::BadRequest`]).
//! A block is accepted when its offset `NUM * size` equals the number of
//! bytes received so far, which is how RFC 7959 §2.3 lets a client switch to
//! a smaller SZX in the middle of a transfer. The server may ask for smaller
//! blocks by answering block 0 with a smaller SZX
//! ([`Block1Config::preferred_szx`]); the client then continues at
//! `NUM = received / new size`.
//!
//! # Duplicates, restarts and errors
//!
//! - A block that lies entirely inside the bytes already received (a client
//!   re-sending a block whose 2.31 was lost, with a new message id) changes
//!   nothing and is answered with 2.31 Continue again.
//! - Block 0 always (re)starts the transfer, discarding what was buffered:
//!   that is how a client restarts after 4.08 or after the server lost state.
//! - A block with no transfer to belong to (`NUM > 0`), or beyond the bytes
//!   received (a gap), is [`Block1Outcome::Incomplete`] (4.08); the transfer,
//!   if any, is kept, so a stray datagram cannot destroy another upload.
//! - The last block of a transfer removes it, so a re-sent last block with a
//!   new message id gets 4.08 (a retransmission with the same message id is
//!   answered by the message-layer deduplication cache instead).
//!
//! # Bounds
//!
//! Peers choose how many transfers they open and how large they claim the
//! body to be, so everything is bounded: a body never exceeds `max_body`
//! bytes (4.13 with Size1 otherwise, also when Size1 in a block announces a
//! larger body), at most `max_transfers` transfers exist in total and
//! `max_transfers_per_peer` per peer address and `max_transfers_per_host` per source host
//! (IPv4 address or IPv6 /64, see [`crate::host`]), 5.03 otherwise. The per-host bound is what
//! keeps one source from taking every slot by sending block 0 from many ports: a source over its
//! share is refused while others proceed, and with the defaults it takes 16 hosts to fill the
//! table. Hence the
//! buffered bytes never exceed `max_transfers × max_body` in total and
//! `max_transfers_per_peer × max_body` per peer; buffers grow with the data
//! actually received (never with an announced Size1) and their capacity is
//! capped at `max_body`. A transfer that sees no accepted block for
//! `lifetime` expires; expiry is lazy (on every call that handles a Block1
//! request, or [`Block1Assembler::purge_expired`]) and costs O(log n) per
//! expired transfer.
//!
//! # Wiring it into a server
//!
//! Call [`Block1Assembler::offer`] for every request after message-layer
//! deduplication (each block is its own exchange with its own message id, so
//! a retransmitted block is replayed from the dedup cache and never reaches
//! the assembler) and before the request is processed:
//!
//! | outcome | answer |
//! |---|---|
//! | `NotBlockwise` | process the request as usual |
//! | `Continue` | 2.31 Continue with Block1 = `response_block`, at once (no processing) |
//! | `Complete` | process the request with `body` as payload; the final response (2.01, or whatever processing answers) carries Block1 = `response_block` |
//! | `TooLarge` | 4.13 Request Entity Too Large with Size1 = `size1` |
//! | `Incomplete` | 4.08 Request Entity Incomplete |
//! | `Busy` | 5.03 Service Unavailable with Max-Age |
//! | `BadRequest` | 4.00 Bad Request |
//!
//! [`Block1Outcome::response_code`] and [`Block1Outcome::add_response_options`]
//! produce exactly that. The answer goes back the usual way (piggybacked ACK
//! for CON, NON for NON) with the token of the request that carried the
//! block. Call [`Block1Assembler::purge_expired`] now and then (e.g. once a
//! second) so that memory held by abandoned transfers is released even when
//! no further block-wise request arrives.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::host::source_host;
use crate::message::{BlockOption, Code, Message, option};
use crate::params;

/// Configuration of a [`Block1Assembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block1Config {
    /// Largest request body in bytes, block-wise or not; larger ones get 4.13 with Size1.
    pub max_body: usize,
    /// Maximum number of transfers in progress across all peers.
    pub max_transfers: usize,
    /// Maximum number of transfers in progress for one peer address.
    pub max_transfers_per_peer: usize,
    /// Maximum number of transfers in progress for one source host, all its ports together.
    pub max_transfers_per_host: usize,
    /// How long a transfer is kept without receiving a block (RFC default: `EXCHANGE_LIFETIME`).
    pub lifetime: Duration,
    /// Largest block size exponent the server wants (0–6, i.e. 16–1024 bytes). A larger SZX in
    /// block 0 is answered with this one; blocks of any size are accepted regardless.
    pub preferred_szx: u8,
}

impl Default for Block1Config {
    /// 64 KiB bodies, 1 024 transfers (at most 64 MiB buffered), 4 per peer, 64 per host,
    /// `EXCHANGE_LIFETIME`,
    /// blocks of up to 1 024 bytes.
    fn default() -> Self {
        Block1Config {
            max_body: 64 * 1024,
            max_transfers: 1024,
            max_transfers_per_peer: 4,
            max_transfers_per_host: 64,
            lifetime: params::EXCHANGE_LIFETIME,
            preferred_szx: BlockOption::MAX_SZX,
        }
    }
}

/// What to do with a request after [`Block1Assembler::offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block1Outcome {
    /// No Block1 option and the payload is within `max_body`: process the request as it is.
    NotBlockwise,
    /// A block was stored (or was a duplicate): answer 2.31 Continue carrying this Block1 option.
    Continue {
        /// The Block1 option for the 2.31 response (`NUM` echoed, `M = 1`, SZX possibly reduced).
        response_block: BlockOption,
    },
    /// The last block arrived: process the request with `body` as its payload and add
    /// `response_block` as Block1 to the final response.
    Complete {
        /// The reassembled body.
        body: Vec<u8>,
        /// The Block1 option for the final response (`NUM` of the last block, `M = 0`).
        response_block: BlockOption,
    },
    /// The body is (or is announced to be) larger than `max_body`: answer 4.13 Request Entity
    /// Too Large with Size1 = `size1`. Any transfer for the request was dropped.
    TooLarge {
        /// The largest acceptable body (`max_body`, saturated to `u32`).
        size1: u32,
    },
    /// A block without the blocks before it: answer 4.08 Request Entity Incomplete.
    Incomplete,
    /// Too many transfers in total, for this peer or for its host: answer 5.03 Service Unavailable.
    Busy,
    /// A malformed Block1 option, or a block whose payload does not fit its SZX (a non-last
    /// block must be exactly one block long): answer 4.00 Bad Request.
    BadRequest,
}

impl Block1Outcome {
    /// The code to answer with *instead of* processing the request, or `None` for
    /// [`NotBlockwise`](Block1Outcome::NotBlockwise) and [`Complete`](Block1Outcome::Complete),
    /// where the request (with the complete body) is processed and the application decides.
    pub fn response_code(&self) -> Option<Code> {
        match self {
            Block1Outcome::NotBlockwise | Block1Outcome::Complete { .. } => None,
            Block1Outcome::Continue { .. } => Some(Code::CONTINUE),
            Block1Outcome::TooLarge { .. } => Some(Code::REQUEST_ENTITY_TOO_LARGE),
            Block1Outcome::Incomplete => Some(Code::REQUEST_ENTITY_INCOMPLETE),
            Block1Outcome::Busy => Some(Code::SERVICE_UNAVAILABLE),
            Block1Outcome::BadRequest => Some(Code::BAD_REQUEST),
        }
    }

    /// Adds the options RFC 7959 requires on the response: Block1 on 2.31 and on the final
    /// response of a completed transfer, Size1 on 4.13. Does nothing for the other outcomes
    /// (the caller adds Max-Age to a 5.03 itself).
    pub fn add_response_options(&self, response: &mut Message) {
        match self {
            Block1Outcome::Continue { response_block }
            | Block1Outcome::Complete { response_block, .. } => {
                response.set_block1(*response_block)
            }
            Block1Outcome::TooLarge { size1 } => response.set_size1(*size1),
            _ => {}
        }
    }
}

/// Options that identify the target resource and so take part in matching blocks.
const KEY_OPTIONS: [u16; 6] = [
    option::URI_HOST,
    option::URI_PORT,
    option::URI_PATH,
    option::URI_QUERY,
    option::PROXY_URI,
    option::PROXY_SCHEME,
];

/// Peer address plus the request's method and resource options, length-prefixed so that
/// different option lists never encode to the same bytes.
type Key = (SocketAddr, Box<[u8]>);

fn request_key(peer: SocketAddr, request: &Message) -> Key {
    let mut key = vec![request.code.0];
    for opt in request
        .options()
        .iter()
        .filter(|o| KEY_OPTIONS.contains(&o.number))
    {
        key.extend_from_slice(&opt.number.to_be_bytes());
        key.extend_from_slice(
            &u32::try_from(opt.value.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        key.extend_from_slice(&opt.value);
    }
    (peer, key.into_boxed_slice())
}

#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    expires: Instant,
    /// Unique per transfer, so two transfers expiring at the same instant have distinct index keys.
    id: u64,
}

/// Reassembles Block1 uploads; see the [module documentation](self) for the rules.
#[derive(Debug)]
pub struct Block1Assembler {
    config: Block1Config,
    transfers: HashMap<Key, Transfer>,
    /// Expiry index: `(expires, id)` of every transfer, oldest first.
    expiry: BTreeMap<(Instant, u64), Key>,
    per_peer: HashMap<SocketAddr, usize>,
    per_host: HashMap<IpAddr, usize>,
    buffered: usize,
    next_id: u64,
}

impl Block1Assembler {
    /// Creates an assembler with no transfers. An SZX above 6 in the configuration is treated as 6.
    pub fn new(mut config: Block1Config) -> Block1Assembler {
        config.preferred_szx = config.preferred_szx.min(BlockOption::MAX_SZX);
        Block1Assembler {
            config,
            transfers: HashMap::new(),
            expiry: BTreeMap::new(),
            per_peer: HashMap::new(),
            per_host: HashMap::new(),
            buffered: 0,
            next_id: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Block1Config {
        &self.config
    }

    /// Number of transfers in progress (expired ones count until the next purge).
    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    /// True if no transfer is in progress.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// Number of transfers in progress for `peer`.
    pub fn peer_transfers(&self, peer: SocketAddr) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    /// Number of transfers in progress for the host of `peer` (all its ports).
    pub fn host_transfers(&self, peer: SocketAddr) -> usize {
        self.per_host.get(&source_host(peer)).copied().unwrap_or(0)
    }

    /// Body bytes currently buffered across all transfers (for metrics and bounds checks).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Body bytes buffered for `peer`. O(number of transfers); meant for tests and diagnostics.
    pub fn peer_buffered_bytes(&self, peer: SocketAddr) -> usize {
        self.transfers
            .iter()
            .filter(|((p, _), _)| *p == peer)
            .map(|(_, t)| t.body.len())
            .sum()
    }

    /// Capacity of every transfer's buffer, i.e. the memory held for bodies (each buffer is
    /// capped at `max_body`). O(number of transfers); meant for tests and diagnostics.
    pub fn allocated_bytes(&self) -> usize {
        self.transfers.values().map(|t| t.body.capacity()).sum()
    }

    /// Drops every transfer whose lifetime has passed; returns how many were dropped.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.remove_transfer(&key);
            removed += 1;
        }
        removed
    }

    /// Handles one request from `peer` received at `now`; see [`Block1Outcome`] for what to do
    /// with the result. Requests without a Block1 option cost one option lookup.
    pub fn offer(&mut self, peer: SocketAddr, request: &Message, now: Instant) -> Block1Outcome {
        let Some(raw) = request.get_option(option::BLOCK1) else {
            if request.payload.len() > self.config.max_body {
                return self.too_large();
            }
            return Block1Outcome::NotBlockwise;
        };
        let Some(block) = BlockOption::decode(raw) else {
            return Block1Outcome::BadRequest;
        };
        let len = request.payload.len();
        let size = block.size();
        if (block.more() && len != size) || len > size {
            return Block1Outcome::BadRequest;
        }
        self.purge_expired(now);

        let key = request_key(peer, request);
        let announced = request.get_option(option::SIZE1).map(|v| {
            option::decode_uint(v).map_or(usize::MAX, |s| usize::try_from(s).unwrap_or(usize::MAX))
        });
        if announced.is_some_and(|s| s > self.config.max_body) {
            self.remove_key(&key);
            return self.too_large();
        }
        let offset = block.offset();
        let end = offset + len;
        if end > self.config.max_body {
            self.remove_key(&key);
            return self.too_large();
        }

        if block.num() == 0 {
            return self.start(key, block, &request.payload, now);
        }
        let Some(transfer) = self.transfers.get_mut(&key) else {
            return Block1Outcome::Incomplete;
        };
        let received = transfer.body.len();
        if offset == received {
            if !block.more() {
                let mut transfer = self.remove_key(&key).unwrap_or_else(|| unreachable!());
                transfer.body.extend_from_slice(&request.payload);
                return Block1Outcome::Complete {
                    body: transfer.body,
                    response_block: block,
                };
            }
            let body = &mut transfer.body;
            if end > body.capacity() {
                let target = end.max(body.capacity() * 2).min(self.config.max_body);
                body.reserve_exact(target - body.len());
            }
            body.extend_from_slice(&request.payload);
            self.buffered += len;
            self.refresh(&key, now);
            Block1Outcome::Continue {
                response_block: block,
            }
        } else if block.more() && end <= received {
            // A block already stored (e.g. re-sent because the 2.31 was lost): change nothing.
            self.refresh(&key, now);
            Block1Outcome::Continue {
                response_block: block,
            }
        } else {
            Block1Outcome::Incomplete
        }
    }

    /// Block 0: completes a one-block body, or (re)starts a transfer.
    fn start(
        &mut self,
        key: Key,
        block: BlockOption,
        payload: &[u8],
        now: Instant,
    ) -> Block1Outcome {
        if !block.more() {
            self.remove_key(&key);
            return Block1Outcome::Complete {
                body: payload.to_vec(),
                response_block: block,
            };
        }
        let szx = block.szx().min(self.config.preferred_szx);
        let response_block = BlockOption::new(0, true, szx).unwrap_or(block);
        if let Some(transfer) = self.transfers.get_mut(&key) {
            self.buffered -= transfer.body.len();
            transfer.body.clear();
            transfer.body.extend_from_slice(payload);
            self.buffered += payload.len();
            self.refresh(&key, now);
            return Block1Outcome::Continue { response_block };
        }
        let peer_count = self.peer_transfers(key.0);
        let host = source_host(key.0);
        if self.transfers.len() >= self.config.max_transfers
            || peer_count >= self.config.max_transfers_per_peer
            || self.per_host.get(&host).copied().unwrap_or(0) >= self.config.max_transfers_per_host
        {
            return Block1Outcome::Busy;
        }
        let id = self.next_id;
        self.next_id += 1;
        let expires = self.deadline(now);
        *self.per_peer.entry(key.0).or_insert(0) += 1;
        *self.per_host.entry(host).or_insert(0) += 1;
        self.buffered += payload.len();
        self.expiry.insert((expires, id), key.clone());
        self.transfers.insert(
            key,
            Transfer {
                body: payload.to_vec(),
                expires,
                id,
            },
        );
        Block1Outcome::Continue { response_block }
    }

    fn too_large(&self) -> Block1Outcome {
        Block1Outcome::TooLarge {
            size1: u32::try_from(self.config.max_body).unwrap_or(u32::MAX),
        }
    }

    /// `now + lifetime`, or as far as `Instant` can go for absurd lifetimes.
    fn deadline(&self, now: Instant) -> Instant {
        now.checked_add(self.config.lifetime)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now)
    }

    /// Restarts the lifetime of the transfer at `key`.
    fn refresh(&mut self, key: &Key, now: Instant) {
        let expires = self.deadline(now);
        if let Some(transfer) = self.transfers.get_mut(key) {
            if let Some(k) = self.expiry.remove(&(transfer.expires, transfer.id)) {
                transfer.expires = expires;
                self.expiry.insert((expires, transfer.id), k);
            }
        }
    }

    /// Removes the transfer at `key` and its expiry record.
    fn remove_key(&mut self, key: &Key) -> Option<Transfer> {
        let transfer = self.remove_transfer(key)?;
        self.expiry.remove(&(transfer.expires, transfer.id));
        Some(transfer)
    }

    /// Removes the transfer at `key` and its accounting, leaving the expiry index alone.
    fn remove_transfer(&mut self, key: &Key) -> Option<Transfer> {
        let transfer = self.transfers.remove(key)?;
        self.buffered -= transfer.body.len();
        if let Some(count) = self.per_peer.get_mut(&key.0) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&key.0);
            }
        }
        let host = source_host(key.0);
        if let Some(count) = self.per_host.get_mut(&host) {
            *count -= 1;
            if *count == 0 {
                self.per_host.remove(&host);
            }
        }
        Some(transfer)
    }
}

#[cfg(test)]
mod tests;
