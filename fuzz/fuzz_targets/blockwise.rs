//! Drives a `Block1Assembler` with a sequence of operations decoded from the
//! fuzz input (blocks with arbitrary NUM/M/SZX/payload length/Size1 from a few
//! peers to a few resources, time advances, purges, plain requests) and checks
//! after every step that nothing panics and the memory bounds hold:
//! transfers ≤ max_transfers (per peer ≤ max_transfers_per_peer), buffered and
//! allocated bytes ≤ max_transfers × max_body (per peer ≤ per-peer × max_body).
//!
//! Every generated payload byte is a function of its offset in the body and
//! of the resource, so any completed body must match that pattern: a block
//! stored at the wrong offset, or a body mixed up between transfers, fails.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use coapgate_coap::message::option;
use coapgate_coap::{Block1Assembler, Block1Config, Block1Outcome, Code, Message, MessageType};
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
}

/// Content of body byte `offset` for the transfer key of `resource` (bits 0-2: path and method;
/// bit 3 only adds Content-Format, which is not part of the key).
fn pattern(resource: u8, offset: usize) -> u8 {
    (offset as u8).wrapping_mul(31) ^ ((offset >> 8) as u8) ^ resource.wrapping_mul(101)
}

fn peer(index: u8) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::new(10, 0, 0, 1 + index % 2),
        5683 + u16::from(index % 3),
    ))
}

fn request(resource: u8, token: u8) -> Message {
    let method = if resource & 4 == 0 {
        Code::POST
    } else {
        Code::PUT
    };
    let mut m = Message::new(MessageType::Confirmable, method, u16::from(token));
    m.token = coapgate_coap::Token::from_slice(&[token]).unwrap();
    m.add_option(option::URI_PATH, "i");
    m.add_option(option::URI_PATH, [b'a' + resource % 4]);
    if resource & 8 != 0 {
        m.add_option(option::CONTENT_FORMAT, [50]); // must not affect matching
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (Some(a), Some(b), Some(c), Some(d)) =
        (input.u16(), input.byte(), input.byte(), input.byte())
    else {
        return;
    };
    let config = Block1Config {
        max_body: usize::from(a % 5000),
        max_transfers: usize::from(b % 8),
        max_transfers_per_peer: usize::from(c % 4),
        max_transfers_per_host: usize::from(c % 8),
        lifetime: Duration::from_secs(1 + u64::from(d % 64)),
        preferred_szx: d >> 5, // 0-7; 7 must be clamped
    };
    let mut assembler = Block1Assembler::new(config);
    let mut now = Instant::now();
    let peers: Vec<SocketAddr> = (0..6).map(peer).collect();

    while let Some(op) = input.byte() {
        match op % 8 {
            // A well-formed-ish block: pattern payload, size chosen by `shape`.
            0..=3 => {
                let (Some(p), Some(r), Some(num), Some(flags), Some(shape)) = (
                    input.byte(),
                    input.byte(),
                    input.u16(),
                    input.byte(),
                    input.byte(),
                ) else {
                    break;
                };
                let szx = flags & 7;
                let more = flags & 8 != 0;
                let num = u32::from(num) >> (flags >> 4 & 7); // favour small block numbers
                let mut m = request(r, op);
                let raw = (num << 4) | (u32::from(more) << 3) | u32::from(szx);
                m.add_option(option::BLOCK1, option::encode_uint(raw));
                if flags & 0x80 != 0 {
                    let size1 = u32::from(input.u16().unwrap_or(0)) * 4;
                    m.set_size1(size1);
                }
                let size = 1usize << (szx.min(6) + 4);
                let len = match shape % 4 {
                    0 | 1 => size,
                    2 => usize::from(shape) % (size + 1),
                    _ => usize::from(shape) * 5,
                };
                let offset = num as usize * size;
                m.payload = (offset..offset + len).map(|i| pattern(r & 7, i)).collect();
                let outcome = assembler.offer(peers[usize::from(p % 6)], &m, now);
                check_outcome(&config, &m, r & 7, &outcome);
            }
            // Arbitrary Block1 and Size1 option bytes with an arbitrary payload.
            4 => {
                let (Some(p), Some(r), Some(n)) = (input.byte(), input.byte(), input.byte()) else {
                    break;
                };
                let mut m = request(r, op);
                let raw: Vec<u8> = (0..n % 5).filter_map(|_| input.byte()).collect();
                m.add_option(option::BLOCK1, raw);
                if n & 0x80 != 0 {
                    let raw: Vec<u8> = (0..(n >> 4) % 6).filter_map(|_| input.byte()).collect();
                    m.add_option(option::SIZE1, raw);
                }
                let len = usize::from(input.u16().unwrap_or(0) % 2048);
                m.payload = vec![0xAA; len];
                let outcome = assembler.offer(peers[usize::from(p % 6)], &m, now);
                assert!(!matches!(outcome, Block1Outcome::NotBlockwise));
            }
            // A plain request without Block1.
            5 => {
                let len = usize::from(input.u16().unwrap_or(0) % 6000);
                let mut m = request(0, op);
                m.payload = vec![1; len];
                let outcome = assembler.offer(peers[0], &m, now);
                let expected = if len > config.max_body {
                    Block1Outcome::TooLarge {
                        size1: config.max_body as u32,
                    }
                } else {
                    Block1Outcome::NotBlockwise
                };
                assert_eq!(outcome, expected);
            }
            // Time passes.
            6 => {
                let secs = u64::from(input.byte().unwrap_or(0));
                now += Duration::from_millis(secs * 500);
            }
            _ => {
                assembler.purge_expired(now);
            }
        }
        check_bounds(&config, &assembler, &peers);
    }
    assembler.purge_expired(now + config.lifetime);
    assert!(
        assembler.is_empty(),
        "every transfer expires after its lifetime"
    );
    assert_eq!(assembler.buffered_bytes(), 0);
});

fn check_outcome(config: &Block1Config, m: &Message, resource: u8, outcome: &Block1Outcome) {
    let Some(block) = m.block1() else {
        assert_eq!(*outcome, Block1Outcome::BadRequest, "SZX 7 is rejected");
        return;
    };
    match outcome {
        Block1Outcome::NotBlockwise => panic!("a request with Block1 is block-wise"),
        Block1Outcome::Continue { response_block } => {
            assert!(response_block.more());
            assert_eq!(response_block.num(), block.num());
            assert!(response_block.szx() <= block.szx());
            assert!(block.more(), "the last block never gets 2.31");
        }
        Block1Outcome::Complete {
            body,
            response_block,
        } => {
            assert!(!block.more());
            assert_eq!(*response_block, block);
            assert!(body.len() <= config.max_body);
            assert_eq!(body.len(), block.offset() + m.payload.len());
            for (i, &byte) in body.iter().enumerate() {
                assert_eq!(
                    byte,
                    pattern(resource, i),
                    "body byte {i} is not where it was sent"
                );
            }
        }
        Block1Outcome::TooLarge { size1 } => assert_eq!(*size1 as usize, config.max_body),
        Block1Outcome::Incomplete | Block1Outcome::Busy | Block1Outcome::BadRequest => {}
    }
}

fn check_bounds(config: &Block1Config, assembler: &Block1Assembler, peers: &[SocketAddr]) {
    let total = config.max_transfers * config.max_body;
    let per_peer = config.max_transfers_per_peer * config.max_body;
    assert!(assembler.len() <= config.max_transfers);
    assert!(assembler.buffered_bytes() <= total);
    assert!(assembler.allocated_bytes() <= total);
    let mut sum = 0;
    for &p in peers {
        assert!(assembler.peer_transfers(p) <= config.max_transfers_per_peer);
        let bytes = assembler.peer_buffered_bytes(p);
        assert!(bytes <= per_peer);
        sum += bytes;
    }
    assert_eq!(
        sum,
        assembler.buffered_bytes(),
        "buffered byte accounting drifted"
    );
}
