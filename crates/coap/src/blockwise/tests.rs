//! Scenario tests: each case is a list of steps (blocks sent, time passing, purges,
//! state checks) with the outcome every block must get; completed bodies are
//! compared byte for byte with what was sent.

use super::*;
use crate::message::{MessageType, Token};
use std::net::Ipv4Addr;

/// One block (or plain request) sent by a test step.
#[derive(Debug, Clone, Copy)]
struct Send {
    peer: u8,
    path: &'static str,
    /// `None`: no Block1 option at all.
    block: Option<(u32, bool, u8)>,
    len: usize,
    size1: Option<u32>,
    token: u8,
}

/// What a step expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    NotBlockwise,
    /// `(num, szx)` of the Block1 echo in the 2.31.
    Continue(u32, u8),
    /// Length of the complete body; its bytes must match what was sent.
    Complete(usize),
    TooLarge,
    Incomplete,
    Busy,
    BadRequest,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Send(Send, Expect),
    Advance(u64),
    Purge(usize),
    /// `(transfers, buffered bytes)`.
    State(usize, usize),
}

use Expect::*;

const fn blk(peer: u8, num: u32, more: bool, szx: u8, len: usize) -> Send {
    Send {
        peer,
        path: "up",
        block: Some((num, more, szx)),
        len,
        size1: None,
        token: 1,
    }
}

const fn on(path: &'static str, send: Send) -> Send {
    Send { path, ..send }
}

const fn with_size1(size1: u32, send: Send) -> Send {
    Send {
        size1: Some(size1),
        ..send
    }
}

const fn with_token(token: u8, send: Send) -> Send {
    Send { token, ..send }
}

const fn plain(len: usize) -> Send {
    Send {
        peer: 0,
        path: "up",
        block: None,
        len,
        size1: None,
        token: 1,
    }
}

const fn send(send: Send, expect: Expect) -> Step {
    Step::Send(send, expect)
}

fn peer(index: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, index), 5683))
}

/// Body byte at `offset` of an upload to `path`, so misplaced blocks are detected.
fn pattern(path: &str, offset: usize) -> u8 {
    (offset as u8).wrapping_mul(7) ^ ((offset >> 8) as u8) ^ path.as_bytes()[0]
}

fn request(s: &Send) -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, u16::from(s.token));
    m.token = Token::from_slice(&[s.token]).unwrap();
    m.add_option(option::URI_PATH, "i");
    m.add_option(option::URI_PATH, s.path);
    let offset = match s.block {
        Some((num, more, szx)) => {
            let raw = (num << 4) | (u32::from(more) << 3) | u32::from(szx);
            m.add_option(option::BLOCK1, option::encode_uint(raw));
            (num as usize) << (szx.min(6) + 4)
        }
        None => 0,
    };
    if let Some(size1) = s.size1 {
        m.set_size1(size1);
    }
    m.payload = (offset..offset + s.len)
        .map(|i| pattern(s.path, i))
        .collect();
    m
}

fn config() -> Block1Config {
    Block1Config {
        max_body: 1000,
        max_transfers: 3,
        max_transfers_per_peer: 2,
        max_transfers_per_host: 100,
        lifetime: Duration::from_secs(100),
        preferred_szx: 6,
    }
}

fn run(name: &str, config: Block1Config, steps: &[Step]) {
    let mut assembler = Block1Assembler::new(config);
    let mut now = Instant::now();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{name}, step {i} ({step:?})");
        match *step {
            Step::Send(s, expect) => {
                let m = request(&s);
                let outcome = assembler.offer(peer(s.peer), &m, now);
                let got = match &outcome {
                    Block1Outcome::NotBlockwise => NotBlockwise,
                    Block1Outcome::Continue { response_block } => {
                        assert!(response_block.more(), "{at}: 2.31 echo has M=1");
                        Continue(response_block.num(), response_block.szx())
                    }
                    Block1Outcome::Complete {
                        body,
                        response_block,
                    } => {
                        let (num, more, szx) = s.block.unwrap();
                        assert_eq!(
                            *response_block,
                            BlockOption::new(num, more, szx).unwrap(),
                            "{at}: final echo"
                        );
                        let expected: Vec<u8> =
                            (0..body.len()).map(|i| pattern(s.path, i)).collect();
                        assert_eq!(*body, expected, "{at}: body content");
                        Complete(body.len())
                    }
                    Block1Outcome::TooLarge { size1 } => {
                        assert_eq!(*size1 as usize, config.max_body, "{at}: Size1");
                        TooLarge
                    }
                    Block1Outcome::Incomplete => Incomplete,
                    Block1Outcome::Busy => Busy,
                    Block1Outcome::BadRequest => BadRequest,
                };
                assert_eq!(got, expect, "{at}");
            }
            Step::Advance(secs) => now += Duration::from_secs(secs),
            Step::Purge(expected) => {
                assert_eq!(assembler.purge_expired(now), expected, "{at}: purged")
            }
            Step::State(transfers, buffered) => {
                assert_eq!(assembler.len(), transfers, "{at}: transfers");
                assert_eq!(assembler.buffered_bytes(), buffered, "{at}: buffered bytes");
            }
        }
        assert!(assembler.buffered_bytes() <= config.max_transfers * config.max_body);
        assert!(assembler.allocated_bytes() <= config.max_transfers * config.max_body);
    }
}

#[test]
fn scenarios() {
    let cases: Vec<(&str, Block1Config, Vec<Step>)> = vec![
        (
            "in-order transfer of 5 blocks",
            config(),
            vec![
                send(blk(0, 0, true, 2, 64), Continue(0, 2)),
                send(blk(0, 1, true, 2, 64), Continue(1, 2)),
                send(blk(0, 2, true, 2, 64), Continue(2, 2)),
                Step::State(1, 192),
                send(blk(0, 3, true, 2, 64), Continue(3, 2)),
                send(blk(0, 4, false, 2, 10), Complete(266)),
                Step::State(0, 0),
            ],
        ),
        (
            "the token may change between blocks",
            config(),
            vec![
                send(with_token(1, blk(0, 0, true, 0, 16)), Continue(0, 0)),
                send(with_token(2, blk(0, 1, true, 0, 16)), Continue(1, 0)),
                send(with_token(3, blk(0, 2, false, 0, 3)), Complete(35)),
            ],
        ),
        (
            "single block with Block1 num=0 more=false",
            config(),
            vec![
                send(blk(0, 0, false, 6, 700), Complete(700)),
                send(blk(0, 0, false, 0, 0), Complete(0)),
                Step::State(0, 0),
            ],
        ),
        (
            "duplicate blocks are idempotent",
            config(),
            vec![
                send(blk(0, 0, true, 1, 32), Continue(0, 1)),
                send(blk(0, 1, true, 1, 32), Continue(1, 1)),
                send(blk(0, 1, true, 1, 32), Continue(1, 1)),
                send(blk(0, 0, true, 0, 16), Continue(0, 0)), // block 0 again restarts the body
                Step::State(1, 16),
                send(blk(0, 1, true, 0, 16), Continue(1, 0)),
                send(blk(0, 2, true, 0, 16), Continue(2, 0)),
                send(blk(0, 1, true, 0, 16), Continue(1, 0)), // an earlier block again
                Step::State(1, 48),
                send(blk(0, 3, false, 0, 5), Complete(53)),
            ],
        ),
        (
            "out of order and missing first block give 4.08",
            config(),
            vec![
                send(blk(0, 1, true, 2, 64), Incomplete),
                send(blk(0, 3, false, 2, 5), Incomplete),
                Step::State(0, 0),
                send(blk(0, 0, true, 2, 64), Continue(0, 2)),
                send(blk(0, 2, true, 2, 64), Incomplete),
                // The transfer survives the stray block and can go on.
                send(blk(0, 1, true, 2, 64), Continue(1, 2)),
                send(blk(0, 2, false, 2, 1), Complete(129)),
                // The last block re-sent with a new message id: the transfer is gone.
                send(blk(0, 2, false, 2, 1), Incomplete),
            ],
        ),
        (
            "too large by Size1, by accumulation, and without Block1",
            config(),
            vec![
                send(with_size1(1001, blk(0, 0, true, 6, 1024)), TooLarge),
                send(with_size1(1000, blk(0, 0, true, 4, 256)), Continue(0, 4)),
                send(blk(0, 1, true, 4, 256), Continue(1, 4)),
                send(blk(0, 2, true, 4, 256), Continue(2, 4)),
                Step::State(1, 768),
                send(blk(0, 3, true, 4, 256), TooLarge),
                Step::State(0, 0),
                // Exactly max_body is fine.
                send(blk(0, 0, true, 3, 128), Continue(0, 3)),
                send(blk(0, 1, true, 3, 128), Continue(1, 3)),
                Step::State(1, 256),
                send(with_size1(5000, blk(0, 2, true, 3, 128)), TooLarge),
                Step::State(0, 0),
                send(blk(0, 0, true, 4, 256), Continue(0, 4)),
                send(blk(0, 1, true, 4, 256), Continue(1, 4)),
                send(blk(0, 2, true, 4, 256), Continue(2, 4)),
                send(blk(0, 3, false, 4, 232), Complete(1000)),
                send(plain(1000), NotBlockwise),
                send(plain(1001), TooLarge),
            ],
        ),
        (
            "abandoned transfers expire",
            config(),
            vec![
                send(blk(0, 0, true, 0, 16), Continue(0, 0)),
                send(on("other", blk(1, 0, true, 0, 16)), Continue(0, 0)),
                Step::Advance(60),
                send(blk(0, 1, true, 0, 16), Continue(1, 0)), // refreshes peer 0's lifetime
                Step::Advance(40),
                Step::Purge(1), // peer 1's transfer is 100 s old
                Step::State(1, 32),
                send(on("other", blk(1, 1, false, 0, 1)), Incomplete),
                Step::Advance(59),
                send(blk(0, 2, false, 0, 4), Complete(36)),
                send(blk(0, 0, true, 0, 16), Continue(0, 0)),
                Step::Advance(100),
                // Expired lazily on the next block-wise request.
                send(blk(0, 1, false, 0, 16), Incomplete),
                Step::State(0, 0),
            ],
        ),
        (
            "per-peer and total bounds give 5.03",
            config(),
            vec![
                send(on("a", blk(0, 0, true, 0, 16)), Continue(0, 0)),
                send(on("b", blk(0, 0, true, 0, 16)), Continue(0, 0)),
                send(on("c", blk(0, 0, true, 0, 16)), Busy), // 2 per peer
                send(on("a", blk(0, 1, true, 0, 16)), Continue(1, 0)), // existing ones go on
                send(on("c", blk(1, 0, true, 0, 16)), Continue(0, 0)),
                send(on("d", blk(2, 0, true, 0, 16)), Busy), // 3 in total
                // A one-block body needs no transfer, so it is never busy.
                send(on("d", blk(2, 0, false, 0, 16)), Complete(16)),
                send(on("b", blk(0, 1, false, 0, 1)), Complete(17)),
                send(on("d", blk(2, 0, true, 0, 16)), Continue(0, 0)),
                Step::State(3, 16 + 32 + 16),
            ],
        ),
        (
            "two peers interleaved on the same resource",
            config(),
            vec![
                send(blk(0, 0, true, 1, 32), Continue(0, 1)),
                send(blk(1, 0, true, 2, 64), Continue(0, 2)),
                send(blk(0, 1, true, 1, 32), Continue(1, 1)),
                send(blk(1, 1, true, 2, 64), Continue(1, 2)),
                Step::State(2, 192),
                send(blk(1, 2, false, 2, 9), Complete(137)),
                send(blk(0, 2, false, 1, 7), Complete(71)),
                Step::State(0, 0),
            ],
        ),
        (
            "client reduces SZX mid-transfer (RFC 7959 §2.3)",
            config(),
            vec![
                send(blk(0, 0, true, 4, 256), Continue(0, 4)),
                // 256 bytes received: next at 128 bytes is num 2, at 64 bytes num 4.
                send(blk(0, 2, true, 3, 128), Continue(2, 3)),
                send(blk(0, 6, true, 2, 64), Continue(6, 2)),
                send(blk(0, 2, true, 3, 128), Continue(2, 3)), // 256..384 again: duplicate
                send(blk(0, 3, true, 3, 128), Incomplete),     // 384..512 overlaps the end
                send(blk(0, 4, true, 3, 128), Incomplete),     // 512, beyond 448: gap
                send(blk(0, 7, false, 2, 20), Complete(468)),
            ],
        ),
        (
            "server asks for smaller blocks in its answer to block 0",
            Block1Config {
                preferred_szx: 3,
                ..config()
            },
            vec![
                send(blk(0, 0, true, 6, 1024), TooLarge), // 1024 > max_body
                send(on("x", blk(1, 0, true, 5, 512)), Continue(0, 3)),
                send(on("x", blk(1, 4, true, 3, 128)), Continue(4, 3)),
                send(on("x", blk(1, 5, false, 3, 100)), Complete(740)),
                send(blk(0, 0, true, 2, 64), Continue(0, 2)), // smaller than preferred: kept
            ],
        ),
        (
            "malformed blocks give 4.00",
            config(),
            vec![
                send(blk(0, 0, true, 7, 16), BadRequest), // SZX 7 (BERT) is reserved
                send(blk(0, 0, true, 2, 63), BadRequest), // non-last block must be full
                send(blk(0, 0, true, 2, 65), BadRequest),
                send(blk(0, 0, false, 2, 65), BadRequest), // last block longer than the SZX
                Step::State(0, 0),
            ],
        ),
        (
            "zero limits",
            Block1Config {
                max_transfers: 0,
                ..config()
            },
            vec![
                send(blk(0, 0, true, 0, 16), Busy),
                send(blk(0, 0, false, 0, 16), Complete(16)),
            ],
        ),
    ];
    for (name, config, steps) in cases {
        run(name, config, &steps);
    }
}

#[test]
fn matching_uses_method_and_resource_but_not_other_options() {
    let mut assembler = Block1Assembler::new(config());
    let now = Instant::now();
    let first = request(&blk(0, 0, true, 0, 16));
    let mut with_format = first.clone();
    with_format.set_uint_option(option::CONTENT_FORMAT, 50);
    assert_eq!(
        assembler.offer(peer(0), &with_format, now),
        Block1Outcome::Continue {
            response_block: BlockOption::new(0, true, 0).unwrap()
        }
    );
    // Block 1 without Content-Format belongs to the same transfer.
    let second = request(&blk(0, 1, false, 0, 4));
    assert!(matches!(
        assembler.offer(peer(0), &second, now),
        Block1Outcome::Complete { ref body, .. } if body.len() == 20
    ));
    // A PUT to the same path is another operation, and so is another Uri-Query.
    assembler.offer(peer(0), &first, now);
    let mut put = request(&blk(0, 1, false, 0, 4));
    put.code = Code::PUT;
    assert_eq!(
        assembler.offer(peer(0), &put, now),
        Block1Outcome::Incomplete
    );
    let mut query = request(&blk(0, 1, false, 0, 4));
    query.add_option(option::URI_QUERY, "x=1");
    assert_eq!(
        assembler.offer(peer(0), &query, now),
        Block1Outcome::Incomplete
    );
    // Same peer IP, other port: another endpoint.
    let other_port = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 0), 5684));
    assert_eq!(
        assembler.offer(other_port, &second, now),
        Block1Outcome::Incomplete
    );
    assert_eq!(assembler.len(), 1);
}

#[test]
fn responses_carry_block1_and_size1() {
    let req = request(&blk(0, 0, true, 2, 64));
    let cases = [
        (
            Block1Outcome::Continue {
                response_block: BlockOption::new(3, true, 2).unwrap(),
            },
            Some(Code::CONTINUE),
            Some(BlockOption::new(3, true, 2).unwrap()),
            None,
        ),
        (
            Block1Outcome::Complete {
                body: vec![1],
                response_block: BlockOption::new(4, false, 2).unwrap(),
            },
            None,
            Some(BlockOption::new(4, false, 2).unwrap()),
            None,
        ),
        (
            Block1Outcome::TooLarge { size1: 1000 },
            Some(Code::REQUEST_ENTITY_TOO_LARGE),
            None,
            Some(1000),
        ),
        (
            Block1Outcome::Incomplete,
            Some(Code::REQUEST_ENTITY_INCOMPLETE),
            None,
            None,
        ),
        (
            Block1Outcome::Busy,
            Some(Code::SERVICE_UNAVAILABLE),
            None,
            None,
        ),
        (
            Block1Outcome::BadRequest,
            Some(Code::BAD_REQUEST),
            None,
            None,
        ),
        (Block1Outcome::NotBlockwise, None, None, None),
    ];
    for (outcome, code, block1, size1) in cases {
        assert_eq!(outcome.response_code(), code, "{outcome:?}");
        let mut response =
            Message::piggybacked_response(&req, code.unwrap_or(Code::CREATED), Vec::new());
        outcome.add_response_options(&mut response);
        let parsed = Message::parse(&response.encode()).unwrap();
        assert_eq!(parsed.block1(), block1, "{outcome:?}");
        assert_eq!(parsed.size1(), size1, "{outcome:?}");
        assert_eq!(parsed.token, req.token);
    }
}

#[test]
fn buffers_never_grow_past_max_body() {
    let config = Block1Config {
        max_body: 100,
        max_transfers: 2,
        max_transfers_per_peer: 2,
        ..config()
    };
    let mut assembler = Block1Assembler::new(config);
    let now = Instant::now();
    for p in 0..2 {
        for num in 0..6 {
            assembler.offer(peer(p), &request(&blk(p, num, true, 0, 16)), now);
        }
    }
    assert_eq!(assembler.buffered_bytes(), 2 * 96);
    assert!(assembler.allocated_bytes() <= 2 * 100);
    assert_eq!(assembler.peer_buffered_bytes(peer(1)), 96);
    assert_eq!(assembler.peer_transfers(peer(1)), 1);
    assert_eq!(
        assembler.offer(peer(0), &request(&blk(0, 6, true, 0, 16)), now),
        Block1Outcome::TooLarge { size1: 100 }
    );
    assert_eq!(assembler.buffered_bytes(), 96);
}

#[test]
fn absurd_lifetime_and_szx_are_tolerated() {
    let mut assembler = Block1Assembler::new(Block1Config {
        lifetime: Duration::MAX,
        preferred_szx: 200,
        ..config()
    });
    assert_eq!(assembler.config().preferred_szx, 6);
    let now = Instant::now();
    assert!(matches!(
        assembler.offer(peer(0), &request(&blk(0, 0, true, 0, 16)), now),
        Block1Outcome::Continue { .. }
    ));
    assert_eq!(
        assembler.purge_expired(now + Duration::from_secs(1_000_000)),
        0
    );
}

/// The lockout: block 0 from 256 ports of one host for 4 resources each used to take
/// all 1 024 slots, and every other upload got 5.03 for the lifetime of those transfers.
#[test]
fn many_ports_of_one_host_cannot_lock_out_another_host() {
    let mut assembler = Block1Assembler::new(Block1Config::default());
    let now = Instant::now();
    let block0 = |query: u8| {
        let mut m = request(&blk(0, 0, true, 0, 16));
        m.add_option(option::URI_QUERY, format!("q={query}"));
        m
    };
    let mut busy = 0;
    for port in 0..256u16 {
        let attacker = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 20000 + port));
        for query in 0..4 {
            match assembler.offer(attacker, &block0(query), now) {
                Block1Outcome::Continue { .. } => {}
                Block1Outcome::Busy => busy += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    let attacker = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 20000));
    assert_eq!(
        assembler.host_transfers(attacker),
        64,
        "the attacker holds its share only"
    );
    assert_eq!(busy, 1024 - 64);
    let device = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 3), 40000));
    assert!(matches!(
        assembler.offer(device, &block0(0), now),
        Block1Outcome::Continue { .. }
    ));
    let mut last = request(&blk(0, 1, false, 0, 10));
    last.add_option(option::URI_QUERY, "q=0");
    assert!(matches!(
        assembler.offer(device, &last, now),
        Block1Outcome::Complete { .. }
    ));
    // The attacker's slots come back as its transfers end.
    assembler.purge_expired(now + Block1Config::default().lifetime);
    assert_eq!(assembler.host_transfers(attacker), 0);
    assert!(assembler.is_empty());
}
